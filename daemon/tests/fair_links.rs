//! Fair links over real QUIC: in-process drivers on loopback (one /16 per
//! node). A client pushes one circuit far past the flow-control window on
//! the link it shares with another circuit; the relays, whose uploads are
//! limited so that their queues really fill, destroy that circuit alone.
//! The other circuit, the shared link and the relays keep working.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use veil_core::identity::{NodeId, NodeIdentity};
use veil_core::node::{CircuitInfo, CircuitState, Config};
use veil_daemon::driver::{NetView, Network, Options, Snapshot};

/// Polling bound (not a timed assertion).
const DEADLINE: Duration = Duration::from_secs(90);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn start(
    listen: &str,
    bootstrap: &[SocketAddr],
    upload: Option<u64>,
    cfg: Config,
) -> (Network, NodeId) {
    let id = NodeIdentity::generate(&mut OsRng, Config::testnet().pow);
    let node_id = id.node_id();
    let config = Config {
        bootstrap: bootstrap.to_vec(),
        ..cfg
    };
    let options = Options {
        upload_limit: upload,
        ..Options::default()
    };
    (
        Network::start(id, config, addr(listen), options).unwrap(),
        node_id,
    )
}

async fn wait_for(view: &NetView, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = view.snapshot();
        if done(&s) || Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn built(s: &Snapshot) -> Vec<CircuitInfo> {
    s.circuits
        .iter()
        .filter(|c| c.state == CircuitState::Built)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_circuit_dies_alone_over_real_links() {
    // Five relays, each writing at most 1 MiB/s (256 cells/s) in all.
    const UPLOAD: u64 = 1024 * 1024;
    let mut relays = Vec::new();
    let seed = start("127.81.0.1:0", &[], Some(UPLOAD), Config::testnet());
    let seed_addr = seed.0.view().local_addr;
    relays.push(seed);
    for i in 2..=5 {
        relays.push(start(
            &format!("127.8{i}.0.1:0"),
            &[seed_addr],
            Some(UPLOAD),
            Config::testnet(),
        ));
    }
    // The client: two circuits, both through its primary guard (one link),
    // and a window far beyond the relays' queue cap: it will not stop at
    // 512 cells, as a hostile or broken client would not.
    let mut cfg = Config::testnet();
    cfg.relay = false;
    cfg.circuits.circuits_wanted = 2;
    cfg.circuits.window_cells = 8192;
    cfg.circuits.sendme_every = 128;
    cfg.max_circuit_queue_cells = 9000;
    cfg.max_queued_cells_total = 20_000;
    let (client, _) = start("127.86.0.1:0", &[seed_addr], None, cfg);
    let view = client.view();
    let s = wait_for(&view, |s| built(s).len() >= 2).await;
    let circuits = built(&s);
    assert!(circuits.len() >= 2, "two circuits built: {:?}", s.circuits);
    let (a, b) = (circuits[0].clone(), circuits[1].clone());
    assert_eq!(a.hops[0], b.hops[0], "both through the primary guard");
    let guard_id = a.hops[0];
    let guard = relays
        .iter()
        .find(|(_, id)| *id == guard_id)
        .map(|(r, _)| r.view())
        .expect("the guard is one of the relays");
    let link_since = |s: &Snapshot| {
        s.peers
            .iter()
            .find(|p| p.node_id == guard_id)
            .map(|p| p.since_ms)
    };
    let since = link_since(&s).expect("client linked to its guard");

    // Circuit B: 3000 cells at once, six times the window the relays
    // allow for.
    for i in 0..3000u32 {
        let mut data = b"B".to_vec();
        data.extend_from_slice(&i.to_be_bytes());
        if client.send_data(b.id, data).await.is_err() {
            break; // B already came down
        }
    }
    let s = wait_for(&view, |s| !s.circuits.iter().any(|c| c.id == b.id)).await;
    assert!(
        !s.circuits.iter().any(|c| c.id == b.id),
        "the greedy circuit is still up"
    );
    assert!(
        s.circuits.iter().any(|c| c.id == a.id),
        "the other circuit on the link came down with it"
    );
    assert_eq!(link_since(&s), Some(since), "the shared link was replaced");
    let over_queue: u64 = relays
        .iter()
        .map(|(r, _)| r.view().snapshot().stats.circuits.over_queue)
        .sum();
    assert!(over_queue >= 1, "no relay destroyed it for its queue");
    assert_eq!(guard.snapshot().stats.peers_penalised, 0);

    // Circuit A: 100 cells, within the window, all delivered.
    let delivered = |relays: &[(Network, NodeId)]| -> u64 {
        relays
            .iter()
            .map(|(r, _)| r.view().snapshot().stats.circuits.relay_data_received)
            .sum()
    };
    // B's cells still in flight when it died may land first: wait for the
    // relays' counters to settle.
    let mut before = delivered(&relays);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = delivered(&relays);
        if now == before {
            break;
        }
        before = now;
    }
    for i in 0..100u32 {
        let mut data = b"A".to_vec();
        data.extend_from_slice(&i.to_be_bytes());
        client.send_data(a.id, data).await.unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    while delivered(&relays) < before + 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        delivered(&relays),
        before + 100,
        "A's data did not all arrive"
    );
    let s = view.snapshot();
    assert!(built(&s).iter().any(|c| c.id == a.id), "A is still built");
    assert_eq!(link_since(&s), Some(since));

    client.shutdown().await;
    for (r, _) in relays {
        r.shutdown().await;
    }
}
