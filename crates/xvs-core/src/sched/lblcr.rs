//! lblcr, locality-based least-connection with replication (`ip_vs_lblcr.c`): per
//! packet destination address a *set* of dests; new connections go to the set's
//! weighted-least member, the set grows (wlc over the service) when that member is
//! missing or overloaded, and sheds its weighted-most member when it has not changed
//! for `lblcr_expiration`.
//!
//! Table, GC and bound as in [`super::lblc`]. A set holds at most one entry per dest,
//! so it is bounded by the dests the service ever had.

use super::lblc::{lock, Table};
use super::{lblc_overloaded, position_of, wlc, SchedInput, Scheduler};
use crate::addr::Addr;
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use crate::time::Time;
use std::sync::{Arc, Mutex};

/// `struct ip_vs_dest_set`: members with the most recently inserted *last* (the
/// kernel's list head), and the time of the last change.
#[derive(Debug)]
pub(crate) struct DestSet {
    members: Vec<Arc<Dest>>,
    lastmod: Time,
}

impl DestSet {
    /// Members in kernel list order (newest first).
    fn iter(&self) -> impl Iterator<Item = &Arc<Dest>> {
        self.members.iter().rev()
    }

    /// `ip_vs_dest_set_insert(.., check = true)`.
    fn insert(&mut self, d: &Arc<Dest>, now: Time) {
        if !self.members.iter().any(|m| Arc::ptr_eq(m, d)) {
            self.members.push(d.clone());
            self.lastmod = now;
        }
    }

    /// `ip_vs_dest_set_min`: weighted least among AVAILABLE, non-overloaded members
    /// with weight > 0 for the first, cross-multiplied after that.
    fn min(&self) -> Option<&Arc<Dest>> {
        let mut it = self.iter();
        let mut least = it
            .by_ref()
            .find(|d| !d.is_overloaded() && d.weight() > 0 && d.is_available())?;
        let mut loh = least.overhead();
        for d in it {
            if d.is_overloaded() {
                continue;
            }
            let doh = d.overhead();
            if loh * d.weight() as i64 > doh * least.weight() as i64 && d.is_available() {
                (least, loh) = (d, doh);
            }
        }
        Some(least)
    }

    /// `ip_vs_dest_set_max`: weighted most-loaded member with weight > 0.
    fn max(&self) -> Option<*const Dest> {
        let mut it = self.iter();
        let mut most = it.by_ref().find(|d| d.weight() > 0)?;
        let mut moh = most.overhead();
        for d in it {
            let doh = d.overhead();
            if moh * (d.weight() as i64) < doh * most.weight() as i64 && d.weight() > 0 {
                (most, moh) = (d, doh);
            }
        }
        Some(Arc::as_ptr(most))
    }

    /// `ip_vs_dest_set_erase`.
    fn erase(&mut self, target: *const Dest, now: Time) {
        if let Some(pos) = self
            .members
            .iter()
            .position(|m| std::ptr::eq(Arc::as_ptr(m), target))
        {
            self.members.remove(pos);
            self.lastmod = now;
        }
    }
}

/// lblcr for one service; clones share the table.
#[derive(Debug, Clone)]
pub struct LblcrScheduler {
    table: Arc<Mutex<Table<DestSet>>>,
    expiration: u64,
}

impl LblcrScheduler {
    /// An empty table; `expiration` is `lblcr_expiration` in seconds.
    pub fn new(expiration: u64) -> Self {
        LblcrScheduler {
            table: Arc::new(Mutex::new(Table::new())),
            expiration,
        }
    }

    /// Number of cached addresses.
    pub fn entries(&self) -> usize {
        lock(&self.table).entries
    }

    /// The server set of `daddr` in kernel order (newest member first).
    pub fn set(&self, daddr: &Addr) -> Option<Vec<Arc<Dest>>> {
        lock(&self.table)
            .get_mut(daddr)
            .map(|(s, _)| s.iter().cloned().collect())
    }
}

impl Scheduler for LblcrScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Lblcr
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &SchedInput) -> Option<usize> {
        let now = input.now;
        let hit = {
            let mut t = lock(&self.table);
            t.get_mut(&input.daddr).map(|(set, lastuse)| {
                *lastuse = now;
                let min = set.min().map(Arc::as_ptr);
                // More than one member and unchanged for `expiration`: shed the most
                // loaded one (possibly `min` itself, which is still used this time).
                if set.members.len() > 1
                    && now.since(set.lastmod) > self.expiration.saturating_mul(1_000_000_000)
                {
                    if let Some(m) = set.max() {
                        set.erase(m, now);
                    }
                }
                min
            })
        };
        let Some(min) = hit else {
            // Miss: wlc over the service, new entry with a one-member set.
            let i = wlc::pick(dests)?;
            let mut t = lock(&self.table);
            match t.get_mut(&input.daddr) {
                Some((set, _)) => set.insert(&dests[i], now),
                None => {
                    let set = DestSet {
                        members: vec![dests[i].clone()],
                        lastmod: now,
                    };
                    t.insert(input.daddr, set, now);
                }
            }
            return Some(i);
        };
        if let Some(i) = min.and_then(|p| position_of(dests, p)) {
            if !lblc_overloaded(&dests[i], dests) {
                return Some(i);
            }
        }
        // Missing or overloaded: wlc over the service and add the pick to the set.
        let i = wlc::pick(dests)?;
        if let Some((set, _)) = lock(&self.table).get_mut(&input.daddr) {
            set.insert(&dests[i], now);
        }
        Some(i)
    }

    /// No dest hooks: the table lives on.
    fn rebuild(&self, _: &[Arc<Dest>], _: SvcFlags) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(self.clone()))
    }

    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn gc(&self, now: Time) {
        lock(&self.table).check_expire(now, self.expiration);
    }

    fn holds(&self, dest: &Dest) -> bool {
        lock(&self.table)
            .buckets
            .iter()
            .flatten()
            .any(|(_, set, _)| {
                set.members
                    .iter()
                    .any(|m| std::ptr::eq(Arc::as_ptr(m), dest))
            })
    }
}
