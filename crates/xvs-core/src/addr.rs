//! A 16-byte address that holds IPv4 (as `::ffff:a.b.c.d`) or IPv6, for compact
//! fixed-size keys in the connection table and the hot path, and the address
//! family.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Af {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Af {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Af {
        match addr {
            IpAddr::V4(_) => Af::V4,
            IpAddr::V6(_) => Af::V6,
        }
    }
}

/// An IPv4 or IPv6 address in 16 bytes, network order. IPv4 is stored v4-mapped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// The unspecified address (`::`), also "none".
    pub const UNSPECIFIED: Addr = Addr([0; 16]);

    /// From IPv4 octets.
    #[inline]
    pub const fn v4(o: [u8; 4]) -> Addr {
        Addr([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3],
        ])
    }

    /// From IPv6 octets.
    #[inline]
    pub const fn v6(o: [u8; 16]) -> Addr {
        Addr(o)
    }

    /// True when this holds an IPv4 address.
    #[inline]
    pub fn is_v4(&self) -> bool {
        self.0[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    }

    /// The IPv4 octets (the last 4 bytes).
    #[inline]
    pub fn v4_octets(&self) -> [u8; 4] {
        [self.0[12], self.0[13], self.0[14], self.0[15]]
    }

    /// The address as a host-order u32 of its IPv4 octets, or the XOR of its
    /// four 32-bit words for IPv6 (the kernel's `ip_vs_addr` fold for hashing).
    #[inline]
    pub fn fold32(&self) -> u32 {
        if self.is_v4() {
            u32::from_be_bytes(self.v4_octets())
        } else {
            let w = |i: usize| {
                u32::from_be_bytes([self.0[i], self.0[i + 1], self.0[i + 2], self.0[i + 3]])
            };
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }

    /// The address as the standard library's (IPv4 for a v4-mapped one).
    pub fn to_ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(self.v4_octets()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(a) => Addr::v4(a.octets()),
            IpAddr::V6(a) => Addr::v6(a.octets()),
        }
    }
}

impl From<Ipv4Addr> for Addr {
    fn from(ip: Ipv4Addr) -> Addr {
        Addr::v4(ip.octets())
    }
}

impl From<Ipv6Addr> for Addr {
    fn from(ip: Ipv6Addr) -> Addr {
        Addr::v6(ip.octets())
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip_and_fold() {
        let a = Addr::from("10.77.0.100".parse::<IpAddr>().unwrap());
        assert!(a.is_v4());
        assert_eq!(a.to_ip().to_string(), "10.77.0.100");
        assert_eq!(a.fold32(), 0x0a4d_0064);
    }

    #[test]
    fn v6_fold_is_xor_of_words() {
        let a = Addr::from("fd77::1:2".parse::<IpAddr>().unwrap());
        assert!(!a.is_v4());
        assert_eq!(a.fold32(), 0xfd77_0000 ^ 0x0001_0002);
    }
}
