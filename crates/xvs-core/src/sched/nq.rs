//! nq, never queue (`ip_vs_nq.c`): the first idle dest (no active connection) in
//! list order, else sed's least `(active + 1) / weight`.

use super::sed::sed_overhead;
use super::{SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// Stateless: every pick reads the dests' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct NqScheduler;

impl Scheduler for NqScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Nq
    }
    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        let mut least: Option<(usize, i64, i64)> = None;
        for (i, d) in dests.iter().enumerate() {
            // The kernel tests `!weight`, so only weight 0 is skipped here.
            if d.is_overloaded() || d.weight() == 0 {
                continue;
            }
            if d.activeconns() == 0 {
                return Some(i);
            }
            let (doh, dw) = (sed_overhead(d), d.weight() as i64);
            match least {
                Some((_, loh, lw)) if loh * dw <= doh * lw => {}
                _ => least = Some((i, doh, dw)),
            }
        }
        least.map(|(i, _, _)| i)
    }
    fn rebuild(&self, _: &[Arc<Dest>], _: SvcFlags) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(NqScheduler))
    }
    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(NqScheduler)
    }
}
