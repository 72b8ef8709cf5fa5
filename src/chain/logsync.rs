//! The log synchroniser: the backfill planner and log cursor of the chain client, without
//! I/O. It plans bounded `eth_getLogs` ranges from the persisted cursor up to the head,
//! merges their answers with the logs of the Marketplace subscription, and hands each log
//! out once, in order, reporting the logs a reorganisation removed.
//!
//! Invariant: every log of a block at or below [`LogSync::processed`] has been handed out
//! exactly once (deduplicated by block hash and log index), in block order; the cursor only
//! moves once a block is fully covered by an `eth_getLogs` answer. Within a block the order
//! is the log index's, except that the subscription's logs of the block right after the
//! cursor go out as they come (the node reacts to a request without waiting for the range
//! that covers its block), so a log the subscription missed comes after them, when the
//! range answers.
use std::collections::{BTreeMap, HashMap, HashSet};

use alloy_primitives::{Address, B256};
use serde_json::Value;

use super::rpc::Log;

/// What [`LogSync`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// A log seen for the first time.
    Log(Log),
    /// A log that was handed out before and has been removed by a reorganisation.
    Removed(Log),
    /// Every log up to and including this block has been handed out: persist the cursor.
    Processed(u64),
}

/// An `eth_getLogs` range to query, inclusive at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRange {
    /// First block.
    pub from: u64,
    /// Last block.
    pub to: u64,
}

impl LogRange {
    /// The `eth_getLogs` parameters for this range.
    pub fn params(&self, address: Address) -> Value {
        serde_json::json!([{
            "address": address,
            "fromBlock": format!("{:#x}", self.from),
            "toBlock": format!("{:#x}", self.to),
        }])
    }
}

/// How many blocks below the cursor the deduplication memory reaches; a reorganisation deeper
/// than this is not expected on the chains codex talks to.
pub const REORG_WINDOW: u64 = 64;

/// The backfill planner and cursor.
///
/// Drive it with [`LogSync::on_head`] (from `eth_blockNumber` and `newHeads`),
/// [`LogSync::on_subscription_log`], and the answers to the ranges [`LogSync::next_range`]
/// plans. After a (re)connect call [`LogSync::on_disconnect`] first: the range in flight is
/// forgotten and planned again from the cursor.
#[derive(Debug)]
pub struct LogSync {
    /// The first block this sync was asked for; never rewound below.
    start_block: u64,
    next_block: u64,
    head: Option<u64>,
    to_block: Option<u64>,
    max_range: u64,
    in_flight: Option<LogRange>,
    /// Logs already handed out, by key, for deduplication and for reporting their removal.
    seen: HashMap<(B256, u64), Log>,
    /// Keys removed by a reorganisation before their log was handed out.
    removed_early: HashSet<(B256, u64)>,
    /// Subscription logs above the cursor, waiting for their block to be covered.
    buffered: BTreeMap<(u64, u64, B256), Log>,
}

impl LogSync {
    /// Starts at `from_block`; stops at `to_block` when given. `max_range` bounds each
    /// `eth_getLogs` query (at least 1).
    pub fn new(from_block: u64, to_block: Option<u64>, max_range: u64) -> LogSync {
        LogSync {
            start_block: from_block,
            next_block: from_block,
            head: None,
            to_block,
            max_range: max_range.max(1),
            in_flight: None,
            seen: HashMap::new(),
            removed_early: HashSet::new(),
            buffered: BTreeMap::new(),
        }
    }

    /// The last fully processed block, if any.
    pub fn processed(&self) -> Option<u64> {
        self.next_block.checked_sub(1)
    }

    /// The highest head seen.
    pub fn head(&self) -> Option<u64> {
        self.head
    }

    /// Whether everything up to `to_block` has been processed (never, without a `to_block`).
    pub fn is_done(&self) -> bool {
        match self.to_block {
            Some(to) => self.next_block > to,
            None => false,
        }
    }

    /// The connection dropped: the range in flight will never be answered, and the head is
    /// known again only from the next `eth_blockNumber` or `newHeads` (the chain may have
    /// gone back meanwhile, and a range beyond its head is refused).
    pub fn on_disconnect(&mut self) {
        self.in_flight = None;
        self.head = None;
    }

    /// Moves the cursor back to `block` (within [`REORG_WINDOW`] of it, and not below the
    /// first block): the driver saw a reorganisation this sync could not (heads it missed
    /// while disconnected). The blocks are queried again; deduplication keeps unchanged
    /// logs from being handed out twice, and logs that are gone are reported removed.
    pub fn rewind(&mut self, block: u64) {
        let floor = self.next_block.saturating_sub(REORG_WINDOW);
        self.next_block = self.next_block.min(block.max(floor).max(self.start_block));
    }

    /// A head number from `eth_blockNumber` or `newHeads`. When `from_subscription` and the
    /// head is at or below the cursor, the chain was reorganised: the cursor moves back (within
    /// [`REORG_WINDOW`]) so that the replaced blocks are queried again; deduplication keeps the
    /// logs that did not change from being handed out twice, and logs handed out earlier that
    /// the new answer lacks are reported as [`SyncEvent::Removed`] (nodes such as anvil send no
    /// `removed: true` notifications of their own).
    ///
    /// An `eth_blockNumber` answer (not from the subscription) below the highest head seen
    /// lowers the head without moving the cursor: the chain went back (anvil's `evm_revert`
    /// rewinds without a notification), and a range planned up to the old head would be
    /// refused for good; the next subscription head at or below the cursor rewinds it.
    pub fn on_head(&mut self, number: u64, from_subscription: bool) {
        if from_subscription && number < self.next_block {
            let floor = self.next_block.saturating_sub(REORG_WINDOW);
            self.next_block = number.max(floor).max(self.start_block);
            self.head = Some(number);
            return;
        }
        self.head = Some(if from_subscription {
            self.head.map_or(number, |h| h.max(number))
        } else {
            number
        });
    }

    /// Plans the next `eth_getLogs` range, if one is due and none is in flight.
    pub fn next_range(&mut self) -> Option<LogRange> {
        if self.in_flight.is_some() {
            return None;
        }
        let mut top = self.head?;
        if let Some(to) = self.to_block {
            top = top.min(to);
        }
        if self.next_block > top {
            return None;
        }
        let to = top.min(self.next_block.saturating_add(self.max_range - 1));
        let range = LogRange {
            from: self.next_block,
            to,
        };
        self.in_flight = Some(range);
        Some(range)
    }

    /// The range in flight failed (error object, timeout); it will be planned again.
    pub fn on_range_failed(&mut self) {
        self.in_flight = None;
    }

    /// The answer to a planned range. Logs outside the range and `removed` logs are ignored;
    /// the rest, merged with buffered subscription logs of those blocks, are handed out in
    /// order, each key once, and the cursor moves to the end of the range. A log handed out
    /// earlier for a block of this range that the answer no longer contains (the range is
    /// queried again after a reorganisation) is reported as removed first.
    pub fn on_range(&mut self, range: LogRange, logs: Vec<Log>, out: &mut Vec<SyncEvent>) {
        if self.in_flight != Some(range) {
            return; // a stale answer from before a reconnect or rewind
        }
        self.in_flight = None;
        if range.from != self.next_block {
            return;
        }
        let mut batch: BTreeMap<(u64, u64, B256), Log> = BTreeMap::new();
        for log in logs {
            if log.removed || log.block_number < range.from || log.block_number > range.to {
                continue;
            }
            batch.insert((log.block_number, log.log_index, log.block_hash), log);
        }
        let keep = self.buffered.split_off(&(range.to + 1, 0, B256::ZERO));
        let covered = std::mem::replace(&mut self.buffered, keep);
        for (k, log) in covered {
            if log.block_number >= range.from {
                batch.entry(k).or_insert(log);
            }
        }
        let present: HashSet<(B256, u64)> = batch.values().map(Log::key).collect();
        self.remove_where(
            |l| {
                l.block_number >= range.from
                    && l.block_number <= range.to
                    && !present.contains(&l.key())
            },
            out,
        );
        for (_, log) in batch {
            self.emit(log, out);
        }
        self.next_block = range.to + 1;
        out.push(SyncEvent::Processed(range.to));
        self.prune();
    }

    /// Hands out `log` after reporting removed what went out for a block at its height with
    /// another hash: that block was replaced.
    fn emit_replacing(&mut self, log: Log, out: &mut Vec<SyncEvent>) {
        let (number, hash) = (log.block_number, log.block_hash);
        self.remove_where(|l| l.block_number == number && l.block_hash != hash, out);
        self.emit(log, out);
    }

    fn emit(&mut self, log: Log, out: &mut Vec<SyncEvent>) {
        let key = log.key();
        if self.seen.contains_key(&key) || self.removed_early.remove(&key) {
            return;
        }
        self.seen.insert(key, log.clone());
        out.push(SyncEvent::Log(log));
    }

    /// Reports every handed-out log matching `gone` as removed, in block and log-index order,
    /// and forgets it.
    fn remove_where(&mut self, gone: impl Fn(&Log) -> bool, out: &mut Vec<SyncEvent>) {
        let mut removed: Vec<Log> = self.seen.values().filter(|l| gone(l)).cloned().collect();
        removed.sort_by_key(|l| (l.block_number, l.log_index));
        for mut log in removed {
            self.seen.remove(&log.key());
            log.removed = true;
            out.push(SyncEvent::Removed(log));
        }
    }

    fn prune(&mut self) {
        let floor = self.next_block.saturating_sub(REORG_WINDOW);
        self.seen.retain(|_, l| l.block_number >= floor);
    }

    /// A log from the Marketplace subscription. A log of the block right after the cursor is
    /// handed out at once; logs of later blocks wait for every block before theirs to be
    /// covered by a range; a `removed` log that was handed out becomes
    /// [`SyncEvent::Removed`]; a new log at or below the cursor (a replacement block after a
    /// reorganisation) is handed out at once, after the removal of the logs handed out for an
    /// earlier block at the same height.
    pub fn on_subscription_log(&mut self, log: Log, out: &mut Vec<SyncEvent>) {
        let key = log.key();
        if log.removed {
            let buffered = self
                .buffered
                .remove(&(log.block_number, log.log_index, log.block_hash))
                .is_some();
            if self.seen.remove(&key).is_some() {
                out.push(SyncEvent::Removed(log));
            } else if !buffered {
                self.removed_early.insert(key);
            }
            return;
        }
        if let Some(to) = self.to_block {
            if log.block_number > to {
                return;
            }
        }
        if log.block_number >= self.next_block {
            // The next block to cover: every block before it has been handed out, so its
            // log goes out now instead of a round trip later, when the range answers. It stays
            // buffered, so that the range counts it as present (and hands it out no second
            // time); buffered logs of a replaced block at its height are dropped.
            if log.block_number == self.next_block {
                let (number, hash) = (log.block_number, log.block_hash);
                self.buffered.retain(|k, _| k.0 != number || k.2 == hash);
                self.emit_replacing(log.clone(), out);
            }
            self.buffered
                .insert((log.block_number, log.log_index, log.block_hash), log);
        } else {
            self.emit_replacing(log, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Bytes;

    fn log(block: u64, index: u64, hash_byte: u8) -> Log {
        Log {
            address: Address::repeat_byte(0x11),
            topics: vec![B256::repeat_byte(0x22)],
            data: Bytes::new(),
            block_hash: B256::repeat_byte(hash_byte),
            block_number: block,
            transaction_hash: B256::repeat_byte(0x33),
            transaction_index: 0,
            log_index: index,
            removed: false,
        }
    }

    fn logs_of(out: &[SyncEvent]) -> Vec<(u64, u64)> {
        out.iter()
            .filter_map(|e| match e {
                SyncEvent::Log(l) => Some((l.block_number, l.log_index)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backfill_in_bounded_ranges() {
        let mut s = LogSync::new(0, None, 1000);
        assert_eq!(s.next_range(), None, "nothing before a head is known");
        s.on_head(2500, false);
        let r1 = s.next_range().unwrap();
        assert_eq!(r1, LogRange { from: 0, to: 999 });
        assert_eq!(s.next_range(), None, "one range at a time");
        let mut out = vec![];
        s.on_range(r1, vec![log(5, 0, 1), log(3, 1, 2), log(3, 0, 2)], &mut out);
        assert_eq!(logs_of(&out), vec![(3, 0), (3, 1), (5, 0)]);
        assert_eq!(out.last(), Some(&SyncEvent::Processed(999)));
        assert_eq!(s.processed(), Some(999));
        let r2 = s.next_range().unwrap();
        assert_eq!(
            r2,
            LogRange {
                from: 1000,
                to: 1999
            }
        );
        out.clear();
        s.on_range(r2, vec![], &mut out);
        assert_eq!(out, vec![SyncEvent::Processed(1999)]);
        let r3 = s.next_range().unwrap();
        assert_eq!(
            r3,
            LogRange {
                from: 2000,
                to: 2500
            }
        );
        let p = r3.params(Address::ZERO);
        assert_eq!(p[0]["fromBlock"], "0x7d0");
        assert_eq!(p[0]["toBlock"], "0x9c4");
    }

    /// A rewind by the driver queries the blocks again and reports what is gone, within the
    /// window.
    #[test]
    fn a_rewind_queries_again_and_reports_what_is_gone() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_head(100, true);
        let r = s.next_range().unwrap();
        s.on_range(
            r,
            vec![log(5, 0, 5), log(90, 0, 90), log(95, 0, 95)],
            &mut out,
        );
        s.rewind(10);
        assert_eq!(s.processed(), Some(36), "no deeper than the window");
        out.clear();
        let r = s.next_range().unwrap();
        assert_eq!(r, LogRange { from: 37, to: 100 });
        s.on_range(r, vec![log(95, 0, 95)], &mut out);
        assert!(
            matches!(&out[..], [SyncEvent::Removed(l), SyncEvent::Processed(100)] if l.block_number == 90),
            "{out:?}"
        );
    }

    /// After `evm_revert` the chain is shorter than the cursor: `eth_blockNumber` on the
    /// reconnect lowers the head, so no range beyond the chain is asked for again, and the
    /// next subscription head rewinds the cursor and reports what the old branch had.
    #[test]
    fn a_chain_shorter_than_the_cursor_is_not_queried_beyond_its_head() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_head(6, true);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(6, 0, 6)], &mut out);
        s.on_head(7, true);
        assert_eq!(s.next_range(), Some(LogRange { from: 7, to: 7 }));
        // The range fails (the chain went back to 4): the link is dropped and made again.
        s.on_disconnect();
        s.on_head(4, false);
        assert_eq!(s.next_range(), None, "nothing beyond the chain's head");
        out.clear();
        s.on_head(5, true);
        let r = s.next_range().unwrap();
        assert_eq!(r, LogRange { from: 5, to: 5 });
        s.on_range(r, vec![], &mut out);
        s.on_head(6, true);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![], &mut out);
        assert!(
            matches!(&out[..], [SyncEvent::Processed(5), SyncEvent::Removed(l), SyncEvent::Processed(6)] if l.block_number == 6),
            "{out:?}"
        );
    }

    #[test]
    fn cursor_holds_when_a_range_fails_or_the_link_drops() {
        let mut s = LogSync::new(10, None, 5);
        s.on_head(20, false);
        let r = s.next_range().unwrap();
        s.on_range_failed();
        assert_eq!(s.processed(), Some(9));
        assert_eq!(s.next_range(), Some(r), "the same range again");
        s.on_disconnect();
        assert_eq!(s.next_range(), None, "the head is asked for again first");
        s.on_head(20, false);
        let again = s.next_range().unwrap();
        assert_eq!(again, r);
        // A stale answer for a range no longer in flight is ignored.
        let mut out = vec![];
        s.on_disconnect();
        s.on_range(r, vec![log(10, 0, 1)], &mut out);
        assert!(out.is_empty());
        assert_eq!(s.processed(), Some(9));
    }

    #[test]
    fn duplicates_across_sources_and_reconnects_are_dropped() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        // The subscription sees block 5 before the backfill covers it.
        s.on_subscription_log(log(5, 0, 5), &mut out);
        assert!(out.is_empty(), "held until its block is covered");
        s.on_head(5, true);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(5, 0, 5), log(4, 0, 4)], &mut out);
        assert_eq!(logs_of(&out), vec![(4, 0), (5, 0)]);
        out.clear();
        // After a reconnect the same block is queried again (say, the cursor was persisted
        // before the last range): nothing is handed out twice.
        s.on_subscription_log(log(5, 0, 5), &mut out);
        assert!(out.is_empty());
        s.on_disconnect();
        s.on_head(6, false);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(6, 0, 6)], &mut out);
        assert_eq!(logs_of(&out), vec![(6, 0)]);
    }

    #[test]
    fn a_log_of_the_next_block_goes_out_before_its_range() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_head(4, false);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![], &mut out);
        out.clear();
        // Caught up to block 4: block 5's logs go out as they come, block 6's wait.
        s.on_head(5, true);
        s.on_subscription_log(log(5, 0, 5), &mut out);
        s.on_subscription_log(log(6, 0, 6), &mut out);
        assert_eq!(out, vec![SyncEvent::Log(log(5, 0, 5))]);
        assert_eq!(s.processed(), Some(4), "the cursor waits for the range");
        out.clear();
        // The range hands out what the subscription missed (5/1), not 5/0 again.
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(5, 0, 5), log(5, 1, 5)], &mut out);
        assert_eq!(
            out,
            vec![SyncEvent::Log(log(5, 1, 5)), SyncEvent::Processed(5)]
        );
        out.clear();
        // A range that lacks the early log (a lagging node) does not report it removed.
        s.on_head(6, true);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![], &mut out);
        assert_eq!(
            out,
            vec![SyncEvent::Log(log(6, 0, 6)), SyncEvent::Processed(6)]
        );
    }

    #[test]
    fn an_early_log_of_a_replaced_block_is_removed_before_the_replacement() {
        let mut s = LogSync::new(5, None, 100);
        let mut out = vec![];
        s.on_subscription_log(log(5, 0, 5), &mut out);
        // Block 5 is replaced (anvil's evm_revert) before its range answered.
        s.on_subscription_log(log(5, 0, 0x55), &mut out);
        let mut gone = log(5, 0, 5);
        gone.removed = true;
        assert_eq!(
            out,
            vec![
                SyncEvent::Log(log(5, 0, 5)),
                SyncEvent::Removed(gone),
                SyncEvent::Log(log(5, 0, 0x55))
            ]
        );
        out.clear();
        s.on_head(5, false);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(5, 0, 0x55)], &mut out);
        assert_eq!(out, vec![SyncEvent::Processed(5)]);
    }

    #[test]
    fn an_early_log_removed_before_its_range_is_reported_once() {
        let mut s = LogSync::new(5, None, 100);
        let mut out = vec![];
        s.on_subscription_log(log(5, 0, 5), &mut out);
        let mut gone = log(5, 0, 5);
        gone.removed = true;
        s.on_subscription_log(gone.clone(), &mut out);
        assert_eq!(
            out,
            vec![SyncEvent::Log(log(5, 0, 5)), SyncEvent::Removed(gone)]
        );
        out.clear();
        s.on_head(5, false);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![], &mut out);
        assert_eq!(out, vec![SyncEvent::Processed(5)]);
    }

    #[test]
    fn subscription_logs_without_backfill_answer_are_not_lost() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_head(3, true);
        let r = s.next_range().unwrap();
        // The subscription delivers block 3 while eth_getLogs (served a moment earlier by a
        // lagging node) does not have it yet.
        s.on_subscription_log(log(3, 0, 3), &mut out);
        s.on_range(r, vec![], &mut out);
        assert_eq!(logs_of(&out), vec![(3, 0)]);
    }

    #[test]
    fn removals_and_reorgs() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_head(10, false);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(9, 0, 9), log(10, 0, 10)], &mut out);
        out.clear();
        // Block 10 is replaced by 10' with another hash.
        let mut gone = log(10, 0, 10);
        gone.removed = true;
        s.on_subscription_log(gone.clone(), &mut out);
        assert_eq!(out, vec![SyncEvent::Removed(gone.clone())]);
        out.clear();
        // The removal arriving twice is reported once.
        s.on_subscription_log(gone, &mut out);
        assert!(out.is_empty());
        // newHeads at 10 again: the cursor moves back and block 10 is queried again.
        s.on_head(10, true);
        assert_eq!(s.processed(), Some(9));
        let r = s.next_range().unwrap();
        assert_eq!(r, LogRange { from: 10, to: 10 });
        s.on_range(r, vec![log(10, 0, 0xa0), log(10, 1, 0xa0)], &mut out);
        assert_eq!(logs_of(&out), vec![(10, 0), (10, 1)]);
        // A deep head rewind is bounded by the reorg window.
        let mut deep = LogSync::new(1, None, 1000);
        deep.on_head(500, false);
        let r = deep.next_range().unwrap();
        deep.on_range(r, vec![], &mut vec![]);
        deep.on_head(1, true);
        assert_eq!(deep.processed(), Some(500 - REORG_WINDOW));
    }

    #[test]
    fn replaced_blocks_report_their_logs_removed_without_removed_notifications() {
        // anvil announces a reorganisation only through newHeads.
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_head(10, false);
        let r = s.next_range().unwrap();
        s.on_range(
            r,
            vec![log(9, 0, 9), log(10, 0, 10), log(10, 1, 10)],
            &mut out,
        );
        out.clear();
        // Blocks 9 and 10 are replaced; the new 9 has no logs, the new 10 one log.
        s.on_head(9, true);
        let r = s.next_range().unwrap();
        assert_eq!(r, LogRange { from: 9, to: 9 });
        s.on_range(r, vec![], &mut out);
        let mut gone = log(9, 0, 9);
        gone.removed = true;
        assert_eq!(out, vec![SyncEvent::Removed(gone), SyncEvent::Processed(9)]);
        out.clear();
        s.on_head(10, true);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(10, 0, 0xb0)], &mut out);
        let removed: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                SyncEvent::Removed(l) => Some((l.block_number, l.log_index, l.removed)),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec![(10, 0, true), (10, 1, true)]);
        assert_eq!(logs_of(&out), vec![(10, 0)]);
        assert!(
            matches!(out[0], SyncEvent::Removed(_)),
            "removals come before the replacement: {out:?}"
        );
        // Querying the same blocks again changes nothing.
        out.clear();
        s.on_head(9, true);
        while let Some(r) = s.next_range() {
            s.on_range(r, vec![log(10, 0, 0xb0)], &mut out);
        }
        assert!(logs_of(&out).is_empty(), "{out:?}");
        assert!(!out.iter().any(|e| matches!(e, SyncEvent::Removed(_))));
    }

    #[test]
    fn a_replacement_log_below_the_cursor_removes_the_old_block_first() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_head(5, false);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![log(4, 0, 4), log(5, 0, 5)], &mut out);
        out.clear();
        // The subscription delivers the new block 5 before its header.
        s.on_subscription_log(log(5, 0, 0x55), &mut out);
        let mut gone = log(5, 0, 5);
        gone.removed = true;
        assert_eq!(
            out,
            vec![SyncEvent::Removed(gone), SyncEvent::Log(log(5, 0, 0x55))]
        );
        // A late log of the same block is just a new log; block 4 is untouched.
        out.clear();
        s.on_subscription_log(log(5, 1, 0x55), &mut out);
        assert_eq!(out, vec![SyncEvent::Log(log(5, 1, 0x55))]);
        s.on_subscription_log(log(4, 0, 4), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn removal_before_backfill_drops_the_log() {
        let mut s = LogSync::new(1, None, 100);
        let mut out = vec![];
        s.on_subscription_log(log(4, 0, 4), &mut out);
        let mut gone = log(4, 0, 4);
        gone.removed = true;
        s.on_subscription_log(gone.clone(), &mut out);
        let mut gone2 = log(4, 1, 4);
        gone2.removed = true;
        s.on_subscription_log(gone2, &mut out);
        s.on_head(4, false);
        let r = s.next_range().unwrap();
        // A lagging getLogs still lists the removed log 4/1: it is not handed out.
        s.on_range(r, vec![log(4, 1, 4)], &mut out);
        assert!(logs_of(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn to_block_bounds_the_sync() {
        let mut s = LogSync::new(0, Some(1500), 1000);
        s.on_head(5000, false);
        let r = s.next_range().unwrap();
        s.on_range(r, vec![], &mut vec![]);
        let r = s.next_range().unwrap();
        assert_eq!(
            r,
            LogRange {
                from: 1000,
                to: 1500
            }
        );
        let mut out = vec![];
        s.on_subscription_log(log(1600, 0, 1), &mut out);
        s.on_range(r, vec![log(1500, 0, 1), log(1501, 0, 1)], &mut out);
        assert_eq!(logs_of(&out), vec![(1500, 0)]);
        assert!(s.is_done());
        assert_eq!(s.next_range(), None);
    }
}
