//! The Marketplace contract as seen by a host: types, ids, ABI, events and errors.
//!
//! - [`types`]: domain types and ids (`Request::id`, `SlotId::of`).
//! - [`abi`]: the whole interface, declared once with `sol!`.
//! - [`calls`]: calldata builders and view-result decoders.
//! - [`events`]: JSON-RPC logs to [`MarketEvent`]s with their position; the JSON line form.
//! - [`errors`]: reverts (anvil and hardhat shapes) to named [`errors::MarketError`]s.
//! - [`cid`]: CIDs as users type them to the binary form requests carry.
//!
//! Everything here is pure: values in, values out.
pub mod abi;
pub mod calls;
pub mod cid;
pub mod errors;
pub mod events;
pub mod types;

pub use types::*;

#[cfg(test)]
mod vectors;

/// An id as text logs show it: `0x` and its first eight hex digits, then `…` (the JSON
/// format carries the whole id as a field).
pub fn short(id: &impl std::fmt::Display) -> String {
    let s = id.to_string();
    match s.get(..10) {
        Some(head) if s.len() > 10 => format!("{head}…"),
        _ => s,
    }
}
