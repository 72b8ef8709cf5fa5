//! codex: a storage-provider node for the Codex decentralized storage marketplace.
//!
//! Architecture (see README.md for the map):
//! - [`market`]: Marketplace types, ids, ABI, event and error decoding. Pure.
//! - [`sales`]: the core: slot queue, per-slot sale state machines, matching and the
//!   availability/reservation ledger rules. Pure: no sockets, clocks, threads or files.
//! - [`store`]: SQLite persistence of availabilities, reservations, sales and chain position.
//! - [`chain`]: WebSocket JSON-RPC client over mio, transactions.
//! - [`cli`]: one module per subcommand; [`config`] (CLI > `CODEX_*` env > TOML file >
//!   defaults), [`logging`] (stderr, text or JSON lines), [`units`] (sizes, durations,
//!   256-bit amounts as people write them).
#![forbid(unsafe_code)]

pub mod chain;
pub mod cli;
pub mod config;
pub mod logging;
pub mod market;
pub mod node;
pub mod sales;
pub mod store;
pub mod units;
