//! The impersonation attack in the simulator: forgers copy honest relays'
//! keys and proof of work into fresh, badly signed descriptors (no relay
//! flag, or a junk address) and gossip them in pull replies, some vouched
//! for. Honest relays must keep their place in everyone's guard, vanguard
//! and exit picks, measured against the same seed without forgers.

use std::collections::BTreeSet;

use veil_core::node::Config;
use veil_sim::sim::{Outcome, PickShares, Scenario, Sim};

fn scenario(nodes: usize, seed: u64) -> Scenario {
    let mut s = Scenario::new(nodes, seed);
    s.duration_ms = 25_000;
    s.join_window_ms = 5_000;
    s.circuits_start_ms = 8_000;
    s.position_guess = false;
    s
}

fn run(s: Scenario) -> (Sim, Outcome) {
    eprintln!(
        "scenario: nodes {}, seed {}, forgers {}",
        s.nodes, s.seed, s.forgers
    );
    let mut sim = Sim::new(s, &Config::testnet());
    sim.run();
    let o = sim.outcome();
    (sim, o)
}

/// `a` (of `na` picks) and `b` (of `nb`) differ by less than three
/// standard deviations of the difference of two binomial shares.
fn within_noise(name: &str, a: f64, na: u64, b: f64, nb: u64) {
    let p = (a * na as f64 + b * nb as f64) / (na + nb).max(1) as f64;
    let sd = (p * (1.0 - p) * (1.0 / na.max(1) as f64 + 1.0 / nb.max(1) as f64)).sqrt();
    eprintln!(
        "{name}: {a:.3} with forgers, {b:.3} without (3 sd = {:.3})",
        3.0 * sd
    );
    assert!(
        (a - b).abs() <= 3.0 * sd,
        "{name}: {a:.3} with forgers against {b:.3} without"
    );
}

#[test]
fn forged_descriptors_leave_honest_relays_their_guard_and_exit_share() {
    let mut attack = scenario(160, 21);
    attack.forgers = 0.1;
    let (sim, o) = run(attack.clone());
    let targeted: BTreeSet<usize> = sim.forge_targeted().clone();
    let adversaries = sim.adversaries();
    let (base, b) = run(Scenario {
        forgers: 0.0,
        ..attack
    });
    let with: &PickShares = &o.targeted_picks;
    let without = base.pick_shares(&targeted, &adversaries);
    eprintln!(
        "forgeries {} ({} vouched) for {} of {} targets; refused {}, peers penalised {}; built {} of {} (failed via a forger {}, clean {}); forging guards {}",
        o.forgeries_sent,
        o.forgeries_vouched,
        o.forge_targeted,
        o.forge_targets,
        o.descriptors_refused,
        o.peers_penalised,
        o.circuits_built,
        o.circuits_attempted,
        o.circuits_failed_via_forger,
        o.circuits_failed_clean,
        o.forger_guarded
    );
    eprintln!("with forgers {with:?}\nwithout {without:?}");
    // The attack ran: every target was forged, many times, and honest
    // nodes refused the forgeries and cut the forgers that vouched.
    assert_eq!(o.forgers, 16);
    assert!(o.forge_targets >= 30);
    assert_eq!(o.forge_targeted, o.forge_targets);
    assert!(o.forgeries_sent >= 20 * o.forge_targets);
    assert!(o.forgeries_vouched > 0 && o.forgeries_vouched < o.forgeries_sent);
    assert!(o.descriptors_refused > o.forgeries_sent / 4);
    assert!(o.peers_penalised > 0);
    assert_eq!(b.descriptors_refused, 0);
    assert_eq!(b.peers_penalised, 0);
    // Targeted relays keep their guard, vanguard and exit share.
    within_noise(
        "guard pool",
        with.guard_pool,
        with.guard_entries,
        without.guard_pool,
        without.guard_entries,
    );
    within_noise(
        "vanguard pool",
        with.vanguard_pool,
        with.guard_entries,
        without.vanguard_pool,
        without.guard_entries,
    );
    within_noise(
        "exit",
        with.exit,
        with.circuits,
        without.exit,
        without.circuits,
    );
    assert!(with.guard_pool > with.relay_share / 2.0);
    assert!(with.exit > with.relay_share / 2.0);
    // Circuits still build: no build by an honest node through honest
    // relays failed (builds through forgers fail when honest nodes cut a
    // forger for vouching), and honest nodes built most of what they
    // built without forgers.
    assert_eq!(o.circuits_failed_clean, 0);
    // A guard that vouches for a forgery is replaced (only it can have
    // vouched), so no honest node ends with a forging guard, and nearly
    // every honest node holds a circuit at the end (one that replaced its
    // guard late may still be building).
    assert_eq!(o.forger_guarded, 0, "a forging guard was kept");
    assert!(
        o.nodes_with_circuit * 100 >= o.honest_nodes * 97,
        "{} of {} honest nodes hold a circuit",
        o.nodes_with_circuit,
        o.honest_nodes
    );
    assert!(
        with.circuits * 10 >= without.circuits * 8,
        "honest circuits built: {} with forgers, {} without",
        with.circuits,
        without.circuits
    );
}
