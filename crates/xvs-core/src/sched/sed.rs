//! sed, shortest expected delay (`ip_vs_sed.c`): least `(active + 1) / weight`;
//! inactive connections do not count.

use super::{weighted_least, SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// Stateless: every pick reads the dests' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct SedScheduler;

/// sed's expected delay numerator.
#[inline]
pub(crate) fn sed_overhead(d: &Dest) -> i64 {
    d.activeconns() as i64 + 1
}

impl Scheduler for SedScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Sed
    }
    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        weighted_least(dests, sed_overhead)
    }
    fn rebuild(&self, _: &[Arc<Dest>], _: SvcFlags) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(SedScheduler))
    }
    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(SedScheduler)
    }
}
