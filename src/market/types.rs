//! Marketplace domain types (`docs/marketplace.md`), independent of the ABI layer.
//!
//! 256-bit token amounts are [`U256`] everywhere; sizes, durations and indexes are `u64`;
//! timestamps are `u64` seconds since the Unix epoch (chain time).

use std::fmt;
use std::str::FromStr;

pub use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolValue;

use super::abi;

/// Parses a 32-byte id written as 64 hex digits, with or without `0x`.
fn parse_b256(s: &str) -> Result<B256, IdParseError> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdParseError(s.to_string()));
    }
    B256::from_str(hex).map_err(|_| IdParseError(s.to_string()))
}

/// A string that is not a 32-byte `0x`-hex id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {0:?}: expected 32 bytes as 64 hex digits, optionally prefixed with 0x")]
pub struct IdParseError(pub String);

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub B256);

        impl $name {
            /// The id's 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0 .0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.0)
            }
        }
        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_b256(s).map($name)
            }
        }
        impl From<[u8; 32]> for $name {
            fn from(b: [u8; 32]) -> Self {
                $name(B256::from(b))
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// keccak256 of the ABI-encoded request (`docs/marketplace.md#ids`).
    RequestId
);
id_type!(
    /// keccak256(requestId ‖ uint256(slotIndex)) (`docs/marketplace.md#ids`).
    SlotId
);

impl SlotId {
    /// The id of slot `slot_index` of request `request`.
    pub fn of(request: RequestId, slot_index: u64) -> SlotId {
        let mut buf = [0u8; 64];
        buf[..32].copy_from_slice(request.as_bytes());
        buf[56..].copy_from_slice(&slot_index.to_be_bytes());
        SlotId(keccak256(buf))
    }
}

/// What a client asks for (`docs/marketplace.md#request-ask-and-content`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ask {
    /// On average, a proof is required about once every this many periods.
    pub proof_probability: U256,
    /// Payment per byte per second to hosts.
    pub price_per_byte_per_second: U256,
    /// Host collateral per byte of slot.
    pub collateral_per_byte: U256,
    /// Number of slots.
    pub slots: u64,
    /// Bytes per slot.
    pub slot_size: u64,
    /// Seconds from request creation until the request ends.
    pub duration: u64,
    /// Slots that may be lost before the request fails.
    pub max_slot_loss: u64,
}

impl Ask {
    /// collateralPerByte × slotSize.
    pub fn collateral_per_slot(&self) -> U256 {
        self.collateral_per_byte
            .saturating_mul(U256::from(self.slot_size))
    }
    /// pricePerBytePerSecond × slotSize.
    pub fn price_per_slot_per_second(&self) -> U256 {
        self.price_per_byte_per_second
            .saturating_mul(U256::from(self.slot_size))
    }
    /// duration × pricePerSlotPerSecond: the total payout of one slot (its profitability).
    pub fn price_per_slot(&self) -> U256 {
        self.price_per_slot_per_second()
            .saturating_mul(U256::from(self.duration))
    }
    /// The collateral a host posts for a slot in state `Repair`:
    /// collateralPerSlot − collateralPerSlot × repairRewardPercentage / 100.
    pub fn repair_collateral(&self, repair_reward_percentage: u8) -> U256 {
        let c = self.collateral_per_slot();
        c - c.saturating_mul(U256::from(repair_reward_percentage)) / U256::from(100u8)
    }
}

/// The data set a request is about (`docs/marketplace.md#request-ask-and-content`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Content {
    /// The binary CID (non-empty).
    pub cid: Vec<u8>,
    /// Dataset root, a public input of the proofs.
    pub merkle_root: B256,
}

/// A storage request (`docs/marketplace.md#request-ask-and-content`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Who pays; must be the sender of `requestStorage`.
    pub client: Address,
    /// What is asked for.
    pub ask: Ask,
    /// What is to be stored.
    pub content: Content,
    /// **Relative** seconds after creation until the request expires if not started.
    pub expiry: u64,
    /// Free value that makes otherwise identical requests distinct.
    pub nonce: B256,
}

impl Request {
    /// The request id: keccak256 of the ABI encoding of the request as one dynamic tuple
    /// argument (so the encoding starts with the offset word 0x20).
    ///
    /// `SolValue::abi_encode` of the struct itself is that encoding; wrapping it in a 1-tuple
    /// first would add a second offset word and give a different id.
    pub fn id(&self) -> RequestId {
        let encoded = self.to_abi().abi_encode();
        RequestId(keccak256(encoded))
    }

    /// The id of slot `slot_index` of this request.
    pub fn slot_id(&self, slot_index: u64) -> SlotId {
        SlotId::of(self.id(), slot_index)
    }

    /// The ABI (sol!) form of this request.
    pub fn to_abi(&self) -> abi::Request {
        abi::Request {
            client: self.client,
            ask: self.ask.to_abi(),
            content: abi::Content {
                cid: self.content.cid.clone().into(),
                merkleRoot: self.content.merkle_root,
            },
            expiry: self.expiry,
            nonce: self.nonce,
        }
    }

    /// The domain form of an ABI request.
    pub fn from_abi(r: &abi::Request) -> Request {
        Request {
            client: r.client,
            ask: Ask::from_abi(&r.ask),
            content: Content {
                cid: r.content.cid.to_vec(),
                merkle_root: r.content.merkleRoot,
            },
            expiry: r.expiry,
            nonce: r.nonce,
        }
    }
}

impl Ask {
    /// The ABI (sol!) form of this ask.
    pub fn to_abi(&self) -> abi::Ask {
        abi::Ask {
            proofProbability: self.proof_probability,
            pricePerBytePerSecond: self.price_per_byte_per_second,
            collateralPerByte: self.collateral_per_byte,
            slots: self.slots,
            slotSize: self.slot_size,
            duration: self.duration,
            maxSlotLoss: self.max_slot_loss,
        }
    }

    /// The domain form of an ABI ask.
    pub fn from_abi(a: &abi::Ask) -> Ask {
        Ask {
            proof_probability: a.proofProbability,
            price_per_byte_per_second: a.pricePerBytePerSecond,
            collateral_per_byte: a.collateralPerByte,
            slots: a.slots,
            slot_size: a.slotSize,
            duration: a.duration,
            max_slot_loss: a.maxSlotLoss,
        }
    }
}

/// Request state as computed by the contract at call time
/// (`docs/marketplace.md#request-and-slot-states`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    New = 0,
    Started = 1,
    Cancelled = 2,
    Finished = 3,
    Failed = 4,
}

/// Slot state as computed by the contract at call time
/// (`docs/marketplace.md#request-and-slot-states`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotState {
    Free = 0,
    Filled = 1,
    Finished = 2,
    Failed = 3,
    Paid = 4,
    Cancelled = 5,
    Repair = 6,
}

/// An enum value the contract should never return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} value {value}")]
pub struct InvalidEnum {
    /// Which enum.
    pub kind: &'static str,
    /// The value received.
    pub value: u8,
}

impl TryFrom<u8> for RequestState {
    type Error = InvalidEnum;
    fn try_from(v: u8) -> Result<Self, InvalidEnum> {
        use RequestState::*;
        Ok(match v {
            0 => New,
            1 => Started,
            2 => Cancelled,
            3 => Finished,
            4 => Failed,
            value => {
                return Err(InvalidEnum {
                    kind: "RequestState",
                    value,
                })
            }
        })
    }
}

impl TryFrom<u8> for SlotState {
    type Error = InvalidEnum;
    fn try_from(v: u8) -> Result<Self, InvalidEnum> {
        use SlotState::*;
        Ok(match v {
            0 => Free,
            1 => Filled,
            2 => Finished,
            3 => Failed,
            4 => Paid,
            5 => Cancelled,
            6 => Repair,
            value => {
                return Err(InvalidEnum {
                    kind: "SlotState",
                    value,
                })
            }
        })
    }
}

/// A Groth16 proof as 8 words: a.x, a.y, b.x.real, b.x.imag, b.y.real, b.y.imag, c.x, c.y
/// (`docs/marketplace.md#groth16proof`). The all-zero proof is the one the test verifier rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Groth16Proof(pub [U256; 8]);

impl Groth16Proof {
    /// True for the all-zero proof.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|w| w.is_zero())
    }
}

/// The Marketplace configuration fields a host uses (`docs/marketplace.md#marketplaceconfig`,
/// `#local-configuration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketplaceConfig {
    pub repair_reward_percentage: u8,
    pub max_number_of_slashes: u8,
    pub slash_percentage: u8,
    pub validator_reward_percentage: u8,
    /// Proof period in seconds.
    pub period: u64,
    /// Validation window after a period ends, in seconds.
    pub timeout: u64,
    /// Downtime window in blocks.
    pub downtime: u8,
    pub downtime_product: u8,
    pub zkey_hash: String,
    pub max_reservations: u8,
    pub request_duration_limit: u64,
}

impl Default for MarketplaceConfig {
    /// The local (`localhost` deploy) configuration (`docs/marketplace.md#local-configuration`).
    fn default() -> Self {
        MarketplaceConfig {
            repair_reward_percentage: 10,
            max_number_of_slashes: 2,
            slash_percentage: 20,
            validator_reward_percentage: 20,
            period: 120,
            timeout: 30,
            downtime: 64,
            downtime_product: 67,
            zkey_hash: "65dfa139e1c6dae5f50102cca2a856b759723c6ec6029343c2c6e926b855a6ca".into(),
            max_reservations: 3,
            request_duration_limit: 2_592_000,
        }
    }
}

impl MarketplaceConfig {
    /// The period containing chain time `t`: floor(t / period).
    pub fn period_of(&self, t: u64) -> u64 {
        t / self.period.max(1)
    }
    /// The first second of period `p`.
    pub fn period_start(&self, p: u64) -> u64 {
        p.saturating_mul(self.period)
    }
    /// The end of period `p` (= start of `p + 1`).
    pub fn period_end(&self, p: u64) -> u64 {
        self.period_start(p.saturating_add(1))
    }
}

/// A decoded Marketplace event (`docs/marketplace.md#events`), the host-relevant seven plus
/// ProofSubmitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketEvent {
    StorageRequested {
        request_id: RequestId,
        ask: Ask,
        /// **Absolute** expiry timestamp (expiresAt).
        expiry: u64,
    },
    SlotFilled {
        request_id: RequestId,
        slot_index: u64,
    },
    SlotFreed {
        request_id: RequestId,
        slot_index: u64,
    },
    SlotReservationsFull {
        request_id: RequestId,
        slot_index: u64,
    },
    RequestFulfilled {
        request_id: RequestId,
    },
    RequestFailed {
        request_id: RequestId,
    },
    RequestCancelled {
        request_id: RequestId,
    },
    ProofSubmitted {
        slot_id: SlotId,
    },
}

impl MarketEvent {
    /// The event's name as in the contract.
    pub fn name(&self) -> &'static str {
        match self {
            MarketEvent::StorageRequested { .. } => "StorageRequested",
            MarketEvent::SlotFilled { .. } => "SlotFilled",
            MarketEvent::SlotFreed { .. } => "SlotFreed",
            MarketEvent::SlotReservationsFull { .. } => "SlotReservationsFull",
            MarketEvent::RequestFulfilled { .. } => "RequestFulfilled",
            MarketEvent::RequestFailed { .. } => "RequestFailed",
            MarketEvent::RequestCancelled { .. } => "RequestCancelled",
            MarketEvent::ProofSubmitted { .. } => "ProofSubmitted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_id_is_keccak_of_request_id_and_index_word() {
        let r = RequestId([0x11; 32].into());
        let mut buf = [0u8; 64];
        buf[..32].copy_from_slice(&[0x11; 32]);
        buf[63] = 2;
        assert_eq!(SlotId::of(r, 2).0, keccak256(buf));
    }

    /// The request id hashes `abi.encode(request)`: the offset word 0x20, then the tuple
    /// body. The expected bytes are laid out by hand here, independently of the encoder.
    #[test]
    fn request_id_hashes_the_offset_word_and_the_tuple_body() {
        let request = Request {
            client: Address::repeat_byte(0xaa),
            ask: Ask {
                proof_probability: U256::from(1u8),
                price_per_byte_per_second: U256::from(2u8),
                collateral_per_byte: U256::from(3u8),
                slots: 4,
                slot_size: 5,
                duration: 6,
                max_slot_loss: 7,
            },
            content: Content {
                cid: vec![0xc1, 0xd0],
                merkle_root: B256::repeat_byte(0x33),
            },
            expiry: 8,
            nonce: B256::repeat_byte(0x44),
        };
        let word = |v: u64| U256::from(v).to_be_bytes::<32>();
        let mut enc = Vec::new();
        enc.extend(word(0x20)); // offset of the request tuple
        enc.extend([0u8; 12]);
        enc.extend([0xaa; 20]); // client
        for v in 1..=7 {
            enc.extend(word(v)); // ask, inline
        }
        enc.extend(word(11 * 32)); // offset of content within the tuple (11 head words)
        enc.extend(word(8)); // expiry
        enc.extend([0x44; 32]); // nonce
        enc.extend(word(0x40)); // offset of cid within content
        enc.extend([0x33; 32]); // merkleRoot
        enc.extend(word(2)); // cid length
        let mut cid = [0u8; 32];
        cid[..2].copy_from_slice(&[0xc1, 0xd0]);
        enc.extend(cid);
        assert_eq!(enc.len(), 16 * 32);
        assert_eq!(request.id().0, keccak256(&enc));
    }

    #[test]
    fn ids_round_trip_through_strings() {
        let s = "0x0102030405060708091011121314151617181920212223242526272829303132";
        let id: RequestId = s.parse().unwrap();
        assert_eq!(id.to_string(), s);
        assert!("0x1234".parse::<RequestId>().is_err());
        assert!(s.trim_start_matches("0x").parse::<SlotId>().is_ok());
    }

    #[test]
    fn repair_collateral_matches_the_spec_example() {
        let ask = Ask {
            collateral_per_byte: U256::from(1u8),
            slot_size: 1024,
            ..Ask::default()
        };
        assert_eq!(ask.repair_collateral(10), U256::from(922u32));
    }
}
