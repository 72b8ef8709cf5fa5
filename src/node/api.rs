//! The node's answers to the REST API ([`crate::api::rest::Host`]) and its metrics: read
//! from the engine, the store and the chain position the loop already holds, in the turn a
//! request arrives (no request waits on the chain).
use std::collections::{BTreeMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Node;
use crate::api::json::u64_value;
use crate::api::rest::Host;
use crate::market::events::AskJson;
use crate::market::{cid::format_cid, Ask, MarketEvent, Request, RequestId, SlotId, U256};
use crate::sales::engine::{EngineInput, SaleSummary};
use crate::sales::ledger::{self, Availability, Ledger, Limits, SlotAsk};

/// Refusals `GET /sales/queue` lists one by one for a request; `refusalsByRule` counts all.
const MAX_REFUSALS_LISTED: usize = 16;
use crate::sales::ChainTime;
use crate::store::Store;

/// Requests remembered for "why no work" (`GET /sales/queue`).
pub(super) const RECENT_REQUESTS: usize = 64;

/// A request the node saw announced.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub request_id: RequestId,
    pub ask: Ask,
    pub expiry: u64,
    /// Chain time it was seen.
    pub at: u64,
}

/// Keeps the last [`RECENT_REQUESTS`] announced requests.
pub(super) fn remember(recent: &mut VecDeque<Seen>, ev: &MarketEvent, now: u64) {
    if let MarketEvent::StorageRequested {
        request_id,
        ask,
        expiry,
    } = ev
    {
        if recent.iter().any(|s| s.request_id == *request_id) {
            return;
        }
        if recent.len() == RECENT_REQUESTS {
            recent.pop_front();
        }
        recent.push_back(Seen {
            request_id: *request_id,
            ask: ask.clone(),
            expiry: *expiry,
            at: now,
        });
    }
}

fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_json(id: RequestId, r: &Request) -> Value {
    json!({
        "id": id.to_string(),
        "client": r.client.to_string(),
        "ask": serde_json::to_value(AskJson(&r.ask)).unwrap_or_default(),
        "content": {"cid": format_cid(&r.content.cid)},
        "expiry": u64_value(r.expiry),
        "nonce": r.nonce.to_string(),
    })
}

/// What a live sale waits for, in words.
fn waiting_for(s: &SaleSummary) -> &'static str {
    match s.state {
        "SalePreparing" => "the slot's state from the chain",
        "SaleSlotReserving" => "the reserveSlot receipt",
        "SaleDownloading" => "the download",
        "SaleInitialProving" if s.waiting => "the proof",
        "SaleInitialProving" => "the next period",
        "SaleFilling" => "the fillSlot receipt",
        "SaleFilled" => "the slot's host from the chain",
        "SaleProving" if s.waiting => "a proof or its receipt",
        "SaleProving" => "the next period",
        "SalePayout" | "SaleCancelled" | "SaleFailed" => "the freeSlot receipt",
        "SaleUnknown" => "the slot's state from the chain",
        _ => "nothing",
    }
}

impl Node {
    fn summary_json(&self, s: &SaleSummary) -> Value {
        let sale = self.engine.sale(s.slot);
        let base = sale.and_then(|x| x.base());
        json!({
            "slotId": s.slot.slot_id().to_string(),
            "requestId": s.slot.request_id.to_string(),
            "slotIndex": u64_value(s.slot.slot_index),
            "state": s.state,
            "since": u64_value(s.since),
            "startedAt": u64_value(s.started),
            "waitingFor": waiting_for(s),
            "wakeAt": s.wake.map(u64_value),
            "reservationId": s.reservation.map(|r| r.to_string()),
            "slotSize": base.map(|b| u64_value(b.request.ask.slot_size)),
            "expiresAt": base.map(|b| u64_value(b.expires_at)),
            "endsAt": base.map(|b| u64_value(b.ends_at)),
            "expectedPayout": s.expected_payout.map(|p| p.to_string()),
            "holdsWorker": s.holds_worker,
        })
    }

    /// The live sales, as `codex sale list` prints them.
    fn sales_json(&self) -> Vec<Value> {
        self.engine
            .sales_snapshot()
            .iter()
            .map(|s| self.summary_json(s))
            .collect()
    }

    /// Why the node did or did not take each recently announced request.
    /// Refusals listed one by one per request (`refusalsByRule` counts them all).
    fn recent_json(&self) -> Vec<Value> {
        // The availabilities are read (once) only when a request was not taken: a host
        // with thousands of them pays for the refusals only when there are some.
        let mut availabilities: Option<Vec<Availability>> = None;
        self.recent
            .iter()
            .rev()
            .map(|seen| {
                let taken: Vec<Value> = self
                    .engine
                    .sales_of(seen.request_id)
                    .into_iter()
                    .map(|(i, state)| json!({"slotIndex": u64_value(i), "state": state}))
                    .collect();
                let in_queue = self.engine.queue().request_len(&seen.request_id);
                let ask = SlotAsk::for_slot(
                    seen.request_id,
                    0,
                    &seen.ask,
                    self.now.saturating_add(seen.ask.duration),
                );
                let (mut refusals, mut by_rule, mut refused) = (Vec::new(), BTreeMap::new(), 0);
                let mut offered = 0;
                if taken.is_empty() {
                    let all = availabilities.get_or_insert_with(|| {
                        self.engine.ledger().availabilities().unwrap_or_default()
                    });
                    offered = all.len();
                    for a in all.iter() {
                        if let Some(m) = ledger::mismatch(a, &ask) {
                            refused += 1;
                            *by_rule.entry(rule_name(&m)).or_insert(0u64) += 1;
                            if refusals.len() < MAX_REFUSALS_LISTED {
                                refusals.push(json!({
                                    "availabilityId": a.id.to_string(),
                                    "rule": rule_name(&m),
                                    "reason": m.to_string(),
                                }));
                            }
                        }
                    }
                    if all.is_empty() {
                        refusals.push(json!({"rule": "none", "reason": "no availability is offered"}));
                    }
                }
                if seen.ask.slot_size > self.cfg.quota {
                    refusals.push(json!({
                        "rule": "quota",
                        "reason": format!("slot size {} exceeds the storage quota {}", seen.ask.slot_size, self.cfg.quota),
                    }));
                }
                let matches = offered > refused;
                // A refused request may still wait in the queue, marked seen, for an
                // availability to change.
                let verdict = if !taken.is_empty() {
                    "taken"
                } else if seen.expiry <= self.now {
                    "expired"
                } else if !matches {
                    "refused"
                } else if in_queue > 0 {
                    "queued"
                } else {
                    "not taken (slots filled by others, or the queue was full)"
                };
                json!({
                    "requestId": seen.request_id.to_string(),
                    "seenAt": u64_value(seen.at),
                    "expiry": u64_value(seen.expiry),
                    "slots": u64_value(seen.ask.slots),
                    "slotSize": u64_value(seen.ask.slot_size),
                    "duration": u64_value(seen.ask.duration),
                    "pricePerBytePerSecond": seen.ask.price_per_byte_per_second.to_string(),
                    "collateralPerByte": seen.ask.collateral_per_byte.to_string(),
                    "verdict": verdict,
                    "queued": in_queue,
                    "taken": taken,
                    "refusals": refusals,
                    "refusalsByRule": by_rule,
                    "refusalsNotListed": refused.saturating_sub(MAX_REFUSALS_LISTED),
                })
            })
            .collect()
    }

    /// Sums over the availabilities: offered, free, committed collateral.
    pub(super) fn offer_totals(&self) -> (u64, u64, U256, U256) {
        let all = self.engine.ledger().availabilities().unwrap_or_default();
        let offered = all
            .iter()
            .map(|a| a.total_size)
            .fold(0, u64::saturating_add);
        let free = all.iter().map(|a| a.free_size).fold(0, u64::saturating_add);
        let collateral = all
            .iter()
            .fold(U256::ZERO, |s, a| s.saturating_add(a.total_collateral));
        let held = all.iter().fold(U256::ZERO, |s, a| {
            s.saturating_add(
                a.total_collateral
                    .saturating_sub(a.total_remaining_collateral)
                    .saturating_sub(a.collateral_lost),
            )
        });
        (offered, free, collateral, held)
    }
}

/// The name of the rule that refused a slot.
fn rule_name(m: &ledger::Mismatch) -> &'static str {
    match m {
        ledger::Mismatch::Disabled => "disabled",
        ledger::Mismatch::FreeSize { .. } => "size",
        ledger::Mismatch::Duration { .. } => "duration",
        ledger::Mismatch::Collateral { .. } => "collateral",
        ledger::Mismatch::Price { .. } => "price",
        ledger::Mismatch::Until { .. } => "until",
    }
}

impl Node {
    /// The live sales counted by state, in name order.
    fn sales_by_state(&self) -> Vec<(&'static str, u64)> {
        let mut by_state: Vec<(&'static str, u64)> = Vec::new();
        for s in self.engine.sales_snapshot() {
            match by_state.iter_mut().find(|(st, _)| *st == s.state) {
                Some((_, n)) => *n += 1,
                None => by_state.push((s.state, 1)),
            }
        }
        by_state.sort();
        by_state
    }

    /// Sets the metrics' gauges from the node's state, before a scrape.
    pub(super) fn refresh_gauges(&mut self) {
        let (offered, free, _, held) = self.offer_totals();
        // Counts only: the queue is not copied for a scrape.
        let q = self.engine.queue();
        let (length, capacity) = (q.len() as u64, q.capacity() as u64);
        let (busy, total) = (q.busy_workers() as u64, q.max_workers() as u64);
        let by_state = self.sales_by_state();
        let validator_slots = self.validator_slots();
        let m = &mut self.metrics;
        m.queue_length = length;
        m.queue_capacity = capacity;
        m.workers_busy = busy;
        m.workers_total = total;
        m.sales_by_state = by_state;
        m.tx_sent = self.txs.sent;
        m.tx_reverted = self.txs.reverted;
        m.tx_replaced = self.txs.replaced;
        m.head = self.head;
        m.blocks_behind = self.head.saturating_sub(self.processed);
        m.bytes_offered = offered;
        m.bytes_free = free;
        m.bytes_reserved = offered - free.min(offered);
        m.collateral_held = f64::from(held);
        m.validator_slots = validator_slots;
    }
}

impl Host for Node {
    fn store(&mut self) -> &mut Store {
        self.engine.ledger_port()
    }

    fn limits(&self) -> Limits {
        Limits {
            quota: self.cfg.quota,
            now: wall_now(),
        }
    }

    fn availability_changed(&mut self, grew: bool) {
        // Seen here at once; the tick's data_version check has nothing left to do.
        self.data_version = super::data_version(self.engine.ledger());
        let _ = self.engine.ledger_mut();
        self.engine.handle(
            ChainTime(self.now),
            EngineInput::AvailabilityChanged { grew },
        );
        if grew {
            let open: Vec<MarketEvent> = self.open.values().cloned().collect();
            for ev in open {
                self.engine
                    .handle(ChainTime(self.now), EngineInput::Event(ev));
            }
        }
    }

    fn slots(&self) -> Vec<Value> {
        self.engine
            .sales_snapshot()
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    "SaleFilled" | "SaleProving" | "SalePayout" | "SaleCancelled" | "SaleFailed"
                )
            })
            .filter_map(|s| {
                let base = self.engine.sale(s.slot)?.base()?;
                Some(json!({
                    "id": s.slot.slot_id().to_string(),
                    "request": request_json(s.slot.request_id, &base.request),
                    "slotIndex": u64_value(s.slot.slot_index),
                }))
            })
            .collect()
    }

    fn slot(&self, id: SlotId) -> Option<Value> {
        let s = self
            .engine
            .sales_snapshot()
            .into_iter()
            .find(|s| s.slot.slot_id() == id)?;
        let sale = self.engine.sale(s.slot)?;
        let mut v = json!({
            "state": s.state,
            "requestId": s.slot.request_id.to_string(),
            "slotIndex": u64_value(s.slot.slot_index),
        });
        if let Some(b) = sale.base() {
            v["request"] = request_json(s.slot.request_id, &b.request);
        }
        if let Some(r) = sale.reservation() {
            v["reservation"] = crate::api::json::reservation(r);
        }
        Some(v)
    }

    fn queue(&self) -> Value {
        let q = self.engine.queue_snapshot();
        let items: Vec<Value> = q
            .items
            .iter()
            .map(|i| {
                let it = &i.item;
                json!({
                    "requestId": it.request_id.to_string(),
                    "slotIndex": u64_value(it.slot_index),
                    "slotSize": u64_value(it.slot_size),
                    "duration": u64_value(it.duration),
                    "pricePerBytePerSecond": it.price_per_byte_per_second.to_string(),
                    "collateral": it.collateral.to_string(),
                    "expiry": u64_value(it.expiry),
                    "profitability": i.profitability.to_string(),
                    "seen": it.seen,
                })
            })
            .collect();
        json!({
            "items": items,
            "length": items.len(),
            "capacity": q.capacity,
            "running": q.running,
            "paused": q.paused.is_some(),
            "pausedBecause": q.paused.map(|p| p.to_string()),
            "workersBusy": q.workers_busy,
            "workersFree": q.workers_free,
            "recentRequests": self.recent_json(),
        })
    }

    fn status(&self) -> Value {
        let (offered, free, collateral, held) = self.offer_totals();
        let by_state: serde_json::Map<String, Value> = self
            .sales_by_state()
            .into_iter()
            .map(|(st, n)| (st.to_string(), Value::from(n)))
            .collect();
        let q = self.engine.queue();
        let earnings = self.engine.ledger().earnings().ok();
        let since_block = self
            .last_head_at
            .map(|t| Instant::now().saturating_duration_since(t).as_secs());
        let connected = self.connected_at.map(|t| {
            wall_now().saturating_sub(Instant::now().saturating_duration_since(t).as_secs())
        });
        let healthy = self.connected_at.is_some() && since_block.is_some_and(|s| s < 120);
        json!({
            "healthy": healthy,
            "chain": {
                "provider": self.cfg.provider.url.to_string(),
                "chainId": self.chain_id,
                "head": self.head,
                "headTimestamp": self.now,
                "secondsSinceLastBlock": since_block,
                "connected": self.connected_at.is_some(),
                "connectedSince": connected,
                "reconnects": self.metrics.reconnects.get(),
            },
            "marketplace": {
                "address": self.marketplace.to_string(),
                "token": self.token.to_string(),
                "period": self.market_config.period,
                "timeout": self.market_config.timeout,
                "downtime": self.market_config.downtime,
                "repairRewardPercentage": self.market_config.repair_reward_percentage,
                "requestDurationLimit": self.market_config.request_duration_limit,
            },
            "host": {
                "address": self.txs.address().to_string(),
                "selling": self.cfg.data_source.is_some(),
                "ethBalance": self.balances.0.map(|b| b.to_string()),
                "tokenBalance": self.balances.1.map(|b| b.to_string()),
            },
            "availabilities": {
                "offered": u64_value(offered),
                "free": u64_value(free),
                "committed": u64_value(offered - free.min(offered)),
                "collateral": collateral.to_string(),
                "collateralHeld": held.to_string(),
            },
            "queue": {
                "length": q.len(),
                "capacity": q.capacity(),
                "paused": q.paused().is_some(),
                "pausedBecause": q.paused().map(|p| p.to_string()),
                "workersBusy": q.busy_workers(),
                "workersFree": q.max_workers() - q.busy_workers(),
            },
            "sales": by_state,
            "proofs": {
                "submitted": self.metrics.proofs_submitted.get(),
                "failed": self.metrics.proofs_failed.get(),
                "missed": self.metrics.proofs_missed.get(),
            },
            "validator": self.validator_status(),
            "earnings": earnings.map(|e| json!({
                "salesEnded": e.sales,
                "payout": e.payout.to_string(),
                "collateralReturned": e.collateral_returned.to_string(),
                "collateralLost": e.collateral_lost.to_string(),
            })),
        })
    }

    fn live_sales(&self) -> Vec<Value> {
        self.sales_json()
    }

    fn set_log_level(&mut self, level: &str) -> Result<(), String> {
        let parsed = crate::logging::LogLevel::parse(level)?;
        crate::logging::set_level(&parsed);
        log::info!(target: "codex::node", "log level set to {level}");
        Ok(())
    }

    fn cors_origin(&self) -> Option<String> {
        self.cfg.api.cors_origin.clone()
    }
}
