//! Opening the database and configuring its connection.
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
//!   against the disk's fsync rate. The node moves that wait off its event loop
//!   ([`crate::store::behind`]): its commits return before the disk has them, and it sends no
//!   transaction until they are durable.
//! - **Foreign keys on**: a reservation cannot point at a missing availability.
//! - **Every write is one `BEGIN IMMEDIATE` transaction**: it takes the write lock first,
//!   so a read-then-write never fails halfway with SQLITE_BUSY. The busy timeout is
//!   short for the node ([`Options::node`], the event loop must not stall) and longer for
//!   the CLI ([`Options::cli`]), and a busy `BEGIN` is retried until [`Options::retry_for`]
//!   has passed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use super::schema::SCHEMA_VERSION;
use super::{Store, StoreError, DB_FILE};

/// Connection tuning.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long SQLite itself waits for a lock before returning SQLITE_BUSY.
    pub busy_timeout: Duration,
    /// How long a busy `BEGIN IMMEDIATE` is retried in total.
    pub retry_for: Duration,
    /// The level of the note that a migration was applied: `debug` for CLI commands (whose
    /// stderr is for errors and real warnings, next to data on stdout), `info` for the node.
    pub migration_log: log::Level,
}

impl Options {
    /// For CLI commands: wait up to 5 s for the lock, retry for 10 s.
    pub fn cli() -> Options {
        Options {
            busy_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(10),
            migration_log: log::Level::Debug,
        }
    }
    /// For the node's event loop: wait at most 20 ms, no retries here (the engine keeps a
    /// write that met a busy database and tries it again from its timer table).
    pub fn node() -> Options {
        Options {
            busy_timeout: Duration::from_millis(20),
            retry_for: Duration::ZERO,
            migration_log: log::Level::Info,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
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
            behind: None,
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
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
        if let Some(b) = &self.behind {
            b.committed();
        }
        Ok(v)
    }
}
