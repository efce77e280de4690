//! Internet checksums: full (RFC 1071) and incremental updates (RFC 1624).

/// One's-complement sum of `data` as big-endian 16-bit words, added to `acc`
/// (not folded).
#[inline]
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
    }
    if let [b] = chunks.remainder() {
        acc = acc.wrapping_add((*b as u32) << 8);
    }
    acc
}

/// As [`sum`], eight bytes at a time: for whole segments (GSO), where the
/// two-byte loop is the bottleneck. Congruent to [`sum`] modulo 0xffff, so
/// [`fold`] of either gives the same checksum.
#[inline]
pub fn sum_wide(data: &[u8], acc: u32) -> u32 {
    let mut a = acc as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // 2^32 ≡ 1 (mod 0xffff): the two 32-bit halves add like 16-bit words,
        // and a u64 cannot overflow below 2^31 bytes of data.
        a += (w >> 32) + (w & 0xffff_ffff);
    }
    a += sum(chunks.remainder(), 0) as u64;
    while a >> 32 != 0 {
        a = (a & 0xffff_ffff) + (a >> 32);
    }
    a as u32
}

/// Folds a 32-bit sum to 16 bits.
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum of `data` (complement of the folded sum).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Incremental update of checksum `ck` when 16-bit word `old` becomes `new`
/// (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline]
pub fn update16(ck: u16, old: u16, new: u16) -> u16 {
    let acc = (!ck as u32) + (!old as u32) + new as u32;
    !fold(acc)
}

/// Incremental update for a byte run that changed from `old` to `new` (same
/// even length, aligned to 16-bit words of the summed data).
#[inline]
pub fn update(ck: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = !ck as u32;
    let mut o = old.chunks_exact(2);
    let mut n = new.chunks_exact(2);
    for (a, b) in (&mut o).zip(&mut n) {
        acc += !u16::from_be_bytes([a[0], a[1]]) as u32 & 0xffff;
        acc += u16::from_be_bytes([b[0], b[1]]) as u32;
    }
    !fold(acc)
}

/// The pseudo-header sum of TCP/UDP/ICMPv6 over IPv4 or IPv6 addresses.
#[inline]
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u32 {
    let acc = sum(src, 0);
    let acc = sum(dst, acc);
    acc.wrapping_add(proto as u32)
        .wrapping_add(len >> 16)
        .wrapping_add(len & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2 (folded).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn incremental_equals_full() {
        let mut d = [
            0x45u8, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let ck = checksum(&d);
        d[10..12].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(checksum(&d), 0);
        let old = [d[16], d[17], d[18], d[19]];
        let new = [192u8, 168, 7, 9];
        let ck2 = update(ck, &old, &new);
        d[16..20].copy_from_slice(&new);
        d[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(ck2, checksum(&d));
        assert_eq!(update16(ck2, 0x4006, 0x3f06), {
            d[8] = 0x3f;
            checksum(&d)
        });
    }

    #[test]
    fn wide_sum_folds_like_the_word_sum() {
        use proptest::prelude::*;
        proptest!(|(d in proptest::collection::vec(any::<u8>(), 0..3000), acc in any::<u32>())| {
            // `sum` may wrap its u32 past 2^32 for huge inputs; stay below.
            let acc = acc >> 8;
            prop_assert_eq!(fold(sum_wide(&d, acc)), fold(sum(&d, acc)));
        });
        assert_eq!(fold(sum_wide(&[0xff; 65536], 0)), 0xffff);
        assert_eq!(fold(sum_wide(&[], 0)), 0);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[1, 2, 3], 0), 0x0102 + 0x0300);
    }
}
