//! Soaks of issue 11: a whole marketplace (anvil with the fixture Marketplace, three hosts, a
//! validator and a client posting requests of random sizes, durations and expiries) run for a
//! while under faults, then audited against the chain, the hosts' databases, their data
//! directories and their logs ([`audit`]).
//!
//! - [`crash`]: the hosts are `kill -9`ed at random instants across all the phases of their
//!   sales and restarted.
//! - [`faults`]: a fault proxy sits between every node and anvil and injects faults during
//!   live sales (dropped and cut frames, stalls, malformed and oversized frames, JSON-RPC
//!   errors, anvil restarted from a state dump).
//!
//! Both are seeded: the seed is printed at the start and in every failure, and
//! `CODEX_SOAK_SEED=<seed>` replays the run's random choices (requests, kill and fault
//! instants in blocks, victims, kinds, down-times); the processes' timing is real, so a
//! replay follows mostly the same schedule, not the same interleaving. The sizes default to
//! a short CI run:
//!
//! ```text
//! cargo test --test soak                                       # CI size
//! CODEX_SOAK_KILLS=200 cargo test --test soak crash -- --nocapture
//! CODEX_SOAK_FAULTS=100 cargo test --test soak faults -- --nocapture
//! CODEX_SOAK_SEED=1234 cargo test --test soak crash -- --nocapture   # replay a seed
//! ```
//!
//! See `docs/soak.md` for what each check means and what is not checked.
#[path = "../support/mod.rs"]
mod support;

mod audit;
mod crash;
mod faults;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use codex::market::{calls, Ask, Content, MarketplaceConfig, Request};
use serde_json::{json, Value};
use support::devchain::{self, Devchain};
use support::node::{Host, World};

/// The dev account that posts every request.
const CLIENT: usize = 3;
/// The hosts' dev accounts.
const HOST_ACCOUNTS: [usize; 3] = [1, 2, 4];
/// The validator's dev account.
const VALIDATOR: usize = 5;

/// The soak's seed, from the environment. While it lives, no other soak of this binary runs
/// (each is a whole marketplace); a panic meanwhile names the seed.
pub struct Params {
    pub seed: u64,
    name: &'static str,
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Params {
    /// `CODEX_SOAK_SEED`, or one taken from the clock; printed so that a failure can be
    /// replayed.
    pub fn from_env(name: &'static str) -> Params {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let seed = match std::env::var("CODEX_SOAK_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("CODEX_SOAK_SEED={s:?} is not a number")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("soak {name}: seed {seed} (replay with CODEX_SOAK_SEED={seed})");
        Params {
            seed,
            name,
            _serial: serial,
        }
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let (name, seed) = (self.name, self.seed);
            eprintln!("soak {name} failed with seed {seed}: replay with CODEX_SOAK_SEED={seed}");
        }
    }
}

/// A number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a number")),
        Err(_) => default,
    }
}

/// A stretch of chain time during which a host was not running (or not yet caught up with
/// the chain after its restart), in chain seconds.
#[derive(Debug, Clone, Copy)]
pub struct Down {
    pub from: u64,
    pub to: u64,
}

/// One of the soak's hosts and what the soak knows about it.
pub struct SoakHost {
    pub host: Host,
    pub name: String,
    pub addr: Address,
    /// Token balance before the host did anything.
    pub balance0: U256,
    /// Finished down-times.
    pub down: Vec<Down>,
    /// While down: since when (chain time), and the block after which it restarts.
    pub down_since: Option<(u64, u64)>,
    /// Since when (chain time) its connection to the chain is faulted, until it has caught
    /// up again; such a stretch counts as a down-time too.
    pub faulted_since: Option<(u64, u64)>,
    /// The latest block when the host first started.
    pub first_block: u64,
}

/// A request the client posted.
pub struct Posted {
    pub req: Request,
    /// Time of the block of `requestStorage`.
    pub t0: u64,
}

impl Posted {
    pub fn ends_at(&self) -> u64 {
        self.t0 + self.req.ask.duration
    }
    pub fn expires_at(&self) -> u64 {
        self.t0 + self.req.expiry
    }
}

/// The marketplace under test.
pub struct Market {
    // The nodes come first: fields drop in order, so they are killed (and their logs shown
    // on a failure) before the chain and their directories go.
    pub hosts: Vec<SoakHost>,
    pub validator: Host,
    pub seed: u64,
    pub rng: fastrand::Rng,
    pub w: World,
    pub config: MarketplaceConfig,
    pub posted: Vec<Posted>,
    /// Wall time between two blocks: the nodes see each block and act on it.
    pub block_pause: Duration,
    /// How long a running node may take to catch up with the latest block.
    pub catch_up: Duration,
    /// How long a block waits for nodes that lag before it is mined anyway.
    pub head_wait: Duration,
    /// Blocks mined so far by the soak.
    pub blocks: u64,
}

impl Market {
    /// A marketplace whose nodes reach the chain at `url(i)` (`i` the node's number: the
    /// hosts 0..3, the validator 3), or directly when `url` answers `None`; `global` goes to
    /// every node's global options.
    pub fn start(
        params: &Params,
        anvil_args: &[&str],
        global: &[&str],
        mut url: impl FnMut(&Devchain, usize) -> Option<String>,
    ) -> Market {
        let chain = Devchain::start(anvil_args);
        let rpc = chain.rpc();
        let mut w = World {
            chain,
            rpc,
            data: support::dataserver::DataServer::start(1 << 20),
            root: tempfile::tempdir().unwrap(),
        };
        let config = calls::decode_configuration(&w.view(calls::configuration())).unwrap();
        let mut hosts = Vec::new();
        for (i, account) in HOST_ACCOUNTS.into_iter().enumerate() {
            let name = format!("host{}", i + 1);
            let mut host = w.host(&name, account, &[]);
            if let Some(u) = url(&w.chain, i) {
                host = host.via(&u);
            }
            host.global.extend(global.iter().map(|s| s.to_string()));
            host.offer("256KiB", "100000000");
            let addr = w.chain.account(account);
            let balance0 = w.balance(addr);
            hosts.push(SoakHost {
                host,
                name,
                addr,
                balance0,
                down: vec![],
                down_since: None,
                faulted_since: None,
                first_block: 0,
            });
        }
        let mut validator = Host::new(
            &w.chain,
            w.root.path(),
            "validator",
            VALIDATOR,
            &["--validator"],
        );
        if let Some(u) = url(&w.chain, 3) {
            validator = validator.via(&u);
        }
        validator
            .global
            .extend(global.iter().map(|s| s.to_string()));
        let mut m = Market {
            rng: fastrand::Rng::with_seed(params.seed),
            seed: params.seed,
            w,
            config,
            hosts,
            validator,
            posted: vec![],
            block_pause: Duration::from_millis(100),
            catch_up: Duration::from_secs(60),
            head_wait: Duration::from_secs(5),
            blocks: 0,
        };
        let head = m.block_number();
        for h in &mut m.hosts {
            h.first_block = head;
            h.host.start();
        }
        m.validator.start();
        m.wait_caught_up_all();
        m
    }

    /// The latest block's number.
    pub fn block_number(&mut self) -> u64 {
        let v = self.w.rpc.call("eth_blockNumber", json!([])).unwrap();
        hex_u64(&v)
    }

    /// The latest block's timestamp.
    pub fn chain_time(&mut self) -> u64 {
        let b = self
            .w
            .rpc
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .unwrap();
        hex_u64(&b["timestamp"])
    }

    /// Posts a request of random slots, slot size, duration, expiry and slot loss.
    pub fn post_random(&mut self) {
        let period = self.config.period;
        let slots = self.rng.u64(1..=3);
        let duration = self.rng.u64(3..=6) * period + self.rng.u64(0..period);
        let expiry = self.rng.u64(15..=30) * 10;
        let n = self.posted.len() as u64 + 1;
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&self.seed.to_be_bytes());
        nonce[24..].copy_from_slice(&n.to_be_bytes());
        let mut cid = vec![0x01, 0x55, 0x12, 0x20];
        cid.extend_from_slice(&n.to_be_bytes());
        let req = Request {
            client: self.w.chain.account(CLIENT),
            ask: Ask {
                // 1 makes the contract require a proof in every period (see marketplace.md).
                proof_probability: U256::from(1u8),
                price_per_byte_per_second: U256::from(self.rng.u64(1..=3)),
                collateral_per_byte: U256::from(self.rng.u64(1..=2)),
                slots,
                slot_size: self.rng.u64(1..=8) * 1024,
                duration,
                max_slot_loss: self.rng.u64(0..slots),
            },
            content: Content {
                cid,
                merkle_root: B256::repeat_byte(0x42),
            },
            expiry,
            nonce: B256::from(nonce),
        };
        let (token, mkt) = (self.w.chain.token(), self.w.chain.marketplace());
        let price = req.ask.price_per_slot() * U256::from(req.ask.slots);
        devchain::send(
            &mut self.w.rpc,
            req.client,
            token,
            &calls::approve(mkt, price),
        );
        let receipt = devchain::send(
            &mut self.w.rpc,
            req.client,
            mkt,
            &calls::request_storage(&req),
        );
        let t0 = self.block_time(hex_u64(&receipt["blockNumber"]));
        self.posted.push(Posted { req, t0 });
    }

    pub fn block_time(&mut self, n: u64) -> u64 {
        let b = self
            .w
            .rpc
            .call("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
            .unwrap();
        hex_u64(&b["timestamp"])
    }

    /// Requests that have not ended yet (by chain time, with a period to spare for the
    /// payouts).
    pub fn live_requests(&mut self, now: u64) -> usize {
        self.posted
            .iter()
            .filter(|p| now <= p.ends_at() + self.config.period)
            .count()
    }

    /// The nodes that run now.
    fn running(&self) -> Vec<&Host> {
        self.hosts
            .iter()
            .filter(|h| h.down_since.is_none())
            .map(|h| &h.host)
            .chain(std::iter::once(&self.validator))
            .collect()
    }

    /// Waits until every running node has processed the latest block, or `within` passed;
    /// returns the names of those that had not.
    pub fn wait_heads(&mut self, within: Duration) -> Vec<String> {
        let head = self.block_number();
        let deadline = Instant::now() + within;
        loop {
            let behind: Vec<String> = self
                .running()
                .into_iter()
                .filter(|h| {
                    h.assert_running();
                    node_head(h).is_none_or(|b| b < head)
                })
                .map(|h| h.dir.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            if behind.is_empty() || Instant::now() > deadline {
                return behind;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_caught_up_all(&mut self) {
        let behind = self.wait_heads(self.catch_up);
        assert!(
            behind.is_empty(),
            "seed {}: {behind:?} did not catch up with the chain within {:?}",
            self.seed,
            self.catch_up
        );
    }

    /// Mines one block `BLOCK_SECS` later, after the running nodes have seen the last one.
    pub fn step(&mut self) {
        let behind = self.wait_heads(self.head_wait);
        if self.hosts.iter().any(|h| h.faulted_since.is_some()) {
            let now = self.chain_time();
            for h in &mut self.hosts {
                let Some((from, block)) = h.faulted_since else {
                    continue;
                };
                // Caught up with a block mined after the fault.
                if !behind.contains(&h.name) && node_head(&h.host).is_some_and(|b| b > block) {
                    h.faulted_since = None;
                    h.down.push(Down { from, to: now });
                }
            }
        }
        std::thread::sleep(self.block_pause);
        self.w.mine();
        self.blocks += 1;
    }

    /// Host `i`'s connection to the chain is faulted from now on, until it catches up again.
    pub fn faulted(&mut self, i: usize) {
        let now = self.chain_time();
        let block = self.block_number();
        let h = &mut self.hosts[i];
        if h.faulted_since.is_none() {
            h.faulted_since = Some((now, block));
        }
    }

    /// Kills host `i` with SIGKILL; it stays down until `blocks` more blocks are mined.
    pub fn kill(&mut self, i: usize, blocks: u64) {
        let now = self.chain_time();
        let until = self.blocks + blocks;
        let h = &mut self.hosts[i];
        h.host.kill9();
        h.down_since = Some((now, until));
    }

    /// Restarts the hosts whose down-time is over (all of them with `all`), and waits until
    /// they have caught up with the chain: only then are they counted as up again.
    pub fn restart_due(&mut self, all: bool) {
        let blocks = self.blocks;
        let due: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| {
                self.hosts[i]
                    .down_since
                    .is_some_and(|(_, until)| all || until <= blocks)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        for &i in &due {
            self.hosts[i].host.start();
        }
        let head = self.block_number();
        let deadline = Instant::now() + self.catch_up;
        for &i in &due {
            loop {
                let h = &self.hosts[i].host;
                h.assert_running();
                if node_head(h).is_some_and(|b| b >= head) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "seed {}: {} did not catch up within {:?} after a restart:\n{}",
                    self.seed,
                    self.hosts[i].name,
                    self.catch_up,
                    h.log_text()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let now = self.chain_time();
        for &i in &due {
            let h = &mut self.hosts[i];
            let (from, _) = h.down_since.take().unwrap();
            h.down.push(Down { from, to: now });
        }
    }

    /// The states of host `i`'s live sales, as its API reports them (empty if it does not
    /// answer).
    pub fn live_states(&self, i: usize) -> Vec<String> {
        self.hosts[i]
            .host
            .try_api_json("/sales/live")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|s| s["state"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Mines until every request has ended and no host holds a live sale or a
    /// reservation; panics after `max_blocks`.
    pub fn drain(&mut self, max_blocks: u64) {
        self.restart_due(true);
        let last_end = self.posted.iter().map(|p| p.ends_at()).max().unwrap_or(0);
        for _ in 0..max_blocks {
            let now = self.chain_time();
            if now > last_end + self.config.period && self.all_idle() {
                return;
            }
            self.step();
        }
        let live: Vec<(String, Value)> = self
            .hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    h.host.try_api_json("/sales/live").unwrap_or(Value::Null),
                )
            })
            .collect();
        panic!(
            "seed {}: the sales did not all end within {max_blocks} blocks after the last request: {live:?}",
            self.seed
        );
    }

    fn all_idle(&self) -> bool {
        self.hosts.iter().all(|h| {
            h.host
                .try_api_json("/sales/live")
                .is_some_and(|v| v.as_array().is_some_and(|a| a.is_empty()))
                && h.host
                    .cli(&["reservation", "list", "--json"])
                    .stdout
                    .is_empty()
        })
    }

    /// Stops every node with SIGTERM; each must exit with status 0.
    pub fn stop_all(&mut self) -> Vec<String> {
        let mut bad = vec![];
        for h in self
            .hosts
            .iter_mut()
            .map(|h| &mut h.host)
            .chain(std::iter::once(&mut self.validator))
        {
            if h.child.borrow().is_none() {
                continue;
            }
            let st = h.terminate(Duration::from_secs(10));
            if !st.success() {
                bad.push(format!("{} exited with {st} on SIGTERM", h.dir.display()));
            }
        }
        bad
    }
}

impl Market {
    /// Copies every node's log to a directory that outlives the run (the system's temporary
    /// directory, named after the seed) and says where.
    pub fn keep_logs(&self) {
        let dir = std::env::temp_dir().join(format!("codex-soak-{}", self.seed));
        let _ = std::fs::create_dir_all(&dir);
        for h in self
            .hosts
            .iter()
            .map(|h| &h.host)
            .chain(std::iter::once(&self.validator))
        {
            let name = h.dir.file_name().unwrap().to_string_lossy().into_owned();
            let _ = std::fs::copy(&h.log, dir.join(format!("{name}.log")));
        }
        eprintln!("the nodes' logs are kept in {}", dir.display());
    }
}

impl Drop for Market {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_logs();
        }
    }
}

/// The block the node has processed, from its REST API.
fn node_head(h: &Host) -> Option<u64> {
    h.try_api_json("/sales/status")?["chain"]["head"].as_u64()
}

pub fn hex_u64(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex number: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// Counts of things seen, for the summary.
pub type Tally = BTreeMap<String, usize>;

pub fn bump(t: &mut Tally, key: impl Into<String>) {
    *t.entry(key.into()).or_default() += 1;
}
