//! Frame rewrites: addresses and ports with incremental checksums (NAT,
//! FULLNAT), MAC addresses (every mode), TTL, ICMP error translation, tunnel
//! encapsulation, and ICMP errors generated in place.
//!
//! All functions take the frame and its [`PacketInfo`] from
//! [`crate::wire::parse`]; they never panic on a frame that parsed.

pub(crate) mod icmp;
pub(crate) mod tunnel;

use crate::addr::{Addr, Af};
use crate::wire::checksum::{fold, sum, update, update16};
use crate::wire::parse::{Frag, PacketInfo, PROTO_TCP, PROTO_UDP};
use crate::wire::{ipv4, ipv6, Ipv4Packet, Ipv6Packet};

/// Which end of the packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Src,
    Dst,
}

/// Sets the Ethernet destination and source MAC addresses.
#[inline]
pub(crate) fn set_macs(data: &mut [u8], src: &[u8; 6], dst: &[u8; 6]) {
    if data.len() >= 12 {
        data[0..6].copy_from_slice(dst);
        data[6..12].copy_from_slice(src);
    }
}

#[inline]
fn get16(d: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([d[off], d[off + 1]])
}

#[inline]
fn put16(d: &mut [u8], off: usize, v: u16) {
    d[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Offset of the TCP/UDP checksum, if the packet carries one to update.
#[inline]
fn l4_csum_off(d: &[u8], info: &PacketInfo) -> Option<usize> {
    if matches!(info.frag, Frag::Later { .. }) {
        return None;
    }
    let l4 = info.l4_off as usize;
    let off = match info.proto {
        PROTO_TCP => l4 + 16,
        PROTO_UDP => l4 + 6,
        _ => return None,
    };
    if off + 2 > d.len() {
        return None;
    }
    // An IPv4 UDP checksum of 0 means "none" and stays 0.
    if info.proto == PROTO_UDP && info.af == Af::V4 && get16(d, off) == 0 {
        return None;
    }
    Some(off)
}

/// Completes a TCP/UDP checksum that a local sender left partial, and says
/// whether it did.
///
/// A frame sent by a local stack over veth, a tap or a container interface
/// usually carries CHECKSUM_PARTIAL: the kernel stores only the folded
/// pseudo-header sum in the checksum field (`~tcp_v4_check(len, saddr, daddr, 0)`,
/// `~csum_ipv6_magic(..)`) and leaves the rest to the device; XDP and AF_XDP see
/// the frame as it is. A director that forwards it must finish the sum, or the
/// receiver drops the frame. A field equal to the pseudo-header sum is completed
/// over the whole segment; if such a field was in fact a valid full checksum, the
/// recomputation yields the same value, so the check is always safe. Fragments are
/// left alone: the kernel completes checksums before it fragments, and a first
/// fragment does not hold the whole segment.
#[inline(always)]
pub(crate) fn complete_partial(data: &mut [u8], info: &PacketInfo) -> bool {
    let ck_at = match (info.proto, info.frag) {
        (PROTO_TCP, Frag::None) => 16,
        (PROTO_UDP, Frag::None) => 6,
        _ => return false,
    };
    let (l3, l4) = (info.l3_off as usize, info.l4_off as usize);
    let Some(l4_len) = (info.l3_len as usize).checked_sub(l4 - l3) else {
        return false;
    };
    let w = |x: u8, y: u8| u16::from_be_bytes([x, y]) as u32;
    // The pseudo-header sum over fixed-size views (bounds checked once): this
    // check runs on every forwarded packet, the completion only on partial ones.
    let ps = match info.af {
        Af::V4 => {
            let Some(ip) = data.get(l3..l3 + ipv4::HEADER_LEN) else {
                return false;
            };
            let ip: &[u8; ipv4::HEADER_LEN] = ip.try_into().expect("20 bytes");
            let ip = Ipv4Packet::new_unchecked(ip);
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            w(s[0], s[1]) + w(s[2], s[3]) + w(d[0], d[1]) + w(d[2], d[3])
        }
        Af::V6 => {
            let Some(ip) = data.get(l3..l3 + ipv6::HEADER_LEN) else {
                return false;
            };
            let ip: &[u8; ipv6::HEADER_LEN] = ip.try_into().expect("40 bytes");
            let ip = Ipv6Packet::new_unchecked(ip);
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            (0..8)
                .map(|i| w(s[2 * i], s[2 * i + 1]) + w(d[2 * i], d[2 * i + 1]))
                .sum()
        }
    } + info.proto as u32
        + l4_len as u32;
    let Some(f) = data.get(l4 + ck_at..l4 + ck_at + 2) else {
        return false;
    };
    if w(f[0], f[1]) != fold(ps) as u32 {
        return false;
    }
    finish_checksum(data, l4, l4_len, ck_at, ps, info.proto)
}

/// Writes the full TCP/UDP checksum of the segment at `l4` (the slow half of
/// [`complete_partial`]).
#[cold]
#[inline(never)]
fn finish_checksum(
    data: &mut [u8],
    l4: usize,
    len: usize,
    ck_at: usize,
    ps: u32,
    proto: u8,
) -> bool {
    let Some(seg) = data.get_mut(l4..l4 + len) else {
        return false;
    };
    if seg.len() < ck_at + 2 {
        return false;
    }
    seg[ck_at..ck_at + 2].copy_from_slice(&[0, 0]);
    let mut ck = !fold(sum(seg, ps));
    if proto == PROTO_UDP && ck == 0 {
        ck = 0xffff;
    }
    seg[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    true
}

/// Rewrites one end's address and port (port only when the packet carries the
/// L4 header), updating the IPv4 header checksum and the TCP/UDP checksum
/// incrementally.
pub(crate) fn rewrite_end(data: &mut [u8], info: &PacketInfo, end: End, addr: &Addr, port: u16) {
    if info.af == Af::V4 {
        return rewrite_end_v4(data, info, end, addr, port);
    }
    let l3 = info.l3_off as usize;
    let Some(h) = data.get_mut(l3..l3 + ipv6::HEADER_LEN) else {
        return;
    };
    let mut ip = Ipv6Packet::new_unchecked(h);
    let old = match end {
        End::Src => ip.src_addr(),
        End::Dst => ip.dst_addr(),
    };
    match end {
        End::Src => ip.set_src_addr(&addr.0),
        End::Dst => ip.set_dst_addr(&addr.0),
    }
    if let Some(c) = l4_csum_off(data, info) {
        let mut ck = update(get16(data, c), &old, &addr.0);
        let poff = info.l4_off as usize + if end == End::Src { 0 } else { 2 };
        let oldp = get16(data, poff);
        ck = update16(ck, oldp, port);
        put16(data, poff, port);
        if info.proto == PROTO_UDP && ck == 0 {
            ck = 0xffff;
        }
        put16(data, c, ck);
    } else if !matches!(info.frag, Frag::Later { .. })
        && matches!(info.proto, PROTO_TCP | PROTO_UDP)
    {
        // UDP without checksum: only the port changes.
        let poff = info.l4_off as usize + if end == End::Src { 0 } else { 2 };
        if poff + 2 <= data.len() {
            put16(data, poff, port);
        }
    }
}

/// [`rewrite_end`] for IPv4: the same sums on two 16-bit words, without loops,
/// on fixed-size views of the headers (bounds checked once).
#[inline]
fn rewrite_end_v4(data: &mut [u8], info: &PacketInfo, end: End, addr: &Addr, port: u16) {
    let l3 = info.l3_off as usize;
    let l4 = info.l4_off as usize;
    let later = matches!(info.frag, Frag::Later { .. });
    let ck_at = match (info.proto, later) {
        (PROTO_TCP, false) => Some(16usize),
        (PROTO_UDP, false) => Some(6),
        _ => None,
    };
    let Some(ip) = data.get_mut(l3..l3 + ipv4::HEADER_LEN) else {
        return;
    };
    let ip: &mut [u8; ipv4::HEADER_LEN] = ip.try_into().expect("20 bytes");
    let mut ip = Ipv4Packet::new_unchecked(ip);
    let w = |x: u8, y: u8| u16::from_be_bytes([x, y]) as u32;
    let old = match end {
        End::Src => ip.src_addr(),
        End::Dst => ip.dst_addr(),
    };
    let new = addr.v4_octets();
    // ~old + new for the two address words, shared by both checksums.
    let delta = (0xffff - w(old[0], old[1]))
        + (0xffff - w(old[2], old[3]))
        + w(new[0], new[1])
        + w(new[2], new[3]);
    match end {
        End::Src => ip.set_src_addr(new),
        End::Dst => ip.set_dst_addr(new),
    }
    ip.set_checksum(!fold((0xffff - ip.checksum() as u32) + delta));
    let Some(ck_at) = ck_at else { return };
    // The L4 header up to and including its checksum field (8 bytes UDP, 18 TCP).
    let Some(l4h) = data.get_mut(l4..l4 + ck_at + 2) else {
        return;
    };
    let p = if end == End::Src { 0 } else { 2 };
    let op = w(l4h[p], l4h[p + 1]);
    l4h[p..p + 2].copy_from_slice(&port.to_be_bytes());
    let ck = w(l4h[ck_at], l4h[ck_at + 1]);
    // An IPv4 UDP checksum of 0 means "none" and stays 0.
    if info.proto == PROTO_UDP && ck == 0 {
        return;
    }
    let mut nck = !fold((0xffff - ck) + delta + (0xffff - op) + port as u32);
    if info.proto == PROTO_UDP && nck == 0 {
        nck = 0xffff;
    }
    l4h[ck_at..ck_at + 2].copy_from_slice(&nck.to_be_bytes());
}

/// NAT inbound: destination VIP:vport → RIP:rport.
#[inline]
pub(crate) fn dnat(data: &mut [u8], info: &PacketInfo, addr: &Addr, port: u16) {
    rewrite_end(data, info, End::Dst, addr, port);
}

/// NAT outbound: source RIP:rport → VIP:vport.
#[inline]
pub(crate) fn snat(data: &mut [u8], info: &PacketInfo, addr: &Addr, port: u16) {
    rewrite_end(data, info, End::Src, addr, port);
}

/// FULLNAT: both ends.
#[inline]
pub(crate) fn fullnat(data: &mut [u8], info: &PacketInfo, src: (&Addr, u16), dst: (&Addr, u16)) {
    rewrite_end(data, info, End::Src, src.0, src.1);
    rewrite_end(data, info, End::Dst, dst.0, dst.1);
}

/// Decrements the TTL / hop limit of a forwarded packet; false when it is
/// exhausted (the packet must be dropped).
pub(crate) fn decrement_ttl(data: &mut [u8], info: &PacketInfo) -> bool {
    let l3 = info.l3_off as usize;
    match info.af {
        Af::V4 => {
            let Some(h) = data.get_mut(l3..l3 + ipv4::HEADER_LEN) else {
                return false;
            };
            let mut ip = Ipv4Packet::new_unchecked(h);
            let ttl = ip.ttl();
            if ttl <= 1 {
                return false;
            }
            let old = ip.ttl_protocol_word();
            ip.set_ttl(ttl - 1);
            ip.set_checksum(update16(ip.checksum(), old, ip.ttl_protocol_word()));
            true
        }
        Af::V6 => {
            let Some(h) = data.get_mut(l3..l3 + ipv6::HEADER_LEN) else {
                return false;
            };
            let mut ip = Ipv6Packet::new_unchecked(h);
            let hops = ip.hop_limit();
            if hops <= 1 {
                return false;
            }
            ip.set_hop_limit(hops - 1);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{checksum, fold, pseudo, sum};
    use crate::wire::parse;

    fn syn() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 44, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[10, 77, 0, 2, 10, 77, 0, 100]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        ]);
        f.extend_from_slice(&[2, 4, 5, 0xb4]);
        let ck = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ck.to_be_bytes());
        let seg = &f[34..];
        let ck = !fold(sum(
            seg,
            pseudo(&f[26..30], &f[30..34], 6, seg.len() as u32),
        ));
        f[50..52].copy_from_slice(&ck.to_be_bytes());
        f
    }

    fn valid(f: &[u8]) -> bool {
        let seg = &f[34..];
        checksum(&f[14..34]) == 0
            && fold(sum(
                seg,
                pseudo(&f[26..30], &f[30..34], 6, seg.len() as u32),
            )) == 0xffff
    }

    #[test]
    fn dnat_is_byte_exact_and_checksums_stay_valid() {
        let mut f = syn();
        assert!(valid(&f));
        let info = parse(&f).unwrap();
        dnat(&mut f, &info, &Addr::v4([10, 77, 1, 11]), 8080);
        assert!(valid(&f));
        assert_eq!(&f[30..34], &[10, 77, 1, 11]);
        assert_eq!(&f[36..38], &8080u16.to_be_bytes());
        // Exactly the bytes a from-scratch build would have.
        let mut expect = syn();
        expect[30..34].copy_from_slice(&[10, 77, 1, 11]);
        expect[36..38].copy_from_slice(&8080u16.to_be_bytes());
        expect[24..26].copy_from_slice(&[0, 0]);
        expect[50..52].copy_from_slice(&[0, 0]);
        let ck = checksum(&expect[14..34]);
        expect[24..26].copy_from_slice(&ck.to_be_bytes());
        let seg = expect[34..].to_vec();
        let ck = !fold(sum(
            &seg,
            pseudo(&expect[26..30], &expect[30..34], 6, seg.len() as u32),
        ));
        expect[50..52].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(f, expect);
    }

    #[test]
    fn ttl_decrement_keeps_header_checksum() {
        let mut f = syn();
        let info = parse(&f).unwrap();
        assert!(decrement_ttl(&mut f, &info));
        assert_eq!(f[22], 63);
        assert!(valid(&f));
        f[22] = 1;
        let ck = checksum(&{
            let mut h = f[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        f[24..26].copy_from_slice(&ck.to_be_bytes());
        assert!(!decrement_ttl(&mut f, &info));
    }
}
