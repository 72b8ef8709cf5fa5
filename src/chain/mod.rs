//! The chain client: JSON-RPC 2.0 over WebSocket, driven by mio.
//!
//! - [`rpc`]: the sans-IO core (ids, pending calls with deadlines, subscriptions, backfill
//!   planning and the log cursor). No sockets, no clocks.
pub mod rpc;
