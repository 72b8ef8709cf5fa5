//! The slot queue (`docs/sales.md#slot-queue`): slots of storage requests this host may try to fill,
//! best first, and the worker budget that limits how many are prepared at once.
//!
//! # Order
//! A total, transitive order ("less" = higher priority, compared lexicographically):
//! 1. unseen before seen;
//! 2. profitability `duration × pricePerBytePerSecond × slotSize`, descending;
//! 3. collateral, ascending;
//! 4. expiry, descending (always an absolute unix time, also for items from `SlotFreed`);
//! 5. `requestId` ascending, then the slot's rank: a bijective mix of the slot index with
//!    the request id and the queue's salt, ascending, so that no two distinct items compare
//!    equal. The reference shuffles a request's slots before pushing them so that hosts
//!    seeing the same request try different slots first; a total order would undo that
//!    shuffle if it ranked a request's otherwise equal slots by index, so the rank stands in
//!    for the shuffle: each host draws its own salt ([`SlotQueue::set_salt`]), and with it
//!    its own order of every request's slots.
//!
//! # Structure
//! What the items of one request share (slot size, duration, price, collateral, expiry, and
//! the profitability they give) is kept once, as *terms*, per request and distinct set of
//! them: a request's slots share one set, its freed slots (repair collateral, the request's
//! end as expiry) usually a second. An item is a 40-byte node: slot index, rank, its terms,
//! heap positions, list links and seen flag. Nodes, terms and requests live in slabs
//! (`Vec<Option<_>>` with a free list); a position map `HashMap<(request number, slotIndex),
//! node>` finds an item by its identity. Indexed binary heaps hold node numbers, and every
//! node records its position in its heaps, so any node can be removed in O(log n). Each heap
//! entry carries a u64 key that agrees with its heap's order wherever two keys differ (see
//! `order_key`), so most comparisons are one integer comparison inside the heap array; equal
//! keys fall back to the rank when the two nodes share terms, else to the full order.
//! Since rule 1 puts every unseen item before every seen one, unseen and seen items have
//! heaps of their own (a new item then climbs only past the few unseen ones, not past a
//! queue full of seen items), each pair with:
//! - `BEST`: the order above, root = the next item to process (the unseen root, else the
//!   seen root);
//! - `WORST`: the reverse order, root = the item a full queue evicts (the seen root, else
//!   the unseen root).
//!
//! Only an eviction reads a `WORST` heap. In a queue of up to [`LAZY_WORST_MAX`] items each
//! is built (O(n), from its `BEST` heap) on the first eviction that needs it and then kept
//! in step until its part of the queue empties: a host whose workers keep up never fills
//! its queue with unseen items and so never pays for their `WORST` heap, and a rebuild
//! costs no more than the pushes since that part was last empty. A larger queue keeps both
//! `WORST` heaps always, so that no single push stalls on a rebuild of a huge heap (at
//! 10^6 items that took 0.45 s).
//!
//! Expiry only needs its minimum, so it is a plain heap of `(expiry, terms, generation)`,
//! one entry per set of terms, with lazy deletion: terms whose last item leaves the queue
//! leave their entry behind, recognised as stale because the terms are gone or their slab
//! slot holds a newer generation. Stale entries are dropped whenever they reach the root (so
//! the root is always live) and the heap is rebuilt from the live terms when stale entries
//! outnumber them by more than 32.
//!
//! The items of one set of terms form a doubly-linked list through their nodes (head kept in
//! the terms), so expiring terms or deleting a request costs O(k log n) for its k items.
//!
//! Invariants (checked by [`SlotQueue::validate`] in tests): every heap satisfies its order,
//! a kept `WORST` heap holds exactly the entries of its `BEST` heap and one not kept is empty,
//! every node's recorded positions point back at it, every set of terms has items, exactly
//! one live expiry entry and no twin among its request's terms, the expiry root is live, the
//! position map and the terms' lists cover exactly the live nodes, and `len() <= capacity()`.
//!
//! Differences 5–9 from the reference (`docs/sales.md#differences-from-the-reference`):
//! duplicate checks, deletes and finding a request's items are not linear scans; a full queue evicts the lowest-priority item (or
//! refuses the pushed one) and says which; clearing seen flags rebuilds the heaps; expired
//! items are purged by time; requests with more than 65,535 slots are refused, not wrapped.
//!
//! Pure: `now` and the random generator are parameters.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use crate::market::{Ask, RequestId, U256};

/// Default number of items a queue holds (`--queue-size`), as in the reference.
pub const DEFAULT_CAPACITY: usize = 128;
/// Default number of slots prepared at once (`--max-workers`), as in the reference.
pub const DEFAULT_MAX_WORKERS: usize = 3;
/// The largest capacity (node numbers are u32, one value is reserved).
pub const MAX_CAPACITY: usize = (u32::MAX - 1) as usize;
/// The largest capacity whose queue builds its `WORST` heaps only when an eviction needs
/// them (see the module docs).
pub const LAZY_WORST_MAX: usize = 1024;
/// The largest number of slots of a request the queue accepts.
pub const MAX_SLOTS_PER_REQUEST: u64 = 65_535;

/// One slot a host may try to fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotQueueItem {
    /// The request.
    pub request_id: RequestId,
    /// The slot's index (below 65,535 when expanded from a request; any index for a freed
    /// slot).
    pub slot_index: u64,
    /// Bytes of the slot.
    pub slot_size: u64,
    /// Request duration, seconds.
    pub duration: u64,
    /// Price offered per byte per second.
    pub price_per_byte_per_second: U256,
    /// Collateral the host would post for this slot (repair-discounted for freed slots).
    pub collateral: U256,
    /// Absolute unix time after which the slot can no longer be filled.
    pub expiry: u64,
    /// Already processed without a matching availability.
    pub seen: bool,
}

impl SlotQueueItem {
    /// Profitability: `duration × pricePerBytePerSecond × slotSize` (the slot's total payout).
    /// Saturates at `U256::MAX`.
    pub fn profitability(&self) -> U256 {
        // size × duration always fits 128 bits; with a price below 2^64 the whole product
        // usually does too, and one u128 multiply replaces two 256-bit ones.
        let byte_seconds = u128::from(self.slot_size) * u128::from(self.duration);
        let price = self.price_per_byte_per_second.as_limbs();
        if price[1..] == [0, 0, 0] {
            if let Some(p) = byte_seconds.checked_mul(u128::from(price[0])) {
                return U256::from(p);
            }
        }
        self.price_per_byte_per_second
            .saturating_mul(U256::from(byte_seconds))
    }

    /// The item's identity.
    pub fn key(&self) -> (RequestId, u64) {
        (self.request_id, self.slot_index)
    }

    /// One item per slot of `ask`, in an order shuffled with `rng` (so that hosts seeing the
    /// same request try different slots first). Every item gets `expiry` (absolute) and
    /// `collateral`. Refuses requests with 0 or more than [`MAX_SLOTS_PER_REQUEST`] slots.
    /// The items are made one at a time as the iterator is read: a request of 65,535 slots
    /// costs two bytes per slot until then, not a whole item.
    pub fn expand(
        request_id: RequestId,
        ask: &Ask,
        expiry: u64,
        collateral: U256,
        rng: &mut fastrand::Rng,
    ) -> Result<Expanded, QueueError> {
        let slots = match u16::try_from(ask.slots) {
            Ok(n) if n > 0 && u64::from(n) <= MAX_SLOTS_PER_REQUEST => n,
            _ => return Err(QueueError::SlotsOutOfRange { slots: ask.slots }),
        };
        let mut order: Vec<u16> = (0..slots).collect();
        rng.shuffle(&mut order);
        Ok(Expanded {
            order: order.into_iter(),
            template: SlotQueueItem {
                request_id,
                slot_index: 0,
                slot_size: ask.slot_size,
                duration: ask.duration,
                price_per_byte_per_second: ask.price_per_byte_per_second,
                collateral,
                expiry,
                seen: false,
            },
        })
    }

    /// The order of a queue with salt 0 (a new queue's): `Less` means `self` has priority
    /// over `other`. [`SlotQueue::priority_cmp`] gives any queue's order.
    pub fn priority_cmp(&self, other: &SlotQueueItem) -> Ordering {
        salted_cmp(self, other, 0)
    }

    fn order<'a>(&'a self, profit: &'a U256, rank: u64) -> Order<'a> {
        Order {
            seen: self.seen,
            profit,
            collateral: &self.collateral,
            expiry: self.expiry,
            request_id: &self.request_id,
            rank,
        }
    }
}

/// The items of one request, from [`SlotQueueItem::expand`], in their shuffled order.
#[derive(Debug, Clone)]
pub struct Expanded {
    order: std::vec::IntoIter<u16>,
    template: SlotQueueItem,
}

impl Iterator for Expanded {
    type Item = SlotQueueItem;
    fn next(&mut self) -> Option<SlotQueueItem> {
        let slot_index = u64::from(self.order.next()?);
        Some(SlotQueueItem {
            slot_index,
            ..self.template.clone()
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.order.size_hint()
    }
}

impl ExactSizeIterator for Expanded {}

fn salted_cmp(a: &SlotQueueItem, b: &SlotQueueItem, salt: u64) -> Ordering {
    let (pa, pb) = (a.profitability(), b.profitability());
    let ra = slot_rank(&a.request_id, a.slot_index, salt);
    let rb = slot_rank(&b.request_id, b.slot_index, salt);
    a.order(&pa, ra).cmp(&b.order(&pb, rb))
}

/// What the order reads of an item, wherever the item is kept.
#[derive(Debug, Clone, Copy)]
struct Order<'a> {
    seen: bool,
    profit: &'a U256,
    collateral: &'a U256,
    expiry: u64,
    request_id: &'a RequestId,
    /// Rule 5's rank ([`slot_rank`]).
    rank: u64,
}

impl Order<'_> {
    fn cmp(&self, other: &Order<'_>) -> Ordering {
        self.seen
            .cmp(&other.seen)
            .then_with(|| other.profit.cmp(self.profit))
            .then_with(|| self.collateral.cmp(other.collateral))
            .then_with(|| other.expiry.cmp(&self.expiry))
            .then_with(|| self.request_id.cmp(other.request_id))
            .then_with(|| self.rank.cmp(&other.rank))
    }
}

/// Rule 5's rank of a slot among its request's slots: for one request and salt, a
/// bijection of the slot index (xor with constants, then xorshift-multiply steps, each
/// invertible), so distinct slots of a request never tie.
fn slot_rank(request_id: &RequestId, slot_index: u64, salt: u64) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&request_id.0[..8]);
    let mut x = slot_index ^ u64::from_le_bytes(head) ^ salt;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Why a queue operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// An item with the same request and slot index is already queued.
    #[error("slot {slot_index} of request {request_id} is already queued")]
    Duplicate {
        /// The request.
        request_id: RequestId,
        /// The slot.
        slot_index: u64,
    },
    /// The queue is stopped.
    #[error("the slot queue is not running")]
    NotRunning,
    /// A request has no slots or more than 65,535.
    #[error("request has {slots} slots; the queue accepts 1 to 65535")]
    SlotsOutOfRange {
        /// The request's slot count.
        slots: u64,
    },
    /// The capacity is outside 1..=MAX_CAPACITY.
    #[error("queue size {0} is out of range 1..=4294967294")]
    InvalidCapacity(usize),
    /// max_workers is outside 1..=capacity.
    #[error("max workers {max_workers} is out of range 1..={capacity}")]
    InvalidMaxWorkers {
        /// The requested worker count.
        max_workers: usize,
        /// The queue capacity.
        capacity: usize,
    },
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The item was queued.
    Queued,
    /// The item was queued and the queue, being full, evicted this lower-priority item.
    QueuedEvicting(SlotQueueItem),
    /// The queue is full and the pushed item ranks below everything queued: it was dropped.
    Dropped(SlotQueueItem),
}

/// Why the queue is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// A new queue starts paused until an unseen item arrives or an availability grows.
    Startup,
    /// A worker reached a seen item: every queued item was already tried without a matching
    /// availability. Resumes on an unseen push or when an availability grows.
    OnlySeenItems,
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PauseReason::Startup => "waiting for the first unseen item or availability change",
            PauseReason::OnlySeenItems => {
                "only seen items queued; waiting for a new request or a grown availability"
            }
        })
    }
}

/// What a worker gets from [`SlotQueue::next_for_worker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Process this item; a worker is now taken (give it back with
    /// [`SlotQueue::release_worker`]).
    Item(SlotQueueItem),
    /// The queue is stopped.
    NotRunning,
    /// The queue is paused.
    Paused(PauseReason),
    /// All workers are busy.
    NoWorker,
    /// Nothing is queued.
    Empty,
}

const NONE: u32 = u32::MAX;

/// A heap entry: the node and its ordering key in that heap.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u64,
    id: u32,
}

/// A u64 that never decreases as `p` grows: `p` itself below 2^55, else a float-like
/// (exponent, 55 leading bits) pair. Below 2^62 for every U256.
fn coarse(p: &U256) -> u64 {
    let bits = p.bit_len();
    if bits <= 55 {
        return p.as_limbs()[0];
    }
    let e = (bits - 55) as u64;
    let mantissa = (*p >> (bits - 55)).as_limbs()[0];
    (e << 54) + mantissa
}

/// The key of an item in a `BEST` heap: profitability descending, coarsely (a heap holds
/// only unseen or only seen items, so rule 1 needs no bit). Where two keys of one heap
/// differ they order as [`Order::cmp`] does; the `WORST` key is its bitwise complement.
fn order_key(profit: &U256) -> u64 {
    (1u64 << 62) - 1 - coarse(profit)
}
const BEST: usize = 0;
const WORST: usize = 1;
/// The heap of kind `BEST` or `WORST` for unseen (`seen == false`) or seen items.
const fn heap(kind: usize, seen: bool) -> usize {
    2 * seen as usize + kind
}

/// A vector of optional values with a free list: stable u32 numbers, reused after removal.
#[derive(Debug, Clone)]
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(value);
                id
            }
            None => {
                self.slots.push(Some(value));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn remove(&mut self, id: u32) -> T {
        match self.slots[id as usize].take() {
            Some(v) => {
                self.free.push(id);
                self.len -= 1;
                v
            }
            None => unreachable!("queue slab entry {id} removed twice"),
        }
    }

    fn contains(&self, id: u32) -> bool {
        self.slots.get(id as usize).is_some_and(Option::is_some)
    }

    fn get(&self, id: u32) -> &T {
        match &self.slots[id as usize] {
            Some(v) => v,
            None => unreachable!("queue slab entry {id} referenced after removal"),
        }
    }

    fn get_mut(&mut self, id: u32) -> &mut T {
        match &mut self.slots[id as usize] {
            Some(v) => v,
            None => unreachable!("queue slab entry {id} referenced after removal"),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, v)| Some((id as u32, v.as_ref()?)))
    }
}

/// A queued request: its id, kept once, and the terms its queued items have.
#[derive(Debug, Clone)]
struct Request {
    id: RequestId,
    /// Usually one (the request's slots) or two (and freed slots, at the repair collateral
    /// and the request's end as expiry).
    terms: Vec<u32>,
}

/// What the queued items of one request with one collateral and expiry share.
#[derive(Debug, Clone)]
struct Terms {
    request: u32,
    slot_size: u64,
    duration: u64,
    price: U256,
    collateral: U256,
    expiry: u64,
    profit: U256,
    /// `order_key(&profit)`.
    key: u64,
    /// Queued items with these terms (never 0: terms without items are removed).
    items: u32,
    /// The first of them; they form a doubly-linked list through their nodes.
    head: u32,
}

impl Terms {
    fn matches(&self, item: &SlotQueueItem) -> bool {
        self.expiry == item.expiry
            && self.collateral == item.collateral
            && self.slot_size == item.slot_size
            && self.duration == item.duration
            && self.price == item.price_per_byte_per_second
    }

    fn same(&self, other: &Terms) -> bool {
        self.expiry == other.expiry
            && self.collateral == other.collateral
            && self.slot_size == other.slot_size
            && self.duration == other.duration
            && self.price == other.price
    }
}

/// One queued item: its slot and a reference to its terms (40 bytes).
#[derive(Debug, Clone)]
struct Node {
    slot_index: u64,
    /// Rule 5's rank ([`slot_rank`]).
    rank: u64,
    terms: u32,
    /// Positions in its `BEST` and `WORST` heaps.
    pos: [u32; 2],
    prev: u32,
    next: u32,
    seen: bool,
}

// The module docs promise 40-byte items; the seen flag gives `Option` its niche.
const _: () = assert!(std::mem::size_of::<Option<Node>>() == 40);

/// The slot queue with its worker budget. See the module docs.
#[derive(Debug, Clone)]
pub struct SlotQueue {
    nodes: Slab<Node>,
    terms: Slab<Terms>,
    requests: Slab<Request>,
    /// `(request number, slot index)` → node.
    index: HashMap<(u32, u64), u32>,
    by_request: HashMap<RequestId, u32>,
    /// `[BEST, WORST]` of the unseen items, then of the seen items (see [`heap`]).
    heaps: [Vec<Entry>; 4],
    /// Whether the `WORST` heap of the unseen (`[0]`) and seen (`[1]`) items is kept; when
    /// not, it is empty and built on the next eviction that needs it (see the module docs).
    worst_kept: [bool; 2],
    /// Rule 5's salt (see the module docs).
    salt: u64,
    /// `(expiry, terms, generation)`, smallest first, with lazy deletion (see the module
    /// docs).
    expiries: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// The generation of each terms slot, bumped whenever terms are put in it.
    generations: Vec<u32>,
    /// Queued items with the seen flag set.
    seen: usize,
    capacity: usize,
    max_workers: usize,
    busy_workers: usize,
    running: bool,
    paused: Option<PauseReason>,
}

impl Default for SlotQueue {
    /// A stopped, paused queue with the default capacity (128) and workers (3).
    fn default() -> Self {
        match SlotQueue::new(DEFAULT_CAPACITY, DEFAULT_MAX_WORKERS) {
            Ok(q) => q,
            Err(e) => unreachable!("default queue configuration is valid: {e}"),
        }
    }
}

impl SlotQueue {
    /// A stopped, paused queue. `capacity` in 1..=[`MAX_CAPACITY`], `max_workers` in
    /// 1..=capacity.
    pub fn new(capacity: usize, max_workers: usize) -> Result<SlotQueue, QueueError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(QueueError::InvalidCapacity(capacity));
        }
        if max_workers == 0 || max_workers > capacity {
            return Err(QueueError::InvalidMaxWorkers {
                max_workers,
                capacity,
            });
        }
        Ok(SlotQueue {
            nodes: Slab::new(),
            terms: Slab::new(),
            requests: Slab::new(),
            index: HashMap::new(),
            by_request: HashMap::new(),
            heaps: [Vec::new(), Vec::new(), Vec::new(), Vec::new()],
            worst_kept: [capacity > LAZY_WORST_MAX; 2],
            salt: 0,
            expiries: BinaryHeap::new(),
            generations: Vec::new(),
            seen: 0,
            capacity,
            max_workers,
            busy_workers: 0,
            running: false,
            paused: Some(PauseReason::Startup),
        })
    }

    /// Sets the salt of rule 5 (see the module docs); only while the queue is empty, so that
    /// the order of queued items never changes under them. False when items are queued.
    pub fn set_salt(&mut self, salt: u64) -> bool {
        if !self.is_empty() {
            return false;
        }
        self.salt = salt;
        true
    }

    /// The queue order (`Less`: `a` has priority over `b`), with this queue's salt.
    pub fn priority_cmp(&self, a: &SlotQueueItem, b: &SlotQueueItem) -> Ordering {
        salted_cmp(a, b, self.salt)
    }

    /// Starts processing (idempotent).
    pub fn start(&mut self) {
        self.running = true;
    }
    /// Stops processing (idempotent); items stay queued.
    pub fn stop(&mut self) {
        self.running = false;
    }
    /// True between start and stop.
    pub fn is_running(&self) -> bool {
        self.running
    }
    /// Why the queue is paused, or None when it is not.
    pub fn paused(&self) -> Option<PauseReason> {
        self.paused
    }
    /// Pauses with a reason.
    pub fn pause(&mut self, reason: PauseReason) {
        self.paused = Some(reason);
    }
    /// Unpauses.
    pub fn unpause(&mut self) {
        self.paused = None;
    }
    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.nodes.len
    }
    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.nodes.len == 0
    }
    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// The worker budget.
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }
    /// Workers currently taken.
    pub fn busy_workers(&self) -> usize {
        self.busy_workers
    }
    /// Whether any slot of the request is queued. O(1).
    pub fn has_request(&self, request_id: &RequestId) -> bool {
        self.by_request.contains_key(request_id)
    }

    /// How many slots of the request are queued. O(1) (per distinct collateral and expiry
    /// among them).
    pub fn request_len(&self, request_id: &RequestId) -> usize {
        self.by_request.get(request_id).map_or(0, |&r| {
            self.requests
                .get(r)
                .terms
                .iter()
                .map(|&t| self.terms.get(t).items as usize)
                .sum()
        })
    }

    /// True when an item with this identity is queued.
    pub fn contains(&self, request_id: RequestId, slot_index: u64) -> bool {
        self.find(&request_id, slot_index).is_some()
    }
    /// The queued item with this identity.
    pub fn get(&self, request_id: RequestId, slot_index: u64) -> Option<SlotQueueItem> {
        Some(self.item(self.find(&request_id, slot_index)?))
    }
    /// The item a worker would get next, without taking it.
    pub fn peek(&self) -> Option<SlotQueueItem> {
        Some(self.item(self.best_entry()?.id))
    }

    fn find(&self, request_id: &RequestId, slot_index: u64) -> Option<u32> {
        let r = *self.by_request.get(request_id)?;
        self.index.get(&(r, slot_index)).copied()
    }

    /// Pushes one item. Refuses duplicates and pushes to a stopped queue. When the queue is
    /// full, evicts the lowest-priority item, or drops the pushed item if it ranks lowest;
    /// the outcome says which. Pushing an unseen item unpauses the queue (even if it is then
    /// dropped: the queue holds something better than it, so workers have work).
    pub fn push(&mut self, item: SlotQueueItem) -> Result<PushOutcome, QueueError> {
        if !self.running {
            return Err(QueueError::NotRunning);
        }
        if self.find(&item.request_id, item.slot_index).is_some() {
            return Err(QueueError::Duplicate {
                request_id: item.request_id,
                slot_index: item.slot_index,
            });
        }
        if !item.seen {
            self.paused = None;
        }
        let profit = item.profitability();
        let rank = slot_rank(&item.request_id, item.slot_index, self.salt);
        let mut outcome = PushOutcome::Queued;
        if self.len() >= self.capacity {
            // Rule 1: the worst item is the worst seen one while any is queued.
            let seen = self.seen > 0;
            self.keep_worst(seen);
            let worst = self.heaps[heap(WORST, seen)][0].id;
            if item.order(&profit, rank).cmp(&self.order(worst)) != Ordering::Less {
                return Ok(PushOutcome::Dropped(item));
            }
            outcome = PushOutcome::QueuedEvicting(self.remove_node(worst));
        }
        self.insert(item, profit, rank);
        Ok(outcome)
    }

    /// The terms of `item`, made (with its request) when none of the queued items has them.
    /// Linear in the request's sets of terms: one or two for what the engine pushes.
    fn terms_for(&mut self, item: &SlotQueueItem, profit: U256) -> u32 {
        let request = match self.by_request.get(&item.request_id) {
            Some(&r) => r,
            None => {
                let r = self.requests.insert(Request {
                    id: item.request_id,
                    terms: Vec::new(),
                });
                self.by_request.insert(item.request_id, r);
                r
            }
        };
        let mut found = self.requests.get(request).terms.iter().copied();
        if let Some(t) = found.find(|&t| self.terms.get(t).matches(item)) {
            return t;
        }
        let t = self.terms.insert(Terms {
            request,
            slot_size: item.slot_size,
            duration: item.duration,
            price: item.price_per_byte_per_second,
            collateral: item.collateral,
            expiry: item.expiry,
            key: order_key(&profit),
            profit,
            items: 0,
            head: NONE,
        });
        self.requests.get_mut(request).terms.push(t);
        if self.generations.len() <= t as usize {
            self.generations.resize(t as usize + 1, 0);
        }
        let generation = self.generations[t as usize].wrapping_add(1);
        self.generations[t as usize] = generation;
        self.expiries.push(Reverse((item.expiry, t, generation)));
        t
    }

    fn insert(&mut self, item: SlotQueueItem, profit: U256, rank: u64) {
        let t = self.terms_for(&item, profit);
        let seen = item.seen;
        self.seen += usize::from(seen);
        let terms = self.terms.get(t);
        let (head, request, best) = (terms.head, terms.request, terms.key);
        let id = self.nodes.insert(Node {
            slot_index: item.slot_index,
            rank,
            terms: t,
            pos: [NONE; 2],
            prev: NONE,
            next: head,
            seen,
        });
        if head != NONE {
            self.nodes.get_mut(head).prev = id;
        }
        let terms = self.terms.get_mut(t);
        terms.head = id;
        terms.items += 1;
        self.index.insert((request, item.slot_index), id);
        for (kind, key) in [(BEST, best), (WORST, !best)] {
            if kind == WORST && !self.worst_kept[usize::from(seen)] {
                continue;
            }
            let h = heap(kind, seen);
            let i = self.heaps[h].len();
            self.heaps[h].push(Entry { key, id });
            self.nodes.get_mut(id).pos[kind] = i as u32;
            self.sift_up(h, i);
        }
    }

    /// Builds the `WORST` heap of the unseen or seen items from their `BEST` heap, unless it
    /// is kept already; from then on it is kept until that part of the queue empties.
    fn keep_worst(&mut self, seen: bool) {
        if std::mem::replace(&mut self.worst_kept[usize::from(seen)], true) {
            return;
        }
        let h = heap(WORST, seen);
        let entries: Vec<Entry> = self.heaps[heap(BEST, seen)]
            .iter()
            .map(|e| Entry {
                key: !e.key,
                id: e.id,
            })
            .collect();
        self.heaps[h] = entries;
        self.heapify(h);
    }

    /// Records every entry's position in heap `h` and restores its order. O(n).
    fn heapify(&mut self, h: usize) {
        for i in 0..self.heaps[h].len() {
            let e = self.heaps[h][i];
            self.set(h, i, e);
        }
        let n = self.heaps[h].len();
        for i in (0..n / 2).rev() {
            self.sift_down(h, i);
        }
    }

    /// Takes the highest-priority item (no worker accounting; see [`Self::next_for_worker`]).
    pub fn pop(&mut self) -> Option<SlotQueueItem> {
        let id = self.best_entry()?.id;
        Some(self.remove_node(id))
    }

    /// What one worker loop of the reference does, without blocking: when running, not
    /// paused and a worker is free, pops the best item. A seen item pauses the queue
    /// (reason [`PauseReason::OnlySeenItems`]) and goes back; an unseen item takes a worker.
    pub fn next_for_worker(&mut self) -> Next {
        if !self.running {
            return Next::NotRunning;
        }
        if let Some(reason) = self.paused {
            return Next::Paused(reason);
        }
        if self.busy_workers >= self.max_workers {
            return Next::NoWorker;
        }
        let Some(&Entry { id, .. }) = self.heaps[heap(BEST, false)].first() else {
            if self.heaps[heap(BEST, true)].is_empty() {
                return Next::Empty;
            }
            self.paused = Some(PauseReason::OnlySeenItems);
            return Next::Paused(PauseReason::OnlySeenItems);
        };
        self.busy_workers += 1;
        Next::Item(self.remove_node(id))
    }

    /// Gives a worker back (the slot was filled or its sale ended).
    pub fn release_worker(&mut self) {
        self.busy_workers = self.busy_workers.saturating_sub(1);
    }

    /// Removes one slot's item; returns it when it was queued. O(log n).
    pub fn delete(&mut self, request_id: RequestId, slot_index: u64) -> Option<SlotQueueItem> {
        let id = self.find(&request_id, slot_index)?;
        Some(self.remove_node(id))
    }

    /// Removes every item of a request; returns how many. O(k log n).
    pub fn delete_request(&mut self, request_id: RequestId) -> usize {
        let mut n = 0;
        while let Some(&r) = self.by_request.get(&request_id) {
            let t = self.requests.get(r).terms[0];
            self.remove_node(self.terms.get(t).head);
            n += 1;
        }
        n
    }

    /// Removes every item whose expiry is at or before `now` (it cannot be filled in time)
    /// and returns them. O(k log n).
    pub fn purge_expired(&mut self, now: u64) -> Vec<SlotQueueItem> {
        let mut out = Vec::new();
        // The root is always live (see the module docs).
        while let Some(&Reverse((expiry, t, _))) = self.expiries.peek() {
            if expiry > now {
                break;
            }
            out.push(self.remove_node(self.terms.get(t).head));
        }
        out
    }

    /// The earliest expiry of a queued item (when [`Self::purge_expired`] has work next).
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.peek().map(|Reverse((expiry, _, _))| *expiry)
    }

    /// Marks every item unseen, moving the seen heaps' entries into the unseen heaps and
    /// rebuilding those. O(n), O(1) when no item is seen.
    pub fn clear_seen_flags(&mut self) {
        if self.seen == 0 {
            return;
        }
        self.seen = 0;
        for node in self.nodes.slots.iter_mut().flatten() {
            node.seen = false;
        }
        let moved = std::mem::take(&mut self.heaps[heap(BEST, true)]);
        self.heaps[heap(BEST, false)].extend(moved);
        self.heapify(heap(BEST, false));
        // The WORST heaps are built again when an eviction needs one, or now in a large
        // queue (see the module docs).
        for seen in [false, true] {
            self.heaps[heap(WORST, seen)].clear();
        }
        self.worst_kept = [false; 2];
        if self.capacity > LAZY_WORST_MAX {
            self.keep_worst(false);
            self.worst_kept[1] = true;
        }
    }

    /// The queued items in priority order (for `codex queue show`). O(n log n).
    pub fn items_in_order(&self) -> Vec<SlotQueueItem> {
        let mut ids: Vec<u32> = self.nodes.iter().map(|(id, _)| id).collect();
        ids.sort_by(|&a, &b| self.order(a).cmp(&self.order(b)));
        ids.into_iter().map(|id| self.item(id)).collect()
    }

    /// Checks every structural invariant; Err describes the first violation.
    pub fn validate(&self) -> Result<(), String> {
        let live = self.nodes.iter().count();
        if live != self.nodes.len || live != self.index.len() {
            return Err(format!(
                "{live} nodes, counted {}, but {} index entries",
                self.nodes.len,
                self.index.len()
            ));
        }
        if live > self.capacity {
            return Err(format!("{live} items exceed capacity {}", self.capacity));
        }
        let (unseen, seen) = (
            self.heaps[heap(BEST, false)].len(),
            self.heaps[heap(BEST, true)].len(),
        );
        if unseen + seen != live || seen != self.seen {
            return Err(format!(
                "the BEST heaps hold {unseen} unseen and {seen} seen entries"
            ));
        }
        for class in [false, true] {
            let (best, worst) = (
                self.heaps[heap(BEST, class)].len(),
                self.heaps[heap(WORST, class)].len(),
            );
            let want = if self.worst_kept[usize::from(class)] {
                best
            } else {
                0
            };
            if worst != want {
                return Err(format!(
                    "WORST heap (seen = {class}) holds {worst} entries for {best} items, kept: {}",
                    self.worst_kept[usize::from(class)]
                ));
            }
        }
        for h in 0..4 {
            for (i, &e) in self.heaps[h].iter().enumerate() {
                let n = self.nodes.get(e.id);
                if heap(h & 1, n.seen) != h {
                    return Err(format!("heap {h} holds an item of the wrong seen flag"));
                }
                if n.pos[h & 1] as usize != i {
                    return Err(format!("heap {h} position {i} mismatch"));
                }
                let best = self.terms.get(n.terms).key;
                if best != order_key(&self.terms.get(n.terms).profit) {
                    return Err(format!("terms {} have a stale key", n.terms));
                }
                let want = [best, !best][h & 1];
                if e.key != want {
                    return Err(format!("heap {h} key at {i} is stale"));
                }
                if i > 0 && self.less(h, e, self.heaps[h][(i - 1) / 2]) {
                    return Err(format!("heap {h} order violated at {i}"));
                }
            }
        }
        let mut expiry_entries = 0;
        for Reverse((expiry, t, generation)) in self.expiries.iter() {
            if self.expiry_entry_live(*t, *generation) {
                expiry_entries += 1;
                if self.terms.get(*t).expiry != *expiry {
                    return Err(format!("expiry entry of terms {t} is wrong"));
                }
            }
        }
        if expiry_entries != self.terms.len {
            return Err(format!(
                "{expiry_entries} live expiry entries for {} terms",
                self.terms.len
            ));
        }
        if let Some(Reverse((_, t, generation))) = self.expiries.peek() {
            if !self.expiry_entry_live(*t, *generation) {
                return Err("the expiry root is stale".into());
            }
        }
        // Every terms' list holds exactly its items; every node is on its terms' list.
        let mut listed = 0;
        for (t, terms) in self.terms.iter() {
            let (mut cur, mut prev, mut n) = (terms.head, NONE, 0);
            while cur != NONE {
                let node = self.nodes.get(cur);
                if node.terms != t || node.prev != prev {
                    return Err(format!("the item list of terms {t} is broken"));
                }
                n += 1;
                prev = cur;
                cur = node.next;
            }
            if n == 0 || n != terms.items {
                return Err(format!(
                    "terms {t} list {n} items but count {}",
                    terms.items
                ));
            }
            listed += n as usize;
            if !self.requests.contains(terms.request)
                || !self.requests.get(terms.request).terms.contains(&t)
            {
                return Err(format!("terms {t} are not listed by their request"));
            }
            let siblings = &self.requests.get(terms.request).terms;
            if siblings
                .iter()
                .any(|&u| u != t && self.terms.contains(u) && self.terms.get(u).same(terms))
            {
                return Err(format!("terms {t} are kept twice"));
            }
        }
        if listed != live {
            return Err(format!("terms lists hold {listed} of {live} items"));
        }
        for (r, request) in self.requests.iter() {
            if request.terms.is_empty() || self.by_request.get(&request.id) != Some(&r) {
                return Err(format!("request {} is kept without items", request.id));
            }
            for &t in &request.terms {
                if !self.terms.contains(t) || self.terms.get(t).request != r {
                    return Err(format!("request {} lists foreign terms", request.id));
                }
            }
        }
        if self.by_request.len() != self.requests.len {
            return Err("the request map and the requests disagree".into());
        }
        let seen = self.nodes.iter().filter(|(_, n)| n.seen).count();
        if seen != self.seen {
            return Err(format!(
                "{seen} seen items but the count says {}",
                self.seen
            ));
        }
        for (&(r, slot_index), &id) in &self.index {
            let n = self.nodes.get(id);
            if n.slot_index != slot_index || self.terms.get(n.terms).request != r {
                return Err("index points at the wrong node".into());
            }
            let want = slot_rank(&self.requests.get(r).id, slot_index, self.salt);
            if n.rank != want {
                return Err(format!("node {id} has a stale rank"));
            }
        }
        Ok(())
    }

    /// The item kept in node `id`.
    fn item(&self, id: u32) -> SlotQueueItem {
        let n = self.nodes.get(id);
        let t = self.terms.get(n.terms);
        SlotQueueItem {
            request_id: self.requests.get(t.request).id,
            slot_index: n.slot_index,
            slot_size: t.slot_size,
            duration: t.duration,
            price_per_byte_per_second: t.price,
            collateral: t.collateral,
            expiry: t.expiry,
            seen: n.seen,
        }
    }

    /// What the order reads of node `id`.
    fn order(&self, id: u32) -> Order<'_> {
        let n = self.nodes.get(id);
        let t = self.terms.get(n.terms);
        Order {
            seen: n.seen,
            profit: &t.profit,
            collateral: &t.collateral,
            expiry: t.expiry,
            request_id: &self.requests.get(t.request).id,
            rank: n.rank,
        }
    }

    fn remove_node(&mut self, id: u32) -> SlotQueueItem {
        let item = self.item(id);
        let pos = self.nodes.get(id).pos;
        let seen = item.seen;
        self.heap_remove(heap(BEST, seen), pos[BEST] as usize);
        let class = usize::from(seen);
        if self.worst_kept[class] {
            self.heap_remove(heap(WORST, seen), pos[WORST] as usize);
            if self.heaps[heap(WORST, seen)].is_empty() && self.capacity <= LAZY_WORST_MAX {
                self.worst_kept[class] = false;
            }
        }
        let node = self.nodes.remove(id);
        self.seen -= usize::from(seen);
        if node.prev != NONE {
            self.nodes.get_mut(node.prev).next = node.next;
        } else {
            self.terms.get_mut(node.terms).head = node.next;
        }
        if node.next != NONE {
            self.nodes.get_mut(node.next).prev = node.prev;
        }
        let terms = self.terms.get_mut(node.terms);
        terms.items -= 1;
        let r = terms.request;
        self.index.remove(&(r, node.slot_index));
        if terms.items == 0 {
            self.terms.remove(node.terms);
            let request = self.requests.get_mut(r);
            request.terms.retain(|&t| t != node.terms);
            if request.terms.is_empty() {
                let gone = self.requests.remove(r);
                self.by_request.remove(&gone.id);
            }
            self.drop_stale_expiries();
        }
        item
    }

    /// The root of the BEST order: the best unseen item, else the best seen one.
    fn best_entry(&self) -> Option<Entry> {
        self.heaps[heap(BEST, false)]
            .first()
            .or_else(|| self.heaps[heap(BEST, true)].first())
            .copied()
    }

    fn expiry_entry_live(&self, t: u32, generation: u32) -> bool {
        self.terms.contains(t) && self.generations[t as usize] == generation
    }

    /// Keeps the expiry root live, and the stale entries fewer than the live ones (plus a
    /// little slack, so that small queues do not rebuild all the time).
    fn drop_stale_expiries(&mut self) {
        if self.expiries.len() > 2 * self.terms.len + 32 {
            let live: Vec<Reverse<(u64, u32, u32)>> = self
                .terms
                .iter()
                .map(|(t, terms)| Reverse((terms.expiry, t, self.generations[t as usize])))
                .collect();
            self.expiries = BinaryHeap::from(live);
            return;
        }
        while let Some(&Reverse((_, t, generation))) = self.expiries.peek() {
            if self.expiry_entry_live(t, generation) {
                break;
            }
            self.expiries.pop();
        }
    }

    /// Heap order: the keys where they differ, else the full order on the nodes.
    fn less(&self, h: usize, a: Entry, b: Entry) -> bool {
        if a.key != b.key {
            return a.key < b.key;
        }
        let (x, y) = (self.nodes.get(a.id), self.nodes.get(b.id));
        // Equal keys mostly mean two slots with the same terms (one heap holds one seen
        // flag), which only their rank tells apart.
        let order = if x.terms == y.terms {
            x.rank.cmp(&y.rank)
        } else {
            self.order(a.id).cmp(&self.order(b.id))
        };
        if h & 1 == BEST {
            order == Ordering::Less
        } else {
            order == Ordering::Greater
        }
    }

    fn set(&mut self, h: usize, i: usize, e: Entry) {
        self.heaps[h][i] = e;
        self.nodes.get_mut(e.id).pos[h & 1] = i as u32;
    }

    fn sift_up(&mut self, h: usize, mut i: usize) {
        let e = self.heaps[h][i];
        while i > 0 {
            let parent = (i - 1) / 2;
            let p = self.heaps[h][parent];
            if !self.less(h, e, p) {
                break;
            }
            self.set(h, i, p);
            i = parent;
        }
        self.set(h, i, e);
    }

    fn sift_down(&mut self, h: usize, mut i: usize) {
        let n = self.heaps[h].len();
        let e = self.heaps[h][i];
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.less(h, self.heaps[h][r], self.heaps[h][l]) {
                r
            } else {
                l
            };
            let ce = self.heaps[h][c];
            if !self.less(h, ce, e) {
                break;
            }
            self.set(h, i, ce);
            i = c;
        }
        self.set(h, i, e);
    }

    /// Removes heap entry `i`. The hole moves down to a leaf along the better children (one
    /// comparison per level), the last entry fills it and climbs as far as it must, past `i`
    /// if it outranks `i`'s parent (the reference only moved it down: difference 5). The last entry
    /// comes from the bottom and mostly stays there, so this compares about half as often as
    /// putting it at `i` and sifting it down.
    fn heap_remove(&mut self, h: usize, i: usize) {
        let Some(last) = self.heaps[h].pop() else {
            return;
        };
        let n = self.heaps[h].len();
        if i >= n {
            return;
        }
        let mut hole = i;
        loop {
            let l = 2 * hole + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.less(h, self.heaps[h][r], self.heaps[h][l]) {
                r
            } else {
                l
            };
            let ce = self.heaps[h][c];
            self.set(h, hole, ce);
            hole = c;
        }
        self.set(h, hole, last);
        self.sift_up(h, hole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profitability_is_the_saturating_256_bit_product() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..20_000 {
            // Prices of every width: small, near 2^64, wide, and near U256::MAX.
            let price = match rng.u8(0..4) {
                0 => U256::from(rng.u64(..1 << 20)),
                1 => U256::from(u64::MAX - rng.u64(..4)),
                2 => U256::from(rng.u128(..)) << rng.usize(..140),
                _ => U256::MAX - U256::from(rng.u64(..)),
            };
            let mut it = item(1, 0, 1, 1, 1);
            it.price_per_byte_per_second = price;
            it.slot_size = rng.u64(..);
            it.duration = [rng.u64(..), rng.u64(..1 << 40)][rng.usize(..2)];
            let want = price
                .saturating_mul(U256::from(it.slot_size))
                .saturating_mul(U256::from(it.duration));
            assert_eq!(it.profitability(), want, "{it:?}");
        }
    }

    fn item(r: u8, idx: u64, price: u64, coll: u64, expiry: u64) -> SlotQueueItem {
        SlotQueueItem {
            request_id: RequestId([r; 32].into()),
            slot_index: idx,
            slot_size: 100,
            duration: 10,
            price_per_byte_per_second: U256::from(price),
            collateral: U256::from(coll),
            expiry,
            seen: false,
        }
    }

    #[test]
    fn coarse_profit_never_decreases_and_keys_agree_with_the_order() {
        let mut rng = fastrand::Rng::with_seed(9);
        let mut values: Vec<U256> = vec![U256::ZERO, U256::MAX];
        for bits in [1usize, 54, 55, 56, 57, 63, 64, 65, 128, 200, 255, 256] {
            let top = U256::from(1u8) << (bits - 1);
            values.extend([top - U256::from(1u8), top, top + U256::from(1u8)]);
        }
        for _ in 0..2_000 {
            let limbs = [rng.u64(..), rng.u64(..), rng.u64(..), rng.u64(..)];
            values.push(U256::from_limbs(limbs) >> rng.usize(0..256));
        }
        values.sort();
        for w in values.windows(2) {
            assert!(coarse(&w[0]) <= coarse(&w[1]), "{} {}", w[0], w[1]);
            assert!(coarse(&w[1]) < 1 << 62);
        }
        for _ in 0..2_000 {
            let a = values[rng.usize(..values.len())];
            let b = values[rng.usize(..values.len())];
            let (ka, kb) = (order_key(&a), order_key(&b));
            if ka != kb {
                // Lower key = higher priority: more profit.
                assert_eq!(ka.cmp(&kb), b.cmp(&a), "{a} / {b}");
            }
        }
    }

    #[test]
    fn pops_in_priority_order_and_keeps_invariants() {
        let mut q = SlotQueue::new(1000, 3).unwrap();
        q.start();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut all = Vec::new();
        for i in 0..300u64 {
            let it = item(
                (i % 7) as u8,
                i,
                rng.u64(1..20),
                rng.u64(1..5),
                rng.u64(100..200),
            );
            all.push(it.clone());
            q.push(it).unwrap();
        }
        q.validate().unwrap();
        for i in 0..50u64 {
            q.delete(RequestId([(i % 7) as u8; 32].into()), i * 3);
        }
        q.validate().unwrap();
        q.delete_request(RequestId([3; 32].into()));
        q.validate().unwrap();
        let mut prev: Option<SlotQueueItem> = None;
        while let Some(it) = q.pop() {
            if let Some(p) = &prev {
                assert_eq!(p.priority_cmp(&it), Ordering::Less);
            }
            prev = Some(it);
        }
        q.validate().unwrap();
    }

    #[test]
    fn request_len_counts_a_requests_queued_slots() {
        let mut q = SlotQueue::new(16, 1).unwrap();
        q.start();
        for idx in 0..3 {
            q.push(item(1, idx, 5, 5, 100)).unwrap();
        }
        q.push(item(2, 0, 5, 5, 100)).unwrap();
        let r1 = item(1, 0, 5, 5, 100).request_id;
        let r2 = item(2, 0, 5, 5, 100).request_id;
        let r3 = item(3, 0, 5, 5, 100).request_id;
        assert_eq!(
            (q.request_len(&r1), q.request_len(&r2), q.request_len(&r3)),
            (3, 1, 0)
        );
        q.delete(r1, 1).unwrap();
        assert_eq!(q.request_len(&r1), 2);
        q.delete_request(r1);
        assert_eq!(q.request_len(&r1), 0);
    }
}
