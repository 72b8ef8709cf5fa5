//! CIDs as users type them, turned into the binary CID a request carries in `Content.cid`
//! (nim-codex puts the raw CID bytes there; `docs/marketplace.md#ids`).
//!
//! Accepted: a multibase CIDv1 string as Codex prints it, base58btc (`z…`, e.g. `zDvZRwzm…`)
//! or base32 lowercase (`b…`), whose bytes must parse as a CIDv1 (version 1, codec, and a
//! multihash whose length matches); or raw bytes as `0x`-hex (not checked, so tests can use
//! any non-empty bytes). Anything else is an error naming the value.
//!
//! Pure.

use alloy_primitives::hex;

/// A string that is not a CID this module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    /// Neither `z…`, `b…` nor `0x…`.
    #[error("invalid CID {0:?}: expected a base58btc (z…) or base32 (b…) CIDv1, or 0x-hex bytes")]
    UnsupportedFormat(String),
    /// The multibase text has a character outside its alphabet.
    #[error("invalid CID {0:?}: not valid {1}")]
    BadEncoding(String, &'static str),
    /// The decoded bytes are not a CIDv1.
    #[error("invalid CID {0:?}: {1}")]
    NotACidV1(String, &'static str),
    /// `0x` with no bytes, or odd or non-hex digits.
    #[error("invalid CID {0:?}: 0x-hex must be a non-empty, even number of hex digits")]
    BadHex(String),
}

/// Parses a CID as Codex prints it (or `0x`-hex bytes) into its binary form.
pub fn parse_cid(input: &str) -> Result<Vec<u8>, CidError> {
    let s = input.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return match hex::decode(h) {
            Ok(b) if !b.is_empty() => Ok(b),
            _ => Err(CidError::BadHex(input.to_string())),
        };
    }
    let bytes = if let Some(rest) = s.strip_prefix('z') {
        bs58::decode(rest)
            .into_vec()
            .map_err(|_| CidError::BadEncoding(input.to_string(), "base58btc"))?
    } else if let Some(rest) = s.strip_prefix('b') {
        base32_decode(rest).ok_or_else(|| CidError::BadEncoding(input.to_string(), "base32"))?
    } else {
        return Err(CidError::UnsupportedFormat(input.to_string()));
    };
    check_cid_v1(&bytes).map_err(|why| CidError::NotACidV1(input.to_string(), why))?;
    Ok(bytes)
}

/// The base58btc multibase form (`z…`) of binary CID bytes, as Codex prints CIDs.
pub fn format_cid(bytes: &[u8]) -> String {
    format!("z{}", bs58::encode(bytes).into_string())
}

/// Reads an unsigned LEB128 varint (at most 9 bytes, as multiformats allow).
fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Checks `<version=1><codec><multihash code><digest length><digest>` with nothing after.
fn check_cid_v1(bytes: &[u8]) -> Result<(), &'static str> {
    let mut pos = 0;
    match read_varint(bytes, &mut pos) {
        Some(1) => {}
        Some(_) => return Err("not a version 1 CID"),
        None => return Err("truncated CID"),
    }
    read_varint(bytes, &mut pos).ok_or("truncated CID codec")?;
    read_varint(bytes, &mut pos).ok_or("truncated multihash code")?;
    let len = read_varint(bytes, &mut pos).ok_or("truncated multihash length")?;
    let rest = (bytes.len() - pos) as u64;
    if len == 0 || rest != len {
        return Err("multihash length does not match its digest");
    }
    Ok(())
}

/// RFC 4648 base32, lowercase alphabet, no padding (multibase `b`). `None` on any character
/// outside the alphabet or non-zero trailing bits.
fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 5 || acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Codex manifest CID: version 1, codec 0xcd01 (codex-manifest), sha2-256 multihash.
    fn manifest_cid() -> Vec<u8> {
        let mut b = vec![0x01, 0x81, 0x9a, 0x03, 0x12, 0x20];
        b.extend((0u8..32).map(|i| i.wrapping_mul(37)));
        b
    }

    fn base32_encode(bytes: &[u8]) -> String {
        const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut out = String::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for &b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(A[((acc >> bits) & 31) as usize] as char);
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
        }
        out
    }

    #[test]
    fn codex_style_base58_cids_parse() {
        let cid = manifest_cid();
        let text = format_cid(&cid);
        assert!(text.starts_with("zDvZRwz"), "{text}");
        assert_eq!(parse_cid(&text).unwrap(), cid);
        assert_eq!(parse_cid(&format!("  {text}\n")).unwrap(), cid);
    }

    #[test]
    fn base32_cids_parse() {
        let cid = manifest_cid();
        let text = format!("b{}", base32_encode(&cid));
        assert_eq!(parse_cid(&text).unwrap(), cid);
        // the well-known base32 CIDv1 of the empty dag-pb directory… shape: bafy…
        let bafy = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let b = parse_cid(bafy).unwrap();
        assert_eq!(&b[..4], &[0x01, 0x70, 0x12, 0x20]);
        assert_eq!(b.len(), 36);
    }

    #[test]
    fn hex_bytes_are_taken_as_they_are() {
        assert_eq!(parse_cid("0x0102ff").unwrap(), vec![1, 2, 0xff]);
        assert!(matches!(parse_cid("0x"), Err(CidError::BadHex(_))));
        assert!(matches!(parse_cid("0x123"), Err(CidError::BadHex(_))));
        assert!(matches!(parse_cid("0xzz"), Err(CidError::BadHex(_))));
    }

    #[test]
    fn everything_else_is_refused_with_the_value_named() {
        let e = parse_cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG").unwrap_err();
        assert!(matches!(e, CidError::UnsupportedFormat(_)));
        assert!(e.to_string().contains("QmYwAPJz"));
        assert!(matches!(parse_cid(""), Err(CidError::UnsupportedFormat(_))));
        assert!(matches!(
            parse_cid("z0OIl"),
            Err(CidError::BadEncoding(_, "base58btc"))
        ));
        assert!(matches!(
            parse_cid("bAFY"),
            Err(CidError::BadEncoding(_, "base32"))
        ));
        // valid base58, but not a CIDv1
        let not_v1 = format_cid(&[0x02, 0x55, 0x12, 0x01, 0xaa]);
        assert!(matches!(parse_cid(&not_v1), Err(CidError::NotACidV1(..))));
        let mut short = manifest_cid();
        short.pop();
        assert!(matches!(
            parse_cid(&format_cid(&short)),
            Err(CidError::NotACidV1(..))
        ));
    }

    proptest! {
        #[test]
        fn random_strings_never_panic(s in "\\PC{0,80}") {
            let _ = parse_cid(&s);
            let _ = parse_cid(&format!("z{s}"));
            let _ = parse_cid(&format!("b{s}"));
        }

        #[test]
        fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(base32_decode(&base32_encode(&bytes)), Some(bytes));
        }
    }
}
