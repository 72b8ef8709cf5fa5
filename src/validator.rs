//! The validator role (`codex run --validator`): it watches filled slots and, after each
//! proof period, marks the proofs their hosts missed with `markProofAsMissing`, which
//! slashes the host and pays the validator a reward (`docs/validator.md`).
//!
//! [`Validator`] is pure: it is fed what the chain says (slots filled and freed, requests
//! ended, new heads with their timestamps, the answers to the views it asked for, the
//! outcomes of its transactions) and is polled for what it wants done
//! ([`ValidatorCommand`]: a view to ask, a mark to send). It reads no clock, opens no socket
//! and sends nothing itself; chain time comes in with [`Validator::on_time`].
//!
//! Invariants:
//! - only slots of its group are known (`uint256(slotId) mod groups == index`);
//! - at most `max_slots` slots are watched (0: no limit); a slot seen filled is a
//!   *candidate* until `slotState` confirms it is still Filled (old fills from a backfill or
//!   the history read at a restart are mostly over), and only then counts;
//! - period `p` is checked once, on the first head whose time lies inside its validation
//!   window (`periodEnd(p) < now < periodEnd(p) + timeout`), for every slot watched then;
//!   a slot admitted while the window is open is checked for `p` when it is admitted;
//! - a (slot, period) pair is asked and marked at most once, except after a transient
//!   failure, which is tried again on a later head while the window is open, at most
//!   [`MAX_ATTEMPTS`] times in all. A refusal by the contract is final.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use alloy_primitives::U256;

use crate::market::errors::MarketError;
use crate::market::{short, RequestId, SlotId, SlotState};

/// Default of `--validator-max-slots`.
pub const DEFAULT_MAX_SLOTS: usize = 1000;
/// Attempts per (slot, period) and per slot state read when the failures are transient.
pub const MAX_ATTEMPTS: u8 = 3;
/// The most periods one head may open for checking (a validation window longer than many
/// periods would be a strange configuration; the checks stay bounded anyway).
const MAX_PERIODS_PER_HEAD: u64 = 8;

/// How validators split the slot id space: this one takes the slots whose id, read as a
/// 256-bit big-endian number, leaves remainder `index` when divided by `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups {
    count: u16,
    index: u16,
}

/// A group setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupsError {
    /// The number of groups is outside 2..=65535.
    #[error("must be from 2 to 65535")]
    Count,
    /// The index is not below the number of groups.
    #[error("must be less than the number of groups ({0})")]
    Index(u16),
}

impl Groups {
    /// `count` groups (2..=65535), of which this validator takes number `index` (< count).
    pub fn new(count: u64, index: u64) -> Result<Groups, GroupsError> {
        let count = u16::try_from(count)
            .ok()
            .filter(|c| *c >= 2)
            .ok_or(GroupsError::Count)?;
        let index = u16::try_from(index)
            .ok()
            .filter(|i| *i < count)
            .ok_or(GroupsError::Index(count))?;
        Ok(Groups { count, index })
    }

    /// The number of groups.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// This validator's group.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Whether `slot` belongs to this group.
    pub fn contains(&self, slot: SlotId) -> bool {
        U256::from_be_bytes(slot.0 .0) % U256::from(self.count) == U256::from(self.index)
    }
}

/// What the operator chose (`--validator-max-slots`, `--validator-groups`,
/// `--validator-group-index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatorOptions {
    /// The most slots watched at once; 0: no limit.
    pub max_slots: usize,
    /// The group of the slot id space to watch; None: every slot.
    pub groups: Option<Groups>,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        ValidatorOptions {
            max_slots: DEFAULT_MAX_SLOTS,
            groups: None,
        }
    }
}

/// The options plus what the Marketplace's configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// The operator's options.
    pub options: ValidatorOptions,
    /// Proof period, seconds (`proofs.period`).
    pub period: u64,
    /// How long after a period's end its missed proofs can be marked (`proofs.timeout`).
    pub timeout: u64,
}

/// What the validator wants done. Each is answered with the method it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatorCommand {
    /// Read `slotState(slot)`; answer with [`Validator::on_slot_state`].
    ReadSlotState(SlotId),
    /// Ask `canMarkProofAsMissing(slot, period)` (at `pending`); answer with
    /// [`Validator::on_can_mark`].
    CanMark {
        /// The slot.
        slot: SlotId,
        /// The period that ended.
        period: u64,
    },
    /// Send `markProofAsMissing(slot, period)`; answer with [`Validator::on_marked`].
    Mark {
        /// The slot.
        slot: SlotId,
        /// The period whose proof is missing.
        period: u64,
    },
}

/// Why a view or a mark did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The contract refused, with this reason (the view or the gas estimate reverted).
    /// Final.
    Contract(MarketError),
    /// The mark was mined and reverted (another validator's mark in the same block, most
    /// likely). Final.
    RevertedOnChain(String),
    /// The question or the transaction did not get through (connection, timeout, the node
    /// refused the transaction). Tried again while the window lasts.
    Transient(String),
}

/// Counts for `codex status` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidatorStats {
    /// Slots watched now.
    pub watched: usize,
    /// Slots seen filled whose state is being read.
    pub candidates: usize,
    /// Proofs marked missing (mined marks).
    pub marks: u64,
    /// Marks that came too late (`ValidationTimedOut`).
    pub too_late: u64,
    /// Proofs another validator had marked first.
    pub marked_by_others: u64,
    /// Slots not watched because `max_slots` were watched already.
    pub refused_full: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Seen filled; `slotState` asked (with the attempts made).
    Candidate(u8),
    /// Confirmed Filled: checked after every period.
    Watched,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    request: RequestId,
    known: Known,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Checking,
    Marking,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    step: Step,
    tries: u8,
}

/// The validator. See the module docs.
#[derive(Debug)]
pub struct Validator {
    cfg: ValidatorConfig,
    /// The latest head's timestamp.
    now: u64,
    slots: BTreeMap<SlotId, Slot>,
    by_request: HashMap<RequestId, HashSet<SlotId>>,
    watched: usize,
    /// The last period whose checks were started.
    checked: Option<u64>,
    /// (slot, period) pairs being checked or marked.
    attempts: HashMap<(SlotId, u64), Attempt>,
    /// Pairs whose last attempt failed transiently, to try again on the next head.
    retry_marks: Vec<(SlotId, u64)>,
    /// Candidates whose state read failed transiently.
    retry_reads: Vec<SlotId>,
    out: VecDeque<ValidatorCommand>,
    stats: ValidatorStats,
}

impl Validator {
    /// A validator that knows no slot yet.
    pub fn new(cfg: ValidatorConfig) -> Validator {
        Validator {
            cfg: ValidatorConfig {
                period: cfg.period.max(1),
                ..cfg
            },
            now: 0,
            slots: BTreeMap::new(),
            by_request: HashMap::new(),
            watched: 0,
            checked: None,
            attempts: HashMap::new(),
            retry_marks: Vec::new(),
            retry_reads: Vec::new(),
            out: VecDeque::new(),
            stats: ValidatorStats::default(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ValidatorConfig {
        &self.cfg
    }

    /// The counts.
    pub fn stats(&self) -> ValidatorStats {
        ValidatorStats {
            watched: self.watched,
            candidates: self.slots.len() - self.watched,
            ..self.stats
        }
    }

    /// The slots watched, in id order.
    pub fn watched(&self) -> impl Iterator<Item = SlotId> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| s.known == Known::Watched)
            .map(|(id, _)| *id)
    }

    /// The next thing to do, if any. Questions about slots that were dropped since they
    /// were queued are skipped.
    pub fn poll(&mut self) -> Option<ValidatorCommand> {
        while let Some(c) = self.out.pop_front() {
            let live = match c {
                ValidatorCommand::ReadSlotState(slot) => self
                    .slots
                    .get(&slot)
                    .is_some_and(|s| matches!(s.known, Known::Candidate(_))),
                ValidatorCommand::CanMark { slot, period } => {
                    let watched = self.is_watched(slot);
                    if !watched {
                        self.attempts.remove(&(slot, period));
                    }
                    watched
                }
                ValidatorCommand::Mark { .. } => true,
            };
            if live {
                return Some(c);
            }
        }
        None
    }

    /// `SlotFilled(request, index)`, live or from a backfill or the history read at start.
    pub fn slot_filled(&mut self, request: RequestId, index: u64) {
        let slot = SlotId::of(request, index);
        if self.cfg.options.groups.is_some_and(|g| !g.contains(slot)) {
            log::trace!(slot:% = slot; "slot {} is in another validator group", short(&slot));
            return;
        }
        if self.slots.contains_key(&slot) {
            return;
        }
        if self.full() {
            self.refuse_full(slot);
            return;
        }
        self.slots.insert(
            slot,
            Slot {
                request,
                known: Known::Candidate(1),
            },
        );
        self.by_request.entry(request).or_default().insert(slot);
        self.out.push_back(ValidatorCommand::ReadSlotState(slot));
    }

    /// `SlotFreed(request, index)`: the host is gone (a forced free); a repair's fill
    /// brings the slot back.
    pub fn slot_freed(&mut self, request: RequestId, index: u64) {
        let slot = SlotId::of(request, index);
        if self.remove(slot) {
            log::debug!(slot:% = slot; "slot {} was freed: not watched any more", short(&slot));
        }
    }

    /// `RequestFailed` or `RequestCancelled`: none of its slots needs proofs any more.
    pub fn request_ended(&mut self, request: RequestId) {
        let Some(slots) = self.by_request.get(&request) else {
            return;
        };
        let slots: Vec<SlotId> = slots.iter().copied().collect();
        for s in &slots {
            self.remove(*s);
        }
        log::debug!(
            request:% = request;
            "request {} ended: {} of its slots not watched any more",
            short(&request),
            slots.len()
        );
    }

    /// A new head with timestamp `now`: retries what failed transiently, then starts the
    /// checks of every period whose validation window has just opened.
    pub fn on_time(&mut self, now: u64) {
        self.now = self.now.max(now);
        for slot in std::mem::take(&mut self.retry_reads) {
            if let Some(Slot {
                known: Known::Candidate(tries),
                ..
            }) = self.slots.get_mut(&slot)
            {
                *tries += 1;
                self.out.push_back(ValidatorCommand::ReadSlotState(slot));
            }
        }
        for (slot, period) in std::mem::take(&mut self.retry_marks) {
            if self.window_open(period) && self.is_watched(slot) {
                if let Some(a) = self.attempts.get_mut(&(slot, period)) {
                    a.tries += 1;
                    a.step = Step::Checking;
                    self.out
                        .push_back(ValidatorCommand::CanMark { slot, period });
                }
            } else if self.attempts.remove(&(slot, period)).is_some() {
                log::info!(
                    slot:% = slot;
                    "slot {}: gave up marking period {period}: its validation window closed",
                    short(&slot)
                );
            }
        }
        let Some((first, last)) = self.open_periods() else {
            return;
        };
        let first = match self.checked {
            Some(c) => first.max(c + 1),
            None => last,
        };
        if first > last {
            return;
        }
        self.checked = Some(last);
        let slots: Vec<SlotId> = self.watched().collect();
        if !slots.is_empty() {
            log::debug!(
                "periods {first}..={last} ended: checking {} slots for missed proofs",
                slots.len()
            );
        }
        for period in first..=last {
            for slot in &slots {
                self.check(*slot, period);
            }
        }
    }

    /// The answer to [`ValidatorCommand::ReadSlotState`].
    pub fn on_slot_state(&mut self, slot: SlotId, state: Result<SlotState, String>) {
        let Some(Slot {
            known: Known::Candidate(tries),
            ..
        }) = self.slots.get(&slot).copied()
        else {
            return;
        };
        match state {
            Ok(SlotState::Filled) => {
                if self.full() {
                    self.remove(slot);
                    self.refuse_full(slot);
                    return;
                }
                if let Some(s) = self.slots.get_mut(&slot) {
                    s.known = Known::Watched;
                }
                self.watched += 1;
                log::debug!(slot:% = slot; "watching slot {}", short(&slot));
                // A window that opened before the slot was confirmed still applies to it.
                if let (Some((first, last)), Some(checked)) = (self.open_periods(), self.checked) {
                    for period in first..=last.min(checked) {
                        self.check(slot, period);
                    }
                }
            }
            Ok(other) => {
                self.remove(slot);
                log::trace!(slot:% = slot; "slot {} is {other:?}, not Filled: not watched", short(&slot));
            }
            Err(e) if tries < MAX_ATTEMPTS => {
                log::debug!(slot:% = slot; "slot {}: reading its state failed ({e}); trying again", short(&slot));
                self.retry_reads.push(slot);
            }
            Err(e) => {
                self.remove(slot);
                log::warn!(slot:% = slot; "slot {}: its state could not be read ({e}): not watched", short(&slot));
            }
        }
    }

    /// The answer to [`ValidatorCommand::CanMark`]: Ok when the proof can be marked.
    pub fn on_can_mark(&mut self, slot: SlotId, period: u64, answer: Result<(), Refusal>) {
        let Some(a) = self.attempts.get_mut(&(slot, period)) else {
            return;
        };
        if a.step != Step::Checking {
            return;
        }
        match answer {
            Ok(())
                if self
                    .slots
                    .get(&slot)
                    .is_some_and(|s| s.known == Known::Watched) =>
            {
                a.step = Step::Marking;
                log::debug!(slot:% = slot; "slot {}: the proof of period {period} is missing; marking it", short(&slot));
                self.out.push_back(ValidatorCommand::Mark { slot, period });
            }
            Ok(()) => {
                self.attempts.remove(&(slot, period));
            }
            Err(r) => self.failed(slot, period, r, "check"),
        }
    }

    /// The outcome of [`ValidatorCommand::Mark`]: Ok when the mark was mined.
    pub fn on_marked(&mut self, slot: SlotId, period: u64, outcome: Result<(), Refusal>) {
        match self.attempts.get(&(slot, period)) {
            Some(a) if a.step == Step::Marking => {}
            _ => return,
        }
        match outcome {
            Ok(()) => {
                self.attempts.remove(&(slot, period));
                self.stats.marks += 1;
                log::info!(
                    slot:% = slot, period = period;
                    "slot {}: marked the proof of period {period} as missing; its host is slashed",
                    short(&slot)
                );
            }
            Err(r) => self.failed(slot, period, r, "mark"),
        }
    }

    fn failed(&mut self, slot: SlotId, period: u64, r: Refusal, what: &str) {
        let s = short(&slot);
        match r {
            Refusal::Transient(e) => {
                let tries = self.attempts.get(&(slot, period)).map_or(0, |a| a.tries);
                if tries < MAX_ATTEMPTS && self.window_open(period) {
                    log::debug!(slot:% = slot; "slot {s}: the {what} for period {period} failed ({e}); trying again on the next block");
                    self.retry_marks.push((slot, period));
                } else {
                    self.attempts.remove(&(slot, period));
                    log::warn!(slot:% = slot; "slot {s}: the {what} for period {period} failed ({e}); giving up");
                }
            }
            Refusal::RevertedOnChain(e) => {
                self.attempts.remove(&(slot, period));
                self.stats.marked_by_others += 1;
                log::info!(slot:% = slot; "slot {s}: the mark for period {period} was mined but reverted ({e}); another validator was first");
            }
            Refusal::Contract(e) => {
                self.attempts.remove(&(slot, period));
                match e {
                    MarketError::SlotNotAcceptingProofs => {
                        self.remove(slot);
                        log::debug!(slot:% = slot; "slot {s} is no longer Filled: not watched any more");
                    }
                    MarketError::ProofNotMissing => {
                        log::trace!(slot:% = slot; "slot {s}: proven in period {period}");
                    }
                    MarketError::ProofNotRequired => {
                        log::debug!(slot:% = slot; "slot {s}: no proof was required in period {period} (at this block)");
                    }
                    MarketError::ProofAlreadyMarkedMissing => {
                        self.stats.marked_by_others += 1;
                        log::info!(slot:% = slot; "slot {s}: the missed proof of period {period} was already marked");
                    }
                    MarketError::ValidationTimedOut => {
                        self.stats.too_late += 1;
                        log::info!(slot:% = slot; "slot {s}: too late to mark period {period}: its validation window closed");
                    }
                    other => {
                        log::info!(slot:% = slot; "slot {s}: cannot mark period {period}: {other}");
                    }
                }
            }
        }
    }

    fn check(&mut self, slot: SlotId, period: u64) {
        if self.attempts.contains_key(&(slot, period)) {
            return;
        }
        self.attempts.insert(
            (slot, period),
            Attempt {
                step: Step::Checking,
                tries: 1,
            },
        );
        self.out
            .push_back(ValidatorCommand::CanMark { slot, period });
    }

    fn is_watched(&self, slot: SlotId) -> bool {
        self.slots
            .get(&slot)
            .is_some_and(|s| s.known == Known::Watched)
    }

    fn full(&self) -> bool {
        let max = self.cfg.options.max_slots;
        max > 0 && self.watched >= max
    }

    fn refuse_full(&mut self, slot: SlotId) {
        self.stats.refused_full += 1;
        log::debug!(
            slot:% = slot;
            "slot {} is not watched: {} slots are watched already (--validator-max-slots)",
            short(&slot),
            self.watched
        );
    }

    /// Forgets a slot; true when it was known.
    fn remove(&mut self, slot: SlotId) -> bool {
        let Some(s) = self.slots.remove(&slot) else {
            return false;
        };
        if s.known == Known::Watched {
            self.watched -= 1;
        }
        if let Some(set) = self.by_request.get_mut(&s.request) {
            set.remove(&slot);
            if set.is_empty() {
                self.by_request.remove(&s.request);
            }
        }
        true
    }

    /// End of period `p`: the start of `p + 1`.
    fn period_end(&self, p: u64) -> u64 {
        p.saturating_add(1).saturating_mul(self.cfg.period)
    }

    /// Whether `now` lies inside period `p`'s validation window: the contract accepts a
    /// mark when `periodEnd(p) < now < periodEnd(p) + timeout`.
    fn window_open(&self, p: u64) -> bool {
        let end = self.period_end(p);
        end < self.now && self.now < end.saturating_add(self.cfg.timeout)
    }

    /// The periods whose validation window contains `now`, as a range (first, last).
    fn open_periods(&self) -> Option<(u64, u64)> {
        let (now, period) = (self.now, self.cfg.period);
        // periodEnd(p) < now  ⟺  p ≤ (now − 1) / period − 1
        let last = now.checked_sub(1)?.checked_div(period)?.checked_sub(1)?;
        // now < periodEnd(p) + timeout  ⟺  (p + 1) × period > now − timeout
        let first = match now.checked_sub(self.cfg.timeout) {
            Some(x) => x / period,
            None => 0,
        };
        let first = first.max(last.saturating_sub(MAX_PERIODS_PER_HEAD - 1));
        (first <= last && self.window_open(last)).then_some((first, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: u64 = 120;
    const TIMEOUT: u64 = 30;

    fn validator(max_slots: usize, groups: Option<Groups>) -> Validator {
        Validator::new(ValidatorConfig {
            options: ValidatorOptions { max_slots, groups },
            period: PERIOD,
            timeout: TIMEOUT,
        })
    }

    fn rid(n: u8) -> RequestId {
        RequestId::from([n; 32])
    }

    fn drain(v: &mut Validator) -> Vec<ValidatorCommand> {
        std::iter::from_fn(|| v.poll()).collect()
    }

    /// Feeds a fill and answers its state read with Filled.
    fn watch(v: &mut Validator, request: RequestId, index: u64) -> SlotId {
        let slot = SlotId::of(request, index);
        v.slot_filled(request, index);
        let cmds = drain(v);
        assert_eq!(cmds, vec![ValidatorCommand::ReadSlotState(slot)]);
        v.on_slot_state(slot, Ok(SlotState::Filled));
        slot
    }

    fn can_marks(cmds: &[ValidatorCommand]) -> Vec<(SlotId, u64)> {
        cmds.iter()
            .filter_map(|c| match c {
                ValidatorCommand::CanMark { slot, period } => Some((*slot, *period)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn groups_take_the_slot_id_modulo_the_count() {
        assert_eq!(Groups::new(1, 0), Err(GroupsError::Count));
        assert_eq!(Groups::new(0, 0), Err(GroupsError::Count));
        assert_eq!(Groups::new(70_000, 0), Err(GroupsError::Count));
        assert_eq!(Groups::new(2, 2), Err(GroupsError::Index(2)));
        assert_eq!(Groups::new(65_535, 65_535), Err(GroupsError::Index(65_535)));
        assert!(Groups::new(65_535, 65_534).is_ok());
        // An id ending in ...07 is 7 mod 256, so 1 mod 2 and 3 mod 4.
        let mut b = [0u8; 32];
        b[31] = 7;
        let s = SlotId::from(b);
        assert!(Groups::new(2, 1).unwrap().contains(s));
        assert!(!Groups::new(2, 0).unwrap().contains(s));
        assert!(Groups::new(4, 3).unwrap().contains(s));
        // The whole number counts, not its last byte: 2^8 mod 3 = 1.
        let mut b = [0u8; 32];
        b[30] = 1;
        assert!(Groups::new(3, 1).unwrap().contains(SlotId::from(b)));
        // Every slot is in exactly one group.
        for i in 0..200u64 {
            let s = SlotId::of(rid(1), i);
            let n = (0..5)
                .filter(|g| Groups::new(5, *g).unwrap().contains(s))
                .count();
            assert_eq!(n, 1);
        }
    }

    #[test]
    fn two_validators_in_two_groups_split_the_slots_between_them() {
        let mut a = validator(0, Some(Groups::new(2, 0).unwrap()));
        let mut b = validator(0, Some(Groups::new(2, 1).unwrap()));
        for i in 0..64 {
            a.slot_filled(rid(2), i);
            b.slot_filled(rid(2), i);
        }
        let reads = |v: &mut Validator| -> Vec<SlotId> {
            drain(v)
                .into_iter()
                .map(|c| match c {
                    ValidatorCommand::ReadSlotState(s) => s,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let (ra, rb) = (reads(&mut a), reads(&mut b));
        assert_eq!(ra.len() + rb.len(), 64);
        assert!(!ra.is_empty() && !rb.is_empty());
        for s in &ra {
            assert_eq!(U256::from_be_bytes(s.0 .0) % U256::from(2u8), U256::ZERO);
            assert!(!rb.contains(s));
        }
        for s in &rb {
            assert_eq!(
                U256::from_be_bytes(s.0 .0) % U256::from(2u8),
                U256::from(1u8)
            );
        }
    }

    #[test]
    fn the_periods_in_a_validation_window() {
        let mut v = validator(0, None);
        let at = |v: &mut Validator, now| {
            v.now = now;
            v.open_periods()
        };
        // Period 9 is [1080, 1200); it ends at 1200; its window is (1200, 1230).
        assert_eq!(at(&mut v, 1199), None);
        assert_eq!(at(&mut v, 1200), None, "at its very end it has not ended");
        assert_eq!(at(&mut v, 1201), Some((9, 9)));
        assert_eq!(at(&mut v, 1229), Some((9, 9)));
        assert_eq!(at(&mut v, 1230), None, "now == end + timeout is too late");
        assert_eq!(at(&mut v, 0), None);
        assert_eq!(at(&mut v, 121), Some((0, 0)));
        // A window longer than a period holds several periods.
        let mut long = Validator::new(ValidatorConfig {
            options: ValidatorOptions::default(),
            period: 10,
            timeout: 25,
        });
        long.now = 101; // windows: 9 (100, 125), 8 (90, 115), 7 (80, 105)
        assert_eq!(long.open_periods(), Some((7, 9)));
    }

    /// A simulated chain clock: heads every 10 s, a host that proves some periods and not
    /// others, and the contract's answers.
    #[test]
    fn after_each_period_every_watched_slot_is_checked_once_and_misses_are_marked() {
        let mut v = validator(0, None);
        v.on_time(1000);
        let a = watch(&mut v, rid(3), 0);
        let b = watch(&mut v, rid(3), 1);
        assert!(drain(&mut v).is_empty(), "nothing before a period ends");
        let mut marks = Vec::new();
        // Periods 8..=12; slot a misses 9 and 11, slot b proves everything.
        let mut t = 1000;
        while t < 13 * PERIOD + 60 {
            t += 10;
            v.on_time(t);
            for c in drain(&mut v) {
                match c {
                    ValidatorCommand::CanMark { slot, period } => {
                        let missed = slot == a && (period == 9 || period == 11);
                        let answer = if missed {
                            Ok(())
                        } else {
                            Err(Refusal::Contract(MarketError::ProofNotMissing))
                        };
                        v.on_can_mark(slot, period, answer);
                        if let Some(ValidatorCommand::Mark { slot, period }) = v.poll() {
                            marks.push((slot, period, t));
                            v.on_marked(slot, period, Ok(()));
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(marks.len(), 2, "{marks:?}");
        for (slot, period, t) in &marks {
            assert_eq!(*slot, a);
            let end = (period + 1) * PERIOD;
            assert!(end < *t && *t < end + TIMEOUT, "marked at {t} for {period}");
        }
        assert_eq!(v.stats().marks, 2);
        assert_eq!(v.stats().watched, 2);
        let _ = b;
    }

    #[test]
    fn each_period_is_asked_once_even_with_many_heads_in_its_window() {
        let mut v = validator(0, None);
        let a = watch(&mut v, rid(4), 0);
        let mut asked = Vec::new();
        for t in (1190..1240).step_by(3) {
            v.on_time(t);
            asked.extend(can_marks(&drain(&mut v)));
        }
        assert_eq!(asked, vec![(a, 9)]);
    }

    #[test]
    fn refusals_are_final_and_transient_failures_are_retried_within_the_window() {
        let mut v = validator(0, None);
        let a = watch(&mut v, rid(5), 0);
        v.on_time(1201);
        assert_eq!(can_marks(&drain(&mut v)), vec![(a, 9)]);
        // A lost answer: asked again on the next head, up to three times in all.
        v.on_can_mark(a, 9, Err(Refusal::Transient("timeout".into())));
        v.on_time(1205);
        assert_eq!(can_marks(&drain(&mut v)), vec![(a, 9)]);
        v.on_can_mark(a, 9, Err(Refusal::Transient("timeout".into())));
        v.on_time(1210);
        assert_eq!(can_marks(&drain(&mut v)), vec![(a, 9)]);
        v.on_can_mark(a, 9, Err(Refusal::Transient("timeout".into())));
        v.on_time(1215);
        assert!(drain(&mut v).is_empty(), "three attempts in all");
        // Already marked, too late, not required: final.
        for (p, e) in [
            (10, MarketError::ProofAlreadyMarkedMissing),
            (11, MarketError::ValidationTimedOut),
            (12, MarketError::ProofNotRequired),
        ] {
            let t = (p + 1) * PERIOD + 1;
            v.on_time(t);
            assert_eq!(can_marks(&drain(&mut v)), vec![(a, p)]);
            v.on_can_mark(a, p, Ok(()));
            assert_eq!(
                drain(&mut v),
                vec![ValidatorCommand::Mark { slot: a, period: p }]
            );
            v.on_marked(a, p, Err(Refusal::Contract(e)));
            v.on_time(t + 5);
            v.on_time(t + 10);
            assert!(drain(&mut v).is_empty());
        }
        let st = v.stats();
        assert_eq!((st.marks, st.too_late, st.marked_by_others), (0, 1, 1));
        // A transient failure of the mark itself is checked again, but not after the
        // window has closed.
        v.on_time(14 * PERIOD + 1);
        assert_eq!(can_marks(&drain(&mut v)), vec![(a, 13)]);
        v.on_can_mark(a, 13, Ok(()));
        drain(&mut v);
        v.on_marked(a, 13, Err(Refusal::Transient("send failed".into())));
        v.on_time(14 * PERIOD + 40);
        assert!(drain(&mut v).is_empty());
        assert!(v.attempts.is_empty(), "{:?}", v.attempts);
    }

    #[test]
    fn slots_leave_when_freed_when_their_request_ends_or_when_no_longer_filled() {
        let mut v = validator(0, None);
        let a = watch(&mut v, rid(6), 0);
        let b = watch(&mut v, rid(6), 1);
        let c = watch(&mut v, rid(7), 0);
        let d = watch(&mut v, rid(8), 0);
        assert_eq!(v.stats().watched, 4);
        v.slot_freed(rid(7), 0);
        v.request_ended(rid(6));
        assert_eq!(v.watched().collect::<Vec<_>>(), vec![d]);
        v.on_time(1201);
        assert_eq!(can_marks(&drain(&mut v)), vec![(d, 9)]);
        v.on_can_mark(
            d,
            9,
            Err(Refusal::Contract(MarketError::SlotNotAcceptingProofs)),
        );
        assert_eq!(v.stats().watched, 0);
        v.on_time(1321);
        assert!(drain(&mut v).is_empty());
        // A repair fills a freed slot again: it is watched again.
        let c2 = watch(&mut v, rid(7), 0);
        assert_eq!(c2, c);
        assert_eq!(v.stats().watched, 1);
        let _ = (a, b);
    }

    #[test]
    fn a_fill_seen_is_watched_only_once_the_chain_says_filled() {
        let mut v = validator(0, None);
        // Old fills from a backfill: finished, paid, freed for repair.
        for (i, st) in [SlotState::Finished, SlotState::Paid, SlotState::Repair]
            .into_iter()
            .enumerate()
        {
            v.slot_filled(rid(9), i as u64);
            let s = SlotId::of(rid(9), i as u64);
            assert_eq!(drain(&mut v), vec![ValidatorCommand::ReadSlotState(s)]);
            v.on_slot_state(s, Ok(st));
        }
        assert_eq!(v.stats(), ValidatorStats::default());
        // A fill freed before its state read is not asked about at all.
        v.slot_filled(rid(9), 7);
        v.slot_freed(rid(9), 7);
        assert!(drain(&mut v).is_empty());
        // A read that fails is tried again on the next head, three times in all.
        v.slot_filled(rid(9), 8);
        let s = SlotId::of(rid(9), 8);
        for _ in 0..2 {
            assert_eq!(drain(&mut v), vec![ValidatorCommand::ReadSlotState(s)]);
            v.on_slot_state(s, Err("timeout".into()));
            v.on_time(500);
        }
        assert_eq!(drain(&mut v), vec![ValidatorCommand::ReadSlotState(s)]);
        v.on_slot_state(s, Err("timeout".into()));
        v.on_time(510);
        assert!(drain(&mut v).is_empty());
        assert_eq!(v.stats(), ValidatorStats::default());
    }

    #[test]
    fn a_slot_confirmed_inside_an_open_window_is_checked_for_that_period() {
        let mut v = validator(0, None);
        v.on_time(1201);
        assert!(drain(&mut v).is_empty());
        let a = watch(&mut v, rid(10), 0);
        assert_eq!(can_marks(&drain(&mut v)), vec![(a, 9)]);
        // After the window, a new slot waits for the next period.
        v.on_time(1240);
        let b = watch(&mut v, rid(10), 1);
        assert!(drain(&mut v).is_empty());
        v.on_time(1321);
        let mut asked = can_marks(&drain(&mut v));
        asked.sort();
        let mut want = vec![(a, 10), (b, 10)];
        want.sort();
        assert_eq!(asked, want);
    }

    #[test]
    fn at_most_max_slots_are_watched() {
        let mut v = validator(2, None);
        watch(&mut v, rid(11), 0);
        // A candidate does not count until confirmed.
        v.slot_filled(rid(11), 1);
        v.slot_filled(rid(11), 2);
        let reads = drain(&mut v);
        assert_eq!(reads.len(), 2);
        v.on_slot_state(SlotId::of(rid(11), 1), Ok(SlotState::Filled));
        v.on_slot_state(SlotId::of(rid(11), 2), Ok(SlotState::Filled));
        assert_eq!(v.stats().watched, 2);
        assert_eq!(v.stats().refused_full, 1);
        v.slot_filled(rid(11), 3);
        assert!(drain(&mut v).is_empty(), "full: not even asked");
        assert_eq!(v.stats().refused_full, 2);
        // Room again once a slot leaves.
        v.slot_freed(rid(11), 0);
        watch(&mut v, rid(11), 3);
        assert_eq!(v.stats().watched, 2);
        // 0: no limit.
        let mut u = validator(0, None);
        for i in 0..3000 {
            u.slot_filled(rid(12), i);
        }
        for c in drain(&mut u) {
            if let ValidatorCommand::ReadSlotState(s) = c {
                u.on_slot_state(s, Ok(SlotState::Filled));
            }
        }
        assert_eq!(u.stats().watched, 3000);
    }

    #[test]
    fn a_mark_mined_and_reverted_is_not_sent_again() {
        let mut v = validator(0, None);
        let a = watch(&mut v, rid(13), 0);
        v.on_time(1201);
        drain(&mut v);
        v.on_can_mark(a, 9, Ok(()));
        assert_eq!(
            drain(&mut v),
            vec![ValidatorCommand::Mark { slot: a, period: 9 }]
        );
        v.on_marked(a, 9, Err(Refusal::RevertedOnChain("reverted".into())));
        // Late or duplicate answers change nothing.
        v.on_marked(a, 9, Ok(()));
        v.on_can_mark(a, 9, Ok(()));
        v.on_time(1210);
        assert!(drain(&mut v).is_empty());
        assert_eq!(v.stats().marks, 0);
        assert_eq!(v.stats().marked_by_others, 1);
    }
}
