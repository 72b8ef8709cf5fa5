//! The long run of the decoder fuzz harness (`codex::fuzz`, issue 11 item 6): every decoder
//! of what the network, a client or a file sends, fed mutated copies of the corpus in
//! `fixtures/fuzz/`, at least 10^7 executions in all, 0 panics.
//!
//! `cargo bench --bench fuzz`
//!
//! - `CODEX_FUZZ_EXECS`: executions in total, shared equally by the targets (default
//!   10000000; `_` separators allowed).
//! - `CODEX_FUZZ_SEED`: the run's seed, decimal or `0x`-hex (default: a new one, printed).
//!   The same seed gives the same inputs again.
//! - `CODEX_FUZZ_TARGETS`: a comma-separated list of targets to run (default: all).
//!
//! A panic or failed property prints the seed, the target and the input, and writes the input
//! to `fixtures/fuzz/<target>/crash-<hash>`, which every later run (and `cargo test`) replays.
//! The exit status is 1 when anything failed.
use std::process::ExitCode;
use std::time::Instant;

use codex::fuzz::{self, Report, TARGETS};

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?.replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("fuzz: {name}={text:?} is not a number");
            std::process::exit(2);
        }
    }
}

fn main() -> ExitCode {
    let total = env_number("CODEX_FUZZ_EXECS").unwrap_or(10_000_000);
    let seed = env_number("CODEX_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    let only = std::env::var("CODEX_FUZZ_TARGETS").ok();
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|t| {
            only.as_deref()
                .is_none_or(|list| list.split(',').any(|n| n.trim() == t.name))
        })
        .collect();
    if targets.is_empty() {
        eprintln!("fuzz: no target is called {only:?}");
        return ExitCode::from(2);
    }
    let each = total / targets.len() as u64;
    let extra = total % targets.len() as u64;
    println!(
        "codex decoder fuzz: CODEX_FUZZ_SEED={seed:#x}, {total} executions over {} targets",
        targets.len()
    );
    println!(
        "{:<12} {:>6} {:>11} {:>9} {:>11} {:>7} {:>9} {:>10}",
        "target", "seeds", "executions", "decoded", "execs/s", "panics", "failures", "slowest"
    );
    let started = Instant::now();
    let mut reports: Vec<Report> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let execs = each + u64::from((i as u64) < extra);
        let r = fuzz::run(t, seed, execs);
        if let Some(e) = &r.error {
            println!("{:<12} cannot run: {e}", t.name);
        } else {
            println!(
                "{:<12} {:>6} {:>11} {:>8.1}% {:>11.0} {:>7} {:>9} {:>8.2}ms",
                r.target,
                r.seeds,
                r.execs,
                100.0 * r.accepted as f64 / r.execs.max(1) as f64,
                r.execs_per_sec(),
                r.panics,
                r.failures,
                r.slowest.as_secs_f64() * 1e3
            );
        }
        reports.push(r);
    }
    let elapsed = started.elapsed();
    let execs: u64 = reports.iter().map(|r| r.execs).sum();
    let panics: u64 = reports.iter().map(|r| r.panics).sum();
    let failures: u64 = reports.iter().map(|r| r.failures).sum();
    println!(
        "total: {execs} executions in {:.1} s ({:.0} execs/s), {panics} panics, {failures} failures",
        elapsed.as_secs_f64(),
        execs as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    if reports.iter().all(Report::is_clean) {
        ExitCode::SUCCESS
    } else {
        println!("fuzz: FAILED; replay with CODEX_FUZZ_SEED={seed:#x}");
        ExitCode::FAILURE
    }
}
