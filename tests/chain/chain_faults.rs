//! Faults between the client and a real anvil, through the fault-injecting proxy. In every case
//! the follower reconnects (where needed) and reports exactly the logs on chain, each once, in
//! order.
use crate::support;

use std::time::Duration;

use codex::chain::client::Follow;
use support::anvil::Anvil;
use support::emitter::{topics, Emitter};
use support::follow::{fast_config, Follower};
use support::proxy::{text_frame, Proxy};

const T: Duration = Duration::from_secs(30);

struct Scene {
    anvil: Anvil,
    proxy: Proxy,
    em: Emitter,
    f: Follower,
}

/// A follower through the proxy with a generous keep-alive ([`crate::KEEPALIVE`]): a
/// reconnect must come from the fault, not from a pong late on a loaded machine.
fn scene(anvil: Anvil) -> Scene {
    scene_with_keepalive(anvil, crate::KEEPALIVE)
}

fn scene_with_keepalive(anvil: Anvil, keepalive: Duration) -> Scene {
    let em = Emitter::deploy(&anvil.ws_url());
    let proxy = Proxy::start(([127, 0, 0, 1], anvil.port).into());
    let mut config = fast_config(&proxy.ws_url());
    config.keepalive = keepalive;
    let f = Follower::new(
        config,
        Follow {
            address: em.address(),
            from_block: 0,
            to_block: None,
            max_range: 2,
        },
    );
    Scene {
        anvil,
        proxy,
        em,
        f,
    }
}

impl Scene {
    fn emit(&mut self, range: std::ops::RangeInclusive<u64>) {
        for n in range {
            self.em.emit(n);
        }
    }

    fn settle(&mut self, n: u64) {
        let head = self.em.head();
        self.f
            .run_until(T, &format!("{n} logs up to block {head}"), |f| {
                f.logs.len() as u64 >= n && f.processed >= Some(head)
            });
        assert_eq!(topics(&self.f.logs), (1..=n).collect::<Vec<_>>());
    }

    /// Logs 1..=3, the fault, logs 4..=6, then 7 after everything settled.
    fn run(mut self, fault: impl FnOnce(&mut Scene)) -> Scene {
        self.emit(1..=3);
        self.settle(3);
        fault(&mut self);
        self.emit(4..=6);
        self.settle(6);
        self.emit(7..=7);
        self.settle(7);
        assert!(self.f.removed.is_empty());
        self
    }
}

#[test]
fn connection_dropped_mid_frame() {
    let s = scene(Anvil::start(&[])).run(|s| s.proxy.drop_mid_frame());
    assert!(s.f.connects >= 2, "reconnected");
}

#[test]
fn connection_dropped_between_frames() {
    let s = scene(Anvil::start(&[])).run(|s| s.proxy.drop_all());
    assert!(s.f.connects >= 2);
}

#[test]
fn stalled_socket() {
    // A short keep-alive, so the stall is noticed soon; a pong late for other reasons would
    // only add a reconnect, which this test expects anyway.
    let keepalive = Duration::from_millis(700);
    let s = scene_with_keepalive(Anvil::start(&[]), keepalive).run(|s| s.proxy.stall());
    assert!(s.f.connects >= 2);
    assert!(
        s.f.disconnects
            .iter()
            .any(|d| d.contains("ping") || d.contains("in time")),
        "{:?}",
        s.f.disconnects
    );
}

#[test]
fn malformed_frames_are_ignored() {
    let s = scene(Anvil::start(&[])).run(|s| {
        s.proxy.inject(&text_frame(b"{not json"));
        s.proxy.inject(&text_frame(b"[1,2,3]"));
        s.proxy
            .inject(&text_frame(br#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xdead","result":{}}}"#));
    });
    assert_eq!(s.f.connects, 1, "a bad frame does not cost the connection");
}

#[test]
fn oversized_frame_costs_the_connection_only() {
    let s = scene(Anvil::start(&[])).run(|s| {
        // A header announcing a 1 GiB text frame, then a little of it.
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&(1u64 << 30).to_be_bytes());
        f.extend_from_slice(&[b'x'; 100]);
        s.proxy.inject(&f);
    });
    assert!(s.f.connects >= 2);
}

#[test]
fn json_rpc_error_on_get_logs() {
    let s = scene(Anvil::start(&[])).run(|s| s.proxy.fail_next("eth_getLogs"));
    assert!(
        s.f.disconnects
            .iter()
            .any(|d| d.contains("injected failure")),
        "{:?}",
        s.f.disconnects
    );
}

#[test]
fn response_for_unknown_id_is_ignored() {
    let s = scene(Anvil::start(&[])).run(|s| {
        s.proxy.inject(&text_frame(
            br#"{"jsonrpc":"2.0","id":999999,"result":"0x1"}"#,
        ));
        s.proxy.inject(&text_frame(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#,
        ));
    });
    assert_eq!(s.f.connects, 1);
}

#[test]
fn node_restarted_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let anvil = Anvil::start(&["--state", state.to_str().unwrap()]);
    let s = scene(anvil).run(|s| {
        s.proxy.refuse(true);
        s.proxy.drop_all();
        s.anvil.terminate();
        let head_before = 4u64; // deploy + 3 calls
        s.anvil.restart();
        s.em = Emitter::reconnect(&s.anvil.ws_url(), s.em.address.clone());
        assert!(s.em.head() >= head_before, "anvil kept its chain");
        s.proxy.refuse(false);
    });
    assert!(s.f.connects >= 2);
}
