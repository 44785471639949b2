//! The control API server: a Unix socket in the data dir, one request per
//! connection, newline-delimited JSON answers (see [`crate::api`]).
//!
//! Each connection has its own task. A client must send its whole request
//! line within [`Daemon::control_timeout`] and take each answer line within
//! it, or it is dropped, so a stuck or idle client holds nothing for long
//! and never delays others (work it asked for still completes). At most
//! [`Daemon::control_max_connections`] connections are served at once; one
//! more is answered with a `busy` error line and closed. A failing
//! `accept` (e.g. out of file descriptors) is logged and retried after a
//! short pause; it never stops the daemon.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use veil_core::identity::{NodeIdentity, Pseudonym};
use veil_core::pow::PowParams;

use veil_core::node::CircuitState;

use veil_core::content::{ContentId, Outboard};
use veil_core::node::SearchError;
use veil_core::rating::{Rating, SignedRating, signer_tags};
use veil_core::record::{SignedRecord, Unchecked};
use veil_core::rendezvous::ServiceKey;
use veil_core::search::{Query, Ranked, rank};
use veil_core::transfer::DropReason;

use crate::api::{
    ApiError, CancelReport, CircuitEntry, Command, DEFAULT_SEARCH_SECONDS, DownloadEntry,
    ErrorKind, FindHit, GetReport, IdInfo, MAX_REQUEST_BYTES, MAX_SEARCH_SECONDS, PeerEntry,
    RateReport, Reply, Request, SearchHit, SearchReport, StatusInfo, UnshareReport, Verdict,
};
use crate::config::{DEFAULT_CONTROL_CONNECTIONS, DEFAULT_CONTROL_TIMEOUT};
use crate::datadir::DataDir;
use crate::download::{self, DownloadError, DownloadInfo, DownloadState, PartialDownload};
use crate::driver::{DownloadUpdate, NetView, SearchUpdate, Served, Snapshot, now_ms};
use crate::library::{self, Library, internal, lock};
use crate::readiness;
use crate::running::{Claim, Running, Stop};
use crate::store::Store;

/// Most results a local find returns unless asked for fewer.
const DEFAULT_FIND_LIMIT: u32 = 200;

/// Pause after a failed `accept` before the next one (e.g. while out of
/// file descriptors, which a retry at once would not cure).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Everything the control API serves from.
#[derive(Debug)]
pub struct Daemon {
    pub dir: DataDir,
    pub node: NodeIdentity,
    pub library: Library,
    pub token: String,
    pub started: Instant,
    pub testnet: bool,
    pub pow: PowParams,
    pub network: NetView,
    /// Why the node relays for nobody, as `veil status` shows it (None: it
    /// relays, or nobody said why).
    pub client_only: Option<String>,
    /// A control client must send its request, and take each answer line,
    /// within this.
    pub control_timeout: Duration,
    /// Most control connections served at once.
    pub control_max_connections: usize,
    /// The service key, until the first publication hands it to the node.
    pub service: Mutex<Option<ServiceKey>>,
    /// Downloads being fetched now, one claim each.
    pub running: Arc<Running>,
    /// Permits for background fetches (resumed at start or by `veil
    /// downloads resume`): at most [`MAX_BACKGROUND_FETCHES`] at once, so
    /// they never fill the blocking pool control requests run on.
    pub background: Arc<tokio::sync::Semaphore>,
}

impl Daemon {
    /// Assemble a daemon from its loaded parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: DataDir,
        node: NodeIdentity,
        publisher: Pseudonym,
        store: Arc<Mutex<Store>>,
        token: String,
        testnet: bool,
        pow: PowParams,
        network: NetView,
    ) -> Daemon {
        Daemon {
            dir,
            node,
            library: Library {
                store,
                publisher: Arc::new(publisher),
            },
            token,
            started: Instant::now(),
            testnet,
            pow,
            network,
            client_only: None,
            control_timeout: DEFAULT_CONTROL_TIMEOUT,
            control_max_connections: DEFAULT_CONTROL_CONNECTIONS,
            service: Mutex::new(None),
            running: Arc::default(),
            background: Arc::new(tokio::sync::Semaphore::new(MAX_BACKGROUND_FETCHES)),
        }
    }
}

/// Accept control connections for as long as the daemon runs (never
/// returns: errors of `accept` are logged and retried).
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(daemon.control_max_connections.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse_busy(&stream);
            continue;
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(d, stream).await {
                tracing::debug!("control connection ended: {e}");
            }
            drop(permit);
        });
    }
}

/// Tell a connection over the limit why it is closed, without waiting: a
/// fresh socket takes one short line at once, and one that does not is
/// closed without it.
fn refuse_busy(stream: &UnixStream) {
    tracing::debug!("control connection refused: too many at once");
    let reply = err(
        ErrorKind::Busy,
        "too many control connections at once; try again",
    );
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

async fn handle(daemon: Arc<Daemon>, stream: UnixStream) -> std::io::Result<()> {
    let timeout = daemon.control_timeout;
    let (rd, wr) = stream.into_split();
    let mut wr = Writer { wr, timeout };
    let mut line = Vec::new();
    let mut rd = BufReader::new(rd).take(MAX_REQUEST_BYTES as u64 + 1);
    let read = rd.read_until(b'\n', &mut line);
    let Ok(n) = tokio::time::timeout(timeout, read).await else {
        let msg = format!("no complete request within {} s", timeout.as_secs_f32());
        let _ = wr.send(&err(ErrorKind::BadRequest, msg)).await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no request in time",
        ));
    };
    let n = n?;
    if n > MAX_REQUEST_BYTES {
        return wr
            .send(&err(ErrorKind::BadRequest, "request too large"))
            .await;
    }
    let req: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => {
            return wr
                .send(&err(
                    ErrorKind::BadRequest,
                    format!("malformed request: {e}"),
                ))
                .await;
        }
    };
    if !token_matches(&req.token, &daemon.token) {
        tracing::warn!("control request with a wrong or missing token refused");
        return wr
            .send(&err(
                ErrorKind::Unauthorized,
                "wrong or missing control token",
            ))
            .await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let worker = tokio::task::spawn_blocking(move || {
        let progress_tx = tx.clone();
        let mut progress = move |event| {
            let _ = progress_tx.send(Reply::Progress { event });
        };
        let reply = match execute(&daemon, req.command, &mut progress) {
            Ok(result) => Reply::Ok { result },
            Err(error) => Reply::Error { error },
        };
        let _ = tx.send(reply);
    });
    while let Some(reply) = rx.recv().await {
        // A client that went away does not stop the work: a share still
        // completes and is indexed.
        if wr.send(&reply).await.is_err() {
            break;
        }
    }
    // Nobody reads what the work still reports: let it go, not pile up.
    drop(rx);
    let _ = worker.await;
    Ok(())
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> Reply {
    Reply::Error {
        error: ApiError::new(kind, msg),
    }
}

/// The answering half of a control connection.
struct Writer {
    wr: tokio::net::unix::OwnedWriteHalf,
    /// Each line must be taken within this.
    timeout: Duration,
}

impl Writer {
    /// Write one answer line; a client that does not take it in time is
    /// dropped.
    async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        let mut buf = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        tokio::time::timeout(self.timeout, self.wr.write_all(&buf))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client does not read its answer",
                ))
            })
    }
}

/// Compare tokens without leaking where they differ: compare their hashes.
fn token_matches(given: &str, expected: &str) -> bool {
    blake3::hash(given.as_bytes()) == blake3::hash(expected.as_bytes())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn absolute(path: &str) -> Result<PathBuf, ApiError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(ApiError::new(
            ErrorKind::BadPath,
            format!("{path}: the daemon needs an absolute path"),
        ));
    }
    Ok(p.to_path_buf())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))
}

fn execute(
    d: &Arc<Daemon>,
    command: Command,
    progress: &mut dyn FnMut(crate::api::Progress),
) -> Result<serde_json::Value, ApiError> {
    match command {
        Command::Status => {
            let (files, bytes) = lock(&d.library.store)?.totals().map_err(internal)?;
            let net = d.network.snapshot();
            let count = |state| net.circuits.iter().filter(|c| c.state == state).count();
            let (ready, readiness) = readiness_of(d, &net);
            to_json(&StatusInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                node_id: d.node.node_id().to_string(),
                publisher_id: d.library.publisher.publisher().id().to_string(),
                data_dir: d.dir.path().display().to_string(),
                uptime_s: d.started.elapsed().as_secs(),
                testnet: d.testnet,
                shared_files: files,
                shared_bytes: bytes,
                listen: d.network.local_addr.to_string(),
                peers: net.peers.len(),
                relay: d.network.relay,
                client_only_reason: if d.network.relay {
                    None
                } else {
                    Some(d.client_only.clone().unwrap_or_else(|| {
                        "no address to advertise (listening on an unspecified address)".into()
                    }))
                },
                circuits_built: count(CircuitState::Built),
                circuits_building: count(CircuitState::Building),
                relay_circuits: net.relay_circuits,
                guards: net.guards.iter().map(|g| g.to_string()).collect(),
                index_records: net.index_records,
                ready,
                readiness,
            })
        }
        Command::Id => {
            let public = d.node.public();
            let publisher = d.library.publisher.publisher();
            to_json(&IdInfo {
                node_id: public.node_id().to_string(),
                node_ed25519: hex::encode(public.ed25519.as_bytes()),
                node_x25519: hex::encode(public.x25519.as_bytes()),
                publisher_id: publisher.id().to_string(),
                publisher_ed25519: hex::encode(publisher.key.as_bytes()),
                pow_difficulty_bits: d.pow.difficulty_bits,
            })
        }
        Command::Share { path } => {
            let path = absolute(&path)?;
            let report = library::share(&d.library, &path, unix_now(), progress)?;
            publish_library(d);
            to_json(&report)
        }
        Command::Unshare { path } => {
            let path = absolute(&path)?;
            let path = path
                .to_str()
                .ok_or_else(|| ApiError::new(ErrorKind::BadPath, "path is not valid UTF-8"))?;
            let removed = library::unshare(&d.library, path)?;
            publish_library(d);
            to_json(&UnshareReport { removed })
        }
        Command::Library => {
            let rows = lock(&d.library.store)?.library().map_err(internal)?;
            let entries: Vec<_> = rows.iter().map(|r| r.entry()).collect();
            to_json(&entries)
        }
        Command::Search {
            words,
            timeout_s,
            limit,
        } => search(d, &words, timeout_s, limit, progress),
        Command::Get { id, out, timeout_s } => get(d, &id, out.as_deref(), timeout_s, progress),
        Command::Downloads => {
            let entries: Vec<DownloadEntry> = download::list(&d.library.store)
                .map_err(download_error)?
                .iter()
                .map(|i| entry(i, d.running.is_running(&i.id)))
                .collect();
            to_json(&entries)
        }
        Command::PauseDownload { id } => pause_download(d, &id),
        Command::ResumeDownload { id } => resume_download(d, &id),
        Command::CancelDownload { id } => cancel_download(d, &id),
        Command::Rate { id, verdict } => {
            let content = parse_id(&id)?;
            let mut store = lock(&d.library.store)?;
            // A fake verdict also reaches the signers only the download's
            // own searches brought (they signed what the user judged); a
            // good one only those a search of the user's showed, so that
            // nobody is credited by slipping a record into those answers.
            let publishers = store
                .publishers_of(&content, verdict == Verdict::Fake)
                .map_err(internal)?;
            if publishers.is_empty() {
                let downloaded = !store
                    .publishers_of(&content, true)
                    .map_err(internal)?
                    .is_empty();
                return Err(ApiError::new(
                    ErrorKind::BadRequest,
                    if downloaded {
                        "only this node's download of that id saw its records, and a good verdict reaches only the publishers a search showed: search for it first"
                    } else {
                        "no search or download of this node saw a record of that id: search for it first"
                    },
                ));
            }
            let (delta, said) = match verdict {
                Verdict::Good => (GOOD_STANDING, veil_core::rating::Verdict::Good),
                Verdict::Fake => (FAKE_STANDING, veil_core::rating::Verdict::Fake),
            };
            for p in &publishers {
                store
                    .adjust_standing(p, delta, now_ms())
                    .map_err(internal)?;
            }
            // Raters who judged this id as we did gain; the others weigh
            // nothing from now on.
            let rater = crate::keys::load_or_create_rater(&d.dir, d.pow).map_err(internal)?;
            let me = rater.publisher().id();
            let now = unix_now();
            let (shown, theirs) = store.shown(&content).map_err(internal)?;
            let theirs: Vec<SignedRating> = theirs
                .iter()
                .filter_map(|b| Unchecked::<SignedRating>::decode(b).ok())
                .filter_map(|u| u.check(now, d.pow).ok())
                .collect();
            let moved = veil_core::search::agreement(&content, said, &theirs, Some(&me));
            for (who, delta) in &moved {
                store
                    .adjust_standing(who, *delta, now_ms())
                    .map_err(internal)?;
            }
            // Our rating goes out, naming the file as our search showed it.
            let published = match shown
                .and_then(|b| Unchecked::<SignedRecord>::decode(&b).ok())
                .and_then(|u| u.check(now, d.pow).ok())
                .map(|r| r.record().clone())
            {
                Some(mut rated) => {
                    rated.created = now;
                    rated.expires = now + RATING_LIFETIME_S;
                    let signers = signer_tags(&publishers, &rated, &mut rand::rngs::OsRng);
                    let signed = Rating {
                        rated,
                        verdict: said,
                        signers,
                    }
                    .sign(&rater)
                    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
                    store.save_my_rating(&signed).map_err(internal)?;
                    drop(store);
                    match d.network.rate(signed) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!("cannot publish the rating now: {e:#}");
                            false
                        }
                    }
                }
                None => false,
            };
            to_json(&RateReport {
                id: content.to_hex(),
                verdict,
                publishers: publishers.iter().map(|p| p.to_string()).collect(),
                raters_agreed: moved.iter().filter(|(_, d)| *d > 0).count(),
                raters_disagreed: moved.iter().filter(|(_, d)| *d < 0).count(),
                published,
            })
        }
        Command::Find { words, limit } => {
            let limit = limit.unwrap_or(DEFAULT_FIND_LIMIT).min(DEFAULT_FIND_LIMIT);
            let hits: Vec<FindHit> = lock(&d.library.store)?
                .find(&words, limit)
                .map_err(internal)?;
            to_json(&hits)
        }
        Command::Peers => {
            let now = now_ms();
            let me = d.node.node_id();
            let peers: Vec<PeerEntry> = d
                .network
                .snapshot()
                .peers
                .into_iter()
                .filter(|p| p.node_id != me)
                .map(|p| PeerEntry {
                    node_id: p.node_id.to_string(),
                    address: p.addr.to_string(),
                    age_s: now.saturating_sub(p.since_ms) / 1000,
                    direction: p.direction,
                    relay: p.relay,
                })
                .collect();
            to_json(&peers)
        }
        Command::Circuits => {
            let now = now_ms();
            let me = d.node.node_id();
            let circuits: Vec<CircuitEntry> = d
                .network
                .snapshot()
                .circuits
                .into_iter()
                .map(|c| CircuitEntry {
                    id: c.id.0,
                    state: c.state,
                    hops: c
                        .hops
                        .iter()
                        .filter(|h| **h != me)
                        .map(|h| h.to_string())
                        .collect(),
                    age_s: now.saturating_sub(c.created_ms) / 1000,
                    build_ms: c.built_ms.map(|b| b.saturating_sub(c.created_ms)),
                })
                .collect();
            to_json(&circuits)
        }
    }
}

/// Standing added for each publisher of a content id rated good.
const GOOD_STANDING: i32 = 1;
/// Standing added for each publisher of a content id rated fake: far below
/// zero, where a pseudonym weighs nothing.
const FAKE_STANDING: i32 = -100;

/// How long our rating lives; republished at every start until then.
const RATING_LIFETIME_S: u64 = 7 * 24 * 3600;

/// Publishes our stored ratings that still check (at start: the node
/// then republishes them with our records).
pub fn publish_ratings(d: &Daemon) {
    let now = unix_now();
    let since = now.saturating_sub(RATING_LIFETIME_S);
    let rows = match lock(&d.library.store).and_then(|mut s| s.my_ratings(since).map_err(internal))
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("cannot read our ratings: {}", e.message);
            return;
        }
    };
    let mut failed = 0;
    for r in rows
        .iter()
        .filter_map(|b| Unchecked::<SignedRating>::decode(b).ok())
        .filter_map(|u| u.check(now, d.pow).ok())
    {
        failed += usize::from(d.network.rate(r).is_err());
    }
    if failed > 0 {
        tracing::warn!(
            failed,
            "some of our ratings could not be handed to the node now"
        );
    }
}

/// Publishes the whole library (every stored record that still checks)
/// through the node's circuits, replacing what was published before. A
/// busy node task is logged, not fatal: the next share publishes again.
pub fn publish_library(d: &Daemon) {
    let rows = match lock(&d.library.store).and_then(|s| s.library().map_err(internal)) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("cannot read the library to publish it: {}", e.message);
            return;
        }
    };
    let now = unix_now();
    let records: Vec<SignedRecord> = rows
        .iter()
        .filter_map(|r| Unchecked::<SignedRecord>::decode(&r.record).ok())
        .filter_map(|u| u.check(now, d.pow).ok())
        .collect();
    if let Err(e) = d
        .network
        .publish(d.library.publisher.publisher().id(), records)
    {
        tracing::warn!("cannot publish the library now: {e:#}");
    }
    // And serve it: provider records through our service.
    let files: Vec<Served> = rows
        .iter()
        .filter_map(|r| {
            let id = ContentId::from_bytes(r.content_id);
            let outboard = Outboard::from_parts(id, r.size, r.outboard.clone()).ok()?;
            Some(Served {
                id,
                path: PathBuf::from(&r.path),
                outboard: Arc::new(outboard),
            })
        })
        .collect();
    let service = d.service.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Err(e) = d.network.serve(service, files) {
        tracing::warn!("cannot serve the library now: {e:#}");
    }
}

/// The largest download `veil get` starts (1 TiB: a 2 MiB bitfield).
pub const MAX_GET_SIZE: u64 = 1 << 40;

/// How long `veil get` waits for more records once the first came.
const RECORD_WAIT: Duration = Duration::from_secs(3);

/// Most verified pieces written with one sync (64 KiB each: 4 MiB).
const MAX_WRITE_BATCH: usize = 64;

/// How long `veil get` waits for the first records and providers, and
/// then for each next piece, unless asked otherwise.
pub const DEFAULT_GET_SECONDS: u32 = 120;

/// `veil get`: resumes a download of `id` or starts one (finding its size
/// and name by an exact-id search), then writes verified pieces as they
/// come and moves the file into place once every piece is held and the
/// whole file re-hashes to the id.
fn get(
    d: &Daemon,
    id: &str,
    out: Option<&str>,
    timeout_s: Option<u32>,
    progress: &mut dyn FnMut(crate::api::Progress),
) -> Result<serde_json::Value, ApiError> {
    let id = parse_id(id)?;
    let wait = Duration::from_secs(u64::from(
        timeout_s.unwrap_or(DEFAULT_GET_SECONDS).clamp(1, 3600),
    ));
    let started = Instant::now();
    let Some(claim) = d.running.claim(id) else {
        return Err(ApiError::new(
            ErrorKind::Busy,
            "this download is running already (resumed in the background at start, or from another `veil get`); its file appears at its destination when done",
        ));
    };
    let part = match PartialDownload::open(&d.library.store, &d.dir, id) {
        Ok(mut part) => {
            // A download that failed its final check (it was reset) or
            // was paused starts again when asked.
            if matches!(part.state(), DownloadState::Failed | DownloadState::Paused) {
                part.resume().map_err(download_error)?;
            }
            part
        }
        Err(DownloadError::NotFound(_)) => {
            let (size, name) = find_record(d, id, started + wait)?;
            if size > MAX_GET_SIZE {
                return Err(ApiError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "the records give a size of {size} bytes, over this version's limit of {MAX_GET_SIZE}"
                    ),
                ));
            }
            let dest = destination(d, out, &name)?;
            PartialDownload::create(&d.library.store, &d.dir, id, size, &name, &dest)
                .map_err(download_error)?
        }
        Err(e) => return Err(download_error(e)),
    };
    let report = fetch(d, &claim, part, wait, progress)?;
    to_json(&GetReport {
        seconds: started.elapsed().as_secs_f64(),
        ..report
    })
}

/// The size and name most publishers gave `id`, from an exact-id search:
/// records of pseudonyms this node rated fake do not vote, and a tie
/// between different sizes or names is refused (a cheap pseudonym must not
/// decide it; the size is proven only by the first verified piece).
fn find_record(d: &Daemon, id: ContentId, deadline: Instant) -> Result<(u64, String), ApiError> {
    let standing = lock(&d.library.store)?.standing().map_err(internal)?;
    let updates = d.network.search(Query::Content(id)).map_err(internal)?;
    let mut votes: std::collections::BTreeMap<(u64, String), std::collections::BTreeSet<_>> =
        Default::default();
    let mut deadline = deadline;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match updates.recv_timeout(left) {
            Ok(SearchUpdate::Results(batch, _)) => {
                for r in batch.iter().filter(|r| r.record().content_id == id) {
                    let who = r.publisher().id();
                    if standing.score(&who) < 0 {
                        continue;
                    }
                    let key = (r.record().size, r.record().name.clone());
                    votes.entry(key).or_default().insert(who);
                }
                // Once something came, a little longer for more votes.
                if !votes.is_empty() {
                    deadline = deadline.min(Instant::now() + RECORD_WAIT);
                }
            }
            Ok(SearchUpdate::Failed(e)) => {
                let why = match e {
                    SearchError::NoPeers => "no peers yet",
                    SearchError::NoCircuit => "no circuit built yet",
                };
                let why = match readiness_of(d, &d.network.snapshot()) {
                    (false, line) => format!("this node is {line}"),
                    (true, _) => format!("{why}; try again"),
                };
                return Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!("cannot search for this id: {why}"),
                ));
            }
            Ok(SearchUpdate::Done) | Err(_) => break,
        }
    }
    let mut ranked: Vec<((u64, String), usize)> =
        votes.into_iter().map(|(k, who)| (k, who.len())).collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    match ranked.as_slice() {
        [] => Err(ApiError::new(
            ErrorKind::NotFound,
            "nothing matched: no record of this content id was found",
        )),
        [(first, n), (second, m), ..] if n == m && first.0 != second.0 => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "the records disagree on this id's size ({} or {} bytes, {n} publisher(s) each); rate the wrong ones fake and try again",
                first.0, second.0
            ),
        )),
        [(first, _), ..] => Ok(first.clone()),
    }
}

/// Where a finished download goes: `out` as a file path, or a directory
/// to put it in under its published name; by default `complete/` in the
/// data dir (partial files live apart, in `downloads/`).
fn destination(d: &Daemon, out: Option<&str>, name: &str) -> Result<PathBuf, ApiError> {
    match out {
        // Not the partial files' directory: a name cannot land on one.
        None => Ok(d.dir.path().join("complete").join(name)),
        Some(o) => {
            let p = absolute(o)?;
            Ok(if p.is_dir() { p.join(name) } else { p })
        }
    }
}

fn download_error(e: DownloadError) -> ApiError {
    let kind = match e {
        DownloadError::Io { .. } | DownloadError::Store(_) => ErrorKind::Internal,
        DownloadError::DestExists(_)
        | DownloadError::BadDest(_)
        | DownloadError::DestTaken { .. } => ErrorKind::BadPath,
        _ => ErrorKind::BadRequest,
    };
    ApiError::new(kind, e.to_string())
}

/// How often a fetch waiting for updates looks whether another request
/// asked it to stop.
const STOP_TICK: Duration = Duration::from_millis(200);

/// How long pausing or cancelling waits for a running fetch to stop (it
/// notices within a [`STOP_TICK`], unless it is writing or re-hashing the
/// finished file).
const STOP_WAIT: Duration = Duration::from_secs(30);

/// How long a download resumed in the background waits for each next
/// piece before it stops (the partial file stays; the next start,
/// `veil get` or `veil downloads resume` takes it up again).
const BACKGROUND_WAIT: Duration = Duration::from_secs(DEFAULT_GET_SECONDS as u64 * 5);

/// Most downloads fetched in the background at once; the rest resumed at
/// start wait their turn (without a thread), and `veil downloads resume`
/// beyond it is answered `busy`.
pub const MAX_BACKGROUND_FETCHES: usize = 8;

/// Runs a download until its file is in place, or no piece came for
/// `wait` (the partial file stays, to resume), or another request asks
/// `claim` to stop (a pause is recorded here, so that it holds even if
/// the one who asked gave up waiting).
fn fetch(
    d: &Daemon,
    claim: &Claim,
    mut part: PartialDownload,
    wait: Duration,
    progress: &mut dyn FnMut(crate::api::Progress),
) -> Result<GetReport, ApiError> {
    use std::sync::mpsc::RecvTimeoutError;
    let id = part.id();
    let size = part.size();
    let pieces = part.bitfield().pieces();
    let held_before = part.bitfield().held();
    let updates = d
        .network
        .download(id, size, part.bitfield().clone())
        .map_err(internal)?;
    let (mut bad, mut other) = (0, 0);
    let mut sources = 0;
    let report = |part: &PartialDownload, sources: usize| crate::api::Progress::Download {
        held: part.bitfield().held(),
        pieces,
        bytes: size,
        held_bytes: part.held_bytes(),
        sources: sources as u64,
    };
    progress(report(&part, sources));
    // An update taken while gathering a batch of pieces, handled next.
    let mut next = None;
    // When a piece (or other news of the sources) last came.
    let mut heard = Instant::now();
    loop {
        if let Some(why) = claim.stop_requested() {
            let _ = d.network.cancel_download(id);
            return Err(stopped(&mut part, why));
        }
        let update = match next.take() {
            Some(u) => u,
            // Silence is judged on every pass, so news of sources that
            // keeps coming without a piece does not hold the fetch open.
            None => match (
                heard.elapsed() >= wait,
                updates.recv_timeout(STOP_TICK.min(wait)),
            ) {
                (false, Ok(u)) => u,
                (false, Err(RecvTimeoutError::Timeout)) => continue,
                _ => {
                    let _ = d.network.cancel_download(id);
                    let why = match readiness_of(d, &d.network.snapshot()) {
                        (false, line) => format!("this node is {line}"),
                        (true, _) if bad + other > 0 => format!(
                            "no provider reachable: {} source(s) dropped, {bad} for corrupt data",
                            bad + other
                        ),
                        (true, _) => "no provider reachable, or none left".to_string(),
                    };
                    return Err(ApiError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "no piece came for {} s ({why}); {} of {} pieces are kept: run `veil get` again to resume",
                            wait.as_secs(),
                            part.bitfield().held(),
                            pieces
                        ),
                    ));
                }
            },
        };
        // Only a piece is news: dropped sources and source counts are not.
        if matches!(update, DownloadUpdate::Piece(_)) {
            heard = Instant::now();
        }
        match update {
            DownloadUpdate::Piece(piece) => {
                // The pieces that arrived meanwhile are written with it:
                // one sync and one commit for all of them.
                let mut batch = vec![piece];
                while batch.len() < MAX_WRITE_BATCH {
                    match updates.try_recv() {
                        Ok(DownloadUpdate::Piece(p)) => batch.push(p),
                        Ok(u) => {
                            next = Some(u);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                part.write_batch(batch).map_err(|e| {
                    let _ = d.network.cancel_download(id);
                    download_error(e)
                })?;
                progress(report(&part, sources));
            }
            DownloadUpdate::Sources(n) => {
                sources = n;
                progress(report(&part, sources));
            }
            DownloadUpdate::Signers(signers) => {
                // Not "seen" for ranking: the user never saw them.
                // A store that cannot take them does not stop the fetch.
                let noted = lock(&d.library.store)
                    .map_err(|e| e.message)
                    .and_then(|mut s| {
                        s.note_download_signers(&id, &signers, now_ms())
                            .map_err(|e| format!("{e:#}"))
                    });
                if let Err(e) = noted {
                    tracing::warn!("cannot note the content's signers: {e}");
                }
            }
            DownloadUpdate::Dropped {
                service,
                reason,
                proven,
            } => {
                // A source that served a corrupt piece once the size was
                // proven: its service key (never the content's publisher)
                // loses standing here.
                if reason == DropReason::Bad && proven {
                    bad += 1;
                    if let Err(e) =
                        lock(&d.library.store)?.adjust_standing(&service, FAKE_STANDING, now_ms())
                    {
                        tracing::warn!("cannot lower a lying source's standing: {e:#}");
                    }
                } else {
                    other += 1;
                }
                progress(crate::api::Progress::Dropped {
                    reason: format!("{reason:?}").to_lowercase(),
                });
            }
            DownloadUpdate::Failed(e) => {
                return Err(ApiError::new(ErrorKind::BadRequest, e));
            }
            DownloadUpdate::Done => break,
        }
    }
    let fetched = part.bitfield().held() - held_before;
    let path = part.finish().map_err(download_error)?;
    Ok(GetReport {
        id: id.to_hex(),
        path: path.display().to_string(),
        bytes: size,
        seconds: 0.0,
        pieces_fetched: fetched,
        pieces,
        sources_dropped_bad: bad,
        sources_dropped_other: other,
    })
}

/// A fetch asked to stop: records a pause, and says what became of it to
/// the one who waited on the fetch.
fn stopped(part: &mut PartialDownload, why: Stop) -> ApiError {
    let id = part.id().to_hex();
    let (held, pieces) = (part.bitfield().held(), part.bitfield().pieces());
    let message = match why {
        Stop::Pause => {
            if let Err(e) = part.pause() {
                tracing::warn!("cannot record a pause: {e}");
            }
            format!(
                "the download was paused (`veil downloads pause`); {held} of {pieces} pieces are kept: `veil downloads resume {id}` or `veil get {id}` goes on"
            )
        }
        Stop::Cancel => format!(
            "the download was cancelled (`veil downloads cancel`); its {held} verified pieces are deleted"
        ),
    };
    ApiError::new(ErrorKind::Stopped, message)
}

/// Fetches a download with nobody waiting on it (at start, or resumed by
/// `veil downloads resume`), logging how it ends.
fn fetch_quietly(d: &Daemon, claim: &Claim, part: PartialDownload) {
    tracing::info!(
        held = part.bitfield().held(),
        pieces = part.bitfield().pieces(),
        "resuming a download"
    );
    match fetch(d, claim, part, BACKGROUND_WAIT, &mut |_| {}) {
        Ok(r) => tracing::info!(pieces = r.pieces_fetched, "resumed download finished"),
        Err(e) => {
            // The message may name the content id or its paths.
            tracing::warn!("a resumed download stopped (details at debug level)");
            tracing::debug!("resumed download stopped: {}", e.message);
        }
    }
}

/// Restarts the downloads left active by the last run, in the
/// background (each stops again if no piece comes for a while; the next
/// start or `veil get` resumes it). Paused ones stay paused.
pub fn resume_downloads(d: Arc<Daemon>) {
    let list = match download::list(&d.library.store) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot list downloads to resume: {e}");
            return;
        }
    };
    for info in list
        .into_iter()
        .filter(|i| i.state == DownloadState::Active)
    {
        let d = d.clone();
        // A permit first (waiting holds no thread), then the claim: a
        // download waiting its turn can be paused or cancelled meanwhile.
        tokio::spawn(async move {
            let Ok(permit) = d.background.clone().acquire_owned().await else {
                return;
            };
            let _ = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let Some(claim) = d.running.claim(info.id) else {
                    return;
                };
                match PartialDownload::open(&d.library.store, &d.dir, info.id) {
                    // Paused (or failed) since the list was read: left alone.
                    Ok(part) if part.state() != DownloadState::Active => {}
                    Ok(part) => fetch_quietly(&d, &claim, part),
                    Err(e) => {
                        // The error names the content id and its paths.
                        tracing::warn!("cannot resume a download (details at debug level)");
                        tracing::debug!("cannot resume a download: {e}");
                    }
                }
            })
            .await;
        });
    }
}

/// Whether the node can search and download now, and the line saying so
/// or why not (see [`readiness`]), from a snapshot of the network.
fn readiness_of(d: &Daemon, net: &Snapshot) -> (bool, String) {
    let count = |state| net.circuits.iter().filter(|c| c.state == state).count();
    readiness::assess(&readiness::Facts {
        peers: net.peers.len(),
        seeds: d.network.seeds,
        built: count(CircuitState::Built),
        building: count(CircuitState::Building),
        guards: net.guard_status.clone(),
    })
}

/// A content id as the API takes it: 64 hex digits.
fn parse_id(id: &str) -> Result<ContentId, ApiError> {
    id.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| ApiError::new(ErrorKind::BadRequest, "not a content id (64 hex digits)"))
}

/// The registered download of `id`, or a not-found error.
fn registered(d: &Daemon, id: ContentId) -> Result<DownloadInfo, ApiError> {
    download::list(&d.library.store)
        .map_err(download_error)?
        .into_iter()
        .find(|i| i.id == id)
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "no download of {} is registered (see `veil downloads`)",
                    id.to_hex()
                ),
            )
        })
}

fn entry(i: &DownloadInfo, running: bool) -> DownloadEntry {
    DownloadEntry {
        id: i.id.to_hex(),
        name: i.name.clone(),
        size: i.size,
        dest: i.dest.display().to_string(),
        state: i.state,
        held: i.held,
        pieces: i.pieces,
        held_bytes: i.held_bytes,
        running,
        created: i.created,
        updated: i.updated,
    }
}

/// The claim of a registered download, once whatever fetched it stopped.
fn take_over(d: &Daemon, id: ContentId, why: Stop) -> Result<(Claim, bool), ApiError> {
    d.running.take_over(id, why, STOP_WAIT).map_err(|e| {
        ApiError::new(
            ErrorKind::Busy,
            format!("{e} (it may be writing or checking its file); try again"),
        )
    })
}

/// `veil downloads pause`: stops the fetch if one runs, then records the
/// pause; what is held stays.
fn pause_download(d: &Daemon, id: &str) -> Result<serde_json::Value, ApiError> {
    let id = parse_id(id)?;
    registered(d, id)?;
    let (_claim, _) = take_over(d, id, Stop::Pause)?;
    let mut part = PartialDownload::open(&d.library.store, &d.dir, id).map_err(download_error)?;
    part.pause().map_err(download_error)?;
    drop(part);
    to_json(&entry(&registered(d, id)?, false))
}

/// `veil downloads resume`: marks the download active and fetches it in
/// the background; one that runs already is left to run.
fn resume_download(d: &Arc<Daemon>, id: &str) -> Result<serde_json::Value, ApiError> {
    let id = parse_id(id)?;
    let info = registered(d, id)?;
    let Some(claim) = d.running.claim(id) else {
        return to_json(&entry(&info, true));
    };
    let Ok(permit) = d.background.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            ErrorKind::Busy,
            format!(
                "{MAX_BACKGROUND_FETCHES} downloads are fetched in the background already; try again when one ends, or `veil get {}` (it fetches in the foreground)",
                id.to_hex()
            ),
        ));
    };
    let mut part = PartialDownload::open(&d.library.store, &d.dir, id).map_err(download_error)?;
    part.resume().map_err(download_error)?;
    let info = registered(d, id)?;
    let daemon = Arc::clone(d);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        fetch_quietly(&daemon, &claim, part);
    });
    to_json(&entry(&info, true))
}

/// `veil downloads cancel`: stops the fetch if one runs, then deletes the
/// partial file and the row.
fn cancel_download(d: &Daemon, id: &str) -> Result<serde_json::Value, ApiError> {
    let id = parse_id(id)?;
    registered(d, id)?;
    let (_claim, stopped) = take_over(d, id, Stop::Cancel)?;
    // Read again under the claim: what the stopped fetch left.
    let info = registered(d, id)?;
    download::remove(&d.library.store, &d.dir, id).map_err(download_error)?;
    let finished = info.state == DownloadState::Done;
    to_json(&CancelReport {
        id: id.to_hex(),
        name: info.name,
        stopped,
        discarded_bytes: if finished { 0 } else { info.held_bytes },
        finished,
    })
}

/// `veil search`: starts a network search and streams ranked results as
/// they arrive, until the time bound or the network's search timeout.
fn search(
    d: &Daemon,
    words: &str,
    timeout_s: Option<u32>,
    limit: Option<u32>,
    progress: &mut dyn FnMut(crate::api::Progress),
) -> Result<serde_json::Value, ApiError> {
    let query =
        Query::parse(words).map_err(|e| ApiError::new(ErrorKind::BadRequest, e.to_string()))?;
    let limit = limit.unwrap_or(DEFAULT_FIND_LIMIT).min(DEFAULT_FIND_LIMIT) as usize;
    let secs = timeout_s
        .unwrap_or(DEFAULT_SEARCH_SECONDS)
        .clamp(1, MAX_SEARCH_SECONDS);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(u64::from(secs));
    let mut standing = lock(&d.library.store)?.standing().map_err(internal)?;
    let updates = d.network.search(query).map_err(internal)?;
    let mut records: Vec<SignedRecord> = Vec::new();
    let mut ratings: Vec<SignedRating> = Vec::new();
    let mut seen_bytes: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
    let mut shown: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut reason = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match updates.recv_timeout(left) {
            Ok(SearchUpdate::Results(batch, rated)) => {
                let now = now_ms();
                let mut new_publishers = Vec::new();
                let mut new_ratings = Vec::new();
                for r in rated {
                    if seen_bytes.insert(r.to_bytes()) {
                        let id = r.publisher().id();
                        if standing.first_seen(&id).is_none() {
                            new_publishers.push(id);
                        }
                        standing.seen(id, now);
                        new_ratings.push(r);
                    }
                }
                let first: Vec<&SignedRecord> = batch.iter().collect();
                if let Err(e) = lock(&d.library.store)?.note_shown(&first, &new_ratings, now) {
                    tracing::warn!("cannot note search results: {e:#}");
                }
                ratings.extend(new_ratings);
                let pairs: Vec<_> = batch
                    .iter()
                    .map(|r| (r.record().content_id, r.publisher().id()))
                    .collect();
                for r in batch {
                    if seen_bytes.insert(r.to_bytes()) {
                        let id = r.publisher().id();
                        if standing.first_seen(&id).is_none() {
                            new_publishers.push(id);
                        }
                        standing.seen(id, now);
                        records.push(r);
                    }
                }
                if !new_publishers.is_empty()
                    && let Err(e) = lock(&d.library.store)?.note_seen(&new_publishers, now)
                {
                    tracing::warn!("cannot note publishers seen: {e:#}");
                }
                if let Err(e) = lock(&d.library.store)?.note_results(&pairs, now) {
                    tracing::warn!("cannot note search results: {e:#}");
                }
                let ranked = rank(&records, &ratings, &standing, now);
                for (i, r) in ranked.iter().enumerate().take(limit) {
                    let id = r.content_id.to_hex();
                    if shown.get(&id) != Some(&r.publishers) {
                        shown.insert(id.clone(), r.publishers);
                        progress(crate::api::Progress::Result { hit: hit(i, r, id) });
                    }
                }
            }
            Ok(SearchUpdate::Done) => break,
            Ok(SearchUpdate::Failed(e)) => {
                reason = Some(
                    match e {
                        SearchError::NoPeers => "no_peers",
                        SearchError::NoCircuit => "no_circuit",
                    }
                    .to_owned(),
                );
                break;
            }
            Err(_) => break,
        }
    }
    let ranked = rank(&records, &ratings, &standing, now_ms());
    // Could not start: say what the node waits for (unless a circuit
    // came meanwhile).
    let readiness = match reason {
        Some(_) => match readiness_of(d, &d.network.snapshot()) {
            (false, line) => Some(line),
            (true, _) => None,
        },
        None => None,
    };
    if ranked.is_empty() && reason.is_none() {
        reason = Some("nothing_matched".into());
    }
    to_json(&SearchReport {
        results: ranked
            .iter()
            .enumerate()
            .take(limit)
            .map(|(i, r)| hit(i, r, r.content_id.to_hex()))
            .collect(),
        records: records.len(),
        reason,
        readiness,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

fn hit(i: usize, r: &Ranked, id: String) -> SearchHit {
    SearchHit {
        id,
        name: r.name.clone(),
        size: r.size,
        publishers: r.publishers,
        rank: i + 1,
        score: (r.score * 1000.0).round() / 1000.0,
        rated_good: r.rated_good,
        rated_fake: r.rated_fake,
        discredited: r.discredited,
        disputed: r.disputed,
    }
}
