//! JSON-RPC 2.0 over a message stream, without I/O.
//!
//! This module is the sans-IO core of the chain client. It never touches a socket or a clock:
//! every function that cares about time takes `now`, and every frame it wants sent is returned
//! as a `String` for the driver to write.
//!
//! - [`Pending`]: request ids and the table of calls in flight, each with a deadline.
//! - [`parse_incoming`]: classifies a text frame from the node as a response or a subscription
//!   notification. It never panics; whatever the node sends becomes a value or a [`ParseError`].
//! - [`Subscriptions`]: which subscription id stands for the Marketplace log subscription and
//!   which for `newHeads`.
//! - [`LogSync`]: the backfill planner and cursor. Invariant: every log of a block at or below
//!   [`LogSync::processed`] has been handed out exactly once (deduplicated by block hash and log
//!   index), in block and log-index order; the cursor only moves once a block is fully covered by
//!   an `eth_getLogs` answer.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use alloy_primitives::{Address, Bytes, B256};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A JSON-RPC request id. codex only ever sends numeric ids.
pub type CallId = u64;

/// An error object returned by the node in place of a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct RpcError {
    /// The numeric error code (anvil: 3 for reverts, hardhat: -32603).
    pub code: i64,
    /// The node's message.
    pub message: String,
    /// The raw `data` member, kept whole so that revert data survives.
    pub data: Option<Box<Value>>,
}

impl RpcError {
    /// The revert data of a failed call, from either node shape:
    /// anvil puts the hex string in `data`, hardhat in `data.data`.
    pub fn revert_data(&self) -> Option<Bytes> {
        let hex = match self.data.as_deref() {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => o.get("data")?.as_str()?,
            _ => return None,
        };
        hex.parse::<Bytes>().ok()
    }

    fn from_value(v: &Value) -> RpcError {
        RpcError {
            code: v.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string(),
            data: v.get("data").cloned().map(Box::new),
        }
    }
}

/// Why a frame from the node could not be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// The frame is not JSON at all.
    #[error("malformed JSON from the node: {0}")]
    Json(String),
    /// The frame is JSON but neither a response nor a subscription notification.
    #[error("unexpected message from the node: {0}")]
    Unexpected(String),
    /// A response whose id is missing, null or not one codex could have sent. When the node
    /// attached an error object (for example to a request it could not parse), it is kept.
    #[error("response with an id codex never sent: {id}")]
    ForeignId {
        /// The id as the node sent it.
        id: String,
        /// The error object of the response, if any.
        error: Option<RpcError>,
    },
}

/// A message from the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to a call.
    Response {
        /// The id of the call.
        id: CallId,
        /// The result, or the error object.
        result: Result<Value, RpcError>,
    },
    /// An `eth_subscription` notification.
    Notification {
        /// The subscription id the node assigned.
        subscription: String,
        /// The payload (a log or a block header).
        result: Value,
    },
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}…", &text[..end])
    } else {
        text.to_string()
    }
}

/// Classifies one text frame. Never panics.
pub fn parse_incoming(text: &str) -> Result<Incoming, ParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    classify(&v, text)
}

/// Classifies one text frame that may be the answer to a batch (a JSON array of responses):
/// one entry per message in it. Never panics.
pub fn parse_incoming_batch(text: &str) -> Vec<Result<Incoming, ParseError>> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![Err(ParseError::Json(e.to_string()))],
    };
    match &v {
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|item| classify(item, text)).collect()
        }
        _ => vec![classify(&v, text)],
    }
}

fn classify(v: &Value, text: &str) -> Result<Incoming, ParseError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ParseError::Unexpected(excerpt(text)))?;
    if obj.get("method").and_then(Value::as_str) == Some("eth_subscription") {
        let params = obj
            .get("params")
            .and_then(Value::as_object)
            .ok_or_else(|| ParseError::Unexpected(excerpt(text)))?;
        let subscription = match params.get("subscription") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(ParseError::Unexpected(excerpt(text))),
        };
        let result = params.get("result").cloned().unwrap_or(Value::Null);
        return Ok(Incoming::Notification {
            subscription,
            result,
        });
    }
    let has_result = obj.contains_key("result");
    let error = obj.get("error").filter(|e| !e.is_null());
    if !has_result && error.is_none() {
        return Err(ParseError::Unexpected(excerpt(text)));
    }
    let error = error.map(RpcError::from_value);
    let id = match obj.get("id") {
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    let Some(id) = id else {
        return Err(ParseError::ForeignId {
            id: obj
                .get("id")
                .map(|i| i.to_string())
                .unwrap_or_else(|| "(none)".into()),
            error,
        });
    };
    let result = match error {
        Some(e) => Err(e),
        None => Ok(obj.get("result").cloned().unwrap_or(Value::Null)),
    };
    Ok(Incoming::Response { id, result })
}

/// One call in flight.
#[derive(Debug, Clone)]
pub struct PendingCall<T> {
    /// The method name, for messages.
    pub method: String,
    /// When the call times out.
    pub deadline: Instant,
    /// What the caller wants to remember about the call.
    pub tag: T,
}

/// The table of calls in flight, keyed by request id. `T` tags each call with its purpose.
#[derive(Debug)]
pub struct Pending<T> {
    next_id: CallId,
    calls: HashMap<CallId, PendingCall<T>>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            next_id: 1,
            calls: HashMap::new(),
        }
    }
}

/// Renders a JSON-RPC 2.0 request frame.
pub fn request_frame(id: CallId, method: &str, params: &Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

impl<T> Pending<T> {
    /// Registers a call and returns its id and the frame to send.
    pub fn start(
        &mut self,
        method: &str,
        params: &Value,
        tag: T,
        deadline: Instant,
    ) -> (CallId, String) {
        let id = self.next_id;
        self.next_id += 1;
        self.calls.insert(
            id,
            PendingCall {
                method: method.to_string(),
                deadline,
                tag,
            },
        );
        (id, request_frame(id, method, params))
    }

    /// Removes and returns the call a response answers; `None` for an id not in the table.
    pub fn complete(&mut self, id: CallId) -> Option<PendingCall<T>> {
        self.calls.remove(&id)
    }

    /// Removes and returns every call whose deadline is at or before `now`, oldest id first.
    pub fn expire(&mut self, now: Instant) -> Vec<(CallId, PendingCall<T>)> {
        let mut due: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        due.into_iter()
            .filter_map(|id| self.calls.remove(&id).map(|c| (id, c)))
            .collect()
    }

    /// Removes and returns every call (the connection is gone), oldest id first.
    pub fn drain(&mut self) -> Vec<(CallId, PendingCall<T>)> {
        let mut all: Vec<_> = self.calls.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// The earliest deadline in the table.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls.values().map(|c| c.deadline).min()
    }

    /// Number of calls in flight.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// The two subscriptions codex keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubKind {
    /// `eth_subscribe ["logs", {address}]` for the Marketplace.
    Logs,
    /// `eth_subscribe ["newHeads"]`.
    NewHeads,
}

impl SubKind {
    /// The `eth_subscribe` parameters for this subscription.
    pub fn params(self, marketplace: Address) -> Value {
        match self {
            SubKind::Logs => serde_json::json!(["logs", {"address": marketplace}]),
            SubKind::NewHeads => serde_json::json!(["newHeads"]),
        }
    }
}

/// Maps the node's subscription ids to what they stand for. Cleared on every reconnect,
/// because subscriptions die with their connection.
#[derive(Debug, Default)]
pub struct Subscriptions {
    by_id: HashMap<String, SubKind>,
}

impl Subscriptions {
    /// Records the id the node returned for an `eth_subscribe`. A result that is not a string
    /// is refused.
    pub fn confirm(&mut self, kind: SubKind, result: &Value) -> Result<String, ParseError> {
        let id = match result {
            Value::String(s) => s.clone(),
            other => {
                return Err(ParseError::Unexpected(format!(
                    "eth_subscribe returned {other} instead of a subscription id"
                )))
            }
        };
        self.by_id.insert(id.clone(), kind);
        Ok(id)
    }

    /// What a notification's subscription id stands for; `None` for an unknown id.
    pub fn kind_of(&self, id: &str) -> Option<SubKind> {
        self.by_id.get(id).copied()
    }

    /// Whether the given kind is active.
    pub fn has(&self, kind: SubKind) -> bool {
        self.by_id.values().any(|k| *k == kind)
    }

    /// Forgets every subscription.
    pub fn clear(&mut self) {
        self.by_id.clear();
    }
}

fn quantity<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_quantity(&s).map_err(serde::de::Error::custom)
}

/// Parses a JSON-RPC quantity (`0x`-prefixed hex, no leading zeros required) into a u64.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let hex = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("quantity {s:?} lacks the 0x prefix"))?;
    if hex.is_empty() {
        return Err(format!("quantity {s:?} is empty"));
    }
    u64::from_str_radix(hex, 16).map_err(|_| format!("quantity {s:?} is not a 64-bit hex number"))
}

/// An Ethereum log as returned by `eth_getLogs` and log subscriptions. Unknown fields (anvil's
/// `blockTimestamp`) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    /// The emitting contract.
    pub address: Address,
    /// topic0 (the event signature hash) and the indexed arguments.
    pub topics: Vec<B256>,
    /// The non-indexed arguments, ABI-encoded.
    pub data: Bytes,
    /// Hash of the containing block.
    pub block_hash: B256,
    /// Number of the containing block.
    #[serde(deserialize_with = "quantity")]
    pub block_number: u64,
    /// Hash of the emitting transaction.
    pub transaction_hash: B256,
    /// Index of the transaction in the block.
    #[serde(deserialize_with = "quantity")]
    pub transaction_index: u64,
    /// Index of the log in the block.
    #[serde(deserialize_with = "quantity")]
    pub log_index: u64,
    /// True when the log was removed by a reorganisation.
    #[serde(default)]
    pub removed: bool,
}

impl Log {
    /// Parses one log object.
    pub fn from_value(v: &Value) -> Result<Log, ParseError> {
        Log::deserialize(v).map_err(|e| ParseError::Unexpected(format!("bad log: {e}")))
    }

    /// The deduplication key.
    pub fn key(&self) -> (B256, u64) {
        (self.block_hash, self.log_index)
    }
}

/// A block header from a `newHeads` notification (only the fields codex uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// Block number.
    #[serde(deserialize_with = "quantity")]
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Block timestamp (Unix seconds).
    #[serde(deserialize_with = "quantity")]
    pub timestamp: u64,
}

impl Head {
    /// Parses one header object.
    pub fn from_value(v: &Value) -> Result<Head, ParseError> {
        Head::deserialize(v).map_err(|e| ParseError::Unexpected(format!("bad block header: {e}")))
    }
}

/// Parses the result of `eth_getLogs`.
pub fn parse_logs(v: &Value) -> Result<Vec<Log>, ParseError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ParseError::Unexpected("eth_getLogs result is not an array".into()))?;
    arr.iter().map(Log::from_value).collect()
}

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

    /// The connection dropped: the range in flight will never be answered.
    pub fn on_disconnect(&mut self) {
        self.in_flight = None;
    }

    /// A head number from `eth_blockNumber` or `newHeads`. When `from_subscription` and the
    /// head is at or below the cursor, the chain was reorganised: the cursor moves back (within
    /// [`REORG_WINDOW`]) so that the replaced blocks are queried again; deduplication keeps the
    /// logs that did not change from being handed out twice, and logs handed out earlier that
    /// the new answer lacks are reported as [`SyncEvent::Removed`] (nodes such as anvil send no
    /// `removed: true` notifications of their own).
    pub fn on_head(&mut self, number: u64, from_subscription: bool) {
        if from_subscription && number < self.next_block {
            let floor = self.next_block.saturating_sub(REORG_WINDOW);
            self.next_block = number.max(floor).max(self.start_block);
            self.head = Some(number);
            return;
        }
        self.head = Some(self.head.map_or(number, |h| h.max(number)));
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

    /// A log from the Marketplace subscription. Logs above the cursor wait for their block to
    /// be covered by a range; a `removed` log that was handed out becomes
    /// [`SyncEvent::Removed`]; a new log at or below the cursor (a replacement block after a
    /// reorganisation) is handed out at once, after the removal of the logs handed out for an
    /// earlier block at the same height.
    pub fn on_subscription_log(&mut self, log: Log, out: &mut Vec<SyncEvent>) {
        let key = log.key();
        if log.removed {
            if self.seen.remove(&key).is_some() {
                out.push(SyncEvent::Removed(log));
            } else if self
                .buffered
                .remove(&(log.block_number, log.log_index, log.block_hash))
                .is_none()
            {
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
            self.buffered
                .insert((log.block_number, log.log_index, log.block_hash), log);
        } else {
            // A log of a block at this height with another hash: that block was replaced, so
            // the logs handed out for it are gone.
            let (number, hash) = (log.block_number, log.block_hash);
            self.remove_where(|l| l.block_number == number && l.block_hash != hash, out);
            self.emit(log, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn ids_increase_and_frames_are_jsonrpc() {
        let now = Instant::now();
        let mut p: Pending<&str> = Pending::default();
        let (a, fa) = p.start("eth_chainId", &serde_json::json!([]), "x", now);
        let (b, _) = p.start("eth_blockNumber", &serde_json::json!([]), "y", now);
        assert!(b > a);
        let v: Value = serde_json::from_str(&fa).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], a);
        assert_eq!(v["method"], "eth_chainId");
        assert_eq!(p.len(), 2);
        assert_eq!(p.complete(a).unwrap().tag, "x");
        assert!(p.complete(a).is_none(), "an id completes once");
    }

    #[test]
    fn deadlines_are_data() {
        let t0 = Instant::now();
        let mut p: Pending<u8> = Pending::default();
        let (a, _) = p.start("a", &Value::Null, 1, t0 + Duration::from_secs(5));
        let (b, _) = p.start("b", &Value::Null, 2, t0 + Duration::from_secs(2));
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert!(p.expire(t0 + Duration::from_secs(1)).is_empty());
        let due = p.expire(t0 + Duration::from_secs(2));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, b);
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(5)));
        let rest = p.drain();
        assert_eq!(rest[0].0, a);
        assert!(p.is_empty());
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn parses_results_errors_and_notifications() {
        assert_eq!(
            parse_incoming(r#"{"jsonrpc":"2.0","id":7,"result":"0x10"}"#),
            Ok(Incoming::Response {
                id: 7,
                result: Ok(Value::String("0x10".into()))
            })
        );
        let Ok(Incoming::Response {
            id: 3,
            result: Err(e),
        }) = parse_incoming(
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":3,"message":"execution reverted: custom error 0x3b920b88","data":"0x3b920b88"}}"#,
        )
        else {
            panic!("anvil revert not parsed");
        };
        assert_eq!(e.code, 3);
        assert_eq!(e.revert_data().unwrap().as_ref(), &[0x3b, 0x92, 0x0b, 0x88]);
        let Ok(Incoming::Response { result: Err(e), .. }) = parse_incoming(
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"Error: VM Exception","data":{"message":"x","data":"0x3b920b88"}}}"#,
        ) else {
            panic!("hardhat revert not parsed");
        };
        assert_eq!(e.revert_data().unwrap().as_ref(), &[0x3b, 0x92, 0x0b, 0x88]);
        assert_eq!(
            parse_incoming(
                r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"number":"0x1"}}}"#
            ),
            Ok(Incoming::Notification {
                subscription: "0xab".into(),
                result: serde_json::json!({"number":"0x1"})
            })
        );
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "{",
            "null",
            "[]",
            "[1,2]",
            "42",
            r#"{"id":1}"#,
            r#"{"id":"abc","result":1}"#,
            r#"{"id":-1,"result":1}"#,
            r#"{"id":1.5,"result":1}"#,
            r#"{"id":null,"error":{"code":-32700,"message":"parse error"}}"#,
            r#"{"method":"eth_subscription"}"#,
            r#"{"method":"eth_subscription","params":{"result":1}}"#,
            r#"{"method":"other","params":[]}"#,
            "\u{1F600}\u{1F600}",
        ] {
            assert!(parse_incoming(text).is_err(), "accepted {text:?}");
        }
        let Err(ParseError::ForeignId { error: Some(e), .. }) =
            parse_incoming(r#"{"id":null,"error":{"code":-32700,"message":"parse error"}}"#)
        else {
            panic!("null-id error lost");
        };
        assert_eq!(e.code, -32700);
        // An error object without the usual members still becomes an error.
        let Ok(Incoming::Response { result: Err(e), .. }) =
            parse_incoming(r#"{"id":9,"error":"boom"}"#)
        else {
            panic!("odd error object");
        };
        assert_eq!(e.code, 0);
        assert_eq!(e.revert_data(), None);
    }

    #[test]
    fn subscriptions_map_ids() {
        let mut s = Subscriptions::default();
        s.confirm(SubKind::Logs, &Value::String("0x1".into()))
            .unwrap();
        s.confirm(SubKind::NewHeads, &Value::String("0x2".into()))
            .unwrap();
        assert_eq!(s.kind_of("0x1"), Some(SubKind::Logs));
        assert_eq!(s.kind_of("0x2"), Some(SubKind::NewHeads));
        assert_eq!(s.kind_of("0x3"), None);
        assert!(s.confirm(SubKind::Logs, &serde_json::json!(5)).is_err());
        s.clear();
        assert!(!s.has(SubKind::Logs));
        let p = SubKind::Logs.params(Address::repeat_byte(1));
        assert_eq!(p[0], "logs");
        assert_eq!(
            p[1]["address"],
            "0x0101010101010101010101010101010101010101"
        );
    }

    #[test]
    fn parses_logs_and_ignores_unknown_fields() {
        let v = serde_json::json!({
            "address": "0xa85233c63b9ee964add6f2cffe00fd84eb32338f",
            "topics": ["0x1bf9c457accf8703dbf7cdf1b58c2f74ddf2e525f98155c70b3d318d74609bd8"],
            "data": "0x00",
            "blockHash": format!("0x{}", "ab".repeat(32)),
            "blockNumber": "0x10a",
            "blockTimestamp": "0x65",
            "transactionHash": format!("0x{}", "cd".repeat(32)),
            "transactionIndex": "0x0",
            "logIndex": "0x2",
            "removed": false
        });
        let l = Log::from_value(&v).unwrap();
        assert_eq!(l.block_number, 266);
        assert_eq!(l.log_index, 2);
        let mut bad = v.clone();
        bad["blockNumber"] = Value::String("266".into());
        assert!(Log::from_value(&bad).is_err());
        assert!(parse_logs(&serde_json::json!({})).is_err());
        assert_eq!(parse_logs(&serde_json::json!([v])).unwrap().len(), 1);
        assert_eq!(parse_quantity("0x"), Err("quantity \"0x\" is empty".into()));
        assert!(parse_quantity("0x1ffffffffffffffff").is_err());
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

    #[test]
    fn cursor_holds_when_a_range_fails_or_the_link_drops() {
        let mut s = LogSync::new(10, None, 5);
        s.on_head(20, false);
        let r = s.next_range().unwrap();
        s.on_range_failed();
        assert_eq!(s.processed(), Some(9));
        assert_eq!(s.next_range(), Some(r), "the same range again");
        s.on_disconnect();
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

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn a_batch_answer_gives_one_message_per_entry_and_never_panics() {
        let text = r#"[{"jsonrpc":"2.0","id":3,"result":"0x01"},{"jsonrpc":"2.0","id":4,"error":{"code":3,"message":"execution reverted","data":"0x3b920b88"}},7]"#;
        let got = parse_incoming_batch(text);
        assert_eq!(got.len(), 3);
        assert!(matches!(
            &got[0],
            Ok(Incoming::Response {
                id: 3,
                result: Ok(_)
            })
        ));
        assert!(matches!(
            &got[1],
            Ok(Incoming::Response {
                id: 4,
                result: Err(_)
            })
        ));
        assert!(got[2].is_err(), "a stray entry is an error, not a panic");
        assert_eq!(parse_incoming_batch("[").len(), 1);
        assert!(parse_incoming_batch("[]")[0].is_err());
        // A single object still parses.
        assert!(matches!(
            parse_incoming_batch(r#"{"jsonrpc":"2.0","id":9,"result":null}"#)[..],
            [Ok(Incoming::Response { id: 9, .. })]
        ));
    }
}
