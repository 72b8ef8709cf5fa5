//! `codex request create|show|withdraw`: the client side of storage requests, one file per
//! action; the chain helpers they share are here.

use alloy_primitives::{Address, B256};
use argh::FromArgs;
use serde_json::json;

use super::{CliError, Context, Run};

mod create;
mod show;
mod withdraw;

use crate::chain::client::BlockingClient;
use crate::chain::key::EthPrivateKey;
use crate::chain::sender::SendError;
use crate::chain::ChainError;
use crate::market::errors::decode_rpc_error;
use crate::market::RequestId;
pub use create::CreateArgs;
pub use show::ShowArgs;
pub use withdraw::WithdrawArgs;

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
