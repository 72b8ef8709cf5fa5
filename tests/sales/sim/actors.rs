//! Scripted chain participants that act on every block: a validator that marks missed
//! proofs, competing hosts, and clients that withdraw their funds.
//!
//! Each actor sees the logs of the block just mined and sends transactions into the next
//! (pending) block, so it reacts one block later, like a real node. All iteration is over
//! ordered collections and randomness comes from seeded `fastrand::Rng`s: runs are
//! deterministic.

use std::collections::{BTreeMap, BTreeSet};

use codex::market::{Address, MarketEvent, RequestId, RequestState, SlotId, SlotState};

use super::chain::Log;
use super::World;

/// A validator that, in the first block after each period ends (and within the validation
/// timeout), marks every Filled slot whose proof for that period is missing and required.
/// With a block time above the timeout it can miss the window, as a real one would.
#[derive(Debug, Clone)]
pub struct Validator {
    /// The validator's account (receives the validator reward).
    pub address: Address,
    /// Successful `markProofAsMissing` calls.
    pub marked: u64,
    /// Periods whose window closed before the validator got a block inside it.
    pub windows_missed: u64,
    /// Whether it acts at all (tests can pause it).
    pub enabled: bool,
    /// Slot checks made (one per Filled slot per period): the model's main cost driver.
    pub checks: u64,
    done: Option<u64>,
}

impl Validator {
    /// A validator acting as `address`.
    pub fn new(address: Address) -> Validator {
        Validator {
            address,
            marked: 0,
            windows_missed: 0,
            enabled: true,
            checks: 0,
            done: None,
        }
    }

    /// Acts on the pending block.
    pub fn act(&mut self, w: &mut World) {
        if !self.enabled {
            return;
        }
        let cfg = w.market.configuration();
        let (period_len, timeout) = (cfg.period, cfg.timeout);
        let now = w.chain.pending_timestamp();
        let current = cfg.period_of(now);
        let Some(p) = current.checked_sub(1) else {
            return;
        };
        if self.done.is_some_and(|d| d >= p) {
            return;
        }
        let end = (p + 1) * period_len;
        if now <= end {
            return;
        }
        if now >= end + timeout {
            self.windows_missed += 1;
            self.done = Some(p);
            return;
        }
        let slots = w.market.filled_slots().to_vec();
        self.checks += slots.len() as u64;
        for slot in slots {
            if w.pending().can_mark_proof_as_missing(slot, p).is_ok()
                && w.mark_proof_as_missing(self.address, slot, p).is_ok()
            {
                self.marked += 1;
            }
        }
        self.done = Some(p);
    }
}

/// When a scripted host submits proofs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Proving {
    /// Whenever `isProofRequired` or `willProofBeRequired` (as nim-codex does).
    Always,
    /// Never: the validator will slash it and free its slots.
    Never,
    /// Proves for this many periods after filling, then stops.
    StopAfter(u64),
    /// Skips each due proof with this probability.
    MissProbability(f64),
}

/// How a scripted host competes.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Chance to go for each announced slot.
    pub take_probability: f64,
    /// Blocks of delay (inclusive range) between seeing a slot and reserving it.
    pub reaction_blocks: (u64, u64),
    /// Blocks between the reservation and the fill (0: same block).
    pub fill_delay_blocks: u64,
    /// Also goes for slots announced by SlotFreed (repairs).
    pub repair: bool,
    /// Most slots held (or being acquired) at once.
    pub max_slots: usize,
    /// Proof behaviour.
    pub proving: Proving,
    /// Calls `freeSlot` to collect payouts once a slot is Finished, Cancelled or Failed.
    pub collect_payouts: bool,
}

impl Default for HostPolicy {
    /// Takes every slot after 1–3 blocks, fills in the next block, proves always,
    /// repairs, collects payouts, holds up to 1,000 slots.
    fn default() -> Self {
        HostPolicy {
            take_probability: 1.0,
            reaction_blocks: (1, 3),
            fill_delay_blocks: 1,
            repair: true,
            max_slots: 1000,
            proving: Proving::Always,
            collect_payouts: true,
        }
    }
}

/// Counters of what a scripted host did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Successful reservations.
    pub reserved: u64,
    /// Successful fills.
    pub filled: u64,
    /// Proofs submitted.
    pub proofs: u64,
    /// Successful `freeSlot` calls.
    pub freed: u64,
    /// Slots lost to a forced free.
    pub kicked_out: u64,
    /// Reverted transactions.
    pub reverts: u64,
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    Reserve(RequestId, u64),
    Fill(RequestId, u64),
}

#[derive(Debug, Clone, Copy)]
struct Held {
    filled_period: u64,
    proven_period: Option<u64>,
}

/// A competing host: reserves and fills slots it sees announced, proves, collects payouts.
///
/// It looks at its slots once per period, in the first block of the period: it submits a
/// proof when `isProofRequired` or `willProofBeRequired` (as nim-codex does) and frees
/// slots that are Finished, Cancelled or Failed.
#[derive(Debug, Clone)]
pub struct ScriptedHost {
    /// The host's account (fund it with [`World::fund`]).
    pub address: Address,
    /// Its behaviour.
    pub policy: HostPolicy,
    /// What it did.
    pub stats: HostStats,
    rng: fastrand::Rng,
    plans: BTreeMap<u64, Vec<Plan>>,
    in_flight: usize,
    held: BTreeMap<SlotId, Held>,
    tended_period: Option<u64>,
}

impl ScriptedHost {
    /// A host acting as `address` with `policy`, its randomness seeded with `seed`.
    pub fn new(address: Address, policy: HostPolicy, seed: u64) -> ScriptedHost {
        ScriptedHost {
            address,
            policy,
            stats: HostStats::default(),
            rng: fastrand::Rng::with_seed(seed),
            plans: BTreeMap::new(),
            in_flight: 0,
            held: BTreeMap::new(),
            tended_period: None,
        }
    }

    /// Slots it currently holds.
    pub fn held_slots(&self) -> Vec<SlotId> {
        self.held.keys().copied().collect()
    }

    fn consider(&mut self, at: u64, id: RequestId, index: u64) {
        if self.held.len() + self.in_flight >= self.policy.max_slots
            || self.rng.f64() >= self.policy.take_probability
        {
            return;
        }
        let (lo, hi) = self.policy.reaction_blocks;
        let delay = self.rng.u64(lo..=hi.max(lo));
        self.in_flight += 1;
        self.plans
            .entry(at + delay)
            .or_default()
            .push(Plan::Reserve(id, index));
    }

    /// Acts on the pending block after seeing `logs` of the latest block.
    pub fn act(&mut self, w: &mut World, logs: &[Log]) {
        let pending = w.chain.latest().number + 1;
        for log in logs {
            match &log.event {
                MarketEvent::StorageRequested {
                    request_id, ask, ..
                } => {
                    for index in 0..ask.slots {
                        self.consider(pending, *request_id, index);
                    }
                }
                MarketEvent::SlotFreed {
                    request_id,
                    slot_index,
                } if self.policy.repair => self.consider(pending, *request_id, *slot_index),
                _ => {}
            }
        }
        while let Some(entry) = self.plans.first_entry() {
            if *entry.key() > pending {
                break;
            }
            for plan in entry.remove() {
                self.run_plan(w, pending, plan);
            }
        }
        // Like nim-codex, look at held slots once per period (at its first block).
        let period = w.pending().period();
        if self.tended_period != Some(period) {
            self.tended_period = Some(period);
            self.tend(w);
        }
    }

    fn run_plan(&mut self, w: &mut World, pending: u64, plan: Plan) {
        match plan {
            Plan::Reserve(id, index) => {
                if !w.pending().can_reserve_slot(self.address, id, index) {
                    self.in_flight -= 1;
                    return;
                }
                match w.reserve_slot(self.address, id, index) {
                    Ok(()) => {
                        self.stats.reserved += 1;
                        self.plans
                            .entry(pending + self.policy.fill_delay_blocks)
                            .or_default()
                            .push(Plan::Fill(id, index));
                    }
                    Err(_) => {
                        self.stats.reverts += 1;
                        self.in_flight -= 1;
                    }
                }
            }
            Plan::Fill(id, index) => {
                self.in_flight -= 1;
                let slot = SlotId::of(id, index);
                if !matches!(
                    w.pending().slot_state(slot),
                    SlotState::Free | SlotState::Repair
                ) {
                    return;
                }
                let Ok(proof) = w.pending().proof_for(id, index) else {
                    return;
                };
                match w.fill_slot(self.address, id, index, &proof) {
                    Ok(()) => {
                        self.stats.filled += 1;
                        let period = w.pending().period();
                        self.held.insert(
                            slot,
                            Held {
                                filled_period: period,
                                proven_period: Some(period),
                            },
                        );
                    }
                    Err(_) => self.stats.reverts += 1,
                }
            }
        }
    }

    fn tend(&mut self, w: &mut World) {
        let mut gone = Vec::new();
        let slots: Vec<(SlotId, Held)> = self.held.iter().map(|(s, h)| (*s, *h)).collect();
        for (slot, held) in slots {
            let view = w.pending();
            let period = view.period();
            let Some(summary) = view.slot_summary(slot) else {
                gone.push(slot);
                continue;
            };
            if summary.host != self.address {
                self.stats.kicked_out += 1;
                gone.push(slot);
                continue;
            }
            match summary.state {
                SlotState::Filled => {
                    if held.proven_period == Some(period)
                        || !(summary.proof_required || summary.proof_will_be_required)
                    {
                        continue;
                    }
                    let prove = match self.policy.proving {
                        Proving::Always => true,
                        Proving::Never => false,
                        Proving::StopAfter(n) => period <= held.filled_period + n,
                        Proving::MissProbability(p) => self.rng.f64() >= p,
                    };
                    if let Some(h) = self.held.get_mut(&slot) {
                        // Decided for this period, proven or not.
                        h.proven_period = Some(period);
                    }
                    if !prove {
                        continue;
                    }
                    let Some(proof) = view.proof_for_slot(slot) else {
                        continue;
                    };
                    match w.submit_proof(self.address, slot, &proof) {
                        Ok(()) => self.stats.proofs += 1,
                        Err(_) => self.stats.reverts += 1,
                    }
                }
                SlotState::Finished | SlotState::Cancelled | SlotState::Failed => {
                    if !self.policy.collect_payouts {
                        continue;
                    }
                    match w.free_slot(self.address, slot) {
                        Ok(()) => self.stats.freed += 1,
                        Err(_) => self.stats.reverts += 1,
                    }
                    gone.push(slot);
                }
                SlotState::Free | SlotState::Paid | SlotState::Repair => gone.push(slot),
            }
        }
        for slot in gone {
            self.held.remove(&slot);
        }
    }
}

/// A client that withdraws its funds `withdraw_delay` seconds after each of its requests
/// ends (Cancelled, Failed or Finished), which is when `RequestCancelled` gets emitted.
#[derive(Debug, Clone)]
pub struct ScriptedClient {
    /// The client's account.
    pub address: Address,
    /// Seconds after the request ends before withdrawing; `None`: never withdraws.
    pub withdraw_delay: Option<u64>,
    /// Successful withdrawals.
    pub withdrawals: u64,
    watch: BTreeSet<(u64, RequestId)>,
}

impl ScriptedClient {
    /// A client acting as `address`.
    pub fn new(address: Address, withdraw_delay: Option<u64>) -> ScriptedClient {
        ScriptedClient {
            address,
            withdraw_delay,
            withdrawals: 0,
            watch: BTreeSet::new(),
        }
    }

    /// Acts on the pending block after seeing `logs` of the latest block.
    pub fn act(&mut self, w: &mut World, logs: &[Log]) {
        let Some(delay) = self.withdraw_delay else {
            return;
        };
        let now = w.chain.pending_timestamp();
        for log in logs {
            let id = match &log.event {
                MarketEvent::StorageRequested { request_id, .. } => *request_id,
                MarketEvent::RequestFailed { request_id } => *request_id,
                _ => continue,
            };
            let Some(rec) = w.market.request_record(id) else {
                continue;
            };
            if rec.request.client != self.address {
                continue;
            }
            let at = match log.event {
                MarketEvent::RequestFailed { .. } => now,
                _ => rec.expires_at + 1,
            };
            self.watch.insert((at + delay, id));
        }
        while let Some(&(at, id)) = self.watch.first() {
            if at > now {
                break;
            }
            self.watch.pop_first();
            let view = w.pending();
            match view.request_state(id) {
                Ok(RequestState::Cancelled | RequestState::Failed | RequestState::Finished) => {
                    if w.withdraw_funds(self.address, id).is_ok() {
                        self.withdrawals += 1;
                    }
                }
                Ok(RequestState::Started | RequestState::New) => {
                    if let Ok(end) = view.request_end(id) {
                        self.watch.insert((end + 1 + delay, id));
                    }
                }
                Err(_) => {}
            }
        }
    }
}
