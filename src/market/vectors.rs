//! Pinned test vectors kept as files in `fixtures/vectors/` (compiled in with
//! `include_str!`, so the tests do no I/O).
//!
//! `ids.json`: a fixed request, its RequestId and the SlotIds of its slots (`docs/marketplace.md#ids`). The values were computed here; the request encoding they hash is pinned independently
//! by `types::tests::request_id_hashes_the_offset_word_and_the_tuple_body`. The first vector
//! was confirmed on the dev chain (anvil 1.7.1 with the fixture TestMarketplace): account 1
//! sent `requestStorage` with this request (calldata from `calls::request_storage`, signed by
//! `chain::tx`), and the `StorageRequested` log carried this `requestId`; that notification
//! frame is kept as `fixtures/frames/anvil-storage-requested.txt` and checked below.

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

/// The notification frame anvil sent for the first vector's `requestStorage`.
#[test]
fn the_recorded_anvil_frame_carries_the_vector_request_id() {
    use super::events::{decode_log, parse_log_notification};
    use super::types::MarketEvent;
    let frame = include_str!("../../fixtures/frames/anvil-storage-requested.txt");
    let n = parse_log_notification(frame.trim_end()).unwrap();
    let d = decode_log(&n.log).unwrap();
    let vectors: Vec<IdVector> =
        serde_json::from_str(include_str!("../../fixtures/vectors/ids.json")).unwrap();
    match d.event {
        MarketEvent::StorageRequested {
            request_id, ask, ..
        } => {
            assert_eq!(request_id, vectors[0].request_id);
            assert_eq!(ask.slots, vectors[0].request.ask.slots);
        }
        other => panic!("unexpected event {other:?}"),
    }
}
