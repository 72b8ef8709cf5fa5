//! The store across processes: two processes reserving against one availability at once,
//! and a process killed with SIGKILL right after its commits.
//!
//! The test binary re-executes itself as the child process: with `CHILD_ENV` set, the same
//! test function plays the child's part instead of the parent's.
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use codex::market::{RequestId, U256};
use codex::sales::ledger::{
    AvailabilityId, Ledger, LedgerError, Limits, NewAvailability, ReservationId, SlotAsk,
};
use codex::store::{Options, Store};

const CHILD_ENV: &str = "CODEX_TEST_STORE_CHILD";
const LIMITS: Limits = Limits {
    quota: u64::MAX,
    now: 0,
};
const AV: AvailabilityId = AvailabilityId([7; 32]);

/// Kills the child when dropped (also when the test panics).
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs this file's test `test` again in a child process of this test binary, with
/// `CHILD_ENV` set to `arg`.
fn spawn_self(test: &str, arg: &str) -> Guard {
    // The harness names a test by its path within the binary: `store_processes::…`.
    let name = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{test}"),
        None => test.to_string(),
    };
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["--exact", &name])
        .args(["--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Guard(child)
}

fn new_availability(size: u64) -> NewAvailability {
    NewAvailability {
        total_size: size,
        duration: 1_000,
        min_price_per_byte_per_second: U256::from(1),
        total_collateral: U256::from(size * 3),
        enabled: true,
        until: 0,
    }
}

fn slot(n: u64) -> SlotAsk {
    SlotAsk {
        request_id: RequestId::from([1; 32]),
        slot_index: n,
        slot_size: 1,
        duration: 10,
        price_per_byte_per_second: U256::from(1),
        collateral_per_byte: U256::from(2),
        valid_until: 0,
    }
}

/// Each reports "RESULT <created> <refused>" on stdout.
fn reserve_child(dir: &str) {
    let mut store = Store::open(std::path::Path::new(dir), Options::cli()).unwrap();
    let mut rng = fastrand::Rng::new();
    let (mut created, mut refused) = (0u64, 0u64);
    for n in 0..1_000 {
        match store.create_reservation(ReservationId::random(&mut rng), AV, &slot(n)) {
            Ok(_) => created += 1,
            Err(LedgerError::BytesOutOfBounds { .. }) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    println!("RESULT {created} {refused}");
}

const TOTAL: u64 = 1_500;

#[test]
fn two_processes_reserve_against_one_availability() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return reserve_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), Options::cli()).unwrap();
        store
            .create_availability(AV, new_availability(TOTAL), LIMITS)
            .unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let name = "two_processes_reserve_against_one_availability";
    let mut children = [spawn_self(name, d), spawn_self(name, d)];
    let (mut created, mut refused) = (0, 0);
    for c in &mut children {
        let mut out = String::new();
        c.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .expect("child reported no result");
        let v: Vec<u64> = line[7..].split(' ').map(|x| x.parse().unwrap()).collect();
        created += v[0];
        refused += v[1];
        assert!(c.0.wait().unwrap().success(), "child failed");
    }
    assert_eq!(created, TOTAL, "every free byte reserved, no more");
    assert_eq!(refused, 2_000 - TOTAL);
    let mut store = Store::open(dir.path(), Options::cli()).unwrap();
    store.check_invariant(None).unwrap();
    let a = store.availability(AV).unwrap();
    assert_eq!(a.free_size, 0);
    assert_eq!(
        a.total_remaining_collateral,
        U256::from(TOTAL * 3 - TOTAL * 2)
    );
    assert_eq!(store.reservations().unwrap().len() as u64, TOTAL);
}

/// Adds availabilities forever, printing each id once its commit returned.
fn commit_forever(dir: &str) {
    use std::io::Write;
    let mut store = Store::open(std::path::Path::new(dir), Options::cli()).unwrap();
    let mut rng = fastrand::Rng::new();
    let mut out = std::io::stdout();
    loop {
        let id = AvailabilityId::random(&mut rng);
        store
            .create_availability(id, new_availability(10), LIMITS)
            .unwrap();
        writeln!(out, "{id}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_loses_no_committed_write() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return commit_forever(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut child = spawn_self("sigkill_loses_no_committed_write", d);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut ids = Vec::new();
    let mut line = String::new();
    while ids.len() < 50 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        if let Some(hex) = line.trim().strip_prefix("0x") {
            ids.push(hex.to_string());
        }
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let mut store = Store::open(dir.path(), Options::cli()).unwrap();
    let stored: Vec<String> = store
        .availabilities()
        .unwrap()
        .iter()
        .map(|a| a.id.to_string()[2..].to_string())
        .collect();
    for id in &ids {
        assert!(stored.contains(id), "committed availability 0x{id} lost");
    }
    store.check_invariant(None).unwrap();
}
