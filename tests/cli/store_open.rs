//! Opening the store: connection settings, migrations, refusal of foreign and newer
//! databases without touching them, the chain cursor, and id prefixes.
use codex::market::{B256, U256};
use codex::sales::ledger::{AvailabilityId, Ledger, Limits, NewAvailability};
use codex::store::{Options, Store, StoreError, DB_FILE, SCHEMA_VERSION};

fn new_av() -> NewAvailability {
    NewAvailability {
        total_size: 100,
        duration: 10,
        min_price_per_byte_per_second: U256::from(1),
        total_collateral: U256::from(1),
        enabled: true,
        until: 0,
    }
}
const LIM: Limits = Limits {
    quota: u64::MAX,
    now: 0,
};

#[test]
fn connection_settings_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("a/b"), Options::cli()).unwrap();
    let c = s.connection();
    let q = |sql: &str| -> String {
        c.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert_eq!(q("PRAGMA journal_mode"), "Text(\"wal\")");
    assert_eq!(q("PRAGMA synchronous"), "Integer(2)", "FULL");
    assert_eq!(q("PRAGMA foreign_keys"), "Integer(1)");
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(dir.path().join("a/b").join(DB_FILE).exists());
    // reopening migrates nothing and keeps the data
    drop(s);
    let mut s = Store::open(&dir.path().join("a/b"), Options::node()).unwrap();
    s.create_availability(AvailabilityId([1; 32]), new_av(), LIM)
        .unwrap();
    drop(s);
    let s = Store::open(&dir.path().join("a/b"), Options::node()).unwrap();
    assert_eq!(s.availabilities().unwrap().len(), 1);
    // the foreign key holds even for raw SQL
    let err = s
        .connection()
        .execute(
            "INSERT INTO reservations VALUES (zeroblob(32), randomblob(32), zeroblob(32), 0, 1, 0, zeroblob(32), 0)",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
}

#[test]
fn newer_and_foreign_databases_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), Options::cli()).unwrap());
    let path = dir.path().join(DB_FILE);
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    match Store::open(dir.path(), Options::cli()) {
        Err(StoreError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("expected NewerSchema, got {:?}", other.map(|_| ())),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);

    let other = tempfile::tempdir().unwrap();
    let path = other.path().join(DB_FILE);
    std::fs::write(&path, b"#!/bin/sh\necho definitely not sqlite\n".repeat(50)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(other.path(), Options::cli()).err().unwrap();
    assert!(matches!(e, StoreError::NotADatabase(_)), "{e}");
    assert!(!e.is_usage());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn chain_cursor_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::node()).unwrap();
    assert_eq!(s.cursor().unwrap(), None);
    s.set_cursor(41, B256::repeat_byte(0xaa)).unwrap();
    s.set_cursor(42, B256::repeat_byte(0xbb)).unwrap();
    drop(s);
    let s = Store::open(dir.path(), Options::node()).unwrap();
    assert_eq!(s.cursor().unwrap(), Some((42, B256::repeat_byte(0xbb))));
}

#[test]
fn id_prefixes_resolve_like_git() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), Options::cli()).unwrap();
    let mut a = [0u8; 32];
    a[..3].copy_from_slice(&[0xab, 0xcd, 0x01]);
    let mut b = a;
    b[2] = 0x02;
    for id in [a, b] {
        s.create_availability(AvailabilityId(id), new_av(), LIM)
            .unwrap();
    }
    assert_eq!(s.resolve_availability("abcd01").unwrap(), AvailabilityId(a));
    assert_eq!(
        s.resolve_availability("0xABCD02").unwrap(),
        AvailabilityId(b)
    );
    assert_eq!(
        s.resolve_availability(&AvailabilityId(a).to_string())
            .unwrap(),
        AvailabilityId(a)
    );
    match s.resolve_availability("abcd") {
        Err(StoreError::AmbiguousId { candidates, .. }) => assert_eq!(candidates.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.resolve_availability("abc"),
        Err(StoreError::BadId(_))
    ));
    assert!(matches!(
        s.resolve_availability("abcg"),
        Err(StoreError::BadId(_))
    ));
    assert!(matches!(
        s.resolve_availability("beef"),
        Err(StoreError::IdNotFound { .. })
    ));
    assert!(matches!(
        s.resolve_reservation("abcd"),
        Err(StoreError::IdNotFound { .. })
    ));
}
