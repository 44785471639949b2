//! Circuits inside the node: building our own (client side), relaying
//! others' (relay side), guards and vanguards, lifetimes and flow control.
//!
//! # Cells
//!
//! Circuit cells carry a non-zero circuit id that is local to one link; the
//! dialler of a link picks ids with the top bit set, the acceptor ids with it
//! clear, so both ends can open circuits without a collision. Commands (see
//! [`crate::cell::command`]):
//!
//! - `CREATE` (link level): msg1 of the Noise NK hop handshake to the hop at
//!   the other end of the link. Answered by `CREATED` (msg2).
//! - `RELAY`: an onion body ([`crate::onion`]). On the link towards the
//!   client it travels forward (client → hops), on the link away from the
//!   client backward.
//! - `DESTROY` (link level): tear the circuit down; each hop passes it on in
//!   the other direction, so it reaches both ends.
//!
//! Inside recognised relay bodies travel [`CircuitMsg`]s: `EXTEND` (to the
//! last hop, which sends `CREATE` to the next node and answers `EXTENDED`),
//! `PROBE`/`PROBE_REPLY`, `DATA` and `SENDME`.
//!
//! # Flow control
//!
//! Each end of a circuit may have at most [`CircuitParams::window_cells`]
//! data cells that the other end has not acknowledged; the receiver sends a
//! `SENDME` (an authenticated relay message, so no middle hop can forge one)
//! for every [`CircuitParams::sendme_every`] data cells it takes. A slow
//! reader therefore holds at most one window of cells in flight on its
//! circuit, whatever the sender does, and other circuits on the same links
//! keep moving. Relays hold no per-circuit buffer: a cell is passed on as it
//! arrives, so per-circuit memory is one [`RelayCircuit`] (a few hundred
//! bytes), and circuits per link and per node are capped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rand_core::RngCore;

use super::{Direction, Event, LinkId, LinkState, Millis, Node};
use crate::cell::{Cell, command};
use crate::circuit::{
    CircuitMsg, ClientHopHandshake, MAX_DATA_BYTES, MAX_EXTENDS, RelayHopHandshake,
};
use crate::descriptor::Descriptor;
use crate::identity::NodeId;
use crate::onion::{ForwardOutcome, OnionClient, RelayCrypto, RelayPosition};
use crate::path::{self, Candidate};

/// Our handle for one of our own circuits. Unique for the node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CircuitId(pub u64);

/// A circuit we relay, as the node's events name it (for the last hop's
/// side of data exchange).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelayCircuitId(pub u64);

/// Where one of our circuits is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Why one of our circuits ended.
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
    /// Its cells piled up beyond [`super::Config::max_circuit_queue_cells`]
    /// on a link (flow control broken, or the node's queues were full).
    Overloaded,
}

/// What a relay saw, recorded only when observing is on (the simulator's
/// observer checks; see [`Node::set_observing`]): everything a relay could
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

/// Errors of [`Node::send_data`] and [`Node::relay_send_data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No such circuit, or it is not built.
    #[error("no such built circuit")]
    NoCircuit,
    /// The flow-control window is empty: wait for a SENDME.
    #[error("flow-control window exhausted")]
    NoCredit,
    /// More than [`MAX_DATA_BYTES`].
    #[error("data too large for one cell")]
    TooLarge,
}

/// Builds in a row that may fail to reach a vanguard before it is replaced.
const VANGUARD_MAX_FAILURES: u32 = 3;

/// DESTROY reasons on the wire (opaque to the other end).
mod reason {
    pub const NONE: u8 = 0;
    pub const PROTOCOL: u8 = 1;
    pub const EXTEND_FAILED: u8 = 2;
    pub const RESOURCES: u8 = 3;
    pub const TIMEOUT: u8 = 4;
    pub const NOT_A_RELAY: u8 = 5;
}

/// What a link-local circuit id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CircRef {
    /// One of ours; this link is the one to our guard.
    Own(u64),
    /// We relay it; this link leads towards the client.
    Prev(u64),
    /// We relay it; this link leads away from the client.
    Next(u64),
}

#[derive(Debug)]
struct Guard {
    cand: Candidate,
    descriptor: Descriptor,
    added_ms: Millis,
    unreachable_since: Option<Millis>,
    retry_at_ms: Millis,
}

#[derive(Debug)]
struct OwnCircuit {
    path: Vec<Candidate>,
    /// The hops' checked descriptors (their keys, and what EXTEND carries).
    descriptors: Vec<Descriptor>,
    /// Link and circuit id towards the guard, once CREATE was sent.
    guard_link: Option<(LinkId, u32)>,
    onion: OnionClient,
    pending: Option<ClientHopHandshake>,
    state: CircuitState,
    created_ms: Millis,
    built_ms: Option<Millis>,
    /// Build deadline, rotation time or teardown time, by state.
    deadline_ms: Millis,
    /// Outstanding probe: nonce and deadline.
    probe: Option<(u64, Millis)>,
    package_window: u32,
    delivered: u32,
    /// The CREATE was re-sent once after its link closed.
    retried: bool,
}

#[derive(Debug, Clone)]
struct Extending {
    next: NodeId,
    addr: SocketAddr,
    msg1: Vec<u8>,
    /// The link to `next` went down once before CREATED; one retry.
    retried: bool,
}

#[derive(Debug)]
pub(super) struct RelayCircuit {
    prev: (LinkId, u32),
    next: Option<(LinkId, u32)>,
    crypto: RelayCrypto,
    /// Waiting for a link to (or CREATED from) this node.
    extending: Option<Extending>,
    last_used_ms: Millis,
    package_window: u32,
    delivered: u32,
    /// RELAY_EARLY cells seen on this circuit (at most
    /// [`crate::circuit::MAX_EXTENDS`]).
    early: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    Own(u64),
    Relay(u64),
}

/// The circuit half of the node's state.
#[derive(Debug, Default)]
pub(super) struct Circuits {
    own: BTreeMap<u64, OwnCircuit>,
    relays: BTreeMap<u64, RelayCircuit>,
    next_key: u64,
    guards: Vec<Guard>,
    vanguards: Vec<(Candidate, Millis)>,
    waiting: BTreeMap<NodeId, Vec<Waiter>>,
    pub(super) next_tick_ms: Millis,
    observing: bool,
    observations: Vec<Observation>,
    /// Relays a build recently failed to reach (never guards): avoided
    /// as later hops until the time given.
    suspects: BTreeMap<NodeId, Millis>,
    /// Builds in a row that failed to reach each vanguard.
    vanguard_failures: BTreeMap<NodeId, u32>,
    /// CREATEs answered per second, node-wide.
    creates: super::TokenBucket,
}

/// Circuit counters (part of [`super::Stats`]).
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
}

fn own_side_bit(direction: Direction) -> u32 {
    match direction {
        Direction::Outbound => 0x8000_0000,
        Direction::Inbound => 0,
    }
}

impl Node {
    // ---- public API -----------------------------------------------------

    /// Our circuits, oldest first.
    pub fn circuits(&self) -> Vec<CircuitInfo> {
        self.circ
            .own
            .iter()
            .map(|(k, c)| CircuitInfo {
                id: CircuitId(*k),
                hops: c.path.iter().map(|h| h.id).collect(),
                state: c.state,
                created_ms: c.created_ms,
                built_ms: c.built_ms,
            })
            .collect()
    }

    /// Our guards in order (first = primary), for the driver to persist
    /// (after [`Event::GuardsChanged`]).
    pub fn guards(&self) -> Vec<GuardRecord> {
        self.circ
            .guards
            .iter()
            .map(|g| GuardRecord {
                id: g.cand.id,
                descriptor: g.descriptor.to_bytes(),
                added_ms: g.added_ms,
            })
            .collect()
    }

    /// Our current second-hop set (vanguards-lite).
    pub fn vanguards(&self) -> Vec<NodeId> {
        self.circ.vanguards.iter().map(|(c, _)| c.id).collect()
    }

    /// Restores persisted guards (call once, right after [`Node::new`]).
    /// Records that do not decode or verify (signature and proof of work;
    /// their age is not checked: the guard re-sends a fresh descriptor when
    /// we link to it) are skipped. Returns how many were restored.
    pub fn restore_guards(&mut self, now: Millis, records: &[GuardRecord]) -> usize {
        let now = self.clamp(now);
        for r in records {
            if self.circ.guards.len() >= self.config.circuits.guards {
                break;
            }
            let Ok(u) = Descriptor::decode(&r.descriptor) else {
                continue;
            };
            let Ok(d) = u.check(now, u64::MAX, self.config.pow) else {
                continue;
            };
            let Some(addr) = d.address() else {
                continue;
            };
            if d.node_id() != r.id || !d.is_relay() || r.id == self.node_id() {
                continue;
            }
            let cand = Candidate {
                id: r.id,
                addr,
                first_seen_ms: r.added_ms,
            };
            let current: Vec<Candidate> = self.circ.guards.iter().map(|g| g.cand).collect();
            if !path::compatible(&self.config.circuits, &current, &cand) {
                continue;
            }
            self.remember(now, d.clone(), None);
            self.dir.first_seen_at_most(&r.id, r.added_ms);
            self.circ.guards.push(Guard {
                cand,
                descriptor: d,
                added_ms: r.added_ms,
                unreachable_since: None,
                retry_at_ms: 0,
            });
        }
        self.circ.guards.len()
    }

    /// Changes how many built circuits the node keeps ready (0: builds no
    /// more; existing circuits live out their lifetime).
    pub fn set_circuits_wanted(&mut self, n: usize) {
        self.config.circuits.circuits_wanted = n;
    }

    /// Records what relays see in clear (simulator observer checks).
    pub fn set_observing(&mut self, on: bool) {
        self.circ.observing = on;
    }

    /// Takes the observations recorded since the last call.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.circ.observations)
    }

    /// Sends a probe over a built circuit; it comes back as
    /// [`Event::CircuitBuilt`]'s counterpart: nothing if it succeeds, the
    /// circuit closes if it does not come back in time.
    pub fn probe_circuit(&mut self, now: Millis, id: CircuitId) -> bool {
        let now = self.clamp(now);
        let nonce = self.rng.next_u64();
        let deadline = now + self.config.circuits.build_timeout_ms;
        let Some(c) = self.circ.own.get_mut(&id.0) else {
            return false;
        };
        if c.state != CircuitState::Built || c.probe.is_some() {
            return false;
        }
        c.probe = Some((nonce, deadline));
        let last = c.path.len() - 1;
        self.send_own(id.0, last, &CircuitMsg::Probe { nonce });
        true
    }

    /// Sends data to the last hop of a built circuit (flow controlled).
    pub fn send_data(&mut self, id: CircuitId, data: &[u8]) -> Result<(), SendError> {
        if data.len() > MAX_DATA_BYTES {
            return Err(SendError::TooLarge);
        }
        let c = self.circ.own.get_mut(&id.0).ok_or(SendError::NoCircuit)?;
        if c.state != CircuitState::Built {
            return Err(SendError::NoCircuit);
        }
        if c.package_window == 0 {
            return Err(SendError::NoCredit);
        }
        c.package_window -= 1;
        let last = c.path.len() - 1;
        self.send_own(
            id.0,
            last,
            &CircuitMsg::Data {
                bytes: data.to_vec(),
            },
        );
        Ok(())
    }

    /// As the last hop of a circuit, sends data back to its client (flow
    /// controlled).
    pub fn relay_send_data(&mut self, id: RelayCircuitId, data: &[u8]) -> Result<(), SendError> {
        if data.len() > MAX_DATA_BYTES {
            return Err(SendError::TooLarge);
        }
        let r = self
            .circ
            .relays
            .get_mut(&id.0)
            .ok_or(SendError::NoCircuit)?;
        if r.next.is_some() || r.extending.is_some() {
            return Err(SendError::NoCircuit);
        }
        if r.package_window == 0 {
            return Err(SendError::NoCredit);
        }
        r.package_window -= 1;
        self.send_backward(
            id.0,
            &CircuitMsg::Data {
                bytes: data.to_vec(),
            },
        );
        Ok(())
    }

    /// Remaining flow-control credit of one of our circuits.
    pub fn circuit_window(&self, id: CircuitId) -> Option<u32> {
        self.circ.own.get(&id.0).map(|c| c.package_window)
    }

    /// Circuits we currently relay.
    pub fn relay_circuit_count(&self) -> usize {
        self.circ.relays.len()
    }

    // ---- hooks called by node.rs ----------------------------------------

    /// A circuit cell arrived on an authenticated link.
    pub(super) fn handle_circuit_cell(&mut self, now: Millis, link: LinkId, cell: Cell) {
        let cid = cell.circ_id();
        let entry = self
            .links
            .get(&link)
            .and_then(|l| l.circuits.get(&cid).copied());
        match (cell.command(), entry) {
            (command::CREATE, None) => self.on_create(now, link, cid, &cell),
            (command::CREATE, Some(_)) => self.penalise(link),
            (command::CREATED, Some(CircRef::Own(k))) => self.on_own_created(now, k, &cell),
            (command::CREATED, Some(CircRef::Next(k))) => self.on_relay_created(now, k, &cell),
            (command::RELAY, Some(CircRef::Own(k))) => self.on_own_relay(now, k, cell),
            (command::RELAY | command::RELAY_EARLY, Some(CircRef::Prev(k))) => {
                self.on_relay_forward(now, k, cell)
            }
            (command::RELAY, Some(CircRef::Next(k))) => self.on_relay_backward(now, k, cell),
            // RELAY_EARLY travels forward only.
            (command::RELAY_EARLY, Some(CircRef::Own(k))) => {
                self.close_own(now, k, CloseReason::Protocol, true)
            }
            (command::RELAY_EARLY, Some(CircRef::Next(k))) => self.drop_relay(k, reason::PROTOCOL),
            (command::DESTROY, Some(r)) => {
                // The other side forgot it already.
                if let Some(l) = self.links.get_mut(&link) {
                    l.circuits.remove(&cid);
                }
                match r {
                    CircRef::Own(k) => self.close_own(now, k, CloseReason::Destroyed, false),
                    CircRef::Prev(k) | CircRef::Next(k) => self.drop_relay(k, reason::NONE),
                }
            }
            // A cell for a circuit we already tore down (it crossed our
            // DESTROY), or a CREATED we never asked for: drop it.
            (command::DESTROY | command::CREATED | command::RELAY | command::RELAY_EARLY, _) => {}
            _ => self.penalise(link),
        }
    }

    /// Circuit `cid`'s queue on `link` overflowed (it broke flow control,
    /// or it had the longest queue when the node ran out of room): it is
    /// destroyed, and nothing else on the link is touched.
    pub(super) fn circuit_over_queue(&mut self, link: LinkId, cid: u32) {
        self.stats.circuits.over_queue += 1;
        let entry = self
            .links
            .get(&link)
            .and_then(|l| l.circuits.get(&cid).copied());
        match entry {
            Some(CircRef::Own(k)) => self.close_own(self.now_ms, k, CloseReason::Overloaded, true),
            Some(CircRef::Prev(k) | CircRef::Next(k)) => self.drop_relay(k, reason::RESOURCES),
            None => self.outbox.drop_circuit(link, cid),
        }
    }

    /// A link went away with these circuits on it.
    pub(super) fn circuits_link_down(&mut self, now: Millis, circuits: BTreeMap<u32, CircRef>) {
        for (_, r) in circuits {
            match r {
                CircRef::Own(k) => {
                    if !self.retry_own_create(now, k) {
                        self.close_own(now, k, CloseReason::LinkDown, false);
                    }
                }
                CircRef::Next(k) => {
                    if !self.retry_extend(now, k) {
                        self.drop_relay(k, reason::NONE);
                    }
                }
                CircRef::Prev(k) => self.drop_relay(k, reason::NONE),
            }
        }
    }

    /// The link a CREATE went out on closed before CREATED came back (the
    /// other end may have closed it for an unrelated reason at that very
    /// moment): send the CREATE once more, on a fresh link.
    fn retry_own_create(&mut self, now: Millis, k: u64) -> bool {
        let Some(c) = self.circ.own.get_mut(&k) else {
            return false;
        };
        if c.retried || c.onion.hop_count() != 0 {
            return false;
        }
        c.retried = true;
        c.guard_link = None;
        c.pending = None;
        let guard = c.path[0];
        self.wait_for(now, guard.id, guard.addr, Waiter::Own(k))
    }

    /// As [`Node::retry_own_create`], for a relay's CREATE to the next hop.
    fn retry_extend(&mut self, now: Millis, k: u64) -> bool {
        let Some(r) = self.circ.relays.get_mut(&k) else {
            return false;
        };
        let Some(e) = r.extending.as_mut() else {
            return false;
        };
        if e.retried {
            return false;
        }
        e.retried = true;
        r.next = None;
        let (next, addr) = (e.next, e.addr);
        self.wait_for(now, next, addr, Waiter::Relay(k))
    }

    /// Sends the waiter's CREATE on a link to `id`, dialling `addr` first
    /// if there is none. False if it cannot be dialled.
    fn wait_for(&mut self, now: Millis, id: NodeId, addr: SocketAddr, w: Waiter) -> bool {
        if let Some(&link) = self.by_peer.get(&id) {
            match w {
                Waiter::Own(k) => self.send_create_own(now, k, link),
                Waiter::Relay(k) => self.send_create_relay(k, link),
            }
            return true;
        }
        self.circ.waiting.entry(id).or_default().push(w);
        let own = matches!(w, Waiter::Own(_));
        if self.dial_expected(now, addr, id, own) {
            true
        } else {
            if let Some(v) = self.circ.waiting.get_mut(&id) {
                v.retain(|x| *x != w);
            }
            self.circ.waiting.retain(|_, v| !v.is_empty());
            false
        }
    }

    /// An authenticated link to `peer` is up: start what waited for it.
    pub(super) fn circuits_peer_up(&mut self, now: Millis, peer: NodeId) {
        if let Some(g) = self.circ.guards.iter_mut().find(|g| g.cand.id == peer) {
            g.unreachable_since = None;
        }
        let Some(waiters) = self.circ.waiting.remove(&peer) else {
            return;
        };
        let Some(&link) = self.by_peer.get(&peer) else {
            return;
        };
        for w in waiters {
            match w {
                Waiter::Own(k) => self.send_create_own(now, k, link),
                Waiter::Relay(k) => self.send_create_relay(k, link),
            }
        }
    }

    /// We could not reach `peer` (dial or link handshake failed). `own`:
    /// the dial was made for our own circuits or guard links; only such a
    /// failure marks a guard unreachable (an EXTEND someone else sent
    /// never does).
    pub(super) fn circuits_peer_unreachable(&mut self, now: Millis, peer: NodeId, own: bool) {
        if own {
            self.circuits_peer_unreachable_guard_only(now, peer);
        }
        let Some(waiters) = self.circ.waiting.remove(&peer) else {
            return;
        };
        for w in waiters {
            match w {
                Waiter::Own(k) => self.close_own(now, k, CloseReason::GuardUnreachable, true),
                Waiter::Relay(k) => self.drop_relay(k, reason::EXTEND_FAILED),
            }
        }
    }

    /// `peer` vouched for a forged descriptor: it is no longer our guard
    /// or vanguard.
    pub(super) fn drop_liar(&mut self, peer: NodeId) {
        let before = self.circ.guards.len();
        self.circ.guards.retain(|g| g.cand.id != peer);
        if self.circ.guards.len() != before {
            self.events.push_back(Event::GuardsChanged);
        }
        self.circ.vanguards.retain(|(c, _)| c.id != peer);
    }

    /// Guard ids, in order.
    pub(super) fn guard_ids(&self) -> Vec<NodeId> {
        self.circ.guards.iter().map(|g| g.cand.id).collect()
    }

    /// Timers: builds, probes, rotation, idle relayed circuits, and
    /// building new circuits.
    pub(super) fn circuit_tick(&mut self, now: Millis) {
        let p = self.config.circuits.clone();
        self.circ.next_tick_ms = now + p.tick_ms;
        // Our circuits.
        let keys: Vec<u64> = self.circ.own.keys().copied().collect();
        for k in keys {
            let Some(c) = self.circ.own.get_mut(&k) else {
                continue;
            };
            match c.state {
                CircuitState::Building if now >= c.deadline_ms => {
                    let at_guard = c.onion.hop_count() == 0;
                    let guard = c.path[0].id;
                    if at_guard {
                        // The guard never answered: it counts as unreachable.
                        self.circuits_peer_unreachable_guard_only(now, guard);
                    }
                    self.close_own(now, k, CloseReason::Timeout, true);
                }
                CircuitState::Built if c.probe.is_some_and(|(_, d)| now >= d) => {
                    self.close_own(now, k, CloseReason::Timeout, true);
                }
                CircuitState::Built if now >= c.deadline_ms => {
                    c.state = CircuitState::Closing;
                    c.deadline_ms = now + 2 * p.tick_ms;
                }
                CircuitState::Closing if now >= c.deadline_ms => {
                    self.close_own(now, k, CloseReason::Rotated, true);
                }
                _ => {}
            }
        }
        // Relayed circuits nobody used for long.
        let idle: Vec<u64> = self
            .circ
            .relays
            .iter()
            .filter(|(_, r)| now >= r.last_used_ms + p.relay_idle_ms)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.drop_relay(k, reason::TIMEOUT);
        }
        self.maintain_guards(now);
        self.maintain_client_links(now);
        // Keep the wanted number of circuits built or building.
        let live = self
            .circ
            .own
            .values()
            .filter(|c| c.state != CircuitState::Closing)
            .count();
        for _ in live..p.circuits_wanted {
            if !self.build_circuit(now) {
                break;
            }
        }
    }

    // ---- guards and paths -----------------------------------------------

    fn circuits_peer_unreachable_guard_only(&mut self, now: Millis, peer: NodeId) {
        if let Some(g) = self.circ.guards.iter_mut().find(|g| g.cand.id == peer) {
            g.unreachable_since.get_or_insert(now);
            g.retry_at_ms = now + self.config.circuits.guard_retry_ms;
        }
    }

    /// Relays we hold descriptors for (see [`super::directory::Directory::candidates`]:
    /// a pick is checked with [`Node::verified`] before use).
    fn candidates(&self, now: Millis) -> Vec<Candidate> {
        self.dir.candidates(now, self.config.descriptor_max_age_ms)
    }

    /// The checked descriptor of relay `id`, checking a newer gossiped
    /// claim first (a bad claim is dropped alone; the id and its checked
    /// descriptor stay). None for non-relays.
    pub(super) fn verified(&mut self, id: NodeId) -> Option<Descriptor> {
        self.settle(&id);
        let max_age = self.config.descriptor_max_age_ms;
        let now = self.now_ms;
        self.dir
            .descriptor(&id)
            .filter(|d| d.is_relay() && now.saturating_sub(d.timestamp_ms()) <= max_age)
            .cloned()
    }

    fn maintain_guards(&mut self, now: Millis) {
        let p = self.config.circuits.clone();
        let before = self.guard_ids();
        // Retire guards after their lifetime, or after being unreachable
        // that long.
        self.circ.guards.retain(|g| {
            now < g.added_ms + p.guard_lifetime_ms
                && g.unreachable_since
                    .is_none_or(|t| now < t + p.guard_lifetime_ms)
        });
        // Guards are picked only when circuits are wanted, and only once we
        // know enough aged relays to build a path at all (otherwise the
        // first nodes we hear of, typically the seeds, would be everyone's
        // guards).
        let wanted = p.circuits_wanted > 0 || !self.config.relay;
        let vanguards_due = self.circ.vanguards.iter().any(|(_, until)| now >= *until);
        if !wanted
            || (self.circ.guards.len() >= p.guards
                && self.circ.vanguards.len() >= p.vanguards
                && !vanguards_due)
        {
            if self.guard_ids() != before {
                self.events.push_back(Event::GuardsChanged);
            }
            return;
        }
        // Guards and vanguards come from our peer-sampling output: a
        // near-uniform sample of the membership in which an attacker holds
        // about its population share however it floods (see
        // `crate::sampling`). Drawing from every descriptor we hold would
        // favour whoever we heard of first (the seeds) or whoever gossips
        // hardest.
        let sample: BTreeSet<NodeId> = self.brahms.sample().into_iter().collect();
        let mut pool = self.candidates(now);
        pool.retain(|c| sample.contains(&c.id));
        let aged = pool
            .iter()
            .filter(|c| now.saturating_sub(c.first_seen_ms) >= p.guard_min_age_ms)
            .count();
        // Wait until at least a quarter of our sampled relays are aged: picking
        // earlier would draw from the few relays heard of first.
        let ready = aged >= p.hops.max(pool.len().div_ceil(4));
        let mut tries = if ready { 0 } else { 8 };
        while self.circ.guards.len() < p.guards && tries < 8 {
            tries += 1;
            let current: Vec<Candidate> = self.circ.guards.iter().map(|g| g.cand).collect();
            let Some(c) = path::pick_guard(&mut self.rng, &p, now, &pool, &current) else {
                break;
            };
            pool.retain(|x| x.id != c.id);
            let Some(d) = self.verified(c.id) else {
                continue;
            };
            self.circ.guards.push(Guard {
                cand: c,
                descriptor: d,
                added_ms: now,
                unreachable_since: None,
                retry_at_ms: 0,
            });
        }
        if self.guard_ids() != before {
            self.events.push_back(Event::GuardsChanged);
        }
        // Vanguards: replace expired ones, top up.
        self.circ.vanguards.retain(|(_, until)| now < *until);
        let mut tries = if ready { 0 } else { 8 };
        while self.circ.vanguards.len() < p.vanguards && tries < 8 {
            tries += 1;
            let taken: Vec<NodeId> = self.circ.vanguards.iter().map(|(c, _)| c.id).collect();
            let Some(c) = path::pick(&mut self.rng, &pool, |c| !taken.contains(&c.id)) else {
                break;
            };
            pool.retain(|x| x.id != c.id);
            if self.verified(c.id).is_none() {
                continue;
            }
            // Spread expiry over [lifetime, 2 * lifetime) so the set does
            // not turn over all at once.
            let spread = self.rng.next_u64() % p.vanguard_lifetime_ms.max(1);
            self.circ
                .vanguards
                .push((c, now + p.vanguard_lifetime_ms + spread));
        }
    }

    /// The guard to build through: the first one we can currently reach.
    fn primary_guard(&self, now: Millis) -> Option<Candidate> {
        self.circ
            .guards
            .iter()
            .find(|g| g.unreachable_since.is_none() || now >= g.retry_at_ms)
            .map(|g| g.cand)
    }

    /// Client-only nodes link to their guards and nothing else (once they
    /// have a guard link, the bootstrap link goes).
    fn maintain_client_links(&mut self, now: Millis) {
        if self.config.relay || self.circ.guards.is_empty() {
            return;
        }
        let guards = self.guard_ids();
        for g in &guards {
            if !self.by_peer.contains_key(g) {
                let retry = self
                    .circ
                    .guards
                    .iter()
                    .find(|x| x.cand.id == *g)
                    .is_some_and(|x| x.unreachable_since.is_none() || now >= x.retry_at_ms);
                if retry {
                    let addr = self
                        .circ
                        .guards
                        .iter()
                        .find(|x| x.cand.id == *g)
                        .map(|x| x.cand.addr);
                    if let Some(addr) = addr {
                        self.dial_expected(now, addr, *g, true);
                    }
                }
            }
        }
        if guards.iter().any(|g| self.by_peer.contains_key(g)) {
            let others: Vec<LinkId> = self
                .links
                .iter()
                .filter(|(_, l)| match l.state {
                    LinkState::Up { peer } => !guards.contains(&peer),
                    _ => false,
                })
                .map(|(id, _)| *id)
                .collect();
            for link in others {
                self.close(link);
            }
        }
    }

    /// Dial `addr` expecting `id` (for guards and extends). False if the
    /// node is at its limits or the address is being dialled for someone
    /// else.
    fn dial_expected(&mut self, now: Millis, addr: SocketAddr, id: NodeId, own: bool) -> bool {
        if let Some(d) = self.dials.get_mut(&addr) {
            // A bootstrap dial to the same address now also expects `id`
            // (the link handshake then checks it).
            if d.expected.is_none() {
                d.expected = Some(id);
            }
            if d.expected != Some(id) {
                return false;
            }
            d.own |= own;
            return true;
        }
        if let Some(l) = self
            .links
            .values_mut()
            .find(|l| matches!(l.state, LinkState::Handshaking(_)) && l.expected == Some(id))
        {
            l.own |= own;
            return true;
        }
        // Extends dial only reachable scopes and never our own address;
        // they are bounded by the CREATE rate (three extends per circuit)
        // and the pending-dial budget rather than by a backoff, which would
        // make one failed dial fail every extend to that relay for minutes
        // (measured: crashed relays then stranded clients). Dials for our
        // own circuits and guard links use the guard's signed address and
        // their own retry timers.
        if !own {
            // Extend dials: a reachable scope, never our own address, not
            // an (address, id) that answered with someone else, at most one
            // dial in flight per expected id (one identity cannot fill the
            // budget by naming new addresses), and at most half the dial
            // budget, so extends never starve our own guard dials.
            let extend_dials = self.dials.values().filter(|d| !d.own).count();
            if !self.extend_dialable(addr)
                || self
                    .wrong_peer
                    .get(&(addr, id))
                    .is_some_and(|&t| now < t + self.config.dial_backoff_ms)
                || self.dials.values().any(|d| d.expected == Some(id))
                || extend_dials >= self.config.max_pending_handshakes / 2
            {
                return false;
            }
        }
        // No link is closed to make room here: a link is evicted only once
        // the one it makes room for is authenticated (`make_room`).
        if self.outbound_pending() >= self.config.max_pending_handshakes
            || self.links.len() + self.dials.len()
                >= self.config.max_links + self.config.max_pending_handshakes
        {
            return false;
        }

        self.request_dial(now, addr, id, own);
        true
    }

    /// Starts one build. False if no path can be made now.
    fn build_circuit(&mut self, now: Millis) -> bool {
        let p = self.config.circuits.clone();
        let Some(guard) = self.primary_guard(now) else {
            return false;
        };
        // Relays that just failed a build are avoided after the guard (a
        // second hop only if another vanguard is left: the set stays
        // fixed). Guards are never avoided this way.
        self.circ.suspects.retain(|_, until| now < *until);
        let suspects = &self.circ.suspects;
        let all_vanguards: Vec<Candidate> = self.circ.vanguards.iter().map(|(c, _)| *c).collect();
        let mut vanguards: Vec<Candidate> = all_vanguards
            .iter()
            .copied()
            .filter(|c| !suspects.contains_key(&c.id))
            .collect();
        if vanguards.iter().all(|v| v.id == guard.id) {
            vanguards = all_vanguards;
        }
        let mut pool = self.candidates(now);
        pool.retain(|c| !suspects.contains_key(&c.id));
        let Some(path) = path::pick_rest(&mut self.rng, &p, guard, &vanguards, &pool) else {
            return false;
        };
        let mut descriptors = Vec::with_capacity(path.len());
        for (i, hop) in path.iter().enumerate() {
            let d = if i == 0 {
                self.circ
                    .guards
                    .iter()
                    .find(|g| g.cand.id == hop.id)
                    .map(|g| g.descriptor.clone())
            } else {
                self.verified(hop.id)
            };
            let Some(d) = d else {
                return false;
            };
            descriptors.push(d);
        }
        let k = self.circ.next_key;
        self.circ.next_key += 1;
        self.stats.circuits.attempted += 1;
        self.circ.own.insert(
            k,
            OwnCircuit {
                path,
                descriptors,
                guard_link: None,
                onion: OnionClient::new(),
                pending: None,
                state: CircuitState::Building,
                created_ms: now,
                built_ms: None,
                deadline_ms: now + p.build_timeout_ms,
                probe: None,
                package_window: p.window_cells,
                delivered: 0,
                retried: false,
            },
        );
        if !self.wait_for(now, guard.id, guard.addr, Waiter::Own(k)) {
            self.close_own(now, k, CloseReason::GuardUnreachable, true);
        }
        true
    }

    // ---- client side ----------------------------------------------------

    fn alloc_circ_id(&mut self, link: LinkId, r: CircRef) -> Option<u32> {
        let l = self.links.get(&link)?;
        let bit = own_side_bit(l.direction);
        for _ in 0..16 {
            let cid = (self.rng.next_u64() as u32 & 0x7fff_ffff) | bit;
            if cid != 0 && !l.circuits.contains_key(&cid) {
                let l = self.links.get_mut(&link)?;
                l.circuits.insert(cid, r);
                return Some(cid);
            }
        }
        None
    }

    fn send_create_own(&mut self, now: Millis, k: u64, link: LinkId) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let Some(c) = self.circ.own.get(&k) else {
            return;
        };
        if c.guard_link.is_some() {
            return;
        }
        let started = ClientHopHandshake::start(c.descriptors[0].x25519(), seed);
        let Some(cid) = self.alloc_circ_id(link, CircRef::Own(k)) else {
            self.close_own(now, k, CloseReason::Protocol, true);
            return;
        };
        let Ok((hs, msg1)) = started else {
            self.close_own(now, k, CloseReason::Protocol, true);
            return;
        };
        if let Some(c) = self.circ.own.get_mut(&k) {
            c.guard_link = Some((link, cid));
            c.pending = Some(hs);
        }
        self.send_create(link, cid, msg1);
    }

    /// Sends a CREATE carrying hop handshake message 1.
    fn send_create(&mut self, link: LinkId, cid: u32, msg1: Vec<u8>) {
        let msg = CircuitMsg::Create { handshake: msg1 }.encode();
        if let Some(cell) = msg
            .ok()
            .and_then(|m| Cell::control(cid, command::CREATE, &m))
        {
            self.send(link, cell);
        }
    }

    fn on_own_created(&mut self, now: Millis, k: u64, cell: &Cell) {
        let handshake = match cell.link_payload().map(CircuitMsg::decode) {
            Ok(Ok(CircuitMsg::Created { handshake })) => handshake,
            _ => return self.close_own(now, k, CloseReason::Protocol, true),
        };
        let Some(c) = self.circ.own.get_mut(&k) else {
            return;
        };
        if c.onion.hop_count() != 0 {
            return self.close_own(now, k, CloseReason::Protocol, true);
        }
        self.hop_done(now, k, &handshake);
    }

    /// The handshake with the next hop finished (msg2 in hand): add the hop
    /// and extend further or probe.
    fn hop_done(&mut self, now: Millis, k: u64, msg2: &[u8]) {
        let Some(c) = self.circ.own.get_mut(&k) else {
            return;
        };
        let Some(hs) = c.pending.take() else {
            return self.close_own(now, k, CloseReason::Protocol, true);
        };
        let keys = match hs.finish(msg2) {
            Ok(keys) => keys,
            Err(_) => {
                return self.close_own(now, k, CloseReason::Protocol, true);
            }
        };
        if c.onion.add_hop(keys).is_err() {
            return self.close_own(now, k, CloseReason::Protocol, true);
        }
        let have = c.onion.hop_count();
        if have < c.path.len() {
            let key = *c.descriptors[have].x25519();
            let descriptor = c.descriptors[have].to_bytes();
            let mut seed = [0u8; 32];
            self.rng.fill_bytes(&mut seed);
            let Ok((hs, msg1)) = ClientHopHandshake::start(&key, seed) else {
                return self.close_own(now, k, CloseReason::Protocol, true);
            };
            if let Some(c) = self.circ.own.get_mut(&k) {
                c.pending = Some(hs);
            }
            let msg = CircuitMsg::Extend {
                descriptor,
                handshake: msg1,
            };
            self.send_own_as(k, have - 1, &msg, command::RELAY_EARLY);
        } else {
            let nonce = self.rng.next_u64();
            c.probe = Some((nonce, c.deadline_ms));
            self.send_own(k, have - 1, &CircuitMsg::Probe { nonce });
        }
    }

    /// Seals `msg` for hop `hop` of our circuit `k` and sends it.
    fn send_own(&mut self, k: u64, hop: usize, msg: &CircuitMsg) {
        self.send_own_as(k, hop, msg, command::RELAY);
    }

    /// As [`Node::send_own`], as a `RELAY` or `RELAY_EARLY` cell.
    fn send_own_as(&mut self, k: u64, hop: usize, msg: &CircuitMsg, cmd: u8) {
        let Some(c) = self.circ.own.get_mut(&k) else {
            return;
        };
        let Some((link, cid)) = c.guard_link else {
            return;
        };
        let Ok(payload) = msg.encode() else {
            return;
        };
        let Ok(body) = c.onion.seal_forward(hop, &payload) else {
            return self.close_own(self.now_ms, k, CloseReason::Protocol, true);
        };
        if let Some(cell) = Cell::relay_as(cid, cmd, &body[..]) {
            self.send(link, cell);
        }
    }

    fn on_own_relay(&mut self, now: Millis, k: u64, mut cell: Cell) {
        let Some(c) = self.circ.own.get_mut(&k) else {
            return;
        };
        let (hop, payload) = match c.onion.open_backward(cell.body_mut()) {
            Ok(x) => x,
            Err(_) => {
                self.stats.circuits.torn_down_bad_cell += 1;
                return self.close_own(now, k, CloseReason::Protocol, true);
            }
        };
        let last = c.path.len() - 1;
        let Ok(msg) = CircuitMsg::decode(&payload) else {
            return self.close_own(now, k, CloseReason::Protocol, true);
        };
        match msg {
            CircuitMsg::Extended { handshake }
                if c.state == CircuitState::Building
                    && c.pending.is_some()
                    && hop + 1 == c.onion.hop_count() =>
            {
                self.hop_done(now, k, &handshake);
            }
            CircuitMsg::ProbeReply { nonce }
                if hop == last && c.probe.is_some_and(|(n, _)| n == nonce) =>
            {
                c.probe = None;
                if c.state == CircuitState::Building {
                    c.state = CircuitState::Built;
                    c.built_ms = Some(now);
                    c.deadline_ms = now + self.config.circuits.lifetime_ms;
                    self.stats.circuits.built += 1;
                    if let Some(v) = c.path.get(1) {
                        self.circ.vanguard_failures.remove(&v.id);
                    }
                    let hops = c.path.iter().map(|h| h.id).collect();
                    self.events.push_back(Event::CircuitBuilt {
                        id: CircuitId(k),
                        hops,
                        build_ms: now.saturating_sub(c.created_ms),
                        probe: nonce,
                    });
                }
            }
            CircuitMsg::Data { bytes } if hop == last && c.state != CircuitState::Building => {
                c.delivered += 1;
                let every = self.config.circuits.sendme_every;
                let ack = c.delivered % every == 0;
                self.events.push_back(Event::CircuitData {
                    id: CircuitId(k),
                    data: bytes,
                });
                if ack {
                    self.send_own(k, last, &CircuitMsg::Sendme);
                }
            }
            CircuitMsg::Sendme if hop == last => {
                let p = &self.config.circuits;
                c.package_window = (c.package_window + p.sendme_every).min(p.window_cells);
            }
            _ => self.close_own(now, k, CloseReason::Protocol, true),
        }
    }

    /// Ends one of our circuits; `tell` sends DESTROY to the guard.
    fn close_own(&mut self, now: Millis, k: u64, why: CloseReason, tell: bool) {
        let Some(c) = self.circ.own.remove(&k) else {
            return;
        };
        for w in self.circ.waiting.values_mut() {
            w.retain(|x| *x != Waiter::Own(k));
        }
        self.circ.waiting.retain(|_, w| !w.is_empty());
        if let Some((link, cid)) = c.guard_link {
            if let Some(l) = self.links.get_mut(&link) {
                l.circuits.remove(&cid);
            }
            self.outbox.drop_circuit(link, cid);
            if tell {
                self.send_destroy(link, cid, reason::NONE);
            }
        }
        let built = c.built_ms.is_some();
        let reached = c.onion.hop_count();
        if !built
            && reached >= 1
            && matches!(
                why,
                CloseReason::Destroyed | CloseReason::Timeout | CloseReason::LinkDown
            )
            && let Some(hop) = c.path.get(reached)
        {
            let until = now
                + self
                    .config
                    .circuits
                    .guard_retry_ms
                    .max(10 * self.config.round_ms);
            self.circ.suspects.insert(hop.id, until);
            if self.circ.suspects.len() > 1024 {
                self.circ.suspects.pop_first();
            }
            // A vanguard that builds keep failing to reach is gone (crashed
            // or left): replace it rather than keep a dead set. Only the
            // guard, which knows us anyway, can fake this.
            if reached == 1 {
                let n = self.circ.vanguard_failures.entry(hop.id).or_default();
                *n += 1;
                if *n >= VANGUARD_MAX_FAILURES {
                    let dead = hop.id;
                    self.circ.vanguard_failures.remove(&dead);
                    self.circ.vanguards.retain(|(c, _)| c.id != dead);
                }
            }
        }
        if !built {
            self.stats.circuits.failed += 1;
        }
        self.events.push_back(Event::CircuitClosed {
            id: CircuitId(k),
            hops: c.path.iter().map(|h| h.id).collect(),
            built,
            reached,
            reason: why,
        });
    }

    fn send_destroy(&mut self, link: LinkId, cid: u32, why: u8) {
        if let Some(cell) = Cell::control(cid, command::DESTROY, &[why]) {
            self.send(link, cell);
        }
    }

    // ---- relay side -----------------------------------------------------

    fn on_create(&mut self, now: Millis, link: LinkId, cid: u32, cell: &Cell) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        // The peer must use its own half of the id space.
        if cid & 0x8000_0000 == own_side_bit(l.direction) {
            return self.penalise(link);
        }
        let on_link = l
            .circuits
            .values()
            .filter(|r| matches!(r, CircRef::Prev(_)))
            .count();
        let peer = match l.state {
            LinkState::Up { peer } => peer,
            _ => return,
        };
        if !self.config.relay {
            return self.send_destroy(link, cid, reason::NOT_A_RELAY);
        }
        let p = self.config.circuits.clone();
        let of_peer: usize = self
            .links
            .values()
            .filter(|l| matches!(l.state, LinkState::Up { peer: q } if q == peer))
            .map(|l| {
                l.circuits
                    .values()
                    .filter(|r| matches!(r, CircRef::Prev(_)))
                    .count()
            })
            .sum();
        if on_link >= p.max_circuits_per_link
            || of_peer >= p.max_circuits_per_peer
            || self.circ.relays.len() >= p.max_relay_circuits
        {
            self.stats.circuits.creates_refused += 1;
            return self.send_destroy(link, cid, reason::RESOURCES);
        }
        // Rate: per link first (one peer cannot use up the node's budget),
        // then the node's own bound on handshake work.
        let rate = p.creates_per_sec_per_link;
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if !l.creates.take(now, rate) {
            // Refused with DESTROY, the link stays (a relay-to-relay link
            // carries many clients' CREATEs in bursts). A flooder that does
            // not read its DESTROYs is cut by the control-queue limits.
            self.stats.circuits.creates_refused += 1;
            return self.send_destroy(link, cid, reason::RESOURCES);
        }
        if !self.circ.creates.take(now, p.creates_per_sec) {
            self.stats.circuits.creates_refused += 1;
            return self.send_destroy(link, cid, reason::RESOURCES);
        }
        let msg1 = match cell.link_payload().map(CircuitMsg::decode) {
            Ok(Ok(CircuitMsg::Create { handshake })) => handshake,
            _ => return self.penalise(link),
        };
        let handshake_seen = self.circ.observing.then(|| msg1.clone());
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let (keys, msg2) = match RelayHopHandshake::respond(&self.identity, &msg1, seed) {
            Ok(x) => x,
            Err(_) => return self.send_destroy(link, cid, reason::PROTOCOL),
        };
        let k = self.circ.next_key;
        self.circ.next_key += 1;
        self.circ.relays.insert(
            k,
            RelayCircuit {
                prev: (link, cid),
                next: None,
                crypto: RelayCrypto::new(keys, true),
                extending: None,
                last_used_ms: now,
                package_window: p.window_cells,
                delivered: 0,
                early: 0,
            },
        );
        if let Some(l) = self.links.get_mut(&link) {
            l.circuits.insert(cid, CircRef::Prev(k));
        }
        if let Some(handshake) = handshake_seen {
            self.circ.observations.push(Observation::Create {
                circuit: RelayCircuitId(k),
                at_ms: now,
                handshake,
            });
        }
        self.stats.circuits.relay_created += 1;
        let msg = CircuitMsg::Created { handshake: msg2 }.encode();
        if let Some(c) = msg
            .ok()
            .and_then(|m| Cell::control(cid, command::CREATED, &m))
        {
            self.send(link, c);
        }
    }

    fn on_relay_forward(&mut self, now: Millis, k: u64, mut cell: Cell) {
        let observing = self.circ.observing;
        let Some(r) = self.circ.relays.get_mut(&k) else {
            return;
        };
        r.last_used_ms = now;
        let early = cell.command() == command::RELAY_EARLY;
        if early {
            // The extend budget: no circuit passes more than MAX_EXTENDS
            // extends through any relay, so none exceeds MAX_EXTENDS + 1
            // hops (and no loop can multiply a cell without bound).
            r.early += 1;
            if r.early > MAX_EXTENDS {
                self.stats.circuits.over_extend_budget += 1;
                return self.drop_relay(k, reason::PROTOCOL);
            }
        }
        let outcome = r.crypto.process_forward(cell.body_mut());
        match outcome {
            Ok(ForwardOutcome::Forward) => {
                let Some((link, cid)) = r.next else {
                    return self.drop_relay(k, reason::PROTOCOL);
                };
                self.pass_on(k, true, link, cid, &cell);
            }
            Ok(ForwardOutcome::Recognised(payload)) => {
                if observing {
                    self.circ.observations.push(Observation::Recognised {
                        circuit: RelayCircuitId(k),
                        at_ms: now,
                        early,
                        payload: payload.clone(),
                    });
                }
                match CircuitMsg::decode(&payload) {
                    Ok(msg) => self.on_relay_msg(now, k, msg, early),
                    Err(_) => self.drop_relay(k, reason::PROTOCOL),
                }
            }
            Ok(ForwardOutcome::Unrecognised | ForwardOutcome::Splice) | Err(_) => {
                self.stats.circuits.torn_down_bad_cell += 1;
                self.drop_relay(k, reason::PROTOCOL);
            }
        }
    }

    fn on_relay_msg(&mut self, now: Millis, k: u64, msg: CircuitMsg, early: bool) {
        let Some(r) = self.circ.relays.get_mut(&k) else {
            return;
        };
        let is_last = r.next.is_none() && r.extending.is_none();
        match msg {
            CircuitMsg::Extend {
                descriptor,
                handshake,
            } if is_last && early => {
                let prev = r.prev.0;
                self.on_extend(now, k, prev, &descriptor, handshake);
            }
            CircuitMsg::Probe { nonce } => {
                self.stats.circuits.probes_answered += 1;
                self.events.push_back(Event::ProbeAnswered { nonce });
                self.send_backward(k, &CircuitMsg::ProbeReply { nonce });
            }
            CircuitMsg::Data { bytes } if is_last => {
                r.delivered += 1;
                self.stats.circuits.relay_data_received += 1;
                let ack = r.delivered % self.config.circuits.sendme_every == 0;
                self.events.push_back(Event::RelayData {
                    circuit: RelayCircuitId(k),
                    data: bytes,
                });
                if ack {
                    self.send_backward(k, &CircuitMsg::Sendme);
                }
            }
            CircuitMsg::Sendme if is_last => {
                let p = &self.config.circuits;
                r.package_window = (r.package_window + p.sendme_every).min(p.window_cells);
            }
            _ => self.drop_relay(k, reason::PROTOCOL),
        }
    }

    /// As the last hop, extend circuit `k` (arrived on link `prev`) to the
    /// relay `descriptor` describes. The address dialled is the one that
    /// relay signed (or a link to it is reused), under the normal dial
    /// policy; nothing in the EXTEND is used unchecked.
    fn on_extend(&mut self, now: Millis, k: u64, prev: LinkId, descriptor: &[u8], msg1: Vec<u8>) {
        let checked = Descriptor::decode(descriptor)
            .ok()
            .and_then(|u| self.check_descriptor(u, now).ok());
        let Some(d) = checked else {
            self.stats.descriptors_refused += 1;
            return self.drop_relay(k, reason::EXTEND_FAILED);
        };
        let next = d.node_id();
        let prev_peer = self.links.get(&prev).and_then(|l| match l.state {
            LinkState::Up { peer } => Some(peer),
            _ => None,
        });
        if !d.is_relay() || next == self.node_id() || Some(next) == prev_peer {
            return self.drop_relay(k, reason::EXTEND_FAILED);
        }
        // Keep the newest checked descriptor we hold for it (ours may be
        // newer than the client's copy) and dial where it says.
        self.remember(now, d, None);
        let addr = self.dir.get(&next).and_then(|kn| {
            kn.verified_addr
                .or(kn.descriptor().and_then(Descriptor::address))
        });
        let Some(addr) = addr else {
            return self.drop_relay(k, reason::EXTEND_FAILED);
        };
        if let Some(r) = self.circ.relays.get_mut(&k) {
            r.extending = Some(Extending {
                next,
                addr,
                msg1,
                retried: false,
            });
        }
        if !self.wait_for(now, next, addr, Waiter::Relay(k)) {
            self.drop_relay(k, reason::EXTEND_FAILED);
        }
    }

    fn send_create_relay(&mut self, k: u64, link: LinkId) {
        let Some(r) = self.circ.relays.get(&k) else {
            return;
        };
        let Some(Extending { msg1, .. }) = r.extending.clone() else {
            return;
        };
        if r.next.is_some() || r.prev.0 == link {
            return self.drop_relay(k, reason::EXTEND_FAILED);
        }
        let Some(cid) = self.alloc_circ_id(link, CircRef::Next(k)) else {
            return self.drop_relay(k, reason::RESOURCES);
        };
        if let Some(r) = self.circ.relays.get_mut(&k) {
            r.next = Some((link, cid));
        }
        self.send_create(link, cid, msg1);
    }

    fn on_relay_created(&mut self, now: Millis, k: u64, cell: &Cell) {
        let Some(r) = self.circ.relays.get_mut(&k) else {
            return;
        };
        r.last_used_ms = now;
        let handshake = match cell.link_payload().map(CircuitMsg::decode) {
            Ok(Ok(CircuitMsg::Created { handshake })) if r.extending.is_some() => handshake,
            _ => return self.drop_relay(k, reason::PROTOCOL),
        };
        r.extending = None;
        r.crypto.set_position(RelayPosition::Middle);
        self.stats.circuits.relay_extended += 1;
        self.send_backward(k, &CircuitMsg::Extended { handshake });
    }

    fn on_relay_backward(&mut self, now: Millis, k: u64, mut cell: Cell) {
        let Some(r) = self.circ.relays.get_mut(&k) else {
            return;
        };
        r.last_used_ms = now;
        if r.crypto.relay_backward(cell.body_mut()).is_err() {
            return self.drop_relay(k, reason::PROTOCOL);
        }
        let (link, cid) = r.prev;
        self.pass_on(k, false, link, cid, &cell);
    }

    /// Sends a relayed cell's body (our layer already handled) on as a
    /// RELAY cell on `link`, circuit `cid`.
    fn pass_on(&mut self, k: u64, forward: bool, link: LinkId, cid: u32, cell: &Cell) {
        if self.circ.observing {
            self.circ.observations.push(Observation::Relayed {
                circuit: RelayCircuitId(k),
                at_ms: self.now_ms,
                forward,
                early: cell.command() == command::RELAY_EARLY,
                body: cell.body().to_vec(),
            });
        }
        self.stats.circuits.cells_relayed += 1;
        if let Some(c) = Cell::relay_as(cid, cell.command(), cell.body()) {
            self.send(link, c);
        }
    }

    /// Seals `msg` as this hop and sends it towards the client.
    fn send_backward(&mut self, k: u64, msg: &CircuitMsg) {
        let Some(r) = self.circ.relays.get_mut(&k) else {
            return;
        };
        let Ok(payload) = msg.encode() else {
            return;
        };
        let Ok(body) = r.crypto.seal_backward(&payload) else {
            return self.drop_relay(k, reason::PROTOCOL);
        };
        let (link, cid) = r.prev;
        if let Some(c) = Cell::relay(cid, &body[..]) {
            self.send(link, c);
        }
    }

    /// Forgets a relayed circuit and sends DESTROY both ways (to whichever
    /// sides still know it).
    fn drop_relay(&mut self, k: u64, why: u8) {
        let Some(r) = self.circ.relays.remove(&k) else {
            return;
        };
        if let Some(Extending { next, .. }) = &r.extending {
            if let Some(w) = self.circ.waiting.get_mut(next) {
                w.retain(|x| *x != Waiter::Relay(k));
            }
            self.circ.waiting.retain(|_, w| !w.is_empty());
        }
        for (link, cid) in [Some(r.prev), r.next].into_iter().flatten() {
            self.outbox.drop_circuit(link, cid);
            let known = self
                .links
                .get_mut(&link)
                .is_some_and(|l| l.circuits.remove(&cid).is_some());
            if known {
                self.send_destroy(link, cid, why);
            }
        }
    }
}

#[cfg(test)]
#[path = "circuit_attacks.rs"]
mod attacks;

#[cfg(test)]
mod tests {
    use super::super::tests::{Net, T0, TamperAction, addr, net, node};
    use super::*;
    use crate::cell::CELL_SIZE;

    /// A network of `n` nodes where only node 0 builds circuits (so the
    /// tests can reason about its paths).
    pub(super) fn quiet_net(n: u8) -> Net {
        let mut net = net(n, false);
        for (i, node) in net.nodes.iter_mut().enumerate() {
            if i != 0 {
                node.config.circuits.circuits_wanted = 0;
            }
        }
        net.nodes[0].config.circuits.circuits_wanted = 1;
        net
    }

    pub(super) fn built(net: &Net, i: usize) -> Vec<CircuitInfo> {
        net.nodes[i]
            .circuits()
            .into_iter()
            .filter(|c| c.state == CircuitState::Built)
            .collect()
    }

    /// The data cells node `exit` delivered as a last hop.
    pub(super) fn relay_data_at(net: &Net, exit: usize) -> Vec<Vec<u8>> {
        net.events
            .iter()
            .filter_map(|(i, e)| match e {
                Event::RelayData { data, .. } if *i == exit => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn index_of(net: &Net, id: NodeId) -> usize {
        net.nodes.iter().position(|n| n.node_id() == id).unwrap()
    }

    #[test]
    fn every_node_builds_probe_verified_circuits() {
        let mut net = net(12, false);
        net.run(T0 + 20_000);
        let mut answered = BTreeMap::new();
        for (i, e) in &net.events {
            if let Event::ProbeAnswered { nonce } = e {
                answered.insert(*nonce, *i);
            }
        }
        for (i, n) in net.nodes.iter().enumerate() {
            let circuits = built(&net, i);
            assert!(!circuits.is_empty(), "node {i} built nothing");
            let guard = n.guards()[0].id;
            for c in circuits {
                assert_eq!(c.hops.len(), 3);
                assert_eq!(c.hops[0], guard, "not through the primary guard");
                assert!(!c.hops.contains(&n.node_id()));
                let ips: Vec<_> = c
                    .hops
                    .iter()
                    .map(|h| addr(index_of(&net, *h) as u8 + 1).ip())
                    .collect();
                for a in 0..3 {
                    for b in a + 1..3 {
                        assert_ne!(c.hops[a], c.hops[b]);
                        assert!(!n.config.circuits.same_prefix(ips[a], ips[b]));
                    }
                }
            }
        }
        // Every built circuit's probe was answered by its last hop.
        for (i, e) in &net.events {
            if let Event::CircuitBuilt { hops, probe, .. } = e {
                let exit = index_of(&net, *hops.last().unwrap());
                assert_eq!(answered.get(probe), Some(&exit), "node {i}'s probe");
            }
        }
    }

    #[test]
    fn flow_control_credits() {
        let mut net = quiet_net(8);
        net.run(T0 + 10_000);
        let c = built(&net, 0)[0].clone();
        let exit = index_of(&net, *c.hops.last().unwrap());
        let window = net.nodes[0].config.circuits.window_cells;
        // A window's worth goes out; then the sender must wait.
        for i in 0..window {
            net.nodes[0].send_data(c.id, &i.to_be_bytes()).unwrap();
        }
        assert_eq!(net.nodes[0].send_data(c.id, b"x"), Err(SendError::NoCredit));
        let now = T0 + 10_000;
        net.pump(now);
        let got = relay_data_at(&net, exit);
        assert_eq!(got.len(), window as usize);
        assert_eq!(got[7], 7u32.to_be_bytes());
        // The exit's SENDMEs gave the whole window back.
        assert_eq!(net.nodes[0].circuit_window(c.id), Some(window));
        // And backwards: the exit sends to the client.
        let rc = net
            .events
            .iter()
            .find_map(|(i, e)| match e {
                Event::RelayData { circuit, .. } if *i == exit => Some(*circuit),
                _ => None,
            })
            .unwrap();
        for _ in 0..window {
            net.nodes[exit].relay_send_data(rc, b"back").unwrap();
        }
        assert_eq!(
            net.nodes[exit].relay_send_data(rc, b"x"),
            Err(SendError::NoCredit)
        );
        net.pump(now);
        let back = net
            .events
            .iter()
            .filter(|(i, e)| {
                *i == 0 && matches!(e, Event::CircuitData { data, .. } if data == b"back")
            })
            .count();
        assert_eq!(back, window as usize);
        assert!(net.nodes[exit].relay_send_data(rc, b"again").is_ok());
        assert_eq!(
            net.nodes[0].send_data(c.id, &vec![0; MAX_DATA_BYTES + 1]),
            Err(SendError::TooLarge)
        );
    }

    #[test]
    fn relay_crash_mid_build_retries_beyond_the_same_guard() {
        let mut net = quiet_net(10);
        // Let gossip run, but no builds yet: node 0 picks guards first.
        net.nodes[0].config.circuits.circuits_wanted = 0;
        net.run(T0 + 6_000);
        net.nodes[0].config.circuits.circuits_wanted = 1;
        net.nodes[0].maintain_guards(T0 + 6_000);
        let guard = net.nodes[0].guards()[0].id;
        let g = index_of(&net, guard);
        // The first node other than the guard that receives a CREATE
        // crashes on the spot: node 0's second hop, mid-build.
        let crashed = std::rc::Rc::new(std::cell::Cell::new(None::<usize>));
        let seen = crashed.clone();
        net.tamper = Some(Box::new(move |from, to, cell| {
            if cell.command() == command::CREATE && to != g && from == g && seen.get().is_none() {
                seen.set(Some(to));
            }
            if seen.get() == Some(to) || seen.get() == Some(from) {
                TamperAction::Drop
            } else {
                TamperAction::Deliver
            }
        }));
        let mut now = T0 + 6_000;
        while now < T0 + 60_000 && built(&net, 0).is_empty() {
            if let Some(dead) = crashed.get()
                && net.dead.insert(dead)
            {
                // Its links drop at every peer.
                let dead_id = net.nodes[dead].node_id();
                for (i, n) in net.nodes.iter_mut().enumerate() {
                    if i != dead
                        && let Some(&l) = n.by_peer.get(&dead_id)
                    {
                        n.handle_link_down(now, l);
                    }
                }
            }
            net.run_from(now, now + 500);
            now += 500;
        }
        let dead = crashed.get().expect("a second hop got a CREATE");
        let failed: Vec<&Vec<NodeId>> = net
            .events
            .iter()
            .filter_map(|(i, e)| match e {
                Event::CircuitClosed {
                    hops, built: false, ..
                } if *i == 0 => Some(hops),
                _ => None,
            })
            .collect();
        assert!(
            !failed.is_empty(),
            "the build through the crashed relay failed"
        );
        assert!(failed.iter().all(|h| h[0] == guard));
        let ok = built(&net, 0);
        assert!(!ok.is_empty(), "node 0 rebuilt");
        assert_eq!(ok[0].hops[0], guard, "same guard after an induced failure");
        assert!(!ok[0].hops.contains(&net.nodes[dead].node_id()));
        assert_eq!(net.nodes[0].guards()[0].id, guard);
    }

    /// Builds node 0's circuit, then lets `tamper` loose on relay cells and
    /// sends two data cells. Returns (data cells the exit accepted, whether
    /// node 0's circuit was torn down).
    fn tampered(make: impl Fn(usize) -> super::super::tests::Tamper) -> (Vec<Vec<u8>>, bool) {
        let mut net = quiet_net(8);
        net.run(T0 + 10_000);
        let c = built(&net, 0)[0].clone();
        let guard = index_of(&net, c.hops[0]);
        let exit = index_of(&net, c.hops[2]);
        net.events.clear();
        net.tamper = Some(make(guard));
        // No replacement circuit: the relays' tables must empty.
        net.nodes[0].config.circuits.circuits_wanted = 0;
        let now = T0 + 10_000;
        net.nodes[0].send_data(c.id, b"one").unwrap();
        net.pump(now);
        let _ = net.nodes[0].send_data(c.id, b"two");
        net.pump(now);
        // A dropped last cell is caught by the probe timing out.
        net.nodes[0].probe_circuit(now, c.id);
        net.pump(now);
        net.tamper = None;
        net.run_from(now, now + 20_000);
        let accepted = relay_data_at(&net, exit);
        let torn = net.events.iter().any(|(i, e)| {
            *i == 0 && matches!(e, Event::CircuitClosed { id, built: true, .. } if *id == c.id)
        });
        // The relays forgot it too.
        if torn {
            for h in &c.hops {
                let n = &net.nodes[index_of(&net, *h)];
                assert_eq!(n.relay_circuit_count(), 0, "a relay kept the circuit");
            }
        }
        (accepted, torn)
    }

    #[test]
    fn corrupted_cells_tear_the_circuit_down() {
        let (accepted, torn) = tampered(|guard| {
            Box::new(move |from, _, cell: &mut Cell| {
                if from == guard && cell.command() == command::RELAY {
                    cell.body_mut()[100] ^= 1;
                }
                TamperAction::Deliver
            })
        });
        assert!(accepted.is_empty(), "a corrupted cell was accepted");
        assert!(torn);
    }

    #[test]
    fn dropped_cells_tear_the_circuit_down() {
        let mut first = true;
        let (accepted, torn) = tampered(move |guard| {
            Box::new(move |from, _, cell: &mut Cell| {
                if from == guard && cell.command() == command::RELAY && first {
                    first = false;
                    return TamperAction::Drop;
                }
                TamperAction::Deliver
            })
        });
        assert!(accepted.is_empty(), "a cell after a gap was accepted");
        assert!(torn);
    }

    #[test]
    fn replayed_cells_tear_the_circuit_down() {
        let (accepted, torn) = tampered(|guard| {
            let mut first = true;
            Box::new(move |from, _, cell: &mut Cell| {
                if from == guard && cell.command() == command::RELAY && first {
                    first = false;
                    return TamperAction::Replay;
                }
                TamperAction::Deliver
            })
        });
        assert_eq!(accepted, vec![b"one".to_vec()], "the replay was accepted");
        assert!(torn);
    }

    #[test]
    fn relays_see_fixed_size_cells_and_nothing_of_the_initiator() {
        let mut net = quiet_net(10);
        for n in &mut net.nodes {
            n.set_observing(true);
        }
        let mut sizes = BTreeSet::new();
        net.tamper = Some(Box::new(move |_, _, cell: &mut Cell| {
            assert_eq!(cell.as_bytes().len(), CELL_SIZE);
            TamperAction::Deliver
        }));
        net.run(T0 + 10_000);
        let c = built(&net, 0)[0].clone();
        net.nodes[0].send_data(c.id, b"hello exit").unwrap();
        net.pump(T0 + 10_000);
        let me = net.nodes[0].descriptor().clone();
        let secrets: Vec<Vec<u8>> = vec![
            me.node_id().as_bytes().to_vec(),
            me.x25519().to_vec(),
            me.public().ed25519.to_bytes().to_vec(),
            match addr(1).ip() {
                std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
                std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
            },
        ];
        let mut seen = 0;
        for (i, n) in net.nodes.iter_mut().enumerate().skip(1) {
            for o in n.take_observations() {
                seen += 1;
                let bytes = o.bytes();
                if let Observation::Relayed { body, .. } = &o {
                    sizes.insert(body.len());
                }
                for s in &secrets {
                    assert!(
                        !bytes.windows(s.len()).any(|w| w == &s[..]),
                        "node {i} saw the initiator's identity in clear"
                    );
                }
            }
        }
        assert!(seen > 0);
        assert_eq!(sizes.len(), 1, "relayed bodies of different sizes");
    }

    #[test]
    fn client_only_nodes_link_to_guards_and_are_never_hops() {
        let mut net = net(10, false);
        let mut c = node(11, vec![addr(1)]);
        c.config.relay = false;
        c.descriptor = super::super::sign_own(&c.identity, &c.config, T0);
        net.nodes.push(c);
        net.run(T0 + 25_000);
        let client = net.nodes.len() - 1;
        let me = net.nodes[client].node_id();
        assert!(!net.nodes[client].descriptor().is_relay());
        let guards = net.nodes[client].guard_ids();
        assert!(guards.len() >= 2);
        let peers: Vec<NodeId> = net.nodes[client]
            .peers()
            .iter()
            .map(|p| p.node_id)
            .collect();
        assert!(peers.iter().all(|p| guards.contains(p)), "a non-guard link");
        assert!(peers.len() >= 2, "learns through more than one guard");
        assert!(
            !built(&net, client).is_empty(),
            "the client built a circuit"
        );
        for (i, n) in net.nodes.iter().enumerate() {
            for c in n.circuits() {
                assert!(!c.hops.contains(&me), "node {i} used the client as a hop");
            }
        }
        // A CREATE sent to it anyway, by a guard over their link, is
        // refused with NOT_A_RELAY.
        let g = index_of(&net, guards[0]);
        let lg = net.nodes[g].by_peer[&me];
        let (_, lc) = net.wires[&(g, lg)];
        let bit = own_side_bit(net.nodes[g].links[&lg].direction);
        let create = create_cell(&net.nodes[client], bit | 77, 3);
        net.nodes[client].handle_link_data(T0 + 25_000, lc, create.as_bytes());
        let mut refused = false;
        while let Some(t) = net.nodes[client].poll_transmit() {
            net.nodes[client].handle_link_sent(T0 + 25_000, t.link, 1);
            if t.cell.command() == command::DESTROY && t.cell.circ_id() == bit | 77 {
                refused = t.cell.link_payload().unwrap() == [reason::NOT_A_RELAY];
            }
        }
        assert!(refused, "the CREATE was not refused as NOT_A_RELAY");
        assert_eq!(net.nodes[client].stats().circuits.relay_created, 0);
        assert_eq!(net.nodes[client].relay_circuit_count(), 0);
    }

    /// Node 0's link to node 1 (and node 1's end of it), linking them
    /// first if needed.
    pub(super) fn link_between(net: &mut Net) -> (LinkId, LinkId) {
        net.run(T0 + 3_000);
        let id1 = net.nodes[1].node_id();
        let l0 = *net.nodes[0].by_peer.get(&id1).expect("0 and 1 linked");
        let (_, l1) = net.wires[&(0, l0)];
        (l0, l1)
    }

    pub(super) fn create_cell(to: &Node, cid: u32, seed: u8) -> Cell {
        let (_, msg1) = ClientHopHandshake::start(to.descriptor().x25519(), [seed; 32]).unwrap();
        let m = CircuitMsg::Create { handshake: msg1 }.encode().unwrap();
        Cell::control(cid, command::CREATE, &m).unwrap()
    }

    #[test]
    fn relays_cap_circuits_and_keep_serving() {
        let mut net = net(2, false);
        for n in &mut net.nodes {
            n.config.circuits.circuits_wanted = 0;
        }
        net.nodes[1].config.circuits.max_circuits_per_link = 5;
        let (l0, l1) = link_between(&mut net);
        // Node 0 uses its own half of the id space on this link.
        let bit = own_side_bit(net.nodes[0].links[&l0].direction);
        for i in 0..8u32 {
            let c = create_cell(&net.nodes[1], bit | (100 + i), i as u8);
            net.nodes[1].handle_link_data(T0 + 3_000, l1, c.as_bytes());
        }
        assert_eq!(net.nodes[1].relay_circuit_count(), 5, "capped per link");
        let mut created = 0;
        let mut destroyed = 0;
        while let Some(t) = net.nodes[1].poll_transmit() {
            match t.cell.command() {
                command::CREATED => created += 1,
                command::DESTROY => destroyed += 1,
                _ => {}
            }
        }
        assert_eq!((created, destroyed), (5, 3));
        // Cells for unknown circuits, and garbage relay bodies, are
        // dropped without harm; the link stays up.
        let stray = Cell::relay(bit | 9999, &[7u8; crate::cell::CELL_BODY_BYTES]).unwrap();
        net.nodes[1].handle_link_data(T0 + 3_000, l1, stray.as_bytes());
        let garbage = Cell::relay(bit | 100, &[7u8; crate::cell::CELL_BODY_BYTES]).unwrap();
        net.nodes[1].handle_link_data(T0 + 3_000, l1, garbage.as_bytes());
        assert_eq!(
            net.nodes[1].relay_circuit_count(),
            4,
            "the garbled one went"
        );
        assert_eq!(net.nodes[1].stats().circuits.torn_down_bad_cell, 1);
        assert!(net.nodes[1].links.contains_key(&l1));
        // A CREATE on the wrong half of the id space is a protocol
        // violation: the link is cut, the node keeps serving others.
        let wrong = create_cell(&net.nodes[1], (bit ^ 0x8000_0000) | 5, 9);
        net.nodes[1].handle_link_data(T0 + 3_000, l1, wrong.as_bytes());
        assert!(!net.nodes[1].links.contains_key(&l1));
        assert_eq!(
            net.nodes[1].relay_circuit_count(),
            0,
            "the link's circuits went with it"
        );
        assert_eq!(net.nodes[1].stats().peers_penalised, 1);
    }

    #[test]
    fn client_only_nodes_refuse_to_relay() {
        let mut net = net(2, false);
        for n in &mut net.nodes {
            n.config.circuits.circuits_wanted = 0;
        }
        let (l0, l1) = link_between(&mut net);
        net.nodes[1].config.relay = false;
        let bit = own_side_bit(net.nodes[0].links[&l0].direction);
        let c = create_cell(&net.nodes[1], bit | 1, 1);
        net.nodes[1].handle_link_data(T0 + 3_000, l1, c.as_bytes());
        assert_eq!(net.nodes[1].relay_circuit_count(), 0);
        let t = net.nodes[1].poll_transmit().unwrap();
        assert_eq!(t.cell.command(), command::DESTROY);
        assert_eq!(t.cell.link_payload().unwrap(), [reason::NOT_A_RELAY]);
    }

    #[test]
    fn guards_survive_a_restart() {
        let mut net = net(8, false);
        net.run(T0 + 8_000);
        let saved = net.nodes[0].guards();
        assert!(!saved.is_empty());
        let mut fresh = node(1, vec![addr(1)]);
        assert_eq!(fresh.restore_guards(T0 + 9_000, &saved), saved.len());
        assert_eq!(fresh.guards(), saved);
        // Garbage records are skipped.
        let mut bad = saved.clone();
        bad[0].descriptor[10] ^= 1;
        let mut other = node(1, vec![addr(1)]);
        assert_eq!(other.restore_guards(T0 + 9_000, &bad[..1]), 0);
    }

    #[test]
    fn rotation_destroys_the_old_circuit_at_every_relay() {
        let mut net = quiet_net(8);
        net.nodes[0].config.circuits.lifetime_ms = 5_000;
        net.run(T0 + 30_000);
        let rotated = net
            .events
            .iter()
            .filter(|(i, e)| {
                *i == 0
                    && matches!(
                        e,
                        Event::CircuitClosed {
                            reason: CloseReason::Rotated,
                            ..
                        }
                    )
            })
            .count();
        assert!(rotated >= 2, "rotated {rotated} times");
        let relayed: usize = net.nodes.iter().map(Node::relay_circuit_count).sum();
        let live = net.nodes[0].circuits().len();
        // Each of node 0's live circuits has at most 3 relay entries.
        assert!(
            relayed <= 3 * live,
            "{relayed} relayed entries for {live} circuits"
        );
    }
}
