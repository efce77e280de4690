//! lc, least-connection (`ip_vs_lc.c`): least `(active << 8) + inactive`, weights
//! ignored except that weight 0 is never picked.

use super::{SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// Stateless: every pick reads the dests' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct LcScheduler;

impl Scheduler for LcScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Lc
    }
    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        let mut least: Option<(usize, i64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.is_overloaded() || d.weight() == 0 {
                continue;
            }
            let doh = d.overhead();
            // Strict `<`: the first minimum in list order wins.
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
    fn rebuild(&self, _: &[Arc<Dest>], _: SvcFlags) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(LcScheduler))
    }
    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(LcScheduler)
    }
}
