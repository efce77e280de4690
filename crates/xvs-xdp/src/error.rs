//! Errors of the AF_XDP/BPF layer: what was being done, and the OS error.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// An error from setting up sockets, rings, maps or programs.
#[derive(Debug, Error)]
pub enum Error {
    /// A system call failed; `what` names the operation and its object.
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The BPF object file is not what the loader understands.
    #[error("BPF object: {0}")]
    Elf(String),
    /// The verifier refused a program; `log` is its explanation.
    #[error("BPF program {prog} refused by the verifier: {source}\n{log}")]
    Verifier {
        prog: String,
        log: String,
        #[source]
        source: io::Error,
    },
    /// An interface name the kernel cannot take (empty, too long, a NUL).
    #[error("bad interface name {0:?}")]
    BadIfName(String),
    /// A backend name that is none of the three.
    #[error("unknown backend {0:?} (xdp-native, xdp-generic, af-packet)")]
    UnknownBackend(String),
    /// An AF_XDP socket for an interface attached without XDP.
    #[error("{iface}: not an XDP backend")]
    NotXdp { iface: String },
    /// An AF_PACKET socket for an interface attached without its filter.
    #[error("AF_PACKET {iface}: interface is not attached with the AF_PACKET backend")]
    NotAfPacket { iface: String },
    /// A queue past the end of the interface's socket map.
    #[error("{iface}: queue {queue} beyond the socket map")]
    QueueBeyondMap { iface: String, queue: u32 },
    /// sysfs lists no RX queue for the interface.
    #[error("{dir}: no RX queue listed")]
    NoRxQueues { dir: String },
    /// SIOCGIFMTU answered a negative MTU.
    #[error("{iface}: MTU {mtu}")]
    BadMtu { iface: String, mtu: i32 },
    /// A sysfs CPU list that does not parse.
    #[error("{}: malformed CPU list {text:?}", path.display())]
    BadCpuList { path: PathBuf, text: String },
    /// A worker with no port.
    #[error("a worker needs at least one interface")]
    NoPorts,
    /// A worker over XDP and AF_PACKET interfaces at once.
    #[error("a worker's interfaces must all use XDP or all AF_PACKET (one UMEM)")]
    MixedBackends,
    /// More ports than a [`crate::PortId`] numbers.
    #[error("a worker has at most 65536 ports")]
    TooManyPorts,
    /// A UMEM chunk size AF_XDP does not take.
    #[error("UMEM chunk size {0}: must be 2048 or 4096")]
    ChunkSize(u32),
    /// Headroom that leaves a UMEM chunk too small for a frame.
    #[error("UMEM headroom {headroom} leaves no room for a 1500-byte frame in a {chunk_size}-byte chunk")]
    UmemHeadroom { headroom: u32, chunk_size: u32 },
    /// Headroom that leaves an AF_PACKET slot too small for a frame.
    #[error("headroom {0} leaves no room for a frame")]
    PacketHeadroom(u32),
    /// A ring size that is not a power of two.
    #[error("AF_XDP {iface} queue {queue}: {ring} {size} is not a power of two")]
    RingSize {
        iface: String,
        queue: u32,
        ring: &'static str,
        size: u32,
    },
    /// The kernel's ring offsets do not fit the mapping of the ring.
    #[error("ring layout {offsets:?} with {size} entries does not fit a {len}-byte mapping")]
    RingLayout {
        offsets: libc::xdp_ring_offset,
        size: u32,
        len: usize,
    },
    /// More destination prefixes in the mark rules than the programs hold.
    #[error("{count} destination prefixes in the mark rules; at most {max}")]
    MarkPrefixes { count: usize, max: u32 },
    /// More mark rules over one prefix than the programs walk.
    #[error("{count} mark rules apply to {prefix}/{len}; at most {max} may overlap")]
    MarkOverlap {
        count: usize,
        prefix: std::net::IpAddr,
        len: u8,
        max: usize,
    },
    /// A frame BPF_PROG_RUN does not take.
    #[error("test-run frame of {len} bytes: must be 14..={max}")]
    TestRunFrame { len: usize, max: usize },
    /// The live test-run thread ended before it started running.
    #[error("test-run thread died")]
    TestRunThreadDied,
    /// The live test-run thread panicked.
    #[error("test-run thread panicked")]
    TestRunThreadPanicked,
    /// A netlink reply shorter than its header.
    #[error("{what}: short netlink reply")]
    NetlinkShort { what: String },
    /// A netlink reply of another type than asked for.
    #[error("{what}: unexpected reply type {ty}")]
    NetlinkReplyType { what: String, ty: u16 },
    /// A list of alternatives (bind modes, backends) that was empty.
    #[error("no {0}")]
    NothingToTry(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The OS error number, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } | Error::Verifier { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Wraps the last OS error with a description of what failed.
pub(crate) fn last_os(what: impl Into<String>) -> Error {
    Error::Os {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

/// Adds a description to an `io::Error`.
pub(crate) fn os(what: impl Into<String>, source: io::Error) -> Error {
    Error::Os {
        what: what.into(),
        source,
    }
}
