//! Reorganisations during sales on the simulated Marketplace: the world is snapshotted and
//! put back (as anvil's `evm_snapshot` / `evm_revert` do), the engine is told what the node
//! would tell it (the removed events, then that the chain was reorganised), and each sale
//! must end up where the chain now says it is, with nothing counted twice in the ledger.

use crate::{sales_driver, sim};

use codex::market::{MarketEvent, RequestId, SlotId, SlotState, U256};
use codex::sales::engine::EngineInput;
use codex::sales::ledger::Ledger;
use codex::sales::sale::{FinalState, SlotRef};
use codex::sales::ChainTime;
use sales_driver::{client, engine_config, post, Node};
use sim::{account, small_ask, Sim, SimConfig, World};

const EXPIRY: u64 = 600;

fn setup() -> (Sim, Node) {
    let mut sim = Sim::new(SimConfig::default());
    let me = account(1);
    let cfg = engine_config(&sim, me);
    let node = Node::new(&mut sim, me, cfg, 7);
    (sim, node)
}

/// An availability for `slots` slots of `small_ask`.
fn avail(sim: &Sim, node: &mut Node, slots: u64) {
    node.add_availability(sim, 1, 1024 * slots, 100_000, 1, 1024 * slots);
}

/// (free size, remaining collateral, collateral lost) over all availabilities.
fn ledger(node: &Node) -> (u64, U256, U256) {
    let all = node.engine.ledger().availabilities().unwrap();
    (
        all.iter().map(|a| a.free_size).sum(),
        all.iter().map(|a| a.total_remaining_collateral).sum(),
        all.iter().map(|a| a.collateral_lost).sum(),
    )
}

/// The requests posted on the simulated chain.
fn requests_of(sim: &Sim) -> Vec<RequestId> {
    sim.chain
        .logs(0, sim.block_number())
        .iter()
        .filter_map(|l| match &l.event {
            MarketEvent::StorageRequested { request_id, .. } => Some(*request_id),
            _ => None,
        })
        .collect()
}

fn states(node: &Node) -> Vec<&'static str> {
    node.engine
        .sales_snapshot()
        .iter()
        .map(|s| s.state)
        .collect()
}

/// Puts the world back to `snap` and tells the engine as the node does: every event of the
/// replaced blocks is removed (newest first), then the chain is reported reorganised. Like
/// the node's transaction book, a counted `freeSlot` that is gone has its slot resumed.
fn reorg_to(sim: &mut Sim, node: &mut Node, snap: World) {
    let from = snap.block_number() + 1;
    let gone: Vec<MarketEvent> = sim
        .chain
        .logs(from, sim.block_number())
        .iter()
        .map(|l| l.event.clone())
        .collect();
    // The slots we were paid for in the replaced blocks: their freeSlot was counted.
    let me = node.address;
    let paid: Vec<SlotId> = snap
        .chain
        .logs(0, snap.block_number())
        .iter()
        .filter_map(|l| match &l.event {
            MarketEvent::StorageRequested {
                request_id, ask, ..
            } => Some((*request_id, ask.slots)),
            _ => None,
        })
        .flat_map(|(id, n)| (0..n).map(move |i| SlotId::of(id, i)))
        .filter(|s| {
            sim.pending().slot_state(*s) == SlotState::Paid
                && snap.pending().slot_state(*s) != SlotState::Paid
                && snap.pending().get_host(*s) == me
        })
        .collect();
    *sim.world() = snap;
    let now = sim.now();
    for s in paid {
        // The book gives the freeSlot's nonce away and tells the node, which resumes the
        // slot (`SlotRef` by its index among the request's slots).
        let slot = (0..small_ask().slots)
            .flat_map(|i| {
                requests_of(sim)
                    .into_iter()
                    .map(move |r| SlotRef::new(r, i))
            })
            .find(|r| r.slot_id() == s)
            .expect("a slot of a known request");
        node.engine
            .handle(ChainTime(now), EngineInput::ResumeSlot(slot));
        node.pump(sim);
    }
    for e in gone.into_iter().rev() {
        node.engine.handle(ChainTime(now), EngineInput::Removed(e));
        node.pump(sim);
    }
    node.engine.handle(ChainTime(now), EngineInput::Reorged);
    node.pump(sim);
    node.check_ledger();
}

/// Case (a): a request reorganised out before the host reserved leaves the queue; an
/// availability added afterwards sells nothing, and nothing is held.
#[test]
fn a_request_reorganised_out_before_reserving_leaves_the_queue() {
    let (mut sim, mut node) = setup();
    let snap = (*sim).clone();
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 2);
    // No availability: the slots wait, seen.
    assert!(node.engine.queue().has_request(&id));
    reorg_to(&mut sim, &mut node, snap);
    assert!(
        !node.engine.queue().has_request(&id),
        "dropped from the queue"
    );
    avail(&sim, &mut node, 3);
    node.run_blocks(&mut sim, 5);
    assert!(states(&node).is_empty(), "{:?}", states(&node));
    assert_eq!(
        ledger(&node),
        (3 * 1024, U256::from(3 * 1024u64), U256::ZERO)
    );
}

/// Case (b), the fill: a proving host whose fills are reorganised out (the request still
/// open) gets back all it held, and sells the slots again on the chain as it now is; the
/// second sale is paid at the end and the ledger counts each slot once.
#[test]
fn fills_reorganised_out_return_everything_and_the_slots_are_sold_again() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    // The request is in the pending block: it stays on every branch from here.
    let snap = (*sim).clone();
    let balance = snap.balance_of(node.address);
    node.run_blocks(&mut sim, 10);
    assert_eq!(states(&node), vec!["SaleProving"; 3]);
    assert_eq!(ledger(&node).0, 0, "all bytes held");
    reorg_to(&mut sim, &mut node, snap);
    // Each sale saw its slot Free: everything came back, the slots were queued again.
    assert_eq!(node.engine.stats().ended_in(FinalState::Ignored), 3);
    assert_eq!(
        sim.balance_of(node.address),
        balance,
        "the fills never happened"
    );
    let t = node.trace.len();
    node.run_blocks(&mut sim, 10);
    eprintln!(
        "TRACE {:?} {:?} {:?}",
        &node.trace[t..],
        node.engine.queue_snapshot(),
        node.engine.stats()
    );
    assert_eq!(states(&node), vec!["SaleProving"; 3], "sold again");
    for i in 0..3 {
        assert_eq!(sim.pending().get_host(SlotId::of(id, i)), node.address);
    }
    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end + 300);
    assert!(states(&node).is_empty(), "{:?}", states(&node));
    assert_eq!(
        ledger(&node),
        (3 * 1024, U256::from(3 * 1024u64), U256::ZERO)
    );
    assert_eq!(node.engine.stats().ended_in(FinalState::Finished), 3);
    assert!(sim.balance_of(node.address) > balance, "paid once per slot");
    sim.check_accounting().unwrap();
}

/// Case (b), the request: a sale whose request is reorganised out, while downloading or
/// while proving, ends and returns everything; its data is released.
#[test]
fn a_request_reorganised_out_during_a_sale_ends_it_with_everything_back() {
    for blocks in [1, 10] {
        let (mut sim, mut node) = setup();
        avail(&sim, &mut node, 3);
        node.download_blocks = 5;
        let snap = (*sim).clone();
        let c = client(&mut sim);
        let id = post(&mut sim, c, small_ask(), EXPIRY);
        node.run_blocks(&mut sim, blocks);
        assert!(!states(&node).is_empty());
        reorg_to(&mut sim, &mut node, snap);
        assert!(states(&node).is_empty(), "{blocks}: {:?}", states(&node));
        assert!(!node.engine.queue().has_request(&id));
        assert_eq!(
            ledger(&node),
            (3 * 1024, U256::from(3 * 1024u64), U256::ZERO)
        );
        assert_eq!(node.released.len(), 3, "{blocks}: data released");
        node.run_blocks(&mut sim, 5);
        assert!(states(&node).is_empty());
    }
}

/// A proving host whose proofs are reorganised out proves the period again: the new
/// submissions are accepted on the chain as it now is.
#[test]
fn a_proof_reorganised_out_is_submitted_again() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 3);
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(states(&node), vec!["SaleProving"; 3]);
    let snap = (*sim).clone();
    let before = node.proofs.len();
    for _ in 0..100 {
        if node.proofs.len() >= before + 3 {
            break;
        }
        node.step(&mut sim);
    }
    assert!(node.proofs.len() >= before + 3, "three proofs");
    let submitted = node.proofs.len();
    reorg_to(&mut sim, &mut node, snap);
    // The proofs of the replaced blocks are missing on the new chain: each sale submits
    // its proof of that period again (it forgot it had proved it), and it is accepted.
    for _ in 0..100 {
        if node.proofs[submitted..].iter().filter(|p| p.3).count() >= 3 {
            break;
        }
        node.step(&mut sim);
    }
    let again: Vec<_> = node.proofs[submitted..].iter().filter(|p| p.3).collect();
    assert!(
        again.len() >= 3,
        "proved again: {:?}",
        &node.proofs[submitted..]
    );
    let replaced: std::collections::HashSet<_> = node.proofs[before..submitted]
        .iter()
        .map(|p| (p.0, p.1))
        .collect();
    assert!(
        again.iter().all(|p| replaced.contains(&(p.0, p.1))),
        "the same periods again"
    );
    assert_eq!(states(&node), vec!["SaleProving"; 3]);
}

/// A payout reorganised out after the sale ended: the ledger recorded the collateral
/// back once; the transaction book (emulated by `reorg_to`) does not replay the
/// `freeSlot` (the new chain's time is before the request's end, where a freeSlot is a
/// forced free) but has the slot resumed, so the host proves it to the end and is paid
/// exactly once on the chain as it now is, without the ledger counting it again.
#[test]
fn a_payout_reorganised_out_is_received_once() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end - 30);
    assert_eq!(states(&node), vec!["SaleProving"; 3]);
    let snap = (*sim).clone();
    node.run_until(&mut sim, end + 300);
    assert!(states(&node).is_empty());
    let paid = sim.balance_of(node.address);
    reorg_to(&mut sim, &mut node, snap);
    node.run_blocks(&mut sim, 40);
    assert!(states(&node).is_empty(), "{:?}", states(&node));
    assert_eq!(
        ledger(&node),
        (3 * 1024, U256::from(3 * 1024u64), U256::ZERO)
    );
    // Each slot's sale ended on the replaced chain, and its resumed sale (with no
    // reservation left to end) on the new one.
    assert_eq!(node.engine.stats().ended_in(FinalState::Finished), 6);
    for i in 0..3 {
        assert_eq!(sim.pending().slot_state(SlotId::of(id, i)), SlotState::Paid);
    }
    assert!(sim.balance_of(node.address) <= paid, "not paid twice");
    assert!(
        sim.balance_of(node.address) >= paid - U256::from(3 * 30 * 1024u64),
        "paid (less the 30 s before the end that were replaced)"
    );
    sim.check_accounting().unwrap();
}

/// Reorganisations at random points of live sales (seeded; the seed is printed): after
/// each one the ledger's invariant holds, and at the end every availability has all its
/// bytes and collateral back, nothing is lost, every slot we hold on chain was paid, and
/// the host's balance grew by what the Marketplace paid it.
#[test]
fn random_reorganisations_during_sales_keep_the_accounting_exact() {
    let seed = std::env::var("CODEX_REORG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026u64);
    println!("seed {seed} (CODEX_REORG_SEED)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 6);
    let start_balance = sim.balance_of(node.address);
    let c = client(&mut sim);
    let mut requests: Vec<RequestId> = Vec::new();
    // Snapshots of the current branch, oldest first (the first one is never dropped).
    let mut snaps: Vec<World> = vec![(*sim).clone()];
    let mut reorgs = 0;
    while reorgs < 24 {
        if rng.u8(..4) == 0 {
            let mut ask = small_ask();
            ask.duration = 600 + rng.u64(..1200);
            requests.push(post(&mut sim, c, ask, EXPIRY));
        }
        node.run_blocks(&mut sim, 1 + rng.u64(..4));
        if rng.u8(..3) == 0 {
            snaps.push((*sim).clone());
        }
        if rng.u8(..3) == 0 && snaps.len() > 1 {
            // A shallow or a deeper reorganisation: back to one of the last snapshots.
            let i = snaps.len() - 1 - rng.usize(..snaps.len().min(3));
            snaps.truncate(i + 1);
            reorg_to(&mut sim, &mut node, snaps[i].clone());
            reorgs += 1;
        }
    }
    // Let every request end and the host be paid.
    let ends = requests
        .iter()
        .filter_map(|id| sim.pending().request_end(*id).ok())
        .max()
        .unwrap_or(0);
    let until = ends.max(sim.now()) + 600;
    node.run_until(&mut sim, until);
    node.run_blocks(&mut sim, 20);
    assert!(states(&node).is_empty(), "{:?}", states(&node));
    let (free, remaining, lost) = ledger(&node);
    assert_eq!(
        (free, remaining, lost),
        (6 * 1024, U256::from(6 * 1024u64), U256::ZERO),
        "seed {seed}"
    );
    for s in sim.pending().my_slots(node.address) {
        assert_eq!(sim.pending().slot_state(s), SlotState::Paid, "seed {seed}");
    }
    assert!(sim.balance_of(node.address) >= start_balance, "seed {seed}");
    sim.check_accounting().unwrap();
    println!(
        "{reorgs} reorganisations, ended {:?}",
        node.engine.stats().ended_by_state().collect::<Vec<_>>()
    );
}

/// A re-check answer is applied only while it can be trusted: one overtaken by a later
/// re-check of the slot is dropped, and one that arrives after the sale moved on is asked
/// for again, since the view may predate what moved it.
#[test]
fn a_stale_re_check_answer_is_not_applied() {
    use codex::sales::engine::{Command, Ticket};
    use codex::sales::sale::SlotView;
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(states(&node), vec!["SaleProving"; 3]);
    let slot = SlotRef::new(id, 0);
    let now = sim.now();
    let rechecks = |node: &mut Node| -> Vec<Ticket> {
        let mut v = Vec::new();
        while let Some(cmd) = node.engine.poll() {
            if let Command::Recheck(t) = cmd {
                if t.slot == slot {
                    v.push(t);
                }
            }
        }
        v
    };
    // A view that says our fill is gone.
    let free = SlotView {
        request: Some(std::sync::Arc::new(sim.pending().get_request(id).unwrap())),
        request_state: Some(codex::market::RequestState::New),
        slot_state: SlotState::Free,
        expires_at: now + EXPIRY,
        ends_at: now + 86_400,
        host: codex::market::Address::ZERO,
        current_collateral: U256::ZERO,
    };
    node.engine.handle(ChainTime(now), EngineInput::Reorged);
    let first = rechecks(&mut node);
    node.engine.handle(ChainTime(now), EngineInput::Reorged);
    let second = rechecks(&mut node);
    assert_eq!((first.len(), second.len()), (1, 1));
    node.engine.handle(
        ChainTime(now),
        EngineInput::Rechecked(first[0], Ok(free.clone())),
    );
    assert_eq!(
        node.engine.sale(slot).map(|s| s.state_name()),
        Some("SaleProving"),
        "overtaken: dropped"
    );
    // The sale moves on (its period wake-up asks for the proof view) before the answer.
    let period = engine_config(&sim, node.address).sale.period;
    let wake = (now / period + 1) * period + 1;
    node.engine.handle(ChainTime(wake), EngineInput::Time);
    node.engine.handle(
        ChainTime(wake),
        EngineInput::Rechecked(second[0], Ok(free.clone())),
    );
    let again = rechecks(&mut node);
    assert_eq!(again.len(), 1, "asked again");
    assert_eq!(
        node.engine.sale(slot).map(|s| s.state_name()),
        Some("SaleProving")
    );
    // A fresh answer is applied.
    node.engine
        .handle(ChainTime(wake), EngineInput::Rechecked(again[0], Ok(free)));
    // Ended (our fill is gone), and the slot, queued again, is being prepared afresh.
    assert_eq!(node.engine.stats().ended_in(FinalState::Ignored), 1);
    assert_eq!(
        node.engine.sale(slot).map(|s| s.state_name()),
        Some("SalePreparing")
    );
    node.check_ledger();
}
