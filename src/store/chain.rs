//! What the node remembers of the chain across restarts: the slots this host reserved and
//! filled on chain (`chain_reservations`), and the last fully processed block
//! (`chain_cursor`), from which the node resumes ([`Store::cursor`], [`Store::set_cursor`]).

use alloy_primitives::B256;
use rusqlite::{params, OptionalExtension};

use super::columns::{blob32, u64_col};
use super::{Store, StoreError};
use crate::market::RequestId;

impl Store {
    /// Runs one statement on the row of a slot (`?1` the request id, `?2` the slot index)
    /// in its own immediate transaction.
    fn slot_write(
        &mut self,
        sql: &str,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.immediate(|tx| {
            tx.execute(sql, params![request_id.0.as_slice(), slot_index as i64])?;
            Ok::<_, StoreError>(())
        })
    }

    /// Records that this host holds an on-chain reservation of the slot.
    pub fn record_chain_reservation(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.slot_write(
            "INSERT OR IGNORE INTO chain_reservations (request_id, slot_index) VALUES (?1, ?2)",
            request_id,
            slot_index,
        )
    }

    /// Records that this host filled the slot (posted its collateral).
    pub fn record_chain_fill(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.slot_write(
            "INSERT INTO chain_reservations (request_id, slot_index, filled) VALUES (?1, ?2, 1)
                 ON CONFLICT (request_id, slot_index) DO UPDATE SET filled = 1",
            request_id,
            slot_index,
        )
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

    /// Forgets this host's on-chain reservation of a slot it did not fill, after a
    /// reorganisation removed the `reserveSlot`: a sale that asks again reads
    /// `canReserveSlot` instead of trusting a record the chain no longer bears out. A fill
    /// recorded for it is gone too (a fill needs the reservation).
    pub fn forget_chain_reservation(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.slot_write(
            "DELETE FROM chain_reservations WHERE request_id = ?1 AND slot_index = ?2",
            request_id,
            slot_index,
        )
    }

    /// Forgets a filled slot whose sale ended.
    pub fn forget_chain_fill(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.slot_write("DELETE FROM chain_reservations WHERE request_id = ?1 AND slot_index = ?2 AND filled = 1", request_id, slot_index)
    }

    /// Keeps the record of this host's reservation of a slot whose fill is gone (a
    /// reorganisation removed it while the reservation stood): the row stays, unfilled, and
    /// goes with the request's end like any reservation that was not filled.
    pub fn unfill_chain_reservation(
        &mut self,
        request_id: RequestId,
        slot_index: u64,
    ) -> Result<(), StoreError> {
        self.slot_write(
            "UPDATE chain_reservations SET filled = 0 WHERE request_id = ?1 AND slot_index = ?2",
            request_id,
            slot_index,
        )
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

    /// Records the last fully processed block, without waiting for the disk: this one commit
    /// runs with `synchronous = NORMAL` (as every commit does in write-behind mode). It survives a crash of the process like any commit
    /// (the WAL is in the OS's page cache), and the next durable commit or checkpoint syncs
    /// it; a power cut may lose it, and then the node reads those blocks again, which it
    /// does safely (the log synchroniser hands each log out once per run, and the engine
    /// ignores what it already acted on). The cursor moves with every block, so this keeps
    /// an fsync per block off the event loop.
    pub fn set_cursor(&mut self, block: u64, hash: B256) -> Result<(), StoreError> {
        let toggle = !self.is_write_behind();
        if toggle {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let written = self.immediate(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO chain_cursor (id, block_number, block_hash) VALUES (0, ?1, ?2)",
                params![block as i64, hash.as_slice()],
            )?;
            Ok::<_, StoreError>(())
        });
        // Every other commit stays durable.
        if toggle {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;

    #[test]
    fn a_fill_gone_keeps_its_reservation_until_the_reservation_goes_or_the_request_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), Options::node()).unwrap();
        let (r, other) = (RequestId::from([1; 32]), RequestId::from([2; 32]));
        s.record_chain_reservation(r, 0).unwrap();
        s.record_chain_fill(r, 0).unwrap();
        s.record_chain_fill(other, 3).unwrap();
        assert!(s.has_chain_fill(r, 0).unwrap());
        // The fill was reorganised out, the reservation stood.
        s.unfill_chain_reservation(r, 0).unwrap();
        assert!(!s.has_chain_fill(r, 0).unwrap());
        assert!(s.has_chain_reservation(r, 0).unwrap());
        assert!(s.has_chain_fill(other, 3).unwrap(), "only that slot");
        // The request's end forgets reservations that were not filled.
        s.forget_chain_reservations(r).unwrap();
        assert!(!s.has_chain_reservation(r, 0).unwrap());
        // A reserveSlot reorganised out takes a fill recorded for it along.
        s.forget_chain_reservation(other, 3).unwrap();
        assert!(!s.has_chain_reservation(other, 3).unwrap());
        assert!(!s.has_chain_fill(other, 3).unwrap());
        // A filled slot whose sale ended is forgotten.
        s.record_chain_fill(r, 1).unwrap();
        s.forget_chain_fill(r, 1).unwrap();
        assert!(!s.has_chain_reservation(r, 1).unwrap());
    }
}
