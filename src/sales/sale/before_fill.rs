//! The states before our fill: Preparing (read the slot, reserve from an availability),
//! SlotReserving (`canReserveSlot`, `reserveSlot`), Downloading, InitialProving (wait for a
//! stable challenge, compute the proof) and Filling (`fillSlot`). Every ending here gives
//! back all the collateral held: none was posted.

use std::sync::Arc;

use crate::market::{Groth16Proof, Request, RequestState, SlotState};
use crate::sales::ledger::Reservation;
use crate::sales::queue::SlotQueueItem;

use super::{
    end, end_held, hosted_of, Base, ChainError, FilledStep, FinalState, Input, Output,
    ReserveFailure, Revert, Sale, SaleConfig, SlotRef, SlotView, Tx, TxError,
};

/// Preparing: reading the slot, then reserving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preparing {
    /// The queue item this sale came from.
    pub item: SlotQueueItem,
    /// The slot.
    pub slot: SlotRef,
    /// Where it is.
    pub step: PrepStep,
}

/// Steps of [`Preparing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepStep {
    /// Waiting for [`Input::Slot`].
    Reading,
    /// The read failed (the chain could not be reached); read again at the wake-up.
    ReadBackoff {
        /// Failed reads so far.
        attempt: u32,
    },
    /// Waiting for [`Input::Slot`] after `attempt` failed reads.
    Rereading {
        /// Failed reads so far.
        attempt: u32,
    },
    /// Waiting for [`Input::Reserved`].
    Reserving {
        /// The request, read.
        base: Base,
        /// The slot was in Repair.
        repairing: bool,
    },
}

/// A sale holding a reservation before the fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// Request and slot.
    pub base: Base,
    /// Bytes and collateral held.
    pub reservation: Reservation,
    /// Whether the slot was in Repair when prepared.
    pub repairing: bool,
}

/// SlotReserving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReserving {
    /// Held data.
    pub held: Reserved,
    /// false: waiting for canReserveSlot; true: reserveSlot sent.
    pub sent: bool,
}

/// InitialProving steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialStep {
    /// Waiting for the next period start + 1 s.
    Waiting,
    /// Reading pointer and challenge.
    Reading,
    /// Computing the proof.
    Computing,
}

/// Filling steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillStep {
    /// Reading the slot state (for the collateral); `attempt` failed tries before.
    Reading {
        /// Failed reads or sends so far.
        attempt: u32,
    },
    /// fillSlot sent.
    Sending {
        /// Failed reads or sends so far.
        attempt: u32,
    },
    /// Waiting to read the slot again after a read or a send that failed in transit.
    Backoff {
        /// Failed reads or sends so far.
        attempt: u32,
    },
}

/// Tries of the fill (slot read, then fillSlot) before a chain that keeps failing in transit
/// ends the sale Errored (a revert ends it at once).
const FILL_TRIES: u32 = 4;

/// A read or send of the fill failed in transit: read the slot again after a backoff (a
/// fill that did go through then reads Filled with us as host), or give up after
/// [`FILL_TRIES`].
fn fill_failed(
    r: Box<Reserved>,
    proof: Box<Groth16Proof>,
    attempt: u32,
    why: String,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    if attempt + 1 >= FILL_TRIES {
        return end_held(FinalState::Errored, &r, why, out);
    }
    out.push(Output::WakeAt(cfg.backoff(now, attempt)));
    Sale::Filling(
        r,
        proof,
        FillStep::Backoff {
            attempt: attempt + 1,
        },
    )
}

/// Asks the engine to watch the request's expiry while the chain still reports it New
/// (Preparing and Unknown both start this watch).
pub(super) fn watch_while_new(slot: SlotRef, view: &SlotView, out: &mut Vec<Output>) {
    if view.request_state == Some(RequestState::New) {
        out.push(Output::WatchRequest {
            request_id: slot.request_id,
            expires_at: view.expires_at,
        });
    }
}

pub(super) fn base_of(slot: SlotRef, view: &SlotView, request: Arc<Request>) -> Base {
    Base {
        slot,
        request,
        expires_at: view.expires_at,
        ends_at: view.ends_at,
    }
}

/// Reads a Preparing sale makes before it gives up on a chain it cannot reach (it holds a
/// worker meanwhile).
const PREPARE_READS: u32 = 3;

/// A Preparing read failed: read again after a backoff, up to [`PREPARE_READS`] reads, then
/// end (nothing is held yet).
fn prepare_read_failed(
    mut p: Box<Preparing>,
    attempt: u32,
    e: ChainError,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    if attempt + 1 >= PREPARE_READS {
        return end(FinalState::Errored, p.slot, e.to_string()).emit(out);
    }
    out.push(Output::WakeAt(cfg.backoff(now, attempt)));
    p.step = PrepStep::ReadBackoff {
        attempt: attempt + 1,
    };
    Sale::Preparing(p)
}

pub(super) fn preparing(
    mut p: Box<Preparing>,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    let slot = p.slot;
    let step = std::mem::replace(&mut p.step, PrepStep::Reading);
    match (step, input) {
        (PrepStep::Reading, Input::Slot(Err(e))) => prepare_read_failed(p, 0, e, now, cfg, out),
        (PrepStep::Rereading { attempt }, Input::Slot(Err(e))) => {
            prepare_read_failed(p, attempt, e, now, cfg, out)
        }
        (PrepStep::ReadBackoff { attempt }, Input::Wake) => {
            out.push(Output::ReadSlot(slot));
            p.step = PrepStep::Rereading { attempt };
            Sale::Preparing(p)
        }
        (PrepStep::Reading | PrepStep::Rereading { .. }, Input::Slot(Ok(mut view))) => {
            let Some(request) = view.request.take() else {
                return end(FinalState::Errored, slot, "request could not be retrieved").emit(out);
            };
            if !matches!(view.slot_state, SlotState::Free | SlotState::Repair) {
                return end(FinalState::Ignored, slot, "slot is not free").emit(out);
            }
            if !matches!(
                view.request_state,
                Some(RequestState::New | RequestState::Started)
            ) || view.ends_at <= now
            {
                return end(FinalState::Ignored, slot, "request is over").emit(out);
            }
            watch_while_new(slot, &view, out);
            out.push(Output::Reserve {
                request: request.clone(),
                valid_until: view.ends_at,
            });
            let repairing = view.slot_state == SlotState::Repair;
            let base = base_of(slot, &view, request);
            p.step = PrepStep::Reserving { base, repairing };
            Sale::Preparing(p)
        }
        (PrepStep::Reserving { base, repairing }, Input::Reserved(res)) => match res {
            Ok(reservation) => {
                out.push(Output::CanReserve(base.slot));
                Sale::SlotReserving(Box::new(SlotReserving {
                    held: Reserved {
                        base,
                        reservation: *reservation,
                        repairing,
                    },
                    sent: false,
                }))
            }
            Err(ReserveFailure::NoMatch) => {
                end(FinalState::Ignored, slot, "no matching availability")
                    .requeue(p.item)
                    .emit(out)
            }
            Err(e @ ReserveFailure::Other(_)) => {
                end(FinalState::Errored, slot, e.to_string()).emit(out)
            }
        },
        (step, _) => {
            p.step = step;
            Sale::Preparing(p)
        }
    }
}

pub(super) fn slot_reserving(
    mut s: Box<SlotReserving>,
    input: Input,
    out: &mut Vec<Output>,
) -> Sale {
    match (s.sent, input) {
        (false, Input::CanReserve(Ok(true))) => {
            out.push(Output::Send(Tx::ReserveSlot {
                slot: s.held.base.slot,
            }));
            s.sent = true;
            Sale::SlotReserving(s)
        }
        (false, Input::CanReserve(Ok(false))) => {
            end_held(FinalState::Ignored, &s.held, "cannot reserve the slot", out)
        }
        (false, Input::CanReserve(Err(e))) => {
            end_held(FinalState::Errored, &s.held, e.to_string(), out)
        }
        (true, Input::Tx(Ok(()))) => {
            let r = Box::new(s.held);
            out.push(Output::Download {
                slot: r.base.slot,
                request: r.base.request.clone(),
                expiry: r.base.ends_at,
                repairing: r.repairing,
            });
            Sale::Downloading(r)
        }
        (true, Input::Tx(Err(TxError::Reverted(Revert::ReservationNotAllowed)))) => end_held(
            FinalState::Ignored,
            &s.held,
            "slot reservation not allowed",
            out,
        ),
        (true, Input::Tx(Err(e))) => end_held(FinalState::Errored, &s.held, e.to_string(), out),
        (_, _) => Sale::SlotReserving(s),
    }
}

pub(super) fn downloading(
    mut r: Box<Reserved>,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    match input {
        Input::DownloadProgress(bytes) => {
            let room =
                r.reservation.slot_size - r.reservation.downloaded.min(r.reservation.slot_size);
            let bytes = bytes.min(room);
            if bytes > 0 {
                r.reservation.downloaded += bytes;
                out.push(Output::RecordDownload {
                    reservation: r.reservation.id,
                    bytes,
                });
            }
            Sale::Downloading(r)
        }
        Input::Downloaded(Ok(())) => {
            out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
            Sale::InitialProving(r, InitialStep::Waiting)
        }
        Input::Downloaded(Err(e)) => end_held(
            FinalState::Errored,
            &r,
            format!("download failed: {e}"),
            out,
        ),
        _ => Sale::Downloading(r),
    }
}

pub(super) fn initial_proving(
    r: Box<Reserved>,
    step: InitialStep,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    match (step, input) {
        (InitialStep::Waiting, Input::Wake) => {
            out.push(Output::ReadProof(r.base.slot));
            Sale::InitialProving(r, InitialStep::Reading)
        }
        (InitialStep::Reading, Input::Proof(Ok(view))) => {
            // The challenge changes when the pointer wraps; if it could wrap within this
            // period, wait for the next one.
            if u16::from(view.pointer) > 256 - u16::from(cfg.downtime) {
                out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
                return Sale::InitialProving(r, InitialStep::Waiting);
            }
            out.push(Output::Prove {
                slot: r.base.slot,
                request: r.base.request.clone(),
                challenge: view.challenge,
            });
            Sale::InitialProving(r, InitialStep::Computing)
        }
        (InitialStep::Reading, Input::Proof(Err(_))) => {
            out.push(Output::WakeAt(cfg.backoff(now, 0)));
            Sale::InitialProving(r, InitialStep::Waiting)
        }
        (InitialStep::Computing, Input::Proved(Ok(proof))) => {
            out.push(Output::ReadSlot(r.base.slot));
            Sale::Filling(r, proof, FillStep::Reading { attempt: 0 })
        }
        (InitialStep::Computing, Input::Proved(Err(e))) => end_held(
            FinalState::Errored,
            &r,
            format!("initial proof failed: {e}"),
            out,
        ),
        (step, _) => Sale::InitialProving(r, step),
    }
}

pub(super) fn filling(
    r: Box<Reserved>,
    proof: Box<Groth16Proof>,
    step: FillStep,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    match (step, input) {
        (FillStep::Reading { attempt }, Input::Slot(Ok(view))) => {
            let ask = &r.base.request.ask;
            let collateral = match view.slot_state {
                SlotState::Free => ask.collateral_per_slot(),
                SlotState::Repair => ask.repair_collateral(cfg.repair_reward_percentage),
                // An earlier fillSlot whose answer was lost in transit went through.
                SlotState::Filled if attempt > 0 && view.host == cfg.signer => {
                    out.push(Output::ReadSlot(r.base.slot));
                    return Sale::Filled(
                        Box::new(hosted_of(*r)),
                        FilledStep::CheckingHost { attempt: 0 },
                    );
                }
                _ => return end_held(FinalState::Ignored, &r, "slot is no longer free", out),
            };
            out.push(Output::Send(Tx::FillSlot {
                slot: r.base.slot,
                proof: proof.clone(),
                collateral,
            }));
            Sale::Filling(r, proof, FillStep::Sending { attempt })
        }
        (FillStep::Reading { attempt }, Input::Slot(Err(e))) => {
            fill_failed(r, proof, attempt, e.to_string(), now, cfg, out)
        }
        (FillStep::Backoff { attempt }, Input::Wake) => {
            out.push(Output::ReadSlot(r.base.slot));
            Sale::Filling(r, proof, FillStep::Reading { attempt })
        }
        (FillStep::Sending { attempt }, Input::Tx(Err(TxError::Transient(e)))) => {
            fill_failed(r, proof, attempt, format!("fillSlot: {e}"), now, cfg, out)
        }
        (FillStep::Sending { .. }, Input::Tx(Ok(()))) => {
            out.push(Output::ReadSlot(r.base.slot));
            Sale::Filled(
                Box::new(hosted_of(*r)),
                FilledStep::CheckingHost { attempt: 0 },
            )
        }
        (FillStep::Sending { .. }, Input::Tx(Err(TxError::Reverted(Revert::SlotNotFree)))) => {
            end_held(FinalState::Ignored, &r, "slot already filled", out)
        }
        (FillStep::Sending { .. }, Input::Tx(Err(e))) => {
            end_held(FinalState::Errored, &r, format!("fillSlot: {e}"), out)
        }
        (step, _) => Sale::Filling(r, proof, step),
    }
}
