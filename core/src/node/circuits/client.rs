//! The client side: our own circuits, from the build (a typestate per
//! hop: handshake pending, extended, probed) to data and teardown.

use rand_core::RngCore;

use super::flow::Window;
use super::roles::AtClient;
use super::{
    CircRef, CircuitId, CircuitInfo, CircuitState, Circuits, CloseReason, Purpose, SendError,
    Waiter, World,
};
use crate::cell::{Cell, command};
use crate::circuit::{CircuitMsg, ClientHopHandshake, MAX_DATA_BYTES, MAX_EXTENDS};
use crate::descriptor::Descriptor;
use crate::identity::NodeId;
use crate::node::output::{Action, Ctx, RendIn};
use crate::node::{Event, LinkId};
use crate::onion::OnionClient;
use crate::path::Candidate;

/// Builds in a row that may fail to reach a vanguard before it is replaced.
const VANGUARD_MAX_FAILURES: u32 = 3;

/// Where a build is: which hop we are talking to.
#[derive(Debug)]
enum Build {
    /// Waiting for a link to the guard (or its CREATED).
    Linking,
    /// Handshake with hop `onion.hop_count()` under way.
    Handshake(Box<ClientHopHandshake>),
    /// Every hop answered; the probe is out.
    Probing,
    /// Done.
    Done,
}

#[derive(Debug)]
pub(super) struct OwnCircuit {
    path: Vec<Candidate>,
    /// The hops' checked descriptors (their keys, and what EXTEND carries).
    descriptors: Vec<Descriptor>,
    /// Link and circuit id towards the guard, once CREATE was sent.
    guard_link: Option<(LinkId, u32)>,
    onion: OnionClient,
    build: Build,
    state: CircuitState,
    created_ms: u64,
    built_ms: Option<u64>,
    /// Build deadline, rotation time or teardown time, by state.
    deadline_ms: u64,
    /// Outstanding probe: nonce and deadline.
    probe: Option<(u64, u64)>,
    window: Window,
    /// The CREATE was re-sent once after its link closed.
    retried: bool,
    purpose: Purpose,
}

impl OwnCircuit {
    pub(super) fn state(&self) -> CircuitState {
        self.state
    }

    pub(super) fn purpose(&self) -> Purpose {
        self.purpose
    }

    fn info(&self, k: u64) -> CircuitInfo {
        CircuitInfo {
            id: CircuitId(k),
            hops: self.path.iter().map(|h| h.id).collect(),
            state: self.state,
            created_ms: self.created_ms,
            built_ms: self.built_ms,
            purpose: self.purpose,
        }
    }
}

impl Circuits {
    /// Our circuits, oldest first.
    pub(in crate::node) fn list(&self) -> Vec<CircuitInfo> {
        self.own.iter().map(|(k, c)| c.info(*k)).collect()
    }

    /// What one of our circuits is for.
    pub(in crate::node) fn purpose(&self, id: CircuitId) -> Option<Purpose> {
        self.own.get(&id.0).map(|c| c.purpose)
    }

    /// Remaining flow-control credit of one of our circuits.
    pub(in crate::node) fn window(&self, id: CircuitId) -> Option<u32> {
        self.own.get(&id.0).map(|c| c.window.credit())
    }

    /// Closes one of our circuits with a purpose (never a general one:
    /// the rendezvous part asks only for its own).
    pub(in crate::node) fn close_purpose(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, k: u64) {
        if self
            .own
            .get(&k)
            .is_some_and(|c| c.purpose != Purpose::General)
        {
            self.close_own(cx, w, k, CloseReason::Done, true);
        }
    }

    /// Sends a probe over a built circuit.
    pub(in crate::node) fn probe(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        id: CircuitId,
    ) -> bool {
        let nonce = cx.rng.next_u64();
        let deadline = cx.now + cx.config.circuits.build_timeout_ms;
        let Some(c) = self.own.get_mut(&id.0) else {
            return false;
        };
        if c.state != CircuitState::Built || c.probe.is_some() {
            return false;
        }
        c.probe = Some((nonce, deadline));
        let last = c.path.len() - 1;
        self.send_own(cx, w, id.0, last, &CircuitMsg::Probe { nonce });
        true
    }

    /// Our built general circuits (not closing), with their hop counts,
    /// oldest first.
    pub(in crate::node) fn built(&self) -> Vec<(CircuitId, usize)> {
        self.own
            .iter()
            .filter(|(_, c)| c.state == CircuitState::Built && c.purpose == Purpose::General)
            .map(|(k, c)| (CircuitId(*k), c.path.len()))
            .collect()
    }

    /// Sends a search message to the last hop of a built circuit (not flow
    /// controlled: exits rate-limit them per circuit).
    pub(in crate::node) fn send_msg(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        id: CircuitId,
        msg: &CircuitMsg,
    ) -> bool {
        let Some(c) = self.own.get(&id.0) else {
            return false;
        };
        if c.state != CircuitState::Built {
            return false;
        }
        let last = c.path.len() - 1;
        self.send_own(cx, w, id.0, last, msg);
        true
    }

    /// Sends data to the last hop of a built circuit (flow controlled).
    pub(in crate::node) fn send_data(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        id: CircuitId,
        data: &[u8],
    ) -> Result<(), SendError> {
        if data.len() > MAX_DATA_BYTES {
            return Err(SendError::TooLarge);
        }
        let c = self.own.get_mut(&id.0).ok_or(SendError::NoCircuit)?;
        if c.state != CircuitState::Built {
            return Err(SendError::NoCircuit);
        }
        c.window.take()?;
        let last = c.path.len() - 1;
        let msg = CircuitMsg::Data {
            bytes: data.to_vec(),
        };
        self.send_own(cx, w, id.0, last, &msg);
        Ok(())
    }

    /// Our circuits whose path includes `peer`.
    pub(super) fn own_through(&self, peer: NodeId) -> Vec<u64> {
        self.own
            .iter()
            .filter(|(_, c)| c.path.iter().any(|h| h.id == peer))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Deadlines of our circuits: builds, probes, rotation.
    pub(super) fn tick_own(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>) {
        let now = cx.now;
        let tick_ms = cx.config.circuits.tick_ms;
        let keys: Vec<u64> = self.own.keys().copied().collect();
        for k in keys {
            let Some(c) = self.own.get_mut(&k) else {
                continue;
            };
            match c.state {
                CircuitState::Building if now >= c.deadline_ms => {
                    if c.onion.hop_count() == 0 {
                        // The guard never answered: it counts as unreachable.
                        let guard = c.path[0].id;
                        self.guards.unreachable(cx, guard);
                    }
                    self.close_own(cx, w, k, CloseReason::Timeout, true);
                }
                CircuitState::Built if c.probe.is_some_and(|(_, d)| now >= d) => {
                    self.close_own(cx, w, k, CloseReason::Timeout, true);
                }
                CircuitState::Built if now >= c.deadline_ms => {
                    c.state = CircuitState::Closing;
                    c.deadline_ms = now + 2 * tick_ms;
                }
                CircuitState::Closing if now >= c.deadline_ms => {
                    self.close_own(cx, w, k, CloseReason::Rotated, true);
                }
                _ => {}
            }
        }
    }

    /// Starts one general build. False if no path can be made now.
    pub(super) fn build(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>) -> bool {
        self.build_for(cx, w, Purpose::General, None).is_some()
    }

    /// Starts one build for `purpose`; with a `target` (a signed
    /// descriptor, checked here like an EXTEND's), the circuit ends there,
    /// after a full-length path of our own choosing (one hop shorter if
    /// that would pass [`MAX_EXTENDS`]). Returns the circuit's key, or None
    /// if no path can be made now or the target does not check.
    pub(in crate::node) fn build_for(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        purpose: Purpose,
        target: Option<&[u8]>,
    ) -> Option<u64> {
        let (path, descriptors) = match target {
            None => self.guards.path(cx, w, None)?,
            Some(bytes) => {
                let d = Descriptor::decode(bytes)
                    .ok()
                    .and_then(|u| w.dir.check(cx, u, w.descriptor).ok())
                    .filter(Descriptor::is_relay)?;
                let end = Candidate {
                    id: d.node_id(),
                    addr: d.address()?,
                    first_seen_ms: cx.now,
                };
                // The target may be this node itself (a loop through three
                // other relays): it is then both the relay at the end and
                // the client, two separate sides.
                let (mut path, mut descriptors) = self.guards.path(cx, w, Some(&end))?;
                if path.len() > usize::from(MAX_EXTENDS) {
                    path.pop();
                    descriptors.pop();
                }
                path.push(end);
                descriptors.push(d);
                (path, descriptors)
            }
        };
        let config = cx.config;
        let p = &config.circuits;
        let guard = path[0];
        let k = self.next_key;
        self.next_key += 1;
        cx.stats.circuits.attempted += 1;
        let now = cx.now;
        self.own.insert(
            k,
            OwnCircuit {
                path,
                descriptors,
                guard_link: None,
                onion: OnionClient::new(),
                build: Build::Linking,
                state: CircuitState::Building,
                created_ms: now,
                built_ms: None,
                deadline_ms: now + p.build_timeout_ms,
                probe: None,
                window: Window::new(p),
                retried: false,
                purpose,
            },
        );
        if !self.wait_for(cx, w, guard.id, guard.addr, Waiter::Own(k)) {
            self.close_own(cx, w, k, CloseReason::GuardUnreachable, true);
            return None;
        }
        Some(k)
    }

    /// The link a CREATE went out on closed before CREATED came back (the
    /// other end may have closed it for an unrelated reason at that very
    /// moment): send the CREATE once more, on a fresh link.
    pub(super) fn retry_own_create(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, k: u64) -> bool {
        let Some(c) = self.own.get_mut(&k) else {
            return false;
        };
        // Only once, only before the guard answered, and only through a
        // node that is still our guard.
        if c.retried || c.onion.hop_count() != 0 || !self.guards.ids().contains(&c.path[0].id) {
            return false;
        }
        c.retried = true;
        c.guard_link = None;
        c.build = Build::Linking;
        let guard = c.path[0];
        self.wait_for(cx, w, guard.id, guard.addr, Waiter::Own(k))
    }

    pub(super) fn send_create_own(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        link: LinkId,
    ) {
        let mut seed = [0u8; 32];
        cx.rng.fill_bytes(&mut seed);
        let Some(c) = self.own.get(&k) else {
            return;
        };
        if c.guard_link.is_some() {
            return;
        }
        let started = ClientHopHandshake::start(c.descriptors[0].x25519(), seed);
        let Some(cid) = self.alloc_circ_id(cx, w, link, CircRef::Own(k)) else {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        };
        let Ok((hs, msg1)) = started else {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        };
        if let Some(c) = self.own.get_mut(&k) {
            c.guard_link = Some((link, cid));
            c.build = Build::Handshake(Box::new(hs));
        }
        Circuits::send_create(cx, link, cid, msg1);
    }

    pub(super) fn on_own_created(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        cell: &Cell,
    ) {
        let handshake = match cell.link_payload().map(CircuitMsg::decode) {
            Ok(Ok(CircuitMsg::Created { handshake })) => handshake,
            _ => return self.close_own(cx, w, k, CloseReason::Protocol, true),
        };
        let Some(c) = self.own.get_mut(&k) else {
            return;
        };
        if c.onion.hop_count() != 0 {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        }
        self.hop_done(cx, w, k, &handshake);
    }

    /// The handshake with the next hop finished (msg2 in hand): add the hop
    /// and extend further or probe.
    fn hop_done(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>, k: u64, msg2: &[u8]) {
        let Some(c) = self.own.get_mut(&k) else {
            return;
        };
        let Build::Handshake(hs) = std::mem::replace(&mut c.build, Build::Linking) else {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        };
        let Ok(keys) = hs.finish(msg2) else {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        };
        if c.onion.add_hop(keys).is_err() {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        }
        let have = c.onion.hop_count();
        if have < c.path.len() {
            let key = *c.descriptors[have].x25519();
            let descriptor = c.descriptors[have].to_bytes();
            let mut seed = [0u8; 32];
            cx.rng.fill_bytes(&mut seed);
            let Ok((hs, msg1)) = ClientHopHandshake::start(&key, seed) else {
                return self.close_own(cx, w, k, CloseReason::Protocol, true);
            };
            c.build = Build::Handshake(Box::new(hs));
            let msg = CircuitMsg::Extend {
                descriptor,
                handshake: msg1,
            };
            self.send_own_as(cx, w, k, have - 1, &msg, command::RELAY_EARLY);
        } else {
            let nonce = cx.rng.next_u64();
            c.probe = Some((nonce, c.deadline_ms));
            c.build = Build::Probing;
            self.send_own(cx, w, k, have - 1, &CircuitMsg::Probe { nonce });
        }
    }

    /// Seals `msg` for hop `hop` of our circuit `k` and sends it.
    pub(super) fn send_own(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        hop: usize,
        msg: &CircuitMsg,
    ) {
        self.send_own_as(cx, w, k, hop, msg, command::RELAY);
    }

    /// As [`Circuits::send_own`], as a `RELAY` or `RELAY_EARLY` cell.
    pub(in crate::node) fn send_own_as(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        hop: usize,
        msg: &CircuitMsg,
        cmd: u8,
    ) {
        let Some(c) = self.own.get_mut(&k) else {
            return;
        };
        let Some((link, cid)) = c.guard_link else {
            return;
        };
        let Ok(payload) = msg.encode() else {
            return;
        };
        let Ok(body) = c.onion.seal_forward(hop, &payload) else {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        };
        if let Some(cell) = Cell::relay_as(cid, cmd, &body[..]) {
            cx.send(link, cell);
        }
    }

    pub(super) fn on_own_relay(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        k: u64,
        mut cell: Cell,
    ) {
        let now = cx.now;
        let Some(c) = self.own.get_mut(&k) else {
            return;
        };
        let Ok((hop, payload)) = c.onion.open_backward(cell.body_mut()) else {
            cx.stats.circuits.torn_down_bad_cell += 1;
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        };
        let last = c.path.len() - 1;
        let Some(msg) = CircuitMsg::decode(&payload).ok().and_then(AtClient::accept) else {
            return self.close_own(cx, w, k, CloseReason::Protocol, true);
        };
        let config = cx.config;
        let p = &config.circuits;
        match msg {
            AtClient::Extended { handshake }
                if c.state == CircuitState::Building
                    && matches!(c.build, Build::Handshake(_))
                    && hop + 1 == c.onion.hop_count() =>
            {
                self.hop_done(cx, w, k, &handshake);
            }
            AtClient::ProbeReply { nonce }
                if hop == last && c.probe.is_some_and(|(n, _)| n == nonce) =>
            {
                c.probe = None;
                if c.state == CircuitState::Building {
                    c.state = CircuitState::Built;
                    c.build = Build::Done;
                    c.built_ms = Some(now);
                    // Only general circuits rotate on a clock; the
                    // rendezvous part closes the others.
                    c.deadline_ms = match c.purpose {
                        Purpose::General => now + p.lifetime_ms,
                        _ => u64::MAX,
                    };
                    if c.purpose != Purpose::General {
                        let last = c.descriptors.len() - 1;
                        cx.out.act(Action::Rend(RendIn::Built {
                            circuit: k,
                            last_hop: c.descriptors[last].node_id(),
                            descriptor: c.descriptors[last].to_bytes(),
                        }));
                    }
                    cx.stats.circuits.built += 1;
                    if let Some(v) = c.path.get(1) {
                        self.guards.vanguard_reached(v.id);
                    }
                    let hops = c.path.iter().map(|h| h.id).collect();
                    let build_ms = now.saturating_sub(c.created_ms);
                    tracing::debug!(circuit = k, build_ms, "circuit built");
                    cx.event(Event::CircuitBuilt {
                        id: CircuitId(k),
                        hops,
                        build_ms,
                        probe: nonce,
                    });
                }
            }
            AtClient::Data { bytes } if hop == last && c.state != CircuitState::Building => {
                let ack = c.window.delivered(p);
                match c.purpose {
                    Purpose::Meet | Purpose::Join => {
                        cx.out.act(Action::Rend(RendIn::Data { circuit: k, bytes }));
                    }
                    Purpose::General => cx.event(Event::CircuitData {
                        id: CircuitId(k),
                        data: bytes,
                    }),
                    // An introduction circuit carries no data.
                    Purpose::Intro | Purpose::Introduce => {
                        return self.close_own(cx, w, k, CloseReason::Protocol, true);
                    }
                }
                if ack {
                    self.send_own(cx, w, k, last, &CircuitMsg::Sendme);
                }
            }
            AtClient::Sendme if hop == last => c.window.sendme(p),
            AtClient::SearchReply { bytes }
                if hop == last
                    && c.state != CircuitState::Building
                    && c.purpose == Purpose::General =>
            {
                cx.out.act(Action::AtClient(CircuitId(k), bytes));
            }
            AtClient::RendezvousReply { bytes }
                if hop == last
                    && c.state != CircuitState::Building
                    && c.purpose != Purpose::General =>
            {
                cx.out
                    .act(Action::Rend(RendIn::FromHop { circuit: k, bytes }));
            }
            _ => self.close_own(cx, w, k, CloseReason::Protocol, true),
        }
    }

    /// Ends one of our circuits; `tell` sends DESTROY to the guard.
    pub(super) fn close_own(
        &mut self,
        cx: &mut Ctx<'_>,
        _w: &mut World<'_>,
        k: u64,
        why: CloseReason,
        tell: bool,
    ) {
        let Some(c) = self.own.remove(&k) else {
            return;
        };
        self.unwait(Waiter::Own(k));
        if let Some((link, cid)) = c.guard_link {
            let known = self.forget_id(link, cid);
            cx.out.outbox_mut().drop_circuit(link, cid);
            if tell {
                if known {
                    self.expect_strays(cx, link);
                }
                Circuits::send_destroy(
                    cx,
                    link,
                    cid,
                    crate::node::Fault::Local(crate::node::Cause::Gone),
                );
            }
        }
        let built = c.built_ms.is_some();
        let reached = c.onion.hop_count();
        tracing::debug!(circuit = k, ?why, fault = %why.fault(), built, reached, "circuit closed");
        if !built
            && reached >= 1
            && matches!(
                why,
                CloseReason::Destroyed | CloseReason::Timeout | CloseReason::LinkDown
            )
            && let Some(hop) = c.path.get(reached)
        {
            self.guards
                .build_failed_at(cx, hop.id, reached == 1, VANGUARD_MAX_FAILURES);
        }
        if !built {
            cx.stats.circuits.failed += 1;
        }
        if c.purpose != Purpose::General {
            cx.out.act(Action::Rend(RendIn::Closed { circuit: k }));
        }
        cx.event(Event::CircuitClosed {
            id: CircuitId(k),
            hops: c.path.iter().map(|h| h.id).collect(),
            built,
            reached,
            reason: why,
        });
    }
}
