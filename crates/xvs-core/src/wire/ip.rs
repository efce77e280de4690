//! The IP protocol number (IPv4 protocol, IPv6 next header) as one type, from
//! the parse to the service table and the steering keys, as smoltcp's
//! `IpProtocol`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An IP protocol: the ones xvs handles by name, any other by number. Made
/// from a number with `From<u8>`, which never gives `Unknown` for a named one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpProtocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// IPv4 in IP (IPIP, the outer header of TUN toward an IPv4 packet).
    IpIp,
    /// IPv6 in IP (the outer header of TUN toward an IPv6 packet).
    Ipv6,
    /// Any other protocol, by number.
    Unknown(u8),
}

impl IpProtocol {
    /// The protocol number.
    #[inline]
    pub const fn number(self) -> u8 {
        match self {
            IpProtocol::Icmp => 1,
            IpProtocol::IpIp => 4,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6 => 41,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Unknown(n) => n,
        }
    }

    /// The protocol of number `n`.
    #[inline]
    pub const fn from_number(n: u8) -> IpProtocol {
        match n {
            1 => IpProtocol::Icmp,
            4 => IpProtocol::IpIp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            41 => IpProtocol::Ipv6,
            58 => IpProtocol::Icmpv6,
            n => IpProtocol::Unknown(n),
        }
    }

    /// Name as ipvsadm prints a service's protocol (`TCP`, `UDP`).
    pub const fn name(self) -> &'static str {
        match self {
            IpProtocol::Tcp => "TCP",
            IpProtocol::Udp => "UDP",
            IpProtocol::Icmp => "ICMP",
            IpProtocol::Icmpv6 => "ICMPv6",
            IpProtocol::IpIp => "IPIP",
            IpProtocol::Ipv6 => "IPv6",
            IpProtocol::Unknown(_) => "unknown",
        }
    }

    /// The transport protocols a virtual service can have (IPVS's TCP and
    /// UDP; SCTP is not supported).
    pub const fn is_service(self) -> bool {
        matches!(self, IpProtocol::Tcp | IpProtocol::Udp)
    }
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(n: u8) -> Self {
        IpProtocol::from_number(n)
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(p: IpProtocol) -> u8 {
        p.number()
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Unknown(n) => write!(f, "protocol {n}"),
            p => f.write_str(p.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_named_ones_are_never_unknown() {
        for n in 0..=255u8 {
            let p = IpProtocol::from(n);
            assert_eq!(p.number(), n);
            if matches!(n, 1 | 4 | 6 | 17 | 41 | 58) {
                assert!(!matches!(p, IpProtocol::Unknown(_)));
            }
        }
        assert!(IpProtocol::Tcp.is_service() && IpProtocol::Udp.is_service());
        assert!(!IpProtocol::Icmp.is_service());
    }
}
