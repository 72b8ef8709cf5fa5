//! The states of a slot we host: Filled (check that the host is us, keep the data until
//! the request ends) and Proving (a proof each period it is required, see the module docs
//! of [`super`]).

use crate::market::{Address, Groth16Proof, SlotState, U256};
use crate::sales::ledger::Reservation;

use super::ending::{end_hosted, held_of};
use super::freeing::{free_start, payout_start};
use super::reorg::fill_removed;
use super::{
    Base, FinalState, FreeCause, Input, Output, Reserved, Revert, Sale, SaleConfig, Tx, TxError,
};

/// A sale of a slot that we (may) host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted {
    /// Request and slot.
    pub base: Base,
    /// The reservation (None only for a slot restored without one).
    pub reservation: Option<Reservation>,
}

/// Filled steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilledStep {
    /// Reading the host (or waiting to read again, `attempt` > 0).
    CheckingHost {
        /// Failed reads so far.
        attempt: u32,
    },
    /// Keeping the data until the request end.
    UpdatingExpiry {
        /// Failed attempts so far.
        attempt: u32,
    },
}

/// Proving state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proving {
    /// Hosted slot.
    pub hosted: Hosted,
    /// The last period a proof was accepted (or found already submitted) for.
    pub last_proved: Option<u64>,
    /// Required proofs counted in simulation mode.
    pub sim_counter: u32,
    /// Where it is.
    pub step: ProveStep,
}

/// Proving steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProveStep {
    /// Waiting for the next period start + 1 s.
    Idle,
    /// Reading the proof view for `period` (`attempt` failed reads before).
    Checking {
        /// Period.
        period: u64,
        /// Failed reads.
        attempt: u32,
    },
    /// Waiting to read again after a failed read.
    CheckBackoff {
        /// Period.
        period: u64,
        /// Failed reads.
        attempt: u32,
    },
    /// Computing the proof for `period`.
    Computing {
        /// Period.
        period: u64,
    },
    /// submitProof sent.
    Submitting {
        /// Period.
        period: u64,
        /// The proof.
        proof: Box<Groth16Proof>,
        /// Failed sends before.
        attempt: u32,
    },
    /// Waiting to send again.
    SubmitBackoff {
        /// Period.
        period: u64,
        /// The proof.
        proof: Box<Groth16Proof>,
        /// Failed sends before.
        attempt: u32,
    },
}

pub(super) fn hosted_of(r: Reserved) -> Hosted {
    Hosted {
        base: r.base,
        reservation: Some(r.reservation),
    }
}

pub(super) fn filled(
    h: Box<Hosted>,
    step: FilledStep,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    match (step, input) {
        (FilledStep::CheckingHost { .. }, Input::Slot(Ok(view))) => {
            if view.host != cfg.signer || view.host == Address::ZERO {
                let held = held_of(&h);
                return end_hosted(
                    FinalState::Errored,
                    &h,
                    "Slot filled by other host",
                    held,
                    out,
                );
            }
            out.push(Output::Filled(h.base.slot));
            out.push(Output::UpdateExpiry {
                slot: h.base.slot,
                cid: h.base.request.content.cid.clone(),
                until: h.base.ends_at,
            });
            Sale::Filled(h, FilledStep::UpdatingExpiry { attempt: 0 })
        }
        (FilledStep::CheckingHost { attempt }, Input::Slot(Err(_))) => {
            out.push(Output::WakeAt(cfg.backoff(now, attempt)));
            Sale::Filled(
                h,
                FilledStep::CheckingHost {
                    attempt: attempt + 1,
                },
            )
        }
        (FilledStep::CheckingHost { attempt }, Input::Wake) if attempt > 0 => {
            out.push(Output::ReadSlot(h.base.slot));
            Sale::Filled(h, FilledStep::CheckingHost { attempt })
        }
        (FilledStep::UpdatingExpiry { attempt }, Input::ExpiryUpdated(res)) => {
            if res.is_err() && attempt + 1 < cfg.max_attempts {
                out.push(Output::WakeAt(cfg.backoff(now, attempt)));
                return Sale::Filled(
                    h,
                    FilledStep::UpdatingExpiry {
                        attempt: attempt + 1,
                    },
                );
            }
            // Success, or given up: keep proving the slot we hold rather than abandon it.
            start_proving(h, now, cfg, out)
        }
        (FilledStep::UpdatingExpiry { attempt }, Input::Wake) if attempt > 0 => {
            out.push(Output::UpdateExpiry {
                slot: h.base.slot,
                cid: h.base.request.content.cid.clone(),
                until: h.base.ends_at,
            });
            Sale::Filled(h, FilledStep::UpdatingExpiry { attempt })
        }
        (step, _) => Sale::Filled(h, step),
    }
}

/// Enters the proving loop, which checks the current period at once, before it first waits
/// for a period to end (`docs/sales.md#proving-loop`). A sale restored in the middle of a period still
/// owes that period's proof; in the fill's own period the views answer not required, and the
/// loop waits for the next one.
pub(super) fn start_proving(
    h: Box<Hosted>,
    now: u64,
    _cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    out.push(Output::WakeAt(now));
    Sale::Proving(Box::new(Proving {
        hosted: *h,
        last_proved: None,
        sim_counter: 0,
        step: ProveStep::Idle,
    }))
}

pub(super) fn proving(
    mut p: Box<Proving>,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    let slot = p.hosted.base.slot;
    let period_end = |period: u64| (period + 1) * cfg.period.max(1);
    // Done with `period`: wake for the next one, or at once when the answer came after the
    // period ended (a proof mined late, a slow view), so that the current period is not
    // skipped.
    let after = |period: u64| Output::WakeAt((period_end(period) + 1).max(now));
    let step = std::mem::replace(&mut p.step, ProveStep::Idle);
    match (step, input) {
        (ProveStep::Idle, Input::Wake) => {
            out.push(Output::ReadProof(slot));
            p.step = ProveStep::Checking {
                period: cfg.period_of(now),
                attempt: 0,
            };
        }
        (ProveStep::CheckBackoff { period, attempt }, Input::Wake) => {
            out.push(Output::ReadProof(slot));
            p.step = ProveStep::Checking { period, attempt };
        }
        (ProveStep::Checking { period, attempt }, Input::Proof(res)) => match res {
            Err(_) => {
                let at = cfg.backoff(now, attempt);
                if at < period_end(period) {
                    out.push(Output::WakeAt(at));
                    p.step = ProveStep::CheckBackoff {
                        period,
                        attempt: attempt + 1,
                    };
                } else {
                    out.push(after(period));
                }
            }
            Ok(view) => match view.slot_state {
                SlotState::Filled => {
                    let due = view.required || view.will_be_required;
                    if due && p.last_proved != Some(period) {
                        p.sim_counter += 1;
                        let n = cfg.simulate_proof_failures;
                        if n > 0 && p.sim_counter.is_multiple_of(n) {
                            p.sim_counter = 0;
                            let proof = Box::<Groth16Proof>::default();
                            out.push(Output::Send(Tx::SubmitProof {
                                slot,
                                proof: proof.clone(),
                            }));
                            p.step = ProveStep::Submitting {
                                period,
                                proof,
                                attempt: 0,
                            };
                        } else {
                            out.push(Output::Prove {
                                slot,
                                request: p.hosted.base.request.clone(),
                                challenge: view.challenge,
                            });
                            p.step = ProveStep::Computing { period };
                        }
                    } else {
                        out.push(after(period));
                    }
                }
                SlotState::Finished => return payout_start(p.hosted, out),
                SlotState::Cancelled => {
                    return free_start(p.hosted, FreeCause::Cancelled, true, out)
                }
                SlotState::Failed => return free_start(p.hosted, FreeCause::Failed, true, out),
                SlotState::Repair => {
                    return end_hosted(
                        FinalState::Errored,
                        &p.hosted,
                        "slot was forcibly freed",
                        U256::ZERO,
                        out,
                    )
                }
                // A filled slot never reads Free again: our fill was reorganised out, and
                // the collateral never left us.
                SlotState::Free => {
                    let open = p.hosted.base.expires_at > now;
                    return fill_removed(
                        &p.hosted,
                        open.then_some(p.hosted.base.expires_at),
                        SlotState::Free,
                        cfg,
                        out,
                    );
                }
                SlotState::Paid => {
                    return end_hosted(
                        FinalState::Errored,
                        &p.hosted,
                        "slot is not filled",
                        U256::ZERO,
                        out,
                    )
                }
            },
        },
        (ProveStep::Computing { period }, Input::Proved(res)) => match res {
            Ok(proof) => {
                out.push(Output::Send(Tx::SubmitProof {
                    slot,
                    proof: proof.clone(),
                }));
                p.step = ProveStep::Submitting {
                    period,
                    proof,
                    attempt: 0,
                };
            }
            Err(_) => out.push(after(period)),
        },
        (
            ProveStep::Submitting {
                period,
                proof,
                attempt,
            },
            Input::Tx(res),
        ) => match res {
            Ok(()) | Err(TxError::Reverted(Revert::ProofAlreadySubmitted)) => {
                p.last_proved = Some(period);
                out.push(after(period));
            }
            Err(TxError::Transient(_)) => {
                let at = cfg.backoff(now, attempt);
                if at < period_end(period) {
                    out.push(Output::WakeAt(at));
                    p.step = ProveStep::SubmitBackoff {
                        period,
                        proof,
                        attempt: attempt + 1,
                    };
                } else {
                    out.push(after(period));
                }
            }
            // Invalid (expected for the simulated failures) or any other revert: this
            // period is lost; carry on.
            Err(TxError::Reverted(_)) => {
                if proof.is_zero() {
                    p.last_proved = Some(period);
                }
                out.push(after(period));
            }
        },
        (
            ProveStep::SubmitBackoff {
                period,
                proof,
                attempt,
            },
            Input::Wake,
        ) => {
            if now < period_end(period) {
                out.push(Output::Send(Tx::SubmitProof {
                    slot,
                    proof: proof.clone(),
                }));
                p.step = ProveStep::Submitting {
                    period,
                    proof,
                    attempt,
                };
            } else {
                out.push(after(period));
            }
        }
        (step, _) => p.step = step,
    }
    Sale::Proving(p)
}
