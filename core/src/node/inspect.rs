//! What a driver can read of a [`Node`]: identity, counters, peers,
//! samples, circuits and guards. Nothing here changes the node.

use super::{
    CircuitId, CircuitInfo, Config, Descriptor, GuardRecord, GuardStatus, Millis, Node, NodeId,
    PeerInfo, Stats,
};

impl Node {
    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Our current signed descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Peers with an authenticated link, by node id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let dir = &self.dir;
        self.links
            .peers(|id| dir.descriptor(id).is_some_and(Descriptor::is_relay))
    }

    /// The peer-sampling output: a near-uniform sample of node ids.
    pub fn sample(&self) -> Vec<NodeId> {
        self.gossip.sample()
    }

    /// The current Brahms view.
    pub fn view(&self) -> &[NodeId] {
        self.gossip.view()
    }

    /// Verified descriptors we hold for `id`, with when we first saw it.
    pub fn known_descriptor(&self, id: &NodeId) -> Option<(&Descriptor, Millis)> {
        self.dir
            .get(id)
            .and_then(|k| k.descriptor().map(|d| (d, k.first_seen_ms)))
    }

    /// Number of descriptors held.
    pub fn known_count(&self) -> usize {
        self.dir.len()
    }

    /// Our circuits, oldest first.
    pub fn circuits(&self) -> Vec<CircuitInfo> {
        self.circ.list()
    }

    /// Our guards in order (first = primary), for the driver to persist
    /// (after [`Event::GuardsChanged`]).
    pub fn guards(&self) -> Vec<GuardRecord> {
        self.circ.guard_records()
    }

    /// Where guard selection stands at the latest input's time: what
    /// decides whether circuits can start (relays known and aged, guards
    /// picked and reachable). Walks the directory: for a status display,
    /// not for every input.
    pub fn guard_status(&self) -> GuardStatus {
        self.circ
            .guard_status(self.now_ms, &self.config, &self.dir, &self.gossip)
    }

    /// Our current second-hop set (vanguards-lite).
    pub fn vanguards(&self) -> Vec<NodeId> {
        self.circ.vanguards()
    }

    /// Remaining flow-control credit of one of our circuits.
    pub fn circuit_window(&self, id: CircuitId) -> Option<u32> {
        self.circ.window(id)
    }

    /// Circuits we currently relay.
    pub fn relay_circuit_count(&self) -> usize {
        self.circ.relay_count()
    }
}
