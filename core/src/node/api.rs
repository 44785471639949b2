//! The types a driver sees: link handles, what the node asks of it, and
//! its counters. The daemon serialises these same types (no parallel
//! copies).

use std::net::SocketAddr;

use super::circuits::{CircuitId, CircuitStats, CloseReason, RelayCircuitId};
use super::rendezvous::{RendezvousStats, SessionEnd, SessionId};
use super::search::{SearchId, SearchStats};
use super::transfer::{DownloadId, TransferStats};
use crate::cell::Cell;
use crate::identity::NodeId;
use crate::link::HandshakeError;

/// Milliseconds: Unix time in the daemon, virtual time in the simulator.
pub type Millis = u64;

/// The driver's handle for one link. Unique per node for the node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// Who opened a link (serialised as `outbound`, `inbound`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Direction {
    /// We dialled (after a [`Event::Connect`]).
    Outbound,
    /// The peer dialled us.
    Inbound,
}

/// A cell to send on a link.
#[derive(Debug)]
pub struct Transmit {
    /// Where.
    pub link: LinkId,
    /// What (exactly [`crate::cell::CELL_SIZE`] bytes).
    pub cell: Cell,
}

/// Requests and notices for the driver.
#[derive(Debug)]
pub enum Event {
    /// Open a link to `addr` and report it with `handle_link_up(..,
    /// Direction::Outbound, addr, ..)` or `handle_connect_failed(addr)`.
    Connect {
        /// Where to dial.
        addr: SocketAddr,
        /// Whom we expect there (None for bootstrap addresses).
        expected: Option<NodeId>,
    },
    /// Close this link (the node already forgot it).
    Close {
        /// Which.
        link: LinkId,
    },
    /// A link finished its handshake.
    LinkUp {
        /// Which.
        link: LinkId,
        /// The authenticated peer.
        peer: NodeId,
        /// The transport address of the peer.
        addr: SocketAddr,
        /// Who dialled.
        direction: Direction,
    },
    /// A handshake failed; the link is being closed.
    HandshakeFailed {
        /// Which.
        link: LinkId,
        /// Why.
        error: HandshakeError,
    },
    /// The guard list changed: persist [`Node::guards`].
    GuardsChanged,
    /// One of our circuits is built: every hop answered and the probe
    /// `probe` crossed it and came back.
    CircuitBuilt {
        /// Which.
        id: CircuitId,
        /// Its relays, guard first.
        hops: Vec<NodeId>,
        /// From the start of the build to the probe's return.
        build_ms: Millis,
        /// The probe's nonce (the last hop reported it with
        /// [`Event::ProbeAnswered`]).
        probe: u64,
    },
    /// One of our circuits ended (or its build failed).
    CircuitClosed {
        /// Which.
        id: CircuitId,
        /// Its planned relays, guard first.
        hops: Vec<NodeId>,
        /// Whether it had been built.
        built: bool,
        /// Hops that had answered (equal to `hops.len()` once built).
        reached: usize,
        /// Why.
        reason: CloseReason,
    },
    /// As a relay we answered a probe.
    ProbeAnswered {
        /// The probe's nonce.
        nonce: u64,
    },
    /// Data arrived from the last hop of one of our circuits.
    CircuitData {
        /// Which.
        id: CircuitId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Checked records arrived for one of our searches.
    SearchResults {
        /// Which search.
        search: SearchId,
        /// The records (signature, proof of work, bounds and validity
        /// checked; rank them with [`crate::search::rank`]).
        records: Vec<crate::record::SignedRecord>,
        /// Ratings of matching files by other users (checked likewise;
        /// `rank` weighs them).
        ratings: Vec<crate::rating::SignedRating>,
    },
    /// Checked provider records arrived for one of our searches (an exact
    /// content-id search): services that serve the content, and their
    /// introduction points, for [`crate::node::Node::connect`].
    ProvidersFound {
        /// Which search.
        search: SearchId,
        /// The records (signature, proof of work, bounds, validity checked).
        providers: Vec<crate::provider::SignedProvider>,
    },
    /// One of our searches timed out: no more answers are taken.
    SearchDone {
        /// Which search.
        search: SearchId,
    },
    /// As an index holder we answered a query with these records (never
    /// our own: records of our own pseudonyms are never held).
    Answered {
        /// Publisher and content id of each record in the answer.
        records: Vec<(crate::identity::PublisherId, crate::content::ContentId)>,
    },
    /// One of our services has these introduction points in place (signed
    /// descriptors): publish them in its provider records.
    IntroPoints {
        /// The service.
        service: crate::identity::PublisherId,
        /// Descriptors of the introduction points.
        descriptors: Vec<Vec<u8>>,
    },
    /// A session opened: as a downloader (`inbound` false) the service
    /// joined our rendezvous point; as a service, we joined a downloader's.
    SessionOpened {
        /// Which.
        session: SessionId,
        /// The service's id.
        service: crate::identity::PublisherId,
        /// We are the service.
        inbound: bool,
    },
    /// End-to-end bytes on a session (authenticated, in order).
    SessionData {
        /// Which.
        session: SessionId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A session ended, or failed to open.
    SessionClosed {
        /// Which.
        session: SessionId,
        /// Why.
        reason: SessionEnd,
    },
    /// As a service, a downloader asks for a piece of content we
    /// provide: read it and answer with [`crate::node::Node::serve_piece`]
    /// (a [`crate::transfer::serve`] result).
    PieceWanted {
        /// The session to answer on.
        session: SessionId,
        /// The request's number.
        req: u32,
        /// The content.
        id: crate::content::ContentId,
        /// The piece index.
        piece: u64,
    },
    /// A piece of one of our downloads arrived and verified against the
    /// content id: write it.
    PieceVerified {
        /// Which download.
        download: DownloadId,
        /// The piece (only the Merkle verifier makes one).
        piece: crate::content::VerifiedPiece,
    },
    /// Every piece of a download is held (verified); its sessions close.
    DownloadDone {
        /// Which.
        download: DownloadId,
    },
    /// A source of a download was dropped. `Bad` means it served a piece
    /// that failed verification: lower the standing of that service key
    /// (never of the content record's publisher, whom a poisoner could
    /// frame).
    SourceDropped {
        /// Which download.
        download: DownloadId,
        /// The source's service.
        service: crate::identity::PublisherId,
        /// Why.
        reason: crate::transfer::DropReason,
        /// A piece of this download had verified before: the size it was
        /// started with is right, so a `Bad` source lied. Before that, the
        /// size itself (from a content record anyone can sign) may be what
        /// was wrong: blame no one.
        proven: bool,
    },
    /// As the last hop of a circuit, data arrived from its client.
    RelayData {
        /// Which.
        circuit: RelayCircuitId,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// An authenticated peer, for `veil peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id.
    pub node_id: NodeId,
    /// The transport address of the link.
    pub addr: SocketAddr,
    /// Who dialled.
    pub direction: Direction,
    /// When the handshake completed.
    pub since_ms: Millis,
    /// Whether the peer relays.
    pub relay: bool,
}

/// Counters, for status output and the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Handshakes we initiated that completed.
    pub handshakes_ok_outbound: u64,
    /// Handshakes we answered that completed.
    pub handshakes_ok_inbound: u64,
    /// Handshakes that failed (either side), timeouts included.
    pub handshakes_failed: u64,
    /// Dials the driver reported as failed.
    pub dials_failed: u64,
    /// Links closed because the peer broke the protocol or a limit.
    pub peers_penalised: u64,
    /// Descriptors refused (bad signature, PoW, freshness).
    pub descriptors_refused: u64,
    /// Pushes and pull requests over the per-round limit, ignored.
    pub over_limit_ignored: u64,
    /// Rounds completed.
    pub rounds: u64,
    /// Rounds in which Brahms saw a push flood and kept its view.
    pub floods_detected: u64,
    /// Pull requests we sent.
    pub pulls_sent: u64,
    /// Pull-reply cells we accepted.
    pub pull_replies: u64,
    /// Pushes we sent.
    pub pushes_sent: u64,
    /// Circuits (ours and relayed).
    pub circuits: CircuitStats,
    /// Publication and search.
    pub search: SearchStats,
    /// Introduction and rendezvous.
    pub rendezvous: RendezvousStats,
    /// Downloads and serving.
    pub transfer: TransferStats,
}
