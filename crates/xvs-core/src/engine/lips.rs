//! FULLNAT local-address ids: which address each id of the connection table's
//! registry ([`ConnTable::register_lip`]) stands for, and when an id may be
//! given to another address.
//!
//! A FULLNAT connection carries the id of its local address, and its reply key
//! is read through it, so an id must keep its address for as long as any
//! connection holds it. An address removed from the rules is therefore only
//! *retired*: new connections no longer get it, and its id is freed once the
//! housekeeping sweep has gone over the whole table without meeting a
//! connection that holds it. The pass that frees it must have started after
//! every worker moved to rules without the address; workers switch rules at
//! their next batch, so the second complete pass after the removal is late
//! enough (a pass takes a whole housekeeping round, ~1 s in xvsd). Re-adding a
//! retired address gives it its old id back.

use crate::addr::Addr;
use crate::conn::{ConnTable, MAX_LIPS};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// The registry's bookkeeping (one per engine, under its own lock).
#[derive(Debug, Default)]
pub(crate) struct LipIds {
    /// Addresses of the rules in force, with their ids.
    active: HashMap<Addr, u16>,
    /// Removed addresses still possibly held by connections: id → (address,
    /// sweep pass that was running when it was removed).
    retired: HashMap<u16, (Addr, u64)>,
    /// Sweep passes started so far.
    pass: u64,
}

impl LipIds {
    /// Ids for the addresses of a new rule set: known addresses keep their id,
    /// others get a free one; addresses that left the rules are retired. An
    /// address that finds no free id gets none (the control plane checks room
    /// first, with [`LipIds::fits`]), and is reported in the error.
    pub(crate) fn update(
        &mut self,
        wanted: &HashSet<Addr>,
        conns: &ConnTable,
    ) -> (HashMap<Addr, u16>, Vec<Addr>) {
        let gone: Vec<Addr> = self
            .active
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for a in gone {
            if let Some(id) = self.active.remove(&a) {
                self.retired.insert(id, (a, self.pass));
            }
        }
        let mut refused = Vec::new();
        for a in wanted {
            if self.active.contains_key(a) {
                continue;
            }
            let back = self
                .retired
                .iter()
                .find(|(_, (ra, _))| ra == a)
                .map(|(id, _)| *id);
            let id = match back {
                Some(id) => {
                    self.retired.remove(&id);
                    Some(id)
                }
                None => conns.register_lip(*a),
            };
            match id {
                Some(id) => {
                    self.active.insert(*a, id);
                }
                None => refused.push(*a),
            }
        }
        (self.active.clone(), refused)
    }

    /// Whether the addresses `wanted` can all be in force at once: ids are
    /// held by them and by the retired addresses.
    pub(crate) fn fits(&self, wanted: &HashSet<IpAddr>) -> bool {
        let mut all: HashSet<Addr> = self.active.keys().copied().collect();
        all.extend(self.retired.values().map(|(a, _)| *a));
        all.extend(wanted.iter().map(|a| Addr::from(*a)));
        all.len() <= MAX_LIPS
    }

    /// A sweep pass starts; returns its number.
    pub(crate) fn start_pass(&mut self) -> u64 {
        self.pass += 1;
        self.pass
    }

    /// Sweep pass `pass` has visited the whole table and found connections
    /// holding the ids in `seen`: frees the retired ids it proves unused.
    pub(crate) fn end_pass(&mut self, pass: u64, seen: &[u64], conns: &ConnTable) {
        let held = |id: u16| seen[id as usize / 64] & (1 << (id % 64)) != 0;
        self.retired.retain(|&id, (_, since)| {
            let free = pass >= *since + 2 && !held(id);
            if free {
                conns.free_lip(id);
            }
            !free
        });
    }

    /// Ids taken, by addresses in force or retired.
    pub(crate) fn held(&self) -> usize {
        self.active.len() + self.retired.len()
    }

    /// Ids retired and not yet freed (for tests and diagnostics).
    pub(crate) fn retired(&self) -> usize {
        self.retired.len()
    }
}

/// A bitset with one bit per local-address id.
pub(crate) fn lip_bitset() -> Vec<u64> {
    vec![0; MAX_LIPS.div_ceil(64)]
}

/// Marks id `id` in a [`lip_bitset`].
#[inline]
pub(crate) fn mark(set: &mut [u64], id: u16) {
    if let Some(w) = set.get_mut(id as usize / 64) {
        *w |= 1 << (id % 64);
    }
}
