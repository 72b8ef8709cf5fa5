//! `codex availability remove`.
use std::io::Write;

use argh::FromArgs;

use crate::api::json;
use crate::cli::{CliError, Context, Run};
use crate::sales::ledger::Ledger;

/// Remove an availability that no reservation holds, and print its id.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct RemoveArgs {
    /// the availability's id or a unique prefix of at least 4 hex digits
    #[argh(positional, arg_name = "ID")]
    pub id: String,
    /// print the removed availability as one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl Run for RemoveArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let store = ctx.existing_store()?;
        let id = store.resolve_availability(&self.id)?;
        let a = store.remove_availability(id)?;
        log::debug!("removed availability {id}");
        if self.json {
            writeln!(ctx.out(), "{}", json::availability(&a))?;
        } else {
            writeln!(ctx.out(), "{}", a.id)?;
        }
        Ok(())
    }
}
