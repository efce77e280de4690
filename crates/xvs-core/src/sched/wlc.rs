//! wlc, weighted least-connection (`ip_vs_wlc.c`), the default scheduler: least
//! `overhead / weight` with overhead = `(active << 8) + inactive`.

use super::{weighted_least, SchedInput, Scheduler};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// Stateless: every pick reads the dests' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct WlcScheduler;

/// The kernel's wlc choice over `dests` (also lblc/lblcr's fallback).
#[inline]
pub fn pick(dests: &[Arc<Dest>]) -> Option<usize> {
    weighted_least(dests, Dest::overhead)
}

impl Scheduler for WlcScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Wlc
    }
    fn schedule(&self, dests: &[Arc<Dest>], _input: &SchedInput) -> Option<usize> {
        pick(dests)
    }
    fn rebuild(&self, _: &[Arc<Dest>], _: SvcFlags) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(WlcScheduler))
    }
    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(WlcScheduler)
    }
}
