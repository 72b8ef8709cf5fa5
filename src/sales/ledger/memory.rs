//! [`MemLedger`], the ledger in memory: hash maps by id, and an ordered index of the
//! enabled availabilities in best-fit order so that matching need not scan them all.

use std::collections::BTreeMap;

use super::rules::{
    add_download, apply_update, end_in_place, mismatch, new_availability, reserve_in_place,
    terms_may_match,
};
use super::{
    Availability, AvailabilityChange, AvailabilityId, AvailabilityUpdate, Ledger, LedgerError,
    LedgerItem, Limits, NewAvailability, Reservation, ReservationEnd, ReservationId, SlotAsk,
};
use crate::market::U256;
use crate::sales::idhash::IdMap;

/// What the best-fit walk of [`MemLedger`] checks before looking at the availability
/// itself: the terms of [`terms_may_match`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct MatchTerms {
    duration: u64,
    until: u64,
    min_price: U256,
}

/// The ledger in memory, for simulation and as the reference for property tests.
///
/// Matching walks an ordered index of the *enabled* availabilities by `(free_size, id)` —
/// the best-fit order — from the first entry with `free_size >= slot_size`, skipping
/// entries whose duration, price or until cannot match and deciding with [`mismatch`] (so
/// the first entry it accepts is [`best_fit`]'s answer). Cost: O(log n) plus the entries
/// skipped, instead of a scan over all n.
///
/// A reservation that is created and ended again (a slot the chain then refuses) moves its
/// availability's free size away and back. So that this costs no index updates, at most one
/// availability may have an index entry at an older free size (`pending`): it is moved only
/// when another availability's free size changes, or by `put`/`take`, and moving back to the
/// indexed size clears it. The walk skips that one stale entry and weighs the availability
/// at its current free size itself, so its answer stays exactly [`best_fit`]'s. Availabilities and reservations by id are hash
/// maps; the listings sort by id.
///
/// [`best_fit`]: super::best_fit
#[derive(Debug, Clone, Default)]
pub struct MemLedger {
    availabilities: IdMap<AvailabilityId, Availability>,
    reservations: IdMap<ReservationId, Reservation>,
    /// Enabled availabilities by [`FitKey`] (free_size, id); kept in step by `put`/`take`.
    by_free_size: BTreeMap<FitKey, MatchTerms>,
    /// The one enabled availability whose index entry may be at an older free size, with
    /// that size (see the type's docs).
    pending: Option<(AvailabilityId, u64)>,
    /// The duration/price staircase of the enabled availabilities (see [`TermsFrontier`]);
    /// None after their terms changed, until the next match rebuilds it.
    frontier: Option<TermsFrontier>,
}

/// The staircase of the enabled availabilities' (duration, minimum price) terms: entries by
/// duration descending, each with a lower minimum price than every entry before it. A slot
/// with duration `d` and price `p` can match only if the entries with duration ≥ `d` (a
/// prefix) end in one whose price is ≤ `p`: one binary search answers for a request that no
/// availability's terms admit, instead of a walk over all of them. Free size, collateral and
/// until are left to the walk; the staircase only depends on terms, which change only when
/// an availability is created, updated or removed.
#[derive(Debug, Clone, Default)]
struct TermsFrontier(Vec<(u64, U256)>);

impl TermsFrontier {
    fn build<'a>(terms: impl Iterator<Item = &'a MatchTerms>) -> TermsFrontier {
        let mut all: Vec<(u64, U256)> = terms.map(|t| (t.duration, t.min_price)).collect();
        // Longest first; among equal durations the cheapest first.
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut stairs: Vec<(u64, U256)> = Vec::new();
        for (duration, price) in all {
            if stairs.last().is_none_or(|&(_, lowest)| price < lowest) {
                stairs.push((duration, price));
            }
        }
        TermsFrontier(stairs)
    }

    /// False when no availability's duration and price admit `ask`.
    fn admits(&self, ask: &SlotAsk) -> bool {
        let longer = self.0.partition_point(|&(d, _)| d >= ask.duration);
        longer > 0 && self.0[longer - 1].1 <= ask.price_per_byte_per_second
    }
}

/// `(free_size, id)` in the best-fit order, with the id's first 8 bytes as a big-endian
/// number in between: the same order as `(free_size, id)` (ids compare bytewise), but ties
/// in free size are mostly decided by one integer comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FitKey(u64, u64, AvailabilityId);

impl FitKey {
    fn new(free_size: u64, id: AvailabilityId) -> FitKey {
        let mut head = [0u8; 8];
        head.copy_from_slice(&id.0[..8]);
        FitKey(free_size, u64::from_be_bytes(head), id)
    }
}

/// Moves the index entry of an enabled availability whose free size changed in place
/// (from `old_free`) to its current free size; its terms are unchanged.
fn reindex(index: &mut BTreeMap<FitKey, MatchTerms>, a: &Availability, old_free: u64) {
    let terms = index
        .remove(&FitKey::new(old_free, a.id))
        .unwrap_or(MatchTerms {
            duration: a.duration,
            until: a.until,
            min_price: a.min_price_per_byte_per_second,
        });
    index.insert(FitKey::new(a.free_size, a.id), terms);
}

impl MemLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the pending index entry, if any, to its availability's current free size.
    fn flush(&mut self) {
        if let Some((id, indexed_free)) = self.pending.take() {
            if let Some(a) = self.availabilities.get(&id) {
                if a.enabled && a.free_size != indexed_free {
                    reindex(&mut self.by_free_size, a, indexed_free);
                }
            }
        }
    }

    /// The free size of the enabled availability `id` moved in place from `old_free` to
    /// `new_free`: records it as pending, or settles it (see the type's docs).
    fn moved(&mut self, id: AvailabilityId, old_free: u64, new_free: u64) {
        match self.pending {
            Some((p, indexed_free)) if p == id => {
                if new_free == indexed_free {
                    self.pending = None;
                }
            }
            _ => {
                self.flush();
                if new_free != old_free {
                    self.pending = Some((id, old_free));
                }
            }
        }
    }

    /// Stores `a` (new or changed), keeping the matching index in step.
    fn put(&mut self, a: Availability) {
        self.flush();
        self.frontier = None;
        let old = self.availabilities.get_mut(&a.id);
        if let Some(old) = &old {
            if old.enabled {
                self.by_free_size
                    .remove(&FitKey::new(old.free_size, old.id));
            }
        }
        if a.enabled {
            self.by_free_size.insert(
                FitKey::new(a.free_size, a.id),
                MatchTerms {
                    duration: a.duration,
                    until: a.until,
                    min_price: a.min_price_per_byte_per_second,
                },
            );
        }
        match old {
            Some(old) => *old = a,
            None => {
                self.availabilities.insert(a.id, a);
            }
        }
    }

    /// Removes an availability and its index entry.
    fn take(&mut self, id: AvailabilityId) -> Option<Availability> {
        self.flush();
        self.frontier = None;
        let a = self.availabilities.remove(&id)?;
        if a.enabled {
            self.by_free_size.remove(&FitKey::new(a.free_size, a.id));
        }
        Some(a)
    }

    /// The best fit for `ask` (the same answer as [`best_fit`] over all availabilities),
    /// found through the index.
    ///
    /// [`best_fit`]: super::best_fit
    pub fn find_best_fit(&self, ask: &SlotAsk) -> Option<&Availability> {
        if self.frontier.as_ref().is_some_and(|f| !f.admits(ask)) {
            return None;
        }
        // The availability whose index entry is stale, if any: skipped by the walk and
        // weighed here at its current free size.
        let stale = self.pending.and_then(|(id, indexed_free)| {
            self.availabilities
                .get(&id)
                .filter(|a| a.enabled && a.free_size != indexed_free)
        });
        let stale_id = stale.map(|a| a.id);
        let walked = self
            .by_free_size
            .range(FitKey(ask.slot_size, 0, AvailabilityId::default())..)
            .filter(|(_, t)| terms_may_match(t.duration, &t.min_price, t.until, ask))
            .filter(|(FitKey(_, _, id), _)| stale_id.is_none_or(|s| s != *id))
            .filter_map(|(FitKey(_, _, id), _)| self.availabilities.get(id))
            .find(|a| mismatch(a, ask).is_none());
        match (walked, stale.filter(|s| mismatch(s, ask).is_none())) {
            (Some(w), Some(s)) if (s.free_size, s.id) < (w.free_size, w.id) => Some(s),
            (None, Some(s)) => Some(s),
            (w, _) => w,
        }
    }

    fn total_except(&self, id: Option<AvailabilityId>) -> u64 {
        self.availabilities
            .values()
            .filter(|a| Some(a.id) != id)
            .fold(0u64, |s, a| s.saturating_add(a.total_size))
    }

    fn reservations_vec(&self, id: AvailabilityId) -> Vec<Reservation> {
        let mut v: Vec<Reservation> = self
            .reservations
            .values()
            .filter(|r| r.availability_id == id)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }
}

impl Ledger for MemLedger {
    fn availabilities(&self) -> Result<Vec<Availability>, LedgerError> {
        let mut v: Vec<Availability> = self.availabilities.values().cloned().collect();
        v.sort_by_key(|a| a.id);
        Ok(v)
    }

    fn availability(&self, id: AvailabilityId) -> Result<Availability, LedgerError> {
        self.availabilities
            .get(&id)
            .cloned()
            .ok_or(LedgerError::NotFound(LedgerItem::Availability(id)))
    }

    fn reservations(&self) -> Result<Vec<Reservation>, LedgerError> {
        let mut v: Vec<Reservation> = self.reservations.values().cloned().collect();
        v.sort_by_key(|r| r.id);
        Ok(v)
    }

    fn reservation(&self, id: ReservationId) -> Result<Reservation, LedgerError> {
        self.reservations
            .get(&id)
            .cloned()
            .ok_or(LedgerError::NotFound(LedgerItem::Reservation(id)))
    }

    fn create_availability(
        &mut self,
        id: AvailabilityId,
        new: NewAvailability,
        limits: Limits,
    ) -> Result<Availability, LedgerError> {
        let a = new_availability(id, &new, limits, self.total_except(None))?;
        if self.availabilities.contains_key(&id) {
            return Err(LedgerError::DuplicateId(id.to_string()));
        }
        self.put(a.clone());
        Ok(a)
    }

    fn update_availability(
        &mut self,
        id: AvailabilityId,
        update: AvailabilityUpdate,
        limits: Limits,
    ) -> Result<AvailabilityChange, LedgerError> {
        let before = self.availability(id)?;
        let after = apply_update(
            &before,
            &update,
            limits,
            self.total_except(Some(id)),
            &self.reservations_vec(id),
        )?;
        self.put(after.clone());
        Ok(AvailabilityChange { before, after })
    }

    fn remove_availability(&mut self, id: AvailabilityId) -> Result<Availability, LedgerError> {
        let a = self.availability(id)?;
        let count = self.reservations_vec(id).len();
        if count > 0 {
            return Err(LedgerError::HasReservations { id, count });
        }
        self.take(id);
        Ok(a)
    }

    fn create_reservation(
        &mut self,
        id: ReservationId,
        availability: AvailabilityId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError> {
        let a = self
            .availabilities
            .get_mut(&availability)
            .ok_or(LedgerError::NotFound(LedgerItem::Availability(
                availability,
            )))?;
        if self.reservations.contains_key(&id) {
            return Err(LedgerError::DuplicateId(id.to_string()));
        }
        let old_free = a.free_size;
        let r = reserve_in_place(a, id, ask)?;
        let (aid, new_free, enabled) = (a.id, a.free_size, a.enabled);
        if enabled {
            self.moved(aid, old_free, new_free);
        }
        self.reservations.insert(id, r.clone());
        Ok(r)
    }

    fn reserve_matching(
        &mut self,
        id: ReservationId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError> {
        if self.frontier.is_none() {
            self.frontier = Some(TermsFrontier::build(self.by_free_size.values()));
        }
        let a = self.find_best_fit(ask).ok_or(LedgerError::NoMatch)?.id;
        self.create_reservation(id, a, ask)
    }

    fn record_download(
        &mut self,
        id: ReservationId,
        bytes: u64,
    ) -> Result<Reservation, LedgerError> {
        let r = add_download(&self.reservation(id)?, bytes)?;
        self.reservations.insert(id, r.clone());
        Ok(r)
    }

    fn end_reservation(
        &mut self,
        id: ReservationId,
        returned_collateral: U256,
    ) -> Result<ReservationEnd, LedgerError> {
        let r = self
            .reservations
            .get(&id)
            .ok_or(LedgerError::NotFound(LedgerItem::Reservation(id)))?;
        let a = self
            .availabilities
            .get_mut(&r.availability_id)
            .ok_or(LedgerError::NotFound(LedgerItem::Availability(
                r.availability_id,
            )))?;
        let old_free = a.free_size;
        let (back, lost) = end_in_place(a, r, returned_collateral);
        let availability = a.clone();
        if availability.enabled {
            self.moved(availability.id, old_free, availability.free_size);
        }
        let Some(reservation) = self.reservations.remove(&id) else {
            unreachable!("reservation {id} was found above");
        };
        Ok(ReservationEnd {
            bytes_returned: reservation.slot_size,
            reservation,
            availability,
            collateral_returned: back,
            collateral_lost: lost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::best_fit;
    use super::super::fixtures::{aid, ask, check, new_av, LIM};
    use super::*;

    #[test]
    fn indexed_best_fit_follows_reservations_made_and_ended() {
        // Reservations created and ended in a random order leave at most one index entry
        // pending; the indexed walk must still give the linear scan's answer throughout.
        let mut l = MemLedger::new();
        let mut rng = fastrand::Rng::with_seed(11);
        for n in 1..=6u8 {
            let mut av = new_av(rng.u64(200..1_000), 100_000);
            av.duration = rng.u64(40..120);
            av.min_price_per_byte_per_second = U256::from(rng.u64(1..6));
            l.create_availability(aid(n), av, LIM).unwrap();
        }
        let mut live: Vec<ReservationId> = Vec::new();
        for n in 0..400u64 {
            let mut s = ask(rng.u64(1..300), 1);
            s.duration = rng.u64(30..130);
            s.price_per_byte_per_second = U256::from(rng.u64(1..6));
            let all = l.availabilities().unwrap();
            let linear = best_fit(&all, &s).map(|a| a.id);
            assert_eq!(l.find_best_fit(&s).map(|a| a.id), linear, "step {n}");
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&n.to_be_bytes());
            if let Ok(r) = l.reserve_matching(ReservationId(id), &s) {
                live.push(r.id);
            }
            if !live.is_empty() && rng.bool() {
                let r = live.swap_remove(rng.usize(..live.len()));
                l.end_reservation(r, U256::ZERO).unwrap();
            }
            if n % 97 == 0 {
                let up = AvailabilityUpdate {
                    enabled: Some(rng.bool()),
                    ..Default::default()
                };
                l.update_availability(aid(rng.u8(1..=6)), up, LIM).unwrap();
            }
            check(&l);
        }
    }

    #[test]
    fn terms_frontier_admits_exactly_what_some_terms_admit() {
        let mut rng = fastrand::Rng::with_seed(5);
        for round in 0..200 {
            let terms: Vec<MatchTerms> = (0..rng.usize(0..12))
                .map(|_| MatchTerms {
                    duration: rng.u64(1..20),
                    until: 0,
                    min_price: U256::from(rng.u64(1..20)),
                })
                .collect();
            let f = TermsFrontier::build(terms.iter());
            for _ in 0..50 {
                let mut s = ask(1, 0);
                s.duration = rng.u64(0..22);
                s.price_per_byte_per_second = U256::from(rng.u64(0..22));
                let any = terms
                    .iter()
                    .any(|t| terms_may_match(t.duration, &t.min_price, t.until, &s));
                assert_eq!(f.admits(&s), any, "round {round}: {terms:?} {s:?}");
            }
        }
    }
}
