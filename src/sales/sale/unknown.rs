//! Unknown: a sale restored at startup for a slot this host holds on chain. It reads the
//! slot (with backoff) and continues in the state the chain reports.

use crate::market::{SlotState, U256};
use crate::sales::ledger::Reservation;

use super::before_fill::{base_of, watch_while_new};
use super::ending::end_hosted;
use super::{
    end, filled, freeing, FilledStep, FinalState, FreeCause, FreeStep, Freeing, Hosted, Input,
    Output, Sale, SaleConfig, SlotRef,
};

/// Unknown (restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The slot.
    pub slot: SlotRef,
    /// The persisted reservation, when one exists.
    pub reservation: Option<Reservation>,
    /// Failed reads so far.
    pub attempt: u32,
    /// true while waiting to read again.
    pub backoff: bool,
}

pub(super) fn unknown(
    mut u: Box<Unknown>,
    input: Input,
    now: u64,
    cfg: &SaleConfig,
    out: &mut Vec<Output>,
) -> Sale {
    match input {
        Input::Slot(Err(_)) if !u.backoff => {
            out.push(Output::WakeAt(cfg.backoff(now, u.attempt)));
            u.attempt += 1;
            u.backoff = true;
            Sale::Unknown(u)
        }
        Input::Wake if u.backoff => {
            out.push(Output::ReadSlot(u.slot));
            u.backoff = false;
            Sale::Unknown(u)
        }
        Input::Slot(Ok(view)) if !u.backoff => {
            let held = u
                .reservation
                .as_ref()
                .map(|r| r.collateral)
                .unwrap_or(U256::ZERO);
            let Some(request) = view.request.clone() else {
                return end(
                    FinalState::Errored,
                    u.slot,
                    "request could not be retrieved",
                )
                .returning(u.reservation.as_ref(), held)
                .release_data()
                .emit(out);
            };
            watch_while_new(u.slot, &view, out);
            let hosted = Hosted {
                base: base_of(u.slot, &view, request),
                reservation: u.reservation,
            };
            let freeing_with = |cause, out: &mut Vec<Output>| {
                let f = Box::new(Freeing {
                    hosted: hosted.clone(),
                    was_hosting: true,
                    failed_sends: 0,
                    step: FreeStep::Reading { attempt: 0 },
                });
                freeing(f, cause, Input::Slot(Ok(view.clone())), now, cfg, out)
            };
            match view.slot_state {
                SlotState::Free => end_hosted(
                    FinalState::Errored,
                    &hosted,
                    "Slot state on chain should not be 'free'",
                    held,
                    out,
                ),
                SlotState::Filled => filled(
                    Box::new(hosted),
                    FilledStep::CheckingHost { attempt: 0 },
                    Input::Slot(Ok(view)),
                    now,
                    cfg,
                    out,
                ),
                SlotState::Finished => freeing_with(FreeCause::Payout, out),
                SlotState::Cancelled => freeing_with(FreeCause::Cancelled, out),
                SlotState::Failed => freeing_with(FreeCause::Failed, out),
                SlotState::Paid => {
                    end_hosted(FinalState::Finished, &hosted, "already paid", held, out)
                }
                SlotState::Repair => end_hosted(
                    FinalState::Errored,
                    &hosted,
                    "slot was forcibly freed",
                    U256::ZERO,
                    out,
                ),
            }
        }
        _ => Sale::Unknown(u),
    }
}
