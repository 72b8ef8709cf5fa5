//! `codex run` against the real dev chain (anvil + the fixture Marketplace), run as the built
//! binary: whole sales, restarts, faults and bad input. Scenario numbers refer to
//! `docs/sales.md#scenario-numbers`.
#[path = "../support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use codex::chain::client::BlockingClient;
use codex::market::{calls, Ask, Content, Request, SlotId, SlotState};
use serde_json::{json, Value};
use support::dataserver::{DataServer, Mode};
use support::devchain::{self, Devchain};
use support::proxy::{text_frame, Proxy};

/// Seconds of chain time each mined block adds.
const BLOCK_SECS: u64 = 10;

/// A `codex run` child process whose log goes to a file; killed on drop.
struct Host {
    child: std::cell::RefCell<Option<Child>>,
    dir: PathBuf,
    key: PathBuf,
    log: PathBuf,
    /// Global options (before the subcommand).
    global: Vec<String>,
    /// `codex run` options.
    args: Vec<String>,
    /// `--log-format`.
    log_format: String,
    starts: usize,
}

fn key_file(dir: &Path, key: &str) -> PathBuf {
    let p = dir.join("host.key");
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn codex_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_codex"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--data-dir")
        .arg(dir);
    c
}

impl Host {
    /// A host with its own data dir and dev account `account`, not started yet.
    fn new(chain: &Devchain, root: &Path, name: &str, account: usize, args: &[&str]) -> Host {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let key = key_file(&dir, &chain.private_key(account));
        Host {
            child: Default::default(),
            log: dir.join("node.log"),
            dir,
            key,
            global: vec![
                "--eth-provider".to_string(),
                chain.ws_url(),
                "--marketplace-address".to_string(),
                chain.marketplace().to_string(),
                "--log-level".to_string(),
                "debug".to_string(),
            ],
            args: args.iter().map(|s| s.to_string()).collect(),
            log_format: "nocolors".into(),
            starts: 0,
        }
    }

    /// Talks to the chain through `url` (a fault proxy) instead.
    fn via(mut self, url: &str) -> Host {
        self.global[1] = url.to_string();
        self
    }

    fn log_has(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(needle)
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = codex_cmd(&self.dir);
        c.args(args).stdin(Stdio::null());
        c.output().unwrap()
    }

    /// `codex availability add` with the given size and collateral.
    fn offer(&self, size: &str, collateral: &str) {
        let out = self.cli(&[
            "availability",
            "add",
            "--total-size",
            size,
            "--duration",
            "2h",
            "--min-price-per-byte-per-second",
            "1",
            "--total-collateral",
            collateral,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn availabilities(&self) -> Vec<Value> {
        let out = self.cli(&["availability", "list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn start(&mut self) {
        assert!(self.child.borrow().is_none());
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = codex_cmd(&self.dir);
        c.arg("--eth-private-key")
            .arg(&self.key)
            .arg("--log-format")
            .arg(&self.log_format)
            .args(&self.global)
            .arg("run")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        *self.child.borrow_mut() = Some(c.spawn().expect("spawn codex run"));
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.borrow_mut().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status (within `within`).
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.borrow_mut().take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "codex run did not stop within {within:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Panics when the process ended by itself.
    fn assert_running(&self) {
        if let Some(c) = self.child.borrow_mut().as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("codex run exited with {st}:\n{}", self.log_text());
            }
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(80);
        lines[from..].join("\n")
    }

    fn slots_dir_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.dir.join("slots")) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.dir.display(), self.log_text());
        }
    }
}

/// The chain, a client account and helpers that advance chain time.
struct World {
    chain: Devchain,
    rpc: BlockingClient,
    data: DataServer,
    root: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let chain = Devchain::start(&[]);
        let rpc = chain.rpc();
        World {
            chain,
            rpc,
            data: DataServer::start(1 << 20),
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn host(&self, name: &str, account: usize, extra: &[&str]) -> Host {
        let mut args = vec!["--data-source".to_string(), self.data.template()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Host::new(&self.chain, self.root.path(), name, account, &args)
    }

    fn view(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.rpc
            .eth_call(self.chain.marketplace(), &data)
            .unwrap()
            .to_vec()
    }

    fn host_of(&mut self, slot: SlotId) -> Address {
        calls::decode_get_host(&self.view(calls::get_host(slot)))
            .unwrap()
            .unwrap_or(Address::ZERO)
    }

    fn slot_state(&mut self, slot: SlotId) -> SlotState {
        calls::decode_slot_state(&self.view(calls::slot_state(slot))).unwrap()
    }

    fn balance(&mut self, who: Address) -> U256 {
        let d = self
            .rpc
            .eth_call(self.chain.token(), &calls::balance_of(who))
            .unwrap();
        calls::decode_balance_of(&d).unwrap()
    }

    /// Mines one block `BLOCK_SECS` later.
    fn mine(&mut self) {
        self.rpc
            .call("evm_increaseTime", json!([BLOCK_SECS]))
            .unwrap();
        self.rpc.call("evm_mine", json!([])).unwrap();
    }

    /// Mines blocks (paced so the node can act on each) until `cond` holds; panics after
    /// `max_blocks`, printing the hosts' logs.
    fn mine_until(
        &mut self,
        hosts: &[&Host],
        what: &str,
        max_blocks: u64,
        mut cond: impl FnMut(&mut World) -> bool,
    ) {
        for _ in 0..max_blocks {
            for h in hosts {
                h.assert_running();
            }
            if cond(self) {
                return;
            }
            // The dev chain's block timer: the hosts see each block and act on it.
            std::thread::sleep(Duration::from_millis(150));
            self.mine();
        }
        if cond(self) {
            return;
        }
        let logs: Vec<String> = hosts.iter().map(|h| h.log_text()).collect();
        panic!(
            "{what}: not reached within {max_blocks} blocks\n{}",
            logs.join("\n-----\n")
        );
    }

    /// Posts a request from dev account 3: `slots` slots of 4 KiB, proof every period.
    fn post(&mut self, slots: u64, duration: u64, expiry: u64, nonce: u8) -> Request {
        let client = self.chain.account(3);
        let req = Request {
            client,
            ask: Ask {
                proof_probability: U256::from(1u8),
                price_per_byte_per_second: U256::from(1u8),
                collateral_per_byte: U256::from(1u8),
                slots,
                slot_size: 4096,
                duration,
                max_slot_loss: 1,
            },
            content: Content {
                cid: vec![0x01, 0x55, 0x12, 0x20, nonce],
                merkle_root: B256::repeat_byte(0x42),
            },
            expiry,
            nonce: B256::repeat_byte(nonce),
        };
        let (token, mkt) = (self.chain.token(), self.chain.marketplace());
        devchain::send(
            &mut self.rpc,
            client,
            token,
            &calls::approve(mkt, req.ask.price_per_slot() * U256::from(slots)),
        );
        devchain::send(&mut self.rpc, client, mkt, &calls::request_storage(&req));
        req
    }

    /// Number of ProofSubmitted events for `slot`.
    fn proofs(&mut self, slot: SlotId) -> usize {
        use alloy_sol_types::SolEvent;
        let topic = codex::market::abi::Marketplace::ProofSubmitted::SIGNATURE_HASH;
        let v = self
            .rpc
            .call(
                "eth_getLogs",
                json!([{"address": self.chain.marketplace(), "fromBlock": "0x0", "toBlock": "latest", "topics": [topic]}]),
            )
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|l| {
                let want = slot.to_string().to_lowercase();
                l["data"]
                    .as_str()
                    .is_some_and(|d| d.to_lowercase().contains(&want[2..]))
            })
            .count()
    }
}

/// The accounting invariant of every availability, as a fresh process reads the file.
fn assert_invariant(h: &Host) {
    let mut store = codex::store::Store::open(&h.dir, codex::store::Options::cli()).unwrap();
    store.check_invariant(None).unwrap();
}

fn free_size(h: &Host) -> u64 {
    h.availabilities()
        .iter()
        .map(|a| a["freeSize"].as_u64().unwrap())
        .sum()
}

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

/// Item 5 of the node's duties (spec §5.6): an availability added with the CLI while the
/// node runs picks up a request that was announced before it.
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
    for _ in 0..5 {
        w.mine();
        std::thread::sleep(Duration::from_millis(100));
    }
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
}

fn forcibly_free(slot: SlotId) -> Vec<u8> {
    use alloy_sol_types::SolCall;
    codex::market::abi::TestMarketplace::forciblyFreeSlotCall { slotId: slot.0 }.abi_encode()
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
