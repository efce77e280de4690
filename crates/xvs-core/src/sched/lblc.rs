//! lblc, locality-based least-connection (`ip_vs_lblc.c`): remembers, per packet
//! destination address, the dest it last chose, and keeps using it until that dest
//! is gone, quiesced or overloaded in lblc's own sense; otherwise picks like wlc.
//!
//! The table is the kernel's: 1024 buckets by `hash_32(daddr_fold, 10)`, garbage
//! collected every 60 s (entries idle 6 min once there are more than 16384; every 30th
//! run, entries idle longer than `lblc_expiration`). It is shared by every scheduler
//! object built for the service (it survives dest changes and `-E` with the same
//! scheduler), behind a mutex held for a lookup or an insert only.
//!
//! Bound: the kernel has none besides GC; xvs stops adding entries at
//! [`HARD_CAP`] (4× the GC threshold) and then schedules without caching, which is
//! what the kernel does when an entry cannot be allocated.

use super::hash::hash_32;
use super::{lblc_overloaded, position_of, wlc, SchedInput, Scheduler};
use crate::addr::Addr;
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use crate::time::Time;
use std::sync::{Arc, Mutex, MutexGuard};

/// `CONFIG_IP_VS_LBLC_TAB_BITS`.
pub const TAB_BITS: u32 = 10;
/// Buckets of the destination-address table.
pub const TAB_SIZE: usize = 1 << TAB_BITS;
/// `max_size`: GC of idle entries starts above this many entries.
pub const MAX_SIZE: usize = TAB_SIZE * 16;
/// Entries are never added beyond this (xvs's bound, see the module doc).
pub const HARD_CAP: usize = MAX_SIZE * 4;
/// `CHECK_EXPIRE_INTERVAL`, seconds.
pub const CHECK_EXPIRE_INTERVAL: u64 = 60;
/// `ENTRY_TIMEOUT`, seconds.
pub const ENTRY_TIMEOUT: u64 = 6 * 60;
/// `DEFAULT_EXPIRATION` of the `lblc_expiration`/`lblcr_expiration` sysctls, seconds.
pub const DEFAULT_EXPIRATION_SECS: u64 = 24 * 60 * 60;
/// `COUNT_FOR_FULL_EXPIRATION`.
pub const COUNT_FOR_FULL_EXPIRATION: u32 = 30;

/// The bucket of a destination address.
#[inline]
pub(crate) fn bucket_of(addr: &Addr) -> usize {
    hash_32(addr.fold32(), TAB_BITS) as usize
}

/// A per-address table with the kernel's periodic GC, generic over the entry value
/// (lblc: one dest, lblcr: a dest set).
pub(crate) struct Table<E> {
    pub buckets: Vec<Vec<(Addr, E, Time)>>,
    pub entries: usize,
    rover: usize,
    counter: u32,
    next_check: Option<Time>,
}

impl<E> std::fmt::Debug for Table<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<E> Table<E> {
    pub(crate) fn new() -> Self {
        Table {
            buckets: (0..TAB_SIZE).map(|_| Vec::new()).collect(),
            entries: 0,
            rover: 0,
            counter: 1,
            next_check: None,
        }
    }

    /// The entry for `addr` and its `lastuse`.
    #[inline]
    pub(crate) fn get_mut(&mut self, addr: &Addr) -> Option<(&mut E, &mut Time)> {
        self.buckets[bucket_of(addr)]
            .iter_mut()
            .find(|(a, _, _)| a == addr)
            .map(|(_, e, t)| (e, t))
    }

    /// Adds an entry unless the table is at its cap.
    pub(crate) fn insert(&mut self, addr: Addr, e: E, now: Time) {
        if self.entries < HARD_CAP {
            self.buckets[bucket_of(&addr)].push((addr, e, now));
            self.entries += 1;
        }
    }

    /// Drops, in each bucket from `rover + 1` on, the entries idle at least `idle`;
    /// stops after the bucket where `goal` reaches 0 (`None`: all buckets).
    fn sweep(&mut self, now: Time, idle: u64, mut goal: Option<i64>) {
        let mut j = self.rover;
        for _ in 0..TAB_SIZE {
            j = (j + 1) & (TAB_SIZE - 1);
            let before = self.buckets[j].len();
            self.buckets[j]
                .retain(|(_, _, lastuse)| now.since(*lastuse) < idle.saturating_mul(1_000_000_000));
            let dropped = before - self.buckets[j].len();
            self.entries -= dropped;
            if let Some(g) = goal.as_mut() {
                *g -= dropped as i64;
                if *g <= 0 {
                    break;
                }
            }
        }
        self.rover = j;
    }

    /// `ip_vs_lblc_check_expire`, run at most once per [`CHECK_EXPIRE_INTERVAL`]; the
    /// first call arms the timer.
    pub(crate) fn check_expire(&mut self, now: Time, expiration: u64) {
        match self.next_check {
            Some(t) if now >= t => {}
            Some(_) => return,
            None => {
                self.next_check = Some(now.add_secs(CHECK_EXPIRE_INTERVAL));
                return;
            }
        }
        self.next_check = Some(now.add_secs(CHECK_EXPIRE_INTERVAL));
        if self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION) {
            self.sweep(now, expiration, None);
            self.counter = 1;
            return;
        }
        if self.entries <= MAX_SIZE {
            self.counter += 1;
            return;
        }
        let goal = ((self.entries - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2);
        self.sweep(now, ENTRY_TIMEOUT, Some(goal as i64));
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves a usable table (plain data).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// lblc for one service; clones of the table handle share it.
#[derive(Debug, Clone)]
pub struct LblcScheduler {
    table: Arc<Mutex<Table<Arc<Dest>>>>,
    expiration: u64,
}

impl LblcScheduler {
    /// An empty table; `expiration` is `lblc_expiration` in seconds.
    pub fn new(expiration: u64) -> Self {
        LblcScheduler {
            table: Arc::new(Mutex::new(Table::new())),
            expiration,
        }
    }

    /// Number of cached addresses.
    pub fn entries(&self) -> usize {
        lock(&self.table).entries
    }

    /// The dest cached for `daddr`, if any (even one no longer usable).
    pub fn cached(&self, daddr: &Addr) -> Option<Arc<Dest>> {
        lock(&self.table).get_mut(daddr).map(|(d, _)| d.clone())
    }
}

impl Scheduler for LblcScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Lblc
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &SchedInput) -> Option<usize> {
        let cached = {
            let mut t = lock(&self.table);
            t.get_mut(&input.daddr).map(|(d, lastuse)| {
                *lastuse = input.now;
                Arc::as_ptr(d)
            })
        };
        // Cache hit: AVAILABLE, weight > 0 and not lblc-overloaded (the OVERLOAD flag
        // is not looked at). A cached dest outside this list (an older snapshot
        // racing a dest change) counts as a miss.
        if let Some(i) = cached.and_then(|p| position_of(dests, p)) {
            let d = &dests[i];
            if d.is_available() && d.weight() > 0 && !lblc_overloaded(d, dests) {
                return Some(i);
            }
        }
        let i = wlc::pick(dests)?;
        let d = &dests[i];
        let mut t = lock(&self.table);
        match t.get_mut(&input.daddr) {
            Some((e, lastuse)) => {
                // ip_vs_lblc_new: a different dest replaces the entry (fresh lastuse).
                if !Arc::ptr_eq(e, d) {
                    *e = d.clone();
                    *lastuse = input.now;
                }
            }
            None => t.insert(input.daddr, d.clone(), input.now),
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
            .any(|(_, d, _)| std::ptr::eq(Arc::as_ptr(d), dest))
    }
}
