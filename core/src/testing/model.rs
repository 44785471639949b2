//! How long the network takes: latency, uplink bandwidth, dials.

use std::net::SocketAddr;

use super::WireId;
use crate::node::Millis;

/// The timing of a [`super::Network`]. Nodes are named by index.
pub trait Model {
    /// One-way latency from `from` to `to`.
    fn latency(&self, from: usize, to: usize) -> Millis;

    /// Time `node`'s uplink takes to serialise one cell.
    fn serialise_ms(&self, node: usize) -> Millis;

    /// Time from a node asking to dial until the dial reaches its target.
    fn dial_ms(&self) -> Millis;

    /// Time from a node asking to dial an address nobody answers until
    /// the node learns the dial failed.
    fn dial_failed_ms(&self) -> Millis;

    /// The source address the acceptor of `wire` sees, for a dialler
    /// listening at `dialler`. Default: the dialler's listening address.
    fn source_addr(&self, dialler: SocketAddr, wire: WireId) -> SocketAddr {
        let _ = wire;
        dialler
    }
}

/// No latency, unlimited bandwidth: whatever a node sends arrives at the
/// same virtual time, within the same [`super::Network::run_until`] call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Immediate;

impl Model for Immediate {
    fn latency(&self, _: usize, _: usize) -> Millis {
        0
    }

    fn serialise_ms(&self, _: usize) -> Millis {
        0
    }

    fn dial_ms(&self) -> Millis {
        0
    }

    fn dial_failed_ms(&self) -> Millis {
        0
    }
}
