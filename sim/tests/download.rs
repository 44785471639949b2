//! Scenario tests for downloads in the simulator: users search, download
//! the top-ranked result from several sources over rendezvous sessions,
//! check and rate it; false claimers' corrupt pieces are rejected and
//! their services dropped, stallers are passed over, and no corrupt file
//! is ever accepted. Small networks with short stall times, so they run
//! in bounded virtual time; the 1000-node figures are in docs/.

use serde_json::Value;
use veil_core::node::Config;
use veil_sim::download::DownloadOutcome;
use veil_sim::sim::{Scenario, Sim};

fn scenario(seed: u64) -> Scenario {
    let mut s = Scenario::new(200, seed);
    s.join_window_ms = 5_000;
    s.circuits_start_ms = 8_000;
    s.position_guess = false;
    s.search.files = 30;
    s.search.publish_after_ms = 4_000;
    s.search.downloads = 30;
    s.search.download_delay_ms = 6_000;
    s.search.download_window_ms = 15_000;
    s.search.download_time_ms = 30_000;
    s
}

/// Testnet, with stalled sources given up on sooner (3 s, two strikes).
fn config() -> Config {
    let mut c = Config::testnet();
    c.transfer.schedule.stall_ms = 3_000;
    c.transfer.schedule.max_failures = 2;
    c
}

fn run(s: Scenario) -> DownloadOutcome {
    let mut sim = Sim::new(s, &config());
    sim.run();
    let o = sim.download_outcome().expect("a download workload");
    eprintln!("{o:#?}");
    o
}

#[test]
fn downloads_complete_and_verify() {
    let mut s = scenario(11);
    // Colluding relays relay honestly: downloads work through them, and
    // the harness counts which sessions they could have watched.
    s.colluders = 0.2;
    let o = run(s);
    assert_eq!(o.downloads, 30);
    assert!(o.downloads_started >= 27, "started {}", o.downloads_started);
    assert_eq!(
        o.downloads_completed, o.downloads_started,
        "every started download finished"
    );
    assert_eq!(
        o.downloads_verified, o.downloads_completed,
        "each is the file the user wanted, byte for byte"
    );
    assert_eq!(o.corrupt_accepted, 0);
    assert_eq!((o.decoy_downloads, o.corrupt_pieces_sent), (0, 0));
    assert_eq!(o.sources_dropped_bad, 0, "no honest source is called bad");
    assert!(o.pieces_served > 0 && o.download_ms_p50 > 0);
    assert!(o.sessions_measured > 0 && o.sessions_measured <= o.sessions);
    assert!(
        o.colluder_rendezvous > 0,
        "a fifth of relays collude: some rendezvous points are theirs"
    );
    assert!(o.colluder_first_hops <= o.sessions_measured);
}

#[test]
fn liars_are_dropped_and_no_corrupt_file_is_accepted() {
    let mut s = scenario(12);
    s.search.poisoners = 0.2;
    s.search.download_time_ms = 60_000;
    let mut sim = Sim::new(s, &config());
    sim.run();
    let o = sim.download_outcome().expect("a download workload");
    eprintln!("{o:#?}");
    // The trace (`--trace-downloads`) tells the same story, download by
    // download: what each user saw when it chose, and how it ended.
    let trace = sim.download_trace().expect("a download workload");
    assert_eq!(trace.len() as u64, o.downloads - o.downloads_skipped);
    let count = |f: &dyn Fn(&Value) -> bool| trace.iter().filter(|d| f(d)).count() as u64;
    assert_eq!(count(&|d| d["verified"] == true), o.downloads_verified);
    assert_eq!(count(&|d| d["chose"] == "decoy"), o.decoy_downloads);
    assert_eq!(count(&|d| d["stage"] == "done"), o.downloads_completed);
    for d in trace.iter().filter(|d| d["chose"] == "decoy") {
        assert_eq!(d["view"]["ranked"][0]["kind"], "decoy", "{d}");
    }
    for d in trace.iter().filter(|d| d["stage"] == "done") {
        assert!(
            d["named"].as_u64() > Some(0),
            "its rating named signers: {d}"
        );
    }
    assert_eq!(
        o.corrupt_accepted, 0,
        "no file that is not its id's content"
    );
    assert!(
        o.corrupt_pieces_sent > 0,
        "false claimers were asked for pieces and corrupted them"
    );
    assert!(o.corrupt_pieces_rejected > 0, "the downloaders caught them");
    assert!(
        o.corrupt_pieces_rejected <= o.corrupt_pieces_sent,
        "only claimers' pieces fail verification"
    );
    assert!(
        o.claimers_dropped_bad > 0,
        "the liars' services were dropped as bad"
    );
    assert_eq!(o.honest_dropped_bad, 0, "no honest service was called bad");
    assert_eq!(o.sources_dropped_bad, o.claimers_dropped_bad);
    assert!(o.stallers_dropped > 0, "stallers were given up on");
    assert!(
        o.decoy_downloads > 0,
        "decoys were picked: verification cannot tell them"
    );
    assert_eq!(
        o.ratings_published, o.downloads_completed,
        "every user published its judgment of what it downloaded"
    );
    assert!(
        o.downloads_completed >= o.downloads_started * 3 / 4,
        "most downloads finished: {} of {}",
        o.downloads_completed,
        o.downloads_started
    );
}

/// What the users do (when, who, which file, whether they misjudge) is a
/// plan of its own: nodes that behave differently (here, sources given up
/// on later) change how downloads go, not which downloads are asked for.
/// Runs of two protocol versions then compare download for download.
#[test]
fn the_users_plan_does_not_depend_on_what_the_nodes_do() {
    let plan = |config: &Config| -> Vec<(Value, Value, Value, Value)> {
        let mut s = scenario(13);
        s.search.poisoners = 0.2;
        let mut sim = Sim::new(s, config);
        sim.run();
        sim.download_trace()
            .expect("a download workload")
            .into_iter()
            .map(|d| {
                (
                    d["asked_ms"].clone(),
                    d["node"].clone(),
                    d["file"].clone(),
                    d["misjudged"].clone(),
                )
            })
            .collect()
    };
    let mut patient = config();
    patient.transfer.schedule.stall_ms = 6_000;
    let (a, b) = (plan(&config()), plan(&patient));
    assert_eq!(a.len(), 30);
    assert_eq!(a, b);
}
