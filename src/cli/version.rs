//! `codex version`.
use std::io::Write;

use argh::FromArgs;

use super::{CliError, Context, Run};

/// Print codex's version and the database schema version it writes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl Run for VersionArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let version = env!("CARGO_PKG_VERSION");
        let schema = crate::store::SCHEMA_VERSION;
        if self.json {
            let v = serde_json::json!({ "version": version, "schemaVersion": schema });
            writeln!(ctx.out(), "{v}")?;
        } else {
            writeln!(ctx.out(), "codex {version} (database schema {schema})")?;
        }
        Ok(())
    }
}
