//! Property tests of the ledger: random operation sequences keep the accounting invariant,
//! run by one generic function against the in-memory ledger and the SQLite store, and both
//! implementations give the same answer to every operation.
use codex::market::{RequestId, U256};
use codex::sales::ledger::{
    best_fit, check_invariant, collateral_per_byte_fits, max_collateral_per_byte, AvailabilityId,
    AvailabilityUpdate, Ledger, LedgerError, Limits, MemLedger, NewAvailability, ReservationId,
    SlotAsk,
};
use codex::store::{Options, Store};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

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

/// `cases` cases a test; failing inputs are saved to and replayed from
/// `ledger_props.proptest-regressions` beside this file. (proptest's default looks for a
/// `proptest-regressions/` directory beside the nearest directory with a `main.rs`: here
/// `tests/proptest-regressions/ledger_props.txt`, far from the tests it belongs to.)
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::with_cases(cases)
    }
}

proptest! {
    #![proptest_config(config(256))]
    #[test]
    fn invariant_holds_in_memory(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(&mut MemLedger::new(), &ops);
    }
}

proptest! {
    // Each SQLite operation is a durable commit; fewer cases keep the suite quick.
    #![proptest_config(config(48))]
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

/// One availability of the best-fit property test: (size, duration, min price, collateral,
/// enabled, until), with sizes often equal (ties by id) and durations and untils reaching
/// past 2^63 (stored as negative i64 in SQLite).
fn fit_availability() -> impl Strategy<Value = (u64, u64, u64, u64, bool, u64)> {
    (
        prop_oneof![1u64..8, Just(64u64), 1u64..2_000],
        prop_oneof![1u64..300, (1u64 << 63)..u64::MAX],
        1u64..6,
        prop_oneof![1u64..4_000, Just(u64::MAX)],
        prop::bool::weighted(0.8),
        prop_oneof![Just(0u64), 1_000u64..3_000, (1u64 << 63)..u64::MAX],
    )
}

/// An ask of the best-fit property test: (size, duration, price, collateral per byte,
/// valid until).
fn fit_ask() -> impl Strategy<Value = (u64, u64, u64, u64, u64)> {
    (
        prop_oneof![0u64..8, 0u64..2_500, (1u64 << 63)..u64::MAX],
        prop_oneof![1u64..300, (1u64 << 63)..u64::MAX],
        0u64..7,
        0u64..5,
        prop_oneof![1_000u64..3_500, (1u64 << 63)..u64::MAX],
    )
}

proptest! {
    #![proptest_config(config(64))]
    /// The SQLite store's indexed best fit picks what the linear best fit (MemLedger's)
    /// picks, also with a free size of 2^63 or more, and after
    /// reservations changed the free sizes.
    #[test]
    fn indexed_best_fit_equals_linear_best_fit(
        avs in proptest::collection::vec(fit_availability(), 0..24),
        huge in proptest::option::of((1u64 << 63)..(1u64 << 63) + (1 << 40)),
        asks in proptest::collection::vec(fit_ask(), 1..24),
    ) {
        let limits = Limits { quota: u64::MAX, now: 1_000 };
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Options::cli()).unwrap();
        let mut mem = MemLedger::new();
        let mut sizes: Vec<_> = avs.into_iter().enumerate().collect();
        if let Some(h) = huge {
            // At most one availability can exceed 2^63 bytes under any quota.
            sizes.push((sizes.len(), (h, 100, 1, u64::MAX, true, 0)));
        }
        for (i, (size, duration, price, collateral, enabled, until)) in sizes {
            // Ids in reverse creation order, so id order differs from insertion order.
            let id = AvailabilityId(id32(1_000 - i as u64));
            let new = NewAvailability {
                total_size: size,
                duration,
                min_price_per_byte_per_second: U256::from(price),
                total_collateral: U256::from(collateral),
                enabled,
                until,
            };
            let a = mem.create_availability(id, new.clone(), limits);
            let b = store.create_availability(id, new, limits);
            prop_assert_eq!(a, b);
        }
        for (n, (size, duration, price, per_byte, valid_until)) in asks.into_iter().enumerate() {
            let mut rid = [0u8; 32];
            rid[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let ask = SlotAsk {
                request_id: RequestId::from(rid),
                slot_index: n as u64,
                slot_size: size,
                duration,
                price_per_byte_per_second: U256::from(price),
                collateral_per_byte: U256::from(per_byte),
                valid_until,
            };
            let all = mem.availabilities().unwrap();
            let linear = best_fit(&all, &ask).map(|a| a.id);
            prop_assert_eq!(mem.find_best_fit(&ask).map(|a| a.id), linear);
            let id = ReservationId(id32(n as u64));
            let m = mem.reserve_matching(id, &ask).map(|r| r.availability_id);
            let s = store.reserve_matching(id, &ask).map(|r| r.availability_id);
            prop_assert_eq!(&m, &s);
            match linear {
                Some(best) => prop_assert_eq!(m, Ok(best)),
                None => prop_assert_eq!(m, Err(LedgerError::NoMatch)),
            }
        }
        prop_assert_eq!(mem.availabilities().unwrap(), store.availabilities().unwrap());
    }

    /// The division-free collateral rule equals the floor-division rule of the reference
    /// (`docs/sales.md#matching`): per byte <= remaining / free size (remaining when free is 0).
    #[test]
    fn collateral_rule_without_division_equals_floor_division(
        per_byte in prop_oneof![
            0u64..100u64,
            any::<u64>(),
        ].prop_map(U256::from).boxed().prop_union(any::<[u8; 32]>().prop_map(U256::from_be_bytes).boxed()),
        free in prop_oneof![Just(0u64), 1u64..100, any::<u64>()],
        remaining in prop_oneof![
            (0u64..10_000).prop_map(U256::from).boxed(),
            any::<u64>().prop_map(U256::from).boxed(),
            any::<[u8; 32]>().prop_map(U256::from_be_bytes).boxed(),
            Just(U256::MAX).boxed(),
        ],
        exact in any::<bool>(),
    ) {
        // Half the cases sit on the boundary: remaining = per_byte × free (± the floor).
        let remaining = match (exact, per_byte.checked_mul(U256::from(free))) {
            (true, Some(p)) => p.saturating_add(remaining % U256::from(free.max(1))),
            _ => remaining,
        };
        let a = codex::sales::ledger::Availability {
            id: AvailabilityId::default(),
            total_size: free,
            free_size: free,
            duration: 1,
            min_price_per_byte_per_second: U256::from(1),
            total_collateral: remaining,
            total_remaining_collateral: remaining,
            collateral_lost: U256::ZERO,
            enabled: true,
            until: 0,
        };
        prop_assert_eq!(
            collateral_per_byte_fits(per_byte, free, remaining),
            per_byte <= max_collateral_per_byte(&a)
        );
    }
}
