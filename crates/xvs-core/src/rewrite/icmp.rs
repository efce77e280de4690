//! ICMP / ICMPv6: translating errors that quote a NAT'ed packet, and building
//! errors in place (port unreachable, fragmentation needed / packet too big).

use super::set_macs;
use crate::addr::{Addr, Af};
use crate::frame::Frame;
use crate::wire::checksum::{checksum, fold, pseudo, sum};
use crate::wire::parse::{Frag, PacketInfo};
use crate::wire::{icmp, ipv4, ipv6, IcmpPacket, IpProtocol, Ipv4Packet, Ipv6Packet};

/// What to change in an ICMP error: the outer addresses and the quoted packet's
/// source or destination address + port.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IcmpRewrite<'a> {
    pub outer_src: Option<&'a Addr>,
    pub outer_dst: Option<&'a Addr>,
    pub inner_src: Option<(&'a Addr, u16)>,
    pub inner_dst: Option<(&'a Addr, u16)>,
}

/// Rewrites an ICMP error as the kernel's `ip_vs_nat_icmp` does: outer address,
/// quoted IP address and port, the quoted IPv4 header checksum, the outer IPv4
/// header checksum and the ICMP checksum (the quoted L4 checksum is left alone,
/// as the kernel leaves it).
pub(crate) fn translate(data: &mut [u8], info: &PacketInfo, rw: &IcmpRewrite) {
    let Some(ic) = info.icmp else { return };
    let af = info.af;
    let (l3, l4) = (info.l3_off as usize, info.l4_off as usize);
    let end = l3 + info.l3_len as usize;
    if end > data.len() {
        return;
    }
    let (il3, il4) = (ic.inner_l3_off as usize, ic.inner_l4_off as usize);
    match af {
        Af::V4 => {
            // The parse read both headers whole: the views fit.
            let mut outer = Ipv4Packet::new_unchecked(&mut data[l3..end]);
            if let Some(a) = rw.outer_src {
                outer.set_src_addr(a.v4_octets());
            }
            if let Some(a) = rw.outer_dst {
                outer.set_dst_addr(a.v4_octets());
            }
            if let Some(Ok(mut inner)) = data.get_mut(il3..end).map(Ipv4Packet::new_checked) {
                if let Some((a, _)) = rw.inner_src {
                    inner.set_src_addr(a.v4_octets());
                }
                if let Some((a, _)) = rw.inner_dst {
                    inner.set_dst_addr(a.v4_octets());
                }
            }
        }
        Af::V6 => {
            let mut outer = Ipv6Packet::new_unchecked(&mut data[l3..end]);
            if let Some(a) = rw.outer_src {
                outer.set_src_addr(&a.0);
            }
            if let Some(a) = rw.outer_dst {
                outer.set_dst_addr(&a.0);
            }
            if let Some(Ok(mut inner)) = data.get_mut(il3..end).map(Ipv6Packet::new_checked) {
                if let Some((a, _)) = rw.inner_src {
                    inner.set_src_addr(&a.0);
                }
                if let Some((a, _)) = rw.inner_dst {
                    inner.set_dst_addr(&a.0);
                }
            }
        }
    }
    // The quoted ports: source then destination, as in TCP and UDP.
    for (x, poff) in [(rw.inner_src, il4), (rw.inner_dst, il4 + 2)] {
        if let Some((_, p)) = x {
            if poff + 2 <= end {
                data[poff..poff + 2].copy_from_slice(&p.to_be_bytes());
            }
        }
    }
    if af == Af::V4 {
        if let Some(Ok(mut inner)) = data.get_mut(il3..end).map(Ipv4Packet::new_checked) {
            if inner.header_len() <= end - il3 {
                inner.fill_checksum();
            }
        }
        Ipv4Packet::new_unchecked(&mut data[l3..end]).fill_checksum();
    }
    icmp_checksum(data, l3, l4, end, af);
}

/// Recomputes the ICMP (v4) or ICMPv6 (with pseudo-header) checksum of the
/// message at `l4..end`.
fn icmp_checksum(data: &mut [u8], l3: usize, l4: usize, end: usize, af: Af) {
    IcmpPacket::new_unchecked(&mut data[l4..end]).set_checksum(0);
    let msg = &data[l4..end];
    let ck = match af {
        Af::V4 => checksum(msg),
        Af::V6 => {
            let ip = Ipv6Packet::new_unchecked(&data[l3..l4]);
            let ps = pseudo(
                &ip.src_addr(),
                &ip.dst_addr(),
                IpProtocol::Icmpv6.number(),
                msg.len() as u32,
            );
            !fold(sum(msg, ps))
        }
    };
    IcmpPacket::new_unchecked(&mut data[l4..end]).set_checksum(ck);
}

/// Largest ICMP error: IPv4 576 bytes (RFC 1812), IPv6 1280 (RFC 4443).
const MAX_ERR_V4: usize = 576;
const MAX_ERR_V6: usize = 1280;

/// Turns the frame into an ICMP error about itself, sent back to its sender
/// from `src` (MACs swapped, VLAN tag kept). `word` is the 4-byte field after the
/// ICMP checksum (unused / next-hop MTU / MTU). Returns false when the packet
/// must not be answered (an ICMP error itself, a later fragment, a multicast or
/// broadcast source) or the buffer has no room.
fn build_error(
    frame: &mut Frame,
    info: &PacketInfo,
    src: &Addr,
    ty: u8,
    code: u8,
    word: u32,
) -> bool {
    if info.icmp.is_some() || matches!(info.frag, Frag::Later { .. }) {
        return false;
    }
    let s = info.saddr;
    let bad_src = match info.af {
        Af::V4 => {
            let o = s.v4_octets();
            o[0] >= 224 || o == [0, 0, 0, 0] || o == [255, 255, 255, 255]
        }
        Af::V6 => s.0[0] == 0xff || s.0 == [0; 16],
    };
    if bad_src {
        return false;
    }
    let l3 = info.l3_off as usize;
    let (iph, max) = match info.af {
        Af::V4 => (ipv4::HEADER_LEN, MAX_ERR_V4),
        Af::V6 => (ipv6::HEADER_LEN, MAX_ERR_V6),
    };
    let hdr = iph + icmp::HEADER_LEN;
    let quote = (info.l3_len as usize).min(max - hdr);
    if frame.push_front(hdr).is_err() {
        return false;
    }
    let total = l3 + hdr + quote;
    if frame.set_len(total).is_err() {
        return false;
    }
    let d = frame.data_mut();
    // The old L2 header now sits at hdr..hdr + l3: reuse it, MACs swapped.
    d.copy_within(hdr..hdr + l3, 0);
    let (mut dst_mac, mut src_mac) = ([0u8; 6], [0u8; 6]);
    dst_mac.copy_from_slice(&d[6..12]);
    src_mac.copy_from_slice(&d[0..6]);
    set_macs(d, &src_mac, &dst_mac);
    let ip_len = hdr + quote;
    let l4 = l3 + iph;
    match info.af {
        Af::V4 => {
            let mut h = Ipv4Packet::new_unchecked(&mut d[l3..l4]);
            h.set_version_and_header_len(iph);
            // Precedence "internetwork control", as the kernel's icmp_send.
            h.set_dscp_ecn(0xc0);
            h.set_total_len(ip_len as u16);
            h.set_ident(0);
            h.set_unfragmented(false);
            h.set_ttl(64);
            h.set_protocol(IpProtocol::Icmp);
            h.set_src_addr(src.v4_octets());
            h.set_dst_addr(s.v4_octets());
            h.fill_checksum();
        }
        Af::V6 => {
            let mut h = Ipv6Packet::new_unchecked(&mut d[l3..l4]);
            h.set_version_class_flow(0, 0);
            h.set_payload_len((ip_len - iph) as u16);
            h.set_next_header(IpProtocol::Icmpv6);
            h.set_hop_limit(64);
            h.set_src_addr(&src.0);
            h.set_dst_addr(&s.0);
        }
    }
    let mut m = IcmpPacket::new_unchecked(&mut d[l4..total]);
    m.set_msg_type(ty);
    m.set_msg_code(code);
    m.set_rest(word);
    icmp_checksum(d, l3, l4, total, info.af);
    true
}

/// "Port unreachable" back to the sender, from `src` (the VIP): what the kernel
/// answers when no real server is available.
pub(crate) fn port_unreachable(frame: &mut Frame, info: &PacketInfo, src: &Addr) -> bool {
    match info.af {
        Af::V4 => build_error(frame, info, src, 3, 3, 0),
        Af::V6 => build_error(frame, info, src, 1, 4, 0),
    }
}

/// "Fragmentation needed" (IPv4, with the next-hop MTU) or "packet too big"
/// (IPv6) back to the sender, from `src`.
pub(crate) fn too_big(frame: &mut Frame, info: &PacketInfo, mtu: u16, src: &Addr) -> bool {
    match info.af {
        Af::V4 => build_error(frame, info, src, 3, 4, mtu as u32),
        Af::V6 => build_error(frame, info, src, 2, 0, mtu as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse;

    fn udp4() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 7, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 2, 10, 77, 0, 100,
        ]);
        let ck = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ck.to_be_bytes());
        f.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 10, 0, 0, b'h', b'i']);
        f
    }

    #[test]
    fn port_unreachable_quotes_the_packet_and_swaps_addresses() {
        let orig = udp4();
        let mut buf = vec![0u8; 64 + 128];
        buf[64..64 + orig.len()].copy_from_slice(&orig);
        let mut fr = Frame::new(&mut buf, 64, orig.len());
        let info = parse(fr.data()).unwrap();
        assert!(port_unreachable(
            &mut fr,
            &info,
            &Addr::v4([10, 77, 0, 100])
        ));
        let d = fr.data();
        assert_eq!(d.len(), 14 + 20 + 8 + 30);
        assert_eq!(&d[0..6], &[2, 0, 0, 0, 0, 1], "back to the sender's MAC");
        assert_eq!(&d[6..12], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(checksum(&d[14..34]), 0);
        assert_eq!(&d[26..30], &[10, 77, 0, 100]);
        assert_eq!(&d[30..34], &[10, 77, 0, 2]);
        assert_eq!((d[34], d[35]), (3, 3));
        assert_eq!(checksum(&d[34..]), 0);
        assert_eq!(
            &d[42..],
            &orig[14..],
            "the whole original IP packet is quoted"
        );
        // The error parses as an ICMP error quoting the original flow.
        let p = parse(d).unwrap();
        let ic = p.icmp.unwrap();
        assert_eq!((ic.sport, ic.dport), (5000, 53));
    }

    #[test]
    fn never_answers_an_icmp_error() {
        let orig = udp4();
        let mut buf = vec![0u8; 64 + 256];
        buf[64..64 + orig.len()].copy_from_slice(&orig);
        let mut fr = Frame::new(&mut buf, 64, orig.len());
        let info = parse(fr.data()).unwrap();
        assert!(port_unreachable(
            &mut fr,
            &info,
            &Addr::v4([10, 77, 0, 100])
        ));
        let info = parse(fr.data()).unwrap();
        assert!(!port_unreachable(
            &mut fr,
            &info,
            &Addr::v4([10, 77, 0, 100])
        ));
    }
}
