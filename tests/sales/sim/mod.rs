//! A deterministic in-memory model of the Marketplace contract and its chain, for whole-sale
//! simulations of the sales core (`docs/marketplace.md`, TestMarketplace semantics).
//!
//! Include it from a test crate with `mod sim;` and `use sim::*;` (it re-exports the
//! library's market types: `RequestId`, `SlotId`, `Ask`, `Request`, `MarketEvent`, `U256`, ...).
//!
//! # Pieces
//! - [`Chain`]: the block producer. Blocks have a number, a timestamp and a hash derived from
//!   the seed. Transactions execute in the *pending* block (number latest + 1, timestamp
//!   [`Chain::pending_timestamp`]); [`Chain::mine`] seals it. The next block comes
//!   `block_time` seconds later unless time is moved: [`World::advance_time`] is
//!   `evm_increaseTime`, [`World::set_next_timestamp`] is `evm_setNextBlockTimestamp` (equal
//!   timestamps are allowed, as on anvil). Chain time ([`World::now`]) is the latest block's
//!   timestamp. Events come back as [`Log`]s: the library's `MarketEvent` plus block number,
//!   block timestamp and log index. [`Chain::logs`]`(from, to)` is `eth_getLogs` over the kept
//!   history (for restart backfill).
//! - [`Marketplace`]: the contract. Requests, slots, reservations, proofs, slashing, forced
//!   free, failure, payouts, withdrawals, exactly per `docs/marketplace.md` (from
//!   `#request-and-slot-states` to `#payouts`). A transaction checks everything
//!   before it changes anything; a failure is a [`Revert`] named like the contract's custom
//!   error (`SlotNotFree`, `ReservationRequired`, `InvalidProof`, ..., with
//!   [`Revert::selector`]), raised in the contract's check order, and leaves no trace.
//!   Payouts, refunds, collateral and validator rewards move real [`Token`] balances
//!   (`world.market.token`; [`World::fund`] mints and approves).
//! - [`World`] = chain + marketplace. Transactions as a sender, executed in the pending block,
//!   their events queued for the next mined block: `request_storage`, `reserve_slot`,
//!   `fill_slot`, `submit_proof`, `free_slot`, `free_slot_to`, `withdraw_funds`,
//!   `withdraw_funds_to`, `mark_proof_as_missing`, `forcibly_free_slot`. Views through a
//!   [`View`]: [`World::pending`] is `eth_call` at `pending` (how nim-codex asks about proofs
//!   and states: block latest + 1), [`World::latest`] at `latest`. A view has every contract
//!   getter (`request_state`, `slot_state`, `get_active_slot`, `get_host`,
//!   `current_collateral`, `request_end`, `request_expiry`, `my_slots`, `can_reserve_slot`,
//!   `is_proof_required`, `will_proof_be_required`, `get_challenge`, `get_pointer`,
//!   `missing_proofs`, `can_mark_proof_as_missing`, ...) plus `proof_for(id, index)` /
//!   `proof_for_slot(slot)` (a proof valid in that block) and `slot_summary(slot)`.
//! - Actors, acting after each mined block: [`Validator`] marks missed proofs in the first
//!   block after each period (within the timeout); [`ScriptedHost`] competes for announced and
//!   freed slots under a [`HostPolicy`] (take probability, reaction delay, [`Proving`]
//!   behaviour such as `Never` or `MissProbability`), proves once per period like nim-codex,
//!   and collects payouts; [`ScriptedClient`] withdraws after its requests end, which is what
//!   emits `RequestCancelled`.
//! - [`Sim`]: a `World` (it derefs to one) plus actors. [`Sim::mine`] seals a block, lets
//!   the actors react (their transactions go into the next block, ahead of yours) and returns
//!   the [`Block`]. [`Sim::seal`] + [`Sim::run_actors`] let your code go first instead.
//!   [`Sim::run_until`], [`Sim::mine_blocks`] and [`Sim::run_to_next_period`] mine several.
//!
//! # A test loop
//! ```ignore
//! let mut sim = Sim::new(SimConfig::default());      // local config, 12 s blocks
//! let me = account(1);
//! sim.fund(me, U256::from(1_000_000_000u64));        // mint + approve the Marketplace
//! sim.add_validator(account(2));
//! sim.add_host(ScriptedHost::new(account(3), HostPolicy::default(), 7)); // a competitor
//! let client = account(4);
//! sim.fund(client, U256::from(1_000_000_000_000u64));
//! let request = sim.new_request(client, small_ask(), 600); // expiry relative, 600 s
//! let id = sim.request_storage(client, request)?;
//! loop {
//!     let block = sim.mine();
//!     for log in &block.logs {
//!         // core.handle(ChainTime(block.header.timestamp), EngineInput::Event(log.event.clone()))
//!     }
//!     // core outputs become calls, e.g.:
//!     sim.reserve_slot(me, id, 0)?;
//!     let proof = sim.pending().proof_for(id, 0)?;   // what the prover would produce
//!     sim.fill_slot(me, id, 0, &proof)?;             // Err(Revert::SlotNotFree) if beaten
//!     let slot = SlotId::of(id, 0);
//!     if sim.pending().is_proof_required(slot) || sim.pending().will_proof_be_required(slot) {
//!         let p = sim.pending().proof_for_slot(slot).unwrap();
//!         sim.submit_proof(me, slot, &p)?;
//!     }
//!     sim.check_accounting().unwrap();               // contract balance == in − out ≥ owed
//! }
//! ```
//!
//! # Proofs
//! With [`ProofMode::AnyNonZero`] (TestVerifier, the default) any non-zero proof passes.
//! With [`ProofMode::Strict`] a proof must equal [`proof_for`]`(challenge, merkleRoot,
//! index)` for the challenge of the block the transaction executes in, so a host that reads
//! the challenge, waits, and sends after the pointer wrapped or the period changed gets
//! `InvalidProof`, as with the real verifier. Read the challenge with [`View::get_challenge`]
//! and "compute" the proof with [`proof_for`]. [`SimConfig::market`] can set `downtime = 0`
//! so that (with proofProbability 1) every period after the fill period requires a proof.
//!
//! # Determinism and cost
//! Block hashes come from `SimConfig::seed`; actors take their own seeds; every map uses a
//! fixed hasher and transaction order comes from ordered collections, so the same seed gives
//! the same run. Block hashes and challenges of the last 512 blocks are cached, so proof
//! checks do no hashing; per-slot proof bookkeeping keeps only the periods still queryable.
//! The main cost is one check per Filled slot per period for the validator and for the host
//! holding it (about 1 µs each in a debug build): a few dozen concurrent slots over two
//! months at the 120 s period run in a few seconds (see the soak in `tests/sim_model.rs`);
//! for thousands of concurrent slots use a longer `period`. Turn off log history with
//! `sim.chain.set_keep_history(false)` when `eth_getLogs` is not needed.
#![allow(dead_code, unused_imports)]

pub mod actors;
pub mod chain;
pub mod fasthash;
pub mod market;
pub mod token;

use std::ops::{Deref, DerefMut};

pub use actors::{HostPolicy, HostStats, Proving, ScriptedClient, ScriptedHost, Validator};
pub use chain::{Block, BlockHeader, BlockTag, Chain, Ctx, Log};
pub use codex::market::{
    keccak256, Address, Ask, Content, Groth16Proof, MarketEvent, MarketplaceConfig, Request,
    RequestId, RequestState, SlotId, SlotState, B256, U256,
};
pub use market::{
    challenge_to_field_element, proof_for, Marketplace, ProofMode, RequestRecord, Revert,
    SlotRecord, SlotSummary, Totals, MARKETPLACE_ADDRESS,
};
pub use token::Token;

/// A deterministic account address: `account(0)`, `account(1)`, ...
pub fn account(i: u64) -> Address {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(b"sim-acct");
    buf[8..].copy_from_slice(&i.to_be_bytes());
    Address::from_slice(&keccak256(buf)[12..])
}

/// A small valid ask: 3 slots of 1,024 bytes, collateral 1 per byte (1,024 per slot), price 1
/// per byte per second, one day, proof probability 1 (a proof every period), 1 slot may be lost.
pub fn small_ask() -> Ask {
    Ask {
        proof_probability: U256::from(1u8),
        price_per_byte_per_second: U256::from(1u8),
        collateral_per_byte: U256::from(1u8),
        slots: 3,
        slot_size: 1024,
        duration: 86_400,
        max_slot_loss: 1,
    }
}

/// Settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of block hashes and of the simulation's own randomness.
    pub seed: u64,
    /// The Marketplace configuration (default: the local values,
    /// `docs/marketplace.md#local-configuration`).
    pub market: MarketplaceConfig,
    /// How proofs are verified.
    pub proof_mode: ProofMode,
    /// Number of the latest block at the start (must be above 256).
    pub genesis_number: u64,
    /// Timestamp of the latest block at the start.
    pub genesis_timestamp: u64,
    /// Seconds between mined blocks.
    pub block_time: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            market: MarketplaceConfig::default(),
            proof_mode: ProofMode::AnyNonZero,
            genesis_number: 1_000,
            genesis_timestamp: 1_750_000_000,
            block_time: 12,
        }
    }
}

/// The chain and the Marketplace: transactions and views.
#[derive(Debug, Clone)]
pub struct World {
    /// The block producer and event log.
    pub chain: Chain,
    /// The contract (with its token in `market.token`).
    pub market: Marketplace,
    /// Transactions sent.
    pub tx_count: u64,
    /// Transactions that reverted.
    pub revert_count: u64,
}

/// Views evaluated in one block (`eth_call` at a block tag).
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The contract.
    pub market: &'a Marketplace,
    /// The block the views execute in.
    pub cx: Ctx<'a>,
}

impl View<'_> {
    /// `block.timestamp` of this view.
    pub fn timestamp(&self) -> u64 {
        self.cx.timestamp
    }
    /// `block.number` of this view.
    pub fn number(&self) -> u64 {
        self.cx.number
    }
    /// The proof period of this block.
    pub fn period(&self) -> u64 {
        self.market.configuration().period_of(self.cx.timestamp)
    }
    /// `requestState`.
    pub fn request_state(&self, id: RequestId) -> Result<RequestState, Revert> {
        self.market.request_state(&self.cx, id)
    }
    /// `slotState`.
    pub fn slot_state(&self, slot: SlotId) -> SlotState {
        self.market.slot_state(&self.cx, slot)
    }
    /// `getRequest`.
    pub fn get_request(&self, id: RequestId) -> Result<Request, Revert> {
        self.market.get_request(id).cloned()
    }
    /// `getActiveSlot`.
    pub fn get_active_slot(&self, slot: SlotId) -> Result<(Request, u64), Revert> {
        self.market.get_active_slot(slot)
    }
    /// `getHost`.
    pub fn get_host(&self, slot: SlotId) -> Address {
        self.market.get_host(slot)
    }
    /// `currentCollateral`.
    pub fn current_collateral(&self, slot: SlotId) -> U256 {
        self.market.current_collateral(slot)
    }
    /// `missingProofs`.
    pub fn missing_proofs(&self, slot: SlotId) -> u64 {
        self.market.missing_proofs(slot)
    }
    /// `requestEnd`.
    pub fn request_end(&self, id: RequestId) -> Result<u64, Revert> {
        self.market.request_end(&self.cx, id)
    }
    /// `requestExpiry`.
    pub fn request_expiry(&self, id: RequestId) -> u64 {
        self.market.request_expiry(id)
    }
    /// `mySlots` as `who`.
    pub fn my_slots(&self, who: Address) -> Vec<SlotId> {
        self.market.my_slots(who)
    }
    /// `myRequests` as `who`.
    pub fn my_requests(&self, who: Address) -> Vec<RequestId> {
        self.market.my_requests(who)
    }
    /// `canReserveSlot` as `who`.
    pub fn can_reserve_slot(&self, who: Address, id: RequestId, index: u64) -> bool {
        self.market.can_reserve_slot(&self.cx, who, id, index)
    }
    /// `isProofRequired`.
    pub fn is_proof_required(&self, slot: SlotId) -> bool {
        self.market.is_proof_required(&self.cx, slot)
    }
    /// `willProofBeRequired`.
    pub fn will_proof_be_required(&self, slot: SlotId) -> bool {
        self.market.will_proof_be_required(&self.cx, slot)
    }
    /// `getChallenge`.
    pub fn get_challenge(&self, slot: SlotId) -> B256 {
        self.market.get_challenge(&self.cx, slot)
    }
    /// `getPointer`.
    pub fn get_pointer(&self, slot: SlotId) -> u8 {
        self.market.get_pointer(&self.cx, slot)
    }
    /// `slotProbability`.
    pub fn slot_probability(&self, slot: SlotId) -> U256 {
        self.market.slot_probability(slot)
    }
    /// `canMarkProofAsMissing`.
    pub fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<(), Revert> {
        self.market
            .can_mark_proof_as_missing(&self.cx, slot, period)
    }
    /// State, host and proof requirement of `slot` in one pass (None if never filled).
    pub fn slot_summary(&self, slot: SlotId) -> Option<SlotSummary> {
        self.market.slot_summary(&self.cx, slot)
    }
    /// A proof valid for the (once) filled `slot` if executed in this block.
    pub fn proof_for_slot(&self, slot: SlotId) -> Option<Groth16Proof> {
        self.market.proof_for_slot(&self.cx, slot)
    }
    /// A proof valid for slot `index` of `id` if executed in this block.
    pub fn proof_for(&self, id: RequestId, index: u64) -> Result<Groth16Proof, Revert> {
        self.market.proof_at(&self.cx, id, index)
    }
}

impl World {
    /// `eth_call` views with `pending` (block latest + 1): where transactions execute.
    pub fn pending(&self) -> View<'_> {
        self.view(BlockTag::Pending)
    }
    /// `eth_call` views with `latest`.
    pub fn latest(&self) -> View<'_> {
        self.view(BlockTag::Latest)
    }
    /// Views at `tag`.
    pub fn view(&self, tag: BlockTag) -> View<'_> {
        View {
            market: &self.market,
            cx: self.chain.ctx(tag),
        }
    }

    /// Chain time: the latest block's timestamp.
    pub fn now(&self) -> u64 {
        self.chain.now()
    }
    /// The latest block number.
    pub fn block_number(&self) -> u64 {
        self.chain.latest().number
    }
    /// Moves the pending block's timestamp forward (`evm_increaseTime`).
    pub fn advance_time(&mut self, secs: u64) {
        self.chain.advance_time(secs);
    }
    /// Sets the pending block's timestamp (`evm_setNextBlockTimestamp`).
    pub fn set_next_timestamp(&mut self, t: u64) {
        self.chain.set_next_timestamp(t);
    }

    /// Mints `amount` to `who` and lets the Marketplace spend all of it (approve max).
    pub fn fund(&mut self, who: Address, amount: U256) {
        self.market.token.mint(who, amount);
        self.market
            .token
            .approve(who, MARKETPLACE_ADDRESS, U256::MAX);
    }
    /// The token balance of `who`.
    pub fn balance_of(&self, who: Address) -> U256 {
        self.market.token.balance_of(who)
    }

    fn tx(
        &mut self,
        f: impl FnOnce(&mut Marketplace, &Ctx) -> Result<Vec<MarketEvent>, Revert>,
    ) -> Result<(), Revert> {
        self.tx_count += 1;
        let cx = self.chain.ctx(BlockTag::Pending);
        match f(&mut self.market, &cx) {
            Ok(events) => {
                self.chain.emit(events);
                Ok(())
            }
            Err(e) => {
                self.revert_count += 1;
                Err(e)
            }
        }
    }

    /// A request from `client` with a fresh nonce derived from `nonce`, a non-empty CID and a
    /// merkle root derived from the nonce.
    pub fn make_request(client: Address, ask: Ask, expiry: u64, nonce: u64) -> Request {
        let n = keccak256(nonce.to_be_bytes());
        Request {
            client,
            ask,
            content: Content {
                cid: format!("zDvSimCid{nonce}").into_bytes(),
                merkle_root: keccak256(n),
            },
            expiry,
            nonce: n,
        }
    }

    /// `requestStorage` sent by `from`; returns the request id.
    pub fn request_storage(
        &mut self,
        from: Address,
        request: Request,
    ) -> Result<RequestId, Revert> {
        let id = request.id();
        self.tx(|m, cx| m.request_storage(cx, from, request))?;
        Ok(id)
    }
    /// `reserveSlot` sent by `from`.
    pub fn reserve_slot(&mut self, from: Address, id: RequestId, index: u64) -> Result<(), Revert> {
        self.tx(|m, cx| m.reserve_slot(cx, from, id, index))
    }
    /// `fillSlot` sent by `from`.
    pub fn fill_slot(
        &mut self,
        from: Address,
        id: RequestId,
        index: u64,
        proof: &Groth16Proof,
    ) -> Result<(), Revert> {
        self.tx(|m, cx| m.fill_slot(cx, from, id, index, proof))
    }
    /// `submitProof` sent by `from`.
    pub fn submit_proof(
        &mut self,
        from: Address,
        slot: SlotId,
        proof: &Groth16Proof,
    ) -> Result<(), Revert> {
        self.tx(|m, cx| m.submit_proof(cx, from, slot, proof))
    }
    /// `freeSlot(slot)` sent by `from` (both recipients = `from`).
    pub fn free_slot(&mut self, from: Address, slot: SlotId) -> Result<(), Revert> {
        self.tx(|m, cx| m.free_slot(cx, from, slot, from, from))
    }
    /// `freeSlot(slot, rewardRecipient, collateralRecipient)` sent by `from`.
    pub fn free_slot_to(
        &mut self,
        from: Address,
        slot: SlotId,
        reward_recipient: Address,
        collateral_recipient: Address,
    ) -> Result<(), Revert> {
        self.tx(|m, cx| m.free_slot(cx, from, slot, reward_recipient, collateral_recipient))
    }
    /// `withdrawFunds(id)` sent by `from` (recipient = `from`).
    pub fn withdraw_funds(&mut self, from: Address, id: RequestId) -> Result<(), Revert> {
        self.tx(|m, cx| m.withdraw_funds(cx, from, id, from))
    }
    /// `withdrawFunds(id, recipient)` sent by `from`.
    pub fn withdraw_funds_to(
        &mut self,
        from: Address,
        id: RequestId,
        recipient: Address,
    ) -> Result<(), Revert> {
        self.tx(|m, cx| m.withdraw_funds(cx, from, id, recipient))
    }
    /// `markProofAsMissing` sent by `from`.
    pub fn mark_proof_as_missing(
        &mut self,
        from: Address,
        slot: SlotId,
        period: u64,
    ) -> Result<(), Revert> {
        self.tx(|m, cx| m.mark_proof_as_missing(cx, from, slot, period))
    }
    /// TestMarketplace's `forciblyFreeSlot`.
    pub fn forcibly_free_slot(&mut self, slot: SlotId) -> Result<(), Revert> {
        self.tx(|m, cx| Ok(m.test_forcibly_free_slot(cx, slot)))
    }

    /// Checks the token-accounting invariants: the Marketplace's balance equals what it
    /// received minus what it sent, and covers what it still owes (client refunds of open
    /// requests and collateral of held slots). Returns a description of the first violation.
    pub fn check_accounting(&self) -> Result<(), String> {
        let t = self.market.totals();
        let bal = self.balance_of(MARKETPLACE_ADDRESS);
        if t.received < t.sent || bal != t.received - t.sent {
            return Err(format!(
                "marketplace balance {bal} != received {} - sent {}",
                t.received, t.sent
            ));
        }
        let owed = self.market.owed(&self.chain.ctx(BlockTag::Pending));
        if bal < owed {
            return Err(format!("marketplace balance {bal} < owed {owed}"));
        }
        Ok(())
    }
}

/// A world plus scripted actors, stepped block by block.
pub struct Sim {
    world: World,
    /// Validators, acting in order after each block.
    pub validators: Vec<Validator>,
    /// Competing hosts, acting in order after the validators.
    pub hosts: Vec<ScriptedHost>,
    /// Scripted clients, acting last.
    pub clients: Vec<ScriptedClient>,
    /// The simulation's own seeded randomness (for tests' random choices).
    pub rng: fastrand::Rng,
    next_nonce: u64,
}

impl Deref for Sim {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

impl Sim {
    /// A simulation; panics when the Marketplace constructor would revert on the config.
    pub fn new(config: SimConfig) -> Sim {
        match Sim::try_new(config) {
            Ok(sim) => sim,
            Err(e) => panic!("invalid Marketplace configuration: {e}"),
        }
    }

    /// A simulation, or the constructor's revert for an invalid Marketplace configuration.
    pub fn try_new(config: SimConfig) -> Result<Sim, Revert> {
        let market = Marketplace::new(config.market, config.proof_mode)?;
        let chain = Chain::new(
            config.seed,
            config.genesis_number,
            config.genesis_timestamp,
            config.block_time,
        );
        Ok(Sim {
            world: World {
                chain,
                market,
                tx_count: 0,
                revert_count: 0,
            },
            validators: Vec::new(),
            hosts: Vec::new(),
            clients: Vec::new(),
            rng: fastrand::Rng::with_seed(config.seed ^ 0x5eed),
            next_nonce: 0,
        })
    }

    /// The world (also reachable through `Deref`).
    pub fn world(&mut self) -> &mut World {
        &mut self.world
    }

    /// Adds a validator acting as `address`; returns its index in `validators`.
    pub fn add_validator(&mut self, address: Address) -> usize {
        self.validators.push(Validator::new(address));
        self.validators.len() - 1
    }

    /// Adds a competing host and funds it with 10^30 tokens; returns its index in `hosts`.
    pub fn add_host(&mut self, host: ScriptedHost) -> usize {
        self.world
            .fund(host.address, U256::from(10u64).pow(U256::from(30u64)));
        self.hosts.push(host);
        self.hosts.len() - 1
    }

    /// Adds a scripted client and funds it with 10^30 tokens; returns its index in `clients`.
    pub fn add_client(&mut self, client: ScriptedClient) -> usize {
        self.world
            .fund(client.address, U256::from(10u64).pow(U256::from(30u64)));
        self.clients.push(client);
        self.clients.len() - 1
    }

    /// A request from `client` with a nonce unique in this simulation.
    pub fn new_request(&mut self, client: Address, ask: Ask, expiry: u64) -> Request {
        self.next_nonce += 1;
        World::make_request(client, ask, expiry, self.next_nonce)
    }

    /// Seals the pending block, lets the actors react to its logs (their transactions go into
    /// the next block) and returns the block.
    pub fn mine(&mut self) -> Block {
        let block = self.seal();
        self.run_actors(&block.logs);
        block
    }

    /// Seals the pending block without running the actors. With [`Sim::run_actors`] this
    /// lets the code under test send its transactions first in the next block (by default,
    /// [`Sim::mine`] lets the actors go first).
    pub fn seal(&mut self) -> Block {
        self.world.chain.mine()
    }

    /// Lets validators, hosts and clients (in that order) react to `logs` of the latest block.
    pub fn run_actors(&mut self, logs: &[Log]) {
        for v in &mut self.validators {
            v.act(&mut self.world);
        }
        for h in &mut self.hosts {
            h.act(&mut self.world, logs);
        }
        for c in &mut self.clients {
            c.act(&mut self.world, logs);
        }
    }

    /// Mines `n` blocks; returns all their logs.
    pub fn mine_blocks(&mut self, n: u64) -> Vec<Log> {
        let mut logs = Vec::new();
        for _ in 0..n {
            logs.extend(self.mine().logs);
        }
        logs
    }

    /// Mines blocks until the latest timestamp is at least `t`; returns all their logs.
    pub fn run_until(&mut self, t: u64) -> Vec<Log> {
        let mut logs = Vec::new();
        while self.world.now() < t {
            logs.extend(self.mine().logs);
        }
        logs
    }

    /// Mines blocks until the pending block is the first one in the next proof period
    /// (so a transaction sent now executes at the start of a period); returns the logs.
    pub fn run_to_next_period(&mut self) -> Vec<Log> {
        let cfg = self.world.market.configuration().clone();
        let target = cfg.period_end(cfg.period_of(self.world.chain.pending_timestamp()));
        let mut logs = Vec::new();
        while self.world.chain.pending_timestamp() < target {
            logs.extend(self.mine().logs);
        }
        logs
    }
}
