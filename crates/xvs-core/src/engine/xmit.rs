//! The rewrites of each forwarding method, in the engine's terms (a
//! connection's [`Route`]); the byte work is in [`crate::rewrite`].

use super::worker::Route;
use crate::rewrite::icmp::IcmpRewrite;
use crate::wire::parse::PacketInfo;

pub use crate::rewrite::icmp::{port_unreachable, too_big};
pub use crate::rewrite::tunnel::{encap, EncapError};
pub use crate::rewrite::{complete_partial, decrement_ttl, dnat, fullnat, set_macs, snat};

/// An ICMP error about a packet we sent toward the client (it quotes
/// VIP:vport → CIP:cport) goes to the real server, quoting what the real server sent.
pub fn icmp_to_server(data: &mut [u8], info: &PacketInfo, r: &Route, fullnat: bool) {
    let rw = if fullnat {
        IcmpRewrite {
            outer_src: Some(&r.laddr),
            outer_dst: Some(&r.daddr),
            inner_src: Some((&r.daddr, r.dport)),
            inner_dst: Some((&r.laddr, r.lport)),
        }
    } else {
        IcmpRewrite {
            outer_dst: Some(&r.daddr),
            inner_src: Some((&r.daddr, r.dport)),
            ..Default::default()
        }
    };
    crate::rewrite::icmp::translate(data, info, &rw);
}

/// An ICMP error from the real server's side about a packet we sent it goes to
/// the client, quoting what the client sent.
pub fn icmp_to_client(data: &mut [u8], info: &PacketInfo, r: &Route, fullnat: bool) {
    let rw = if fullnat {
        IcmpRewrite {
            outer_src: Some(&r.vaddr),
            outer_dst: Some(&r.caddr),
            inner_src: Some((&r.caddr, r.cport)),
            inner_dst: Some((&r.vaddr, r.vport)),
        }
    } else {
        IcmpRewrite {
            outer_src: Some(&r.vaddr),
            inner_dst: Some((&r.vaddr, r.vport)),
            ..Default::default()
        }
    };
    crate::rewrite::icmp::translate(data, info, &rw);
}
