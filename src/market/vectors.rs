//! Pinned test vectors kept as files in `fixtures/vectors/` (compiled in with
//! `include_str!`, so the tests do no I/O).
//!
//! `ids.json`: a fixed request, its RequestId and the SlotIds of its slots (`spec/marketplace.md`
//! §3). The values were computed here; the request encoding they hash is pinned independently
//! by `types::tests::request_id_hashes_the_offset_word_and_the_tuple_body`. They still need to
//! be confirmed against the dev chain: submit this request with `requestStorage` from account 1
//! and compare the `requestId` of the `StorageRequested` log (the `contracts` helper's chain).

use alloy_primitives::{Address, B256, U256};
use serde::Deserialize;

use super::cid::parse_cid;
use super::types::{Ask, Content, Request, RequestId, SlotId};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AskV {
    proof_probability: String,
    price_per_byte_per_second: String,
    collateral_per_byte: String,
    slots: u64,
    slot_size: u64,
    duration: u64,
    max_slot_loss: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentV {
    cid: String,
    merkle_root: B256,
}

#[derive(Deserialize)]
struct RequestV {
    client: Address,
    ask: AskV,
    content: ContentV,
    expiry: u64,
    nonce: B256,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdVector {
    request: RequestV,
    request_id: RequestId,
    slot_ids: Vec<SlotId>,
}

fn u256(s: &str) -> U256 {
    s.parse().expect("decimal U256 in the vector file")
}

#[test]
fn request_and_slot_ids_match_the_pinned_vectors() {
    let vectors: Vec<IdVector> =
        serde_json::from_str(include_str!("../../fixtures/vectors/ids.json")).unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let r = v.request;
        let request = Request {
            client: r.client,
            ask: Ask {
                proof_probability: u256(&r.ask.proof_probability),
                price_per_byte_per_second: u256(&r.ask.price_per_byte_per_second),
                collateral_per_byte: u256(&r.ask.collateral_per_byte),
                slots: r.ask.slots,
                slot_size: r.ask.slot_size,
                duration: r.ask.duration,
                max_slot_loss: r.ask.max_slot_loss,
            },
            content: Content {
                cid: parse_cid(&r.content.cid).unwrap(),
                merkle_root: r.content.merkle_root,
            },
            expiry: r.expiry,
            nonce: r.nonce,
        };
        let id = request.id();
        let slots: Vec<SlotId> = (0..request.ask.slots).map(|i| SlotId::of(id, i)).collect();
        println!("requestId {id}");
        for s in &slots {
            println!("slotId {s}");
        }
        assert_eq!(id, v.request_id);
        assert_eq!(slots, v.slot_ids);
    }
}
