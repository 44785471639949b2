//! The client puzzle's state in each role (the puzzle itself, and why it
//! is bound to the sealed introduction, is in [`crate::rendezvous`]):
//!
//! - [`Price`], a service's: the effort it asks, raised while introductions
//!   that paid it still find the accept budget spent, held while the points
//!   report refusing a flood, lowered one bit per quiet period.
//! - [`ReplayWindow`], an introduction point's: the introductions it passed
//!   on, so a replay is dropped before it costs the service anything.
//! - [`Solving`], a downloader's: a search spread over steps of a bounded
//!   number of hashes, so the node never blocks on it.
//!
//! Pure state: the part in `mod.rs` feeds it the time and the events.

use std::collections::{BTreeSet, VecDeque};

use super::RendezvousParams;
use crate::node::Millis;
use crate::rendezvous::{self, Puzzle};

/// Periods in a row without a paid introduction after which the points'
/// reports no longer hold the price (a point cannot hold it forever by
/// claiming refusals nobody can check; a real near-price flood gets in
/// once the price slips, and raises it again by paying).
pub(super) const REPORTS_HOLD_PERIODS: u32 = 8;

/// A service's price for introductions (leading zero bits of work).
///
/// Per period of `effort_period_ms`:
/// - some introduction met the price but found the accept budget empty:
///   the price rises by `effort_step` (at most `max_effort`);
/// - else, in this period or the one before, more introductions arrived
///   (those that met the price, and those the points refused for too
///   little work, as they reported) than the budget takes in a period:
///   the price holds (it is what keeps the flood out; two periods, so that
///   a point whose reports come about once a period cannot miss one and
///   let the price fall under a flood);
/// - else it falls by one bit.
///
/// Reports from the points can only hold the price, never raise it, and
/// only refusals that carried real work near the price hold it; a report
/// of free refusals keeps it at `effort_step` at most. A hostile point
/// could at worst keep the price where paid load put it, or at
/// `effort_step`.
#[derive(Debug, Default)]
pub(super) struct Price {
    effort: u8,
    /// Until `floor_until`, the price before the last raise still passes
    /// at the service (introductions solved before the points heard of
    /// the raise).
    floor: u8,
    floor_until: Millis,
    /// This period: introductions that met the price and found the
    /// budget spent.
    over: u32,
    /// This period: introductions that met the price, plus those the
    /// points refused for too little work.
    demand: u64,
    /// The period before's.
    prev_demand: u64,
    /// A point reported refusing a flood in this period, and in the one
    /// before: the price then falls no lower than `effort_step`.
    flooded: bool,
    prev_flooded: bool,
    /// This period: introductions that met the price.
    paid: u32,
    /// Periods in a row without one.
    unpaid_periods: u32,
    /// When this period ends (0: not started).
    period_end: Millis,
}

impl Price {
    /// The price the points are told.
    pub(super) fn current(&self) -> u8 {
        self.effort
    }

    /// The least work the service itself takes now.
    pub(super) fn required(&self, now: Millis) -> u8 {
        if now < self.floor_until {
            self.floor.min(self.effort)
        } else {
            self.effort
        }
    }

    /// Sets the price at once (tests).
    #[cfg(test)]
    pub(super) fn set(&mut self, effort: u8) {
        self.effort = effort;
        self.floor_until = 0;
    }

    /// An introduction met the price.
    pub(super) fn arrived(&mut self) {
        self.demand = self.demand.saturating_add(1);
        self.paid = self.paid.saturating_add(1);
    }

    /// An introduction met the price but the accept budget was spent.
    pub(super) fn over(&mut self) {
        self.over = self.over.saturating_add(1);
    }

    /// A point refused introductions for too little work, `n` of them
    /// carrying real work near the price. Those count as demand (they can
    /// hold the price); the others, free to send, only keep the price
    /// from falling below `effort_step` (so a free flood stays out, and
    /// costs honest downloaders at most 2^effort_step hashes).
    pub(super) fn reported(&mut self, n: u32) {
        self.demand = self.demand.saturating_add(u64::from(n));
        self.flooded = true;
    }

    /// Ends the period if it is over; returns the new price if it changed.
    pub(super) fn tick(&mut self, now: Millis, p: &RendezvousParams) -> Option<u8> {
        if self.period_end == 0 {
            self.period_end = now + p.effort_period_ms;
            return None;
        }
        if now < self.period_end {
            return None;
        }
        let capacity = (u64::from(p.accepts_per_sec) * p.effort_period_ms / 1000).max(1);
        let old = self.effort;
        if self.over > 0 {
            let new = old.saturating_add(p.effort_step).min(p.max_effort);
            if new > old {
                self.floor = if now < self.floor_until {
                    self.floor.min(old)
                } else {
                    old
                };
                self.floor_until = now + p.effort_period_ms;
            }
            self.effort = new;
        } else if self.unpaid_periods >= REPORTS_HOLD_PERIODS
            || self.demand.max(self.prev_demand) <= capacity
        {
            let least = if self.flooded || self.prev_flooded {
                p.effort_step.min(old)
            } else {
                0
            };
            self.effort = old.saturating_sub(1).max(least).min(p.max_effort);
        }
        self.prev_flooded = std::mem::take(&mut self.flooded);
        self.unpaid_periods = if std::mem::take(&mut self.paid) > 0 {
            0
        } else {
            self.unpaid_periods.saturating_add(1)
        };
        self.over = 0;
        self.prev_demand = std::mem::take(&mut self.demand);
        self.period_end = now + p.effort_period_ms;
        (self.effort != old).then_some(self.effort)
    }
}

/// The introductions an introduction point passed on, each remembered
/// for `window` ms, at most `cap` of them (the oldest forgotten first: the
/// service keeps its own cache, so this one only spares it work).
#[derive(Debug, Default)]
pub(super) struct ReplayWindow {
    seen: BTreeSet<[u8; 32]>,
    order: VecDeque<(Millis, [u8; 32])>,
}

impl ReplayWindow {
    /// Whether `key` was passed on within the window.
    pub(super) fn contains(&mut self, now: Millis, window: Millis, key: &[u8; 32]) -> bool {
        while let Some((t, k)) = self.order.front() {
            if t.saturating_add(window) > now {
                break;
            }
            self.seen.remove(k);
            self.order.pop_front();
        }
        self.seen.contains(key)
    }

    /// Remembers `key`, forgetting the oldest beyond `cap`.
    pub(super) fn insert(&mut self, now: Millis, cap: usize, key: [u8; 32]) {
        if !self.seen.insert(key) {
            return;
        }
        self.order.push_back((now, key));
        while self.order.len() > cap {
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

/// A downloader's search for a puzzle solution, spread over steps.
#[derive(Debug, Clone)]
pub(super) struct Solving {
    subject: [u8; 32],
    effort: u8,
    next: u64,
    /// Not started before this (the backoff after a `NeedEffort`).
    pub(super) not_before: Millis,
}

impl Solving {
    /// A search at `effort` bits over `subject`, from nonce `start`.
    pub(super) fn new(subject: [u8; 32], effort: u8, start: u64, not_before: Millis) -> Solving {
        Solving {
            subject,
            effort,
            next: start,
            not_before,
        }
    }

    /// Tries at most `attempts` more nonces.
    pub(super) fn step(&mut self, attempts: u64) -> Option<Puzzle> {
        let found = rendezvous::solve_puzzle(&self.subject, self.effort, self.next, attempts);
        self.next = self.next.wrapping_add(attempts);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RendezvousParams {
        RendezvousParams {
            effort_period_ms: 1_000,
            effort_step: 2,
            max_effort: 5,
            accepts_per_sec: 4,
            ..RendezvousParams::TESTNET
        }
    }

    /// Rises while paid introductions find the budget spent, never above
    /// the cap; holds while the points report refusals above the budget;
    /// falls a bit per quiet period; a raise leaves the old price valid
    /// at the service for one period.
    #[test]
    fn the_price_rises_with_load_holds_under_reported_floods_and_decays() {
        let p = params();
        let mut price = Price::default();
        assert_eq!(price.tick(0, &p), None, "the first period starts");
        price.over();
        assert_eq!(price.tick(500, &p), None, "not a period yet");
        assert_eq!(price.tick(1_000, &p), Some(2));
        assert_eq!(price.required(1_000), 0, "the old price for a period");
        assert_eq!(price.required(2_000), 2);
        price.over();
        assert_eq!(price.tick(2_000, &p), Some(4));
        price.over();
        assert_eq!(price.tick(3_000, &p), Some(5), "capped");
        price.over();
        assert_eq!(price.tick(4_000, &p), None, "at the cap");
        // The points refuse a flood: more than a period's budget (4).
        price.reported(100);
        assert_eq!(price.tick(5_000, &p), None, "held");
        // Demand within the budget: held one period more (the report came
        // in the last one), then falls one bit per period.
        for _ in 0..4 {
            price.arrived();
        }
        assert_eq!(price.tick(5_500, &p), None, "a period is a period");
        assert_eq!(
            price.tick(6_000, &p),
            None,
            "the last period's report holds"
        );
        assert_eq!(price.tick(6_500, &p), None);
        assert_eq!(price.tick(7_000, &p), Some(4));
        assert_eq!(price.tick(8_000, &p), Some(3));
        assert_eq!(price.tick(9_000, &p), Some(2));
        assert_eq!(price.tick(10_000, &p), Some(1));
        assert_eq!(price.tick(11_000, &p), Some(0));
        assert_eq!(price.tick(12_000, &p), None, "never below zero");
        assert_eq!(price.current(), 0);
        // Reports alone never raise it.
        price.reported(u32::MAX);
        assert_eq!(price.tick(13_000, &p), None);
        assert_eq!(price.current(), 0);
        // A cap of zero turns the puzzle off.
        let off = RendezvousParams {
            max_effort: 0,
            ..p.clone()
        };
        price.over();
        assert_eq!(price.tick(14_000, &off), None);
        assert_eq!(price.current(), 0);
    }

    #[test]
    fn the_replay_window_forgets_by_age_and_by_count() {
        let mut w = ReplayWindow::default();
        w.insert(0, 3, [1; 32]);
        assert!(w.contains(10, 100, &[1; 32]));
        assert!(!w.contains(100, 100, &[1; 32]), "aged out");
        assert_eq!(w.len(), 0);
        for i in 0..5u8 {
            w.insert(200, 3, [i; 32]);
        }
        assert_eq!(w.len(), 3, "bounded");
        assert!(!w.contains(200, 100, &[0; 32]), "the oldest went first");
        assert!(w.contains(200, 100, &[4; 32]));
        w.insert(200, 3, [4; 32]);
        assert_eq!(w.len(), 3, "a key is held once");
    }

    #[test]
    fn a_search_spread_over_steps_finds_what_one_search_finds() {
        let subject = [0x5a; 32];
        let whole = rendezvous::solve_puzzle(&subject, 10, 0, u64::MAX).expect("solved");
        let mut s = Solving::new(subject, 10, 0, 0);
        let mut steps = 0;
        let found = loop {
            steps += 1;
            if let Some(p) = s.step(64) {
                break p;
            }
        };
        assert_eq!(found, whole);
        assert!(steps > 1, "spread over several steps");
    }

    /// A hostile point reporting refusals it never had holds the price
    /// for a few periods at most; then it falls back to `effort_step`
    /// (the reports still say a flood is on).
    #[test]
    fn reports_alone_cannot_hold_the_price_forever() {
        let p = RendezvousParams {
            effort_period_ms: 1_000,
            max_effort: 24,
            accepts_per_sec: 4,
            ..RendezvousParams::TESTNET
        };
        let mut price = Price::default();
        price.tick(0, &p);
        price.set(24);
        for i in 1..=100u64 {
            price.reported(u32::MAX);
            price.tick(i * 1_000, &p);
        }
        assert_eq!(price.current(), p.effort_step);
    }
}
