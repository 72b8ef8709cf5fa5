//! Transactions, pure: EIP-1559 building, RLP, signing, raw bytes and hash; nonce tracking;
//! the reference's gas headroom (`docs/marketplace.md#gas`); classifying a node's rejection.
//!
//! No I/O here: the driver asks the node for the chain id, the pending nonce, the base fee and
//! a gas estimate, feeds them in, and sends the raw bytes this module produces.
//!
//! Wire format (EIP-2718 type 2):
//! `0x02 ‖ rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gasLimit, to, value, data,
//! accessList, yParity, r, s])`, signed over `keccak256(0x02 ‖ rlp([... accessList]))`.
//! The access list is always empty. The transaction hash is keccak256 of the raw bytes.

use std::collections::BTreeSet;

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_rlp::{Decodable, Encodable, Header};
use k256::ecdsa::Signature;

use super::key::{recover_address, EthPrivateKey};

/// The EIP-2718 type byte of EIP-1559 transactions.
pub const EIP1559_TX_TYPE: u8 = 0x02;

/// Why a transaction could not be signed or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// k256 could not sign (does not happen for valid keys).
    #[error("signing the transaction failed")]
    Signing,
    /// Raw bytes that are not a signed EIP-1559 transaction.
    #[error("malformed raw transaction: {0}")]
    Malformed(String),
    /// The signature does not recover to any public key.
    #[error("transaction signature does not recover")]
    BadSignature,
}

/// An unsigned EIP-1559 transaction with an empty access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eip1559Tx {
    /// The chain id, from the node (`eth_chainId`).
    pub chain_id: u64,
    /// The sender's nonce, from a [`NonceTracker`].
    pub nonce: u64,
    /// The tip per gas.
    pub max_priority_fee_per_gas: u128,
    /// The most paid per gas, base fee included.
    pub max_fee_per_gas: u128,
    /// The gas limit (estimate plus headroom, see [`gas_limit_with_headroom`]).
    pub gas_limit: u64,
    /// The contract called.
    pub to: Address,
    /// Wei sent along (zero for Marketplace and token calls).
    pub value: U256,
    /// The calldata.
    pub data: Bytes,
}

/// A signed EIP-1559 transaction: the raw bytes to send and the hash to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// What was signed.
    pub tx: Eip1559Tx,
    /// Parity of the signature's y coordinate.
    pub y_parity: bool,
    /// Signature r.
    pub r: U256,
    /// Signature s (low-s).
    pub s: U256,
    /// `0x02 ‖ rlp(fields ‖ signature)`, for `eth_sendRawTransaction`.
    pub raw: Bytes,
    /// keccak256 of `raw`: the transaction hash.
    pub hash: B256,
}

/// The minimal big-endian bytes of a U256 (empty for zero), as RLP wants integers.
fn trimmed(v: &U256) -> Vec<u8> {
    v.to_be_bytes_trimmed_vec()
}

impl Eip1559Tx {
    fn encode_fields(&self, payload: &mut Vec<u8>) {
        self.chain_id.encode(payload);
        self.nonce.encode(payload);
        self.max_priority_fee_per_gas.encode(payload);
        self.max_fee_per_gas.encode(payload);
        self.gas_limit.encode(payload);
        self.to.as_slice().encode(payload);
        trimmed(&self.value).as_slice().encode(payload);
        self.data.as_ref().encode(payload);
        // empty access list
        Header {
            list: true,
            payload_length: 0,
        }
        .encode(payload);
    }

    fn typed_envelope(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 10);
        out.push(EIP1559_TX_TYPE);
        Header {
            list: true,
            payload_length: payload.len(),
        }
        .encode(&mut out);
        out.extend_from_slice(payload);
        out
    }

    /// The hash that is signed: keccak256(0x02 ‖ rlp(unsigned fields)).
    pub fn signing_hash(&self) -> B256 {
        let mut payload = Vec::with_capacity(160 + self.data.len());
        self.encode_fields(&mut payload);
        keccak256(Self::typed_envelope(&payload))
    }

    /// Signs the transaction.
    pub fn sign(self, key: &EthPrivateKey) -> Result<SignedTx, TxError> {
        let (sig, y_parity) = key
            .sign_hash(&self.signing_hash())
            .map_err(|_| TxError::Signing)?;
        let r = U256::from_be_slice(&sig.r().to_bytes());
        let s = U256::from_be_slice(&sig.s().to_bytes());
        Ok(self.with_signature(y_parity, r, s))
    }

    /// Attaches a signature and serializes.
    pub fn with_signature(self, y_parity: bool, r: U256, s: U256) -> SignedTx {
        let mut payload = Vec::with_capacity(230 + self.data.len());
        self.encode_fields(&mut payload);
        y_parity.encode(&mut payload);
        trimmed(&r).as_slice().encode(&mut payload);
        trimmed(&s).as_slice().encode(&mut payload);
        let raw = Self::typed_envelope(&payload);
        let hash = keccak256(&raw);
        SignedTx {
            tx: self,
            y_parity,
            r,
            s,
            raw: raw.into(),
            hash,
        }
    }
}

/// Reads one RLP string item.
fn take_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], TxError> {
    Header::decode_bytes(buf, false).map_err(|e| TxError::Malformed(e.to_string()))
}

/// Reads one RLP integer (canonical: no leading zeros) of at most 32 bytes.
fn take_u256(buf: &mut &[u8]) -> Result<U256, TxError> {
    let b = take_bytes(buf)?;
    if b.len() > 32 || b.first() == Some(&0) {
        return Err(TxError::Malformed("non-canonical integer".into()));
    }
    Ok(U256::from_be_slice(b))
}

fn take<T: Decodable>(buf: &mut &[u8]) -> Result<T, TxError> {
    T::decode(buf).map_err(|e| TxError::Malformed(e.to_string()))
}

impl SignedTx {
    /// Parses raw EIP-1559 bytes (the inverse of [`Eip1559Tx::sign`]).
    pub fn decode(raw: &[u8]) -> Result<SignedTx, TxError> {
        let (&ty, mut rest) = raw
            .split_first()
            .ok_or_else(|| TxError::Malformed("empty".into()))?;
        if ty != EIP1559_TX_TYPE {
            return Err(TxError::Malformed(format!("transaction type {ty:#04x}")));
        }
        let mut body =
            Header::decode_bytes(&mut rest, true).map_err(|e| TxError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(TxError::Malformed("trailing bytes".into()));
        }
        let b = &mut body;
        let chain_id = take::<u64>(b)?;
        let nonce = take::<u64>(b)?;
        let max_priority_fee_per_gas = take::<u128>(b)?;
        let max_fee_per_gas = take::<u128>(b)?;
        let gas_limit = take::<u64>(b)?;
        let to = take_bytes(b)?;
        if to.len() != 20 {
            return Err(TxError::Malformed("`to` is not 20 bytes".into()));
        }
        let to = Address::from_slice(to);
        let value = take_u256(b)?;
        let data = Bytes::copy_from_slice(take_bytes(b)?);
        let access_list =
            Header::decode_bytes(b, true).map_err(|e| TxError::Malformed(e.to_string()))?;
        if !access_list.is_empty() {
            return Err(TxError::Malformed("non-empty access list".into()));
        }
        let y_parity = take::<bool>(b)?;
        let r = take_u256(b)?;
        let s = take_u256(b)?;
        if !b.is_empty() {
            return Err(TxError::Malformed("extra fields".into()));
        }
        let tx = Eip1559Tx {
            chain_id,
            nonce,
            max_priority_fee_per_gas,
            max_fee_per_gas,
            gas_limit,
            to,
            value,
            data,
        };
        let signed = tx.with_signature(y_parity, r, s);
        if signed.raw.as_ref() != raw {
            return Err(TxError::Malformed("non-canonical encoding".into()));
        }
        Ok(signed)
    }

    /// The address whose key signed this transaction.
    pub fn recover_signer(&self) -> Result<Address, TxError> {
        let sig = Signature::from_scalars(self.r.to_be_bytes::<32>(), self.s.to_be_bytes::<32>())
            .map_err(|_| TxError::BadSignature)?;
        recover_address(&self.tx.signing_hash(), &sig, self.y_parity).ok_or(TxError::BadSignature)
    }
}

// ---------------------------------------------------------------------------------------------
// Fees and gas

/// EIP-1559 fees from the latest base fee: the tip is the node's suggestion when it gives one,
/// else `default_priority_fee` (the book's 1 gwei); the cap is
/// 2 × base fee × (9/8)^`blocks_ahead` + tip. The base fee rises by at most 1/8 per full block,
/// so the cap survives six consecutive full blocks after the `blocks_ahead` blocks that the
/// sender's own transactions queued before this one would fill. The cap only bounds what the
/// transaction may pay: it pays the base fee of its block plus the tip.
pub fn fees(
    base_fee_per_gas: u128,
    suggested_priority_fee: Option<u128>,
    default_priority_fee: u128,
    blocks_ahead: u64,
) -> (u128, u128) {
    let tip = suggested_priority_fee.unwrap_or(default_priority_fee);
    let mut cap = base_fee_per_gas.saturating_mul(2);
    for _ in 0..blocks_ahead.min(MAX_BLOCKS_AHEAD) {
        cap = cap.saturating_add(cap / 8);
    }
    (cap.saturating_add(tip), tip)
}

/// The most blocks of its own transactions ahead that a fee cap is raised for
/// ((9/8)^32 ≈ 43 × the base fee, on top of the 2 ×). The node's account must hold
/// gas limit × cap for each transaction it sends, so the cap is bounded: 32 full blocks are
/// about 12,000 proofs in blocks of 30 M gas.
pub const MAX_BLOCKS_AHEAD: u64 = 32;

/// Which call a transaction makes, for its gas headroom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GasCall {
    /// `fillSlot`: ×1.10 (the last filler does extra work).
    FillSlot,
    /// `reserveSlot`: ×1.25.
    ReserveSlot,
    /// `freeSlot` (either form): ×3.
    FreeSlot,
    /// `markProofAsMissing`: ×1.5.
    MarkProofAsMissing,
    /// Everything else (`submitProof`, `approve`, `requestStorage`, `withdrawFunds`): the
    /// estimate as is.
    Other,
}

/// The gas limit for a call from the node's `eth_estimateGas`, with the reference's headroom
/// (`docs/marketplace.md#gas`), rounded down, saturating.
pub fn gas_limit_with_headroom(call: GasCall, estimate: u64) -> u64 {
    let (num, den): (u128, u128) = match call {
        GasCall::FillSlot => (110, 100),
        GasCall::ReserveSlot => (125, 100),
        GasCall::FreeSlot => (3, 1),
        GasCall::MarkProofAsMissing => (150, 100),
        GasCall::Other => (1, 1),
    };
    u64::try_from(u128::from(estimate) * num / den).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Nonces

/// Hands out nonces for one sender. Pure: the driver tells it what the chain says.
///
/// - Until [`sync`](Self::sync) is called with the chain's pending transaction count
///   (`eth_getTransactionCount(addr, "pending")`), [`next_nonce`](Self::next_nonce) returns `None`.
/// - A nonce whose transaction never entered the pool (rejected by the node, or dropped) is
///   [`release`](Self::release)d and handed out again before any new one, so no gap blocks
///   later transactions.
/// - On "nonce too low" (someone else used the key, or the tracker fell behind),
///   [`on_nonce_too_low`](Self::on_nonce_too_low) forgets everything; the driver resyncs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NonceTracker {
    next: Option<u64>,
    released: BTreeSet<u64>,
}

impl NonceTracker {
    /// A tracker that needs a sync first.
    pub fn new() -> NonceTracker {
        NonceTracker::default()
    }

    /// True until the chain's pending count has been fed in.
    pub fn needs_sync(&self) -> bool {
        self.next.is_none()
    }

    /// Sets the next nonce to the chain's pending transaction count of the sender and forgets
    /// released nonces (the chain's count is the truth).
    pub fn sync(&mut self, pending_count: u64) {
        self.next = Some(pending_count);
        self.released.clear();
    }

    /// The nonce for the next transaction: the lowest released one, else a fresh one.
    /// `None` when a sync is needed.
    pub fn next_nonce(&mut self) -> Option<u64> {
        let next = self.next.as_mut()?;
        if let Some(n) = self.released.pop_first() {
            return Some(n);
        }
        let n = *next;
        *next = next.saturating_add(1);
        Some(n)
    }

    /// Whether `nonce` was given back and waits to be reused.
    pub fn is_released(&self, nonce: u64) -> bool {
        self.released.contains(&nonce)
    }

    /// Gives back a nonce whose transaction was rejected or dropped, to be reused.
    pub fn release(&mut self, nonce: u64) {
        if let Some(next) = self.next {
            if nonce < next {
                self.released.insert(nonce);
                // Trim the top so fresh nonces stay contiguous.
                while let Some(top) = self.next.filter(|n| *n > 0).map(|n| n - 1) {
                    if self.released.remove(&top) {
                        self.next = Some(top);
                    } else {
                        break;
                    }
                }
            }
        }
    }

    /// The node said "nonce too low": forget the state; the driver must [`sync`](Self::sync).
    pub fn on_nonce_too_low(&mut self) {
        self.next = None;
        self.released.clear();
    }
}

/// How a node rejected `eth_sendRawTransaction`, from its error message (anvil, hardhat and
/// geth wordings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRejection {
    /// The nonce is already used: resync the [`NonceTracker`] and rebuild.
    NonceTooLow,
    /// The same transaction is already in the pool: treat as sent.
    AlreadyKnown,
    /// A different transaction with this nonce is pending and this one does not pay enough
    /// more to replace it.
    ReplacementUnderpriced,
    /// The sender cannot pay gas × fee + value.
    InsufficientFunds,
    /// Anything else; the nonce was not used and can be released.
    Other,
}

/// Classifies a send error message.
pub fn classify_send_error(message: &str) -> SendRejection {
    let m = message.to_ascii_lowercase();
    if m.contains("nonce too low") || m.contains("nonce has already been used") {
        SendRejection::NonceTooLow
    } else if m.contains("already known") || m.contains("already imported") {
        SendRejection::AlreadyKnown
    } else if m.contains("replacement transaction underpriced") || m.contains("replacement fee") {
        SendRejection::ReplacementUnderpriced
    } else if m.contains("insufficient funds") {
        SendRejection::InsufficientFunds
    } else {
        SendRejection::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::hex;
    use proptest::prelude::*;

    const ANVIL0_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn key() -> EthPrivateKey {
        EthPrivateKey::from_hex(ANVIL0_KEY).unwrap()
    }

    fn sample_tx() -> Eip1559Tx {
        Eip1559Tx {
            chain_id: 31337,
            nonce: 7,
            max_priority_fee_per_gas: 1_000_000_000,
            max_fee_per_gas: 2_875_000_000,
            gas_limit: 100_000,
            to: "0xa85233C63b9Ee964Add6F2cffe00Fd84eb32338f"
                .parse()
                .unwrap(),
            value: U256::ZERO,
            data: hex::decode("a29c29a4").unwrap().into(),
        }
    }

    #[test]
    fn signed_tx_recovers_to_the_signer_and_round_trips() {
        let signed = sample_tx().sign(&key()).unwrap();
        assert_eq!(signed.raw[0], 0x02);
        assert_eq!(signed.recover_signer().unwrap(), key().address());
        assert_eq!(signed.hash, keccak256(&signed.raw));
        let decoded = SignedTx::decode(&signed.raw).unwrap();
        assert_eq!(decoded, signed);
    }

    /// The RLP layout, checked byte by byte for a small transaction.
    #[test]
    fn unsigned_encoding_is_laid_out_as_eip1559_says() {
        let tx = Eip1559Tx {
            chain_id: 1,
            nonce: 0,
            max_priority_fee_per_gas: 0,
            max_fee_per_gas: 0x0100,
            gas_limit: 21000,
            to: Address::repeat_byte(0x11),
            value: U256::from(1u8),
            data: Bytes::new(),
        };
        let mut expected = vec![0x02];
        let mut payload = vec![0x01, 0x80, 0x80, 0x82, 0x01, 0x00, 0x82, 0x52, 0x08, 0x94];
        payload.extend([0x11; 20]);
        payload.extend([0x01, 0x80, 0xc0]);
        expected.push(0xc0 + payload.len() as u8);
        expected.extend(payload);
        assert_eq!(tx.signing_hash(), keccak256(&expected));
    }

    /// A vector pinned in `fixtures/vectors/tx.json`. The key, fields, expected raw bytes and
    /// hash come from anvil 1.7.1: `eth_signTransaction` for account 0 (which signs with the
    /// same RFC 6979 deterministic nonce), see the file's note.
    #[test]
    fn matches_the_pinned_vector() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct V {
            private_key: String,
            chain_id: u64,
            nonce: u64,
            max_priority_fee_per_gas: u128,
            max_fee_per_gas: u128,
            gas_limit: u64,
            to: Address,
            value: U256,
            data: Bytes,
            raw: Bytes,
            hash: B256,
            from: Address,
        }
        let vs: Vec<V> =
            serde_json::from_str(include_str!("../../fixtures/vectors/tx.json")).unwrap();
        assert!(!vs.is_empty());
        for v in vs {
            let key = EthPrivateKey::from_hex(&v.private_key).unwrap();
            assert_eq!(key.address(), v.from);
            let signed = Eip1559Tx {
                chain_id: v.chain_id,
                nonce: v.nonce,
                max_priority_fee_per_gas: v.max_priority_fee_per_gas,
                max_fee_per_gas: v.max_fee_per_gas,
                gas_limit: v.gas_limit,
                to: v.to,
                value: v.value,
                data: v.data,
            }
            .sign(&key)
            .unwrap();
            assert_eq!(signed.raw, v.raw);
            assert_eq!(signed.hash, v.hash);
            assert_eq!(
                SignedTx::decode(&v.raw).unwrap().recover_signer(),
                Ok(v.from)
            );
        }
    }

    #[test]
    fn bad_raw_bytes_are_errors() {
        let signed = sample_tx().sign(&key()).unwrap();
        assert!(SignedTx::decode(&[]).is_err());
        assert!(SignedTx::decode(&signed.raw[1..]).is_err());
        assert!(SignedTx::decode(&signed.raw[..signed.raw.len() - 1]).is_err());
        let mut extra = signed.raw.to_vec();
        extra.push(0);
        assert!(SignedTx::decode(&extra).is_err());
    }

    #[test]
    fn headroom_follows_the_reference() {
        assert_eq!(gas_limit_with_headroom(GasCall::FillSlot, 333_000), 366_300);
        assert_eq!(
            gas_limit_with_headroom(GasCall::ReserveSlot, 80_000),
            100_000
        );
        assert_eq!(gas_limit_with_headroom(GasCall::FreeSlot, 83_000), 249_000);
        assert_eq!(
            gas_limit_with_headroom(GasCall::MarkProofAsMissing, 148_001),
            222_001
        );
        assert_eq!(gas_limit_with_headroom(GasCall::Other, 80_000), 80_000);
        assert_eq!(
            gas_limit_with_headroom(GasCall::FreeSlot, u64::MAX),
            u64::MAX
        );
        assert_eq!(gas_limit_with_headroom(GasCall::FillSlot, 9), 9);
    }

    #[test]
    fn fees_use_the_node_tip_or_the_default() {
        assert_eq!(fees(1_000, Some(5), 7, 0), (2_005, 5));
        assert_eq!(fees(1_000, None, 7, 0), (2_007, 7));
        assert_eq!(fees(u128::MAX, None, 7, 0), (u128::MAX, 7));
    }

    #[test]
    fn the_fee_cap_grows_by_an_eighth_for_each_full_block_of_own_transactions_ahead() {
        // 2,000 × 9/8 = 2,250; × 9/8 = 2,531 (rounded down at each step).
        assert_eq!(fees(1_000, None, 7, 1), (2_257, 7));
        assert_eq!(fees(1_000, None, 7, 2), (2_538, 7));
        // 27 full blocks (10,000 proofs of 80 k gas in blocks of 30 M gas): about 24 × the
        // base fee that those blocks raise it to, and 2 × on top.
        let (cap, _) = fees(1_000_000_000, None, 0, 27);
        assert!(
            cap > 2 * 1_000_000_000 * 24 && cap < 2 * 1_000_000_000 * 25,
            "{cap}"
        );
        // Bounded, and saturating.
        assert_eq!(
            fees(1_000, None, 0, 1_000),
            fees(1_000, None, 0, MAX_BLOCKS_AHEAD)
        );
        assert_eq!(fees(u128::MAX / 3, None, 7, 10), (u128::MAX, 7));
    }

    #[test]
    fn nonce_tracker_hands_out_resyncs_and_reuses() {
        let mut n = NonceTracker::new();
        assert!(n.needs_sync());
        assert_eq!(n.next_nonce(), None);
        n.sync(5);
        assert_eq!(
            (n.next_nonce(), n.next_nonce(), n.next_nonce()),
            (Some(5), Some(6), Some(7))
        );
        // 6 dropped: reused before 8
        n.release(6);
        assert_eq!(n.next_nonce(), Some(6));
        assert_eq!(n.next_nonce(), Some(8));
        // the top nonce rejected: handed out again, and fresh ones stay contiguous
        n.release(8);
        assert_eq!(n.next_nonce(), Some(8));
        assert_eq!(n.next_nonce(), Some(9));
        // releasing a nonce never handed out is ignored
        n.release(100);
        assert_eq!(n.next_nonce(), Some(10));
        // "nonce too low": needs a sync, then follows the chain
        n.on_nonce_too_low();
        assert_eq!(n.next_nonce(), None);
        n.sync(20);
        assert_eq!(n.next_nonce(), Some(20));
        // a sync forgets released nonces
        n.release(20);
        n.sync(21);
        assert_eq!(n.next_nonce(), Some(21));
    }

    #[test]
    fn send_errors_are_classified() {
        use SendRejection::*;
        for (m, want) in [
            ("nonce too low", NonceTooLow),
            (
                "Nonce too low. Expected nonce to be 7 but got 5.",
                NonceTooLow,
            ),
            (
                "nonce too low: address 0xf39f…, tx: 5 state: 7",
                NonceTooLow,
            ),
            ("already known", AlreadyKnown),
            (
                "replacement transaction underpriced",
                ReplacementUnderpriced,
            ),
            (
                "insufficient funds for gas * price + value",
                InsufficientFunds,
            ),
            ("max fee per gas less than block base fee", Other),
        ] {
            assert_eq!(classify_send_error(m), want, "{m}");
        }
    }

    proptest! {
        #[test]
        fn random_raw_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut raw = vec![0x02];
            raw.extend(bytes);
            if let Ok(tx) = SignedTx::decode(&raw) {
                let _ = tx.recover_signer();
            }
        }

        #[test]
        fn any_tx_round_trips(
            nonce in any::<u64>(), tip in any::<u128>(), cap in any::<u128>(),
            gas in any::<u64>(), value in any::<[u8; 32]>(),
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let tx = Eip1559Tx {
                chain_id: 31337, nonce, max_priority_fee_per_gas: tip, max_fee_per_gas: cap,
                gas_limit: gas, to: Address::repeat_byte(1), value: U256::from_be_bytes(value),
                data: data.into(),
            };
            let signed = tx.sign(&key()).unwrap();
            prop_assert_eq!(SignedTx::decode(&signed.raw).unwrap(), signed.clone());
            prop_assert_eq!(signed.recover_signer().unwrap(), key().address());
        }
    }
}
