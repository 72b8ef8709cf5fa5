//! Builders the ledger's unit tests share: ids from one byte, a new availability, a slot's
//! ask, the limits, and a check of the accounting invariant over a [`MemLedger`].

use super::{
    check_invariant, AvailabilityId, Ledger, Limits, MemLedger, NewAvailability, ReservationId,
    SlotAsk,
};
use crate::market::{RequestId, U256};

pub(super) const LIM: Limits = Limits {
    quota: 1_000_000,
    now: 1_000,
};

pub(super) fn aid(n: u8) -> AvailabilityId {
    AvailabilityId([n; 32])
}
pub(super) fn rid(n: u8) -> ReservationId {
    ReservationId([n; 32])
}
pub(super) fn new_av(size: u64, collateral: u64) -> NewAvailability {
    NewAvailability {
        total_size: size,
        duration: 100,
        min_price_per_byte_per_second: U256::from(2),
        total_collateral: U256::from(collateral),
        enabled: true,
        until: 0,
    }
}
pub(super) fn ask(size: u64, col_per_byte: u64) -> SlotAsk {
    SlotAsk {
        request_id: RequestId::default(),
        slot_index: 0,
        slot_size: size,
        duration: 50,
        price_per_byte_per_second: U256::from(3),
        collateral_per_byte: U256::from(col_per_byte),
        valid_until: 5_000,
    }
}
pub(super) fn check(l: &MemLedger) {
    check_invariant(
        &l.availabilities().unwrap(),
        &l.reservations().unwrap(),
        Some(LIM.quota),
    )
    .unwrap();
}
