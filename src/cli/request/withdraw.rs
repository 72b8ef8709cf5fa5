//! `codex request withdraw`: the funds of an ended request back to its client.
use std::io::Write;

use argh::FromArgs;
use serde_json::json;

use super::{connect, load_key, request_id_arg, send_error};
use crate::chain::sender::Sender;
use crate::chain::tx::GasCall;
use crate::cli::{CliError, Context, Run};
use crate::market::calls;

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
