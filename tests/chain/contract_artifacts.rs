//! The committed Solidity fixture artifacts are fresh and match the Marketplace interface
//! codex expects (`docs/marketplace.md#types`, `#functions`, `#events`, `#errors`).
//!
//! `fixtures/chain/compile.mjs --check` compares the sha256 of every contract source with the
//! one recorded in `fixtures/chain/artifacts/manifest.json`, verifies that the artifact files
//! were not edited after compilation, and checks every selector, event topic, error selector
//! and struct layout listed in `fixtures/chain/lib/spec.mjs` against the compiled ABIs. It
//! needs `node` on PATH but not the npm packages. The smoke test additionally needs `npm ci --prefix fixtures/chain`.

use std::path::Path;
use std::process::{Command, Output};

fn node(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match Command::new("node").args(args).current_dir(root).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run node {args:?} (is Node.js 20+ on PATH?): {e}"),
    }
}

fn report(out: &Output) -> String {
    format!(
        "exit status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn fixture_artifacts_are_fresh_and_match_the_spec() {
    let out = node(&["fixtures/chain/compile.mjs", "--check"]);
    assert!(
        out.status.success(),
        "stale fixture artifacts; run `node fixtures/chain/compile.mjs`\n{}",
        report(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("up to date"),
        "{}",
        report(&out)
    );
}

#[test]
fn fixture_marketplace_smoke_test_passes_on_a_fresh_dev_chain() {
    // Starts its own anvil on a free port (devchain.mjs --stdin-lifeline) and stops it.
    let out = node(&["fixtures/chain/smoke.mjs"]);
    assert!(out.status.success(), "{}", report(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checks passed"),
        "{}",
        report(&out)
    );
}
