//! The IPv6 fixed header as a view over a buffer (RFC 8200), for writing: the
//! tunnel's outer header, ICMPv6 errors, NAT rewrites. The extension-header
//! walk is the flat parse's (parse.rs). IPv6 has no header checksum.

use super::ip::IpProtocol;
use super::parse::ParseError;

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Field = 8..24;
    pub(super) const DST_ADDR: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// An IPv6 fixed header at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view without a length check: every accessor then panics on a buffer
    /// shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// A view of a buffer of at least [`HEADER_LEN`] bytes (else `Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    #[inline]
    fn word0(&self) -> u32 {
        let d = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    #[inline]
    fn get16(&self, f: field::Field) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[f]);
        a
    }

    /// The version field (6).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.word0() >> 28) as u8
    }

    /// The traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    /// The flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }

    /// The payload length (what follows the fixed header).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// The next header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// The hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        self.get16(field::SRC_ADDR)
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        self.get16(field::DST_ADDR)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class `tc` and flow label `flow`.
    #[inline]
    pub fn set_version_class_flow(&mut self, tc: u8, flow: u32) {
        let w = 6 << 28 | (tc as u32) << 20 | (flow & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.number();
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: &[u8; 16]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(a);
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: &[u8; 16]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 header of a TCP segment: fd77::2 → fd77::100, traffic class
    /// 0xb8, flow 0x12345, 20 bytes of payload, hop limit 64.
    const HEADER: [u8; 40] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x14, 0x06, 0x40, //
        0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];

    fn addr(last: u16) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0..2].copy_from_slice(&[0xfd, 0x77]);
        a[14..16].copy_from_slice(&last.to_be_bytes());
        a
    }

    #[test]
    fn deconstruct() {
        let p = Ipv6Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xb8, 0x12345)
        );
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (20, IpProtocol::Tcp, 64)
        );
        assert_eq!((p.src_addr(), p.dst_addr()), (addr(2), addr(0x100)));
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 40];
        let mut p = Ipv6Packet::new_unchecked(&mut buf);
        p.set_version_class_flow(0xb8, 0x12345);
        p.set_payload_len(20);
        p.set_next_header(IpProtocol::Tcp);
        p.set_hop_limit(64);
        p.set_src_addr(&addr(2));
        p.set_dst_addr(&addr(0x100));
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn a_short_buffer_is_refused() {
        assert_eq!(
            Ipv6Packet::new_checked(&HEADER[..39]).unwrap_err(),
            ParseError::Truncated
        );
    }
}
