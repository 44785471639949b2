//! Gossip: Brahms peer-sampling rounds over established links (see
//! [`crate::sampling`]).
//!
//! A push carries only the pusher's own descriptor, and at most one push
//! and one pull request per link per round are honoured. A pull is
//! answered with ourselves and descriptors drawn uniformly from the
//! directory; a pull reply is accepted only for our outstanding pull on
//! that link and only up to a view's worth of descriptors.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::RngCore;

use super::dialer::Dialer;
use super::directory::Directory;
use super::links::Links;
use super::output::{Action, Ctx};
use super::{LinkId, Offence};
use crate::descriptor::{Admitted, Descriptor, DescriptorError};
use crate::identity::NodeId;
use crate::link::LinkMsg;
use crate::sampling::{Brahms, ViewUpdate};

/// Per-link gossip bookkeeping.
#[derive(Debug, Default)]
struct LinkGossip {
    pushed_round: u64,
    pulled_round: u64,
    /// Our outstanding pull on this link: nonce and descriptors received.
    my_pull: Option<(u64, usize)>,
}

/// What gossip may read and use of the rest of the node.
pub(super) struct GossipView<'a> {
    pub(super) links: &'a Links,
    pub(super) dialer: &'a mut Dialer,
    pub(super) dir: &'a mut Directory,
    pub(super) descriptor: &'a Descriptor,
    pub(super) guards: &'a [NodeId],
}

/// The gossip part: Brahms and the round's bookkeeping.
#[derive(Debug)]
pub(super) struct Gossip {
    brahms: Brahms,
    round: u64,
    pending_push: BTreeSet<NodeId>,
    pending_pull: BTreeSet<NodeId>,
    per_link: BTreeMap<LinkId, LinkGossip>,
}

impl Gossip {
    pub(super) fn new(brahms: Brahms) -> Gossip {
        Gossip {
            brahms,
            round: 0,
            pending_push: BTreeSet::new(),
            pending_pull: BTreeSet::new(),
            per_link: BTreeMap::new(),
        }
    }

    /// The peer-sampling output.
    pub(super) fn sample(&self) -> Vec<NodeId> {
        self.brahms.sample()
    }

    /// The Brahms view.
    pub(super) fn view(&self) -> &[NodeId] {
        self.brahms.view()
    }

    /// `id` leaves the view and the samples (it lied about a descriptor).
    pub(super) fn forget(&mut self, id: NodeId) {
        self.brahms.remove(id);
    }

    /// A link closed.
    pub(super) fn link_down(&mut self, link: LinkId) {
        self.per_link.remove(&link);
    }

    /// A dial of `id` failed: nothing is pending for it, and an address
    /// that never answered is not kept in the view.
    pub(super) fn unreachable(&mut self, id: NodeId, dir: &Directory) {
        self.pending_push.remove(&id);
        self.pending_pull.remove(&id);
        if dir.get(&id).is_some_and(|k| k.verified_addr.is_none()) {
            self.brahms.remove(id);
        }
    }

    /// `link` to `peer` is now the peer's link: send what waited for it.
    pub(super) fn peer_linked(
        &mut self,
        cx: &mut Ctx<'_>,
        link: LinkId,
        peer: NodeId,
        descriptor: &Descriptor,
    ) {
        if self.brahms.view().is_empty() {
            self.brahms.bootstrap([peer]);
        }
        if self.pending_push.remove(&peer) {
            cx.send(link, LinkMsg::push(descriptor));
        }
        if self.pending_pull.remove(&peer) {
            self.send_pull(cx, link);
        }
    }

    /// A link message from authenticated `peer` on `link`.
    pub(super) fn on_msg(
        &mut self,
        cx: &mut Ctx<'_>,
        v: GossipView<'_>,
        link: LinkId,
        peer: NodeId,
        msg: LinkMsg,
    ) {
        let round = self.round;
        let now = cx.now;
        match msg {
            // Search messages go to the search part, never here.
            LinkMsg::Padding | LinkMsg::Walk(_) | LinkMsg::WalkReply(_) => {}
            LinkMsg::Push(u) => {
                let l = self.per_link.entry(link).or_default();
                if l.pushed_round == round && round != 0 {
                    cx.stats.over_limit_ignored += 1;
                    return;
                }
                l.pushed_round = round;
                match v.dir.check(cx, u, v.descriptor) {
                    Ok(d) if d.node_id() == peer => {
                        v.dir.remember(now, d, None);
                        self.brahms.on_push(peer);
                    }
                    // Pushing someone else, or an invalid descriptor.
                    _ => {
                        cx.stats.descriptors_refused += 1;
                        cx.cut(link, super::Fault::Misbehaved(Offence::BadDescriptor));
                    }
                }
            }
            LinkMsg::PullRequest { nonce } => {
                let l = self.per_link.entry(link).or_default();
                if l.pulled_round == round && round != 0 {
                    cx.stats.over_limit_ignored += 1;
                    return;
                }
                l.pulled_round = round;
                let answer = pull_answer(cx, v.dir, v.descriptor, peer);
                for c in LinkMsg::pull_reply(nonce, &answer) {
                    cx.send(link, c);
                }
            }
            LinkMsg::PullReply { nonce, descriptors } => {
                let max = cx.config.brahms.view_size;
                let l = self.per_link.entry(link).or_default();
                let Some((want, got)) = l.my_pull else {
                    // Unsolicited: ignore (a late reply from an old round).
                    cx.stats.over_limit_ignored += 1;
                    return;
                };
                if want != nonce || got + descriptors.len() > max {
                    cx.stats.over_limit_ignored += 1;
                    return;
                }
                l.my_pull = Some((want, got + descriptors.len()));
                // Identities are admitted (freshness and proof of work, no
                // signature): enough to feed sampling. Signatures are
                // checked when a descriptor is first used.
                let mut ids = Vec::with_capacity(descriptors.len());
                let max_age = cx.config.descriptor_max_age_ms;
                let mut refusals = Vec::new();
                for (u, vouched) in descriptors {
                    // Gossip repeats itself: a descriptor identical to the
                    // one we hold needs no new proof-of-work check.
                    let id = u.claimed_id();
                    if let Some(fresh) = v.dir.repeat(now, &u, max_age) {
                        if fresh {
                            ids.push(id);
                        }
                        continue;
                    }
                    match u.admit(now, max_age, cx.config.pow) {
                        Ok(a) => {
                            ids.push(a.node_id());
                            refusals.extend(v.dir.offer(now, a, Some(peer), vouched));
                        }
                        Err(DescriptorError::Stale { .. }) => {}
                        Err(_) => cx.stats.descriptors_refused += 1,
                    }
                }
                let me = cx.identity.node_id();
                ids.retain(|id| *id != me);
                cx.stats.pull_replies += 1;
                self.brahms.on_pull_reply(peer, &ids);
                for r in refusals {
                    cx.out.act(Action::Refused(r));
                }
            }
        }
    }

    fn send_pull(&mut self, cx: &mut Ctx<'_>, link: LinkId) {
        let nonce = cx.rng.next_u64();
        self.per_link.entry(link).or_default().my_pull = Some((nonce, 0));
        cx.stats.pulls_sent += 1;
        cx.send(link, LinkMsg::pull_request(nonce));
    }

    /// One gossip round: end the last (Brahms' view update), push and pull.
    pub(super) fn run_round(&mut self, cx: &mut Ctx<'_>, mut v: GossipView<'_>) {
        if self.round > 0 {
            let outcome = self.brahms.end_round(cx.rng);
            cx.stats.rounds += 1;
            if outcome.view == ViewUpdate::FloodDetected {
                cx.stats.floods_detected += 1;
            }
        }
        self.round += 1;
        self.pending_push.clear();
        self.pending_pull.clear();
        for l in self.per_link.values_mut() {
            l.my_pull = None;
        }
        let pushes = self.brahms.push_targets(cx.rng);
        // Half the pulls go to view members (Brahms), half to our own
        // samples: the min-wise samplers converge to the population share
        // whatever a flood does to the view, so pulling from them keeps a
        // polluted view from steering all of our discovery to attackers.
        let mut pulls = self.brahms.pull_targets(cx.rng);
        let from_samples = pulls.len() / 2;
        pulls.truncate(pulls.len() - from_samples);
        let mut sample = self.brahms.sample();
        sample.retain(|id| !pulls.contains(id));
        for _ in 0..from_samples {
            if sample.is_empty() {
                break;
            }
            let pick = (cx.rng.next_u64() % sample.len() as u64) as usize;
            pulls.push(sample.swap_remove(pick));
        }
        let mut budget = cx.config.max_new_links_per_round;
        // A client-only node is nobody's hop: it does not advertise itself.
        let pushes = if cx.config.relay { pushes } else { Vec::new() };
        for id in pushes {
            if let Some(link) = v.links.to_peer(&id) {
                cx.stats.pushes_sent += 1;
                cx.send(link, LinkMsg::push(v.descriptor));
            } else if budget > 0 && dial(cx, &mut v, id) {
                budget -= 1;
                self.pending_push.insert(id);
            }
        }
        // Pull targets without a link, beyond the new-link budget, are
        // replaced by peers on links we opened ourselves (never by peers
        // that dialled us, whom an attacker can multiply).
        let mut substitutes = v.links.outbound_up();
        let mut pulled: BTreeSet<LinkId> = BTreeSet::new();
        for id in pulls {
            if let Some(link) = v.links.to_peer(&id) {
                if pulled.insert(link) {
                    self.send_pull(cx, link);
                }
            } else if self.pending_push.contains(&id) {
                self.pending_pull.insert(id);
            } else if budget > 0 && dial(cx, &mut v, id) {
                budget -= 1;
                self.pending_pull.insert(id);
            } else {
                substitutes.retain(|l| !pulled.contains(l));
                if !substitutes.is_empty() {
                    let pick = (cx.rng.next_u64() % substitutes.len() as u64) as usize;
                    let link = substitutes.swap_remove(pick);
                    pulled.insert(link);
                    self.send_pull(cx, link);
                }
            }
        }
        if !cx.config.relay {
            // Learn relays through every guard, so that no single guard
            // decides what we know (an eclipse defence).
            let guard_links: Vec<LinkId> = v
                .guards
                .iter()
                .filter_map(|g| v.links.to_peer(g))
                .filter(|l| !pulled.contains(l))
                .collect();
            for link in guard_links {
                self.send_pull(cx, link);
            }
        }
    }
}

/// Ask the driver to dial `id` at its address, under the gossip dial
/// policy ([`Dialer::dial_gossip`]).
fn dial(cx: &mut Ctx<'_>, v: &mut GossipView<'_>, id: NodeId) -> bool {
    if !cx.config.relay && !v.guards.is_empty() {
        // Client-only nodes link only to their guards once they have
        // them (see circuits). Before that, like any node, they gossip
        // over links they open: one seed link alone, which a busy seed
        // may drop, would starve them of the relays to choose guards
        // from.
        return false;
    }
    // First use of a gossiped descriptor: check its signature now.
    let Some(d) = v.dir.verified(cx, id) else {
        return false;
    };
    let verified_addr = v.dir.get(&id).and_then(|k| k.verified_addr);
    let Some(addr) = verified_addr.or(d.address()) else {
        return false;
    };
    v.dialer.dial_gossip(cx, v.links, addr, id)
}

/// What we answer a pull with: ourselves, and the rest drawn uniformly
/// at random from every descriptor we hold. That makes knowledge of the
/// membership spread epidemically, so every honest node soon has *seen*
/// every honest id; min-wise samplers are uniform over the set of ids
/// seen, so that is what bounds an attacker's share of the samples to
/// its share of the population, however many pull replies it floods
/// with its own ids. (The Brahms view is not sent: a push flood can fill
/// it with attacker ids, which everyone has seen already.)
fn pull_answer(
    cx: &mut Ctx<'_>,
    dir: &Directory,
    me: &Descriptor,
    requester: NodeId,
) -> Vec<(Admitted, bool)> {
    let want = cx.config.brahms.view_size;
    let mut ids: BTreeSet<NodeId> = BTreeSet::new();
    let mut answer = vec![(me.admitted(), true)];
    ids.insert(me.node_id());
    ids.insert(requester);
    let mut tries = 0;
    while answer.len() < want && tries < 2 * want && dir.len() > 0 {
        tries += 1;
        let pick = dir.random_id(cx.rng.next_u64());
        if let Some(id) = pick
            && let Some(g) = dir.gossip_form(&id)
            && ids.insert(id)
        {
            answer.push(g);
        }
    }
    answer
}

#[cfg(test)]
impl Gossip {
    pub(super) fn per_link_ids(&self) -> Vec<LinkId> {
        self.per_link.keys().copied().collect()
    }
}
