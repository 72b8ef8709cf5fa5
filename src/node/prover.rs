//! Storage proofs: the interface the node calls when the chain challenges one of its slots,
//! and a simulated prover that stands in for a real Groth16 prover.
//!
//! When a slot is challenged in a proof period the Marketplace expects a Groth16 proof that
//! the host holds the cells the challenge selects. The node hands a [`ProofJob`] (the slot's
//! file, its size and index, the period's challenge and the dataset's Merkle root) to a
//! [`Prover`] on a worker thread and submits the returned proof. The trait keeps the node
//! independent of how proofs are made, so a real circuit-backed prover can replace the
//! simulation without touching the event loop.
//!
//! [`SimulatedProver`] does what a real prover does with the data, without the cryptography:
//! it reads the challenged cell ([`CELL_SIZE`] bytes, like a Codex cell) from the slot's file
//! and derives the proof's 8 words from a keccak256 digest of the challenge, the Merkle root,
//! the slot index and that cell. So a host that lost or corrupted its data fails to prove (a
//! missing or short file is an error) or proves something else, while the proof stays
//! deterministic for testing. The development chain's verifier accepts any proof but the
//! all-zero one, which the simulation never returns.
//!
//! Blocking file I/O: run it on a worker thread, not the event loop.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use alloy_primitives::{keccak256, B256, U256};

use crate::market::Groth16Proof;

/// Bytes per cell, the unit a challenge selects (Codex's cell size).
pub const CELL_SIZE: u64 = 2048;

/// What a prover needs to prove one slot for one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofJob {
    /// The slot's data file, exactly `slot_size` bytes.
    pub path: PathBuf,
    pub slot_size: u64,
    pub slot_index: u64,
    /// The proof period's challenge from the chain.
    pub challenge: B256,
    /// The request's `Content.merkleRoot`.
    pub merkle_root: B256,
}

/// Makes proofs. Shared by the worker threads.
pub trait Prover: Send + Sync {
    /// The proof that the slot's data in `job.path` is held, for `job.challenge`.
    fn prove(&self, job: &ProofJob) -> Result<Groth16Proof, ProofError>;
}

/// Why no proof could be made. Each is about the local copy of the slot's data: the host
/// cannot prove, and retrying does not help unless the data is fetched again.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The slot's file does not exist.
    #[error("cannot prove: slot data {} is missing", path.display())]
    Missing { path: PathBuf },
    /// The slot's file is shorter than the slot.
    #[error("cannot prove: slot data {} is truncated: {actual} bytes of the slot's {expected}", path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The slot's file is longer than the slot, so it is not this slot's data.
    #[error("cannot prove: slot data {} has {actual} bytes, more than the slot's {expected}", path.display())]
    TooLong {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// Opening or reading the file failed.
    #[error("cannot prove: reading slot data {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The number of cells in a slot: `ceil(slot_size / CELL_SIZE)`, at least 1.
pub fn cell_count(slot_size: u64) -> u64 {
    slot_size.div_ceil(CELL_SIZE).max(1)
}

/// The index of the cell a challenge selects: the challenge as a big-endian number modulo
/// [`cell_count`].
pub fn challenged_cell(challenge: &B256, slot_size: u64) -> u64 {
    let index = U256::from_be_bytes(challenge.0) % U256::from(cell_count(slot_size));
    // index < cell_count <= u64::MAX, so the lowest limb is all of it.
    index.as_limbs()[0]
}

/// A stand-in for a Groth16 prover; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedProver;

impl Prover for SimulatedProver {
    fn prove(&self, job: &ProofJob) -> Result<Groth16Proof, ProofError> {
        let cell = read_challenged_cell(job)?;
        let mut input = Vec::with_capacity(32 + 32 + 8 + cell.len());
        input.extend_from_slice(job.challenge.as_slice());
        input.extend_from_slice(job.merkle_root.as_slice());
        input.extend_from_slice(&job.slot_index.to_be_bytes());
        input.extend_from_slice(&cell);
        let digest = keccak256(&input);

        let mut words = [U256::ZERO; 8];
        for (i, word) in (0u8..).zip(words.iter_mut()) {
            let mut seed = [0u8; 33];
            seed[..32].copy_from_slice(digest.as_slice());
            seed[32] = i;
            *word = U256::from_be_bytes(keccak256(seed).0);
        }
        // Eight zero hashes will not happen, but the verifier's one rule must hold regardless.
        if words.iter().all(|w| w.is_zero()) {
            words[0] = U256::from(1);
        }
        Ok(Groth16Proof(words))
    }
}

/// Reads the challenged cell after checking that the file has exactly the slot's size. The
/// last cell of a slot whose size is not a multiple of [`CELL_SIZE`] is shorter.
fn read_challenged_cell(job: &ProofJob) -> Result<Vec<u8>, ProofError> {
    let io_error = |source| ProofError::Io {
        path: job.path.clone(),
        source,
    };
    let mut file = match File::open(&job.path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ProofError::Missing {
                path: job.path.clone(),
            })
        }
        Err(e) => return Err(io_error(e)),
    };
    let actual = file.metadata().map_err(io_error)?.len();
    if actual < job.slot_size {
        return Err(ProofError::Truncated {
            path: job.path.clone(),
            expected: job.slot_size,
            actual,
        });
    }
    if actual > job.slot_size {
        return Err(ProofError::TooLong {
            path: job.path.clone(),
            expected: job.slot_size,
            actual,
        });
    }
    // index < cell_count, so offset < slot_size (or 0 for an empty slot): no overflow.
    let offset = challenged_cell(&job.challenge, job.slot_size) * CELL_SIZE;
    let len = (job.slot_size - offset).min(CELL_SIZE);
    // len <= CELL_SIZE, so the cast is lossless.
    let mut cell = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
    file.read_exact(&mut cell).map_err(io_error)?;
    Ok(cell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    /// Five full cells and a short sixth.
    const SLOT_SIZE: u64 = 5 * CELL_SIZE + 100;

    fn write_slot(dir: &Path) -> PathBuf {
        let path = dir.join("slot");
        let data: Vec<u8> = (0..SLOT_SIZE).map(|i| (i % 251) as u8).collect();
        fs::write(&path, data).expect("write slot");
        path
    }

    fn job(path: PathBuf, challenge: u64) -> ProofJob {
        ProofJob {
            path,
            slot_size: SLOT_SIZE,
            slot_index: 2,
            challenge: B256::from(U256::from(challenge)),
            merkle_root: B256::repeat_byte(0x33),
        }
    }

    fn flip_byte(path: &Path, at: u64) {
        let mut data = fs::read(path).expect("read");
        data[at as usize] ^= 0xff;
        fs::write(path, data).expect("write");
    }

    #[test]
    fn challenge_selects_a_cell_modulo_the_cell_count() {
        assert_eq!(cell_count(0), 1);
        assert_eq!(cell_count(1), 1);
        assert_eq!(cell_count(CELL_SIZE), 1);
        assert_eq!(cell_count(SLOT_SIZE), 6);
        assert_eq!(challenged_cell(&B256::from(U256::from(13)), SLOT_SIZE), 1);
        assert_eq!(
            challenged_cell(&B256::repeat_byte(0xff), SLOT_SIZE),
            (U256::MAX % U256::from(6)).as_limbs()[0]
        );
    }

    #[test]
    fn proofs_are_deterministic_and_non_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_slot(dir.path());
        let a = SimulatedProver.prove(&job(path.clone(), 7)).expect("prove");
        let b = SimulatedProver.prove(&job(path.clone(), 7)).expect("prove");
        assert_eq!(a, b);
        assert!(!a.is_zero());
        assert!(a.0.iter().all(|w| !w.is_zero()));

        let other_challenge = SimulatedProver.prove(&job(path.clone(), 8)).expect("prove");
        assert_ne!(a, other_challenge);
        let mut other_root = job(path.clone(), 7);
        other_root.merkle_root = B256::repeat_byte(0x34);
        assert_ne!(a, SimulatedProver.prove(&other_root).expect("prove"));
        let mut other_slot = job(path, 7);
        other_slot.slot_index = 3;
        assert_ne!(a, SimulatedProver.prove(&other_slot).expect("prove"));
    }

    #[test]
    fn proof_depends_on_the_challenged_cell_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_slot(dir.path());
        // Challenge 5 selects the short last cell, 2 a full one in the middle.
        for challenge in [2, 5] {
            let job = job(path.clone(), challenge);
            let cell = challenged_cell(&job.challenge, SLOT_SIZE);
            assert_eq!(cell, challenge);
            let before = SimulatedProver.prove(&job).expect("prove");

            let other_cell = (cell + 1) % cell_count(SLOT_SIZE);
            flip_byte(&path, other_cell * CELL_SIZE + 10);
            assert_eq!(SimulatedProver.prove(&job).expect("prove"), before);

            let last_byte_of_cell = (cell * CELL_SIZE + CELL_SIZE).min(SLOT_SIZE) - 1;
            flip_byte(&path, last_byte_of_cell);
            assert_ne!(SimulatedProver.prove(&job).expect("prove"), before);
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent");
        let err = SimulatedProver.prove(&job(path.clone(), 1)).unwrap_err();
        assert!(matches!(err, ProofError::Missing { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_file_of_the_wrong_size_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_slot(dir.path());
        let mut data = fs::read(&path).expect("read");

        data.pop();
        fs::write(&path, &data).expect("write");
        let err = SimulatedProver.prove(&job(path.clone(), 1)).unwrap_err();
        assert!(
            matches!(err, ProofError::Truncated { expected: SLOT_SIZE, actual, .. } if actual == SLOT_SIZE - 1),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        data.extend_from_slice(&[0, 0]);
        fs::write(&path, &data).expect("write");
        let err = SimulatedProver.prove(&job(path, 1)).unwrap_err();
        assert!(matches!(err, ProofError::TooLong { .. }), "{err:?}");
    }

    #[test]
    fn an_empty_slot_proves_from_its_one_empty_cell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty");
        fs::write(&path, b"").expect("write");
        let mut job = job(path, 12345);
        job.slot_size = 0;
        assert!(!SimulatedProver.prove(&job).expect("prove").is_zero());
    }
}
