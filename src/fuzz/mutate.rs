//! The mutator: a seeded `fastrand::Rng` that turns a seed of the corpus into a new input
//! with one to eight edits. Text edits know a little of JSON, TOML, HTTP, hex and units;
//! binary edits know that ABI data is made of 32-byte words.
use super::{Kind, Seed};

/// The longest input made: longer ones are cut.
pub const MAX_INPUT: usize = 32 * 1024;

/// Numbers at the edges of the types the decoders read them into, as text.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "+1",
    "255",
    "256",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "-18446744073709551616",
    "340282366920938463463374607431768211456",
    "115792089237316195423570985008687907853269984665640564039457584007913129639935",
    "115792089237316195423570985008687907853269984665640564039457584007913129639936",
    "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999",
    "00000000000000000000001",
    "1e400",
    "-1e400",
    "1e-400",
    "1.5",
    "1e3",
    "0.0",
    "NaN",
    "0x0",
    "0xffffffffffffffff",
    "0x10000000000000000",
    "0x",
];

/// Short pieces of the syntaxes the targets read.
const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "false",
    "\"\"",
    "{}",
    "[]",
    "\\u0000",
    "\\ud800",
    "\\u00e9",
    "\u{0}",
    "\u{7f}",
    "é",
    "\u{1F600}",
    "\u{FEFF}",
    "0x",
    "0X",
    "\n",
    "\r\n",
    "\r\n\r\n",
    "\t",
    " ",
    "=",
    "#",
    "'",
    "'''",
    "\"\"\"",
    "[[",
    "]]",
    ".",
    "-",
    "+",
    "?",
    "&",
    "%",
    "%zz",
    "%00",
    "/",
    "//",
    "..",
    "0x3b920b88",
    "KiB",
    "PiB",
    "d",
    "w",
    "Content-Length: 0\r\n",
    "Content-Length: 99999999999999999999\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Expect: 100-continue\r\n",
    "Connection: close\r\n",
    "HTTP/1.1",
    "HTTP/1.0",
];

/// Bytes that matter to the text syntaxes.
const TEXT_BYTES: &[u8] = b"\"\\{}[],:0x-+.eE \t\r\n=#'%?&/\x00\x7f\xc3\xff";

/// Openers for deep nesting.
const OPENERS: &[&str] = &["[", "{\"a\":", "[{\"a\":", "{\"result\":", "a=[", "[[a]]\n"];

/// Nesting depths: around serde_json's limit of 128, and far past it.
const DEPTHS: &[usize] = &[2, 16, 127, 128, 129, 256, 1000, 3000];

/// A seeded source of mutated inputs.
#[derive(Debug, Clone)]
pub struct Mutator {
    rng: fastrand::Rng,
}

impl Mutator {
    /// A mutator whose inputs depend on `seed` alone.
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Writes into `out` a mutated copy of a random seed of `corpus` (which must not be
    /// empty).
    pub fn input(&mut self, kind: Kind, corpus: &[Seed], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&corpus[self.rng.usize(..corpus.len())].bytes);
        // One edit most often, up to eight.
        let edits = 1 + (self.rng.u32(..).trailing_zeros() as usize).min(7);
        for _ in 0..edits {
            let other = &corpus[self.rng.usize(..corpus.len())].bytes;
            match kind {
                Kind::Text => self.text_edit(out, other),
                Kind::Binary => self.binary_edit(out, other),
            }
        }
        out.truncate(MAX_INPUT);
    }

    /// A position in `0..=len`.
    fn pos(&mut self, len: usize) -> usize {
        self.rng.usize(..=len)
    }

    /// A short length, at most `max`: mostly 1 to 4, sometimes up to 64.
    fn short_len(&mut self, max: usize) -> usize {
        let n = if self.rng.u8(..4) == 0 {
            self.rng.usize(1..=64)
        } else {
            self.rng.usize(1..=4)
        };
        n.min(max)
    }

    /// The edits every kind of input gets.
    fn common_edit(&mut self, out: &mut Vec<u8>, other: &[u8], which: u8) {
        match which {
            // flip a bit
            0 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out[i] ^= 1 << self.rng.u8(..8);
            }
            // a random byte
            1 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out[i] = self.rng.u8(..);
            }
            // insert random bytes
            2 => {
                let at = self.pos(out.len());
                let n = self.short_len(16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.u8(..)).collect();
                out.splice(at..at, bytes);
            }
            // delete a range
            3 if !out.is_empty() => {
                let at = self.rng.usize(..out.len());
                let n = self.short_len(out.len() - at);
                out.drain(at..at + n);
            }
            // truncate
            4 => {
                let at = self.pos(out.len());
                out.truncate(at);
            }
            // splice: this seed's head, the other's tail
            5 => {
                let at = self.pos(out.len());
                let from = self.pos(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            // a piece of the other seed inserted
            6 if !other.is_empty() => {
                let from = self.rng.usize(..other.len());
                let n = self.short_len(other.len() - from).max(1);
                let at = self.pos(out.len());
                out.splice(at..at, other[from..from + n].iter().copied());
            }
            // a piece of this input copied elsewhere in it
            7 if !out.is_empty() => {
                let from = self.rng.usize(..out.len());
                let n = self.short_len(out.len() - from).max(1);
                let piece = out[from..from + n].to_vec();
                let at = self.pos(out.len());
                out.splice(at..at, piece);
            }
            _ => {
                // The edit did not apply (an empty input): grow it instead.
                let at = self.pos(out.len());
                out.insert(at, self.rng.u8(..));
            }
        }
    }

    fn text_edit(&mut self, out: &mut Vec<u8>, other: &[u8]) {
        match self.rng.u8(..18) {
            which @ 0..=7 => self.common_edit(out, other, which),
            8 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out[i] = TEXT_BYTES[self.rng.usize(..TEXT_BYTES.len())];
            }
            9 | 10 => {
                let token = TOKENS[self.rng.usize(..TOKENS.len())];
                let at = self.pos(out.len());
                out.splice(at..at, token.bytes());
            }
            11 | 12 => self.replace_number(out),
            13 => self.edit_hex(out),
            14 => self.duplicate_key(out),
            15 => self.nest(out),
            16 => {
                // a long run of one byte: long numbers, strings, whitespace
                let at = self.pos(out.len());
                let b = match out.get(at) {
                    Some(b) if self.rng.bool() => *b,
                    _ => TEXT_BYTES[self.rng.usize(..TEXT_BYTES.len())],
                };
                let n = [64, 300, 2000][self.rng.usize(..3)];
                out.splice(at..at, std::iter::repeat_n(b, n));
            }
            17 if !out.is_empty() => {
                // the other case of a letter (0X, hex digits, header names, units)
                let i = self.rng.usize(..out.len());
                out[i] ^= if out[i].is_ascii_alphabetic() {
                    0x20
                } else {
                    0
                };
            }
            _ => self.common_edit(out, other, 2),
        }
    }

    /// Replaces a run of decimal digits (with its sign) by an edge number.
    fn replace_number(&mut self, out: &mut Vec<u8>) {
        let runs = runs(out, |b| b.is_ascii_digit());
        let replacement = NUMBERS[self.rng.usize(..NUMBERS.len())].as_bytes();
        match runs.get(self.rng.usize(..runs.len().max(1))) {
            Some(&(mut start, end)) => {
                if start > 0 && matches!(out[start - 1], b'-' | b'+') {
                    start -= 1;
                }
                out.splice(start..end, replacement.iter().copied());
            }
            None => {
                let at = self.pos(out.len());
                out.splice(at..at, replacement.iter().copied());
            }
        }
    }

    /// Changes the digits after a `0x`: one more or fewer, doubled, all `f`, or none.
    fn edit_hex(&mut self, out: &mut Vec<u8>) {
        let starts: Vec<usize> = out
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"0x")
            .map(|(i, _)| i + 2)
            .collect();
        let Some(&start) = starts.get(self.rng.usize(..starts.len().max(1))) else {
            return self.replace_number(out);
        };
        let end = start
            + out[start..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
        let digits = out[start..end].to_vec();
        let new: Vec<u8> = match self.rng.u8(..6) {
            0 => digits[..digits.len().saturating_sub(1)].to_vec(),
            1 => [&digits[..], b"0"].concat(),
            2 => [&digits[..], &digits[..]].concat(),
            3 => vec![b'f'; [1, 16, 17, 40, 63, 64, 65, 128][self.rng.usize(..8)]],
            4 => Vec::new(),
            _ => [b"00".as_slice(), &digits[..]].concat(),
        };
        out.splice(start..end, new);
    }

    /// Repeats a JSON member (`"key":value,`) or, outside JSON, a line.
    fn duplicate_key(&mut self, out: &mut Vec<u8>) {
        let members: Vec<usize> = out
            .windows(2)
            .enumerate()
            .filter(|(_, w)| matches!(w, [b'{' | b',', b'"']))
            .map(|(i, _)| i + 1)
            .collect();
        if let Some(&start) = members.get(self.rng.usize(..members.len().max(1))) {
            let end = member_end(out, start);
            let mut piece = out[start..end].to_vec();
            piece.push(b',');
            out.splice(start..start, piece);
            return;
        }
        let lines = runs(out, |b| b != b'\n');
        if let Some(&(start, end)) = lines.get(self.rng.usize(..lines.len().max(1))) {
            let mut piece = out[start..end].to_vec();
            piece.push(b'\n');
            out.splice(start..start, piece);
        }
    }

    /// Opens many arrays or objects at one place, and sometimes closes them at the end.
    fn nest(&mut self, out: &mut Vec<u8>) {
        let opener = OPENERS[self.rng.usize(..OPENERS.len())];
        let depth = DEPTHS[self.rng.usize(..DEPTHS.len())];
        let at = self.pos(out.len());
        out.splice(at..at, opener.bytes().cycle().take(opener.len() * depth));
        if self.rng.bool() {
            let closer = if opener.contains('{') { b'}' } else { b']' };
            out.extend(std::iter::repeat_n(closer, depth));
        }
    }

    fn binary_edit(&mut self, out: &mut Vec<u8>, other: &[u8]) {
        // ABI words are aligned after whatever prefix the input has (a selector, a count).
        let base = out.len() % 32;
        let words = out.len() / 32;
        match self.rng.u8(..14) {
            which @ 0..=7 => self.common_edit(out, other, which),
            8 | 9 if words > 0 => {
                let at = base + 32 * self.rng.usize(..words);
                let word = self.edge_word(out.len());
                out[at..at + 32].copy_from_slice(&word);
            }
            10 => {
                let at = base + 32 * self.rng.usize(..=words);
                let word = self.edge_word(out.len());
                out.splice(at..at, word);
            }
            11 if words > 0 => {
                let at = base + 32 * self.rng.usize(..words);
                out.drain(at..at + 32);
            }
            12 if words > 0 => {
                let at = base + 32 * self.rng.usize(..words);
                let word = out[at..at + 32].to_vec();
                out.splice(at..at, word);
            }
            13 if !out.is_empty() => {
                // a small step up or down of one byte
                let i = self.rng.usize(..out.len());
                out[i] = out[i].wrapping_add(self.rng.u8(..35)).wrapping_sub(17);
            }
            _ => self.common_edit(out, other, 2),
        }
    }

    /// A 32-byte word at an edge: zero, one, small offsets, the input's length, the limits of
    /// u8, u32, u64 and u256, the sign bit.
    fn edge_word(&mut self, len: usize) -> [u8; 32] {
        let mut w = [0u8; 32];
        let small = |w: &mut [u8; 32], v: u64| w[24..].copy_from_slice(&v.to_be_bytes());
        match self.rng.u8(..12) {
            0 => {}
            1 => small(&mut w, 1),
            2 => small(&mut w, 0x20),
            3 => small(&mut w, 0x40),
            4 => small(&mut w, len as u64),
            5 => small(&mut w, (len as u64).wrapping_sub(32)),
            6 => small(&mut w, 256),
            7 => small(&mut w, u64::from(u32::MAX) + 1),
            8 => small(&mut w, u64::MAX),
            9 => w[23] = 1, // 2^64
            10 => w[0] = 0x80,
            _ => w = [0xff; 32],
        }
        w
    }
}

/// The maximal runs of bytes that satisfy `f`, as (start, end).
fn runs(bytes: &[u8], f: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (f(b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, bytes.len()));
    }
    out
}

/// Where the JSON member starting at `start` ends: the `,` or closing bracket at its depth
/// (strings skipped), or the end of the input.
fn member_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return i,
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => return i,
            _ => {}
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_end_at_their_depth() {
        let json = br#"{"a":{"b":[1,2]},"c":"x,}"}"#;
        assert_eq!(&json[1..member_end(json, 1)], br#""a":{"b":[1,2]}"#);
        assert_eq!(&json[17..member_end(json, 17)], br#""c":"x,}""#);
        assert_eq!(runs(b"a12b3", |b| b.is_ascii_digit()), vec![(1, 3), (4, 5)]);
    }

    #[test]
    fn inputs_stay_bounded_and_vary() {
        let corpus = vec![Seed {
            bytes: br#"{"id":1,"result":"0x10"}"#.to_vec(),
            origin: "test".into(),
            must_decode: true,
        }];
        let mut m = Mutator::new(1);
        let mut out = Vec::new();
        let mut distinct = std::collections::HashSet::new();
        for kind in [Kind::Text, Kind::Binary] {
            for _ in 0..2000 {
                m.input(kind, &corpus, &mut out);
                assert!(out.len() <= MAX_INPUT);
                distinct.insert(out.clone());
            }
        }
        assert!(distinct.len() > 2000, "{} distinct inputs", distinct.len());
    }
}
