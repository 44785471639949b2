//! How well a relay can guess its position on a circuit from what it saw.
//!
//! Each relay records what it saw of every circuit it relays
//! ([`veil_core::node::Observation`]); the harness folds those records into
//! one [`RelaySeen`] per relayed circuit, keeping only what the relay itself
//! knows. [`guess`] is the relay's guess of its position (0 = guard, `hops -
//! 1` = last hop) from that alone and the network's hop count.
//!
//! The truth comes from elsewhere: the harness chains relayed circuits by
//! the handshake bytes (the `handshake` an EXTEND carries is exactly the one
//! the next relay's CREATE brings), starting from the last hop that answered
//! a built circuit's probe, and checks the chain against the path the
//! builder reported. No guess ever reads the chain.
//!
//! With one path length network-wide the guess is exact: the extends a
//! relay performs or passes on (one RELAY_EARLY cell per later hop) count
//! the hops after it. That is the measured figure, not a modelling choice.

use std::collections::BTreeMap;

use veil_core::circuit::CircuitMsg;
use veil_core::node::{Millis, Observation, RelayCircuitId};

/// What one relay saw of one circuit it relays: only its own view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelaySeen {
    /// The handshake of the CREATE that opened it.
    pub create: Option<Vec<u8>>,
    /// When it was opened.
    pub created_ms: Millis,
    /// Handshakes of the EXTENDs addressed to this relay.
    pub extends: Vec<Vec<u8>>,
    /// Nonces of the probes addressed to this relay.
    pub probes: Vec<u64>,
    /// RELAY_EARLY cells it passed on, away from the client.
    pub early_forwarded: u32,
    /// Relay cells it passed on, both directions.
    pub relayed: u32,
}

/// The relay's guess of its position on a path of `hops` hops, from what it
/// saw alone: each EXTEND it performed or passed on (as RELAY_EARLY) names
/// one hop after it.
pub fn guess(seen: &RelaySeen, hops: usize) -> usize {
    let later = seen.early_forwarded as usize + usize::from(!seen.extends.is_empty());
    hops.saturating_sub(1).saturating_sub(later)
}

/// The measurement, over every relayed circuit of every built circuit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PositionGuess {
    /// Built circuits whose relays were all mapped.
    pub circuits: u64,
    /// Built circuits whose relays could not be mapped (must stay 0).
    pub unmapped: u64,
    /// Relayed circuits guessed (one per hop of each mapped circuit).
    pub guesses: u64,
    /// Correct guesses.
    pub correct: u64,
    /// `correct / guesses`.
    pub accuracy: f64,
    /// What the best constant guess achieves (the most frequent position's
    /// share: `1 / hops` over built circuits).
    pub chance: f64,
    /// Per true position: guesses and correct ones.
    pub by_position: Vec<(u64, u64)>,
    /// Relays that guessed "guard" (their predecessor is the client).
    pub guard_guessed: u64,
    /// Of those, true guards.
    pub guard_correct: u64,
    /// True guards in all.
    pub guard_true: u64,
}

impl PositionGuess {
    /// Of the relays that concluded they are the guard, the share that
    /// are (1 when none did).
    pub fn guard_precision(&self) -> f64 {
        ratio(self.guard_correct, self.guard_guessed)
    }

    /// Of the true guards, the share that concluded so.
    pub fn guard_recall(&self) -> f64 {
        ratio(self.guard_correct, self.guard_true)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Every relay's view of every circuit it relays, and the indexes that
/// chain them (harness knowledge, never used by a guess).
#[derive(Debug, Default)]
pub struct Observed {
    seen: BTreeMap<(usize, RelayCircuitId), RelaySeen>,
    /// EXTEND handshake -> the relayed circuit that performed it.
    by_extend: BTreeMap<Vec<u8>, (usize, RelayCircuitId)>,
    /// Probe nonce -> the relayed circuit that answered it.
    by_probe: BTreeMap<u64, (usize, RelayCircuitId)>,
}

impl Observed {
    /// Folds one observation of relay `node` in.
    pub fn record(&mut self, node: usize, obs: &Observation) {
        let key = (node, obs.circuit());
        let s = self.seen.entry(key).or_default();
        match obs {
            Observation::Create {
                at_ms, handshake, ..
            } => {
                s.create = Some(handshake.clone());
                s.created_ms = *at_ms;
            }
            Observation::Recognised { payload, .. } => match CircuitMsg::decode(payload) {
                Ok(CircuitMsg::Extend { handshake, .. }) => {
                    self.by_extend.insert(handshake.clone(), key);
                    s.extends.push(handshake);
                }
                Ok(CircuitMsg::Probe { nonce }) => {
                    self.by_probe.insert(nonce, key);
                    s.probes.push(nonce);
                }
                _ => {}
            },
            Observation::Relayed { forward, early, .. } => {
                s.relayed += 1;
                s.early_forwarded += u32::from(*forward && *early);
            }
        }
    }

    /// Relayed circuits recorded.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The relayed circuits of a built circuit, guard first: from the last
    /// hop that answered `probe`, back along EXTEND handshakes. `None`
    /// unless the chain is exactly `path`.
    fn chain(&self, path: &[usize], probe: u64) -> Option<Vec<&RelaySeen>> {
        let mut key = *self.by_probe.get(&probe)?;
        let mut chain = Vec::with_capacity(path.len());
        loop {
            let s = self.seen.get(&key)?;
            chain.push((key.0, s));
            if chain.len() > path.len() {
                return None;
            }
            match s.create.as_ref().and_then(|h| self.by_extend.get(h)) {
                Some(prev) => key = *prev,
                None => break,
            }
        }
        chain.reverse();
        let nodes: Vec<usize> = chain.iter().map(|(n, _)| *n).collect();
        (nodes == path).then(|| chain.into_iter().map(|(_, s)| s).collect())
    }

    /// Guesses against the truth, for built circuits given as (path, probe
    /// nonce answered by its last hop), on a network of `hops` hops.
    pub fn measure<'a>(
        &self,
        built: impl IntoIterator<Item = (&'a [usize], u64)>,
        hops: usize,
    ) -> PositionGuess {
        let mut g = PositionGuess {
            by_position: vec![(0, 0); hops],
            ..PositionGuess::default()
        };
        for (path, probe) in built {
            let Some(chain) = self.chain(path, probe) else {
                g.unmapped += 1;
                continue;
            };
            g.circuits += 1;
            for (pos, seen) in chain.into_iter().enumerate() {
                let guessed = guess(seen, hops);
                let hit = guessed == pos;
                g.guesses += 1;
                g.correct += u64::from(hit);
                if let Some(p) = g.by_position.get_mut(pos) {
                    p.0 += 1;
                    p.1 += u64::from(hit);
                }
                g.guard_true += u64::from(pos == 0);
                g.guard_guessed += u64::from(guessed == 0);
                g.guard_correct += u64::from(guessed == 0 && hit);
            }
        }
        g.accuracy = ratio(g.correct, g.guesses);
        let most = g.by_position.iter().map(|p| p.0).max().unwrap_or(0);
        g.chance = if g.guesses == 0 {
            1.0 / hops.max(1) as f64
        } else {
            most as f64 / g.guesses as f64
        };
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_count_the_extends_after_a_hop() {
        let mut s = RelaySeen::default();
        // A last hop: no extend.
        assert_eq!(guess(&s, 3), 2);
        // A middle hop: one extend performed.
        s.extends.push(vec![1]);
        assert_eq!(guess(&s, 3), 1);
        // A guard: one performed, one passed on.
        s.early_forwarded = 1;
        assert_eq!(guess(&s, 3), 0);
        // One hop: always the guard, never below 0.
        assert_eq!(guess(&s, 1), 0);
    }
}
