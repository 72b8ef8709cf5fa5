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
//! - [`Log`], [`Head`]: the log and block header objects the node sends, parsed.
//!
//! The backfill planner and log cursor that consume them, [`LogSync`], live in
//! [`logsync`](super::logsync) and are re-exported here.
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use alloy_primitives::{Address, Bytes, B256};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub use super::logsync::{LogRange, LogSync, SyncEvent, REORG_WINDOW};

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
/// The deadlines are kept in order beside it, so that the loop's every turn (which asks the
/// next deadline and expires the due calls) costs O(log n) with tens of thousands of calls
/// in flight, not a scan of them all.
#[derive(Debug)]
pub struct Pending<T> {
    next_id: CallId,
    calls: HashMap<CallId, PendingCall<T>>,
    deadlines: BTreeSet<(Instant, CallId)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            next_id: 1,
            calls: HashMap::new(),
            deadlines: BTreeSet::new(),
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
        self.deadlines.insert((deadline, id));
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
        let call = self.calls.remove(&id)?;
        self.deadlines.remove(&(call.deadline, id));
        Some(call)
    }

    /// Removes and returns every call whose deadline is at or before `now`, oldest id first.
    pub fn expire(&mut self, now: Instant) -> Vec<(CallId, PendingCall<T>)> {
        let mut due = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            due.push(id);
        }
        due.sort_unstable();
        due.into_iter()
            .filter_map(|id| self.calls.remove(&id).map(|c| (id, c)))
            .collect()
    }

    /// Removes and returns every call (the connection is gone), oldest id first.
    pub fn drain(&mut self) -> Vec<(CallId, PendingCall<T>)> {
        self.deadlines.clear();
        let mut all: Vec<_> = self.calls.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// The earliest deadline in the table.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
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

fn lenient_quantity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_str().and_then(|s| parse_quantity(s).ok()))
}

/// A JSON-RPC quantity held in a JSON value (None for anything else).
pub fn quantity_of(v: &Value) -> Option<u64> {
    v.as_str().and_then(|s| parse_quantity(s).ok())
}

/// Parses a JSON-RPC quantity (`0x`-prefixed hex, no leading zeros required) into a u64.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let hex = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("quantity {s:?} lacks the 0x prefix"))?;
    if hex.is_empty() {
        return Err(format!("quantity {s:?} is empty"));
    }
    // `from_str_radix` alone would also take a sign ("0x+1").
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("quantity {s:?} is not hex"));
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
    /// The block's gas limit (None when the node leaves it out or it is not a quantity).
    #[serde(default, deserialize_with = "lenient_quantity")]
    pub gas_limit: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_header_carries_its_gas_limit_when_the_node_gives_one() {
        let mut v = serde_json::json!({
            "number": "0x10",
            "hash": format!("0x{}", "11".repeat(32)),
            "parentHash": format!("0x{}", "22".repeat(32)),
            "timestamp": "0x64",
            "gasLimit": "0x1c9c380",
        });
        let h = Head::from_value(&v).unwrap();
        assert_eq!(
            (h.number, h.timestamp, h.gas_limit),
            (16, 100, Some(30_000_000))
        );
        v["gasLimit"] = serde_json::json!(7);
        assert_eq!(Head::from_value(&v).unwrap().gas_limit, None);
        v.as_object_mut().unwrap().remove("gasLimit");
        assert_eq!(Head::from_value(&v).unwrap().gas_limit, None);
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
        assert!(parse_quantity("0x+1").is_err(), "a sign is not a hex digit");
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
