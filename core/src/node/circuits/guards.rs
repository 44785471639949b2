//! Guards and vanguards: who our circuits start with, and the rest of a
//! path.
//!
//! Guards and vanguards come from our peer-sampling output, a near-uniform
//! sample of the membership in which an attacker holds about its population
//! share however it floods (see [`crate::sampling`]). Drawing from every
//! descriptor we hold would favour whoever we heard of first (the seeds) or
//! whoever gossips hardest. Relays a build recently failed to reach are
//! avoided after the guard for a while (never the guard itself: only it
//! could fake such failures, and it knows us anyway).

use std::collections::{BTreeMap, BTreeSet};

use rand_core::RngCore;

use super::{GuardRecord, GuardStatus, World};
use crate::descriptor::Descriptor;
use crate::identity::NodeId;
use crate::node::directory::Directory;
use crate::node::fault::{Cause, Fault};
use crate::node::gossip::Gossip;
use crate::node::output::Ctx;
use crate::node::{Config, Event, LinkId, Millis};
use crate::path::{self, Candidate, CircuitParams};

#[derive(Debug)]
struct Guard {
    cand: Candidate,
    descriptor: Descriptor,
    added_ms: Millis,
    unreachable_since: Option<Millis>,
    retry_at_ms: Millis,
}

impl Guard {
    /// Not marked unreachable, or due for a retry.
    fn usable(&self, now: Millis) -> bool {
        self.unreachable_since.is_none() || now >= self.retry_at_ms
    }
}

/// The pool guards and vanguards are drawn from: relays in our peer sample
/// (near-uniform however others flood) with a fresh descriptor.
fn pool(now: Millis, config: &Config, dir: &Directory, gossip: &Gossip) -> Vec<Candidate> {
    let sample: BTreeSet<NodeId> = gossip.sample().into_iter().collect();
    let mut pool = dir.candidates(now, config.descriptor_max_age_ms);
    pool.retain(|c| sample.contains(&c.id));
    pool
}

/// Relays of `pool` this node has known for the guard minimum age.
fn aged(pool: &[Candidate], now: Millis, p: &CircuitParams) -> usize {
    pool.iter()
        .filter(|c| now.saturating_sub(c.first_seen_ms) >= p.guard_min_age_ms)
        .count()
}

/// Aged relays needed before guards are picked from `pool`: at least a
/// quarter of it (picking earlier would draw from the few relays heard of
/// first), and enough for one path.
fn aged_needed(pool: &[Candidate], p: &CircuitParams) -> usize {
    p.hops.max(pool.len().div_ceil(4))
}

/// Our guards (first = primary), vanguards and suspects.
#[derive(Debug, Default)]
pub(super) struct Guards {
    guards: Vec<Guard>,
    vanguards: Vec<(Candidate, Millis)>,
    /// Relays a build recently failed to reach (never guards): avoided
    /// as later hops until the time given.
    suspects: BTreeMap<NodeId, Millis>,
    /// Builds in a row that failed to reach each vanguard.
    vanguard_failures: BTreeMap<NodeId, u32>,
}

impl Guards {
    pub(super) fn ids(&self) -> Vec<NodeId> {
        self.guards.iter().map(|g| g.cand.id).collect()
    }

    pub(super) fn vanguard_ids(&self) -> Vec<NodeId> {
        self.vanguards.iter().map(|(c, _)| c.id).collect()
    }

    /// Our guards as the driver persists them.
    pub(super) fn records(&self) -> Vec<GuardRecord> {
        self.guards
            .iter()
            .map(|g| GuardRecord {
                id: g.cand.id,
                descriptor: g.descriptor.to_bytes(),
                added_ms: g.added_ms,
            })
            .collect()
    }

    /// Restores persisted guards. Records that do not decode or verify
    /// (signature and proof of work; their age is not checked: the guard
    /// re-sends a fresh descriptor when we link to it) are skipped.
    pub(super) fn restore(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        records: &[GuardRecord],
    ) -> usize {
        let now = cx.now;
        let me = cx.identity.node_id();
        for r in records {
            if self.guards.len() >= cx.config.circuits.guards {
                break;
            }
            let Ok(u) = Descriptor::decode(&r.descriptor) else {
                continue;
            };
            let Ok(d) = u.check(now, u64::MAX, cx.config.pow) else {
                continue;
            };
            let Some(addr) = d.address() else {
                continue;
            };
            if d.node_id() != r.id || !d.is_relay() || r.id == me {
                continue;
            }
            let cand = Candidate {
                id: r.id,
                addr,
                first_seen_ms: r.added_ms,
            };
            let current: Vec<Candidate> = self.guards.iter().map(|g| g.cand).collect();
            if !path::compatible(&cx.config.circuits, &current, &cand) {
                continue;
            }
            w.dir.remember(now, d.clone(), None);
            w.dir.first_seen_at_most(&r.id, r.added_ms);
            self.guards.push(Guard {
                cand,
                descriptor: d,
                added_ms: r.added_ms,
                unreachable_since: None,
                retry_at_ms: 0,
            });
        }
        self.guards.len()
    }

    /// Whether guard `id` is marked unreachable (None: not a guard).
    #[cfg(test)]
    pub(super) fn is_unreachable(&self, id: NodeId) -> Option<bool> {
        self.guards
            .iter()
            .find(|g| g.cand.id == id)
            .map(|g| g.unreachable_since.is_some())
    }

    /// A link to `peer` came up: if it is a guard, it is reachable.
    pub(super) fn reached(&mut self, peer: NodeId) {
        if let Some(g) = self.guards.iter_mut().find(|g| g.cand.id == peer) {
            g.unreachable_since = None;
        }
    }

    /// Our own dial of `peer` failed: if it is a guard, it is retried
    /// later, and retired after a guard lifetime of failures.
    pub(super) fn unreachable(&mut self, cx: &Ctx<'_>, peer: NodeId) {
        if let Some(g) = self.guards.iter_mut().find(|g| g.cand.id == peer) {
            g.unreachable_since.get_or_insert(cx.now);
            g.retry_at_ms = cx.now + cx.config.circuits.guard_retry_ms;
        }
    }

    /// `peer` vouched for a forged descriptor: it is no longer our guard
    /// or vanguard.
    pub(super) fn drop_liar(&mut self, cx: &mut Ctx<'_>, peer: NodeId) {
        let before = self.guards.len();
        self.guards.retain(|g| g.cand.id != peer);
        if self.guards.len() != before {
            cx.event(Event::GuardsChanged);
        }
        self.vanguards.retain(|(c, _)| c.id != peer);
    }

    /// A build through vanguard `id` succeeded.
    pub(super) fn vanguard_reached(&mut self, id: NodeId) {
        self.vanguard_failures.remove(&id);
    }

    /// A build failed to reach `hop` (after at least the guard answered):
    /// it becomes a suspect, and a vanguard (`second`: it was the second
    /// hop) that builds keep failing to reach is replaced (crashed or
    /// left) rather than kept in a dead set.
    pub(super) fn build_failed_at(
        &mut self,
        cx: &Ctx<'_>,
        hop: NodeId,
        second: bool,
        max_failures: u32,
    ) {
        let c = cx.config;
        let until = cx.now + c.circuits.guard_retry_ms.max(10 * c.round_ms);
        self.suspects.insert(hop, until);
        if self.suspects.len() > 1024 {
            self.suspects.pop_first();
        }
        if second {
            let n = self.vanguard_failures.entry(hop).or_default();
            *n += 1;
            if *n >= max_failures {
                self.vanguard_failures.remove(&hop);
                self.vanguards.retain(|(c, _)| c.id != hop);
            }
        }
    }

    /// Retires, picks and tops up guards and vanguards.
    pub(super) fn maintain(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>) {
        let now = cx.now;
        let p = cx.config.circuits.clone();
        let before = self.ids();
        // Retire guards after their lifetime, or after being unreachable
        // that long.
        self.guards.retain(|g| {
            now < g.added_ms + p.guard_lifetime_ms
                && g.unreachable_since
                    .is_none_or(|t| now < t + p.guard_lifetime_ms)
        });
        // Guards are picked only when circuits are wanted, and only once we
        // know enough aged relays to build a path at all (otherwise the
        // first nodes we hear of, typically the seeds, would be everyone's
        // guards).
        let wanted = p.circuits_wanted > 0 || !cx.config.relay;
        let vanguards_due = self.vanguards.iter().any(|(_, until)| now >= *until);
        if !wanted
            || (self.guards.len() >= p.guards
                && self.vanguards.len() >= p.vanguards
                && !vanguards_due)
        {
            if self.ids() != before {
                cx.event(Event::GuardsChanged);
            }
            return;
        }
        let mut pool = pool(now, cx.config, w.dir, w.gossip);
        let ready = aged(&pool, now, &p) >= aged_needed(&pool, &p);
        let mut tries = if ready { 0 } else { 8 };
        while self.guards.len() < p.guards && tries < 8 {
            tries += 1;
            let current: Vec<Candidate> = self.guards.iter().map(|g| g.cand).collect();
            let Some(c) = path::pick_guard(cx.rng, &p, now, &pool, &current) else {
                break;
            };
            pool.retain(|x| x.id != c.id);
            let Some(d) = w.dir.verified(cx, c.id) else {
                continue;
            };
            self.guards.push(Guard {
                cand: c,
                descriptor: d,
                added_ms: now,
                unreachable_since: None,
                retry_at_ms: 0,
            });
        }
        if self.ids() != before {
            cx.event(Event::GuardsChanged);
        }
        // Vanguards: replace expired ones, top up.
        self.vanguards.retain(|(_, until)| now < *until);
        let mut tries = if ready { 0 } else { 8 };
        while self.vanguards.len() < p.vanguards && tries < 8 {
            tries += 1;
            let taken: Vec<NodeId> = self.vanguard_ids();
            let Some(c) = path::pick(cx.rng, &pool, |c| !taken.contains(&c.id)) else {
                break;
            };
            pool.retain(|x| x.id != c.id);
            if w.dir.verified(cx, c.id).is_none() {
                continue;
            }
            // Spread expiry over [lifetime, 2 * lifetime) so the set does
            // not turn over all at once.
            let spread = cx.rng.next_u64() % p.vanguard_lifetime_ms.max(1);
            self.vanguards
                .push((c, now + p.vanguard_lifetime_ms + spread));
        }
    }

    /// Where guard selection stands at `now`: the same pool and rules as
    /// [`Guards::maintain`], counted, nothing changed.
    pub(super) fn status(
        &self,
        now: Millis,
        config: &Config,
        dir: &Directory,
        gossip: &Gossip,
    ) -> GuardStatus {
        let p = &config.circuits;
        let pool = pool(now, config, dir, gossip);
        let next_aged_in_ms = pool
            .iter()
            .map(|c| {
                c.first_seen_ms
                    .saturating_add(p.guard_min_age_ms)
                    .saturating_sub(now)
            })
            .filter(|&wait| wait > 0)
            .min();
        GuardStatus {
            hops: p.hops,
            candidates: pool.len(),
            aged: aged(&pool, now, p),
            aged_needed: aged_needed(&pool, p),
            next_aged_in_ms,
            guards: self.guards.len(),
            guards_wanted: p.guards,
            guards_unreachable: self.guards.iter().filter(|g| !g.usable(now)).count(),
        }
    }

    /// The guard to build through: the first one we can currently reach.
    fn primary(&self, now: Millis) -> Option<Candidate> {
        self.guards.iter().find(|g| g.usable(now)).map(|g| g.cand)
    }

    /// A path for a new circuit and its hops' checked descriptors: the
    /// primary guard, a vanguard, then relays from the directory. With
    /// `end` (a hop someone else chose, to be appended), the free hops
    /// after the vanguard avoid it and its prefix where they can; the
    /// guard and vanguard are never refused for it, or whether a build to
    /// a chosen relay starts would tell the chooser our guard and
    /// vanguards.
    pub(super) fn path(
        &mut self,
        cx: &mut Ctx<'_>,
        w: &mut World<'_>,
        end: Option<&Candidate>,
    ) -> Option<(Vec<Candidate>, Vec<Descriptor>)> {
        let now = cx.now;
        let p = cx.config.circuits.clone();
        let guard = self.primary(now)?;
        let fits = |c: &Candidate| end.is_none_or(|e| path::compatible(&p, &[*e], c));
        // Relays that just failed a build are avoided after the guard (a
        // second hop only if another vanguard is left: the set stays
        // fixed). Guards are never avoided this way.
        self.suspects.retain(|_, until| now < *until);
        let suspects = &self.suspects;
        let all_vanguards: Vec<Candidate> = self.vanguards.iter().map(|(c, _)| *c).collect();
        let mut vanguards: Vec<Candidate> = all_vanguards
            .iter()
            .copied()
            .filter(|c| !suspects.contains_key(&c.id))
            .collect();
        if vanguards.iter().all(|v| v.id == guard.id) {
            vanguards = all_vanguards;
        }
        let mut pool = w.dir.candidates(now, cx.config.descriptor_max_age_ms);
        pool.retain(|c| !suspects.contains_key(&c.id));
        let avoiding: Vec<Candidate> = pool.iter().copied().filter(|c| fits(c)).collect();
        let path = match end {
            Some(_) => path::pick_rest(cx.rng, &p, guard, &vanguards, &avoiding)
                .or_else(|| path::pick_rest(cx.rng, &p, guard, &vanguards, &pool)),
            None => path::pick_rest(cx.rng, &p, guard, &vanguards, &pool),
        }?;
        let mut descriptors = Vec::with_capacity(path.len());
        for (i, hop) in path.iter().enumerate() {
            let d = if i == 0 {
                self.guards
                    .iter()
                    .find(|g| g.cand.id == hop.id)
                    .map(|g| g.descriptor.clone())
            } else {
                w.dir.verified(cx, hop.id)
            };
            descriptors.push(d?);
        }
        Some((path, descriptors))
    }

    /// Client-only nodes link to their guards and nothing else (once they
    /// have a guard link, the other links go).
    pub(super) fn client_links(&mut self, cx: &mut Ctx<'_>, w: &mut World<'_>) {
        if cx.config.relay || self.guards.is_empty() {
            return;
        }
        let now = cx.now;
        let guards = self.ids();
        for g in &self.guards {
            let retry = g.unreachable_since.is_none() || now >= g.retry_at_ms;
            if w.links.to_peer(&g.cand.id).is_none() && retry {
                w.dialer
                    .dial_expected(cx, w.links, g.cand.addr, g.cand.id, true);
            }
        }
        if guards.iter().any(|g| w.links.to_peer(g).is_some()) {
            let others: Vec<LinkId> = w.links.up_except(&guards);
            for link in others {
                cx.cut(link, Fault::Local(Cause::Evicted));
            }
        }
    }
}
