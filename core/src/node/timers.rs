//! The node's deadlines in one table, like quinn-proto's `TimerTable`:
//! every part sets and clears its own timers here, and
//! [`super::Node::poll_timeout`] is the earliest of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{LinkId, Millis};

/// One deadline of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A link handshake must finish by then.
    Handshake(LinkId),
    /// A dial must be answered by then.
    Dial(SocketAddr),
    /// Dial a seed (only while bootstrapping).
    Bootstrap,
    /// Re-sign our descriptor.
    Refresh,
    /// The next gossip round.
    Round,
    /// Circuit housekeeping: builds, probes, rotation, guards.
    CircuitTick,
    /// Search: republication, search timeouts, index expiry.
    Search,
    /// Rendezvous: session timeouts, keepalives, introduction points.
    Rendezvous,
    /// Rendezvous: the next step of our client puzzle searches (armed only
    /// while one is under way).
    Puzzle,
    /// Downloads: stalls, backoff, searching again.
    Transfer,
}

/// Deadlines by timer.
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    at: BTreeMap<Timer, Millis>,
}

impl TimerTable {
    /// Arms (or re-arms) `t` for `at`.
    pub(super) fn set(&mut self, t: Timer, at: Millis) {
        self.at.insert(t, at);
    }

    /// Disarms `t`.
    pub(super) fn clear(&mut self, t: Timer) {
        self.at.remove(&t);
    }

    /// When `t` fires, if armed.
    pub(super) fn get(&self, t: Timer) -> Option<Millis> {
        self.at.get(&t).copied()
    }

    /// Whether `t` is armed and due at `now`.
    pub(super) fn due(&self, t: Timer, now: Millis) -> bool {
        self.get(t).is_some_and(|at| now >= at)
    }

    /// The due timers of one kind (selected by `kind`), in order.
    pub(super) fn due_of(&self, now: Millis, kind: impl Fn(&Timer) -> bool) -> Vec<Timer> {
        self.at
            .iter()
            .filter(|(t, at)| kind(t) && now >= **at)
            .map(|(t, _)| *t)
            .collect()
    }

    /// The earliest deadline among the timers `include` selects.
    pub(super) fn next(&self, include: impl Fn(&Timer) -> bool) -> Option<Millis> {
        self.at
            .iter()
            .filter(|(t, _)| include(t))
            .map(|(_, at)| *at)
            .min()
    }
}

#[cfg(test)]
impl TimerTable {
    pub(super) fn all(&self) -> Vec<(Timer, Millis)> {
        self.at.iter().map(|(t, a)| (*t, *a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_armed_timer_wins_and_cleared_ones_never_fire() {
        let mut t = TimerTable::default();
        assert_eq!(t.next(|_| true), None);
        t.set(Timer::Round, 50);
        t.set(Timer::Handshake(LinkId(3)), 20);
        t.set(Timer::Handshake(LinkId(1)), 30);
        assert_eq!(t.next(|_| true), Some(20));
        assert_eq!(
            t.next(|x| !matches!(x, Timer::Handshake(_))),
            Some(50),
            "a filter skips timers"
        );
        assert_eq!(
            t.due_of(40, |x| matches!(x, Timer::Handshake(_))),
            vec![Timer::Handshake(LinkId(1)), Timer::Handshake(LinkId(3))],
            "due timers come in key order"
        );
        t.clear(Timer::Handshake(LinkId(3)));
        assert_eq!(t.next(|_| true), Some(30));
        assert!(!t.due(Timer::Round, 49));
        assert!(t.due(Timer::Round, 50));
    }
}
