//! The Marketplace ABI, declared once with alloy's `sol!`.
//!
//! Struct layouts follow the contract's field order (it fixes the ids and the selectors; see
//! `docs/marketplace.md#ids`). The interface [`Marketplace`] holds the functions, events and
//! custom errors codex uses; [`IERC20`] the token calls, events and OpenZeppelin errors; [`TestMarketplace`] the four test helpers of the dev-chain contract; [`Vault`]
//! only the Vault's custom errors (the Marketplace does not use the Vault at HEAD, but its
//! errors are decoded too, so that a revert decoder names them; see
//! `docs/marketplace.md#vault`).
//!
//! `RequestId` and `SlotId` are user-defined value types over `bytes32` in Solidity; here they
//! are plain `bytes32` (the selectors are the same) and become typed ids in
//! [`super::types`] and [`super::calls`].
#![allow(missing_docs)]

use alloy_sol_types::SolCall;

use super::types;

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

    /// What `getActiveSlot` returns: one dynamic tuple (`docs/marketplace.md#getactiveslot`).
    #[derive(Debug, PartialEq, Eq)]
    struct ActiveSlot {
        Request request;
        uint64 slotIndex;
    }

    #[derive(Debug, PartialEq, Eq, Default)]
    struct G1Point {
        uint256 x;
        uint256 y;
    }

    #[derive(Debug, PartialEq, Eq, Default)]
    struct Fp2Element {
        uint256 real;
        uint256 imag;
    }

    #[derive(Debug, PartialEq, Eq, Default)]
    struct G2Point {
        Fp2Element x;
        Fp2Element y;
    }

    /// Fully static: 8 words (`docs/marketplace.md#groth16proof`).
    #[derive(Debug, PartialEq, Eq, Default)]
    struct Groth16Proof {
        G1Point a;
        G2Point b;
        G1Point c;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct CollateralConfig {
        uint8 repairRewardPercentage;
        uint8 maxNumberOfSlashes;
        uint8 slashPercentage;
        uint8 validatorRewardPercentage;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct ProofConfig {
        uint64 period;
        uint64 timeout;
        uint8 downtime;
        uint8 downtimeProduct;
        string zkeyHash;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct SlotReservationsConfig {
        uint8 maxReservations;
    }

    /// Dynamic because of `zkeyHash` (`docs/marketplace.md#marketplaceconfig`).
    #[derive(Debug, PartialEq, Eq)]
    struct MarketplaceConfig {
        CollateralConfig collateral;
        ProofConfig proofs;
        SlotReservationsConfig reservations;
        uint64 requestDurationLimit;
    }

    /// The Marketplace: `docs/marketplace.md#functions`, `#events`, `#errors`. Overloads are
    /// numbered in declaration order by `sol!`:
    /// `freeSlot_0` is `freeSlot(bytes32)`, `freeSlot_1` the three-argument form;
    /// `withdrawFunds_0` is `withdrawFunds(bytes32)`, `withdrawFunds_1` takes a recipient.
    #[derive(Debug, PartialEq, Eq)]
    interface Marketplace {
        function configuration() external view returns (MarketplaceConfig memory);
        function token() external view returns (address);
        function requestStorage(Request calldata request) external;
        function reserveSlot(bytes32 requestId, uint64 slotIndex) external;
        function canReserveSlot(bytes32 requestId, uint64 slotIndex) external view returns (bool);
        function fillSlot(bytes32 requestId, uint64 slotIndex, Groth16Proof calldata proof) external;
        function submitProof(bytes32 id, Groth16Proof calldata proof) external;
        function freeSlot(bytes32 slotId) external;
        function freeSlot(bytes32 slotId, address rewardRecipient, address collateralRecipient) external;
        function withdrawFunds(bytes32 requestId) external;
        function withdrawFunds(bytes32 requestId, address withdrawRecipient) external;
        function markProofAsMissing(bytes32 slotId, uint64 period) external;
        function canMarkProofAsMissing(bytes32 slotId, uint64 period) external view;
        function getRequest(bytes32 requestId) external view returns (Request memory);
        function getActiveSlot(bytes32 slotId) external view returns (ActiveSlot memory);
        function getHost(bytes32 slotId) external view returns (address);
        function currentCollateral(bytes32 slotId) external view returns (uint256);
        function requestState(bytes32 requestId) external view returns (uint8);
        function slotState(bytes32 slotId) external view returns (uint8);
        function requestEnd(bytes32 requestId) external view returns (uint64);
        function requestExpiry(bytes32 requestId) external view returns (uint64);
        function myRequests() external view returns (bytes32[] memory);
        function mySlots() external view returns (bytes32[] memory);
        function missingProofs(bytes32 slotId) external view returns (uint64);
        function isProofRequired(bytes32 id) external view returns (bool);
        function willProofBeRequired(bytes32 id) external view returns (bool);
        function getChallenge(bytes32 id) external view returns (bytes32);
        function getPointer(bytes32 id) external view returns (uint8);
        function slotProbability(bytes32 id) external view returns (uint256);

        event StorageRequested(bytes32 requestId, Ask ask, uint64 expiry);
        event SlotFilled(bytes32 indexed requestId, uint64 slotIndex);
        event SlotFreed(bytes32 indexed requestId, uint64 slotIndex);
        event SlotReservationsFull(bytes32 indexed requestId, uint64 slotIndex);
        event RequestFulfilled(bytes32 indexed requestId);
        event RequestFailed(bytes32 indexed requestId);
        event RequestCancelled(bytes32 indexed requestId);
        event ProofSubmitted(bytes32 id);

        error Marketplace_AlreadyPaid();
        error Marketplace_DurationExceedsLimit();
        error Marketplace_InsufficientCollateral();
        error Marketplace_InsufficientDuration();
        error Marketplace_InsufficientProofProbability();
        error Marketplace_InsufficientReward();
        error Marketplace_InsufficientSlots();
        error Marketplace_InvalidCid();
        error Marketplace_InvalidClientAddress();
        error Marketplace_InvalidExpiry();
        error Marketplace_InvalidMaxSlotLoss();
        error Marketplace_InvalidSlot();
        error Marketplace_InvalidSlotHost();
        error Marketplace_InvalidState();
        error Marketplace_MaximumSlashingTooHigh();
        error Marketplace_NothingToWithdraw();
        error Marketplace_ProofNotSubmittedByHost();
        error Marketplace_RepairRewardPercentageTooHigh();
        error Marketplace_RequestAlreadyExists();
        error Marketplace_ReservationRequired();
        error Marketplace_SlashPercentageTooHigh();
        error Marketplace_SlotIsFree();
        error Marketplace_SlotNotAcceptingProofs();
        error Marketplace_SlotNotFree();
        error Marketplace_StartNotBeforeExpiry();
        error Marketplace_TransferFailed();
        error Marketplace_UnknownRequest();
        error Proofs_InsufficientBlockHeight();
        error Proofs_InvalidProof();
        error Proofs_PeriodNotEnded();
        error Proofs_ProofAlreadyMarkedMissing();
        error Proofs_ProofAlreadySubmitted();
        error Proofs_ProofNotMissing();
        error Proofs_ProofNotRequired();
        error Proofs_ValidationTimedOut();
        error SlotReservations_ReservationNotAllowed();
        error Periods_InvalidSecondsPerPeriod();
    }

    /// The dev chain's TestMarketplace adds these helpers (`docs/marketplace.md#functions`).
    interface TestMarketplace {
        function forciblyFreeSlot(bytes32 slotId) external;
        function getSlotCollateral(bytes32 slotId) external view returns (uint256);
        function challengeToFieldElement(bytes32 challenge) external pure returns (uint256);
        function merkleRootToFieldElement(bytes32 merkleRoot) external pure returns (uint256);
    }

    /// The ERC-20 token (OpenZeppelin 5.3 + the TestToken's open `mint`)
    /// (`docs/marketplace.md#erc-20`).
    #[derive(Debug, PartialEq, Eq)]
    interface IERC20 {
        function approve(address spender, uint256 value) external returns (bool);
        function allowance(address owner, address spender) external view returns (uint256);
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 value) external returns (bool);
        function transferFrom(address from, address to, uint256 value) external returns (bool);
        function mint(address account, uint256 value) external;

        event Transfer(address indexed from, address indexed to, uint256 value);
        event Approval(address indexed owner, address indexed spender, uint256 value);

        error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
        error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
    }

    /// Vault custom errors and OpenZeppelin Pausable's `EnforcedPause`
    /// (`docs/marketplace.md#vault`).
    #[derive(Debug, PartialEq, Eq)]
    interface Vault {
        error VaultInsufficientBalance();
        error VaultInvalidExpiry();
        error VaultFundNotLocked();
        error VaultFundNotUnlocked();
        error VaultFundAlreadyLocked();
        error VaultFlowNotZero();
        error VaultOnlyAccountHolder();
        error EnforcedPause();
    }
}

/// Return data of a view call that does not decode as its declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode the result of {call}: {reason}")]
pub struct AbiDecodeError {
    /// The Solidity signature of the call whose result was malformed.
    pub call: &'static str,
    /// What the ABI decoder reported.
    pub reason: String,
}

impl AbiDecodeError {
    pub(crate) fn of<C: SolCall>(e: alloy_sol_types::Error) -> Self {
        AbiDecodeError {
            call: C::SIGNATURE,
            reason: e.to_string(),
        }
    }
}

impl From<MarketplaceConfig> for types::MarketplaceConfig {
    fn from(c: MarketplaceConfig) -> Self {
        types::MarketplaceConfig {
            repair_reward_percentage: c.collateral.repairRewardPercentage,
            max_number_of_slashes: c.collateral.maxNumberOfSlashes,
            slash_percentage: c.collateral.slashPercentage,
            validator_reward_percentage: c.collateral.validatorRewardPercentage,
            period: c.proofs.period,
            timeout: c.proofs.timeout,
            downtime: c.proofs.downtime,
            downtime_product: c.proofs.downtimeProduct,
            zkey_hash: c.proofs.zkeyHash,
            max_reservations: c.reservations.maxReservations,
            request_duration_limit: c.requestDurationLimit,
        }
    }
}

impl From<&types::MarketplaceConfig> for MarketplaceConfig {
    fn from(c: &types::MarketplaceConfig) -> Self {
        MarketplaceConfig {
            collateral: CollateralConfig {
                repairRewardPercentage: c.repair_reward_percentage,
                maxNumberOfSlashes: c.max_number_of_slashes,
                slashPercentage: c.slash_percentage,
                validatorRewardPercentage: c.validator_reward_percentage,
            },
            proofs: ProofConfig {
                period: c.period,
                timeout: c.timeout,
                downtime: c.downtime,
                downtimeProduct: c.downtime_product,
                zkeyHash: c.zkey_hash.clone(),
            },
            reservations: SlotReservationsConfig {
                maxReservations: c.max_reservations,
            },
            requestDurationLimit: c.request_duration_limit,
        }
    }
}

/// Decodes the return data of `configuration()` into the domain configuration.
pub fn decode_configuration(data: &[u8]) -> Result<types::MarketplaceConfig, AbiDecodeError> {
    Marketplace::configurationCall::abi_decode_returns_validate(data)
        .map(types::MarketplaceConfig::from)
        .map_err(AbiDecodeError::of::<Marketplace::configurationCall>)
}

impl From<&types::Groth16Proof> for Groth16Proof {
    fn from(p: &types::Groth16Proof) -> Self {
        let w = p.0;
        Groth16Proof {
            a: G1Point { x: w[0], y: w[1] },
            b: G2Point {
                x: Fp2Element {
                    real: w[2],
                    imag: w[3],
                },
                y: Fp2Element {
                    real: w[4],
                    imag: w[5],
                },
            },
            c: G1Point { x: w[6], y: w[7] },
        }
    }
}

impl From<&Groth16Proof> for types::Groth16Proof {
    fn from(p: &Groth16Proof) -> Self {
        types::Groth16Proof([
            p.a.x, p.a.y, p.b.x.real, p.b.x.imag, p.b.y.real, p.b.y.imag, p.c.x, p.c.y,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{hex, U256};
    use alloy_sol_types::{SolError, SolEvent, SolValue};

    /// Every function, event and error selector codex uses, with the canonical
    /// signature the `sol!` declaration must produce.
    #[rustfmt::skip]
    const SELECTORS: &[(&str, [u8; 4], &str)] = &[
        // Marketplace functions (docs/marketplace.md#functions)
        ("configuration()", Marketplace::configurationCall::SELECTOR, "6c70bee9"),
        ("token()", Marketplace::tokenCall::SELECTOR, "fc0c546a"),
        ("requestStorage((address,(uint256,uint256,uint256,uint64,uint64,uint64,uint64),(bytes,bytes32),uint64,bytes32))",
            Marketplace::requestStorageCall::SELECTOR, "99b6da0c"),
        ("reserveSlot(bytes32,uint64)", Marketplace::reserveSlotCall::SELECTOR, "12827602"),
        ("canReserveSlot(bytes32,uint64)", Marketplace::canReserveSlotCall::SELECTOR, "d02bbe33"),
        ("fillSlot(bytes32,uint64,((uint256,uint256),((uint256,uint256),(uint256,uint256)),(uint256,uint256)))",
            Marketplace::fillSlotCall::SELECTOR, "1d873c1b"),
        ("submitProof(bytes32,((uint256,uint256),((uint256,uint256),(uint256,uint256)),(uint256,uint256)))",
            Marketplace::submitProofCall::SELECTOR, "e8aa0a07"),
        ("freeSlot(bytes32)", Marketplace::freeSlot_0Call::SELECTOR, "a29c29a4"),
        ("freeSlot(bytes32,address,address)", Marketplace::freeSlot_1Call::SELECTOR, "0aefaabe"),
        ("withdrawFunds(bytes32)", Marketplace::withdrawFunds_0Call::SELECTOR, "6e2b54ee"),
        ("withdrawFunds(bytes32,address)", Marketplace::withdrawFunds_1Call::SELECTOR, "c5d43351"),
        ("markProofAsMissing(bytes32,uint64)", Marketplace::markProofAsMissingCall::SELECTOR, "237d8482"),
        ("canMarkProofAsMissing(bytes32,uint64)", Marketplace::canMarkProofAsMissingCall::SELECTOR, "d1bb36b6"),
        ("getRequest(bytes32)", Marketplace::getRequestCall::SELECTOR, "fb1e61ca"),
        ("getActiveSlot(bytes32)", Marketplace::getActiveSlotCall::SELECTOR, "b396dc79"),
        ("getHost(bytes32)", Marketplace::getHostCall::SELECTOR, "6b00c8cf"),
        ("currentCollateral(bytes32)", Marketplace::currentCollateralCall::SELECTOR, "26d6f834"),
        ("requestState(bytes32)", Marketplace::requestStateCall::SELECTOR, "05b90773"),
        ("slotState(bytes32)", Marketplace::slotStateCall::SELECTOR, "be5cdc48"),
        ("requestEnd(bytes32)", Marketplace::requestEndCall::SELECTOR, "02fa8e65"),
        ("requestExpiry(bytes32)", Marketplace::requestExpiryCall::SELECTOR, "329b5a0b"),
        ("myRequests()", Marketplace::myRequestsCall::SELECTOR, "9777b72c"),
        ("mySlots()", Marketplace::mySlotsCall::SELECTOR, "5da73835"),
        ("missingProofs(bytes32)", Marketplace::missingProofsCall::SELECTOR, "f752196b"),
        ("isProofRequired(bytes32)", Marketplace::isProofRequiredCall::SELECTOR, "c0cc4add"),
        ("willProofBeRequired(bytes32)", Marketplace::willProofBeRequiredCall::SELECTOR, "a3a0807e"),
        ("getChallenge(bytes32)", Marketplace::getChallengeCall::SELECTOR, "458d2bf1"),
        ("getPointer(bytes32)", Marketplace::getPointerCall::SELECTOR, "4641dce6"),
        ("slotProbability(bytes32)", Marketplace::slotProbabilityCall::SELECTOR, "51a76642"),
        // TestMarketplace helpers
        ("forciblyFreeSlot(bytes32)", TestMarketplace::forciblyFreeSlotCall::SELECTOR, "bdc19bee"),
        ("getSlotCollateral(bytes32)", TestMarketplace::getSlotCollateralCall::SELECTOR, "1b03d1cb"),
        ("challengeToFieldElement(bytes32)", TestMarketplace::challengeToFieldElementCall::SELECTOR, "28b2d79f"),
        ("merkleRootToFieldElement(bytes32)", TestMarketplace::merkleRootToFieldElementCall::SELECTOR, "13f288dd"),
        // ERC-20 (docs/marketplace.md#erc-20)
        ("approve(address,uint256)", IERC20::approveCall::SELECTOR, "095ea7b3"),
        ("allowance(address,address)", IERC20::allowanceCall::SELECTOR, "dd62ed3e"),
        ("balanceOf(address)", IERC20::balanceOfCall::SELECTOR, "70a08231"),
        ("transfer(address,uint256)", IERC20::transferCall::SELECTOR, "a9059cbb"),
        ("transferFrom(address,address,uint256)", IERC20::transferFromCall::SELECTOR, "23b872dd"),
        ("mint(address,uint256)", IERC20::mintCall::SELECTOR, "40c10f19"),
        // Marketplace errors (docs/marketplace.md#errors)
        ("Marketplace_AlreadyPaid()", Marketplace::Marketplace_AlreadyPaid::SELECTOR, "c2cbf777"),
        ("Marketplace_DurationExceedsLimit()", Marketplace::Marketplace_DurationExceedsLimit::SELECTOR, "1267b3f2"),
        ("Marketplace_InsufficientCollateral()", Marketplace::Marketplace_InsufficientCollateral::SELECTOR, "fb7df0c7"),
        ("Marketplace_InsufficientDuration()", Marketplace::Marketplace_InsufficientDuration::SELECTOR, "090a5ecd"),
        ("Marketplace_InsufficientProofProbability()", Marketplace::Marketplace_InsufficientProofProbability::SELECTOR, "6aba7aae"),
        ("Marketplace_InsufficientReward()", Marketplace::Marketplace_InsufficientReward::SELECTOR, "47ba51c7"),
        ("Marketplace_InsufficientSlots()", Marketplace::Marketplace_InsufficientSlots::SELECTOR, "535ed2be"),
        ("Marketplace_InvalidCid()", Marketplace::Marketplace_InvalidCid::SELECTOR, "86f8cf9b"),
        ("Marketplace_InvalidClientAddress()", Marketplace::Marketplace_InvalidClientAddress::SELECTOR, "698d3c62"),
        ("Marketplace_InvalidExpiry()", Marketplace::Marketplace_InvalidExpiry::SELECTOR, "df63f61a"),
        ("Marketplace_InvalidMaxSlotLoss()", Marketplace::Marketplace_InvalidMaxSlotLoss::SELECTOR, "b9551ab1"),
        ("Marketplace_InvalidSlot()", Marketplace::Marketplace_InvalidSlot::SELECTOR, "3b920b88"),
        ("Marketplace_InvalidSlotHost()", Marketplace::Marketplace_InvalidSlotHost::SELECTOR, "57a6f4e9"),
        ("Marketplace_InvalidState()", Marketplace::Marketplace_InvalidState::SELECTOR, "c00b5b57"),
        ("Marketplace_MaximumSlashingTooHigh()", Marketplace::Marketplace_MaximumSlashingTooHigh::SELECTOR, "5ffe743c"),
        ("Marketplace_NothingToWithdraw()", Marketplace::Marketplace_NothingToWithdraw::SELECTOR, "bd8bdd94"),
        ("Marketplace_ProofNotSubmittedByHost()", Marketplace::Marketplace_ProofNotSubmittedByHost::SELECTOR, "ce351b94"),
        ("Marketplace_RepairRewardPercentageTooHigh()", Marketplace::Marketplace_RepairRewardPercentageTooHigh::SELECTOR, "2bd81630"),
        ("Marketplace_RequestAlreadyExists()", Marketplace::Marketplace_RequestAlreadyExists::SELECTOR, "fc7d0690"),
        ("Marketplace_ReservationRequired()", Marketplace::Marketplace_ReservationRequired::SELECTOR, "d651ce18"),
        ("Marketplace_SlashPercentageTooHigh()", Marketplace::Marketplace_SlashPercentageTooHigh::SELECTOR, "a9cbc156"),
        ("Marketplace_SlotIsFree()", Marketplace::Marketplace_SlotIsFree::SELECTOR, "8b41ec7f"),
        ("Marketplace_SlotNotAcceptingProofs()", Marketplace::Marketplace_SlotNotAcceptingProofs::SELECTOR, "ae9dcffd"),
        ("Marketplace_SlotNotFree()", Marketplace::Marketplace_SlotNotFree::SELECTOR, "ff556acf"),
        ("Marketplace_StartNotBeforeExpiry()", Marketplace::Marketplace_StartNotBeforeExpiry::SELECTOR, "56607cb0"),
        ("Marketplace_TransferFailed()", Marketplace::Marketplace_TransferFailed::SELECTOR, "f8599ffa"),
        ("Marketplace_UnknownRequest()", Marketplace::Marketplace_UnknownRequest::SELECTOR, "bdd64a7a"),
        // Proofs, reservations, periods errors
        ("Proofs_InsufficientBlockHeight()", Marketplace::Proofs_InsufficientBlockHeight::SELECTOR, "71ebecc2"),
        ("Proofs_InvalidProof()", Marketplace::Proofs_InvalidProof::SELECTOR, "fcd03a47"),
        ("Proofs_PeriodNotEnded()", Marketplace::Proofs_PeriodNotEnded::SELECTOR, "6b4b1a4e"),
        ("Proofs_ProofAlreadyMarkedMissing()", Marketplace::Proofs_ProofAlreadyMarkedMissing::SELECTOR, "98e7e551"),
        ("Proofs_ProofAlreadySubmitted()", Marketplace::Proofs_ProofAlreadySubmitted::SELECTOR, "3edef7db"),
        ("Proofs_ProofNotMissing()", Marketplace::Proofs_ProofNotMissing::SELECTOR, "00fab7d9"),
        ("Proofs_ProofNotRequired()", Marketplace::Proofs_ProofNotRequired::SELECTOR, "d3ffa66b"),
        ("Proofs_ValidationTimedOut()", Marketplace::Proofs_ValidationTimedOut::SELECTOR, "de55698e"),
        ("SlotReservations_ReservationNotAllowed()", Marketplace::SlotReservations_ReservationNotAllowed::SELECTOR, "424a04ab"),
        ("Periods_InvalidSecondsPerPeriod()", Marketplace::Periods_InvalidSecondsPerPeriod::SELECTOR, "2aa6d8e0"),
        // OpenZeppelin ERC20 errors
        ("ERC20InsufficientAllowance(address,uint256,uint256)", IERC20::ERC20InsufficientAllowance::SELECTOR, "fb8f41b2"),
        ("ERC20InsufficientBalance(address,uint256,uint256)", IERC20::ERC20InsufficientBalance::SELECTOR, "e450d38c"),
        // Vault errors (docs/marketplace.md#vault)
        ("VaultInsufficientBalance()", Vault::VaultInsufficientBalance::SELECTOR, "f19fe417"),
        ("VaultInvalidExpiry()", Vault::VaultInvalidExpiry::SELECTOR, "4460ffba"),
        ("VaultFundNotLocked()", Vault::VaultFundNotLocked::SELECTOR, "45cd2b1e"),
        ("VaultFundNotUnlocked()", Vault::VaultFundNotUnlocked::SELECTOR, "22fc3442"),
        ("VaultFundAlreadyLocked()", Vault::VaultFundAlreadyLocked::SELECTOR, "6d1bd087"),
        ("VaultFlowNotZero()", Vault::VaultFlowNotZero::SELECTOR, "d542fb1d"),
        ("VaultOnlyAccountHolder()", Vault::VaultOnlyAccountHolder::SELECTOR, "ff2646f4"),
        ("EnforcedPause()", Vault::EnforcedPause::SELECTOR, "d93c0665"),
    ];

    #[test]
    fn every_selector_matches_the_spec_table() {
        let mut bad = Vec::new();
        for (sig, selector, expected) in SELECTORS {
            let from_sig = &alloy_primitives::keccak256(sig.as_bytes())[..4];
            if hex::encode(selector) != *expected || from_sig != selector {
                bad.push(format!(
                    "{sig}: got {}, want {expected}",
                    hex::encode(selector)
                ));
            }
        }
        assert!(bad.is_empty(), "selector mismatches:\n{}", bad.join("\n"));
    }

    #[test]
    fn canonical_signatures_match_the_spec() {
        assert_eq!(
            Marketplace::requestStorageCall::SIGNATURE,
            "requestStorage((address,(uint256,uint256,uint256,uint64,uint64,uint64,uint64),(bytes,bytes32),uint64,bytes32))"
        );
        assert_eq!(
            Marketplace::freeSlot_1Call::SIGNATURE,
            "freeSlot(bytes32,address,address)"
        );
        assert_eq!(
            IERC20::ERC20InsufficientAllowance::SIGNATURE,
            "ERC20InsufficientAllowance(address,uint256,uint256)"
        );
    }

    /// Every topic0 of `docs/marketplace.md#events` and `#erc-20`, with the canonical event
    /// signature.
    #[rustfmt::skip]
    const TOPICS: &[(&str, alloy_primitives::B256, &str)] = &[
        ("StorageRequested(bytes32,(uint256,uint256,uint256,uint64,uint64,uint64,uint64),uint64)",
            Marketplace::StorageRequested::SIGNATURE_HASH,
            "1bf9c457accf8703dbf7cdf1b58c2f74ddf2e525f98155c70b3d318d74609bd8"),
        ("SlotFilled(bytes32,uint64)", Marketplace::SlotFilled::SIGNATURE_HASH,
            "8f301470a994578b52323d625dfbf827ca5208c81747d3459be7b8867baec3ec"),
        ("SlotFreed(bytes32,uint64)", Marketplace::SlotFreed::SIGNATURE_HASH,
            "33ba8f7627565d89f7ada2a6b81ea532b7aa9b11e91a78312d6e1fca0bfcd1dc"),
        ("SlotReservationsFull(bytes32,uint64)", Marketplace::SlotReservationsFull::SIGNATURE_HASH,
            "c8e6c955744189a19222ec226b72ac1435d88d5745252dac56e6f679f64c037a"),
        ("RequestFulfilled(bytes32)", Marketplace::RequestFulfilled::SIGNATURE_HASH,
            "85e1543bf2f84fe80c6badbce3648c8539ad1df4d2b3d822938ca0538be727e6"),
        ("RequestFailed(bytes32)", Marketplace::RequestFailed::SIGNATURE_HASH,
            "4769361a442504ecaf038f35e119bcccdd5e42096b24c09e3c17fd17c6684c02"),
        ("RequestCancelled(bytes32)", Marketplace::RequestCancelled::SIGNATURE_HASH,
            "f903f4774c7bd27355f9d7fcbc382b079b164a697a44ac5d95267a4c3cb3bb22"),
        ("ProofSubmitted(bytes32)", Marketplace::ProofSubmitted::SIGNATURE_HASH,
            "3b989d183b84b02259d7c14b34a9c9eb0fccb4c355a920d25e581e25aef4993d"),
    ];

    #[test]
    fn every_event_topic_matches_the_spec_table() {
        let mut bad = Vec::new();
        for (sig, topic, expected) in TOPICS {
            let from_sig = alloy_primitives::keccak256(sig.as_bytes());
            if hex::encode(topic) != *expected || from_sig != *topic {
                bad.push(format!("{sig}: got {topic:#x}, want 0x{expected}"));
            }
        }
        assert!(bad.is_empty(), "topic mismatches:\n{}", bad.join("\n"));
        // The token events (`docs/marketplace.md#erc-20`): pin the known prefixes and suffixes.
        let transfer = hex::encode(IERC20::Transfer::SIGNATURE_HASH);
        assert!(transfer.starts_with("ddf252ad") && transfer.ends_with("b3ef"));
        let approval = hex::encode(IERC20::Approval::SIGNATURE_HASH);
        assert!(approval.starts_with("8c5be1e5") && approval.ends_with("b925"));
    }

    #[test]
    fn storage_requested_data_is_nine_words() {
        let ev = Marketplace::StorageRequested {
            requestId: [1u8; 32].into(),
            ask: Ask {
                proofProbability: U256::from(1u8),
                pricePerBytePerSecond: U256::from(2u8),
                collateralPerByte: U256::from(3u8),
                slots: 4,
                slotSize: 5,
                duration: 6,
                maxSlotLoss: 7,
            },
            expiry: 8,
        };
        assert_eq!(ev.encode_data().len(), 288);
    }

    #[test]
    fn configuration_round_trips_through_the_abi() {
        let local = types::MarketplaceConfig::default();
        let encoded = MarketplaceConfig::from(&local).abi_encode();
        assert_eq!(decode_configuration(&encoded).unwrap(), local);
        // Returned as one dynamic tuple: the first word is the offset 0x20.
        assert_eq!(U256::from_be_slice(&encoded[..32]), U256::from(32u8));
        assert!(decode_configuration(&encoded[..100]).is_err());
        assert!(decode_configuration(&[]).is_err());
    }

    #[test]
    fn groth16_proof_keeps_the_word_order() {
        let words: [U256; 8] = core::array::from_fn(|i| U256::from(i as u64 + 1));
        let p = types::Groth16Proof(words);
        let abi = Groth16Proof::from(&p);
        let encoded = abi.abi_encode();
        assert_eq!(encoded.len(), 8 * 32);
        for (i, chunk) in encoded.chunks(32).enumerate() {
            assert_eq!(U256::from_be_slice(chunk), words[i]);
        }
        assert_eq!(types::Groth16Proof::from(&abi), p);
    }
}
