//! One in-memory network of [`Node`]s in virtual time, for unit tests,
//! benches and the simulator (in the spirit of quinn-proto's test `Pair`).
//!
//! Compiled for this crate's tests and with the `testing` feature. It drives
//! nodes through their public API only, exactly as the daemon does:
//! `handle_*` for inputs, `poll_*` for outputs.
//!
//! # The model
//! [`Network`] is a discrete-event loop: a queue of events ordered by
//! (virtual time, sequence number), so a run replays identically. Nodes are
//! addressed by the caller's socket addresses; an [`Event::Connect`] to a
//! known, online address opens a *wire*: a reliable, ordered link between
//! the two nodes, FIFO in each direction. A [`Model`] says how long things
//! take: one-way latency per node pair, the time each node's uplink needs
//! to serialise a cell, how long a dial takes to succeed or fail.
//! [`Immediate`] takes no time at all (cells are delivered within the same
//! [`Network::run_until`] call); the simulator plugs in a latency and
//! bandwidth model.
//!
//! A cell a node hands over ([`Node::poll_transmit`]) occupies the sender's
//! uplink for its serialisation time; when it has left the uplink the node
//! is told ([`Node::handle_link_sent`]), and it arrives one latency later.
//!
//! # Call order
//! 1. Add nodes ([`Network::add_node`]) and bring them online
//!    ([`Network::start`]); schedule events of your own
//!    ([`Network::schedule`]).
//! 2. Call [`Network::run_until`] in a loop: it processes network events
//!    and returns each of your events as it falls due, with the clock at
//!    its time. Handle it (you may touch nodes through
//!    [`Network::nodes_mut`], then call [`Network::drain`] on each node you
//!    gave input to) and call `run_until` again.
//! 3. [`Hooks`] see every cell sent and delivered and every [`Event`] a
//!    node emits, inside the same loop: adversaries and metrics plug in
//!    there.
//!
//! [`TestNet`] wraps all this for core's unit tests: standard identities,
//! a tamper closure and a record of every event.

mod model;
mod network;
mod test_net;
#[cfg(test)]
mod tests;

use crate::cell::Cell;
use crate::node::{Event, LinkId, Millis, Node, Observation};

pub use model::{Immediate, Model};
pub use network::{Network, WireId, WireInfo};
pub use test_net::{T0, Tamper, TestNet, test_addr, test_node};

/// What becomes of a cell a node sent (decided by [`Hooks::on_transmit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry it as it is (after any change the hook made to it).
    Deliver,
    /// Lose it: the peer never sees it (the sender still learns it was
    /// written).
    Drop,
    /// Carry it twice.
    Replay,
}

/// What becomes of a cell arriving at a node (decided by
/// [`Hooks::on_deliver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Hand it to the node.
    ToNode,
    /// The hook consumed it: the node never sees it.
    Consumed,
}

/// What a hook may do while the network is in the middle of an event: read
/// the nodes, and send cells (they enter the network once the hook
/// returns, in order, as if the named node had sent them).
#[derive(Debug)]
pub struct Control<'a> {
    pub(crate) now: Millis,
    pub(crate) nodes: &'a [Node],
    pub(crate) out: Vec<(usize, LinkId, Cell)>,
}

impl Control<'_> {
    /// The current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Every node, by index.
    pub fn nodes(&self) -> &[Node] {
        self.nodes
    }

    /// Sends `cell` from `node` on its `link`, through the sender's uplink
    /// and [`Hooks::on_transmit`], like a cell the node sent itself.
    pub fn send(&mut self, node: usize, link: LinkId, cell: Cell) {
        self.out.push((node, link, cell));
    }
}

/// The owner's view into the loop: adversaries, metrics, test probes.
/// Every method has a default that does nothing special.
pub trait Hooks {
    /// The channel binding both ends of `wire` get when it comes up
    /// (`dialler` to `acceptor`). Default: a fixed value.
    fn binding(&mut self, wire: WireId, dialler: usize, acceptor: usize) -> [u8; 32] {
        let _ = (wire, dialler, acceptor);
        [1; 32]
    }

    /// A cell `from` sent on `link` to `to` is about to enter the network:
    /// the hook may change it, drop it or duplicate it.
    fn on_transmit(
        &mut self,
        now: Millis,
        from: usize,
        to: usize,
        link: LinkId,
        cell: &mut Cell,
    ) -> Verdict {
        let _ = (now, from, to, link, cell);
        Verdict::Deliver
    }

    /// A cell from `from` arrives at `to` on `to`'s `link`: the hook may
    /// consume it and answer through `ctl`.
    fn on_deliver(
        &mut self,
        ctl: &mut Control<'_>,
        to: usize,
        link: LinkId,
        from: usize,
        cell: &Cell,
    ) -> Delivery {
        let _ = (ctl, to, link, from, cell);
        Delivery::ToNode
    }

    /// Node `node` emitted `event` (after the network acted on it, if it
    /// was a dial or a close).
    fn on_event(&mut self, now: Millis, node: usize, event: Event) {
        let _ = (now, node, event);
    }

    /// Node `closer` closed `wire` (`info` as it stands after the close).
    fn on_close(&mut self, now: Millis, wire: WireId, closer: usize, info: WireInfo) {
        let _ = (now, wire, closer, info);
    }

    /// Node `node` recorded what it saw as a relay (with observing on).
    fn on_observations(&mut self, node: usize, seen: Vec<Observation>) {
        let _ = (node, seen);
    }
}

/// No hooks: the network as it is.
impl Hooks for () {}
