//! The flat, single-pass parse the engine runs on every frame: Ethernet (with
//! up to two VLAN tags, 802.1Q or 802.1ad), IPv4 (options, fragments) or IPv6 (extension headers),
//! TCP/UDP ports and flags, and the packet quoted inside ICMP errors.
//!
//! Every read is bounds-checked; any input yields `Ok` or a [`ParseError`],
//! never a panic.

use crate::addr::{Addr, Af};
use crate::wire::ip::IpProtocol;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// VLAN tags read before the IP header (802.1ad + 802.1Q: QinQ). The steering
/// program reads the same number (bpf/classify.h).
const MAX_VLAN_TAGS: usize = 2;
/// IP protocol number of ICMP (raw in `PacketInfo::proto`: the conn table keys on it).
pub const PROTO_ICMP: u8 = IpProtocol::Icmp.number();
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = IpProtocol::Tcp.number();
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = IpProtocol::Udp.number();
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = IpProtocol::Icmpv6.number();
/// IPv6 extension headers walked before giving up.
const MAX_EXT_HEADERS: usize = 8;

/// Fragmentation of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment.
    None,
    /// The first fragment (offset 0, more to come): carries the L4 header.
    First {
        /// IPv4 identification / IPv6 fragment id.
        id: u32,
    },
    /// A later fragment: no L4 header.
    Later {
        /// IPv4 identification / IPv6 fragment id.
        id: u32,
        /// Offset of its data, in 8-byte units.
        offset: u16,
    },
}

/// The packet quoted in an ICMP / ICMPv6 error. Small on purpose (it rides in
/// every [`PacketInfo`]): the quoted addresses are read from the frame on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpInfo {
    /// ICMP type.
    pub ty: u8,
    /// ICMP code.
    pub code: u8,
    /// Offset of the quoted IP header in the frame.
    pub inner_l3_off: u16,
    /// Offset of the quoted L4 header in the frame.
    pub inner_l4_off: u16,
    /// The quoted packet's IP protocol.
    pub proto: u8,
    /// The quoted packet's source port.
    pub sport: u16,
    /// The quoted packet's destination port.
    pub dport: u16,
}

impl IcmpInfo {
    /// The quoted packet's source and destination addresses, read from the frame
    /// this info was parsed from (of family `af`, the outer packet's).
    pub fn inner_addrs(&self, frame: &[u8], af: Af) -> Option<(Addr, Addr)> {
        let l3 = self.inner_l3_off as usize;
        match af {
            Af::V4 => Some((addr4(frame, l3 + 12)?, addr4(frame, l3 + 16)?)),
            Af::V6 => Some((addr16(frame, l3 + 8)?, addr16(frame, l3 + 24)?)),
        }
    }
}

/// What the engine needs to know about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Tag control information of the outer VLAN tag, if tagged.
    pub vlan: Option<u16>,
    /// Offset of the IP header in the frame.
    pub l3_off: u16,
    /// Offset of the L4 header in the frame.
    pub l4_off: u16,
    /// Address family.
    pub af: Af,
    /// L4 protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Source address.
    pub saddr: Addr,
    /// Destination address.
    pub daddr: Addr,
    /// 0 unless TCP/UDP carrying its header.
    pub sport: u16,
    /// Destination port (0 unless TCP/UDP carrying its header).
    pub dport: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 "don't fragment" (always true for IPv6, which routers never fragment).
    pub df: bool,
    /// IP length per the header (total length / 40 + payload length).
    pub l3_len: u16,
    /// Whether and which fragment it is.
    pub frag: Frag,
    /// For ICMP errors quoting a TCP/UDP packet.
    pub icmp: Option<IcmpInfo>,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4/IPv6 (ARP, LLDP, QinQ, ...): the kernel's business.
    NotIp,
    /// Shorter than its headers say.
    Truncated,
    /// Not IP version 4 or 6 where the EtherType says so.
    BadVersion,
    /// An IPv4 header length below 20 or past the frame.
    BadHeaderLen,
    /// A total length past the frame or below the header.
    BadTotalLen,
    /// More IPv6 extension headers than are walked.
    TooManyExtHeaders,
}

impl ParseError {
    /// Stable name for counters.
    pub const fn reason(&self) -> &'static str {
        match self {
            ParseError::NotIp => "not_ip",
            ParseError::Truncated => "truncated",
            ParseError::BadVersion => "bad_version",
            ParseError::BadHeaderLen => "bad_header_len",
            ParseError::BadTotalLen => "bad_total_len",
            ParseError::TooManyExtHeaders => "too_many_ext_headers",
        }
    }
}

#[inline]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

#[inline]
fn addr4(b: &[u8], off: usize) -> Option<Addr> {
    let s = b.get(off..off + 4)?;
    Some(Addr::v4([s[0], s[1], s[2], s[3]]))
}

#[inline]
fn addr16(b: &[u8], off: usize) -> Option<Addr> {
    let s = b.get(off..off + 16)?;
    let mut o = [0u8; 16];
    o.copy_from_slice(s);
    Some(Addr::v6(o))
}

/// The IP layer of a packet at `l3` in `b` (which ends where the IP packet may end).
struct Ip {
    af: Af,
    proto: u8,
    saddr: Addr,
    daddr: Addr,
    ttl: u8,
    df: bool,
    l3_len: u16,
    l4_off: usize,
    frag: Frag,
}

fn parse_ip(b: &[u8], l3: usize, quoted: bool) -> Result<Ip, ParseError> {
    let v = *b.get(l3).ok_or(ParseError::Truncated)? >> 4;
    match v {
        4 => {
            let ihl = (b[l3] & 0x0f) as usize * 4;
            if ihl < 20 {
                return Err(ParseError::BadHeaderLen);
            }
            if b.len() < l3 + ihl {
                return Err(ParseError::Truncated);
            }
            let total = be16(b, l3 + 2).ok_or(ParseError::Truncated)? as usize;
            if total < ihl {
                return Err(ParseError::BadTotalLen);
            }
            // A quoted packet is cut short by design; a real one must be whole.
            if !quoted && b.len() < l3 + total {
                return Err(ParseError::Truncated);
            }
            let fo = be16(b, l3 + 6).ok_or(ParseError::Truncated)?;
            let offset = fo & 0x1fff;
            let more = fo & 0x2000 != 0;
            let id = be16(b, l3 + 4).ok_or(ParseError::Truncated)? as u32;
            let frag = if offset != 0 {
                Frag::Later { id, offset }
            } else if more {
                Frag::First { id }
            } else {
                Frag::None
            };
            Ok(Ip {
                af: Af::V4,
                proto: b[l3 + 9],
                saddr: addr4(b, l3 + 12).ok_or(ParseError::Truncated)?,
                daddr: addr4(b, l3 + 16).ok_or(ParseError::Truncated)?,
                ttl: b[l3 + 8],
                df: fo & 0x4000 != 0,
                l3_len: total as u16,
                l4_off: l3 + ihl,
                frag,
            })
        }
        6 => {
            if b.len() < l3 + 40 {
                return Err(ParseError::Truncated);
            }
            let plen = be16(b, l3 + 4).ok_or(ParseError::Truncated)? as usize;
            let total = 40 + plen;
            if total > u16::MAX as usize {
                return Err(ParseError::BadTotalLen);
            }
            if !quoted && b.len() < l3 + total {
                return Err(ParseError::Truncated);
            }
            let end = if quoted { b.len() } else { l3 + total };
            let mut next = b[l3 + 6];
            let mut off = l3 + 40;
            let mut frag = Frag::None;
            let mut walked = 0;
            while matches!(next, 0 | 43 | 60 | 51 | 44) {
                walked += 1;
                if walked > MAX_EXT_HEADERS {
                    return Err(ParseError::TooManyExtHeaders);
                }
                if off + 8 > end {
                    return Err(ParseError::Truncated);
                }
                let len = match next {
                    44 => {
                        let fo = be16(b, off + 2).ok_or(ParseError::Truncated)?;
                        let id =
                            u32::from_be_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]);
                        let offset = fo >> 3;
                        let more = fo & 1 != 0;
                        frag = if offset != 0 {
                            Frag::Later { id, offset }
                        } else if more {
                            Frag::First { id }
                        } else {
                            Frag::None
                        };
                        8
                    }
                    51 => (b[off + 1] as usize + 2) * 4,
                    _ => (b[off + 1] as usize + 1) * 8,
                };
                next = b[off];
                off += len;
                if matches!(frag, Frag::Later { .. }) {
                    break;
                }
            }
            if off > end {
                return Err(ParseError::Truncated);
            }
            Ok(Ip {
                af: Af::V6,
                proto: next,
                saddr: addr16(b, l3 + 8).ok_or(ParseError::Truncated)?,
                daddr: addr16(b, l3 + 24).ok_or(ParseError::Truncated)?,
                ttl: b[l3 + 7],
                df: true,
                l3_len: total as u16,
                l4_off: off,
                frag,
            })
        }
        _ => Err(ParseError::BadVersion),
    }
}

fn is_icmp_error(proto: u8, ty: u8) -> bool {
    match proto {
        PROTO_ICMP => matches!(ty, 3 | 4 | 5 | 11 | 12),
        PROTO_ICMPV6 => (1..=4).contains(&ty),
        _ => false,
    }
}

/// The quoted packet of an ICMP error whose ICMP header is at `l4` (None when it
/// cannot be read or quotes something other than TCP/UDP).
fn parse_quoted(b: &[u8], l4: usize, proto: u8) -> Option<IcmpInfo> {
    let ty = *b.get(l4)?;
    let code = *b.get(l4 + 1)?;
    if !is_icmp_error(proto, ty) {
        return None;
    }
    let inner = l4 + 8;
    let ip = parse_ip(b, inner, true).ok()?;
    let want_v6 = proto == PROTO_ICMPV6;
    if (ip.af == Af::V6) != want_v6 || !matches!(ip.proto, PROTO_TCP | PROTO_UDP) {
        return None;
    }
    if matches!(ip.frag, Frag::Later { .. }) {
        return None;
    }
    Some(IcmpInfo {
        ty,
        code,
        inner_l3_off: inner as u16,
        inner_l4_off: ip.l4_off as u16,
        proto: ip.proto,
        sport: be16(b, ip.l4_off)?,
        dport: be16(b, ip.l4_off + 2)?,
    })
}

/// Parses a frame. See the module documentation.
#[inline]
pub fn parse(frame: &[u8]) -> Result<PacketInfo, ParseError> {
    if let Some(p) = parse_v4_fast(frame) {
        return Ok(p);
    }
    parse_slow(frame)
}

/// The common case in one straight line: untagged IPv4 without options, not a
/// fragment, TCP or UDP. Anything else (or anything odd) goes the general way.
#[inline]
fn parse_v4_fast(f: &[u8]) -> Option<PacketInfo> {
    let h: &[u8; 38] = f.get(..38)?.try_into().ok()?;
    if h[12] != 0x08 || h[13] != 0x00 || h[14] != 0x45 {
        return None;
    }
    let total = u16::from_be_bytes([h[16], h[17]]);
    let fo = u16::from_be_bytes([h[20], h[21]]);
    let proto = h[23];
    if fo & 0x3fff != 0 || (total as usize) + 14 > f.len() {
        return None;
    }
    let need = match proto {
        PROTO_TCP => 40,
        PROTO_UDP => 28,
        _ => return None,
    };
    if total < need {
        return None;
    }
    let tcp_flags = if proto == PROTO_TCP {
        let doff = (f[46] >> 4) as u16 * 4;
        if doff < 20 || 20 + doff > total {
            return None;
        }
        f[47]
    } else {
        0
    };
    Some(PacketInfo {
        vlan: None,
        l3_off: 14,
        l4_off: 34,
        af: Af::V4,
        proto,
        saddr: Addr::v4([h[26], h[27], h[28], h[29]]),
        daddr: Addr::v4([h[30], h[31], h[32], h[33]]),
        sport: u16::from_be_bytes([h[34], h[35]]),
        dport: u16::from_be_bytes([h[36], h[37]]),
        tcp_flags,
        ttl: h[22],
        df: fo & 0x4000 != 0,
        l3_len: total,
        frag: Frag::None,
        icmp: None,
    })
}

fn parse_slow(frame: &[u8]) -> Result<PacketInfo, ParseError> {
    let mut et = be16(frame, 12).ok_or(ParseError::Truncated)?;
    let mut l3 = 14;
    let mut vlan = None;
    for _ in 0..MAX_VLAN_TAGS {
        if et != ETH_P_8021Q && et != ETH_P_8021AD {
            break;
        }
        let tci = be16(frame, l3).ok_or(ParseError::Truncated)?;
        vlan.get_or_insert(tci);
        et = be16(frame, l3 + 2).ok_or(ParseError::Truncated)?;
        l3 += 4;
    }
    if et != ETH_P_IP && et != ETH_P_IPV6 {
        return Err(ParseError::NotIp);
    }
    let ip = parse_ip(frame, l3, false)?;
    if (ip.af == Af::V4) != (et == ETH_P_IP) {
        return Err(ParseError::BadVersion);
    }
    // Ethernet padding beyond the IP packet is not part of it.
    let b = &frame[..l3 + ip.l3_len as usize];
    let mut info = PacketInfo {
        vlan,
        l3_off: l3 as u16,
        l4_off: ip.l4_off as u16,
        af: ip.af,
        proto: ip.proto,
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        ttl: ip.ttl,
        df: ip.df,
        l3_len: ip.l3_len,
        frag: ip.frag,
        icmp: None,
    };
    if matches!(ip.frag, Frag::Later { .. }) {
        return Ok(info);
    }
    let l4 = ip.l4_off;
    match ip.proto {
        PROTO_TCP => {
            if b.len() < l4 + 20 {
                return Err(ParseError::Truncated);
            }
            let doff = (b[l4 + 12] >> 4) as usize * 4;
            if doff < 20 {
                return Err(ParseError::BadHeaderLen);
            }
            if b.len() < l4 + doff {
                return Err(ParseError::Truncated);
            }
            info.sport = be16(b, l4).ok_or(ParseError::Truncated)?;
            info.dport = be16(b, l4 + 2).ok_or(ParseError::Truncated)?;
            info.tcp_flags = b[l4 + 13];
        }
        PROTO_UDP => {
            if b.len() < l4 + 8 {
                return Err(ParseError::Truncated);
            }
            info.sport = be16(b, l4).ok_or(ParseError::Truncated)?;
            info.dport = be16(b, l4 + 2).ok_or(ParseError::Truncated)?;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if b.len() < l4 + 8 {
                return Err(ParseError::Truncated);
            }
            if ip.frag == Frag::None {
                info.icmp = parse_quoted(b, l4, ip.proto);
            }
        }
        _ => {}
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real SYN: 10.0.0.1:40000 -> 10.0.0.2:80, captured layout.
    const SYN: [u8; 54] = [
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, // eth
        0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // ipv4
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, // tcp
    ];

    #[test]
    fn parses_ipv4_tcp_syn() {
        let p = parse(&SYN).unwrap();
        assert_eq!(p.af, Af::V4);
        assert_eq!((p.l3_off, p.l4_off, p.l3_len), (14, 34, 40));
        assert_eq!((p.sport, p.dport, p.tcp_flags), (40000, 80, 0x02));
        assert_eq!(p.saddr.to_string(), "10.0.0.1");
        assert!(p.df);
        assert_eq!(p.frag, Frag::None);
    }

    #[test]
    fn fast_and_general_paths_agree() {
        let mut f = SYN.to_vec();
        for flags in [0x02u8, 0x10, 0x11] {
            f[47] = flags;
            assert_eq!(parse_v4_fast(&f), Some(parse_slow(&f).unwrap()));
        }
        let mut u = SYN[..34].to_vec();
        u[23] = 17;
        u[16..18].copy_from_slice(&28u16.to_be_bytes());
        u.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        assert_eq!(parse_v4_fast(&u), Some(parse_slow(&u).unwrap()));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for n in 0..SYN.len() {
            let r = parse(&SYN[..n]);
            assert!(r.is_err(), "length {n} parsed");
        }
    }

    #[test]
    fn padding_beyond_total_length_is_ignored() {
        let mut f = SYN.to_vec();
        f.extend_from_slice(&[0xee; 6]);
        assert_eq!(parse(&f).unwrap().l3_len, 40);
    }

    #[test]
    fn vlan_options_and_fragments() {
        let mut f = SYN[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        // IPv4 with 4 bytes of options (IHL 6), later fragment at offset 8*3.
        f.extend_from_slice(&[0x46, 0, 0, 32, 0xab, 0xcd, 0x00, 0x03, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 0, 0]);
        f.extend_from_slice(&[0u8; 8]);
        let p = parse(&f).unwrap();
        assert_eq!(p.vlan, Some(7));
        assert_eq!((p.l3_off, p.l4_off), (18, 42));
        assert_eq!(
            p.frag,
            Frag::Later {
                id: 0xabcd,
                offset: 3
            }
        );
        assert_eq!((p.sport, p.dport), (0, 0));
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let mut f = SYN[..12].to_vec();
        f.extend_from_slice(&[0x86, 0xdd]);
        let plen: u16 = 8 + 8 + 8;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[0, 64]); // next header: hop-by-hop
        f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        f.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, 8 bytes, next = fragment
        f.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]); // fragment: offset 0, M, id 9, next UDP
        f.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]); // udp
        let p = parse(&f).unwrap();
        assert_eq!(p.af, Af::V6);
        assert_eq!(p.proto, 17);
        assert_eq!(p.l4_off, 14 + 40 + 16);
        assert_eq!(p.frag, Frag::First { id: 9 });
        assert_eq!((p.sport, p.dport), (5000, 53));
    }

    #[test]
    fn icmp_error_quotes_are_parsed() {
        let mut f = SYN[..14].to_vec();
        f.extend_from_slice(&[
            0x45, 0, 0, 56, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1,
        ]);
        f.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&SYN[14..42]); // quoted IPv4 header + 8 bytes of TCP
        let p = parse(&f).unwrap();
        let ic = p.icmp.unwrap();
        assert_eq!((ic.ty, ic.code, ic.proto), (3, 3, 6));
        assert_eq!((ic.sport, ic.dport), (40000, 80));
        let (_, d) = ic.inner_addrs(&f, Af::V4).unwrap();
        assert_eq!(d.to_string(), "10.0.0.2");
        assert_eq!((ic.inner_l3_off, ic.inner_l4_off), (42, 62));
    }

    #[test]
    fn qinq_and_802_1ad_tags_are_skipped() {
        for tags in [
            &[0x88, 0xa8, 0x00, 0x05][..],
            &[0x88, 0xa8, 0x00, 0x05, 0x81, 0x00, 0x00, 0x07][..],
            &[0x81, 0x00, 0x00, 0x05, 0x81, 0x00, 0x00, 0x07][..],
        ] {
            let mut f = SYN[..12].to_vec();
            f.extend_from_slice(tags);
            f.extend_from_slice(&SYN[12..]);
            let p = parse(&f).unwrap();
            assert_eq!(p.vlan, Some(5));
            assert_eq!(p.l3_off as usize, 14 + tags.len());
            assert_eq!((p.proto, p.sport, p.dport), (PROTO_TCP, 40000, 80));
        }
        // A third tag is more than the steering program reads either.
        let mut f = SYN[..12].to_vec();
        f.extend_from_slice(&[0x88, 0xa8, 0, 5, 0x81, 0, 0, 6, 0x81, 0, 0, 7]);
        f.extend_from_slice(&SYN[12..]);
        assert_eq!(parse(&f), Err(ParseError::NotIp));
    }

    #[test]
    fn arp_is_not_ip() {
        let mut f = SYN[..12].to_vec();
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0u8; 28]);
        assert_eq!(parse(&f), Err(ParseError::NotIp));
    }
}
