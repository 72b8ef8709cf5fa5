//! The per-slot state machine driven directly: scenarios 77–95
//! (`docs/sales.md#scenario-numbers`), and the state-level defects of the reference that codex
//! fixes (`docs/sales.md#differences-from-the-reference`).

use std::sync::Arc;

use codex::market::{
    Address, Ask, Content, Groth16Proof, Request, RequestState, SlotState, B256, U256,
};
use codex::sales::ledger::{AvailabilityId, Reservation, ReservationId};
use codex::sales::queue::SlotQueueItem;
use codex::sales::sale::{
    ChainError, Ending, Input, Output, ProofView, ReserveFailure, Revert, Sale, SaleConfig,
    SlotRef, SlotView, Tx, TxError,
};

const ME: Address = Address::repeat_byte(0xaa);
const OTHER: Address = Address::repeat_byte(0xbb);
const EXPIRES: u64 = 10_000;
const ENDS: u64 = 100_000;
const T0: u64 = 1_000;

fn cfg() -> SaleConfig {
    SaleConfig {
        period: 100,
        downtime: 64,
        signer: ME,
        ..SaleConfig::default()
    }
}

fn request() -> Arc<Request> {
    Arc::new(Request {
        client: Address::repeat_byte(1),
        ask: Ask {
            proof_probability: U256::from(1u8),
            price_per_byte_per_second: U256::from(1u8),
            collateral_per_byte: U256::from(1u8),
            slots: 3,
            slot_size: 1024,
            duration: 99_000,
            max_slot_loss: 1,
        },
        content: Content {
            cid: b"cid".to_vec(),
            merkle_root: B256::repeat_byte(2),
        },
        expiry: 9_000,
        nonce: B256::repeat_byte(3),
    })
}

fn slot() -> SlotRef {
    SlotRef::new(request().id(), 1)
}

fn item() -> SlotQueueItem {
    SlotQueueItem {
        request_id: request().id(),
        slot_index: 1,
        slot_size: 1024,
        duration: 99_000,
        price_per_byte_per_second: U256::from(1u8),
        collateral: U256::from(1024u32),
        expiry: EXPIRES,
        seen: false,
    }
}

fn reservation() -> Reservation {
    Reservation {
        id: ReservationId([9; 32]),
        availability_id: AvailabilityId([8; 32]),
        request_id: request().id(),
        slot_index: 1,
        slot_size: 1024,
        downloaded: 0,
        collateral: U256::from(1024u32),
        valid_until: ENDS,
    }
}

fn view(state: SlotState, host: Address) -> SlotView {
    SlotView {
        request: Some(request()),
        request_state: Some(RequestState::New),
        slot_state: state,
        expires_at: EXPIRES,
        ends_at: ENDS,
        host,
        current_collateral: U256::from(1000u32),
    }
}

fn proof_view(state: SlotState, pointer: u8, required: bool) -> ProofView {
    ProofView {
        slot_state: state,
        pointer,
        required,
        will_be_required: false,
        challenge: B256::repeat_byte(7),
    }
}

fn proof() -> Groth16Proof {
    Groth16Proof([U256::from(5u8); 8])
}

/// Feeds inputs in order at time `now`; returns the sale and all outputs.
fn feed(mut sale: Sale, inputs: Vec<Input>, now: u64) -> (Sale, Vec<Output>) {
    let mut out = Vec::new();
    for i in inputs {
        sale = sale.on(i, now, &cfg(), &mut out);
    }
    (sale, out)
}

/// The ending of a sale that has just ended: its step's last output says so.
fn ending(sale: &Sale, out: &[Output]) -> Ending {
    assert_eq!(out.last(), Some(&Output::Ended), "the sale ended");
    sale.ending().expect("a final sale has its ending").clone()
}

fn preparing() -> Sale {
    Sale::prepare(item(), &mut Vec::new())
}
fn slot_reserving() -> Sale {
    feed(
        preparing(),
        vec![
            Input::Slot(Ok(view(SlotState::Free, Address::ZERO))),
            Input::Reserved(Ok(Box::new(reservation()))),
        ],
        T0,
    )
    .0
}
fn downloading() -> Sale {
    feed(
        slot_reserving(),
        vec![Input::CanReserve(Ok(true)), Input::Tx(Ok(()))],
        T0,
    )
    .0
}
fn initial_proving() -> Sale {
    feed(
        downloading(),
        vec![Input::DownloadProgress(1024), Input::Downloaded(Ok(()))],
        T0,
    )
    .0
}
fn filling() -> Sale {
    feed(
        initial_proving(),
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Free, 10, false))),
            Input::Proved(Ok(Box::new(proof()))),
        ],
        T0 + 101,
    )
    .0
}
fn filled() -> Sale {
    feed(
        filling(),
        vec![
            Input::Slot(Ok(view(SlotState::Free, Address::ZERO))),
            Input::Tx(Ok(())),
        ],
        T0 + 101,
    )
    .0
}
fn proving() -> Sale {
    feed(
        filled(),
        vec![
            Input::Slot(Ok(view(SlotState::Filled, ME))),
            Input::ExpiryUpdated(Ok(())),
        ],
        T0 + 101,
    )
    .0
}

fn held() -> Option<(ReservationId, U256)> {
    Some((ReservationId([9; 32]), U256::from(1024u32)))
}

#[test]
fn the_happy_path_reaches_proving() {
    assert_eq!(preparing().state_name(), "SalePreparing");
    assert_eq!(slot_reserving().state_name(), "SaleSlotReserving");
    assert_eq!(downloading().state_name(), "SaleDownloading");
    assert_eq!(initial_proving().state_name(), "SaleInitialProving");
    assert_eq!(filling().state_name(), "SaleFilling");
    assert_eq!(filled().state_name(), "SaleFilled");
    assert_eq!(proving().state_name(), "SaleProving");
}

#[test]
fn item_77_preparing_retrieves_the_request_first() {
    let mut out = Vec::new();
    Sale::prepare(item(), &mut out);
    assert_eq!(out, vec![Output::ReadSlot(slot())]);
}

#[test]
fn item_78_preparing_a_new_request_watches_its_expiry() {
    let (_, out) = feed(
        preparing(),
        vec![Input::Slot(Ok(view(SlotState::Free, Address::ZERO)))],
        T0,
    );
    assert!(out.contains(&Output::WatchRequest {
        request_id: request().id(),
        expires_at: EXPIRES
    }));
}

#[test]
fn item_80_fulfilled_changes_nothing() {
    let (s, out) = feed(downloading(), vec![Input::Fulfilled], T0);
    assert_eq!(s, downloading());
    assert!(out.is_empty());
}

#[test]
fn item_81_stale_inputs_are_ignored_and_final_states_ignore_everything() {
    // An answer meant for another state leaves the sale unchanged.
    let (s, out) = feed(
        downloading(),
        vec![Input::CanReserve(Ok(true)), Input::Wake],
        T0,
    );
    assert_eq!(s, downloading());
    assert!(out.is_empty());
    let (done, _) = feed(downloading(), vec![Input::Cancelled], T0);
    assert!(done.is_final());
    let (again, out) = feed(done.clone(), vec![Input::Failed, Input::SlotFilled], T0);
    assert_eq!(again, done);
    assert!(out.is_empty());
}

#[test]
fn item_82_preparing_transitions() {
    // cancelled / failed: no reservation yet, nothing to return.
    for (i, name) in [
        (Input::Cancelled, "SaleCancelled"),
        (Input::Failed, "SaleFailed"),
    ] {
        let (s, out) = feed(preparing(), vec![i], T0);
        assert_eq!(s.state_name(), name);
        assert_eq!(ending(&s, &out).reservation, None);
    }
    // slot filled by someone else: ends without work.
    let (s, _) = feed(preparing(), vec![Input::SlotFilled], T0);
    assert!(s.is_final());
    // request cannot be retrieved.
    let mut v = view(SlotState::Free, Address::ZERO);
    v.request = None;
    let (s, out) = feed(preparing(), vec![Input::Slot(Ok(v))], T0);
    assert_eq!(s.state_name(), "SaleErrored");
    assert_eq!(ending(&s, &out).reason, "request could not be retrieved");
    // no availability: ignored, requeued as seen.
    let (s, out) = feed(
        preparing(),
        vec![
            Input::Slot(Ok(view(SlotState::Free, Address::ZERO))),
            Input::Reserved(Err(ReserveFailure::NoMatch)),
        ],
        T0,
    );
    assert_eq!(s.state_name(), "SaleIgnored");
    assert_eq!(
        ending(&s, &out).requeue,
        Some(Box::new(SlotQueueItem {
            seen: true,
            ..item()
        }))
    );
    // created: SlotReserving.
    assert_eq!(slot_reserving().state_name(), "SaleSlotReserving");
    // other ledger error: Errored with it.
    let (s, out) = feed(
        preparing(),
        vec![
            Input::Slot(Ok(view(SlotState::Free, Address::ZERO))),
            Input::Reserved(Err(ReserveFailure::Other("disk".into()))),
        ],
        T0,
    );
    assert_eq!(s.state_name(), "SaleErrored");
    assert!(ending(&s, &out).reason.contains("disk"));
    // slot not free: ignored, not requeued.
    let (s, out) = feed(
        preparing(),
        vec![Input::Slot(Ok(view(SlotState::Filled, OTHER)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleIgnored");
    assert_eq!(ending(&s, &out).requeue, None);
}

#[test]
fn item_83_slot_reserving_transitions() {
    let (s, out) = feed(
        slot_reserving(),
        vec![Input::CanReserve(Ok(true)), Input::Tx(Ok(()))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleDownloading");
    assert!(out.contains(&Output::Send(Tx::ReserveSlot { slot: slot() })));
    let (s, out) = feed(slot_reserving(), vec![Input::CanReserve(Ok(false))], T0);
    assert_eq!(s.state_name(), "SaleIgnored");
    assert_eq!(ending(&s, &out).reservation, held());
    let (s, out) = feed(
        slot_reserving(),
        vec![
            Input::CanReserve(Ok(true)),
            Input::Tx(Err(TxError::Reverted(Revert::ReservationNotAllowed))),
        ],
        T0,
    );
    assert_eq!(s.state_name(), "SaleIgnored");
    assert_eq!(ending(&s, &out).requeue, None);
    let (s, out) = feed(
        slot_reserving(),
        vec![
            Input::CanReserve(Ok(true)),
            Input::Tx(Err(TxError::Reverted(Revert::Other("X".into())))),
        ],
        T0,
    );
    assert_eq!(s.state_name(), "SaleErrored");
    assert_eq!(
        ending(&s, &out).reservation,
        held(),
        "difference 3: collateral back"
    );
    for (i, name) in [
        (Input::Cancelled, "SaleCancelled"),
        (Input::Failed, "SaleFailed"),
    ] {
        let (s, out) = feed(slot_reserving(), vec![i], T0);
        assert_eq!(s.state_name(), name);
        assert_eq!(
            ending(&s, &out).reservation,
            held(),
            "difference 3: collateral back"
        );
    }
}

#[test]
fn item_84_downloading_transitions() {
    for (i, name) in [
        (Input::Cancelled, "SaleCancelled"),
        (Input::Failed, "SaleFailed"),
    ] {
        let (s, out) = feed(downloading(), vec![i], T0);
        assert_eq!(s.state_name(), name);
        assert_eq!(ending(&s, &out).reservation, held());
    }
    let (s, out) = feed(downloading(), vec![Input::SlotFilled], T0);
    assert_eq!(s.state_name(), "SaleFilled");
    assert_eq!(out, vec![Output::ReadSlot(slot())]);
    // Another host: Errored, but everything held comes back (difference 3, HostMismatch).
    let (s, out) = feed(s, vec![Input::Slot(Ok(view(SlotState::Filled, OTHER)))], T0);
    assert_eq!(s.state_name(), "SaleErrored");
    assert_eq!(ending(&s, &out).reservation, held());
    assert!(ending(&s, &out).release_data);
}

#[test]
fn item_85_initial_proving_waits_for_a_stable_challenge() {
    let mut out = Vec::new();
    let s = downloading().on(Input::Downloaded(Ok(())), T0 + 5, &cfg(), &mut out);
    assert_eq!(out, vec![Output::WakeAt(1101)], "next period start + 1");
    // Pointer 250 > 256 − 64: the challenge could change within the period; wait again.
    let (s, out) = feed(
        s,
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Free, 250, false))),
        ],
        1101,
    );
    assert_eq!(out.last(), Some(&Output::WakeAt(1201)));
    assert_eq!(s.state_name(), "SaleInitialProving");
    let (s, out) = feed(
        s,
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Free, 100, false))),
        ],
        1201,
    );
    assert!(
        matches!(out.last(), Some(Output::Prove { challenge, .. }) if *challenge == B256::repeat_byte(7))
    );
    let (ok, _) = feed(s.clone(), vec![Input::Proved(Ok(Box::new(proof())))], 1201);
    assert_eq!(ok.state_name(), "SaleFilling");
    let (err, out) = feed(s, vec![Input::Proved(Err("boom".into()))], 1201);
    assert_eq!(err.state_name(), "SaleErrored");
    assert_eq!(ending(&err, &out).reservation, held());
    for (i, name) in [
        (Input::Cancelled, "SaleCancelled"),
        (Input::Failed, "SaleFailed"),
    ] {
        let (s, _) = feed(initial_proving(), vec![i], T0);
        assert_eq!(s.state_name(), name);
    }
}

#[test]
fn item_86_filling_transitions() {
    let (s, out) = feed(
        filling(),
        vec![Input::Slot(Ok(view(SlotState::Free, Address::ZERO)))],
        T0,
    );
    assert!(out.contains(&Output::Send(Tx::FillSlot {
        slot: slot(),
        proof: Box::new(proof()),
        collateral: U256::from(1024u32)
    })));
    let (s2, out) = feed(
        s.clone(),
        vec![Input::Tx(Err(TxError::Reverted(Revert::SlotNotFree)))],
        T0,
    );
    assert_eq!(s2.state_name(), "SaleIgnored");
    assert_eq!(ending(&s2, &out).reservation, held());
    assert_eq!(ending(&s2, &out).requeue, None);
    // A fillSlot that failed in transit: the slot is read again after a backoff, and the
    // fill is sent again while it reads Free; the fourth failure in a row ends the sale.
    let mut s3 = s;
    for attempt in 1..4 {
        let (s, out) = feed(
            s3,
            vec![Input::Tx(Err(TxError::Transient("rpc".into())))],
            T0,
        );
        assert_eq!(s.state_name(), "SaleFilling", "attempt {attempt}");
        assert!(
            matches!(out.as_slice(), [Output::WakeAt(t)] if *t > T0),
            "{out:?}"
        );
        let (s, out) = feed(s, vec![Input::Wake], T0 + 60);
        assert_eq!(out, vec![Output::ReadSlot(slot())]);
        let (s, out) = feed(
            s,
            vec![Input::Slot(Ok(view(SlotState::Free, Address::ZERO)))],
            T0 + 60,
        );
        assert!(
            matches!(out.as_slice(), [Output::Send(Tx::FillSlot { .. })]),
            "{out:?}"
        );
        s3 = s;
    }
    let (s3, out) = feed(
        s3,
        vec![Input::Tx(Err(TxError::Transient("rpc".into())))],
        T0 + 60,
    );
    assert_eq!(s3.state_name(), "SaleErrored");
    assert_eq!(ending(&s3, &out).reservation, held());
    // A fill whose answer was lost but which went through reads Filled with us as host.
    let (s4, _) = feed(
        filling(),
        vec![
            Input::Slot(Ok(view(SlotState::Free, Address::ZERO))),
            Input::Tx(Err(TxError::Transient("connection lost".into()))),
            Input::Wake,
            Input::Slot(Ok(view(SlotState::Filled, ME))),
        ],
        T0 + 60,
    );
    assert_eq!(s4.state_name(), "SaleFilled");
    // A slot read that fails is retried the same way.
    let (s5, out) = feed(
        filling(),
        vec![Input::Slot(Err(ChainError("timeout".into())))],
        T0,
    );
    assert_eq!(s5.state_name(), "SaleFilling");
    assert!(matches!(out.as_slice(), [Output::WakeAt(_)]), "{out:?}");
    // A repair posts the discounted collateral.
    let (_, out) = feed(
        filling(),
        vec![Input::Slot(Ok(view(SlotState::Repair, Address::ZERO)))],
        T0,
    );
    assert!(out.contains(&Output::Send(Tx::FillSlot {
        slot: slot(),
        proof: Box::new(proof()),
        collateral: U256::from(922u32)
    })));
    // Cancelled while filling: find out whether our fill happened.
    let (s, out) = feed(filling(), vec![Input::Cancelled], T0);
    assert_eq!(s.state_name(), "SaleCancelled");
    assert_eq!(out, vec![Output::ReadSlot(slot())]);
    let (s, out) = feed(
        s,
        vec![Input::Slot(Ok(view(SlotState::Free, Address::ZERO)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleCancelled");
    assert_eq!(
        ending(&s, &out).reservation,
        held(),
        "not filled: all comes back"
    );
}

#[test]
fn item_87_filled_checks_the_host() {
    let (s, out) = feed(
        filled(),
        vec![Input::Slot(Ok(view(SlotState::Filled, ME)))],
        T0,
    );
    assert!(out.contains(&Output::Filled(slot())));
    assert!(out.contains(&Output::UpdateExpiry {
        slot: slot(),
        cid: b"cid".to_vec(),
        until: ENDS
    }));
    let (s, _) = feed(s, vec![Input::ExpiryUpdated(Ok(()))], T0);
    assert_eq!(s.state_name(), "SaleProving");
    let (s, out) = feed(
        filled(),
        vec![Input::Slot(Ok(view(SlotState::Filled, OTHER)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleErrored");
    assert_eq!(ending(&s, &out).reason, "Slot filled by other host");
}

#[test]
fn item_88_proving_submits_required_proofs_once_per_period() {
    let s = proving();
    let (s, out) = feed(s, vec![Input::Wake], 1201);
    assert_eq!(out, vec![Output::ReadProof(slot())]);
    let (s, out) = feed(
        s,
        vec![Input::Proof(Ok(proof_view(SlotState::Filled, 100, true)))],
        1201,
    );
    assert!(
        matches!(&out[0], Output::Prove { challenge, .. } if *challenge == B256::repeat_byte(7))
    );
    let (s, out) = feed(s, vec![Input::Proved(Ok(Box::new(proof())))], 1201);
    assert_eq!(
        out,
        vec![Output::Send(Tx::SubmitProof {
            slot: slot(),
            proof: Box::new(proof())
        })]
    );
    let (s, out) = feed(s, vec![Input::Tx(Ok(()))], 1202);
    assert_eq!(out, vec![Output::WakeAt(1301)]);
    // A second wake in the same period (e.g. after a restart of the timer) proves nothing.
    let (s, _) = feed(s, vec![Input::Wake], 1250);
    let (s, out) = feed(
        s,
        vec![Input::Proof(Ok(proof_view(SlotState::Filled, 100, true)))],
        1250,
    );
    assert_eq!(
        out,
        vec![Output::WakeAt(1301)],
        "at most one proof per period"
    );
    // Not required: no proof.
    let (s, _) = feed(s, vec![Input::Wake], 1301);
    let (s, out) = feed(
        s,
        vec![Input::Proof(Ok(proof_view(SlotState::Filled, 100, false)))],
        1301,
    );
    assert_eq!(out, vec![Output::WakeAt(1401)]);
    // Finished: Payout reads the collateral and frees the slot.
    let (p, out) = feed(
        s.clone(),
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Finished, 100, false))),
        ],
        1401,
    );
    assert_eq!(p.state_name(), "SalePayout");
    assert_eq!(out.last(), Some(&Output::ReadSlot(slot())));
    // Free: our fill was reorganised out (a filled slot never reads Free again), so all
    // the collateral held comes back and the slot is queued again; Paid: Errored.
    let (e, out) = feed(
        s.clone(),
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Free, 100, false))),
        ],
        1401,
    );
    assert_eq!(e.state_name(), "SaleIgnored");
    let end = ending(&e, &out);
    assert_eq!(
        end.reservation,
        Some((reservation().id, reservation().collateral))
    );
    assert!(end.release_data);
    assert!(end.requeue.as_ref().is_some_and(|i| !i.seen));
    let (e, _) = feed(
        s.clone(),
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Paid, 100, false))),
        ],
        1401,
    );
    assert_eq!(e.state_name(), "SaleErrored");
    for (i, name) in [
        (Input::Cancelled, "SaleCancelled"),
        (Input::Failed, "SaleFailed"),
    ] {
        let (c, _) = feed(s.clone(), vec![i], 1401);
        assert_eq!(c.state_name(), name);
    }
}

/// A proof whose transaction is mined only after its period ended (a chain busy with the
/// host's own proofs) does not make the sale skip the period it was mined in: the sale checks
/// that period at once and proves it. Likewise for a view that answers late.
#[test]
fn a_proof_answered_after_its_period_ended_checks_the_current_period_at_once() {
    let s = proving();
    let (s, _) = feed(
        s,
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Filled, 100, true))),
            Input::Proved(Ok(Box::new(proof()))),
        ],
        1201,
    );
    // Period 12 ends at 1300; the receipt comes at 1305.
    let (s, out) = feed(s, vec![Input::Tx(Ok(()))], 1305);
    assert_eq!(out, vec![Output::WakeAt(1305)]);
    let (s, out) = feed(s, vec![Input::Wake], 1305);
    assert_eq!(out, vec![Output::ReadProof(slot())]);
    let (s, out) = feed(
        s,
        vec![Input::Proof(Ok(proof_view(SlotState::Filled, 100, true)))],
        1305,
    );
    assert!(
        matches!(&out[0], Output::Prove { .. }),
        "period 13 is proven: {out:?}"
    );
    // Its proof fails to compute; the next wake-up is period 14's.
    let (s, out) = feed(s, vec![Input::Proved(Err("no data".into()))], 1310);
    assert_eq!(out, vec![Output::WakeAt(1401)]);
    // A view of period 14 that answers (not required) only in period 15 checks 15 at once.
    let (s, _) = feed(s, vec![Input::Wake], 1401);
    let (_, out) = feed(
        s,
        vec![Input::Proof(Ok(proof_view(SlotState::Filled, 100, false)))],
        1502,
    );
    assert_eq!(out, vec![Output::WakeAt(1502)]);
}

#[test]
fn item_89_simulated_proving_fails_every_third_proof() {
    let mut c = cfg();
    c.simulate_proof_failures = 3;
    let mut s = proving();
    let mut submitted = Vec::new();
    for round in 0..6u64 {
        let now = 1201 + round * 100;
        let mut out = Vec::new();
        s = s.on(Input::Wake, now, &c, &mut out);
        s = s.on(
            Input::Proof(Ok(proof_view(SlotState::Filled, 100, true))),
            now,
            &c,
            &mut out,
        );
        if matches!(out.last(), Some(Output::Prove { .. })) {
            s = s.on(Input::Proved(Ok(Box::new(proof()))), now, &c, &mut out);
        }
        let Some(Output::Send(Tx::SubmitProof { proof, .. })) = out.last().cloned() else {
            panic!("no proof submitted: {out:?}");
        };
        submitted.push(if proof.is_zero() { "invalid" } else { "p" });
        let res = if proof.is_zero() {
            Err(TxError::Reverted(Revert::ProofInvalid))
        } else {
            Ok(())
        };
        s = s.on(Input::Tx(res), now, &c, &mut out);
        assert_eq!(s.state_name(), "SaleProving");
    }
    assert_eq!(submitted, ["p", "p", "invalid", "p", "p", "invalid"]);
}

fn payout() -> Sale {
    feed(
        proving(),
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Finished, 0, false))),
        ],
        200_000,
    )
    .0
}

#[test]
fn item_90_payout_returns_current_collateral_read_before_free_slot() {
    let (s, out) = feed(
        payout(),
        vec![Input::Slot(Ok(view(SlotState::Finished, ME)))],
        200_000,
    );
    assert_eq!(out, vec![Output::Send(Tx::FreeSlot { slot: slot() })]);
    let (s, out) = feed(s, vec![Input::Tx(Ok(()))], 200_000);
    assert_eq!(s.state_name(), "SaleFinished");
    let e = ending(&s, &out);
    assert_eq!(
        e.reservation,
        Some((ReservationId([9; 32]), U256::from(1000u32)))
    );
    assert!(e.release_data);
}

#[test]
fn item_91_finished_ignores_late_events() {
    let (s, _) = feed(
        payout(),
        vec![
            Input::Slot(Ok(view(SlotState::Finished, ME))),
            Input::Tx(Ok(())),
        ],
        200_000,
    );
    let (s2, out) = feed(s.clone(), vec![Input::Cancelled, Input::Failed], 200_001);
    assert_eq!(s2, s);
    assert!(
        out.is_empty(),
        "a final state ignores late events (the reference's SaleFinished did not)"
    );
}

#[test]
fn item_92_cancelled_pays_our_collateral_or_returns_what_was_held() {
    // Hosting: currentCollateral comes back; "already free" still completes.
    let (s, _) = feed(proving(), vec![Input::Cancelled], 5000);
    let (s, out) = feed(
        s,
        vec![Input::Slot(Ok(view(SlotState::Cancelled, ME)))],
        5000,
    );
    assert_eq!(out, vec![Output::Send(Tx::FreeSlot { slot: slot() })]);
    let (s, out) = feed(
        s,
        vec![Input::Tx(Err(TxError::Reverted(Revert::SlotIsFree)))],
        5000,
    );
    assert_eq!(s.state_name(), "SaleCancelled");
    assert_eq!(
        ending(&s, &out).reservation,
        Some((ReservationId([9; 32]), U256::from(1000u32)))
    );
    // Filled by another host before our fill: all held comes back.
    let (s, _) = feed(filled(), vec![Input::Cancelled], 5000);
    let (s, out) = feed(
        s,
        vec![Input::Slot(Ok(view(SlotState::Cancelled, OTHER)))],
        5000,
    );
    assert_eq!(ending(&s, &out).reservation, held());
    // A read error is retried (the reference ends in Errored).
    let (s, _) = feed(proving(), vec![Input::Cancelled], 5000);
    let (s, out) = feed(s, vec![Input::Slot(Err(ChainError("rpc".into())))], 5000);
    assert_eq!(s.state_name(), "SaleCancelled");
    assert!(matches!(out[0], Output::WakeAt(_)));
    let (_, out) = feed(s, vec![Input::Wake], 5010);
    assert_eq!(out, vec![Output::ReadSlot(slot())]);
}

#[test]
fn item_93_errored_does_not_reprocess() {
    let (s, out) = feed(downloading(), vec![Input::Downloaded(Err("x".into()))], T0);
    let e = ending(&s, &out);
    assert_eq!(s.state_name(), "SaleErrored");
    assert_eq!(e.requeue, None);
}

#[test]
fn item_94_ignored_reprocesses_as_configured_and_returns_collateral() {
    let (s, out) = feed(
        preparing(),
        vec![
            Input::Slot(Ok(view(SlotState::Free, Address::ZERO))),
            Input::Reserved(Err(ReserveFailure::NoMatch)),
        ],
        T0,
    );
    assert!(ending(&s, &out).requeue.is_some());
    assert_eq!(ending(&s, &out).reservation, None);
    let (s, out) = feed(slot_reserving(), vec![Input::CanReserve(Ok(false))], T0);
    assert_eq!(ending(&s, &out).requeue, None);
    assert_eq!(ending(&s, &out).reservation, held());
}

fn unknown() -> Sale {
    Sale::restore(slot(), Some(reservation()), &mut Vec::new())
}

/// Found by the crash soak (`tests/soak`): a host restarted in the middle of a period resumed
/// proving only at the next period's start, so the period it came back in went unproven
/// (and could be marked missing). The loop checks the current period first, as the
/// reference's does.
#[test]
fn a_sale_restored_mid_period_proves_that_period() {
    let mid = 1250;
    let (s, _) = feed(
        unknown(),
        vec![Input::Slot(Ok(view(SlotState::Filled, ME)))],
        mid,
    );
    let (s, out) = feed(s, vec![Input::ExpiryUpdated(Ok(()))], mid);
    assert_eq!(s.state_name(), "SaleProving");
    assert_eq!(out, vec![Output::WakeAt(mid)], "checks this period at once");
    let (s, out) = feed(s, vec![Input::Wake], mid);
    assert_eq!(out, vec![Output::ReadProof(slot())]);
    let (_, out) = feed(
        s,
        vec![Input::Proof(Ok(proof_view(SlotState::Filled, 100, true)))],
        mid,
    );
    assert!(
        matches!(&out[..], [Output::Prove { .. }]),
        "proves period 12: {out:?}"
    );
}

#[test]
fn item_95_unknown_resumes_from_the_slot_state() {
    let mut v = view(SlotState::Filled, ME);
    v.request = None;
    let (s, out) = feed(unknown(), vec![Input::Slot(Ok(v))], T0);
    assert_eq!(s.state_name(), "SaleErrored");
    assert_eq!(ending(&s, &out).reason, "request could not be retrieved");
    let (s, out) = feed(
        unknown(),
        vec![Input::Slot(Ok(view(SlotState::Free, Address::ZERO)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleErrored");
    assert_eq!(
        ending(&s, &out).reason,
        "Slot state on chain should not be 'free'"
    );
    assert_eq!(
        ending(&s, &out).reservation,
        held(),
        "difference 2: the reservation ends with it"
    );
    let (s, out) = feed(
        unknown(),
        vec![Input::Slot(Ok(view(SlotState::Filled, ME)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleFilled");
    let (s, _) = feed(s, vec![Input::ExpiryUpdated(Ok(()))], T0);
    assert_eq!(s.state_name(), "SaleProving");
    assert!(out.contains(&Output::Filled(slot())));
    let (s, out) = feed(
        unknown(),
        vec![Input::Slot(Ok(view(SlotState::Finished, ME)))],
        T0,
    );
    assert_eq!(s.state_name(), "SalePayout");
    assert_eq!(
        out.last(),
        Some(&Output::Send(Tx::FreeSlot { slot: slot() }))
    );
    let (s, out) = feed(
        unknown(),
        vec![Input::Slot(Ok(view(SlotState::Paid, ME)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleFinished");
    assert_eq!(ending(&s, &out).reservation, held());
    let (s, _) = feed(
        unknown(),
        vec![Input::Slot(Ok(view(SlotState::Failed, ME)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleFailed");
    let (s, _) = feed(
        unknown(),
        vec![Input::Slot(Ok(view(SlotState::Cancelled, ME)))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleCancelled");
    // A read error at startup is retried, not fatal (difference 16).
    let (s, out) = feed(
        unknown(),
        vec![Input::Slot(Err(ChainError("down".into())))],
        T0,
    );
    assert_eq!(s.state_name(), "SaleUnknown");
    assert!(matches!(out[0], Output::WakeAt(_)));
}

// ---- differences from the reference (state level) ----
// Numbered as in docs/sales.md#differences-from-the-reference.

/// Difference 3: Failed after our fill returns nothing (the contract pays nothing), but before the
/// fill everything held comes back; the reference returned nothing on both.
#[test]
fn defect_8_3_failed_before_fill_returns_collateral() {
    let (s, out) = feed(initial_proving(), vec![Input::Failed], T0);
    assert_eq!(ending(&s, &out).reservation, held());
    let (s, _) = feed(proving(), vec![Input::Failed], 5000);
    let (s, out) = feed(s, vec![Input::Slot(Ok(view(SlotState::Failed, ME)))], 5000);
    assert_eq!(out, vec![Output::Send(Tx::FreeSlot { slot: slot() })]);
    let (s, out) = feed(s, vec![Input::Tx(Ok(()))], 5000);
    assert_eq!(s.state_name(), "SaleFailed");
    assert_eq!(
        ending(&s, &out).reservation,
        Some((ReservationId([9; 32]), U256::ZERO))
    );
}

/// Difference 13: a failed payout is retried with growing, capped backoff instead of Errored.
#[test]
fn defect_8_13_payout_retries_with_backoff() {
    let (mut s, _) = feed(
        payout(),
        vec![Input::Slot(Ok(view(SlotState::Finished, ME)))],
        200_000,
    );
    let mut now = 200_000;
    let mut delays = Vec::new();
    for _ in 0..12 {
        let mut out = Vec::new();
        s = s.on(
            Input::Tx(Err(TxError::Transient("nonce too low".into()))),
            now,
            &cfg(),
            &mut out,
        );
        let Some(Output::WakeAt(at)) = out.last().cloned() else {
            panic!("no retry: {out:?}");
        };
        delays.push(at - now);
        now = at;
        out.clear();
        s = s.on(Input::Wake, now, &cfg(), &mut out);
        // The slot is read again before each retry (a reorganisation may have moved it).
        assert_eq!(out, vec![Output::ReadSlot(slot())]);
        out.clear();
        s = s.on(
            Input::Slot(Ok(view(SlotState::Finished, ME))),
            now,
            &cfg(),
            &mut out,
        );
        assert_eq!(out, vec![Output::Send(Tx::FreeSlot { slot: slot() })]);
    }
    assert_eq!(s.state_name(), "SalePayout");
    assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*delays.last().unwrap(), cfg().retry_cap);
    let (s, out) = feed(s, vec![Input::Tx(Ok(()))], now);
    assert_eq!(s.state_name(), "SaleFinished");
    assert_eq!(
        ending(&s, &out).reservation,
        Some((ReservationId([9; 32]), U256::from(1000u32)))
    );
}

/// Difference 13: a transient proof submission failure is retried within the period.
#[test]
fn defect_8_13_proof_submission_is_retried_within_the_period() {
    let (s, out) = feed(
        proving(),
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Filled, 100, true))),
            Input::Proved(Ok(Box::new(proof()))),
            Input::Tx(Err(TxError::Transient("timeout".into()))),
        ],
        1201,
    );
    let Some(Output::WakeAt(at)) = out.last().cloned() else {
        panic!("no retry")
    };
    assert!(at < 1300);
    let (_, out) = feed(s, vec![Input::Wake], at);
    assert_eq!(
        out,
        vec![Output::Send(Tx::SubmitProof {
            slot: slot(),
            proof: Box::new(proof())
        })]
    );
}

/// Difference 1 (state level): Proving sees a Cancelled or Failed slot itself, without the event.
#[test]
fn defect_8_1_proving_notices_failed_without_the_event() {
    let (s, _) = feed(
        proving(),
        vec![
            Input::Wake,
            Input::Proof(Ok(proof_view(SlotState::Failed, 100, false))),
        ],
        1201,
    );
    assert_eq!(s.state_name(), "SaleFailed");
}

/// Difference 16: a chain read failure while resuming a slot at startup is retried; the reference
/// dropped the whole host role when `mySlots` failed and errored the slot on a read error.
#[test]
fn defect_8_16_startup_read_failures_are_retried() {
    let mut s = unknown();
    let mut now = T0;
    for _ in 0..5 {
        let mut out = Vec::new();
        s = s.on(
            Input::Slot(Err(ChainError("down".into()))),
            now,
            &cfg(),
            &mut out,
        );
        let Some(Output::WakeAt(at)) = out.last().cloned() else {
            panic!("no retry: {out:?}");
        };
        now = at;
        out.clear();
        s = s.on(Input::Wake, now, &cfg(), &mut out);
        assert_eq!(out, vec![Output::ReadSlot(slot())]);
    }
    let (s, _) = feed(s, vec![Input::Slot(Ok(view(SlotState::Filled, ME)))], now);
    assert_eq!(s.state_name(), "SaleFilled");
}

/// A cancellation or failure that the chain does not confirm (the slot still reads Filled
/// with us as host, e.g. after a reorganisation removed the event) never sends freeSlot,
/// which on a Filled slot is a forced free that forfeits all the collateral: the sale goes
/// back to proving.
#[test]
fn an_unconfirmed_end_never_frees_a_live_slot() {
    for interrupt in [Input::Cancelled, Input::Failed] {
        let (sale, out) = feed(
            proving(),
            vec![
                interrupt.clone(),
                Input::Slot(Ok(view(SlotState::Filled, ME))),
            ],
            T0 + 150,
        );
        assert_eq!(sale.state_name(), "SaleProving", "{interrupt:?}");
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Send(Tx::FreeSlot { .. }))),
            "{interrupt:?}: {out:?}"
        );
    }
}

/// A slot read that fails in Preparing (the chain cannot be reached) is tried again after a
/// backoff instead of giving the slot up at once; after three failed reads the sale ends,
/// holding nothing.
#[test]
fn preparing_reads_again_when_the_chain_cannot_be_reached() {
    let err = || Input::Slot(Err(ChainError("connection lost".into())));
    // Two failures, then the read works: the sale goes on to reserve.
    let (sale, out) = feed(
        preparing(),
        vec![
            err(),
            Input::Wake,
            err(),
            Input::Wake,
            Input::Slot(Ok(view(SlotState::Free, Address::ZERO))),
        ],
        T0,
    );
    assert_eq!(sale.state_name(), "SalePreparing");
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::ReadSlot(_)))
            .count(),
        2,
        "{out:?}"
    );
    assert!(
        out.iter().any(|o| matches!(o, Output::Reserve { .. })),
        "{out:?}"
    );
    // Three failures: it ends, holding nothing.
    let (sale, out) = feed(
        preparing(),
        vec![err(), Input::Wake, err(), Input::Wake, err()],
        T0,
    );
    assert_eq!(sale.state_name(), "SaleErrored");
    assert_eq!(ending(&sale, &out).reservation, None);
}
