//! JSON shapes of the reference's REST API (`docs/architecture.md#the-rest-api-and-metrics`): camelCase fields, 256-bit
//! amounts as decimal strings, ids as 0x-hex, u64 as numbers (as strings above i64::MAX).
use serde_json::{json, Value};

use crate::market::U256;

use crate::sales::ledger::{Availability, Reservation};

/// A u64 as a JSON number, or a decimal string when it exceeds i64::MAX.
pub fn u64_value(v: u64) -> Value {
    if v > i64::MAX as u64 {
        Value::String(v.to_string())
    } else {
        Value::from(v)
    }
}

/// A field written with its `Display` (ids as 0x-hex, 256-bit amounts as decimal strings)
/// straight into the output, without a `String` of its own.
fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A u64 field as [`u64_value`] writes it.
fn u64_field<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    if *v > i64::MAX as u64 {
        s.collect_str(v)
    } else {
        s.serialize_u64(*v)
    }
}

/// An availability, with the reference's fields plus `collateralLost`, serialized from the
/// record itself: `GET /sales/availability` writes thousands of these, and building a
/// [`Value`] for each cost several times the serializing (measured with 10,000).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailabilityJson<'a> {
    #[serde(serialize_with = "display")]
    id: &'a crate::sales::ledger::AvailabilityId,
    #[serde(serialize_with = "u64_field")]
    total_size: u64,
    #[serde(serialize_with = "u64_field")]
    free_size: u64,
    #[serde(serialize_with = "u64_field")]
    duration: u64,
    #[serde(serialize_with = "display")]
    min_price_per_byte_per_second: &'a U256,
    #[serde(serialize_with = "display")]
    total_collateral: &'a U256,
    #[serde(serialize_with = "display")]
    total_remaining_collateral: &'a U256,
    #[serde(serialize_with = "display")]
    collateral_lost: &'a U256,
    enabled: bool,
    #[serde(serialize_with = "u64_field")]
    until: u64,
}

impl<'a> AvailabilityJson<'a> {
    /// The shape of `a`.
    pub fn of(a: &'a Availability) -> AvailabilityJson<'a> {
        AvailabilityJson {
            id: &a.id,
            total_size: a.total_size,
            free_size: a.free_size,
            duration: a.duration,
            min_price_per_byte_per_second: &a.min_price_per_byte_per_second,
            total_collateral: &a.total_collateral,
            total_remaining_collateral: &a.total_remaining_collateral,
            collateral_lost: &a.collateral_lost,
            enabled: a.enabled,
            until: a.until,
        }
    }
}

/// An availability as a JSON value (see [`AvailabilityJson`]).
pub fn availability(a: &Availability) -> Value {
    serde_json::to_value(AvailabilityJson::of(a)).unwrap_or(Value::Null)
}

/// A list of availabilities as JSON text: the body of `GET /sales/availability`.
pub fn availabilities_text(all: &[Availability]) -> String {
    let shapes: Vec<AvailabilityJson> = all.iter().map(AvailabilityJson::of).collect();
    // A struct of numbers, strings and bools always serializes.
    serde_json::to_string(&shapes).unwrap_or_default()
}

/// A reservation, with the reference's fields (`size` = bytes reserved and not yet
/// downloaded) plus `slotSize`, `downloaded` and `collateral`.
pub fn reservation(r: &Reservation) -> Value {
    json!({
        "id": r.id.to_string(),
        "availabilityId": r.availability_id.to_string(),
        "size": u64_value(r.slot_size.saturating_sub(r.downloaded)),
        "requestId": r.request_id.to_string(),
        "slotIndex": u64_value(r.slot_index),
        "validUntil": u64_value(r.valid_until),
        "slotSize": u64_value(r.slot_size),
        "downloaded": u64_value(r.downloaded),
        "collateral": r.collateral.to_string(),
    })
}

/// One ended sale of the history.
pub fn history_entry(e: &crate::store::history::HistoryEntry) -> Value {
    let r = &e.record;
    json!({
        "id": e.id,
        "requestId": r.request_id.to_string(),
        "slotIndex": u64_value(r.slot_index),
        "slotId": crate::market::SlotId::of(r.request_id, r.slot_index).to_string(),
        "availabilityId": r.availability_id.map(|a| a.to_string()),
        "reservationId": r.reservation_id.map(|a| a.to_string()),
        "outcome": r.outcome,
        "reason": r.reason,
        "slotSize": u64_value(r.slot_size),
        "startedAt": u64_value(r.started_at),
        "endedAt": u64_value(r.ended_at),
        "payout": r.payout.to_string(),
        "collateral": r.collateral.to_string(),
        "collateralReturned": r.collateral_returned.to_string(),
        "collateralLost": r.collateral_lost.to_string(),
    })
}

/// Why a JSON input could not be read; the REST API answers 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The body is not JSON, or not an object.
    #[error("{0}")]
    Syntax(String),
    /// A negative value where an unsigned integer is expected (the reference's text).
    #[error("Parsed integer outside of valid range")]
    OutOfRange,
    /// A value of the wrong type, or a number that does not fit.
    #[error("Invalid value for field {field}: {value}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The value as sent.
        value: String,
    },
}

fn invalid(field: &'static str, v: &Value) -> InputError {
    InputError::Invalid {
        field,
        value: v.to_string(),
    }
}

/// A `u64` input as the reference reads it: a JSON number or a numeric string; the empty
/// string is 0; a negative value is [`InputError::OutOfRange`].
pub fn u64_input(field: &'static str, v: &Value) -> Result<u64, InputError> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(x) => Ok(x),
            None if n.as_i64().is_some_and(|x| x < 0) => Err(InputError::OutOfRange),
            None => Err(invalid(field, v)),
        },
        Value::String(s) if s.trim().is_empty() => Ok(0),
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('-') && t[1..].bytes().all(|b| b.is_ascii_digit()) && t.len() > 1 {
                return Err(InputError::OutOfRange);
            }
            t.parse::<u64>().map_err(|_| invalid(field, v))
        }
        _ => Err(invalid(field, v)),
    }
}

/// A signed seconds input (`until`): a JSON number or a numeric string, which may be
/// negative (the caller refuses that with the reference's 422 in its place in the order).
pub fn i64_input(field: &'static str, v: &Value) -> Result<i128, InputError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| invalid(field, v)),
        Value::String(s) if s.trim().is_empty() => Ok(0),
        Value::String(s) => s.trim().parse::<i128>().map_err(|_| invalid(field, v)),
        _ => Err(invalid(field, v)),
    }
}

/// A 256-bit amount input: a JSON number, a decimal string, or a `0x`/`0o`/`0b` string; a
/// negative value is [`InputError::OutOfRange`].
pub fn u256_input(field: &'static str, v: &Value) -> Result<U256, InputError> {
    let text = match v {
        Value::Number(n) => {
            if n.as_i64().is_some_and(|x| x < 0) {
                return Err(InputError::OutOfRange);
            }
            n.to_string()
        }
        Value::String(s) => s.trim().to_string(),
        _ => return Err(invalid(field, v)),
    };
    if text.is_empty() {
        return Ok(U256::ZERO);
    }
    if text.starts_with('-') {
        return Err(InputError::OutOfRange);
    }
    let (digits, radix) = match text.get(..2) {
        Some("0x") | Some("0X") => (&text[2..], 16),
        Some("0o") | Some("0O") => (&text[2..], 8),
        Some("0b") | Some("0B") => (&text[2..], 2),
        _ => (text.as_str(), 10),
    };
    if digits.is_empty() {
        return Err(invalid(field, v));
    }
    U256::from_str_radix(digits, radix).map_err(|_| invalid(field, v))
}

/// A JSON object body, or [`InputError::Syntax`].
pub fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, InputError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(InputError::Syntax(format!(
            "the body must be a JSON object, not {other}"
        ))),
        Err(e) => Err(InputError::Syntax(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// A boolean input (`enabled`).
pub fn bool_input(field: &'static str, v: &Value) -> Result<bool, InputError> {
    v.as_bool().ok_or_else(|| invalid(field, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_availability_has_the_references_fields_in_order() {
        let a = Availability {
            id: crate::sales::ledger::AvailabilityId([0xab; 32]),
            total_size: u64::MAX,
            free_size: 7,
            duration: 60,
            min_price_per_byte_per_second: U256::from(3u8),
            total_collateral: U256::MAX,
            total_remaining_collateral: U256::from(10u8),
            collateral_lost: U256::ZERO,
            enabled: false,
            until: 1,
        };
        let want = format!(
            r#"{{"id":"0x{}","totalSize":"18446744073709551615","freeSize":7,"duration":60,"minPricePerBytePerSecond":"3","totalCollateral":"{}","totalRemainingCollateral":"10","collateralLost":"0","enabled":false,"until":1}}"#,
            "ab".repeat(32),
            U256::MAX
        );
        assert_eq!(availability(&a).to_string(), want);
        assert_eq!(
            availabilities_text(&[a.clone(), a]),
            format!("[{want},{want}]")
        );
        assert_eq!(availabilities_text(&[]), "[]");
    }

    #[test]
    fn numbers_come_as_numbers_or_strings() {
        assert_eq!(u64_input("x", &json!(5)), Ok(5));
        assert_eq!(u64_input("x", &json!("5")), Ok(5));
        assert_eq!(u64_input("x", &json!("")), Ok(0));
        assert_eq!(u64_input("x", &json!("-1")), Err(InputError::OutOfRange));
        assert_eq!(u64_input("x", &json!(-1)), Err(InputError::OutOfRange));
        assert!(matches!(
            u64_input("x", &json!("18446744073709551616")),
            Err(InputError::Invalid { .. })
        ));
        assert!(matches!(
            u64_input("x", &json!(true)),
            Err(InputError::Invalid { .. })
        ));
        assert_eq!(u256_input("y", &json!("0x10")), Ok(U256::from(16)));
        assert_eq!(u256_input("y", &json!("0b101")), Ok(U256::from(5)));
        assert_eq!(u256_input("y", &json!("0o17")), Ok(U256::from(15)));
        assert_eq!(u256_input("y", &json!(7)), Ok(U256::from(7)));
        assert_eq!(u256_input("y", &json!("-3")), Err(InputError::OutOfRange));
        assert_eq!(i64_input("until", &json!(-1)), Ok(-1));
        assert!(object(b"[1]").is_err());
        assert!(object(b"{").is_err());
    }
}
