//! fo, weighted failover (`ip_vs_fo.c`): the non-overloaded dest with the highest
//! weight; the first one in list order on ties.

use super::{SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// Stateless: every pick reads the dests' weights and flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoScheduler;

impl Scheduler for FoScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Fo
    }
    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        let (mut best, mut hw) = (None, 0);
        for (i, d) in dests.iter().enumerate() {
            // hw starts at 0 and the test is strict, so weight 0 never wins.
            let w = d.weight();
            if !d.is_overloaded() && w > hw {
                (best, hw) = (Some(i), w);
            }
        }
        best
    }
    fn rebuild(&self, _: &[Arc<Dest>], _: SvcFlags) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(FoScheduler))
    }
    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(FoScheduler)
    }
}
