//! End-to-end figures of `codex run`: the built release binary against a real anvil dev chain
//! (the fixture Marketplace), measured from outside the node.
//!
//! Run: `cargo bench --bench node` (anvil comes from `npm ci --prefix fixtures/chain`, or
//! `CODEX_TEST_ANVIL`). A plain `fn main` (harness = false), so `cargo test` never runs it.
//! Every child (anvil, the node) is killed by a Drop guard, also on panic.
//!
//! The node's `--eth-provider` is a timestamping TCP proxy in front of anvil ([`tap`]). It
//! forwards whole WebSocket frames in both directions and notes when each passes: server to
//! client frames are unmasked; client to server frames carry a 4-byte mask key that is applied
//! to read the payload. Every 2 ms (CODEX_BENCH_PING_MS) it also sends the node a WebSocket
//! ping and times the pong: the node answers a ping only when its one mio loop reads the
//! socket, so a pong that comes back late measures how long the loop was busy elsewhere.
//!
//! # 1. Reaction time (target: p99 ≤ 2 × the floor)
//! From a `StorageRequested` log notification (an `eth_subscription` frame whose topic0 is
//! the event's signature) passing the proxy towards the node, to the node's
//! `eth_sendRawTransaction` of the matching `reserveSlot` passing the proxy towards anvil.
//! The node's database holds CODEX_BENCH_AVAILABILITIES availabilities (full size and
//! default: 1,000), made with `Store::create_availabilities`. CODEX_BENCH_REQUESTS 1-slot
//! requests that match (full size 1,000; default 100) are posted one at a time: post, wait
//! for the node's reserveSlot send, wait until the node is quiet, then the next. The data
//! source answers 404, so each sale ends right after its reservation (bytes and collateral
//! go back, the worker is free) and every request meets the same idle node; what happens
//! after the send does not affect the figure. Two live warm-up requests are not counted.
//! The floor, in the same run: the disk's fsync (4 KiB write + fdatasync in the data dir,
//! CODEX_BENCH_SAMPLES times) and the round trip of an `eth_call` (canReserveSlot at
//! `pending`, through a proxy like the node's) over a WebSocket with `BlockingClient`.
//! floor = one fsync p50 + 1 round trip × eth_call p50: the code has one round trip on the
//! path (src/node/mod.rs, `Ahead`): one frame with canReserveSlot, the reserveSlot
//! eth_estimateGas and the slot view's 7 eth_calls, then the reservation's SQLite commit
//! (CODEX_BENCH_FLOOR_TRIPS overrides the 1; before the calls were asked ahead it was 3). The bench also prints the round trips it
//! sees per request (a call the node sends after an answer came starts one), the node's own
//! share of each reaction (notification → first call, each answer → next call, last answer
//! → send), and the round trip of 7 eth_calls sent at once on one connection, which is how
//! the slot view reaches anvil, so a second floor with that measured figure in place of one
//! eth_call is printed too. (anvil writes its answers without TCP_NODELAY: without a quick
//! ACK from the receiver, which the node and the tap both give, calls in flight together
//! took ~40 ms.)
//!
//! # 2. Proving fan-out (target: under 5% of the 120 s period = 6 s; loop never blocked
//! more than 10 ms)
//! CODEX_BENCH_SLOTS slots (full size 1,000; default 100) hosted and proven by one node:
//! 10 requests of N/10 slots of 4 KiB, proof probability 1 (a proof every period), 30-day
//! duration, one availability large enough. Setup drives the chain on demand (automine off:
//! a block as soon as the node has sent transactions and paused 15 ms; the next proof period
//! when the node is idle) until the host holds all N slots; one more period lets every slot
//! reach Proving. Then CODEX_BENCH_PERIODS periods (default 3) are measured: the block that
//! starts the period is mined with timestamp = period start + 1 s (the sales' wake-up), and
//! the figure is the time from its `newHeads` notification passing the proxy to the last
//! of the N `submitProof` sends (distinct slots) passing it.
//! How the chain is driven while measuring (CODEX_BENCH_MINING):
//! - `interval` (default, the fair one): automine off and a block every CODEX_BENCH_BLOCK_MS
//!   (default 1000 ms) whatever the node does, timestamps following the wall clock. The node
//!   needs no block to send its proofs (the wake-up comes with the period's first block and
//!   the rest is views, workers and transactions), so blocks only add what a real chain adds:
//!   a head, receipt checks and a fee refresh now and then. (Sent proofs wait in anvil's
//!   pool until the next block, and anvil runs the pool for every call at `pending`, so
//!   the node's later views get slower as its own proofs pile up: that is anvil's cost.)
//! - `auto`: anvil's automine, every submitted proof its own block: the node gets one head
//!   per proof during its burst (a stress case no real chain produces).
//!
//! The loop-block figure: the largest ping-to-pong delay while the fan-out runs. A delay
//! counts the proxy's own scheduling too, so each late pong (> 10 ms) is split with the
//! scheduler's account of the node's loop thread, sampled every millisecond from
//! /proc/<pid>/task/<pid>/{schedstat,syscall}: on a CPU (the node's own work, with the
//! largest such run in one stall), runnable but waiting for a CPU (two cores shared with
//! anvil, the proxy and the bench), or neither (blocked in a system call such as fsync).
//!
//! Every other measured period (CODEX_BENCH_PERIODS, default 4: two without, two with), a
//! client thread asks `GET /sales/queue` over a kept-alive connection as fast as the node
//! answers, from before the period's block is mined to the last proof; the bench prints the
//! requests per second it got during the fan-out, and the fan-outs with and without it
//! (target: no change beyond noise).
//!
//! # 3. Resident memory (target: under 64 MiB)
//! VmHWM and VmRSS from /proc/<pid>/status of that node after the measured periods, with
//! the N slots proving.
//!
//! With CODEX_BENCH_QUEUED=Q (full size 100,000; default 0) the same node then gets Q more
//! slots to sell (requests of up to 50,000 slots whose downloads stall, so the workers hold a
//! few and the rest wait in the queue), and the figure is read again once they are queued.
//!
//! The bench also prints where the resident memory is (/proc/<pid>/smaps: by mapping, and
//! how much of it is transparent huge pages). MIMALLOC_* variables are passed to the node,
//! e.g. MIMALLOC_ALLOW_THP=0 to see the figure without mimalloc's huge pages.
//!
//! # 4. REST API (target: `GET /sales/availability` under 50 ms with 10,000 availabilities)
//! A node whose database holds CODEX_BENCH_API_AVAILABILITIES availabilities (default
//! 10,000), connected to the chain and otherwise idle: CODEX_BENCH_API_SAMPLES (default 100)
//! `GET /sales/availability` over one kept-alive connection (with ureq, after 3 warm-up
//! requests), each timed from the request to the last byte of the JSON; then the requests
//! per second one client gets from `GET /sales/queue` for CODEX_BENCH_API_SECONDS (3).
//!
//! Other knobs: CODEX_BENCH_WORKERS (`--max-workers` of the proving node, default 16, so
//! that the fill takes N/16 periods instead of N/3), CODEX_BENCH_PHASES
//! (`reaction,proving,api`), CODEX_BENCH_WARMUP (default 2), CODEX_BENCH_SAMPLES (floor
//! samples, default 200), CODEX_BENCH_PROVING_REQUESTS (default 10), CODEX_BENCH_VERBOSE
//! (every reaction's path), CODEX_BENCH_FILL_PERIODS (the most proof periods the fill may
//! take before the bench gives up; default 20 + 4 × slots / workers), CODEX_BENCH_GAS_LIMIT
//! (anvil's block gas limit for the measured periods; default anvil's 30 M),
//! CODEX_BENCH_LOG_LEVEL (the node's `--log-level`, default `info`; `info;debug:node` adds
//! every loop step over 10 ms), CODEX_BENCH_ANVIL_NICE (the proving phase runs anvil at
//! this niceness, e.g. 10, so that its figures show the node's work rather than its wait
//! for a CPU held by anvil), CODEX_BENCH_KEEP_LOG (a path to copy the node's log to when
//! the bench ends), CODEX_BENCH_CODEX (another `codex` binary than the one cargo
//! built, e.g. a copy that a concurrent build cannot replace mid-run).
//! Full size (about 15 minutes on two cores; the default run takes about 3):
//! `CODEX_BENCH_REQUESTS=1000 CODEX_BENCH_SLOTS=1000 cargo bench --bench node`.
// A measurement harness: its sample tuples and one-off sorts read better inline.
#![allow(clippy::type_complexity, clippy::unnecessary_sort_by)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::{hex, Address, B256, U256};
use codex::chain::client::BlockingClient;
use codex::market::{calls, Ask, Content, Groth16Proof, Request, SlotId};
use codex::sales::ledger::{AvailabilityId, Limits, NewAvailability};
use codex::store::{Options, Store};
use serde_json::{json, Value};
use support::dataserver::{DataServer, Mode};
use support::devchain::{self, Devchain};
use tap::{Tap, What};

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a whole number")),
        Err(_) => default,
    }
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn summary(v: &mut [Duration]) -> String {
    v.sort();
    format!(
        "p50 {}  p99 {}  max {}  (n={})",
        ms(pct(v, 0.50)),
        ms(pct(v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
        v.len()
    )
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn anvil_addr(chain: &Devchain) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], chain.anvil.port))
}

/// `codex run` as a child process with its log in a file; killed (and reaped) on drop.
struct NodeProc {
    child: Option<Child>,
    log: PathBuf,
    /// Log lines already looked at by [`NodeProc::slow_steps`].
    log_seen: usize,
}

impl NodeProc {
    fn start(dir: &Path, chain: &Devchain, provider: &str, run_args: &[String]) -> NodeProc {
        let key = dir.join("host.key");
        std::fs::write(&key, chain.private_key(1)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = dir.join("node.log");
        let file = std::fs::File::create(&log).unwrap();
        let bin = std::env::var_os("CODEX_BENCH_CODEX")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_codex")), PathBuf::from);
        let child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // Allocator options pass through, for looking into the memory figure.
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")))
            .arg("--data-dir")
            .arg(dir)
            .arg("--eth-private-key")
            .arg(&key)
            .args(["--log-format", "nocolors", "--log-level"])
            .arg(std::env::var("CODEX_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()))
            .args(["--eth-provider", provider])
            .args(["--marketplace-address", &chain.marketplace().to_string()])
            .arg("run")
            .args(["--api-port", "0"])
            .args(run_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn codex run");
        NodeProc {
            child: Some(child),
            log_seen: 0,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Panics (with the log's tail) when the node has exited.
    fn check(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("codex run exited with {st}:\n{}", self.log_tail(60));
            }
        }
    }

    /// VmHWM, VmRSS (KiB) and Threads from /proc/<pid>/status.
    fn memory(&self) -> (u64, u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"), field("Threads:"))
    }

    /// CPU time of the whole process so far (utime + stime of /proc/<pid>/stat, in clock
    /// ticks of 10 ms).
    fn cpu(&self) -> Duration {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The fields after the command name (which is in parentheses and may hold spaces).
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        Duration::from_millis(ticks * 10)
    }

    /// Where the resident memory is, from /proc/<pid>/smaps: Rss by kind of mapping, and
    /// the largest anonymous mappings.
    fn memory_map(&self) -> String {
        let s = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid())).unwrap_or_default();
        let mut kinds: HashMap<String, u64> = HashMap::new();
        let mut anon: Vec<(u64, u64)> = Vec::new();
        let (mut name, mut size, mut huge) = (String::new(), 0u64, 0u64);
        for l in s.lines() {
            let mut it = l.split_whitespace();
            let first = it.next().unwrap_or("");
            if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
                // A mapping's header: range perms offset dev inode [path].
                let path = l.split_whitespace().nth(5).unwrap_or("");
                name = if path.is_empty() {
                    "anonymous".to_string()
                } else if path.starts_with('[') {
                    path.to_string()
                } else if path.ends_with("/codex") {
                    "the codex binary".to_string()
                } else {
                    "other files".to_string()
                };
            } else if first == "Size:" {
                size = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            } else if first == "AnonHugePages:" {
                huge += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            } else if first == "Rss:" {
                let rss: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                *kinds.entry(name.clone()).or_default() += rss;
                if name == "anonymous" {
                    anon.push((rss, size));
                }
            }
        }
        let mut kinds: Vec<(String, u64)> = kinds.into_iter().filter(|(_, v)| *v > 0).collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        anon.sort_by_key(|a| std::cmp::Reverse(a.0));
        format!(
            "Rss by mapping: {}; the largest anonymous mappings (Rss/Size KiB): {}; transparent huge pages {huge} KiB",
            kinds
                .iter()
                .map(|(k, v)| format!("{k} {v} KiB"))
                .collect::<Vec<_>>()
                .join(", "),
            anon.iter()
                .take(3)
                .map(|(r, s)| format!("{r}/{s}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The REST API's base URL, from the node's log line `REST API on http://…`.
    fn api_base(&mut self) -> String {
        let mut base = None;
        wait_until("the REST API is up", Duration::from_secs(60), || {
            self.check();
            base = self.log_text().lines().find_map(|l| {
                l.split_once("REST API on ")
                    .map(|(_, url)| url.trim().to_string())
            });
            base.is_some()
        });
        base.unwrap()
    }

    /// The loop steps the node logged as slow (with `debug:node`), since the last call: how
    /// many, and the five longest.
    fn slow_steps(&mut self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().skip(self.log_seen).collect();
        self.log_seen += lines.len();
        let mut slow: Vec<(u64, &str)> = lines
            .iter()
            .filter_map(|l| {
                let (_, rest) = l.split_once("the loop was busy ")?;
                let (n, _) = rest.split_once(" ms")?;
                Some((n.parse().ok()?, rest))
            })
            .collect();
        slow.sort_unstable_by(|a, b| b.cmp(a));
        let top: Vec<&str> = slow.iter().take(5).map(|(_, l)| *l).collect();
        format!(
            "loop steps logged over 10 ms since the last period: {}; longest: {}",
            slow.len(),
            top.join(" | ")
        )
    }

    fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(keep) = std::env::var_os("CODEX_BENCH_KEEP_LOG") {
            let _ = std::fs::copy(&self.log, keep);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- tail of {} ---\n{}",
                self.log.display(),
                self.log_tail(60)
            );
        }
    }
}

/// A request from `client`: `slots` slots of `slot_size` bytes, made distinct by `nonce`.
fn request(client: Address, nonce: u64, slots: u64, slot_size: u64, duration: u64) -> Request {
    let mut cid = vec![0x01, 0x55, 0x12, 0x20];
    cid.extend_from_slice(&nonce.to_be_bytes());
    Request {
        client,
        ask: Ask {
            proof_probability: U256::from(1u8),
            price_per_byte_per_second: U256::from(1u8),
            collateral_per_byte: U256::from(1u8),
            slots,
            slot_size,
            duration,
            max_slot_loss: 1,
        },
        content: Content {
            cid,
            merkle_root: B256::repeat_byte(0x42),
        },
        expiry: (duration / 2).min(86_400),
        nonce: B256::left_padding_from(&nonce.to_be_bytes()),
    }
}

fn quantity(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a quantity"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// The latest block's number and timestamp.
fn latest(rpc: &mut BlockingClient) -> (u64, u64) {
    let b = rpc
        .call("eth_getBlockByNumber", json!(["latest", false]))
        .unwrap();
    (quantity(&b["number"]), quantity(&b["timestamp"]))
}

fn fsync_samples(dir: &Path, n: usize) -> Vec<Duration> {
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let page = [0x5au8; 4096];
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&page).unwrap();
        f.sync_data().unwrap();
        if i >= 5 {
            out.push(t.elapsed());
        }
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    out
}

fn rtt_samples(rpc: &mut BlockingClient, method: &str, params: Value, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let t = Instant::now();
        rpc.call(method, params.clone())
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        if i >= 10 {
            out.push(t.elapsed());
        }
    }
    out
}

/// A [`ChainClient`] on its own mio loop, to send several calls at once the way the node
/// does (BlockingClient waits for each answer before the next call).
///
/// [`ChainClient`]: codex::chain::client::ChainClient
struct Pipelined {
    poll: mio::Poll,
    events: mio::Events,
    client: codex::chain::client::ChainClient,
}

impl Pipelined {
    fn connect(url: &str) -> Pipelined {
        use codex::chain::client::{ChainClient, ClientConfig, ClientOutput};
        let mut config = ClientConfig::new(codex::chain::ws::Endpoint::parse(url).unwrap());
        config.reconnect = false;
        let client = ChainClient::new(
            config,
            mio::Token(0),
            Instant::now(),
            fastrand::Rng::with_seed(1),
        );
        let mut p = Pipelined {
            poll: mio::Poll::new().unwrap(),
            events: mio::Events::with_capacity(16),
            client,
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            p.turn();
            while let Some(o) = p.client.poll_output() {
                match o {
                    ClientOutput::Connected => return p,
                    ClientOutput::Failed(e) => panic!("connecting to {url}: {e}"),
                    _ => {}
                }
            }
            assert!(Instant::now() < end, "connecting to {url}: timed out");
        }
    }

    fn turn(&mut self) {
        let now = Instant::now();
        let unread = self.client.has_unread();
        let wait = self
            .client
            .next_deadline()
            .map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(now)
            })
            .min(Duration::from_millis(if unread { 0 } else { 100 }));
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        let now = Instant::now();
        if !self.events.is_empty() || unread {
            self.client.on_ready(self.poll.registry(), now);
        }
        self.client.on_timer(self.poll.registry(), now);
    }

    /// Sends every call at once; the time until the last answer.
    fn batch(&mut self, calls: &[(&str, Value)]) -> Duration {
        use codex::chain::client::ClientOutput;
        let t = Instant::now();
        let mut left: HashSet<u64> = calls
            .iter()
            .map(|(m, p)| self.client.call(self.poll.registry(), m, p, Instant::now()))
            .collect();
        while !left.is_empty() {
            while let Some(o) = self.client.poll_output() {
                match o {
                    ClientOutput::Response { id, result } => {
                        result.unwrap_or_else(|e| panic!("pipelined call: {e}"));
                        left.remove(&id);
                    }
                    ClientOutput::Failed(e) | ClientOutput::Disconnected(e) => panic!("{e}"),
                    _ => {}
                }
            }
            if !left.is_empty() {
                self.turn();
            }
        }
        t.elapsed()
    }
}

fn storage_requested_topic() -> String {
    use alloy_sol_types::SolEvent;
    codex::market::abi::Marketplace::StorageRequested::SIGNATURE_HASH
        .to_string()
        .to_lowercase()
}

/// Methods that are not on a sale's path from event to transaction (per-head work).
fn off_path(method: &str) -> bool {
    matches!(
        method,
        "eth_feeHistory"
            | "eth_getTransactionReceipt"
            | "eth_getLogs"
            | "eth_blockNumber"
            | "eth_sendRawTransaction"
            | "eth_subscribe"
    )
}

/// The path of one reaction, read from the frames the node sent and received between the
/// notification and the send.
struct PathInfo {
    reaction: Duration,
    round_trips: usize,
    /// Time the node itself spent on the path: notification → first call, each answer →
    /// the next call, last answer → the send.
    local: Duration,
    /// The calls of each round trip.
    waves: Vec<Vec<String>>,
    /// Per round trip: when its first call left (after the notification) and how long
    /// until its last answer came back.
    timing: Vec<(Duration, Duration)>,
}

fn path_info(recs: &[tap::Rec], conn: usize, t_n: Instant, t_s: Instant) -> PathInfo {
    let mut window: Vec<&tap::Rec> = recs
        .iter()
        .filter(|r| r.conn == conn && r.t >= t_n && r.t <= t_s)
        .collect();
    window.sort_by_key(|r| r.t);
    let mut on_path: HashSet<&str> = HashSet::new();
    let mut waves: Vec<Vec<String>> = Vec::new();
    let mut timing: Vec<(Duration, Duration)> = Vec::new();
    let (mut new_wave, mut last_input, mut local) = (true, t_n, Duration::ZERO);
    let mut wave_start = t_n;
    for r in window {
        match &r.what {
            What::Call { id, method, .. } if !off_path(method) => {
                if new_wave {
                    local += r.t - last_input;
                    new_wave = false;
                    waves.push(Vec::new());
                    wave_start = r.t;
                    timing.push((r.t - t_n, Duration::ZERO));
                }
                on_path.insert(id);
                waves.last_mut().unwrap().push(method.clone());
            }
            What::Response(id) if on_path.contains(id.as_str()) => {
                new_wave = true;
                last_input = r.t;
                if let Some(t) = timing.last_mut() {
                    t.1 = r.t - wave_start;
                }
            }
            _ => {}
        }
    }
    local += t_s - last_input;
    PathInfo {
        reaction: t_s - t_n,
        round_trips: waves.len(),
        local,
        waves,
        timing,
    }
}

fn describe_waves(waves: &[Vec<String>]) -> String {
    waves
        .iter()
        .map(|w| {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for m in w {
                match counts.iter_mut().find(|(n, _)| n == m) {
                    Some(c) => c.1 += 1,
                    None => counts.push((m.clone(), 1)),
                }
            }
            counts
                .iter()
                .map(|(m, n)| {
                    if *n > 1 {
                        format!("{m}×{n}")
                    } else {
                        m.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

fn pongs_summary(tap: &Tap, from: Instant, to: Instant) -> (Vec<Duration>, usize) {
    let mut v = tap.pongs_between(from, to);
    v.sort();
    let over = v.iter().filter(|d| **d > Duration::from_millis(10)).count();
    (v, over)
}

/// Samples the scheduler's account of the node's loop thread (the main thread) every
/// millisecond from /proc/<pid>/task/<pid>/schedstat: nanoseconds on a CPU and nanoseconds
/// runnable but waiting for one. A late pong is then split into the loop's own work (on
/// CPU), CPU contention (waiting: two cores shared with anvil, the proxy and the bench) and
/// the rest (blocked in a system call, e.g. an fsync, or sleeping).
struct LoopSampler {
    /// (when, ns on CPU, ns waiting for a CPU, the system call it was in: None = running).
    samples: std::sync::Arc<std::sync::Mutex<Vec<(Instant, u64, u64, Option<u32>)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LoopSampler {
    fn start(pid: u32) -> LoopSampler {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            let path = format!("/proc/{pid}/task/{pid}/schedstat");
            let sys_path = format!("/proc/{pid}/task/{pid}/syscall");
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    return;
                };
                let mut it = text
                    .split_whitespace()
                    .map(|v| v.parse::<u64>().unwrap_or(0));
                let (cpu, wait) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                let sys = std::fs::read_to_string(&sys_path).ok().and_then(|t| {
                    t.split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u32>().ok())
                });
                s.lock().unwrap().push((Instant::now(), cpu, wait, sys));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        LoopSampler { samples, stop }
    }

    /// How the samples within `spans` found the thread: (what, count), most first.
    fn states(&self, spans: &[(Instant, Instant)]) -> Vec<(&'static str, usize)> {
        let s = self.samples.lock().unwrap();
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for x in s
            .iter()
            .filter(|x| spans.iter().any(|(a, b)| x.0 >= *a && x.0 <= *b))
        {
            let name = match x.3 {
                None => "running",
                Some(0) => "read",
                Some(1) => "write",
                Some(17) => "pread64",
                Some(18) => "pwrite64",
                Some(74) => "fsync",
                Some(75) => "fdatasync",
                Some(202) => "futex",
                Some(232) | Some(281) | Some(441) => "epoll_wait",
                Some(35) | Some(230) => "sleep",
                Some(257) => "openat",
                Some(87) | Some(263) => "unlink",
                Some(_) => "other system calls",
            };
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some(c) => c.1 += 1,
                None => counts.push((name, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1));
        counts
    }

    /// (on CPU, waiting for a CPU) between `from` and `to`, from the samples around them.
    fn between(&self, from: Instant, to: Instant) -> (Duration, Duration) {
        let s = self.samples.lock().unwrap();
        let a = s.iter().rev().find(|x| x.0 <= from).or(s.first());
        let b = s.iter().find(|x| x.0 >= to).or(s.last());
        match (a, b) {
            (Some(a), Some(b)) => (
                Duration::from_nanos(b.1.saturating_sub(a.1)),
                Duration::from_nanos(b.2.saturating_sub(a.2)),
            ),
            _ => (Duration::ZERO, Duration::ZERO),
        }
    }
}

impl Drop for LoopSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where the late pongs' time went: "on CPU x%, waiting for a CPU y%, blocked z%".
fn late_pongs_split(tap: &Tap, sampler: &LoopSampler, from: Instant, to: Instant) -> String {
    let late: Vec<(Instant, Duration)> = tap
        .pong_pairs_between(from, to)
        .into_iter()
        .filter(|(_, d)| *d > Duration::from_millis(10))
        .collect();
    if late.is_empty() {
        return "no late pongs".into();
    }
    // Merge overlapping late intervals so that a stall seen by several pings counts once.
    let mut spans: Vec<(Instant, Instant)> = Vec::new();
    for (sent, d) in late {
        let end = sent + d;
        match spans.last_mut() {
            Some(last) if sent <= last.1 => last.1 = last.1.max(end),
            _ => spans.push((sent, end)),
        }
    }
    let (mut total, mut cpu, mut wait) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut max_cpu = Duration::ZERO;
    let mut max_cpu_at = Duration::ZERO;
    let mut worst = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for (a, b) in &spans {
        let (c, w) = sampler.between(*a, *b);
        // The samples are a millisecond apart: clamp to the span.
        let len = *b - *a;
        let c = c.min(len);
        let w = w.min(len - c);
        total += len;
        cpu += c;
        wait += w;
        if c > max_cpu {
            max_cpu = c;
            max_cpu_at = *a - from.min(*a);
        }
        if len > worst.0 {
            worst = (len, c, w);
        }
    }
    let pc = |x: Duration, of: Duration| 100.0 * x.as_secs_f64() / of.as_secs_f64().max(1e-9);
    let states = sampler.states(&spans);
    let n: usize = states.iter().map(|x| x.1).sum();
    let states = states
        .iter()
        .take(4)
        .map(|(k, c)| format!("{k} {:.0}%", 100.0 * *c as f64 / n.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} stalls of {} in all: loop thread on CPU {:.0}% (at most {} in one stall, which began {} after the window opened), waiting for a CPU {:.0}%, blocked or asleep {:.0}%; the longest {}: {:.0}% / {:.0}% / {:.0}%; samples found the thread {states}",
        spans.len(),
        ms(total),
        pc(cpu, total),
        ms(max_cpu),
        ms(max_cpu_at),
        pc(wait, total),
        pc(total.saturating_sub(cpu + wait), total),
        ms(worst.0),
        pc(worst.1, worst.0),
        pc(worst.2, worst.0),
        pc(worst.0.saturating_sub(worst.1 + worst.2), worst.0),
    )
}

fn print_loop_block(tap: &Tap, from: Instant, to: Instant, ping_ms: usize) {
    if ping_ms == 0 {
        println!("loop block: not measured (CODEX_BENCH_PING_MS=0)");
        return;
    }
    let (v, over) = pongs_summary(tap, from, to);
    println!(
        "loop block (ping→pong delay, a ping every {ping_ms} ms): {}; {over} pongs later than 10 ms",
        summary(&mut v.clone())
    );
}

// ---------------------------------------------------------------------------------------
/// `n` availabilities of 1 MiB each in the host's database, in one transaction through the
/// library (`Store::create_availabilities`).
fn make_availabilities(dir: &Path, n_avail: usize) {
    let mut store = Store::open(dir, Options::cli()).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let items = (0..n_avail)
        .map(|_| {
            (
                AvailabilityId::random(&mut rng),
                NewAvailability {
                    total_size: 1 << 20,
                    duration: 7200,
                    min_price_per_byte_per_second: U256::from(1u8),
                    total_collateral: U256::from(10_000_000u64),
                    enabled: true,
                    until: 0,
                },
            )
        })
        .collect();
    let t = Instant::now();
    store
        .create_availabilities(
            items,
            Limits {
                quota: codex::config::DEFAULT_STORAGE_QUOTA,
                now,
            },
        )
        .unwrap();
    println!(
        "created {n_avail} availabilities with Store::create_availabilities in {}",
        ms(t.elapsed())
    );
}

// 1. Reaction time.

fn reaction(ping_ms: usize) {
    let n_avail = env_usize("CODEX_BENCH_AVAILABILITIES", 1000);
    let n_req = env_usize("CODEX_BENCH_REQUESTS", 100);
    let samples = env_usize("CODEX_BENCH_SAMPLES", 200);
    let warmup = env_usize("CODEX_BENCH_WARMUP", 2);
    println!("== 1. reaction time: StorageRequested notification → reserveSlot eth_sendRawTransaction, both at the proxy");
    println!("setup: {n_avail} availabilities, {n_req} measured 1-slot requests (+{warmup} warm-up), posted one at a time");

    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    let data = DataServer::start(1 << 20);
    data.set_mode(Mode::NotFound);

    make_availabilities(&dir, n_avail);

    let client = chain.account(3);
    let host = chain.account(1);
    let (token, mkt) = (chain.token(), chain.marketplace());
    let total = (warmup + n_req + 1) as u64;
    let mk = |i: u64| request(client, 1_000 + i, 1, 1024, 3600);
    devchain::send(
        &mut rpc,
        client,
        token,
        &calls::approve(mkt, mk(0).ask.price_per_slot() * U256::from(total)),
    );

    // The floor: fsync of the data dir's disk, and eth_call / eth_estimateGas round trips
    // through a proxy like the node's, about a request the node has not seen yet.
    let first = mk(0);
    devchain::send(&mut rpc, client, mkt, &calls::request_storage(&first));
    let mut fsync = fsync_samples(&dir, samples);
    let floor_tap = Tap::start(anvil_addr(&chain), None);
    let mut frpc = BlockingClient::connect(&floor_tap.ws_url(), Duration::from_secs(10)).unwrap();
    let call = |data: Vec<u8>| json!([{"from": host, "to": mkt, "data": alloy_primitives::Bytes::from(data)}, "pending"]);
    let mut eth_call = rtt_samples(
        &mut frpc,
        "eth_call",
        call(calls::can_reserve_slot(first.id(), 0)),
        samples,
    );
    let mut estimate = rtt_samples(
        &mut frpc,
        "eth_estimateGas",
        json!([{"from": host, "to": mkt, "data": alloy_primitives::Bytes::from(calls::reserve_slot(first.id(), 0))}]),
        samples,
    );
    drop(frpc);
    // The slot view's shape: seven eth_calls sent at once on one connection.
    let mut pipe = Pipelined::connect(&floor_tap.ws_url());
    let view: Vec<(&str, Value)> = [
        calls::get_request(first.id()),
        calls::request_state(first.id()),
        calls::slot_state(SlotId::of(first.id(), 0)),
        calls::request_expiry(first.id()),
        calls::request_end(first.id()),
        calls::get_host(SlotId::of(first.id(), 0)),
        calls::current_collateral(SlotId::of(first.id(), 0)),
    ]
    .into_iter()
    .map(|d| ("eth_call", call(d)))
    .collect();
    let mut batch7: Vec<Duration> = (0..samples / 4 + 5)
        .map(|_| pipe.batch(&view))
        .skip(5)
        .collect();
    drop(pipe);
    drop(floor_tap);

    // The node, through the timestamping proxy. It finds the first request by backfill.
    let tap = Tap::start(
        anvil_addr(&chain),
        (ping_ms > 0).then(|| Duration::from_millis(ping_ms as u64)),
    );
    let mut node = NodeProc::start(
        &dir,
        &chain,
        &tap.ws_url(),
        &["--data-source".to_string(), data.template()],
    );
    let sampler = LoopSampler::start(node.pid());
    let sent = |tap: &Tap, from: &mut usize, want: &str| -> bool {
        let recs = tap.recs(*from);
        *from += recs.len();
        recs.iter()
            .any(|r| matches!(&r.what, What::Call { raw: Some(raw), .. } if raw.contains(want)))
    };
    let mut cursor = 0;
    let want = hex::encode(calls::reserve_slot(first.id(), 0));
    wait_until(
        "the node reserves the backfilled request",
        Duration::from_secs(60),
        || {
            node.check();
            sent(&tap, &mut cursor, &want)
        },
    );
    wait_until("quiet", Duration::from_secs(10), || {
        tap.quiet_for(Duration::from_millis(100))
    });

    let t_start = Instant::now();
    let mut rids = Vec::new();
    for i in 1..=(warmup + n_req) as u64 {
        let req = mk(i);
        let want = hex::encode(calls::reserve_slot(req.id(), 0));
        devchain::send(&mut rpc, client, mkt, &calls::request_storage(&req));
        wait_until(
            &format!("reserveSlot of request {i}"),
            Duration::from_secs(30),
            || {
                node.check();
                sent(&tap, &mut cursor, &want)
            },
        );
        // Let the sale end (its download fails at once) so the next request meets an idle node.
        wait_until("quiet", Duration::from_secs(10), || {
            tap.quiet_for(Duration::from_millis(50))
        });
        if i > warmup as u64 {
            rids.push(req.id());
        }
    }
    let t_end = Instant::now();
    node.check();

    let recs = tap.recs(0);
    let topic = storage_requested_topic();
    let mut infos = Vec::new();
    for rid in &rids {
        let rid_hex = hex::encode(rid.as_bytes());
        let want = hex::encode(calls::reserve_slot(*rid, 0));
        let n = recs
            .iter()
            .find(|r| matches!(&r.what, What::Log { topic0, data } if *topic0 == topic && data.contains(&rid_hex)))
            .unwrap_or_else(|| panic!("no StorageRequested notification for {rid}"));
        let s = recs
            .iter()
            .find(|r| matches!(&r.what, What::Call { raw: Some(raw), .. } if raw.contains(&want)))
            .unwrap();
        infos.push(path_info(&recs, n.conn, n.t, s.t));
    }
    if std::env::var_os("CODEX_BENCH_VERBOSE").is_some() {
        for (rid, i) in rids.iter().zip(&infos) {
            let t: Vec<String> = i
                .timing
                .iter()
                .map(|(at, w)| format!("@{} wait {}", ms(*at), ms(*w)))
                .collect();
            println!(
                "  {rid}: {} in {}: {}; {}",
                i.round_trips,
                ms(i.reaction),
                describe_waves(&i.waves),
                t.join(", ")
            );
        }
    }
    let mut reaction: Vec<Duration> = infos.iter().map(|i| i.reaction).collect();
    let mut local: Vec<Duration> = infos.iter().map(|i| i.local).collect();
    let mut trip_hist: Vec<(usize, usize)> = Vec::new();
    let mut paths: Vec<(String, usize)> = Vec::new();
    for i in &infos {
        match trip_hist.iter_mut().find(|(k, _)| *k == i.round_trips) {
            Some(e) => e.1 += 1,
            None => trip_hist.push((i.round_trips, 1)),
        }
        let d = describe_waves(&i.waves);
        match paths.iter_mut().find(|(k, _)| *k == d) {
            Some(e) => e.1 += 1,
            None => paths.push((d, 1)),
        }
    }
    trip_hist.sort();
    paths.sort_by(|a, b| b.1.cmp(&a.1));
    // The round trips the code has on the path (src/node/mod.rs, `Ahead`): one frame with
    // canReserveSlot, the reserveSlot eth_estimateGas and the slot view's 7 eth_calls.
    let trips = env_usize("CODEX_BENCH_FLOOR_TRIPS", 1);

    println!("reaction:                {}", summary(&mut reaction));
    println!("  of which in the node:  {}  (notification→first call, answer→next call, last answer→send; the rest is waiting for anvil)", summary(&mut local));
    println!(
        "  round trips seen on the path (a call sent after an answer came starts one): {}",
        trip_hist
            .iter()
            .map(|(k, n)| format!("{k}: {n}×"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (p, n) in paths.iter().take(3) {
        println!("  path seen {n}×: {p}");
    }
    println!(
        "fsync (4 KiB write + fdatasync in the data dir): {}",
        summary(&mut fsync)
    );
    println!(
        "eth_call round trip (canReserveSlot at pending, BlockingClient via a proxy): {}",
        summary(&mut eth_call)
    );
    println!(
        "eth_estimateGas round trip (reserveSlot, for comparison): {}",
        summary(&mut estimate)
    );
    println!(
        "7 eth_calls sent at once (the slot view's shape, ChainClient via a proxy): {}",
        summary(&mut batch7)
    );
    let floor = pct(&fsync, 0.5) + pct(&eth_call, 0.5) * trips as u32;
    let p99 = pct(&reaction, 0.99);
    println!(
        "floor = fsync p50 + {trips} round trips × eth_call p50 = {}; reaction p99 / floor = {:.2} (target ≤ 2)",
        ms(floor),
        p99.as_secs_f64() / floor.as_secs_f64()
    );
    // anvil answers a frame's calls one after another: the path's frame costs about the 7
    // calls at once plus canReserveSlot and the estimate.
    let served = pct(&fsync, 0.5)
        + pct(&batch7, 0.5)
        + pct(&eth_call, 0.5) * trips.saturating_sub(2) as u32
        + pct(&estimate, 0.5);
    println!(
        "  floor as anvil serves this path (fsync + 7 calls at once + estimateGas, p50s; the path's one frame also carries canReserveSlot): {}; ratio {:.2}",
        ms(served),
        p99.as_secs_f64() / served.as_secs_f64()
    );
    print_loop_block(&tap, t_start, t_end, ping_ms);
    println!(
        "  late pongs: {}",
        late_pongs_split(&tap, &sampler, t_start, t_end)
    );
    let (hwm, rss, threads) = node.memory();
    println!(
        "node memory: VmHWM {} KiB, VmRSS {} KiB, {threads} threads",
        hwm, rss
    );
    println!();
}

// ---------------------------------------------------------------------------------------
// 2 and 3. Proving fan-out and memory.

struct Chain {
    rpc: BlockingClient,
}

impl Chain {
    fn mine(&mut self) {
        self.rpc.call("evm_mine", json!([])).unwrap();
    }
    fn mine_at(&mut self, ts: u64) {
        self.rpc
            .call("evm_setNextBlockTimestamp", json!([ts]))
            .unwrap();
        self.mine();
    }
    fn pool(&mut self) -> u64 {
        let v = self.rpc.call("txpool_status", json!([])).unwrap();
        match &v["pending"] {
            Value::String(_) => quantity(&v["pending"]),
            Value::Number(n) => n.as_u64().unwrap_or(0),
            _ => 0,
        }
    }
    /// Sends from an unlocked dev account (automine off), mines, and checks the receipts.
    fn send_all(&mut self, from: Address, txs: &[(Address, Vec<u8>)]) {
        let hashes: Vec<Value> = txs
            .iter()
            .map(|(to, data)| {
                self.rpc
                    .call(
                        "eth_sendTransaction",
                        json!([{"from": from, "to": to, "data": alloy_primitives::Bytes::from(data.clone())}]),
                    )
                    .unwrap()
            })
            .collect();
        let mut pending = hashes;
        for _ in 0..20 {
            self.mine();
            pending.retain(|h| {
                let r = self
                    .rpc
                    .call("eth_getTransactionReceipt", json!([h]))
                    .unwrap();
                if r.is_null() {
                    return true;
                }
                assert_eq!(r["status"], "0x1", "transaction failed: {r}");
                false
            });
            if pending.is_empty() {
                return;
            }
        }
        panic!("transactions not mined: {pending:?}");
    }
    fn my_slots(&mut self, host: Address, mkt: Address) -> usize {
        let v = self
            .rpc
            .call(
                "eth_call",
                json!([{"from": host, "to": mkt, "data": alloy_primitives::Bytes::from(calls::my_slots())}, "latest"]),
            )
            .unwrap();
        let d: alloy_primitives::Bytes = v.as_str().unwrap().parse().unwrap();
        calls::decode_my_slots(&d).unwrap().len()
    }
    fn proofs_since(&mut self, mkt: Address, block: u64) -> usize {
        use alloy_sol_types::SolEvent;
        let topic = codex::market::abi::Marketplace::ProofSubmitted::SIGNATURE_HASH;
        let v = self
            .rpc
            .call(
                "eth_getLogs",
                json!([{"address": mkt, "fromBlock": format!("{block:#x}"), "toBlock": "latest", "topics": [topic]}]),
            )
            .unwrap();
        v.as_array().map_or(0, |a| a.len())
    }
}

/// The submitProof sends among `recs`: (time, slot) for the slots in `slots`.
fn proof_sends(
    recs: &[tap::Rec],
    selector: &str,
    slots: &HashSet<String>,
) -> Vec<(Instant, String)> {
    let mut out = Vec::new();
    for r in recs {
        if let What::Call { raw: Some(raw), .. } = &r.what {
            let mut at = 0;
            while let Some(p) = raw[at..].find(selector) {
                let s = at + p + selector.len();
                if let Some(id) = raw.get(s..s + 64) {
                    if slots.contains(id) {
                        out.push((r.t, id.to_string()));
                        break;
                    }
                }
                at = at + p + 1;
            }
        }
    }
    out
}

fn proving(ping_ms: usize) {
    let n_slots = env_usize("CODEX_BENCH_SLOTS", 100);
    let n_requests = env_usize("CODEX_BENCH_PROVING_REQUESTS", 10).clamp(1, n_slots.max(1));
    let per_request = n_slots.div_ceil(n_requests) as u64;
    let n_slots = per_request as usize * n_requests;
    let periods = env_usize("CODEX_BENCH_PERIODS", 4);
    let workers = env_usize("CODEX_BENCH_WORKERS", 16);
    let block_ms = env_usize("CODEX_BENCH_BLOCK_MS", 1000) as u64;
    let mining = env_str("CODEX_BENCH_MINING", "interval");
    let n_queued = env_usize("CODEX_BENCH_QUEUED", 0);
    assert!(
        mining == "interval" || mining == "auto",
        "CODEX_BENCH_MINING is interval or auto"
    );
    let slot_size = 4096u64;
    println!("== 2. proving fan-out: the block that starts a period → the last submitProof of the period, at the proxy");
    println!("setup: {n_slots} slots ({n_requests} requests × {per_request} slots of {slot_size} B, proof probability 1) on one node, --max-workers {workers}; mining while measured: {mining}{}",
        if mining == "interval" { format!(", a block every {block_ms} ms") } else { String::new() });

    let chain = Devchain::start(&[]);
    if let Ok(n) = std::env::var("CODEX_BENCH_ANVIL_NICE") {
        // Two cores shared by anvil, the node, the proxy and the bench: with anvil at a
        // lower priority the loop's figures show the node's own work rather than the wait
        // for a CPU that anvil holds (a real chain node runs elsewhere).
        let ok = Command::new("renice")
            .args(["-n", &n, "-p", &chain.anvil.pid().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        println!(
            "anvil reniced to {n}: {}",
            if ok { "yes" } else { "failed" }
        );
    }
    let mut c = Chain { rpc: chain.rpc() };
    c.rpc.call("evm_setAutomine", json!([false])).unwrap();
    let mkt = chain.marketplace();
    let token = chain.token();
    let cfg = calls::decode_configuration(&c.rpc.eth_call(mkt, &calls::configuration()).unwrap())
        .unwrap();
    let period = cfg.period;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    let data = DataServer::start(((per_request * slot_size) as usize).max(1 << 20));
    {
        let mut store = Store::open(&dir, Options::cli()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        use codex::sales::ledger::Ledger;
        store
            .create_availability(
                AvailabilityId::random(&mut fastrand::Rng::with_seed(9)),
                NewAvailability {
                    total_size: 2 * (n_slots + n_queued) as u64 * slot_size,
                    duration: 30 * 86_400,
                    min_price_per_byte_per_second: U256::from(1u8),
                    total_collateral: U256::from(2 * (n_slots + n_queued) as u64 * slot_size),
                    enabled: true,
                    until: 0,
                },
                Limits {
                    quota: codex::config::DEFAULT_STORAGE_QUOTA,
                    now,
                },
            )
            .unwrap();
    }
    let tap = Tap::start(
        anvil_addr(&chain),
        (ping_ms > 0).then(|| Duration::from_millis(ping_ms as u64)),
    );
    let mut node = NodeProc::start(
        &dir,
        &chain,
        &tap.ws_url(),
        &[
            "--data-source".to_string(),
            data.template(),
            "--max-workers".to_string(),
            workers.to_string(),
            "--queue-size".to_string(),
            (n_slots + n_queued + 128).to_string(),
        ],
    );
    let sampler = LoopSampler::start(node.pid());
    wait_until("the node connects", Duration::from_secs(60), || {
        node.check();
        node.log_text().contains("connected to")
    });
    let queue_url = format!("{}/sales/queue", node.api_base());

    // The requests.
    let client = chain.account(3);
    let host = chain.account(1);
    let reqs: Vec<Request> = (0..n_requests as u64)
        .map(|i| request(client, 50_000 + i, per_request, slot_size, 30 * 86_400 - 1))
        .collect();
    let price: U256 = reqs
        .iter()
        .map(|r| r.ask.price_per_slot() * U256::from(r.ask.slots))
        .fold(U256::ZERO, |a, b| a + b);
    c.send_all(client, &[(token, calls::approve(mkt, price))]);
    let posts: Vec<(Address, Vec<u8>)> = reqs
        .iter()
        .map(|r| (mkt, calls::request_storage(r)))
        .collect();
    c.send_all(client, &posts);
    let slot_ids: Vec<SlotId> = reqs
        .iter()
        .flat_map(|r| (0..per_request).map(move |i| SlotId::of(r.id(), i)))
        .collect();
    let slot_hex: HashSet<String> = slot_ids.iter().map(|s| hex::encode(s.as_bytes())).collect();
    let selector = hex::encode(&calls::submit_proof(slot_ids[0], &Groth16Proof::default())[..4]);

    // Fill: a block when the node has sent transactions and paused; the next period when
    // it is idle and every live sale waits for one (`GET /sales/live`: with hundreds of
    // workers a quiet socket may only mean downloads or proofs in progress, and a period
    // passing under them sends them round again), or after 5 s of quiet in any case.
    let t_fill = Instant::now();
    let mut jumps = 0;
    let max_jumps = env_usize(
        "CODEX_BENCH_FILL_PERIODS",
        20 + 4 * n_slots.div_ceil(workers),
    );
    let live_url = format!("{}/sales/live", node.api_base());
    let live_agent = agent();
    let mut live_checked = Instant::now();
    let all_wait_for_a_period = |agent: &ureq::Agent| -> bool {
        let Ok(mut resp) = agent.get(&live_url).call() else {
            return false;
        };
        let Ok(body) = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
        else {
            return false;
        };
        let Ok(Value::Array(sales)) = serde_json::from_str::<Value>(&body) else {
            return false;
        };
        sales
            .iter()
            .all(|s| s["waitingFor"].as_str() == Some("the next period"))
    };
    loop {
        node.check();
        let pool = c.pool();
        if pool > 0 {
            if tap.quiet_for(Duration::from_millis(15)) {
                c.mine();
            }
        } else if tap.quiet_for(Duration::from_millis(250))
            && (tap.quiet_for(Duration::from_secs(5))
                || (live_checked.elapsed() >= Duration::from_millis(250) && {
                    live_checked = Instant::now();
                    all_wait_for_a_period(&live_agent)
                }))
        {
            let filled = c.my_slots(host, mkt);
            if filled >= n_slots {
                break;
            }
            assert!(
                jumps < max_jumps,
                "only {filled} of {n_slots} slots filled after {jumps} periods"
            );
            let (_, ts) = latest(&mut c.rpc);
            c.mine_at((ts / period + 1) * period + 1);
            jumps += 1;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    println!(
        "filled {n_slots} slots in {:.1} s of wall time over {jumps} proof periods",
        t_fill.elapsed().as_secs_f64()
    );
    let (hwm, rss, threads) = node.memory();
    println!("node memory after the fill: VmHWM {hwm} KiB, VmRSS {rss} KiB, {threads} threads");
    println!("  {}", node.memory_map());

    if mining == "auto" {
        c.rpc.call("evm_setAutomine", json!([true])).unwrap();
    }
    if let Ok(limit) = std::env::var("CODEX_BENCH_GAS_LIMIT") {
        // A period's proofs in few blocks: 10,000 proofs of 80 k gas fill 27 blocks of 30 M,
        // and the base fee rises 12.5% per full block, past what the later ones offer.
        let limit: u64 = limit.parse().expect("CODEX_BENCH_GAS_LIMIT: a number");
        c.rpc
            .call("evm_setBlockGasLimit", json!([format!("{limit:#x}")]))
            .unwrap();
        println!("block gas limit from now on: {limit}");
    }
    // One period to bring every slot to Proving, then the measured ones.
    let mut fan_outs = Vec::new();
    let (mut quiet, mut loaded, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_pongs = Vec::new();
    let mut over_10ms = 0;
    for p in 0..=periods {
        let measured = p > 0;
        // Every other measured period with a client asking GET /sales/queue all along.
        let with_load = measured && p % 2 == 0;
        // Settle: the previous period's transactions mined, the node idle.
        let settle = Instant::now();
        loop {
            node.check();
            if mining == "interval" && c.pool() > 0 {
                c.mine();
                std::thread::sleep(Duration::from_millis(block_ms.min(200)));
                continue;
            }
            if tap.quiet_for(Duration::from_millis(300)) {
                break;
            }
            assert!(
                settle.elapsed() < Duration::from_secs(120),
                "the node does not settle"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let mark = tap.len();
        let cpu_before = node.cpu();
        let load = with_load.then(|| ApiLoad::start(queue_url.clone()));
        let (_, ts) = latest(&mut c.rpc);
        let start_ts = (ts / period + 1) * period + 1;
        let t_mine = Instant::now();
        c.mine_at(start_ts);
        let (block, _) = latest(&mut c.rpc);
        let budget = Duration::from_secs(period.saturating_sub(20).clamp(5, 100));
        let mut next_block = t_mine + Duration::from_millis(block_ms);
        let mut t_head = None;
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut from = mark;
        loop {
            node.check();
            let recs = tap.recs(from);
            from += recs.len();
            for r in &recs {
                if let What::Head(n) = r.what {
                    if n == block && t_head.is_none() {
                        t_head = Some(r.t);
                    }
                }
            }
            for (t, s) in proof_sends(&recs, &selector, &slot_hex) {
                seen.entry(s).or_insert(t);
            }
            if seen.len() >= n_slots || t_mine.elapsed() > budget {
                break;
            }
            if mining == "interval" && Instant::now() >= next_block {
                c.mine();
                next_block += Duration::from_millis(block_ms);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let t_head = t_head.expect("no newHeads notification for the period's block");
        let t_first = seen.values().min().copied().unwrap_or(t_head);
        let t_last = seen.values().max().copied().unwrap_or(t_head);
        let fan_out = t_last.saturating_duration_since(t_head);
        let api_load = load.map(|l| {
            let (done, failed) = l.finish();
            (per_second(&done, t_head, t_last), failed)
        });
        let (pongs, over) = pongs_summary(&tap, t_head, t_last);
        let max_pong = pongs.last().copied().unwrap_or_default();
        // Let the proofs be mined, then count them on chain. Every proof sent must be on
        // chain before the next period's block: anvil takes about 1 ms to admit each raw
        // transaction, so 10,000 sends reach its pool over seconds, and an empty pool
        // alone does not mean they were mined (a next period begun under them would count
        // them for that period).
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(60)
            && !(c.pool() == 0
                && tap.quiet_for(Duration::from_millis(300))
                && c.proofs_since(mkt, block) >= seen.len())
        {
            if mining == "interval" {
                c.mine();
                std::thread::sleep(Duration::from_millis(block_ms.min(200)));
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let on_chain = c.proofs_since(mkt, block);
        let node_cpu = node.cpu().saturating_sub(cpu_before);
        println!(
            "{} period {}: {} of {n_slots} slots sent a proof; head at proxy {} after mining it; first proof {}, last proof {} after the head; {on_chain} ProofSubmitted on chain; loop block max {} ({over} pongs > 10 ms)",
            if measured { "measured" } else { "warm-up " },
            start_ts / period,
            seen.len(),
            ms(t_head - t_mine),
            ms(t_first.saturating_duration_since(t_head)),
            ms(fan_out),
            ms(max_pong),
        );
        let (cpu, wait) = sampler.between(t_head, t_last);
        if let Some((rate, failed)) = api_load {
            println!("  with a client asking GET /sales/queue meanwhile: {rate:.0} requests/s during the fan-out ({failed} not 200)");
        }
        println!(
            "  node CPU for the period (all threads, from the period's block until its proofs were mined): {} = {:.2}% of one core over the {period} s period",
            ms(node_cpu),
            100.0 * node_cpu.as_secs_f64() / period as f64
        );
        println!(
            "  loop thread during the fan-out: on CPU {}, waiting for a CPU {}; late pongs: {}",
            ms(cpu),
            ms(wait),
            late_pongs_split(&tap, &sampler, t_head, t_last)
        );
        println!("  {}", node.slow_steps());
        if measured {
            assert_eq!(
                seen.len(),
                n_slots,
                "not every slot sent its proof within {budget:?}:\n{}",
                node.log_tail(40)
            );
            fan_outs.push(fan_out);
            match api_load {
                Some((rate, _)) => {
                    loaded.push(fan_out);
                    rates.push(rate);
                }
                None => quiet.push(fan_out),
            }
            all_pongs.extend(pongs);
            over_10ms += over;
        }
    }
    fan_outs.sort();
    let worst = *fan_outs.last().unwrap();
    println!(
        "fan-out of {n_slots} proofs: {}; worst {} = {:.2}% of the {period} s period (target < 5%: ratio {:.3})",
        summary(&mut fan_outs.clone()),
        ms(worst),
        100.0 * worst.as_secs_f64() / period as f64,
        worst.as_secs_f64() / (0.05 * period as f64)
    );
    if !loaded.is_empty() {
        let mean = |v: &[Duration]| {
            v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
        };
        println!(
            "fan-out without API clients: {}; with one asking GET /sales/queue: {} at {:.0} requests/s on average (mean fan-out ratio loaded/quiet {:.3})",
            summary(&mut quiet.clone()),
            summary(&mut loaded.clone()),
            rates.iter().sum::<f64>() / rates.len() as f64,
            mean(&loaded) / mean(&quiet).max(1e-9),
        );
    }
    if ping_ms > 0 {
        all_pongs.sort();
        println!(
            "loop block during the fan-outs (ping→pong, a ping every {ping_ms} ms): {}; {over_10ms} pongs later than 10 ms (target: none; max/10 ms = {:.2})",
            summary(&mut all_pongs.clone()),
            all_pongs.last().copied().unwrap_or_default().as_secs_f64() / 0.010
        );
    }
    println!();
    let (hwm, rss, threads) = node.memory();
    println!(
        "== 3. resident memory of the node with {n_slots} slots proving (/proc/{}/status)",
        node.pid()
    );
    println!(
        "VmHWM {hwm} KiB ({:.1} MiB), VmRSS {rss} KiB ({:.1} MiB), {threads} threads; target < 64 MiB: VmHWM/64 MiB = {:.2}",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / (64.0 * 1024.0)
    );
    println!("  {}", node.memory_map());
    if n_queued > 0 {
        // The same node with n_queued more slots waiting: requests of up to 50,000 slots whose
        // downloads stall, so the workers hold a few of them and the rest stay queued. One
        // hour long, so that the client's tokens pay for them all.
        data.set_mode(Mode::Stall);
        let per = 50_000u64;
        let big: Vec<Request> = (0..n_queued.div_ceil(per as usize) as u64)
            .map(|i| {
                let slots = per.min(n_queued as u64 - i * per);
                request(client, 90_000 + i, slots, slot_size, 3_600)
            })
            .collect();
        let price = big
            .iter()
            .map(|r| r.ask.price_per_slot() * U256::from(r.ask.slots))
            .fold(U256::ZERO, |a, b| a + b);
        c.send_all(client, &[(token, calls::approve(mkt, price))]);
        let posts: Vec<(Address, Vec<u8>)> = big
            .iter()
            .map(|r| (mkt, calls::request_storage(r)))
            .collect();
        let t_post = Instant::now();
        c.send_all(client, &posts);
        let status_url = format!("{}/sales/status", node.api_base());
        let http = agent();
        let mut length = 0;
        wait_until(
            "the node queues the new slots",
            Duration::from_secs(300),
            || {
                node.check();
                length = http
                    .get(&status_url)
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_to_string().ok())
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["queue"]["length"].as_u64())
                    .unwrap_or(0) as usize;
                length + workers >= n_queued
            },
        );
        let (hwm, rss, threads) = node.memory();
        println!(
            "with {length} items queued ({} s after the post) and the {n_slots} sales: VmHWM {hwm} KiB ({:.1} MiB), VmRSS {rss} KiB ({:.1} MiB), {threads} threads; target < 64 MiB: VmHWM/64 MiB = {:.2}",
            t_post.elapsed().as_secs(),
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0,
            hwm as f64 / (64.0 * 1024.0)
        );
        println!("  {}", node.memory_map());
    }
    println!();
}

// 4. The REST API.

/// An HTTP agent for the bench's API clients: kept-alive connections, no status as error.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// A client that GETs one URL over a kept-alive connection as fast as the node answers,
/// until finished; it notes when each 200 came back, and counts the other answers.
struct ApiLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<Instant>, usize)>>,
}

impl ApiLoad {
    fn start(url: String) -> ApiLoad {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let agent = agent();
            let (mut done, mut failed) = (Vec::new(), 0usize);
            while !flag.load(Ordering::Relaxed) {
                match agent.get(&url).call() {
                    Ok(mut r) => {
                        let ok = r.status().as_u16() == 200;
                        let body = r.body_mut().with_config().limit(256 << 20).read_to_vec();
                        if ok && body.is_ok() {
                            done.push(Instant::now());
                        } else {
                            failed += 1;
                        }
                    }
                    Err(_) => {
                        failed += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            (done, failed)
        });
        ApiLoad {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the client: when its answers came, and how many were not a 200.
    fn finish(mut self) -> (Vec<Instant>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for ApiLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Answers per second between `from` and `to`.
fn per_second(done: &[Instant], from: Instant, to: Instant) -> f64 {
    let n = done.iter().filter(|t| **t >= from && **t <= to).count();
    n as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-9)
}

fn api() {
    let n_avail = env_usize("CODEX_BENCH_API_AVAILABILITIES", 10_000);
    let n = env_usize("CODEX_BENCH_API_SAMPLES", 100);
    println!("== 4. REST API: GET /sales/availability with {n_avail} availabilities (target < 50 ms), one client on a kept-alive connection, {n} requests");
    let chain = Devchain::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    let data = DataServer::start(1 << 20);
    make_availabilities(&dir, n_avail);
    let mut node = NodeProc::start(
        &dir,
        &chain,
        &chain.ws_url(),
        &["--data-source".to_string(), data.template()],
    );
    wait_until("the node connects", Duration::from_secs(60), || {
        node.check();
        node.log_text().contains("connected to")
    });
    let base = node.api_base();
    let agent = agent();
    let url = format!("{base}/sales/availability");
    let warmup = 3;
    let (mut times, mut bytes) = (Vec::new(), 0);
    for i in 0..warmup + n {
        let t = Instant::now();
        let mut r = agent.get(&url).call().unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {url}");
        let body = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .unwrap();
        let d = t.elapsed();
        if i == 0 {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                v.as_array().map(Vec::len),
                Some(n_avail),
                "every availability listed"
            );
            bytes = body.len();
        }
        if i >= warmup {
            times.push(d);
        }
    }
    times.sort();
    let p99 = pct(&times, 0.99);
    println!(
        "GET /sales/availability ({bytes} bytes of JSON): {}; p99/50 ms = {:.3}",
        summary(&mut times.clone()),
        p99.as_secs_f64() / 0.050
    );
    let secs = env_usize("CODEX_BENCH_API_SECONDS", 3) as u64;
    let load = ApiLoad::start(format!("{base}/sales/queue"));
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let to = Instant::now();
    let (done, failed) = load.finish();
    println!(
        "GET /sales/queue on the idle node: {:.0} requests/s over {secs} s (one client, kept-alive; {failed} not 200)",
        per_second(&done, from, to)
    );
    node.check();
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let phases = env_str("CODEX_BENCH_PHASES", "reaction,proving,api");
    let ping_ms = env_usize("CODEX_BENCH_PING_MS", 2);
    let t = Instant::now();
    for phase in phases.split(',').map(str::trim) {
        match phase {
            "reaction" => reaction(ping_ms),
            "proving" => proving(ping_ms),
            "api" => api(),
            "" => {}
            other => panic!("unknown phase {other} in CODEX_BENCH_PHASES"),
        }
    }
    println!("done in {:.1} s", t.elapsed().as_secs_f64());
}

/// A timestamping WebSocket proxy: forwards whole frames both ways, notes when the frames
/// of interest pass, and pings the client to time its loop.
mod tap {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    /// What passed.
    #[derive(Debug, Clone)]
    pub enum What {
        /// A `newHeads` notification (to the node).
        Head(u64),
        /// A log notification (to the node); lowercase hex.
        Log { topic0: String, data: String },
        /// An answer (to the node), by JSON-RPC id.
        Response(String),
        /// A call (from the node); for `eth_sendRawTransaction`, the raw transaction.
        Call {
            id: String,
            method: String,
            raw: Option<String>,
        },
    }

    #[derive(Debug, Clone)]
    pub struct Rec {
        /// Which connection (in accept order).
        pub conn: usize,
        /// When the whole frame had arrived at the proxy (before it was forwarded).
        pub t: Instant,
        pub what: What,
    }

    const MAGIC: &[u8] = b"cxb";

    struct Conn {
        id: usize,
        client_w: Mutex<TcpStream>,
        client: TcpStream,
        upstream: TcpStream,
        upgraded: AtomicBool,
        closed: AtomicBool,
        pings: Mutex<HashMap<u64, Instant>>,
    }

    impl Conn {
        fn close(&self) {
            self.closed.store(true, Ordering::SeqCst);
            let _ = self.client.shutdown(Shutdown::Both);
            let _ = self.upstream.shutdown(Shutdown::Both);
        }
    }

    struct Shared {
        upstream: SocketAddr,
        epoch: Instant,
        recs: Mutex<Vec<Rec>>,
        /// (ping sent, delay until its pong arrived).
        pongs: Mutex<Vec<(Instant, Duration)>>,
        /// Nanoseconds after `epoch` of the last data frame from a client.
        last_up: AtomicU64,
        stop: AtomicBool,
        ping_every: Option<Duration>,
        conns: Mutex<Vec<Arc<Conn>>>,
        next_id: AtomicUsize,
    }

    /// The proxy; closes everything on drop.
    pub struct Tap {
        shared: Arc<Shared>,
        pub port: u16,
    }

    fn frame(buf: &[u8]) -> Option<(usize, u8, Vec<u8>)> {
        if buf.len() < 2 {
            return None;
        }
        let opcode = buf[0] & 0x0f;
        let masked = buf[1] & 0x80 != 0;
        let (len, mut at) = match buf[1] & 0x7f {
            126 => (
                u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let mask = if masked {
            let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            at += 4;
            Some(m)
        } else {
            None
        };
        let payload = buf.get(at..at + len)?;
        let payload = match mask {
            Some(m) => payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ m[i % 4])
                .collect(),
            None => payload.to_vec(),
        };
        Some((at + len, opcode, payload))
    }

    fn header_end(buf: &[u8]) -> Option<usize> {
        buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
    }

    fn items(v: Value) -> Vec<Value> {
        match v {
            Value::Array(a) => a,
            v => vec![v],
        }
    }

    fn lower(v: &Value) -> String {
        v.as_str().unwrap_or("").to_ascii_lowercase()
    }

    fn classify_down(payload: &[u8]) -> Vec<What> {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return vec![];
        };
        let mut out = Vec::new();
        for v in items(v) {
            if v["method"] == "eth_subscription" {
                let r = &v["params"]["result"];
                if let Some(topics) = r["topics"].as_array() {
                    out.push(What::Log {
                        topic0: topics.first().map(lower).unwrap_or_default(),
                        data: lower(&r["data"]),
                    });
                } else if let Some(n) = r["number"].as_str() {
                    if let Ok(n) = u64::from_str_radix(n.trim_start_matches("0x"), 16) {
                        out.push(What::Head(n));
                    }
                }
            } else if v.get("id").is_some()
                && (v.get("result").is_some() || v.get("error").is_some())
            {
                out.push(What::Response(v["id"].to_string()));
            }
        }
        out
    }

    fn classify_up(payload: &[u8]) -> Vec<What> {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return vec![];
        };
        items(v)
            .into_iter()
            .filter_map(|v| {
                let method = v["method"].as_str()?.to_string();
                let raw = (method == "eth_sendRawTransaction").then(|| lower(&v["params"][0]));
                Some(What::Call {
                    id: v["id"].to_string(),
                    method,
                    raw,
                })
            })
            .collect()
    }

    impl Tap {
        /// A proxy on a free loopback port in front of `upstream`; with `ping_every`, each
        /// client is pinged that often.
        pub fn start(upstream: SocketAddr, ping_every: Option<Duration>) -> Tap {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
            let port = listener.local_addr().unwrap().port();
            let shared = Arc::new(Shared {
                upstream,
                epoch: Instant::now(),
                recs: Mutex::new(Vec::new()),
                pongs: Mutex::new(Vec::new()),
                last_up: AtomicU64::new(0),
                stop: AtomicBool::new(false),
                ping_every,
                conns: Mutex::new(Vec::new()),
                next_id: AtomicUsize::new(0),
            });
            let s = shared.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(upstream) = TcpStream::connect(s.upstream) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let conn = Arc::new(Conn {
                        id: s.next_id.fetch_add(1, Ordering::SeqCst),
                        client_w: Mutex::new(client.try_clone().unwrap()),
                        client: client.try_clone().unwrap(),
                        upstream: upstream.try_clone().unwrap(),
                        upgraded: AtomicBool::new(false),
                        closed: AtomicBool::new(false),
                        pings: Mutex::new(HashMap::new()),
                    });
                    s.conns.lock().unwrap().push(conn.clone());
                    let (s1, c1) = (s.clone(), conn.clone());
                    std::thread::spawn(move || down(s1, c1, upstream));
                    let (s2, c2) = (s.clone(), conn.clone());
                    std::thread::spawn(move || up(s2, c2, client));
                    if let Some(every) = s.ping_every {
                        let (s3, c3) = (s.clone(), conn);
                        std::thread::spawn(move || pinger(s3, c3, every));
                    }
                }
            });
            Tap { shared, port }
        }

        pub fn ws_url(&self) -> String {
            format!("ws://127.0.0.1:{}", self.port)
        }

        /// Records so far.
        pub fn len(&self) -> usize {
            self.shared.recs.lock().unwrap().len()
        }

        /// The records from index `from` on.
        pub fn recs(&self, from: usize) -> Vec<Rec> {
            let r = self.shared.recs.lock().unwrap();
            r.get(from..).map(|s| s.to_vec()).unwrap_or_default()
        }

        /// Whether no client sent a data frame for `d`.
        pub fn quiet_for(&self, d: Duration) -> bool {
            let last = Duration::from_nanos(self.shared.last_up.load(Ordering::SeqCst));
            self.shared.epoch.elapsed().saturating_sub(last) >= d
        }

        /// Ping-to-pong delays of the pings sent between `from` and `to`.
        /// (ping sent, delay) of the pings sent between `from` and `to`.
        pub fn pong_pairs_between(&self, from: Instant, to: Instant) -> Vec<(Instant, Duration)> {
            self.shared
                .pongs
                .lock()
                .unwrap()
                .iter()
                .filter(|(sent, _)| *sent >= from && *sent <= to)
                .copied()
                .collect()
        }

        pub fn pongs_between(&self, from: Instant, to: Instant) -> Vec<Duration> {
            self.shared
                .pongs
                .lock()
                .unwrap()
                .iter()
                .filter(|(sent, _)| *sent >= from && *sent <= to)
                .map(|(_, d)| *d)
                .collect()
        }
    }

    impl Drop for Tap {
        fn drop(&mut self) {
            self.shared.stop.store(true, Ordering::SeqCst);
            for c in self.shared.conns.lock().unwrap().drain(..) {
                c.close();
            }
            let _ = TcpStream::connect(("127.0.0.1", self.port));
        }
    }

    fn push(s: &Shared, conn: usize, t: Instant, what: Vec<What>) {
        if what.is_empty() {
            return;
        }
        let mut r = s.recs.lock().unwrap();
        r.extend(what.into_iter().map(|what| Rec { conn, t, what }));
    }

    /// anvil → node.
    fn down(s: Arc<Shared>, conn: Arc<Conn>, mut upstream: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match upstream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Acknowledge at once, as the node does on its own connection (src/chain/ws.rs):
            // the tap must not add the delayed ACK that anvil's unbuffered answers would meet.
            #[cfg(target_os = "linux")]
            let _ = rustix::net::sockopt::set_tcp_quickack(&upstream, true);
            buf.extend_from_slice(&chunk[..n]);
            if !conn.upgraded.load(Ordering::SeqCst) {
                let Some(end) = header_end(&buf) else {
                    continue;
                };
                if conn
                    .client_w
                    .lock()
                    .unwrap()
                    .write_all(&buf[..end])
                    .is_err()
                {
                    break;
                }
                buf.drain(..end);
                conn.upgraded.store(true, Ordering::SeqCst);
            }
            let mut at = 0;
            while let Some((len, opcode, payload)) = frame(&buf[at..]) {
                let t = Instant::now();
                if conn
                    .client_w
                    .lock()
                    .unwrap()
                    .write_all(&buf[at..at + len])
                    .is_err()
                {
                    conn.close();
                    return;
                }
                at += len;
                if opcode == 1 {
                    push(&s, conn.id, t, classify_down(&payload));
                }
            }
            buf.drain(..at);
        }
        conn.close();
    }

    /// node → anvil.
    fn up(s: Arc<Shared>, conn: Arc<Conn>, mut client: TcpStream) {
        let mut upstream = conn.upstream.try_clone().unwrap();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut upgraded = false;
        loop {
            let n = match client.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if !upgraded {
                let Some(end) = header_end(&buf) else {
                    continue;
                };
                if upstream.write_all(&buf[..end]).is_err() {
                    break;
                }
                buf.drain(..end);
                upgraded = true;
            }
            let mut at = 0;
            while let Some((len, opcode, payload)) = frame(&buf[at..]) {
                let t = Instant::now();
                if opcode == 0xA && payload.starts_with(MAGIC) && payload.len() == MAGIC.len() + 8 {
                    // Our ping's pong: not forwarded.
                    let seq = u64::from_be_bytes(payload[MAGIC.len()..].try_into().unwrap());
                    if let Some(sent) = conn.pings.lock().unwrap().remove(&seq) {
                        s.pongs.lock().unwrap().push((sent, t - sent));
                    }
                    at += len;
                    continue;
                }
                if upstream.write_all(&buf[at..at + len]).is_err() {
                    conn.close();
                    return;
                }
                at += len;
                if opcode == 1 {
                    s.last_up
                        .store(s.epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
                    push(&s, conn.id, t, classify_up(&payload));
                }
            }
            buf.drain(..at);
        }
        conn.close();
    }

    /// Pings the client every `every` once the connection is upgraded.
    fn pinger(s: Arc<Shared>, conn: Arc<Conn>, every: Duration) {
        let mut seq = 0u64;
        while !conn.closed.load(Ordering::SeqCst) && !s.stop.load(Ordering::SeqCst) {
            std::thread::sleep(every);
            if !conn.upgraded.load(Ordering::SeqCst) {
                continue;
            }
            seq += 1;
            let mut f = vec![0x89, (MAGIC.len() + 8) as u8];
            f.extend_from_slice(MAGIC);
            f.extend_from_slice(&seq.to_be_bytes());
            let mut w = conn.client_w.lock().unwrap();
            conn.pings.lock().unwrap().insert(seq, Instant::now());
            if w.write_all(&f).is_err() {
                return;
            }
        }
    }
}
