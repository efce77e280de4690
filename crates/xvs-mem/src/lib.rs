//! Data-plane memory: a global allocator for xvs's binaries that backs large
//! allocations (the connection table, its index) with transparent huge pages,
//! and a cache prefetch hint for the batched lookups of the engine.
//!
//! The connection table is touched at random; with 4 KiB pages every lookup in
//! a large table also misses the TLB. On kernels where THP is in `madvise` mode
//! (as on the build machines), `madvise(MADV_HUGEPAGE)` on the fresh mapping,
//! before its first touch, makes the kernel fault it in as 2 MiB pages. Small
//! allocations go to the system allocator unchanged.
//!
//! This crate is part of the data plane's memory layer: its unsafe code is the
//! allocator contract itself, one madvise call, and the prefetch instruction.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large get huge pages.
const HUGE_MIN: usize = 8 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// Asks the CPU to bring the cache line holding `r` into all cache levels,
/// without waiting for it. A hint only: never faults, changes nothing.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 on the address of a live reference; prefetches never
    // fault, have no architectural effect and need only SSE (x86_64 baseline).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            r as *const T as *const i8,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// The allocator: `#[global_allocator] static A: xvs_mem::HugeAlloc = xvs_mem::HugeAlloc;`
pub struct HugeAlloc;

fn advise(p: *mut u8, size: usize) {
    if p.is_null() || size < HUGE_MIN {
        return;
    }
    // The huge-page-aligned interior of the block.
    let start = (p as usize).div_ceil(HUGE_PAGE) * HUGE_PAGE;
    let end = (p as usize + size) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the block just returned by the system
        // allocator, which is mapped memory owned by us; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents or validity.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every method forwards to `System` with the same layout and only adds
// an madvise hint on the returned block, so the GlobalAlloc contract (valid,
// aligned, unaliased blocks; matching dealloc) is System's.
unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's: a valid non-zero-size layout.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` came from `System`; `new_size` is the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        advise(p, new_size);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_blocks_work() {
        let a = HugeAlloc;
        for size in [64usize, 16 << 20] {
            let l = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: non-zero layout; the block is written within bounds and
            // freed with the same layout.
            unsafe {
                let p = a.alloc_zeroed(l);
                assert!(!p.is_null());
                assert_eq!(*p.add(size - 1), 0);
                *p.add(size - 1) = 7;
                a.dealloc(p, l);
            }
        }
    }
}
