//! A minimal contract on plain anvil that emits one log per call (topic = the 32-byte calldata),
//! for exercising log following before the Marketplace fixture is involved.
use codex::chain::client::BlockingClient;
use serde_json::{json, Value};
use std::time::Duration;

/// Init code: copies the 9-byte runtime `PUSH1 0 CALLDATALOAD PUSH1 0 PUSH1 0 LOG1 STOP`.
const INIT: &str = "0x6009600c60003960096000f360003560006000a100";

/// anvil's first unlocked dev account.
pub const DEV0: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

pub struct Emitter {
    pub rpc: BlockingClient,
    pub address: String,
}

/// Waits for the receipt (automine includes the transaction right away, but the answer to
/// `eth_sendTransaction` may come before the block is sealed). Asks again every 5 ms, not
/// back to back, so a slow anvil is not flooded with calls.
fn receipt(rpc: &mut BlockingClient, tx: &Value) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = rpc.call("eth_getTransactionReceipt", json!([tx])).unwrap();
        if !r.is_null() {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "no receipt for {tx}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Emitter {
    pub fn deploy(url: &str) -> Emitter {
        let mut rpc = BlockingClient::connect(url, Duration::from_secs(10)).unwrap();
        let tx = rpc
            .call("eth_sendTransaction", json!([{"from": DEV0, "data": INIT}]))
            .unwrap();
        let address = receipt(&mut rpc, &tx)["contractAddress"]
            .as_str()
            .unwrap()
            .to_string();
        Emitter { rpc, address }
    }

    /// Emits one log with topic `n` (as a 32-byte word) in its own block.
    pub fn emit(&mut self, n: u64) {
        let data = format!("0x{n:064x}");
        let tx = self
            .rpc
            .call(
                "eth_sendTransaction",
                json!([{"from": DEV0, "to": self.address, "data": data}]),
            )
            .unwrap();
        let r = receipt(&mut self.rpc, &tx);
        assert_eq!(r["status"], "0x1");
    }

    pub fn address(&self) -> alloy_primitives::Address {
        self.address.parse().unwrap()
    }

    pub fn head(&mut self) -> u64 {
        let v = self.rpc.call("eth_blockNumber", json!([])).unwrap();
        codex::chain::client::quantity_result("eth_blockNumber", &v).unwrap()
    }
}

/// The topic numbers of followed logs.
pub fn topics(logs: &[codex::chain::rpc::Log]) -> Vec<u64> {
    logs.iter()
        .map(|l| {
            let t = l.topics[0];
            u64::from_be_bytes(t[24..].try_into().unwrap())
        })
        .collect()
}

impl Emitter {
    /// A new connection to an emitter deployed earlier (after a node restart).
    pub fn reconnect(url: &str, address: String) -> Emitter {
        let rpc = BlockingClient::connect(url, Duration::from_secs(10)).unwrap();
        Emitter { rpc, address }
    }
}
