//! Admission of inbound peer connections before their Noise handshake:
//! which addresses may take a pending slot at all, how many slots may be
//! pending at once, in all and per source address and network, and how
//! soon a connection must finish QUIC and open its link stream.
//!
//! Why: an inbound QUIC connection holds a slot from its first packet
//! until it opens its link stream (or gives up), and the slots are few
//! (twice the node's `max_pending_handshakes`). Without per-source caps,
//! one host could hold every slot for a whole handshake timeout and keep
//! honest peers out. With them, one source holds at most
//! [`Limits::max_pending_per_ip`] slots and one network at most
//! [`Limits::max_pending_per_24`] (IPv4 /24) or
//! [`Limits::max_pending_per_48`] (IPv6 /48) of them; the QUIC handshake
//! must finish within [`Limits::quic_handshake_timeout`], and a connection
//! that completes QUIC but opens no stream is closed after
//! [`Limits::first_stream_timeout`], both well before the handshake
//! timeout.
//!
//! **Only validated addresses are counted.** A source address in a UDP
//! packet can be forged, so the driver answers every Initial whose address
//! is not yet validated with a QUIC Retry (RFC 9000 §8.1.2) and takes no
//! slot for it; only a client that received the Retry token at that
//! address, and so can receive traffic there, comes back validated and is
//! counted here. Spoofed Initials therefore hold no slot and cannot charge
//! their slots to someone else's address.
//!
//! A source is an IPv4 address or an IPv6 /64 (one host commonly owns a
//! whole /64); an IPv4-mapped IPv6 address counts as its IPv4 address. The
//! nested network caps stop one operator with a block of addresses: an
//! IPv4 /24 or an IPv6 /48 (the usual smallest routed blocks). The count
//! maps have at most one entry per pending connection each, so they are
//! bounded by the total cap.
//!
//! Call order: [`Pending::admit`] when quinn yields a validated
//! `Incoming`; keep the returned [`Slot`] until the link stream is open or
//! the connection has failed; dropping it frees the slot (also when the
//! task is aborted).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veil_core::node::{network_of, source_of};

/// Admission limits for inbound connections (the config file's `[links]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pending inbound connections from one source (IPv4 address or
    /// IPv6 /64). At least 1.
    pub max_pending_per_ip: usize,
    /// Most pending inbound connections from one IPv4 /24, all its
    /// addresses together. At least 1.
    pub max_pending_per_24: usize,
    /// Most pending inbound connections from one IPv6 /48, all its /64s
    /// together. At least 1.
    pub max_pending_per_48: usize,
    /// The QUIC handshake of a validated connection must complete within
    /// this (the overall handshake timeout still applies).
    pub quic_handshake_timeout: Duration,
    /// After the QUIC handshake, the peer must open its link stream within
    /// this (the overall handshake timeout still applies).
    pub first_stream_timeout: Duration,
}

impl Limits {
    /// The defaults: 4 pending connections per source, 16 per IPv4 /24 or
    /// IPv6 /48, 5 s for the QUIC handshake, 3 s to open the stream.
    pub const DEFAULT: Limits = Limits {
        max_pending_per_ip: 4,
        max_pending_per_24: 16,
        max_pending_per_48: 16,
        quic_handshake_timeout: Duration::from_secs(5),
        first_stream_timeout: Duration::from_secs(3),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every pending slot is taken.
    Full,
    /// This source's network (IPv4 /24 or IPv6 /48) holds its share of
    /// slots already.
    NetworkFull,
    /// This source holds its share of slots already.
    SourceFull,
}

/// The pending inbound connections, counted in all, per network and per
/// source.
#[derive(Debug)]
pub struct Pending {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    limits: Limits,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    by_network: HashMap<IpAddr, usize>,
}

/// One admitted pending connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    source: IpAddr,
    network: IpAddr,
}

impl Pending {
    /// At most `max_total` pending connections, and per source and
    /// network as `limits` says.
    pub fn new(max_total: usize, limits: Limits) -> Pending {
        Pending {
            counts: Arc::default(),
            max_total,
            limits,
        }
    }

    /// Take a slot for a connection from `remote`, if one is free. Only
    /// for validated addresses (see the module docs).
    pub fn admit(&self, remote: IpAddr) -> Result<Slot, Refused> {
        let source = source_of(remote);
        let network = network_of(source);
        let network_cap = match network {
            IpAddr::V4(_) => self.limits.max_pending_per_24,
            IpAddr::V6(_) => self.limits.max_pending_per_48,
        };
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err(Refused::Full);
        }
        let in_network = c.by_network.get(&network).copied().unwrap_or(0);
        if in_network >= network_cap {
            return Err(Refused::NetworkFull);
        }
        let n = c.by_source.get(&source).copied().unwrap_or(0);
        if n >= self.limits.max_pending_per_ip {
            return Err(Refused::SourceFull);
        }
        c.by_source.insert(source, n + 1);
        c.by_network.insert(network, in_network + 1);
        c.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            source,
            network,
        })
    }

    /// Pending connections now (in all).
    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Whether no connection is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        release(&mut c.by_source, self.source);
        release(&mut c.by_network, self.network);
    }
}

fn release(counts: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = counts.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `max_total` slots, `per_ip` per source, networks uncapped.
    fn pending(max_total: usize, per_ip: usize) -> Pending {
        Pending::new(
            max_total,
            Limits {
                max_pending_per_ip: per_ip,
                max_pending_per_24: usize::MAX,
                max_pending_per_48: usize::MAX,
                ..Limits::DEFAULT
            },
        )
    }

    #[test]
    fn one_source_gets_its_share_and_others_still_get_in() {
        let p = pending(6, 2);
        let a1 = p.admit(ip("127.50.0.1")).unwrap();
        let _a2 = p.admit(ip("127.50.0.1")).unwrap();
        assert_eq!(p.admit(ip("127.50.0.1")).unwrap_err(), Refused::SourceFull);
        let _b = p.admit(ip("127.51.0.1")).unwrap();
        assert_eq!(p.len(), 3);
        // A freed slot is that source's again.
        drop(a1);
        let _a3 = p.admit(ip("127.50.0.1")).unwrap();
        assert_eq!(p.admit(ip("127.50.0.1")).unwrap_err(), Refused::SourceFull);
    }

    #[test]
    fn the_total_cap_holds_across_sources() {
        let p = pending(2, 2);
        let a = p.admit(ip("10.0.0.1")).unwrap();
        let _b = p.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(p.admit(ip("10.0.0.3")).unwrap_err(), Refused::Full);
        drop(a);
        let _c = p.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn slots_free_their_entries() {
        let p = pending(4, 4);
        let slots: Vec<Slot> = (0..4)
            .map(|i| p.admit(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        drop(slots);
        assert!(p.is_empty());
        assert!(p.counts.lock().unwrap().by_source.is_empty());
        assert!(p.counts.lock().unwrap().by_network.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let p = pending(10, 1);
        let _a = p.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            p.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refused::SourceFull
        );
        let _b = p.admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = p.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            p.admit(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refused::SourceFull
        );
    }

    #[test]
    fn one_ipv4_24_gets_its_share_across_its_addresses() {
        let p = Pending::new(
            100,
            Limits {
                max_pending_per_ip: 2,
                max_pending_per_24: 3,
                ..Limits::DEFAULT
            },
        );
        let a = p.admit(ip("198.51.100.1")).unwrap();
        let _b = p.admit(ip("198.51.100.1")).unwrap();
        assert_eq!(
            p.admit(ip("198.51.100.1")).unwrap_err(),
            Refused::SourceFull
        );
        let _c = p.admit(ip("198.51.100.2")).unwrap();
        // The /24 is full for every address in it, also a fresh one and
        // a mapped one.
        for full in ["198.51.100.2", "198.51.100.200", "::ffff:198.51.100.9"] {
            assert_eq!(
                p.admit(ip(full)).unwrap_err(),
                Refused::NetworkFull,
                "{full}"
            );
        }
        // The next /24 is another network.
        let _d = p.admit(ip("198.51.101.1")).unwrap();
        drop(a);
        let _e = p.admit(ip("198.51.100.77")).unwrap();
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn one_ipv6_48_gets_its_share_across_its_64s() {
        let p = Pending::new(
            100,
            Limits {
                max_pending_per_ip: 1,
                max_pending_per_48: 2,
                ..Limits::DEFAULT
            },
        );
        let _a = p.admit(ip("2001:db8:1:1::1")).unwrap();
        let _b = p.admit(ip("2001:db8:1:ffff::1")).unwrap();
        assert_eq!(
            p.admit(ip("2001:db8:1:2::1")).unwrap_err(),
            Refused::NetworkFull
        );
        let _c = p.admit(ip("2001:db8:2:1::1")).unwrap();
        // IPv4 networks are counted apart from IPv6 ones.
        let _d = p.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(p.len(), 4);
    }
}
