//! The slot queue: scenarios 1–30 (`docs/sales.md#scenario-numbers`), and the queue defects of the
//! reference that codex fixes (`docs/sales.md#differences-from-the-reference`) (each test fails on the reference's behaviour).

use std::cmp::Ordering;

use codex::market::{Ask, RequestId, U256};
use codex::sales::queue::{
    Next, PauseReason, PushOutcome, QueueError, SlotQueue, SlotQueueItem, DEFAULT_CAPACITY,
    DEFAULT_MAX_WORKERS, LAZY_WORST_MAX,
};

fn rid(n: u8) -> RequestId {
    RequestId([n; 32].into())
}

fn item(r: u8, idx: u64) -> SlotQueueItem {
    SlotQueueItem {
        request_id: rid(r),
        slot_index: idx,
        slot_size: 1000,
        duration: 100,
        price_per_byte_per_second: U256::from(10u8),
        collateral: U256::from(1000u32),
        expiry: 5000,
        seen: false,
    }
}

fn priced(r: u8, idx: u64, price: u64) -> SlotQueueItem {
    SlotQueueItem {
        price_per_byte_per_second: U256::from(price),
        ..item(r, idx)
    }
}

fn running(capacity: usize, workers: usize) -> SlotQueue {
    let mut q = SlotQueue::new(capacity, workers).unwrap();
    q.start();
    q
}

/// Drives worker loops as the engine does: every item a worker takes is processed at once
/// and its worker returned. Returns the processed items in order.
fn drain(q: &mut SlotQueue) -> Vec<SlotQueueItem> {
    let mut done = Vec::new();
    while let Next::Item(it) = q.next_for_worker() {
        done.push(it);
        q.release_worker();
    }
    done
}

fn ask(slots: u64) -> Ask {
    Ask {
        slots,
        slot_size: 64,
        duration: 100,
        price_per_byte_per_second: U256::from(1u8),
        collateral_per_byte: U256::from(1u8),
        ..Ask::default()
    }
}

#[test]
fn item_01_new_queue_is_not_running_and_is_paused() {
    let q = SlotQueue::default();
    assert!(!q.is_running());
    assert_eq!(q.paused(), Some(PauseReason::Startup));
}

#[test]
fn item_02_start_and_stop_are_idempotent() {
    let mut q = SlotQueue::default();
    q.stop();
    assert!(!q.is_running());
    q.start();
    q.start();
    assert!(q.is_running());
    q.stop();
    q.stop();
    assert!(!q.is_running());
    assert_eq!(q.push(item(1, 0)), Err(QueueError::NotRunning));
}

#[test]
fn item_03_invalid_max_workers_are_rejected() {
    assert_eq!(
        SlotQueue::new(10, 0).unwrap_err(),
        QueueError::InvalidMaxWorkers {
            max_workers: 0,
            capacity: 10
        }
    );
    assert!(matches!(
        SlotQueue::new(10, 11),
        Err(QueueError::InvalidMaxWorkers {
            max_workers: 11,
            ..
        })
    ));
    assert!(SlotQueue::new(10, 10).is_ok());
    assert_eq!(
        SlotQueue::new(0, 1).unwrap_err(),
        QueueError::InvalidCapacity(0)
    );
}

#[test]
fn item_04_new_queue_is_empty_and_reports_its_capacity() {
    let q = SlotQueue::default();
    assert_eq!(q.len(), 0);
    assert!(q.is_empty());
    assert!(q.items_in_order().is_empty());
    assert_eq!(q.capacity(), DEFAULT_CAPACITY);
    assert_eq!(q.max_workers(), DEFAULT_MAX_WORKERS);
}

#[test]
fn item_05_b_ranks_higher_than_a() {
    let a = SlotQueueItem {
        duration: 1,
        price_per_byte_per_second: U256::from(1u8),
        collateral: U256::from(100_000u64 * 1000),
        expiry: 1001,
        ..item(1, 0)
    };
    let b = SlotQueueItem {
        duration: 100,
        price_per_byte_per_second: U256::from(1000u32),
        collateral: U256::from(1000u32),
        expiry: 1000,
        ..item(2, 0)
    };
    assert_eq!(b.priority_cmp(&a), Ordering::Less);
    let mut q = running(10, 1);
    q.push(a).unwrap();
    q.push(b.clone()).unwrap();
    assert_eq!(q.pop(), Some(b));
}

#[test]
fn item_06_seen_outweighs_profitability() {
    let unseen_cheap = priced(1, 0, 1);
    let seen_rich = SlotQueueItem {
        seen: true,
        ..priced(2, 0, 1000)
    };
    assert_eq!(unseen_cheap.priority_cmp(&seen_rich), Ordering::Less);
}

#[test]
fn item_07_profitability_outweighs_collateral() {
    let rich_costly = SlotQueueItem {
        collateral: U256::from(10_000u32),
        ..priced(1, 0, 20)
    };
    let poor_cheap = SlotQueueItem {
        collateral: U256::from(1u32),
        ..priced(2, 0, 10)
    };
    assert_eq!(rich_costly.priority_cmp(&poor_cheap), Ordering::Less);
}

#[test]
fn item_08_collateral_outweighs_expiry() {
    let low_coll = SlotQueueItem {
        collateral: U256::from(1u32),
        expiry: 10,
        ..item(1, 0)
    };
    let late = SlotQueueItem {
        collateral: U256::from(2u32),
        expiry: 10_000,
        ..item(2, 0)
    };
    assert_eq!(low_coll.priority_cmp(&late), Ordering::Less);
}

#[test]
fn item_09_later_expiry_wins_when_otherwise_equal() {
    let later = SlotQueueItem {
        expiry: 2000,
        ..item(2, 0)
    };
    let earlier = SlotQueueItem {
        expiry: 1000,
        ..item(1, 0)
    };
    assert_eq!(later.priority_cmp(&earlier), Ordering::Less);
}

#[test]
fn item_10_larger_slot_ranks_higher() {
    let big = SlotQueueItem {
        slot_size: 2000,
        ..item(2, 0)
    };
    let small = item(1, 0);
    assert_eq!(big.priority_cmp(&small), Ordering::Less);
}

#[test]
fn item_11_expansion_covers_every_index_once() {
    let mut rng = fastrand::Rng::with_seed(11);
    let items: Vec<_> = SlotQueueItem::expand(rid(1), &ask(12), 99, U256::from(64u8), &mut rng)
        .unwrap()
        .collect();
    let mut idx: Vec<u64> = items.iter().map(|i| i.slot_index).collect();
    assert_ne!(
        idx,
        (0..12).collect::<Vec<_>>(),
        "expected a shuffled order"
    );
    idx.sort();
    assert_eq!(idx, (0..12).collect::<Vec<_>>());
    assert!(items
        .iter()
        .all(|i| i.expiry == 99 && i.collateral == U256::from(64u8) && !i.seen));
}

/// The reference shuffles a request's slots so that hosts seeing one request try different
/// slots first (`docs/sales.md#queue-order`). A total order that ranked a request's equal slots
/// by index would send every host to the same slot whatever the shuffle; each queue's salt
/// gives each host its own order.
#[test]
fn item_11_hosts_seeing_one_request_try_different_slots_first() {
    let mut firsts = std::collections::BTreeSet::new();
    for host in 0..8u64 {
        let mut q = running(64, 1);
        assert!(q.set_salt(host.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let mut rng = fastrand::Rng::with_seed(host);
        for it in SlotQueueItem::expand(rid(1), &ask(10), 99, U256::from(64u8), &mut rng).unwrap() {
            q.push(it).unwrap();
        }
        let order: Vec<u64> = drain(&mut q).iter().map(|i| i.slot_index).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "host {host}");
        firsts.insert(order[0]);
    }
    assert!(firsts.len() >= 4, "eight hosts start at slots {firsts:?}");
}

/// The salted order is still one total order: the queue pops what sorting by its
/// `priority_cmp` gives, and the salt cannot change under queued items.
#[test]
fn salted_order_is_the_queues_priority_cmp() {
    let mut q = running(512, 1);
    assert!(q.set_salt(0xdead_beef));
    let mut rng = fastrand::Rng::with_seed(3);
    let mut all = Vec::new();
    for n in 0..300u64 {
        let it = SlotQueueItem {
            expiry: rng.u64(1..4),
            ..priced(rng.u8(0..3), n, rng.u64(1..3))
        };
        q.push(it.clone()).unwrap();
        all.push(it);
    }
    assert!(!q.set_salt(1), "salt changed with items queued");
    all.sort_by(|a, b| q.priority_cmp(a, b));
    assert_eq!(q.items_in_order(), all);
    q.validate().unwrap();
    assert_eq!(drain(&mut q), all);
}

#[test]
fn item_12_pushed_items_are_all_processed() {
    let mut q = running(10, 2);
    q.push(item(1, 0)).unwrap();
    q.push(item(1, 1)).unwrap();
    let a = q.next_for_worker();
    let b = q.next_for_worker();
    assert!(matches!(a, Next::Item(_)) && matches!(b, Next::Item(_)));
    assert!(q.is_empty());
}

#[test]
fn item_13_more_items_than_workers_can_be_pushed() {
    let mut q = running(2, 2);
    for i in 0..5 {
        assert!(q.push(item(1, i)).is_ok());
        assert!(q.len() <= 2);
    }
}

#[test]
fn item_14_65535_slots_expand_and_65536_are_refused() {
    let mut rng = fastrand::Rng::with_seed(14);
    let items = SlotQueueItem::expand(rid(1), &ask(65_535), 1, U256::ZERO, &mut rng).unwrap();
    assert_eq!(items.len(), 65_535);
    assert_eq!(
        SlotQueueItem::expand(rid(1), &ask(65_536), 1, U256::ZERO, &mut rng).unwrap_err(),
        QueueError::SlotsOutOfRange { slots: 65_536 }
    );
}

#[test]
fn item_15_duplicate_push_is_refused() {
    let mut q = running(10, 1);
    q.push(item(1, 3)).unwrap();
    assert_eq!(
        q.push(item(1, 3)),
        Err(QueueError::Duplicate {
            request_id: rid(1),
            slot_index: 3
        })
    );
    assert_eq!(q.len(), 1);
}

#[test]
fn item_16_items_pushed_beyond_capacity_are_processed_as_workers_drain() {
    let mut q = running(2, 2);
    let mut done = Vec::new();
    for round in 0..2 {
        q.push(item(1, round * 2)).unwrap();
        q.push(item(1, round * 2 + 1)).unwrap();
        while let Next::Item(it) = q.next_for_worker() {
            done.push(it);
        }
        q.release_worker();
        q.release_worker();
    }
    assert_eq!(done.len(), 4);
}

#[test]
fn item_17_deleting_an_item_removes_it() {
    let mut q = running(10, 1);
    q.push(item(1, 0)).unwrap();
    assert_eq!(q.delete(rid(1), 0), Some(item(1, 0)));
    assert!(!q.contains(rid(1), 0));
    assert_eq!(q.delete(rid(1), 0), None);
}

#[test]
fn item_18_deleted_slot_is_not_processed() {
    let mut q = running(10, 3);
    for i in 0..3 {
        q.push(item(1, i)).unwrap();
    }
    q.delete(rid(1), 1);
    let done = drain(&mut q);
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|i| i.slot_index != 1));
}

#[test]
fn item_19_deleted_request_is_not_processed() {
    let mut q = running(10, 3);
    for i in 0..3 {
        q.push(item(1, i)).unwrap();
        q.push(item(2, i)).unwrap();
    }
    assert_eq!(q.delete_request(rid(1)), 3);
    let done = drain(&mut q);
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|i| i.request_id == rid(2)));
}

#[test]
fn item_20_contains_reflects_membership() {
    let mut q = running(10, 1);
    assert!(!q.contains(rid(1), 0));
    q.push(item(1, 0)).unwrap();
    assert!(q.contains(rid(1), 0));
    assert!(!q.contains(rid(1), 1));
}

#[test]
fn item_21_each_field_moves_priority_the_right_way() {
    let base = item(1, 0);
    let pricier = priced(2, 0, 11);
    assert_eq!(pricier.priority_cmp(&base), Ordering::Less);
    let costlier = SlotQueueItem {
        collateral: U256::from(1001u32),
        ..item(2, 0)
    };
    assert_eq!(costlier.priority_cmp(&base), Ordering::Greater);
    let later = SlotQueueItem {
        expiry: 5001,
        ..item(2, 0)
    };
    assert_eq!(later.priority_cmp(&base), Ordering::Less);
    let bigger = SlotQueueItem {
        slot_size: 1001,
        ..item(2, 0)
    };
    assert_eq!(bigger.priority_cmp(&base), Ordering::Less);
}

#[test]
fn item_22_each_item_is_processed_exactly_once() {
    let mut q = running(100, 3);
    for i in 0..50 {
        q.push(item((i % 5) as u8, i)).unwrap();
    }
    let done = drain(&mut q);
    let mut keys: Vec<_> = done.iter().map(|i| i.key()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 50);
    assert_eq!(done.len(), 50);
}

#[test]
fn item_23_items_pushed_one_at_a_time_are_processed_in_arrival_order() {
    let mut q = running(10, 1);
    let mut done = Vec::new();
    for (i, price) in [1u64, 9, 3, 7].into_iter().enumerate() {
        q.push(priced(1, i as u64, price)).unwrap();
        if let Next::Item(it) = q.next_for_worker() {
            done.push(it.slot_index);
            q.release_worker();
        }
    }
    assert_eq!(done, vec![0, 1, 2, 3]);
}

#[test]
fn item_24_items_pushed_together_are_processed_by_priority() {
    let mut q = running(10, 1);
    for (i, price) in [1u64, 9, 3, 7].into_iter().enumerate() {
        q.push(priced(1, i as u64, price)).unwrap();
    }
    let order: Vec<u64> = drain(&mut q).iter().map(|i| i.slot_index).collect();
    assert_eq!(order, vec![1, 3, 2, 0]);
}

#[test]
fn item_25_unseen_push_unpauses_and_all_items_are_processed() {
    let mut q = running(10, 2);
    q.pause(PauseReason::OnlySeenItems);
    for i in 0..4 {
        q.push(item(1, i)).unwrap();
    }
    assert_eq!(q.paused(), None);
    assert_eq!(drain(&mut q).len(), 4);
}

#[test]
fn item_26_seen_push_does_not_unpause() {
    let mut q = running(10, 2);
    q.pause(PauseReason::OnlySeenItems);
    q.push(SlotQueueItem {
        seen: true,
        ..item(1, 0)
    })
    .unwrap();
    assert_eq!(q.paused(), Some(PauseReason::OnlySeenItems));
    assert_eq!(
        q.next_for_worker(),
        Next::Paused(PauseReason::OnlySeenItems)
    );
}

#[test]
fn item_27_paused_queue_processes_as_soon_as_unpaused_by_push() {
    let mut q = running(10, 1);
    assert!(matches!(q.next_for_worker(), Next::Paused(_)));
    q.push(item(1, 0)).unwrap();
    assert_eq!(q.next_for_worker(), Next::Item(item(1, 0)));
}

#[test]
fn item_28_processing_a_seen_item_pauses_the_queue() {
    let mut q = running(10, 1);
    q.push(item(1, 0)).unwrap();
    q.push(SlotQueueItem {
        seen: true,
        ..item(1, 1)
    })
    .unwrap();
    assert!(matches!(q.next_for_worker(), Next::Item(_)));
    q.release_worker();
    assert_eq!(
        q.next_for_worker(),
        Next::Paused(PauseReason::OnlySeenItems)
    );
    assert_eq!(q.paused(), Some(PauseReason::OnlySeenItems));
    assert!(q.contains(rid(1), 1), "the seen item stays queued");
    assert_eq!(q.busy_workers(), 0, "a seen item takes no worker");
}

#[test]
fn item_29_clear_seen_flags_marks_every_item_unseen() {
    let mut q = running(10, 1);
    for i in 0..5 {
        q.push(SlotQueueItem {
            seen: true,
            ..item(1, i)
        })
        .unwrap();
    }
    q.clear_seen_flags();
    assert!(q.items_in_order().iter().all(|i| !i.seen));
    q.validate().unwrap();
}

#[test]
fn item_30_full_queue_never_exceeds_capacity_and_reports_a_dropped_push() {
    let mut q = running(3, 1);
    for i in 0..3 {
        q.push(priced(1, i, 10)).unwrap();
    }
    let low = priced(2, 0, 1);
    assert_eq!(q.push(low.clone()), Ok(PushOutcome::Dropped(low)));
    assert_eq!(q.len(), 3);
    assert!(!q.contains(rid(2), 0));
}

// ---- differences from the reference codex fixes ----
// Numbered as in docs/sales.md#differences-from-the-reference.

/// Difference 5: the reference evicts the last array element, which need not be the lowest item,
/// and reports success even when the pushed item itself is dropped.
#[test]
fn defect_8_5_full_queue_evicts_the_lowest_priority_item_and_says_so() {
    let mut q = running(7, 1);
    // Pushed in this order, a binary heap array is [100, 90, 80, 75, 70, 60, 1]. The new
    // item lands at index 7 and rises past 75, so the reference evicts 75 from the last
    // array slot; the lowest item is 1.
    for (i, p) in [100u64, 90, 80, 75, 70, 60, 1].into_iter().enumerate() {
        q.push(priced(1, i as u64, p)).unwrap();
    }
    let out = q.push(priced(2, 0, 95)).unwrap();
    assert_eq!(out, PushOutcome::QueuedEvicting(priced(1, 6, 1)));
    let prices: Vec<U256> = q
        .items_in_order()
        .iter()
        .map(|i| i.price_per_byte_per_second)
        .collect();
    assert!(!prices.contains(&U256::from(1u8)));
    q.validate().unwrap();
}

/// Difference 5: the reference's del(index) never lets the moved element rise, which breaks the
/// heap; codex keeps the order under arbitrary deletes.
#[test]
fn defect_8_5_arbitrary_deletes_keep_the_queue_order() {
    let mut rng = fastrand::Rng::with_seed(85);
    let mut q = running(5000, 1);
    for i in 0..2000u64 {
        q.push(priced((i % 13) as u8, i, rng.u64(1..1000))).unwrap();
    }
    for _ in 0..700 {
        let i = rng.u64(0..2000);
        q.delete(rid((i % 13) as u8), i);
    }
    q.validate().unwrap();
    let expected = q.items_in_order();
    let mut popped = Vec::new();
    while let Some(it) = q.pop() {
        popped.push(it);
    }
    assert_eq!(popped, expected);
}

/// Difference 5: clearSeenFlags re-sifted only the root; codex sorts the queue again.
#[test]
fn defect_8_5_clearing_seen_flags_restores_full_order() {
    let mut rng = fastrand::Rng::with_seed(851);
    let mut q = running(1000, 1);
    for i in 0..500u64 {
        q.push(SlotQueueItem {
            seen: rng.bool(),
            ..priced(1, i, rng.u64(1..10_000))
        })
        .unwrap();
    }
    q.clear_seen_flags();
    q.validate().unwrap();
    let mut prev: Option<SlotQueueItem> = None;
    while let Some(it) = q.pop() {
        if let Some(p) = prev {
            assert!(p.price_per_byte_per_second >= it.price_per_byte_per_second);
        }
        prev = Some(it);
    }
}

/// Difference 6: capacity and worker budget are configurable (hard-coded 128/3 in the reference).
#[test]
fn defect_8_6_capacity_and_workers_are_configurable() {
    let mut q = running(1000, 10);
    for i in 0..1000 {
        assert_eq!(q.push(item(1, i)).unwrap(), PushOutcome::Queued);
    }
    let mut taken = 0;
    while let Next::Item(_) = q.next_for_worker() {
        taken += 1;
    }
    assert_eq!(taken, 10);
    assert_eq!(q.next_for_worker(), Next::NoWorker);
}

/// Difference 7: with the reference's optional expiry the order is not transitive; codex's order is
/// total: antisymmetric and transitive on random triples, never Equal for distinct items.
#[test]
fn defect_8_7_order_is_total_and_transitive() {
    let mut rng = fastrand::Rng::with_seed(87);
    let gen = |rng: &mut fastrand::Rng| SlotQueueItem {
        request_id: rid(rng.u8(0..3)),
        slot_index: rng.u64(0..3),
        slot_size: rng.u64(1..3),
        duration: rng.u64(1..3),
        price_per_byte_per_second: U256::from(rng.u64(1..3)),
        collateral: U256::from(rng.u64(1..3)),
        expiry: rng.u64(1..3),
        seen: rng.bool(),
    };
    for _ in 0..20_000 {
        let (a, b, c) = (gen(&mut rng), gen(&mut rng), gen(&mut rng));
        assert_eq!(a.priority_cmp(&b), b.priority_cmp(&a).reverse());
        if a.key() != b.key() {
            assert_ne!(a.priority_cmp(&b), Ordering::Equal);
        }
        if a.priority_cmp(&b).is_le() && b.priority_cmp(&c).is_le() {
            assert!(a.priority_cmp(&c).is_le());
        }
    }
}

/// Difference 8: the reference truncates to u16 before comparing, so 65,537 slots pass and wrap.
#[test]
fn defect_8_8_65537_slots_are_refused_not_wrapped() {
    let mut rng = fastrand::Rng::with_seed(88);
    assert_eq!(
        SlotQueueItem::expand(rid(1), &ask(65_537), 1, U256::ZERO, &mut rng).unwrap_err(),
        QueueError::SlotsOutOfRange { slots: 65_537 }
    );
    assert!(SlotQueueItem::expand(rid(1), &ask(u64::MAX), 1, U256::ZERO, &mut rng).is_err());
    assert!(SlotQueueItem::expand(rid(1), &ask(0), 1, U256::ZERO, &mut rng).is_err());
}

/// Difference 9: nothing purged expired items in the reference; codex purges them by time.
#[test]
fn defect_8_9_expired_items_are_purged_by_time() {
    let mut q = running(10, 1);
    q.push(SlotQueueItem {
        expiry: 100,
        ..item(1, 0)
    })
    .unwrap();
    q.push(SlotQueueItem {
        expiry: 200,
        ..item(2, 0)
    })
    .unwrap();
    assert_eq!(q.next_expiry(), Some(100));
    assert!(q.purge_expired(99).is_empty());
    let gone = q.purge_expired(150);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].request_id, rid(1));
    assert_eq!(q.next_expiry(), Some(200));
    q.validate().unwrap();
}

/// A queue above LAZY_WORST_MAX keeps its WORST heaps always: evictions, seen flags and their
/// clearing behave as in a small queue.
#[test]
fn large_queue_evicts_the_worst_item_with_its_worst_heaps_kept() {
    let cap = LAZY_WORST_MAX + 1;
    let mut q = running(cap, 1);
    let mut rng = fastrand::Rng::with_seed(8);
    let mut model: Vec<SlotQueueItem> = Vec::new();
    for n in 0..(cap as u64 + 300) {
        let it = SlotQueueItem {
            seen: rng.bool(),
            ..priced(rng.u8(0..4), n, rng.u64(1..1000))
        };
        let res = q.push(it.clone()).unwrap();
        model.push(it.clone());
        model.sort_by(|a, b| a.priority_cmp(b));
        if model.len() > cap {
            let worst = model.pop().unwrap();
            if worst == it {
                assert_eq!(res, PushOutcome::Dropped(it));
            } else {
                assert_eq!(res, PushOutcome::QueuedEvicting(worst));
            }
        }
        if n % 250 == 0 {
            q.validate().unwrap();
        }
        if n == cap as u64 + 100 {
            q.clear_seen_flags();
            for m in &mut model {
                m.seen = false;
            }
            model.sort_by(|a, b| a.priority_cmp(b));
            q.validate().unwrap();
        }
    }
    q.validate().unwrap();
    assert_eq!(q.items_in_order(), model);
}

/// Randomized model check against a sorted Vec (the reference-like baseline).
#[test]
fn queue_matches_a_naive_model_under_random_operations() {
    let mut rng = fastrand::Rng::with_seed(4242);
    let mut q = running(64, 1);
    let mut model: Vec<SlotQueueItem> = Vec::new();
    for step in 0..20_000u64 {
        match rng.u8(0..10) {
            0..=4 => {
                let it = SlotQueueItem {
                    seen: rng.u8(0..4) == 0,
                    expiry: rng.u64(0..1000),
                    ..priced(rng.u8(0..8), rng.u64(0..40), rng.u64(1..50))
                };
                let res = q.push(it.clone());
                if model.iter().any(|m| m.key() == it.key()) {
                    assert!(matches!(res, Err(QueueError::Duplicate { .. })));
                    continue;
                }
                model.push(it.clone());
                model.sort_by(|a, b| a.priority_cmp(b));
                if model.len() > 64 {
                    let worst = model.pop().unwrap();
                    if worst == it {
                        assert_eq!(res, Ok(PushOutcome::Dropped(it)));
                    } else {
                        assert_eq!(res, Ok(PushOutcome::QueuedEvicting(worst)));
                    }
                }
            }
            5 => {
                let got = q.pop();
                let want = if model.is_empty() {
                    None
                } else {
                    Some(model.remove(0))
                };
                assert_eq!(got, want);
            }
            6 => {
                let r = rid(rng.u8(0..8));
                let n = model.iter().filter(|m| m.request_id == r).count();
                model.retain(|m| m.request_id != r);
                assert_eq!(q.delete_request(r), n);
            }
            7 => {
                let now = rng.u64(0..300);
                let mut gone = q.purge_expired(now);
                let mut want: Vec<_> = model.iter().filter(|m| m.expiry <= now).cloned().collect();
                model.retain(|m| m.expiry > now);
                gone.sort_by_key(|i| i.key());
                want.sort_by_key(|i| i.key());
                assert_eq!(gone, want);
            }
            8 => {
                q.clear_seen_flags();
                for m in &mut model {
                    m.seen = false;
                }
                model.sort_by(|a, b| a.priority_cmp(b));
            }
            _ => {
                let (r, i) = (rid(rng.u8(0..8)), rng.u64(0..40));
                let pos = model.iter().position(|m| m.key() == (r, i));
                let want = pos.map(|p| model.remove(p));
                assert_eq!(q.delete(r, i), want);
            }
        }
        if step % 97 == 0 {
            q.validate().unwrap();
            assert_eq!(q.items_in_order(), model);
        }
    }
}
