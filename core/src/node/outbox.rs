//! The outbox: every cell the node sends waits here, per link and per
//! circuit, until the driver has room for it. Queueing, fairness and
//! back-pressure are decided in core, so the simulator and the daemon apply
//! the same rules.
//!
//! # Model
//!
//! Each link has a *control* queue (link-level cells and the circuit
//! control cells CREATE, CREATED and DESTROY) and one queue per circuit
//! (RELAY and RELAY_EARLY cells). [`Outbox::pop`] hands out cells only for
//! links with fewer than `max_in_flight` cells handed to the driver and not
//! yet reported written ([`Outbox::sent`]); it serves links in turn, and
//! within a link the control queue first, then the circuits in turn, one
//! cell each. A circuit that sends a lot therefore gets its share of a busy
//! link and no more, and a slow link holds back only the cells queued for
//! it.
//!
//! # Limits
//!
//! - A circuit's queue on one link holds at most `max_circuit_cells` (a
//!   window of data plus slack for control messages): an honest end never
//!   has more than one window in flight, so a circuit over it broke flow
//!   control. [`Push::CircuitFull`] tells the node to destroy that circuit
//!   alone.
//! - A link's control queue holds at most `max_control_cells`; beyond it
//!   the peer is not reading ([`Push::LinkFull`]: a link-level offence).
//! - All queues together hold at most `max_total_cells`; beyond it the node
//!   sheds the longest queue ([`Outbox::largest`]), as Tor's out-of-memory
//!   handler does: a circuit's (destroyed) or a link's control queue (its
//!   peer does not read: cut).

use std::collections::{BTreeMap, VecDeque};

use super::{LinkId, Millis, Transmit};
use crate::cell::{Cell, command};

/// What happened to a pushed cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Push {
    /// Queued.
    Queued,
    /// Not queued: the link's control queue is full.
    LinkFull,
    /// Not queued: this circuit's queue on the link is full.
    CircuitFull,
    /// Not queued: no such link.
    NoLink,
}

/// What to shed when the node's queues are over their total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Victim {
    /// This circuit's queue on this link.
    Circuit(LinkId, u32),
    /// This link's control queue (its peer does not read).
    Link(LinkId),
}

/// Queue limits (from [`super::Config`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_in_flight: usize,
    pub(super) max_circuit_cells: usize,
    pub(super) max_control_cells: usize,
}

#[derive(Debug, Default)]
struct LinkQueue {
    control: VecDeque<Cell>,
    circuits: BTreeMap<u32, VecDeque<Cell>>,
    /// Circuits with queued cells, in serving order.
    turn: VecDeque<u32>,
    /// Handed to the driver, not yet reported written.
    in_flight: usize,
    /// When a cell was last queued on the link.
    last_sent_ms: Millis,
}

impl LinkQueue {
    fn queued(&self) -> usize {
        self.control.len() + self.circuits.values().map(VecDeque::len).sum::<usize>()
    }

    fn pop(&mut self) -> Option<Cell> {
        if let Some(c) = self.control.pop_front() {
            return Some(c);
        }
        while let Some(cid) = self.turn.pop_front() {
            let Some(q) = self.circuits.get_mut(&cid) else {
                continue;
            };
            let Some(c) = q.pop_front() else {
                self.circuits.remove(&cid);
                continue;
            };
            if q.is_empty() {
                self.circuits.remove(&cid);
            } else {
                self.turn.push_back(cid);
            }
            return Some(c);
        }
        None
    }
}

/// Per-link output queues. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    links: BTreeMap<LinkId, LinkQueue>,
    /// The link served last (links are served in turn after it).
    cursor: Option<LinkId>,
    total: usize,
}

impl Outbox {
    /// A link opened.
    pub(super) fn open(&mut self, link: LinkId) {
        self.links.entry(link).or_default();
    }

    /// A link closed: its queued cells are dropped.
    pub(super) fn close(&mut self, link: LinkId) {
        if let Some(q) = self.links.remove(&link) {
            self.total -= q.queued();
        }
    }

    /// A circuit ended: its cells still queued on `link` are dropped.
    pub(super) fn drop_circuit(&mut self, link: LinkId, cid: u32) {
        if let Some(q) = self.links.get_mut(&link)
            && let Some(cells) = q.circuits.remove(&cid)
        {
            self.total -= cells.len();
            q.turn.retain(|c| *c != cid);
        }
    }

    /// Queues `cell` on `link`.
    pub(super) fn push(&mut self, link: LinkId, cell: Cell, limits: &Limits) -> Push {
        let Some(q) = self.links.get_mut(&link) else {
            return Push::NoLink;
        };
        if matches!(cell.command(), command::RELAY | command::RELAY_EARLY) {
            let cid = cell.circ_id();
            let cells = q.circuits.entry(cid).or_default();
            if cells.len() >= limits.max_circuit_cells {
                return Push::CircuitFull;
            }
            if cells.is_empty() {
                q.turn.push_back(cid);
            }
            cells.push_back(cell);
        } else {
            if q.control.len() >= limits.max_control_cells {
                return Push::LinkFull;
            }
            q.control.push_back(cell);
        }
        self.total += 1;
        Push::Queued
    }

    /// The next cell for the driver, from a link with room for it.
    pub(super) fn pop(&mut self, limits: &Limits) -> Option<Transmit> {
        if self.total == 0 {
            return None;
        }
        let after = self.cursor;
        let pick = {
            let ready = |(_, q): &(&LinkId, &LinkQueue)| {
                q.in_flight < limits.max_in_flight && (!q.control.is_empty() || !q.turn.is_empty())
            };
            let first = match after {
                Some(c) => self
                    .links
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .find(ready),
                None => None,
            };
            first
                .or_else(|| self.links.iter().find(ready))
                .map(|(l, _)| *l)
        }?;
        let q = self.links.get_mut(&pick)?;
        let cell = q.pop()?;
        q.in_flight += 1;
        self.total -= 1;
        self.cursor = Some(pick);
        Some(Transmit { link: pick, cell })
    }

    /// The driver wrote `n` of the cells it took for `link`.
    pub(super) fn sent(&mut self, link: LinkId, n: usize) {
        if let Some(q) = self.links.get_mut(&link) {
            q.in_flight = q.in_flight.saturating_sub(n);
        }
    }

    /// Notes that a cell is being sent on `link` at `now`.
    pub(super) fn touch(&mut self, link: LinkId, now: Millis) {
        if let Some(q) = self.links.get_mut(&link) {
            q.last_sent_ms = q.last_sent_ms.max(now);
        }
    }

    /// When a cell was last sent on `link` (0: never).
    pub(super) fn last_sent(&self, link: LinkId) -> Millis {
        self.links.get(&link).map_or(0, |q| q.last_sent_ms)
    }

    /// Cells queued (not yet handed to the driver), all links.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// Cells queued on `link`, control and circuits.
    #[cfg(test)]
    pub(super) fn link_queued(&self, link: LinkId) -> usize {
        self.links.get(&link).map_or(0, LinkQueue::queued)
    }

    /// The longest queue: a circuit's on one link, or a link's control
    /// queue.
    pub(super) fn largest(&self) -> Option<Victim> {
        let circuits = self.links.iter().flat_map(|(l, q)| {
            q.circuits
                .iter()
                .map(move |(c, cells)| (cells.len(), Victim::Circuit(*l, *c)))
        });
        let controls = self
            .links
            .iter()
            .map(|(l, q)| (q.control.len(), Victim::Link(*l)));
        circuits
            .chain(controls)
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, v)| (*n, *v))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
impl Outbox {
    pub(super) fn link_ids(&self) -> Vec<LinkId> {
        self.links.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::CELL_BODY_BYTES;

    const LIMITS: Limits = Limits {
        max_in_flight: 4,
        max_circuit_cells: 10,
        max_control_cells: 5,
    };

    fn relay(cid: u32) -> Cell {
        Cell::relay(cid, &[0; CELL_BODY_BYTES]).unwrap()
    }

    #[test]
    fn circuits_share_a_link_in_turn_and_control_goes_first() {
        let mut o = Outbox::default();
        let l = LinkId(1);
        o.open(l);
        for _ in 0..10 {
            assert_eq!(o.push(l, relay(7), &LIMITS), Push::Queued);
        }
        assert_eq!(o.push(l, relay(8), &LIMITS), Push::Queued);
        assert_eq!(o.push(l, relay(8), &LIMITS), Push::Queued);
        assert_eq!(
            o.push(l, Cell::new(0, command::PADDING), &LIMITS),
            Push::Queued
        );
        let mut order = Vec::new();
        while let Some(t) = o.pop(&LIMITS) {
            order.push(t.cell.circ_id());
            o.sent(l, 1);
        }
        assert_eq!(&order[..5], &[0, 7, 8, 7, 8]);
        assert_eq!(order.len(), 13);
        assert_eq!(o.total(), 0);
    }

    #[test]
    fn a_full_circuit_is_refused_alone() {
        let mut o = Outbox::default();
        let l = LinkId(1);
        o.open(l);
        for _ in 0..10 {
            o.push(l, relay(7), &LIMITS);
        }
        assert_eq!(o.push(l, relay(7), &LIMITS), Push::CircuitFull);
        assert_eq!(o.push(l, relay(8), &LIMITS), Push::Queued);
        assert_eq!(o.largest(), Some(Victim::Circuit(l, 7)));
        o.drop_circuit(l, 7);
        assert_eq!(o.total(), 1);
        assert_eq!(o.pop(&LIMITS).unwrap().cell.circ_id(), 8);
    }

    #[test]
    fn a_stalled_link_holds_back_only_itself() {
        let mut o = Outbox::default();
        let (slow, fast) = (LinkId(1), LinkId(2));
        o.open(slow);
        o.open(fast);
        for _ in 0..8 {
            o.push(slow, relay(1), &LIMITS);
            o.push(fast, relay(2), &LIMITS);
        }
        // The driver never reports the slow link's cells written.
        let mut fast_sent = 0;
        while let Some(t) = o.pop(&LIMITS) {
            if t.link == fast {
                fast_sent += 1;
                o.sent(fast, 1);
            }
        }
        assert_eq!(fast_sent, 8);
        assert_eq!(o.link_queued(slow), 8 - LIMITS.max_in_flight);
        o.sent(slow, 4);
        assert_eq!(o.pop(&LIMITS).unwrap().link, slow);
    }
}
