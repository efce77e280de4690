//! IPIP / ip6ip6 encapsulation toward a real server (TUN mode), in the frame's
//! headroom: the L2 header moves forward, the outer IP header goes in between,
//! the packet itself is not copied.

use crate::addr::Addr;
use crate::frame::Frame;
use crate::service::Af;
use crate::wire::checksum::checksum;
use crate::wire::parse::PacketInfo;

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
    let hdr = if outer_af == Af::V4 { 20 } else { 40 };
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
    let inner_proto = if info.af == Af::V4 { 4u8 } else { 41u8 };
    let tos = match info.af {
        Af::V4 => d[inner + 1],
        Af::V6 => (d[inner] << 4) | (d[inner + 1] >> 4),
    };
    let total = inner_len + hdr;
    match outer_af {
        Af::V4 => {
            d[l3 - 2..l3].copy_from_slice(&0x0800u16.to_be_bytes());
            let df = if info.af == Af::V6 || info.df {
                0x40
            } else {
                0
            };
            let h = &mut d[l3..l3 + 20];
            h.copy_from_slice(&[
                0x45,
                tos,
                0,
                0,
                0,
                0,
                df,
                0,
                64,
                inner_proto,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h[12..16].copy_from_slice(&src.0[12..16]);
            h[16..20].copy_from_slice(&dst.0[12..16]);
            let ck = checksum(h);
            h[10..12].copy_from_slice(&ck.to_be_bytes());
        }
        Af::V6 => {
            d[l3 - 2..l3].copy_from_slice(&0x86ddu16.to_be_bytes());
            let h = &mut d[l3..l3 + 40];
            h[0] = 0x60 | (tos >> 4);
            h[1] = tos << 4;
            h[2] = 0;
            h[3] = 0;
            h[4..6].copy_from_slice(&(inner_len as u16).to_be_bytes());
            h[6] = inner_proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&src.0);
            h[24..40].copy_from_slice(&dst.0);
        }
    }
    Ok(())
}
