//! What a part may do besides changing its own state: send cells, emit
//! events, and ask the node for something another part owns.
//!
//! Parts never call each other. A part that needs another part to act (cut
//! a link, destroy a circuit whose queue overflowed, blame the sender of a
//! forgery) pushes an [`Action`]; [`super::Node`] routes the actions once
//! the part returns, until none are left.

use std::collections::VecDeque;

use rand_chacha::ChaCha20Rng;

use super::directory::Refusal;
use super::outbox::{self, Outbox, Push};
use super::timers::TimerTable;
use super::{Config, Event, Fault, LinkId, Millis, Stats, Transmit};
use crate::cell::Cell;
use crate::identity::NodeIdentity;

/// A request from one part for the node to route.
#[derive(Debug)]
pub(super) enum Action {
    /// Cut this link; the fault says whose doing it was.
    Cut(LinkId, Fault),
    /// Circuit `cid`'s queue on this link overflowed: destroy it alone.
    OverQueue(LinkId, u32),
    /// A gossiped descriptor failed its check.
    Refused(Refusal),
    /// As the exit of relayed circuit `k`, a search message from its
    /// client (for the search part).
    AtExit(u64, Vec<u8>),
    /// A search message from our circuit's exit (for the search part).
    AtClient(super::CircuitId, Vec<u8>),
    /// Send a search message down relayed circuit `k` to its client.
    ToClient(u64, Vec<u8>),
    /// News for the rendezvous part.
    Rend(RendIn),
    /// Build one of our circuits for `purpose` (ending at `target`, a
    /// signed descriptor, if given); the rendezvous part hears which
    /// circuit it became under `token`.
    BuildFor {
        token: u64,
        purpose: super::circuits::Purpose,
        target: Option<Vec<u8>>,
    },
    /// Send a rendezvous request to the last hop of our circuit `k`.
    RendToHop(u64, Vec<u8>),
    /// As the last hop of relayed circuit `k`, send a rendezvous answer to
    /// its client.
    RendToClient(u64, Vec<u8>),
    /// As a rendezvous point, splice relayed circuits `waiting` (it left
    /// the cookie) and `joining`; then pass `handshake` (msg2) to the
    /// waiting one and acknowledge the joining one, or refuse it if the
    /// splice failed.
    Splice {
        waiting: u64,
        joining: u64,
        handshake: Vec<u8>,
    },
    /// Close our circuit `k`.
    CloseOwn(u64),
    /// Probe our circuit `k` end to end (it closes if no answer comes).
    ProbeOwn(u64),
    /// News of a session the transfer part owns.
    ToTransfer(TransferIn),
    /// Close one of our sessions (the transfer part is done with it).
    CloseSession(super::rendezvous::SessionId),
    /// Providers found by one of our searches (for the transfer part if
    /// the search is one of its own, else for the driver).
    Providers(super::SearchId, Vec<crate::provider::SignedProvider>),
    /// Our service's provider records, for the search part to publish
    /// (replacing the last set; none withdraws them). The service is ours:
    /// never held or answered by us.
    Provide(
        crate::identity::PublisherId,
        Vec<crate::provider::SignedProvider>,
    ),
}

/// What the rendezvous part tells the transfer part about the sessions it
/// owns.
#[derive(Debug)]
pub(super) enum TransferIn {
    Opened {
        session: super::rendezvous::SessionId,
        inbound: bool,
    },
    Data {
        session: super::rendezvous::SessionId,
        bytes: Vec<u8>,
    },
    Closed {
        session: super::rendezvous::SessionId,
    },
}

/// What the circuit part tells the rendezvous part.
#[derive(Debug)]
pub(super) enum RendIn {
    /// One of our circuits with a purpose is built; its last hop.
    Built {
        circuit: u64,
        last_hop: crate::identity::NodeId,
        descriptor: Vec<u8>,
    },
    /// One of our circuits with a purpose closed.
    Closed { circuit: u64 },
    /// A rendezvous answer from the last hop of our circuit.
    FromHop { circuit: u64, bytes: Vec<u8> },
    /// Data on one of our meet or join circuits.
    Data { circuit: u64, bytes: Vec<u8> },
    /// As the last hop of relayed circuit `circuit`, a rendezvous request.
    AtHop { circuit: u64, bytes: Vec<u8> },
    /// A relayed circuit is gone.
    RelayGone { circuit: u64 },
}

/// The node's outputs: cells (through the outbox), events for the driver,
/// and actions for the node.
#[derive(Debug)]
pub(super) struct Out {
    outbox: Outbox,
    limits: outbox::Limits,
    events: VecDeque<Event>,
    actions: VecDeque<Action>,
    /// The time of the input being handled.
    now: Millis,
}

impl Out {
    pub(super) fn new(config: &Config) -> Out {
        Out {
            outbox: Outbox::default(),
            limits: limits(config),
            events: VecDeque::new(),
            actions: VecDeque::new(),
            now: 0,
        }
    }

    /// Sets the time of the input being handled, and the queue limits
    /// (read from the configuration at every input, so a changed limit
    /// applies at once).
    pub(super) fn set_now(&mut self, now: Millis, config: &Config) {
        self.now = now;
        self.limits = limits(config);
    }

    /// Queues `cell` on `link`. A full queue becomes an action: the peer
    /// does not read (its link is cut), or one circuit broke flow control
    /// (it alone is destroyed).
    pub(super) fn send(&mut self, link: LinkId, cell: Cell) {
        self.outbox.touch(link, self.now);
        let cid = cell.circ_id();
        match self.outbox.push(link, cell, &self.limits) {
            Push::Queued | Push::NoLink => {}
            Push::LinkFull => self.act(Action::Cut(
                link,
                Fault::Misbehaved(super::Offence::NotReading),
            )),
            Push::CircuitFull => self.act(Action::OverQueue(link, cid)),
        }
    }

    /// Emits an event for the driver.
    pub(super) fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    /// Asks the node to route an action.
    pub(super) fn act(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    pub(super) fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    pub(super) fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(super) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop(&self.limits)
    }

    /// A link opened: it gets a queue.
    pub(super) fn open(&mut self, link: LinkId) {
        self.outbox.open(link);
    }

    pub(super) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub(super) fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}

fn limits(config: &Config) -> outbox::Limits {
    outbox::Limits {
        max_in_flight: config.max_link_in_flight_cells,
        max_circuit_cells: config.max_circuit_queue_cells,
        max_control_cells: config.max_queued_cells,
    }
}

/// The narrow context a part gets: the time, the configuration, our
/// identity, the RNG, the outputs and the counters. Never the node.
pub(super) struct Ctx<'a> {
    pub(super) now: Millis,
    pub(super) config: &'a Config,
    pub(super) identity: &'a NodeIdentity,
    pub(super) rng: &'a mut ChaCha20Rng,
    pub(super) out: &'a mut Out,
    pub(super) stats: &'a mut Stats,
    pub(super) timers: &'a mut TimerTable,
}

impl Ctx<'_> {
    /// Queues a cell (see [`Out::send`]).
    pub(super) fn send(&mut self, link: LinkId, cell: Cell) {
        self.out.send(link, cell);
    }

    /// Emits an event for the driver.
    pub(super) fn event(&mut self, e: Event) {
        self.out.event(e);
    }

    /// Asks the node to cut `link`.
    pub(super) fn cut(&mut self, link: LinkId, fault: Fault) {
        self.out.act(Action::Cut(link, fault));
    }
}
