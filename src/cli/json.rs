//! JSON shapes of the reference's REST API (spec/sales.md §6): camelCase fields, 256-bit
//! amounts as decimal strings, ids as 0x-hex, u64 as numbers (as strings above i64::MAX).
use serde_json::{json, Value};

use crate::sales::ledger::{Availability, Reservation};

/// A u64 as a JSON number, or a decimal string when it exceeds i64::MAX.
pub fn u64_value(v: u64) -> Value {
    if v > i64::MAX as u64 {
        Value::String(v.to_string())
    } else {
        Value::from(v)
    }
}

/// An availability, with the reference's fields plus `collateralLost`.
pub fn availability(a: &Availability) -> Value {
    json!({
        "id": a.id.to_string(),
        "totalSize": u64_value(a.total_size),
        "freeSize": u64_value(a.free_size),
        "duration": u64_value(a.duration),
        "minPricePerBytePerSecond": a.min_price_per_byte_per_second.to_string(),
        "totalCollateral": a.total_collateral.to_string(),
        "totalRemainingCollateral": a.total_remaining_collateral.to_string(),
        "collateralLost": a.collateral_lost.to_string(),
        "enabled": a.enabled,
        "until": u64_value(a.until),
    })
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
