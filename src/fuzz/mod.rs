//! The decoder fuzz harness: every decoder that reads what the network, a client or a file
//! sends, fed mutated copies of real inputs, on stable Rust and without a fuzzing library.
//!
//! - [`targets`]: one [`Target`] per kind of input (WebSocket frames, logs, event topics and
//!   data, revert data, view results, config files, option values, units, ids, HTTP requests,
//!   REST calls), each a function that runs the decoders of that input and checks what is
//!   cheap to check: a decoded value that re-encodes must re-encode to what was decoded, two
//!   decoders of the same thing must agree, an answer must be well formed.
//! - [`mutate`]: the [`Mutator`], a seeded `fastrand::Rng` that turns a seed of the corpus
//!   into a new input (byte flips, inserts, deletes, truncation, splicing two seeds, numbers
//!   replaced by huge, negative or overflowing ones, duplicated JSON keys, deep nesting,
//!   ABI words replaced by edge values).
//! - The corpus of each target is `fixtures/fuzz/<target>/`: every file is a seed, except
//!   `*.lines` (one seed a line) and `*.hex` (one hex-encoded seed a line, `#` comments).
//!   Every seed must decode, except those in files named `bad*` (inputs that must be refused
//!   without a panic) and `crash-*` (inputs that once failed, kept so that they replay).
//!
//! [`run`] replays the whole corpus of a target, then runs mutated inputs until the requested
//! number of executions, each under `catch_unwind`. A panic or a failed property prints the
//! run's seed, the target and the input (hex and escaped text) and writes the input to
//! `fixtures/fuzz/<target>/crash-<hash>`, where the next run replays it. The same inputs come
//! from the same seed: `CODEX_FUZZ_SEED` of `cargo bench --bench fuzz` replays a long run, and
//! the unit tests run a short one with a fixed seed.
//!
//! What it cannot catch: a stack overflow aborts the process instead of unwinding (the
//! deep-nesting mutations exist to find those), and an input that is merely slow is only
//! reported (the slowest execution of each target is printed).
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod mutate;
#[cfg(test)]
mod seeds;
pub mod targets;

pub use mutate::Mutator;
pub use targets::TARGETS;

/// What a target's inputs look like, which decides the mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text: JSON, TOML, HTTP, ids, units.
    Text,
    /// Bytes: ABI-encoded data, 32-byte words.
    Binary,
}

/// One fuzz target: a kind of input and the decoders that read it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name, also the corpus folder under `fixtures/fuzz/`.
    pub name: &'static str,
    /// The kind of input.
    pub kind: Kind,
    /// Runs the decoders on one input: `Ok(true)` when it decoded, `Ok(false)` when it was
    /// refused with an error value, `Err` when a property did not hold.
    pub run: fn(&[u8]) -> Result<bool, String>,
}

/// One input of a corpus.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The input.
    pub bytes: Vec<u8>,
    /// Where it comes from: the file, and the line for files of lines.
    pub origin: String,
    /// Whether it must decode (not from a `bad*` or `crash-*` file).
    pub must_decode: bool,
}

/// The corpus folder of a target.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fuzz")
        .join(target)
}

/// Reads a corpus folder, files in name order.
pub fn load_corpus(dir: &Path) -> Result<Vec<Seed>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut seeds = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let must_decode = !(name.starts_with("bad") || name.starts_with("crash-"));
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let lines = || {
            bytes
                .split(|b| *b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .enumerate()
        };
        if name.ends_with(".lines") {
            for (i, line) in lines().filter(|(_, l)| !l.is_empty()) {
                seeds.push(Seed {
                    bytes: line.to_vec(),
                    origin: format!("{name}:{}", i + 1),
                    must_decode,
                });
            }
        } else if name.ends_with(".hex") {
            for (i, line) in lines() {
                let text = String::from_utf8_lossy(line);
                let text = text.trim();
                if text.is_empty() || text.starts_with('#') {
                    continue;
                }
                let bytes = alloy_primitives::hex::decode(text)
                    .map_err(|e| format!("{name}:{}: not hex: {e}", i + 1))?;
                seeds.push(Seed {
                    bytes,
                    origin: format!("{name}:{}", i + 1),
                    must_decode,
                });
            }
        } else {
            seeds.push(Seed {
                bytes,
                origin: name,
                must_decode,
            });
        }
    }
    Ok(seeds)
}

/// What one run of a target did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Seeds in its corpus.
    pub seeds: usize,
    /// Executions, the corpus replay included.
    pub execs: u64,
    /// Executions whose input decoded.
    pub accepted: u64,
    /// Executions that panicked.
    pub panics: u64,
    /// Executions whose property did not hold, and seeds that must decode but did not.
    pub failures: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The slowest execution.
    pub slowest: Duration,
    /// Why the run could not start (an unreadable or empty corpus).
    pub error: Option<String>,
}

impl Report {
    /// Executions per second.
    pub fn execs_per_sec(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.panics == 0 && self.failures == 0 && self.error.is_none()
    }
}

/// How one execution ended.
enum Outcome {
    Decoded,
    Refused,
    Property(String),
    Panic(String),
}

thread_local! {
    /// Set while this thread runs a target: its panics are recorded, not printed.
    static FUZZING: Cell<bool> = const { Cell::new(false) };
    /// The message and place of the last panic on this thread while fuzzing.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records the panics of fuzzing threads and leaves every
/// other panic to the hook that was there before.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                let place = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = payload_text(info.payload());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{message}{place}")));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

fn execute(target: &Target, input: &[u8]) -> Outcome {
    FUZZING.with(|f| f.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(input)));
    FUZZING.with(|f| f.set(false));
    match result {
        Ok(Ok(true)) => Outcome::Decoded,
        Ok(Ok(false)) => Outcome::Refused,
        Ok(Err(why)) => Outcome::Property(why),
        Err(payload) => Outcome::Panic(
            LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| payload_text(payload.as_ref())),
        ),
    }
}

/// 64-bit FNV-1a, for crash file names and per-target seeds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The seed of one target's mutator in a run: the run's seed mixed with the target's name,
/// so that adding a target changes no other target's inputs.
pub fn target_seed(run_seed: u64, target: &str) -> u64 {
    let mut z = run_seed ^ fnv1a(target.as_bytes());
    // splitmix64's finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An input as escaped text: printable ASCII as it is, the rest as `\n`, `\xNN`, ...; at most
/// `limit` input bytes.
pub fn escape(input: &[u8], limit: usize) -> String {
    let mut out = String::with_capacity(input.len().min(limit) + 16);
    for &b in input.iter().take(limit) {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    if input.len() > limit {
        let _ = write!(out, "… ({} more bytes)", input.len() - limit);
    }
    out
}

/// Prints a failure and keeps its input as a crash seed of the target.
fn report_failure(target: &Target, run_seed: u64, exec: u64, what: &str, input: &[u8]) {
    const SHOWN: usize = 2048;
    let hex = alloy_primitives::hex::encode(&input[..input.len().min(SHOWN)]);
    let more = if input.len() > SHOWN { "…" } else { "" };
    let dir = corpus_dir(target.name);
    let file = dir.join(format!("crash-{:016x}", fnv1a(input)));
    let kept = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, input))
        .map(|()| format!("written to {}", file.display()))
        .unwrap_or_else(|e| format!("could not be written to {}: {e}", file.display()));
    eprintln!(
        "fuzz: FAILURE in target {} (CODEX_FUZZ_SEED={run_seed:#x}, execution {exec}): {what}\n  \
         input, {} bytes, hex: {hex}{more}\n  input as text: \"{}\"\n  {kept}",
        target.name,
        input.len(),
        escape(input, SHOWN),
    );
}

/// Runs one target: the corpus first, then mutated inputs up to `execs` executions in all.
/// Failures are printed as they happen (the first few of each target) and kept as crash seeds.
pub fn run(target: &Target, run_seed: u64, execs: u64) -> Report {
    const PRINTED: u64 = 5;
    install_panic_hook();
    let mut report = Report {
        target: target.name,
        ..Report::default()
    };
    let corpus = match load_corpus(&corpus_dir(target.name)) {
        Ok(c) if c.is_empty() => {
            report.error = Some(format!("the corpus of {} is empty", target.name));
            return report;
        }
        Ok(c) => c,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    report.seeds = corpus.len();
    let started = Instant::now();
    let mut mutator = Mutator::new(target_seed(run_seed, target.name));
    let mut input = Vec::new();
    let mut exec = 0u64;
    let total = execs.max(corpus.len() as u64);
    while exec < total {
        let seed = corpus.get(exec as usize);
        let bytes: &[u8] = match seed {
            Some(s) => &s.bytes,
            None => {
                mutator.input(target.kind, &corpus, &mut input);
                &input
            }
        };
        let t0 = Instant::now();
        let outcome = execute(target, bytes);
        report.slowest = report.slowest.max(t0.elapsed());
        let failure = match outcome {
            Outcome::Decoded => {
                report.accepted += 1;
                None
            }
            Outcome::Refused => match seed {
                Some(s) if s.must_decode => {
                    report.failures += 1;
                    Some(format!("the seed {} no longer decodes", s.origin))
                }
                _ => None,
            },
            Outcome::Property(why) => {
                report.failures += 1;
                Some(format!("property failed: {why}"))
            }
            Outcome::Panic(why) => {
                report.panics += 1;
                Some(format!("panic: {why}"))
            }
        };
        if let Some(what) = failure {
            if report.panics + report.failures <= PRINTED {
                report_failure(target, run_seed, exec, &what, bytes);
            }
        }
        exec += 1;
    }
    report.execs = exec;
    report.elapsed = started.elapsed();
    report
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Executions per target in `cargo test`: enough to catch a regression at once, few
    /// enough that the whole harness takes seconds. The long run is `cargo bench --bench fuzz`.
    const SHORT: u64 = 10_000;
    /// The short run's seed; fixed, so that a failure in CI replays.
    const SEED: u64 = 0x00c0_dec5_f022;

    fn short_run(name: &str) {
        let t = target(name).unwrap_or_else(|| panic!("no target {name}"));
        let r = run(t, SEED, SHORT);
        assert!(r.error.is_none(), "{name}: {:?}", r.error);
        assert!(
            r.is_clean(),
            "{name}: {} panics, {} failures in {} executions (inputs above, kept in fixtures/fuzz/{name}/)",
            r.panics,
            r.failures,
            r.execs
        );
        assert!(r.execs >= SHORT);
        assert!(r.accepted > 0, "{name}: nothing decoded");
    }

    macro_rules! short_runs {
        ($($test:ident => $name:literal,)*) => {
            $(
                #[test]
                fn $test() {
                    short_run($name);
                }
            )*

            #[test]
            fn every_target_has_a_short_run() {
                let mut tested = vec![$($name),*];
                let mut all: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                tested.sort_unstable();
                all.sort_unstable();
                assert_eq!(tested, all);
            }
        };
    }

    short_runs! {
        frames => "frames",
        logs => "logs",
        events => "events",
        rpc_errors => "rpc-errors",
        revert_data => "revert-data",
        views => "views",
        config => "config",
        options => "options",
        units => "units",
        ids => "ids",
        http => "http",
        rest => "rest",
    }

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let corpus = load_corpus(&corpus_dir("frames")).unwrap();
        let inputs = |seed| {
            let mut m = Mutator::new(seed);
            let mut out = Vec::new();
            (0..200)
                .map(|_| {
                    m.input(Kind::Text, &corpus, &mut out);
                    out.clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(inputs(7), inputs(7));
        assert_ne!(inputs(7), inputs(8));
        assert_ne!(target_seed(1, "frames"), target_seed(1, "logs"));
    }

    #[test]
    fn a_panic_is_caught_reported_and_kept() {
        fn boom(input: &[u8]) -> Result<bool, String> {
            if input.starts_with(b"boom") {
                panic!("boom at the start");
            }
            Ok(true)
        }
        let t = Target {
            name: "selftest",
            kind: Kind::Text,
            run: boom,
        };
        match execute(&t, b"boom!") {
            Outcome::Panic(m) => assert!(m.contains("boom at the start"), "{m}"),
            _ => panic!("the panic was not caught"),
        }
        assert!(matches!(execute(&t, b"fine"), Outcome::Decoded));
    }

    #[test]
    fn escaped_inputs_are_one_line() {
        assert_eq!(escape(b"a\"b\n\x00\xff", 100), "a\\\"b\\n\\x00\\xff");
        assert_eq!(escape(b"abcdef", 3), "abc… (3 more bytes)");
    }
}
