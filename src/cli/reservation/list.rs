//! `codex reservation list`.
use std::io::Write;

use argh::FromArgs;

use crate::api::json;
use crate::cli::{CliError, Context, Run};
use crate::sales::ledger::Ledger;
use crate::table;

/// List live reservations, ordered by id.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {
    /// only the reservations of this availability (id or unique prefix)
    #[argh(option, arg_name = "ID")]
    pub availability: Option<String>,
    /// print one JSON object per line
    #[argh(switch)]
    pub json: bool,
}

impl Run for ListArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let store = ctx.existing_store()?;
        let all = match &self.availability {
            Some(prefix) => {
                let id = store.resolve_availability(prefix)?;
                store.reservations_of(id)?
            }
            None => store.reservations()?,
        };
        if self.json {
            let out = ctx.out();
            for r in &all {
                writeln!(out, "{}", json::reservation(r))?;
            }
        } else {
            let mut rows = vec![table::reservation_header()];
            rows.extend(all.iter().map(table::reservation_row));
            table::write_table(ctx.out(), &rows)?;
        }
        Ok(())
    }
}
