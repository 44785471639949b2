//! The discrete-event loop: many `veil_core::node::Node`s in virtual time.
//!
//! The simulator is a second driver of the very same state machine the
//! daemon drives over QUIC. It owns the "network": links are reliable and
//! ordered byte streams between two nodes, with a latency per node pair and
//! an uplink bandwidth per node; loss appears as delay (a reliable transport
//! retransmits) and as dropped links. Everything is derived from one seed,
//! events are ordered by (virtual time, sequence number), and all maps are
//! ordered, so a run replays identically.
//!
//! Adversaries are harness behaviour layered on real nodes: a flooder runs an
//! honest `Node` (so its handshakes are genuine and its identity has valid
//! proof of work) and the harness adds what an attacker would do on top, on
//! the links the flooder really has. A forger does the same with pull
//! replies: it answers them with badly signed copies of honest relays'
//! descriptors (the impersonation attack the directory defends against).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use veil_core::cell::{CELL_SIZE, Cell};
use veil_core::descriptor::{Admitted, Descriptor, MAX_CLOCK_SKEW_MS, flags};
use veil_core::identity::{NodeId, NodeIdentity};
use veil_core::link::LinkMsg;
use veil_core::node::{Config, Direction, Event, LinkId, Millis, Node, Observation};
use veil_core::pow::PowParams;

use crate::position::{Observed, PositionGuess};

/// Virtual time at which every run starts (a fixed Unix-millisecond epoch,
/// so descriptors carry plausible timestamps).
pub const EPOCH_MS: Millis = 1_800_000_000_000;

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes in all, attackers included.
    pub nodes: usize,
    /// The seed everything derives from.
    pub seed: u64,
    /// Fraction of nodes that are flooders.
    pub flooders: f64,
    /// Virtual duration.
    pub duration_ms: Millis,
    /// Nodes in the seed list every node bootstraps from.
    pub seed_nodes: usize,
    /// Nodes join over this window (0: all at once).
    pub join_window_ms: Millis,
    /// One-way latency range (ms) between nodes.
    pub latency_ms: (u64, u64),
    /// Uplink bandwidth range, bytes per millisecond (1000 = 1 MB/s).
    pub uplink_bytes_per_ms: (u64, u64),
    /// Hops per circuit.
    pub hops: usize,
    /// Built circuits each node keeps (0: no circuits).
    pub circuits_per_node: usize,
    /// Fraction of nodes that collude (passive: they relay honestly and
    /// pool what they see). Chosen by the harness among all nodes.
    pub colluders: f64,
    /// Fraction of nodes that run client-only.
    pub client_only: f64,
    /// Nodes start building circuits at this virtual offset.
    pub circuits_start_ms: Millis,
    /// Only relays known this long become guards.
    pub guard_min_age_ms: Millis,
    /// A circuit build that has not finished after this fails.
    pub build_timeout_ms: Millis,
    /// Record what relays see in clear (observer checks).
    pub observe: bool,
    /// Fraction of nodes that turn bad at `tamper_from_ms`: from then on
    /// they mangle every relay cell they send, as `tamper` says.
    pub tamperers: f64,
    /// What tamperers do.
    pub tamper: Tamper,
    /// When tamperers start (virtual offset); at that moment every node
    /// also sends one data cell and a probe over each built circuit.
    pub tamper_from_ms: Millis,
    /// Fraction of nodes (never seeds) that crash at `crash_at_ms`.
    pub crash_fraction: f64,
    /// When they crash (virtual offset): by default just after builds
    /// start, so that many builds are under way through them.
    pub crash_at_ms: Millis,
    /// Fraction of nodes (never seeds) that forge: they answer pull
    /// requests with badly signed descriptors carrying honest relays' keys
    /// and proof of work. Drawn after every other role, so adding forgers
    /// changes no other role.
    pub forgers: f64,
    /// Share of honest relays the forgers target (drawn by the harness);
    /// the rest are a control group.
    pub forge_target_share: f64,
    /// Every relay records what it sees, and the harness measures how well
    /// relays guess their position on the circuits they relay.
    pub position_guess: bool,
}

/// What a tampering relay does to the relay cells it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one bit of each.
    Corrupt,
    /// Drop each.
    Drop,
    /// Send each twice.
    Replay,
}

impl Scenario {
    /// Defaults for a sampling run.
    pub fn new(nodes: usize, seed: u64) -> Scenario {
        Scenario {
            nodes,
            seed,
            flooders: 0.0,
            duration_ms: 60_000,
            seed_nodes: 4,
            join_window_ms: 10_000,
            latency_ms: (5, 150),
            uplink_bytes_per_ms: (1_000, 12_500),
            hops: 3,
            circuits_per_node: 2,
            colluders: 0.0,
            client_only: 0.0,
            circuits_start_ms: 12_000,
            guard_min_age_ms: 5_000,
            build_timeout_ms: 10_000,
            observe: false,
            tamperers: 0.0,
            tamper: Tamper::Corrupt,
            tamper_from_ms: 22_000,
            crash_fraction: 0.0,
            crash_at_ms: 12_300,
            forgers: 0.0,
            forge_target_share: 0.25,
            position_guess: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Connection attempt from `from` reaches `to` (or fails).
    Connect { from: usize, addr: SocketAddr },
    /// Both ends of a new link learn it is open.
    LinkUp { wire: u64 },
    /// Bytes of one cell arrive at one end of a wire.
    Deliver { wire: u64, to_a: bool, cell: usize },
    /// A link closes at one end.
    LinkDown { node: usize, link: LinkId },
    /// A dial failed.
    ConnectFailed { node: usize, addr: SocketAddr },
    /// A node's timer.
    Timer { node: usize, generation: u64 },
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
    /// A cell left a node's uplink: the node may hand over the next one
    /// for that link (back-pressure, decided in core).
    Sent { node: usize, link: LinkId },
}

/// One simulated connection between nodes `a` (dialler) and `b`.
#[derive(Debug)]
struct Wire {
    a: usize,
    a_link: LinkId,
    b: usize,
    b_link: LinkId,
    /// Both ends completed the handshake.
    a_up: bool,
    b_up: bool,
    closed: bool,
    /// Closed by an end that had not completed its handshake (a refusal, a
    /// failed check or a timeout).
    failed: bool,
    opened_ms: Millis,
    /// Arrival time of the last cell queued in each direction (FIFO).
    last_to_a: Millis,
    last_to_b: Millis,
}

#[derive(Debug)]
struct SimNode {
    node: Node,
    addr: SocketAddr,
    flooder: bool,
    forger: bool,
    colluder: bool,
    client_only: bool,
    tamperer: bool,
    online: bool,
    timer_generation: u64,
    timer_at: Option<Millis>,
    uplink_free_ms: Millis,
    uplink_bytes_per_ms: u64,
    ring_pos: u64,
    /// The node's link ids -> wire.
    links: BTreeMap<LinkId, u64>,
    next_link: u64,
}

/// What the harness recorded.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Links whose handshake completed at both ends.
    pub links_up: u64,
    /// Links whose handshake failed or never finished.
    pub handshakes_failed: u64,
    /// Mean attacker fraction of honest nodes' samples.
    pub attacker_share_of_samples: f64,
    /// Attacker ids / all ids.
    pub attacker_population_share: f64,
    /// Events processed.
    pub events: u64,
    /// Mean size of honest nodes' samples.
    pub mean_sample_size: f64,
    /// Mean number of descriptors honest nodes hold.
    pub mean_known: f64,
    /// Mean authenticated peers per honest node at the end.
    pub mean_peers: f64,
    /// Honest nodes with at least one peer at the end.
    pub honest_connected: u64,
    /// Honest nodes in all.
    pub honest_nodes: u64,
    /// Gossip rounds run by honest nodes (sum).
    pub rounds: u64,
    /// Rounds in which honest nodes detected a push flood (sum).
    pub floods_detected: u64,
    /// Cells delivered over simulated links.
    pub cells_delivered: u64,
    /// Peers penalised by honest nodes (sum).
    pub peers_penalised: u64,
    /// Pull requests sent by honest nodes (sum).
    pub pulls_sent: u64,
    /// Pull-reply cells accepted by honest nodes (sum).
    pub pull_replies: u64,
    /// Pushes sent by honest nodes (sum).
    pub pushes_sent: u64,
    /// Circuit builds started (all nodes).
    pub circuits_attempted: u64,
    /// Builds whose end-to-end probe was answered by the path's last hop.
    pub circuits_built: u64,
    /// Builds that failed.
    pub circuits_failed: u64,
    /// Median build time of built circuits (virtual ms).
    pub circuit_build_ms_p50: u64,
    /// 95th percentile build time (virtual ms).
    pub circuit_build_ms_p95: u64,
    /// Built circuits of honest (non-colluding) nodes.
    pub honest_circuits_built: u64,
    /// Of those, circuits whose first and last hops both collude.
    pub colluder_first_last: u64,
    /// Honest nodes whose primary guard colludes / honest nodes with a
    /// guard.
    pub colluder_guard_share: f64,
    /// Honest nodes with at least one built circuit whose first and last
    /// hops both collude.
    pub clients_exposed: u64,
    /// Most honest nodes sharing one primary guard (load concentration).
    pub guard_max_clients: u64,
    /// Honest online nodes holding a built circuit at the end.
    pub nodes_with_circuit: u64,
    /// Circuits torn down because a cell failed its checks (all nodes).
    pub circuits_torn_down_bad_cell: u64,
    /// Failed builds whose path held a flooder.
    pub circuits_failed_via_flooder: u64,
    /// Failed builds whose path held a forger.
    pub circuits_failed_via_forger: u64,
    /// Failed builds by nodes that neither flood nor forge, through relays
    /// that neither flood nor forge.
    pub circuits_failed_clean: u64,
    /// Data cells sent over built circuits by the harness.
    pub data_sent: u64,
    /// Data cells last hops delivered intact (equal to one that was sent).
    pub data_delivered: u64,
    /// Data cells a last hop delivered that nobody sent (must stay 0).
    pub data_corrupted_accepted: u64,
    /// Built circuits with a tamperer on the path at tamper time.
    pub circuits_via_tamperer: u64,
    /// Of those, circuits torn down by the end.
    pub circuits_via_tamperer_torn_down: u64,
    /// Built circuits with no tamperer that were torn down (must stay 0
    /// within a circuit lifetime).
    pub circuits_clean_torn_down: u64,
    /// Nodes crashed by the harness.
    pub crashed: u64,
    /// Builds that failed after the crash, by surviving honest nodes.
    pub builds_failed_after_crash: u64,
    /// Of those, builds whose guard was not the node's primary guard at
    /// crash time although that guard survived (must stay 0: a failure
    /// further along keeps the guard).
    pub builds_failed_off_guard: u64,
    /// Surviving nodes whose primary guard survived but changed (must
    /// stay 0).
    pub guards_changed: u64,
    /// Surviving nodes without a built circuit at the end.
    pub survivors_without_circuit: u64,
    /// Forging nodes.
    pub forgers: u64,
    /// Honest relays the forgers target.
    pub forge_targets: u64,
    /// Of those, relays a forgery was sent for.
    pub forge_targeted: u64,
    /// Honest nodes whose primary guard forges.
    pub forger_guarded: u64,
    /// Of those, nodes without a built circuit at the end.
    pub forger_guarded_without_circuit: u64,
    /// Forged descriptors sent in pull replies.
    pub forgeries_sent: u64,
    /// Of those, marked as checked by the forger (vouched).
    pub forgeries_vouched: u64,
    /// Gossiped descriptors honest nodes refused (sum).
    pub descriptors_refused: u64,
    /// Where targeted relays stand in honest nodes' picks.
    pub targeted_picks: PickShares,
    /// How well relays guess their position on the circuits they relay.
    pub position_guess: PositionGuess,
}

/// The share of honest nodes' picks held by a set of relays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PickShares {
    /// The set's share of relays (what uniform picks would give).
    pub relay_share: f64,
    /// Share of the entries of honest nodes' guard lists.
    pub guard_pool: f64,
    /// Share of the entries of honest nodes' vanguard lists.
    pub vanguard_pool: f64,
    /// Share of first hops of honest nodes' built circuits.
    pub first_hop: f64,
    /// Share of last hops of honest nodes' built circuits.
    pub exit: f64,
    /// Guard-list entries counted.
    pub guard_entries: u64,
    /// Built circuits counted.
    pub circuits: u64,
}

/// A circuit the harness saw built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltCircuit {
    /// The node that built it.
    pub builder: usize,
    /// Its relays, guard first (node indices).
    pub hops: Vec<usize>,
    /// Build time (virtual ms).
    pub build_ms: Millis,
    /// Whether the last hop reported answering its probe.
    pub probe_seen: bool,
    /// The nonce of that probe.
    pub probe: u64,
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    scenario: Scenario,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Millis, u64, Kind)>>,
    seq: u64,
    wires: BTreeMap<u64, Wire>,
    next_wire: u64,
    cells: BTreeMap<usize, Cell>,
    next_cell: usize,
    rng: ChaCha20Rng,
    attacker_descriptors: Vec<Descriptor>,
    now: Millis,
    outcome: Outcome,
    by_id: BTreeMap<NodeId, usize>,
    /// Probe nonces answered, by the answering node.
    probes_answered: BTreeMap<u64, usize>,
    /// Circuits reported built: (builder, hops, build ms, probe nonce).
    built: Vec<(usize, Vec<NodeId>, Millis, u64)>,
    /// Built circuits by (builder, circuit id): their path.
    live: BTreeMap<(usize, u64), Vec<usize>>,
    /// Built circuits that closed: (builder, circuit id).
    closed_built: BTreeSet<(usize, u64)>,
    tampering: bool,
    /// Primary guard of every node at crash time, and who crashed.
    guard_at_crash: BTreeMap<usize, NodeId>,
    crashed: BTreeSet<usize>,
    /// Circuits given data at tamper time, with their paths.
    tested: BTreeMap<(usize, u64), Vec<usize>>,
    data_sent: BTreeSet<Vec<u8>>,
    /// Sizes of every circuit cell the network carried.
    circuit_cell_sizes: BTreeSet<usize>,
    /// The forgers' own RNG, so that forging leaves the rest of the run's
    /// randomness as it is without forgers.
    forge_rng: ChaCha20Rng,
    /// Badly signed descriptor encodings the forgers patch: flags 0 and no
    /// address, and the relay flag with a junk address.
    forge_templates: [Vec<u8>; 2],
    /// Honest relays the forgers target.
    forge_targets: BTreeSet<usize>,
    /// Targets each forger has received a descriptor of.
    forger_learned: BTreeMap<usize, BTreeSet<usize>>,
    /// Targets a forgery was sent for.
    forged: BTreeSet<usize>,
    /// What relays saw, folded per relayed circuit.
    observed: Observed,
    /// Raw observations, kept when the scenario asks (`observe`).
    raw_observations: BTreeMap<usize, Vec<Observation>>,
}

/// Mixed into the scenario seed for the forgers' RNG.
const FORGE_SEED: u64 = 0x666f_7267_6572_7321;
/// Stands for the timestamp in a forgery template until it is patched.
const FORGE_TS_MARK: u64 = 0x5645_494c_5f54_535f;
/// Where an encoded descriptor holds the keys and the proof-of-work nonce
/// (after version and flags): what a forger copies from an honest one.
const DESCRIPTOR_KEYS: std::ops::Range<usize> = 2..2 + 32 + 32 + 8;
/// The junk address half the forgeries claim (TEST-NET-1).
const JUNK_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);

/// Encodings the forgers patch into forgeries: signed once by a throwaway
/// identity (so every forgery's signature fails), flags 0 without an
/// address, and the relay flag with a junk address. (Its proof of work does
/// not matter: the target's replaces it.)
fn forge_templates(seed: u64) -> [Vec<u8>; 2] {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ FORGE_SEED ^ 1);
    let signer = NodeIdentity::generate(&mut rng, PowParams { difficulty_bits: 0 });
    [(0, None), (flags::RELAY, Some(JUNK_ADDR))]
        .map(|(f, a)| Descriptor::sign(&signer, f, a, FORGE_TS_MARK, Vec::new()).to_bytes())
}

/// The address of node `i`: each node in its own /16, as local tests do.
pub fn node_addr(i: usize) -> SocketAddr {
    let a = 11 + (i / 256) as u8;
    let b = (i % 256) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, 0, 1)), 7171)
}

impl Sim {
    /// Build the network: identities, nodes, the seed list, join times.
    pub fn new(scenario: Scenario, config: &Config) -> Sim {
        let mut rng = ChaCha20Rng::seed_from_u64(scenario.seed);
        let n = scenario.nodes;
        let flooders = ((n as f64) * scenario.flooders).round() as usize;
        // Flooders are spread over the id space by the harness's RNG, never
        // among the seed nodes (a seed list is curated).
        let mut order: Vec<usize> = (scenario.seed_nodes.min(n)..n).collect();
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let flooder_set: BTreeSet<usize> = order.iter().copied().take(flooders).collect();
        // Colluders and client-only nodes: drawn among the rest.
        let mut rest: Vec<usize> = order.into_iter().skip(flooders).collect();
        let colluders = ((n as f64) * scenario.colluders).round() as usize;
        let colluder_set: BTreeSet<usize> = rest.drain(..colluders.min(rest.len())).collect();
        let clients = ((n as f64) * scenario.client_only).round() as usize;
        let client_set: BTreeSet<usize> = rest.drain(..clients.min(rest.len())).collect();
        let tamperers = ((n as f64) * scenario.tamperers).round() as usize;
        let tamper_set: BTreeSet<usize> = rest.drain(..tamperers.min(rest.len())).collect();
        let forgers = ((n as f64) * scenario.forgers).round() as usize;
        let forger_set: BTreeSet<usize> = rest.drain(..forgers.min(rest.len())).collect();
        let seeds: Vec<SocketAddr> = (0..scenario.seed_nodes.min(n)).map(node_addr).collect();
        let mut nodes = Vec::with_capacity(n);
        let mut by_addr = BTreeMap::new();
        for i in 0..n {
            let mut id_seed = [0u8; 32];
            rng.fill_bytes(&mut id_seed);
            let mut id_rng = ChaCha20Rng::from_seed(id_seed);
            let identity = NodeIdentity::generate(&mut id_rng, config.pow);
            let mut cfg = config.clone();
            cfg.advertised_addr = Some(node_addr(i));
            cfg.bootstrap = seeds.clone();
            cfg.circuits.hops = scenario.hops;
            cfg.circuits.guard_min_age_ms = scenario.guard_min_age_ms;
            cfg.circuits.build_timeout_ms = scenario.build_timeout_ms;
            // Builds start with the harness's Circuits event.
            cfg.circuits.circuits_wanted = 0;
            if client_set.contains(&i) {
                cfg.relay = false;
                cfg.advertised_addr = None;
            }
            let mut node_seed = [0u8; 32];
            rng.fill_bytes(&mut node_seed);
            let cfg = cfg
                .validate()
                .expect("the scenario gives a valid node config");
            let mut node = Node::new(identity, cfg, node_seed, EPOCH_MS);
            node.set_observing(scenario.observe || scenario.position_guess);
            let (lo, hi) = scenario.uplink_bytes_per_ms;
            let bw = lo + rng.next_u64() % (hi - lo + 1).max(1);
            by_addr.insert(node_addr(i), i);
            nodes.push(SimNode {
                node,
                addr: node_addr(i),
                flooder: flooder_set.contains(&i),
                forger: forger_set.contains(&i),
                colluder: colluder_set.contains(&i),
                tamperer: tamper_set.contains(&i),
                client_only: client_set.contains(&i),
                online: false,
                timer_generation: 0,
                timer_at: None,
                uplink_free_ms: EPOCH_MS,
                uplink_bytes_per_ms: bw.max(1),
                ring_pos: rng.next_u64(),
                links: BTreeMap::new(),
                next_link: 1,
            });
        }
        let attacker_descriptors = nodes
            .iter()
            .filter(|s| s.flooder)
            .map(|s| s.node.descriptor().clone())
            .collect();
        let scenario_seed = scenario.seed;
        let mut sim = Sim {
            scenario,
            nodes,
            by_addr,
            queue: BinaryHeap::new(),
            seq: 0,
            wires: BTreeMap::new(),
            next_wire: 1,
            cells: BTreeMap::new(),
            next_cell: 0,
            rng,
            attacker_descriptors,
            now: EPOCH_MS,
            outcome: Outcome::default(),
            by_id: BTreeMap::new(),
            probes_answered: BTreeMap::new(),
            built: Vec::new(),
            live: BTreeMap::new(),
            closed_built: BTreeSet::new(),
            tampering: false,
            guard_at_crash: BTreeMap::new(),
            crashed: BTreeSet::new(),
            tested: BTreeMap::new(),
            data_sent: BTreeSet::new(),
            circuit_cell_sizes: BTreeSet::new(),
            forge_rng: ChaCha20Rng::seed_from_u64(scenario_seed ^ FORGE_SEED),
            forge_templates: forge_templates(scenario_seed),
            forge_targets: BTreeSet::new(),
            forger_learned: BTreeMap::new(),
            forged: BTreeSet::new(),
            observed: Observed::default(),
            raw_observations: BTreeMap::new(),
        };
        sim.by_id = sim
            .nodes
            .iter()
            .enumerate()
            .map(|(i, s)| (s.node.node_id(), i))
            .collect();
        if sim.scenario.circuits_per_node > 0 {
            // Builds start once the network formed, and stop a build
            // timeout before the end, so that every build counted had its
            // full time.
            let start = EPOCH_MS + sim.scenario.circuits_start_ms;
            sim.schedule(start, Kind::Circuits { start: true });
            let timeout = sim.scenario.build_timeout_ms;
            let stop = (EPOCH_MS + sim.scenario.duration_ms).saturating_sub(timeout);
            sim.schedule(stop.max(start), Kind::Circuits { start: false });
            if sim.scenario.crash_fraction > 0.0 {
                let at = EPOCH_MS + sim.scenario.crash_at_ms;
                sim.schedule(at, Kind::Crash);
            }
            if sim.scenario.tamperers > 0.0 {
                let at = EPOCH_MS + sim.scenario.tamper_from_ms;
                sim.schedule(at, Kind::Tamper);
            }
        }
        for i in 0..n {
            // Seeds first, the rest spread over the join window.
            let at = if i < sim.scenario.seed_nodes {
                EPOCH_MS
            } else {
                EPOCH_MS + sim.rng.next_u64() % sim.scenario.join_window_ms.max(1)
            };
            sim.schedule(at, Kind::Join { node: i });
        }
        if !forger_set.is_empty() {
            sim.pick_forge_targets();
            if std::env::var_os("VEIL_SIM_DEBUG").is_some() {
                eprintln!("forgers {forger_set:?}, targets {:?}", sim.forge_targets);
            }
        }
        sim
    }

    /// The forgers' targets: a share of the honest relays, drawn with the
    /// forgers' RNG.
    fn pick_forge_targets(&mut self) {
        let mut pool: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let s = &self.nodes[i];
                !s.flooder && !s.forger && !s.client_only
            })
            .collect();
        for i in (1..pool.len()).rev() {
            let j = (self.forge_rng.next_u64() % (i as u64 + 1)) as usize;
            pool.swap(i, j);
        }
        let k = ((pool.len() as f64) * self.scenario.forge_target_share).round() as usize;
        self.forge_targets = pool.into_iter().take(k).collect();
    }

    fn schedule(&mut self, at: Millis, kind: Kind) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, kind)));
    }

    /// One-way latency between two nodes: a ring distance model.
    fn latency(&self, a: usize, b: usize) -> Millis {
        let (lo, hi) = self.scenario.latency_ms;
        let pa = self.nodes[a].ring_pos;
        let pb = self.nodes[b].ring_pos;
        let d = pa.wrapping_sub(pb).min(pb.wrapping_sub(pa));
        // d is at most 2^63: scale to [lo, hi].
        lo + ((hi - lo) as u128 * d as u128 / (1u128 << 63)) as u64
    }

    /// Run until the scenario's duration has passed.
    pub fn run(&mut self) {
        let end = EPOCH_MS + self.scenario.duration_ms;
        while let Some(Reverse((at, _, kind))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            self.outcome.events += 1;
            self.step(kind);
        }
        self.now = end;
    }

    fn step(&mut self, kind: Kind) {
        let now = self.now;
        match kind {
            Kind::Join { node } => {
                self.nodes[node].online = true;
                self.nodes[node].node.handle_timeout(now);
                self.drain(node);
                if self.nodes[node].flooder {
                    let at = now + 1_000;
                    self.schedule(at, Kind::FloodRound { node });
                }
            }
            Kind::Timer { node, generation } => {
                let s = &mut self.nodes[node];
                if !s.online || s.timer_generation != generation {
                    return;
                }
                s.timer_at = None;
                s.node.handle_timeout(now);
                self.drain(node);
            }
            Kind::Connect { from, addr } => match self.by_addr.get(&addr).copied() {
                Some(to) if self.nodes[to].online && to != from => {
                    let wire = self.open_wire(from, to);
                    self.schedule(now, Kind::LinkUp { wire });
                }
                _ => {
                    let back = now + 2 * self.scenario.latency_ms.1;
                    self.schedule(back, Kind::ConnectFailed { node: from, addr });
                }
            },
            Kind::LinkUp { wire } => {
                let Some(w) = self.wires.get(&wire) else {
                    return;
                };
                let (a, al, b, bl) = (w.a, w.a_link, w.b, w.b_link);
                // The channel binding: equal at both ends of a genuine link.
                let mut binding = [0u8; 32];
                self.rng.fill_bytes(&mut binding);
                let b_addr = self.nodes[b].addr;
                // The acceptor sees the dialler's source address (an
                // ephemeral port, not its listening address).
                let a_src = SocketAddr::new(self.nodes[a].addr.ip(), 40000 + (wire % 20000) as u16);
                self.nodes[a]
                    .node
                    .handle_link_up(now, al, Direction::Outbound, b_addr, binding);
                self.nodes[b]
                    .node
                    .handle_link_up(now, bl, Direction::Inbound, a_src, binding);
                self.drain(a);
                self.drain(b);
            }
            Kind::Deliver { wire, to_a, cell } => {
                let Some(c) = self.cells.remove(&cell) else {
                    return;
                };
                let Some(w) = self.wires.get(&wire) else {
                    return;
                };
                if w.closed {
                    return;
                }
                let (node, link, from) = if to_a {
                    (w.a, w.a_link, w.b)
                } else {
                    (w.b, w.b_link, w.a)
                };
                self.outcome.cells_delivered += 1;
                if self.nodes[node].flooder && self.intercept_at_flooder(node, link, from, &c) {
                    return;
                }
                if self.nodes[node].forger && self.intercept_at_forger(node, link, &c) {
                    return;
                }
                self.nodes[node]
                    .node
                    .handle_link_data(now, link, c.as_bytes());
                self.drain(node);
            }
            Kind::LinkDown { node, link } => {
                self.nodes[node].links.remove(&link);
                self.nodes[node].node.handle_link_down(now, link);
                self.drain(node);
            }
            Kind::ConnectFailed { node, addr } => {
                self.nodes[node].node.handle_connect_failed(now, addr);
                self.drain(node);
            }
            Kind::Sent { node, link } => {
                if !self.nodes[node].online {
                    return;
                }
                self.nodes[node].node.handle_link_sent(now, link, 1);
                self.drain(node);
            }
            Kind::FloodRound { node } => {
                self.flood_round(node);
                let at = now + self.nodes[node].node.config().round_ms;
                self.schedule(at, Kind::FloodRound { node });
            }
            Kind::Crash => {
                let n = self.nodes.len();
                let k = ((n as f64) * self.scenario.crash_fraction).round() as usize;
                let mut pool: Vec<usize> = (self.scenario.seed_nodes.min(n)..n).collect();
                for i in (1..pool.len()).rev() {
                    let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
                    pool.swap(i, j);
                }
                for i in 0..n {
                    if let Some(g) = self.nodes[i].node.guards().first() {
                        self.guard_at_crash.insert(i, g.id);
                    }
                }
                for &i in pool.iter().take(k) {
                    self.crashed.insert(i);
                    self.kill_node(i);
                }
                self.outcome.crashed = k as u64;
            }
            Kind::Tamper => {
                self.tampering = true;
                let live: Vec<((usize, u64), Vec<usize>)> =
                    self.live.iter().map(|(k, v)| (*k, v.clone())).collect();
                for ((i, id), path) in live {
                    let payload = format!("veil-sim data from {i} on {id}").into_bytes();
                    let cid = veil_core::node::CircuitId(id);
                    if self.nodes[i].node.send_data(cid, &payload).is_ok() {
                        self.outcome.data_sent += 1;
                        self.data_sent.insert(payload);
                        self.tested.insert((i, id), path);
                    }
                    // A probe behind it: a dropped last cell shows as a
                    // probe that never returns.
                    self.nodes[i].node.probe_circuit(now, cid);
                    self.drain(i);
                }
            }
            Kind::Circuits { start } => {
                let wanted = if start {
                    self.scenario.circuits_per_node
                } else {
                    0
                };
                for i in 0..self.nodes.len() {
                    if self.nodes[i].flooder {
                        continue;
                    }
                    self.nodes[i].node.set_circuits_wanted(wanted);
                    if start && self.nodes[i].online {
                        self.nodes[i].node.handle_timeout(now);
                        self.drain(i);
                    }
                }
            }
        }
    }

    fn open_wire(&mut self, a: usize, b: usize) -> u64 {
        let wire = self.next_wire;
        self.next_wire += 1;
        let al = LinkId(self.nodes[a].next_link);
        self.nodes[a].next_link += 1;
        let bl = LinkId(self.nodes[b].next_link);
        self.nodes[b].next_link += 1;
        self.nodes[a].links.insert(al, wire);
        self.nodes[b].links.insert(bl, wire);
        self.wires.insert(
            wire,
            Wire {
                a,
                a_link: al,
                b,
                b_link: bl,
                a_up: false,
                b_up: false,
                closed: false,
                failed: false,
                opened_ms: self.now,
                last_to_a: 0,
                last_to_b: 0,
            },
        );
        wire
    }

    /// Move a node's outputs into the network and re-arm its timer.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            self.transmit(i, t.link, t.cell);
        }
        while let Some(ev) = self.nodes[i].node.poll_event() {
            match ev {
                Event::Connect { addr, .. } => {
                    let at = now + self.scenario.latency_ms.0;
                    self.schedule(at, Kind::Connect { from: i, addr });
                }
                Event::Close { link } => self.close_link(i, link),
                Event::LinkUp { link, peer, .. } => {
                    if self.nodes[i].forger {
                        self.forger_learns(i, &peer);
                    }
                    if let Some(&wire) = self.nodes[i].links.get(&link)
                        && let Some(w) = self.wires.get_mut(&wire)
                    {
                        if w.a == i && w.a_link == link {
                            w.a_up = true;
                        } else {
                            w.b_up = true;
                        }
                    }
                }
                Event::HandshakeFailed { error, .. } => {
                    if std::env::var_os("VEIL_SIM_DEBUG").is_some() {
                        eprintln!("handshake failed at node {i}: {error}");
                    }
                }
                Event::CircuitBuilt {
                    id,
                    hops,
                    build_ms,
                    probe,
                } => {
                    let path = hops
                        .iter()
                        .filter_map(|h| self.by_id.get(h).copied())
                        .collect();
                    self.live.insert((i, id.0), path);
                    self.built.push((i, hops, build_ms, probe));
                }
                Event::RelayData { data, .. } => {
                    if self.data_sent.contains(&data) {
                        self.outcome.data_delivered += 1;
                    } else {
                        self.outcome.data_corrupted_accepted += 1;
                    }
                }
                Event::ProbeAnswered { nonce } => {
                    self.probes_answered.insert(nonce, i);
                }
                Event::CircuitClosed {
                    id,
                    hops,
                    reason,
                    built,
                    reached,
                } => {
                    if built {
                        self.live.remove(&(i, id.0));
                        self.closed_built.insert((i, id.0));
                    }
                    if !built && !self.crashed.is_empty() && !self.crashed.contains(&i) {
                        self.outcome.builds_failed_after_crash += 1;
                        let guard_alive = self
                            .guard_at_crash
                            .get(&i)
                            .and_then(|g| self.by_id.get(g))
                            .is_some_and(|j| !self.crashed.contains(j));
                        if guard_alive && hops.first() != self.guard_at_crash.get(&i) {
                            self.outcome.builds_failed_off_guard += 1;
                        }
                    }
                    let path: Vec<usize> = hops
                        .iter()
                        .filter_map(|h| self.by_id.get(h).copied())
                        .collect();
                    if !built && path.iter().any(|&j| self.nodes[j].flooder) {
                        self.outcome.circuits_failed_via_flooder += 1;
                    }
                    let bad = |j: usize| self.nodes[j].forger || self.nodes[j].flooder;
                    if !built && path.iter().any(|&j| self.nodes[j].forger) {
                        self.outcome.circuits_failed_via_forger += 1;
                    }
                    if !built && !bad(i) && !path.iter().any(|&j| bad(j)) {
                        self.outcome.circuits_failed_clean += 1;
                    }
                    if !built && std::env::var_os("VEIL_SIM_DEBUG").is_some() {
                        eprintln!(
                            "t={} node {i}: build failed ({reason:?}) after {reached} of {path:?}",
                            now - EPOCH_MS
                        );
                    }
                }
                Event::GuardsChanged | Event::CircuitData { .. } => {}
            }
        }
        if self.scenario.observe || self.scenario.position_guess {
            let seen = self.nodes[i].node.take_observations();
            if self.scenario.position_guess {
                for o in &seen {
                    self.observed.record(i, o);
                }
            }
            if self.scenario.observe && !seen.is_empty() {
                self.raw_observations.entry(i).or_default().extend(seen);
            }
        }
        let s = &mut self.nodes[i];
        if let Some(t) = s.node.poll_timeout() {
            let t = t.max(now);
            if s.timer_at.is_none_or(|cur| t < cur) || s.timer_at.is_some_and(|cur| cur < now) {
                s.timer_generation += 1;
                s.timer_at = Some(t);
                let generation = s.timer_generation;
                self.schedule(
                    t,
                    Kind::Timer {
                        node: i,
                        generation,
                    },
                );
            }
        }
    }

    fn transmit(&mut self, from: usize, link: LinkId, cell: Cell) {
        let Some(&wire) = self.nodes[from].links.get(&link) else {
            return;
        };
        let Some(w) = self.wires.get(&wire) else {
            return;
        };
        if w.closed {
            return;
        }
        if cell.circ_id() != 0 {
            self.circuit_cell_sizes.insert(cell.as_bytes().len());
        }
        let mut cell = cell;
        let mut copies = 1;
        if self.tampering
            && self.nodes[from].tamperer
            && cell.command() == veil_core::cell::command::RELAY
        {
            match self.scenario.tamper {
                // Each tamperer flips its own bit: two flips of the same
                // bit would cancel (XOR layers are malleable; see
                // docs/protocol.md on tagging).
                Tamper::Corrupt => cell.body_mut()[100 + from % 3000] ^= 0x20,
                Tamper::Drop => copies = 0,
                Tamper::Replay => copies = 2,
            }
        }
        for _ in 1..copies {
            self.send_cell(from, link, wire, cell.clone());
        }
        if copies > 0 {
            self.send_cell(from, link, wire, cell);
        }
        // The node learns the cell is written once it has left its uplink.
        let at = self.nodes[from].uplink_free_ms.max(self.now);
        self.schedule(at, Kind::Sent { node: from, link });
    }

    /// Puts one cell on a wire: the sender's uplink, latency, FIFO order.
    fn send_cell(&mut self, from: usize, link: LinkId, wire: u64, cell: Cell) {
        let Some(w) = self.wires.get(&wire) else {
            return;
        };
        let to_a = w.b == from && w.b_link == link;
        let to = if to_a { w.a } else { w.b };
        if cell.command() == veil_core::cell::command::DESTROY
            && std::env::var_os("VEIL_SIM_DEBUG").is_some()
        {
            eprintln!(
                "t={} destroy {from} -> {to} reason {:?}",
                self.now - EPOCH_MS,
                cell.link_payload().ok()
            );
        }
        let latency = self.latency(from, to);
        let s = &mut self.nodes[from];
        let start = s.uplink_free_ms.max(self.now);
        let serialise = (CELL_SIZE as u64).div_ceil(s.uplink_bytes_per_ms);
        s.uplink_free_ms = start + serialise;
        let mut arrive = start + serialise + latency;
        let Some(w) = self.wires.get_mut(&wire) else {
            return;
        };
        // Reliable and ordered: never overtake an earlier cell.
        if to_a {
            arrive = arrive.max(w.last_to_a);
            w.last_to_a = arrive;
        } else {
            arrive = arrive.max(w.last_to_b);
            w.last_to_b = arrive;
        }
        let id = self.next_cell;
        self.next_cell += 1;
        self.cells.insert(id, cell);
        self.schedule(
            arrive,
            Kind::Deliver {
                wire,
                to_a,
                cell: id,
            },
        );
    }

    fn close_link(&mut self, node: usize, link: LinkId) {
        let Some(wire) = self.nodes[node].links.remove(&link) else {
            return;
        };
        let Some(w) = self.wires.get_mut(&wire) else {
            return;
        };
        if w.closed {
            return;
        }
        w.closed = true;
        let closer_up = if w.a == node { w.a_up } else { w.b_up };
        if !closer_up {
            w.failed = true;
            if std::env::var_os("VEIL_SIM_DEBUG").is_some() {
                eprintln!(
                    "wire {wire} refused or failed at node {node} after {} ms",
                    self.now - w.opened_ms
                );
            }
        }
        let (other, other_link) = if w.a == node {
            (w.b, w.b_link)
        } else {
            (w.a, w.a_link)
        };
        let at = self.now + self.latency(node, other);
        self.schedule(
            at,
            Kind::LinkDown {
                node: other,
                link: other_link,
            },
        );
    }

    // ---- adversary -----------------------------------------------------

    /// A flooder answers every pull request with attacker descriptors only
    /// (instead of letting its honest node answer). Returns true if the cell
    /// was consumed.
    fn intercept_at_flooder(
        &mut self,
        node: usize,
        link: LinkId,
        _from: usize,
        cell: &Cell,
    ) -> bool {
        if cell.circ_id() != 0 {
            return false;
        }
        let Ok(LinkMsg::PullRequest { nonce }) = LinkMsg::decode(cell) else {
            return false;
        };
        let view = self.nodes[node].node.config().brahms.view_size;
        let mut attackers = self.attacker_descriptors.clone();
        // A different attacker subset each time, all valid and fresh enough.
        for i in (1..attackers.len()).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            attackers.swap(i, j);
        }
        attackers.truncate(view);
        // Flooders vouch for their own (validly signed) descriptors.
        let attackers: Vec<_> = attackers.iter().map(|d| (d.admitted(), true)).collect();
        for c in LinkMsg::pull_reply(nonce, &attackers) {
            self.transmit(node, link, c);
        }
        true
    }

    /// A forger reads the descriptors it receives (to learn whom it can
    /// impersonate) and answers every pull request with forgeries of the
    /// targets it learnt, once it knows one (before, its honest node
    /// answers). Returns true if the cell was consumed.
    fn intercept_at_forger(&mut self, node: usize, link: LinkId, cell: &Cell) -> bool {
        if cell.circ_id() != 0 {
            return false;
        }
        let nonce = match LinkMsg::decode(cell) {
            Ok(LinkMsg::Push(u)) => {
                self.forger_learns(node, &u.claimed_id());
                return false;
            }
            Ok(LinkMsg::PullReply { descriptors, .. }) => {
                for (u, _) in &descriptors {
                    self.forger_learns(node, &u.claimed_id());
                }
                return false;
            }
            Ok(LinkMsg::PullRequest { nonce }) => nonce,
            _ => return false,
        };
        let mut targets: Vec<usize> = self
            .forger_learned
            .get(&node)
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        if targets.is_empty() {
            return false;
        }
        for i in (1..targets.len()).rev() {
            let j = (self.forge_rng.next_u64() % (i as u64 + 1)) as usize;
            targets.swap(i, j);
        }
        targets.truncate(self.nodes[node].node.config().brahms.view_size);
        let mut reply = Vec::with_capacity(targets.len());
        for t in targets {
            let Some(a) = self.forge(node, t) else {
                continue;
            };
            // Some vouched for (the forger risks its link), some not.
            let vouched = self.forge_rng.next_u32() & 1 == 1;
            self.outcome.forgeries_sent += 1;
            self.outcome.forgeries_vouched += u64::from(vouched);
            self.forged.insert(t);
            reply.push((a, vouched));
        }
        for c in LinkMsg::pull_reply(nonce, &reply) {
            self.transmit(node, link, c);
        }
        true
    }

    /// Forger `node` received a descriptor claiming `id`: if that is a
    /// target, it can now copy its keys and proof of work.
    fn forger_learns(&mut self, node: usize, id: &NodeId) {
        if let Some(&j) = self.by_id.get(id)
            && self.forge_targets.contains(&j)
        {
            self.forger_learned.entry(node).or_default().insert(j);
        }
    }

    /// A fresh forgery of `target`'s descriptor: its keys and proof-of-work
    /// nonce (the same bytes as in every copy of its descriptor the forger
    /// received), flags 0 or a junk address, a timestamp newer than the
    /// real one but within the allowed clock skew, and a signature that
    /// does not verify. Admitted as a receiver admits it (proof of work and
    /// freshness pass: they are the target's).
    fn forge(&mut self, forger: usize, target: usize) -> Option<Admitted> {
        let junk = self.forge_rng.next_u32() & 1 == 1;
        let mut bytes = self.forge_templates[usize::from(junk)].clone();
        let honest = self.nodes[target].node.descriptor().to_bytes();
        bytes[DESCRIPTOR_KEYS].copy_from_slice(&honest[DESCRIPTOR_KEYS]);
        let mark = FORGE_TS_MARK.to_be_bytes();
        let at = bytes.windows(8).position(|w| w == mark)?;
        let ts = self.now + 1 + self.forge_rng.next_u64() % (MAX_CLOCK_SKEW_MS / 2);
        bytes[at..at + 8].copy_from_slice(&ts.to_be_bytes());
        let sig = bytes.len() - 64;
        self.forge_rng.fill_bytes(&mut bytes[sig..]);
        let pow = self.nodes[forger].node.config().pow;
        Descriptor::decode(&bytes)
            .ok()?
            .admit(self.now, u64::MAX, pow)
            .ok()
    }

    /// Each round a flooder links to every honest node it can and pushes
    /// itself on every link: one push per link per round is the most the
    /// protocol honours (a push can only carry the pusher's own
    /// descriptor, so the attacker set is pushed by its members).
    fn flood_round(&mut self, node: usize) {
        if !self.nodes[node].online {
            return;
        }
        let linked: BTreeSet<usize> = self.nodes[node]
            .links
            .values()
            .filter_map(|w| self.wires.get(w))
            .map(|w| if w.a == node { w.b } else { w.a })
            .collect();
        // Dial everyone not yet linked (the attacker knows every address),
        // a bounded number per round.
        let targets: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| {
                j != node && !self.nodes[j].flooder && self.nodes[j].online && !linked.contains(&j)
            })
            .take(64)
            .collect();
        for to in targets {
            let wire = self.open_wire(node, to);
            let at = self.now + self.latency(node, to);
            self.schedule(at, Kind::LinkUp { wire });
        }
        let push = LinkMsg::push(self.nodes[node].node.descriptor());
        let links: Vec<LinkId> = self.nodes[node]
            .links
            .iter()
            .filter(|(_, w)| {
                self.wires
                    .get(w)
                    .is_some_and(|w| w.a_up && w.b_up && !w.closed)
            })
            .map(|(l, _)| *l)
            .collect();
        for link in links {
            self.transmit(node, link, push.clone());
        }
    }

    // ---- results ---------------------------------------------------------

    /// Compute the outcome from what the harness recorded and what the
    /// nodes hold.
    pub fn outcome(&self) -> Outcome {
        let mut o = self.outcome.clone();
        let timeout = self
            .nodes
            .first()
            .map_or(0, |s| s.node.config().handshake_timeout_ms);
        for w in self.wires.values() {
            // A handshake completed if an end verified its peer and nobody
            // refused it. (An end may then close a duplicate link at once.)
            if w.failed {
                o.handshakes_failed += 1;
            } else if w.a_up || w.b_up {
                o.links_up += 1;
            } else if w.opened_ms + timeout < self.now {
                // Stalled past the handshake timeout; links opened in the
                // last moments of the run are neither.
                o.handshakes_failed += 1;
            }
        }
        let attackers: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|s| s.flooder)
            .map(|s| s.node.node_id())
            .collect();
        o.attacker_population_share = attackers.len() as f64 / self.nodes.len().max(1) as f64;
        let honest: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|s| !s.flooder && !s.forger)
            .collect();
        o.honest_nodes = honest.len() as u64;
        let mut share_sum = 0.0;
        let mut sampled = 0usize;
        for s in &honest {
            let sample = s.node.sample();
            o.mean_sample_size += sample.len() as f64;
            o.mean_known += s.node.known_count() as f64;
            let peers = s.node.peers().len();
            o.mean_peers += peers as f64;
            o.honest_connected += u64::from(peers > 0);
            o.rounds += s.node.stats().rounds;
            o.floods_detected += s.node.stats().floods_detected;
            o.peers_penalised += s.node.stats().peers_penalised;
            o.descriptors_refused += s.node.stats().descriptors_refused;
            o.pulls_sent += s.node.stats().pulls_sent;
            o.pull_replies += s.node.stats().pull_replies;
            o.pushes_sent += s.node.stats().pushes_sent;
            if !sample.is_empty() {
                let bad = sample.iter().filter(|id| attackers.contains(id)).count();
                share_sum += bad as f64 / sample.len() as f64;
                sampled += 1;
            }
        }
        self.circuit_outcome(&mut o);
        o.forgers = self.nodes.iter().filter(|s| s.forger).count() as u64;
        o.forge_targets = self.forge_targets.len() as u64;
        o.forge_targeted = self.forged.len() as u64;
        o.targeted_picks = self.pick_shares(&self.forged, &self.adversaries());
        if self.scenario.position_guess {
            let built: Vec<(Vec<usize>, u64)> = self
                .built_circuits()
                .into_iter()
                .filter(|c| c.probe_seen)
                .map(|c| (c.hops, c.probe))
                .collect();
            o.position_guess = self.observed.measure(
                built.iter().map(|(p, n)| (p.as_slice(), *n)),
                self.scenario.hops,
            );
        }
        let h = honest.len().max(1) as f64;
        o.attacker_share_of_samples = if sampled == 0 {
            0.0
        } else {
            share_sum / sampled as f64
        };
        o.mean_sample_size /= h;
        o.mean_known /= h;
        o.mean_peers /= h;
        o
    }

    /// Circuit figures: builds verified by the last hop's probe answer,
    /// build times, and what colluders at both ends of a path could
    /// correlate.
    fn circuit_outcome(&self, o: &mut Outcome) {
        let mut times = Vec::new();
        let mut guarded = 0u64;
        let mut colluder_guards = 0u64;
        let mut per_guard: BTreeMap<NodeId, u64> = BTreeMap::new();
        for s in &self.nodes {
            let st = &s.node.stats().circuits;
            o.circuits_attempted += st.attempted;
            o.circuits_failed += st.failed;
            o.circuits_torn_down_bad_cell += st.torn_down_bad_cell;
            if !s.flooder
                && !s.forger
                && !s.colluder
                && let Some(g) = s.node.guards().first()
            {
                guarded += 1;
                *per_guard.entry(g.id).or_default() += 1;
                if self
                    .by_id
                    .get(&g.id)
                    .is_some_and(|&j| self.nodes[j].colluder)
                {
                    colluder_guards += 1;
                }
            }
        }
        let mut exposed = BTreeSet::new();
        for c in self.built_circuits() {
            if !c.probe_seen {
                continue;
            }
            o.circuits_built += 1;
            times.push(c.build_ms);
            let b = &self.nodes[c.builder];
            if b.colluder || b.flooder || b.forger {
                continue;
            }
            o.honest_circuits_built += 1;
            let first = self.nodes[c.hops[0]].colluder;
            let last = c.hops.last().is_some_and(|&j| self.nodes[j].colluder);
            if first && last {
                o.colluder_first_last += 1;
                exposed.insert(c.builder);
            }
        }
        o.clients_exposed = exposed.len() as u64;
        if !self.crashed.is_empty() {
            for (i, s) in self.nodes.iter().enumerate() {
                if self.crashed.contains(&i) || s.flooder || s.forger {
                    continue;
                }
                if let Some(g) = self.guard_at_crash.get(&i)
                    && self.by_id.get(g).is_some_and(|j| !self.crashed.contains(j))
                    && s.node.guards().first().map(|x| x.id) != Some(*g)
                {
                    o.guards_changed += 1;
                }
                if !self.live.keys().any(|(b, _)| *b == i) {
                    o.survivors_without_circuit += 1;
                    if std::env::var_os("VEIL_SIM_DEBUG").is_some() {
                        let guards: Vec<(usize, bool)> = s
                            .node
                            .guards()
                            .iter()
                            .filter_map(|g| self.by_id.get(&g.id))
                            .map(|&j| (j, self.crashed.contains(&j)))
                            .collect();
                        eprintln!(
                            "survivor {i} has no circuit: guards {guards:?}, stats {:?}",
                            s.node.stats().circuits
                        );
                    }
                }
            }
        }
        o.guard_max_clients = per_guard.values().copied().max().unwrap_or(0);
        let holders: BTreeSet<usize> = self.live.keys().map(|(b, _)| *b).collect();
        if std::env::var_os("VEIL_SIM_DEBUG").is_some() {
            for (i, s) in self.nodes.iter().enumerate() {
                if !holders.contains(&i) && s.online && !s.flooder && !s.forger {
                    eprintln!(
                        "node {i} (client-only {}) holds no circuit: guards {}, vanguards {}, peers {}, known {}, sample {}, stats {:?}",
                        s.client_only,
                        s.node.guards().len(),
                        s.node.vanguards().len(),
                        s.node.peers().len(),
                        s.node.known_count(),
                        s.node.sample().len(),
                        s.node.stats().circuits
                    );
                }
            }
        }
        o.nodes_with_circuit = holders
            .iter()
            .filter(|&&i| !self.nodes[i].flooder && !self.nodes[i].forger && self.nodes[i].online)
            .count() as u64;
        for (i, s) in self.nodes.iter().enumerate() {
            if s.flooder || s.forger {
                continue;
            }
            let forger_guard = s
                .node
                .guards()
                .first()
                .and_then(|g| self.by_id.get(&g.id))
                .is_some_and(|&j| self.nodes[j].forger);
            o.forger_guarded += u64::from(forger_guard);
            o.forger_guarded_without_circuit +=
                u64::from(forger_guard && s.online && !holders.contains(&i));
        }
        for (key, path) in &self.tested {
            let bad = self.nodes[key.0].tamperer || path.iter().any(|&j| self.nodes[j].tamperer);
            let closed = self.closed_built.contains(key);
            if bad {
                o.circuits_via_tamperer += 1;
                o.circuits_via_tamperer_torn_down += u64::from(closed);
            } else {
                o.circuits_clean_torn_down += u64::from(closed);
            }
        }
        times.sort_unstable();
        let pct = |p: usize| -> u64 {
            if times.is_empty() {
                0
            } else {
                times[((times.len() - 1) * p).div_ceil(100)]
            }
        };
        o.circuit_build_ms_p50 = pct(50);
        o.circuit_build_ms_p95 = pct(95);
        o.colluder_guard_share = if guarded == 0 {
            0.0
        } else {
            colluder_guards as f64 / guarded as f64
        };
    }

    /// Every circuit a node reported built, with whether the path's last
    /// hop reported answering the probe that completed it (what the
    /// harness counts).
    pub fn built_circuits(&self) -> Vec<BuiltCircuit> {
        self.built
            .iter()
            .filter_map(|(builder, hops, build_ms, probe)| {
                let hops: Option<Vec<usize>> =
                    hops.iter().map(|h| self.by_id.get(h).copied()).collect();
                let hops = hops?;
                let probe_seen = self.probes_answered.get(probe) == hops.last();
                Some(BuiltCircuit {
                    builder: *builder,
                    hops,
                    build_ms: *build_ms,
                    probe_seen,
                    probe: *probe,
                })
            })
            .collect()
    }

    /// Sizes of all circuit cells the simulated network carried.
    pub fn circuit_cell_sizes(&self) -> &BTreeSet<usize> {
        &self.circuit_cell_sizes
    }

    /// What node `i` recorded as a relay (with `observe` on), taken.
    pub fn take_observations(&mut self, i: usize) -> Vec<Observation> {
        let mut seen = self.raw_observations.remove(&i).unwrap_or_default();
        seen.extend(self.nodes[i].node.take_observations());
        seen
    }

    /// What relays saw, folded per relayed circuit (with `position_guess`
    /// on).
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// Indices of flooders.
    pub fn flooders(&self) -> BTreeSet<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].flooder)
            .collect()
    }

    /// Flooders and forgers.
    pub fn adversaries(&self) -> BTreeSet<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].flooder || self.nodes[i].forger)
            .collect()
    }

    /// Honest relays a forgery was sent for.
    pub fn forge_targeted(&self) -> &BTreeSet<usize> {
        &self.forged
    }

    /// The share of `targets` in the picks of every node outside `skip`
    /// (and not itself an adversary): guard and vanguard lists at the end,
    /// first and last hops of every circuit built. Compare a run with
    /// forgers against the same seed without them by passing the same
    /// `targets` and `skip` to both.
    pub fn pick_shares(&self, targets: &BTreeSet<usize>, skip: &BTreeSet<usize>) -> PickShares {
        let counted =
            |i: usize| !skip.contains(&i) && !self.nodes[i].flooder && !self.nodes[i].forger;
        let hit = |id: &NodeId| self.by_id.get(id).is_some_and(|j| targets.contains(j));
        let relays = self.nodes.iter().filter(|s| !s.client_only).count();
        let (mut guards, mut guard_hits, mut vanguards, mut vanguard_hits) =
            (0u64, 0u64, 0u64, 0u64);
        for (i, s) in self.nodes.iter().enumerate() {
            if !counted(i) {
                continue;
            }
            for g in s.node.guards() {
                guards += 1;
                guard_hits += u64::from(hit(&g.id));
            }
            for v in s.node.vanguards() {
                vanguards += 1;
                vanguard_hits += u64::from(hit(&v));
            }
        }
        let (mut circuits, mut first, mut exit) = (0u64, 0u64, 0u64);
        for c in self.built_circuits() {
            if !c.probe_seen || !counted(c.builder) {
                continue;
            }
            circuits += 1;
            first += u64::from(targets.contains(&c.hops[0]));
            exit += u64::from(c.hops.last().is_some_and(|h| targets.contains(h)));
        }
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        PickShares {
            relay_share: share(targets.len() as u64, relays as u64),
            guard_pool: share(guard_hits, guards),
            vanguard_pool: share(vanguard_hits, vanguards),
            first_hop: share(first, circuits),
            exit: share(exit, circuits),
            guard_entries: guards,
            circuits,
        }
    }

    /// Node `i`'s identity material an observer must never see in a
    /// relay's plaintext: node id, both public keys, its address as an
    /// EXTEND would encode it.
    pub fn secrets_of(&self, i: usize) -> Vec<Vec<u8>> {
        let d = self.nodes[i].node.descriptor();
        let addr = self.nodes[i].addr;
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
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].colluder)
            .collect()
    }

    /// Indices of client-only nodes.
    pub fn client_only_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].client_only)
            .collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Honest nodes' samples, for tests.
    pub fn samples(&self) -> Vec<Vec<NodeId>> {
        self.nodes
            .iter()
            .filter(|s| !s.flooder && !s.forger)
            .map(|s| s.node.sample())
            .collect()
    }

    /// Take a node offline (churn hook): its links drop at both ends.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].online = false;
        let links: Vec<LinkId> = self.nodes[i].links.keys().copied().collect();
        for l in links {
            self.close_link(i, l);
            self.nodes[i].node.handle_link_down(self.now, l);
        }
    }
}
