//! Benchmark (a) of issue 3: decoding and dispatch of recorded `StorageRequested` log
//! notifications (raw WebSocket text frames, `fixtures/frames/storage-requested-1000.txt`,
//! generated in anvil's exact layout by `tests/chain/market_frames.rs`). Target: at least 100,000
//! events per second on one core.
//!
//! `cargo bench --bench decode`

use std::hint::black_box;

use codex::market::events::{decode_log, parse_log_notification, DecodedEvent};
use codex::market::{MarketEvent, RequestId};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const FRAMES: &str = include_str!("../fixtures/frames/storage-requested-1000.txt");

/// What a host does with a new request: one queue entry per slot, here just counted, plus the
/// request id and position to deduplicate.
#[derive(Default)]
struct Dispatch {
    requests: Vec<(RequestId, u64, u64)>,
    slots: u64,
    other: u64,
    errors: u64,
}

impl Dispatch {
    fn on(&mut self, d: DecodedEvent) {
        match d.event {
            MarketEvent::StorageRequested {
                request_id, ask, ..
            } => {
                self.slots += ask.slots;
                self.requests
                    .push((request_id, d.position.block_number, d.position.log_index));
            }
            _ => self.other += 1,
        }
    }
}

fn decode_and_dispatch(frames: &[&str], out: &mut Dispatch) {
    for f in frames {
        match parse_log_notification(f).and_then(|n| decode_log(&n.log)) {
            Ok(d) => out.on(d),
            Err(_) => out.errors += 1,
        }
    }
}

fn bench(c: &mut Criterion) {
    let frames: Vec<&str> = FRAMES.lines().collect();
    assert_eq!(frames.len(), 1000);
    let mut g = c.benchmark_group("storage_requested_frames");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("decode_and_dispatch_1000", |b| {
        let mut d = Dispatch::default();
        b.iter(|| {
            d.requests.clear();
            decode_and_dispatch(black_box(&frames), &mut d);
            black_box(d.requests.len())
        });
        assert_eq!(d.errors, 0);
    });
    g.bench_function("json_parse_only_1000", |b| {
        b.iter(|| {
            for f in black_box(&frames) {
                black_box(parse_log_notification(f).ok());
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
