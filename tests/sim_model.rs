//! Tests of the simulated Marketplace model against `spec/marketplace.md` §7.
mod sim;

use sim::*;

#[test]
fn builds() {
    let mut s = Sim::new(SimConfig::default());
    s.mine();
}
