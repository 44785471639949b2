//! The node: veil's protocol as one deterministic, sans-IO state machine.
//!
//! The daemon drives it over QUIC and the simulator drives thousands of them
//! over simulated links; both go through exactly this API, in the style of
//! quinn-proto:
//!
//! - **Inputs** (`handle_*`): a link came up ([`Node::handle_link_up`]),
//!   bytes arrived on it ([`Node::handle_link_data`]), it went down
//!   ([`Node::handle_link_down`]), a dial failed
//!   ([`Node::handle_connect_failed`]), a timer fired
//!   ([`Node::handle_timeout`]).
//! - **Outputs** (`poll_*`): cells to send ([`Node::poll_transmit`]),
//!   requests and notices for the driver ([`Node::poll_event`]: dial this
//!   address, close that link, a peer came up), and when to call
//!   `handle_timeout` next ([`Node::poll_timeout`]).
//!
//! **Call order.** After every `handle_*` call, drain `poll_transmit` and
//! `poll_event` until they return `None`, then read `poll_timeout` and
//! arrange to call `handle_timeout` at that time (or earlier). Every input
//! carries `now` (Unix milliseconds in the daemon, virtual milliseconds in
//! the simulator); the node never reads a clock. All randomness comes from
//! the seed given to [`Node::new`], and all collections are ordered, so the
//! same inputs give the same outputs.
//!
//! **Links.** A link is a reliable, ordered byte stream to one peer (a QUIC
//! stream in the daemon). Its first cells are a Noise XX handshake bound to
//! the transport's channel-binding value (see [`crate::link`]); nothing else
//! is accepted or sent before it completes. Memory per link is bounded (one
//! partial cell, a bounded output queue), cells per second per link are
//! rate-limited, and pending handshakes are bounded per node.
//!
//! **Peer sampling.** Brahms rounds over established links (see
//! [`crate::sampling`]). A push carries only the pusher's own descriptor and
//! at most one push and one pull request per link per round are honoured.
//! An address learnt from a descriptor is dialled at most once per
//! `dial_backoff_ms`, with the claimed id as the expected peer, and used for
//! nothing else until that handshake succeeds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

mod circuits;
mod directory;
mod outbox;

pub use circuits::{
    CircuitId, CircuitInfo, CircuitState, CircuitStats, CloseReason, GuardRecord, Observation,
    RelayCircuitId, SendError,
};

use crate::cell::{Cell, CellReader};
use crate::descriptor::{Admitted, Descriptor, DescriptorError, flags};
use crate::identity::{NodeId, NodeIdentity};
use crate::link::{CheckParams, HandshakeError, HandshakeStep, LinkHandshake, LinkMsg, Side};
use crate::path::CircuitParams;
use crate::pow::PowParams;
use crate::sampling::{Brahms, BrahmsParams};
use directory::Directory;
use outbox::{Outbox, Push};

/// Milliseconds: Unix time in the daemon, virtual time in the simulator.
pub type Millis = u64;

/// The driver's handle for one link. Unique per node for the node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// Who opened a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We dialled (after a [`Event::Connect`]).
    Outbound,
    /// The peer dialled us.
    Inbound,
}

/// Protocol parameters. [`Config::mainnet`] holds the real network's values;
/// [`Config::testnet`] relaxes the ones that only make sense in a large
/// network (like Tor's TestingTorNetwork).
#[derive(Clone, Debug)]
pub struct Config {
    /// Proof-of-work difficulty for node ids.
    pub pow: PowParams,
    /// Relay for others (false: client-only).
    pub relay: bool,
    /// The address we listen on, advertised in our descriptor.
    pub advertised_addr: Option<SocketAddr>,
    /// Seed nodes to reach first.
    pub bootstrap: Vec<SocketAddr>,
    /// Peer-sampling parameters.
    pub brahms: BrahmsParams,
    /// Length of a gossip round.
    pub round_ms: Millis,
    /// A handshake must finish within this.
    pub handshake_timeout_ms: Millis,
    /// Unreached bootstrap addresses are retried this often.
    pub bootstrap_retry_ms: Millis,
    /// An address learnt from a descriptor is dialled at most this often.
    pub dial_backoff_ms: Millis,
    /// Most links at once.
    pub max_links: usize,
    /// Most new links a gossip round may open: push and pull targets
    /// without a link beyond this are skipped this round. Each new link
    /// costs a QUIC and a Noise handshake at both ends.
    pub max_new_links_per_round: usize,
    /// Most handshakes and dials in flight at once, counted separately for
    /// inbound handshakes and for our own dials and outbound handshakes.
    pub max_pending_handshakes: usize,
    /// Most inbound handshakes in flight from one source (an IPv4 /24 or
    /// an IPv6 /48), so one host cannot take every handshake slot.
    pub max_handshakes_per_source: usize,
    /// Most cells a peer may send per second on one link (burst = 2 s worth).
    pub max_cells_per_sec: u32,
    /// Most link-level and circuit-control cells queued for one link; a
    /// peer that lets more pile up does not read, and its link is cut.
    pub max_queued_cells: usize,
    /// Most cells of one circuit queued for one link. An honest end has at
    /// most one flow-control window in flight, so a circuit over this broke
    /// flow control: it is destroyed, alone. Must exceed
    /// [`CircuitParams::window_cells`].
    pub max_circuit_queue_cells: usize,
    /// Most cells queued in all; beyond it the circuit with the longest
    /// queue is destroyed.
    pub max_queued_cells_total: usize,
    /// Most cells handed to the driver for one link and not yet reported
    /// written ([`Node::handle_link_sent`]): the back-pressure point.
    pub max_link_in_flight_cells: usize,
    /// Most descriptors remembered.
    pub max_known_peers: usize,
    /// Oldest descriptor accepted.
    pub descriptor_max_age_ms: Millis,
    /// Our descriptor is re-signed this often.
    pub descriptor_refresh_ms: Millis,
    /// Circuits, guards and paths.
    pub circuits: CircuitParams,
}

impl Config {
    /// The real network.
    pub fn mainnet() -> Config {
        Config {
            pow: PowParams::MAINNET,
            relay: true,
            advertised_addr: None,
            bootstrap: Vec::new(),
            brahms: BrahmsParams::DEFAULT,
            round_ms: 30_000,
            handshake_timeout_ms: 20_000,
            bootstrap_retry_ms: 10_000,
            dial_backoff_ms: 10 * 60_000,
            max_links: 128,
            max_new_links_per_round: 1,
            max_pending_handshakes: 64,
            max_handshakes_per_source: 4,
            max_cells_per_sec: 4096,
            max_queued_cells: 1024,
            max_circuit_queue_cells: 768,
            max_queued_cells_total: 16_384,
            max_link_in_flight_cells: 64,
            max_known_peers: 8192,
            descriptor_max_age_ms: 6 * 3600 * 1000,
            descriptor_refresh_ms: 3600 * 1000,
            circuits: CircuitParams::MAINNET,
        }
    }

    /// A small local test network: low PoW, short timers.
    pub fn testnet() -> Config {
        Config {
            pow: PowParams::TESTNET,
            round_ms: 1_000,
            handshake_timeout_ms: 10_000,
            bootstrap_retry_ms: 1_000,
            dial_backoff_ms: 5_000,
            circuits: CircuitParams::TESTNET,
            ..Config::mainnet()
        }
    }
}

/// A [`Config`] that passed [`Config::validate`]: the only kind
/// [`Node::new`] takes.
#[derive(Clone, Debug)]
pub struct ValidConfig(Config);

impl std::ops::Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

impl Config {
    /// Checks every value a node divides by, compares against or sizes a
    /// queue with; the error names the field.
    pub fn validate(self) -> Result<ValidConfig, String> {
        self.circuits.validate()?;
        let positive = [
            ("round_ms", self.round_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("bootstrap_retry_ms", self.bootstrap_retry_ms),
            ("descriptor_max_age_ms", self.descriptor_max_age_ms),
            ("descriptor_refresh_ms", self.descriptor_refresh_ms),
            ("max_links", self.max_links as u64),
            ("max_pending_handshakes", self.max_pending_handshakes as u64),
            (
                "max_handshakes_per_source",
                self.max_handshakes_per_source as u64,
            ),
            ("max_cells_per_sec", u64::from(self.max_cells_per_sec)),
            ("max_queued_cells", self.max_queued_cells as u64),
            ("max_known_peers", self.max_known_peers as u64),
            (
                "max_link_in_flight_cells",
                self.max_link_in_flight_cells as u64,
            ),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.max_links < 2 {
            return Err("max_links must be at least 2".into());
        }
        let window = self.circuits.window_cells as usize;
        if self.max_circuit_queue_cells <= window {
            return Err(format!(
                "max_circuit_queue_cells ({}) must exceed the circuit window ({window})",
                self.max_circuit_queue_cells
            ));
        }
        if self.max_queued_cells_total < self.max_circuit_queue_cells {
            return Err("max_queued_cells_total must hold at least one circuit's queue".into());
        }
        if self.brahms.view_size == 0 || self.brahms.sample_size == 0 {
            return Err("brahms view and sample sizes must be positive".into());
        }
        if self.relay && self.advertised_addr.is_none() {
            return Err("a relay needs an address to advertise".into());
        }
        Ok(ValidConfig(self))
    }
}

/// A cell to send on a link.
#[derive(Debug)]
pub struct Transmit {
    /// Where.
    pub link: LinkId,
    /// What (exactly [`crate::cell::CELL_SIZE`] bytes).
    pub cell: Cell,
}

/// Requests and notices for the driver.
#[derive(Debug)]
pub enum Event {
    /// Open a link to `addr` and report it with `handle_link_up(..,
    /// Direction::Outbound, addr, ..)` or `handle_connect_failed(addr)`.
    Connect {
        /// Where to dial.
        addr: SocketAddr,
        /// Whom we expect there (None for bootstrap addresses).
        expected: Option<NodeId>,
    },
    /// Close this link (the node already forgot it).
    Close {
        /// Which.
        link: LinkId,
    },
    /// A link finished its handshake.
    LinkUp {
        /// Which.
        link: LinkId,
        /// The authenticated peer.
        peer: NodeId,
        /// The transport address of the peer.
        addr: SocketAddr,
        /// Who dialled.
        direction: Direction,
    },
    /// A handshake failed; the link is being closed.
    HandshakeFailed {
        /// Which.
        link: LinkId,
        /// Why.
        error: HandshakeError,
    },
    /// The guard list changed: persist [`Node::guards`].
    GuardsChanged,
    /// One of our circuits is built: every hop answered and the probe
    /// `probe` crossed it and came back.
    CircuitBuilt {
        /// Which.
        id: CircuitId,
        /// Its relays, guard first.
        hops: Vec<NodeId>,
        /// From the start of the build to the probe's return.
        build_ms: Millis,
        /// The probe's nonce (the last hop reported it with
        /// [`Event::ProbeAnswered`]).
        probe: u64,
    },
    /// One of our circuits ended (or its build failed).
    CircuitClosed {
        /// Which.
        id: CircuitId,
        /// Its planned relays, guard first.
        hops: Vec<NodeId>,
        /// Whether it had been built.
        built: bool,
        /// Hops that had answered (equal to `hops.len()` once built).
        reached: usize,
        /// Why.
        reason: CloseReason,
    },
    /// As a relay we answered a probe.
    ProbeAnswered {
        /// The probe's nonce.
        nonce: u64,
    },
    /// Data arrived from the last hop of one of our circuits.
    CircuitData {
        /// Which.
        id: CircuitId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// As the last hop of a circuit, data arrived from its client.
    RelayData {
        /// Which.
        circuit: RelayCircuitId,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// An authenticated peer, for `veil peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id.
    pub node_id: NodeId,
    /// The transport address of the link.
    pub addr: SocketAddr,
    /// Who dialled.
    pub direction: Direction,
    /// When the handshake completed.
    pub since_ms: Millis,
    /// Whether the peer relays.
    pub relay: bool,
}

/// Counters, for status output and the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Handshakes we initiated that completed.
    pub handshakes_ok_outbound: u64,
    /// Handshakes we answered that completed.
    pub handshakes_ok_inbound: u64,
    /// Handshakes that failed (either side), timeouts included.
    pub handshakes_failed: u64,
    /// Dials the driver reported as failed.
    pub dials_failed: u64,
    /// Links closed because the peer broke the protocol or a limit.
    pub peers_penalised: u64,
    /// Descriptors refused (bad signature, PoW, freshness).
    pub descriptors_refused: u64,
    /// Pushes and pull requests over the per-round limit, ignored.
    pub over_limit_ignored: u64,
    /// Rounds completed.
    pub rounds: u64,
    /// Rounds in which Brahms saw a push flood and kept its view.
    pub floods_detected: u64,
    /// Pull requests we sent.
    pub pulls_sent: u64,
    /// Pull-reply cells we accepted.
    pub pull_replies: u64,
    /// Pushes we sent.
    pub pushes_sent: u64,
    /// Circuits (ours and relayed).
    pub circuits: CircuitStats,
}

#[derive(Debug)]
enum LinkState {
    Handshaking(Box<LinkHandshake>),
    Up { peer: NodeId },
    Closed,
}

#[derive(Debug)]
struct Link {
    direction: Direction,
    remote: SocketAddr,
    state: LinkState,
    reader: CellReader,
    opened_ms: Millis,
    up_since_ms: Millis,
    last_used_ms: Millis,
    /// Inbound cells per second ([`Config::max_cells_per_sec`]).
    cells: TokenBucket,
    /// CREATEs per second ([`CircuitParams::creates_per_sec_per_link`]).
    creates: TokenBucket,
    pushed_round: u64,
    pulled_round: u64,
    /// Our outstanding pull on this link: nonce and descriptors received.
    my_pull: Option<(u64, usize)>,
    /// Whom we expect at the other end (outbound links to a known id).
    expected: Option<NodeId>,
    /// The dial was made for our own circuits or guard links.
    own: bool,
    /// Circuits on this link, by link-local circuit id.
    circuits: BTreeMap<u32, circuits::CircRef>,
}

#[derive(Debug, Clone, Copy)]
struct Dial {
    expected: Option<NodeId>,
    since_ms: Millis,
    /// Made for our own circuits or guard links (not for gossip or for
    /// someone else's EXTEND).
    own: bool,
}

/// The veil node state machine. See the module docs for the call order.
#[derive(Debug)]
pub struct Node {
    identity: NodeIdentity,
    config: Config,
    rng: ChaCha20Rng,
    descriptor: Descriptor,
    links: BTreeMap<LinkId, Link>,
    by_peer: BTreeMap<NodeId, LinkId>,
    dir: Directory,
    dials: BTreeMap<SocketAddr, Dial>,
    /// When we last dialled an address expecting an id (a success clears
    /// the entry): at most one dial per pair per `dial_backoff_ms`.
    last_dial: BTreeMap<(SocketAddr, NodeId), Millis>,
    /// (address, expected id) pairs where someone else answered: no
    /// extend dial to them for the backoff (bounded like `last_dial`).
    wrong_peer: BTreeMap<(SocketAddr, NodeId), Millis>,
    bootstrap_reached: BTreeSet<SocketAddr>,
    brahms: Brahms,
    round: u64,
    next_round_ms: Millis,
    next_bootstrap_ms: Millis,
    pending_push: BTreeSet<NodeId>,
    pending_pull: BTreeSet<NodeId>,
    outbox: Outbox,
    events: VecDeque<Event>,
    stats: Stats,
    circ: circuits::Circuits,
    /// The latest `now` seen by any input.
    now_ms: Millis,
    /// Inside [`Node::shed_load`].
    shedding: bool,
}

impl Node {
    /// A node with this identity and configuration. `seed` drives all of its
    /// randomness; `now` is the current time.
    pub fn new(identity: NodeIdentity, config: ValidConfig, seed: [u8; 32], now: Millis) -> Node {
        let config = config.0;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let descriptor = sign_own(&identity, &config, now);
        let brahms = Brahms::new(identity.node_id(), config.brahms, &mut rng);
        let dir = Directory::new(identity.node_id(), config.max_known_peers);
        // Spread the first round so that nodes started together do not act
        // in lockstep.
        let first_round = now + 1 + rng.next_u64() % config.round_ms.max(1);
        Node {
            identity,
            config,
            rng,
            descriptor,
            links: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            dir,
            dials: BTreeMap::new(),
            last_dial: BTreeMap::new(),
            wrong_peer: BTreeMap::new(),
            bootstrap_reached: BTreeSet::new(),
            brahms,
            round: 0,
            next_round_ms: first_round,
            next_bootstrap_ms: now,
            pending_push: BTreeSet::new(),
            pending_pull: BTreeSet::new(),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            stats: Stats::default(),
            circ: circuits::Circuits::default(),
            now_ms: now,
            shedding: false,
        }
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Our current signed descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Peers with an authenticated link, by node id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .links
            .values()
            .filter_map(|l| match l.state {
                LinkState::Up { peer } => Some(PeerInfo {
                    node_id: peer,
                    addr: l.remote,
                    direction: l.direction,
                    since_ms: l.up_since_ms,
                    relay: self.dir.descriptor(&peer).is_some_and(Descriptor::is_relay),
                }),
                _ => None,
            })
            .collect();
        out.sort_by_key(|p| p.node_id);
        out
    }

    /// The peer-sampling output: a near-uniform sample of node ids.
    pub fn sample(&self) -> Vec<NodeId> {
        self.brahms.sample()
    }

    /// The current Brahms view.
    pub fn view(&self) -> &[NodeId] {
        self.brahms.view()
    }

    /// Verified descriptors we hold for `id`, with when we first saw it.
    pub fn known_descriptor(&self, id: &NodeId) -> Option<(&Descriptor, Millis)> {
        self.dir
            .get(id)
            .and_then(|k| k.descriptor().map(|d| (d, k.first_seen_ms)))
    }

    /// Number of descriptors held.
    pub fn known_count(&self) -> usize {
        self.dir.len()
    }

    // ---- inputs -------------------------------------------------------

    /// A transport link is open. `binding` is the transport's channel-binding
    /// value (identical on both ends of a genuine connection).
    pub fn handle_link_up(
        &mut self,
        now: Millis,
        link: LinkId,
        direction: Direction,
        remote: SocketAddr,
        binding: [u8; 32],
    ) {
        let now = self.clamp(now);
        if direction == Direction::Inbound && !self.config.relay {
            // Client-only: we link to our guards and nobody links to us.
            self.events.push_back(Event::Close { link });
            return;
        }
        let (expected, own) = match direction {
            Direction::Outbound => self
                .dials
                .remove(&remote)
                .map_or((None, false), |d| (d.expected, d.own)),
            Direction::Inbound => (None, false),
        };
        // Admission before authentication closes nothing: links beyond
        // the limits are made room for only once their handshake succeeds
        // (`make_room`), so an unauthenticated dialler cannot evict anyone.
        let inbound_pending = |src: Option<std::net::IpAddr>| {
            self.links
                .values()
                .filter(|l| {
                    l.direction == Direction::Inbound
                        && matches!(l.state, LinkState::Handshaking(_))
                        && src.is_none_or(|ip| same_source(ip, l.remote.ip()))
                })
                .count()
        };
        if self.links.len() >= self.config.max_links + 2 * self.config.max_pending_handshakes
            || (direction == Direction::Inbound
                && (inbound_pending(None) >= self.config.max_pending_handshakes
                    || inbound_pending(Some(remote.ip())) >= self.config.max_handshakes_per_source))
            || self.links.contains_key(&link)
        {
            self.events.push_back(Event::Close { link });
            return;
        }
        let side = match direction {
            Direction::Outbound => Side::Initiator,
            Direction::Inbound => Side::Responder,
        };
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let (hs, first) = match LinkHandshake::start(
            &self.identity,
            &self.descriptor,
            side,
            expected,
            &binding,
            seed,
        ) {
            Ok(x) => x,
            Err(error) => {
                self.stats.handshakes_failed += 1;
                self.events
                    .push_back(Event::HandshakeFailed { link, error });
                self.events.push_back(Event::Close { link });
                return;
            }
        };
        self.links.insert(
            link,
            Link {
                direction,
                remote,
                state: LinkState::Handshaking(Box::new(hs)),
                reader: CellReader::default(),
                opened_ms: now,
                up_since_ms: now,
                last_used_ms: now,
                cells: TokenBucket::full(now, self.config.max_cells_per_sec),
                creates: TokenBucket::full(now, self.config.circuits.creates_per_sec_per_link),
                pushed_round: 0,
                pulled_round: 0,
                my_pull: None,
                expected,
                own,
                circuits: BTreeMap::new(),
            },
        );
        self.outbox.open(link);
        if let Some(c) = first {
            self.send(link, c);
        }
    }

    /// Stream bytes arrived on a link.
    pub fn handle_link_data(&mut self, now: Millis, link: LinkId, data: &[u8]) {
        let now = self.clamp(now);
        let mut cells = Vec::new();
        match self.links.get_mut(&link) {
            Some(l) => l.reader.push(data, &mut cells),
            None => return,
        }
        for cell in cells {
            if !self.take_token(now, link) {
                self.penalise(link);
                return;
            }
            self.handle_cell(now, link, cell);
            if !self.links.contains_key(&link) {
                return;
            }
        }
    }

    /// A link closed (by the peer or the transport).
    pub fn handle_link_down(&mut self, now: Millis, link: LinkId) {
        let now = self.clamp(now);
        self.outbox.close(link);
        if let Some(mut l) = self.links.remove(&link) {
            let circuits = std::mem::take(&mut l.circuits);
            match l.state {
                LinkState::Up { peer } => {
                    if self.by_peer.get(&peer) == Some(&link) {
                        self.by_peer.remove(&peer);
                    }
                }
                LinkState::Handshaking(_) | LinkState::Closed => {
                    if matches!(l.state, LinkState::Handshaking(_)) {
                        self.stats.handshakes_failed += 1;
                    }
                    // The node we dialled for a circuit cannot be reached.
                    if let Some(id) = l.expected {
                        self.circuits_peer_unreachable(now, id, l.own);
                    }
                }
            }
            self.circuits_link_down(now, circuits);
        }
    }

    /// The driver wrote `cells` of the cells [`Node::poll_transmit`] gave it
    /// for `link` (to the socket, or as far as the transport accepts them):
    /// that much room opens for the link's queue.
    pub fn handle_link_sent(&mut self, now: Millis, link: LinkId, cells: usize) {
        self.clamp(now);
        self.outbox.sent(link, cells);
    }

    /// A dial requested by [`Event::Connect`] failed.
    pub fn handle_connect_failed(&mut self, now: Millis, addr: SocketAddr) {
        let now = self.clamp(now);
        self.stats.dials_failed += 1;
        if let Some(d) = self.dials.remove(&addr)
            && let Some(id) = d.expected
        {
            self.circuits_peer_unreachable(now, id, d.own);
            self.pending_push.remove(&id);
            self.pending_pull.remove(&id);
            // An address that never answered is not kept in the view.
            if self.dir.get(&id).is_some_and(|k| k.verified_addr.is_none()) {
                self.brahms.remove(id);
            }
        }
    }

    /// A timer fired (call at [`Node::poll_timeout`] or later).
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.clamp(now);
        // Stalled handshakes and dials.
        let deadline = self.config.handshake_timeout_ms;
        let stalled: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                matches!(l.state, LinkState::Handshaking(_)) && now >= l.opened_ms + deadline
            })
            .map(|(id, _)| *id)
            .collect();
        for link in stalled {
            self.stats.handshakes_failed += 1;
            self.close(link);
        }
        self.dials.retain(|_, d| now < d.since_ms + deadline);
        // Bootstrap until every seed was reached once.
        if now >= self.next_bootstrap_ms && self.bootstrap_pending() {
            self.next_bootstrap_ms = now + self.config.bootstrap_retry_ms;
            // One seed at a time, picked at random, so that a crowd of
            // newcomers spreads over the seed list instead of hitting
            // every seed at once.
            // Seeds never reached first; then any.
            let usable = |a: &SocketAddr| {
                Some(*a) != self.config.advertised_addr && !self.dials.contains_key(a)
            };
            let mut seeds: Vec<SocketAddr> = self
                .config
                .bootstrap
                .iter()
                .copied()
                .filter(|a| usable(a) && !self.bootstrap_reached.contains(a))
                .collect();
            if seeds.is_empty() {
                seeds = self
                    .config
                    .bootstrap
                    .iter()
                    .copied()
                    .filter(usable)
                    .collect();
            }
            if !seeds.is_empty() {
                let addr = seeds[(self.rng.next_u64() % seeds.len() as u64) as usize];
                self.dials.insert(
                    addr,
                    Dial {
                        expected: None,
                        since_ms: now,
                        own: false,
                    },
                );
                self.events.push_back(Event::Connect {
                    addr,
                    expected: None,
                });
            }
        }
        if now >= self.descriptor.timestamp_ms() + self.config.descriptor_refresh_ms {
            self.descriptor = sign_own(&self.identity, &self.config, now);
        }
        if now >= self.next_round_ms {
            self.next_round_ms = now + self.config.round_ms;
            self.run_round(now);
        }
        if now >= self.circ.next_tick_ms {
            self.circuit_tick(now);
        }
    }

    // ---- outputs ------------------------------------------------------

    /// The next cell to send.
    ///
    /// Cells come per link in turn, and per circuit in turn within a link;
    /// a link gets at most [`Config::max_link_in_flight_cells`] cells until
    /// the driver reports them written with [`Node::handle_link_sent`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let limits = self.outbox_limits();
        self.outbox.pop(&limits)
    }

    /// The next request or notice for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = self.next_round_ms;
        if self.bootstrap_pending() {
            t = t.min(self.next_bootstrap_ms);
        }
        t = t.min(self.descriptor.timestamp_ms() + self.config.descriptor_refresh_ms);
        t = t.min(self.circ.next_tick_ms);
        for l in self.links.values() {
            if matches!(l.state, LinkState::Handshaking(_)) {
                t = t.min(l.opened_ms + self.config.handshake_timeout_ms);
            }
        }
        for d in self.dials.values() {
            t = t.min(d.since_ms + self.config.handshake_timeout_ms);
        }
        Some(t)
    }

    /// Seeds are dialled while the node has no authenticated peer (at
    /// start, or after losing every link: a client-only node, which dials
    /// nobody else, would otherwise stay cut off); once linked, gossip takes
    /// over.
    fn bootstrap_pending(&self) -> bool {
        self.by_peer.is_empty()
            && self
                .config
                .bootstrap
                .iter()
                .any(|a| Some(*a) != self.config.advertised_addr)
    }

    // ---- internals ----------------------------------------------------

    /// Every input's time, clamped once at the entry point: the node's
    /// clock never runs backwards (a wall clock stepped back is read as no
    /// time passing), so no `now - earlier` can underflow.
    fn clamp(&mut self, now: Millis) -> Millis {
        self.now_ms = self.now_ms.max(now);
        self.now_ms
    }

    fn check_params(&self, now: Millis) -> CheckParams {
        CheckParams {
            now_ms: now,
            max_age_ms: self.config.descriptor_max_age_ms,
            pow: self.config.pow,
        }
    }

    fn outbox_limits(&self) -> outbox::Limits {
        outbox::Limits {
            max_in_flight: self.config.max_link_in_flight_cells,
            max_circuit_cells: self.config.max_circuit_queue_cells,
            max_control_cells: self.config.max_queued_cells,
        }
    }

    fn send(&mut self, link: LinkId, cell: Cell) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.last_used_ms = l.last_used_ms.max(self.now_ms);
        let cid = cell.circ_id();
        let limits = self.outbox_limits();
        match self.outbox.push(link, cell, &limits) {
            Push::Queued | Push::NoLink => {}
            // The peer does not read: cut it rather than buffer without
            // bound (a link-level offence).
            Push::LinkFull => return self.penalise(link),
            // One circuit broke flow control: it goes, alone.
            Push::CircuitFull => self.circuit_over_queue(link, cid),
        }
        self.shed_load();
    }

    /// Over [`Config::max_queued_cells_total`]: the longest queue goes, one
    /// at a time until back under: a circuit's (destroyed) or a link's
    /// control queue (the peer does not read: cut). Iterative, and not
    /// re-entered by the DESTROYs it sends.
    fn shed_load(&mut self) {
        if self.shedding {
            return;
        }
        self.shedding = true;
        while self.outbox.total() > self.config.max_queued_cells_total {
            match self.outbox.largest() {
                Some(outbox::Victim::Circuit(l, c)) => self.circuit_over_queue(l, c),
                Some(outbox::Victim::Link(l)) => self.penalise(l),
                None => break,
            }
        }
        self.shedding = false;
    }

    fn close(&mut self, link: LinkId) {
        self.handle_link_down(0, link);
        self.events.push_back(Event::Close { link });
    }

    fn penalise(&mut self, link: LinkId) {
        self.stats.peers_penalised += 1;
        self.close(link);
    }

    fn take_token(&mut self, now: Millis, link: LinkId) -> bool {
        let rate = self.config.max_cells_per_sec;
        self.links
            .get_mut(&link)
            .is_some_and(|l| l.cells.take(now, rate))
    }

    fn handle_cell(&mut self, now: Millis, link: LinkId, cell: Cell) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.last_used_ms = now;
        let state = std::mem::replace(&mut l.state, LinkState::Closed);
        match state {
            LinkState::Closed => {}
            LinkState::Handshaking(hs) => {
                let check = self.check_params(now);
                match (*hs).read(&cell, check) {
                    Ok((hs, HandshakeStep::Continue(reply))) => {
                        if let Some(l) = self.links.get_mut(&link) {
                            l.state = LinkState::Handshaking(Box::new(hs));
                        }
                        self.send(link, reply);
                    }
                    Ok((_, HandshakeStep::Done { peer, last })) => {
                        if let Some(c) = last {
                            // Send before the state changes so the queue
                            // accounting sees the link.
                            self.send(link, c);
                        }
                        self.link_established(now, link, *peer);
                    }
                    Err(error) => {
                        self.stats.handshakes_failed += 1;
                        // Someone else answered at the address a descriptor
                        // named: that (address, id) gets no dial for the
                        // backoff, so nobody can aim a stream of dials (an
                        // EXTEND per round trip) at one address.
                        if let HandshakeError::WrongPeer { expected, .. } = &error
                            && let Some(l) = self.links.get(&link)
                        {
                            let key = (l.remote, *expected);
                            if self.wrong_peer.len() >= self.config.max_known_peers {
                                let horizon = now.saturating_sub(self.config.dial_backoff_ms);
                                self.wrong_peer.retain(|_, t| *t >= horizon);
                            }
                            if self.wrong_peer.len() < self.config.max_known_peers {
                                self.wrong_peer.insert(key, now);
                            }
                        }
                        self.events
                            .push_back(Event::HandshakeFailed { link, error });
                        self.close(link);
                    }
                }
            }
            LinkState::Up { peer } => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.state = LinkState::Up { peer };
                }
                if cell.circ_id() != 0 {
                    self.handle_circuit_cell(now, link, cell);
                    return;
                }
                match LinkMsg::decode(&cell) {
                    Ok(msg) => self.handle_link_msg(now, link, peer, msg),
                    Err(_) => self.penalise(link),
                }
            }
        }
    }

    fn link_established(&mut self, now: Millis, link: LinkId, peer: Descriptor) {
        let peer_id = peer.node_id();
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let direction = l.direction;
        let remote = l.remote;
        l.state = LinkState::Up { peer: peer_id };
        l.up_since_ms = now;
        match direction {
            Direction::Outbound => self.stats.handshakes_ok_outbound += 1,
            Direction::Inbound => self.stats.handshakes_ok_inbound += 1,
        }
        if peer_id == self.node_id() {
            // We dialled ourselves (a seed list that includes us).
            self.bootstrap_reached.insert(remote);
            self.close(link);
            return;
        }
        if direction == Direction::Outbound {
            self.bootstrap_reached.insert(remote);
            self.last_dial.remove(&(remote, peer_id));
        }
        if !self.make_room(link) {
            return;
        }
        self.events.push_back(Event::LinkUp {
            link,
            peer: peer_id,
            addr: remote,
            direction,
        });
        let verified = (direction == Direction::Outbound).then_some(remote);
        self.remember(now, peer, verified);
        // Keep one link per peer (both may have dialled at once). Both ends
        // must pick the same survivor, or each closes the other's choice:
        // the link dialled by the smaller node id wins.
        if let Some(&old) = self.by_peer.get(&peer_id)
            && old != link
            && let Some(old_link) = self.links.get(&old)
        {
            let preferred = if self.node_id() < peer_id {
                Direction::Outbound
            } else {
                Direction::Inbound
            };
            let keep_new = old_link.direction != direction && direction == preferred;
            let (loser, loser_busy) = if keep_new {
                (old, !old_link.circuits.is_empty())
            } else {
                (link, false)
            };
            // A loser that already carries circuits stays open until they
            // end (new circuits use the winner).
            if !loser_busy {
                self.close(loser);
            }
            if !keep_new {
                self.circuits_peer_up(now, peer_id);
                return;
            }
        }
        self.by_peer.insert(peer_id, link);
        if self.brahms.view().is_empty() {
            self.brahms.bootstrap([peer_id]);
        }
        if self.pending_push.remove(&peer_id) {
            let c = LinkMsg::push(&self.descriptor);
            self.send(link, c);
        }
        if self.pending_pull.remove(&peer_id) {
            self.send_pull(link);
        }
        self.circuits_peer_up(now, peer_id);
    }

    /// A link just authenticated: keep within [`Config::max_links`] (and
    /// half of it for inbound links, so that peers that dial us cannot
    /// crowd out our own picks, an eclipse defence) by closing the least
    /// recently used idle link of the same kind. Links that carry circuits
    /// and links to guards are never closed for a newcomer. If nothing can
    /// go, the newcomer does (false).
    fn make_room(&mut self, link: LinkId) -> bool {
        let Some(direction) = self.links.get(&link).map(|l| l.direction) else {
            return false;
        };
        let guards = self.guard_ids();
        loop {
            let up = |l: &Link| matches!(l.state, LinkState::Up { .. });
            let total = self.links.values().filter(|l| up(l)).count();
            let inbound = self
                .links
                .values()
                .filter(|l| up(l) && l.direction == Direction::Inbound)
                .count();
            let over_inbound =
                direction == Direction::Inbound && inbound > self.config.max_links / 2;
            if total <= self.config.max_links && !over_inbound {
                return true;
            }
            let victim = self
                .links
                .iter()
                .filter(|(id, l)| {
                    **id != link
                        && l.circuits.is_empty()
                        && (!over_inbound || l.direction == Direction::Inbound)
                        && matches!(l.state, LinkState::Up { peer } if !guards.contains(&peer))
                })
                .min_by_key(|(id, l)| (l.last_used_ms, **id))
                .map(|(id, _)| *id);
            match victim {
                Some(v) => self.close(v),
                None => {
                    self.close(link);
                    return false;
                }
            }
        }
    }

    /// Remember a verified descriptor (from a handshake or a push).
    fn remember(&mut self, now: Millis, d: Descriptor, verified_addr: Option<SocketAddr>) {
        self.dir.remember(now, d, verified_addr);
        self.trim_directory();
    }

    /// Keeps the directory within [`Config::max_known_peers`], never
    /// dropping ids in our view, samples, links or guards.
    fn trim_directory(&mut self) {
        if !self.dir.over_limit() {
            return;
        }
        let keep: BTreeSet<NodeId> = self
            .brahms
            .view()
            .iter()
            .copied()
            .chain(self.brahms.sample())
            .chain(self.by_peer.keys().copied())
            .chain(self.guard_ids())
            .chain(self.vanguards())
            .collect();
        self.dir.trim(&keep);
    }

    /// A gossiped claim failed its signature check: counted, and the peer
    /// that vouched for it (if any) is cut.
    fn refused(&mut self, refusals: Vec<directory::Refusal>) {
        for r in refusals {
            self.stats.descriptors_refused += 1;
            if let Some(peer) = r.blame {
                if let Some(&link) = self.by_peer.get(&peer) {
                    self.penalise(link);
                }
                // Only the peer itself can vouch for a forgery (an honest
                // node vouches only for what it checked, and the check is
                // deterministic), so nobody can frame a guard this way: a
                // guard or vanguard that lies is replaced, and leaves our
                // samples.
                self.drop_liar(peer);
                self.brahms.remove(peer);
            }
        }
    }

    /// Checks the gossiped claim held for `id`, if any, before it is used.
    fn settle(&mut self, id: &NodeId) {
        let now = self.now_ms;
        if let Some(r) = self.dir.settle(now, id) {
            self.refused(vec![r]);
        }
    }

    fn handle_link_msg(&mut self, now: Millis, link: LinkId, peer: NodeId, msg: LinkMsg) {
        let round = self.round;
        match msg {
            LinkMsg::Padding => {}
            LinkMsg::Push(u) => {
                let Some(l) = self.links.get_mut(&link) else {
                    return;
                };
                if l.pushed_round == round && round != 0 {
                    self.stats.over_limit_ignored += 1;
                    return;
                }
                l.pushed_round = round;
                match self.check_descriptor(u, now) {
                    Ok(d) if d.node_id() == peer => {
                        self.remember(now, d, None);
                        self.brahms.on_push(peer);
                    }
                    // Pushing someone else, or an invalid descriptor.
                    _ => {
                        self.stats.descriptors_refused += 1;
                        self.penalise(link);
                    }
                }
            }
            LinkMsg::PullRequest { nonce } => {
                let Some(l) = self.links.get_mut(&link) else {
                    return;
                };
                if l.pulled_round == round && round != 0 {
                    self.stats.over_limit_ignored += 1;
                    return;
                }
                l.pulled_round = round;
                let answer = self.pull_answer(peer);
                for c in LinkMsg::pull_reply(nonce, &answer) {
                    self.send(link, c);
                }
            }
            LinkMsg::PullReply { nonce, descriptors } => {
                let max = self.config.brahms.view_size;
                let Some(l) = self.links.get_mut(&link) else {
                    return;
                };
                let Some((want, got)) = l.my_pull else {
                    // Unsolicited: ignore (a late reply from an old round).
                    self.stats.over_limit_ignored += 1;
                    return;
                };
                if want != nonce || got + descriptors.len() > max {
                    self.stats.over_limit_ignored += 1;
                    return;
                }
                l.my_pull = Some((want, got + descriptors.len()));
                // Identities are admitted (freshness and proof of work, no
                // signature): enough to feed sampling. Signatures are
                // checked when a descriptor is first used.
                let mut ids = Vec::with_capacity(descriptors.len());
                let max_age = self.config.descriptor_max_age_ms;
                let mut refusals = Vec::new();
                for (u, vouched) in descriptors {
                    // Gossip repeats itself: a descriptor identical to the
                    // one we hold needs no new proof-of-work check.
                    let id = u.claimed_id();
                    if let Some(fresh) = self.dir.repeat(now, &u, max_age) {
                        if fresh {
                            ids.push(id);
                        }
                        continue;
                    }
                    match u.admit(now, max_age, self.config.pow) {
                        Ok(a) => {
                            ids.push(a.node_id());
                            refusals.extend(self.dir.offer(now, a, Some(peer), vouched));
                        }
                        Err(DescriptorError::Stale { .. }) => {}
                        Err(_) => self.stats.descriptors_refused += 1,
                    }
                }
                ids.retain(|id| *id != self.node_id());
                self.stats.pull_replies += 1;
                self.brahms.on_pull_reply(peer, &ids);
                self.trim_directory();
                self.refused(refusals);
            }
        }
    }

    /// Check a descriptor, skipping the signature and PoW when it is
    /// identical to one verified before (gossip repeats descriptors a lot).
    fn check_descriptor(
        &self,
        u: crate::descriptor::UncheckedDescriptor,
        now: Millis,
    ) -> Result<Descriptor, DescriptorError> {
        let max_age = self.config.descriptor_max_age_ms;
        if let Some(v) = self.dir.descriptor(&u.claimed_id())
            && let Some(result) = u.check_against_verified(v, now, max_age)
        {
            return result;
        }
        if u.claimed_id() == self.node_id()
            && let Some(result) = u.check_against_verified(&self.descriptor, now, max_age)
        {
            return result;
        }
        u.check(now, max_age, self.config.pow)
    }

    /// What we answer a pull with: ourselves, and the rest drawn uniformly
    /// at random from every descriptor we hold. That makes knowledge of the
    /// membership spread epidemically, so every honest node soon has *seen*
    /// every honest id; min-wise samplers are uniform over the set of ids
    /// seen, so that is what bounds an attacker's share of the samples to
    /// its share of the population, however many pull replies it floods
    /// with its own ids. (The Brahms view is not sent: a push flood can fill
    /// it with attacker ids, which everyone has seen already.)
    fn pull_answer(&mut self, requester: NodeId) -> Vec<(Admitted, bool)> {
        let want = self.config.brahms.view_size;
        let mut ids: BTreeSet<NodeId> = BTreeSet::new();
        let mut answer = vec![(self.descriptor.admitted(), true)];
        ids.insert(self.node_id());
        ids.insert(requester);
        let mut tries = 0;
        while answer.len() < want && tries < 2 * want && self.dir.len() > 0 {
            tries += 1;
            let pick = self.dir.random_id(self.rng.next_u64());
            if let Some(id) = pick
                && let Some(g) = self.dir.gossip_form(&id)
                && ids.insert(id)
            {
                answer.push(g);
            }
        }
        answer
    }

    fn send_pull(&mut self, link: LinkId) {
        let nonce = self.rng.next_u64();
        if let Some(l) = self.links.get_mut(&link) {
            l.my_pull = Some((nonce, 0));
        }
        self.stats.pulls_sent += 1;
        self.send(link, LinkMsg::pull_request(nonce));
    }

    fn run_round(&mut self, now: Millis) {
        if self.round > 0 {
            let outcome = self.brahms.end_round(&mut self.rng);
            self.stats.rounds += 1;
            if outcome.view == crate::sampling::ViewUpdate::FloodDetected {
                self.stats.floods_detected += 1;
            }
        }
        self.round += 1;
        self.pending_push.clear();
        self.pending_pull.clear();
        for l in self.links.values_mut() {
            l.my_pull = None;
        }
        let pushes = self.brahms.push_targets(&mut self.rng);
        // Half the pulls go to view members (Brahms), half to our own
        // samples: the min-wise samplers converge to the population share
        // whatever a flood does to the view, so pulling from them keeps a
        // polluted view from steering all of our discovery to attackers.
        let mut pulls = self.brahms.pull_targets(&mut self.rng);
        let from_samples = pulls.len() / 2;
        pulls.truncate(pulls.len() - from_samples);
        let mut sample = self.brahms.sample();
        sample.retain(|id| !pulls.contains(id));
        for _ in 0..from_samples {
            if sample.is_empty() {
                break;
            }
            let pick = (self.rng.next_u64() % sample.len() as u64) as usize;
            pulls.push(sample.swap_remove(pick));
        }
        let mut budget = self.config.max_new_links_per_round;
        // A client-only node is nobody's hop: it does not advertise itself.
        let pushes = if self.config.relay {
            pushes
        } else {
            Vec::new()
        };
        for id in pushes {
            if let Some(&link) = self.by_peer.get(&id) {
                let c = LinkMsg::push(&self.descriptor);
                self.stats.pushes_sent += 1;
                self.send(link, c);
            } else if budget > 0 && self.dial(now, id) {
                budget -= 1;
                self.pending_push.insert(id);
            }
        }
        // Pull targets without a link, beyond the new-link budget, are
        // replaced by peers on links we opened ourselves (never by peers
        // that dialled us, whom an attacker can multiply).
        let mut substitutes: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.direction == Direction::Outbound && matches!(l.state, LinkState::Up { .. })
            })
            .map(|(id, _)| *id)
            .collect();
        let mut pulled: BTreeSet<LinkId> = BTreeSet::new();
        for id in pulls {
            if let Some(&link) = self.by_peer.get(&id) {
                if pulled.insert(link) {
                    self.send_pull(link);
                }
            } else if self.pending_push.contains(&id) {
                self.pending_pull.insert(id);
            } else if budget > 0 && self.dial(now, id) {
                budget -= 1;
                self.pending_pull.insert(id);
            } else {
                substitutes.retain(|l| !pulled.contains(l));
                if !substitutes.is_empty() {
                    let pick = (self.rng.next_u64() % substitutes.len() as u64) as usize;
                    let link = substitutes.swap_remove(pick);
                    pulled.insert(link);
                    self.send_pull(link);
                }
            }
        }
        if !self.config.relay {
            // Learn relays through every guard, so that no single guard
            // decides what we know (an eclipse defence).
            let guard_links: Vec<LinkId> = self
                .guard_ids()
                .iter()
                .filter_map(|g| self.by_peer.get(g).copied())
                .filter(|l| !pulled.contains(l))
                .collect();
            for link in guard_links {
                self.send_pull(link);
            }
        }
        self.prune_links(now);
    }

    /// Ask the driver to dial `id` at its claimed address, at most once per
    /// backoff period per address.
    fn dial(&mut self, now: Millis, id: NodeId) -> bool {
        if !self.config.relay && !self.guard_ids().is_empty() {
            // Client-only nodes link only to their guards once they have
            // them (see circuits). Before that, like any node, they gossip
            // over links they open: one seed link alone, which a busy seed
            // may drop, would starve them of the relays to choose guards
            // from.
            return false;
        }
        // First use of a gossiped descriptor: check its signature now.
        let Some(d) = self.verified(id) else {
            return false;
        };
        let verified_addr = self.dir.get(&id).and_then(|k| k.verified_addr);
        let Some(addr) = verified_addr.or(d.address()) else {
            return false;
        };
        if !self.dialable(addr) {
            return false;
        }
        if let Some(d) = self.dials.get(&addr) {
            return d.expected == Some(id);
        }
        if !self.dial_allowed(now, addr, id)
            || self.outbound_pending() >= self.config.max_pending_handshakes
            || self.links.len() + self.dials.len() >= self.config.max_links
        {
            return false;
        }
        self.note_dial(now, addr, id);
        self.request_dial(now, addr, id, false);
        true
    }

    /// The gossip dial policy: a dialable address, not one of our own
    /// addresses (any port), and no dial of this address for this id within
    /// the backoff. Keyed by (address, id): a descriptor
    /// signed by someone else naming an honest relay's address cannot block
    /// dials of that relay.
    fn dial_allowed(&self, now: Millis, addr: SocketAddr, id: NodeId) -> bool {
        self.extend_dialable(addr)
            && self
                .last_dial
                .get(&(addr, id))
                .is_none_or(|&t| now >= t + self.config.dial_backoff_ms)
    }

    /// A dialable address that is not one of our own (on any port).
    fn extend_dialable(&self, addr: SocketAddr) -> bool {
        self.dialable(addr) && self.config.advertised_addr.map(|a| a.ip()) != Some(addr.ip())
    }

    /// Records a dial for the backoff (bounded: entries past the backoff
    /// go first; a full table of recent entries refuses nothing but stops
    /// growing).
    fn note_dial(&mut self, now: Millis, addr: SocketAddr, id: NodeId) {
        if self.last_dial.len() >= self.config.max_known_peers {
            let horizon = now.saturating_sub(self.config.dial_backoff_ms);
            self.last_dial.retain(|_, t| *t >= horizon);
        }
        if self.last_dial.len() < self.config.max_known_peers {
            self.last_dial.insert((addr, id), now);
        }
    }

    /// Dials and outbound handshakes in flight (inbound handshakes have a
    /// budget of their own, so a crowd of diallers cannot stop our dials).
    fn outbound_pending(&self) -> usize {
        self.dials.len()
            + self
                .links
                .values()
                .filter(|l| {
                    l.direction == Direction::Outbound
                        && matches!(l.state, LinkState::Handshaking(_))
                })
                .count()
    }

    /// Whether we may dial `addr` at all: a global address, or one of the
    /// same scope as our own advertised address (a loopback test network
    /// dials loopback, a LAN dials the LAN; a relay on a public address is
    /// never made to scan its own host or LAN). Bootstrap seeds, which the
    /// operator chose, are exempt.
    fn dialable(&self, addr: SocketAddr) -> bool {
        let scope = AddrScope::of(addr);
        scope == AddrScope::Global
            || (scope != AddrScope::Invalid
                && self.config.advertised_addr.map(AddrScope::of) == Some(scope))
    }

    /// Records a dial of `addr` expecting `id` and asks the driver for it.
    fn request_dial(&mut self, now: Millis, addr: SocketAddr, id: NodeId, own: bool) {
        self.dials.insert(
            addr,
            Dial {
                expected: Some(id),
                since_ms: now,
                own,
            },
        );
        self.events.push_back(Event::Connect {
            addr,
            expected: Some(id),
        });
    }

    /// Keep the link count well under the limit: close the least recently
    /// used links to peers outside the view.
    fn prune_links(&mut self, now: Millis) {
        // Links that carry circuits, and links to guards, are kept too.
        let mut view: BTreeSet<NodeId> = self.brahms.view().iter().copied().collect();
        view.extend(self.guard_ids());
        for l in self.links.values() {
            if let LinkState::Up { peer } = l.state
                && !l.circuits.is_empty()
            {
                view.insert(peer);
            }
        }
        // Links nobody used for a few rounds, to peers outside the view.
        let idle_ms = 3 * self.config.round_ms;
        let stale: Vec<LinkId> = self
            .links
            .iter()
            .filter_map(|(id, l)| match l.state {
                LinkState::Up { peer }
                    if !view.contains(&peer) && now > l.last_used_ms + idle_ms =>
                {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        for link in stale {
            self.close(link);
        }
        let target = self.config.max_links * 3 / 4;
        if self.links.len() <= target {
            return;
        }
        let mut idle: Vec<(Millis, LinkId)> = self
            .links
            .iter()
            .filter_map(|(id, l)| match l.state {
                LinkState::Up { peer }
                    if !view.contains(&peer) && now > l.last_used_ms + self.config.round_ms =>
                {
                    Some((l.last_used_ms, *id))
                }
                _ => None,
            })
            .collect();
        idle.sort();
        let excess = self.links.len() - target;
        for (_, link) in idle.into_iter().take(excess) {
            self.close(link);
        }
    }
}

/// A token bucket: `rate` tokens per second, bursts of two seconds' worth.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokenBucket {
    /// Tokens, in thousandths.
    milli: u64,
    at_ms: Millis,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(now: Millis, rate: u32) -> TokenBucket {
        TokenBucket {
            milli: u64::from(rate) * 2000,
            at_ms: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Millis, rate: u32) -> bool {
        let rate = u64::from(rate);
        let elapsed = now.saturating_sub(self.at_ms);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(rate * 2000);
        self.at_ms = self.at_ms.max(now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Whether two addresses count as one source for admission: the same IPv4
/// /24 or IPv6 /48 (IPv4-mapped IPv6 counts as IPv4).
fn same_source(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (canon(a), canon(b)) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..3] == b.segments()[..3],
        _ => false,
    }
}

/// What kind of network an address is on, for [`Node::dialable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddrScope {
    /// Unspecified, multicast, broadcast, documentation or port 0: never.
    Invalid,
    /// 127/8, ::1.
    Loopback,
    /// RFC 1918, link-local, CGNAT, unique-local and link-local IPv6.
    Private,
    /// Everything else.
    Global,
}

impl AddrScope {
    fn of(addr: SocketAddr) -> AddrScope {
        use std::net::IpAddr;
        if addr.port() == 0 {
            return AddrScope::Invalid;
        }
        match addr.ip() {
            IpAddr::V4(ip) => {
                let o = ip.octets();
                if ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_broadcast()
                    || ip.is_documentation()
                    || o[0] == 0
                    || o[0] >= 240
                    || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                    || (o[0] == 198 && (o[1] & 0xfe) == 18)
                {
                    AddrScope::Invalid
                } else if ip.is_loopback() {
                    AddrScope::Loopback
                } else if ip.is_private()
                    || ip.is_link_local()
                    || (o[0] == 100 && (o[1] & 0xc0) == 64)
                {
                    AddrScope::Private
                } else {
                    AddrScope::Global
                }
            }
            IpAddr::V6(ip) => {
                if let Some(v4) = ip.to_ipv4_mapped() {
                    return AddrScope::of(SocketAddr::new(IpAddr::V4(v4), addr.port()));
                }
                let seg = ip.segments();
                let o = ip.octets();
                // Addresses that embed an IPv4 address (NAT64, 6to4) are
                // as reachable as that address.
                let embedded = if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                    Some(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]))
                } else if seg[0] == 0x2002 {
                    Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]))
                } else {
                    None
                };
                if let Some(v4) = embedded {
                    return AddrScope::of(SocketAddr::new(IpAddr::V4(v4), addr.port()));
                }
                if ip.is_unspecified()
                    || ip.is_multicast()
                    || (seg[0] == 0x2001 && seg[1] == 0xdb8)
                    // IPv4-compatible (deprecated) ::a.b.c.d
                    || seg[..6] == [0; 6]
                {
                    AddrScope::Invalid
                } else if ip.is_loopback() {
                    AddrScope::Loopback
                } else if (seg[0] & 0xfe00) == 0xfc00
                    || (seg[0] & 0xffc0) == 0xfe80
                    || (seg[0] & 0xffc0) == 0xfec0
                {
                    AddrScope::Private
                } else {
                    AddrScope::Global
                }
            }
        }
    }
}

fn sign_own(identity: &NodeIdentity, config: &Config, now: Millis) -> Descriptor {
    let (f, addr) = if config.relay {
        (flags::RELAY, config.advertised_addr)
    } else {
        (0, None)
    };
    Descriptor::sign(identity, f, addr, now, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::CELL_SIZE;
    use ed25519_dalek::SigningKey;
    use x25519_dalek::StaticSecret;

    pub(super) const T0: Millis = 1_800_000_000_000;

    pub(super) fn node(i: u8, bootstrap: Vec<SocketAddr>) -> Node {
        let id = NodeIdentity::from_keys(
            SigningKey::from_bytes(&[i; 32]),
            StaticSecret::from([i ^ 0xaa; 32]),
            PowParams::TESTNET,
        );
        let mut cfg = Config::testnet();
        cfg.advertised_addr = Some(addr(i));
        cfg.bootstrap = bootstrap;
        Node::new(id, cfg.validate().unwrap(), [i; 32], T0)
    }

    pub(super) fn addr(i: u8) -> SocketAddr {
        format!("127.{i}.0.1:7000").parse().unwrap()
    }

    /// A tiny in-test driver: instant delivery between nodes by address.
    /// What a tamper hook does with a cell (from, to, cell).
    pub(super) type Tamper = Box<dyn FnMut(usize, usize, &mut Cell) -> TamperAction>;

    /// A tamper hook's verdict.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum TamperAction {
        Deliver,
        Drop,
        /// Deliver twice.
        Replay,
    }

    pub(super) struct Net {
        pub(super) nodes: Vec<Node>,
        /// Nodes that crashed: dials to them fail, cells to them vanish.
        pub(super) dead: BTreeSet<usize>,
        pub(super) tamper: Option<Tamper>,
        pub(super) events: Vec<(usize, Event)>,
        /// (node index, link) -> (peer index, peer link)
        pub(super) wires: BTreeMap<(usize, LinkId), (usize, LinkId)>,
        /// Links whose sender's cells are held (a slow link): taken from
        /// the node but neither delivered nor reported written until the
        /// link is released.
        pub(super) stalled: BTreeMap<(usize, LinkId), Vec<Cell>>,
        next_link: u64,
        bindings_differ: bool,
    }

    impl Net {
        pub(super) fn pump(&mut self, now: Millis) {
            loop {
                let mut progressed = false;
                for i in 0..self.nodes.len() {
                    while let Some(t) = self.nodes[i].poll_transmit() {
                        progressed = true;
                        if let Some(held) = self.stalled.get_mut(&(i, t.link)) {
                            held.push(t.cell);
                            continue;
                        }
                        self.nodes[i].handle_link_sent(now, t.link, 1);
                        if let Some(&(j, pl)) = self.wires.get(&(i, t.link)) {
                            if self.dead.contains(&j) || self.dead.contains(&i) {
                                continue;
                            }
                            let mut cell = t.cell;
                            let action = match self.tamper.as_mut() {
                                Some(f) => f(i, j, &mut cell),
                                None => TamperAction::Deliver,
                            };
                            let times = match action {
                                TamperAction::Deliver => 1,
                                TamperAction::Drop => 0,
                                TamperAction::Replay => 2,
                            };
                            for _ in 0..times {
                                self.nodes[j].handle_link_data(now, pl, cell.as_bytes());
                            }
                        }
                    }
                    while let Some(e) = self.nodes[i].poll_event() {
                        progressed = true;
                        match e {
                            Event::Connect { addr: a, .. }
                                if self.dead.contains(
                                    &(a.ip()
                                        .to_string()
                                        .split('.')
                                        .nth(1)
                                        .unwrap()
                                        .parse::<usize>()
                                        .unwrap()
                                        - 1),
                                ) =>
                            {
                                self.nodes[i].handle_connect_failed(now, a);
                            }
                            Event::Connect { addr: a, .. } => {
                                let j = (a
                                    .ip()
                                    .to_string()
                                    .split('.')
                                    .nth(1)
                                    .unwrap()
                                    .parse::<usize>()
                                    .unwrap())
                                    - 1;
                                let (la, lb) = (LinkId(self.next_link), LinkId(self.next_link + 1));
                                self.next_link += 2;
                                self.wires.insert((i, la), (j, lb));
                                self.wires.insert((j, lb), (i, la));
                                let b2 = if self.bindings_differ {
                                    [2; 32]
                                } else {
                                    [1; 32]
                                };
                                self.nodes[i].handle_link_up(
                                    now,
                                    la,
                                    Direction::Outbound,
                                    a,
                                    [1; 32],
                                );
                                self.nodes[j].handle_link_up(
                                    now,
                                    lb,
                                    Direction::Inbound,
                                    addr(i as u8 + 1),
                                    b2,
                                );
                            }
                            Event::Close { link } => {
                                if let Some((j, pl)) = self.wires.remove(&(i, link)) {
                                    self.wires.remove(&(j, pl));
                                    self.nodes[j].handle_link_down(now, pl);
                                }
                            }
                            other => self.events.push((i, other)),
                        }
                    }
                }
                if !progressed {
                    break;
                }
            }
        }

        /// Releases a stalled link: its held cells are delivered in order
        /// and reported written.
        pub(super) fn release(&mut self, now: Millis, i: usize, link: LinkId) {
            let Some(held) = self.stalled.remove(&(i, link)) else {
                return;
            };
            let n = held.len();
            if let Some(&(j, pl)) = self.wires.get(&(i, link)) {
                for cell in held {
                    self.nodes[j].handle_link_data(now, pl, cell.as_bytes());
                }
            }
            self.nodes[i].handle_link_sent(now, link, n);
            self.pump(now);
        }

        pub(super) fn run(&mut self, until: Millis) {
            self.run_from(T0, until);
        }

        pub(super) fn run_from(&mut self, from: Millis, until: Millis) {
            let mut now = from;
            while now < until {
                for (i, n) in self.nodes.iter_mut().enumerate() {
                    if !self.dead.contains(&i) && n.poll_timeout().is_some_and(|t| t <= now) {
                        n.handle_timeout(now);
                    }
                }
                self.pump(now);
                now += 50;
            }
        }
    }

    pub(super) fn net(n: u8, bindings_differ: bool) -> Net {
        let nodes = (1..=n).map(|i| node(i, vec![addr(1)])).collect();
        Net {
            nodes,
            dead: BTreeSet::new(),
            tamper: None,
            events: Vec::new(),
            wires: BTreeMap::new(),
            stalled: BTreeMap::new(),
            next_link: 1,
            bindings_differ,
        }
    }

    #[test]
    fn nodes_link_and_gossip() {
        let mut net = net(12, false);
        net.run(T0 + 30_000);
        for n in &net.nodes {
            assert!(!n.peers().is_empty(), "node has no peers");
            assert!(n.known_count() >= 8, "node knows only {}", n.known_count());
            assert!(n.stats().rounds > 10);
            assert_eq!(n.stats().handshakes_failed, 0);
            assert_eq!(n.stats().peers_penalised, 0);
            assert!(!n.peers().iter().any(|p| p.node_id == n.node_id()));
        }
    }

    #[test]
    fn spliced_links_never_come_up() {
        let mut net = net(3, true);
        net.run(T0 + 5_000);
        for n in &net.nodes {
            assert!(n.peers().is_empty());
        }
        assert!(net.nodes[1].stats().handshakes_failed > 0);
    }

    #[test]
    fn garbage_before_handshake_is_refused_and_node_keeps_serving() {
        let mut a = node(1, vec![]);
        a.handle_link_up(T0, LinkId(9), Direction::Inbound, addr(9), [0; 32]);
        a.handle_link_data(T0, LinkId(9), &[0xff; CELL_SIZE]);
        let mut closed = false;
        while let Some(e) = a.poll_event() {
            closed |= matches!(e, Event::Close { link: LinkId(9) });
        }
        assert!(closed);
        assert_eq!(a.stats().handshakes_failed, 1);
        // Still accepts new links.
        a.handle_link_up(T0, LinkId(10), Direction::Inbound, addr(9), [0; 32]);
        assert!(a.poll_event().is_none());
    }

    /// Node 1 receives `cells` padding cells at once from node 0 over an
    /// established link. Returns whether the link survived, and node 1's
    /// stats.
    fn padding_burst(cells: usize) -> (bool, Stats) {
        let mut net = net(2, false);
        for n in &mut net.nodes {
            n.config.circuits.circuits_wanted = 0;
        }
        net.run(T0 + 3_000);
        let id0 = net.nodes[0].node_id();
        let l1 = *net.nodes[1].by_peer.get(&id0).expect("linked");
        let padding = Cell::new(0, crate::cell::command::PADDING);
        let mut burst = Vec::with_capacity(cells * CELL_SIZE);
        for _ in 0..cells {
            burst.extend_from_slice(padding.as_bytes());
        }
        net.nodes[1].handle_link_data(T0 + 3_000, l1, &burst);
        (
            net.nodes[1].links.contains_key(&l1),
            net.nodes[1].stats().clone(),
        )
    }

    #[test]
    fn cell_floods_are_cut() {
        // Valid cells on an authenticated link: within the burst (two
        // seconds at max_cells_per_sec) the link stays; beyond it the rate
        // limiter cuts the peer. Only the rate differs between the runs.
        let burst = 2 * Config::testnet().max_cells_per_sec as usize;
        let (alive, stats) = padding_burst(burst - 100);
        assert!(alive, "cut within the allowed burst");
        assert_eq!(stats.peers_penalised, 0);
        let (alive, stats) = padding_burst(burst + 100);
        assert!(!alive, "a flood beyond the burst was not cut");
        assert_eq!(stats.peers_penalised, 1);
        assert_eq!(
            stats.handshakes_failed, 0,
            "cut by the limiter, not the handshake"
        );
    }

    #[test]
    fn a_clock_stepped_back_is_no_time_passing() {
        // Node 0 starts a build at T; its cells are held, then delivered
        // after the driver's wall clock jumped back 9 s. Every entry point
        // clamps the time, so nothing underflows (a debug build would
        // panic) and the build time is sane.
        let mut net = net(8, false);
        for n in &mut net.nodes {
            n.config.circuits.circuits_wanted = 0;
        }
        net.run(T0 + 6_000);
        let t = T0 + 6_000;
        let links: Vec<LinkId> = net.nodes[0].links.keys().copied().collect();
        for l in links {
            net.stalled.insert((0, l), Vec::new());
        }
        net.nodes[0].config.circuits.circuits_wanted = 1;
        net.nodes[0].handle_timeout(t + 1_000);
        net.pump(t + 1_000);
        let mut now = t - 9_000;
        for key in net.stalled.keys().copied().collect::<Vec<_>>() {
            net.release(now, key.0, key.1);
        }
        while now < t
            && !net
                .events
                .iter()
                .any(|(i, e)| *i == 0 && matches!(e, Event::CircuitBuilt { .. }))
        {
            net.pump(now);
            now += 50;
        }
        let build_ms = net.events.iter().find_map(|(i, e)| match e {
            Event::CircuitBuilt { build_ms, .. } if *i == 0 => Some(*build_ms),
            _ => None,
        });
        assert_eq!(build_ms, Some(0), "built within the stepped-back period");
        assert!(net.nodes[0].now_ms >= t + 1_000);
    }

    #[test]
    fn gossiped_address_gets_one_attempt_per_backoff() {
        // Node 1 learns node 5's descriptor (claiming some address) only by
        // gossip; whatever the rounds ask, it dials that address at most
        // once per backoff period and sends it nothing but a handshake.
        let mut a = node(1, vec![]);
        let victim = node(5, vec![]);
        let now = T0 + 100;
        a.dir
            .offer(now, victim.descriptor().admitted(), None, false);
        let target = victim.node_id();
        let mut connects = 0;
        for step in 0..20u64 {
            let t = now + step * 100;
            if a.dial(t, target) {
                // The dial is pending until the driver reports.
            }
            while let Some(e) = a.poll_event() {
                if let Event::Connect { addr: at, expected } = e {
                    assert_eq!(at, addr(5));
                    assert_eq!(expected, Some(target));
                    connects += 1;
                    a.handle_connect_failed(t, at);
                }
            }
        }
        assert_eq!(connects, 1, "2 s of tries, one attempt per 5 s backoff");
        assert!(
            a.poll_transmit().is_none(),
            "nothing sent to an unreached address"
        );
    }

    #[test]
    fn same_inputs_same_outputs() {
        let run = || {
            let mut net = net(8, false);
            net.run(T0 + 10_000);
            net.nodes
                .iter()
                .map(|n| (n.sample(), n.stats().clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
