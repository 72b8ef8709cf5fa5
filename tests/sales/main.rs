//! The sales core without a real chain: the slot queue, the per-slot state machine, the
//! engine driving whole sales on the simulated Marketplace (`sim`, tested by `sim_model`), the
//! in-memory and SQLite ledgers, and a long randomized soak. One test binary, so the
//! simulation compiles once; select a file's tests with its module name, e.g.
//! `cargo test --test sales sales_engine::`.
mod sales_driver;
mod sim;

mod ledger_props;
mod sales_engine;
mod sales_queue;
mod sales_reorg;
mod sales_soak;
mod sales_sqlite;
mod sales_states;
mod sim_model;
