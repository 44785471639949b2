//! The relay side: circuits we carry for others, in the middle or as the
//! last hop. A relay holds no per-circuit buffer: a cell is passed on as it
//! arrives, so per-circuit memory is one [`RelayCircuit`] (a few hundred
//! bytes), and circuits per link, per peer and per node are capped, as are
//! CREATEs per second per link and per node.

use std::net::SocketAddr;

use rand_core::RngCore;

use super::flow::Window;
use super::roles::{AtLastHop, AtMiddle};
use super::{CircRef, Circuits, Observation, RelayCircuitId, SendError, Waiter, World};
use crate::cell::{Cell, command};
use crate::circuit::{CircuitMsg, MAX_DATA_BYTES, MAX_EXTENDS, RelayHopHandshake};
use crate::descriptor::Descriptor;
use crate::identity::NodeId;
use crate::node::fault::{Cause, Fault, Offence};
use crate::node::output::Ctx;
use crate::node::{Event, LinkId, Millis};
use crate::onion::{ForwardOutcome, RelayCrypto, RelayPosition};

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
    window: Window,
    /// RELAY_EARLY cells seen on this circuit (at most
    /// [`crate::circuit::MAX_EXTENDS`]).
    early: u8,
    /// As a rendezvous point: the circuit this one is spliced to.
    spliced: Option<u64>,
}

impl RelayCircuit {
    /// Neither extended nor extending: the last hop.
    fn is_last(&self) -> bool {
        self.next.is_none() && self.extending.is_none()
    }
}

impl Circuits {
    /// As the last hop of relayed circuit `k`, sends a search message to
    /// its client (not flow controlled: search messages are rate-limited
    /// per circuit instead).
    pub(in crate::node) fn relay_send_msg(&mut self, cx: &mut Ctx<'_>, k: u64, msg: &CircuitMsg) {
        if self.relays.get(&k).is_some_and(RelayCircuit::is_last) {
            self.send_backward(cx, k, msg);
        }
    }

    /// Circuits we currently relay.
    pub(in crate::node) fn relay_count(&self) -> usize {
        self.relays.len()
    }

    /// Relayed circuits idle since `relay_idle_ms`.
    pub(super) fn idle_relays(&self, now: Millis, idle_ms: Millis) -> Vec<u64> {
        self.relays
            .iter()
            .filter(|(_, r)| now >= r.last_used_ms + idle_ms)
            .map(|(k, _)| *k)
            .collect()
    }

    /// As the last hop of a circuit, sends data back to its client (flow
    /// controlled).
    pub(in crate::node) fn relay_send_data(
        &mut self,
        cx: &mut Ctx<'_>,
        id: RelayCircuitId,
        data: &[u8],
    ) -> Result<(), SendError> {
        if data.len() > MAX_DATA_BYTES {
            return Err(SendError::TooLarge);
        }
        let r = self.relays.get_mut(&id.0).ok_or(SendError::NoCircuit)?;
        if !r.is_last() {
            return Err(SendError::NoCircuit);
        }
        r.window.take()?;
        let msg = CircuitMsg::Data {
            bytes: data.to_vec(),
        };
        self.send_backward(cx, id.0, &msg);
        Ok(())
    }

    pub(super) fn on_create(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        link: LinkId,
        cid: u32,
        cell: &Cell,
    ) {
        let Some(l) = w.links.get(link) else {
            return;
        };
        // The peer must use its own half of the id space.
        if cid & 0x8000_0000 == super::own_side_bit(l.direction) {
            return cx.cut(link, Fault::Misbehaved(Offence::Malformed));
        }
        let Some(peer) = l.peer() else {
            return;
        };
        if !cx.config.relay {
            return Circuits::send_destroy(cx, link, cid, Fault::Local(Cause::NotARelay));
        }
        let prevs = |ids: &std::collections::BTreeMap<u32, CircRef>| {
            ids.values()
                .filter(|r| matches!(r, CircRef::Prev(_)))
                .count()
        };
        let on_link = self.on_link.get(&link).map_or(0, |t| prevs(&t.ids));
        let of_peer: usize = self
            .on_link
            .iter()
            .filter(|(l, _)| w.links.peer_of(**l) == Some(peer))
            .map(|(_, t)| prevs(&t.ids))
            .sum();
        let p = cx.config.circuits.clone();
        let busy = Fault::Local(Cause::Resources);
        if on_link >= p.max_circuits_per_link
            || of_peer >= p.max_circuits_per_peer
            || self.relays.len() >= p.max_relay_circuits
        {
            cx.stats.circuits.creates_refused += 1;
            return Circuits::send_destroy(cx, link, cid, busy);
        }
        // Rate: per link first (one peer cannot use up the node's budget),
        // then the node's own bound on handshake work. Refused with
        // DESTROY, the link stays (a relay-to-relay link carries many
        // clients' CREATEs in bursts); a flooder that does not read its
        // DESTROYs is cut by the control-queue limits.
        let now = cx.now;
        if !self
            .table(cx, link)
            .creates
            .take(now, p.creates_per_sec_per_link)
            || !self.creates.take(now, p.creates_per_sec)
        {
            cx.stats.circuits.creates_refused += 1;
            return Circuits::send_destroy(cx, link, cid, busy);
        }
        let msg1 = match cell.link_payload().map(CircuitMsg::decode) {
            Ok(Ok(CircuitMsg::Create { handshake })) => handshake,
            _ => return cx.cut(link, Fault::Misbehaved(Offence::Malformed)),
        };
        let handshake_seen = self.observing.then(|| msg1.clone());
        let mut seed = [0u8; 32];
        cx.rng.fill_bytes(&mut seed);
        let Ok((keys, msg2)) = RelayHopHandshake::respond(cx.identity, &msg1, seed) else {
            return Circuits::send_destroy(cx, link, cid, Fault::Misbehaved(Offence::Malformed));
        };
        let k = self.open_relayed(cx, link, cid, RelayCrypto::new(keys, true));
        if let Some(handshake) = handshake_seen {
            self.observations.push(Observation::Create {
                circuit: RelayCircuitId(k),
                at_ms: now,
                handshake,
            });
        }
        cx.stats.circuits.relay_created += 1;
        let msg = CircuitMsg::Created { handshake: msg2 }.encode();
        if let Some(c) = msg
            .ok()
            .and_then(|m| Cell::control(cid, command::CREATED, &m))
        {
            cx.send(link, c);
        }
    }

    pub(super) fn on_relay_forward(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        mut cell: Cell,
    ) {
        let now = cx.now;
        let Some(r) = self.relays.get_mut(&k) else {
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
                cx.stats.circuits.over_extend_budget += 1;
                return self.drop_relay(cx, k, Fault::Misbehaved(Offence::ExtendBudget));
            }
        }
        match r.crypto.process_forward(cell.body_mut()) {
            Ok(ForwardOutcome::Forward) => {
                let Some((link, cid)) = r.next else {
                    return self.drop_relay(cx, k, Fault::Misbehaved(Offence::Malformed));
                };
                self.pass_on(cx, k, true, link, cid, &cell);
            }
            Ok(ForwardOutcome::Recognised(payload)) => {
                if self.observing {
                    self.observations.push(Observation::Recognised {
                        circuit: RelayCircuitId(k),
                        at_ms: now,
                        early,
                        payload: payload.clone(),
                    });
                }
                let last = r.is_last();
                match CircuitMsg::decode(&payload) {
                    Ok(msg) if last => match AtLastHop::accept(msg, early) {
                        Some(m) => self.at_last_hop(cx, w, k, m),
                        None => self.drop_relay(cx, k, Fault::Misbehaved(Offence::Malformed)),
                    },
                    Ok(msg) => match AtMiddle::accept(msg) {
                        Some(AtMiddle::Probe { nonce }) => self.answer_probe(cx, k, nonce),
                        None => self.drop_relay(cx, k, Fault::Misbehaved(Offence::Malformed)),
                    },
                    Err(_) => self.drop_relay(cx, k, Fault::Misbehaved(Offence::Malformed)),
                }
            }
            Ok(ForwardOutcome::Unrecognised | ForwardOutcome::Splice) | Err(_) => {
                cx.stats.circuits.torn_down_bad_cell += 1;
                self.drop_relay(cx, k, Fault::Misbehaved(Offence::BadCell));
            }
        }
    }

    fn answer_probe(&mut self, cx: &mut Ctx<'_>, k: u64, nonce: u64) {
        cx.stats.circuits.probes_answered += 1;
        cx.event(Event::ProbeAnswered { nonce });
        self.send_backward(cx, k, &CircuitMsg::ProbeReply { nonce });
    }

    fn at_last_hop(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, k: u64, msg: AtLastHop) {
        let Some(r) = self.relays.get_mut(&k) else {
            return;
        };
        let config = cx.config;
        let p = &config.circuits;
        // A spliced circuit: data and flow control go to the other circuit
        // unread (they are sealed end to end), and the two ends run flow
        // control between themselves.
        let msg = match (msg, r.spliced) {
            (AtLastHop::Data { bytes }, Some(other)) => {
                cx.stats.circuits.spliced_cells += 1;
                self.touch(cx, other);
                return self.send_backward(cx, other, &CircuitMsg::Data { bytes });
            }
            (AtLastHop::Sendme, Some(other)) => {
                return self.send_backward(cx, other, &CircuitMsg::Sendme);
            }
            // Spliced, a circuit carries the session and probes, nothing
            // else: no extending past the meeting, no new role.
            (AtLastHop::Probe { nonce }, Some(_)) => return self.answer_probe(cx, k, nonce),
            (_, Some(_)) => return self.drop_relay(cx, k, Fault::Misbehaved(Offence::Malformed)),
            (msg, None) => msg,
        };
        match msg {
            AtLastHop::Extend {
                descriptor,
                handshake,
            } => {
                let prev = r.prev.0;
                self.on_extend(cx, w, k, prev, &descriptor, handshake);
            }
            AtLastHop::Probe { nonce } => self.answer_probe(cx, k, nonce),
            AtLastHop::Rendezvous { bytes } => {
                cx.out.act(crate::node::output::Action::Rend(
                    crate::node::output::RendIn::AtHop { circuit: k, bytes },
                ));
            }
            AtLastHop::Data { bytes } => {
                cx.stats.circuits.relay_data_received += 1;
                let ack = r.window.delivered(p);
                cx.event(Event::RelayData {
                    circuit: RelayCircuitId(k),
                    data: bytes,
                });
                if ack {
                    self.send_backward(cx, k, &CircuitMsg::Sendme);
                }
            }
            AtLastHop::Sendme => r.window.sendme(p),
            AtLastHop::Search { bytes } => {
                cx.out.act(crate::node::output::Action::AtExit(k, bytes))
            }
        }
    }

    /// As the last hop, extend circuit `k` (arrived on link `prev`) to the
    /// relay `descriptor` describes. The address dialled is the one that
    /// relay signed (or a link to it is reused), under the normal dial
    /// policy; nothing in the EXTEND is used unchecked.
    pub(in crate::node) fn on_extend(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        prev: LinkId,
        descriptor: &[u8],
        msg1: Vec<u8>,
    ) {
        let failed = Fault::Local(Cause::ExtendFailed);
        let checked = Descriptor::decode(descriptor)
            .ok()
            .and_then(|u| w.dir.check(cx, u, w.descriptor).ok());
        let Some(d) = checked else {
            cx.stats.descriptors_refused += 1;
            return self.drop_relay(cx, k, failed);
        };
        let next = d.node_id();
        let prev_peer = w.links.peer_of(prev);
        if !d.is_relay() || next == cx.identity.node_id() || Some(next) == prev_peer {
            return self.drop_relay(cx, k, failed);
        }
        // Keep the newest checked descriptor we hold for it (ours may be
        // newer than the client's copy) and dial where it says.
        w.dir.remember(cx.now, d, None);
        let addr = w.dir.get(&next).and_then(|kn| {
            kn.verified_addr
                .or(kn.descriptor().and_then(Descriptor::address))
        });
        let Some(addr) = addr else {
            return self.drop_relay(cx, k, failed);
        };
        if let Some(r) = self.relays.get_mut(&k) {
            r.extending = Some(Extending {
                next,
                addr,
                msg1,
                retried: false,
            });
        }
        if !self.wait_for(cx, w, next, addr, Waiter::Relay(k)) {
            self.drop_relay(cx, k, failed);
        }
    }

    /// As [`Circuits::retry_own_create`], for a relay's CREATE to the next
    /// hop.
    pub(super) fn retry_extend(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, k: u64) -> bool {
        let Some(r) = self.relays.get_mut(&k) else {
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
        self.wait_for(cx, w, next, addr, Waiter::Relay(k))
    }

    pub(super) fn send_create_relay(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        link: LinkId,
    ) {
        let Some(r) = self.relays.get(&k) else {
            return;
        };
        let Some(Extending { msg1, .. }) = r.extending.clone() else {
            return;
        };
        if r.next.is_some() || r.prev.0 == link {
            return self.drop_relay(cx, k, Fault::Local(Cause::ExtendFailed));
        }
        let Some(cid) = self.alloc_circ_id(cx, w, link, CircRef::Next(k)) else {
            return self.drop_relay(cx, k, Fault::Local(Cause::Resources));
        };
        if let Some(r) = self.relays.get_mut(&k) {
            r.next = Some((link, cid));
        }
        Circuits::send_create(cx, link, cid, msg1);
    }

    pub(super) fn on_relay_created(&mut self, cx: &mut Ctx<'_>, k: u64, cell: &Cell) {
        let Some(r) = self.relays.get_mut(&k) else {
            return;
        };
        r.last_used_ms = cx.now;
        let handshake = match cell.link_payload().map(CircuitMsg::decode) {
            Ok(Ok(CircuitMsg::Created { handshake })) if r.extending.is_some() => handshake,
            _ => return self.drop_relay(cx, k, Fault::Misbehaved(Offence::Malformed)),
        };
        r.extending = None;
        r.crypto.set_position(RelayPosition::Middle);
        cx.stats.circuits.relay_extended += 1;
        self.send_backward(cx, k, &CircuitMsg::Extended { handshake });
    }

    pub(super) fn on_relay_backward(&mut self, cx: &mut Ctx<'_>, k: u64, mut cell: Cell) {
        let Some(r) = self.relays.get_mut(&k) else {
            return;
        };
        r.last_used_ms = cx.now;
        if r.crypto.relay_backward(cell.body_mut()).is_err() {
            return self.drop_relay(cx, k, Fault::Misbehaved(Offence::BadCell));
        }
        let (link, cid) = r.prev;
        self.pass_on(cx, k, false, link, cid, &cell);
    }

    /// Sends a relayed cell's body (our layer already handled) on as a
    /// RELAY cell on `link`, circuit `cid`.
    fn pass_on(
        &mut self,
        cx: &mut Ctx<'_>,
        k: u64,
        forward: bool,
        link: LinkId,
        cid: u32,
        cell: &Cell,
    ) {
        if self.observing {
            self.observations.push(Observation::Relayed {
                circuit: RelayCircuitId(k),
                at_ms: cx.now,
                forward,
                early: cell.command() == command::RELAY_EARLY,
                body: cell.body().to_vec(),
            });
        }
        cx.stats.circuits.cells_relayed += 1;
        if let Some(c) = Cell::relay_as(cid, cell.command(), cell.body()) {
            cx.send(link, c);
        }
    }

    /// Seals `msg` as this hop and sends it towards the client.
    fn send_backward(&mut self, cx: &mut Ctx<'_>, k: u64, msg: &CircuitMsg) {
        let Some(r) = self.relays.get_mut(&k) else {
            return;
        };
        let Ok(payload) = msg.encode() else {
            return;
        };
        let Ok(body) = r.crypto.seal_backward(&payload) else {
            return self.drop_relay(cx, k, Fault::Misbehaved(Offence::Malformed));
        };
        let (link, cid) = r.prev;
        if let Some(c) = Cell::relay(cid, &body[..]) {
            cx.send(link, c);
        }
    }

    /// A relayed circuit whose client side is `(link, cid)` and which has
    /// no next hop yet (a last hop about to be asked to extend), as if a
    /// CREATE and one EXTEND had passed. Returns its key.
    #[cfg(test)]
    pub(in crate::node) fn plant_last_hop(&mut self, cx: &Ctx<'_>, link: LinkId, cid: u32) -> u64 {
        let crypto = RelayCrypto::new(crate::onion::HopKeys::derive(&[4; 32]), true);
        let k = self.open_relayed(cx, link, cid, crypto);
        if let Some(r) = self.relays.get_mut(&k) {
            r.early = 1;
        }
        k
    }

    /// Opens a relayed circuit whose client side is `(link, cid)`: no next
    /// hop yet, a full window. Returns its key.
    fn open_relayed(&mut self, cx: &Ctx<'_>, link: LinkId, cid: u32, crypto: RelayCrypto) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        self.relays.insert(
            k,
            RelayCircuit {
                prev: (link, cid),
                next: None,
                crypto,
                extending: None,
                last_used_ms: cx.now,
                window: Window::new(&cx.config.circuits),
                early: 0,
                spliced: None,
            },
        );
        self.table(cx, link).ids.insert(cid, CircRef::Prev(k));
        k
    }

    /// Whether relayed circuit `k` is held.
    #[cfg(test)]
    pub(in crate::node) fn relays_circuit(&self, k: u64) -> bool {
        self.relays.contains_key(&k)
    }

    /// As a rendezvous point, splices relayed circuits `a` and `b`: both
    /// must end here and be spliced to nothing yet. From now on each one's
    /// data and flow-control messages go down the other.
    pub(in crate::node) fn splice(&mut self, a: u64, b: u64) -> bool {
        let free = |r: Option<&RelayCircuit>| r.is_some_and(|r| r.is_last() && r.spliced.is_none());
        if a == b || !free(self.relays.get(&a)) || !free(self.relays.get(&b)) {
            return false;
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(r) = self.relays.get_mut(&x) {
                r.spliced = Some(y);
            }
        }
        true
    }

    /// As the last hop of relayed circuit `k`, sends a rendezvous message
    /// to its client.
    pub(in crate::node) fn relay_send_rendezvous(
        &mut self,
        cx: &mut Ctx<'_>,
        k: u64,
        bytes: Vec<u8>,
    ) {
        self.relay_send_msg(cx, k, &CircuitMsg::RendezvousReply { bytes });
    }

    fn touch(&mut self, cx: &Ctx<'_>, k: u64) {
        if let Some(r) = self.relays.get_mut(&k) {
            r.last_used_ms = cx.now;
        }
    }

    /// Forgets a relayed circuit and sends DESTROY both ways (to whichever
    /// sides still know it). A circuit spliced to it goes too.
    pub(super) fn drop_relay(&mut self, cx: &mut Ctx<'_>, k: u64, fault: Fault) {
        let Some(r) = self.relays.remove(&k) else {
            return;
        };
        cx.out.act(crate::node::output::Action::Rend(
            crate::node::output::RendIn::RelayGone { circuit: k },
        ));
        if let Some(other) = r.spliced {
            if let Some(o) = self.relays.get_mut(&other) {
                o.spliced = None;
            }
            self.drop_relay(cx, other, Fault::Local(Cause::Gone));
        }
        tracing::debug!(relayed = k, %fault, "relayed circuit dropped");
        if r.extending.is_some() {
            self.unwait(Waiter::Relay(k));
        }
        for (link, cid) in [Some(r.prev), r.next].into_iter().flatten() {
            cx.out.outbox_mut().drop_circuit(link, cid);
            if self.forget_id(link, cid) {
                self.expect_strays(cx, link);
                Circuits::send_destroy(cx, link, cid, fault);
            }
        }
    }
}
