//! The event loop: nodes, wires, timers and the event queue.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::convert::Infallible;
use std::net::SocketAddr;

use super::{Control, Delivery, Hooks, Model, Verdict};
use crate::cell::Cell;
use crate::node::{Direction, Event, LinkId, Millis, Node};

/// Names one wire (one link between two nodes) for the network's life.
pub type WireId = u64;

/// What the network does next.
#[derive(Debug)]
enum Kind<C> {
    /// A dial from `from` reaches `addr` (or fails).
    Connect { from: usize, addr: SocketAddr },
    /// Both ends of a new wire learn it is open.
    LinkUp { wire: WireId },
    /// One cell arrives at one end of a wire.
    Deliver {
        wire: WireId,
        to_a: bool,
        cell: Cell,
    },
    /// A link closes at one end.
    LinkDown { node: usize, link: LinkId },
    /// A dial failed.
    ConnectFailed { node: usize, addr: SocketAddr },
    /// A node's timer.
    Timer { node: usize, generation: u64 },
    /// A cell left a node's uplink: the node may hand over the next one
    /// for that link.
    Sent { node: usize, link: LinkId },
    /// The owner's event.
    Custom(C),
}

/// A queued event, ordered by (time, sequence number) only: the earliest
/// first, and among equal times the first scheduled.
#[derive(Debug)]
struct Entry<C> {
    at: Millis,
    seq: u64,
    kind: Kind<C>,
}

impl<C> PartialEq for Entry<C> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<C> Eq for Entry<C> {}

impl<C> PartialOrd for Entry<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<C> Ord for Entry<C> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse, so the earliest pops first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One link between node `a` (the dialler) and node `b`.
#[derive(Debug, Clone)]
struct Wire {
    a: usize,
    a_link: LinkId,
    b: usize,
    b_link: LinkId,
    a_up: bool,
    b_up: bool,
    closed: bool,
    failed: bool,
    opened_ms: Millis,
    /// Arrival time of the last cell queued in each direction (FIFO).
    last_to_a: Millis,
    last_to_b: Millis,
}

/// What the network knows of one wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireInfo {
    /// The dialler and its link.
    pub a: (usize, LinkId),
    /// The acceptor and its link.
    pub b: (usize, LinkId),
    /// The dialler reported the link up (its handshake completed).
    pub a_up: bool,
    /// The acceptor reported the link up.
    pub b_up: bool,
    /// An end closed it.
    pub closed: bool,
    /// Closed by an end whose handshake had not completed (a refusal, a
    /// failed check or a timeout).
    pub failed: bool,
    /// When it was opened.
    pub opened_ms: Millis,
}

impl From<&Wire> for WireInfo {
    fn from(w: &Wire) -> WireInfo {
        WireInfo {
            a: (w.a, w.a_link),
            b: (w.b, w.b_link),
            a_up: w.a_up,
            b_up: w.b_up,
            closed: w.closed,
            failed: w.failed,
            opened_ms: w.opened_ms,
        }
    }
}

/// The network's bookkeeping for one node.
#[derive(Debug)]
struct Slot {
    addr: SocketAddr,
    online: bool,
    /// Offline without anyone noticing: cells to it vanish.
    frozen: bool,
    timer_generation: u64,
    timer_at: Option<Millis>,
    uplink_free_ms: Millis,
    /// The node's link ids -> wire.
    links: BTreeMap<LinkId, WireId>,
    next_link: u64,
}

/// Nodes, wires between them and one event queue; see the module docs.
/// `M` times the network, `C` is the owner's own event type.
#[derive(Debug)]
pub struct Network<M, C = Infallible> {
    model: M,
    nodes: Vec<Node>,
    slots: Vec<Slot>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Entry<C>>,
    seq: u64,
    wires: BTreeMap<WireId, Wire>,
    next_wire: WireId,
    /// Held outgoing cells of stalled links.
    stalled: BTreeMap<(usize, LinkId), Vec<Cell>>,
    splice: bool,
    now: Millis,
    events: u64,
    cells_delivered: u64,
}

impl<M: Model, C> Network<M, C> {
    /// An empty network whose clock stands at `now`.
    pub fn new(model: M, now: Millis) -> Self {
        Network {
            model,
            nodes: Vec::new(),
            slots: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            wires: BTreeMap::new(),
            next_wire: 1,
            stalled: BTreeMap::new(),
            splice: false,
            now,
            events: 0,
            cells_delivered: 0,
        }
    }

    /// Adds `node`, reachable at `addr`, offline until [`Network::start`].
    /// Returns its index.
    pub fn add_node(&mut self, addr: SocketAddr, node: Node) -> usize {
        let i = self.nodes.len();
        self.nodes.push(node);
        self.slots.push(Slot {
            addr,
            online: false,
            frozen: false,
            timer_generation: 0,
            timer_at: None,
            uplink_free_ms: 0,
            links: BTreeMap::new(),
            next_link: 1,
        });
        self.by_addr.insert(addr, i);
        i
    }

    /// Makes the acceptor of every later link get a channel binding that
    /// differs from the dialler's (a spliced link: no handshake may
    /// complete).
    pub fn splice_bindings(&mut self, on: bool) {
        self.splice = on;
    }

    /// The timing model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Sets the clock to `now`, forwards or back (a driver's clock may
    /// step back). Events already queued keep their times.
    pub fn set_now(&mut self, now: Millis) {
        self.now = now;
    }

    /// Every node, by index.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every node, to give one input directly; call [`Network::drain`] on
    /// it afterwards so that its outputs enter the network.
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// Node `i`'s address, if there is such a node.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.slots.get(i).map(|s| s.addr)
    }

    /// Whether node `i` is online (started and neither killed nor frozen).
    pub fn is_online(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.online)
    }

    /// Events processed so far (the owner's included).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Cells that reached a node's end of an open wire so far.
    pub fn cells_delivered(&self) -> u64 {
        self.cells_delivered
    }

    /// Every wire ever opened, in order.
    pub fn wires(&self) -> impl Iterator<Item = (WireId, WireInfo)> + '_ {
        self.wires.iter().map(|(id, w)| (*id, WireInfo::from(w)))
    }

    /// Node `i`'s open links: (its link, the peer, the peer's link, the
    /// wire), in link order.
    pub fn links(&self, i: usize) -> Vec<(LinkId, usize, LinkId, WireInfo)> {
        let Some(s) = self.slots.get(i) else {
            return Vec::new();
        };
        s.links
            .iter()
            .filter_map(|(l, wire)| {
                let w = self.wires.get(wire)?;
                let (peer, pl) = if w.a == i && w.a_link == *l {
                    (w.b, w.b_link)
                } else {
                    (w.a, w.a_link)
                };
                Some((*l, peer, pl, WireInfo::from(w)))
            })
            .collect()
    }

    /// The other end of node `i`'s `link`: (peer, peer's link).
    pub fn peer_of(&self, i: usize, link: LinkId) -> Option<(usize, LinkId)> {
        let w = self.wires.get(self.slots.get(i)?.links.get(&link)?)?;
        Some(if w.a == i && w.a_link == link {
            (w.b, w.b_link)
        } else {
            (w.a, w.a_link)
        })
    }

    /// Node `i`'s newest open link to node `j`.
    pub fn link_to(&self, i: usize, j: usize) -> Option<LinkId> {
        self.links(i)
            .into_iter()
            .filter(|(_, peer, _, w)| *peer == j && !w.closed)
            .map(|(l, ..)| l)
            .next_back()
    }

    /// Schedules the owner's `event` at `at`; [`Network::run_until`]
    /// returns it when it falls due.
    pub fn schedule(&mut self, at: Millis, event: C) {
        self.push(at, Kind::Custom(event));
    }

    fn push(&mut self, at: Millis, kind: Kind<C>) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            kind,
        });
    }

    /// Runs the network until `until`. Returns `Some` with the owner's
    /// next event as it falls due (the clock stands at its time; call
    /// again to go on), or `None` once nothing is due by `until` (the
    /// clock then stands at `until`, even if that is earlier than before:
    /// a driver's clock may step back).
    pub fn run_until<H: Hooks>(&mut self, until: Millis, hooks: &mut H) -> Option<C> {
        while self.queue.peek().is_some_and(|e| e.at <= until) {
            let Some(e) = self.queue.pop() else {
                break;
            };
            self.now = e.at;
            self.events += 1;
            if let Kind::Custom(c) = e.kind {
                return Some(c);
            }
            self.handle(e.kind, hooks);
        }
        self.now = until;
        None
    }

    /// Brings node `i` online: it runs its timer at once and its outputs
    /// enter the network.
    pub fn start<H: Hooks>(&mut self, i: usize, hooks: &mut H) {
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        s.online = true;
        s.frozen = false;
        self.nodes[i].handle_timeout(self.now);
        self.drain(i, hooks);
    }

    /// Takes node `i` offline: its links drop at both ends (its peers
    /// learn it one latency later).
    pub fn kill<H: Hooks>(&mut self, i: usize, hooks: &mut H) {
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        s.online = false;
        let links: Vec<LinkId> = s.links.keys().copied().collect();
        for l in links {
            self.close_link(i, l, hooks);
            self.nodes[i].handle_link_down(self.now, l);
        }
    }

    /// Node `i` stops dead without anyone noticing: its links stay open,
    /// dials to it fail, cells to it vanish, its timer no longer runs.
    pub fn freeze(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.online = false;
            s.frozen = true;
        }
    }

    /// Opens a wire from `a` to `b` at once (both ends get a link id now)
    /// and tells both ends it is up at `at`, as if `a` had dialled `b`.
    pub fn open_wire(&mut self, a: usize, b: usize, at: Millis) -> Option<WireId> {
        if a >= self.slots.len() || b >= self.slots.len() {
            return None;
        }
        let wire = self.wire(a, b);
        self.push(at, Kind::LinkUp { wire });
        Some(wire)
    }

    /// Holds node `i`'s outgoing cells on `link`: taken from the node but
    /// neither delivered nor reported written until [`Network::release`].
    pub fn stall(&mut self, i: usize, link: LinkId) {
        self.stalled.entry((i, link)).or_default();
    }

    /// Links currently stalled.
    pub fn stalled(&self) -> Vec<(usize, LinkId)> {
        self.stalled.keys().copied().collect()
    }

    /// Releases a stalled link: its held cells enter the network in order
    /// (and are reported written as they leave the uplink).
    pub fn release<H: Hooks>(&mut self, i: usize, link: LinkId, hooks: &mut H) {
        let Some(held) = self.stalled.remove(&(i, link)) else {
            return;
        };
        for cell in held {
            self.transmit(i, link, cell, hooks);
        }
    }

    /// Sends `cell` from node `i` on its `link` as if the node had sent it
    /// (through its uplink and [`Hooks::on_transmit`]).
    pub fn send<H: Hooks>(&mut self, i: usize, link: LinkId, cell: Cell, hooks: &mut H) {
        self.transmit(i, link, cell, hooks);
    }

    fn handle<H: Hooks>(&mut self, kind: Kind<C>, hooks: &mut H) {
        let now = self.now;
        match kind {
            Kind::Timer { node, generation } => {
                let s = &mut self.slots[node];
                if !s.online || s.timer_generation != generation {
                    return;
                }
                s.timer_at = None;
                self.nodes[node].handle_timeout(now);
                self.drain(node, hooks);
            }
            Kind::Connect { from, addr } => match self.by_addr.get(&addr).copied() {
                Some(to) if self.slots[to].online && to != from => {
                    let wire = self.wire(from, to);
                    self.push(now, Kind::LinkUp { wire });
                }
                _ => {
                    let back = now + self.model.dial_failed_ms();
                    self.push(back, Kind::ConnectFailed { node: from, addr });
                }
            },
            Kind::LinkUp { wire } => {
                let Some(w) = self.wires.get(&wire) else {
                    return;
                };
                let (a, al, b, bl) = (w.a, w.a_link, w.b, w.b_link);
                let binding = hooks.binding(wire, a, b);
                let b_binding = if self.splice {
                    binding.map(|x| x ^ 0x03)
                } else {
                    binding
                };
                let b_addr = self.slots[b].addr;
                let a_src = self.model.source_addr(self.slots[a].addr, wire);
                self.nodes[a].handle_link_up(now, al, Direction::Outbound, b_addr, binding);
                self.nodes[b].handle_link_up(now, bl, Direction::Inbound, a_src, b_binding);
                self.drain(a, hooks);
                self.drain(b, hooks);
            }
            Kind::Deliver { wire, to_a, cell } => {
                let Some(w) = self.wires.get(&wire) else {
                    return;
                };
                if w.closed {
                    return;
                }
                let (node, link, from) = if to_a {
                    (w.a, w.a_link, w.b)
                } else {
                    (w.b, w.b_link, w.a)
                };
                if self.slots[node].frozen {
                    return;
                }
                self.cells_delivered += 1;
                let mut ctl = Control {
                    now,
                    nodes: &self.nodes,
                    out: Vec::new(),
                };
                let delivery = hooks.on_deliver(&mut ctl, node, link, from, &cell);
                for (n, l, c) in std::mem::take(&mut ctl.out) {
                    self.transmit(n, l, c, hooks);
                }
                if delivery == Delivery::Consumed {
                    return;
                }
                self.nodes[node].handle_link_data(now, link, cell.as_bytes());
                self.drain(node, hooks);
            }
            Kind::LinkDown { node, link } => {
                self.slots[node].links.remove(&link);
                self.nodes[node].handle_link_down(now, link);
                self.drain(node, hooks);
            }
            Kind::ConnectFailed { node, addr } => {
                self.nodes[node].handle_connect_failed(now, addr);
                self.drain(node, hooks);
            }
            Kind::Sent { node, link } => {
                if !self.slots[node].online {
                    return;
                }
                self.nodes[node].handle_link_sent(now, link, 1);
                self.drain(node, hooks);
            }
            Kind::Custom(_) => {}
        }
    }

    /// A new wire from `a` to `b`, with a fresh link id at each end.
    fn wire(&mut self, a: usize, b: usize) -> WireId {
        let wire = self.next_wire;
        self.next_wire += 1;
        let al = LinkId(self.slots[a].next_link);
        self.slots[a].next_link += 1;
        let bl = LinkId(self.slots[b].next_link);
        self.slots[b].next_link += 1;
        self.slots[a].links.insert(al, wire);
        self.slots[b].links.insert(bl, wire);
        self.wires.insert(
            wire,
            Wire {
                a,
                a_link: al,
                b,
                b_link: bl,
                a_up: false,
                b_up: false,
                closed: false,
                failed: false,
                opened_ms: self.now,
                last_to_a: 0,
                last_to_b: 0,
            },
        );
        wire
    }

    /// Moves node `i`'s outputs into the network (cells, dials, closes),
    /// hands its events and observations to `hooks` and re-arms its timer.
    /// Call it after giving node `i` an input directly.
    pub fn drain<H: Hooks>(&mut self, i: usize, hooks: &mut H) {
        if i >= self.nodes.len() {
            return;
        }
        let now = self.now;
        while let Some(t) = self.nodes[i].poll_transmit() {
            if let Some(held) = self.stalled.get_mut(&(i, t.link)) {
                held.push(t.cell);
                continue;
            }
            self.transmit(i, t.link, t.cell, hooks);
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            match &ev {
                Event::Connect { addr, .. } => {
                    let at = now + self.model.dial_ms();
                    self.push(
                        at,
                        Kind::Connect {
                            from: i,
                            addr: *addr,
                        },
                    );
                }
                Event::Close { link } => self.close_link(i, *link, hooks),
                Event::LinkUp { link, .. } => {
                    if let Some(&wire) = self.slots[i].links.get(link)
                        && let Some(w) = self.wires.get_mut(&wire)
                    {
                        if w.a == i && w.a_link == *link {
                            w.a_up = true;
                        } else {
                            w.b_up = true;
                        }
                    }
                }
                _ => {}
            }
            hooks.on_event(now, i, ev);
        }
        let seen = self.nodes[i].take_observations();
        if !seen.is_empty() {
            hooks.on_observations(i, seen);
        }
        let s = &mut self.slots[i];
        if let Some(t) = self.nodes[i].poll_timeout() {
            let t = t.max(now);
            if s.timer_at.is_none_or(|cur| t < cur) || s.timer_at.is_some_and(|cur| cur < now) {
                s.timer_generation += 1;
                s.timer_at = Some(t);
                let generation = s.timer_generation;
                self.push(
                    t,
                    Kind::Timer {
                        node: i,
                        generation,
                    },
                );
            }
        }
    }

    /// Drains every node, in index order.
    pub fn drain_all<H: Hooks>(&mut self, hooks: &mut H) {
        for i in 0..self.nodes.len() {
            self.drain(i, hooks);
        }
    }

    fn transmit<H: Hooks>(&mut self, from: usize, link: LinkId, cell: Cell, hooks: &mut H) {
        let Some(&wire) = self.slots.get(from).and_then(|s| s.links.get(&link)) else {
            return;
        };
        let Some(w) = self.wires.get(&wire) else {
            return;
        };
        if w.closed {
            return;
        }
        let to = if w.b == from && w.b_link == link {
            w.a
        } else {
            w.b
        };
        let mut cell = cell;
        let copies = match hooks.on_transmit(self.now, from, to, link, &mut cell) {
            Verdict::Deliver => 1,
            Verdict::Drop => 0,
            Verdict::Replay => 2,
        };
        for _ in 1..copies {
            self.send_cell(from, link, wire, cell.clone());
        }
        if copies > 0 {
            self.send_cell(from, link, wire, cell);
        }
        // The node learns the cell is written once it has left its uplink.
        let at = self.slots[from].uplink_free_ms.max(self.now);
        self.push(at, Kind::Sent { node: from, link });
    }

    /// Puts one cell on a wire: the sender's uplink, latency, FIFO order.
    fn send_cell(&mut self, from: usize, link: LinkId, wire: WireId, cell: Cell) {
        let Some(w) = self.wires.get(&wire) else {
            return;
        };
        let to_a = w.b == from && w.b_link == link;
        let to = if to_a { w.a } else { w.b };
        let latency = self.model.latency(from, to);
        let serialise = self.model.serialise_ms(from);
        let s = &mut self.slots[from];
        let start = s.uplink_free_ms.max(self.now);
        s.uplink_free_ms = start + serialise;
        let mut arrive = start + serialise + latency;
        let Some(w) = self.wires.get_mut(&wire) else {
            return;
        };
        // Reliable and ordered: never overtake an earlier cell.
        if to_a {
            arrive = arrive.max(w.last_to_a);
            w.last_to_a = arrive;
        } else {
            arrive = arrive.max(w.last_to_b);
            w.last_to_b = arrive;
        }
        self.push(arrive, Kind::Deliver { wire, to_a, cell });
    }

    /// Node `node` closes `link`: the wire closes, the peer learns it one
    /// latency later.
    fn close_link<H: Hooks>(&mut self, node: usize, link: LinkId, hooks: &mut H) {
        let Some(wire) = self.slots[node].links.remove(&link) else {
            return;
        };
        let Some(w) = self.wires.get_mut(&wire) else {
            return;
        };
        if w.closed {
            return;
        }
        w.closed = true;
        let closer_up = if w.a == node { w.a_up } else { w.b_up };
        if !closer_up {
            w.failed = true;
        }
        let info = WireInfo::from(&*w);
        let (other, other_link) = if w.a == node {
            (w.b, w.b_link)
        } else {
            (w.a, w.a_link)
        };
        let at = self.now + self.model.latency(node, other);
        self.push(
            at,
            Kind::LinkDown {
                node: other,
                link: other_link,
            },
        );
        hooks.on_close(self.now, wire, node, info);
    }
}
