//! The search part: publication, index holding, walks and searches.
//!
//! - **Publishing** ([`Search::publish`]): our signed records go through one
//!   of our circuits to its last hop (the *exit*), never from our own place
//!   in the overlay; the exit checks them and starts a publish walk that
//!   stores them at every node it visits. We republish every
//!   [`SearchParams::republish_ms`].
//! - **Index holding**: a relay stores checked records from walks
//!   ([`index::Index`]: bounded per publisher and in total, expired ones
//!   dropped), never records signed by our own pseudonyms, and never
//!   answers about content we share ourselves.
//! - **Searching** ([`Search::start`]): the query goes through a circuit to
//!   its exit, which answers from its own store and starts
//!   [`SearchParams::walkers`] walks carrying one walk id. Each node a walk
//!   visits answers once per walk id (sealed to the searcher's ephemeral
//!   key, at most [`SearchParams::max_answer_records`] records) and sends
//!   the answer back along the walk's reverse path to the exit, which
//!   passes it down the circuit. A reply whose walk id a node does not hold
//!   is dropped: no reflection.
//! - **No hop count**: a walk continues at each node with probability
//!   `1 - 1/len` (a geometric length with mean `len`); nothing in it counts
//!   hops. The flood baseline ([`SearchParams::flood_ttl`]) carries a TTL
//!   and exists only for comparison.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};

use super::directory::Directory;
use super::links::{Links, TokenBucket};
use super::output::{Action, Ctx};
use super::timers::Timer;
use super::{CircuitId, Event, LinkId, Millis};
use crate::cell::command;
use crate::content::ContentId;
use crate::identity::{NodeId, PublisherId};
use crate::link::LinkMsg;
use crate::provider::SignedProvider;
use crate::rating::SignedRating;
use crate::record::{RecordKind, SignedRecord, Unchecked};
use crate::search::{
    self, FromExit, MAX_RECORDS_PER_MSG, MAX_SEARCH_BYTES, Query, ToExit, Walk, WalkBody, WalkId,
    WalkReply,
};

mod index;
mod paths;

/// Key-derivation context of the secret that picks the pseudonyms a node
/// refuses to hold (see [`Search::refuses`]).
const REFUSAL_CONTEXT: &str = "veil 2026 index refusal key v1";

/// Rate-limit buckets kept before idle (full) ones are dropped: a full
/// bucket is the same as a new one.
const MAX_BUCKETS: usize = 1024;

/// Our handle for one of our searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SearchId(pub u64);

/// Why a search or a publication could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// No authenticated peer at all.
    #[error("no peers yet")]
    NoPeers,
    /// No built circuit to send it through.
    #[error("no circuit built yet")]
    NoCircuit,
}

/// Search and publication parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchParams {
    /// Walks an exit starts per search.
    pub walkers: usize,
    /// Mean length of a query walk (each node continues it with
    /// probability `1 - 1/walk_len`).
    pub walk_len: u32,
    /// Mean length of a publish walk (records are stored at every node it
    /// visits).
    pub publish_len: u32,
    /// The flood baseline: exits flood queries with this TTL instead of
    /// walking (for comparison only: a TTL shows relays their distance).
    pub flood_ttl: Option<u8>,
    /// Most records in one index holder's answer.
    pub max_answer_records: usize,
    /// Most records from one publisher in one answer.
    pub max_answer_per_publisher: usize,
    /// Most records stored from one publisher.
    pub max_records_per_publisher: usize,
    /// Most records stored in all.
    pub max_index_records: usize,
    /// Walk steps accepted per second per link (burst: two seconds).
    pub walks_per_sec_per_link: u32,
    /// Searches and publications accepted per second per circuit, as its
    /// exit.
    pub requests_per_sec_per_circuit: u32,
    /// Most answers a relay passes back per walk id (the exit: this many
    /// per walker).
    pub max_replies_per_walk: u32,
    /// Most records taken for one of our searches.
    pub max_results_per_search: usize,
    /// How long a walk's reverse path is kept.
    pub reverse_path_ms: Millis,
    /// Most reverse paths kept.
    pub max_paths: usize,
    /// How long answers to one of our searches are taken.
    pub search_timeout_ms: Millis,
    /// Our records are republished this often.
    pub republish_ms: Millis,
    /// A new rating of ours goes out after a random wait of up to this
    /// (so that its publication does not follow the download it judges
    /// closely enough to link them by timing).
    pub rating_delay_ms: Millis,
}

impl SearchParams {
    /// The real network.
    pub const MAINNET: SearchParams = SearchParams {
        walkers: 4,
        walk_len: 32,
        publish_len: 10,
        flood_ttl: None,
        max_answer_records: 12,
        max_answer_per_publisher: 2,
        max_records_per_publisher: 256,
        max_index_records: 50_000,
        walks_per_sec_per_link: 64,
        requests_per_sec_per_circuit: 4,
        max_replies_per_walk: 16,
        max_results_per_search: 1024,
        reverse_path_ms: 30_000,
        max_paths: 50_000,
        search_timeout_ms: 20_000,
        republish_ms: 6 * 3600 * 1000,
        rating_delay_ms: 3600 * 1000,
    };

    /// A small local network: short timers.
    pub const TESTNET: SearchParams = SearchParams {
        search_timeout_ms: 8_000,
        republish_ms: 20_000,
        rating_delay_ms: 0,
        ..SearchParams::MAINNET
    };

    /// Checks values the part divides by or sizes with.
    pub fn validate(&self) -> Result<(), String> {
        if self.walkers == 0 || self.walk_len == 0 || self.publish_len == 0 {
            return Err("search walkers and walk lengths must be positive".into());
        }
        if self.max_answer_records == 0
            || self.max_answer_per_publisher == 0
            || self.max_records_per_publisher == 0
            || self.max_index_records == 0
            || self.walks_per_sec_per_link == 0
            || self.requests_per_sec_per_circuit == 0
            || self.max_paths == 0
            || self.max_replies_per_walk == 0
            || self.max_results_per_search == 0
            || self.search_timeout_ms == 0
            || self.republish_ms == 0
        {
            return Err("search limits must be positive".into());
        }
        Ok(())
    }
}

/// Search counters (part of [`super::Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Searches we started.
    pub started: u64,
    /// Checked records received for our searches.
    pub results: u64,
    /// Records in answers that failed their checks (dropped).
    pub bad_results: u64,
    /// Query walk steps (and flood copies) we sent.
    pub walk_cells: u64,
    /// Publish walk steps we sent.
    pub publish_cells: u64,
    /// Answers we sent or passed back along reverse paths.
    pub reply_cells: u64,
    /// Circuit cells our own searches and publications used (messages ×
    /// hops, both ways).
    pub circuit_cells: u64,
    /// Answers we gave as an index holder.
    pub answers: u64,
    /// Records we stored as an index holder.
    pub stored: u64,
    /// Records refused (bad, expired, over a limit, our own).
    pub refused: u64,
    /// Replies with a walk id we do not hold, dropped.
    pub unknown_replies: u64,
    /// Walk steps or exit requests over a rate limit, dropped.
    pub rate_limited: u64,
    /// Records we (re)published through our circuits.
    pub published: u64,
}

/// Where a walk's answers go back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Back {
    /// The link the walk came in on.
    Link(LinkId),
    /// We are its exit: down this relayed circuit (our key for it).
    Exit(u64),
}

struct Pending {
    id: SearchId,
    secret: StaticSecret,
    until_ms: Millis,
    hops: usize,
    /// Records taken so far.
    records: usize,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .field("until_ms", &self.until_ms)
            .finish_non_exhaustive()
    }
}

/// What the search part may read of the rest of the node.
pub(super) struct SearchView<'a> {
    pub(super) links: &'a Links,
    pub(super) dir: &'a Directory,
}

impl SearchView<'_> {
    /// Authenticated relay peers, with their links, in id order.
    fn relay_peers(&self) -> Vec<(NodeId, LinkId)> {
        self.links
            .up()
            .filter(|(_, _, p)| self.dir.descriptor(p).is_some_and(|d| d.is_relay()))
            .map(|(l, _, p)| (p, l))
            .collect()
    }
}

/// The search part's state.
#[derive(Debug, Default)]
pub(super) struct Search {
    index: index::Index<SignedRecord>,
    /// Provider records held as an index holder (bounded like content
    /// records, separately).
    providers: index::Index<SignedProvider>,
    /// Ratings held as an index holder (bounded like content records,
    /// separately).
    ratings: index::Index<SignedRating>,
    own_publishers: BTreeSet<PublisherId>,
    /// A secret of this node: which other pseudonyms it refuses to store
    /// (see [`Search::refuses`]). Derived from the node's signing key on
    /// first use.
    refusal_key: Option<[u8; 32]>,
    published: Vec<SignedRecord>,
    /// Our services' provider records, by service.
    provided: BTreeMap<PublisherId, Vec<SignedProvider>>,
    /// Our user's ratings, republished with our records.
    rated: Vec<SignedRating>,
    /// Ratings not published yet, each with when it goes out (alone).
    fresh_ratings: Vec<(Millis, SignedRating)>,
    publish_due_ms: Option<Millis>,
    paths: paths::Paths,
    pending: BTreeMap<WalkId, Pending>,
    next_search: u64,
    link_walks: BTreeMap<LinkId, TokenBucket>,
    circuit_requests: BTreeMap<u64, TokenBucket>,
}

fn now_s(cx: &Ctx<'_>) -> u64 {
    cx.now / 1000
}

fn walk_id(cx: &mut Ctx<'_>) -> WalkId {
    let mut id = [0u8; 16];
    cx.rng.fill_bytes(&mut id);
    WalkId(id)
}

fn seed(cx: &mut Ctx<'_>) -> [u8; 32] {
    let mut s = [0u8; 32];
    cx.rng.fill_bytes(&mut s);
    s
}

/// Most provider records in one answer (to an exact content-id query).
const MAX_ANSWER_PROVIDERS: usize = 4;
/// Most ratings in one answer (to a word query), in at most a quarter of
/// the message.
const MAX_ANSWER_RATINGS: usize = 4;
/// Publish walks an exit starts for a message of ratings alone (one for
/// records): a rating is stored about four times as widely as a record.
const RATING_PUBLISH_WALKS: usize = 4;
/// Most ratings of other files naming the answer's signers in one answer
/// (in at most a quarter of it).
const MAX_ANSWER_SIGNER_RATINGS: usize = 2;
/// Most ratings our user keeps published (the newest are kept).
pub const MAX_OWN_RATINGS: usize = 4096;

fn count(cx: &mut Ctx<'_>, offered: Result<(), index::Refused>) {
    match offered {
        Ok(()) => cx.stats.search.stored += 1,
        Err(index::Refused::Limit) => cx.stats.search.refused += 1,
        Err(index::Refused::Duplicate) => {}
    }
}

/// Records of both kinds, checked.
#[derive(Debug, Default)]
struct Checked {
    content: Vec<SignedRecord>,
    providers: Vec<SignedProvider>,
    ratings: Vec<SignedRating>,
    bad: u64,
}

impl Checked {
    fn is_empty(&self) -> bool {
        self.content.is_empty() && self.providers.is_empty() && self.ratings.is_empty()
    }

    fn encodings(&self) -> Vec<Vec<u8>> {
        let content = self.content.iter().map(SignedRecord::to_bytes);
        content
            .chain(self.providers.iter().map(SignedProvider::to_bytes))
            .chain(self.ratings.iter().map(SignedRating::to_bytes))
            .collect()
    }
}

/// Checks record encodings of either kind; the checked ones, and how many
/// failed.
/// Below this many known nodes an index holder refuses only its own
/// pseudonyms' records (see [`Search::refuses`]).
const REFUSAL_MIN_KNOWN: usize = 8;

fn check_all(cx: &Ctx<'_>, records: &[Vec<u8>]) -> Checked {
    let mut out = Checked::default();
    let now = now_s(cx);
    let pow = cx.config.pow;
    for bytes in records {
        let ok = match crate::record::kind_of(bytes) {
            Some(RecordKind::Content) => Unchecked::<SignedRecord>::decode(bytes)
                .ok()
                .and_then(|u| u.check(now, pow).ok())
                .map(|r| out.content.push(r)),
            Some(RecordKind::Provider) => Unchecked::<SignedProvider>::decode(bytes)
                .ok()
                .and_then(|u| u.check(now, pow).ok())
                .map(|r| out.providers.push(r)),
            Some(RecordKind::Rating) => Unchecked::<SignedRating>::decode(bytes)
                .ok()
                .and_then(|u| u.check(now, pow).ok())
                .map(|r| out.ratings.push(r)),
            None => None,
        };
        if ok.is_none() {
            out.bad += 1;
        }
    }
    out
}

/// Record encodings packed into messages of at most [`MAX_SEARCH_BYTES`].
fn batches<'a>(records: impl Iterator<Item = &'a [u8]>) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut used = 0;
    for b in records {
        let cost = b.len() + 2;
        match out.last_mut() {
            Some(batch)
                if used + cost <= MAX_SEARCH_BYTES - 64 && batch.len() < MAX_RECORDS_PER_MSG =>
            {
                used += cost;
                batch.push(b.to_vec());
            }
            _ => {
                used = cost;
                out.push(vec![b.to_vec()]);
            }
        }
    }
    out
}

impl Search {
    /// How many records we hold as an index holder.
    pub(super) fn index_len(&self) -> usize {
        self.index.len()
    }

    /// How many provider records we hold as an index holder.
    pub(super) fn providers_len(&self) -> usize {
        self.providers.len()
    }

    /// Records we hold as an index holder.
    pub(super) fn index_records(&self) -> Vec<SignedRecord> {
        self.index.records().cloned().collect()
    }

    /// Restores persisted index records (checked again). They were held
    /// under the refusal rule of their time: only our own pseudonyms' are
    /// refused now (the directory is empty at start).
    pub(super) fn restore(&mut self, cx: &mut Ctx<'_>, records: Vec<SignedRecord>) -> usize {
        let p = &cx.config.search;
        let mut n = 0;
        for r in records {
            if !self.refuses(cx, 0, &r.publisher().id())
                && self
                    .index
                    .offer(
                        now_s(cx),
                        r,
                        p.max_records_per_publisher,
                        p.max_index_records,
                    )
                    .is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Whether this node refuses to hold records of `publisher`: always for
    /// its own pseudonyms (it never serves its own records), and, so that
    /// refusing is no tell, for a quarter of all other pseudonyms, chosen by a
    /// keyed hash only this node knows. Someone who plants one of a
    /// pseudonym's records on a node and asks for it back learns only that
    /// the node is among the quarter of the network that refuses that
    /// pseudonym.
    fn refuses(&mut self, cx: &mut Ctx<'_>, known: usize, publisher: &PublisherId) -> bool {
        if self.own_publishers.contains(publisher) {
            return true;
        }
        // Among fewer nodes, the quarter that refuses is too few to hide
        // an owner in (under 2), while it can refuse a publisher at every
        // other node (with five daemons, 1 publisher in 256, for good:
        // the choice is fixed): there a node refuses its own pseudonyms
        // only.
        if known < REFUSAL_MIN_KNOWN {
            return false;
        }
        // From the node's long-term secret, so the choice survives
        // restarts: a choice drawn afresh each run would let a prober who
        // waits for restarts find the one node that always refuses.
        let key = *self.refusal_key.get_or_insert_with(|| {
            blake3::derive_key(REFUSAL_CONTEXT, cx.identity.signing_key().as_bytes())
        });
        // A quarter, not a half: in a small network a half could leave a
        // publisher with no holder at all (measured: 1 run in 16 with five
        // daemons).
        blake3::keyed_hash(&key, publisher.as_bytes()).as_bytes()[0] & 3 == 3
    }

    /// Our own pseudonyms: their records are never stored or served here.
    pub(super) fn own_publisher(&mut self, id: PublisherId) {
        self.own_publishers.insert(id);
    }

    /// Sets service `service`'s provider records (replacing its last set)
    /// and publishes them at the next tick, then at every republication.
    pub(super) fn provide(
        &mut self,
        cx: &mut Ctx<'_>,
        service: PublisherId,
        records: Vec<SignedProvider>,
    ) {
        self.own_publishers.insert(service);
        if records.is_empty() {
            self.provided.remove(&service);
        } else {
            self.provided.insert(service, records);
        }
        self.publish_due_ms = Some(cx.now);
        self.arm(cx);
    }

    /// Adds our user's rating: published at the next tick, then with our
    /// records at every republication. A newer rating of the same content
    /// id by the same rater replaces the older.
    pub(super) fn rate(&mut self, cx: &mut Ctx<'_>, rating: SignedRating) {
        let key = (rating.publisher().id(), rating.record().content_id);
        self.own_publishers.insert(key.0);
        let same = |r: &SignedRating| (r.publisher().id(), r.record().content_id) == key;
        self.rated.retain(|r| !same(r));
        self.fresh_ratings.retain(|(_, r)| !same(r));
        self.rated.push(rating.clone());
        if self.rated.len() > MAX_OWN_RATINGS {
            self.rated.remove(0);
        }
        let delay = cx.config.search.rating_delay_ms;
        let wait = if delay == 0 {
            0
        } else {
            u64::from_le_bytes(seed(cx)[..8].try_into().unwrap_or([0; 8])) % (delay + 1)
        };
        self.fresh_ratings.push((cx.now + wait, rating));
        if self.publish_due_ms.is_none() {
            self.publish_due_ms = Some(cx.now + cx.config.search.republish_ms);
        }
        self.arm(cx);
    }

    /// Sets our published records (replacing the last set) and publishes
    /// them at the next tick.
    pub(super) fn publish(&mut self, cx: &mut Ctx<'_>, records: Vec<SignedRecord>) {
        for r in &records {
            self.own_publishers.insert(r.publisher().id());
        }
        self.published = records;
        self.publish_due_ms = Some(cx.now);
        self.arm(cx);
    }

    /// Starts one of our searches: the message for the circuit's exit.
    pub(super) fn start(
        &mut self,
        cx: &mut Ctx<'_>,
        query: Query,
        hops: usize,
    ) -> (SearchId, Vec<u8>) {
        let walk = walk_id(cx);
        let secret = StaticSecret::from(seed(cx));
        let reply_key = PublicKey::from(&secret).to_bytes();
        let id = SearchId(self.next_search);
        self.next_search += 1;
        self.pending.insert(
            walk,
            Pending {
                id,
                secret,
                until_ms: cx.now + cx.config.search.search_timeout_ms,
                hops,
                records: 0,
            },
        );
        cx.stats.search.started += 1;
        cx.stats.search.circuit_cells += hops as u64;
        self.arm(cx);
        let msg = ToExit::Search {
            walk,
            query,
            reply_key,
        };
        (id, msg.encode().unwrap_or_default())
    }

    /// Publish messages due now (for the node to send through a circuit),
    /// and the searches that timed out.
    pub(super) fn tick(&mut self, cx: &mut Ctx<'_>, have_circuit: bool) -> Vec<Vec<u8>> {
        let now = cx.now;
        self.index.expire(now_s(cx));
        self.providers.expire(now_s(cx));
        self.ratings.expire(now_s(cx));
        self.paths.expire(now);
        let done: Vec<WalkId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.until_ms <= now)
            .map(|(w, _)| *w)
            .collect();
        for w in done {
            if let Some(p) = self.pending.remove(&w) {
                cx.event(Event::SearchDone { search: p.id });
            }
        }
        let mut out = Vec::new();
        if !have_circuit {
            // Try again shortly: a circuit is on its way.
            for (t, _) in &mut self.fresh_ratings {
                *t = (*t).max(now + 1_000);
            }
        }
        if have_circuit && self.fresh_ratings.iter().any(|(t, _)| *t <= now) {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.fresh_ratings)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            self.fresh_ratings = later;
            for batch in batches(due.iter().map(|(_, r)| r.as_bytes())) {
                if let Some(b) = (ToExit::Publish { records: batch }).encode() {
                    out.push(b);
                }
            }
        }
        if self.publish_due_ms.is_some_and(|t| t <= now) && self.publishes() {
            if have_circuit {
                self.published.retain(|r| r.record().expires > now / 1000);
                for list in self.provided.values_mut() {
                    list.retain(|r| r.record().expires > now / 1000);
                }
                self.rated.retain(|r| r.record().expires > now / 1000);
                let content = self.published.iter().map(SignedRecord::as_bytes);
                let providers = self
                    .provided
                    .values()
                    .flatten()
                    .map(SignedProvider::as_bytes);
                let ratings = self.rated.iter().map(SignedRating::as_bytes);
                // One kind of signer per message: content records (the
                // library's pseudonym), provider records (the service
                // key) and ratings (the rater pseudonym) never share one,
                // so no exit or walk relay reads them side by side.
                let mut all = batches(content);
                all.extend(batches(providers));
                all.extend(batches(ratings));
                for batch in all {
                    if let Some(b) = (ToExit::Publish { records: batch }).encode() {
                        out.push(b);
                    }
                }
                cx.stats.search.published += self.published.len() as u64;
                self.publish_due_ms = Some(now + cx.config.search.republish_ms);
            } else {
                // Try again shortly: a circuit is on its way.
                self.publish_due_ms = Some(now + 1_000);
            }
        }
        self.arm(cx);
        out
    }

    /// Whether we have anything to publish.
    fn publishes(&self) -> bool {
        !self.published.is_empty() || !self.provided.is_empty() || !self.rated.is_empty()
    }

    /// Arms the search timer for the next thing due.
    fn arm(&self, cx: &mut Ctx<'_>) {
        let next = self
            .pending
            .values()
            .map(|p| p.until_ms)
            .chain(self.publish_due_ms.filter(|_| self.publishes()))
            .chain(self.fresh_ratings.iter().map(|(t, _)| *t).min())
            .min();
        match next {
            Some(t) => cx.timers.set(Timer::Search, t),
            None => cx.timers.clear(Timer::Search),
        }
    }

    /// A link closed.
    pub(super) fn link_down(&mut self, link: LinkId) {
        self.link_walks.remove(&link);
    }

    /// A walk step arrived on `link`.
    pub(super) fn on_walk(
        &mut self,
        cx: &mut Ctx<'_>,
        v: &SearchView<'_>,
        link: LinkId,
        peer: NodeId,
        bytes: &[u8],
    ) {
        let rate = cx.config.search.walks_per_sec_per_link;
        let now = cx.now;
        if self.link_walks.len() > MAX_BUCKETS {
            self.link_walks.retain(|_, b| !b.is_full(now, rate));
        }
        let bucket = self
            .link_walks
            .entry(link)
            .or_insert_with(|| TokenBucket::full(now, rate));
        if !bucket.take(now, rate) {
            cx.stats.search.rate_limited += 1;
            return;
        }
        if !cx.config.relay {
            return;
        }
        let Ok(walk) = Walk::decode(bytes) else {
            cx.cut(link, super::Fault::Misbehaved(super::Offence::Malformed));
            return;
        };
        // A TTL is obeyed only by a network configured for the flood
        // baseline; elsewhere one such cell would flood the overlay.
        if walk.flood_ttl.is_some() && cx.config.search.flood_ttl.is_none() {
            cx.stats.search.refused += 1;
            return;
        }
        match walk.body.clone() {
            WalkBody::Publish { records } => {
                self.store(cx, v, &records);
                self.continue_walk(cx, v, &walk, Some(peer), cx.config.search.publish_len);
            }
            WalkBody::Query { query, reply_key } => {
                let first = !self.paths.contains(&walk.id);
                if first {
                    self.note_path(cx, walk.id, Back::Link(link));
                    if let Some(sealed) = self.answer(cx, &walk.id, &query, &reply_key) {
                        let reply = WalkReply {
                            id: walk.id,
                            sealed,
                        };
                        self.send_reply(cx, link, &reply);
                    }
                }
                match walk.flood_ttl {
                    Some(ttl) if first && ttl > 0 => self.flood(cx, v, &walk, Some(peer), ttl - 1),
                    Some(_) => {}
                    None => {
                        let len = cx.config.search.walk_len;
                        self.continue_walk(cx, v, &walk, Some(peer), len);
                    }
                }
            }
        }
    }

    /// A sealed answer came back on `link`: pass it on towards its exit.
    pub(super) fn on_walk_reply(&mut self, cx: &mut Ctx<'_>, link: LinkId, bytes: &[u8]) {
        let Ok(reply) = WalkReply::decode(bytes) else {
            cx.cut(link, super::Fault::Misbehaved(super::Offence::Malformed));
            return;
        };
        let p = &cx.config.search;
        // A relay passes back at most a few answers per walk, the exit a
        // few per walker: one walk relay cannot flood the searcher.
        let cap = match self.paths.back(&reply.id) {
            None => {
                cx.stats.search.unknown_replies += 1;
                return;
            }
            Some(Back::Exit(_)) => p.max_replies_per_walk * p.walkers as u32,
            Some(Back::Link(_)) => p.max_replies_per_walk,
        };
        match self.paths.route_reply(&reply.id, cap) {
            Some(Back::Link(l)) if l != link => self.send_reply(cx, l, &reply),
            Some(Back::Exit(k)) => self.answer_client(cx, k, reply.id, reply.sealed),
            Some(Back::Link(_)) => cx.stats.search.unknown_replies += 1,
            None => cx.stats.search.rate_limited += 1,
        }
    }

    /// As the exit of relayed circuit `k`, a request from its client.
    pub(super) fn at_exit(&mut self, cx: &mut Ctx<'_>, v: &SearchView<'_>, k: u64, bytes: &[u8]) {
        let rate = cx.config.search.requests_per_sec_per_circuit;
        let now = cx.now;
        if self.circuit_requests.len() > MAX_BUCKETS {
            self.circuit_requests.retain(|_, b| !b.is_full(now, rate));
        }
        let bucket = self
            .circuit_requests
            .entry(k)
            .or_insert_with(|| TokenBucket::full(now, rate));
        if !bucket.take(now, rate) {
            cx.stats.search.rate_limited += 1;
            return;
        }
        let Ok(msg) = ToExit::decode(bytes) else {
            cx.stats.search.refused += 1;
            return;
        };
        match msg {
            ToExit::Publish { records } => {
                let ok = check_all(cx, &records);
                cx.stats.search.refused += ok.bad;
                if ok.is_empty() {
                    return;
                }
                // Ratings alone (they never share a message with records)
                // go out on more walks: one per download, and each reaches
                // searchers of every name its signers sign.
                let walks = if ok.content.is_empty() && ok.providers.is_empty() {
                    RATING_PUBLISH_WALKS
                } else {
                    1
                };
                let records = ok.encodings();
                self.store(cx, v, &records);
                let walk = Walk {
                    id: walk_id(cx),
                    flood_ttl: None,
                    body: WalkBody::Publish { records },
                };
                self.launch(cx, v, &walk, walks);
            }
            ToExit::Search {
                walk,
                query,
                reply_key,
            } => {
                if self.paths.contains(&walk) {
                    return;
                }
                self.note_path(cx, walk, Back::Exit(k));
                if let Some(sealed) = self.answer(cx, &walk, &query, &reply_key) {
                    self.answer_client(cx, k, walk, sealed);
                }
                let p = &cx.config.search;
                let w = Walk {
                    id: walk,
                    flood_ttl: p.flood_ttl,
                    body: WalkBody::Query { query, reply_key },
                };
                match p.flood_ttl {
                    // TTL t: t overlay hops from the exit.
                    Some(ttl) => {
                        if ttl > 0 {
                            self.flood(cx, v, &w, None, ttl - 1);
                        }
                    }
                    None => {
                        let n = p.walkers;
                        self.launch(cx, v, &w, n);
                    }
                }
            }
        }
    }

    /// As a client, a message from our circuit's exit.
    pub(super) fn at_client(&mut self, cx: &mut Ctx<'_>, _circuit: CircuitId, bytes: &[u8]) {
        let Ok(FromExit::Answer { walk, sealed }) = FromExit::decode(bytes) else {
            return;
        };
        let max = cx.config.search.max_results_per_search;
        let Some(p) = self.pending.get_mut(&walk) else {
            return;
        };
        cx.stats.search.circuit_cells += p.hops as u64;
        if p.records >= max {
            cx.stats.search.rate_limited += 1;
            return;
        }
        let Ok(encodings) = search::open(&p.secret, &sealed) else {
            cx.stats.search.bad_results += 1;
            return;
        };
        let Checked {
            content: mut records,
            mut providers,
            mut ratings,
            bad,
        } = check_all(cx, &encodings);
        records.truncate(max - p.records);
        p.records += records.len();
        providers.truncate(max.saturating_sub(p.records));
        p.records += providers.len();
        ratings.truncate(max.saturating_sub(p.records));
        p.records += ratings.len();
        cx.stats.search.bad_results += bad;
        cx.stats.search.results += (records.len() + providers.len() + ratings.len()) as u64;
        if !records.is_empty() || !ratings.is_empty() {
            cx.event(Event::SearchResults {
                search: p.id,
                records,
                ratings,
            });
        }
        if !providers.is_empty() {
            cx.out.act(Action::Providers(p.id, providers));
        }
    }

    /// Stores checked records from `encodings` (never our own).
    fn store(&mut self, cx: &mut Ctx<'_>, v: &SearchView<'_>, encodings: &[Vec<u8>]) {
        if !cx.config.relay {
            return;
        }
        let known = v.dir.len();
        let ok = check_all(cx, encodings);
        cx.stats.search.refused += ok.bad;
        let p = cx.config.search.clone();
        let now = now_s(cx);
        for r in ok.content {
            if self.refuses(cx, known, &r.publisher().id()) {
                cx.stats.search.refused += 1;
                continue;
            }
            let offered =
                self.index
                    .offer(now, r, p.max_records_per_publisher, p.max_index_records);
            count(cx, offered);
        }
        for r in ok.providers {
            if self.refuses(cx, known, &r.publisher().id()) {
                cx.stats.search.refused += 1;
                continue;
            }
            let offered =
                self.providers
                    .offer(now, r, p.max_records_per_publisher, p.max_index_records);
            count(cx, offered);
        }
        for r in ok.ratings {
            if self.refuses(cx, known, &r.publisher().id()) {
                cx.stats.search.refused += 1;
                continue;
            }
            let offered =
                self.ratings
                    .offer(now, r, p.max_records_per_publisher, p.max_index_records);
            count(cx, offered);
        }
    }

    /// Our answer to `query` on walk `walk`, sealed; None if nothing
    /// matches. The same rule on every node, whoever shares what: the
    /// library is never looked at.
    fn answer(
        &mut self,
        cx: &mut Ctx<'_>,
        walk: &WalkId,
        query: &Query,
        reply_key: &[u8; 32],
    ) -> Option<Vec<u8>> {
        let p = &cx.config.search;
        // What fits one sealed message: the walk id, the tag, the
        // ephemeral key and the record count around the encodings.
        let budget = search::ANSWER_BUDGET_BYTES;
        // For an exact id, the providers first (what a downloader needs),
        // in at most half the message; the content records in the rest.
        let providers = match query {
            Query::Content(id) => search::select_providers(
                self.providers.records(),
                *id,
                walk,
                MAX_ANSWER_PROVIDERS,
                budget / 2,
            ),
            Query::Words(_) => Vec::new(),
        };
        // For words, the ratings of matching files in at most a quarter.
        let ratings = match query {
            Query::Words(_) => search::select_answer(
                query,
                self.ratings.records(),
                walk,
                MAX_ANSWER_RATINGS,
                budget / 4,
                1,
            ),
            Query::Content(_) => Vec::new(),
        };
        let used: usize = providers
            .iter()
            .map(|r| r.as_bytes().len() + 2)
            .chain(ratings.iter().map(|r| r.as_bytes().len() + 2))
            .sum();
        // For words, ratings of other files that name the answer's signers
        // get up to a quarter and MAX_ANSWER_SIGNER_RATINGS places, kept
        // back from the records only if some rating held names a signer of
        // a matching record. Every part counts against the places of one
        // message (MAX_RECORDS_PER_MSG), or the answer could not be sealed.
        let reserve = match query {
            Query::Words(_)
                if search::any_signer_rating(
                    query,
                    self.index.records().filter(|r| query.matches(r.record())),
                    self.ratings.records(),
                ) =>
            {
                (budget / 4, MAX_ANSWER_SIGNER_RATINGS)
            }
            _ => (0, 0),
        };
        let places = MAX_RECORDS_PER_MSG.saturating_sub(providers.len() + ratings.len());
        let chosen = search::select_answer(
            query,
            self.index.records(),
            walk,
            p.max_answer_records.min(places.saturating_sub(reserve.1)),
            budget - used - reserve.0,
            p.max_answer_per_publisher,
        );
        let used = used + chosen.iter().map(|r| r.as_bytes().len() + 2).sum::<usize>();
        let signer_ratings = if reserve.1 > 0 {
            search::select_signer_ratings(
                query,
                &chosen,
                self.ratings.records(),
                walk,
                reserve.1.min(places.saturating_sub(chosen.len())),
                budget - used,
            )
        } else {
            Vec::new()
        };
        if chosen.is_empty() && providers.is_empty() && ratings.is_empty() {
            return None;
        }
        let mut encodings: Vec<Vec<u8>> = chosen.iter().map(|r| r.to_bytes()).collect();
        encodings.extend(providers.iter().map(|r| r.to_bytes()));
        encodings.extend(ratings.iter().map(|r| r.to_bytes()));
        encodings.extend(signer_ratings.iter().map(|r| r.to_bytes()));
        let answered: Vec<(PublisherId, ContentId)> = chosen
            .iter()
            .map(|r| (r.publisher().id(), r.record().content_id))
            .chain(
                providers
                    .iter()
                    .map(|r| (r.publisher().id(), r.record().content_id)),
            )
            .collect();
        let sealed = search::seal(reply_key, &encodings, seed(cx))?;
        cx.stats.search.answers += 1;
        cx.event(Event::Answered { records: answered });
        Some(sealed)
    }

    fn note_path(&mut self, cx: &Ctx<'_>, id: WalkId, back: Back) {
        let p = &cx.config.search;
        self.paths
            .insert(id, back, cx.now + p.reverse_path_ms, p.max_paths);
    }

    fn send_reply(&mut self, cx: &mut Ctx<'_>, link: LinkId, reply: &WalkReply) {
        if let Some(cell) = reply
            .encode()
            .and_then(|b| LinkMsg::search(command::WALK_REPLY, &b))
        {
            cx.stats.search.reply_cells += 1;
            cx.send(link, cell);
        }
    }

    fn answer_client(&mut self, cx: &mut Ctx<'_>, k: u64, walk: WalkId, sealed: Vec<u8>) {
        if let Some(b) = (FromExit::Answer { walk, sealed }).encode() {
            cx.stats.search.reply_cells += 1;
            cx.out.act(Action::ToClient(k, b));
        }
    }

    fn send_walk(&mut self, cx: &mut Ctx<'_>, link: LinkId, walk: &Walk) {
        if let Some(cell) = walk
            .encode()
            .and_then(|b| LinkMsg::search(command::WALK, &b))
        {
            match walk.body {
                WalkBody::Publish { .. } => cx.stats.search.publish_cells += 1,
                WalkBody::Query { .. } => cx.stats.search.walk_cells += 1,
            }
            cx.send(link, cell);
        }
    }

    /// Starts `n` walkers from here, to distinct relay peers.
    fn launch(&mut self, cx: &mut Ctx<'_>, v: &SearchView<'_>, walk: &Walk, n: usize) {
        let mut peers = v.relay_peers();
        for _ in 0..n {
            if peers.is_empty() {
                break;
            }
            let i = (cx.rng.next_u64() % peers.len() as u64) as usize;
            let (_, link) = peers.swap_remove(i);
            self.send_walk(cx, link, walk);
        }
    }

    /// With probability `1 - 1/len`, one more step to a random relay peer
    /// other than the one it came from.
    fn continue_walk(
        &mut self,
        cx: &mut Ctx<'_>,
        v: &SearchView<'_>,
        walk: &Walk,
        from: Option<NodeId>,
        len: u32,
    ) {
        if cx.rng.next_u64().is_multiple_of(u64::from(len.max(1))) {
            return;
        }
        let mut peers = v.relay_peers();
        peers.retain(|(p, _)| Some(*p) != from);
        if peers.is_empty() {
            return;
        }
        let (_, link) = peers[(cx.rng.next_u64() % peers.len() as u64) as usize];
        self.send_walk(cx, link, walk);
    }

    /// The flood baseline: every relay peer but the sender.
    fn flood(
        &mut self,
        cx: &mut Ctx<'_>,
        v: &SearchView<'_>,
        walk: &Walk,
        from: Option<NodeId>,
        ttl: u8,
    ) {
        let next = Walk {
            flood_ttl: Some(ttl),
            ..walk.clone()
        };
        for (p, link) in v.relay_peers() {
            if Some(p) != from {
                self.send_walk(cx, link, &next);
            }
        }
    }
}

#[cfg(test)]
mod tests;
