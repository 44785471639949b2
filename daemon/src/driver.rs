//! The QUIC driver: one quinn endpoint (one UDP socket) and one task that
//! owns the protocol [`Node`] and feeds it.
//!
//! What the driver guarantees to the node:
//!
//! - **One task owns the node.** Connection tasks talk to it only through a
//!   bounded channel of inputs, so the node sees one ordered stream of
//!   `handle_*` calls, each followed by draining `poll_transmit` and
//!   `poll_event`, and `handle_timeout` is called at `poll_timeout`.
//! - **A link is one QUIC connection and one bidirectional stream** opened by
//!   the dialler, whose first write is Noise message 1 (so the stream appears
//!   at the acceptor). Stream bytes go to `handle_link_data` in order; the
//!   end of the stream or of the connection becomes `handle_link_down`
//!   exactly once; a dial that fails or times out becomes
//!   `handle_connect_failed`.
//! - **The binding is the TLS exporter** of that connection (see
//!   [`crate::net`]), computed the same way on both ends.
//! - **Back-pressure is the node's.** Each link's writer reports the cells
//!   it wrote ([`Node::handle_link_sent`]); the node hands a link at most
//!   [`Config::max_link_in_flight_cells`] unreported cells, so the writer's
//!   queue (that size) never fills, and what waits beyond it waits in the
//!   node's per-circuit queues, where a slow or greedy circuit stalls only
//!   itself (see `veil_core::node`). An inbound connection from an
//!   address not yet validated is answered with a QUIC Retry and holds
//!   nothing; validated ones that have not yet opened their stream are
//!   bounded, in all, per source address and per network, and must finish
//!   QUIC and open the stream soon ([`crate::admission`]). A link whose
//!   writer is gone (its queue full or closed) is closed.
//!   A client-only node accepts no inbound connection at all, binds a
//!   fresh port on every run and answers no unsolicited packet
//!   ([`net::endpoint`]).
//!
//! - **Guards survive restarts.** With [`Options::guard_store`], the guard
//!   list stored there is restored into the node before its first input,
//!   and every [`Event::GuardsChanged`] is written back by a separate task
//!   (the node task never waits for SQLite; only the newest list is
//!   written). [`Network::shutdown`] writes the last list before returning.
//!
//! - **Reached relays survive restarts** (relays only; a client-only node
//!   keeps its guards alone). The relays this node dialled and reached
//!   (outbound links that authenticated, with their descriptors) that its
//!   peer sampler picked are written to the store's `peers` table as they
//!   change, at most
//!   [`crate::store::MAX_STORED_PEERS`]; at the next start the most
//!   recently reached (at most 16, within 30 days) are dialled as seeds
//!   besides the configured ones, so a node rejoins after its seeds are
//!   gone. Only addresses we reached are kept: an inbound link's address
//!   is a source port, and a descriptor's address is never used before it
//!   was reached.
//!
//! The node itself guarantees that nothing but the handshake crosses a link
//! before Noise completes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use rand::RngCore;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use veil_core::cell::Cell;
use veil_core::content::{ContentId, Outboard, VerifiedPiece};
use veil_core::identity::{NodeId, NodeIdentity, PublisherId};
use veil_core::node::{
    CircuitId, CircuitInfo, Config, Direction, Event, GuardRecord, GuardStatus, LinkId, Millis,
    Node, PeerInfo, SearchError, SearchId, SendError, Stats,
};
use veil_core::node::{DownloadId, SessionId};
use veil_core::rating::MAX_DOWNLOAD_SIGNERS;
use veil_core::record::{SignedRecord, Unchecked};
use veil_core::rendezvous::ServiceKey;
use veil_core::search::Query;
use veil_core::transfer::{self, Bitfield, DropReason, Request, TransferMsg};

use crate::admission::{self, Pending};
use crate::net;
use crate::store::{Store, StoredPeer};

/// Most inputs queued towards the node task (readers wait when it is full).
const INPUT_QUEUE: usize = 1024;
/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;
/// QUIC idle timeout of a link (keep-alives are sent at a third of it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Network::shutdown`] waits for the last guard list to be
/// written.
const GUARD_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Relays reached within this long are dialled as extra seeds at start.
const PEER_SEED_MAX_AGE_S: u64 = 30 * 24 * 3600;
/// Most of them dialled at start (the most recently reached first).
const MAX_PEER_SEEDS: usize = 16;

/// Driver options besides the node's [`Config`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Test only: corrupt our side's channel binding, as a splicing relay
    /// would see it. Every handshake must then fail.
    #[doc(hidden)]
    pub splice_binding: bool,
    /// Where the guard list is kept across restarts (None: not kept).
    pub guard_store: Option<Arc<Mutex<Store>>>,
    /// Admission limits for inbound connections.
    pub admission: admission::Limits,
    /// Most bytes per second this node writes to all its links together
    /// (None: no limit). The daemon's counterpart of the simulator's uplink
    /// bandwidth; what waits beyond it waits in the node's queues.
    pub upload_limit: Option<u64>,
}

/// What the control API shows about the network.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Authenticated peers (never ourselves).
    pub peers: Vec<PeerInfo>,
    /// The node's counters.
    pub stats: Stats,
    /// Our own circuits, oldest first.
    pub circuits: Vec<CircuitInfo>,
    /// Our guards in order (first = primary).
    pub guards: Vec<NodeId>,
    /// Circuits we relay for others.
    pub relay_circuits: usize,
    /// Records we hold for others as an index holder.
    pub index_records: usize,
    /// Where guard selection stands (refreshed at most every
    /// [`GUARD_STATUS_INTERVAL`], and when peers or guards change).
    pub guard_status: GuardStatus,
}

/// A read-only view of a running network, for the control API.
#[derive(Debug, Clone)]
pub struct NetView {
    /// The address the UDP socket is bound to.
    pub local_addr: SocketAddr,
    /// Whether the node relays for others ([`Config::relay`]).
    pub relay: bool,
    /// How many bootstrap seeds the node was given ([`Config::bootstrap`]).
    pub seeds: usize,
    snapshot: Arc<Mutex<Snapshot>>,
    inputs: mpsc::Sender<Input>,
}

/// Reads and encodes one requested piece from a served file; `Missing`
/// if we do not serve it or the file no longer matches its outboard
/// (nothing unverified is ever sent).
fn read_piece(request: &Request, file: Option<&Served>) -> TransferMsg {
    let missing = TransferMsg::Missing { req: request.req };
    let Some(file) = file else {
        return missing;
    };
    let Ok(f) = std::fs::File::open(&file.path) else {
        tracing::warn!("a shared file cannot be opened; serving nothing of it");
        return missing;
    };
    let served = transfer::serve(request, f, &file.outboard);
    if let Some(e) = served.local_fault {
        tracing::warn!("a shared file changed on disk or cannot be read: {e}");
    }
    served.reply
}

impl NetView {
    /// Serves `files` through our service (started with `service` the
    /// first time), replacing the set served before.
    pub fn serve(&self, service: Option<ServiceKey>, files: Vec<Served>) -> anyhow::Result<()> {
        self.inputs
            .try_send(Input::Serve {
                service: service.map(Box::new),
                files,
            })
            .map_err(|_| anyhow::anyhow!("the node is busy or stopped; try again"))
    }

    /// Starts a download; updates arrive on the returned channel until
    /// [`DownloadUpdate::Done`] or [`DownloadUpdate::Failed`].
    pub fn download(
        &self,
        id: ContentId,
        size: u64,
        have: Bitfield,
    ) -> anyhow::Result<std::sync::mpsc::Receiver<DownloadUpdate>> {
        let (updates, rx) = std::sync::mpsc::channel();
        self.inputs
            .try_send(Input::Download {
                id,
                size,
                have,
                updates,
            })
            .map_err(|_| anyhow::anyhow!("the node is busy or stopped; try again"))?;
        Ok(rx)
    }

    /// Stops a download.
    pub fn cancel_download(&self, id: ContentId) -> anyhow::Result<()> {
        self.inputs
            .try_send(Input::CancelDownload { id })
            .map_err(|_| anyhow::anyhow!("the node is busy or stopped; try again"))
    }

    /// Publishes our records through our circuits (replacing the set
    /// published before) and republishes them until they expire. Records
    /// signed by `publisher` are never stored or served by this node.
    pub fn publish(
        &self,
        publisher: PublisherId,
        records: Vec<SignedRecord>,
    ) -> anyhow::Result<()> {
        self.inputs
            .try_send(Input::Publish { publisher, records })
            .map_err(|_| anyhow::anyhow!("the node is busy or stopped; try again"))
    }

    /// Publishes our user's rating through our circuits, then with our
    /// records until it expires.
    pub fn rate(&self, rating: veil_core::rating::SignedRating) -> anyhow::Result<()> {
        self.inputs
            .try_send(Input::Rate(Box::new(rating)))
            .map_err(|_| anyhow::anyhow!("the node is busy or stopped; try again"))
    }

    /// Starts a search; updates arrive on the returned channel until
    /// [`SearchUpdate::Done`] or [`SearchUpdate::Failed`].
    pub fn search(&self, query: Query) -> anyhow::Result<std::sync::mpsc::Receiver<SearchUpdate>> {
        let (updates, rx) = std::sync::mpsc::channel();
        self.inputs
            .try_send(Input::Search { query, updates })
            .map_err(|_| anyhow::anyhow!("the node is busy or stopped; try again"))?;
        Ok(rx)
    }

    /// The latest snapshot (updated by the node task after each input).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A running driver. Dropping it without [`Network::shutdown`] stops the
/// tasks abruptly.
#[derive(Debug)]
pub struct Network {
    endpoint: quinn::Endpoint,
    view: NetView,
    tasks: Vec<JoinHandle<()>>,
    /// Writes guard lists to the store; ends when the node task does.
    guard_writer: Option<JoinHandle<()>>,
    /// The node task's input.
    inputs: mpsc::Sender<Input>,
}

/// Unix time in milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

impl Network {
    /// Bind `listen` (port 0: any free port) and start driving a node with
    /// this identity. A relay advertises [`Config::advertised_addr`] if set,
    /// else the bound address if `listen` has a specific IP; with neither,
    /// no peer could use its descriptor, so it runs client-only instead
    /// (with a warning). A client-only node accepts no inbound connection
    /// at all and binds `listen`'s IP with port 0, a fresh port on every
    /// run, whatever port `listen` names: a fixed port would let a scan
    /// find the node run after run (see [`net::endpoint`]). Guards kept in
    /// [`Options::guard_store`] are restored first.
    /// Must be called inside a tokio runtime.
    pub fn start(
        identity: NodeIdentity,
        mut config: Config,
        mut listen: SocketAddr,
        options: Options,
    ) -> anyhow::Result<Network> {
        if config.relay && config.advertised_addr.is_none() && listen.ip().is_unspecified() {
            tracing::warn!(
                "listening on an unspecified address with no address to advertise: running client-only (relaying for nobody)"
            );
            config.relay = false;
        }
        if !config.relay && listen.port() != 0 {
            tracing::info!(
                configured = listen.port(),
                "client-only: binding a fresh ephemeral port instead of the configured one (it accepts nothing anyway)"
            );
            listen.set_port(0);
        }
        let endpoint = net::endpoint(listen, IDLE_TIMEOUT, config.relay)?;
        let local_addr = endpoint.local_addr()?;
        if config.advertised_addr.is_none() && !local_addr.ip().is_unspecified() {
            config.advertised_addr = Some(local_addr);
        }
        let handshake_timeout = Duration::from_millis(config.handshake_timeout_ms);
        let write_queue = config.max_link_in_flight_cells.max(1);
        let relay = config.relay;
        let pending = Pending::new(config.max_pending_handshakes * 2, options.admission);
        // A client-only node keeps its guards only: stored relays would
        // widen who sees its address at every start.
        let peer_store = options.guard_store.as_ref().filter(|_| relay);
        if let Some(store) = peer_store {
            let since = (now_ms() / 1000).saturating_sub(PEER_SEED_MAX_AGE_S);
            let stored = store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .peer_seeds(since, MAX_PEER_SEEDS)
                .context("cannot load the peers reached before")?;
            let before = config.bootstrap.len();
            for addr in stored {
                if !config.bootstrap.contains(&addr) {
                    config.bootstrap.push(addr);
                }
            }
            let added = config.bootstrap.len() - before;
            if added > 0 {
                tracing::info!(added, "relays reached before are dialled as seeds too");
            }
        }
        let seeds = config.bootstrap.len();
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let config = config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid node configuration: {e}"))?;
        let mut node = Node::new(identity, config, seed, now_ms());
        let guard_store = options.guard_store.clone();
        let (guards_tx, guard_writer) = match guard_store {
            Some(store) => {
                let stored = store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .guards()
                    .context("cannot load the guard list from the database")?;
                let restored = node.restore_guards(now_ms(), &stored);
                if !stored.is_empty() {
                    tracing::info!(restored, stored = stored.len(), "guards restored");
                }
                let (tx, rx) = watch::channel(stored.clone());
                let writer = tokio::spawn(write_guards(store, rx, stored));
                (Some(tx), Some(writer))
            }
            None => (None, None),
        };
        let index_tx = match &options.guard_store {
            Some(store) => {
                let stored = store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .index(now_ms() / 1000)
                    .context("cannot load the records held for others")?;
                let pow = node.config().pow;
                let records: Vec<SignedRecord> = stored
                    .iter()
                    .filter_map(|b| Unchecked::<SignedRecord>::decode(b).ok())
                    .filter_map(|u| u.check(now_ms() / 1000, pow).ok())
                    .collect();
                let kept = node.restore_index(now_ms(), records);
                if kept > 0 {
                    tracing::info!(kept, stored = stored.len(), "index records restored");
                }
                let (tx, rx) = watch::channel(node.index_records());
                tokio::spawn(write_index(store.clone(), rx));
                Some(tx)
            }
            None => None,
        };
        let peers_tx = peer_store.map(|store| {
            let (tx, rx) = watch::channel(Vec::new());
            tokio::spawn(write_peers(store.clone(), rx));
            tx
        });
        let (inputs, rx) = mpsc::channel(INPUT_QUEUE);
        let pacer = options.upload_limit.map(|rate| Arc::new(Pacer::new(rate)));
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            inputs: inputs.clone(),
            pacer,
            next_link: AtomicU64::new(1),
            pending,
            handshake_timeout,
            write_queue,
            options,
            piece_reads: Arc::new(tokio::sync::Semaphore::new(MAX_PIECE_READS)),
        });
        let snapshot = Arc::new(Mutex::new(Snapshot {
            peers: Vec::new(),
            stats: node.stats().clone(),
            circuits: node.circuits(),
            guards: node.guards().iter().map(|g| g.id).collect(),
            relay_circuits: node.relay_circuit_count(),
            index_records: node.index_len(),
            guard_status: node.guard_status(),
        }));
        let tasks = vec![
            tokio::spawn(run_node(
                node,
                rx,
                shared.clone(),
                snapshot.clone(),
                guards_tx,
                index_tx,
                peers_tx,
            )),
            tokio::spawn(accept_loop(shared)),
        ];
        // Our own address too stays out of info logs (a client-only
        // node's address is what it hides; `veil status` shows it).
        tracing::info!(relay, "peer links: listening (QUIC)");
        tracing::debug!(%local_addr, "peer links: bound");
        Ok(Network {
            endpoint,
            view: NetView {
                local_addr,
                relay,
                seeds,
                snapshot,
                inputs: inputs.clone(),
            },
            tasks,
            guard_writer,
            inputs,
        })
    }

    /// Sends `data` (at most one cell's worth) on one of our built
    /// circuits, within its flow-control window.
    pub async fn send_data(&self, circuit: CircuitId, data: Vec<u8>) -> anyhow::Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inputs
            .send(Input::SendData {
                circuit,
                data,
                reply,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the node task has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the node task has stopped"))?
            .map_err(anyhow::Error::from)
    }

    /// A view for the control API.
    pub fn view(&self) -> NetView {
        self.view.clone()
    }

    /// Close every link and the endpoint, write the last guard list, and
    /// wait (briefly) until peers were told.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        // The node task's end drops the guard channel's sender: the writer
        // then writes the newest list, if unwritten, and returns.
        if let Some(writer) = self.guard_writer.take()
            && tokio::time::timeout(GUARD_FLUSH_TIMEOUT, writer)
                .await
                .is_err()
        {
            tracing::warn!("the last guard list was not written in time");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(&self.guard_writer) {
            t.abort();
        }
    }
}

/// Write each new guard list the node task publishes (only the newest one
/// if several came while a write was under way), until the node task ends;
/// then write the last list if it was not written yet.
/// Saves the records held for others whenever the node task sends a new
/// snapshot (at most every [`INDEX_SAVE_INTERVAL`]).
async fn write_index(store: Arc<Mutex<Store>>, mut snapshots: watch::Receiver<Vec<SignedRecord>>) {
    loop {
        let closed = snapshots.changed().await.is_err();
        let newest = snapshots.borrow_and_update().clone();
        let store = store.clone();
        let n = newest.len();
        let result = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .save_index(&newest)
        })
        .await;
        match result {
            Ok(Ok(())) => tracing::debug!(records = n, "index records saved"),
            Ok(Err(e)) => tracing::warn!("cannot save the index records: {e:#}"),
            Err(e) => tracing::warn!("cannot save the index records: {e}"),
        }
        if closed {
            return;
        }
    }
}

/// Relays we dialled and reached (outbound links that authenticated),
/// with their descriptors, among those our peer sampler picked: the only
/// addresses worth dialling again at the next start. An inbound link's
/// address is a source port; a descriptor's address is not used before it
/// was reached; and a relay we linked to only because someone's circuit
/// extended to it is not kept (a client could otherwise fill the table
/// with relays of its choosing, and it would record others' paths).
fn reached_relays(node: &Node, peers: &[PeerInfo]) -> Vec<StoredPeer> {
    let sampled: std::collections::BTreeSet<NodeId> = node.sample().into_iter().collect();
    keep_reached(peers, &sampled, |id| {
        node.known_descriptor(id).map(|(d, _)| d.to_bytes())
    })
}

/// The rule of [`reached_relays`], apart from the node.
fn keep_reached(
    peers: &[PeerInfo],
    sampled: &std::collections::BTreeSet<NodeId>,
    descriptor: impl Fn(&NodeId) -> Option<Vec<u8>>,
) -> Vec<StoredPeer> {
    peers
        .iter()
        .filter(|p| p.relay && p.direction == Direction::Outbound)
        .filter(|p| sampled.contains(&p.node_id))
        .filter_map(|p| {
            Some(StoredPeer {
                id: p.node_id,
                descriptor: descriptor(&p.node_id)?,
                addr: p.addr,
            })
        })
        .collect()
}

/// Records the relays reached, as they change (the newest list only).
async fn write_peers(store: Arc<Mutex<Store>>, mut lists: watch::Receiver<Vec<StoredPeer>>) {
    while lists.changed().await.is_ok() {
        let newest = lists.borrow_and_update().clone();
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .save_peers(&newest, now_ms() / 1000)
        })
        .await;
        match result {
            Ok(Ok(())) => tracing::debug!("reached peers saved"),
            Ok(Err(e)) => tracing::warn!("cannot save the reached peers: {e:#}"),
            Err(e) => tracing::warn!("cannot save the reached peers: {e}"),
        }
    }
}

async fn write_guards(
    store: Arc<Mutex<Store>>,
    mut lists: watch::Receiver<Vec<GuardRecord>>,
    mut written: Vec<GuardRecord>,
) {
    loop {
        let closed = lists.changed().await.is_err();
        let newest = lists.borrow_and_update().clone();
        if newest != written {
            let store = store.clone();
            let list = newest.clone();
            let result = tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .save_guards(&list)
            })
            .await;
            match result {
                Ok(Ok(())) => {
                    tracing::debug!(guards = newest.len(), "guard list saved");
                    written = newest;
                }
                Ok(Err(e)) => tracing::warn!("cannot save the guard list: {e:#}"),
                Err(e) => tracing::warn!("cannot save the guard list: {e}"),
            }
        }
        if closed {
            return;
        }
    }
}

/// State shared by the connection tasks.
#[derive(Debug)]
struct Shared {
    endpoint: quinn::Endpoint,
    inputs: mpsc::Sender<Input>,
    next_link: AtomicU64,
    /// Inbound connections that have not opened their stream yet.
    pending: Pending,
    handshake_timeout: Duration,
    /// Capacity of each link's writer queue: the node's in-flight limit.
    write_queue: usize,
    /// The upload limit, shared by every link's writer.
    pacer: Option<Arc<Pacer>>,
    options: Options,
    /// Piece reads for downloaders at once (the rest wait their turn).
    piece_reads: Arc<tokio::sync::Semaphore>,
}

/// Most piece reads in flight at once, whatever downloaders ask (each
/// holds one 64 KiB piece and a blocking thread).
pub const MAX_PIECE_READS: usize = 16;

/// What connection tasks tell the node task.
#[derive(Debug)]
enum Input {
    LinkUp {
        link: LinkId,
        direction: Direction,
        remote: SocketAddr,
        binding: [u8; 32],
        io: LinkIo,
    },
    Data {
        link: LinkId,
        data: Bytes,
    },
    Down {
        link: LinkId,
    },
    /// The writer put this many of the link's cells into its stream.
    Sent {
        link: LinkId,
        cells: usize,
    },
    /// Send data on one of our circuits.
    SendData {
        circuit: CircuitId,
        data: Vec<u8>,
        reply: tokio::sync::oneshot::Sender<Result<(), SendError>>,
    },
    ConnectFailed {
        addr: SocketAddr,
    },
    /// Publish our records (replacing the set published before).
    Publish {
        publisher: PublisherId,
        records: Vec<SignedRecord>,
    },
    /// Publish our user's rating (then with our records).
    Rate(Box<veil_core::rating::SignedRating>),
    /// Start a search; what comes of it goes to `updates`.
    Search {
        query: Query,
        updates: std::sync::mpsc::Sender<SearchUpdate>,
    },
    /// Run our service for this content (replacing the set before).
    Serve {
        service: Option<Box<ServiceKey>>,
        files: Vec<Served>,
    },
    /// A reader's answer to a piece request.
    Answer {
        session: SessionId,
        reply: TransferMsg,
    },
    /// Download content; what comes of it goes to `updates`.
    Download {
        id: ContentId,
        size: u64,
        have: Bitfield,
        updates: std::sync::mpsc::Sender<DownloadUpdate>,
    },
    /// Stop a download.
    CancelDownload {
        id: ContentId,
    },
}

/// A file our service serves: where it is and its Merkle outboard.
#[derive(Debug, Clone)]
pub struct Served {
    /// The content id.
    pub id: ContentId,
    /// The file.
    pub path: std::path::PathBuf,
    /// Its outboard (checked against the file as pieces are read).
    pub outboard: Arc<Outboard>,
}

/// What becomes of a download started with [`NetView::download`].
#[derive(Debug)]
pub enum DownloadUpdate {
    /// It could not start.
    Failed(String),
    /// A piece, verified against the content id: write it.
    Piece(VerifiedPiece),
    /// A source was dropped (`bad`: it served a corrupt piece).
    Dropped {
        /// The source's service key.
        service: PublisherId,
        /// Why.
        reason: DropReason,
        /// The size was proven by a verified piece before (see
        /// `Event::SourceDropped`).
        proven: bool,
    },
    /// The number of sources with an open session changed to this.
    Sources(usize),
    /// Pseudonyms that signed records of the content, from the node's own
    /// searches for its providers (each once): noted so that a fake
    /// verdict on the content reaches and names them too.
    Signers(Vec<PublisherId>),
    /// Every piece is held.
    Done,
}

/// The node task's bookkeeping for what the control API started.
#[derive(Debug, Default)]
struct Tasks {
    searches: BTreeMap<SearchId, std::sync::mpsc::Sender<SearchUpdate>>,
    downloads: BTreeMap<DownloadId, DownloadTask>,
    served: BTreeMap<ContentId, Served>,
    service: Option<PublisherId>,
}

/// A download the control API started, and where its updates go.
#[derive(Debug)]
struct DownloadTask {
    id: ContentId,
    updates: std::sync::mpsc::Sender<DownloadUpdate>,
    /// The source count last sent.
    sources: usize,
    /// Signers of the content already sent (see [`DownloadUpdate::Signers`]).
    signers: std::collections::BTreeSet<PublisherId>,
}

/// What becomes of a search started with [`NetView::search`].
#[derive(Debug, Clone)]
pub enum SearchUpdate {
    /// It could not start.
    Failed(SearchError),
    /// Checked records arrived, and ratings of matching files.
    Results(Vec<SignedRecord>, Vec<veil_core::rating::SignedRating>),
    /// No more answers are taken.
    Done,
}

/// How often the records held for others are saved (when they changed).
const INDEX_SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// How stale the snapshot's guard status may get (it walks the directory,
/// so not after every input; peers or guards changing refresh it at once).
const GUARD_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The node task's handle on one link.
#[derive(Debug)]
struct LinkIo {
    conn: quinn::Connection,
    cells: mpsc::Sender<Cell>,
}

async fn run_node(
    mut node: Node,
    mut rx: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    snapshot: Arc<Mutex<Snapshot>>,
    guards_tx: Option<watch::Sender<Vec<GuardRecord>>>,
    index_tx: Option<watch::Sender<Vec<SignedRecord>>>,
    peers_tx: Option<watch::Sender<Vec<StoredPeer>>>,
) {
    let mut links: BTreeMap<LinkId, LinkIo> = BTreeMap::new();
    let mut tasks = Tasks::default();
    let mut index_saved = (tokio::time::Instant::now(), node.stats().search.stored);
    // Bootstrap dials start at once.
    node.handle_timeout(now_ms());
    let mut peers_changed = true;
    let mut guard_status_at = tokio::time::Instant::now();
    loop {
        let changes = drain(&mut node, &mut links, &shared, &mut tasks);
        report_sources(&node, &mut tasks);
        if let Some(tx) = &index_tx {
            let stored = node.stats().search.stored;
            if stored != index_saved.1 && index_saved.0.elapsed() >= INDEX_SAVE_INTERVAL {
                tx.send_replace(node.index_records());
                index_saved = (tokio::time::Instant::now(), stored);
            }
        }
        peers_changed |= changes.peers;
        let guards = changes.guards.then(|| node.guards());
        if let (Some(tx), Some(list)) = (&guards_tx, &guards) {
            tx.send_replace(list.clone());
        }
        {
            let mut s = snapshot.lock().unwrap_or_else(|e| e.into_inner());
            if peers_changed
                || guards.is_some()
                || guard_status_at.elapsed() >= GUARD_STATUS_INTERVAL
            {
                s.guard_status = node.guard_status();
                guard_status_at = tokio::time::Instant::now();
            }
            if peers_changed {
                s.peers = node.peers();
                if let Some(tx) = &peers_tx {
                    let reached = reached_relays(&node, &s.peers);
                    if !reached.is_empty() {
                        tx.send_if_modified(|old| {
                            let changed = *old != reached;
                            *old = reached;
                            changed
                        });
                    }
                }
            }
            if let Some(list) = guards {
                s.guards = list.iter().map(|g| g.id).collect();
            }
            s.stats = node.stats().clone();
            s.circuits = node.circuits();
            s.relay_circuits = node.relay_circuit_count();
            s.index_records = node.index_len();
        }
        peers_changed = false;
        let now = now_ms();
        let wait = node
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now)));
        let input = tokio::select! {
            i = rx.recv() => match i {
                Some(i) => Some(i),
                None => return,
            },
            () = sleep_opt(wait) => None,
        };
        let now = now_ms();
        match input {
            None => node.handle_timeout(now),
            Some(Input::LinkUp {
                link,
                direction,
                remote,
                binding,
                io,
            }) => {
                links.insert(link, io);
                node.handle_link_up(now, link, direction, remote, binding);
            }
            Some(Input::Data { link, data }) => node.handle_link_data(now, link, &data),
            Some(Input::Sent { link, cells }) => node.handle_link_sent(now, link, cells),
            Some(Input::SendData {
                circuit,
                data,
                reply,
            }) => {
                let _ = reply.send(node.send_data(circuit, &data));
            }
            Some(Input::Down { link }) => {
                if let Some(io) = links.remove(&link) {
                    io.conn.close(0u32.into(), b"");
                }
                node.handle_link_down(now, link);
                peers_changed = true;
            }
            Some(Input::ConnectFailed { addr }) => node.handle_connect_failed(now, addr),
            Some(Input::Publish { publisher, records }) => {
                node.set_own_publisher(publisher);
                tracing::info!(records = records.len(), "publishing the library");
                node.publish(now, records);
            }
            Some(Input::Rate(rating)) => node.rate(now, *rating),
            Some(Input::Search { query, updates }) => match node.search(now, query) {
                Ok(id) => {
                    tasks.searches.insert(id, updates);
                }
                Err(e) => {
                    let _ = updates.send(SearchUpdate::Failed(e));
                }
            },
            Some(Input::Serve { service, files }) => {
                let sid = match (service, tasks.service) {
                    (_, Some(sid)) => sid,
                    (Some(key), None) => {
                        let sid = node.add_service(now, *key);
                        tasks.service = Some(sid);
                        sid
                    }
                    (None, None) => continue,
                };
                tasks.served = files.into_iter().map(|f| (f.id, f)).collect();
                let ids: Vec<ContentId> = tasks.served.keys().copied().collect();
                tracing::info!(files = ids.len(), "serving the library through our service");
                node.provide(now, &sid, ids);
            }
            Some(Input::Answer { session, reply }) => node.serve_piece(now, session, &reply),
            Some(Input::Download {
                id,
                size,
                have,
                updates,
            }) => match node.download(now, id, size, have) {
                Ok(d) => {
                    let task = DownloadTask {
                        id,
                        updates,
                        sources: 0,
                        signers: Default::default(),
                    };
                    tasks.downloads.insert(d, task);
                }
                Err(e) => {
                    let _ = updates.send(DownloadUpdate::Failed(e.to_string()));
                }
            },
            Some(Input::CancelDownload { id }) => {
                let running: Vec<DownloadId> = tasks
                    .downloads
                    .iter()
                    .filter(|(_, t)| t.id == id)
                    .map(|(d, _)| *d)
                    .collect();
                for d in running {
                    tasks.downloads.remove(&d);
                    node.cancel_download(now, d);
                }
            }
        }
        // Inputs arriving back to back must not starve the timer.
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
    }
}

/// Tells each download's consumer how many sources it has open, when that
/// changed since it was last told.
fn report_sources(node: &Node, tasks: &mut Tasks) {
    for (d, t) in &mut tasks.downloads {
        let Some((_, _, sources)) = node.download_progress(*d) else {
            continue;
        };
        if sources != t.sources {
            t.sources = sources;
            let _ = t.updates.send(DownloadUpdate::Sources(sources));
        }
    }
}

async fn sleep_opt(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// What draining the node's outputs found changed.
#[derive(Debug, Default)]
struct Changes {
    /// The set of peers may have changed.
    peers: bool,
    /// The guard list changed.
    guards: bool,
}

/// Drain the node's outputs into the links and tasks.
fn drain(
    node: &mut Node,
    links: &mut BTreeMap<LinkId, LinkIo>,
    shared: &Arc<Shared>,
    tasks: &mut Tasks,
) -> Changes {
    let searches = &mut tasks.searches;
    let mut changed = Changes::default();
    loop {
        let mut any = false;
        while let Some(t) = node.poll_transmit() {
            any = true;
            let Some(io) = links.get(&t.link) else {
                continue;
            };
            // Never full: the node hands out no more than the queue holds
            // before the writer reports. Should it be, or should the
            // writer be gone (its stream failed, e.g. on STOP_SENDING, and
            // its cells would never be reported), the link goes.
            if let Err(e) = io.cells.try_send(t.cell) {
                let reason: &[u8] = match e {
                    mpsc::error::TrySendError::Full(_) => {
                        tracing::warn!(link = t.link.0, "link writer queue full; closing the link");
                        b"stalled"
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        tracing::debug!(link = t.link.0, "link writer gone; closing the link");
                        b"writer gone"
                    }
                };
                if let Some(io) = links.remove(&t.link) {
                    io.conn.close(0u32.into(), reason);
                }
                node.handle_link_down(now_ms(), t.link);
                changed.peers = true;
            }
        }
        while let Some(e) = node.poll_event() {
            any = true;
            match e {
                Event::Connect { addr, expected } => {
                    tracing::debug!(%addr, ?expected, "dialling");
                    tokio::spawn(dial(shared.clone(), addr));
                }
                Event::Close { link } => {
                    if let Some(io) = links.remove(&link) {
                        io.conn.close(0u32.into(), b"");
                    }
                    changed.peers = true;
                }
                Event::LinkUp {
                    link,
                    peer,
                    addr,
                    direction,
                } => {
                    tracing::info!(link = link.0, ?direction, "peer link up");
                    tracing::debug!(link = link.0, %peer, %addr, "peer link");
                    changed.peers = true;
                }
                Event::HandshakeFailed { link, error } => {
                    tracing::debug!(link = link.0, %error, "link handshake failed");
                }
                Event::GuardsChanged => {
                    tracing::debug!("guard list changed");
                    changed.guards = true;
                }
                Event::CircuitBuilt {
                    id,
                    hops,
                    build_ms,
                    probe: _,
                } => {
                    // Which relays carry our circuits is ours to keep: the
                    // hops are logged at debug only.
                    tracing::info!(circuit = id.0, hops = hops.len(), build_ms, "circuit built");
                    tracing::debug!(circuit = id.0, ?hops, "circuit path");
                }
                Event::CircuitClosed {
                    id,
                    hops,
                    built,
                    reached,
                    reason,
                } => {
                    tracing::debug!(
                        circuit = id.0,
                        hops = hops.len(),
                        reached,
                        built,
                        ?reason,
                        "circuit closed"
                    );
                }
                Event::ProbeAnswered { nonce: _ } => {
                    tracing::trace!("answered a circuit probe");
                }
                // The daemon runs no service and opens no session yet
                // (`veil get` will); a node still serves as introduction
                // and rendezvous point for others without these events.
                Event::PieceWanted {
                    session,
                    req,
                    id,
                    piece,
                } => {
                    // Read off the node task: the reader answers through
                    // the input queue.
                    let request = Request { req, id, piece };
                    let file = tasks.served.get(&id).cloned();
                    let inputs = shared.inputs.clone();
                    let reads = shared.piece_reads.clone();
                    tokio::spawn(async move {
                        let Ok(_turn) = reads.acquire_owned().await else {
                            return;
                        };
                        let read = tokio::task::spawn_blocking(move || {
                            read_piece(&request, file.as_ref())
                        });
                        if let Ok(reply) = read.await {
                            let _ = inputs.send(Input::Answer { session, reply }).await;
                        }
                    });
                }
                Event::PieceVerified { download, piece } => {
                    // Nobody takes them any more: stop the download.
                    let gone = tasks
                        .downloads
                        .get(&download)
                        .is_some_and(|t| t.updates.send(DownloadUpdate::Piece(piece)).is_err());
                    if gone {
                        tasks.downloads.remove(&download);
                        node.cancel_download(now_ms(), download);
                    }
                }
                Event::DownloadDone { download } => {
                    if let Some(t) = tasks.downloads.remove(&download) {
                        let _ = t.updates.send(DownloadUpdate::Done);
                    }
                }
                Event::SourceDropped {
                    download,
                    service,
                    reason,
                    proven,
                } => {
                    tracing::info!(?reason, "a download source was dropped");
                    if let Some(t) = tasks.downloads.get(&download) {
                        let _ = t.updates.send(DownloadUpdate::Dropped {
                            service,
                            reason,
                            proven,
                        });
                    }
                }
                Event::IntroPoints { descriptors, .. } => {
                    tracing::info!(points = descriptors.len(), "introduction points in place");
                }
                // Sessions the driver opened itself (none yet) and
                // providers of searches it started itself (none: the
                // node finds providers for its downloads).
                Event::ProvidersFound { .. }
                | Event::SessionOpened { .. }
                | Event::SessionData { .. }
                | Event::SessionClosed { .. } => {
                    tracing::debug!("rendezvous event without a consumer");
                }
                Event::CircuitData { id, data } => {
                    tracing::debug!(
                        circuit = id.0,
                        bytes = data.len(),
                        "circuit data (no stream layer yet; dropped)"
                    );
                }
                Event::RelayData { circuit, data } => {
                    tracing::debug!(
                        circuit = circuit.0,
                        bytes = data.len(),
                        "data for us as a circuit's last hop (no stream layer yet; dropped)"
                    );
                }
                Event::SearchResults {
                    search,
                    records,
                    ratings,
                } => {
                    tracing::debug!(search = search.0, records = records.len(), "search results");
                    match searches.get(&search) {
                        Some(tx) => {
                            if tx.send(SearchUpdate::Results(records, ratings)).is_err() {
                                searches.remove(&search);
                            }
                        }
                        // The node's own search for a download's providers:
                        // the records' signers go to that download.
                        // Each signer once per download, and at most
                        // MAX_DOWNLOAD_SIGNERS: an answer repeated a
                        // thousand times costs one store write at most.
                        None => {
                            for t in tasks.downloads.values_mut() {
                                let mut new = Vec::new();
                                for r in records.iter().filter(|r| r.record().content_id == t.id) {
                                    let p = r.publisher().id();
                                    if t.signers.len() < MAX_DOWNLOAD_SIGNERS && t.signers.insert(p)
                                    {
                                        new.push(p);
                                    }
                                }
                                if !new.is_empty() {
                                    let _ = t.updates.send(DownloadUpdate::Signers(new));
                                }
                            }
                        }
                    }
                }
                Event::SearchDone { search } => {
                    tracing::debug!(search = search.0, "search done");
                    if let Some(tx) = searches.remove(&search) {
                        let _ = tx.send(SearchUpdate::Done);
                    }
                }
                Event::Answered { records } => {
                    tracing::trace!(
                        records = records.len(),
                        "answered a query as an index holder"
                    );
                }
            }
        }
        if !any {
            return changed;
        }
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    // A client-only endpoint has no server config: nothing ever comes.
    while let Some(incoming) = shared.endpoint.accept().await {
        // A source address is only counted once the peer has shown it
        // receives packets there: a spoofed Initial gets a Retry (sent to
        // the forged address) and holds no slot.
        if !incoming.remote_address_validated() {
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        match shared.pending.admit(incoming.remote_address().ip()) {
            Ok(slot) => {
                tokio::spawn(inbound(shared.clone(), incoming, slot));
            }
            Err(why) => {
                tracing::debug!(?why, "inbound connection refused");
                incoming.refuse();
            }
        }
    }
}

/// Hold `slot` until the connection has opened its stream or failed.
async fn inbound(shared: Arc<Shared>, incoming: quinn::Incoming, slot: admission::Slot) {
    let quic_timeout = shared.options.admission.quic_handshake_timeout;
    let stream_timeout = shared.options.admission.first_stream_timeout;
    let opened = tokio::time::timeout(shared.handshake_timeout, async {
        let Ok(conn) = tokio::time::timeout(quic_timeout, incoming).await else {
            anyhow::bail!("no QUIC handshake within {quic_timeout:?}");
        };
        let conn = conn?;
        let binding = link_binding(&shared, &conn)?;
        let Ok(stream) = tokio::time::timeout(stream_timeout, conn.accept_bi()).await else {
            conn.close(0u32.into(), b"no stream");
            anyhow::bail!("no stream within {stream_timeout:?} of the QUIC handshake");
        };
        let (send, recv) = stream?;
        anyhow::Ok((conn, send, recv, binding))
    })
    .await;
    drop(slot);
    match opened {
        Ok(Ok((conn, send, recv, binding))) => {
            let remote = conn.remote_address();
            run_link(
                &shared,
                conn,
                Direction::Inbound,
                remote,
                binding,
                send,
                recv,
            )
            .await;
        }
        Ok(Err(e)) => tracing::debug!("inbound connection failed: {e:#}"),
        Err(_) => tracing::debug!("inbound connection timed out before its stream"),
    }
}

async fn dial(shared: Arc<Shared>, addr: SocketAddr) {
    // Give up before the node forgets the dial (it does at the handshake
    // timeout), so a late connection never arrives without its expected id.
    let opened = tokio::time::timeout(shared.handshake_timeout * 3 / 4, async {
        let conn = shared.endpoint.connect(addr, net::server_name())?.await?;
        let binding = link_binding(&shared, &conn)?;
        let (send, recv) = conn.open_bi().await?;
        anyhow::Ok((conn, send, recv, binding))
    })
    .await;
    match opened {
        Ok(Ok((conn, send, recv, binding))) => {
            run_link(
                &shared,
                conn,
                Direction::Outbound,
                addr,
                binding,
                send,
                recv,
            )
            .await;
        }
        Ok(Err(e)) => {
            tracing::debug!(%addr, "dial failed: {e:#}");
            let _ = shared.inputs.send(Input::ConnectFailed { addr }).await;
        }
        Err(_) => {
            tracing::debug!(%addr, "dial timed out");
            let _ = shared.inputs.send(Input::ConnectFailed { addr }).await;
        }
    }
}

fn link_binding(shared: &Shared, conn: &quinn::Connection) -> anyhow::Result<[u8; 32]> {
    anyhow::ensure!(net::has_veil_alpn(conn), "peer does not speak veil/1");
    let mut b = net::binding(conn)?;
    if shared.options.splice_binding {
        b[0] ^= 0xff;
    }
    Ok(b)
}

/// Run one established link until its stream or connection ends.
async fn run_link(
    shared: &Shared,
    conn: quinn::Connection,
    direction: Direction,
    remote: SocketAddr,
    binding: [u8; 32],
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let link = LinkId(shared.next_link.fetch_add(1, Ordering::Relaxed));
    let (cells, mut queue) = mpsc::channel::<Cell>(shared.write_queue);
    let acks = shared.inputs.clone();
    let pacer = shared.pacer.clone();
    let writer = tokio::spawn(async move {
        while let Some(cell) = queue.recv().await {
            if let Some(p) = &pacer {
                p.pace(cell.as_bytes().len()).await;
            }
            if send.write_all(cell.as_bytes()).await.is_err() {
                return;
            }
            // Whatever else is already waiting goes out before the
            // report, so reports come once per batch.
            let mut written = 1;
            while let Ok(cell) = queue.try_recv() {
                if let Some(p) = &pacer {
                    p.pace(cell.as_bytes().len()).await;
                }
                if send.write_all(cell.as_bytes()).await.is_err() {
                    return;
                }
                written += 1;
            }
            let report = Input::Sent {
                link,
                cells: written,
            };
            if acks.send(report).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    let io = LinkIo {
        conn: conn.clone(),
        cells,
    };
    let up = Input::LinkUp {
        link,
        direction,
        remote,
        binding,
        io,
    };
    if shared.inputs.send(up).await.is_ok() {
        while let Ok(Some(chunk)) = recv.read_chunk(READ_CHUNK, true).await {
            let data = Input::Data {
                link,
                data: chunk.bytes,
            };
            if shared.inputs.send(data).await.is_err() {
                break;
            }
        }
        let _ = shared.inputs.send(Input::Down { link }).await;
    }
    conn.close(0u32.into(), b"");
    writer.abort();
}

/// Paces the writes of every link together to a byte rate (the upload
/// limit): each write is given its slot after the previous one, with up to
/// a tenth of a second of unused time carried over as a burst.
#[derive(Debug)]
struct Pacer {
    bytes_per_sec: u64,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn pace(&self, bytes: usize) {
        let cost =
            Duration::from_nanos((bytes as u64).saturating_mul(1_000_000_000) / self.bytes_per_sec);
        let start = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let earliest = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
            let start = (*next).max(earliest);
            *next = start + cost;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn peer(i: u8, direction: Direction, relay: bool) -> PeerInfo {
        PeerInfo {
            node_id: NodeId::from_bytes([i; 32]),
            addr: SocketAddr::from(([127, i, 0, 1], 7000)),
            direction,
            since_ms: 0,
            relay,
        }
    }

    /// From a hostile client's chair: it extends circuits through our
    /// relay to relays of its own (ground ids, not in our sample), and
    /// peers that dialled us or do not relay are linked too. Only the
    /// sampled relays we dialled ourselves are kept for the next start.
    #[test]
    fn only_sampled_relays_we_dialled_are_kept_not_a_clients_extend_targets() {
        let sampled_outbound = peer(1, Direction::Outbound, true);
        let extend_target = peer(2, Direction::Outbound, true);
        let inbound = peer(3, Direction::Inbound, true);
        let client = peer(4, Direction::Outbound, false);
        let no_descriptor = peer(5, Direction::Outbound, true);
        let sampled: BTreeSet<NodeId> = [1, 3, 4, 5]
            .into_iter()
            .map(|i| NodeId::from_bytes([i; 32]))
            .collect();
        let peers = [
            sampled_outbound.clone(),
            extend_target,
            inbound,
            client,
            no_descriptor,
        ];
        let kept = keep_reached(&peers, &sampled, |id| {
            (id.as_bytes()[0] != 5).then(|| vec![id.as_bytes()[0]; 8])
        });
        assert_eq!(
            kept,
            vec![StoredPeer {
                id: sampled_outbound.node_id,
                descriptor: vec![1; 8],
                addr: sampled_outbound.addr,
            }]
        );
    }
}
