//! The control protocol of xvs: what `xvsadm` (and anything else) sends to
//! `xvsd` over its Unix socket, and the ipvsadm command grammar both share.
//!
//! Frames are a 4-byte big-endian length followed by that many bytes of JSON.
//! Requests are bounded to [`MAX_REQUEST`] bytes and replies to [`MAX_REPLY`];
//! anything larger, or malformed, gets an error reply and the connection is
//! closed. [`PROTOCOL_VERSION`] is exchanged in [`Request::Hello`]. Every
//! request has one reply, except [`Request::ListConns`], whose reply is a
//! stream of bounded chunks (a table may hold millions of connections).
//! Whatever the client, xvsd applies the command line's checks to every op
//! ([`check`]).

#![forbid(unsafe_code)]

pub mod check;
pub mod client;
pub mod cmdline;
pub mod health;
pub mod knobs;
pub mod mark;
pub mod proto;

pub use client::{default_socket_path, Client, ClientError};
pub use proto::*;
