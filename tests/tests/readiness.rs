//! `veil status` leads with whether the node can search and download, and
//! if not, why: a lone daemon says it has no peers (and whether seeds were
//! given), and so do its searches and downloads; a node of a small network
//! ends up "ready: N circuits".

use std::time::{Duration, Instant};

use veil_tests::{Daemon, free_udp_addr, logs, start_network, stderr, stdout};

/// Polling bound for a network to build circuits (not a timed assertion).
const READY_DEADLINE: Duration = Duration::from_secs(90);

/// `ready` and `readiness` from `veil status --json`, checked for shape.
fn readiness(d: &Daemon) -> (bool, String, u64) {
    let s = d.veil_json(&["status"]);
    let ready = s["ready"].as_bool().expect("status has a ready bool");
    let line = s["readiness"]
        .as_str()
        .expect("status has a readiness string")
        .to_string();
    assert!(!line.contains('\n'), "one line: {line:?}");
    if ready {
        assert!(line.starts_with("ready: "), "{line:?}");
    } else {
        assert!(line.starts_with("not ready: "), "{line:?}");
    }
    let built = s["circuits_built"].as_u64().expect("circuits_built");
    (ready, line, built)
}

/// The first line of the human `veil status`.
fn first_line(d: &Daemon) -> String {
    let out = d.veil(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_lone_daemon_is_not_ready_for_want_of_peers() {
    let d = Daemon::start();
    let (ready, line, built) = readiness(&d);
    assert!(!ready);
    assert_eq!(built, 0);
    assert_eq!(
        line,
        "not ready: no peers yet (no bootstrap seeds given: waiting for others to join)"
    );
    assert_eq!(first_line(&d), line);

    // A search or a download that cannot start says the same.
    let v = d.veil_json(&["search", "--timeout", "2", "savanna"]);
    assert_eq!(v["reason"], "no_peers", "{v}");
    assert_eq!(v["readiness"], line.as_str(), "{v}");
    let out = d.veil(&["search", "--timeout", "2", "savanna"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("nothing found: this node is {line}")),
        "{}",
        stderr(&out)
    );
    let id = "ab".repeat(32);
    let out = d.veil(&["get", "--timeout", "2", &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot search for this id: this node is {line}")),
        "{}",
        stderr(&out)
    );

    // With a seed nobody answers at, the seeds are what to check.
    let seed = free_udp_addr("127.2.0.1").to_string();
    let d = Daemon::start_with(&["--listen", "127.1.0.1:0", "--bootstrap", &seed]);
    let (ready, line, _) = readiness(&d);
    assert!(!ready);
    assert_eq!(
        line,
        "not ready: no peers yet (check bootstrap seeds: none reached so far)"
    );
    assert_eq!(first_line(&d), line);
}

#[test]
fn a_small_network_becomes_ready_with_built_circuits() {
    let (daemons, _, _) = start_network(4);
    let d = &daemons[3];
    let deadline = Instant::now() + READY_DEADLINE;
    let mut seen = Vec::new();
    let (line, built) = loop {
        let (ready, line, built) = readiness(d);
        if seen.last() != Some(&line) {
            seen.push(line.clone());
        }
        if ready {
            break (line, built);
        }
        assert!(
            Instant::now() < deadline,
            "not ready within {READY_DEADLINE:?}; readiness went {seen:?}\nlogs:\n{}",
            logs(&daemons)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // "ready: N circuit(s)", N from the same snapshot as circuits_built.
    let n: u64 = line
        .strip_prefix("ready: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line:?} does not count circuits"));
    assert!(n >= 1, "{line:?}");
    assert_eq!(n, built, "{line:?}");
    assert!(
        line.ends_with(" circuit") || line.ends_with(" circuits"),
        "{line:?}"
    );
    assert!(
        first_line(d).starts_with("ready: "),
        "human status: {}",
        first_line(d)
    );
}
