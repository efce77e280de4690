//! A live real server: its configuration plus the connection counters and the
//! overload flag that schedulers read and the connection table updates.
//!
//! Shared between the control plane and every worker through `Arc<Dest>`; all
//! mutable fields are atomics, so counters survive configuration snapshots and an
//! edit (`-e`) takes effect without rebuilding anything.

use super::spec::{DestSpec, FwdMethod};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU8, Ordering::Relaxed};

/// `IP_VS_DEST_F_AVAILABLE`: the dest belongs to a service.
pub const DEST_F_AVAILABLE: u32 = 0x1;
/// `IP_VS_DEST_F_OVERLOAD`: the upper threshold was reached.
pub const DEST_F_OVERLOAD: u32 = 0x2;

/// A real server of one service.
#[derive(Debug)]
pub struct Dest {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port (0: the packet's).
    pub port: u16,
    /// Stable small index, unique among live dests, for per-worker counter arrays.
    pub id: u32,
    fwd: AtomicU8,
    weight: AtomicI32,
    /// Last non-zero weight (mh keeps a quiesced dest's table slots with it).
    last_weight: AtomicI32,
    u_threshold: AtomicU32,
    l_threshold: AtomicU32,
    flags: AtomicU32,
    activeconns: AtomicU32,
    inactconns: AtomicU32,
    persistconns: AtomicU32,
}

fn fwd_to_u8(f: FwdMethod) -> u8 {
    match f {
        FwdMethod::Masq => 0,
        FwdMethod::Route => 1,
        FwdMethod::Tunnel => 2,
        FwdMethod::FullNat => 3,
    }
}

fn fwd_from_u8(v: u8) -> FwdMethod {
    match v {
        0 => FwdMethod::Masq,
        2 => FwdMethod::Tunnel,
        3 => FwdMethod::FullNat,
        _ => FwdMethod::Route,
    }
}

impl Dest {
    /// A dest built from its spec, available, with zero counters.
    pub fn new(id: u32, spec: &DestSpec) -> Dest {
        Dest {
            addr: spec.addr,
            port: spec.port,
            id,
            fwd: AtomicU8::new(fwd_to_u8(spec.fwd)),
            weight: AtomicI32::new(spec.weight),
            last_weight: AtomicI32::new(spec.weight),
            u_threshold: AtomicU32::new(spec.u_threshold),
            l_threshold: AtomicU32::new(spec.l_threshold),
            flags: AtomicU32::new(DEST_F_AVAILABLE),
            activeconns: AtomicU32::new(0),
            inactconns: AtomicU32::new(0),
            persistconns: AtomicU32::new(0),
        }
    }

    /// The configuration as `-S` would save it.
    pub fn spec(&self) -> DestSpec {
        DestSpec {
            addr: self.addr,
            port: self.port,
            fwd: self.fwd(),
            weight: self.weight(),
            u_threshold: self.u_threshold(),
            l_threshold: self.l_threshold(),
        }
    }

    /// Applies an edit (`-e`) the way the kernel's `__ip_vs_update_dest` does:
    /// the overload flag is cleared when the upper threshold is removed or raised.
    pub fn update(&self, spec: &DestSpec) {
        self.fwd.store(fwd_to_u8(spec.fwd), Relaxed);
        self.weight.store(spec.weight, Relaxed);
        if spec.weight > 0 {
            self.last_weight.store(spec.weight, Relaxed);
        }
        let old_u = self.u_threshold.load(Relaxed);
        if spec.u_threshold == 0 || spec.u_threshold > old_u {
            self.flags.fetch_and(!DEST_F_OVERLOAD, Relaxed);
        }
        self.u_threshold.store(spec.u_threshold, Relaxed);
        self.l_threshold.store(spec.l_threshold, Relaxed);
    }

    /// Re-adds a dest from the trash as the kernel's `__ip_vs_update_dest(.., add = 1)`
    /// does: the edit of [`Dest::update`], `last_weight` set even to 0, available again.
    pub fn revive(&self, spec: &DestSpec) {
        self.update(spec);
        self.last_weight.store(spec.weight, Relaxed);
        self.set_available();
    }

    /// How packets reach it.
    #[inline]
    pub fn fwd(&self) -> FwdMethod {
        fwd_from_u8(self.fwd.load(Relaxed))
    }
    /// Its weight (0: quiesced).
    #[inline]
    pub fn weight(&self) -> i32 {
        self.weight.load(Relaxed)
    }
    /// The last non-zero weight (mh keeps a quiesced dest's table slots with it).
    #[inline]
    pub fn last_weight(&self) -> i32 {
        self.last_weight.load(Relaxed)
    }
    /// Upper connection threshold (0: none).
    #[inline]
    pub fn u_threshold(&self) -> u32 {
        self.u_threshold.load(Relaxed)
    }
    /// Lower connection threshold (0: none).
    #[inline]
    pub fn l_threshold(&self) -> u32 {
        self.l_threshold.load(Relaxed)
    }
    /// Its `DEST_F_*` flags.
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Relaxed)
    }
    /// Active connections.
    #[inline]
    pub fn activeconns(&self) -> u32 {
        self.activeconns.load(Relaxed)
    }
    /// Inactive connections.
    #[inline]
    pub fn inactconns(&self) -> u32 {
        self.inactconns.load(Relaxed)
    }
    /// Persistence templates bound to it (the kernel's persistconns).
    #[inline]
    pub fn persistconns(&self) -> u32 {
        self.persistconns.load(Relaxed)
    }

    /// Active + inactive connections (templates excluded), what thresholds compare.
    #[inline]
    pub fn totalconns(&self) -> u32 {
        self.activeconns().wrapping_add(self.inactconns())
    }

    /// The kernel's overhead: `(active << 8) + inactive`, what lc/wlc compare.
    #[inline]
    pub fn overhead(&self) -> i64 {
        ((self.activeconns() as i64) << 8) + self.inactconns() as i64
    }

    /// Whether OVERLOAD is set (the upper threshold was reached).
    #[inline]
    pub fn is_overloaded(&self) -> bool {
        self.flags() & DEST_F_OVERLOAD != 0
    }

    /// Whether it may get new connections (AVAILABLE).
    #[inline]
    pub fn is_available(&self) -> bool {
        self.flags() & DEST_F_AVAILABLE != 0
    }

    /// Marks the dest as removed from its service (its conns then follow `expire_nodest_conn`).
    pub fn set_unavailable(&self) {
        self.flags.fetch_and(!DEST_F_AVAILABLE, Relaxed);
    }

    /// Marks the dest as part of a service again (re-added after a delete).
    pub fn set_available(&self) {
        self.flags.fetch_or(DEST_F_AVAILABLE, Relaxed);
    }

    /// Accounts a new connection (starting inactive, as the kernel's `ip_vs_bind_dest`)
    /// or a new persistence template, then sets the overload flag at the upper threshold.
    pub fn bind_conn(&self, template: bool) {
        if template {
            self.persistconns.fetch_add(1, Relaxed);
        } else {
            self.inactconns.fetch_add(1, Relaxed);
        }
        let u = self.u_threshold();
        if u != 0 && self.totalconns() >= u {
            self.flags.fetch_or(DEST_F_OVERLOAD, Relaxed);
        }
    }

    /// Releases a connection (counted active or inactive as given) or a template,
    /// then clears the overload flag as the kernel's `ip_vs_unbind_dest` decides.
    pub fn unbind_conn(&self, template: bool, active: bool) {
        if template {
            dec(&self.persistconns);
        } else if active {
            dec(&self.activeconns);
        } else {
            dec(&self.inactconns);
        }
        let (l, u) = (self.l_threshold(), self.u_threshold());
        let total = self.totalconns() as u64;
        let clear = if l != 0 {
            total < l as u64
        } else if u != 0 {
            total * 4 < u as u64 * 3
        } else {
            true
        };
        if clear {
            self.flags.fetch_and(!DEST_F_OVERLOAD, Relaxed);
        }
    }

    /// A connection moved from inactive to active (state change).
    pub fn conn_activated(&self) {
        dec(&self.inactconns);
        self.activeconns.fetch_add(1, Relaxed);
    }

    /// A connection moved from active to inactive (state change).
    pub fn conn_deactivated(&self) {
        dec(&self.activeconns);
        self.inactconns.fetch_add(1, Relaxed);
    }
}

/// Decrements without wrapping below zero (a counter bug must not look like 4 billion conns).
fn dec(c: &AtomicU32) {
    let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn dest(u: u32, l: u32) -> Dest {
        let mut s = DestSpec::new(IpAddr::V4(Ipv4Addr::new(10, 77, 1, 2)), 80);
        s.u_threshold = u;
        s.l_threshold = l;
        Dest::new(0, &s)
    }

    #[test]
    fn overload_set_at_upper_cleared_below_three_quarters() {
        let d = dest(4, 0);
        for _ in 0..3 {
            d.bind_conn(false);
            assert!(!d.is_overloaded());
        }
        d.bind_conn(false);
        assert!(d.is_overloaded(), "4 conns reach u_threshold 4");
        // 3 conns: 3*4=12 < 4*3=12 is false, still overloaded.
        d.unbind_conn(false, false);
        assert!(d.is_overloaded());
        // 2 conns: 8 < 12, cleared.
        d.unbind_conn(false, false);
        assert!(!d.is_overloaded());
    }

    #[test]
    fn overload_cleared_below_lower_threshold() {
        let d = dest(3, 2);
        for _ in 0..3 {
            d.bind_conn(false);
        }
        assert!(d.is_overloaded());
        d.unbind_conn(false, false); // 2, not < 2
        assert!(d.is_overloaded());
        d.unbind_conn(false, false); // 1 < 2
        assert!(!d.is_overloaded());
    }

    #[test]
    fn templates_do_not_count_toward_total_but_trigger_the_check() {
        let d = dest(1, 0);
        d.bind_conn(true);
        assert_eq!(d.persistconns(), 1);
        assert_eq!(d.totalconns(), 0);
        assert!(!d.is_overloaded());
        d.bind_conn(false);
        assert!(d.is_overloaded());
    }

    #[test]
    fn state_changes_move_counts() {
        let d = dest(0, 0);
        d.bind_conn(false);
        assert_eq!((d.activeconns(), d.inactconns()), (0, 1));
        d.conn_activated();
        assert_eq!((d.activeconns(), d.inactconns()), (1, 0));
        d.conn_deactivated();
        d.unbind_conn(false, false);
        assert_eq!((d.activeconns(), d.inactconns()), (0, 0));
        d.unbind_conn(false, false);
        assert_eq!(d.inactconns(), 0, "never wraps below zero");
    }

    #[test]
    fn edit_raising_upper_clears_overload() {
        let d = dest(1, 0);
        d.bind_conn(false);
        assert!(d.is_overloaded());
        let mut s = d.spec();
        s.u_threshold = 1;
        d.update(&s);
        assert!(d.is_overloaded(), "same threshold keeps the flag");
        s.u_threshold = 5;
        d.update(&s);
        assert!(!d.is_overloaded());
    }
}
