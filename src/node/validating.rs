//! The validator wired into the node's loop: Marketplace events and heads go to the
//! [`Validator`] core, its views go out as JSON-RPC batches on the one connection, its marks
//! through the node's [`TxBook`] (tagged [`TxTag::Mark`]), and the answers come back to it.
//! Nothing here waits: answers arrive through `on_response` and the transaction actions.
use alloy_primitives::{Address, Bytes};
use mio::Registry;
use serde_json::{json, Value};

use super::{hex_bytes, to_rpc_log, Node, NodeError, Purpose, TxTag, MAX_RANGE};
use crate::chain::client::BlockingClient;
use crate::chain::rpc::parse_logs;
use crate::chain::tx::GasCall;
use crate::chain::txbook::{Mined, TxFailure, TxRequest};
use crate::chain::ChainError;
use crate::market::errors::MarketError;
use crate::market::events::decode_log;
use crate::market::{calls, MarketEvent, SlotId};
use crate::validator::{Refusal, Validator, ValidatorCommand};

/// Views sent in one JSON-RPC batch.
const VIEWS_PER_BATCH: usize = 64;
/// Validator commands taken per pump step, so that a period's burst of checks is spread
/// over loop turns like the sales' work.
const COMMANDS_PER_STEP: usize = 256;

/// Hands a Marketplace event to the validator.
pub(super) fn feed(v: &mut Validator, ev: &MarketEvent) {
    match ev {
        MarketEvent::SlotFilled {
            request_id,
            slot_index,
        } => v.slot_filled(*request_id, *slot_index),
        MarketEvent::SlotFreed {
            request_id,
            slot_index,
        } => v.slot_freed(*request_id, *slot_index),
        MarketEvent::RequestFailed { request_id }
        | MarketEvent::RequestCancelled { request_id } => v.request_ended(*request_id),
        _ => {}
    }
}

/// The events the validator learns from (fills, frees, failed and cancelled requests) in
/// blocks `from..to`, in chain order: what a restarted validator read before its cursor.
pub(super) fn history(
    rpc: &mut BlockingClient,
    marketplace: Address,
    from: u64,
    to: u64,
) -> Result<Vec<MarketEvent>, NodeError> {
    use crate::market::abi::Marketplace as M;
    use alloy_sol_types::SolEvent;
    let topics = [
        M::SlotFilled::SIGNATURE_HASH,
        M::SlotFreed::SIGNATURE_HASH,
        M::RequestFailed::SIGNATURE_HASH,
        M::RequestCancelled::SIGNATURE_HASH,
    ];
    let mut events = Vec::new();
    let mut b = from;
    while b < to {
        let end = (b + MAX_RANGE - 1).min(to - 1);
        let v = rpc.call(
            "eth_getLogs",
            json!([{"address": marketplace, "fromBlock": format!("{b:#x}"), "toBlock": format!("{end:#x}"), "topics": [topics]}]),
        )?;
        let logs = parse_logs(&v).map_err(|e| super::bad("eth_getLogs", e))?;
        events.extend(
            logs.iter()
                .filter_map(|l| decode_log(&to_rpc_log(l)).ok())
                .map(|d| d.event),
        );
        b = end + 1;
    }
    Ok(events)
}

/// A failed transaction as the validator sees it.
fn refusal_of_tx(e: &TxFailure) -> Refusal {
    match e {
        TxFailure::Estimate(c) => match c.revert_data() {
            Some(data) => Refusal::Contract(MarketError::from_revert_data(&data)),
            None => Refusal::Transient(c.to_string()),
        },
        TxFailure::Reverted { .. } => Refusal::RevertedOnChain(e.to_string()),
        TxFailure::Rejected(_) | TxFailure::Transient(_) => Refusal::Transient(e.to_string()),
    }
}

/// A failed view as the validator sees it.
fn refusal_of_call(e: &ChainError) -> Refusal {
    match e.revert_data() {
        Some(data) => Refusal::Contract(MarketError::from_revert_data(&data)),
        None => Refusal::Transient(e.to_string()),
    }
}

impl Node {
    /// Carries out what the validator asks for (a bounded number per step); true when it
    /// asked for anything.
    pub(super) fn run_validator(&mut self, reg: &Registry) -> bool {
        let Some(v) = self.validator.as_mut() else {
            return false;
        };
        let mut views: Vec<(Purpose, Vec<u8>)> = Vec::new();
        let mut marks: Vec<(SlotId, u64)> = Vec::new();
        while views.len() + marks.len() < COMMANDS_PER_STEP {
            let Some(c) = v.poll() else { break };
            match c {
                ValidatorCommand::ReadSlotState(slot) => {
                    views.push((Purpose::ValidatorSlotState(slot), calls::slot_state(slot)))
                }
                ValidatorCommand::CanMark { slot, period } => views.push((
                    Purpose::CanMark(slot, period),
                    calls::can_mark_proof_as_missing(slot, period),
                )),
                ValidatorCommand::Mark { slot, period } => marks.push((slot, period)),
            }
        }
        let any = !views.is_empty() || !marks.is_empty();
        let from = self.txs.address();
        for chunk in views.chunks(VIEWS_PER_BATCH) {
            let params: Vec<(&str, Value)> = chunk
                .iter()
                .map(|(_, data)| {
                    (
                        "eth_call",
                        json!([{"from": from, "to": self.marketplace, "data": Bytes::from(data.clone())}, "pending"]),
                    )
                })
                .collect();
            let now = std::time::Instant::now();
            let ids = self.client.call_batch(reg, &params, now);
            for (id, (purpose, _)) in ids.into_iter().zip(chunk) {
                self.calls.insert(id, (*purpose, now));
            }
        }
        for (slot, period) in marks {
            let r = TxRequest {
                tag: TxTag::Mark(slot, period),
                label: "markProofAsMissing",
                call: GasCall::MarkProofAsMissing,
                to: self.marketplace,
                data: Bytes::from(calls::mark_proof_as_missing(slot, period)),
            };
            self.txs.send(r, &mut self.tx_actions);
        }
        any
    }

    /// The answer to a `slotState` the validator asked.
    pub(super) fn on_validator_slot_state(
        &mut self,
        slot: SlotId,
        result: Result<Value, ChainError>,
    ) {
        let state = result.map_err(|e| e.to_string()).and_then(|v| {
            hex_bytes(&v)
                .ok_or_else(|| format!("{v} is not hex data"))
                .and_then(|d| calls::decode_slot_state(&d).map_err(|e| e.to_string()))
        });
        if let Some(v) = self.validator.as_mut() {
            v.on_slot_state(slot, state);
        }
    }

    /// The answer to `canMarkProofAsMissing(slot, period)`: success means the mark can go.
    pub(super) fn on_can_mark(
        &mut self,
        slot: SlotId,
        period: u64,
        result: Result<Value, ChainError>,
    ) {
        let answer = result.map(|_| ()).map_err(|e| refusal_of_call(&e));
        if let Some(v) = self.validator.as_mut() {
            v.on_can_mark(slot, period, answer);
        }
    }

    /// A `markProofAsMissing` transaction ended.
    pub(super) fn on_mark_done(
        &mut self,
        slot: SlotId,
        period: u64,
        res: Result<Mined, TxFailure>,
    ) {
        let outcome = match &res {
            Ok(m) => {
                // The reward is the Marketplace's one token transfer in the receipt.
                let reward = self.transfers_from_marketplace(&m.logs);
                self.validator_rewards = self.validator_rewards.saturating_add(reward);
                self.metrics.validator_marks.inc();
                log::debug!(target: "codex::validator", "slot {}: the mark of period {period} paid a reward of {reward}", crate::market::short(&slot));
                Ok(())
            }
            Err(e) => Err(refusal_of_tx(e)),
        };
        if let Some(v) = self.validator.as_mut() {
            v.on_marked(slot, period, outcome);
        }
    }

    /// The validator's part of `codex status` (null when it is off).
    pub(super) fn validator_status(&self) -> Value {
        let Some(v) = self.validator.as_ref() else {
            return Value::Null;
        };
        let st = v.stats();
        let opts = v.config().options;
        json!({
            "watching": st.watched,
            "checking": st.candidates,
            "maxSlots": opts.max_slots,
            "groups": opts.groups.map(|g| g.count()),
            "groupIndex": opts.groups.map(|g| g.index()),
            "marks": st.marks,
            "tooLate": st.too_late,
            "markedByOthers": st.marked_by_others,
            "notWatchedFull": st.refused_full,
            "rewards": self.validator_rewards.to_string(),
        })
    }

    /// Slots the validator watches, for the metrics.
    pub(super) fn validator_slots(&self) -> u64 {
        self.validator
            .as_ref()
            .map_or(0, |v| v.stats().watched as u64)
    }
}
