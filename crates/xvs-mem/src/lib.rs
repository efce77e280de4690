//! Data-plane memory: a global allocator for xvs's binaries that backs large
//! allocations (the connection table, its index) with transparent huge pages,
//! and a cache prefetch hint for the batched lookups of the engine.
//!
//! The connection table is touched at random; with 4 KiB pages every lookup in
//! a large table also misses the TLB. On kernels where THP is in `madvise` mode
//! (as on the build machines), a mapping advised with `MADV_HUGEPAGE` before
//! its first touch is faulted in as 2 MiB pages. Large blocks are therefore
//! mapped here directly (aligned to 2 MiB, advised, zero by construction);
//! small ones go to the system allocator unchanged.
//!
//! This crate is part of the data plane's memory layer: its unsafe code is the
//! allocator contract itself, mmap/madvise/munmap, and the prefetch instruction.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped with huge pages.
const HUGE_MIN: usize = 8 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// Asks the CPU to bring the cache line holding `r` into all cache levels,
/// without waiting for it. A hint only: never faults, changes nothing.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    prefetch_ptr(r as *const T as *const u8);
}

/// [`prefetch`] of a raw address (memory shared with the kernel, where no
/// Rust reference may be made). Any address is fine: a prefetch never faults.
#[inline(always)]
pub fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, even on an unmapped address, has no
    // architectural effect and needs only SSE (x86_64 baseline).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The allocator: `#[global_allocator] static A: xvs_mem::HugeAlloc = xvs_mem::HugeAlloc;`
pub struct HugeAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_MIN && layout.align() <= HUGE_PAGE
}

/// Length of the mapping behind a huge block of `size` bytes.
fn map_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

/// Maps `size` bytes at a 2 MiB boundary, advised for huge pages; zero-filled.
fn map_huge(size: usize) -> *mut u8 {
    let len = map_len(size);
    // Over-map by one huge page so an aligned start fits, then trim.
    let over = len + HUGE_PAGE;
    // SAFETY: an anonymous private mapping with no address hint: it cannot alias
    // any existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let base = p as usize;
    let start = base.div_ceil(HUGE_PAGE) * HUGE_PAGE;
    let head = start - base;
    let tail = over - head - len;
    // SAFETY: the unmapped pieces lie inside the mapping just created and are
    // outside [start, start + len), which is what we hand out.
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        // A hint: on failure the block still works with small pages.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        // Fault it all in now (preallocated means preallocated: no page-fault
        // stalls on the data path later). Best effort on older kernels.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
    }
    start as *mut u8
}

// SAFETY: small blocks are System's with the same layout; huge blocks are fresh
// anonymous mappings of at least `size` bytes aligned to 2 MiB (≥ any align we
// accept for them), unmapped exactly once in `dealloc`; so blocks are valid,
// aligned and unaliased, and each is freed by the path that made it.
unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            return map_huge(layout.size());
        }
        // SAFETY: same contract as the caller's: a valid non-zero-size layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Anonymous mappings are zero-filled.
            return map_huge(layout.size());
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `ptr` is the start of a mapping of `map_len(size)` bytes
            // made by `map_huge` for this layout.
            unsafe { libc::munmap(ptr as *mut libc::c_void, map_len(layout.size())) };
            return;
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a non-zero new size with the same align.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new) {
            // SAFETY: `ptr`/`layout` came from `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh block of the new layout, the old one still valid for
        // `min(old, new)` bytes, then freed by the path that made it.
        unsafe {
            let n = self.alloc(new);
            if !n.is_null() {
                std::ptr::copy_nonoverlapping(ptr, n, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_blocks_work_and_large_ones_are_zero_and_aligned() {
        let a = HugeAlloc;
        for (size, align) in [(64usize, 64usize), (16 << 20, 64), (9 << 20, 4096)] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero layout; the block is read and written within its
            // bounds and freed with the same layout.
            unsafe {
                let p = a.alloc_zeroed(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                assert_eq!(*p, 0);
                assert_eq!(*p.add(size - 1), 0);
                *p.add(size - 1) = 7;
                let q = a.realloc(p, l, size * 2);
                assert_eq!(*q.add(size - 1), 7);
                a.dealloc(q, Layout::from_size_align(size * 2, align).unwrap());
            }
        }
    }
}
