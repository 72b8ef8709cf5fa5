//! A real anvil with the fixture Marketplace deployed by `fixtures/chain/devchain.mjs
//! --deploy-only`, plus helpers that create Marketplace events through anvil's unlocked dev
//! accounts.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use codex::chain::client::BlockingClient;
use codex::market::{calls, Ask, Content, Request, RequestId};
use serde_json::{json, Value};

use super::anvil::Anvil;

/// The chain and the JSON devchain.mjs wrote about it.
pub struct Devchain {
    pub anvil: Anvil,
    pub info: Value,
    pub dir: tempfile::TempDir,
}

impl Devchain {
    /// Starts anvil (with `extra` arguments) and deploys the fixture into it.
    pub fn start(extra: &[&str]) -> Devchain {
        let anvil = Anvil::start(extra);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("devchain.json");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/chain/devchain.mjs");
        let status = Command::new("node")
            .arg(script)
            .arg("--deploy-only")
            .arg("--rpc")
            .arg(format!("http://127.0.0.1:{}", anvil.port))
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run node fixtures/chain/devchain.mjs");
        assert!(status.success(), "devchain.mjs --deploy-only failed");
        let info: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        Devchain { anvil, info, dir }
    }

    pub fn ws_url(&self) -> String {
        self.anvil.ws_url()
    }

    pub fn marketplace(&self) -> Address {
        self.info["marketplace"].as_str().unwrap().parse().unwrap()
    }

    pub fn token(&self) -> Address {
        self.info["token"].as_str().unwrap().parse().unwrap()
    }

    pub fn account(&self, i: usize) -> Address {
        self.info["accounts"][i]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn private_key(&self, i: usize) -> String {
        self.info["accounts"][i]["privateKey"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn rpc(&self) -> BlockingClient {
        BlockingClient::connect(&self.ws_url(), Duration::from_secs(10)).unwrap()
    }
}

/// A small valid request from `client`, made distinct by `nonce`.
pub fn request(client: Address, nonce: u8) -> Request {
    Request {
        client,
        ask: Ask {
            proof_probability: U256::from(2u8),
            price_per_byte_per_second: U256::from(1u8),
            collateral_per_byte: U256::from(1u8),
            slots: 2,
            slot_size: 1024,
            duration: 3600,
            max_slot_loss: 1,
        },
        content: Content {
            cid: vec![0x01, 0x55, 0x12, 0x20, nonce],
            merkle_root: B256::repeat_byte(0x77),
        },
        expiry: 600,
        nonce: B256::repeat_byte(nonce),
    }
}

/// Sends a transaction from an unlocked dev account and waits for a successful receipt.
pub fn send(rpc: &mut BlockingClient, from: Address, to: Address, data: &[u8]) -> Value {
    let tx = rpc
        .call(
            "eth_sendTransaction",
            json!([{"from": from, "to": to, "data": alloy_primitives::hex::encode_prefixed(data)}]),
        )
        .unwrap();
    // Automine usually has the receipt at the first ask; otherwise ask again every 5 ms
    // rather than flooding anvil with back-to-back calls.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = rpc.call("eth_getTransactionReceipt", json!([tx])).unwrap();
        if !r.is_null() {
            assert_eq!(r["status"], "0x1", "transaction failed: {r}");
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "no receipt for {tx}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Approves the price and calls requestStorage from dev account `who`; returns the id.
pub fn request_storage(
    rpc: &mut BlockingClient,
    chain: &Devchain,
    who: usize,
    nonce: u8,
) -> RequestId {
    let client = chain.account(who);
    let req = request(client, nonce);
    send(
        rpc,
        client,
        chain.token(),
        &calls::approve(
            chain.marketplace(),
            req.ask.price_per_slot() * U256::from(req.ask.slots),
        ),
    );
    send(
        rpc,
        client,
        chain.marketplace(),
        &calls::request_storage(&req),
    );
    req.id()
}
