//! The recorded `eth_subscription` frames in `fixtures/frames/`.
//!
//! - `anvil-storage-requested.txt`: one frame captured from anvil 1.7.1 (a real
//!   `requestStorage` on the dev chain).
//! - `storage-requested-1000.txt`: 1,000 `StorageRequested` notifications, one frame per line,
//!   generated here from a seeded RNG in exactly anvil's layout (field order, lowercase hex,
//!   `blockTimestamp`). The generator is checked against the captured frame byte for byte.
//!   Regenerate with `CODEX_REGEN_FIXTURES=1 cargo test --test chain market_frames::`.
//!
//! Used by `benches/decode.rs`.

use std::path::PathBuf;

use alloy_primitives::{hex, keccak256, Address, B256, U256};
use codex::market::events::{decode_log, encode_event, parse_log_notification};
use codex::market::{Ask, MarketEvent, RequestId};

const GENERATED: &str = "storage-requested-1000.txt";
const COUNT: usize = 1000;

fn frames_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/frames")
}

/// What one log notification carries.
struct Frame {
    subscription: String,
    address: Address,
    topics: Vec<B256>,
    data: Vec<u8>,
    block_hash: B256,
    block_number: u64,
    block_timestamp: u64,
    transaction_hash: B256,
    transaction_index: u64,
    log_index: u64,
}

/// Writes a frame the way anvil 1.7.1 does.
fn anvil_frame(f: &Frame) -> String {
    let topics: Vec<String> = f.topics.iter().map(|t| format!("\"{t:#x}\"")).collect();
    format!(
        concat!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"eth_subscription\",\"params\":{{",
            "\"subscription\":\"{}\",\"result\":{{",
            "\"address\":\"{:#x}\",\"topics\":[{}],\"data\":\"0x{}\",",
            "\"blockHash\":\"{:#x}\",\"blockNumber\":\"{:#x}\",\"blockTimestamp\":\"{:#x}\",",
            "\"transactionHash\":\"{:#x}\",\"transactionIndex\":\"{:#x}\",",
            "\"logIndex\":\"{:#x}\",\"removed\":false}}}}}}"
        ),
        f.subscription,
        f.address,
        topics.join(","),
        hex::encode(&f.data),
        f.block_hash,
        f.block_number,
        f.block_timestamp,
        f.transaction_hash,
        f.transaction_index,
        f.log_index,
    )
}

/// 1,000 StorageRequested frames on one subscription, 1 to 3 per block.
fn generate() -> String {
    let mut rng = fastrand::Rng::with_seed(0xC0DE_C0DE);
    let mut rand32 = || {
        let mut b = [0u8; 32];
        rng.fill(&mut b);
        B256::from(b)
    };
    let address: Address = "0xa85233C63b9Ee964Add6F2cffe00Fd84eb32338f"
        .parse()
        .unwrap();
    let subscription = "0x5a6d63526c55714a6242744c7057646e".to_string();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = String::new();
    let (mut block, mut time) = (300u64, 1_795_000_000u64);
    let mut left_in_block = 0;
    let mut log_index = 0;
    let mut block_hash = B256::ZERO;
    for i in 0..COUNT {
        if left_in_block == 0 {
            block += 1;
            time += rng.u64(1..13);
            left_in_block = rng.u64(1..4);
            log_index = 0;
            block_hash = keccak256(block.to_be_bytes());
        }
        left_in_block -= 1;
        let slot_size = 1u64 << rng.u32(16..31);
        let ask = Ask {
            proof_probability: U256::from(rng.u64(1..10)),
            price_per_byte_per_second: U256::from(rng.u64(1..1_000_000)),
            collateral_per_byte: U256::from(rng.u64(1..1_000_000)),
            slots: rng.u64(1..20),
            slot_size,
            duration: rng.u64(3_600..2_592_000),
            max_slot_loss: rng.u64(0..3),
        };
        let event = MarketEvent::StorageRequested {
            request_id: RequestId(keccak256((i as u64).to_be_bytes())),
            ask,
            expiry: time + rng.u64(60..3_600),
        };
        let (topics, data) = encode_event(&event);
        let frame = Frame {
            subscription: subscription.clone(),
            address,
            topics,
            data,
            block_hash,
            block_number: block,
            block_timestamp: time,
            transaction_hash: rand32(),
            transaction_index: log_index,
            log_index,
        };
        log_index += 1;
        out.push_str(&anvil_frame(&frame));
        out.push('\n');
    }
    out
}

#[test]
fn the_generator_writes_frames_exactly_as_anvil_does() {
    let recorded = std::fs::read_to_string(frames_dir().join("anvil-storage-requested.txt"))
        .expect("recorded frame");
    let recorded = recorded.trim_end();
    let n = parse_log_notification(recorded).unwrap();
    let v: serde_json::Value = serde_json::from_str(recorded).unwrap();
    let ts = v["params"]["result"]["blockTimestamp"].as_str().unwrap();
    let log = n.log;
    let frame = Frame {
        subscription: n.subscription,
        address: log.address,
        topics: log.topics.clone(),
        data: log.data.to_vec(),
        block_hash: log.block_hash.unwrap(),
        block_number: log.block_number.unwrap(),
        block_timestamp: u64::from_str_radix(&ts[2..], 16).unwrap(),
        transaction_hash: log.transaction_hash.unwrap(),
        transaction_index: log.transaction_index.unwrap(),
        log_index: log.log_index.unwrap(),
    };
    assert_eq!(anvil_frame(&frame), recorded);
}

#[test]
fn the_generated_frames_are_current_and_decode() {
    let path = frames_dir().join(GENERATED);
    let generated = generate();
    if std::env::var_os("CODEX_REGEN_FIXTURES").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path)
        .expect("fixtures/frames/storage-requested-1000.txt (CODEX_REGEN_FIXTURES=1 writes it)");
    assert!(
        on_disk == generated,
        "{} is stale: run CODEX_REGEN_FIXTURES=1 cargo test --test chain market_frames::",
        path.display()
    );
    let mut last = (0u64, 0u64);
    let mut count = 0;
    for line in on_disk.lines() {
        let d = decode_log(&parse_log_notification(line).unwrap().log).unwrap();
        assert!(matches!(d.event, MarketEvent::StorageRequested { .. }));
        let pos = (d.position.block_number, d.position.log_index);
        assert!(pos > last, "frames are in chain order");
        last = pos;
        count += 1;
    }
    assert_eq!(count, COUNT);
}
