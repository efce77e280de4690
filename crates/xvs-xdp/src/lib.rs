//! The I/O layer of xvs: AF_XDP sockets, the XDP steering program with its
//! loader and maps, the AF_PACKET fallback, and the in-kernel traffic generator.
//!
//! All `unsafe` code of the project lives in this crate; every block says why
//! it is sound in a `// SAFETY:` comment.

pub mod error;
pub mod ring;
pub mod sys;
pub mod xsk;

pub use error::{Error, Result};
pub mod bpf;
pub mod iface;
pub mod steer;

pub use iface::{Backend, BackendChoice, Interface, SteerStats};
pub use steer::{SteerKey, Steering, DEFAULT_KEYS};
pub mod afpacket;
pub mod afxdp;
pub mod backend;
pub mod worker;

pub use backend::{
    published_stats, BatchHandler, Disposition, PortId, PortInfo, PublishedStats, WorkerConfig,
    WorkerStats, ZeroCopy,
};
pub use worker::Worker;
