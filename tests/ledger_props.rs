//! Property tests of the ledger: random operation sequences keep the accounting invariant,
//! run by one generic function against the in-memory ledger and the SQLite store, and both
//! implementations give the same answer to every operation.
use codex::market::{RequestId, U256};
use codex::sales::ledger::{
    check_invariant, AvailabilityId, AvailabilityUpdate, Ledger, LedgerError, Limits, MemLedger,
    NewAvailability, ReservationId, SlotAsk,
};
use codex::store::{Options, Store};
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    quota: 10_000,
    now: 1_000,
};

#[derive(Debug, Clone)]
enum Op {
    Add {
        size: u64,
        collateral: u64,
        enabled: bool,
        until: u64,
    },
    Update {
        which: usize,
        size: Option<u64>,
        collateral: Option<u64>,
        enabled: Option<bool>,
        until: Option<u64>,
        price: Option<u64>,
    },
    Remove {
        which: usize,
    },
    Reserve {
        which: usize,
        size: u64,
        per_byte: u64,
        valid_until: u64,
    },
    ReserveMatching {
        size: u64,
        per_byte: u64,
        price: u64,
    },
    Download {
        which: usize,
        bytes: u64,
    },
    End {
        which: usize,
        returned: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u64..4_000,
            0u64..5_000,
            any::<bool>(),
            prop_oneof![Just(0u64), 900u64..3_000]
        )
            .prop_map(|(size, collateral, enabled, until)| Op::Add {
                size,
                collateral,
                enabled,
                until
            }),
        (
            any::<usize>(),
            proptest::option::of(0u64..5_000),
            proptest::option::of(0u64..6_000),
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![Just(0u64), 900u64..3_000]),
            proptest::option::of(0u64..4),
        )
            .prop_map(
                |(which, size, collateral, enabled, until, price)| Op::Update {
                    which,
                    size,
                    collateral,
                    enabled,
                    until,
                    price
                }
            ),
        any::<usize>().prop_map(|which| Op::Remove { which }),
        (any::<usize>(), 0u64..1_500, 0u64..4, 1_000u64..2_500).prop_map(
            |(which, size, per_byte, valid_until)| Op::Reserve {
                which,
                size,
                per_byte,
                valid_until
            }
        ),
        (0u64..1_500, 0u64..4, 0u64..4).prop_map(|(size, per_byte, price)| Op::ReserveMatching {
            size,
            per_byte,
            price
        }),
        (any::<usize>(), 0u64..800).prop_map(|(which, bytes)| Op::Download { which, bytes }),
        (any::<usize>(), 0u64..3_000).prop_map(|(which, returned)| Op::End { which, returned }),
    ]
}

fn ask(n: u64, size: u64, per_byte: u64, price: u64, valid_until: u64) -> SlotAsk {
    let mut rid = [0u8; 32];
    rid[..8].copy_from_slice(&n.to_be_bytes());
    SlotAsk {
        request_id: RequestId::from(rid),
        slot_index: n,
        slot_size: size,
        duration: 100,
        price_per_byte_per_second: U256::from(price),
        collateral_per_byte: U256::from(per_byte),
        valid_until,
    }
}

fn id32(n: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[24..].copy_from_slice(&n.to_be_bytes());
    b
}

/// Applies `ops` to `ledger`, checking the invariant after every operation; returns each
/// operation's outcome in a comparable form.
fn run_ops<L: Ledger>(ledger: &mut L, ops: &[Op]) -> Vec<String> {
    let mut outcomes = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        let n = n as u64;
        let avs = ledger.availabilities().unwrap();
        let rs = ledger.reservations().unwrap();
        let pick_av = |w: usize| -> AvailabilityId {
            if avs.is_empty() {
                AvailabilityId(id32(u64::MAX))
            } else {
                avs[w % avs.len()].id
            }
        };
        let pick_r = |w: usize| -> ReservationId {
            if rs.is_empty() {
                ReservationId(id32(u64::MAX))
            } else {
                rs[w % rs.len()].id
            }
        };
        let out: Result<String, LedgerError> = match op.clone() {
            Op::Add {
                size,
                collateral,
                enabled,
                until,
            } => ledger
                .create_availability(
                    AvailabilityId(id32(n)),
                    NewAvailability {
                        total_size: size,
                        duration: 200,
                        min_price_per_byte_per_second: U256::from(1),
                        total_collateral: U256::from(collateral),
                        enabled,
                        until,
                    },
                    LIMITS,
                )
                .map(|a| format!("{a:?}")),
            Op::Update {
                which,
                size,
                collateral,
                enabled,
                until,
                price,
            } => ledger
                .update_availability(
                    pick_av(which),
                    AvailabilityUpdate {
                        total_size: size,
                        total_collateral: collateral.map(U256::from),
                        enabled,
                        until,
                        min_price_per_byte_per_second: price.map(U256::from),
                        duration: None,
                    },
                    LIMITS,
                )
                .map(|c| format!("{:?} grew={}", c.after, c.grew())),
            Op::Remove { which } => ledger
                .remove_availability(pick_av(which))
                .map(|a| format!("{a:?}")),
            Op::Reserve {
                which,
                size,
                per_byte,
                valid_until,
            } => ledger
                .create_reservation(
                    ReservationId(id32(n)),
                    pick_av(which),
                    &ask(n, size, per_byte, 2, valid_until),
                )
                .map(|r| format!("{r:?}")),
            Op::ReserveMatching {
                size,
                per_byte,
                price,
            } => ledger
                .reserve_matching(
                    ReservationId(id32(n)),
                    &ask(n, size, per_byte, price, 1_500),
                )
                .map(|r| format!("{r:?}")),
            Op::Download { which, bytes } => ledger
                .record_download(pick_r(which), bytes)
                .map(|r| format!("{r:?}")),
            Op::End { which, returned } => ledger
                .end_reservation(pick_r(which), U256::from(returned))
                .map(|e| format!("{e:?}")),
        };
        let avs = ledger.availabilities().unwrap();
        let rs = ledger.reservations().unwrap();
        if let Err(broken) = check_invariant(&avs, &rs, Some(LIMITS.quota)) {
            panic!("after op {n} {op:?} -> {out:?}: {broken}");
        }
        if let Err(LedgerError::Backend(e)) = &out {
            panic!("backend failure after op {n} {op:?}: {e}");
        }
        outcomes.push(match out {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        });
    }
    outcomes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn invariant_holds_in_memory(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(&mut MemLedger::new(), &ops);
    }
}

proptest! {
    // Each SQLite operation is a durable commit; fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn invariant_holds_in_sqlite_and_matches_memory(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Options::cli()).unwrap();
        let sqlite = run_ops(&mut store, &ops);
        let memory = run_ops(&mut MemLedger::new(), &ops);
        prop_assert_eq!(sqlite, memory);
        drop(store);
        // What was committed is what a fresh connection reads.
        let mut again = Store::open(dir.path(), Options::cli()).unwrap();
        again.check_invariant(Some(LIMITS.quota)).unwrap();
    }
}
