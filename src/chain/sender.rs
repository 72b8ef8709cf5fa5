//! Sending signed transactions over a [`BlockingClient`], for one-shot commands.
//!
//! For each transaction: the nonce comes from a [`NonceTracker`] synced with
//! `eth_getTransactionCount(addr, "pending")`; the gas limit is `eth_estimateGas` with the
//! reference's headroom; the fees are EIP-1559 fees from `eth_feeHistory` (the next block's
//! base fee) and `eth_maxPriorityFeePerGas`; the raw transaction goes out with
//! `eth_sendRawTransaction`; "nonce too low" resyncs and retries; then the receipt is awaited
//! with the configured number of confirmations. The waits run the client's mio loop; nothing
//! sleeps.
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, B256, U256};
use serde_json::{json, Value};

use super::client::{quantity_result, BlockingClient};
use super::key::EthPrivateKey;
use super::tx::{
    classify_send_error, fees, gas_limit_with_headroom, Eip1559Tx, GasCall, NonceTracker,
    SendRejection, TxError,
};
use super::ChainError;

/// The tip used when the node suggests none: 1 gwei.
pub const DEFAULT_PRIORITY_FEE: u128 = 1_000_000_000;

/// How often a pending receipt is looked for.
const RECEIPT_POLL: Duration = Duration::from_millis(100);

/// Why a transaction did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The chain could not be reached, or a call failed (gas estimation reverts land here,
    /// with their revert data).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] TxError),
    /// The node refused the transaction.
    #[error("the node refused the transaction: {0}")]
    Rejected(String),
    /// The transaction was mined but reverted.
    #[error("transaction {0} reverted")]
    Reverted(B256),
    /// No receipt (with enough confirmations) before the deadline.
    #[error("transaction {hash} was not confirmed within {secs} s")]
    NotConfirmed {
        /// The transaction hash.
        hash: B256,
        /// How long codex waited.
        secs: u64,
    },
}

/// A mined transaction.
#[derive(Debug, Clone)]
pub struct Mined {
    /// The transaction hash.
    pub hash: B256,
    /// The block it was mined in.
    pub block_number: u64,
    /// The receipt as the node returned it.
    pub receipt: Value,
}

/// Signs and sends transactions from one key.
pub struct Sender {
    key: EthPrivateKey,
    chain_id: u64,
    nonces: NonceTracker,
    /// Confirmations to wait for (1 = mined).
    pub confirmations: u64,
    /// How long to wait for confirmations.
    pub confirm_timeout: Duration,
}

impl Sender {
    /// A sender for `key` on chain `chain_id`.
    pub fn new(key: EthPrivateKey, chain_id: u64) -> Sender {
        Sender {
            key,
            chain_id,
            nonces: NonceTracker::new(),
            confirmations: 1,
            confirm_timeout: Duration::from_secs(120),
        }
    }

    /// The sender's address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    fn sync_nonce(&mut self, rpc: &mut BlockingClient) -> Result<(), ChainError> {
        let v = rpc.call(
            "eth_getTransactionCount",
            json!([self.key.address(), "pending"]),
        )?;
        self.nonces
            .sync(quantity_result("eth_getTransactionCount", &v)?);
        Ok(())
    }

    fn fees(&self, rpc: &mut BlockingClient) -> Result<(u128, u128), ChainError> {
        let history = rpc.call("eth_feeHistory", json!(["0x1", "latest", []]))?;
        let base = history["baseFeePerGas"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<U256>().ok())
            .ok_or_else(|| ChainError::BadResponse {
                method: "eth_feeHistory".into(),
                reason: format!("no baseFeePerGas in {history}"),
            })?;
        let base = u128::try_from(base).unwrap_or(u128::MAX);
        let tip = rpc
            .call("eth_maxPriorityFeePerGas", json!([]))
            .ok()
            .and_then(|v| v.as_str().and_then(|s| s.parse::<U256>().ok()))
            .map(|t| u128::try_from(t).unwrap_or(u128::MAX));
        Ok(fees(base, tip, DEFAULT_PRIORITY_FEE))
    }

    /// Estimates, signs, sends and waits for the receipt of a call to `to`.
    pub fn send(
        &mut self,
        rpc: &mut BlockingClient,
        to: Address,
        data: Vec<u8>,
        call: GasCall,
    ) -> Result<Mined, SendError> {
        let data = Bytes::from(data);
        let estimate = rpc.call(
            "eth_estimateGas",
            json!([{"from": self.key.address(), "to": to, "data": data}]),
        )?;
        let gas_limit =
            gas_limit_with_headroom(call, quantity_result("eth_estimateGas", &estimate)?);
        let (max_fee_per_gas, max_priority_fee_per_gas) = self.fees(rpc)?;
        let mut attempts = 0;
        let hash = loop {
            attempts += 1;
            if self.nonces.needs_sync() {
                self.sync_nonce(rpc)?;
            }
            let Some(nonce) = self.nonces.next_nonce() else {
                return Err(SendError::Rejected("no nonce available".into()));
            };
            let signed = Eip1559Tx {
                chain_id: self.chain_id,
                nonce,
                max_priority_fee_per_gas,
                max_fee_per_gas,
                gas_limit,
                to,
                value: U256::ZERO,
                data: data.clone(),
            }
            .sign(&self.key)?;
            match rpc.call("eth_sendRawTransaction", json!([signed.raw])) {
                Ok(_) => break signed.hash,
                Err(ChainError::Rpc { error, method }) => {
                    match classify_send_error(&error.message) {
                        SendRejection::AlreadyKnown => break signed.hash,
                        SendRejection::NonceTooLow if attempts < 3 => {
                            log::info!("nonce {nonce} already used; resyncing");
                            self.nonces.on_nonce_too_low();
                        }
                        SendRejection::Other if error.revert_data().is_some() => {
                            self.nonces.release(nonce);
                            return Err(ChainError::Rpc { method, error }.into());
                        }
                        _ => {
                            self.nonces.release(nonce);
                            return Err(SendError::Rejected(error.message));
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        log::info!("sent transaction {hash}");
        self.wait(rpc, hash)
    }

    /// Waits for the receipt of `hash` and the configured confirmations.
    pub fn wait(&self, rpc: &mut BlockingClient, hash: B256) -> Result<Mined, SendError> {
        let deadline = Instant::now() + self.confirm_timeout;
        loop {
            let receipt = rpc.call("eth_getTransactionReceipt", json!([hash]))?;
            if !receipt.is_null() {
                let block = receipt["blockNumber"]
                    .as_str()
                    .map(super::rpc::parse_quantity)
                    .and_then(Result::ok);
                if let Some(block_number) = block {
                    if receipt["status"] == "0x0" {
                        return Err(SendError::Reverted(hash));
                    }
                    let head = rpc.block_number()?;
                    if head + 1 >= block_number + self.confirmations {
                        return Ok(Mined {
                            hash,
                            block_number,
                            receipt,
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(SendError::NotConfirmed {
                    hash,
                    secs: self.confirm_timeout.as_secs(),
                });
            }
            rpc.pause(RECEIPT_POLL)?;
        }
    }
}
