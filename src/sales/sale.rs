//! The per-slot sale state machine (spec/sales.md §3, §4; marketplace.md §7.5).
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
//! # What an ending returns (the table codex follows; fixes §8.2–§8.4)
//! Every ending gives the reservation's bytes back to its availability and says how much of
//! the reservation's collateral comes back; what does not come back is recorded as lost.
//!
//! | ending | collateral returned | data released |
//! |---|---|---|
//! | Ignored: no availability matched / reservation race (item requeued as seen) | no reservation | no |
//! | Ignored: slot not free, request over | no reservation | no |
//! | Ignored: cannot reserve, reservation not allowed, already filled at fillSlot | all held (nothing posted) | if downloaded |
//! | Errored before the fill (read, download, proof, fill errors) | all held | if downloaded |
//! | Errored: filled by another host | all held | yes |
//! | Cancelled or Failed before the fill | all held | if downloaded |
//! | Cancelled after our fill | on-chain currentCollateral, read before freeSlot | yes |
//! | Failed after our fill | none (the contract pays nothing) | yes |
//! | Errored: slot forcibly freed (Repair) | none (forfeited on chain) | yes |
//! | Finished via Payout | on-chain currentCollateral, read before freeSlot | yes |
//! | Finished from Unknown (slot already Paid) | all held | yes |
//! | Restart: reservation held by no live slot (engine) | all held | yes |
//!
//! # Proving
//! At each period start + 1 s (a wake-up shared by all proving sales through the engine's
//! timer table, driven by block timestamps) the sale reads the proof view at the `pending`
//! block. If the slot is Filled and a proof is required or will be required this period,
//! it computes and submits one; it remembers the last period it proved, so at most one proof
//! per period. Transient submission failures are retried with backoff until the period ends.
//! In proof-failure simulation mode (N > 0) every Nth required proof is the all-zero proof
//! and its expected `ProofInvalid` revert is swallowed.

use std::borrow::Cow;
use std::sync::Arc;

use crate::market::{
    Address, Groth16Proof, Request, RequestId, RequestState, SlotId, SlotState, B256, U256,
};

use super::ledger::{Reservation, ReservationId};
use super::queue::SlotQueueItem;

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

/// Which slot a sale is about: the request and the slot's index. The engine keys its sales
/// by it; the on-chain slot id (a keccak) is computed only where a contract call needs it,
/// with [`SlotRef::slot_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotRef {
    /// The request.
    pub request_id: RequestId,
    /// The slot index.
    pub slot_index: u64,
}

impl SlotRef {
    /// The reference to slot `slot_index` of `request_id`.
    pub fn new(request_id: RequestId, slot_index: u64) -> SlotRef {
        SlotRef {
            request_id,
            slot_index,
        }
    }

    /// `SlotId::of(request_id, slot_index)`: the slot's id on chain (one keccak per call).
    pub fn slot_id(&self) -> SlotId {
        SlotId::of(self.request_id, self.slot_index)
    }
}

/// The request a sale works for, once read from the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The slot.
    pub slot: SlotRef,
    /// The request (shared by the sales of one request).
    pub request: Arc<Request>,
    /// Absolute expiry (expiresAt).
    pub expires_at: u64,
    /// Absolute end (requestEnd at the time of reading).
    pub ends_at: u64,
}

/// Contract views of one slot, read at the `pending` block (answer to [`Output::ReadSlot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// `getRequest`; None when the contract does not know the request.
    pub request: Option<Arc<Request>>,
    /// `requestState`; None for an unknown request.
    pub request_state: Option<RequestState>,
    /// `slotState`.
    pub slot_state: SlotState,
    /// `requestExpiry` (expiresAt).
    pub expires_at: u64,
    /// `requestEnd`.
    pub ends_at: u64,
    /// `getHost`; zero when none.
    pub host: Address,
    /// `currentCollateral`.
    pub current_collateral: U256,
}

/// Proof views of one slot at the `pending` block (answer to [`Output::ReadProof`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofView {
    /// `slotState`.
    pub slot_state: SlotState,
    /// `getPointer`.
    pub pointer: u8,
    /// `isProofRequired`.
    pub required: bool,
    /// `willProofBeRequired`.
    pub will_be_required: bool,
    /// `getChallenge`.
    pub challenge: B256,
}

/// A view call failed (transport, timeout): transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain read failed: {0}")]
pub struct ChainError(pub String);

/// A contract revert a sale reacts to (decoded by the market layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revert {
    /// `Marketplace_SlotNotFree` (fillSlot: someone filled it first).
    SlotNotFree,
    /// `Marketplace_SlotIsFree` (freeSlot on a free slot).
    SlotIsFree,
    /// `SlotReservations_ReservationNotAllowed`.
    ReservationNotAllowed,
    /// `Proofs_InvalidProof`.
    ProofInvalid,
    /// `Proofs_ProofAlreadySubmitted`.
    ProofAlreadySubmitted,
    /// `Marketplace_AlreadyPaid`.
    AlreadyPaid,
    /// `Marketplace_InvalidSlotHost`.
    InvalidSlotHost,
    /// Any other revert, by name.
    Other(String),
}

/// Why a transaction did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The contract reverted: definitive for this state of the chain.
    #[error("transaction reverted: {0:?}")]
    Reverted(Revert),
    /// Not sent, not mined, dropped, RPC failure: may succeed when retried.
    #[error("transaction failed: {0}")]
    Transient(String),
}

/// Why the ledger could not reserve for a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveFailure {
    /// No availability matches (or a race took the space): try again when one grows.
    #[error("no matching availability")]
    NoMatch,
    /// The store failed.
    #[error("reservation failed: {0}")]
    Other(String),
}

/// A transaction a sale asks the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tx {
    /// `reserveSlot(requestId, slotIndex)`.
    ReserveSlot {
        /// Slot.
        slot: SlotRef,
    },
    /// approve + `fillSlot(requestId, slotIndex, proof)` posting `collateral`.
    FillSlot {
        /// Slot.
        slot: SlotRef,
        /// The initial proof (boxed: it is 256 bytes and sent once per sale).
        proof: Box<Groth16Proof>,
        /// Collateral to approve (repair-discounted in Repair).
        collateral: U256,
    },
    /// `submitProof(slotId, proof)`.
    SubmitProof {
        /// Slot.
        slot: SlotRef,
        /// The proof (all zero in simulation mode's failing rounds; boxed: 256 bytes).
        proof: Box<Groth16Proof>,
    },
    /// `freeSlot(slotId)` (payout, cancelled payout, or leaving a failed request).
    FreeSlot {
        /// Slot.
        slot: SlotRef,
    },
}

/// How a sale ended: the data of every final state, and what the engine cleans up when
/// [`Output::Ended`] tells it the sale reached one (see [`Sale::ending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The slot.
    pub slot: SlotRef,
    /// Why (a fixed text for the common endings, so ending costs no string allocation).
    pub reason: Cow<'static, str>,
    /// The reservation to end, with the collateral that comes back.
    pub reservation: Option<(ReservationId, U256)>,
    /// Push this item back into the queue, marked seen (boxed: rare, and large).
    pub requeue: Option<Box<SlotQueueItem>>,
    /// Delete the slot's data.
    pub release_data: bool,
}

/// What a sale asks for. Answers come back as the [`Input`] named on each variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Read [`SlotView`] → [`Input::Slot`].
    ReadSlot(SlotRef),
    /// Read [`ProofView`] → [`Input::Proof`].
    ReadProof(SlotRef),
    /// `canReserveSlot` → [`Input::CanReserve`].
    CanReserve(SlotRef),
    /// Send a transaction and wait for one confirmation → [`Input::Tx`].
    Send(Tx),
    /// Reserve bytes and collateral in the ledger (engine) → [`Input::Reserved`]; the engine
    /// builds the [`SlotAsk`](super::ledger::SlotAsk) from the slot, the request's ask and `valid_until` (so that an
    /// output stays small to move).
    Reserve {
        /// The request.
        request: Arc<Request>,
        /// The request's end (requestEnd as read).
        valid_until: u64,
    },
    /// Download the slot's data; progress → [`Input::DownloadProgress`], end →
    /// [`Input::Downloaded`].
    Download {
        /// Slot.
        slot: SlotRef,
        /// The request.
        request: Arc<Request>,
        /// Keep blocks until this time.
        expiry: u64,
        /// The slot is being repaired.
        repairing: bool,
    },
    /// Record downloaded bytes on the reservation (engine, ledger).
    RecordDownload {
        /// The reservation.
        reservation: ReservationId,
        /// Bytes stored in this batch.
        bytes: u64,
    },
    /// Compute a storage proof → [`Input::Proved`].
    Prove {
        /// Slot.
        slot: SlotRef,
        /// The request.
        request: Arc<Request>,
        /// The challenge.
        challenge: B256,
    },
    /// Keep the dataset's blocks until `until` → [`Input::ExpiryUpdated`].
    UpdateExpiry {
        /// Slot.
        slot: SlotRef,
        /// Dataset CID.
        cid: Vec<u8>,
        /// New expiry.
        until: u64,
    },
    /// Wake this sale at chain time `at` → [`Input::Wake`]; replaces an earlier wake.
    WakeAt(u64),
    /// Watch the request for cancellation after `expires_at` (engine, one watch per request).
    WatchRequest {
        /// The request.
        request_id: RequestId,
        /// expiresAt.
        expires_at: u64,
    },
    /// We host the slot now (releases the worker; the node's onSale).
    Filled(SlotRef),
    /// The sale reached a final state, whose [`Ending`] ([`Sale::ending`]) says what the
    /// engine cleans up (ledger, data, requeue, worker). Always the last output of its step.
    Ended,
}

/// Everything that moves a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Answer to [`Output::ReadSlot`].
    Slot(Result<SlotView, ChainError>),
    /// Answer to [`Output::ReadProof`].
    Proof(Result<ProofView, ChainError>),
    /// Answer to [`Output::CanReserve`].
    CanReserve(Result<bool, ChainError>),
    /// Answer to [`Output::Send`].
    Tx(Result<(), TxError>),
    /// Answer to [`Output::Reserve`] (the reservation boxed, so that an input stays small
    /// to move).
    Reserved(Result<Box<Reservation>, ReserveFailure>),
    /// Bytes stored by the running download.
    DownloadProgress(u64),
    /// The download finished.
    Downloaded(Result<(), String>),
    /// Answer to [`Output::Prove`] (the proof boxed: it is 256 bytes).
    Proved(Result<Box<Groth16Proof>, String>),
    /// Answer to [`Output::UpdateExpiry`].
    ExpiryUpdated(Result<(), String>),
    /// The time asked for with [`Output::WakeAt`] has come.
    Wake,
    /// The chain confirms the request is Cancelled.
    Cancelled,
    /// RequestFailed.
    Failed,
    /// SlotFilled for this slot (by anyone).
    SlotFilled,
    /// RequestFulfilled (no transition).
    Fulfilled,
}

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
    /// Reading the slot state (for the collateral).
    Reading,
    /// fillSlot sent.
    Sending,
}

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
    /// Where it is.
    pub step: FreeStep,
}

/// Unknown (restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The slot.
    pub slot: SlotRef,
    /// The persisted reservation, when one exists.
    pub reservation: Option<Reservation>,
    /// Failed reads so far.
    pub attempt: u32,
    /// true while waiting to read again.
    pub backoff: bool,
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
    Cancelled(Box<Freeing>, FreeCause),
    /// The request failed; leaving our slot if we host it.
    Failed(Box<Freeing>, FreeCause),
    /// Ended after payout.
    Finished(Box<Ending>),
    /// Ended without payout: cancelled or failed, all cleaned up.
    Closed(Box<Ending>, &'static str),
    /// Ended by an error.
    Errored(Box<Ending>),
    /// Ended because the slot was not for us.
    Ignored(Box<Ending>),
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
            Sale::Payout(f) | Sale::Cancelled(f, _) | Sale::Failed(f, _) => f.hosted.base.slot,
            Sale::Finished(f) | Sale::Closed(f, _) | Sale::Errored(f) | Sale::Ignored(f) => f.slot,
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
            Sale::Finished(_) => "SaleFinished",
            Sale::Closed(_, name) => name,
            Sale::Errored(_) => "SaleErrored",
            Sale::Ignored(_) => "SaleIgnored",
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
            Sale::Finished(f) | Sale::Closed(f, _) | Sale::Errored(f) | Sale::Ignored(f) => Some(f),
            _ => None,
        }
    }

    /// The ending of a final sale, taken out of it.
    pub(crate) fn into_ending(self) -> Option<Box<Ending>> {
        match self {
            Sale::Finished(f) | Sale::Closed(f, _) | Sale::Errored(f) | Sale::Ignored(f) => Some(f),
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
            Sale::Payout(f) | Sale::Cancelled(f, _) | Sale::Failed(f, _) => Some(&f.hosted.base),
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
            Sale::Payout(f) | Sale::Cancelled(f, _) | Sale::Failed(f, _) => {
                f.hosted.reservation.as_ref()
            }
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
            _ => {}
        }
        match self {
            Sale::Preparing(p) => preparing(p, input, now, cfg, out),
            Sale::SlotReserving(s) => slot_reserving(s, input, out),
            Sale::Downloading(r) => downloading(r, input, now, cfg, out),
            Sale::InitialProving(r, step) => initial_proving(r, step, input, now, cfg, out),
            Sale::Filling(r, proof, step) => filling(r, proof, step, input, cfg, out),
            Sale::Filled(h, step) => filled(h, step, input, now, cfg, out),
            Sale::Proving(p) => proving(p, input, now, cfg, out),
            Sale::Payout(f) => freeing(f, FreeCause::Payout, input, now, cfg, out),
            Sale::Cancelled(f, c) | Sale::Failed(f, c) => freeing(f, c, input, now, cfg, out),
            Sale::Unknown(u) => unknown(u, input, now, cfg, out),
            done => done,
        }
    }

    fn interrupt(self, what: Interrupt, out: &mut Vec<Output>) -> Sale {
        let name = match what {
            Interrupt::Cancelled => "SaleCancelled",
            Interrupt::Failed => "SaleFailed",
        };
        let reason = match what {
            Interrupt::Cancelled => "request cancelled",
            Interrupt::Failed => "request failed",
        };
        match self {
            // Before any reservation: nothing to give back.
            Sale::Preparing(p) => {
                let slot = p.slot;
                end_closed(slot, name, reason, None, false, out)
            }
            // Before our fill: everything held comes back.
            Sale::SlotReserving(s) => end_held(Closing::Closed(name), &s.held, reason, out),
            Sale::Downloading(r) | Sale::InitialProving(r, _) => {
                end_held(Closing::Closed(name), &r, reason, out)
            }
            // Our fill may have happened: read the slot to find out.
            Sale::Filling(r, _, _) => free_start(hosted_of(*r), what.cause(), false, out),
            Sale::Filled(h, _) => free_start(*h, what.cause(), false, out),
            Sale::Proving(p) => free_start(p.hosted, what.cause(), true, out),
            Sale::Payout(f) => free_start(f.hosted, what.cause(), true, out),
            Sale::Cancelled(f, c) | Sale::Failed(f, c) => {
                // Already ending: a failed request stays failed; a cancel after a failure
                // changes nothing either.
                rebuild_freeing(f, c)
            }
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
                end(
                    Closing::Ignored,
                    slot,
                    "slot filled by another host",
                    None,
                    None,
                    false,
                    out,
                )
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

fn hosted_of(r: Reserved) -> Hosted {
    Hosted {
        base: r.base,
        reservation: Some(r.reservation),
    }
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

enum Closing {
    Finished,
    Closed(&'static str),
    Errored,
    Ignored,
}

fn end(
    how: Closing,
    slot: SlotRef,
    reason: impl Into<Cow<'static, str>>,
    reservation: Option<(ReservationId, U256)>,
    requeue: Option<Box<SlotQueueItem>>,
    release_data: bool,
    out: &mut Vec<Output>,
) -> Sale {
    let fin = Box::new(Ending {
        slot,
        reason: reason.into(),
        reservation,
        requeue,
        release_data,
    });
    out.push(Output::Ended);
    match how {
        Closing::Finished => Sale::Finished(fin),
        Closing::Closed(name) => Sale::Closed(fin, name),
        Closing::Errored => Sale::Errored(fin),
        Closing::Ignored => Sale::Ignored(fin),
    }
}

fn end_closed(
    slot: SlotRef,
    name: &'static str,
    reason: &'static str,
    reservation: Option<(ReservationId, U256)>,
    release_data: bool,
    out: &mut Vec<Output>,
) -> Sale {
    end(
        Closing::Closed(name),
        slot,
        reason,
        reservation,
        None,
        release_data,
        out,
    )
}

/// Ends a sale that posted no collateral: all of it comes back.
fn end_held(
    how: Closing,
    r: &Reserved,
    reason: impl Into<Cow<'static, str>>,
    out: &mut Vec<Output>,
) -> Sale {
    let downloaded = r.reservation.downloaded > 0;
    end(
        how,
        r.base.slot,
        reason,
        Some((r.reservation.id, r.reservation.collateral)),
        None,
        downloaded,
        out,
    )
}

fn held_of(h: &Hosted) -> U256 {
    h.reservation
        .as_ref()
        .map(|r| r.collateral)
        .unwrap_or(U256::ZERO)
}

fn end_hosted(
    how: Closing,
    h: &Hosted,
    reason: impl Into<Cow<'static, str>>,
    returned: U256,
    out: &mut Vec<Output>,
) -> Sale {
    let res = h.reservation.as_ref().map(|r| (r.id, returned));
    end(how, h.base.slot, reason, res, None, true, out)
}

/// Asks the engine to watch the request's expiry while the chain still reports it New
/// (Preparing and Unknown both start this watch).
fn watch_while_new(slot: SlotRef, view: &SlotView, out: &mut Vec<Output>) {
    if view.request_state == Some(RequestState::New) {
        out.push(Output::WatchRequest {
            request_id: slot.request_id,
            expires_at: view.expires_at,
        });
    }
}

fn base_of(slot: SlotRef, view: &SlotView, request: Arc<Request>) -> Base {
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
        return end(
            Closing::Errored,
            p.slot,
            e.to_string(),
            None,
            None,
            false,
            out,
        );
    }
    out.push(Output::WakeAt(cfg.backoff(now, attempt)));
    p.step = PrepStep::ReadBackoff {
        attempt: attempt + 1,
    };
    Sale::Preparing(p)
}

fn preparing(
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
                return end(
                    Closing::Errored,
                    slot,
                    "request could not be retrieved",
                    None,
                    None,
                    false,
                    out,
                );
            };
            if !matches!(view.slot_state, SlotState::Free | SlotState::Repair) {
                return end(
                    Closing::Ignored,
                    slot,
                    "slot is not free",
                    None,
                    None,
                    false,
                    out,
                );
            }
            if !matches!(
                view.request_state,
                Some(RequestState::New | RequestState::Started)
            ) || view.ends_at <= now
            {
                return end(
                    Closing::Ignored,
                    slot,
                    "request is over",
                    None,
                    None,
                    false,
                    out,
                );
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
            Err(ReserveFailure::NoMatch) => end(
                Closing::Ignored,
                slot,
                "no matching availability",
                None,
                Some(Box::new(SlotQueueItem {
                    seen: true,
                    ..p.item
                })),
                false,
                out,
            ),
            Err(e @ ReserveFailure::Other(_)) => end(
                Closing::Errored,
                slot,
                e.to_string(),
                None,
                None,
                false,
                out,
            ),
        },
        (step, _) => {
            p.step = step;
            Sale::Preparing(p)
        }
    }
}

fn slot_reserving(mut s: Box<SlotReserving>, input: Input, out: &mut Vec<Output>) -> Sale {
    match (s.sent, input) {
        (false, Input::CanReserve(Ok(true))) => {
            out.push(Output::Send(Tx::ReserveSlot {
                slot: s.held.base.slot,
            }));
            s.sent = true;
            Sale::SlotReserving(s)
        }
        (false, Input::CanReserve(Ok(false))) => {
            end_held(Closing::Ignored, &s.held, "cannot reserve the slot", out)
        }
        (false, Input::CanReserve(Err(e))) => {
            end_held(Closing::Errored, &s.held, e.to_string(), out)
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
            Closing::Ignored,
            &s.held,
            "slot reservation not allowed",
            out,
        ),
        (true, Input::Tx(Err(e))) => end_held(Closing::Errored, &s.held, e.to_string(), out),
        (_, _) => Sale::SlotReserving(s),
    }
}

fn downloading(
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
        Input::Downloaded(Err(e)) => {
            end_held(Closing::Errored, &r, format!("download failed: {e}"), out)
        }
        _ => Sale::Downloading(r),
    }
}

fn initial_proving(
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
            Sale::Filling(r, proof, FillStep::Reading)
        }
        (InitialStep::Computing, Input::Proved(Err(e))) => end_held(
            Closing::Errored,
            &r,
            format!("initial proof failed: {e}"),
            out,
        ),
        (step, _) => Sale::InitialProving(r, step),
    }
}

fn filling(
    r: Box<Reserved>,
    proof: Box<Groth16Proof>,
    step: FillStep,
    input: Input,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    match (step, input) {
        (FillStep::Reading, Input::Slot(Ok(view))) => {
            let ask = &r.base.request.ask;
            let collateral = match view.slot_state {
                SlotState::Free => ask.collateral_per_slot(),
                SlotState::Repair => ask.repair_collateral(cfg.repair_reward_percentage),
                _ => return end_held(Closing::Ignored, &r, "slot is no longer free", out),
            };
            out.push(Output::Send(Tx::FillSlot {
                slot: r.base.slot,
                proof: proof.clone(),
                collateral,
            }));
            Sale::Filling(r, proof, FillStep::Sending)
        }
        (FillStep::Reading, Input::Slot(Err(e))) => {
            end_held(Closing::Errored, &r, e.to_string(), out)
        }
        (FillStep::Sending, Input::Tx(Ok(()))) => {
            out.push(Output::ReadSlot(r.base.slot));
            Sale::Filled(
                Box::new(hosted_of(*r)),
                FilledStep::CheckingHost { attempt: 0 },
            )
        }
        (FillStep::Sending, Input::Tx(Err(TxError::Reverted(Revert::SlotNotFree)))) => {
            end_held(Closing::Ignored, &r, "slot already filled", out)
        }
        (FillStep::Sending, Input::Tx(Err(e))) => {
            end_held(Closing::Errored, &r, format!("fillSlot: {e}"), out)
        }
        (step, _) => Sale::Filling(r, proof, step),
    }
}

fn filled(
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
                return end_hosted(Closing::Errored, &h, "Slot filled by other host", held, out);
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

fn start_proving(h: Box<Hosted>, now: u64, cfg: &SaleConfig, out: &mut Vec<Output>) -> Sale {
    out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
    Sale::Proving(Box::new(Proving {
        hosted: *h,
        last_proved: None,
        sim_counter: 0,
        step: ProveStep::Idle,
    }))
}

fn proving(
    mut p: Box<Proving>,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    let slot = p.hosted.base.slot;
    let period_end = |period: u64| (period + 1) * cfg.period.max(1);
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
                    out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
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
                        out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
                    }
                }
                SlotState::Finished => return payout_start(p.hosted, out),
                SlotState::Cancelled => {
                    return free_start(p.hosted, FreeCause::Cancelled, true, out)
                }
                SlotState::Failed => return free_start(p.hosted, FreeCause::Failed, true, out),
                SlotState::Repair => {
                    return end_hosted(
                        Closing::Errored,
                        &p.hosted,
                        "slot was forcibly freed",
                        U256::ZERO,
                        out,
                    )
                }
                SlotState::Free | SlotState::Paid => {
                    return end_hosted(
                        Closing::Errored,
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
            Err(_) => out.push(Output::WakeAt(cfg.next_period_start(now) + 1)),
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
                out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
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
                    out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
                }
            }
            // Invalid (expected for the simulated failures) or any other revert: this
            // period is lost; carry on.
            Err(TxError::Reverted(_)) => {
                if proof.is_zero() {
                    p.last_proved = Some(period);
                }
                out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
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
                out.push(Output::WakeAt(cfg.next_period_start(now) + 1));
            }
        }
        (step, _) => p.step = step,
    }
    Sale::Proving(p)
}

fn free_start(hosted: Hosted, cause: FreeCause, was_hosting: bool, out: &mut Vec<Output>) -> Sale {
    out.push(Output::ReadSlot(hosted.base.slot));
    rebuild_freeing(
        Box::new(Freeing {
            hosted,
            was_hosting,
            step: FreeStep::Reading { attempt: 0 },
        }),
        cause,
    )
}

fn payout_start(hosted: Hosted, out: &mut Vec<Output>) -> Sale {
    free_start(hosted, FreeCause::Payout, true, out)
}

fn rebuild_freeing(f: Box<Freeing>, cause: FreeCause) -> Sale {
    match cause {
        FreeCause::Payout => Sale::Payout(f),
        FreeCause::Cancelled => Sale::Cancelled(f, cause),
        FreeCause::Failed => Sale::Failed(f, cause),
    }
}

fn free_done(f: &Freeing, cause: FreeCause, collateral: U256, out: &mut Vec<Output>) -> Sale {
    match cause {
        FreeCause::Payout => end_hosted(Closing::Finished, &f.hosted, "paid out", collateral, out),
        FreeCause::Cancelled => end_hosted(
            Closing::Closed("SaleCancelled"),
            &f.hosted,
            "request cancelled; paid out",
            collateral,
            out,
        ),
        FreeCause::Failed => end_hosted(
            Closing::Closed("SaleFailed"),
            &f.hosted,
            "request failed",
            U256::ZERO,
            out,
        ),
    }
}

fn freeing(
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
                return end_hosted(Closing::Finished, &f.hosted, "already paid", held, out);
            }
            if is_host && view.slot_state == SlotState::Filled {
                // The chain says the slot is live: the request was not cancelled or failed
                // after all (a reorganisation removed the event) or is not over yet. A
                // freeSlot now would be a forced free, forfeiting all the collateral: keep
                // proving instead; the proving loop sees the slot's real end.
                return start_proving(Box::new(f.hosted), now, cfg, out);
            }
            if !is_host {
                let returned = if f.was_hosting {
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
                    FreeCause::Payout => Closing::Errored,
                    FreeCause::Cancelled => Closing::Closed("SaleCancelled"),
                    FreeCause::Failed => Closing::Closed("SaleFailed"),
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
                attempt: 0,
            };
            rebuild_freeing(f, cause)
        }
        (FreeStep::Reading { attempt }, Input::Slot(Err(e))) => {
            if cause == FreeCause::Failed && attempt + 1 >= cfg.max_attempts {
                return end_hosted(
                    Closing::Closed("SaleFailed"),
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
                    _ => end_hosted(Closing::Errored, &f.hosted, reason, U256::ZERO, out),
                }
            }
            Err(TxError::Transient(e)) => {
                if cause == FreeCause::Failed && attempt + 1 >= cfg.max_attempts {
                    // A failed request pays nothing back: give up on the freeSlot, saying why.
                    return end_hosted(
                        Closing::Closed("SaleFailed"),
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

fn unknown(
    mut u: Box<Unknown>,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    match input {
        Input::Slot(Err(_)) if !u.backoff => {
            out.push(Output::WakeAt(cfg.backoff(now, u.attempt)));
            u.attempt += 1;
            u.backoff = true;
            Sale::Unknown(u)
        }
        Input::Wake if u.backoff => {
            out.push(Output::ReadSlot(u.slot));
            u.backoff = false;
            Sale::Unknown(u)
        }
        Input::Slot(Ok(view)) if !u.backoff => {
            let held = u
                .reservation
                .as_ref()
                .map(|r| r.collateral)
                .unwrap_or(U256::ZERO);
            let Some(request) = view.request.clone() else {
                let res = u.reservation.map(|r| (r.id, held));
                return end(
                    Closing::Errored,
                    u.slot,
                    "request could not be retrieved",
                    res,
                    None,
                    true,
                    out,
                );
            };
            watch_while_new(u.slot, &view, out);
            let hosted = Hosted {
                base: base_of(u.slot, &view, request),
                reservation: u.reservation,
            };
            let freeing_with = |cause, out: &mut Vec<Output>| {
                let f = Box::new(Freeing {
                    hosted: hosted.clone(),
                    was_hosting: true,
                    step: FreeStep::Reading { attempt: 0 },
                });
                freeing(f, cause, Input::Slot(Ok(view.clone())), now, cfg, out)
            };
            match view.slot_state {
                SlotState::Free => end_hosted(
                    Closing::Errored,
                    &hosted,
                    "Slot state on chain should not be 'free'",
                    held,
                    out,
                ),
                SlotState::Filled => filled(
                    Box::new(hosted),
                    FilledStep::CheckingHost { attempt: 0 },
                    Input::Slot(Ok(view)),
                    now,
                    cfg,
                    out,
                ),
                SlotState::Finished => freeing_with(FreeCause::Payout, out),
                SlotState::Cancelled => freeing_with(FreeCause::Cancelled, out),
                SlotState::Failed => freeing_with(FreeCause::Failed, out),
                SlotState::Paid => {
                    end_hosted(Closing::Finished, &hosted, "already paid", held, out)
                }
                SlotState::Repair => end_hosted(
                    Closing::Errored,
                    &hosted,
                    "slot was forcibly freed",
                    U256::ZERO,
                    out,
                ),
            }
        }
        _ => Sale::Unknown(u),
    }
}
