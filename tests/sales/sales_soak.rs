//! Long randomized soak on the simulated Marketplace: thousands of requests over simulated
//! months, competing hosts, a validator, clients that withdraw, transient transaction and
//! read failures, and node restarts. After every block the ledger's accounting invariant
//! holds; no sale stays non-final once its request has ended (plus a grace for retries);
//! at the end every byte and every unit of collateral not lost on chain is back.
//!
//! `SOAK_DAYS` (default 120) sets the simulated span; the seed is fixed in the file.

use crate::{sales_driver, sim};

use codex::market::{Ask, MarketplaceConfig, RequestState, U256};
use codex::sales::engine::EngineInput;
use codex::sales::ledger::{AvailabilityUpdate, Ledger, Limits};
use codex::sales::ChainTime;
use sales_driver::{client, engine_config, post, Node};
use sim::{account, HostPolicy, ProofMode, ScriptedClient, ScriptedHost, Sim, SimConfig};

const SEED: u64 = 20_261_121;

fn soak_config() -> SimConfig {
    SimConfig {
        seed: SEED,
        market: MarketplaceConfig {
            period: 1800,
            timeout: 900,
            ..MarketplaceConfig::default()
        },
        proof_mode: ProofMode::AnyNonZero,
        block_time: 300,
        ..SimConfig::default()
    }
}

#[test]
fn soak_months_of_random_requests_events_and_restarts() {
    let days: u64 = std::env::var("SOAK_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(120);
    let mut sim = Sim::new(soak_config());
    sim.chain.set_keep_history(true);
    let me = account(1);
    let mut cfg = engine_config(&sim, me);
    cfg.queue_capacity = 64;
    cfg.sale.retry_cap = 1800;
    let mut node = Node::new(&mut sim, me, cfg, SEED);
    node.faults.tx = 0.05;
    node.faults.read = 0.03;
    for n in 0..3u8 {
        node.add_availability(&sim, n + 1, 40 * 1024, 10 * 86_400, 1, 40 * 1024 * 3);
    }
    sim.add_validator(account(2));
    for h in 0..3u64 {
        sim.add_host(ScriptedHost::new(
            account(10 + h),
            HostPolicy {
                take_probability: 0.5,
                reaction_blocks: (0, 2),
                proving: sim::Proving::MissProbability(0.2),
                max_slots: 40,
                ..HostPolicy::default()
            },
            SEED + h,
        ));
    }
    sim.add_client(ScriptedClient::new(account(901), Some(3600)));
    let c = client(&mut sim);
    let withdrawing = account(901);

    let start = sim.now();
    let stop_requests = start + days * 86_400;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut requests = Vec::new();
    let mut restarts = 0;
    let grace = 4 * 1800 + 2 * 1800;
    while sim.now() < stop_requests {
        // About one request per 20 minutes: thousands over three months.
        if rng.u8(0..4) == 0 {
            let slots = rng.u64(1..=5);
            let ask = Ask {
                proof_probability: U256::from(rng.u64(1..=4)),
                price_per_byte_per_second: U256::from(rng.u64(1..=3)),
                collateral_per_byte: U256::from(rng.u64(1..=2)),
                slots,
                slot_size: 1024 * rng.u64(1..=4),
                duration: rng.u64(86_400..=5 * 86_400),
                max_slot_loss: rng.u64(0..=slots),
            };
            let from = if rng.bool() { c } else { withdrawing };
            let id = post(&mut sim, from, ask, rng.u64(1800..=4 * 3600));
            requests.push(id);
        }
        node.step(&mut sim);
        if std::env::var("SOAK_DEBUG").is_ok() && sim.block_number().is_multiple_of(1000) {
            let q = node.engine.queue_snapshot();
            eprintln!(
                "day {} sales {} busy {} paused {:?} queued {} ended {:?} free {:?}",
                (sim.now() - start) / 86_400,
                node.engine.sales_len(),
                q.workers_busy,
                q.paused,
                q.items.len(),
                node.ended(),
                node.engine
                    .ledger()
                    .availabilities()
                    .unwrap()
                    .iter()
                    .map(|a| a.free_size)
                    .collect::<Vec<_>>()
            );
        }
        // Every ~5 days the operator tops up the collateral lost to slashing and failures
        // (otherwise the availabilities dry up and the node stops selling).
        if sim.block_number().is_multiple_of(1440) {
            let now = sim.now();
            for a in node.engine.ledger().availabilities().unwrap() {
                if a.collateral_lost.is_zero() {
                    continue;
                }
                let change = node
                    .engine
                    .ledger_mut()
                    .update_availability(
                        a.id,
                        AvailabilityUpdate {
                            total_collateral: Some(a.total_collateral + a.collateral_lost),
                            ..Default::default()
                        },
                        Limits {
                            quota: sales_driver::QUOTA,
                            now,
                        },
                    )
                    .unwrap();
                node.engine.handle(
                    ChainTime(now),
                    EngineInput::AvailabilityChanged {
                        grew: change.grew(),
                    },
                );
            }
        }
        if rng.u32(0..2000) == 0 {
            node.restart(&mut sim, 24);
            restarts += 1;
        }
        // No sale outlives its request by more than the grace.
        for s in node.engine.sales_snapshot() {
            let p = sim.pending();
            let end = p.request_end(s.slot.request_id).unwrap_or(0);
            let over = matches!(
                p.request_state(s.slot.request_id),
                Ok(RequestState::Finished | RequestState::Cancelled | RequestState::Failed)
            );
            assert!(
                !(over && sim.now() > end + grace),
                "sale of slot {} of {} still {} at {} (request ended {end})",
                s.slot.slot_index,
                s.slot.request_id,
                s.state,
                sim.now()
            );
        }
    }
    // Let every request run out.
    node.faults = Default::default();
    let last_end = requests
        .iter()
        .filter_map(|id| sim.pending().request_end(*id).ok())
        .max()
        .unwrap_or(start);
    node.run_until(&mut sim, last_end + grace + 3600);

    assert!(
        requests.len() as u64 > days * 50,
        "only {} requests",
        requests.len()
    );
    assert!(restarts > 0);
    assert!(
        node.engine.sales_snapshot().is_empty(),
        "{:?}",
        node.engine.sales_snapshot()
    );
    let l = node.engine.ledger();
    assert!(l.reservations().unwrap().is_empty());
    for a in l.availabilities().unwrap() {
        assert_eq!(a.free_size, a.total_size, "every byte is back");
        assert_eq!(
            a.total_remaining_collateral + a.collateral_lost,
            a.total_collateral
        );
        assert_eq!(
            a.total_remaining_collateral + a.collateral_lost,
            a.total_collateral
        );
    }
    let ended = node.ended();
    assert!(
        ended.get("SaleFinished").copied().unwrap_or(0) > 50,
        "{ended:?}"
    );
    eprintln!(
        "soak: {} requests, {restarts} restarts, {} proofs, ended {ended:?}, queue drops {}",
        requests.len(),
        node.proofs.len(),
        node.engine.stats().queue_dropped
    );
}
