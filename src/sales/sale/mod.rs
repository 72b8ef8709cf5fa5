//! The per-slot sale state machine (`docs/sales.md#sale-state-machine`, `docs/marketplace.md#proof-periods`).
//!
//! A [`Sale`] is an enum whose variants carry what that state needs; [`Sale::on`] consumes
//! the sale with one [`Input`] and the current chain time, pushes [`Output`]s (requests for
//! the driver or the engine) and returns the next sale. Nothing here blocks, sleeps, reads a
//! clock or does I/O. A stale input (the answer to a request made in an earlier state) is
//! ignored: the sale is returned unchanged.
//!
//! # Transitions (codex)
//! ```text
//! Preparing      --> SlotReserving | Ignored(requeue seen) | Ignored | Errored
//! SlotReserving  --> Downloading | Ignored | Errored
//! Downloading    --> InitialProving | Errored
//! InitialProving --> Filling | Errored          (waits for a stable challenge)
//! Filling        --> Filled | Ignored | Errored
//! Filled         --> Proving (host is us) | Errored (another host)
//! Proving        --> Payout | Cancelled | Failed | Errored (slot freed)
//! Payout         --> Finished                   (freeSlot retried with backoff)
//! Unknown        --> Filled | Payout | Finished | Failed | Cancelled | Errored
//! Cancelled, Failed: read the slot; if we host it, freeSlot (retried), then end.
//! Interrupts: cancelled (chain confirmed) and failed: every non-final state but Unknown
//!             (whose slot read answers the same question);
//!             slot filled: Preparing, SlotReserving, Downloading, InitialProving --> Filled.
//! ```
//!
//! What each ending returns (collateral, data, a requeued item) is the table on [`Ending`].
//!
//! # Proving
//! At each period start + 1 s (a wake-up shared by all proving sales through the engine's
//! timer table, driven by block timestamps) the sale reads the proof view at the `pending`
//! block. If the slot is Filled and a proof is required or will be required this period,
//! it computes and submits one; it remembers the last period it proved, so at most one proof
//! per period. Transient submission failures are retried with backoff until the period ends.
//! In proof-failure simulation mode (N > 0) every Nth required proof is the all-zero proof
//! and its expected `ProofInvalid` revert is swallowed.
//!
//! # Where things are
//! This file holds [`Sale`], its accessors and the dispatch of an input to its state, and
//! the interrupts every state shares. The rest, one concept a file:
//! - `vocabulary`: what a sale speaks with the engine and the driver: [`SlotRef`], the
//!   contract views ([`SlotView`], [`ProofView`]), the transactions ([`Tx`]) and their
//!   errors, [`Output`] and [`Input`];
//! - `ending`: the final states' data ([`Ending`]) and the table of what each ending returns;
//! - `before_fill`: the states before our fill (Preparing, SlotReserving, Downloading,
//!   InitialProving, Filling);
//! - `hosting`: the states of a slot we host (Filled, Proving);
//! - `freeing`: Payout, Cancelled and Failed, which read the slot and free it;
//! - `unknown`: a sale restored at startup, reading where its slot is;
//! - `reorg`: what a sale does when the slot view, read again after a reorganisation,
//!   says its request or its fill is gone.

use crate::market::{Address, Groth16Proof};

use super::ledger::Reservation;
use super::queue::SlotQueueItem;

mod before_fill;
mod ending;
mod freeing;
mod hosting;
mod reorg;
mod unknown;
mod vocabulary;

pub use before_fill::{FillStep, InitialStep, PrepStep, Preparing, Reserved, SlotReserving};
pub use ending::{Ending, FinalState};
pub use freeing::{FreeCause, FreeStep, Freeing};
pub use hosting::{FilledStep, Hosted, ProveStep, Proving};
pub use unknown::Unknown;
pub use vocabulary::{
    Base, ChainError, Input, Output, ProofView, ReserveFailure, Revert, SlotRef, SlotView, Tx,
    TxError,
};

use before_fill::{downloading, filling, initial_proving, preparing, slot_reserving};
use ending::{end, end_held};
use freeing::{free_start, freeing};
use hosting::{filled, hosted_of, proving};
use unknown::unknown;

/// Settings every sale reads.
#[derive(Debug, Clone)]
pub struct SaleConfig {
    /// Proof period, seconds.
    pub period: u64,
    /// proofs.downtime, blocks.
    pub downtime: u8,
    /// collateral.repairRewardPercentage.
    pub repair_reward_percentage: u8,
    /// This host's address.
    pub signer: Address,
    /// 0 = off; N = every Nth required proof is the all-zero proof (hidden option).
    pub simulate_proof_failures: u32,
    /// First retry delay, seconds.
    pub retry_base: u64,
    /// Longest retry delay, seconds.
    pub retry_cap: u64,
    /// Attempts at an expiry update or a freeSlot after a failure before giving up on it.
    pub max_attempts: u32,
}

impl Default for SaleConfig {
    fn default() -> Self {
        SaleConfig {
            period: 120,
            downtime: 64,
            repair_reward_percentage: 10,
            signer: Address::ZERO,
            simulate_proof_failures: 0,
            retry_base: 2,
            retry_cap: 600,
            max_attempts: 8,
        }
    }
}

impl SaleConfig {
    fn period_of(&self, t: u64) -> u64 {
        t / self.period.max(1)
    }
    fn next_period_start(&self, now: u64) -> u64 {
        (self.period_of(now) + 1) * self.period.max(1)
    }
    fn backoff(&self, now: u64, attempt: u32) -> u64 {
        let d = self
            .retry_base
            .saturating_mul(1u64 << attempt.min(30))
            .min(self.retry_cap);
        now.saturating_add(d.max(1))
    }
}

/// One slot's sale. See the module docs.
///
/// Each state's data lives in its own allocation, so a sale is a few words: moving it in
/// and out of the engine's map and through the transition functions copies a pointer, and
/// a state that stays itself is updated in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sale {
    /// Reading the slot and reserving from an availability.
    Preparing(Box<Preparing>),
    /// canReserveSlot / reserveSlot.
    SlotReserving(Box<SlotReserving>),
    /// Downloading the slot's data.
    Downloading(Box<Reserved>),
    /// Waiting for a stable challenge and computing the initial proof.
    InitialProving(Box<Reserved>, InitialStep),
    /// fillSlot with the proof.
    Filling(Box<Reserved>, Box<Groth16Proof>, FillStep),
    /// Checking we are the host; extending the data's expiry.
    Filled(Box<Hosted>, FilledStep),
    /// Submitting proofs when required.
    Proving(Box<Proving>),
    /// Reading currentCollateral and freeSlot after the request finished.
    Payout(Box<Freeing>),
    /// The request was cancelled; freeing our slot if we host it.
    Cancelled(Box<Freeing>),
    /// The request failed; leaving our slot if we host it.
    Failed(Box<Freeing>),
    /// Ended, in one of the final states (Finished, Cancelled, Failed, Errored, Ignored),
    /// with what the engine cleans up.
    Ended(FinalState, Box<Ending>),
    /// Restored at startup; reading the slot to learn where it is.
    Unknown(Box<Unknown>),
}

impl Sale {
    /// A sale for a queue item: starts in Preparing and asks for the slot view.
    pub fn prepare(item: SlotQueueItem, out: &mut Vec<Output>) -> Sale {
        let slot = SlotRef::new(item.request_id, item.slot_index);
        out.push(Output::ReadSlot(slot));
        Sale::Preparing(Box::new(Preparing {
            item,
            slot,
            step: PrepStep::Reading,
        }))
    }

    /// A sale for a slot this host holds on chain at startup, with its reservation when one
    /// was persisted: starts in Unknown and asks for the slot view.
    pub fn restore(slot: SlotRef, reservation: Option<Reservation>, out: &mut Vec<Output>) -> Sale {
        out.push(Output::ReadSlot(slot));
        Sale::Unknown(Box::new(Unknown {
            slot,
            reservation,
            attempt: 0,
            backoff: false,
        }))
    }

    /// The slot.
    pub fn slot(&self) -> SlotRef {
        match self {
            Sale::Preparing(p) => p.slot,
            Sale::SlotReserving(s) => s.held.base.slot,
            Sale::Downloading(r) | Sale::InitialProving(r, _) | Sale::Filling(r, _, _) => {
                r.base.slot
            }
            Sale::Filled(h, _) => h.base.slot,
            Sale::Proving(p) => p.hosted.base.slot,
            Sale::Payout(f) | Sale::Cancelled(f) | Sale::Failed(f) => f.hosted.base.slot,
            Sale::Ended(_, f) => f.slot,
            Sale::Unknown(u) => u.slot,
        }
    }

    /// The state's name as the REST API and `codex sale list` show it.
    pub fn state_name(&self) -> &'static str {
        match self {
            Sale::Preparing(_) => "SalePreparing",
            Sale::SlotReserving(_) => "SaleSlotReserving",
            Sale::Downloading(_) => "SaleDownloading",
            Sale::InitialProving(..) => "SaleInitialProving",
            Sale::Filling(..) => "SaleFilling",
            Sale::Filled(..) => "SaleFilled",
            Sale::Proving(_) => "SaleProving",
            Sale::Payout(_) => "SalePayout",
            Sale::Cancelled(..) => "SaleCancelled",
            Sale::Failed(..) => "SaleFailed",
            Sale::Ended(state, _) => state.name(),
            Sale::Unknown(_) => "SaleUnknown",
        }
    }

    /// True for end states (the engine removes the sale).
    pub fn is_final(&self) -> bool {
        self.ending().is_some()
    }

    /// How the sale ended; None while it is not final.
    pub fn ending(&self) -> Option<&Ending> {
        match self {
            Sale::Ended(_, f) => Some(f),
            _ => None,
        }
    }

    /// The final state a sale reached; None while it is not final.
    pub fn final_state(&self) -> Option<FinalState> {
        match self {
            Sale::Ended(state, _) => Some(*state),
            _ => None,
        }
    }

    /// The final state and ending of a final sale, taken out of it.
    pub(crate) fn into_ending(self) -> Option<(FinalState, Box<Ending>)> {
        match self {
            Sale::Ended(state, f) => Some((state, f)),
            _ => None,
        }
    }

    /// The request and its times, once the sale has read them.
    pub fn base(&self) -> Option<&Base> {
        match self {
            Sale::SlotReserving(s) => Some(&s.held.base),
            Sale::Downloading(r) | Sale::InitialProving(r, _) | Sale::Filling(r, _, _) => {
                Some(&r.base)
            }
            Sale::Filled(h, _) => Some(&h.base),
            Sale::Proving(p) => Some(&p.hosted.base),
            Sale::Payout(f) | Sale::Cancelled(f) | Sale::Failed(f) => Some(&f.hosted.base),
            _ => None,
        }
    }

    /// The reservation the sale holds, if any.
    pub fn reservation(&self) -> Option<&Reservation> {
        match self {
            Sale::SlotReserving(s) => Some(&s.held.reservation),
            Sale::Downloading(r) | Sale::InitialProving(r, _) | Sale::Filling(r, _, _) => {
                Some(&r.reservation)
            }
            Sale::Filled(h, _) => h.reservation.as_ref(),
            Sale::Proving(p) => p.hosted.reservation.as_ref(),
            Sale::Payout(f) | Sale::Cancelled(f) | Sale::Failed(f) => f.hosted.reservation.as_ref(),
            Sale::Unknown(u) => u.reservation.as_ref(),
            _ => None,
        }
    }

    /// Feeds one input at chain time `now`.
    pub fn on(self, input: Input, now: u64, cfg: &SaleConfig, out: &mut Vec<Output>) -> Sale {
        if self.is_final() {
            return self;
        }
        match input {
            Input::Cancelled => return self.interrupt(Interrupt::Cancelled, out),
            Input::Failed => return self.interrupt(Interrupt::Failed, out),
            Input::SlotFilled => return self.slot_filled(out),
            Input::Fulfilled => return self,
            Input::Rechecked(view) => return self.rechecked(view, now, cfg, out),
            _ => {}
        }
        match self {
            Sale::Preparing(p) => preparing(p, input, now, cfg, out),
            Sale::SlotReserving(s) => slot_reserving(s, input, out),
            Sale::Downloading(r) => downloading(r, input, now, cfg, out),
            Sale::InitialProving(r, step) => initial_proving(r, step, input, now, cfg, out),
            Sale::Filling(r, proof, step) => filling(r, proof, step, input, now, cfg, out),
            Sale::Filled(h, step) => filled(h, step, input, now, cfg, out),
            Sale::Proving(p) => proving(p, input, now, cfg, out),
            Sale::Payout(f) => freeing(f, FreeCause::Payout, input, now, cfg, out),
            Sale::Cancelled(f) => freeing(f, FreeCause::Cancelled, input, now, cfg, out),
            Sale::Failed(f) => freeing(f, FreeCause::Failed, input, now, cfg, out),
            Sale::Unknown(u) => unknown(u, input, now, cfg, out),
            done => done,
        }
    }

    fn interrupt(self, what: Interrupt, out: &mut Vec<Output>) -> Sale {
        let state = match what {
            Interrupt::Cancelled => FinalState::Cancelled,
            Interrupt::Failed => FinalState::Failed,
        };
        let reason = match what {
            Interrupt::Cancelled => "request cancelled",
            Interrupt::Failed => "request failed",
        };
        match self {
            // Before any reservation: nothing to give back.
            Sale::Preparing(p) => {
                let slot = p.slot;
                end(state, slot, reason).emit(out)
            }
            // Before our fill: everything held comes back.
            Sale::SlotReserving(s) => end_held(state, &s.held, reason, out),
            Sale::Downloading(r) | Sale::InitialProving(r, _) => end_held(state, &r, reason, out),
            // Our fill may have happened: read the slot to find out.
            Sale::Filling(r, _, _) => free_start(hosted_of(*r), what.cause(), false, out),
            Sale::Filled(h, _) => free_start(*h, what.cause(), false, out),
            Sale::Proving(p) => free_start(p.hosted, what.cause(), true, out),
            Sale::Payout(f) => free_start(f.hosted, what.cause(), true, out),
            // Already ending: a failed request stays failed; a cancel after a failure changes
            // nothing either.
            ending @ (Sale::Cancelled(_) | Sale::Failed(_)) => ending,
            // The slot read in flight (or its retry) tells where the slot is, including a
            // cancelled or failed request; ending now could forfeit a payout.
            Sale::Unknown(u) => Sale::Unknown(u),
            done => done,
        }
    }

    fn slot_filled(self, out: &mut Vec<Output>) -> Sale {
        match self {
            Sale::Preparing(p) => {
                let slot = p.slot;
                end(FinalState::Ignored, slot, "slot filled by another host").emit(out)
            }
            Sale::SlotReserving(s) => filled_by_anyone(s.held, out),
            Sale::Downloading(r) | Sale::InitialProving(r, _) => filled_by_anyone(*r, out),
            other => other,
        }
    }
}

/// SlotFilled before our fill: read the slot to learn whether the host is us.
fn filled_by_anyone(r: Reserved, out: &mut Vec<Output>) -> Sale {
    out.push(Output::ReadSlot(r.base.slot));
    Sale::Filled(
        Box::new(hosted_of(r)),
        FilledStep::CheckingHost { attempt: 0 },
    )
}

#[derive(Clone, Copy)]
enum Interrupt {
    Cancelled,
    Failed,
}

impl Interrupt {
    fn cause(self) -> FreeCause {
        match self {
            Interrupt::Cancelled => FreeCause::Cancelled,
            Interrupt::Failed => FreeCause::Failed,
        }
    }
}
