//! Circuits inside the node: building our own ([`client`]), relaying
//! others' ([`relay`]), guards and vanguards ([`guards`]), flow control
//! ([`flow`]), and the typed messages each circuit role accepts
//! ([`roles`]). This file holds the link-local circuit ids and routes
//! every circuit cell to the side that owns its circuit.
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
//!   client backward. `RELAY_EARLY` is the same, forward only, and the only
//!   way an `EXTEND` may travel.
//! - `DESTROY` (link level): tear the circuit down; each hop passes it on in
//!   the other direction, so it reaches both ends.
//!
//! Inside recognised relay bodies travel [`CircuitMsg`]s, which are typed
//! by the role of the circuit that receives them before anything acts on
//! them ([`roles`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rand_core::RngCore;

use super::dialer::Dialer;
use super::directory::Directory;
use super::fault::{Cause, Fault, Offence};
use super::gossip::Gossip;
use super::links::{Links, TokenBucket};
use super::output::Ctx;
use super::{Config, Direction, LinkId, Millis};
use crate::cell::{Cell, command};
use crate::circuit::CircuitMsg;
use crate::descriptor::Descriptor;
use crate::identity::NodeId;

mod client;
mod flow;
mod guards;
mod relay;
mod roles;
mod types;

pub use types::{
    CircuitId, CircuitInfo, CircuitState, CircuitStats, CloseReason, GuardRecord, GuardStatus,
    Observation, Purpose, RelayCircuitId, SendError,
};

use client::OwnCircuit;
use guards::Guards;
use relay::RelayCircuit;

/// What a link-local circuit id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CircRef {
    /// One of ours; this link is the one to our guard.
    Own(u64),
    /// We relay it; this link leads towards the client.
    Prev(u64),
    /// We relay it; this link leads away from the client.
    Next(u64),
}

/// The circuits on one link.
#[derive(Debug)]
struct OnLink {
    ids: BTreeMap<u32, CircRef>,
    /// CREATEs per second ([`crate::path::CircuitParams::creates_per_sec_per_link`]);
    /// kept for the link's life, so emptying the table resets nothing.
    creates: TokenBucket,
    /// Relay cells for ids not in `ids` that the peer may still send: for
    /// every circuit we ended on this link and told it so, what it may
    /// have sent before our DESTROY arrived ([`strays_per_circuit`]).
    /// Used before `strays`; capped at `max_circuits_per_link` circuits'
    /// worth.
    expected: u64,
    /// Relay cells for unknown ids beyond `expected`, at
    /// [`crate::node::Config::max_link_cells_per_sec`]: more, and the peer
    /// is cut ([`Offence::StrayCells`]).
    strays: TokenBucket,
}

/// Relay cells a peer may still send on a circuit after we ended it and
/// sent DESTROY, before the DESTROY reaches it: what it had queued for the
/// circuit (at most `max_circuit_queue_cells`, or it would have destroyed
/// the circuit itself) and what it had handed to its transport
/// (`max_link_in_flight_cells`). An honest end has at most a window in
/// flight on a circuit, well under this. What else a transport buffers is
/// left to the stray rate.
fn strays_per_circuit(cx: &Ctx<'_>) -> u64 {
    (cx.config.max_circuit_queue_cells + cx.config.max_link_in_flight_cells) as u64
}

/// A circuit waiting for a link to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    Own(u64),
    Relay(u64),
}

/// What the circuit part may read and use of the rest of the node.
pub(super) struct World<'a> {
    pub(super) links: &'a Links,
    pub(super) dialer: &'a mut Dialer,
    pub(super) dir: &'a mut Directory,
    pub(super) gossip: &'a Gossip,
    pub(super) descriptor: &'a Descriptor,
}

/// The circuit part of the node.
#[derive(Debug, Default)]
pub(super) struct Circuits {
    own: BTreeMap<u64, OwnCircuit>,
    relays: BTreeMap<u64, RelayCircuit>,
    next_key: u64,
    guards: Guards,
    on_link: BTreeMap<LinkId, OnLink>,
    waiting: BTreeMap<NodeId, Vec<Waiter>>,
    observing: bool,
    observations: Vec<Observation>,
    /// CREATEs answered per second, node-wide.
    creates: TokenBucket,
}

fn own_side_bit(direction: Direction) -> u32 {
    match direction {
        Direction::Outbound => 0x8000_0000,
        Direction::Inbound => 0,
    }
}

impl Circuits {
    /// Records what relays see in clear (see [`Observation`]).
    pub(super) fn set_observing(&mut self, on: bool) {
        self.observing = on;
    }

    pub(super) fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    /// Whether `link` carries circuits (such links are never evicted).
    pub(super) fn carries(&self, link: LinkId) -> bool {
        self.on_link.get(&link).is_some_and(|t| !t.ids.is_empty())
    }

    /// Peers whose links carry circuits.
    pub(super) fn busy_peers(&self, links: &Links) -> BTreeSet<NodeId> {
        self.on_link
            .iter()
            .filter(|(_, t)| !t.ids.is_empty())
            .filter_map(|(l, _)| links.peer_of(*l))
            .collect()
    }

    fn entry(&self, link: LinkId, cid: u32) -> Option<CircRef> {
        self.on_link
            .get(&link)
            .and_then(|t| t.ids.get(&cid).copied())
    }

    /// Forgets id `cid` on `link`; true if it was known.
    fn forget_id(&mut self, link: LinkId, cid: u32) -> bool {
        self.on_link
            .get_mut(&link)
            .is_some_and(|t| t.ids.remove(&cid).is_some())
    }

    fn table(&mut self, cx: &Ctx<'_>, link: LinkId) -> &mut OnLink {
        let rate = cx.config.circuits.creates_per_sec_per_link;
        let strays = cx.config.max_link_cells_per_sec;
        let now = cx.now;
        self.on_link.entry(link).or_insert_with(|| OnLink {
            ids: BTreeMap::new(),
            creates: TokenBucket::full(now, rate),
            expected: 0,
            strays: TokenBucket::full(now, strays),
        })
    }

    /// We ended a circuit on `link` and sent DESTROY: the peer's cells for
    /// it that cross the DESTROY are expected (see [`OnLink::expected`]).
    fn expect_strays(&mut self, cx: &Ctx<'_>, link: LinkId) {
        let per = strays_per_circuit(cx);
        let cap = per.saturating_mul(cx.config.circuits.max_circuits_per_link as u64);
        if let Some(t) = self.on_link.get_mut(&link) {
            t.expected = t.expected.saturating_add(per).min(cap);
        }
    }

    /// A relay cell for an id `link` does not have: dropped. Expected
    /// after a circuit we ended there, within the stray rate otherwise;
    /// beyond both, the peer invents ids or ignores our DESTROYs: cut.
    fn on_stray(&mut self, cx: &mut Ctx<'_>, link: LinkId) {
        cx.stats.circuits.stray_cells += 1;
        let rate = cx.config.max_link_cells_per_sec;
        let now = cx.now;
        let t = self.table(cx, link);
        if t.expected > 0 {
            t.expected -= 1;
        } else if !t.strays.take(now, rate) {
            cx.cut(link, Fault::Misbehaved(Offence::StrayCells));
        }
    }

    /// A circuit cell arrived on an authenticated link: routed by what
    /// its id stands for on that link.
    pub(super) fn on_cell(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        link: LinkId,
        cell: Cell,
    ) {
        let cid = cell.circ_id();
        let malformed = Fault::Misbehaved(Offence::Malformed);
        match (cell.command(), self.entry(link, cid)) {
            (command::CREATE, None) => self.on_create(cx, w, link, cid, &cell),
            (command::CREATE, Some(_)) => cx.cut(link, malformed),
            (command::CREATED, Some(CircRef::Own(k))) => self.on_own_created(cx, w, k, &cell),
            (command::CREATED, Some(CircRef::Next(k))) => self.on_relay_created(cx, k, &cell),
            (command::RELAY, Some(CircRef::Own(k))) => self.on_own_relay(cx, w, k, cell),
            (command::RELAY | command::RELAY_EARLY, Some(CircRef::Prev(k))) => {
                self.on_relay_forward(cx, w, k, cell)
            }
            (command::RELAY, Some(CircRef::Next(k))) => self.on_relay_backward(cx, k, cell),
            // RELAY_EARLY travels forward only.
            (command::RELAY_EARLY, Some(CircRef::Own(k))) => {
                self.close_own(cx, w, k, CloseReason::Protocol, true)
            }
            (command::RELAY_EARLY, Some(CircRef::Next(k))) => self.drop_relay(cx, k, malformed),
            (command::DESTROY, Some(r)) => {
                // The other side forgot it already.
                self.forget_id(link, cid);
                match r {
                    CircRef::Own(k) => self.close_own(cx, w, k, CloseReason::Destroyed, false),
                    CircRef::Prev(k) | CircRef::Next(k) => {
                        self.drop_relay(cx, k, Fault::Local(Cause::Gone))
                    }
                }
            }
            // A relay cell for a circuit we already tore down (it crossed
            // our DESTROY), or for one that never was.
            (command::RELAY | command::RELAY_EARLY, None) => self.on_stray(cx, link),
            // A DESTROY or CREATED for such a circuit (the link's budget
            // counted it), or a CREATED we never asked for: drop it.
            (command::DESTROY | command::CREATED, _) => {}
            // A link-level command on a circuit id is malformed; a command
            // we do not know is from a version we do not speak.
            (c, _) if c <= command::WALK_REPLY => cx.cut(link, malformed),
            _ => cx.cut(link, Fault::Incompatible),
        }
    }

    /// Circuit `cid`'s queue on `link` overflowed (it broke flow control,
    /// or it had the longest queue when the node ran out of room): it is
    /// destroyed, and nothing else on the link is touched.
    pub(super) fn over_queue(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        link: LinkId,
        cid: u32,
    ) {
        cx.stats.circuits.over_queue += 1;
        match self.entry(link, cid) {
            Some(CircRef::Own(k)) => self.close_own(cx, w, k, CloseReason::Overloaded, true),
            // The DESTROY says "resources": the queue may be this
            // circuit's fault, or the node's queues were full.
            Some(CircRef::Prev(k) | CircRef::Next(k)) => {
                self.drop_relay(cx, k, Fault::Local(Cause::Resources))
            }
            None => cx.out.outbox_mut().drop_circuit(link, cid),
        }
    }

    /// A link went away (it is no longer in [`Links`]): its circuits end,
    /// or a CREATE that was in flight on it is re-sent once.
    pub(super) fn link_down(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, link: LinkId) {
        let Some(table) = self.on_link.remove(&link) else {
            return;
        };
        for (_, r) in table.ids {
            match r {
                CircRef::Own(k) => {
                    if !self.retry_own_create(cx, w, k) {
                        self.close_own(cx, w, k, CloseReason::LinkDown, false);
                    }
                }
                CircRef::Next(k) => {
                    if !self.retry_extend(cx, w, k) {
                        self.drop_relay(cx, k, Fault::Local(Cause::Gone));
                    }
                }
                CircRef::Prev(k) => self.drop_relay(cx, k, Fault::Local(Cause::Gone)),
            }
        }
    }

    /// Sends the waiter's CREATE on a link to `id`, dialling `addr` first
    /// if there is none. False if it cannot be dialled.
    fn wait_for(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        id: NodeId,
        addr: SocketAddr,
        waiter: Waiter,
    ) -> bool {
        if let Some(link) = w.links.to_peer(&id) {
            match waiter {
                Waiter::Own(k) => self.send_create_own(cx, w, k, link),
                Waiter::Relay(k) => self.send_create_relay(cx, w, k, link),
            }
            return true;
        }
        self.waiting.entry(id).or_default().push(waiter);
        let own = matches!(waiter, Waiter::Own(_));
        if w.dialer.dial_expected(cx, w.links, addr, id, own) {
            true
        } else {
            self.unwait(waiter);
            false
        }
    }

    /// `waiter` waits for nothing any more.
    fn unwait(&mut self, waiter: Waiter) {
        for v in self.waiting.values_mut() {
            v.retain(|x| *x != waiter);
        }
        self.waiting.retain(|_, v| !v.is_empty());
    }

    /// An authenticated link to `peer` is up: start what waited for it.
    pub(super) fn peer_up(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, peer: NodeId) {
        self.guards.reached(peer);
        let Some(waiters) = self.waiting.remove(&peer) else {
            return;
        };
        let Some(link) = w.links.to_peer(&peer) else {
            return;
        };
        for waiter in waiters {
            match waiter {
                Waiter::Own(k) => self.send_create_own(cx, w, k, link),
                Waiter::Relay(k) => self.send_create_relay(cx, w, k, link),
            }
        }
    }

    /// We could not reach `peer` (dial or link handshake failed). `own`:
    /// the dial was made for our own circuits or guard links; only such a
    /// failure marks a guard unreachable (an EXTEND someone else sent
    /// never does).
    pub(super) fn peer_unreachable(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        peer: NodeId,
        own: bool,
    ) {
        if own {
            self.guards.unreachable(cx, peer);
        }
        let Some(waiters) = self.waiting.remove(&peer) else {
            return;
        };
        for waiter in waiters {
            match waiter {
                Waiter::Own(k) => self.close_own(cx, w, k, CloseReason::GuardUnreachable, true),
                Waiter::Relay(k) => self.drop_relay(cx, k, Fault::Local(Cause::ExtendFailed)),
            }
        }
    }

    /// `peer` vouched for a forged descriptor: it is no longer our guard
    /// or vanguard.
    /// Our circuits through it (even those still building) close without
    /// a retry: nothing more goes through a node we just condemned.
    pub(super) fn drop_liar(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, peer: NodeId) {
        self.guards.drop_liar(cx, peer);
        let through: Vec<u64> = self.own_through(peer);
        for k in through {
            self.close_own(cx, w, k, CloseReason::Protocol, true);
        }
    }

    /// Guard ids, in order.
    pub(super) fn guard_ids(&self) -> Vec<NodeId> {
        self.guards.ids()
    }

    /// Our guards as the driver persists them.
    pub(super) fn guard_records(&self) -> Vec<GuardRecord> {
        self.guards.records()
    }

    /// Restores persisted guards.
    pub(super) fn restore_guards(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        records: &[GuardRecord],
    ) -> usize {
        self.guards.restore(cx, w, records)
    }

    /// Our current second-hop set.
    pub(super) fn vanguards(&self) -> Vec<NodeId> {
        self.guards.vanguard_ids()
    }

    /// Where guard selection stands (read-only).
    pub(super) fn guard_status(
        &self,
        now: Millis,
        config: &Config,
        dir: &Directory,
        gossip: &Gossip,
    ) -> GuardStatus {
        self.guards.status(now, config, dir, gossip)
    }

    /// Timers: builds, probes, rotation, idle relayed circuits, guards,
    /// and building new circuits.
    pub(super) fn tick(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>) {
        let p = cx.config.circuits.clone();
        cx.timers
            .set(super::timers::Timer::CircuitTick, cx.now + p.tick_ms);
        self.tick_own(cx, w);
        // Relayed circuits nobody used for long.
        let idle = self.idle_relays(cx.now, p.relay_idle_ms);
        for k in idle {
            self.drop_relay(cx, k, Fault::Local(Cause::Timeout));
        }
        self.guards.maintain(cx, w);
        self.guards.client_links(cx, w);
        // Keep the wanted number of general circuits built or building.
        let live = self
            .own
            .values()
            .filter(|c| c.state() != CircuitState::Closing && c.purpose() == Purpose::General)
            .count();
        for _ in live..p.circuits_wanted {
            if !self.build(cx, w) {
                break;
            }
        }
    }

    /// A link-local id for a new circuit on `link`, from our half of the
    /// id space.
    fn alloc_circ_id(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &World<'_>,
        link: LinkId,
        r: CircRef,
    ) -> Option<u32> {
        let bit = own_side_bit(w.links.get(link)?.direction);
        for _ in 0..16 {
            let cid = (cx.rng.next_u64() as u32 & 0x7fff_ffff) | bit;
            let t = self.table(cx, link);
            if cid != 0 && !t.ids.contains_key(&cid) {
                t.ids.insert(cid, r);
                return Some(cid);
            }
        }
        None
    }

    /// Sends a CREATE carrying hop handshake message 1.
    fn send_create(cx: &mut Ctx<'_>, link: LinkId, cid: u32, msg1: Vec<u8>) {
        let msg = CircuitMsg::Create { handshake: msg1 }.encode();
        if let Some(cell) = msg
            .ok()
            .and_then(|m| Cell::control(cid, command::CREATE, &m))
        {
            cx.send(link, cell);
        }
    }

    fn send_destroy(cx: &mut Ctx<'_>, link: LinkId, cid: u32, fault: Fault) {
        if let Some(cell) = Cell::control(cid, command::DESTROY, &[fault.destroy_reason()]) {
            cx.send(link, cell);
        }
    }
}

/// Hooks for tests that drive a part directly.
#[cfg(test)]
impl Circuits {
    pub(in crate::node) fn on_link_ids(&self) -> Vec<LinkId> {
        self.on_link.keys().copied().collect()
    }
    /// (link, cid) entries whose circuit no longer exists.
    pub(in crate::node) fn stale_ids(&self) -> Vec<(LinkId, u32)> {
        let mut out = Vec::new();
        for (l, t) in &self.on_link {
            for (cid, r) in &t.ids {
                let ok = match r {
                    CircRef::Own(k) => self.own.contains_key(k),
                    CircRef::Prev(k) | CircRef::Next(k) => self.relays.contains_key(k),
                };
                if !ok {
                    out.push((*l, *cid));
                }
            }
        }
        out
    }
    pub(in crate::node) fn guard_unreachable(&self, id: NodeId) -> Option<bool> {
        self.guards.is_unreachable(id)
    }

    pub(in crate::node) fn maintain_guards(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>) {
        self.guards.maintain(cx, w);
    }
}

#[cfg(test)]
mod attacks;

#[cfg(test)]
mod floods;

#[cfg(test)]
mod tests;
