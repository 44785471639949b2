//! Scenario tests for circuits in the simulator: probe-verified builds,
//! replay, what relays see, client-only nodes, colluders. Sizes are small
//! so they run in seconds; the 1000-node figures are in
//! docs/performance.md and docs/protocol.md.

use veil_core::cell::{CELL_BODY_BYTES, CELL_SIZE};
use veil_core::circuit::CircuitMsg;
use veil_core::node::{Config, Observation};
use veil_sim::sim::{Outcome, Scenario, Sim, Tamper};

fn scenario(nodes: usize, seed: u64) -> Scenario {
    let mut s = Scenario::new(nodes, seed);
    s.duration_ms = 25_000;
    s.join_window_ms = 5_000;
    s.circuits_start_ms = 8_000;
    s
}

fn run(s: Scenario) -> (Sim, Outcome) {
    let mut sim = Sim::new(s, &Config::testnet());
    sim.run();
    let o = sim.outcome();
    (sim, o)
}

#[test]
fn circuits_are_built_probe_verified_and_replay_identically() {
    let (sim, a) = run(scenario(120, 5));
    let (_, b) = run(scenario(120, 5));
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "same seed, same run");
    eprintln!(
        "attempted {} built {} p50 {} ms p95 {} ms",
        a.circuits_attempted, a.circuits_built, a.circuit_build_ms_p50, a.circuit_build_ms_p95
    );
    assert!(a.circuits_attempted >= 240, "two circuits per node");
    assert!(
        a.circuits_built * 100 >= a.circuits_attempted * 99,
        "built {} of {}",
        a.circuits_built,
        a.circuits_attempted
    );
    // Every circuit a node called built was confirmed by its last hop, and
    // its path keeps the rules.
    let built = sim.built_circuits();
    assert!(built.iter().all(|c| c.probe_seen));
    for c in &built {
        assert_eq!(c.hops.len(), 3);
        assert!(!c.hops.contains(&c.builder));
        let mut sorted = c.hops.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "a node twice on a path");
        // Each node has its own /16, so distinct nodes are distinct
        // prefixes; the prefix rule itself is tested in core.
    }
    assert!(a.circuit_build_ms_p50 > 0 && a.circuit_build_ms_p95 >= a.circuit_build_ms_p50);
    assert_eq!(a.circuits_torn_down_bad_cell, 0);
}

#[test]
fn relays_never_see_a_client_and_cells_have_one_size() {
    let mut s = scenario(80, 9);
    s.client_only = 0.15;
    s.observe = true;
    let (mut sim, o) = run(s);
    let clients = sim.client_only_nodes();
    assert_eq!(clients.len(), 12);
    let built = sim.built_circuits();
    // Client-only nodes built circuits and were never anyone's hop.
    for &c in &clients {
        assert!(
            built.iter().any(|b| b.builder == c),
            "client {c} built nothing"
        );
    }
    for b in &built {
        assert!(
            b.hops.iter().all(|h| !clients.contains(h)),
            "a client was a hop"
        );
    }
    assert!(o.circuits_built > 100);
    // The network carried circuit cells of exactly one size.
    let sizes: Vec<usize> = sim.circuit_cell_sizes().iter().copied().collect();
    assert_eq!(sizes, vec![CELL_SIZE]);
    // What every relay saw in clear holds no client's id, keys or address.
    let secrets: Vec<Vec<u8>> = clients.iter().flat_map(|&c| sim.secrets_of(c)).collect();
    let mut seen = 0usize;
    for i in 0..sim.len() {
        for obs in sim.take_observations(i) {
            seen += 1;
            let bytes = obs.bytes();
            if let Observation::Relayed { body, .. } = &obs {
                assert_eq!(body.len(), CELL_BODY_BYTES);
            }
            for s in &secrets {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == &s[..]),
                    "node {i} saw a client's identity in clear"
                );
            }
        }
    }
    assert!(seen > 1000, "observations recorded: {seen}");
}

#[test]
fn colluders_at_both_ends_are_counted_from_recorded_paths() {
    let mut s = scenario(150, 11);
    s.colluders = 0.2;
    s.observe = true;
    let (mut sim, o) = run(s);
    assert!(o.honest_circuits_built > 200);
    let colluders = sim.colluders();
    assert_eq!(colluders.len(), 30);
    // The colluders' own records, not the harness's paths: which probes a
    // colluding relay recognised as a circuit's last hop, and on how many
    // circuits a colluder was handed a CREATE straight from a client.
    let mut probes_seen_by_colluders = std::collections::BTreeSet::new();
    for &c in &colluders {
        for obs in sim.take_observations(c) {
            if let Observation::Recognised { payload, .. } = &obs
                && let Ok(CircuitMsg::Probe { nonce }) = CircuitMsg::decode(payload)
            {
                probes_seen_by_colluders.insert(nonce);
            }
        }
    }
    let honest: Vec<_> = sim
        .built_circuits()
        .into_iter()
        .filter(|c| !colluders.contains(&c.builder))
        .collect();
    assert_eq!(honest.len() as u64, o.honest_circuits_built);
    // First hop: the client's own guard list says who it linked to first.
    let both = honest
        .iter()
        .filter(|c| {
            let guard_colludes = colluders.contains(&c.hops[0]);
            let exit_saw_probe = probes_seen_by_colluders.contains(&c.probe);
            guard_colludes && exit_saw_probe
        })
        .count();
    assert_eq!(
        both as u64, o.colluder_first_last,
        "the outcome disagrees with what the colluding exits recorded"
    );
    let share = o.colluder_first_last as f64 / o.honest_circuits_built as f64;
    eprintln!(
        "colluder first+last {} of {} ({share:.3}), colluding primary guards {:.3}",
        o.colluder_first_last, o.honest_circuits_built, o.colluder_guard_share
    );
    assert!(share < 0.2, "guards keep first+last near f^2, got {share}");
    assert!(o.colluder_guard_share < 0.4);
    assert!(sim.built_circuits().iter().all(|c| c.probe_seen));
}

/// Relays that turn bad after circuits are built: every circuit through one
/// is torn down, no other circuit is, and no mangled data is ever accepted.
fn tampering(tamper: Tamper) {
    let mut s = scenario(100, 13);
    s.tamperers = 0.1;
    s.tamper = tamper;
    s.duration_ms = 36_000;
    s.tamper_from_ms = 22_000;
    let (_, o) = run(s);
    eprintln!(
        "{tamper:?}: data sent {} delivered {} corrupted accepted {}; via tamperer {} torn down {}; clean torn down {}",
        o.data_sent,
        o.data_delivered,
        o.data_corrupted_accepted,
        o.circuits_via_tamperer,
        o.circuits_via_tamperer_torn_down,
        o.circuits_clean_torn_down
    );
    assert!(o.data_sent >= 150, "data went over the built circuits");
    assert!(o.circuits_via_tamperer >= 10, "some paths hold a tamperer");
    assert_eq!(o.data_corrupted_accepted, 0, "mangled data was accepted");
    assert_eq!(
        o.circuits_via_tamperer_torn_down, o.circuits_via_tamperer,
        "a circuit through a tamperer survived"
    );
    assert_eq!(
        o.circuits_clean_torn_down, 0,
        "a clean circuit was torn down"
    );
    // Clean circuits delivered their data; circuits through a tamperer
    // delivered at most the data cells that crossed before the damage.
    assert!(o.data_delivered + o.circuits_via_tamperer >= o.data_sent);
}

#[test]
fn relays_that_corrupt_cells_get_their_circuits_torn_down() {
    tampering(Tamper::Corrupt);
}

#[test]
fn relays_that_drop_cells_get_their_circuits_torn_down() {
    tampering(Tamper::Drop);
}

#[test]
fn relays_that_replay_cells_get_their_circuits_torn_down() {
    tampering(Tamper::Replay);
}

/// Relays crash while builds are under way: the failed builds are retried
/// beyond the same guard (whenever that guard is alive), guards do not
/// change, and every survivor ends with a built circuit.
#[test]
fn relays_crashing_mid_build_are_routed_around_through_the_same_guard() {
    let mut s = scenario(120, 17);
    s.crash_fraction = 0.1;
    s.crash_at_ms = s.circuits_start_ms + 300;
    let (_, o) = run(s);
    eprintln!(
        "crashed {}; builds failed after {}; off guard {}; guards changed {}; survivors without circuit {}; built {}",
        o.crashed,
        o.builds_failed_after_crash,
        o.builds_failed_off_guard,
        o.guards_changed,
        o.survivors_without_circuit,
        o.circuits_built
    );
    assert_eq!(o.crashed, 12);
    assert!(
        o.builds_failed_after_crash > 0,
        "the crash hit builds under way"
    );
    assert_eq!(o.builds_failed_off_guard, 0);
    assert_eq!(o.guards_changed, 0);
    assert_eq!(o.survivors_without_circuit, 0);
}
