//! Sending signed transactions over a [`BlockingClient`], for one-shot commands.
//!
//! The rules (nonce from a tracker synced with `eth_getTransactionCount(addr, "pending")`,
//! `eth_estimateGas` with the reference's headroom, EIP-1559 fees from the next block's
//! base fee, "nonce too low" resyncs, confirmations, replacement of a transaction that is
//! not mined) are the [`TxBook`]'s, the same book the node drives from its event loop; here
//! a blocking loop makes its calls one at a time and polls for new blocks. Nothing sleeps:
//! the waits run the client's mio loop.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, B256, U256};
use serde_json::{json, Value};

use super::client::BlockingClient;
use super::key::EthPrivateKey;
use super::tx::{GasCall, TxError};
use super::txbook::{TxAction, TxBook, TxFailure, TxRequest};
use super::ChainError;

pub use super::txbook::Mined;

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

/// Signs and sends transactions from one key.
pub struct Sender {
    address: Address,
    book: TxBook<()>,
    /// Confirmations to wait for (1 = mined).
    pub confirmations: u64,
    /// How long to wait for confirmations.
    pub confirm_timeout: Duration,
}

impl Sender {
    /// A sender for `key` on chain `chain_id`.
    pub fn new(key: EthPrivateKey, chain_id: u64) -> Sender {
        Sender {
            address: key.address(),
            book: TxBook::new(key, chain_id, 1, 0),
            confirmations: 1,
            confirm_timeout: Duration::from_secs(120),
        }
    }

    /// The sender's address.
    pub fn address(&self) -> Address {
        self.address
    }

    fn base_fee(rpc: &mut BlockingClient) -> Result<u128, ChainError> {
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
        Ok(u128::try_from(base).unwrap_or(u128::MAX))
    }

    /// Estimates, signs, sends and waits for the receipt of a call to `to`.
    pub fn send(
        &mut self,
        rpc: &mut BlockingClient,
        to: Address,
        data: Vec<u8>,
        call: GasCall,
    ) -> Result<Mined, SendError> {
        self.book.set_confirmations(self.confirmations);
        self.book.set_base_fee(Self::base_fee(rpc)?);
        let mut out = Vec::new();
        self.book.on_head(rpc.block_number()?, &mut out);
        self.book.send(
            TxRequest {
                tag: (),
                label: "transaction",
                call,
                to,
                data: Bytes::from(data),
            },
            &mut out,
        );
        let deadline = Instant::now() + self.confirm_timeout;
        let mut queue: VecDeque<TxAction<()>> = out.into();
        // The first receipt check comes right after the send (a dev chain mines at once).
        let mut waited = true;
        loop {
            while let Some(action) = queue.pop_front() {
                match action {
                    TxAction::Call(tag, method, params) => {
                        let answer = rpc.call(method, params);
                        let mut out = Vec::new();
                        self.book.on_answer(tag, answer, &mut out);
                        queue.extend(out);
                    }
                    TxAction::Log(line) => log::info!("{line}"),
                    // A one-shot book never sees a reorganisation.
                    TxAction::Undone(..) => {}
                    TxAction::Done((), result) => {
                        return result.map_err(|e| match e {
                            TxFailure::Estimate(c) => SendError::Chain(c),
                            TxFailure::Rejected(m) | TxFailure::Transient(m) => {
                                SendError::Rejected(m)
                            }
                            TxFailure::Reverted { hash, .. } => SendError::Reverted(hash),
                        })
                    }
                }
            }
            if Instant::now() >= deadline {
                let hash = self
                    .book
                    .pending_hashes()
                    .first()
                    .copied()
                    .unwrap_or_default();
                return Err(SendError::NotConfirmed {
                    hash,
                    secs: self.confirm_timeout.as_secs(),
                });
            }
            if !waited {
                rpc.pause(RECEIPT_POLL)?;
            }
            waited = false;
            let mut out = Vec::new();
            self.book.on_head(rpc.block_number()?, &mut out);
            queue.extend(out);
        }
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
                            gas_used: receipt["gasUsed"]
                                .as_str()
                                .map(super::rpc::parse_quantity)
                                .and_then(Result::ok)
                                .unwrap_or(0),
                            logs: receipt["logs"].clone(),
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
