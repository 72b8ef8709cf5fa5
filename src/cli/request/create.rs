//! `codex request create`: approve the price and post a storage request.
use std::io::Write;

use alloy_primitives::{Address, B256, U256};
use argh::FromArgs;
use serde_json::json;

use super::{b256_arg, connect, contract_error, invalid, load_key, send_error};
use crate::chain::sender::Sender;
use crate::chain::tx::GasCall;
use crate::chain::ChainError;
use crate::cli::{CliError, Context, Run};
use crate::market::{calls, Ask, Content, Request};

/// Approve the price in tokens and submit a storage request; prints the request id.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "create")]
pub struct CreateArgs {
    /// content id as Codex prints it (z… or b…), or 0x-hex bytes
    #[argh(option, arg_name = "CID")]
    pub cid: String,
    /// number of slots
    #[argh(option, arg_name = "N")]
    pub slots: u64,
    /// bytes per slot, e.g. 1MiB
    #[argh(option, arg_name = "SIZE")]
    pub slot_size: String,
    /// how long the data is stored, e.g. 1d
    #[argh(option, arg_name = "DURATION")]
    pub duration: String,
    /// how long hosts have to fill the slots, e.g. 10m; less than --duration
    #[argh(option, arg_name = "DURATION")]
    pub expiry: String,
    /// payment per byte per second, in token units
    #[argh(option, arg_name = "AMOUNT")]
    pub price_per_byte_per_second: String,
    /// host collateral per byte, in token units
    #[argh(option, arg_name = "AMOUNT")]
    pub collateral_per_byte: String,
    /// a proof is required about once every N periods
    #[argh(option, arg_name = "N")]
    pub proof_probability: String,
    /// slots that may be lost before the request fails
    #[argh(option, arg_name = "N")]
    pub max_slot_loss: u64,
    /// dataset merkle root, 32 bytes of 0x-hex (default all zero)
    #[argh(option, arg_name = "0xHEX")]
    pub merkle_root: Option<String>,
    /// request nonce, 32 bytes of 0x-hex (default random)
    #[argh(option, arg_name = "0xHEX")]
    pub nonce: Option<String>,
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl CreateArgs {
    fn request(&self, client: Address) -> Result<Request, CliError> {
        let cid =
            crate::market::cid::parse_cid(&self.cid).map_err(|e| invalid("--cid", &self.cid, e))?;
        let slot_size = crate::units::size_arg(&self.slot_size)
            .map_err(|e| invalid("--slot-size", &self.slot_size, e))?;
        let duration = crate::units::duration_arg(&self.duration)
            .map_err(|e| invalid("--duration", &self.duration, e))?;
        let expiry = crate::units::duration_arg(&self.expiry)
            .map_err(|e| invalid("--expiry", &self.expiry, e))?;
        let amount =
            |option: &str, v: &str| crate::units::amount_arg(v).map_err(|e| invalid(option, v, e));
        let price = amount(
            "--price-per-byte-per-second",
            &self.price_per_byte_per_second,
        )?;
        let collateral = amount("--collateral-per-byte", &self.collateral_per_byte)?;
        let probability = amount("--proof-probability", &self.proof_probability)?;
        if self.slots == 0 {
            return Err(invalid("--slots", "0", "must be at least 1"));
        }
        if self.max_slot_loss > self.slots {
            return Err(invalid(
                "--max-slot-loss",
                &self.max_slot_loss.to_string(),
                "must not exceed --slots",
            ));
        }
        if expiry == 0 || expiry >= duration {
            return Err(invalid(
                "--expiry",
                &self.expiry,
                "must be more than 0 and less than --duration",
            ));
        }
        let merkle_root = match &self.merkle_root {
            Some(v) => b256_arg("--merkle-root", v)?,
            None => B256::ZERO,
        };
        let nonce = match &self.nonce {
            Some(v) => b256_arg("--nonce", v)?,
            None => {
                let mut rng = fastrand::Rng::new();
                let mut b = [0u8; 32];
                rng.fill(&mut b);
                B256::from(b)
            }
        };
        Ok(Request {
            client,
            ask: Ask {
                proof_probability: probability,
                price_per_byte_per_second: price,
                collateral_per_byte: collateral,
                slots: self.slots,
                slot_size,
                duration,
                max_slot_loss: self.max_slot_loss,
            },
            content: Content { cid, merkle_root },
            expiry,
            nonce,
        })
    }
}

impl Run for CreateArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let key = load_key(ctx, "create")?;
        // Validate everything before touching the chain.
        let request = self.request(key.address())?;
        let (mut rpc, chain_id, marketplace) = connect(ctx)?;
        let token = rpc
            .eth_call(marketplace, &calls::token())
            .map_err(|e| contract_error("token()", e))?;
        let token = calls::decode_token(&token).map_err(|e| {
            CliError::Chain(ChainError::BadResponse {
                method: "token()".into(),
                reason: e.to_string(),
            })
        })?;
        let max_price = request
            .ask
            .price_per_slot()
            .saturating_mul(U256::from(request.ask.slots));
        let mut sender = Sender::new(key, chain_id);
        sender.confirmations = ctx.chain_settings()?.confirmations;
        sender
            .send(
                &mut rpc,
                token,
                calls::approve(marketplace, max_price),
                GasCall::Other,
            )
            .map_err(|e| send_error("approve", e))?;
        let mined = sender
            .send(
                &mut rpc,
                marketplace,
                calls::request_storage(&request),
                GasCall::Other,
            )
            .map_err(|e| send_error("requestStorage", e))?;
        let id = request.id();
        if self.json {
            let v = json!({
                "requestId": id,
                "transactionHash": mined.hash,
                "blockNumber": mined.block_number,
            });
            writeln!(ctx.out(), "{v}")?;
        } else {
            writeln!(ctx.out(), "{id}")?;
        }
        Ok(())
    }
}
