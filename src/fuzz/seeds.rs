//! The seeds that are encodings rather than recordings: event topics and data, revert data,
//! view results, and anvil-shaped logs and frames carrying them, written by the encoders from
//! the values of `fixtures/vectors/ids.json` and the unit tests.
//!
//! `cargo test --lib fuzz::seeds -- --ignored` writes them into `fixtures/fuzz/` again
//! (the `generated.*` files); the recorded seeds beside them are kept by hand.
use alloy_primitives::{hex, Address, B256, U256};
use alloy_sol_types::{Panic, Revert, SolError, SolValue};

use super::corpus_dir;
use super::targets::view_names;
use crate::market::abi::{self, Marketplace, Vault, IERC20};
use crate::market::events::encode_event;
use crate::market::{Ask, Content, MarketEvent, MarketplaceConfig, Request, SlotId};

/// The request of `fixtures/vectors/ids.json` (the one anvil confirmed).
fn vector_request() -> Request {
    Request {
        client: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
            .parse()
            .unwrap(),
        ask: Ask {
            proof_probability: U256::from(3u8),
            price_per_byte_per_second: U256::from(1000u32),
            collateral_per_byte: U256::from(1u8),
            slots: 3,
            slot_size: 1 << 20,
            duration: 86_400,
            max_slot_loss: 1,
        },
        content: Content {
            cid: crate::market::cid::parse_cid(
                "zDvZRwzkvi9AzC7V2jQ4NSTPbEfX3q5McvHVxTArFpkt8DrQ8uC6",
            )
            .unwrap(),
            merkle_root: B256::repeat_byte(0x5a),
        },
        expiry: 600,
        nonce: B256::with_last_byte(1),
    }
}

/// The extreme request of `fixtures/vectors/ids.json`.
fn extreme_request() -> Request {
    Request {
        client: "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
            .parse()
            .unwrap(),
        ask: Ask {
            proof_probability: U256::MAX,
            price_per_byte_per_second: U256::from(1u8),
            collateral_per_byte: U256::from(1u8) << 128,
            slots: 1,
            slot_size: u64::MAX,
            duration: u64::MAX,
            max_slot_loss: 0,
        },
        content: Content {
            cid: vec![0xab; 45],
            merkle_root: B256::ZERO,
        },
        expiry: 1,
        nonce: B256::repeat_byte(0xff),
    }
}

fn events() -> Vec<MarketEvent> {
    let r = vector_request();
    let id = r.id();
    let x = extreme_request();
    vec![
        MarketEvent::StorageRequested {
            request_id: id,
            ask: r.ask.clone(),
            expiry: 1_795_220_176,
        },
        MarketEvent::StorageRequested {
            request_id: x.id(),
            ask: x.ask.clone(),
            expiry: u64::MAX,
        },
        MarketEvent::SlotFilled {
            request_id: id,
            slot_index: 2,
        },
        MarketEvent::SlotFreed {
            request_id: id,
            slot_index: 0,
        },
        MarketEvent::SlotReservationsFull {
            request_id: id,
            slot_index: 1,
        },
        MarketEvent::RequestFulfilled { request_id: id },
        MarketEvent::RequestFailed { request_id: id },
        MarketEvent::RequestCancelled { request_id: id },
        MarketEvent::ProofSubmitted {
            slot_id: SlotId::of(id, 1),
        },
    ]
}

/// A log as anvil 1.x writes it, `blockTimestamp` included.
fn anvil_log(topics: &[B256], data: &[u8], n: u64) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("\"{t:#x}\"")).collect();
    format!(
        concat!(
            "{{\"address\":\"0xa85233c63b9ee964add6f2cffe00fd84eb32338f\",",
            "\"topics\":[{}],\"data\":\"0x{}\",",
            "\"blockHash\":\"{:#x}\",\"blockNumber\":\"{:#x}\",",
            "\"blockTimestamp\":\"0x6b00e078\",",
            "\"transactionHash\":\"{:#x}\",\"transactionIndex\":\"0x0\",",
            "\"logIndex\":\"{:#x}\",\"removed\":false}}"
        ),
        topics.join(","),
        hex::encode(data),
        crate::market::keccak256(n.to_be_bytes()),
        0x11c + n,
        crate::market::keccak256((n + 1000).to_be_bytes()),
        n % 3,
    )
}

fn word(v: u64) -> Vec<u8> {
    U256::from(v).to_be_bytes::<32>().to_vec()
}

/// Return data of each view, by name.
fn view_results(name: &str) -> Vec<Vec<u8>> {
    let r = vector_request();
    let slots = vec![r.slot_id(0).0, r.slot_id(1).0];
    let host = Address::repeat_byte(0x70).abi_encode();
    match name {
        "getRequest" => vec![
            r.to_abi().abi_encode(),
            extreme_request().to_abi().abi_encode(),
        ],
        "getActiveSlot" => vec![abi::ActiveSlot {
            request: r.to_abi(),
            slotIndex: 2,
        }
        .abi_encode()],
        "configuration" => {
            vec![abi::MarketplaceConfig::from(&MarketplaceConfig::default()).abi_encode()]
        }
        "token" | "getHost" => vec![host, word(0)],
        "requestState" => (0..5).map(word).collect(),
        "slotState" => (0..7).map(word).collect(),
        "currentCollateral" | "allowance" | "balanceOf" => {
            vec![word(1 << 20), U256::MAX.abi_encode()]
        }
        "requestEnd" | "requestExpiry" | "missingProofs" => vec![word(1_795_306_576), word(0)],
        "getPointer" => vec![word(89), word(255)],
        "getChallenge" => vec![B256::repeat_byte(0x42).to_vec()],
        "isProofRequired" | "willProofBeRequired" | "canReserveSlot" => vec![word(0), word(1)],
        "mySlots" | "myRequests" => vec![slots.abi_encode(), Vec::<B256>::new().abi_encode()],
        other => panic!("no results for view {other}"),
    }
}

fn write(target: &str, file: &str, lines: &[String]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join(file), text).unwrap();
}

#[test]
#[ignore = "writes the generated seeds of fixtures/fuzz/"]
fn write_generated_seeds() {
    // events: count, topics, data
    let mut encoded = vec!["# topic count (1 byte), topics, data; by fuzz::seeds".to_string()];
    let mut logs = Vec::new();
    let mut frames = Vec::new();
    for (n, e) in events().iter().enumerate() {
        let (topics, data) = encode_event(e);
        let mut bytes = vec![topics.len() as u8];
        topics
            .iter()
            .for_each(|t| bytes.extend_from_slice(t.as_slice()));
        bytes.extend_from_slice(&data);
        encoded.push(hex::encode(bytes));
        let log = anvil_log(&topics, &data, n as u64);
        frames.push(format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"eth_subscription\",\"params\":{{\"subscription\":\"0x5a6d63526c55714a6242744c7057646e\",\"result\":{log}}}}}"
        ));
        logs.push(log);
    }
    write("events", "generated.hex", &encoded);
    write("logs", "generated.lines", &logs);
    frames.push(format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":41,\"result\":[{},{}]}}",
        logs[2], logs[8]
    ));
    frames.push(format!(
        "[{{\"jsonrpc\":\"2.0\",\"id\":42,\"result\":\"0x{}\"}},{{\"jsonrpc\":\"2.0\",\"id\":43,\"result\":\"0x{}\"}}]",
        hex::encode(vector_request().to_abi().abi_encode()),
        hex::encode(word(1)),
    ));
    write("frames", "generated.lines", &frames);

    // revert data: every custom error, and those with values
    let mut reverts = vec![
        "# every custom error's selector, then errors with values; by fuzz::seeds".to_string(),
    ];
    // (The ERC-20 errors are named only with their values, below.)
    let selectors = Marketplace::MarketplaceErrors::SELECTORS
        .iter()
        .chain(Vault::VaultErrors::SELECTORS);
    reverts.extend(selectors.map(hex::encode));
    reverts.push(hex::encode(
        Revert::from("Marketplace: not enough funds").abi_encode(),
    ));
    reverts.push(hex::encode(Panic::from(0x11u64).abi_encode()));
    reverts.push(hex::encode(
        IERC20::ERC20InsufficientAllowance {
            spender: "0xa85233c63b9ee964add6f2cffe00fd84eb32338f"
                .parse()
                .unwrap(),
            allowance: U256::ZERO,
            needed: U256::from(3u64 * 86_400 * 1000 * 1_048_576),
        }
        .abi_encode(),
    ));
    reverts.push(hex::encode(
        IERC20::ERC20InsufficientBalance {
            sender: Address::repeat_byte(0x70),
            balance: U256::from(5u8),
            needed: U256::MAX,
        }
        .abi_encode(),
    ));
    write("revert-data", "generated.hex", &reverts);

    // views: index byte, return data
    let mut views = vec![
        "# view index (1 byte, fuzz::targets::VIEWS order), return data; by fuzz::seeds"
            .to_string(),
    ];
    for (i, name) in view_names().enumerate() {
        for data in view_results(name) {
            views.push(format!("{:02x}{}", i, hex::encode(data)));
        }
    }
    write("views", "generated.hex", &views);
}
