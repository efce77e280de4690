//! sh, source hashing (`ip_vs_sh.c`): a 256-bucket table filled by cycling the
//! list, each dest taking `weight` consecutive buckets (at least one); the client
//! address (plus its port with sh-port) picks the bucket.
//!
//! The kernel cycles the list in its order; xvs cycles it in address order by
//! default ([`TableOrder`]), so directors with the same dests agree.

use super::hash::hash_32;
use super::{SchedInput, Scheduler, TableOrder};
use crate::service::{Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// `IP_VS_SH_TAB_BITS`.
pub const TAB_BITS: u32 = 8;
/// Buckets in the table.
pub const TAB_SIZE: usize = 1 << TAB_BITS;
const EMPTY: u32 = u32::MAX;

/// The bucket table (dest indices) and the service flags it reads at schedule time.
#[derive(Clone)]
pub struct ShScheduler {
    flags: SvcFlags,
    order: TableOrder,
    buckets: Box<[u32; TAB_SIZE]>,
}

/// `ip_vs_sh_hashkey`: `(offset + hash_32(port + addr_fold, 8)) & 255`.
#[inline]
fn hashkey(fold: u32, port: u16, offset: u32) -> usize {
    (offset.wrapping_add(hash_32((port as u32).wrapping_add(fold), TAB_BITS)) as usize)
        & (TAB_SIZE - 1)
}

/// sh's `is_unavailable` (the AVAILABLE flag is not looked at).
#[inline]
fn unavailable(d: &Dest) -> bool {
    d.weight() <= 0 || d.is_overloaded()
}

impl std::fmt::Debug for ShScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShScheduler")
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl ShScheduler {
    /// Builds the table for `dests` (`ip_vs_sh_reassign`), using their current weights,
    /// cycling them in address order.
    pub fn new(flags: SvcFlags, dests: &[Arc<Dest>]) -> Self {
        Self::with_order(flags, dests, TableOrder::Address)
    }

    /// [`ShScheduler::new`] cycling the dests in `order` ([`TableOrder::List`]: the
    /// kernel's table for this list).
    pub fn with_order(flags: SvcFlags, dests: &[Arc<Dest>], order: TableOrder) -> Self {
        let mut buckets = Box::new([EMPTY; TAB_SIZE]);
        let walk = order.positions(dests);
        if !walk.is_empty() {
            let (mut p, mut count) = (0, 0);
            for b in buckets.iter_mut() {
                let d = walk[p];
                *b = d as u32;
                count += 1;
                if count >= dests[d].weight() {
                    p = (p + 1) % walk.len();
                    count = 0;
                }
            }
        }
        ShScheduler {
            flags,
            order,
            buckets,
        }
    }

    /// The table as dest indices, `None` for an empty bucket.
    pub fn table(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.buckets
            .iter()
            .map(|&b| (b != EMPTY).then_some(b as usize))
    }

    #[inline]
    fn at<'a>(&self, dests: &'a [Arc<Dest>], bucket: usize) -> Option<(usize, &'a Arc<Dest>)> {
        let i = self.buckets[bucket];
        dests.get(i as usize).map(|d| (i as usize, d))
    }
}

impl Scheduler for ShScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Sh
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &SchedInput) -> Option<usize> {
        let port = if self.flags.has(SvcFlags::SCHED2) {
            input.sport
        } else {
            0
        };
        let fold = input.saddr.fold32();
        let ihash = hashkey(fold, port, 0);
        let (i, d) = self.at(dests, ihash)?;
        if !unavailable(d) {
            return Some(i);
        }
        if !self.flags.has(SvcFlags::SCHED1) {
            return None;
        }
        // sh-fallback: probe from the home bucket; an empty bucket ends the search.
        for offset in 0..TAB_SIZE as u32 {
            let roffset = (offset + ihash as u32) % TAB_SIZE as u32;
            let (i, d) = self.at(dests, hashkey(fold, port, roffset))?;
            if !unavailable(d) {
                return Some(i);
            }
        }
        None
    }

    /// add, delete and edit all reassign the whole table.
    fn rebuild(
        &self,
        dests: &[Arc<Dest>],
        flags: SvcFlags,
    ) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(ShScheduler::with_order(flags, dests, self.order)))
    }

    fn with_flags(&self, flags: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(ShScheduler {
            flags,
            order: self.order,
            buckets: self.buckets.clone(),
        })
    }
}
