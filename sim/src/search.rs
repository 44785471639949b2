//! The search workload and its figures.
//!
//! Files get distinct content ids and names of two to four words from one
//! vocabulary (so files share words; no file's word set is contained in
//! another's, so a full name identifies its file). At publication each
//! file gets several honest relay sharers, each node with its own
//! pseudonym signing one record per file it shares; poisoners (one
//! pseudonym each) all sign the same decoys: junk content ids under the
//! names of the most popular files. Searches pick a target by Zipf
//! popularity (exponent 1) and ask for its words (all of them, or a subset
//! of at least two that still identifies it), so the harness knows the
//! true content id.
//!
//! Cost: query walk and reply cells are search-only counters of the
//! nodes. Circuit cells are shared with publication, so a search's are
//! counted here as the searcher's node counts them (its hops for the
//! request, and again for each answer it takes before its timeout), and
//! publication's are all the rest: republications inside the search window
//! are not charged to searches.
//!
//! Everything here draws from the workload's own RNG (seeded from the
//! scenario seed), never from the harness's: a run without the workload
//! is the run it always was.

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use veil_core::content::ContentId;
use veil_core::identity::{Pseudonym, PublisherId};
use veil_core::node::{Event, Millis, Node, SearchId};
use veil_core::pow::PowParams;
use veil_core::record::{ContentRecord, SignedRecord, keywords_from_name};
use veil_core::search::{Query, Standing, rank};

use crate::scenario::Scenario;

/// Words file names are made of.
const VOCABULARY: &[&str] = &[
    "amber", "anchor", "apple", "arctic", "autumn", "basin", "beacon", "birch", "blue", "bold",
    "breeze", "bridge", "bright", "canyon", "castle", "cedar", "circle", "cloud", "coast",
    "copper", "coral", "crimson", "crystal", "dawn", "delta", "desert", "dream", "dune", "eagle",
    "echo", "ember", "falcon", "field", "flame", "forest", "fossil", "frost", "garden", "glacier",
    "golden", "granite", "harbor", "hazel", "hollow", "horizon", "island", "ivory", "jade",
    "jungle", "lagoon", "lantern", "lemon", "lotus", "lunar", "maple", "marble", "meadow",
    "mirror", "misty", "moss", "mountain", "night", "north", "oasis", "ocean", "olive", "orbit",
    "orchid", "pebble", "pepper", "pine", "planet", "prairie", "quartz", "quiet", "rain", "raven",
    "reef", "ridge", "river", "rocket", "rose", "ruby", "saffron", "sage", "sand", "shadow",
    "silver", "sky", "slate", "snow", "solar", "spring", "spruce", "star", "stone", "storm",
    "summer", "sun", "thunder", "tide", "timber", "topaz", "valley", "velvet", "violet", "willow",
    "winter", "wolf", "zephyr", "aurora", "bamboo", "cobalt", "comet", "cypress", "elm", "fern",
    "gale", "indigo", "juniper", "kestrel", "lilac", "mesa", "nectar", "opal", "plume", "quill",
];

/// Records live this long (Unix seconds), well within the protocol's bound.
const RECORD_LIFETIME_S: u64 = 24 * 3600;

/// One file of the workload.
#[derive(Debug, Clone)]
struct File {
    id: ContentId,
    name: String,
    /// Canonical keywords of the name, sorted.
    words: Vec<String>,
    size: u64,
}

/// One search the harness started (or tried to).
#[derive(Debug, Clone)]
struct Searched {
    node: usize,
    file: usize,
    started: Millis,
    /// Whether `Node::search` accepted it.
    ok: bool,
    /// When the first result with the true content id arrived.
    found: Option<Millis>,
    /// Answers that came back (each one `hops` circuit cells).
    answers: u64,
    records: Vec<SignedRecord>,
    /// The searcher left before the search's timeout.
    searcher_left: bool,
}

/// The search workload's state.
#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) rng: ChaCha20Rng,
    files: Vec<File>,
    /// Cumulative Zipf weights over files (file 0 the most popular).
    zipf: Vec<f64>,
    /// What each node shares (decoys included for poisoners).
    shares: BTreeMap<usize, BTreeSet<ContentId>>,
    poisoners: BTreeSet<usize>,
    decoys: BTreeSet<ContentId>,
    searches: Vec<Searched>,
    by_search: BTreeMap<(usize, SearchId), usize>,
    /// Each searcher's view of publishers: first seen at result arrival.
    standing: BTreeMap<usize, Standing>,
    /// Each sharer's and poisoner's pseudonym.
    pseudonyms: BTreeMap<usize, PublisherId>,
    self_answers: u64,
    own_content_answers: u64,
    answered: u64,
    pub(crate) nodes_left: u64,
    pub(crate) nodes_joined: u64,
}

/// The search figures of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOutcome {
    /// Files shared.
    pub files: usize,
    /// Records handed to sharers (one per sharer and file).
    pub records: u64,
    /// Poisoner nodes, and the decoy records they published.
    pub poisoner_nodes: u64,
    /// See `poisoner_nodes`.
    pub decoy_records: u64,
    /// Searches the harness asked for.
    pub searches: u64,
    /// Searches a node refused to start (no circuit).
    pub searches_refused: u64,
    /// Searches whose searcher left before anything true came back (not
    /// counted either way).
    pub searches_lost: u64,
    /// Searches whose results held the true content id.
    pub searches_succeeded: u64,
    /// Succeeded over searches not lost.
    pub search_success: f64,
    /// From `search()` to the first result holding the true content id.
    pub search_latency_ms_p50: u64,
    /// See `search_latency_ms_p50`.
    pub search_latency_ms_p95: u64,
    /// Query walk steps (or flood copies) sent, all nodes.
    pub walk_cells: u64,
    /// Answers sent or passed back, all nodes.
    pub reply_cells: u64,
    /// Circuit cells of searches: hops for the request and for each
    /// answer the searcher took.
    pub search_circuit_cells: u64,
    /// (walk + reply + search circuit cells) / searches.
    pub messages_per_search: f64,
    /// Publish walk steps, all nodes.
    pub publish_cells: u64,
    /// Circuit cells of publications (all circuit cells but searches').
    pub publish_circuit_cells: u64,
    /// Records (re)published through circuits, all nodes.
    pub records_published: u64,
    /// (publish walk + publication circuit cells) / records published.
    pub publish_messages_per_record: f64,
    /// Searches whose top result by `rank` was a decoy.
    pub decoy_top_results: u64,
    /// Searches for a file poisoners published decoys for.
    pub poisoned_searches: u64,
    /// Answers an index holder gave (Answered events).
    pub answers: u64,
    /// Answers by a node carrying a record its own pseudonym signed (must
    /// be 0).
    pub self_answers: u64,
    /// Answers by a node about content it shares, from other publishers'
    /// records (allowed: what a node answers does not depend on what it
    /// shares).
    pub own_content_answers: u64,
    /// Index records held, mean over online relays.
    pub index_records_mean: f64,
    /// Walk steps or exit requests dropped over a rate limit.
    pub rate_limited: u64,
    /// Nodes that left and joined (churn).
    pub nodes_left: u64,
    /// See `nodes_left`.
    pub nodes_joined: u64,
}

impl Workload {
    /// The files of `s` and the workload's RNG.
    pub(crate) fn new(s: &Scenario) -> Workload {
        let mut rng = ChaCha20Rng::seed_from_u64(s.seed ^ 0x5ea4_c4ed_f11e_5eed);
        let files = make_files(&mut rng, s.search.files);
        let mut zipf = Vec::with_capacity(files.len());
        let mut total = 0.0;
        for k in 0..files.len() {
            total += 1.0 / (k + 1) as f64;
            zipf.push(total);
        }
        Workload {
            rng,
            files,
            zipf,
            shares: BTreeMap::new(),
            poisoners: BTreeSet::new(),
            decoys: BTreeSet::new(),
            searches: Vec::new(),
            by_search: BTreeMap::new(),
            standing: BTreeMap::new(),
            pseudonyms: BTreeMap::new(),
            self_answers: 0,
            own_content_answers: 0,
            answered: 0,
            nodes_left: 0,
            nodes_joined: 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// Draws `count` poisoners among `candidates`.
    pub(crate) fn choose_poisoners(&mut self, candidates: &[usize], count: usize) {
        let mut c = candidates.to_vec();
        crate::adversary::shuffle(&mut self.rng, &mut c);
        self.poisoners = c.into_iter().take(count).collect();
    }

    /// Whether node `i` is a poisoner.
    pub(crate) fn is_poisoner(&self, i: usize) -> bool {
        self.poisoners.contains(&i)
    }

    /// What each node publishes at `now`: sharers (drawn among `eligible`)
    /// their records, poisoners their decoys.
    pub(crate) fn publications(
        &mut self,
        s: &Scenario,
        now: Millis,
        eligible: &[usize],
        pow: PowParams,
    ) -> Vec<(usize, Vec<SignedRecord>)> {
        let created = now / 1000;
        let mut by_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let (lo, hi) = s.search.sharers;
        for f in 0..self.files.len() {
            let k = lo + self.below(hi.saturating_sub(lo) + 1);
            let mut pool = eligible.to_vec();
            for _ in 0..k.min(pool.len()) {
                let j = self.below(pool.len());
                by_node.entry(pool.swap_remove(j)).or_default().push(f);
            }
        }
        let mut out = Vec::new();
        for (node, files) in by_node {
            let who = Pseudonym::generate(&mut self.rng, pow);
            self.pseudonyms.insert(node, who.publisher().id());
            let records = files
                .iter()
                .map(|&f| {
                    let file = &self.files[f];
                    self.shares.entry(node).or_default().insert(file.id);
                    sign(&who, file.id, &file.name, file.size, created)
                })
                .collect();
            out.push((node, records));
        }
        // Decoys: one junk id per poisoned file, signed by every poisoner.
        let top = s.search.poisoned_files.min(self.files.len());
        let decoys: Vec<(ContentId, usize)> =
            (0..top).map(|f| (random_id(&mut self.rng), f)).collect();
        if !self.poisoners.is_empty() {
            self.decoys = decoys.iter().map(|(id, _)| *id).collect();
        }
        for node in self.poisoners.clone() {
            let who = Pseudonym::generate(&mut self.rng, pow);
            self.pseudonyms.insert(node, who.publisher().id());
            let records = decoys
                .iter()
                .map(|&(id, f)| {
                    let file = &self.files[f];
                    self.shares.entry(node).or_default().insert(id);
                    sign(&who, id, &file.name, file.size, created)
                })
                .collect();
            out.push((node, records));
        }
        out
    }

    /// A search to start: the searcher (among `eligible`, never a sharer
    /// of the target), the target file and the query.
    pub(crate) fn next_search(&mut self, eligible: &[usize]) -> Option<(usize, usize, Query)> {
        let total = *self.zipf.last()?;
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let file = self
            .zipf
            .partition_point(|&c| c <= u)
            .min(self.files.len() - 1);
        let id = self.files[file].id;
        let who: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|i| !self.shares.get(i).is_some_and(|s| s.contains(&id)))
            .collect();
        if who.is_empty() {
            return None;
        }
        let node = who[self.below(who.len())];
        let words = self.query_words(file);
        let query = Query::parse(&words.join(" ")).ok()?;
        Some((node, file, query))
    }

    /// All of a file's words, or (half the time) a subset of at least two
    /// that no other file's words contain.
    fn query_words(&mut self, file: usize) -> Vec<String> {
        let words = self.files[file].words.clone();
        if self.rng.next_u64().is_multiple_of(2) || words.len() <= 2 {
            return words;
        }
        let n = words.len();
        let subsets: Vec<Vec<String>> = (1u32..(1 << n))
            .filter(|m| m.count_ones() >= 2 && m.count_ones() < n as u32)
            .map(|m| {
                (0..n)
                    .filter(|b| m & (1 << b) != 0)
                    .map(|b| words[b].clone())
                    .collect::<Vec<_>>()
            })
            .filter(|sub| {
                self.files.iter().enumerate().all(|(g, other)| {
                    g == file || !sub.iter().all(|w| other.words.binary_search(w).is_ok())
                })
            })
            .collect();
        if subsets.is_empty() {
            return words;
        }
        let k = self.below(subsets.len());
        subsets[k].clone()
    }

    /// Node `node` was asked to search for `file` at `now`.
    pub(crate) fn started(&mut self, node: usize, file: usize, now: Millis, id: Option<SearchId>) {
        let k = self.searches.len();
        self.searches.push(Searched {
            node,
            file,
            started: now,
            ok: id.is_some(),
            found: None,
            answers: 0,
            records: Vec::new(),
            searcher_left: false,
        });
        if let Some(id) = id {
            self.by_search.insert((node, id), k);
        }
    }

    /// Node `node` left at `now` (churn).
    pub(crate) fn left(&mut self, node: usize, now: Millis, timeout: Millis) {
        self.nodes_left += 1;
        for s in &mut self.searches {
            if s.node == node && now < s.started + timeout {
                s.searcher_left = true;
            }
        }
    }

    /// Node `node` emitted `event` at `now`.
    pub(crate) fn on_event(&mut self, now: Millis, node: usize, event: &Event) {
        match event {
            Event::SearchResults { search, records } => {
                let Some(&k) = self.by_search.get(&(node, *search)) else {
                    return;
                };
                let standing = self.standing.entry(node).or_default();
                for r in records {
                    standing.seen(r.publisher().id(), now);
                }
                let s = &mut self.searches[k];
                let target = self.files[s.file].id;
                s.answers += 1;
                if s.found.is_none() && records.iter().any(|r| r.record().content_id == target) {
                    s.found = Some(now);
                }
                s.records.extend(records.iter().cloned());
            }
            Event::Answered { records } => {
                self.answered += 1;
                if let Some(me) = self.pseudonyms.get(&node)
                    && records.iter().any(|(p, _)| p == me)
                {
                    self.self_answers += 1;
                }
                if let Some(own) = self.shares.get(&node)
                    && records.iter().any(|(_, c)| own.contains(c))
                {
                    self.own_content_answers += 1;
                }
            }
            _ => {}
        }
    }

    /// The figures, from what was recorded and the nodes' counters.
    pub(crate) fn outcome(
        &self,
        s: &Scenario,
        nodes: &[Node],
        online: &[bool],
        timeout: Millis,
    ) -> SearchOutcome {
        let hops = s.hops as u64;
        let mut o = SearchOutcome {
            files: self.files.len(),
            records: self
                .shares
                .iter()
                .filter(|(n, _)| !self.poisoners.contains(n))
                .map(|(_, c)| c.len() as u64)
                .sum(),
            poisoner_nodes: self.poisoners.len() as u64,
            decoy_records: (self.poisoners.len() * self.decoys.len()) as u64,
            searches: self.searches.len() as u64,
            answers: self.answered,
            self_answers: self.self_answers,
            own_content_answers: self.own_content_answers,
            nodes_left: self.nodes_left,
            nodes_joined: self.nodes_joined,
            ..SearchOutcome::default()
        };
        let mut latencies = Vec::new();
        let top = s.search.poisoned_files;
        for q in &self.searches {
            o.searches_refused += u64::from(!q.ok);
            // A searcher that left before anything came back cannot be
            // counted either way; one that found it first counts as found.
            o.searches_lost += u64::from(q.searcher_left && q.found.is_none());
            if q.ok {
                o.search_circuit_cells += hops * (1 + q.answers);
            }
            if let Some(t) = q.found {
                o.searches_succeeded += 1;
                latencies.push(t - q.started);
            }
            if !self.decoys.is_empty() && q.file < top {
                o.poisoned_searches += 1;
            }
            if !q.records.is_empty() && !self.decoys.is_empty() {
                let standing = self.standing.get(&q.node).cloned().unwrap_or_default();
                let ranked = rank(&q.records, &standing, q.started + timeout);
                if ranked
                    .first()
                    .is_some_and(|r| self.decoys.contains(&r.content_id))
                {
                    o.decoy_top_results += 1;
                }
            }
        }
        let counted = o.searches - o.searches_lost;
        o.search_success = ratio(o.searches_succeeded, counted);
        latencies.sort_unstable();
        let pct = |p: usize| {
            if latencies.is_empty() {
                0
            } else {
                latencies[((latencies.len() - 1) * p).div_ceil(100)]
            }
        };
        o.search_latency_ms_p50 = pct(50);
        o.search_latency_ms_p95 = pct(95);
        let mut circuit_cells = 0;
        let mut relays = 0u64;
        let mut held = 0u64;
        for (i, n) in nodes.iter().enumerate() {
            let st = &n.stats().search;
            o.walk_cells += st.walk_cells;
            o.reply_cells += st.reply_cells;
            o.publish_cells += st.publish_cells;
            o.records_published += st.published;
            o.rate_limited += st.rate_limited;
            circuit_cells += st.circuit_cells;
            if online.get(i).copied().unwrap_or(false) && n.config().relay {
                relays += 1;
                held += n.index_len() as u64;
            }
        }
        o.publish_circuit_cells = circuit_cells.saturating_sub(o.search_circuit_cells);
        o.messages_per_search = round3(ratio(
            o.walk_cells + o.reply_cells + o.search_circuit_cells,
            o.searches,
        ));
        o.publish_messages_per_record = round3(ratio(
            o.publish_cells + o.publish_circuit_cells,
            o.records_published,
        ));
        o.search_success = round6(o.search_success);
        o.index_records_mean = round3(ratio(held, relays));
        o
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn random_id(rng: &mut ChaCha20Rng) -> ContentId {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    ContentId::from_bytes(b)
}

fn sign(who: &Pseudonym, id: ContentId, name: &str, size: u64, created: u64) -> SignedRecord {
    ContentRecord {
        content_id: id,
        size,
        name: name.to_owned(),
        keywords: keywords_from_name(name),
        media_type: None,
        created,
        expires: created + RECORD_LIFETIME_S,
    }
    .sign(who)
    .expect("the workload makes valid records")
}

/// `count` files: distinct ids, names of 2–4 words from the first
/// `max(24, count / 2)` vocabulary words, no word set contained in
/// another's.
fn make_files(rng: &mut ChaCha20Rng, count: usize) -> Vec<File> {
    let vocab = (count / 2).clamp(24, VOCABULARY.len());
    let mut files: Vec<File> = Vec::with_capacity(count);
    let mut tries = 0usize;
    while files.len() < count {
        tries += 1;
        assert!(
            tries < 1000 * (count + 10),
            "cannot make {count} distinct file names"
        );
        let k = 2 + (rng.next_u64() % 3) as usize;
        let mut picked: Vec<&str> = Vec::with_capacity(k);
        while picked.len() < k {
            let w = VOCABULARY[(rng.next_u64() % vocab as u64) as usize];
            if !picked.contains(&w) {
                picked.push(w);
            }
        }
        let name = picked.join(" ");
        let words = keywords_from_name(&name);
        let nested = |a: &[String], b: &[String]| a.iter().all(|w| b.binary_search(w).is_ok());
        if files
            .iter()
            .any(|f| nested(&words, &f.words) || nested(&f.words, &words))
        {
            continue;
        }
        let id = random_id(rng);
        let size = 1 + rng.next_u64() % (64 << 20);
        files.push(File {
            id,
            name,
            words,
            size,
        });
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_none_contains_another() {
        let mut s = Scenario::new(10, 3);
        s.search.files = 200;
        let w = Workload::new(&s);
        assert_eq!(w.files.len(), 200);
        for (i, a) in w.files.iter().enumerate() {
            assert!((2..=4).contains(&a.words.len()), "{}", a.name);
            for b in &w.files[i + 1..] {
                assert_ne!(a.id, b.id);
                assert!(!a.words.iter().all(|x| b.words.contains(x)));
                assert!(!b.words.iter().all(|x| a.words.contains(x)));
            }
        }
        // Files share words.
        let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &w.files {
            for x in &f.words {
                *uses.entry(x).or_default() += 1;
            }
        }
        assert!(uses.values().any(|&n| n >= 3));
    }

    #[test]
    fn zipf_favours_the_first_files_and_queries_identify_their_file() {
        let mut s = Scenario::new(10, 4);
        s.search.files = 50;
        let mut w = Workload::new(&s);
        let eligible: Vec<usize> = (0..10).collect();
        let mut hits = vec![0usize; 50];
        for _ in 0..2000 {
            let (_, f, q) = w.next_search(&eligible).unwrap();
            hits[f] += 1;
            let file = &w.files[f];
            let rec = ContentRecord {
                content_id: file.id,
                size: 1,
                name: file.name.clone(),
                keywords: file.words.clone(),
                media_type: None,
                created: 0,
                expires: 1,
            };
            assert!(q.matches(&rec));
            let others = w.files.iter().filter(|g| {
                q.matches(&ContentRecord {
                    keywords: g.words.clone(),
                    ..rec.clone()
                })
            });
            assert_eq!(others.count(), 1, "the query identifies its file");
        }
        assert!(hits[0] > hits[9] && hits[0] > 2000 / 10, "{hits:?}");
    }
}
