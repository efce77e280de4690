//! Cutting TCP super-frames into MTU-sized segments, as the kernel's GSO does.
//!
//! Under generic XDP and AF_PACKET the kernel hands xvs frames larger than the
//! MTU: TSO/GSO frames of a local sender on the other end of a veth, and GRO
//! aggregates. They cannot be transmitted as they are (the peer drops anything
//! above its MTU), so the I/O layer cuts them here first, then gives each
//! segment to the engine as an ordinary frame.
//!
//! The segments are what `tcp_gso_segment` + `inet_gso_segment` /
//! `ipv6_gso_segment` would produce from the same skb:
//! - every header (Ethernet, an 802.1Q tag, IPv4 with options or IPv6 with
//!   extension headers, TCP with options) copied into each segment;
//! - IPv4: total length per segment, the identification incremented per
//!   segment (wrapping), header checksum recomputed; IPv6: payload length;
//! - TCP: sequence number advanced by the payload before it; FIN and PSH only
//!   on the last segment, CWR only on the first; the full checksum computed
//!   from scratch (the super-frame's field holds a partial sum or a GRO
//!   leftover, so it is never patched incrementally).
//!
//! A SYN or RST super-frame (which neither TSO nor GRO produces) is refused
//! rather than cut into segments that would all carry the flag.
//!
//! The kernel cuts at the sender's `gso_size`, which AF_XDP and AF_PACKET do
//! not expose; here the payload per segment is `max_ip` (the ingress MTU) minus
//! the IP and TCP headers, which is what a sender on the same link uses as its
//! MSS. The same cannot be done for UDP: a UDP GSO super-frame is a train of
//! datagrams whose boundaries only `gso_size` tells, so UDP (and anything
//! else that is not TCP) is refused with [`GsoError::NotTcp`].
//!
//! No allocation: the caller provides one output buffer per segment. Every read
//! is bounds-checked; hostile input yields an error, never a panic.

use super::checksum::{fold, pseudo, sum_wide};
use super::parse::PROTO_TCP;
use super::{ipv6, Ipv4Packet, Ipv6Packet};
use crate::addr::Af;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
/// IPv6 extension headers walked before giving up (as the parser).
const MAX_EXT_HEADERS: usize = 8;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a super-frame cannot be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// Not TCP: a UDP GSO super-frame cannot be cut without the sender's
    /// gso_size, which the frame does not carry.
    #[error("not TCP (UDP super-frames cannot be cut without the sender's gso_size)")]
    NotTcp,
    /// An IP fragment, an IPv6 fragment or AH header, or too many extension
    /// headers: never the output of GSO or GRO.
    #[error("fragment or IPv6 extension header GSO does not handle")]
    Unsupported,
    /// Headers or lengths that do not add up (truncated, lengths that lie,
    /// IPv4 total length 0 or an IPv6 jumbogram).
    #[error("malformed headers or lengths")]
    Malformed,
    /// The MTU leaves no room for payload after the headers.
    #[error("MTU too small for the headers")]
    MtuTooSmall,
    /// Segment index out of range, or an output buffer too small for it.
    #[error("no such segment, or output buffer too small")]
    Buffer,
}

impl GsoError {
    /// Stable name for counters.
    pub const fn reason(&self) -> &'static str {
        match self {
            GsoError::NotTcp => "not_tcp",
            GsoError::Unsupported => "unsupported",
            GsoError::Malformed => "malformed",
            GsoError::MtuTooSmall => "mtu_too_small",
            GsoError::Buffer => "buffer",
        }
    }
}

/// How a TCP super-frame is cut: validated offsets and the segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    af: Af,
    l3: usize,
    l4: usize,
    /// Start of the TCP payload (end of all headers).
    payload: usize,
    /// End of the IP packet in the frame (bytes after it are ignored).
    end: usize,
    mss: usize,
    segments: usize,
}

impl Plan {
    /// Number of segments.
    #[inline]
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// TCP payload bytes per segment (the last may carry fewer).
    #[inline]
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// The address family of the super-frame.
    #[inline]
    pub fn af(&self) -> Af {
        self.af
    }

    /// Frame length of segment `k` (0 if there is no such segment).
    #[inline]
    pub fn seg_len(&self, k: usize) -> usize {
        self.seg_payload(k)
            .map_or(0, |(a, b)| self.payload + (b - a))
    }

    /// Frame length of the largest segment (every output buffer needs this much).
    #[inline]
    pub fn max_seg_len(&self) -> usize {
        self.seg_len(0)
    }

    /// Payload range of segment `k`, relative to the start of the payload.
    #[inline]
    fn seg_payload(&self, k: usize) -> Option<(usize, usize)> {
        if k >= self.segments {
            return None;
        }
        let plen = self.end - self.payload;
        let a = k * self.mss;
        Some((a, (a + self.mss).min(plen)))
    }
}

#[inline]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// The IP layer of a frame: (family, l3 offset, l4 offset, end of the IP
/// packet), checked against the frame length; L4 must be TCP.
fn ip_layer(f: &[u8]) -> Result<(Af, usize, usize, usize), GsoError> {
    let mut l3 = 14;
    let mut ty = be16(f, 12).ok_or(GsoError::Malformed)?;
    if ty == ETH_P_8021Q {
        ty = be16(f, 16).ok_or(GsoError::Malformed)?;
        l3 = 18;
    }
    match ty {
        ETH_P_IP => {
            let vihl = *f.get(l3).ok_or(GsoError::Malformed)?;
            let ihl = (vihl & 0x0f) as usize * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(GsoError::Malformed);
            }
            let total = be16(f, l3 + 2).ok_or(GsoError::Malformed)? as usize;
            // Total length 0 is BIG TCP's "see the skb": no skb here.
            if total < ihl || l3 + total > f.len() {
                return Err(GsoError::Malformed);
            }
            let fo = be16(f, l3 + 6).ok_or(GsoError::Malformed)?;
            if fo & 0x3fff != 0 {
                return Err(GsoError::Unsupported);
            }
            if f[l3 + 9] != PROTO_TCP {
                return Err(GsoError::NotTcp);
            }
            Ok((Af::V4, l3, l3 + ihl, l3 + total))
        }
        ETH_P_IPV6 => {
            if f.len() < l3 + 40 || f[l3] >> 4 != 6 {
                return Err(GsoError::Malformed);
            }
            let plen = be16(f, l3 + 4).ok_or(GsoError::Malformed)? as usize;
            let end = l3 + 40 + plen;
            // Payload length 0 with data is a jumbogram (BIG TCP): not cut here.
            if plen == 0 || end > f.len() {
                return Err(GsoError::Malformed);
            }
            let mut next = f[l3 + 6];
            let mut off = l3 + 40;
            let mut walked = 0;
            // The extension headers ipv6_gso_segment copies into each segment
            // (hop-by-hop, routing, destination options); fragment and AH
            // headers never head a GSO packet.
            loop {
                match next {
                    0 | 43 | 60 => {}
                    44 | 51 => return Err(GsoError::Unsupported),
                    PROTO_TCP => break,
                    _ => return Err(GsoError::NotTcp),
                }
                walked += 1;
                if walked > MAX_EXT_HEADERS {
                    return Err(GsoError::Unsupported);
                }
                if off + 8 > end {
                    return Err(GsoError::Malformed);
                }
                next = f[off];
                off += (f[off + 1] as usize + 1) * 8;
            }
            if off > end {
                return Err(GsoError::Malformed);
            }
            Ok((Af::V6, l3, off, end))
        }
        _ => Err(GsoError::Malformed),
    }
}

/// Plans the cut of `frame` into IP packets of at most `max_ip` bytes (the
/// MTU). `Ok(None)`: not a super-frame by its own header (the IP packet fits,
/// or the frame is not IP): handle it as any other frame. A super-frame that
/// is not TCP is [`GsoError::NotTcp`].
pub fn plan(frame: &[u8], max_ip: usize) -> Result<Option<Plan>, GsoError> {
    // Fits-the-MTU first, so that only super-frames are refused for their protocol.
    match ip_len(frame) {
        Some(n) if n > max_ip => {}
        _ => return Ok(None),
    }
    let (af, l3, l4, end) = ip_layer(frame)?;
    let doff = frame.get(l4 + 12).ok_or(GsoError::Malformed)? >> 4;
    let thlen = doff as usize * 4;
    if thlen < 20 || l4 + thlen > end {
        return Err(GsoError::Malformed);
    }
    // Neither TSO nor GRO ever makes a SYN or RST super-frame; cutting one
    // would repeat the flag in every segment.
    if frame[l4 + 13] & (TCP_SYN | TCP_RST) != 0 {
        return Err(GsoError::Malformed);
    }
    let payload = l4 + thlen;
    let mss = max_ip
        .checked_sub(payload - l3)
        .filter(|&m| m > 0)
        .ok_or(GsoError::MtuTooSmall)?;
    let plen = end - payload;
    Ok(Some(Plan {
        af,
        l3,
        l4,
        payload,
        end,
        mss,
        segments: plen.div_ceil(mss),
    }))
}

/// The IP length a frame's header claims, if it is IPv4/IPv6 behind Ethernet
/// and at most one 802.1Q tag.
fn ip_len(f: &[u8]) -> Option<usize> {
    let (ty, l3) = match be16(f, 12)? {
        ETH_P_8021Q => (be16(f, 16)?, 18),
        t => (t, 14),
    };
    match ty {
        ETH_P_IP => Some(be16(f, l3 + 2)? as usize),
        ETH_P_IPV6 => Some(40 + be16(f, l3 + 4)? as usize),
        _ => None,
    }
}

/// Writes segment `k` of `frame` (cut as `plan` says; `plan` must come from
/// [`plan`] on the same bytes) into the start of `out`; returns its length.
pub fn segment(frame: &[u8], plan: &Plan, k: usize, out: &mut [u8]) -> Result<usize, GsoError> {
    let (a, b) = plan.seg_payload(k).ok_or(GsoError::Buffer)?;
    let p = plan;
    if p.end > frame.len() || p.payload > p.end || p.l4 + 20 > p.payload || p.l3 + 20 > p.l4 {
        return Err(GsoError::Buffer);
    }
    let len = p.payload + (b - a);
    let out = out.get_mut(..len).ok_or(GsoError::Buffer)?;
    out[..p.payload].copy_from_slice(&frame[..p.payload]);
    out[p.payload..].copy_from_slice(&frame[p.payload + a..p.payload + b]);
    let ip_len = len - p.l3;
    let tcp_len = len - p.l4;
    let ps = match p.af {
        Af::V4 => {
            let mut ip = Ipv4Packet::new_unchecked(&mut out[p.l3..p.l4]);
            ip.set_total_len(ip_len as u16);
            ip.set_ident(ip.ident().wrapping_add(k as u16));
            ip.fill_checksum();
            pseudo(&ip.src_addr(), &ip.dst_addr(), PROTO_TCP, tcp_len as u32)
        }
        Af::V6 => {
            let mut ip = Ipv6Packet::new_unchecked(&mut out[p.l3..p.l4]);
            ip.set_payload_len((ip_len - ipv6::HEADER_LEN) as u16);
            pseudo(&ip.src_addr(), &ip.dst_addr(), PROTO_TCP, tcp_len as u32)
        }
    };
    let t = p.l4;
    let seq = u32::from_be_bytes([out[t + 4], out[t + 5], out[t + 6], out[t + 7]])
        .wrapping_add((k * p.mss) as u32);
    out[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    if k + 1 < p.segments {
        out[t + 13] &= !(TCP_FIN | TCP_PSH);
    }
    if k > 0 {
        out[t + 13] &= !TCP_CWR;
    }
    out[t + 16..t + 18].copy_from_slice(&[0, 0]);
    let ck = !fold(sum_wide(&out[t..], ps));
    out[t + 16..t + 18].copy_from_slice(&ck.to_be_bytes());
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[14 + 9] = PROTO_TCP;
        f[34 + 12] = 5 << 4;
        f
    }

    #[test]
    fn fits_the_mtu_is_none_whatever_the_protocol() {
        let f = v4_frame(1460);
        assert_eq!(plan(&f, 1500), Ok(None));
        let mut u = v4_frame(1460);
        u[14 + 9] = 17;
        assert_eq!(plan(&u, 1500), Ok(None));
        let mut u = v4_frame(3000);
        u[14 + 9] = 17;
        assert_eq!(plan(&u, 1500), Err(GsoError::NotTcp));
    }

    #[test]
    fn segment_count_and_sizes() {
        let f = v4_frame(3000);
        let p = plan(&f, 1500).unwrap().unwrap();
        assert_eq!((p.mss(), p.segments()), (1460, 3));
        assert_eq!(
            (p.seg_len(0), p.seg_len(1), p.seg_len(2), p.seg_len(3)),
            (1514, 1514, 134, 0)
        );
        let mut out = [0u8; 1514];
        assert_eq!(segment(&f, &p, 3, &mut out), Err(GsoError::Buffer));
        assert_eq!(segment(&f, &p, 0, &mut out[..1000]), Err(GsoError::Buffer));
        assert_eq!(segment(&f, &p, 2, &mut out), Ok(134));
    }

    #[test]
    fn tiny_mtu_is_refused() {
        let f = v4_frame(3000);
        assert_eq!(plan(&f, 40), Err(GsoError::MtuTooSmall));
        assert_eq!(plan(&f, 0), Err(GsoError::MtuTooSmall));
        assert_eq!(plan(&f, 41).unwrap().unwrap().segments(), 3000);
    }

    #[test]
    fn lying_lengths_are_malformed() {
        let mut f = v4_frame(3000);
        f[16..18].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(plan(&f, 1500), Err(GsoError::Malformed));
        // BIG TCP's total length 0 claims to fit: left to the engine (which drops it).
        let mut f = v4_frame(3000);
        f[16..18].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(plan(&f, 1500), Ok(None));
        let mut f = v4_frame(3000);
        f[34 + 12] = 15 << 4;
        f.truncate(14 + 20 + 50);
        f[16..18].copy_from_slice(&70u16.to_be_bytes());
        assert_eq!(plan(&f, 60), Err(GsoError::Malformed));
    }
}
