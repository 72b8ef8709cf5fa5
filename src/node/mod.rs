//! The node (`codex run`): one thread runs a mio loop that owns all state and drives the
//! sales engine (see `docs/architecture.md`).
//!
//! What the loop owns:
//! - the [`ChainClient`] (one WebSocket: Marketplace log and `newHeads` subscriptions,
//!   backfill from the persisted cursor after every (re)connect, and every view call and
//!   transaction, pipelined);
//! - the [`Engine`] over the SQLite [`Store`] (the ledger is a synchronous port: a
//!   reservation is committed inside the engine's step);
//! - the [`TxBook`] (transactions in flight, sans-IO);
//! - the pending view batches (one engine question = a few `eth_call`s at `pending`);
//! - the [`Workers`] (downloads and proofs on threads; results come back through a channel
//!   and a [`Waker`]);
//! - with `--validator`, the [`Validator`] core (`validating.rs` wires it in: its views go
//!   out as JSON-RPC batches, its marks through the same [`TxBook`]);
//! - SIGINT/SIGTERM through `signal-hook-mio`, and a one-second wall-clock tick that checks
//!   `PRAGMA data_version` so that an availability changed by the CLI is seen.
//!
//! Chain time is the latest block's timestamp: the engine's timers fire on new heads.
//!
//! The loop: wait for readiness until the earliest wall-clock deadline (the client's, or the
//! tick), feed what arrived (frames, worker results, signals) to the core, execute what the
//! core asks for, repeat. Nothing in the loop waits on the network or a disk other than the
//! SQLite commits of the ledger.

mod api;
pub mod data;
mod history;
pub mod prover;
mod validating;
pub mod workers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, B256, U256};
use mio::{Registry, Waker};
use serde_json::{json, Value};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::api::http;
use crate::chain::client::{BlockingClient, ChainClient, ClientConfig, ClientOutput, Follow};
use crate::chain::event_loop::{EventLoop, CHAIN, FIRST_FREE};
use crate::chain::key::EthPrivateKey;
use crate::chain::rpc::{parse_logs, quantity_of as quantity, CallId, Log};
use crate::chain::tx::GasCall;
use crate::chain::ws::Endpoint;
use crate::chain::ChainError;
use crate::market::events::{decode_log, RpcLog};
use crate::market::{calls, short, MarketEvent, Request, RequestId, RequestState, SlotId};
use crate::sales::engine::{
    Command, Engine, EngineConfig, EngineInput, FreedSlotInfo, SaleCommand, Ticket,
};
use crate::sales::sale::{ChainError as SaleChainError, Input, ProofView, SlotRef, SlotView, Tx};
use crate::sales::ChainTime;
use crate::store::{Options, Store, StoreError};
use crate::validator::{Validator, ValidatorConfig, ValidatorOptions};

use crate::chain::txbook::{TxAction, TxBook, TxCall, TxFailure, TxRequest};
use crate::market::errors::MarketError;
use crate::sales::sale::{Revert, TxError};
use data::{DataSource, DownloadJob};
use prover::{ProofJob, SimulatedProver};
use workers::{Done, Job, Workers};

/// Blocks per `eth_getLogs` query.
const MAX_RANGE: u64 = 1000;
/// Wall-clock tick: availability changes made by the CLI are noticed within it.
const TICK: Duration = Duration::from_secs(1);
/// How often the store's background thread checkpoints the database (`store::behind`).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The most worker threads (downloads, proofs), whatever `--max-workers` (the engine's
/// budget of sales preparing at once) says: jobs beyond them wait in the pool's channel. With
/// a thread per worker, 300 workers cost 300 threads and their allocator heaps (188 MiB
/// resident with 3,000 slots, `cargo bench --bench node`).
const MAX_THREADS: usize = 16;
/// Requests kept in the view cache (a request never changes once posted).
const REQUEST_CACHE: usize = 4096;
/// The most a loop turn spends on queued work before it polls its sockets again: long
/// bursts (a period's first block wakes every proving sale) are spread over turns so that
/// the connection keeps being read and pings answered.
const TURN_BUDGET: Duration = Duration::from_millis(2);
/// A single step of the loop (one chain output, one command, ...) that took longer than this
/// is logged at debug, with what it was: the loop should never be blocked for this long.
const SLOW_STEP: Duration = Duration::from_millis(10);

/// What an engine command is, for [`slow_step`].
fn command_kind(c: &Command) -> &'static str {
    match c {
        Command::Sale(_, s) => match s {
            SaleCommand::ReadSlot(_) => "the command ReadSlot",
            SaleCommand::ReadProof(_) => "the command ReadProof",
            SaleCommand::CanReserve(_) => "the command CanReserve",
            SaleCommand::Send(_) => "the command Send",
            SaleCommand::Download { .. } => "the command Download",
            SaleCommand::Prove { .. } => "the command Prove",
            SaleCommand::UpdateExpiry { .. } => "the command UpdateExpiry",
            SaleCommand::Filled(_) => "the command Filled",
        },
        Command::ReleaseData(_) => "the command ReleaseData",
        Command::ReadRequestState(_) => "the command ReadRequestState",
        Command::LookupFreedSlot { .. } => "the command LookupFreedSlot",
        Command::Ended(_) => "the command Ended",
        Command::Recheck(_) => "the command Recheck",
    }
}

/// Logs a loop step that started at `t` and took longer than [`SLOW_STEP`].
fn slow_step(what: &str, t: Instant) {
    let took = t.elapsed();
    if took >= SLOW_STEP {
        log::debug!(target: "codex::node", "the loop was busy {} ms with {what}", took.as_millis());
    }
}
/// How long start-up waits for transactions of an earlier run to be mined.
const PENDING_WAIT: Duration = Duration::from_secs(120);

/// What `codex run` was given, validated.
pub struct NodeConfig {
    /// The data directory (database and slot data).
    pub data_dir: PathBuf,
    /// The Ethereum node.
    pub provider: Endpoint,
    /// Call timeout.
    pub timeout: Duration,
    /// Confirmations a transaction needs.
    pub confirmations: u64,
    /// The Marketplace, if configured.
    pub marketplace: Option<Address>,
    /// The host's key.
    pub key: EthPrivateKey,
    /// The storage quota.
    pub quota: u64,
    /// Queue capacity.
    pub queue_size: usize,
    /// Worker budget.
    pub max_workers: usize,
    /// Where slot data comes from. None (only with the validator on): the node sells
    /// nothing; sales it already holds carry on.
    pub data_source: Option<Arc<DataSource>>,
    /// The validator's options (None: the validator is off).
    pub validator: Option<ValidatorOptions>,
    /// Every Nth proof fails on purpose (0: off).
    pub simulate_proof_failures: u32,
    /// Where payouts go (default: the host).
    pub reward_recipient: Option<Address>,
    /// The first block to read on a first start.
    pub from_block: Option<u64>,
    /// How long a download may receive nothing before the attempt fails.
    pub download_timeout: Duration,
    /// The REST API.
    pub api: ApiConfig,
    /// Where the Prometheus metrics are served (None: off).
    pub metrics: Option<std::net::SocketAddr>,
}

/// The REST API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where it listens.
    pub bind: std::net::SocketAddr,
    /// The `Access-Control-Allow-Origin` to send (None: no CORS headers).
    pub cors_origin: Option<String>,
}

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The chain is not what it should be (wrong chain, no contract), or unreachable.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another `codex run` holds the data directory.
    #[error("another codex run is using the data directory {0} (it holds {0}/node.lock)")]
    Locked(String),
    /// The engine refused its configuration.
    #[error("{0}")]
    Config(String),
    /// The operating system refused something (poll, threads, signals, files).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// Whom a transaction answers: a sale, or the validator's mark of (slot, period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TxTag {
    Sale(Ticket),
    Mark(crate::market::SlotId, u64),
}

/// What a call answers.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Batch(u64, usize),
    Tx(TxCall),
    /// `slotState` of a slot the validator saw filled.
    ValidatorSlotState(crate::market::SlotId),
    /// `canMarkProofAsMissing(slot, period)`.
    CanMark(crate::market::SlotId, u64),
    RequestState(RequestId),
    /// A call asked ahead of a reservation (see [`Ahead`]).
    Ahead(SlotRef, AheadCall),
    FeeHistory,
    EthBalance,
    TokenBalance,
}

/// Which call of a reservation was asked ahead.
#[derive(Debug, Clone, Copy)]
enum AheadCall {
    CanReserve,
    Estimate,
}

/// The two calls a reservation makes after its slot view, `canReserveSlot` and the
/// `reserveSlot` gas estimate, asked together with the view: neither depends on the view's
/// answers or on the ledger, so the reserveSlot goes out one round trip after the
/// notification instead of three. An answer is used only while the newest block known is the
/// one it was asked at; otherwise (or when it failed, or has not come yet) the call is made
/// when the sale needs it.
#[derive(Debug)]
struct Ahead {
    /// [`Node::known`] when asked.
    known: u64,
    can_reserve: Option<bool>,
    estimate: Option<u64>,
}

/// The most reservations asked ahead at once; beyond it the memory is dropped (the calls are
/// then made when needed).
const AHEAD_MAX: usize = 1024;

#[derive(Debug)]
enum BatchKind {
    /// A slot view; the request when it is cached (then the batch has no getRequest call).
    Slot(Ticket, Option<Arc<Request>>),
    Proof(Ticket),
    CanReserve(Ticket),
    Freed(RequestId, u64),
    /// A slot view read again after a reorganisation (always with getRequest).
    Recheck(Ticket),
}

struct Batch {
    kind: BatchKind,
    results: Vec<Option<Result<Bytes, ChainError>>>,
    missing: usize,
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(cfg: NodeConfig) -> Result<(), NodeError> {
    // Signals first, so that an interrupt while connecting is not lost.
    let signals = Signals::new([SIGINT, SIGTERM]).map_err(io("installing signal handlers"))?;
    let mut lp = EventLoop::new()
        .and_then(|lp| lp.with_signals(signals))
        .map_err(io("creating the event loop"))?;
    // Connect first (retrying while the provider is down) and verify the chain, so that a
    // wrong chain or address leaves no files behind.
    let Some(mut rpc) = connect(&cfg, &mut lp)? else {
        log::info!(target: "codex::node", "stopped before the node started");
        return Ok(());
    };
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| {
        NodeError::Store(StoreError::CreateDir {
            path: cfg.data_dir.clone(),
            source,
        })
    })?;
    let lock_path = cfg.data_dir.join("node.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(NodeError::Locked(cfg.data_dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(io(format!("locking {}", lock_path.display()))(e))
        }
    }
    // The API's port is taken before the chain work starts, so a port in use fails at once.
    let mut api_server = http::Server::bind(
        cfg.api.bind,
        lp.registry(),
        FIRST_FREE,
        http::Limits::default(),
    )
    .map_err(io(format!(
        "listening for the REST API on {}",
        cfg.api.bind
    )))?;
    log::info!(target: "codex::restapi", "REST API on http://{}{}", api_server.local_addr(), crate::api::rest::BASE);
    let mut metrics_server = match cfg.metrics {
        Some(addr) => {
            let limits = http::Limits {
                max_connections: 16,
                ..http::Limits::default()
            };
            let s = http::Server::bind(addr, lp.registry(), FIRST_FREE + 1000, limits)
                .map_err(io(format!("listening for metrics on {addr}")))?;
            log::info!(target: "codex::metrics", "metrics on http://{}/metrics", s.local_addr());
            Some(s)
        }
        None => None,
    };
    let mut store = Store::open(&cfg.data_dir, Options::node())?;
    let waker: Arc<Waker> = lp.waker().map_err(io("creating the waker"))?;
    // The disk's waits (fdatasync, checkpoints) run on their own thread, not in the loop;
    // transactions wait for the commits before them to be durable (`store::behind`). The
    // thread stops, after a last sync, when the node returns.
    let wake = waker.clone();
    let _syncer = match store.write_behind(
        CHECKPOINT_EVERY,
        Box::new(move || {
            let _ = wake.wake();
        }),
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!(target: "codex::store", "{e}; every commit waits for the disk instead");
            None
        }
    };
    // A connection lost during start-up starts it over on a new one.
    let start = loop {
        match start_up(&cfg, rpc, &mut store, &mut lp) {
            Ok(Some(start)) => break start,
            Ok(None) => {
                log::info!(target: "codex::node", "stopped before the node started");
                return Ok(());
            }
            Err(NodeError::Chain(e)) if is_transient(&e) => {
                log::warn!(target: "codex::chain", "{e}; starting over");
                match connect(&cfg, &mut lp)? {
                    Some(r) => rpc = r,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let (mut engine, report) = Engine::start(
        EngineConfig {
            queue_capacity: cfg.queue_size,
            max_workers: cfg.max_workers,
            sale: crate::sales::sale::SaleConfig {
                period: start.config.period,
                downtime: start.config.downtime,
                repair_reward_percentage: start.config.repair_reward_percentage,
                signer: cfg.key.address(),
                simulate_proof_failures: cfg.simulate_proof_failures,
                ..Default::default()
            },
        },
        store,
        fastrand::Rng::new(),
        &start.my_slots,
        ChainTime(start.now),
    )
    .map_err(|e| NodeError::Config(e.to_string()))?;
    log::info!(
        target: "codex::sales",
        "restored {} hosted slots ({} with their reservation); ended {} reservations no slot holds",
        report.resumed,
        report.with_reservation,
        report.ended_reservations
    );
    if cfg.data_source.is_some() {
        for ev in start.open_requests {
            engine.handle(ChainTime(start.now), EngineInput::Event(ev));
        }
    } else {
        log::info!(target: "codex::node", "no --data-source: the node sells no storage (sales it already holds carry on)");
    }
    let validator = cfg.validator.map(|options| {
        let mut v = Validator::new(ValidatorConfig {
            options,
            period: start.config.period,
            timeout: start.config.timeout,
        });
        for ev in &start.validator_history {
            validating::feed(&mut v, ev);
        }
        log::info!(
            target: "codex::validator",
            "validator on: {}, at most {}; {} slots seen filled in the history, checking which are still filled",
            match options.groups {
                Some(g) => format!("slots of group {} of {}", g.index(), g.count()),
                None => "every slot".to_string(),
            },
            match options.max_slots {
                0 => "any number watched".to_string(),
                n => format!("{n} watched"),
            },
            v.stats().candidates
        );
        v
    });

    let threads = cfg.max_workers.min(MAX_THREADS);
    let workers = Workers::start(threads, Arc::new(SimulatedProver), waker.clone())
        .map_err(io("starting worker threads"))?;

    let mut client_cfg = ClientConfig::new(cfg.provider.clone());
    client_cfg.call_timeout = cfg.timeout;
    client_cfg.connect_timeout = cfg.timeout;
    client_cfg.keepalive = cfg.timeout;
    client_cfg.backoff_max = Duration::from_secs(30).max(cfg.timeout);
    client_cfg.follow = Some(Follow {
        address: start.marketplace,
        from_block: start.from_block,
        to_block: None,
        max_range: MAX_RANGE,
    });
    let client = ChainClient::new(client_cfg, CHAIN, Instant::now(), fastrand::Rng::new());
    let (queue_size, max_workers) = (cfg.queue_size, cfg.max_workers);
    let data_version = data_version(engine.ledger());
    let mut node = Node {
        cfg,
        engine,
        client,
        txs: TxBook::new(start.key, start.chain_id, start.confirmations, start.head),
        validator,
        validator_rewards: U256::ZERO,
        marketplace: start.marketplace,
        token: start.token,
        now: start.now,
        head: start.head,
        known: start.head,
        calls: HashMap::new(),
        batches: HashMap::new(),
        next_batch: 0,
        requests: HashMap::new(),
        workers,
        downloads: HashMap::new(),
        open: HashMap::new(),
        data_version,
        next_tick: Instant::now() + TICK,
        hashes: HashMap::new(),
        tx_actions: Vec::new(),
        held_sends: std::collections::VecDeque::new(),
        reserving: HashMap::new(),
        ahead: HashMap::new(),
        received: HashMap::new(),
        chain_id: start.chain_id,
        market_config: start.config.clone(),
        recent: std::collections::VecDeque::new(),
        connected_at: Some(Instant::now()),
        last_head_at: Some(Instant::now()),
        balances: (None, None),
        next_balances: Instant::now(),
        metrics: crate::metrics::NodeMetrics::new(queue_size, max_workers),
        proving: std::collections::HashSet::new(),
        repaying: std::collections::HashSet::new(),
        own_reservation: std::collections::HashSet::new(),
        processed: start.head,
        cursor_due: None,
    };
    let mut more = node.pump(lp.registry());
    loop {
        // With work left over, only look at the sockets and come straight back.
        let http_busy = api_server.has_pending_work()
            || metrics_server
                .as_ref()
                .is_some_and(|m| m.has_pending_work());
        let until = if more || http_busy {
            Instant::now()
        } else {
            [
                Some(node.next_tick),
                api_server.next_deadline(),
                metrics_server.as_ref().and_then(|m| m.next_deadline()),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(node.next_tick)
        };
        let started = Instant::now();
        let turn = lp
            .turn(&mut node.client, Some(until))
            .map_err(io("waiting for events"))?;
        if turn.client >= SLOW_STEP {
            log::debug!(target: "codex::node", "the loop was busy {} ms with the chain socket", turn.client.as_millis());
        }
        let t = Instant::now();
        node.serve(
            lp.registry(),
            lp.others(),
            &mut api_server,
            &mut metrics_server,
        );
        slow_step("the REST API", t);
        more = node.pump(lp.registry());
        if Instant::now() >= node.next_tick {
            node.next_tick = Instant::now() + TICK;
            let t = Instant::now();
            node.check_availabilities();
            node.read_balances(lp.registry());
            slow_step("the one-second tick", t);
            more |= node.pump(lp.registry());
        }
        let busy = started.elapsed().saturating_sub(turn.waited);
        if busy >= SLOW_STEP {
            log::debug!(target: "codex::node", "the loop was busy {} ms with one turn", busy.as_millis());
        }
        if let Some(s) = turn.signal {
            let name = if s == SIGINT { "SIGINT" } else { "SIGTERM" };
            log::info!(target: "codex::node", "{name} received; stopping (live sales resume on the next start)");
            node.engine.handle(ChainTime(node.now), EngineInput::Pause);
            node.workers.shutdown();
            for (_, c) in node.downloads.values() {
                c.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            node.client.shutdown(lp.registry());
            return Ok(());
        }
    }
}

/// What start-up found.
struct Start {
    key: EthPrivateKey,
    chain_id: u64,
    confirmations: u64,
    marketplace: Address,
    token: Address,
    config: crate::market::MarketplaceConfig,
    now: u64,
    head: u64,
    from_block: u64,
    my_slots: Vec<(RequestId, u64)>,
    open_requests: Vec<MarketEvent>,
    /// With the validator on: the fills, frees and request ends before `from_block`.
    validator_history: Vec<MarketEvent>,
}

/// Connects, retrying with backoff while the provider cannot be reached, and verifies the
/// chain; None when a signal came first.
fn connect(
    cfg: &NodeConfig,
    lp: &mut EventLoop,
) -> Result<Option<(BlockingClient, u64, Address)>, NodeError> {
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt =
            BlockingClient::connect_to(cfg.provider.clone(), cfg.timeout).and_then(|mut rpc| {
                let (chain_id, marketplace) = rpc.verify(None, cfg.marketplace)?;
                Ok((rpc, chain_id, marketplace))
            });
        match attempt {
            Ok(v) => return Ok(Some(v)),
            Err(
                e @ (ChainError::Unreachable { .. }
                | ChainError::Disconnected(_)
                | ChainError::Timeout { .. }),
            ) => {
                log::warn!(target: "codex::chain", "{e}; retrying in {} ms", delay.as_millis())
            }
            Err(e) => return Err(e.into()),
        }
        // Wait for the backoff, or a signal.
        let until = Instant::now() + delay;
        if lp
            .wait_for_signal(until)
            .map_err(io("waiting to reconnect"))?
            .is_some()
        {
            return Ok(None);
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Errors that a new connection may cure.
fn is_transient(e: &ChainError) -> bool {
    matches!(
        e,
        ChainError::Unreachable { .. } | ChainError::Disconnected(_) | ChainError::Timeout { .. }
    )
}

/// Reads what the node needs before its loop starts.
fn start_up(
    cfg: &NodeConfig,
    (mut rpc, chain_id, marketplace): (BlockingClient, u64, Address),
    store: &mut Store,
    lp: &mut EventLoop,
) -> Result<Option<Start>, NodeError> {
    let me = cfg.key.address();
    let config = calls::decode_configuration(&rpc.eth_call(marketplace, &calls::configuration())?)
        .map_err(|e| bad("configuration", e))?;
    let token = calls::decode_token(&rpc.eth_call(marketplace, &calls::token())?)
        .map_err(|e| bad("token", e))?;
    let latest = rpc.call("eth_getBlockByNumber", json!(["latest", false]))?;
    let head =
        quantity(&latest["number"]).ok_or_else(|| bad("eth_getBlockByNumber", "no number"))?;
    let now = quantity(&latest["timestamp"])
        .ok_or_else(|| bad("eth_getBlockByNumber", "no timestamp"))?;
    log::info!(
        target: "codex::node",
        "chain {chain_id} at block {head}; Marketplace {marketplace}, token {token}, proof period {} s; host {me}",
        config.period
    );
    // Requests still open were announced at most requestDurationLimit ago (expiry < duration
    // ≤ that limit): the window that a start must read to find them all.
    let window_start = first_block_after(
        &mut rpc,
        head,
        now.saturating_sub(config.request_duration_limit),
    )?;
    let cursor = store.cursor()?;
    let from_block = match (cursor, cfg.from_block) {
        (Some((b, _)), _) => b + 1,
        (None, Some(b)) => b,
        (None, None) => window_start,
    };
    log::info!(target: "codex::node", "reading Marketplace events from block {from_block}");
    // After a restart, requests announced before the cursor that are still open go back
    // into the queue (the queue lives in memory).
    let mut open_requests = Vec::new();
    if from_block > window_start {
        let sig = {
            use alloy_sol_types::SolEvent;
            crate::market::abi::Marketplace::StorageRequested::SIGNATURE_HASH
        };
        let mut b = window_start;
        while b < from_block {
            let to = (b + MAX_RANGE - 1).min(from_block - 1);
            let v = rpc.call(
                "eth_getLogs",
                json!([{"address": marketplace, "fromBlock": format!("{b:#x}"), "toBlock": format!("{to:#x}"), "topics": [sig]}]),
            )?;
            for l in parse_logs(&v).map_err(|e| bad("eth_getLogs", e))? {
                let Ok(d) = decode_log(&to_rpc_log(&l)) else {
                    continue;
                };
                if let MarketEvent::StorageRequested {
                    request_id, expiry, ..
                } = &d.event
                {
                    if *expiry <= now {
                        continue;
                    }
                    let st = rpc.eth_call(marketplace, &calls::request_state(*request_id));
                    if let Ok(Ok(RequestState::New)) = st.map(|d| calls::decode_request_state(&d)) {
                        open_requests.push(d.event);
                    }
                }
            }
            b = to + 1;
        }
    }
    // Transactions sent before a restart that are still in the pool would change what we
    // host after we looked (a fillSlot mined later would be a slot without a sale): wait
    // until they are mined, or dropped, first.
    let started = Instant::now();
    loop {
        let count = |rpc: &mut BlockingClient, tag: &str| -> Result<u64, NodeError> {
            let v = rpc.call("eth_getTransactionCount", json!([me, tag]))?;
            quantity(&v).ok_or_else(|| bad("eth_getTransactionCount", v))
        };
        let (mined, pending) = (count(&mut rpc, "latest")?, count(&mut rpc, "pending")?);
        if pending <= mined {
            break;
        }
        if started.elapsed() > PENDING_WAIT {
            log::warn!(
                target: "codex::node",
                "{} transactions sent before the restart are still not mined after {} s; starting anyway",
                pending - mined,
                PENDING_WAIT.as_secs()
            );
            break;
        }
        log::info!(
            target: "codex::node",
            "waiting for {} transactions sent before the restart to be mined",
            pending - mined
        );
        let until = Instant::now() + Duration::from_secs(1);
        if lp
            .wait_for_signal(until)
            .map_err(io("waiting for pending transactions"))?
            .is_some()
        {
            return Ok(None);
        }
    }
    // The slots we host, to resume their sales.
    let slots = rpc.call(
        "eth_call",
        json!([{"from": me, "to": marketplace, "data": Bytes::from(calls::my_slots())}, "latest"]),
    )?;
    let slots = hex_bytes(&slots).ok_or_else(|| bad("mySlots", "not hex"))?;
    let slot_ids = calls::decode_my_slots(&slots).map_err(|e| bad("mySlots", e))?;
    let mut my_slots = Vec::new();
    for sid in slot_ids {
        let d = rpc.eth_call(marketplace, &calls::get_active_slot(sid))?;
        let (request, index) =
            calls::decode_get_active_slot(&d).map_err(|e| bad("getActiveSlot", e))?;
        my_slots.push((request.id(), index));
    }
    forfeit_lost_slots(
        cfg,
        &mut rpc,
        marketplace,
        token,
        store,
        &my_slots,
        window_start,
    )?;
    // The validator learns the slots filled before the cursor from the same window (a slot
    // still filled belongs to a request posted within it).
    let validator_history = match cfg.validator {
        Some(_) if from_block > window_start => {
            validating::history(&mut rpc, marketplace, window_start, from_block)?
        }
        _ => Vec::new(),
    };
    Ok(Some(Start {
        key: cfg.key.clone(),
        chain_id,
        confirmations: cfg.confirmations,
        marketplace,
        token,
        config,
        now,
        head,
        from_block,
        my_slots,
        open_requests,
        validator_history,
    }))
}

/// Slots this host filled that are gone from `mySlots` while it was down took its posted
/// collateral with them, unless it was paid out (a `freeSlot` mined just before the crash):
/// a forced free (missed proofs) or a failed request forfeits it. Their reservations are
/// ended here with nothing returned, so the availability does not count tokens the host no
/// longer has; the engine then ends the remaining orphaned reservations (never filled) with
/// everything returned.
fn forfeit_lost_slots(
    cfg: &NodeConfig,
    rpc: &mut BlockingClient,
    marketplace: Address,
    token: Address,
    store: &mut Store,
    my_slots: &[(RequestId, u64)],
    from_block: u64,
) -> Result<(), NodeError> {
    use crate::sales::ledger::Ledger;
    let reservations = store
        .reservations()
        .map_err(|e| NodeError::Store(StoreError::Ledger(e)))?;
    for r in reservations {
        if my_slots.contains(&(r.request_id, r.slot_index)) {
            continue;
        }
        let slot = SlotRef::new(r.request_id, r.slot_index);
        let state = calls::decode_slot_state(
            &rpc.eth_call(marketplace, &calls::slot_state(slot.slot_id()))?,
        )
        .map_err(|e| bad("slotState", e))?;
        if state == crate::market::SlotState::Paid {
            record_paid_while_down(cfg, rpc, (marketplace, token), store, &r, from_block)?;
            continue;
        }
        // Did we fill it? The node records its fills; a fill mined just before a crash may
        // not be recorded yet, so the chain is asked too: a SlotFilled of this slot whose
        // transaction we sent.
        let filled = store.has_chain_fill(r.request_id, r.slot_index)?
            || filled_by(rpc, marketplace, slot, cfg.key.address(), from_block)?;
        if !filled {
            continue;
        }
        log::warn!(
            target: "codex::sales",
            request:% = r.request_id, slot = r.slot_index;
            "slot {} of {} was taken from this host while it was down (now {state:?}): its collateral {} is lost",
            r.slot_index,
            short(&r.request_id),
            r.collateral
        );
        store
            .end_reservation(r.id, U256::ZERO)
            .map_err(|e| NodeError::Store(StoreError::Ledger(e)))?;
        let path = data::slot_path(&cfg.data_dir, &slot.slot_id().to_string());
        if let Err(e) = data::release(&path) {
            log::warn!(target: "codex::sales", "deleting {}: {e}", path.display());
        }
    }
    Ok(())
}

/// A slot paid out by our `freeSlot`, mined just before a crash, whose sale never recorded
/// its end (found by the crash soak, `tests/soak`): the history keeps it with what the
/// Marketplace sent in that transaction (the reward, then the collateral, its last transfer),
/// and the reservation ends with that collateral back, which is less than was posted if the
/// slot was slashed. A reservation no such `freeSlot` names is left to the engine.
fn record_paid_while_down(
    cfg: &NodeConfig,
    rpc: &mut BlockingClient,
    (marketplace, token): (Address, Address),
    store: &mut Store,
    r: &crate::sales::ledger::Reservation,
    from_block: u64,
) -> Result<(), NodeError> {
    use crate::market::abi::Marketplace as M;
    use crate::sales::ledger::Ledger;
    use alloy_sol_types::SolCall;
    const TRANSFER: B256 =
        alloy_primitives::b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
    let me = cfg.key.address();
    let slot = SlotRef::new(r.request_id, r.slot_index).slot_id();
    let pad = |a: Address| B256::left_padding_from(a.as_slice());
    let v = rpc.call(
        "eth_getLogs",
        json!([{"address": token, "fromBlock": format!("{from_block:#x}"), "toBlock": "latest",
                "topics": [TRANSFER, pad(marketplace), pad(cfg.reward_recipient.unwrap_or(me))]}]),
    )?;
    let Some(l) = parse_logs(&v)
        .map_err(|e| bad("eth_getLogs", e))?
        .into_iter()
        .map(|l| -> Result<_, NodeError> {
            let tx = rpc.call("eth_getTransactionByHash", json!([l.transaction_hash]))?;
            let input = hex_bytes(&tx["input"]).unwrap_or_default();
            let ours = tx["from"].as_str().and_then(|f| f.parse::<Address>().ok()) == Some(me)
                && input.len() >= 36
                && (input[..4] == M::freeSlot_0Call::SELECTOR
                    || input[..4] == M::freeSlot_1Call::SELECTOR)
                && input[4..36] == slot.0[..];
            Ok(ours.then_some(l))
        })
        .find_map(|l| l.transpose())
        .transpose()?
    else {
        return Ok(());
    };
    let receipt = rpc.call("eth_getTransactionReceipt", json!([l.transaction_hash]))?;
    let logs: Vec<Log> = serde_json::from_value(receipt["logs"].clone()).unwrap_or_default();
    let sent: Vec<U256> = logs
        .iter()
        .filter(|l| {
            l.address == token
                && l.topics.first() == Some(&TRANSFER)
                && l.topics.get(1) == Some(&pad(marketplace))
        })
        .filter_map(|l| U256::try_from_be_slice(&l.data))
        .collect();
    let received = sent.iter().fold(U256::ZERO, |a, b| a.saturating_add(*b));
    let returned = match sent.as_slice() {
        [_, .., last] => (*last).min(r.collateral),
        _ => U256::ZERO,
    };
    let block = rpc.call(
        "eth_getBlockByNumber",
        json!([format!("{:#x}", l.block_number), false]),
    )?;
    let ended_at = quantity(&block["timestamp"]).unwrap_or_default();
    let cancelled = matches!(
        calls::decode_request_state(
            &rpc.eth_call(marketplace, &calls::request_state(r.request_id))?
        ),
        Ok(RequestState::Cancelled)
    );
    log::info!(
        target: "codex::sales",
        request:% = r.request_id, slot = r.slot_index;
        "slot {} of {} was paid out just before the restart: {received} received, {returned} of it collateral",
        r.slot_index,
        short(&r.request_id)
    );
    store
        .end_reservation(r.id, returned)
        .map_err(|e| NodeError::Store(StoreError::Ledger(e)))?;
    let record = crate::store::history::SaleRecord {
        request_id: r.request_id,
        slot_index: r.slot_index,
        availability_id: Some(r.availability_id),
        reservation_id: Some(r.id),
        outcome: if cancelled { "Cancelled" } else { "Finished" }.to_string(),
        reason: "paid out before the restart".to_string(),
        slot_size: r.slot_size,
        started_at: 0,
        ended_at,
        payout: received.saturating_sub(returned),
        collateral: r.collateral,
        collateral_returned: returned,
        collateral_lost: r.collateral - returned,
    };
    if let Err(e) = store.record_sale_end(&record) {
        log::warn!(target: "codex::store", "keeping slot {} of {} in the history: {e}", r.slot_index, short(&r.request_id));
    }
    let _ = store.forget_chain_fill(r.request_id, r.slot_index);
    let path = data::slot_path(&cfg.data_dir, &slot.to_string());
    if let Err(e) = data::release(&path) {
        log::warn!(target: "codex::sales", "deleting {}: {e}", path.display());
    }
    Ok(())
}

/// Whether `host` sent a transaction that filled `slot` (a SlotFilled log since `from_block`).
fn filled_by(
    rpc: &mut BlockingClient,
    marketplace: Address,
    slot: SlotRef,
    host: Address,
    from_block: u64,
) -> Result<bool, NodeError> {
    use alloy_sol_types::SolEvent;
    let topic = crate::market::abi::Marketplace::SlotFilled::SIGNATURE_HASH;
    let v = rpc.call(
        "eth_getLogs",
        json!([{"address": marketplace, "fromBlock": format!("{from_block:#x}"), "toBlock": "latest",
                "topics": [topic, slot.request_id.0]}]),
    )?;
    for l in parse_logs(&v).map_err(|e| bad("eth_getLogs", e))? {
        let Ok(d) = decode_log(&to_rpc_log(&l)) else {
            continue;
        };
        if !matches!(d.event, MarketEvent::SlotFilled { slot_index, .. } if slot_index == slot.slot_index)
        {
            continue;
        }
        let tx = rpc.call("eth_getTransactionByHash", json!([l.transaction_hash]))?;
        if tx["from"].as_str().and_then(|f| f.parse::<Address>().ok()) == Some(host) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The first block whose timestamp is at least `t` (bisection on block timestamps).
fn first_block_after(rpc: &mut BlockingClient, head: u64, t: u64) -> Result<u64, NodeError> {
    let ts = |rpc: &mut BlockingClient, n: u64| -> Result<u64, NodeError> {
        let b = rpc.call("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))?;
        quantity(&b["timestamp"]).ok_or_else(|| bad("eth_getBlockByNumber", "no timestamp"))
    };
    let (mut lo, mut hi) = (0u64, head);
    if ts(rpc, 0)? >= t {
        return Ok(0);
    }
    // Invariant: ts(lo) < t <= ts(hi) (or hi = head).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ts(rpc, mid)? >= t {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

fn bad(method: &str, reason: impl std::fmt::Display) -> NodeError {
    NodeError::Chain(ChainError::BadResponse {
        method: method.to_string(),
        reason: reason.to_string(),
    })
}

fn hex_bytes(v: &Value) -> Option<Bytes> {
    v.as_str().and_then(|s| s.parse::<Bytes>().ok())
}

/// A log as the chain client delivers it, in the shape the Marketplace decoders read (the
/// node and `codex events` both decode with it).
pub(crate) fn to_rpc_log(l: &Log) -> RpcLog {
    RpcLog {
        address: l.address,
        topics: l.topics.clone(),
        data: l.data.clone(),
        block_hash: Some(l.block_hash),
        block_number: Some(l.block_number),
        transaction_hash: Some(l.transaction_hash),
        transaction_index: Some(l.transaction_index),
        log_index: Some(l.log_index),
        removed: l.removed,
    }
}

/// The calls of one slot view, in the order `Node::slot_view` decodes them: getRequest first
/// when the request is not cached.
fn slot_view_calls(rid: RequestId, sid: SlotId, with_request: bool) -> Vec<Vec<u8>> {
    let mut views = Vec::with_capacity(7);
    if with_request {
        views.push(calls::get_request(rid));
    }
    views.extend([
        calls::request_state(rid),
        calls::slot_state(sid),
        calls::request_expiry(rid),
        calls::request_end(rid),
        calls::get_host(sid),
        calls::current_collateral(sid),
    ]);
    views
}

fn data_version(store: &Store) -> i64 {
    store
        .connection()
        .query_row("PRAGMA data_version", [], |r| r.get(0))
        .unwrap_or(0)
}

struct Node {
    cfg: NodeConfig,
    engine: Engine<Store>,
    client: ChainClient,
    txs: TxBook<TxTag>,
    /// The validator, when it is on.
    validator: Option<Validator>,
    /// Tokens the validator's marks earned.
    validator_rewards: U256,
    marketplace: Address,
    token: Address,
    /// Chain time: the latest block's timestamp.
    now: u64,
    head: u64,
    /// The newest block the node knows of: the head, or the block of a log that came before
    /// its head (what the answers asked ahead are valid for, see [`Ahead`]).
    known: u64,
    /// Calls in flight: what each answers, and when it was sent (for the latency metric).
    calls: HashMap<CallId, (Purpose, Instant)>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    requests: HashMap<RequestId, Arc<Request>>,
    workers: Workers,
    /// The cancel flag of each download running, with the ticket of the sale it is for.
    downloads: HashMap<SlotRef, (Ticket, Arc<AtomicBool>)>,
    /// Requests announced and still open, to examine again when an availability grows.
    open: HashMap<RequestId, MarketEvent>,
    data_version: i64,
    next_tick: Instant,
    /// Recent block hashes, for the cursor.
    hashes: HashMap<u64, B256>,
    tx_actions: Vec<TxAction<TxTag>>,
    /// Raw transactions held until the commits before them are durable (`store::behind`),
    /// in the order they were signed, each with the commit count it waits for.
    held_sends: std::collections::VecDeque<(u64, TxCall, &'static str, Value)>,
    /// reserveSlot transactions in flight, to record when they succeed.
    reserving: HashMap<Ticket, SlotRef>,
    /// Answers asked ahead of reservations, by slot.
    ahead: HashMap<SlotRef, Ahead>,
    /// Tokens the Marketplace sent for a slot (payout and collateral), for its history.
    received: HashMap<SlotRef, U256>,
    chain_id: u64,
    market_config: crate::market::MarketplaceConfig,
    /// Requests announced lately, for "why no work" (`GET /sales/queue`).
    recent: std::collections::VecDeque<api::Seen>,
    /// When the connection came up (None while it is down), and when the last head came.
    connected_at: Option<Instant>,
    last_head_at: Option<Instant>,
    /// The host's ETH and token balances, as last read.
    balances: (Option<U256>, Option<U256>),
    next_balances: Instant,
    metrics: crate::metrics::NodeMetrics,
    /// submitProof transactions in flight.
    proving: std::collections::HashSet<Ticket>,
    /// Slots whose counted payout was reorganised out and that are claimed again: their
    /// sale is in the history already.
    repaying: std::collections::HashSet<SlotRef>,
    /// Slots whose `canReserveSlot` said false because this host holds the reservation
    /// (see `can_reserve_answer`): their `reserveSlot` is skipped.
    own_reservation: std::collections::HashSet<SlotRef>,
    /// The last block fully processed.
    processed: u64,
    /// The cursor to persist at the end of this turn: the last block processed and its hash.
    cursor_due: Option<(u64, B256)>,
}

impl Node {
    /// Drains what is ready (client outputs, worker results, engine commands, transaction
    /// actions) for at most [`TURN_BUDGET`]; returns true when work is left, so that the
    /// loop polls its sockets (answering pings, reading frames) before it goes on.
    ///
    /// The chain cursor is persisted at the end of the turn, after the commands the turn's
    /// events caused were sent: its commit (an fsync) then does not delay them, and a crash
    /// before it only means the block is read again.
    fn pump(&mut self, reg: &Registry) -> bool {
        let more = self.pump_ready(reg);
        if let Some((b, hash)) = self.cursor_due.take() {
            if let Err(e) = self.engine.ledger_port().set_cursor(b, hash) {
                log::warn!(target: "codex::store", "saving the chain cursor at block {b}: {e}");
            }
        }
        more
    }

    fn pump_ready(&mut self, reg: &Registry) -> bool {
        let start = Instant::now();
        let over = || start.elapsed() >= TURN_BUDGET;
        loop {
            let mut progressed = false;
            while let Some(o) = self.client.poll_output() {
                progressed = true;
                let what = match &o {
                    ClientOutput::Head(_) => "a new head",
                    ClientOutput::Log(_) => "a Marketplace log",
                    ClientOutput::Response { .. } => "a chain answer",
                    _ => "a connection change",
                };
                let t = Instant::now();
                self.on_client(reg, o);
                slow_step(what, t);
                if over() {
                    return true;
                }
            }
            while let Some(d) = self.workers.try_recv() {
                progressed = true;
                let t = Instant::now();
                self.on_done(d);
                slow_step("a worker's result", t);
                if over() {
                    return true;
                }
            }
            while let Some(cmd) = self.engine.poll() {
                progressed = true;
                let what = command_kind(&cmd);
                let t = Instant::now();
                self.execute(reg, cmd);
                slow_step(what, t);
                if over() {
                    return true;
                }
            }
            let t = Instant::now();
            if self.run_validator(reg) {
                progressed = true;
            }
            slow_step("the validator", t);
            if !self.tx_actions.is_empty() {
                progressed = true;
                let t = Instant::now();
                self.run_tx_actions(reg);
                slow_step("transaction actions", t);
            }
            let t = Instant::now();
            if self.send_durable(reg) {
                progressed = true;
            }
            slow_step("commands after a commit", t);
            if !progressed {
                return false;
            }
            if over() {
                return true;
            }
        }
    }

    fn on_client(&mut self, reg: &Registry, o: ClientOutput) {
        match o {
            ClientOutput::Connected => {
                self.connected_at = Some(Instant::now());
                log::info!(target: "codex::chain", "connected to {}", self.cfg.provider.url)
            }
            ClientOutput::Disconnected(e) => {
                self.connected_at = None;
                self.metrics.reconnects.inc();
                log::warn!(target: "codex::chain", "{e}; reconnecting (missed events are backfilled)")
            }
            ClientOutput::Failed(e) => log::error!(target: "codex::chain", "{e}"),
            ClientOutput::Log(l) => match decode_log(&to_rpc_log(&l)) {
                Ok(d) => {
                    self.known = self.known.max(l.block_number);
                    log::info!(target: "codex::market", "block {}: {}", l.block_number, d.event.name());
                    self.metrics.events_processed.inc();
                    api::remember(&mut self.recent, &d.event, self.now);
                    if let Some(v) = self.validator.as_mut() {
                        validating::feed(v, &d.event);
                    }
                    // Without a data source nothing is sold: new requests are not examined.
                    let selling = self.cfg.data_source.is_some();
                    if selling || !matches!(d.event, MarketEvent::StorageRequested { .. }) {
                        self.note_request(&d.event);
                        self.engine
                            .handle(ChainTime(self.now), EngineInput::Event(d.event));
                    }
                }
                Err(e) => log::warn!(
                    target: "codex::market",
                    "skipping log {} of block {}: {e}",
                    l.log_index,
                    l.block_number
                ),
            },
            ClientOutput::Removed(l) => {
                log::warn!(
                    target: "codex::chain",
                    "log {} of block {} was removed by a reorganisation",
                    l.log_index,
                    l.block_number
                );
                // The engine takes the event back: a vanished request leaves the queue,
                // and the sales of its request read their slot again.
                if let Ok(d) = decode_log(&to_rpc_log(&l)) {
                    if let MarketEvent::StorageRequested { request_id, .. } = &d.event {
                        self.open.remove(request_id);
                    }
                    self.engine
                        .handle(ChainTime(self.now), EngineInput::Removed(d.event));
                }
            }
            ClientOutput::Processed(b) => {
                self.processed = b;
                let hash = self.hashes.get(&b).copied().unwrap_or_default();
                self.cursor_due = Some((b, hash));
            }
            ClientOutput::Head(h) => {
                // A head at or below the last one with a hash we have not seen, or one
                // whose parent is not the block we have at that height (heads missed while
                // the connection was down): the chain was reorganised (anvil's `evm_revert`
                // and `anvil_reorg` say so only this way). What the node counted as done
                // may be gone: the sales read their slots again and the transaction book
                // looks up its recent receipts.
                let replaced = h.number <= self.head && self.hashes.get(&h.number) != Some(&h.hash);
                let forked = h
                    .number
                    .checked_sub(1)
                    .and_then(|p| self.hashes.get(&p))
                    .is_some_and(|p| *p != h.parent_hash);
                // Heads missed (the connection was down) could hide one too: they are
                // treated alike, since a check that finds nothing changes nothing.
                let missed = h.number > self.head + 1
                    && !self.hashes.contains_key(&(h.number - 1))
                    && !self.hashes.is_empty();
                if replaced || forked {
                    log::warn!(target: "codex::chain", "block {} replaced: the chain was reorganised; checking the sales and recent transactions again", if replaced { h.number } else { h.number - 1 });
                    self.metrics.reorgs.inc();
                } else if missed {
                    log::info!(target: "codex::chain", "blocks {}..{} were not announced; checking the sales and recent transactions again", self.head + 1, h.number - 1);
                }
                if replaced || forked || missed {
                    let t = Instant::now();
                    let fork = if replaced { h.number } else { h.number - 1 };
                    self.hashes.retain(|n, _| *n < fork);
                    // Heads missed while disconnected may hide where the chains part: the
                    // logs of the whole window are read again (the log sync hands out
                    // nothing twice and reports what is gone).
                    self.client
                        .rewind_logs(h.number.saturating_sub(crate::chain::logsync::REORG_WINDOW));
                    self.engine
                        .handle(ChainTime(self.now), EngineInput::Reorged);
                    self.txs.on_reorg(&mut self.tx_actions);
                    slow_step("checking the sales again after a reorganisation", t);
                }
                self.last_head_at = Some(Instant::now());
                self.head = h.number;
                self.known = h.number;
                self.now = self.now.max(h.timestamp);
                self.hashes.insert(h.number, h.hash);
                self.hashes.retain(|n, _| *n + 64 >= h.number);
                let t = Instant::now();
                self.engine.handle(ChainTime(self.now), EngineInput::Time);
                slow_step("the engine's timers at a head", t);
                if let Some(v) = self.validator.as_mut() {
                    v.on_time(self.now);
                }
                if let Some(limit) = h.gas_limit {
                    self.txs.set_block_gas_limit(limit);
                }
                let t = Instant::now();
                self.txs.on_head(h.number, &mut self.tx_actions);
                slow_step("the transaction book at a head", t);
                let id = self.client.call(
                    reg,
                    "eth_feeHistory",
                    &json!(["0x1", "latest", []]),
                    Instant::now(),
                );
                self.calls.insert(id, (Purpose::FeeHistory, Instant::now()));
                let now = self.now;
                self.open.retain(|_, ev| match ev {
                    MarketEvent::StorageRequested { expiry, .. } => *expiry > now,
                    _ => false,
                });
            }
            ClientOutput::Response { id, result } => {
                let Some((p, sent)) = self.calls.remove(&id) else {
                    return;
                };
                self.metrics
                    .rpc_latency
                    .observe(sent.elapsed().as_secs_f64());
                self.on_response(p, result);
            }
        }
    }

    fn note_request(&mut self, ev: &MarketEvent) {
        match ev {
            MarketEvent::StorageRequested { request_id, .. } => {
                self.open.insert(*request_id, ev.clone());
            }
            MarketEvent::RequestFulfilled { request_id }
            | MarketEvent::RequestCancelled { request_id }
            | MarketEvent::RequestFailed { request_id } => {
                self.open.remove(request_id);
                if let Err(e) = self
                    .engine
                    .ledger_port()
                    .forget_chain_reservations(*request_id)
                {
                    log::warn!(target: "codex::store", "forgetting the reservations of {}: {e}", short(request_id));
                }
            }
            _ => {}
        }
    }

    /// An availability may have been changed by another process: let the engine look again,
    /// and examine the open requests again (a host that offers storage after a request was
    /// posted still sells to it).
    fn check_availabilities(&mut self) {
        let v = data_version(self.engine.ledger());
        if v == self.data_version {
            return;
        }
        self.data_version = v;
        log::info!(target: "codex::sales", "availabilities changed; examining {} open requests again", self.open.len());
        self.engine.handle(
            ChainTime(self.now),
            EngineInput::AvailabilityChanged { grew: true },
        );
        let open: Vec<MarketEvent> = self.open.values().cloned().collect();
        for ev in open {
            self.engine
                .handle(ChainTime(self.now), EngineInput::Event(ev));
        }
    }

    fn on_response(&mut self, p: Purpose, result: Result<Value, ChainError>) {
        match p {
            Purpose::FeeHistory => {
                if let Ok(v) = result {
                    if let Some(base) = v["baseFeePerGas"]
                        .as_array()
                        .and_then(|a| a.last())
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<U256>().ok())
                    {
                        self.txs
                            .set_base_fee(u128::try_from(base).unwrap_or(u128::MAX));
                    }
                }
            }
            Purpose::Tx(call) => self.txs.on_answer(call, result, &mut self.tx_actions),
            Purpose::Ahead(slot, call) => {
                let Some(a) = self.ahead.get_mut(&slot) else {
                    return;
                };
                let Ok(v) = result else {
                    return; // asked again when needed, where the error is the sale's to see
                };
                match call {
                    AheadCall::CanReserve => {
                        a.can_reserve =
                            hex_bytes(&v).and_then(|d| calls::decode_can_reserve_slot(&d).ok());
                    }
                    AheadCall::Estimate => {
                        a.estimate = v
                            .as_str()
                            .and_then(|s| crate::chain::rpc::parse_quantity(s).ok());
                    }
                }
            }
            Purpose::ValidatorSlotState(slot) => self.on_validator_slot_state(slot, result),
            Purpose::CanMark(slot, period) => self.on_can_mark(slot, period, result),
            Purpose::EthBalance => {
                if let Some(b) = result
                    .ok()
                    .and_then(|v| v.as_str().and_then(|s| s.parse::<U256>().ok()))
                {
                    self.balances.0 = Some(b);
                }
            }
            Purpose::TokenBalance => {
                if let Some(b) = result
                    .ok()
                    .and_then(|v| hex_bytes(&v))
                    .and_then(|d| calls::decode_balance_of(&d).ok())
                {
                    self.balances.1 = Some(b);
                }
            }
            Purpose::RequestState(rid) => {
                let st = match result {
                    Ok(v) => match hex_bytes(&v).map(|d| calls::decode_request_state(&d)) {
                        Some(Ok(s)) => Ok(Some(s)),
                        _ => Err(SaleChainError(format!("requestState returned {v}"))),
                    },
                    Err(e) if e.revert_data().is_some() => Ok(None),
                    Err(e) => Err(SaleChainError(e.to_string())),
                };
                self.engine
                    .handle(ChainTime(self.now), EngineInput::RequestState(rid, st));
            }
            Purpose::Batch(id, i) => {
                let Some(b) = self.batches.get_mut(&id) else {
                    return;
                };
                if b.results[i].is_none() {
                    b.missing -= 1;
                }
                b.results[i] = Some(result.and_then(|v| {
                    hex_bytes(&v).ok_or_else(|| ChainError::BadResponse {
                        method: "eth_call".into(),
                        reason: format!("{v} is not hex data"),
                    })
                }));
                if b.missing == 0 {
                    if let Some(b) = self.batches.remove(&id) {
                        self.finish_batch(b);
                    }
                }
            }
        }
    }

    /// Reads the host's balances for `codex status`, at most every ten seconds.
    fn read_balances(&mut self, reg: &Registry) {
        if Instant::now() < self.next_balances {
            return;
        }
        self.next_balances = Instant::now() + Duration::from_secs(10);
        let me = self.txs.address();
        let id = self.client.call(
            reg,
            "eth_getBalance",
            &json!([me, "latest"]),
            Instant::now(),
        );
        self.calls.insert(id, (Purpose::EthBalance, Instant::now()));
        let params =
            json!([{"to": self.token, "data": Bytes::from(calls::balance_of(me))}, "latest"]);
        let id = self.client.call(reg, "eth_call", &params, Instant::now());
        self.calls
            .insert(id, (Purpose::TokenBalance, Instant::now()));
    }

    /// Feeds the HTTP servers their readiness and answers the requests that are complete.
    fn serve(
        &mut self,
        reg: &Registry,
        ready: &[(mio::Token, bool, bool)],
        api: &mut http::Server,
        metrics: &mut Option<http::Server>,
    ) {
        let now = Instant::now();
        for &(token, r, w) in ready {
            if api.owns(token) {
                api.on_ready(reg, token, r, w, now);
            } else if let Some(m) = metrics.as_mut().filter(|m| m.owns(token)) {
                m.on_ready(reg, token, r, w, now);
            }
        }
        api.on_timer(reg, now);
        while let Some((conn, req)) = api.poll_request() {
            let resp = crate::api::rest::handle(self, &req);
            self.metrics.count_response(resp.status);
            api.respond(reg, conn, resp, Instant::now());
        }
        if let Some(m) = metrics.as_mut() {
            m.on_timer(reg, now);
            while let Some((conn, req)) = m.poll_request() {
                let resp = match (req.method.as_str(), req.path.as_str()) {
                    ("GET", "/metrics") => {
                        self.refresh_gauges();
                        http::Response {
                            status: 200,
                            headers: vec![(
                                "Content-Type".into(),
                                crate::metrics::CONTENT_TYPE.into(),
                            )],
                            body: self.metrics.render().into_bytes(),
                        }
                    }
                    _ => http::Response::text(404, "metrics are at GET /metrics"),
                };
                m.respond(reg, conn, resp, Instant::now());
            }
        }
    }

    fn eth_call(&mut self, reg: &Registry, data: Vec<u8>, purpose: Purpose) {
        let params = json!([{"from": self.txs.address(), "to": self.marketplace, "data": Bytes::from(data)}, "pending"]);
        let id = self.client.call(reg, "eth_call", &params, Instant::now());
        self.calls.insert(id, (purpose, Instant::now()));
    }

    fn batch(&mut self, reg: &Registry, kind: BatchKind, calls: Vec<Vec<u8>>) {
        self.batch_with(reg, kind, calls, &[json!("pending")], Vec::new());
    }

    /// The block the proof views run at: `latest`'s state executed as the next block (the
    /// block number overridden by `eth_call`'s fourth parameter, which geth and anvil take).
    /// For these views that is what `pending` gives (the pointer counts the block number),
    /// without what `pending` costs on anvil: it executes its whole transaction pool for
    /// every call, so with thousands of the node's own proofs pending each view slowed down
    /// until most proofs of a period were never sent (`docs/marketplace.md#json-rpc`).
    fn next_block(&self) -> [Value; 3] {
        let number = format!("{:#x}", self.known.max(self.head) + 1);
        [json!("latest"), json!({}), json!({ "number": number })]
    }

    /// A batch of `calls` at block `at` (the parameters after the call object), with other
    /// calls in front of it in the same frame (anvil answers a frame at once, and its
    /// answers are taken in order: these come first).
    fn batch_with(
        &mut self,
        reg: &Registry,
        kind: BatchKind,
        calls: Vec<Vec<u8>>,
        at: &[Value],
        first: Vec<(&'static str, Value, Purpose)>,
    ) {
        self.next_batch += 1;
        let id = self.next_batch;
        self.batches.insert(
            id,
            Batch {
                kind,
                results: (0..calls.len()).map(|_| None).collect(),
                missing: calls.len(),
            },
        );
        // One JSON-RPC batch: the node answers the views together, in one frame.
        let from = self.txs.address();
        let mut purposes = Vec::with_capacity(first.len() + calls.len());
        let mut params: Vec<(&str, Value)> = Vec::with_capacity(purposes.capacity());
        for (method, p, purpose) in first {
            params.push((method, p));
            purposes.push(purpose);
        }
        for (i, data) in calls.into_iter().enumerate() {
            let mut p =
                vec![json!({"from": from, "to": self.marketplace, "data": Bytes::from(data)})];
            p.extend_from_slice(at);
            params.push(("eth_call", Value::Array(p)));
            purposes.push(Purpose::Batch(id, i));
        }
        let ids = self.client.call_batch(reg, &params, Instant::now());
        for (call, purpose) in ids.into_iter().zip(purposes) {
            self.calls.insert(call, (purpose, Instant::now()));
        }
    }

    fn finish_batch(&mut self, b: Batch) {
        let now = self.now;
        let mut r = b
            .results
            .into_iter()
            .map(|x| x.unwrap_or(Err(ChainError::Disconnected("no answer".into()))));
        match b.kind {
            BatchKind::Slot(t, cached) => {
                let view = self.slot_view(t.slot, cached, &mut r);
                self.engine
                    .handle(ChainTime(now), EngineInput::Reply(t, Input::Slot(view)));
            }
            BatchKind::Recheck(t) => {
                let view = self.slot_view(t.slot, None, &mut r);
                self.engine
                    .handle(ChainTime(now), EngineInput::Rechecked(t, view));
            }
            BatchKind::Proof(t) => {
                let view = (|| -> Result<ProofView, SaleChainError> {
                    let mut next = || {
                        r.next()
                            .unwrap_or(Err(ChainError::Disconnected("no answer".into())))
                            .map_err(|e| SaleChainError(e.to_string()))
                    };
                    let slot_state = calls::decode_slot_state(&next()?).map_err(sale_err)?;
                    let pointer = calls::decode_get_pointer(&next()?).map_err(sale_err)?;
                    let required = calls::decode_is_proof_required(&next()?).map_err(sale_err)?;
                    let will_be_required =
                        calls::decode_will_proof_be_required(&next()?).map_err(sale_err)?;
                    let challenge = calls::decode_get_challenge(&next()?).map_err(sale_err)?;
                    Ok(ProofView {
                        slot_state,
                        pointer,
                        required,
                        will_be_required,
                        challenge,
                    })
                })();
                self.engine
                    .handle(ChainTime(now), EngineInput::Reply(t, Input::Proof(view)));
            }
            BatchKind::CanReserve(t) => {
                let res = r
                    .next()
                    .unwrap_or(Err(ChainError::Disconnected("no answer".into())))
                    .map_err(|e| SaleChainError(e.to_string()))
                    .and_then(|d| calls::decode_can_reserve_slot(&d).map_err(sale_err));
                self.can_reserve_answer(t, res);
            }
            BatchKind::Freed(rid, index) => {
                let info = (|| -> Result<Option<FreedSlotInfo>, SaleChainError> {
                    let req = match r.next() {
                        Some(Ok(d)) => calls::decode_get_request(&d).map_err(sale_err)?,
                        Some(Err(e)) if e.revert_data().is_some() => return Ok(None),
                        Some(Err(e)) => return Err(SaleChainError(e.to_string())),
                        None => return Ok(None),
                    };
                    let mut next = || {
                        r.next()
                            .unwrap_or(Err(ChainError::Disconnected("no answer".into())))
                            .map_err(|e| SaleChainError(e.to_string()))
                    };
                    let request_state = calls::decode_request_state(&next()?).map_err(sale_err)?;
                    let expires_at = calls::decode_request_expiry(&next()?).map_err(sale_err)?;
                    let ends_at = calls::decode_request_end(&next()?).map_err(sale_err)?;
                    Ok(Some(FreedSlotInfo {
                        ask: req.ask,
                        request_state,
                        expires_at,
                        ends_at,
                    }))
                })();
                self.engine.handle(
                    ChainTime(now),
                    EngineInput::FreedSlot {
                        request_id: rid,
                        slot_index: index,
                        info,
                    },
                );
            }
        }
    }

    fn slot_view(
        &mut self,
        slot: SlotRef,
        cached: Option<Arc<Request>>,
        r: &mut impl Iterator<Item = Result<Bytes, ChainError>>,
    ) -> Result<SlotView, SaleChainError> {
        let transient = |e: ChainError| SaleChainError(e.to_string());
        let mut next = || {
            r.next()
                .unwrap_or(Err(ChainError::Disconnected("no answer".into())))
        };
        let request = match cached {
            Some(req) => Some(req),
            None => match next() {
                Ok(d) => {
                    let req = Arc::new(calls::decode_get_request(&d).map_err(sale_err)?);
                    if self.requests.len() >= REQUEST_CACHE {
                        self.requests.clear();
                    }
                    self.requests.insert(slot.request_id, req.clone());
                    Some(req)
                }
                Err(e) if e.revert_data().is_some() => None,
                Err(e) => return Err(transient(e)),
            },
        };
        let request_state = match next() {
            Ok(d) => Some(calls::decode_request_state(&d).map_err(sale_err)?),
            Err(e) if e.revert_data().is_some() => None,
            Err(e) => return Err(transient(e)),
        };
        let slot_state = calls::decode_slot_state(&next().map_err(transient)?).map_err(sale_err)?;
        let or_zero = |x: Result<Bytes, ChainError>| -> Result<Option<Bytes>, SaleChainError> {
            match x {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.revert_data().is_some() => Ok(None),
                Err(e) => Err(SaleChainError(e.to_string())),
            }
        };
        let expires_at = match or_zero(next())? {
            Some(d) => calls::decode_request_expiry(&d).map_err(sale_err)?,
            None => 0,
        };
        let ends_at = match or_zero(next())? {
            Some(d) => calls::decode_request_end(&d).map_err(sale_err)?,
            None => 0,
        };
        let host = match or_zero(next())? {
            Some(d) => calls::decode_get_host(&d)
                .map_err(sale_err)?
                .unwrap_or(Address::ZERO),
            None => Address::ZERO,
        };
        let current_collateral = match or_zero(next())? {
            Some(d) => calls::decode_current_collateral(&d).map_err(sale_err)?,
            None => U256::ZERO,
        };
        Ok(SlotView {
            request,
            request_state,
            slot_state,
            expires_at,
            ends_at,
            host,
            current_collateral,
        })
    }

    fn execute(&mut self, reg: &Registry, cmd: Command) {
        match cmd {
            Command::Sale(t, out) => self.sale_output(reg, t, out),
            Command::ReleaseData(slot) => {
                // The sale is over: a fill it made is settled (a fill reorganised out was
                // marked unfilled when its sale ended, and its reservation stays).
                if let Err(e) = self
                    .engine
                    .ledger_port()
                    .forget_chain_fill(slot.request_id, slot.slot_index)
                {
                    log::warn!(target: "codex::store", "forgetting the fill of slot {} of {}: {e}", slot.slot_index, short(&slot.request_id));
                }
                if let Some((_, c)) = self.downloads.remove(&slot) {
                    c.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let path = self.slot_path(slot);
                match data::release(&path) {
                    Ok(()) => {
                        log::info!(target: "codex::sales", "slot {} of {}: data deleted", slot.slot_index, short(&slot.request_id))
                    }
                    Err(e) => {
                        log::warn!(target: "codex::sales", "deleting {}: {e}", path.display())
                    }
                }
            }
            Command::ReadRequestState(rid) => {
                self.eth_call(reg, calls::request_state(rid), Purpose::RequestState(rid));
            }
            Command::Ended(e) => self.record_end(e),
            Command::Recheck(t) => {
                let (rid, sid) = (t.slot.request_id, t.slot.slot_id());
                // getRequest is read every time: the question is whether the request is
                // still on the chain.
                self.requests.remove(&rid);
                self.batch(reg, BatchKind::Recheck(t), slot_view_calls(rid, sid, true));
            }
            Command::LookupFreedSlot {
                request_id,
                slot_index,
            } if self.cfg.data_source.is_none() => {
                // Nothing is sold without a data source: no repair either.
                self.engine.handle(
                    ChainTime(self.now),
                    EngineInput::FreedSlot {
                        request_id,
                        slot_index,
                        info: Ok(None),
                    },
                );
            }
            Command::LookupFreedSlot {
                request_id,
                slot_index,
            } => {
                self.batch(
                    reg,
                    BatchKind::Freed(request_id, slot_index),
                    vec![
                        calls::get_request(request_id),
                        calls::request_state(request_id),
                        calls::request_expiry(request_id),
                        calls::request_end(request_id),
                    ],
                );
            }
        }
    }

    /// The calls that ask `canReserveSlot` and the `reserveSlot` estimate of `slot` ahead
    /// (see [`Ahead`]), to go in front of its slot view.
    fn ask_ahead(&mut self, slot: SlotRef) -> Vec<(&'static str, Value, Purpose)> {
        if self.ahead.len() >= AHEAD_MAX {
            self.ahead.clear();
        }
        self.ahead.insert(
            slot,
            Ahead {
                known: self.known,
                can_reserve: None,
                estimate: None,
            },
        );
        let from = self.txs.address();
        let (rid, idx) = (slot.request_id, slot.slot_index);
        let can = Bytes::from(calls::can_reserve_slot(rid, idx));
        let reserve = Bytes::from(calls::reserve_slot(rid, idx));
        vec![
            (
                "eth_call",
                json!([{"from": from, "to": self.marketplace, "data": can}, "pending"]),
                Purpose::Ahead(slot, AheadCall::CanReserve),
            ),
            (
                "eth_estimateGas",
                json!([{"from": from, "to": self.marketplace, "data": reserve}]),
                Purpose::Ahead(slot, AheadCall::Estimate),
            ),
        ]
    }

    /// Hands the engine a `canReserveSlot` answer. The contract refuses a second
    /// reservation from the same address, so a `false` for a slot this host has a
    /// reservation of on record (made before a restart, or kept when a reorganisation took
    /// only the fill) means the reservation stands: reservable by us, and the
    /// `reserveSlot` is skipped. A `true` means the record is stale (the reservation was
    /// reorganised out): the slot is reserved again.
    fn can_reserve_answer(&mut self, t: Ticket, res: Result<bool, SaleChainError>) {
        let slot = t.slot;
        let res = match res {
            Ok(false) if self.reserved_on_chain(slot) => {
                self.own_reservation.insert(slot);
                Ok(true)
            }
            other => {
                self.own_reservation.remove(&slot);
                other
            }
        };
        self.engine.handle(
            ChainTime(self.now),
            EngineInput::Reply(t, Input::CanReserve(res)),
        );
    }

    fn reserved_on_chain(&self, slot: SlotRef) -> bool {
        self.engine
            .ledger()
            .has_chain_reservation(slot.request_id, slot.slot_index)
            .unwrap_or(false)
    }

    fn slot_path(&self, slot: SlotRef) -> PathBuf {
        data::slot_path(&self.cfg.data_dir, &slot.slot_id().to_string())
    }

    fn sale_output(&mut self, reg: &Registry, t: Ticket, out: SaleCommand) {
        let slot = t.slot;
        let state = self.engine.sale(slot).map_or("-", |s| s.state_name());
        let (idx, rid) = (slot.slot_index, short(&slot.request_id));
        match out {
            SaleCommand::ReadSlot(s) => {
                let (rid, sid) = (s.request_id, s.slot_id());
                // A request never changes once posted: read it once.
                let cached = self.requests.get(&rid).cloned();
                let views = slot_view_calls(rid, sid, cached.is_none());
                // A sale about to free its slot reads it at `latest`: the block freeSlot runs in
                // is no earlier than that, so a slot Finished there is Finished then, while
                // `pending`'s time is a guess (after anvil's evm_revert, ahead of the blocks
                // mined), and a freeSlot that runs before the request's end is a forced free
                // that forfeits the collateral.
                let freeing = matches!(state, "SalePayout" | "SaleCancelled" | "SaleFailed");
                let tag = if freeing { "latest" } else { "pending" };
                let ahead = if state == "SalePreparing" && !self.reserved_on_chain(s) {
                    self.ask_ahead(s)
                } else {
                    Vec::new()
                };
                self.batch_with(reg, BatchKind::Slot(t, cached), views, &[json!(tag)], ahead);
            }
            SaleCommand::ReadProof(s) => {
                let sid = s.slot_id();
                let at = self.next_block();
                self.batch_with(
                    reg,
                    BatchKind::Proof(t),
                    vec![
                        calls::slot_state(sid),
                        calls::get_pointer(sid),
                        calls::is_proof_required(sid),
                        calls::will_proof_be_required(sid),
                        calls::get_challenge(sid),
                    ],
                    &at,
                    Vec::new(),
                );
            }
            SaleCommand::CanReserve(s) => {
                // The contract refuses a second reservation by the same address: a slot we
                // reserved before a restart counts as reservable by us (and the reserveSlot
                // below is skipped). The view is read all the same: a record can be older
                // than a reorganisation that removed the reservation (see
                // `can_reserve_answer`).
                let known = self.known;
                let ahead = self.ahead.get_mut(&s).filter(|a| a.known == known);
                if let Some(yes) = ahead.and_then(|a| a.can_reserve.take()) {
                    self.can_reserve_answer(t, Ok(yes));
                    return;
                }
                self.batch(
                    reg,
                    BatchKind::CanReserve(t),
                    vec![calls::can_reserve_slot(s.request_id, s.slot_index)],
                );
            }
            SaleCommand::Send(tx) => {
                let req = |label, call, to, data: Vec<u8>| TxRequest {
                    tag: TxTag::Sale(t),
                    label,
                    call,
                    to,
                    data: Bytes::from(data),
                };
                match tx {
                    Tx::ReserveSlot { slot } if self.own_reservation.remove(&slot) => {
                        log::info!(target: "codex::sales", request:% = slot.request_id, slot = idx; "slot {idx} of {rid}: {state}: reserved on chain by this host already");
                        self.engine.handle(
                            ChainTime(self.now),
                            EngineInput::Reply(t, Input::Tx(Ok(()))),
                        );
                    }
                    Tx::ReserveSlot { slot } => {
                        self.reserving.insert(t, slot);
                        log::info!(target: "codex::sales", request:% = slot.request_id, slot = idx; "slot {idx} of {rid}: {state}: reserving the slot");
                        let r = req(
                            "reserveSlot",
                            GasCall::ReserveSlot,
                            self.marketplace,
                            calls::reserve_slot(slot.request_id, slot.slot_index),
                        );
                        let estimate = self
                            .ahead
                            .remove(&slot)
                            .filter(|a| a.known == self.known)
                            .and_then(|a| a.estimate);
                        match estimate {
                            Some(gas) => self.txs.send_estimated(r, gas, &mut self.tx_actions),
                            None => self.txs.send(r, &mut self.tx_actions),
                        }
                    }
                    Tx::FillSlot {
                        slot,
                        proof,
                        collateral,
                    } => {
                        log::info!(target: "codex::sales", request:% = slot.request_id, slot = idx; "slot {idx} of {rid}: {state}: filling the slot, posting {collateral} collateral");
                        let fill = req(
                            "fillSlot",
                            GasCall::FillSlot,
                            self.marketplace,
                            calls::fill_slot(slot.request_id, slot.slot_index, &proof),
                        );
                        self.txs.send_fill(
                            self.token,
                            self.marketplace,
                            collateral,
                            fill,
                            &mut self.tx_actions,
                        );
                    }
                    Tx::SubmitProof { slot, proof } => {
                        if proof.is_zero() {
                            self.metrics.proofs_failed.inc();
                        }
                        self.proving.insert(t);
                        log::info!(target: "codex::proving", request:% = slot.request_id, slot = idx; "slot {idx} of {rid}: submitting a proof{}", if proof.is_zero() { " (simulated failure)" } else { "" });
                        let r = req(
                            "submitProof",
                            GasCall::Other,
                            self.marketplace,
                            calls::submit_proof(slot.slot_id(), &proof),
                        );
                        self.txs.send(r, &mut self.tx_actions);
                    }
                    Tx::FreeSlot { slot } => {
                        log::info!(target: "codex::sales", request:% = slot.request_id, slot = idx; "slot {idx} of {rid}: {state}: freeing the slot to collect payout and collateral");
                        let data = match self.cfg.reward_recipient {
                            Some(to) => calls::free_slot_to(slot.slot_id(), to, self.txs.address()),
                            None => calls::free_slot(slot.slot_id()),
                        };
                        let r = req("freeSlot", GasCall::FreeSlot, self.marketplace, data);
                        self.txs.send(r, &mut self.tx_actions);
                    }
                }
            }
            SaleCommand::Download { slot, request, .. } => {
                let Some(source) = self.cfg.data_source.clone() else {
                    // Not reached: without a data source no sale starts. Should one, it
                    // ends here with everything it holds returned.
                    self.engine.handle(
                        ChainTime(self.now),
                        EngineInput::Reply(
                            t,
                            Input::Downloaded(Err("no --data-source to download from".into())),
                        ),
                    );
                    return;
                };
                let cid = crate::market::cid::format_cid(&request.content.cid);
                log::info!(target: "codex::sales", request:% = slot.request_id, slot = idx; "slot {idx} of {rid}: downloading {} bytes of {cid}", request.ask.slot_size);
                let cancel = Arc::new(AtomicBool::new(false));
                self.downloads.insert(slot, (t, cancel.clone()));
                let job = DownloadJob {
                    source,
                    cid,
                    slot_index: slot.slot_index,
                    slot_size: request.ask.slot_size,
                    path: self.slot_path(slot),
                    stall_timeout: self.cfg.download_timeout,
                    cancel,
                };
                self.workers.submit(Job::Download(t, job));
            }
            SaleCommand::Prove {
                slot,
                request,
                challenge,
            } => {
                let job = ProofJob {
                    path: self.slot_path(slot),
                    slot_size: request.ask.slot_size,
                    slot_index: slot.slot_index,
                    challenge,
                    merkle_root: request.content.merkle_root,
                };
                self.workers.submit(Job::Prove(t, job));
            }
            SaleCommand::UpdateExpiry { .. } => {
                // The slot's file is kept until its sale ends, whatever the expiry: there is
                // no block store whose expiry to extend.
                self.engine.handle(
                    ChainTime(self.now),
                    EngineInput::Reply(t, Input::ExpiryUpdated(Ok(()))),
                );
            }
            SaleCommand::Filled(s) => {
                if let Err(e) = self
                    .engine
                    .ledger_port()
                    .record_chain_fill(s.request_id, s.slot_index)
                {
                    log::warn!(target: "codex::store", "recording the fill of slot {} of {}: {e}", s.slot_index, short(&s.request_id));
                }
                log::info!(target: "codex::sales", "slot {} of {}: filled; we host it now and prove it every period it is required", s.slot_index, short(&s.request_id));
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        let now = self.now;
        match d {
            Done::Progress(t, bytes) => {
                self.engine.handle(
                    ChainTime(now),
                    EngineInput::Reply(t, Input::DownloadProgress(bytes)),
                );
            }
            Done::Downloaded(t, res) => {
                // Only its own flag: a new sale of the same slot may be downloading already
                // (the old download's result comes after its sale ended).
                if self
                    .downloads
                    .get(&t.slot)
                    .is_some_and(|(own, _)| *own == t)
                {
                    self.downloads.remove(&t.slot);
                }
                if self.engine.sale(t.slot).is_none() {
                    // The sale ended while its download ran (a cancellation in the same
                    // instant), and its data was released before the worker wrote the file:
                    // released again now, so that no file outlives its sale.
                    let path = self.slot_path(t.slot);
                    if let Err(e) = data::release(&path) {
                        log::warn!(target: "codex::sales", "deleting {}: {e}", path.display());
                    }
                    return;
                }
                match &res {
                    Ok(()) => {
                        log::info!(target: "codex::sales", "slot {} of {}: download complete", t.slot.slot_index, short(&t.slot.request_id))
                    }
                    Err(e) => {
                        log::warn!(target: "codex::sales", "slot {} of {}: download failed: {e}", t.slot.slot_index, short(&t.slot.request_id))
                    }
                }
                self.engine.handle(
                    ChainTime(now),
                    EngineInput::Reply(t, Input::Downloaded(res)),
                );
            }
            Done::Proved(t, res) => {
                if let Err(e) = &res {
                    self.metrics.proofs_failed.inc();
                    log::warn!(target: "codex::proving", "slot {} of {}: proof failed: {e}", t.slot.slot_index, short(&t.slot.request_id));
                }
                self.engine
                    .handle(ChainTime(now), EngineInput::Reply(t, Input::Proved(res)));
            }
        }
    }

    /// Tokens the Marketplace transferred in a receipt's logs (the payout and the collateral
    /// that `freeSlot` sends back).
    fn transfers_from_marketplace(&self, logs: &Value) -> U256 {
        const TRANSFER: B256 = alloy_primitives::b256!(
            "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        );
        let Ok(logs) = serde_json::from_value::<Vec<Log>>(logs.clone()) else {
            return U256::ZERO;
        };
        let from = B256::left_padding_from(self.marketplace.as_slice());
        logs.iter()
            .filter(|l| {
                l.address == self.token
                    && l.topics.first() == Some(&TRANSFER)
                    && l.topics.get(1) == Some(&from)
            })
            .filter_map(|l| U256::try_from_be_slice(&l.data))
            .fold(U256::ZERO, |a, b| a.saturating_add(b))
    }

    /// Whether every commit made so far is on the disk.
    fn all_durable(&mut self) -> bool {
        let store = self.engine.ledger_port();
        store.durable_through(store.commits())
    }

    /// Sends the held transactions whose commits are durable now; whether any went.
    fn send_durable(&mut self, reg: &Registry) -> bool {
        let mut sent = false;
        while let Some((need, ..)) = self.held_sends.front() {
            if !self.engine.ledger_port().durable_through(*need) {
                break;
            }
            let Some((_, call, method, params)) = self.held_sends.pop_front() else {
                break;
            };
            let id = self.client.call(reg, method, &params, Instant::now());
            self.calls.insert(id, (Purpose::Tx(call), Instant::now()));
            sent = true;
        }
        sent
    }

    fn run_tx_actions(&mut self, reg: &Registry) {
        // A bounded slice at a time, so that a pump can stop between slices.
        let n = self.tx_actions.len().min(64);
        let actions: Vec<TxAction<TxTag>> = self.tx_actions.drain(..n).collect();
        for a in actions {
            match a {
                // What the chain sees must not run ahead of what the disk holds.
                TxAction::Call(call @ TxCall::Send(_), method, params)
                    if !self.held_sends.is_empty() || !self.all_durable() =>
                {
                    let need = self.engine.ledger_port().commits();
                    self.held_sends.push_back((need, call, method, params));
                }
                TxAction::Call(tag, method, params) => {
                    let id = self.client.call(reg, method, &params, Instant::now());
                    self.calls.insert(id, (Purpose::Tx(tag), Instant::now()));
                }
                TxAction::Done(TxTag::Mark(slot, period), res) => {
                    self.on_mark_done(slot, period, res)
                }
                TxAction::Done(TxTag::Sale(t), res) => {
                    if self.proving.remove(&t) {
                        if res.is_ok() {
                            self.metrics.proofs_submitted.inc();
                        } else {
                            self.metrics.proofs_missed.inc();
                        }
                    }
                    if let Ok(m) = &res {
                        let got = self.transfers_from_marketplace(&m.logs);
                        if !got.is_zero() {
                            let e = self.received.entry(t.slot).or_default();
                            *e = e.saturating_add(got);
                        }
                    }
                    if let Some(slot) = self.reserving.remove(&t) {
                        if res.is_ok() {
                            if let Err(e) = self
                                .engine
                                .ledger_port()
                                .record_chain_reservation(slot.request_id, slot.slot_index)
                            {
                                log::warn!(target: "codex::store", "recording the reservation of slot {} of {}: {e}", slot.slot_index, short(&slot.request_id));
                            }
                        }
                    }
                    let res = res.map(|_| ()).map_err(|e| sale_tx_error(&e));
                    self.engine
                        .handle(ChainTime(self.now), EngineInput::Reply(t, Input::Tx(res)));
                }
                TxAction::Log(line) => log::info!(target: "codex::chain", "{line}"),
                TxAction::Undone(TxTag::Sale(t), "reserveSlot") => {
                    // The record would skip canReserveSlot for a reservation that is gone.
                    if let Err(e) = self
                        .engine
                        .ledger_port()
                        .forget_chain_reservation(t.slot.request_id, t.slot.slot_index)
                    {
                        log::warn!(target: "codex::store", "forgetting the reservation of slot {} of {}: {e}", t.slot.slot_index, short(&t.slot.request_id));
                    }
                }
                TxAction::Undone(TxTag::Sale(t), label) => {
                    log::warn!(target: "codex::sales", "slot {} of {}: its {label} was reorganised out after its sale ended; reading the slot again", t.slot.slot_index, short(&t.slot.request_id));
                    // The history already has this sale, with its payout.
                    self.repaying.insert(t.slot);
                    self.engine
                        .handle(ChainTime(self.now), EngineInput::ResumeSlot(t.slot));
                }
                TxAction::Undone(TxTag::Mark(..), _) => {}
            }
        }
    }
}

fn sale_err(e: impl std::fmt::Display) -> SaleChainError {
    SaleChainError(format!("cannot decode a view: {e}"))
}

/// What a failed transaction means for a sale: a revert (decoded) is the contract's answer;
/// everything else may succeed when tried again.
fn sale_tx_error(e: &TxFailure) -> TxError {
    match e {
        TxFailure::Estimate(c) => match c.revert_data() {
            Some(data) => TxError::Reverted(revert_of(&MarketError::from_revert_data(&data))),
            None => TxError::Transient(c.to_string()),
        },
        TxFailure::Reverted { .. } => TxError::Reverted(Revert::Other(e.to_string())),
        TxFailure::Rejected(_) | TxFailure::Transient(_) => TxError::Transient(e.to_string()),
    }
}

/// The sale's view of a decoded revert.
fn revert_of(e: &MarketError) -> Revert {
    match e {
        MarketError::SlotNotFree => Revert::SlotNotFree,
        MarketError::SlotIsFree => Revert::SlotIsFree,
        MarketError::ReservationNotAllowed => Revert::ReservationNotAllowed,
        MarketError::InvalidProof => Revert::ProofInvalid,
        MarketError::ProofAlreadySubmitted => Revert::ProofAlreadySubmitted,
        MarketError::AlreadyPaid => Revert::AlreadyPaid,
        MarketError::InvalidSlotHost => Revert::InvalidSlotHost,
        other => Revert::Other(other.to_string()),
    }
}
