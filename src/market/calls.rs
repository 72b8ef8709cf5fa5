//! Calldata for the Marketplace and token calls a host or client makes, and decoders for the
//! results of the views (`docs/marketplace.md`).
//!
//! Builders return the full calldata (selector + arguments) for `eth_call`,
//! `eth_estimateGas` and transactions. Decoders are strict (the ABI validator rejects
//! out-of-range words such as a `uint8` above 255 or a dirty `address`) and return domain types.
//!
//! Pure.

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;

use super::abi::{self, AbiDecodeError, Marketplace as M, IERC20};
use super::types::{
    Groth16Proof, MarketplaceConfig, Request, RequestId, RequestState, SlotId, SlotState,
};

// ---------------------------------------------------------------------------------------------
// Transactions

/// `reserveSlot(requestId, slotIndex)`.
pub fn reserve_slot(request: RequestId, slot_index: u64) -> Vec<u8> {
    M::reserveSlotCall {
        requestId: request.0,
        slotIndex: slot_index,
    }
    .abi_encode()
}

/// `fillSlot(requestId, slotIndex, proof)`.
pub fn fill_slot(request: RequestId, slot_index: u64, proof: &Groth16Proof) -> Vec<u8> {
    M::fillSlotCall {
        requestId: request.0,
        slotIndex: slot_index,
        proof: proof.into(),
    }
    .abi_encode()
}

/// `submitProof(slotId, proof)`.
pub fn submit_proof(slot: SlotId, proof: &Groth16Proof) -> Vec<u8> {
    M::submitProofCall {
        id: slot.0,
        proof: proof.into(),
    }
    .abi_encode()
}

/// `freeSlot(slotId)`: reward and collateral to the sender.
pub fn free_slot(slot: SlotId) -> Vec<u8> {
    M::freeSlot_0Call { slotId: slot.0 }.abi_encode()
}

/// `freeSlot(slotId, rewardRecipient, collateralRecipient)`.
pub fn free_slot_to(
    slot: SlotId,
    reward_recipient: Address,
    collateral_recipient: Address,
) -> Vec<u8> {
    M::freeSlot_1Call {
        slotId: slot.0,
        rewardRecipient: reward_recipient,
        collateralRecipient: collateral_recipient,
    }
    .abi_encode()
}

/// `markProofAsMissing(slotId, period)` (validators).
pub fn mark_proof_as_missing(slot: SlotId, period: u64) -> Vec<u8> {
    M::markProofAsMissingCall {
        slotId: slot.0,
        period,
    }
    .abi_encode()
}

/// `requestStorage(request)`.
pub fn request_storage(request: &Request) -> Vec<u8> {
    M::requestStorageCall {
        request: request.to_abi(),
    }
    .abi_encode()
}

/// `withdrawFunds(requestId)`: refund to the sender.
pub fn withdraw_funds(request: RequestId) -> Vec<u8> {
    M::withdrawFunds_0Call {
        requestId: request.0,
    }
    .abi_encode()
}

/// `withdrawFunds(requestId, recipient)`.
pub fn withdraw_funds_to(request: RequestId, recipient: Address) -> Vec<u8> {
    M::withdrawFunds_1Call {
        requestId: request.0,
        withdrawRecipient: recipient,
    }
    .abi_encode()
}

/// ERC-20 `approve(spender, amount)`.
pub fn approve(spender: Address, amount: U256) -> Vec<u8> {
    IERC20::approveCall {
        spender,
        value: amount,
    }
    .abi_encode()
}

/// TestToken `mint(account, amount)` (dev chain only).
pub fn mint(account: Address, amount: U256) -> Vec<u8> {
    IERC20::mintCall {
        account,
        value: amount,
    }
    .abi_encode()
}

// ---------------------------------------------------------------------------------------------
// Views: calldata and result decoders

fn decode<C: SolCall>(data: &[u8]) -> Result<C::Return, AbiDecodeError> {
    C::abi_decode_returns_validate(data).map_err(AbiDecodeError::of::<C>)
}

fn bad_enum<C: SolCall>(e: super::types::InvalidEnum) -> AbiDecodeError {
    AbiDecodeError {
        call: C::SIGNATURE,
        reason: e.to_string(),
    }
}

/// `configuration()`.
pub fn configuration() -> Vec<u8> {
    M::configurationCall {}.abi_encode()
}
/// Result of `configuration()`.
pub fn decode_configuration(data: &[u8]) -> Result<MarketplaceConfig, AbiDecodeError> {
    abi::decode_configuration(data)
}

/// `token()`.
pub fn token() -> Vec<u8> {
    M::tokenCall {}.abi_encode()
}
/// Result of `token()`.
pub fn decode_token(data: &[u8]) -> Result<Address, AbiDecodeError> {
    decode::<M::tokenCall>(data)
}

/// `getRequest(requestId)`.
pub fn get_request(request: RequestId) -> Vec<u8> {
    M::getRequestCall {
        requestId: request.0,
    }
    .abi_encode()
}
/// Result of `getRequest`.
pub fn decode_get_request(data: &[u8]) -> Result<Request, AbiDecodeError> {
    decode::<M::getRequestCall>(data).map(|r| Request::from_abi(&r))
}

/// `getActiveSlot(slotId)`.
pub fn get_active_slot(slot: SlotId) -> Vec<u8> {
    M::getActiveSlotCall { slotId: slot.0 }.abi_encode()
}
/// Result of `getActiveSlot`: the request and the slot's index.
pub fn decode_get_active_slot(data: &[u8]) -> Result<(Request, u64), AbiDecodeError> {
    decode::<M::getActiveSlotCall>(data).map(|a| (Request::from_abi(&a.request), a.slotIndex))
}

/// `requestState(requestId)`.
pub fn request_state(request: RequestId) -> Vec<u8> {
    M::requestStateCall {
        requestId: request.0,
    }
    .abi_encode()
}
/// Result of `requestState`.
pub fn decode_request_state(data: &[u8]) -> Result<RequestState, AbiDecodeError> {
    RequestState::try_from(decode::<M::requestStateCall>(data)?)
        .map_err(bad_enum::<M::requestStateCall>)
}

/// `slotState(slotId)`.
pub fn slot_state(slot: SlotId) -> Vec<u8> {
    M::slotStateCall { slotId: slot.0 }.abi_encode()
}
/// Result of `slotState`.
pub fn decode_slot_state(data: &[u8]) -> Result<SlotState, AbiDecodeError> {
    SlotState::try_from(decode::<M::slotStateCall>(data)?).map_err(bad_enum::<M::slotStateCall>)
}

/// `getHost(slotId)`.
pub fn get_host(slot: SlotId) -> Vec<u8> {
    M::getHostCall { slotId: slot.0 }.abi_encode()
}
/// Result of `getHost`: `None` for the zero address (no host).
pub fn decode_get_host(data: &[u8]) -> Result<Option<Address>, AbiDecodeError> {
    decode::<M::getHostCall>(data).map(|a| (!a.is_zero()).then_some(a))
}

/// `currentCollateral(slotId)`.
pub fn current_collateral(slot: SlotId) -> Vec<u8> {
    M::currentCollateralCall { slotId: slot.0 }.abi_encode()
}
/// Result of `currentCollateral`.
pub fn decode_current_collateral(data: &[u8]) -> Result<U256, AbiDecodeError> {
    decode::<M::currentCollateralCall>(data)
}

/// `requestEnd(requestId)`.
pub fn request_end(request: RequestId) -> Vec<u8> {
    M::requestEndCall {
        requestId: request.0,
    }
    .abi_encode()
}
/// Result of `requestEnd` (a timestamp).
pub fn decode_request_end(data: &[u8]) -> Result<u64, AbiDecodeError> {
    decode::<M::requestEndCall>(data)
}

/// `requestExpiry(requestId)`.
pub fn request_expiry(request: RequestId) -> Vec<u8> {
    M::requestExpiryCall {
        requestId: request.0,
    }
    .abi_encode()
}
/// Result of `requestExpiry` (absolute expiresAt; 0 for an unknown request).
pub fn decode_request_expiry(data: &[u8]) -> Result<u64, AbiDecodeError> {
    decode::<M::requestExpiryCall>(data)
}

/// `getPointer(slotId)`.
pub fn get_pointer(slot: SlotId) -> Vec<u8> {
    M::getPointerCall { id: slot.0 }.abi_encode()
}
/// Result of `getPointer`.
pub fn decode_get_pointer(data: &[u8]) -> Result<u8, AbiDecodeError> {
    decode::<M::getPointerCall>(data)
}

/// `getChallenge(slotId)`.
pub fn get_challenge(slot: SlotId) -> Vec<u8> {
    M::getChallengeCall { id: slot.0 }.abi_encode()
}
/// Result of `getChallenge`.
pub fn decode_get_challenge(data: &[u8]) -> Result<B256, AbiDecodeError> {
    decode::<M::getChallengeCall>(data)
}

/// `isProofRequired(slotId)`.
pub fn is_proof_required(slot: SlotId) -> Vec<u8> {
    M::isProofRequiredCall { id: slot.0 }.abi_encode()
}
/// Result of `isProofRequired`.
pub fn decode_is_proof_required(data: &[u8]) -> Result<bool, AbiDecodeError> {
    decode::<M::isProofRequiredCall>(data)
}

/// `willProofBeRequired(slotId)`.
pub fn will_proof_be_required(slot: SlotId) -> Vec<u8> {
    M::willProofBeRequiredCall { id: slot.0 }.abi_encode()
}
/// Result of `willProofBeRequired`.
pub fn decode_will_proof_be_required(data: &[u8]) -> Result<bool, AbiDecodeError> {
    decode::<M::willProofBeRequiredCall>(data)
}

/// `canReserveSlot(requestId, slotIndex)` (needs `from`).
pub fn can_reserve_slot(request: RequestId, slot_index: u64) -> Vec<u8> {
    M::canReserveSlotCall {
        requestId: request.0,
        slotIndex: slot_index,
    }
    .abi_encode()
}
/// Result of `canReserveSlot`.
pub fn decode_can_reserve_slot(data: &[u8]) -> Result<bool, AbiDecodeError> {
    decode::<M::canReserveSlotCall>(data)
}

/// `canMarkProofAsMissing(slotId, period)`: a view without a result; it succeeds when
/// `markProofAsMissing` would, and reverts with the same error otherwise.
pub fn can_mark_proof_as_missing(slot: SlotId, period: u64) -> Vec<u8> {
    M::canMarkProofAsMissingCall {
        slotId: slot.0,
        period,
    }
    .abi_encode()
}

/// `missingProofs(slotId)`.
pub fn missing_proofs(slot: SlotId) -> Vec<u8> {
    M::missingProofsCall { slotId: slot.0 }.abi_encode()
}
/// Result of `missingProofs`.
pub fn decode_missing_proofs(data: &[u8]) -> Result<u64, AbiDecodeError> {
    decode::<M::missingProofsCall>(data)
}

/// `mySlots()` (needs `from`).
pub fn my_slots() -> Vec<u8> {
    M::mySlotsCall {}.abi_encode()
}
/// Result of `mySlots`.
pub fn decode_my_slots(data: &[u8]) -> Result<Vec<SlotId>, AbiDecodeError> {
    decode::<M::mySlotsCall>(data).map(|v| v.into_iter().map(SlotId).collect())
}

/// `myRequests()` (needs `from`).
pub fn my_requests() -> Vec<u8> {
    M::myRequestsCall {}.abi_encode()
}
/// Result of `myRequests`.
pub fn decode_my_requests(data: &[u8]) -> Result<Vec<RequestId>, AbiDecodeError> {
    decode::<M::myRequestsCall>(data).map(|v| v.into_iter().map(RequestId).collect())
}

/// ERC-20 `allowance(owner, spender)`.
pub fn allowance(owner: Address, spender: Address) -> Vec<u8> {
    IERC20::allowanceCall { owner, spender }.abi_encode()
}
/// Result of `allowance`.
pub fn decode_allowance(data: &[u8]) -> Result<U256, AbiDecodeError> {
    decode::<IERC20::allowanceCall>(data)
}

/// ERC-20 `balanceOf(account)`.
pub fn balance_of(account: Address) -> Vec<u8> {
    IERC20::balanceOfCall { account }.abi_encode()
}
/// Result of `balanceOf`.
pub fn decode_balance_of(data: &[u8]) -> Result<U256, AbiDecodeError> {
    decode::<IERC20::balanceOfCall>(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Ask, Content};
    use alloy_primitives::hex;
    use alloy_sol_types::SolValue;

    fn word(v: u64) -> [u8; 32] {
        U256::from(v).to_be_bytes()
    }

    fn request() -> Request {
        Request {
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
                cid: vec![1, 2, 3],
                merkle_root: B256::repeat_byte(9),
            },
            expiry: 3,
            nonce: B256::repeat_byte(8),
        }
    }

    #[test]
    fn host_calldata_is_selector_then_words() {
        let rid = RequestId(B256::repeat_byte(0x11));
        let sid = SlotId(B256::repeat_byte(0x22));
        let mut want = hex::decode("12827602").unwrap();
        want.extend([0x11; 32]);
        want.extend(word(2));
        assert_eq!(reserve_slot(rid, 2), want);

        let mut want = hex::decode("a29c29a4").unwrap();
        want.extend([0x22; 32]);
        assert_eq!(free_slot(sid), want);

        let recipient = Address::repeat_byte(0x33);
        let host = Address::repeat_byte(0x44);
        let mut want = hex::decode("0aefaabe").unwrap();
        want.extend([0x22; 32]);
        want.extend([0; 12]);
        want.extend([0x33; 20]);
        want.extend([0; 12]);
        want.extend([0x44; 20]);
        assert_eq!(free_slot_to(sid, recipient, host), want);

        let proof = Groth16Proof(core::array::from_fn(|i| U256::from(i as u64 + 1)));
        let mut want = hex::decode("1d873c1b").unwrap();
        want.extend([0x11; 32]);
        want.extend(word(1));
        for i in 1..=8 {
            want.extend(word(i));
        }
        assert_eq!(fill_slot(rid, 1, &proof), want);

        let mut want = hex::decode("e8aa0a07").unwrap();
        want.extend([0x22; 32]);
        for i in 1..=8 {
            want.extend(word(i));
        }
        assert_eq!(submit_proof(sid, &proof), want);

        let mut want = hex::decode("237d8482").unwrap();
        want.extend([0x22; 32]);
        want.extend(word(77));
        assert_eq!(mark_proof_as_missing(sid, 77), want);
        want[..4].copy_from_slice(&hex::decode("d1bb36b6").unwrap());
        assert_eq!(can_mark_proof_as_missing(sid, 77), want);
    }

    #[test]
    fn client_calldata() {
        let r = request();
        let data = request_storage(&r);
        assert_eq!(&data[..4], &hex::decode("99b6da0c").unwrap()[..]);
        // the arguments are abi.encode(request): the same bytes the request id hashes
        assert_eq!(alloy_primitives::keccak256(&data[4..]), r.id().0);

        let rid = r.id();
        let mut want = hex::decode("6e2b54ee").unwrap();
        want.extend(rid.as_bytes());
        assert_eq!(withdraw_funds(rid), want);
        let mut want = hex::decode("c5d43351").unwrap();
        want.extend(rid.as_bytes());
        want.extend([0; 12]);
        want.extend([0x55; 20]);
        assert_eq!(withdraw_funds_to(rid, Address::repeat_byte(0x55)), want);

        let mut want = hex::decode("095ea7b3").unwrap();
        want.extend([0; 12]);
        want.extend([0x66; 20]);
        want.extend(word(1024));
        assert_eq!(
            approve(Address::repeat_byte(0x66), U256::from(1024u32)),
            want
        );
        assert_eq!(
            &mint(Address::ZERO, U256::ZERO)[..4],
            &hex::decode("40c10f19").unwrap()[..]
        );
    }

    #[test]
    fn view_calldata_selectors() {
        let rid = RequestId(B256::repeat_byte(1));
        let sid = SlotId(B256::repeat_byte(2));
        let a = Address::repeat_byte(3);
        for (data, sel, len) in [
            (configuration(), "6c70bee9", 4),
            (token(), "fc0c546a", 4),
            (get_request(rid), "fb1e61ca", 36),
            (get_active_slot(sid), "b396dc79", 36),
            (request_state(rid), "05b90773", 36),
            (slot_state(sid), "be5cdc48", 36),
            (get_host(sid), "6b00c8cf", 36),
            (current_collateral(sid), "26d6f834", 36),
            (request_end(rid), "02fa8e65", 36),
            (request_expiry(rid), "329b5a0b", 36),
            (get_pointer(sid), "4641dce6", 36),
            (get_challenge(sid), "458d2bf1", 36),
            (is_proof_required(sid), "c0cc4add", 36),
            (will_proof_be_required(sid), "a3a0807e", 36),
            (can_reserve_slot(rid, 1), "d02bbe33", 68),
            (missing_proofs(sid), "f752196b", 36),
            (my_slots(), "5da73835", 4),
            (my_requests(), "9777b72c", 4),
            (allowance(a, a), "dd62ed3e", 68),
            (balance_of(a), "70a08231", 36),
        ] {
            assert_eq!(hex::encode(&data[..4]), sel);
            assert_eq!(data.len(), len, "{sel}");
        }
    }

    #[test]
    fn view_results_decode_to_domain_types() {
        assert_eq!(decode_request_state(&word(2)), Ok(RequestState::Cancelled));
        assert_eq!(decode_slot_state(&word(6)), Ok(SlotState::Repair));
        assert!(decode_slot_state(&word(7)).is_err());
        assert!(decode_request_state(&word(5)).is_err());
        // a uint8 word above 255 is rejected by the validator
        assert!(decode_get_pointer(&word(256)).is_err());
        assert_eq!(decode_get_pointer(&word(89)), Ok(89));
        assert_eq!(decode_get_host(&[0u8; 32]), Ok(None));
        let mut addr = [0u8; 32];
        addr[12..].copy_from_slice(&[0x77; 20]);
        assert_eq!(decode_get_host(&addr), Ok(Some(Address::repeat_byte(0x77))));
        assert_eq!(decode_token(&addr), Ok(Address::repeat_byte(0x77)));
        assert_eq!(
            decode_current_collateral(&word(1024)),
            Ok(U256::from(1024u32))
        );
        assert_eq!(decode_allowance(&word(5)), Ok(U256::from(5u8)));
        assert_eq!(decode_balance_of(&word(6)), Ok(U256::from(6u8)));
        assert_eq!(decode_request_end(&word(1_700_000_000)), Ok(1_700_000_000));
        assert_eq!(decode_request_expiry(&word(0)), Ok(0));
        assert_eq!(decode_missing_proofs(&word(2)), Ok(2));
        assert_eq!(decode_is_proof_required(&word(1)), Ok(true));
        assert_eq!(decode_will_proof_be_required(&word(0)), Ok(false));
        assert!(decode_is_proof_required(&word(2)).is_err());
        assert_eq!(decode_can_reserve_slot(&word(1)), Ok(true));
        assert_eq!(
            decode_get_challenge(&[0x42; 32]),
            Ok(B256::repeat_byte(0x42))
        );
        // empty return data (e.g. calling an address without code) is an error
        let e = decode_request_end(&[]).unwrap_err();
        assert_eq!(e.call, "requestEnd(bytes32)");
    }

    #[test]
    fn dynamic_view_results_decode() {
        let r = request();
        // getRequest returns one dynamic tuple: abi.encode(request)
        let enc = r.to_abi().abi_encode();
        assert_eq!(decode_get_request(&enc), Ok(r.clone()));
        assert!(decode_get_request(&enc[..enc.len() - 32]).is_err());

        let active = abi::ActiveSlot {
            request: r.to_abi(),
            slotIndex: 3,
        };
        assert_eq!(
            decode_get_active_slot(&active.abi_encode()),
            Ok((r.clone(), 3))
        );

        let ids = vec![B256::repeat_byte(1), B256::repeat_byte(2)];
        let enc = ids.abi_encode();
        assert_eq!(
            decode_my_slots(&enc),
            Ok(vec![SlotId(ids[0]), SlotId(ids[1])])
        );
        assert_eq!(
            decode_my_requests(&enc),
            Ok(vec![RequestId(ids[0]), RequestId(ids[1])])
        );
        assert_eq!(
            decode_my_slots(&Vec::<B256>::new().abi_encode()),
            Ok(vec![])
        );
    }

    proptest::proptest! {
        #[test]
        fn random_return_data_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = decode_get_request(&data);
            let _ = decode_get_active_slot(&data);
            let _ = decode_my_slots(&data);
            let _ = decode_configuration(&data);
            let _ = decode_slot_state(&data);
            let _ = decode_get_host(&data);
        }
    }
}
