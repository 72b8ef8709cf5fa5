//! The built `codex` binary as a user runs it: the availability and reservation commands, bad
//! input, the man pages against `--help`, `codex events` and `codex request` against anvil,
//! and the store as the CLI opens it, also from two processes at once. Select a file's tests
//! with its module name, e.g. `cargo test --test cli cli_commands::`.
#[path = "../support/mod.rs"]
mod support;

mod chain_events_cli;
mod chain_request_cli;
mod cli_bad_input;
mod cli_commands;
mod cli_man;
mod store_open;
mod store_processes;
