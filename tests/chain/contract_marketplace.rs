//! Behaviour of the fixture Marketplace (fixtures/chain/contracts) on a real anvil, driven
//! through codex's own chain client and ABI code, as `docs/marketplace.md` describes it: every
//! revert that a client or host can hit (`#functions`), the request and slot state rules
//! (`#request-and-slot-states`), reservations (`#reservations`), fills and repair collateral
//! (`#fill-and-collateral`), the proof pointer/challenge/requirement (`#proof-requirement`),
//! slashing and forced frees (`#slashing-and-forced-free`), and exact token amounts of payouts
//! and refunds (`#timing-and-money`, `#payouts`).
//!
//! Each test starts its own anvil on a free port with the fixture deployed
//! (`fixtures/chain/devchain.mjs --deploy-only`); the guard kills it when the test ends. Time
//! moves with `evm_setNextBlockTimestamp` + `evm_mine`, never with sleeps. Every revert is
//! decoded by codex's `MarketError` and compared by name.
//!
//! # Coverage (the reverts of the functions, the state rules, the amounts)
//!
//! A row names a function, or else the rule of `docs/marketplace.md` it checks: request state
//! and slot state (`#request-and-slot-states`), amounts (`#timing-and-money`), payouts
//! (`#payouts`), slashing (`#slashing-and-forced-free`).
//!
//! Test names are abbreviated: `request_storage` = request_storage_rejects_bad_requests_with_named_errors,
//! `views` = views_of_unknown_ids_and_the_local_configuration, `fill_rules` =
//! reservations_fills_and_proof_submission_follow_the_rules, `finished` =
//! finished_request_pays_hosts_for_their_time_and_refunds_the_rest, `cancelled` =
//! cancelled_request_pays_hosts_until_expiry_and_refunds_the_rest, `slashing` =
//! missed_proofs_are_slashed_and_too_many_free_the_slot_and_fail_the_request, `repair` =
//! repair_takes_discounted_collateral_and_returns_it_in_full, `edges` =
//! fill_and_free_edges_collateral_errors_and_start_not_before_expiry.
//!
//! | function | revert / rule | test |
//! |---|---|---|
//! | requestStorage | InvalidClientAddress | request_storage |
//! | requestStorage | RequestAlreadyExists | request_storage |
//! | requestStorage | InvalidExpiry (0, and ≥ duration) | request_storage |
//! | requestStorage | InsufficientSlots | request_storage |
//! | requestStorage | InvalidMaxSlotLoss | request_storage |
//! | requestStorage | InsufficientDuration | unreachable: duration 0 fails InvalidExpiry first (expiry ≥ 0 = duration); asserted in request_storage |
//! | requestStorage | InsufficientProofProbability, InsufficientCollateral, InsufficientReward, InvalidCid, DurationExceedsLimit | request_storage |
//! | requestStorage | ERC20InsufficientAllowance, ERC20InsufficientBalance | request_storage |
//! | reserveSlot | ReservationNotAllowed: already reserved, set full, slot Filled | fill_rules |
//! | reserveSlot | no revert for an unknown request / a never-filled slot of a cancelled one | views, cancelled |
//! | reserveSlot | reservations cleared by a forced free (re-reserve for repair) | repair |
//! | fillSlot | UnknownRequest, InvalidSlot, ReservationRequired | fill_rules |
//! | fillSlot | SlotNotFree: Filled slot; slot of a cancelled request | fill_rules, cancelled |
//! | fillSlot | Proofs_ProofAlreadySubmitted (repair in the previous host's proof period) | repair |
//! | fillSlot | Proofs_InvalidProof | fill_rules |
//! | fillSlot | StartNotBeforeExpiry (repair fill at exactly endsAt) | edges |
//! | fillSlot | ERC20InsufficientAllowance, ERC20InsufficientBalance on the collateral | edges |
//! | fillSlot | allowed at exactly expiresAt (still New) | edges |
//! | submitProof | UnknownRequest, ProofNotSubmittedByHost, ProofAlreadySubmitted (fill period and twice), InvalidProof | views, fill_rules |
//! | freeSlot(1) | SlotIsFree | views |
//! | freeSlot(1) | InvalidSlotHost (not the host; kicked-out host) | finished, slashing, repair |
//! | freeSlot(1) | AlreadyPaid | finished |
//! | freeSlot(1) | StartNotBeforeExpiry (cancelled slot filled at expiresAt) | edges |
//! | freeSlot(1,2) | TransferFailed | unreachable with the OpenZeppelin test token (it reverts or returns true) |
//! | freeSlot(3) | SlotIsFree, InvalidSlotHost, AlreadyPaid, StartNotBeforeExpiry | views, finished, edges |
//! | withdrawFunds(1) | UnknownRequest, InvalidClientAddress, NothingToWithdraw | views, finished, cancelled |
//! | withdrawFunds(1) | InvalidState (New, Started) | request_storage, finished |
//! | withdrawFunds(2) | refund to the recipient, RequestCancelled | cancelled |
//! | markProofAsMissing + canMarkProofAsMissing | SlotNotAcceptingProofs, PeriodNotEnded, ValidationTimedOut, ProofNotMissing, ProofNotRequired, ProofAlreadyMarkedMissing (both functions) | slashing |
//! | canMarkProofAsMissing | success returns no value | slashing |
//! | getRequest | UnknownRequest; returns the request | views, request_storage |
//! | getActiveSlot | SlotIsFree; answers for Filled, Repair and Paid | views, fill_rules, repair, finished |
//! | requestState | UnknownRequest | views |
//! | requestEnd | UnknownRequest; New: endsAt; Cancelled: expiresAt; Finished: endsAt; Failed: failure time − 1 | views, request_storage, cancelled, finished, slashing |
//! | requestExpiry | absolute; 0 for unknown | request_storage, views |
//! | request state | New; Cancelled only after expiresAt (strict); Started on the last fill; Started at endsAt, Finished after (strict) | request_storage, cancelled, fill_rules, finished |
//! | request state | Failed when slot loss exceeds maxSlotLoss, and stays Failed after endsAt | slashing |
//! | request state | within maxSlotLoss the request stays Started | repair |
//! | request state | Cancelled stored by withdrawFunds (RequestCancelled once) | cancelled |
//! | slot state | Free (never filled, also of cancelled / unknown requests), Filled, Repair, Paid (before Finished), Cancelled, Finished, Failed | views, fill_rules, repair, finished, cancelled, slashing |
//! | amounts | maxPrice pulled at requestStorage | every `submit` |
//! | amounts | collateralPerSlot taken; repair takes 922 of 1024; currentCollateral full 1024 | fill_rules, repair |
//! | payouts | Finished payout (endsAt − filledAt) × pricePerSlot + collateral; 3-arg recipients | finished, repair |
//! | payouts | Cancelled payout (expiresAt − filledAt) × pricePerSlot + collateral | cancelled |
//! | payouts | Failed: nothing paid, second freeSlot succeeds; forced free by the host returns 0 | slashing, repair |
//! | payouts | client refunds: Finished (unearned), Cancelled (unused + expiry..end), Failed (full maxPrice), fill at expiresAt (full maxPrice) | finished, cancelled, slashing, edges |
//! | slashing | slash 20% of 1024 → 820, validator gets 40, the rest stays in the contract; second slash frees, resets missingProofs | slashing |
//! | slotProbability | slotProbability = proofProbability × (256 − downtime) / 256 | edges |
use crate::support;

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolCall;
use codex::chain::client::BlockingClient;
use codex::market::abi::{Marketplace as M, TestMarketplace as T};
use codex::market::errors::MarketError;
use codex::market::events::decode_event;
use codex::market::{
    calls, Ask, Content, Groth16Proof, MarketplaceConfig, Request, RequestId, RequestState, SlotId,
    SlotState,
};
use serde_json::{json, Value};
use support::devchain::Devchain;

const CLIENT: usize = 1;
const HOST_A: usize = 2;
const HOST_B: usize = 3;
const HOST_C: usize = 4;
const HOST_D: usize = 5;
const VALIDATOR: usize = 6;
const PERIOD: u64 = 120;
const DOWNTIME: u64 = 64;
/// collateralPerByte 1 × slotSize 1024.
const COLLATERAL: u64 = 1024;
/// pricePerBytePerSecond 1 × slotSize 1024.
const PRICE_PER_SLOT_PER_SECOND: u64 = 1024;

fn good_proof() -> Groth16Proof {
    Groth16Proof([U256::from(7u8); 8])
}

/// A mined Marketplace transaction: the names of the Marketplace events it emitted and the
/// timestamp of its block.
struct Mined {
    events: Vec<&'static str>,
    time: u64,
}

/// The dev chain plus helpers for driving the Marketplace from dev accounts.
struct Market {
    chain: Devchain,
    rpc: BlockingClient,
    market: Address,
    token: Address,
    nonce: u8,
}

impl Market {
    fn start() -> Market {
        let chain = Devchain::start(&[]);
        let rpc = chain.rpc();
        let (market, token) = (chain.marketplace(), chain.token());
        Market {
            chain,
            rpc,
            market,
            token,
            nonce: 0,
        }
    }

    fn acct(&self, i: usize) -> Address {
        self.chain.account(i)
    }

    /// A 1024-byte-slot request from the client, 1 token per byte-second, proofs every
    /// period, expiry 300 s, duration 3600 s; `edit` adjusts it.
    fn request(&mut self, edit: impl FnOnce(&mut Request)) -> Request {
        self.nonce += 1;
        let mut r = Request {
            client: self.acct(CLIENT),
            ask: Ask {
                proof_probability: U256::from(1u8),
                price_per_byte_per_second: U256::from(1u8),
                collateral_per_byte: U256::from(1u8),
                slots: 2,
                slot_size: 1024,
                duration: 3600,
                max_slot_loss: 0,
            },
            content: Content {
                cid: vec![0x01, 0x55, 0x12, 0x20, self.nonce],
                merkle_root: B256::repeat_byte(0x42),
            },
            expiry: 300,
            nonce: B256::repeat_byte(self.nonce),
        };
        edit(&mut r);
        r
    }

    fn raw_call(&mut self, from: Address, to: Address, data: &[u8]) -> Vec<u8> {
        let out = self
            .rpc
            .call(
                "eth_call",
                json!([{"from": from, "to": to, "data": alloy_primitives::hex::encode_prefixed(data)}, "latest"]),
            )
            .unwrap_or_else(|e| panic!("eth_call failed: {e}"));
        alloy_primitives::hex::decode(out.as_str().expect("hex result")).expect("hex result")
    }

    /// A Marketplace view as seen by the client (account 1).
    fn view(&mut self, data: &[u8]) -> Vec<u8> {
        self.view_from(self.acct(CLIENT), data)
    }

    fn view_from(&mut self, from: Address, data: &[u8]) -> Vec<u8> {
        self.raw_call(from, self.market, data)
    }

    /// The named error a Marketplace call from `from` reverts with (via eth_estimateGas, as
    /// the sender does before sending).
    fn revert(&mut self, from: usize, data: &[u8]) -> MarketError {
        let from = self.acct(from);
        let tx = json!([{"from": from, "to": self.market, "data": alloy_primitives::hex::encode_prefixed(data)}]);
        match self.rpc.call("eth_estimateGas", tx) {
            Ok(gas) => panic!("expected a revert, the call would succeed (gas {gas})"),
            Err(e) => {
                let data = e
                    .revert_data()
                    .unwrap_or_else(|| panic!("no revert data in {e}"));
                MarketError::from_revert_data(&data)
            }
        }
    }

    /// The named error a Marketplace view or call from `from` reverts with under `eth_call`
    /// at the latest block (its timestamp and number, exactly).
    fn revert_latest(&mut self, from: usize, data: &[u8]) -> MarketError {
        let from = self.acct(from);
        let tx = json!([{"from": from, "to": self.market, "data": alloy_primitives::hex::encode_prefixed(data)}, "latest"]);
        match self.rpc.call("eth_call", tx) {
            Ok(out) => panic!("expected a revert, the call returned {out}"),
            Err(e) => {
                let data = e
                    .revert_data()
                    .unwrap_or_else(|| panic!("no revert data in {e}"));
                MarketError::from_revert_data(&data)
            }
        }
    }

    fn send_to(&mut self, from: usize, to: Address, data: &[u8]) -> Value {
        let from = self.acct(from);
        support::devchain::send(&mut self.rpc, from, to, data)
    }

    /// Sends a Marketplace transaction and decodes its Marketplace events.
    fn tx(&mut self, from: usize, data: &[u8]) -> Mined {
        let receipt = self.send_to(from, self.market, data);
        let mut events = Vec::new();
        for log in receipt["logs"].as_array().expect("logs") {
            let address: Address = log["address"].as_str().unwrap().parse().unwrap();
            if address != self.market {
                continue;
            }
            let topics: Vec<B256> = log["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().parse().unwrap())
                .collect();
            let data = alloy_primitives::hex::decode(log["data"].as_str().unwrap()).unwrap();
            events.push(
                decode_event(&topics, &data)
                    .expect("decodable event")
                    .name(),
            );
        }
        let block = receipt["blockNumber"].clone();
        let time = self.block_field(block, "timestamp");
        Mined { events, time }
    }

    fn block_field(&mut self, tag: Value, field: &str) -> u64 {
        let b = self
            .rpc
            .call("eth_getBlockByNumber", json!([tag, false]))
            .unwrap();
        let s = b[field].as_str().expect("quantity");
        u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
    }

    fn now(&mut self) -> u64 {
        self.block_field(json!("latest"), "timestamp")
    }

    fn latest_number(&mut self) -> u64 {
        self.block_field(json!("latest"), "number")
    }

    /// Mines one block with timestamp `t`.
    fn set_time(&mut self, t: u64) {
        self.rpc
            .call("evm_setNextBlockTimestamp", json!([t]))
            .unwrap();
        self.rpc.call("evm_mine", json!([])).unwrap();
    }

    /// Mines `n` blocks without advancing the time.
    fn mine(&mut self, n: u64) {
        self.rpc
            .call("anvil_mine", json!([format!("{n:#x}"), "0x0"]))
            .unwrap();
    }

    fn next_period_start(&mut self) -> u64 {
        (self.now() / PERIOD + 1) * PERIOD
    }

    fn balance(&mut self, who: usize) -> U256 {
        let who = self.acct(who);
        let out = self.raw_call(who, self.token, &calls::balance_of(who));
        calls::decode_balance_of(&out).unwrap()
    }

    fn approve(&mut self, who: usize, amount: u64) {
        let data = calls::approve(self.market, U256::from(amount));
        self.send_to(who, self.token, &data);
    }

    /// Approves and submits `req`; checks the client paid maxPrice and the event; returns
    /// the id and the creation time.
    fn submit(&mut self, req: &Request) -> (RequestId, u64) {
        let price = req.ask.price_per_slot() * U256::from(req.ask.slots);
        self.send_to(CLIENT, self.token, &calls::approve(self.market, price));
        let before = self.balance(CLIENT);
        let mined = self.tx(CLIENT, &calls::request_storage(req));
        assert_eq!(mined.events, ["StorageRequested"]);
        assert_eq!(before - self.balance(CLIENT), price, "client pays maxPrice");
        (req.id(), mined.time)
    }

    fn reserve(&mut self, host: usize, id: RequestId, index: u64) -> Mined {
        self.tx(host, &calls::reserve_slot(id, index))
    }

    /// Approves `collateral` and fills; checks exactly that much was taken.
    fn fill(&mut self, host: usize, id: RequestId, index: u64, collateral: u64) -> Mined {
        self.approve(host, collateral);
        let before = self.balance(host);
        let mined = self.tx(host, &calls::fill_slot(id, index, &good_proof()));
        assert_eq!(
            before - self.balance(host),
            U256::from(collateral),
            "collateral taken by fillSlot"
        );
        mined
    }

    fn request_state(&mut self, id: RequestId) -> RequestState {
        calls::decode_request_state(&self.view(&calls::request_state(id))).unwrap()
    }

    fn slot_state(&mut self, slot: SlotId) -> SlotState {
        calls::decode_slot_state(&self.view(&calls::slot_state(slot))).unwrap()
    }

    fn collateral(&mut self, slot: SlotId) -> U256 {
        calls::decode_current_collateral(&self.view(&calls::current_collateral(slot))).unwrap()
    }

    fn host(&mut self, slot: SlotId) -> Option<Address> {
        calls::decode_get_host(&self.view(&calls::get_host(slot))).unwrap()
    }

    fn my_slots(&mut self, host: usize) -> Vec<SlotId> {
        let who = self.acct(host);
        calls::decode_my_slots(&self.view_from(who, &calls::my_slots())).unwrap()
    }

    fn my_requests(&mut self) -> Vec<RequestId> {
        calls::decode_my_requests(&self.view(&calls::my_requests())).unwrap()
    }

    fn pointer(&mut self, slot: SlotId) -> u64 {
        u64::from(calls::decode_get_pointer(&self.view(&calls::get_pointer(slot))).unwrap())
    }

    /// The pointer the contract computes for `period` in block `number`
    /// (`docs/marketplace.md#proof-requirement`).
    fn expected_pointer(slot: SlotId, period: u64, number: u64) -> u64 {
        let id_part = u64::from(slot.0 .0[31]);
        (number % 256 + (period * 67) % 256 + id_part) % 256
    }
}

fn free_slot(slot: SlotId) -> Vec<u8> {
    calls::free_slot(slot)
}

fn forcibly_free(slot: SlotId) -> Vec<u8> {
    T::forciblyFreeSlotCall { slotId: slot.0 }.abi_encode()
}

fn can_mark(slot: SlotId, period: u64) -> Vec<u8> {
    M::canMarkProofAsMissingCall {
        slotId: slot.0,
        period,
    }
    .abi_encode()
}

/// Asserts that both markProofAsMissing and the canMarkProofAsMissing view revert with
/// `expected` for the validator.
fn assert_not_markable(m: &mut Market, slot: SlotId, period: u64, expected: MarketError) {
    let mark = m.revert(VALIDATOR, &calls::mark_proof_as_missing(slot, period));
    assert_eq!(mark, expected, "markProofAsMissing({period})");
    let can = m.revert(VALIDATOR, &can_mark(slot, period));
    assert_eq!(can, expected, "canMarkProofAsMissing({period})");
}

/// A change to the default test request.
type Edit = Box<dyn FnOnce(&mut Request)>;

fn u(n: u64) -> U256 {
    U256::from(n)
}

#[test]
fn request_storage_rejects_bad_requests_with_named_errors() {
    let mut m = Market::start();
    m.approve(CLIENT, 1_000_000_000);
    let cases: Vec<(Edit, MarketError)> = vec![
        (Box::new(|r| r.expiry = 0), MarketError::InvalidExpiry),
        (Box::new(|r| r.expiry = 3600), MarketError::InvalidExpiry),
        // InsufficientDuration is shadowed: with duration 0 every expiry is either 0 or
        // ≥ duration, so the expiry check fires first.
        (
            Box::new(|r| {
                r.ask.duration = 0;
                r.expiry = 1;
            }),
            MarketError::InvalidExpiry,
        ),
        (
            Box::new(|r| r.ask.slots = 0),
            MarketError::InsufficientSlots,
        ),
        (
            Box::new(|r| r.ask.max_slot_loss = 3),
            MarketError::InvalidMaxSlotLoss,
        ),
        (
            Box::new(|r| r.ask.proof_probability = U256::ZERO),
            MarketError::InsufficientProofProbability,
        ),
        (
            Box::new(|r| r.ask.collateral_per_byte = U256::ZERO),
            MarketError::InsufficientCollateral,
        ),
        (
            Box::new(|r| r.ask.price_per_byte_per_second = U256::ZERO),
            MarketError::InsufficientReward,
        ),
        (Box::new(|r| r.content.cid.clear()), MarketError::InvalidCid),
        (
            Box::new(|r| r.ask.duration = 2_592_001),
            MarketError::DurationExceedsLimit,
        ),
    ];
    for (edit, expected) in cases {
        let req = m.request(edit);
        assert_eq!(m.revert(CLIENT, &calls::request_storage(&req)), expected);
    }
    // the client field must be the sender
    let req = m.request(|_| {});
    assert_eq!(
        m.revert(HOST_A, &calls::request_storage(&req)),
        MarketError::InvalidClientAddress
    );
    // ERC-20 errors bubble up: allowance first, then balance
    m.approve(CLIENT, 0);
    match m.revert(CLIENT, &calls::request_storage(&req)) {
        MarketError::Erc20InsufficientAllowance {
            spender, needed, ..
        } => {
            assert_eq!(spender, m.market);
            assert_eq!(needed, u(2 * 3600 * PRICE_PER_SLOT_PER_SECOND));
        }
        other => panic!("expected ERC20InsufficientAllowance, got {other}"),
    }
    let rich = m.request(|r| r.ask.price_per_byte_per_second = U256::from(10u64.pow(12)));
    let data = calls::approve(m.market, U256::MAX);
    m.send_to(CLIENT, m.token, &data);
    assert!(matches!(
        m.revert(CLIENT, &calls::request_storage(&rich)),
        MarketError::Erc20InsufficientBalance { .. }
    ));

    // a good one, then the same again
    let (id, t0) = m.submit(&req);
    assert_eq!(
        m.revert(CLIENT, &calls::request_storage(&req)),
        MarketError::RequestAlreadyExists
    );
    let stored = calls::decode_get_request(&m.view(&calls::get_request(id))).unwrap();
    assert_eq!(stored, req, "getRequest returns what was submitted");
    assert_eq!(m.request_state(id), RequestState::New);
    let expiry = calls::decode_request_expiry(&m.view(&calls::request_expiry(id))).unwrap();
    assert_eq!(expiry, t0 + 300, "requestExpiry is absolute");
    let end = calls::decode_request_end(&m.view(&calls::request_end(id))).unwrap();
    assert_eq!(end, t0 + 3600);
    assert_eq!(m.my_requests(), vec![id]);
    assert_eq!(
        m.revert(CLIENT, &calls::withdraw_funds(id)),
        MarketError::InvalidState,
        "a New request cannot be withdrawn"
    );
}

#[test]
fn views_of_unknown_ids_and_the_local_configuration() {
    let mut m = Market::start();
    let unknown = RequestId(B256::repeat_byte(0xee));
    let slot = SlotId::of(unknown, 0);
    let config = calls::decode_configuration(&m.view(&calls::configuration())).unwrap();
    assert_eq!(config, MarketplaceConfig::default());
    let token = calls::decode_token(&m.view(&calls::token())).unwrap();
    assert_eq!(token, m.token);
    assert_eq!(
        m.revert(CLIENT, &calls::get_request(unknown)),
        MarketError::UnknownRequest
    );
    assert_eq!(
        m.revert(CLIENT, &calls::request_state(unknown)),
        MarketError::UnknownRequest
    );
    assert_eq!(
        m.revert(CLIENT, &calls::request_end(unknown)),
        MarketError::UnknownRequest
    );
    let expiry = calls::decode_request_expiry(&m.view(&calls::request_expiry(unknown))).unwrap();
    assert_eq!(expiry, 0, "requestExpiry of an unknown id is 0");
    assert_eq!(m.slot_state(slot), SlotState::Free);
    assert_eq!(m.host(slot), None);
    assert_eq!(
        m.revert(CLIENT, &calls::get_active_slot(slot)),
        MarketError::SlotIsFree
    );
    assert_eq!(
        m.revert(HOST_A, &calls::submit_proof(slot, &good_proof())),
        MarketError::UnknownRequest
    );
    assert_eq!(m.revert(HOST_A, &free_slot(slot)), MarketError::SlotIsFree);
    let to = calls::free_slot_to(slot, m.acct(HOST_A), m.acct(HOST_A));
    assert_eq!(m.revert(HOST_A, &to), MarketError::SlotIsFree);
    assert_eq!(
        m.revert(CLIENT, &calls::withdraw_funds(unknown)),
        MarketError::UnknownRequest
    );
    // a slot of an unknown request looks Free and can be reserved (no requestIsKnown check)
    let mined = m.reserve(HOST_A, unknown, 0);
    assert!(mined.events.is_empty());
}

#[test]
fn reservations_fills_and_proof_submission_follow_the_rules() {
    let mut m = Market::start();
    let req = m.request(|_| {});
    let (id, _) = m.submit(&req);
    let s0 = SlotId::of(id, 0);
    let p = good_proof();

    let unknown = RequestId(B256::repeat_byte(0xaa));
    assert_eq!(
        m.revert(HOST_A, &calls::fill_slot(unknown, 0, &p)),
        MarketError::UnknownRequest
    );
    assert_eq!(
        m.revert(HOST_A, &calls::fill_slot(id, 2, &p)),
        MarketError::InvalidSlot
    );
    assert_eq!(
        m.revert(HOST_A, &calls::fill_slot(id, 0, &p)),
        MarketError::ReservationRequired
    );

    // up to three distinct hosts; the third fills the set
    assert!(m.reserve(HOST_A, id, 0).events.is_empty());
    assert_eq!(
        m.revert(HOST_A, &calls::reserve_slot(id, 0)),
        MarketError::ReservationNotAllowed,
        "the same host cannot reserve twice"
    );
    assert!(m.reserve(HOST_B, id, 0).events.is_empty());
    assert_eq!(m.reserve(HOST_C, id, 0).events, ["SlotReservationsFull"]);
    let can = m.view_from(m.acct(HOST_D), &calls::can_reserve_slot(id, 0));
    assert!(!calls::decode_can_reserve_slot(&can).unwrap());
    assert_eq!(
        m.revert(HOST_D, &calls::reserve_slot(id, 0)),
        MarketError::ReservationNotAllowed
    );

    // fill in a fresh period
    let t = m.next_period_start();
    m.set_time(t);
    m.approve(HOST_A, COLLATERAL);
    assert_eq!(
        m.revert(HOST_A, &calls::fill_slot(id, 0, &Groth16Proof::default())),
        MarketError::InvalidProof
    );
    let fill = m.fill(HOST_A, id, 0, COLLATERAL);
    assert_eq!(fill.events, ["ProofSubmitted", "SlotFilled"]);
    assert_eq!(m.slot_state(s0), SlotState::Filled);
    assert_eq!(m.host(s0), Some(m.acct(HOST_A)));
    assert_eq!(m.collateral(s0), u(COLLATERAL));
    assert_eq!(m.my_slots(HOST_A), vec![s0]);
    let (active_req, index) =
        calls::decode_get_active_slot(&m.view(&calls::get_active_slot(s0))).unwrap();
    assert_eq!((active_req, index), (req.clone(), 0));
    m.approve(HOST_B, COLLATERAL);
    assert_eq!(
        m.revert(HOST_B, &calls::fill_slot(id, 0, &p)),
        MarketError::SlotNotFree
    );
    assert_eq!(
        m.revert(HOST_A, &calls::reserve_slot(id, 0)),
        MarketError::ReservationNotAllowed,
        "a filled slot takes no reservations"
    );

    // the fill's proof counts for the fill period; only the host may prove
    assert_eq!(
        m.revert(HOST_A, &calls::submit_proof(s0, &p)),
        MarketError::ProofAlreadySubmitted
    );
    assert_eq!(
        m.revert(HOST_B, &calls::submit_proof(s0, &p)),
        MarketError::ProofNotSubmittedByHost
    );
    let required = calls::decode_is_proof_required(&m.view(&calls::is_proof_required(s0)));
    let upcoming =
        calls::decode_will_proof_be_required(&m.view(&calls::will_proof_be_required(s0)));
    assert_eq!((required.unwrap(), upcoming.unwrap()), (false, false));

    // the last fill starts the request
    m.reserve(HOST_B, id, 1);
    let last = m.fill(HOST_B, id, 1, COLLATERAL);
    assert_eq!(
        last.events,
        ["ProofSubmitted", "SlotFilled", "RequestFulfilled"]
    );
    assert_eq!(m.request_state(id), RequestState::Started);

    // next period: a proof is due (probability 1) and accepted once
    let t = m.next_period_start();
    m.set_time(t);
    assert_eq!(
        m.revert(HOST_A, &calls::submit_proof(s0, &Groth16Proof::default())),
        MarketError::InvalidProof
    );
    assert_eq!(
        m.tx(HOST_A, &calls::submit_proof(s0, &p)).events,
        ["ProofSubmitted"]
    );
    assert_eq!(
        m.revert(HOST_A, &calls::submit_proof(s0, &p)),
        MarketError::ProofAlreadySubmitted
    );
}

#[test]
fn proof_pointer_challenge_and_requirement_follow_block_and_period() {
    let mut m = Market::start();
    let req = m.request(|r| r.ask.slots = 1);
    let (id, _) = m.submit(&req);
    let slot = SlotId::of(id, 0);
    m.reserve(HOST_A, id, 0);
    let t = m.next_period_start();
    m.set_time(t);
    m.fill(HOST_A, id, 0, COLLATERAL);
    let t = m.next_period_start();
    m.set_time(t);
    let mut seen_required = false;
    let mut seen_upcoming = false;
    // walk the pointer through a full turn (blocks at the same timestamp)
    for _ in 0..52 {
        let n = m.latest_number();
        let period = m.now() / PERIOD;
        let pointer = m.pointer(slot);
        assert_eq!(pointer, Market::expected_pointer(slot, period, n));
        let challenge = calls::decode_get_challenge(&m.view(&calls::get_challenge(slot))).unwrap();
        let hash_hex = m
            .rpc
            .call(
                "eth_getBlockByNumber",
                json!([format!("{:#x}", n - 1 - pointer), false]),
            )
            .unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_string();
        let hash: B256 = hash_hex.parse().unwrap();
        assert_eq!(
            challenge,
            keccak256(hash),
            "challenge = keccak(blockhash(n-1-pointer))"
        );
        let required =
            calls::decode_is_proof_required(&m.view(&calls::is_proof_required(slot))).unwrap();
        let upcoming =
            calls::decode_will_proof_be_required(&m.view(&calls::will_proof_be_required(slot)))
                .unwrap();
        assert_eq!(
            required,
            pointer >= DOWNTIME,
            "isProofRequired at pointer {pointer}"
        );
        assert_eq!(
            upcoming,
            pointer < DOWNTIME,
            "willProofBeRequired at pointer {pointer}"
        );
        seen_required |= required;
        seen_upcoming |= upcoming;
        m.mine(5);
    }
    assert!(seen_required && seen_upcoming);

    // public-input helpers: little-endian, the challenge without its last byte
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    let word = B256::from(bytes);
    let le = |n: usize| {
        let mut v = U256::ZERO;
        for i in (0..n).rev() {
            v = (v << 8) | U256::from(bytes[i]);
        }
        v
    };
    let out = m.view(&T::challengeToFieldElementCall { challenge: word }.abi_encode());
    assert_eq!(U256::from_be_slice(&out), le(31));
    let out = m.view(&T::merkleRootToFieldElementCall { merkleRoot: word }.abi_encode());
    assert_eq!(U256::from_be_slice(&out), le(32));
}

#[test]
fn finished_request_pays_hosts_for_their_time_and_refunds_the_rest() {
    let mut m = Market::start();
    let req = m.request(|_| {});
    let (id, t0) = m.submit(&req);
    let (s0, s1) = (SlotId::of(id, 0), SlotId::of(id, 1));
    m.reserve(HOST_A, id, 0);
    m.reserve(HOST_B, id, 1);
    let a = m.fill(HOST_A, id, 0, COLLATERAL);
    m.set_time(a.time + 50);
    let b = m.fill(HOST_B, id, 1, COLLATERAL);

    assert_eq!(
        m.revert(CLIENT, &calls::withdraw_funds(id)),
        MarketError::InvalidState
    );
    assert_eq!(
        m.revert(HOST_A, &calls::withdraw_funds(id)),
        MarketError::InvalidClientAddress
    );
    assert_eq!(
        m.revert(HOST_B, &free_slot(s0)),
        MarketError::InvalidSlotHost
    );
    let to = calls::free_slot_to(s0, m.acct(HOST_B), m.acct(HOST_B));
    assert_eq!(m.revert(HOST_B, &to), MarketError::InvalidSlotHost);

    let ends_at = t0 + 3600;
    m.set_time(ends_at);
    assert_eq!(
        m.request_state(id),
        RequestState::Started,
        "still running at endsAt"
    );
    m.set_time(ends_at + 1);
    assert_eq!(m.request_state(id), RequestState::Finished);
    assert_eq!(m.slot_state(s0), SlotState::Finished);
    let end = calls::decode_request_end(&m.view(&calls::request_end(id))).unwrap();
    assert_eq!(end, ends_at);

    let before = m.balance(HOST_A);
    let freed = m.tx(HOST_A, &free_slot(s0));
    assert!(
        freed.events.is_empty(),
        "a payout emits no Marketplace event"
    );
    let pay_a = (ends_at - a.time) * PRICE_PER_SLOT_PER_SECOND;
    assert_eq!(m.balance(HOST_A) - before, u(pay_a + COLLATERAL));
    assert_eq!(m.slot_state(s0), SlotState::Paid);
    assert!(m.my_slots(HOST_A).is_empty());
    assert_eq!(m.revert(HOST_A, &free_slot(s0)), MarketError::AlreadyPaid);
    let to = calls::free_slot_to(s0, m.acct(HOST_D), m.acct(HOST_A));
    assert_eq!(m.revert(HOST_A, &to), MarketError::AlreadyPaid);
    let (_, index) = calls::decode_get_active_slot(&m.view(&calls::get_active_slot(s0))).unwrap();
    assert_eq!(index, 0, "getActiveSlot answers for a Paid slot");
    assert_eq!(
        m.request_state(id),
        RequestState::Finished,
        "stored Finished by the payout"
    );

    // reward and collateral to different recipients
    let (third, host_b) = (m.balance(HOST_D), m.balance(HOST_B));
    let to = calls::free_slot_to(s1, m.acct(HOST_D), m.acct(HOST_B));
    m.tx(HOST_B, &to);
    let pay_b = (ends_at - b.time) * PRICE_PER_SLOT_PER_SECOND;
    assert_eq!(m.balance(HOST_D) - third, u(pay_b));
    assert_eq!(m.balance(HOST_B) - host_b, u(COLLATERAL));

    let price = 2 * 3600 * PRICE_PER_SLOT_PER_SECOND;
    let before = m.balance(CLIENT);
    m.tx(CLIENT, &calls::withdraw_funds(id));
    assert_eq!(m.balance(CLIENT) - before, u(price - pay_a - pay_b));
    assert_eq!(
        m.revert(CLIENT, &calls::withdraw_funds(id)),
        MarketError::NothingToWithdraw
    );
    assert!(m.my_requests().is_empty());
}

#[test]
fn cancelled_request_pays_hosts_until_expiry_and_refunds_the_rest() {
    let mut m = Market::start();
    let req = m.request(|r| r.expiry = 200);
    let (id, t0) = m.submit(&req);
    let (s0, s1) = (SlotId::of(id, 0), SlotId::of(id, 1));
    m.reserve(HOST_A, id, 0);
    let a = m.fill(HOST_A, id, 0, COLLATERAL);
    let expires_at = t0 + 200;
    m.set_time(expires_at);
    assert_eq!(
        m.request_state(id),
        RequestState::New,
        "still New at expiresAt"
    );
    m.set_time(expires_at + 1);
    assert_eq!(m.request_state(id), RequestState::Cancelled);
    assert_eq!(m.slot_state(s0), SlotState::Cancelled);
    let end = calls::decode_request_end(&m.view(&calls::request_end(id))).unwrap();
    assert_eq!(end, expires_at);
    // the never-filled slot looks Free and can be reserved, but not filled
    assert_eq!(m.slot_state(s1), SlotState::Free);
    m.reserve(HOST_B, id, 1);
    m.approve(HOST_B, COLLATERAL);
    assert_eq!(
        m.revert(HOST_B, &calls::fill_slot(id, 1, &good_proof())),
        MarketError::SlotNotFree
    );

    let before = m.balance(HOST_A);
    m.tx(HOST_A, &free_slot(s0));
    let pay = (expires_at - a.time) * PRICE_PER_SLOT_PER_SECOND;
    assert_eq!(m.balance(HOST_A) - before, u(pay + COLLATERAL));

    let price = 2 * 3600 * PRICE_PER_SLOT_PER_SECOND;
    let (client, recipient) = (m.balance(CLIENT), m.balance(HOST_D));
    let withdraw = m.tx(CLIENT, &calls::withdraw_funds_to(id, m.acct(HOST_D)));
    assert_eq!(withdraw.events, ["RequestCancelled"]);
    assert_eq!(m.request_state(id), RequestState::Cancelled);
    assert_eq!(m.balance(CLIENT), client);
    assert_eq!(m.balance(HOST_D) - recipient, u(price - pay));
    assert_eq!(
        m.revert(CLIENT, &calls::withdraw_funds(id)),
        MarketError::NothingToWithdraw
    );
}

#[test]
fn missed_proofs_are_slashed_and_too_many_free_the_slot_and_fail_the_request() {
    let mut m = Market::start();
    let req = m.request(|r| {
        r.ask.slots = 2;
        r.ask.max_slot_loss = 0;
    });
    let (id, t0) = m.submit(&req);
    let (s0, s1) = (SlotId::of(id, 0), SlotId::of(id, 1));
    m.reserve(HOST_A, id, 0);
    m.reserve(HOST_B, id, 1);
    let t = m.next_period_start();
    m.set_time(t);
    m.fill(HOST_A, id, 0, COLLATERAL);
    m.fill(HOST_B, id, 1, COLLATERAL);
    let fill_period = t / PERIOD;
    let mark = |slot: SlotId, period: u64| calls::mark_proof_as_missing(slot, period);

    assert_not_markable(&mut m, s0, fill_period, MarketError::PeriodNotEnded);

    // Period p is over; within the timeout the requirement is judged with the pointer of the
    // validator's block (the next one): below the downtime it is not required.
    let missed = fill_period + 1;
    m.set_time((missed + 1) * PERIOD + 1);
    let next_pointer = |m: &mut Market| {
        let n = m.latest_number() + 1;
        Market::expected_pointer(s0, missed, n)
    };
    // Keep the pointer well inside one side of the downtime boundary for both the latest
    // and the next block, whichever one a node uses for eth_call / eth_estimateGas.
    let p = next_pointer(&mut m);
    m.mine((256 + 10 - p) % 256);
    assert_eq!(next_pointer(&mut m), 10);
    assert_not_markable(&mut m, s0, missed, MarketError::ProofNotRequired);
    m.mine(DOWNTIME + 6 - 10);
    assert_eq!(next_pointer(&mut m), DOWNTIME + 6);
    assert_eq!(
        m.view_from(m.acct(VALIDATOR), &can_mark(s0, missed)),
        Vec::<u8>::new(),
        "canMarkProofAsMissing succeeds without a value"
    );
    let before = m.balance(VALIDATOR);
    let market = m.market;
    let held = |m: &mut Market| {
        calls::decode_balance_of(&m.raw_call(market, m.token, &calls::balance_of(market))).unwrap()
    };
    let contract_before = held(&mut m);
    assert!(m.tx(VALIDATOR, &mark(s0, missed)).events.is_empty());
    assert_eq!(
        m.balance(VALIDATOR) - before,
        u(40),
        "20% of the 204 slashed"
    );
    assert_eq!(
        contract_before - held(&mut m),
        u(40),
        "the other 164 stay in the contract"
    );
    assert_eq!(m.collateral(s0), u(820));
    let count = calls::decode_missing_proofs(&m.view(&calls::missing_proofs(s0))).unwrap();
    assert_eq!(count, 1);
    assert_not_markable(&mut m, s0, missed, MarketError::ProofAlreadyMarkedMissing);

    // too late for the next period; a proved period is not missing
    let late = missed + 1;
    m.set_time((late + 1) * PERIOD + 30);
    assert_not_markable(&mut m, s0, late, MarketError::ValidationTimedOut);
    let proved = late + 1;
    m.set_time(proved * PERIOD + 40);
    m.tx(HOST_A, &calls::submit_proof(s0, &good_proof()));
    m.set_time((proved + 1) * PERIOD + 1);
    assert_not_markable(&mut m, s0, proved, MarketError::ProofNotMissing);

    // the second slash frees the slot; with maxSlotLoss 0 the started request fails
    let second = proved + 1;
    m.set_time((second + 1) * PERIOD + 1);
    let p = Market::expected_pointer(s0, second, m.latest_number() + 1);
    if p < DOWNTIME + 6 {
        m.mine(DOWNTIME + 6 - p);
    }
    let before = m.balance(VALIDATOR);
    let freed = m.tx(VALIDATOR, &mark(s0, second));
    assert_eq!(freed.events, ["SlotFreed", "RequestFailed"]);
    assert_eq!(m.balance(VALIDATOR) - before, u(40));
    assert_eq!(m.request_state(id), RequestState::Failed);
    let end = calls::decode_request_end(&m.view(&calls::request_end(id))).unwrap();
    assert_eq!(
        end,
        freed.time - 1,
        "a failed request ends just before the failure"
    );
    assert_eq!(m.slot_state(s0), SlotState::Failed);
    assert_eq!(m.host(s0), None);
    assert_eq!(m.collateral(s0), U256::ZERO);
    let count = calls::decode_missing_proofs(&m.view(&calls::missing_proofs(s0))).unwrap();
    assert_eq!(count, 0, "reset by the forced free");
    assert!(m.my_slots(HOST_A).is_empty());
    assert_not_markable(&mut m, s1, second, MarketError::SlotNotAcceptingProofs);
    assert_eq!(
        m.revert(HOST_A, &free_slot(s0)),
        MarketError::InvalidSlotHost
    );

    // the other host of a failed request gets nothing back, and may call again
    let before = m.balance(HOST_B);
    m.tx(HOST_B, &free_slot(s1));
    m.tx(HOST_B, &free_slot(s1));
    assert_eq!(m.balance(HOST_B), before);
    assert!(m.my_slots(HOST_B).is_empty());

    // Failed is stored: it stays Failed after the original end
    m.set_time(t0 + 3601);
    assert_eq!(m.request_state(id), RequestState::Failed);
    let end = calls::decode_request_end(&m.view(&calls::request_end(id))).unwrap();
    assert_eq!(end, freed.time - 1);

    // the client gets the whole price back
    let before = m.balance(CLIENT);
    m.tx(CLIENT, &calls::withdraw_funds(id));
    assert_eq!(
        m.balance(CLIENT) - before,
        u(2 * 3600 * PRICE_PER_SLOT_PER_SECOND)
    );
}

#[test]
fn repair_takes_discounted_collateral_and_returns_it_in_full() {
    let mut m = Market::start();
    let req = m.request(|r| r.ask.max_slot_loss = 1);
    let (id, t0) = m.submit(&req);
    let (s0, s1) = (SlotId::of(id, 0), SlotId::of(id, 1));
    m.reserve(HOST_A, id, 0);
    m.reserve(HOST_B, id, 1);
    let t = m.next_period_start();
    m.set_time(t);
    m.fill(HOST_A, id, 0, COLLATERAL);
    m.fill(HOST_B, id, 1, COLLATERAL);

    let freed = m.tx(VALIDATOR, &forcibly_free(s0));
    assert_eq!(
        freed.events,
        ["SlotFreed"],
        "within maxSlotLoss: no failure"
    );
    assert_eq!(m.request_state(id), RequestState::Started);
    assert_eq!(m.slot_state(s0), SlotState::Repair);
    assert_eq!(m.host(s0), None);
    let (_, index) = calls::decode_get_active_slot(&m.view(&calls::get_active_slot(s0))).unwrap();
    assert_eq!(index, 0, "getActiveSlot answers for a Repair slot");
    assert_eq!(
        m.revert(HOST_A, &free_slot(s0)),
        MarketError::InvalidSlotHost
    );
    // reservations were cleared: the old host may reserve again
    m.reserve(HOST_A, id, 0);
    m.reserve(HOST_C, id, 0);
    m.approve(HOST_C, 922);
    assert_eq!(
        m.revert(HOST_C, &calls::fill_slot(id, 0, &good_proof())),
        MarketError::ProofAlreadySubmitted,
        "the previous host's proof for this period still counts"
    );
    let t = m.next_period_start();
    m.set_time(t);
    let repair = m.fill(HOST_C, id, 0, 922);
    assert_eq!(
        repair.events,
        ["ProofSubmitted", "SlotFilled"],
        "no second RequestFulfilled"
    );
    assert_eq!(m.collateral(s0), u(COLLATERAL));

    // host B leaves early: a forced free that returns nothing
    let before = m.balance(HOST_B);
    assert_eq!(m.tx(HOST_B, &free_slot(s1)).events, ["SlotFreed"]);
    assert_eq!(m.balance(HOST_B), before);
    assert_eq!(m.collateral(s1), U256::ZERO);

    // the repairing host is paid for its time plus the full collateral
    m.set_time(t0 + 3601);
    assert_eq!(m.request_state(id), RequestState::Finished);
    let before = m.balance(HOST_C);
    m.tx(HOST_C, &free_slot(s0));
    let pay = (t0 + 3600 - repair.time) * PRICE_PER_SLOT_PER_SECOND;
    assert_eq!(m.balance(HOST_C) - before, u(pay + COLLATERAL));
}

#[test]
fn fill_and_free_edges_collateral_errors_and_start_not_before_expiry() {
    let mut m = Market::start();

    // Collateral errors of fillSlot's transferFrom: allowance first, then balance (10^15
    // tokens per account; this slot wants 1024 × 10^12).
    let big = 10u64.pow(12);
    let req = m.request(|r| {
        r.ask.slots = 1;
        r.ask.collateral_per_byte = U256::from(big);
    });
    let (id, _) = m.submit(&req);
    m.reserve(HOST_A, id, 0);
    m.approve(HOST_A, 5);
    match m.revert(HOST_A, &calls::fill_slot(id, 0, &good_proof())) {
        MarketError::Erc20InsufficientAllowance {
            spender,
            allowance,
            needed,
        } => {
            assert_eq!((spender, allowance), (m.market, u(5)));
            assert_eq!(needed, u(1024) * u(big));
        }
        other => panic!("expected ERC20InsufficientAllowance, got {other}"),
    }
    let data = calls::approve(m.market, U256::MAX);
    m.send_to(HOST_A, m.token, &data);
    let err = m.revert(HOST_A, &calls::fill_slot(id, 0, &good_proof()));
    assert_eq!(
        err.solidity_name(),
        Some("ERC20InsufficientBalance"),
        "{err}"
    );

    // A fill at exactly expiresAt is allowed (the request is still New) ...
    let req = m.request(|r| {
        r.expiry = 200;
        r.ask.proof_probability = U256::from(5u8);
    });
    let (id, t0) = m.submit(&req);
    let expires_at = t0 + 200;
    let s0 = SlotId::of(id, 0);
    m.reserve(HOST_B, id, 0);
    m.approve(HOST_B, COLLATERAL);
    m.rpc
        .call("evm_setNextBlockTimestamp", json!([expires_at]))
        .unwrap();
    let before = m.balance(HOST_B);
    let fill = m.tx(HOST_B, &calls::fill_slot(id, 0, &good_proof()));
    assert_eq!(fill.time, expires_at);
    assert_eq!(fill.events, ["ProofSubmitted", "SlotFilled"]);
    assert_eq!(before - m.balance(HOST_B), u(COLLATERAL));
    let out = m.view(&M::slotProbabilityCall { id: s0.0 }.abi_encode());
    assert_eq!(U256::from_be_slice(&out), u(5 * (256 - DOWNTIME) / 256));

    // ... but once cancelled its payout window is empty: freeSlot reverts
    // StartNotBeforeExpiry in both forms, and the client gets the whole price back.
    m.set_time(expires_at + 1);
    assert_eq!(m.slot_state(s0), SlotState::Cancelled);
    assert_eq!(
        m.revert(HOST_B, &free_slot(s0)),
        MarketError::StartNotBeforeExpiry
    );
    let to = calls::free_slot_to(s0, m.acct(HOST_D), m.acct(HOST_B));
    assert_eq!(m.revert(HOST_B, &to), MarketError::StartNotBeforeExpiry);
    let before = m.balance(CLIENT);
    assert_eq!(
        m.tx(CLIENT, &calls::withdraw_funds(id)).events,
        ["RequestCancelled"]
    );
    assert_eq!(
        m.balance(CLIENT) - before,
        u(2 * 3600 * PRICE_PER_SLOT_PER_SECOND)
    );

    // A repair fill at exactly endsAt: the request is still Started, the slot in Repair, but
    // there is no time left to pay for: StartNotBeforeExpiry.
    let req = m.request(|r| r.ask.max_slot_loss = 1);
    let (id, t0) = m.submit(&req);
    let s0 = SlotId::of(id, 0);
    m.reserve(HOST_A, id, 0);
    m.reserve(HOST_C, id, 1);
    m.fill(HOST_A, id, 0, COLLATERAL);
    m.fill(HOST_C, id, 1, COLLATERAL);
    m.tx(VALIDATOR, &forcibly_free(s0));
    m.reserve(HOST_D, id, 0);
    m.approve(HOST_D, 922);
    let ends_at = t0 + 3600;
    m.set_time(ends_at);
    assert_eq!(m.request_state(id), RequestState::Started);
    assert_eq!(m.slot_state(s0), SlotState::Repair);
    assert_eq!(
        m.revert_latest(HOST_D, &calls::fill_slot(id, 0, &good_proof())),
        MarketError::StartNotBeforeExpiry
    );
}
