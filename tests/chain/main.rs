//! codex's chain side against a real anvil (the client, faults through a proxy, reorgs,
//! signed transactions, `wss://`) and the fixture Marketplace contracts, plus the recorded
//! subscription frames. Select a file's tests with its module name, e.g.
//! `cargo test --test chain chain_faults::`.
#[path = "../support/mod.rs"]
mod support;

mod chain_client;
mod chain_faults;
mod chain_reorg;
mod chain_sender;
mod chain_tls;
mod contract_artifacts;
mod contract_marketplace;
mod market_frames;

/// The follower's keep-alive where a test must keep its one connection: a pong has this long
/// to come back (anvil answers in well under a millisecond, but a loaded machine can stall
/// either process for hundreds), and no test waits on it.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(5);
