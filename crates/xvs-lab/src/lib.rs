//! xvs-lab: veth + network-namespace labs for xvs (SPEC.md §9).
//!
//! [`Lab::up`] builds the NAT, DR, TUN or FULLNAT topology of a [`Plan`] in
//! namespaces `<prefix>-client`, `-dir`, `-sw`, `-rt` (TUN), `-rs1..N`, starts
//! an HTTP server ([`serve`]) on each real server and, optionally, xvsd with
//! the mode's rules. Dropping the [`Lab`] removes all of it; the CLI keeps it
//! and `xvs-lab down` (or [`teardown`]) removes it later.
//!
//! [`ecmp::EcmpLab`] is the scale-out lab: N directors behind a BGP router
//! with multipath routes (BIRD 2, BFD), [`announce`] the health loop that
//! keeps a director's VIP announced while its xvsd answers.

#![forbid(unsafe_code)]

pub mod announce;
pub mod ecmp;
pub mod error;
pub mod lab;
pub mod pattern;
pub mod plan;
pub mod procs;
pub mod serve;
pub mod topo;

pub use ecmp::{EcmpLab, EcmpOptions};
pub use error::{LabError, Result};
pub use lab::{run_dir, teardown, Lab};
pub use plan::{host_port, url, LabOptions, Mode, Plan, RealServer, MAX_RS, PORT, TUN_PATH_MTU};
pub use topo::Decap;
