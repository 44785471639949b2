//! Circuit throughput benchmark: data cells through real `Node`s.
//!
//! Run with `cargo bench -p veil-core --bench circuits`.
//!
//! Eight nodes are wired together in memory (instant delivery, no
//! transport): node 0 builds a circuit of H hops, then sends data cells
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
//! QUIC is not included. Each figure is the median of 5 runs.

// A benchmark needs a clock; core's sans-IO rule (clippy.toml) is for the
// library, not for this measurement binary.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use veil_core::circuit::MAX_DATA_BYTES;
use veil_core::node::{CircuitState, Config, Direction, Event, LinkId, Millis, Node, SendError};
use veil_core::onion::{ForwardOutcome, HopKeys, OnionClient, RelayCrypto};
use veil_core::pow::PowParams;
use x25519_dalek::StaticSecret;

const T0: Millis = 1_800_000_000_000;
const NODES: u8 = 8;
/// Data cells per measured run.
const CELLS: u64 = 20_000;
const REPEATS: usize = 5;

fn addr(i: usize) -> SocketAddr {
    format!("127.{}.0.1:7000", i + 1)
        .parse()
        .expect("literal address")
}

/// Nodes wired by address, cells delivered at once.
struct Net {
    nodes: Vec<Node>,
    wires: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    next_link: u64,
    /// Data cells each node delivered as a last hop.
    delivered: Vec<u64>,
}

impl Net {
    fn new(hops: usize) -> Net {
        let nodes = (0..NODES as usize)
            .map(|i| {
                let k = i as u8 + 1;
                let id = veil_core::identity::NodeIdentity::from_keys(
                    SigningKey::from_bytes(&[k; 32]),
                    StaticSecret::from([k ^ 0xaa; 32]),
                    PowParams::TESTNET,
                );
                let mut cfg = Config::testnet();
                cfg.advertised_addr = Some(addr(i));
                cfg.bootstrap = vec![addr(0)];
                cfg.circuits.hops = hops;
                cfg.circuits.circuits_wanted = usize::from(i == 0);
                Node::new(id, cfg.validate().expect("valid config"), [k; 32], T0)
            })
            .collect();
        Net {
            nodes,
            wires: BTreeMap::new(),
            next_link: 1,
            delivered: vec![0; NODES as usize],
        }
    }

    fn pump(&mut self, now: Millis) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].poll_transmit() {
                    progressed = true;
                    self.nodes[i].handle_link_sent(now, t.link, 1);
                    if let Some(&(j, pl)) = self.wires.get(&(i, t.link)) {
                        self.nodes[j].handle_link_data(now, pl, t.cell.as_bytes());
                    }
                }
                while let Some(e) = self.nodes[i].poll_event() {
                    progressed = true;
                    match e {
                        Event::Connect { addr: a, .. } => {
                            let j = (0..self.nodes.len())
                                .find(|&j| addr(j) == a)
                                .expect("a known address");
                            let (la, lb) = (LinkId(self.next_link), LinkId(self.next_link + 1));
                            self.next_link += 2;
                            self.wires.insert((i, la), (j, lb));
                            self.wires.insert((j, lb), (i, la));
                            self.nodes[i].handle_link_up(now, la, Direction::Outbound, a, [1; 32]);
                            self.nodes[j].handle_link_up(
                                now,
                                lb,
                                Direction::Inbound,
                                addr(i),
                                [1; 32],
                            );
                        }
                        Event::Close { link } => {
                            if let Some((j, pl)) = self.wires.remove(&(i, link)) {
                                self.wires.remove(&(j, pl));
                                self.nodes[j].handle_link_down(now, pl);
                            }
                        }
                        Event::RelayData { .. } => self.delivered[i] += 1,
                        _ => {}
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Runs timers until node 0 has a built circuit; returns the time.
    fn build(&mut self) -> Millis {
        let mut now = T0;
        while now < T0 + 60_000 {
            for n in &mut self.nodes {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
            self.pump(now);
            if self.nodes[0]
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
}

/// Seconds to push `CELLS` data cells through node 0's circuit. Virtual
/// time advances 200 ms per window, so no link goes over its cell-rate
/// limit (`Config::max_cells_per_sec`); only wall time is measured.
fn node_path(net: &mut Net, now: &mut Millis) -> f64 {
    let c = net.nodes[0]
        .circuits()
        .into_iter()
        .find(|c| c.state == CircuitState::Built)
        .expect("a built circuit");
    let payload = vec![0x5a; MAX_DATA_BYTES];
    let before: u64 = net.delivered.iter().sum();
    let start = Instant::now();
    let mut sent = 0;
    while sent < CELLS {
        // Fill the window, then let the cells cross and the SENDMEs return.
        let before_window = sent;
        while sent < CELLS {
            match net.nodes[0].send_data(c.id, &payload) {
                Ok(()) => sent += 1,
                Err(SendError::NoCredit) => break,
                Err(e) => panic!("the circuit broke: {e}"),
            }
        }
        assert!(sent > before_window || sent == CELLS, "no credit came back");
        *now += 200;
        net.pump(*now);
    }
    let secs = start.elapsed().as_secs_f64();
    let after: u64 = net.delivered.iter().sum();
    assert_eq!(after - before, CELLS, "every cell was delivered");
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
        let mut net = Net::new(hops);
        let mut now = net.build();
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
}
