//! Real daemons linking over QUIC on loopback: bootstrap, peer sampling
//! links, and `veil peers`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use veil_tests::{Daemon, start_network};

/// Polling bound for the network to form (not a timed assertion).
const FORM_DEADLINE: Duration = Duration::from_secs(60);

/// A UDP port that was free on `ip` a moment ago.
fn peer_ids(d: &Daemon) -> BTreeSet<String> {
    let v = d.veil_json(&["peers"]);
    let arr = v.as_array().expect("peers is one JSON array");
    arr.iter()
        .map(|p| {
            let id = p["node_id"].as_str().expect("node_id").to_string();
            assert!(
                p["address"]
                    .as_str()
                    .is_some_and(|a| a.parse::<SocketAddr>().is_ok())
            );
            assert!(p["age_s"].is_u64());
            assert!(p["direction"] == "inbound" || p["direction"] == "outbound");
            id
        })
        .collect()
}

#[test]
fn three_daemons_find_each_other() {
    let (mut daemons, addrs, ids) = start_network(3);
    for (d, a) in daemons.iter().zip(&addrs) {
        let status = d.veil_json(&["status"]);
        assert_eq!(status["listen"], a.to_string());
    }

    let deadline = Instant::now() + FORM_DEADLINE;
    loop {
        let seen: Vec<BTreeSet<String>> = daemons.iter().map(peer_ids).collect();
        let done = seen.iter().enumerate().all(|(i, s)| {
            let others: BTreeSet<String> =
                (0..3).filter(|j| *j != i).map(|j| ids[j].clone()).collect();
            *s == others
        });
        for (i, s) in seen.iter().enumerate() {
            assert!(!s.contains(&ids[i]), "daemon {i} lists itself");
            for id in s {
                assert!(ids.contains(id), "daemon {i} lists a stranger {id}");
            }
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no full mesh within {FORM_DEADLINE:?}: {seen:?}\nlogs:\n{}",
            daemons
                .iter()
                .map(|d| d.log_text())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for d in &daemons {
        assert_eq!(d.veil_json(&["status"])["peers"], 2);
    }
    // A clean stop closes the endpoint and exits promptly.
    for d in &mut daemons {
        d.stop();
    }
}

#[test]
fn peers_of_a_lonely_daemon_is_an_empty_array() {
    let d = Daemon::start();
    assert_eq!(d.veil_json(&["peers"]), serde_json::json!([]));
    let status = d.veil_json(&["status"]);
    let listen: SocketAddr = status["listen"].as_str().unwrap().parse().unwrap();
    assert!(listen.ip().is_loopback() && listen.port() != 0);
    assert_eq!(status["peers"], 0);
}

/// Relays a daemon reached are kept in its database and dialled again at
/// its next start: restarted with no bootstrap seed at all, it rejoins
/// the network it knew (a daemon that never reached anyone stays alone,
/// as `peers_of_a_lonely_daemon_is_an_empty_array` shows).
#[test]
fn a_restarted_daemon_rejoins_through_the_relays_it_reached_before() {
    let (mut daemons, addrs, ids) = start_network(3);
    let deadline = Instant::now() + FORM_DEADLINE;
    while !peer_ids(&daemons[2]).contains(&ids[0]) {
        assert!(Instant::now() < deadline, "daemon 2 never reached the seed");
        std::thread::sleep(Duration::from_millis(250));
    }
    // The reached relays are written as they change; the stop flushes.
    let db = daemons[2].data_dir.join("veil.db");
    let stored = || -> BTreeSet<String> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT address FROM peers").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    while !stored().contains(&addrs[0].to_string()) {
        assert!(
            Instant::now() < deadline,
            "the seed was never stored: {:?}",
            stored()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // A new port: nobody else can reach it at the old address, so only
    // its own dials can bring it back.
    daemons[2].stop();
    let moved = veil_tests::free_udp_addr(&addrs[2].ip().to_string());
    daemons[2].set_args(&["--listen", &moved.to_string()]);
    daemons[2].restart();
    let deadline = Instant::now() + FORM_DEADLINE;
    loop {
        let seen = peer_ids(&daemons[2]);
        if seen.contains(&ids[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no seed given, and the stored relays were not dialled: {seen:?}\n{}",
            daemons[2].log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
