//! Checkpoints off the writer's thread.
//!
//! In WAL mode a commit appends to the `-wal` file, and a checkpoint copies those pages back
//! into the database file and fsyncs it. SQLite runs that checkpoint on the connection whose
//! commit crosses 1,000 pages, inside that commit: on the node's connection that is the event
//! loop, which then waits for a burst of writes and two fsyncs (tens of milliseconds on a busy
//! disk). [`Store::checkpoint_in_background`] turns that off for the store's connection and
//! runs passive checkpoints from a thread with a connection of its own instead. A passive
//! checkpoint takes no lock that a writer needs: the loop keeps committing while it runs.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{Store, StoreError};

/// The background checkpointer; dropping it stops the thread (after at most one more
/// checkpoint) and gives checkpoints back to the store's connection.
pub struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    frames: Arc<AtomicU64>,
}

impl Checkpointer {
    /// WAL frames copied into the database file so far.
    pub fn frames_checkpointed(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn checkpoint(conn: &Connection) -> rusqlite::Result<u64> {
    // (busy, frames in the WAL, frames checkpointed); -1 when the file is not in WAL mode.
    let (_, _, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(u64::try_from(done).unwrap_or(0))
}

fn open_second(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_millis(100))
        .map_err(open_err)?;
    Ok(conn)
}

impl Store {
    /// Stops checkpoints on this connection and runs one every `every` from a thread of its
    /// own (module docs). The WAL then holds at most about `every` of writes.
    pub fn checkpoint_in_background(
        &mut self,
        every: Duration,
    ) -> Result<Checkpointer, StoreError> {
        let conn = open_second(&self.path)?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|source| StoreError::Open {
                path: self.path.clone(),
                source,
            })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let frames = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&frames);
        let path = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("codex-checkpoint".into())
            .spawn(move || {
                let mut last_done = 0;
                loop {
                    let stop = matches!(
                        stopped.recv_timeout(every),
                        Ok(()) | Err(RecvTimeoutError::Disconnected)
                    );
                    match checkpoint(&conn) {
                        // The count restarts when the WAL does (after a full checkpoint).
                        Ok(done) => {
                            let new = if done >= last_done {
                                done - last_done
                            } else {
                                done
                            };
                            counted.fetch_add(new, Ordering::Relaxed);
                            last_done = done;
                        }
                        Err(e) => log::warn!(
                            target: "codex::store",
                            "checkpointing {}: {e}",
                            path.display()
                        ),
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(|source| StoreError::Thread(source.to_string()))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
            frames,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::B256;
    use crate::store::Options;
    use std::time::Instant;

    fn autocheckpoint(s: &Store) -> i64 {
        s.connection()
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_thread_checkpoints_what_the_store_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Options::node()).unwrap();
        assert_eq!(autocheckpoint(&store), 1000);
        let cp = store
            .checkpoint_in_background(Duration::from_millis(5))
            .unwrap();
        assert_eq!(
            autocheckpoint(&store),
            0,
            "the store's commits no longer checkpoint"
        );
        for b in 0..50 {
            store.set_cursor(b, B256::repeat_byte(b as u8)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while cp.frames_checkpointed() < 50 {
            assert!(
                Instant::now() < deadline,
                "{} frames",
                cp.frames_checkpointed()
            );
            std::thread::yield_now();
        }
        drop(cp);
        assert_eq!(store.cursor().unwrap().map(|c| c.0), Some(49));
    }
}
