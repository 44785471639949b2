//! How well a relay guesses its position on the circuits it relays, from
//! what it saw alone, against the paths the harness knows. With one path
//! length network-wide the count of later hops gives the position away:
//! the measurement must say so.

use veil_core::node::Config;
use veil_sim::position::{RelaySeen, guess};
use veil_sim::sim::{Outcome, Scenario, Sim};

fn run(nodes: usize, seed: u64, hops: usize) -> (Sim, Outcome) {
    let mut s = Scenario::new(nodes, seed);
    s.duration_ms = 22_000;
    s.join_window_ms = 5_000;
    s.circuits_start_ms = 8_000;
    s.hops = hops;
    let mut sim = Sim::new(s, &Config::testnet());
    sim.run();
    let o = sim.outcome();
    (sim, o)
}

#[test]
fn relays_guess_their_position_from_what_they_saw() {
    let (sim, o) = run(90, 31, 3);
    let g = &o.position_guess;
    eprintln!("{g:?}");
    // Every built circuit was mapped, hop by hop, from observations.
    assert!(o.circuits_built >= 150);
    assert_eq!(g.unmapped, 0);
    assert_eq!(g.circuits, o.circuits_built);
    assert_eq!(g.guesses, 3 * g.circuits);
    assert!(sim.observed().len() as u64 >= g.guesses);
    assert!((0.0..=1.0).contains(&g.accuracy));
    // Each circuit has one relay per position: chance is 1/hops.
    assert!((g.chance - 1.0 / 3.0).abs() < 1e-9);
    for &(n, ok) in &g.by_position {
        assert_eq!(n, g.circuits);
        assert!(ok <= n);
    }
    assert_eq!(g.guard_true, g.circuits);
    // The fixed hop count gives the position away: the RELAY_EARLY cells a
    // relay passes on count the hops after it.
    assert_eq!(g.accuracy, 1.0, "{g:?}");
    assert_eq!(g.guard_precision(), 1.0);
    assert_eq!(g.guard_recall(), 1.0);
    // Without observations there is nothing to guess from: a relay that
    // saw nothing of a circuit would call itself the last hop.
    assert_eq!(guess(&RelaySeen::default(), 3), 2);
}

#[test]
fn with_one_hop_every_relay_is_the_guard() {
    let (_, o) = run(50, 32, 1);
    let g = &o.position_guess;
    eprintln!("{g:?}");
    assert!(o.circuits_built >= 80);
    assert_eq!(g.unmapped, 0);
    assert_eq!(g.circuits, o.circuits_built);
    assert_eq!(g.accuracy, 1.0);
    assert_eq!(g.chance, 1.0);
    assert_eq!(g.guard_correct, g.circuits);
}

#[test]
fn without_observing_nothing_is_measured() {
    let mut s = Scenario::new(40, 33);
    s.duration_ms = 18_000;
    s.join_window_ms = 4_000;
    s.circuits_start_ms = 8_000;
    s.position_guess = false;
    let mut sim = Sim::new(s, &Config::testnet());
    sim.run();
    let o = sim.outcome();
    assert!(o.circuits_built > 0);
    assert!(sim.observed().is_empty());
    assert_eq!(o.position_guess.guesses, 0);
}
