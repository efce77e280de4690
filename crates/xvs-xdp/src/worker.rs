//! The worker-level API the daemon's loop uses: one worker thread owns one
//! UMEM (or AF_PACKET rings) and the sockets of "its" queue on every
//! interface, and moves frames in batches with no lock, no allocation and no
//! per-packet system call. A [`Worker`] is one of the two backends (afxdp.rs,
//! afpacket.rs); what they share is in backend.rs.

use crate::afpacket::PacketWorker;
use crate::afxdp::XdpWorker;
use crate::backend::{BatchHandler, Disposition, PortId, PortInfo, WorkerConfig, WorkerStats};
use crate::error::{Error, Result};
use crate::iface::Interface;
use std::io;
use std::time::{Duration, Instant};
use xvs_core::frame::Frame;

/// A worker: AF_XDP (native or generic XDP) or AF_PACKET, same loop.
pub enum Worker {
    Xdp(XdpWorker),
    Packet(PacketWorker),
}

impl Worker {
    /// Opens the sockets of queue `queue` on every interface of `ifaces` (port
    /// i = ifaces[i]). All interfaces must use XDP backends, or all AF_PACKET.
    pub fn new(ifaces: &[&Interface], queue: u32, cfg: &WorkerConfig) -> Result<Worker> {
        let ports: Vec<(&Interface, u32)> = ifaces.iter().map(|&i| (i, queue)).collect();
        Self::with_ports(&ports, cfg)
    }

    /// Opens one socket per (interface, RX queue) of `ports` (port i =
    /// ports[i]); a worker may serve several queues of one interface. All
    /// interfaces must use XDP backends, or all AF_PACKET. AF_PACKET sockets
    /// see every queue of their interface (a fanout group shares the frames
    /// among workers), so an interface listed with several queues gets one.
    pub fn with_ports(ports: &[(&Interface, u32)], cfg: &WorkerConfig) -> Result<Worker> {
        if ports.is_empty() {
            return Err(Error::NoPorts);
        }
        if ports.len() > usize::from(PortId::MAX) + 1 {
            return Err(Error::TooManyPorts);
        }
        let xdp = ports[0].0.backend().is_xdp();
        if ports.iter().any(|(i, _)| i.backend().is_xdp() != xdp) {
            return Err(Error::MixedBackends);
        }
        if xdp {
            XdpWorker::new(ports, cfg).map(Worker::Xdp)
        } else {
            let mut ifaces: Vec<&Interface> = Vec::new();
            for (i, _) in ports {
                if !ifaces.iter().any(|x| x.name() == i.name()) {
                    ifaces.push(i);
                }
            }
            PacketWorker::new(&ifaces, ports[0].1, cfg).map(Worker::Packet)
        }
    }

    fn publish(&self) {
        match self {
            Worker::Xdp(w) => w.published().store(w.stats()),
            Worker::Packet(w) => w.published().store(w.stats()),
        }
    }

    /// Waits until a port has frames to receive, at most `timeout` (spins
    /// instead of sleeping when `busy_poll` is set). Returns whether RX is ready.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<bool> {
        let r = match self {
            Worker::Xdp(w) => w.poll(timeout),
            Worker::Packet(w) => w.poll(timeout),
        };
        if !matches!(r, Ok(true)) {
            self.publish();
        }
        r
    }

    /// Receives up to one batch on every port; for each frame calls
    /// `f(port, &mut frame)` and transmits or drops it as told (a frame grown
    /// at the front or resized is sent with its new head and length). Handles
    /// completions, refills the fill rings and kicks TX/fill only when the
    /// rings need it. Returns the number of frames processed.
    #[inline]
    pub fn process_batch(&mut self, f: impl FnMut(PortId, &mut Frame) -> Disposition) -> usize {
        self.process_batch_with(&mut FnHandler(f))
    }

    /// As [`Worker::process_batch`], but `h` first sees each port's burst as
    /// a whole ([`BatchHandler::prepare`]), so it can parse and prefetch
    /// ahead before handling the frames one by one.
    #[inline]
    pub fn process_batch_with<H: BatchHandler>(&mut self, h: &mut H) -> usize {
        let n = match self {
            Worker::Xdp(w) => w.process_batch(h),
            Worker::Packet(w) => w.process_batch(h),
        };
        self.publish();
        n
    }

    pub fn stats(&self) -> &WorkerStats {
        match self {
            Worker::Xdp(w) => w.stats(),
            Worker::Packet(w) => w.stats(),
        }
    }

    /// The ports, in index order.
    pub fn ports(&self) -> Vec<PortInfo> {
        match self {
            Worker::Xdp(w) => w.ports(),
            Worker::Packet(w) => w.ports(),
        }
    }

    /// Transmits what is queued and waits (up to `timeout`) until the kernel
    /// completed it; for orderly shutdown and tests.
    pub fn flush(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let pending = match self {
                Worker::Xdp(w) => w.flush_step(),
                Worker::Packet(_) => false,
            };
            if !pending {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A per-frame closure as a [`BatchHandler`] that prepares nothing.
struct FnHandler<F>(F);

impl<F: FnMut(PortId, &mut Frame) -> Disposition> BatchHandler for FnHandler<F> {
    #[inline]
    fn prepare(&mut self, _: PortId, _: &mut dyn Iterator<Item = &[u8]>) {}
    #[inline]
    fn handle(&mut self, port: PortId, _: Option<usize>, frame: &mut Frame) -> Disposition {
        (self.0)(port, frame)
    }
}
