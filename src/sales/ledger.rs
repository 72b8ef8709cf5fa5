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
//! Other rules (each a pure function below, applied by every [`Ledger`]):
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

use std::collections::BTreeMap;

use crate::market::{Ask, RequestId, U256};

use super::idhash::IdMap;

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

/// Why an availability does not match a slot (spec/sales.md §2.3 findAvailability).
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
    /// A field failed validation; the message is spec/sales.md §6's wording.
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
    /// Validates (spec/sales.md §6 order) and stores a new availability.
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

// ---------------------------------------------------------------------------------------
// The pure rules. Both implementations load what a rule needs, call it, and store the result
// inside one transaction.
// ---------------------------------------------------------------------------------------

fn invalid(field: &'static str, message: impl Into<String>) -> LedgerError {
    LedgerError::Invalid(field, message.into())
}

fn check_until(until: u64, now: u64) -> Result<(), LedgerError> {
    if until != 0 && until < now {
        return Err(invalid(
            "until",
            format!("Cannot set until to a time in the past: {until} is before now ({now})"),
        ));
    }
    Ok(())
}

/// Validates a new availability in spec/sales.md §6 order and builds it.
/// `others_total` is Σ total_size of all existing availabilities.
pub fn new_availability(
    id: AvailabilityId,
    new: &NewAvailability,
    limits: Limits,
    others_total: u64,
) -> Result<Availability, LedgerError> {
    check_nonzero(&AvailabilityUpdate {
        total_size: Some(new.total_size),
        duration: Some(new.duration),
        min_price_per_byte_per_second: Some(new.min_price_per_byte_per_second),
        total_collateral: Some(new.total_collateral),
        ..AvailabilityUpdate::default()
    })?;
    check_quota(others_total, new.total_size, limits.quota)?;
    check_until(new.until, limits.now)?;
    Ok(Availability {
        id,
        total_size: new.total_size,
        free_size: new.total_size,
        duration: new.duration,
        min_price_per_byte_per_second: new.min_price_per_byte_per_second,
        total_collateral: new.total_collateral,
        total_remaining_collateral: new.total_collateral,
        collateral_lost: U256::ZERO,
        enabled: new.enabled,
        until: new.until,
    })
}

/// The four fields that must be positive, checked in the reference's order (spec §6), with
/// its messages; the message also names the value given.
fn check_nonzero(u: &AvailabilityUpdate) -> Result<(), LedgerError> {
    if u.total_size == Some(0) {
        return Err(invalid(
            "totalSize",
            "Total size must be larger then zero (totalSize 0)",
        ));
    }
    if u.duration == Some(0) {
        return Err(invalid(
            "duration",
            "duration must be larger then zero (duration 0)",
        ));
    }
    if u.min_price_per_byte_per_second == Some(U256::ZERO) {
        return Err(invalid(
            "minPricePerBytePerSecond",
            "minPricePerBytePerSecond must be larger then zero (minPricePerBytePerSecond 0)",
        ));
    }
    if u.total_collateral == Some(U256::ZERO) {
        return Err(invalid(
            "totalCollateral",
            "totalCollateral must be larger then zero (totalCollateral 0)",
        ));
    }
    Ok(())
}

fn check_quota(others_total: u64, size: u64, quota: u64) -> Result<(), LedgerError> {
    match others_total.checked_add(size) {
        Some(t) if t <= quota => Ok(()),
        _ => Err(invalid(
            "totalSize",
            format!(
                "Not enough storage quota: {size} bytes requested, {} of {quota} available",
                quota.saturating_sub(others_total)
            ),
        )),
    }
}

/// Validates and applies an update (spec/sales.md §6 PATCH order, without the quirks):
/// total size > 0, duration > 0, price > 0, collateral > 0, new total size ≥ bytes held by
/// reservations, quota (others + new total ≤ quota, i.e. only the increase is compared),
/// collateral ≥ committed (remaining = new total − committed), until not in the past and
/// not before the longest hosted slot. `others_total` is Σ total_size of the *other*
/// availabilities; `reservations` are this availability's live reservations.
pub fn apply_update(
    before: &Availability,
    update: &AvailabilityUpdate,
    limits: Limits,
    others_total: u64,
    reservations: &[Reservation],
) -> Result<Availability, LedgerError> {
    let mut a = before.clone();
    check_nonzero(update)?;
    if let Some(total) = update.total_size {
        let held = a.total_size - a.free_size.min(a.total_size);
        if total < held {
            return Err(invalid(
                "totalSize",
                format!(
                    "New totalSize must be larger then current totalSize - freeSize, which is currently: {held}"
                ),
            ));
        }
        if total > a.total_size {
            check_quota(others_total, total, limits.quota)?;
        }
        a.free_size = total - held;
        a.total_size = total;
    }
    if let Some(total) = update.total_collateral {
        let committed = a
            .total_collateral
            .saturating_sub(a.total_remaining_collateral);
        if total < committed {
            return Err(LedgerError::CollateralBelowCommitted {
                requested: total,
                committed,
            });
        }
        a.total_collateral = total;
        a.total_remaining_collateral = total - committed;
    }
    if let Some(until) = update.until {
        check_until(until, limits.now)?;
        if until != 0 {
            if let Some(longest) = reservations.iter().map(|r| r.valid_until).max() {
                if longest > until {
                    return Err(invalid(
                        "until",
                        format!(
                            "Until parameter must be greater or equal to the longest currently hosted slot, which ends at {longest}"
                        ),
                    ));
                }
            }
        }
        a.until = until;
    }
    if let Some(d) = update.duration {
        a.duration = d;
    }
    if let Some(p) = update.min_price_per_byte_per_second {
        a.min_price_per_byte_per_second = p;
    }
    if let Some(e) = update.enabled {
        a.enabled = e;
    }
    Ok(a)
}

/// The collateral a slot takes: slot_size × collateral_per_byte (None on overflow).
pub fn slot_collateral(ask: &SlotAsk) -> Option<U256> {
    U256::from(ask.slot_size).checked_mul(ask.collateral_per_byte)
}

/// remaining / free_size (integer division), or remaining itself when free_size == 0: the
/// most collateral per byte `a` accepts. [`mismatch`] applies the same rule without the
/// division ([`collateral_per_byte_fits`]).
pub fn max_collateral_per_byte(a: &Availability) -> U256 {
    if a.free_size == 0 {
        a.total_remaining_collateral
    } else {
        a.total_remaining_collateral / U256::from(a.free_size)
    }
}

/// `per_byte <= remaining / free_size` (floor division; `per_byte <= remaining` when
/// free_size == 0), computed without dividing: for free_size > 0 and integers,
/// `c <= ⌊R / F⌋ ⇔ c ≤ R / F ⇔ c × F ≤ R`, and a product that overflows 256 bits is larger
/// than any R. Equal to `per_byte <= max_collateral_per_byte(a)` (property-tested).
pub fn collateral_per_byte_fits(per_byte: U256, free_size: u64, remaining: U256) -> bool {
    if free_size == 0 {
        return per_byte <= remaining;
    }
    per_byte
        .checked_mul(U256::from(free_size))
        .is_some_and(|p| p <= remaining)
}

/// The rules of [`mismatch`] that need no 256-bit arithmetic and do not depend on the
/// availability's size or collateral: duration, price and until. A necessary condition for
/// a match, used by the indexed best-fit walks (the in-memory index and the SQLite query)
/// to skip candidates cheaply before [`mismatch`], the rule itself, decides.
pub fn terms_may_match(duration: u64, min_price: &U256, until: u64, ask: &SlotAsk) -> bool {
    ask.duration <= duration
        && ask.price_per_byte_per_second >= *min_price
        && (until == 0 || until >= ask.valid_until)
}

/// The first rule of spec/sales.md §2.3 findAvailability that `a` fails for `ask`, if any.
pub fn mismatch(a: &Availability, ask: &SlotAsk) -> Option<Mismatch> {
    if !a.enabled {
        return Some(Mismatch::Disabled);
    }
    if ask.slot_size > a.free_size {
        return Some(Mismatch::FreeSize {
            slot_size: ask.slot_size,
            free_size: a.free_size,
        });
    }
    if ask.duration > a.duration {
        return Some(Mismatch::Duration {
            requested: ask.duration,
            offered: a.duration,
        });
    }
    let slot_col = slot_collateral(ask);
    let col_ok = slot_col.is_some_and(|c| c <= a.total_remaining_collateral)
        && collateral_per_byte_fits(
            ask.collateral_per_byte,
            a.free_size,
            a.total_remaining_collateral,
        );
    if !col_ok {
        return Some(Mismatch::Collateral {
            per_byte: ask.collateral_per_byte,
            slot_collateral: slot_col.unwrap_or(U256::MAX),
            remaining: a.total_remaining_collateral,
        });
    }
    if ask.price_per_byte_per_second < a.min_price_per_byte_per_second {
        return Some(Mismatch::Price {
            offered: ask.price_per_byte_per_second,
            minimum: a.min_price_per_byte_per_second,
        });
    }
    if a.until != 0 && a.until < ask.valid_until {
        return Some(Mismatch::Until {
            valid_until: ask.valid_until,
            until: a.until,
        });
    }
    None
}

/// Best fit: among the availabilities matching `ask`, the one with the least free_size,
/// ties broken by the smaller id. A linear scan: the definition the indexed walks of
/// [`MemLedger`] and the SQLite store are tested against.
pub fn best_fit<'a, I>(availabilities: I, ask: &SlotAsk) -> Option<&'a Availability>
where
    I: IntoIterator<Item = &'a Availability>,
{
    availabilities
        .into_iter()
        .filter(|a| mismatch(a, ask).is_none())
        .min_by_key(|a| (a.free_size, a.id))
}

/// Creates a reservation on `a` after re-checking every match rule: returns the
/// availability after the deduction and the new reservation.
pub fn reserve(
    a: &Availability,
    id: ReservationId,
    ask: &SlotAsk,
) -> Result<(Availability, Reservation), LedgerError> {
    let mut after = a.clone();
    let r = reserve_in_place(&mut after, id, ask)?;
    Ok((after, r))
}

/// [`reserve`] on the availability itself: deducts from `a` (left unchanged on an error)
/// and returns the new reservation.
fn reserve_in_place(
    a: &mut Availability,
    id: ReservationId,
    ask: &SlotAsk,
) -> Result<Reservation, LedgerError> {
    match mismatch(a, ask) {
        None => {}
        Some(Mismatch::FreeSize {
            slot_size,
            free_size,
        }) => {
            return Err(LedgerError::BytesOutOfBounds {
                requested: slot_size,
                available: free_size,
            })
        }
        Some(Mismatch::Collateral {
            slot_collateral,
            remaining,
            ..
        }) => {
            return Err(LedgerError::InsufficientCollateral {
                needed: slot_collateral,
                remaining,
            })
        }
        Some(reason) => {
            return Err(LedgerError::Unsuitable {
                id: a.id,
                reason: Box::new(reason),
            })
        }
    }
    // mismatch() == None guarantees both of these.
    let collateral = slot_collateral(ask).unwrap_or(U256::MAX);
    a.free_size -= ask.slot_size;
    a.total_remaining_collateral -= collateral;
    Ok(Reservation {
        id,
        availability_id: a.id,
        request_id: ask.request_id,
        slot_index: ask.slot_index,
        slot_size: ask.slot_size,
        downloaded: 0,
        collateral,
        valid_until: ask.valid_until,
    })
}

/// Adds downloaded bytes to a reservation, refusing to exceed its slot size.
pub fn add_download(r: &Reservation, bytes: u64) -> Result<Reservation, LedgerError> {
    let left = r.slot_size - r.downloaded.min(r.slot_size);
    if bytes > left {
        return Err(LedgerError::BytesOutOfBounds {
            requested: bytes,
            available: left,
        });
    }
    let mut r = r.clone();
    r.downloaded += bytes;
    Ok(r)
}

/// Ends a reservation: returns its bytes and min(returned, held) collateral to `a`; the
/// rest of what it held becomes `collateral_lost`.
pub fn end(a: &Availability, r: &Reservation, returned_collateral: U256) -> ReservationEnd {
    let mut after = a.clone();
    let (back, lost) = end_in_place(&mut after, r, returned_collateral);
    ReservationEnd {
        reservation: r.clone(),
        availability: after,
        bytes_returned: r.slot_size,
        collateral_returned: back,
        collateral_lost: lost,
    }
}

/// [`end`] on the availability itself; returns the collateral returned and lost.
fn end_in_place(a: &mut Availability, r: &Reservation, returned_collateral: U256) -> (U256, U256) {
    let back = returned_collateral.min(r.collateral);
    let lost = r.collateral - back;
    a.free_size = a.free_size.saturating_add(r.slot_size);
    a.total_remaining_collateral = a.total_remaining_collateral.saturating_add(back);
    a.collateral_lost = a.collateral_lost.saturating_add(lost);
    (back, lost)
}

/// Checks the accounting invariant over a whole ledger; the error names the first
/// availability or reservation that breaks it.
pub fn check_invariant(
    availabilities: &[Availability],
    reservations: &[Reservation],
    quota: Option<u64>,
) -> Result<(), String> {
    let mut total: u128 = 0;
    for a in availabilities {
        total += u128::from(a.total_size);
        let mine = reservations.iter().filter(|r| r.availability_id == a.id);
        let (mut bytes, mut held) = (0u128, U256::ZERO);
        for r in mine {
            if r.downloaded > r.slot_size {
                return Err(format!(
                    "reservation {} downloaded {} > slot size {}",
                    r.id, r.downloaded, r.slot_size
                ));
            }
            bytes += u128::from(r.slot_size);
            held = held.saturating_add(r.collateral);
        }
        if u128::from(a.free_size) + bytes != u128::from(a.total_size) {
            return Err(format!(
                "availability {}: free {} + reserved {bytes} != total {}",
                a.id, a.free_size, a.total_size
            ));
        }
        let sum = a
            .total_remaining_collateral
            .checked_add(held)
            .and_then(|s| s.checked_add(a.collateral_lost));
        if sum != Some(a.total_collateral) {
            return Err(format!(
                "availability {}: remaining {} + held {held} + lost {} != total {}",
                a.id, a.total_remaining_collateral, a.collateral_lost, a.total_collateral
            ));
        }
    }
    if let Some(r) = reservations
        .iter()
        .find(|r| !availabilities.iter().any(|a| a.id == r.availability_id))
    {
        return Err(format!("reservation {} has no availability", r.id));
    }
    if let Some(q) = quota {
        if total > u128::from(q) {
            return Err(format!("Σ total_size {total} exceeds quota {q}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// MemLedger
// ---------------------------------------------------------------------------------------

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
    use super::*;

    const LIM: Limits = Limits {
        quota: 1_000_000,
        now: 1_000,
    };

    fn aid(n: u8) -> AvailabilityId {
        AvailabilityId([n; 32])
    }
    fn rid(n: u8) -> ReservationId {
        ReservationId([n; 32])
    }
    fn new_av(size: u64, collateral: u64) -> NewAvailability {
        NewAvailability {
            total_size: size,
            duration: 100,
            min_price_per_byte_per_second: U256::from(2),
            total_collateral: U256::from(collateral),
            enabled: true,
            until: 0,
        }
    }
    fn ask(size: u64, col_per_byte: u64) -> SlotAsk {
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
    fn check(l: &MemLedger) {
        check_invariant(
            &l.availabilities().unwrap(),
            &l.reservations().unwrap(),
            Some(LIM.quota),
        )
        .unwrap();
    }

    #[test]
    fn create_validates_in_spec_order() {
        let mut l = MemLedger::new();
        let mut n = new_av(0, 0);
        n.duration = 0;
        let e = l.create_availability(aid(1), n.clone(), LIM).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Total size must be larger then zero"));
        n.total_size = 5;
        let e = l.create_availability(aid(1), n.clone(), LIM).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("duration must be larger then zero"));
        n.duration = 5;
        n.min_price_per_byte_per_second = U256::ZERO;
        let e = l.create_availability(aid(1), n.clone(), LIM).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("minPricePerBytePerSecond must be larger then zero"));
        n.min_price_per_byte_per_second = U256::from(1);
        let e = l.create_availability(aid(1), n.clone(), LIM).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("totalCollateral must be larger then zero"));
        n.total_collateral = U256::from(1);
        n.total_size = LIM.quota + 1;
        n.until = 1;
        let e = l.create_availability(aid(1), n.clone(), LIM).unwrap_err();
        assert!(e.to_string().starts_with("Not enough storage quota"), "{e}");
        n.total_size = LIM.quota;
        let e = l.create_availability(aid(1), n.clone(), LIM).unwrap_err();
        assert!(e.to_string().contains("in the past"), "{e}");
        n.until = 0;
        let a = l.create_availability(aid(1), n, LIM).unwrap();
        assert_eq!(a.free_size, LIM.quota);
        assert!(l.availabilities().unwrap().len() == 1);
        check(&l);
    }

    #[test]
    fn quota_update_compares_the_increase() {
        let mut l = MemLedger::new();
        l.create_availability(aid(1), new_av(600_000, 10), LIM)
            .unwrap();
        l.create_availability(aid(2), new_av(300_000, 10), LIM)
            .unwrap();
        // 600k -> 700k fits (700k + 300k = quota), although 700k > quota - used.
        let up = AvailabilityUpdate {
            total_size: Some(700_000),
            ..Default::default()
        };
        l.update_availability(aid(1), up, LIM).unwrap();
        let up = AvailabilityUpdate {
            total_size: Some(700_001),
            ..Default::default()
        };
        let e = l.update_availability(aid(1), up, LIM).unwrap_err();
        assert!(e.to_string().starts_with("Not enough storage quota"));
        check(&l);
    }

    #[test]
    fn reserve_download_end_returns_everything_but_lost_collateral() {
        let mut l = MemLedger::new();
        l.create_availability(aid(1), new_av(1_000, 10_000), LIM)
            .unwrap();
        let r = l.create_reservation(rid(1), aid(1), &ask(400, 5)).unwrap();
        assert_eq!(r.collateral, U256::from(2_000));
        let a = l.availability(aid(1)).unwrap();
        assert_eq!(
            (a.free_size, a.total_remaining_collateral),
            (600, U256::from(8_000))
        );
        check(&l);
        l.record_download(rid(1), 300).unwrap();
        let e = l.record_download(rid(1), 101).unwrap_err();
        assert_eq!(
            e,
            LedgerError::BytesOutOfBounds {
                requested: 101,
                available: 100
            }
        );
        // Shrinking below what reservations hold is refused with the spec's wording.
        let up = AvailabilityUpdate {
            total_size: Some(399),
            ..Default::default()
        };
        let e = l.update_availability(aid(1), up, LIM).unwrap_err();
        assert_eq!(
            e.to_string(),
            "New totalSize must be larger then current totalSize - freeSize, which is currently: 400"
        );
        let e = l.remove_availability(aid(1)).unwrap_err();
        assert_eq!(
            e,
            LedgerError::HasReservations {
                id: aid(1),
                count: 1
            }
        );
        let end = l.end_reservation(rid(1), U256::from(1_500)).unwrap();
        assert_eq!(end.bytes_returned, 400);
        assert_eq!(end.collateral_returned, U256::from(1_500));
        assert_eq!(end.collateral_lost, U256::from(500));
        assert_eq!(end.availability.free_size, 1_000);
        assert_eq!(
            end.availability.total_remaining_collateral,
            U256::from(9_500)
        );
        check(&l);
        // Returning more than was held gives back only what was held.
        l.create_reservation(rid(2), aid(1), &ask(100, 1)).unwrap();
        let end = l.end_reservation(rid(2), U256::MAX).unwrap();
        assert_eq!(end.collateral_returned, U256::from(100));
        check(&l);
        // A collateral update keeps what is committed (the 500 lost).
        let up = AvailabilityUpdate {
            total_collateral: Some(U256::from(499)),
            ..Default::default()
        };
        assert!(matches!(
            l.update_availability(aid(1), up, LIM),
            Err(LedgerError::CollateralBelowCommitted { .. })
        ));
        let up = AvailabilityUpdate {
            total_collateral: Some(U256::from(600)),
            ..Default::default()
        };
        let ch = l.update_availability(aid(1), up, LIM).unwrap();
        assert_eq!(ch.after.total_remaining_collateral, U256::from(100));
        check(&l);
        l.remove_availability(aid(1)).unwrap();
        assert!(matches!(
            l.availability(aid(1)),
            Err(LedgerError::NotFound(LedgerItem::Availability(_)))
        ));
    }

    #[test]
    fn matching_rules_and_best_fit() {
        let mut l = MemLedger::new();
        l.create_availability(aid(1), new_av(1_000, 10_000), LIM)
            .unwrap();
        l.create_availability(aid(2), new_av(500, 10_000), LIM)
            .unwrap();
        l.create_availability(aid(3), new_av(500, 10_000), LIM)
            .unwrap();
        // Best fit: least free size, ties by id.
        let r = l.reserve_matching(rid(1), &ask(100, 1)).unwrap();
        assert_eq!(r.availability_id, aid(2));
        let r = l.reserve_matching(rid(2), &ask(450, 1)).unwrap();
        assert_eq!(r.availability_id, aid(3));
        let a = l.availability(aid(1)).unwrap();
        let mut s = ask(10, 1);
        s.duration = 101;
        assert!(matches!(mismatch(&a, &s), Some(Mismatch::Duration { .. })));
        let mut s = ask(10, 1);
        s.price_per_byte_per_second = U256::from(1);
        assert!(matches!(mismatch(&a, &s), Some(Mismatch::Price { .. })));
        // collateral per byte above remaining / free (10_000 / 1_000 = 10)
        assert!(mismatch(&a, &ask(10, 10)).is_none());
        assert!(matches!(
            mismatch(&a, &ask(10, 11)),
            Some(Mismatch::Collateral { .. })
        ));
        // overflowing slot collateral never matches and never panics
        let mut s = ask(10, 1);
        s.collateral_per_byte = U256::MAX;
        assert!(matches!(
            mismatch(&a, &s),
            Some(Mismatch::Collateral { .. })
        ));
        let up = AvailabilityUpdate {
            until: Some(4_999),
            ..Default::default()
        };
        l.update_availability(aid(1), up, LIM).unwrap();
        let a = l.availability(aid(1)).unwrap();
        assert!(matches!(
            mismatch(&a, &ask(10, 1)),
            Some(Mismatch::Until { .. })
        ));
        let up = AvailabilityUpdate {
            enabled: Some(false),
            ..Default::default()
        };
        l.update_availability(aid(1), up, LIM).unwrap();
        assert_eq!(
            l.reserve_matching(rid(3), &ask(600, 1)),
            Err(LedgerError::NoMatch)
        );
        let e = l
            .create_reservation(rid(3), aid(1), &ask(10, 1))
            .unwrap_err();
        assert!(
            matches!(&e, LedgerError::Unsuitable { reason, .. } if **reason == Mismatch::Disabled)
        );
        // until may not drop below a hosted slot's end
        let up = AvailabilityUpdate {
            until: Some(4_000),
            ..Default::default()
        };
        let e = l.update_availability(aid(2), up, LIM).unwrap_err();
        assert!(e.to_string().starts_with(
            "Until parameter must be greater or equal to the longest currently hosted slot"
        ));
        check(&l);
    }

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
