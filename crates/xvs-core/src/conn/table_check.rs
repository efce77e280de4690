//! The table's invariants, checked from the outside while no other thread
//! uses it (tests, model checks and the stress test call it between phases).

use super::super::entry::{ctl_open, Entry};
use super::super::index::{slot_dir, slot_idx, Index};
use super::super::{EntryFlags, KeyDir, Sw, TemplateRef};
use super::ConnTable;
use std::sync::atomic::Ordering::Relaxed;

impl ConnTable {
    /// Checks the table's invariants; call it only while no other thread uses
    /// the table (tests). Every live entry is indexed under each of its keys
    /// exactly once, in one of that key's two buckets; every index slot points to
    /// a live entry whose key it stands for; `live` counts exactly the live
    /// entries; every entry below the high-water mark is either live or on the
    /// free stack, and none is on it twice.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<Census, String> {
        let fresh = self.fresh.load(Relaxed) as usize;
        if fresh > self.entries.len() {
            return Err(format!("high-water mark {fresh} past the capacity"));
        }
        let sw_of = |e: &Entry| Sw::from_bits(e.sw.load(Relaxed));
        // The free stack: each entry at most once, each dead.
        let mut on_free = vec![false; self.entries.len()];
        let mut free = 0usize;
        let mut top = self.free_head.load(Relaxed) as u32;
        while top != 0 {
            let idx = (top - 1) as usize;
            if idx >= fresh {
                return Err(format!("free stack holds {idx}, never handed out"));
            }
            if on_free[idx] {
                return Err(format!("entry {idx} is on the free stack twice"));
            }
            on_free[idx] = true;
            free += 1;
            if sw_of(&self.entries[idx]).is_live() {
                return Err(format!("live entry {idx} is on the free stack"));
            }
            top = self.entries[idx].ctl.load(Relaxed) as u32;
        }
        // The index: every slot stands for a key of a live entry, once.
        let mut seen = vec![[0u32; 2]; self.entries.len()];
        for (b, bucket) in self.index.buckets().iter().enumerate() {
            for slot in &bucket.0 {
                let v = slot.load(Relaxed);
                if v == 0 {
                    continue;
                }
                let idx = slot_idx(v) as usize;
                let Some(e) = self.entries.get(idx) else {
                    return Err(format!("bucket {b}: slot {v:#x} past the entries"));
                };
                let sw = sw_of(e);
                if !sw.is_live() {
                    return Err(format!("bucket {b}: orphan slot {v:#x} (entry {idx} dead)"));
                }
                let dir = slot_dir(v);
                if dir == KeyDir::Out && !sw.flags().contains(EntryFlags::HAS_OUT) {
                    return Err(format!(
                        "bucket {b}: reply slot for entry {idx} without one"
                    ));
                }
                let key = match dir {
                    KeyDir::In => self.in_key_of(e),
                    KeyDir::Out => self.out_key_of(e, sw.flags()),
                };
                let h = self.hash(&key);
                let (b1, b2) = self.index.buckets_of(h);
                if (b != b1 && b != b2) || (v >> 32) as u32 != Index::tag_of(h, dir) {
                    return Err(format!(
                        "bucket {b}: slot {v:#x} does not stand for entry {idx}'s key"
                    ));
                }
                seen[idx][(dir == KeyDir::Out) as usize] += 1;
            }
        }
        // Connections counted on each template, from their references.
        let mut held = vec![0u64; self.entries.len()];
        let mut live = 0usize;
        for (idx, e) in self.entries[..fresh].iter().enumerate() {
            let sw = sw_of(e);
            let is_live = sw.is_live();
            if is_live == on_free[idx] {
                return Err(format!(
                    "entry {idx} is {} and {} the free stack",
                    if is_live { "live" } else { "dead" },
                    if on_free[idx] { "on" } else { "not on" }
                ));
            }
            if !is_live {
                if seen[idx] != [0, 0] {
                    return Err(format!("dead entry {idx} is indexed"));
                }
                continue;
            }
            live += 1;
            if sw.flags().contains(EntryFlags::OUT_PENDING) {
                return Err(format!("live entry {idx}'s reply key was never completed"));
            }
            let r = TemplateRef::from_bits(e.control.load(Relaxed));
            if let Some(t) = r.idx() {
                let tsw = self.entries.get(t as usize).map(sw_of);
                match tsw {
                    Some(tsw)
                        if tsw.is_live() && tsw.gen() == r.gen() && tsw.flags().is_template() =>
                    {
                        held[t as usize] += 1
                    }
                    _ => return Err(format!("entry {idx} refers to a gone template {r:?}")),
                }
            }
            let want_out = sw.flags().contains(EntryFlags::HAS_OUT) as u32;
            if seen[idx] != [1, want_out] {
                return Err(format!(
                    "live entry {idx} is indexed {}/{} times (want 1/{want_out})",
                    seen[idx][0], seen[idx][1]
                ));
            }
        }
        for (idx, e) in self.entries[..fresh].iter().enumerate() {
            let sw = sw_of(e);
            if sw.is_live() && sw.flags().is_template() {
                let c = e.ctl.load(Relaxed);
                if c != ctl_open(sw.gen()) | held[idx] {
                    return Err(format!(
                        "template {idx} has ctl {c:#x}, {} connections refer to it",
                        held[idx]
                    ));
                }
            }
        }
        for (idx, e) in self.entries[fresh..].iter().enumerate() {
            if e.sw.load(Relaxed) != 0 {
                return Err(format!(
                    "entry {} past the high-water mark was used",
                    fresh + idx
                ));
            }
        }
        let counted = self.live.load(Relaxed) as usize;
        if counted != live {
            return Err(format!("live counts {counted}, the table holds {live}"));
        }
        Ok(Census { live, free, fresh })
    }
}

/// What [`ConnTable::check_invariants`] counted.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Live entries (all of them reachable from the index).
    pub live: usize,
    /// Entries on the free stack.
    pub free: usize,
    /// Entries ever handed out (the high-water mark).
    pub fresh: usize,
}
