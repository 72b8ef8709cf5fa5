//! Slot queue benchmarks: push (duplicate-checked), pop, delete-by-slot and
//! delete-by-request at 10^3..10^6 items, against a baseline queue that works as the
//! reference does (binary heap in a Vec, linear duplicate check, linear delete). Also the
//! p99 latency of a push at 10^6 items (per-op timings in a custom loop) and the memory per
//! queued item (the bytes the queue holds from the allocator). Run: `cargo bench --bench queue`.

use std::alloc::{GlobalAlloc, Layout};
use std::cmp::Ordering;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The allocator the node links (src/main.rs), counting the bytes held.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to mimalloc; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Relaxed);
        // SAFETY: as the caller promised for `alloc`.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Relaxed);
        // SAFETY: as the caller promised for `alloc_zeroed`.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Relaxed);
        // SAFETY: as the caller promised for `dealloc`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller promised for `realloc`.
        let moved = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            HELD.fetch_add(new_size, Relaxed);
            HELD.fetch_sub(layout.size(), Relaxed);
        }
        moved
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

use codex::market::{Ask, RequestId, U256};
use codex::sales::queue::{SlotQueue, SlotQueueItem, MAX_CAPACITY};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SLOTS_PER_REQUEST: u64 = 10;

fn item(rng: &mut fastrand::Rng, request: u64, slot: u64) -> SlotQueueItem {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&request.to_be_bytes());
    SlotQueueItem {
        request_id: RequestId(id.into()),
        slot_index: slot,
        slot_size: rng.u64(1..1 << 20),
        duration: rng.u64(1..1 << 20),
        price_per_byte_per_second: U256::from(rng.u64(1..1000)),
        collateral: U256::from(rng.u64(1..1 << 30)),
        expiry: rng.u64(1..1 << 40),
        seen: rng.u8(0..8) == 0,
    }
}

fn items(n: usize, seed: u64) -> Vec<SlotQueueItem> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n as u64)
        .map(|i| item(&mut rng, i / SLOTS_PER_REQUEST, i % SLOTS_PER_REQUEST))
        .collect()
}

fn ours(n: usize) -> SlotQueue {
    let mut q = SlotQueue::new(MAX_CAPACITY, 3).expect("valid");
    q.start();
    for it in items(n, 1) {
        q.push(it).expect("unique");
    }
    q
}

/// The reference's structure: a binary heap in a Vec; `contains`/`delete`/`find by request`
/// scan linearly; delete swaps in the last element and sifts it (correctly, both ways, so
/// that the baseline is not penalised for the reference's bug).
struct Baseline {
    heap: Vec<SlotQueueItem>,
}

impl Baseline {
    fn build(n: usize) -> Baseline {
        let mut b = Baseline { heap: Vec::new() };
        for it in items(n, 1) {
            b.heap.push(it);
            let i = b.heap.len() - 1;
            b.up(i);
        }
        b
    }
    fn less(&self, a: usize, b: usize) -> bool {
        self.heap[a].priority_cmp(&self.heap[b]) == Ordering::Less
    }
    fn up(&mut self, mut i: usize) {
        while i > 0 && self.less(i, (i - 1) / 2) {
            self.heap.swap(i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
    }
    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && self.less(l, m) {
                m = l;
            }
            if r < self.heap.len() && self.less(r, m) {
                m = r;
            }
            if m == i {
                return;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }
    fn push(&mut self, it: SlotQueueItem) -> bool {
        if self.heap.iter().any(|x| x.key() == it.key()) {
            return false;
        }
        self.heap.push(it);
        let i = self.heap.len() - 1;
        self.up(i);
        true
    }
    fn del(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        self.heap.swap(i, last);
        self.heap.pop();
        if i < self.heap.len() {
            self.up(i);
            self.down(i);
        }
    }
    fn pop(&mut self) -> Option<SlotQueueItem> {
        if self.heap.is_empty() {
            return None;
        }
        let top = self.heap[0].clone();
        self.del(0);
        Some(top)
    }
    fn delete(&mut self, r: RequestId, s: u64) {
        if let Some(i) = self.heap.iter().position(|x| x.key() == (r, s)) {
            self.del(i);
        }
    }
    fn delete_request(&mut self, r: RequestId) {
        while let Some(i) = self.heap.iter().position(|x| x.request_id == r) {
            self.del(i);
        }
    }
}

/// Runs `iters` operations in chunks of at most `chunk`, so that the queue stays near its
/// size; `f(k)` performs k timed operations and returns their time.
fn chunked(iters: u64, chunk: u64, mut f: impl FnMut(u64) -> Duration) -> Duration {
    let mut left = iters;
    let mut total = Duration::ZERO;
    while left > 0 {
        let k = left.min(chunk.max(1));
        total += f(k);
        left -= k;
    }
    total
}

fn fresh(rng: &mut fastrand::Rng, k: u64) -> Vec<SlotQueueItem> {
    let request = (1 << 40) + rng.u64(..1 << 40);
    (0..k).map(|s| item(rng, request, s)).collect()
}

fn bench_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &n in &[1_000usize, 10_000, 100_000, 1_000_000] {
        let mut q = ours(n);
        let mut rng = fastrand::Rng::with_seed(2);
        g.bench_with_input(BenchmarkId::new("ours/push", n), &n, |b, _| {
            b.iter_custom(|iters| {
                chunked(iters, n as u64 / 10, |k| {
                    let batch = fresh(&mut rng, k);
                    let t = Instant::now();
                    for it in batch.iter().cloned() {
                        black_box(q.push(it).is_ok());
                    }
                    let d = t.elapsed();
                    q.delete_request(batch[0].request_id);
                    d
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("ours/pop", n), &n, |b, _| {
            b.iter_custom(|iters| {
                chunked(iters, n as u64 / 10, |k| {
                    let mut popped = Vec::with_capacity(k as usize);
                    let t = Instant::now();
                    for _ in 0..k {
                        popped.push(q.pop());
                    }
                    let d = t.elapsed();
                    for it in popped.into_iter().flatten() {
                        let _ = q.push(it);
                    }
                    d
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("ours/delete_slot", n), &n, |b, _| {
            b.iter_custom(|iters| {
                chunked(iters, n as u64 / 10, |k| {
                    let batch = fresh(&mut rng, k);
                    for it in batch.iter().cloned() {
                        let _ = q.push(it);
                    }
                    let t = Instant::now();
                    for it in &batch {
                        black_box(q.delete(it.request_id, it.slot_index));
                    }
                    t.elapsed()
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("ours/delete_request", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = fresh(&mut rng, SLOTS_PER_REQUEST);
                    for it in batch.iter().cloned() {
                        let _ = q.push(it);
                    }
                    let t = Instant::now();
                    black_box(q.delete_request(batch[0].request_id));
                    total += t.elapsed();
                }
                total
            })
        });
        drop(q);
        if n > 100_000 {
            continue;
        }
        let mut b0 = Baseline::build(n);
        g.bench_with_input(BenchmarkId::new("baseline/push", n), &n, |b, _| {
            b.iter_custom(|iters| {
                chunked(iters, n as u64 / 10, |k| {
                    let batch = fresh(&mut rng, k);
                    let t = Instant::now();
                    for it in batch.iter().cloned() {
                        black_box(b0.push(it));
                    }
                    let d = t.elapsed();
                    b0.delete_request(batch[0].request_id);
                    d
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("baseline/pop", n), &n, |b, _| {
            b.iter_custom(|iters| {
                chunked(iters, n as u64 / 10, |k| {
                    let mut popped = Vec::with_capacity(k as usize);
                    let t = Instant::now();
                    for _ in 0..k {
                        popped.push(b0.pop());
                    }
                    let d = t.elapsed();
                    for it in popped.into_iter().flatten() {
                        b0.heap.push(it);
                        let i = b0.heap.len() - 1;
                        b0.up(i);
                    }
                    d
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("baseline/delete_slot", n), &n, |b, _| {
            b.iter_custom(|iters| {
                chunked(iters, n as u64 / 10, |k| {
                    let batch = fresh(&mut rng, k);
                    for it in batch.iter().cloned() {
                        b0.push(it);
                    }
                    let t = Instant::now();
                    for it in &batch {
                        b0.delete(it.request_id, it.slot_index);
                    }
                    t.elapsed()
                })
            })
        });
        g.bench_with_input(
            BenchmarkId::new("baseline/delete_request", n),
            &n,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = fresh(&mut rng, SLOTS_PER_REQUEST);
                        for it in batch.iter().cloned() {
                            b0.push(it);
                        }
                        let t = Instant::now();
                        b0.delete_request(batch[0].request_id);
                        total += t.elapsed();
                    }
                    total
                })
            },
        );
    }
    g.finish();
    p99_and_memory();
}

/// p99 of single pushes into a queue of 10^6 items, timed one by one; and bytes per item.
fn p99_and_memory() {
    let n = 1_000_000;
    let mut q = ours(n);
    let mut rng = fastrand::Rng::with_seed(3);
    let mut times = Vec::with_capacity(100_000);
    for i in 0..100_000u64 {
        let it = item(&mut rng, (1 << 50) + i, 0);
        let t = Instant::now();
        let r = q.push(it);
        times.push(t.elapsed());
        black_box(r.is_ok());
    }
    times.sort();
    let p = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
    println!(
        "queue push at 10^6 items: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?} (100,000 pushes)",
        p(0.5),
        p(0.99),
        p(0.999),
        times[times.len() - 1]
    );
    drop(q);
    let before = HELD.load(Relaxed);
    let q = ours(n);
    let held = HELD.load(Relaxed).saturating_sub(before);
    println!(
        "queue memory: {} bytes per queued item at 10^6 items (allocated and not freed)",
        held / q.len()
    );
    drop(q);
    // The node's case: a few large requests, every slot of one request on the same terms.
    let before = HELD.load(Relaxed);
    let mut q = SlotQueue::new(MAX_CAPACITY, 3).expect("valid");
    q.start();
    let mut rng = fastrand::Rng::with_seed(4);
    for r in 0..2u8 {
        let ask = Ask {
            slots: 50_000,
            slot_size: 1 << 20,
            duration: 86_400,
            proof_probability: U256::from(4u8),
            price_per_byte_per_second: U256::from(1_000u32),
            collateral_per_byte: U256::from(1u8),
            max_slot_loss: 100,
        };
        let collateral = ask.collateral_per_slot();
        for it in SlotQueueItem::expand(
            RequestId([r; 32].into()),
            &ask,
            1 << 40,
            collateral,
            &mut rng,
        )
        .expect("50,000 slots")
        {
            q.push(it).expect("unique");
        }
    }
    let held = HELD.load(Relaxed).saturating_sub(before);
    println!(
        "queue memory: {} bytes per queued item at 10^5 items in two requests of 50,000 slots",
        held / q.len()
    );
}

criterion_group!(benches, bench_queue);
criterion_main!(benches);
