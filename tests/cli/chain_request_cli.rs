//! `codex request create|show|withdraw` against the real fixture Marketplace on anvil.
use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use alloy_primitives::{B256, U256};
use codex::market::{Ask, Content, Request};
use serde_json::{json, Value};
use support::codex::{codex, run, Running};
use support::devchain::Devchain;

fn key_file(dir: &Path, key: &str, mode: u32) -> PathBuf {
    let p = dir.join(format!("key-{mode:o}"));
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

const CREATE: &[&str] = &[
    "request",
    "create",
    "--cid",
    "0x01551220aa",
    "--slots",
    "2",
    "--slot-size",
    "1024",
    "--duration",
    "1h",
    "--expiry",
    "10m",
    "--price-per-byte-per-second",
    "1",
    "--collateral-per-byte",
    "1",
    "--proof-probability",
    "2",
    "--max-slot-loss",
    "1",
];

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn create_show_and_withdraw() {
    let chain = Devchain::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), &chain.private_key(1), 0o600);
    let nonce = format!("0x{}", "11".repeat(32));
    let base = |c: &mut std::process::Command| {
        c.args(["--eth-provider", &chain.ws_url()])
            .arg("--eth-private-key")
            .arg(&key);
    };

    // create
    let mut c = codex(dir.path());
    base(&mut c);
    c.args(CREATE).args(["--nonce", &nonce]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out).trim().to_string();
    let expected = Request {
        client: chain.account(1),
        ask: Ask {
            proof_probability: U256::from(2u8),
            price_per_byte_per_second: U256::from(1u8),
            collateral_per_byte: U256::from(1u8),
            slots: 2,
            slot_size: 1024,
            duration: 3600,
            max_slot_loss: 1,
        },
        content: Content {
            cid: vec![0x01, 0x55, 0x12, 0x20, 0xaa],
            merkle_root: B256::ZERO,
        },
        expiry: 600,
        nonce: B256::repeat_byte(0x11),
    }
    .id();
    assert_eq!(printed, expected.to_string());

    // the event is on chain
    let mut c = codex(dir.path());
    c.args(["--eth-provider", &chain.ws_url(), "events"]);
    let out = run(c);
    let ev: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(ev["event"], "StorageRequested");
    assert_eq!(ev["requestId"], json!(printed));

    // --json, and the same request again is refused with the named revert
    let mut c = codex(dir.path());
    base(&mut c);
    c.args(CREATE).args(["--nonce", &nonce, "--json"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("RequestAlreadyExists") || stderr(&out).contains("AlreadyExists"),
        "{}",
        stderr(&out)
    );
    let mut c = codex(dir.path());
    base(&mut c);
    c.args(CREATE).arg("--json");
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(v["requestId"].as_str().unwrap().starts_with("0x"));

    // show
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "request",
        "show",
        &printed,
        "--json",
    ]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["state"], "New");
    assert_eq!(v["slots"].as_array().unwrap().len(), 2);
    assert_eq!(v["slots"][0]["state"], "Free");
    assert_eq!(v["slots"][0]["host"], Value::Null);
    assert_eq!(v["ask"]["slotSize"], 1024);
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "request",
        "show",
        &printed,
    ]);
    let out = run(c);
    assert!(stdout(&out).contains("state      New"), "{}", stdout(&out));

    // withdraw too early: the named revert, exit 1
    let mut c = codex(dir.path());
    base(&mut c);
    c.args(["request", "withdraw", &printed]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("InvalidState"), "{}", stderr(&out));

    // after expiry: withdrawn, and the request is cancelled
    let mut rpc = chain.rpc();
    rpc.call("evm_increaseTime", json!([700])).unwrap();
    rpc.call("evm_mine", json!([])).unwrap();
    let mut c = codex(dir.path());
    base(&mut c);
    c.args(["request", "withdraw", &printed, "--json"]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        &chain.ws_url(),
        "request",
        "show",
        &printed,
        "--json",
    ]);
    let v: Value = serde_json::from_str(stdout(&run(c)).trim()).unwrap();
    assert_eq!(v["state"], "Cancelled");
}

#[test]
fn bad_input_is_refused_before_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(
        dir.path(),
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        0o644,
    );
    // The provider is never contacted: the port is closed, yet the errors are usage errors.
    let url = "ws://127.0.0.1:9";
    let mut c = codex(dir.path());
    c.args(["--eth-provider", url])
        .arg("--eth-private-key")
        .arg(&key)
        .args(CREATE);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does not have safe file permissions"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("59c6995e"), "the key never appears");

    let key = key_file(
        dir.path(),
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        0o600,
    );
    let mut c = codex(dir.path());
    c.args(["--eth-provider", url])
        .arg("--eth-private-key")
        .arg(&key);
    let mut args: Vec<&str> = CREATE.to_vec();
    let i = args.iter().position(|a| *a == "--cid").unwrap();
    args[i + 1] = "not-a-cid";
    c.args(&args);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not-a-cid"), "{}", stderr(&out));

    let mut c = codex(dir.path());
    c.args(["--eth-provider", url])
        .arg("--eth-private-key")
        .arg(&key);
    let mut args: Vec<&str> = CREATE.to_vec();
    let i = args.iter().position(|a| *a == "--expiry").unwrap();
    args[i + 1] = "2h";
    c.args(&args);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--expiry"), "{}", stderr(&out));

    // No key at all.
    let mut c = codex(dir.path());
    c.args(["--eth-provider", url]).args(CREATE);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--eth-private-key"),
        "{}",
        stderr(&out)
    );

    // A bad id.
    let mut c = codex(dir.path());
    c.args(["--eth-provider", url, "request", "show", "0x12"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("0x12"), "{}", stderr(&out));

    // Provider down: exit 3.
    let mut c = codex(dir.path());
    c.args([
        "--eth-provider",
        url,
        "request",
        "show",
        &format!("0x{}", "ab".repeat(32)),
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// Polls the chain (the waits are the client's poll timeouts) until `cond` holds.
fn wait_for(
    rpc: &mut codex::chain::client::BlockingClient,
    what: &str,
    mut cond: impl FnMut(&mut codex::chain::client::BlockingClient) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond(rpc) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        rpc.pause(std::time::Duration::from_millis(20)).unwrap();
    }
}

fn mined_count(
    rpc: &mut codex::chain::client::BlockingClient,
    who: alloy_primitives::Address,
) -> u64 {
    let v = rpc
        .call("eth_getTransactionCount", json!([who, "latest"]))
        .unwrap();
    codex::chain::client::quantity_result("eth_getTransactionCount", &v).unwrap()
}

#[test]
fn create_waits_for_the_configured_confirmations() {
    let chain = Devchain::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), &chain.private_key(1), 0o600);
    let who = chain.account(1);
    let mut rpc = chain.rpc();
    let start = mined_count(&mut rpc, who);
    let mut c = codex(dir.path());
    c.args(["--eth-provider", &chain.ws_url()])
        .arg("--eth-private-key")
        .arg(&key)
        .args(["--eth-confirmations", "2"])
        .args(CREATE)
        .arg("--json");
    let mut cmd = Running::spawn(c);
    // Two transactions (approve, requestStorage); anvil mines each at once. Each is then in
    // the newest block, and codex must wait for one more block before it goes on.
    for (n, tx) in [(1, "approve"), (2, "requestStorage")] {
        wait_for(&mut rpc, &format!("{tx} to be mined"), |r| {
            mined_count(r, who) == start + n
        });
        let head = rpc.block_number().unwrap();
        assert!(
            cmd.is_running(),
            "codex went on after {tx} with only its own block"
        );
        assert_eq!(mined_count(&mut rpc, who), start + n, "nothing else sent");
        rpc.call("evm_mine", json!([])).unwrap();
        assert_eq!(rpc.block_number().unwrap(), head + 1);
    }
    let status = cmd.finish(std::time::Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
    assert_eq!(cmd.seen.len(), 1, "{:?}", cmd.seen);
    let v: Value = serde_json::from_str(&cmd.seen[0]).unwrap();
    let block = v["blockNumber"].as_u64().unwrap();
    assert_eq!(
        rpc.block_number().unwrap(),
        block + 1,
        "requestStorage has exactly one block on top"
    );
}

#[test]
fn confirmations_must_be_at_least_1() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(
        dir.path(),
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        0o600,
    );
    // The provider is never contacted.
    let url = "ws://127.0.0.1:9";
    let conf = dir.path().join("codex.toml");
    std::fs::write(&conf, "eth-confirmations = 0\n").unwrap();
    let conf = conf.to_str().unwrap();
    struct Case<'a> {
        args: &'a [&'a str],
        env: Option<(&'a str, &'a str)>,
        value: &'a str,
        origin: &'a str,
    }
    let cases = [
        Case {
            args: &["--eth-confirmations", "0"],
            env: None,
            value: "\"0\"",
            origin: "command line",
        },
        Case {
            args: &[],
            env: Some(("CODEX_ETH_CONFIRMATIONS", "0")),
            value: "\"0\"",
            origin: "CODEX_ETH_CONFIRMATIONS",
        },
        Case {
            args: &["--config-file", conf],
            env: None,
            value: "\"0\"",
            origin: "codex.toml",
        },
        Case {
            args: &["--eth-confirmations", "two"],
            env: None,
            value: "\"two\"",
            origin: "whole number",
        },
    ];
    for Case {
        args,
        env,
        value,
        origin,
    } in cases
    {
        let mut c = codex(dir.path());
        c.args(args)
            .args(["--eth-provider", url])
            .arg("--eth-private-key")
            .arg(&key)
            .args(CREATE);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = run(c);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--eth-confirmations") && err.contains(value) && err.contains(origin),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
