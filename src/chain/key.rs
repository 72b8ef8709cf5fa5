//! The Ethereum private key given with `--eth-private-key FILE`.
//!
//! Invariants:
//! - The file is refused unless only its owner can read or write it (mode & 0o077 == 0 on
//!   Unix), with the reference's message "Ethereum private key file does not have safe file
//!   permissions" and the file name.
//! - The key never appears in `Debug`, `Display`, logs or errors: [`EthPrivateKey`] prints
//!   as `EthPrivateKey(<redacted>)` and errors name the file, never its contents.
//!
//! [`EthPrivateKey::load`] reads the file; everything else is pure.

use std::fmt;
use std::path::{Path, PathBuf};

use alloy_primitives::{keccak256, Address, B256};
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};

/// Why `--eth-private-key FILE` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Group or others may access the file.
    #[error("Ethereum private key file does not have safe file permissions: {}", .0.display())]
    UnsafePermissions(PathBuf),
    /// The file could not be read (or its metadata could not be read).
    #[error("cannot read Ethereum private key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The contents are not a valid secp256k1 private key in hex. The contents are never
    /// included in the message.
    #[error(
        "Ethereum private key file {} does not hold a private key: expected 64 hex digits \
         (optionally 0x-prefixed) of a valid secp256k1 key",
        .0.display()
    )]
    Invalid(PathBuf),
}

/// A secp256k1 signing key. `Debug` is redacted; there is no `Display`.
#[derive(Clone)]
pub struct EthPrivateKey {
    key: SigningKey,
    address: Address,
}

impl fmt::Debug for EthPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EthPrivateKey(<redacted>)")
    }
}

/// Parses hex text (optional `0x`, surrounding whitespace) into 32 bytes.
fn parse_key_hex(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let h = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    alloy_primitives::hex::decode_to_slice(h, &mut out).ok()?;
    Some(out)
}

impl EthPrivateKey {
    /// Reads the key from `path`, refusing files that group or others may access.
    pub fn load(path: &Path) -> Result<EthPrivateKey, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(KeyError::UnsafePermissions(path.to_path_buf()));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let mut text = std::fs::read(path).map_err(read_err)?;
        let key = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| EthPrivateKey::from_hex(t).ok());
        // Best effort: do not leave the key text in freed memory.
        text.iter_mut().for_each(|b| *b = 0);
        key.ok_or_else(|| KeyError::Invalid(path.to_path_buf()))
    }

    /// Parses a key from hex text: 64 hex digits, optionally `0x`-prefixed, surrounding
    /// whitespace and newlines allowed. The error says nothing about the text.
    pub fn from_hex(text: &str) -> Result<EthPrivateKey, InvalidKey> {
        let mut bytes = parse_key_hex(text).ok_or(InvalidKey)?;
        let key = SigningKey::from_slice(&bytes).map_err(|_| InvalidKey);
        bytes.iter_mut().for_each(|b| *b = 0);
        Ok(EthPrivateKey::from_signing_key(key?))
    }

    /// Wraps a k256 signing key.
    pub fn from_signing_key(key: SigningKey) -> EthPrivateKey {
        let address = address_of(key.verifying_key());
        EthPrivateKey { key, address }
    }

    /// The account address: the last 20 bytes of keccak256 of the uncompressed public key
    /// (without its 0x04 prefix).
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a 32-byte hash (RFC 6979 deterministic nonce), returning a low-s signature and
    /// the y-parity of the signature point.
    pub fn sign_hash(&self, hash: &B256) -> Result<(Signature, bool), SignError> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|_| SignError)?;
        let mut parity = recid.is_y_odd();
        let sig = match sig.normalize_s() {
            Some(low) => {
                parity = !parity;
                low
            }
            None => sig,
        };
        Ok((sig, parity))
    }
}

/// Key text that is not a valid key (deliberately without detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid secp256k1 private key in hex")]
pub struct InvalidKey;

/// Signing failed (k256 reported an error; does not happen for valid keys and hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

/// The address of a public key.
pub fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    Address::from_slice(&hash[12..])
}

/// The address that signed `hash` with (`sig`, `y_parity`), or `None` when the signature
/// does not recover.
pub fn recover_address(hash: &B256, sig: &Signature, y_parity: bool) -> Option<Address> {
    let recid = RecoveryId::new(y_parity, false);
    VerifyingKey::recover_from_prehash(hash.as_slice(), sig, recid)
        .ok()
        .map(|k| address_of(&k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Anvil's (and hardhat's) well-known account 0.
    const ANVIL0_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const ANVIL0_ADDR: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

    fn key_file(contents: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        f
    }

    #[test]
    fn derives_the_well_known_address() {
        let k = EthPrivateKey::from_hex(ANVIL0_KEY).unwrap();
        assert_eq!(k.address(), ANVIL0_ADDR.parse::<Address>().unwrap());
    }

    #[test]
    fn loads_hex_with_prefix_and_whitespace_from_an_owner_only_file() {
        for text in [
            format!("0x{ANVIL0_KEY}\n"),
            format!("  {ANVIL0_KEY}  \r\n"),
            ANVIL0_KEY.to_uppercase(),
        ] {
            let f = key_file(&text, 0o600);
            let k = EthPrivateKey::load(f.path()).unwrap();
            assert_eq!(k.address(), ANVIL0_ADDR.parse::<Address>().unwrap());
        }
        let f = key_file(ANVIL0_KEY, 0o400);
        assert!(EthPrivateKey::load(f.path()).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_files_others_can_access() {
        for mode in [0o640, 0o604, 0o644, 0o660, 0o700 | 0o001] {
            let f = key_file(ANVIL0_KEY, mode);
            let e = EthPrivateKey::load(f.path()).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, KeyError::UnsafePermissions(_)), "{mode:o}");
            assert!(
                msg.starts_with("Ethereum private key file does not have safe file permissions")
            );
            assert!(msg.contains(&f.path().display().to_string()));
            assert!(!msg.contains(ANVIL0_KEY));
        }
    }

    #[test]
    fn bad_contents_are_named_by_file_without_the_contents() {
        let secretish = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ffzz";
        for text in [
            secretish,
            "",
            "0x",
            &ANVIL0_KEY[..62],
            "0000000000000000000000000000000000000000000000000000000000000000",
            // the curve order n is not a valid key
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
        ] {
            let f = key_file(text, 0o600);
            let e = EthPrivateKey::load(f.path()).unwrap_err();
            assert!(matches!(e, KeyError::Invalid(_)));
            let msg = e.to_string();
            assert!(msg.contains(&f.path().display().to_string()));
            if !text.is_empty() && text != "0x" {
                assert!(!msg.contains(text));
                assert!(!format!("{e:?}").contains(text));
            }
        }
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope");
        let e = EthPrivateKey::load(&p).unwrap_err();
        assert!(matches!(e, KeyError::Read { .. }));
        assert!(e.to_string().contains("nope"));
    }

    #[test]
    fn debug_is_redacted() {
        let k = EthPrivateKey::from_hex(ANVIL0_KEY).unwrap();
        let d = format!("{k:?} {:?}", Some(&k));
        assert!(d.contains("<redacted>"));
        assert!(!d.to_lowercase().contains("ac0974"));
        assert!(!d.contains(&ANVIL0_KEY[10..30]));
    }

    #[test]
    fn signatures_recover_to_the_address_and_are_low_s() {
        let k = EthPrivateKey::from_hex(ANVIL0_KEY).unwrap();
        for i in 0u8..16 {
            let h = keccak256([i]);
            let (sig, parity) = k.sign_hash(&h).unwrap();
            assert!(sig.normalize_s().is_none(), "high s");
            assert_eq!(recover_address(&h, &sig, parity), Some(k.address()));
            assert_ne!(recover_address(&h, &sig, !parity), Some(k.address()));
        }
    }
}
