//! The search workload and its figures.
//!
//! Files are real content (`crate::content`: 64–512 KiB of bytes drawn
//! per file, the id their BLAKE3 root) with names of two to four words
//! from one vocabulary (so files share words; no file's word set is
//! contained in another's, so a full name identifies its file). At
//! publication each file gets several honest relay sharers, each node with
//! its own pseudonym signing one record per file it shares; poisoners (one
//! pseudonym each) all sign the same decoys: junk content (real bytes of
//! the real file's size, with a valid tree, so no verification can tell)
//! under the names of the most popular files. Searches pick a target by
//! Zipf popularity (exponent 1) and ask for its words (all of them, or a
//! subset of at least two that still identifies it), so the harness knows
//! the true content id.
//!
//! With downloads ([`crate::download`]) the poisoners split in three
//! (`Poisoner`): a third publish decoys as above, a third claim to
//! provide the real files and corrupt what they serve, a third claim and
//! never answer. Without downloads all of them publish decoys, as before.
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
//! is the run it always was. A file's bytes come from a ChaCha RNG seeded
//! with 32 bytes of that stream (the draw that used to be its random id),
//! so the stream itself is what it was.

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use veil_core::content::ContentId;
use veil_core::identity::{Pseudonym, PublisherId};
use veil_core::node::{Event, Millis, Node, SearchId};
use veil_core::pow::PowParams;
use veil_core::rating::{MAX_DOWNLOAD_SIGNERS, SignedRating, Verdict};
use veil_core::record::{ContentRecord, SignedRecord, keywords_from_name};
use veil_core::search::{Query, Standing, rank};

use crate::content::{Library, file_size};
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
pub(crate) struct File {
    /// Its content id (the root of the bytes in the library).
    pub(crate) id: ContentId,
    name: String,
    /// Canonical keywords of the name, sorted.
    words: Vec<String>,
    size: u64,
}

/// What a poisoner does. Without downloads every poisoner publishes
/// decoys; with downloads they split in thirds, in the order of their
/// node indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Poisoner {
    /// Signs records for junk content under popular names, and serves
    /// that content honestly: nothing but the user can tell.
    Decoys,
    /// Runs a service that provides the real ids of popular files and
    /// corrupts every piece it serves.
    FalseClaims,
    /// Runs a service that provides the real ids of popular files and
    /// never answers a request.
    Stalls,
}

/// What is shared: the files, their popularity, their bytes, and who
/// shares what.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) files: Vec<File>,
    /// Cumulative Zipf weights over files (file 0 the most popular).
    zipf: Vec<f64>,
    /// What each node shares (decoys included for poisoners).
    pub(crate) shares: BTreeMap<usize, BTreeSet<ContentId>>,
    /// The bytes of every file and decoy.
    pub(crate) library: Library,
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
    /// Ratings that came back with them.
    ratings: Vec<SignedRating>,
    /// The searcher left before the search's timeout.
    searcher_left: bool,
    /// The top result by `rank` when the search ended (the searcher's
    /// standing then: later ratings do not change it).
    top: Option<Option<ContentId>>,
}

/// The search workload's state.
#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) catalog: Catalog,
    poisoners: BTreeMap<usize, Poisoner>,
    /// Decoy content ids, and the file each one poses as.
    decoys: BTreeMap<ContentId, usize>,
    searches: Vec<Searched>,
    by_search: BTreeMap<(usize, SearchId), usize>,
    /// Each searcher's view of publishers: first seen at result arrival,
    /// and standing from its users' ratings.
    standing: BTreeMap<usize, Standing>,
    /// Each searcher's search results: who signed a record for which
    /// content id (what a rating reaches, as `veil rate` does).
    signers: BTreeMap<usize, BTreeMap<ContentId, BTreeSet<PublisherId>>>,
    /// Each downloader's signers of the content it fetches, from the
    /// answers to its download's own searches for providers (at most
    /// `MAX_DOWNLOAD_SIGNERS` per id): a fake verdict reaches them too, a
    /// good one does not (as the daemon's `veil rate`).
    download_signers: BTreeMap<usize, BTreeMap<ContentId, BTreeSet<PublisherId>>>,
    /// Each searcher's ratings seen in search results, by content id
    /// (what its user's own judgment is compared with).
    ratings_seen: BTreeMap<usize, BTreeMap<ContentId, Vec<SignedRating>>>,
    /// Search timeout of the nodes (a search's results are ranked as of
    /// its end).
    timeout: Millis,
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
    /// The last quarter of searches (by start), after feedback had time
    /// to work: how many, how many were for poisoned files, and how many
    /// had a decoy on top.
    pub late_searches: u64,
    /// See `late_searches`.
    pub late_poisoned_searches: u64,
    /// See `late_searches`.
    pub decoy_top_results_late: u64,
    /// Ratings that came back with search results (all searches).
    pub ratings_received: u64,
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

impl Catalog {
    /// A file to look for, by Zipf popularity, and who looks (among
    /// `eligible`, never a sharer of it), with the query, all drawn from
    /// `rng`.
    pub(crate) fn pick(
        &self,
        rng: &mut ChaCha20Rng,
        eligible: &[usize],
    ) -> Option<(usize, usize, Query)> {
        let total = *self.zipf.last()?;
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
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
        let node = who[below(rng, who.len())];
        let words = self.query_words(rng, file);
        let query = Query::parse(&words.join(" ")).ok()?;
        Some((node, file, query))
    }

    /// All of a file's words, or (half the time) a subset of at least two
    /// that no other file's words contain.
    fn query_words(&self, rng: &mut ChaCha20Rng, file: usize) -> Vec<String> {
        let words = self.files[file].words.clone();
        if rng.next_u64().is_multiple_of(2) || words.len() <= 2 {
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
        let k = below(rng, subsets.len());
        subsets[k].clone()
    }
}

impl Workload {
    /// The files of `s` (their bytes too) and the workload's RNG; searches
    /// end after `timeout`.
    pub(crate) fn new(s: &Scenario, timeout: Millis) -> Workload {
        let mut rng = ChaCha20Rng::seed_from_u64(s.seed ^ 0x5ea4_c4ed_f11e_5eed);
        let mut library = Library::default();
        let files = make_files(&mut rng, &mut library, s.search.files);
        let mut zipf = Vec::with_capacity(files.len());
        let mut total = 0.0;
        for k in 0..files.len() {
            total += 1.0 / (k + 1) as f64;
            zipf.push(total);
        }
        Workload {
            rng,
            catalog: Catalog {
                files,
                zipf,
                shares: BTreeMap::new(),
                library,
            },
            poisoners: BTreeMap::new(),
            decoys: BTreeMap::new(),
            searches: Vec::new(),
            by_search: BTreeMap::new(),
            standing: BTreeMap::new(),
            signers: BTreeMap::new(),
            download_signers: BTreeMap::new(),
            ratings_seen: BTreeMap::new(),
            timeout,
            pseudonyms: BTreeMap::new(),
            self_answers: 0,
            own_content_answers: 0,
            answered: 0,
            nodes_left: 0,
            nodes_joined: 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        below(&mut self.rng, n)
    }

    /// Draws `count` poisoners among `candidates`; with `split` (a run
    /// with downloads) a third of them, by node index, claim and corrupt,
    /// a third claim and stall, the rest publish decoys.
    pub(crate) fn choose_poisoners(&mut self, candidates: &[usize], count: usize, split: bool) {
        let mut c = candidates.to_vec();
        crate::adversary::shuffle(&mut self.rng, &mut c);
        let chosen: BTreeSet<usize> = c.into_iter().take(count).collect();
        self.poisoners = chosen
            .into_iter()
            .enumerate()
            .map(|(k, i)| {
                let kind = match k % 3 {
                    _ if !split => Poisoner::Decoys,
                    0 => Poisoner::Decoys,
                    1 => Poisoner::FalseClaims,
                    _ => Poisoner::Stalls,
                };
                (i, kind)
            })
            .collect();
    }

    /// Whether node `i` is a poisoner.
    pub(crate) fn is_poisoner(&self, i: usize) -> bool {
        self.poisoners.contains_key(&i)
    }

    /// Whether `id` is a decoy.
    pub(crate) fn is_decoy(&self, id: &ContentId) -> bool {
        self.decoys.contains_key(id)
    }

    /// Whether decoys pose as file `file`.
    pub(crate) fn is_poisoned(&self, file: usize) -> bool {
        self.decoys.values().any(|&f| f == file)
    }

    /// The pseudonyms that signed content `id` in node `node`'s search
    /// results, and (`with_download`) in the answers to its downloads'
    /// searches for providers.
    pub(crate) fn signers_of(
        &self,
        node: usize,
        id: &ContentId,
        with_download: bool,
    ) -> Vec<PublisherId> {
        let of = |m: &BTreeMap<usize, BTreeMap<ContentId, BTreeSet<PublisherId>>>| {
            m.get(&node)
                .and_then(|m| m.get(id))
                .cloned()
                .unwrap_or_default()
        };
        let mut all = of(&self.signers);
        if with_download {
            all.extend(of(&self.download_signers));
        }
        all.into_iter().collect()
    }

    /// Node `node`'s download's own search for providers brought
    /// `records` (of the content it fetches): their signers are kept for
    /// a fake verdict, each once, up to `MAX_DOWNLOAD_SIGNERS` per id. Not
    /// "seen" for ranking: the user never saw them.
    pub(crate) fn download_signed(&mut self, node: usize, records: &[SignedRecord]) {
        let m = self.download_signers.entry(node).or_default();
        for r in records {
            let set = m.entry(r.record().content_id).or_default();
            if set.len() < MAX_DOWNLOAD_SIGNERS {
                set.insert(r.publisher().id());
            }
        }
    }

    /// Node `node`'s standing of publishers (empty if it never searched).
    pub(crate) fn standing(&self, node: usize) -> Standing {
        self.standing.get(&node).cloned().unwrap_or_default()
    }

    /// Node `node` got `records` and `ratings` at `now`: it notes their
    /// signers (first seen), who signed which content id, and the ratings.
    pub(crate) fn seen(
        &mut self,
        node: usize,
        records: &[SignedRecord],
        ratings: &[SignedRating],
        now: Millis,
    ) {
        let standing = self.standing.entry(node).or_default();
        let signers = self.signers.entry(node).or_default();
        for r in records {
            let p = r.publisher().id();
            standing.seen(p, now);
            signers.entry(r.record().content_id).or_default().insert(p);
        }
        let seen = self.ratings_seen.entry(node).or_default();
        for r in ratings {
            standing.seen(r.publisher().id(), now);
            seen.entry(r.record().content_id)
                .or_default()
                .push(r.clone());
        }
    }

    /// Node `node`'s user rated content `id`: `delta` to the standing of
    /// every pseudonym that signed a record for it in that node's search
    /// results, and for a fake verdict in its download's answers (as
    /// `veil rate` does), and each rater of `id` it saw gains
    /// or loses by agreeing or not (`Standing::judged`). Returns how many
    /// publishers.
    pub(crate) fn rate(
        &mut self,
        node: usize,
        id: &ContentId,
        delta: i32,
        verdict: Verdict,
        me: &PublisherId,
    ) -> usize {
        let standing = self.standing.entry(node).or_default();
        if let Some(seen) = self.ratings_seen.get(&node).and_then(|m| m.get(id)) {
            standing.judged(id, verdict, seen, Some(me));
        }
        let who = self.signers_of(node, id, verdict == Verdict::Fake);
        let standing = self.standing.entry(node).or_default();
        for p in &who {
            standing.adjust(*p, delta);
        }
        who.len()
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
        for f in 0..self.catalog.files.len() {
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
                    let file = &self.catalog.files[f];
                    self.catalog.shares.entry(node).or_default().insert(file.id);
                    sign(&who, file.id, &file.name, file.size, created)
                })
                .collect();
            out.push((node, records));
        }
        // Decoys: junk content of the real file's size, one per poisoned
        // file, signed by every decoy publisher. The seeds are drawn
        // whether or not anyone poisons, so that the stream stays the same.
        let top = s.search.poisoned_files.min(self.catalog.files.len());
        let seeds: Vec<([u8; 32], usize)> = (0..top).map(|f| (seed(&mut self.rng), f)).collect();
        if self.poisoners.is_empty() {
            return out;
        }
        self.decoys = seeds
            .into_iter()
            .map(|(seed, f)| {
                let size = self.catalog.files[f].size;
                (self.catalog.library.make(seed, size), f)
            })
            .collect();
        let mut decoys: Vec<(ContentId, usize)> =
            self.decoys.iter().map(|(&d, &f)| (d, f)).collect();
        decoys.sort_by_key(|&(_, f)| f);
        for (node, kind) in self.poisoners.clone() {
            // Drawn for every poisoner, so that the split changes no draw.
            let who = Pseudonym::generate(&mut self.rng, pow);
            if kind != Poisoner::Decoys {
                continue;
            }
            self.pseudonyms.insert(node, who.publisher().id());
            let records = decoys
                .iter()
                .map(|&(id, f)| {
                    let file = &self.catalog.files[f];
                    self.catalog.shares.entry(node).or_default().insert(id);
                    sign(&who, id, &file.name, file.size, created)
                })
                .collect();
            out.push((node, records));
        }
        out
    }

    /// What each service node provides once published: honest sharers
    /// their files, decoy publishers their decoys, false claimers and
    /// stallers the real ids of the `2 * poisoned_files` most popular
    /// files (those the decoys pose as, and as many more).
    pub(crate) fn provided(&self, s: &Scenario) -> Vec<(usize, Option<Poisoner>, Vec<ContentId>)> {
        let claimed: Vec<ContentId> = self
            .catalog
            .files
            .iter()
            .take(2 * s.search.poisoned_files)
            .map(|f| f.id)
            .collect();
        let mut out: Vec<(usize, Option<Poisoner>, Vec<ContentId>)> = self
            .catalog
            .shares
            .iter()
            .map(|(&node, ids)| {
                let kind = self.poisoners.get(&node).copied();
                (node, kind, ids.iter().copied().collect())
            })
            .collect();
        for (&node, &kind) in &self.poisoners {
            if kind != Poisoner::Decoys {
                out.push((node, Some(kind), claimed.clone()));
            }
        }
        out.sort_by_key(|(node, ..)| *node);
        out
    }

    /// A search to start: the searcher (among `eligible`, never a sharer
    /// of the target), the target file and the query.
    pub(crate) fn next_search(&mut self, eligible: &[usize]) -> Option<(usize, usize, Query)> {
        self.catalog.pick(&mut self.rng, eligible)
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
            ratings: Vec::new(),
            searcher_left: false,
            top: None,
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
            Event::SearchResults {
                search,
                records,
                ratings,
            } => {
                let Some(&k) = self.by_search.get(&(node, *search)) else {
                    return;
                };
                self.seen(node, records, ratings, now);
                self.searches[k].ratings.extend(ratings.iter().cloned());
                let s = &mut self.searches[k];
                let target = self.catalog.files[s.file].id;
                s.answers += 1;
                if s.found.is_none() && records.iter().any(|r| r.record().content_id == target) {
                    s.found = Some(now);
                }
                s.records.extend(records.iter().cloned());
            }
            Event::SearchDone { search } => {
                let Some(&k) = self.by_search.get(&(node, *search)) else {
                    return;
                };
                let q = &self.searches[k];
                let top = self.top(q);
                self.searches[k].top = Some(top);
            }
            Event::Answered { records } => {
                self.answered += 1;
                if let Some(me) = self.pseudonyms.get(&node)
                    && records.iter().any(|(p, _)| p == me)
                {
                    self.self_answers += 1;
                }
                if let Some(own) = self.catalog.shares.get(&node)
                    && records.iter().any(|(_, c)| own.contains(c))
                {
                    self.own_content_answers += 1;
                }
            }
            _ => {}
        }
    }

    /// The top result of `q` by `rank`, with its searcher's standing now,
    /// as of the search's end.
    fn top(&self, q: &Searched) -> Option<ContentId> {
        let standing = self.standing.get(&q.node).cloned().unwrap_or_default();
        rank(&q.records, &q.ratings, &standing, q.started + self.timeout)
            .first()
            .map(|r| r.content_id)
    }

    /// The figures, from what was recorded and the nodes' counters.
    pub(crate) fn outcome(&self, s: &Scenario, nodes: &[Node], online: &[bool]) -> SearchOutcome {
        let hops = s.hops as u64;
        let decoy_publishers = self
            .poisoners
            .values()
            .filter(|&&k| k == Poisoner::Decoys)
            .count();
        let mut o = SearchOutcome {
            files: self.catalog.files.len(),
            records: self
                .catalog
                .shares
                .iter()
                .filter(|(n, _)| !self.poisoners.contains_key(n))
                .map(|(_, c)| c.len() as u64)
                .sum(),
            poisoner_nodes: self.poisoners.len() as u64,
            decoy_records: (decoy_publishers * self.decoys.len()) as u64,
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
        // The last quarter of searches by start time.
        let mut starts: Vec<Millis> = self.searches.iter().map(|q| q.started).collect();
        starts.sort_unstable();
        let late_from = starts
            .get(starts.len() - starts.len() / 4)
            .copied()
            .unwrap_or(Millis::MAX);
        for q in &self.searches {
            let late = q.started >= late_from && !starts.is_empty();
            o.late_searches += u64::from(late);
            o.ratings_received += q.ratings.len() as u64;
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
                o.late_poisoned_searches += u64::from(late);
            }
            if !q.records.is_empty() && !self.decoys.is_empty() {
                // As of the search's end (a searcher that left never saw
                // it end: as of the end of the run).
                let top = q.top.unwrap_or_else(|| self.top(q));
                if top.is_some_and(|id| self.decoys.contains_key(&id)) {
                    o.decoy_top_results += 1;
                    o.decoy_top_results_late += u64::from(late);
                }
            }
        }
        let counted = o.searches - o.searches_lost;
        o.search_success = ratio(o.searches_succeeded, counted);
        latencies.sort_unstable();
        o.search_latency_ms_p50 = crate::metrics::percentile(&latencies, 50);
        o.search_latency_ms_p95 = crate::metrics::percentile(&latencies, 95);
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

fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// 32 bytes of `rng`: the seed of one item's content.
fn seed(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
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

/// `count` files: distinct content placed in `library` (64–512 KiB
/// each), names of 2–4 words from the first `max(24, count / 2)`
/// vocabulary words, no word set contained in another's.
fn make_files(rng: &mut ChaCha20Rng, library: &mut Library, count: usize) -> Vec<File> {
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
        let seed = seed(rng);
        let size = file_size(rng.next_u64());
        let id = library.make(seed, size);
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
        let w = Workload::new(&s, 8_000);
        let files = &w.catalog.files;
        assert_eq!(files.len(), 200);
        for (i, a) in files.iter().enumerate() {
            assert!((2..=4).contains(&a.words.len()), "{}", a.name);
            let bytes = w.catalog.library.bytes(&a.id).expect("placed");
            assert_eq!(veil_core::content::content_id(bytes), a.id);
            assert_eq!(bytes.len() as u64, a.size);
            assert!(
                (crate::content::MIN_FILE_BYTES..=crate::content::MAX_FILE_BYTES).contains(&a.size)
            );
            for b in &files[i + 1..] {
                assert_ne!(a.id, b.id);
                assert!(!a.words.iter().all(|x| b.words.contains(x)));
                assert!(!b.words.iter().all(|x| a.words.contains(x)));
            }
        }
        // Files share words.
        let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
        for f in files {
            for x in &f.words {
                *uses.entry(x).or_default() += 1;
            }
        }
        assert!(uses.values().any(|&n| n >= 3));
    }

    #[test]
    fn poisoners_split_only_with_downloads_and_ratings_reach_every_signer_seen() {
        let s = Scenario::new(10, 5);
        let mut w = Workload::new(&s, 8_000);
        let candidates: Vec<usize> = (0..9).collect();
        w.choose_poisoners(&candidates, 9, false);
        assert!(w.poisoners.values().all(|&k| k == Poisoner::Decoys));
        w.choose_poisoners(&candidates, 9, true);
        let count = |k| w.poisoners.values().filter(|&&p| p == k).count();
        assert_eq!(
            (
                count(Poisoner::Decoys),
                count(Poisoner::FalseClaims),
                count(Poisoner::Stalls)
            ),
            (3, 3, 3)
        );
        // Node 1 saw two publishers sign content `a`, another sign `b`.
        let pow = PowParams::TESTNET;
        let (p, q, r) = (
            Pseudonym::generate(&mut w.rng, pow),
            Pseudonym::generate(&mut w.rng, pow),
            Pseudonym::generate(&mut w.rng, pow),
        );
        let (a, b) = (
            ContentId::from_bytes([1; 32]),
            ContentId::from_bytes([2; 32]),
        );
        let records = [
            sign(&p, a, "amber anchor", 9, 1),
            sign(&q, a, "amber anchor", 9, 1),
            sign(&r, b, "amber apple", 9, 1),
        ];
        w.seen(1, &records, &[], 5);
        let me = PublisherId::from_bytes([9; 32]);
        assert_eq!(
            w.rate(1, &a, -100, Verdict::Fake, &me),
            2,
            "both signers of a"
        );
        assert_eq!(
            w.rate(2, &a, -100, Verdict::Fake, &me),
            0,
            "node 2 saw nothing: local standing"
        );
        let st = w.standing(1);
        assert_eq!(
            (st.score(&p.publisher().id()), st.score(&q.publisher().id())),
            (-100, -100)
        );
        assert_eq!(st.first_seen(&p.publisher().id()), Some(5));
        assert_eq!(st.score(&r.publisher().id()), 0);
        // Rated fake, `a` (two signers) now ranks below `b` (one) for node 1.
        let top = rank(&records, &[], &st, 10);
        assert_eq!(top[0].content_id, b);
    }

    #[test]
    fn zipf_favours_the_first_files_and_queries_identify_their_file() {
        let mut s = Scenario::new(10, 4);
        s.search.files = 50;
        let mut w = Workload::new(&s, 8_000);
        let eligible: Vec<usize> = (0..10).collect();
        let mut hits = vec![0usize; 50];
        for _ in 0..2000 {
            let (_, f, q) = w.next_search(&eligible).unwrap();
            hits[f] += 1;
            let file = &w.catalog.files[f];
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
            let others = w.catalog.files.iter().filter(|g| {
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
