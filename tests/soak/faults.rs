//! The network fault soak (issue 11 item 3): a fault proxy between every node and anvil
//! injects faults while sales are live, chosen at random from: a dropped connection, a frame
//! cut in half, a stalled connection, malformed frames, an oversized frame, a JSON-RPC error
//! in place of an answer, and anvil restarted from its state dump. Then the audit, which
//! also counts the events each node missed and the actions it sent twice.
//!
//! `CODEX_SOAK_FAULTS` (default 12) is the number of faults.
use std::time::Instant;

use super::*;
use support::proxy::{text_frame, Proxy};

/// The calls a JSON-RPC error is injected into.
const METHODS: [&str; 8] = [
    "eth_sendRawTransaction",
    "eth_call",
    "eth_getLogs",
    "eth_blockNumber",
    "eth_estimateGas",
    "eth_getTransactionReceipt",
    "eth_getBlockByNumber",
    "eth_getTransactionCount",
];

#[test]
fn fault_soak_faults_between_the_nodes_and_anvil() {
    let params = Params::from_env("faults");
    let faults = env_usize("CODEX_SOAK_FAULTS", 12);
    let started = Instant::now();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("anvil-state.json");
    let mut proxies: Vec<Proxy> = vec![];
    // A short --eth-timeout: a stalled connection is noticed (no answer to a ping) within
    // two of them, well inside a proof period even at the soak's pace of chain time.
    let anvil_args = ["--state", state.to_str().unwrap()];
    let mut m = Market::start(
        &params,
        &anvil_args,
        &["--eth-timeout", "4s"],
        |chain: &Devchain, _| {
            let upstream: std::net::SocketAddr =
                format!("127.0.0.1:{}", chain.anvil.port).parse().unwrap();
            let p = Proxy::start(upstream);
            let url = p.ws_url();
            proxies.push(p);
            Some(url)
        },
    );
    m.head_wait = std::time::Duration::from_secs(2);
    let blocks = (faults as u64 * 8).max(150);
    let mut at: Vec<u64> = (0..faults).map(|_| m.rng.u64(10..blocks)).collect();
    at.sort();
    // Every kind at least once (with 7 faults or more), the rest at random.
    let mut plan: Vec<u8> = (0..faults)
        .map(|k| if k < 7 { k as u8 } else { m.rng.u8(0..7) })
        .collect();
    m.rng.shuffle(&mut plan);
    let mut injected = Tally::new();
    let mut done = 0usize;
    while m.blocks < blocks || done < faults {
        let now = m.chain_time();
        if m.blocks + 40 < blocks && m.live_requests(now) < 5 && m.rng.u8(0..4) == 0 {
            m.post_random();
        }
        m.step();
        if at.first().is_none_or(|&b| b > m.blocks) {
            continue;
        }
        // Only while some sale is live.
        if (0..m.hosts.len()).all(|i| m.live_states(i).is_empty()) {
            if m.blocks >= blocks {
                // Nothing live any more: post something to be faulted.
                m.post_random();
            }
            continue;
        }
        at.remove(0);
        std::thread::sleep(m.block_pause.mul_f64(m.rng.f64()));
        let victim = m.rng.usize(..proxies.len());
        let p = &proxies[victim];
        // A host cut off from the chain is down as far as proofs go, until it catches up.
        if victim < m.hosts.len() {
            m.faulted(victim);
        }
        let kind = match plan[done] {
            0 => {
                p.drop_all();
                "drop"
            }
            1 => {
                p.drop_mid_frame();
                "drop mid-frame"
            }
            2 => {
                p.stall();
                "stall"
            }
            3 => {
                p.inject(&text_frame(b"{\"jsonrpc\":\"2.0\",\"id\":"));
                p.inject(&text_frame(b"[1,2,3]"));
                p.inject(&text_frame(
                    br#"{"jsonrpc":"2.0","id":987654,"result":"0x1"}"#,
                ));
                p.inject(&text_frame(
                    br#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xdead","result":{}}}"#,
                ));
                "malformed frames"
            }
            4 => {
                // A header announcing a 1 GiB text frame, then a little of it.
                let mut f = vec![0x81, 127];
                f.extend_from_slice(&(1u64 << 30).to_be_bytes());
                f.extend_from_slice(&[b'x'; 100]);
                p.inject(&f);
                "oversized frame"
            }
            5 => {
                p.fail_next(METHODS[m.rng.usize(..METHODS.len())]);
                "JSON-RPC error"
            }
            _ => {
                for i in 0..m.hosts.len() {
                    m.faulted(i);
                }
                restart_anvil(&mut m, &proxies);
                "anvil restart from its state dump"
            }
        };
        bump(&mut injected, kind);
        done += 1;
    }
    let fault_phase = started.elapsed();
    m.drain(600);
    let mut bad = m.stop_all();
    let txs = m.transactions();
    let audit = m.audit(&txs);
    bad.extend(audit.violations.iter().cloned());
    let reconnects: Vec<usize> = proxies.iter().map(|p| p.accepted()).collect();
    eprintln!(
        "soak faults: seed {}, {done} faults in {} blocks, {} requests; fault phase {:.0} s, whole run {:.0} s",
        m.seed,
        m.blocks,
        m.posted.len(),
        fault_phase.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("soak faults: injected {injected:?}; connections per node (hosts, validator) {reconnects:?}");
    eprintln!("soak faults: {:#?}", audit.tally);
    assert!(
        bad.is_empty(),
        "seed {} (replay with CODEX_SOAK_SEED={}): {} violations:\n{}",
        m.seed,
        m.seed,
        bad.len(),
        bad.join("\n")
    );
}

/// Stops anvil (it writes its state), starts it again from that state on the same port, and
/// lets the nodes reconnect; the chain must continue where it was.
fn restart_anvil(m: &mut Market, proxies: &[Proxy]) {
    let head = m.block_number();
    let time = m.chain_time();
    for p in proxies {
        p.refuse(true);
        p.drop_all();
    }
    m.w.chain.anvil.terminate();
    m.w.chain.anvil.restart();
    m.w.rpc = m.w.chain.rpc();
    // The dump keeps the blocks but not the offset evm_increaseTime added to the clock: set
    // the clock where the chain was, so that it does not go back in time.
    m.w.rpc.call("evm_setTime", json!([time + 1])).unwrap();
    let head_now = m.block_number();
    for p in proxies {
        p.refuse(false);
    }
    m.w.mine();
    let time_now = m.chain_time();
    assert!(
        head_now >= head && time_now > time,
        "seed {}: anvil did not keep its chain: head {head} at {time} -> {head_now} at {time_now}",
        m.seed
    );
}
