//! The simulator: core's in-memory network ([`veil_core::testing`]) with a
//! network model, adversaries and metrics added.
//!
//! The simulator is a second driver of the very same state machine the
//! daemon drives over QUIC, and the same loop core's unit tests use. Its
//! network model ([`RingModel`]): links are reliable and ordered byte
//! streams between two nodes, with a latency per node pair (a ring
//! distance) and an uplink bandwidth per node; loss appears as delay (a
//! reliable transport retransmits) and as dropped links. Everything is
//! derived from one seed, events are ordered by (virtual time, sequence
//! number), and all maps are ordered, so a run replays identically.
//!
//! The harness's own events (joins, flooder rounds, circuit phases,
//! tampering, a crash; with a search workload ([`crate::search`]) also
//! publication, searches and churn; with downloads ([`crate::download`])
//! the users' downloads) run in the network's queue; adversaries
//! ([`crate::adversary`]) and metrics ([`crate::metrics`]) see cells and
//! node events through the network's [`Hooks`].
//!
//! Hooks see events but cannot give a node input. With downloads the
//! harness is also the driver of every service node and every user, so it
//! runs the network in slices of [`DRIVER_TICK_MS`] and, after each,
//! carries out what the hooks queued (`Pending`): pieces read for
//! `PieceWanted`, a user's pick when its search ended. A run without
//! downloads runs in one piece, as it always did.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use veil_core::cell::{CELL_SIZE, Cell, command};
use veil_core::identity::{NodeId, NodeIdentity};
use veil_core::node::{
    CircuitId, CircuitInfo, CircuitState, Config, Event, LinkId, Millis, Node, Observation, Purpose,
};
use veil_core::testing::{Control, Delivery, Hooks, Model, Network, Verdict, WireId, WireInfo};
use veil_core::transfer::Bitfield;

use crate::adversary::{self, Flooders, Forgers, Role};
use crate::download::{DownloadOutcome, Downloads, Pending};
use crate::metrics::{Metrics, View};
use crate::position::Observed;
use crate::search::{SearchOutcome, Workload};

pub use crate::metrics::{BuiltCircuit, Outcome, PickShares};
pub use crate::scenario::{EPOCH_MS, Scenario, Tamper, node_addr};

/// With downloads, the harness acts on what its hooks queued at least
/// this often (virtual ms): a service's driver answers a request within
/// it.
pub const DRIVER_TICK_MS: Millis = 1;

/// The simulator's network model: one-way latency from the nodes' distance
/// on a ring, scaled to the scenario's range; a cell's serialisation time
/// from each node's uplink bandwidth.
#[derive(Debug, Clone)]
pub struct RingModel {
    latency_ms: (u64, u64),
    ring: Vec<u64>,
    serialise_ms: Vec<Millis>,
}

impl Model for RingModel {
    fn latency(&self, a: usize, b: usize) -> Millis {
        let (lo, hi) = self.latency_ms;
        let pa = self.ring[a];
        let pb = self.ring[b];
        let d = pa.wrapping_sub(pb).min(pb.wrapping_sub(pa));
        // d is at most 2^63: scale to [lo, hi].
        lo + ((hi - lo) as u128 * d as u128 / (1u128 << 63)) as u64
    }

    fn serialise_ms(&self, node: usize) -> Millis {
        self.serialise_ms[node]
    }

    fn dial_ms(&self) -> Millis {
        self.latency_ms.0
    }

    fn dial_failed_ms(&self) -> Millis {
        2 * self.latency_ms.1
    }

    /// The acceptor sees the dialler's source address: an ephemeral port,
    /// not its listening address.
    fn source_addr(&self, dialler: SocketAddr, wire: WireId) -> SocketAddr {
        SocketAddr::new(dialler.ip(), 40000 + (wire % 20000) as u16)
    }
}

/// The harness's own events, in the network's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A node joins the network.
    Join { node: usize },
    /// A flooder's attack round.
    FloodRound { node: usize },
    /// Every node starts (`true`) or stops starting circuit builds.
    Circuits { start: bool },
    /// Tamperers turn bad; every built circuit carries a data cell and a
    /// probe.
    Tamper,
    /// Some nodes crash.
    Crash,
    /// Sharers and poisoners publish (search workload).
    Publish,
    /// One search starts (search workload).
    Search,
    /// One node leaves and a new one joins (churn).
    Churn,
    /// A user starts a download (download workload).
    Download,
}

/// Everything but the network: the scenario, roles, the harness's RNG,
/// adversaries and metrics. It is the network's [`Hooks`].
#[derive(Debug)]
struct Harness {
    scenario: Scenario,
    roles: Vec<Role>,
    rng: ChaCha20Rng,
    by_id: BTreeMap<NodeId, usize>,
    flooders: Flooders,
    forgers: Forgers,
    tampering: bool,
    metrics: Metrics,
    /// The search workload, if the scenario asks for one.
    work: Option<Workload>,
    /// The download workload, if the scenario asks for downloads.
    dl: Option<Downloads>,
    /// Circuits each node is asked to keep now.
    circuits_wanted: usize,
    /// The node config, for nodes joining later (churn).
    config: Config,
}

impl Hooks for Harness {
    /// The channel binding: equal at both ends of a genuine link.
    fn binding(&mut self, _: WireId, _: usize, _: usize) -> [u8; 32] {
        let mut binding = [0u8; 32];
        self.rng.fill_bytes(&mut binding);
        binding
    }

    fn on_transmit(
        &mut self,
        now: Millis,
        from: usize,
        to: usize,
        _: LinkId,
        cell: &mut Cell,
    ) -> Verdict {
        if cell.circ_id() != 0 {
            self.metrics
                .circuit_cell_sizes
                .insert(cell.as_bytes().len());
        }
        let verdict = if self.tampering && self.roles[from].tamperer {
            adversary::tamper(self.scenario.tamper, from, cell)
        } else {
            Verdict::Deliver
        };
        if cell.command() == command::DESTROY && verdict != Verdict::Drop {
            tracing::trace!(
                t = now - EPOCH_MS,
                from,
                to,
                reason = ?cell.link_payload().ok(),
                "destroy"
            );
        }
        verdict
    }

    fn on_deliver(
        &mut self,
        ctl: &mut Control<'_>,
        to: usize,
        link: LinkId,
        _: usize,
        cell: &Cell,
    ) -> Delivery {
        let role = self.roles[to];
        if role.flooder && self.flooders.intercept(&mut self.rng, ctl, to, link, cell) {
            return Delivery::Consumed;
        }
        if role.forger && self.forgers.intercept(&self.by_id, ctl, to, link, cell) {
            return Delivery::Consumed;
        }
        Delivery::ToNode
    }

    fn on_event(&mut self, now: Millis, node: usize, event: Event) {
        if let Some(w) = &mut self.work {
            w.on_event(now, node, &event);
            if let Some(d) = &mut self.dl {
                d.on_event(now, node, &event, w);
            }
        }
        if let Event::LinkUp { peer, .. } = &event
            && self.roles[node].forger
        {
            self.forgers.learns(&self.by_id, node, peer);
        }
        self.metrics
            .on_event(&self.roles, &self.by_id, now, node, event);
    }

    fn on_close(&mut self, now: Millis, wire: WireId, closer: usize, info: WireInfo) {
        if info.failed {
            tracing::debug!(
                wire,
                node = closer,
                after_ms = now - info.opened_ms,
                "wire refused or failed"
            );
        }
    }

    fn on_observations(&mut self, node: usize, seen: Vec<Observation>) {
        self.metrics.on_observations(&self.scenario, node, seen);
    }
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    net: Network<RingModel, Kind>,
    h: Harness,
}

impl Sim {
    /// Build the network: identities, nodes, the seed list, join times.
    pub fn new(scenario: Scenario, config: &Config) -> Sim {
        let mut scenario = scenario;
        scenario.extend_for_searches(config.search.search_timeout_ms);
        let timeout = config.search.search_timeout_ms;
        let mut work = scenario
            .search
            .active()
            .then(|| Workload::new(&scenario, timeout));
        let dl = (scenario.search.downloads > 0).then(|| Downloads::new(&scenario));
        let mut rng = ChaCha20Rng::seed_from_u64(scenario.seed);
        let n = scenario.nodes;
        let roles = adversary::draw_roles(&mut rng, &scenario);
        let mut nodes = Vec::with_capacity(n);
        let mut ring = Vec::with_capacity(n);
        let mut serialise_ms = Vec::with_capacity(n);
        for (i, role) in roles.iter().enumerate() {
            let mut id_seed = [0u8; 32];
            rng.fill_bytes(&mut id_seed);
            let mut id_rng = ChaCha20Rng::from_seed(id_seed);
            let identity = NodeIdentity::generate(&mut id_rng, config.pow);
            let mut node_seed = [0u8; 32];
            rng.fill_bytes(&mut node_seed);
            let node = make_node(&scenario, config, i, role, identity, node_seed, EPOCH_MS);
            let (lo, hi) = scenario.uplink_bytes_per_ms;
            let bw = lo + rng.next_u64() % (hi - lo + 1).max(1);
            serialise_ms.push((CELL_SIZE as u64).div_ceil(bw.max(1)));
            ring.push(rng.next_u64());
            nodes.push(node);
        }
        let flooders = Flooders::new(&nodes, &roles);
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.node_id(), i))
            .collect();
        if let Some(w) = &mut work {
            // Places and uplinks of the nodes churn will add, from the
            // workload's RNG.
            let (lo, hi) = scenario.uplink_bytes_per_ms;
            for _ in 0..churn_joins(&scenario) {
                let bw = lo + w.rng.next_u64() % (hi - lo + 1).max(1);
                serialise_ms.push((CELL_SIZE as u64).div_ceil(bw.max(1)));
                ring.push(w.rng.next_u64());
            }
            let candidates: Vec<usize> = (scenario.seed_nodes.min(n)..n)
                .filter(|&i| !roles[i].adversary())
                .collect();
            let count = ((n as f64) * scenario.search.poisoners).round() as usize;
            w.choose_poisoners(&candidates, count, dl.is_some());
        }
        let model = RingModel {
            latency_ms: scenario.latency_ms,
            ring,
            serialise_ms,
        };
        let mut net = Network::new(model, EPOCH_MS);
        for (i, node) in nodes.into_iter().enumerate() {
            net.add_node(node_addr(i), node);
        }
        let forgers = Forgers::new(scenario.seed);
        let mut sim = Sim {
            net,
            h: Harness {
                scenario,
                roles,
                rng,
                by_id,
                flooders,
                forgers,
                tampering: false,
                metrics: Metrics::default(),
                work,
                dl,
                circuits_wanted: 0,
                config: config.clone(),
            },
        };
        let s = &sim.h.scenario;
        if s.circuits_per_node > 0 {
            // Builds start once the network formed, and stop a build
            // timeout before the end, so that every build counted had its
            // full time.
            let start = EPOCH_MS + s.circuits_start_ms;
            let stop = (EPOCH_MS + s.duration_ms).saturating_sub(s.build_timeout_ms);
            let crash = (s.crash_fraction > 0.0).then_some(EPOCH_MS + s.crash_at_ms);
            let tamper = (s.tamperers > 0.0).then_some(EPOCH_MS + s.tamper_from_ms);
            sim.net.schedule(start, Kind::Circuits { start: true });
            sim.net
                .schedule(stop.max(start), Kind::Circuits { start: false });
            if let Some(at) = crash {
                sim.net.schedule(at, Kind::Crash);
            }
            if let Some(at) = tamper {
                sim.net.schedule(at, Kind::Tamper);
            }
        }
        for i in 0..n {
            // Seeds first, the rest spread over the join window.
            let at = if i < sim.h.scenario.seed_nodes {
                EPOCH_MS
            } else {
                EPOCH_MS + sim.h.rng.next_u64() % sim.h.scenario.join_window_ms.max(1)
            };
            sim.net.schedule(at, Kind::Join { node: i });
        }
        if sim.h.work.is_some() {
            sim.schedule_workload();
        }
        if sim.h.roles.iter().any(|r| r.forger) {
            let share = sim.h.scenario.forge_target_share;
            sim.h.forgers.pick_targets(&sim.h.roles, share);
            tracing::debug!(targets = ?sim.h.forgers.targets, "forgers chose their targets");
        }
        sim
    }

    /// Run until the scenario's duration has passed.
    pub fn run(&mut self) {
        let end = EPOCH_MS + self.h.scenario.duration_ms;
        if self.h.dl.is_none() {
            while let Some(kind) = self.net.run_until(end, &mut self.h) {
                self.step(kind);
            }
            return;
        }
        loop {
            let until = (self.net.now() + DRIVER_TICK_MS).min(end);
            let kind = self.net.run_until(until, &mut self.h);
            let done = kind.is_none() && until >= end;
            if let Some(kind) = kind {
                self.step(kind);
            }
            self.drive();
            if done {
                break;
            }
        }
    }

    /// Carries out what the hooks queued for the download workload, in
    /// order, until nothing is left.
    fn drive(&mut self) {
        let now = self.net.now();
        while let Some(p) = self.h.dl.as_mut().and_then(|d| d.pending.pop_front()) {
            let (Some(w), Some(d)) = (&self.h.work, &mut self.h.dl) else {
                return;
            };
            match p {
                Pending::Serve { node, session, req } => {
                    if !self.net.is_online(node) {
                        continue;
                    }
                    let Some(reply) = d.serve(node, &req, &w.catalog.library) else {
                        continue;
                    };
                    self.net.nodes_mut()[node].serve_piece(now, session, &reply);
                    self.net.drain(node, &mut self.h);
                }
                Pending::Choose { k } => {
                    let online = |i| self.net.is_online(i);
                    let Some((node, id, size)) = d.choose(k, w, now, online) else {
                        continue;
                    };
                    let r = self.net.nodes_mut()[node].download(now, id, size, Bitfield::new(size));
                    d.started(k, r, size, now);
                    self.net.drain(node, &mut self.h);
                }
                Pending::Opened { node, id } => {
                    let nodes = self.net.nodes();
                    let of = |i: usize, purpose| -> Vec<CircuitInfo> {
                        nodes[i]
                            .circuits()
                            .into_iter()
                            .filter(|c| c.purpose == purpose)
                            .collect()
                    };
                    let join = of(node, Purpose::Join);
                    let meets: Vec<(usize, Vec<CircuitInfo>)> = d
                        .downloading(&id)
                        .into_iter()
                        .map(|i| (i, of(i, Purpose::Meet)))
                        .collect();
                    let (by_id, roles) = (&self.h.by_id, &self.h.roles);
                    let colluder = |id: &_| by_id.get(id).is_some_and(|&i| roles[i].colluder);
                    d.opened(node, id, &join, &meets, colluder, |i| roles[i].colluder);
                }
                Pending::Rate { node, rating } => {
                    if self.net.is_online(node) {
                        self.net.nodes_mut()[node].rate(now, *rating);
                        self.net.drain(node, &mut self.h);
                    }
                }
            }
        }
    }

    /// One of the harness's own events, at the network's current time.
    fn step(&mut self, kind: Kind) {
        let now = self.net.now();
        let (net, h) = (&mut self.net, &mut self.h);
        match kind {
            Kind::Join { node } => {
                net.start(node, h);
                if h.roles[node].flooder {
                    net.schedule(now + 1_000, Kind::FloodRound { node });
                }
            }
            Kind::FloodRound { node } => {
                if let Some(targets) = adversary::flood_targets(net, &h.roles, node) {
                    adversary::flood(net, h, node, &targets);
                }
                let at = now + net.nodes()[node].config().round_ms;
                net.schedule(at, Kind::FloodRound { node });
            }
            Kind::Crash => {
                let n = net.nodes().len();
                let s = &h.scenario;
                let (k, victims) =
                    adversary::crash_victims(&mut h.rng, n, s.seed_nodes, s.crash_fraction);
                for (i, node) in net.nodes().iter().enumerate() {
                    if let Some(g) = node.guards().first() {
                        h.metrics.guard_at_crash.insert(i, g.id);
                    }
                }
                for &i in &victims {
                    h.metrics.crashed.insert(i);
                    net.kill(i, h);
                }
                h.metrics.counts.crashed = k as u64;
            }
            Kind::Tamper => {
                h.tampering = true;
                let live: Vec<((usize, u64), Vec<usize>)> = h
                    .metrics
                    .live
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                for ((i, id), path) in live {
                    let payload = format!("veil-sim data from {i} on {id}").into_bytes();
                    let cid = CircuitId(id);
                    let node = &mut net.nodes_mut()[i];
                    if node.send_data(cid, &payload).is_ok() {
                        h.metrics.counts.data_sent += 1;
                        h.metrics.data_sent.insert(payload);
                        h.metrics.tested.insert((i, id), path);
                    }
                    // A probe behind it: a dropped last cell shows as a
                    // probe that never returns.
                    net.nodes_mut()[i].probe_circuit(now, cid);
                    net.drain(i, h);
                }
            }
            Kind::Circuits { start } => {
                let wanted = if start {
                    h.scenario.circuits_per_node
                } else {
                    0
                };
                h.circuits_wanted = wanted;
                for i in 0..net.nodes().len() {
                    if h.roles[i].flooder {
                        continue;
                    }
                    net.nodes_mut()[i].set_circuits_wanted(wanted);
                    if start && net.is_online(i) {
                        net.nodes_mut()[i].handle_timeout(now);
                        net.drain(i, h);
                    }
                }
            }
            Kind::Publish => self.publish(),
            Kind::Search => self.search(),
            Kind::Churn => self.churn(),
            Kind::Download => self.download(),
        }
    }

    /// Schedules publication, the searches and churn.
    fn schedule_workload(&mut self) {
        let s = &self.h.scenario;
        let w = &s.search;
        let publish = EPOCH_MS + s.publish_at_ms();
        let from = EPOCH_MS + s.searches_from_ms();
        let (q, window) = (w.searches as u64, w.search_window_ms);
        let churn_every = churn_every_ms(s);
        let churn_from = EPOCH_MS + s.circuits_start_ms;
        let end = EPOCH_MS + s.duration_ms;
        self.net.schedule(publish, Kind::Publish);
        let slot = window / q.max(1);
        for k in 0..q {
            let jitter = match &mut self.h.work {
                Some(work) if slot > 0 => work.rng.next_u64() % slot,
                _ => 0,
            };
            self.net.schedule(from + k * slot + jitter, Kind::Search);
        }
        if let Some(every) = churn_every
            && churn_from + every < end
        {
            self.net.schedule(churn_from + every, Kind::Churn);
        }
        let from = EPOCH_MS + s.downloads_from_ms();
        let (n, window) = (w.downloads as u64, w.download_window_ms);
        let slot = window / n.max(1);
        for k in 0..n {
            let jitter = match &mut self.h.dl {
                Some(d) if slot > 0 => d.plan.next_u64() % slot,
                _ => 0,
            };
            self.net.schedule(from + k * slot + jitter, Kind::Download);
        }
    }

    /// Honest online nodes with a built circuit, by `keep`.
    fn ready(&self, keep: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..self.net.nodes().len())
            .filter(|&i| {
                self.net.is_online(i)
                    && !self.h.roles[i].adversary()
                    && keep(i)
                    && self.net.nodes()[i]
                        .circuits()
                        .iter()
                        .any(|c| c.state == CircuitState::Built)
            })
            .collect()
    }

    /// Sharers (honest relays with a circuit) and poisoners publish.
    fn publish(&mut self) {
        let Some(w) = &self.h.work else { return };
        let eligible = self.ready(|i| !w.is_poisoner(i) && !self.h.roles[i].client_only);
        let now = self.net.now();
        let pow = self.h.config.pow;
        let Some(w) = &mut self.h.work else { return };
        let out = w.publications(&self.h.scenario, now, &eligible, pow);
        for (i, records) in out {
            self.net.nodes_mut()[i].publish(now, records);
            self.net.drain(i, &mut self.h);
        }
        // With downloads, every node that shares (or claims to) runs a
        // service providing its content.
        let (Some(w), Some(d)) = (&self.h.work, &mut self.h.dl) else {
            return;
        };
        for (i, kind, ids) in w.provided(&self.h.scenario) {
            let key = d.service(i, kind, ids.clone(), pow);
            let node = &mut self.net.nodes_mut()[i];
            let service = node.add_service(now, key);
            node.provide(now, &service, ids);
        }
        for i in 0..self.net.nodes().len() {
            if self.h.dl.as_ref().is_some_and(|d| d.runs_service(i)) {
                self.net.drain(i, &mut self.h);
            }
        }
    }

    /// A user starts a download: a search by words for a Zipf-chosen
    /// file; the pick follows when the search ends (`drive`).
    fn download(&mut self) {
        let Some(w) = &self.h.work else { return };
        let ready = self.ready(|i| !w.is_poisoner(i));
        let now = self.net.now();
        let (Some(w), Some(d)) = (&self.h.work, &mut self.h.dl) else {
            return;
        };
        let eligible = d.eligible(ready);
        let pick = w.catalog.pick(&mut d.plan, &eligible);
        d.asked(pick.as_ref().map(|(i, f, _)| (*i, *f)), now, w);
        let Some((i, _, query)) = pick else { return };
        let search = self.net.nodes_mut()[i].search(now, query).ok();
        d.searching(search);
        self.net.drain(i, &mut self.h);
    }

    /// One search from a random honest node with a circuit.
    fn search(&mut self) {
        let Some(w) = &self.h.work else { return };
        let eligible = self.ready(|i| !w.is_poisoner(i));
        let now = self.net.now();
        let Some(w) = &mut self.h.work else { return };
        let Some((i, file, query)) = w.next_search(&eligible) else {
            return;
        };
        let id = self.net.nodes_mut()[i].search(now, query).ok();
        w.started(i, file, now, id);
        self.net.drain(i, &mut self.h);
    }

    /// A random online node (never a seed or an adversary) leaves; a new
    /// node with a new identity joins from the seed list.
    fn churn(&mut self) {
        let now = self.net.now();
        let s = self.h.scenario.clone();
        let timeout = self.h.config.search.search_timeout_ms;
        let leaving: Vec<usize> = (s.seed_nodes..self.net.nodes().len())
            .filter(|&i| self.net.is_online(i) && !self.h.roles[i].adversary())
            .collect();
        let i = self.net.nodes().len();
        let Some(w) = &mut self.h.work else { return };
        if i >= self.net.model().ring.len() {
            return;
        }
        if !leaving.is_empty() {
            let v = leaving[(w.rng.next_u64() % leaving.len() as u64) as usize];
            w.left(v, now, timeout);
            self.net.kill(v, &mut self.h);
        }
        let Some(w) = &mut self.h.work else { return };
        w.nodes_joined += 1;
        let mut id_seed = [0u8; 32];
        w.rng.fill_bytes(&mut id_seed);
        let mut node_seed = [0u8; 32];
        w.rng.fill_bytes(&mut node_seed);
        let identity =
            NodeIdentity::generate(&mut ChaCha20Rng::from_seed(id_seed), self.h.config.pow);
        let role = Role::default();
        let mut node = make_node(&s, &self.h.config, i, &role, identity, node_seed, now);
        node.set_circuits_wanted(self.h.circuits_wanted);
        self.h.by_id.insert(node.node_id(), i);
        self.h.roles.push(role);
        self.net.add_node(node_addr(i), node);
        self.net.start(i, &mut self.h);
        if let Some(every) = churn_every_ms(&s)
            && now + every < EPOCH_MS + s.duration_ms
        {
            self.net.schedule(now + every, Kind::Churn);
        }
    }

    /// The search figures, if the scenario had a search workload.
    pub fn search_outcome(&self) -> Option<SearchOutcome> {
        let online = self.online();
        self.h
            .work
            .as_ref()
            .map(|w| w.outcome(&self.h.scenario, self.net.nodes(), &online))
    }

    /// The download figures, if the scenario had downloads.
    pub fn download_outcome(&self) -> Option<DownloadOutcome> {
        let (w, d) = (self.h.work.as_ref()?, self.h.dl.as_ref()?);
        let t = self.net.nodes().iter().map(|n| &n.stats().transfer);
        let rejected = t.clone().map(|t| t.corrupt_pieces_rejected).sum();
        let served = t.map(|t| t.pieces_served).sum();
        Some(d.outcome(w, rejected, served))
    }

    /// One object per download (see `--trace-downloads`), if the
    /// scenario had downloads.
    pub fn download_trace(&self) -> Option<Vec<serde_json::Value>> {
        let (w, d) = (self.h.work.as_ref()?, self.h.dl.as_ref()?);
        Some(d.trace(w))
    }

    /// The scenario as run (its duration extended for searches).
    pub fn scenario(&self) -> &Scenario {
        &self.h.scenario
    }

    /// Whether each node is online.
    fn online(&self) -> Vec<bool> {
        (0..self.net.nodes().len())
            .map(|i| self.net.is_online(i))
            .collect()
    }

    fn view<'a>(&'a self, online: &'a [bool]) -> View<'a> {
        View {
            nodes: self.net.nodes(),
            roles: &self.h.roles,
            online,
            by_id: &self.h.by_id,
        }
    }

    /// Compute the outcome from what the harness recorded and what the
    /// nodes hold.
    pub fn outcome(&self) -> Outcome {
        let online = self.online();
        let view = self.view(&online);
        let mut o = self.h.metrics.counts.clone();
        o.events = self.net.events();
        o.cells_delivered = self.net.cells_delivered();
        o.forgeries_sent = self.h.forgers.sent;
        o.forgeries_vouched = self.h.forgers.vouched;
        o.forge_targets = self.h.forgers.targets.len() as u64;
        self.h.metrics.outcome(
            view,
            &self.h.scenario,
            self.net.wires().map(|(_, w)| w),
            self.net.now(),
            &self.h.forgers.forged,
            o,
        )
    }

    /// Every circuit a node reported built, with whether the path's last
    /// hop reported answering the probe that completed it (what the
    /// harness counts).
    pub fn built_circuits(&self) -> Vec<BuiltCircuit> {
        self.h.metrics.built_circuits(&self.h.by_id)
    }

    /// Sizes of all circuit cells the simulated network carried.
    pub fn circuit_cell_sizes(&self) -> &BTreeSet<usize> {
        &self.h.metrics.circuit_cell_sizes
    }

    /// What node `i` recorded as a relay (with `observe` on), taken.
    pub fn take_observations(&mut self, i: usize) -> Vec<Observation> {
        let mut seen = self
            .h
            .metrics
            .raw_observations
            .remove(&i)
            .unwrap_or_default();
        if let Some(node) = self.net.nodes_mut().get_mut(i) {
            seen.extend(node.take_observations());
        }
        seen
    }

    /// What relays saw, folded per relayed circuit (with `position_guess`
    /// on).
    pub fn observed(&self) -> &Observed {
        &self.h.metrics.observed
    }

    /// Indices of the nodes whose role passes `f`.
    fn with_role<B: FromIterator<usize>>(&self, f: impl Fn(&Role) -> bool) -> B {
        let roles = &self.h.roles;
        (0..roles.len()).filter(|&i| f(&roles[i])).collect()
    }

    /// Indices of flooders.
    pub fn flooders(&self) -> BTreeSet<usize> {
        self.with_role(|r| r.flooder)
    }

    /// Flooders and forgers.
    pub fn adversaries(&self) -> BTreeSet<usize> {
        self.with_role(Role::adversary)
    }

    /// Honest relays a forgery was sent for.
    pub fn forge_targeted(&self) -> &BTreeSet<usize> {
        &self.h.forgers.forged
    }

    /// The share of `targets` in the picks of every node outside `skip`
    /// (and not itself an adversary): guard and vanguard lists at the end,
    /// first and last hops of every circuit built. Compare a run with
    /// forgers against the same seed without them by passing the same
    /// `targets` and `skip` to both.
    pub fn pick_shares(&self, targets: &BTreeSet<usize>, skip: &BTreeSet<usize>) -> PickShares {
        let online = self.online();
        self.h
            .metrics
            .pick_shares(self.view(&online), targets, skip)
    }

    /// Node `i`'s identity material an observer must never see in a
    /// relay's plaintext: node id, both public keys, its address as an
    /// EXTEND would encode it.
    pub fn secrets_of(&self, i: usize) -> Vec<Vec<u8>> {
        let d = self.net.nodes()[i].descriptor();
        let addr = node_addr(i);
        let mut a = match addr.ip() {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        a.extend_from_slice(&addr.port().to_be_bytes());
        vec![
            d.node_id().as_bytes().to_vec(),
            d.x25519().to_vec(),
            d.public().ed25519.to_bytes().to_vec(),
            a,
        ]
    }

    /// Indices of colluding nodes.
    pub fn colluders(&self) -> Vec<usize> {
        self.with_role(|r| r.colluder)
    }

    /// Indices of client-only nodes.
    pub fn client_only_nodes(&self) -> Vec<usize> {
        self.with_role(|r| r.client_only)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.net.nodes().len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.net.nodes().is_empty()
    }

    /// Honest nodes' samples, for tests.
    pub fn samples(&self) -> Vec<Vec<NodeId>> {
        self.net
            .nodes()
            .iter()
            .zip(&self.h.roles)
            .filter(|(_, r)| !r.adversary())
            .map(|(n, _)| n.sample())
            .collect()
    }

    /// Take a node offline (churn hook): its links drop at both ends.
    pub fn kill_node(&mut self, i: usize) {
        self.net.kill(i, &mut self.h);
    }
}

/// Node `i` as the scenario configures it (`now`: its creation time).
fn make_node(
    s: &Scenario,
    config: &Config,
    i: usize,
    role: &Role,
    identity: NodeIdentity,
    node_seed: [u8; 32],
    now: Millis,
) -> Node {
    let mut cfg = config.clone();
    cfg.advertised_addr = Some(node_addr(i));
    cfg.bootstrap = (0..s.seed_nodes.min(s.nodes)).map(node_addr).collect();
    cfg.circuits.hops = s.hops;
    cfg.circuits.guard_min_age_ms = s.guard_min_age_ms;
    cfg.circuits.build_timeout_ms = s.build_timeout_ms;
    // Builds start with the harness's Circuits event.
    cfg.circuits.circuits_wanted = 0;
    if role.client_only {
        cfg.relay = false;
        cfg.advertised_addr = None;
    }
    s.search.apply(&mut cfg.search);
    let cfg = cfg
        .validate()
        .expect("the scenario gives a valid node config");
    let mut node = Node::new(identity, cfg, node_seed, now);
    node.set_observing(s.observe || s.position_guess);
    node
}

/// Time between two churn events (one leaves, one joins), if any churn.
fn churn_every_ms(s: &Scenario) -> Option<Millis> {
    let per_min = s.search.churn * s.nodes as f64;
    (per_min > 0.0).then(|| ((60_000.0 / per_min).round() as Millis).max(1))
}

/// How many nodes churn adds over the run.
fn churn_joins(s: &Scenario) -> usize {
    let Some(every) = churn_every_ms(s) else {
        return 0;
    };
    let span = s.duration_ms.saturating_sub(s.circuits_start_ms);
    (span / every) as usize + 1
}
