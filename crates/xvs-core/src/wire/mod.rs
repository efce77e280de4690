//! Reading frames: the single-pass parse the engine runs on every frame,
//! Internet checksum helpers, and cutting TCP super-frames (GSO).

pub mod checksum;
pub mod gso;
pub mod parse;

pub use parse::{parse, Frag, IcmpInfo, PacketInfo, ParseError};
