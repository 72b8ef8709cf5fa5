//! Durable commit throughput: reservation create+end pairs per second with the store's
//! chosen durability (WAL, synchronous = FULL), and, in the same run and on the same disk,
//! the disk's fsync rate: the physical limit for durable commits. A pair is two commits,
//! so the ideal is 0.5 × the fsync rate; the target is ≥ 0.4 ×.
//!
//! Run: `cargo bench --bench store`. Set CODEX_BENCH_DIR to measure another disk than
//! the temp dir's.
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use codex::market::{RequestId, U256};
use codex::sales::ledger::{
    AvailabilityId, Ledger, Limits, NewAvailability, ReservationId, SlotAsk,
};
use codex::store::{Options, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("CODEX_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable");
    g.sample_size(20).measurement_time(Duration::from_secs(8));

    // The disk's limit: rewrite one 4 KiB page and fdatasync it.
    let dir = bench_dir();
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("fsync-probe"))
        .unwrap();
    let page = [0x5au8; 4096];
    g.throughput(Throughput::Elements(1));
    g.bench_function("fsync", |b| {
        b.iter(|| {
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(&page).unwrap();
            f.sync_data().unwrap();
        })
    });

    // create + end one reservation: two BEGIN IMMEDIATE transactions, two durable commits.
    let mut store = Store::open(dir.path(), Options::node()).unwrap();
    let av = AvailabilityId([1; 32]);
    store
        .create_availability(
            av,
            NewAvailability {
                total_size: 1 << 40,
                duration: 1 << 20,
                min_price_per_byte_per_second: U256::from(1),
                total_collateral: U256::from(1u64 << 60),
                enabled: true,
                until: 0,
            },
            Limits {
                quota: u64::MAX,
                now: 0,
            },
        )
        .unwrap();
    let ask = SlotAsk {
        request_id: RequestId::from([2; 32]),
        slot_index: 0,
        slot_size: 1 << 30,
        duration: 1_000,
        price_per_byte_per_second: U256::from(1),
        collateral_per_byte: U256::from(1),
        valid_until: 0,
    };
    let mut rng = fastrand::Rng::with_seed(7);
    g.bench_function("reservation_create_end_pair", |b| {
        b.iter(|| {
            let id = ReservationId::random(&mut rng);
            store.create_reservation(id, av, &ask).unwrap();
            store.end_reservation(id, U256::from(1u64 << 30)).unwrap();
        })
    });
    g.finish();
    store.check_invariant(None).unwrap();
}

criterion_group!(benches, durable);
criterion_main!(benches);
