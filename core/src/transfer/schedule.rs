//! The downloader's scheduler: which piece of one content to ask of which
//! source, and what to believe of the answers. See [`Download`] for the call
//! order, the guarantees and the bounds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use thiserror::Error;

use super::{Bitfield, PIECE_BYTES, Request, piece_count, piece_range};
use crate::content::{ContentId, MAX_CONTENT_SIZE, VerifiedPiece, VerifyError, verify_range};

/// Most copies of one piece in flight at once (the endgame's duplicate).
pub const MAX_ENDGAME_COPIES: u32 = 2;

/// Largest [`ScheduleParams::window_per_source`] accepted.
pub const MAX_WINDOW_PER_SOURCE: usize = 256;

/// A source of the content, as the caller names it (it maps ids to
/// rendezvous sessions and service keys). Single-use: once removed or
/// dropped, an id is not accepted again, so give each session a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub u64);

/// Parameters of a [`Download`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleParams {
    /// Requests in flight per source, 1 to [`MAX_WINDOW_PER_SOURCE`].
    pub window_per_source: usize,
    /// A source that owes replies and has sent none for this long is
    /// stalled (milliseconds, at least 1).
    pub stall_ms: u64,
    /// Bench time after a first failure (milliseconds, at least 1).
    pub backoff_base_ms: u64,
    /// Longest bench time (milliseconds, at least `backoff_base_ms`).
    pub backoff_max_ms: u64,
    /// Consecutive failures (stalls or `Missing` answers) after which a
    /// source is dropped (at least 1).
    pub max_failures: u32,
}

impl ScheduleParams {
    /// 8 pieces (512 KiB) in flight per source, enough to keep a circuit
    /// of a few hundred KB/s busy across a round trip of a second or two;
    /// stalled after 15 s without a reply (several round trips of a slow
    /// circuit); benched for 1 s, 2 s, 4 s… up to 60 s; dropped after 5
    /// failures in a row, which takes a dead source over a minute, long
    /// enough to ride out a circuit being rebuilt.
    pub const DEFAULT: ScheduleParams = ScheduleParams {
        window_per_source: 8,
        stall_ms: 15_000,
        backoff_base_ms: 1_000,
        backoff_max_ms: 60_000,
        max_failures: 5,
    };

    /// The bench time after `failures` consecutive failures (at least 1):
    /// `backoff_base_ms * 2^(failures - 1)`, at most `backoff_max_ms`.
    pub fn backoff_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(63);
        self.backoff_base_ms
            .saturating_mul(1 << doublings)
            .min(self.backoff_max_ms)
    }

    fn check(&self) -> Result<(), DownloadError> {
        let bad = |what| Err(DownloadError::BadParams(what));
        if !(1..=MAX_WINDOW_PER_SOURCE).contains(&self.window_per_source) {
            return bad("window_per_source must be 1 to 256");
        }
        if self.stall_ms == 0 || self.backoff_base_ms == 0 {
            return bad("stall_ms and backoff_base_ms must be positive");
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return bad("backoff_max_ms must be at least backoff_base_ms");
        }
        if self.max_failures == 0 {
            return bad("max_failures must be positive");
        }
        Ok(())
    }
}

impl Default for ScheduleParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a [`Download`] could not be created (always the caller's mistake).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DownloadError {
    /// The size is over [`MAX_CONTENT_SIZE`].
    #[error("content size {size} exceeds the maximum of {MAX_CONTENT_SIZE} bytes")]
    SizeTooLarge {
        /// The size given.
        size: u64,
    },
    /// The bitfield is for content of another number of pieces.
    #[error("bitfield of {got} pieces for content of {want} pieces")]
    BitfieldMismatch {
        /// Pieces in the bitfield.
        got: u64,
        /// Pieces in the content.
        want: u64,
    },
    /// A parameter is out of range.
    #[error("bad schedule parameters: {0}")]
    BadParams(&'static str),
}

/// Why a source was dropped; it gets no more requests and its replies are
/// refused from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// It sent a stream that failed verification: a peer fault. Penalise
    /// its service key (not the record's publisher).
    Bad,
    /// [`ScheduleParams::max_failures`] consecutive failures, the last a
    /// stall.
    Stalled,
    /// [`ScheduleParams::max_failures`] consecutive failures, the last a
    /// `Missing` answer.
    Failed,
}

/// What a [`Download`] tells its caller besides return values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadEvent {
    /// The source was dropped (reported once per source, whatever call
    /// dropped it; [`Download::remove_source`] reports nothing).
    Dropped {
        /// The source.
        source: SourceId,
        /// Why.
        reason: DropReason,
    },
}

/// A reply [`Download::on_piece`] or [`Download::on_missing`] refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PieceFault {
    /// The source is not in the download (never added, removed or
    /// dropped). Ignored.
    #[error("reply from source {} that is not in the download", from.0)]
    UnknownSource {
        /// The sender.
        from: SourceId,
    },
    /// Nothing is in flight at this source under this number: never asked,
    /// asked only of another source, already answered, or given up after a
    /// stall (a late reply is not misbehaviour). Ignored.
    #[error("source {} replied to request {req}, which is not in flight there", from.0)]
    NotAsked {
        /// The sender.
        from: SourceId,
        /// The request number it gave.
        req: u32,
    },
    /// The piece was asked of two sources (endgame) and the other copy
    /// verified first. The request is answered, nothing else changes.
    #[error("piece {piece} from source {} is already held", from.0)]
    AlreadyHeld {
        /// The sender.
        from: SourceId,
        /// The request answered.
        req: u32,
        /// The piece.
        piece: u64,
    },
    /// The stream failed verification: the source was dropped as
    /// [`DropReason::Bad`] and its pieces in flight go back to be fetched
    /// elsewhere.
    #[error("piece {piece} from source {} failed verification: {error}", from.0)]
    Corrupt {
        /// The sender, now dropped.
        from: SourceId,
        /// The request answered.
        req: u32,
        /// The piece asked for.
        piece: u64,
        /// What was wrong.
        error: VerifyError,
    },
}

impl PieceFault {
    /// True if the source misbehaved (and was dropped); the other faults
    /// can happen to honest sources (late or duplicate replies).
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, PieceFault::Corrupt { .. })
    }
}

/// How far a [`Download`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Pieces held (verified).
    pub held_pieces: u64,
    /// Pieces in the content.
    pub total_pieces: u64,
    /// Bytes in the pieces held.
    pub held_bytes: u64,
    /// The content size.
    pub total_bytes: u64,
}

/// What a [`Download`] knows of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// Requests in flight there.
    pub in_flight: usize,
    /// Pieces it delivered that verified.
    pub served: u64,
    /// Consecutive failures (stalls, `Missing` answers) since its last
    /// verified piece.
    pub failures: u32,
    /// While benched: when it may get requests again.
    pub benched_until_ms: Option<u64>,
}

#[derive(Debug)]
struct InFlight {
    piece: u64,
}

#[derive(Debug)]
struct Source {
    in_flight: BTreeMap<u32, InFlight>,
    next_req: u32,
    failures: u32,
    benched_until_ms: Option<u64>,
    /// When it last showed life while owing replies: its last reply, or the
    /// first request sent after it owed nothing. Meaningful only while
    /// `in_flight` is not empty.
    alive_ms: u64,
    served: u64,
}

impl Source {
    fn new() -> Source {
        Source {
            in_flight: BTreeMap::new(),
            next_req: 0,
            failures: 0,
            benched_until_ms: None,
            alive_ms: 0,
            served: 0,
        }
    }

    fn is_benched(&self, now_ms: u64) -> bool {
        self.benched_until_ms.is_some_and(|t| now_ms < t)
    }

    fn stall_deadline(&self, stall_ms: u64) -> Option<u64> {
        (!self.in_flight.is_empty()).then(|| self.alive_ms.saturating_add(stall_ms))
    }
}

/// The download of one content from several sources: which piece to ask
/// of which source, and what to believe of the answers.
///
/// `Download` is pure data over opaque [`SourceId`]s: the caller owns the
/// channels (one rendezvous session per source), the clock and the disk.
/// Every source is assumed to hold the whole content (a sharer publishes
/// only what it has), so there is no rarest-first: pieces go out roughly in
/// order, spread over the sources, and the choices depend only on the calls
/// made (no randomness).
///
/// # Call order
/// 1. [`Self::new`] with the content id and size from the checked
///    record, and the pieces already held (a fresh [`Bitfield`], or
///    the stored one when resuming).
/// 2. [`Self::add_source`] for each source found; more at any time.
/// 3. Loop:
///    - send each request [`Self::next_request`] hands out, until it
///      returns None;
///    - for each reply on a source's channel, [`Self::on_piece`] or
///      [`Self::on_missing`]; write each [`VerifiedPiece`] returned at
///      its offset, then persist [`Self::bitfield`];
///    - when [`Self::poll_timeout`] is reached, [`Self::on_timeout`];
///    - drain [`Self::poll_event`]: a dropped source's session is
///      closed, and one dropped as [`DropReason::Bad`] is penalised by its
///      service key;
///    - stop when [`Self::is_complete`].
///
///    [`Self::remove_source`] when a session ends for another reason.
///
/// # What it guarantees
/// - **Nothing unverified comes out.** A piece is marked held, and handed
///   to the caller, only as a [`VerifiedPiece`] made by
///   [`crate::content::verify_range`] against the content id and size, for
///   exactly the range asked of that source under that request number.
/// - **A reply counts only for what was asked of its sender.** Request
///   numbers are per source; a reply is matched against the sender's own
///   requests in flight. A reply to a number not in flight there (never
///   used, already answered, given up after a stall), from an unknown or
///   dropped source, or for a piece held meanwhile is refused with a typed
///   [`PieceFault`] and changes nothing else. Per-source numbering also
///   means a sharer learns nothing from the numbers about other sources.
/// - **A liar is dropped at its first lie.** A stream that fails
///   verification drops its source for good ([`DropReason::Bad`]); its
///   pieces in flight go back to be fetched elsewhere.
/// - **No tight loops.** A source that answers `Missing` or stalls is
///   benched for a backoff that doubles per consecutive failure, from
///   [`ScheduleParams::backoff_base_ms`] up to
///   [`ScheduleParams::backoff_max_ms`], and gets no request meanwhile;
///   after [`ScheduleParams::max_failures`] consecutive failures it is
///   dropped. A verified piece resets its count. A source that stalls
///   before it has served one verified piece is dropped at its first
///   stall: it is replaced at once rather than holding its place through
///   the backoff (a provider that never answers costs one `stall_ms`).
/// - **A dead source cannot hold pieces hostage.** A source that owes
///   replies and has answered nothing for [`ScheduleParams::stall_ms`] is
///   stalled: its requests go back to be fetched elsewhere. The clock runs
///   from its last reply (or from its first request after an idle spell),
///   not from each request's send time, so a slow source working through a
///   full window is not mistaken for a dead one. A source answering some
///   requests but sitting on one forever is covered by the endgame: once
///   every missing piece is in flight, a source with nothing in flight gets
///   a duplicate of a piece still in flight elsewhere (at most
///   [`MAX_ENDGAME_COPIES`] copies of a piece); whichever copy verifies
///   first is kept and the other reply is refused as
///   [`PieceFault::AlreadyHeld`], without blame.
///
/// # Bounds
/// At most [`ScheduleParams::window_per_source`] requests in flight per
/// source (endgame duplicates included), and state per source of that
/// many entries; a set of the piece numbers to retry, no larger than the
/// pieces; one [`DownloadEvent`] per source ever dropped. Source ids are
/// single-use: the ids of removed and dropped sources are remembered (8
/// bytes each) so that a dropped liar cannot be added back by mistake and
/// a late reply from an old session cannot match a new one.
///
/// Not covered here: the size itself. If the record's size is wrong, every
/// stream fails verification and every source is dropped as Bad; a caller
/// that sees all its sources of one content go Bad should suspect the
/// record, not only the sharers.
#[derive(Debug)]
pub struct Download {
    id: ContentId,
    size: u64,
    have: Bitfield,
    params: ScheduleParams,
    sources: BTreeMap<SourceId, Source>,
    /// Ids of removed and dropped sources, never accepted again.
    retired: BTreeSet<SourceId>,
    /// Every piece below it is held, in flight or in `retry`; none at or
    /// above it is in flight or in `retry`.
    cursor: u64,
    /// Pieces below `cursor` that are neither held nor in flight.
    retry: BTreeSet<u64>,
    /// Requests in flight per piece, over all sources (no zero entries).
    copies: BTreeMap<u64, u32>,
    events: VecDeque<DownloadEvent>,
    /// The source that got the last request, to take turns among equals.
    last_pick: Option<SourceId>,
}

impl Download {
    /// A download of content `id` of `size` bytes, holding the pieces set
    /// in `have` (which must be for `size`).
    pub fn new(
        id: ContentId,
        size: u64,
        have: Bitfield,
        params: ScheduleParams,
    ) -> Result<Download, DownloadError> {
        if size > MAX_CONTENT_SIZE {
            return Err(DownloadError::SizeTooLarge { size });
        }
        if have.pieces() != piece_count(size) {
            return Err(DownloadError::BitfieldMismatch {
                got: have.pieces(),
                want: piece_count(size),
            });
        }
        params.check()?;
        Ok(Download {
            id,
            size,
            have,
            params,
            sources: BTreeMap::new(),
            retired: BTreeSet::new(),
            cursor: 0,
            retry: BTreeSet::new(),
            copies: BTreeMap::new(),
            events: VecDeque::new(),
            last_pick: None,
        })
    }

    /// The content id.
    pub fn id(&self) -> ContentId {
        self.id
    }

    /// The content size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The parameters.
    pub fn params(&self) -> &ScheduleParams {
        &self.params
    }

    /// The pieces held, to persist (after writing the pieces they mark).
    pub fn bitfield(&self) -> &Bitfield {
        &self.have
    }

    /// Every piece is held (at once for empty content).
    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// Pieces and bytes held.
    pub fn progress(&self) -> Progress {
        let total = self.have.pieces();
        let held = self.have.held();
        // Every piece is PIECE_BYTES long but the last.
        let last_short = match total.checked_sub(1) {
            Some(last) if self.have.has(last) => total * PIECE_BYTES - self.size,
            _ => 0,
        };
        Progress {
            held_pieces: held,
            total_pieces: total,
            held_bytes: held * PIECE_BYTES - last_short,
            total_bytes: self.size,
        }
    }

    /// Adds a source. False if it is already here, or was removed or
    /// dropped before (ids are single-use).
    pub fn add_source(&mut self, source: SourceId) -> bool {
        if self.sources.contains_key(&source) || self.retired.contains(&source) {
            return false;
        }
        self.sources.insert(source, Source::new());
        true
    }

    /// Removes a source (its session ended): its requests in flight go back
    /// to be fetched elsewhere and its later replies are refused. No event.
    /// False if it was not here.
    pub fn remove_source(&mut self, source: SourceId) -> bool {
        let Some(s) = self.sources.remove(&source) else {
            return false;
        };
        self.retired.insert(source);
        for f in s.in_flight.into_values() {
            self.unassign(f.piece);
        }
        true
    }

    /// What is known of a source still in the download.
    pub fn source(&self, source: SourceId) -> Option<SourceInfo> {
        self.sources.get(&source).map(|s| SourceInfo {
            in_flight: s.in_flight.len(),
            served: s.served,
            failures: s.failures,
            benched_until_ms: s.benched_until_ms,
        })
    }

    /// The sources still in the download (benched ones included), in id
    /// order.
    pub fn sources(&self) -> impl Iterator<Item = SourceId> + '_ {
        self.sources.keys().copied()
    }

    /// The next request to send, and to which source; None when no source
    /// has room or nothing is left to ask. Call until None after every
    /// input.
    ///
    /// Missing pieces go out lowest first (pieces given back by a failed
    /// source before new ones), each to the eligible source with the fewest
    /// requests in flight, taking turns among equals. A source is eligible
    /// when it is not benched and has window room. Once every missing piece
    /// is in flight (the endgame), a source with nothing in flight gets a
    /// duplicate of the lowest piece in flight elsewhere that has fewer than
    /// [`MAX_ENDGAME_COPIES`] copies out.
    pub fn next_request(&mut self, now_ms: u64) -> Option<(SourceId, Request)> {
        if self.is_complete() {
            return None;
        }
        while self.cursor < self.have.pieces() && self.have.has(self.cursor) {
            self.cursor += 1;
        }
        let fresh = self.retry.first().copied().or_else(|| {
            let c = self.cursor;
            (c < self.have.pieces()).then_some(c)
        });
        match fresh {
            Some(piece) => {
                let source = self.pick_source(now_ms, |_| true)?;
                let request = self.assign(source, piece, now_ms)?;
                if !self.retry.remove(&piece) {
                    self.cursor += 1;
                }
                Some((source, request))
            }
            None => {
                let (source, piece) = self.pick_duplicate(now_ms)?;
                Some((source, self.assign(source, piece, now_ms)?))
            }
        }
    }

    /// The eligible source with the fewest requests in flight (and `ok`),
    /// the first after the last pick among equals.
    fn pick_source(&self, now_ms: u64, ok: impl Fn(&Source) -> bool) -> Option<SourceId> {
        let window = self.params.window_per_source;
        let after_last = |id: SourceId| self.last_pick.is_some_and(|last| id <= last);
        self.sources
            .iter()
            .filter(|(_, s)| !s.is_benched(now_ms) && s.in_flight.len() < window && ok(s))
            .min_by_key(|&(&id, s)| (s.in_flight.len(), after_last(id), id))
            .map(|(&id, _)| id)
    }

    /// Endgame: an idle eligible source and the lowest piece in flight
    /// elsewhere with room for another copy.
    fn pick_duplicate(&self, now_ms: u64) -> Option<(SourceId, u64)> {
        let piece = self
            .copies
            .iter()
            .find(|&(&p, &n)| n < MAX_ENDGAME_COPIES && !self.have.has(p))
            .map(|(&p, _)| p)?;
        // An idle source has nothing in flight, so not this piece either.
        let source = self.pick_source(now_ms, |s| s.in_flight.is_empty())?;
        Some((source, piece))
    }

    /// Puts `piece` in flight at `source` (a source of the table, as
    /// `pick_source` returns).
    fn assign(&mut self, source: SourceId, piece: u64, now_ms: u64) -> Option<Request> {
        let s = self.sources.get_mut(&source)?;
        *self.copies.entry(piece).or_insert(0) += 1;
        self.last_pick = Some(source);
        // Skip numbers still in flight (only after 2^32 requests).
        let mut req = s.next_req;
        while s.in_flight.contains_key(&req) {
            req = req.wrapping_add(1);
        }
        s.next_req = req.wrapping_add(1);
        if s.in_flight.is_empty() {
            s.alive_ms = now_ms;
        }
        s.in_flight.insert(req, InFlight { piece });
        Some(Request {
            req,
            id: self.id,
            piece,
        })
    }

    /// One request for `piece` is no longer in flight: if it was the last
    /// copy and the piece is not held, it goes back to be asked again.
    fn unassign(&mut self, piece: u64) {
        if let Some(n) = self.copies.get_mut(&piece) {
            *n -= 1;
            if *n == 0 {
                self.copies.remove(&piece);
            }
        }
        if !self.copies.contains_key(&piece) && !self.have.has(piece) {
            self.retry.insert(piece);
        }
    }

    /// Takes request `req` of `source` out of flight, returning its piece.
    fn take_request(&mut self, source: SourceId, req: u32, now_ms: u64) -> Result<u64, PieceFault> {
        let s = self
            .sources
            .get_mut(&source)
            .ok_or(PieceFault::UnknownSource { from: source })?;
        let f = s
            .in_flight
            .remove(&req)
            .ok_or(PieceFault::NotAsked { from: source, req })?;
        s.alive_ms = now_ms;
        Ok(f.piece)
    }

    /// The stream `encoded` arrived from `source` in answer to its request
    /// `req`. Returns the verified piece (now held), or why the reply was
    /// refused; see [`PieceFault`] for what each refusal did.
    pub fn on_piece(
        &mut self,
        source: SourceId,
        req: u32,
        encoded: &[u8],
        now_ms: u64,
    ) -> Result<VerifiedPiece, PieceFault> {
        let piece = self.take_request(source, req, now_ms)?;
        if self.have.has(piece) {
            self.unassign(piece);
            return Err(PieceFault::AlreadyHeld {
                from: source,
                req,
                piece,
            });
        }
        // `piece` came from our own table, so it is below piece_count and
        // the range exists; `new` bounded the size, so `verify_range` can
        // only fail for the stream, never for the range.
        let range = piece_range(self.size, piece).unwrap_or(0..0);
        match verify_range(self.id, self.size, range, encoded) {
            Ok(verified) => {
                self.have.set(piece);
                self.unassign(piece);
                if let Some(s) = self.sources.get_mut(&source) {
                    s.failures = 0;
                    s.served += 1;
                }
                Ok(verified)
            }
            Err(error) => {
                self.unassign(piece);
                self.drop_source(source, DropReason::Bad);
                Err(PieceFault::Corrupt {
                    from: source,
                    req,
                    piece,
                    error,
                })
            }
        }
    }

    /// `source` answered its request `req` with `Missing`: the piece goes
    /// back to be fetched elsewhere and the source is benched (or dropped
    /// as [`DropReason::Failed`] after too many failures in a row). Its
    /// other requests stay in flight.
    pub fn on_missing(
        &mut self,
        source: SourceId,
        req: u32,
        now_ms: u64,
    ) -> Result<(), PieceFault> {
        let piece = self.take_request(source, req, now_ms)?;
        self.unassign(piece);
        self.fail(source, now_ms, DropReason::Failed);
        Ok(())
    }

    /// A failure of `source`: bench it, or drop it for `reason` when it has
    /// failed too often in a row. A source that stalls before serving a
    /// single verified piece is dropped at once: patience is for sources
    /// that have worked and whose circuit may be rebuilding, and a
    /// provider that never answers (a staller) must not hold a source
    /// place through a whole backoff.
    fn fail(&mut self, source: SourceId, now_ms: u64, reason: DropReason) {
        let Some(s) = self.sources.get_mut(&source) else {
            return;
        };
        s.failures = s.failures.saturating_add(1);
        let unproven_stall = reason == DropReason::Stalled && s.served == 0;
        if s.failures >= self.params.max_failures || unproven_stall {
            self.drop_source(source, reason);
        } else {
            let bench = self.params.backoff_ms(s.failures);
            s.benched_until_ms = Some(now_ms.saturating_add(bench));
        }
    }

    fn drop_source(&mut self, source: SourceId, reason: DropReason) {
        if self.remove_source(source) {
            self.events
                .push_back(DownloadEvent::Dropped { source, reason });
        }
    }

    /// When [`Download::on_timeout`] should next be called: the earliest
    /// stall deadline or end of a bench. None when complete or when nothing
    /// waits on time. May be in the past: call `on_timeout` at once.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.is_complete() {
            return None;
        }
        self.sources
            .values()
            .flat_map(|s| [s.stall_deadline(self.params.stall_ms), s.benched_until_ms])
            .flatten()
            .min()
    }

    /// Handles the time `now_ms`: every source stalled by then has its
    /// requests given back and is benched (or dropped as
    /// [`DropReason::Stalled`]); benches that ended are lifted. Then call
    /// [`Download::next_request`].
    pub fn on_timeout(&mut self, now_ms: u64) {
        let stall_ms = self.params.stall_ms;
        let stalled: Vec<SourceId> = self
            .sources
            .iter()
            .filter(|(_, s)| s.stall_deadline(stall_ms).is_some_and(|d| d <= now_ms))
            .map(|(&id, _)| id)
            .collect();
        for source in stalled {
            let pieces: Vec<u64> = self
                .sources
                .get_mut(&source)
                .map(|s| std::mem::take(&mut s.in_flight))
                .into_iter()
                .flat_map(|m| m.into_values().map(|f| f.piece))
                .collect();
            for piece in pieces {
                self.unassign(piece);
            }
            self.fail(source, now_ms, DropReason::Stalled);
        }
        for s in self.sources.values_mut() {
            if s.benched_until_ms.is_some_and(|t| t <= now_ms) {
                s.benched_until_ms = None;
            }
        }
    }

    /// The next event (sources dropped), oldest first.
    pub fn poll_event(&mut self) -> Option<DownloadEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Framer, MAX_PIECE_MESSAGE, Reassembler, TransferMsg, serve};
    use super::*;
    use crate::content::Outboard;
    use proptest::prelude::*;
    use rand_chacha::{
        ChaCha8Rng,
        rand_core::{RngCore, SeedableRng},
    };

    /// Six pieces, the last one short: 321 KiB and a bit.
    const SIZE: usize = 5 * PIECE_BYTES as usize + 1000;
    const A: SourceId = SourceId(1);
    const B: SourceId = SourceId(2);

    fn content(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Behaviour {
        Honest,
        /// Flips one byte of its stream for this piece.
        Corrupts(u64),
        /// Never answers.
        Silent,
        /// Answers every request with `Missing`.
        Refuses,
    }

    /// Real content, a real outboard and sharers that serve real streams,
    /// through the real message encoding; the downloader's clock advances
    /// 10 ms per reply.
    struct Net {
        data: Vec<u8>,
        ob: Outboard,
        dl: Download,
        now: u64,
        behaviour: BTreeMap<SourceId, Behaviour>,
        /// Requests each sharer received and has not answered, oldest first.
        inbox: BTreeMap<SourceId, VecDeque<Request>>,
        asked: Vec<(SourceId, Request)>,
        /// The content as rebuilt from verified pieces only.
        out: Vec<u8>,
        faults: Vec<PieceFault>,
        events: Vec<DownloadEvent>,
    }

    impl Net {
        fn new(
            size: usize,
            have: &[u64],
            params: ScheduleParams,
            sources: &[(SourceId, Behaviour)],
        ) -> Net {
            let data = content(size as u64, size);
            let ob = Outboard::from_slice(&data);
            let mut bits = Bitfield::new(size as u64);
            let mut out = vec![0; size];
            for &p in have {
                bits.set(p);
                let r = piece_range(size as u64, p).expect("piece");
                let r = r.start as usize..r.end as usize;
                out[r.clone()].copy_from_slice(&data[r]);
            }
            let mut dl = Download::new(ob.root(), size as u64, bits, params).expect("new");
            for &(s, _) in sources {
                assert!(dl.add_source(s));
            }
            Net {
                data,
                ob,
                dl,
                now: 0,
                behaviour: sources.iter().copied().collect(),
                inbox: sources.iter().map(|&(s, _)| (s, VecDeque::new())).collect(),
                asked: Vec::new(),
                out,
                faults: Vec::new(),
                events: Vec::new(),
            }
        }

        fn send_all(&mut self) {
            while let Some((s, r)) = self.dl.next_request(self.now) {
                assert_eq!(r.id, self.ob.root());
                self.asked.push((s, r));
                self.inbox.get_mut(&s).expect("a known source").push_back(r);
            }
        }

        /// What sharer `s` answers to `r`.
        fn reply(&self, s: SourceId, r: &Request) -> TransferMsg {
            match self.behaviour[&s] {
                Behaviour::Refuses => TransferMsg::Missing { req: r.req },
                Behaviour::Silent => unreachable!("a silent source never replies"),
                Behaviour::Honest | Behaviour::Corrupts(_) => {
                    let mut msg = serve(r, &self.data[..], &self.ob).reply;
                    if let (Behaviour::Corrupts(p), TransferMsg::Piece { encoded, .. }) =
                        (self.behaviour[&s], &mut msg)
                        && p == r.piece
                    {
                        let mid = encoded.len() / 2;
                        encoded[mid] ^= 0x10;
                    }
                    msg
                }
            }
        }

        /// Delivers `msg` from `s` through the wire encoding.
        fn deliver(&mut self, s: SourceId, msg: &TransferMsg) {
            self.now += 10;
            let bytes = msg.encode().expect("encode");
            let result = match TransferMsg::decode(&bytes).expect("decode") {
                TransferMsg::Piece { req, encoded } => self
                    .dl
                    .on_piece(s, req, &encoded, self.now)
                    .map(|v| self.keep(v)),
                TransferMsg::Missing { req } => self.dl.on_missing(s, req, self.now),
                TransferMsg::Request(_) => unreachable!("sharers do not request"),
            };
            if let Err(f) = result {
                self.faults.push(f);
            }
            self.events
                .extend(std::iter::from_fn(|| self.dl.poll_event()));
        }

        /// Checks a piece against the original before keeping it: nothing
        /// corrupt may ever come out of the download.
        fn keep(&mut self, v: VerifiedPiece) {
            assert_eq!(v.id(), self.ob.root());
            let start = v.offset() as usize;
            let end = start + v.data().len();
            assert_eq!(
                v.data(),
                &self.data[start..end],
                "a verified piece is the content"
            );
            self.out[start..end].copy_from_slice(v.data());
        }

        /// Each source that answers takes its oldest request; false if none
        /// answered.
        fn answer_round(&mut self) -> bool {
            let mut any = false;
            let sources: Vec<SourceId> = self.inbox.keys().copied().collect();
            for s in sources {
                if self.behaviour[&s] == Behaviour::Silent {
                    continue;
                }
                if let Some(r) = self.inbox.get_mut(&s).and_then(|q| q.pop_front()) {
                    let msg = self.reply(s, &r);
                    self.deliver(s, &msg);
                    any = true;
                }
            }
            any
        }

        /// Requests, replies and timeouts until the download completes
        /// (panics if it gets stuck).
        fn run(&mut self) {
            for _ in 0..10_000 {
                self.send_all();
                if self.dl.is_complete() {
                    return;
                }
                if !self.answer_round() {
                    let t = self.dl.poll_timeout().expect("stuck: nothing to wait for");
                    self.now = self.now.max(t);
                    self.dl.on_timeout(self.now);
                    self.events
                        .extend(std::iter::from_fn(|| self.dl.poll_event()));
                }
            }
            panic!("no progress in 10 000 steps");
        }

        fn served(&self, s: SourceId) -> u64 {
            self.dl.source(s).map_or(0, |i| i.served)
        }
    }

    fn params() -> ScheduleParams {
        ScheduleParams::DEFAULT
    }

    #[test]
    fn two_honest_sources_complete_and_share_the_work() {
        let mut net = Net::new(
            SIZE,
            &[],
            params(),
            &[(A, Behaviour::Honest), (B, Behaviour::Honest)],
        );
        let p = net.dl.progress();
        assert_eq!(
            (p.held_pieces, p.total_pieces, p.held_bytes, p.total_bytes),
            (0, 6, 0, SIZE as u64)
        );
        net.run();
        assert!(net.dl.is_complete());
        assert_eq!(net.out, net.data);
        assert!(
            net.served(A) > 0 && net.served(B) > 0,
            "both sources served"
        );
        assert_eq!(net.served(A) + net.served(B), 6, "each piece fetched once");
        // Both worked at the same time on different pieces.
        let first: Vec<_> = net
            .asked
            .iter()
            .take(2)
            .map(|(s, r)| (*s, r.piece))
            .collect();
        assert_eq!(first, vec![(A, 0), (B, 1)]);
        assert!(net.faults.is_empty() && net.events.is_empty());
        let p = net.dl.progress();
        assert_eq!((p.held_pieces, p.held_bytes), (6, SIZE as u64));
        assert_eq!(net.dl.bitfield().held(), 6);
        assert_eq!(net.dl.poll_timeout(), None);
    }

    #[test]
    fn a_source_that_corrupts_a_byte_is_dropped_and_the_piece_comes_from_the_other() {
        // A is asked for pieces 0, 2 and 4; it corrupts piece 2.
        let mut net = Net::new(
            SIZE,
            &[],
            params(),
            &[(A, Behaviour::Corrupts(2)), (B, Behaviour::Honest)],
        );
        net.run();
        assert_eq!(net.out, net.data, "the rebuilt content is the original");
        assert!(matches!(
            net.faults[0],
            PieceFault::Corrupt {
                from: A,
                piece: 2,
                error: VerifyError::HashMismatch { .. },
                ..
            }
        ));
        assert!(net.faults[0].is_peer_fault());
        // A's reply for piece 4, sent after its lie, is refused unread.
        assert_eq!(net.faults[1], PieceFault::UnknownSource { from: A });
        assert_eq!(net.faults.len(), 2);
        assert_eq!(
            net.events,
            vec![DownloadEvent::Dropped {
                source: A,
                reason: DropReason::Bad
            }]
        );
        assert_eq!(net.dl.source(A), None);
        assert!(!net.dl.add_source(A), "a liar cannot come back");
        // A served piece 0 before lying; B served the rest, 2 and 4 included.
        assert_eq!(net.served(B), 5);
        for p in [2, 4] {
            assert!(net.asked.iter().any(|(s, r)| *s == B && r.piece == p));
        }
    }

    #[test]
    fn a_silent_source_is_stalled_after_stall_ms_and_the_other_finishes() {
        // (max_failures, whether A served a piece before falling silent):
        // one that never served is dropped at its first stall, whatever
        // the patience; one that served is benched first.
        for (max_failures, proven) in [(5, true), (1, true), (5, false)] {
            let params = ScheduleParams {
                max_failures,
                ..params()
            };
            let mut net = Net::new(
                SIZE,
                &[],
                params,
                &[(A, Behaviour::Honest), (B, Behaviour::Honest)],
            );
            net.send_all();
            if proven {
                // A serves its first request at time 0, then falls silent.
                let r = net
                    .inbox
                    .get_mut(&A)
                    .and_then(|q| q.pop_front())
                    .expect("asked");
                let TransferMsg::Piece { encoded, .. } = net.reply(A, &r) else {
                    unreachable!("an honest reply");
                };
                let v = net.dl.on_piece(A, r.req, &encoded, 0).expect("verified");
                net.keep(v);
            }
            net.behaviour.insert(A, Behaviour::Silent);
            while net.answer_round() {}
            // A still owes pieces; its clock started at 0.
            let owed = net.dl.source(A).map_or(0, |i| i.in_flight);
            assert!(owed > 0);
            assert_eq!(net.dl.poll_timeout(), Some(15_000));
            net.dl.on_timeout(14_999);
            assert_eq!(
                net.dl.source(A).map(|i| i.in_flight),
                Some(owed),
                "not before stall_ms"
            );
            net.now = 15_000;
            net.dl.on_timeout(net.now);
            if max_failures == 1 || !proven {
                assert_eq!(net.dl.source(A), None);
                assert_eq!(
                    net.dl.poll_event(),
                    Some(DownloadEvent::Dropped {
                        source: A,
                        reason: DropReason::Stalled
                    })
                );
            } else {
                let a = net.dl.source(A).expect("benched, not dropped");
                assert_eq!(
                    (a.in_flight, a.failures, a.benched_until_ms),
                    (0, 1, Some(16_000))
                );
                assert_eq!(net.dl.poll_event(), None);
            }
            net.run();
            assert_eq!(net.out, net.data);
            assert_eq!(net.served(B), if proven { 5 } else { 6 });
        }
    }

    #[test]
    fn the_stall_clock_runs_from_the_last_reply() {
        // One source, a full window sent at 0, answered one every 14 s: the
        // last answer comes 84 s after it was asked for, yet the source
        // never went 15 s without replying, so it never stalls.
        let mut net = Net::new(SIZE, &[], params(), &[(A, Behaviour::Honest)]);
        net.send_all();
        assert_eq!(net.asked.len(), 6);
        for _ in 0..6 {
            net.now += 13_990;
            net.dl.on_timeout(net.now);
            assert_eq!(net.dl.source(A).map(|i| i.failures), Some(0));
            assert!(net.answer_round());
        }
        assert!(net.dl.is_complete());
        assert_eq!(net.out, net.data);
    }

    #[test]
    fn backoff_doubles_then_caps_and_a_success_resets_it() {
        let params = ScheduleParams {
            window_per_source: 1,
            backoff_base_ms: 1_000,
            backoff_max_ms: 8_000,
            max_failures: 7,
            ..params()
        };
        let mut net = Net::new(SIZE, &[], params, &[(A, Behaviour::Refuses)]);
        let mut benches = Vec::new();
        let mut refuse = |net: &mut Net| {
            let (s, r) = net.dl.next_request(net.now).expect("a request");
            net.dl.on_missing(s, r.req, net.now).expect("in flight");
            let Some(until) = net.dl.source(A).and_then(|i| i.benched_until_ms) else {
                return;
            };
            benches.push(until - net.now);
            // Benched: nothing, not even a millisecond early.
            assert_eq!(net.dl.next_request(net.now), None);
            assert_eq!(net.dl.next_request(until - 1), None);
            assert_eq!(net.dl.poll_timeout(), Some(until));
            net.now = until;
            net.dl.on_timeout(net.now);
        };
        for _ in 0..3 {
            refuse(&mut net);
        }
        // A verified piece resets the count.
        net.behaviour.insert(A, Behaviour::Honest);
        net.send_all();
        assert!(net.answer_round());
        assert_eq!(net.dl.source(A).map(|i| i.failures), Some(0));
        net.behaviour.insert(A, Behaviour::Refuses);
        for _ in 0..7 {
            refuse(&mut net);
        }
        assert_eq!(
            benches,
            vec![
                1_000, 2_000, 4_000, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000
            ]
        );
        // The seventh failure in a row drops it.
        assert_eq!(net.dl.source(A), None);
        assert_eq!(
            net.dl.poll_event(),
            Some(DownloadEvent::Dropped {
                source: A,
                reason: DropReason::Failed
            })
        );
        assert_eq!(net.dl.next_request(net.now), None);
        assert_eq!(params.backoff_ms(u32::MAX), 8_000, "no overflow");
    }

    #[test]
    fn a_refused_piece_is_asked_again_before_new_ones() {
        let params = ScheduleParams {
            window_per_source: 1,
            ..params()
        };
        let mut net = Net::new(
            SIZE,
            &[],
            params,
            &[(A, Behaviour::Refuses), (B, Behaviour::Honest)],
        );
        net.send_all();
        // A refuses piece 0 and B delivers piece 1: B is asked for 0, not 2.
        assert!(net.answer_round());
        assert_eq!(net.dl.source(A).map(|i| i.failures), Some(1));
        net.send_all();
        let (s, r) = net.asked.last().expect("asked");
        assert_eq!((*s, r.piece), (B, 0));
        net.run();
        assert_eq!(net.out, net.data);
    }

    #[test]
    fn a_source_with_no_window_room_gets_nothing() {
        let params = ScheduleParams {
            window_per_source: 3,
            ..params()
        };
        let mut net = Net::new(SIZE, &[], params, &[(A, Behaviour::Honest)]);
        net.send_all();
        assert_eq!(net.asked.len(), 3, "a full window, though 3 pieces remain");
        assert_eq!(net.dl.next_request(net.now + 100_000), None);
        assert!(net.answer_round());
        net.send_all();
        assert_eq!(net.asked.len(), 4, "one answer, one more request");
        // Two sources: the windows fill alternately with different pieces.
        let params = ScheduleParams {
            window_per_source: 2,
            ..params
        };
        let mut net = Net::new(
            SIZE,
            &[],
            params,
            &[(A, Behaviour::Honest), (B, Behaviour::Honest)],
        );
        net.send_all();
        let got: Vec<_> = net.asked.iter().map(|(s, r)| (*s, r.piece)).collect();
        assert_eq!(got, vec![(A, 0), (B, 1), (A, 2), (B, 3)]);
    }

    #[test]
    fn replies_never_asked_asked_of_another_or_repeated_are_refused() {
        let params = ScheduleParams {
            window_per_source: 2,
            ..params()
        };
        let mut net = Net::new(
            SIZE,
            &[],
            params,
            &[(A, Behaviour::Honest), (B, Behaviour::Honest)],
        );
        net.dl.next_request(0); // A: req 0, piece 0
        net.dl.next_request(0); // B: req 0, piece 1
        let (s, a1) = net.dl.next_request(0).expect("request"); // A: req 1, piece 2
        assert_eq!((s, a1.req, a1.piece), (A, 1, 2));
        let good_piece_2 = net.reply(A, &a1);
        let TransferMsg::Piece { encoded: enc2, .. } = &good_piece_2 else {
            panic!("served");
        };
        // B answers A's request number with the right bytes: not asked of B.
        assert_eq!(
            net.dl.on_piece(B, 1, enc2, 1),
            Err(PieceFault::NotAsked { from: B, req: 1 })
        );
        // A number never used, and a source never added.
        assert_eq!(
            net.dl.on_piece(A, 77, enc2, 1),
            Err(PieceFault::NotAsked { from: A, req: 77 })
        );
        assert_eq!(
            net.dl.on_missing(A, 77, 1),
            Err(PieceFault::NotAsked { from: A, req: 77 })
        );
        assert_eq!(
            net.dl.on_piece(SourceId(9), 0, enc2, 1),
            Err(PieceFault::UnknownSource { from: SourceId(9) })
        );
        // None of that changed anything.
        assert_eq!(net.dl.progress().held_pieces, 0);
        assert_eq!(
            net.dl.source(A).map(|i| (i.in_flight, i.failures)),
            Some((2, 0))
        );
        assert_eq!(
            net.dl.source(B).map(|i| (i.in_flight, i.failures)),
            Some((1, 0))
        );
        // The real answer, then the same answer again.
        assert!(net.dl.on_piece(A, 1, enc2, 2).is_ok());
        assert_eq!(
            net.dl.on_piece(A, 1, enc2, 3),
            Err(PieceFault::NotAsked { from: A, req: 1 })
        );
        assert_eq!(net.dl.progress().held_pieces, 1);
        // The request number binds the piece: piece 2's bytes under B's
        // request for piece 1 do not verify, and B is dropped.
        assert!(matches!(
            net.dl.on_piece(B, 0, enc2, 4),
            Err(PieceFault::Corrupt {
                from: B,
                piece: 1,
                ..
            })
        ));
        // Garbage from A too; no panic anywhere.
        assert!(matches!(
            net.dl.on_piece(A, 0, &[1, 2, 3], 5),
            Err(PieceFault::Corrupt {
                from: A,
                piece: 0,
                ..
            })
        ));
        assert!(net.dl.sources().next().is_none());
        assert_eq!(net.dl.next_request(6), None);
        let missing: Vec<u64> = net.dl.bitfield().missing().collect();
        assert_eq!(missing, vec![0, 1, 3, 4, 5]);
    }

    #[test]
    fn the_endgame_duplicates_to_an_idle_source_and_ignores_the_late_copy() {
        let size = 2 * PIECE_BYTES as usize;
        let mut net = Net::new(
            size,
            &[],
            params(),
            &[(A, Behaviour::Honest), (B, Behaviour::Honest)],
        );
        net.send_all();
        let got: Vec<_> = net.asked.iter().map(|(s, r)| (*s, r.piece)).collect();
        assert_eq!(
            got,
            vec![(A, 0), (B, 1)],
            "no duplicate while both are busy"
        );
        // B answers; A sits on piece 0.
        let b = net
            .inbox
            .get_mut(&B)
            .and_then(|q| q.pop_front())
            .expect("asked");
        let msg = net.reply(B, &b);
        net.deliver(B, &msg);
        let (s, dup) = net
            .dl
            .next_request(net.now)
            .expect("a duplicate for idle B");
        assert_eq!((s, dup.piece), (B, 0));
        assert_eq!(net.dl.next_request(net.now), None, "at most one duplicate");
        net.inbox.get_mut(&B).expect("B").push_back(dup);
        let msg = net.reply(B, &dup);
        net.inbox.get_mut(&B).expect("B").clear();
        net.deliver(B, &msg);
        assert!(net.dl.is_complete());
        // A's late copy is refused without blame.
        let a = net
            .inbox
            .get_mut(&A)
            .and_then(|q| q.pop_front())
            .expect("asked");
        let msg = net.reply(A, &a);
        net.deliver(A, &msg);
        assert_eq!(
            net.faults,
            vec![PieceFault::AlreadyHeld {
                from: A,
                req: a.req,
                piece: 0
            }]
        );
        assert!(!net.faults[0].is_peer_fault());
        assert_eq!(
            net.dl.source(A).map(|i| (i.in_flight, i.failures)),
            Some((0, 0))
        );
        assert!(net.events.is_empty());
        assert_eq!(net.out, net.data);
    }

    #[test]
    fn resuming_requests_only_the_missing_pieces() {
        let mut net = Net::new(
            SIZE,
            &[0, 2, 3],
            params(),
            &[(A, Behaviour::Honest), (B, Behaviour::Honest)],
        );
        let p = net.dl.progress();
        assert_eq!((p.held_pieces, p.held_bytes), (3, 3 * PIECE_BYTES));
        net.run();
        // Only missing pieces were asked for (the endgame may ask twice).
        let asked: BTreeSet<u64> = net.asked.iter().map(|(_, r)| r.piece).collect();
        assert_eq!(asked, BTreeSet::from([1, 4, 5]));
        assert_eq!(net.out, net.data);
        // A complete bitfield asks for nothing; an empty file is complete.
        let mut net = Net::new(
            SIZE,
            &[0, 1, 2, 3, 4, 5],
            params(),
            &[(A, Behaviour::Honest)],
        );
        assert!(net.dl.is_complete());
        assert_eq!(net.dl.next_request(0), None);
        let empty = Download::new(
            crate::content::content_id(&[]),
            0,
            Bitfield::new(0),
            params(),
        )
        .expect("new");
        assert!(empty.is_complete());
        assert_eq!(empty.progress().total_pieces, 0);
        net.run();
    }

    #[test]
    fn messages_framed_in_small_chunks_complete_a_download() {
        // The whole path: requests and pieces encoded, framed in chunks of
        // 1000 bytes each way, reassembled, decoded, served, verified.
        let data = content(7, SIZE);
        let ob = Outboard::from_slice(&data);
        let mut dl = Download::new(ob.root(), SIZE as u64, Bitfield::new(SIZE as u64), params())
            .expect("new");
        dl.add_source(A);
        let (mut up, mut down) = (
            Framer::new(1000, MAX_PIECE_MESSAGE),
            Framer::new(1000, MAX_PIECE_MESSAGE),
        );
        let (mut at_sharer, mut at_downloader) = (
            Reassembler::new(MAX_PIECE_MESSAGE),
            Reassembler::new(MAX_PIECE_MESSAGE),
        );
        let mut out = vec![0u8; SIZE];
        let mut msgs = Vec::new();
        for now in 0..1_000u64 {
            while let Some((_, r)) = dl.next_request(now) {
                up.push(&TransferMsg::Request(r).encode().expect("encode"))
                    .expect("push");
            }
            // One chunk each way per step.
            if let Some(c) = up.poll_chunk() {
                at_sharer.push(&c, &mut msgs).expect("push");
                for m in msgs.drain(..) {
                    let TransferMsg::Request(r) = TransferMsg::decode(&m).expect("decode") else {
                        panic!("a request");
                    };
                    let reply = serve(&r, &data[..], &ob).reply;
                    down.push(&reply.encode().expect("encode")).expect("push");
                }
            }
            if let Some(c) = down.poll_chunk() {
                assert!(c.len() <= 1000);
                at_downloader.push(&c, &mut msgs).expect("push");
                for m in msgs.drain(..) {
                    let TransferMsg::Piece { req, encoded } =
                        TransferMsg::decode(&m).expect("decode")
                    else {
                        panic!("a piece");
                    };
                    let v = dl.on_piece(A, req, &encoded, now).expect("verifies");
                    let at = v.offset() as usize;
                    out[at..at + v.data().len()].copy_from_slice(v.data());
                }
            }
            if dl.is_complete() {
                break;
            }
        }
        assert!(dl.is_complete());
        assert_eq!(out, data);
        assert_eq!(at_downloader.finish(), Ok(()));
    }

    #[test]
    fn new_refuses_what_does_not_fit_and_ids_are_single_use() {
        let id = ContentId::from_bytes([1; 32]);
        assert_eq!(
            Download::new(id, SIZE as u64, Bitfield::new(1), params()).unwrap_err(),
            DownloadError::BitfieldMismatch { got: 1, want: 6 }
        );
        assert_eq!(
            Download::new(id, MAX_CONTENT_SIZE + 1, Bitfield::new(0), params()).unwrap_err(),
            DownloadError::SizeTooLarge {
                size: MAX_CONTENT_SIZE + 1
            }
        );
        for bad in [
            ScheduleParams {
                window_per_source: 0,
                ..params()
            },
            ScheduleParams {
                window_per_source: MAX_WINDOW_PER_SOURCE + 1,
                ..params()
            },
            ScheduleParams {
                stall_ms: 0,
                ..params()
            },
            ScheduleParams {
                backoff_base_ms: 0,
                ..params()
            },
            ScheduleParams {
                backoff_max_ms: 999,
                ..params()
            },
            ScheduleParams {
                max_failures: 0,
                ..params()
            },
        ] {
            assert!(matches!(
                Download::new(id, 1, Bitfield::new(1), bad),
                Err(DownloadError::BadParams(_))
            ));
        }
        let mut dl =
            Download::new(id, SIZE as u64, Bitfield::new(SIZE as u64), params()).expect("new");
        assert!(dl.add_source(A) && !dl.add_source(A));
        let (_, r) = dl.next_request(0).expect("request");
        assert!(dl.remove_source(A) && !dl.remove_source(A));
        assert!(!dl.add_source(A), "removed ids do not come back");
        assert_eq!(
            dl.on_missing(A, r.req, 1),
            Err(PieceFault::UnknownSource { from: A })
        );
        // Its piece went back: the next source gets piece 0 again.
        assert!(dl.add_source(B));
        assert_eq!(dl.next_request(1).map(|(s, r)| (s, r.piece)), Some((B, 0)));
        assert_eq!(dl.poll_event(), None, "a removal is not an event");
    }

    /// A sharer that misbehaves at random: the invariants must hold whatever
    /// the mix, as long as one source is honest.
    #[derive(Clone, Copy, Debug)]
    enum Chaos {
        Honest,
        Corrupts(u64),
        Silent,
        Refuses,
        /// Answers garbage, repeats and numbers never asked.
        Noisy,
    }

    fn chaos() -> impl Strategy<Value = Chaos> {
        prop_oneof![
            Just(Chaos::Honest),
            (0u64..6).prop_map(Chaos::Corrupts),
            Just(Chaos::Silent),
            Just(Chaos::Refuses),
            Just(Chaos::Noisy),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_mix_of_misbehaviour_with_one_honest_source_completes_correctly(
            others in proptest::collection::vec(chaos(), 0..4),
            window in 1usize..5,
            seed: u64,
            have in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let data = content(seed, SIZE);
            let ob = Outboard::from_slice(&data);
            let mut bits = Bitfield::new(SIZE as u64);
            let mut out = vec![0u8; SIZE];
            for (p, _) in have.iter().enumerate().filter(|(_, h)| **h) {
                bits.set(p as u64);
                let r = piece_range(SIZE as u64, p as u64).expect("piece");
                out[r.start as usize..r.end as usize].copy_from_slice(&data[r.start as usize..r.end as usize]);
            }
            let params = ScheduleParams { window_per_source: window, ..params() };
            let mut dl = Download::new(ob.root(), SIZE as u64, bits, params).expect("new");
            let mut kinds = vec![Chaos::Honest];
            kinds.extend(others);
            let mut inbox: Vec<VecDeque<Request>> = vec![VecDeque::new(); kinds.len()];
            for i in 0..kinds.len() {
                prop_assert!(dl.add_source(SourceId(i as u64)));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut now = 0u64;
            let mut steps = 0;
            while !dl.is_complete() {
                steps += 1;
                prop_assert!(steps < 5_000, "no progress");
                while let Some((s, r)) = dl.next_request(now) {
                    inbox[s.0 as usize].push_back(r);
                }
                let ready: Vec<usize> = (0..kinds.len())
                    .filter(|&i| !inbox[i].is_empty() && !matches!(kinds[i], Chaos::Silent))
                    .collect();
                if ready.is_empty() {
                    now = now.max(dl.poll_timeout().expect("something to wait for"));
                    dl.on_timeout(now);
                    continue;
                }
                now += 1 + rng.next_u64() % 50;
                let i = ready[(rng.next_u64() % ready.len() as u64) as usize];
                let s = SourceId(i as u64);
                let r = inbox[i].pop_front().expect("ready");
                let honest = serve(&r, &data[..], &ob).reply;
                let TransferMsg::Piece { encoded, .. } = honest else {
                    panic!("an honest sharer has every piece");
                };
                let result = match kinds[i] {
                    Chaos::Honest => dl.on_piece(s, r.req, &encoded, now).map(Some),
                    Chaos::Corrupts(p) if p == r.piece => {
                        let mut bad = encoded.clone();
                        let at = (rng.next_u64() % bad.len() as u64) as usize;
                        bad[at] ^= 1 << (rng.next_u64() % 8);
                        dl.on_piece(s, r.req, &bad, now).map(Some)
                    }
                    Chaos::Corrupts(_) => dl.on_piece(s, r.req, &encoded, now).map(Some),
                    Chaos::Refuses => dl.on_missing(s, r.req, now).map(|()| None),
                    Chaos::Noisy => {
                        let _ = dl.on_piece(s, r.req.wrapping_add(1000), &encoded, now);
                        let _ = dl.on_missing(s, r.req.wrapping_add(2000), now);
                        let junk: Vec<u8> = (0..rng.next_u64() % 200).map(|_| rng.next_u64() as u8).collect();
                        dl.on_piece(s, r.req, &junk, now).map(Some)
                    }
                    Chaos::Silent => unreachable!("silent sources are not ready"),
                };
                match result {
                    Ok(None) => {}
                    Ok(Some(v)) => {
                        let at = v.offset() as usize;
                        prop_assert_eq!(v.data(), &data[at..at + v.data().len()]);
                        out[at..at + v.data().len()].copy_from_slice(v.data());
                    }
                    Err(f) => prop_assert!(
                        !(matches!(kinds[i], Chaos::Honest) && f.is_peer_fault()),
                        "an honest source blamed: {f:?}"
                    ),
                }
                while let Some(DownloadEvent::Dropped { source, reason }) = dl.poll_event() {
                    prop_assert!(source != SourceId(0), "the honest source was dropped: {reason:?}");
                }
            }
            prop_assert_eq!(out, data);
        }
    }
}
