//! The ledger of availabilities and reservations: types, the operations the sales engine
//! calls, and the accounting invariant. Pure: the rules live here once; the in-memory
//! ledger (simulation) and the SQLite store (`crate::store`) both apply them inside one
//! transaction per operation.
//!
//! # The accounting invariant
//! For every availability `a`, at every committed instant:
//! - `a.free_size + Σ r.slot_size (live reservations r of a) == a.total_size`;
//! - `a.total_remaining_collateral + Σ r.collateral (live reservations r of a)
//!    + a.collateral_lost == a.total_collateral`.
//!
//! An update of `total_collateral` keeps what is committed (held + lost):
//! remaining = new total − committed, refused when negative.
//!
//! Other rules (each a pure function in [`rules`], applied by every [`Ledger`]):
//! - Quota: Σ total_size of all availabilities ≤ the storage quota. An update compares
//!   only its increase with what is left (the reference compares the whole new size).
//! - total_size may shrink down to the bytes live reservations hold, never below; free_size
//!   moves by the same amount.
//! - A reservation takes `slot_size` bytes and `slot_size × collateral_per_byte` collateral,
//!   after every match rule is re-checked against its availability; ending it gives back
//!   all `slot_size` bytes, and `min(returned, held)` collateral; the rest of what it held
//!   becomes `collateral_lost` for good.
//! - Downloaded bytes never exceed `slot_size`.
//! - An availability can be removed only when no reservation holds it.
//!
//! [`MemLedger`] is the in-memory implementation (simulation, reference for property
//! tests); `crate::store::Store` is the durable one. Both run the generic property
//! tests in `tests/sales/ledger_props.rs`.
//!
//! Files: the types and the [`Ledger`] trait here, the pure rules in [`rules`], the
//! in-memory ledger in [`memory`].

use crate::market::{Ask, RequestId, U256};

pub mod memory;
pub mod rules;

pub use memory::MemLedger;
pub use rules::{
    add_download, apply_update, best_fit, check_invariant, collateral_per_byte_fits, end,
    max_collateral_per_byte, mismatch, new_availability, reserve, slot_collateral, terms_may_match,
};

#[cfg(test)]
mod fixtures;

macro_rules! ledger_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// A fresh random id.
            pub fn random(rng: &mut fastrand::Rng) -> Self {
                let mut b = [0u8; 32];
                rng.fill(&mut b);
                $name(b)
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("0x")?;
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
    };
}

ledger_id!(
    /// 32 random bytes, printed as 0x-hex.
    AvailabilityId
);
ledger_id!(
    /// 32 random bytes, printed as 0x-hex.
    ReservationId
);

/// Storage offered for sale (`docs/sales.md#availability`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    pub id: AvailabilityId,
    /// Bytes offered in total (counted against the storage quota).
    pub total_size: u64,
    /// Bytes not assigned to any live reservation.
    pub free_size: u64,
    /// Longest request duration accepted, seconds.
    pub duration: u64,
    /// Lowest price accepted.
    pub min_price_per_byte_per_second: U256,
    /// The collateral budget the operator configured.
    pub total_collateral: U256,
    /// Budget not held by live reservations and not lost.
    pub total_remaining_collateral: U256,
    /// Collateral given up for good (slashed, forfeited) by ended reservations.
    pub collateral_lost: U256,
    /// false = no new matches; live reservations are unaffected.
    pub enabled: bool,
    /// 0 = unlimited; otherwise the latest request end (unix seconds) this may serve.
    pub until: u64,
}

/// Bytes and collateral of one availability committed to one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub availability_id: AvailabilityId,
    pub request_id: RequestId,
    pub slot_index: u64,
    /// Bytes taken from the availability (the slot size).
    pub slot_size: u64,
    /// Bytes of the slot downloaded so far (≤ slot_size).
    pub downloaded: u64,
    /// slot_size × collateralPerByte, taken from total_remaining_collateral.
    pub collateral: U256,
    /// The request's end (unix seconds).
    pub valid_until: u64,
}

/// What a slot asks of an availability, for matching and for creating a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAsk {
    pub request_id: RequestId,
    pub slot_index: u64,
    pub slot_size: u64,
    pub duration: u64,
    pub price_per_byte_per_second: U256,
    pub collateral_per_byte: U256,
    /// The request's end (unix seconds).
    pub valid_until: u64,
}

impl SlotAsk {
    /// What slot `slot_index` of a request with `ask`, ending at `valid_until`, asks.
    pub fn for_slot(request_id: RequestId, slot_index: u64, ask: &Ask, valid_until: u64) -> Self {
        SlotAsk {
            request_id,
            slot_index,
            slot_size: ask.slot_size,
            duration: ask.duration,
            price_per_byte_per_second: ask.price_per_byte_per_second,
            collateral_per_byte: ask.collateral_per_byte,
            valid_until,
        }
    }
}

/// Limits and the clock an operation is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The storage quota: Σ total_size of all availabilities may not exceed it.
    pub quota: u64,
    /// Now, unix seconds (chain or wall time, supplied by the caller).
    pub now: u64,
}

/// The fields of a new availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAvailability {
    pub total_size: u64,
    pub duration: u64,
    pub min_price_per_byte_per_second: U256,
    pub total_collateral: U256,
    pub enabled: bool,
    pub until: u64,
}

/// Any subset of an availability's fields; `None` = unchanged. (freeSize is not updatable.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvailabilityUpdate {
    pub total_size: Option<u64>,
    pub duration: Option<u64>,
    pub min_price_per_byte_per_second: Option<U256>,
    pub total_collateral: Option<U256>,
    pub enabled: Option<bool>,
    pub until: Option<u64>,
}

impl AvailabilityUpdate {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == AvailabilityUpdate::default()
    }
}

/// The availability before and after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailabilityChange {
    pub before: Availability,
    pub after: Availability,
}

impl AvailabilityChange {
    /// Whether the availability may now match a slot it could not match before, so the
    /// sales engine should clear its seen flags and unpause the queue: it is enabled after
    /// the update, and it was just enabled, or freeSize, duration or remaining collateral
    /// increased, or the minimum price decreased, or `until` was extended (or lifted to 0).
    ///
    /// Unlike the reference, enabling and extending `until` count, and a *higher* minimum
    /// price (which makes fewer slots match) does not.
    pub fn grew(&self) -> bool {
        let (b, a) = (&self.before, &self.after);
        a.enabled
            && (!b.enabled
                || a.free_size > b.free_size
                || a.duration > b.duration
                || a.total_remaining_collateral > b.total_remaining_collateral
                || a.min_price_per_byte_per_second < b.min_price_per_byte_per_second
                || (b.until != 0 && (a.until == 0 || a.until > b.until)))
    }
}

/// What ending a reservation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationEnd {
    /// The reservation as it was when it ended (it no longer exists).
    pub reservation: Reservation,
    /// The availability after the bytes and collateral came back.
    pub availability: Availability,
    /// Bytes given back to free_size (= slot_size).
    pub bytes_returned: u64,
    /// min(returned, held), given back to total_remaining_collateral.
    pub collateral_returned: U256,
    /// held − collateral_returned, added to collateral_lost.
    pub collateral_lost: U256,
}

/// Why an availability does not match a slot (`docs/sales.md#matching`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The availability is disabled.
    #[error("availability is disabled")]
    Disabled,
    /// The slot is larger than the free size.
    #[error("slot size {slot_size} exceeds free size {free_size}")]
    FreeSize { slot_size: u64, free_size: u64 },
    /// The request lasts longer than the availability accepts.
    #[error("request duration {requested} exceeds the availability's duration {offered}")]
    Duration { requested: u64, offered: u64 },
    /// The slot's collateral per byte is above remaining collateral / free size, or the
    /// slot's whole collateral is above the remaining collateral.
    #[error("slot collateral {slot_collateral} ({per_byte} per byte) exceeds what the remaining collateral {remaining} allows")]
    Collateral {
        per_byte: U256,
        slot_collateral: U256,
        remaining: U256,
    },
    /// The slot pays less than the minimum price.
    #[error("price per byte per second {offered} is below the minimum {minimum}")]
    Price { offered: U256, minimum: U256 },
    /// The request ends after the availability's `until`.
    #[error("request ends at {valid_until}, after the availability's until {until}")]
    Until { valid_until: u64, until: u64 },
}

/// What a [`LedgerError::NotFound`] looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerItem {
    /// An availability id.
    Availability(AvailabilityId),
    /// A reservation id.
    Reservation(ReservationId),
}

impl std::fmt::Display for LedgerItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerItem::Availability(id) => write!(f, "Availability {id}"),
            LedgerItem::Reservation(id) => write!(f, "Reservation {id}"),
        }
    }
}

/// Errors of ledger operations. Messages name the offending values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No availability or reservation with this id.
    #[error("{0} not found")]
    NotFound(LedgerItem),
    /// An id that is already taken (ids are random, so this means a caller bug).
    #[error("id already exists: {0}")]
    DuplicateId(String),
    /// A field failed validation; the message is the reference's wording (`docs/sales.md#availability-changes`).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// More bytes than are free (create) or than the slot has left (download).
    #[error("bytes out of bounds: {requested} requested, {available} available")]
    BytesOutOfBounds { requested: u64, available: u64 },
    /// The slot's collateral is more than the availability has remaining.
    #[error("insufficient collateral: slot needs {needed}, {remaining} remaining")]
    InsufficientCollateral { needed: U256, remaining: U256 },
    /// A new totalCollateral below what live reservations hold plus what was lost.
    #[error("totalCollateral {requested} is below the collateral already committed: {committed}")]
    CollateralBelowCommitted { requested: U256, committed: U256 },
    /// The availability cannot be removed while reservations hold it.
    #[error("Availability {id} has {count} reservation(s); it can be removed once they end")]
    HasReservations { id: AvailabilityId, count: usize },
    /// The availability does not match the slot for a reason other than bytes or
    /// collateral (disabled, duration, price, until).
    #[error("availability {id} does not match the slot: {reason}")]
    Unsuitable {
        id: AvailabilityId,
        reason: Box<Mismatch>,
    },
    /// No availability matches the slot.
    #[error("no availability matches the slot")]
    NoMatch,
    /// The storage behind the ledger failed (I/O, SQLite, corrupt rows).
    #[error("ledger storage failed: {0}")]
    Backend(String),
}

impl LedgerError {
    /// True for errors caused by the input (validation, unknown ids), as opposed to
    /// storage failures.
    pub fn is_usage(&self) -> bool {
        !matches!(self, LedgerError::Backend(_))
    }
}

/// The ledger's operations. Each is atomic: it either applies completely or not at all.
pub trait Ledger {
    /// All availabilities, ordered by id.
    fn availabilities(&self) -> Result<Vec<Availability>, LedgerError>;
    /// One availability.
    fn availability(&self, id: AvailabilityId) -> Result<Availability, LedgerError>;
    /// All live reservations, ordered by id.
    fn reservations(&self) -> Result<Vec<Reservation>, LedgerError>;
    /// One reservation.
    fn reservation(&self, id: ReservationId) -> Result<Reservation, LedgerError>;
    /// Validates (in the order of `docs/sales.md#availability-changes`) and stores a new availability.
    fn create_availability(
        &mut self,
        id: AvailabilityId,
        new: NewAvailability,
        limits: Limits,
    ) -> Result<Availability, LedgerError>;
    /// Validates and applies an update; see [`apply_update`].
    fn update_availability(
        &mut self,
        id: AvailabilityId,
        update: AvailabilityUpdate,
        limits: Limits,
    ) -> Result<AvailabilityChange, LedgerError>;
    /// Refused (HasReservations{count}) while reservations hold it.
    fn remove_availability(&mut self, id: AvailabilityId) -> Result<Availability, LedgerError>;
    /// Re-checks every match rule against this one availability, then deducts slot_size
    /// and slot_size × collateral_per_byte.
    fn create_reservation(
        &mut self,
        id: ReservationId,
        availability: AvailabilityId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError>;
    /// Matching ([`best_fit`]) and creation in one atomic step; `NoMatch` when none fits.
    fn reserve_matching(
        &mut self,
        id: ReservationId,
        ask: &SlotAsk,
    ) -> Result<Reservation, LedgerError>;
    /// Adds downloaded bytes; never more than slot_size in total (BytesOutOfBounds).
    fn record_download(
        &mut self,
        id: ReservationId,
        bytes: u64,
    ) -> Result<Reservation, LedgerError>;
    /// Deletes the reservation: slot_size back to free_size, min(returned, held) back to
    /// remaining collateral, the rest of held added to collateral_lost.
    fn end_reservation(
        &mut self,
        id: ReservationId,
        returned_collateral: U256,
    ) -> Result<ReservationEnd, LedgerError>;
    /// The live reservations of one availability, ordered by id.
    fn reservations_of(
        &self,
        availability: AvailabilityId,
    ) -> Result<Vec<Reservation>, LedgerError> {
        let _ = self.availability(availability)?;
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|r| r.availability_id == availability)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{aid, new_av, LIM};
    use super::*;

    #[test]
    fn grew_reports_enabling_until_and_growth() {
        let mut l = MemLedger::new();
        let mut n = new_av(1_000, 10);
        n.enabled = false;
        n.until = 2_000;
        l.create_availability(aid(1), n, LIM).unwrap();
        let up = |u: AvailabilityUpdate, l: &mut MemLedger| {
            l.update_availability(aid(1), u, LIM).unwrap()
        };
        let c = up(
            AvailabilityUpdate {
                duration: Some(500),
                ..Default::default()
            },
            &mut l,
        );
        assert!(!c.grew(), "disabled availabilities never grow");
        let c = up(
            AvailabilityUpdate {
                enabled: Some(true),
                ..Default::default()
            },
            &mut l,
        );
        assert!(c.grew());
        let c = up(
            AvailabilityUpdate {
                until: Some(3_000),
                ..Default::default()
            },
            &mut l,
        );
        assert!(c.grew());
        let c = up(
            AvailabilityUpdate {
                until: Some(0),
                ..Default::default()
            },
            &mut l,
        );
        assert!(c.grew());
        let c = up(
            AvailabilityUpdate {
                min_price_per_byte_per_second: Some(U256::from(9)),
                ..Default::default()
            },
            &mut l,
        );
        assert!(!c.grew());
        let c = up(
            AvailabilityUpdate {
                min_price_per_byte_per_second: Some(U256::from(1)),
                ..Default::default()
            },
            &mut l,
        );
        assert!(c.grew());
        let c = up(
            AvailabilityUpdate {
                total_size: Some(900),
                ..Default::default()
            },
            &mut l,
        );
        assert!(!c.grew());
        let c = up(
            AvailabilityUpdate {
                total_collateral: Some(U256::from(11)),
                ..Default::default()
            },
            &mut l,
        );
        assert!(c.grew());
    }
}
