//! A hasher for maps keyed by 32-byte ids (request, slot, reservation and availability
//! ids): keccak outputs or random bytes, already uniformly distributed, so hashing them
//! with SipHash buys nothing. [`IdHasher`] folds the 8-byte words of each byte string
//! written with xor (ids made by hand, such as a counter in some bytes and zeros in the
//! rest, stay apart) and mixes the result, and whole integers (a slot index, a length
//! prefix), in with a multiply, so it also serves `(RequestId, u64)` keys.
//!
//! Use it only for keys whose bytes are not chosen to collide: it is not a keyed hash.

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
        let mut words = bytes.chunks_exact(8);
        let mut x = 0u64;
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            x ^= u64::from_le_bytes(b);
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            x ^= u64::from(b) << (8 * i);
        }
        self.mix(x);
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
        // The multiply carries entropy upwards only: bring the well-mixed high bits down
        // to where the table takes its bucket index.
        self.0.rotate_left(26)
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

    #[test]
    fn ids_varying_in_few_bytes_spread_over_buckets() {
        // A counter in bytes 2..4 and zeros elsewhere: the low bits of the hash must vary.
        let b = IdBuild::default();
        let mut low = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            low.insert(b.hash_one(RequestId(id.into())) & 0x7ff);
        }
        assert!(low.len() > 500, "{} distinct low bits", low.len());
    }
}
