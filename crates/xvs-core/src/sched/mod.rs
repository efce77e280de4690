//! IPVS schedulers with the Linux kernel's semantics: which real server a new
//! connection goes to.
//!
//! One scheduler object serves one service and is shared by every worker, as the
//! kernel shares one per service across CPUs. It is built for one dest list (kernel
//! order: newest dest first) and answers with an index into that list. A change of
//! the list (`-a`/`-e`/`-d`) builds a successor with [`Scheduler::rebuild`], carrying
//! state over as the kernel's `add_dest`/`del_dest`/`upd_dest` hooks do; workers still
//! holding the old service snapshot keep using the old object until they move on.
//!
//! Locking: lc, wlc, sed, nq, fo, ovf, dh, sh and mh read only immutable tables and the
//! dests' atomic counters. rr and wrr keep their cursor in one atomic word updated by
//! compare-and-swap (the kernel's spinlock section, without a lock). lblc and lblcr
//! keep their per-destination-address table behind a `Mutex` held for a few memory
//! operations; they are the only ones that allocate while scheduling (a new table
//! entry, bounded by [`lblc::HARD_CAP`]).

pub mod dh;
pub mod fo;
pub mod hash;
pub mod lblc;
pub mod lblcr;
pub mod lc;
pub mod mh;
pub mod nq;
pub mod ovf;
pub mod rr;
pub mod sed;
pub mod sh;
pub mod wlc;
pub mod wrr;

use crate::addr::Addr;
use crate::service::{Af, Dest, SchedKind, ServiceError, SvcFlags};
use crate::time::Time;
use std::sync::Arc;

/// What a scheduler may look at for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedInput {
    /// Client address (sh, mh hash it).
    pub saddr: Addr,
    /// Packet destination address (dh, lblc, lblcr key on it).
    pub daddr: Addr,
    /// Client port (sh-port, mh-port); 0 for protocols without ports.
    pub sport: u16,
    /// Packet destination port.
    pub dport: u16,
    /// The time of the packet.
    pub now: Time,
}

/// A scheduling algorithm bound to one service's dest list.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// Which scheduler this is.
    fn kind(&self) -> SchedKind;

    /// Picks a dest for a new connection: an index into `dests`, which is always the list this
    /// scheduler was built for (kernel list order: newest dest first). None = no dest available.
    fn schedule(&self, dests: &[Arc<Dest>], input: &SchedInput) -> Option<usize>;

    /// The scheduler for a changed dest list (after -a/-e/-d or -E), carrying over state exactly as the
    /// kernel's add_dest/del_dest/upd_dest hooks do (rr cursor moves to the predecessor of a deleted cursor dest,
    /// wrr resets cl/cw/mw/di, sh/dh/mh rebuild tables, lblc/lblcr keep their tables, ...).
    fn rebuild(
        &self,
        dests: &[Arc<Dest>],
        flags: SvcFlags,
    ) -> Result<Box<dyn Scheduler>, ServiceError>;

    /// The same scheduler, state shared, under new service flags: `-E` that keeps the
    /// scheduler calls no kernel hook, so nothing is reset.
    fn with_flags(&self, flags: SvcFlags) -> Box<dyn Scheduler>;

    /// The most dests this scheduler can serve (mh: its table size; the kernel
    /// refuses more with EINVAL).
    fn dest_limit(&self) -> usize {
        usize::MAX
    }

    /// Periodic maintenance off the fast path (lblc/lblcr table GC); default no-op.
    fn gc(&self, _now: Time) {}

    /// Whether the scheduler's state refers to `dest` (lblc/lblcr entries hold
    /// a reference, `ip_vs_dest_hold`, so the kernel keeps such a dest in the
    /// trash); default no.
    fn holds(&self, _dest: &Dest) -> bool {
        false
    }
}

/// The order in which sh, dh and mh fill their tables from the dest list.
///
/// The kernel fills them in list order (newest dest first), so two directors
/// with the same dests added in another order build different tables and send
/// the same client to different real servers. Behind ECMP a flow that moves to
/// another director must find the same real server there, so xvs fills the
/// tables in address order by default (docs/DEVIATIONS.md, docs/ECMP.md); for
/// a list in address order both give the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableOrder {
    /// By (family, address, port): the same table on every director that has
    /// the same dests and weights, whatever order they were added in.
    #[default]
    Address,
    /// The kernel's: list order, newest dest first.
    List,
}

impl TableOrder {
    /// Positions in `dests` in the order their table is filled.
    pub fn positions(self, dests: &[Arc<Dest>]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..dests.len()).collect();
        if self == TableOrder::Address {
            // IpAddr orders IPv4 before IPv6, then by octets; (addr, port) is
            // unique within a service.
            order.sort_by_key(|&i| (dests[i].addr, dests[i].port));
        }
        order
    }
}

/// Settings the kernel takes from Kconfig or sysctls, fixed when a scheduler is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedParams {
    /// The service's address family; mh hashes dest addresses by it (matters only for
    /// mixed-family tunnel dests). `None`: each dest by its own family.
    pub af: Option<Af>,
    /// mh lookup table size, one of [`mh::PRIMES`] (`CONFIG_IP_VS_MH_TAB_INDEX`).
    pub mh_table_size: u32,
    /// `lblc_expiration` sysctl, seconds.
    pub lblc_expiration: u64,
    /// `lblcr_expiration` sysctl, seconds.
    pub lblcr_expiration: u64,
    /// How sh, dh and mh fill their tables (xvs: by address, see [`TableOrder`]).
    pub table_order: TableOrder,
}

impl Default for SchedParams {
    fn default() -> Self {
        SchedParams {
            af: None,
            mh_table_size: mh::DEFAULT_TABLE_SIZE,
            lblc_expiration: lblc::DEFAULT_EXPIRATION_SECS,
            lblcr_expiration: lblc::DEFAULT_EXPIRATION_SECS,
            table_order: TableOrder::default(),
        }
    }
}

/// A fresh scheduler for a service (the kernel's `init_service`), with default parameters.
pub fn new_scheduler(
    kind: SchedKind,
    flags: SvcFlags,
    dests: &[Arc<Dest>],
) -> Result<Box<dyn Scheduler>, ServiceError> {
    new_scheduler_with(kind, flags, dests, &SchedParams::default())
}

/// A fresh scheduler for a service with explicit parameters.
pub fn new_scheduler_with(
    kind: SchedKind,
    flags: SvcFlags,
    dests: &[Arc<Dest>],
    params: &SchedParams,
) -> Result<Box<dyn Scheduler>, ServiceError> {
    Ok(match kind {
        SchedKind::Rr => Box::new(rr::RrScheduler::new(dests)),
        SchedKind::Wrr => Box::new(wrr::WrrScheduler::new(dests)),
        SchedKind::Lc => Box::new(lc::LcScheduler),
        SchedKind::Wlc => Box::new(wlc::WlcScheduler),
        SchedKind::Sed => Box::new(sed::SedScheduler),
        SchedKind::Nq => Box::new(nq::NqScheduler),
        SchedKind::Fo => Box::new(fo::FoScheduler),
        SchedKind::Ovf => Box::new(ovf::OvfScheduler),
        SchedKind::Lblc => Box::new(lblc::LblcScheduler::new(params.lblc_expiration)),
        SchedKind::Lblcr => Box::new(lblcr::LblcrScheduler::new(params.lblcr_expiration)),
        SchedKind::Dh => Box::new(dh::DhScheduler::with_order(dests, params.table_order)),
        SchedKind::Sh => Box::new(sh::ShScheduler::with_order(
            flags,
            dests,
            params.table_order,
        )),
        SchedKind::Mh => Box::new(mh::MhScheduler::with_order(
            flags,
            dests,
            params.mh_table_size,
            params.af,
            params.table_order,
        )?),
    })
}

/// Neither overloaded nor quiesced: may take new connections.
#[inline]
pub(crate) fn eligible(d: &Dest) -> bool {
    !d.is_overloaded() && d.weight() > 0
}

/// The weighted-least pick shared by wlc, sed, lblc and lblcr: the first eligible dest,
/// then any later non-overloaded dest whose `overhead/weight` is strictly lower
/// (cross-multiplied, so ties keep the earlier list entry and weight 0 never wins).
#[inline]
pub(crate) fn weighted_least(
    dests: &[Arc<Dest>],
    overhead: impl Fn(&Dest) -> i64,
) -> Option<usize> {
    let first = dests.iter().position(|d| eligible(d))?;
    let (mut least, mut loh, mut lw) =
        (first, overhead(&dests[first]), dests[first].weight() as i64);
    for (i, d) in dests.iter().enumerate().skip(first + 1) {
        if d.is_overloaded() {
            continue;
        }
        let (doh, dw) = (overhead(d), d.weight() as i64);
        if loh * dw > doh * lw {
            (least, loh, lw) = (i, doh, dw);
        }
    }
    Some(least)
}

/// lblc/lblcr's `is_overloaded(dest, svc)`: more active conns than weight while some
/// dest of the service is below half its weight.
#[inline]
pub(crate) fn lblc_overloaded(d: &Dest, dests: &[Arc<Dest>]) -> bool {
    (d.activeconns() as i64) > d.weight() as i64
        && dests
            .iter()
            .any(|m| (m.activeconns() as i64) * 2 < m.weight() as i64)
}

/// Position of `target` (by identity) in `dests`.
#[inline]
pub(crate) fn position_of(dests: &[Arc<Dest>], target: *const Dest) -> Option<usize> {
    dests
        .iter()
        .position(|d| std::ptr::eq(Arc::as_ptr(d), target))
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::service::{Dest, DestSpec};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    /// Dests 10.77.0.<i+1>:80 with the given weights, in list order.
    pub(crate) fn dests(weights: &[i32]) -> Vec<Arc<Dest>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let mut s = DestSpec::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, i as u8 + 1)), 80);
                s.weight = w;
                Arc::new(Dest::new(i as u32, &s))
            })
            .collect()
    }
}
