//! The chain client: JSON-RPC 2.0 over WebSocket, driven by mio.
//!
//! - [`rpc`]: the sans-IO core (ids, pending calls with deadlines, subscriptions, the
//!   parsed logs and heads). No sockets, no clocks.
//! - [`logsync`]: [`logsync::LogSync`], the sans-IO backfill planning and log cursor
//!   (deduplication, reorganisations).
//! - [`ws`]: one WebSocket connection on a non-blocking mio socket (plain or rustls).
//! - [`client`]: [`client::ChainClient`], the event-loop-friendly client with reconnection,
//!   subscriptions and backfill, and [`client::BlockingClient`] for one-shot commands.
//! - [`error`]: the typed errors, [`ChainError`].
//! - [`settings`]: the shared chain options (`--eth-provider`, ...).
//! - [`key`]: the `--eth-private-key` file and signing.
//! - [`sender`]: signed transactions over a blocking client (nonce, gas, fees, receipt).
//! - [`tx`]: EIP-1559 transactions, nonce tracking, gas headroom.
pub mod client;
pub mod error;
pub mod event_loop;
pub mod key;
pub mod logsync;
pub mod rpc;
pub mod sender;
pub mod settings;
pub mod tx;
pub mod txbook;
pub mod ws;

pub use error::ChainError;
