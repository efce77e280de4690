//! xvs-core: all of xvs's packet and service logic, with no I/O.
//!
//! Frames come in as byte buffers and time as an argument; verdicts go out as
//! values. The AF_XDP layer and the daemon are thin loops around this crate, so
//! everything here is testable and benchmarkable in memory.

#![forbid(unsafe_code)]

pub mod addr;
pub mod conn;
pub mod engine;
pub mod fib;
pub mod frame;
pub mod rewrite;
pub mod sched;
pub mod service;
pub mod time;
pub mod wire;
