//! The rendezvous part: our services and their introduction points, our
//! sessions (as a downloader or as a service), and, as a relay, the
//! introduction and rendezvous points we serve for others. The protocol and
//! its cryptography are in [`crate::rendezvous`]; this part runs it over
//! circuits.
//!
//! It never touches a circuit itself: it asks the node for builds, messages
//! and splices with [`Action`]s, and hears back through [`RendIn`]s. The
//! circuits it asks for carry a [`Purpose`] other than `General`, so they
//! are never used for searches, never rotated on a clock, and closed by
//! this part when their job is done.
//!
//! # Bounds (each has an attacker test in `tests.rs`)
//!
//! - As an introduction point: at most `max_intro_registrations`
//!   registrations, one per circuit; `intros_per_sec` introductions per
//!   service (burst 2 s), beyond which the introducer is told
//!   `RateLimited`.
//! - As a rendezvous point: at most `max_cookies` cookies, each for
//!   `cookie_ttl_ms`; a cookie joins once.
//! - As a service: `accepts_per_sec` introductions acted on (each costs a
//!   circuit build), all services together, so nobody can make us build
//!   circuits at will; introductions seen before are refused (replay cache
//!   of `replay_cache` entries).
//! - Sessions: at most `max_sessions`, each opened within
//!   `connect_timeout_ms`.
//!
//! # The client puzzle ([`puzzle`])
//!
//! Under load an introduction costs its sender work. The service keeps a
//! price per service ([`puzzle::Price`]) and tells its points
//! ([`ToHop::SetEffort`]); a point answers an introduction with too little
//! work `NeedEffort` (two hashes to check, none at effort 0) and drops a
//! replay of one it passed on, so neither reaches the service; it reports
//! how many it refused ([`FromHop::IntroLoad`]), which can hold the price
//! but never raise it. The service checks the work again (a colluding
//! point gains nothing). A downloader solves in steps of
//! `solve_hashes_per_step` hashes every `solve_step_ms`, re-sends after a
//! doubling backoff, at most `effort_retries` times per point, and gives
//! up above `client_max_effort` ([`SessionEnd::TooCostly`]).

use std::collections::BTreeMap;

use rand_core::RngCore;

use super::circuits::Purpose;
use super::links::TokenBucket;
use super::output::{Action, Ctx, RendIn, TransferIn};
use super::{Event, Millis};
use crate::content::ContentId;
use crate::identity::{NodeId, PublisherId};
use crate::provider::ProviderRecord;
use crate::rendezvous::{
    self, FromHop, IntroStatus, Introducing, Introduction, Puzzle, ServiceKey, ServicePublic,
    Session, ToHop,
};

mod puzzle;
#[cfg(test)]
mod tests;

use puzzle::{Price, ReplayWindow, Solving};

/// Rendezvous parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousParams {
    /// Introduction points each service keeps.
    pub intro_points: usize,
    /// As an introduction point: introductions passed per second for one
    /// service (burst 2 s).
    pub intros_per_sec: u32,
    /// As a service: introductions acted on per second, all services
    /// together (burst 2 s). Each costs a circuit build.
    pub accepts_per_sec: u32,
    /// As a relay: introduction point registrations held.
    pub max_intro_registrations: usize,
    /// As a relay: rendezvous cookies held.
    pub max_cookies: usize,
    /// A cookie not joined within this is dropped.
    pub cookie_ttl_ms: Millis,
    /// Our own sessions (as a downloader) at most, open or opening.
    pub max_sessions: usize,
    /// Sessions our services hold at most, open or opening (separate from
    /// ours, so introductions cannot starve our downloads).
    pub max_inbound_sessions: usize,
    /// An open session that carries no data either way for this long is
    /// closed (an introducer cannot hold a slot with flow control alone).
    pub session_idle_ms: Millis,
    /// After an introduction point said it delivered our introduction,
    /// wait this long for the service before trying the next point.
    pub intro_answer_ms: Millis,
    /// A session must open within this.
    pub connect_timeout_ms: Millis,
    /// Introductions remembered, against replay.
    pub replay_cache: usize,
    /// Our introduction circuits are probed this often, so relays keep
    /// them while idle.
    pub keepalive_ms: Millis,
    /// Housekeeping period.
    pub tick_ms: Millis,
    /// Validity of the provider records we sign (re-signed at half of it,
    /// and whenever the introduction points change). At most
    /// [`crate::provider::MAX_PROVIDER_LIFETIME_SECS`].
    pub provider_lifetime_s: u64,
    /// As a service: the client puzzle's price is reconsidered this often.
    pub effort_period_ms: Millis,
    /// As a service: bits added to the price after a period in which
    /// introductions that paid it found the accept budget spent.
    pub effort_step: u8,
    /// As a service: the highest price asked (0 turns the puzzle off; at
    /// most [`rendezvous::MAX_EFFORT`]).
    pub max_effort: u8,
    /// As a downloader: the highest price paid; above it the session ends
    /// with [`SessionEnd::TooCostly`] (at most [`rendezvous::MAX_EFFORT`]).
    pub client_max_effort: u8,
    /// As a downloader: puzzle hashes per step, all sessions together (the
    /// node is busy that long).
    pub solve_hashes_per_step: u64,
    /// As a downloader: time between puzzle steps.
    pub solve_step_ms: Millis,
    /// As a downloader: `NeedEffort` answers followed per introduction
    /// point (each asking more work than the last), before the next point.
    pub effort_retries: u8,
    /// As a downloader: wait before solving after the first `NeedEffort`
    /// of a point, doubled after each further one.
    pub effort_retry_ms: Millis,
    /// As an introduction point: introductions passed on, remembered
    /// against replay for twice the records' clock skew (the oldest
    /// forgotten first beyond this many).
    pub intro_replay_cache: usize,
    /// As an introduction point: refusals for too little work are reported
    /// to the service at most this often.
    pub effort_report_ms: Millis,
}

impl RendezvousParams {
    /// The real network.
    pub const MAINNET: RendezvousParams = RendezvousParams {
        intro_points: 3,
        intros_per_sec: 25,
        accepts_per_sec: 4,
        max_intro_registrations: 4096,
        max_cookies: 4096,
        cookie_ttl_ms: 60_000,
        max_sessions: 256,
        max_inbound_sessions: 128,
        session_idle_ms: 10 * 60_000,
        intro_answer_ms: 15_000,
        connect_timeout_ms: 60_000,
        replay_cache: 16_384,
        keepalive_ms: 5 * 60_000,
        tick_ms: 1_000,
        provider_lifetime_s: 3600,
        effort_period_ms: 5_000,
        effort_step: 2,
        // 2^24 hashes: about 1.5 s of one core (`pow::PowParams::MAINNET`
        // measures the rate), about 5 s at the solver's pace below.
        max_effort: 24,
        client_max_effort: 24,
        // About 1.5 ms of one core per 5 ms step.
        solve_hashes_per_step: 16_384,
        solve_step_ms: 5,
        effort_retries: 3,
        effort_retry_ms: 500,
        intro_replay_cache: 16_384,
        effort_report_ms: 1_000,
    };

    /// Local test networks: shorter timers.
    pub const TESTNET: RendezvousParams = RendezvousParams {
        connect_timeout_ms: 30_000,
        session_idle_ms: 2 * 60_000,
        keepalive_ms: 60_000,
        tick_ms: 500,
        effort_period_ms: 2_000,
        max_effort: 16,
        client_max_effort: 20,
        ..RendezvousParams::MAINNET
    };

    pub(super) fn validate(&self) -> Result<(), String> {
        let positive = [
            ("intro_points", self.intro_points as u64),
            ("intros_per_sec", u64::from(self.intros_per_sec)),
            ("accepts_per_sec", u64::from(self.accepts_per_sec)),
            (
                "max_intro_registrations",
                self.max_intro_registrations as u64,
            ),
            ("max_cookies", self.max_cookies as u64),
            ("cookie_ttl_ms", self.cookie_ttl_ms),
            ("max_sessions", self.max_sessions as u64),
            ("max_inbound_sessions", self.max_inbound_sessions as u64),
            ("session_idle_ms", self.session_idle_ms),
            ("intro_answer_ms", self.intro_answer_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("replay_cache", self.replay_cache as u64),
            ("keepalive_ms", self.keepalive_ms),
            ("tick_ms", self.tick_ms),
            ("provider_lifetime_s", self.provider_lifetime_s),
            ("effort_period_ms", self.effort_period_ms),
            ("effort_step", u64::from(self.effort_step)),
            ("solve_hashes_per_step", self.solve_hashes_per_step),
            ("solve_step_ms", self.solve_step_ms),
            ("effort_retry_ms", self.effort_retry_ms),
            ("intro_replay_cache", self.intro_replay_cache as u64),
            ("effort_report_ms", self.effort_report_ms),
        ];
        if self.max_effort > rendezvous::MAX_EFFORT
            || self.client_max_effort > rendezvous::MAX_EFFORT
        {
            return Err(format!(
                "rendezvous.max_effort and client_max_effort must be at most {}",
                rendezvous::MAX_EFFORT
            ));
        }
        if self.provider_lifetime_s > crate::provider::MAX_PROVIDER_LIFETIME_SECS {
            return Err(
                "rendezvous.provider_lifetime_s is over the provider record maximum".into(),
            );
        }
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("rendezvous.{name} must be positive")),
            None => Ok(()),
        }
    }
}

/// Our handle for one end-to-end session. Unique for the node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// We closed it.
    Closed,
    /// Its circuit closed (the other end left, or a relay dropped it).
    CircuitClosed,
    /// It did not open within `connect_timeout_ms`.
    Timeout,
    /// Every introduction point refused or failed.
    Unreachable,
    /// A message did not authenticate: someone tampered with the channel.
    Tampered,
    /// No data came for `session_idle_ms`.
    Idle,
    /// The service's introduction points asked more work than
    /// `client_max_effort` (the service is under load; try later).
    TooCostly,
}

/// Why a session could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// `max_sessions` are open or opening.
    #[error("too many sessions")]
    TooMany,
    /// The service named no introduction point.
    #[error("no introduction point")]
    NoIntroPoints,
}

/// Rendezvous counters (part of [`crate::node::Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RendezvousStats {
    /// As an introduction point: registrations accepted.
    pub intro_registered: u64,
    /// As an introduction point: introductions passed to a service.
    pub introductions_passed: u64,
    /// As an introduction point: introductions refused (rate, unknown
    /// service).
    pub introductions_refused: u64,
    /// As an introduction point: introductions refused for too little
    /// work (`NeedEffort`).
    pub introductions_under_effort: u64,
    /// As an introduction point: replays of introductions already passed
    /// on, dropped.
    pub introductions_replayed: u64,
    /// As a service: introductions that came through our points.
    pub introductions_received: u64,
    /// As a service: introductions with less work than our price (a point
    /// that does not check, or lags behind a raise), not acted on.
    pub accepts_under_effort: u64,
    /// As a downloader: puzzles solved.
    pub puzzles_solved: u64,
    /// As a rendezvous point: circuits spliced.
    pub splices: u64,
    /// Requests refused as malformed, badly signed, over a cap, or not
    /// allowed on that circuit.
    pub refused: u64,
    /// As a service: introductions not acted on (rate, replay, sessions
    /// cap, not opening).
    pub accepts_refused: u64,
    /// Sessions opened (both sides).
    pub sessions_opened: u64,
    /// Sessions that failed before opening.
    pub sessions_failed: u64,
    /// Messages that did not open on an open session.
    pub tampered: u64,
}

/// What we asked a circuit for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// An introduction point of our service.
    Intro(PublisherId),
    /// Our rendezvous point for a session.
    Meet(SessionId),
    /// To an introduction point, for a session.
    Introduce(SessionId),
    /// To a downloader's rendezvous point, for a session.
    Join(SessionId),
}

impl Job {
    fn purpose(self) -> Purpose {
        match self {
            Job::Intro(_) => Purpose::Intro,
            Job::Meet(_) => Purpose::Meet,
            Job::Introduce(_) => Purpose::Introduce,
            Job::Join(_) => Purpose::Join,
        }
    }
}

#[derive(Debug)]
struct IntroPoint {
    node: NodeId,
    descriptor: Vec<u8>,
    established: bool,
    /// When the registration was sent (it must be answered within
    /// `connect_timeout_ms`).
    since_ms: Millis,
    /// The next keepalive probe.
    probe_ms: Millis,
}

#[derive(Debug)]
struct Service {
    key: ServiceKey,
    /// By circuit (built ones only).
    points: BTreeMap<u64, IntroPoint>,
    /// Intro circuits asked for and not built yet.
    building: usize,
    /// The descriptors last announced.
    announced: Vec<Vec<u8>>,
    /// The content it serves (provider records are signed for each).
    provides: Vec<ContentId>,
    /// When its provider records were last signed.
    signed_ms: Option<Millis>,
    /// No new introduction circuit before this (set when a build ended at
    /// a point it already has: in a small network there may be no other,
    /// and building again at once would only repeat it).
    wait_until: Millis,
    /// The client puzzle's price.
    price: Price,
}

/// A session from its start to its end.
#[derive(Debug)]
enum State {
    /// Ours, as a downloader: meeting at our rendezvous point, introducing
    /// ourselves through one of the service's introduction points.
    Connecting {
        service: Box<ServicePublic>,
        /// Introduction points not tried yet.
        intros: Vec<Vec<u8>>,
        cookie: [u8; rendezvous::COOKIE_BYTES],
        meet: Option<u64>,
        /// The rendezvous point's descriptor, once the cookie is there.
        rendezvous: Option<Vec<u8>>,
        rp_descriptor: Option<Vec<u8>>,
        introduce: Option<u64>,
        introduce_built: bool,
        /// The handshake of the last introduction sent.
        handshake: Option<Box<Introducing>>,
        /// When the last introduction point said it delivered it.
        delivered_ms: Option<Millis>,
        /// msg1 of the introduction in hand (re-sent with more work on
        /// `NeedEffort`).
        msg1: Option<Vec<u8>>,
        /// The puzzle last sent with it.
        sent: Puzzle,
        /// The price the service's points last asked (0 until one did).
        effort: u8,
        /// The search under way, if msg1 waits for a solution.
        solving: Option<Box<Solving>>,
        /// `NeedEffort` answers from the current point.
        retries: u8,
        /// A point asked more than `client_max_effort`.
        too_costly: bool,
    },
    /// As a service: the session's keys are made; joining the downloader's
    /// rendezvous point.
    Joining {
        cookie: [u8; rendezvous::COOKIE_BYTES],
        msg2: Vec<u8>,
        session: Session,
    },
    /// Only while a state is being replaced (never seen outside one
    /// function).
    Placeholder,
    /// Open on `circuit`.
    Open {
        circuit: u64,
        session: Session,
        /// When authenticated data last came.
        data_ms: Millis,
    },
}

#[derive(Debug)]
struct Sess {
    state: State,
    service: PublisherId,
    inbound: bool,
    deadline_ms: Millis,
    /// Its news goes to the transfer part, not the driver.
    transfer: bool,
}

#[derive(Debug)]
struct Registration {
    circuit: u64,
    bucket: TokenBucket,
    /// The price the service set ([`ToHop::SetEffort`]).
    effort: u8,
    /// Refusals for too little work not reported yet.
    unreported: u32,
    /// When they were last reported.
    reported_ms: Option<Millis>,
}

/// The rendezvous part of the node.
#[derive(Debug, Default)]
pub(super) struct Rendezvous {
    // As a relay.
    registrations: BTreeMap<PublisherId, Registration>,
    registered_on: BTreeMap<u64, PublisherId>,
    intro_replay: ReplayWindow,
    cookies: BTreeMap<[u8; rendezvous::COOKIE_BYTES], (u64, Millis)>,
    cookie_on: BTreeMap<u64, [u8; rendezvous::COOKIE_BYTES]>,
    // As a service.
    services: BTreeMap<PublisherId, Service>,
    accepts: Option<TokenBucket>,
    replay: BTreeMap<[u8; 32], Millis>,
    // Ours.
    builds: BTreeMap<u64, Job>,
    circuits: BTreeMap<u64, Job>,
    next_token: u64,
    sessions: BTreeMap<SessionId, Sess>,
    next_session: u64,
}

impl Rendezvous {
    // ---- commands ------------------------------------------------------

    /// Runs `key` as a service: introduction points are set up over the
    /// next ticks, and announced with [`Event::IntroPoints`].
    pub(super) fn add_service(&mut self, cx: &mut Ctx<'_>, key: ServiceKey) -> PublisherId {
        let id = key.id();
        self.services.entry(id).or_insert(Service {
            key,
            points: BTreeMap::new(),
            building: 0,
            announced: Vec::new(),
            provides: Vec::new(),
            signed_ms: None,
            wait_until: 0,
            price: Price::default(),
        });
        // Never held or answered by this node as an index holder.
        cx.out.act(Action::Provide(id, Vec::new()));
        self.maintain(cx);
        id
    }

    /// Sets the content service `id` serves: provider records for each
    /// are signed with its introduction points and published, again
    /// whenever they change and before they expire.
    pub(super) fn provide(&mut self, cx: &mut Ctx<'_>, id: &PublisherId, content: Vec<ContentId>) {
        if let Some(s) = self.services.get_mut(id) {
            s.provides = content;
            self.sign_providers(cx, *id);
        }
    }

    /// Signs and hands to the search part the provider records of service
    /// `sid` (none while it has no introduction point in place).
    fn sign_providers(&mut self, cx: &mut Ctx<'_>, sid: PublisherId) {
        let Some(s) = self.services.get_mut(&sid) else {
            return;
        };
        let intro_points: Vec<Vec<u8>> = established(s)
            .into_iter()
            .take(crate::provider::MAX_INTRO_POINTS)
            .collect();
        s.signed_ms = Some(cx.now);
        let created = cx.now / 1000;
        let records = if intro_points.is_empty() {
            Vec::new()
        } else {
            s.provides
                .iter()
                .filter_map(|id| {
                    ProviderRecord {
                        content_id: *id,
                        x25519: s.key.public().x25519,
                        intro_points: intro_points.clone(),
                        created,
                        expires: created + cx.config.rendezvous.provider_lifetime_s,
                    }
                    .sign(&s.key)
                    .ok()
                })
                .collect()
        };
        cx.out.act(Action::Provide(sid, records));
    }

    /// Stops a service: its introduction circuits close.
    pub(super) fn remove_service(&mut self, cx: &mut Ctx<'_>, id: &PublisherId) {
        if let Some(s) = self.services.remove(id) {
            for k in s.points.keys() {
                cx.out.act(Action::CloseOwn(*k));
            }
            cx.out.act(Action::Provide(*id, Vec::new()));
        }
    }

    /// Starts a session with `service` through one of `intros` (signed
    /// descriptors of its introduction points, tried in turn).
    pub(super) fn connect(
        &mut self,
        cx: &mut Ctx<'_>,
        service: ServicePublic,
        intros: Vec<Vec<u8>>,
        transfer: bool,
    ) -> Result<SessionId, ConnectError> {
        if intros.is_empty() {
            return Err(ConnectError::NoIntroPoints);
        }
        if self.count(false) >= cx.config.rendezvous.max_sessions {
            return Err(ConnectError::TooMany);
        }
        // A hostile provider record could list many points, each refused
        // or not at once by our path rules: a few are plenty.
        let mut intros = intros;
        intros.truncate(2 * crate::provider::MAX_INTRO_POINTS);
        let id = self.new_session();
        let cookie = rendezvous::cookie(cx.rng);
        self.sessions.insert(
            id,
            Sess {
                state: State::Connecting {
                    service: Box::new(service),
                    intros,
                    cookie,
                    meet: None,
                    rendezvous: None,
                    rp_descriptor: None,
                    introduce: None,
                    introduce_built: false,
                    handshake: None,
                    delivered_ms: None,
                    msg1: None,
                    sent: Puzzle::default(),
                    effort: 0,
                    solving: None,
                    retries: 0,
                    too_costly: false,
                },
                service: service.id(),
                inbound: false,
                deadline_ms: cx.now + cx.config.rendezvous.connect_timeout_ms,
                transfer,
            },
        );
        self.build(cx, Job::Meet(id), None);
        self.next_intro(cx, id);
        Ok(id)
    }

    /// Sessions of one direction, open or opening.
    fn count(&self, inbound: bool) -> usize {
        self.sessions
            .values()
            .filter(|s| s.inbound == inbound)
            .count()
    }

    /// Ends a session and closes its circuits.
    pub(super) fn close(&mut self, cx: &mut Ctx<'_>, id: SessionId) {
        self.end(cx, id, SessionEnd::Closed);
    }

    /// The circuit an open session runs on.
    pub(super) fn session_circuit(&self, id: SessionId) -> Option<u64> {
        match self.sessions.get(&id)?.state {
            State::Open { circuit, .. } => Some(circuit),
            _ => None,
        }
    }

    /// Seals `bytes` for session `id` (the caller checked that the
    /// circuit can take a data cell, so the nonce is not wasted).
    pub(super) fn seal(&mut self, now: Millis, id: SessionId, bytes: &[u8]) -> Option<Vec<u8>> {
        match &mut self.sessions.get_mut(&id)?.state {
            State::Open {
                session, data_ms, ..
            } => {
                // Our own data counts as activity too (a one-way stream is
                // not idle); a peer holding a slot must still send.
                *data_ms = now;
                session.seal(bytes).ok()
            }
            _ => None,
        }
    }

    /// The introduction points of service `id` that are in place.
    pub(super) fn intro_points(&self, id: &PublisherId) -> Vec<Vec<u8>> {
        self.services.get(id).map(established).unwrap_or_default()
    }

    // ---- the circuit part's news ----------------------------------------

    pub(super) fn on(&mut self, cx: &mut Ctx<'_>, input: RendIn) {
        match input {
            RendIn::Built {
                circuit,
                last_hop,
                descriptor,
            } => self.built(cx, circuit, last_hop, descriptor),
            RendIn::Closed { circuit } => self.closed(cx, circuit),
            RendIn::FromHop { circuit, bytes } => self.on_answer(cx, circuit, &bytes),
            RendIn::Data { circuit, bytes } => self.data(cx, circuit, &bytes),
            RendIn::AtHop { circuit, bytes } => self.at_hop(cx, circuit, &bytes),
            RendIn::RelayGone { circuit } => self.relay_gone(circuit),
        }
    }

    /// A build we asked for under `token` started as circuit `k` (or could
    /// not start).
    pub(super) fn build_started(&mut self, cx: &mut Ctx<'_>, token: u64, k: Option<u64>) {
        let Some(job) = self.builds.remove(&token) else {
            if let Some(k) = k {
                cx.out.act(Action::CloseOwn(k));
            }
            return;
        };
        match k {
            Some(k) => {
                self.circuits.insert(k, job);
            }
            None => self.build_failed(cx, job),
        }
    }

    fn build(&mut self, cx: &mut Ctx<'_>, job: Job, target: Option<Vec<u8>>) {
        let token = self.next_token;
        self.next_token += 1;
        self.builds.insert(token, job);
        cx.out.act(Action::BuildFor {
            token,
            purpose: job.purpose(),
            target,
        });
    }

    fn build_failed(&mut self, cx: &mut Ctx<'_>, job: Job) {
        match job {
            Job::Intro(s) => {
                if let Some(s) = self.services.get_mut(&s) {
                    s.building = s.building.saturating_sub(1);
                }
            }
            Job::Introduce(id) => self.next_intro(cx, id),
            Job::Meet(id) | Job::Join(id) => self.fail(cx, id, SessionEnd::Unreachable),
        }
    }

    fn built(&mut self, cx: &mut Ctx<'_>, k: u64, last_hop: NodeId, descriptor: Vec<u8>) {
        let Some(job) = self.circuits.get(&k).copied() else {
            // Not ours (any more).
            cx.out.act(Action::CloseOwn(k));
            return;
        };
        match job {
            Job::Intro(sid) => {
                let Some(s) = self.services.get_mut(&sid) else {
                    cx.out.act(Action::CloseOwn(k));
                    return;
                };
                s.building = s.building.saturating_sub(1);
                // One registration per introduction point.
                if s.points.values().any(|p| p.node == last_hop) {
                    s.wait_until = cx.now + cx.config.rendezvous.connect_timeout_ms / 3;
                    self.circuits.remove(&k);
                    cx.out.act(Action::CloseOwn(k));
                    return;
                }
                s.points.insert(
                    k,
                    IntroPoint {
                        node: last_hop,
                        descriptor,
                        established: false,
                        since_ms: cx.now,
                        probe_ms: next_probe(cx),
                    },
                );
                let msg = s.key.establish_intro(last_hop);
                send(cx, k, &msg);
            }
            Job::Meet(id) => {
                let Some(Sess {
                    state:
                        State::Connecting {
                            cookie,
                            meet,
                            rp_descriptor,
                            ..
                        },
                    ..
                }) = self.sessions.get_mut(&id)
                else {
                    return self.orphan(cx, k);
                };
                *meet = Some(k);
                *rp_descriptor = Some(descriptor);
                let msg = ToHop::EstablishRendezvous { cookie: *cookie };
                send(cx, k, &msg);
            }
            Job::Introduce(id) => {
                let Some(Sess {
                    state:
                        State::Connecting {
                            introduce_built, ..
                        },
                    ..
                }) = self.sessions.get_mut(&id)
                else {
                    return self.orphan(cx, k);
                };
                *introduce_built = true;
                self.try_introduce(cx, id);
            }
            Job::Join(id) => {
                let Some(Sess {
                    state: State::Joining { cookie, msg2, .. },
                    ..
                }) = self.sessions.get_mut(&id)
                else {
                    return self.orphan(cx, k);
                };
                // Open once the rendezvous point says it spliced
                // ([`FromHop::JoinAck`]); until then the session's
                // deadline runs.
                let msg = ToHop::Join {
                    cookie: *cookie,
                    handshake: std::mem::take(msg2),
                };
                send(cx, k, &msg);
            }
        }
    }

    /// As a service, the rendezvous point answered our join.
    fn join_acked(&mut self, cx: &mut Ctx<'_>, id: SessionId, k: u64, joined: bool) {
        if !joined {
            return self.fail(cx, id, SessionEnd::Unreachable);
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return self.orphan(cx, k);
        };
        let State::Joining { .. } = s.state else {
            cx.stats.rendezvous.refused += 1;
            return self.end(cx, id, SessionEnd::Tampered);
        };
        let now = cx.now;
        let old = std::mem::replace(&mut s.state, State::Placeholder);
        let State::Joining { session, .. } = old else {
            return;
        };
        s.state = State::Open {
            circuit: k,
            session,
            data_ms: now,
        };
        cx.stats.rendezvous.sessions_opened += 1;
        opened_news(cx, id, s);
    }

    fn orphan(&mut self, cx: &mut Ctx<'_>, k: u64) {
        self.circuits.remove(&k);
        cx.out.act(Action::CloseOwn(k));
    }

    fn closed(&mut self, cx: &mut Ctx<'_>, k: u64) {
        let Some(job) = self.circuits.remove(&k) else {
            return;
        };
        match job {
            Job::Intro(sid) => {
                if let Some(s) = self.services.get_mut(&sid) {
                    let was = s.points.remove(&k);
                    if was.is_none() {
                        s.building = s.building.saturating_sub(1);
                    }
                    self.announce(cx, sid);
                }
            }
            Job::Introduce(id) => {
                // Closed before an answer: try the next point.
                let waiting = matches!(
                    self.sessions.get(&id),
                    Some(Sess { state: State::Connecting { introduce: Some(i), .. }, .. }) if *i == k
                );
                let unbuilt = matches!(
                    self.sessions.get(&id),
                    Some(Sess {
                        state: State::Connecting {
                            introduce: None,
                            ..
                        },
                        ..
                    })
                );
                if waiting || unbuilt {
                    self.next_intro(cx, id);
                }
            }
            Job::Meet(id) | Job::Join(id) => {
                let end = match self.sessions.get(&id).map(|s| &s.state) {
                    Some(State::Open { .. }) => SessionEnd::CircuitClosed,
                    _ => SessionEnd::Unreachable,
                };
                self.end(cx, id, end);
            }
        }
    }

    /// Asks for a circuit to the next untried introduction point of session
    /// `id`, or fails it when none is left.
    fn next_intro(&mut self, cx: &mut Ctx<'_>, id: SessionId) {
        let Some(Sess {
            state:
                State::Connecting {
                    intros,
                    introduce,
                    introduce_built,
                    handshake,
                    delivered_ms,
                    msg1,
                    sent,
                    solving,
                    retries,
                    too_costly,
                    effort,
                    ..
                },
            ..
        }) = self.sessions.get_mut(&id)
        else {
            return;
        };
        // A point's quote stays with that point: carried to the next, it
        // would make us pay for nothing there and tag us to it (a
        // colluding point would see the same odd price again).
        *effort = 0;
        *introduce = None;
        *introduce_built = false;
        *handshake = None;
        *delivered_ms = None;
        *msg1 = None;
        *sent = Puzzle::default();
        *solving = None;
        *retries = 0;
        if intros.is_empty() {
            let why = if *too_costly {
                SessionEnd::TooCostly
            } else {
                SessionEnd::Unreachable
            };
            return self.fail(cx, id, why);
        }
        let target = intros.remove(0);
        self.build(cx, Job::Introduce(id), Some(target));
    }

    /// Sends the introduction once both the rendezvous point holds our
    /// cookie and the circuit to the introduction point is built.
    fn try_introduce(&mut self, cx: &mut Ctx<'_>, id: SessionId) {
        let Some(Sess {
            state:
                State::Connecting {
                    service,
                    cookie,
                    rendezvous: Some(rp),
                    introduce_built: true,
                    introduce,
                    handshake: handshake @ None,
                    msg1: held,
                    effort,
                    solving,
                    ..
                },
            ..
        }) = self.sessions.get_mut(&id)
        else {
            return;
        };
        let Some(k) = self
            .circuits
            .iter()
            .find(|(_, j)| **j == Job::Introduce(id))
            .map(|(k, _)| *k)
        else {
            return;
        };
        let intro = Introduction {
            rendezvous: rp.clone(),
            cookie: *cookie,
            time_s: cx.now / 1000,
        };
        let Ok((pending, msg1)) = Introducing::start(service, &intro, seed(cx)) else {
            return self.fail(cx, id, SessionEnd::Unreachable);
        };
        *handshake = Some(Box::new(pending));
        *introduce = Some(k);
        let sid = service.id();
        if *effort == 0 {
            // No price known: sent at once, free.
            *held = Some(msg1.clone());
            let msg = ToHop::Introduce {
                service: sid,
                puzzle: Puzzle::default(),
                handshake: msg1,
            };
            return send(cx, k, &msg);
        }
        // The price another point of this service asked: solved first.
        let subject = rendezvous::puzzle_subject(&sid, &msg1);
        *held = Some(msg1);
        let now = cx.now;
        let start = random_nonce(cx);
        *solving = Some(Box::new(Solving::new(subject, *effort, start, now)));
        arm_solver(cx, now);
    }

    /// One step of the puzzle searches under way: at most
    /// `solve_hashes_per_step` hashes, shared by the sessions whose
    /// backoff is over; a solved introduction goes out at once.
    pub(super) fn solve_step(&mut self, cx: &mut Ctx<'_>) {
        let p = &cx.config.rendezvous;
        let now = cx.now;
        let ready: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                matches!(&s.state, State::Connecting { solving: Some(sv), .. } if sv.not_before <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        let share = (p.solve_hashes_per_step / (ready.len() as u64).max(1)).max(1);
        let step_ms = p.solve_step_ms;
        for id in ready {
            let Some(Sess {
                state:
                    State::Connecting {
                        service,
                        introduce: Some(k),
                        msg1: Some(msg1),
                        solving,
                        sent,
                        ..
                    },
                ..
            }) = self.sessions.get_mut(&id)
            else {
                continue;
            };
            let Some(found) = solving.as_mut().and_then(|sv| sv.step(share)) else {
                continue;
            };
            *solving = None;
            *sent = found;
            cx.stats.rendezvous.puzzles_solved += 1;
            let msg = ToHop::Introduce {
                service: service.id(),
                puzzle: found,
                handshake: msg1.clone(),
            };
            let k = *k;
            send(cx, k, &msg);
        }
        // The next step: soon if a search is running, else when the first
        // backoff ends.
        let next = self
            .sessions
            .values()
            .filter_map(|s| match &s.state {
                State::Connecting {
                    solving: Some(sv), ..
                } => Some(sv.not_before.max(now + step_ms)),
                _ => None,
            })
            .min();
        if let Some(at) = next {
            arm_solver(cx, at);
        }
    }

    /// As a downloader, the point asked for `effort` bits on circuit `k`:
    /// solve and re-send after a backoff, try the next point, or give up
    /// above our limit.
    fn need_effort(&mut self, cx: &mut Ctx<'_>, id: SessionId, k: u64, effort: u8) {
        let p = &cx.config.rendezvous;
        let (limit, tries, backoff) = (p.client_max_effort, p.effort_retries, p.effort_retry_ms);
        let now = cx.now;
        let Some(Sess {
            state:
                State::Connecting {
                    service,
                    msg1: Some(msg1),
                    sent,
                    effort: price,
                    solving,
                    retries,
                    too_costly,
                    ..
                },
            ..
        }) = self.sessions.get_mut(&id)
        else {
            self.circuits.remove(&k);
            cx.out.act(Action::CloseOwn(k));
            return;
        };
        // A price we already paid is no answer (a confused or hostile
        // point); more than we pay, or more retries, and we move on.
        let moved_on = effort <= sent.effort || *retries >= tries || effort > limit;
        if effort > limit {
            *too_costly = true;
        }
        if moved_on || solving.is_some() {
            self.circuits.remove(&k);
            cx.out.act(Action::CloseOwn(k));
            return self.next_intro(cx, id);
        }
        *price = effort;
        let wait = backoff.saturating_mul(1 << (*retries).min(16));
        *retries += 1;
        // Nonces below the last one sent were tried and do less work.
        let subject = rendezvous::puzzle_subject(&service.id(), msg1);
        // A random start otherwise: where a search begins must not tell a
        // point how many searches this node runs at once.
        let start = if sent.effort > 0 {
            sent.nonce.wrapping_add(1)
        } else {
            random_nonce(cx)
        };
        *solving = Some(Box::new(Solving::new(subject, effort, start, now + wait)));
        arm_solver(cx, now + wait);
    }

    fn on_answer(&mut self, cx: &mut Ctx<'_>, k: u64, bytes: &[u8]) {
        let Some(job) = self.circuits.get(&k).copied() else {
            return;
        };
        let Ok(msg) = FromHop::decode(bytes) else {
            cx.stats.rendezvous.refused += 1;
            return self.orphan_or_fail(cx, k, job);
        };
        match (job, msg) {
            (Job::Intro(sid), FromHop::IntroEstablished) => {
                let mut price = 0;
                if let Some(s) = self.services.get_mut(&sid)
                    && let Some(p) = s.points.get_mut(&k)
                {
                    p.established = true;
                    price = s.price.current();
                }
                if price > 0 {
                    send(cx, k, &ToHop::SetEffort { effort: price });
                }
                self.announce(cx, sid);
            }
            (Job::Intro(sid), FromHop::Introduction { puzzle, handshake }) => {
                self.introduced(cx, sid, puzzle, &handshake);
            }
            (Job::Intro(sid), FromHop::IntroLoad { refused }) => {
                // No more than the point could have refused in a report's
                // time at its rate (a hostile point cannot claim more).
                let p = &cx.config.rendezvous;
                let most = u64::from(p.intros_per_sec) * p.effort_report_ms.div_ceil(1000);
                if let Some(s) = self.services.get_mut(&sid) {
                    s.price
                        .reported(u32::try_from(most).unwrap_or(u32::MAX).min(refused));
                }
            }
            (Job::Meet(id), FromHop::RendezvousEstablished) => {
                if let Some(Sess {
                    state:
                        State::Connecting {
                            rendezvous,
                            rp_descriptor,
                            ..
                        },
                    ..
                }) = self.sessions.get_mut(&id)
                {
                    *rendezvous = rp_descriptor.take();
                }
                self.try_introduce(cx, id);
            }
            (Job::Meet(id), FromHop::Joined { handshake }) => self.joined(cx, id, k, &handshake),
            (Job::Join(id), FromHop::JoinAck { joined }) => self.join_acked(cx, id, k, joined),
            (Job::Introduce(id), FromHop::IntroduceAck { status }) => {
                if let IntroStatus::NeedEffort(e) = status {
                    return self.need_effort(cx, id, k, e);
                }
                self.circuits.remove(&k);
                cx.out.act(Action::CloseOwn(k));
                if status == IntroStatus::Delivered {
                    if let Some(Sess {
                        state: State::Connecting { delivered_ms, .. },
                        ..
                    }) = self.sessions.get_mut(&id)
                    {
                        *delivered_ms = Some(cx.now);
                    }
                } else {
                    self.next_intro(cx, id);
                }
            }
            (job, _) => {
                cx.stats.rendezvous.refused += 1;
                self.orphan_or_fail(cx, k, job);
            }
        }
    }

    /// A hop sent what it should not have on circuit `k`: close it, and
    /// end the session it served.
    fn orphan_or_fail(&mut self, cx: &mut Ctx<'_>, k: u64, job: Job) {
        self.circuits.remove(&k);
        cx.out.act(Action::CloseOwn(k));
        match job {
            Job::Meet(id) | Job::Join(id) => self.end(cx, id, SessionEnd::Unreachable),
            Job::Introduce(id) => self.next_intro(cx, id),
            Job::Intro(sid) => {
                if let Some(s) = self.services.get_mut(&sid) {
                    s.points.remove(&k);
                }
                self.announce(cx, sid);
            }
        }
    }

    /// As a service, an introduction arrived through one of our
    /// introduction points.
    ///
    /// In order: the puzzle must meet our price (the point checked it
    /// too, but we do not rely on the point); a replay is refused; the
    /// sessions cap; the introduction must open with the service key
    /// (garbage costs the sender, not our budget) and be recent (within
    /// the records' clock skew either way: it is remembered at least that
    /// long, so it cannot come back later); only then is the budget of
    /// circuit builds charged, and if it is spent the price will rise.
    fn introduced(&mut self, cx: &mut Ctx<'_>, sid: PublisherId, puzzle: Puzzle, msg1: &[u8]) {
        let p = &cx.config.rendezvous;
        let now = cx.now;
        let Some(service) = self.services.get_mut(&sid) else {
            return;
        };
        cx.stats.rendezvous.introductions_received += 1;
        let required = service.price.required(now);
        if rendezvous::check_puzzle(&sid, msg1, puzzle, required).is_err() {
            cx.stats.rendezvous.accepts_under_effort += 1;
            cx.stats.rendezvous.accepts_refused += 1;
            return;
        }
        let digest = *blake3::hash(msg1).as_bytes();
        self.replay.retain(|_, until| *until > now);
        if self.replay.contains_key(&digest)
            || self.count(true) >= p.max_inbound_sessions
            || self.replay.len() >= p.replay_cache
        {
            // A replay, or no room to remember one more (refuse rather
            // than forget a live entry).
            cx.stats.rendezvous.accepts_refused += 1;
            return;
        }
        // Paid and new: remembered now, whatever comes of it (a paid
        // introduction that fails below must not come back for another
        // key exchange), for as long as any introduction can pass the
        // time check.
        let skew_ms = crate::record::MAX_CLOCK_SKEW_SECS * 1000;
        self.replay.insert(digest, now + 2 * skew_ms + 1000);
        let Some(service) = self.services.get_mut(&sid) else {
            return;
        };
        service.price.arrived();
        let serves = !service.provides.is_empty();
        let Ok((intro, msg2, session)) = rendezvous::accept(&service.key, msg1, seed(cx)) else {
            cx.stats.rendezvous.accepts_refused += 1;
            return;
        };
        let skew = crate::record::MAX_CLOCK_SKEW_SECS;
        let now_s = now / 1000;
        if intro.time_s.saturating_add(skew) < now_s || intro.time_s > now_s.saturating_add(skew) {
            cx.stats.rendezvous.accepts_refused += 1;
            return;
        }
        let rate = p.accepts_per_sec;
        let bucket = self
            .accepts
            .get_or_insert_with(|| TokenBucket::full(now, rate));
        if !bucket.take(now, rate) {
            // Paid, and still over the rate: the price is too low.
            service.price.over();
            cx.stats.rendezvous.accepts_refused += 1;
            return;
        }
        let id = self.new_session();
        self.sessions.insert(
            id,
            Sess {
                state: State::Joining {
                    cookie: intro.cookie,
                    msg2,
                    session,
                },
                service: sid,
                inbound: true,
                deadline_ms: now + p.connect_timeout_ms,
                transfer: serves,
            },
        );
        self.build(cx, Job::Join(id), Some(intro.rendezvous));
    }

    /// As a downloader, the service joined our rendezvous point.
    fn joined(&mut self, cx: &mut Ctx<'_>, id: SessionId, k: u64, msg2: &[u8]) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let State::Connecting { handshake, .. } = &mut s.state else {
            cx.stats.rendezvous.refused += 1;
            return self.end(cx, id, SessionEnd::Tampered);
        };
        let Some(pending) = handshake.take() else {
            cx.stats.rendezvous.refused += 1;
            return self.end(cx, id, SessionEnd::Tampered);
        };
        let Ok(session) = pending.finish(msg2) else {
            return self.end(cx, id, SessionEnd::Tampered);
        };
        // The introduction circuit, if still open, has done its job.
        if let Some(i) = self
            .circuits
            .iter()
            .find(|(_, j)| **j == Job::Introduce(id))
            .map(|(k, _)| *k)
        {
            self.circuits.remove(&i);
            cx.out.act(Action::CloseOwn(i));
        }
        s.state = State::Open {
            circuit: k,
            session,
            data_ms: cx.now,
        };
        cx.stats.rendezvous.sessions_opened += 1;
        opened_news(cx, id, s);
    }

    /// Data on a session circuit: open it, or end the session.
    fn data(&mut self, cx: &mut Ctx<'_>, k: u64, bytes: &[u8]) {
        let Some(Job::Meet(id) | Job::Join(id)) = self.circuits.get(&k).copied() else {
            return;
        };
        let now = cx.now;
        let to_transfer = self.sessions.get(&id).is_some_and(|s| s.transfer);
        let opened = match self.sessions.get_mut(&id).map(|s| &mut s.state) {
            Some(State::Open {
                session,
                circuit,
                data_ms,
            }) if *circuit == k => {
                let opened = session.open(bytes);
                if opened.is_ok() {
                    *data_ms = now;
                }
                opened
            }
            _ => return,
        };
        match opened {
            Ok(plain) if to_transfer => cx.out.act(Action::ToTransfer(TransferIn::Data {
                session: id,
                bytes: plain,
            })),
            Ok(plain) => cx.event(Event::SessionData {
                session: id,
                bytes: plain,
            }),
            Err(_) => {
                cx.stats.rendezvous.tampered += 1;
                self.end(cx, id, SessionEnd::Tampered);
            }
        }
    }

    // ---- as a relay ----------------------------------------------------

    /// As the last hop of relayed circuit `k`, a rendezvous request.
    fn at_hop(&mut self, cx: &mut Ctx<'_>, k: u64, bytes: &[u8]) {
        let Ok(msg) = ToHop::decode(bytes) else {
            cx.stats.rendezvous.refused += 1;
            return;
        };
        if !cx.config.relay {
            return;
        }
        let p = &cx.config.rendezvous;
        let now = cx.now;
        // A circuit plays one role: a registered or waiting circuit takes
        // nothing else.
        let busy = self.registered_on.contains_key(&k) || self.cookie_on.contains_key(&k);
        match msg {
            ToHop::EstablishIntro(reg) => {
                let me = cx.identity.node_id();
                let ok = rendezvous::check_establish_intro(me, &reg, cx.config.pow);
                let Ok(sid) = ok else {
                    cx.stats.rendezvous.refused += 1;
                    return;
                };
                if self.cookie_on.contains_key(&k)
                    || (self.registrations.len() >= p.max_intro_registrations
                        && !self.registrations.contains_key(&sid))
                {
                    cx.stats.rendezvous.refused += 1;
                    return;
                }
                // The newest registration of a service wins (it lost its
                // old circuit); a circuit serves one service.
                if let Some(old) = self.registered_on.remove(&k) {
                    self.registrations.remove(&old);
                }
                if let Some(old) = self.registrations.insert(
                    sid,
                    Registration {
                        circuit: k,
                        bucket: TokenBucket::full(now, p.intros_per_sec),
                        effort: 0,
                        unreported: 0,
                        reported_ms: None,
                    },
                ) {
                    self.registered_on.remove(&old.circuit);
                }
                self.registered_on.insert(k, sid);
                cx.stats.rendezvous.intro_registered += 1;
                reply(cx, k, &FromHop::IntroEstablished);
            }
            ToHop::Introduce {
                service,
                puzzle,
                handshake,
            } => {
                if busy {
                    cx.stats.rendezvous.refused += 1;
                    return;
                }
                let Some(r) = self.registrations.get_mut(&service) else {
                    cx.stats.rendezvous.introductions_refused += 1;
                    let status = IntroStatus::UnknownService;
                    return reply(cx, k, &FromHop::IntroduceAck { status });
                };
                // The price first (two hashes, none at effort 0): too
                // little work never reaches the service, nor spends its
                // rate; the service hears how many were refused.
                if rendezvous::check_puzzle(&service, &handshake, puzzle, r.effort).is_err() {
                    cx.stats.rendezvous.introductions_under_effort += 1;
                    // Only real work near the price counts as demand (a
                    // free claim of effort 0 must not hold the price up
                    // at no cost to its sender).
                    let near = r.effort.saturating_sub(p.effort_step).max(1);
                    if rendezvous::check_puzzle(&service, &handshake, puzzle, near).is_ok() {
                        r.unreported = r.unreported.saturating_add(1);
                    }
                    if r.reported_ms.is_none_or(|t| now >= t + p.effort_report_ms) {
                        r.reported_ms = Some(now);
                        let refused = std::mem::take(&mut r.unreported);
                        reply(cx, r.circuit, &FromHop::IntroLoad { refused });
                    }
                    // A point with no price set asks at least one bit.
                    let status = IntroStatus::NeedEffort(r.effort.max(1));
                    return reply(cx, k, &FromHop::IntroduceAck { status });
                }
                // A replay of one passed on is dropped unanswered (only a
                // replayer sends one).
                let key = rendezvous::puzzle_subject(&service, &handshake);
                let window = 2 * crate::record::MAX_CLOCK_SKEW_SECS * 1000;
                if self.intro_replay.contains(now, window, &key) {
                    cx.stats.rendezvous.introductions_replayed += 1;
                    return;
                }
                let status = if r.bucket.take(now, p.intros_per_sec) {
                    self.intro_replay.insert(now, p.intro_replay_cache, key);
                    let msg = FromHop::Introduction { puzzle, handshake };
                    reply(cx, r.circuit, &msg);
                    cx.stats.rendezvous.introductions_passed += 1;
                    IntroStatus::Delivered
                } else {
                    cx.stats.rendezvous.introductions_refused += 1;
                    IntroStatus::RateLimited
                };
                reply(cx, k, &FromHop::IntroduceAck { status });
            }
            ToHop::SetEffort { effort } => {
                // Only the service's own registered circuit sets its price.
                let Some(r) = self
                    .registered_on
                    .get(&k)
                    .and_then(|sid| self.registrations.get_mut(sid))
                else {
                    cx.stats.rendezvous.refused += 1;
                    return;
                };
                r.effort = effort;
            }
            ToHop::EstablishRendezvous { cookie } => {
                self.cookies.retain(|_, (_, until)| *until > now);
                let live: std::collections::BTreeSet<u64> =
                    self.cookies.values().map(|(c, _)| *c).collect();
                self.cookie_on.retain(|c, _| live.contains(c));
                if busy || self.cookies.len() >= p.max_cookies || self.cookies.contains_key(&cookie)
                {
                    cx.stats.rendezvous.refused += 1;
                    return;
                }
                self.cookies.insert(cookie, (k, now + p.cookie_ttl_ms));
                self.cookie_on.insert(k, cookie);
                reply(cx, k, &FromHop::RendezvousEstablished);
            }
            ToHop::Join { cookie, handshake } => {
                let waiting = self
                    .cookies
                    .get(&cookie)
                    .filter(|(c, until)| *until > now && *c != k)
                    .map(|(c, _)| *c);
                let Some(a) = waiting.filter(|_| !busy) else {
                    cx.stats.rendezvous.refused += 1;
                    reply(cx, k, &FromHop::JoinAck { joined: false });
                    return;
                };
                self.cookies.remove(&cookie);
                self.cookie_on.remove(&a);
                // The node splices, then tells both sides (or refuses the
                // joiner if the splice failed).
                cx.out.act(Action::Splice {
                    waiting: a,
                    joining: k,
                    handshake,
                });
            }
        }
    }

    fn relay_gone(&mut self, k: u64) {
        if let Some(sid) = self.registered_on.remove(&k) {
            self.registrations.remove(&sid);
        }
        if let Some(c) = self.cookie_on.remove(&k) {
            self.cookies.remove(&c);
        }
    }

    // ---- housekeeping --------------------------------------------------

    /// Timeouts, keepalives, prices, and introduction points to replace.
    pub(super) fn tick(&mut self, cx: &mut Ctx<'_>) {
        let p = cx.config.rendezvous.clone();
        cx.timers
            .set(super::timers::Timer::Rendezvous, cx.now + p.tick_ms);
        let now = cx.now;
        // Each service's price, told to its points when it changes.
        for s in self.services.values_mut() {
            if let Some(effort) = s.price.tick(now, &p) {
                for (k, point) in &s.points {
                    if point.established {
                        send(cx, *k, &ToHop::SetEffort { effort });
                    }
                }
            }
        }
        let late: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !matches!(s.state, State::Open { .. }) && now >= s.deadline_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.fail(cx, id, SessionEnd::Timeout);
        }
        let idle: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                matches!(s.state, State::Open { data_ms, .. } if now >= data_ms + p.session_idle_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.end(cx, id, SessionEnd::Idle);
        }
        // Delivered, and no service came: the point may have dropped it.
        let unanswered: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                matches!(&s.state, State::Connecting { delivered_ms: Some(t), intros, .. }
                    if now >= t + p.intro_answer_ms && !intros.is_empty())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in unanswered {
            self.next_intro(cx, id);
        }
        self.cookies.retain(|_, (_, until)| *until > now);
        let half_life = p.provider_lifetime_s * 1000 / 2;
        let stale: Vec<PublisherId> = self
            .services
            .iter()
            .filter(|(_, s)| {
                !s.provides.is_empty() && s.signed_ms.is_some_and(|t| now >= t + half_life)
            })
            .map(|(id, _)| *id)
            .collect();
        for sid in stale {
            self.sign_providers(cx, sid);
        }
        for s in self.services.values_mut() {
            for (k, point) in &mut s.points {
                if !point.established && now >= point.since_ms + p.connect_timeout_ms {
                    // Never answered: replaced (closing it frees the slot).
                    cx.out.act(Action::CloseOwn(*k));
                } else if now >= point.probe_ms {
                    point.probe_ms =
                        now + p.keepalive_ms / 2 + cx.rng.next_u64() % (p.keepalive_ms / 2).max(1);
                    cx.out.act(Action::ProbeOwn(*k));
                }
            }
        }
        self.maintain(cx);
    }

    /// Asks for introduction circuits where a service has fewer than it
    /// wants.
    fn maintain(&mut self, cx: &mut Ctx<'_>) {
        let want = cx.config.rendezvous.intro_points;
        let now = cx.now;
        let short: Vec<(PublisherId, usize)> = self
            .services
            .iter()
            .filter(|(_, s)| now >= s.wait_until)
            .map(|(id, s)| (*id, want.saturating_sub(s.points.len() + s.building)))
            .filter(|(_, n)| *n > 0)
            .collect();
        for (sid, n) in short {
            for _ in 0..n {
                if let Some(s) = self.services.get_mut(&sid) {
                    s.building += 1;
                }
                self.build(cx, Job::Intro(sid), None);
            }
        }
    }

    /// Announces a service's introduction points when the set changed.
    fn announce(&mut self, cx: &mut Ctx<'_>, sid: PublisherId) {
        let Some(s) = self.services.get_mut(&sid) else {
            return;
        };
        let now = established(s);
        if now != s.announced {
            s.announced = now.clone();
            cx.event(Event::IntroPoints {
                service: sid,
                descriptors: now,
            });
            self.sign_providers(cx, sid);
        }
    }

    fn new_session(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        id
    }

    /// A session that never opened: counted as failed.
    fn fail(&mut self, cx: &mut Ctx<'_>, id: SessionId, why: SessionEnd) {
        if self
            .sessions
            .get(&id)
            .is_some_and(|s| !matches!(s.state, State::Open { .. }))
        {
            cx.stats.rendezvous.sessions_failed += 1;
        }
        self.end(cx, id, why);
    }

    /// Ends session `id`: its circuits close and the driver hears why.
    fn end(&mut self, cx: &mut Ctx<'_>, id: SessionId, why: SessionEnd) {
        let Some(gone) = self.sessions.remove(&id) else {
            return;
        };
        let mine: Vec<u64> = self
            .circuits
            .iter()
            .filter(
                |(_, j)| matches!(j, Job::Meet(s) | Job::Introduce(s) | Job::Join(s) if *s == id),
            )
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            self.circuits.remove(&k);
            cx.out.act(Action::CloseOwn(k));
        }
        self.builds.retain(
            |_, j| !matches!(j, Job::Meet(s) | Job::Introduce(s) | Job::Join(s) if *s == id),
        );
        if gone.transfer {
            cx.out
                .act(Action::ToTransfer(TransferIn::Closed { session: id }));
        } else {
            cx.event(Event::SessionClosed {
                session: id,
                reason: why,
            });
        }
    }
}

/// A session opened: news for its owner.
fn opened_news(cx: &mut Ctx<'_>, id: SessionId, s: &Sess) {
    if s.transfer {
        cx.out.act(Action::ToTransfer(TransferIn::Opened {
            session: id,
            inbound: s.inbound,
        }));
    } else {
        cx.event(Event::SessionOpened {
            session: id,
            service: s.service,
            inbound: s.inbound,
        });
    }
}

fn established(s: &Service) -> Vec<Vec<u8>> {
    s.points
        .values()
        .filter(|p| p.established)
        .map(|p| p.descriptor.clone())
        .collect()
}

fn send(cx: &mut Ctx<'_>, k: u64, msg: &ToHop) {
    if let Ok(bytes) = msg.encode() {
        cx.out.act(Action::RendToHop(k, bytes));
    }
}

fn reply(cx: &mut Ctx<'_>, k: u64, msg: &FromHop) {
    if let Ok(bytes) = msg.encode() {
        cx.out.act(Action::RendToClient(k, bytes));
    }
}

/// A keepalive time, jittered so that intro circuits are not marked by
/// a fixed probe period.
fn next_probe(cx: &mut Ctx<'_>) -> Millis {
    let k = cx.config.rendezvous.keepalive_ms;
    cx.now + k / 2 + cx.rng.next_u64() % (k / 2).max(1)
}

/// Asks for a puzzle step at `at` (or earlier, if one is asked already).
fn arm_solver(cx: &mut Ctx<'_>, at: Millis) {
    let t = super::timers::Timer::Puzzle;
    let at = cx.timers.get(t).map_or(at, |old| old.min(at));
    cx.timers.set(t, at);
}

fn seed(cx: &mut Ctx<'_>) -> [u8; 32] {
    let mut s = [0u8; 32];
    cx.rng.fill_bytes(&mut s);
    s
}

/// Where a puzzle search starts: drawn from the node's RNG (deterministic
/// in the simulator).
fn random_nonce(cx: &mut Ctx<'_>) -> u64 {
    let s = seed(cx);
    u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
}
