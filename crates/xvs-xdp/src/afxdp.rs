//! The AF_XDP backend: one UMEM shared by the sockets of all the worker's
//! ports (an interface and RX queue each), frames moved in batches with no
//! lock, no allocation and no per-packet system call.

use crate::backend::{
    BatchHandler, Disposition, PortId, PortInfo, Published, WorkerConfig, WorkerStats, ZeroCopy,
};
use crate::error::{Error, Result};
use crate::iface::{Backend, Interface};
use crate::xsk::{BindMode, RingSizes, Umem, XskKernelStats, XskSocket};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs_core::frame::Frame;

mod superframe;

/// How many frames ahead the worker prefetches the frame data.
const PREFETCH_AHEAD: u32 = 4;

struct XdpPort {
    sock: XskSocket,
    /// Frames submitted to TX and not yet completed.
    in_flight: u32,
    /// Frames written to the TX ring in this batch, not yet submitted.
    queued: u32,
    info: PortInfo,
    /// Frames longer than this may hold an IP packet above the MTU and are
    /// looked at by the super-frame path (MTU + Ethernet header).
    cut_above: u32,
    /// The interface MTU (the largest IP packet it carries), read at bind
    /// and re-read about every second (see [`XdpWorker::poll`]).
    mtu: u32,
}

/// The AF_XDP worker: one UMEM shared by the sockets of all its ports.
pub struct XdpWorker {
    // Sockets before the UMEM: closed before it is unmapped.
    ports: Vec<XdpPort>,
    umem: Umem,
    /// Chunk addresses owned by userspace and unused.
    free: Vec<u64>,
    pollfds: Vec<libc::pollfd>,
    batch: u32,
    busy_poll: bool,
    /// Copy mode: TX progresses only on sendto, so every outstanding TX is kicked.
    copy_mode: bool,
    stats: WorkerStats,
    published: Arc<Published>,
    /// Where chains of descriptors (XDP_USE_SG) are gathered before they are
    /// cut: allocated once, [`superframe::SCRATCH`] bytes.
    scratch: Box<[u8]>,
    /// When the ports' MTUs were last read, and how.
    mtu_read: Instant,
    mtus: crate::sys::MtuReader,
}

impl XdpWorker {
    pub(crate) fn new(ports: &[(&Interface, u32)], cfg: &WorkerConfig) -> Result<XdpWorker> {
        let ifaces: Vec<&Interface> = ports.iter().map(|(i, _)| *i).collect();
        let native = ifaces.iter().all(|i| i.backend() == Backend::XdpNative);
        let modes: &[BindMode] = match (native, cfg.zero_copy) {
            (_, ZeroCopy::Off) | (false, ZeroCopy::Auto) => &[BindMode::Copy],
            (true, ZeroCopy::Auto) => &[BindMode::ZeroCopy, BindMode::Copy],
            (_, ZeroCopy::Required) => &[BindMode::ZeroCopy],
        };
        let mut last = None;
        for &m in modes {
            match Self::build_sg(ports, cfg, m) {
                Ok(w) => return Ok(w),
                Err(e) => {
                    if modes.len() > 1 && m == BindMode::ZeroCopy {
                        tracing::info!(error = %e, "zero-copy bind failed, using copy mode");
                    }
                    last = Some(e)
                }
            }
        }
        Err(last.unwrap_or(Error::NothingToTry("bind mode")))
    }

    /// Builds with XDP_USE_SG, so that frames larger than a chunk arrive as
    /// chains (cut by the super-frame path) instead of being dropped by the
    /// kernel; without it if the kernel or driver refuses the flag (EINVAL
    /// before Linux 6.6, EOPNOTSUPP for zero-copy drivers without
    /// multi-buffer support), logged once per process.
    fn build_sg(
        ports: &[(&Interface, u32)],
        cfg: &WorkerConfig,
        mode: BindMode,
    ) -> Result<XdpWorker> {
        match Self::build(ports, cfg, mode, true) {
            Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)) => {
                let w = Self::build(ports, cfg, mode, false)?;
                static LOGGED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "multi-buffer AF_XDP (XDP_USE_SG) refused: frames larger than a UMEM chunk (GSO/GRO super-frames) are dropped by the kernel (XDP_STATISTICS rx_dropped)"
                    );
                }
                Ok(w)
            }
            r => r,
        }
    }

    fn build(
        ports: &[(&Interface, u32)],
        cfg: &WorkerConfig,
        mode: BindMode,
        sg: bool,
    ) -> Result<XdpWorker> {
        let n = ports.len() as u32;
        let frames = if cfg.frames == 0 {
            2 * cfg.ring_size * n
        } else {
            cfg.frames
        };
        let umem = Umem::new(frames, cfg.chunk_size, cfg.headroom)?;
        let sizes = RingSizes {
            fill: cfg.ring_size,
            comp: cfg.ring_size,
            rx: cfg.ring_size,
            tx: cfg.ring_size,
        };
        let mtus = crate::sys::MtuReader::new()?;
        let specs = ports;
        let mut ports: Vec<XdpPort> = Vec::with_capacity(specs.len());
        for &(iface, queue) in specs {
            let sock = XskSocket::new(
                &umem,
                iface.name(),
                queue,
                sizes,
                mode,
                sg,
                ports.first().map(|p| &p.sock),
            )?;
            iface.register_socket(queue, sock.fd())?;
            let info = PortInfo {
                ifname: iface.name().to_string(),
                queue,
                backend: iface.backend(),
                zero_copy: sock.mode() == BindMode::ZeroCopy,
                multi_buffer: sock.sg(),
            };
            let mtu = mtus.mtu(iface.name())?;
            ports.push(XdpPort {
                sock,
                in_flight: 0,
                queued: 0,
                info,
                cut_above: superframe::cut_above(mtu),
                mtu,
            });
        }
        let cs = cfg.chunk_size as u64;
        let free: Vec<u64> = (0..frames as u64).rev().map(|i| i * cs).collect();
        let pollfds = ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.sock.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut w = XdpWorker {
            ports,
            umem,
            free,
            pollfds,
            batch: cfg.batch.clamp(1, 1024),
            busy_poll: cfg.busy_poll,
            copy_mode: mode == BindMode::Copy,
            stats: WorkerStats::default(),
            published: Published::register(specs.first().map_or(0, |p| p.1)),
            scratch: vec![0u8; superframe::SCRATCH].into_boxed_slice(),
            mtu_read: Instant::now(),
            mtus,
        };
        // Give each fill ring its share of the frames up front.
        let share = (frames / n).min(cfg.ring_size);
        for p in 0..w.ports.len() {
            w.refill(p, share);
        }
        Ok(w)
    }

    pub(crate) fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    pub(crate) fn published(&self) -> &Published {
        &self.published
    }

    pub(crate) fn ports(&self) -> Vec<PortInfo> {
        self.ports.iter().map(|p| p.info.clone()).collect()
    }

    /// Kernel counters of each port's socket.
    pub fn kernel_stats(&self) -> Vec<XskKernelStats> {
        self.ports
            .iter()
            .map(|p| p.sock.kernel_stats().unwrap_or_default())
            .collect()
    }

    fn refill(&mut self, p: usize, max: u32) {
        let port = &mut self.ports[p];
        let want = port.sock.fill.free(max).min(max);
        let n = want.min(self.free.len() as u32);
        if n < want {
            self.stats.fill_ring_empty += 1;
        }
        if n > 0 {
            let (idx, got) = port.sock.fill.reserve(n);
            for i in 0..got {
                // `free` has at least n entries.
                let addr = self.free.pop().unwrap_or_default();
                port.sock.fill.write(idx.wrapping_add(i), addr);
            }
            port.sock.fill.submit();
        }
        if port.sock.fill.needs_wakeup() {
            port.sock.kick_fill();
            self.stats.fill_kicks += 1;
        }
    }

    fn reap(&mut self, p: usize) {
        let mask = !(self.umem.chunk_size() as u64 - 1);
        let port = &mut self.ports[p];
        let (idx, n) = port.sock.comp.peek(port.sock.comp.size());
        for i in 0..n {
            self.free
                .push(port.sock.comp.read(idx.wrapping_add(i)) & mask);
        }
        port.sock.comp.release(n);
        port.in_flight = port.in_flight.saturating_sub(n);
    }

    fn kick(&mut self) {
        for port in &mut self.ports {
            if port.queued > 0 {
                port.sock.tx.submit();
                port.in_flight += port.queued;
                port.queued = 0;
            }
            // Copy mode: the kernel sends only inside sendto, so any frame not
            // yet taken from the TX ring needs a kick whatever the flag says.
            let need = if self.copy_mode {
                port.sock.tx.outstanding() > 0
            } else {
                port.in_flight > 0 && port.sock.tx.needs_wakeup()
            };
            if need {
                port.sock.kick_tx();
                self.stats.tx_kicks += 1;
            }
        }
    }

    pub(crate) fn flush_step(&mut self) -> bool {
        self.kick();
        for p in 0..self.ports.len() {
            self.reap(p);
        }
        self.ports.iter().any(|p| p.in_flight > 0)
    }

    fn rx_ready(&mut self) -> bool {
        self.ports.iter_mut().any(|p| p.sock.rx.available(1) > 0)
    }

    /// Waits for RX. Also re-reads the ports' MTUs about once a second (an
    /// ioctl, not per packet): after an MTU change, super-frames are cut to
    /// the old size for up to a second (smaller segments are harmless; larger
    /// ones are dropped by the peer until the new MTU is read).
    pub(crate) fn poll(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.mtu_read.elapsed() >= Duration::from_secs(1) {
            self.reread_mtus();
        }
        if self.rx_ready() {
            return Ok(true);
        }
        // Frames stuck in a TX ring would wait for the next RX otherwise.
        let tx_pending = self.ports.iter().any(|p| p.in_flight > 0 || p.queued > 0);
        if tx_pending {
            self.flush_step();
        }
        if self.busy_poll {
            let end = Instant::now() + timeout;
            loop {
                if self.rx_ready() {
                    return Ok(true);
                }
                if Instant::now() >= end {
                    return Ok(false);
                }
                std::hint::spin_loop();
            }
        }
        let mut ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        if tx_pending {
            ms = ms.min(1);
        }
        self.stats.polls += 1;
        // SAFETY: `pollfds` is a valid array of pollfd of the length passed.
        let rc = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(rc > 0 || self.rx_ready())
    }

    pub(crate) fn process_batch<H: BatchHandler>(&mut self, h: &mut H) -> usize {
        let nports = self.ports.len();
        let mask = !(self.umem.chunk_size() as u64 - 1);
        let mut total = 0usize;
        for p in 0..nports {
            self.reap(p);
            let (idx, n) = self.ports[p].sock.rx.peek(self.batch);
            // A burst never ends inside a chain (XDP_USE_SG).
            let n = self.whole_chains(p, idx, n);
            {
                let (umem, rx) = (&self.umem, &self.ports[p].sock.rx);
                for i in 0..n.min(PREFETCH_AHEAD) {
                    umem.prefetch(rx.read(idx.wrapping_add(i)).addr);
                }
                // The buffers of a chain are shown empty: only the whole,
                // gathered frame is worth parsing, and its segments are
                // handled as frames of their own.
                let mut in_chain = false;
                let mut frames = (0..n).map(|i| {
                    if i + PREFETCH_AHEAD < n {
                        umem.prefetch(rx.read(idx.wrapping_add(i + PREFETCH_AHEAD)).addr);
                    }
                    let d = rx.read(idx.wrapping_add(i));
                    let chained = in_chain || d.options & libc::XDP_PKT_CONTD != 0;
                    in_chain = d.options & libc::XDP_PKT_CONTD != 0;
                    if chained {
                        return &[][..];
                    }
                    // SAFETY: the kernel handed these chunks to us through the
                    // RX ring and nothing else refers to them until the
                    // handling loop below, after `frames` is gone.
                    unsafe { umem.frame(d.addr, d.len) }
                });
                h.prepare(p as PortId, &mut frames);
            }
            let cut_above = self.ports[p].cut_above;
            let mut i = 0;
            while i < n {
                let d = self.ports[p].sock.rx.read(idx.wrapping_add(i));
                total += 1;
                if d.options & libc::XDP_PKT_CONTD != 0 {
                    i = self.chain(h, p, idx, i, n);
                    continue;
                }
                i += 1;
                if d.len > cut_above && self.cut_single(h, p, d.addr, d.len) {
                    continue;
                }
                let base = d.addr & mask;
                // SAFETY: the kernel handed this chunk to us through the RX
                // ring; until it is put in a fill or TX ring it is ours alone,
                // and `chunk` is dropped before that happens below.
                let chunk = unsafe { self.umem.chunk_mut(d.addr) };
                let mut frame = Frame::new(chunk, (d.addr - base) as usize, d.len as usize);
                let disp = h.handle(p as PortId, Some(i as usize - 1), &mut frame);
                let (head, len) = (frame.head(), frame.len());
                self.dispose(disp, base, head, len, false);
            }
            h.finish();
            self.ports[p].sock.rx.release(n);
        }
        self.stats.rx += total as u64;
        self.kick();
        let ring = self.ports.first().map(|p| p.sock.fill.size()).unwrap_or(0);
        for p in 0..nports {
            // Top up once a batch worth of slots is free (amortises the index store).
            if self.ports[p].sock.fill.free(self.batch) >= self.batch {
                self.refill(p, ring);
            }
        }
        total
    }

    /// Transmits (or drops, counted) the frame `len` bytes at `head` of the
    /// chunk at `base`, as the handler said. `push`: a super-frame's segment;
    /// in copy mode the kernel sends at most 32 frames per sendto, so the
    /// segments are sent as they are made (one kick per 32) instead of piling
    /// up in the TX ring, and a full ring is kicked and retried once.
    #[inline(always)]
    fn dispose(&mut self, disp: Disposition, base: u64, head: usize, len: usize, push: bool) {
        match disp {
            Disposition::Tx(out) if usize::from(out) < self.ports.len() => {
                let out = usize::from(out);
                let desc = libc::xdp_desc {
                    addr: base + head as u64,
                    len: len as u32,
                    options: 0,
                };
                let mut tries = if push { 2 } else { 1 };
                loop {
                    let tx = &mut self.ports[out];
                    let (ti, got) = tx.sock.tx.reserve(1);
                    if got == 1 {
                        tx.sock.tx.write(ti, desc);
                        tx.queued += 1;
                        self.stats.tx += 1;
                        if push && tx.queued >= superframe::KICK_EVERY {
                            self.push_tx(out);
                        }
                        return;
                    }
                    tries -= 1;
                    if tries == 0 {
                        break;
                    }
                    self.push_tx(out);
                }
                self.stats.tx_ring_full += 1;
                self.free.push(base);
            }
            Disposition::Tx(_) => {
                self.stats.bad_port += 1;
                self.free.push(base);
            }
            Disposition::Drop => {
                self.stats.dropped += 1;
                self.free.push(base);
            }
        }
    }
}
