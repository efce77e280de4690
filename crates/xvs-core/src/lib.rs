//! xvs-core: all of xvs's packet and service logic, with no I/O.
//!
//! Frames come in as byte buffers and time as an argument; verdicts go out as
//! values. The AF_XDP layer and the daemon are thin loops around this crate, so
//! everything here is testable and benchmarkable in memory.

//!
//! The API is a set of namespaces, each a module whose files are private
//! and whose `mod.rs` re-exports what other crates may use:
//! - [`engine`]: the [`engine::Engine`] all workers share, a data-path
//!   [`engine::Worker`] (frame in, [`engine::Verdict`] out), the rule
//!   snapshot, counters, housekeeping and connection sync;
//! - [`conn`]: the connection table and the TCP state machine;
//! - [`service`]: virtual services and real servers as `ipvsadm` knows them;
//! - [`sched`]: the kernel's schedulers, one module each;
//! - [`wire`]: parsing and checksums of frames, GSO segmentation;
//! - [`addr`], [`fib`], [`frame`], [`time`]: the vocabulary the others share.
//!
//! The byte rewrites of the forwarding methods are private to the engine.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod addr;
pub mod conn;
pub mod engine;
pub mod fib;
pub mod frame;
mod rewrite;
pub mod sched;
pub mod service;
pub mod time;
pub mod wire;
