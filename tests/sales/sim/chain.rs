//! The simulated chain: blocks with number, timestamp and a hash derived from a seed, the
//! pending block that transactions execute in, and the log of emitted Marketplace events.

use codex::market::{keccak256, MarketEvent, B256};

/// Blocks whose hash and challenge are cached (the EVM's `blockhash` reaches 256 back; this
/// covers both `latest` and `pending` execution).
const RING: usize = 512;

/// A mined block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    /// Block number.
    pub number: u64,
    /// Block timestamp (chain time, seconds since the Unix epoch).
    pub timestamp: u64,
    /// Block hash (deterministic from the chain seed and the number).
    pub hash: B256,
}

/// One emitted event with its position on the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Number of the block that contains the event.
    pub block_number: u64,
    /// Timestamp of that block.
    pub block_timestamp: u64,
    /// Position of the log within its block.
    pub log_index: u64,
    /// The decoded event.
    pub event: MarketEvent,
}

/// A mined block together with the events it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block header.
    pub header: BlockHeader,
    /// Events emitted by the transactions of this block, in order.
    pub logs: Vec<Log>,
}

/// Which block a view call executes in (`eth_call` block tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTag {
    /// `latest`: block.number = latest, block.timestamp = latest timestamp.
    Latest,
    /// `pending`: block.number = latest + 1, block.timestamp = the next block's timestamp.
    /// Transactions execute here too; nim-codex makes its proof queries with `pending`.
    Pending,
}

/// The execution environment of a call: the block it runs in, and the chain for `blockhash`.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// `block.number`.
    pub number: u64,
    /// `block.timestamp`.
    pub timestamp: u64,
    chain: &'a Chain,
}

impl Ctx<'_> {
    /// keccak256 of the hash of block `m` (the proof challenge that block yields), or `None`
    /// when `blockhash(m)` is zero in this block (m not among the previous 256 blocks).
    pub fn block_challenge(&self, m: u64) -> Option<B256> {
        if m >= self.number || self.number - m > 256 {
            return None;
        }
        Some(self.chain.challenge_of(m))
    }
}

/// The block producer and event log.
#[derive(Debug, Clone)]
pub struct Chain {
    seed: u64,
    latest: BlockHeader,
    next_timestamp: u64,
    block_time: u64,
    /// (number, hash, keccak(hash)) of recent blocks at index number % RING.
    ring: Vec<(u64, B256, B256)>,
    pending: Vec<MarketEvent>,
    history: Vec<Log>,
    keep_history: bool,
}

impl Chain {
    /// A chain whose latest block is `genesis_number` at `genesis_timestamp`; every mined
    /// block is `block_time` seconds after the previous one unless time is advanced.
    /// `genesis_number` must be above 256, as the Proofs constructor requires.
    pub fn new(seed: u64, genesis_number: u64, genesis_timestamp: u64, block_time: u64) -> Chain {
        assert!(
            genesis_number > 256,
            "the Marketplace needs a chain height above 256"
        );
        let mut chain = Chain {
            seed,
            latest: BlockHeader {
                number: genesis_number,
                timestamp: genesis_timestamp,
                hash: hash_of(seed, genesis_number),
            },
            next_timestamp: genesis_timestamp + block_time,
            block_time,
            ring: vec![(u64::MAX, B256::ZERO, B256::ZERO); RING],
            pending: Vec::new(),
            history: Vec::new(),
            keep_history: true,
        };
        for m in genesis_number.saturating_sub(RING as u64 - 1)..=genesis_number {
            chain.cache(m);
        }
        chain
    }

    fn cache(&mut self, m: u64) {
        let h = hash_of(self.seed, m);
        self.ring[(m % RING as u64) as usize] = (m, h, keccak256(h));
    }

    /// Whether mined logs are kept for [`Chain::logs`] (on by default; a soak may turn it off).
    pub fn set_keep_history(&mut self, keep: bool) {
        self.keep_history = keep;
    }

    /// The hash of block `m` (defined for every number; the EVM only exposes recent ones).
    pub fn block_hash(&self, m: u64) -> B256 {
        let e = self.ring[(m % RING as u64) as usize];
        if e.0 == m {
            e.1
        } else {
            hash_of(self.seed, m)
        }
    }

    /// keccak256 of the hash of block `m`.
    pub fn challenge_of(&self, m: u64) -> B256 {
        let e = self.ring[(m % RING as u64) as usize];
        if e.0 == m {
            e.2
        } else {
            keccak256(hash_of(self.seed, m))
        }
    }

    /// The latest mined block.
    pub fn latest(&self) -> BlockHeader {
        self.latest
    }

    /// Chain time: the latest block's timestamp.
    pub fn now(&self) -> u64 {
        self.latest.timestamp
    }

    /// The timestamp the next block (the pending one) will have.
    pub fn pending_timestamp(&self) -> u64 {
        self.next_timestamp
    }

    /// Seconds between blocks when time is not advanced explicitly.
    pub fn block_time(&self) -> u64 {
        self.block_time
    }

    /// Changes the block interval; the pending block keeps its timestamp.
    pub fn set_block_time(&mut self, secs: u64) {
        self.block_time = secs;
    }

    /// Moves the pending block's timestamp `secs` forward (like `evm_increaseTime`).
    pub fn advance_time(&mut self, secs: u64) {
        self.next_timestamp += secs;
    }

    /// Sets the pending block's timestamp (like `evm_setNextBlockTimestamp`). It may equal the
    /// latest timestamp (anvil allows blocks with the same timestamp) but not go back.
    pub fn set_next_timestamp(&mut self, t: u64) {
        assert!(
            t >= self.latest.timestamp,
            "next timestamp {t} is before the latest block's {}",
            self.latest.timestamp
        );
        self.next_timestamp = t;
    }

    /// The execution environment for `tag`.
    pub fn ctx(&self, tag: BlockTag) -> Ctx<'_> {
        match tag {
            BlockTag::Latest => Ctx {
                number: self.latest.number,
                timestamp: self.latest.timestamp,
                chain: self,
            },
            BlockTag::Pending => Ctx {
                number: self.latest.number + 1,
                timestamp: self.next_timestamp,
                chain: self,
            },
        }
    }

    /// Adds the events of a successful transaction to the pending block.
    pub fn emit(&mut self, events: Vec<MarketEvent>) {
        self.pending.extend(events);
    }

    /// Events of the pending block so far.
    pub fn pending_events(&self) -> &[MarketEvent] {
        &self.pending
    }

    /// Seals the pending block and returns it with its logs. The next pending block is
    /// `block_time` seconds later.
    pub fn mine(&mut self) -> Block {
        let number = self.latest.number + 1;
        let timestamp = self.next_timestamp;
        self.cache(number);
        let header = BlockHeader {
            number,
            timestamp,
            hash: self.block_hash(number),
        };
        self.latest = header;
        self.next_timestamp = timestamp + self.block_time;
        let logs: Vec<Log> = self
            .pending
            .drain(..)
            .enumerate()
            .map(|(i, event)| Log {
                block_number: number,
                block_timestamp: timestamp,
                log_index: i as u64,
                event,
            })
            .collect();
        if self.keep_history {
            self.history.extend(logs.iter().cloned());
        }
        Block { header, logs }
    }

    /// Kept logs of blocks `from..=to` (like `eth_getLogs`), in chain order.
    pub fn logs(&self, from: u64, to: u64) -> &[Log] {
        let lo = self.history.partition_point(|l| l.block_number < from);
        let hi = self.history.partition_point(|l| l.block_number <= to);
        &self.history[lo..hi.max(lo)]
    }
}

/// The hash of block `number` on a chain with `seed`.
pub fn hash_of(seed: u64, number: u64) -> B256 {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(b"sim-blk:");
    buf[8..16].copy_from_slice(&seed.to_be_bytes());
    buf[16..].copy_from_slice(&number.to_be_bytes());
    keccak256(buf)
}
