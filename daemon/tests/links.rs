//! Two in-process QUIC drivers on loopback: a genuine connection links up,
//! and a connection whose TLS exporter differs between the ends (as across
//! a splicing relay) fails the Noise handshake.

use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use veil_core::identity::NodeIdentity;
use veil_core::node::Config;
use veil_core::pow::PowParams;
use veil_daemon::driver::{NetView, Network, Options, Snapshot};

/// Polling bound (not a timed assertion).
const DEADLINE: Duration = Duration::from_secs(30);

fn start(bootstrap: Vec<std::net::SocketAddr>, options: Options) -> (Network, NodeIdentity) {
    let id = NodeIdentity::generate(&mut OsRng, PowParams::TESTNET);
    let copy = NodeIdentity::from_bytes(&id.to_bytes()).unwrap();
    let config = Config {
        bootstrap,
        ..Config::testnet()
    };
    let net = Network::start(id, config, "127.0.0.1:0".parse().unwrap(), options).unwrap();
    (net, copy)
}

async fn wait_for(views: &[&NetView], done: impl Fn(&[Snapshot]) -> bool) -> Vec<Snapshot> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let snaps: Vec<Snapshot> = views.iter().map(|v| v.snapshot()).collect();
        if done(&snaps) || Instant::now() >= deadline {
            return snaps;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_connection_links_up() {
    let (a, id_a) = start(Vec::new(), Options::default());
    let (b, id_b) = start(vec![a.view().local_addr], Options::default());
    let (va, vb) = (a.view(), b.view());
    let s = wait_for(&[&va, &vb], |s| s.iter().all(|s| s.peers.len() == 1)).await;
    assert_eq!(s[0].peers.len(), 1, "{s:?}");
    assert_eq!(s[1].peers.len(), 1, "{s:?}");
    assert_eq!(s[0].peers[0].node_id, id_b.node_id());
    assert_eq!(s[1].peers[0].node_id, id_a.node_id());
    assert_eq!(s[1].peers[0].addr, va.local_addr);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_connection_fails_the_handshake() {
    let spliced = Options {
        splice_binding: true,
        ..Options::default()
    };
    let (a, _) = start(Vec::new(), spliced);
    let (b, _) = start(vec![a.view().local_addr], Options::default());
    let (va, vb) = (a.view(), b.view());
    // b dials a; the QUIC connection works, the Noise handshake must not.
    let s = wait_for(&[&va, &vb], |s| {
        s.iter().all(|s| s.stats.handshakes_failed >= 2)
    })
    .await;
    for s in &s {
        assert!(s.stats.handshakes_failed >= 2, "{s:?}");
        assert!(s.peers.is_empty(), "{s:?}");
        assert_eq!(s.stats.handshakes_ok_inbound, 0, "{s:?}");
        assert_eq!(s.stats.handshakes_ok_outbound, 0, "{s:?}");
    }
    b.shutdown().await;
    a.shutdown().await;
}
