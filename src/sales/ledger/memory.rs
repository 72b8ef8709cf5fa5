//! [`MemLedger`], the ledger in memory: ordered maps by id, the accounting rules of
//! [`super::rules`], and one ordered index of the enabled availabilities by
//! `(free_size, id)`, the best-fit order, so that matching starts at the smallest free size
//! that can hold the slot and stops at the first availability that matches.

use std::collections::{BTreeMap, BTreeSet};

use super::rules::{
    add_download, apply_update, end_in_place, mismatch, new_availability, reserve_in_place,
};
use super::{
    Availability, AvailabilityChange, AvailabilityId, AvailabilityUpdate, Ledger, LedgerError,
    LedgerItem, Limits, NewAvailability, Reservation, ReservationEnd, ReservationId, SlotAsk,
};
use crate::market::U256;

/// The ledger in memory, for simulation and as the reference for property tests.
/// Availabilities and reservations are ordered by id, so the listings need no sort.
#[derive(Debug, Clone, Default)]
pub struct MemLedger {
    availabilities: BTreeMap<AvailabilityId, Availability>,
    reservations: BTreeMap<ReservationId, Reservation>,
    /// `(free_size, id)` of every enabled availability; changed with every change of one.
    by_fit: BTreeSet<(u64, AvailabilityId)>,
}

impl MemLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// The best fit for `ask` (the answer of [`best_fit`] over all availabilities): the
    /// first availability in `(free_size, id)` order, from the slot's size on, that matches.
    ///
    /// [`best_fit`]: super::best_fit
    pub fn find_best_fit(&self, ask: &SlotAsk) -> Option<&Availability> {
        self.by_fit
            .range((ask.slot_size, AvailabilityId::default())..)
            .filter_map(|(_, id)| self.availabilities.get(id))
            .find(|a| mismatch(a, ask).is_none())
    }

    /// Stores `a` (new or changed), keeping the index in step.
    fn put(&mut self, a: Availability) {
        if let Some(old) = self.availabilities.get(&a.id) {
            self.by_fit.remove(&(old.free_size, old.id));
        }
        if a.enabled {
            self.by_fit.insert((a.free_size, a.id));
        }
        self.availabilities.insert(a.id, a);
    }

    fn total_except(&self, id: Option<AvailabilityId>) -> u64 {
        self.availabilities
            .values()
            .filter(|a| Some(a.id) != id)
            .fold(0u64, |s, a| s.saturating_add(a.total_size))
    }

    fn reservations_vec(&self, id: AvailabilityId) -> Vec<Reservation> {
        self.reservations
            .values()
            .filter(|r| r.availability_id == id)
            .cloned()
            .collect()
    }
}

impl Ledger for MemLedger {
    fn availabilities(&self) -> Result<Vec<Availability>, LedgerError> {
        Ok(self.availabilities.values().cloned().collect())
    }

    fn availability(&self, id: AvailabilityId) -> Result<Availability, LedgerError> {
        self.availabilities
            .get(&id)
            .cloned()
            .ok_or(LedgerError::NotFound(LedgerItem::Availability(id)))
    }

    fn reservations(&self) -> Result<Vec<Reservation>, LedgerError> {
        Ok(self.reservations.values().cloned().collect())
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
        self.availabilities.remove(&id);
        self.by_fit.remove(&(a.free_size, a.id));
        Ok(a)
    }

    fn create_reservation(
        &mut self,
        id: ReservationId,
        availability: AvailabilityId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError> {
        let mut a = self.availability(availability)?;
        if self.reservations.contains_key(&id) {
            return Err(LedgerError::DuplicateId(id.to_string()));
        }
        let r = reserve_in_place(&mut a, id, ask)?;
        self.put(a);
        self.reservations.insert(id, r.clone());
        Ok(r)
    }

    fn reserve_matching(
        &mut self,
        id: ReservationId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError> {
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
        let reservation = self.reservation(id)?;
        let mut availability = self.availability(reservation.availability_id)?;
        let (back, lost) = end_in_place(&mut availability, &reservation, returned_collateral);
        self.put(availability.clone());
        self.reservations.remove(&id);
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
    use super::super::fixtures::{aid, ask, check, new_av, LIM};
    use super::*;

    #[test]
    fn the_index_walk_gives_the_linear_best_fit_as_reservations_come_and_go() {
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
            let fit = l.find_best_fit(&s).map(|a| (a.id, a.free_size));
            let all = l.availabilities().unwrap();
            let linear = super::super::best_fit(&all, &s).map(|a| a.id);
            assert_eq!(fit.map(|(id, _)| id), linear, "step {n}: the index walk");
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&n.to_be_bytes());
            match (l.reserve_matching(ReservationId(id), &s), fit) {
                (Ok(r), Some((best, free))) => {
                    assert_eq!(r.availability_id, best, "step {n}");
                    // No other matching availability has less free space.
                    assert!(l
                        .availabilities()
                        .unwrap()
                        .iter()
                        .filter(|a| a.id != best && super::super::mismatch(a, &s).is_none())
                        .all(|a| a.free_size >= free));
                    live.push(r.id);
                }
                (Err(LedgerError::NoMatch), None) => {}
                (got, fit) => panic!("step {n}: {got:?} with best fit {fit:?}"),
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
}
