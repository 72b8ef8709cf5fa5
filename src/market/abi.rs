//! The Marketplace ABI, declared once with alloy's `sol!`.
//!
//! Struct layouts follow `spec/marketplace.md` §2 (ABI order matters: it fixes the ids).
#![allow(missing_docs)]

alloy_sol_types::sol! {
    #[derive(Debug, PartialEq, Eq)]
    struct Ask {
        uint256 proofProbability;
        uint256 pricePerBytePerSecond;
        uint256 collateralPerByte;
        uint64 slots;
        uint64 slotSize;
        uint64 duration;
        uint64 maxSlotLoss;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Content {
        bytes cid;
        bytes32 merkleRoot;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Request {
        address client;
        Ask ask;
        Content content;
        uint64 expiry;
        bytes32 nonce;
    }
}
