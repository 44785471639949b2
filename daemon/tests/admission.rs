//! Admission of inbound connections, against in-process QUIC drivers on
//! loopback (one /16 per node): a new address is sent a QUIC Retry before
//! it is counted, a flooding address and a flooding /24 get only their
//! share of the pending slots, a connection that opens no stream is closed
//! at the stream deadline, and a client-only node completes no handshake
//! for anyone, binds a fresh port and answers no probe at all. In each,
//! honest nodes keep linking.
//!
//! Spoofed source addresses cannot be sent on loopback; what protects
//! against them is that only an address that came back with its Retry
//! token (and so receives packets there) is counted, which
//! `a_new_address_is_sent_a_retry_before_it_counts` shows happening.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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

/// Open `n` QUIC connections from `from` to `to`, each given 20 s: the
/// ones that completed, and how many were refused.
async fn flood(
    from: &quinn::Endpoint,
    to: SocketAddr,
    n: usize,
) -> (Vec<quinn::Connection>, usize) {
    let tries: Vec<_> = (0..n)
        .map(|_| {
            let connecting = from.connect(to, net::server_name()).unwrap();
            tokio::spawn(tokio::time::timeout(Duration::from_secs(20), connecting))
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(Ok(conn)) => held.push(conn),
            Ok(Err(_)) => refused += 1,
            Err(_) => {}
        }
    }
    (held, refused)
}

/// A UDP relay on `ip` between one QUIC client (whoever sends to it) and
/// `target`, recording the first byte of every datagram `target` sends
/// back (the client connects to [`Tap::addr`]).
struct Tap {
    addr: SocketAddr,
    from_target: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn start(ip: &str, target: SocketAddr) -> Tap {
        let socket = tokio::net::UdpSocket::bind(addr(&format!("{ip}:0")))
            .await
            .unwrap();
        let from_target = Arc::new(Mutex::new(Vec::new()));
        let seen = from_target.clone();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut client = None;
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if from == target {
                    seen.lock().unwrap().push(buf.first().copied().unwrap_or(0));
                    if let Some(c) = client {
                        let _ = socket.send_to(&buf[..n], c).await;
                    }
                } else {
                    client = Some(from);
                    let _ = socket.send_to(&buf[..n], target).await;
                }
            }
        });
        Tap {
            addr,
            from_target,
            task,
        }
    }

    /// First bytes of the datagrams `target` sent so far.
    fn seen(&self) -> Vec<u8> {
        self.from_target.lock().unwrap().clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a datagram starting with `b` is a QUIC v1 long-header packet
/// of this type (0 Initial, 2 Handshake, 3 Retry). The fixed bit (0x40)
/// is not checked: peers may grease it (RFC 9287).
fn long_header(b: u8, ty: u8) -> bool {
    b & 0x80 != 0 && (b >> 4) & 0x03 == ty
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
        ..Limits::DEFAULT
    };
    let target = node("127.52.0.1:0", &[], limits, |c| {
        c.max_pending_handshakes = 6;
        c.handshake_timeout_ms = 60_000;
    });
    let to = target.view().local_addr;

    let flooder = attacker("127.50.0.1");
    let (held, refused) = flood(&flooder, to, FLOOD).await;
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

/// Many addresses of one /24 (127.50.0.2 to 127.50.0.9, two connections
/// each, so no address reaches its own cap and the total is never
/// reached) together get only the /24's share of the pending slots; an
/// address of the next /24 still completes QUIC, and an honest peer on
/// another /16 links up while the /24 holds its slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_24_gets_only_its_share_of_pending_slots() {
    const PER_IP: usize = 2;
    const PER_24: usize = 5;
    const ADDRESSES: usize = 8;
    let limits = Limits {
        max_pending_per_ip: PER_IP,
        max_pending_per_24: PER_24,
        first_stream_timeout: Duration::from_secs(60),
        ..Limits::DEFAULT
    };
    // 2 * 8 = 16 slots: the flood (16 connections) fits in the total and
    // every address stays within its own cap; only the /24 cap binds.
    let target = node("127.52.0.1:0", &[], limits, |c| {
        c.max_pending_handshakes = 8;
        c.handshake_timeout_ms = 60_000;
    });
    let to = target.view().local_addr;

    let flooders: Vec<quinn::Endpoint> = (0..ADDRESSES)
        .map(|i| attacker(&format!("127.50.0.{}", i + 2)))
        .collect();
    let floods: Vec<_> = flooders
        .iter()
        .map(|f| {
            let f = f.clone();
            tokio::spawn(async move { flood(&f, to, PER_IP).await })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for f in floods {
        let (h, r) = f.await.unwrap();
        held.extend(h);
        refused += r;
    }
    let tried = ADDRESSES * PER_IP;
    assert!(
        !held.is_empty() && held.len() <= PER_24,
        "the /24 completed {} connections (cap {PER_24})",
        held.len()
    );
    assert!(
        refused >= tried - PER_24 - 2,
        "only {refused} of {tried} connections were refused"
    );

    // The cap is per /24, not wider: the next /24 gets in.
    let neighbour = attacker("127.50.1.2");
    let (next_24, _) = flood(&neighbour, to, 1).await;
    assert_eq!(
        next_24.len(),
        1,
        "a connection from the next /24 was refused"
    );
    drop(next_24);
    neighbour.close(0u32.into(), b"");

    // An honest peer on another /16 links up while the /24 holds its
    // slots.
    let honest = node("127.51.0.1:0", &[to], Limits::DEFAULT, |_| {});
    let s = wait_for(&honest.view(), |s| !s.peers.is_empty()).await;
    assert_eq!(s.peers.len(), 1, "{s:?}");
    let s = wait_for(&target.view(), |s| s.peers.len() == 1).await;
    assert_eq!(s.peers.len(), 1, "the target does not see the honest peer");
    assert_eq!(s.peers[0].addr.ip(), addr("127.51.0.1:0").ip());
    for c in &held {
        assert!(c.close_reason().is_none(), "a held connection was closed");
    }

    for f in &flooders {
        f.close(0u32.into(), b"");
    }
    honest.shutdown().await;
    target.shutdown().await;
}

/// A relay answers the first Initial from an address it has not validated
/// with a QUIC Retry (so a spoofed source, which never sees the Retry,
/// holds no pending slot); the client comes back with the token and the
/// connection completes. Seen through a UDP tap between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_is_sent_a_retry_before_it_counts() {
    let target = node("127.53.0.1:0", &[], Limits::DEFAULT, |_| {});
    let tap = Tap::start("127.54.0.1", target.view().local_addr).await;
    let client = attacker("127.55.0.1");
    let conn = tokio::time::timeout(
        Duration::from_secs(20),
        client.connect(tap.addr, net::server_name()).unwrap(),
    )
    .await
    .expect("the handshake completes in time")
    .expect("the handshake completes after the Retry");
    assert!(net::has_veil_alpn(&conn));
    let seen = tap.seen();
    assert!(
        seen.first().is_some_and(|&b| long_header(b, 3)),
        "the relay's first answer is not a Retry: {seen:02x?}"
    );
    assert_eq!(
        seen.iter().filter(|&&b| long_header(b, 3)).count(),
        1,
        "more than one Retry: {seen:02x?}"
    );
    assert!(
        seen.iter().any(|&b| long_header(b, 0)),
        "no Initial after the Retry: {seen:02x?}"
    );
    conn.close(0u32.into(), b"");
    client.close(0u32.into(), b"");
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
/// `veil/1` finds nothing), binds a fresh port instead of the configured
/// one, and sends nothing at all back to a scanner's Initials (not even a
/// stateless reset, which a default quinn client endpoint does send),
/// while it still links to relays and builds a 3-hop circuit through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_node_accepts_no_connection_but_builds_circuits() {
    let seed = node("127.60.0.1:0", &[], Limits::DEFAULT, |_| {});
    let seed_addr = seed.view().local_addr;
    let relays = [
        seed,
        node("127.61.0.1:0", &[seed_addr], Limits::DEFAULT, |_| {}),
        node("127.62.0.1:0", &[seed_addr], Limits::DEFAULT, |_| {}),
    ];
    let client = node("127.63.0.1:7171", &[seed_addr], Limits::DEFAULT, |c| {
        c.relay = false;
    });
    let view = client.view();
    assert!(!view.relay);
    assert_eq!(view.local_addr.ip(), addr("127.63.0.1:0").ip());
    assert_ne!(
        view.local_addr.port(),
        7171,
        "the configured port was bound"
    );
    assert_ne!(view.local_addr.port(), 0);

    // Real Initials (with retransmissions) through a tap: the client-only
    // node sends back nothing at all. The same probe against a default
    // quinn client endpoint draws stateless resets, so the tap would see
    // them.
    let plain = quinn::Endpoint::client(addr("127.66.0.1:0")).unwrap();
    for (target, silent) in [
        (view.local_addr, true),
        (plain.local_addr().unwrap(), false),
    ] {
        let tap = Tap::start("127.64.0.2", target).await;
        let prober = attacker("127.64.0.3");
        for _ in 0..3 {
            let connecting = prober.connect(tap.addr, net::server_name()).unwrap();
            let done = tokio::time::timeout(Duration::from_secs(2), connecting).await;
            assert!(!matches!(done, Ok(Ok(_))), "a handshake completed");
        }
        let seen = tap.seen();
        if silent {
            assert!(
                seen.is_empty(),
                "the client-only node answered: {seen:02x?}"
            );
        } else {
            assert!(!seen.is_empty(), "a default client endpoint did not answer");
        }
        prober.close(0u32.into(), b"");
    }
    plain.close(0u32.into(), b"");

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
