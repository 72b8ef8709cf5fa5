//! Write-behind durability for the node: commits that do not wait for the disk, a thread
//! that makes them durable, and a question the node asks before it acts on the chain.
//!
//! A durable commit in WAL mode ends in an fdatasync of the `-wal` file. On the node's
//! connection that wait would sit inside the event loop: usually a tenth of a millisecond,
//! but tens of milliseconds when other processes write to the same disk, with every socket
//! unread meanwhile. [`Store::write_behind`] moves the wait to a thread:
//!
//! - the store's connection commits with `synchronous = NORMAL`: a commit is in the OS's page
//!   cache when it returns, so it survives a killed process (kill -9) as any commit does; only
//!   a power cut can lose it, and only until the thread has synced it;
//! - after each commit the store counts it and wakes the thread, which runs fdatasync on the
//!   `-wal` file and then records every commit counted before it as durable
//!   ([`Store::durable_through`]), and wakes the loop through the caller's callback;
//! - the node sends no transaction until every commit made before it is durable
//!   ([`Store::commits`] then [`Store::durable_through`]), so what the chain sees never runs
//!   ahead of what the disk holds: a power cut cannot leave a filled slot without its
//!   reservation;
//! - the same thread runs a passive checkpoint every `every` (the copy of the WAL into the
//!   database file and its fsyncs), which SQLite would otherwise run inside a commit: the
//!   store's connection does not checkpoint (`wal_autocheckpoint = 0`). A passive checkpoint
//!   takes no lock a writer needs.
//!
//! CLI commands do not use this: each of their commits is durable when it returns.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{Store, StoreError};

/// What the store and its thread share.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Commits made on the store's connection.
    commits: AtomicU64,
    /// Commits known to be on the disk.
    durable: AtomicU64,
    /// WAL frames copied into the database file by the thread's checkpoints.
    checkpointed: AtomicU64,
}

/// What the thread is told.
#[derive(Debug)]
enum Ring {
    /// A commit returned.
    Commit,
    /// Sync what is left and stop.
    Stop,
}

/// The store's side: its counters and the thread's doorbell.
#[derive(Debug)]
pub(super) struct Behind {
    counters: Arc<Counters>,
    kick: Sender<Ring>,
}

impl Behind {
    /// Counts a commit that just returned and rings the thread.
    pub(super) fn committed(&self) {
        self.counters.commits.fetch_add(1, Ordering::AcqRel);
        let _ = self.kick.send(Ring::Commit);
    }
}

/// The thread; dropping it syncs what is left, stops the thread and waits for it (at once:
/// the stop rings the same doorbell as the commits).
pub struct Syncer {
    doorbell: Sender<Ring>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Syncer {
    /// WAL frames the thread's checkpoints copied into the database file so far.
    pub fn frames_checkpointed(&self) -> u64 {
        self.counters.checkpointed.load(Ordering::Acquire)
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let _ = self.doorbell.send(Ring::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn store_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// One passive checkpoint; the frames it reports as copied.
fn checkpoint(conn: &Connection) -> rusqlite::Result<u64> {
    // (busy, frames in the WAL, frames checkpointed); -1 when the file is not in WAL mode.
    let (_, _, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(u64::try_from(done).unwrap_or(0))
}

struct Thread {
    wal: File,
    wal_path: PathBuf,
    conn: Connection,
    counters: Arc<Counters>,
    every: Duration,
    wake: Box<dyn Fn() + Send>,
}

impl Thread {
    fn sync(&self) {
        let n = self.counters.commits.load(Ordering::Acquire);
        if n <= self.counters.durable.load(Ordering::Acquire) {
            return;
        }
        match self.wal.sync_data() {
            Ok(()) => {
                self.counters.durable.store(n, Ordering::Release);
                (self.wake)();
            }
            // Nothing is marked durable; the next commit or round tries again.
            Err(e) => log::warn!(
                target: "codex::store",
                "syncing {}: {e}",
                self.wal_path.display()
            ),
        }
    }

    fn run(self, doorbell: mpsc::Receiver<Ring>) {
        let mut last_checkpoint = Instant::now();
        let mut last_done = 0;
        loop {
            let wait = self.every.saturating_sub(last_checkpoint.elapsed());
            let mut stop = match doorbell.recv_timeout(wait) {
                Ok(ring) => matches!(ring, Ring::Stop),
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            // Every ring that came meanwhile is answered by the one sync below.
            while let Ok(ring) = doorbell.try_recv() {
                stop |= matches!(ring, Ring::Stop);
            }
            self.sync();
            if stop || last_checkpoint.elapsed() >= self.every {
                last_checkpoint = Instant::now();
                match checkpoint(&self.conn) {
                    // The count restarts when the WAL does (after a complete checkpoint).
                    Ok(done) => {
                        let new = done.checked_sub(last_done).unwrap_or(done);
                        self.counters.checkpointed.fetch_add(new, Ordering::AcqRel);
                        last_done = done;
                    }
                    Err(e) => log::warn!(
                        target: "codex::store",
                        "checkpointing {}: {e}",
                        self.wal_path.display()
                    ),
                }
            }
            if stop {
                return;
            }
        }
    }
}

impl Store {
    /// Switches this store to write-behind durability (module docs) and starts its thread,
    /// which calls `wake` whenever more commits became durable and checkpoints every
    /// `every`. On an error nothing has changed: commits stay durable when they return.
    pub fn write_behind(
        &mut self,
        every: Duration,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<Syncer, StoreError> {
        let err = store_err(&self.path);
        let conn = Connection::open(&self.path).map_err(&err)?;
        conn.busy_timeout(Duration::from_millis(100))
            .map_err(&err)?;
        // The connection made the -wal file when it opened the database in WAL mode.
        let wal_path = PathBuf::from(format!("{}-wal", self.path.display()));
        let wal = File::open(&wal_path).map_err(|source| StoreError::Wal {
            path: wal_path.clone(),
            source,
        })?;
        let (kick, doorbell) = mpsc::channel::<Ring>();
        let counters = Arc::new(Counters::default());
        let thread = Thread {
            wal,
            wal_path,
            conn,
            counters: Arc::clone(&counters),
            every,
            wake,
        };
        let handle = std::thread::Builder::new()
            .name("codex-sync".into())
            .spawn(move || thread.run(doorbell))
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        let syncer = Syncer {
            doorbell: kick.clone(),
            thread: Some(handle),
            counters: Arc::clone(&counters),
        };
        // Only now that the thread runs: from here on it is what makes commits durable.
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .and_then(|()| self.conn.pragma_update(None, "synchronous", "NORMAL"))
            .map_err(&err)?;
        self.behind = Some(Behind { counters, kick });
        Ok(syncer)
    }

    /// Whether the store is in write-behind mode.
    pub fn is_write_behind(&self) -> bool {
        self.behind.is_some()
    }

    /// Commits made so far (write-behind mode; 0 otherwise).
    pub fn commits(&self) -> u64 {
        self.behind
            .as_ref()
            .map_or(0, |b| b.counters.commits.load(Ordering::Acquire))
    }

    /// Whether the first `n` commits are on the disk (always, without write-behind).
    pub fn durable_through(&self, n: u64) -> bool {
        self.behind
            .as_ref()
            .is_none_or(|b| b.counters.durable.load(Ordering::Acquire) >= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::B256;
    use crate::store::Options;

    fn pragma(s: &Store, name: &str) -> i64 {
        s.connection()
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    fn wait(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn commits_become_durable_and_are_checkpointed_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Options::node()).unwrap();
        assert_eq!(
            (
                pragma(&store, "synchronous"),
                pragma(&store, "wal_autocheckpoint")
            ),
            (2, 1000)
        );
        assert!(
            store.durable_through(u64::MAX),
            "without write-behind every commit is durable"
        );
        let woken = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&woken);
        let syncer = store
            .write_behind(
                Duration::from_millis(5),
                Box::new(move || {
                    w.fetch_add(1, Ordering::AcqRel);
                }),
            )
            .unwrap();
        assert_eq!(
            (
                pragma(&store, "synchronous"),
                pragma(&store, "wal_autocheckpoint")
            ),
            (1, 0)
        );
        for b in 0..50 {
            store.set_cursor(b, B256::repeat_byte(b as u8)).unwrap();
        }
        let n = store.commits();
        assert_eq!(n, 50);
        wait("the commits become durable", || store.durable_through(n));
        assert!(woken.load(Ordering::Acquire) > 0, "the loop was woken");
        wait("the thread checkpoints them", || {
            syncer.frames_checkpointed() >= 50
        });
        drop(syncer);
        assert_eq!(store.cursor().unwrap().map(|c| c.0), Some(49));
    }

    #[test]
    fn dropping_the_syncer_syncs_and_stops_without_waiting_for_its_round() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Options::node()).unwrap();
        // A round far longer than the test: only the stop's ring can end the wait.
        let syncer = store
            .write_behind(Duration::from_secs(3600), Box::new(|| {}))
            .unwrap();
        store.set_cursor(1, B256::repeat_byte(1)).unwrap();
        let t = Instant::now();
        drop(syncer);
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "the thread waited for its round"
        );
        assert!(
            store.durable_through(store.commits()),
            "the last commits were synced"
        );
    }
}
