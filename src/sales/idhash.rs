//! A hasher for maps keyed by 32-byte ids (request, slot, reservation and availability
//! ids): keccak outputs or random bytes, so their first 8 bytes are already uniformly
//! distributed and hashing all 32 with SipHash buys nothing. [`IdHasher`] takes the first
//! 8 bytes of each byte string written and mixes whole integers (a slot index, a length
//! prefix) in with a multiply, so it also serves `(RequestId, u64)` keys.
//!
//! Use it only for keys whose byte strings start with 8 random bytes.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl IdHasher {
    #[inline]
    fn mix(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        match bytes.first_chunk::<8>() {
            Some(head) => self.mix(u64::from_le_bytes(*head)),
            None => {
                for &b in bytes {
                    self.mix(u64::from(b));
                }
            }
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The [`IdHasher`] builder.
pub type IdBuild = BuildHasherDefault<IdHasher>;
/// A map keyed by ids.
pub type IdMap<K, V> = HashMap<K, V, IdBuild>;
/// A set of ids.
pub type IdSet<K> = HashSet<K, IdBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{RequestId, SlotId};
    use std::hash::BuildHasher;

    #[test]
    fn distinct_ids_and_indexes_hash_apart() {
        let b = IdBuild::default();
        let r = RequestId([7; 32].into());
        let a = b.hash_one((r, 0u64));
        assert_ne!(a, b.hash_one((r, 1u64)));
        assert_ne!(b.hash_one(SlotId::of(r, 0)), b.hash_one(SlotId::of(r, 1)));
        let mut m: IdMap<SlotId, u64> = IdMap::default();
        for i in 0..1000 {
            m.insert(SlotId::of(r, i), i);
        }
        assert!((0..1000).all(|i| m.get(&SlotId::of(r, i)) == Some(&i)));
    }
}
