//! The ICMP / ICMPv6 message header as a view over a buffer (RFC 792, RFC
//! 4443), for writing the errors xvs builds and translates: type, code,
//! checksum and the 4-byte word after it (unused, next-hop MTU, MTU).

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const REST: Field = 4..8;
}

/// Length of the header of an error message (the quoted packet follows).
pub const HEADER_LEN: usize = field::REST.end;

/// An ICMP or ICMPv6 message at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// A view without a length check: every accessor then panics on a buffer
    /// shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> IcmpPacket<T> {
        IcmpPacket { buffer }
    }

    /// The message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// The 4-byte word after the checksum.
    #[inline]
    pub fn rest(&self) -> u32 {
        let d = &self.buffer.as_ref()[field::REST];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum as given (it covers the whole message, and for
    /// ICMPv6 a pseudo-header: the caller computes it).
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the 4-byte word after the checksum.
    #[inline]
    pub fn set_rest(&mut self, v: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fragmentation needed, next-hop MTU 1480, checksum 0x1234 (not computed).
    const HEADER: [u8; 8] = [3, 4, 0x12, 0x34, 0, 0, 0x05, 0xc8];

    #[test]
    fn deconstruct() {
        let p = IcmpPacket::new_unchecked(&HEADER[..]);
        assert_eq!((p.msg_type(), p.msg_code()), (3, 4));
        assert_eq!((p.checksum(), p.rest()), (0x1234, 1480));
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 8];
        let mut p = IcmpPacket::new_unchecked(&mut buf);
        p.set_msg_type(3);
        p.set_msg_code(4);
        p.set_checksum(0x1234);
        p.set_rest(1480);
        assert_eq!(buf, HEADER);
    }
}
