//! `codex availability show`.
use argh::FromArgs;

use crate::cli::{CliError, Context, Run};
use crate::sales::ledger::Ledger;

/// Show one availability.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct ShowArgs {
    /// the availability's id or a unique prefix of at least 4 hex digits
    #[argh(positional, arg_name = "ID")]
    pub id: String,
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl Run for ShowArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let store = ctx.existing_store()?;
        let id = store.resolve_availability(&self.id)?;
        let a = store.availability(id)?;
        let n = store.reservations_of(id)?.len();
        super::print(ctx, &a, n, self.json)
    }
}
