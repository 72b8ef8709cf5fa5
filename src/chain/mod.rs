//! See the crate docs.
pub mod key;
pub mod tx;
