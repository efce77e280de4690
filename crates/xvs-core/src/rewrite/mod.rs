//! Frame rewrites: addresses and ports with incremental checksums (NAT,
//! FULLNAT), MAC addresses (every mode), TTL, ICMP error translation, tunnel
//! encapsulation, and ICMP errors generated in place.
//!
//! All functions take the frame and its [`PacketInfo`] from
//! [`crate::wire::parse`]; they never panic on a frame that parsed.

pub(crate) mod icmp;
pub(crate) mod tunnel;

use crate::addr::Addr;
use crate::service::Af;
use crate::wire::checksum::{fold, sum, update, update16};
use crate::wire::parse::{Frag, PacketInfo, PROTO_TCP, PROTO_UDP};

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

/// The address bytes of `a` in the family of the packet (4 or 16 bytes).
#[inline]
pub(crate) fn addr_bytes(a: &Addr, af: Af) -> &[u8] {
    match af {
        Af::V4 => &a.0[12..16],
        Af::V6 => &a.0[..],
    }
}

/// Offset of the source (or destination) address in the IP header.
#[inline]
pub(crate) fn addr_off(info: &PacketInfo, end: End) -> usize {
    let l3 = info.l3_off as usize;
    match (info.af, end) {
        (Af::V4, End::Src) => l3 + 12,
        (Af::V4, End::Dst) => l3 + 16,
        (Af::V6, End::Src) => l3 + 8,
        (Af::V6, End::Dst) => l3 + 24,
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
            let Some(ip) = data.get(l3..l3 + 20) else {
                return false;
            };
            let ip: &[u8; 20] = ip.try_into().expect("20 bytes");
            w(ip[12], ip[13]) + w(ip[14], ip[15]) + w(ip[16], ip[17]) + w(ip[18], ip[19])
        }
        Af::V6 => {
            let Some(ip) = data.get(l3 + 8..l3 + 40) else {
                return false;
            };
            let ip: &[u8; 32] = ip.try_into().expect("32 bytes");
            (0..16).map(|i| w(ip[2 * i], ip[2 * i + 1])).sum()
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
    let aoff = addr_off(info, end);
    let new = addr_bytes(addr, info.af);
    let n = new.len();
    if aoff + n > data.len() {
        return;
    }
    let mut old = [0u8; 16];
    old[..n].copy_from_slice(&data[aoff..aoff + n]);
    data[aoff..aoff + n].copy_from_slice(new);
    if info.af == Af::V4 {
        let c = info.l3_off as usize + 10;
        let ck = update(get16(data, c), &old[..4], new);
        put16(data, c, ck);
    }
    if let Some(c) = l4_csum_off(data, info) {
        let mut ck = update(get16(data, c), &old[..n], new);
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
    let Some(ip) = data.get_mut(l3..l3 + 20) else {
        return;
    };
    let ip: &mut [u8; 20] = ip.try_into().expect("20 bytes");
    let a = if end == End::Src { 12 } else { 16 };
    let w = |x: u8, y: u8| u16::from_be_bytes([x, y]) as u32;
    let new = &addr.0[12..16];
    // ~old + new for the two address words, shared by both checksums.
    let delta = (0xffff - w(ip[a], ip[a + 1]))
        + (0xffff - w(ip[a + 2], ip[a + 3]))
        + w(new[0], new[1])
        + w(new[2], new[3]);
    ip[a..a + 4].copy_from_slice(new);
    let ipck = !fold((0xffff - w(ip[10], ip[11])) + delta);
    ip[10..12].copy_from_slice(&ipck.to_be_bytes());
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
            if l3 + 20 > data.len() || data[l3 + 8] <= 1 {
                return false;
            }
            let old = get16(data, l3 + 8);
            data[l3 + 8] -= 1;
            let ck = update16(get16(data, l3 + 10), old, get16(data, l3 + 8));
            put16(data, l3 + 10, ck);
            true
        }
        Af::V6 => {
            if l3 + 40 > data.len() || data[l3 + 7] <= 1 {
                return false;
            }
            data[l3 + 7] -= 1;
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
