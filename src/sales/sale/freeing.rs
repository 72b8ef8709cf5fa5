//! Freeing a slot we may host: Payout (the request finished), Cancelled and Failed read the
//! slot, then send `freeSlot` with retries; what comes back depends on the cause and on
//! whether the slot is still ours (the table on [`super::Ending`]).

use crate::market::{Address, SlotState, U256};

use super::ending::{end_hosted, held_of};
use super::hosting::start_proving;
use super::{FinalState, Hosted, Input, Output, Revert, Sale, SaleConfig, Tx, TxError};

/// Why a hosted sale frees its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeCause {
    /// Payout of a finished request.
    Payout,
    /// Payout of a cancelled request.
    Cancelled,
    /// Leaving a failed request.
    Failed,
}

/// Reading the slot, then freeSlot with retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeStep {
    /// Reading the slot view (`attempt` failed reads before).
    Reading {
        /// Failed reads.
        attempt: u32,
    },
    /// Waiting to read again.
    ReadBackoff {
        /// Failed reads.
        attempt: u32,
    },
    /// freeSlot sent; `collateral` was read before it.
    Sending {
        /// currentCollateral.
        collateral: U256,
        /// Failed sends before.
        attempt: u32,
    },
    /// Waiting to send again.
    SendBackoff {
        /// currentCollateral.
        collateral: U256,
        /// Failed sends before.
        attempt: u32,
    },
}

/// Payout, Cancelled or Failed of a slot we may host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeing {
    /// Hosted slot.
    pub hosted: Hosted,
    /// We were proving this slot (so a slot no longer ours means collateral lost), as
    /// opposed to a fill that may not have happened.
    pub was_hosting: bool,
    /// Failed `freeSlot` sends so far (the backoff grows with them across the slot reads
    /// between retries).
    pub failed_sends: u32,
    /// Where it is.
    pub step: FreeStep,
}

pub(super) fn free_start(
    hosted: Hosted,
    cause: FreeCause,
    was_hosting: bool,
    out: &mut Vec<Output>,
) -> Sale {
    out.push(Output::ReadSlot(hosted.base.slot));
    rebuild_freeing(
        Box::new(Freeing {
            hosted,
            was_hosting,
            failed_sends: 0,
            step: FreeStep::Reading { attempt: 0 },
        }),
        cause,
    )
}

pub(super) fn payout_start(hosted: Hosted, out: &mut Vec<Output>) -> Sale {
    free_start(hosted, FreeCause::Payout, true, out)
}

fn rebuild_freeing(f: Box<Freeing>, cause: FreeCause) -> Sale {
    match cause {
        FreeCause::Payout => Sale::Payout(f),
        FreeCause::Cancelled => Sale::Cancelled(f),
        FreeCause::Failed => Sale::Failed(f),
    }
}

fn free_done(f: &Freeing, cause: FreeCause, collateral: U256, out: &mut Vec<Output>) -> Sale {
    match cause {
        FreeCause::Payout => {
            end_hosted(FinalState::Finished, &f.hosted, "paid out", collateral, out)
        }
        FreeCause::Cancelled => end_hosted(
            FinalState::Cancelled,
            &f.hosted,
            "request cancelled; paid out",
            collateral,
            out,
        ),
        FreeCause::Failed => end_hosted(
            FinalState::Failed,
            &f.hosted,
            "request failed",
            U256::ZERO,
            out,
        ),
    }
}

pub(super) fn freeing(
    mut f: Box<Freeing>,
    cause: FreeCause,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    let slot = f.hosted.base.slot;
    let step = std::mem::replace(&mut f.step, FreeStep::Reading { attempt: 0 });
    match (step, input) {
        (FreeStep::Reading { .. }, Input::Slot(Ok(view))) => {
            let is_host = view.host == cfg.signer && view.host != Address::ZERO;
            if view.slot_state == SlotState::Paid && (is_host || view.host == Address::ZERO) {
                // Paid earlier (before a restart): the collateral came back then.
                let held = held_of(&f.hosted);
                return end_hosted(FinalState::Finished, &f.hosted, "already paid", held, out);
            }
            if is_host && view.slot_state == SlotState::Filled {
                // The chain says the slot is live: the request was not cancelled or failed
                // after all (a reorganisation removed the event) or is not over yet. A
                // freeSlot now would be a forced free, forfeiting all the collateral: keep
                // proving instead; the proving loop sees the slot's real end.
                return start_proving(Box::new(f.hosted), now, cfg, out);
            }
            if !is_host {
                // A slot that reads Free was never filled on this chain (our fill was
                // reorganised out): the collateral never left us.
                let returned = if f.was_hosting && view.slot_state != SlotState::Free {
                    U256::ZERO
                } else {
                    held_of(&f.hosted)
                };
                let reason = match cause {
                    FreeCause::Payout => "slot is no longer ours",
                    FreeCause::Cancelled => "request cancelled before our fill",
                    FreeCause::Failed => "request failed before our fill",
                };
                let how = match cause {
                    FreeCause::Payout => FinalState::Errored,
                    FreeCause::Cancelled => FinalState::Cancelled,
                    FreeCause::Failed => FinalState::Failed,
                };
                return end_hosted(how, &f.hosted, reason, returned, out);
            }
            let collateral = match cause {
                FreeCause::Failed => U256::ZERO,
                _ => view.current_collateral,
            };
            out.push(Output::Send(Tx::FreeSlot { slot }));
            f.step = FreeStep::Sending {
                collateral,
                attempt: f.failed_sends,
            };
            rebuild_freeing(f, cause)
        }
        (FreeStep::Reading { attempt }, Input::Slot(Err(e))) => {
            if cause == FreeCause::Failed && attempt + 1 >= cfg.max_attempts {
                return end_hosted(
                    FinalState::Failed,
                    &f.hosted,
                    format!("request failed; slot not read: {e}"),
                    U256::ZERO,
                    out,
                );
            }
            out.push(Output::WakeAt(cfg.backoff(now, attempt)));
            f.step = FreeStep::ReadBackoff {
                attempt: attempt + 1,
            };
            rebuild_freeing(f, cause)
        }
        (FreeStep::ReadBackoff { attempt }, Input::Wake) => {
            out.push(Output::ReadSlot(slot));
            f.step = FreeStep::Reading { attempt };
            rebuild_freeing(f, cause)
        }
        (
            FreeStep::Sending {
                collateral,
                attempt,
            },
            Input::Tx(res),
        ) => match res {
            Ok(()) | Err(TxError::Reverted(Revert::SlotIsFree | Revert::AlreadyPaid)) => {
                free_done(&f, cause, collateral, out)
            }
            Err(TxError::Reverted(r)) => {
                let reason = format!("freeSlot reverted: {r:?}");
                match cause {
                    FreeCause::Failed => free_done(&f, cause, U256::ZERO, out),
                    _ => end_hosted(FinalState::Errored, &f.hosted, reason, U256::ZERO, out),
                }
            }
            Err(TxError::Transient(e)) => {
                if cause == FreeCause::Failed && attempt + 1 >= cfg.max_attempts {
                    // A failed request pays nothing back: give up on the freeSlot, saying why.
                    return end_hosted(
                        FinalState::Failed,
                        &f.hosted,
                        format!("request failed; freeSlot not sent: {e}"),
                        U256::ZERO,
                        out,
                    );
                }
                // A payout stays claimable: keep trying, with capped backoff.
                out.push(Output::WakeAt(cfg.backoff(now, attempt)));
                f.step = FreeStep::SendBackoff {
                    collateral,
                    attempt: attempt + 1,
                };
                rebuild_freeing(f, cause)
            }
        },
        // A payout is sent again only after the slot is read again: a reorganisation may
        // have taken the request's end back (a freeSlot on a slot still Filled would be a
        // forced free, forfeiting the collateral), or paid the slot already.
        (FreeStep::SendBackoff { attempt, .. }, Input::Wake) if cause != FreeCause::Failed => {
            out.push(Output::ReadSlot(slot));
            f.failed_sends = attempt;
            f.step = FreeStep::Reading { attempt: 0 };
            rebuild_freeing(f, cause)
        }
        (
            FreeStep::SendBackoff {
                collateral,
                attempt,
            },
            Input::Wake,
        ) => {
            out.push(Output::Send(Tx::FreeSlot { slot }));
            f.step = FreeStep::Sending {
                collateral,
                attempt,
            };
            rebuild_freeing(f, cause)
        }
        (step, _) => {
            f.step = step;
            rebuild_freeing(f, cause)
        }
    }
}
