//! Admission of inbound peer connections before their Noise handshake:
//! how many may be pending at once, in all and per source address, and how
//! soon a connection must open its link stream.
//!
//! Why: an inbound QUIC connection holds a slot from its first packet
//! until it opens its link stream (or gives up), and the slots are few
//! (twice the node's `max_pending_handshakes`). Without a per-source cap,
//! one host could hold every slot for a whole handshake timeout and keep
//! honest peers out. With it, one source holds at most
//! [`Limits::max_pending_per_ip`] slots, and a connection that completes
//! QUIC but opens no stream is closed after
//! [`Limits::first_stream_timeout`], well before the handshake timeout.
//!
//! A source is an IPv4 address or an IPv6 /64 (one host commonly owns a
//! whole /64); an IPv4-mapped IPv6 address counts as its IPv4 address.
//! The count map has at most one entry per pending connection, so it is
//! bounded by the total cap.
//!
//! Call order: [`Pending::admit`] when quinn yields an `Incoming`; keep the
//! returned [`Slot`] until the link stream is open or the connection has
//! failed; dropping it frees the slot (also when the task is aborted).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Admission limits for inbound connections (the config file's `[links]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pending inbound connections from one source (IPv4 address or
    /// IPv6 /64). At least 1.
    pub max_pending_per_ip: usize,
    /// After the QUIC handshake, the peer must open its link stream within
    /// this (the overall handshake timeout still applies).
    pub first_stream_timeout: Duration,
}

impl Limits {
    /// The defaults: 4 pending connections per source, 3 s to open the
    /// stream.
    pub const DEFAULT: Limits = Limits {
        max_pending_per_ip: 4,
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
    /// This source holds its share of slots already.
    SourceFull,
}

/// The pending inbound connections, counted in all and per source.
#[derive(Debug)]
pub struct Pending {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_source: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One admitted pending connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    source: IpAddr,
}

impl Pending {
    /// At most `max_total` pending connections, `max_per_source` of them
    /// from one source.
    pub fn new(max_total: usize, max_per_source: usize) -> Pending {
        Pending {
            counts: Arc::default(),
            max_total,
            max_per_source,
        }
    }

    /// Take a slot for a connection from `remote`, if one is free.
    pub fn admit(&self, remote: IpAddr) -> Result<Slot, Refused> {
        let source = source_of(remote);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err(Refused::Full);
        }
        let n = c.by_source.get(&source).copied().unwrap_or(0);
        if n >= self.max_per_source {
            return Err(Refused::SourceFull);
        }
        c.by_source.insert(source, n + 1);
        c.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            source,
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
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

/// The source a remote address is counted under.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_gets_its_share_and_others_still_get_in() {
        let p = Pending::new(6, 2);
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
        let p = Pending::new(2, 2);
        let a = p.admit(ip("10.0.0.1")).unwrap();
        let _b = p.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(p.admit(ip("10.0.0.3")).unwrap_err(), Refused::Full);
        drop(a);
        let _c = p.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn slots_free_their_entries() {
        let p = Pending::new(4, 4);
        let slots: Vec<Slot> = (0..4)
            .map(|i| p.admit(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        drop(slots);
        assert!(p.is_empty());
        assert!(p.counts.lock().unwrap().by_source.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let p = Pending::new(10, 1);
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
}
