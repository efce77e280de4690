//! dh, destination hashing (`ip_vs_dh.c`): a 256-bucket table filled by cycling the
//! list one bucket per dest (weights ignored); the packet's destination address
//! picks the bucket.
//!
//! The kernel cycles the list in its order; xvs cycles it in address order by
//! default ([`TableOrder`]), so directors with the same dests agree.

use super::hash::hash_32;
use super::{SchedInput, Scheduler, TableOrder};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// `IP_VS_DH_TAB_BITS`.
pub const TAB_BITS: u32 = 8;
/// Buckets in the table.
pub const TAB_SIZE: usize = 1 << TAB_BITS;
const EMPTY: u32 = u32::MAX;

/// The bucket table (dest indices).
#[derive(Clone)]
pub struct DhScheduler {
    order: TableOrder,
    buckets: Box<[u32; TAB_SIZE]>,
}

impl std::fmt::Debug for DhScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhScheduler").finish_non_exhaustive()
    }
}

impl DhScheduler {
    /// Builds the table for `dests` (`ip_vs_dh_reassign`), cycling them in address order.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Self::with_order(dests, TableOrder::Address)
    }

    /// [`DhScheduler::new`] cycling the dests in `order` ([`TableOrder::List`]: the
    /// kernel's table for this list).
    pub fn with_order(dests: &[Arc<Dest>], order: TableOrder) -> Self {
        let mut buckets = Box::new([EMPTY; TAB_SIZE]);
        let walk = order.positions(dests);
        if !walk.is_empty() {
            for (i, b) in buckets.iter_mut().enumerate() {
                *b = walk[i % walk.len()] as u32;
            }
        }
        DhScheduler { order, buckets }
    }

    /// The table as dest indices, `None` for an empty bucket.
    pub fn table(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.buckets
            .iter()
            .map(|&b| (b != EMPTY).then_some(b as usize))
    }
}

impl Scheduler for DhScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Dh
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &SchedInput) -> Option<usize> {
        let bucket = hash_32(input.daddr.fold32(), TAB_BITS) as usize;
        let i = self.buckets[bucket] as usize;
        let d = dests.get(i)?;
        (d.is_available() && d.weight() > 0 && !d.is_overloaded()).then_some(i)
    }

    /// The kernel reassigns on add and delete only (no upd_dest hook); the table does
    /// not depend on weights, so rebuilding on an edit gives the same table.
    fn rebuild(
        &self,
        dests: &[Arc<Dest>],
        _: SvcFlags,
    ) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(DhScheduler::with_order(dests, self.order)))
    }

    fn with_flags(&self, _: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
}
