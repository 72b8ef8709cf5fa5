//! The durable ledger: [`Store`] implements [`Ledger`]: each operation loads what it needs inside one
//! `BEGIN IMMEDIATE` transaction, applies the pure rule of [`crate::sales::ledger`], and
//! writes the result, so the accounting invariant (see `crate::sales::ledger`) holds at
//! every commit, across processes, and after a crash at any instant:
//! for each availability, `free_size + Σ slot_size of its live reservations = total_size`
//! and `total_remaining_collateral + Σ collateral held by them + collateral_lost =
//! total_collateral` (updates of total_collateral keep what is committed).

use alloy_primitives::U256;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::columns::{
    availability_row, blob32, reservation_row, u256_blob, u64_col, u64_ge, AV_COLS, RES_COLS,
};
use super::Store;
use crate::sales::ledger::{
    self, Availability, AvailabilityChange, AvailabilityId, AvailabilityUpdate, Ledger,
    LedgerError, LedgerItem, Limits, NewAvailability, Reservation, ReservationEnd, ReservationId,
    SlotAsk,
};

fn put_availability(tx: &Connection, a: &Availability) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO availabilities ({AV_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET total_size = excluded.total_size,
           free_size = excluded.free_size, duration = excluded.duration,
           min_price_per_byte_per_second = excluded.min_price_per_byte_per_second,
           total_collateral = excluded.total_collateral,
           total_remaining_collateral = excluded.total_remaining_collateral,
           collateral_lost = excluded.collateral_lost, enabled = excluded.enabled,
           until = excluded.until"
    ))?
    .execute(params![
        a.id.0,
        a.total_size as i64,
        a.free_size as i64,
        a.duration as i64,
        u256_blob(&a.min_price_per_byte_per_second),
        u256_blob(&a.total_collateral),
        u256_blob(&a.total_remaining_collateral),
        u256_blob(&a.collateral_lost),
        a.enabled,
        a.until as i64,
    ])?;
    Ok(())
}

fn put_reservation(tx: &Connection, r: &Reservation) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO reservations ({RES_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))?
    .execute(params![
        r.id.0,
        r.availability_id.0,
        r.request_id.as_bytes(),
        r.slot_index as i64,
        r.slot_size as i64,
        r.downloaded as i64,
        u256_blob(&r.collateral),
        r.valid_until as i64,
    ])?;
    Ok(())
}

/// Applies the pure reservation rule to `a` and writes both rows (inside the caller's
/// transaction).
fn insert_reservation(
    tx: &Transaction<'_>,
    a: &Availability,
    id: ReservationId,
    ask: &SlotAsk,
) -> Result<Reservation, LedgerError> {
    if get_reservation(tx, id).is_ok() {
        return Err(LedgerError::DuplicateId(id.to_string()));
    }
    let (after, r) = ledger::reserve(a, id, ask)?;
    put_availability(tx, &after)?;
    put_reservation(tx, &r)?;
    Ok(r)
}

fn get_availability(c: &Connection, id: AvailabilityId) -> Result<Availability, LedgerError> {
    c.prepare_cached(&format!(
        "SELECT {AV_COLS} FROM availabilities WHERE id = ?1"
    ))?
    .query_row([id.0], availability_row)
    .optional()?
    .ok_or(LedgerError::NotFound(LedgerItem::Availability(id)))
}

fn get_reservation(c: &Connection, id: ReservationId) -> Result<Reservation, LedgerError> {
    c.prepare_cached(&format!(
        "SELECT {RES_COLS} FROM reservations WHERE id = ?1"
    ))?
    .query_row([id.0], reservation_row)
    .optional()?
    .ok_or(LedgerError::NotFound(LedgerItem::Reservation(id)))
}

fn all_availabilities(c: &Connection) -> rusqlite::Result<Vec<Availability>> {
    c.prepare_cached(&format!("SELECT {AV_COLS} FROM availabilities ORDER BY id"))?
        .query_map([], availability_row)?
        .collect()
}

fn reservations_of(c: &Connection, id: AvailabilityId) -> rusqlite::Result<Vec<Reservation>> {
    c.prepare_cached(&format!(
        "SELECT {RES_COLS} FROM reservations WHERE availability_id = ?1 ORDER BY id"
    ))?
    .query_map([id.0], reservation_row)?
    .collect()
}

fn total_size_except(c: &Connection, id: Option<AvailabilityId>) -> rusqlite::Result<u64> {
    // Summed in Rust: u64 values are stored as i64 bit patterns.
    let mut stmt = c.prepare_cached("SELECT id, total_size FROM availabilities")?;
    let mut rows = stmt.query([])?;
    let mut total = 0u64;
    while let Some(row) = rows.next()? {
        if Some(AvailabilityId(blob32(row, 0)?)) != id {
            total = total.saturating_add(u64_col(row, 1)?);
        }
    }
    Ok(total)
}

/// Candidates for a slot, in best-fit order: ?1..?2 the free_size range (i64), ?3 the
/// duration, ?4 the price (32-byte blob), ?5 the request end.
fn best_fit_sql() -> String {
    format!(
        "SELECT {AV_COLS} FROM availabilities
         WHERE enabled = 1 AND free_size >= ?1 AND free_size <= ?2
           AND {duration} AND min_price_per_byte_per_second <= ?4
           AND (until = 0 OR {until})
         ORDER BY free_size, id",
        duration = u64_ge("duration", "?3"),
        until = u64_ge("until", "?5"),
    )
}

/// The best fit for `ask` among the enabled availabilities (the answer of
/// [`ledger::best_fit`] over all of them): walks the `availabilities_best_fit` index in
/// (free_size, id) order from `free_size >= slot_size`, with SQL skipping the rows whose
/// duration, price or until cannot match ([`ledger::terms_may_match`]), and returns the
/// first row the pure rule [`ledger::mismatch`] accepts. free_size is stored as i64 bits, so
/// the unsigned order is two signed ranges: [0, i64::MAX], then the negative values.
fn best_fit(tx: &Connection, ask: &SlotAsk) -> Result<Option<Availability>, LedgerError> {
    let mut stmt = tx.prepare_cached(&best_fit_sql())?;
    let size = ask.slot_size as i64;
    // (low, high) in i64 terms: the non-negative range first (only when the slot size is
    // in it), then the range of free sizes of 2^63 and above.
    let ranges = [
        (size >= 0).then_some((size, i64::MAX)),
        Some((if size < 0 { size } else { i64::MIN }, -1)),
    ];
    for (low, high) in ranges.into_iter().flatten() {
        let mut rows = stmt.query(params![
            low,
            high,
            ask.duration as i64,
            u256_blob(&ask.price_per_byte_per_second),
            ask.valid_until as i64,
        ])?;
        while let Some(row) = rows.next()? {
            let a = availability_row(row)?;
            if ledger::mismatch(&a, ask).is_none() {
                return Ok(Some(a));
            }
        }
    }
    Ok(None)
}

impl Store {
    /// Adds many availabilities in one transaction (an import; each is validated as by
    /// [`Ledger::create_availability`], and none is added if one fails).
    pub fn create_availabilities(
        &mut self,
        items: Vec<(AvailabilityId, NewAvailability)>,
        limits: Limits,
    ) -> Result<Vec<Availability>, LedgerError> {
        self.immediate(|tx| {
            let mut total = total_size_except(tx, None)?;
            let mut out = Vec::with_capacity(items.len());
            for (id, new) in &items {
                let a = ledger::new_availability(*id, new, limits, total)?;
                if get_availability(tx, *id).is_ok() {
                    return Err(LedgerError::DuplicateId(id.to_string()));
                }
                put_availability(tx, &a)?;
                total = total.saturating_add(a.total_size);
                out.push(a);
            }
            Ok(out)
        })
    }

    /// Checks the accounting invariant over the whole database in one read transaction.
    pub fn check_invariant(&mut self, quota: Option<u64>) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let avs = all_availabilities(&tx).map_err(|e| e.to_string())?;
        let rs: Vec<Reservation> = tx
            .prepare(&format!("SELECT {RES_COLS} FROM reservations ORDER BY id"))
            .and_then(|mut s| s.query_map([], reservation_row)?.collect())
            .map_err(|e| e.to_string())?;
        ledger::check_invariant(&avs, &rs, quota)
    }
}

impl Ledger for Store {
    fn availabilities(&self) -> Result<Vec<Availability>, LedgerError> {
        Ok(all_availabilities(&self.conn)?)
    }

    fn availability(&self, id: AvailabilityId) -> Result<Availability, LedgerError> {
        get_availability(&self.conn, id)
    }

    fn reservations(&self) -> Result<Vec<Reservation>, LedgerError> {
        let v = self
            .conn
            .prepare_cached(&format!("SELECT {RES_COLS} FROM reservations ORDER BY id"))?
            .query_map([], reservation_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    fn reservation(&self, id: ReservationId) -> Result<Reservation, LedgerError> {
        get_reservation(&self.conn, id)
    }

    fn reservations_of(
        &self,
        availability: AvailabilityId,
    ) -> Result<Vec<Reservation>, LedgerError> {
        get_availability(&self.conn, availability)?;
        Ok(reservations_of(&self.conn, availability)?)
    }

    fn create_availability(
        &mut self,
        id: AvailabilityId,
        new: NewAvailability,
        limits: Limits,
    ) -> Result<Availability, LedgerError> {
        self.immediate(|tx| {
            let a = ledger::new_availability(id, &new, limits, total_size_except(tx, None)?)?;
            if get_availability(tx, id).is_ok() {
                return Err(LedgerError::DuplicateId(id.to_string()));
            }
            put_availability(tx, &a)?;
            Ok(a)
        })
    }

    fn update_availability(
        &mut self,
        id: AvailabilityId,
        update: AvailabilityUpdate,
        limits: Limits,
    ) -> Result<AvailabilityChange, LedgerError> {
        self.immediate(|tx| {
            let before = get_availability(tx, id)?;
            let after = ledger::apply_update(
                &before,
                &update,
                limits,
                total_size_except(tx, Some(id))?,
                &reservations_of(tx, id)?,
            )?;
            if after != before {
                put_availability(tx, &after)?;
            }
            Ok(AvailabilityChange { before, after })
        })
    }

    fn remove_availability(&mut self, id: AvailabilityId) -> Result<Availability, LedgerError> {
        self.immediate(|tx| {
            let a = get_availability(tx, id)?;
            let count: i64 = tx
                .prepare_cached("SELECT count(*) FROM reservations WHERE availability_id = ?1")?
                .query_row([id.0], |r| r.get(0))?;
            if count > 0 {
                return Err(LedgerError::HasReservations {
                    id,
                    count: count as usize,
                });
            }
            tx.prepare_cached("DELETE FROM availabilities WHERE id = ?1")?
                .execute([id.0])?;
            Ok(a)
        })
    }

    fn create_reservation(
        &mut self,
        id: ReservationId,
        availability: AvailabilityId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError> {
        self.immediate(|tx| {
            let a = get_availability(tx, availability)?;
            insert_reservation(tx, &a, id, ask)
        })
    }

    fn reserve_matching(
        &mut self,
        id: ReservationId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError> {
        self.immediate(|tx| {
            let a = best_fit(tx, ask)?.ok_or(LedgerError::NoMatch)?;
            insert_reservation(tx, &a, id, ask)
        })
    }

    fn record_download(
        &mut self,
        id: ReservationId,
        bytes: u64,
    ) -> Result<Reservation, LedgerError> {
        self.immediate(|tx| {
            let r = ledger::add_download(&get_reservation(tx, id)?, bytes)?;
            put_reservation(tx, &r)?;
            Ok(r)
        })
    }

    fn end_reservation(
        &mut self,
        id: ReservationId,
        returned_collateral: U256,
    ) -> Result<ReservationEnd, LedgerError> {
        self.immediate(|tx| {
            let r = get_reservation(tx, id)?;
            let a = get_availability(tx, r.availability_id)?;
            let end = ledger::end(&a, &r, returned_collateral);
            tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                .execute([id.0])?;
            put_availability(tx, &end.availability)?;
            Ok(end)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;

    /// The matching query walks the partial index in its order: no table scan, no sort.
    #[test]
    fn best_fit_query_uses_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::cli()).unwrap();
        let plan: Vec<String> = store
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {}", best_fit_sql()))
            .unwrap()
            .query_map(params![0i64, i64::MAX, 1i64, [0u8; 32], 0i64], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("availabilities_best_fit"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
