//! The directory: every node descriptor we hold, and the rule for trusting
//! one.
//!
//! # Trust
//!
//! A descriptor reaches us two ways:
//!
//! - **checked**: from a link handshake or a push (signature, proof of work
//!   and freshness checked on arrival), or a gossiped claim we have checked
//!   since ([`Directory::remember`]);
//! - **claimed**: in a pull reply, with its identity admitted (proof of work
//!   and freshness, no curve arithmetic) but its signature not yet checked
//!   ([`Directory::offer`]). Checking every gossiped descriptor on arrival
//!   would cost every node one signature check per network member and
//!   version.
//!
//! A claim is *never trusted*: it does not replace a checked descriptor,
//! its flags and address are not used until it is checked, and it is
//! passed on in pull replies marked as unchecked. An entry holds at most one
//! checked descriptor and one newer claim. Two different claims for one id
//! are settled at once by their signatures (so a forger cannot push an
//! honest claim out of the slot), and a claim is checked before any use
//! ([`Directory::settle`]). A claim that fails its check is dropped alone:
//! the id, its checked descriptor and the peer-sampling state it earned
//! stay. The peer that sent it is blamed only if it vouched for it (said it
//! had checked it), so an honest node that passes an unchecked forgery on is
//! never cut for it.
//!
//! The replay of the impersonation attack (copy an honest relay's keys and
//! proof of work, gossip a fresh, badly signed descriptor with no relay flag
//! or a junk address) is `sim --forgers F` and the tests at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::Millis;
use super::output::{Action, Ctx};
use crate::descriptor::{Admitted, Descriptor, DescriptorError, UncheckedDescriptor};
use crate::identity::NodeId;
use crate::path::Candidate;

/// A gossiped descriptor whose signature is not checked yet.
#[derive(Debug, Clone)]
struct Claim {
    admitted: Admitted,
    /// The peer whose pull reply carried it.
    from: Option<NodeId>,
    /// Whether that peer said it had checked it.
    vouched: bool,
}

/// What we hold about one node.
#[derive(Debug, Clone)]
pub(super) struct Known {
    /// The newest descriptor whose signature we checked, and its gossip
    /// form.
    checked: Option<(Descriptor, Admitted)>,
    /// A claim newer than `checked`, unchecked.
    claim: Option<Claim>,
    /// When we first saw this node (never from its descriptor's timestamp).
    pub(super) first_seen_ms: Millis,
    pub(super) last_seen_ms: Millis,
    /// The address we reached this node at, once we have.
    pub(super) verified_addr: Option<SocketAddr>,
}

impl Known {
    /// The checked descriptor.
    pub(super) fn descriptor(&self) -> Option<&Descriptor> {
        self.checked.as_ref().map(|(d, _)| d)
    }

    /// The timestamp freshness is judged by: the checked descriptor's, or
    /// the claim's for an entry that has nothing checked (an unchecked
    /// claim never makes a stale checked descriptor look fresh).
    fn timestamp_ms(&self) -> u64 {
        match (&self.checked, &self.claim) {
            (Some((d, _)), _) => d.timestamp_ms(),
            (None, Some(c)) => c.admitted.timestamp_ms(),
            (None, None) => 0,
        }
    }

    /// Nothing checked: a claim at most (eviction goes here first).
    fn unchecked(&self) -> bool {
        self.checked.is_none()
    }
}

/// A claim that failed its signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The peer that vouched for it, to penalise (None: nobody vouched).
    pub(super) blame: Option<NodeId>,
}

/// Known descriptors, by node id. See the module docs.
#[derive(Debug)]
pub(super) struct Directory {
    me: NodeId,
    max: usize,
    known: BTreeMap<NodeId, Known>,
    /// The ids of `known`, in no order: uniform random picks for pull
    /// answers.
    order: Vec<NodeId>,
}

impl Directory {
    pub(super) fn new(me: NodeId, max: usize) -> Directory {
        Directory {
            me,
            max: max.max(1),
            known: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.known.len()
    }

    pub(super) fn get(&self, id: &NodeId) -> Option<&Known> {
        self.known.get(id)
    }

    /// The checked descriptor of `id`.
    pub(super) fn descriptor(&self, id: &NodeId) -> Option<&Descriptor> {
        self.known.get(id).and_then(Known::descriptor)
    }

    /// Lowers `id`'s first-seen time to `t` (restored guards keep their
    /// age).
    pub(super) fn first_seen_at_most(&mut self, id: &NodeId, t: Millis) {
        if let Some(k) = self.known.get_mut(id) {
            k.first_seen_ms = k.first_seen_ms.min(t);
        }
    }

    /// Remember a checked descriptor. It replaces an older checked one and
    /// any claim it is at least as new as. `verified_addr` is set when we
    /// just reached the node at that address.
    pub(super) fn remember(
        &mut self,
        now: Millis,
        d: Descriptor,
        verified_addr: Option<SocketAddr>,
    ) {
        let id = d.node_id();
        if id == self.me {
            return;
        }
        if let Some(k) = self.known.get_mut(&id) {
            let newer = k
                .checked
                .as_ref()
                .is_none_or(|(v, _)| d.timestamp_ms() >= v.timestamp_ms());
            if newer {
                if k.descriptor().is_none_or(|v| v.address() != d.address()) {
                    k.verified_addr = None;
                }
                if k.claim
                    .as_ref()
                    .is_some_and(|c| c.admitted.timestamp_ms() <= d.timestamp_ms())
                {
                    k.claim = None;
                }
                let a = d.admitted();
                k.checked = Some((d, a));
            }
            k.last_seen_ms = now;
            if verified_addr.is_some() {
                k.verified_addr = verified_addr;
            }
            return;
        }
        let a = d.admitted();
        self.insert(Known {
            checked: Some((d, a)),
            claim: None,
            first_seen_ms: now,
            last_seen_ms: now,
            verified_addr,
        });
    }

    /// Offer a gossiped descriptor whose identity was admitted. Returns the
    /// claims refused while settling (see the module docs).
    pub(super) fn offer(
        &mut self,
        now: Millis,
        a: Admitted,
        from: Option<NodeId>,
        vouched: bool,
    ) -> Vec<Refusal> {
        let id = a.node_id();
        if id == self.me {
            return Vec::new();
        }
        let claim = Claim {
            admitted: a,
            from,
            vouched,
        };
        let Some(k) = self.known.get_mut(&id) else {
            self.insert(Known {
                checked: None,
                claim: Some(claim),
                first_seen_ms: now,
                last_seen_ms: now,
                verified_addr: None,
            });
            return Vec::new();
        };
        // An unchecked claim does not count as seeing the node again.
        let a = &claim.admitted;
        if k.checked
            .as_ref()
            .is_some_and(|(v, va)| a == va || a.timestamp_ms() <= v.timestamp_ms())
        {
            // What we checked already, or older: nothing to learn.
            return Vec::new();
        }
        match k.claim.take() {
            Some(old) if old.admitted == *a => {
                k.claim = Some(old);
                Vec::new()
            }
            None => {
                k.claim = Some(claim);
                Vec::new()
            }
            // Two unchecked claims for one id: settle both now.
            Some(old) => {
                let refused = [old, claim]
                    .into_iter()
                    .filter_map(|c| self.check_claim(now, c))
                    .collect();
                self.drop_if_empty(&id);
                refused
            }
        }
    }

    /// Checks the claim held for `id`, if any: it becomes the checked
    /// descriptor, or is dropped alone.
    pub(super) fn settle(&mut self, now: Millis, id: &NodeId) -> Option<Refusal> {
        let claim = self.known.get_mut(id)?.claim.take()?;
        let refused = self.check_claim(now, claim);
        self.drop_if_empty(id);
        refused
    }

    fn check_claim(&mut self, now: Millis, c: Claim) -> Option<Refusal> {
        match c.admitted.verify() {
            Ok(d) => {
                self.remember(now, d, None);
                None
            }
            Err(_) => Some(Refusal {
                blame: c.from.filter(|_| c.vouched),
            }),
        }
    }

    /// An entry left with nothing checked and no claim (every claim it had
    /// was forged) is dropped: forgeries leave no trace.
    fn drop_if_empty(&mut self, id: &NodeId) {
        if self
            .known
            .get(id)
            .is_some_and(|k| k.checked.is_none() && k.claim.is_none())
        {
            self.remove(id);
        }
    }

    /// Whether we already hold exactly this descriptor (checked or claimed);
    /// if so, refreshes its last-seen time and says whether it is still
    /// fresh. Gossip repeats itself: a repeat needs no proof-of-work check.
    pub(super) fn repeat(
        &mut self,
        now: Millis,
        u: &UncheckedDescriptor,
        max_age: Millis,
    ) -> Option<bool> {
        let k = self.known.get_mut(&u.claimed_id())?;
        let (ts, checked) =
            if let Some((_, va)) = k.checked.as_ref().filter(|(_, va)| u.same_as(va)) {
                (va.timestamp_ms(), true)
            } else if let Some(c) = k.claim.as_ref().filter(|c| u.same_as(&c.admitted)) {
                (c.admitted.timestamp_ms(), false)
            } else {
                return None;
            };
        let fresh = now.saturating_sub(ts) <= max_age;
        // Only a repeat of what we checked counts as seeing the node
        // again (forged claims must not keep an entry alive).
        if fresh && checked {
            k.last_seen_ms = now;
        }
        Some(fresh)
    }

    /// Relays we could build through: fresh, not us, with the relay flag and
    /// address of the checked descriptor. An entry with only a claim is
    /// listed by its claimed flag and address, but every caller checks a
    /// pick ([`Directory::settle`]) before using it, and a claim never hides
    /// a checked descriptor.
    pub(super) fn candidates(&self, now: Millis, max_age: Millis) -> Vec<Candidate> {
        self.known
            .iter()
            .filter_map(|(id, k)| {
                let (relay, addr) = match (&k.checked, &k.claim) {
                    (Some((d, _)), _) => (d.is_relay(), d.address()),
                    (None, Some(c)) => (c.admitted.claims_relay(), c.admitted.claimed_address()),
                    (None, None) => return None,
                };
                let fresh = now.saturating_sub(k.timestamp_ms()) <= max_age;
                (relay && fresh && *id != self.me).then_some(())?;
                Some(Candidate {
                    id: *id,
                    addr: k.verified_addr.or(addr)?,
                    first_seen_ms: k.first_seen_ms,
                })
            })
            .collect()
    }

    /// The gossip form of what we hold for `id`, and whether we checked it
    /// (a checked descriptor is preferred over a newer claim).
    pub(super) fn gossip_form(&self, id: &NodeId) -> Option<(Admitted, bool)> {
        let k = self.known.get(id)?;
        match (&k.checked, &k.claim) {
            (Some((_, a)), _) => Some((a.clone(), true)),
            (None, Some(c)) => Some((c.admitted.clone(), false)),
            (None, None) => None,
        }
    }

    /// An id drawn uniformly from those held, by the random number `r`.
    /// (Not the first id after a random point: ids follow gaps of unequal
    /// size, so that would favour the same few ids at every node and leave
    /// others almost never gossiped, slowing the discovery that bounds an
    /// attacker's share of samples.)
    pub(super) fn random_id(&self, r: u64) -> Option<NodeId> {
        let n = self.order.len() as u64;
        (n > 0).then(|| self.order[(r % n) as usize])
    }

    fn insert(&mut self, k: Known) {
        let id = match (&k.checked, &k.claim) {
            (Some((d, _)), _) => d.node_id(),
            (None, Some(c)) => c.admitted.node_id(),
            (None, None) => return,
        };
        if self.known.insert(id, k).is_none() {
            self.order.push(id);
        }
    }

    fn remove(&mut self, id: &NodeId) {
        if self.known.remove(id).is_some()
            && let Some(at) = self.order.iter().position(|x| x == id)
        {
            self.order.swap_remove(at);
        }
    }

    /// Drops entries beyond the limit, outside `keep`: unchecked ones
    /// first (a flood of claims evicts claims, not checked relays), then
    /// unreached ones, least recently seen first.
    pub(super) fn trim(&mut self, keep: &BTreeSet<NodeId>) {
        while self.known.len() > self.max {
            let Some(victim) = self
                .known
                .iter()
                .filter(|(id, _)| !keep.contains(id))
                .min_by_key(|(id, k)| {
                    (
                        !k.unchecked(),
                        k.verified_addr.is_some(),
                        k.last_seen_ms,
                        **id,
                    )
                })
                .map(|(id, _)| *id)
            else {
                return;
            };
            self.remove(&victim);
        }
    }

    /// The checked descriptor of relay `id`, checking a newer gossiped
    /// claim first (a bad claim is dropped alone, and its refusal goes to
    /// the node; the id and its checked descriptor stay). None for
    /// non-relays and stale descriptors.
    pub(super) fn verified(&mut self, cx: &mut Ctx<'_>, id: NodeId) -> Option<Descriptor> {
        if let Some(r) = self.settle(cx.now, &id) {
            cx.out.act(Action::Refused(r));
        }
        let max_age = cx.config.descriptor_max_age_ms;
        let now = cx.now;
        self.descriptor(&id)
            .filter(|d| d.is_relay() && now.saturating_sub(d.timestamp_ms()) <= max_age)
            .cloned()
    }

    /// Checks a descriptor that arrived in a push or an EXTEND, skipping
    /// the signature and proof of work when it is identical to one checked
    /// before (ours included: gossip repeats descriptors a lot).
    pub(super) fn check(
        &self,
        cx: &Ctx<'_>,
        u: UncheckedDescriptor,
        own: &Descriptor,
    ) -> Result<Descriptor, DescriptorError> {
        let max_age = cx.config.descriptor_max_age_ms;
        if let Some(v) = self.descriptor(&u.claimed_id())
            && let Some(result) = u.check_against_verified(v, cx.now, max_age)
        {
            return result;
        }
        if u.claimed_id() == own.node_id()
            && let Some(result) = u.check_against_verified(own, cx.now, max_age)
        {
            return result;
        }
        u.check(cx.now, max_age, cx.config.pow)
    }

    /// Whether entries beyond the limit are held.
    pub(super) fn over_limit(&self) -> bool {
        self.known.len() > self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{Descriptor, flags};
    use crate::identity::NodeIdentity;
    use crate::link::tests::node;
    use crate::pow::PowParams;

    const NOW: Millis = 1_800_000_000_000;

    /// A descriptor with the honest node's keys and proof of work but
    /// fields of the forger's choosing and a signature by another key:
    /// what anyone can make from a gossiped descriptor.
    fn forged(honest: &Descriptor, flags: u8, ts: Millis) -> Admitted {
        let (other, _) = node(99);
        let junk = (flags != 0).then(|| "203.0.113.9:9".parse().unwrap());
        let mut bytes = Descriptor::sign(&other, flags, junk, ts, Vec::new()).to_bytes();
        let honest_bytes = honest.to_bytes();
        // Keys and proof-of-work nonce sit after version and flags: copy
        // the honest ones over the forger's.
        bytes[2..2 + 32 + 32 + 8].copy_from_slice(&honest_bytes[2..2 + 32 + 32 + 8]);
        let u = Descriptor::decode(&bytes).unwrap();
        assert_eq!(u.claimed_id(), honest.node_id());
        u.admit(ts.max(NOW), u64::MAX, PowParams::TESTNET).unwrap()
    }

    fn dir() -> Directory {
        let (me, _) = node(1);
        Directory::new(me.node_id(), 100)
    }

    fn honest(i: u8, ts: Millis) -> (NodeIdentity, Descriptor) {
        let (id, d0) = node(i);
        let d = Descriptor::sign(&id, flags::RELAY, d0.address(), ts, Vec::new());
        (id, d)
    }

    #[test]
    fn forged_claims_never_displace_a_checked_relay() {
        let mut dir = dir();
        let (_, d) = honest(2, NOW - 1000);
        let id = d.node_id();
        dir.remember(NOW, d.clone(), None);
        // Newer forgeries (no relay flag), vouched for by a peer.
        let liar = NodeId::from_bytes([7; 32]);
        assert!(
            dir.offer(NOW, forged(&d, 0, NOW), Some(liar), true)
                .is_empty()
        );
        // Still a candidate with its real flag and address.
        let c = dir.candidates(NOW, u64::MAX);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].id, Some(c[0].addr)), (id, d.address()));
        assert_eq!(dir.descriptor(&id), Some(&d));
        // A second, different forgery: both claims are settled at once.
        let refusals = dir.offer(NOW, forged(&d, 0, NOW + 1), Some(liar), true);
        assert_eq!(refusals, vec![Refusal { blame: Some(liar) }; 2]);
        // Use settles the claim: refused, id and checked descriptor kept.
        assert!(
            dir.offer(NOW, forged(&d, 0, NOW + 2), None, false)
                .is_empty()
        );
        assert_eq!(dir.settle(NOW, &id), Some(Refusal { blame: None }));
        assert_eq!(dir.descriptor(&id), Some(&d));
        assert_eq!(dir.len(), 1);
    }

    #[test]
    fn a_forged_first_claim_loses_to_the_honest_one() {
        let mut dir = dir();
        let (_, d) = honest(2, NOW - 5000);
        let id = d.node_id();
        // The forgery arrives first and is newer than the real descriptor.
        dir.offer(NOW, forged(&d, 0, NOW), None, false);
        assert!(dir.descriptor(&id).is_none());
        // The honest one arrives (unvouched): both are checked, it wins.
        let refusals = dir.offer(NOW, d.admitted(), None, false);
        assert_eq!(refusals, vec![Refusal { blame: None }]);
        assert_eq!(dir.descriptor(&id), Some(&d));
        // It is passed on as checked.
        assert_eq!(dir.gossip_form(&id), Some((d.admitted(), true)));
    }

    #[test]
    fn honest_updates_are_taken_on_use() {
        let mut dir = dir();
        let (ident, d) = honest(2, NOW - 5000);
        let id = d.node_id();
        dir.remember(NOW, d.clone(), None);
        let newer = Descriptor::sign(&ident, flags::RELAY, d.address(), NOW - 10, Vec::new());
        dir.offer(NOW, newer.admitted(), None, false);
        // Passed on as the checked one until checked.
        assert_eq!(dir.gossip_form(&id), Some((d.admitted(), true)));
        assert_eq!(dir.settle(NOW, &id), None);
        assert_eq!(dir.descriptor(&id), Some(&newer));
        // An older copy changes nothing.
        dir.offer(NOW, d.admitted(), None, false);
        assert_eq!(dir.settle(NOW, &id), None);
        assert_eq!(dir.descriptor(&id), Some(&newer));
    }

    #[test]
    fn forgeries_cannot_age_out_or_refresh_honest_entries() {
        let mut dir = dir();
        // An honest relay known by its (unchecked) claim since NOW.
        let (_, d) = honest(2, NOW - 5000);
        let id = d.node_id();
        dir.offer(NOW, d.admitted(), None, false);
        // Much later a forger makes its claim compete: the honest one is
        // checked and keeps the age we gave it.
        let later = NOW + 3_600_000;
        dir.offer(later, forged(&d, 0, later), None, false);
        assert_eq!(dir.descriptor(&id), Some(&d));
        assert_eq!(dir.get(&id).unwrap().first_seen_ms, NOW);
        // A stale checked descriptor is not made fresh by a fresh claim.
        let max_age = 3_600_000;
        dir.offer(later, forged(&d, flags::RELAY, later), None, false);
        assert!(dir.candidates(later, max_age).is_empty());
        // Claims alone never refresh when we last saw it.
        let seen = dir.get(&id).unwrap().last_seen_ms;
        dir.offer(later + 1, forged(&d, 0, later + 1), None, false);
        assert_eq!(dir.get(&id).map(|k| k.last_seen_ms), Some(seen));
    }

    #[test]
    fn a_flood_of_claims_evicts_claims_not_checked_relays() {
        let (me, _) = node(1);
        let mut dir = Directory::new(me.node_id(), 4);
        let checked: Vec<Descriptor> = (2..5).map(|i| honest(i, NOW).1).collect();
        for d in &checked {
            dir.remember(NOW, d.clone(), None);
        }
        // Claims for 20 other (proof-of-work) ids, seen after the relays.
        for i in 10..30 {
            let (_, d) = honest(i, NOW);
            dir.offer(NOW + 1000, d.admitted(), None, false);
            dir.trim(&BTreeSet::new());
        }
        assert_eq!(dir.len(), 4);
        for d in &checked {
            assert!(
                dir.descriptor(&d.node_id()).is_some(),
                "a checked relay went"
            );
        }
    }
}
