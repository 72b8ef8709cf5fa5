//! `codex run` against the real dev chain (anvil + the fixture Marketplace), run as the built
//! binary: whole sales, restarts, faults and bad input. Scenario numbers refer to
//! `docs/sales.md#scenario-numbers`.
#[path = "../support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use codex::market::{calls, Ask, Content, Request, SlotId, SlotState};
use serde_json::{json, Value};
use support::dataserver::Mode;
use support::devchain;
use support::node::{
    api, assert_invariant, codex_cmd, forcibly_free, free_port, free_size, http, key_file,
    now_secs, Host, World,
};
use support::proxy::{text_frame, Proxy};

mod reorg;
mod validator;

/// Items 96–98, 110: a host with an availability sells both slots of a request, proves them
/// every period, frees them at the end, is paid, and gets its bytes and collateral back; the
/// data of the ended sales is deleted.
#[test]
fn a_host_sells_proves_and_is_paid_for_a_request() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let before = w.balance(me);
    let req = w.post(2, 600, 300, 1);
    let id = req.id();
    let slots = [SlotId::of(id, 0), SlotId::of(id, 1)];
    w.mine_until(&[&host], "both slots filled by the host", 60, |w| {
        slots.iter().all(|s| w.host_of(*s) == me)
    });
    assert_eq!(
        free_size(&host),
        (1 << 20) - 2 * 4096,
        "bytes held while hosting"
    );
    assert_eq!(
        host.slots_dir_files().len(),
        2,
        "the slots' data is on disk"
    );
    // Proofs every period.
    w.mine_until(&[&host], "two proofs per slot", 60, |w| {
        slots.iter().all(|s| w.proofs(*s) >= 2)
    });
    // The request ends; the host frees its slots and is paid.
    w.mine_until(&[&host], "both slots paid", 120, |w| {
        slots.iter().all(|s| w.slot_state(*s) == SlotState::Paid)
    });
    w.mine_until(&[&host], "the sales ended", 20, |_| {
        free_size(&host) == 1 << 20
    });
    let after = w.balance(me);
    assert!(after > before, "paid: {before} -> {after}");
    assert_eq!(
        host.availabilities()[0]["totalRemainingCollateral"],
        "10000000",
        "collateral back"
    );
    assert!(
        host.slots_dir_files().is_empty(),
        "data deleted: {:?}",
        host.slots_dir_files()
    );
    assert!(host.terminate(Duration::from_secs(5)).success());
}

/// Item 121 and a crash: `kill -9` while proving, then a restart resumes proving the slot it
/// hosts (from the chain's mySlots and the persisted reservation) without a second fill, and
/// the sale completes.
#[test]
fn a_host_killed_while_proving_resumes_after_a_restart() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let req = w.post(1, 720, 300, 2);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&host], "slot filled", 60, |w| w.host_of(slot) == me);
    w.mine_until(&[&host], "a proof", 40, |w| w.proofs(slot) >= 1);
    host.kill9();
    let proofs = w.proofs(slot);
    w.mine();
    host.start();
    w.mine_until(&[&host], "proving resumed", 40, |w| w.proofs(slot) > proofs);
    w.mine_until(&[&host], "paid", 120, |w| {
        w.slot_state(slot) == SlotState::Paid
    });
    w.mine_until(&[&host], "bytes back", 20, |_| free_size(&host) == 1 << 20);
    let text = std::fs::read_to_string(&host.log).unwrap();
    assert_eq!(text.matches("sent fillSlot").count(), 1, "filled once");
    assert_invariant(&host);
}

/// An availability added with the CLI while the node runs picks up a request that was
/// announced before it (`docs/architecture.md#shared-database`; the reference never looks
/// back at past requests when an availability is added).
#[test]
fn an_availability_added_while_running_sells_to_a_request_posted_before() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    // A database with an availability too small for the request, so the node starts with
    // something to offer that does not match.
    host.offer("1KiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let req = w.post(1, 600, 300, 3);
    let slot = SlotId::of(req.id(), 0);
    // The node has read the request (and found nothing to offer for it) before the
    // availability that fits comes.
    w.mine_until(&[&host], "the request read by the node", 30, |_| {
        std::fs::read_to_string(&host.log)
            .unwrap_or_default()
            .contains(": StorageRequested")
    });
    assert_eq!(w.host_of(slot), Address::ZERO, "nothing matched yet");
    host.offer("1MiB", "10000000");
    w.mine_until(
        &[&host],
        "slot filled after the availability was added",
        60,
        |w| w.host_of(slot) == me,
    );
}

/// A data source that answers 404 or sends more than the slot ends the sale as errored,
/// with the bytes and collateral back and no data left.
#[test]
fn a_failing_data_source_ends_the_sale_and_returns_everything() {
    for (mode, nonce) in [(Mode::NotFound, 4u8), (Mode::TooMany(10), 5)] {
        let mut w = World::new();
        w.data.set_mode(mode);
        let mut host = w.host("h1", 1, &[]);
        host.offer("1MiB", "10000000");
        host.start();
        let req = w.post(1, 600, 300, nonce);
        let id = req.id();
        w.mine_until(&[&host], "a download attempt", 30, |w| {
            w.data.requests() > 0
        });
        w.mine_until(&[&host], "the sale ended with everything back", 30, |_| {
            let text = std::fs::read_to_string(&host.log).unwrap_or_default();
            text.contains("SaleErrored") && free_size(&host) == 1 << 20
        });
        assert_eq!(w.host_of(SlotId::of(id, 0)), Address::ZERO);
        assert_eq!(
            host.availabilities()[0]["totalRemainingCollateral"],
            "10000000"
        );
        assert!(
            host.slots_dir_files().is_empty(),
            "{mode:?}: {:?}",
            host.slots_dir_files()
        );
    }
}

/// Two hosts compete for a two-slot request: every slot is filled once, each by one host,
/// and neither host leaks bytes for the slot it lost.
#[test]
fn two_hosts_share_a_request() {
    let mut w = World::new();
    let mut a = w.host("a", 1, &[]);
    let mut b = w.host("b", 2, &[]);
    b.log_format = "json".into();
    a.offer("1MiB", "10000000");
    b.offer("1MiB", "10000000");
    a.start();
    b.start();
    let req = w.post(2, 600, 300, 6);
    let id = req.id();
    let (ha, hb) = (w.chain.account(1), w.chain.account(2));
    w.mine_until(&[&a, &b], "both slots filled", 60, |w| {
        (0..2).all(|i| {
            let h = w.host_of(SlotId::of(id, i));
            h == ha || h == hb
        })
    });
    w.mine_until(&[&a, &b], "no bytes held for lost slots", 30, |w| {
        let held_a = (0..2)
            .filter(|i| w.host_of(SlotId::of(id, *i)) == ha)
            .count() as u64;
        let held_b = 2 - held_a;
        free_size(&a) == (1 << 20) - held_a * 4096 && free_size(&b) == (1 << 20) - held_b * 4096
    });
    // Host b logs JSON lines: every state change has the short id in its text and the full
    // request id as a field.
    let text = std::fs::read_to_string(&b.log).unwrap();
    let transitions: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"].as_str().is_some_and(|m| m.contains(" -> ")))
        .collect();
    assert!(!transitions.is_empty(), "{text}");
    for t in &transitions {
        assert_eq!(t["request"], id.to_string(), "{t}");
        assert!(t["msg"].as_str().unwrap().contains('…'), "{t}");
    }
}

/// SIGTERM stops the node within a second with status 0.
#[test]
fn sigterm_stops_the_node_cleanly() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    w.mine_until(&[&host], "the node follows the chain", 20, |_| {
        std::fs::read_to_string(&host.log)
            .unwrap_or_default()
            .contains("connected to")
    });
    let t = Instant::now();
    let st = host.terminate(Duration::from_secs(5));
    assert!(st.success(), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // A second node on the same data dir is refused while one runs.
    host.start();
    w.mine_until(&[&host], "running again", 20, |_| {
        std::fs::read_to_string(&host.log)
            .unwrap_or_default()
            .matches("connected to")
            .count()
            >= 2
    });
    let mut c = codex_cmd(&host.dir);
    c.arg("--eth-private-key")
        .arg(&host.key)
        .args(&host.global)
        .arg("run")
        .args(&host.args);
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("another codex run"));
}

/// Bad input: each gets a clear error naming what is wrong, the documented exit code, and no
/// database.
#[test]
fn bad_options_are_refused_before_anything_starts() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), &w.chain.private_key(1));
    let ws = w.chain.ws_url();
    let mkt = w.chain.marketplace().to_string();
    let src = w.data.template();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "not a key").unwrap();
    std::fs::set_permissions(&bad_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let open_key = dir.path().join("open.key");
    std::fs::write(&open_key, w.chain.private_key(1)).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let k = key.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--eth-provider", &ws, "run", "--data-source", &src],
            2,
            "--eth-private-key",
        ),
        (
            vec!["--eth-private-key", k, "--eth-provider", &ws, "run"],
            2,
            "--data-source",
        ),
        (
            vec![
                "--eth-private-key",
                k,
                "run",
                "--data-source",
                "http://x/data",
            ],
            2,
            "{cid}",
        ),
        (
            vec![
                "--eth-private-key",
                k,
                "run",
                "--data-source",
                &src,
                "--max-workers",
                "0",
            ],
            2,
            "max-workers",
        ),
        (
            vec![
                "--eth-private-key",
                k,
                "run",
                "--data-source",
                &src,
                "--queue-size",
                "0",
            ],
            2,
            "queue-size",
        ),
        (
            vec![
                "--eth-private-key",
                k,
                "run",
                "--data-source",
                &src,
                "--reward-recipient",
                "0x12",
            ],
            2,
            "reward-recipient",
        ),
        (
            vec![
                "--eth-private-key",
                bad_key.to_str().unwrap(),
                "run",
                "--data-source",
                &src,
            ],
            2,
            "bad.key",
        ),
        (
            vec![
                "--eth-private-key",
                open_key.to_str().unwrap(),
                "run",
                "--data-source",
                &src,
            ],
            2,
            "open.key",
        ),
        (
            vec![
                "--eth-provider",
                &ws,
                "--marketplace-address",
                "0x0000000000000000000000000000000000000001",
                "--eth-private-key",
                k,
                "run",
                "--data-source",
                &src,
            ],
            3,
            "0x0000000000000000000000000000000000000001",
        ),
    ];
    for (args, code, needle) in cases {
        let data = dir.path().join("data");
        let out = codex_cmd(&data)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} does not mention {needle}"
        );
        assert!(!data.exists(), "{args:?} created the data directory");
    }
    // The data dir is a file.
    let out = codex_cmd(&file)
        .args([
            "--eth-private-key",
            k,
            "--eth-provider",
            &ws,
            "--marketplace-address",
            &mkt,
            "run",
            "--data-source",
            &src,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("a-file"));
}

/// The WebSocket to the Ethereum node is dropped again and again during a sale (through the
/// fault proxy, mid-frame too): the node reconnects, backfills, and the sale still fills,
/// proves and is paid, with one fill.
#[test]
fn a_sale_survives_dropped_connections() {
    let mut w = World::new();
    let upstream: std::net::SocketAddr =
        format!("127.0.0.1:{}", w.chain.anvil.port).parse().unwrap();
    let proxy = Proxy::start(upstream);
    let mut host = w.host("h1", 1, &[]).via(&proxy.ws_url());
    host.offer("1MiB", "10000000");
    host.start();
    w.mine_until(&[&host], "the node follows the chain", 20, |_| {
        host.log_has("connected to")
    });
    let me = w.chain.account(1);
    let req = w.post(1, 900, 600, 7);
    let slot = SlotId::of(req.id(), 0);
    let mut turn = 0;
    w.mine_until(&[&host], "slot filled despite drops", 80, |w| {
        // A drop every third block (every other one cuts a frame in half), six in all.
        if turn < 18 && turn % 3 == 0 {
            if turn % 2 == 0 {
                proxy.drop_all();
            } else {
                proxy.drop_mid_frame();
            }
        }
        turn += 1;
        // Garbage from the "node" between frames: malformed JSON, an answer to no call, a
        // notification for no subscription, and a log that is not a Marketplace event.
        if turn == 5 {
            proxy.inject(&text_frame(b"{\"jsonrpc\":\"2.0\",\"id\":"));
            proxy.inject(&text_frame(br#"{"jsonrpc":"2.0","id":987654,"result":"0x1"}"#));
            proxy.inject(&text_frame(
                br#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xdead","result":{}}}"#,
            ));
        }
        w.host_of(slot) == me
    });
    proxy.drop_all();
    w.mine_until(&[&host], "a proof after more drops", 40, |w| {
        w.proofs(slot) >= 1
    });
    proxy.drop_all();
    w.mine_until(&[&host], "paid", 120, |w| {
        w.slot_state(slot) == SlotState::Paid
    });
    w.mine_until(&[&host], "bytes back", 20, |_| free_size(&host) == 1 << 20);
    assert!(proxy.accepted() > 3, "the node reconnected");
    let text = std::fs::read_to_string(&host.log).unwrap();
    assert_eq!(
        text.matches("sent fillSlot").count(),
        1,
        "filled once:\n{text}"
    );
}

/// Requests posted while the node is down are found after it restarts (the cursor is
/// persisted; logs are backfilled from it) and sold.
#[test]
fn requests_posted_while_the_node_was_down_are_sold_after_a_restart() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    w.mine_until(&[&host], "the node follows the chain", 20, |_| {
        host.log_has("connected to")
    });
    for _ in 0..3 {
        w.mine();
    }
    host.kill9();
    let me = w.chain.account(1);
    let req = w.post(1, 600, 300, 8);
    let slot = SlotId::of(req.id(), 0);
    w.mine();
    host.start();
    w.mine_until(&[&host], "the missed request is sold", 60, |w| {
        w.host_of(slot) == me
    });
}

/// `kill -9` while the slot downloads (the data source stalls): the restarted node ends
/// the reservation no slot holds, finds the still open request again, and sells it.
#[test]
fn a_host_killed_while_downloading_sells_the_slot_after_a_restart() {
    let mut w = World::new();
    w.data.set_mode(Mode::Stall);
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let req = w.post(1, 600, 300, 9);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&host], "downloading", 30, |w| w.data.requests() > 0);
    assert_eq!(free_size(&host), (1 << 20) - 4096, "bytes reserved");
    host.kill9();
    w.data.set_mode(Mode::Serve);
    host.start();
    w.mine_until(&[&host], "sold after the restart", 60, |w| {
        w.host_of(slot) == me
    });
    assert_eq!(
        free_size(&host),
        (1 << 20) - 4096,
        "one reservation, not two"
    );
    assert_invariant(&host);
}

/// `kill -9` after fillSlot was sent but before it was mined (automine is off, so the
/// transaction waits in the pool): the restarted node waits for it, finds the slot among
/// the ones it hosts, keeps its reservation, and proves it; it does not fill twice.
#[test]
fn a_host_killed_before_its_fill_is_mined_resumes_the_slot() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let req = w.post(1, 720, 360, 10);
    let slot = SlotId::of(req.id(), 0);
    w.rpc.call("evm_setAutomine", json!([false])).unwrap();
    w.mine_until(&[&host], "approve mined", 60, |_| {
        host.log_has("approve 0x")
    });
    // No more blocks until the fill is sent, so it stays in the pool.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host.log_has("sent fillSlot") {
        host.assert_running();
        assert!(
            Instant::now() < deadline,
            "no fillSlot:\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    host.kill9();
    assert_eq!(w.host_of(slot), Address::ZERO, "not mined yet");
    host.start();
    w.mine_until(&[&host], "filled", 20, |w| w.host_of(slot) == me);
    w.mine_until(&[&host], "proving after the restart", 60, |w| {
        w.proofs(slot) >= 1
    });
    assert_eq!(
        free_size(&host),
        (1 << 20) - 4096,
        "the reservation was kept"
    );
    let text = std::fs::read_to_string(&host.log).unwrap();
    assert_eq!(text.matches("sent fillSlot").count(), 1, "filled once");
    assert_invariant(&host);
}

/// `kill -9` while freeing the slot at the end: the restarted node finds the slot paid or
/// still owed, collects what is owed, and gives the bytes and collateral back.
#[test]
fn a_host_killed_during_payout_collects_after_a_restart() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let req = w.post(1, 600, 300, 11);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&host], "filled", 60, |w| w.host_of(slot) == me);
    let hosting = w.balance(me);
    w.rpc.call("evm_setAutomine", json!([false])).unwrap();
    w.mine_until(&[&host], "freeSlot sent", 120, |_| {
        host.log_has("sent freeSlot")
    });
    host.kill9();
    host.start();
    w.mine_until(&[&host], "paid", 40, |w| {
        w.slot_state(slot) == SlotState::Paid
    });
    w.mine_until(&[&host], "bytes and collateral back", 20, |_| {
        free_size(&host) == 1 << 20
    });
    assert_eq!(
        host.availabilities()[0]["totalRemainingCollateral"],
        "10000000"
    );
    assert!(host.slots_dir_files().is_empty());
    assert_invariant(&host);
    // The payout, mined while the node was down, is in the history with what the chain sent
    // (the crash soak found it missing).
    let gain = w.balance(me) - hosting;
    let out = host.cli(&["sale", "list", "--all", "--json"]);
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = rows
        .iter()
        .find(|r| r["slotId"] == slot.to_string().as_str())
        .unwrap_or_else(|| panic!("the paid sale is not in the history: {rows:?}"));
    assert_eq!(row["outcome"], "Finished", "{row}");
    assert_eq!(row["collateralReturned"], "4096", "{row}");
    let payout: U256 = row["payout"].as_str().unwrap().parse().unwrap();
    assert_eq!(payout + U256::from(4096u64), gain, "{row}");
}

/// Item 118: a slot forcibly freed from its host is taken by another host at the repair
/// discount; the host that lost it ends its sale (its collateral is forfeited on chain),
/// gives the bytes back and deletes the data.
#[test]
fn a_freed_slot_is_repaired_by_another_host_at_the_discount() {
    let mut w = World::new();
    let mut a = w.host("a", 1, &[]);
    a.offer("1MiB", "10000000");
    a.start();
    let (ha, hb) = (w.chain.account(1), w.chain.account(2));
    let req = w.post(1, 900, 300, 12);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&a], "host a fills the slot", 60, |w| {
        w.host_of(slot) == ha
    });
    // Host b joins with room; the slot is then taken from host a.
    let mut b = w.host("b", 2, &[]);
    b.offer("1MiB", "10000000");
    b.start();
    w.mine_until(&[&a, &b], "host b follows the chain", 20, |_| {
        b.log_has("connected to")
    });
    let b_before = w.balance(hb);
    let deployer = w.chain.account(0);
    let mkt = w.chain.marketplace();
    devchain::send(&mut w.rpc, deployer, mkt, &forcibly_free(slot));
    w.mine_until(&[&a, &b], "host b repairs the slot", 60, |w| {
        w.host_of(slot) == hb
    });
    // Collateral per slot is 4096; the repair discount (10%) leaves 3687 (rounded down).
    let spent = b_before - w.balance(hb);
    assert!(
        spent < U256::from(4096u64) && spent >= U256::from(3686u64),
        "host b posted {spent}, the discounted collateral"
    );
    w.mine_until(&[&a, &b], "host a ends its sale", 40, |_| {
        free_size(&a) == 1 << 20
    });
    assert!(a.slots_dir_files().is_empty(), "host a deleted the data");
    assert!(a.log_has("slot was forcibly freed"));
}

/// Item 113: a request that expires with only some slots filled pays the host for the time
/// it held its slot (more than nothing, less than the whole expiry), and the host gets its
/// bytes and collateral back.
#[test]
fn an_expired_request_pays_the_host_for_the_time_it_held_the_slot() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    // Room for one slot only.
    host.offer("4KiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let before = w.balance(me);
    let req = w.post(2, 900, 300, 13);
    let id = req.id();
    w.mine_until(&[&host], "one slot filled", 60, |w| {
        (0..2).any(|i| w.host_of(SlotId::of(id, i)) == me)
    });
    w.mine_until(&[&host], "cancelled and paid out", 80, |w| {
        (0..2).any(|i| w.slot_state(SlotId::of(id, i)) == SlotState::Paid)
    });
    w.mine_until(&[&host], "bytes back", 20, |_| free_size(&host) == 4096);
    let gain = w.balance(me) - before;
    let whole = U256::from(300u64) * req.ask.price_per_slot() / U256::from(900u64);
    assert!(
        gain > U256::ZERO && gain < whole,
        "gain {gain}, expiry pays at most {whole}"
    );
    assert_eq!(
        host.availabilities()[0]["totalRemainingCollateral"],
        "10000000"
    );
}

/// Item 114: three hosts with room for the whole request share it; each one's remaining
/// collateral is exactly what it does not hold, so collateral of the reservations it lost
/// came back.
#[test]
fn three_hosts_compete_and_keep_exact_collateral() {
    let mut w = World::new();
    let mut hosts: Vec<Host> = (1..=3)
        .map(|i| {
            let h = w.host(&format!("h{i}"), i, &[]);
            h.offer("12KiB", "12288");
            h
        })
        .collect();
    for h in &mut hosts {
        h.start();
    }
    let req = w.post(3, 900, 300, 14);
    let id = req.id();
    let addrs: Vec<Address> = (1..=3).map(|i| w.chain.account(i)).collect();
    let refs: Vec<&Host> = hosts.iter().collect();
    w.mine_until(&refs, "all slots filled", 80, |w| {
        (0..3).all(|i| addrs.contains(&w.host_of(SlotId::of(id, i))))
    });
    w.mine_until(&refs, "every host holds exactly its slots", 40, |w| {
        hosts.iter().zip(&addrs).all(|(h, a)| {
            let held = (0..3)
                .filter(|i| w.host_of(SlotId::of(id, *i)) == *a)
                .count() as u64;
            let av = &h.availabilities()[0];
            av["freeSize"].as_u64() == Some(12288 - held * 4096)
                && av["totalRemainingCollateral"].as_str()
                    == Some(&*(12288 - held * 4096).to_string())
        })
    });
}

/// A data source that stalls (headers, then nothing): each attempt fails after
/// --download-timeout, the attempts are tried again, and then the sale ends as errored with
/// its bytes and collateral back.
#[test]
fn a_stalled_download_times_out_and_returns_everything() {
    let mut w = World::new();
    w.data.set_mode(Mode::Stall);
    let mut host = w.host("h1", 1, &["--download-timeout", "1s"]);
    host.offer("1MiB", "10000000");
    host.start();
    let req = w.post(1, 1800, 1500, 15);
    w.mine_until(&[&host], "the sale ended after the attempts", 120, |_| {
        host.log_has("SaleErrored") && free_size(&host) == 1 << 20
    });
    assert!(
        w.data.requests() >= 4,
        "tried four times: {}",
        w.data.requests()
    );
    assert_eq!(w.host_of(SlotId::of(req.id(), 0)), Address::ZERO);
    assert!(
        host.slots_dir_files().is_empty(),
        "{:?}",
        host.slots_dir_files()
    );
}

/// A provider that is down when the node starts is tried again with backoff (and logged)
/// until it answers; a SIGTERM while waiting stops the node at once with status 0.
#[test]
fn a_provider_down_at_start_is_retried_until_it_answers() {
    let mut w = World::new();
    let upstream: std::net::SocketAddr =
        format!("127.0.0.1:{}", w.chain.anvil.port).parse().unwrap();
    let proxy = Proxy::start(upstream);
    proxy.refuse(true);
    let mut host = w.host("h1", 1, &[]).via(&proxy.ws_url());
    host.offer("1MiB", "10000000");
    host.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.log_text().matches("retrying in").count() < 2 {
        host.assert_running();
        assert!(
            Instant::now() < deadline,
            "no retries logged:\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stopped while waiting: at once, cleanly.
    let t = Instant::now();
    assert!(host.terminate(Duration::from_secs(5)).success());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Started again while still down; the provider comes back and the node sells.
    host.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.log_text().matches("retrying in").count() < 3 {
        host.assert_running();
        assert!(
            Instant::now() < deadline,
            "no retries logged:\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.refuse(false);
    let me = w.chain.account(1);
    w.mine_until(&[&host], "connected", 40, |_| host.log_has("connected to"));
    let req = w.post(1, 900, 600, 16);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&host], "sold once the provider answers", 60, |w| {
        w.host_of(slot) == me
    });
}

/// Slots taken from a host while it was down (forcibly freed, and the request failed with
/// them) took the host's collateral: the restarted node records it as lost instead of
/// counting it back, gives the bytes back, deletes the data, and the accounting invariant
/// holds.
#[test]
fn slots_taken_while_the_host_was_down_count_their_collateral_as_lost() {
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    let me = w.chain.account(1);
    let req = w.post(2, 900, 300, 17);
    let id = req.id();
    let slots = [SlotId::of(id, 0), SlotId::of(id, 1)];
    w.mine_until(&[&host], "both slots filled", 60, |w| {
        slots.iter().all(|s| w.host_of(*s) == me)
    });
    host.kill9();
    let deployer = w.chain.account(0);
    let mkt = w.chain.marketplace();
    for s in slots {
        devchain::send(&mut w.rpc, deployer, mkt, &forcibly_free(s));
    }
    host.start();
    w.mine_until(&[&host], "bytes back", 20, |_| free_size(&host) == 1 << 20);
    let a = &host.availabilities()[0];
    assert_eq!(a["collateralLost"], (2 * 4096).to_string(), "{a}");
    assert_eq!(
        a["totalRemainingCollateral"],
        (10_000_000 - 2 * 4096).to_string()
    );
    assert!(
        host.slots_dir_files().is_empty(),
        "{:?}",
        host.slots_dir_files()
    );
    assert_invariant(&host);
}

/// The REST API table (items 99–101, 103, 105–109 of `docs/sales.md#scenario-numbers` and the
/// CORS cases), against a running node: every path, status and body, and a failed call changes
/// nothing.
#[test]
fn the_rest_api_answers_as_the_reference_does() {
    let w = World::new();
    let mut host = w.host("rest", 1, &["--api-cors-origin", "http://example.org"]);
    host.start();
    host.wait_api();
    let p = host.api_port;
    let list = |p| {
        let (st, b) = api(p, "GET", "/sales/availability", None);
        assert_eq!(st, 200, "{b}");
        serde_json::from_str::<Value>(&b).unwrap()
    };
    assert_eq!(list(p), json!([]));
    let good = r#"{"totalSize":140000,"duration":7200,"minPricePerBytePerSecond":"1","totalCollateral":"140000"}"#;
    // 99: two POSTs, two availabilities.
    let (st, b) = api(p, "POST", "/sales/availability", Some(good));
    assert_eq!(st, 201, "{b}");
    let a: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(a["totalSize"], 140000);
    assert_eq!(a["freeSize"], 140000);
    assert_eq!(a["minPricePerBytePerSecond"], "1");
    assert_eq!(a["totalRemainingCollateral"], "140000");
    assert_eq!(a["enabled"], true);
    assert_eq!(a["until"], 0);
    let id = a["id"].as_str().unwrap().to_string();
    let (st, b2) = api(p, "POST", "/sales/availability", Some(good));
    assert_eq!(st, 201, "{b2}");
    let id2 = serde_json::from_str::<Value>(&b2).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id, id2);
    assert_eq!(list(p).as_array().unwrap().len(), 2);
    // 100: PATCH changes what it names; sizes stay.
    let until = now_secs() + 100_000;
    let patch = format!(
        r#"{{"duration":100,"minPricePerBytePerSecond":"2","totalCollateral":"200000","enabled":false,"until":{until}}}"#
    );
    let (st, b) = api(
        p,
        "PATCH",
        &format!("/sales/availability/{id}"),
        Some(&patch),
    );
    assert_eq!((st, b.as_str()), (204, ""));
    let a = list(p)
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(a["duration"], 100);
    assert_eq!(a["minPricePerBytePerSecond"], "2");
    assert_eq!(a["totalCollateral"], "200000");
    assert_eq!(a["enabled"], false);
    assert_eq!(a["until"], until);
    assert_eq!(
        (a["totalSize"].clone(), a["freeSize"].clone()),
        (json!(140000), json!(140000))
    );
    // 101.
    let (st, _) = api(
        p,
        "PATCH",
        &format!("/sales/availability/{id}"),
        Some(r#"{"totalSize":100000}"#),
    );
    assert_eq!(st, 204);
    let before = list(p);
    let a = before
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap();
    assert_eq!(a["freeSize"], 100000);
    // The error table: (method, path, body, status, exact body).
    let unknown = format!("0x{}", "ab".repeat(32));
    let on = format!("/sales/availability/{id}");
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("PATCH", on.clone(), r#"{"until":-1}"#.into(), 422, "Cannot set until to a negative value"),
        ("PATCH", format!("/sales/availability/{unknown}"), r#"{"duration":5}"#.into(), 404, "Availability not found"),
        ("PATCH", on.clone(), r#"{"freeSize":1}"#.into(), 422, "Updating freeSize is not allowed"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":24000000000,"duration":100,"minPricePerBytePerSecond":1,"totalCollateral":1}"#.into(), 422, "Not enough storage quota"),
        ("PATCH", on.clone(), r#"{"totalSize":24000000000}"#.into(), 422, "Not enough storage quota"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":0,"duration":100,"minPricePerBytePerSecond":1,"totalCollateral":1}"#.into(), 422, "Total size must be larger then zero"),
        ("PATCH", on.clone(), r#"{"totalSize":0}"#.into(), 422, "Total size must be larger then zero"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":"-1","duration":100,"minPricePerBytePerSecond":1,"totalCollateral":1}"#.into(), 400, "Parsed integer outside of valid range"),
        ("PATCH", on.clone(), r#"{"totalSize":"-1"}"#.into(), 400, "Parsed integer outside of valid range"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":100,"duration":100,"minPricePerBytePerSecond":1,"totalCollateral":1,"until":-1}"#.into(), 422, "Cannot set until to a negative value"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":100,"duration":0,"minPricePerBytePerSecond":1,"totalCollateral":1}"#.into(), 422, "duration must be larger then zero"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":100,"duration":100,"minPricePerBytePerSecond":0,"totalCollateral":1}"#.into(), 422, "minPricePerBytePerSecond must be larger then zero"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":100,"duration":100,"minPricePerBytePerSecond":1,"totalCollateral":0}"#.into(), 422, "totalCollateral must be larger then zero"),
        // The order: totalSize before duration, duration before the price, quota before until.
        ("POST", "/sales/availability".into(), r#"{"totalSize":0,"duration":0}"#.into(), 422, "Total size must be larger then zero"),
        ("POST", "/sales/availability".into(), r#"{"totalSize":24000000000,"duration":1,"minPricePerBytePerSecond":1,"totalCollateral":1,"until":-1}"#.into(), 422, "Not enough storage quota"),
        ("POST", "/sales/availability".into(), "{".into(), 400, ""),
        ("POST", "/sales/availability".into(), "[1,2]".into(), 400, ""),
        ("POST", "/sales/availability".into(), r#"{"totalSize":true}"#.into(), 400, ""),
        ("POST", "/sales/availability".into(), r#"{"totalSize":"18446744073709551616"}"#.into(), 400, ""),
        ("PATCH", "/sales/availability/0x12".into(), "{}".into(), 400, ""),
        ("GET", "/sales/availability/0x12/reservations".into(), String::new(), 400, ""),
        ("GET", format!("/sales/availability/{unknown}/reservations"), String::new(), 404, "Availability not found"),
        ("GET", "/sales/slots/nothex".into(), String::new(), 400, ""),
        ("GET", format!("/sales/slots/{unknown}"), String::new(), 404, "Provider not filling slot"),
        ("POST", "/debug/chronicles/loglevel".into(), String::new(), 400, "Missing level parameter"),
        ("POST", "/debug/chronicles/loglevel?level=loud".into(), String::new(), 500, ""),
        ("DELETE", "/sales/availability".into(), String::new(), 405, ""),
        ("GET", "/no/such/thing".into(), String::new(), 404, ""),
    ];
    for (method, path, body, status, text) in &cases {
        let (st, b) = api(p, method, path, (!body.is_empty()).then_some(body.as_str()));
        assert_eq!(st, *status, "{method} {path} {body}: {b}");
        if !text.is_empty() {
            assert_eq!(b, *text, "{method} {path} {body}");
        } else {
            assert!(!b.is_empty(), "{method} {path}: an error needs a message");
        }
    }
    assert_eq!(list(p), before, "a refused call changed the availabilities");
    // Reservations, slots, space, log level and codex's own endpoints.
    assert_eq!(
        host.api_json(&format!("/sales/availability/{id}/reservations")),
        json!([])
    );
    assert_eq!(host.api_json("/sales/slots"), json!([]));
    let space = host.api_json("/space");
    assert_eq!(space["quotaMaxBytes"], 20u64 << 30);
    assert_eq!(space["quotaReservedBytes"], 240000);
    let (st, _) = api(p, "POST", "/debug/chronicles/loglevel?level=trace", None);
    assert_eq!(st, 200);
    assert!(host.api_json("/sales/queue")["capacity"].is_number());
    assert_eq!(host.api_json("/sales/status")["healthy"], true);
    assert_eq!(host.api_json("/sales/history"), json!([]));
    assert_eq!(host.api_json("/sales/live"), json!([]));
    // CORS: on GET and POST, not on PATCH; OPTIONS answers 204 with PATCH allowed.
    let (st, h, _) = http(p, "GET", "/api/codex/v1/sales/availability", None);
    assert_eq!(st, 200);
    assert!(
        h.contains(&(
            "access-control-allow-origin".into(),
            "http://example.org".into()
        )),
        "{h:?}"
    );
    assert!(
        h.contains(&("access-control-max-age".into(), "86400".into())),
        "{h:?}"
    );
    let (st, h, _) = http(
        p,
        "PATCH",
        &format!("/api/codex/v1{on}"),
        Some(r#"{"duration":120}"#),
    );
    assert_eq!(st, 204);
    assert!(
        !h.iter().any(|(k, _)| k == "access-control-allow-origin"),
        "{h:?}"
    );
    let (st, h, _) = http(p, "OPTIONS", &format!("/api/codex/v1{on}"), None);
    assert_eq!(st, 204);
    assert!(
        h.contains(&("access-control-allow-methods".into(), "PATCH".into())),
        "{h:?}"
    );
    // A body over the limit is refused without being read.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"POST /api/codex/v1/sales/availability HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n{").unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    }
    assert_eq!(list(p).as_array().unwrap().len(), 2);
    // The CLI sees what the API created (one database).
    assert_eq!(host.availabilities().len(), 2);
    host.assert_running();
}

/// The operator's window during a sale: `GET /sales/slots` and `/sales/slots/{id}` (item
/// 122), PATCH against a hosted slot (items 102 and 104), `codex queue show` with the rule
/// that refused a request, `codex sale list`, `codex status` and the metrics while
/// proving; after the payout the history shows what was paid, also after a restart and
/// with the node down.
#[test]
fn an_operator_follows_a_sale_through_the_api_and_the_cli() {
    let mut w = World::new();
    let metrics_port = free_port();
    let mp = metrics_port.to_string();
    let mut host = w.host("op", 1, &["--metrics", "--metrics-port", &mp]);
    host.offer("1MiB", "10000000");
    host.start();
    host.wait_api();
    let p = host.api_port;
    let port = p.to_string();
    let me = w.chain.account(1);
    let before = w.balance(me);
    let req = w.post(1, 600, 300, 7);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&host], "slot filled", 60, |w| w.host_of(slot) == me);
    w.mine_until(&[&host], "a proof after the fill", 40, |w| {
        w.proofs(slot) >= 2
    });
    // 122: the slot and its state.
    let slots = host.api_json("/sales/slots");
    assert_eq!(slots.as_array().unwrap().len(), 1, "{slots}");
    assert_eq!(slots[0]["id"], slot.to_string());
    assert_eq!(slots[0]["request"]["ask"]["slotSize"], 4096);
    let one = host.api_json(&format!("/sales/slots/{slot}"));
    assert_eq!(one["state"], "SaleProving", "{one}");
    assert_eq!(one["reservation"]["slotIndex"], 0);
    // 102 and 104.
    let id = host.availabilities()[0]["id"].as_str().unwrap().to_string();
    let on = format!("/sales/availability/{id}");
    let (st, b) = api(p, "PATCH", &on, Some(r#"{"totalSize":1000}"#));
    assert_eq!((st, b.as_str()), (422, "New totalSize must be larger then current totalSize - freeSize, which is currently: 4096"));
    let free = free_size(&host);
    let (st, _) = api(
        p,
        "PATCH",
        &on,
        Some(&format!(r#"{{"totalSize":{}}}"#, (1 << 20) + 20000)),
    );
    assert_eq!(st, 204);
    assert_eq!(free_size(&host), free + 20000);
    let (st, b) = api(
        p,
        "PATCH",
        &on,
        Some(&format!(r#"{{"until":{}}}"#, now_secs() + 1)),
    );
    assert_eq!(
        (st, b.as_str()),
        (
            422,
            "Until parameter must be greater or equal to the longest currently hosted slot"
        )
    );
    // A request this host cannot take (each slot larger than what is free): queue show says
    // which rule of which availability refused it.
    let big = {
        let client = w.chain.account(3);
        let r = Request {
            client,
            ask: Ask {
                proof_probability: U256::from(1u8),
                price_per_byte_per_second: U256::from(1u8),
                collateral_per_byte: U256::from(1u8),
                slots: 1,
                slot_size: 4 << 20,
                duration: 600,
                max_slot_loss: 0,
            },
            content: Content {
                cid: vec![0x01, 0x55, 0x12, 0x20, 99],
                merkle_root: B256::repeat_byte(0x42),
            },
            expiry: 300,
            nonce: B256::repeat_byte(99),
        };
        let (token, mkt) = (w.chain.token(), w.chain.marketplace());
        devchain::send(
            &mut w.rpc,
            client,
            token,
            &calls::approve(mkt, r.ask.price_per_slot()),
        );
        devchain::send(&mut w.rpc, client, mkt, &calls::request_storage(&r));
        r
    };
    let big_id = big.id().to_string();
    w.mine_until(&[&host], "the big request seen", 20, |_| {
        host.api_json("/sales/queue")["recentRequests"]
            .as_array()
            .is_some_and(|v| v.iter().any(|r| r["requestId"] == big_id.as_str()))
    });
    let out = host.cli(&["queue", "show", "--api-port", &port, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["kind"], "queue");
    let refused = lines
        .iter()
        .find(|l| l["kind"] == "request" && l["requestId"] == big_id.as_str())
        .expect("the big request in queue show");
    assert_eq!(refused["verdict"], "refused", "{refused}");
    assert_eq!(refused["refusals"][0]["rule"], "size", "{refused}");
    assert_eq!(refused["refusals"][0]["availabilityId"], id.as_str());
    let taken = lines
        .iter()
        .find(|l| l["kind"] == "request" && l["requestId"] == req.id().to_string().as_str())
        .expect("the sold request in queue show");
    assert_eq!(taken["verdict"], "taken", "{taken}");
    assert_eq!(taken["taken"][0]["state"], "SaleProving");
    let out = host.cli(&["queue", "show", "--api-port", &port]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("size (slot size 4194304 exceeds free size"),
        "{text}"
    );
    // sale list and status.
    let out = host.cli(&["sale", "list", "--api-port", &port, "--json"]);
    let live: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(live["state"], "SaleProving");
    assert_eq!(live["slotId"], slot.to_string());
    assert_eq!(live["expectedPayout"], (4096u64 * 600).to_string());
    let out = host.cli(&["status", "--api-port", &port, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["sales"]["SaleProving"], 1);
    assert_eq!(st["chain"]["chainId"], 31337);
    assert!(st["proofs"]["submitted"].as_u64().unwrap() >= 1, "{st}");
    // Metrics, scraped while proving.
    let (code, _, text) = http(metrics_port, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let metric = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{text}"))
    };
    assert!(metric("codex_proofs_submitted_total") >= 1.0, "{text}");
    assert!(metric("codex_rpc_latency_seconds_count") >= 1.0, "{text}");
    assert!(metric("codex_events_processed_total") >= 3.0, "{text}");
    assert!(
        text.contains("codex_sales{state=\"SaleProving\"} 1"),
        "{text}"
    );
    // The request ends: paid, and the history says so.
    w.mine_until(&[&host], "slot paid", 120, |w| {
        w.slot_state(slot) == SlotState::Paid
    });
    w.mine_until(&[&host], "sale in the history", 20, |_| {
        host.api_json("/sales/history")
            .as_array()
            .is_some_and(|v| !v.is_empty())
    });
    let paid = w.balance(me) - before;
    let h = host.api_json("/sales/history");
    assert_eq!(h[0]["outcome"], "Finished", "{h}");
    assert_eq!(h[0]["collateralReturned"], "4096");
    assert_eq!(h[0]["collateralLost"], "0");
    assert_eq!(
        h[0]["payout"],
        paid.to_string(),
        "the recorded payout is what the host received"
    );
    let (st, _) = api(p, "GET", &format!("/sales/slots/{slot}"), None);
    assert_eq!(st, 404);
    let (_, _, text) = http(metrics_port, "GET", "/metrics", None);
    assert!(
        text.contains("codex_sales_ended_total{outcome=\"Finished\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("codex_tokens_earned_total {paid}\n")),
        "{text}"
    );
    // With many availabilities, a refused request lists 16 of them and counts the rest.
    for _ in 0..20 {
        let (st, b) = api(
            p,
            "POST",
            "/sales/availability",
            Some(
                r#"{"totalSize":"1024","duration":"7200","minPricePerBytePerSecond":"1","totalCollateral":"1000"}"#,
            ),
        );
        assert_eq!(st, 201, "{b}");
    }
    let recent = host.api_json("/sales/queue")["recentRequests"].clone();
    let big = recent
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requestId"] == big_id.as_str())
        .expect("the big request is still among the recent ones")
        .clone();
    assert_eq!(big["refusals"].as_array().unwrap().len(), 16, "{big}");
    assert_eq!(big["refusalsNotListed"], 5, "{big}");
    let counted: u64 = big["refusalsByRule"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 21, "every availability refused it: {big}");
    let text = String::from_utf8_lossy(&host.cli(&["queue", "show", "--api-port", &port]).stdout)
        .into_owned();
    assert!(text.contains("… and 5 more availabilities"), "{text}");
    // The node stops: history and status from the shell.
    assert!(host.terminate(Duration::from_secs(5)).success());
    let out = host.cli(&["sale", "list", "--all", "--api-port", &port, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r["outcome"] == "Finished" && r["slotId"] == slot.to_string()),
        "{rows:?}"
    );
    let out = host.cli(&["status", "--api-port", &port]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no codex node answers"));
    let out = host.cli(&[
        "sale",
        "show",
        &format!("{}:0", req.id()),
        "--api-port",
        &port,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("outcome: Finished"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Clients that hold the API's connections: `idle` connections that send nothing (each
/// reopened when the node closes it, at the connection limit or its head timeout), and
/// `slow` ones that send a request one byte a second. They run until dropped.
struct Abuse {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Slow clients connected now.
    slow_open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Idle connections held now.
    idle_open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Abuse {
    fn start(port: u16, idle: usize, slow: usize) -> Abuse {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for _ in 0..slow {
            let (stop, open) = (stop.clone(), open.clone());
            threads.push(std::thread::spawn(move || {
                let req = b"GET /api/codex/v1/sales/status HTTP/1.1\r\nHost: x\r\n\r\n";
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    open.fetch_add(1, Ordering::Relaxed);
                    for b in req.iter().cycle() {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        // One byte a second, in steps that notice the stop.
                        for _ in 0..10 {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }));
        }
        let idle_open = Arc::new(AtomicUsize::new(0));
        {
            let (stop, idle_open) = (stop.clone(), idle_open.clone());
            threads.push(std::thread::spawn(move || {
                let mut held: Vec<std::net::TcpStream> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Drop the ones the node closed or answered (its 408 or 503).
                    held.retain_mut(|s| {
                        let mut b = [0u8; 512];
                        matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                    });
                    while held.len() < idle {
                        match std::net::TcpStream::connect(("127.0.0.1", port)) {
                            Ok(s) => {
                                s.set_nonblocking(true).unwrap();
                                held.push(s);
                            }
                            Err(_) => break,
                        }
                    }
                    idle_open.store(held.len(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        Abuse {
            stop,
            slow_open: open,
            idle_open,
            threads,
        }
    }
}

impl Drop for Abuse {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long after `since` the host's database holds a reservation for `request`: the
/// node's reaction to a request, seen from outside (polled every 2 ms).
fn reservation_after(h: &Host, request: codex::market::RequestId, since: Instant) -> Duration {
    use codex::sales::ledger::Ledger;
    let store = codex::store::Store::open(&h.dir, codex::store::Options::cli()).unwrap();
    let deadline = since + Duration::from_secs(60);
    loop {
        h.assert_running();
        if store
            .reservations()
            .unwrap()
            .iter()
            .any(|r| r.request_id == request)
        {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no reservation for {request} within 60 s:\n{}",
            h.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A client that holds every connection the API allows, and clients that send a request
/// one byte a second, do not stall the loop: a request posted meanwhile is reserved and
/// filled, its reaction time is printed next to one without them, and the API answers
/// again once they are gone.
#[test]
fn clients_that_hold_the_api_do_not_delay_a_sale() {
    use std::sync::atomic::Ordering;
    let mut w = World::new();
    let mut host = w.host("h1", 1, &[]);
    host.offer("1MiB", "10000000");
    host.start();
    host.wait_api();
    let me = w.chain.account(1);

    let t = Instant::now();
    let calm = w.post(1, 600, 300, 1);
    let calm_reaction = reservation_after(&host, calm.id(), t);

    // 4 slow clients, and 80 idle connections for the API's 64 (the rest are turned
    // away with 503 and come back every 100 ms).
    let abuse = Abuse::start(host.api_port, 80, 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    while abuse.idle_open.load(Ordering::Relaxed) < 50
        || abuse.slow_open.load(Ordering::Relaxed) < 4
    {
        assert!(
            Instant::now() < deadline,
            "the abusive clients never got in"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let busy = w.post(1, 600, 300, 2);
    let busy_reaction = reservation_after(&host, busy.id(), t);
    let held = abuse.idle_open.load(Ordering::Relaxed) + abuse.slow_open.load(Ordering::Relaxed);
    eprintln!(
        "reaction (request posted → reservation in the host's database): {:.1} ms alone, {:.1} ms with {held} connections open against the API's limit of 64 (idle ones, and 4 sending a byte a second)",
        calm_reaction.as_secs_f64() * 1e3,
        busy_reaction.as_secs_f64() * 1e3
    );
    assert!(
        held >= 50,
        "the abuse was still going on: {held} connections"
    );
    let slots = [SlotId::of(calm.id(), 0), SlotId::of(busy.id(), 0)];
    w.mine_until(&[&host], "both slots filled during the abuse", 60, |w| {
        slots.iter().all(|s| w.host_of(*s) == me)
    });
    drop(abuse);

    // The connections are free again: the API answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, _) = api(host.api_port, "GET", "/sales/status", None);
        if st == 200 {
            break;
        }
        assert_eq!(st, 503, "only the connection limit may refuse");
        assert!(Instant::now() < deadline, "the API never answered again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = host.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(host.terminate(Duration::from_secs(5)).success());
}
