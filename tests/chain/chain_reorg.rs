//! Chain reorganisations on a real anvil with the fixture Marketplace.
//!
//! anvil 1.7.1 never sends `removed: true` log notifications: `anvil_reorg` (depth, txs)
//! replaces the newest blocks and announces the replacements through `newHeads` only, and
//! `evm_revert` to an `evm_snapshot` rewinds silently; the next mined block reuses the old
//! heights. The chain client must still report every log of a replaced block as removed (it
//! re-queries the replaced heights when a head at or below its cursor arrives) and hand out the
//! replacement logs once.
use crate::support;

use std::time::Duration;

use alloy_primitives::B256;
use codex::chain::client::Follow;
use codex::chain::rpc::Log;
use codex::market::RequestId;
use serde_json::{json, Value};
use support::codex::{codex, Running};
use support::devchain::{request_storage, Devchain};
use support::follow::{fast_config, Follower};

const T: Duration = Duration::from_secs(60);

/// The request id of a StorageRequested log (its first data word).
fn id_of(log: &Log) -> RequestId {
    RequestId(B256::from_slice(&log.data[..32]))
}

fn ids(logs: &[Log]) -> Vec<RequestId> {
    logs.iter().map(id_of).collect()
}

#[test]
fn chain_client_reports_a_log_removed_by_anvil_reorg_and_the_replacement_once() {
    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let mut config = fast_config(&chain.ws_url());
    config.keepalive = crate::KEEPALIVE;
    let mut f = Follower::new(
        config,
        Follow {
            address: chain.marketplace(),
            from_block: 0,
            to_block: None,
            max_range: 1000,
        },
    );
    let a = request_storage(&mut rpc, &chain, 1, 1);
    f.run_until(T, "request a", |f| f.logs.len() == 1);
    assert_eq!(ids(&f.logs), [a]);
    let original = f.logs[0].clone();

    // Replace the block holding requestStorage with an empty one at the same height.
    rpc.call("anvil_reorg", json!([1, []])).unwrap();
    f.run_until(T, "the removal of a", |f| !f.removed.is_empty());
    assert_eq!(f.removed.len(), 1);
    let gone = &f.removed[0];
    assert!(gone.removed, "reported with removed: true");
    assert_eq!(gone.key(), original.key());
    assert_eq!(id_of(gone), a);

    // The new branch carries another request; it is handed out once, then later events follow.
    let b = request_storage(&mut rpc, &chain, 1, 2);
    rpc.call("anvil_mine", json!(["0x3", "0x0"])).unwrap();
    let c = request_storage(&mut rpc, &chain, 1, 3);
    f.run_until(T, "requests b and c", |f| f.logs.len() == 3);
    assert_eq!(ids(&f.logs), [a, b, c]);
    assert_eq!(ids(&f.removed), [a]);
    assert!(f.logs[1].block_number >= original.block_number);
}

/// Reads the next `n` lines as JSON.
fn json_lines(run: &mut Running, n: usize) -> Vec<Value> {
    run.wait_lines(n, T)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn events_follow_prints_a_reverted_request_as_removed_and_its_replacement_once() {
    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let dir = tempfile::tempdir().unwrap();
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "--marketplace-address",
        &chain.marketplace().to_string(),
        "events",
        "--follow",
    ]);
    let mut run = Running::spawn(c);

    // Two branches from the same point: the snapshot is taken before the approve, so the
    // replacement blocks reuse both heights.
    let snapshot = rpc.call("evm_snapshot", json!([])).unwrap();
    let a = request_storage(&mut rpc, &chain, 1, 1).to_string();
    let lines = json_lines(&mut run, 1);
    assert_eq!(lines[0]["event"], "StorageRequested");
    assert_eq!(lines[0]["requestId"], a.as_str());
    assert_eq!(lines[0]["removed"], false);

    assert_eq!(rpc.call("evm_revert", json!([snapshot])).unwrap(), true);
    let b = request_storage(&mut rpc, &chain, 1, 2).to_string();
    let lines = json_lines(&mut run, 3);
    let gone = &lines[1];
    assert_eq!(gone["event"], "StorageRequested");
    assert_eq!(gone["requestId"], a.as_str());
    assert_eq!(gone["removed"], true, "{gone}");
    for key in ["blockHash", "blockNumber", "logIndex", "transactionHash"] {
        assert_eq!(gone[key], lines[0][key], "{key} of the removed log");
    }
    let replacement = &lines[2];
    assert_eq!(replacement["requestId"], b.as_str());
    assert_eq!(replacement["removed"], false);
    assert_eq!(replacement["blockNumber"], lines[0]["blockNumber"]);
    assert_ne!(replacement["blockHash"], lines[0]["blockHash"]);

    // Nothing more about these blocks: the next line is the next request.
    let c = request_storage(&mut rpc, &chain, 1, 3).to_string();
    let lines = json_lines(&mut run, 4);
    assert_eq!(lines[3]["requestId"], c.as_str(), "{:?}", run.seen);
    assert_eq!(lines[3]["removed"], false);
    assert!(run.is_running());
}

#[test]
fn events_follow_prints_an_anvil_reorg_with_a_replacement_at_the_same_height() {
    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let dir = tempfile::tempdir().unwrap();
    let mut c = codex(dir.path());
    c.args(["--eth-provider", &chain.ws_url(), "events", "--follow"]);
    let mut run = Running::spawn(c);

    let a = request_storage(&mut rpc, &chain, 1, 1).to_string();
    let lines = json_lines(&mut run, 1);
    assert_eq!(lines[0]["requestId"], a.as_str());

    // The new branch replaces a's block with one holding another request of the same client
    // (a's allowance is back, since a's transferFrom is undone with its block).
    let client = chain.account(1);
    let b_req = support::devchain::request(client, 2);
    let b = b_req.id().to_string();
    let tx = json!({
        "from": client,
        "to": chain.marketplace(),
        "data": alloy_primitives::hex::encode_prefixed(codex::market::calls::request_storage(&b_req)),
    });
    rpc.call("anvil_reorg", json!([1, [[tx, 0]]])).unwrap();
    let lines = json_lines(&mut run, 3);
    assert_eq!(lines[1]["requestId"], a.as_str());
    assert_eq!(lines[1]["removed"], true, "{}", lines[1]);
    assert_eq!(lines[1]["blockHash"], lines[0]["blockHash"]);
    assert_eq!(lines[2]["requestId"], b.as_str());
    assert_eq!(lines[2]["removed"], false);
    assert_eq!(lines[2]["blockNumber"], lines[0]["blockNumber"]);

    let c = request_storage(&mut rpc, &chain, 1, 3).to_string();
    let lines = json_lines(&mut run, 4);
    assert_eq!(lines[3]["requestId"], c.as_str(), "{:?}", run.seen);
}
