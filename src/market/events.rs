//! Marketplace logs as JSON-RPC delivers them, decoded into [`MarketEvent`]s with their
//! position on chain, and the JSON line encoding `codex events` prints.
//!
//! Invariants:
//! - Nothing here panics on what a node sends: malformed JSON, unknown events, wrong topic
//!   counts, short or oversized data and out-of-range integers are typed [`EventError`]s.
//! - Unknown fields of a log (anvil's `blockTimestamp`) are ignored.
//! - Decoding is strict: every `uint64` word must fit, the topic count must match the event's
//!   indexed parameters, and the data must be exactly the event's encoding.
//!
//! Pure: values in, values out.

use alloy_primitives::{Address, Bytes, B256};
use alloy_sol_types::SolEvent;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};

use super::abi::Marketplace;
use super::types::{Ask, MarketEvent, RequestId, SlotId};

/// Why a log could not be decoded into a [`MarketEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The text is not valid JSON for a log or a log notification.
    #[error("malformed log JSON: {0}")]
    Json(String),
    /// A JSON-RPC message that is not an `eth_subscription` notification.
    #[error("not an eth_subscription notification (method {0:?})")]
    NotANotification(String),
    /// The log has no topics (an anonymous event), so it is not a Marketplace event.
    #[error("log has no topics")]
    NoTopics,
    /// topic0 is not one of the Marketplace events of `docs/marketplace.md#events`.
    #[error("unknown event topic {0:#x}")]
    UnknownEvent(B256),
    /// The topics or data do not match the event's ABI (wrong topic count, wrong data
    /// length, a value out of range for its type).
    #[error("malformed {event} log: {reason}")]
    Malformed {
        /// The event that topic0 names.
        event: &'static str,
        /// What did not match.
        reason: String,
    },
    /// A pending log: it lacks a field that only mined logs carry.
    #[error("log has no {0} (pending log?)")]
    MissingPosition(&'static str),
}

/// A log as `eth_getLogs` and `eth_subscribe("logs")` return it. Unknown fields are ignored.
/// Position fields are `None` for pending logs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcLog {
    /// The emitting contract.
    pub address: Address,
    /// topic0 (the event signature hash) and the indexed parameters.
    pub topics: Vec<B256>,
    /// The ABI-encoded non-indexed parameters.
    pub data: Bytes,
    /// Hash of the block containing the log.
    #[serde(default)]
    pub block_hash: Option<B256>,
    /// Number of the block containing the log.
    #[serde(default, deserialize_with = "quantity_opt")]
    pub block_number: Option<u64>,
    /// Hash of the transaction that emitted the log.
    #[serde(default)]
    pub transaction_hash: Option<B256>,
    /// Index of that transaction in its block.
    #[serde(default, deserialize_with = "quantity_opt")]
    pub transaction_index: Option<u64>,
    /// Index of the log in its block.
    #[serde(default, deserialize_with = "quantity_opt")]
    pub log_index: Option<u64>,
    /// True when a reorg removed the log from the canonical chain.
    #[serde(default)]
    pub removed: bool,
}

/// An `eth_subscription` notification carrying a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogNotification {
    /// The subscription id the node assigned.
    pub subscription: String,
    /// The log.
    pub log: RpcLog,
}

#[derive(Deserialize)]
struct NotificationFrame {
    method: String,
    params: NotificationParams,
}

#[derive(Deserialize)]
struct NotificationParams {
    subscription: String,
    result: RpcLog,
}

/// Where a log sits on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogPosition {
    /// Number of the block containing the log.
    pub block_number: u64,
    /// Hash of that block.
    pub block_hash: B256,
    /// Hash of the emitting transaction.
    pub transaction_hash: B256,
    /// Index of the transaction in the block.
    pub transaction_index: u64,
    /// Index of the log in the block.
    pub log_index: u64,
    /// True when a reorg removed the log.
    pub removed: bool,
}

/// A decoded Marketplace event and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEvent {
    /// The emitting contract.
    pub address: Address,
    /// Where the log sits on chain.
    pub position: LogPosition,
    /// The event.
    pub event: MarketEvent,
}

/// Parses one log object (JSON text).
pub fn parse_log(json: &str) -> Result<RpcLog, EventError> {
    serde_json::from_str(json).map_err(|e| EventError::Json(e.to_string()))
}

/// Parses a WebSocket text frame holding an `eth_subscription` notification for a log.
pub fn parse_log_notification(frame: &str) -> Result<LogNotification, EventError> {
    let f: NotificationFrame =
        serde_json::from_str(frame).map_err(|e| EventError::Json(e.to_string()))?;
    if f.method != "eth_subscription" {
        return Err(EventError::NotANotification(f.method));
    }
    Ok(LogNotification {
        subscription: f.params.subscription,
        log: f.params.result,
    })
}

/// Decodes a mined log into its event and position.
pub fn decode_log(log: &RpcLog) -> Result<DecodedEvent, EventError> {
    let event = decode_event(&log.topics, &log.data)?;
    let position = LogPosition {
        block_number: log
            .block_number
            .ok_or(EventError::MissingPosition("blockNumber"))?,
        block_hash: log
            .block_hash
            .ok_or(EventError::MissingPosition("blockHash"))?,
        transaction_hash: log
            .transaction_hash
            .ok_or(EventError::MissingPosition("transactionHash"))?,
        transaction_index: log
            .transaction_index
            .ok_or(EventError::MissingPosition("transactionIndex"))?,
        log_index: log
            .log_index
            .ok_or(EventError::MissingPosition("logIndex"))?,
        removed: log.removed,
    };
    Ok(DecodedEvent {
        address: log.address,
        position,
        event,
    })
}

/// The topic0 values of the events [`decode_event`] knows, for `eth_subscribe`/`eth_getLogs`
/// filters (`topics: [[...]]`).
pub const EVENT_TOPICS: [B256; 8] = [
    Marketplace::StorageRequested::SIGNATURE_HASH,
    Marketplace::SlotFilled::SIGNATURE_HASH,
    Marketplace::SlotFreed::SIGNATURE_HASH,
    Marketplace::SlotReservationsFull::SIGNATURE_HASH,
    Marketplace::RequestFulfilled::SIGNATURE_HASH,
    Marketplace::RequestFailed::SIGNATURE_HASH,
    Marketplace::RequestCancelled::SIGNATURE_HASH,
    Marketplace::ProofSubmitted::SIGNATURE_HASH,
];

/// Decodes event `E` strictly: exactly `1 + indexed` topics, data exactly the encoding.
fn strict<E: SolEvent>(indexed: usize, topics: &[B256], data: &[u8]) -> Result<E, EventError> {
    let malformed = |reason: String| EventError::Malformed {
        event: event_name(E::SIGNATURE),
        reason,
    };
    if topics.len() != 1 + indexed {
        return Err(malformed(format!(
            "{} topics, expected {}",
            topics.len(),
            1 + indexed
        )));
    }
    let e = E::decode_raw_log_validate(topics.iter().copied(), data)
        .map_err(|e| malformed(e.to_string()))?;
    if e.abi_encoded_size() != data.len() {
        return Err(malformed(format!(
            "{} data bytes, expected {}",
            data.len(),
            e.abi_encoded_size()
        )));
    }
    Ok(e)
}

/// The part of a signature before the parenthesis.
fn event_name(signature: &'static str) -> &'static str {
    signature.split('(').next().unwrap_or(signature)
}

/// Decodes a Marketplace event from its topics and data (`docs/marketplace.md#events`).
pub fn decode_event(topics: &[B256], data: &[u8]) -> Result<MarketEvent, EventError> {
    use Marketplace as M;
    let topic0 = *topics.first().ok_or(EventError::NoTopics)?;
    Ok(match topic0 {
        M::StorageRequested::SIGNATURE_HASH => {
            let e: M::StorageRequested = strict(0, topics, data)?;
            MarketEvent::StorageRequested {
                request_id: RequestId(e.requestId),
                ask: Ask::from_abi(&e.ask),
                expiry: e.expiry,
            }
        }
        M::SlotFilled::SIGNATURE_HASH => {
            let e: M::SlotFilled = strict(1, topics, data)?;
            MarketEvent::SlotFilled {
                request_id: RequestId(e.requestId),
                slot_index: e.slotIndex,
            }
        }
        M::SlotFreed::SIGNATURE_HASH => {
            let e: M::SlotFreed = strict(1, topics, data)?;
            MarketEvent::SlotFreed {
                request_id: RequestId(e.requestId),
                slot_index: e.slotIndex,
            }
        }
        M::SlotReservationsFull::SIGNATURE_HASH => {
            let e: M::SlotReservationsFull = strict(1, topics, data)?;
            MarketEvent::SlotReservationsFull {
                request_id: RequestId(e.requestId),
                slot_index: e.slotIndex,
            }
        }
        M::RequestFulfilled::SIGNATURE_HASH => {
            let e: M::RequestFulfilled = strict(1, topics, data)?;
            MarketEvent::RequestFulfilled {
                request_id: RequestId(e.requestId),
            }
        }
        M::RequestFailed::SIGNATURE_HASH => {
            let e: M::RequestFailed = strict(1, topics, data)?;
            MarketEvent::RequestFailed {
                request_id: RequestId(e.requestId),
            }
        }
        M::RequestCancelled::SIGNATURE_HASH => {
            let e: M::RequestCancelled = strict(1, topics, data)?;
            MarketEvent::RequestCancelled {
                request_id: RequestId(e.requestId),
            }
        }
        M::ProofSubmitted::SIGNATURE_HASH => {
            let e: M::ProofSubmitted = strict(0, topics, data)?;
            MarketEvent::ProofSubmitted {
                slot_id: SlotId(e.id),
            }
        }
        other => return Err(EventError::UnknownEvent(other)),
    })
}

/// Encodes an event back into (topics, data) as the contract emits it. The inverse of
/// [`decode_event`]; used to build fixtures and by the simulated marketplace.
pub fn encode_event(event: &MarketEvent) -> (Vec<B256>, Vec<u8>) {
    use Marketplace as M;
    fn enc<E: SolEvent>(e: &E) -> (Vec<B256>, Vec<u8>) {
        let topics = e.encode_topics().into_iter().map(|t| t.0).collect();
        (topics, e.encode_data())
    }
    match event {
        MarketEvent::StorageRequested {
            request_id,
            ask,
            expiry,
        } => enc(&M::StorageRequested {
            requestId: request_id.0,
            ask: ask.to_abi(),
            expiry: *expiry,
        }),
        MarketEvent::SlotFilled {
            request_id,
            slot_index,
        } => enc(&M::SlotFilled {
            requestId: request_id.0,
            slotIndex: *slot_index,
        }),
        MarketEvent::SlotFreed {
            request_id,
            slot_index,
        } => enc(&M::SlotFreed {
            requestId: request_id.0,
            slotIndex: *slot_index,
        }),
        MarketEvent::SlotReservationsFull {
            request_id,
            slot_index,
        } => enc(&M::SlotReservationsFull {
            requestId: request_id.0,
            slotIndex: *slot_index,
        }),
        MarketEvent::RequestFulfilled { request_id } => enc(&M::RequestFulfilled {
            requestId: request_id.0,
        }),
        MarketEvent::RequestFailed { request_id } => enc(&M::RequestFailed {
            requestId: request_id.0,
        }),
        MarketEvent::RequestCancelled { request_id } => enc(&M::RequestCancelled {
            requestId: request_id.0,
        }),
        MarketEvent::ProofSubmitted { slot_id } => enc(&M::ProofSubmitted { id: slot_id.0 }),
    }
}

// ---------------------------------------------------------------------------------------------
// Hex quantities

/// Parses a JSON-RPC hex quantity (`0x` then 1 to 16 hex digits) into a u64.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x")?;
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn quantity_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s: Option<std::borrow::Cow<'de, str>> = Option::deserialize(d)?;
    match s {
        None => Ok(None),
        Some(s) => parse_quantity(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid hex quantity {s:?}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON output (the reference's encodings)

/// A u64 as the reference encodes it: a JSON number, or a decimal string above i64::MAX.
#[derive(Debug, Clone, Copy)]
pub struct JsonU64(pub u64);

impl Serialize for JsonU64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 > i64::MAX as u64 {
            s.collect_str(&self.0)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

/// An [`Ask`] in the reference's JSON: 256-bit amounts as decimal strings, the rest numbers,
/// camelCase names.
#[derive(Debug, Clone, Copy)]
pub struct AskJson<'a>(pub &'a Ask);

impl Serialize for AskJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("proofProbability", &a.proof_probability.to_string())?;
        m.serialize_entry(
            "pricePerBytePerSecond",
            &a.price_per_byte_per_second.to_string(),
        )?;
        m.serialize_entry("collateralPerByte", &a.collateral_per_byte.to_string())?;
        m.serialize_entry("slots", &JsonU64(a.slots))?;
        m.serialize_entry("slotSize", &JsonU64(a.slot_size))?;
        m.serialize_entry("duration", &JsonU64(a.duration))?;
        m.serialize_entry("maxSlotLoss", &JsonU64(a.max_slot_loss))?;
        m.end()
    }
}

/// One line of `codex events`: position first, then `event` (the name), then the event's
/// fields flat at the top level (`requestId`, `slotIndex`, `ask`, `expiry`, `slotId`).
impl Serialize for DecodedEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = &self.position;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("blockNumber", &JsonU64(p.block_number))?;
        m.serialize_entry("blockHash", &p.block_hash)?;
        m.serialize_entry("transactionHash", &p.transaction_hash)?;
        m.serialize_entry("transactionIndex", &JsonU64(p.transaction_index))?;
        m.serialize_entry("logIndex", &JsonU64(p.log_index))?;
        m.serialize_entry("removed", &p.removed)?;
        m.serialize_entry("address", &self.address)?;
        m.serialize_entry("event", self.event.name())?;
        match &self.event {
            MarketEvent::StorageRequested {
                request_id,
                ask,
                expiry,
            } => {
                m.serialize_entry("requestId", request_id)?;
                m.serialize_entry("ask", &AskJson(ask))?;
                m.serialize_entry("expiry", &JsonU64(*expiry))?;
            }
            MarketEvent::SlotFilled {
                request_id,
                slot_index,
            }
            | MarketEvent::SlotFreed {
                request_id,
                slot_index,
            }
            | MarketEvent::SlotReservationsFull {
                request_id,
                slot_index,
            } => {
                m.serialize_entry("requestId", request_id)?;
                m.serialize_entry("slotIndex", &JsonU64(*slot_index))?;
            }
            MarketEvent::RequestFulfilled { request_id }
            | MarketEvent::RequestFailed { request_id }
            | MarketEvent::RequestCancelled { request_id } => {
                m.serialize_entry("requestId", request_id)?;
            }
            MarketEvent::ProofSubmitted { slot_id } => {
                m.serialize_entry("slotId", slot_id)?;
            }
        }
        m.end()
    }
}

impl DecodedEvent {
    /// The event as one line of JSON (no trailing newline), as `codex events` prints it.
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings, numbers and bools into a String cannot fail; fall back to
        // an error object rather than panicking if it ever did.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{hex, U256};
    use proptest::prelude::*;

    fn ask() -> Ask {
        Ask {
            proof_probability: U256::from(3u8),
            price_per_byte_per_second: U256::from(1000u32),
            collateral_per_byte: U256::from(1u8),
            slots: 4,
            slot_size: 1 << 20,
            duration: 86_400,
            max_slot_loss: 1,
        }
    }

    fn rid() -> RequestId {
        RequestId(B256::repeat_byte(0x11))
    }

    fn all_events() -> Vec<MarketEvent> {
        vec![
            MarketEvent::StorageRequested {
                request_id: rid(),
                ask: ask(),
                expiry: 1_700_000_600,
            },
            MarketEvent::SlotFilled {
                request_id: rid(),
                slot_index: 2,
            },
            MarketEvent::SlotFreed {
                request_id: rid(),
                slot_index: 3,
            },
            MarketEvent::SlotReservationsFull {
                request_id: rid(),
                slot_index: 0,
            },
            MarketEvent::RequestFulfilled { request_id: rid() },
            MarketEvent::RequestFailed { request_id: rid() },
            MarketEvent::RequestCancelled { request_id: rid() },
            MarketEvent::ProofSubmitted {
                slot_id: SlotId::of(rid(), 1),
            },
        ]
    }

    /// A log as anvil 1.x writes it, including its non-standard `blockTimestamp`.
    fn anvil_log(topics: &[B256], data: &[u8]) -> String {
        let topics: Vec<String> = topics.iter().map(|t| format!("\"{t:#x}\"")).collect();
        format!(
            concat!(
                "{{\"address\":\"0xa85233c63b9ee964add6f2cffe00fd84eb32338f\",",
                "\"topics\":[{}],\"data\":\"0x{}\",",
                "\"blockHash\":\"0x{}\",\"blockNumber\":\"0x12c\",",
                "\"blockTimestamp\":\"0x6553f100\",",
                "\"transactionHash\":\"0x{}\",\"transactionIndex\":\"0x0\",",
                "\"logIndex\":\"0x1\",\"removed\":false}}"
            ),
            topics.join(","),
            hex::encode(data),
            "ab".repeat(32),
            "cd".repeat(32),
        )
    }

    #[test]
    fn every_event_round_trips_through_an_anvil_log() {
        for ev in all_events() {
            let (topics, data) = encode_event(&ev);
            let log = parse_log(&anvil_log(&topics, &data)).unwrap();
            let d = decode_log(&log).unwrap();
            assert_eq!(d.event, ev);
            assert_eq!(d.position.block_number, 300);
            assert_eq!(d.position.log_index, 1);
            assert_eq!(d.position.transaction_index, 0);
            assert_eq!(d.position.block_hash, B256::repeat_byte(0xab));
            assert_eq!(d.position.transaction_hash, B256::repeat_byte(0xcd));
            assert!(!d.position.removed);
        }
    }

    #[test]
    fn topics_and_data_sizes_match_the_spec_table() {
        let sizes: Vec<(usize, usize)> = all_events()
            .iter()
            .map(|e| {
                let (t, d) = encode_event(e);
                (t.len(), d.len())
            })
            .collect();
        assert_eq!(
            sizes,
            vec![
                (1, 288),
                (2, 32),
                (2, 32),
                (2, 32),
                (2, 0),
                (2, 0),
                (2, 0),
                (1, 32)
            ]
        );
    }

    #[test]
    fn a_notification_frame_is_parsed() {
        let ev = &all_events()[0];
        let (topics, data) = encode_event(ev);
        let frame = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"eth_subscription\",\"params\":{{\"subscription\":\"0x9cef478923ff08bf67fde6c64013158d\",\"result\":{}}}}}",
            anvil_log(&topics, &data)
        );
        let n = parse_log_notification(&frame).unwrap();
        assert_eq!(n.subscription, "0x9cef478923ff08bf67fde6c64013158d");
        assert_eq!(decode_log(&n.log).unwrap().event, *ev);
        let other = frame.replace("eth_subscription", "eth_other");
        assert_eq!(
            parse_log_notification(&other),
            Err(EventError::NotANotification("eth_other".into()))
        );
    }

    #[test]
    fn removed_logs_are_reported_as_removed() {
        let (topics, data) = encode_event(&all_events()[1]);
        let json = anvil_log(&topics, &data).replace("\"removed\":false", "\"removed\":true");
        assert!(
            decode_log(&parse_log(&json).unwrap())
                .unwrap()
                .position
                .removed
        );
    }

    #[test]
    fn pending_logs_lack_a_position() {
        let (topics, data) = encode_event(&all_events()[1]);
        let json = anvil_log(&topics, &data).replace("\"0x12c\"", "null");
        assert_eq!(
            decode_log(&parse_log(&json).unwrap()),
            Err(EventError::MissingPosition("blockNumber"))
        );
    }

    #[test]
    fn bad_logs_give_typed_errors() {
        let (topics, data) = encode_event(&all_events()[0]);
        // unknown topic0
        let unknown = B256::repeat_byte(7);
        assert_eq!(
            decode_event(&[unknown], &data),
            Err(EventError::UnknownEvent(unknown))
        );
        assert_eq!(decode_event(&[], &data), Err(EventError::NoTopics));
        // short and long data
        assert!(matches!(
            decode_event(&topics, &data[..287]),
            Err(EventError::Malformed {
                event: "StorageRequested",
                ..
            })
        ));
        let mut long = data.clone();
        long.extend([0u8; 32]);
        assert!(decode_event(&topics, &long).is_err());
        // an extra topic
        let mut extra = topics.clone();
        extra.push(B256::ZERO);
        assert!(decode_event(&extra, &data).is_err());
        // slots (word 4) above u64::MAX
        let mut big = data.clone();
        big[4 * 32] = 1;
        assert!(decode_event(&topics, &big).is_err());
        // SlotFilled without its indexed requestId
        let (t, d) = encode_event(&all_events()[1]);
        assert!(decode_event(&t[..1], &d).is_err());
        // bad hex quantity, bad JSON
        let json = anvil_log(&topics, &data).replace("\"0x12c\"", "\"12c\"");
        assert!(matches!(parse_log(&json), Err(EventError::Json(_))));
        assert!(matches!(parse_log("{"), Err(EventError::Json(_))));
    }

    #[test]
    fn quantities_are_strict_hex() {
        assert_eq!(parse_quantity("0x0"), Some(0));
        assert_eq!(parse_quantity("0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_quantity("0x1ffffffffffffffff"), None);
        assert_eq!(parse_quantity("0x"), None);
        assert_eq!(parse_quantity("12"), None);
        assert_eq!(parse_quantity("0x+1"), None);
    }

    #[test]
    fn json_lines_use_the_reference_encodings() {
        let (topics, data) = encode_event(&all_events()[0]);
        let d = decode_log(&parse_log(&anvil_log(&topics, &data)).unwrap()).unwrap();
        let line = d.to_json_line();
        let expected = format!(
            concat!(
                "{{\"blockNumber\":300,\"blockHash\":\"0x{ab}\",\"transactionHash\":\"0x{cd}\",",
                "\"transactionIndex\":0,\"logIndex\":1,\"removed\":false,",
                "\"address\":\"0xa85233c63b9ee964add6f2cffe00fd84eb32338f\",",
                "\"event\":\"StorageRequested\",\"requestId\":\"0x{id}\",",
                "\"ask\":{{\"proofProbability\":\"3\",\"pricePerBytePerSecond\":\"1000\",",
                "\"collateralPerByte\":\"1\",\"slots\":4,\"slotSize\":1048576,",
                "\"duration\":86400,\"maxSlotLoss\":1}},\"expiry\":1700000600}}"
            ),
            ab = "ab".repeat(32),
            cd = "cd".repeat(32),
            id = "11".repeat(32),
        );
        assert_eq!(line, expected);

        let proof = DecodedEvent {
            event: all_events()[7].clone(),
            ..d.clone()
        };
        let v: serde_json::Value = serde_json::from_str(&proof.to_json_line()).unwrap();
        assert_eq!(v["event"], "ProofSubmitted");
        assert_eq!(v["slotId"], SlotId::of(rid(), 1).to_string());

        let filled = DecodedEvent {
            event: all_events()[1].clone(),
            ..d
        };
        let v: serde_json::Value = serde_json::from_str(&filled.to_json_line()).unwrap();
        assert_eq!(v["slotIndex"], 2);
    }

    #[test]
    fn huge_u64_values_become_strings() {
        assert_eq!(serde_json::to_string(&JsonU64(5)).unwrap(), "5");
        assert_eq!(
            serde_json::to_string(&JsonU64(u64::MAX)).unwrap(),
            "\"18446744073709551615\""
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_topics_and_data_never_panic(
            known in 0usize..9,
            extra in proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            data in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut topics: Vec<B256> = Vec::new();
            if known < 8 {
                topics.push(EVENT_TOPICS[known]);
            }
            topics.extend(extra.into_iter().map(B256::from));
            let _ = decode_event(&topics, &data);
        }

        #[test]
        fn random_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse_log(&s);
            let _ = parse_log_notification(&s);
        }

        #[test]
        fn corrupted_logs_never_panic(pos in 0usize..2000, byte in any::<u8>()) {
            let (topics, data) = encode_event(&all_events()[0]);
            let mut json = anvil_log(&topics, &data).into_bytes();
            let i = pos % json.len();
            json[i] = byte;
            if let Ok(s) = std::str::from_utf8(&json) {
                if let Ok(log) = parse_log(s) {
                    let _ = decode_log(&log);
                }
            }
        }
    }
}
