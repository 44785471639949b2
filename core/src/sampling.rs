//! Byzantine-resilient peer sampling after Brahms (Bortnikov, Gurevich,
//! Keidar, Kliot and Shraer, "Brahms: Byzantine resilient random membership
//! sampling", Computer Networks 53(13), 2009).
//!
//! [`Brahms`] is pure data over [`NodeId`]s: the embedding node stores the
//! descriptors, does the messaging and decides when a round ends. Each node
//! keeps two things:
//! - a **view** of `l1` ids ([`BrahmsParams::view_size`]), renewed every
//!   round from ids pushed to us, ids pulled from others' views and a few of
//!   our own samples. The view is what we gossip with and what we answer a
//!   pull with; it mixes quickly but an attacker can bias it.
//! - `l2` **samplers** ([`BrahmsParams::sample_size`]), each a min-wise
//!   independent [`Sampler`]: it remembers, of all ids ever fed to it, the one
//!   with the smallest keyed BLAKE3 hash under its own secret key. Their
//!   outputs, [`Brahms::sample`], are the near-uniform random sample of the
//!   network the rest of veil draws peers from.
//!
//! # Call order (one round)
//! 1. [`Brahms::push_targets`]: send a push (our own descriptor) to each.
//! 2. [`Brahms::pull_targets`]: send a pull request to each.
//! 3. While the round lasts: [`Brahms::on_push`] for each authenticated push
//!    received, [`Brahms::on_pull_reply`] for each reply to one of our pulls,
//!    and answer other nodes' pulls with [`Brahms::view`].
//! 4. [`Brahms::end_round`] when the round timer fires.
//!
//! [`Brahms::remove`] (an id proved dead or invalid) and [`Brahms::sample`]
//! may be called at any time; [`Brahms::bootstrap`] seeds the state from a
//! seed list once its peers were reached.
//!
//! # Security argument, and what it relies on
//! Claim: an attacker holding `m` valid identities among `N` cannot make
//! honest nodes' samples hold more than about its population share `m/N` of
//! attacker ids, however it floods, and a push flood cannot take over views.
//! - A sampler keeps the minimum keyed hash over the **set** of distinct ids
//!   it was fed. Once an honest id and the `m` attacker ids have all been seen,
//!   each of them is equally likely to be that minimum (the key is secret and
//!   random, so the attacker cannot grind ids with small hashes), whatever
//!   the order or number of repetitions. Repeating an id gains nothing. So
//!   the sample converges to uniform over the ids seen, and the attacker's
//!   share to `m / (ids seen)`, which tends to `m / N` as the honest ids
//!   reach the stream through pushes and pulls.
//! - That needs **ids to cost work**: the caller passes to this module only
//!   ids of descriptors it verified (signature and PoW, see
//!   [`crate::pow`]); otherwise free fake ids would make `m` unbounded.
//! - It needs **pushes to be authenticated self-pushes**: the caller calls
//!   [`Brahms::on_push`] only with the authenticated id of the link the push
//!   came on, and accepts at most one push per peer per round. An attacker
//!   can then push at most `m` times a round, and since honest nodes receive
//!   about [`BrahmsParams::max_pushes_accepted`] pushes a round, a node that
//!   gets more than that assumes a flood and keeps its view ([`Brahms`]'s
//!   flood limit). Pushes are still fed to the samplers, which is harmless
//!   by the first point.
//! - Pulls can bias the view (an attacker answers a pull with attacker ids
//!   only), which is why the view is not the sample. The view also takes a
//!   `gamma` share from the samplers, which keeps honest ids flowing into it,
//!   and the pull share is bounded by `beta`. Pull replies must be answers to
//!   pulls we sent this round, each bounded to `view_size` ids (the caller
//!   checks that; this module also ignores extra or repeated replies).
//! - Sampler keys come from the caller's RNG, which must be secret (the
//!   daemon seeds it from the OS); a sampler found dead is re-keyed with a
//!   one-way derivation of its old key, so it stays secret.
//!
//! Not covered here: eclipse of a node that has no honest contact at all, and
//! the liveness probing of sampled ids (the node does it and calls
//! [`Brahms::remove`]).

use std::cmp::Ordering;
use std::fmt;

use rand_core::RngCore;

use crate::identity::NodeId;

/// BLAKE3 `derive_key` context for re-keying a sampler after a reset.
const SAMPLER_REKEY_CONTEXT: &str = "veil 2025 brahms sampler rekey v1";

/// Ids fed to all samplers are remembered (up to this many) so that a
/// repeated id is not hashed `l2` times again. Feeding an id twice is a
/// no-op for a min-wise sampler, so this changes only the cost, never the
/// result. The cache is cleared when full and whenever a sampler is reset.
/// 1024 ids cost 32 KiB per node.
const FED_CACHE_CAP: usize = 1024;

/// Parameters of [`Brahms`]. `alpha + beta + gamma` should be 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BrahmsParams {
    /// `l1`: ids in the view, the size of a pull reply.
    pub view_size: usize,
    /// `l2`: number of samplers, the size of [`Brahms::sample`].
    pub sample_size: usize,
    /// Share of the view renewed from pushes; also the push rate and the
    /// flood limit.
    pub alpha: f64,
    /// Share of the view renewed from pull replies; also the pull rate.
    pub beta: f64,
    /// Share of the view taken from our own samples ("history").
    pub gamma: f64,
}

impl BrahmsParams {
    /// `l1 = l2 = 24`, `alpha = beta = 0.45`, `gamma = 0.1` (the shares the
    /// Brahms paper uses). So each round a node pushes to 11 and pulls from
    /// 11 view members, accepts at most 11 pushes, and builds its new view
    /// from 11 pushed, 11 pulled and 2 sampled ids. 24 is about `N^(1/3)`
    /// for the tens of thousands of nodes veil aims at, the size Brahms
    /// suggests; feeding a round's ids (at most `11 + 11 * 24`) to 24
    /// samplers costs a few thousand BLAKE3 hashes, well under a
    /// millisecond.
    pub const DEFAULT: BrahmsParams = BrahmsParams {
        view_size: 24,
        sample_size: 24,
        alpha: 0.45,
        beta: 0.45,
        gamma: 0.1,
    };

    /// `ceil(alpha * l1)`, at most `l1`: view members we push to each round.
    pub fn pushes_per_round(&self) -> usize {
        share(self.alpha, self.view_size)
    }

    /// `ceil(beta * l1)`, at most `l1`: view members we pull from each round.
    pub fn pulls_per_round(&self) -> usize {
        share(self.beta, self.view_size)
    }

    /// The Brahms flood limit `alpha * l1` (rounded up, like the push rate,
    /// so an honest network's mean push count is within it): a round with
    /// more pushes than this leaves the view alone.
    ///
    /// Honest nodes receive on average [`Self::pushes_per_round`] pushes, so
    /// a fair share of honest rounds exceed the limit too; those rounds only
    /// delay the view's renewal.
    pub fn max_pushes_accepted(&self) -> usize {
        self.pushes_per_round()
    }

    /// `ceil(gamma * l1)`, but at most what pushes and pulls leave of `l1`:
    /// sampled ids put into a renewed view.
    pub fn history_per_round(&self) -> usize {
        let left = self
            .view_size
            .saturating_sub(self.pushes_per_round())
            .saturating_sub(self.pulls_per_round());
        share(self.gamma, self.view_size).min(left)
    }
}

impl Default for BrahmsParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `ceil(x * n)` clamped to `0..=n` (NaN and negative shares give 0).
fn share(x: f64, n: usize) -> usize {
    if x > 0.0 {
        // `as` saturates: never panics, even for huge or infinite `x`.
        ((x * n as f64).ceil() as usize).min(n)
    } else {
        0
    }
}

/// A min-wise independent sampler: of all ids fed to it, it keeps the one
/// whose keyed BLAKE3 hash under its secret key is smallest.
///
/// Its output depends only on the **set** of ids fed since the last reset,
/// not on their order or repetitions.
#[derive(Clone)]
pub struct Sampler {
    key: [u8; 32],
    best: Option<(NodeId, [u8; 32])>,
}

impl fmt::Debug for Sampler {
    // The key is secret: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("sample", &self.sample())
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// An empty sampler with a fresh random key.
    pub fn new(rng: &mut impl RngCore) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self::with_key(key)
    }

    /// An empty sampler with the given key (which must be secret).
    pub fn with_key(key: [u8; 32]) -> Self {
        Sampler { key, best: None }
    }

    /// Offers `id`: it becomes the output if its hash is the smallest seen.
    pub fn feed(&mut self, id: NodeId) {
        let h = *blake3::keyed_hash(&self.key, id.as_bytes()).as_bytes();
        match &self.best {
            Some((_, best)) if *best <= h => {}
            _ => self.best = Some((id, h)),
        }
    }

    /// The current output, if anything was fed since the last reset.
    pub fn sample(&self) -> Option<NodeId> {
        self.best.map(|(id, _)| id)
    }

    /// Forgets the output and moves to a new key (a one-way function of the
    /// old one, so it is as secret), so the sampler re-fills from later ids
    /// independently of what it chose before.
    pub fn reset(&mut self) {
        self.key = blake3::derive_key(SAMPLER_REKEY_CONTEXT, &self.key);
        self.best = None;
    }

    /// Resets the sampler if its output is `id` (found dead or invalid).
    /// Returns whether it did.
    pub fn invalidate(&mut self, id: NodeId) -> bool {
        if self.sample() == Some(id) {
            self.reset();
            true
        } else {
            false
        }
    }
}

/// What happened to the view at the end of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewUpdate {
    /// The view was renewed from pushes, pulls and samples.
    Updated,
    /// More pushes than [`BrahmsParams::max_pushes_accepted`]: the view was
    /// kept.
    FloodDetected,
    /// No push or no pull reply this round: the view was kept.
    Starved,
}

/// The result of [`Brahms::end_round`], for statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundOutcome {
    /// What happened to the view.
    pub view: ViewUpdate,
    /// Distinct pushers this round.
    pub pushes: usize,
    /// Distinct ids received in pull replies this round.
    pub pulled: usize,
}

/// Brahms peer sampling state of one node. See the [module docs](self) for
/// the call order and the security argument.
#[derive(Debug)]
pub struct Brahms {
    params: BrahmsParams,
    self_id: NodeId,
    view: Vec<NodeId>,
    samplers: Vec<Sampler>,
    /// Distinct pushers this round, sorted (at most `push_cap` stored).
    pushed: Vec<NodeId>,
    /// Pushes beyond `push_cap` this round, counted but not stored.
    push_overflow: usize,
    /// Ids from this round's pull replies (deduplicated at round end).
    pulled: Vec<NodeId>,
    /// Nodes whose pull reply we took this round.
    /// Peers that answered a pull this round, with how many ids each gave.
    pull_repliers: Vec<(NodeId, usize)>,
    /// Ids fed to every sampler since the last reset, sorted (a bounded
    /// cache, see [`FED_CACHE_CAP`]).
    fed: Vec<NodeId>,
}

impl Brahms {
    /// An empty state; each sampler gets a random key from `rng`.
    pub fn new(self_id: NodeId, params: BrahmsParams, rng: &mut impl RngCore) -> Self {
        let samplers = (0..params.sample_size).map(|_| Sampler::new(rng)).collect();
        Brahms {
            params,
            self_id,
            view: Vec::with_capacity(params.view_size),
            samplers,
            pushed: Vec::new(),
            push_overflow: 0,
            pulled: Vec::new(),
            pull_repliers: Vec::new(),
            fed: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &BrahmsParams {
        &self.params
    }

    /// Seeds the view (up to `view_size` ids) and feeds every id to the
    /// samplers, e.g. with the ids of seed-list peers once they were reached.
    /// Our own id is ignored.
    pub fn bootstrap(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        for id in ids {
            if id == self.self_id {
                continue;
            }
            if self.view.len() < self.params.view_size && !self.view.contains(&id) {
                self.view.push(id);
            }
            self.feed(&[id]);
        }
    }

    /// Up to `ceil(alpha * l1)` distinct random view members to push our own
    /// descriptor to this round.
    pub fn push_targets(&self, rng: &mut impl RngCore) -> Vec<NodeId> {
        choose(rng, &self.view, self.params.pushes_per_round())
    }

    /// Up to `ceil(beta * l1)` distinct random view members to ask for their
    /// view this round.
    pub fn pull_targets(&self, rng: &mut impl RngCore) -> Vec<NodeId> {
        choose(rng, &self.view, self.params.pulls_per_round())
    }

    /// The current view: what we answer a pull with (never our own id).
    pub fn view(&self) -> &[NodeId] {
        &self.view
    }

    /// `from` pushed itself to us. The caller guarantees `from` is the
    /// link's authenticated, PoW-admitted id and accepts at most one push
    /// per peer per round; repeats within a round and our own id are
    /// ignored here too.
    pub fn on_push(&mut self, from: NodeId) {
        if from == self.self_id {
            return;
        }
        match self.pushed.binary_search(&from) {
            Ok(_) => {}
            Err(at) if self.pushed.len() < self.push_cap() => self.pushed.insert(at, from),
            Err(_) => self.push_overflow = self.push_overflow.saturating_add(1),
        }
    }

    /// `from` answered our pull with `ids`. The caller guarantees we asked
    /// `from` this round and that each id is of a verified, PoW-admitted
    /// descriptor. Only the first `view_size` ids are taken, only one reply
    /// per peer and at most `ceil(beta * l1)` replies per round; our own id
    /// is ignored.
    pub fn on_pull_reply(&mut self, from: NodeId, ids: &[NodeId]) {
        // A reply may span several cells (several calls); each replier may
        // give at most `view_size` ids in all, and at most
        // `pulls_per_round` peers may reply.
        let cap = self.params.view_size;
        let slot = match self.pull_repliers.iter().position(|(p, _)| *p == from) {
            Some(i) => i,
            None if self.pull_repliers.len() < self.params.pulls_per_round() => {
                self.pull_repliers.push((from, 0));
                self.pull_repliers.len() - 1
            }
            None => return,
        };
        let room = cap.saturating_sub(self.pull_repliers[slot].1);
        let me = self.self_id;
        let take: Vec<NodeId> = ids.iter().take(room).copied().collect();
        self.pull_repliers[slot].1 += take.len();
        self.pulled.extend(take.into_iter().filter(|&id| id != me));
    }

    /// Ends the round (the Brahms update):
    /// - if `0 < pushes <= max_pushes_accepted` and some pull reply came,
    ///   the view becomes `ceil(alpha*l1)` random pushed ids, `ceil(beta*l1)`
    ///   random pulled ids and [`BrahmsParams::history_per_round`] random
    ///   samples (deduplicated, never our own id);
    /// - otherwise the view is kept (flood detected, or starvation).
    ///
    /// Then every distinct pushed or pulled id is fed to every sampler, and
    /// the round's buffers are cleared. If removals emptied the view, it is
    /// refilled from the samples so the node keeps someone to talk to.
    pub fn end_round(&mut self, rng: &mut impl RngCore) -> RoundOutcome {
        let pushes = self.pushed.len().saturating_add(self.push_overflow);
        self.pulled
            .sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        self.pulled.dedup();
        let view = if pushes > self.params.max_pushes_accepted() {
            ViewUpdate::FloodDetected
        } else if pushes == 0 || self.pulled.is_empty() {
            ViewUpdate::Starved
        } else {
            // The history share uses the samples from before this round.
            let history = self.sample();
            let mut view = choose(rng, &self.pushed, self.params.pushes_per_round());
            view.extend(choose(rng, &self.pulled, self.params.pulls_per_round()));
            view.extend(choose(rng, &history, self.params.history_per_round()));
            view.sort_unstable();
            view.dedup();
            view.retain(|&id| id != self.self_id);
            self.view = view;
            ViewUpdate::Updated
        };
        let outcome = RoundOutcome {
            view,
            pushes,
            pulled: self.pulled.len(),
        };

        let pushed = std::mem::take(&mut self.pushed);
        let pulled = std::mem::take(&mut self.pulled);
        self.feed(&pushed);
        self.feed(&pulled);
        self.push_overflow = 0;
        self.pull_repliers.clear();

        // An under-filled view (a node that just joined, or one whose view
        // members died) is topped up from the ids it pulled this round and
        // then from its samples, so a newcomer nobody pushes to yet is not
        // starved forever. Pulled ids come only from peers we chose to ask.
        if self.view.len() < self.params.view_size {
            let missing = self.params.view_size - self.view.len();
            let mut extra: Vec<NodeId> = pulled
                .iter()
                .chain(self.sample().iter())
                .copied()
                .filter(|id| *id != self.self_id && !self.view.contains(id))
                .collect();
            extra.sort_unstable();
            extra.dedup();
            self.view.extend(choose(rng, &extra, missing));
        }
        outcome
    }

    /// The samplers' current outputs, deduplicated and sorted.
    pub fn sample(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self.samplers.iter().filter_map(Sampler::sample).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `id` proved dead or invalid: drop it from the view and this round's
    /// buffers, and reset the samplers holding it (they re-fill from the
    /// ids fed later).
    pub fn remove(&mut self, id: NodeId) {
        self.view.retain(|&v| v != id);
        self.pushed.retain(|&v| v != id);
        self.pulled.retain(|&v| v != id);
        let mut reset = false;
        for s in &mut self.samplers {
            reset |= s.invalidate(id);
        }
        if reset {
            // A reset sampler must see repeated ids again.
            self.fed.clear();
        }
    }

    /// Pushes stored per round; more are only counted (they are a flood
    /// anyway, and the caller bounds them by its number of links).
    fn push_cap(&self) -> usize {
        self.params
            .max_pushes_accepted()
            .saturating_add(1)
            .saturating_mul(4)
    }

    /// Feeds the sorted, deduplicated `ids` to every sampler, skipping
    /// those already fed since the last reset (a no-op for min-wise
    /// samplers, skipped to save hashing).
    fn feed(&mut self, ids: &[NodeId]) {
        // Both lists are sorted: walk them together.
        let mut fresh = Vec::new();
        let mut k = 0;
        for &id in ids {
            loop {
                match self.fed.get(k).map(|known| known.cmp(&id)) {
                    Some(Ordering::Less) => k += 1,
                    Some(Ordering::Equal) => break,
                    Some(Ordering::Greater) | None => {
                        fresh.push(id);
                        break;
                    }
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        for s in &mut self.samplers {
            for &id in &fresh {
                s.feed(id);
            }
        }
        if self.fed.len() + fresh.len() > FED_CACHE_CAP {
            self.fed.clear();
        }
        let old = std::mem::take(&mut self.fed);
        self.fed = merge(&old, &fresh);
    }
}

/// The sorted union of two sorted, deduplicated, disjoint lists.
fn merge(a: &[NodeId], b: &[NodeId]) -> Vec<NodeId> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(&&x), Some(&&y)) if x < y => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(&id) => out.push(id),
            None => return out,
        }
    }
}

/// Up to `k` distinct elements of `items` (distinct positions), uniformly at
/// random (a partial Fisher-Yates shuffle).
fn choose(rng: &mut impl RngCore, items: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut pool = items.to_vec();
    let k = k.min(pool.len());
    for i in 0..k {
        let j = i + below(rng, pool.len() - i);
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

/// A uniform integer in `0..n`, for `n > 0` (rejection sampling, no bias).
fn below(rng: &mut impl RngCore, n: usize) -> usize {
    let n = n as u64;
    if n <= 1 {
        return 0;
    }
    // The largest multiple of `n` that fits; draws at or above it are redrawn.
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet};

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    fn random_id(rng: &mut impl RngCore) -> NodeId {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        NodeId::from_bytes(b)
    }

    fn ids(rng: &mut impl RngCore, n: usize) -> Vec<NodeId> {
        (0..n).map(|_| random_id(rng)).collect()
    }

    #[test]
    fn params_default_counts() {
        let p = BrahmsParams::DEFAULT;
        assert_eq!(p.pushes_per_round(), 11);
        assert_eq!(p.pulls_per_round(), 11);
        assert_eq!(p.max_pushes_accepted(), 11);
        assert_eq!(p.history_per_round(), 2);
        let odd = BrahmsParams {
            alpha: f64::NAN,
            beta: f64::INFINITY,
            gamma: -1.0,
            ..p
        };
        assert_eq!(odd.pushes_per_round(), 0);
        assert_eq!(odd.pulls_per_round(), 24);
        assert_eq!(odd.history_per_round(), 0);
    }

    #[test]
    fn sampler_keeps_min_keyed_hash_over_the_set() {
        let mut r = rng(1);
        let set = ids(&mut r, 50);
        let key = [7u8; 32];
        let expected = *set
            .iter()
            .min_by_key(|id| *blake3::keyed_hash(&key, id.as_bytes()).as_bytes())
            .unwrap();

        let mut a = Sampler::with_key(key);
        for &id in &set {
            a.feed(id);
        }
        // Another order, with repetitions: same output.
        let mut b = Sampler::with_key(key);
        for &id in set.iter().rev().chain(set.iter()).chain(set.iter().rev()) {
            b.feed(id);
        }
        assert_eq!(a.sample(), Some(expected));
        assert_eq!(b.sample(), Some(expected));
        assert_eq!(Sampler::with_key(key).sample(), None);
    }

    #[test]
    fn sampler_is_deterministic_from_the_seed() {
        let set = ids(&mut rng(2), 30);
        let run = |seed| {
            let mut r = rng(seed);
            (0..8)
                .map(|_| {
                    let mut s = Sampler::new(&mut r);
                    set.iter().for_each(|&id| s.feed(id));
                    s.sample()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn samplers_pick_uniformly() {
        // 2000 independently keyed samplers over 10 ids: each id should win
        // about 200 times (binomial, sd ~13).
        let mut r = rng(5);
        let set = ids(&mut r, 10);
        let mut wins: BTreeMap<NodeId, usize> = BTreeMap::new();
        for _ in 0..2000 {
            let mut s = Sampler::new(&mut r);
            set.iter().for_each(|&id| s.feed(id));
            *wins.entry(s.sample().unwrap()).or_default() += 1;
        }
        assert_eq!(wins.len(), 10);
        for (id, n) in wins {
            assert!((140..=260).contains(&n), "{id} won {n} times of 2000");
        }
    }

    #[test]
    fn sampler_invalidate_rekeys() {
        let mut r = rng(6);
        let set = ids(&mut r, 40);
        let mut s = Sampler::new(&mut r);
        set.iter().for_each(|&id| s.feed(id));
        let first = s.sample().unwrap();
        let other = *set.iter().find(|&&id| id != first).unwrap();
        assert!(!s.invalidate(other));
        assert_eq!(s.sample(), Some(first));
        assert!(s.invalidate(first));
        assert_eq!(s.sample(), None);
        // The new key is a function of the old one: deterministic.
        let mut t = s.clone();
        set.iter().for_each(|&id| s.feed(id));
        set.iter().rev().for_each(|&id| t.feed(id));
        assert!(s.sample().is_some());
        assert_eq!(s.sample(), t.sample());
        assert!(!format!("{s:?}").contains("key"));
    }

    /// A node with a full view of `others`, the round buffers empty.
    fn node(seed: u64) -> (Brahms, Vec<NodeId>, ChaCha20Rng) {
        let mut r = rng(seed);
        let me = random_id(&mut r);
        let others = ids(&mut r, 200);
        let mut b = Brahms::new(me, BrahmsParams::DEFAULT, &mut r);
        b.bootstrap(others[..24].iter().copied().chain([me]));
        assert_eq!(b.view().len(), 24);
        assert!(!b.view().contains(&me));
        (b, others, r)
    }

    #[test]
    fn push_flood_keeps_the_view() {
        let (mut b, others, mut r) = node(10);
        let before = b.view().to_vec();
        // One more pusher than the limit.
        for &id in &others[100..112] {
            b.on_push(id);
        }
        b.on_pull_reply(others[0], &others[30..54]);
        let out = b.end_round(&mut r);
        assert_eq!(out.view, ViewUpdate::FloodDetected);
        assert_eq!(out.pushes, 12);
        assert_eq!(b.view(), &before[..]);

        // Within the limit, the view is renewed from pushes, pulls, samples.
        let sample = b.sample();
        for &id in &others[100..111] {
            b.on_push(id);
        }
        b.on_pull_reply(others[1], &others[30..54]);
        let out = b.end_round(&mut r);
        assert_eq!(out.view, ViewUpdate::Updated);
        assert_eq!((out.pushes, out.pulled), (11, 24));
        assert!(b.view().len() > 11 && b.view().len() <= 24);
        for id in b.view() {
            assert!(
                others[100..111].contains(id) || others[30..54].contains(id) || sample.contains(id)
            );
        }
        assert!(
            b.view()
                .iter()
                .filter(|id| others[100..111].contains(id))
                .count()
                >= 11
        );
    }

    #[test]
    fn pushes_are_deduplicated_and_self_ignored() {
        let (mut b, others, mut r) = node(11);
        let me = b.self_id;
        for _ in 0..20 {
            b.on_push(others[100]);
            b.on_push(me);
        }
        b.on_pull_reply(others[0], &[me, others[50]]);
        let out = b.end_round(&mut r);
        assert_eq!(out.view, ViewUpdate::Updated);
        assert_eq!((out.pushes, out.pulled), (1, 1));
        assert!(!b.view().contains(&me));
        assert!(!b.sample().contains(&me));
    }

    #[test]
    fn starvation_keeps_the_view() {
        let (mut b, others, mut r) = node(12);
        let before = b.view().to_vec();
        b.on_pull_reply(others[0], &others[30..54]);
        assert_eq!(b.end_round(&mut r).view, ViewUpdate::Starved);
        b.on_push(others[100]);
        assert_eq!(b.end_round(&mut r).view, ViewUpdate::Starved);
        assert_eq!(b.view(), &before[..]);
        // The ids were still fed to the samplers.
        let mut seen: Vec<NodeId> = others[..24].to_vec();
        seen.extend_from_slice(&others[30..54]);
        seen.push(others[100]);
        assert!(b.sample().iter().all(|id| seen.contains(id)));
    }

    #[test]
    fn pull_replies_are_bounded() {
        let (mut b, others, mut r) = node(13);
        b.on_push(others[100]);
        // Too long: only view_size taken.
        b.on_pull_reply(others[0], &others[..60]);
        // A second reply from the same peer is ignored.
        b.on_pull_reply(others[0], &others[60..80]);
        // At most pulls_per_round repliers.
        for (i, &from) in others[1..20].iter().enumerate() {
            b.on_pull_reply(from, &others[120 + i..121 + i]);
        }
        let out = b.end_round(&mut r);
        assert_eq!(out.pulled, 24 + 10);
    }

    #[test]
    fn remove_drops_from_view_and_sample() {
        let (mut b, others, mut r) = node(14);
        let victim = b.sample()[0];
        let held = b
            .samplers
            .iter()
            .filter(|s| s.sample() == Some(victim))
            .count();
        assert!(held > 0);
        b.remove(victim);
        assert!(!b.view().contains(&victim));
        assert!(!b.sample().contains(&victim));
        assert_eq!(
            b.samplers.iter().filter(|s| s.sample().is_none()).count(),
            held
        );
        // The reset samplers re-fill from later rounds.
        b.on_push(others[150]);
        b.on_pull_reply(others[0], &others[60..84]);
        b.end_round(&mut r);
        assert!(b.samplers.iter().all(|s| s.sample().is_some()));

        // A node whose whole view died refills it from its samples.
        for id in b.view().to_vec() {
            b.remove(id);
        }
        assert!(b.view().is_empty());
        b.end_round(&mut r);
        assert!(!b.view().is_empty());
    }

    #[derive(Debug, PartialEq)]
    struct SimResult {
        /// Mean over honest nodes of the attacker share of their sample.
        attacker_share: f64,
        /// Distinct ids in the union of honest samples / all ids.
        coverage: f64,
        updated: usize,
        flooded: usize,
        starved: usize,
        samples: Vec<Vec<NodeId>>,
    }

    /// `honest` Brahms nodes and `attackers` attacker ids, `rounds` rounds.
    /// Attackers know every honest node, push themselves to each with
    /// probability `push_prob` per round (one push per pair and round at
    /// most, the link rate limit) and answer every pull with attacker ids.
    fn simulate(
        seed: u64,
        honest: usize,
        attackers: usize,
        rounds: usize,
        push_prob: f64,
    ) -> SimResult {
        let mut r = rng(seed);
        let params = BrahmsParams::DEFAULT;
        // Random ids whose first four bytes are their index (cheap lookup).
        let all: Vec<NodeId> = (0..honest + attackers)
            .map(|i| {
                let mut b = [0u8; 32];
                r.fill_bytes(&mut b);
                b[..4].copy_from_slice(&(i as u32).to_be_bytes());
                NodeId::from_bytes(b)
            })
            .collect();
        let index = |id: &NodeId| {
            let b = id.as_bytes();
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        };
        let evil = &all[honest..];
        let mut nodes: Vec<Brahms> = (0..honest)
            .map(|i| {
                let mut b = Brahms::new(all[i], params, &mut r);
                let others: Vec<NodeId> = all.iter().copied().filter(|&id| id != all[i]).collect();
                b.bootstrap(choose(&mut r, &others, params.view_size));
                b
            })
            .collect();
        let (mut updated, mut flooded, mut starved) = (0, 0, 0);
        for _ in 0..rounds {
            for i in 0..honest {
                for t in nodes[i].push_targets(&mut r) {
                    if index(&t) < honest {
                        nodes[index(&t)].on_push(all[i]);
                    }
                }
                for t in nodes[i].pull_targets(&mut r) {
                    let reply = if index(&t) < honest {
                        nodes[index(&t)].view().to_vec()
                    } else {
                        choose(&mut r, evil, params.view_size)
                    };
                    nodes[i].on_pull_reply(t, &reply);
                }
            }
            for &a in evil {
                for node in nodes.iter_mut() {
                    if push_prob >= 1.0 || (r.next_u32() as f64) < push_prob * 4294967296.0 {
                        node.on_push(a);
                    }
                }
            }
            for node in nodes.iter_mut() {
                match node.end_round(&mut r).view {
                    ViewUpdate::Updated => updated += 1,
                    ViewUpdate::FloodDetected => flooded += 1,
                    ViewUpdate::Starved => starved += 1,
                }
            }
        }
        let samples: Vec<Vec<NodeId>> = nodes.iter().map(Brahms::sample).collect();
        let attacker_share = samples
            .iter()
            .map(|s| s.iter().filter(|id| index(id) >= honest).count() as f64 / s.len() as f64)
            .sum::<f64>()
            / honest as f64;
        let union: BTreeSet<NodeId> = samples.iter().flatten().copied().collect();
        SimResult {
            attacker_share,
            coverage: union.len() as f64 / all.len() as f64,
            updated,
            flooded,
            starved,
            samples,
        }
    }

    fn report(name: &str, res: &SimResult) {
        let total = (res.updated + res.flooded + res.starved) as f64;
        println!(
            "{name}: attacker share of samples {:.4}, coverage {:.3}, \
             rounds updated {:.2} / flood {:.2} / starved {:.2}",
            res.attacker_share,
            res.coverage,
            res.updated as f64 / total,
            res.flooded as f64 / total,
            res.starved as f64 / total,
        );
    }

    #[test]
    fn sim_push_flood_attackers_stay_near_population_share() {
        // Attackers push to every honest node every round: 30 pushes each
        // round, always over the flood limit.
        let res = simulate(20, 300, 30, 40, 1.0);
        report("flood attack (300 + 30)", &res);
        let population = 30.0 / 330.0;
        assert!(res.attacker_share <= 2.0 * population, "{res:?}");
        assert!(res.flooded > 0);
    }

    #[test]
    fn sim_stealthy_attackers_stay_near_population_share() {
        // Attackers push rarely (one in ten), to slip under the flood limit
        // and let their pull answers poison the views.
        let res = simulate(21, 300, 30, 30, 0.1);
        report("stealthy attack (300 + 30)", &res);
        let population = 30.0 / 330.0;
        assert!(res.attacker_share <= 2.0 * population, "{res:?}");
    }

    #[test]
    fn sim_without_attackers_covers_the_network() {
        let res = simulate(22, 300, 0, 20, 0.0);
        report("no attack (300)", &res);
        assert!(res.coverage >= 0.9, "{res:?}");
        assert!(res.updated > 0);
    }

    #[test]
    fn sim_is_deterministic() {
        let a = simulate(23, 40, 4, 8, 0.5);
        let b = simulate(23, 40, 4, 8, 0.5);
        assert_eq!(a, b);
        assert_ne!(a.samples, simulate(24, 40, 4, 8, 0.5).samples);
    }
}
