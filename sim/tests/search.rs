//! Scenario tests for publication and search in the simulator: searches
//! find what honest relays share, nobody answers about its own shares,
//! decoys and churn do not stop searches, and a seed replays. Sizes are
//! small so they run in seconds; the 1000-node figures are in docs/.

use veil_core::node::Config;
use veil_sim::scenario::SearchMode;
use veil_sim::search::SearchOutcome;
use veil_sim::sim::{Scenario, Sim};

fn scenario(seed: u64) -> Scenario {
    let mut s = Scenario::new(100, seed);
    s.join_window_ms = 5_000;
    s.circuits_start_ms = 8_000;
    s.position_guess = false;
    s.search.files = 30;
    s.search.searches = 60;
    s.search.publish_after_ms = 4_000;
    s.search.search_delay_ms = 2_000;
    s.search.search_window_ms = 6_000;
    s
}

fn run(s: Scenario) -> SearchOutcome {
    let mut sim = Sim::new(s, &Config::testnet());
    sim.run();
    sim.search_outcome().expect("a search workload")
}

fn check(o: &SearchOutcome, min_success: f64) {
    eprintln!("{o:?}");
    assert_eq!(o.searches, 60);
    assert!(
        o.search_success >= min_success,
        "success {} ({} of {}, {} lost)",
        o.search_success,
        o.searches_succeeded,
        o.searches,
        o.searches_lost
    );
    assert_eq!(
        o.self_answers, 0,
        "an index holder answered about its own share"
    );
    assert!(o.messages_per_search > 0.0 && o.publish_messages_per_record > 0.0);
}

#[test]
fn walks_find_shared_files_and_a_seed_replays() {
    let a = run(scenario(7));
    check(&a, 0.9);
    assert!(a.index_records_mean > 0.0);
    assert!(a.search_latency_ms_p50 > 0);
    let b = run(scenario(7));
    assert_eq!(a, b, "same seed, same outcome");
}

#[test]
fn poisoners_and_churn_leave_searches_working() {
    let mut s = scenario(8);
    s.search.poisoners = 0.2;
    s.search.churn = 0.1;
    let o = run(s);
    check(&o, 0.9);
    assert_eq!(o.poisoner_nodes, 20);
    assert!(o.nodes_left > 0 && o.nodes_left == o.nodes_joined);
    assert!(o.poisoned_searches > 0);
    assert!(o.decoy_top_results <= o.poisoned_searches);
}

#[test]
fn the_flood_baseline_finds_files_too() {
    let mut s = scenario(9);
    s.search.mode = SearchMode::Flood(2);
    check(&run(s), 0.9);
}
