//! A test driver that connects the sales engine to the simulated Marketplace (`tests/sim`):
//! it executes the engine's commands against the simulated chain (views at `pending`,
//! transactions in the pending block), feeds blocks and events, and can inject faults and
//! restart the node. Include with `mod sim; mod sales_driver;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use codex::market::{Address, MarketEvent, Request, RequestId, SlotId, U256};
use codex::sales::engine::{
    Command, Engine, EngineConfig, EngineInput, FreedSlotInfo, SaleCommand, Ticket,
};
use codex::sales::ledger::{
    check_invariant, AvailabilityId, Ledger, Limits, MemLedger, NewAvailability,
};
use codex::sales::sale::{
    ChainError, Input, ProofView, Revert as SaleRevert, SaleConfig, SlotRef, SlotView, Tx, TxError,
};
use codex::sales::ChainTime;
use codex::store::{Options, Store};

use crate::sim::{self, Revert, Sim};

/// Faults the driver injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Chance that a transaction fails transiently before it is sent.
    pub tx: f64,
    /// Chance that a view read fails.
    pub read: f64,
    /// Downloads fail.
    pub download: bool,
    /// Proof computations fail.
    pub prove: bool,
}

/// A ledger a node can carry over a restart.
pub trait Reopen: Ledger + Sized {
    /// The ledger as the restarted node finds it.
    fn reopen(&self) -> Self;
}

impl Reopen for MemLedger {
    /// The same state (a node whose memory survives; the simulation's default).
    fn reopen(&self) -> Self {
        self.clone()
    }
}

impl Reopen for Store {
    /// A new connection to the same database file, as a restarted process opens it: the
    /// new engine sees exactly what was committed.
    fn reopen(&self) -> Self {
        Store::open_file(self.path(), Options::node()).expect("reopen the database file")
    }
}

/// One simulated node: the engine plus what the driver observed.
pub struct Node<L: Reopen = MemLedger> {
    pub engine: Engine<L>,
    pub address: Address,
    pub faults: Faults,
    pub rng: fastrand::Rng,
    /// Blocks a download takes.
    pub download_blocks: u64,
    /// Events the node never sees (a lossy subscription).
    pub drop_events: Option<fn(&MarketEvent) -> bool>,
    /// Download completions due: block number → slots.
    downloads: BTreeMap<u64, Vec<Ticket>>,
    /// Every command executed, as text (for assertions on what was asked).
    pub trace: Vec<String>,
    /// Proofs submitted: (slot, period, all-zero?, accepted?).
    pub proofs: Vec<(SlotId, u64, bool, bool)>,
    /// Slots whose data was released.
    pub released: Vec<SlotRef>,
    /// Slots announced as filled by us (onSale).
    pub sold: Vec<SlotRef>,
    /// Downloads started: (slot, request, expiry).
    pub downloads_started: Vec<(SlotRef, Arc<Request>)>,
    /// Proof computations asked for: (slot, challenge).
    pub proves: Vec<(SlotRef, codex::market::B256)>,
    requests: HashMap<RequestId, Arc<Request>>,
    cfg: EngineConfig,
    ended_before_restart: HashMap<&'static str, u64>,
}

pub const QUOTA: u64 = 1 << 40;

/// Engine config matching the simulated Marketplace's configuration.
pub fn engine_config(sim: &Sim, address: Address) -> EngineConfig {
    let m = sim.market.configuration();
    EngineConfig {
        sale: SaleConfig {
            period: m.period,
            downtime: m.downtime,
            repair_reward_percentage: m.repair_reward_percentage,
            signer: address,
            ..SaleConfig::default()
        },
        ..EngineConfig::default()
    }
}

impl Node<MemLedger> {
    /// A started node for `address` with an in-memory ledger, funded on the simulated chain.
    pub fn new(sim: &mut Sim, address: Address, cfg: EngineConfig, seed: u64) -> Node {
        Node::with_ledger(sim, address, cfg, seed, MemLedger::new())
    }
}

impl<L: Reopen> Node<L> {
    /// A started node for `address` over `ledger`, funded on the simulated chain.
    pub fn with_ledger(
        sim: &mut Sim,
        address: Address,
        cfg: EngineConfig,
        seed: u64,
        ledger: L,
    ) -> Node<L> {
        sim.fund(address, U256::from(10u64).pow(U256::from(30u64)));
        let (engine, _) = Engine::start(
            cfg.clone(),
            ledger,
            fastrand::Rng::with_seed(seed),
            &[],
            ChainTime(sim.now()),
        )
        .expect("valid engine config");
        Node {
            engine,
            address,
            faults: Faults::default(),
            rng: fastrand::Rng::with_seed(seed ^ 0xfa17),
            download_blocks: 1,
            drop_events: None,
            downloads: BTreeMap::new(),
            trace: Vec::new(),
            proofs: Vec::new(),
            released: Vec::new(),
            sold: Vec::new(),
            downloads_started: Vec::new(),
            proves: Vec::new(),
            requests: HashMap::new(),
            cfg,
            ended_before_restart: HashMap::new(),
        }
    }

    /// Adds an availability and tells the engine (as the REST handler would).
    pub fn add_availability(
        &mut self,
        sim: &Sim,
        n: u8,
        size: u64,
        duration: u64,
        min_price: u64,
        collateral: u64,
    ) -> AvailabilityId {
        let id = AvailabilityId([n; 32]);
        self.engine
            .ledger_mut()
            .create_availability(
                id,
                NewAvailability {
                    total_size: size,
                    duration,
                    min_price_per_byte_per_second: U256::from(min_price),
                    total_collateral: U256::from(collateral),
                    enabled: true,
                    until: 0,
                },
                Limits {
                    quota: QUOTA,
                    now: sim.now(),
                },
            )
            .expect("valid availability");
        // Commands this produces run at the next step's pump.
        self.engine.handle(
            ChainTime(sim.now()),
            EngineInput::AvailabilityChanged { grew: true },
        );
        id
    }

    /// Mines one block and feeds it (events, time, due downloads); returns its events.
    pub fn step(&mut self, sim: &mut Sim) -> Vec<MarketEvent> {
        let block = sim.mine();
        let now = block.header.timestamp;
        let events: Vec<MarketEvent> = block.logs.iter().map(|l| l.event.clone()).collect();
        for e in &events {
            if self.drop_events.is_some_and(|drop| drop(e)) {
                continue;
            }
            self.engine
                .handle(ChainTime(now), EngineInput::Event(e.clone()));
            self.pump(sim);
        }
        self.engine.handle(ChainTime(now), EngineInput::Time);
        self.pump(sim);
        let due: Vec<u64> = self
            .downloads
            .range(..=block.header.number)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            for ticket in self.downloads.remove(&k).unwrap_or_default() {
                let slot = ticket.slot;
                let input = if self.faults.download {
                    Input::Downloaded(Err("simulated download failure".into()))
                } else {
                    let size = self
                        .engine
                        .sale(slot)
                        .and_then(|s| s.reservation().map(|r| r.slot_size))
                        .unwrap_or(0);
                    self.engine.handle(
                        ChainTime(now),
                        EngineInput::Reply(ticket, Input::DownloadProgress(size)),
                    );
                    Input::Downloaded(Ok(()))
                };
                self.engine
                    .handle(ChainTime(now), EngineInput::Reply(ticket, input));
                self.pump(sim);
            }
        }
        self.check_ledger();
        events
    }

    /// Steps until chain time reaches `t`.
    pub fn run_until(&mut self, sim: &mut Sim, t: u64) {
        while sim.now() < t {
            self.step(sim);
        }
    }

    /// Steps `n` blocks.
    pub fn run_blocks(&mut self, sim: &mut Sim, n: u64) {
        for _ in 0..n {
            self.step(sim);
        }
    }

    /// Asserts the ledger's accounting invariant.
    pub fn check_ledger(&self) {
        let l = self.engine.ledger();
        check_invariant(
            &l.availabilities().unwrap(),
            &l.reservations().unwrap(),
            Some(QUOTA),
        )
        .unwrap();
    }

    /// Sales ended, by final state, over all engines of this node (restarts included).
    pub fn ended(&self) -> HashMap<&'static str, u64> {
        let mut all = self.ended_before_restart.clone();
        for (k, v) in self.engine.stats().ended_by_state().filter(|&(_, v)| v > 0) {
            *all.entry(k).or_default() += v;
        }
        all
    }

    /// Restarts the node: a new engine over the ledger reopened ([`Reopen`]), restored from `mySlots`;
    /// in-flight downloads are lost. Backfills StorageRequested events of the last
    /// `backfill_blocks` blocks (eth_getLogs).
    pub fn restart(&mut self, sim: &mut Sim, backfill_blocks: u64) {
        let ledger = self.engine.ledger().reopen();
        let now = sim.now();
        let pending = sim.pending();
        let mine: Vec<(RequestId, u64)> = pending
            .my_slots(self.address)
            .into_iter()
            .filter_map(|s| pending.get_active_slot(s).ok())
            .map(|(r, i)| (r.id(), i))
            .collect();
        let (engine, _) = Engine::start(
            self.cfg.clone(),
            ledger,
            fastrand::Rng::with_seed(self.rng.u64(..)),
            &mine,
            ChainTime(now),
        )
        .expect("restore");
        for (k, v) in self.engine.stats().ended_by_state().filter(|&(_, v)| v > 0) {
            *self.ended_before_restart.entry(k).or_default() += v;
        }
        self.engine = engine;
        self.downloads.clear();
        let latest = sim.block_number();
        let logs: Vec<MarketEvent> = sim
            .chain
            .logs(latest.saturating_sub(backfill_blocks), latest)
            .iter()
            .map(|l| l.event.clone())
            .collect();
        self.pump(sim);
        for e in logs {
            if matches!(e, MarketEvent::StorageRequested { .. }) {
                self.engine.handle(ChainTime(now), EngineInput::Event(e));
                self.pump(sim);
            }
        }
        self.check_ledger();
    }

    fn request(&mut self, sim: &Sim, id: RequestId) -> Option<Arc<Request>> {
        if let Some(r) = self.requests.get(&id) {
            return Some(r.clone());
        }
        let r = Arc::new(sim.pending().get_request(id).ok()?);
        self.requests.insert(id, r.clone());
        Some(r)
    }

    fn read_fails(&mut self) -> bool {
        self.faults.read > 0.0 && self.rng.f64() < self.faults.read
    }

    /// Executes every pending command.
    pub fn pump(&mut self, sim: &mut Sim) {
        while let Some(cmd) = self.engine.poll() {
            self.execute(sim, cmd);
        }
    }

    fn execute(&mut self, sim: &mut Sim, cmd: Command) {
        let now = sim.now();
        match cmd {
            Command::Sale(ticket, out) => {
                self.trace
                    .push(format!("{}:{:?}", ticket.slot.slot_index, kind(&out)));
                if let Some(input) = self.sale_output(sim, ticket, out) {
                    self.engine
                        .handle(ChainTime(now), EngineInput::Reply(ticket, input));
                }
            }
            Command::Recheck(t) => {
                let s = t.slot;
                let mut view = match self.sale_output(
                    sim,
                    Ticket { slot: s, seq: 0 },
                    SaleCommand::ReadSlot(s),
                ) {
                    Some(Input::Slot(view)) => view,
                    _ => unreachable!("a slot read answers with a slot view"),
                };
                // A re-check asks whether the request is still on the chain: no cache.
                if let Ok(v) = &mut view {
                    v.request = sim.pending().get_request(s.request_id).ok().map(Arc::new);
                }
                self.engine
                    .handle(ChainTime(now), EngineInput::Rechecked(t, view));
            }
            Command::ReleaseData(slot) => self.released.push(slot),
            Command::Ended(_) => {}
            Command::ReadRequestState(id) => {
                let state = if self.read_fails() {
                    Err(ChainError("simulated read failure".into()))
                } else {
                    Ok(sim.pending().request_state(id).ok())
                };
                self.engine
                    .handle(ChainTime(now), EngineInput::RequestState(id, state));
            }
            Command::LookupFreedSlot {
                request_id,
                slot_index,
            } => {
                let info = self.request(sim, request_id).and_then(|r| {
                    let p = sim.pending();
                    Some(FreedSlotInfo {
                        ask: r.ask.clone(),
                        request_state: p.request_state(request_id).ok()?,
                        expires_at: p.request_expiry(request_id),
                        ends_at: p.request_end(request_id).ok()?,
                    })
                });
                self.engine.handle(
                    ChainTime(now),
                    EngineInput::FreedSlot {
                        request_id,
                        slot_index,
                        info: Ok(info),
                    },
                );
            }
        }
    }

    fn sale_output(&mut self, sim: &mut Sim, ticket: Ticket, out: SaleCommand) -> Option<Input> {
        match out {
            SaleCommand::ReadSlot(s) => {
                if self.read_fails() {
                    return Some(Input::Slot(Err(ChainError("simulated".into()))));
                }
                let request = self.request(sim, s.request_id);
                let p = sim.pending();
                Some(Input::Slot(Ok(SlotView {
                    request,
                    request_state: p.request_state(s.request_id).ok(),
                    slot_state: p.slot_state(s.slot_id()),
                    expires_at: p.request_expiry(s.request_id),
                    ends_at: p.request_end(s.request_id).unwrap_or(0),
                    host: p.get_host(s.slot_id()),
                    current_collateral: p.current_collateral(s.slot_id()),
                })))
            }
            SaleCommand::ReadProof(s) => {
                if self.read_fails() {
                    return Some(Input::Proof(Err(ChainError("simulated".into()))));
                }
                let p = sim.pending();
                Some(Input::Proof(Ok(ProofView {
                    slot_state: p.slot_state(s.slot_id()),
                    pointer: p.get_pointer(s.slot_id()),
                    required: p.is_proof_required(s.slot_id()),
                    will_be_required: p.will_proof_be_required(s.slot_id()),
                    challenge: p.get_challenge(s.slot_id()),
                })))
            }
            SaleCommand::CanReserve(s) => Some(Input::CanReserve(Ok(sim
                .pending()
                .can_reserve_slot(self.address, s.request_id, s.slot_index)))),
            SaleCommand::Send(tx) => {
                if self.faults.tx > 0.0 && self.rng.f64() < self.faults.tx {
                    return Some(Input::Tx(Err(TxError::Transient("simulated".into()))));
                }
                let me = self.address;
                let res = match &tx {
                    Tx::ReserveSlot { slot } => {
                        sim.reserve_slot(me, slot.request_id, slot.slot_index)
                    }
                    Tx::FillSlot { slot, proof, .. } => {
                        sim.fill_slot(me, slot.request_id, slot.slot_index, proof)
                    }
                    Tx::SubmitProof { slot, proof } => {
                        let period = sim.pending().period();
                        let r = sim.submit_proof(me, slot.slot_id(), proof);
                        self.proofs
                            .push((slot.slot_id(), period, proof.is_zero(), r.is_ok()));
                        r
                    }
                    Tx::FreeSlot { slot } => sim.free_slot(me, slot.slot_id()),
                };
                Some(Input::Tx(res.map_err(|e| TxError::Reverted(map_revert(e)))))
            }
            SaleCommand::Download { slot, request, .. } => {
                self.downloads_started.push((slot, request));
                let at = sim.block_number() + self.download_blocks;
                self.downloads.entry(at).or_default().push(ticket);
                None
            }
            SaleCommand::Prove {
                slot, challenge, ..
            } => {
                self.proves.push((slot, challenge));
                if self.faults.prove {
                    return Some(Input::Proved(Err("simulated proof failure".into())));
                }
                let p = sim.pending().proof_for(slot.request_id, slot.slot_index);
                Some(Input::Proved(p.map(Box::new).map_err(|e| e.to_string())))
            }
            SaleCommand::UpdateExpiry { .. } => Some(Input::ExpiryUpdated(Ok(()))),
            SaleCommand::Filled(s) => {
                self.sold.push(s);
                None
            }
        }
    }
}

fn kind(o: &SaleCommand) -> &'static str {
    match o {
        SaleCommand::ReadSlot(_) => "ReadSlot",
        SaleCommand::ReadProof(_) => "ReadProof",
        SaleCommand::CanReserve(_) => "CanReserve",
        SaleCommand::Send(Tx::ReserveSlot { .. }) => "ReserveSlot",
        SaleCommand::Send(Tx::FillSlot { .. }) => "FillSlot",
        SaleCommand::Send(Tx::SubmitProof { .. }) => "SubmitProof",
        SaleCommand::Send(Tx::FreeSlot { .. }) => "FreeSlot",
        SaleCommand::Download { .. } => "Download",
        SaleCommand::Prove { .. } => "Prove",
        SaleCommand::UpdateExpiry { .. } => "UpdateExpiry",
        SaleCommand::Filled(_) => "Filled",
    }
}

/// The market layer's revert decoding, as the driver maps it.
pub fn map_revert(e: Revert) -> SaleRevert {
    match e {
        Revert::SlotNotFree => SaleRevert::SlotNotFree,
        Revert::SlotIsFree => SaleRevert::SlotIsFree,
        Revert::ReservationNotAllowed => SaleRevert::ReservationNotAllowed,
        Revert::InvalidProof => SaleRevert::ProofInvalid,
        Revert::ProofAlreadySubmitted => SaleRevert::ProofAlreadySubmitted,
        Revert::AlreadyPaid => SaleRevert::AlreadyPaid,
        Revert::InvalidSlotHost => SaleRevert::InvalidSlotHost,
        other => SaleRevert::Other(other.to_string()),
    }
}

/// A client account funded for requests.
pub fn client(sim: &mut Sim) -> Address {
    let c = sim::account(900);
    sim.fund(c, U256::from(10u64).pow(U256::from(30u64)));
    c
}

/// Posts a request from `client`; returns its id.
pub fn post(sim: &mut Sim, client: Address, ask: codex::market::Ask, expiry: u64) -> RequestId {
    let r = sim.new_request(client, ask, expiry);
    sim.request_storage(client, r).expect("request accepted")
}
