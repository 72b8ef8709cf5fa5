//! The crash soak (issue 11 item 2): `kill -9` of the hosts at random instants across all the
//! phases of their sales, each restarted after a random down-time, some longer than a proof
//! period; then the audit.
//!
//! `CODEX_SOAK_KILLS` (default 16) is the number of kills. The kill phase lasts about eight
//! blocks per kill (at least 150), with requests posted until 40 blocks before its end; the
//! run then goes on until every request has ended and every host has collected its payouts.
use std::time::Instant;

use super::*;

/// The sale states a kill aims at (it lands at its random instant if none is reached).
const PHASES: [&str; 6] = [
    "SaleSlotReserving",
    "SaleDownloading",
    "SaleInitialProving",
    "SaleFilling",
    "SaleProving",
    "SalePayout",
];

#[test]
fn crash_soak_kill_9_hosts_at_random_instants() {
    let params = Params::from_env("crash");
    let kills = env_usize("CODEX_SOAK_KILLS", 16);
    let started = Instant::now();
    let mut m = Market::start(&params, &[], &[], |_, _| None);
    let blocks = (kills as u64 * 8).max(150);
    // The blocks after which a host is killed, spread over the run.
    let mut at: Vec<u64> = (0..kills).map(|_| m.rng.u64(3..blocks)).collect();
    at.sort();
    let mut phases = Tally::new();
    let mut done = 0usize;
    let mut long_downs = 0usize;
    while m.blocks < blocks || done < kills {
        m.restart_due(false);
        let now = m.chain_time();
        // Keep a few requests running, so that every phase of a sale is going on somewhere.
        if m.blocks + 40 < blocks && m.live_requests(now) < 5 && m.rng.u8(0..4) == 0 {
            m.post_random();
        }
        m.step();
        // The kills due at this block land at a random instant while the nodes act on it.
        while at.first().is_some_and(|&b| b <= m.blocks) && done < kills {
            let up: Vec<usize> = (0..m.hosts.len())
                .filter(|&i| m.hosts[i].down_since.is_none())
                .collect();
            if up.is_empty() {
                break;
            }
            at.remove(0);
            let i = up[m.rng.usize(..up.len())];
            // A random instant of the block interval, or earlier when the victim's sales
            // reach the phase this kill aims at.
            let aim = PHASES[m.rng.usize(..PHASES.len())];
            let deadline = Instant::now() + m.block_pause.mul_f64(m.rng.f64());
            let mut states = m.live_states(i);
            while Instant::now() < deadline && !states.iter().any(|s| s == aim) {
                std::thread::sleep(std::time::Duration::from_millis(2));
                states = m.live_states(i);
            }
            if states.is_empty() {
                bump(&mut phases, "no live sale");
            }
            for s in states
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
            {
                bump(&mut phases, s);
            }
            // Mostly short, sometimes longer than a period (12 blocks of 10 s).
            let down = match m.rng.u8(0..10) {
                0..=5 => m.rng.u64(0..=2),
                6..=8 => m.rng.u64(3..=8),
                _ => {
                    long_downs += 1;
                    m.rng.u64(14..=24)
                }
            };
            m.kill(i, down);
            done += 1;
        }
    }
    let kill_phase = started.elapsed();
    m.drain(600);
    let mut bad = m.stop_all();
    let txs = m.transactions();
    let audit = m.audit(&txs);
    bad.extend(audit.violations.iter().cloned());
    eprintln!(
        "soak crash: seed {}, {done} kills ({long_downs} with a down-time over a period) in {} blocks, {} requests; kill phase {:.0} s, whole run {:.0} s",
        m.seed,
        m.blocks,
        m.posted.len(),
        kill_phase.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("soak crash: sales states at the kills: {phases:?}");
    eprintln!("soak crash: {:#?}", audit.tally);
    assert!(
        bad.is_empty(),
        "seed {} (replay with CODEX_SOAK_SEED={}): {} violations:\n{}",
        m.seed,
        m.seed,
        bad.len(),
        bad.join("\n")
    );
}
