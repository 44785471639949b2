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

use veil_core::content::ContentId;
use veil_core::node::SearchError;
use veil_core::record::{SignedRecord, Unchecked};
use veil_core::search::{Query, Ranked, rank};

use crate::api::{
    ApiError, CircuitEntry, Command, DEFAULT_SEARCH_SECONDS, ErrorKind, FindHit, IdInfo,
    MAX_REQUEST_BYTES, MAX_SEARCH_SECONDS, PeerEntry, RateReport, Reply, Request, SearchHit,
    SearchReport, StatusInfo, UnshareReport, Verdict,
};
use crate::config::{DEFAULT_CONTROL_CONNECTIONS, DEFAULT_CONTROL_TIMEOUT};
use crate::datadir::DataDir;
use crate::driver::{NetView, SearchUpdate, now_ms};
use crate::library::{self, Library, internal, lock};
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
    d: &Daemon,
    command: Command,
    progress: &mut dyn FnMut(crate::api::Progress),
) -> Result<serde_json::Value, ApiError> {
    match command {
        Command::Status => {
            let (files, bytes) = lock(&d.library.store)?.totals().map_err(internal)?;
            let net = d.network.snapshot();
            let count = |state| net.circuits.iter().filter(|c| c.state == state).count();
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
        Command::Rate { id, verdict } => {
            let content: ContentId = id.trim().to_ascii_lowercase().parse().map_err(|_| {
                ApiError::new(ErrorKind::BadRequest, "not a content id (64 hex digits)")
            })?;
            let mut store = lock(&d.library.store)?;
            let publishers = store.publishers_of(&content).map_err(internal)?;
            if publishers.is_empty() {
                return Err(ApiError::new(
                    ErrorKind::BadRequest,
                    "no search result of this node had that id: search for it first",
                ));
            }
            let delta = match verdict {
                Verdict::Good => GOOD_STANDING,
                Verdict::Fake => FAKE_STANDING,
            };
            for p in &publishers {
                store
                    .adjust_standing(p, delta, now_ms())
                    .map_err(internal)?;
            }
            to_json(&RateReport {
                id: content.to_hex(),
                verdict,
                publishers: publishers.iter().map(|p| p.to_string()).collect(),
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
    let mut seen_bytes: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
    let mut shown: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut reason = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match updates.recv_timeout(left) {
            Ok(SearchUpdate::Results(batch)) => {
                let now = now_ms();
                let mut new_publishers = Vec::new();
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
                let ranked = rank(&records, &standing, now);
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
    let ranked = rank(&records, &standing, now_ms());
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
    }
}
