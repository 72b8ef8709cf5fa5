//! `codex request show`: a request, its state and its slots, read from the chain.
use std::io::Write;

use argh::FromArgs;
use serde_json::{json, Value};

use super::{connect, request_id_arg, view};
use crate::cli::{CliError, Context, Run};
use crate::market::{calls, SlotId};

/// Print a request, its state, expiry and end, and each slot's state and host.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct ShowArgs {
    /// the request id (0x + 64 hex digits)
    #[argh(positional, arg_name = "ID")]
    pub id: String,
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl Run for ShowArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let id = request_id_arg(&self.id)?;
        let (mut rpc, _, m) = connect(ctx)?;
        let request = view(&mut rpc, m, "getRequest", calls::get_request(id), |d| {
            calls::decode_get_request(d)
        })?;
        let state = view(&mut rpc, m, "requestState", calls::request_state(id), |d| {
            calls::decode_request_state(d)
        })?;
        let expiry = view(
            &mut rpc,
            m,
            "requestExpiry",
            calls::request_expiry(id),
            calls::decode_request_expiry,
        )?;
        let end = view(&mut rpc, m, "requestEnd", calls::request_end(id), |d| {
            calls::decode_request_end(d)
        })?;
        let mut slots = Vec::new();
        for index in 0..request.ask.slots {
            let slot = SlotId::of(id, index);
            let state = view(&mut rpc, m, "slotState", calls::slot_state(slot), |d| {
                calls::decode_slot_state(d)
            })?;
            let host = view(&mut rpc, m, "getHost", calls::get_host(slot), |d| {
                calls::decode_get_host(d)
            })?;
            slots.push((index, slot, state, host));
        }
        let ask = &request.ask;
        if self.json {
            let v = json!({
                "requestId": id,
                "client": request.client,
                "state": format!("{state:?}"),
                "expiresAt": expiry,
                "endsAt": end,
                "ask": {
                    "slots": ask.slots,
                    "slotSize": ask.slot_size,
                    "duration": ask.duration,
                    "proofProbability": ask.proof_probability.to_string(),
                    "pricePerBytePerSecond": ask.price_per_byte_per_second.to_string(),
                    "collateralPerByte": ask.collateral_per_byte.to_string(),
                    "maxSlotLoss": ask.max_slot_loss,
                },
                "content": {
                    "cid": crate::market::cid::format_cid(&request.content.cid),
                    "merkleRoot": request.content.merkle_root,
                },
                "expiry": request.expiry,
                "nonce": request.nonce,
                "slots": slots.iter().map(|(i, s, st, h)| json!({
                    "slotIndex": i,
                    "slotId": s,
                    "state": format!("{st:?}"),
                    "host": h.map_or(Value::Null, |a| json!(a)),
                })).collect::<Vec<_>>(),
            });
            writeln!(ctx.out(), "{v}")?;
            return Ok(());
        }
        let out = ctx.out();
        writeln!(out, "request    {id}")?;
        writeln!(out, "client     {}", request.client)?;
        writeln!(out, "state      {state:?}")?;
        writeln!(out, "expires at {expiry}")?;
        writeln!(out, "ends at    {end}")?;
        writeln!(
            out,
            "cid        {}",
            crate::market::cid::format_cid(&request.content.cid)
        )?;
        writeln!(
            out,
            "ask        {} slots × {} bytes for {} s; price/byte/s {}; collateral/byte {}; \
             proof probability {}; max slot loss {}",
            ask.slots,
            ask.slot_size,
            ask.duration,
            ask.price_per_byte_per_second,
            ask.collateral_per_byte,
            ask.proof_probability,
            ask.max_slot_loss
        )?;
        for (i, _, st, h) in &slots {
            let host = h.map_or_else(|| "-".to_string(), |a| a.to_string());
            writeln!(out, "slot {i:<5} {:<10} {host}", format!("{st:?}"))?;
        }
        Ok(())
    }
}
