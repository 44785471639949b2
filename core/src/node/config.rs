//! The node's configuration: every protocol parameter and limit, and the
//! check that makes a [`Config`] usable ([`Config::validate`]).

use std::net::SocketAddr;

use super::Millis;
use super::rendezvous::RendezvousParams;
use super::search::SearchParams;
use super::transfer::TransferParams;
use crate::path::CircuitParams;
use crate::pow::PowParams;
use crate::sampling::BrahmsParams;

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
    /// Most link-level and circuit-control cells a peer may send per second
    /// on one link (burst = 2 s worth): everything before the handshake
    /// completes, then every cell but RELAY and RELAY_EARLY (link messages,
    /// CREATE, CREATED, DESTROY). Relay cells are not counted here: they
    /// are bounded per circuit (flow control, [`Config::max_circuit_queue_cells`],
    /// the extend budget), so a link carries honest bulk traffic at
    /// whatever rate the transport gives it. Relay cells for circuits the
    /// link does not have are held to the same rate, beyond an allowance
    /// for each circuit we end on the link (the cells that cross our
    /// DESTROY).
    pub max_link_cells_per_sec: u32,
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
    /// written ([`super::Node::handle_link_sent`]): the back-pressure point.
    pub max_link_in_flight_cells: usize,
    /// Most descriptors remembered.
    pub max_known_peers: usize,
    /// Oldest descriptor accepted.
    pub descriptor_max_age_ms: Millis,
    /// Our descriptor is re-signed this often.
    pub descriptor_refresh_ms: Millis,
    /// Circuits, guards and paths.
    pub circuits: CircuitParams,
    /// Publication and search.
    pub search: SearchParams,
    /// Introduction and rendezvous.
    pub rendezvous: RendezvousParams,
    /// Downloads.
    pub transfer: TransferParams,
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
            max_link_cells_per_sec: 4096,
            max_queued_cells: 1024,
            max_circuit_queue_cells: 768,
            max_queued_cells_total: 16_384,
            max_link_in_flight_cells: 64,
            max_known_peers: 8192,
            descriptor_max_age_ms: 6 * 3600 * 1000,
            descriptor_refresh_ms: 3600 * 1000,
            circuits: CircuitParams::MAINNET,
            search: SearchParams::MAINNET,
            rendezvous: RendezvousParams::MAINNET,
            transfer: TransferParams::MAINNET,
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
            search: SearchParams::TESTNET,
            rendezvous: RendezvousParams::TESTNET,
            ..Config::mainnet()
        }
    }
}

/// A [`Config`] that passed [`Config::validate`]: the only kind
/// [`super::Node::new`] takes.
#[derive(Clone, Debug)]
pub struct ValidConfig(pub(super) Config);

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
        self.search.validate()?;
        self.rendezvous.validate()?;
        self.transfer.validate()?;
        if self.rendezvous.keepalive_ms >= self.circuits.relay_idle_ms {
            return Err("rendezvous.keepalive_ms must be below circuits.relay_idle_ms".into());
        }
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
            (
                "max_link_cells_per_sec",
                u64::from(self.max_link_cells_per_sec),
            ),
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
