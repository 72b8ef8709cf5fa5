//! `codex run --validator` against the dev chain: a host that misses proofs is slashed by a
//! validator and, after `maxNumberOfSlashes` marks, freed (items 116 and 117 of
//! `docs/sales.md#scenario-numbers`); two validators in two groups each mark only the slots of
//! their own group.
use super::*;

/// Collateral per slot of the requests posted here: 4096 bytes at 1 token per byte.
const COLLATERAL: u64 = 4096;
/// One mark slashes 20% of it (rounded down) and pays 20% of that to the validator.
const SLASH: u64 = COLLATERAL * 20 / 100;
const REWARD: u64 = SLASH * 20 / 100;

impl World {
    fn current_collateral(&mut self, slot: SlotId) -> U256 {
        calls::decode_current_collateral(&self.view(calls::current_collateral(slot))).unwrap()
    }

    fn missing_proofs(&mut self, slot: SlotId) -> u64 {
        calls::decode_missing_proofs(&self.view(calls::missing_proofs(slot))).unwrap()
    }

    /// The latest block's timestamp.
    fn chain_time(&mut self) -> u64 {
        let b = self
            .rpc
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .unwrap();
        let t = b["timestamp"].as_str().unwrap();
        u64::from_str_radix(t.trim_start_matches("0x"), 16).unwrap()
    }

    /// Number of SlotFreed events of `slot`.
    fn freed_events(&mut self, slot: SlotId, request: codex::market::RequestId) -> usize {
        use alloy_sol_types::SolEvent;
        let topic = codex::market::abi::Marketplace::SlotFreed::SIGNATURE_HASH;
        let v = self
            .rpc
            .call(
                "eth_getLogs",
                json!([{"address": self.chain.marketplace(), "fromBlock": "0x0", "toBlock": "latest", "topics": [topic, request.0]}]),
            )
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|l| {
                let index = l["data"]
                    .as_str()
                    .and_then(|d| u64::from_str_radix(&d[d.len() - 16..], 16).ok());
                index.is_some_and(|i| SlotId::of(request, i) == slot)
            })
            .count()
    }
}

/// A node that only validates (no `--data-source`, no availability), with dev account
/// `account`.
fn validator(w: &World, name: &str, account: usize, extra: &[&str]) -> Host {
    let mut args = vec!["--validator"];
    args.extend(extra);
    Host::new(&w.chain, w.root.path(), name, account, &args)
}

/// A host that offers room for `slots` slots and stops offering once it holds them, so that
/// it does not repair the slots taken from it.
fn failing_host(w: &mut World, failures: &str, slots: u64) -> (Host, Request) {
    let mut host = w.host("host", 1, &["--simulate-proof-failures", failures]);
    host.offer("1MiB", "10000000");
    host.start();
    let req = w.request(slots, 3600, 300, 40);
    (host, req)
}

fn disable_offers(host: &Host) {
    for a in host.availabilities() {
        let id = a["id"].as_str().unwrap().to_string();
        let out = host.cli(&["availability", "update", &id, "--disabled"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Item 116: a host that fails every proof (`--simulate-proof-failures 1`) and a validator
/// on another account: each mark slashes the host's collateral and pays the validator its
/// reward; after maxNumberOfSlashes (2) marks the slot is freed (SlotFreed), the host's sale
/// ends with the rest of its collateral lost, and its accounting still adds up. The
/// validator is killed between the two marks; restarted, it watches the slot again.
#[test]
fn item_116_a_validator_slashes_a_host_that_misses_proofs_until_its_slot_is_freed() {
    let mut w = World::new();
    let (mut host, req) = failing_host(&mut w, "1", 1);
    let mut val = validator(&w, "validator", 2, &["--metrics", "--metrics-port", "0"]);
    val.start();
    let (me, v) = (w.chain.account(1), w.chain.account(2));
    w.post_request(&req);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&host, &val], "the host fills the slot", 60, |w| {
        w.host_of(slot) == me
    });
    disable_offers(&host);
    assert_eq!(w.current_collateral(slot), U256::from(COLLATERAL));
    let reward0 = w.balance(v);
    // Each proving period misses its proof; a mark is possible when the pointer at the
    // validator's block is past the downtime (about 3 periods in 4).
    w.mine_until(&[&host, &val], "a first mark", 12 * 8, |w| {
        w.missing_proofs(slot) >= 1
    });
    assert_eq!(
        w.current_collateral(slot),
        U256::from(COLLATERAL - SLASH),
        "the host is slashed 20% of its collateral"
    );
    assert_eq!(
        w.balance(v),
        reward0 + U256::from(REWARD),
        "the validator is paid 20% of the slash"
    );
    let status = val.api_json("/sales/status");
    assert_eq!(status["validator"]["marks"], 1, "{status}");
    assert_eq!(status["validator"]["watching"], 1, "{status}");
    assert_eq!(
        status["validator"]["rewards"],
        REWARD.to_string(),
        "{status}"
    );
    assert_eq!(status["host"]["selling"], false, "{status}");
    // A validator killed and started again learns the slot from the chain's history (its
    // SlotFilled lies before the saved position) and goes on marking.
    val.kill9();
    w.mine();
    val.start();
    val.wait_api();
    assert!(
        val.log_has("1 slots seen filled in the history"),
        "{}",
        val.log_text()
    );
    w.mine_until(
        &[&host, &val],
        "the restarted validator watches the slot",
        10,
        |_| val.api_json("/sales/status")["validator"]["watching"] == 1,
    );
    // The second mark frees the slot.
    w.mine_until(&[&host, &val], "the slot is freed", 12 * 8, |w| {
        w.freed_events(slot, req.id()) == 1
    });
    assert_eq!(w.host_of(slot), Address::ZERO);
    assert_eq!(w.slot_state(slot), SlotState::Repair);
    assert_eq!(w.current_collateral(slot), U256::ZERO);
    assert_eq!(w.balance(v), reward0 + U256::from(2 * REWARD));
    // The host's sale ends: its bytes come back, the collateral counts as lost.
    w.mine_until(&[&host, &val], "the host's sale ends", 40, |_| {
        free_size(&host) == 1 << 20
    });
    assert!(
        host.log_has("slot was forcibly freed"),
        "{}",
        host.log_text()
    );
    assert_invariant(&host);
    // The validator forgets the freed slot, says so in its status, metrics and log.
    w.mine_until(&[&host, &val], "the validator stops watching", 10, |_| {
        val.api_json("/sales/status")["validator"]["watching"] == 0
    });
    let text = std::fs::read_to_string(&val.log).unwrap();
    assert_eq!(
        text.matches("as missing; its host is slashed").count(),
        2,
        "{text}"
    );
    // The counts start again with the process: one mark since the restart.
    let port: u16 = text
        .rsplit("metrics on http://127.0.0.1:")
        .next()
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the metrics port in the log");
    let (st, _, metrics) = http(port, "GET", "/metrics", None);
    assert_eq!(st, 200);
    assert!(
        metrics.contains("codex_validator_marks_total 1\n"),
        "{metrics}"
    );
    let out = val.cli(&["status", "--api-port", &val.api_port.to_string()]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains(
            "validator:      watching 0 slots (every slot, at most 1000), 1 proofs marked missing"
        ),
        "{out}"
    );
    assert!(out.contains("sells nothing (no --data-source)"), "{out}");
    assert!(val.terminate(Duration::from_secs(5)).success());
    assert!(host.terminate(Duration::from_secs(5)).success());
}

/// Item 117: a host that fails every third proof (`--simulate-proof-failures 3`) is not
/// freed within two periods while a validator runs; it is not freed even past its first
/// missed proof (one mark at most), since freeing takes two.
#[test]
fn item_117_a_host_missing_every_third_proof_is_not_freed_within_two_periods() {
    let mut w = World::new();
    let (host, req) = failing_host(&mut w, "3", 1);
    let mut val = validator(&w, "validator", 2, &[]);
    val.start();
    let me = w.chain.account(1);
    w.post_request(&req);
    let slot = SlotId::of(req.id(), 0);
    w.mine_until(&[&host, &val], "the host fills the slot", 60, |w| {
        w.host_of(slot) == me
    });
    disable_offers(&host);
    w.mine_until(&[&host, &val], "the validator watches the slot", 10, |_| {
        val.api_json("/sales/status")["validator"]["watching"] == 1
    });
    // Proofs for periods f+1, f+2 go through; f+3 is missed; f+4 and f+5 go through. Mine
    // until the validation window of f+5 has closed, checking every block on the way.
    let fill_period = w.chain_time() / 120;
    let until = (fill_period + 6) * 120 + 30;
    w.mine_until(&[&host, &val], "five proving periods", 12 * 7, |w| {
        assert_eq!(w.host_of(slot), me, "the slot was taken from the host");
        assert!(w.missing_proofs(slot) <= 1);
        w.chain_time() > until
    });
    assert_eq!(w.slot_state(slot), SlotState::Filled);
    assert_eq!(w.freed_events(slot, req.id()), 0);
    assert!(w.proofs(slot) >= 4, "the host proved the other periods");
    let marks = val.api_json("/sales/status")["validator"]["marks"]
        .as_u64()
        .unwrap();
    assert!(marks <= 1, "{marks} marks");
    eprintln!(
        "item 117: the validator marked {marks} missed proof(s) of the host (one was missed)"
    );
    assert_eq!(
        w.current_collateral(slot),
        U256::from(COLLATERAL - marks * SLASH)
    );
}

/// Two validators split the slot ids with `--validator-groups 2`: each marks only the slot
/// of its own group, and between them both slots of a failing host are freed.
#[test]
fn two_validators_in_two_groups_each_mark_only_their_own_slots() {
    let mut w = World::new();
    let groups = |s: SlotId| U256::from_be_bytes(s.0 .0) % U256::from(2u8);
    let mut host = w.host("host", 1, &["--simulate-proof-failures", "1"]);
    host.offer("1MiB", "10000000");
    host.start();
    // A request whose two slots fall into different groups.
    let req = (60u8..)
        .map(|n| w.request(2, 3600, 300, n))
        .find(|r| groups(SlotId::of(r.id(), 0)) != groups(SlotId::of(r.id(), 1)))
        .unwrap();
    let mut v0 = validator(
        &w,
        "v0",
        2,
        &["--validator-groups", "2", "--validator-group-index", "0"],
    );
    let mut v1 = validator(
        &w,
        "v1",
        4,
        &["--validator-groups", "2", "--validator-group-index", "1"],
    );
    v0.log_format = "json".into();
    v1.log_format = "json".into();
    v0.start();
    v1.start();
    w.post_request(&req);
    let me = w.chain.account(1);
    let slots = [SlotId::of(req.id(), 0), SlotId::of(req.id(), 1)];
    w.mine_until(&[&host, &v0, &v1], "the host fills both slots", 80, |w| {
        slots.iter().all(|s| w.host_of(*s) == me)
    });
    disable_offers(&host);
    let before = [w.balance(w.chain.account(2)), w.balance(w.chain.account(4))];
    w.mine_until(&[&host, &v0, &v1], "both slots freed", 12 * 10, |w| {
        slots.iter().all(|s| w.freed_events(*s, req.id()) == 1)
    });
    for (i, (v, index)) in [(&v0, 0u8), (&v1, 1)].into_iter().enumerate() {
        let account = w.chain.account([2, 4][i]);
        assert_eq!(
            w.balance(account),
            before[i] + U256::from(2 * REWARD),
            "validator {index} was paid for its two marks"
        );
        let text = std::fs::read_to_string(&v.log).unwrap();
        let marked: Vec<SlotId> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l["msg"]
                    .as_str()
                    .is_some_and(|m| m.contains("as missing; its host is slashed"))
            })
            .map(|l| l["slot"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(marked.len(), 2, "validator {index}: {text}");
        for s in marked {
            assert_eq!(groups(s), U256::from(index), "validator {index} marked {s}");
        }
    }
}
