//! AF_XDP sockets on `libc`: UMEM registration, the four rings, bind with copy
//! or zero-copy, shared UMEM across interfaces and queues.
//!
//! Own code rather than a crate: the `afxdp` crate (0.4) pins a C build of
//! libbpf-sys, leaves its XDP program attached after exit and lost ~20% of the
//! forwarding rate on the measured path (see PLATFORM.md); the kernel
//! interface is a handful of setsockopt calls and four mmaps.

use crate::error::{last_os, Error, Result};
use crate::ring::Ring;
use crate::sys::{self, Mmap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The kernel's fixed headroom in front of every received frame (XDP_PACKET_HEADROOM).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// A UMEM: one mapping cut into equal chunks, each holding one frame.
pub struct Umem {
    map: Mmap,
    chunk_size: u32,
    headroom: u32,
    chunks: u32,
}

impl Umem {
    /// Allocates `chunks` chunks of `chunk_size` bytes (a power of two, 2048 or
    /// 4096). `headroom` is reserved by the kernel in front of each received
    /// frame in addition to XDP_PACKET_HEADROOM.
    pub fn new(chunks: u32, chunk_size: u32, headroom: u32) -> Result<Umem> {
        if !chunk_size.is_power_of_two() || !(2048..=4096).contains(&chunk_size) {
            return Err(Error::ChunkSize(chunk_size));
        }
        if headroom + XDP_PACKET_HEADROOM + 1500 > chunk_size {
            return Err(Error::UmemHeadroom {
                headroom,
                chunk_size,
            });
        }
        let len = chunks as usize * chunk_size as usize;
        let map = Mmap::new(len, None, 0, "UMEM")?;
        Ok(Umem {
            map,
            chunk_size,
            headroom,
            chunks,
        })
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// Headroom configured at registration (without XDP_PACKET_HEADROOM).
    pub fn headroom(&self) -> u32 {
        self.headroom
    }

    /// Registers this UMEM on socket `fd` (the first socket using it).
    fn register(&self, fd: &OwnedFd) -> Result<()> {
        let reg = libc::xdp_umem_reg {
            addr: self.map.as_ptr() as u64,
            len: self.map.len() as u64,
            chunk_size: self.chunk_size,
            headroom: self.headroom,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::setsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_UMEM_REG,
            &reg,
            "register UMEM (XDP_UMEM_REG)",
        )
    }

    /// Starts loading the cache line at UMEM address `addr` (a frame the
    /// worker will read soon): the kernel copied it in on the NAPI side, and
    /// the first read of each frame was the worker's costliest instruction.
    #[inline]
    pub(crate) fn prefetch(&self, addr: u64) {
        if addr < self.map.len() as u64 {
            xvs_mem::prefetch_ptr(self.map.as_ptr().wrapping_add(addr as usize));
        }
    }

    /// The `len` bytes at UMEM address `addr` (a received frame), or an empty
    /// slice if they would run past the chunk.
    ///
    /// # Safety
    /// The caller must own the chunk and hold no mutable reference into it
    /// while the returned slice lives.
    #[inline]
    pub(crate) unsafe fn frame(&self, addr: u64, len: u32) -> &[u8] {
        let end = addr + len as u64;
        let chunk_end = (addr & !(self.chunk_size as u64 - 1)) + self.chunk_size as u64;
        if end > chunk_end || end > self.map.len() as u64 {
            return &[];
        }
        // SAFETY: addr..end lies inside one chunk of the mapping (checked
        // above); ownership and aliasing are the caller's contract.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(addr as usize), len as usize) }
    }

    /// The chunk holding UMEM address `addr` as a mutable slice.
    ///
    /// # Safety
    /// The caller must own the chunk (it is in no ring the kernel reads or
    /// writes) and hold no other reference into it.
    // The UMEM is memory shared with the kernel, owned chunk by chunk (by ring
    // position), not through Rust borrows of the Umem value.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn chunk_mut(&self, addr: u64) -> &mut [u8] {
        let base = addr & !(self.chunk_size as u64 - 1);
        debug_assert!(base < self.map.len() as u64);
        // SAFETY: `base` is a chunk start inside the mapping (addresses come
        // from our own fill ring or the kernel's descriptors for it); exclusive
        // ownership is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_ptr().add(base as usize),
                self.chunk_size as usize,
            )
        }
    }
}

/// Copy or zero-copy binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The kernel copies frames between the driver and the UMEM (always works).
    Copy,
    /// The driver DMAs into the UMEM (needs driver support; veth has none).
    ZeroCopy,
}

/// Ring sizes for one socket (powers of two).
#[derive(Debug, Clone, Copy)]
pub struct RingSizes {
    pub fill: u32,
    pub comp: u32,
    pub rx: u32,
    pub tx: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            fill: 2048,
            comp: 2048,
            rx: 2048,
            tx: 2048,
        }
    }
}

/// One AF_XDP socket bound to (interface, queue), with its own fill and
/// completion rings (also when it shares the UMEM of another socket).
pub struct XskSocket {
    // Rings before fd so they are unmapped before the socket closes.
    pub(crate) fill: Ring<u64>,
    pub(crate) comp: Ring<u64>,
    pub(crate) rx: Ring<libc::xdp_desc>,
    pub(crate) tx: Ring<libc::xdp_desc>,
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    queue: u32,
    mode: BindMode,
    sg: bool,
}

/// Kernel-side socket counters (getsockopt XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskKernelStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

impl XskSocket {
    /// Creates a socket on `ifname` queue `queue`. With `shared` = None the
    /// socket registers `umem` and binds with `mode`, and with XDP_USE_SG if
    /// `sg`: frames larger than a chunk then arrive as chains of descriptors
    /// (XDP_PKT_CONTD on all but the last) instead of being dropped by the
    /// kernel. With Some(first socket) it shares that socket's UMEM and
    /// inherits its bind mode and SG setting, as the kernel requires.
    pub fn new(
        umem: &Umem,
        ifname: &str,
        queue: u32,
        sizes: RingSizes,
        mode: BindMode,
        sg: bool,
        shared: Option<&XskSocket>,
    ) -> Result<XskSocket> {
        let what = |s: &str| format!("AF_XDP {ifname} queue {queue}: {s}");
        let ifindex = sys::ifindex(ifname)?;
        let fd = sys::socket(libc::AF_XDP, libc::SOCK_RAW, 0, &what("socket"))?;
        if shared.is_none() {
            umem.register(&fd).map_err(|e| ctx(e, &what("")))?;
        }
        for (opt, n, name) in [
            (libc::XDP_UMEM_FILL_RING, sizes.fill, "fill ring size"),
            (
                libc::XDP_UMEM_COMPLETION_RING,
                sizes.comp,
                "completion ring size",
            ),
            (libc::XDP_RX_RING, sizes.rx, "rx ring size"),
            (libc::XDP_TX_RING, sizes.tx, "tx ring size"),
        ] {
            if !n.is_power_of_two() {
                return Err(Error::RingSize {
                    iface: ifname.to_string(),
                    queue,
                    ring: name,
                    size: n,
                });
            }
            sys::setsockopt(&fd, libc::SOL_XDP, opt, &n, &what(name))?;
        }
        // SAFETY: xdp_mmap_offsets is plain data; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        sys::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            &mut off,
            &what("XDP_MMAP_OFFSETS"),
        )?;

        let raw = fd.as_raw_fd();
        let map = |o: &libc::xdp_ring_offset, n: u32, elem: usize, pgoff: i64, name: &str| {
            Mmap::new(
                o.desc as usize + n as usize * elem,
                Some(raw),
                pgoff,
                &what(name),
            )
        };
        let d = std::mem::size_of::<libc::xdp_desc>();
        let fill = Ring::new(
            map(
                &off.fr,
                sizes.fill,
                8,
                libc::XDP_UMEM_PGOFF_FILL_RING as i64,
                "fill ring",
            )?,
            &off.fr,
            sizes.fill,
            true,
        )?;
        let comp = Ring::new(
            map(
                &off.cr,
                sizes.comp,
                8,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
                "completion ring",
            )?,
            &off.cr,
            sizes.comp,
            false,
        )?;
        let rx = Ring::new(
            map(&off.rx, sizes.rx, d, libc::XDP_PGOFF_RX_RING, "rx ring")?,
            &off.rx,
            sizes.rx,
            false,
        )?;
        let tx = Ring::new(
            map(&off.tx, sizes.tx, d, libc::XDP_PGOFF_TX_RING, "tx ring")?,
            &off.tx,
            sizes.tx,
            true,
        )?;

        let (flags, shared_fd, mode, sg) = match shared {
            // Shared sockets may not pass flags: they inherit the owner's
            // (XDP_USE_SG through the UMEM).
            Some(first) => (
                libc::XDP_SHARED_UMEM,
                first.fd.as_raw_fd() as u32,
                first.mode,
                first.sg,
            ),
            None => {
                let m = match mode {
                    BindMode::Copy => libc::XDP_COPY,
                    BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                };
                let sgf = if sg { libc::XDP_USE_SG } else { 0 };
                (m | libc::XDP_USE_NEED_WAKEUP | sgf, 0, mode, sg)
            }
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_fd,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
        let rc = unsafe {
            libc::bind(
                raw,
                &sa as *const libc::sockaddr_xdp as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_os(what(&format!(
                "bind ({}{}{})",
                if mode == BindMode::ZeroCopy {
                    "zero-copy"
                } else {
                    "copy"
                },
                if sg {
                    ", multi-buffer (XDP_USE_SG)"
                } else {
                    ""
                },
                if shared.is_some() {
                    ", shared UMEM"
                } else {
                    ""
                }
            ))));
        }
        Ok(XskSocket {
            fill,
            comp,
            rx,
            tx,
            fd,
            ifname: ifname.to_string(),
            ifindex,
            queue,
            mode,
            sg,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Bound with XDP_USE_SG (directly or through the shared UMEM).
    pub fn sg(&self) -> bool {
        self.sg
    }

    /// Asks the kernel to transmit what is in the TX ring (and, in copy mode,
    /// to run completions). EAGAIN/EBUSY/ENOBUFS mean "try again later".
    #[inline]
    pub(crate) fn kick_tx(&self) -> bool {
        // SAFETY: a zero-length sendto with no buffer and no address.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return true;
        }
        let e = std::io::Error::last_os_error().raw_os_error();
        matches!(
            e,
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::ENETDOWN)
        )
    }

    /// Wakes the driver to refill from the fill ring.
    #[inline]
    pub(crate) fn kick_fill(&self) {
        // SAFETY: a zero-length recvfrom with no buffer and no address.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// The kernel's counters for this socket.
    pub fn kernel_stats(&self) -> Result<XskKernelStats> {
        // SAFETY: xdp_statistics is plain data; zero is valid.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        sys::getsockopt(
            self.fd(),
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            &mut s,
            "XDP_STATISTICS",
        )?;
        Ok(XskKernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

fn ctx(e: Error, what: &str) -> Error {
    match e {
        Error::Os { what: w, source } => Error::Os {
            what: format!("{what}{w}"),
            source,
        },
        e => e,
    }
}
