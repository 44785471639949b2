//! What the daemons' logs hold at their default level: after a network has
//! built circuits and one daemon found and downloaded another's file, no
//! log names an address (a peer's or its own), a searched word, the
//! content id, a node id, a publisher id or a node key. Five relays (the
//! sharer among them) and a client-only downloader, each on its own /16.

use std::time::{Duration, Instant};

use veil_tests::{Daemon, free_udp_addr, logs, share_find_get, start_network_on};

/// Polling bound for the whole journey (not a timed assertion).
const DEADLINE: Duration = Duration::from_secs(240);

const RELAYS: [&str; 5] = [
    "127.170.0.1",
    "127.171.0.1",
    "127.172.0.1",
    "127.173.0.1",
    "127.174.0.1",
];
const DOWNLOADER_IP: &str = "127.175.0.1";

/// The first 12 hex digits of an id: enough to catch it whole or
/// abbreviated (a `Debug` form shows 16).
fn prefix(hex: &str) -> String {
    hex[..12].to_ascii_lowercase()
}

#[test]
fn info_logs_name_no_address_id_key_or_query() {
    let ips: Vec<String> = RELAYS.iter().map(|s| s.to_string()).collect();
    let (mut daemons, addrs, _) = start_network_on(&ips);
    let seed = addrs[0].to_string();
    let listen = free_udp_addr(DOWNLOADER_IP).to_string();
    let mut downloader =
        Daemon::prepare(&["--listen", &listen, "--bootstrap", &seed, "--client-only"]);
    downloader.launch();
    downloader.wait_ready();
    daemons.push(downloader);

    let words = ["quetzal", "marimba"];
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let id = share_find_get(
        &daemons,
        1,
        RELAYS.len(),
        "Quetzal Marimba Sessions.flac",
        &data,
        &words,
        Instant::now() + DEADLINE,
    );

    // Everything that must not appear, with what it is.
    let mut secrets: Vec<(String, String)> = Vec::new();
    for ip in RELAYS.iter().chain([&DOWNLOADER_IP]) {
        secrets.push((format!("address {ip}"), ip.to_string()));
    }
    for w in words {
        secrets.push((format!("searched word {w:?}"), w.to_string()));
    }
    secrets.push(("the content id".into(), prefix(&id)));
    for (i, d) in daemons.iter().enumerate() {
        let v = d.veil_json(&["id"]);
        for field in [
            "node_id",
            "publisher_id",
            "node_ed25519",
            "node_x25519",
            "publisher_ed25519",
        ] {
            let hex = v[field].as_str().expect("an id field");
            secrets.push((format!("daemon {i}'s {field}"), prefix(hex)));
        }
    }
    for d in daemons.iter_mut().rev() {
        d.stop();
    }

    for (i, d) in daemons.iter().enumerate() {
        let log = d.log_text();
        // Not vacuous: the log is there, at info, and saw the journey.
        assert!(log.contains("veild ready"), "daemon {i}: {log}");
        assert!(log.contains("circuit built"), "daemon {i}: {log}");
        assert!(!log.contains("DEBUG"), "daemon {i} logs debug: {log}");
        let lower = log.to_ascii_lowercase();
        for (what, s) in &secrets {
            if let Some(line) = lower.lines().find(|l| l.contains(s.as_str())) {
                panic!(
                    "daemon {i}'s log names {what} at its default level: {line}\n{}",
                    logs(&daemons)
                );
            }
        }
    }
}
