//! The fuzz targets: for each kind of input, the decoders codex runs on it, in the order the
//! node, the CLI or the API runs them, and the properties that are cheap to check.
//!
//! | target | input | decoders |
//! |---|---|---|
//! | `frames` | a WebSocket text frame from the Ethereum node | `rpc::parse_incoming(_batch)`, then `Log`/`Head::from_value`, `parse_logs`, `parse_quantity`, `Subscriptions::confirm`, the view decoders on hex results, `RpcError::revert_data`, `decode_rpc_error`, `classify_send_error`; `events::parse_log_notification` and `decode_log` |
//! | `logs` | one log object | `events::parse_log`, `decode_log`; `rpc::Log::from_value` |
//! | `events` | topic count, topics, data | `events::decode_event` |
//! | `rpc-errors` | a JSON-RPC error object | `errors::revert_data`, `decode_rpc_error`; the same object in a response frame |
//! | `revert-data` | revert return data | `MarketError::from_revert_data` |
//! | `views` | a view's index, its return data | every `calls::decode_*` |
//! | `config` | a config file | `Sources::from_file_text`, then every option's parser, `ChainSettings::resolve` |
//! | `options` | an option value | `LogLevel`, `LogFormat`, `Endpoint`, `DataSource`, IP address and port parsers |
//! | `units` | a quantity as text | `parse_size`, `parse_duration`, `parse_amount`, `parse_unix_seconds`, the API's number inputs, hex quantities, `Content-Range` |
//! | `ids` | an id as text | request and slot ids, addresses, `REQ:INDEX`, CIDs, the API's path ids, id prefixes, key files |
//! | `http` | bytes on an API connection | `http::parse_request` (pipelined), then `rest::handle` |
//! | `rest` | `METHOD TARGET BODY` | `rest::handle` |
//!
//! The `http` and `rest` targets answer from an in-memory store with two availabilities,
//! made afresh every few hundred executions so that the availabilities created meanwhile
//! stay few.
use std::cell::RefCell;
use std::fmt::Debug;
use std::path::Path;

use alloy_primitives::{hex, Address, Bytes, B256, U256};
use alloy_sol_types::{Panic, Revert, SolError, SolValue};
use serde_json::{json, Value};

use super::{Kind, Target};
use crate::api::http::{self, Request, Response};
use crate::api::{json as api_json, rest};
use crate::chain::rpc::{
    self, parse_incoming, parse_incoming_batch, Head, Incoming, Log, ParseError, RpcError, SubKind,
    Subscriptions,
};
use crate::chain::settings::{ChainArgs, ChainSettings};
use crate::chain::ws::Endpoint;
use crate::config::{Origin, Sources, FILE_KEYS};
use crate::logging::{LogFormat, LogLevel};
use crate::market::abi::{self, AbiDecodeError, IERC20};
use crate::market::calls;
use crate::market::errors::{decode_rpc_error, revert_data, MarketError};
use crate::market::events::{
    self, decode_event, decode_log, encode_event, parse_log, parse_log_notification, DecodedEvent,
};
use crate::market::{cid, RequestId, SlotId};
use crate::node::data::DataSource;
use crate::sales::ledger::{AvailabilityId, Ledger, Limits, NewAvailability};
use crate::store::Store;
use crate::units;

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "frames",
        kind: Kind::Text,
        run: frames,
    },
    Target {
        name: "logs",
        kind: Kind::Text,
        run: logs,
    },
    Target {
        name: "events",
        kind: Kind::Binary,
        run: events,
    },
    Target {
        name: "rpc-errors",
        kind: Kind::Text,
        run: rpc_errors,
    },
    Target {
        name: "revert-data",
        kind: Kind::Binary,
        run: revert_data_target,
    },
    Target {
        name: "views",
        kind: Kind::Binary,
        run: views,
    },
    Target {
        name: "config",
        kind: Kind::Text,
        run: config,
    },
    Target {
        name: "options",
        kind: Kind::Text,
        run: options,
    },
    Target {
        name: "units",
        kind: Kind::Text,
        run: units_target,
    },
    Target {
        name: "ids",
        kind: Kind::Text,
        run: ids,
    },
    Target {
        name: "http",
        kind: Kind::Text,
        run: http_target,
    },
    Target {
        name: "rest",
        kind: Kind::Text,
        run: rest_target,
    },
];

/// Text as the decoders get it: WebSocket text frames and files read as strings are UTF-8,
/// so other bytes are replaced rather than wasted.
fn text(input: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(input)
}

// ---------------------------------------------------------------------------------------------
// The chain: frames, logs, events, errors, views

/// A frame read as the chain client reads it (`ChainClient::on_text`), and as `codex events`
/// reads a log notification; both readings of one log must agree.
fn frames(input: &[u8]) -> Result<bool, String> {
    let text = text(input);
    let messages = if text.trim_start().starts_with('[') {
        parse_incoming_batch(&text)
    } else {
        vec![parse_incoming(&text)]
    };
    let mut decoded = false;
    let mut client_logs = Vec::new();
    for message in messages {
        match message {
            Ok(Incoming::Notification { result, .. }) => {
                decoded = true;
                if let Ok(log) = Log::from_value(&result) {
                    client_logs.push(log);
                }
                let _ = Head::from_value(&result);
            }
            Ok(Incoming::Response { result: Ok(v), .. }) => {
                decoded = true;
                result_value(&v)?;
            }
            Ok(Incoming::Response { result: Err(e), .. }) => {
                decoded = true;
                rpc_error(&e);
            }
            Err(ParseError::ForeignId { error: Some(e), .. }) => rpc_error(&e),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let mut client_events = Vec::new();
    for log in &client_logs {
        if let Ok(d) = decode_log(&crate::node::to_rpc_log(log)) {
            check_event(&d, &log.topics, &log.data)?;
            client_events.push(d);
        }
    }
    if let Ok(n) = parse_log_notification(&text) {
        if let Ok(d) = decode_log(&n.log) {
            check_event(&d, &n.log.topics, &n.log.data)?;
            if let [client] = client_events.as_slice() {
                if *client != d {
                    return Err(format!("the client decoded {client:?}, codex events {d:?}"));
                }
            }
        }
    }
    Ok(decoded)
}

/// A call's result, read as each internal call reads it.
fn result_value(v: &Value) -> Result<(), String> {
    if let Ok(logs) = rpc::parse_logs(v) {
        for log in &logs {
            if let Ok(d) = decode_log(&crate::node::to_rpc_log(log)) {
                check_event(&d, &log.topics, &log.data)?;
            }
        }
    }
    let _ = Subscriptions::default().confirm(SubKind::Logs, v);
    if let Some(s) = v.as_str() {
        let _ = rpc::parse_quantity(s);
        if let Ok(data) = s.parse::<Bytes>() {
            for (_, view) in VIEWS {
                view(&data)?;
            }
        }
    }
    Ok(())
}

/// An error object, read as the node reads it for a failed call or transaction.
fn rpc_error(e: &RpcError) {
    let _ = crate::chain::ChainError::Rpc {
        method: "eth_call".into(),
        error: e.clone(),
    }
    .to_string();
    if let Some(data) = e.revert_data() {
        let _ = MarketError::from_revert_data(&data).to_string();
    }
    let _ = crate::chain::tx::classify_send_error(&e.message);
    let object = json!({"code": e.code, "message": e.message, "data": e.data});
    if let Some(r) = decode_rpc_error(&object) {
        let _ = r.to_string();
    }
}

/// A decoded event re-encodes to exactly the topics and data it came from (the decoding is
/// strict), and its JSON line is JSON.
fn check_event(d: &DecodedEvent, topics: &[B256], data: &[u8]) -> Result<(), String> {
    let (t, encoded) = encode_event(&d.event);
    if t != topics || encoded != data {
        return Err(format!(
            "{} decoded from topics {topics:?} and data 0x{}, which it re-encodes differently",
            d.event.name(),
            hex::encode(data)
        ));
    }
    let line = d.to_json_line();
    serde_json::from_str::<Value>(&line)
        .map_err(|e| format!("the JSON line {line:?} is not JSON: {e}"))?;
    Ok(())
}

/// One log object, through the market decoder (`eth_getLogs` in `codex events`) and the
/// client's; both must agree.
fn logs(input: &[u8]) -> Result<bool, String> {
    let text = text(input);
    let market = match parse_log(&text) {
        Ok(log) => match decode_log(&log) {
            Ok(d) => {
                check_event(&d, &log.topics, &log.data)?;
                Some(d)
            }
            Err(e) => {
                let _ = e.to_string();
                None
            }
        },
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        if let Ok(log) = Log::from_value(&v) {
            if let Ok(client) = decode_log(&crate::node::to_rpc_log(&log)) {
                check_event(&client, &log.topics, &log.data)?;
                if market.as_ref().is_some_and(|m| *m != client) {
                    return Err(format!(
                        "the client decoded {client:?}, codex events {market:?}"
                    ));
                }
            }
        }
    }
    Ok(market.is_some())
}

/// One byte of topic count, the topics, then the data.
fn events(input: &[u8]) -> Result<bool, String> {
    let Some((&count, rest)) = input.split_first() else {
        return Ok(false);
    };
    let count = usize::from(count).min(rest.len() / 32);
    let (topic_bytes, data) = rest.split_at(32 * count);
    let topics: Vec<B256> = topic_bytes.chunks_exact(32).map(B256::from_slice).collect();
    match decode_event(&topics, data) {
        Ok(event) => {
            let (t, d) = encode_event(&event);
            if t != topics || d != data {
                return Err(format!("{} re-encodes differently", event.name()));
            }
            Ok(true)
        }
        Err(e) => {
            let _ = e.to_string();
            Ok(false)
        }
    }
}

/// An error object as either node shape carries it, decoded by the market's reader and, in a
/// response frame, by the client's.
fn rpc_errors(input: &[u8]) -> Result<bool, String> {
    let text = text(input);
    let frame = format!(r#"{{"jsonrpc":"2.0","id":1,"error":{text}}}"#);
    if let Ok(Incoming::Response { result: Err(e), .. }) = parse_incoming(&frame) {
        rpc_error(&e);
    }
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Ok(false);
    };
    let _ = revert_data(&v);
    Ok(match decode_rpc_error(&v) {
        Some(r) => {
            let _ = (r.to_string(), r.error.solidity_name());
            true
        }
        None => false,
    })
}

/// Revert data named; a revert that carries values decodes the same once re-encoded.
fn revert_data_target(input: &[u8]) -> Result<bool, String> {
    let e = MarketError::from_revert_data(input);
    let _ = e.to_string();
    let again = match &e {
        MarketError::Message(reason) => Some(Revert::from(reason.clone()).abi_encode()),
        MarketError::Panic(code) => Some(Panic { code: *code }.abi_encode()),
        MarketError::Erc20InsufficientAllowance {
            spender,
            allowance,
            needed,
        } => Some(
            IERC20::ERC20InsufficientAllowance {
                spender: *spender,
                allowance: *allowance,
                needed: *needed,
            }
            .abi_encode(),
        ),
        MarketError::Erc20InsufficientBalance {
            sender,
            balance,
            needed,
        } => Some(
            IERC20::ERC20InsufficientBalance {
                sender: *sender,
                balance: *balance,
                needed: *needed,
            }
            .abi_encode(),
        ),
        _ => None,
    };
    if let Some(data) = again {
        let back = MarketError::from_revert_data(&data);
        if back != e {
            return Err(format!("{e:?} re-encoded decodes to {back:?}"));
        }
    }
    Ok(e.solidity_name().is_some())
}

/// A view decoder: `Ok(true)` when the data decoded (and decodes the same re-encoded).
type View = fn(&[u8]) -> Result<bool, String>;

/// Every view result decoder, in the order of the first byte of a `views` input.
const VIEWS: &[(&str, View)] = &[
    ("getRequest", |d| {
        let Ok(r) = calls::decode_get_request(d) else {
            return Ok(false);
        };
        let _ = (r.id(), r.ask.collateral_per_slot(), r.ask.price_per_slot());
        same(&r, calls::decode_get_request(&r.to_abi().abi_encode()))
    }),
    ("getActiveSlot", |d| {
        let Ok((r, index)) = calls::decode_get_active_slot(d) else {
            return Ok(false);
        };
        let again = abi::ActiveSlot {
            request: r.to_abi(),
            slotIndex: index,
        }
        .abi_encode();
        same(&(r, index), calls::decode_get_active_slot(&again))
    }),
    ("configuration", |d| {
        let Ok(c) = calls::decode_configuration(d) else {
            return Ok(false);
        };
        let again = abi::MarketplaceConfig::from(&c).abi_encode();
        same(&c, calls::decode_configuration(&again))
    }),
    ("token", |d| match calls::decode_token(d) {
        Ok(a) => same(&a, calls::decode_token(&a.abi_encode())),
        Err(_) => Ok(false),
    }),
    ("requestState", |d| match calls::decode_request_state(d) {
        Ok(s) => same(&s, calls::decode_request_state(&word(s as u64))),
        Err(_) => Ok(false),
    }),
    ("slotState", |d| match calls::decode_slot_state(d) {
        Ok(s) => same(&s, calls::decode_slot_state(&word(s as u64))),
        Err(_) => Ok(false),
    }),
    ("getHost", |d| match calls::decode_get_host(d) {
        Ok(h) => same(
            &h,
            calls::decode_get_host(&h.unwrap_or(Address::ZERO).abi_encode()),
        ),
        Err(_) => Ok(false),
    }),
    (
        "currentCollateral",
        |d| match calls::decode_current_collateral(d) {
            Ok(v) => same(&v, calls::decode_current_collateral(&v.abi_encode())),
            Err(_) => Ok(false),
        },
    ),
    ("requestEnd", |d| match calls::decode_request_end(d) {
        Ok(v) => same(&v, calls::decode_request_end(&word(v))),
        Err(_) => Ok(false),
    }),
    ("requestExpiry", |d| match calls::decode_request_expiry(d) {
        Ok(v) => same(&v, calls::decode_request_expiry(&word(v))),
        Err(_) => Ok(false),
    }),
    ("getPointer", |d| match calls::decode_get_pointer(d) {
        Ok(v) => same(&v, calls::decode_get_pointer(&word(v.into()))),
        Err(_) => Ok(false),
    }),
    ("getChallenge", |d| match calls::decode_get_challenge(d) {
        Ok(v) => same(&v, calls::decode_get_challenge(v.as_slice())),
        Err(_) => Ok(false),
    }),
    (
        "isProofRequired",
        |d| match calls::decode_is_proof_required(d) {
            Ok(v) => same(&v, calls::decode_is_proof_required(&word(v.into()))),
            Err(_) => Ok(false),
        },
    ),
    (
        "willProofBeRequired",
        |d| match calls::decode_will_proof_be_required(d) {
            Ok(v) => same(&v, calls::decode_will_proof_be_required(&word(v.into()))),
            Err(_) => Ok(false),
        },
    ),
    ("canReserveSlot", |d| {
        match calls::decode_can_reserve_slot(d) {
            Ok(v) => same(&v, calls::decode_can_reserve_slot(&word(v.into()))),
            Err(_) => Ok(false),
        }
    }),
    ("missingProofs", |d| match calls::decode_missing_proofs(d) {
        Ok(v) => same(&v, calls::decode_missing_proofs(&word(v))),
        Err(_) => Ok(false),
    }),
    ("mySlots", |d| match calls::decode_my_slots(d) {
        Ok(v) => {
            let words: Vec<B256> = v.iter().map(|s| s.0).collect();
            same(&v, calls::decode_my_slots(&words.abi_encode()))
        }
        Err(_) => Ok(false),
    }),
    ("myRequests", |d| match calls::decode_my_requests(d) {
        Ok(v) => {
            let words: Vec<B256> = v.iter().map(|r| r.0).collect();
            same(&v, calls::decode_my_requests(&words.abi_encode()))
        }
        Err(_) => Ok(false),
    }),
    ("allowance", |d| match calls::decode_allowance(d) {
        Ok(v) => same(&v, calls::decode_allowance(&v.abi_encode())),
        Err(_) => Ok(false),
    }),
    ("balanceOf", |d| match calls::decode_balance_of(d) {
        Ok(v) => same(&v, calls::decode_balance_of(&v.abi_encode())),
        Err(_) => Ok(false),
    }),
];

/// The names of the views in `VIEWS` order (the first byte of a `views` input picks one).
pub fn view_names() -> impl Iterator<Item = &'static str> {
    VIEWS.iter().map(|(name, _)| *name)
}

fn word(v: u64) -> [u8; 32] {
    U256::from(v).to_be_bytes()
}

/// A decoded view value and the decoding of its re-encoding must be equal.
fn same<T: PartialEq + Debug>(first: &T, again: Result<T, AbiDecodeError>) -> Result<bool, String> {
    match again {
        Ok(a) if a == *first => Ok(true),
        other => Err(format!("{first:?} re-encoded decodes to {other:?}")),
    }
}

/// The first byte picks the view, the rest is its return data.
fn views(input: &[u8]) -> Result<bool, String> {
    let Some((&which, data)) = input.split_first() else {
        return Ok(false);
    };
    let (_, view) = VIEWS[usize::from(which) % VIEWS.len()];
    view(data)
}

// ---------------------------------------------------------------------------------------------
// What files and users send: config, options, units, ids

/// A config file, then each value through its option's parser.
fn config(input: &[u8]) -> Result<bool, String> {
    let text = text(input);
    let path = Path::new("codex.toml");
    let sources = match Sources::from_file_text(path, &text) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return Ok(false);
        }
    };
    for key in FILE_KEYS {
        if let Some((value, origin)) = sources.get(key, None) {
            if origin != Origin::File(path.to_path_buf()) {
                return Err(format!("{key} from {origin}, not from the file"));
            }
            option_value(key, &value)?;
        }
    }
    // Without a CA file, which it would read.
    if sources.get("eth-ca-file", None).is_none() {
        if let Err(e) = ChainSettings::resolve(&ChainArgs::default(), &sources) {
            let _ = e.to_string();
        }
    }
    Ok(true)
}

/// One option value through the parser of its option (a path is taken as it is).
fn option_value(key: &str, value: &str) -> Result<bool, String> {
    Ok(match key {
        "storage-quota" => units::size_arg(value).is_ok(),
        "log-level" => LogLevel::parse(value).is_ok(),
        "log-format" => LogFormat::parse(value).is_ok(),
        "eth-provider" => Endpoint::parse(value).is_ok(),
        "marketplace-address" | "reward-recipient" => value.parse::<Address>().is_ok(),
        "eth-timeout" | "download-timeout" => units::duration_arg(value).is_ok(),
        "eth-confirmations" | "from-block" => value.parse::<u64>().is_ok(),
        "queue-size" | "max-workers" => value.parse::<usize>().is_ok(),
        "simulate-proof-failures" => value.parse::<u32>().is_ok(),
        "data-source" => data_source(value)?,
        "api-bindaddr" | "metrics-address" => crate::cli::run::ip_arg(value).is_ok(),
        "api-port" | "metrics-port" => crate::cli::run::port_arg(value).is_ok(),
        _ => true,
    })
}

/// A data source template: once valid, the URL of any CID as the node writes it (base58btc)
/// is a URL with a host, and where the CID is not in the host, no CID, however hostile, can
/// move the URL to another host (percent-encoding keeps it in its place; a URL it makes
/// invalid fails its download).
fn data_source(template: &str) -> Result<bool, String> {
    let Ok(source) = DataSource::parse(template) else {
        return Ok(false);
    };
    let host = |cid: &str, slot: u64| {
        let url = source.url(cid, slot);
        match ureq::http::Uri::try_from(url.as_str()) {
            Ok(u) if u.host().is_some_and(|h| !h.is_empty()) => {
                Ok(u.host().unwrap_or_default().to_string())
            }
            Ok(_) => Err(format!("{url:?} has no host")),
            Err(e) => Err(format!("{url:?} is not a URL: {e}")),
        }
    };
    let short = host(&cid::format_cid(&[1, 0x55, 0x12, 1, 0]), 0)?;
    let long = host(&cid::format_cid(&[0xff; 64]), u64::MAX)?;
    if short == long {
        let hostile = host("@evil.example/?#{cid}%", 1);
        if hostile.as_ref().is_ok_and(|h| *h != short) {
            return Err(format!(
                "a CID moved the data source from {short:?} to {hostile:?}"
            ));
        }
    }
    Ok(true)
}

/// An option value through every option parser.
fn options(input: &[u8]) -> Result<bool, String> {
    let value = text(input);
    let mut accepted = false;
    for key in [
        "log-level",
        "log-format",
        "eth-provider",
        "data-source",
        "api-bindaddr",
        "api-port",
    ] {
        accepted |= option_value(key, &value)?;
    }
    Ok(accepted)
}

/// A quantity through every quantity parser; what is parsed formats back to itself, and the
/// two hex-quantity parsers agree.
fn units_target(input: &[u8]) -> Result<bool, String> {
    let s = text(input);
    let mut accepted = false;
    if let Ok(n) = units::parse_size(&s) {
        accepted = true;
        let f = units::format_size(n);
        if units::parse_size(&f) != Ok(n) {
            return Err(format!(
                "size {n} formats as {f:?}, which does not parse back"
            ));
        }
    }
    if let Ok(n) = units::parse_duration(&s) {
        accepted = true;
        let f = units::format_duration(n);
        if units::parse_duration(&f) != Ok(n) {
            return Err(format!(
                "duration {n} formats as {f:?}, which does not parse back"
            ));
        }
    }
    if let Ok(a) = units::parse_amount(&s) {
        accepted = true;
        if units::parse_amount(&a.to_string()) != Ok(a) {
            return Err(format!("amount {a} does not parse back"));
        }
    }
    accepted |= units::parse_unix_seconds(&s).is_ok();
    let string = Value::String(s.to_string());
    let number = serde_json::from_str::<Value>(&s).ok();
    for v in std::iter::once(&string).chain(number.as_ref()) {
        accepted |= api_json::u64_input("totalSize", v).is_ok();
        accepted |= api_json::i64_input("until", v).is_ok();
        accepted |= api_json::u256_input("totalCollateral", v).is_ok();
    }
    let client = rpc::parse_quantity(&s).ok();
    let market = events::parse_quantity(&s);
    let digits = s.strip_prefix("0x").map_or(0, str::len);
    if (market.is_some() || (digits <= 16 && client.is_some())) && client != market {
        return Err(format!(
            "the hex quantity is {client:?} to the client, {market:?} to the market decoder"
        ));
    }
    accepted |= client.is_some();
    accepted |= crate::node::data::content_range_start(&s).is_some();
    Ok(accepted)
}

/// An id through every id parser; a parsed id prints as the text it came from.
fn ids(input: &[u8]) -> Result<bool, String> {
    let s = text(input);
    let mut accepted = false;
    let bare = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(&s)
        .to_ascii_lowercase();
    if let Ok(id) = s.parse::<RequestId>() {
        accepted = true;
        if id.to_string() != format!("0x{bare}") || id.to_string().parse::<RequestId>() != Ok(id) {
            return Err(format!("request id {s:?} prints as {id}"));
        }
    }
    if let Ok(id) = s.parse::<SlotId>() {
        accepted = true;
        if id.to_string() != format!("0x{bare}") {
            return Err(format!("slot id {s:?} prints as {id}"));
        }
    }
    if let Some(id) = rest::parse_id(&s) {
        accepted = true;
        if hex::encode(id) != bare {
            return Err(format!(
                "the API read the id {s:?} as 0x{}",
                hex::encode(id)
            ));
        }
    }
    if let Ok(a) = s.parse::<Address>() {
        accepted = true;
        if a.to_string().parse::<Address>() != Ok(a) {
            return Err(format!("address {s:?} does not print back"));
        }
    }
    accepted |= crate::cli::sale::parse_slot_arg(&s).is_ok();
    if let Ok(bytes) = cid::parse_cid(&s) {
        accepted = true;
        let t = s.trim();
        if (t.starts_with('z') || t.starts_with('b'))
            && cid::parse_cid(&cid::format_cid(&bytes)).as_deref() != Ok(&bytes[..])
        {
            return Err(format!("CID {s:?} does not print back"));
        }
    }
    accepted |= crate::chain::key::EthPrivateKey::from_hex(&s).is_ok();
    accepted |= with_host(|h| {
        h.store.resolve_availability(&s).is_ok() | h.store.resolve_reservation(&s).is_ok()
    });
    Ok(accepted)
}

// ---------------------------------------------------------------------------------------------
// The REST API

/// The node as the API sees it: an in-memory store and fixed answers for the engine's views.
struct FuzzHost {
    store: Store,
    /// Executions since the store was made.
    uses: u32,
}

/// Executions before the host's store is made afresh.
const HOST_USES: u32 = 256;

/// Ids of the host's two availabilities, for the seeds' paths.
const AVAILABILITIES: [[u8; 32]; 2] = [
    hex_literal(b"abcd000000000000000000000000000000000000000000000000000000000001"),
    hex_literal(b"abcd110000000000000000000000000000000000000000000000000000000002"),
];

const fn hex_literal(text: &[u8; 64]) -> [u8; 32] {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = digit(text[2 * i]) << 4 | digit(text[2 * i + 1]);
        i += 1;
    }
    out
}

const LIMITS: Limits = Limits {
    quota: 1 << 40,
    now: 1_700_000_000,
};

impl FuzzHost {
    fn new() -> FuzzHost {
        let mut store = Store::open_file(Path::new(":memory:"), crate::store::Options::node())
            .expect("an in-memory store opens");
        for (i, id) in AVAILABILITIES.iter().enumerate() {
            store
                .create_availability(
                    AvailabilityId(*id),
                    NewAvailability {
                        total_size: 1 << (20 + i),
                        duration: 86_400,
                        min_price_per_byte_per_second: U256::from(1u8),
                        total_collateral: U256::from(1u64 << 30),
                        enabled: i == 0,
                        until: 0,
                    },
                    LIMITS,
                )
                .expect("the host's availabilities are valid");
        }
        FuzzHost { store, uses: 0 }
    }
}

impl rest::Host for FuzzHost {
    fn store(&mut self) -> &mut Store {
        &mut self.store
    }
    fn limits(&self) -> Limits {
        LIMITS
    }
    fn availability_changed(&mut self, _grew: bool) {}
    fn slots(&self) -> Vec<Value> {
        vec![json!({"slotId": format!("0x{}", "22".repeat(32))})]
    }
    fn slot(&self, id: SlotId) -> Option<Value> {
        (id.0 == B256::repeat_byte(0x22)).then(|| json!({"slotId": id.to_string()}))
    }
    fn queue(&self) -> Value {
        json!({"items": []})
    }
    fn status(&self) -> Value {
        json!({"healthy": true})
    }
    fn live_sales(&self) -> Vec<Value> {
        Vec::new()
    }
    fn set_log_level(&mut self, level: &str) -> Result<(), String> {
        LogLevel::parse(level).map(drop)
    }
    fn cors_origin(&self) -> Option<String> {
        Some("https://app.example".into())
    }
}

thread_local! {
    static HOST: RefCell<Option<FuzzHost>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's host, made afresh every [`HOST_USES`] executions (and after a
/// panic left it taken).
fn with_host<T>(f: impl FnOnce(&mut FuzzHost) -> T) -> T {
    HOST.with(|cell| {
        let mut host = cell
            .borrow_mut()
            .take()
            .filter(|h| h.uses < HOST_USES)
            .unwrap_or_else(FuzzHost::new);
        host.uses += 1;
        let out = f(&mut host);
        *cell.borrow_mut() = Some(host);
        out
    })
}

/// The statuses the API answers with.
const STATUSES: &[u16] = &[200, 201, 204, 400, 404, 405, 422, 500];

/// Answers a request; the answer must have a status the API uses, and a JSON body that is
/// JSON.
fn answer(req: &Request) -> Result<u16, String> {
    let response = with_host(|h| rest::handle(h, req));
    check_response(&response)?;
    Ok(response.status)
}

fn check_response(r: &Response) -> Result<(), String> {
    if !STATUSES.contains(&r.status) && !matches!(r.status, 413 | 431 | 501) {
        return Err(format!("status {} is not one the API uses", r.status));
    }
    let json = r
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "application/json");
    if json {
        serde_json::from_slice::<Value>(&r.body).map_err(|e| {
            format!(
                "a {} answer says JSON but is not: {e}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )
        })?;
    }
    Ok(())
}

/// Bytes a client sends on an API connection: up to eight pipelined requests, each answered.
fn http_target(input: &[u8]) -> Result<bool, String> {
    let limits = http::Limits::default();
    let mut rest = input;
    let mut decoded = false;
    for _ in 0..8 {
        match http::parse_request(rest, &limits) {
            Ok(Some((req, used))) => {
                if used == 0 || used > rest.len() {
                    return Err(format!("a request of {used} bytes in {}", rest.len()));
                }
                decoded = true;
                answer(&req)?;
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(refusal) => {
                check_response(&refusal)?;
                break;
            }
        }
    }
    Ok(decoded)
}

/// `METHOD TARGET BODY` (split at the first two spaces): a request as the router gets it.
fn rest_target(input: &[u8]) -> Result<bool, String> {
    let mut parts = input.splitn(3, |b| *b == b' ');
    let method = text(parts.next().unwrap_or_default());
    let target = text(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let req = Request {
        method: method.into_owned(),
        path: path.to_string(),
        query: query.to_string(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_vec(),
    };
    Ok(answer(&req)? < 400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_ids_are_the_hex_they_are_written_in() {
        assert_eq!(
            AVAILABILITIES[0],
            *B256::from_slice(
                &hex::decode("abcd000000000000000000000000000000000000000000000000000000000001")
                    .unwrap()
            )
        );
        let h = FuzzHost::new();
        assert_eq!(h.store.availabilities().unwrap().len(), 2);
    }

    #[test]
    fn views_are_listed_once() {
        let names: Vec<_> = view_names().collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len());
        assert_eq!(names.len(), 20);
    }

    #[test]
    fn a_revert_decodes_the_same_re_encoded() {
        let data = Revert::from("no").abi_encode();
        assert_eq!(revert_data_target(&data), Ok(true));
        assert_eq!(revert_data_target(&[]), Ok(false));
    }
}
