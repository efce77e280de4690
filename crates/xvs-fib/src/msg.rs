//! rtnetlink messages: building dump requests and parsing the kernel's answers
//! (links, addresses, routes, neighbours) from bytes. No I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_GETNEIGH: u16 = 30;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Multicast groups for change notifications.
pub const GROUPS: u32 = 0x1 /* LINK */ | 0x4 /* NEIGH */ | 0x10 /* IPV4_IFADDR */
    | 0x40 /* IPV4_ROUTE */ | 0x100 /* IPV6_IFADDR */ | 0x400 /* IPV6_ROUTE */;

/// A dump request for `kind` (RTM_GET*) over all families.
pub fn dump_request(kind: u16, seq: u32) -> Vec<u8> {
    // The family header that follows nlmsghdr differs per kind; its first byte is
    // the family everywhere, and a zeroed header of the right size means "all".
    let body = match kind {
        RTM_GETLINK => 16,  // ifinfomsg
        RTM_GETADDR => 8,   // ifaddrmsg
        RTM_GETROUTE => 12, // rtmsg
        _ => 12,            // ndmsg
    };
    let len = 16 + body;
    let mut m = vec![0u8; len];
    m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[16] = AF_UNSPEC;
    m
}

/// One netlink message: type and payload (after the 16-byte header).
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    pub kind: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a datagram into messages; stops at the first malformed one.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = NlMsg<'_>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let h = buf.get(off..off + 16)?;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len < 16 || off + len > buf.len() {
            return None;
        }
        let m = NlMsg {
            kind: u16::from_ne_bytes([h[4], h[5]]),
            seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
            payload: &buf[off + 16..off + len],
        };
        off += (len + 3) & !3;
        Some(m)
    })
}

/// The error code of an NLMSG_ERROR payload (0 = ack).
pub fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(0..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// Route attributes (type, value) after a family header of `hdr` bytes.
fn attrs(payload: &[u8], hdr: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = hdr;
    std::iter::from_fn(move || {
        let h = payload.get(off..off + 4)?;
        let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
        let kind = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            return None;
        }
        let v = &payload[off + 4..off + len];
        off += (len + 3) & !3;
        Some((kind, v))
    })
}

fn ip_of(family: u8, v: &[u8]) -> Option<IpAddr> {
    match (family, v.len()) {
        (AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        (AF_INET6, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(v);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(0..4)?.try_into().ok()?))
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
}

pub fn parse_link(p: &[u8]) -> Option<Link> {
    let index = u32_of(p.get(4..8)?)?;
    let mut l = Link {
        index,
        name: String::new(),
        mac: [0; 6],
        mtu: 1500,
    };
    for (k, v) in attrs(p, 16) {
        match k {
            1 if v.len() == 6 => l.mac.copy_from_slice(v),
            3 => l.name = String::from_utf8_lossy(v.split(|&b| b == 0).next()?).into_owned(),
            4 => l.mtu = u32_of(v)?,
            _ => {}
        }
    }
    Some(l)
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

pub fn parse_addr(p: &[u8]) -> Option<IfAddr> {
    let family = *p.first()?;
    let prefix_len = *p.get(1)?;
    let index = u32_of(p.get(4..8)?)?;
    let mut local = None;
    let mut address = None;
    for (k, v) in attrs(p, 8) {
        match k {
            1 => address = ip_of(family, v),
            2 => local = ip_of(family, v),
            _ => {}
        }
    }
    Some(IfAddr {
        index,
        addr: local.or(address)?,
        prefix_len,
    })
}

/// A unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub prefsrc: Option<IpAddr>,
    pub priority: u32,
}

const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;

pub fn parse_route(p: &[u8]) -> Option<Route> {
    let family = *p.first()?;
    let dst_len = *p.get(1)?;
    let mut table = *p.get(4)? as u32;
    let rtype = *p.get(7)?;
    let mut r = Route {
        dst: match family {
            AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        },
        dst_len,
        gateway: None,
        oif: 0,
        prefsrc: None,
        priority: 0,
    };
    for (k, v) in attrs(p, 12) {
        match k {
            1 => r.dst = ip_of(family, v)?,
            4 => r.oif = u32_of(v)?,
            5 => r.gateway = ip_of(family, v),
            6 => r.priority = u32_of(v)?,
            7 => r.prefsrc = ip_of(family, v),
            15 => table = u32_of(v)?,
            _ => {}
        }
    }
    (table == RT_TABLE_MAIN && rtype == RTN_UNICAST && r.oif != 0).then_some(r)
}

/// A neighbour (ARP / NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neigh {
    pub index: u32,
    pub addr: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub state: u16,
}

pub const NUD_INCOMPLETE: u16 = 0x01;
pub const NUD_REACHABLE: u16 = 0x02;
pub const NUD_STALE: u16 = 0x04;
pub const NUD_FAILED: u16 = 0x20;

impl Neigh {
    /// True when the MAC may be used (reachable, stale, delay, probe, permanent, noarp).
    pub fn usable(&self) -> bool {
        self.mac.is_some() && self.state & (NUD_INCOMPLETE | NUD_FAILED) == 0 && self.state != 0
    }
}

pub fn parse_neigh(p: &[u8]) -> Option<Neigh> {
    let family = *p.first()?;
    let index = u32_of(p.get(4..8)?)?;
    let state = u16::from_ne_bytes([*p.get(8)?, *p.get(9)?]);
    let mut n = Neigh {
        index,
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        mac: None,
        state,
    };
    let mut have_dst = false;
    for (k, v) in attrs(p, 12) {
        match k {
            1 => {
                n.addr = ip_of(family, v)?;
                have_dst = true;
            }
            2 if v.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(v);
                n.mac = Some(m);
            }
            _ => {}
        }
    }
    have_dst.then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rta(kind: u16, v: &[u8]) -> Vec<u8> {
        let len = 4 + v.len();
        let mut o = (len as u16).to_ne_bytes().to_vec();
        o.extend_from_slice(&kind.to_ne_bytes());
        o.extend_from_slice(v);
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        o
    }

    #[test]
    fn parses_a_route_with_gateway() {
        // rtmsg: family 2, dst_len 24, src_len 0, tos 0, table 254, proto 4, scope 0, type 1, flags 0
        let mut p = vec![2, 24, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
        p.extend(rta(1, &[10, 77, 5, 0]));
        p.extend(rta(5, &[10, 77, 1, 254]));
        p.extend(rta(4, &7u32.to_ne_bytes()));
        let r = parse_route(&p).unwrap();
        assert_eq!(r.dst.to_string(), "10.77.5.0");
        assert_eq!(r.dst_len, 24);
        assert_eq!(r.gateway.unwrap().to_string(), "10.77.1.254");
        assert_eq!(r.oif, 7);
    }

    #[test]
    fn local_table_routes_are_ignored() {
        let mut p = vec![2, 32, 0, 0, 255, 2, 254, 2, 0, 0, 0, 0];
        p.extend(rta(4, &7u32.to_ne_bytes()));
        assert!(parse_route(&p).is_none());
    }

    #[test]
    fn parses_neighbour_and_link() {
        // ndmsg: family 2, pad, pad16, ifindex 3, state REACHABLE, flags, type
        let mut p = vec![2, 0, 0, 0];
        p.extend(3u32.to_ne_bytes());
        p.extend(NUD_REACHABLE.to_ne_bytes());
        p.extend([0, 1]);
        p.extend(rta(1, &[10, 77, 1, 11]));
        p.extend(rta(2, &[2, 0, 0, 0, 0, 0x11]));
        let n = parse_neigh(&p).unwrap();
        assert!(n.usable());
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 0x11]));

        let mut l = vec![0u8; 16];
        l[4..8].copy_from_slice(&5u32.to_ne_bytes());
        l.extend(rta(3, b"veth0\0"));
        l.extend(rta(1, &[2, 0, 0, 0, 0, 1]));
        l.extend(rta(4, &1400u32.to_ne_bytes()));
        let link = parse_link(&l).unwrap();
        assert_eq!(
            (link.index, link.name.as_str(), link.mtu),
            (5, "veth0", 1400)
        );
    }

    #[test]
    fn malformed_input_yields_nothing() {
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
        let mut bad = vec![0u8; 20];
        bad[0..4].copy_from_slice(&200u32.to_ne_bytes());
        assert_eq!(messages(&bad).count(), 0);
        assert!(parse_route(&[2, 0]).is_none());
        assert!(parse_neigh(&[]).is_none());
    }
}
