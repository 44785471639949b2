//! The public circuit types: handles, states, records and counters. The
//! daemon serialises these (no parallel copies).

use super::super::Millis;
use super::super::fault::{Cause, Fault, Offence};
use crate::identity::NodeId;

/// Our handle for one of our own circuits. Unique for the node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CircuitId(pub u64);

/// A circuit we relay, as the node's events name it (for the last hop's
/// side of data exchange).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelayCircuitId(pub u64);

/// Where one of our circuits is in its life (serialised as `building`,
/// `built`, `closing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CircuitState {
    /// Handshakes or the end-to-end probe are under way.
    Building,
    /// Every hop answered and a probe crossed the whole circuit.
    Built,
    /// Rotated out: no new use; torn down shortly.
    Closing,
}

impl CircuitState {
    /// `building`, `built` or `closing`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Building => "building",
            CircuitState::Built => "built",
            CircuitState::Closing => "closing",
        }
    }
}

/// What one of our circuits is for (serialised as `general`, `intro`,
/// `meet`, `introduce`, `join`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Purpose {
    /// Searches and publications: the pool kept at `circuits_wanted`,
    /// rotated after `lifetime_ms`.
    General,
    /// Ends at an introduction point of one of our services.
    Intro,
    /// Ends at a rendezvous point we chose, to meet a service.
    Meet,
    /// Ends at someone else's introduction point, to introduce ourselves.
    Introduce,
    /// Ends at the rendezvous point a downloader chose, to join it.
    Join,
}

impl Purpose {
    /// As serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::General => "general",
            Purpose::Intro => "intro",
            Purpose::Meet => "meet",
            Purpose::Introduce => "introduce",
            Purpose::Join => "join",
        }
    }
}

/// One of our circuits, for `veil circuits`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitInfo {
    /// Our handle.
    pub id: CircuitId,
    /// The relays, guard first (we are not in the list).
    pub hops: Vec<NodeId>,
    /// Building, built or closing.
    pub state: CircuitState,
    /// When the build started.
    pub created_ms: Millis,
    /// When the probe came back.
    pub built_ms: Option<Millis>,
    /// What it is for.
    pub purpose: Purpose,
}

/// Where guard selection stands: what decides whether this node can start
/// its circuits now, for a driver to tell its user why nothing is built yet
/// (see [`crate::path`] for the rules). A read-only count; nothing here is
/// an identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardStatus {
    /// Relays per circuit (a path needs that many on distinct networks).
    pub hops: usize,
    /// Relays in our peer sample with a fresh descriptor: the pool guards
    /// and vanguards are drawn from.
    pub candidates: usize,
    /// Of those, the relays known for at least the guard minimum age.
    pub aged: usize,
    /// Aged candidates needed before guards are picked (at least the hop
    /// count, and a quarter of the pool).
    pub aged_needed: usize,
    /// When the next candidate not aged yet comes of age, in milliseconds
    /// from the node's clock (None: every candidate is aged).
    pub next_aged_in_ms: Option<Millis>,
    /// Guards in the list.
    pub guards: usize,
    /// Guards the list is topped up to.
    pub guards_wanted: usize,
    /// Guards marked unreachable and not yet due for a retry (when all of
    /// them are, no circuit can start).
    pub guards_unreachable: usize,
}

/// A guard as the driver persists it: order matters (first = primary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardRecord {
    /// The guard's id.
    pub id: NodeId,
    /// Its descriptor, canonical encoding (to reach it after a restart).
    pub descriptor: Vec<u8>,
    /// When it became our guard.
    pub added_ms: Millis,
}

/// Why one of our circuits ended (see [`CloseReason::fault`] for whose
/// doing it was).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The build or a probe did not finish in time.
    Timeout,
    /// A DESTROY came back (a hop failed to extend, or tore it down).
    Destroyed,
    /// The link to the guard went down.
    LinkDown,
    /// Rotated after its lifetime.
    Rotated,
    /// A cell failed its checks (corrupted, replayed, reordered or dropped
    /// cells all end here), or a hop failed its handshake.
    Protocol,
    /// We could not reach the guard.
    GuardUnreachable,
    /// Its cells piled up beyond [`crate::node::Config::max_circuit_queue_cells`]
    /// on a link (flow control broken, or the node's queues were full).
    Overloaded,
    /// Its job was done (a rendezvous circuit no longer needed).
    Done,
}

impl CloseReason {
    /// Whose doing it was.
    pub fn fault(self) -> Fault {
        match self {
            CloseReason::Timeout => Fault::Local(Cause::Timeout),
            CloseReason::Destroyed | CloseReason::LinkDown => Fault::Local(Cause::Gone),
            CloseReason::Rotated => Fault::Local(Cause::Rotated),
            CloseReason::Protocol => Fault::Misbehaved(Offence::BadCell),
            CloseReason::GuardUnreachable => Fault::Local(Cause::ExtendFailed),
            CloseReason::Overloaded => Fault::Local(Cause::Resources),
            CloseReason::Done => Fault::Local(Cause::Gone),
        }
    }
}

/// What a relay saw, recorded only when observing is on (the simulator's
/// observer checks; see [`crate::node::Node::set_observing`]): everything a relay could
/// log about the circuits it carries, for tests that take its view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A CREATE arrived and this circuit was opened.
    Create {
        /// Which relayed circuit (this node's name for it).
        circuit: RelayCircuitId,
        /// When.
        at_ms: Millis,
        /// The handshake message as it arrived.
        handshake: Vec<u8>,
    },
    /// A forward relay cell was addressed to us.
    Recognised {
        /// Which relayed circuit.
        circuit: RelayCircuitId,
        /// When.
        at_ms: Millis,
        /// It came as RELAY_EARLY.
        early: bool,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// We passed a relay cell on (after removing or adding our layer).
    Relayed {
        /// Which relayed circuit.
        circuit: RelayCircuitId,
        /// When.
        at_ms: Millis,
        /// Towards the circuit's far end (away from its client).
        forward: bool,
        /// It went as RELAY_EARLY.
        early: bool,
        /// The body as passed on.
        body: Vec<u8>,
    },
}

impl Observation {
    /// The bytes seen: handshake, payload or body.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Observation::Create { handshake, .. } => handshake,
            Observation::Recognised { payload, .. } => payload,
            Observation::Relayed { body, .. } => body,
        }
    }

    /// The relayed circuit it concerns.
    pub fn circuit(&self) -> RelayCircuitId {
        match self {
            Observation::Create { circuit, .. }
            | Observation::Recognised { circuit, .. }
            | Observation::Relayed { circuit, .. } => *circuit,
        }
    }
}

/// Errors of [`crate::node::Node::send_data`] and
/// [`crate::node::Node::relay_send_data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No such circuit, or it is not built.
    #[error("no such built circuit")]
    NoCircuit,
    /// The flow-control window is empty: wait for a SENDME.
    #[error("flow-control window exhausted")]
    NoCredit,
    /// More than [`crate::circuit::MAX_DATA_BYTES`].
    #[error("data too large for one cell")]
    TooLarge,
}

/// Circuit counters (part of [`crate::node::Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircuitStats {
    /// Builds we started.
    pub attempted: u64,
    /// Builds whose probe came back.
    pub built: u64,
    /// Builds that failed.
    pub failed: u64,
    /// Circuits closed because a cell failed its checks (ours or relayed).
    pub torn_down_bad_cell: u64,
    /// CREATEs we answered as a relay.
    pub relay_created: u64,
    /// Extends we completed as a relay.
    pub relay_extended: u64,
    /// Relay cells passed on.
    pub cells_relayed: u64,
    /// Probes answered.
    pub probes_answered: u64,
    /// Data cells we received as the last hop of a circuit.
    pub relay_data_received: u64,
    /// Circuits destroyed because their queue on a link overflowed.
    pub over_queue: u64,
    /// CREATEs refused for a cap or a rate limit (answered with DESTROY).
    pub creates_refused: u64,
    /// Relayed circuits destroyed for passing more than
    /// [`crate::circuit::MAX_EXTENDS`] RELAY_EARLY cells.
    pub over_extend_budget: u64,
    /// Data cells passed between two spliced circuits, as a rendezvous
    /// point.
    pub spliced_cells: u64,
    /// Relay cells for circuits a link did not have (dropped: most crossed
    /// a DESTROY of ours).
    pub stray_cells: u64,
}
