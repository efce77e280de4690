//! What every backend provides and the vocabulary they share, as mio's
//! `sys/mod.rs` lists it: the AF_XDP backend (afxdp.rs) and the AF_PACKET one
//! (afpacket.rs) each build on this module and on no other backend, and
//! worker.rs dispatches between them.
//!
//! Each backend's worker has, with the same meaning:
//! - `new(.., &WorkerConfig) -> Result<Self>`: opens its sockets;
//! - `poll(timeout) -> io::Result<bool>`: waits for RX;
//! - `process_batch(&mut impl BatchHandler) -> usize`: one burst per port,
//!   each frame transmitted or dropped as its [`Disposition`] says;
//! - `stats() -> &WorkerStats`, `published() -> &Published`, `ports() -> Vec<PortInfo>`;
//! - AF_XDP only, `flush_step() -> bool`: pushes queued TX, says whether some
//!   is still in flight (AF_PACKET's TX is done when `process_batch` returns).

use crate::iface::Backend;
use xvs_core::frame::Frame;
use xvs_core::wire::gso::GsoError;

mod published;

pub(crate) use published::Published;
pub use published::{published_stats, PublishedStats};
pub use xvs_core::frame::PortId;

/// What to do with a frame after the callback looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transmit (the frame's current head/len) on this port of the worker.
    Tx(PortId),
    /// Give the buffer back.
    Drop,
}

/// Zero-copy policy for native XDP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode.
    #[default]
    Auto,
    /// Copy mode only.
    Off,
    /// Zero-copy or fail.
    Required,
}

/// Worker parameters.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Size of each ring (fill, completion, rx, tx); a power of two.
    pub ring_size: u32,
    /// UMEM chunks; 0 = 2 × ring_size per port.
    pub frames: u32,
    /// UMEM chunk size (2048 or 4096).
    pub chunk_size: u32,
    /// Headroom the kernel leaves in front of each received frame, on top of
    /// its own 256 bytes (XDP_PACKET_HEADROOM); the frame can grow into it.
    pub headroom: u32,
    /// Frames taken from each port per `process_batch`.
    pub batch: u32,
    /// Spin in `poll` instead of sleeping (only on a core of its own).
    pub busy_poll: bool,
    pub zero_copy: ZeroCopy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            ring_size: 2048,
            frames: 0,
            chunk_size: 4096,
            headroom: 0,
            batch: 64,
            busy_poll: false,
            zero_copy: ZeroCopy::Auto,
        }
    }
}

/// Counters of one worker (plain integers: the worker thread owns them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmission.
    pub tx: u64,
    /// Frames the callback dropped.
    pub dropped: u64,
    /// Frames dropped because the TX ring of the output port was full.
    pub tx_ring_full: u64,
    /// Times a fill ring could not be topped up (no free frame).
    pub fill_ring_empty: u64,
    /// TX wakeups (sendto).
    pub tx_kicks: u64,
    /// Fill-ring wakeups (recvfrom).
    pub fill_kicks: u64,
    /// Frames with a bad port in `Disposition::Tx`.
    pub bad_port: u64,
    /// poll() calls that slept.
    pub polls: u64,
    /// Super-frames (IP packets above the ingress MTU: TSO/GSO from a local
    /// sender over veth, GRO) cut into segments; see [`xvs_core::wire::gso`].
    pub superframes: u64,
    /// Segments made from them, each then handled as a frame (and counted in
    /// `tx` or `dropped`).
    pub segments: u64,
    /// Super-frames dropped: not TCP (a UDP super-frame cannot be cut without
    /// the sender's gso_size, which the frame does not carry).
    pub superframe_not_tcp: u64,
    /// Super-frames dropped: headers or lengths that do not add up, a
    /// fragment, or an MTU too small for the headers.
    pub superframe_malformed: u64,
    /// Super-frames dropped: larger than the gather buffer (64 KiB of IP
    /// packet), or cut short by the kernel.
    pub superframe_too_long: u64,
    /// Super-frames dropped: not enough free buffers for their segments.
    pub superframe_no_buffers: u64,
}

impl WorkerStats {
    /// Every counter with a stable name, in declaration order (metrics).
    pub fn named(&self) -> [(&'static str, u64); 15] {
        [
            ("rx", self.rx),
            ("tx", self.tx),
            ("dropped", self.dropped),
            ("tx_ring_full", self.tx_ring_full),
            ("fill_ring_empty", self.fill_ring_empty),
            ("tx_kicks", self.tx_kicks),
            ("fill_kicks", self.fill_kicks),
            ("bad_port", self.bad_port),
            ("polls", self.polls),
            ("superframes", self.superframes),
            ("segments", self.segments),
            ("superframe_not_tcp", self.superframe_not_tcp),
            ("superframe_malformed", self.superframe_malformed),
            ("superframe_too_long", self.superframe_too_long),
            ("superframe_no_buffers", self.superframe_no_buffers),
        ]
    }

    /// Counts a super-frame that could not be cut.
    pub(crate) fn refused(&mut self, e: GsoError) {
        match e {
            GsoError::NotTcp => self.superframe_not_tcp += 1,
            _ => self.superframe_malformed += 1,
        }
    }
}

/// A port of a worker: one interface and queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub ifname: String,
    pub queue: u32,
    pub backend: Backend,
    /// AF_XDP: bound in zero-copy mode.
    pub zero_copy: bool,
    /// AF_XDP: bound with XDP_USE_SG (frames above a chunk arrive as chains
    /// and are cut; without it the kernel drops them). AF_PACKET: always.
    pub multi_buffer: bool,
}

/// A consumer of bursts that looks at a whole burst before handling it.
pub trait BatchHandler {
    /// The frames of `port`'s burst, in order, read-only. Backends that
    /// cannot show a burst up front (AF_PACKET) pass an empty iterator.
    fn prepare(&mut self, port: PortId, frames: &mut dyn Iterator<Item = &[u8]>);
    /// A frame of `port`'s burst: what to do with it (it may be rewritten).
    /// `i` is its index in the burst shown to [`BatchHandler::prepare`], or
    /// `None` for a frame that was not in it (a super-frame's segment).
    fn handle(&mut self, port: PortId, i: Option<usize>, frame: &mut Frame) -> Disposition;
    /// Called before any frame handled since the last call is sent: the
    /// handler finishes what it deferred (the engine indexes its new
    /// connections' reply keys here, so no reply can come first).
    fn finish(&mut self) {}
}
