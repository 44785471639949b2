//! Addresses: which a node may dial at all ([`AddrScope`]), and which count
//! as one source for admission ([`source_of`], [`network_of`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What kind of network an address is on, for [`super::dialer::dialable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AddrScope {
    /// Unspecified, multicast, broadcast, documentation or port 0: never.
    Invalid,
    /// 127/8, ::1.
    Loopback,
    /// RFC 1918, link-local, CGNAT, unique-local and link-local IPv6.
    Private,
    /// Everything else.
    Global,
}

impl AddrScope {
    pub(super) fn of(addr: SocketAddr) -> AddrScope {
        use std::net::IpAddr;
        if addr.port() == 0 {
            return AddrScope::Invalid;
        }
        match addr.ip() {
            IpAddr::V4(ip) => {
                let o = ip.octets();
                if ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_broadcast()
                    || ip.is_documentation()
                    || o[0] == 0
                    || o[0] >= 240
                    || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                    || (o[0] == 198 && (o[1] & 0xfe) == 18)
                {
                    AddrScope::Invalid
                } else if ip.is_loopback() {
                    AddrScope::Loopback
                } else if ip.is_private()
                    || ip.is_link_local()
                    || (o[0] == 100 && (o[1] & 0xc0) == 64)
                {
                    AddrScope::Private
                } else {
                    AddrScope::Global
                }
            }
            IpAddr::V6(ip) => {
                if let Some(v4) = ip.to_ipv4_mapped() {
                    return AddrScope::of(SocketAddr::new(IpAddr::V4(v4), addr.port()));
                }
                let seg = ip.segments();
                let o = ip.octets();
                // Addresses that embed an IPv4 address (NAT64, 6to4) are
                // as reachable as that address.
                let embedded = if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                    Some(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]))
                } else if seg[0] == 0x2002 {
                    Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]))
                } else {
                    None
                };
                if let Some(v4) = embedded {
                    return AddrScope::of(SocketAddr::new(IpAddr::V4(v4), addr.port()));
                }
                if ip.is_unspecified()
                    || ip.is_multicast()
                    || (seg[0] == 0x2001 && seg[1] == 0xdb8)
                    // IPv4-compatible (deprecated) ::a.b.c.d
                    || seg[..6] == [0; 6]
                {
                    AddrScope::Invalid
                } else if ip.is_loopback() {
                    AddrScope::Loopback
                } else if (seg[0] & 0xfe00) == 0xfc00
                    || (seg[0] & 0xffc0) == 0xfe80
                    || (seg[0] & 0xffc0) == 0xfec0
                {
                    AddrScope::Private
                } else {
                    AddrScope::Global
                }
            }
        }
    }
}

/// The source a remote address is counted under for admission: an IPv4
/// address, or an IPv6 /64 (IPv4-mapped IPv6 counts as IPv4). The daemon's
/// QUIC admission and the node's handshake admission use the same rule.
pub fn source_of(ip: IpAddr) -> IpAddr {
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

/// The network a source is counted under: its IPv4 /24 or IPv6 /48.
pub fn network_of(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// Whether two addresses count as one source network for admission: the
/// same IPv4 /24 or IPv6 /48.
pub(super) fn same_source(a: IpAddr, b: IpAddr) -> bool {
    network_of(source_of(a)) == network_of(source_of(b))
}
