//! The line `veil status` leads with: whether this node can search and
//! download now (it has a built circuit), and if not, what it waits for.
//!
//! A circuit needs, in order: peers (from the bootstrap seeds, or others
//! joining us), enough relays in our peer sample known for the guard
//! minimum age (core's [`GuardStatus`]), guards picked from them, one of
//! those guards reachable, and a build that finishes. The first missing
//! step is the reason given.

use veil_core::node::GuardStatus;

/// What the readiness line is decided from, as counted now.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Authenticated peers.
    pub peers: usize,
    /// Bootstrap seeds the node was given.
    pub seeds: usize,
    /// Our circuits built now.
    pub built: usize,
    /// Our circuits being built now.
    pub building: usize,
    /// Where guard selection stands.
    pub guards: GuardStatus,
}

/// Whether the node is ready, and one line saying so or why not (starts
/// with `ready:` or `not ready:`).
pub fn assess(f: &Facts) -> (bool, String) {
    let g = &f.guards;
    if f.built > 0 {
        let s = if f.built == 1 { "" } else { "s" };
        return (true, format!("ready: {} circuit{s}", f.built));
    }
    let why = if f.peers == 0 {
        if f.seeds > 0 {
            "no peers yet (check bootstrap seeds: none reached so far)".to_string()
        } else {
            "no peers yet (no bootstrap seeds given: waiting for others to join)".to_string()
        }
    } else if g.guards == 0 {
        if g.candidates < g.aged_needed {
            format!(
                "waiting for guards, {} of {} relays known",
                g.candidates, g.aged_needed
            )
        } else if g.aged < g.aged_needed {
            let next = g
                .next_aged_in_ms
                .map(|ms| format!(" (next in {})", human_wait(ms)))
                .unwrap_or_default();
            format!(
                "waiting for guards, {} of {} relays aged{next}",
                g.aged, g.aged_needed
            )
        } else {
            format!("picking guards ({} aged relays)", g.aged)
        }
    } else if g.guards_unreachable >= g.guards {
        format!("no guard reachable ({} guard(s), retrying)", g.guards)
    } else if f.building > 0 {
        format!("building circuits (0 built, {} building)", f.building)
    } else {
        format!(
            "no circuit started yet (a path needs {} relays on distinct networks)",
            g.hops
        )
    };
    (false, format!("not ready: {why}"))
}

/// A wait in the largest whole unit: `40 s`, `12 min`, `3 h`.
fn human_wait(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s.div_ceil(60))
    } else {
        format!("{} h", s.div_ceil(3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guards(candidates: usize, aged: usize, guards: usize, unreachable: usize) -> GuardStatus {
        GuardStatus {
            hops: 3,
            candidates,
            aged,
            aged_needed: 3.max(candidates.div_ceil(4)),
            next_aged_in_ms: (aged < candidates).then_some(720_000),
            guards,
            guards_wanted: 3,
            guards_unreachable: unreachable,
        }
    }

    fn line(f: Facts) -> (bool, String) {
        assess(&f)
    }

    #[test]
    fn each_missing_step_is_named() {
        let cases = [
            (
                Facts {
                    seeds: 1,
                    ..Facts::default()
                },
                "not ready: no peers yet (check bootstrap seeds: none reached so far)",
            ),
            (
                Facts::default(),
                "not ready: no peers yet (no bootstrap seeds given: waiting for others to join)",
            ),
            (
                Facts {
                    peers: 2,
                    guards: guards(2, 2, 0, 0),
                    ..Facts::default()
                },
                "not ready: waiting for guards, 2 of 3 relays known",
            ),
            (
                Facts {
                    peers: 5,
                    guards: guards(5, 2, 0, 0),
                    ..Facts::default()
                },
                "not ready: waiting for guards, 2 of 3 relays aged (next in 12 min)",
            ),
            (
                Facts {
                    peers: 5,
                    guards: guards(5, 5, 0, 0),
                    ..Facts::default()
                },
                "not ready: picking guards (5 aged relays)",
            ),
            (
                Facts {
                    peers: 5,
                    building: 1,
                    guards: guards(5, 5, 3, 3),
                    ..Facts::default()
                },
                "not ready: no guard reachable (3 guard(s), retrying)",
            ),
            (
                Facts {
                    peers: 5,
                    building: 2,
                    guards: guards(5, 5, 3, 1),
                    ..Facts::default()
                },
                "not ready: building circuits (0 built, 2 building)",
            ),
            (
                Facts {
                    peers: 5,
                    guards: guards(5, 5, 3, 0),
                    ..Facts::default()
                },
                "not ready: no circuit started yet (a path needs 3 relays on distinct networks)",
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(line(facts.clone()), (false, want.to_string()), "{facts:?}");
        }
    }

    #[test]
    fn a_built_circuit_is_ready_whatever_else() {
        let f = Facts {
            built: 1,
            ..Facts::default()
        };
        assert_eq!(line(f), (true, "ready: 1 circuit".to_string()));
        let f = Facts {
            peers: 4,
            built: 3,
            building: 1,
            guards: guards(4, 4, 3, 1),
            ..Facts::default()
        };
        assert_eq!(line(f), (true, "ready: 3 circuits".to_string()));
    }

    #[test]
    fn waits_are_rounded_up_to_a_readable_unit() {
        assert_eq!(human_wait(1), "1 s");
        assert_eq!(human_wait(119_000), "119 s");
        assert_eq!(human_wait(120_000), "2 min");
        assert_eq!(human_wait(3_600_000), "60 min");
        assert_eq!(human_wait(7_200_000), "2 h");
        assert_eq!(human_wait(3 * 3_600_000 + 1), "4 h");
    }
}
