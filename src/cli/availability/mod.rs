//! `codex availability ...`: the storage offered for sale.
use argh::FromArgs;

use super::{CliError, Context, Run};

pub mod add;
pub mod list;
pub mod remove;
pub mod show;
pub mod update;

/// Manage availabilities: the storage offered for sale.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "availability")]
pub struct AvailabilityArgs {
    #[argh(subcommand)]
    pub command: AvailabilityCommand,
}

/// The availability subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum AvailabilityCommand {
    Add(add::AddArgs),
    List(list::ListArgs),
    Show(show::ShowArgs),
    Update(update::UpdateArgs),
    Remove(remove::RemoveArgs),
}

impl Run for AvailabilityArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        match self.command {
            AvailabilityCommand::Add(a) => a.run(ctx),
            AvailabilityCommand::List(a) => a.run(ctx),
            AvailabilityCommand::Show(a) => a.run(ctx),
            AvailabilityCommand::Update(a) => a.run(ctx),
            AvailabilityCommand::Remove(a) => a.run(ctx),
        }
    }
}

/// Prints one availability as a table block or a JSON line.
pub(crate) fn print(
    ctx: &mut Context,
    a: &crate::sales::ledger::Availability,
    reservations: usize,
    json: bool,
) -> Result<(), CliError> {
    use std::io::Write;
    if json {
        writeln!(ctx.out(), "{}", crate::api::json::availability(a))?;
    } else {
        crate::table::write_availability(ctx.out(), a, reservations)?;
    }
    Ok(())
}
