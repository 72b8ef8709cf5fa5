//! The Marketplace contract model (`docs/marketplace.md`): storage of
//! requests and slots, computed states, reservations, filling with collateral, proofs,
//! missed-proof slashing, forced free, failure, payouts and client withdrawals.
//!
//! Every transaction checks everything before it changes anything, so a revert leaves no
//! trace, and returns the events it emitted. Views and transactions take a [`Ctx`]: the block
//! they execute in.

use super::fasthash::FastMap;
use std::hash::Hash;

use codex::market::{
    keccak256, Address, Groth16Proof, MarketEvent, MarketplaceConfig, Request, RequestId,
    RequestState, SlotId, SlotState, B256, U256,
};

use super::chain::Ctx;
use super::token::Token;

/// The address of the simulated Marketplace (TestMarketplace's local address).
pub const MARKETPLACE_ADDRESS: Address = Address::new([
    0xa8, 0x52, 0x33, 0xc6, 0x3b, 0x9e, 0xe9, 0x64, 0xad, 0xd6, 0xf2, 0xcf, 0xfe, 0x00, 0xfd, 0x84,
    0xeb, 0x32, 0x33, 0x8f,
]);

/// A revert, named like the contract's custom errors (`docs/marketplace.md#errors`) without
/// their prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revert {
    /// `Marketplace_InvalidClientAddress`: the sender is not the request's client.
    #[error("Marketplace_InvalidClientAddress")]
    InvalidClientAddress,
    /// `Marketplace_RequestAlreadyExists`: a request with this id was already stored.
    #[error("Marketplace_RequestAlreadyExists")]
    RequestAlreadyExists,
    /// `Marketplace_InvalidExpiry`: expiry is 0 or not below the duration.
    #[error("Marketplace_InvalidExpiry")]
    InvalidExpiry,
    /// `Marketplace_InsufficientSlots`: zero slots.
    #[error("Marketplace_InsufficientSlots")]
    InsufficientSlots,
    /// `Marketplace_InvalidMaxSlotLoss`: maxSlotLoss above slots.
    #[error("Marketplace_InvalidMaxSlotLoss")]
    InvalidMaxSlotLoss,
    /// `Marketplace_InsufficientDuration`: zero duration.
    #[error("Marketplace_InsufficientDuration")]
    InsufficientDuration,
    /// `Marketplace_InsufficientProofProbability`: zero proof probability.
    #[error("Marketplace_InsufficientProofProbability")]
    InsufficientProofProbability,
    /// `Marketplace_InsufficientCollateral`: zero collateral per byte.
    #[error("Marketplace_InsufficientCollateral")]
    InsufficientCollateral,
    /// `Marketplace_InsufficientReward`: zero price per byte per second.
    #[error("Marketplace_InsufficientReward")]
    InsufficientReward,
    /// `Marketplace_InvalidCid`: empty CID.
    #[error("Marketplace_InvalidCid")]
    InvalidCid,
    /// `Marketplace_DurationExceedsLimit`: duration above requestDurationLimit.
    #[error("Marketplace_DurationExceedsLimit")]
    DurationExceedsLimit,
    /// `Marketplace_UnknownRequest`: no request with this id (or the slot was never filled).
    #[error("Marketplace_UnknownRequest")]
    UnknownRequest,
    /// `Marketplace_InvalidSlot`: slot index not below the request's slot count.
    #[error("Marketplace_InvalidSlot")]
    InvalidSlot,
    /// `Marketplace_ReservationRequired`: fillSlot without a reservation of the sender.
    #[error("Marketplace_ReservationRequired")]
    ReservationRequired,
    /// `Marketplace_SlotNotFree`: fillSlot on a slot that is not Free or Repair.
    #[error("Marketplace_SlotNotFree")]
    SlotNotFree,
    /// `Marketplace_StartNotBeforeExpiry`: a payout interval that is empty (fill at endsAt,
    /// or a cancelled slot filled exactly at expiresAt).
    #[error("Marketplace_StartNotBeforeExpiry")]
    StartNotBeforeExpiry,
    /// `Marketplace_ProofNotSubmittedByHost`: submitProof by someone other than the host.
    #[error("Marketplace_ProofNotSubmittedByHost")]
    ProofNotSubmittedByHost,
    /// `Marketplace_SlotIsFree`: the stored slot state is Free.
    #[error("Marketplace_SlotIsFree")]
    SlotIsFree,
    /// `Marketplace_InvalidSlotHost`: freeSlot by someone other than the current host.
    #[error("Marketplace_InvalidSlotHost")]
    InvalidSlotHost,
    /// `Marketplace_AlreadyPaid`: freeSlot on a Paid slot.
    #[error("Marketplace_AlreadyPaid")]
    AlreadyPaid,
    /// `Marketplace_InvalidState`: withdrawFunds while the request is New or Started.
    #[error("Marketplace_InvalidState")]
    InvalidState,
    /// `Marketplace_NothingToWithdraw`: withdrawFunds a second time.
    #[error("Marketplace_NothingToWithdraw")]
    NothingToWithdraw,
    /// `Marketplace_SlotNotAcceptingProofs`: markProofAsMissing on a slot that is not Filled.
    #[error("Marketplace_SlotNotAcceptingProofs")]
    SlotNotAcceptingProofs,
    /// `Marketplace_TransferFailed`: a token transfer returned false.
    #[error("Marketplace_TransferFailed")]
    TransferFailed,
    /// `Marketplace_RepairRewardPercentageTooHigh` (constructor).
    #[error("Marketplace_RepairRewardPercentageTooHigh")]
    RepairRewardPercentageTooHigh,
    /// `Marketplace_SlashPercentageTooHigh` (constructor).
    #[error("Marketplace_SlashPercentageTooHigh")]
    SlashPercentageTooHigh,
    /// `Marketplace_MaximumSlashingTooHigh` (constructor).
    #[error("Marketplace_MaximumSlashingTooHigh")]
    MaximumSlashingTooHigh,
    /// `Proofs_ProofAlreadySubmitted`: a proof was already recorded for this slot and period.
    #[error("Proofs_ProofAlreadySubmitted")]
    ProofAlreadySubmitted,
    /// `Proofs_InvalidProof`: the verifier rejected the proof.
    #[error("Proofs_InvalidProof")]
    InvalidProof,
    /// `Proofs_PeriodNotEnded`: markProofAsMissing before the period's end has passed.
    #[error("Proofs_PeriodNotEnded")]
    PeriodNotEnded,
    /// `Proofs_ValidationTimedOut`: markProofAsMissing after periodEnd + timeout.
    #[error("Proofs_ValidationTimedOut")]
    ValidationTimedOut,
    /// `Proofs_ProofNotMissing`: a proof was received for the period.
    #[error("Proofs_ProofNotMissing")]
    ProofNotMissing,
    /// `Proofs_ProofNotRequired`: no proof was required for the period (at this block).
    #[error("Proofs_ProofNotRequired")]
    ProofNotRequired,
    /// `Proofs_ProofAlreadyMarkedMissing`: the period was already marked.
    #[error("Proofs_ProofAlreadyMarkedMissing")]
    ProofAlreadyMarkedMissing,
    /// `SlotReservations_ReservationNotAllowed`: slot not Free/Repair, set full, or the
    /// sender already reserved.
    #[error("SlotReservations_ReservationNotAllowed")]
    ReservationNotAllowed,
    /// `ERC20InsufficientAllowance(spender, allowance, needed)`.
    #[error("ERC20InsufficientAllowance({spender}, {allowance}, {needed})")]
    Erc20InsufficientAllowance {
        /// The spender (the Marketplace).
        spender: Address,
        /// The allowance it had.
        allowance: U256,
        /// The amount it needed.
        needed: U256,
    },
    /// `ERC20InsufficientBalance(sender, balance, needed)`.
    #[error("ERC20InsufficientBalance({sender}, {balance}, {needed})")]
    Erc20InsufficientBalance {
        /// The account paying.
        sender: Address,
        /// Its balance.
        balance: U256,
        /// The amount needed.
        needed: U256,
    },
    /// `Panic(uint256)`: a failed assert (1) or arithmetic overflow (0x11).
    #[error("Panic({0:#x})")]
    Panic(u64),
}

impl Revert {
    /// The Solidity error signature, e.g. `Marketplace_SlotNotFree()`.
    pub fn signature(&self) -> String {
        match self {
            Revert::Erc20InsufficientAllowance { .. } => {
                "ERC20InsufficientAllowance(address,uint256,uint256)".into()
            }
            Revert::Erc20InsufficientBalance { .. } => {
                "ERC20InsufficientBalance(address,uint256,uint256)".into()
            }
            Revert::Panic(_) => "Panic(uint256)".into(),
            other => format!("{other}()"),
        }
    }

    /// The 4-byte selector of the error, as revert data starts with it.
    pub fn selector(&self) -> [u8; 4] {
        let h = keccak256(self.signature().as_bytes());
        [h[0], h[1], h[2], h[3]]
    }
}

/// How `fillSlot` and `submitProof` verify proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProofMode {
    /// TestVerifier: every proof except the all-zero one is valid.
    #[default]
    AnyNonZero,
    /// The proof must be [`proof_for`] the challenge at the executing block, the request's
    /// merkle root and the slot index: catches proofs built against a stale challenge.
    Strict,
}

/// The proof the [`ProofMode::Strict`] verifier accepts: the three public inputs (challenge
/// field element, merkle-root field element, slot index) in words 0–2, ones elsewhere.
pub fn proof_for(challenge: B256, merkle_root: B256, slot_index: u64) -> Groth16Proof {
    let mut w = [U256::from(1u8); 8];
    w[0] = challenge_to_field_element(challenge);
    w[1] = U256::from_le_slice(merkle_root.as_slice());
    w[2] = U256::from(slot_index);
    Groth16Proof(w)
}

/// The first 31 bytes of the challenge read as a little-endian integer
/// (`docs/marketplace.md#proof-requirement`).
pub fn challenge_to_field_element(challenge: B256) -> U256 {
    U256::from_le_slice(&challenge[..31])
}

/// A set with O(1) insert/remove/contains that lists its items like Solidity's
/// EnumerableSet (removal swaps the last item into the hole).
#[derive(Debug, Clone)]
pub struct IndexedSet<T> {
    items: Vec<T>,
    pos: FastMap<T, usize>,
}

impl<T> Default for IndexedSet<T> {
    fn default() -> Self {
        IndexedSet {
            items: Vec::new(),
            pos: FastMap::default(),
        }
    }
}

impl<T: Copy + Eq + Hash> IndexedSet<T> {
    /// Adds `x`; false when it was present.
    pub fn insert(&mut self, x: T) -> bool {
        if self.pos.contains_key(&x) {
            return false;
        }
        self.pos.insert(x, self.items.len());
        self.items.push(x);
        true
    }
    /// Removes `x`; false when it was absent.
    pub fn remove(&mut self, x: &T) -> bool {
        let Some(i) = self.pos.remove(x) else {
            return false;
        };
        self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            self.pos.insert(*moved, i);
        }
        true
    }
    /// Whether `x` is present.
    pub fn contains(&self, x: &T) -> bool {
        self.pos.contains_key(x)
    }
    /// The items, in EnumerableSet order.
    pub fn as_slice(&self) -> &[T] {
        &self.items
    }
    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Stored data of a request (`_requests` + `_requestContexts`).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The request as submitted.
    pub request: Request,
    /// Stored state (the computed one is [`Marketplace::request_state`]).
    pub state: RequestState,
    /// What the client gets back on withdrawal, as tracked by the contract.
    pub funds_to_return_to_client: U256,
    /// Slots currently filled.
    pub slots_filled: u64,
    /// Timestamp of the fill that started the request (0 before).
    pub started_at: u64,
    /// t0 + duration, or now − 1 once failed.
    pub ends_at: u64,
    /// t0 + expiry.
    pub expires_at: u64,
    /// The client has withdrawn (model bookkeeping; the contract zeroes the refund).
    pub withdrawn: bool,
}

/// Stored data of a slot (`_slots` plus the Proofs mappings for its id).
#[derive(Debug, Clone)]
pub struct SlotRecord {
    /// The slot's request (set by the first fill).
    pub request_id: RequestId,
    /// The slot's index.
    pub slot_index: u64,
    /// Current host, zero after a forced free.
    pub host: Address,
    /// Stored state (Filled, Repair or Paid; computed: [`Marketplace::slot_state`]).
    pub state: SlotState,
    /// Timestamp of the current fill (0 after a forced free).
    pub filled_at: u64,
    /// Collateral held for the slot.
    pub current_collateral: U256,
    /// Period of the current fill; proofs are needed in later periods only.
    pub start_period: u64,
    /// Missed proofs since the last forced free.
    pub missed: u64,
    /// slotProbability, fixed by the request (cached).
    pub probability: U256,
    /// Periods with a received proof (pruned to recent ones; queries never look further).
    received: Vec<u64>,
    /// Periods marked missing (pruned like `received`).
    missing: Vec<u64>,
}

/// One slot as a host sees it at a block ([`Marketplace::slot_summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSummary {
    /// Computed slot state.
    pub state: SlotState,
    /// Current host (zero after a forced free).
    pub host: Address,
    /// `isProofRequired`.
    pub proof_required: bool,
    /// `willProofBeRequired`.
    pub proof_will_be_required: bool,
    /// The slot's request.
    pub request_id: RequestId,
    /// The slot's index.
    pub slot_index: u64,
}

/// Totals the contract tracks, useful for invariants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tokens received (client payments and collateral).
    pub received: U256,
    /// Tokens sent (payouts, refunds, validator rewards).
    pub sent: U256,
}

/// The Marketplace contract and its token.
#[derive(Debug, Clone)]
pub struct Marketplace {
    config: MarketplaceConfig,
    proof_mode: ProofMode,
    /// The ERC20 used for payment and collateral.
    pub token: Token,
    requests: FastMap<RequestId, RequestRecord>,
    slots: FastMap<SlotId, SlotRecord>,
    reservations: FastMap<SlotId, Vec<Address>>,
    my_slots: FastMap<Address, IndexedSet<SlotId>>,
    my_requests: FastMap<Address, IndexedSet<RequestId>>,
    /// Slots whose stored state is Filled (candidates for validation).
    filled: IndexedSet<SlotId>,
    totals: Totals,
}

fn mul(a: U256, b: U256) -> Result<U256, Revert> {
    a.checked_mul(b).ok_or(Revert::Panic(0x11))
}

impl Marketplace {
    /// Deploys the Marketplace with `config`, rejecting what the constructor rejects
    /// (`docs/marketplace.md#marketplaceconfig`).
    pub fn new(config: MarketplaceConfig, proof_mode: ProofMode) -> Result<Marketplace, Revert> {
        if config.repair_reward_percentage > 100 {
            return Err(Revert::RepairRewardPercentageTooHigh);
        }
        if config.slash_percentage > 100 {
            return Err(Revert::SlashPercentageTooHigh);
        }
        if u32::from(config.max_number_of_slashes) * u32::from(config.slash_percentage) > 100 {
            return Err(Revert::MaximumSlashingTooHigh);
        }
        Ok(Marketplace {
            config,
            proof_mode,
            token: Token::default(),
            requests: FastMap::default(),
            slots: FastMap::default(),
            reservations: FastMap::default(),
            my_slots: FastMap::default(),
            my_requests: FastMap::default(),
            filled: IndexedSet::default(),
            totals: Totals::default(),
        })
    }

    /// `configuration()`.
    pub fn configuration(&self) -> &MarketplaceConfig {
        &self.config
    }

    /// The proof verification mode.
    pub fn proof_mode(&self) -> ProofMode {
        self.proof_mode
    }

    /// Tokens received and sent by the contract so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The stored record of a request, if known.
    pub fn request_record(&self, id: RequestId) -> Option<&RequestRecord> {
        self.requests.get(&id)
    }

    /// The stored record of a slot, if it was ever filled.
    pub fn slot_record(&self, slot: SlotId) -> Option<&SlotRecord> {
        self.slots.get(&slot)
    }

    /// Slots whose stored state is Filled (the computed state may already be Finished,
    /// Cancelled or Failed), in set order.
    pub fn filled_slots(&self) -> &[SlotId] {
        self.filled.as_slice()
    }

    /// Number of known requests.
    pub fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// Ids of all known requests (arbitrary order).
    pub fn request_ids(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.requests.keys().copied()
    }

    // ----- views -------------------------------------------------------------------------

    fn record(&self, id: RequestId) -> Result<&RequestRecord, Revert> {
        self.requests.get(&id).ok_or(Revert::UnknownRequest)
    }

    fn state_of(r: &RequestRecord, now: u64) -> RequestState {
        match r.state {
            RequestState::New if now > r.expires_at => RequestState::Cancelled,
            RequestState::New | RequestState::Started if now > r.ends_at => RequestState::Finished,
            s => s,
        }
    }

    /// `requestState(id)` (`docs/marketplace.md#request-and-slot-states`).
    pub fn request_state(&self, cx: &Ctx, id: RequestId) -> Result<RequestState, Revert> {
        Ok(Self::state_of(self.record(id)?, cx.timestamp))
    }

    /// `slotState(slot)` (`docs/marketplace.md#request-and-slot-states`). Never reverts;
    /// unknown slots are Free.
    pub fn slot_state(&self, cx: &Ctx, slot: SlotId) -> SlotState {
        match self.slots.get(&slot) {
            Some(s) => self.state_of_slot(cx, s, self.requests.get(&s.request_id)),
            None => SlotState::Free,
        }
    }

    /// The slot state rule (`docs/marketplace.md#request-and-slot-states`) for a stored slot and
    /// its request record.
    fn state_of_slot(&self, cx: &Ctx, s: &SlotRecord, r: Option<&RequestRecord>) -> SlotState {
        if s.state == SlotState::Paid {
            return SlotState::Paid;
        }
        match r.map(|r| Self::state_of(r, cx.timestamp)) {
            Some(RequestState::Cancelled) => SlotState::Cancelled,
            Some(RequestState::Finished) => SlotState::Finished,
            Some(RequestState::Failed) => SlotState::Failed,
            _ => s.state,
        }
    }

    /// `getRequest(id)`.
    pub fn get_request(&self, id: RequestId) -> Result<&Request, Revert> {
        Ok(&self.record(id)?.request)
    }

    /// `getActiveSlot(slot)`: reverts SlotIsFree only when the stored state is Free.
    pub fn get_active_slot(&self, slot: SlotId) -> Result<(Request, u64), Revert> {
        let s = self.slots.get(&slot).ok_or(Revert::SlotIsFree)?;
        let r = self.record(s.request_id)?;
        Ok((r.request.clone(), s.slot_index))
    }

    /// `getHost(slot)`: zero when no host is set.
    pub fn get_host(&self, slot: SlotId) -> Address {
        self.slots.get(&slot).map(|s| s.host).unwrap_or_default()
    }

    /// `currentCollateral(slot)`.
    pub fn current_collateral(&self, slot: SlotId) -> U256 {
        self.slots
            .get(&slot)
            .map(|s| s.current_collateral)
            .unwrap_or_default()
    }

    /// `missingProofs(slot)`.
    pub fn missing_proofs(&self, slot: SlotId) -> u64 {
        self.slots.get(&slot).map(|s| s.missed).unwrap_or_default()
    }

    /// `requestEnd(id)`.
    pub fn request_end(&self, cx: &Ctx, id: RequestId) -> Result<u64, Revert> {
        let r = self.record(id)?;
        Ok(match Self::state_of(r, cx.timestamp) {
            RequestState::New | RequestState::Started => r.ends_at,
            RequestState::Cancelled => r.expires_at,
            RequestState::Finished | RequestState::Failed => r.ends_at.min(cx.timestamp),
        })
    }

    /// `requestExpiry(id)`: expiresAt, 0 for an unknown id.
    pub fn request_expiry(&self, id: RequestId) -> u64 {
        self.requests
            .get(&id)
            .map(|r| r.expires_at)
            .unwrap_or_default()
    }

    /// `myRequests()` for `who`: its requests not yet withdrawn.
    pub fn my_requests(&self, who: Address) -> Vec<RequestId> {
        self.my_requests
            .get(&who)
            .map(|s| s.as_slice().to_vec())
            .unwrap_or_default()
    }

    /// `mySlots()` for `who`: its slots not yet freed or paid.
    pub fn my_slots(&self, who: Address) -> Vec<SlotId> {
        self.my_slots
            .get(&who)
            .map(|s| s.as_slice().to_vec())
            .unwrap_or_default()
    }

    /// The addresses that reserved `slot`, in order.
    pub fn reservations(&self, slot: SlotId) -> &[Address] {
        self.reservations
            .get(&slot)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// `canReserveSlot(id, index)` called by `who`.
    pub fn can_reserve_slot(&self, cx: &Ctx, who: Address, id: RequestId, index: u64) -> bool {
        let slot = SlotId::of(id, index);
        let state = self.slot_state(cx, slot);
        let set = self.reservations(slot);
        !set.contains(&who)
            && set.len() < usize::from(self.config.max_reservations)
            && matches!(state, SlotState::Free | SlotState::Repair)
    }

    /// `slotProbability(slot)`: proofProbability × (256 − downtime) / 256.
    pub fn slot_probability(&self, slot: SlotId) -> U256 {
        let p = self
            .slots
            .get(&slot)
            .and_then(|s| self.requests.get(&s.request_id))
            .map(|r| r.request.ask.proof_probability)
            .unwrap_or_default();
        self.probability_of(p)
    }

    fn probability_of(&self, proof_probability: U256) -> U256 {
        proof_probability.saturating_mul(U256::from(256 - u64::from(self.config.downtime)))
            / U256::from(256u64)
    }

    /// The pointer for `slot` in `period` at the executing block
    /// (`docs/marketplace.md#proof-requirement`).
    pub fn pointer_at(&self, cx: &Ctx, slot: SlotId, period: u64) -> u8 {
        let n = cx.number % 256;
        let p = (period % 256) * u64::from(self.config.downtime_product) % 256;
        let s = u64::from(slot.0[31]);
        ((n + p + s) % 256) as u8
    }

    /// `getPointer(slot)`: the pointer for the current period.
    pub fn get_pointer(&self, cx: &Ctx, slot: SlotId) -> u8 {
        self.pointer_at(cx, slot, self.config.period_of(cx.timestamp))
    }

    fn challenge_for_pointer(cx: &Ctx, pointer: u8) -> Result<B256, Revert> {
        cx.number
            .checked_sub(1 + u64::from(pointer))
            .and_then(|m| cx.block_challenge(m))
            .ok_or(Revert::Panic(1))
    }

    /// `getChallenge(slot)`: keccak256 of the hash of block (n − 1 − pointer).
    pub fn get_challenge(&self, cx: &Ctx, slot: SlotId) -> B256 {
        // The chain always has more than 256 blocks, so the block hash exists.
        Self::challenge_for_pointer(cx, self.get_pointer(cx, slot)).unwrap_or_default()
    }

    /// (required, pointer) for `slot` in `period` at this block (`_getProofRequirement`).
    fn proof_requirement(&self, cx: &Ctx, slot: SlotId, period: u64) -> (bool, u8) {
        match self.slots.get(&slot) {
            Some(s) => self.requirement_of(cx, slot, s, period),
            None => (false, 0),
        }
    }

    fn requirement_of(&self, cx: &Ctx, slot: SlotId, s: &SlotRecord, period: u64) -> (bool, u8) {
        let state = self.state_of_slot(cx, s, self.requests.get(&s.request_id));
        self.requirement_in_state(cx, slot, s, state, period)
    }

    fn requirement_in_state(
        &self,
        cx: &Ctx,
        slot: SlotId,
        s: &SlotRecord,
        state: SlotState,
        period: u64,
    ) -> (bool, u8) {
        if state != SlotState::Filled || period <= s.start_period {
            return (false, 0);
        }
        let pointer = self.pointer_at(cx, slot, period);
        let Ok(challenge) = Self::challenge_for_pointer(cx, pointer) else {
            return (false, 0);
        };
        let prob = s.probability;
        let required = prob.is_zero() || (U256::from_be_bytes(challenge.0) % prob).is_zero();
        (required, pointer)
    }

    /// Everything a host looks at for one of its slots, in one pass: computed state, host,
    /// `isProofRequired`, `willProofBeRequired`, and the slot's request and index.
    pub fn slot_summary(&self, cx: &Ctx, slot: SlotId) -> Option<SlotSummary> {
        let s = self.slots.get(&slot)?;
        let r = self.requests.get(&s.request_id);
        let state = self.state_of_slot(cx, s, r);
        let period = self.config.period_of(cx.timestamp);
        let (required, pointer) = self.requirement_in_state(cx, slot, s, state, period);
        Some(SlotSummary {
            state,
            host: s.host,
            proof_required: required && pointer >= self.config.downtime,
            proof_will_be_required: required && pointer < self.config.downtime,
            request_id: s.request_id,
            slot_index: s.slot_index,
        })
    }

    fn is_required_in(&self, cx: &Ctx, slot: SlotId, period: u64) -> bool {
        let (required, pointer) = self.proof_requirement(cx, slot, period);
        required && pointer >= self.config.downtime
    }

    /// `isProofRequired(slot)`: required in the current period and pointer ≥ downtime.
    pub fn is_proof_required(&self, cx: &Ctx, slot: SlotId) -> bool {
        self.is_required_in(cx, slot, self.config.period_of(cx.timestamp))
    }

    /// `willProofBeRequired(slot)`: required in the current period and pointer < downtime.
    pub fn will_proof_be_required(&self, cx: &Ctx, slot: SlotId) -> bool {
        let (required, pointer) =
            self.proof_requirement(cx, slot, self.config.period_of(cx.timestamp));
        required && pointer < self.config.downtime
    }

    /// Whether a proof for `slot` was received in `period` (kept for recent periods only).
    pub fn proof_received(&self, slot: SlotId, period: u64) -> bool {
        self.slots
            .get(&slot)
            .is_some_and(|s| s.received.contains(&period))
    }

    /// A proof the verifier accepts for slot `index` of request `id` when executed at this
    /// block: [`proof_for`] the current challenge (valid in both [`ProofMode`]s).
    pub fn proof_at(&self, cx: &Ctx, id: RequestId, index: u64) -> Result<Groth16Proof, Revert> {
        let root = self.record(id)?.request.content.merkle_root;
        Ok(proof_for(
            self.get_challenge(cx, SlotId::of(id, index)),
            root,
            index,
        ))
    }

    /// A proof valid for the filled (or once filled) `slot` at this block, without hashing
    /// the slot id again; None for a slot never filled.
    pub fn proof_for_slot(&self, cx: &Ctx, slot: SlotId) -> Option<Groth16Proof> {
        let s = self.slots.get(&slot)?;
        let root = self
            .requests
            .get(&s.request_id)?
            .request
            .content
            .merkle_root;
        Some(proof_for(self.get_challenge(cx, slot), root, s.slot_index))
    }

    fn verify(&self, cx: &Ctx, slot: SlotId, root: B256, index: u64, proof: &Groth16Proof) -> bool {
        match self.proof_mode {
            ProofMode::AnyNonZero => !proof.is_zero(),
            ProofMode::Strict => *proof == proof_for(self.get_challenge(cx, slot), root, index),
        }
    }

    /// `canMarkProofAsMissing(slot, period)`: Ok when `markProofAsMissing` would succeed.
    pub fn can_mark_proof_as_missing(
        &self,
        cx: &Ctx,
        slot: SlotId,
        period: u64,
    ) -> Result<(), Revert> {
        let Some(s) = self.slots.get(&slot) else {
            return Err(Revert::SlotNotAcceptingProofs);
        };
        let state = self.state_of_slot(cx, s, self.requests.get(&s.request_id));
        if state != SlotState::Filled {
            return Err(Revert::SlotNotAcceptingProofs);
        }
        let end = self.config.period_end(period);
        if end >= cx.timestamp {
            return Err(Revert::PeriodNotEnded);
        }
        if cx.timestamp >= end + self.config.timeout {
            return Err(Revert::ValidationTimedOut);
        }
        if s.received.contains(&period) {
            return Err(Revert::ProofNotMissing);
        }
        let (required, pointer) = self.requirement_in_state(cx, slot, s, state, period);
        if !(required && pointer >= self.config.downtime) {
            return Err(Revert::ProofNotRequired);
        }
        if s.missing.contains(&period) {
            return Err(Revert::ProofAlreadyMarkedMissing);
        }
        Ok(())
    }

    // ----- transactions ------------------------------------------------------------------

    /// `requestStorage(request)` sent by `from`. Pulls maxPrice from the client.
    pub fn request_storage(
        &mut self,
        cx: &Ctx,
        from: Address,
        request: Request,
    ) -> Result<Vec<MarketEvent>, Revert> {
        let ask = &request.ask;
        let id = request.id();
        if request.client != from {
            return Err(Revert::InvalidClientAddress);
        }
        if self.requests.contains_key(&id) {
            return Err(Revert::RequestAlreadyExists);
        }
        if request.expiry == 0 || request.expiry >= ask.duration {
            return Err(Revert::InvalidExpiry);
        }
        if ask.slots == 0 {
            return Err(Revert::InsufficientSlots);
        }
        if ask.max_slot_loss > ask.slots {
            return Err(Revert::InvalidMaxSlotLoss);
        }
        if ask.duration == 0 {
            return Err(Revert::InsufficientDuration);
        }
        if ask.proof_probability.is_zero() {
            return Err(Revert::InsufficientProofProbability);
        }
        if ask.collateral_per_byte.is_zero() {
            return Err(Revert::InsufficientCollateral);
        }
        if ask.price_per_byte_per_second.is_zero() {
            return Err(Revert::InsufficientReward);
        }
        if request.content.cid.is_empty() {
            return Err(Revert::InvalidCid);
        }
        if ask.duration > self.config.request_duration_limit {
            return Err(Revert::DurationExceedsLimit);
        }
        let pps = mul(ask.price_per_byte_per_second, U256::from(ask.slot_size))?;
        let max_price = mul(mul(U256::from(ask.slots), U256::from(ask.duration))?, pps)?;
        self.token
            .transfer_from(MARKETPLACE_ADDRESS, from, MARKETPLACE_ADDRESS, max_price)?;
        self.totals.received += max_price;
        let expires_at = cx.timestamp + request.expiry;
        let event = MarketEvent::StorageRequested {
            request_id: id,
            ask: ask.clone(),
            expiry: expires_at,
        };
        let ends_at = cx.timestamp + ask.duration;
        self.requests.insert(
            id,
            RequestRecord {
                request,
                state: RequestState::New,
                funds_to_return_to_client: max_price,
                slots_filled: 0,
                started_at: 0,
                ends_at,
                expires_at,
                withdrawn: false,
            },
        );
        self.my_requests.entry(from).or_default().insert(id);
        Ok(vec![event])
    }

    /// `reserveSlot(id, index)` sent by `from` (`docs/marketplace.md#reservations`). No request
    /// check, as in the contract.
    pub fn reserve_slot(
        &mut self,
        cx: &Ctx,
        from: Address,
        id: RequestId,
        index: u64,
    ) -> Result<Vec<MarketEvent>, Revert> {
        if !self.can_reserve_slot(cx, from, id, index) {
            return Err(Revert::ReservationNotAllowed);
        }
        let set = self.reservations.entry(SlotId::of(id, index)).or_default();
        set.push(from);
        if set.len() == usize::from(self.config.max_reservations) {
            return Ok(vec![MarketEvent::SlotReservationsFull {
                request_id: id,
                slot_index: index,
            }]);
        }
        Ok(Vec::new())
    }

    /// `fillSlot(id, index, proof)` sent by `from` (`docs/marketplace.md#fill-and-collateral`),
    /// in the contract's check order.
    pub fn fill_slot(
        &mut self,
        cx: &Ctx,
        from: Address,
        id: RequestId,
        index: u64,
        proof: &Groth16Proof,
    ) -> Result<Vec<MarketEvent>, Revert> {
        let r = self.record(id)?;
        if index >= r.request.ask.slots {
            return Err(Revert::InvalidSlot);
        }
        let slot = SlotId::of(id, index);
        if !self.reservations(slot).contains(&from) {
            return Err(Revert::ReservationRequired);
        }
        // The contract records the request id first, so a never-filled slot takes its
        // request's state here: Cancelled/Finished/Failed requests give SlotNotFree.
        let state = match self.slots.get(&slot) {
            Some(_) => self.slot_state(cx, slot),
            None => match Self::state_of(r, cx.timestamp) {
                RequestState::Cancelled => SlotState::Cancelled,
                RequestState::Finished => SlotState::Finished,
                RequestState::Failed => SlotState::Failed,
                _ => SlotState::Free,
            },
        };
        if !matches!(state, SlotState::Free | SlotState::Repair) {
            return Err(Revert::SlotNotFree);
        }
        let period = self.config.period_of(cx.timestamp);
        if self.proof_received(slot, period) {
            return Err(Revert::ProofAlreadySubmitted);
        }
        if !self.verify(cx, slot, r.request.content.merkle_root, index, proof) {
            return Err(Revert::InvalidProof);
        }
        if cx.timestamp >= r.ends_at {
            return Err(Revert::StartNotBeforeExpiry);
        }
        let ask = &r.request.ask;
        let pps = ask.price_per_slot_per_second();
        let payout = mul(U256::from(r.ends_at - cx.timestamp), pps)?;
        let collateral_per_slot = ask.collateral_per_slot();
        let amount = if state == SlotState::Repair {
            ask.repair_collateral(self.config.repair_reward_percentage)
        } else {
            collateral_per_slot
        };
        self.token
            .check_transfer_from(MARKETPLACE_ADDRESS, from, amount)?;
        let slots = ask.slots;
        let probability = self.probability_of(ask.proof_probability);
        // All checks passed: apply.
        self.token
            .transfer_from(MARKETPLACE_ADDRESS, from, MARKETPLACE_ADDRESS, amount)?;
        self.totals.received += amount;
        let keep = self.keep_periods();
        let s = self.slots.entry(slot).or_insert_with(|| SlotRecord {
            request_id: id,
            slot_index: index,
            host: Address::ZERO,
            state: SlotState::Free,
            filled_at: 0,
            current_collateral: U256::ZERO,
            start_period: 0,
            missed: 0,
            probability: U256::ZERO,
            received: Vec::new(),
            missing: Vec::new(),
        });
        s.start_period = period;
        s.probability = probability;
        record_period(&mut s.received, period, keep);
        s.host = from;
        s.filled_at = cx.timestamp;
        s.current_collateral = collateral_per_slot;
        s.state = SlotState::Filled;
        self.filled.insert(slot);
        self.my_slots.entry(from).or_default().insert(slot);
        let r = self.requests.get_mut(&id).ok_or(Revert::UnknownRequest)?;
        r.slots_filled += 1;
        r.funds_to_return_to_client = r
            .funds_to_return_to_client
            .checked_sub(payout)
            .ok_or(Revert::Panic(0x11))?;
        let mut events = vec![
            MarketEvent::ProofSubmitted { slot_id: slot },
            MarketEvent::SlotFilled {
                request_id: id,
                slot_index: index,
            },
        ];
        if r.slots_filled == slots && r.state == RequestState::New {
            r.state = RequestState::Started;
            r.started_at = cx.timestamp;
            events.push(MarketEvent::RequestFulfilled { request_id: id });
        }
        Ok(events)
    }

    /// Periods of proof bookkeeping kept per slot: enough for every query the contract can
    /// still make (the current period and those within the validation timeout).
    fn keep_periods(&self) -> u64 {
        self.config.timeout / self.config.period.max(1) + 3
    }

    /// `submitProof(slot, proof)` sent by `from`. No state check, as in the contract.
    pub fn submit_proof(
        &mut self,
        cx: &Ctx,
        from: Address,
        slot: SlotId,
        proof: &Groth16Proof,
    ) -> Result<Vec<MarketEvent>, Revert> {
        let s = self.slots.get(&slot).ok_or(Revert::UnknownRequest)?;
        let r = self.record(s.request_id)?;
        if s.host != from {
            return Err(Revert::ProofNotSubmittedByHost);
        }
        let period = self.config.period_of(cx.timestamp);
        if s.received.contains(&period) {
            return Err(Revert::ProofAlreadySubmitted);
        }
        if !self.verify(cx, slot, r.request.content.merkle_root, s.slot_index, proof) {
            return Err(Revert::InvalidProof);
        }
        let keep = self.keep_periods();
        if let Some(s) = self.slots.get_mut(&slot) {
            record_period(&mut s.received, period, keep);
        }
        Ok(vec![MarketEvent::ProofSubmitted { slot_id: slot }])
    }

    /// `markProofAsMissing(slot, period)` sent by validator `from`
    /// (`docs/marketplace.md#slashing-and-forced-free`): slashes, pays the validator, and frees
    /// the slot at maxNumberOfSlashes.
    pub fn mark_proof_as_missing(
        &mut self,
        cx: &Ctx,
        from: Address,
        slot: SlotId,
        period: u64,
    ) -> Result<Vec<MarketEvent>, Revert> {
        self.can_mark_proof_as_missing(cx, slot, period)?;
        let keep = self.keep_periods();
        let s = self
            .slots
            .get(&slot)
            .ok_or(Revert::SlotNotAcceptingProofs)?;
        let r = self.record(s.request_id)?;
        let slashed = mul(
            r.request.ask.collateral_per_slot(),
            U256::from(self.config.slash_percentage),
        )? / U256::from(100u8);
        let reward =
            mul(slashed, U256::from(self.config.validator_reward_percentage))? / U256::from(100u8);
        let new_collateral = s
            .current_collateral
            .checked_sub(slashed)
            .ok_or(Revert::Panic(0x11))?;
        self.token.check_transfer(MARKETPLACE_ADDRESS, reward)?;
        self.token.transfer(MARKETPLACE_ADDRESS, from, reward)?;
        self.totals.sent += reward;
        let s = self
            .slots
            .get_mut(&slot)
            .ok_or(Revert::SlotNotAcceptingProofs)?;
        record_period(&mut s.missing, period, keep);
        s.missed += 1;
        s.current_collateral = new_collateral;
        if s.missed >= u64::from(self.config.max_number_of_slashes) {
            return Ok(self.forcibly_free(cx, slot));
        }
        Ok(Vec::new())
    }

    /// `_forciblyFreeSlot`: the slot goes to Repair with no host and no collateral.
    fn forcibly_free(&mut self, cx: &Ctx, slot: SlotId) -> Vec<MarketEvent> {
        let Some(s) = self.slots.get_mut(&slot) else {
            return Vec::new();
        };
        let host = s.host;
        let filled_at = s.filled_at;
        let (id, index) = (s.request_id, s.slot_index);
        s.state = SlotState::Repair;
        s.filled_at = 0;
        s.current_collateral = U256::ZERO;
        s.host = Address::ZERO;
        s.missed = 0;
        self.filled.remove(&slot);
        if let Some(set) = self.my_slots.get_mut(&host) {
            set.remove(&slot);
        }
        self.reservations.remove(&slot);
        let mut events = vec![MarketEvent::SlotFreed {
            request_id: id,
            slot_index: index,
        }];
        if let Some(r) = self.requests.get_mut(&id) {
            let pps = r.request.ask.price_per_slot_per_second();
            let payout = U256::from(r.ends_at.saturating_sub(filled_at)).saturating_mul(pps);
            r.funds_to_return_to_client += payout;
            r.slots_filled -= 1;
            let lost = r.request.ask.slots - r.slots_filled;
            if lost > r.request.ask.max_slot_loss && r.state == RequestState::Started {
                r.state = RequestState::Failed;
                r.ends_at = cx.timestamp - 1;
                events.push(MarketEvent::RequestFailed { request_id: id });
            }
        }
        events
    }

    /// `forciblyFreeSlot(slot)`: the TestMarketplace helper, without checks.
    pub fn test_forcibly_free_slot(&mut self, cx: &Ctx, slot: SlotId) -> Vec<MarketEvent> {
        self.forcibly_free(cx, slot)
    }

    /// `freeSlot(slot, rewardRecipient, collateralRecipient)` sent by `from`
    /// (`docs/marketplace.md#payouts`).
    pub fn free_slot(
        &mut self,
        cx: &Ctx,
        from: Address,
        slot: SlotId,
        reward_recipient: Address,
        collateral_recipient: Address,
    ) -> Result<Vec<MarketEvent>, Revert> {
        let s = self.slots.get(&slot).ok_or(Revert::SlotIsFree)?;
        if s.host != from {
            return Err(Revert::InvalidSlotHost);
        }
        let state = self.slot_state(cx, slot);
        let r = self.record(s.request_id)?;
        let pps = r.request.ask.price_per_slot_per_second();
        let (end, finished) = match state {
            SlotState::Paid => return Err(Revert::AlreadyPaid),
            SlotState::Finished => (r.ends_at, true),
            SlotState::Cancelled => (r.expires_at, false),
            SlotState::Failed => {
                if let Some(set) = self.my_slots.get_mut(&from) {
                    set.remove(&slot);
                }
                self.filled.remove(&slot);
                return Ok(Vec::new());
            }
            SlotState::Filled => return Ok(self.forcibly_free(cx, slot)),
            // A Repair or Free slot has no host, so the host check already reverted.
            SlotState::Free | SlotState::Repair => return Err(Revert::InvalidSlotHost),
        };
        if s.filled_at >= end {
            return Err(Revert::StartNotBeforeExpiry);
        }
        let payout = mul(U256::from(end - s.filled_at), pps)?;
        let collateral = s.current_collateral;
        self.token
            .check_transfer(MARKETPLACE_ADDRESS, payout + collateral)?;
        let id = s.request_id;
        self.token
            .transfer(MARKETPLACE_ADDRESS, reward_recipient, payout)?;
        self.token
            .transfer(MARKETPLACE_ADDRESS, collateral_recipient, collateral)?;
        self.totals.sent += payout + collateral;
        if finished {
            if let Some(r) = self.requests.get_mut(&id) {
                r.state = RequestState::Finished;
            }
        }
        if let Some(set) = self.my_slots.get_mut(&from) {
            set.remove(&slot);
        }
        self.filled.remove(&slot);
        if let Some(s) = self.slots.get_mut(&slot) {
            s.state = SlotState::Paid;
        }
        Ok(Vec::new())
    }

    /// `withdrawFunds(id, recipient)` sent by `from` (`docs/marketplace.md#payouts`).
    pub fn withdraw_funds(
        &mut self,
        cx: &Ctx,
        from: Address,
        id: RequestId,
        recipient: Address,
    ) -> Result<Vec<MarketEvent>, Revert> {
        let r = self.record(id)?;
        if r.request.client != from {
            return Err(Revert::InvalidClientAddress);
        }
        let state = Self::state_of(r, cx.timestamp);
        if !matches!(
            state,
            RequestState::Cancelled | RequestState::Failed | RequestState::Finished
        ) {
            return Err(Revert::InvalidState);
        }
        if r.funds_to_return_to_client.is_zero() {
            return Err(Revert::NothingToWithdraw);
        }
        let ask = &r.request.ask;
        let pps = ask.price_per_slot_per_second();
        let amount = match state {
            RequestState::Cancelled => {
                let per_slot = mul(U256::from(r.ends_at - r.expires_at), pps)?;
                r.funds_to_return_to_client + mul(U256::from(r.slots_filled), per_slot)?
            }
            RequestState::Failed => {
                mul(mul(U256::from(ask.slots), U256::from(ask.duration))?, pps)?
            }
            _ => r.funds_to_return_to_client,
        };
        self.token.check_transfer(MARKETPLACE_ADDRESS, amount)?;
        self.token
            .transfer(MARKETPLACE_ADDRESS, recipient, amount)?;
        self.totals.sent += amount;
        let mut events = Vec::new();
        if let Some(r) = self.requests.get_mut(&id) {
            match state {
                RequestState::Cancelled => {
                    r.state = RequestState::Cancelled;
                    events.push(MarketEvent::RequestCancelled { request_id: id });
                }
                RequestState::Finished => r.state = RequestState::Finished,
                _ => {}
            }
            r.funds_to_return_to_client = U256::ZERO;
            r.withdrawn = true;
        }
        if let Some(set) = self.my_requests.get_mut(&from) {
            set.remove(&id);
        }
        Ok(events)
    }
}

impl Marketplace {
    /// What the contract still owes at this block if everyone collected: client refunds of
    /// requests not yet withdrawn (as `withdrawFunds` would compute them) plus, for every
    /// slot still held (stored Filled), the host's payout and collateral (nothing for a
    /// Failed request). A solvent contract holds at least this much.
    pub fn owed(&self, cx: &Ctx) -> U256 {
        let mut owed = U256::ZERO;
        for r in self.requests.values() {
            if r.withdrawn {
                continue;
            }
            let ask = &r.request.ask;
            let pps = ask.price_per_slot_per_second();
            owed += match Self::state_of(r, cx.timestamp) {
                RequestState::Cancelled => {
                    r.funds_to_return_to_client
                        + U256::from(r.slots_filled) * U256::from(r.ends_at - r.expires_at) * pps
                }
                RequestState::Failed => U256::from(ask.slots) * U256::from(ask.duration) * pps,
                _ => r.funds_to_return_to_client,
            };
        }
        for slot in self.filled.as_slice() {
            let Some(s) = self.slots.get(slot) else {
                continue;
            };
            let Some(r) = self.requests.get(&s.request_id) else {
                continue;
            };
            let pps = r.request.ask.price_per_slot_per_second();
            let end = match Self::state_of(r, cx.timestamp) {
                RequestState::Failed => continue,
                RequestState::Cancelled => r.expires_at,
                _ => r.ends_at,
            };
            owed += U256::from(end.saturating_sub(s.filled_at)) * pps + s.current_collateral;
        }
        owed
    }
}

/// Records `period` in a small per-slot list, dropping periods too old to be queried.
fn record_period(list: &mut Vec<u64>, period: u64, keep: u64) {
    list.retain(|&p| p + keep >= period);
    if !list.contains(&period) {
        list.push(period);
    }
}
