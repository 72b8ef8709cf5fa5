//! `codex reservation ...`: bytes and collateral committed to slots.
use argh::FromArgs;

use super::{CliError, Context, Run};

pub mod list;

/// Inspect reservations: bytes and collateral committed to slots.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reservation")]
pub struct ReservationArgs {
    #[argh(subcommand)]
    pub command: ReservationCommand,
}

/// The reservation subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ReservationCommand {
    List(list::ListArgs),
}

impl Run for ReservationArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        match self.command {
            ReservationCommand::List(a) => a.run(ctx),
        }
    }
}
