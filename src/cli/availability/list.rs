//! `codex availability list`.
use std::io::Write;

use argh::FromArgs;

use crate::api::json;
use crate::cli::{CliError, Context, Run};
use crate::sales::ledger::Ledger;
use crate::table;

/// List all availabilities, ordered by id.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {
    /// print one JSON object per line
    #[argh(switch)]
    pub json: bool,
}

impl Run for ListArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let all = ctx.existing_store()?.availabilities()?;
        if self.json {
            let out = ctx.out();
            for a in &all {
                writeln!(out, "{}", json::availability(a))?;
            }
        } else {
            let mut rows = vec![table::availability_header()];
            rows.extend(all.iter().map(table::availability_row));
            table::write_table(ctx.out(), &rows)?;
        }
        Ok(())
    }
}
