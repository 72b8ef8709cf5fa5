//! Ended sales into the store's history, with what the chain paid for them.
use super::Node;
use crate::market::{short, U256};
use crate::sales::engine::SaleEnded;
use crate::sales::sale::FinalState;
use crate::store::history::SaleRecord;

impl Node {
    /// Keeps an ended sale in the history.
    pub(super) fn record_end(&mut self, e: SaleEnded) {
        let received = self.received.remove(&e.slot).unwrap_or_default();
        self.ahead.remove(&e.slot);
        if e.requeued {
            // Its fill was reorganised out and the slot queued again: the reservation it
            // made outlives the fill (the contract keeps reservations across fills and
            // refuses a second one from the same address), so it stays on record, unfilled
            // (the `ReleaseData` that follows forgets filled slots only), and the next sale
            // of the slot does not read canReserveSlot's false as "taken".
            if let Err(err) = self
                .engine
                .ledger_port()
                .unfill_chain_reservation(e.slot.request_id, e.slot.slot_index)
            {
                log::warn!(target: "codex::store", "keeping the reservation of slot {} of {}: {err}", e.slot.slot_index, crate::market::short(&e.slot.request_id));
            }
        }
        self.metrics.sale_ended(e.state);
        if e.state == FinalState::Ignored {
            return;
        }
        if e.reservation.is_none() && self.repaying.remove(&e.slot) {
            // The payout claimed again after a reorganisation: the history has the sale
            // with its payout already.
            return;
        }
        let (reservation, returned) = match &e.reservation {
            Some((r, returned)) => (Some(r), (*returned).min(r.collateral)),
            None => (None, U256::ZERO),
        };
        let collateral = reservation.map_or(U256::ZERO, |r| r.collateral);
        let record = SaleRecord {
            request_id: e.slot.request_id,
            slot_index: e.slot.slot_index,
            availability_id: reservation.map(|r| r.availability_id),
            reservation_id: reservation.map(|r| r.id),
            outcome: e.state.outcome().to_string(),
            reason: e.reason,
            slot_size: reservation.map_or(0, |r| r.slot_size),
            started_at: e.started_at,
            ended_at: e.ended_at,
            payout: received.saturating_sub(returned),
            collateral,
            collateral_returned: returned,
            collateral_lost: collateral - returned,
        };
        self.metrics.tokens_earned += f64::from(record.payout);
        if let Err(err) = self.engine.ledger_port().record_sale_end(&record) {
            log::warn!(target: "codex::store", "keeping slot {} of {} in the history: {err}", e.slot.slot_index, short(&e.slot.request_id));
        }
    }
}
