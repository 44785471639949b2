//! Anonymous search between real daemons: five testnet daemons on their
//! own /16s of loopback; one shares a file, another finds it with `veil
//! search` (through its circuit, the exit's walks and the index holders'
//! sealed answers); records held for others survive a restart; an empty
//! search says why.

use std::time::{Duration, Instant};

use veil_tests::{Daemon, logs, start_network, stderr, stdout};

/// Polling bound for circuits, publication and search (not a timed
/// assertion: each step is retried until it happens or this passes).
const DEADLINE: Duration = Duration::from_secs(120);

fn built(d: &Daemon) -> bool {
    d.veil_json(&["circuits"])
        .as_array()
        .is_some_and(|a| a.iter().any(|c| c["state"] == "built"))
}

#[test]
fn a_file_shared_on_one_daemon_is_found_from_another() {
    let (mut daemons, _, _) = start_network(5);
    let deadline = Instant::now() + DEADLINE;
    while !(built(&daemons[0]) && built(&daemons[3])) {
        assert!(Instant::now() < deadline, "no circuits\n{}", logs(&daemons));
        std::thread::sleep(Duration::from_millis(500));
    }

    let files = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(files.path().join("Aurora Borealis Timelapse.mkv"), &body).unwrap();
    let report = daemons[0].veil_json(&["share", files.path().to_str().unwrap()]);
    assert_eq!(report["added"].as_array().unwrap().len(), 1, "{report}");
    let want = blake3::hash(&body).to_hex().to_string();

    // Search from daemon 3 until the record has been replicated and found.
    let mut found = None;
    while found.is_none() {
        assert!(Instant::now() < deadline, "never found\n{}", logs(&daemons));
        let out = daemons[3].veil(&["search", "--json", "--timeout", "8", "aurora", "TIMELAPSE"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("one JSON document on stdout: {e}: {}", stdout(&out)));
        let results = v["results"].as_array().expect("results").clone();
        if let Some(hit) = results.iter().find(|h| h["id"] == want.as_str()) {
            found = Some(hit.clone());
        }
    }
    let hit = found.unwrap();
    assert_eq!(hit["name"], "Aurora Borealis Timelapse.mkv");
    assert_eq!(hit["size"], body.len() as u64);
    assert_eq!(hit["publishers"], 1);
    assert_eq!(hit["rank"], 1);

    // Streaming: --jsonl gives result lines as they arrive, then the
    // final report.
    let out = daemons[3].veil(&["search", "--jsonl", "--timeout", "8", "aurora"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["progress"]["phase"] == "result"
                && l["progress"]["hit"]["id"] == want.as_str()),
        "{lines:?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l["result"]["results"].is_array())
    );

    // Rated fake, its publisher weighs nothing in this node's rankings.
    let rated = daemons[3].veil_json(&["rate", &want, "fake"]);
    assert_eq!(rated["publishers"].as_array().unwrap().len(), 1, "{rated}");
    assert_eq!(rated["published"], true, "the rating went out: {rated}");
    let hit = loop {
        assert!(
            Instant::now() < deadline,
            "not found again\n{}",
            logs(&daemons)
        );
        let v = daemons[3].veil_json(&["search", "--timeout", "8", "aurora", "timelapse"]);
        if let Some(h) = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == want.as_str())
        {
            break h.clone();
        }
    };
    assert_eq!(hit["score"], 0.0, "{hit}");
    // Another node's search brings the rating back with the record: one
    // rater saying fake is not yet a dispute (one misjudgment must not
    // bury a real file).
    let hit = loop {
        assert!(
            Instant::now() < deadline,
            "the rating never reached another searcher\n{}",
            logs(&daemons)
        );
        let v = daemons[4].veil_json(&["search", "--timeout", "8", "aurora", "timelapse"]);
        if let Some(h) = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == want.as_str() && h["rated_fake"] == 1)
        {
            break h.clone();
        }
    };
    assert_eq!(hit["disputed"], false, "{hit}");
    // An id no search returned cannot be rated.
    let out = daemons[3].veil(&["rate", &"ab".repeat(32), "good"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("search for it first"),
        "{}",
        stderr(&out)
    );

    // Nothing matched: it says so.
    let v = daemons[3].veil_json(&["search", "--timeout", "3", "zzqx", "nonexistent"]);
    assert_eq!(v["results"].as_array().unwrap().len(), 0);
    assert_eq!(v["reason"], "nothing_matched");

    // A holder of the record keeps it across a restart (saved within ten
    // seconds of being stored).
    let holder = (1..5)
        .find(|&i| daemons[i].veil_json(&["status"])["index_records"].as_u64() > Some(0))
        .expect("an index holder among the others");
    std::thread::sleep(Duration::from_secs(11));
    daemons[holder].stop();
    daemons[holder].restart();
    let held = daemons[holder].veil_json(&["status"])["index_records"]
        .as_u64()
        .unwrap_or(0);
    assert!(held > 0, "daemon {holder} lost its index records");
    // The sharer never holds its own record.
    assert_eq!(daemons[0].veil_json(&["status"])["index_records"], 0);
}

#[test]
fn a_search_without_peers_says_why() {
    let d = Daemon::start();
    let v = d.veil_json(&["search", "--timeout", "2", "anything", "here"]);
    assert_eq!(v["reason"], "no_peers", "{v}");
    // A query without a searchable word is refused clearly.
    let out = d.veil(&["search", "!", "?"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no word"), "{}", stderr(&out));
}
