//! How values are stored in columns (32-byte BLOBs for ids and big-endian amounts, the
//! same 64 bits as an `INTEGER` for `u64`), and the rows of availabilities and
//! reservations read back into the ledger's types.

use alloy_primitives::U256;
use rusqlite::Row;

use crate::market::RequestId;
use crate::sales::ledger::{Availability, AvailabilityId, Reservation, ReservationId};

pub(crate) fn u256_blob(v: &U256) -> [u8; 32] {
    v.to_be_bytes::<32>()
}

pub(crate) fn blob32(row: &Row, i: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = row.get(i)?;
    v.as_slice().try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            format!("expected 32 bytes, found {}", v.len()).into(),
        )
    })
}

pub(crate) fn u64_col(row: &Row, i: usize) -> rusqlite::Result<u64> {
    Ok(row.get::<_, i64>(i)? as u64)
}

pub(super) const AV_COLS: &str = "id, total_size, free_size, duration, min_price_per_byte_per_second, total_collateral, total_remaining_collateral, collateral_lost, enabled, until";
pub(super) const RES_COLS: &str =
    "id, availability_id, request_id, slot_index, slot_size, downloaded, collateral, valid_until";

pub(super) fn availability_row(row: &Row) -> rusqlite::Result<Availability> {
    Ok(Availability {
        id: AvailabilityId(blob32(row, 0)?),
        total_size: u64_col(row, 1)?,
        free_size: u64_col(row, 2)?,
        duration: u64_col(row, 3)?,
        min_price_per_byte_per_second: U256::from_be_bytes(blob32(row, 4)?),
        total_collateral: U256::from_be_bytes(blob32(row, 5)?),
        total_remaining_collateral: U256::from_be_bytes(blob32(row, 6)?),
        collateral_lost: U256::from_be_bytes(blob32(row, 7)?),
        enabled: row.get::<_, i64>(8)? != 0,
        until: u64_col(row, 9)?,
    })
}

pub(super) fn reservation_row(row: &Row) -> rusqlite::Result<Reservation> {
    Ok(Reservation {
        id: ReservationId(blob32(row, 0)?),
        availability_id: AvailabilityId(blob32(row, 1)?),
        request_id: RequestId::from(blob32(row, 2)?),
        slot_index: u64_col(row, 3)?,
        slot_size: u64_col(row, 4)?,
        downloaded: u64_col(row, 5)?,
        collateral: U256::from_be_bytes(blob32(row, 6)?),
        valid_until: u64_col(row, 7)?,
    })
}

/// SQL for "the u64 column `col` ≥ the u64 parameter `param`", both stored as the i64 with
/// the same bits: a signed comparison when the signs agree, otherwise the negative one
/// (2^63 and above as u64) is the larger.
pub(super) fn u64_ge(col: &str, param: &str) -> String {
    format!("(CASE WHEN ({col} < 0) = ({param} < 0) THEN {col} >= {param} ELSE {col} < 0 END)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{params, Connection};

    #[test]
    fn u64_ge_compares_as_unsigned() {
        let conn = Connection::open_in_memory().unwrap();
        let vals = [
            0u64,
            1,
            5,
            i64::MAX as u64,
            1 << 63,
            (1 << 63) + 7,
            u64::MAX,
        ];
        for &a in &vals {
            for &b in &vals {
                let ge: bool = conn
                    .query_row(
                        &format!("SELECT {}", u64_ge("?1", "?2")),
                        params![a as i64, b as i64],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(ge, a >= b, "{a} >= {b}");
            }
        }
    }
}
