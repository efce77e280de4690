//! AF_XDP single-producer/single-consumer rings shared with the kernel.
//!
//! The kernel publishes `producer`/`consumer` indices in the mapped area; each
//! side caches the other's index and re-reads it only when the cache says the
//! ring is full (producer) or empty (consumer), as libxdp does.

use crate::error::{Error, Result};
use crate::sys::Mmap;
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring of `T` entries (u64 addresses for fill/completion,
/// `xdp_desc` for rx/tx).
pub struct Ring<T: Copy> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut T,
    mask: u32,
    size: u32,
    cached_prod: u32,
    cached_cons: u32,
    _map: Mmap,
}

// SAFETY: the ring is used from one thread at a time (the owning worker); the
// raw pointers point into `_map`, which moves with the ring.
unsafe impl<T: Copy> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Wraps a mapping laid out as described by `off` with `size` entries.
    /// `producer_side` says whether userspace produces into this ring. The
    /// layout is checked: `size` a power of two, and the three indices and
    /// `size` entries of `T` inside the mapping and aligned.
    pub fn new(
        map: Mmap,
        off: &libc::xdp_ring_offset,
        size: u32,
        producer_side: bool,
    ) -> Result<Ring<T>> {
        let len = map.len();
        let fits = |at: u64, bytes: u64, align: u64| {
            at.checked_add(bytes).is_some_and(|end| end <= len as u64) && at.is_multiple_of(align)
        };
        let desc_bytes = size as u64 * std::mem::size_of::<T>() as u64;
        if !size.is_power_of_two()
            || !fits(off.producer, 4, 4)
            || !fits(off.consumer, 4, 4)
            || !fits(off.flags, 4, 4)
            || !fits(off.desc, desc_bytes, std::mem::align_of::<T>() as u64)
        {
            return Err(Error::RingLayout {
                offsets: *off,
                size,
                len,
            });
        }
        let base = map.as_ptr();
        // SAFETY: every offset was checked to lie inside the mapping (with
        // room for what is read there) and to be aligned.
        let (producer, consumer, flags, desc) = unsafe {
            (
                base.add(off.producer as usize) as *const AtomicU32,
                base.add(off.consumer as usize) as *const AtomicU32,
                base.add(off.flags as usize) as *const AtomicU32,
                base.add(off.desc as usize) as *mut T,
            )
        };
        let mut r = Ring {
            producer,
            consumer,
            flags,
            desc,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
        };
        r.cached_prod = r.prod().load(Ordering::Relaxed);
        r.cached_cons = r.cons().load(Ordering::Relaxed);
        if producer_side {
            // A producer's "consumer" cache is kept `size` ahead so that
            // `cached_cons - cached_prod` is the free space.
            r.cached_cons = r.cached_cons.wrapping_add(size);
        }
        Ok(r)
    }

    #[inline]
    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping; the kernel keeps it aligned.
        unsafe { &*self.producer }
    }

    #[inline]
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for prod().
        unsafe { &*self.consumer }
    }

    /// Ring flags (XDP_RING_NEED_WAKEUP).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: as for prod().
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Entry at ring index `idx` (masked).
    #[inline]
    pub fn read(&self, idx: u32) -> T {
        // SAFETY: `idx & mask` < size, inside the descriptor array.
        unsafe { *self.desc.add((idx & self.mask) as usize) }
    }

    #[inline]
    pub fn write(&mut self, idx: u32, v: T) {
        // SAFETY: `idx & mask` < size, inside the descriptor array; the slot is
        // ours between reserve and submit.
        unsafe { *self.desc.add((idx & self.mask) as usize) = v }
    }

    // ---- producer side (fill, tx) ----

    /// Free slots, refreshing the consumer index only if fewer than `want`.
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons = self.cons().load(Ordering::Acquire).wrapping_add(self.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Reserves up to `n` slots; returns (first index, count).
    #[inline]
    pub fn reserve(&mut self, n: u32) -> (u32, u32) {
        let n = n.min(self.free(n));
        let idx = self.cached_prod;
        self.cached_prod = self.cached_prod.wrapping_add(n);
        (idx, n)
    }

    /// Publishes everything reserved so far.
    #[inline]
    pub fn submit(&mut self) {
        self.prod().store(self.cached_prod, Ordering::Release);
    }

    /// Entries produced but not yet consumed by the kernel.
    #[inline]
    pub fn outstanding(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.cons().load(Ordering::Acquire))
    }

    // ---- consumer side (rx, completion) ----

    /// Entries available, refreshing the producer index only if fewer than `want`.
    #[inline]
    pub fn available(&mut self, want: u32) -> u32 {
        let avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail >= want {
            return avail;
        }
        self.cached_prod = self.prod().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Up to `n` entries to read: (first index, count). Call `release` after.
    #[inline]
    pub fn peek(&mut self, n: u32) -> (u32, u32) {
        let n = n.min(self.available(n));
        (self.cached_cons, n)
    }

    /// Gives `n` peeked entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.cons().store(self.cached_cons, Ordering::Release);
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn off(producer: u64, consumer: u64, flags: u64, desc: u64) -> libc::xdp_ring_offset {
        libc::xdp_ring_offset {
            producer,
            consumer,
            desc,
            flags,
        }
    }

    #[test]
    fn a_layout_outside_the_mapping_is_refused() {
        let map = || Mmap::new(4096, None, 0, "test ring").unwrap();
        let good = off(0, 64, 128, 192);
        assert!(Ring::<u64>::new(map(), &good, 16, true).is_ok());
        // Entries past the end, an index past the end, a misaligned index,
        // a size that is no power of two (0 would underflow the mask).
        for (o, size) in [
            (good, 512),
            (off(0, 64, 4094, 192), 16),
            (off(2, 64, 128, 192), 16),
            (good, 0),
            (good, 12),
            (off(0, 64, 128, u64::MAX - 4), 16),
        ] {
            assert!(
                Ring::<u64>::new(map(), &o, size, true).is_err(),
                "{o:?} x {size}"
            );
        }
    }
}
