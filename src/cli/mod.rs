//! The command line: one module per subcommand over the library.
use argh::FromArgs;

/// codex: a storage-provider node for the Codex marketplace.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Version(VersionArgs),
}

/// Print codex's version.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {}

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    let cli: Cli = argh::from_env();
    match cli.command {
        Command::Version(_) => {
            println!("codex {}", env!("CARGO_PKG_VERSION"));
            0
        }
    }
}
