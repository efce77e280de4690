//! The IPv4 header as a view over a buffer (RFC 791), for writing: the tunnel's
//! outer header, ICMP errors, NAT rewrites. Reading is the flat parse's job
//! (parse.rs); this is smoltcp's `wire::ipv4` shape: field byte ranges,
//! accessors, and setters only on a buffer that can be written.

use super::checksum::checksum;
use super::ip::IpProtocol;
use super::parse::ParseError;

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLG_OFF: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC_ADDR: Field = 12..16;
    pub(super) const DST_ADDR: Field = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The "don't fragment" flag in the flags/offset word.
const DONT_FRAG: u16 = 0x4000;

/// An IPv4 header at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without a length check: every accessor then panics on a buffer
    /// shorter than [`HEADER_LEN`]. For buffers whose length is known (a
    /// `[u8; 20]`, where the checks compile away).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// A view of a buffer of at least [`HEADER_LEN`] bytes (else `Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    #[inline]
    fn get16(&self, f: field::Field) -> u16 {
        let d = &self.buffer.as_ref()[f];
        u16::from_be_bytes([d[0], d[1]])
    }

    #[inline]
    fn get4(&self, f: field::Field) -> [u8; 4] {
        let d = &self.buffer.as_ref()[f];
        [d[0], d[1], d[2], d[3]]
    }

    /// The version field (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    /// The DSCP and ECN bits (the old TOS byte).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        self.get16(field::LENGTH)
    }

    /// The identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        self.get16(field::IDENT)
    }

    /// The "don't fragment" flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.get16(field::FLG_OFF) & DONT_FRAG != 0
    }

    /// The time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.get16(field::CHECKSUM)
    }

    /// The TTL and protocol as the 16-bit word the checksum sums them in.
    #[inline]
    pub fn ttl_protocol_word(&self) -> u16 {
        u16::from_be_bytes([self.ttl(), self.buffer.as_ref()[field::PROTOCOL]])
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        self.get4(field::SRC_ADDR)
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        self.get4(field::DST_ADDR)
    }

    /// Whether the header checksum is right (the header, options included,
    /// sums to zero). False when the options run past the buffer.
    pub fn verify_checksum(&self) -> bool {
        self.buffer
            .as_ref()
            .get(..self.header_len())
            .is_some_and(|h| checksum(h) == 0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    fn set16(&mut self, f: field::Field, v: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets version 4 and a header of `len` bytes (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | (len / 4) as u8;
    }

    /// Sets the DSCP and ECN bits.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        self.set16(field::LENGTH, v)
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.set16(field::IDENT, v)
    }

    /// Sets the flags and fragment offset of an unfragmented packet: only
    /// "don't fragment", as asked.
    #[inline]
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        self.set16(field::FLG_OFF, if dont_frag { DONT_FRAG } else { 0 })
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol of the payload.
    #[inline]
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.number();
    }

    /// Sets the header checksum as given (see [`Self::fill_checksum`]).
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set16(field::CHECKSUM, v)
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a);
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a);
    }

    /// Computes the header checksum over the header (options included) and
    /// stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = self.header_len();
        let ck = checksum(&self.buffer.as_ref()[..len]);
        self.set_checksum(ck);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header of a UDP datagram: 10.77.0.2 → 10.77.0.100, DF, TTL 64,
    /// id 7, 30 bytes, checksum 0x25c9.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x1e, 0x00, 0x07, 0x40, 0x00, 0x40, 0x11, 0x25, 0xc9, 0x0a, 0x4d, 0x00,
        0x02, 0x0a, 0x4d, 0x00, 0x64,
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv4Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!((p.version(), p.header_len()), (4, 20));
        assert_eq!((p.dscp_ecn(), p.total_len(), p.ident()), (0, 30, 7));
        assert!(p.dont_frag());
        assert_eq!((p.ttl(), p.protocol()), (64, IpProtocol::Udp));
        assert_eq!(p.ttl_protocol_word(), 0x4011);
        assert_eq!(p.checksum(), 0x25c9);
        assert_eq!(
            (p.src_addr(), p.dst_addr()),
            ([10, 77, 0, 2], [10, 77, 0, 100])
        );
        assert!(p.verify_checksum());
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 20];
        let mut p = Ipv4Packet::new_unchecked(&mut buf);
        p.set_version_and_header_len(20);
        p.set_dscp_ecn(0);
        p.set_total_len(30);
        p.set_ident(7);
        p.set_unfragmented(true);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::Udp);
        p.set_src_addr([10, 77, 0, 2]);
        p.set_dst_addr([10, 77, 0, 100]);
        p.fill_checksum();
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn a_short_buffer_is_refused() {
        assert_eq!(
            Ipv4Packet::new_checked(&HEADER[..19]).unwrap_err(),
            ParseError::Truncated
        );
    }

    #[test]
    fn options_are_summed_and_a_wrong_checksum_is_seen() {
        let mut buf = [0u8; 24];
        buf[..20].copy_from_slice(&HEADER);
        buf[24 - 4..].copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(24);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
    }
}
