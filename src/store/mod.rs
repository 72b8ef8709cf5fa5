//! SQLite persistence: `<data-dir>/codex.sqlite`, one file shared by the node and the CLI.
//!
//! # Connection settings
//! - **WAL** journal: readers never block the writer, and the node and a CLI command can use
//!   the file at the same time. The bundled SQLite is used on purpose (older system
//!   libraries have a WAL race between processes).
//! - **`synchronous = FULL`**: every commit fsyncs the WAL before it returns. Any mode in
//!   WAL keeps committed writes across a killed process (kill -9: the data is in the OS
//!   page cache already) and never corrupts the file on a power cut; `NORMAL` would however
//!   lose the last commits on a power cut. The node acts on the chain after it commits
//!   (reserving a slot, posting collateral), so a commit must survive a power cut as well;
//!   the price is one fsync per write transaction, which `benches/store.rs` measures
//!   against the disk's fsync rate.
//! - **Foreign keys on**: a reservation cannot point at a missing availability.
//! - **Every write is one `BEGIN IMMEDIATE` transaction**: it takes the write lock first,
//!   so a read-then-write never fails halfway with SQLITE_BUSY. The busy timeout is
//!   short for the node ([`Options::node`], the event loop must not stall) and longer for
//!   the CLI ([`Options::cli`]), and a busy `BEGIN` is retried until [`Options::retry_for`]
//!   has passed.
//!
//! # Schema and migrations
//! [`MIGRATIONS`] is an append-only list; migration *n* (1-based) brings the schema to
//! version *n*, kept in `PRAGMA user_version` and applied in the same transaction. A
//! database whose version is higher than this codex knows is refused with
//! [`StoreError::NewerSchema`] before anything is written. Tables: availabilities,
//! reservations and the chain cursor (1), the best-fit index (2), the slots reserved and
//! filled on chain (3), and the history of ended sales (4, see [`history`]).
//!
//! Encodings: ids, request ids and block hashes are 32-byte BLOBs; 256-bit amounts are
//! 32-byte big-endian BLOBs (fixed width, so SQL comparisons and `ORDER BY` follow the
//! numeric order); `u64` values are stored as the `INTEGER` (i64) with the same 64 bits.
//!
//! # The ledger
//! [`Store`] implements [`Ledger`]: each operation loads what it needs inside one
//! `BEGIN IMMEDIATE` transaction, applies the pure rule of `crate::sales::ledger`, and
//! writes the result, so the accounting invariant (see `crate::sales::ledger`) holds at
//! every commit, across processes, and after a crash at any instant:
//! for each availability, `free_size + Σ slot_size of its live reservations = total_size`
//! and `total_remaining_collateral + Σ collateral held by them + collateral_lost =
//! total_collateral` (updates of total_collateral keep what is committed).
//!
//! # Chain cursor
//! `chain_cursor` holds the last fully processed block (number and hash), so that the node
//! resumes from it after a restart ([`Store::cursor`], [`Store::set_cursor`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy_primitives::{B256, U256};
use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior,
};

pub mod history;

use crate::market::RequestId;
use crate::sales::ledger::{
    self, Availability, AvailabilityChange, AvailabilityId, AvailabilityUpdate, Ledger,
    LedgerError, LedgerItem, Limits, NewAvailability, Reservation, ReservationEnd, ReservationId,
    SlotAsk,
};

/// The database file name inside the data directory.
pub const DB_FILE: &str = "codex.sqlite";

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

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created or is not a directory.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The data directory cannot be read (a part of its path is not a directory, or
    /// access is denied).
    #[error("cannot read data directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite cannot open or use the file (permissions, I/O, locked too long).
    #[error("cannot use database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file exists but is not an SQLite database.
    #[error("{0} is not a codex database (not an SQLite file); move it away or choose another --data-dir")]
    NotADatabase(PathBuf),
    /// The database was written by a newer codex; it is left untouched.
    #[error("database {path} has schema version {found}, newer than this codex supports ({supported}); upgrade codex")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// An SQLite failure during an operation.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An id argument that is not 4 to 64 hex digits.
    #[error("invalid id {0:?}: expected at least 4 hex digits (optionally prefixed with 0x) of a 32-byte id")]
    BadId(String),
    /// No row has an id with this prefix.
    #[error("no {kind} with id {prefix}")]
    IdNotFound { kind: &'static str, prefix: String },
    /// More than one row has an id with this prefix.
    #[error("ambiguous {kind} id {prefix}: it matches {}", candidates.join(", "))]
    AmbiguousId {
        kind: &'static str,
        prefix: String,
        candidates: Vec<String>,
    },
    /// A ledger rule refused the operation, or the ledger backend failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl StoreError {
    /// Exit code: 2 for errors in the user's input, 1 for the environment.
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::BadId(_)
            | StoreError::IdNotFound { .. }
            | StoreError::AmbiguousId { .. } => 2,
            StoreError::Ledger(e) if e.is_usage() => 2,
            _ => 1,
        }
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Backend(e.to_string())
    }
}

/// Connection tuning.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long SQLite itself waits for a lock before returning SQLITE_BUSY.
    pub busy_timeout: Duration,
    /// How long a busy `BEGIN IMMEDIATE` is retried in total.
    pub retry_for: Duration,
}

impl Options {
    /// For CLI commands: wait up to 5 s for the lock, retry for 10 s.
    pub fn cli() -> Options {
        Options {
            busy_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(10),
        }
    }
    /// For the node's event loop: wait at most 20 ms, no retries here (the engine keeps a
    /// write that met a busy database and tries it again from its timer table).
    pub fn node() -> Options {
        Options {
            busy_timeout: Duration::from_millis(20),
            retry_for: Duration::ZERO,
        }
    }
}

/// The SQLite store. Implements [`Ledger`].
pub struct Store {
    conn: Connection,
    path: PathBuf,
    options: Options,
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

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

const AV_COLS: &str = "id, total_size, free_size, duration, min_price_per_byte_per_second, total_collateral, total_remaining_collateral, collateral_lost, enabled, until";
const RES_COLS: &str =
    "id, availability_id, request_id, slot_index, slot_size, downloaded, collateral, valid_until";

fn availability_row(row: &Row) -> rusqlite::Result<Availability> {
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

fn reservation_row(row: &Row) -> rusqlite::Result<Reservation> {
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

/// SQL for "the u64 column `col` ≥ the u64 parameter `param`", both stored as the i64 with
/// the same bits: a signed comparison when the signs agree, otherwise the negative one
/// (2^63 and above as u64) is the larger.
fn u64_ge(col: &str, param: &str) -> String {
    format!("(CASE WHEN ({col} < 0) = ({param} < 0) THEN {col} >= {param} ELSE {col} < 0 END)")
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
    /// Opens (creating if needed) `<data_dir>/codex.sqlite` and brings its schema up to date.
    pub fn open(data_dir: &Path, options: Options) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        Store::open_file(&data_dir.join(DB_FILE), options)
    }

    /// Opens `<data_dir>/codex.sqlite` when it exists, and otherwise an empty database in
    /// memory: for commands that only read, or change only what exists, so that running
    /// one against a mistyped `--data-dir` creates no files. A path that cannot be
    /// examined (a part of it is a file, access denied) is an error, not an empty store.
    pub fn open_existing(data_dir: &Path, options: Options) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(_) => Store::open_file(&path, options),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let open_err = |source| StoreError::Open {
                    path: path.clone(),
                    source,
                };
                let conn = Connection::open_in_memory().map_err(open_err)?;
                Store::setup(conn, path.clone(), options)
            }
            Err(source) => Err(StoreError::ReadDir {
                path: data_dir.to_path_buf(),
                source,
            }),
        }
    }

    /// Whether this store is the empty in-memory one of [`Self::open_existing`].
    pub fn is_in_memory(&self) -> bool {
        self.conn.path().is_none_or(str::is_empty)
    }

    /// Opens a database file directly.
    pub fn open_file(path: &Path, options: Options) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Store::setup(conn, path.to_path_buf(), options)
    }

    /// Checks the schema version, configures the connection and migrates.
    fn setup(conn: Connection, path: PathBuf, options: Options) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
        let version = match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)) {
            Ok(v) => v,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
                return Err(StoreError::NotADatabase(path.clone()))
            }
            Err(e) => return Err(open_err(e)),
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let mut store = Store {
            conn,
            path: path.clone(),
            options,
        };
        store.configure().map_err(open_err)?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&self) -> rusqlite::Result<()> {
        let start = Instant::now();
        loop {
            // Switching to WAL needs a moment of exclusive access on a fresh file.
            match self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            {
                Ok(_) => break,
                Err(e) if is_busy(&e) && start.elapsed() < self.options.retry_for => continue,
                Err(e) => return Err(e),
            }
        }
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.pragma_update(None, "foreign_keys", true)?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        // The empty in-memory store is built afresh each time: nothing worth a note.
        let note = !self.is_in_memory();
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
                    log::info!(
                        "database {}: migrated to schema version {}",
                        path.display(),
                        i + 1
                    );
                }
            }
            Ok(())
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// The underlying connection, for reads by later modules.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: committed when `f` returns Ok, rolled
    /// back otherwise. A busy `BEGIN` is retried until [`Options::retry_for`] has passed.
    pub fn immediate<T, E>(
        &mut self,
        mut f: impl FnMut(&Transaction) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        let start = Instant::now();
        let tx = loop {
            match self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
            {
                Ok(tx) => break tx,
                Err(e) if is_busy(&e) && start.elapsed() < self.options.retry_for => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    /// Records that this host holds an on-chain reservation of the slot.
    pub fn record_chain_reservation(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO chain_reservations (request_id, slot_index) VALUES (?1, ?2)",
                params![request_id.0.as_slice(), slot_index as i64],
            )?;
            Ok::<_, StoreError>(())
        })
    }

    /// Records that this host filled the slot (posted its collateral).
    pub fn record_chain_fill(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT INTO chain_reservations (request_id, slot_index, filled) VALUES (?1, ?2, 1)
                 ON CONFLICT (request_id, slot_index) DO UPDATE SET filled = 1",
                params![request_id.0.as_slice(), slot_index as i64],
            )?;
            Ok::<_, StoreError>(())
        })
    }

    /// Whether this host filled the slot (see [`Self::record_chain_fill`]).
    pub fn has_chain_fill(
        &self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM chain_reservations WHERE request_id = ?1 AND slot_index = ?2 AND filled = 1",
                params![request_id.0.as_slice(), slot_index as i64],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Whether this host reserved the slot on chain (see [`Self::record_chain_reservation`]).
    pub fn has_chain_reservation(
        &self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM chain_reservations WHERE request_id = ?1 AND slot_index = ?2",
                params![request_id.0.as_slice(), slot_index as i64],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Forgets the on-chain reservations of a request that can take no more fills (it
    /// started, was cancelled or failed) that this host did not fill; the filled ones stay
    /// until their sales end ([`Self::forget_chain_fill`]).
    pub fn forget_chain_reservations(&mut self, request_id: RequestId) -> Result<(), StoreError> {
        self.immediate(|tx| {
            tx.execute(
                "DELETE FROM chain_reservations WHERE request_id = ?1 AND filled = 0",
                params![request_id.0.as_slice()],
            )?;
            Ok::<_, StoreError>(())
        })
    }

    /// Forgets a filled slot whose sale ended.
    pub fn forget_chain_fill(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.immediate(|tx| {
            tx.execute(
                "DELETE FROM chain_reservations WHERE request_id = ?1 AND slot_index = ?2 AND filled = 1",
                params![request_id.0.as_slice(), slot_index as i64],
            )?;
            Ok::<_, StoreError>(())
        })
    }

    /// The last fully processed block, if any.
    pub fn cursor(&self) -> Result<Option<(u64, B256)>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT block_number, block_hash FROM chain_cursor WHERE id = 0",
                [],
                |r| Ok((u64_col(r, 0)?, B256::from(blob32(r, 1)?))),
            )
            .optional()?;
        Ok(row)
    }

    /// Records the last fully processed block.
    pub fn set_cursor(&mut self, block: u64, hash: B256) -> Result<(), StoreError> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO chain_cursor (id, block_number, block_hash) VALUES (0, ?1, ?2)",
                params![block as i64, hash.as_slice()],
            )?;
            Ok::<_, StoreError>(())
        })
    }

    fn resolve(&self, table: &str, kind: &'static str, text: &str) -> Result<[u8; 32], StoreError> {
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if hex.len() < 4 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::BadId(text.to_string()));
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id FROM {table} WHERE hex(id) LIKE ?1 || '%' ORDER BY id LIMIT 11"
        ))?;
        let ids: Vec<[u8; 32]> = stmt
            .query_map([hex.to_ascii_uppercase()], |r| blob32(r, 0))?
            .collect::<Result<_, _>>()?;
        let prefix = format!("0x{}", hex.to_ascii_lowercase());
        match ids.as_slice() {
            [] => Err(StoreError::IdNotFound { kind, prefix }),
            [one] => Ok(*one),
            many => {
                let mut candidates: Vec<String> = many
                    .iter()
                    .take(10)
                    .map(|b| AvailabilityId(*b).to_string())
                    .collect();
                if many.len() > 10 {
                    candidates.push("...".into());
                }
                Err(StoreError::AmbiguousId {
                    kind,
                    prefix,
                    candidates,
                })
            }
        }
    }

    /// The availability whose id is or starts with `text` (at least 4 hex digits).
    pub fn resolve_availability(&self, text: &str) -> Result<AvailabilityId, StoreError> {
        self.resolve("availabilities", "availability", text)
            .map(AvailabilityId)
    }

    /// The reservation whose id is or starts with `text` (at least 4 hex digits).
    pub fn resolve_reservation(&self, text: &str) -> Result<ReservationId, StoreError> {
        self.resolve("reservations", "reservation", text)
            .map(ReservationId)
    }

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
