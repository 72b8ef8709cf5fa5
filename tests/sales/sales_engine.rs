//! Whole sales on the simulated Marketplace: scenarios 54–76 and 121–123
//! (`docs/sales.md#scenario-numbers`), and the engine-level defects of the reference that codex
//! fixes (`docs/sales.md#differences-from-the-reference`).

use crate::{sales_driver, sim};

use codex::market::{Ask, MarketEvent, RequestState, SlotId, SlotState, U256};
use codex::sales::engine::{Engine, EngineConfig, EngineInput};
use codex::sales::ledger::{AvailabilityUpdate, Ledger, Limits, MemLedger};
use codex::sales::queue::PauseReason;
use codex::sales::sale::{FinalState, SlotRef};
use codex::sales::ChainTime;
use sales_driver::{client, engine_config, post, Node, QUOTA};
use sim::{account, small_ask, HostPolicy, ScriptedHost, Sim, SimConfig};

const EXPIRY: u64 = 600;

fn setup() -> (Sim, Node) {
    let mut sim = Sim::new(SimConfig::default());
    let me = account(1);
    let cfg = engine_config(&sim, me);
    let node = Node::new(&mut sim, me, cfg, 7);
    (sim, node)
}

/// Availability for `slots` slots of small_ask.
fn avail(sim: &Sim, node: &mut Node, n: u8, slots: u64) {
    node.add_availability(sim, n, 1024 * slots, 100_000, 1, 1024 * slots);
}

fn free_size(node: &Node) -> u64 {
    node.engine
        .ledger()
        .availabilities()
        .unwrap()
        .iter()
        .map(|a| a.free_size)
        .sum()
}

fn remaining(node: &Node) -> U256 {
    node.engine
        .ledger()
        .availabilities()
        .unwrap()
        .iter()
        .map(|a| a.total_remaining_collateral)
        .fold(U256::ZERO, |a, b| a + b)
}

fn states(node: &Node) -> Vec<&'static str> {
    node.engine
        .sales_snapshot()
        .iter()
        .map(|s| s.state)
        .collect()
}

fn hosted(sim: &Sim, node: &Node) -> usize {
    sim.pending().my_slots(node.address).len()
}

#[test]
fn item_55_68_69_every_slot_is_processed_filled_and_sold() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 3, "trace: {:?}", node.trace);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Started));
    assert_eq!(states(&node), vec!["SaleProving"; 3]);
    for i in 0..3 {
        assert_eq!(sim.pending().get_host(SlotId::of(id, i)), node.address);
    }
    // item 69: onSale for every slot.
    assert_eq!(node.sold.len(), 3);
    // Workers are not held while proving (#532).
    assert_eq!(node.engine.queue_snapshot().workers_busy, 0);
}

#[test]
fn item_61_62_bytes_are_held_while_hosting_and_return_after_payout() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(
        free_size(&node),
        0,
        "item 61: freeSize = original − 3 × slotSize"
    );
    let before = sim.balance_of(node.address);
    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end + 300);
    assert!(
        node.engine.sales_snapshot().is_empty(),
        "{:?}",
        states(&node)
    );
    assert_eq!(free_size(&node), 3 * 1024);
    assert_eq!(remaining(&node), U256::from(3 * 1024u64), "collateral back");
    assert!(sim.balance_of(node.address) > before, "paid");
    assert_eq!(node.released.len(), 3, "data released at the end");
    assert_eq!(node.engine.stats().ended_in(FinalState::Finished), 3);
    // Proofs were submitted every period (proof probability 1) and never twice per period.
    let mut seen = std::collections::HashSet::new();
    for (slot, period, _, ok) in &node.proofs {
        assert!(*ok);
        assert!(seen.insert((*slot, *period)), "two proofs in one period");
    }
    assert!(node.proofs.len() > 3 * 600);
}

#[test]
fn item_54_74_restart_resumes_every_hosted_slot_and_item_121_proofs_continue() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 3);
    node.restart(&mut sim, 0);
    let snap = node.engine.sales_snapshot();
    assert_eq!(snap.len(), 3);
    let mut idx: Vec<u64> = snap.iter().map(|s| s.slot.slot_index).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2]);
    assert!(
        snap.iter().all(|s| s.reservation.is_some()),
        "reservations re-attached"
    );
    let proofs_before = node.proofs.len();
    node.run_blocks(&mut sim, 40);
    assert_eq!(states(&node), vec!["SaleProving"; 3]);
    assert!(
        node.proofs.len() > proofs_before,
        "proofs continue after restart"
    );
    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end + 300);
    assert_eq!(
        free_size(&node),
        3 * 1024,
        "difference 2: bytes come back after restart"
    );
    assert_eq!(
        remaining(&node),
        U256::from(3 * 1024u64),
        "difference 2: collateral too"
    );
}

#[test]
fn item_56_request_end_events_stop_queued_slots() {
    for ev in 0..3 {
        let (mut sim, mut node) = setup();
        // No availability: every slot is tried once and stays queued as seen.
        let c = client(&mut sim);
        let ask = Ask {
            slots: 5,
            max_slot_loss: 2,
            ..small_ask()
        };
        let id = post(&mut sim, c, ask, EXPIRY);
        node.run_blocks(&mut sim, 2);
        // Items are seen (no availability) and stay queued.
        assert_eq!(node.engine.queue().len(), 5);
        let e = match ev {
            0 => MarketEvent::RequestCancelled { request_id: id },
            1 => MarketEvent::RequestFailed { request_id: id },
            _ => MarketEvent::RequestFulfilled { request_id: id },
        };
        node.engine
            .handle(ChainTime(sim.now()), EngineInput::Event(e));
        assert_eq!(node.engine.queue().len(), 0);
    }
}

#[test]
fn item_57_slot_filled_or_reservations_full_stops_that_slot() {
    let (mut sim, mut node) = setup();
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.step(&mut sim);
    assert_eq!(node.engine.queue().len(), 3);
    node.engine.handle(
        ChainTime(sim.now()),
        EngineInput::Event(MarketEvent::SlotFilled {
            request_id: id,
            slot_index: 1,
        }),
    );
    assert!(!node.engine.queue().contains(id, 1));
    node.engine.handle(
        ChainTime(sim.now()),
        EngineInput::Event(MarketEvent::SlotReservationsFull {
            request_id: id,
            slot_index: 2,
        }),
    );
    assert!(!node.engine.queue().contains(id, 2));
    assert!(node.engine.queue().contains(id, 0));
}

#[test]
fn item_58_123_defect_8_7_freed_slot_is_queued_with_repair_collateral_and_absolute_expiry() {
    let (mut sim, mut node) = setup();
    let c = client(&mut sim);
    // Another host takes all slots and stops proving; the validator frees one.
    sim.add_host(ScriptedHost::new(
        account(5),
        HostPolicy {
            proving: sim::Proving::Never,
            repair: false,
            ..HostPolicy::default()
        },
        5,
    ));
    sim.add_validator(account(6));
    let ask = Ask {
        max_slot_loss: 3,
        ..small_ask()
    };
    let id = post(&mut sim, c, ask, EXPIRY);
    node.engine.handle(ChainTime(sim.now()), EngineInput::Pause);
    let mut freed = None;
    for _ in 0..400 {
        for e in node.step(&mut sim) {
            if let MarketEvent::SlotFreed { slot_index, .. } = e {
                freed.get_or_insert(slot_index);
            }
        }
        if freed.is_some() {
            break;
        }
    }
    let idx = freed.expect("a slot was freed");
    // Item 123: the queued item carries collateral × (1 − 10%) and an absolute expiry.
    node.engine
        .handle(ChainTime(sim.now()), EngineInput::Resume);
    // The stopped queue refused the push; announce again now that it runs.
    node.engine.handle(
        ChainTime(sim.now()),
        EngineInput::Event(MarketEvent::SlotFreed {
            request_id: id,
            slot_index: idx,
        }),
    );
    node.pump(&mut sim);
    let q = node.engine.queue_snapshot();
    let item = &q
        .items
        .iter()
        .find(|i| i.item.slot_index == idx)
        .unwrap()
        .item;
    assert_eq!(item.collateral, U256::from(922u32));
    assert_eq!(item.expiry, sim.pending().request_end(id).unwrap());
    assert!(
        item.expiry > sim.now(),
        "difference 7: absolute, not the relative expiry"
    );
    // Item 58: with an availability, the slot is repaired by us.
    avail(&sim, &mut node, 1, 1);
    node.run_blocks(&mut sim, 20);
    assert_eq!(sim.pending().get_host(SlotId::of(id, idx)), node.address);
}

#[test]
fn item_59_without_availability_all_slots_are_seen_and_the_queue_pauses() {
    let (mut sim, mut node) = setup();
    let c = client(&mut sim);
    let ask = Ask {
        slots: 4,
        ..small_ask()
    };
    post(&mut sim, c, ask, EXPIRY);
    node.run_blocks(&mut sim, 3);
    let q = node.engine.queue_snapshot();
    assert_eq!(q.items.len(), 4);
    assert!(q.items.iter().all(|i| i.item.seen));
    assert_eq!(q.paused, Some(PauseReason::OnlySeenItems));
    assert!(node.engine.sales_snapshot().is_empty());
    assert_eq!(q.workers_busy, 0);
}

#[test]
fn item_60_availability_for_one_slot_fills_one_and_pauses_with_three_seen() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 1);
    let c = client(&mut sim);
    let ask = Ask {
        slots: 4,
        max_slot_loss: 3,
        ..small_ask()
    };
    post(&mut sim, c, ask, EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 1);
    let q = node.engine.queue_snapshot();
    assert_eq!(q.items.len(), 3);
    assert!(q.items.iter().all(|i| i.item.seen));
    assert_eq!(q.paused, Some(PauseReason::OnlySeenItems));
}

fn ignored_with(mut f: impl FnMut(&mut Node, &Sim), ask: Ask) {
    let (mut sim, mut node) = setup();
    f(&mut node, &sim);
    let before = free_size(&node);
    let c = client(&mut sim);
    post(&mut sim, c, ask, EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 0);
    assert_eq!(free_size(&node), before);
    assert!(node.engine.ledger().reservations().unwrap().is_empty());
}

#[test]
fn item_63_requests_that_do_not_match_are_ignored() {
    let ask = small_ask();
    // duration too short
    ignored_with(
        |n, s| {
            n.add_availability(s, 1, 4096, 100, 1, 4096);
        },
        ask.clone(),
    );
    // size too small
    ignored_with(
        |n, s| {
            n.add_availability(s, 1, 1000, 100_000, 1, 4096);
        },
        ask.clone(),
    );
    // min price above the request's
    ignored_with(
        |n, s| {
            n.add_availability(s, 1, 4096, 100_000, 2, 4096);
        },
        ask.clone(),
    );
    // collateral per byte above what remaining collateral allows
    ignored_with(
        |n, s| {
            n.add_availability(s, 1, 4096, 100_000, 1, 1000);
        },
        ask.clone(),
    );
    // disabled
    ignored_with(
        |n, s| {
            let id = n.add_availability(s, 1, 4096, 100_000, 1, 4096);
            n.engine
                .ledger_mut()
                .update_availability(
                    id,
                    AvailabilityUpdate {
                        enabled: Some(false),
                        ..Default::default()
                    },
                    Limits {
                        quota: QUOTA,
                        now: s.now(),
                    },
                )
                .unwrap();
        },
        ask.clone(),
    );
    // until before the request end
    ignored_with(
        |n, s| {
            let id = n.add_availability(s, 1, 4096, 100_000, 1, 4096);
            n.engine
                .ledger_mut()
                .update_availability(
                    id,
                    AvailabilityUpdate {
                        until: Some(s.now() + 1000),
                        ..Default::default()
                    },
                    Limits {
                        quota: QUOTA,
                        now: s.now(),
                    },
                )
                .unwrap();
        },
        ask,
    );
}

#[test]
fn item_63_slots_not_free_are_ignored() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    sim.add_host(ScriptedHost::new(
        account(5),
        HostPolicy {
            reaction_blocks: (0, 0),
            fill_delay_blocks: 0,
            ..HostPolicy::default()
        },
        5,
    ));
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    // Let the other host fill everything before we see the request.
    node.engine.handle(ChainTime(sim.now()), EngineInput::Pause);
    sim.mine_blocks(4);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Started));
    node.engine
        .handle(ChainTime(sim.now()), EngineInput::Resume);
    node.engine.handle(
        ChainTime(sim.now()),
        EngineInput::Event(MarketEvent::StorageRequested {
            request_id: id,
            ask: small_ask(),
            expiry: sim.pending().request_expiry(id),
        }),
    );
    node.pump(&mut sim);
    node.run_blocks(&mut sim, 3);
    assert_eq!(hosted(&sim, &node), 0);
    assert_eq!(free_size(&node), 3 * 1024);
    assert!(node.engine.ledger().reservations().unwrap().is_empty());
}

#[test]
fn item_64_65_request_ending_before_until_is_downloaded() {
    let (mut sim, mut node) = setup();
    let id0 = node.add_availability(&sim, 1, 4096, 100_000, 1, 4096);
    node.engine
        .ledger_mut()
        .update_availability(
            id0,
            AvailabilityUpdate {
                until: Some(sim.now() + 200_000),
                ..Default::default()
            },
            Limits {
                quota: QUOTA,
                now: sim.now(),
            },
        )
        .unwrap();
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 3);
    assert!(!node.downloads_started.is_empty());
    for (slot, req) in &node.downloads_started {
        assert_eq!(req.id(), id);
        assert!(slot.slot_index < 3);
    }
}

#[test]
fn item_66_70_failed_download_or_initial_proof_returns_everything() {
    for fault in 0..2 {
        let (mut sim, mut node) = setup();
        avail(&sim, &mut node, 1, 3);
        if fault == 0 {
            node.faults.download = true;
        } else {
            node.faults.prove = true;
        }
        let c = client(&mut sim);
        post(&mut sim, c, small_ask(), EXPIRY);
        node.run_blocks(&mut sim, 30);
        assert_eq!(hosted(&sim, &node), 0);
        assert_eq!(free_size(&node), 3 * 1024);
        assert_eq!(
            remaining(&node),
            U256::from(3 * 1024u64),
            "difference 3: collateral back"
        );
        assert!(node.engine.stats().ended_in(FinalState::Errored) >= 3);
        if fault == 1 {
            // item 67/70: onProve got the request's slots; the data is released.
            assert!(node.proves.iter().all(|(s, _)| s.slot_index < 3));
            assert_eq!(
                node.released.len(),
                node.engine.stats().ended_in(FinalState::Errored) as usize
            );
        }
    }
}

#[test]
fn item_71_another_host_fills_during_download_and_everything_returns() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    node.download_blocks = 50;
    sim.add_host(ScriptedHost::new(account(5), HostPolicy::default(), 5));
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 60);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Started));
    assert_eq!(hosted(&sim, &node), 0);
    assert!(
        node.engine.sales_snapshot().is_empty(),
        "{:?}",
        states(&node)
    );
    assert_eq!(free_size(&node), 3 * 1024);
    assert_eq!(remaining(&node), U256::from(3 * 1024u64));
}

#[test]
fn item_72_73_expiry_acted_on_only_once_the_chain_says_cancelled() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 1);
    let c = client(&mut sim);
    // 3 slots, only one for us: the request never starts and expires.
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 1);
    assert_eq!(free_size(&node), 0);
    let expiry = sim.pending().request_expiry(id);
    // Up to expiry the chain says New: nothing is given back.
    node.run_until(&mut sim, expiry - 1);
    assert_eq!(free_size(&node), 0);
    node.run_until(&mut sim, expiry + 60);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Cancelled));
    assert!(
        node.engine.sales_snapshot().is_empty(),
        "{:?}",
        states(&node)
    );
    assert_eq!(free_size(&node), 1024);
    // Filled before expiry: paid for the time held, collateral back in full.
    assert_eq!(remaining(&node), U256::from(1024u32));
}

#[test]
fn item_75_defect_8_2_restart_ends_reservations_no_live_slot_holds() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.download_blocks = 100;
    node.run_blocks(&mut sim, 3);
    assert!(!node.engine.ledger().reservations().unwrap().is_empty());
    // Restart mid-download: no slot is ours on chain.
    node.restart(&mut sim, 0);
    assert!(node.engine.ledger().reservations().unwrap().is_empty());
    assert_eq!(free_size(&node), 3 * 1024);
    assert_eq!(
        remaining(&node),
        U256::from(3 * 1024u64),
        "difference 2: collateral back too"
    );
}

#[test]
fn item_76_until_cannot_drop_below_a_hosted_slot() {
    let (mut sim, mut node) = setup();
    let aid = node.add_availability(&sim, 1, 4096, 100_000, 1, 4096);
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    let now = sim.now();
    let err = node
        .engine
        .ledger_mut()
        .update_availability(
            aid,
            AvailabilityUpdate {
                until: Some(now + 1),
                ..Default::default()
            },
            Limits { quota: QUOTA, now },
        )
        .unwrap_err();
    assert!(err.to_string().contains("Until parameter"), "{err}");
}

#[test]
fn item_122_sale_list_shows_state_names_and_forgets_ended_sales() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    let snap = node.engine.sales_snapshot();
    assert!(snap.iter().all(|s| s.state == "SaleProving"));
    let slot = SlotRef::new(id, 0);
    assert!(node.engine.sale(slot).is_some());
    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end + 300);
    assert!(node.engine.sale(slot).is_none());
}

// ---- differences from the reference (engine level) ----
// Numbered as in docs/sales.md#differences-from-the-reference.

/// Difference 1: a missed RequestFailed leaves the reference in Proving forever; codex sees the
/// Failed slot state in its proof check.
#[test]
fn defect_8_1_missed_request_failed_event_still_ends_the_sale() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 1);
    let c = client(&mut sim);
    sim.add_host(ScriptedHost::new(
        account(5),
        HostPolicy {
            proving: sim::Proving::StopAfter(8),
            repair: false,
            max_slots: 2,
            ..HostPolicy::default()
        },
        5,
    ));
    sim.add_validator(account(6));
    let ask = Ask {
        max_slot_loss: 0,
        ..small_ask()
    };
    let id = post(&mut sim, c, ask, EXPIRY);
    // Drop every RequestFailed event on the floor.
    node.drop_events = Some(|e| matches!(e, MarketEvent::RequestFailed { .. }));
    for _ in 0..600 {
        node.step(&mut sim);
        if sim.pending().request_state(id) == Ok(RequestState::Failed)
            && node.engine.sales_snapshot().is_empty()
        {
            break;
        }
    }
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Failed));
    assert!(
        node.engine.sales_snapshot().is_empty(),
        "{:?}",
        states(&node)
    );
    assert_eq!(free_size(&node), 1024);
    node.check_ledger();
}

/// Difference 6 (nim-codex #532): a worker is released once the slot is filled, so a host with one
/// worker fills several slots of one request.
#[test]
fn defect_8_6_one_worker_fills_many_slots_because_proving_holds_none() {
    let mut sim = Sim::new(SimConfig::default());
    let me = account(1);
    let mut cfg = engine_config(&sim, me);
    cfg.max_workers = 1;
    let mut node = Node::new(&mut sim, me, cfg, 7);
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 40);
    assert_eq!(hosted(&sim, &node), 3);
}

/// Difference 9: expired items leave the queue by time, without a RequestCancelled.
#[test]
fn defect_8_9_expired_requests_leave_the_queue_without_request_cancelled() {
    let (mut sim, mut node) = setup();
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 2);
    assert_eq!(node.engine.queue().len(), 3);
    let expiry = sim.pending().request_expiry(id);
    assert!(node.engine.next_deadline().unwrap() <= ChainTime(expiry));
    node.run_until(&mut sim, expiry + 1);
    assert_eq!(node.engine.queue().len(), 0);
    assert_eq!(node.engine.stats().queue_expired, 3);
}

/// Difference 10: re-enabling an availability (or extending until) wakes the queue in codex.
#[test]
fn defect_8_10_enabling_an_availability_unpauses_the_queue() {
    let (mut sim, mut node) = setup();
    let aid = node.add_availability(&sim, 1, 4096, 100_000, 1, 4096);
    let lim = |s: &Sim| Limits {
        quota: QUOTA,
        now: s.now(),
    };
    node.engine
        .ledger_mut()
        .update_availability(
            aid,
            AvailabilityUpdate {
                enabled: Some(false),
                ..Default::default()
            },
            lim(&sim),
        )
        .unwrap();
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 3);
    assert_eq!(
        node.engine.queue_snapshot().paused,
        Some(PauseReason::OnlySeenItems)
    );
    let change = node
        .engine
        .ledger_mut()
        .update_availability(
            aid,
            AvailabilityUpdate {
                enabled: Some(true),
                ..Default::default()
            },
            lim(&sim),
        )
        .unwrap();
    node.engine.handle(
        ChainTime(sim.now()),
        EngineInput::AvailabilityChanged {
            grew: change.grew(),
        },
    );
    node.pump(&mut sim);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 3);
}

/// Difference 13: transient failures of proof submission and payout are retried; the reference
/// ends in Errored on the first payout failure and keeps the collateral out of the ledger.
#[test]
fn defect_8_13_transient_tx_failures_are_retried_until_paid() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 3);
    node.faults.tx = 0.5;
    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end + 3600);
    assert!(
        node.engine.sales_snapshot().is_empty(),
        "{:?}",
        states(&node)
    );
    assert_eq!(node.engine.stats().ended_in(FinalState::Finished), 3);
    assert_eq!(remaining(&node), U256::from(3 * 1024u64));
    for i in 0..3 {
        assert_eq!(sim.pending().slot_state(SlotId::of(id, i)), SlotState::Paid);
    }
}

/// Backfilled events after a restart (requests announced while down) are processed.
#[test]
fn restart_accepts_backfilled_storage_requested_events() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    // The node is "down": blocks are mined without it.
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    sim.mine_blocks(5);
    node.restart(&mut sim, 10);
    node.run_blocks(&mut sim, 10);
    assert_eq!(hosted(&sim, &node), 3);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Started));
}

/// The engine refuses configurations the queue refuses.
#[test]
fn engine_rejects_invalid_worker_budget() {
    let cfg = EngineConfig {
        max_workers: 0,
        ..EngineConfig::default()
    };
    assert!(Engine::start(
        cfg,
        MemLedger::new(),
        fastrand::Rng::with_seed(1),
        &[],
        ChainTime(0)
    )
    .is_err());
}

#[test]
fn item_67_on_prove_receives_the_request_and_a_valid_slot() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert!(node.proves.len() >= 3);
    assert!(node
        .proves
        .iter()
        .all(|(s, _)| s.request_id == id && s.slot_index < 3));
}

/// Difference 4: the slot's data is released when its sale ends (onClear was a no-op upstream).
#[test]
fn defect_8_4_data_is_released_on_every_ending_after_a_download() {
    let (mut sim, mut node) = setup();
    avail(&sim, &mut node, 1, 3);
    node.faults.prove = true;
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 30);
    let errored = node.engine.stats().ended_in(FinalState::Errored) as usize;
    assert!(errored >= 3);
    assert_eq!(node.released.len(), errored);
}

/// Drives an engine by hand to a sale waiting in SlotReserving for a request still New.
/// An engine started at `now` over a ledger with one roomy availability (id 0x0101…).
fn started_engine_with_one_availability(now: u64) -> Engine<MemLedger> {
    started_engine_for(now, EngineConfig::default())
}

/// The same, with the given engine settings.
fn started_engine_for(now: u64, cfg: EngineConfig) -> Engine<MemLedger> {
    use codex::sales::ledger::{AvailabilityId, NewAvailability};
    let mut ledger = MemLedger::new();
    ledger
        .create_availability(
            AvailabilityId([1; 32]),
            NewAvailability {
                total_size: 1 << 20,
                duration: 1 << 20,
                min_price_per_byte_per_second: U256::from(1u8),
                total_collateral: U256::from(1u64 << 30),
                enabled: true,
                until: 0,
            },
            Limits { quota: QUOTA, now },
        )
        .unwrap();
    let (e, _) = Engine::start(
        cfg,
        ledger,
        fastrand::Rng::with_seed(1),
        &[],
        ChainTime(now),
    )
    .unwrap();
    e
}

fn engine_with_waiting_sales(slots: u64) -> (Engine<MemLedger>, codex::market::RequestId, u64) {
    use codex::sales::engine::{Command, SaleCommand};
    use codex::sales::sale::{Input, SlotView};
    use std::sync::Arc;
    let now = 1_000_000;
    let mut e = started_engine_with_one_availability(now);
    let ask = Ask {
        slots,
        ..small_ask()
    };
    let req = Arc::new(sim::World::make_request(account(9), ask.clone(), 600, 1));
    let id = req.id();
    let expires = now + 600;
    e.handle(
        ChainTime(now),
        EngineInput::Event(MarketEvent::StorageRequested {
            request_id: id,
            ask,
            expiry: expires,
        }),
    );
    while let Some(cmd) = e.poll() {
        if let Command::Sale(slot, SaleCommand::ReadSlot(_)) = cmd {
            e.handle(
                ChainTime(now),
                EngineInput::Reply(
                    slot,
                    Input::Slot(Ok(SlotView {
                        request: Some(req.clone()),
                        request_state: Some(RequestState::New),
                        slot_state: SlotState::Free,
                        expires_at: expires,
                        ends_at: now + 86_400,
                        host: codex::market::Address::ZERO,
                        current_collateral: U256::ZERO,
                    })),
                ),
            );
        }
    }
    (e, id, expires)
}

#[test]
fn item_79_cancellation_acts_only_on_a_cancelled_chain_state() {
    use codex::sales::engine::Command;
    let (mut e, id, expires) = engine_with_waiting_sales(3);
    assert_eq!(e.sales_len(), 3);
    assert_eq!(
        e.next_deadline(),
        Some(ChainTime(expires + 1)),
        "the queue is empty; the watch fires at +1"
    );
    e.handle(ChainTime(expires + 1), EngineInput::Time);
    assert_eq!(e.poll(), Some(Command::ReadRequestState(id)));
    // New (the chain lags): nothing happens; asked again at the next block.
    e.handle(
        ChainTime(expires + 1),
        EngineInput::RequestState(id, Ok(Some(RequestState::New))),
    );
    assert_eq!(e.sales_len(), 3);
    e.handle(ChainTime(expires + 2), EngineInput::Time);
    assert_eq!(e.poll(), Some(Command::ReadRequestState(id)));
    // Cancelled: every sale of the request ends, returning what it held.
    e.handle(
        ChainTime(expires + 2),
        EngineInput::RequestState(id, Ok(Some(RequestState::Cancelled))),
    );
    assert_eq!(e.sales_len(), 0);
    assert_eq!(e.stats().ended_in(FinalState::Cancelled), 3);
    assert!(e.ledger().reservations().unwrap().is_empty());
    // Started / Finished end the watch without touching the sales.
    for st in [RequestState::Started, RequestState::Finished] {
        let (mut e, id, expires) = engine_with_waiting_sales(3);
        e.handle(ChainTime(expires + 1), EngineInput::Time);
        assert_eq!(e.poll(), Some(Command::ReadRequestState(id)));
        e.handle(
            ChainTime(expires + 1),
            EngineInput::RequestState(id, Ok(Some(st))),
        );
        assert_eq!(e.sales_len(), 3);
        e.handle(ChainTime(expires + 100), EngineInput::Time);
        assert_eq!(e.poll(), None, "watch ended");
    }
}

#[test]
fn item_80_fulfilled_ends_the_expiry_watch() {
    let (mut e, id, expires) = engine_with_waiting_sales(3);
    e.handle(
        ChainTime(expires - 10),
        EngineInput::Event(MarketEvent::RequestFulfilled { request_id: id }),
    );
    e.handle(ChainTime(expires + 100), EngineInput::Time);
    assert_eq!(e.poll(), None);
    assert_eq!(e.sales_len(), 3);
}

/// A request's expiry watch serves only its live sales: when the last one ends (here every
/// slot is ignored because `canReserveSlot` says no), the watch ends with it and no chain read
/// is made at the expiry, so watches do not pile up over the requests a host passes on.
#[test]
fn the_expiry_watch_ends_with_the_requests_last_sale() {
    use codex::sales::engine::{Command, SaleCommand};
    use codex::sales::sale::Input;
    let (mut e, _, expires) = engine_with_waiting_sales(3);
    assert_eq!(e.sales_len(), 3);
    assert_eq!(
        e.next_deadline(),
        Some(ChainTime(expires + 1)),
        "watched while sales live"
    );
    let slots: Vec<_> = e.sales_snapshot().iter().map(|s| s.slot).collect();
    let now = expires - 300;
    for slot in slots {
        let ticket = e.ticket(slot).expect("the sale waits for canReserveSlot");
        e.handle(
            ChainTime(now),
            EngineInput::Reply(ticket, Input::CanReserve(Ok(false))),
        );
        // The next slot of the request may take the freed worker: decline it too.
        while let Some(cmd) = e.poll() {
            if let Command::Sale(s, SaleCommand::CanReserve(_)) = cmd {
                e.handle(
                    ChainTime(now),
                    EngineInput::Reply(s, Input::CanReserve(Ok(false))),
                );
            }
        }
    }
    assert_eq!(e.sales_len(), 0);
    assert_eq!(e.next_deadline(), None, "no watch and nothing queued");
    e.handle(ChainTime(expires + 1), EngineInput::Time);
    assert_eq!(
        e.poll(),
        None,
        "no requestState read for a request without sales"
    );
}

/// Difference 17: one expiry watch per request, not one polling timer per sale.
#[test]
fn defect_8_17_one_expiry_watch_per_request() {
    use codex::sales::engine::Command;
    let (mut e, id, expires) = engine_with_waiting_sales(20);
    assert!(e.sales_len() >= 3);
    e.handle(ChainTime(expires + 1), EngineInput::Time);
    let mut reads = 0;
    while let Some(c) = e.poll() {
        if c == Command::ReadRequestState(id) {
            reads += 1;
        }
    }
    assert_eq!(reads, 1);
}

/// Difference 8 (second part): events for a slot index above 65,535 are not dropped. A freed slot
/// 70,000 of a 70,001-slot request is taken (SlotFreed reaches the queue), and while its sale
/// downloads, SlotFilled for index 70,000 reaches the sale: it checks the host, finds another
/// one, and ends, giving back bytes and collateral. The reference drops both events
/// (`slotIndex > 65535`), so its sale would keep downloading a slot someone else holds.
#[test]
fn defect_8_8_slot_filled_above_index_65535_reaches_the_sale() {
    use codex::market::Address;
    use codex::sales::engine::{Command, FreedSlotInfo, SaleCommand};
    use codex::sales::ledger::AvailabilityId;
    use codex::sales::sale::{Input, SlotView};
    use std::sync::Arc;
    const INDEX: u64 = 70_000;
    let now = 1_000_000;
    let mut e = started_engine_with_one_availability(now);
    let ask = Ask {
        slots: INDEX + 1,
        ..small_ask()
    };
    let req = Arc::new(sim::World::make_request(account(9), ask.clone(), 600, 1));
    let id = req.id();
    let ends_at = now + 86_400;
    let other = account(5);
    // The chain as the node reads it; `host` changes when the other host fills the slot.
    let view = |state: SlotState, host: Address| SlotView {
        request: Some(req.clone()),
        request_state: Some(RequestState::Started),
        slot_state: state,
        expires_at: now - 100,
        ends_at,
        host,
        current_collateral: U256::ZERO,
    };
    let answer = |e: &mut Engine<MemLedger>, state: SlotState, host: Address| {
        let mut downloads = 0;
        while let Some(cmd) = e.poll() {
            match cmd {
                Command::LookupFreedSlot {
                    request_id,
                    slot_index,
                } => {
                    e.handle(
                        ChainTime(now),
                        EngineInput::FreedSlot {
                            request_id,
                            slot_index,
                            info: Ok(Some(FreedSlotInfo {
                                ask: ask.clone(),
                                request_state: RequestState::Started,
                                expires_at: now - 100,
                                ends_at,
                            })),
                        },
                    );
                }
                Command::Sale(slot, SaleCommand::ReadSlot(_)) => {
                    e.handle(
                        ChainTime(now),
                        EngineInput::Reply(slot, Input::Slot(Ok(view(state, host)))),
                    );
                }
                Command::Sale(slot, SaleCommand::CanReserve(_)) => {
                    e.handle(
                        ChainTime(now),
                        EngineInput::Reply(slot, Input::CanReserve(Ok(true))),
                    );
                }
                Command::Sale(slot, SaleCommand::Send(_)) => {
                    e.handle(ChainTime(now), EngineInput::Reply(slot, Input::Tx(Ok(()))));
                }
                // The download never finishes in this test.
                Command::Sale(_, SaleCommand::Download { .. }) => downloads += 1,
                _ => {}
            }
        }
        downloads
    };
    e.handle(
        ChainTime(now),
        EngineInput::Event(MarketEvent::SlotFreed {
            request_id: id,
            slot_index: INDEX,
        }),
    );
    assert_eq!(answer(&mut e, SlotState::Repair, Address::ZERO), 1);
    let slot = SlotRef::new(id, INDEX);
    assert_eq!(
        e.sale(slot).map(|s| s.state_name()),
        Some("SaleDownloading"),
        "the freed slot above 65,535 is taken"
    );
    let reserved = e.ledger().availability(AvailabilityId([1; 32])).unwrap();
    assert_eq!(reserved.free_size, (1 << 20) - 1024);
    // Another host fills slot 70,000.
    e.handle(
        ChainTime(now + 1),
        EngineInput::Event(MarketEvent::SlotFilled {
            request_id: id,
            slot_index: INDEX,
        }),
    );
    answer(&mut e, SlotState::Filled, other);
    assert!(
        e.sale(slot).is_none(),
        "the sale learned of SlotFilled and ended: {:?}",
        e.sales_snapshot()
    );
    let a = e.ledger().availability(AvailabilityId([1; 32])).unwrap();
    assert_eq!(a.free_size, 1 << 20, "bytes back");
    assert_eq!(
        a.total_remaining_collateral,
        U256::from(1u64 << 30),
        "collateral back"
    );
    assert!(e.ledger().reservations().unwrap().is_empty());
}

/// A late answer is not taken for a newer one: the `fillSlot` receipt that arrives after a
/// cancellation moved the sale on to `freeSlot` is dropped (its ticket is no longer the one
/// the sale waits for), so the sale ends only when the `freeSlot` answer comes.
#[test]
fn a_late_fill_receipt_is_not_taken_for_the_free_slot_answer() {
    use codex::market::{Address, Groth16Proof};
    use codex::sales::engine::{Command, SaleCommand, Ticket};
    use codex::sales::sale::{Input, ProofView, SlotView, Tx};
    use std::sync::Arc;
    let now = 1_000_000;
    let me = account(1);
    let mut cfg = EngineConfig::default();
    cfg.sale.signer = me;
    let mut e = started_engine_for(now, cfg);
    let ask = Ask {
        slots: 1,
        ..small_ask()
    };
    let req = Arc::new(sim::World::make_request(account(9), ask.clone(), 600, 1));
    let id = req.id();
    let view = |state: SlotState, rs: RequestState| SlotView {
        request: Some(req.clone()),
        request_state: Some(rs),
        slot_state: state,
        expires_at: now + 600,
        ends_at: now + 86_400,
        host: if state == SlotState::Free {
            Address::repeat_byte(0)
        } else {
            me
        },
        current_collateral: U256::from(1024u64),
    };
    e.handle(
        ChainTime(now),
        EngineInput::Event(MarketEvent::StorageRequested {
            request_id: id,
            ask,
            expiry: now + 600,
        }),
    );
    // Answer everything up to the fillSlot transaction, which stays in flight.
    let mut t = now;
    let fill: Ticket = loop {
        let Some(cmd) = e.poll() else {
            let at = e.next_deadline().expect("the sale waits for a period");
            t = at.secs();
            e.handle(ChainTime(t), EngineInput::Time);
            continue;
        };
        let Command::Sale(ticket, out) = cmd else {
            continue;
        };
        let input = match out {
            SaleCommand::ReadSlot(_) => Input::Slot(Ok(view(SlotState::Free, RequestState::New))),
            SaleCommand::CanReserve(_) => Input::CanReserve(Ok(true)),
            SaleCommand::Send(Tx::ReserveSlot { .. }) => Input::Tx(Ok(())),
            SaleCommand::Send(Tx::FillSlot { .. }) => break ticket,
            SaleCommand::Download { .. } => Input::Downloaded(Ok(())),
            SaleCommand::ReadProof(_) => Input::Proof(Ok(ProofView {
                slot_state: SlotState::Free,
                pointer: 10,
                required: false,
                will_be_required: false,
                challenge: codex::market::B256::repeat_byte(3),
            })),
            SaleCommand::Prove { .. } => {
                Input::Proved(Ok(Box::new(Groth16Proof([U256::from(1u8); 8]))))
            }
            other => panic!("unexpected {other:?}"),
        };
        assert!(e.handle(ChainTime(t), EngineInput::Reply(ticket, input)));
    };
    // The request is cancelled while fillSlot is in flight; the fill landed, so the sale
    // frees the slot to collect what it is owed.
    e.handle(
        ChainTime(t),
        EngineInput::Event(MarketEvent::RequestCancelled { request_id: id }),
    );
    let mut free = None;
    while let Some(cmd) = e.poll() {
        match cmd {
            Command::Sale(ticket, SaleCommand::ReadSlot(_)) => {
                e.handle(
                    ChainTime(t),
                    EngineInput::Reply(
                        ticket,
                        Input::Slot(Ok(view(SlotState::Cancelled, RequestState::Cancelled))),
                    ),
                );
            }
            Command::Sale(ticket, SaleCommand::Send(Tx::FreeSlot { .. })) => free = Some(ticket),
            _ => {}
        }
    }
    let free = free.expect("freeSlot sent");
    let slot = SlotRef::new(id, 0);
    assert_eq!(e.ticket(slot), Some(free));
    // The fillSlot receipt arrives late: dropped.
    let taken = e.handle(ChainTime(t), EngineInput::Reply(fill, Input::Tx(Ok(()))));
    assert!(
        e.sale(slot).is_some(),
        "the sale still waits for freeSlot: {:?}",
        e.sales_snapshot()
    );
    assert!(!taken, "the stale answer was dropped");
    assert_eq!(e.ledger().reservations().unwrap().len(), 1);
    // The freeSlot answer ends it.
    assert!(e.handle(ChainTime(t), EngineInput::Reply(free, Input::Tx(Ok(())))));
    assert!(e.sale(slot).is_none());
    assert!(e.ledger().reservations().unwrap().is_empty());
}
