//! SQLite persistence: `<data-dir>/codex.sqlite`, one file shared by the node and the CLI.
//!
//! The store is split by what each part is about:
//! - [`open`]: opening the file, the connection settings (WAL, `synchronous = FULL`,
//!   foreign keys, busy timeouts) and the `BEGIN IMMEDIATE` transactions every write runs in.
//! - [`schema`]: the append-only list of migrations and how a database is brought up to
//!   date.
//! - `ledger`: [`Store`] as the durable [`Ledger`](crate::sales::ledger::Ledger), applying
//!   the pure rules of [`crate::sales::ledger`] inside one transaction per operation.
//! - `columns`: how ids, amounts and `u64` values are encoded in columns, and the row
//!   mappers of availabilities and reservations.
//! - `chain`: what the node remembers of the chain: the slots it reserved and filled,
//!   and the last processed block.
//! - `ids`: resolving an id prefix a person typed to one row.
//! - [`history`]: the history of ended sales.
//!
//! Encodings: ids, request ids and block hashes are 32-byte BLOBs; 256-bit amounts are
//! 32-byte big-endian BLOBs (fixed width, so SQL comparisons and `ORDER BY` follow the
//! numeric order); `u64` values are stored as the `INTEGER` (i64) with the same 64 bits.

use std::path::PathBuf;

use rusqlite::Connection;

pub mod behind;
mod chain;
mod columns;
pub mod history;
mod ids;
mod ledger;
pub mod open;
pub mod schema;

pub use open::Options;
pub use schema::{MIGRATIONS, SCHEMA_VERSION};

use crate::sales::ledger::LedgerError;

/// The database file name inside the data directory.
pub const DB_FILE: &str = "codex.sqlite";

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
    /// The write-behind thread could not be started.
    #[error("cannot start the database sync thread: {0}")]
    Thread(String),
    /// The database's write-ahead log cannot be opened (for write-behind).
    #[error("cannot open {path}: {source}")]
    Wal {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the user's input is at fault (an id that names nothing, a rule the input
    /// breaks), not the environment (the file, the disk, SQLite).
    pub fn is_usage(&self) -> bool {
        match self {
            StoreError::BadId(_)
            | StoreError::IdNotFound { .. }
            | StoreError::AmbiguousId { .. } => true,
            StoreError::Ledger(e) => e.is_usage(),
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Backend(e.to_string())
    }
}

/// The SQLite store. Implements [`Ledger`](crate::sales::ledger::Ledger).
pub struct Store {
    conn: Connection,
    path: PathBuf,
    options: Options,
    /// Write-behind durability, when the node turned it on ([`behind`]).
    behind: Option<behind::Behind>,
}
