//! The control API between `veil` (the CLI) and `veild`.
//!
//! Transport: a Unix stream socket `control.sock` inside the data dir (the dir
//! is 0700 and the socket 0600), plus a random token in `control.token`
//! (0600) that every request must carry. One connection carries one request.
//!
//! Framing: newline-delimited JSON. The client writes one [`Request`] line;
//! the daemon answers with zero or more [`Reply::Progress`] lines and then
//! exactly one final [`Reply::Ok`] or [`Reply::Error`] line, and closes.
//! Requests are bounded to [`MAX_REQUEST_BYTES`]. A client that does not
//! send its whole request line within the control timeout (`[control]
//! timeout_s`, default 30 s) gets a `bad_request` error and is dropped.

use serde::{Deserialize, Serialize};

/// Core's own state types, serialised as they are (no parallel copies).
pub use veil_core::node::{CircuitState, Direction};

/// A download's stored state, serialised as it is stored.
pub use crate::download::DownloadState;

/// Largest request line the daemon reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One request line: the token and the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Lowercase hex token read from `control.token`.
    pub token: String,
    /// What to do.
    pub command: Command,
}

/// The commands the daemon understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Node status.
    Status,
    /// This node's public identities.
    Id,
    /// Hash, index and sign a file or a directory tree (absolute path).
    Share { path: String },
    /// Stop sharing a file or every file under a directory (absolute path).
    Unshare { path: String },
    /// The shared library.
    Library,
    /// Search the local index.
    Find { words: String, limit: Option<u32> },
    /// Authenticated peers (never this node itself).
    Peers,
    /// This node's own circuits, oldest first.
    Circuits,
    /// Rate a content id found by a search: `good` raises the standing of
    /// every pseudonym that published it, `fake` (a decoy) makes them
    /// weigh nothing in this node's rankings.
    Rate { id: String, verdict: Verdict },
    /// Download a content id through rendezvous sessions with its
    /// providers, verifying every piece; resumes a download of the same id
    /// left unfinished. `out`: an absolute file path, or an existing
    /// directory to put the file in under its published name (default:
    /// the daemon's downloads directory).
    Get {
        id: String,
        #[serde(default)]
        out: Option<String>,
        #[serde(default)]
        timeout_s: Option<u32>,
    },
    /// Every registered download, oldest first ([`DownloadEntry`] each).
    Downloads,
    /// Stop fetching a download and want nothing more for now; its
    /// partial file and pieces are kept. A `veil get` waiting on it ends
    /// with a [`ErrorKind::Stopped`] error. Not resumed at daemon start.
    PauseDownload { id: String },
    /// Want a paused (or failed) download's pieces again and fetch them in
    /// the background, as a start does for active downloads.
    ResumeDownload { id: String },
    /// Stop a download if it runs and forget it: its partial file and
    /// its row go. A done download's file stays where it is.
    CancelDownload { id: String },
    /// Search the network anonymously: results stream as progress events
    /// ([`Progress::Result`]) until `timeout_s` (default
    /// [`DEFAULT_SEARCH_SECONDS`]) or the network's own search timeout.
    Search {
        words: String,
        #[serde(default)]
        timeout_s: Option<u32>,
        #[serde(default)]
        limit: Option<u32>,
    },
}

/// How a download ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GetReport {
    /// Content id, 64 lowercase hex digits.
    pub id: String,
    /// Where the verified file is.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Seconds from the request to the file in place.
    pub seconds: f64,
    /// Pieces fetched now (the rest were held from before: a resume).
    pub pieces_fetched: u64,
    /// Pieces in all.
    pub pieces: u64,
    /// Sources dropped for serving a piece that failed verification.
    pub sources_dropped_bad: u64,
    /// Sources dropped for stalling or refusing.
    pub sources_dropped_other: u64,
}

/// One registered download, as `veil downloads` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DownloadEntry {
    /// Content id, 64 lowercase hex digits.
    pub id: String,
    /// The file name from its record.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Where the file goes once complete and verified.
    pub dest: String,
    /// Where it stands: active, paused, done or failed.
    pub state: DownloadState,
    /// Verified pieces held (each durable on disk).
    pub held: u64,
    /// Pieces in all.
    pub pieces: u64,
    /// Bytes in the pieces held.
    pub held_bytes: u64,
    /// Whether a fetch is running for it now (an active download that is
    /// not running waits for `veil get`, `veil downloads resume` or the
    /// next daemon start).
    pub running: bool,
    /// Registered, Unix seconds.
    pub created: u64,
    /// Last change, Unix seconds.
    pub updated: u64,
}

/// The answer to `CancelDownload`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CancelReport {
    /// Content id, 64 lowercase hex digits.
    pub id: String,
    /// The file name from its record.
    pub name: String,
    /// A fetch was running and was stopped.
    pub stopped: bool,
    /// Verified bytes that were held and are now deleted.
    pub discarded_bytes: u64,
    /// The download had finished (its file is in place and stays; only
    /// its entry is forgotten).
    #[serde(default)]
    pub finished: bool,
}

/// A user's judgment of a content id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The file is what its records say.
    Good,
    /// A decoy.
    Fake,
}

/// The answer to a rating.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RateReport {
    /// The content id rated.
    pub id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Pseudonyms whose standing changed, 64 lowercase hex digits each.
    pub publishers: Vec<String>,
    /// Raters of this id (seen in our search results) who judged as we
    /// did, and who judged the other way (they weigh nothing from now on).
    pub raters_agreed: usize,
    /// See `raters_agreed`.
    pub raters_disagreed: usize,
    /// Whether our rating went out to the network (it needs the record a
    /// search showed, and a running node).
    pub published: bool,
}

/// How long a search runs unless asked otherwise.
pub const DEFAULT_SEARCH_SECONDS: u32 = 15;
/// The longest a search may be asked to run.
pub const MAX_SEARCH_SECONDS: u32 = 120;

/// One content id found by a search, as ranked so far.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchHit {
    /// Content id, 64 lowercase hex digits.
    pub id: String,
    /// The name most of its publishers gave it.
    pub name: String,
    /// Size in bytes, as most publishers gave it.
    pub size: u64,
    /// Distinct publisher pseudonyms that signed a record for it.
    pub publishers: usize,
    /// Its place in the ranking (1 = best) when this line was sent.
    pub rank: usize,
    /// Ranking score: the summed weight of its publishers (each pseudonym
    /// weighs more the longer this node has known it, and by the standing
    /// it earned), and of the raters who rated it good.
    pub score: f64,
    /// Other users' ratings seen for it: raters who said good, and fake.
    #[serde(default)]
    pub rated_good: usize,
    /// See `rated_good`.
    #[serde(default)]
    pub rated_fake: usize,
    /// Of its publishers, those other users' ratings (of any file) name
    /// as signers of fakes: they add nothing to the score.
    #[serde(default)]
    pub discredited: usize,
    /// Raters say fake (their weight exceeds the good raters' by a
    /// margin), or every publisher is discredited: ranked after every id
    /// that is not disputed.
    #[serde(default)]
    pub disputed: bool,
}

/// The final answer to a search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchReport {
    /// Every content id found, best first.
    pub results: Vec<SearchHit>,
    /// Checked records received (one content id may have many).
    pub records: usize,
    /// Why nothing was found, when nothing was: `no_peers`, `no_circuit`
    /// or `nothing_matched` (within the search's budget and time).
    pub reason: Option<String>,
    /// When the search could not start (`no_peers`, `no_circuit`) and the
    /// node is still not ready: its readiness line, which says what it
    /// waits for (as `veil status` leads with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    /// How long the search ran.
    pub elapsed_ms: u64,
}

/// One line of the daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// An intermediate progress event; more lines follow.
    Progress { event: Progress },
    /// The final answer.
    Ok { result: serde_json::Value },
    /// The final answer: the request failed.
    Error { error: ApiError },
}

/// Why a request failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
}

/// Kinds of API errors.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Missing or wrong token.
    Unauthorized,
    /// The request line could not be parsed.
    BadRequest,
    /// A path does not exist or cannot be read.
    BadPath,
    /// Something failed inside the daemon.
    Internal,
    /// The daemon serves as many control connections as it allows; the
    /// connection is closed unserved (try again).
    Busy,
    /// The network cannot do it now (no peers, no circuit, no provider
    /// reachable); try again later.
    Unavailable,
    /// Nothing matched (no record of a content id, no such download).
    NotFound,
    /// The download this request waited on was paused or cancelled by
    /// another request.
    Stopped,
}

impl ApiError {
    /// Build an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// Progress of a long-running command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Progress {
    /// The tree was scanned: this many files and bytes are candidates.
    Scanned { files: u64, bytes: u64 },
    /// Hashing a file; `done` bytes of all candidate bytes so far.
    Hashing { path: String, done: u64, total: u64 },
    /// A search found a content id, or more publishers for one.
    Result { hit: SearchHit },
    /// A download is under way: pieces held (verified) of all, the
    /// content's size, the bytes held and the sources sending now.
    Download {
        held: u64,
        pieces: u64,
        bytes: u64,
        #[serde(default)]
        held_bytes: u64,
        #[serde(default)]
        sources: u64,
    },
    /// A download source was dropped (`bad`: it served a corrupt piece).
    Dropped { reason: String },
}

/// Status of the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    pub version: String,
    pub pid: u32,
    pub node_id: String,
    pub publisher_id: String,
    pub data_dir: String,
    pub uptime_s: u64,
    pub testnet: bool,
    pub shared_files: u64,
    pub shared_bytes: u64,
    /// The UDP address peer links are bound to (`ip:port`).
    pub listen: String,
    /// Number of authenticated peers.
    pub peers: usize,
    /// Whether this node relays for others (false: client-only).
    #[serde(default)]
    pub relay: bool,
    /// Why this node relays for nobody (null when it relays): asked for,
    /// or no address to advertise.
    #[serde(default)]
    pub client_only_reason: Option<String>,
    /// Our circuits that are built and usable now.
    #[serde(default)]
    pub circuits_built: usize,
    /// Our circuits being built now.
    #[serde(default)]
    pub circuits_building: usize,
    /// Circuits this node relays for others now.
    #[serde(default)]
    pub relay_circuits: usize,
    /// Our guards' node ids, primary first.
    #[serde(default)]
    pub guards: Vec<String>,
    /// Records this node holds for others as an index holder.
    #[serde(default)]
    pub index_records: usize,
    /// Whether searches and downloads can start now (a circuit is built).
    #[serde(default)]
    pub ready: bool,
    /// One line: `ready: N circuits`, or `not ready: ` and what the node
    /// waits for (peers, aged relays, guards, a reachable guard, builds).
    #[serde(default)]
    pub readiness: String,
}

/// One of this node's own circuits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CircuitEntry {
    /// The daemon's handle for the circuit (unique while it runs).
    pub id: u64,
    /// Where the circuit is in its life.
    pub state: CircuitState,
    /// The relays' node ids, guard first; this node is not listed.
    pub hops: Vec<String>,
    /// Seconds since its build started.
    pub age_s: u64,
    /// Milliseconds the build took (to the end-to-end probe's return);
    /// null while building.
    pub build_ms: Option<u64>,
}

/// One authenticated peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer's node id, 64 lowercase hex digits.
    pub node_id: String,
    /// Transport address of the link, `ip:port`.
    pub address: String,
    /// Seconds since the link's handshake completed.
    pub age_s: u64,
    /// Who opened the link.
    pub direction: Direction,
    /// Whether the peer relays for others.
    pub relay: bool,
}

/// Public identities of the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdInfo {
    pub node_id: String,
    pub node_ed25519: String,
    pub node_x25519: String,
    pub publisher_id: String,
    pub publisher_ed25519: String,
    pub pow_difficulty_bits: u8,
}

/// One shared file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LibraryEntry {
    pub id: String,
    pub size: u64,
    pub name: String,
    pub path: String,
    pub keywords: Vec<String>,
    pub shared_at: u64,
    pub record_expires: u64,
}

/// Outcome of a share request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShareReport {
    /// Newly indexed files.
    pub added: Vec<LibraryEntry>,
    /// Files re-hashed because size or mtime changed.
    pub updated: Vec<LibraryEntry>,
    /// Files skipped because size and mtime were unchanged.
    pub unchanged: u64,
    /// Files that could not be shared, with the reason.
    pub failed: Vec<ShareFailure>,
}

/// A file that could not be shared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareFailure {
    pub path: String,
    pub error: String,
}

/// Outcome of an unshare request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnshareReport {
    pub removed: u64,
}

/// One local search hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindHit {
    pub id: String,
    pub size: u64,
    pub name: String,
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_progress_without_the_later_fields_still_parses() {
        let old = r#"{"phase":"download","held":3,"pieces":23,"bytes":1500000}"#;
        let p: Progress = serde_json::from_str(old).unwrap();
        assert_eq!(
            p,
            Progress::Download {
                held: 3,
                pieces: 23,
                bytes: 1_500_000,
                held_bytes: 0,
                sources: 0
            }
        );
    }

    #[test]
    fn download_commands_and_entries_round_trip() {
        let id = "ab".repeat(32);
        for command in [
            Command::Downloads,
            Command::PauseDownload { id: id.clone() },
            Command::ResumeDownload { id: id.clone() },
            Command::CancelDownload { id: id.clone() },
        ] {
            let line = serde_json::to_string(&command).unwrap();
            let back: Command = serde_json::from_str(&line).unwrap();
            assert_eq!(format!("{back:?}"), format!("{command:?}"));
        }
        assert_eq!(
            serde_json::to_value(Command::PauseDownload { id: id.clone() }).unwrap(),
            serde_json::json!({ "cmd": "pause_download", "id": id })
        );
        let entry = DownloadEntry {
            id,
            name: "a.bin".into(),
            size: 10,
            dest: "/tmp/a.bin".into(),
            state: DownloadState::Paused,
            held: 0,
            pieces: 1,
            held_bytes: 0,
            running: false,
            created: 1,
            updated: 2,
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["state"], "paused");
        assert_eq!(
            serde_json::from_value::<DownloadEntry>(json).unwrap(),
            entry
        );
    }
}
