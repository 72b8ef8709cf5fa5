//! The command line: `codex [global options] <subcommand>`, one module per subcommand
//! over the library.
//!
//! Adding a subcommand: write `src/cli/<name>.rs` with its argh struct (`#[argh(subcommand,
//! name = "...")]`) and `impl Run for ThatStruct`, then add one line to `commands!`
//! below. Groups (`availability`, `reservation`) are a directory with the same pattern.
//!
//! Exit codes ([`exit`]): 0 success, 1 runtime failure (the environment: files, database,
//! I/O), 2 usage or validation error, 3 the chain cannot be reached or verified (provider
//! down, wrong chain, no Marketplace contract at the address). Errors are one line on
//! stderr; data goes to stdout; a closed stdout pipe ends the command quietly.

use std::io::Write;

use argh::FromArgs;

use crate::config::{Config, ConfigError, GlobalArgs};
use crate::sales::ledger::Limits;
use crate::store::{Options, Store, StoreError};

pub mod availability;
pub mod events;
pub mod node_api;
pub mod queue;
pub mod request;
pub mod reservation;
pub mod run;
pub mod sale;
pub mod status;
pub mod version;

/// Exit codes, as documented in codex(1).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A runtime failure: the environment (files, database, I/O) is at fault.
    pub const FAILURE: i32 = 1;
    /// A usage or validation error: the input is at fault; nothing was changed.
    pub const USAGE: i32 = 2;
    /// The Ethereum node could not be reached (chain commands).
    pub const CHAIN: i32 = 3;
    /// The codex node (`codex run`) is not running or not answering on its API address
    /// (`codex queue show`, `codex sale`, `codex status`).
    pub const NODE: i32 = 4;
    /// `codex status`: the node answers but is not healthy (no chain connection, or no
    /// block for two minutes).
    pub const UNHEALTHY: i32 = 5;
}

/// A storage-provider node for the Codex decentralized storage marketplace.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// directory of the database codex.sqlite (default: $XDG_DATA_HOME/codex, else
    /// ~/.local/share/codex; env CODEX_DATA_DIR)
    #[argh(option, arg_name = "DIR")]
    pub data_dir: Option<String>,
    /// TOML file whose keys are long option names (env CODEX_CONFIG_FILE)
    #[argh(option, arg_name = "FILE")]
    pub config_file: Option<String>,
    /// most bytes all availabilities together may offer, e.g. 500GiB (default 20GiB; env
    /// CODEX_STORAGE_QUOTA)
    #[argh(option, arg_name = "SIZE")]
    pub storage_quota: Option<String>,
    /// LEVEL[;LEVEL:topic,topic...], levels trace|debug|info|notice|warn|error|fatal
    /// (default info; env CODEX_LOG_LEVEL)
    #[argh(option, arg_name = "LEVEL")]
    pub log_level: Option<String>,
    /// auto|colors|nocolors|json|none; logs go to stderr (default auto; env
    /// CODEX_LOG_FORMAT)
    #[argh(option, arg_name = "FORMAT")]
    pub log_format: Option<String>,
    /// the Ethereum node's WebSocket JSON-RPC URL, ws:// or wss:// (default
    /// ws://localhost:8545; env CODEX_ETH_PROVIDER)
    #[argh(option, arg_name = "URL")]
    pub eth_provider: Option<String>,
    /// file holding the hex private key that signs transactions; must be readable by its
    /// owner only (env CODEX_ETH_PRIVATE_KEY)
    #[argh(option, arg_name = "FILE")]
    pub eth_private_key: Option<String>,
    /// address of the Marketplace contract (default: the known deployment of the node's
    /// chain; env CODEX_MARKETPLACE_ADDRESS)
    #[argh(option, arg_name = "ADDRESS")]
    pub marketplace_address: Option<String>,
    /// how long to wait for the Ethereum node's answers, e.g. 30s (default 30s; env
    /// CODEX_ETH_TIMEOUT)
    #[argh(option, arg_name = "DURATION")]
    pub eth_timeout: Option<String>,
    /// blocks a transaction needs, its own included, before codex counts it as done (default
    /// 1; env CODEX_ETH_CONFIRMATIONS)
    #[argh(option, arg_name = "N")]
    pub eth_confirmations: Option<String>,
    /// PEM file of certificates to trust for wss:// in addition to the Mozilla roots (env
    /// CODEX_ETH_CA_FILE)
    #[argh(option, arg_name = "FILE")]
    pub eth_ca_file: Option<String>,
    #[argh(subcommand)]
    pub command: Command,
}

/// A subcommand: parsed arguments that can run.
pub trait Run {
    /// Runs the command; data goes to `ctx.out()`.
    fn run(self, ctx: &mut Context) -> Result<(), CliError>;
}

macro_rules! commands {
    ($($variant:ident($ty:ty),)*) => {
        /// The subcommands.
        #[derive(FromArgs, Debug)]
        #[argh(subcommand)]
        pub enum Command {
            $($variant($ty),)*
        }
        impl Run for Command {
            fn run(self, ctx: &mut Context) -> Result<(), CliError> {
                match self {
                    $(Command::$variant(a) => a.run(ctx),)*
                }
            }
        }
    };
}

commands! {
    Availability(availability::AvailabilityArgs),
    Events(events::EventsArgs),
    Request(request::RequestArgs),
    Reservation(reservation::ReservationArgs),
    Queue(queue::QueueArgs),
    Run(run::RunArgs),
    Sale(sale::SaleArgs),
    Status(status::StatusArgs),
    Version(version::VersionArgs),
}

/// Errors of CLI commands, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments that argh cannot see (conflicting switches, nothing to do).
    #[error("{0}")]
    Usage(String),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store or a ledger rule refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain could not be reached or verified (exit code 3), or it refused a call.
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    /// A transaction was refused, reverted or not confirmed in time.
    #[error("{call} failed: {error}")]
    Transaction {
        /// The contract function.
        call: String,
        /// What happened.
        error: crate::chain::sender::SendError,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The SIGINT/SIGTERM handlers of `--follow` could not be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    /// The node (`codex run`) stopped with an error.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// No codex node answers at the API address.
    #[error(
        "no codex node answers at {url} ({reason}); is `codex run` running, with this --api-port?"
    )]
    NodeDown {
        /// The API's base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{url} answered {status}: {body}")]
    NodeAnswer {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's text.
        body: String,
    },
    /// `codex status`: the node is not healthy (the reason was printed with the status).
    #[error("the node is not healthy: {0}")]
    Unhealthy(String),
}

impl From<crate::sales::ledger::LedgerError> for CliError {
    fn from(e: crate::sales::ledger::LedgerError) -> Self {
        CliError::Store(StoreError::Ledger(e))
    }
}

/// A configuration error's exit code: the environment's fault, or a usage error.
fn config_exit(e: &crate::config::ConfigError) -> i32 {
    if e.is_environment() {
        exit::FAILURE
    } else {
        exit::USAGE
    }
}

/// A store error's exit code: the user's input, or the environment's fault.
fn store_exit(e: &StoreError) -> i32 {
    if e.is_usage() {
        exit::USAGE
    } else {
        exit::FAILURE
    }
}

/// The command whose `--help` explains a usage error: `codex` and the subcommand words of
/// `args` (each word kept only if `codex <words so far> <word> --help` is a help screen, so
/// option values and ids drop out).
fn help_path(args: &[&str]) -> String {
    let mut path: Vec<&str> = Vec::new();
    for word in args.iter().filter(|a| !a.starts_with('-')) {
        let mut probe = path.clone();
        probe.extend([*word, "--help"]);
        if let Err(e) = <Cli as FromArgs>::from_args(&["codex"], &probe) {
            if e.status.is_ok() {
                path.push(word);
            }
        }
    }
    std::iter::once("codex")
        .chain(path)
        .collect::<Vec<_>>()
        .join(" ")
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Config(e) => config_exit(e),
            CliError::Store(e) => store_exit(e),
            CliError::Chain(e) if e.is_unreachable() => exit::CHAIN,
            CliError::Chain(crate::chain::ChainError::Endpoint(_)) => exit::USAGE,
            CliError::Chain(_) => exit::FAILURE,
            CliError::Transaction { .. } => exit::FAILURE,
            CliError::Output(_) | CliError::Signals(_) => exit::FAILURE,
            CliError::Node(crate::node::NodeError::Chain(e)) if e.is_unreachable() => exit::CHAIN,
            CliError::Node(crate::node::NodeError::Store(e)) => store_exit(e),
            CliError::Node(_) => exit::FAILURE,
            CliError::NodeDown { .. } => exit::NODE,
            CliError::NodeAnswer { status, .. } if (400..500).contains(status) => exit::USAGE,
            CliError::NodeAnswer { .. } => exit::FAILURE,
            CliError::Unhealthy(_) => exit::UNHEALTHY,
        }
    }

    /// A closed stdout pipe (`codex ... | head -1`): not an error worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// What a running command has: the validated configuration, the store (opened on first
/// use) and buffered stdout.
pub struct Context {
    /// The validated global configuration.
    pub config: Config,
    /// The chain options as given (resolved by [`Context::chain_settings`] in chain commands).
    pub chain_args: crate::chain::settings::ChainArgs,
    store: Option<Store>,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Context {
    /// A context over a validated configuration.
    pub fn new(config: Config) -> Context {
        Context {
            config,
            chain_args: Default::default(),
            store: None,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    /// The store, created if needed, opened (and migrated) on first use: for commands
    /// that add.
    pub fn store(&mut self) -> Result<&mut Store, CliError> {
        self.opened(true)
    }

    /// The store for commands that only read, or change only what exists: the database
    /// when it exists, else an empty one in memory, so that no files are created.
    pub fn existing_store(&mut self) -> Result<&mut Store, CliError> {
        self.opened(false)
    }

    /// Opens the store on first use; `create` replaces an empty in-memory one with the
    /// database file, made if needed.
    fn opened(&mut self, create: bool) -> Result<&mut Store, CliError> {
        if let Some(s) = self.store.take().filter(|s| !(create && s.is_in_memory())) {
            return Ok(self.store.insert(s));
        }
        let (dir, options) = (&self.config.data_dir, Options::cli());
        let s = if create {
            Store::open(dir, options)?
        } else {
            Store::open_existing(dir, options)?
        };
        if s.is_in_memory() {
            log::debug!("no database at {}: nothing stored yet", s.path().display());
        } else {
            log::debug!("opened {}", s.path().display());
        }
        Ok(self.store.insert(s))
    }

    /// The quota and the wall clock, for ledger operations.
    pub fn limits(&self) -> Limits {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Limits {
            quota: self.config.storage_quota,
            now,
        }
    }

    /// The validated chain options.
    pub fn chain_settings(&self) -> Result<crate::chain::settings::ChainSettings, CliError> {
        Ok(crate::chain::settings::ChainSettings::resolve(
            &self.chain_args,
            &self.config.sources,
        )?)
    }

    /// Standard output (buffered; flushed when the command ends).
    pub fn out(&mut self) -> &mut impl Write {
        &mut self.out
    }
}

fn print_err(msg: &str) {
    let _ = writeln!(std::io::stderr(), "codex: {msg}");
}

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                print_err(&format!("argument {a:?} is not valid UTF-8"));
                return exit::USAGE;
            }
        }
    }
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    run_with(&args, env)
}

/// Runs codex with these arguments (without the program name) and environment.
pub fn run_with<I>(args: &[String], env: I) -> i32
where
    I: IntoIterator<Item = (String, String)>,
{
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli = match <Cli as FromArgs>::from_args(&["codex"], &strs) {
        Ok(c) => c,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(early.output.as_bytes());
                    let _ = out.flush();
                    exit::OK
                }
                Err(()) => {
                    let msg = early
                        .output
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    print_err(&format!("{msg} (see {} --help)", help_path(&strs)));
                    exit::USAGE
                }
            };
        }
    };
    let global = GlobalArgs {
        data_dir: cli.data_dir.clone(),
        config_file: cli.config_file.clone(),
        storage_quota: cli.storage_quota.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format.clone(),
    };
    let config = match Config::resolve(&global, env) {
        Ok(c) => c,
        Err(e) => {
            print_err(&e.to_string());
            return config_exit(&e);
        }
    };
    crate::logging::init(&config.log_level, config.log_format);
    let mut ctx = Context::new(config);
    ctx.chain_args = crate::chain::settings::ChainArgs {
        eth_provider: cli.eth_provider.clone(),
        eth_private_key: cli.eth_private_key.clone(),
        marketplace_address: cli.marketplace_address.clone(),
        eth_timeout: cli.eth_timeout.clone(),
        eth_confirmations: cli.eth_confirmations.clone(),
        eth_ca_file: cli.eth_ca_file.clone(),
    };
    let result = cli
        .command
        .run(&mut ctx)
        .and_then(|()| ctx.out.flush().map_err(CliError::from));
    match result {
        Ok(()) => exit::OK,
        Err(e) if e.is_broken_pipe() => exit::OK,
        Err(e) => {
            // Output already written stays; the error explains why it stopped.
            let _ = ctx.out.flush();
            let json_logs = ctx.config.log_format == crate::logging::LogFormat::Json;
            if json_logs && log::log_enabled!(target: "codex", log::Level::Error) {
                // Whoever reads JSON lines from stderr gets the error as one too.
                log::error!(target: "codex", "{e}");
            } else {
                print_err(&e.to_string());
            }
            e.exit_code()
        }
    }
}
