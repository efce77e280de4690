//! The forwarding methods, one function per method and direction, as the
//! kernel's `ip_vs_xmit.c` has them (`ip_vs_nat_xmit`, `ip_vs_dr_xmit`,
//! `ip_vs_tunnel_xmit`, `ip_vs_icmp_xmit`; the replies as `handle_response`).
//!
//! The worker looks the connection and its next hop up, counts, and turns the
//! result into a verdict; the functions here rewrite the frame for the
//! connection's [`Route`] and say why they could not ([`XmitError`]). The byte
//! work is in [`crate::rewrite`].

use super::stats::DropReason;
use crate::addr::Addr;
use crate::conn::{ConnTable, ConnView, NewConn};
use crate::fib::NextHop;
use crate::frame::Frame;
use crate::rewrite::icmp::{self, IcmpRewrite};
use crate::rewrite::tunnel::{encap, EncapError};
use crate::rewrite::{complete_partial, decrement_ttl, dnat, fullnat, set_macs, snat};
use crate::service::FwdMethod;
use crate::wire::parse::PacketInfo;

/// Where a connection's packets go: the fields of a connection the rewrites
/// need, copied out of the table once per packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub fwd: FwdMethod,
    pub caddr: Addr,
    pub cport: u16,
    pub vaddr: Addr,
    pub vport: u16,
    pub daddr: Addr,
    pub dport: u16,
    /// FULLNAT: our local address and port toward the real server.
    pub laddr: Addr,
    pub lport: u16,
    pub svc_id: u32,
    pub dest_id: u32,
}

impl Route {
    /// The route of connection `v` (its FULLNAT local address read from `conns`).
    #[inline]
    pub(super) fn of(v: &ConnView, conns: &ConnTable) -> Route {
        Route {
            fwd: v.fwd,
            caddr: v.caddr,
            cport: v.cport,
            vaddr: v.vaddr,
            vport: v.vport,
            daddr: v.daddr,
            dport: v.dport,
            laddr: if v.fwd == FwdMethod::FullNat {
                conns.lip(v.lip)
            } else {
                Addr::UNSPECIFIED
            },
            lport: v.lport,
            svc_id: v.svc_id,
            dest_id: v.dest_id,
        }
    }

    /// The route of a connection being made (`laddr`: the address of its
    /// FULLNAT local address id).
    #[inline]
    pub(super) fn of_new(c: &NewConn, laddr: Addr) -> Route {
        Route {
            fwd: c.fwd,
            caddr: c.caddr,
            cport: c.cport,
            vaddr: c.vaddr,
            vport: c.vport,
            daddr: c.daddr,
            dport: c.dport,
            laddr,
            lport: c.lport,
            svc_id: c.svc_id,
            dest_id: c.dest_id,
        }
    }
}

/// Why a frame could not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XmitError {
    /// Too big for the tunnel's MTU with DF set: the sender should be told
    /// this MTU.
    TooBig { mtu: u16 },
    /// Too big for the tunnel, IPv4 without DF (the kernel would fragment).
    TooBigNoDf,
    /// No headroom in the buffer for the tunnel header.
    NoHeadroom,
    /// A reply's TTL ran out in our forwarding.
    TtlExceeded,
}

impl XmitError {
    /// The drop counter of the error.
    pub(super) fn reason(self) -> DropReason {
        match self {
            XmitError::TooBig { .. } | XmitError::TooBigNoDf => DropReason::TooBig,
            XmitError::NoHeadroom => DropReason::NoHeadroom,
            XmitError::TtlExceeded => DropReason::TtlExceeded,
        }
    }
}

impl From<EncapError> for XmitError {
    fn from(e: EncapError) -> XmitError {
        match e {
            EncapError::TooBig { mtu } => XmitError::TooBig { mtu },
            EncapError::TooBigNoDf => XmitError::TooBigNoDf,
            EncapError::NoHeadroom => XmitError::NoHeadroom,
        }
    }
}

/// Client → real server, by the connection's forwarding method; then the
/// next hop's MAC addresses.
#[inline]
pub(crate) fn to_server(
    frame: &mut Frame,
    info: &PacketInfo,
    r: &Route,
    nh: &NextHop,
    ip_id: &mut u16,
) -> Result<(), XmitError> {
    // Before any rewrite: the detection sums the addresses the sender used.
    complete_partial(frame.data_mut(), info);
    match r.fwd {
        FwdMethod::Route => dr_to_server(),
        FwdMethod::Masq => nat_to_server(frame, info, r),
        FwdMethod::FullNat => fullnat_to_server(frame, info, r),
        FwdMethod::Tunnel => tunnel_to_server(frame, info, r, nh, ip_id)?,
    }
    output(frame, nh);
    Ok(())
}

/// Real server → client: the replies of NAT and FULLNAT connections (the
/// only ones indexed in the reply direction); then the next hop's MACs.
#[inline]
pub(crate) fn to_client(
    frame: &mut Frame,
    info: &PacketInfo,
    r: &Route,
    nh: &NextHop,
) -> Result<(), XmitError> {
    complete_partial(frame.data_mut(), info);
    match r.fwd {
        FwdMethod::FullNat => fullnat_to_client(frame, info, r),
        FwdMethod::Masq | FwdMethod::Route | FwdMethod::Tunnel => nat_to_client(frame, info, r)?,
    }
    output(frame, nh);
    Ok(())
}

/// DR (`ip_vs_dr_xmit`): the packet goes as it came; only the MACs change.
#[inline]
fn dr_to_server() {}

/// NAT (`ip_vs_nat_xmit`): VIP:vport becomes RIP:rport.
#[inline]
fn nat_to_server(frame: &mut Frame, info: &PacketInfo, r: &Route) {
    dnat(frame.data_mut(), info, &r.daddr, r.dport);
}

/// NAT reply (`handle_response`): RIP:rport becomes VIP:vport. The kernel
/// forwards the reply (ip_forward), so its TTL drops by one.
#[inline]
fn nat_to_client(frame: &mut Frame, info: &PacketInfo, r: &Route) -> Result<(), XmitError> {
    if !decrement_ttl(frame.data_mut(), info) {
        return Err(XmitError::TtlExceeded);
    }
    snat(frame.data_mut(), info, &r.vaddr, r.vport);
    Ok(())
}

/// FULLNAT: CIP:cport → VIP:vport becomes LIP:lport → RIP:rport.
#[inline]
fn fullnat_to_server(frame: &mut Frame, info: &PacketInfo, r: &Route) {
    fullnat(
        frame.data_mut(),
        info,
        (&r.laddr, r.lport),
        (&r.daddr, r.dport),
    );
}

/// FULLNAT reply: RIP:rport → LIP:lport becomes VIP:vport → CIP:cport.
#[inline]
fn fullnat_to_client(frame: &mut Frame, info: &PacketInfo, r: &Route) {
    fullnat(
        frame.data_mut(),
        info,
        (&r.vaddr, r.vport),
        (&r.caddr, r.cport),
    );
}

/// TUN (`ip_vs_tunnel_xmit`): the packet inside an outer header from our
/// address on the way out to the real server, with a fresh IP id.
#[inline]
fn tunnel_to_server(
    frame: &mut Frame,
    info: &PacketInfo,
    r: &Route,
    nh: &NextHop,
    ip_id: &mut u16,
) -> Result<(), EncapError> {
    *ip_id = ip_id.wrapping_add(1);
    encap(frame, info, &nh.src_addr, &r.daddr, nh.mtu, *ip_id)
}

/// An ICMP error about a packet we sent toward the client (it quotes
/// VIP:vport → CIP:cport) goes to the real server, quoting what the real
/// server sent (`ip_vs_in_icmp`, then `ip_vs_icmp_xmit`): rewritten for NAT
/// and FULLNAT, tunnelled for TUN, as it is for DR.
pub(crate) fn icmp_to_server(
    frame: &mut Frame,
    info: &PacketInfo,
    r: &Route,
    nh: &NextHop,
    ip_id: &mut u16,
) -> Result<(), XmitError> {
    let rw = match r.fwd {
        FwdMethod::Route => None,
        FwdMethod::Masq => Some(IcmpRewrite {
            outer_dst: Some(&r.daddr),
            inner_src: Some((&r.daddr, r.dport)),
            ..Default::default()
        }),
        FwdMethod::FullNat => Some(IcmpRewrite {
            outer_src: Some(&r.laddr),
            outer_dst: Some(&r.daddr),
            inner_src: Some((&r.daddr, r.dport)),
            inner_dst: Some((&r.laddr, r.lport)),
        }),
        FwdMethod::Tunnel => {
            tunnel_to_server(frame, info, r, nh, ip_id)?;
            None
        }
    };
    if let Some(rw) = rw {
        icmp::translate(frame.data_mut(), info, &rw);
    }
    output(frame, nh);
    Ok(())
}

/// An ICMP error from the real server's side about a packet we sent it goes
/// to the client, quoting what the client sent (`ip_vs_out_icmp`).
pub(crate) fn icmp_to_client(frame: &mut Frame, info: &PacketInfo, r: &Route, nh: &NextHop) {
    let rw = if r.fwd == FwdMethod::FullNat {
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
    icmp::translate(frame.data_mut(), info, &rw);
    output(frame, nh);
}

/// The last step of every method: the next hop's MAC addresses.
#[inline]
pub(crate) fn output(frame: &mut Frame, nh: &NextHop) {
    set_macs(frame.data_mut(), &nh.src_mac, &nh.dst_mac);
}
