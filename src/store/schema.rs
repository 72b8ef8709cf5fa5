//! The schema: the numbered migrations and how an opened database is brought up to the
//! version this codex writes.
//!
//! [`MIGRATIONS`] is an append-only list; migration *n* (1-based) brings the schema to
//! version *n*, kept in `PRAGMA user_version` and applied in the same transaction. A
//! database whose version is higher than this codex knows is refused with
//! [`StoreError::NewerSchema`] before anything is written. Tables: availabilities,
//! reservations and the chain cursor (1), the best-fit index (2), the slots reserved and
//! filled on chain (3), and the history of ended sales (4, see [`history`](super::history)).

use super::{Store, StoreError};

/// The schema migrations, in order. Append only; never edit a released one.
pub const MIGRATIONS: &[&str] = &[
    // 1: availabilities, reservations, chain cursor.
    "CREATE TABLE availabilities (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32),
        total_size INTEGER NOT NULL,
        free_size INTEGER NOT NULL,
        duration INTEGER NOT NULL,
        min_price_per_byte_per_second BLOB NOT NULL CHECK (length(min_price_per_byte_per_second) = 32),
        total_collateral BLOB NOT NULL CHECK (length(total_collateral) = 32),
        total_remaining_collateral BLOB NOT NULL CHECK (length(total_remaining_collateral) = 32),
        collateral_lost BLOB NOT NULL CHECK (length(collateral_lost) = 32),
        enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        until INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE reservations (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32),
        availability_id BLOB NOT NULL REFERENCES availabilities (id),
        request_id BLOB NOT NULL CHECK (length(request_id) = 32),
        slot_index INTEGER NOT NULL,
        slot_size INTEGER NOT NULL,
        downloaded INTEGER NOT NULL,
        collateral BLOB NOT NULL CHECK (length(collateral) = 32),
        valid_until INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX reservations_by_availability ON reservations (availability_id);
    CREATE TABLE chain_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        block_number INTEGER NOT NULL,
        block_hash BLOB NOT NULL CHECK (length(block_hash) = 32)
    );",
    // 2: the best-fit order of the enabled availabilities, walked by reserve_matching.
    "CREATE INDEX availabilities_best_fit ON availabilities (free_size, id) WHERE enabled = 1;",
    // 3: slots this host reserved on chain (reserveSlot succeeded), and whether it filled
    // them. The contract has no view for the first and refuses a second reservation by the
    // same address, so a node that restarts between reserving and filling needs to
    // remember it; the second tells a restarted node that a slot gone from mySlots took
    // posted collateral with it.
    "CREATE TABLE chain_reservations (
        request_id BLOB NOT NULL CHECK (length(request_id) = 32),
        slot_index INTEGER NOT NULL,
        filled INTEGER NOT NULL DEFAULT 0 CHECK (filled IN (0, 1)),
        PRIMARY KEY (request_id, slot_index)
    ) WITHOUT ROWID;",
    // 4: the history of ended sales (`history`).
    "CREATE TABLE sale_history (
        id INTEGER PRIMARY KEY,
        request_id BLOB NOT NULL CHECK (length(request_id) = 32),
        slot_index INTEGER NOT NULL,
        availability_id BLOB CHECK (availability_id IS NULL OR length(availability_id) = 32),
        reservation_id BLOB CHECK (reservation_id IS NULL OR length(reservation_id) = 32),
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL,
        slot_size INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER NOT NULL,
        payout BLOB NOT NULL CHECK (length(payout) = 32),
        collateral BLOB NOT NULL CHECK (length(collateral) = 32),
        collateral_returned BLOB NOT NULL CHECK (length(collateral_returned) = 32),
        collateral_lost BLOB NOT NULL CHECK (length(collateral_lost) = 32)
    );
    CREATE INDEX sale_history_by_slot ON sale_history (request_id, slot_index);
    CREATE INDEX sale_history_by_end ON sale_history (ended_at);",
];

/// The schema version this codex writes: the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

impl Store {
    /// Applies the migrations the database has not had yet, in one transaction.
    pub(super) fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        // The empty in-memory store is built afresh each time: nothing worth a note.
        let note = !self.is_in_memory();
        let level = self.options.migration_log;
        self.immediate(|tx| {
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    path: path.clone(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", i as i64 + 1)?;
                if note {
                    // Under the store's own topic, as `crate::logging` shows it.
                    log::log!(
                        target: "codex::store",
                        level,
                        "database {}: migrated to schema version {}",
                        path.display(),
                        i + 1
                    );
                }
            }
            Ok(())
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}
