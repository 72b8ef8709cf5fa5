//! The sales engine: owns the slot queue, the sales (one per slot) and the ledger, routes
//! chain events to them (docs/sales.md), feeds workers from the queue and performs the
//! ledger operations the sales ask for. Everything else a sale asks for becomes a
//! [`Command`] for the driver.
//!
//! Driving it (sans-IO, one way in and one way out): [`Engine::start`] builds a running
//! engine that has resumed the slots the host holds; then every input (a chain event, the
//! answer to a command, the passing of time, an availability change) goes through
//! [`Engine::handle`] with the chain time `now` (the latest block's timestamp, a
//! [`ChainTime`]); after each, drain [`Engine::poll`] until it returns None and execute the
//! commands; hand in [`EngineInput::Time`] when [`Engine::next_deadline`] has passed
//! (typically on each new block). Timers are data: one min-heap of `(time, key)` entries;
//! proving sales wake at the same period boundary, so one block fires them all and no sale
//! has a loop of its own (the timer table, and how its stale entries go, is in `timers`).
//!
//! The views of the engine's state that the CLI and the API show (the queue, the live
//! sales) are built in [`snapshot`].
//!
//! The ledger is a synchronous port: a reservation is created or ended (in SQLite, for the
//! node) inside the step that decides it. A write that fails transiently is kept and tried
//! again from the timer table.
//!
//! Invariants: a slot has at most one sale; a sale holds a worker from Preparing until it
//! is filled or ends; every ending ends its reservation in the ledger with the collateral the
//! sale says comes back (see the table on [`super::sale::Ending`]); the queue never holds an item for
//! a slot that has a live sale when the item was pushed; a request is watched only while it
//! has a live sale (its queued items are purged by their expiry without a watch).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};

use std::sync::Arc;

use crate::market::{Ask, MarketEvent, Request, RequestId, RequestState, SlotId, B256, U256};

use super::ledger::{Ledger, LedgerError, Reservation, ReservationId, SlotAsk};
use super::queue::{Next, PushOutcome, QueueError, SlotQueue, SlotQueueItem};
use super::sale::{
    ChainError, FinalState, Input, Output, ReserveFailure, Sale, SaleConfig, SlotRef, SlotView, Tx,
};
use super::ChainTime;

pub mod snapshot;
mod timers;

pub use snapshot::{QueueSnapshot, QueuedItemView, SaleSummary};
use timers::TimerKey;

/// Logs a sale's change of state at info: short ids in the text, the full ones as fields
/// (`--log-format json` shows them).
fn log_transition(slot: SlotRef, from: &str, to: &str) {
    log::info!(
        request:% = slot.request_id, slot = slot.slot_index;
        "slot {} of {}: {from} -> {to}",
        slot.slot_index,
        crate::market::short(&slot.request_id)
    );
}

/// Entries `no_match` may hold beyond twice those it kept at its last pruning.
const NO_MATCH_SLACK: usize = 64;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Queue capacity (`--queue-size`, default 128).
    pub queue_capacity: usize,
    /// Worker budget (`--max-workers`, default 3).
    pub max_workers: usize,
    /// What every sale reads.
    pub sale: SaleConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            queue_capacity: super::queue::DEFAULT_CAPACITY,
            max_workers: super::queue::DEFAULT_MAX_WORKERS,
            sale: SaleConfig::default(),
        }
    }
}

/// Errors of the engine's own operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Invalid queue capacity or worker budget.
    #[error("invalid sales configuration: {0}")]
    Config(#[from] QueueError),
    /// The ledger failed during a restore.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
}

/// What a freed slot's request looks like (answer to [`Command::LookupFreedSlot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreedSlotInfo {
    /// The request's ask.
    pub ask: Ask,
    /// requestState.
    pub request_state: RequestState,
    /// expiresAt.
    pub expires_at: u64,
    /// requestEnd.
    pub ends_at: u64,
}

/// Names one answer a sale waits for: the slot, and the number the engine gave the command
/// that asks for it. The engine accepts an answer ([`EngineInput::Reply`]) only with the ticket
/// of the command the sale is waiting on now, so a late answer to an earlier command (a
/// `fillSlot` receipt that arrives after a cancellation moved the sale on to `freeSlot`) is
/// dropped instead of being taken for the answer to the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket {
    /// The sale's slot.
    pub slot: SlotRef,
    /// The command's number (unique per engine; 0 for outputs that expect no answer).
    pub seq: u64,
}

/// Everything that moves the engine (see the module docs); each comes with its chain time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineInput {
    /// A Marketplace event (live or backfilled).
    Event(MarketEvent),
    /// The answer to the [`Command::Sale`] that carried this ticket.
    Reply(Ticket, Input),
    /// The answer to [`Command::ReadRequestState`] (None: the request is unknown).
    RequestState(RequestId, Result<Option<RequestState>, ChainError>),
    /// The answer to [`Command::LookupFreedSlot`].
    FreedSlot {
        /// The request.
        request_id: RequestId,
        /// The freed slot.
        slot_index: u64,
        /// What the chain says about the request (None: unknown).
        info: Result<Option<FreedSlotInfo>, ChainError>,
    },
    /// Time passed (a new block, or the deadline).
    Time,
    /// An availability was created or changed; `grew` from
    /// [`super::ledger::AvailabilityChange::grew`] (true when unsure): seen flags are
    /// cleared and the queue unpaused.
    AvailabilityChanged {
        /// Whether it may have grown.
        grew: bool,
    },
    /// A log handed in before as this event was removed by a reorganisation: a removed
    /// `StorageRequested` takes the request's slots out of the queue, a removed `SlotFreed`
    /// the freed slot; every live sale of the request re-checks its slot
    /// ([`Command::Recheck`]).
    Removed(MarketEvent),
    /// The chain was reorganised (a head at or below one seen before): every live sale
    /// re-checks its slot ([`Command::Recheck`]), since a transaction it counted as done may
    /// be gone.
    Reorged,
    /// The answer to the [`Command::Recheck`] that carried this ticket; a failed read is
    /// tried again at the next [`EngineInput::Time`].
    Rechecked(Ticket, Result<SlotView, ChainError>),
    /// A slot this host may still hold whose sale already ended: its counted `freeSlot` was
    /// reorganised out. Unless the slot has a live sale, a sale in Unknown without a
    /// reservation reads it and carries on (a payout is claimed again; the ledger, which
    /// got the reservation back once, is not touched again).
    ResumeSlot(SlotRef),
    /// Stop taking new work from the queue (sales in progress continue).
    Pause,
    /// Take work from the queue again.
    Resume,
}

/// What the engine asks the driver to do.
// Commands are short-lived values moved once from the engine to the driver; boxing the
// large variant would cost an allocation per command for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Execute what a sale asks for and answer with [`EngineInput::Reply`] and this ticket
    /// (for [`SaleCommand::Filled`]: notify the node, no answer).
    Sale(Ticket, SaleCommand),
    /// Delete the data of a slot whose sale ended (no answer).
    ReleaseData(SlotRef),
    /// Read `requestState` at `pending`; answer with [`EngineInput::RequestState`].
    ReadRequestState(RequestId),
    /// Read the request of a freed slot; answer with [`EngineInput::FreedSlot`].
    LookupFreedSlot {
        /// The request.
        request_id: RequestId,
        /// The freed slot.
        slot_index: u64,
    },
    /// A sale ended (its reservation, if any, is already ended in the ledger): for the
    /// history. No answer.
    Ended(SaleEnded),
    /// Read the slot view of a live sale after a reorganisation (like
    /// [`SaleCommand::ReadSlot`], but the sale keeps waiting for what it waited for: the
    /// ticket is the re-check's own); answer with [`EngineInput::Rechecked`].
    Recheck(Ticket),
}

/// A sale that ended, as [`Command::Ended`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleEnded {
    /// The slot.
    pub slot: SlotRef,
    /// The final state.
    pub state: FinalState,
    /// Why it ended.
    pub reason: String,
    /// The reservation it held as it was before it ended, with the collateral returned.
    pub reservation: Option<(Reservation, U256)>,
    /// Chain time the sale began on this node.
    pub started_at: u64,
    /// Chain time it ended.
    pub ended_at: u64,
    /// The slot went back into the queue (a fill reorganised out): the on-chain
    /// reservation the sale made may still stand, and a new sale of the slot needs it.
    pub requeued: bool,
}

/// What a sale asks the driver to do: the [`Output`]s that leave the engine (the ledger,
/// timer and clean-up outputs stay inside it), so a driver has no variant it cannot
/// execute. Each answer comes back as the [`Input`] named on the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleCommand {
    /// Read the slot's views → [`Input::Slot`].
    ReadSlot(SlotRef),
    /// Read the proof views → [`Input::Proof`].
    ReadProof(SlotRef),
    /// `canReserveSlot` → [`Input::CanReserve`].
    CanReserve(SlotRef),
    /// Send a transaction → [`Input::Tx`].
    Send(Tx),
    /// Download the slot's data → [`Input::DownloadProgress`], then [`Input::Downloaded`].
    Download {
        /// Slot.
        slot: SlotRef,
        /// The request.
        request: Arc<Request>,
        /// Keep the data until this time.
        expiry: u64,
        /// The slot is being repaired.
        repairing: bool,
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
    /// Keep the dataset until `until` → [`Input::ExpiryUpdated`].
    UpdateExpiry {
        /// Slot.
        slot: SlotRef,
        /// Dataset CID.
        cid: Vec<u8>,
        /// New expiry.
        until: u64,
    },
    /// We host the slot now (no answer).
    Filled(SlotRef),
}

/// A ledger write that failed transiently and is tried again from the timer table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LedgerRetry {
    /// End a reservation, returning this collateral.
    End(ReservationId, U256),
    /// Record downloaded bytes.
    Download(ReservationId, u64),
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Items evicted or dropped by a full queue.
    pub queue_dropped: u64,
    /// Items purged because their request expired.
    pub queue_expired: u64,
    /// Requests refused (slot count out of range, already expired).
    pub requests_refused: u64,
    /// Sales ended, by final state (`ended[state as usize]`; see [`Self::ended_in`] and
    /// [`Self::ended_by_state`]).
    pub ended: [u64; FinalState::COUNT],
    /// Ledger operations that failed (logged).
    pub ledger_errors: u64,
}

impl EngineStats {
    /// Sales ended in `state`.
    pub fn ended_in(&self, state: FinalState) -> u64 {
        self.ended[state as usize]
    }

    /// `(state name, sales ended in it)` for every final state, in [`FinalState::ALL`]
    /// order (states no sale ended in included, with 0).
    pub fn ended_by_state(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FinalState::ALL
            .iter()
            .map(|&state| (state.name(), self.ended_in(state)))
    }
}

/// Restore result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Slots resumed through Unknown.
    pub resumed: usize,
    /// Of those, with their reservation re-attached.
    pub with_reservation: usize,
    /// Reservations ended because no live slot holds them.
    pub ended_reservations: usize,
}

/// One live sale's entry in the engine.
struct Live {
    /// The sale; None only while it is inside [`Sale::on`] (see [`Engine::step`]), so a
    /// sale is updated in place without leaving the map.
    sale: Option<Sale>,
    /// Its pending wake-up (the matching entry of the timer table).
    wake: Option<u64>,
    /// Whether it holds a worker.
    holds_worker: bool,
    /// The ticket number of the command whose answer the sale waits for (0: none).
    ticket: u64,
    /// Chain time the sale began on this node, and the time it entered its current state.
    started: u64,
    since: u64,
}

/// The sales engine. See the module docs.
pub struct Engine<L: Ledger> {
    cfg: EngineConfig,
    queue: SlotQueue,
    /// The live sales with their wake-up and worker, ordered by (request, slot index), so
    /// that one request's sales are a range (see [`Self::request_sales`]): the keccak slot
    /// id is computed only where the chain needs it.
    sales: BTreeMap<SlotRef, Live>,
    ledger: L,
    /// `(time, key)`, earliest first, with lazy deletion (see `timers`).
    timers: BinaryHeap<Reverse<(u64, TimerKey)>>,
    watches: HashMap<RequestId, u64>,
    commands: VecDeque<Command>,
    inbox: VecDeque<(SlotRef, Input)>,
    /// Sales due at one wake-up time, put in slot id order (see `on_time`).
    due: Vec<(SlotId, SlotRef)>,
    rng: fastrand::Rng,
    now: u64,
    stats: EngineStats,
    scratch: Vec<Output>,
    /// Bumped whenever the ledger may have changed in a way that affects matching.
    ledger_version: u64,
    /// Requests for which no availability matched at this ledger version: their other
    /// slots (same ask, same end) cannot match either until the ledger changes.
    no_match: HashMap<RequestId, u64>,
    /// When `no_match` reaches this size, it keeps only requests with queued slots (see
    /// [`Self::note_no_match`]).
    no_match_limit: usize,
    /// The last ticket number handed out.
    last_ticket: u64,
    /// Ledger writes to try again (see [`LedgerRetry`]), oldest first.
    retries: Vec<LedgerRetry>,
    /// Re-checks whose read failed, asked again at the next [`EngineInput::Time`].
    rechecks: BTreeSet<SlotRef>,
    /// Re-checks in flight: the re-check's ticket number, and the ticket and state the sale
    /// had when it was asked for (an answer is applied only if the sale has not moved on
    /// since, as the view may predate what moved it).
    rechecking: HashMap<SlotRef, (u64, u64, &'static str)>,
}

impl<L: Ledger> Engine<L> {
    /// A running engine over `ledger` that has resumed the slots the host holds on chain
    /// (`mySlots`, as (request, slot index)): each gets a sale in Unknown with its persisted
    /// reservation; reservations no such slot holds are ended, giving back bytes and all
    /// their collateral, and their data is released; the queue is started, and when an
    /// enabled availability exists it counts as grown. The order of a request's slots is
    /// this host's own (the queue's salt is drawn from `rng`).
    pub fn start(
        cfg: EngineConfig,
        ledger: L,
        rng: fastrand::Rng,
        my_slots: &[(RequestId, u64)],
        now: ChainTime,
    ) -> Result<(Self, RestoreReport), EngineError> {
        let mut e = Self::new(cfg, ledger, rng)?;
        let report = e.restore(my_slots, now.0)?;
        e.start_queue(now.0);
        if e.ledger.availabilities()?.iter().any(|a| a.enabled) {
            e.availability_changed(true, now.0);
        }
        Ok((e, report))
    }

    /// Feeds one input at chain time `now`; returns false for an answer that was dropped
    /// because its ticket is not the one its sale waits for (the sale moved on or ended).
    pub fn handle(&mut self, now: ChainTime, input: EngineInput) -> bool {
        let now = now.0;
        match input {
            EngineInput::Event(ev) => self.on_event(ev, now),
            EngineInput::Reply(ticket, input) => return self.on_reply(ticket, input, now),
            EngineInput::RequestState(rid, state) => self.on_request_state(rid, state, now),
            EngineInput::FreedSlot {
                request_id,
                slot_index,
                info,
            } => self.on_freed_slot(request_id, slot_index, info, now),
            EngineInput::Time => self.on_time(now),
            EngineInput::AvailabilityChanged { grew } => self.availability_changed(grew, now),
            EngineInput::Removed(ev) => self.on_removed(ev, now),
            EngineInput::Reorged => {
                self.now = now;
                let all: Vec<SlotRef> = self.sales.keys().copied().collect();
                self.recheck(all);
            }
            EngineInput::Rechecked(ticket, view) => self.on_rechecked(ticket, view, now),
            EngineInput::ResumeSlot(slot) => {
                self.now = now;
                if !self.sales.contains_key(&slot) {
                    let mut out = std::mem::take(&mut self.scratch);
                    let sale = Sale::restore(slot, None, &mut out);
                    self.insert_sale(sale, false);
                    log_transition(slot, "ended", "SaleUnknown");
                    self.apply(slot, &mut out);
                    self.scratch = out;
                    self.run_inbox();
                }
            }
            EngineInput::Pause => self.queue.stop(),
            EngineInput::Resume => self.start_queue(now),
        }
        true
    }

    fn new(cfg: EngineConfig, ledger: L, mut rng: fastrand::Rng) -> Result<Self, EngineError> {
        let mut queue = SlotQueue::new(cfg.queue_capacity, cfg.max_workers)?;
        queue.set_salt(rng.u64(..));
        Ok(Engine {
            cfg,
            queue,
            sales: BTreeMap::new(),
            ledger,
            timers: BinaryHeap::new(),
            watches: HashMap::new(),
            commands: VecDeque::new(),
            inbox: VecDeque::new(),
            due: Vec::new(),
            rng,
            now: 0,
            stats: EngineStats::default(),
            scratch: Vec::new(),
            ledger_version: 0,
            no_match: HashMap::new(),
            no_match_limit: NO_MATCH_SLACK,
            last_ticket: 0,
            retries: Vec::new(),
            rechecks: BTreeSet::new(),
            rechecking: HashMap::new(),
        })
    }

    fn start_queue(&mut self, now: u64) {
        self.now = now;
        self.queue.start();
        self.dispatch();
    }

    /// The ledger.
    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// The ledger, for availability changes; hand in [`EngineInput::AvailabilityChanged`]
    /// after one.
    pub fn ledger_mut(&mut self) -> &mut L {
        self.ledger_changed();
        &mut self.ledger
    }

    /// The ledger, for writes that cannot change what matches (the node's chain cursor,
    /// kept in the same store): unlike [`Self::ledger_mut`] this keeps the no-match memory.
    pub fn ledger_port(&mut self) -> &mut L {
        &mut self.ledger
    }

    /// The queue (read-only).
    pub fn queue(&self) -> &SlotQueue {
        &self.queue
    }

    /// The live sale of a slot.
    pub fn sale(&self, slot: SlotRef) -> Option<&Sale> {
        self.sales.get(&slot).and_then(|l| l.sale.as_ref())
    }

    /// Number of live sales.
    pub fn sales_len(&self) -> usize {
        self.sales.len()
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The next command for the driver.
    pub fn poll(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Resumes after a restart: every slot the host holds on chain (`mySlots`) gets a sale in
    /// Unknown with its persisted reservation; reservations no live slot holds are ended,
    /// giving back bytes and all their collateral (difference 2,
    /// `docs/sales.md#differences-from-the-reference`), and their data is released.
    fn restore(
        &mut self,
        my_slots: &[(RequestId, u64)],
        now: u64,
    ) -> Result<RestoreReport, EngineError> {
        self.now = now;
        // Ordered, so that the reservations no live slot holds end in the same order on
        // every run.
        let mut reservations: BTreeMap<SlotRef, Reservation> = BTreeMap::new();
        let mut extra: Vec<Reservation> = Vec::new();
        for r in self.ledger.reservations()? {
            let slot = SlotRef::new(r.request_id, r.slot_index);
            if let Some(dup) = reservations.insert(slot, r) {
                extra.push(dup);
            }
        }
        let mut report = RestoreReport::default();
        for &(request_id, slot_index) in my_slots {
            let slot = SlotRef::new(request_id, slot_index);
            if self.sales.contains_key(&slot) {
                continue;
            }
            let reservation = reservations.remove(&slot);
            report.resumed += 1;
            report.with_reservation += usize::from(reservation.is_some());
            let mut out = std::mem::take(&mut self.scratch);
            let sale = Sale::restore(slot, reservation, &mut out);
            self.insert_sale(sale, false);
            self.apply(slot, &mut out);
            self.scratch = out;
        }
        self.ledger_changed();
        for r in reservations.into_values().chain(extra) {
            if self
                .ledger
                .end_reservation(r.id, r.collateral)?
                .availability
                .enabled
            {
                self.availability_grew();
            }
            self.commands.push_back(Command::ReleaseData(SlotRef::new(
                r.request_id,
                r.slot_index,
            )));
            report.ended_reservations += 1;
        }
        self.run_inbox();
        Ok(report)
    }

    /// An availability was created or updated; `grew` from
    /// [`super::ledger::AvailabilityChange::grew`] (or true for a new enabled availability):
    /// clears the seen flags and unpauses the queue.
    fn availability_changed(&mut self, grew: bool, now: u64) {
        self.now = now;
        self.ledger_changed();
        if grew {
            self.availability_grew();
            self.dispatch();
        }
    }

    fn ledger_changed(&mut self) {
        self.ledger_version += 1;
        self.no_match.clear();
    }

    fn availability_grew(&mut self) {
        self.queue.clear_seen_flags();
        self.queue.unpause();
    }

    /// A Marketplace event (live or backfilled).
    fn on_event(&mut self, event: MarketEvent, now: u64) {
        self.now = now;
        match event {
            MarketEvent::StorageRequested {
                request_id,
                ask,
                expiry,
            } => self.storage_requested(request_id, &ask, expiry),
            MarketEvent::SlotFreed {
                request_id,
                slot_index,
            } => {
                // Any u64 index (difference 8: the reference drops indexes above 65,535): a freed
                // slot is one queue item, so the 65,535-slot limit of expanding a whole
                // request does not apply to it.
                if !self
                    .sales
                    .contains_key(&SlotRef::new(request_id, slot_index))
                {
                    self.commands.push_back(Command::LookupFreedSlot {
                        request_id,
                        slot_index,
                    });
                }
            }
            MarketEvent::SlotFilled {
                request_id,
                slot_index,
            } => {
                // Every index reaches the queue and the sale (difference 8: the reference drops
                // indexes above 65,535 without notifying the sale).
                self.queue.delete(request_id, slot_index);
                let id = SlotRef::new(request_id, slot_index);
                if self.sales.contains_key(&id) {
                    self.inbox.push_back((id, Input::SlotFilled));
                }
            }
            MarketEvent::SlotReservationsFull {
                request_id,
                slot_index,
            } => {
                self.queue.delete(request_id, slot_index);
            }
            MarketEvent::RequestFulfilled { request_id } => {
                self.queue.delete_request(request_id);
                self.unwatch(request_id);
                self.broadcast(request_id, Input::Fulfilled);
            }
            MarketEvent::RequestFailed { request_id } => {
                self.queue.delete_request(request_id);
                self.unwatch(request_id);
                self.broadcast(request_id, Input::Failed);
            }
            MarketEvent::RequestCancelled { request_id } => {
                self.queue.delete_request(request_id);
                self.unwatch(request_id);
                self.broadcast(request_id, Input::Cancelled);
            }
            MarketEvent::ProofSubmitted { .. } => {}
        }
        self.run_inbox();
        self.dispatch();
    }

    /// A log handed in before was removed by a reorganisation (see
    /// [`EngineInput::Removed`]).
    fn on_removed(&mut self, event: MarketEvent, now: u64) {
        self.now = now;
        let request_id = match event {
            MarketEvent::StorageRequested { request_id, .. } => {
                // The request is not on the chain now: none of its slots can be sold.
                self.queue.delete_request(request_id);
                self.no_match.remove(&request_id);
                request_id
            }
            MarketEvent::SlotFreed {
                request_id,
                slot_index,
            } => {
                // The slot is not free after all (its sale, if any, re-checks).
                if !self
                    .sales
                    .contains_key(&SlotRef::new(request_id, slot_index))
                {
                    self.queue.delete(request_id, slot_index);
                }
                request_id
            }
            MarketEvent::SlotFilled { request_id, .. }
            | MarketEvent::SlotReservationsFull { request_id, .. }
            | MarketEvent::RequestFulfilled { request_id }
            | MarketEvent::RequestFailed { request_id }
            | MarketEvent::RequestCancelled { request_id } => request_id,
            // A proof names only its slot id: the re-check that follows the head that
            // revealed the reorganisation covers it.
            MarketEvent::ProofSubmitted { .. } => return,
        };
        let slots: Vec<SlotRef> = self.request_sales(request_id).collect();
        self.recheck(slots);
    }

    /// Asks for the slot view of each of `slots` that has a sale a re-check can change.
    fn recheck(&mut self, slots: Vec<SlotRef>) {
        for slot in slots {
            let Some(live) = self.sales.get(&slot) else {
                continue;
            };
            let Some(sale) = live.sale.as_ref().filter(|s| s.wants_recheck()) else {
                continue;
            };
            let at = (live.ticket, sale.state_name());
            self.rechecks.remove(&slot);
            self.last_ticket += 1;
            let seq = self.last_ticket;
            self.rechecking.insert(slot, (seq, at.0, at.1));
            self.commands
                .push_back(Command::Recheck(Ticket { slot, seq }));
        }
    }

    /// The answer to [`Command::Recheck`]: dropped when a later re-check of the slot is in
    /// flight; asked again when the sale moved on since it was asked for (the view may be
    /// older than the answer that moved it); otherwise handed to the sale.
    fn on_rechecked(&mut self, t: Ticket, view: Result<SlotView, ChainError>, now: u64) {
        self.now = now;
        let slot = t.slot;
        match self.rechecking.get(&slot) {
            Some(&(seq, _, _)) if seq == t.seq => {}
            _ => return,
        }
        let asked = self.rechecking.remove(&slot);
        let Some(live) = self.sales.get(&slot) else {
            return;
        };
        let now_at = (live.ticket, live.sale.as_ref().map_or("", Sale::state_name));
        match view {
            Ok(_) if asked.is_some_and(|(_, ticket, state)| (ticket, state) != now_at) => {
                self.recheck(vec![slot]);
            }
            Ok(view) => {
                if self.step(slot, Input::Rechecked(view)) {
                    self.run_inbox();
                    self.dispatch();
                }
            }
            Err(e) => {
                log::debug!("re-check of slot {} failed: {e}", slot.slot_index);
                self.rechecks.insert(slot);
            }
        }
    }

    /// The ticket of the answer the live sale of `slot` waits for, if it waits for one.
    pub fn ticket(&self, slot: SlotRef) -> Option<Ticket> {
        self.sales
            .get(&slot)
            .filter(|l| l.ticket != 0)
            .map(|l| Ticket {
                slot,
                seq: l.ticket,
            })
    }

    /// The driver's answer to the [`Command::Sale`] output that carried `ticket`. An answer
    /// whose ticket is not the one the sale waits for (the sale moved on, or ended) is
    /// dropped; returns whether it was taken.
    fn on_reply(&mut self, ticket: Ticket, input: Input, now: u64) -> bool {
        self.now = now;
        match self.sales.get(&ticket.slot) {
            Some(live) if live.ticket == ticket.seq && ticket.seq != 0 => {}
            _ => {
                log::debug!(
                    "dropping a stale answer for slot {} of {}",
                    ticket.slot.slot_index,
                    ticket.slot.request_id
                );
                return false;
            }
        }
        // A download reports progress before its end: its ticket stays valid until then.
        if !matches!(input, Input::DownloadProgress(_)) {
            if let Some(live) = self.sales.get_mut(&ticket.slot) {
                live.ticket = 0;
            }
        }
        // The inbox is empty between calls, so stepping at once keeps the order.
        if self.step(ticket.slot, input) {
            self.run_inbox();
            self.dispatch();
        }
        true
    }

    /// Answer to [`Command::ReadRequestState`] (None: the request is unknown).
    fn on_request_state(
        &mut self,
        request_id: RequestId,
        state: Result<Option<RequestState>, ChainError>,
        now: u64,
    ) {
        self.now = now;
        if !self.watches.contains_key(&request_id) {
            return;
        }
        match state {
            Ok(Some(RequestState::Cancelled)) => {
                self.unwatch(request_id);
                self.queue.delete_request(request_id);
                self.broadcast(request_id, Input::Cancelled);
            }
            Ok(Some(RequestState::Failed)) => {
                self.unwatch(request_id);
                self.queue.delete_request(request_id);
                self.broadcast(request_id, Input::Failed);
            }
            // The chain lags local time, or the read failed: ask again at the next block.
            Ok(Some(RequestState::New)) | Err(_) => {
                self.timers
                    .push(Reverse((now + 1, TimerKey::Watch(request_id))));
            }
            Ok(Some(RequestState::Started | RequestState::Finished)) | Ok(None) => {
                self.unwatch(request_id);
            }
        }
        self.run_inbox();
        self.dispatch();
    }

    /// Answer to [`Command::LookupFreedSlot`]: pushes the freed slot with the repair-discounted
    /// collateral and an absolute expiry (expiresAt for a request still New, else its end).
    fn on_freed_slot(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
        info: Result<Option<FreedSlotInfo>, ChainError>,
        now: u64,
    ) {
        self.now = now;
        let info = match info {
            Ok(Some(i)) => i,
            Ok(None) => return,
            Err(e) => {
                log::warn!("freed slot {slot_index} of {request_id}: {e}");
                return;
            }
        };
        let expiry = match info.request_state {
            RequestState::New => info.expires_at,
            RequestState::Started => info.ends_at,
            _ => return,
        };
        if expiry <= now
            || self
                .sales
                .contains_key(&SlotRef::new(request_id, slot_index))
        {
            return;
        }
        let item = SlotQueueItem {
            request_id,
            slot_index,
            slot_size: info.ask.slot_size,
            duration: info.ask.duration,
            price_per_byte_per_second: info.ask.price_per_byte_per_second,
            collateral: info
                .ask
                .repair_collateral(self.cfg.sale.repair_reward_percentage),
            expiry,
            seen: false,
        };
        self.push(item);
        self.dispatch();
    }

    fn storage_requested(&mut self, request_id: RequestId, ask: &Ask, expiry: u64) {
        if expiry <= self.now {
            self.stats.requests_refused += 1;
            return;
        }
        let items = match SlotQueueItem::expand(
            request_id,
            ask,
            expiry,
            ask.collateral_per_slot(),
            &mut self.rng,
        ) {
            Ok(items) => items,
            Err(e) => {
                self.stats.requests_refused += 1;
                log::warn!("request {request_id} not queued: {e}");
                return;
            }
        };
        // Only a request we already have sales for needs the per-slot check.
        let known = self.has_sales(request_id);
        for item in items {
            if !known
                || !self
                    .sales
                    .contains_key(&SlotRef::new(item.request_id, item.slot_index))
            {
                self.push(item);
            }
        }
    }

    fn push(&mut self, item: SlotQueueItem) {
        match self.queue.push(item) {
            Ok(PushOutcome::Queued) => {}
            Ok(PushOutcome::QueuedEvicting(gone)) | Ok(PushOutcome::Dropped(gone)) => {
                self.stats.queue_dropped += 1;
                log::debug!(
                    "queue full: dropped slot {} of {}",
                    gone.slot_index,
                    gone.request_id
                );
            }
            Err(QueueError::Duplicate { .. }) => {}
            Err(e) => log::warn!("slot not queued: {e}"),
        }
    }

    fn broadcast(&mut self, request_id: RequestId, input: Input) {
        // In slot id order (the chain's ids, computed here for this rare event).
        let mut ids: Vec<(SlotId, SlotRef)> = self
            .request_sales(request_id)
            .map(|slot| (slot.slot_id(), slot))
            .collect();
        ids.sort_unstable();
        for (_, slot) in ids {
            self.inbox.push_back((slot, input.clone()));
        }
    }

    /// The slots of the live sales of `request_id`, by slot index.
    fn request_sales(&self, request_id: RequestId) -> impl Iterator<Item = SlotRef> + '_ {
        self.sales
            .range(SlotRef::new(request_id, 0)..=SlotRef::new(request_id, u64::MAX))
            .map(|(slot, _)| *slot)
    }

    /// Whether `request_id` has a live sale.
    fn has_sales(&self, request_id: RequestId) -> bool {
        self.request_sales(request_id).next().is_some()
    }

    fn unwatch(&mut self, request_id: RequestId) {
        if self.watches.remove(&request_id).is_some() {
            self.settle_timers();
        }
    }

    fn dispatch(&mut self) {
        loop {
            match self.queue.next_for_worker() {
                Next::Item(item) => {
                    // Another slot of this request matched no availability and the ledger
                    // has not grown since: this one cannot match either. Mark it seen
                    // without a chain read.
                    if self.no_match.get(&item.request_id) == Some(&self.ledger_version) {
                        self.queue.release_worker();
                        self.push(SlotQueueItem { seen: true, ..item });
                        continue;
                    }
                    let known = self.has_sales(item.request_id);
                    let mut out = std::mem::take(&mut self.scratch);
                    let sale = Sale::prepare(item, &mut out);
                    let slot = sale.slot();
                    if known && self.sales.contains_key(&slot) {
                        out.clear();
                        self.scratch = out;
                        self.queue.release_worker();
                        continue;
                    }
                    self.insert_sale(sale, true);
                    log_transition(slot, "queued", "SalePreparing");
                    self.apply(slot, &mut out);
                    self.scratch = out;
                    self.run_inbox();
                }
                _ => return,
            }
        }
    }

    fn insert_sale(&mut self, sale: Sale, holds_worker: bool) {
        let slot = sale.slot();
        self.sales.insert(
            slot,
            Live {
                sale: Some(sale),
                wake: None,
                holds_worker,
                ticket: 0,
                started: self.now,
                since: self.now,
            },
        );
    }

    fn run_inbox(&mut self) {
        while let Some((id, input)) = self.inbox.pop_front() {
            self.step(id, input);
        }
    }

    /// Feeds one input to the live sale of `id` (if any) and performs its outputs; false
    /// when `id` has no sale.
    fn step(&mut self, id: SlotRef, input: Input) -> bool {
        let Some(entry) = self.sales.get_mut(&id) else {
            return false;
        };
        let Some(sale) = entry.sale.take() else {
            return true;
        };
        let slot = sale.slot();
        let before = sale.state_name();
        let mut out = std::mem::take(&mut self.scratch);
        let next = sale.on(input, self.now, &self.cfg.sale, &mut out);
        let after = next.state_name();
        entry.sale = Some(next);
        if before != after {
            entry.since = self.now;
            log_transition(slot, before, after);
        }
        self.apply(slot, &mut out);
        self.scratch = out;
        true
    }

    /// Performs a sale's outputs: ledger and timer work here, the rest to the driver.
    fn apply(&mut self, slot: SlotRef, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            match o {
                Output::Reserve {
                    request,
                    valid_until,
                } => {
                    let ask = SlotAsk::for_slot(
                        slot.request_id,
                        slot.slot_index,
                        &request.ask,
                        valid_until,
                    );
                    let res = if self.no_match.get(&ask.request_id) == Some(&self.ledger_version) {
                        Err(ReserveFailure::NoMatch)
                    } else {
                        let id = ReservationId::random(&mut self.rng);
                        match self.ledger.reserve_matching(id, &ask) {
                            // Creating a reservation only shrinks an availability, so a
                            // request that matched nothing still matches nothing.
                            Ok(r) => Ok(Box::new(r)),
                            Err(
                                LedgerError::NoMatch
                                | LedgerError::BytesOutOfBounds { .. }
                                | LedgerError::InsufficientCollateral { .. }
                                | LedgerError::Unsuitable { .. },
                            ) => {
                                self.note_no_match(ask.request_id);
                                Err(ReserveFailure::NoMatch)
                            }
                            Err(other) => Err(ReserveFailure::Other(other.to_string())),
                        }
                    };
                    self.inbox.push_back((slot, Input::Reserved(res)));
                }
                Output::RecordDownload { reservation, bytes } => {
                    if let Err(e) = self.ledger.record_download(reservation, bytes) {
                        self.ledger_failed(LedgerRetry::Download(reservation, bytes), &e);
                    }
                }
                Output::WakeAt(t) => {
                    // Only a live sale has outputs to apply (a sale that ended in this
                    // batch wakes no more).
                    if let Some(live) = self.sales.get_mut(&slot) {
                        let old = live.wake.replace(t);
                        self.timers.push(Reverse((t, TimerKey::Sale(slot))));
                        if old.is_some_and(|o| o != t) {
                            self.settle_timers();
                        }
                    }
                }
                Output::WatchRequest {
                    request_id,
                    expires_at,
                } => {
                    // Only while the request has a live sale (see the invariants).
                    if !self.has_sales(request_id) {
                        continue;
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        self.watches.entry(request_id)
                    {
                        e.insert(expires_at);
                        self.timers.push(Reverse((
                            expires_at.saturating_add(1),
                            TimerKey::Watch(request_id),
                        )));
                    }
                }
                Output::Filled(s) => {
                    if let Some(live) = self.sales.get_mut(&s) {
                        if std::mem::take(&mut live.holds_worker) {
                            self.queue.release_worker();
                        }
                    }
                    self.commands.push_back(Command::Sale(
                        Ticket { slot: s, seq: 0 },
                        SaleCommand::Filled(s),
                    ));
                }
                Output::Ended => {
                    // The step that ended the sale stored its final state: take it out.
                    let started = self.sales.get(&slot).map_or(self.now, |l| l.started);
                    let Some(sale) = self.remove_sale(slot) else {
                        continue;
                    };
                    let Some((state, ending)) = sale.into_ending() else {
                        unreachable!("a sale announced its end in a state that is not final");
                    };
                    let state_name = state.name();
                    log::info!(
                        request:% = slot.request_id, slot = slot.slot_index;
                        "slot {} of {}: sale ended in {state_name}: {}",
                        slot.slot_index,
                        crate::market::short(&slot.request_id),
                        ending.reason
                    );
                    let reservation = ending.reservation.and_then(|(rid, returned)| {
                        Some((self.ledger.reservation(rid).ok()?, returned))
                    });
                    if let Some((rid, returned)) = ending.reservation {
                        self.end_reservation(rid, returned);
                    }
                    self.commands.push_back(Command::Ended(SaleEnded {
                        slot,
                        state,
                        reason: ending.reason.to_string(),
                        reservation,
                        started_at: started,
                        ended_at: self.now,
                        requeued: ending.requeue.is_some(),
                    }));
                    if ending.release_data {
                        self.commands.push_back(Command::ReleaseData(ending.slot));
                    }
                    self.stats.ended[state as usize] += 1;
                    if let Some(item) = ending.requeue {
                        if self.queue.is_running() {
                            self.push(*item);
                        }
                    }
                }
                Output::ReadSlot(s) => self.ask(slot, SaleCommand::ReadSlot(s)),
                Output::ReadProof(s) => self.ask(slot, SaleCommand::ReadProof(s)),
                Output::CanReserve(s) => self.ask(slot, SaleCommand::CanReserve(s)),
                Output::Send(tx) => self.ask(slot, SaleCommand::Send(tx)),
                Output::Download {
                    slot: s,
                    request,
                    expiry,
                    repairing,
                } => self.ask(
                    slot,
                    SaleCommand::Download {
                        slot: s,
                        request,
                        expiry,
                        repairing,
                    },
                ),
                Output::Prove {
                    slot: s,
                    request,
                    challenge,
                } => self.ask(
                    slot,
                    SaleCommand::Prove {
                        slot: s,
                        request,
                        challenge,
                    },
                ),
                Output::UpdateExpiry {
                    slot: s,
                    cid,
                    until,
                } => self.ask(
                    slot,
                    SaleCommand::UpdateExpiry {
                        slot: s,
                        cid,
                        until,
                    },
                ),
            }
        }
    }

    /// Hands a sale's question to the driver with a new ticket, the one the sale now waits
    /// for.
    fn ask(&mut self, slot: SlotRef, cmd: SaleCommand) {
        self.last_ticket += 1;
        let seq = self.last_ticket;
        if let Some(live) = self.sales.get_mut(&slot) {
            live.ticket = seq;
        }
        self.commands
            .push_back(Command::Sale(Ticket { slot, seq }, cmd));
    }

    /// Ends a reservation in the ledger; a transient failure is tried again later.
    fn end_reservation(&mut self, rid: ReservationId, returned: U256) {
        self.ledger_changed();
        match self.ledger.end_reservation(rid, returned) {
            // The availability grew back: slots seen while it was full may match now (the
            // reference's OnAvailabilitySaved).
            Ok(end) if end.availability.enabled => self.availability_grew(),
            Ok(_) => {}
            Err(e) => self.ledger_failed(LedgerRetry::End(rid, returned), &e),
        }
    }

    /// A ledger write failed: a transient failure (the store was busy) is kept and tried
    /// again one second later, so bytes and collateral are not stranded until a restart;
    /// a definitive one (the reservation is gone) is only logged.
    fn ledger_failed(&mut self, op: LedgerRetry, e: &LedgerError) {
        self.stats.ledger_errors += 1;
        if e.is_usage() {
            log::warn!("ledger: {op:?} failed for good: {e}");
            return;
        }
        log::warn!("ledger: {op:?} failed, trying again: {e}");
        if self.retries.is_empty() {
            self.timers
                .push(Reverse((self.now + 1, TimerKey::LedgerRetry)));
        }
        self.retries.push(op);
    }

    /// Tries the kept ledger writes again, in order.
    fn retry_ledger(&mut self) {
        for op in std::mem::take(&mut self.retries) {
            match op {
                LedgerRetry::End(rid, returned) => self.end_reservation(rid, returned),
                LedgerRetry::Download(rid, bytes) => {
                    if let Err(e) = self.ledger.record_download(rid, bytes) {
                        self.ledger_failed(LedgerRetry::Download(rid, bytes), &e);
                    }
                }
            }
        }
        if !self.retries.is_empty() {
            log::debug!("{} ledger writes still pending", self.retries.len());
        }
    }

    /// Remembers that `request_id` matched nothing at this ledger version. An entry only
    /// serves the request's slots still queued, so when the map reaches its limit it keeps
    /// just the requests with queued slots: its size follows the queue, not every request
    /// seen since the ledger last changed (a host whose availabilities match nothing for
    /// months would otherwise collect them all).
    fn note_no_match(&mut self, request_id: RequestId) {
        if self.no_match.len() >= self.no_match_limit {
            let queue = &self.queue;
            self.no_match.retain(|rid, _| queue.has_request(rid));
            self.no_match_limit = 2 * self.no_match.len() + NO_MATCH_SLACK;
        }
        self.no_match.insert(request_id, self.ledger_version);
    }

    /// Removes the live sale of `id` with its watch (when it was the request's last sale),
    /// wake-up and worker; returns the sale.
    fn remove_sale(&mut self, id: SlotRef) -> Option<Sale> {
        let live = self.sales.remove(&id)?;
        // A re-check of an ended sale has nothing to change.
        self.rechecking.remove(&id);
        self.rechecks.remove(&id);
        if !self.has_sales(id.request_id) {
            // The watch only serves the request's sales: with none left it ends (queued
            // items go by their expiry), so watches never outlive them.
            self.unwatch(id.request_id);
        }
        if live.wake.is_some() {
            self.settle_timers();
        }
        if live.holds_worker {
            self.queue.release_worker();
        }
        live.sale
    }
}

#[cfg(test)]
mod tests {
    use super::{
        ChainTime, Command, Engine, EngineConfig, EngineInput, FinalState, Sale, SaleCommand,
        SlotRef, NO_MATCH_SLACK,
    };
    use crate::market::{
        Address, Ask, Content, MarketEvent, Request, RequestId, RequestState, SlotState, B256, U256,
    };
    use crate::sales::ledger::{AvailabilityId, Ledger, Limits, MemLedger, NewAvailability};
    use crate::sales::sale::{Input, SlotView};
    use std::sync::Arc;

    /// A host whose one availability matches nothing sees request after request: the
    /// no-match memory keeps only requests with queued slots, so it stays near the queue's
    /// size instead of holding every request seen since the ledger last changed.
    #[test]
    fn no_match_memory_follows_the_queue_not_the_requests_seen() {
        const NOW: u64 = 1_000_000;
        let mut ledger = MemLedger::new();
        ledger
            .create_availability(
                AvailabilityId([1; 32]),
                NewAvailability {
                    total_size: 1 << 30,
                    duration: 3_600,
                    min_price_per_byte_per_second: U256::from(1u8),
                    total_collateral: U256::from(1u64 << 40),
                    enabled: true,
                    until: 0,
                },
                Limits {
                    quota: u64::MAX,
                    now: NOW,
                },
            )
            .unwrap();
        let (mut e, _) = Engine::start(
            EngineConfig::default(),
            ledger,
            fastrand::Rng::with_seed(1),
            &[],
            ChainTime(NOW),
        )
        .unwrap();
        let requests = 2_000u64;
        for n in 0..requests {
            let req = Arc::new(Request {
                client: Address::repeat_byte(1),
                ask: Ask {
                    proof_probability: U256::from(5u8),
                    price_per_byte_per_second: U256::from(10u8),
                    collateral_per_byte: U256::from(1u8),
                    slots: 3,
                    slot_size: 1 << 20,
                    // Longer than the availability offers: never matches.
                    duration: 86_400,
                    max_slot_loss: 1,
                },
                content: Content {
                    cid: b"bafy-test".to_vec(),
                    merkle_root: B256::repeat_byte(2),
                },
                expiry: 600,
                nonce: B256::from(U256::from(n)),
            });
            e.handle(
                ChainTime(NOW),
                EngineInput::Event(MarketEvent::StorageRequested {
                    request_id: req.id(),
                    ask: req.ask.clone(),
                    expiry: NOW + 600,
                }),
            );
            while let Some(cmd) = e.poll() {
                if let Command::Sale(slot, SaleCommand::ReadSlot(_)) = cmd {
                    let view = SlotView {
                        request: Some(req.clone()),
                        request_state: Some(RequestState::New),
                        slot_state: SlotState::Free,
                        expires_at: NOW + 600,
                        ends_at: NOW + 86_400,
                        host: Address::ZERO,
                        current_collateral: U256::ZERO,
                    };
                    e.handle(
                        ChainTime(NOW),
                        EngineInput::Reply(slot, Input::Slot(Ok(view))),
                    );
                }
            }
        }
        // Every slot was tried (three workers take a request's three slots at once).
        assert_eq!(e.stats().ended_in(FinalState::Ignored), 3 * requests);
        let bound = 2 * e.queue().capacity() + NO_MATCH_SLACK;
        assert!(
            e.no_match.len() <= bound,
            "{} entries, more than {bound}",
            e.no_match.len()
        );
    }

    /// A request's sales are found by their range in the map whatever their indexes (0 and
    /// u64::MAX included), and never those of the requests next to it in the order.
    #[test]
    fn a_request_s_sales_are_its_range_of_the_map() {
        let (mut e, _) = Engine::start(
            EngineConfig::default(),
            MemLedger::new(),
            fastrand::Rng::with_seed(1),
            &[],
            ChainTime(1),
        )
        .unwrap();
        let ids = [[1u8; 32], [2; 32], [3; 32]].map(|b| RequestId(b.into()));
        for (rid, index) in [
            (ids[0], u64::MAX),
            (ids[1], 0),
            (ids[1], u64::MAX),
            (ids[2], 0),
        ] {
            let mut out = Vec::new();
            e.insert_sale(
                Sale::restore(SlotRef::new(rid, index), None, &mut out),
                false,
            );
        }
        let indexes = |e: &Engine<MemLedger>, rid| {
            e.request_sales(rid)
                .map(|s| s.slot_index)
                .collect::<Vec<_>>()
        };
        assert_eq!(indexes(&e, ids[0]), [u64::MAX]);
        assert_eq!(indexes(&e, ids[1]), [0, u64::MAX]);
        assert_eq!(indexes(&e, ids[2]), [0]);
        e.remove_sale(SlotRef::new(ids[1], 0));
        e.remove_sale(SlotRef::new(ids[1], u64::MAX));
        assert!(!e.has_sales(ids[1]));
        assert!(e.has_sales(ids[0]) && e.has_sales(ids[2]));
    }
}
