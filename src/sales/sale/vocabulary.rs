//! The words a sale speaks: which slot it is about, the contract views it reads, the
//! transactions it sends and how they fail, and the [`Output`]s it asks for with the
//! [`Input`]s that answer them.

use std::sync::Arc;

use crate::market::{
    Address, Groth16Proof, Request, RequestId, RequestState, SlotId, SlotState, B256, U256,
};
use crate::sales::ledger::{Reservation, ReservationId};

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

/// Proof views of one slot as the next block sees them (answer to [`Output::ReadProof`]).
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
    /// builds the [`SlotAsk`](crate::sales::ledger::SlotAsk) from the slot, the request's ask
    /// and `valid_until` (so that an output stays small to move).
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
    /// The sale reached a final state, whose [`Ending`](super::Ending)
    /// ([`Sale::ending`](super::Sale::ending)) says what the engine cleans up (ledger, data,
    /// requeue, worker). Always the last output of its step.
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
    /// The slot view read again after a reorganisation (the engine's re-check, not the
    /// answer to a command: it comes whatever the sale waits for, and leaves its ticket
    /// alone). See `Sale::rechecked`.
    Rechecked(SlotView),
}
