//! Quantities as people write them: sizes (`1073741824`, `500MiB`, `1GB`, `2TiB`),
//! durations (`90s`, `12h`, `30d`, `2w`, `1d12h`) and 256-bit token amounts (decimal
//! integers up to 2^256 − 1). Each parser refuses negatives, fractions and overflow with an
//! error that names the offending text. The formatters produce text the parsers read back.

use alloy_primitives::U256;

/// A quantity that could not be parsed. The payload is the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Nothing was given.
    #[error("empty {0}")]
    Empty(&'static str),
    /// A leading minus sign.
    #[error("negative {kind} {text:?}: must be zero or more")]
    Negative { kind: &'static str, text: String },
    /// A decimal point.
    #[error("{kind} {text:?} is not a whole number")]
    Fraction { kind: &'static str, text: String },
    /// Not digits followed by a known unit.
    #[error("invalid {kind} {text:?}: expected {expected}")]
    Malformed {
        kind: &'static str,
        text: String,
        expected: &'static str,
    },
    /// More than the type holds.
    #[error("{kind} {text:?} is too large: the maximum is {max}")]
    Overflow {
        kind: &'static str,
        text: String,
        max: &'static str,
    },
}

const SIZE_EXPECTED: &str =
    "a number of bytes, optionally with a unit: B, KB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024), e.g. 500MiB";
const DURATION_EXPECTED: &str =
    "seconds, or numbers with units s, m, h, d, w, e.g. 90s, 12h, 30d, 2w, 1d12h";
const AMOUNT_EXPECTED: &str = "a decimal integer, e.g. 1000000";

fn common_checks(kind: &'static str, s: &str) -> Result<(), UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Empty(kind));
    }
    if t.starts_with('-') {
        return Err(UnitError::Negative {
            kind,
            text: s.to_string(),
        });
    }
    if t.contains('.') || t.contains(',') {
        return Err(UnitError::Fraction {
            kind,
            text: s.to_string(),
        });
    }
    Ok(())
}

fn size_multiplier(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        _ => return None,
    })
}

/// Parses a size in bytes: digits and an optional unit (see the module docs).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    const KIND: &str = "size";
    common_checks(KIND, s)?;
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let malformed = || UnitError::Malformed {
        kind: KIND,
        text: s.to_string(),
        expected: SIZE_EXPECTED,
    };
    if num.is_empty() {
        return Err(malformed());
    }
    let mult = size_multiplier(unit.trim()).ok_or_else(malformed)?;
    let overflow = || UnitError::Overflow {
        kind: KIND,
        text: s.to_string(),
        max: "18446744073709551615 bytes (16EiB − 1)",
    };
    let n: u64 = num.parse().map_err(|_| overflow())?;
    n.checked_mul(mult).ok_or_else(overflow)
}

/// Parses a duration in seconds: a plain number of seconds, or one or more
/// number-unit pairs (`s`, `m`, `h`, `d`, `w`), e.g. `1d12h`.
pub fn parse_duration(s: &str) -> Result<u64, UnitError> {
    const KIND: &str = "duration";
    common_checks(KIND, s)?;
    let t = s.trim();
    let malformed = || UnitError::Malformed {
        kind: KIND,
        text: s.to_string(),
        expected: DURATION_EXPECTED,
    };
    let overflow = || UnitError::Overflow {
        kind: KIND,
        text: s.to_string(),
        max: "18446744073709551615 seconds",
    };
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| overflow());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(malformed());
        }
        let n: u64 = rest[..digits_end].parse().map_err(|_| overflow())?;
        let after = &rest[digits_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let mult: u64 = match &after[..unit_end] {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(malformed()),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(overflow)?;
        rest = &after[unit_end..];
    }
    Ok(total)
}

/// Parses a token amount: a decimal integer from 0 to 2^256 − 1.
pub fn parse_amount(s: &str) -> Result<U256, UnitError> {
    const KIND: &str = "amount";
    common_checks(KIND, s)?;
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::Malformed {
            kind: KIND,
            text: s.to_string(),
            expected: AMOUNT_EXPECTED,
        });
    }
    U256::from_str_radix(t, 10).map_err(|_| UnitError::Overflow {
        kind: KIND,
        text: s.to_string(),
        max: "2^256 − 1",
    })
}

/// Parses unix seconds (`until`): a non-negative integer. A negative value gets the
/// reference's message "Cannot set until to a negative value".
pub fn parse_unix_seconds(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("Cannot set until to a negative value: {s}"));
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid unix time {s:?}: expected seconds since 1970-01-01 as a whole number"
        ));
    }
    t.parse()
        .map_err(|_| format!("unix time {s:?} is too large: the maximum is 18446744073709551615"))
}

/// Formats a size exactly, in the largest binary unit that divides it (`500MiB`),
/// else in bytes.
pub fn format_size(n: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (u, m) in UNITS {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{u}", n / m);
        }
    }
    n.to_string()
}

/// Formats a duration exactly, in the largest unit that divides it (`30d`), else seconds.
pub fn format_duration(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)];
    for (u, m) in UNITS {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{u}", n / m);
        }
    }
    format!("{n}s")
}

/// The same as [`parse_size`], with a `String` error, for `argh(from_str_fn)`.
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}
/// The same as [`parse_duration`], with a `String` error, for `argh(from_str_fn)`.
pub fn duration_arg(s: &str) -> Result<u64, String> {
    parse_duration(s).map_err(|e| e.to_string())
}
/// The same as [`parse_amount`], with a `String` error, for `argh(from_str_fn)`.
pub fn amount_arg(s: &str) -> Result<U256, String> {
    parse_amount(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("8gib"), Ok(8 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(
            parse_size("16384PiB"),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(parse_size("-1"), Err(UnitError::Negative { .. })));
        assert!(matches!(
            parse_size("1.5GiB"),
            Err(UnitError::Fraction { .. })
        ));
        assert!(matches!(
            parse_size("lots"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("5XB"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(parse_size(""), Err(UnitError::Empty(_))));
        let e = parse_size("5XB").unwrap_err().to_string();
        assert!(e.contains("\"5XB\""), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("30d"), Ok(2_592_000));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        assert!(matches!(
            parse_duration("-5s"),
            Err(UnitError::Negative { .. })
        ));
        assert!(matches!(
            parse_duration("5y"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999w"),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("30000000000000000w"),
            Err(UnitError::Overflow { .. })
        ));
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("0"), Ok(U256::ZERO));
        assert_eq!(parse_amount("1000"), Ok(U256::from(1000)));
        let max = U256::MAX.to_string();
        assert_eq!(parse_amount(&max), Ok(U256::MAX));
        // 2^256
        let e = parse_amount(
            "115792089237316195423570985008687907853269984665640564039457584007913129639936",
        );
        assert!(matches!(e, Err(UnitError::Overflow { .. })), "{e:?}");
        assert!(matches!(
            parse_amount("-1"),
            Err(UnitError::Negative { .. })
        ));
        assert!(matches!(
            parse_amount("1.5"),
            Err(UnitError::Fraction { .. })
        ));
        assert!(matches!(
            parse_amount("1e18"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_amount("0x10"),
            Err(UnitError::Malformed { .. })
        ));
    }

    #[test]
    fn formatting_round_trips() {
        for n in [
            0,
            1,
            1023,
            1024,
            500 << 20,
            3 << 40,
            1_000_000_000,
            u64::MAX,
        ] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        for n in [0, 1, 59, 60, 3_600, 86_400 * 30, 604_800 * 2, 90, u64::MAX] {
            assert_eq!(parse_duration(&format_duration(n)), Ok(n));
        }
        assert_eq!(format_size(500 << 20), "500MiB");
        assert_eq!(format_duration(2_592_000), "30d");
    }

    #[test]
    fn until() {
        assert_eq!(parse_unix_seconds("0"), Ok(0));
        assert!(parse_unix_seconds("-1")
            .unwrap_err()
            .starts_with("Cannot set until to a negative value"));
        assert!(parse_unix_seconds("tomorrow").is_err());
    }
}
