//! Reading frames: the single-pass parse the engine runs on every frame, and
//! Internet checksum helpers.

pub mod checksum;
pub mod parse;

pub use parse::{parse, Frag, IcmpInfo, PacketInfo, ParseError};
