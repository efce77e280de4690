//! The kernel's hash functions used by the hashing schedulers, bit for bit:
//! `hash_32` (include/linux/hash.h) for sh, dh, lblc, lblcr, and the 64-bit
//! `hsiphash` (lib/siphash.c) for mh.

use crate::service::Af;
use std::net::IpAddr;

/// `GOLDEN_RATIO_32` of include/linux/hash.h.
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `hash_32(val, bits)`: multiply by the golden ratio, keep the top `bits` bits.
#[inline]
pub const fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// An `hsiphash_key_t` on a 64-bit kernel (two `unsigned long`).
pub type HsipKey = [u64; 2];

/// mh's first key (`generate_hash_secret`: offsets and lookups).
pub const MH_HASH1: HsipKey = [2_654_435_761, 2_654_435_761];
/// mh's second key (skips).
pub const MH_HASH2: HsipKey = [2_654_446_892, 2_654_446_892];

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// `hsiphash(&v, 4, key)` as a 64-bit little-endian kernel computes it: on 64-bit
/// kernels "HalfSipHash-1-3" is really SipHash-1-3, truncated to 32 bits, and a
/// 4-byte message is the u32 itself (little-endian load) in the final block.
#[inline]
pub fn hsiphash_1u32(first: u32, key: &HsipKey) -> u32 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ key[0],
        0x646f_7261_6e64_6f6d ^ key[1],
        0x6c79_6765_6e65_7261 ^ key[0],
        0x7465_6462_7974_6573 ^ key[1],
    ];
    let b = (4u64 << 56) | first as u64;
    v[3] ^= b;
    sipround(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    ((v[0] ^ v[1]) ^ (v[2] ^ v[3])) as u32
}

/// The 32-bit fold the kernel hashes a dest address with, in host order, given the
/// *service's* family: an IPv4 service reads the first word of the address union
/// (`addr->ip`), an IPv6 service XORs the four words. Only mixed-family (tunnel)
/// dests make the two differ from [`crate::addr::Addr::fold32`].
pub fn fold_dest(addr: &IpAddr, svc_af: Option<Af>) -> u32 {
    match (addr, svc_af) {
        (IpAddr::V4(a), _) => u32::from(*a),
        (IpAddr::V6(a), Some(Af::V4)) => {
            let o = a.octets();
            u32::from_be_bytes([o[0], o[1], o[2], o[3]])
        }
        (IpAddr::V6(a), _) => {
            let o = a.octets();
            (0..4).fold(0, |x, i| {
                x ^ u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_takes_top_bits_of_the_golden_product() {
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(0, 10), 0);
        // 0x0a4d0101 * 0x61c88647 = 0x53a9cd47 (mod 2^32): top 8 bits 0x53, top 10 bits 0x14e.
        assert_eq!(hash_32(0x0a4d_0101, 8), 0x53);
        assert_eq!(hash_32(0x0a4d_0101, 10), 0x14e);
    }

    /// Value printed by tests/fixtures/sched/harness/harness.c (its lib/siphash.c transcription)
    /// for `hsiphash(&v, 4, {2654435761, 2654435761})` with v = 0x0a4d0101 + 80.
    #[test]
    fn hsiphash_matches_the_kernel_transcription() {
        assert_eq!(hsiphash_1u32(0x0a4d_0101 + 80, &MH_HASH1), 0x5141_24f3);
    }

    #[test]
    fn fold_follows_the_service_family() {
        let v6: IpAddr = "fd77::1:5".parse().unwrap();
        assert_eq!(fold_dest(&v6, Some(Af::V4)), 0xfd77_0000);
        assert_eq!(fold_dest(&v6, Some(Af::V6)), 0xfd77_0000 ^ 0x0001_0005);
        let v4: IpAddr = "10.77.1.1".parse().unwrap();
        assert_eq!(fold_dest(&v4, Some(Af::V6)), 0x0a4d_0101);
    }
}
