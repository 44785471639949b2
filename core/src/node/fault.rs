//! Whose fault it was: every link the node cuts and every circuit it tears
//! down says why, so that counters, logs and the simulator can tell a
//! hostile peer from an incompatible one and from our own limits.

/// Why a link was cut or a circuit torn down, and whose doing it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The peer broke the protocol or one of our limits: counted against
    /// it ([`super::Stats::peers_penalised`] for links).
    Misbehaved(Offence),
    /// The peer sent something well-formed that we do not speak (an
    /// unknown command or message): not held against it.
    Incompatible,
    /// Our own doing: a limit of ours, a timeout, rotation, or the far end
    /// of a circuit going away.
    Local(Cause),
}

/// What a misbehaving peer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Offence {
    /// More link-level and control cells per second than
    /// [`super::Config::max_link_cells_per_sec`].
    CellFlood,
    /// More relay cells for circuits the link does not have than the
    /// circuits we ended on it explain, beyond the same rate: it invents
    /// circuit ids, or keeps sending on circuits it was told are gone.
    StrayCells,
    /// Its control queue overflowed: it does not read what we send.
    NotReading,
    /// A cell or message that does not decode, or that its state does not
    /// allow (a second CREATE on one id, RELAY_EARLY backwards, an id from
    /// the wrong half of the id space).
    Malformed,
    /// A pushed descriptor that is invalid or not its own.
    BadDescriptor,
    /// It vouched for a descriptor whose signature fails.
    VouchedForgery,
    /// A relay cell that failed its integrity check (corrupted, replayed,
    /// reordered or dropped cells end here).
    BadCell,
    /// More RELAY_EARLY cells than [`crate::circuit::MAX_EXTENDS`].
    ExtendBudget,
    /// A circuit's queue overflowed: it ignored flow control.
    FlowControl,
}

/// Why we closed something ourselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// A deadline passed (a build, a probe, an idle circuit).
    Timeout,
    /// A lifetime ended.
    Rotated,
    /// A cap or rate limit of ours, or the node's queues were full.
    Resources,
    /// The next hop could not be reached or refused.
    ExtendFailed,
    /// The link under it went down, or the other side destroyed it.
    Gone,
    /// We do not relay.
    NotARelay,
    /// Room was made for an authenticated newcomer, or a link went idle.
    Evicted,
}

impl Fault {
    /// Whether the peer is to blame.
    pub fn is_peer_misbehaviour(self) -> bool {
        matches!(self, Fault::Misbehaved(_))
    }

    /// The DESTROY reason byte sent for it (opaque to the other end: it
    /// says only which broad class of failure ended the circuit).
    pub(super) fn destroy_reason(self) -> u8 {
        match self {
            Fault::Misbehaved(_) | Fault::Incompatible => wire::PROTOCOL,
            Fault::Local(Cause::ExtendFailed) => wire::EXTEND_FAILED,
            Fault::Local(Cause::Resources) => wire::RESOURCES,
            Fault::Local(Cause::Timeout | Cause::Rotated | Cause::Evicted) => wire::TIMEOUT,
            Fault::Local(Cause::NotARelay) => wire::NOT_A_RELAY,
            Fault::Local(Cause::Gone) => wire::NONE,
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Misbehaved(o) => write!(f, "peer misbehaved: {o:?}"),
            Fault::Incompatible => f.write_str("peer incompatible"),
            Fault::Local(c) => write!(f, "local: {c:?}"),
        }
    }
}

/// DESTROY reasons on the wire.
pub(super) mod wire {
    pub const NONE: u8 = 0;
    pub const PROTOCOL: u8 = 1;
    pub const EXTEND_FAILED: u8 = 2;
    pub const RESOURCES: u8 = 3;
    pub const TIMEOUT: u8 = 4;
    pub const NOT_A_RELAY: u8 = 5;
}
