//! Errors of the chain layer.
use alloy_primitives::{Address, Bytes};

use super::rpc::RpcError;
use super::ws::{EndpointError, WsError};

/// What can go wrong talking to the chain.
///
/// Three groups: the provider cannot be reached or verified ([`ChainError::is_unreachable`],
/// exit code 3 in the CLI), the node answered with an error object ([`ChainError::Rpc`], which
/// keeps revert data for the Marketplace error decoder), and our own configuration
/// ([`ChainError::Endpoint`]).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The `--eth-provider` value is not a usable WebSocket URL.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The provider could not be reached (refused, unreachable, handshake refused).
    #[error("cannot reach the Ethereum provider at {endpoint}: {reason}")]
    Unreachable {
        /// The provider URL.
        endpoint: String,
        /// What the connection attempt reported.
        reason: String,
    },
    /// The TLS handshake with the provider failed (certificate refused, bad server name): a
    /// configuration problem that trying again does not cure.
    #[error("cannot reach the Ethereum provider at {endpoint}: TLS failed: {reason}")]
    Tls {
        /// The provider URL.
        endpoint: String,
        /// What TLS reported.
        reason: String,
    },
    /// The connection dropped before the answer arrived.
    #[error("the connection to the Ethereum provider was lost: {0}")]
    Disconnected(String),
    /// The node did not answer in time.
    #[error("the Ethereum provider did not answer {method} in time")]
    Timeout {
        /// The JSON-RPC method.
        method: String,
    },
    /// The node answered with an error object. Revert data, if any, is in `error.data`.
    #[error("{method} failed: {error}")]
    Rpc {
        /// The JSON-RPC method.
        method: String,
        /// The error object.
        error: RpcError,
    },
    /// A contract call or gas estimate reverted; `reason` is the decoded error name.
    #[error("{call} reverted: {reason}")]
    Reverted {
        /// The contract function.
        call: String,
        /// The decoded revert (a Marketplace custom error, `Error(string)`, ...).
        reason: String,
        /// The raw revert data.
        data: Bytes,
    },
    /// The node answered with something that is not what the method returns.
    #[error("unexpected answer to {method}: {reason}")]
    BadResponse {
        /// The JSON-RPC method.
        method: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node is on another chain than configured.
    #[error("the Ethereum provider is on chain {actual}, expected chain {expected}")]
    WrongChain {
        /// The configured chain id.
        expected: u64,
        /// The node's chain id.
        actual: u64,
    },
    /// No Marketplace address was configured and the node's chain has no known deployment.
    #[error(
        "the Ethereum provider is on chain {chain_id}, which has no known Marketplace; \
         give --marketplace-address"
    )]
    UnknownChain {
        /// The node's chain id.
        chain_id: u64,
    },
    /// There is no contract code at the Marketplace address.
    #[error("no contract at the marketplace address {address} on this chain")]
    NoContract {
        /// The configured Marketplace address.
        address: Address,
    },
}

impl ChainError {
    /// Whether this means "cannot reach or verify the chain" (CLI exit code 3).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ChainError::Unreachable { .. }
                | ChainError::Tls { .. }
                | ChainError::Disconnected(_)
                | ChainError::Timeout { .. }
                | ChainError::WrongChain { .. }
                | ChainError::UnknownChain { .. }
                | ChainError::NoContract { .. }
        )
    }

    /// The revert data of a failed call or gas estimate, for the Marketplace error decoder.
    pub fn revert_data(&self) -> Option<Bytes> {
        match self {
            ChainError::Rpc { error, .. } => error.revert_data(),
            _ => None,
        }
    }

    pub(crate) fn from_ws(endpoint: &str, e: WsError) -> ChainError {
        match e {
            WsError::Lost(reason) => ChainError::Disconnected(reason),
            WsError::Closed => ChainError::Disconnected("closed by the node".into()),
            WsError::Tls(reason) => ChainError::Tls {
                endpoint: endpoint.to_string(),
                reason,
            },
            other => ChainError::Unreachable {
                endpoint: endpoint.to_string(),
                reason: other.to_string(),
            },
        }
    }
}
