//! The `codex run` harness shared by the node tests and the soaks: a [`World`] (real anvil
//! with the fixture Marketplace, a data server, a client account, helpers that advance chain
//! time and read the chain) and [`Host`]s (the built `codex` binary as a child process, killed
//! on drop, with its own data dir, log, CLI and REST API).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use codex::chain::client::BlockingClient;
use codex::market::{calls, Ask, Content, Request, SlotId, SlotState};
use serde_json::{json, Value};

use super::dataserver::DataServer;
use super::devchain::{self, Devchain};

/// Seconds of chain time each mined block adds.
pub const BLOCK_SECS: u64 = 10;

/// A `codex run` child process whose log goes to a file; killed on drop.
pub struct Host {
    pub child: std::cell::RefCell<Option<Child>>,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub log: PathBuf,
    /// Global options (before the subcommand).
    pub global: Vec<String>,
    /// `codex run` options.
    pub args: Vec<String>,
    /// `--log-format`.
    pub log_format: String,
    pub starts: usize,
    /// The REST API's port.
    pub api_port: u16,
}

/// A port free right now (the OS picks it; the node binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn key_file(dir: &Path, key: &str) -> PathBuf {
    let p = dir.join("host.key");
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

pub fn codex_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_codex"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--data-dir")
        .arg(dir);
    c
}

impl Host {
    /// A host with its own data dir and dev account `account`, not started yet.
    pub fn new(chain: &Devchain, root: &Path, name: &str, account: usize, args: &[&str]) -> Host {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let key = key_file(&dir, &chain.private_key(account));
        let api_port = free_port();
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--api-port".to_string(), api_port.to_string()]);
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
            args,
            log_format: "nocolors".into(),
            starts: 0,
            api_port,
        }
    }

    /// Talks to the chain through `url` (a fault proxy) instead.
    pub fn via(mut self, url: &str) -> Host {
        self.global[1] = url.to_string();
        self
    }

    pub fn log_has(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(needle)
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = codex_cmd(&self.dir);
        c.args(args).stdin(Stdio::null());
        c.output().unwrap()
    }

    /// `codex availability add` with the given size and collateral.
    pub fn offer(&self, size: &str, collateral: &str) {
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

    pub fn availabilities(&self) -> Vec<Value> {
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

    pub fn start(&mut self) {
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

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.borrow_mut().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status (within `within`).
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
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
    pub fn assert_running(&self) {
        if let Some(c) = self.child.borrow_mut().as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("codex run exited with {st}:\n{}", self.log_text());
            }
        }
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(80);
        lines[from..].join("\n")
    }

    pub fn slots_dir_files(&self) -> Vec<String> {
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
pub struct World {
    pub chain: Devchain,
    pub rpc: BlockingClient,
    pub data: DataServer,
    pub root: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let chain = Devchain::start(&[]);
        let rpc = chain.rpc();
        World {
            chain,
            rpc,
            data: DataServer::start(1 << 20),
            root: tempfile::tempdir().unwrap(),
        }
    }

    pub fn host(&self, name: &str, account: usize, extra: &[&str]) -> Host {
        let mut args = vec!["--data-source".to_string(), self.data.template()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Host::new(&self.chain, self.root.path(), name, account, &args)
    }

    pub fn view(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.rpc
            .eth_call(self.chain.marketplace(), &data)
            .unwrap()
            .to_vec()
    }

    pub fn host_of(&mut self, slot: SlotId) -> Address {
        calls::decode_get_host(&self.view(calls::get_host(slot)))
            .unwrap()
            .unwrap_or(Address::ZERO)
    }

    pub fn slot_state(&mut self, slot: SlotId) -> SlotState {
        calls::decode_slot_state(&self.view(calls::slot_state(slot))).unwrap()
    }

    pub fn balance(&mut self, who: Address) -> U256 {
        let d = self
            .rpc
            .eth_call(self.chain.token(), &calls::balance_of(who))
            .unwrap();
        calls::decode_balance_of(&d).unwrap()
    }

    /// Mines one block `BLOCK_SECS` later.
    pub fn mine(&mut self) {
        self.rpc
            .call("evm_increaseTime", json!([BLOCK_SECS]))
            .unwrap();
        self.rpc.call("evm_mine", json!([])).unwrap();
    }

    /// Mines blocks (paced so the node can act on each) until `cond` holds; panics after
    /// `max_blocks`, printing the hosts' logs.
    pub fn mine_until(
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

    /// A request from dev account 3, not posted yet: `slots` slots of 4 KiB, a proof every
    /// period, the nonce also in the CID.
    pub fn request(&self, slots: u64, duration: u64, expiry: u64, nonce: u8) -> Request {
        Request {
            client: self.chain.account(3),
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
        }
    }

    /// Approves the price of every slot and posts `req` from its client.
    pub fn post_request(&mut self, req: &Request) {
        let (token, mkt) = (self.chain.token(), self.chain.marketplace());
        let price = req.ask.price_per_slot() * U256::from(req.ask.slots);
        devchain::send(
            &mut self.rpc,
            req.client,
            token,
            &calls::approve(mkt, price),
        );
        devchain::send(&mut self.rpc, req.client, mkt, &calls::request_storage(req));
    }

    /// Posts [`World::request`].
    pub fn post(&mut self, slots: u64, duration: u64, expiry: u64, nonce: u8) -> Request {
        let req = self.request(slots, duration, expiry, nonce);
        self.post_request(&req);
        req
    }

    /// Number of ProofSubmitted events for `slot`.
    pub fn proofs(&mut self, slot: SlotId) -> usize {
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
pub fn assert_invariant(h: &Host) {
    let mut store = codex::store::Store::open(&h.dir, codex::store::Options::cli()).unwrap();
    store.check_invariant(None).unwrap();
}

pub fn free_size(h: &Host) -> u64 {
    h.availabilities()
        .iter()
        .map(|a| a["freeSize"].as_u64().unwrap())
        .sum()
}

/// What [`http`] answers: (status, headers lowercased, body).
pub type HttpReply = (u16, Vec<(String, String)>, String);

/// One HTTP/1.1 exchange over a fresh connection: (status, headers lowercased, body).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> HttpReply {
    try_http(port, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`http`] that says what went wrong instead of panicking (a node that is down or
/// restarting).
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<HttpReply, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body.to_string()))
}

pub fn api(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (st, _, b) = http(port, method, &format!("/api/codex/v1{path}"), body);
    (st, b)
}

impl Host {
    /// Waits until the node answers on its API.
    pub fn wait_api(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.api_port)).is_err() {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "the API never answered:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn api_json(&self, path: &str) -> Value {
        let (st, body) = api(self.api_port, "GET", path, None);
        assert_eq!(st, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET path` of the REST API as JSON, or `None` while the node does not answer 200.
    pub fn try_api_json(&self, path: &str) -> Option<Value> {
        let (st, _, body) =
            try_http(self.api_port, "GET", &format!("/api/codex/v1{path}"), None).ok()?;
        (st == 200).then(|| serde_json::from_str(&body).ok())?
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn forcibly_free(slot: SlotId) -> Vec<u8> {
    use alloy_sol_types::SolCall;
    codex::market::abi::TestMarketplace::forciblyFreeSlotCall { slotId: slot.0 }.abi_encode()
}
