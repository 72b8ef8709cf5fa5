//! See the crate docs.
pub mod key;
