//! The checks after a soak, against real state: the chain's logs, transactions and balances,
//! each host's database (through the CLI and the store's own invariant check), its data
//! directory and its log. Each finding is a line in [`Audit::violations`]; none may remain.
//!
//! The expected payouts follow the contract's rules (`docs/marketplace.md#payouts`):
//!
//! - a host's tenure of a slot begins with its `SlotFilled` (the host is the transaction's
//!   sender) and posts `collateralPerSlot`, or the repair collateral when the slot had been
//!   freed before;
//! - it ends with a forced free (`SlotFreed`: nothing is paid, the collateral is lost), with
//!   the request's failure (nothing is paid), or with the request's end: Finished when the
//!   request was fulfilled, `(endsAt − filledAt) × pricePerSlotPerSecond`, Cancelled
//!   otherwise, `(expiresAt − filledAt) × pricePerSlotPerSecond`, plus `collateralPerSlot`
//!   less one `slashPercentage` for every mark of the tenure.
use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::{SolCall, SolEvent};
use codex::market::abi::Marketplace;
use codex::market::{RequestId, SlotId, SlotState};
use serde_json::{json, Value};

use super::{bump, hex_u64, Market, Tally};

/// A log of the chain with what the audit needs of it.
#[derive(Debug, Clone)]
struct Log {
    block: u64,
    index: u64,
    time: u64,
    tx: B256,
    topics: Vec<B256>,
    data: Vec<u8>,
}

/// A `SlotFilled` (with the host) or a `SlotFreed` (None): block, log index, time, host.
type FillOrFree = (u64, u64, u64, Option<Address>);

/// A mined transaction.
#[derive(Debug, Clone)]
pub struct Tx {
    pub block: u64,
    pub time: u64,
    pub from: Address,
    pub to: Option<Address>,
    pub input: Vec<u8>,
    pub ok: bool,
}

/// One host's hold of one slot.
#[derive(Debug, Clone)]
struct Tenure {
    slot: SlotId,
    request: RequestId,
    host: Address,
    filled_at: u64,
    repair: bool,
    /// Chain time the tenure ended at, and whether the host is paid for it.
    end: u64,
    outcome: &'static str,
}

/// What the audit found.
#[derive(Default)]
pub struct Audit {
    pub violations: Vec<String>,
    pub tally: Tally,
}

impl Audit {
    fn fail(&mut self, v: String) {
        self.violations.push(v);
    }
}

fn b256(v: &Value) -> B256 {
    v.as_str().unwrap().parse().unwrap()
}

fn word_u64(data: &[u8], word: usize) -> u64 {
    let w = &data[word * 32..word * 32 + 32];
    u64::from_be_bytes(w[24..].try_into().unwrap())
}

fn topic_addr(t: &B256) -> Address {
    Address::from_slice(&t[12..])
}

impl Market {
    fn logs(&mut self, address: Address, times: &mut BTreeMap<u64, u64>) -> Vec<Log> {
        let v = self
            .w
            .rpc
            .call(
                "eth_getLogs",
                json!([{"address": address, "fromBlock": "0x0", "toBlock": "latest"}]),
            )
            .unwrap();
        let mut out = vec![];
        for l in v.as_array().unwrap() {
            let block = hex_u64(&l["blockNumber"]);
            let time = match times.get(&block) {
                Some(t) => *t,
                None => {
                    let t = self.block_time(block);
                    times.insert(block, t);
                    t
                }
            };
            out.push(Log {
                block,
                index: hex_u64(&l["logIndex"]),
                time,
                tx: b256(&l["transactionHash"]),
                topics: l["topics"].as_array().unwrap().iter().map(b256).collect(),
                data: alloy_primitives::hex::decode(l["data"].as_str().unwrap()).unwrap(),
            });
        }
        out
    }

    /// Every transaction mined so far, with its receipt's status.
    pub fn transactions(&mut self) -> Vec<Tx> {
        let head = self.block_number();
        let mut out = vec![];
        for n in 0..=head {
            let b = self
                .w
                .rpc
                .call("eth_getBlockByNumber", json!([format!("{n:#x}"), true]))
                .unwrap();
            let time = hex_u64(&b["timestamp"]);
            for t in b["transactions"].as_array().unwrap() {
                let r = self
                    .w
                    .rpc
                    .call("eth_getTransactionReceipt", json!([t["hash"]]))
                    .unwrap();
                out.push(Tx {
                    block: n,
                    time,
                    from: t["from"].as_str().unwrap().parse().unwrap(),
                    to: t["to"].as_str().map(|s| s.parse().unwrap()),
                    input: alloy_primitives::hex::decode(t["input"].as_str().unwrap()).unwrap(),
                    ok: r["status"] == "0x1",
                });
            }
        }
        out
    }

    /// Audits the marketplace after a run whose nodes are all stopped.
    pub fn audit(&mut self, txs: &[Tx]) -> Audit {
        let mut a = Audit::default();
        let mkt = self.w.chain.marketplace();
        let token = self.w.chain.token();
        let validator = self.w.chain.account(super::VALIDATOR);
        let period = self.config.period;
        let mut times = BTreeMap::new();
        let mlogs = self.logs(mkt, &mut times);
        let tlogs = self.logs(token, &mut times);
        // The sender and the input of the transactions that emitted the logs.
        let mut tx_of: BTreeMap<B256, (Address, Vec<u8>)> = BTreeMap::new();
        for l in mlogs.iter().chain(&tlogs) {
            if tx_of.contains_key(&l.tx) {
                continue;
            }
            let t = self
                .w
                .rpc
                .call("eth_getTransactionByHash", json!([l.tx]))
                .unwrap();
            tx_of.insert(
                l.tx,
                (
                    t["from"].as_str().unwrap().parse().unwrap(),
                    alloy_primitives::hex::decode(t["input"].as_str().unwrap()).unwrap(),
                ),
            );
        }
        let requests: BTreeMap<RequestId, usize> = self
            .posted
            .iter()
            .enumerate()
            .map(|(i, p)| (p.req.id(), i))
            .collect();
        let mut fulfilled = BTreeSet::new();
        let mut failed: BTreeMap<RequestId, u64> = BTreeMap::new();
        // (slot) -> fills and frees in chain order: (block, index, time, Some(host) | None).
        let mut history: BTreeMap<SlotId, Vec<FillOrFree>> = BTreeMap::new();
        let mut slot_request: BTreeMap<SlotId, RequestId> = BTreeMap::new();
        // slot -> times of its proofs.
        let mut proofs: BTreeMap<SlotId, Vec<u64>> = BTreeMap::new();
        for l in &mlogs {
            let t0 = l.topics[0];
            if t0 == Marketplace::SlotFilled::SIGNATURE_HASH
                || t0 == Marketplace::SlotFreed::SIGNATURE_HASH
            {
                let request = RequestId(l.topics[1]);
                let slot = SlotId::of(request, word_u64(&l.data, 0));
                slot_request.insert(slot, request);
                let host = (t0 == Marketplace::SlotFilled::SIGNATURE_HASH).then(|| tx_of[&l.tx].0);
                history
                    .entry(slot)
                    .or_default()
                    .push((l.block, l.index, l.time, host));
                bump(
                    &mut a.tally,
                    if host.is_some() {
                        "chain: SlotFilled"
                    } else {
                        "chain: SlotFreed"
                    },
                );
            } else if t0 == Marketplace::RequestFulfilled::SIGNATURE_HASH {
                fulfilled.insert(RequestId(l.topics[1]));
                bump(&mut a.tally, "chain: RequestFulfilled");
            } else if t0 == Marketplace::RequestFailed::SIGNATURE_HASH {
                failed.insert(RequestId(l.topics[1]), l.time);
                bump(&mut a.tally, "chain: RequestFailed");
            } else if t0 == Marketplace::ProofSubmitted::SIGNATURE_HASH {
                proofs
                    .entry(SlotId(B256::from_slice(&l.data[..32])))
                    .or_default()
                    .push(l.time);
                bump(&mut a.tally, "chain: ProofSubmitted");
            }
        }
        // Token movements out of the Marketplace, by the call that made them.
        let free_0 = Marketplace::freeSlot_0Call::SELECTOR;
        let free_1 = Marketplace::freeSlot_1Call::SELECTOR;
        let mark = Marketplace::markProofAsMissingCall::SELECTOR;
        // (host, slot) -> tokens the host received from its freeSlot calls.
        let mut paid: BTreeMap<(Address, SlotId), U256> = BTreeMap::new();
        // slot -> (time, period) of each mark.
        let mut marks: BTreeMap<SlotId, Vec<(u64, u64)>> = BTreeMap::new();
        // host -> collateral it paid into the Marketplace.
        let mut posted: BTreeMap<Address, U256> = BTreeMap::new();
        let transfer = keccak256("Transfer(address,address,uint256)");
        for l in &tlogs {
            if l.topics[0] != transfer {
                continue;
            }
            let (from, to) = (topic_addr(&l.topics[1]), topic_addr(&l.topics[2]));
            let value = U256::from_be_slice(&l.data[..32]);
            let (sender, input) = &tx_of[&l.tx];
            if from == mkt && input.len() >= 36 {
                let sel: [u8; 4] = input[..4].try_into().unwrap();
                let slot = SlotId(B256::from_slice(&input[4..36]));
                if sel == free_0 || sel == free_1 {
                    *paid.entry((*sender, slot)).or_default() += value;
                } else if sel == mark && to == validator {
                    marks
                        .entry(slot)
                        .or_default()
                        .push((l.time, word_u64(&input[36..], 0)));
                    bump(&mut a.tally, "chain: missed proofs marked");
                }
            }
            if to == mkt {
                *posted.entry(from).or_default() += value;
            }
        }
        // The tenures.
        let mut tenures: Vec<Tenure> = vec![];
        for (slot, events) in &history {
            let request = slot_request[slot];
            let Some(&ri) = requests.get(&request) else {
                a.fail(format!("slot {slot} of a request the soak did not post"));
                continue;
            };
            let p = &self.posted[ri];
            let mut freed_before = false;
            for (k, (_, _, time, host)) in events.iter().enumerate() {
                let Some(host) = host else {
                    freed_before = true;
                    continue;
                };
                let next_free = events[k + 1..].iter().find(|e| e.3.is_none()).map(|e| e.2);
                let (end, outcome) = match (next_free, failed.get(&request)) {
                    (Some(t), _) => (t, "freed"),
                    (None, Some(t)) => (*t, "failed"),
                    (None, None) if fulfilled.contains(&request) => (p.ends_at(), "finished"),
                    (None, None) => (p.expires_at(), "cancelled"),
                };
                tenures.push(Tenure {
                    slot: *slot,
                    request,
                    host: *host,
                    filled_at: *time,
                    repair: freed_before,
                    end,
                    outcome,
                });
            }
        }
        // No slot filled twice by one host.
        let mut fills: BTreeMap<(SlotId, Address), usize> = BTreeMap::new();
        for t in &tenures {
            *fills.entry((t.slot, t.host)).or_default() += 1;
        }
        for ((slot, host), n) in &fills {
            if *n > 1 {
                a.fail(format!("slot {slot} was filled {n} times by host {host}"));
            }
        }
        // Proofs, payouts and collateral per tenure.
        let name_of: BTreeMap<Address, String> = self
            .hosts
            .iter()
            .map(|h| (h.addr, h.name.clone()))
            .collect();
        let mut expected: BTreeMap<(Address, SlotId), U256> = BTreeMap::new();
        // host -> the reward part of its payouts (without the collateral).
        let mut rewards: BTreeMap<Address, U256> = BTreeMap::new();
        let mut collateral: BTreeMap<Address, U256> = BTreeMap::new();
        for t in &tenures {
            let Some(name) = name_of.get(&t.host) else {
                a.fail(format!(
                    "slot {} filled by {}, not one of the hosts",
                    t.slot, t.host
                ));
                continue;
            };
            bump(&mut a.tally, format!("tenures ended {}", t.outcome));
            if t.repair {
                bump(&mut a.tally, "tenures of repaired slots");
            }
            let p = &self.posted[requests[&t.request]];
            let (ask, ends_at, expires_at) = (p.req.ask.clone(), p.ends_at(), p.expires_at());
            let full = ask.collateral_per_slot();
            let due = if t.repair {
                ask.repair_collateral(self.config.repair_reward_percentage)
            } else {
                full
            };
            *collateral.entry(t.host).or_default() += due;
            // Every period after the fill's that ended within the tenure needs a proof, or
            // a down-time of this host longer than a period that overlaps it.
            let downs = self
                .hosts
                .iter()
                .find(|h| h.addr == t.host)
                .unwrap()
                .down
                .clone();
            let first = t.filled_at / period + 1;
            let slot_proofs = proofs.get(&t.slot).cloned().unwrap_or_default();
            let mut p_ = first;
            while (p_ + 1) * period <= t.end {
                let (from, to) = (p_ * period, (p_ + 1) * period);
                let proven = slot_proofs.iter().any(|&pt| pt >= from && pt < to);
                if proven {
                    bump(&mut a.tally, "periods proven");
                } else {
                    let excused = downs.iter().any(|d| {
                        d.to.saturating_sub(d.from) > period && d.from < to && d.to > from
                    });
                    if excused {
                        bump(&mut a.tally, "periods missed during a down-time > a period");
                        // Whether it shows up as a missed proof on chain: the validator marks
                        // it, unless the slot had already left Filled by its window.
                        let marked = marks
                            .get(&t.slot)
                            .is_some_and(|v| v.iter().any(|(_, mp)| *mp == p_));
                        bump(
                            &mut a.tally,
                            if marked {
                                "missed periods marked by the validator"
                            } else {
                                "missed periods not marked (the slot was no longer Filled, or the validator missed it)"
                            },
                        );
                    } else {
                        a.fail(format!(
                            "{name}: slot {} (request {}, filled at {}) has no proof in period {p_} [{from}, {to}) and {name} was not down for more than a period then (down-times {:?})",
                            t.slot, t.request, t.filled_at, downs
                        ));
                    }
                }
                p_ += 1;
            }
            let slashes = marks
                .get(&t.slot)
                .map(|v| {
                    v.iter()
                        .filter(|(mt, _)| *mt >= t.filled_at && *mt <= t.end)
                        .count()
                })
                .unwrap_or(0);
            let slash = full * U256::from(self.config.slash_percentage) / U256::from(100u8);
            let until = match t.outcome {
                "finished" => Some(ends_at),
                "cancelled" => Some(expires_at),
                _ => None,
            };
            let payout = match until {
                Some(until) => {
                    let reward = U256::from(until - t.filled_at) * ask.price_per_slot_per_second();
                    *rewards.entry(t.host).or_default() += reward;
                    reward + full - slash * U256::from(slashes)
                }
                None => U256::ZERO,
            };
            *expected.entry((t.host, t.slot)).or_default() += payout;
            if payout > U256::ZERO {
                let st = self.w.slot_state(t.slot);
                if st != SlotState::Paid {
                    a.fail(format!(
                        "{name}: slot {} ({}) is {st:?}, not Paid, after the run",
                        t.slot, t.outcome
                    ));
                }
            }
        }
        for (key, want) in &expected {
            let got = paid.get(key).copied().unwrap_or_default();
            if got != *want {
                a.fail(format!(
                    "{}: received {got} for slot {}, the contract's rules pay {want}",
                    name_of[&key.0], key.1
                ));
            }
        }
        for key in paid.keys() {
            if !expected.contains_key(key) {
                a.fail(format!(
                    "{} was paid for slot {} it never filled",
                    key.0, key.1
                ));
            }
        }
        // Balances: what each host holds now is what it had, less its collateral, plus its
        // payouts.
        let hosts: Vec<(String, Address, U256)> = self
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.addr, h.balance0))
            .collect();
        for (name, addr, before) in hosts {
            let now = self.w.balance(addr);
            let income: U256 = expected
                .iter()
                .filter(|((h, _), _)| *h == addr)
                .map(|(_, v)| *v)
                .sum();
            let spent = collateral.get(&addr).copied().unwrap_or_default();
            let want = before + income - spent;
            if now != want {
                a.fail(format!(
                    "{name}: token balance {now}, expected {before} + payouts {income} - collateral {spent} = {want}"
                ));
            }
            let pulled = posted.get(&addr).copied().unwrap_or_default();
            if pulled != spent {
                a.fail(format!(
                    "{name}: paid {pulled} into the Marketplace, its fills' collateral is {spent}"
                ));
            }
        }
        for h in &self.hosts {
            let long = h
                .down
                .iter()
                .filter(|d| d.to.saturating_sub(d.from) > period)
                .count();
            *a.tally
                .entry(format!("down-times over a period: {}", h.name))
                .or_default() = long;
            *a.tally
                .entry(format!("down-times: {}", h.name))
                .or_default() = h.down.len();
        }
        self.audit_events(&mut a, &mlogs);
        self.audit_hosts(&mut a, &rewards);
        self.audit_actions(&mut a, txs);
        a
    }

    /// The hosts' own records, on disk.
    fn audit_hosts(&mut self, a: &mut Audit, rewards: &BTreeMap<Address, U256>) {
        for h in &self.hosts {
            let name = &h.name;
            let dir = &h.host.dir;
            match codex::store::Store::open(dir, codex::store::Options::cli()) {
                Ok(mut store) => {
                    if let Err(e) = store.check_invariant(None) {
                        a.fail(format!("{name}: the accounting invariant fails: {e}"));
                    }
                }
                Err(e) => a.fail(format!("{name}: opening the store: {e}")),
            }
            for av in h.host.availabilities() {
                if av["freeSize"] != av["totalSize"] {
                    a.fail(format!(
                        "{name}: availability holds bytes after every sale ended: {av}"
                    ));
                }
            }
            // Every request has ended: no reservation may be left.
            let out = h.host.cli(&["reservation", "list", "--json"]);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                a.fail(format!(
                    "{name}: reservation left for an ended request: {line}"
                ));
            }
            // And no live sale: no data on disk.
            let out = h.host.cli(&["sale", "list", "--json"]);
            let live: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["slotId"].as_str().map(str::to_lowercase))
                .collect();
            let mut files = h.host.slots_dir_files();
            files.sort();
            let mut live_sorted = live.clone();
            live_sorted.sort();
            if files != live_sorted {
                a.fail(format!(
                    "{name}: data files {files:?} are not those of the live sales {live_sorted:?}"
                ));
            }
            // The history's payouts are the rewards the contract's rules pay (which the
            // chain's transfers were checked against above).
            let out = h.host.cli(&["sale", "list", "--all", "--json"]);
            let mut recorded = U256::ZERO;
            for v in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            {
                if let Some(x) = v["payout"].as_str().and_then(|s| s.parse::<U256>().ok()) {
                    recorded += x;
                }
                if let Some(o) = v["outcome"].as_str() {
                    bump(&mut a.tally, format!("sales ended {o}"));
                    if o != "Finished" {
                        let why = general(v["reason"].as_str().unwrap_or(""));
                        bump(&mut a.tally, format!("sales ended {o}: {why}"));
                    }
                }
            }
            let earned = rewards.get(&h.addr).copied().unwrap_or_default();
            if recorded != earned {
                a.fail(format!(
                    "{name}: its history records {recorded} paid out, the contract paid it {earned} in rewards"
                ));
            }
            let log = std::fs::read_to_string(&h.host.log).unwrap_or_default();
            if log.contains("panicked") {
                a.fail(format!("{name}: panicked (see its log)"));
            }
        }
    }

    /// No host sent the same action twice: one reserveSlot, one fillSlot and one freeSlot
    /// per slot and host, and one submitProof per slot and period; reverted transactions are
    /// counted.
    fn audit_actions(&mut self, a: &mut Audit, txs: &[Tx]) {
        let mkt = self.w.chain.marketplace();
        let period = self.config.period;
        let hosts: BTreeMap<Address, String> = self
            .hosts
            .iter()
            .map(|h| (h.addr, h.name.clone()))
            .collect();
        let mut seen: BTreeMap<(Address, &'static str, B256, u64), usize> = BTreeMap::new();
        for t in txs {
            let Some(name) = hosts.get(&t.from) else {
                continue;
            };
            if t.to != Some(mkt) || t.input.len() < 4 {
                continue;
            }
            let sel: [u8; 4] = t.input[..4].try_into().unwrap();
            let (what, key, per): (&'static str, B256, u64) =
                if sel == Marketplace::reserveSlotCall::SELECTOR {
                    ("reserveSlot", reserve_key(&t.input), 0)
                } else if sel == Marketplace::fillSlotCall::SELECTOR {
                    ("fillSlot", reserve_key(&t.input), 0)
                } else if sel == Marketplace::submitProofCall::SELECTOR {
                    (
                        "submitProof",
                        B256::from_slice(&t.input[4..36]),
                        t.time / period,
                    )
                } else if sel == Marketplace::freeSlot_0Call::SELECTOR
                    || sel == Marketplace::freeSlot_1Call::SELECTOR
                {
                    ("freeSlot", B256::from_slice(&t.input[4..36]), 0)
                } else {
                    ("other", keccak256(&t.input), t.block)
                };
            bump(&mut a.tally, format!("host txs: {what}"));
            if !t.ok {
                bump(&mut a.tally, format!("host txs reverted: {what}"));
            }
            let n = seen.entry((t.from, what, key, per)).or_default();
            *n += 1;
            if *n == 2 {
                a.fail(format!(
                    "{name} sent {what} twice for {key} (block {}, {})",
                    t.block,
                    if t.ok { "mined" } else { "reverted" }
                ));
            }
        }
    }
}

impl Market {
    /// Every Marketplace event since a node first started is in its log ("codex::market
    /// block N: Name"),
    /// as often as the chain has it in that block.
    fn audit_events(&mut self, a: &mut Audit, logs: &[Log]) {
        let names: BTreeMap<B256, &str> = [
            (
                Marketplace::StorageRequested::SIGNATURE_HASH,
                "StorageRequested",
            ),
            (Marketplace::SlotFilled::SIGNATURE_HASH, "SlotFilled"),
            (Marketplace::SlotFreed::SIGNATURE_HASH, "SlotFreed"),
            (
                Marketplace::SlotReservationsFull::SIGNATURE_HASH,
                "SlotReservationsFull",
            ),
            (
                Marketplace::RequestFulfilled::SIGNATURE_HASH,
                "RequestFulfilled",
            ),
            (Marketplace::RequestFailed::SIGNATURE_HASH, "RequestFailed"),
            (
                Marketplace::RequestCancelled::SIGNATURE_HASH,
                "RequestCancelled",
            ),
            (
                Marketplace::ProofSubmitted::SIGNATURE_HASH,
                "ProofSubmitted",
            ),
        ]
        .into_iter()
        .collect();
        let first = self.hosts.iter().map(|h| h.first_block).min().unwrap_or(0);
        let mut want: BTreeMap<(u64, &str), usize> = BTreeMap::new();
        for l in logs.iter().filter(|l| l.block > first) {
            if let Some(n) = names.get(&l.topics[0]) {
                *want.entry((l.block, *n)).or_default() += 1;
            }
        }
        let nodes: Vec<(String, std::path::PathBuf)> = self
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.host.log.clone()))
            .chain(std::iter::once((
                "validator".to_string(),
                self.validator.log.clone(),
            )))
            .collect();
        for (name, log) in nodes {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut got: BTreeMap<(u64, String), usize> = BTreeMap::new();
            for line in text.lines() {
                const AT: &str = " codex::market block ";
                let Some(at) = line.find(AT) else {
                    continue;
                };
                let rest = &line[at + AT.len()..];
                let Some((n, ev)) = rest.split_once(": ") else {
                    continue;
                };
                let (Ok(n), ev) = (n.parse::<u64>(), ev.trim()) else {
                    continue;
                };
                if names.values().any(|v| *v == ev) {
                    *got.entry((n, ev.to_string())).or_default() += 1;
                }
            }
            let mut missed = 0;
            let mut dup = 0;
            for ((block, ev), n) in &want {
                let seen = got.get(&(*block, ev.to_string())).copied().unwrap_or(0);
                if seen < *n {
                    missed += n - seen;
                    if missed <= 5 {
                        a.fail(format!("{name} missed {} {ev} of block {block}", n - seen));
                    }
                } else if seen > *n {
                    dup += seen - n;
                }
            }
            if missed > 5 {
                a.fail(format!("{name} missed {missed} events in all"));
            }
            let total: usize = want.values().sum();
            *a.tally
                .entry("events on chain since the start".into())
                .or_default() = total;
            *a.tally
                .entry(format!("events missed by {name}"))
                .or_default() = missed;
            *a.tally
                .entry(format!("events handled again by {name} (backfills)"))
                .or_default() = dup;
        }
    }
}

/// A reason with its hashes and numbers left out, so that equal causes count together.
fn general(reason: &str) -> String {
    let mut out = String::new();
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '0' && chars.peek() == Some(&'x') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                chars.next();
            }
            out.push_str("0x…");
        } else if c.is_ascii_digit() {
            while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                chars.next();
            }
            out.push('N');
        } else {
            out.push(c);
        }
    }
    out
}

/// reserveSlot and fillSlot name (request, index): the slot id.
fn reserve_key(input: &[u8]) -> B256 {
    let request = RequestId(B256::from_slice(&input[4..36]));
    SlotId::of(request, word_u64(&input[36..], 0)).0
}
