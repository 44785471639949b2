//! Links: the table of links and their handshakes, admission before
//! authentication, per-link rate limits, one link per peer, and which link
//! goes when there are too many.
//!
//! A link is a reliable, ordered byte stream to one peer. Its first cells
//! are a Noise XX handshake bound to the transport's channel-binding value
//! (see [`crate::link`]); nothing else is accepted or sent before it
//! completes. Memory per link is bounded (one partial cell), link-level
//! and circuit-control cells per second per link are rate-limited, and
//! pending inbound handshakes are bounded per node and per source. Nothing
//! is evicted for a link that has not authenticated.
//!
//! # What the link's cell budget counts
//!
//! [`super::Config::max_link_cells_per_sec`] counts every cell before the
//! handshake completes, and after it every cell but RELAY and RELAY_EARLY
//! on a circuit: link messages (gossip, search walks, padding) and CREATE,
//! CREATED and DESTROY. Those are what a flooder can send without owning a
//! circuit, and some cost us work or an answer (a pull reply, a CREATE's
//! handshake or its DESTROY). An honest peer sends few: gossip is a few
//! cells a round, CREATEs are limited to
//! [`crate::path::CircuitParams::creates_per_sec_per_link`] anyway, one
//! DESTROY ends a circuit.
//!
//! Relay cells are left to the circuit part, because every one of them
//! is bounded per circuit: on a circuit we have, the other end's window
//! ([`crate::path::CircuitParams::window_cells`]) bounds what an honest
//! sender has in flight, a circuit whose cells pile up on a slower link
//! past [`super::Config::max_circuit_queue_cells`] broke flow control and
//! is destroyed alone, and RELAY_EARLY has its extend budget; on a
//! circuit we do not have, cells are dropped, within an allowance for the
//! circuits we ended on the link (see `circuits/mod.rs`). Counting them
//! here made one link's honest transfers share a ceiling of
//! `max_link_cells_per_sec` (≈ 16.7 MB/s at 4096), and cutting the link
//! for it took every circuit on it down together.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use rand_core::RngCore;

use super::addr::same_source;
use super::outbox::Outbox;
use super::output::Ctx;
use super::timers::Timer;
use super::{Direction, Event, LinkId, Millis, PeerInfo};
use crate::cell::{Cell, CellReader, command};
use crate::descriptor::Descriptor;
use crate::identity::NodeId;
use crate::link::{CheckParams, HandshakeError, HandshakeStep, LinkHandshake, LinkMsg, Side};

#[derive(Debug)]
enum LinkState {
    Handshaking(Box<LinkHandshake>),
    Up {
        peer: NodeId,
    },
    /// Between two steps of a handshake (a link closed while its handshake
    /// cell is being read is found in this state).
    Closed,
}

#[derive(Debug)]
pub(super) struct Link {
    pub(super) direction: Direction,
    pub(super) remote: SocketAddr,
    state: LinkState,
    reader: CellReader,
    up_since_ms: Millis,
    /// When a cell last arrived (sends are in [`Outbox::last_sent`]).
    last_recv_ms: Millis,
    /// Inbound link-level and control cells per second
    /// ([`super::Config::max_link_cells_per_sec`]).
    cells: TokenBucket,
}

impl Link {
    /// The authenticated peer, once the handshake is done.
    pub(super) fn peer(&self) -> Option<NodeId> {
        match self.state {
            LinkState::Up { peer } => Some(peer),
            _ => None,
        }
    }

    pub(super) fn is_handshaking(&self) -> bool {
        matches!(self.state, LinkState::Handshaking(_))
    }

    fn last_used(&self, link: LinkId, outbox: &Outbox) -> Millis {
        self.last_recv_ms.max(outbox.last_sent(link))
    }
}

/// A cell, as the link layer hands it on.
#[derive(Debug)]
pub(super) enum Incoming {
    /// Consumed by the handshake (a reply may have been sent).
    Handshake,
    /// The handshake finished: the peer's checked descriptor.
    Established(Box<Descriptor>),
    /// The handshake failed; the link must be closed.
    Failed(HandshakeError),
    /// A circuit cell from an authenticated peer.
    Circuit(Cell),
    /// A link message from an authenticated peer.
    Msg(NodeId, LinkMsg),
    /// A link-level cell that does not decode.
    Malformed,
    /// Nothing to do (unknown or closing link).
    Nothing,
}

/// Every link, and the one link kept per authenticated peer.
#[derive(Debug, Default)]
pub(super) struct Links {
    links: BTreeMap<LinkId, Link>,
    by_peer: BTreeMap<NodeId, LinkId>,
}

impl Links {
    pub(super) fn get(&self, link: LinkId) -> Option<&Link> {
        self.links.get(&link)
    }

    pub(super) fn contains(&self, link: LinkId) -> bool {
        self.links.contains_key(&link)
    }

    /// Links in any state.
    pub(super) fn len(&self) -> usize {
        self.links.len()
    }

    /// The link kept for `peer`.
    pub(super) fn to_peer(&self, peer: &NodeId) -> Option<LinkId> {
        self.by_peer.get(peer).copied()
    }

    /// Authenticated peers, each with its kept link.
    pub(super) fn peer_ids(&self) -> impl Iterator<Item = &NodeId> {
        self.by_peer.keys()
    }

    /// Whether no peer is authenticated.
    pub(super) fn no_peers(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// The authenticated peer at the other end of `link`.
    pub(super) fn peer_of(&self, link: LinkId) -> Option<NodeId> {
        self.links.get(&link).and_then(Link::peer)
    }

    /// Authenticated links (in id order), with their peers.
    pub(super) fn up(&self) -> impl Iterator<Item = (LinkId, &Link, NodeId)> {
        self.links
            .iter()
            .filter_map(|(id, l)| l.peer().map(|p| (*id, l, p)))
    }

    /// Outbound links still in their handshake.
    pub(super) fn outbound_handshaking(&self) -> usize {
        self.links
            .values()
            .filter(|l| l.direction == Direction::Outbound && l.is_handshaking())
            .count()
    }

    /// Peers with an authenticated link, for `veil peers`.
    pub(super) fn peers(&self, is_relay: impl Fn(&NodeId) -> bool) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .up()
            .map(|(_, l, peer)| PeerInfo {
                node_id: peer,
                addr: l.remote,
                direction: l.direction,
                since_ms: l.up_since_ms,
                relay: is_relay(&peer),
            })
            .collect();
        out.sort_by_key(|p| p.node_id);
        out
    }

    /// A transport link opened: admit it and start its handshake, or
    /// refuse it (an [`Event::Close`] is emitted). Admission before
    /// authentication closes nothing: links beyond the limits are made
    /// room for only once their handshake succeeds ([`Links::make_room`]),
    /// so an unauthenticated dialler cannot evict anyone.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
        &mut self,
        cx: &mut Ctx<'_>,
        link: LinkId,
        direction: Direction,
        remote: SocketAddr,
        expected: Option<NodeId>,
        binding: [u8; 32],
        descriptor: &Descriptor,
    ) -> bool {
        let c = cx.config;
        let inbound_pending = |src: Option<IpAddr>| {
            self.links
                .values()
                .filter(|l| {
                    l.direction == Direction::Inbound
                        && l.is_handshaking()
                        && src.is_none_or(|ip| same_source(ip, l.remote.ip()))
                })
                .count()
        };
        if self.links.len() >= c.max_links + 2 * c.max_pending_handshakes
            || (direction == Direction::Inbound
                && (inbound_pending(None) >= c.max_pending_handshakes
                    || inbound_pending(Some(remote.ip())) >= c.max_handshakes_per_source))
            || self.links.contains_key(&link)
        {
            tracing::debug!(?link, ?direction, "link refused at admission");
            cx.event(Event::Close { link });
            return false;
        }
        let side = match direction {
            Direction::Outbound => Side::Initiator,
            Direction::Inbound => Side::Responder,
        };
        let mut seed = [0u8; 32];
        cx.rng.fill_bytes(&mut seed);
        let (hs, first) =
            match LinkHandshake::start(cx.identity, descriptor, side, expected, &binding, seed) {
                Ok(x) => x,
                Err(error) => {
                    cx.stats.handshakes_failed += 1;
                    cx.event(Event::HandshakeFailed { link, error });
                    cx.event(Event::Close { link });
                    return false;
                }
            };
        let now = cx.now;
        self.links.insert(
            link,
            Link {
                direction,
                remote,
                state: LinkState::Handshaking(Box::new(hs)),
                reader: CellReader::default(),
                up_since_ms: now,
                last_recv_ms: now,
                cells: TokenBucket::full(now, c.max_link_cells_per_sec),
            },
        );
        cx.timers
            .set(Timer::Handshake(link), now + c.handshake_timeout_ms);
        cx.out.open(link);
        if let Some(cell) = first {
            cx.send(link, cell);
        }
        true
    }

    /// Splits stream bytes into cells.
    pub(super) fn read(&mut self, link: LinkId, data: &[u8]) -> Option<Vec<Cell>> {
        let l = self.links.get_mut(&link)?;
        let mut cells = Vec::new();
        l.reader.push(data, &mut cells);
        Some(cells)
    }

    /// Counts `cell` against the link's budget of link-level and control
    /// cells (see the module docs): false if the peer is over it. Relay
    /// cells on an authenticated link are not counted.
    pub(super) fn take_token(&mut self, now: Millis, link: LinkId, cell: &Cell, rate: u32) -> bool {
        let Some(l) = self.links.get_mut(&link) else {
            return true;
        };
        let relay =
            cell.circ_id() != 0 && matches!(cell.command(), command::RELAY | command::RELAY_EARLY);
        (relay && l.peer().is_some()) || l.cells.take(now, rate)
    }

    /// One arrived cell: the handshake's, or one to hand on.
    pub(super) fn on_cell(
        &mut self,
        cx: &mut Ctx<'_>,
        link: LinkId,
        cell: Cell,
        check: CheckParams,
    ) -> Incoming {
        let Some(l) = self.links.get_mut(&link) else {
            return Incoming::Nothing;
        };
        l.last_recv_ms = cx.now;
        match std::mem::replace(&mut l.state, LinkState::Closed) {
            LinkState::Closed => Incoming::Nothing,
            LinkState::Handshaking(hs) => match (*hs).read(&cell, check) {
                Ok((hs, HandshakeStep::Continue(reply))) => {
                    l.state = LinkState::Handshaking(Box::new(hs));
                    cx.send(link, reply);
                    Incoming::Handshake
                }
                Ok((_, HandshakeStep::Done { peer, last })) => {
                    if let Some(c) = last {
                        cx.send(link, c);
                    }
                    Incoming::Established(peer)
                }
                Err(error) => Incoming::Failed(error),
            },
            LinkState::Up { peer } => {
                l.state = LinkState::Up { peer };
                if cell.circ_id() != 0 {
                    return Incoming::Circuit(cell);
                }
                match LinkMsg::decode(&cell) {
                    Ok(msg) => Incoming::Msg(peer, msg),
                    Err(_) => Incoming::Malformed,
                }
            }
        }
    }

    /// The handshake on `link` succeeded with `peer`: the link is up.
    pub(super) fn authenticated(&mut self, cx: &mut Ctx<'_>, link: LinkId, peer: NodeId) {
        cx.timers.clear(Timer::Handshake(link));
        if let Some(l) = self.links.get_mut(&link) {
            l.state = LinkState::Up { peer };
            l.up_since_ms = cx.now;
        }
    }

    /// Keep one link per peer. Both ends may have dialled at once (the two
    /// links go opposite ways): both ends must pick the same survivor, or
    /// each closes the other's choice, so the link dialled by the smaller
    /// node id wins. A new link the same way as the old one is a
    /// reconnection (the peer restarted, or lost the old connection
    /// before we noticed): the new one wins, or a restarted peer could not
    /// reach us until the old connection timed out. So is a new link that
    /// arrives when the old one has been up for longer than `settle_ms` (a
    /// handshake timeout): a race between two dials is over by then, so
    /// the peer dialled again because it lost the old one. Only the peer
    /// itself can authenticate a new link, so nobody else can push its
    /// link out.
    /// Returns the link to close (never one that carries circuits: it
    /// stays open until they end, and new circuits use the winner), and
    /// whether the new link is the one kept for the peer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keep_one(
        &mut self,
        me: NodeId,
        link: LinkId,
        peer: NodeId,
        now: Millis,
        settle_ms: Millis,
        busy: impl Fn(LinkId) -> bool,
    ) -> (Option<LinkId>, bool) {
        let Some(direction) = self.links.get(&link).map(|l| l.direction) else {
            return (None, false);
        };
        if let Some(&old) = self.by_peer.get(&peer)
            && old != link
            && let Some(old_link) = self.links.get(&old)
        {
            let preferred = if me < peer {
                Direction::Outbound
            } else {
                Direction::Inbound
            };
            let stale = now >= old_link.up_since_ms.saturating_add(settle_ms);
            let keep_new = old_link.direction == direction || direction == preferred || stale;
            let (loser, loser_busy) = if keep_new {
                (old, busy(old))
            } else {
                (link, false)
            };
            let close = (!loser_busy).then_some(loser);
            if !keep_new {
                return (close, false);
            }
            self.by_peer.insert(peer, link);
            return (close, true);
        }
        self.by_peer.insert(peer, link);
        (None, true)
    }

    /// Forgets a link (closed by either side). Returns it.
    pub(super) fn remove(&mut self, cx: &mut Ctx<'_>, link: LinkId) -> Option<Link> {
        cx.timers.clear(Timer::Handshake(link));
        let l = self.links.remove(&link)?;
        if let Some(peer) = l.peer()
            && self.by_peer.get(&peer) == Some(&link)
        {
            self.by_peer.remove(&peer);
        }
        Some(l)
    }

    /// A link just authenticated: keep within [`super::Config::max_links`]
    /// (and half of it for inbound links, so that peers that dial us cannot
    /// crowd out our own picks, an eclipse defence) by closing the least
    /// recently used idle links of the same kind. Links that carry circuits
    /// and links to guards are never closed for a newcomer. Returns the
    /// links to close, in order; the newcomer itself is last in the list
    /// if nothing else can go.
    pub(super) fn make_room(
        &self,
        cx: &Ctx<'_>,
        link: LinkId,
        guards: &[NodeId],
        busy: impl Fn(LinkId) -> bool,
        outbox: &Outbox,
    ) -> Vec<LinkId> {
        let Some(direction) = self.links.get(&link).map(|l| l.direction) else {
            return Vec::new();
        };
        let max = cx.config.max_links;
        let mut gone: BTreeSet<LinkId> = BTreeSet::new();
        let mut order = Vec::new();
        loop {
            let live = || self.up().filter(|(id, _, _)| !gone.contains(id));
            let total = live().count();
            let inbound = live()
                .filter(|(_, l, _)| l.direction == Direction::Inbound)
                .count();
            let over_inbound = direction == Direction::Inbound && inbound > max / 2;
            if total <= max && !over_inbound {
                return order;
            }
            let victim = live()
                .filter(|(id, l, peer)| {
                    *id != link
                        && !busy(*id)
                        && (!over_inbound || l.direction == Direction::Inbound)
                        && !guards.contains(peer)
                })
                .min_by_key(|(id, l, _)| (l.last_used(*id, outbox), *id))
                .map(|(id, _, _)| id);
            match victim {
                Some(v) => {
                    gone.insert(v);
                    order.push(v);
                }
                None => {
                    order.push(link);
                    return order;
                }
            }
        }
    }

    /// Keep the link count well under the limit: the least recently used
    /// links to peers outside `keep` (the view, guards, peers whose links
    /// carry circuits) go. Returns them in closing order.
    pub(super) fn prune(
        &self,
        cx: &Ctx<'_>,
        keep: &BTreeSet<NodeId>,
        outbox: &Outbox,
    ) -> Vec<LinkId> {
        let now = cx.now;
        let round_ms = cx.config.round_ms;
        // Links nobody used for a few rounds, to peers outside the view.
        let idle_ms = 3 * round_ms;
        let stale: Vec<LinkId> = self
            .up()
            .filter(|(id, l, peer)| {
                !keep.contains(peer) && now > l.last_used(*id, outbox) + idle_ms
            })
            .map(|(id, _, _)| id)
            .collect();
        // Authenticated links only: links still in their handshake are
        // bounded by admission, and must not make us close honest ones.
        let target = cx.config.max_links * 3 / 4;
        let left = self.up().count() - stale.len();
        if left <= target {
            return stale;
        }
        let mut idle: Vec<(Millis, LinkId)> = self
            .up()
            .filter(|(id, l, peer)| {
                !stale.contains(id)
                    && !keep.contains(peer)
                    && now > l.last_used(*id, outbox) + round_ms
            })
            .map(|(id, l, _)| (l.last_used(id, outbox), id))
            .collect();
        idle.sort();
        let mut out = stale;
        out.extend(idle.into_iter().take(left - target).map(|(_, l)| l));
        out
    }

    /// Links of one kind, in id order: outbound and authenticated (the
    /// substitutes gossip pulls from).
    pub(super) fn outbound_up(&self) -> Vec<LinkId> {
        self.up()
            .filter(|(_, l, _)| l.direction == Direction::Outbound)
            .map(|(id, _, _)| id)
            .collect()
    }

    /// Links that are not up, or up to a peer outside `keep`.
    pub(super) fn up_except(&self, keep: &[NodeId]) -> Vec<LinkId> {
        self.up()
            .filter(|(_, _, peer)| !keep.contains(peer))
            .map(|(id, _, _)| id)
            .collect()
    }
}

#[cfg(test)]
impl Links {
    /// Plants an authenticated inbound link (tests that set state
    /// directly).
    pub(super) fn plant_up(&mut self, link: LinkId, peer: NodeId, now: Millis) {
        self.links.insert(
            link,
            Link {
                direction: Direction::Inbound,
                remote: SocketAddr::from(([127, 99, 0, 1], 1)),
                state: LinkState::Up { peer },
                reader: CellReader::default(),
                up_since_ms: now,
                last_recv_ms: now,
                cells: TokenBucket::full(now, 1000),
            },
        );
    }

    /// Every link id.
    pub(super) fn ids(&self) -> Vec<LinkId> {
        self.links.keys().copied().collect()
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

    /// Whether the bucket would be full at `now` (an idle bucket: the same
    /// as a new one).
    pub(crate) fn is_full(&self, now: Millis, rate: u32) -> bool {
        let rate = u64::from(rate);
        self.milli
            .saturating_add(now.saturating_sub(self.at_ms).saturating_mul(rate))
            >= rate * 2000
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
