//! Tests of the simulated Marketplace model against `docs/marketplace.md`.
use crate::sim;

use sim::*;

fn host(i: u64) -> Address {
    account(10 + i)
}
const CLIENT_IX: u64 = 20;
fn client() -> Address {
    account(CLIENT_IX)
}
fn validator() -> Address {
    account(30)
}
fn u(x: u64) -> U256 {
    U256::from(x)
}

const FUNDS: u64 = 1_000_000_000_000;

/// A sim with funded hosts, client and validator.
fn sim_with(config: SimConfig) -> Sim {
    let mut sim = Sim::new(config);
    for i in 0..5 {
        sim.fund(host(i), u(FUNDS));
    }
    sim.fund(client(), u(FUNDS));
    sim
}

fn sim() -> Sim {
    sim_with(SimConfig::default())
}

/// A config where every period after the fill period requires a proof at every block
/// (downtime 0 and proofProbability 1 give prob = 1, and pointer ≥ 0 always).
fn always_required() -> SimConfig {
    let mut c = SimConfig::default();
    c.market.downtime = 0;
    c
}

/// Requests `small_ask()` with expiry 600 s and mines the block; returns (request, id).
fn request(sim: &mut Sim) -> (Request, RequestId) {
    request_with(sim, small_ask(), 600)
}

fn request_with(sim: &mut Sim, ask: Ask, expiry: u64) -> (Request, RequestId) {
    let r = sim.new_request(client(), ask, expiry);
    let id = sim
        .request_storage(client(), r.clone())
        .expect("requestStorage");
    sim.mine();
    (r, id)
}

/// Reserves and fills slot `index` as `who` in the pending block.
fn fill(sim: &mut Sim, who: Address, id: RequestId, index: u64) -> Result<(), Revert> {
    sim.reserve_slot(who, id, index)?;
    let proof = sim.pending().proof_for(id, index)?;
    sim.fill_slot(who, id, index, &proof)
}

fn fill_all(sim: &mut Sim, id: RequestId, slots: u64) {
    for i in 0..slots {
        fill(sim, host(i), id, i).expect("fill");
    }
    sim.mine();
}

fn events(block: &Block) -> Vec<MarketEvent> {
    block.logs.iter().map(|l| l.event.clone()).collect()
}

/// Sets the pending block's timestamp to `t`.
fn at(sim: &mut Sim, t: u64) {
    sim.set_next_timestamp(t);
}

// ----- chain ----------------------------------------------------------------------------

#[test]
fn chain_mines_blocks_with_seeded_hashes_and_time() {
    let mut a = Sim::new(SimConfig::default());
    let mut b = Sim::new(SimConfig::default());
    let mut c = Sim::new(SimConfig {
        seed: 2,
        ..SimConfig::default()
    });
    let (n0, t0) = (a.block_number(), a.now());
    let (ba, bb, bc) = (a.mine(), b.mine(), c.mine());
    assert_eq!(ba.header, bb.header);
    assert_ne!(ba.header.hash, bc.header.hash);
    assert_eq!(ba.header.number, n0 + 1);
    assert_eq!(ba.header.timestamp, t0 + 12);
    a.advance_time(100);
    assert_eq!(a.mine().header.timestamp, t0 + 12 + 12 + 100);
    // Blocks may share a timestamp.
    let t = a.now();
    a.set_next_timestamp(t);
    assert_eq!(a.mine().header.timestamp, t);
    assert_eq!(a.chain.block_hash(n0 + 1), ba.header.hash);
}

#[test]
fn views_at_pending_execute_in_block_latest_plus_one() {
    let mut sim = sim();
    sim.mine();
    assert_eq!(sim.pending().number(), sim.block_number() + 1);
    assert_eq!(sim.latest().number(), sim.block_number());
    assert_eq!(sim.pending().timestamp(), sim.now() + 12);
    assert_eq!(sim.latest().timestamp(), sim.now());
}

#[test]
fn logs_carry_block_numbers_and_are_queryable() {
    let mut sim = sim();
    let (r, id) = request(&mut sim);
    let n = sim.block_number();
    let logs = sim.chain.logs(n, n).to_vec();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].block_number, n);
    assert_eq!(logs[0].block_timestamp, sim.now());
    assert_eq!(
        logs[0].event,
        MarketEvent::StorageRequested {
            request_id: id,
            ask: r.ask.clone(),
            expiry: sim.now() + 600,
        }
    );
    assert!(sim.chain.logs(n + 1, n + 10).is_empty());
    assert!(sim.chain.logs(0, n - 1).is_empty());
}

// ----- requestStorage -------------------------------------------------------------------

#[test]
fn request_storage_records_times_and_pulls_max_price() {
    let mut sim = sim();
    let r = sim.new_request(client(), small_ask(), 600);
    let t0 = sim.pending().timestamp();
    let before = sim.balance_of(client());
    let id = sim.request_storage(client(), r.clone()).unwrap();
    assert_eq!(id, r.id());
    sim.mine();
    // maxPrice = slots × duration × pricePerByte × slotSize = 3 × 86400 × 1024.
    let max_price = u(3 * 86_400 * 1024);
    assert_eq!(before - sim.balance_of(client()), max_price);
    assert_eq!(sim.balance_of(MARKETPLACE_ADDRESS), max_price);
    assert_eq!(sim.latest().request_expiry(id), t0 + 600);
    assert_eq!(sim.latest().request_end(id), Ok(t0 + 86_400));
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::New));
    assert_eq!(sim.latest().my_requests(client()), vec![id]);
    assert_eq!(sim.latest().get_request(id), Ok(r));
}

#[test]
fn request_storage_reverts_in_contract_order() {
    let mut sim = sim();
    let base = sim.new_request(client(), small_ask(), 600);
    let mut try_req = |f: &dyn Fn(&mut Request)| {
        let mut r = base.clone();
        f(&mut r);
        sim.request_storage(client(), r)
    };
    assert_eq!(
        try_req(&|r| r.client = host(0)),
        Err(Revert::InvalidClientAddress)
    );
    assert_eq!(try_req(&|r| r.expiry = 0), Err(Revert::InvalidExpiry));
    assert_eq!(try_req(&|r| r.expiry = 86_400), Err(Revert::InvalidExpiry));
    // Duration 0 is caught by the expiry check, which comes first.
    assert_eq!(try_req(&|r| r.ask.duration = 0), Err(Revert::InvalidExpiry));
    assert_eq!(
        try_req(&|r| r.ask.slots = 0),
        Err(Revert::InsufficientSlots)
    );
    assert_eq!(
        try_req(&|r| r.ask.max_slot_loss = 4),
        Err(Revert::InvalidMaxSlotLoss)
    );
    assert_eq!(
        try_req(&|r| r.ask.proof_probability = U256::ZERO),
        Err(Revert::InsufficientProofProbability)
    );
    assert_eq!(
        try_req(&|r| r.ask.collateral_per_byte = U256::ZERO),
        Err(Revert::InsufficientCollateral)
    );
    assert_eq!(
        try_req(&|r| r.ask.price_per_byte_per_second = U256::ZERO),
        Err(Revert::InsufficientReward)
    );
    assert_eq!(try_req(&|r| r.content.cid.clear()), Err(Revert::InvalidCid));
    assert_eq!(
        try_req(&|r| r.ask.duration = 2_592_001),
        Err(Revert::DurationExceedsLimit)
    );
    assert!(try_req(&|_| ()).is_ok());
    assert_eq!(try_req(&|_| ()), Err(Revert::RequestAlreadyExists));
    assert_eq!(sim.revert_count, 12);
    assert_eq!(sim.chain.pending_events().len(), 1, "reverts emit nothing");
}

#[test]
fn request_storage_needs_allowance_and_balance() {
    let mut sim = sim();
    let poor = account(99);
    let r = sim.new_request(poor, small_ask(), 600);
    let need = u(3 * 86_400 * 1024);
    assert_eq!(
        sim.request_storage(poor, r.clone()),
        Err(Revert::Erc20InsufficientAllowance {
            spender: MARKETPLACE_ADDRESS,
            allowance: U256::ZERO,
            needed: need
        })
    );
    sim.fund(poor, u(5));
    assert_eq!(
        sim.request_storage(poor, r),
        Err(Revert::Erc20InsufficientBalance {
            sender: poor,
            balance: u(5),
            needed: need
        })
    );
}

// ----- request and slot states (docs/marketplace.md#request-and-slot-states) -------------

#[test]
fn request_is_new_at_expiry_and_cancelled_one_second_later() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    let expires = sim.latest().request_expiry(id);
    at(&mut sim, expires);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::New));
    // At exactly expiresAt the slot can still be filled.
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    at(&mut sim, expires + 1);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Cancelled));
    assert_eq!(
        sim.pending().slot_state(SlotId::of(id, 0)),
        SlotState::Cancelled
    );
    assert_eq!(sim.pending().request_end(id), Ok(expires));
}

#[test]
fn started_request_finishes_strictly_after_ends_at() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::Started));
    let end = sim.latest().request_end(id).unwrap();
    at(&mut sim, end);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Started));
    assert_eq!(
        sim.pending().slot_state(SlotId::of(id, 1)),
        SlotState::Filled
    );
    sim.mine();
    at(&mut sim, end + 1);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Finished));
    assert_eq!(
        sim.pending().slot_state(SlotId::of(id, 1)),
        SlotState::Finished
    );
    // Finished: requestEnd = min(endsAt, now).
    assert_eq!(sim.pending().request_end(id), Ok(end));
}

#[test]
fn new_request_past_its_end_is_cancelled_not_finished() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    let t = sim.now() + 100_000;
    at(&mut sim, t);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Cancelled));
}

#[test]
fn unknown_request_views() {
    let sim = sim();
    let id = RequestId::default();
    assert_eq!(sim.pending().request_state(id), Err(Revert::UnknownRequest));
    assert_eq!(sim.pending().request_end(id), Err(Revert::UnknownRequest));
    assert_eq!(sim.pending().get_request(id), Err(Revert::UnknownRequest));
    assert_eq!(sim.pending().request_expiry(id), 0);
    assert_eq!(sim.pending().slot_state(SlotId::of(id, 0)), SlotState::Free);
    assert_eq!(
        sim.pending().get_active_slot(SlotId::of(id, 0)),
        Err(Revert::SlotIsFree)
    );
    assert_eq!(sim.pending().get_host(SlotId::of(id, 0)), Address::ZERO);
}

#[test]
fn never_filled_slot_of_expired_request_is_free_and_reservable_but_not_fillable() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    let t = sim.latest().request_expiry(id) + 1;
    at(&mut sim, t);
    let slot = SlotId::of(id, 2);
    assert_eq!(sim.pending().slot_state(slot), SlotState::Free);
    assert!(sim.pending().can_reserve_slot(host(0), id, 2));
    sim.reserve_slot(host(0), id, 2).unwrap();
    let proof = sim.pending().proof_for(id, 2).unwrap();
    assert_eq!(
        sim.fill_slot(host(0), id, 2, &proof),
        Err(Revert::SlotNotFree)
    );
}

#[test]
fn slot_of_unknown_request_can_be_reserved() {
    let mut sim = sim();
    let id = RequestId::from([7u8; 32]);
    assert!(sim.pending().can_reserve_slot(host(0), id, 5));
    assert_eq!(sim.reserve_slot(host(0), id, 5), Ok(()));
}

// ----- reservations (docs/marketplace.md#reservations) -------------------------------------

#[test]
fn three_reservations_fill_the_set_and_emit_slot_reservations_full() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    for i in 0..2 {
        sim.reserve_slot(host(i), id, 0).unwrap();
    }
    assert_eq!(
        sim.reserve_slot(host(0), id, 0),
        Err(Revert::ReservationNotAllowed),
        "the same address cannot reserve twice"
    );
    assert!(!sim.pending().can_reserve_slot(host(1), id, 0));
    sim.reserve_slot(host(2), id, 0).unwrap();
    assert!(!sim.pending().can_reserve_slot(host(3), id, 0));
    assert_eq!(
        sim.reserve_slot(host(3), id, 0),
        Err(Revert::ReservationNotAllowed)
    );
    let b = sim.mine();
    assert_eq!(
        events(&b),
        vec![MarketEvent::SlotReservationsFull {
            request_id: id,
            slot_index: 0
        }]
    );
    assert_eq!(
        sim.market.reservations(SlotId::of(id, 0)),
        &[host(0), host(1), host(2)]
    );
}

#[test]
fn reservations_stay_after_fill_and_are_cleared_by_forced_free() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    sim.reserve_slot(host(1), id, 0).unwrap();
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let slot = SlotId::of(id, 0);
    assert_eq!(sim.market.reservations(slot), &[host(1), host(0)]);
    assert!(
        !sim.pending().can_reserve_slot(host(2), id, 0),
        "a Filled slot is not reservable"
    );
    sim.free_slot(host(0), slot).unwrap(); // forced free of its own Filled slot
    sim.mine();
    assert!(sim.market.reservations(slot).is_empty());
    assert_eq!(sim.pending().slot_state(slot), SlotState::Repair);
    assert!(sim.pending().can_reserve_slot(host(1), id, 0));
    assert!(sim.pending().can_reserve_slot(host(0), id, 0));
}

// ----- fillSlot (docs/marketplace.md#fill-and-collateral) ---------------------------------

#[test]
fn fill_slot_takes_collateral_and_emits_events() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    let before = sim.balance_of(host(0));
    fill(&mut sim, host(0), id, 1).unwrap();
    let b = sim.mine();
    let slot = SlotId::of(id, 1);
    assert_eq!(
        events(&b),
        vec![
            MarketEvent::ProofSubmitted { slot_id: slot },
            MarketEvent::SlotFilled {
                request_id: id,
                slot_index: 1
            }
        ]
    );
    assert_eq!(before - sim.balance_of(host(0)), u(1024));
    assert_eq!(sim.latest().current_collateral(slot), u(1024));
    assert_eq!(sim.latest().get_host(slot), host(0));
    assert_eq!(sim.latest().my_slots(host(0)), vec![slot]);
    assert_eq!(sim.latest().slot_state(slot), SlotState::Filled);
    let (r, idx) = sim.latest().get_active_slot(slot).unwrap();
    assert_eq!((r.id(), idx), (id, 1));
    assert_eq!(
        sim.market.slot_record(slot).unwrap().filled_at,
        b.header.timestamp
    );
}

#[test]
fn last_fill_emits_request_fulfilled_once() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill(&mut sim, host(0), id, 0).unwrap();
    fill(&mut sim, host(1), id, 1).unwrap();
    assert!(!sim
        .chain
        .pending_events()
        .contains(&MarketEvent::RequestFulfilled { request_id: id }));
    fill(&mut sim, host(2), id, 2).unwrap();
    let b = sim.mine();
    assert_eq!(
        events(&b).last(),
        Some(&MarketEvent::RequestFulfilled { request_id: id })
    );
    let record = sim.market.request_record(id).unwrap();
    assert_eq!(record.started_at, b.header.timestamp);
    // A repair refill does not re-emit it.
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap();
    sim.mine();
    sim.advance_time(120);
    fill(&mut sim, host(3), id, 0).unwrap();
    let b = sim.mine();
    assert!(!events(&b).contains(&MarketEvent::RequestFulfilled { request_id: id }));
}

#[test]
fn fill_slot_reverts_in_contract_order() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    let proof = sim.pending().proof_for(id, 0).unwrap();
    assert_eq!(
        sim.fill_slot(host(0), RequestId::default(), 0, &proof),
        Err(Revert::UnknownRequest)
    );
    assert_eq!(
        sim.fill_slot(host(0), id, 3, &proof),
        Err(Revert::InvalidSlot)
    );
    assert_eq!(
        sim.fill_slot(host(0), id, 0, &proof),
        Err(Revert::ReservationRequired)
    );
    sim.reserve_slot(host(0), id, 0).unwrap();
    assert_eq!(
        sim.fill_slot(host(0), id, 0, &Groth16Proof::default()),
        Err(Revert::InvalidProof)
    );
    sim.fill_slot(host(0), id, 0, &proof).unwrap();
    sim.mine();
    // The reservation check comes before the state check.
    assert_eq!(
        sim.fill_slot(host(2), id, 0, &proof),
        Err(Revert::ReservationRequired)
    );
}

#[test]
fn fill_of_a_filled_slot_is_slot_not_free() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    sim.reserve_slot(host(1), id, 0).unwrap();
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let proof = sim.pending().proof_for(id, 0).unwrap();
    assert_eq!(
        sim.fill_slot(host(1), id, 0, &proof),
        Err(Revert::SlotNotFree)
    );
    // The state check comes before the proof checks.
    assert_eq!(
        sim.fill_slot(host(1), id, 0, &Groth16Proof::default()),
        Err(Revert::SlotNotFree)
    );
}

#[test]
fn fill_needs_collateral_allowance_and_balance() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    let poor = account(77);
    sim.reserve_slot(poor, id, 0).unwrap();
    let proof = sim.pending().proof_for(id, 0).unwrap();
    assert_eq!(
        sim.fill_slot(poor, id, 0, &proof),
        Err(Revert::Erc20InsufficientAllowance {
            spender: MARKETPLACE_ADDRESS,
            allowance: U256::ZERO,
            needed: u(1024)
        })
    );
    sim.market.token.mint(poor, u(1000));
    sim.market.token.approve(poor, MARKETPLACE_ADDRESS, u(1024));
    assert_eq!(
        sim.fill_slot(poor, id, 0, &proof),
        Err(Revert::Erc20InsufficientBalance {
            sender: poor,
            balance: u(1000),
            needed: u(1024)
        })
    );
    sim.market.token.mint(poor, u(24));
    sim.fill_slot(poor, id, 0, &proof).unwrap();
    assert_eq!(sim.balance_of(poor), U256::ZERO);
    assert_eq!(
        sim.market.token.allowance(poor, MARKETPLACE_ADDRESS),
        U256::ZERO
    );
}

#[test]
fn repair_fill_takes_discounted_collateral_but_holds_the_full_amount() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 0);
    sim.free_slot(host(0), slot).unwrap();
    let b = sim.mine();
    assert_eq!(
        events(&b),
        vec![MarketEvent::SlotFreed {
            request_id: id,
            slot_index: 0
        }]
    );
    sim.advance_time(120); // a later period, so no proof is recorded yet
    let before = sim.balance_of(host(3));
    fill(&mut sim, host(3), id, 0).unwrap();
    sim.mine();
    assert_eq!(before - sim.balance_of(host(3)), u(922));
    assert_eq!(sim.latest().current_collateral(slot), u(1024));
    assert_eq!(sim.latest().slot_state(slot), SlotState::Filled);
    assert_eq!(sim.latest().get_host(slot), host(3));
}

#[test]
fn repair_in_the_period_of_the_previous_hosts_proof_is_already_submitted() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 0);
    sim.run_to_next_period();
    let proof = sim.pending().proof_for(id, 0).unwrap();
    sim.submit_proof(host(0), slot, &proof).unwrap();
    sim.free_slot(host(0), slot).unwrap();
    sim.reserve_slot(host(3), id, 0).unwrap();
    assert_eq!(
        sim.fill_slot(host(3), id, 0, &proof),
        Err(Revert::ProofAlreadySubmitted)
    );
}

#[test]
fn fill_exactly_at_ends_at_is_start_not_before_expiry() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap(); // Repair, request stays Started
    sim.mine();
    let end = sim.latest().request_end(id).unwrap();
    sim.reserve_slot(host(3), id, 0).unwrap();
    sim.mine();
    at(&mut sim, end);
    let proof = sim.pending().proof_for(id, 0).unwrap();
    assert_eq!(
        sim.fill_slot(host(3), id, 0, &proof),
        Err(Revert::StartNotBeforeExpiry)
    );
}

// ----- proofs (docs/marketplace.md#proof-periods, #proof-requirement) ---------------------

#[test]
fn pointer_follows_the_formula_and_challenge_is_keccak_of_a_block_hash() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 0);
    for _ in 0..30 {
        for tag in [BlockTag::Latest, BlockTag::Pending] {
            let v = sim.view(tag);
            let n = v.number();
            let p = v.period();
            let expected = ((n % 256 + (p * 67) % 256 + u64::from(slot.0[31])) % 256) as u8;
            assert_eq!(v.get_pointer(slot), expected);
            let m = n - 1 - u64::from(expected);
            assert_eq!(v.get_challenge(slot), keccak256(sim.chain.block_hash(m)));
        }
        sim.mine();
    }
}

#[test]
fn pointer_grows_by_one_per_block_and_jumps_by_downtime_product_at_a_period_change() {
    let mut sim = Sim::new(SimConfig {
        block_time: 1,
        ..SimConfig::default()
    });
    let slot = SlotId::from([3u8; 32]);
    let mut last = (sim.pending().period(), sim.pending().get_pointer(slot));
    let mut jumps = 0;
    for _ in 0..300 {
        sim.mine();
        let now = (sim.pending().period(), sim.pending().get_pointer(slot));
        let step = now.1.wrapping_sub(last.1);
        if now.0 == last.0 {
            assert_eq!(step, 1);
        } else {
            assert_eq!(step, 68, "one block plus downtimeProduct");
            jumps += 1;
        }
        last = now;
    }
    assert!(jumps >= 2);
}

#[test]
fn challenge_is_stable_until_the_pointer_wraps() {
    let mut sim = Sim::new(SimConfig {
        block_time: 0,
        ..SimConfig::default()
    });
    // All blocks in one period (same timestamp): the challenge changes only at a wrap.
    let slot = SlotId::from([9u8; 32]);
    let mut last = (
        sim.pending().get_pointer(slot),
        sim.pending().get_challenge(slot),
    );
    let mut changes = 0;
    for _ in 0..600 {
        sim.mine();
        let now = (
            sim.pending().get_pointer(slot),
            sim.pending().get_challenge(slot),
        );
        if now.0 == 0 {
            assert_eq!(last.0, 255);
            assert_ne!(now.1, last.1);
            changes += 1;
        } else {
            assert_eq!(now.1, last.1);
        }
        last = now;
    }
    assert_eq!(changes, 2);
}

#[test]
fn no_proof_required_in_the_fill_period_and_submit_is_already_submitted() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 0);
    let fill_period = sim.latest().period();
    while sim.pending().period() == fill_period {
        assert!(!sim.pending().is_proof_required(slot));
        assert!(!sim.pending().will_proof_be_required(slot));
        let proof = sim.pending().proof_for(id, 0).unwrap();
        assert_eq!(
            sim.submit_proof(host(0), slot, &proof),
            Err(Revert::ProofAlreadySubmitted)
        );
        sim.mine();
    }
}

#[test]
fn with_probability_one_proofs_are_required_once_the_pointer_leaves_downtime() {
    let mut sim = Sim::new(SimConfig {
        block_time: 1,
        ..SimConfig::default()
    });
    sim.fund(client(), u(FUNDS));
    sim.fund(host(0), u(FUNDS));
    let (_, id) = request(&mut sim);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let slot = SlotId::of(id, 0);
    sim.run_to_next_period();
    assert_eq!(sim.pending().slot_probability(slot), U256::ZERO);
    let (mut seen_req, mut seen_will) = (false, false);
    for _ in 0..360 {
        let v = sim.pending();
        let pointer = v.get_pointer(slot);
        assert_eq!(v.is_proof_required(slot), pointer >= 64);
        assert_eq!(v.will_proof_be_required(slot), pointer < 64);
        seen_req |= pointer >= 64;
        seen_will |= pointer < 64;
        sim.mine();
    }
    assert!(seen_req && seen_will);
}

#[test]
fn slot_probability_scales_by_downtime() {
    let mut sim = sim();
    let mut ask = small_ask();
    ask.proof_probability = u(10);
    let (_, id) = request_with(&mut sim, ask, 600);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    // 10 × 192 / 256 = 7 (integer division).
    assert_eq!(sim.pending().slot_probability(SlotId::of(id, 0)), u(7));
}

#[test]
fn proofs_are_required_only_in_filled_state() {
    let mut sim = sim_with(always_required());
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 0);
    sim.run_to_next_period();
    assert!(sim.pending().is_proof_required(slot));
    let end = sim.latest().request_end(id).unwrap();
    at(&mut sim, end + 1);
    assert_eq!(sim.pending().slot_state(slot), SlotState::Finished);
    assert!(!sim.pending().is_proof_required(slot));
    assert!(!sim.pending().will_proof_be_required(slot));
}

#[test]
fn submit_proof_checks() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 0);
    sim.run_to_next_period();
    let proof = sim.pending().proof_for(id, 0).unwrap();
    let never_filled = SlotId::from([1u8; 32]);
    assert_eq!(
        sim.submit_proof(host(0), never_filled, &proof),
        Err(Revert::UnknownRequest)
    );
    assert_eq!(
        sim.submit_proof(host(1), slot, &proof),
        Err(Revert::ProofNotSubmittedByHost)
    );
    assert_eq!(
        sim.submit_proof(host(0), slot, &Groth16Proof::default()),
        Err(Revert::InvalidProof)
    );
    sim.submit_proof(host(0), slot, &proof).unwrap();
    assert_eq!(
        sim.submit_proof(host(0), slot, &proof),
        Err(Revert::ProofAlreadySubmitted)
    );
    let b = sim.mine();
    assert_eq!(
        events(&b),
        vec![MarketEvent::ProofSubmitted { slot_id: slot }]
    );
    assert!(sim.market.proof_received(slot, sim.latest().period()));
}

#[test]
fn strict_verifier_rejects_a_proof_built_from_a_stale_challenge() {
    let mut sim = sim_with(SimConfig {
        proof_mode: ProofMode::Strict,
        ..SimConfig::default()
    });
    let (r, id) = request(&mut sim);
    let slot = SlotId::of(id, 0);
    sim.reserve_slot(host(0), id, 0).unwrap();
    // Challenge read now, proof computed from it, fill sent a period later.
    let challenge = sim.pending().get_challenge(slot);
    let stale = proof_for(challenge, r.content.merkle_root, 0);
    sim.run_to_next_period();
    assert_ne!(sim.pending().get_challenge(slot), challenge);
    assert_eq!(
        sim.fill_slot(host(0), id, 0, &stale),
        Err(Revert::InvalidProof)
    );
    let wrong_index = proof_for(sim.pending().get_challenge(slot), r.content.merkle_root, 1);
    assert_eq!(
        sim.fill_slot(host(0), id, 0, &wrong_index),
        Err(Revert::InvalidProof)
    );
    let fresh = proof_for(sim.pending().get_challenge(slot), r.content.merkle_root, 0);
    assert_eq!(sim.fill_slot(host(0), id, 0, &fresh), Ok(()));
}

#[test]
fn challenge_field_element_is_first_31_bytes_little_endian() {
    let mut b = [0u8; 32];
    b[0] = 1;
    b[1] = 2;
    b[31] = 0xff;
    assert_eq!(challenge_to_field_element(B256::from(b)), u(0x0201));
}

// ----- missed proofs, failure (docs/marketplace.md#slashing-and-forced-free) ------------

/// Filled request (all 3 slots) in the always-required config; returns its id, with the
/// pending block at the start of the period after the fill period + 1.
fn filled_always_required() -> (Sim, RequestId) {
    let mut sim = sim_with(always_required());
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    (sim, id)
}

/// Sets the pending timestamp to `offset` seconds after the end of period `p`.
fn after_period(sim: &mut Sim, p: u64, offset: u64) {
    let end = sim.market.configuration().period_end(p);
    at(sim, end + offset);
}

#[test]
fn mark_proof_as_missing_slashes_and_pays_the_validator() {
    let (mut sim, id) = filled_always_required();
    let slot = SlotId::of(id, 0);
    let p = sim.latest().period() + 1;
    after_period(&mut sim, p, 1);
    assert_eq!(sim.pending().can_mark_proof_as_missing(slot, p), Ok(()));
    sim.mark_proof_as_missing(validator(), slot, p).unwrap();
    sim.mine();
    assert_eq!(sim.latest().current_collateral(slot), u(820));
    assert_eq!(sim.balance_of(validator()), u(40));
    assert_eq!(sim.latest().missing_proofs(slot), 1);
    assert_eq!(sim.latest().slot_state(slot), SlotState::Filled);
}

#[test]
fn mark_proof_as_missing_checks_in_order() {
    let (mut sim, id) = filled_always_required();
    let slot = SlotId::of(id, 0);
    let fill_period = sim.latest().period();
    let p = fill_period + 1;
    // Not Filled: a slot never filled.
    assert_eq!(
        sim.pending()
            .can_mark_proof_as_missing(SlotId::from([5u8; 32]), p),
        Err(Revert::SlotNotAcceptingProofs)
    );
    // The period has not ended (also exactly at its end).
    after_period(&mut sim, p, 0);
    assert_eq!(
        sim.mark_proof_as_missing(validator(), slot, p),
        Err(Revert::PeriodNotEnded)
    );
    // Host 1 proves in p, host 0 does not.
    let t = sim.market.configuration().period_start(p) + 5;
    at(&mut sim, t);
    let proof = sim.pending().proof_for(id, 1).unwrap();
    sim.submit_proof(host(1), SlotId::of(id, 1), &proof)
        .unwrap();
    sim.mine();
    // Timed out at periodEnd + timeout.
    after_period(&mut sim, p, 30);
    assert_eq!(
        sim.pending().can_mark_proof_as_missing(slot, p),
        Err(Revert::ValidationTimedOut)
    );
    after_period(&mut sim, p, 29);
    assert_eq!(
        sim.mark_proof_as_missing(validator(), SlotId::of(id, 1), p),
        Err(Revert::ProofNotMissing)
    );
    // The fill period had the fill's proof.
    assert_eq!(
        sim.pending().can_mark_proof_as_missing(slot, fill_period),
        Err(Revert::ValidationTimedOut)
    );
    sim.mark_proof_as_missing(validator(), slot, p).unwrap();
    assert_eq!(
        sim.mark_proof_as_missing(validator(), slot, p),
        Err(Revert::ProofAlreadyMarkedMissing)
    );
}

#[test]
fn mark_proof_as_missing_when_not_required_is_proof_not_required() {
    let mut sim = sim();
    let mut ask = small_ask();
    // prob = 2^200 × 192 / 256: a challenge is practically never divisible by it.
    ask.proof_probability = U256::from(1u8) << 200;
    let (_, id) = request_with(&mut sim, ask, 600);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let slot = SlotId::of(id, 0);
    let p = sim.latest().period() + 1;
    after_period(&mut sim, p, 1);
    assert_eq!(
        sim.mark_proof_as_missing(validator(), slot, p),
        Err(Revert::ProofNotRequired)
    );
}

#[test]
fn fill_period_proof_is_not_missing() {
    let (mut sim, id) = filled_always_required();
    let slot = SlotId::of(id, 0);
    let fill_period = sim.latest().period();
    after_period(&mut sim, fill_period, 1);
    assert_eq!(
        sim.mark_proof_as_missing(validator(), slot, fill_period),
        Err(Revert::ProofNotMissing)
    );
}

#[test]
fn second_slash_forcibly_frees_the_slot() {
    let (mut sim, id) = filled_always_required();
    let slot = SlotId::of(id, 0);
    let p = sim.latest().period() + 1;
    let host_before = sim.balance_of(host(0));
    after_period(&mut sim, p, 1);
    sim.mark_proof_as_missing(validator(), slot, p).unwrap();
    sim.mine();
    after_period(&mut sim, p + 1, 1);
    sim.mark_proof_as_missing(validator(), slot, p + 1).unwrap();
    let b = sim.mine();
    assert_eq!(
        events(&b),
        vec![MarketEvent::SlotFreed {
            request_id: id,
            slot_index: 0
        }],
        "one slot lost is within maxSlotLoss 1: no failure"
    );
    let v = sim.latest();
    assert_eq!(v.slot_state(slot), SlotState::Repair);
    assert_eq!(v.get_host(slot), Address::ZERO);
    assert_eq!(v.current_collateral(slot), U256::ZERO);
    assert_eq!(v.missing_proofs(slot), 0);
    assert!(v.my_slots(host(0)).is_empty());
    assert_eq!(v.request_state(id), Ok(RequestState::Started));
    assert_eq!(sim.balance_of(validator()), u(80));
    assert_eq!(sim.balance_of(host(0)), host_before, "host lost the rest");
    assert_eq!(sim.market.request_record(id).unwrap().slots_filled, 2);
    assert_eq!(
        sim.free_slot(host(0), slot),
        Err(Revert::InvalidSlotHost),
        "a kicked-out host cannot free"
    );
    assert_eq!(
        sim.pending().can_mark_proof_as_missing(slot, p + 2),
        Err(Revert::SlotNotAcceptingProofs)
    );
    let (r, idx) = sim.pending().get_active_slot(slot).unwrap();
    assert_eq!((r.id(), idx), (id, 0), "getActiveSlot answers for Repair");
}

#[test]
fn losing_more_than_max_slot_loss_fails_the_request() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap();
    sim.mine();
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::Started));
    let t = sim.pending().timestamp();
    sim.free_slot(host(1), SlotId::of(id, 1)).unwrap();
    let b = sim.mine();
    assert_eq!(
        events(&b),
        vec![
            MarketEvent::SlotFreed {
                request_id: id,
                slot_index: 1
            },
            MarketEvent::RequestFailed { request_id: id }
        ]
    );
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::Failed));
    assert_eq!(sim.market.request_record(id).unwrap().ends_at, t - 1);
    assert_eq!(sim.latest().request_end(id), Ok(t - 1));
    assert_eq!(
        sim.latest().slot_state(SlotId::of(id, 2)),
        SlotState::Failed
    );
    assert_eq!(
        sim.latest().slot_state(SlotId::of(id, 0)),
        SlotState::Failed
    );
}

#[test]
fn forced_free_of_a_new_request_does_not_fail_it() {
    let mut sim = sim();
    let mut ask = small_ask();
    ask.max_slot_loss = 0;
    let (_, id) = request_with(&mut sim, ask, 600);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap();
    let b = sim.mine();
    assert_eq!(events(&b).len(), 1);
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::New));
}

// ----- freeSlot payouts and withdrawals (docs/marketplace.md#payouts) -------------------

#[test]
fn finished_slot_pays_reward_and_collateral_once() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 1);
    let rec = sim.market.slot_record(slot).unwrap().clone();
    let end = sim.market.request_record(id).unwrap().ends_at;
    at(&mut sim, end + 1);
    let before = sim.balance_of(host(1));
    sim.free_slot(host(1), slot).unwrap();
    let b = sim.mine();
    assert!(b.logs.is_empty(), "payouts emit no event");
    let expected = u((end - rec.filled_at) * 1024) + u(1024);
    assert_eq!(sim.balance_of(host(1)) - before, expected);
    assert_eq!(sim.latest().slot_state(slot), SlotState::Paid);
    assert!(sim.latest().my_slots(host(1)).is_empty());
    assert_eq!(sim.free_slot(host(1), slot), Err(Revert::AlreadyPaid));
    assert!(
        sim.latest().get_active_slot(slot).is_ok(),
        "answers for Paid"
    );
}

#[test]
fn finished_payout_with_recipients() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let slot = SlotId::of(id, 2);
    let filled_at = sim.market.slot_record(slot).unwrap().filled_at;
    let end = sim.market.request_record(id).unwrap().ends_at;
    at(&mut sim, end + 500);
    let reward_to = account(55);
    let before = sim.balance_of(host(2));
    sim.free_slot_to(host(2), slot, reward_to, host(2)).unwrap();
    assert_eq!(sim.balance_of(reward_to), u((end - filled_at) * 1024));
    assert_eq!(sim.balance_of(host(2)) - before, u(1024));
}

#[test]
fn slashed_collateral_is_what_a_finished_slot_returns() {
    let (mut sim, id) = filled_always_required();
    let slot = SlotId::of(id, 0);
    let p = sim.latest().period() + 1;
    after_period(&mut sim, p, 1);
    sim.mark_proof_as_missing(validator(), slot, p).unwrap();
    let end = sim.market.request_record(id).unwrap().ends_at;
    let filled_at = sim.market.slot_record(slot).unwrap().filled_at;
    sim.mine();
    at(&mut sim, end + 1);
    let before = sim.balance_of(host(0));
    sim.free_slot(host(0), slot).unwrap();
    assert_eq!(
        sim.balance_of(host(0)) - before,
        u((end - filled_at) * 1024) + u(820)
    );
}

#[test]
fn cancelled_slot_pays_until_expiry_plus_collateral() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let slot = SlotId::of(id, 0);
    let filled_at = sim.market.slot_record(slot).unwrap().filled_at;
    let expires = sim.latest().request_expiry(id);
    at(&mut sim, expires + 1);
    assert_eq!(sim.pending().slot_state(slot), SlotState::Cancelled);
    let before = sim.balance_of(host(0));
    sim.free_slot(host(0), slot).unwrap();
    assert_eq!(
        sim.balance_of(host(0)) - before,
        u((expires - filled_at) * 1024) + u(1024)
    );
    assert_eq!(sim.pending().slot_state(slot), SlotState::Paid);
    assert_eq!(sim.free_slot(host(0), slot), Err(Revert::AlreadyPaid));
}

#[test]
fn cancelled_slot_filled_exactly_at_expiry_cannot_be_paid() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    let expires = sim.latest().request_expiry(id);
    at(&mut sim, expires);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let slot = SlotId::of(id, 0);
    assert_eq!(
        sim.free_slot(host(0), slot),
        Err(Revert::StartNotBeforeExpiry)
    );
}

#[test]
fn failed_slot_pays_nothing_and_can_be_freed_again() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap();
    sim.free_slot(host(1), SlotId::of(id, 1)).unwrap();
    sim.mine();
    let slot = SlotId::of(id, 2);
    assert_eq!(sim.pending().slot_state(slot), SlotState::Failed);
    let before = sim.balance_of(host(2));
    sim.free_slot(host(2), slot).unwrap();
    assert_eq!(sim.balance_of(host(2)), before);
    assert!(sim.pending().my_slots(host(2)).is_empty());
    assert_eq!(sim.pending().slot_state(slot), SlotState::Failed);
    assert_eq!(sim.free_slot(host(2), slot), Ok(()));
}

#[test]
fn free_slot_of_free_or_foreign_slot_reverts() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    assert_eq!(
        sim.free_slot(host(0), SlotId::of(id, 1)),
        Err(Revert::SlotIsFree)
    );
    assert_eq!(
        sim.free_slot(host(1), SlotId::of(id, 0)),
        Err(Revert::InvalidSlotHost)
    );
}

#[test]
fn host_freeing_its_filled_slot_gets_nothing_back() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let before = sim.balance_of(host(0));
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap();
    assert_eq!(sim.balance_of(host(0)), before);
    assert_eq!(
        sim.pending().slot_state(SlotId::of(id, 0)),
        SlotState::Repair
    );
}

#[test]
fn withdraw_after_cancel_emits_request_cancelled_and_refunds() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.mine();
    let filled_at = sim.market.slot_record(SlotId::of(id, 0)).unwrap().filled_at;
    let expires = sim.latest().request_expiry(id);
    assert_eq!(sim.withdraw_funds(client(), id), Err(Revert::InvalidState));
    at(&mut sim, expires + 1);
    assert_eq!(
        sim.withdraw_funds(host(0), id),
        Err(Revert::InvalidClientAddress)
    );
    assert_eq!(
        sim.withdraw_funds(client(), RequestId::default()),
        Err(Revert::UnknownRequest)
    );
    let before = sim.balance_of(client());
    sim.withdraw_funds(client(), id).unwrap();
    let b = sim.mine();
    assert_eq!(
        events(&b),
        vec![MarketEvent::RequestCancelled { request_id: id }]
    );
    // Everything but what the one host earned until expiry.
    let max_price = 3 * 86_400 * 1024;
    let host_part = (expires - filled_at) * 1024;
    assert_eq!(sim.balance_of(client()) - before, u(max_price - host_part));
    assert_eq!(
        sim.withdraw_funds(client(), id),
        Err(Revert::NothingToWithdraw)
    );
    assert!(sim.latest().my_requests(client()).is_empty());
    // The host is still paid after the withdrawal.
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap();
    sim.mine();
    assert_eq!(sim.balance_of(MARKETPLACE_ADDRESS), U256::ZERO);
    sim.check_accounting().unwrap();
}

#[test]
fn withdraw_after_failure_refunds_the_full_price() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    sim.free_slot(host(0), SlotId::of(id, 0)).unwrap();
    sim.free_slot(host(1), SlotId::of(id, 1)).unwrap();
    sim.mine();
    let before = sim.balance_of(client());
    sim.withdraw_funds(client(), id).unwrap();
    let b = sim.mine();
    assert!(b.logs.is_empty());
    assert_eq!(sim.balance_of(client()) - before, u(3 * 86_400 * 1024));
}

#[test]
fn withdraw_after_finish_refunds_what_was_not_earned() {
    let mut sim = sim();
    let (_, id) = request(&mut sim);
    fill_all(&mut sim, id, 3);
    let end = sim.market.request_record(id).unwrap().ends_at;
    let paid: u64 = (0..3)
        .map(|i| end - sim.market.slot_record(SlotId::of(id, i)).unwrap().filled_at)
        .sum::<u64>()
        * 1024;
    at(&mut sim, end + 1);
    let before = sim.balance_of(client());
    sim.withdraw_funds(client(), id).unwrap();
    assert_eq!(
        sim.balance_of(client()) - before,
        u(3 * 86_400 * 1024 - paid)
    );
    for i in 0..3 {
        sim.free_slot(host(i), SlotId::of(id, i)).unwrap();
    }
    // Collateral back, all payouts made: the contract holds nothing.
    assert_eq!(sim.balance_of(MARKETPLACE_ADDRESS), U256::ZERO);
    sim.check_accounting().unwrap();
}

// ----- misc -------------------------------------------------------------------------------

#[test]
fn revert_selectors_match_the_contract() {
    let cases = [
        (Revert::InvalidSlot, 0x3b920b88u32),
        (Revert::SlotNotFree, 0xff556acf),
        (Revert::ReservationRequired, 0xd651ce18),
        (Revert::AlreadyPaid, 0xc2cbf777),
        (Revert::ReservationNotAllowed, 0x424a04ab),
        (Revert::ProofAlreadySubmitted, 0x3edef7db),
        (Revert::InvalidProof, 0xfcd03a47),
        (Revert::ProofNotRequired, 0xd3ffa66b),
        (Revert::UnknownRequest, 0xbdd64a7a),
        (
            Revert::Erc20InsufficientAllowance {
                spender: Address::ZERO,
                allowance: U256::ZERO,
                needed: U256::ZERO,
            },
            0xfb8f41b2,
        ),
    ];
    for (r, sel) in cases {
        assert_eq!(u32::from_be_bytes(r.selector()), sel, "{r}");
    }
}

#[test]
fn constructor_rejects_bad_collateral_config() {
    let mut c = SimConfig::default();
    c.market.repair_reward_percentage = 101;
    assert_eq!(
        Sim::try_new(c).err(),
        Some(Revert::RepairRewardPercentageTooHigh)
    );
    let mut c = SimConfig::default();
    c.market.slash_percentage = 101;
    assert_eq!(Sim::try_new(c).err(), Some(Revert::SlashPercentageTooHigh));
    let mut c = SimConfig::default();
    c.market.max_number_of_slashes = 6;
    assert_eq!(Sim::try_new(c).err(), Some(Revert::MaximumSlashingTooHigh));
}

// ----- actors -----------------------------------------------------------------------------

#[test]
fn validator_frees_the_slots_of_a_host_that_stops_proving() {
    let mut sim = sim_with(SimConfig {
        block_time: 6,
        ..SimConfig::default()
    });
    sim.add_validator(validator());
    let lazy = HostPolicy {
        proving: Proving::Never,
        repair: false,
        ..HostPolicy::default()
    };
    sim.add_host(ScriptedHost::new(host(4), lazy, 1));
    let (_, id) = request(&mut sim);
    let mut freed = 0;
    let mut failed = false;
    let start = sim.now();
    while sim.now() < start + 3_600 {
        for log in sim.mine().logs {
            match log.event {
                MarketEvent::SlotFreed { .. } => freed += 1,
                MarketEvent::RequestFailed { .. } => failed = true,
                _ => {}
            }
        }
    }
    assert_eq!(sim.hosts[0].stats.filled, 3);
    // Two slots lost exceed maxSlotLoss 1: the request fails and the third slot, now
    // Failed, no longer accepts marks after its first one.
    assert_eq!(freed, 2);
    assert!(failed);
    assert_eq!(sim.validators[0].marked, 5);
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::Failed));
    assert_eq!(sim.balance_of(validator()), u(5 * 40));
    sim.check_accounting().unwrap();
}

#[test]
fn proving_host_is_never_slashed_and_collects_its_payout() {
    let mut sim = sim_with(SimConfig {
        block_time: 6,
        ..SimConfig::default()
    });
    sim.add_validator(validator());
    let h = sim.add_host(ScriptedHost::new(host(4), HostPolicy::default(), 1));
    let before = sim.balance_of(host(4));
    let mut ask = small_ask();
    ask.duration = 7_200;
    let (_, id) = request_with(&mut sim, ask, 600);
    let end = sim.now() + 7_200;
    sim.run_until(end + 240); // the host looks at its slots once per period
    let s = sim.hosts[h].stats;
    assert_eq!(s.filled, 3);
    assert_eq!(s.freed, 3);
    assert!(s.proofs > 100, "{s:?}");
    assert_eq!(sim.validators[0].marked, 0);
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::Finished));
    assert!(sim.balance_of(host(4)) > before);
    sim.check_accounting().unwrap();
}

#[test]
fn competing_hosts_take_the_slots_and_the_client_withdraws() {
    let mut sim = sim();
    for i in 0..3 {
        sim.add_host(ScriptedHost::new(host(i), HostPolicy::default(), i));
    }
    let c = sim.add_client(ScriptedClient::new(account(21), Some(60)));
    // One request that fills and one nobody can fill in time (expiry 30 s < reaction).
    let r = sim.new_request(account(21), small_ask(), 600);
    let id = sim.request_storage(account(21), r).unwrap();
    let r2 = sim.new_request(account(21), small_ask(), 20);
    let id2 = sim.request_storage(account(21), r2).unwrap();
    let mut cancelled = Vec::new();
    let stop = sim.now() + 1_200;
    while sim.now() < stop {
        for log in sim.mine().logs {
            if let MarketEvent::RequestCancelled { request_id } = log.event {
                cancelled.push(request_id);
            }
        }
    }
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::Started));
    let hosts: Vec<Address> = (0..3)
        .map(|i| sim.latest().get_host(SlotId::of(id, i)))
        .collect();
    assert!(hosts.iter().all(|h| *h != Address::ZERO));
    assert_eq!(cancelled, vec![id2]);
    assert_eq!(sim.clients[c].withdrawals, 1);
}

#[test]
fn same_seed_same_run() {
    fn run(seed: u64) -> (Vec<Log>, U256) {
        let mut sim = sim_with(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.add_validator(validator());
        for i in 0..3 {
            let policy = HostPolicy {
                take_probability: 0.5,
                proving: Proving::MissProbability(0.3),
                ..HostPolicy::default()
            };
            sim.add_host(ScriptedHost::new(host(i), policy, seed + i));
        }
        sim.add_client(ScriptedClient::new(account(21), Some(10)));
        for _ in 0..5 {
            let r = sim.new_request(account(21), small_ask(), 300);
            sim.request_storage(account(21), r).unwrap();
            sim.mine_blocks(20);
        }
        let logs = sim.mine_blocks(2_000);
        (logs, sim.balance_of(validator()))
    }
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a.0, run(6).0);
    assert!(!a.0.is_empty());
}

/// A random valid ask (for the soak).
fn random_ask(rng: &mut fastrand::Rng) -> (Ask, u64) {
    let slots = rng.u64(1..=4);
    let ask = Ask {
        proof_probability: u(rng.u64(1..=10)),
        price_per_byte_per_second: u(rng.u64(1..=5)),
        collateral_per_byte: u(rng.u64(1..=3)),
        slots,
        slot_size: rng.u64(1..=64) * 1024,
        duration: rng.u64(3_600..=86_400),
        max_slot_loss: rng.u64(0..=slots),
    };
    (ask, rng.u64(300..=1_800))
}

#[test]
fn model_soak_two_thousand_requests_over_two_months() {
    let mut sim = Sim::new(SimConfig {
        block_time: 20,
        seed: 42,
        ..SimConfig::default()
    });
    sim.chain.set_keep_history(false);
    sim.add_validator(validator());
    let policies = [
        HostPolicy::default(),
        HostPolicy {
            proving: Proving::MissProbability(0.2),
            take_probability: 0.5,
            ..HostPolicy::default()
        },
        HostPolicy {
            proving: Proving::StopAfter(30),
            reaction_blocks: (0, 10),
            ..HostPolicy::default()
        },
        HostPolicy {
            take_probability: 0.3,
            reaction_blocks: (5, 40),
            max_slots: 50,
            ..HostPolicy::default()
        },
    ];
    for (i, p) in policies.into_iter().enumerate() {
        sim.add_host(ScriptedHost::new(host(i as u64), p, i as u64));
    }
    let clients = [(21, Some(0)), (22, Some(3_600)), (23, None)];
    for (i, d) in clients {
        sim.add_client(ScriptedClient::new(account(i), d));
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let start = sim.now();
    let days = 60;
    let mut ids = Vec::new();
    let mut events = 0usize;
    // One request about every 100 blocks (~33 minutes) for the first 50 days, so a few
    // dozen slots are filled at any time: the model's cost is one check per Filled slot per
    // period for the validator and for the holding host.
    while sim.now() < start + days * 86_400 {
        if sim.now() < start + 50 * 86_400 && rng.u64(0..100) == 0 {
            let c = account(21 + rng.u64(0..3));
            let (ask, expiry) = random_ask(&mut rng);
            let r = sim.new_request(c, ask, expiry);
            ids.push(sim.request_storage(c, r).unwrap());
        }
        events += sim.mine().logs.len();
        if sim.block_number().is_multiple_of(4_320) {
            sim.check_accounting().unwrap();
        }
    }
    assert!(ids.len() > 2_000, "{} requests", ids.len());
    assert!(events > 10_000, "{events} events");
    sim.check_accounting().unwrap();
    for id in &ids {
        let state = sim.latest().request_state(*id).unwrap();
        assert!(
            matches!(
                state,
                RequestState::Cancelled | RequestState::Finished | RequestState::Failed
            ),
            "{id} still {state:?}"
        );
    }
    for h in &sim.hosts {
        assert!(h.held_slots().is_empty(), "{:?}", h.stats);
        assert!(h.stats.filled > 0, "{:?}", h.stats);
    }
    assert!(sim.validators[0].marked > 0);
    assert!(sim.market.filled_slots().is_empty());
}

#[test]
fn my_slots_lists_like_an_enumerable_set() {
    let mut sim = sim();
    let mut ask = small_ask();
    ask.max_slot_loss = 3;
    let (_, id) = request_with(&mut sim, ask, 600);
    for i in 0..3 {
        fill(&mut sim, host(0), id, i).unwrap();
    }
    sim.mine();
    let s = |i| SlotId::of(id, i);
    assert_eq!(sim.latest().my_slots(host(0)), vec![s(0), s(1), s(2)]);
    sim.free_slot(host(0), s(0)).unwrap();
    // Removal moves the last item into the hole.
    assert_eq!(sim.pending().my_slots(host(0)), vec![s(2), s(1)]);
}

#[test]
fn seal_then_run_actors_lets_the_caller_go_first() {
    let mut sim = sim();
    let eager = HostPolicy {
        reaction_blocks: (0, 0),
        fill_delay_blocks: 0,
        ..HostPolicy::default()
    };
    sim.add_host(ScriptedHost::new(host(4), eager, 3));
    let r = sim.new_request(client(), small_ask(), 600);
    let id = sim.request_storage(client(), r).unwrap();
    let block = sim.seal();
    // We act before the competitor in the next block.
    fill(&mut sim, host(0), id, 0).unwrap();
    sim.run_actors(&block.logs);
    let b = sim.mine();
    let filled: Vec<u64> = b
        .logs
        .iter()
        .filter_map(|l| match l.event {
            MarketEvent::SlotFilled { slot_index, .. } => Some(slot_index),
            _ => None,
        })
        .collect();
    assert_eq!(filled, vec![0, 1, 2]);
    assert_eq!(sim.latest().get_host(SlotId::of(id, 0)), host(0));
    assert_eq!(sim.latest().get_host(SlotId::of(id, 1)), host(4));
}

#[test]
fn a_repairing_host_refills_a_freed_slot_with_discounted_collateral() {
    let mut sim = sim_with(SimConfig {
        block_time: 6,
        ..SimConfig::default()
    });
    sim.add_validator(validator());
    let lazy = HostPolicy {
        proving: Proving::Never,
        repair: false,
        ..HostPolicy::default()
    };
    sim.add_host(ScriptedHost::new(host(3), lazy, 1));
    let mut ask = small_ask();
    ask.slots = 1;
    ask.max_slot_loss = 1;
    let (_, id) = request_with(&mut sim, ask, 600);
    sim.mine_blocks(5);
    assert_eq!(sim.latest().get_host(SlotId::of(id, 0)), host(3));
    // The repairer joins after the fill; it learns of the slot from SlotFreed.
    sim.add_host(ScriptedHost::new(host(4), HostPolicy::default(), 2));
    let before = sim.balance_of(host(4));
    let mut freed_at = None;
    let stop = sim.now() + 1_800;
    while sim.now() < stop && sim.latest().get_host(SlotId::of(id, 0)) != host(4) {
        for log in sim.mine().logs {
            if let MarketEvent::SlotFreed { .. } = log.event {
                freed_at = Some(log.block_number);
            }
        }
    }
    assert!(freed_at.is_some());
    assert_eq!(sim.latest().get_host(SlotId::of(id, 0)), host(4));
    assert_eq!(before - sim.balance_of(host(4)), u(922));
    assert_eq!(sim.latest().current_collateral(SlotId::of(id, 0)), u(1024));
    assert_eq!(sim.latest().request_state(id), Ok(RequestState::Started));
}
