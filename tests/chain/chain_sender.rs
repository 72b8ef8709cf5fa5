//! Signed transactions against the real fixture contracts: nonce resync, confirmations,
//! reverts with data.
use crate::support;

use alloy_primitives::U256;
use codex::chain::key::EthPrivateKey;
use codex::chain::sender::{SendError, Sender};
use codex::chain::tx::GasCall;
use codex::market::calls;
use serde_json::json;
use support::devchain::Devchain;

#[test]
fn nonce_too_low_resyncs_and_confirmations_are_awaited() {
    let chain = Devchain::start(&[]);
    let key = || EthPrivateKey::from_hex(&chain.private_key(2)).unwrap();
    let mut rpc = chain.rpc();
    let chain_id = rpc.chain_id().unwrap();
    let mut a = Sender::new(key(), chain_id);
    let mut b = Sender::new(key(), chain_id);
    let approve = |n: u64| calls::approve(chain.marketplace(), U256::from(n));
    let first = a
        .send(&mut rpc, chain.token(), approve(1), GasCall::Other)
        .unwrap();
    // `b` uses the key behind `a`'s back: `a`'s next nonce is now taken.
    b.send(&mut rpc, chain.token(), approve(2), GasCall::Other)
        .unwrap();
    let third = a
        .send(&mut rpc, chain.token(), approve(3), GasCall::Other)
        .unwrap();
    assert!(third.block_number > first.block_number);
    let count = rpc
        .call("eth_getTransactionCount", json!([a.address(), "latest"]))
        .unwrap();
    assert_eq!(count, "0x3");

    // Two confirmations: another block must follow the transaction's.
    a.confirmations = 2;
    a.confirm_timeout = std::time::Duration::from_secs(2);
    let err = a
        .send(&mut rpc, chain.token(), approve(4), GasCall::Other)
        .unwrap_err();
    let SendError::NotConfirmed { hash, .. } = err else {
        panic!("{err:?}")
    };
    rpc.call("evm_mine", json!([])).unwrap();
    let mined = a.wait(&mut rpc, hash).unwrap();
    assert_eq!(mined.hash, hash);
}

#[test]
fn estimate_reverts_keep_their_data() {
    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let chain_id = rpc.chain_id().unwrap();
    let mut s = Sender::new(
        EthPrivateKey::from_hex(&chain.private_key(3)).unwrap(),
        chain_id,
    );
    // withdrawFunds of an unknown request reverts (UnknownRequest) during estimation.
    let err = s
        .send(
            &mut rpc,
            chain.marketplace(),
            calls::withdraw_funds(codex::market::RequestId::default()),
            GasCall::Other,
        )
        .unwrap_err();
    let SendError::Chain(e) = err else {
        panic!("{err:?}")
    };
    let data = e.revert_data().expect("revert data");
    let named = codex::market::errors::MarketError::from_revert_data(&data);
    assert!(format!("{named:?}").contains("UnknownRequest"), "{named:?}");
}
