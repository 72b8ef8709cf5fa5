//! `codex request create|show|withdraw`: the client side of storage requests.
use std::io::Write;

use alloy_primitives::{Address, B256, U256};
use argh::FromArgs;
use serde_json::{json, Value};

use super::{CliError, Context, Run};
use crate::chain::client::BlockingClient;
use crate::chain::key::EthPrivateKey;
use crate::chain::sender::{SendError, Sender};
use crate::chain::tx::GasCall;
use crate::chain::ChainError;
use crate::market::errors::decode_rpc_error;
use crate::market::{calls, Ask, Content, Request, RequestId, SlotId};

/// Create, inspect and withdraw storage requests (the client side of the Marketplace).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "request")]
pub struct RequestArgs {
    #[argh(subcommand)]
    pub command: RequestCommand,
}

/// The request subcommands.
#[derive(FromArgs, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
#[argh(subcommand)]
pub enum RequestCommand {
    Create(CreateArgs),
    Show(ShowArgs),
    Withdraw(WithdrawArgs),
}

impl Run for RequestArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        match self.command {
            RequestCommand::Create(a) => a.run(ctx),
            RequestCommand::Show(a) => a.run(ctx),
            RequestCommand::Withdraw(a) => a.run(ctx),
        }
    }
}

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

/// Withdraw the funds of a cancelled, finished or failed request to the client.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "withdraw")]
pub struct WithdrawArgs {
    /// the request id (0x + 64 hex digits)
    #[argh(positional, arg_name = "ID")]
    pub id: String,
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

fn invalid(option: &str, value: &str, why: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("invalid {option} {value:?}: {why}"))
}

fn b256_arg(option: &str, value: &str) -> Result<B256, CliError> {
    value
        .parse::<B256>()
        .map_err(|_| invalid(option, value, "expected 0x and 64 hex digits"))
}

fn request_id_arg(value: &str) -> Result<RequestId, CliError> {
    value
        .parse::<RequestId>()
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// A chain error of a contract call, with the revert named when there is one.
fn contract_error(what: &str, e: ChainError) -> CliError {
    if let ChainError::Rpc { error, .. } = &e {
        let v = json!({"code": error.code, "message": error.message, "data": error.data});
        if let Some(revert) = decode_rpc_error(&v) {
            return CliError::Chain(ChainError::Reverted {
                call: what.to_string(),
                reason: revert.error.to_string(),
                data: revert.data,
            });
        }
    }
    CliError::Chain(e)
}

fn send_error(what: &str, e: SendError) -> CliError {
    match e {
        SendError::Chain(c) => contract_error(what, c),
        other => CliError::Transaction {
            call: what.to_string(),
            error: other,
        },
    }
}

/// Connects, verifies the chain and finds the Marketplace.
fn connect(ctx: &Context) -> Result<(BlockingClient, u64, Address), CliError> {
    let settings = ctx.chain_settings()?;
    let mut rpc = BlockingClient::connect_to(settings.provider.clone(), settings.timeout)?;
    let (chain_id, marketplace) = rpc.verify(None, settings.marketplace)?;
    Ok((rpc, chain_id, marketplace))
}

fn load_key(ctx: &Context, command: &str) -> Result<EthPrivateKey, CliError> {
    let settings = ctx.chain_settings()?;
    let path = settings.private_key.ok_or_else(|| {
        CliError::Usage(format!(
            "codex request {command} needs --eth-private-key FILE"
        ))
    })?;
    EthPrivateKey::load(&path).map_err(|e| CliError::Usage(e.to_string()))
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

fn view<T, E: std::fmt::Display>(
    rpc: &mut BlockingClient,
    marketplace: Address,
    what: &str,
    data: Vec<u8>,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<T, CliError> {
    let out = rpc
        .eth_call(marketplace, &data)
        .map_err(|e| contract_error(what, e))?;
    decode(&out).map_err(|e| {
        CliError::Chain(ChainError::BadResponse {
            method: what.to_string(),
            reason: e.to_string(),
        })
    })
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

impl Run for WithdrawArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let id = request_id_arg(&self.id)?;
        let key = load_key(ctx, "withdraw")?;
        let (mut rpc, chain_id, marketplace) = connect(ctx)?;
        let mut sender = Sender::new(key, chain_id);
        sender.confirmations = ctx.chain_settings()?.confirmations;
        let mined = sender
            .send(
                &mut rpc,
                marketplace,
                calls::withdraw_funds(id),
                GasCall::Other,
            )
            .map_err(|e| send_error("withdrawFunds", e))?;
        if self.json {
            let v = json!({"requestId": id, "transactionHash": mined.hash});
            writeln!(ctx.out(), "{v}")?;
        } else {
            writeln!(ctx.out(), "withdrew the funds of request {id}")?;
        }
        Ok(())
    }
}
