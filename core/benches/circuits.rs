//! Circuit throughput benchmark: data cells through real `Node`s.
//!
//! Run with `cargo bench -p veil-core --bench circuits --features testing`.
//!
//! Eight nodes are wired together by core's in-memory test network
//! (`veil_core::testing::TestNet`: instant delivery, no transport): node 0 builds a circuit of H hops, then sends data cells
//! (full `MAX_DATA_BYTES` payloads) as fast as its flow-control window
//! allows; the last hop delivers them and answers with SENDMEs. Measured on
//! one core, in one run, for H = 1 … 4:
//! 1. the whole node path: client sealing, every relay's cell handling
//!    (reassembly, lookups, its onion layer, queueing), the last hop's
//!    delivery and the SENDMEs back;
//! 2. side by side, the onion crypto alone for the same H (the client's
//!    seal and H relays' `process_forward`), so the ratio shows what the
//!    node's bookkeeping costs on top of the crypto.
//!
//! Then, in the same run, a rendezvous session (3+3: the downloader's
//! three-hop circuit to its rendezvous point spliced to the service's
//! four-hop circuit to it), carrying end-to-end sealed session messages of
//! the same size, against the 3-hop circuit.
//!
//! QUIC is not included. Each figure is the median of 5 runs.

// A benchmark needs a clock; core's sans-IO rule (clippy.toml) is for the
// library, not for this measurement binary.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use veil_core::circuit::MAX_DATA_BYTES;
use veil_core::node::{CircuitState, Event, Millis, SendError, SessionId};
use veil_core::onion::{ForwardOutcome, HopKeys, OnionClient, RelayCrypto};
use veil_core::pow::PowParams;
use veil_core::rendezvous::{MAX_SESSION_PLAINTEXT, ServiceKey};
use veil_core::testing::{T0, TestNet};

const NODES: u8 = 8;
/// Data cells per measured run.
const CELLS: u64 = 20_000;
const REPEATS: usize = 5;

/// Eight test nodes (node 0 wants one circuit of `hops` hops) on the
/// in-memory network with no latency.
fn net(hops: usize) -> TestNet {
    TestNet::with_config(NODES, false, |i, cfg| {
        cfg.circuits.hops = hops;
        cfg.circuits.circuits_wanted = usize::from(i == 0);
    })
    .expect("a valid test config")
}

/// Runs the network until node 0 has a built circuit; returns the time.
fn build(net: &mut TestNet) -> Millis {
    let mut now = T0;
    while now < T0 + 60_000 {
        net.pump(now);
        if net.nodes()[0]
            .circuits()
            .iter()
            .any(|c| c.state == CircuitState::Built)
        {
            return now;
        }
        now += 50;
    }
    panic!("node 0 built no circuit in 60 virtual s");
}

/// Data cells delivered by last hops since the last call.
fn delivered(net: &mut TestNet) -> u64 {
    net.take_events()
        .iter()
        .filter(|(_, e)| matches!(e, Event::RelayData { .. }))
        .count() as u64
}

/// Seconds to push `CELLS` data cells through node 0's circuit. Virtual
/// time advances 200 ms per window (relay cells have no per-link rate
/// limit, so the pace does not matter); only wall time is measured.
fn node_path(net: &mut TestNet, now: &mut Millis) -> f64 {
    let c = net.nodes()[0]
        .circuits()
        .into_iter()
        .find(|c| c.state == CircuitState::Built)
        .expect("a built circuit");
    let payload = vec![0x5a; MAX_DATA_BYTES];
    delivered(net);
    let mut arrived = 0;
    let start = Instant::now();
    let mut sent = 0;
    while sent < CELLS {
        // Fill the window, then let the cells cross and the SENDMEs return.
        let before_window = sent;
        while sent < CELLS {
            match net.nodes_mut()[0].send_data(c.id, &payload) {
                Ok(()) => sent += 1,
                Err(SendError::NoCredit) => break,
                Err(e) => panic!("the circuit broke: {e}"),
            }
        }
        assert!(sent > before_window || sent == CELLS, "no credit came back");
        *now += 200;
        net.pump(*now);
        arrived += delivered(net);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(arrived, CELLS, "every cell was delivered");
    secs
}

/// Seconds for the onion crypto alone: the client's seal and `hops`
/// relays' forward processing of `CELLS` cells.
fn crypto_only(hops: usize) -> f64 {
    let mut client = OnionClient::new();
    let mut relays: Vec<RelayCrypto> = (0..hops)
        .map(|h| {
            let secret = [h as u8 + 1; 32];
            client.add_hop(HopKeys::derive(&secret)).expect("a hop");
            RelayCrypto::new(HopKeys::derive(&secret), h + 1 == hops)
        })
        .collect();
    let payload = vec![0x5a; MAX_DATA_BYTES + 3];
    let start = Instant::now();
    for _ in 0..CELLS {
        let mut body = client.seal_forward(hops - 1, &payload).expect("sealed");
        for r in &mut relays {
            match r.process_forward(&mut body[..]).expect("a good cell") {
                ForwardOutcome::Forward => {}
                ForwardOutcome::Recognised(p) => {
                    black_box(p);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    start.elapsed().as_secs_f64()
}

/// Sixteen test nodes: node 3 runs a service, node 9 opens a session to
/// it. Returns the network, the time, and both ends' session ids.
fn session_net() -> (TestNet, Millis, SessionId, SessionId) {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    let mut net = TestNet::with_config(16, false, |_, _| {}).expect("a valid test config");
    let mut now = T0;
    while now < T0 + 12_000 {
        now += 50;
        net.pump(now);
    }
    let key = ServiceKey::generate(&mut ChaCha20Rng::seed_from_u64(1), PowParams::TESTNET);
    let public = key.public();
    let sid = net.nodes_mut()[3].add_service(now, key);
    let mut intros = Vec::new();
    while intros.len() < 3 {
        now += 50;
        net.pump(now);
        intros = net.nodes()[3].intro_points(&sid);
        assert!(now < T0 + 60_000, "no introduction points");
    }
    let d = net.nodes_mut()[9]
        .connect(now, public, intros)
        .expect("connect");
    let (mut inbound, mut outbound) = (None, false);
    while inbound.is_none() || !outbound {
        now += 50;
        net.pump(now);
        for (i, e) in net.take_events() {
            match (i, e) {
                (3, Event::SessionOpened { session, .. }) => inbound = Some(session),
                (9, Event::SessionOpened { session, .. }) => outbound |= session == d,
                _ => {}
            }
        }
        assert!(now < T0 + 90_000, "no session");
    }
    (net, now, d, inbound.expect("a session"))
}

/// Seconds to push `CELLS` full session messages from node 9 to node 3
/// over a 3+3 rendezvous session.
fn session_path(net: &mut TestNet, now: &mut Millis, d: SessionId, s: SessionId) -> f64 {
    let payload = vec![0x5a; MAX_SESSION_PLAINTEXT];
    net.take_events();
    let mut arrived = 0;
    let start = Instant::now();
    let mut sent = 0;
    while sent < CELLS {
        let before_window = sent;
        while sent < CELLS {
            match net.nodes_mut()[9].session_send(d, &payload) {
                Ok(()) => sent += 1,
                Err(SendError::NoCredit) => break,
                Err(e) => panic!("the session broke: {e}"),
            }
        }
        assert!(sent > before_window || sent == CELLS, "no credit came back");
        // 500 ms per window: the two circuits may share links, and no link
        // may go over its cell-rate limit (only wall time is measured).
        *now += 500;
        net.pump(*now);
        arrived += net
            .take_events()
            .iter()
            .filter(|(i, e)| {
                *i == 3 && matches!(e, Event::SessionData { session, .. } if *session == s)
            })
            .count() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(arrived, CELLS, "every message was delivered");
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mb = (CELLS as f64 * MAX_DATA_BYTES as f64) / 1e6;
    println!("data cells of {MAX_DATA_BYTES} payload bytes, {CELLS} per run, median of {REPEATS}");
    println!();
    println!("| hops | node path MB/s | µs/cell | crypto only MB/s | µs/cell | node / crypto |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for hops in 1..=4 {
        let mut net = net(hops);
        let mut now = build(&mut net);
        let node: Vec<f64> = (0..REPEATS)
            .map(|_| node_path(&mut net, &mut now))
            .collect();
        let crypto: Vec<f64> = (0..REPEATS).map(|_| crypto_only(hops)).collect();
        let (n, c) = (median(node), median(crypto));
        println!(
            "| {hops} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} |",
            mb / n,
            n * 1e6 / CELLS as f64,
            mb / c,
            c * 1e6 / CELLS as f64,
            c / n
        );
    }
    println!();
    println!(
        "session messages of {MAX_SESSION_PLAINTEXT} bytes (one data cell each, sealed end to end), {CELLS} per run, median of {REPEATS}"
    );
    println!();
    println!("| path | MB/s | µs/message | against 3 hops |");
    println!("|---|---:|---:|---:|");
    let mut net3 = net(3);
    let mut now3 = build(&mut net3);
    let three: Vec<f64> = (0..REPEATS)
        .map(|_| node_path(&mut net3, &mut now3))
        .collect();
    let (mut snet, mut snow, d, s) = session_net();
    let session: Vec<f64> = (0..REPEATS)
        .map(|_| session_path(&mut snet, &mut snow, d, s))
        .collect();
    let (t, r) = (median(three), median(session));
    let smb = (CELLS as f64 * MAX_SESSION_PLAINTEXT as f64) / 1e6;
    println!(
        "| 3 hops (circuit) | {:.0} | {:.1} | 1.00 |",
        mb / t,
        t * 1e6 / CELLS as f64
    );
    println!(
        "| 3+3 (rendezvous session) | {:.0} | {:.1} | {:.2} |",
        smb / r,
        r * 1e6 / CELLS as f64,
        (smb / r) / (mb / t)
    );
}
