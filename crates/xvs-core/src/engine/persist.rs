//! Choosing the real server for a new connection: the scheduler, or a
//! persistence template (the kernel's `ip_vs_schedule` / `ip_vs_sched_persist`).
//!
//! A template is an entry of the connection table keyed by
//! `<proto, client & netmask, 0, vaddr, vport>` (fwmark services:
//! `<IP, client & netmask, 0, fwmark, 0>`; port-0 and FTP services: vport 0).
//! A valid template pins the client to its dest without asking the scheduler,
//! even when that dest is overloaded; each new connection restarts its timer
//! with the template's own timeout: the service's `-p` when the template was
//! made (an `-E` does not reach it), 60 s once it has been re-armed.

use super::snapshot::Snapshot;
use crate::addr::Addr;
use crate::conn::{
    ConnKey, ConnTable, EntryFlags, EntryState, NewConn, TemplateRef, TEMPLATE_PROTO,
};
use crate::sched::SchedInput;
use crate::service::Service;
use crate::service::{Dest, ServiceKey};
use crate::time::{secs_to_ticks, tick_after, Tick, Time};
use std::sync::Arc;

const FTP_PORT: u16 = 21;

/// Seconds a template that expires while it controls connections is re-armed
/// for, and its timeout from then on (`ip_vs_conn_expire`: `cp->timeout = 60*HZ`).
pub const TEMPLATE_REARM_SECS: u32 = 60;

/// The dest picked for a new connection.
#[derive(Debug)]
pub(super) struct Picked {
    pub dest: Arc<Dest>,
    /// Destination port of the connection.
    pub dport: u16,
    /// The controlling template, counted for the new connection: store it in
    /// the connection, or [`ConnTable::release`] it if none is made.
    pub control: TemplateRef,
}

/// Why no dest was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoPick {
    /// The scheduler found no available dest (answer with ICMP unreachable).
    NoDest,
    /// Non-persistent port-0 service: not scheduled (the kernel logs an error).
    PortZero,
    /// The template could not be stored.
    TableFull,
}

/// The client address masked by the service's persistence netmask.
pub(super) fn masked(addr: &Addr, netmask: u32) -> Addr {
    let mut o = addr.0;
    if addr.is_v4() {
        let m = netmask.to_be_bytes();
        for i in 0..4 {
            o[12 + i] &= m[i];
        }
    } else {
        let bits = netmask.min(128) as usize;
        for (i, b) in o.iter_mut().enumerate() {
            let keep = bits.saturating_sub(i * 8).min(8);
            *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
    }
    Addr(o)
}

/// The template key of a packet of a persistent service, and the template's dport rule:
/// `true` when the template stores the dest port (non-FTP, packet to the service port).
pub(super) fn template_key(
    svc: &Service,
    proto: u8,
    saddr: &Addr,
    daddr: &Addr,
    dport: u16,
) -> (ConnKey, bool) {
    let snet = masked(saddr, svc.spec.netmask);
    let svc_port = svc.spec.key.port();
    match svc.spec.key {
        ServiceKey::Fwmark { mark, .. } => (
            ConnKey {
                proto: TEMPLATE_PROTO,
                saddr: snet,
                sport: 0,
                daddr: Addr::v4(mark.to_be_bytes()),
                dport: 0,
            },
            false,
        ),
        ServiceKey::Addr { .. } => {
            let keep_port = dport == svc_port && svc_port != FTP_PORT;
            (
                ConnKey {
                    proto: TEMPLATE_PROTO | proto,
                    saddr: snet,
                    sport: 0,
                    daddr: *daddr,
                    dport: if keep_port { dport } else { 0 },
                },
                keep_port,
            )
        }
    }
}

/// Whether a template's dest may still be used (`ip_vs_check_template`).
fn template_valid(snap: &Snapshot, dest: Option<&Arc<Dest>>) -> bool {
    match dest {
        Some(d) => d.is_available() && !(snap.knobs.expire_quiescent_template && d.weight() == 0),
        None => false,
    }
}

/// Picks the dest of a new connection, creating or refreshing the template of a
/// persistent service.
#[allow(clippy::too_many_arguments)]
pub(super) fn pick(
    conns: &ConnTable,
    snap: &Snapshot,
    svc: &Service,
    proto: u8,
    saddr: &Addr,
    sport: u16,
    daddr: &Addr,
    dport: u16,
    now: Time,
    tick: Tick,
) -> Result<Picked, NoPick> {
    let input = SchedInput {
        saddr: *saddr,
        daddr: *daddr,
        sport,
        dport,
        now,
    };
    let svc_port = svc.spec.key.port();
    if !svc.spec.flags.persistent() {
        if !svc.spec.key.is_fwmark() && dport != svc_port {
            return Err(NoPick::PortZero);
        }
        let dest = svc.schedule(&input).ok_or(NoPick::NoDest)?.clone();
        let dport = if dest.port != 0 { dest.port } else { dport };
        return Ok(Picked {
            dest,
            dport,
            control: TemplateRef::NONE,
        });
    }

    let (key, keep_port) = template_key(svc, proto, saddr, daddr, dport);
    let timeout = svc.spec.timeout;
    // One-packet datagrams count on their template's in_pkts (ip_vs_in_hook:
    // `atomic_inc(&cp->control->in_pkts)`), which drop_entry reads.
    let ops = svc.spec.flags.one_packet() && proto == crate::wire::parse::PROTO_UDP;
    let found = conns.lookup(&key, tick).and_then(|(t, _)| {
        let dest = snap.dest(t.dest_id);
        if template_valid(snap, dest) {
            // Counted now, the template cannot be removed under the new conn;
            // if it is being removed, make a new one.
            let dest = dest.cloned()?;
            let held = conns.hold(&t)?;
            // The new conn restarts the template's timer (`ip_vs_conn_put`)
            // with the template's timeout. One found past its expiry still
            // controls connections (else the lookup skips it): the kernel
            // re-armed it then, so its timeout is 60 s.
            conns.modify(t.idx, t.sw, |sw| {
                let mut fl = sw.flags();
                if tick_after(tick, sw.expires()) {
                    fl |= EntryFlags::REARMED;
                }
                let secs = if fl.contains(EntryFlags::REARMED) {
                    TEMPLATE_REARM_SECS
                } else {
                    t.timeout
                };
                let new = sw
                    .with_flags(fl)
                    .with_expires(tick.wrapping_add(secs_to_ticks(secs)));
                Some(new.count_in(ops))
            });
            return Some((held, dest));
        }
        // Invalidate (`ip_vs_check_template`): never followed again, and left
        // to its timer ("don't restart its timer").
        conns.modify(t.idx, t.sw, |sw| {
            Some(sw.with_flags(sw.flags() | EntryFlags::DEAD_TEMPLATE))
        });
        None
    });
    let (tpl, dest) = match found {
        Some(x) => x,
        None => {
            let dest = svc.schedule(&input).ok_or(NoPick::NoDest)?.clone();
            let t = NewConn {
                proto: key.proto,
                caddr: key.saddr,
                cport: 0,
                vaddr: key.daddr,
                vport: key.dport,
                daddr: Addr::from(dest.addr),
                dport: if keep_port { dest.port } else { 0 },
                lip: 0,
                lport: 0,
                fwd: dest.fwd(),
                svc_id: svc.id,
                dest_id: dest.id,
                control: TemplateRef::NONE,
                state: EntryState::TEMPLATE,
                in_pkts: ops as u8,
                flags: EntryFlags::TEMPLATE,
                expires: tick.wrapping_add(secs_to_ticks(timeout)),
                timeout,
            };
            let idx = conns.insert(&t).map_err(|_| NoPick::TableFull)?;
            dest.bind_conn(true);
            // Fresh and not expired, so nothing removes it first; if something
            // did, the conn simply goes uncontrolled.
            let held = conns.read(idx).and_then(|v| conns.hold(&v));
            (held.unwrap_or(TemplateRef::NONE), dest)
        }
    };
    let dport = if dport == svc_port && dest.port != 0 {
        dest.port
    } else {
        dport
    };
    Ok(Picked {
        dest,
        dport,
        control: tpl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_masks_v4_and_v6() {
        let a = Addr::from("10.77.3.99".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(masked(&a, 0xffff_ff00).to_string(), "10.77.3.0");
        assert_eq!(masked(&a, 0xffff_ffff), a);
        let b = Addr::from("fd77::12:3456".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(masked(&b, 112).to_string(), "fd77::12:0");
        assert_eq!(masked(&b, 100).to_string(), "fd77::");
        assert_eq!(masked(&b, 128), b);
    }
}
