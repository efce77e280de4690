//! IPIP / ip6ip6 encapsulation toward a real server (TUN mode), in the frame's
//! headroom: the L2 header moves forward, the outer IP header goes in between,
//! the packet itself is not copied.

use crate::addr::{Addr, Af};
use crate::frame::Frame;
use crate::wire::parse::PacketInfo;
use crate::wire::{ipv4, ipv6, IpProtocol, Ipv4Packet, Ipv6Packet};

/// Why a packet was not encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncapError {
    /// Too big for the MTU once encapsulated, and it may not be fragmented: answer
    /// the sender with this MTU.
    TooBig { mtu: u16 },
    /// Too big and IPv4 without DF (the kernel would fragment the outer packet).
    TooBigNoDf,
    /// No headroom in the buffer.
    NoHeadroom,
}

/// Encapsulates the IP packet of the frame in an outer IPv4 (protocol 4 for an
/// IPv4 inner packet, 41 for IPv6) or IPv6 header (next header 4 / 41) from
/// `src` to `dst`; outer TTL 64, DF and TOS/traffic class copied from the inner
/// packet. The frame is first cut to its IP length (Ethernet padding dropped).
pub(crate) fn encap(
    frame: &mut Frame,
    info: &PacketInfo,
    src: &Addr,
    dst: &Addr,
    mtu: u16,
    id: u16,
) -> Result<(), EncapError> {
    let outer_af = if dst.is_v4() { Af::V4 } else { Af::V6 };
    let hdr = match outer_af {
        Af::V4 => ipv4::HEADER_LEN,
        Af::V6 => ipv6::HEADER_LEN,
    };
    let l3 = info.l3_off as usize;
    let inner_len = info.l3_len as usize;
    if inner_len + hdr > mtu as usize {
        let room = (mtu as usize).saturating_sub(hdr) as u16;
        return if info.af == Af::V4 && !info.df {
            Err(EncapError::TooBigNoDf)
        } else {
            Err(EncapError::TooBig { mtu: room })
        };
    }
    frame
        .set_len(l3 + inner_len)
        .map_err(|_| EncapError::NoHeadroom)?;
    frame.push_front(hdr).map_err(|_| EncapError::NoHeadroom)?;
    let d = frame.data_mut();
    d.copy_within(hdr..hdr + l3, 0);
    let inner = l3 + hdr;
    let inner_proto = match info.af {
        Af::V4 => IpProtocol::IpIp,
        Af::V6 => IpProtocol::Ipv6,
    };
    // TOS / traffic class, copied to the outer header.
    let tos = match info.af {
        Af::V4 => Ipv4Packet::new_unchecked(&d[inner..]).dscp_ecn(),
        Af::V6 => Ipv6Packet::new_unchecked(&d[inner..]).traffic_class(),
    };
    let total = inner_len + hdr;
    match outer_af {
        Af::V4 => {
            d[l3 - 2..l3].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut h = Ipv4Packet::new_unchecked(&mut d[l3..l3 + hdr]);
            h.set_version_and_header_len(hdr);
            h.set_dscp_ecn(tos);
            h.set_total_len(total as u16);
            h.set_ident(id);
            // DF as the inner packet's; always for IPv6 inside (never fragmented
            // on the way).
            h.set_unfragmented(info.af == Af::V6 || info.df);
            h.set_ttl(64);
            h.set_protocol(inner_proto);
            h.set_src_addr(src.v4_octets());
            h.set_dst_addr(dst.v4_octets());
            h.fill_checksum();
        }
        Af::V6 => {
            d[l3 - 2..l3].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut h = Ipv6Packet::new_unchecked(&mut d[l3..l3 + hdr]);
            h.set_version_class_flow(tos, 0);
            h.set_payload_len(inner_len as u16);
            h.set_next_header(inner_proto);
            h.set_hop_limit(64);
            h.set_src_addr(&src.0);
            h.set_dst_addr(&dst.0);
        }
    }
    Ok(())
}
