//! Admission of inbound connections, against in-process QUIC drivers on
//! loopback (one /16 per node): a flooding address gets only its share of
//! the pending slots, a connection that opens no stream is closed at the
//! stream deadline, and a client-only node completes no handshake for
//! anyone. In each, honest nodes keep linking.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use veil_core::identity::NodeIdentity;
use veil_core::node::{CircuitState, Config};
use veil_daemon::admission::Limits;
use veil_daemon::driver::{NetView, Network, Options, Snapshot};
use veil_daemon::net;

/// Polling bound (not a timed assertion).
const DEADLINE: Duration = Duration::from_secs(60);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A testnet node on `listen`, with `tweak` applied to its config.
fn node(
    listen: &str,
    bootstrap: &[SocketAddr],
    admission: Limits,
    tweak: impl FnOnce(&mut Config),
) -> Network {
    let id = NodeIdentity::generate(&mut OsRng, Config::testnet().pow);
    let mut config = Config {
        bootstrap: bootstrap.to_vec(),
        ..Config::testnet()
    };
    tweak(&mut config);
    let options = Options {
        admission,
        ..Options::default()
    };
    Network::start(id, config, addr(listen), options).unwrap()
}

/// A QUIC client on `ip` that speaks TLS with ALPN `veil/1`, as a scanner
/// or a flooder would.
fn attacker(ip: &str) -> quinn::Endpoint {
    net::endpoint(addr(&format!("{ip}:0")), Duration::from_secs(60), false).unwrap()
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

/// One address opens many QUIC connections and never opens a stream: it
/// gets `max_pending_per_ip` of them, the rest are refused, and an honest
/// peer on another /16 still links up while the flooder holds its slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_gets_only_its_share_of_pending_slots() {
    const PER_IP: usize = 3;
    const FLOOD: usize = 24;
    // Slots are held for the whole (long) handshake: only the per-address
    // cap stands between the flooder and all 2 * 6 = 12 slots.
    let limits = Limits {
        max_pending_per_ip: PER_IP,
        first_stream_timeout: Duration::from_secs(60),
    };
    let target = node("127.52.0.1:0", &[], limits, |c| {
        c.max_pending_handshakes = 6;
        c.handshake_timeout_ms = 60_000;
    });
    let to = target.view().local_addr;

    let flooder = attacker("127.50.0.1");
    let mut tries = Vec::new();
    for _ in 0..FLOOD {
        let connecting = flooder.connect(to, net::server_name()).unwrap();
        tries.push(tokio::spawn(tokio::time::timeout(
            Duration::from_secs(20),
            connecting,
        )));
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(Ok(conn)) => held.push(conn),
            Ok(Err(_)) => refused += 1,
            Err(_) => {}
        }
    }
    assert!(
        !held.is_empty() && held.len() <= PER_IP,
        "the flooder completed {} connections (cap {PER_IP})",
        held.len()
    );
    assert!(
        refused >= FLOOD - PER_IP - 2,
        "only {refused} of {FLOOD} connections were refused"
    );

    // An honest peer on another /16 links up while the flooder holds its
    // slots (the connections in `held` are still open).
    let honest = node("127.51.0.1:0", &[to], Limits::DEFAULT, |_| {});
    let honest_id = wait_for(&honest.view(), |s| !s.peers.is_empty()).await;
    assert_eq!(honest_id.peers.len(), 1, "{honest_id:?}");
    let s = wait_for(&target.view(), |s| s.peers.len() == 1).await;
    assert_eq!(s.peers.len(), 1, "the target does not see the honest peer");
    assert_eq!(s.peers[0].addr.ip(), addr("127.51.0.1:0").ip());
    for c in &held {
        assert!(c.close_reason().is_none(), "a held connection was closed");
    }

    flooder.close(0u32.into(), b"");
    honest.shutdown().await;
    target.shutdown().await;
}

/// A connection that completes QUIC but never opens its stream is closed
/// at the stream deadline (3 s by default), well before the 20 s
/// handshake timeout; an honest peer links up meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_stream_is_closed_at_the_stream_deadline() {
    let target = node("127.57.0.1:0", &[], Limits::DEFAULT, |c| {
        c.handshake_timeout_ms = 20_000;
    });
    let to = target.view().local_addr;
    let silent = attacker("127.58.0.1");
    let conns = (0..2)
        .map(|_| silent.connect(to, net::server_name()).unwrap())
        .collect::<Vec<_>>();
    let mut opened = Vec::new();
    for c in conns {
        opened.push(c.await.expect("the QUIC handshake completes"));
    }
    let since = Instant::now();

    let honest = node("127.59.0.1:0", &[to], Limits::DEFAULT, |_| {});

    for conn in opened {
        let closed = tokio::time::timeout(Duration::from_secs(30), conn.closed())
            .await
            .expect("the connection is closed");
        let waited = since.elapsed();
        // Generous bound: the handshake timeout is 20 s.
        assert!(
            waited < Duration::from_secs(14),
            "closed only after {waited:?}"
        );
        match closed {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(&c.reason[..], b"no stream", "{c:?}");
            }
            other => panic!("closed for another reason: {other}"),
        }
    }
    let s = wait_for(&honest.view(), |s| !s.peers.is_empty()).await;
    assert_eq!(s.peers.len(), 1, "{s:?}");
    assert_eq!(s.peers[0].addr, to);

    silent.close(0u32.into(), b"");
    honest.shutdown().await;
    target.shutdown().await;
}

/// A client-only node completes no handshake for anyone (a scan with ALPN
/// `veil/1` finds nothing), while it still links to relays and builds a
/// 3-hop circuit through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_node_accepts_no_connection_but_builds_circuits() {
    let seed = node("127.60.0.1:0", &[], Limits::DEFAULT, |_| {});
    let seed_addr = seed.view().local_addr;
    let relays = [
        seed,
        node("127.61.0.1:0", &[seed_addr], Limits::DEFAULT, |_| {}),
        node("127.62.0.1:0", &[seed_addr], Limits::DEFAULT, |_| {}),
    ];
    let client = node("127.63.0.1:0", &[seed_addr], Limits::DEFAULT, |c| {
        c.relay = false;
    });
    let view = client.view();
    assert!(!view.relay);
    assert_eq!(view.local_addr.ip(), addr("127.63.0.1:0").ip());

    // A scanner: nothing completes on the client's port (it is either
    // refused or left unanswered until the scanner gives up).
    let scanner = attacker("127.64.0.1");
    let tries: Vec<_> = (0..3)
        .map(|_| {
            let connecting = scanner
                .connect(view.local_addr, net::server_name())
                .unwrap();
            tokio::spawn(tokio::time::timeout(Duration::from_secs(5), connecting))
        })
        .collect();
    for t in tries {
        if let Ok(Ok(_)) = t.await.unwrap() {
            panic!("a client-only node completed a QUIC handshake");
        }
    }
    // The same scanner completes one with a relay.
    let relay_conn = scanner
        .connect(relays[1].view().local_addr, net::server_name())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), relay_conn)
        .await
        .expect("a relay answers")
        .expect("a relay completes the QUIC handshake");
    scanner.close(0u32.into(), b"");

    let s = wait_for(&view, |s| {
        s.circuits
            .iter()
            .any(|c| c.state == CircuitState::Built && c.hops.len() == 3)
    })
    .await;
    assert!(
        s.circuits
            .iter()
            .any(|c| c.state == CircuitState::Built && c.hops.len() == 3),
        "no built circuit: {s:?}"
    );
    assert!(!s.peers.is_empty());
    assert_eq!(s.stats.handshakes_ok_inbound, 0, "{s:?}");

    client.shutdown().await;
    for r in relays {
        r.shutdown().await;
    }
}
