//! The table's index: lookup keys ([`ConnKey`]), their keyed hash, and the
//! two-choice buckets of 8 slots that map a key to its entry, with the
//! one-level cuckoo displacement that makes room (the protocol is in the
//! table's module documentation).

use crate::addr::Addr;
use crate::wire::parse::PacketInfo;
// The atomics come from loom in the model checks (`RUSTFLAGS="--cfg loom"`).
#[cfg(loom)]
use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Slots per index bucket (one cache line of u64; two in the model checks, so
/// that a few keys fill a bucket).
pub(super) const BUCKET_SLOTS: usize = if cfg!(loom) { 2 } else { 8 };
/// Protocol marker bit of persistence-template keys (never set for TCP/UDP/ICMP).
pub const TEMPLATE_PROTO: u8 = 0x80;

/// A lookup key: the 5-tuple as the packet carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// IP protocol; templates have [`TEMPLATE_PROTO`] set.
    pub proto: u8,
    /// Source address.
    pub saddr: Addr,
    /// Source port (0 without ports).
    pub sport: u16,
    /// Destination address.
    pub daddr: Addr,
    /// Destination port.
    pub dport: u16,
}

impl ConnKey {
    /// The key of a packet: its 5-tuple as it travels.
    #[inline]
    pub fn of(info: &PacketInfo) -> ConnKey {
        ConnKey {
            proto: info.proto,
            saddr: info.saddr,
            sport: info.sport,
            daddr: info.daddr,
            dport: info.dport,
        }
    }

    /// The key of a packet going the other way.
    #[inline]
    #[must_use]
    pub fn reversed(&self) -> ConnKey {
        ConnKey {
            proto: self.proto,
            saddr: self.daddr,
            sport: self.dport,
            daddr: self.saddr,
            dport: self.sport,
        }
    }

    /// The key as five words: both addresses, then protocol and ports.
    #[inline]
    fn words(&self) -> [u64; 5] {
        let w = |a: &[u8; 16], i: usize| {
            u64::from_ne_bytes([
                a[i],
                a[i + 1],
                a[i + 2],
                a[i + 3],
                a[i + 4],
                a[i + 5],
                a[i + 6],
                a[i + 7],
            ])
        };
        [
            w(&self.saddr.0, 0),
            w(&self.saddr.0, 8),
            w(&self.daddr.0, 0),
            w(&self.daddr.0, 8),
            self.proto as u64 | (self.sport as u64) << 16 | (self.dport as u64) << 32,
        ]
    }
}

/// Which of a connection's keys matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDir {
    /// Client → VIP (or the template key).
    In,
    /// Real server → client (NAT) or → local address (FULLNAT).
    Out,
}

/// Multiply and fold: the mixing step of wyhash-style hashes.
#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r >> 64) as u64 ^ r as u64
}

/// Seven odd 64-bit hash keys from the caller's four (splitmix64 of each).
fn expand_seed(s: [u64; 4]) -> [u64; 7] {
    let mut x = s[0] ^ s[1].rotate_left(17) ^ s[2].rotate_left(31) ^ s[3].rotate_left(47);
    let mut out = [0u64; 7];
    for (i, o) in out.iter_mut().enumerate() {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15 ^ s[i % 4]);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        *o = (z ^ (z >> 31)) | 1;
    }
    out
}

/// One cache line of slots, each `(tag << 32) | (idx + 1)` or 0 when empty.
#[repr(C, align(64))]
#[derive(Default)]
pub(super) struct Bucket(pub(super) [AtomicU64; BUCKET_SLOTS]);

/// The slot value's entry index.
#[inline]
pub(super) fn slot_idx(v: u64) -> u32 {
    (v as u32).wrapping_sub(1)
}

/// The slot value's key direction (bit 0 of the tag).
#[inline]
pub(super) fn slot_dir(v: u64) -> KeyDir {
    if (v >> 32) & 1 == 1 {
        KeyDir::Out
    } else {
        KeyDir::In
    }
}

/// The buckets and the hash keys.
pub(super) struct Index {
    buckets: Box<[Bucket]>,
    seed: [u64; 7],
}

impl Index {
    /// `nbuckets` empty buckets (at least one), hashed with `seed`.
    pub(super) fn new(nbuckets: usize, seed: [u64; 4]) -> Index {
        Index {
            buckets: (0..nbuckets.max(1)).map(|_| Bucket::default()).collect(),
            seed: expand_seed(seed),
        }
    }

    /// The buckets.
    #[inline]
    pub(super) fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Bytes the buckets take.
    pub(super) fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    /// The hash of a key: three independent multiply-folds of the key words
    /// with secret seeds, so a sender cannot aim keys at one bucket.
    #[inline]
    pub(super) fn hash(&self, key: &ConnKey) -> u64 {
        let w = key.words();
        let k = &self.seed;
        let h =
            mum(w[0] ^ k[0], w[1] ^ k[1]) ^ mum(w[2] ^ k[2], w[3] ^ k[3]) ^ mum(w[4] ^ k[4], k[5]);
        mum(h, k[6])
    }

    /// A hash's first and second bucket.
    #[inline]
    pub(super) fn buckets_of(&self, h: u64) -> (usize, usize) {
        let n = self.buckets.len() as u64;
        let b1 = ((h & 0xffff_ffff) * n) >> 32;
        let b2 = (((h >> 24) & 0xffff_ffff) * n) >> 32;
        (b1 as usize, b2 as usize)
    }

    /// The index tag of a hash: its top bits with the high bit forced on (so no
    /// tag equals an empty slot's) and the direction in bit 0.
    #[inline]
    pub(super) fn tag_of(h: u64, dir: KeyDir) -> u32 {
        (((h >> 32) as u32 | 0x8000_0000) & !1) | (dir == KeyDir::Out) as u32
    }

    /// The slot value of entry `idx` under hash `h` in direction `dir`.
    #[inline]
    fn slot_value(h: u64, dir: KeyDir, idx: u32) -> u64 {
        (Self::tag_of(h, dir) as u64) << 32 | (idx as u64 + 1)
    }

    /// Puts entry `idx` under `key`: in the key's first bucket if it has
    /// room, else its second, else by moving a resident of one of them from
    /// its first bucket to its second. `resident_key` gives the key a slot
    /// value stands for, read under the entry's generation check (None when
    /// the entry is not live). False when no room was found.
    pub(super) fn insert(
        &self,
        key: &ConnKey,
        dir: KeyDir,
        idx: u32,
        resident_key: impl Fn(u64) -> Option<ConnKey>,
    ) -> bool {
        self.insert_hashed(self.hash(key), dir, idx, resident_key)
    }

    /// [`Index::insert`] of a key whose hash is `h`.
    pub(super) fn insert_hashed(
        &self,
        h: u64,
        dir: KeyDir,
        idx: u32,
        resident_key: impl Fn(u64) -> Option<ConnKey>,
    ) -> bool {
        let (b1, b2) = self.buckets_of(h);
        let val = Self::slot_value(h, dir, idx);
        // First bucket first: lookups read it first, and most find the key there.
        let order = [b1, b2];
        for b in order {
            if Self::put_in(&self.buckets[b], val) {
                return true;
            }
        }
        // Both buckets full: move a resident from its first bucket to its second
        // (one level of cuckoo displacement; why this order, in the module doc).
        for b in order {
            for slot in &self.buckets[b].0 {
                let v = slot.load(Acquire);
                if v == 0 {
                    if slot.compare_exchange(0, val, Release, Relaxed).is_ok() {
                        return true;
                    }
                    continue;
                }
                let Some(alt) = self.other_bucket(v, b, &resident_key) else {
                    continue;
                };
                // Copy first, then swap the original for the new key.
                if !Self::put_in(&self.buckets[alt], v) {
                    continue;
                }
                if slot.compare_exchange(v, val, Release, Relaxed).is_ok() {
                    return true;
                }
                // Moved by another displacer or removed meanwhile: take a copy back.
                for s2 in &self.buckets[alt].0 {
                    if s2.compare_exchange(v, 0, Release, Relaxed).is_ok() {
                        break;
                    }
                }
            }
        }
        false
    }

    /// Stores `val` in an empty slot of bucket `b`.
    #[inline]
    fn put_in(b: &Bucket, val: u64) -> bool {
        b.0.iter()
            .any(|s| s.load(Relaxed) == 0 && s.compare_exchange(0, val, Release, Relaxed).is_ok())
    }

    /// Where the resident that slot value `v` (found in bucket `b`) may move:
    /// its second bucket, if `b` is its first. Its key must still be the one
    /// `v` stands for.
    fn other_bucket(
        &self,
        v: u64,
        b: usize,
        resident_key: &impl Fn(u64) -> Option<ConnKey>,
    ) -> Option<usize> {
        let key = resident_key(v)?;
        let h = self.hash(&key);
        if Self::tag_of(h, slot_dir(v)) != (v >> 32) as u32 {
            return None; // the entry was reused for another key
        }
        let (c1, c2) = self.buckets_of(h);
        (c1 == b && c2 != b).then_some(c2)
    }

    /// Removes every copy of the key's slot value for entry `idx` (a
    /// displacement can leave two for an instant). Acquire: having read a
    /// displacer's swap in the first bucket, it sees the copy in the second.
    pub(super) fn remove(&self, key: &ConnKey, dir: KeyDir, idx: u32) {
        self.remove_hashed(self.hash(key), dir, idx)
    }

    /// [`Index::remove`] of a key whose hash is `h`.
    pub(super) fn remove_hashed(&self, h: u64, dir: KeyDir, idx: u32) {
        let (b1, b2) = self.buckets_of(h);
        let val = Self::slot_value(h, dir, idx);
        for b in [b1, b2] {
            for slot in &self.buckets[b].0 {
                let _ = slot.compare_exchange(val, 0, AcqRel, Acquire);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reversed_swaps_the_ends() {
        let k = ConnKey {
            proto: 6,
            saddr: Addr::v4([10, 0, 0, 1]),
            sport: 40000,
            daddr: Addr::v4([10, 0, 0, 100]),
            dport: 80,
        };
        let r = k.reversed();
        assert_eq!(
            (r.saddr, r.sport, r.daddr, r.dport),
            (k.daddr, 80, k.saddr, 40000)
        );
        assert_eq!(r.reversed(), k);
    }
}
