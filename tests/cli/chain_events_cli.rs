//! `codex events` against the real fixture Marketplace on anvil, also through faults.
use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::codex::{codex, run, Running};
use support::devchain::{request_storage, Devchain};
use support::proxy::{text_frame, Proxy};

const T: Duration = Duration::from_secs(60);

fn request_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["event"], "StorageRequested", "{l}");
            v["requestId"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn events_prints_decoded_events_once_in_order() {
    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let ids: Vec<String> = (1..=3)
        .map(|n| request_storage(&mut rpc, &chain, 1, n).to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "events",
        "--from-block",
        "0",
    ]);
    let out = run(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(request_ids(&lines), ids);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    for key in [
        "blockNumber",
        "transactionHash",
        "logIndex",
        "ask",
        "expiry",
    ] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
    // A block range selects a subset.
    let block: u64 = first["blockNumber"]
        .as_u64()
        .unwrap_or_else(|| first["blockNumber"].as_str().unwrap().parse().unwrap());
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "events",
        "--from-block",
        &(block + 1).to_string(),
    ]);
    let out = run(c);
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(request_ids(&lines), ids[1..].to_vec());
}

#[test]
fn chain_errors_exit_3() {
    let chain = Devchain::start(&["--chain-id", "7"]);
    let dir = tempfile::tempdir().unwrap();
    // Wrong chain: no known Marketplace on chain 7.
    let mut c = codex(dir.path());
    c.args(["--eth-provider", &chain.ws_url(), "events"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chain 7") && err.contains("--marketplace-address"),
        "{err}"
    );
    // Wrong marketplace address: no code there.
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "--marketplace-address",
        "0x000000000000000000000000000000000000dEaD",
        "events",
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase()
            .contains("0x000000000000000000000000000000000000dead"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // Provider down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &format!("ws://127.0.0.1:{port}"),
        "events",
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&port.to_string()), "{err}");
    // A bad URL is a usage error.
    let mut c = codex(dir.path());
    c.args(["--eth-provider", "http://x", "events"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://x"));
}

/// `codex events --follow` on a real chain, interrupted by `signal` once it has printed the
/// events on chain: it ends with status 0, and what it printed is exactly those events, each
/// a whole JSON line.
fn follow_then_signal(signal: &str) {
    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let ids: Vec<String> = (1..=2)
        .map(|n| request_storage(&mut rpc, &chain, 1, n).to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "events",
        "--follow",
        "--from-block",
        "0",
    ]);
    let mut follow = Running::spawn(c);
    follow.wait_lines(ids.len(), T);
    assert!(follow.is_running(), "--follow ended by itself");
    follow.signal(signal);
    let status = follow.finish(T);
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal} ended codex with {status:?}"
    );
    assert_eq!(request_ids(&follow.seen), ids);
}

#[test]
fn follow_ends_with_status_0_on_sigterm() {
    follow_then_signal("TERM");
}

#[test]
fn follow_ends_with_status_0_on_sigint() {
    follow_then_signal("INT");
}

/// `codex events --follow` through the proxy: requests 1..=3, the fault, 4..=6, then 7, and
/// the printed request ids must be exactly 1..=7.
fn follow_through(extra_anvil: &[&str], fault: impl FnOnce(&mut Devchain, &Proxy)) {
    let mut chain = Devchain::start(extra_anvil);
    let proxy = Proxy::start(([127, 0, 0, 1], chain.anvil.port).into());
    let dir = tempfile::tempdir().unwrap();
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &proxy.ws_url(),
        "--eth-timeout",
        "1s",
        "events",
        "--follow",
        "--from-block",
        "0",
    ]);
    let mut follow = Running::spawn(c);
    let mut rpc = chain.rpc();
    let mut ids = vec![];
    for n in 1..=3 {
        ids.push(request_storage(&mut rpc, &chain, 1, n).to_string());
    }
    follow.wait_lines(3, T);
    fault(&mut chain, &proxy);
    let mut rpc = chain.rpc();
    for n in 4..=7 {
        ids.push(request_storage(&mut rpc, &chain, 1, n).to_string());
    }
    follow.wait_lines(7, T);
    assert_eq!(request_ids(&follow.seen), ids);
    assert!(follow.is_running());
}

#[test]
fn follow_survives_a_drop_mid_frame() {
    follow_through(&[], |_, p| p.drop_mid_frame());
}

#[test]
fn follow_survives_a_stall() {
    follow_through(&[], |_, p| p.stall());
}

#[test]
fn follow_survives_malformed_and_oversized_frames() {
    follow_through(&[], |_, p| {
        p.inject(&text_frame(b"{\"jsonrpc\":"));
        p.inject(&text_frame(
            br#"{"jsonrpc":"2.0","id":424242,"result":"0x1"}"#,
        ));
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&(1u64 << 30).to_be_bytes());
        p.inject(&f);
    });
}

#[test]
fn follow_survives_a_json_rpc_error() {
    follow_through(&[], |_, p| p.fail_next("eth_getLogs"));
}

#[test]
fn follow_survives_a_node_restart() {
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("state.json");
    let path = path.to_str().unwrap().to_string();
    follow_through(&["--state", &path], |chain, p| {
        p.refuse(true);
        p.drop_all();
        chain.anvil.terminate();
        chain.anvil.restart();
        p.refuse(false);
    });
}
