//! The Marketplace contract as seen by a host: types, ids, ABI, events and errors.
//!
//! Everything here is pure: values in, values out.
pub mod abi;
pub mod cid;
pub mod errors;
pub mod events;
pub mod types;

pub use types::*;

#[cfg(test)]
mod vectors;
