//! The engine's timer table: one min-heap of `(time, key)` entries for the sales' wake-ups,
//! the request watches and the ledger retries, and what happens when chain time passes.
//!
//! A timer that is no longer wanted (a sale ended or re-armed its wake-up, a watch ended)
//! is left in the heap and recognised when it comes up: a sale's entry counts only while it
//! is the sale's recorded wake-up, a watch's only while the request is watched. Stale
//! entries are dropped whenever they reach the root (so [`Engine::next_deadline`] is exact)
//! and the heap is rebuilt from the live entries when stale ones outnumber them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use super::{Command, Engine, Live};
use crate::market::{RequestId, SlotId};
use crate::sales::ledger::Ledger;
use crate::sales::sale::{Input, SlotRef};
use crate::sales::ChainTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    Sale(SlotRef),
    Watch(RequestId),
    /// Ledger writes that failed transiently (SQLite busy) are tried again.
    LedgerRetry,
}

impl<L: Ledger> Engine<L> {
    /// The earliest chain time at which [`EngineInput::Time`] has work (a sale's wake-up, a
    /// request watch, a ledger retry, or a queue item's expiry).
    ///
    /// [`EngineInput::Time`]: super::EngineInput::Time
    pub fn next_deadline(&self) -> Option<ChainTime> {
        let t = self.timers.peek().map(|Reverse((t, _))| *t);
        let q = self.queue.next_expiry();
        match (t, q) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(ChainTime)
    }

    /// Time passed (a new block, or the deadline): fires due wake-ups and watches, purges
    /// expired queue items, and feeds workers.
    pub(super) fn on_time(&mut self, now: u64) {
        self.now = now;
        if !self.rechecks.is_empty() {
            let again: Vec<_> = std::mem::take(&mut self.rechecks).into_iter().collect();
            self.recheck(again);
        }
        let purged = self.queue.purge_expired(now);
        self.stats.queue_expired += purged.len() as u64;
        // Sales due at the same time wake in slot id order (the order of the chain's ids, as
        // when the timers were keyed by them); the ids are computed here, once per wake-up.
        let mut due = std::mem::take(&mut self.due);
        let mut due_at = 0;
        let mut last = None;
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            // Equal entries come out one after the other: the first one fires.
            if last.replace((t, key)) == Some((t, key)) {
                continue;
            }
            if t != due_at {
                Self::wake_due(&mut due, &mut self.inbox);
                due_at = t;
            }
            match key {
                TimerKey::Sale(slot) => {
                    if let Some(live) = self.sales.get_mut(&slot) {
                        if live.wake == Some(t) {
                            live.wake = None;
                            due.push((slot.slot_id(), slot));
                        }
                    }
                }
                TimerKey::Watch(rid) => {
                    if self.watches.contains_key(&rid) {
                        self.commands.push_back(Command::ReadRequestState(rid));
                    }
                }
                TimerKey::LedgerRetry => self.retry_ledger(),
            }
        }
        Self::wake_due(&mut due, &mut self.inbox);
        self.due = due;
        self.settle_timers();
        self.run_inbox();
        self.dispatch();
    }

    /// Whether a timer entry is still wanted (see the module docs).
    fn timer_live(
        sales: &BTreeMap<SlotRef, Live>,
        watches: &HashMap<RequestId, u64>,
        t: u64,
        key: &TimerKey,
    ) -> bool {
        match key {
            TimerKey::Sale(slot) => sales.get(slot).is_some_and(|l| l.wake == Some(t)),
            TimerKey::Watch(rid) => watches.contains_key(rid),
            TimerKey::LedgerRetry => true,
        }
    }

    /// Drops stale timer entries from the root, and rebuilds the heap from its live entries
    /// when the stale ones outnumber them (plus slack, so small tables do not rebuild often).
    pub(super) fn settle_timers(&mut self) {
        let (sales, watches) = (&self.sales, &self.watches);
        if self.timers.len() > 2 * (sales.len() + watches.len()) + 64 {
            let mut live = std::mem::take(&mut self.timers).into_vec();
            live.retain(|Reverse((t, key))| Self::timer_live(sales, watches, *t, key));
            self.timers = BinaryHeap::from(live);
            return;
        }
        while let Some(Reverse((t, key))) = self.timers.peek() {
            if Self::timer_live(sales, watches, *t, key) {
                break;
            }
            self.timers.pop();
        }
    }

    /// Queues a wake-up for each sale in `due`, in slot id order, and empties it.
    fn wake_due(due: &mut Vec<(SlotId, SlotRef)>, inbox: &mut VecDeque<(SlotRef, Input)>) {
        due.sort_unstable();
        inbox.extend(due.drain(..).map(|(_, slot)| (slot, Input::Wake)));
    }
}
