//! The sales core: everything a host decides, as pure code.
pub mod engine;
pub mod ledger;
pub mod queue;
pub mod sale;
