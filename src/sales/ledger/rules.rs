//! The pure rules of the ledger: validating and building availabilities and their
//! updates, the match rules of a slot against an availability, best fit, taking and giving
//! back a reservation's bytes and collateral, and the check of the accounting invariant.
//! Both implementations load what a rule needs, call it, and store the result inside one
//! transaction.

use super::{
    Availability, AvailabilityId, AvailabilityUpdate, LedgerError, Limits, Mismatch,
    NewAvailability, Reservation, ReservationEnd, ReservationId, SlotAsk,
};
use crate::market::U256;

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

/// Validates a new availability in the order of `docs/sales.md#availability-changes` and builds it.
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

/// The four fields that must be positive, checked in the reference's order
/// (`docs/sales.md#availability-changes`), with its messages; the message also names the value
/// given.
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

/// Validates and applies an update (the PATCH order of `docs/sales.md#availability-changes`):
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
/// a match, used by the store's indexed best-fit walk to skip candidates cheaply before [`mismatch`], the rule itself, decides.
pub fn terms_may_match(duration: u64, min_price: &U256, until: u64, ask: &SlotAsk) -> bool {
    ask.duration <= duration
        && ask.price_per_byte_per_second >= *min_price
        && (until == 0 || until >= ask.valid_until)
}

/// The first matching rule (`docs/sales.md#matching`) that `a` fails for `ask`, if any.
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
/// ties broken by the smaller id. A linear scan: [`MemLedger`]'s matching, and the
/// definition the SQLite store's indexed walk is tested against.
///
/// [`MemLedger`]: super::MemLedger
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
pub(super) fn reserve_in_place(
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
pub(super) fn end_in_place(
    a: &mut Availability,
    r: &Reservation,
    returned_collateral: U256,
) -> (U256, U256) {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{aid, ask, check, new_av, rid, LIM};
    use super::super::{Ledger, LedgerItem, MemLedger};
    use super::*;

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
        // Shrinking below what reservations hold is refused with the reference's wording.
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
}
