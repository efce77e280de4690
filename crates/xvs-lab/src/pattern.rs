//! The deterministic byte stream of `GET /bytes?n=N`: byte `i` is `i % 251`.
//!
//! 251 is prime and not a divisor of any buffer size, so a dropped, repeated or
//! reordered chunk shows up as a mismatch at a known offset.

/// Period of the pattern.
pub const PERIOD: usize = 251;

/// The pattern byte at stream offset `i`.
#[inline]
pub fn byte_at(i: u64) -> u8 {
    (i % PERIOD as u64) as u8
}

/// A buffer of `len + PERIOD` pattern bytes from offset 0; `&buf[o % PERIOD..][..len]`
/// is then the pattern from any offset `o`.
pub fn table(len: usize) -> Vec<u8> {
    (0..len + PERIOD).map(|i| byte_at(i as u64)).collect()
}

/// Checks a stream against the pattern incrementally.
#[derive(Debug, Default)]
pub struct Checker {
    offset: u64,
}

impl Checker {
    /// Checks the next chunk; on mismatch returns the stream offset of the first bad byte.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), u64> {
        for (k, &b) in chunk.iter().enumerate() {
            if b != byte_at(self.offset + k as u64) {
                return Err(self.offset + k as u64);
            }
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Bytes checked so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_slices_continue_the_pattern() {
        let t = table(1000);
        let mut c = Checker::default();
        c.feed(&t[..300]).unwrap();
        c.feed(&t[300 % PERIOD..][..700]).unwrap();
        assert_eq!(c.len(), 1000);
        assert_eq!(t[251], 0);
        assert_eq!(t[250], 250);
    }

    #[test]
    fn checker_reports_the_first_bad_offset() {
        let mut t = table(600)[..600].to_vec();
        t[417] ^= 1;
        let mut c = Checker::default();
        c.feed(&t[..400]).unwrap();
        assert_eq!(c.feed(&t[400..]), Err(417));
    }
}
