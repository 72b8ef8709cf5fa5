//! How a sale ends: the data of its final state ([`Ending`], with the table of what each
//! ending returns) and the helpers every state uses to reach one.

use std::borrow::Cow;

use crate::market::U256;
use crate::sales::ledger::{Reservation, ReservationId};
use crate::sales::queue::SlotQueueItem;

use super::{Hosted, Output, Reserved, Sale, SlotRef};

/// How a sale ended: the data of every final state, and what the engine cleans up when
/// [`Output::Ended`] tells it the sale reached one (see [`Sale::ending`]).
///
/// # What an ending returns (`docs/sales.md#endings`; fixes differences 2–4)
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
/// | Ignored: request reorganised out | all held | yes (before the fill: if downloaded) |
/// | Ignored: our fill reorganised out (slot Free again; requeued unseen while the request is New) | all held | yes |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The slot.
    pub slot: SlotRef,
    /// Why (a fixed text for the common endings, so ending costs no string allocation).
    pub reason: Cow<'static, str>,
    /// The reservation to end, with the collateral that comes back.
    pub reservation: Option<(ReservationId, U256)>,
    /// Push this item back into the queue (boxed: rare, and large); marked seen, except for
    /// a slot whose fill was reorganised out.
    pub requeue: Option<Box<SlotQueueItem>>,
    /// Delete the slot's data.
    pub release_data: bool,
}

/// The final states of a sale: each holds an [`Ending`] (in [`Sale::Ended`]). The engine
/// counts endings by final state ([`EngineStats::ended`]).
///
/// [`EngineStats::ended`]: crate::sales::engine::EngineStats::ended
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FinalState {
    /// Paid out (or found already paid).
    Finished,
    /// The request was cancelled; all cleaned up.
    Cancelled,
    /// The request failed; all cleaned up.
    Failed,
    /// Ended by an error (including a slot that another host filled, or forcibly freed).
    Errored,
    /// The slot was not for us (no availability matched, not free, request over, ...).
    Ignored,
}

impl FinalState {
    /// The number of final states.
    pub const COUNT: usize = 5;
    /// Every final state, in the order of their numbers (`state as usize`).
    pub const ALL: [FinalState; FinalState::COUNT] = [
        FinalState::Finished,
        FinalState::Cancelled,
        FinalState::Failed,
        FinalState::Errored,
        FinalState::Ignored,
    ];

    /// The state's name as the REST API, `codex sale list` and the history show it.
    pub fn name(self) -> &'static str {
        match self {
            FinalState::Finished => "SaleFinished",
            FinalState::Cancelled => "SaleCancelled",
            FinalState::Failed => "SaleFailed",
            FinalState::Errored => "SaleErrored",
            FinalState::Ignored => "SaleIgnored",
        }
    }

    /// The outcome as the sales history and the metrics label it: the name without `Sale`.
    pub fn outcome(self) -> &'static str {
        let name = self.name();
        name.strip_prefix("Sale").unwrap_or(name)
    }
}

/// An ending on its way: the final state and the [`Ending`] that goes with it, which by
/// default ends no reservation, requeues nothing and keeps the slot's data. Each method
/// names one thing the ending does; [`End::emit`] reaches the final state.
#[must_use = "an ending does nothing until it is emitted"]
pub(super) struct End {
    state: FinalState,
    ending: Ending,
}

/// Begins ending the sale of `slot` in the final state `state`, for `reason`.
pub(super) fn end(state: FinalState, slot: SlotRef, reason: impl Into<Cow<'static, str>>) -> End {
    End {
        state,
        ending: Ending {
            slot,
            reason: reason.into(),
            reservation: None,
            requeue: None,
            release_data: false,
        },
    }
}

impl End {
    /// Ends `reservation`, when the sale holds one, giving `collateral` back to its
    /// availability.
    pub(super) fn returning(mut self, reservation: Option<&Reservation>, collateral: U256) -> End {
        self.ending.reservation = reservation.map(|r| (r.id, collateral));
        self
    }

    /// Pushes `item` back into the queue, marked seen.
    pub(super) fn requeue(mut self, item: SlotQueueItem) -> End {
        self.ending.requeue = Some(Box::new(SlotQueueItem { seen: true, ..item }));
        self
    }

    /// Pushes `item` back into the queue as it is (unseen: a slot whose fill was
    /// reorganised out may be sold again at once).
    pub(super) fn requeue_unseen(mut self, item: SlotQueueItem) -> End {
        self.ending.requeue = Some(Box::new(item));
        self
    }

    /// Deletes the slot's data.
    pub(super) fn release_data(self) -> End {
        self.release_data_if(true)
    }

    /// Deletes the slot's data when `release` (some of it was downloaded).
    pub(super) fn release_data_if(mut self, release: bool) -> End {
        self.ending.release_data = release;
        self
    }

    /// Reaches the final state: tells the engine with [`Output::Ended`] and returns the
    /// final sale.
    pub(super) fn emit(self, out: &mut Vec<Output>) -> Sale {
        let fin = Box::new(self.ending);
        out.push(Output::Ended);
        Sale::Ended(self.state, fin)
    }
}

/// Ends a sale that posted no collateral: all of it comes back, and the data goes if some
/// was downloaded.
pub(super) fn end_held(
    state: FinalState,
    r: &Reserved,
    reason: impl Into<Cow<'static, str>>,
    out: &mut Vec<Output>,
) -> Sale {
    end(state, r.base.slot, reason)
        .returning(Some(&r.reservation), r.reservation.collateral)
        .release_data_if(r.reservation.downloaded > 0)
        .emit(out)
}

/// The collateral a hosted sale's reservation holds (zero without one).
pub(super) fn held_of(h: &Hosted) -> U256 {
    h.reservation
        .as_ref()
        .map(|r| r.collateral)
        .unwrap_or(U256::ZERO)
}

/// Ends a sale of a slot we may have filled: `returned` of the collateral comes back, and
/// the data goes.
pub(super) fn end_hosted(
    state: FinalState,
    h: &Hosted,
    reason: impl Into<Cow<'static, str>>,
    returned: U256,
    out: &mut Vec<Output>,
) -> Sale {
    end(state, h.base.slot, reason)
        .returning(h.reservation.as_ref(), returned)
        .release_data()
        .emit(out)
}
