//! The wire formats: the single-pass parse the engine runs on every frame,
//! header views for writing (IPv4, IPv6, ICMP), the IP protocol number,
//! Internet checksum helpers, and cutting TCP super-frames (GSO).

pub mod checksum;
pub mod gso;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod parse;

pub use icmp::IcmpPacket;
pub use ip::IpProtocol;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use parse::{parse, Frag, IcmpInfo, PacketInfo, ParseError};
