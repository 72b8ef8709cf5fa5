//! Wall time of `codex availability list --json` over 10,000 availabilities: the built
//! binary, start to exit, output read from a pipe. Target < 100 ms.
//!
//! Run: `cargo bench --bench cli_list`.
use std::process::Command;
use std::time::Duration;

use codex::market::U256;
use codex::sales::ledger::{AvailabilityId, Limits, NewAvailability};
use codex::store::{Options, Store};
use criterion::{criterion_group, criterion_main, Criterion};

fn list_json(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), Options::cli()).unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        let items = (0..10_000)
            .map(|_| {
                (
                    AvailabilityId::random(&mut rng),
                    NewAvailability {
                        total_size: rng.u64(1..1 << 40),
                        duration: rng.u64(1..1 << 24),
                        min_price_per_byte_per_second: U256::from(rng.u64(1..)),
                        total_collateral: U256::from(rng.u128(1..)),
                        enabled: rng.bool(),
                        until: 0,
                    },
                )
            })
            .collect();
        store
            .create_availabilities(
                items,
                Limits {
                    quota: u64::MAX,
                    now: 0,
                },
            )
            .unwrap();
    }
    let data_dir = dir.path().to_str().unwrap().to_string();
    let mut g = c.benchmark_group("cli");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("availability_list_json_10k", |b| {
        b.iter(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_codex"))
                .args(["--data-dir", &data_dir, "availability", "list", "--json"])
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 10_000);
        })
    });
    g.finish();
}

criterion_group!(benches, list_json);
criterion_main!(benches);
