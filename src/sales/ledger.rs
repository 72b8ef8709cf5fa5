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
//! (The implementer of issue "The codex package" completes this text: rules, errors,
//! the in-memory ledger and the property tests shared by every implementation.)

use crate::market::{RequestId, U256};

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

/// Storage offered for sale (spec/sales.md §2.1, without the quirks).
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
