//! The AF_PACKET fallback backend: a TPACKET_V3 RX ring per interface with the
//! steering program as eBPF socket filter (only owned frames reach the ring),
//! frames copied into worker-owned buffers with headroom, TX batched per call
//! with sendmmsg. Frames above the MTU (TSO/GSO super-frames from a local
//! sender over veth, GRO) are cut into MTU-sized segments straight from the
//! ring into those buffers ([`xvs_core::wire::gso`]); a TPACKET_V3 block
//! (256 KiB) holds a whole 64 KiB frame. The kernel's own handling of the
//! steered frames is stopped by the interface's tc ingress guard (see
//! iface.rs): packet taps run before tc ingress, so the socket still sees
//! them.

use crate::backend::{
    BatchHandler, Disposition, PortId, PortInfo, Published, WorkerConfig, WorkerStats,
};
use crate::error::{last_os, Error, Result};
use crate::iface::{Backend, Interface};
use crate::sys::{self, Mmap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs_core::frame::Frame;
use xvs_core::wire::gso;

const SOL_PACKET: i32 = 263;
const PACKET_RX_RING: i32 = 5;
const PACKET_VERSION: i32 = 10;
const PACKET_FANOUT: i32 = 18;
const PACKET_QDISC_BYPASS: i32 = 20;
const PACKET_IGNORE_OUTGOING: i32 = 23;
const TPACKET_V3: i32 = 2;
const PACKET_FANOUT_HASH: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_ALL: u16 = 3;

/// Ring geometry: 32 blocks of 256 KiB, a block handed over at the latest
/// after 1 ms.
const BLOCK_SIZE: u32 = 1 << 18;
const BLOCK_NR: u32 = 32;
const FRAME_SIZE: u32 = 2048;
const BLOCK_TIMEOUT_MS: u32 = 1;
/// Kernel headroom equivalent to AF_XDP's XDP_PACKET_HEADROOM.
const HEADROOM: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

// Offsets in struct tpacket_block_desc (version, offset_to_priv, then tpacket_hdr_v1).
const BD_STATUS: usize = 8;
const BD_NUM_PKTS: usize = 12;
const BD_FIRST: usize = 16;
// Offsets in struct tpacket3_hdr.
const H_NEXT: usize = 0;
const H_SNAPLEN: usize = 12;
const H_LEN: usize = 16;
const H_STATUS: usize = 20;
const H_MAC: usize = 24;
const H_VLAN_TCI: usize = 32;
const H_VLAN_TPID: usize = 36;

struct PacketPort {
    ring: Mmap,
    fd: OwnedFd,
    /// Current block, and the next packet in it (index, byte offset).
    block: u32,
    pkt: u32,
    off: usize,
    info: PortInfo,
    /// TX messages queued in this call: (slot index, head, len).
    tx: Vec<(usize, usize, usize)>,
    /// The interface MTU, read at open and about every second after.
    mtu: u32,
}

/// The AF_PACKET worker.
pub struct PacketWorker {
    ports: Vec<PacketPort>,
    /// Frame buffers: `slots` of `slot_size` bytes (one per frame of a call).
    buf: Vec<u8>,
    slot_size: usize,
    slots: usize,
    headroom: usize,
    batch: u32,
    busy_poll: bool,
    pollfds: Vec<libc::pollfd>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    stats: WorkerStats,
    published: Arc<Published>,
    /// When the ports' MTUs were last read, and how.
    mtu_read: Instant,
    mtus: sys::MtuReader,
}

// SAFETY: the raw pointers inside `iov`/`msgs` point into `buf`, which moves
// with the worker; they are rebuilt before each use.
unsafe impl Send for PacketWorker {}

impl PacketWorker {
    pub(crate) fn new(
        ifaces: &[&Interface],
        queue: u32,
        cfg: &WorkerConfig,
    ) -> Result<PacketWorker> {
        let mtus = sys::MtuReader::new()?;
        let mut ports = Vec::new();
        for iface in ifaces {
            ports.push(open(iface, queue, &mtus)?);
        }
        let batch = cfg.batch.clamp(1, 1024);
        let slots = batch as usize * ports.len();
        let slot_size = cfg.chunk_size as usize;
        let headroom = HEADROOM + cfg.headroom as usize;
        if headroom + 1518 + 4 > slot_size {
            return Err(Error::PacketHeadroom(cfg.headroom));
        }
        let pollfds = ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        for p in &mut ports {
            p.tx.reserve(slots);
        }
        Ok(PacketWorker {
            ports,
            buf: vec![0u8; slots * slot_size],
            slot_size,
            slots,
            headroom,
            batch,
            busy_poll: cfg.busy_poll,
            pollfds,
            // SAFETY: iovec and mmsghdr are plain data; zero is valid.
            iov: vec![unsafe { std::mem::zeroed() }; slots],
            // SAFETY: as above.
            msgs: vec![unsafe { std::mem::zeroed() }; slots],
            stats: WorkerStats::default(),
            published: Published::register(queue),
            mtu_read: Instant::now(),
            mtus,
        })
    }

    pub(crate) fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    pub(crate) fn published(&self) -> &Published {
        &self.published
    }

    /// Re-reads the MTUs (from poll, about once a second; an MTU change
    /// reaches the super-frame cut within that time).
    fn reread_mtus(&mut self) {
        self.mtu_read = Instant::now();
        for port in &mut self.ports {
            if let Ok(m) = self.mtus.mtu(&port.info.ifname) {
                if m != port.mtu {
                    tracing::info!(interface = %port.info.ifname, old = port.mtu, new = m, "MTU changed: super-frames are cut to the new size");
                    port.mtu = m;
                }
            }
        }
    }

    pub(crate) fn ports(&self) -> Vec<PortInfo> {
        self.ports.iter().map(|p| p.info.clone()).collect()
    }

    fn block_ptr(p: &PacketPort) -> *mut u8 {
        // SAFETY: block < BLOCK_NR, so the offset stays inside the ring mapping.
        unsafe { p.ring.as_ptr().add((p.block * BLOCK_SIZE) as usize) }
    }

    fn block_status(p: &PacketPort) -> &AtomicU32 {
        // SAFETY: see status().
        unsafe { status(Self::block_ptr(p)) }
    }

    fn rx_ready(&self) -> bool {
        self.ports
            .iter()
            .any(|p| Self::block_status(p).load(Ordering::Acquire) & TP_STATUS_USER != 0)
    }

    pub(crate) fn poll(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.mtu_read.elapsed() >= Duration::from_secs(1) {
            self.reread_mtus();
        }
        if self.rx_ready() {
            return Ok(true);
        }
        if self.busy_poll {
            let end = Instant::now() + timeout;
            while Instant::now() < end {
                if self.rx_ready() {
                    return Ok(true);
                }
                std::hint::spin_loop();
            }
            return Ok(false);
        }
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        self.stats.polls += 1;
        // SAFETY: `pollfds` is a valid pollfd array of the length passed.
        let rc = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(self.rx_ready())
    }

    pub(crate) fn process_batch<H: BatchHandler>(&mut self, h: &mut H) -> usize {
        let nports = self.ports.len();
        let mut slot = 0usize;
        let mut total = 0usize;
        for p in 0..nports {
            // Frames are copied out of the ring one at a time: nothing to show up front.
            h.prepare(p as PortId, &mut std::iter::empty());
            let mut taken = 0u32;
            while taken < self.batch && slot < self.slots {
                let port = &mut self.ports[p];
                let block = Self::block_ptr(port);
                // SAFETY: `block` is the start of a block of the live ring.
                let status = unsafe { status(block) };
                if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                    break;
                }
                // SAFETY: the block belongs to userspace while TP_STATUS_USER is
                // set; header fields are read at their fixed offsets inside it.
                let num = unsafe { (block.add(BD_NUM_PKTS) as *const u32).read() };
                if port.pkt == 0 {
                    // SAFETY: as above.
                    port.off = unsafe { (block.add(BD_FIRST) as *const u32).read() } as usize;
                }
                if port.pkt >= num || port.off >= BLOCK_SIZE as usize {
                    // Block done: give it back and move on.
                    status.store(0, Ordering::Release);
                    port.block = (port.block + 1) % BLOCK_NR;
                    port.pkt = 0;
                    continue;
                }
                // SAFETY: `off` is the kernel-written offset of a packet header
                // inside this block (checked < BLOCK_SIZE above).
                let hdr = unsafe { block.add(port.off) };
                // SAFETY: tpacket3_hdr fields inside the block (hdr is 16-byte aligned).
                let (next, snap, len, st, mac) = unsafe {
                    (
                        (hdr.add(H_NEXT) as *const u32).read(),
                        (hdr.add(H_SNAPLEN) as *const u32).read() as usize,
                        (hdr.add(H_LEN) as *const u32).read() as usize,
                        (hdr.add(H_STATUS) as *const u32).read(),
                        (hdr.add(H_MAC) as *const u16).read() as usize,
                    )
                };
                let (tci, tpid) = if st & TP_STATUS_VLAN_VALID != 0 {
                    // SAFETY: as above.
                    let tci = unsafe { (hdr.add(H_VLAN_TCI) as *const u32).read() } as u16;
                    let tpid = if st & TP_STATUS_VLAN_TPID_VALID != 0 {
                        // SAFETY: as above.
                        unsafe { (hdr.add(H_VLAN_TPID) as *const u16).read() }
                    } else {
                        0x8100
                    };
                    (Some(tci), tpid)
                } else {
                    (None, 0)
                };
                let at = port.off;
                port.pkt += 1;
                port.off = if next == 0 {
                    BLOCK_SIZE as usize
                } else {
                    port.off + next as usize
                };
                taken += 1;
                self.stats.rx += 1;
                total += 1;
                let tag = if tci.is_some() { 4 } else { 0 };
                if snap < len {
                    // The capture was cut: the frame outgrew a block.
                    self.stats.superframe_too_long += 1;
                    continue;
                }
                if snap < 14 || at + mac + snap > BLOCK_SIZE as usize {
                    self.stats.dropped += 1;
                    continue;
                }
                // SAFETY: mac + snap lies inside the block (checked just above),
                // which stays ours until every packet in it has been handled.
                let src = unsafe { std::slice::from_raw_parts(hdr.add(mac), snap) };
                let mtu = self.ports[p].mtu as usize;
                if snap + tag > mtu + 14 {
                    // The ring holds the frame without its tag (the kernel keeps
                    // it in metadata), so the cut is planned on untagged bytes.
                    let max_ip = mtu.min(self.slot_size - self.headroom - 4 - 18);
                    match gso::plan(src, max_ip) {
                        Ok(Some(plan)) => {
                            slot =
                                self.send_segments(h, p, src, &plan, tci.map(|t| (tpid, t)), slot);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            self.stats.refused(e);
                            continue;
                        }
                    }
                }
                if self.headroom + snap + tag > self.slot_size {
                    self.stats.superframe_malformed += 1;
                    continue;
                }
                let buf = &mut self.buf[slot * self.slot_size..(slot + 1) * self.slot_size];
                let head = self.headroom;
                let flen = if let Some(tci) = tci {
                    // The kernel strips the VLAN tag into metadata: put it back
                    // so the engine sees the frame as XDP would.
                    buf[head..head + 12].copy_from_slice(&src[..12]);
                    buf[head + 12..head + 14].copy_from_slice(&tpid.to_be_bytes());
                    buf[head + 14..head + 16].copy_from_slice(&tci.to_be_bytes());
                    buf[head + 16..head + 4 + snap].copy_from_slice(&src[12..]);
                    snap + 4
                } else {
                    buf[head..head + snap].copy_from_slice(src);
                    snap
                };
                let mut frame = Frame::new(buf, head, flen);
                let disp = h.handle(p as PortId, Some(taken as usize - 1), &mut frame);
                let (fh, fl) = (frame.head(), frame.len());
                if self.dispose(disp, slot, fh, fl) {
                    slot += 1;
                }
            }
            h.finish();
        }
        self.transmit();
        total
    }

    /// Queues the frame at `head`/`len` of slot `slot` for TX, or counts its
    /// drop, as the handler said. Returns whether the slot is now taken.
    #[inline(always)]
    fn dispose(&mut self, disp: Disposition, slot: usize, head: usize, len: usize) -> bool {
        match disp {
            Disposition::Tx(out) if usize::from(out) < self.ports.len() => {
                self.ports[usize::from(out)].tx.push((slot, head, len));
                true
            }
            Disposition::Tx(_) => {
                self.stats.bad_port += 1;
                false
            }
            Disposition::Drop => {
                self.stats.dropped += 1;
                false
            }
        }
    }

    /// Cuts the super-frame `src` (read in place from port `p`'s ring,
    /// without its VLAN tag, which `tag` = (TPID, TCI) puts back into every
    /// segment) into slots from `slot` on, through the handler and out;
    /// sends what is queued whenever the slots run out. Returns the next
    /// free slot.
    fn send_segments<H: BatchHandler>(
        &mut self,
        h: &mut H,
        p: usize,
        src: &[u8],
        plan: &gso::Plan,
        tag: Option<(u16, u16)>,
        mut slot: usize,
    ) -> usize {
        self.stats.superframes += 1;
        let head = self.headroom;
        let skip = if tag.is_some() { 4 } else { 0 };
        for k in 0..plan.segments() {
            if slot == self.slots {
                h.finish();
                self.transmit();
                slot = 0;
            }
            let buf = &mut self.buf[slot * self.slot_size..(slot + 1) * self.slot_size];
            let Ok(n) = gso::segment(src, plan, k, &mut buf[head + skip..]) else {
                self.stats.superframe_malformed += 1;
                break;
            };
            if let Some((tpid, tci)) = tag {
                buf.copy_within(head + 4..head + 16, head);
                buf[head + 12..head + 14].copy_from_slice(&tpid.to_be_bytes());
                buf[head + 14..head + 16].copy_from_slice(&tci.to_be_bytes());
            }
            self.stats.segments += 1;
            let mut frame = Frame::new(buf, head, n + skip);
            let disp = h.handle(p as PortId, None, &mut frame);
            let (fh, fl) = (frame.head(), frame.len());
            if self.dispose(disp, slot, fh, fl) {
                slot += 1;
            }
        }
        slot
    }

    /// Sends every queued frame, one sendmmsg per port.
    fn transmit(&mut self) {
        for port in &mut self.ports {
            let n = port.tx.len();
            if n == 0 {
                continue;
            }
            for (i, &(slot, head, len)) in port.tx.iter().enumerate() {
                self.iov[i] = libc::iovec {
                    // SAFETY: slot < slots and head + len <= slot_size (Frame invariant).
                    iov_base: unsafe { self.buf.as_mut_ptr().add(slot * self.slot_size + head) }
                        as *mut libc::c_void,
                    iov_len: len,
                };
                // SAFETY: msghdr is plain data; zero is valid.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_iov = &mut self.iov[i];
                hdr.msg_iovlen = 1;
                self.msgs[i] = libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                };
            }
            let mut sent = 0usize;
            while sent < n {
                // SAFETY: msgs[sent..n] are initialised and point at live iovecs
                // into `buf`; the socket is bound to the port's interface.
                let rc = unsafe {
                    libc::sendmmsg(
                        port.fd.as_raw_fd(),
                        self.msgs.as_mut_ptr().add(sent),
                        (n - sent) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if rc <= 0 {
                    break;
                }
                sent += rc as usize;
            }
            self.stats.tx_kicks += 1;
            self.stats.tx += sent as u64;
            self.stats.tx_ring_full += (n - sent) as u64;
            port.tx.clear();
        }
    }
}

/// The status word of the block descriptor at `block`.
///
/// # Safety
/// `block` must point at a block of a live TPACKET_V3 ring mapping that
/// outlives the returned reference. The word is 4-byte aligned; the kernel
/// writes it concurrently, hence the atomic.
unsafe fn status<'a>(block: *mut u8) -> &'a AtomicU32 {
    // SAFETY: the caller's contract.
    unsafe { &*(block.add(BD_STATUS) as *const AtomicU32) }
}

/// Opens the TPACKET_V3 socket of one interface: filter first (so nothing
/// unfiltered is queued), ring, then bind.
fn open(iface: &Interface, queue: u32, mtus: &sys::MtuReader) -> Result<PacketPort> {
    let name = iface.name();
    let what = |s: &str| format!("AF_PACKET {name}: {s}");
    let filter = iface.filter_fd().ok_or_else(|| Error::NotAfPacket {
        iface: name.to_string(),
    })?;
    // Protocol 0: receive nothing until bound.
    let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0, &what("socket"))?;
    sys::setsockopt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_BPF,
        &filter,
        &what("attach socket filter"),
    )?;
    sys::setsockopt(
        &fd,
        SOL_PACKET,
        PACKET_VERSION,
        &TPACKET_V3,
        &what("TPACKET_V3"),
    )?;
    sys::setsockopt(
        &fd,
        SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        &1i32,
        &what("PACKET_IGNORE_OUTGOING"),
    )?;
    sys::setsockopt(
        &fd,
        SOL_PACKET,
        PACKET_QDISC_BYPASS,
        &1i32,
        &what("PACKET_QDISC_BYPASS"),
    )?;
    let req = TpacketReq3 {
        block_size: BLOCK_SIZE,
        block_nr: BLOCK_NR,
        frame_size: FRAME_SIZE,
        frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
        retire_blk_tov: BLOCK_TIMEOUT_MS,
        sizeof_priv: 0,
        feature_req_word: 0,
    };
    sys::setsockopt(
        &fd,
        SOL_PACKET,
        PACKET_RX_RING,
        &req,
        &what("PACKET_RX_RING"),
    )?;
    let ring = Mmap::new(
        (BLOCK_SIZE * BLOCK_NR) as usize,
        Some(fd.as_raw_fd()),
        0,
        &what("ring"),
    )?;
    // SAFETY: sockaddr_ll is plain data; zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_ALL.to_be();
    sa.sll_ifindex = iface.ifindex() as i32;
    // SAFETY: `sa` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(last_os(what("bind")));
    }
    // Workers of the same interface share its frames by flow hash.
    let fanout = (iface.ifindex() & 0xffff) | (PACKET_FANOUT_HASH << 16);
    sys::setsockopt(
        &fd,
        SOL_PACKET,
        PACKET_FANOUT,
        &fanout,
        &what("PACKET_FANOUT"),
    )?;
    let mtu = mtus.mtu(name)?;
    Ok(PacketPort {
        ring,
        fd,
        block: 0,
        pkt: 0,
        off: 0,
        info: PortInfo {
            ifname: name.to_string(),
            queue,
            backend: Backend::AfPacket,
            zero_copy: false,
            multi_buffer: true,
        },
        tx: Vec::new(),
        mtu,
    })
}
