//! mh, Maglev hashing (`ip_vs_mh.c`): a prime-sized lookup table where every dest
//! fills slots along its own permutation (offset, skip from hsiphash of its address
//! and port), `turns` slots per round in proportion to its last non-zero weight; the
//! client address (plus its port with mh-port) picks the slot.
//!
//! The kernel walks the dest list in its order to fill the table, so the table
//! depends on the order the dests were added in; xvs walks it in address order
//! by default ([`TableOrder`]), which gives every director with the same dests
//! the same table (mid-flow pickup behind ECMP, docs/ECMP.md).

use super::hash::{fold_dest, hsiphash_1u32, MH_HASH1, MH_HASH2};
use super::{SchedInput, Scheduler, TableOrder};
use crate::service::{Af, Dest, SchedKind, ServiceError, SvcFlags};
use std::sync::Arc;

/// The table sizes the kernel offers (`primes[]`, chosen by `CONFIG_IP_VS_MH_TAB_INDEX` 8..17).
pub const PRIMES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];
/// The kernel default (`CONFIG_IP_VS_MH_TAB_INDEX` 12).
pub const DEFAULT_TABLE_SIZE: u32 = 4093;
const EMPTY: u32 = u32::MAX;

/// The lookup table (dest indices) and the service flags it reads at schedule time.
#[derive(Clone)]
pub struct MhScheduler {
    flags: SvcFlags,
    af: Option<Af>,
    size: u32,
    order: TableOrder,
    lookup: Arc<[u32]>,
}

/// `ip_vs_mh_hashkey` with the address already folded: `hsiphash(offset + port + fold)`.
#[inline]
fn hashkey(fold: u32, port: u16, key: &[u64; 2], offset: u32) -> u32 {
    hsiphash_1u32(offset.wrapping_add(port as u32).wrapping_add(fold), key)
}

/// mh's `is_unavailable` (the AVAILABLE flag is not looked at).
#[inline]
fn unavailable(d: &Dest) -> bool {
    d.weight() <= 0 || d.is_overloaded()
}

fn gcd(mut a: i32, mut b: i32) -> i32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `fls`: 1-based index of the highest set bit, 0 for 0.
fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

impl std::fmt::Debug for MhScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MhScheduler")
            .field("flags", &self.flags)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl MhScheduler {
    /// Builds the table for `dests` (`ip_vs_mh_init_svc`), filled in address order.
    /// `table_size` must be one of [`PRIMES`]; more dests than slots is EINVAL, as in
    /// the kernel. `af` is the service's family, which decides how a dest address is
    /// folded for hashing.
    pub fn new(
        flags: SvcFlags,
        dests: &[Arc<Dest>],
        table_size: u32,
        af: Option<Af>,
    ) -> Result<Self, ServiceError> {
        Self::with_order(flags, dests, table_size, af, TableOrder::Address)
    }

    /// [`MhScheduler::new`] with the dests taken in `order` to fill the table
    /// ([`TableOrder::List`]: exactly the kernel's table for this list).
    pub fn with_order(
        flags: SvcFlags,
        dests: &[Arc<Dest>],
        table_size: u32,
        af: Option<Af>,
        order: TableOrder,
    ) -> Result<Self, ServiceError> {
        let index = PRIMES
            .iter()
            .position(|&p| p == table_size)
            .ok_or(ServiceError::Invalid)?;
        if dests.len() > table_size as usize {
            return Err(ServiceError::Invalid);
        }
        // IP_VS_MH_TAB_BITS = CONFIG_IP_VS_MH_TAB_INDEX / 2, the weight shift's reference.
        let bits = (index as u32 + 8) / 2;
        let lookup = populate(dests, &order.positions(dests), table_size, bits, af).into();
        Ok(MhScheduler {
            flags,
            af,
            size: table_size,
            order,
            lookup,
        })
    }

    /// The table as dest indices, `None` for an empty slot.
    pub fn table(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.lookup
            .iter()
            .map(|&b| (b != EMPTY).then_some(b as usize))
    }

    /// The lookup table's size (a prime).
    pub fn table_size(&self) -> u32 {
        self.size
    }

    #[inline]
    fn at<'a>(&self, dests: &'a [Arc<Dest>], slot: u32) -> Option<(usize, &'a Arc<Dest>)> {
        let i = self.lookup[slot as usize] as usize;
        dests.get(i).map(|d| (i, d))
    }
}

/// `ip_vs_mh_permutate` + `ip_vs_mh_populate`, walking `dests` in the order of
/// `walk` (positions in `dests`; the kernel's walk is 0, 1, 2, ...). The table
/// holds positions in `dests`.
fn populate(dests: &[Arc<Dest>], walk: &[usize], m: u32, bits: u32, af: Option<Af>) -> Vec<u32> {
    let mut lookup = vec![EMPTY; m as usize];
    let g = dests
        .iter()
        .map(|d| d.last_weight())
        .filter(|&w| w > 0)
        .fold(0, |g, w| if g > 0 { gcd(w, g) } else { w });
    // gcd < 1: no dest or every last_weight 0, the table stays empty.
    if g < 1 {
        return lookup;
    }
    let maxw = dests.iter().map(|d| d.last_weight()).fold(0, i32::max);
    let rshift = (fls((maxw / g) as u32) as i32 - bits as i32).max(0) as u32;

    struct Setup {
        index: u32,
        skip: u32,
        perm: u32,
        turns: i32,
    }
    let mut setup: Vec<Setup> = walk
        .iter()
        .map(|&i| {
            let d = &dests[i];
            let fold = fold_dest(&d.addr, af);
            let offset = hashkey(fold, d.port, &MH_HASH1, 0) % m;
            let skip = hashkey(fold, d.port, &MH_HASH2, 0) % (m - 1) + 1;
            let lw = d.last_weight();
            let t = (lw / g) >> rshift;
            Setup {
                index: i as u32,
                skip,
                perm: offset,
                turns: if t != 0 { t } else { (lw != 0) as i32 },
            }
        })
        .collect();

    let mut taken = vec![false; m as usize];
    let (mut n, mut dt_count) = (0u32, 0);
    // Rounds over the list; each dest takes `turns` slots per round at the next free
    // position of its permutation. Some dest has turns >= 1 (g >= 1), so this ends.
    loop {
        let mut p = 0;
        while p < setup.len() {
            let ds = &mut setup[p];
            if ds.turns < 1 {
                p += 1;
                continue;
            }
            while taken[ds.perm as usize] {
                ds.perm += ds.skip;
                if ds.perm >= m {
                    ds.perm -= m;
                }
            }
            taken[ds.perm as usize] = true;
            lookup[ds.perm as usize] = ds.index;
            n += 1;
            if n == m {
                return lookup;
            }
            dt_count += 1;
            if dt_count >= ds.turns {
                dt_count = 0;
                p += 1;
            }
        }
    }
}

impl Scheduler for MhScheduler {
    fn kind(&self) -> SchedKind {
        SchedKind::Mh
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &SchedInput) -> Option<usize> {
        let port = if self.flags.has(SvcFlags::SCHED2) {
            input.sport
        } else {
            0
        };
        let fold = input.saddr.fold32();
        let ihash = hashkey(fold, port, &MH_HASH1, 0) % self.size;
        let (i, d) = self.at(dests, ihash)?;
        if !unavailable(d) {
            return Some(i);
        }
        if !self.flags.has(SvcFlags::SCHED1) {
            return None;
        }
        // mh-fallback: rehash with growing offsets; an empty slot ends the search.
        for offset in 0..self.size {
            let roffset = (offset + ihash) % self.size;
            let slot = hashkey(fold, port, &MH_HASH1, roffset) % self.size;
            let (i, d) = self.at(dests, slot)?;
            if !unavailable(d) {
                return Some(i);
            }
        }
        None
    }

    /// add, delete and edit all repopulate the table (from last weights, so a dest
    /// quiesced with weight 0 keeps its slots).
    fn rebuild(
        &self,
        dests: &[Arc<Dest>],
        flags: SvcFlags,
    ) -> Result<Box<dyn Scheduler>, ServiceError> {
        Ok(Box::new(MhScheduler::with_order(
            flags, dests, self.size, self.af, self.order,
        )?))
    }

    fn with_flags(&self, flags: SvcFlags) -> Box<dyn Scheduler> {
        Box::new(MhScheduler {
            flags,
            ..self.clone()
        })
    }

    fn dest_limit(&self) -> usize {
        self.size as usize
    }
}
