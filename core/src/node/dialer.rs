//! The dialer: one policy for every dial the node asks of its driver
//! (bootstrap seeds, gossip targets, guards, and the next hop of someone
//! else's EXTEND), and what each dial was for.
//!
//! - An address learnt from a descriptor is dialled at most once per
//!   `dial_backoff_ms` for the id it claims, with that id as the expected
//!   peer, and used for nothing else until the handshake succeeds.
//! - Only reachable scopes are dialled ([`AddrScope`]), never our own
//!   address; an (address, id) where someone else answered gets no extend
//!   dial for the backoff.
//! - Dials in flight are bounded; extends get at most half of the budget,
//!   so they never starve our own guard dials.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rand_core::RngCore;

use super::addr::AddrScope;
use super::links::Links;
use super::output::Ctx;
use super::timers::Timer;
use super::{Event, LinkId, Millis};
use crate::identity::NodeId;

/// What a dial is for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Dial {
    /// Whom we expect at the other end (None for bootstrap seeds).
    pub(super) expected: Option<NodeId>,
    since_ms: Millis,
    /// Made for our own circuits or guard links (not for gossip or for
    /// someone else's EXTEND).
    pub(super) own: bool,
}

/// Dials in flight and the memory that bounds them.
#[derive(Debug, Default)]
pub(super) struct Dialer {
    dials: BTreeMap<SocketAddr, Dial>,
    /// Outbound links in their handshake, with what they were dialled for.
    handshaking: BTreeMap<LinkId, Dial>,
    /// When we last dialled an address expecting an id (a success clears
    /// the entry): at most one dial per pair per `dial_backoff_ms`.
    last_dial: BTreeMap<(SocketAddr, NodeId), Millis>,
    /// (address, expected id) pairs where someone else answered: no
    /// extend dial to them for the backoff (bounded like `last_dial`).
    wrong_peer: BTreeMap<(SocketAddr, NodeId), Millis>,
    bootstrap_reached: BTreeSet<SocketAddr>,
}

impl Dialer {
    /// An outbound link to `remote` opened: what it was dialled for.
    pub(super) fn link_opened(
        &mut self,
        cx: &mut Ctx<'_>,
        link: LinkId,
        remote: SocketAddr,
    ) -> Dial {
        let d = self.dials.remove(&remote).unwrap_or_default();
        cx.timers.clear(Timer::Dial(remote));
        self.handshaking.insert(link, d);
        d
    }

    /// `link`'s handshake ended (it authenticated, failed or closed): what
    /// it had been dialled for.
    pub(super) fn link_settled(&mut self, link: LinkId) -> Option<Dial> {
        self.handshaking.remove(&link)
    }

    /// The driver could not reach `addr`: what the dial was for.
    pub(super) fn connect_failed(&mut self, cx: &mut Ctx<'_>, addr: SocketAddr) -> Option<Dial> {
        cx.timers.clear(Timer::Dial(addr));
        self.dials.remove(&addr)
    }

    /// Forgets dials that took longer than the handshake timeout.
    pub(super) fn expire(&mut self, cx: &mut Ctx<'_>) {
        let deadline = cx.config.handshake_timeout_ms;
        let now = cx.now;
        let timers = &mut *cx.timers;
        self.dials.retain(|addr, d| {
            let keep = now < d.since_ms + deadline;
            if !keep {
                timers.clear(Timer::Dial(*addr));
            }
            keep
        });
    }

    /// We linked to `remote` (outbound) and found `peer` there.
    pub(super) fn reached(&mut self, remote: SocketAddr, peer: Option<NodeId>) {
        self.bootstrap_reached.insert(remote);
        if let Some(peer) = peer {
            self.last_dial.remove(&(remote, peer));
        }
    }

    /// Someone other than `expected` answered at `remote`: that (address,
    /// id) gets no dial for the backoff, so nobody can aim a stream of
    /// dials (an EXTEND per round trip) at one address.
    pub(super) fn wrong_peer(&mut self, cx: &Ctx<'_>, remote: SocketAddr, expected: NodeId) {
        let max = cx.config.max_known_peers;
        if self.wrong_peer.len() >= max {
            let horizon = cx.now.saturating_sub(cx.config.dial_backoff_ms);
            self.wrong_peer.retain(|_, t| *t >= horizon);
        }
        if self.wrong_peer.len() < max {
            self.wrong_peer.insert((remote, expected), cx.now);
        }
    }

    /// Seeds are dialled while the node has no authenticated peer (at
    /// start, or after losing every link: a client-only node, which dials
    /// nobody else, would otherwise stay cut off); once linked, gossip
    /// takes over.
    pub(super) fn bootstrap_pending(&self, cx_config: &super::Config, links: &Links) -> bool {
        links.no_peers()
            && cx_config
                .bootstrap
                .iter()
                .any(|a| Some(*a) != cx_config.advertised_addr)
    }

    /// Dials one seed, picked at random (seeds never reached first), so
    /// that a crowd of newcomers spreads over the seed list instead of
    /// hitting every seed at once.
    pub(super) fn bootstrap(&mut self, cx: &mut Ctx<'_>) {
        let config = cx.config;
        let usable =
            |a: &SocketAddr| Some(*a) != config.advertised_addr && !self.dials.contains_key(a);
        let mut seeds: Vec<SocketAddr> = config
            .bootstrap
            .iter()
            .copied()
            .filter(|a| usable(a) && !self.bootstrap_reached.contains(a))
            .collect();
        if seeds.is_empty() {
            seeds = config.bootstrap.iter().copied().filter(usable).collect();
        }
        if seeds.is_empty() {
            return;
        }
        let addr = seeds[(cx.rng.next_u64() % seeds.len() as u64) as usize];
        self.start(cx, addr, None, false);
    }

    /// A gossip dial of `id` at `addr`: a dialable address, not our own,
    /// no dial of this (address, id) within the backoff (keyed by the
    /// pair, so a descriptor signed by someone else naming an honest
    /// relay's address cannot block dials of that relay), and within the
    /// dial and link budgets.
    pub(super) fn dial_gossip(
        &mut self,
        cx: &mut Ctx<'_>,
        links: &Links,
        addr: SocketAddr,
        id: NodeId,
    ) -> bool {
        if !dialable(cx.config, addr) {
            return false;
        }
        if let Some(d) = self.dials.get(&addr) {
            return d.expected == Some(id);
        }
        let backoff = cx.config.dial_backoff_ms;
        if !extend_dialable(cx.config, addr)
            || self
                .last_dial
                .get(&(addr, id))
                .is_some_and(|&t| cx.now < t + backoff)
            || self.outbound_pending(links) >= cx.config.max_pending_handshakes
            || links.len() + self.dials.len() >= cx.config.max_links
        {
            return false;
        }
        self.note_dial(cx, addr, id);
        self.start(cx, addr, Some(id), false);
        true
    }

    /// Dial `addr` expecting `id` (for guards and extends). False if the
    /// node is at its limits or the address is being dialled for someone
    /// else.
    pub(super) fn dial_expected(
        &mut self,
        cx: &mut Ctx<'_>,
        links: &Links,
        addr: SocketAddr,
        id: NodeId,
        own: bool,
    ) -> bool {
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
        if let Some(d) = self
            .handshaking
            .iter_mut()
            .find(|(l, d)| {
                d.expected == Some(id) && links.get(**l).is_some_and(|l| l.is_handshaking())
            })
            .map(|(_, d)| d)
        {
            d.own |= own;
            return true;
        }
        // Extends dial only reachable scopes and never our own address;
        // they are bounded by the CREATE rate (three extends per circuit)
        // and the pending-dial budget rather than by a backoff, which would
        // make one failed dial fail every extend to that relay for minutes
        // (measured: crashed relays then stranded clients). Dials for our
        // own circuits and guard links use the guard's signed address and
        // their own retry timers.
        let c = cx.config;
        if !own {
            // Extend dials: a reachable scope, never our own address, not
            // an (address, id) that answered with someone else, at most one
            // dial in flight per expected id (one identity cannot fill the
            // budget by naming new addresses), and at most half the dial
            // budget.
            let extend_dials = self.dials.values().filter(|d| !d.own).count();
            if !extend_dialable(c, addr)
                || self
                    .wrong_peer
                    .get(&(addr, id))
                    .is_some_and(|&t| cx.now < t + c.dial_backoff_ms)
                || self.dials.values().any(|d| d.expected == Some(id))
                || extend_dials >= c.max_pending_handshakes / 2
            {
                return false;
            }
        }
        // No link is closed to make room here: a link is evicted only once
        // the one it makes room for is authenticated.
        if self.outbound_pending(links) >= c.max_pending_handshakes
            || links.len() + self.dials.len() >= c.max_links + c.max_pending_handshakes
        {
            return false;
        }
        self.start(cx, addr, Some(id), own);
        true
    }

    /// Dials and outbound handshakes in flight (inbound handshakes have a
    /// budget of their own, so a crowd of diallers cannot stop our dials).
    fn outbound_pending(&self, links: &Links) -> usize {
        self.dials.len() + links.outbound_handshaking()
    }

    /// Records a dial for the backoff (bounded: entries past the backoff
    /// go first; a full table of recent entries refuses nothing but stops
    /// growing).
    fn note_dial(&mut self, cx: &Ctx<'_>, addr: SocketAddr, id: NodeId) {
        let max = cx.config.max_known_peers;
        if self.last_dial.len() >= max {
            let horizon = cx.now.saturating_sub(cx.config.dial_backoff_ms);
            self.last_dial.retain(|_, t| *t >= horizon);
        }
        if self.last_dial.len() < max {
            self.last_dial.insert((addr, id), cx.now);
        }
    }

    /// Records a dial of `addr` and asks the driver for it.
    fn start(&mut self, cx: &mut Ctx<'_>, addr: SocketAddr, expected: Option<NodeId>, own: bool) {
        tracing::trace!(%addr, own, "dial");
        self.dials.insert(
            addr,
            Dial {
                expected,
                since_ms: cx.now,
                own,
            },
        );
        cx.timers
            .set(Timer::Dial(addr), cx.now + cx.config.handshake_timeout_ms);
        cx.event(Event::Connect { addr, expected });
    }
}

/// Whether we may dial `addr` at all: a global address, or one of the
/// same scope as our own advertised address (a loopback test network
/// dials loopback, a LAN dials the LAN; a relay on a public address is
/// never made to scan its own host or LAN). Bootstrap seeds, which the
/// operator chose, are exempt.
pub(super) fn dialable(config: &super::Config, addr: SocketAddr) -> bool {
    let scope = AddrScope::of(addr);
    scope == AddrScope::Global
        || (scope != AddrScope::Invalid && config.advertised_addr.map(AddrScope::of) == Some(scope))
}

/// A dialable address that is not one of our own (on any port).
fn extend_dialable(config: &super::Config, addr: SocketAddr) -> bool {
    dialable(config, addr) && config.advertised_addr.map(|a| a.ip()) != Some(addr.ip())
}

#[cfg(test)]
impl Dialer {
    pub(super) fn dial_addrs(&self) -> Vec<SocketAddr> {
        self.dials.keys().copied().collect()
    }
    pub(super) fn handshaking_links(&self) -> Vec<LinkId> {
        self.handshaking.keys().copied().collect()
    }
}
