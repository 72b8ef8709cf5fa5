//! The chain options every chain command shares, resolved like every other option
//! (command line > `CODEX_*` environment > config file > default).
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::{address, Address};

use super::ws::Endpoint;
use crate::config::{ConfigError, Origin, Sources};

/// The default provider.
pub const DEFAULT_PROVIDER: &str = "ws://localhost:8545";

/// Confirmations waited for by default: the transaction is in a block.
pub const DEFAULT_CONFIRMATIONS: u64 = 1;

/// The config-file keys of the chain options.
pub const KEYS: &[&str] = &[
    "eth-provider",
    "eth-private-key",
    "marketplace-address",
    "eth-timeout",
    "eth-confirmations",
    "eth-ca-file",
];

/// The Marketplace of a known deployment, used when `--marketplace-address` is not given.
/// Chain 31337 is the local dev chain of `fixtures/chain` (TestMarketplace, nonce 24 of the
/// first dev account).
pub fn known_marketplace(chain_id: u64) -> Option<Address> {
    match chain_id {
        31337 => Some(address!("a85233C63b9Ee964Add6F2cffe00Fd84eb32338f")),
        _ => None,
    }
}

/// The chain options as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ChainArgs {
    /// `--eth-provider`
    pub eth_provider: Option<String>,
    /// `--eth-private-key`
    pub eth_private_key: Option<String>,
    /// `--marketplace-address`
    pub marketplace_address: Option<String>,
    /// `--eth-timeout`
    pub eth_timeout: Option<String>,
    /// `--eth-confirmations`
    pub eth_confirmations: Option<String>,
    /// `--eth-ca-file`
    pub eth_ca_file: Option<String>,
}

/// The validated chain options.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// The provider.
    pub provider: Endpoint,
    /// The key file for transactions.
    pub private_key: Option<PathBuf>,
    /// The Marketplace, when given; else [`known_marketplace`] of the node's chain.
    pub marketplace: Option<Address>,
    /// How long a call may wait for its answer; also the keep-alive period of followers.
    pub timeout: Duration,
    /// Blocks a transaction needs (its own included) before it counts as done; at least 1.
    pub confirmations: u64,
}

impl ChainSettings {
    /// Applies the precedence rules and validates.
    pub fn resolve(args: &ChainArgs, sources: &Sources) -> Result<ChainSettings, ConfigError> {
        let (value, origin) = sources
            .get("eth-provider", args.eth_provider.as_deref())
            .unwrap_or_else(|| (DEFAULT_PROVIDER.to_string(), Origin::Default));
        let provider = Endpoint::parse(&value).map_err(|e| ConfigError::Invalid {
            key: "eth-provider",
            value: value.clone(),
            origin,
            message: e.reason.to_string(),
        })?;
        let ca_certs =
            sources.parse("eth-ca-file", args.eth_ca_file.as_deref(), Vec::new, |v| {
                if v.is_empty() {
                    return Err("must not be empty".into());
                }
                super::ws::load_ca_file(std::path::Path::new(v)).map_err(|e| e.to_string())
            })?;
        let provider = provider.with_ca_certs(ca_certs);
        let private_key = sources.parse(
            "eth-private-key",
            args.eth_private_key.as_deref(),
            || None,
            |v| {
                if v.is_empty() {
                    Err("must not be empty".into())
                } else {
                    Ok(Some(PathBuf::from(v)))
                }
            },
        )?;
        let marketplace = sources.parse(
            "marketplace-address",
            args.marketplace_address.as_deref(),
            || None,
            |v| {
                v.parse::<Address>()
                    .map(Some)
                    .map_err(|_| "not a 20-byte 0x-hex address".to_string())
            },
        )?;
        let timeout = sources.parse(
            "eth-timeout",
            args.eth_timeout.as_deref(),
            || Duration::from_secs(30),
            |v| {
                let secs = crate::units::duration_arg(v)?;
                if secs == 0 {
                    return Err("must be at least 1 second".into());
                }
                Ok(Duration::from_secs(secs))
            },
        )?;
        let confirmations = sources.parse(
            "eth-confirmations",
            args.eth_confirmations.as_deref(),
            || DEFAULT_CONFIRMATIONS,
            |v| match v.parse::<u64>() {
                Ok(0) => {
                    Err("must be at least 1 (1 = the block that includes the transaction)".into())
                }
                Ok(n) => Ok(n),
                Err(_) => Err("not a whole number of blocks".into()),
            },
        )?;
        Ok(ChainSettings {
            provider,
            private_key,
            marketplace,
            timeout,
            confirmations,
        })
    }
}
