//! What a run is asked to do: the scenario, and where nodes live.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use veil_core::node::Millis;

/// Virtual time at which every run starts (a fixed Unix-millisecond epoch,
/// so descriptors carry plausible timestamps).
pub const EPOCH_MS: Millis = 1_800_000_000_000;

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes in all, attackers included.
    pub nodes: usize,
    /// The seed everything derives from.
    pub seed: u64,
    /// Fraction of nodes that are flooders.
    pub flooders: f64,
    /// Virtual duration.
    pub duration_ms: Millis,
    /// Nodes in the seed list every node bootstraps from.
    pub seed_nodes: usize,
    /// Nodes join over this window (0: all at once).
    pub join_window_ms: Millis,
    /// One-way latency range (ms) between nodes.
    pub latency_ms: (u64, u64),
    /// Uplink bandwidth range, bytes per millisecond (1000 = 1 MB/s).
    pub uplink_bytes_per_ms: (u64, u64),
    /// Hops per circuit.
    pub hops: usize,
    /// Built circuits each node keeps (0: no circuits).
    pub circuits_per_node: usize,
    /// Fraction of nodes that collude (passive: they relay honestly and
    /// pool what they see). Chosen by the harness among all nodes.
    pub colluders: f64,
    /// Fraction of nodes that run client-only.
    pub client_only: f64,
    /// Nodes start building circuits at this virtual offset.
    pub circuits_start_ms: Millis,
    /// Only relays known this long become guards.
    pub guard_min_age_ms: Millis,
    /// A circuit build that has not finished after this fails.
    pub build_timeout_ms: Millis,
    /// Record what relays see in clear (observer checks).
    pub observe: bool,
    /// Fraction of nodes that turn bad at `tamper_from_ms`: from then on
    /// they mangle every relay cell they send, as `tamper` says.
    pub tamperers: f64,
    /// What tamperers do.
    pub tamper: Tamper,
    /// When tamperers start (virtual offset); at that moment every node
    /// also sends one data cell and a probe over each built circuit.
    pub tamper_from_ms: Millis,
    /// Fraction of nodes (never seeds) that crash at `crash_at_ms`.
    pub crash_fraction: f64,
    /// When they crash (virtual offset): by default just after builds
    /// start, so that many builds are under way through them.
    pub crash_at_ms: Millis,
    /// Fraction of nodes (never seeds) that forge: they answer pull
    /// requests with badly signed descriptors carrying honest relays' keys
    /// and proof of work. Drawn after every other role, so adding forgers
    /// changes no other role.
    pub forgers: f64,
    /// Share of honest relays the forgers target (drawn by the harness);
    /// the rest are a control group.
    pub forge_target_share: f64,
    /// Every relay records what it sees, and the harness measures how well
    /// relays guess their position on the circuits they relay.
    pub position_guess: bool,
    /// The search workload: files, searches, poisoners, churn (off by
    /// default: nothing of it is drawn or scheduled then).
    pub search: SearchScenario,
}

/// How exits look for records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Random walks (the protocol).
    Walk,
    /// The flood baseline with this TTL.
    Flood(u8),
}

/// The search workload of a run; see `crate::search`.
#[derive(Debug, Clone)]
pub struct SearchScenario {
    /// Files shared, each by several honest relays.
    pub files: usize,
    /// Searches, spread over the search window.
    pub searches: usize,
    /// Walks or the flood baseline.
    pub mode: SearchMode,
    /// Fraction of nodes (never seeds or adversaries) that publish decoys
    /// for the most popular files' words; they relay honestly.
    pub poisoners: f64,
    /// Fraction of nodes per virtual minute that leave and are replaced by
    /// as many new nodes (from `circuits_start_ms` on; seeds never leave).
    pub churn: f64,
    /// Sharers per file, drawn in this range (inclusive).
    pub sharers: (usize, usize),
    /// The most popular files poisoners publish decoys for.
    pub poisoned_files: usize,
    /// Publication happens this long after `circuits_start_ms`.
    pub publish_after_ms: Millis,
    /// Searches start this long after publication...
    pub search_delay_ms: Millis,
    /// ...and are spread over this window.
    pub search_window_ms: Millis,
    /// Experiments only: overrides of the node config's search walkers,
    /// walk length and publish walk length.
    pub walkers: Option<usize>,
    /// See `walkers`.
    pub walk_len: Option<u32>,
    /// See `walkers`.
    pub publish_len: Option<u32>,
    /// Downloads by honest nodes (each a search by words, the top-ranked
    /// result downloaded, then rated); see `crate::download`. With
    /// downloads, sharers run services and poisoners split in three.
    pub downloads: usize,
    /// Only this many honest nodes download (drawn once; 0: any honest
    /// node), so that each downloads several times and its ratings can
    /// act on its later downloads.
    pub downloaders: usize,
    /// Probability that a user judges a finished download wrongly (a
    /// decoy good, a real file fake).
    pub judge_error: f64,
    /// Whether users publish their ratings for others (off: each user's
    /// judgment acts on its own ranking only).
    pub share_ratings: bool,
    /// Downloads start this long after publication...
    pub download_delay_ms: Millis,
    /// ...spread over this window...
    pub download_window_ms: Millis,
    /// ...and the run goes on this long after the last one's search ended.
    pub download_time_ms: Millis,
}

impl Default for SearchScenario {
    fn default() -> Self {
        SearchScenario {
            files: 0,
            searches: 0,
            mode: SearchMode::Walk,
            poisoners: 0.0,
            churn: 0.0,
            sharers: (5, 7),
            poisoned_files: 10,
            publish_after_ms: 6_000,
            search_delay_ms: 3_000,
            search_window_ms: 15_000,
            walkers: None,
            walk_len: None,
            publish_len: None,
            downloads: 0,
            downloaders: 0,
            judge_error: 0.1,
            share_ratings: true,
            download_delay_ms: 10_000,
            download_window_ms: 150_000,
            download_time_ms: 240_000,
        }
    }
}

impl SearchScenario {
    /// Whether any of the workload is asked for.
    pub fn active(&self) -> bool {
        self.files > 0
            || self.searches > 0
            || self.downloads > 0
            || self.poisoners > 0.0
            || self.churn > 0.0
    }

    /// The node config's search parameters as this workload sets them.
    pub fn apply(&self, p: &mut veil_core::node::SearchParams) {
        if let SearchMode::Flood(ttl) = self.mode {
            p.flood_ttl = Some(ttl);
        }
        if let Some(w) = self.walkers {
            p.walkers = w;
        }
        if let Some(l) = self.walk_len {
            p.walk_len = l;
        }
        if let Some(l) = self.publish_len {
            p.publish_len = l;
        }
    }

    /// The mode's name in the output.
    pub fn mode_name(&self) -> String {
        match self.mode {
            SearchMode::Walk => "walk".into(),
            SearchMode::Flood(t) => format!("flood-ttl{t}"),
        }
    }
}

/// What a tampering relay does to the relay cells it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one bit of each.
    Corrupt,
    /// Drop each.
    Drop,
    /// Send each twice.
    Replay,
}

impl Scenario {
    /// Defaults for a sampling run.
    pub fn new(nodes: usize, seed: u64) -> Scenario {
        Scenario {
            nodes,
            seed,
            flooders: 0.0,
            duration_ms: 60_000,
            seed_nodes: 4,
            join_window_ms: 10_000,
            latency_ms: (5, 150),
            uplink_bytes_per_ms: (1_000, 12_500),
            hops: 3,
            circuits_per_node: 2,
            colluders: 0.0,
            client_only: 0.0,
            circuits_start_ms: 12_000,
            guard_min_age_ms: 5_000,
            build_timeout_ms: 10_000,
            observe: false,
            tamperers: 0.0,
            tamper: Tamper::Corrupt,
            tamper_from_ms: 22_000,
            crash_fraction: 0.0,
            crash_at_ms: 12_300,
            forgers: 0.0,
            forge_target_share: 0.25,
            position_guess: true,
            search: SearchScenario::default(),
        }
    }
}

impl Scenario {
    /// Virtual offset of publication.
    pub fn publish_at_ms(&self) -> Millis {
        self.circuits_start_ms + self.search.publish_after_ms
    }

    /// Virtual offset of the search window's start.
    pub fn searches_from_ms(&self) -> Millis {
        self.publish_at_ms() + self.search.search_delay_ms
    }

    /// Virtual offset of the download window's start.
    pub fn downloads_from_ms(&self) -> Millis {
        self.publish_at_ms() + self.search.download_delay_ms
    }

    /// The run lasts long enough for every search to have its timeout
    /// (`search_timeout_ms`) and a second more, and for every download
    /// its search and `download_time_ms`.
    pub fn extend_for_searches(&mut self, search_timeout_ms: Millis) {
        let w = &self.search;
        if w.searches > 0 {
            let end = self.searches_from_ms() + w.search_window_ms + search_timeout_ms + 1_000;
            self.duration_ms = self.duration_ms.max(end);
        }
        if w.downloads > 0 {
            let end = self.downloads_from_ms()
                + w.download_window_ms
                + search_timeout_ms
                + w.download_time_ms;
            self.duration_ms = self.duration_ms.max(end);
        }
    }
}

/// The address of node `i`: each node in its own /16, as local tests do.
pub fn node_addr(i: usize) -> SocketAddr {
    let a = 11 + (i / 256) as u8;
    let b = (i % 256) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, 0, 1)), 7171)
}
