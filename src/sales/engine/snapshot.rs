//! Views of the engine's state for the CLI and the API: the queue as `codex queue show`
//! prints it, and one summary per live sale for `codex sale list`. Built on demand from
//! the engine; they change nothing.

use super::Engine;
use crate::market::{RequestId, U256};
use crate::sales::ledger::{Ledger, ReservationId};
use crate::sales::queue::{PauseReason, SlotQueueItem};
use crate::sales::sale::SlotRef;

/// One queued item as `codex queue show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedItemView {
    /// The item (request, slot, size, duration, price, collateral, expiry, seen).
    pub item: SlotQueueItem,
    /// duration × price × slot size.
    pub profitability: U256,
}

/// `codex queue show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Items, best first.
    pub items: Vec<QueuedItemView>,
    /// Capacity.
    pub capacity: usize,
    /// Running.
    pub running: bool,
    /// Paused, and why.
    pub paused: Option<PauseReason>,
    /// Workers taken.
    pub workers_busy: usize,
    /// Workers free.
    pub workers_free: usize,
}

/// One line of `codex sale list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleSummary {
    /// The slot.
    pub slot: SlotRef,
    /// State name (`SaleProving`, ...).
    pub state: &'static str,
    /// The reservation, if any.
    pub reservation: Option<ReservationId>,
    /// Whether it holds a worker.
    pub holds_worker: bool,
    /// Chain time the sale began on this node.
    pub started: u64,
    /// Chain time it entered its current state.
    pub since: u64,
    /// Chain time of its next wake-up (a period, a deadline), if it has one.
    pub wake: Option<u64>,
    /// Whether it waits for the answer of a command (a chain read, a receipt, a download,
    /// a proof).
    pub waiting: bool,
    /// What its request pays for the whole slot: price per byte per second × slot size ×
    /// duration (None when not known, e.g. for a sale restored before its request was read).
    pub expected_payout: Option<U256>,
}

impl<L: Ledger> Engine<L> {
    /// `codex queue show`.
    pub fn queue_snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            items: self
                .queue
                .items_in_order()
                .into_iter()
                .map(|item| QueuedItemView {
                    profitability: item.profitability(),
                    item,
                })
                .collect(),
            capacity: self.queue.capacity(),
            running: self.queue.is_running(),
            paused: self.queue.paused(),
            workers_busy: self.queue.busy_workers(),
            workers_free: self.queue.max_workers() - self.queue.busy_workers(),
        }
    }

    /// The live sales of one request, in slot order: (slot index, state name). A range of
    /// the engine's map, so that asking it for a few requests costs their sales only.
    pub fn sales_of(&self, request_id: RequestId) -> Vec<(u64, &'static str)> {
        self.sales
            .range(SlotRef::new(request_id, 0)..=SlotRef::new(request_id, u64::MAX))
            .filter_map(|(k, l)| Some((k.slot_index, l.sale.as_ref()?.state_name())))
            .collect()
    }

    /// `codex sale list`, ordered by request and slot index (the order of the engine's map).
    pub fn sales_snapshot(&self) -> Vec<SaleSummary> {
        self.sales
            .values()
            .filter_map(|l| Some((l.sale.as_ref()?, l)))
            .map(|(s, l)| SaleSummary {
                slot: s.slot(),
                state: s.state_name(),
                reservation: s.reservation().map(|r| r.id),
                holds_worker: l.holds_worker,
                started: l.started,
                since: l.since,
                wake: l.wake,
                waiting: l.ticket != 0,
                expected_payout: s.base().map(|b| {
                    b.request
                        .ask
                        .price_per_byte_per_second
                        .saturating_mul(U256::from(b.request.ask.slot_size))
                        .saturating_mul(U256::from(b.request.ask.duration))
                }),
            })
            .collect()
    }
}
