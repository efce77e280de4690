//! wrr, weighted round-robin (`ip_vs_wrr.c`): passes over the list with a falling
//! weight bar `cw`; a pass picks, in list order, each dest whose weight reaches the bar.
//! Weights 4, 3, 2 give A A B A B C A B C.

use super::{SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `struct ip_vs_wrr_mark`. `mw` (max weight − (gcd − 1)) and `di` (gcd of the
/// positive weights) change only with the dest list, so they are plain fields; the
/// moving part, `cl` (cursor: 0 = head, `i + 1` = `dests[i]`) and `cw` (current
/// weight), is one atomic word advanced by compare-and-swap.
#[derive(Debug)]
pub struct WrrScheduler {
    state: Arc<AtomicU64>,
    mw: i32,
    di: i32,
}

#[inline]
fn pack(cl: usize, cw: i32) -> u64 {
    (cl as u32 as u64) | ((cw as u32 as u64) << 32)
}

#[inline]
fn unpack(s: u64) -> (usize, i32) {
    (s as u32 as usize, (s >> 32) as u32 as i32)
}

fn gcd(mut a: i32, mut b: i32) -> i32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `ip_vs_wrr_gcd_weight` and `ip_vs_wrr_max_weight` combined into (di, mw).
fn marks(dests: &[Arc<Dest>]) -> (i32, i32) {
    let g = dests
        .iter()
        .map(|d| d.weight())
        .filter(|&w| w > 0)
        .fold(0, |g, w| if g > 0 { gcd(w, g) } else { w });
    let di = if g > 0 { g } else { 1 };
    let maxw = dests.iter().map(|d| d.weight()).fold(0, i32::max);
    (di, maxw - (di - 1))
}

impl WrrScheduler {
    /// A fresh scheduler (`ip_vs_wrr_init_svc`): cursor at the head, `cw = mw`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        let (di, mw) = marks(dests);
        WrrScheduler {
            state: Arc::new(AtomicU64::new(pack(0, mw))),
            mw,
            di,
        }
    }

    /// (cursor, cw, mw, di) as the kernel's mark holds them; cursor `None` = head.
    pub fn mark(&self) -> (Option<usize>, i32, i32, i32) {
        let (cl, cw) = unpack(self.state.load(Ordering::Relaxed));
        (cl.checked_sub(1), cw, self.mw, self.di)
    }

    /// One run of `ip_vs_wrr_schedule` from state (cl, cw): the pick (if any) and the
    /// state the kernel leaves behind.
    fn run(&self, dests: &[Arc<Dest>], cl: usize, mut cw: i32) -> (Option<usize>, usize, i32) {
        let n = dests.len();
        let last = if cl > n { 0 } else { cl };
        let (mut stop, mut last_pass, mut restarted) = (None, false, false);
        let mut pos = last;
        loop {
            // list_for_each_entry_continue from `pos` to the end of the list.
            for (i, d) in dests.iter().enumerate().skip(pos) {
                if !d.is_overloaded() && d.weight() >= cw {
                    return (Some(i), i + 1, cw);
                }
                if stop == Some(i + 1) {
                    return (None, i + 1, cw);
                }
            }
            cw -= self.di;
            if cw <= 0 {
                cw = self.mw;
                // Fail if the last pass (w >= 1) already covered every dest.
                if last_pass || last == 0 {
                    return (None, 0, cw);
                }
                restarted = true;
            }
            last_pass = cw <= self.di;
            if last_pass && restarted && last != 0 {
                // The w >= 1 pass so far covered only the dests after `last`.
                stop = Some(last);
            }
            pos = 0;
        }
    }
}

impl Scheduler for WrrScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Wrr
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (cl, cw) = unpack(cur);
            let (pick, ncl, ncw) = self.run(dests, cl, cw);
            match self.state.compare_exchange_weak(
                cur,
                pack(ncl, ncw),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return pick,
                Err(now) => cur = now,
            }
        }
    }

    /// `ip_vs_wrr_dest_changed` (add, delete and edit alike): cursor back to the head,
    /// di and mw recomputed, cw kept when still in range (rounded onto the new step).
    fn rebuild(
        &self,
        dests: &[Arc<Dest>],
        _: SvcFlags,
    ) -> Result<Box<dyn Scheduler>, ServiceError> {
        let (_, mut cw) = unpack(self.state.load(Ordering::Relaxed));
        let (di, mw) = marks(dests);
        if cw > mw || cw == 0 {
            cw = mw;
        } else if di > 1 {
            cw = (cw / di) * di + 1;
        }
        Ok(Box::new(WrrScheduler {
            state: Arc::new(AtomicU64::new(pack(0, cw))),
            mw,
            di,
        }))
    }

    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(WrrScheduler {
            state: self.state.clone(),
            mw: self.mw,
            di: self.di,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::dests;
    use super::*;
    use crate::addr::Addr;
    use crate::time::Time;

    #[test]
    fn weights_4_3_2_give_aababcabc() {
        let d = dests(&[4, 3, 2]);
        let s = WrrScheduler::new(&d);
        let inp = SchedInput {
            saddr: Addr::v4([1, 1, 1, 1]),
            daddr: Addr::v4([2, 2, 2, 2]),
            sport: 1,
            dport: 2,
            now: Time::ZERO,
        };
        let seq: String = (0..18)
            .map(|_| (b'A' + s.schedule(&d, &inp).unwrap() as u8) as char)
            .collect();
        assert_eq!(seq, "AABABCABCAABABCABC");
    }

    #[test]
    fn pack_round_trips_negative_cw() {
        assert_eq!(unpack(pack(7, -3)), (7, -3));
    }
}
