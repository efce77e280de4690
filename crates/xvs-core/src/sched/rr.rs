//! rr, round-robin (`ip_vs_rr.c`): the next eligible dest after the cursor,
//! circularly, the cursor dest itself last. Weights only matter as 0 = skip.

use super::{eligible, SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The cursor is the kernel's `svc->sched_data` list position: 0 is the list head
/// (nothing picked yet), `i + 1` is `dests[i]`. One atomic word, advanced by
/// compare-and-swap, so concurrent picks are exactly those of the kernel's spinlock.
pub struct RrScheduler {
    dests: Vec<Arc<Dest>>,
    cursor: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RrScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RrScheduler")
            .field("dests", &self.dests.len())
            .field("cursor", &self.cursor())
            .finish()
    }
}

impl RrScheduler {
    /// A fresh scheduler: cursor at the list head (`ip_vs_rr_init_svc`).
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        RrScheduler {
            dests: dests.to_vec(),
            cursor: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Where the cursor sits: `None` at the list head, else the index of the last pick.
    pub fn cursor(&self) -> Option<usize> {
        self.cursor.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// The kernel's scan: entries after `cur` to the end, then from the start up to and
/// including `cur` (only when `cur` is not the head).
#[inline]
fn scan(dests: &[Arc<Dest>], cur: usize) -> Option<usize> {
    let n = dests.len();
    let cur = if cur > n { 0 } else { cur };
    (cur..n).chain(0..cur).find(|&i| eligible(&dests[i]))
}

impl Scheduler for RrScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Rr
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        let mut cur = self.cursor.load(Ordering::Relaxed);
        loop {
            // No eligible dest: the kernel leaves the cursor where it was.
            let i = scan(dests, cur)?;
            match self.cursor.compare_exchange_weak(
                cur,
                i + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(i),
                Err(now) => cur = now,
            }
        }
    }

    /// Only `del_dest` has a hook: a deleted cursor dest hands the cursor to its list
    /// predecessor (or the head). Adds and edits leave the cursor on its dest.
    fn rebuild(
        &self,
        dests: &[Arc<Dest>],
        _: SvcFlags,
    ) -> Result<Box<dyn Scheduler>, ServiceError> {
        let old = self.cursor.load(Ordering::Relaxed);
        let find = |d: &Arc<Dest>| dests.iter().position(|n| Arc::ptr_eq(n, d));
        // Walk back from the cursor dest to the first one still listed; a single
        // delete (the only change per rebuild) stops at the direct predecessor.
        let cursor = (0..old.min(self.dests.len()))
            .rev()
            .find_map(|i| find(&self.dests[i]))
            .map_or(0, |i| i + 1);
        Ok(Box::new(RrScheduler {
            dests: dests.to_vec(),
            cursor: Arc::new(AtomicUsize::new(cursor)),
        }))
    }

    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(RrScheduler {
            dests: self.dests.clone(),
            cursor: self.cursor.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::dests;
    use super::*;
    use crate::addr::Addr;
    use crate::time::Time;

    fn input() -> SchedInput {
        SchedInput {
            saddr: Addr::v4([10, 0, 0, 1]),
            daddr: Addr::v4([10, 0, 0, 2]),
            sport: 1,
            dport: 80,
            now: Time::ZERO,
        }
    }

    #[test]
    fn cycles_in_list_order_skipping_weight_zero() {
        let d = dests(&[1, 0, 5]);
        let s = RrScheduler::new(&d);
        let picks: Vec<_> = (0..4).map(|_| s.schedule(&d, &input()).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn deleting_the_cursor_dest_moves_the_cursor_to_its_predecessor() {
        let d = dests(&[1, 1, 1]);
        let s = RrScheduler::new(&d);
        s.schedule(&d, &input());
        s.schedule(&d, &input()); // cursor on d[1]
        let rest = vec![d[0].clone(), d[2].clone()];
        let s2 = s.rebuild(&rest, SvcFlags::default()).unwrap();
        // Cursor is now d[0] (index 0), so the next pick is d[2] (index 1).
        assert_eq!(s2.schedule(&rest, &input()), Some(1));
    }
}
