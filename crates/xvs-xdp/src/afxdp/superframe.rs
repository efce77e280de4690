//! Super-frames on the AF_XDP path: frames above the ingress MTU that the
//! kernel hands over under generic XDP (TSO/GSO from a local sender over veth,
//! GRO), in one chunk or, above a chunk, as a chain of descriptors
//! (XDP_USE_SG, XDP_PKT_CONTD on all but the last).
//!
//! A super-frame is copied into the worker's scratch buffer (a chain is
//! gathered there), its chunks go back to the free list at once, and it is
//! cut with [`xvs_core::wire::gso`] into fresh chunks, each handed to the
//! handler as an ordinary frame (with no burst index: the engine parses it
//! itself) and transmitted as usual. What cannot be cut (not TCP, malformed,
//! too long, no free chunks) is dropped and counted in the worker stats,
//! never silently.

use super::XdpWorker;
use crate::backend::{BatchHandler, PortId};
use crate::xsk::XDP_PACKET_HEADROOM;
use std::time::Instant;
use xvs_core::frame::Frame;
use xvs_core::wire::gso::{self, Plan};

/// Bytes of the gather buffer: the largest IP packet (64 KiB) with its
/// Ethernet header and a VLAN tag, rounded up.
pub(super) const SCRATCH: usize = 64 * 1024 + 4096;

/// Copy mode transmits at most 32 frames per sendto (the kernel's
/// TX_BATCH_SIZE): a super-frame's segments are kicked out in runs of this.
pub(super) const KICK_EVERY: u32 = 32;

/// Ethernet header and one VLAN tag in front of the IP packet.
const L2_MAX: u32 = 18;

/// Frame length above which a frame may carry an IP packet larger than `mtu`.
pub(super) fn cut_above(mtu: u32) -> u32 {
    mtu.saturating_add(14)
}

impl XdpWorker {
    /// Bytes a fresh chunk holds for a frame (after the kernel's and the
    /// configured headroom).
    fn room(&self) -> usize {
        (self.umem.chunk_size() - XDP_PACKET_HEADROOM - self.umem.headroom()) as usize
    }

    /// The largest IP packet a segment for port `p` may carry: the MTU, or
    /// less if a chunk cannot hold that much (jumbo MTUs).
    fn max_ip(&self, p: usize) -> usize {
        (self.ports[p].mtu as usize).min(self.room().saturating_sub(L2_MAX as usize))
    }

    pub(super) fn reread_mtus(&mut self) {
        self.mtu_read = Instant::now();
        for port in &mut self.ports {
            if let Ok(m) = self.mtus.mtu(&port.info.ifname) {
                if m != port.mtu {
                    tracing::info!(interface = %port.info.ifname, old = port.mtu, new = m, "MTU changed: super-frames are cut to the new size");
                    port.mtu = m;
                    port.cut_above = cut_above(m);
                }
            }
        }
    }

    /// The length of the burst of `n` descriptors at `idx` of port `p`'s RX
    /// ring, adjusted so that it ends on a frame boundary: extended over the
    /// rest of a chain the kernel has published, or cut before a chain it has
    /// not finished (left for the next call). The kernel publishes a frame's
    /// descriptors together, so the second case is a safeguard; a ring full
    /// of one unfinished chain is taken whole (and dropped as cut short).
    pub(super) fn whole_chains(&mut self, p: usize, idx: u32, n: u32) -> u32 {
        let rx = &mut self.ports[p].sock.rx;
        let contd = |rx: &crate::ring::Ring<libc::xdp_desc>, i: u32| {
            rx.read(idx.wrapping_add(i)).options & libc::XDP_PKT_CONTD != 0
        };
        if n == 0 || !contd(rx, n - 1) {
            return n;
        }
        let size = rx.size();
        let (_, avail) = rx.peek(size);
        let mut end = n;
        while end < avail {
            end += 1;
            if !contd(rx, end - 1) {
                return end;
            }
        }
        let mut k = n;
        while k > 0 && contd(rx, k - 1) {
            k -= 1;
        }
        if k == 0 && avail == size {
            avail
        } else {
            k
        }
    }

    /// Handles the chain starting at descriptor `start` of the burst at `idx`
    /// (of `n` descriptors) of port `p`; returns the index after it.
    pub(super) fn chain<H: BatchHandler>(
        &mut self,
        h: &mut H,
        p: usize,
        idx: u32,
        start: u32,
        n: u32,
    ) -> u32 {
        let mask = !(self.umem.chunk_size() as u64 - 1);
        let mut len = 0usize;
        let mut fits = true;
        let mut whole = false;
        let mut i = start;
        while i < n {
            let d = self.ports[p].sock.rx.read(idx.wrapping_add(i));
            i += 1;
            let end = len + d.len as usize;
            if fits && end <= self.scratch.len() {
                // SAFETY: the kernel handed this chunk to us through the RX
                // ring; nothing else refers to it until it is freed below.
                let src = unsafe { self.umem.frame(d.addr, d.len) };
                if src.len() == d.len as usize {
                    self.scratch[len..end].copy_from_slice(src);
                    len = end;
                } else {
                    fits = false;
                }
            } else {
                fits = false;
            }
            self.free.push(d.addr & mask);
            if d.options & libc::XDP_PKT_CONTD == 0 {
                whole = true;
                break;
            }
        }
        if !whole || !fits {
            self.stats.superframe_too_long += 1;
            return i;
        }
        match gso::plan(&self.scratch[..len], self.max_ip(p)) {
            Ok(Some(plan)) => self.send_segments(h, p, len, &plan),
            // Small enough by its header, yet spread over several buffers:
            // handled as one frame if a chunk holds it.
            Ok(None) if len <= self.room() => self.send_whole(h, p, len),
            Ok(None) => self.stats.superframe_malformed += 1,
            Err(e) => self.stats.refused(e),
        }
        i
    }

    /// A frame above the MTU in a single chunk (GRO/GSO below the chunk size).
    /// Returns false when it is no super-frame (the caller handles it as any
    /// frame); otherwise the chunk is consumed.
    pub(super) fn cut_single<H: BatchHandler>(
        &mut self,
        h: &mut H,
        p: usize,
        addr: u64,
        len: u32,
    ) -> bool {
        let mask = !(self.umem.chunk_size() as u64 - 1);
        let max_ip = self.max_ip(p);
        // SAFETY: the kernel handed this chunk to us through the RX ring;
        // nothing else refers to it while `src` lives.
        let src = unsafe { self.umem.frame(addr, len) };
        let plan = match gso::plan(src, max_ip) {
            Ok(None) => return false,
            Ok(Some(plan)) => {
                self.scratch[..src.len()].copy_from_slice(src);
                Ok(plan)
            }
            Err(e) => Err(e),
        };
        let n = src.len();
        self.free.push(addr & mask);
        match plan {
            Ok(plan) => self.send_segments(h, p, n, &plan),
            Err(e) => self.stats.refused(e),
        }
        true
    }

    /// Whether the free list holds `n` chunks, once what is queued has been
    /// sent and its completions taken back if it did not.
    fn have_free(&mut self, n: usize) -> bool {
        if self.free.len() < n {
            for q in 0..self.ports.len() {
                self.push_tx(q);
            }
        }
        self.free.len() >= n
    }

    /// Cuts the super-frame in `scratch[..len]` (of port `p`) as `plan` says,
    /// each segment into a fresh chunk, through the handler and out.
    fn send_segments<H: BatchHandler>(&mut self, h: &mut H, p: usize, len: usize, plan: &Plan) {
        // Segments may be sent before the burst ends (have_free, push_tx).
        h.finish();
        if !self.have_free(plan.segments()) {
            self.stats.superframe_no_buffers += 1;
            return;
        }
        self.stats.superframes += 1;
        let head = (XDP_PACKET_HEADROOM + self.umem.headroom()) as usize;
        // Out of `self` for the loop (a pointer swap, no allocation): the
        // segments are read from it while the rest of the worker is mutated.
        let scratch = std::mem::take(&mut self.scratch);
        let src = &scratch[..len];
        for k in 0..plan.segments() {
            let Some(base) = self.free.pop() else {
                self.stats.superframe_no_buffers += 1;
                break;
            };
            // SAFETY: `base` came from the free list: a chunk in no ring and
            // referred to by nothing else; `src` is the scratch buffer.
            let chunk = unsafe { self.umem.chunk_mut(base) };
            let Ok(n) = gso::segment(src, plan, k, &mut chunk[head..]) else {
                self.free.push(base);
                self.stats.superframe_malformed += 1;
                break;
            };
            self.stats.segments += 1;
            let mut frame = Frame::new(chunk, head, n);
            let disp = h.handle(p as PortId, None, &mut frame);
            let (fh, fl) = (frame.head(), frame.len());
            self.dispose(disp, base, fh, fl, true);
        }
        self.scratch = scratch;
    }

    /// The frame in `scratch[..len]` as it is, in a fresh chunk.
    fn send_whole<H: BatchHandler>(&mut self, h: &mut H, p: usize, len: usize) {
        h.finish();
        if !self.have_free(1) {
            self.stats.superframe_no_buffers += 1;
            return;
        }
        let Some(base) = self.free.pop() else { return };
        let head = (XDP_PACKET_HEADROOM + self.umem.headroom()) as usize;
        // SAFETY: as in send_segments.
        let chunk = unsafe { self.umem.chunk_mut(base) };
        chunk[head..head + len].copy_from_slice(&self.scratch[..len]);
        let mut frame = Frame::new(chunk, head, len);
        let disp = h.handle(p as PortId, None, &mut frame);
        let (fh, fl) = (frame.head(), frame.len());
        self.dispose(disp, base, fh, fl, true);
    }

    /// Submits what is queued on port `out`, kicks it, and takes back what
    /// the kernel completed.
    pub(super) fn push_tx(&mut self, out: usize) {
        let port = &mut self.ports[out];
        if port.queued > 0 {
            port.sock.tx.submit();
            port.in_flight += port.queued;
            port.queued = 0;
        }
        if port.in_flight > 0 && (self.copy_mode || port.sock.tx.needs_wakeup()) {
            port.sock.kick_tx();
            self.stats.tx_kicks += 1;
        }
        self.reap(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_holds_the_largest_ip_packet_with_its_link_header() {
        assert!(SCRATCH >= 65535 + L2_MAX as usize);
        assert_eq!(cut_above(1500), 1514);
        assert_eq!(cut_above(u32::MAX), u32::MAX);
    }
}
