//! The transfer part: downloads over rendezvous sessions, and serving our
//! services' content. The pieces (messages, framing, the scheduler) are in
//! [`crate::transfer`]; this part runs them over sessions.
//!
//! # A download, start to end
//! 1. [`crate::node::Node::download`] starts an exact content-id search
//!    for provider records.
//! 2. Each provider found (at most `max_sources` at once, never two for
//!    one service) gets a session ([`crate::node::Node::connect`], owned by
//!    this part), and becomes a [`SourceId`] of the [`Download`] once the
//!    session opens.
//! 3. Requests go out framed in session messages as the circuit's window
//!    allows (the node pumps [`Transfers::poll_chunk`]); pieces come back,
//!    are verified against the content id, and reach the driver as
//!    [`Event::PieceVerified`] (a [`VerifiedPiece`]: nothing else).
//! 4. A source that serves a bad piece is dropped at once and its service
//!    reported ([`Event::SourceDropped`], reason `Bad`); one that stalls
//!    or refuses is benched, then dropped. Its session closes and its
//!    pieces go to the others. When no source is left, the part searches
//!    again (at most every `research_ms`).
//! 5. [`Event::DownloadDone`] when every piece is held.
//!
//! # Serving
//! Sessions opened to a service that provides content are this part's:
//! each request becomes [`Event::PieceWanted`] for the driver (which reads
//! its file: core does no IO) and comes back through
//! [`crate::node::Node::serve_piece`]. At most `window_per_source`
//! requests per session are outstanding; beyond that the downloader broke
//! the protocol and its session is closed.

use std::collections::{BTreeMap, BTreeSet};

use super::output::{Action, Ctx};
use super::rendezvous::SessionId;
use super::{Event, Millis, SearchId};
use crate::content::{ContentId, VerifiedPiece};
use crate::identity::PublisherId;
use crate::provider::SignedProvider;
use crate::rendezvous::MAX_SESSION_PLAINTEXT;
use crate::transfer::{
    Bitfield, Download, DownloadEvent, Framer, MAX_PIECE_MESSAGE, PieceFault, Reassembler, Request,
    ScheduleParams, SourceId, TransferMsg,
};

#[cfg(test)]
mod tests;

/// Transfer parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferParams {
    /// The scheduler's parameters (window per source, stalls, backoff).
    pub schedule: ScheduleParams,
    /// Sources (sessions) per download at once.
    pub max_sources: usize,
    /// Downloads at once.
    pub max_downloads: usize,
    /// With no source left, search again at most this often.
    pub research_ms: Millis,
}

impl TransferParams {
    /// The real network.
    pub const MAINNET: TransferParams = TransferParams {
        schedule: ScheduleParams::DEFAULT,
        max_sources: 4,
        max_downloads: 16,
        research_ms: 30_000,
    };

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_sources == 0 || self.max_downloads == 0 || self.research_ms == 0 {
            return Err(
                "transfer.max_sources, max_downloads and research_ms must be positive".into(),
            );
        }
        Download::new(
            ContentId::from_bytes([0; 32]),
            0,
            Bitfield::new(0),
            self.schedule,
        )
        .map(|_| ())
        .map_err(|e| format!("transfer.schedule: {e}"))
    }
}

/// Our handle for one download. Unique for the node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DownloadId(pub u64);

/// Why a download could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DownloadStartError {
    /// `max_downloads` are running.
    #[error("too many downloads")]
    TooMany,
    /// This content is being downloaded already.
    #[error("this content is being downloaded already")]
    Duplicate,
    /// The size or the bitfield does not fit.
    #[error("{0}")]
    Invalid(String),
}

/// Puts `provider` back among `dl`'s candidates after a wait that doubles
/// with its failures (2 s to 64 s); a service that keeps failing is given
/// up after 6.
fn retry_later(cx: &Ctx<'_>, dl: &mut Dl, provider: SignedProvider) {
    let service = provider.service().id();
    if dl.bad.contains(&service) {
        return;
    }
    let fails = dl.fails.entry(service).or_default();
    *fails += 1;
    if *fails > 6 {
        return;
    }
    let wait = 1_000u64 << (*fails).min(6);
    dl.candidates.insert(service, (provider, cx.now + wait));
}

/// Transfer counters (part of [`crate::node::Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Pieces verified and handed to the driver.
    pub pieces_verified: u64,
    /// Pieces that failed verification (their source was dropped).
    pub corrupt_pieces_rejected: u64,
    /// Sources dropped (bad, stalled or failing).
    pub sources_dropped: u64,
    /// Pieces we served (as a service).
    pub pieces_served: u64,
    /// Sessions closed for breaking the transfer protocol.
    pub protocol_errors: u64,
}

/// One source of a download: a session to one service.
#[derive(Debug)]
struct Source {
    download: DownloadId,
    id: SourceId,
    service: PublisherId,
    open: bool,
    /// To try again later if the session fails for no fault of its own.
    provider: SignedProvider,
}

#[derive(Debug)]
struct Dl {
    sched: Download,
    /// Providers to try, by service, each not before a time (a service
    /// whose session failed waits, doubling, before it is tried again).
    candidates: BTreeMap<PublisherId, (SignedProvider, Millis)>,
    /// Failures so far, by service.
    fails: BTreeMap<PublisherId, u32>,
    /// Services that served a bad piece or broke the protocol: never again.
    bad: BTreeSet<PublisherId>,
    search: Option<SearchId>,
    searched_ms: Option<Millis>,
    next_source: u64,
    /// A piece verified: the size (from a content record) is proven, so a
    /// source that fails verification now is lying, not the record.
    proven: bool,
}

/// What one session carries: our requests and pieces, either way.
#[derive(Debug)]
struct Channel {
    out: Framer,
    inbound: Reassembler,
    /// As a service: requests handed to the driver and not served yet.
    outstanding: BTreeSet<u32>,
}

impl Channel {
    fn new(max_in: usize) -> Channel {
        Channel {
            out: Framer::new(MAX_SESSION_PLAINTEXT, MAX_PIECE_MESSAGE),
            inbound: Reassembler::new(max_in),
            outstanding: BTreeSet::new(),
        }
    }
}

/// The transfer part.
#[derive(Debug, Default)]
pub(super) struct Transfers {
    downloads: BTreeMap<DownloadId, Dl>,
    next_download: u64,
    /// Our sessions to sources.
    sources: BTreeMap<SessionId, Source>,
    /// Every session this part owns (sources and serving).
    channels: BTreeMap<SessionId, Channel>,
    /// Searches started for downloads.
    searches: BTreeMap<SearchId, DownloadId>,
}

impl Transfers {
    /// Starts a download of `id` (`size` bytes, from the signed content
    /// record), holding `have` already. The node starts its search.
    pub(super) fn start(
        &mut self,
        cx: &mut Ctx<'_>,
        id: ContentId,
        size: u64,
        have: Bitfield,
    ) -> Result<DownloadId, DownloadStartError> {
        let p = &cx.config.transfer;
        if self.downloads.len() >= p.max_downloads {
            return Err(DownloadStartError::TooMany);
        }
        if self.downloads.values().any(|d| d.sched.id() == id) {
            return Err(DownloadStartError::Duplicate);
        }
        let sched = Download::new(id, size, have, p.schedule)
            .map_err(|e| DownloadStartError::Invalid(e.to_string()))?;
        let d = DownloadId(self.next_download);
        self.next_download += 1;
        let done = sched.is_complete();
        self.downloads.insert(
            d,
            Dl {
                sched,
                candidates: BTreeMap::new(),
                fails: BTreeMap::new(),
                bad: BTreeSet::new(),
                search: None,
                searched_ms: None,
                next_source: 0,
                proven: false,
            },
        );
        if done {
            cx.event(Event::DownloadDone { download: d });
            self.downloads.remove(&d);
        }
        Ok(d)
    }

    /// The content ids to search providers for now: new downloads, and
    /// those with no source left (at most every `research_ms`).
    pub(super) fn searches_due(&mut self, cx: &Ctx<'_>) -> Vec<(DownloadId, ContentId)> {
        let now = cx.now;
        let every = cx.config.transfer.research_ms;
        let live: BTreeSet<DownloadId> = self.sources.values().map(|s| s.download).collect();
        self.downloads
            .iter_mut()
            .filter(|(d, dl)| !live.contains(d) && dl.candidates.is_empty())
            .filter(|(_, dl)| dl.searched_ms.is_none_or(|t| now >= t + every))
            .map(|(d, dl)| {
                dl.searched_ms = Some(now);
                (*d, dl.sched.id())
            })
            .collect()
    }

    /// The node could not start a search for download `d` (no circuit
    /// yet): it is due again at once.
    pub(super) fn search_failed(&mut self, d: DownloadId) {
        if let Some(dl) = self.downloads.get_mut(&d) {
            dl.searched_ms = None;
        }
    }

    /// The node started search `s` for download `d`.
    pub(super) fn searching(&mut self, d: DownloadId, s: SearchId) {
        if let Some(dl) = self.downloads.get_mut(&d) {
            if let Some(old) = dl.search.replace(s) {
                self.searches.remove(&old);
            }
            self.searches.insert(s, d);
        }
    }

    /// Whether search `s` is one of ours.
    pub(super) fn owns_search(&self, s: SearchId) -> bool {
        self.searches.contains_key(&s)
    }

    /// Providers found by one of our searches.
    pub(super) fn found(&mut self, s: SearchId, providers: Vec<SignedProvider>) {
        let Some(&d) = self.searches.get(&s) else {
            return;
        };
        let live: BTreeSet<PublisherId> = self
            .sources
            .values()
            .filter(|x| x.download == d)
            .map(|x| x.service)
            .collect();
        let Some(dl) = self.downloads.get_mut(&d) else {
            return;
        };
        let id = dl.sched.id();
        for p in providers {
            let service = p.service().id();
            if p.record().content_id == id && !dl.bad.contains(&service) && !live.contains(&service)
            {
                dl.candidates.entry(service).or_insert((p, 0));
            }
        }
    }

    /// Providers to connect to now: (download, provider), within
    /// `max_sources` per download.
    pub(super) fn connects_due(&mut self, cx: &mut Ctx<'_>) -> Vec<(DownloadId, SignedProvider)> {
        let max = cx.config.transfer.max_sources;
        let mut out = Vec::new();
        for (d, dl) in &mut self.downloads {
            let have = self.sources.values().filter(|s| s.download == *d).count();
            for _ in have..max {
                // At random among those that failed least: a provider
                // never tried goes before one that already failed (a
                // staller is replaced by a fresh provider, not retried
                // while untried ones wait). At random: service ids can be
                // ground to sort first.
                let now = cx.now;
                let fails = |s: &PublisherId| dl.fails.get(s).copied().unwrap_or(0);
                let least = dl
                    .candidates
                    .iter()
                    .filter(|(_, (_, at))| *at <= now)
                    .map(|(s, _)| fails(s))
                    .min();
                let ready: Vec<PublisherId> = dl
                    .candidates
                    .iter()
                    .filter(|(s, (_, at))| *at <= now && Some(fails(s)) == least)
                    .map(|(s, _)| *s)
                    .collect();
                if ready.is_empty() {
                    break;
                }
                let i = (rand_core::RngCore::next_u64(cx.rng) % ready.len() as u64) as usize;
                let Some((p, _)) = dl.candidates.remove(&ready[i]) else {
                    break;
                };
                out.push((*d, p));
            }
        }
        out
    }

    /// Session `session` was started for download `d` with `provider`.
    pub(super) fn connecting(
        &mut self,
        d: DownloadId,
        session: SessionId,
        provider: SignedProvider,
    ) {
        let service = provider.service().id();
        let Some(dl) = self.downloads.get_mut(&d) else {
            return;
        };
        let id = SourceId(dl.next_source);
        dl.next_source += 1;
        self.sources.insert(
            session,
            Source {
                download: d,
                id,
                service,
                open: false,
                provider,
            },
        );
    }

    /// A session of ours (a source) or of our services (serving) opened.
    pub(super) fn opened(&mut self, cx: &mut Ctx<'_>, session: SessionId, inbound: bool) {
        if inbound {
            // Requests are small: a downloader cannot make us buffer more.
            self.channels.insert(session, Channel::new(64));
            return;
        }
        let Some(src) = self.sources.get_mut(&session) else {
            return;
        };
        src.open = true;
        self.channels
            .insert(session, Channel::new(MAX_PIECE_MESSAGE));
        if let Some(dl) = self.downloads.get_mut(&src.download) {
            dl.sched.add_source(src.id);
        }
        self.request(cx);
    }

    /// A session ended.
    pub(super) fn closed(&mut self, cx: &mut Ctx<'_>, session: SessionId) {
        self.channels.remove(&session);
        if let Some(src) = self.sources.remove(&session)
            && let Some(dl) = self.downloads.get_mut(&src.download)
        {
            dl.sched.remove_source(src.id);
            // It failed to open, or its circuit went: not the service's
            // fault as far as we know. Again later, after a doubling wait.
            retry_later(cx, dl, src.provider);
            self.request(cx);
        }
    }

    /// Bytes on one of our sessions.
    pub(super) fn data(&mut self, cx: &mut Ctx<'_>, session: SessionId, bytes: &[u8]) {
        let Some(ch) = self.channels.get_mut(&session) else {
            return;
        };
        let mut msgs = Vec::new();
        if ch.inbound.push(bytes, &mut msgs).is_err() {
            return self.broken(cx, session);
        }
        for m in msgs {
            let Ok(msg) = TransferMsg::decode(&m) else {
                return self.broken(cx, session);
            };
            match msg {
                TransferMsg::Request(r) => self.wanted(cx, session, r),
                TransferMsg::Piece { req, encoded } => self.piece(cx, session, req, &encoded),
                TransferMsg::Missing { req } => self.missing(cx, session, req),
            }
        }
        self.request(cx);
    }

    /// As a service: a request, for the driver to read.
    fn wanted(&mut self, cx: &mut Ctx<'_>, session: SessionId, r: Request) {
        let window = cx.config.transfer.schedule.window_per_source;
        let Some(ch) = self.channels.get_mut(&session) else {
            return;
        };
        // Pieces answered but still queued count against the window too:
        // an honest downloader asks again only once a piece has left, so a
        // downloader that stops reading cannot make us queue without end.
        let queued = ch.out.buffered().div_ceil(MAX_PIECE_MESSAGE);
        if self.sources.contains_key(&session)
            || ch.outstanding.len() + queued >= window
            || !ch.outstanding.insert(r.req)
        {
            // A source sends no requests; a downloader keeps its window.
            return self.broken(cx, session);
        }
        cx.event(Event::PieceWanted {
            session,
            req: r.req,
            id: r.id,
            piece: r.piece,
        });
    }

    /// As a service: the driver's answer to [`Event::PieceWanted`].
    pub(super) fn serve(&mut self, cx: &mut Ctx<'_>, session: SessionId, reply: &TransferMsg) {
        let req = match reply {
            TransferMsg::Piece { req, .. } | TransferMsg::Missing { req } => *req,
            TransferMsg::Request(_) => return,
        };
        let Some(ch) = self.channels.get_mut(&session) else {
            return;
        };
        if !ch.outstanding.remove(&req) {
            return;
        }
        if let Ok(bytes) = reply.encode()
            && ch.out.push(&bytes).is_ok()
            && matches!(reply, TransferMsg::Piece { .. })
        {
            cx.stats.transfer.pieces_served += 1;
        }
    }

    fn piece(&mut self, cx: &mut Ctx<'_>, session: SessionId, req: u32, encoded: &[u8]) {
        let Some(src) = self.sources.get(&session) else {
            return self.broken(cx, session);
        };
        let (d, id) = (src.download, src.id);
        let Some(dl) = self.downloads.get_mut(&d) else {
            return;
        };
        match dl.sched.on_piece(id, req, encoded, cx.now) {
            Ok(piece) => self.verified(cx, d, piece),
            // The scheduler dropped the source; `drain` reports it.
            Err(PieceFault::Corrupt { .. }) => cx.stats.transfer.corrupt_pieces_rejected += 1,
            // Late, duplicate (endgame) or unknown replies: no blame.
            Err(_) => {}
        }
        self.drain(cx, d);
    }

    fn missing(&mut self, cx: &mut Ctx<'_>, session: SessionId, req: u32) {
        let Some(src) = self.sources.get(&session) else {
            return self.broken(cx, session);
        };
        let (d, id) = (src.download, src.id);
        if let Some(dl) = self.downloads.get_mut(&d) {
            let _ = dl.sched.on_missing(id, req, cx.now);
        }
        self.drain(cx, d);
    }

    fn verified(&mut self, cx: &mut Ctx<'_>, d: DownloadId, piece: VerifiedPiece) {
        cx.stats.transfer.pieces_verified += 1;
        if let Some(dl) = self.downloads.get_mut(&d) {
            dl.proven = true;
        }
        cx.event(Event::PieceVerified { download: d, piece });
        let done = self
            .downloads
            .get(&d)
            .is_some_and(|dl| dl.sched.is_complete());
        if done {
            self.finish(cx, d);
            cx.event(Event::DownloadDone { download: d });
        }
    }

    /// Ends download `d` (done or cancelled): its sessions close.
    pub(super) fn finish(&mut self, cx: &mut Ctx<'_>, d: DownloadId) -> bool {
        let Some(dl) = self.downloads.remove(&d) else {
            return false;
        };
        if let Some(s) = dl.search {
            self.searches.remove(&s);
        }
        let mine: Vec<SessionId> = self
            .sources
            .iter()
            .filter(|(_, s)| s.download == d)
            .map(|(k, _)| *k)
            .collect();
        for s in mine {
            self.sources.remove(&s);
            self.channels.remove(&s);
            cx.out.act(Action::CloseSession(s));
        }
        true
    }

    /// The scheduler's news for download `d`: dropped sources.
    fn drain(&mut self, cx: &mut Ctx<'_>, d: DownloadId) {
        let Some(dl) = self.downloads.get_mut(&d) else {
            return;
        };
        let proven = dl.proven;
        let mut dropped = Vec::new();
        while let Some(DownloadEvent::Dropped { source, reason }) = dl.sched.poll_event() {
            dropped.push((source, reason));
        }
        for (source, reason) in dropped {
            let Some((&session, src)) = self
                .sources
                .iter()
                .find(|(_, s)| s.download == d && s.id == source)
            else {
                continue;
            };
            let service = src.service;
            let provider = src.provider.clone();
            self.sources.remove(&session);
            self.channels.remove(&session);
            if let Some(dl) = self.downloads.get_mut(&d) {
                if reason == crate::transfer::DropReason::Bad {
                    dl.bad.insert(service);
                } else {
                    retry_later(cx, dl, provider);
                }
            }
            cx.stats.transfer.sources_dropped += 1;
            cx.out.act(Action::CloseSession(session));
            cx.event(Event::SourceDropped {
                download: d,
                service,
                reason,
                proven,
            });
        }
    }

    /// A session broke the transfer protocol: closed.
    fn broken(&mut self, cx: &mut Ctx<'_>, session: SessionId) {
        cx.stats.transfer.protocol_errors += 1;
        self.channels.remove(&session);
        if let Some(src) = self.sources.remove(&session)
            && let Some(dl) = self.downloads.get_mut(&src.download)
        {
            dl.sched.remove_source(src.id);
            dl.bad.insert(src.service);
        }
        cx.out.act(Action::CloseSession(session));
    }

    /// Queues the requests the schedulers want sent now.
    fn request(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        for (d, dl) in &mut self.downloads {
            while let Some((source, r)) = dl.sched.next_request(now) {
                let session = self
                    .sources
                    .iter()
                    .find(|(_, s)| s.download == *d && s.id == source)
                    .map(|(k, _)| *k);
                let ch = session.and_then(|s| self.channels.get_mut(&s));
                let (Some(ch), Ok(bytes)) = (ch, TransferMsg::Request(r).encode()) else {
                    break;
                };
                if ch.out.push(&bytes).is_err() {
                    break;
                }
            }
        }
    }

    /// Stalls and backoff: the schedulers' deadlines.
    pub(super) fn tick(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        let ds: Vec<DownloadId> = self.downloads.keys().copied().collect();
        for d in ds {
            if let Some(dl) = self.downloads.get_mut(&d) {
                dl.sched.on_timeout(now);
            }
            self.drain(cx, d);
        }
        self.request(cx);
    }

    /// When [`Transfers::tick`] should run next.
    pub(super) fn poll_timeout(&self, now: Millis, research_ms: Millis) -> Option<Millis> {
        let sched = self
            .downloads
            .values()
            .filter_map(|d| d.sched.poll_timeout());
        // Searching again, when a download has no source.
        let again = (!self.downloads.is_empty()).then_some(now + research_ms.min(1_000));
        let retry = self
            .downloads
            .values()
            .flat_map(|d| d.candidates.values().map(|(_, at)| *at))
            .filter(|at| *at > now);
        sched.chain(again).chain(retry).min()
    }

    /// Sessions with framed bytes waiting to go out.
    pub(super) fn sending(&self) -> Vec<SessionId> {
        self.channels
            .iter()
            .filter(|(_, c)| !c.out.is_empty())
            .map(|(s, _)| *s)
            .collect()
    }

    /// The next chunk to send on `session`.
    pub(super) fn poll_chunk(&mut self, session: SessionId) -> Option<Vec<u8>> {
        self.channels.get_mut(&session)?.out.poll_chunk()
    }

    /// Progress of download `d`: (pieces held, pieces in all, sources).
    pub(super) fn progress(&self, d: DownloadId) -> Option<(u64, u64, usize)> {
        let dl = self.downloads.get(&d)?;
        let p = dl.sched.progress();
        let sources = self
            .sources
            .values()
            .filter(|s| s.download == d && s.open)
            .count();
        Some((p.held_pieces, p.total_pieces, sources))
    }
}
