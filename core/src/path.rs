//! Path selection: guards, vanguards-lite and the network-prefix rule.
//!
//! Pure functions and data over candidate relays; the [`crate::node`] state
//! machine decides *when* to pick and feeds the candidates it knows.
//!
//! # Rules
//!
//! - **Guards** (first hops) are long-lived. They are drawn only from relays
//!   this node has known for at least [`CircuitParams::guard_min_age_ms`],
//!   measured from when *this node first saw them*, never from a
//!   descriptor's own timestamp (which its owner chooses). The list is
//!   ordered; circuits use the first guard that is not marked unreachable,
//!   and a guard is marked unreachable only when we cannot reach it at all
//!   (dial or link handshake failed, or it never answered a CREATE). A build
//!   that fails further along keeps the guard and retries beyond it: an
//!   attacker who can break extends must not be able to push us onto a
//!   guard of its choosing. Guards leave the list only after
//!   [`CircuitParams::guard_lifetime_ms`] or after being unreachable for
//!   that long.
//! - **Vanguards-lite.** The second hop comes from a small fixed set of
//!   [`CircuitParams::vanguards`] relays, each kept for
//!   [`CircuitParams::vanguard_lifetime_ms`]. A guard-discovery attacker who
//!   runs many middle relays then sees our guard only through a handful of
//!   second hops.
//! - **Prefixes.** No two hops of a path share a network prefix
//!   ([`CircuitParams::prefix_v4`] bits for IPv4, [`CircuitParams::prefix_v6`]
//!   for IPv6; /16 and /32 by default), and no node appears twice.

use std::net::{IpAddr, SocketAddr};

use rand_core::RngCore;

use crate::identity::NodeId;

/// Milliseconds (as in [`crate::node::Millis`]).
type Millis = u64;

/// Circuit and path parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitParams {
    /// Hops per circuit, 1 to 4.
    pub hops: usize,
    /// Built circuits kept ready (0: build none).
    pub circuits_wanted: usize,
    /// A built circuit is rotated (closed and replaced) after this.
    pub lifetime_ms: Millis,
    /// A build that has not finished after this fails.
    pub build_timeout_ms: Millis,
    /// Guards in the ordered guard list.
    pub guards: usize,
    /// Only relays first seen at least this long ago become guards.
    pub guard_min_age_ms: Millis,
    /// An unreachable guard is tried again after this.
    pub guard_retry_ms: Millis,
    /// A guard is replaced after this long in the list (or this long
    /// unreachable).
    pub guard_lifetime_ms: Millis,
    /// Size of the second-hop set (vanguards-lite).
    pub vanguards: usize,
    /// A vanguard is replaced after this.
    pub vanguard_lifetime_ms: Millis,
    /// IPv4 prefix length two hops must not share.
    pub prefix_v4: u8,
    /// IPv6 prefix length two hops must not share.
    pub prefix_v6: u8,
    /// End-to-end flow control: data cells one end may have unacknowledged.
    pub window_cells: u32,
    /// A SENDME acknowledges this many data cells.
    pub sendme_every: u32,
    /// Most circuits one link may carry through us as a relay.
    pub max_circuits_per_link: usize,
    /// Most circuits we relay at once.
    pub max_relay_circuits: usize,
    /// Most circuits one peer (all its links) may have through us, so a
    /// few identities cannot fill the relay table.
    pub max_circuits_per_peer: usize,
    /// CREATEs a peer may send per second on one link (bursts of two
    /// seconds' worth); more are refused with DESTROY, the link stays.
    pub creates_per_sec_per_link: u32,
    /// CREATEs this relay answers per second in all (each costs three
    /// scalar multiplications): the cost bound on handshakes.
    pub creates_per_sec: u32,
    /// A relayed circuit with no cell for this long is dropped.
    pub relay_idle_ms: Millis,
    /// Circuit timers (builds, rotation, idle) are checked this often.
    pub tick_ms: Millis,
}

impl CircuitParams {
    /// The real network.
    pub const MAINNET: CircuitParams = CircuitParams {
        hops: 3,
        circuits_wanted: 3,
        lifetime_ms: 10 * 60_000,
        build_timeout_ms: 60_000,
        guards: 3,
        guard_min_age_ms: 3_600_000,
        guard_retry_ms: 5 * 60_000,
        guard_lifetime_ms: 60 * 24 * 3_600_000,
        vanguards: 4,
        vanguard_lifetime_ms: 24 * 3_600_000,
        prefix_v4: 16,
        prefix_v6: 32,
        window_cells: 512,
        sendme_every: 128,
        max_circuits_per_link: 1024,
        max_relay_circuits: 8192,
        max_circuits_per_peer: 256,
        creates_per_sec_per_link: 32,
        creates_per_sec: 400,
        relay_idle_ms: 30 * 60_000,
        tick_ms: 1_000,
    };

    /// A small local network: fresh nodes may be guards at once, a smaller
    /// vanguard set, shorter timers. The prefix rule stays (local tests give
    /// every node its own /16).
    pub const TESTNET: CircuitParams = CircuitParams {
        circuits_wanted: 2,
        lifetime_ms: 5 * 60_000,
        build_timeout_ms: 15_000,
        guard_min_age_ms: 0,
        guard_retry_ms: 3_000,
        vanguards: 2,
        vanguard_lifetime_ms: 3_600_000,
        relay_idle_ms: 10 * 60_000,
        tick_ms: 500,
        ..CircuitParams::MAINNET
    };

    /// Checks the parameters a user can set.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4).contains(&self.hops) {
            return Err(format!("circuit hops must be 1 to 4, not {}", self.hops));
        }
        if self.guards == 0 || self.vanguards == 0 {
            return Err("guards and vanguards must be at least 1".into());
        }
        if self.prefix_v4 > 32 || self.prefix_v6 > 128 {
            return Err("prefix lengths must be at most 32 (IPv4) and 128 (IPv6)".into());
        }
        if self.sendme_every == 0 || self.sendme_every > self.window_cells {
            return Err("sendme_every must be in 1..=window_cells".into());
        }
        if self.tick_ms == 0 {
            return Err("tick_ms must be positive".into());
        }
        Ok(())
    }

    /// True if `a` and `b` share a network prefix (different families never
    /// do; an IPv4-mapped IPv6 address counts as IPv4).
    pub fn same_prefix(&self, a: IpAddr, b: IpAddr) -> bool {
        same_prefix(a, b, self.prefix_v4, self.prefix_v6)
    }
}

/// True if `a` and `b` agree in their first `v4` (IPv4) or `v6` (IPv6)
/// bits.
pub fn same_prefix(a: IpAddr, b: IpAddr, v4: u8, v6: u8) -> bool {
    let a = a.to_canonical();
    let b = b.to_canonical();
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let bits = u32::from(v4.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (u32::from(a) & mask) == (u32::from(b) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let bits = u32::from(v6.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (u128::from(a) & mask) == (u128::from(b) & mask)
        }
        _ => false,
    }
}

/// A relay that may be put on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub id: NodeId,
    /// Where it is reached.
    pub addr: SocketAddr,
    /// When this node first saw it.
    pub first_seen_ms: Millis,
}

/// True if `c` can join a path that already holds `path`: not the same node
/// and no shared prefix with any hop.
pub fn compatible(params: &CircuitParams, path: &[Candidate], c: &Candidate) -> bool {
    path.iter()
        .all(|h| h.id != c.id && !params.same_prefix(h.addr.ip(), c.addr.ip()))
}

/// Picks one candidate uniformly among those `ok` accepts.
pub fn pick<R: RngCore>(
    rng: &mut R,
    candidates: &[Candidate],
    ok: impl Fn(&Candidate) -> bool,
) -> Option<Candidate> {
    let fit: Vec<&Candidate> = candidates.iter().filter(|c| ok(c)).collect();
    if fit.is_empty() {
        return None;
    }
    Some(*fit[(rng.next_u64() % fit.len() as u64) as usize])
}

/// A new guard for a list that holds `current`: aged enough, not already a
/// guard, not in a prefix of a current guard (so one network operator
/// cannot hold all of our guards).
pub fn pick_guard<R: RngCore>(
    rng: &mut R,
    params: &CircuitParams,
    now: Millis,
    candidates: &[Candidate],
    current: &[Candidate],
) -> Option<Candidate> {
    pick(rng, candidates, |c| {
        now.saturating_sub(c.first_seen_ms) >= params.guard_min_age_ms
            && compatible(params, current, c)
    })
}

/// The hops after the guard: the second from `vanguards`, the rest from
/// `candidates`, each compatible with every hop before it. `None` if the
/// rules cannot be met with what we know.
pub fn pick_rest<R: RngCore>(
    rng: &mut R,
    params: &CircuitParams,
    guard: Candidate,
    vanguards: &[Candidate],
    candidates: &[Candidate],
) -> Option<Vec<Candidate>> {
    let mut path = vec![guard];
    for i in 1..params.hops {
        let pool = if i == 1 { vanguards } else { candidates };
        let next = pick(rng, pool, |c| compatible(params, &path, c))?;
        path.push(next);
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn cand(i: u8, a: u8, b: u8, seen: Millis) -> Candidate {
        Candidate {
            id: NodeId::from_bytes([i; 32]),
            addr: SocketAddr::new(IpAddr::from([a, b, 0, 1]), 7000),
            first_seen_ms: seen,
        }
    }

    #[test]
    fn prefixes() {
        let p = CircuitParams::MAINNET;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.same_prefix(ip("10.1.2.3"), ip("10.1.200.9")));
        assert!(!p.same_prefix(ip("10.1.2.3"), ip("10.2.2.3")));
        assert!(!p.same_prefix(ip("127.1.0.1"), ip("127.2.0.1")));
        assert!(p.same_prefix(ip("::ffff:10.1.2.3"), ip("10.1.9.9")));
        assert!(p.same_prefix(ip("2001:db8::1"), ip("2001:db8:ffff::1")));
        assert!(!p.same_prefix(ip("2001:db8::1"), ip("2001:db9::1")));
        assert!(!p.same_prefix(ip("10.1.2.3"), ip("2001:db8::1")));
        assert!(same_prefix(ip("1.2.3.4"), ip("9.9.9.9"), 0, 0));
        assert!(!same_prefix(ip("1.2.3.4"), ip("1.2.3.5"), 32, 128));
    }

    #[test]
    fn guards_are_aged_and_spread_over_prefixes() {
        let p = CircuitParams::MAINNET;
        let now = 10 * 3_600_000;
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let young = cand(1, 10, 1, now - 60_000);
        let old = cand(2, 10, 2, 0);
        let old_same_prefix = cand(3, 10, 2, 0);
        let all = [young, old, old_same_prefix];
        for _ in 0..50 {
            let g = pick_guard(&mut rng, &p, now, &all, &[]).unwrap();
            assert_ne!(g.id, young.id, "a young node became a guard");
        }
        // With `old` already a guard, its /16 neighbour is refused too.
        assert_eq!(pick_guard(&mut rng, &p, now, &all, &[old]), None);
        // The testnet takes fresh nodes.
        let t = CircuitParams::TESTNET;
        assert_eq!(
            pick_guard(&mut rng, &t, now, &[young], &[]).map(|c| c.id),
            Some(young.id)
        );
    }

    #[test]
    fn paths_have_distinct_nodes_and_prefixes() {
        let p = CircuitParams::MAINNET;
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let relays: Vec<Candidate> = (0..40).map(|i| cand(i, 10, i % 8, 0)).collect();
        let guard = relays[0];
        let vanguards = [relays[1], relays[2], relays[8]];
        for _ in 0..200 {
            let path = pick_rest(&mut rng, &p, guard, &vanguards, &relays).unwrap();
            assert_eq!(path.len(), 3);
            assert_eq!(path[0], guard);
            assert!(vanguards.contains(&path[1]));
            // relays[8] shares 10.0/16 with the guard.
            assert_ne!(path[1].id, relays[8].id);
            for i in 0..path.len() {
                for j in i + 1..path.len() {
                    assert_ne!(path[i].id, path[j].id);
                    assert!(!p.same_prefix(path[i].addr.ip(), path[j].addr.ip()));
                }
            }
        }
        // Not enough distinct prefixes: no path rather than a bad one.
        let few: Vec<Candidate> = (0..10).map(|i| cand(i, 10, i % 2, 0)).collect();
        assert_eq!(pick_rest(&mut rng, &p, few[0], &few[1..3], &few), None);
        // One hop is just the guard.
        let one = CircuitParams {
            hops: 1,
            ..CircuitParams::MAINNET
        };
        assert_eq!(
            pick_rest(&mut rng, &one, guard, &[], &[]).unwrap(),
            vec![guard]
        );
    }

    #[test]
    fn validation() {
        assert!(CircuitParams::MAINNET.validate().is_ok());
        assert!(CircuitParams::TESTNET.validate().is_ok());
        for hops in [0, 5] {
            let p = CircuitParams {
                hops,
                ..CircuitParams::MAINNET
            };
            assert!(p.validate().is_err());
        }
    }
}
