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
//! An item's `Place` holds these fields in this order (and the slot index after them, which
//! never decides: the rank already tells a request's slots apart), so its derived `Ord` is
//! the queue order.
//!
//! # Structure
//! Three ordered collections of the standard library, each sorted as one operation needs it:
//! - `items`: every queued item by its identity `(requestId, slotIndex)`, so that a request's
//!   items are one range (duplicate check, `get`, delete by slot and by request);
//! - `order`: the items' places; the first is the next item to process, the last the item a
//!   full queue evicts (rule 1 puts the seen items last, so that is the worst seen item while
//!   any is queued);
//! - `expiries`: `(expiry, requestId, slotIndex)`, the first is the next to expire.
//!
//! Each operation costs O(log n) for each item it adds or removes; clearing the seen flags
//! sorts the queue again, O(n log n).
//!
//! Invariant (checked by [`SlotQueue::validate`] in tests): the three collections hold the
//! same items, and `len() <= capacity()`.
//!
//! Differences 5–9 from the reference (`docs/sales.md#differences-from-the-reference`):
//! duplicate checks, deletes and finding a request's items are not linear scans; a full queue
//! evicts the lowest-priority item (or refuses the pushed one) and says which; clearing seen
//! flags sorts the queue again; expired items are purged by time; requests with more than
//! 65,535 slots are refused, not wrapped.
//!
//! Pure: `now` and the random generator are parameters.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::market::{Ask, RequestId, U256};

/// Default number of items a queue holds (`--queue-size`), as in the reference.
pub const DEFAULT_CAPACITY: usize = 128;
/// Default number of slots prepared at once (`--max-workers`), as in the reference.
pub const DEFAULT_MAX_WORKERS: usize = 3;
/// The largest capacity [`SlotQueue::new`] accepts.
pub const MAX_CAPACITY: usize = (u32::MAX - 1) as usize;
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
    pub fn expand(
        request_id: RequestId,
        ask: &Ask,
        expiry: u64,
        collateral: U256,
        rng: &mut fastrand::Rng,
    ) -> Result<Vec<SlotQueueItem>, QueueError> {
        if ask.slots == 0 || ask.slots > MAX_SLOTS_PER_REQUEST {
            return Err(QueueError::SlotsOutOfRange { slots: ask.slots });
        }
        // Shuffle the indexes, not the 136-byte items.
        let mut order: Vec<u64> = (0..ask.slots).collect();
        rng.shuffle(&mut order);
        Ok(order
            .into_iter()
            .map(|slot_index| SlotQueueItem {
                request_id,
                slot_index,
                slot_size: ask.slot_size,
                duration: ask.duration,
                price_per_byte_per_second: ask.price_per_byte_per_second,
                collateral,
                expiry,
                seen: false,
            })
            .collect())
    }

    /// The order of a queue with salt 0 (a new queue's): `Less` means `self` has priority
    /// over `other`. [`SlotQueue::priority_cmp`] gives any queue's order.
    pub fn priority_cmp(&self, other: &SlotQueueItem) -> Ordering {
        self.place(0).cmp(&other.place(0))
    }

    fn place(&self, salt: u64) -> Place {
        Place {
            seen: self.seen,
            profit: Reverse(self.profitability()),
            collateral: self.collateral,
            expiry: Reverse(self.expiry),
            request_id: self.request_id,
            rank: slot_rank(&self.request_id, self.slot_index, salt),
            slot_index: self.slot_index,
        }
    }
}

/// An item's place in the queue order: the fields of rules 1–5 in the order they are
/// compared, so that the derived `Ord` is the queue order (smaller = higher priority). The
/// slot index comes last to find the item; it never decides, since the rank already tells a
/// request's slots apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    seen: bool,
    profit: Reverse<U256>,
    collateral: U256,
    expiry: Reverse<u64>,
    request_id: RequestId,
    rank: u64,
    slot_index: u64,
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

/// The slot queue with its worker budget. See the module docs.
#[derive(Debug, Clone)]
pub struct SlotQueue {
    /// Every queued item by its identity.
    items: BTreeMap<(RequestId, u64), SlotQueueItem>,
    /// The items' places in the queue order, best first.
    order: BTreeSet<Place>,
    /// `(expiry, request, slot)` of every item, soonest first.
    expiries: BTreeSet<(u64, RequestId, u64)>,
    /// Rule 5's salt (see the module docs).
    salt: u64,
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
            items: BTreeMap::new(),
            order: BTreeSet::new(),
            expiries: BTreeSet::new(),
            salt: 0,
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
        a.place(self.salt).cmp(&b.place(self.salt))
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
        self.items.len()
    }
    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
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
    /// Whether any slot of the request is queued. O(log n).
    pub fn has_request(&self, request_id: &RequestId) -> bool {
        self.request_slots(*request_id).next().is_some()
    }

    /// True when an item with this identity is queued.
    pub fn contains(&self, request_id: RequestId, slot_index: u64) -> bool {
        self.items.contains_key(&(request_id, slot_index))
    }
    /// The queued item with this identity.
    pub fn get(&self, request_id: RequestId, slot_index: u64) -> Option<&SlotQueueItem> {
        self.items.get(&(request_id, slot_index))
    }
    /// The item a worker would get next, without taking it.
    pub fn peek(&self) -> Option<&SlotQueueItem> {
        let best = self.order.first()?;
        self.get(best.request_id, best.slot_index)
    }

    /// Pushes one item. Refuses duplicates and pushes to a stopped queue. When the queue is
    /// full, evicts the lowest-priority item, or drops the pushed item if it ranks lowest;
    /// the outcome says which. Pushing an unseen item unpauses the queue (even if it is then
    /// dropped: the queue holds something better than it, so workers have work).
    pub fn push(&mut self, item: SlotQueueItem) -> Result<PushOutcome, QueueError> {
        if !self.running {
            return Err(QueueError::NotRunning);
        }
        if self.contains(item.request_id, item.slot_index) {
            return Err(QueueError::Duplicate {
                request_id: item.request_id,
                slot_index: item.slot_index,
            });
        }
        if !item.seen {
            self.paused = None;
        }
        let place = item.place(self.salt);
        let mut outcome = PushOutcome::Queued;
        if self.len() >= self.capacity {
            let Some(&worst) = self.order.last() else {
                unreachable!("a full queue has a last item");
            };
            if place > worst {
                return Ok(PushOutcome::Dropped(item));
            }
            outcome = PushOutcome::QueuedEvicting(self.remove(worst.request_id, worst.slot_index));
        }
        self.order.insert(place);
        self.expiries
            .insert((item.expiry, item.request_id, item.slot_index));
        self.items.insert(item.key(), item);
        Ok(outcome)
    }

    /// Takes the highest-priority item (no worker accounting; see [`Self::next_for_worker`]).
    pub fn pop(&mut self) -> Option<SlotQueueItem> {
        let best = *self.order.first()?;
        Some(self.remove(best.request_id, best.slot_index))
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
        let Some(&best) = self.order.first() else {
            return Next::Empty;
        };
        // Rule 1: the best item is seen only when every item is.
        if best.seen {
            self.paused = Some(PauseReason::OnlySeenItems);
            return Next::Paused(PauseReason::OnlySeenItems);
        }
        self.busy_workers += 1;
        Next::Item(self.remove(best.request_id, best.slot_index))
    }

    /// Gives a worker back (the slot was filled or its sale ended).
    pub fn release_worker(&mut self) {
        self.busy_workers = self.busy_workers.saturating_sub(1);
    }

    /// Removes one slot's item; returns it when it was queued. O(log n).
    pub fn delete(&mut self, request_id: RequestId, slot_index: u64) -> Option<SlotQueueItem> {
        let item = self.items.remove(&(request_id, slot_index))?;
        self.order.remove(&item.place(self.salt));
        self.expiries.remove(&(item.expiry, request_id, slot_index));
        Some(item)
    }

    /// Removes every item of a request; returns how many. O(k log n): the request's items
    /// are one range of the map, taken out in one walk.
    pub fn delete_request(&mut self, request_id: RequestId) -> usize {
        let mut n = 0;
        let range = (request_id, 0)..=(request_id, u64::MAX);
        for ((_, slot_index), item) in self.items.extract_if(range, |_, _| true) {
            self.order.remove(&item.place(self.salt));
            self.expiries.remove(&(item.expiry, request_id, slot_index));
            n += 1;
        }
        n
    }

    /// Removes every item whose expiry is at or before `now` (it cannot be filled in time)
    /// and returns them. O(k log n).
    pub fn purge_expired(&mut self, now: u64) -> Vec<SlotQueueItem> {
        let mut out = Vec::new();
        while let Some(&(expiry, request_id, slot_index)) = self.expiries.first() {
            if expiry > now {
                break;
            }
            out.push(self.remove(request_id, slot_index));
        }
        out
    }

    /// The earliest expiry of a queued item (when [`Self::purge_expired`] has work next).
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|&(expiry, _, _)| expiry)
    }

    /// Marks every item unseen and sorts the queue again. O(n log n), O(1) when no item is
    /// seen.
    pub fn clear_seen_flags(&mut self) {
        // Rule 1: some item is seen exactly when the last one is.
        if !self.order.last().is_some_and(|worst| worst.seen) {
            return;
        }
        for item in self.items.values_mut() {
            item.seen = false;
        }
        self.order = self.items.values().map(|it| it.place(self.salt)).collect();
    }

    /// The queued items in priority order (for `codex queue show`). O(n log n).
    pub fn items_in_order(&self) -> Vec<SlotQueueItem> {
        self.order
            .iter()
            .filter_map(|p| self.get(p.request_id, p.slot_index))
            .cloned()
            .collect()
    }

    /// Checks that the three collections hold the same items and that the queue is within
    /// its capacity; Err describes the first violation.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.items.len();
        if self.order.len() != n || self.expiries.len() != n {
            return Err(format!(
                "{n} items, {} places, {} expiries",
                self.order.len(),
                self.expiries.len()
            ));
        }
        if n > self.capacity {
            return Err(format!("{n} items exceed capacity {}", self.capacity));
        }
        // With equal sizes, every item found in both sets means the sets hold exactly the
        // items (each entry names one item).
        for (key, item) in &self.items {
            if item.key() != *key {
                return Err(format!("item {:?} is filed under {key:?}", item.key()));
            }
            if !self.order.contains(&item.place(self.salt)) {
                return Err(format!("item {key:?} has no place in the order"));
            }
            if !self.expiries.contains(&(item.expiry, key.0, key.1)) {
                return Err(format!("item {key:?} has no expiry entry"));
            }
        }
        Ok(())
    }

    /// The slot indexes of a request's queued items, ascending.
    fn request_slots(&self, request_id: RequestId) -> impl Iterator<Item = u64> + '_ {
        self.items
            .range((request_id, 0)..=(request_id, u64::MAX))
            .map(|(&(_, slot_index), _)| slot_index)
    }

    /// Removes the item that an entry of `order` or `expiries` names.
    fn remove(&mut self, request_id: RequestId, slot_index: u64) -> SlotQueueItem {
        match self.delete(request_id, slot_index) {
            Some(item) => item,
            None => unreachable!("slot {slot_index} of {request_id} is listed but not queued"),
        }
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
    fn pops_in_priority_order_and_keeps_invariants() {
        let mut q = SlotQueue::new(1000, 3).unwrap();
        q.start();
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..300u64 {
            let it = item(
                (i % 7) as u8,
                i,
                rng.u64(1..20),
                rng.u64(1..5),
                rng.u64(100..200),
            );
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
}
