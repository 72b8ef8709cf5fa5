//! Whole sales on the simulated Marketplace with the node's real ledger: the SQLite store in
//! a temporary data directory instead of the in-memory ledger, including restarts that open
//! the database file anew.

use crate::{sales_driver, sim};

use codex::market::{RequestState, U256};
use codex::sales::ledger::Ledger;
use codex::store::{Options, Store};
use sales_driver::{client, engine_config, post, Node, QUOTA};
use sim::{account, small_ask, Sim, SimConfig};

const EXPIRY: u64 = 600;

fn setup(dir: &std::path::Path) -> (Sim, Node<Store>) {
    let mut sim = Sim::new(SimConfig::default());
    let me = account(1);
    let cfg = engine_config(&sim, me);
    let store = Store::open(dir, Options::node()).expect("open the database");
    let node = Node::with_ledger(&mut sim, me, cfg, 7, store);
    (sim, node)
}

fn totals(l: &impl Ledger) -> (u64, U256) {
    l.availabilities()
        .unwrap()
        .iter()
        .fold((0, U256::ZERO), |(f, c), a| {
            (f + a.free_size, c + a.total_remaining_collateral)
        })
}

/// What a fresh process finds in the data directory: the accounting invariant holds and the
/// totals are as given.
fn on_disk(dir: &std::path::Path) -> (u64, U256, usize) {
    let mut store = Store::open(dir, Options::cli()).unwrap();
    store.check_invariant(Some(QUOTA)).unwrap();
    let (free, col) = totals(&store);
    (free, col, store.reservations().unwrap().len())
}

#[test]
fn sqlite_ledger_sells_hosts_restarts_and_gets_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, mut node) = setup(dir.path());
    node.add_availability(&sim, 1, 3 * 1024, 100_000, 1, 3 * 1024);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(sim.pending().my_slots(node.address).len(), 3);
    assert_eq!(sim.pending().request_state(id), Ok(RequestState::Started));
    // Bytes and collateral are held in the file, not only in the engine.
    assert_eq!(on_disk(dir.path()), (0, U256::ZERO, 3));

    // Restart: the new engine reads its reservations from the reopened file.
    let before = node.engine.ledger().reservations().unwrap();
    node.restart(&mut sim, 0);
    let snap = node.engine.sales_snapshot();
    assert_eq!(snap.len(), 3);
    let mut attached: Vec<_> = snap.iter().filter_map(|s| s.reservation).collect();
    attached.sort();
    let mut persisted: Vec<_> = before.iter().map(|r| r.id).collect();
    persisted.sort();
    assert_eq!(
        attached, persisted,
        "every reservation re-attached after the restart"
    );
    node.run_blocks(&mut sim, 40);
    assert!(node
        .engine
        .sales_snapshot()
        .iter()
        .all(|s| s.state == "SaleProving"));

    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end + 300);
    assert!(node.engine.sales_snapshot().is_empty());
    assert_eq!(node.ended().get("SaleFinished"), Some(&3));
    assert_eq!(node.released.len(), 3, "data released at the end");
    // Everything came back, in the engine's view and in the file.
    assert_eq!(
        totals(node.engine.ledger()),
        (3 * 1024, U256::from(3 * 1024u64))
    );
    assert_eq!(on_disk(dir.path()), (3 * 1024, U256::from(3 * 1024u64), 0));
}

#[test]
fn sqlite_ledger_restart_mid_download_ends_reservations_no_slot_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, mut node) = setup(dir.path());
    node.add_availability(&sim, 1, 3 * 1024, 100_000, 1, 3 * 1024);
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.download_blocks = 100;
    node.run_blocks(&mut sim, 3);
    let (_, _, held) = on_disk(dir.path());
    assert!(held > 0, "reservations committed during the download");
    // Restart mid-download: no slot is ours on chain, so restore ends every reservation.
    node.restart(&mut sim, 0);
    assert!(node.engine.ledger().reservations().unwrap().is_empty());
    assert_eq!(on_disk(dir.path()), (3 * 1024, U256::from(3 * 1024u64), 0));
    // The node sells again from the same file.
    let c = client(&mut sim);
    post(&mut sim, c, small_ask(), EXPIRY);
    node.download_blocks = 1;
    node.run_blocks(&mut sim, 40);
    assert_eq!(sim.pending().my_slots(node.address).len(), 3);
    assert_eq!(on_disk(dir.path()), (0, U256::ZERO, 3));
}

/// A reservation whose ending hits a busy database (another process holds the write lock)
/// is not lost: the engine keeps the write and tries it again from its timer table, so the
/// bytes and collateral come back once the lock is released, without a restart.
#[test]
fn an_ending_that_meets_a_busy_database_is_retried_until_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, mut node) = setup(dir.path());
    node.add_availability(&sim, 1, 3 * 1024, 100_000, 1, 3 * 1024);
    let c = client(&mut sim);
    let id = post(&mut sim, c, small_ask(), EXPIRY);
    node.run_blocks(&mut sim, 10);
    assert_eq!(sim.pending().my_slots(node.address).len(), 3);
    // Another process takes the write lock and keeps it while the request ends.
    let other = rusqlite::Connection::open(dir.path().join(codex::store::DB_FILE)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let end = sim.pending().request_end(id).unwrap();
    node.run_until(&mut sim, end + 300);
    assert!(node.engine.sales_snapshot().is_empty(), "the sales ended");
    assert!(node.engine.stats().ledger_errors >= 3);
    assert_eq!(
        node.engine.ledger().reservations().unwrap().len(),
        3,
        "the endings could not be written yet"
    );
    // The lock goes away: the next second's retry writes them.
    other.execute_batch("ROLLBACK").unwrap();
    node.run_blocks(&mut sim, 2);
    assert_eq!(
        on_disk(dir.path()),
        (3 * 1024, U256::from(3 * 1024u64), 0),
        "bytes and collateral back"
    );
}
