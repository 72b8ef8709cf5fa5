//! `codex run`: the host node in the foreground (see [`crate::node`]).
//!
//! Every option is validated before anything is opened or connected: a bad value is a usage
//! error (exit 2) that names it, and leaves the data directory untouched.
use std::sync::Arc;

use argh::FromArgs;

use super::{CliError, Context, Run};
use crate::chain::key::EthPrivateKey;
use crate::node::data::DataSource;
use crate::node::{self, NodeConfig};
use crate::validator::{Groups, ValidatorOptions};

/// Run the host: sell storage from the availabilities, fill and prove slots, collect
/// payouts; with --validator, also mark the proofs other hosts miss. Stops cleanly on
/// SIGINT or SIGTERM.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// most slots waiting in the queue (default 128; env CODEX_QUEUE_SIZE)
    #[argh(option, arg_name = "N")]
    pub queue_size: Option<String>,
    /// most slots prepared at once: read, reserved, downloaded and filled (default 3; env
    /// CODEX_MAX_WORKERS)
    #[argh(option, arg_name = "N")]
    pub max_workers: Option<String>,
    /// where slot data is downloaded from: a URL with {cid} and optionally {slot}; without
    /// {slot} the slot's byte range is asked for; required unless --validator, whose node
    /// without it sells nothing (env CODEX_DATA_SOURCE)
    #[argh(option, arg_name = "URL_TEMPLATE")]
    pub data_source: Option<String>,
    /// make every Nth proof fail on purpose, for testing (default 0: never; env
    /// CODEX_SIMULATE_PROOF_FAILURES)
    #[argh(option, arg_name = "N")]
    pub simulate_proof_failures: Option<String>,
    /// address that receives the payouts (default: the host's own; env
    /// CODEX_REWARD_RECIPIENT)
    #[argh(option, arg_name = "ADDRESS")]
    pub reward_recipient: Option<String>,
    /// first block to read Marketplace events from on a first start (default: the block
    /// from which every still open request is found; env CODEX_FROM_BLOCK)
    #[argh(option, arg_name = "N")]
    pub from_block: Option<String>,
    /// how long a slot download may receive nothing before the attempt fails; a failed
    /// attempt is tried again three times (default 30s; env CODEX_DOWNLOAD_TIMEOUT)
    #[argh(option, arg_name = "DURATION")]
    pub download_timeout: Option<String>,
    /// address the REST API listens on (default 127.0.0.1; env CODEX_API_BINDADDR)
    #[argh(option, arg_name = "IP")]
    pub api_bindaddr: Option<String>,
    /// port of the REST API (default 8080; 0 picks a free one; env CODEX_API_PORT)
    #[argh(option, arg_name = "PORT")]
    pub api_port: Option<String>,
    /// origin allowed to call the REST API from a browser: CORS headers are sent for it
    /// (default none; env CODEX_API_CORS_ORIGIN)
    #[argh(option, arg_name = "ORIGIN")]
    pub api_cors_origin: Option<String>,
    /// serve Prometheus metrics at /metrics (default off; env CODEX_METRICS=true)
    #[argh(switch)]
    pub metrics: bool,
    /// address the metrics listen on (default 127.0.0.1; env CODEX_METRICS_ADDRESS)
    #[argh(option, arg_name = "IP")]
    pub metrics_address: Option<String>,
    /// port of the metrics (default 8008; env CODEX_METRICS_PORT)
    #[argh(option, arg_name = "PORT")]
    pub metrics_port: Option<String>,
    /// also be a validator: after each proof period, mark the proofs hosts missed and
    /// collect the reward (default off; env CODEX_VALIDATOR=true)
    #[argh(switch)]
    pub validator: bool,
    /// most slots the validator watches at once, 0 for no limit (default 1000; env
    /// CODEX_VALIDATOR_MAX_SLOTS)
    #[argh(option, arg_name = "N")]
    pub validator_max_slots: Option<String>,
    /// split the slot ids among N validators, 2 to 65535 (default: one validator watches
    /// every slot; env CODEX_VALIDATOR_GROUPS)
    #[argh(option, arg_name = "N")]
    pub validator_groups: Option<String>,
    /// the group of --validator-groups this validator watches, from 0 (default 0; env
    /// CODEX_VALIDATOR_GROUP_INDEX)
    #[argh(option, arg_name = "I")]
    pub validator_group_index: Option<String>,
}

/// Parses an IP address option.
pub(crate) fn ip_arg(v: &str) -> Result<std::net::IpAddr, String> {
    v.parse()
        .map_err(|_| "not an IP address (e.g. 127.0.0.1 or ::1)".to_string())
}

/// Parses a port option.
pub(crate) fn port_arg(v: &str) -> Result<u16, String> {
    v.parse()
        .map_err(|_| "not a port number (0-65535)".to_string())
}

/// Parses a true/false option from the environment or a config file.
fn bool_arg(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("must be true or false".to_string()),
    }
}

fn whole(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| "not a whole number".to_string())
}

/// The validator's options, validated: None when the validator is off. A validator option
/// without `--validator` is refused rather than ignored.
fn validator_options(
    sources: &crate::config::Sources,
    args: &RunArgs,
) -> Result<Option<ValidatorOptions>, CliError> {
    let on = args.validator || sources.parse("validator", None, || false, bool_arg)?;
    let max_slots = sources.parse(
        "validator-max-slots",
        args.validator_max_slots.as_deref(),
        || crate::validator::DEFAULT_MAX_SLOTS as u64,
        whole,
    )?;
    let groups = sources.parse(
        "validator-groups",
        args.validator_groups.as_deref(),
        || None,
        |v| {
            let n = whole(v)?;
            Groups::new(n, 0)
                .map(|_| Some(n))
                .map_err(|e| e.to_string())
        },
    )?;
    let index_key = "validator-group-index";
    let index = sources.parse(
        index_key,
        args.validator_group_index.as_deref(),
        || 0,
        whole,
    )?;
    let groups = match groups {
        Some(n) => Some(Groups::new(n, index).map_err(|e| {
            let (value, origin) = sources
                .get(index_key, args.validator_group_index.as_deref())
                .unwrap_or_else(|| (index.to_string(), crate::config::Origin::Default));
            crate::config::ConfigError::Invalid {
                key: index_key,
                value,
                origin,
                message: e.to_string(),
            }
        })?),
        None if index != 0 => {
            return Err(CliError::Usage(format!(
                "--{index_key} {index} needs --validator-groups (the number of groups it is one of)"
            )))
        }
        None => None,
    };
    if !on {
        let given = [
            ("validator-max-slots", args.validator_max_slots.as_deref()),
            ("validator-groups", args.validator_groups.as_deref()),
            (index_key, args.validator_group_index.as_deref()),
        ]
        .into_iter()
        .find(|(k, cli)| sources.get(k, *cli).is_some());
        if let Some((k, _)) = given {
            return Err(CliError::Usage(format!(
                "--{k} is an option of the validator: add --validator (or CODEX_VALIDATOR=true)"
            )));
        }
        return Ok(None);
    }
    Ok(Some(ValidatorOptions {
        max_slots: usize::try_from(max_slots).unwrap_or(usize::MAX),
        groups,
    }))
}

fn positive(what: &str) -> impl Fn(&str) -> Result<usize, String> + '_ {
    move |v| match v.parse::<usize>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number".into()),
    }
}

impl Run for RunArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let sources = &ctx.config.sources;
        let queue_size = sources.parse(
            "queue-size",
            self.queue_size.as_deref(),
            || crate::sales::queue::DEFAULT_CAPACITY,
            positive("the queue size"),
        )?;
        let max_workers = sources.parse(
            "max-workers",
            self.max_workers.as_deref(),
            || crate::sales::queue::DEFAULT_MAX_WORKERS,
            positive("the worker budget"),
        )?;
        let data_source = sources.parse(
            "data-source",
            self.data_source.as_deref(),
            || None,
            |v| DataSource::parse(v).map(Some).map_err(|e| e.to_string()),
        )?;
        let validator = validator_options(sources, &self)?;
        if data_source.is_none() && validator.is_none() {
            return Err(CliError::Usage(
                "codex run needs --data-source URL_TEMPLATE (where slot data is downloaded from, e.g. http://host/data/{cid}), or --validator for a node that only validates".into(),
            ));
        }
        let simulate_proof_failures = sources.parse(
            "simulate-proof-failures",
            self.simulate_proof_failures.as_deref(),
            || 0u32,
            |v| v.parse::<u32>().map_err(|_| "not a whole number".into()),
        )?;
        let reward_recipient = sources.parse(
            "reward-recipient",
            self.reward_recipient.as_deref(),
            || None,
            |v| {
                v.parse::<alloy_primitives::Address>()
                    .map(Some)
                    .map_err(|_| "not a 20-byte 0x-hex address".to_string())
            },
        )?;
        let from_block = sources.parse(
            "from-block",
            self.from_block.as_deref(),
            || None,
            |v| {
                v.parse::<u64>()
                    .map(Some)
                    .map_err(|_| "not a block number".into())
            },
        )?;
        let download_timeout = sources.parse(
            "download-timeout",
            self.download_timeout.as_deref(),
            || std::time::Duration::from_secs(30),
            |v| match crate::units::duration_arg(v)? {
                0 => Err("must be at least 1 second".into()),
                secs => Ok(std::time::Duration::from_secs(secs)),
            },
        )?;
        let api_ip = sources.parse(
            "api-bindaddr",
            self.api_bindaddr.as_deref(),
            || std::net::IpAddr::from([127, 0, 0, 1]),
            ip_arg,
        )?;
        let api_port = sources.parse("api-port", self.api_port.as_deref(), || 8080, port_arg)?;
        let cors_origin = sources.parse(
            "api-cors-origin",
            self.api_cors_origin.as_deref(),
            || None,
            |v| match v.trim() {
                "" => Err("must not be empty".to_string()),
                o if o.contains(['\r', '\n']) => Err("must be one line".to_string()),
                o => Ok(Some(o.to_string())),
            },
        )?;
        let metrics_on = self.metrics || sources.parse("metrics", None, || false, bool_arg)?;
        let metrics_ip = sources.parse(
            "metrics-address",
            self.metrics_address.as_deref(),
            || std::net::IpAddr::from([127, 0, 0, 1]),
            ip_arg,
        )?;
        let metrics_port = sources.parse(
            "metrics-port",
            self.metrics_port.as_deref(),
            || 8008,
            port_arg,
        )?;
        let settings = ctx.chain_settings()?;
        let key_path = settings.private_key.clone().ok_or_else(|| {
            CliError::Usage(
                "codex run needs --eth-private-key FILE (the key that signs the host's transactions)".into(),
            )
        })?;
        let key = EthPrivateKey::load(&key_path).map_err(|e| CliError::Usage(e.to_string()))?;
        let data_dir = &ctx.config.data_dir;
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(CliError::Usage(format!(
                "--data-dir {} is not a directory",
                data_dir.display()
            )));
        }
        node::run(NodeConfig {
            data_dir: data_dir.clone(),
            provider: settings.provider,
            timeout: settings.timeout,
            confirmations: settings.confirmations,
            marketplace: settings.marketplace,
            key,
            quota: ctx.config.storage_quota,
            queue_size,
            max_workers,
            data_source: data_source.map(Arc::new),
            validator,
            simulate_proof_failures,
            reward_recipient,
            from_block,
            download_timeout,
            api: node::ApiConfig {
                bind: std::net::SocketAddr::new(api_ip, api_port),
                cors_origin,
            },
            metrics: metrics_on.then(|| std::net::SocketAddr::new(metrics_ip, metrics_port)),
        })?;
        Ok(())
    }
}
