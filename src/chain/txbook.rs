//! Transactions that never block the loop: a sans-IO book of every transaction in flight.
//!
//! Each transaction goes through `eth_estimateGas` (a revert here is the contract's answer,
//! decoded), the gas headroom of its call, a nonce from the [`NonceTracker`], EIP-1559 fees
//! from the latest base fee, signing, `eth_sendRawTransaction`, and then a receipt check on
//! every new block until it has `confirmations` blocks. Many transactions are in flight at
//! once with consecutive nonces; "nonce too low" resyncs the tracker from
//! `eth_getTransactionCount(pending)` and sends again; the transaction first in line that is
//! not mined within [`REPLACE_AFTER_BLOCKS`] is sent again with the same nonce and higher
//! fees (see [`TxBook::on_head`]).
//!
//! The book makes no calls itself: it pushes [`TxAction`]s (a JSON-RPC call to make, with the
//! [`TxCall`] tag to answer it with, or a transaction's outcome) and is fed the answers. The
//! node drives it from its event loop (the tag of a transaction is the sale's ticket); the
//! one-shot commands drive it with a blocking client ([`super::sender::Sender`]), so the
//! nonce, gas and fee rules exist once.
//! A fill is two transactions, `approve` then `fillSlot`. An ERC-20 approval replaces the
//! previous one, so two interleaved approve/fill pairs would spend each other's allowance:
//! fills go in batches, one at a time. A batch is every fill waiting (up to [`FILL_BATCH`]):
//! one `approve` of their collateral's sum, and once it is mined all their `fillSlot`s at
//! once. A fill that fails leaves its share of the allowance unspent until the next batch's
//! approval replaces it. One fill per two blocks was what first limited a node filling
//! thousands of slots.
use std::collections::{HashMap, VecDeque};

use alloy_primitives::{Address, Bytes, B256, U256};
use serde_json::{json, Value};

use super::key::EthPrivateKey;
use super::rpc::{parse_quantity, quantity_of};
use super::tx::{
    classify_send_error, fees, gas_limit_with_headroom, Eip1559Tx, GasCall, NonceTracker,
    SendRejection,
};
use super::ChainError;

/// Blocks a sent transaction may stay unmined, first in line, before it is replaced with
/// higher fees.
pub const REPLACE_AFTER_BLOCKS: u64 = 12;
/// The most transactions replaced at one head besides the first in line.
pub const REPLACE_MAX: usize = 64;
/// The tip when the node suggests none: 1 gwei.
pub const DEFAULT_TIP: u128 = 1_000_000_000;
/// The block gas limit assumed until a header tells (anvil's and mainnet's 30 M).
pub const DEFAULT_BLOCK_GAS_LIMIT: u64 = 30_000_000;

/// Which step of which transaction a call answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCall {
    /// `eth_estimateGas` of transaction `id`.
    Estimate(u64),
    /// `eth_sendRawTransaction` of transaction `id`.
    Send(u64),
    /// `eth_getTransactionReceipt` of transaction `id`, for one of its hashes.
    Receipt(u64, B256),
    /// `eth_getTransactionCount(pending)`.
    Nonce,
    /// `eth_getTransactionReceipt` of a transaction counted as done, after a
    /// reorganisation (see [`TxBook::on_reorg`]).
    Recheck(B256),
    /// `eth_sendRawTransaction` of a transaction sent again after a reorganisation (the
    /// answer is only logged).
    Resend,
    /// `eth_getTransactionCount(latest)` after a counted receipt was found gone: which of
    /// the gone transactions' nonces the new chain has used.
    GoneNonce,
    /// `eth_getTransactionCount(latest)` at a new head with many transactions pending:
    /// only those below it have receipts to ask for (see [`RECEIPTS_DIRECT_MAX`]).
    Mined,
    /// `eth_getTransactionCount(latest)` when the first transaction in line is stuck:
    /// whether a nonce below it is held by no transaction (see [`TxBook::on_head`]).
    Gaps,
}

/// The most pending transaction hashes whose receipts a new head asks for directly. With
/// more, the head first asks the account's mined nonce count, and then only the receipts of
/// the transactions below it: with 10,000 proofs pending, a receipt call for each at every
/// block swamped the chain node (and the loop) with calls that answered "not yet".
pub const RECEIPTS_DIRECT_MAX: usize = 32;

/// Blocks a transaction counted as done is remembered for, so that a reorganisation deeper
/// than its confirmations is noticed (the log sync's reorganisation window).
pub const KEEP_DONE_BLOCKS: u64 = 64;

/// A transaction counted as done, kept for [`KEEP_DONE_BLOCKS`].
#[derive(Debug)]
struct Counted<T> {
    tag: T,
    label: &'static str,
    hash: B256,
    block: u64,
    nonce: u64,
    /// The signed transaction, to send again if it was reorganised out.
    raw: Bytes,
}

/// A mined transaction.
#[derive(Debug, Clone)]
pub struct Mined {
    /// The transaction hash.
    pub hash: B256,
    /// The block it was mined in.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// The receipt's logs, as the node sent them (`logs`), for callers that read what the
    /// transaction emitted (e.g. token transfers).
    pub logs: Value,
}

/// The most fills one approve covers: their `fillSlot`s (about 300 k gas each) fit one
/// block of 30 M gas.
pub const FILL_BATCH: usize = 64;

/// A fill waiting for its batch.
#[derive(Debug)]
struct WaitingFill<T> {
    token: Address,
    spender: Address,
    amount: U256,
    fill: TxRequest<T>,
}

/// Why a transaction did not go through.
#[derive(Debug, thiserror::Error)]
pub enum TxFailure {
    /// `eth_estimateGas` failed: a revert (with its data, for the Marketplace error
    /// decoder) or a transport error.
    #[error(transparent)]
    Estimate(ChainError),
    /// The node refused the raw transaction.
    #[error("the node refused the transaction: {0}")]
    Rejected(String),
    /// It could not be sent (transport) or signed, or the nonce could not be synced.
    #[error("{0}")]
    Transient(String),
    /// It was mined and reverted.
    #[error("transaction {hash} reverted in block {block}")]
    Reverted {
        /// The transaction hash.
        hash: B256,
        /// The block.
        block: u64,
    },
}

/// What the book asks the driver to do.
#[derive(Debug)]
pub enum TxAction<T> {
    /// Make this call and answer with [`TxBook::on_answer`] and the tag.
    Call(TxCall, &'static str, Value),
    /// A transaction ended: tell whoever waits for it (its tag).
    Done(T, Result<Mined, TxFailure>),
    /// An informative line for the log.
    Log(String),
    /// A transaction counted as done (told with [`TxAction::Done`]) was reorganised out and
    /// is not sent again, with its label: a `freeSlot`, whose sale must read its slot again
    /// to claim what the new chain owes, or a `reserveSlot`, which no longer holds (see
    /// [`TxBook::on_reorg`]).
    Undone(T, &'static str),
}

/// One transaction to send.
#[derive(Debug, Clone)]
pub struct TxRequest<T> {
    /// Who waits for it (the node: the sale's ticket).
    pub tag: T,
    /// For logs (`reserveSlot`, `fillSlot`, ...).
    pub label: &'static str,
    /// Its gas headroom.
    pub call: GasCall,
    /// The contract.
    pub to: Address,
    /// The calldata.
    pub data: Bytes,
}

#[derive(Debug)]
enum Stage {
    Estimating,
    /// Estimated; waits for a nonce sync.
    NeedsNonce {
        gas: u64,
    },
    Sending {
        gas: u64,
        nonce: u64,
        fees: (u128, u128),
        hash: B256,
        raw: Bytes,
    },
    Pending {
        gas: u64,
        nonce: u64,
        fees: (u128, u128),
        hashes: Vec<B256>,
        /// The signed transactions of `hashes`, in the same order.
        raws: Vec<Bytes>,
        /// The block it was sent (or last replaced) at.
        since: u64,
        /// False when the node refused it while later nonces were out already: it is sent
        /// again at the next head, whatever its place in line.
        in_pool: bool,
    },
}

#[derive(Debug)]
struct InFlight<T> {
    req: TxRequest<T>,
    /// The transactions sent after this one succeeds (a batch's `fillSlot`s after its
    /// `approve`); its failure is reported as theirs.
    then: Vec<TxRequest<T>>,
    stage: Stage,
    fill_lane: bool,
}

/// The book. See the module docs.
pub struct TxBook<T> {
    key: EthPrivateKey,
    chain_id: u64,
    confirmations: u64,
    nonces: NonceTracker,
    nonce_syncing: bool,
    base_fee: u128,
    /// The gas limit of the newest block.
    block_gas_limit: u64,
    /// Gas of this book's transactions queued for the chain: those pending at the newest
    /// head plus those sent since. Full blocks of it ahead raise a new transaction's fee cap.
    gas_queued: u64,
    /// The nonce first in line among the pending transactions, and the head at which it
    /// became first.
    first_in_line: Option<(u64, u64)>,
    head: u64,
    next_id: u64,
    txs: HashMap<u64, InFlight<T>>,
    fills_waiting: VecDeque<WaitingFill<T>>,
    /// Transactions of the fill batch in flight: its approve, then its fills.
    fill_busy: usize,
    /// Transactions counted as done in the last [`KEEP_DONE_BLOCKS`] blocks.
    counted: Vec<Counted<T>>,
    /// Hashes of counted transactions whose receipt is gone, waiting for the account's
    /// nonce on the new chain ([`TxCall::GoneNonce`]).
    gone: Vec<B256>,
    /// Pending `freeSlot`s of a reorganised chain, each with the receipt lookups still to
    /// answer before it is withdrawn: one that the new chain holds is not withdrawn.
    withdrawing: HashMap<u64, usize>,
    /// Counters.
    pub sent: u64,
    /// Counters.
    pub replaced: u64,
    /// Counters.
    pub reverted: u64,
}

impl<T: Copy + std::fmt::Debug> TxBook<T> {
    /// A book for `key` on `chain_id`; the nonce is synced before the first send.
    pub fn new(key: EthPrivateKey, chain_id: u64, confirmations: u64, head: u64) -> TxBook<T> {
        TxBook {
            key,
            chain_id,
            confirmations: confirmations.max(1),
            nonces: NonceTracker::new(),
            nonce_syncing: false,
            base_fee: 1_000_000_000,
            block_gas_limit: DEFAULT_BLOCK_GAS_LIMIT,
            gas_queued: 0,
            first_in_line: None,
            head,
            next_id: 0,
            txs: HashMap::new(),
            fills_waiting: VecDeque::new(),
            fill_busy: 0,
            counted: Vec::new(),
            withdrawing: HashMap::new(),
            gone: Vec::new(),
            sent: 0,
            replaced: 0,
            reverted: 0,
        }
    }

    /// The sender address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// Transactions in flight.
    pub fn len(&self) -> usize {
        self.txs.len() + self.fills_waiting.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks a transaction needs, its own included (at least 1).
    pub fn set_confirmations(&mut self, n: u64) {
        self.confirmations = n.max(1);
    }

    /// The hashes sent for transactions not mined yet.
    pub fn pending_hashes(&self) -> Vec<B256> {
        let mut v: Vec<B256> = self
            .txs
            .values()
            .filter_map(|t| match &t.stage {
                Stage::Pending { hashes, .. } => hashes.last().copied(),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Sets the base fee of the next block (from `eth_feeHistory`).
    pub fn set_base_fee(&mut self, base_fee: u128) {
        self.base_fee = base_fee;
    }

    /// Sets the gas limit of the newest block (from its header).
    pub fn set_block_gas_limit(&mut self, limit: u64) {
        self.block_gas_limit = limit.max(1);
    }

    /// Fees for a transaction sent now: the cap covers the full blocks that this book's
    /// queued transactions would fill before it (see [`fees`]).
    fn fees_now(&self) -> (u128, u128) {
        fees(
            self.base_fee,
            None,
            DEFAULT_TIP,
            self.gas_queued / self.block_gas_limit,
        )
    }

    /// Starts one transaction.
    pub fn send(&mut self, req: TxRequest<T>, out: &mut Vec<TxAction<T>>) {
        self.start(req, Vec::new(), false, None, out);
    }

    /// Starts one transaction whose `eth_estimateGas` the caller already has (asked ahead,
    /// at the same head): it is signed and sent at once, with the call's headroom.
    pub fn send_estimated(&mut self, req: TxRequest<T>, estimate: u64, out: &mut Vec<TxAction<T>>) {
        self.start(req, Vec::new(), false, Some(estimate), out);
    }

    /// Starts a `fillSlot` that needs `amount` of `token` approved for `spender`: in the
    /// next fill batch (see the module docs), at once when none is in flight.
    pub fn send_fill(
        &mut self,
        token: Address,
        spender: Address,
        amount: U256,
        fill: TxRequest<T>,
        out: &mut Vec<TxAction<T>>,
    ) {
        self.fills_waiting.push_back(WaitingFill {
            token,
            spender,
            amount,
            fill,
        });
        if self.fill_busy == 0 {
            self.next_fill_batch(out);
        }
    }

    /// Starts the approve of the next batch: the waiting fills (up to [`FILL_BATCH`]) that
    /// approve the same token for the same spender as the first.
    fn next_fill_batch(&mut self, out: &mut Vec<TxAction<T>>) {
        let Some(first) = self.fills_waiting.front() else {
            return;
        };
        let (token, spender) = (first.token, first.spender);
        let mut total = U256::ZERO;
        let mut fills = Vec::new();
        let mut i = 0;
        while i < self.fills_waiting.len() && fills.len() < FILL_BATCH {
            let w = &self.fills_waiting[i];
            if w.token == token && w.spender == spender {
                if let Some(w) = self.fills_waiting.remove(i) {
                    total = total.saturating_add(w.amount);
                    fills.push(w.fill);
                }
            } else {
                i += 1;
            }
        }
        let approve = TxRequest {
            tag: fills[0].tag,
            label: "approve",
            call: GasCall::Other,
            to: token,
            data: Bytes::from(crate::market::calls::approve(spender, total)),
        };
        if fills.len() > 1 {
            out.push(TxAction::Log(format!(
                "one approve of {total} for {} fills",
                fills.len()
            )));
        }
        self.fill_busy = 1;
        self.start(approve, fills, true, None, out);
    }

    fn start(
        &mut self,
        req: TxRequest<T>,
        then: Vec<TxRequest<T>>,
        fill_lane: bool,
        estimate: Option<u64>,
        out: &mut Vec<TxAction<T>>,
    ) {
        self.next_id += 1;
        let id = self.next_id;
        let stage = match estimate {
            Some(e) => Stage::NeedsNonce {
                gas: gas_limit_with_headroom(req.call, e),
            },
            None => {
                // At `latest`: what a transaction of the book needs mined is mined before
                // it starts (a batch's approve before its fills), and anvil's default,
                // `pending`, executes its whole pool for every estimate.
                out.push(TxAction::Call(
                    TxCall::Estimate(id),
                    "eth_estimateGas",
                    json!([{"from": self.key.address(), "to": req.to, "data": req.data}, "latest"]),
                ));
                Stage::Estimating
            }
        };
        self.txs.insert(
            id,
            InFlight {
                req,
                then,
                stage,
                fill_lane,
            },
        );
        if estimate.is_some() {
            self.sign_and_send(id, out);
        }
    }

    /// A new block: checks the receipts of sent transactions, replaces stuck ones.
    ///
    /// Only the first transaction in line (the lowest nonce pending) can be stuck: the
    /// others wait for it, however long. It is replaced when it has been first in line for
    /// [`REPLACE_AFTER_BLOCKS`] blocks (since it was sent or last replaced), and then the
    /// pending ones whose fee cap is below the base fee go with it (at most
    /// [`REPLACE_MAX`]): they could not be mined either. Before, every transaction pending
    /// for 12 blocks was replaced, and a period's 10,000 proofs, which take 27 full blocks
    /// to mine, were re-signed 50,000 times, for up to half a second per head.
    pub fn on_head(&mut self, number: u64, out: &mut Vec<TxAction<T>>) {
        self.head = number;
        let mut stuck = Vec::new();
        let mut underpriced = Vec::new();
        let mut hashes = 0;
        let mut gas_queued = 0u64;
        let mut first: Option<(u64, u64, u64)> = None;
        for (id, tx) in &self.txs {
            if let Stage::Pending {
                hashes: h,
                since,
                gas,
                nonce,
                fees,
                in_pool,
                ..
            } = &tx.stage
            {
                hashes += h.len();
                gas_queued = gas_queued.saturating_add(*gas);
                if !in_pool {
                    stuck.push(*id);
                } else if fees.0 < self.base_fee {
                    underpriced.push((*nonce, *id));
                }
                if first.is_none_or(|(n, _, _)| *nonce < n) {
                    first = Some((*nonce, *id, *since));
                }
            }
        }
        self.gas_queued = gas_queued;
        if let Some((nonce, id, since)) = first {
            match self.first_in_line {
                Some((n, _)) if n == nonce => {}
                // The one before it was mined (or dropped) before this head.
                Some(_) => self.first_in_line = Some((nonce, number)),
                // Nothing was pending before it: it was first since it was sent.
                None => self.first_in_line = Some((nonce, since)),
            }
            let first_since = self.first_in_line.map_or(number, |(_, at)| at);
            if number >= since.max(first_since) + REPLACE_AFTER_BLOCKS && !stuck.contains(&id) {
                // A nonce below it that no transaction of ours holds (a reorganisation can
                // drop one the book counted as done without its receipt being looked at
                // again) would keep it unmined however high its fee: the mined count tells.
                out.push(self.mined_count(TxCall::Gaps));
                stuck.push(id);
                underpriced.sort_unstable();
                stuck.extend(
                    underpriced
                        .iter()
                        .filter(|(_, u)| *u != id)
                        .map(|(_, u)| *u)
                        .take(REPLACE_MAX),
                );
            }
        } else {
            self.first_in_line = None;
        }
        if hashes > RECEIPTS_DIRECT_MAX {
            out.push(self.mined_count(TxCall::Mined));
        } else {
            self.ask_receipts(None, out);
        }
        for id in stuck {
            self.replace(id, out);
        }
    }

    /// The call for the account's count of mined transactions, answered as `tag`.
    fn mined_count(&self, tag: TxCall) -> TxAction<T> {
        TxAction::Call(
            tag,
            "eth_getTransactionCount",
            json!([self.key.address(), "latest"]),
        )
    }

    /// Sends an empty transaction to ourselves at every nonce from `mined` (the account's
    /// mined count) up to the lowest one in flight that no transaction of the book holds
    /// and that is not waiting to be reused: without it, none of the later ones can be
    /// mined. At most [`REPLACE_MAX`] at a time.
    fn fill_gaps(&mut self, mined: u64, out: &mut Vec<TxAction<T>>) {
        let lowest = self
            .txs
            .values()
            .filter_map(|t| match t.stage {
                Stage::Sending { nonce, .. } | Stage::Pending { nonce, .. } => Some(nonce),
                _ => None,
            })
            .min();
        let Some(lowest) = lowest else {
            return;
        };
        let f = self.fees_now();
        for nonce in (mined..lowest).take(REPLACE_MAX) {
            if self.nonces.is_released(nonce) {
                continue;
            }
            match sign_empty(&self.key, self.chain_id, nonce, f) {
                Ok((h, raw)) => {
                    out.push(TxAction::Log(format!(
                        "nonce {nonce} is used by no transaction the chain holds, below the first one in line ({lowest}): it goes to the empty transaction {h}"
                    )));
                    out.push(TxAction::Call(
                        TxCall::Resend,
                        "eth_sendRawTransaction",
                        json!([raw]),
                    ));
                }
                Err(e) => out.push(TxAction::Log(format!(
                    "cannot sign an empty transaction: {e}"
                ))),
            }
        }
    }

    /// Asks the receipts of the pending transactions, or only of those whose nonce is below
    /// `mined` (the account's count of mined transactions).
    fn ask_receipts(&self, mined: Option<u64>, out: &mut Vec<TxAction<T>>) {
        for (id, tx) in &self.txs {
            if let Stage::Pending { hashes, nonce, .. } = &tx.stage {
                if mined.is_some_and(|m| *nonce >= m) {
                    continue;
                }
                for h in hashes {
                    out.push(TxAction::Call(
                        TxCall::Receipt(*id, *h),
                        "eth_getTransactionReceipt",
                        json!([h]),
                    ));
                }
            }
        }
    }

    fn replace(&mut self, id: u64, out: &mut Vec<TxAction<T>>) {
        let (now_max, now_tip) = self.fees_now();
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Stage::Pending {
            gas,
            nonce,
            fees: (max_fee, tip),
            hashes,
            raws,
            since,
            in_pool,
        } = &mut tx.stage
        else {
            return;
        };
        // A replacement must raise both fees by at least 10%; 25% leaves room.
        let new = (
            (*max_fee + *max_fee / 4 + 1).max(now_max),
            (*tip + *tip / 4 + 1).max(now_tip),
        );
        let signed = match sign(&self.key, self.chain_id, *nonce, *gas, new, &tx.req) {
            Ok(s) => s,
            Err(e) => {
                out.push(TxAction::Log(format!(
                    "cannot re-sign {}: {e}",
                    tx.req.label
                )));
                return;
            }
        };
        *max_fee = new.0;
        *tip = new.1;
        hashes.push(signed.0);
        raws.push(signed.1.clone());
        *since = self.head;
        *in_pool = true;
        self.replaced += 1;
        out.push(TxAction::Log(format!(
            "{} (nonce {nonce}) not mined within {REPLACE_AFTER_BLOCKS} blocks: replaced by {} with max fee {}",
            tx.req.label, signed.0, new.0
        )));
        out.push(TxAction::Call(
            TxCall::Send(id),
            "eth_sendRawTransaction",
            json!([signed.1]),
        ));
    }

    /// The answer to a call the book asked for.
    pub fn on_answer(
        &mut self,
        call: TxCall,
        result: Result<Value, ChainError>,
        out: &mut Vec<TxAction<T>>,
    ) {
        match call {
            TxCall::Mined => {
                let mined = result.ok().as_ref().and_then(quantity_of);
                // Without the count, every receipt is asked, as with few pending.
                self.ask_receipts(mined, out);
            }
            TxCall::Gaps => {
                let mined = result.ok().as_ref().and_then(quantity_of);
                if let Some(m) = mined {
                    self.fill_gaps(m, out);
                }
            }
            TxCall::Nonce => {
                self.nonce_syncing = false;
                match result
                    .as_ref()
                    .ok()
                    .and_then(|v| v.as_str())
                    .map(parse_quantity)
                {
                    Some(Ok(n)) => {
                        self.nonces.sync(n);
                        let waiting: Vec<u64> = self
                            .txs
                            .iter()
                            .filter(|(_, t)| matches!(t.stage, Stage::NeedsNonce { .. }))
                            .map(|(id, _)| *id)
                            .collect();
                        let mut waiting = waiting;
                        waiting.sort_unstable();
                        for id in waiting {
                            self.sign_and_send(id, out);
                        }
                    }
                    _ => {
                        // Retry the sync with the next transaction event; fail the waiting
                        // ones so their sales retry on their own schedule.
                        let ids: Vec<u64> = self
                            .txs
                            .iter()
                            .filter(|(_, t)| matches!(t.stage, Stage::NeedsNonce { .. }))
                            .map(|(id, _)| *id)
                            .collect();
                        for id in ids {
                            self.fail(
                                id,
                                TxFailure::Transient(format!("nonce sync failed: {result:?}")),
                                out,
                            );
                        }
                    }
                }
            }
            TxCall::Estimate(id) => match result {
                Ok(v) => {
                    let Some(tx) = self.txs.get_mut(&id) else {
                        return;
                    };
                    let estimate = match v.as_str().map(parse_quantity) {
                        Some(Ok(g)) => g,
                        _ => {
                            self.fail(
                                id,
                                TxFailure::Transient(format!("eth_estimateGas returned {v}")),
                                out,
                            );
                            return;
                        }
                    };
                    tx.stage = Stage::NeedsNonce {
                        gas: gas_limit_with_headroom(tx.req.call, estimate),
                    };
                    self.sign_and_send(id, out);
                }
                Err(e) => self.fail(id, TxFailure::Estimate(e), out),
            },
            TxCall::Send(id) => self.on_sent(id, result, out),
            TxCall::Recheck(hash) => self.on_recheck(hash, result, out),
            TxCall::GoneNonce => {
                let count = result.ok().as_ref().and_then(quantity_of);
                if let Some(count) = count {
                    for hash in std::mem::take(&mut self.gone) {
                        self.on_gone(hash, count, out);
                    }
                }
            }
            TxCall::Resend => {
                if let Err(e) = result {
                    out.push(TxAction::Log(format!("sending again: {e}")));
                }
            }
            TxCall::Receipt(id, hash) => self.on_receipt(id, hash, result, out),
        }
    }

    fn sign_and_send(&mut self, id: u64, out: &mut Vec<TxAction<T>>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Stage::NeedsNonce { gas } = tx.stage else {
            return;
        };
        let nonce = match self.nonces.next_nonce() {
            Some(n) => n,
            None => {
                if !self.nonce_syncing {
                    self.nonce_syncing = true;
                    out.push(TxAction::Call(
                        TxCall::Nonce,
                        "eth_getTransactionCount",
                        json!([self.key.address(), "pending"]),
                    ));
                }
                return;
            }
        };
        let f = fees(
            self.base_fee,
            None,
            DEFAULT_TIP,
            self.gas_queued / self.block_gas_limit,
        );
        match sign(&self.key, self.chain_id, nonce, gas, f, &tx.req) {
            Ok((hash, raw)) => {
                self.gas_queued = self.gas_queued.saturating_add(gas);
                out.push(TxAction::Call(
                    TxCall::Send(id),
                    "eth_sendRawTransaction",
                    json!([raw]),
                ));
                tx.stage = Stage::Sending {
                    gas,
                    nonce,
                    fees: f,
                    hash,
                    raw,
                };
            }
            Err(e) => {
                self.nonces.release(nonce);
                self.fail(
                    id,
                    TxFailure::Transient(format!("signing failed: {e}")),
                    out,
                );
            }
        }
    }

    fn on_sent(&mut self, id: u64, result: Result<Value, ChainError>, out: &mut Vec<TxAction<T>>) {
        let head = self.head;
        // Whether transactions with later nonces are out already (see the refusal below).
        let later = match self.txs.get(&id).map(|t| &t.stage) {
            Some(Stage::Sending { nonce: mine, .. }) => self.txs.values().any(|t| {
                matches!(t.stage, Stage::Sending { nonce, .. } | Stage::Pending { nonce, .. } if nonce > *mine)
            }),
            _ => false,
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let (gas, nonce, f, hash, raw) = match &tx.stage {
            Stage::Sending {
                gas,
                nonce,
                fees,
                hash,
                raw,
            } => (*gas, *nonce, *fees, *hash, raw.clone()),
            // A replacement went out: its answer changes nothing unless it failed for a
            // reason other than the first one being mined.
            Stage::Pending { .. } => return,
            _ => return,
        };
        let accepted = match &result {
            Ok(_) => true,
            Err(ChainError::Rpc { error, .. }) => match classify_send_error(&error.message) {
                SendRejection::AlreadyKnown => true,
                SendRejection::NonceTooLow => {
                    out.push(TxAction::Log(format!(
                        "nonce {nonce} of {} was already used; resyncing",
                        tx.req.label
                    )));
                    self.nonces.on_nonce_too_low();
                    tx.stage = Stage::NeedsNonce { gas };
                    self.sign_and_send(id, out);
                    return;
                }
                _ => false,
            },
            // The frame may have reached the node before the connection failed: the
            // transaction may be in its pool. Treat it as sent: its receipt is looked for
            // on every block, and if it never appears it is sent again (same nonce, higher
            // fees) after REPLACE_AFTER_BLOCKS. Failing it here could end a sale whose
            // fillSlot is about to be mined.
            Err(e) if e.is_unreachable() => {
                out.push(TxAction::Log(format!(
                    "no answer to sending {} {hash} ({e}); watching for its receipt",
                    tx.req.label
                )));
                true
            }
            Err(_) => false,
        };
        if accepted {
            self.sent += 1;
            out.push(TxAction::Log(format!(
                "sent {} {hash} (nonce {nonce}, gas limit {gas})",
                tx.req.label
            )));
            tx.stage = Stage::Pending {
                gas,
                nonce,
                fees: f,
                hashes: vec![hash],
                raws: vec![raw],
                since: head,
                in_pool: true,
            };
        } else if later {
            // Refused, but later nonces are out: released, this nonce would be a gap that
            // only a new transaction fills, and until then none of the later ones is mined
            // (the fault soak found a fill stuck for good behind a refused send). It is
            // sent again instead, at the next block with higher fees, like a stuck one.
            out.push(TxAction::Log(format!(
                "{} {hash} (nonce {nonce}) was refused ({}); later nonces are out, so it is sent again",
                tx.req.label,
                result.as_ref().err().map_or(String::new(), |e| e.to_string())
            )));
            tx.stage = Stage::Pending {
                gas,
                nonce,
                fees: f,
                hashes: vec![hash],
                raws: vec![raw],
                since: head,
                in_pool: false,
            };
        } else {
            self.nonces.release(nonce);
            let err = match result {
                Err(ChainError::Rpc { error, .. }) => TxFailure::Rejected(error.message),
                Err(e) => TxFailure::Transient(e.to_string()),
                Ok(_) => TxFailure::Transient("the node refused the transaction".into()),
            };
            self.fail(id, err, out);
        }
    }

    fn on_receipt(
        &mut self,
        id: u64,
        hash: B256,
        result: Result<Value, ChainError>,
        out: &mut Vec<TxAction<T>>,
    ) {
        let found = result.as_ref().is_ok_and(|r| !r.is_null());
        if !found {
            // A freeSlot of a reorganised chain is withdrawn once no lookup found it.
            if let Some(left) = self.withdrawing.get_mut(&id) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.withdrawing.remove(&id);
                    if let Some(InFlight {
                        stage: Stage::Pending { nonce, fees, .. },
                        ..
                    }) = self.txs.get(&id)
                    {
                        let (nonce, fees) = (*nonce, *fees);
                        self.withdraw(id, nonce, fees, out);
                    }
                }
            }
            return; // asked again at the next block
        }
        self.withdrawing.remove(&id);
        let Ok(receipt) = result else {
            return;
        };
        let Some(tx) = self.txs.get(&id) else {
            return;
        };
        let Some(block) = quantity_of(&receipt["blockNumber"]) else {
            return;
        };
        if receipt["status"] == "0x0" {
            self.reverted += 1;
            let label = tx.req.label;
            out.push(TxAction::Log(format!(
                "{label} {hash} reverted in block {block}"
            )));
            self.fail(id, TxFailure::Reverted { hash, block }, out);
            return;
        }
        if self.head + 1 < block + self.confirmations {
            return;
        }
        let gas_used = quantity_of(&receipt["gasUsed"]).unwrap_or(0);
        out.push(TxAction::Log(format!(
            "{} {hash} mined in block {block}, gas used {gas_used}",
            tx.req.label
        )));
        let Some(tx) = self.txs.remove(&id) else {
            return;
        };
        if let Stage::Pending {
            nonce,
            hashes,
            raws,
            ..
        } = &tx.stage
        {
            if let Some(raw) = hashes
                .iter()
                .position(|h| *h == hash)
                .map(|i| raws[i].clone())
            {
                self.counted.push(Counted {
                    tag: tx.req.tag,
                    label: tx.req.label,
                    hash,
                    block,
                    nonce: *nonce,
                    raw,
                });
            }
        }
        let floor = self.head.saturating_sub(KEEP_DONE_BLOCKS);
        self.counted.retain(|c| c.block >= floor);
        if !tx.then.is_empty() {
            if tx.fill_lane {
                self.fill_busy = tx.then.len();
            }
            for next in tx.then {
                self.start(next, Vec::new(), tx.fill_lane, None, out);
            }
        } else {
            out.push(TxAction::Done(
                tx.req.tag,
                Ok(Mined {
                    hash,
                    block_number: block,
                    gas_used,
                    logs: receipt["logs"].clone(),
                }),
            ));
            if tx.fill_lane {
                self.next_fill(out);
            }
        }
    }

    /// The chain was reorganised: every transaction not mined yet is sent again (a node
    /// that rewound its chain may have dropped it from its pool, and the nonces after it
    /// would wait behind the gap), except a `freeSlot`, which is withdrawn (its nonce given
    /// to an empty transaction, its caller told it failed); and the receipt of every transaction counted as done in
    /// the last [`KEEP_DONE_BLOCKS`] blocks is looked up again: one that is gone is sent
    /// again too, so that what its caller was told stays true and its nonce is used
    /// (or its nonce is given to an empty transaction, see `on_recheck`).
    pub fn on_reorg(&mut self, out: &mut Vec<TxAction<T>>) {
        let mut ids: Vec<u64> = self.txs.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(tx) = self.txs.get(&id) else {
                continue;
            };
            let Stage::Pending { hashes, raws, .. } = &tx.stage else {
                continue;
            };
            if tx.req.label == "freeSlot" {
                // Its sale decided on a chain that is gone: unless the new chain holds it
                // (its receipts are looked up first, `on_receipt`), the nonce goes to an
                // empty transaction (outbidding it in the pool), and the sale, told it
                // failed, reads the slot again before it frees it (a freeSlot on a slot
                // still Filled would forfeit the collateral). One that was mined is
                // reported as mined, with the payout its receipt shows.
                let hashes = hashes.clone();
                self.withdrawing.insert(id, hashes.len());
                for h in hashes {
                    out.push(TxAction::Call(
                        TxCall::Receipt(id, h),
                        "eth_getTransactionReceipt",
                        json!([h]),
                    ));
                }
                continue;
            }
            if let Some(raw) = raws.last() {
                out.push(TxAction::Call(
                    TxCall::Resend,
                    "eth_sendRawTransaction",
                    json!([raw]),
                ));
            }
        }
        for c in &self.counted {
            out.push(TxAction::Call(
                TxCall::Recheck(c.hash),
                "eth_getTransactionReceipt",
                json!([c.hash]),
            ));
        }
    }

    /// Gives the nonce of pending transaction `id` to an empty transaction with higher fees
    /// and fails it (transient) to its caller.
    fn withdraw(
        &mut self,
        id: u64,
        nonce: u64,
        (max_fee, tip): (u128, u128),
        out: &mut Vec<TxAction<T>>,
    ) {
        let Some(tx) = self.txs.remove(&id) else {
            return;
        };
        let (now_max, now_tip) = self.fees_now();
        let new = (
            (max_fee + max_fee / 4 + 1).max(now_max),
            (tip + tip / 4 + 1).max(now_tip),
        );
        match sign_empty(&self.key, self.chain_id, nonce, new) {
            Ok((h, raw)) => {
                out.push(TxAction::Log(format!(
                    "the chain was reorganised while {} (nonce {nonce}) was pending: withdrawn, its nonce goes to the empty transaction {h}",
                    tx.req.label
                )));
                out.push(TxAction::Call(
                    TxCall::Resend,
                    "eth_sendRawTransaction",
                    json!([raw]),
                ));
            }
            Err(e) => out.push(TxAction::Log(format!("cannot sign a cancel: {e}"))),
        }
        out.push(TxAction::Done(
            tx.req.tag,
            Err(TxFailure::Transient(format!(
                "the chain was reorganised while {} was pending",
                tx.req.label
            ))),
        ));
        if tx.fill_lane {
            self.next_fill(out);
        }
    }

    /// The receipt of a transaction counted as done, looked up after a reorganisation. A
    /// receipt that is gone means the transaction was reorganised out. A `submitProof` or
    /// an `approve` is sent again as it was (replaying them is harmless, and their nonce
    /// must be used). The nonce of a `fillSlot`, a `reserveSlot` or a `freeSlot` goes to an
    /// empty transaction to ourselves instead: the sale of a fill or a reservation re-checks
    /// its slot and, finding it Free, ends with its collateral back (the same fill mined
    /// again later would hold collateral no sale accounts for, and the same reservation
    /// would make a new sale's `canReserveSlot` false); a `freeSlot` replayed on a chain
    /// whose time went back would be a forced free, so its caller is told
    /// ([`TxAction::Undone`]) and reads the slot again.
    fn on_recheck(
        &mut self,
        hash: B256,
        result: Result<Value, ChainError>,
        out: &mut Vec<TxAction<T>>,
    ) {
        let Ok(receipt) = result else {
            return;
        };
        let Some(i) = self.counted.iter().position(|c| c.hash == hash) else {
            return;
        };
        if let Some(block) = quantity_of(&receipt["blockNumber"]) {
            self.counted[i].block = block;
            return;
        }
        if !receipt.is_null() || self.gone.contains(&hash) {
            return;
        }
        // No receipt: either the transaction is gone, or (anvil's evm_revert to a snapshot of
        // the head keeps the block's state but not its receipts) it is there without one.
        // The account's nonce on the new chain tells which.
        self.gone.push(hash);
        out.push(self.mined_count(TxCall::GoneNonce));
    }

    /// A counted transaction without a receipt on the new chain, whose account has used
    /// `count` nonces there: one whose nonce is used stays counted; the others are acted on
    /// as [`Self::on_recheck`] says.
    fn on_gone(&mut self, hash: B256, count: u64, out: &mut Vec<TxAction<T>>) {
        let f = self.fees_now();
        let Some(c) = self.counted.iter_mut().find(|c| c.hash == hash) else {
            return;
        };
        if c.nonce < count {
            out.push(TxAction::Log(format!(
                "{} {hash} has no receipt after the reorganisation, but its nonce {} is used: still counted",
                c.label, c.nonce
            )));
            return;
        }
        if matches!(c.label, "fillSlot" | "reserveSlot" | "freeSlot") {
            if matches!(c.label, "freeSlot" | "reserveSlot") {
                out.push(TxAction::Undone(c.tag, c.label));
            }
            match sign_empty(&self.key, self.chain_id, c.nonce, f) {
                Ok((h, raw)) => {
                    out.push(TxAction::Log(format!(
                        "{} {hash} (nonce {}) was reorganised out after it was counted; its nonce goes to the empty transaction {h}",
                        c.label, c.nonce
                    )));
                    c.label = "cancel";
                    c.hash = h;
                    c.raw = raw;
                }
                Err(e) => {
                    out.push(TxAction::Log(format!("cannot sign a cancel: {e}")));
                    return;
                }
            }
        } else {
            out.push(TxAction::Log(format!(
                "{} {hash} (nonce {}) was reorganised out after it was counted; sending it again",
                c.label, c.nonce
            )));
        }
        out.push(TxAction::Call(
            TxCall::Resend,
            "eth_sendRawTransaction",
            json!([c.raw]),
        ));
    }

    fn fail(&mut self, id: u64, err: TxFailure, out: &mut Vec<TxAction<T>>) {
        let Some(tx) = self.txs.remove(&id) else {
            return;
        };
        out.push(TxAction::Log(format!("{} failed: {err}", tx.req.label)));
        if tx.then.is_empty() {
            out.push(TxAction::Done(tx.req.tag, Err(err)));
        } else {
            // The approve of a fill batch: every fill of it fails with it.
            let why = format!("{} failed: {err}", tx.req.label);
            let mut err = Some(err);
            for next in tx.then {
                let e = err
                    .take()
                    .unwrap_or_else(|| TxFailure::Transient(why.clone()));
                out.push(TxAction::Done(next.tag, Err(e)));
            }
        }
        if tx.fill_lane {
            self.next_fill(out);
        }
    }

    /// A transaction of the fill batch ended; the next batch starts with the last.
    fn next_fill(&mut self, out: &mut Vec<TxAction<T>>) {
        self.fill_busy = self.fill_busy.saturating_sub(1);
        if self.fill_busy == 0 {
            self.next_fill_batch(out);
        }
    }
}

/// An empty transaction to ourselves (21,000 gas) at `nonce`: what takes the nonce of a
/// transaction that must not be mined, or that the chain dropped.
fn sign_empty(
    key: &EthPrivateKey,
    chain_id: u64,
    nonce: u64,
    fees: (u128, u128),
) -> Result<(B256, Bytes), crate::chain::tx::TxError> {
    let empty = TxRequest {
        tag: (),
        label: "empty",
        call: GasCall::Other,
        to: key.address(),
        data: Bytes::new(),
    };
    sign(key, chain_id, nonce, 21_000, fees, &empty)
}

fn sign(
    key: &EthPrivateKey,
    chain_id: u64,
    nonce: u64,
    gas_limit: u64,
    (max_fee_per_gas, max_priority_fee_per_gas): (u128, u128),
    req: &TxRequest<impl Sized>,
) -> Result<(B256, Bytes), crate::chain::tx::TxError> {
    let signed = Eip1559Tx {
        chain_id,
        nonce,
        max_priority_fee_per_gas,
        max_fee_per_gas,
        gas_limit,
        to: req.to,
        value: U256::ZERO,
        data: req.data.clone(),
    }
    .sign(key)?;
    Ok((signed.hash, signed.raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::rpc::RpcError;

    fn book() -> TxBook<u32> {
        let key = EthPrivateKey::from_hex(
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        )
        .unwrap();
        TxBook::new(key, 31337, 1, 100)
    }

    fn req(tag: u32) -> TxRequest<u32> {
        TxRequest {
            tag,
            label: "test",
            call: GasCall::Other,
            to: Address::repeat_byte(7),
            data: Bytes::from(vec![1, 2, 3]),
        }
    }

    type Calls = Vec<(TxCall, &'static str, Value)>;

    /// Splits actions into (calls, done).
    fn split(out: Vec<TxAction<u32>>) -> (Calls, Vec<(u32, bool)>) {
        let mut calls = Vec::new();
        let mut done = Vec::new();
        for a in out {
            match a {
                TxAction::Call(t, m, p) => calls.push((t, m, p)),
                TxAction::Done(tag, r) => done.push((tag, r.is_ok())),
                TxAction::Log(_) | TxAction::Undone(..) => {}
            }
        }
        (calls, done)
    }

    fn rpc_err(message: &str) -> ChainError {
        ChainError::Rpc {
            method: "eth_sendRawTransaction".into(),
            error: RpcError {
                code: -32000,
                message: message.into(),
                data: None,
            },
        }
    }

    /// Answers estimates (and a nonce sync with `count`) and returns the send calls.
    fn to_sends(b: &mut TxBook<u32>, calls: Calls, count: u64) -> Calls {
        let mut pending = calls;
        let mut sends = Vec::new();
        while let Some((tag, method, params)) = pending.pop() {
            let mut out = Vec::new();
            match tag {
                TxCall::Estimate(_) => b.on_answer(tag, Ok(json!("0x5208")), &mut out),
                TxCall::Nonce => b.on_answer(tag, Ok(json!(format!("{count:#x}"))), &mut out),
                TxCall::Send(_) => {
                    sends.push((tag, method, params));
                    continue;
                }
                TxCall::Receipt(..)
                | TxCall::Recheck(_)
                | TxCall::Resend
                | TxCall::GoneNonce
                | TxCall::Mined
                | TxCall::Gaps => continue,
            }
            pending.extend(split(out).0);
        }
        sends.sort_by_key(|(t, _, _)| match t {
            TxCall::Send(id) => *id,
            _ => 0,
        });
        sends
    }

    fn tx_of(params: &Value) -> Eip1559Tx {
        let raw: Bytes = params[0].as_str().unwrap().parse().unwrap();
        crate::chain::tx::SignedTx::decode(&raw).unwrap().tx
    }

    fn nonce_of(params: &Value) -> u64 {
        tx_of(params).nonce
    }

    #[test]
    fn an_estimate_asked_ahead_skips_the_estimate_and_keeps_the_nonce_order() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(0), &mut out);
        let reserve = TxRequest {
            call: GasCall::ReserveSlot,
            ..req(1)
        };
        b.send_estimated(reserve, 80_000, &mut out);
        let (calls, _) = split(out);
        let methods: Vec<&str> = calls.iter().map(|(_, m, _)| *m).collect();
        assert_eq!(methods, ["eth_estimateGas", "eth_getTransactionCount"]);
        let sends = to_sends(&mut b, calls, 3);
        let signed: Vec<Eip1559Tx> = sends.iter().map(|(_, _, p)| tx_of(p)).collect();
        assert_eq!(signed.len(), 2);
        // The pre-estimated one waited for the nonce sync only, and got the first nonce.
        let ahead = signed.iter().find(|t| t.gas_limit == 100_000).unwrap();
        assert_eq!(ahead.nonce, 3, "the reserveSlot headroom (125%) on 80,000");
        assert!(signed.iter().any(|t| t.nonce == 4 && t.gas_limit == 0x5208));
    }

    #[test]
    fn many_transactions_in_flight_get_consecutive_nonces_after_one_sync() {
        let mut b = book();
        let mut out = Vec::new();
        for tag in 0..5 {
            b.send(req(tag), &mut out);
        }
        let (calls, _) = split(out);
        assert_eq!(calls.len(), 5, "five estimates");
        let sends = to_sends(&mut b, calls, 7);
        let nonces: Vec<u64> = sends.iter().map(|(_, _, p)| nonce_of(p)).collect();
        let mut sorted = nonces.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![7, 8, 9, 10, 11]);
    }

    #[test]
    fn the_fee_cap_covers_the_full_blocks_of_the_books_own_transactions_ahead() {
        let mut b = book();
        b.set_base_fee(1_000);
        // Two 21,000-gas transactions fill a block.
        b.set_block_gas_limit(42_000);
        let mut out = Vec::new();
        for tag in 0..10 {
            b.send(req(tag), &mut out);
        }
        let sends = to_sends(&mut b, split(out).0, 0);
        let mut signed: Vec<Eip1559Tx> = sends.iter().map(|(_, _, p)| tx_of(p)).collect();
        signed.sort_by_key(|t| t.nonce);
        for t in &signed {
            // The transaction with nonce k has k × 21,000 gas of its own ahead of it.
            let ahead = t.nonce * 21_000 / 42_000;
            assert_eq!(
                (t.max_fee_per_gas, t.max_priority_fee_per_gas),
                fees(1_000, None, DEFAULT_TIP, ahead),
                "nonce {}",
                t.nonce
            );
        }
        assert!(signed[9].max_fee_per_gas > signed[0].max_fee_per_gas);
        // Once sent, they are pending at the next head: a new one is queued behind all ten
        // (five full blocks).
        let mut out = Vec::new();
        for (call, _, _) in &sends {
            b.on_answer(*call, Ok(json!("0x01")), &mut out);
        }
        b.on_head(101, &mut out);
        let mut out = Vec::new();
        b.send(req(10), &mut out);
        let next = to_sends(&mut b, split(out).0, 0);
        let t = tx_of(&next[0].2);
        assert_eq!(t.nonce, 10);
        assert_eq!(t.max_fee_per_gas, fees(1_000, None, DEFAULT_TIP, 5).0);
    }

    #[test]
    fn nonce_too_low_resyncs_and_sends_again_with_the_chains_count() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(1), &mut out);
        let sends = to_sends(&mut b, split(out).0, 3);
        assert_eq!(nonce_of(&sends[0].2), 3);
        let mut out = Vec::new();
        b.on_answer(sends[0].0, Err(rpc_err("nonce too low")), &mut out);
        let (calls, done) = split(out);
        assert!(done.is_empty(), "not failed");
        assert!(matches!(calls[0].0, TxCall::Nonce), "resync: {calls:?}");
        let sends = to_sends(&mut b, calls, 5);
        assert_eq!(
            nonce_of(&sends[0].2),
            5,
            "sent again with the chain's count"
        );
    }

    #[test]
    fn a_transaction_not_mined_is_replaced_with_higher_fees_and_the_same_nonce() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(1), &mut out);
        let sends = to_sends(&mut b, split(out).0, 0);
        let first = crate::chain::tx::SignedTx::decode(
            &sends[0].2[0].as_str().unwrap().parse::<Bytes>().unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        b.on_answer(sends[0].0, Ok(json!("0x01")), &mut out);
        // Blocks pass without a receipt.
        let mut out = Vec::new();
        b.on_head(100 + REPLACE_AFTER_BLOCKS - 1, &mut out);
        assert!(split(out)
            .0
            .iter()
            .all(|c| matches!(c.0, TxCall::Receipt(..))));
        let mut out = Vec::new();
        b.on_head(100 + REPLACE_AFTER_BLOCKS, &mut out);
        let (calls, _) = split(out);
        let resend = calls
            .iter()
            .find(|c| matches!(c.0, TxCall::Send(_)))
            .expect("replaced");
        let second = crate::chain::tx::SignedTx::decode(
            &resend.2[0].as_str().unwrap().parse::<Bytes>().unwrap(),
        )
        .unwrap();
        assert_eq!(second.tx.nonce, first.tx.nonce);
        assert!(second.tx.max_fee_per_gas >= first.tx.max_fee_per_gas * 11 / 10);
        assert!(second.tx.max_priority_fee_per_gas >= first.tx.max_priority_fee_per_gas * 11 / 10);
        assert_eq!(b.pending_hashes().len(), 1);
    }

    #[test]
    fn only_the_first_in_line_is_replaced_and_only_after_it_waited_first_in_line() {
        let mut b = book();
        b.set_base_fee(1_000);
        let mut out = Vec::new();
        for tag in 0..3 {
            b.send(req(tag), &mut out);
        }
        let sends = to_sends(&mut b, split(out).0, 0);
        let mut out = Vec::new();
        for (call, _, _) in &sends {
            b.on_answer(*call, Ok(json!("0x01")), &mut out);
        }
        let replaced = |out: Vec<TxAction<u32>>| -> Vec<u64> {
            let mut n: Vec<u64> = split(out)
                .0
                .iter()
                .filter(|c| matches!(c.0, TxCall::Send(_)))
                .map(|c| nonce_of(&c.2))
                .collect();
            n.sort_unstable();
            n
        };
        // Nonces 1 and 2 wait for nonce 0, however long: only 0 is replaced.
        for h in 101..100 + REPLACE_AFTER_BLOCKS {
            let mut out = Vec::new();
            b.on_head(h, &mut out);
            assert_eq!(replaced(out), Vec::<u64>::new(), "head {h}");
        }
        let mut out = Vec::new();
        b.on_head(100 + REPLACE_AFTER_BLOCKS, &mut out);
        assert_eq!(replaced(out), vec![0]);
        // Nonce 0 is mined at head 120: nonce 1 is first from then on, and waits
        // REPLACE_AFTER_BLOCKS from there, not from when it was sent.
        let id0 = match sends.iter().find(|(_, _, p)| nonce_of(p) == 0).map(|c| c.0) {
            Some(TxCall::Send(id)) => id,
            other => panic!("{other:?}"),
        };
        b.txs.remove(&id0);
        for h in 120..120 + REPLACE_AFTER_BLOCKS {
            let mut out = Vec::new();
            b.on_head(h, &mut out);
            assert_eq!(replaced(out), Vec::<u64>::new(), "head {h}");
        }
        // When the base fee passed the cap of nonce 2 as well, it goes with nonce 1.
        b.set_base_fee(1_000_000_000_000);
        let mut out = Vec::new();
        b.on_head(120 + REPLACE_AFTER_BLOCKS, &mut out);
        assert_eq!(replaced(out), vec![1, 2]);
    }

    #[test]
    fn a_nonce_below_the_stuck_first_in_line_that_nothing_holds_gets_an_empty_transaction() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(0), &mut out);
        b.send(req(1), &mut out);
        let sends = to_sends(&mut b, split(out).0, 2);
        let mut out = Vec::new();
        for (call, _, _) in &sends {
            b.on_answer(*call, Ok(json!("0x01")), &mut out);
        }
        // Nonce 2 is counted as done, and a reorganisation drops it from the chain
        // without the book seeing it go: only nonce 3 is left, and it cannot be mined.
        let id2 = b
            .txs
            .iter()
            .find(|(_, t)| matches!(t.stage, Stage::Pending { nonce: 2, .. }))
            .map(|(id, _)| *id)
            .unwrap();
        b.txs.remove(&id2);
        let mut gaps = Vec::new();
        for h in 101..=100 + REPLACE_AFTER_BLOCKS {
            let mut out = Vec::new();
            b.on_head(h, &mut out);
            gaps.extend(
                split(out)
                    .0
                    .into_iter()
                    .filter(|c| matches!(c.0, TxCall::Gaps)),
            );
        }
        assert_eq!(gaps.len(), 1, "asked once the first in line is stuck");
        let mut out = Vec::new();
        b.on_answer(TxCall::Gaps, Ok(json!("0x2")), &mut out);
        let (calls, _) = split(out);
        let filled: Vec<Eip1559Tx> = calls
            .iter()
            .filter(|c| matches!(c.0, TxCall::Resend))
            .map(|c| tx_of(&c.2))
            .collect();
        assert_eq!(filled.len(), 1);
        assert_eq!(filled[0].nonce, 2);
        assert_eq!(filled[0].to, b.address());
        assert!(filled[0].data.is_empty());
        // No gap: nothing is sent.
        let mut out = Vec::new();
        b.on_answer(TxCall::Gaps, Ok(json!("0x3")), &mut out);
        assert!(split(out).0.is_empty());
    }

    #[test]
    fn a_refused_send_below_later_nonces_is_sent_again_not_left_as_a_gap() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(1), &mut out);
        b.send(req(2), &mut out);
        let sends = to_sends(&mut b, split(out).0, 7);
        let (low, high) = if nonce_of(&sends[0].2) == 7 {
            (&sends[0], &sends[1])
        } else {
            (&sends[1], &sends[0])
        };
        assert_eq!(nonce_of(&high.2), 8);
        let mut out = Vec::new();
        b.on_answer(high.0, Ok(json!("0x01")), &mut out);
        b.on_answer(low.0, Err(rpc_err("injected failure")), &mut out);
        assert!(split(out).1.is_empty(), "not failed");
        // The next block sends it again with the same nonce.
        let mut out = Vec::new();
        b.on_head(101, &mut out);
        let (calls, _) = split(out);
        let resend = calls
            .iter()
            .find(|c| matches!(c.0, TxCall::Send(_)))
            .expect("sent again");
        assert_eq!(nonce_of(&resend.2), 7);
        // Alone, a refused transaction still fails (nothing waits behind it).
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(3), &mut out);
        let sends = to_sends(&mut b, split(out).0, 7);
        let mut out = Vec::new();
        b.on_answer(sends[0].0, Err(rpc_err("injected failure")), &mut out);
        assert_eq!(split(out).1, vec![(3, false)]);
    }

    #[test]
    fn a_send_without_an_answer_is_watched_not_failed() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(9), &mut out);
        let sends = to_sends(&mut b, split(out).0, 0);
        let mut out = Vec::new();
        b.on_answer(
            sends[0].0,
            Err(ChainError::Disconnected("lost".into())),
            &mut out,
        );
        assert!(split(out).1.is_empty(), "not failed");
        assert_eq!(b.pending_hashes().len(), 1, "its receipt is looked for");
        // The receipt arrives: done.
        let mut out = Vec::new();
        b.on_head(101, &mut out);
        let (calls, _) = split(out);
        let TxCall::Receipt(id, hash) = calls[0].0 else {
            panic!("{calls:?}")
        };
        let mut out = Vec::new();
        b.on_answer(
            TxCall::Receipt(id, hash),
            Ok(json!({"blockNumber": "0x65", "status": "0x1", "gasUsed": "0x5208"})),
            &mut out,
        );
        assert_eq!(split(out).1, vec![(9, true)]);
        assert!(b.is_empty());
    }

    #[test]
    fn fills_waiting_behind_an_approve_go_together_with_one_approve_of_their_sum() {
        let mut b = book();
        let (token, spender) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let mut out = Vec::new();
        for (tag, amount) in [(1, 5u8), (2, 7), (3, 9)] {
            b.send_fill(token, spender, U256::from(amount), req(tag), &mut out);
        }
        let (calls, _) = split(out);
        assert_eq!(calls.len(), 1, "the later fills wait: {calls:?}");
        assert_eq!(b.len(), 3);
        // The first approve fails: its fill fails with it, and the two fills that waited
        // share the next approve, of their sum.
        let mut out = Vec::new();
        b.on_answer(
            calls[0].0,
            Err(ChainError::Disconnected("gone".into())),
            &mut out,
        );
        let (calls, done) = split(out);
        assert_eq!(done, vec![(1, false)]);
        assert_eq!(calls.len(), 1);
        let sum = Bytes::from(crate::market::calls::approve(spender, U256::from(16u8)));
        assert_eq!(calls[0].2[0]["data"], json!(sum));
        assert_eq!(calls[0].2[0]["to"], json!(token));
        // A fill that comes meanwhile waits for the next batch.
        let mut out = Vec::new();
        b.send_fill(token, spender, U256::from(1u8), req(4), &mut out);
        assert!(split(out).0.is_empty());
        // The approve is mined: both fills start at once, nothing is reported yet.
        let sends = to_sends(&mut b, calls, 0);
        b.on_answer(sends[0].0, Ok(json!("0x01")), &mut Vec::new());
        let mut out = Vec::new();
        b.on_head(101, &mut out);
        let (calls, _) = split(out);
        let mut out = Vec::new();
        b.on_answer(
            calls[0].0,
            Ok(json!({"blockNumber": "0x65", "status": "0x1", "gasUsed": "0x1"})),
            &mut out,
        );
        let (calls, done) = split(out);
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls.iter().all(|c| matches!(c.0, TxCall::Estimate(_))
            && c.2[0]["data"] == json!(Bytes::from(vec![1, 2, 3]))));
        // One of them fails: fill 4 still waits for the other.
        let mut out = Vec::new();
        b.on_answer(
            calls[0].0,
            Err(ChainError::Disconnected("gone".into())),
            &mut out,
        );
        let (more, done) = split(out);
        assert_eq!(done.len(), 1);
        assert!(more.is_empty(), "{more:?}");
        let mut out = Vec::new();
        b.on_answer(
            calls[1].0,
            Err(ChainError::Disconnected("gone".into())),
            &mut out,
        );
        let (more, _) = split(out);
        assert_eq!(more.len(), 1, "fill 4's approve starts: {more:?}");
        let one = Bytes::from(crate::market::calls::approve(spender, U256::from(1u8)));
        assert_eq!(more[0].2[0]["data"], json!(one));
    }

    #[test]
    fn with_many_pending_a_head_asks_only_the_receipts_below_the_mined_nonce_count() {
        let mut b = book();
        let mut out = Vec::new();
        let n = RECEIPTS_DIRECT_MAX as u32 + 8;
        for tag in 0..n {
            b.send(req(tag), &mut out);
        }
        let sends = to_sends(&mut b, split(out).0, 0);
        assert_eq!(sends.len(), n as usize);
        for (i, s) in sends.iter().enumerate() {
            b.on_answer(s.0, Ok(json!(format!("{:#066x}", i + 1))), &mut Vec::new());
        }
        let mut out = Vec::new();
        b.on_head(101, &mut out);
        let (calls, _) = split(out);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(matches!(calls[0].0, TxCall::Mined));
        assert_eq!(calls[0].1, "eth_getTransactionCount");
        // Two mined: only their receipts are asked.
        let mut out = Vec::new();
        b.on_answer(TxCall::Mined, Ok(json!("0x2")), &mut out);
        let (receipts, _) = split(out);
        let asked: Vec<u64> = receipts
            .iter()
            .map(|c| match c.0 {
                TxCall::Receipt(id, _) => id,
                _ => panic!("not a receipt: {c:?}"),
            })
            .collect();
        assert_eq!(asked.len(), 2, "{receipts:?}");
        let nonce = |id: &u64| match &b.txs[id].stage {
            Stage::Pending { nonce, .. } => *nonce,
            other => panic!("{other:?}"),
        };
        assert!(asked.iter().all(|id| nonce(id) < 2), "{asked:?}");
        // Without the count every receipt is asked.
        let mut out = Vec::new();
        b.on_answer(
            TxCall::Mined,
            Err(ChainError::Disconnected("gone".into())),
            &mut out,
        );
        assert_eq!(split(out).0.len(), n as usize);
    }

    #[test]
    fn a_reverted_receipt_fails_the_transaction() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(req(4), &mut out);
        let sends = to_sends(&mut b, split(out).0, 0);
        let mut out = Vec::new();
        b.on_answer(sends[0].0, Ok(json!("0x01")), &mut out);
        let mut out = Vec::new();
        b.on_head(101, &mut out);
        let (calls, _) = split(out);
        let mut out = Vec::new();
        b.on_answer(
            calls[0].0,
            Ok(json!({"blockNumber": "0x65", "status": "0x0"})),
            &mut out,
        );
        assert_eq!(split(out).1, vec![(4, false)]);
        assert_eq!(b.reverted, 1);
    }

    /// Sends `r` (nonce synced to 0), answers the send and a receipt in block `block` at
    /// head `head`; returns the raw transaction sent and the done outcomes.
    fn mined(
        b: &mut TxBook<u32>,
        r: TxRequest<u32>,
        head: u64,
        block: u64,
    ) -> (Value, Vec<(u32, bool)>) {
        let mut out = Vec::new();
        b.send(r, &mut out);
        let sends = to_sends(b, split(out).0, 0);
        let raw = sends[0].2[0].clone();
        b.on_answer(sends[0].0, Ok(json!("0x01")), &mut Vec::new());
        let mut out = Vec::new();
        b.on_head(head, &mut out);
        let (calls, _) = split(out);
        let mut out = Vec::new();
        b.on_answer(
            calls[0].0,
            Ok(json!({"blockNumber": format!("{block:#x}"), "status": "0x1", "gasUsed": "0x1"})),
            &mut out,
        );
        (raw, split(out).1)
    }

    /// A receipt seen before its confirmations and then reorganised out does not count:
    /// the transaction is sent again as it was, and it counts once it is confirmed on the
    /// new chain.
    #[test]
    fn a_receipt_reorganised_out_before_its_confirmations_is_not_counted() {
        let mut b = book();
        b.set_confirmations(3);
        let (raw, done) = mined(&mut b, req(1), 101, 101);
        assert!(done.is_empty(), "one block of three");
        let mut out = Vec::new();
        b.on_reorg(&mut out);
        let (calls, _) = split(out);
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].0, calls[0].1),
            (TxCall::Resend, "eth_sendRawTransaction")
        );
        assert_eq!(calls[0].2[0], raw, "the same transaction");
        // The new chain has no receipt yet: still pending, and asked again each block.
        let mut out = Vec::new();
        b.on_head(102, &mut out);
        let (calls, _) = split(out);
        let mut out = Vec::new();
        b.on_answer(calls[0].0, Ok(Value::Null), &mut out);
        assert!(split(out).1.is_empty());
        let mut out = Vec::new();
        b.on_head(104, &mut out);
        let (calls, _) = split(out);
        let mut out = Vec::new();
        b.on_answer(
            calls[0].0,
            Ok(json!({"blockNumber": "0x66", "status": "0x1", "gasUsed": "0x1"})),
            &mut out,
        );
        assert_eq!(split(out).1, vec![(1, true)], "confirmed on the new chain");
    }

    /// A transaction counted as done whose receipt a reorganisation deeper than its
    /// confirmations removed is sent again as it was; the nonce of a fillSlot, a
    /// reserveSlot or a freeSlot goes to an empty transaction to ourselves instead (and the
    /// caller of a freeSlot or a reserveSlot is told); one still mined, or without a receipt
    /// but with its nonce used on the new chain, is left alone.
    #[test]
    fn counted_transactions_reorganised_out_are_sent_again_but_fills_are_not() {
        for (label, again) in [
            ("freeSlot", false),
            ("submitProof", true),
            ("fillSlot", false),
            ("reserveSlot", false),
            ("kept", true),
            ("nonce used", true),
        ] {
            let mut b = book();
            let r = TxRequest { label, ..req(2) };
            let (raw, done) = mined(&mut b, r, 101, 101);
            assert_eq!(done, vec![(2, true)]);
            let mut out = Vec::new();
            b.on_reorg(&mut out);
            let (calls, _) = split(out);
            assert_eq!(calls.len(), 1);
            let TxCall::Recheck(hash) = calls[0].0 else {
                panic!("{:?}", calls[0]);
            };
            let mut out = Vec::new();
            let receipt = if label == "kept" {
                json!({"blockNumber": "0x65", "status": "0x1"})
            } else {
                Value::Null
            };
            b.on_answer(TxCall::Recheck(hash), Ok(receipt), &mut out);
            if label != "kept" {
                // No receipt: the account's nonce on the new chain decides.
                let (calls, _) = split(out);
                assert_eq!(calls.len(), 1);
                assert_eq!(calls[0].0, TxCall::GoneNonce);
                out = Vec::new();
                let count = if label == "nonce used" { "0x1" } else { "0x0" };
                b.on_answer(TxCall::GoneNonce, Ok(json!(count)), &mut out);
            }
            let undone: Vec<_> = out
                .iter()
                .filter_map(|a| match a {
                    TxAction::Undone(tag, label) => Some((*tag, *label)),
                    _ => None,
                })
                .collect();
            let told = match label {
                "freeSlot" | "reserveSlot" => vec![(2, label)],
                _ => vec![],
            };
            assert_eq!(undone, told, "{label}: its caller told to read again");
            let (calls, done) = split(out);
            assert!(done.is_empty(), "{label}: told once");
            if label == "kept" || label == "nonce used" {
                assert!(calls.is_empty(), "{label}: still counted");
                continue;
            }
            assert_eq!(calls.len(), 1, "{label}");
            assert_eq!(calls[0].0, TxCall::Resend);
            let sent: Bytes = calls[0].2[0].as_str().unwrap().parse().unwrap();
            let tx = crate::chain::tx::SignedTx::decode(&sent).unwrap().tx;
            assert_eq!(tx.nonce, nonce_of(&json!([raw])), "{label}: the same nonce");
            assert_eq!(calls[0].2[0] == raw, again, "{label}");
            if !again {
                assert_eq!(tx.to, b.address());
                assert!(tx.data.is_empty());
            }
        }
    }

    /// A freeSlot pending when the chain is reorganised is withdrawn: its nonce goes to an
    /// empty transaction with higher fees, and its caller is told it failed (so its sale
    /// reads the slot again before it frees it).
    #[test]
    fn a_pending_free_slot_is_withdrawn_on_a_reorganisation() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(
            TxRequest {
                label: "freeSlot",
                ..req(3)
            },
            &mut out,
        );
        let sends = to_sends(&mut b, split(out).0, 7);
        let original = sends[0].2.clone();
        b.on_answer(sends[0].0, Ok(json!("0x01")), &mut Vec::new());
        let mut out = Vec::new();
        b.on_reorg(&mut out);
        // First: does the new chain hold it?
        let (calls, done) = split(out);
        assert!(done.is_empty());
        assert_eq!(calls.len(), 1);
        let TxCall::Receipt(id, hash) = calls[0].0 else {
            panic!("{calls:?}")
        };
        let mut out = Vec::new();
        b.on_answer(TxCall::Receipt(id, hash), Ok(Value::Null), &mut out);
        let (calls, done) = split(out);
        assert_eq!(done, vec![(3, false)]);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, TxCall::Resend);
        let sent: Bytes = calls[0].2[0].as_str().unwrap().parse().unwrap();
        let cancel = crate::chain::tx::SignedTx::decode(&sent).unwrap().tx;
        let raw: Bytes = original[0].as_str().unwrap().parse().unwrap();
        let first = crate::chain::tx::SignedTx::decode(&raw).unwrap().tx;
        assert_eq!(cancel.nonce, first.nonce);
        assert_eq!((cancel.to, cancel.data.len()), (b.address(), 0));
        assert!(cancel.max_fee_per_gas > first.max_fee_per_gas);
        assert!(b.is_empty());
    }

    /// A freeSlot pending when the chain is reorganised but mined on the new chain (a node
    /// restarted from a state that holds it) is reported mined, with its receipt (whose
    /// transfers are the payout), not withdrawn.
    #[test]
    fn a_pending_free_slot_the_new_chain_holds_is_reported_mined() {
        let mut b = book();
        let mut out = Vec::new();
        b.send(
            TxRequest {
                label: "freeSlot",
                ..req(4)
            },
            &mut out,
        );
        let sends = to_sends(&mut b, split(out).0, 7);
        b.on_answer(sends[0].0, Ok(json!("0x01")), &mut Vec::new());
        let mut out = Vec::new();
        b.on_reorg(&mut out);
        let (calls, _) = split(out);
        let TxCall::Receipt(id, hash) = calls[0].0 else {
            panic!("{calls:?}")
        };
        let mut out = Vec::new();
        b.on_answer(
            TxCall::Receipt(id, hash),
            Ok(json!({"blockNumber": "0x64", "status": "0x1", "gasUsed": "0x1"})),
            &mut out,
        );
        let (calls, done) = split(out);
        assert_eq!(done, vec![(4, true)]);
        assert!(
            calls.iter().all(|c| c.0 != TxCall::Resend),
            "no cancel: {calls:?}"
        );
    }
}
