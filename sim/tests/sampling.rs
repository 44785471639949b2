//! Scenario tests for link handshakes and peer sampling, in the simulator.
//! Sizes are small so they run in seconds; the 1000-node figures are in
//! docs/performance.md and docs/protocol.md.

use veil_core::node::Config;
use veil_sim::sim::{Scenario, Sim};

fn run(nodes: usize, seed: u64, flooders: f64, duration_ms: u64) -> veil_sim::sim::Outcome {
    eprintln!("scenario: nodes {nodes}, seed {seed}, flooders {flooders}");
    let mut s = Scenario::new(nodes, seed);
    s.flooders = flooders;
    s.duration_ms = duration_ms;
    s.join_window_ms = 5_000;
    let mut sim = Sim::new(s, &Config::testnet());
    sim.run();
    sim.outcome()
}

#[test]
fn network_forms_and_replays_identically() {
    let a = run(80, 7, 0.0, 25_000);
    let b = run(80, 7, 0.0, 25_000);
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "same seed, same run");
    assert_eq!(a.handshakes_failed, 0);
    assert!(a.links_up > 80);
    assert_eq!(a.honest_connected, 80, "every node has a peer");
    // Sampling covers the network: most nodes are known and samples fill.
    assert!(a.mean_known > 60.0, "mean known {}", a.mean_known);
    assert!(
        a.mean_sample_size > 15.0,
        "mean sample {}",
        a.mean_sample_size
    );
    let c = run(80, 8, 0.0, 25_000);
    assert_ne!(
        format!("{a:?}"),
        format!("{c:?}"),
        "another seed, another run"
    );
}

#[test]
fn flooders_get_at_most_twice_their_share_of_samples() {
    let o = run(150, 3, 0.1, 40_000);
    eprintln!(
        "attacker share of samples {:.3} (population {:.3})",
        o.attacker_share_of_samples, o.attacker_population_share
    );
    assert!(o.attacker_population_share > 0.09);
    assert!(
        o.attacker_share_of_samples <= 2.0 * o.attacker_population_share,
        "share {} vs population {}",
        o.attacker_share_of_samples,
        o.attacker_population_share
    );
    assert!(o.floods_detected > 0, "the flood was seen");
}

#[test]
fn flooders_stay_within_twice_their_share_with_forgers_present() {
    // Forgers gossip badly signed copies of honest relays' descriptors: the
    // ids are honest (proof of work is the honest node's), so they must
    // not tilt samples towards the flooders.
    let mut s = Scenario::new(150, 4);
    s.flooders = 0.1;
    s.forgers = 0.1;
    s.duration_ms = 30_000;
    s.join_window_ms = 5_000;
    s.position_guess = false;
    let mut sim = Sim::new(s, &Config::testnet());
    sim.run();
    let o = sim.outcome();
    eprintln!(
        "attacker share of samples {:.3} (population {:.3}); forgeries {}, refused {}",
        o.attacker_share_of_samples,
        o.attacker_population_share,
        o.forgeries_sent,
        o.descriptors_refused
    );
    assert!(o.forgeries_sent > 0 && o.descriptors_refused > 0);
    assert!(
        o.attacker_share_of_samples <= 2.0 * o.attacker_population_share,
        "share {} vs population {}",
        o.attacker_share_of_samples,
        o.attacker_population_share
    );
}
