//! When and how a real daemon runs client-only: a fresh node identity on
//! every start (never saved; the publisher pseudonym is kept), and no relay
//! descriptor without an address: listening on 0.0.0.0 without
//! `--advertise` runs client-only and says why, with `--advertise` the
//! daemon is a relay that others build circuits through.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use veil_daemon::datadir::{NODE_KEY_FILE, PUBLISHER_KEY_FILE};
use veil_tests::{Daemon, free_udp_addr, stdout};

/// Polling bound for circuits to be built (not a timed assertion).
const BUILD_DEADLINE: Duration = Duration::from_secs(90);

/// `(node id, publisher id)` from `veil id`, checked against `veil status`.
fn ids(d: &Daemon) -> (String, String) {
    let id = d.veil_json(&["id"]);
    let node = id["node_id"].as_str().expect("node_id").to_string();
    let publisher = id["publisher_id"]
        .as_str()
        .expect("publisher_id")
        .to_string();
    assert_eq!(d.veil_json(&["status"])["node_id"], node.as_str());
    (node, publisher)
}

/// Two starts of a client-only daemon on one data dir show two node ids
/// and one publisher id, and no node key is written; the same data dir run
/// as a relay keeps one saved node id across restarts.
#[test]
fn a_client_only_daemon_has_a_fresh_node_id_on_every_start() {
    let listen = free_udp_addr("127.65.0.1").to_string();
    let client_args = ["--listen", listen.as_str(), "--client-only"];
    let mut d = Daemon::start_with(&client_args);
    let (first, publisher) = ids(&d);
    let status = d.veil_json(&["status"]);
    assert_eq!(status["relay"], false);
    // A fresh port on the --listen IP, not the --listen port.
    let bound: std::net::SocketAddr = status["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        bound.ip(),
        listen.parse::<std::net::SocketAddr>().unwrap().ip()
    );
    assert_ne!(
        bound.to_string(),
        listen,
        "a client-only daemon bound its --listen port"
    );
    assert!(
        d.log_text().contains("fresh ephemeral port"),
        "{}",
        d.log_text()
    );
    d.stop();
    d.restart();
    let (second, publisher2) = ids(&d);
    assert_ne!(first, second, "a client-only daemon kept its node id");
    assert_eq!(publisher, publisher2, "the publisher pseudonym changed");
    assert!(
        !d.data_dir.join(NODE_KEY_FILE).exists(),
        "a client-only daemon saved its node key"
    );
    assert!(d.data_dir.join(PUBLISHER_KEY_FILE).exists());
    let log = d.log_text();
    assert_eq!(
        log.matches("fresh node identity for this run").count(),
        2,
        "{log}"
    );
    d.stop();

    // The same data dir as a relay: a saved id, kept across a restart and
    // never one of the client-only ids.
    d.set_args(&["--listen", listen.as_str()]);
    d.restart();
    let (relay, publisher3) = ids(&d);
    assert_eq!(d.veil_json(&["status"])["relay"], true);
    assert!(d.data_dir.join(NODE_KEY_FILE).exists());
    d.stop();
    d.restart();
    assert_eq!(ids(&d).0, relay, "a relay changed its node id");
    assert_eq!(publisher3, publisher);
    assert!(![first, second].contains(&relay));
    // Client-only again: the saved relay key is not used.
    d.stop();
    d.set_args(&client_args);
    d.restart();
    assert_ne!(ids(&d).0, relay);
    d.stop();
}

/// On 0.0.0.0 without `--advertise` a relay descriptor would carry no
/// address and every peer would refuse it: the daemon runs client-only
/// and says so on stderr and in `veil status`.
#[test]
fn an_unspecified_listen_address_without_advertise_runs_client_only() {
    let d = Daemon::start_with(&["--listen", "0.0.0.0:0"]);
    let s = d.veil_json(&["status"]);
    assert_eq!(s["relay"], false, "{s}");
    let why = s["client_only_reason"].as_str().expect("a reason");
    assert!(why.contains("--advertise"), "{why}");
    let log = d.log_text();
    assert!(
        log.contains("WARN") && log.contains("running client-only") && log.contains("--advertise"),
        "no warning on stderr:\n{log}"
    );
    assert!(log.contains("fresh node identity for this run"), "{log}");
    assert!(!d.data_dir.join(NODE_KEY_FILE).exists());
    let out = d.veil(&["status"]);
    assert!(out.status.success());
    let human = stdout(&out);
    assert!(
        human.contains("client only:") && human.contains("--advertise"),
        "{human}"
    );
    // A daemon with a specific listen IP relays and gives no reason.
    let relay = Daemon::start();
    let s = relay.veil_json(&["status"]);
    assert_eq!(s["relay"], true, "{s}");
    assert!(s["client_only_reason"].is_null(), "{s}");
}

/// A relay listening on 0.0.0.0 with `--advertise` signs a usable
/// descriptor: a client-only daemon builds a 2-hop circuit whose only
/// possible relays are it and the seed.
#[test]
fn an_advertised_relay_on_an_unspecified_address_carries_circuits() {
    let seed_addr = free_udp_addr("127.68.0.1").to_string();
    let mut seed = Daemon::prepare(&["--listen", &seed_addr]);
    let advertised = free_udp_addr("127.67.0.1");
    let wildcard = format!("0.0.0.0:{}", advertised.port());
    let advertised = advertised.to_string();
    let mut relay = Daemon::prepare(&[
        "--listen",
        &wildcard,
        "--advertise",
        &advertised,
        "--bootstrap",
        &seed_addr,
    ]);
    let client_addr = free_udp_addr("127.69.0.1").to_string();
    let mut client = Daemon::prepare(&[
        "--listen",
        &client_addr,
        "--bootstrap",
        &seed_addr,
        "--client-only",
        "--hops",
        "2",
    ]);
    for d in [&mut seed, &mut relay, &mut client] {
        d.launch();
    }
    for d in [&mut seed, &mut relay, &mut client] {
        d.wait_ready();
    }
    let s = relay.veil_json(&["status"]);
    assert_eq!(s["relay"], true, "{s}");
    assert!(s["client_only_reason"].is_null(), "{s}");
    assert_eq!(s["listen"], wildcard.as_str());
    let relays: BTreeSet<String> = [&seed, &relay].iter().map(|d| ids(d).0).collect();

    let deadline = Instant::now() + BUILD_DEADLINE;
    loop {
        let circuits = client.veil_json(&["circuits"]);
        let built = circuits
            .as_array()
            .expect("circuits is an array")
            .iter()
            .find(|c| c["state"] == "built");
        if let Some(c) = built {
            let hops: BTreeSet<String> = c["hops"]
                .as_array()
                .expect("hops")
                .iter()
                .map(|h| h.as_str().expect("hop id").to_string())
                .collect();
            assert_eq!(hops, relays, "{c}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no circuit through the advertised relay within {BUILD_DEADLINE:?}: {circuits}\n\
             ---- seed\n{}\n---- relay\n{}\n---- client\n{}",
            seed.log_text(),
            relay.log_text(),
            client.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for d in [&mut client, &mut relay, &mut seed] {
        d.stop();
    }
}
