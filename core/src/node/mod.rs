//! The node: veil's protocol as one deterministic, sans-IO state machine.
//!
//! The daemon drives it over QUIC and the simulator drives thousands of them
//! over simulated links; both go through exactly this API, in the style of
//! quinn-proto:
//!
//! - **Inputs** (`handle_*`): a link came up ([`Node::handle_link_up`]),
//!   bytes arrived on it ([`Node::handle_link_data`]), it went down
//!   ([`Node::handle_link_down`]), cells were written
//!   ([`Node::handle_link_sent`]), a dial failed
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
//! # Parts
//!
//! `Node` only routes. Each part owns its state and gets a narrow context
//! (the time, the configuration, the RNG, an outbox for cells, events and
//! [`output::Action`]s, and read-only views of what it needs); a part never
//! reaches into another part's state, and parts never call each other:
//!
//! - [`links`]: admission, handshakes, rate limits, one link per peer,
//!   eviction;
//! - [`dialer`]: one dial policy for seeds, gossip, guards and extends;
//! - [`directory`]: descriptors held, and when one is trusted;
//! - [`gossip`]: Brahms peer sampling;
//! - [`circuits`]: ids and dispatch, client side, relay side, guards, flow
//!   control, and the messages each circuit role accepts;
//! - [`outbox`] and [`output`]: what leaves the node, fairly and bounded;
//! - [`timers`]: every deadline in one table; [`fault`]: whose fault a cut
//!   or a teardown was.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

mod addr;
mod api;
mod circuits;
mod config;
mod dialer;
mod directory;
mod fault;
mod gossip;
mod inspect;
mod links;
mod outbox;
mod output;
mod rendezvous;
mod search;
mod timers;
mod transfer;

pub use addr::{network_of, source_of};
pub use api::{Direction, Event, LinkId, Millis, PeerInfo, Stats, Transmit};
pub use circuits::{
    CircuitId, CircuitInfo, CircuitState, CircuitStats, CloseReason, GuardRecord, GuardStatus,
    Observation, Purpose, RelayCircuitId, SendError,
};
pub use config::{Config, ValidConfig};
pub use fault::{Cause, Fault, Offence};
pub use rendezvous::{ConnectError, RendezvousParams, RendezvousStats, SessionEnd, SessionId};
pub use search::{SearchError, SearchId, SearchParams, SearchStats};
pub use transfer::{DownloadId, DownloadStartError, TransferParams, TransferStats};

use crate::cell::Cell;
use crate::circuit::CircuitMsg;
use crate::descriptor::{Descriptor, flags};
use crate::identity::{NodeId, NodeIdentity};
use crate::link::LinkMsg;
use crate::link::{CheckParams, HandshakeError};
use crate::rendezvous::FromHop;
use crate::sampling::Brahms;
use circuits::{Circuits, World};
use dialer::Dialer;
use directory::Directory;
use gossip::{Gossip, GossipView};
use links::{Incoming, Links};
use output::{Action, Ctx, Out};
use search::SearchView;
use timers::{Timer, TimerTable};

/// The veil node state machine. See the module docs for the call order.
#[derive(Debug)]
pub struct Node {
    identity: NodeIdentity,
    config: Config,
    rng: ChaCha20Rng,
    descriptor: Descriptor,
    links: Links,
    dialer: Dialer,
    dir: Directory,
    gossip: Gossip,
    circ: Circuits,
    search: search::Search,
    rend: rendezvous::Rendezvous,
    transfer: transfer::Transfers,
    out: Out,
    stats: Stats,
    timers: TimerTable,
    /// The latest `now` seen by any input.
    now_ms: Millis,
}

/// The parts, borrowed apart from the context.
struct Parts<'a> {
    links: &'a mut Links,
    dialer: &'a mut Dialer,
    dir: &'a mut Directory,
    gossip: &'a mut Gossip,
    circ: &'a mut Circuits,
    search: &'a mut search::Search,
    rend: &'a mut rendezvous::Rendezvous,
    transfer: &'a mut transfer::Transfers,
    descriptor: &'a Descriptor,
}

/// The context and the circuit part's view of the others, from one
/// `&mut Node`.
macro_rules! circuit_parts {
    ($node:expr, $cx:ident, $w:ident, $circ:ident) => {
        let (mut $cx, p) = $node.split();
        let $circ = p.circ;
        let mut $w = World {
            links: &*p.links,
            dialer: p.dialer,
            dir: p.dir,
            gossip: &*p.gossip,
            descriptor: p.descriptor,
        };
    };
}

// After the macro, which they use.
mod commands;
#[cfg(test)]
mod tests;

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
        let mut timers = TimerTable::default();
        timers.set(Timer::Round, first_round);
        timers.set(Timer::Bootstrap, now);
        timers.set(
            Timer::Refresh,
            descriptor.timestamp_ms() + config.descriptor_refresh_ms,
        );
        // Circuit housekeeping starts at the first timeout.
        timers.set(Timer::CircuitTick, 0);
        Node {
            out: Out::new(&config),
            identity,
            config,
            rng,
            descriptor,
            links: Links::default(),
            dialer: Dialer::default(),
            dir,
            gossip: Gossip::new(brahms),
            circ: Circuits::default(),
            search: search::Search::default(),
            rend: rendezvous::Rendezvous::default(),
            transfer: transfer::Transfers::default(),
            stats: Stats::default(),
            timers,
            now_ms: now,
        }
    }

    // ---- inputs -------------------------------------------------------

    /// A transport link is open. `binding` is the transport's channel-binding
    /// value (identical on both ends of a genuine connection).
    pub fn handle_link_up(
        &mut self,
        now: Millis,
        link: LinkId,
        direction: Direction,
        remote: std::net::SocketAddr,
        binding: [u8; 32],
    ) {
        self.clamp(now);
        if (direction == Direction::Inbound && !self.config.relay) || self.links.contains(link) {
            // Client-only: we link to our guards and nobody links to us.
            self.out.event(Event::Close { link });
            return;
        }
        let (mut cx, p) = self.split();
        let expected = match direction {
            Direction::Outbound => p.dialer.link_opened(&mut cx, link, remote).expected,
            Direction::Inbound => None,
        };
        let admitted = p.links.admit(
            &mut cx,
            link,
            direction,
            remote,
            expected,
            binding,
            p.descriptor,
        );
        if !admitted {
            p.dialer.link_settled(link);
        }
        self.settle();
    }

    /// Stream bytes arrived on a link.
    pub fn handle_link_data(&mut self, now: Millis, link: LinkId, data: &[u8]) {
        let now = self.clamp(now);
        let Some(cells) = self.links.read(link, data) else {
            return;
        };
        // Link-level and control cells only: relay cells are bounded per
        // circuit (see `links.rs`).
        let rate = self.config.max_link_cells_per_sec;
        for cell in cells {
            if !self.links.take_token(now, link, &cell, rate) {
                self.cut(link, Fault::Misbehaved(Offence::CellFlood));
                self.settle();
                return;
            }
            self.handle_cell(link, cell);
            self.settle();
            if !self.links.contains(link) {
                return;
            }
        }
    }

    /// A link closed (by the peer or the transport).
    pub fn handle_link_down(&mut self, now: Millis, link: LinkId) {
        self.clamp(now);
        self.link_down(link);
        self.settle();
    }

    /// The driver wrote `cells` of the cells [`Node::poll_transmit`] gave it
    /// for `link` (to the socket, or as far as the transport accepts them):
    /// that much room opens for the link's queue.
    pub fn handle_link_sent(&mut self, now: Millis, link: LinkId, cells: usize) {
        self.clamp(now);
        self.out.outbox_mut().sent(link, cells);
    }

    /// A dial requested by [`Event::Connect`] failed.
    pub fn handle_connect_failed(&mut self, now: Millis, addr: std::net::SocketAddr) {
        self.clamp(now);
        self.stats.dials_failed += 1;
        circuit_parts!(self, cx, w, circ);
        if let Some(d) = w.dialer.connect_failed(&mut cx, addr)
            && let Some(id) = d.expected
        {
            circ.peer_unreachable(&mut cx, &mut w, id, d.own);
            self.gossip.unreachable(id, &self.dir);
        }
        self.settle();
    }

    /// A timer fired (call at [`Node::poll_timeout`] or later).
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.clamp(now);
        // Stalled handshakes (counted as failed when their link goes).
        for t in self
            .timers
            .due_of(now, |t| matches!(t, Timer::Handshake(_)))
        {
            if let Timer::Handshake(link) = t {
                tracing::trace!(?link, "handshake timed out");
                self.close(link);
            }
        }
        {
            let (mut cx, p) = self.split();
            p.dialer.expire(&mut cx);
        }
        // Bootstrap until a peer is linked.
        if self.timers.due(Timer::Bootstrap, now)
            && self.dialer.bootstrap_pending(&self.config, &self.links)
        {
            self.timers
                .set(Timer::Bootstrap, now + self.config.bootstrap_retry_ms);
            let (mut cx, p) = self.split();
            p.dialer.bootstrap(&mut cx);
        }
        if self.timers.due(Timer::Refresh, now) {
            self.descriptor = sign_own(&self.identity, &self.config, now);
            self.timers.set(
                Timer::Refresh,
                self.descriptor.timestamp_ms() + self.config.descriptor_refresh_ms,
            );
        }
        if self.timers.due(Timer::Round, now) {
            self.timers.set(Timer::Round, now + self.config.round_ms);
            self.run_round();
            // Links the round found dead go before circuits use them.
            self.settle();
        }
        if self.timers.due(Timer::CircuitTick, now) {
            circuit_parts!(self, cx, w, circ);
            circ.tick(&mut cx, &mut w);
        }
        if self.timers.due(Timer::Rendezvous, now) {
            self.timers.clear(Timer::Rendezvous);
            let (mut cx, p) = self.split();
            p.rend.tick(&mut cx);
        }
        if self.timers.due(Timer::Puzzle, now) {
            self.timers.clear(Timer::Puzzle);
            let (mut cx, p) = self.split();
            p.rend.solve_step(&mut cx);
        }
        if self.timers.due(Timer::Transfer, now) {
            self.timers.clear(Timer::Transfer);
            let (mut cx, p) = self.split();
            p.transfer.tick(&mut cx);
        }
        if self.timers.due(Timer::Search, now) {
            let have = !self.circ.built().is_empty();
            let (mut cx, p) = self.split();
            let due = p.search.tick(&mut cx, have);
            for bytes in due {
                self.send_search(bytes);
            }
        }
        self.settle();
    }

    // ---- outputs ------------------------------------------------------

    /// The next cell to send.
    ///
    /// Cells come per link in turn, and per circuit in turn within a link;
    /// a link gets at most [`Config::max_link_in_flight_cells`] cells until
    /// the driver reports them written with [`Node::handle_link_sent`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll_transmit()
    }

    /// The next request or notice for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.poll_event()
    }

    /// When to call [`Node::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let bootstrap = self.dialer.bootstrap_pending(&self.config, &self.links);
        self.timers.next(|t| *t != Timer::Bootstrap || bootstrap)
    }

    // ---- routing ------------------------------------------------------

    /// Every input's time, clamped once at the entry point: the node's
    /// clock never runs backwards (a wall clock stepped back is read as no
    /// time passing), so no `now - earlier` can underflow.
    fn clamp(&mut self, now: Millis) -> Millis {
        self.now_ms = self.now_ms.max(now);
        self.out.set_now(self.now_ms, &self.config);
        self.now_ms
    }

    /// The context and the parts, borrowed apart.
    fn split(&mut self) -> (Ctx<'_>, Parts<'_>) {
        let Node {
            identity,
            config,
            rng,
            descriptor,
            links,
            dialer,
            dir,
            gossip,
            circ,
            search,
            rend,
            transfer,
            out,
            stats,
            timers,
            now_ms,
        } = self;
        out.set_now(*now_ms, config);
        (
            Ctx {
                now: *now_ms,
                config,
                identity,
                rng,
                out,
                stats,
                timers,
            },
            Parts {
                links,
                dialer,
                dir,
                gossip,
                circ,
                search,
                rend,
                transfer,
                descriptor,
            },
        )
    }

    /// One cell on `link`, through the link layer to its part.
    fn handle_cell(&mut self, link: LinkId, cell: Cell) {
        let check = CheckParams {
            now_ms: self.now_ms,
            max_age_ms: self.config.descriptor_max_age_ms,
            pow: self.config.pow,
        };
        let (mut cx, p) = self.split();
        match p.links.on_cell(&mut cx, link, cell, check) {
            Incoming::Handshake | Incoming::Nothing => {}
            Incoming::Established(peer) => self.link_established(link, *peer),
            Incoming::Failed(error) => {
                cx.stats.handshakes_failed += 1;
                tracing::debug!(?link, %error, "link handshake failed");
                if let HandshakeError::WrongPeer { expected, .. } = &error
                    && let Some(l) = p.links.get(link)
                {
                    p.dialer.wrong_peer(&cx, l.remote, *expected);
                }
                cx.event(Event::HandshakeFailed { link, error });
                self.close(link);
            }
            Incoming::Circuit(cell) => {
                let mut w = World {
                    links: &*p.links,
                    dialer: p.dialer,
                    dir: p.dir,
                    gossip: &*p.gossip,
                    descriptor: p.descriptor,
                };
                p.circ.on_cell(&mut cx, &mut w, link, cell);
            }
            Incoming::Msg(peer, LinkMsg::Walk(bytes)) => {
                let v = SearchView {
                    links: &*p.links,
                    dir: &*p.dir,
                };
                p.search.on_walk(&mut cx, &v, link, peer, &bytes);
            }
            Incoming::Msg(_, LinkMsg::WalkReply(bytes)) => {
                p.search.on_walk_reply(&mut cx, link, &bytes);
            }
            Incoming::Msg(peer, msg) => {
                let guards = p.circ.guard_ids();
                let view = GossipView {
                    links: &*p.links,
                    dialer: p.dialer,
                    dir: p.dir,
                    descriptor: p.descriptor,
                    guards: &guards,
                };
                p.gossip.on_msg(&mut cx, view, link, peer, msg);
            }
            Incoming::Malformed => cx.cut(link, Fault::Misbehaved(Offence::Malformed)),
        }
    }

    fn link_established(&mut self, link: LinkId, peer: Descriptor) {
        let me = self.node_id();
        let peer_id = peer.node_id();
        let Some((direction, remote)) = self.links.get(link).map(|l| (l.direction, l.remote))
        else {
            return;
        };
        {
            let (mut cx, p) = self.split();
            p.links.authenticated(&mut cx, link, peer_id);
            p.dialer.link_settled(link);
            match direction {
                Direction::Outbound => cx.stats.handshakes_ok_outbound += 1,
                Direction::Inbound => cx.stats.handshakes_ok_inbound += 1,
            }
        }
        tracing::trace!(?link, ?direction, "link authenticated");
        if peer_id == me {
            // We dialled ourselves (a seed list that includes us).
            self.dialer.reached(remote, None);
            self.close(link);
            return;
        }
        if direction == Direction::Outbound {
            self.dialer.reached(remote, Some(peer_id));
        }
        let guards = self.circ.guard_ids();
        let evict = {
            let (cx, p) = self.split();
            let circ = &*p.circ;
            p.links
                .make_room(&cx, link, &guards, |l| circ.carries(l), cx.out.outbox())
        };
        for v in evict {
            self.close(v);
            if v == link {
                return;
            }
        }
        self.out.event(Event::LinkUp {
            link,
            peer: peer_id,
            addr: remote,
            direction,
        });
        let verified = (direction == Direction::Outbound).then_some(remote);
        self.dir.remember(self.now_ms, peer, verified);
        let circ = &self.circ;
        let (now, settle) = (self.now_ms, self.config.handshake_timeout_ms);
        let (loser, kept) = self
            .links
            .keep_one(me, link, peer_id, now, settle, |l| circ.carries(l));
        if let Some(l) = loser {
            self.close(l);
        }
        if kept {
            let (mut cx, p) = self.split();
            p.gossip.peer_linked(&mut cx, link, peer_id, p.descriptor);
        }
        circuit_parts!(self, cx, w, circ);
        circ.peer_up(&mut cx, &mut w, peer_id);
    }

    /// Forgets a link (closed by either side), and what depended on it.
    fn link_down(&mut self, link: LinkId) {
        self.out.outbox_mut().close(link);
        self.gossip.link_down(link);
        self.search.link_down(link);
        let removed = {
            let (mut cx, p) = self.split();
            p.links.remove(&mut cx, link)
        };
        let Some(l) = removed else {
            return;
        };
        let dial = self.dialer.link_settled(link);
        if l.peer().is_none() {
            if l.is_handshaking() {
                self.stats.handshakes_failed += 1;
            }
            // The node we dialled cannot be reached.
            if let Some(d) = dial
                && let Some(id) = d.expected
            {
                circuit_parts!(self, cx, w, circ);
                circ.peer_unreachable(&mut cx, &mut w, id, d.own);
            }
        }
        circuit_parts!(self, cx, w, circ);
        circ.link_down(&mut cx, &mut w, link);
    }

    fn close(&mut self, link: LinkId) {
        self.link_down(link);
        self.out.event(Event::Close { link });
    }

    /// Cuts `link` for `fault`; a misbehaving peer is counted.
    fn cut(&mut self, link: LinkId, fault: Fault) {
        if !self.links.contains(link) {
            return;
        }
        if fault.is_peer_misbehaviour() {
            self.stats.peers_penalised += 1;
        }
        tracing::debug!(?link, %fault, "link cut");
        self.close(link);
    }

    /// Routes the parts' actions, then sheds load while the node's queues
    /// are over [`Config::max_queued_cells_total`] (the longest queue goes,
    /// one at a time: a circuit's is destroyed, a link's control queue
    /// means its peer does not read), then trims the directory.
    fn settle(&mut self) {
        loop {
            if let Some(a) = self.out.next_action() {
                self.route(a);
                continue;
            }
            if self.out.outbox().total() > self.config.max_queued_cells_total {
                match self.out.outbox().largest() {
                    Some(outbox::Victim::Circuit(l, c)) => self.route(Action::OverQueue(l, c)),
                    Some(outbox::Victim::Link(l)) if self.links.contains(l) => {
                        self.cut(l, Fault::Misbehaved(Offence::NotReading))
                    }
                    Some(outbox::Victim::Link(l)) => self.out.outbox_mut().close(l),
                    None => break,
                }
                continue;
            }
            break;
        }
        if self.dir.over_limit() {
            self.trim_directory();
        }
        if self.transfer_work() {
            self.settle();
        }
    }

    /// The transfer part's requests that need other parts: searches for
    /// providers, sessions to them, and framed bytes to send as the
    /// sessions' windows allow. True if anything was done.
    fn transfer_work(&mut self) -> bool {
        let mut did = false;
        let due = {
            let (cx, p) = self.split();
            p.transfer.searches_due(&cx)
        };
        for (d, id) in due {
            match self.start_search(crate::search::Query::Content(id)) {
                Ok(s) => {
                    self.transfer.searching(d, s);
                    did = true;
                }
                Err(_) => self.transfer.search_failed(d),
            }
        }
        let connects = {
            let (mut cx, p) = self.split();
            p.transfer.connects_due(&mut cx)
        };
        for (d, provider) in connects {
            let service = provider.service();
            let intros = provider.record().intro_points.clone();
            let (mut cx, p) = self.split();
            if let Ok(session) = p.rend.connect(&mut cx, service, intros, true) {
                p.transfer.connecting(d, session, provider);
                if self.timers.get(Timer::Rendezvous).is_none() {
                    self.timers.set(Timer::Rendezvous, self.now_ms);
                }
            }
            did = true;
        }
        for session in self.transfer.sending() {
            while let Some(k) = self.rend.session_circuit(session) {
                if self.circ.window(CircuitId(k)).unwrap_or(0) == 0 {
                    break;
                }
                let Some(chunk) = self.transfer.poll_chunk(session) else {
                    break;
                };
                let Some(sealed) = self.rend.seal(self.now_ms, session, &chunk) else {
                    break;
                };
                circuit_parts!(self, cx, w, circ);
                let _ = circ.send_data(&mut cx, &mut w, CircuitId(k), &sealed);
                did = true;
            }
        }
        // The schedulers' next deadline.
        let research = self.config.transfer.research_ms;
        match self.transfer.poll_timeout(self.now_ms, research) {
            Some(t) => self.timers.set(Timer::Transfer, t.max(self.now_ms)),
            None => self.timers.clear(Timer::Transfer),
        }
        did && self.out.has_actions()
    }

    fn route(&mut self, a: Action) {
        match a {
            Action::Cut(link, fault) => self.cut(link, fault),
            Action::OverQueue(link, cid) => {
                circuit_parts!(self, cx, w, circ);
                circ.over_queue(&mut cx, &mut w, link, cid);
            }
            Action::AtExit(k, bytes) => {
                let (mut cx, p) = self.split();
                let v = SearchView {
                    links: &*p.links,
                    dir: &*p.dir,
                };
                p.search.at_exit(&mut cx, &v, k, &bytes);
            }
            Action::AtClient(id, bytes) => {
                let (mut cx, p) = self.split();
                p.search.at_client(&mut cx, id, &bytes);
            }
            Action::Rend(input) => {
                let (mut cx, p) = self.split();
                p.rend.on(&mut cx, input);
            }
            Action::BuildFor {
                token,
                purpose,
                target,
            } => {
                let k = {
                    circuit_parts!(self, cx, w, circ);
                    circ.build_for(&mut cx, &mut w, purpose, target.as_deref())
                };
                let (mut cx, p) = self.split();
                p.rend.build_started(&mut cx, token, k);
            }
            Action::RendToHop(k, bytes) => {
                circuit_parts!(self, cx, w, circ);
                circ.send_msg(
                    &mut cx,
                    &mut w,
                    CircuitId(k),
                    &CircuitMsg::Rendezvous { bytes },
                );
            }
            Action::RendToClient(k, bytes) => {
                let (mut cx, p) = self.split();
                p.circ.relay_send_rendezvous(&mut cx, k, bytes);
            }
            Action::Splice {
                waiting,
                joining,
                handshake,
            } => {
                let (mut cx, p) = self.split();
                let joined = p.circ.splice(waiting, joining);
                let msgs = if joined {
                    cx.stats.rendezvous.splices += 1;
                    vec![
                        (waiting, FromHop::Joined { handshake }),
                        (joining, FromHop::JoinAck { joined }),
                    ]
                } else {
                    cx.stats.rendezvous.refused += 1;
                    vec![(joining, FromHop::JoinAck { joined })]
                };
                for (k, msg) in msgs {
                    if let Ok(bytes) = msg.encode() {
                        p.circ.relay_send_rendezvous(&mut cx, k, bytes);
                    }
                }
            }
            Action::CloseOwn(k) => {
                circuit_parts!(self, cx, w, circ);
                circ.close_purpose(&mut cx, &mut w, k);
            }
            Action::ToTransfer(news) => {
                let (mut cx, p) = self.split();
                match news {
                    output::TransferIn::Opened { session, inbound } => {
                        p.transfer.opened(&mut cx, session, inbound)
                    }
                    output::TransferIn::Data { session, bytes } => {
                        p.transfer.data(&mut cx, session, &bytes)
                    }
                    output::TransferIn::Closed { session } => p.transfer.closed(&mut cx, session),
                }
            }
            Action::CloseSession(session) => {
                let (mut cx, p) = self.split();
                p.rend.close(&mut cx, session);
            }
            Action::Providers(search, providers) => {
                if self.transfer.owns_search(search) {
                    self.transfer.found(search, providers);
                } else {
                    self.out.event(Event::ProvidersFound { search, providers });
                }
            }
            Action::Provide(service, records) => {
                let (mut cx, p) = self.split();
                p.search.provide(&mut cx, service, records);
            }
            Action::ProbeOwn(k) => {
                circuit_parts!(self, cx, w, circ);
                circ.probe(&mut cx, &mut w, CircuitId(k));
            }
            Action::ToClient(k, bytes) => {
                let (mut cx, p) = self.split();
                p.circ
                    .relay_send_msg(&mut cx, k, &CircuitMsg::SearchReply { bytes });
            }
            Action::Refused(r) => {
                // A gossiped claim failed its check. Only the peer itself
                // can vouch for a forgery (an honest node vouches only for
                // what it checked, and the check is deterministic), so
                // nobody can frame a guard this way: a peer that lies is
                // cut, replaced as guard or vanguard, and leaves our
                // samples.
                self.stats.descriptors_refused += 1;
                if let Some(peer) = r.blame {
                    // Dropped as guard first, so that cutting its link
                    // retries nothing through it.
                    {
                        circuit_parts!(self, cx, w, circ);
                        circ.drop_liar(&mut cx, &mut w, peer);
                    }
                    self.gossip.forget(peer);
                    if let Some(link) = self.links.to_peer(&peer) {
                        self.cut(link, Fault::Misbehaved(Offence::VouchedForgery));
                    }
                }
            }
        }
    }

    /// Keeps the directory within [`Config::max_known_peers`], never
    /// dropping ids in our view, samples, links or guards.
    fn trim_directory(&mut self) {
        let keep: std::collections::BTreeSet<NodeId> = self
            .gossip
            .view()
            .iter()
            .copied()
            .chain(self.gossip.sample())
            .chain(self.links.peer_ids().copied())
            .chain(self.circ.guard_ids())
            .chain(self.circ.vanguards())
            .collect();
        self.dir.trim(&keep);
    }

    /// A gossip round, then link pruning: links nobody used for a few
    /// rounds, to peers outside the view (and not guards, and not carrying
    /// circuits), go.
    fn run_round(&mut self) {
        let guards = self.circ.guard_ids();
        {
            let (mut cx, p) = self.split();
            let view = GossipView {
                links: &*p.links,
                dialer: p.dialer,
                dir: p.dir,
                descriptor: p.descriptor,
                guards: &guards,
            };
            p.gossip.run_round(&mut cx, view);
        }
        let mut keep: std::collections::BTreeSet<NodeId> =
            self.gossip.view().iter().copied().collect();
        keep.extend(guards);
        keep.extend(self.circ.busy_peers(&self.links));
        let prune = {
            let (cx, p) = self.split();
            p.links.prune(&cx, &keep, cx.out.outbox())
        };
        for link in prune {
            self.close(link);
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
