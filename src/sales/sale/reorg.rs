//! What a sale does when the chain it acted on was reorganised: the engine reads the slot
//! view again ([`Input::Rechecked`]) and the sale compares it with what it believed.
//!
//! Two facts decide, both read from the chain as it is now:
//! - the request is unknown (`getRequest` reverts): the request was reorganised out, so
//!   nothing we did for it happened either; the sale ends and everything it holds comes back;
//! - the slot reads Free after our fill: a filled slot never reads Free again on one chain
//!   (freeing makes it Paid, a forced free Repair), so our `fillSlot` was reorganised out and
//!   the collateral never left the host; the sale ends returning all it holds, deletes its
//!   data, and puts the slot back into the queue (unseen) while the request can still be
//!   filled, so the host may sell it again from the start.
//!
//! A sale with a transaction in flight (`reserveSlot`, `fillSlot`, `freeSlot`) waits for its
//! outcome instead: the transaction book looks for the receipt on the new chain, and a
//! transaction that is mined again must not find its sale gone. Preparing and Unknown are
//! reading the slot already. A proving sale whose slot is still ours proves the current
//! period again, in case its proof was in a replaced block.

use crate::market::{RequestState, SlotState, U256};
use crate::sales::queue::SlotQueueItem;

use super::ending::{end, end_hosted, held_of};
use super::freeing::FreeStep;
use super::hosting::ProveStep;
use super::{Base, FillStep, FinalState, Hosted, Output, Reserved, Sale, SaleConfig, SlotView};

/// Why a sale ends when its request vanished.
pub(super) const REQUEST_GONE: &str = "request removed by a reorganisation";
/// Why a sale ends when its fill vanished.
pub(super) const FILL_GONE: &str = "our fill was removed by a reorganisation";

impl Sale {
    /// Whether a re-check can change this sale (Preparing and Unknown read the slot
    /// anyway; final sales ignore everything).
    pub fn wants_recheck(&self) -> bool {
        !matches!(
            self,
            Sale::Preparing(_) | Sale::Unknown(_) | Sale::Ended(..)
        )
    }

    /// The slot view read again after a reorganisation (see the module docs).
    pub(super) fn rechecked(
        self,
        view: SlotView,
        now: u64,
        cfg: &SaleConfig,
        out: &mut Vec<Output>,
    ) -> Sale {
        let gone = view.request.is_none();
        let free = view.slot_state == SlotState::Free;
        match self {
            Sale::SlotReserving(s) if gone => before_fill_gone(&s.held, out),
            Sale::Downloading(r) | Sale::InitialProving(r, _) if gone => before_fill_gone(&r, out),
            Sale::Filling(r, _, FillStep::Reading { .. }) if gone => before_fill_gone(&r, out),
            Sale::Filled(h, _) if gone || free => fill_gone(&h, &view, now, cfg, out),
            Sale::Proving(p) if gone || free => fill_gone(&p.hosted, &view, now, cfg, out),
            Sale::Proving(mut p)
                if view.slot_state == SlotState::Filled && view.host == cfg.signer =>
            {
                // Our proof of this period may have been in a replaced block: prove it
                // again (an accepted one reverts with ProofAlreadySubmitted, which counts).
                if p.step == ProveStep::Idle {
                    p.last_proved = None;
                    out.push(Output::WakeAt(now + 1));
                }
                Sale::Proving(p)
            }
            Sale::Payout(f) | Sale::Cancelled(f) | Sale::Failed(f)
                if (gone || free)
                    && matches!(
                        f.step,
                        FreeStep::Reading { .. } | FreeStep::ReadBackoff { .. }
                    ) =>
            {
                fill_gone(&f.hosted, &view, now, cfg, out)
            }
            other => other,
        }
    }
}

/// The request of a sale before its fill is gone: everything held comes back, the data
/// (a download may be running) goes.
fn before_fill_gone(r: &Reserved, out: &mut Vec<Output>) -> Sale {
    end(FinalState::Ignored, r.base.slot, REQUEST_GONE)
        .returning(Some(&r.reservation), r.reservation.collateral)
        .release_data()
        .emit(out)
}

/// Our fill (or its request) is gone: everything held comes back, the data goes, and the
/// slot is queued again while it can still be filled.
fn fill_gone(
    h: &Hosted,
    view: &SlotView,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    if view.request.is_none() {
        return end_hosted(FinalState::Ignored, h, REQUEST_GONE, held_of(h), out);
    }
    let open = view.request_state == Some(RequestState::New) && view.expires_at > now;
    fill_removed(
        h,
        open.then_some(view.expires_at),
        view.slot_state,
        cfg,
        out,
    )
}

/// Ends a hosted sale whose fill is not on the chain: all it holds comes back, its data
/// goes, and when `requeue_until` is given the slot is queued again, unseen, until then.
pub(super) fn fill_removed(
    h: &Hosted,
    requeue_until: Option<u64>,
    state: SlotState,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    let e = end(FinalState::Ignored, h.base.slot, FILL_GONE)
        .returning(h.reservation.as_ref(), held_of(h))
        .release_data();
    match requeue_until {
        Some(expiry) => e
            .requeue_unseen(item_of(&h.base, expiry, state, cfg))
            .emit(out),
        None => e.emit(out),
    }
}

/// The queue item of a slot that can be filled again until `expiry`.
fn item_of(base: &Base, expiry: u64, state: SlotState, cfg: &SaleConfig) -> SlotQueueItem {
    let ask = &base.request.ask;
    let collateral: U256 = if state == SlotState::Repair {
        ask.repair_collateral(cfg.repair_reward_percentage)
    } else {
        ask.collateral_per_slot()
    };
    SlotQueueItem {
        request_id: base.slot.request_id,
        slot_index: base.slot.slot_index,
        slot_size: ask.slot_size,
        duration: ask.duration,
        price_per_byte_per_second: ask.price_per_byte_per_second,
        collateral,
        expiry,
        seen: false,
    }
}
