//! The sales core: everything a host decides, as pure code (no sockets, clocks, threads or
//! files; `now` and a seeded random generator come in as parameters).
//!
//! - [`queue`]: the slot queue (total order, indexed heaps, eviction, expiry purge, pause
//!   with a reason, worker budget).
//! - [`sale`]: one slot's sale as a state machine whose states carry their data; its module
//!   docs hold the transition table, [`sale::Ending`] the table of what every ending returns.
//! - [`engine`]: the coordinator that owns the queue, the sales and the [`ledger`]; the
//!   driver feeds it events, answers and time, and executes its commands.
//! - [`ledger`]: availabilities and reservations, the matching rules and the accounting
//!   invariant (shared with the SQLite store).
//!
//! Maps keyed by ids use the standard hasher (keyed per process: request ids come from
//! clients, who could grind them against a fixed hash) or ordered maps.
pub mod engine;

/// A time on the chain: a block timestamp, in Unix seconds. The engine's clock, distinct from
/// the wall-clock `Instant`s the driver uses to bound I/O: a period starts when a block says
/// so, not when the host's clock does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChainTime(pub u64);

impl ChainTime {
    /// The seconds.
    pub fn secs(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ChainTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
pub mod ledger;
pub mod queue;
pub mod sale;
