//! JSON-RPC round trip (`eth_blockNumber`) against a real anvil: codex's mio client
//! ([`BlockingClient`], the same loop the node runs) versus a minimal blocking tungstenite
//! client on a std `TcpStream`, in the same run. Target: codex ≤ 1.2× the baseline latency.
//!
//! Needs `npm ci --prefix fixtures/chain`. Run: `cargo bench --bench rpc`.
use std::net::TcpStream;
use std::time::Duration;

use codex::chain::client::BlockingClient;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use tungstenite::Message;

#[path = "../tests/support/anvil.rs"]
#[allow(dead_code)]
mod anvil;

fn round_trip(c: &mut Criterion) {
    let node = anvil::Anvil::start(&[]);
    let url = node.ws_url();

    let mut ours = BlockingClient::connect(&url, Duration::from_secs(10)).expect("connect");

    let sock = TcpStream::connect(("127.0.0.1", node.port)).expect("tcp");
    sock.set_nodelay(true).expect("nodelay");
    let (mut plain, _) = tungstenite::client::client(url.as_str(), sock).expect("handshake");
    let mut next_id = 0u64;

    let mut g = c.benchmark_group("rpc_round_trip_eth_blockNumber");
    g.bench_function("codex_mio_client", |b| {
        b.iter(|| {
            let v = ours.call("eth_blockNumber", json!([])).expect("call");
            assert!(v.is_string());
        })
    });
    g.bench_function("blocking_tungstenite", |b| {
        b.iter(|| {
            next_id += 1;
            let req = json!({"jsonrpc":"2.0","id":next_id,"method":"eth_blockNumber","params":[]});
            plain.send(Message::text(req.to_string())).expect("send");
            loop {
                if let Message::Text(t) = plain.read().expect("read") {
                    let v: Value = serde_json::from_str(t.as_str()).expect("json");
                    assert_eq!(v["id"], next_id);
                    break;
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
