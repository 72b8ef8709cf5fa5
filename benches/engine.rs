//! Engine benchmarks: `StorageRequested` events handled per second, with matching against
//! 1,000 availabilities and 10 slots per request (each event's slots are prepared: the view
//! read is answered at once, the ledger matches and reserves, `canReserveSlot` answers false
//! so the reservation ends again), and the memory of a proving sale, measured.
//! Run: `cargo bench --bench engine`.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex::market::{
    Address, Ask, Content, MarketEvent, Request, RequestId, RequestState, SlotState, B256, U256,
};
use codex::sales::engine::{Command, Engine, EngineConfig, EngineInput, SaleCommand};
use codex::sales::ledger::{AvailabilityId, Ledger, Limits, MemLedger, NewAvailability};
use codex::sales::sale::{Input, ProofView, Sale, SaleConfig, SlotView};
use codex::sales::ChainTime;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The allocator the node links (src/main.rs), counting the bytes in use while
/// [`COUNTING`] is set (the memory figure; the timed runs leave it unset).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static IN_USE: AtomicIsize = AtomicIsize::new(0);

impl Counting {
    fn count(bytes: usize, sign: isize) {
        if COUNTING.load(Ordering::Relaxed) {
            IN_USE.fetch_add(sign * bytes as isize, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed on to mimalloc unchanged; the counting only reads sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size(), 1);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size(), 1);
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::count(layout.size(), -1);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(layout.size(), -1);
        Self::count(new_size, 1);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

/// Heap bytes the engine and its in-memory ledger hold per proving sale: `sales` requests of
/// one slot each (a host rarely holds two slots of one request) are driven until every
/// sale proves, every command answered at once; the bytes in use before the first event
/// and after the last step, divided by the sales. That includes the buffers the engine
/// keeps at the size of its largest batch (commands, inbox, the sales due at one time):
/// every proving sale wakes at the same period boundary. The requests themselves are
/// allocated before and not counted (the sales of one request share one).
fn bytes_per_proving_sale(sales: usize) -> f64 {
    let signer = Address::repeat_byte(7);
    let cfg = EngineConfig {
        queue_capacity: sales,
        max_workers: sales,
        sale: SaleConfig {
            signer,
            ..SaleConfig::default()
        },
    };
    let mut ledger = MemLedger::new();
    ledger
        .create_availability(
            AvailabilityId([1; 32]),
            NewAvailability {
                total_size: u64::MAX / 2,
                duration: 100 * 86_400,
                min_price_per_byte_per_second: U256::from(1u8),
                total_collateral: U256::MAX >> 1,
                enabled: true,
                until: 0,
            },
            Limits {
                quota: u64::MAX,
                now: NOW,
            },
        )
        .expect("valid availability");
    let mut rng = fastrand::Rng::with_seed(4);
    let reqs: HashMap<RequestId, Arc<Request>> = (0..sales as u64)
        .map(|n| {
            let mut r = (*request(n, &mut rng)).clone();
            r.ask.slots = 1;
            (r.id(), Arc::new(r))
        })
        .collect();
    let mut now = NOW;
    COUNTING.store(true, Ordering::Relaxed);
    let before = IN_USE.load(Ordering::Relaxed);
    let (mut e, _) = Engine::start(
        cfg,
        ledger,
        fastrand::Rng::with_seed(5),
        &[],
        ChainTime(now),
    )
    .expect("valid config");
    for (id, r) in &reqs {
        e.handle(
            ChainTime(now),
            EngineInput::Event(MarketEvent::StorageRequested {
                request_id: *id,
                ask: r.ask.clone(),
                expiry: now + 3600,
            }),
        );
    }
    while e.sales_snapshot().iter().any(|s| s.state != "SaleProving") {
        while let Some(cmd) = e.poll() {
            let Command::Sale(ticket, cmd) = cmd else {
                continue;
            };
            let input = match cmd {
                SaleCommand::ReadSlot(slot) => {
                    let r = &reqs[&slot.request_id];
                    Input::Slot(Ok(SlotView {
                        request: Some(r.clone()),
                        request_state: Some(RequestState::Started),
                        slot_state: SlotState::Free,
                        expires_at: NOW + 3600,
                        ends_at: NOW + r.ask.duration,
                        host: signer,
                        current_collateral: U256::ZERO,
                    }))
                }
                SaleCommand::CanReserve(_) => Input::CanReserve(Ok(true)),
                SaleCommand::Send(_) => Input::Tx(Ok(())),
                SaleCommand::Download { .. } => Input::Downloaded(Ok(())),
                SaleCommand::ReadProof(_) => Input::Proof(Ok(ProofView {
                    slot_state: SlotState::Filled,
                    pointer: 0,
                    required: false,
                    will_be_required: false,
                    challenge: B256::ZERO,
                })),
                SaleCommand::Prove { .. } => Input::Proved(Ok(Box::default())),
                SaleCommand::UpdateExpiry { .. } => Input::ExpiryUpdated(Ok(())),
                SaleCommand::Filled(_) => continue,
            };
            e.handle(ChainTime(now), EngineInput::Reply(ticket, input));
        }
        // The initial proofs wait for the next period.
        now = e.next_deadline().map_or(now + 1, |t| t.secs().max(now + 1));
        e.handle(ChainTime(now), EngineInput::Time);
    }
    while e.poll().is_some() {}
    assert_eq!(e.sales_len(), sales, "every sale proves");
    let bytes = IN_USE.load(Ordering::Relaxed) - before;
    COUNTING.store(false, Ordering::Relaxed);
    drop(black_box(e));
    bytes as f64 / sales as f64
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
        "engine memory: {:.0} bytes per proving sale, engine and in-memory ledger, measured over 10,000 sales of one slot each (size_of Sale = {}), plus the shared request",
        bytes_per_proving_sale(10_000),
        std::mem::size_of::<Sale>()
    );
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
