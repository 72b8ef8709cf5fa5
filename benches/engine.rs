//! Engine benchmarks: `StorageRequested` events handled per second, with matching against
//! 1,000 availabilities and 10 slots per request (each event's slots are prepared: the view
//! read is answered at once, the ledger matches and reserves, `canReserveSlot` answers false
//! so the reservation ends again), and the memory of a proving sale.
//! Run: `cargo bench --bench engine`.

// The allocator the node links (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex::market::{
    Address, Ask, Content, MarketEvent, Request, RequestId, RequestState, SlotState, B256, U256,
};
use codex::sales::engine::{Command, Engine, EngineConfig, EngineInput, SaleCommand};
use codex::sales::ledger::{AvailabilityId, Ledger, Limits, MemLedger, NewAvailability};
use codex::sales::sale::{Input, Sale, SlotView};
use codex::sales::ChainTime;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const NOW: u64 = 1_750_000_000;

fn engine() -> Engine<MemLedger> {
    let mut ledger = MemLedger::new();
    let mut rng = fastrand::Rng::with_seed(1);
    // ENGINE_BENCH_AVAILABILITIES changes the count, to separate the engine's own cost from
    // the ledger's matching scan.
    let count: u32 = std::env::var("ENGINE_BENCH_AVAILABILITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 0..count {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        ledger
            .create_availability(
                AvailabilityId(id),
                NewAvailability {
                    total_size: 1 << 30,
                    duration: rng.u64(86_400..30 * 86_400),
                    min_price_per_byte_per_second: U256::from(rng.u64(1..100)),
                    total_collateral: U256::from(1u64 << 40),
                    enabled: true,
                    until: 0,
                },
                Limits {
                    quota: u64::MAX,
                    now: NOW,
                },
            )
            .expect("valid availability");
    }
    let (e, _) = Engine::start(
        EngineConfig::default(),
        ledger,
        fastrand::Rng::with_seed(2),
        &[],
        ChainTime(NOW),
    )
    .expect("valid config");
    e
}

fn request(n: u64, rng: &mut fastrand::Rng) -> Arc<Request> {
    Arc::new(Request {
        client: Address::repeat_byte(1),
        ask: Ask {
            proof_probability: U256::from(5u8),
            price_per_byte_per_second: U256::from(rng.u64(1..150)),
            collateral_per_byte: U256::from(1u8),
            slots: 10,
            slot_size: 1 << 20,
            duration: rng.u64(3600..40 * 86_400),
            max_slot_loss: 2,
        },
        content: Content {
            cid: b"bafy-bench".to_vec(),
            merkle_root: B256::repeat_byte(2),
        },
        expiry: 3600,
        nonce: B256::from(U256::from(n)),
    })
}

/// Handles one event and answers every command at once.
fn handle(e: &mut Engine<MemLedger>, id: RequestId, req: &Arc<Request>) {
    e.handle(
        ChainTime(NOW),
        EngineInput::Event(MarketEvent::StorageRequested {
            request_id: id,
            ask: req.ask.clone(),
            expiry: NOW + 3600,
        }),
    );
    while let Some(cmd) = e.poll() {
        if let Command::Sale(slot, out) = cmd {
            let input = match out {
                SaleCommand::ReadSlot(_) => Input::Slot(Ok(SlotView {
                    request: Some(req.clone()),
                    request_state: Some(RequestState::New),
                    slot_state: SlotState::Free,
                    expires_at: NOW + 3600,
                    ends_at: NOW + req.ask.duration,
                    host: Address::ZERO,
                    current_collateral: U256::ZERO,
                })),
                SaleCommand::CanReserve(_) => Input::CanReserve(Ok(false)),
                _ => continue,
            };
            // Answers for requests other than the current one never happen here: every
            // command is answered before the next event.
            e.handle(ChainTime(NOW), EngineInput::Reply(slot, input));
        }
    }
}

fn bench_engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let mut e = engine();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut n = 0u64;
    g.bench_function("storage_requested_1000_availabilities_10_slots", |b| {
        b.iter_custom(|iters| {
            let reqs: Vec<(RequestId, Arc<Request>)> = (0..iters)
                .map(|_| {
                    n += 1;
                    let r = request(n, &mut rng);
                    (r.id(), r)
                })
                .collect();
            let t = Instant::now();
            for (id, r) in &reqs {
                handle(&mut e, *id, r);
            }
            t.elapsed()
        })
    });
    // Under load the three workers wait on chain reads, so an event is expanded, shuffled
    // and queued (capacity 128, evicting) without matching: the event-loop cost.
    let mut busy = engine();
    let mut first = true;
    g.bench_function("storage_requested_workers_busy", |b| {
        b.iter_custom(|iters| {
            let reqs: Vec<(RequestId, Arc<Request>)> = (0..iters)
                .map(|_| {
                    n += 1;
                    let r = request(n, &mut rng);
                    (r.id(), r)
                })
                .collect();
            let t = Instant::now();
            for (id, r) in &reqs {
                busy.handle(
                    ChainTime(NOW),
                    EngineInput::Event(MarketEvent::StorageRequested {
                        request_id: *id,
                        ask: r.ask.clone(),
                        expiry: NOW + 3600,
                    }),
                );
            }
            let d = t.elapsed();
            // The first event's three ReadSlot commands are never answered.
            if first {
                first = false;
                while busy.poll().is_some() {}
            }
            d
        })
    });
    g.finish();

    // A plain timed run for the closing figure.
    let mut e = engine();
    let reqs: Vec<(RequestId, Arc<Request>)> = (0..20_000u64)
        .map(|i| {
            let r = request(1 << 40 | i, &mut rng);
            (r.id(), r)
        })
        .collect();
    let t = Instant::now();
    for (id, r) in &reqs {
        handle(&mut e, *id, r);
    }
    let d = t.elapsed();
    println!(
        "engine: {:.0} StorageRequested events/s (20,000 events, 10 slots each, {} availabilities; {} slots prepared and matched)",
        reqs.len() as f64 / d.as_secs_f64(),
        e.ledger().availabilities().map(|a| a.len()).unwrap_or(0),
        black_box(e.stats().ended.iter().sum::<u64>())
    );
    println!(
        "engine memory: {} bytes per proving sale (size_of Sale = {}), plus the shared request",
        Engine::<MemLedger>::approx_bytes_per_sale(),
        std::mem::size_of::<Sale>()
    );
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
