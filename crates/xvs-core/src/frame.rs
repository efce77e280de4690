//! A frame inside a larger buffer, with headroom in front so a rewrite can grow
//! the frame at its start (tunnel encapsulation) without copying the payload.

/// The index of a port, where a frame comes in or goes out: in the engine, the
/// daemon's interface; in an I/O worker (xvs-xdp), one of its sockets. One type
/// for both, so a verdict's port and a worker's disposition read the same.
pub type PortId = u16;

/// Why a frame could not be grown or shrunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not enough headroom (or tailroom) in the buffer.
    NoRoom,
}

/// A view of `buf[head..head + len]`, the frame bytes, inside a buffer such as a
/// UMEM chunk. The bytes before `head` are headroom.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes starting at `head` in `buf`; clamped to the buffer.
    #[inline]
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Frame<'a> {
        let head = head.min(buf.len());
        let len = len.min(buf.len() - head);
        Frame { buf, head, len }
    }

    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    /// The frame bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    /// Offset of the first frame byte in the buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Frame length.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes available in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Bytes available after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// Grows the frame by `n` bytes at the front (contents of the new bytes unspecified).
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Result<(), FrameError> {
        if n > self.head {
            return Err(FrameError::NoRoom);
        }
        self.head -= n;
        self.len += n;
        Ok(())
    }

    /// Removes `n` bytes from the front.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> Result<(), FrameError> {
        if n > self.len {
            return Err(FrameError::NoRoom);
        }
        self.head += n;
        self.len -= n;
        Ok(())
    }

    /// Sets the frame length (shrinking, or growing into tailroom).
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), FrameError> {
        if self.head + len > self.buf.len() {
            return Err(FrameError::NoRoom);
        }
        self.len = len;
        Ok(())
    }

    /// Moves the frame so that it starts at `head` (for building a new frame in place).
    #[inline]
    pub fn reset(&mut self, head: usize, len: usize) -> Result<(), FrameError> {
        if head + len > self.buf.len() {
            return Err(FrameError::NoRoom);
        }
        self.head = head;
        self.len = len;
        Ok(())
    }

    /// The whole underlying buffer (headroom, frame, tailroom).
    #[inline]
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_respect_bounds() {
        let mut b = [0u8; 64];
        b[16] = 0xaa;
        let mut f = Frame::new(&mut b, 16, 10);
        assert_eq!(f.data()[0], 0xaa);
        assert_eq!(f.push_front(17), Err(FrameError::NoRoom));
        f.push_front(16).unwrap();
        assert_eq!(f.len(), 26);
        assert_eq!(f.data()[16], 0xaa);
        f.pull_front(20).unwrap();
        assert_eq!(f.len(), 6);
        assert_eq!(f.set_len(100), Err(FrameError::NoRoom));
        assert_eq!(f.tailroom(), 64 - 20 - 6);
    }

    #[test]
    fn new_clamps_out_of_range() {
        let mut b = [0u8; 8];
        let f = Frame::new(&mut b, 6, 100);
        assert_eq!(f.len(), 2);
    }
}
