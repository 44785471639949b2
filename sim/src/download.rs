//! The download workload and its figures.
//!
//! # Sharers serve
//! With downloads, every node that published records at publication also
//! runs one service (its own [`ServiceKey`]) that provides the ids it
//! shares; decoy publishers provide their decoys and serve them honestly
//! (real content: no verification can tell a decoy). False claimers and
//! stallers (`Poisoner`) run a service that provides the real ids of the
//! most popular files: a claimer answers every request with the real piece
//! and one byte flipped, a staller never answers. The harness is every
//! service node's driver: [`Event::PieceWanted`] becomes a
//! `Pending::Serve`, answered from the content the harness placed
//! (`crate::content::Library`).
//!
//! # A download is what a user does
//! A random honest node (or one of `downloaders`) searches by the words of
//! a Zipf-chosen file, as the search workload does, and waits for the
//! search to end. It ranks the results with core's `rank` and its own
//! standing, downloads the top-ranked content id (size from the top
//! record) with [`veil_core::node::Node::download`], and keeps every
//! verified piece. When the download is done the harness compares the
//! assembled bytes with the content it placed for that id
//! (`corrupt_accepted` counts those that differ: it must be 0), and with
//! the file the user wanted (`downloads_verified`). Then the user judges:
//! a decoy fake, a real file good, each judgment flipped with probability
//! `judge_error`; the rating goes to the standing of every pseudonym that
//! signed a record for that id in this node's search results (−100 fake,
//! +1 good, as `veil rate` does), so that node's later searches rank by
//! it. Nobody else learns of it: the feedback is local.
//!
//! # Who could link the two ends
//! Sessions a download opens belong to the node's transfer part, which
//! tells the driver nothing when one opens; the first request on a
//! session ([`Event::PieceWanted`] at the service node) is the first the
//! harness hears of it. Then it takes the service node's `join` circuits
//! and the `meet` circuits of each node downloading that content, and
//! pairs a join circuit not paired before with a meet circuit that ends
//! at the same relay (the rendezvous point). Of sessions whose two ends do
//! not collude, it counts those whose first hops both collude (the
//! colluding set sees both ends' traffic enter the network and can match
//! them by timing) and those whose rendezvous point colludes. Sessions
//! that never carried a request are not counted; those whose first
//! request arrived after the download had finished from other sources
//! (its circuits gone) are counted apart (`sessions_late`).
//!
//! Everything here draws from the workload's own RNG, seeded from the
//! scenario seed, apart from the search workload's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use veil_core::content::ContentId;
use veil_core::identity::{NodeId, Pseudonym, PublisherId};
use veil_core::node::{
    CircuitId, CircuitInfo, DownloadId, DownloadStartError, Event, Millis, SearchId, SessionId,
};
use veil_core::pow::PowParams;
use veil_core::rating::{Rating, SignedRating, Verdict, signer_tags};
use veil_core::record::SignedRecord;
use veil_core::rendezvous::ServiceKey;
use veil_core::search::rank;
use veil_core::transfer::{DropReason, Request, TransferMsg};

use crate::content::Library;
use crate::scenario::Scenario;
use crate::search::{Poisoner, Workload};

/// Standing a rating adds to each pseudonym that signed the content (as
/// `veil rate` in the daemon).
const GOOD_STANDING: i32 = 1;
/// See [`GOOD_STANDING`].
const FAKE_STANDING: i32 = -100;

/// How a service node's driver answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Serving {
    /// Honest sharers and decoy publishers: the piece, or `Missing` for
    /// content it does not provide.
    Honest,
    /// False claimers: the piece with one byte flipped.
    Corrupt,
    /// Stallers: nothing.
    Silent,
}

#[derive(Debug)]
struct Service {
    serving: Serving,
    provides: BTreeSet<ContentId>,
}

/// What the harness must do with the nodes at hand (the network's hooks
/// see events but cannot give nodes input).
#[derive(Debug)]
pub(crate) enum Pending {
    /// A service node's driver reads a piece.
    Serve {
        node: usize,
        session: SessionId,
        req: Request,
    },
    /// A user's search ended: rank, pick, download.
    Choose { k: usize },
    /// The first request on a session of service node `node`, for
    /// content `id`: which circuits carry it?
    Opened { node: usize, id: ContentId },
    /// Node `node`'s user publishes its rating.
    Rate {
        node: usize,
        rating: Box<SignedRating>,
    },
}

/// Where one download stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the search to end.
    Searching,
    /// The node refused the search or the download.
    Refused,
    /// The search brought nothing.
    NotFound,
    /// The downloader left before it could choose.
    Lost,
    /// Pieces are coming.
    Running,
    /// Every piece arrived.
    Done,
}

#[derive(Debug)]
struct Dl {
    node: usize,
    file: usize,
    stage: Stage,
    records: Vec<SignedRecord>,
    ratings: Vec<SignedRating>,
    /// Colluders held the first hops of both ends of one of its sessions.
    compromised: bool,
    /// The content id the user picked.
    chosen: Option<ContentId>,
    /// The file is one the decoys pose as (with decoys in the run).
    poisoned: bool,
    /// The pick was a decoy.
    decoy: bool,
    /// The node's user had rated a decoy fake before this pick.
    after_fake_decoy: bool,
    started_ms: Millis,
    /// When the user asked for it.
    asked_ms: Millis,
    /// The assembled bytes.
    buf: Vec<u8>,
    took_ms: Option<Millis>,
    /// The bytes equal the content placed for the chosen id.
    intact: Option<bool>,
    /// What the user saw when it chose (for `--trace-downloads`).
    view: Option<serde_json::Value>,
    /// The user misjudges what it downloads (drawn with the plan when it
    /// asks, so that the same users err whatever the nodes do).
    misjudged: bool,
    /// How many signers its rating named.
    named: usize,
}

/// The download workload's state.
#[derive(Debug)]
pub(crate) struct Downloads {
    /// The plan: when downloads are asked for, by whom, of what, and
    /// whether the user will misjudge what it gets. Its own stream, so
    /// that a change to what the nodes do (or to the draws below) leaves
    /// the users' plan as it was and runs compare download for download.
    pub(crate) plan: ChaCha20Rng,
    /// Everything else: service keys, signer samples.
    pub(crate) rng: ChaCha20Rng,
    judge_error: f64,
    downloaders: usize,
    /// The nodes that download, once drawn (with `downloaders`).
    chosen: Option<Vec<usize>>,
    services: BTreeMap<usize, Service>,
    by_service: BTreeMap<PublisherId, usize>,
    list: Vec<Dl>,
    by_search: BTreeMap<(usize, SearchId), usize>,
    by_download: BTreeMap<(usize, DownloadId), usize>,
    /// Service sessions seen, and join circuits already paired.
    sessions_seen: BTreeSet<(usize, SessionId)>,
    joins_paired: BTreeSet<(usize, CircuitId)>,
    /// Decoys each node's user rated fake.
    decoys_rated_fake: BTreeMap<usize, u32>,
    pub(crate) pending: VecDeque<Pending>,
    asked: u64,
    skipped: u64,
    corrupt_pieces_sent: u64,
    dropped: BTreeMap<(Serving, DropReasonKey), u64>,
    sessions: u64,
    sessions_measured: u64,
    sessions_unmatched: u64,
    sessions_late: u64,
    colluder_first_hops: u64,
    colluder_rendezvous: u64,
    ratings_fake: u64,
    ratings_good: u64,
    misjudged: u64,
    /// Each downloader's rater pseudonym (made at its first rating).
    raters: BTreeMap<usize, Pseudonym>,
    seed: u64,
    /// The network's proof of work (set with the first service).
    pow: PowParams,
    /// Whether users publish their ratings (off: feedback stays local).
    share_ratings: bool,
    ratings_published: u64,
    /// Every rating a user published: when, of a decoy, fake.
    rating_log: Vec<(Millis, bool, bool)>,
}

/// How long a user's rating lives (it is republished with the node's
/// records until then).
const RATING_LIFETIME_S: u64 = 24 * 3600;

/// `DropReason` as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DropReasonKey {
    Bad,
    Stalled,
    Failed,
}

impl From<DropReason> for DropReasonKey {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::Bad => DropReasonKey::Bad,
            DropReason::Stalled => DropReasonKey::Stalled,
            DropReason::Failed => DropReasonKey::Failed,
        }
    }
}

/// The download figures of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DownloadOutcome {
    /// Downloads the harness asked for.
    pub downloads: u64,
    /// Of those, none could be asked (no eligible node).
    pub downloads_skipped: u64,
    /// The node refused the search or the download (no circuit, the same
    /// content already downloading).
    pub downloads_refused: u64,
    /// The search brought no result.
    pub downloads_not_found: u64,
    /// The downloader left before it could choose (churn).
    pub downloads_lost: u64,
    /// Downloads the nodes started.
    pub downloads_started: u64,
    /// Of those, finished (every piece verified).
    pub downloads_completed: u64,
    /// Finished, of the file the user wanted, and its bytes equal the
    /// content the harness placed for that file.
    pub downloads_verified: u64,
    /// Still running when the run ended.
    pub downloads_unfinished: u64,
    /// Downloads whose top-ranked result was a decoy.
    pub decoy_downloads: u64,
    /// Downloads of files the decoys pose as (with decoys in the run).
    pub poisoned_downloads: u64,
    /// Of `poisoned_downloads`, those by a node whose user had rated a
    /// decoy fake before...
    pub poisoned_after_feedback: u64,
    /// ...and of those, the ones that still picked a decoy.
    pub decoy_downloads_after_feedback: u64,
    /// Pieces false claimers served corrupted.
    pub corrupt_pieces_sent: u64,
    /// Pieces downloaders rejected (failed verification), all nodes.
    pub corrupt_pieces_rejected: u64,
    /// Finished downloads whose bytes differ from the content their id
    /// names (must be 0).
    pub corrupt_accepted: u64,
    /// From `download()` to its end, finished downloads.
    pub download_ms_p50: u64,
    /// See `download_ms_p50`.
    pub download_ms_p95: u64,
    /// Sources dropped as bad (a piece failed verification).
    pub sources_dropped_bad: u64,
    /// Sources dropped as stalled.
    pub sources_dropped_stalled: u64,
    /// Sources dropped after `Missing` answers.
    pub sources_dropped_failed: u64,
    /// Of the bad drops, those of services that serve honestly (must be 0).
    pub honest_dropped_bad: u64,
    /// Of the bad drops, those of false claimers.
    pub claimers_dropped_bad: u64,
    /// Stallers dropped (stalled or failed).
    pub stallers_dropped: u64,
    /// Services run (honest sharers, decoy publishers, claimers,
    /// stallers).
    pub services: u64,
    /// Pieces served, all nodes (core's count).
    pub pieces_served: u64,
    /// Ratings given: fake, good; and judgments that were wrong.
    pub ratings_fake: u64,
    /// See `ratings_fake`.
    pub ratings_good: u64,
    /// See `ratings_fake`.
    pub misjudged: u64,
    /// Download sessions that carried a request.
    pub sessions: u64,
    /// Sessions whose two circuits the harness paired, neither end a
    /// colluder.
    pub sessions_measured: u64,
    /// Sessions whose circuits could not be paired (a circuit closed
    /// already).
    pub sessions_unmatched: u64,
    /// Sessions whose first request arrived after their download had
    /// finished from other sources (not paired).
    pub sessions_late: u64,
    /// Of the measured, both ends' first hops collude.
    pub colluder_first_hops: u64,
    /// Of the measured, the rendezvous point colludes.
    pub colluder_rendezvous: u64,
    /// Downloads (started) one of whose sessions had colluders on the
    /// first hops of both ends.
    pub compromised_downloads: u64,
    /// Ratings users published.
    pub ratings_published: u64,
    /// `colluder_first_hops / sessions_measured`.
    pub colluder_first_hops_share: f64,
    /// `colluder_rendezvous / sessions_measured`.
    pub colluder_rendezvous_share: f64,
}

impl Downloads {
    /// The workload of `s` (its own RNG).
    pub(crate) fn new(s: &Scenario) -> Downloads {
        Downloads {
            plan: ChaCha20Rng::seed_from_u64(s.seed ^ 0x0091_a7d0_7710_ad5e),
            rng: ChaCha20Rng::seed_from_u64(s.seed ^ 0xd0_7710_adde_c0de),
            judge_error: s.search.judge_error,
            downloaders: s.search.downloaders,
            chosen: None,
            services: BTreeMap::new(),
            by_service: BTreeMap::new(),
            list: Vec::new(),
            by_search: BTreeMap::new(),
            by_download: BTreeMap::new(),
            sessions_seen: BTreeSet::new(),
            joins_paired: BTreeSet::new(),
            decoys_rated_fake: BTreeMap::new(),
            pending: VecDeque::new(),
            asked: 0,
            skipped: 0,
            corrupt_pieces_sent: 0,
            dropped: BTreeMap::new(),
            sessions: 0,
            sessions_measured: 0,
            sessions_unmatched: 0,
            sessions_late: 0,
            colluder_first_hops: 0,
            colluder_rendezvous: 0,
            ratings_fake: 0,
            ratings_good: 0,
            misjudged: 0,
            raters: BTreeMap::new(),
            seed: s.seed,
            pow: PowParams::TESTNET,
            share_ratings: s.search.share_ratings,
            ratings_published: 0,
            rating_log: Vec::new(),
        }
    }

    /// A fresh service key for node `node`, which will serve `ids` as
    /// `kind` (`None`: an honest sharer) says.
    pub(crate) fn service(
        &mut self,
        node: usize,
        kind: Option<Poisoner>,
        ids: Vec<ContentId>,
        pow: veil_core::pow::PowParams,
    ) -> ServiceKey {
        self.pow = pow;
        let key = ServiceKey::generate(&mut self.rng, pow);
        let serving = match kind {
            None | Some(Poisoner::Decoys) => Serving::Honest,
            Some(Poisoner::FalseClaims) => Serving::Corrupt,
            Some(Poisoner::Stalls) => Serving::Silent,
        };
        self.by_service.insert(key.id(), node);
        self.services.insert(
            node,
            Service {
                serving,
                provides: ids.into_iter().collect(),
            },
        );
        key
    }

    /// The nodes that may download now, among `ready`: all of them, or
    /// the `downloaders` drawn the first time.
    pub(crate) fn eligible(&mut self, ready: Vec<usize>) -> Vec<usize> {
        if self.downloaders == 0 {
            return ready;
        }
        if self.chosen.is_none() {
            let mut c = ready.clone();
            crate::adversary::shuffle(&mut self.plan, &mut c);
            c.truncate(self.downloaders);
            c.sort_unstable();
            self.chosen = Some(c);
        }
        let chosen = self.chosen.as_deref().unwrap_or_default();
        ready
            .into_iter()
            .filter(|i| chosen.binary_search(i).is_ok())
            .collect()
    }

    /// One download asked for; `None` if nobody could (no eligible node).
    pub(crate) fn asked(&mut self, pick: Option<(usize, usize)>, now: Millis, w: &Workload) {
        self.asked += 1;
        let Some((node, file)) = pick else {
            self.skipped += 1;
            return;
        };
        let poisoned = w.is_poisoned(file);
        let u = (self.plan.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.list.push(Dl {
            node,
            file,
            stage: Stage::Searching,
            records: Vec::new(),
            ratings: Vec::new(),
            compromised: false,
            chosen: None,
            poisoned,
            decoy: false,
            after_fake_decoy: false,
            started_ms: now,
            asked_ms: now,
            buf: Vec::new(),
            took_ms: None,
            intact: None,
            view: None,
            misjudged: u < self.judge_error,
            named: 0,
        });
    }

    /// The last download asked for searches as `search` (or was refused).
    pub(crate) fn searching(&mut self, search: Option<SearchId>) {
        let k = self.list.len() - 1;
        let d = &mut self.list[k];
        match search {
            Some(s) => {
                self.by_search.insert((d.node, s), k);
            }
            None => d.stage = Stage::Refused,
        }
    }

    /// The user of download `k` ranks its results at `now` and picks the
    /// top one: (node, content id, size) to download, if any.
    pub(crate) fn choose(
        &mut self,
        k: usize,
        w: &Workload,
        now: Millis,
        online: impl Fn(usize) -> bool,
    ) -> Option<(usize, ContentId, u64)> {
        let d = &mut self.list[k];
        if !online(d.node) {
            d.stage = Stage::Lost;
            return None;
        }
        let ranked = rank(&d.records, &d.ratings, &w.standing(d.node), now);
        let Some(top) = ranked.first() else {
            d.stage = Stage::NotFound;
            return None;
        };
        d.chosen = Some(top.content_id);
        d.decoy = w.is_decoy(&top.content_id);
        d.after_fake_decoy = self.decoys_rated_fake.contains_key(&d.node);
        // What the user saw, for the trace: the top three and the true
        // file, the decoy ratings it got, and how many had been
        // published by then.
        let wanted = w.catalog.files[d.file].id;
        let entry = |i: usize, r: &veil_core::search::Ranked| {
            serde_json::json!({
                "rank": i,
                "kind": if r.content_id == wanted { "real" } else if w.is_decoy(&r.content_id) { "decoy" } else { "other" },
                "publishers": r.publishers,
                "discredited": r.discredited,
                "rated_good": r.rated_good,
                "rated_fake": r.rated_fake,
                "disputed": r.disputed,
                "score": (r.score * 1000.0).round() / 1000.0,
            })
        };
        let mut shown: Vec<serde_json::Value> = ranked
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, r)| entry(i, r))
            .collect();
        if let Some((i, r)) = ranked
            .iter()
            .enumerate()
            .skip(3)
            .find(|(_, r)| r.content_id == wanted)
        {
            shown.push(entry(i, r));
        }
        let decoy_raters = |v: Verdict| -> usize {
            d.ratings
                .iter()
                .filter(|r| r.rating().verdict == v && w.is_decoy(&r.record().content_id))
                .map(|r| r.publisher().id())
                .collect::<BTreeSet<_>>()
                .len()
        };
        let published = |decoy: bool, fake: bool| {
            self.rating_log
                .iter()
                .filter(|&&(t, dd, f)| t <= now && dd == decoy && f == fake)
                .count()
        };
        d.view = Some(serde_json::json!({
            "chosen_ms": now,
            "ratings_received": d.ratings.len(),
            "decoy_fake_raters_received": decoy_raters(Verdict::Fake),
            "decoy_good_raters_received": decoy_raters(Verdict::Good),
            "decoy_fake_ratings_published": published(true, true),
            "decoy_good_ratings_published": published(true, false),
            "ranked": shown,
        }));
        Some((d.node, top.content_id, top.size))
    }

    /// Download `k` started at `now` (or the node refused it).
    pub(crate) fn started(
        &mut self,
        k: usize,
        r: Result<DownloadId, DownloadStartError>,
        size: u64,
        now: Millis,
    ) {
        let d = &mut self.list[k];
        match r {
            Ok(id) => {
                d.stage = Stage::Running;
                d.started_ms = now;
                d.buf = vec![0; size as usize];
                self.by_download.insert((d.node, id), k);
            }
            Err(e) => {
                tracing::debug!(node = d.node, error = %e, "download refused");
                d.stage = Stage::Refused;
            }
        }
    }

    /// What service node `node`'s driver answers to `req` (`None`: it
    /// stays silent).
    pub(crate) fn serve(
        &mut self,
        node: usize,
        req: &Request,
        library: &Library,
    ) -> Option<TransferMsg> {
        let s = self.services.get(&node)?;
        match s.serving {
            Serving::Silent => None,
            Serving::Honest if !s.provides.contains(&req.id) => {
                Some(TransferMsg::Missing { req: req.req })
            }
            Serving::Honest => Some(library.serve(req)),
            Serving::Corrupt => {
                let mut reply = library.serve(req);
                if let TransferMsg::Piece { encoded, .. } = &mut reply {
                    let mid = encoded.len() / 2;
                    encoded[mid] ^= 0x40;
                    self.corrupt_pieces_sent += 1;
                }
                Some(reply)
            }
        }
    }

    /// Whether node `node` runs a service.
    pub(crate) fn runs_service(&self, node: usize) -> bool {
        self.services.contains_key(&node)
    }

    /// The nodes downloading `id` now.
    pub(crate) fn downloading(&self, id: &ContentId) -> Vec<usize> {
        self.list
            .iter()
            .filter(|d| d.stage == Stage::Running && d.chosen.as_ref() == Some(id))
            .map(|d| d.node)
            .collect()
    }

    /// A session of service node `node` carried its first request: `join`
    /// are that node's join circuits, `meets` each downloader's meet
    /// circuits; `colluder` says whether a relay colludes,
    /// `colluding_node` whether a node does.
    pub(crate) fn opened(
        &mut self,
        node: usize,
        id: ContentId,
        join: &[CircuitInfo],
        meets: &[(usize, Vec<CircuitInfo>)],
        colluder: impl Fn(&NodeId) -> bool,
        colluding_node: impl Fn(usize) -> bool,
    ) {
        if meets.is_empty() {
            // Its downloader finished (from other sources) before this
            // session's first request arrived, and closed its circuits.
            self.sessions_late += 1;
            return;
        }
        let pair = join
            .iter()
            .filter(|j| !self.joins_paired.contains(&(node, j.id)))
            .find_map(|j| {
                let point = j.hops.last()?;
                meets.iter().find_map(|(downloader, ms)| {
                    let m = ms.iter().find(|m| m.hops.last() == Some(point))?;
                    Some((*downloader, m, j, point))
                })
            });
        let Some((downloader, m, j, point)) = pair else {
            self.sessions_unmatched += 1;
            return;
        };
        self.joins_paired.insert((node, j.id));
        if colluding_node(node) || colluding_node(downloader) {
            return;
        }
        self.sessions_measured += 1;
        let first = |c: &CircuitInfo| c.hops.first().is_some_and(&colluder);
        if first(m) && first(j) {
            self.colluder_first_hops += 1;
            for d in &mut self.list {
                if d.node == downloader && d.stage == Stage::Running && d.chosen == Some(id) {
                    d.compromised = true;
                }
            }
        }
        if colluder(point) {
            self.colluder_rendezvous += 1;
        }
    }

    /// Node `node` emitted `event` at `now`.
    pub(crate) fn on_event(&mut self, now: Millis, node: usize, event: &Event, w: &mut Workload) {
        match event {
            Event::SearchResults {
                search,
                records,
                ratings,
            } => {
                if let Some(&k) = self.by_search.get(&(node, *search)) {
                    w.seen(node, records, ratings, now);
                    self.list[k].records.extend(records.iter().cloned());
                    self.list[k].ratings.extend(ratings.iter().cloned());
                } else {
                    // The node's own content-id searches for a download
                    // in progress (finding providers) bring records of
                    // that id too: their signers are kept, so that a fake
                    // verdict names them as well (what the daemon does
                    // with the same results).
                    let fetching: Vec<SignedRecord> = records
                        .iter()
                        .filter(|r| {
                            self.list.iter().any(|d| {
                                d.node == node
                                    && d.stage == Stage::Running
                                    && d.chosen == Some(r.record().content_id)
                            })
                        })
                        .cloned()
                        .collect();
                    w.download_signed(node, &fetching);
                }
            }
            Event::SearchDone { search } => {
                if let Some(k) = self.by_search.remove(&(node, *search)) {
                    self.pending.push_back(Pending::Choose { k });
                }
            }
            Event::PieceWanted {
                session,
                req,
                id,
                piece,
            } if self.services.contains_key(&node) => {
                if self.sessions_seen.insert((node, *session)) {
                    self.sessions += 1;
                    self.pending.push_back(Pending::Opened { node, id: *id });
                }
                self.pending.push_back(Pending::Serve {
                    node,
                    session: *session,
                    req: Request {
                        req: *req,
                        id: *id,
                        piece: *piece,
                    },
                });
            }
            Event::PieceVerified { download, piece } => {
                if let Some(&k) = self.by_download.get(&(node, *download)) {
                    let buf = &mut self.list[k].buf;
                    let at = piece.offset() as usize;
                    let data = piece.data();
                    if let Some(dst) = buf.get_mut(at..at + data.len()) {
                        dst.copy_from_slice(data);
                    }
                }
            }
            Event::DownloadDone { download } => {
                if let Some(k) = self.by_download.remove(&(node, *download)) {
                    self.done(k, now, w);
                }
            }
            Event::SourceDropped {
                service, reason, ..
            } => {
                let serving = self
                    .by_service
                    .get(service)
                    .and_then(|n| self.services.get(n))
                    .map_or(Serving::Honest, |s| s.serving);
                *self.dropped.entry((serving, (*reason).into())).or_default() += 1;
            }
            _ => {}
        }
    }

    /// Download `k` finished at `now`: check the bytes, then the user
    /// judges and rates.
    fn done(&mut self, k: usize, now: Millis, w: &mut Workload) {
        let d = &mut self.list[k];
        let Some(id) = d.chosen else { return };
        d.stage = Stage::Done;
        d.took_ms = Some(now - d.started_ms);
        let placed = w.catalog.library.bytes(&id);
        d.intact = Some(placed == Some(&d.buf[..]));
        d.buf = Vec::new();
        let node = d.node;
        let shown = d
            .records
            .iter()
            .find(|r| r.record().content_id == id)
            .map(|r| r.record().clone());
        let is_decoy = w.is_decoy(&id);
        let wrong = d.misjudged;
        let fake = is_decoy != wrong;
        self.misjudged += u64::from(wrong);
        let verdict = if fake { Verdict::Fake } else { Verdict::Good };
        let signers = shown
            .as_ref()
            .map(|r| signer_tags(&w.signers_of(node, &id, fake), r, &mut self.rng))
            .unwrap_or_default();
        d.named = signers.len();
        let (seed, pow) = (self.seed, self.pow);
        let rater = self.raters.entry(node).or_insert_with(|| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed ^ (node as u64).rotate_left(32));
            Pseudonym::generate(&mut rng, pow)
        });
        let me = rater.publisher().id();
        // The user's rating goes out, naming the file as its search
        // showed it (the top record's fields for that id) and the
        // pseudonyms that signed it there.
        let rating = shown.filter(|_| self.share_ratings).and_then(|mut rated| {
            rated.created = now / 1000;
            rated.expires = rated.created + RATING_LIFETIME_S;
            (Rating {
                rated,
                verdict,
                signers,
            })
            .sign(rater)
            .ok()
        });
        if let Some(rating) = rating {
            self.ratings_published += 1;
            self.rating_log.push((now, is_decoy, fake));
            self.pending.push_back(Pending::Rate {
                node,
                rating: Box::new(rating),
            });
        }
        if fake {
            self.ratings_fake += 1;
            w.rate(node, &id, FAKE_STANDING, verdict, &me);
            if is_decoy {
                *self.decoys_rated_fake.entry(node).or_default() += 1;
            }
        } else {
            self.ratings_good += 1;
            w.rate(node, &id, GOOD_STANDING, verdict, &me);
        }
    }

    /// One object per download asked for, in order: who, what, when,
    /// what the user saw when it chose and how it ended
    /// (`--trace-downloads`).
    pub(crate) fn trace(&self, w: &Workload) -> Vec<serde_json::Value> {
        self.list
            .iter()
            .enumerate()
            .map(|(k, d)| {
                let wanted = w.catalog.files[d.file].id;
                serde_json::json!({
                    "download": k,
                    "node": d.node,
                    "file": d.file,
                    "poisoned": d.poisoned,
                    "asked_ms": d.asked_ms,
                    "stage": format!("{:?}", d.stage).to_lowercase(),
                    "chose": d.chosen.map(|c| if c == wanted { "real" } else if w.is_decoy(&c) { "decoy" } else { "other" }),
                    "after_fake_decoy": d.after_fake_decoy,
                    "verified": d.stage == Stage::Done && d.intact == Some(true) && d.chosen == Some(wanted),
                    "took_ms": d.took_ms,
                    "misjudged": d.misjudged,
                    "named": d.named,
                    "view": d.view,
                })
            })
            .collect()
    }

    /// The figures; `corrupt_pieces_rejected` and `pieces_served` are the
    /// nodes' counters.
    pub(crate) fn outcome(
        &self,
        w: &Workload,
        corrupt_pieces_rejected: u64,
        pieces_served: u64,
    ) -> DownloadOutcome {
        let mut o = DownloadOutcome {
            downloads: self.asked,
            downloads_skipped: self.skipped,
            corrupt_pieces_sent: self.corrupt_pieces_sent,
            corrupt_pieces_rejected,
            pieces_served,
            services: self.services.len() as u64,
            ratings_fake: self.ratings_fake,
            ratings_good: self.ratings_good,
            misjudged: self.misjudged,
            sessions: self.sessions,
            sessions_measured: self.sessions_measured,
            sessions_unmatched: self.sessions_unmatched,
            sessions_late: self.sessions_late,
            colluder_first_hops: self.colluder_first_hops,
            colluder_rendezvous: self.colluder_rendezvous,
            ratings_published: self.ratings_published,
            ..DownloadOutcome::default()
        };
        let mut took = Vec::new();
        for d in &self.list {
            match d.stage {
                Stage::Refused => o.downloads_refused += 1,
                Stage::NotFound => o.downloads_not_found += 1,
                Stage::Lost => o.downloads_lost += 1,
                Stage::Searching => {}
                Stage::Running => o.downloads_unfinished += 1,
                Stage::Done => o.downloads_completed += 1,
            }
            if matches!(d.stage, Stage::Running | Stage::Done) {
                o.downloads_started += 1;
            }
            if d.chosen.is_some() {
                o.decoy_downloads += u64::from(d.decoy);
                if d.poisoned {
                    o.poisoned_downloads += 1;
                    if d.after_fake_decoy {
                        o.poisoned_after_feedback += 1;
                        o.decoy_downloads_after_feedback += u64::from(d.decoy);
                    }
                }
            }
            if matches!(d.stage, Stage::Running | Stage::Done) && d.compromised {
                o.compromised_downloads += 1;
            }
            if d.stage == Stage::Done {
                o.corrupt_accepted += u64::from(d.intact == Some(false));
                let wanted = w.catalog.files[d.file].id;
                if d.intact == Some(true) && d.chosen == Some(wanted) {
                    o.downloads_verified += 1;
                }
                took.extend(d.took_ms);
            }
        }
        took.sort_unstable();
        o.download_ms_p50 = crate::metrics::percentile(&took, 50);
        o.download_ms_p95 = crate::metrics::percentile(&took, 95);
        for (&(serving, reason), &n) in &self.dropped {
            match reason {
                DropReasonKey::Bad => o.sources_dropped_bad += n,
                DropReasonKey::Stalled => o.sources_dropped_stalled += n,
                DropReasonKey::Failed => o.sources_dropped_failed += n,
            }
            match (serving, reason) {
                (Serving::Honest, DropReasonKey::Bad) => o.honest_dropped_bad += n,
                (Serving::Corrupt, DropReasonKey::Bad) => o.claimers_dropped_bad += n,
                (Serving::Silent, _) => o.stallers_dropped += n,
                _ => {}
            }
        }
        let share = |a: u64| {
            if o.sessions_measured == 0 {
                0.0
            } else {
                (a as f64 / o.sessions_measured as f64 * 1e6).round() / 1e6
            }
        };
        o.colluder_first_hops_share = share(o.colluder_first_hops);
        o.colluder_rendezvous_share = share(o.colluder_rendezvous);
        o
    }
}
