//! [`TestNet`]: the network with no latency, standard test identities, a
//! tamper closure and a record of every event, for core's unit tests and
//! benches.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ed25519_dalek::SigningKey;
use x25519_dalek::StaticSecret;

use super::{Hooks, Immediate, Network, Verdict};
use crate::cell::Cell;
use crate::identity::NodeIdentity;
use crate::node::{Config, Event, LinkId, Millis, Node, Observation};
use crate::pow::PowParams;

/// Virtual time at which test networks start (a plausible Unix-millisecond
/// timestamp for descriptors).
pub const T0: Millis = 1_800_000_000_000;

/// A tamper closure: sees every cell (sender index, receiver index, cell)
/// as it enters the network, may change it, and says what becomes of it.
pub type Tamper = Box<dyn FnMut(usize, usize, &mut Cell) -> Verdict>;

/// The address of test node `k` (`k` ≥ 1): `127.k.0.1:7000`.
pub fn test_addr(k: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, k, 0, 1)), 7000)
}

/// Test node `k` (`k` ≥ 1): keys and seed derived from `k`, testnet
/// config, advertised at [`test_addr`]`(k)`, bootstrapping from
/// `bootstrap`; `tweak` may change the config before it is checked.
pub fn test_node(
    k: u8,
    bootstrap: Vec<SocketAddr>,
    tweak: impl FnOnce(&mut Config),
) -> Result<Node, String> {
    let id = NodeIdentity::from_keys(
        SigningKey::from_bytes(&[k; 32]),
        StaticSecret::from([k ^ 0xaa; 32]),
        PowParams::TESTNET,
    );
    let mut cfg = Config::testnet();
    cfg.advertised_addr = Some(test_addr(k));
    cfg.bootstrap = bootstrap;
    tweak(&mut cfg);
    Ok(Node::new(id, cfg.validate()?, [k; 32], T0))
}

/// The hooks of a [`TestNet`].
#[derive(Default)]
struct Recorder {
    tamper: Option<Tamper>,
    events: Vec<(usize, Event)>,
    observations: Vec<(usize, Observation)>,
}

impl Hooks for Recorder {
    fn on_transmit(
        &mut self,
        _: Millis,
        from: usize,
        to: usize,
        _: LinkId,
        cell: &mut Cell,
    ) -> Verdict {
        match self.tamper.as_mut() {
            Some(f) => f(from, to, cell),
            None => Verdict::Deliver,
        }
    }

    fn on_event(&mut self, _: Millis, node: usize, event: Event) {
        self.events.push((node, event));
    }

    fn on_observations(&mut self, node: usize, seen: Vec<Observation>) {
        self.observations
            .extend(seen.into_iter().map(|o| (node, o)));
    }
}

/// `n` test nodes on a network with no latency: node index `i` is
/// [`test_node`]`(i + 1)`, at [`test_addr`]`(i + 1)`, bootstrapping from
/// node 0. Nodes start at the first [`TestNet::pump`].
pub struct TestNet {
    net: Network<Immediate>,
    rec: Recorder,
    started: bool,
}

impl fmt::Debug for TestNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNet")
            .field("net", &self.net)
            .field("events", &self.rec.events.len())
            .field("tampering", &self.rec.tamper.is_some())
            .finish()
    }
}

impl TestNet {
    /// `n` test nodes; with `bindings_differ`, the two ends of every link
    /// get different channel bindings (a spliced link).
    pub fn new(n: u8, bindings_differ: bool) -> Result<TestNet, String> {
        TestNet::with_config(n, bindings_differ, |_, _| {})
    }

    /// As [`TestNet::new`], with `tweak(node index, config)` applied to
    /// each node's config.
    pub fn with_config(
        n: u8,
        bindings_differ: bool,
        mut tweak: impl FnMut(usize, &mut Config),
    ) -> Result<TestNet, String> {
        let mut net = Network::new(Immediate, T0);
        net.splice_bindings(bindings_differ);
        for k in 1..=n {
            let i = usize::from(k - 1);
            let node = test_node(k, vec![test_addr(1)], |c| tweak(i, c))?;
            net.add_node(test_addr(k), node);
        }
        Ok(TestNet {
            net,
            rec: Recorder::default(),
            started: false,
        })
    }

    /// The network underneath.
    pub fn network(&self) -> &Network<Immediate> {
        &self.net
    }

    /// Every node, by index.
    pub fn nodes(&self) -> &[Node] {
        self.net.nodes()
    }

    /// Every node, to give one input directly (the next
    /// [`TestNet::pump`] collects its outputs).
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        self.net.nodes_mut()
    }

    /// Sets or clears the tamper closure.
    pub fn set_tamper(&mut self, tamper: Option<Tamper>) {
        self.rec.tamper = tamper;
    }

    /// Every event nodes emitted so far, with the emitting node's index.
    pub fn events(&self) -> &[(usize, Event)] {
        &self.rec.events
    }

    /// Takes the events recorded so far.
    pub fn take_events(&mut self) -> Vec<(usize, Event)> {
        std::mem::take(&mut self.rec.events)
    }

    /// Takes what node `i` recorded as a relay (with observing on) since
    /// the last call.
    pub fn take_observations(&mut self, i: usize) -> Vec<Observation> {
        let (mine, rest) = std::mem::take(&mut self.rec.observations)
            .into_iter()
            .partition(|(n, _)| *n == i);
        self.rec.observations = rest;
        mine.into_iter().map(|(_, o)| o).collect::<Vec<_>>()
    }

    /// Node `i` dies silently: its links stay open at its peers, dials to
    /// it fail, cells to it vanish, its timer stops.
    pub fn kill_silently(&mut self, i: usize) {
        self.net.freeze(i);
    }

    /// Node `i` goes offline and its links drop at both ends.
    pub fn kill(&mut self, i: usize) {
        self.net.kill(i, &mut self.rec);
    }

    /// Whether node `i` is dead (killed, silently or not).
    pub fn is_dead(&self, i: usize) -> bool {
        self.started && !self.net.is_online(i)
    }

    /// The other end of node `i`'s `link`: (peer index, peer's link).
    pub fn peer_of(&self, i: usize, link: LinkId) -> Option<(usize, LinkId)> {
        self.net.peer_of(i, link)
    }

    /// Node `i`'s newest open link to node `j`.
    pub fn link_to(&self, i: usize, j: usize) -> Option<LinkId> {
        self.net.link_to(i, j)
    }

    /// Holds node `i`'s outgoing cells on `link` until
    /// [`TestNet::release`]: taken from the node but neither delivered nor
    /// reported written.
    pub fn stall(&mut self, i: usize, link: LinkId) {
        self.net.stall(i, link);
    }

    /// Stalls every open link of node `i`.
    pub fn stall_all(&mut self, i: usize) {
        for (l, ..) in self.net.links(i) {
            self.net.stall(i, l);
        }
    }

    /// Links currently stalled: (node index, link).
    pub fn stalled(&self) -> Vec<(usize, LinkId)> {
        self.net.stalled()
    }

    /// At `now`, releases a stalled link: its held cells are delivered in
    /// order and reported written, and the network runs until quiet.
    pub fn release(&mut self, now: Millis, i: usize, link: LinkId) {
        self.pump(now);
        self.net.release(i, link, &mut self.rec);
        self.pump(now);
    }

    /// Runs everything due by `now` until the network is quiet: outputs of
    /// direct inputs, cells (delivered at once), dials, closes, timers.
    /// `now` may be earlier than the last call (a clock stepped back).
    pub fn pump(&mut self, now: Millis) {
        if now < self.net.now() {
            self.net.set_now(now);
        }
        if !self.started {
            self.started = true;
            for i in 0..self.net.nodes().len() {
                self.net.start(i, &mut self.rec);
            }
        }
        self.net.drain_all(&mut self.rec);
        while self.net.run_until(now, &mut self.rec).is_some() {}
    }

    /// Runs from [`T0`] until `until`.
    pub fn run(&mut self, until: Millis) {
        self.run_from(T0, until);
    }

    /// Runs from `from` until `until`: timers fire when due.
    pub fn run_from(&mut self, from: Millis, until: Millis) {
        self.pump(from);
        self.pump(until);
    }
}
