//! codex: a storage-provider node for the Codex decentralized storage marketplace.
//!
//! Architecture (see README.md for the map):
//! - [`market`]: Marketplace types, ids, ABI, event and error decoding. Pure.
//! - [`sales`]: the core: slot queue, per-slot sale state machines, matching and the
//!   availability/reservation ledger rules. Pure: no sockets, clocks or threads; the ledger
//!   is a synchronous port (the node's is the SQLite store), called inside a step.
//! - [`store`]: SQLite persistence of availabilities, reservations, the slots reserved and
//!   filled on chain, the history of ended sales, and the chain position.
//! - [`chain`]: WebSocket JSON-RPC client, the one event loop, transactions.
//! - [`validator`]: the validator role: which filled slots to watch and which missed proofs
//!   to mark after each period. Pure, like the sales core.
//! - [`node`]: `codex run`, the loop that drives the engine (and the validator) over the
//!   chain, the store and worker threads (see `docs/architecture.md`).
//! - [`api`]: the REST API (routes over the node's state, JSON shapes shared with the
//!   CLI, a small HTTP/1.1 server for the loop); [`metrics`]: the Prometheus exposition.
//! - [`cli`]: one module per subcommand; [`config`] (CLI > `CODEX_*` env > TOML file >
//!   defaults), [`logging`] (stderr, text or JSON lines), [`units`] (sizes, durations,
//!   256-bit amounts as people write them), [`table`] (the CLI's aligned text output).
//! - `fuzz` (hidden): the decoder fuzz harness that `cargo test` and `cargo bench --bench fuzz`
//!   run (see `docs/architecture.md`).
#![forbid(unsafe_code)]

pub mod api;
pub mod chain;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod logging;
pub mod market;
pub mod metrics;
pub mod node;
pub mod sales;
pub mod store;
pub mod table;
pub mod units;
pub mod validator;
