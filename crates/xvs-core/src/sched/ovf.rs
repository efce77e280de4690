//! ovf, overflow-connection (`ip_vs_ovf.c`): the highest-weight dest that has no
//! more active connections than its weight; the next in line once it overflows.

use super::{SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// Stateless: every pick reads the dests' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct OvfScheduler;

impl Scheduler for OvfScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Ovf
    }
    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        let (mut best, mut hw) = (None, 0);
        for (i, d) in dests.iter().enumerate() {
            let w = d.weight();
            if d.is_overloaded() || d.activeconns() as i64 > w as i64 || w == 0 {
                continue;
            }
            if best.is_none() || w > hw {
                (best, hw) = (Some(i), w);
            }
        }
        best
    }
    fn rebuild(&self, _: &[Arc<Dest>], _: SvcFlags) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(OvfScheduler))
    }
    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(OvfScheduler)
    }
}
