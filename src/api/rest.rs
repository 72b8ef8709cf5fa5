//! The REST API under `/api/codex/v1`: the reference's sales endpoints with its paths,
//! status codes, error texts and JSON encodings (so a script written for it works
//! unchanged), and codex's own (`/sales/queue`, `/sales/status`, `/sales/live`,
//! `/sales/history`).
//!
//! The router is plain code over a [`Host`]: the node implements it inside its loop, so a
//! request is answered from the node's own state in the turn it arrives, and an
//! availability changed here is seen by the engine at once. Validation is the ledger's
//! (`crate::sales::ledger`), the same rules the CLI applies; only the messages are cut to
//! the reference's exact texts, which scripts compare. The reference's quirks the CLI fixed
//! stay fixed: collateral already committed is kept on a totalCollateral change, and the
//! quota check compares the increase of a totalSize, not the whole of it.
use serde_json::{json, Value};

use super::http::{Request, Response};
use super::json::{self, InputError};
use crate::market::{RequestId, SlotId, U256};
use crate::sales::ledger::{
    self, AvailabilityId, AvailabilityUpdate, Ledger, LedgerError, Limits, NewAvailability,
};
use crate::store::history::HistoryFilter;
use crate::store::Store;

/// The API's base path.
pub const BASE: &str = "/api/codex/v1";

/// What the router needs from the node.
pub trait Host {
    /// The store (the engine's ledger). A change to an availability must be followed by
    /// [`Host::availability_changed`].
    fn store(&mut self) -> &mut Store;
    /// The quota and the time now, for validation.
    fn limits(&self) -> Limits;
    /// An availability was created or changed; `grew` as
    /// [`crate::sales::ledger::AvailabilityChange::grew`].
    fn availability_changed(&mut self, grew: bool);
    /// `GET /sales/slots`: the slots this node hosts.
    fn slots(&self) -> Vec<Value>;
    /// `GET /sales/slots/{id}`: the live sale of that slot, if any.
    fn slot(&self, id: SlotId) -> Option<Value>;
    /// `GET /sales/queue`.
    fn queue(&self) -> Value;
    /// `GET /sales/status`.
    fn status(&self) -> Value;
    /// `GET /sales/live`: the live sales with their state, since when, and what they wait
    /// for.
    fn live_sales(&self) -> Vec<Value>;
    /// `POST /debug/chronicles/loglevel`: applies a `--log-level` value.
    fn set_log_level(&mut self, level: &str) -> Result<(), String>;
    /// The `--api-cors-origin`, if set.
    fn cors_origin(&self) -> Option<String>;
}

/// Answers one request.
pub fn handle(host: &mut dyn Host, req: &Request) -> Response {
    let Some(path) = req.path.strip_prefix(BASE) else {
        return Response::text(404, format!("no such endpoint: {}", req.path));
    };
    let path = path.trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method.as_str();
    let cors = host.cors_origin();
    let with_cors = |r: Response, methods: &str| match &cors {
        Some(origin) => r
            .header("Access-Control-Allow-Origin", origin)
            .header("Access-Control-Allow-Methods", methods)
            .header("Access-Control-Max-Age", "86400"),
        None => r,
    };
    match (method, parts.as_slice()) {
        ("OPTIONS", _) => match &cors {
            Some(_) => {
                let methods = if parts.len() == 3 && parts[..2] == ["sales", "availability"] {
                    "PATCH"
                } else {
                    "GET, POST, PATCH, OPTIONS"
                };
                with_cors(Response::new(204), methods)
                    .header("Access-Control-Allow-Headers", "content-type")
            }
            None => Response::new(204),
        },
        ("GET", ["sales", "availability"]) => with_cors(list_availabilities(host), "GET, POST"),
        ("POST", ["sales", "availability"]) => create_availability(host, req, &with_cors),
        ("PATCH", ["sales", "availability", id]) => update_availability(host, id, &req.body),
        ("GET", ["sales", "availability", id, "reservations"]) => {
            with_cors(reservations(host, id), "GET")
        }
        ("GET", ["sales", "slots"]) => with_cors(ok_json(&Value::Array(host.slots())), "GET"),
        ("GET", ["sales", "slots", id]) => with_cors(slot(host, id), "GET"),
        ("GET", ["sales", "queue"]) => with_cors(ok_json(&host.queue()), "GET"),
        ("GET", ["sales", "status"]) => with_cors(ok_json(&host.status()), "GET"),
        ("GET", ["sales", "live"]) => with_cors(ok_json(&Value::Array(host.live_sales())), "GET"),
        ("GET", ["sales", "history"]) => with_cors(history(host, req), "GET"),
        ("GET", ["space"]) => with_cors(space(host), "GET"),
        ("POST", ["debug", "chronicles", "loglevel"]) => match req.query_param("level") {
            None => Response::text(400, "Missing level parameter"),
            Some(level) => match host.set_log_level(&level) {
                Ok(()) => Response::new(200),
                Err(e) => Response::text(500, e),
            },
        },
        (
            _,
            ["sales", "availability"]
            | ["sales", "availability", _]
            | ["sales", "availability", _, "reservations"]
            | ["sales", "slots"]
            | ["sales", "slots", _]
            | ["sales", "queue"]
            | ["sales", "status"]
            | ["sales", "live"]
            | ["sales", "history"]
            | ["space"]
            | ["debug", "chronicles", "loglevel"],
        ) => Response::text(405, format!("method {method} not allowed on {}", req.path)),
        _ => Response::text(404, format!("no such endpoint: {}", req.path)),
    }
}

fn ok_json(v: &Value) -> Response {
    Response::json(200, v.to_string())
}

/// The reference's exact text for a ledger error (scripts compare it); the ledger's own
/// messages add the values involved, which the CLI shows.
fn reference_text(e: &LedgerError) -> String {
    const SHORT: &[&str] = &[
        "Total size must be larger then zero",
        "duration must be larger then zero",
        "minPricePerBytePerSecond must be larger then zero",
        "totalCollateral must be larger then zero",
        "Not enough storage quota",
        "Until parameter must be greater or equal to the longest currently hosted slot",
    ];
    let text = e.to_string();
    SHORT
        .iter()
        .find(|p| text.starts_with(**p))
        .map_or(text.clone(), |p| p.to_string())
}

/// The status of a ledger error.
fn ledger_response(e: &LedgerError) -> Response {
    match e {
        LedgerError::NotFound(_) => Response::text(404, "Availability not found"),
        LedgerError::Backend(m) => Response::text(500, m.clone()),
        _ => Response::text(422, reference_text(e)),
    }
}

fn input_response(e: InputError) -> Response {
    Response::text(400, e.to_string())
}

/// A 32-byte id in a path: 64 hex digits, optionally `0x`-prefixed.
pub(crate) fn parse_id(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    // Hex digits only: `u8::from_str_radix` would also take a sign ("+c" as 0x0c).
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Σ total_size of the availabilities other than `except`: what the quota rule compares.
fn others_total(host: &mut dyn Host, except: Option<AvailabilityId>) -> Result<u64, LedgerError> {
    Ok(host
        .store()
        .availabilities()?
        .iter()
        .filter(|a| Some(a.id) != except)
        .map(|a| a.total_size)
        .fold(0, u64::saturating_add))
}

fn list_availabilities(host: &mut dyn Host) -> Response {
    match host.store().availabilities() {
        Ok(all) => Response::json(200, json::availabilities_text(&all)),
        Err(e) => Response::text(500, e.to_string()),
    }
}

/// The fields of a POST body, read as the reference reads them: a missing field is 0
/// (and then refused by its rule), extra fields are ignored, `freeSize` is ignored.
fn new_from(body: &[u8]) -> Result<(NewAvailability, i128), InputError> {
    let m = json::object(body)?;
    let get = |k: &str| m.get(k).filter(|v| !v.is_null());
    let u64_of = |k: &'static str| get(k).map_or(Ok(0), |v| json::u64_input(k, v));
    let u256_of = |k: &'static str| get(k).map_or(Ok(U256::ZERO), |v| json::u256_input(k, v));
    let new = NewAvailability {
        total_size: u64_of("totalSize")?,
        duration: u64_of("duration")?,
        min_price_per_byte_per_second: u256_of("minPricePerBytePerSecond")?,
        total_collateral: u256_of("totalCollateral")?,
        enabled: get("enabled").map_or(Ok(true), |v| json::bool_input("enabled", v))?,
        until: 0,
    };
    let until = get("until").map_or(Ok(0), |v| json::i64_input("until", v))?;
    Ok((new, until))
}

fn too_big_until(until: i128) -> Result<u64, Response> {
    u64::try_from(until).map_err(|_| Response::text(400, "Parsed integer outside of valid range"))
}

fn create_availability(
    host: &mut dyn Host,
    req: &Request,
    with_cors: &dyn Fn(Response, &str) -> Response,
) -> Response {
    let (mut new, until) = match new_from(&req.body) {
        Ok(x) => x,
        Err(e) => return input_response(e),
    };
    let limits = host.limits();
    let id = AvailabilityId::random(&mut fastrand::Rng::new());
    // The rules that need no database first, in the reference's order.
    let unlimited = Limits {
        quota: u64::MAX,
        ..limits
    };
    if let Err(e) = ledger::new_availability(id, &new, unlimited, 0) {
        return with_cors(ledger_response(&e), "POST");
    }
    if until < 0 {
        // After the quota check, as the reference orders them (the until-error response
        // has no CORS headers there either).
        let others = match others_total(host, None) {
            Ok(n) => n,
            Err(e) => return Response::text(500, e.to_string()),
        };
        if others.saturating_add(new.total_size) > limits.quota {
            return with_cors(Response::text(422, "Not enough storage quota"), "POST");
        }
        return Response::text(422, "Cannot set until to a negative value");
    }
    new.until = match too_big_until(until) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match host.store().create_availability(id, new, limits) {
        Ok(a) => {
            host.availability_changed(a.enabled);
            with_cors(
                Response::json(201, json::availability(&a).to_string()),
                "POST",
            )
        }
        Err(e) => with_cors(ledger_response(&e), "POST"),
    }
}

fn update_availability(host: &mut dyn Host, id: &str, body: &[u8]) -> Response {
    let Some(id) = parse_id(id).map(AvailabilityId) else {
        return Response::text(400, format!("Cannot parse availability id: {id}"));
    };
    let m = match json::object(body) {
        Ok(m) => m,
        Err(e) => return input_response(e),
    };
    let get = |k: &str| m.get(k).filter(|v| !v.is_null());
    let parsed = (|| -> Result<(AvailabilityUpdate, Option<i128>), InputError> {
        Ok((
            AvailabilityUpdate {
                total_size: get("totalSize")
                    .map(|v| json::u64_input("totalSize", v))
                    .transpose()?,
                duration: get("duration")
                    .map(|v| json::u64_input("duration", v))
                    .transpose()?,
                min_price_per_byte_per_second: get("minPricePerBytePerSecond")
                    .map(|v| json::u256_input("minPricePerBytePerSecond", v))
                    .transpose()?,
                total_collateral: get("totalCollateral")
                    .map(|v| json::u256_input("totalCollateral", v))
                    .transpose()?,
                enabled: get("enabled")
                    .map(|v| json::bool_input("enabled", v))
                    .transpose()?,
                until: None,
            },
            get("until")
                .map(|v| json::i64_input("until", v))
                .transpose()?,
        ))
    })();
    let (mut update, until) = match parsed {
        Ok(x) => x,
        Err(e) => return input_response(e),
    };
    let limits = host.limits();
    let before = match host.store().availability(id) {
        Ok(a) => a,
        Err(e) => return ledger_response(&e),
    };
    if m.contains_key("freeSize") {
        return Response::text(422, "Updating freeSize is not allowed");
    }
    if let Some(u) = until {
        if u < 0 {
            // Everything before `until` in the order is checked first, without writing.
            let (others, held) = match (|| -> Result<_, LedgerError> {
                Ok((
                    others_total(host, Some(id))?,
                    host.store().reservations_of(id)?,
                ))
            })() {
                Ok(x) => x,
                Err(e) => return ledger_response(&e),
            };
            if let Err(e) = ledger::apply_update(&before, &update, limits, others, &held) {
                return ledger_response(&e);
            }
            return Response::text(422, "Cannot set until to a negative value");
        }
        update.until = match too_big_until(u) {
            Ok(u) => Some(u),
            Err(r) => return r,
        };
    }
    if update.is_empty() {
        return Response::new(204);
    }
    match host.store().update_availability(id, update, limits) {
        Ok(change) => {
            host.availability_changed(change.grew());
            Response::new(204)
        }
        Err(e) => ledger_response(&e),
    }
}

fn reservations(host: &mut dyn Host, id: &str) -> Response {
    let Some(id) = parse_id(id).map(AvailabilityId) else {
        return Response::text(400, format!("Cannot parse availability id: {id}"));
    };
    let store = host.store();
    if let Err(e) = store.availability(id) {
        return ledger_response(&e);
    }
    match store.reservations_of(id) {
        Ok(rs) => ok_json(&Value::Array(rs.iter().map(json::reservation).collect())),
        Err(e) => Response::text(500, e.to_string()),
    }
}

fn slot(host: &mut dyn Host, id: &str) -> Response {
    let Some(id) = parse_id(id).map(SlotId::from) else {
        return Response::text(400, format!("Cannot parse slot id: {id}"));
    };
    match host.slot(id) {
        Some(v) => ok_json(&v),
        None => Response::text(404, "Provider not filling slot"),
    }
}

fn space(host: &mut dyn Host) -> Response {
    let quota = host.limits().quota;
    match host.store().availabilities() {
        Ok(all) => {
            let used: u64 = all
                .iter()
                .map(|a| a.total_size - a.free_size.min(a.total_size))
                .fold(0, u64::saturating_add);
            let offered: u64 = all
                .iter()
                .map(|a| a.total_size)
                .fold(0, u64::saturating_add);
            ok_json(&json!({
                "totalBlocks": 0,
                "quotaMaxBytes": json::u64_value(quota),
                "quotaUsedBytes": json::u64_value(used),
                "quotaReservedBytes": json::u64_value(offered.saturating_sub(used)),
            }))
        }
        Err(e) => Response::text(500, e.to_string()),
    }
}

fn history(host: &mut dyn Host, req: &Request) -> Response {
    let mut filter = HistoryFilter::default();
    if let Some(r) = req.query_param("request") {
        match r.parse::<RequestId>() {
            Ok(id) => filter.request_id = Some(id),
            Err(e) => return Response::text(400, e.to_string()),
        }
    }
    if let Some(n) = req.query_param("limit") {
        match n.parse::<usize>() {
            Ok(n) => filter.limit = Some(n),
            Err(_) => return Response::text(400, format!("limit must be a count, not {n:?}")),
        }
    }
    match host.store().sale_history(&filter) {
        Ok(entries) => ok_json(&Value::Array(
            entries.iter().map(json::history_entry).collect(),
        )),
        Err(e) => Response::text(500, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn path_ids_are_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_id(&hex), Some([0xab; 32]));
        assert_eq!(parse_id(&format!("0x{hex}")), Some([0xab; 32]));
        assert_eq!(
            parse_id(&"+c".repeat(32)),
            None,
            "a sign is not a hex digit"
        );
        assert_eq!(parse_id(&hex[..62]), None);
        assert_eq!(parse_id(&"é".repeat(32)), None);
    }
}
