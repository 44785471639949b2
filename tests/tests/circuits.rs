//! Onion circuits between real daemons: five testnet daemons, each on its
//! own /16 of loopback, build 3-hop circuits through each other; `veil
//! circuits` and `veil status` show them; guards survive a restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use veil_tests::{Daemon, bin, free_udp_addr, logs, start_network, stderr};

/// Polling bound for circuits to be built (not a timed assertion).
const BUILD_DEADLINE: Duration = Duration::from_secs(90);

/// Whether `s` is a node id as the CLI prints it.
fn is_node_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One circuit as `veil circuits --json` shows it.
#[derive(Debug, Clone)]
struct Circuit {
    state: String,
    hops: Vec<String>,
}

/// `veil circuits --json`, with the shape of every entry checked.
fn circuits(d: &Daemon) -> Vec<Circuit> {
    let v = d.veil_json(&["circuits"]);
    let arr = v.as_array().expect("circuits is one JSON array");
    arr.iter()
        .map(|c| {
            assert!(c["id"].is_u64(), "{c}");
            assert!(c["age_s"].is_u64(), "{c}");
            let state = c["state"].as_str().expect("state").to_string();
            assert!(
                ["building", "built", "closing"].contains(&state.as_str()),
                "{c}"
            );
            if state == "building" {
                assert!(c["build_ms"].is_null(), "{c}");
            } else {
                assert!(c["build_ms"].is_u64(), "{c}");
            }
            let hops: Vec<String> = c["hops"]
                .as_array()
                .expect("hops is an array")
                .iter()
                .map(|h| h.as_str().expect("hop is a string").to_string())
                .collect();
            for h in &hops {
                assert!(is_node_id(h), "hop {h:?} is not 64 lowercase hex digits");
            }
            Circuit { state, hops }
        })
        .collect()
}

/// Guard ids from `veil status --json`, primary first.
fn guards(d: &Daemon) -> Vec<String> {
    let s = d.veil_json(&["status"]);
    s["guards"]
        .as_array()
        .expect("status has a guards array")
        .iter()
        .map(|g| g.as_str().expect("guard id").to_string())
        .collect()
}

/// Checks a built 3-hop circuit of daemon `i`: distinct hops, never
/// itself, only the other daemons, guard first.
fn check_path(i: usize, ids: &[String], guards: &[String], hops: &[String]) {
    let distinct: BTreeSet<&String> = hops.iter().collect();
    assert_eq!(
        distinct.len(),
        hops.len(),
        "daemon {i}: repeated hop {hops:?}"
    );
    assert!(
        !hops.contains(&ids[i]),
        "daemon {i} is a hop of its own circuit"
    );
    for h in hops {
        assert!(ids.contains(h), "daemon {i}: hop {h} is a stranger");
    }
    assert!(
        guards.contains(&hops[0]),
        "daemon {i}: first hop {} is not one of its guards {guards:?}",
        hops[0]
    );
}

#[test]
fn five_daemons_build_three_hop_circuits_and_keep_their_guards() {
    let (mut daemons, _, ids) = start_network(5);
    for d in &daemons {
        let s = d.veil_json(&["status"]);
        assert_eq!(s["relay"], true);
    }

    // Every daemon gets a built circuit of exactly three of the others.
    let deadline = Instant::now() + BUILD_DEADLINE;
    let mut built: Vec<Option<Vec<String>>> = vec![None; daemons.len()];
    while built.iter().any(Option::is_none) {
        for (i, d) in daemons.iter().enumerate() {
            if built[i].is_some() {
                continue;
            }
            let found = circuits(d)
                .into_iter()
                .find(|c| c.state == "built" && c.hops.len() == 3);
            if let Some(c) = found {
                check_path(i, &ids, &guards(d), &c.hops);
                built[i] = Some(c.hops);
            }
        }
        assert!(
            Instant::now() < deadline || built.iter().all(Option::is_some),
            "not every daemon built a 3-hop circuit within {BUILD_DEADLINE:?}: {built:?}\n\
             circuits: {:?}\nlogs:\n{}",
            daemons.iter().map(circuits).collect::<Vec<_>>(),
            logs(&daemons)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (i, d) in daemons.iter().enumerate() {
        let s = d.veil_json(&["status"]);
        assert!(
            s["circuits_built"].as_u64().unwrap() >= 1,
            "daemon {i}: {s}"
        );
        // The human table shows the same circuits.
        let out = d.veil(&["circuits"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("built"),
            "daemon {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Someone relayed: five daemons with built circuits through each other.
    let relayed: u64 = daemons
        .iter()
        .map(|d| d.veil_json(&["status"])["relay_circuits"].as_u64().unwrap())
        .sum();
    assert!(relayed >= 1, "no daemon relays a circuit");

    // Guards are kept across a restart, in order.
    let d = &mut daemons[4];
    let before = guards(d);
    assert!(!before.is_empty(), "daemon 4 has no guards");
    for g in &before {
        assert!(ids[..4].contains(g), "guard {g} is not another daemon");
    }
    assert_eq!(
        before.iter().collect::<BTreeSet<_>>().len(),
        before.len(),
        "a guard is listed twice: {before:?}"
    );
    d.stop();
    d.restart();
    // Read at once: a node that had lost its guards would still be looking
    // for new ones.
    let after = guards(d);
    assert_eq!(after, before, "guards changed across a restart");
    assert!(
        d.log_text().contains("guards restored"),
        "no restore logged:\n{}",
        d.log_text()
    );
    // And the restarted daemon builds through them again.
    let deadline = Instant::now() + BUILD_DEADLINE;
    loop {
        let found = circuits(d)
            .into_iter()
            .find(|c| c.state == "built" && c.hops.len() == 3);
        if let Some(c) = found {
            check_path(4, &ids, &before, &c.hops);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted daemon built no circuit within {BUILD_DEADLINE:?}: {:?}\nlog:\n{}",
            circuits(d),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for d in &mut daemons {
        d.stop();
    }
}

#[test]
fn circuits_of_a_lonely_daemon_is_an_empty_array() {
    let d = Daemon::start_with(&["--listen", "127.0.0.1:0", "--client-only", "--hops", "2"]);
    assert_eq!(d.veil_json(&["circuits"]), serde_json::json!([]));
    let s = d.veil_json(&["status"]);
    assert_eq!(s["relay"], false);
    assert_eq!(s["guards"], serde_json::json!([]));
    assert_eq!(s["circuits_built"], 0);
    let out = d.veil(&["circuits"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("no circuits yet"));
}

#[test]
fn bad_circuit_settings_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin("veild"))
            .arg("--testnet")
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("VEIL_DATA_DIR")
            .output()
            .unwrap()
    };
    let out = run(&["--hops", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--hops: a circuit has 1 to 4 hops, not 5"),
        "{}",
        stderr(&out)
    );
    let config = tmp.path().join("veild.toml");
    std::fs::write(&config, "[circuits]\nguards = 0\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("circuits.guards"), "{}", stderr(&out));
    std::fs::write(&config, "[circuits]\nhopz = 3\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("hopz"), "{}", stderr(&out));
}

/// A client-only daemon joins five relays: it builds a 3-hop circuit
/// through them, links only to its guards, and no relay ever puts it on a
/// path.
#[test]
fn a_client_only_daemon_builds_circuits_through_its_guards_only() {
    let (mut relays, addrs, ids) = start_network(5);
    let seed = addrs[0].to_string();
    let listen = free_udp_addr("127.6.0.1").to_string();
    let mut client = Daemon::prepare(&["--listen", &listen, "--bootstrap", &seed, "--client-only"]);
    client.launch();
    client.wait_ready();
    let me = client.veil_json(&["id"])["node_id"]
        .as_str()
        .expect("node_id")
        .to_string();
    assert_eq!(client.veil_json(&["status"])["relay"], false);

    let deadline = Instant::now() + BUILD_DEADLINE;
    let (path, guard_list) = loop {
        let g = guards(&client);
        let built = circuits(&client)
            .into_iter()
            .find(|c| c.state == "built" && c.hops.len() == 3);
        // Links only to guards once the bootstrap link is gone.
        let peers: Vec<String> = client
            .veil_json(&["peers"])
            .as_array()
            .expect("peers is an array")
            .iter()
            .map(|p| p["node_id"].as_str().expect("node_id").to_string())
            .collect();
        if let Some(c) = built
            && !g.is_empty()
            && !peers.is_empty()
            && peers.iter().all(|p| g.contains(p))
        {
            break (c.hops, g);
        }
        if Instant::now() > deadline {
            let mut all = relays.iter().collect::<Vec<_>>();
            all.push(&client);
            panic!(
                "no built circuit through guard-only links within {BUILD_DEADLINE:?}: peers {peers:?}, guards {g:?}\n{}",
                all.iter()
                    .map(|d| d.log_text())
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    check_path(
        0,
        &[me.clone()]
            .into_iter()
            .chain(ids.iter().cloned())
            .collect::<Vec<_>>(),
        &guard_list,
        &path,
    );
    // Nobody routes through the client.
    for (i, r) in relays.iter().enumerate() {
        for c in circuits(r) {
            assert!(!c.hops.contains(&me), "relay {i} put the client on a path");
        }
    }
    client.stop();
    for r in &mut relays {
        r.stop();
    }
}
