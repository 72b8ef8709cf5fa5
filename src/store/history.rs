//! The history of ended sales (`sale_history`, migration 4): what each sale that held a
//! slot or a reservation came to (outcome, payout, collateral returned and lost, when), so
//! that `codex sale list --all` shows it after a restart and while the node is down.
//!
//! Encodings as in the rest of the store: ids and amounts are 32-byte BLOBs (amounts
//! big-endian), `u64` values the INTEGER with the same 64 bits. Sums of amounts are done
//! here in Rust, saturating, since SQL cannot add BLOBs.
use rusqlite::{params, Row};

use super::columns::{blob32, u256_blob, u64_col};
use super::{Store, StoreError};
use crate::market::{RequestId, U256};
use crate::sales::ledger::{AvailabilityId, ReservationId};

/// One ended sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleRecord {
    /// The request.
    pub request_id: RequestId,
    /// The slot's index.
    pub slot_index: u64,
    /// The availability its reservation drew on, if it had one.
    pub availability_id: Option<AvailabilityId>,
    /// Its reservation, if it had one.
    pub reservation_id: Option<ReservationId>,
    /// The final state's name without the `Sale` prefix: Finished, Cancelled, Failed,
    /// Errored, ...
    pub outcome: String,
    /// Why it ended.
    pub reason: String,
    /// The slot's size in bytes (0 when unknown).
    pub slot_size: u64,
    /// Chain time (unix seconds) the sale began on this node.
    pub started_at: u64,
    /// Chain time it ended.
    pub ended_at: u64,
    /// Tokens the Marketplace paid as the host's reward.
    pub payout: U256,
    /// Collateral the reservation held.
    pub collateral: U256,
    /// Of it, what came back.
    pub collateral_returned: U256,
    /// Of it, what was lost.
    pub collateral_lost: U256,
}

/// A history row: its id (increasing with time) and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The row id.
    pub id: i64,
    /// The sale.
    pub record: SaleRecord,
}

/// Which rows [`Store::sale_history`] returns (all of them by default), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only this request's sales.
    pub request_id: Option<RequestId>,
    /// Only this slot index.
    pub slot_index: Option<u64>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Only rows older than this id (paging).
    pub before_id: Option<i64>,
}

/// Totals over the whole history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Earnings {
    /// Sales ended.
    pub sales: u64,
    /// Σ payout.
    pub payout: U256,
    /// Σ collateral returned.
    pub collateral_returned: U256,
    /// Σ collateral lost.
    pub collateral_lost: U256,
    /// Sales by outcome, by name.
    pub by_outcome: Vec<(String, u64)>,
}

const COLS: &str = "id, request_id, slot_index, availability_id, reservation_id, outcome, reason, slot_size, started_at, ended_at, payout, collateral, collateral_returned, collateral_lost";

fn opt32(row: &Row, i: usize) -> rusqlite::Result<Option<[u8; 32]>> {
    match row.get::<_, Option<Vec<u8>>>(i)? {
        None => Ok(None),
        Some(_) => blob32(row, i).map(Some),
    }
}

fn entry(row: &Row) -> rusqlite::Result<HistoryEntry> {
    Ok(HistoryEntry {
        id: row.get(0)?,
        record: SaleRecord {
            request_id: RequestId::from(blob32(row, 1)?),
            slot_index: u64_col(row, 2)?,
            availability_id: opt32(row, 3)?.map(AvailabilityId),
            reservation_id: opt32(row, 4)?.map(ReservationId),
            outcome: row.get(5)?,
            reason: row.get(6)?,
            slot_size: u64_col(row, 7)?,
            started_at: u64_col(row, 8)?,
            ended_at: u64_col(row, 9)?,
            payout: U256::from_be_bytes(blob32(row, 10)?),
            collateral: U256::from_be_bytes(blob32(row, 11)?),
            collateral_returned: U256::from_be_bytes(blob32(row, 12)?),
            collateral_lost: U256::from_be_bytes(blob32(row, 13)?),
        },
    })
}

impl Store {
    /// Keeps one ended sale; returns its row id. One `BEGIN IMMEDIATE` transaction.
    pub fn record_sale_end(&mut self, r: &SaleRecord) -> Result<i64, StoreError> {
        self.immediate(|tx| -> Result<i64, StoreError> {
            tx.execute(
                "INSERT INTO sale_history (request_id, slot_index, availability_id, reservation_id, outcome, reason, slot_size, started_at, ended_at, payout, collateral, collateral_returned, collateral_lost)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    r.request_id.as_bytes().as_slice(),
                    r.slot_index as i64,
                    r.availability_id.map(|a| a.0.to_vec()),
                    r.reservation_id.map(|a| a.0.to_vec()),
                    r.outcome,
                    r.reason,
                    r.slot_size as i64,
                    r.started_at as i64,
                    r.ended_at as i64,
                    u256_blob(&r.payout).as_slice(),
                    u256_blob(&r.collateral).as_slice(),
                    u256_blob(&r.collateral_returned).as_slice(),
                    u256_blob(&r.collateral_lost).as_slice(),
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// The rows `filter` selects, newest first.
    pub fn sale_history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut sql = format!("SELECT {COLS} FROM sale_history WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(r) = filter.request_id {
            args.push(Box::new(r.as_bytes().to_vec()));
            sql.push_str(&format!(" AND request_id = ?{}", args.len()));
        }
        if let Some(i) = filter.slot_index {
            args.push(Box::new(i as i64));
            sql.push_str(&format!(" AND slot_index = ?{}", args.len()));
        }
        if let Some(o) = &filter.outcome {
            args.push(Box::new(o.clone()));
            sql.push_str(&format!(" AND outcome = ?{}", args.len()));
        }
        if let Some(b) = filter.before_id {
            args.push(Box::new(b));
            sql.push_str(&format!(" AND id < ?{}", args.len()));
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(n) = filter.limit {
            sql.push_str(&format!(" LIMIT {}", n.min(i64::MAX as usize)));
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One row by id.
    pub fn sale_history_entry(&self, id: i64) -> Result<Option<HistoryEntry>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLS} FROM sale_history WHERE id = ?1"),
                [id],
                entry,
            )
            .optional()?)
    }

    /// Totals over the whole history.
    pub fn earnings(&self) -> Result<Earnings, StoreError> {
        let mut e = Earnings::default();
        let mut stmt = self.conn.prepare(
            "SELECT outcome, payout, collateral_returned, collateral_lost FROM sale_history",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let outcome: String = row.get(0)?;
            e.sales += 1;
            e.payout = e
                .payout
                .saturating_add(U256::from_be_bytes(blob32(row, 1)?));
            e.collateral_returned = e
                .collateral_returned
                .saturating_add(U256::from_be_bytes(blob32(row, 2)?));
            e.collateral_lost = e
                .collateral_lost
                .saturating_add(U256::from_be_bytes(blob32(row, 3)?));
            match e.by_outcome.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => e.by_outcome.push((outcome, 1)),
            }
        }
        e.by_outcome.sort();
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;

    fn record(n: u8, outcome: &str) -> SaleRecord {
        SaleRecord {
            request_id: RequestId::from([n; 32]),
            slot_index: u64::MAX - u64::from(n),
            availability_id: Some(AvailabilityId([n; 32])),
            reservation_id: n.is_multiple_of(2).then_some(ReservationId([n + 1; 32])),
            outcome: outcome.into(),
            reason: format!("reason {n}"),
            slot_size: 4096,
            started_at: 1_000 + u64::from(n),
            ended_at: u64::MAX,
            payout: if n == 1 { U256::MAX } else { U256::from(n) },
            collateral: U256::from(10u8),
            collateral_returned: U256::from(7u8),
            collateral_lost: U256::from(3u8),
        }
    }

    #[test]
    fn ended_sales_are_kept_read_back_and_summed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), Options::cli()).unwrap();
        for (n, o) in [(1, "Finished"), (2, "Cancelled"), (3, "Finished")] {
            s.record_sale_end(&record(n, o)).unwrap();
        }
        let all = s.sale_history(&HistoryFilter::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0].record,
            record(3, "Finished"),
            "newest first, values exact"
        );
        assert_eq!(all[2].record, record(1, "Finished"));
        let one = s
            .sale_history(&HistoryFilter {
                request_id: Some(RequestId::from([2; 32])),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].record.outcome, "Cancelled");
        let page = s
            .sale_history(&HistoryFilter {
                limit: Some(1),
                before_id: Some(all[0].id),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page[0].id, all[1].id);
        let finished = s
            .sale_history(&HistoryFilter {
                outcome: Some("Finished".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(finished.len(), 2);
        assert_eq!(
            s.sale_history_entry(all[1].id).unwrap().unwrap(),
            all[1].clone()
        );
        assert_eq!(s.sale_history_entry(999).unwrap(), None);
        let e = s.earnings().unwrap();
        assert_eq!(e.sales, 3);
        assert_eq!(e.payout, U256::MAX, "saturating");
        assert_eq!(e.collateral_lost, U256::from(9u8));
        assert_eq!(
            e.by_outcome,
            vec![("Cancelled".to_string(), 1), ("Finished".to_string(), 2)]
        );
        drop(s);
        // After reopening, the history is still there.
        let s = Store::open(dir.path(), Options::cli()).unwrap();
        assert_eq!(s.sale_history(&HistoryFilter::default()).unwrap(), all);
    }

    #[test]
    fn a_version_3_database_migrates_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::super::DB_FILE);
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            for m in &super::super::MIGRATIONS[..3] {
                c.execute_batch(m).unwrap();
            }
            c.pragma_update(None, "user_version", 3).unwrap();
            c.execute(
                "INSERT INTO chain_cursor (id, block_number, block_hash) VALUES (0, 7, ?1)",
                [vec![1u8; 32]],
            )
            .unwrap();
        }
        let mut s = Store::open(dir.path(), Options::cli()).unwrap();
        assert_eq!(s.schema_version().unwrap(), 4);
        assert_eq!(s.cursor().unwrap().map(|c| c.0), Some(7));
        s.record_sale_end(&record(4, "Errored")).unwrap();
        assert_eq!(s.sale_history(&HistoryFilter::default()).unwrap().len(), 1);
    }
}
