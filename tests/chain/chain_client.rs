//! The chain client against a real anvil: calls, subscriptions, errors.
use crate::support;

use std::time::Duration;

use codex::chain::client::{quantity_result, BlockingClient, Follow};
use codex::chain::ChainError;
use serde_json::json;
use support::anvil::Anvil;
use support::emitter::{topics, Emitter};
use support::follow::{fast_config, Follower};
use support::proxy::Proxy;

#[test]
fn block_number_and_chain_id() {
    let anvil = Anvil::start(&[]);
    let mut c = BlockingClient::connect(&anvil.ws_url(), Duration::from_secs(10)).unwrap();
    let n = quantity_result(
        "eth_blockNumber",
        &c.call("eth_blockNumber", json!([])).unwrap(),
    )
    .unwrap();
    assert_eq!(n, 0);
    c.call("evm_mine", json!([])).unwrap();
    let n = quantity_result(
        "eth_blockNumber",
        &c.call("eth_blockNumber", json!([])).unwrap(),
    )
    .unwrap();
    assert_eq!(n, 1);
    let id = quantity_result("eth_chainId", &c.call("eth_chainId", json!([])).unwrap()).unwrap();
    assert_eq!(id, 31337);
}

#[test]
fn new_heads_and_logs_are_followed() {
    let anvil = Anvil::start(&[]);
    let mut em = Emitter::deploy(&anvil.ws_url());
    let mut config = fast_config(&anvil.ws_url());
    config.keepalive = crate::KEEPALIVE;
    let mut f = Follower::new(
        config,
        Follow {
            address: em.address(),
            from_block: 0,
            to_block: None,
            max_range: 3,
        },
    );
    f.run_until(Duration::from_secs(20), "first backfill", |f| {
        f.processed == Some(1)
    });
    for n in 1..=5 {
        em.emit(n);
    }
    em.rpc.call("evm_mine", json!([])).unwrap();
    f.run_until(Duration::from_secs(20), "five logs and a head", |f| {
        f.logs.len() == 5 && f.heads.contains(&7)
    });
    assert_eq!(topics(&f.logs), vec![1, 2, 3, 4, 5]);
    assert_eq!(f.logs[0].block_number, 2);
    assert!(f.removed.is_empty());
}

#[test]
fn refused_connection_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = BlockingClient::connect(&format!("ws://127.0.0.1:{port}"), Duration::from_secs(5))
        .err()
        .unwrap();
    assert!(matches!(err, ChainError::Unreachable { .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[test]
fn bad_url_is_a_configuration_error() {
    let err = BlockingClient::connect("http://localhost:8545", Duration::from_secs(1))
        .err()
        .unwrap();
    assert!(matches!(err, ChainError::Endpoint(_)));
    assert!(!err.is_unreachable());
    assert!(err.to_string().contains("http://localhost:8545"));
}

#[test]
fn wrong_chain_and_missing_contract() {
    let anvil = Anvil::start(&["--chain-id", "5"]);
    let mut c = BlockingClient::connect(&anvil.ws_url(), Duration::from_secs(10)).unwrap();
    let addr = alloy_primitives::Address::repeat_byte(0x42);
    let err = c.verify(Some(31337), Some(addr)).unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::WrongChain {
                expected: 31337,
                actual: 5
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unreachable());
    let err = c.verify(Some(5), Some(addr)).unwrap_err();
    assert!(matches!(err, ChainError::NoContract { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("0x4242424242424242424242424242424242424242"));
    let em = Emitter::deploy(&anvil.ws_url());
    assert_eq!(
        c.verify(Some(5), Some(em.address())).unwrap(),
        (5, em.address())
    );
    let err = c.verify(None, None).unwrap_err();
    assert!(
        matches!(err, ChainError::UnknownChain { chain_id: 5 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--marketplace-address"), "{err}");
}

#[test]
fn error_objects_keep_revert_data() {
    let anvil = Anvil::start(&[]);
    let mut c = BlockingClient::connect(&anvil.ws_url(), Duration::from_secs(10)).unwrap();
    let err = c.call("codex_noSuchMethod", json!([])).unwrap_err();
    let ChainError::Rpc { method, error } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(method, "codex_noSuchMethod");
    assert_ne!(error.code, 0);
    // Creation code that reverts with the 4 bytes 0x3b920b88.
    let init = "0x633b920b8860e01b60005260046000fd";
    let err = c
        .call("eth_call", json!([{"data": init}, "latest"]))
        .unwrap_err();
    assert_eq!(
        err.revert_data().map(|b| b.to_vec()),
        Some(vec![0x3b, 0x92, 0x0b, 0x88]),
        "{err:?}"
    );
    assert!(!err.is_unreachable());
    // The connection is still usable afterwards.
    c.call("eth_blockNumber", json!([])).unwrap();
}

#[test]
fn stalled_node_times_out() {
    let anvil = Anvil::start(&[]);
    let proxy = Proxy::start(([127, 0, 0, 1], anvil.port).into());
    let mut c = BlockingClient::connect(&proxy.ws_url(), Duration::from_millis(500)).unwrap();
    c.call("eth_blockNumber", json!([])).unwrap();
    proxy.stall();
    let err = c.call("eth_blockNumber", json!([])).unwrap_err();
    assert!(matches!(err, ChainError::Timeout { .. }), "{err:?}");
    assert!(err.is_unreachable());
}

#[test]
fn wss_to_a_plain_server_fails_cleanly() {
    // anvil speaks plain HTTP: the TLS handshake over the non-blocking socket must end in an
    // error (not a hang or a panic), reported as "cannot reach".
    let anvil = Anvil::start(&[]);
    let err = BlockingClient::connect(
        &format!("wss://127.0.0.1:{}", anvil.port),
        Duration::from_secs(5),
    )
    .err()
    .unwrap();
    assert!(err.is_unreachable(), "{err:?}");
    // The name is checked before any byte is sent.
    let err = BlockingClient::connect("wss://bad_name:1", Duration::from_secs(5))
        .err()
        .unwrap();
    assert!(err.is_unreachable(), "{err:?}");
}

#[test]
fn idle_connection_stays_up_on_pings() {
    let anvil = Anvil::start(&[]);
    let em = Emitter::deploy(&anvil.ws_url());
    let mut config = fast_config(&anvil.ws_url());
    // Each pong has half a second to come back (loopback answers in well under a millisecond,
    // a loaded machine can delay either side by hundreds); without pongs the link would be
    // dropped after 1 s.
    config.keepalive = Duration::from_millis(500);
    let mut f = Follower::new(
        config,
        Follow {
            address: em.address(),
            from_block: 0,
            to_block: None,
            max_range: 100,
        },
    );
    f.run_until(Duration::from_secs(10), "connected", |f| {
        f.processed == Some(1)
    });
    // Four keep-alive periods without a block: pongs keep the link.
    let end = std::time::Instant::now() + Duration::from_secs(2);
    f.run_until(Duration::from_secs(10), "idle second", |_| {
        std::time::Instant::now() >= end
    });
    assert_eq!(f.connects, 1, "{:?}", f.disconnects);
    assert!(f.disconnects.is_empty());
}

/// A burst of answers larger than one read takes (`chain::ws::READ_BATCH`) is read over
/// several turns, each without waiting for a new readiness event (mio's is edge-triggered),
/// and every call gets its answer.
#[test]
fn a_burst_of_answers_is_read_a_batch_per_turn_and_all_arrive() {
    use codex::chain::client::{ChainClient, ClientConfig, ClientOutput};
    use codex::chain::event_loop::{EventLoop, CHAIN};
    use codex::chain::ws::{Endpoint, READ_BATCH};
    use std::collections::HashSet;
    use std::time::Instant;

    let anvil = Anvil::start(&[]);
    let mut lp = EventLoop::new().unwrap();
    let mut config = ClientConfig::new(Endpoint::parse(&anvil.ws_url()).unwrap());
    config.call_timeout = Duration::from_secs(30);
    let mut client = ChainClient::new(config, CHAIN, Instant::now(), fastrand::Rng::with_seed(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut connected = false;
    while !connected {
        assert!(Instant::now() < deadline, "no connection to anvil");
        lp.turn(&mut client, Some(deadline)).unwrap();
        while let Some(o) = client.poll_output() {
            connected |= matches!(o, ClientOutput::Connected);
        }
    }
    let n = 20 * READ_BATCH;
    let mut left: HashSet<u64> = (0..n)
        .map(|_| client.call(lp.registry(), "eth_chainId", &json!([]), Instant::now()))
        .collect();
    let mut most_in_a_turn = 0;
    while !left.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {n} answers missing",
            left.len()
        );
        lp.turn(&mut client, Some(deadline)).unwrap();
        let mut this_turn = 0;
        while let Some(o) = client.poll_output() {
            if let ClientOutput::Response { id, result } = o {
                assert_eq!(result.unwrap(), json!("0x7a69"));
                assert!(left.remove(&id), "answer {id} twice or unasked");
                this_turn += 1;
            }
        }
        most_in_a_turn = most_in_a_turn.max(this_turn);
    }
    assert!(
        most_in_a_turn <= READ_BATCH,
        "{most_in_a_turn} answers in one turn"
    );
}
