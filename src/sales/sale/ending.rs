//! How a sale ends: the data of its final state ([`Ending`], with the table of what each
//! ending returns) and the helpers every state uses to reach one.

use std::borrow::Cow;

use crate::market::U256;
use crate::sales::ledger::ReservationId;
use crate::sales::queue::SlotQueueItem;

use super::{Hosted, Output, Reserved, Sale, SlotRef};

/// How a sale ended: the data of every final state, and what the engine cleans up when
/// [`Output::Ended`] tells it the sale reached one (see [`Sale::ending`]).
///
/// # What an ending returns (the table codex follows; fixes §8.2–§8.4)
/// Every ending gives the reservation's bytes back to its availability and says how much of
/// the reservation's collateral comes back; what does not come back is recorded as lost.
///
/// | ending | collateral returned | data released |
/// |---|---|---|
/// | Ignored: no availability matched / reservation race (item requeued as seen) | no reservation | no |
/// | Ignored: slot not free, request over | no reservation | no |
/// | Ignored: cannot reserve, reservation not allowed, already filled at fillSlot | all held (nothing posted) | if downloaded |
/// | Errored before the fill (read, download, proof, fill errors) | all held | if downloaded |
/// | Errored: filled by another host | all held | yes |
/// | Cancelled or Failed before the fill | all held | if downloaded |
/// | Cancelled after our fill | on-chain currentCollateral, read before freeSlot | yes |
/// | Failed after our fill | none (the contract pays nothing) | yes |
/// | Errored: slot forcibly freed (Repair) | none (forfeited on chain) | yes |
/// | Finished via Payout | on-chain currentCollateral, read before freeSlot | yes |
/// | Finished from Unknown (slot already Paid) | all held | yes |
/// | Restart: reservation held by no live slot (engine) | all held | yes |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The slot.
    pub slot: SlotRef,
    /// Why (a fixed text for the common endings, so ending costs no string allocation).
    pub reason: Cow<'static, str>,
    /// The reservation to end, with the collateral that comes back.
    pub reservation: Option<(ReservationId, U256)>,
    /// Push this item back into the queue, marked seen (boxed: rare, and large).
    pub requeue: Option<Box<SlotQueueItem>>,
    /// Delete the slot's data.
    pub release_data: bool,
}

pub(super) enum Closing {
    Finished,
    Closed(&'static str),
    Errored,
    Ignored,
}

pub(super) fn end(
    how: Closing,
    slot: SlotRef,
    reason: impl Into<Cow<'static, str>>,
    reservation: Option<(ReservationId, U256)>,
    requeue: Option<Box<SlotQueueItem>>,
    release_data: bool,
    out: &mut Vec<Output>,
) -> Sale {
    let fin = Box::new(Ending {
        slot,
        reason: reason.into(),
        reservation,
        requeue,
        release_data,
    });
    out.push(Output::Ended);
    match how {
        Closing::Finished => Sale::Finished(fin),
        Closing::Closed(name) => Sale::Closed(fin, name),
        Closing::Errored => Sale::Errored(fin),
        Closing::Ignored => Sale::Ignored(fin),
    }
}

pub(super) fn end_closed(
    slot: SlotRef,
    name: &'static str,
    reason: &'static str,
    reservation: Option<(ReservationId, U256)>,
    release_data: bool,
    out: &mut Vec<Output>,
) -> Sale {
    end(
        Closing::Closed(name),
        slot,
        reason,
        reservation,
        None,
        release_data,
        out,
    )
}

/// Ends a sale that posted no collateral: all of it comes back.
pub(super) fn end_held(
    how: Closing,
    r: &Reserved,
    reason: impl Into<Cow<'static, str>>,
    out: &mut Vec<Output>,
) -> Sale {
    let downloaded = r.reservation.downloaded > 0;
    end(
        how,
        r.base.slot,
        reason,
        Some((r.reservation.id, r.reservation.collateral)),
        None,
        downloaded,
        out,
    )
}

pub(super) fn held_of(h: &Hosted) -> U256 {
    h.reservation
        .as_ref()
        .map(|r| r.collateral)
        .unwrap_or(U256::ZERO)
}

pub(super) fn end_hosted(
    how: Closing,
    h: &Hosted,
    reason: impl Into<Cow<'static, str>>,
    returned: U256,
    out: &mut Vec<Output>,
) -> Sale {
    let res = h.reservation.as_ref().map(|r| (r.id, returned));
    end(how, h.base.slot, reason, res, None, true, out)
}
