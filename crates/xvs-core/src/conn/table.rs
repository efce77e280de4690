//! The connection table shared by all workers: preallocated, bounded, lock-free.
//!
//! Layout, chosen for ≤ 128 bytes per connection (10M conns < 1.5 GiB):
//! - `entries` (`entry.rs`): `conn_max` fixed 96-byte entries. Every field is
//!   an atomic, so a reader racing a writer sees stale or fresh values, never
//!   undefined ones.
//! - `index` (`index.rs`): buckets of 8 `u64` slots (one cache line), `(tag << 32) | (idx + 1)`,
//!   at 50 % load (32 bytes per connection). A key goes to its first bucket when
//!   that has room (95 % of keys), else to its second, else a resident of one of
//!   them is moved from its first bucket to its second (cuckoo displacement), so
//!   a lookup usually reads one cache line and an insert practically never
//!   fails. Each connection has one key per direction it is looked up in
//!   (client→VIP, and for NAT/FULLNAT the reply direction); the tag's low bit
//!   says which.
//!
//! # Concurrency
//!
//! **The `sw` word** ([`Sw`]). Everything about a connection that changes while it lives
//! is in one word: a 16-bit generation (odd = live), the flags, the state, the
//! count of inbound packets (to 15, for drop_entry) and the expiry tick. Every change of a live entry (state transition, refresh, removal)
//! is a compare-and-swap of `sw` against the value the changer last read, so of
//! two racing changes exactly one wins and the loser learns it: a refresh racing
//! the sweep's removal either lands (and the removal fails) or finds the entry
//! gone; two workers seeing the two directions of one connection never both
//! account one transition; a change through a stale view of a freed or reused
//! entry fails on the generation. A refresh costs one compare-and-swap, and only
//! when the expiry tick (or the state) actually changes.
//!
//! **Seqlock.** The other fields never change while an entry lives. A reader
//! loads `sw` (Acquire), reads the fields, `fence(Acquire)`, and loads `sw`
//! again; it keeps the copy only if the generation is live and unchanged. The
//! writer publishes an entry with a Release store of `sw` after the fields, and
//! before it writes the fields of a reused entry it issues `fence(Release)`; the
//! entry is already dead then (its remover's kill happens-before, through the
//! free stack's Release push and Acquire pop). So a reader that saw any field of
//! the new connection synchronises, fence to fence, with the writer, and its
//! second load sees at least the dead generation: a torn copy is always
//! rejected. (The generation wraps after 32768 reuses of one entry; a reader
//! would have to stall across all of them.)
//!
//! **Insert: index, then publish.** An entry is indexed under its keys while its
//! generation is still even, then published by the store that makes it odd.
//! Lookups, the sweep and displacements ignore even entries, so nobody can
//! remove an entry that is still being indexed, and an insert that finds no
//! index room takes its slots back and returns the entry to the free stack
//! alone, exactly once.
//!
//! **Deferred reply key.** A worker may publish a new NAT connection with its
//! client key only ([`ConnTable::insert_deferred`], flag `OUT_PENDING`) and
//! index the reply key at the end of its burst ([`ConnTable::complete_out`]),
//! before the burst's frames are sent, so no reply can miss it. The inserter
//! owns the reply key until it clears the flag with a CAS of `sw`. A removal
//! that kills an entry still pending removes only the client key; the
//! completion then finds the generation changed and removes the reply key
//! itself. Each of the two then adds one to the entry's `ctl` word (0 for a
//! connection) and the second pushes the entry on the free stack, so the
//! entry's next life starts only after both are done with its slots.
//!
//! **Removal** kills the generation (CAS), then removes the entry's slots, then
//! pushes the entry on the free stack (a Treiber stack with an ABA tag in the
//! head word; the link lives in the dead entry's `ctl` word). Only the thread
//! whose kill succeeded does the rest, so an entry is pushed once per life.
//!
//! **Displacement never hides a key.** Lookups read a key's first bucket, then
//! its second. A displacement only moves a resident from its first bucket to
//! its second, and copies it there before it swaps the original slot for the
//! new key. A lookup that misses the resident in its first bucket has read the
//! swap (or a later value: every write of a slot is a read-modify-write, so it
//! continues the swap's release sequence), so it synchronises with the
//! displacer and finds the copy in the second bucket, where the resident stays
//! for the rest of its life. Two displacers moving one resident each copy it;
//! the one whose swap fails takes one copy back, as does a displacer whose
//! resident was removed meanwhile (the remover reads the first bucket with
//! Acquire, so it either clears the original or sees the swap and the copy).
//!
//! **Templates** count the connections they control in their `ctl` word
//! together with their generation. A connection holds a counted
//! [`TemplateRef`] (entry and generation) taken with [`ConnTable::hold`], which
//! fails for a template that was freed or reused. Removing a template first
//! closes its count with a CAS that succeeds only at zero (from then on `hold`
//! fails), then kills it; if the kill loses, the count is reopened. So a template
//! that controls connections is never removed, and a connection never counts
//! itself on a template that is going.
//!
//! Expiry needs no per-connection timer: lookups ignore entries whose expiry tick
//! has passed (so packets see exact timeouts), and the engine's housekeeping sweeps
//! the entries in slices to free them and settle the dest counters
//! ([`ConnTable::scan`]); the sweep's pace bounds how late counters settle. The
//! model checks in `table_loom.rs` (`make loom`) explore these protocols on a
//! table of a few entries.

use super::entry::{
    addr_eq, ctl_open, gen_next, load_addr, store_addr, Entry, CTL_CLOSED, CTL_COUNT,
};
use super::index::{slot_dir, slot_idx, Index, BUCKET_SLOTS};
use super::{ConnKey, ConnView, EntryFlags, EntryState, KeyDir, NewConn, Sw, TemplateRef};
use crate::addr::Addr;
use crate::service::FwdMethod;
use crate::time::{tick_after, Tick};
// The atomics come from loom in the model checks (`RUSTFLAGS="--cfg loom"`).
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// Target load of the index: slots = keys / LOAD. At one half, a key's first
/// bucket has room 95 % of the time, so a lookup usually reads one bucket.
const INDEX_LOAD: f64 = 0.5;
/// Maximum number of FULLNAT local addresses (a few in the model checks, where
/// every atomic costs).
pub const MAX_LIPS: usize = if cfg!(loom) { 4 } else { 4096 };

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// `conn_max` entries are live.
    Full,
    /// Both candidate index buckets of a key are full (practically never at 80 % load).
    IndexFull,
}

/// A connection whose reply key [`ConnTable::insert_deferred`] left to
/// [`ConnTable::complete_out`]: its entry, generation and the reply key's hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingOut {
    idx: u32,
    gen: u32,
    hash: u64,
}

impl PendingOut {
    /// The connection's entry index.
    #[inline]
    pub fn idx(&self) -> u32 {
        self.idx
    }
}

/// What [`ConnTable::complete_out`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum OutDone {
    /// The reply key is indexed: the connection is complete.
    Indexed,
    /// The connection was removed meanwhile (its remover did the accounting).
    Gone,
    /// No index room for the reply key: the connection, whose word was this,
    /// is removed; the caller undoes its accounting as after
    /// [`ConnTable::remove`].
    IndexFull(Sw),
}

/// The connection table. See the module documentation for the design.
pub struct ConnTable {
    entries: Box<[Entry]>,
    index: Index,
    /// Free stack head: ABA tag << 32 | (idx + 1).
    free_head: AtomicU64,
    /// Entries never used yet are handed out in order from here.
    fresh: AtomicU32,
    live: AtomicU32,
    lips: Box<[[AtomicU64; 2]]>,
    lip_count: AtomicU32,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("conn_max", &self.entries.len())
            .field("live", &self.live())
            .finish()
    }
}

impl ConnTable {
    /// A table for `conn_max` connections; `seed` keys the hash (pass random bytes
    /// so that nobody can aim packets at one bucket).
    pub fn new(conn_max: u32, seed: [u64; 4]) -> ConnTable {
        let keys = conn_max.max(1) as f64 * 2.0;
        let nbuckets = ((keys / INDEX_LOAD) as usize).div_ceil(BUCKET_SLOTS).max(2);
        Self::with_buckets(conn_max, nbuckets, seed)
    }

    /// A table with exactly `nbuckets` index buckets, for tests that want a
    /// crowded index (displacements, `IndexFull`) or a tiny one (model checks).
    #[doc(hidden)]
    pub fn with_buckets(conn_max: u32, nbuckets: usize, seed: [u64; 4]) -> ConnTable {
        let conn_max = conn_max.max(1) as usize;
        // The index first: it is read before written, so it benefits most from
        // being faulted in early (see xvs-mem).
        let index = Index::new(nbuckets, seed);
        ConnTable {
            entries: (0..conn_max).map(|_| Entry::default()).collect(),
            index,
            free_head: AtomicU64::new(0),
            fresh: AtomicU32::new(0),
            live: AtomicU32::new(0),
            lips: (0..MAX_LIPS).map(|_| Default::default()).collect(),
            lip_count: AtomicU32::new(0),
        }
    }

    /// Maximum number of live connections.
    pub fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Live connections and templates.
    pub fn live(&self) -> u32 {
        self.live.load(Relaxed)
    }

    /// Bytes of memory the table holds (entries + index + free structures).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries) + self.index.memory_bytes()
    }

    /// Bytes per connection slot.
    pub fn bytes_per_conn(&self) -> f64 {
        self.memory_bytes() as f64 / self.entries.len() as f64
    }

    /// Registers a FULLNAT local address and returns its id: the same id if it is
    /// registered, else the lowest freed one, else a new one; None when all
    /// [`MAX_LIPS`] ids are taken. The unspecified address marks a free id and
    /// is never registered. Only the control plane registers and frees, one
    /// call at a time (the engine's lock).
    pub fn register_lip(&self, addr: Addr) -> Option<u16> {
        if addr == Addr::UNSPECIFIED {
            return None;
        }
        let n = self.lip_count.load(Acquire) as usize;
        if let Some(i) = (0..n).find(|&i| load_addr(&self.lips[i]) == addr) {
            return Some(i as u16);
        }
        if let Some(i) = (0..n).find(|&i| load_addr(&self.lips[i]) == Addr::UNSPECIFIED) {
            store_addr(&self.lips[i], &addr);
            return Some(i as u16);
        }
        if n >= MAX_LIPS {
            return None;
        }
        // Publish the address before the count.
        store_addr(&self.lips[n], &addr);
        self.lip_count.store(n as u32 + 1, Release);
        Some(n as u16)
    }

    /// Frees local address id `id` for [`ConnTable::register_lip`]. The caller
    /// guarantees that no connection holds it any more (their reply keys are
    /// read through it).
    pub fn free_lip(&self, id: u16) {
        if let Some(l) = self.lips.get(id as usize) {
            store_addr(l, &Addr::UNSPECIFIED);
        }
    }

    /// The address of local address id `id`.
    #[inline]
    pub fn lip(&self, id: u16) -> Addr {
        self.lips
            .get(id as usize)
            .map(load_addr)
            .unwrap_or(Addr::UNSPECIFIED)
    }

    /// The hash of a key (for [`ConnTable::prefetch`] and [`ConnTable::lookup_hashed`]):
    /// three independent multiply-folds of the key words with the table's secret
    /// seeds, so a sender cannot aim keys at one bucket.
    #[inline]
    pub fn hash(&self, key: &ConnKey) -> u64 {
        self.index.hash(key)
    }

    /// A hash's two buckets (for the model checks' choice of keys).
    #[cfg(all(test, loom))]
    fn buckets_of(&self, h: u64) -> (usize, usize) {
        self.index.buckets_of(h)
    }

    /// Asks the CPU to load the first index bucket of a hash, without waiting
    /// (batching hides the miss).
    #[inline]
    pub fn prefetch(&self, h: u64) {
        let (b1, _) = self.index.buckets_of(h);
        xvs_mem::prefetch(&self.index.buckets()[b1]);
    }

    /// Once [`ConnTable::prefetch`] has brought the first bucket in: prefetches
    /// the entry (both of its cache lines) its slot points at, or the second
    /// bucket when the first has no slot with the key's tag.
    #[inline]
    pub fn prefetch_entry(&self, h: u64) {
        let (b1, b2) = self.index.buckets_of(h);
        let buckets = self.index.buckets();
        let tag = Index::tag_of(h, KeyDir::In) >> 1;
        for s in &buckets[b1].0 {
            let v = s.load(Relaxed);
            if v != 0 && (v >> 33) as u32 == tag {
                if let Some(e) = self.entries.get(slot_idx(v) as usize) {
                    xvs_mem::prefetch(&e.sw);
                    xvs_mem::prefetch(&e.meta);
                }
                return;
            }
        }
        xvs_mem::prefetch(&buckets[b2]);
    }

    /// Prefetches the first bucket of the reply-direction key `c` will be
    /// indexed under (if it has one), so that [`ConnTable::insert`] finds it
    /// in cache: the request key's buckets were brought in by the lookup
    /// that missed, the reply key's are cold.
    #[inline]
    pub fn prefetch_insert(&self, c: &NewConn) {
        if !c.flags.contains(EntryFlags::HAS_OUT) {
            return;
        }
        let (daddr, dport) = if c.flags.contains(EntryFlags::FULLNAT) {
            (self.lip(c.lip), c.lport)
        } else {
            (c.caddr, c.cport)
        };
        let key = ConnKey {
            proto: c.proto,
            saddr: c.daddr,
            sport: c.dport,
            daddr,
            dport,
        };
        self.prefetch(self.index.hash(&key));
    }

    /// Finds the live connection one of whose keys is `key`, ignoring connections
    /// whose expiry tick is before `now` (they only wait for the sweep). A
    /// template past its expiry is found while it controls connections: the
    /// kernel's timer would have re-armed it (`ip_vs_conn_expire`).
    #[inline]
    pub fn lookup(&self, key: &ConnKey, now: Tick) -> Option<(ConnView, KeyDir)> {
        self.lookup_hashed(key, self.hash(key), now)
    }

    /// [`ConnTable::lookup`] with the hash already computed.
    #[inline]
    pub fn lookup_hashed(&self, key: &ConnKey, h: u64, now: Tick) -> Option<(ConnView, KeyDir)> {
        let (b1, b2) = self.index.buckets_of(h);
        let tag = Index::tag_of(h, KeyDir::In) >> 1;
        for b in [b1, b2] {
            // Which slots carry our tag, without a branch per slot (an empty slot
            // never matches: tags have their high bit set).
            let slots = &self.index.buckets()[b].0;
            let mut mask = 0u32;
            for (i, s) in slots.iter().enumerate() {
                mask |= (((s.load(Acquire) >> 33) as u32 == tag) as u32) << i;
            }
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let v = slots[i].load(Acquire);
                if (v >> 33) as u32 != tag {
                    continue;
                }
                let dir = slot_dir(v);
                let idx = slot_idx(v);
                if let Some(view) = self.read_if(idx, key, dir) {
                    let fl = view.flags();
                    if tick_after(now, view.expires())
                        && (!fl.is_template() || self.n_control(idx) == 0)
                    {
                        continue;
                    }
                    if fl.contains(EntryFlags::DEAD_TEMPLATE) {
                        continue;
                    }
                    return Some((view, dir));
                }
            }
            if b1 == b2 {
                break;
            }
        }
        None
    }

    /// Reads entry `idx` if it is live and its `dir` key equals `key`.
    #[inline(always)]
    fn read_if(&self, idx: u32, key: &ConnKey, dir: KeyDir) -> Option<ConnView> {
        let e = self.entries.get(idx as usize)?;
        let sw1 = Sw::from_bits(e.sw.load(Acquire));
        if !sw1.is_live() {
            return None;
        }
        let ports = e.ports.load(Relaxed);
        let meta = e.meta.load(Relaxed);
        let (cport, vport, dport, lport) = (
            ports as u16,
            (ports >> 16) as u16,
            (ports >> 32) as u16,
            (ports >> 48) as u16,
        );
        if meta as u8 != key.proto {
            return None;
        }
        let ok = match dir {
            KeyDir::In => {
                cport == key.sport
                    && vport == key.dport
                    && addr_eq(&e.caddr, &key.saddr)
                    && addr_eq(&e.vaddr, &key.daddr)
            }
            KeyDir::Out => {
                let fullnat = sw1.flags().contains(EntryFlags::FULLNAT);
                dport == key.sport
                    && addr_eq(&e.daddr, &key.saddr)
                    && if fullnat {
                        lport == key.dport && self.lip((meta >> 16) as u16) == key.daddr
                    } else {
                        cport == key.dport && addr_eq(&e.caddr, &key.daddr)
                    }
            }
        };
        if !ok {
            return None;
        }
        let mut view = ConnView {
            idx,
            sw: sw1,
            proto: meta as u8,
            caddr: load_addr(&e.caddr),
            cport,
            vaddr: load_addr(&e.vaddr),
            vport,
            daddr: load_addr(&e.daddr),
            dport,
            lip: (meta >> 16) as u16,
            lport,
            fwd: FwdMethod::from_conn_flag((meta >> 8) as u8),
            svc_id: (meta >> 32) as u32,
            dest_id: e.dest_id.load(Relaxed),
            control: TemplateRef::from_bits(e.control.load(Relaxed)),
            timeout: e.timeout.load(Relaxed),
        };
        // Seqlock close (module documentation): the fields only change with
        // the generation. The second load is the fresher word of the same life.
        fence(Acquire);
        let sw2 = Sw::from_bits(e.sw.load(Relaxed));
        if sw2.gen() != sw1.gen() {
            return None;
        }
        view.sw = sw2;
        Some(view)
    }

    /// Reads entry `idx` if it is live (for listings and the expiry wheel).
    pub fn read(&self, idx: u32) -> Option<ConnView> {
        let e = self.entries.get(idx as usize)?;
        if !Sw::from_bits(e.sw.load(Acquire)).is_live() {
            return None;
        }
        let key = self.in_key_of(e);
        self.read_if(idx, &key, KeyDir::In)
    }

    fn in_key_of(&self, e: &Entry) -> ConnKey {
        let ports = e.ports.load(Relaxed);
        ConnKey {
            proto: e.meta.load(Relaxed) as u8,
            saddr: load_addr(&e.caddr),
            sport: ports as u16,
            daddr: load_addr(&e.vaddr),
            dport: (ports >> 16) as u16,
        }
    }

    fn out_key_of(&self, e: &Entry, fl: EntryFlags) -> ConnKey {
        let ports = e.ports.load(Relaxed);
        let meta = e.meta.load(Relaxed);
        let (daddr, dport) = if fl.contains(EntryFlags::FULLNAT) {
            (self.lip((meta >> 16) as u16), (ports >> 48) as u16)
        } else {
            (load_addr(&e.caddr), ports as u16)
        };
        ConnKey {
            proto: meta as u8,
            saddr: load_addr(&e.daddr),
            sport: (ports >> 32) as u16,
            daddr,
            dport,
        }
    }

    /// The key an index slot value stands for, read under its entry's
    /// generation check (None when the entry is not live or changed life).
    fn resident_key(&self, v: u64) -> Option<ConnKey> {
        let e = self.entries.get(slot_idx(v) as usize)?;
        let sw = Sw::from_bits(e.sw.load(Acquire));
        if !sw.is_live() {
            return None;
        }
        let key = match slot_dir(v) {
            KeyDir::Out => self.out_key_of(e, sw.flags()),
            KeyDir::In => self.in_key_of(e),
        };
        fence(Acquire);
        if Sw::from_bits(e.sw.load(Relaxed)).gen() != sw.gen() {
            return None;
        }
        Some(key)
    }

    /// The current expiry tick of entry `idx`.
    #[inline]
    pub fn expires(&self, idx: u32) -> Tick {
        self.sw(idx).expires()
    }

    /// The `sw` word of entry `idx` now.
    #[inline]
    pub fn sw(&self, idx: u32) -> Sw {
        Sw::from_bits(self.entries[idx as usize].sw.load(Acquire))
    }

    /// Sets state, flags and expiry if the entry still holds `expected`; returns
    /// the new word, or the word found. Only one of racing changes wins.
    #[inline]
    pub fn update(
        &self,
        idx: u32,
        expected: Sw,
        state: EntryState,
        fl: EntryFlags,
        expires: Tick,
    ) -> Result<Sw, Sw> {
        self.replace(idx, expected, expected.with(state, fl, expires))
    }

    /// Replaces the entry's word `expected` by `new` (of the same generation);
    /// returns the word found if another change came first.
    #[inline]
    pub fn replace(&self, idx: u32, expected: Sw, new: Sw) -> Result<Sw, Sw> {
        debug_assert_eq!(expected.gen(), new.gen());
        if !expected.is_live() {
            return Err(expected);
        }
        self.entries[idx as usize]
            .sw
            .compare_exchange(expected.bits(), new.bits(), Relaxed, Relaxed)
            .map(|_| new)
            .map_err(Sw::from_bits)
    }

    /// Changes the connection seen as `seen` (any word of its life) to
    /// `f(current word)`, retrying while others change it; `f` returning None
    /// leaves it as it is. Returns the word written, or None when `f` declined
    /// or the connection is gone.
    pub fn modify(&self, idx: u32, seen: Sw, f: impl Fn(Sw) -> Option<Sw>) -> Option<Sw> {
        let mut cur = seen;
        loop {
            if cur.gen() != seen.gen() || !cur.is_live() {
                return None;
            }
            let new = f(cur)?;
            if new == cur {
                return Some(new);
            }
            match self.replace(idx, cur, new) {
                Ok(w) => return Some(w),
                Err(now) => cur = now,
            }
        }
    }

    /// Changes state and flags if the entry still holds `expected` (same generation,
    /// state, flags and expiry). Only the winner of a race sees `true` and
    /// accounts the change.
    #[inline]
    pub fn cas_state(&self, idx: u32, expected: Sw, state: EntryState, fl: EntryFlags) -> bool {
        self.update(idx, expected, state, fl, expected.expires())
            .is_ok()
    }

    /// Sets the expiry of the connection seen as `seen` (any word of its life),
    /// retrying while others change its state; false once it is gone (removed
    /// by the sweep, maybe reused).
    pub fn refresh(&self, idx: u32, seen: Sw, expires: Tick) -> bool {
        let mut cur = seen;
        loop {
            if cur.gen() != seen.gen() || !cur.is_live() {
                return false;
            }
            if cur.expires() == expires {
                return true;
            }
            match self.replace(idx, cur, cur.with_expires(expires)) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Counts one more connection on the template seen as `t`, for it to store
    /// in [`NewConn::control`]. None if the template has been (or is being)
    /// removed since the view was taken: the caller then needs another.
    pub fn hold(&self, t: &ConnView) -> Option<TemplateRef> {
        let e = self.entries.get(t.idx as usize)?;
        let gen = t.sw.gen();
        if !t.flags().is_template() || !t.sw.is_live() {
            return None;
        }
        let mut c = e.ctl.load(Relaxed);
        loop {
            // A closed count (removal deciding), another owner (freed, reused)
            // or a free-stack link all fail here.
            if c & !CTL_COUNT != ctl_open(gen) || c & CTL_COUNT == CTL_COUNT {
                return None;
            }
            match e.ctl.compare_exchange_weak(c, c + 1, Relaxed, Relaxed) {
                Ok(_) => return Some(TemplateRef::new(t.idx, gen)),
                Err(x) => c = x,
            }
        }
    }

    /// Gives back a count taken with [`ConnTable::hold`] (the connection that
    /// held it is gone, or was never inserted).
    pub fn release(&self, r: TemplateRef) {
        let Some(e) = r.idx().and_then(|i| self.entries.get(i as usize)) else {
            return;
        };
        let mut c = e.ctl.load(Relaxed);
        loop {
            // A held template cannot be removed, so its count is open and ours.
            if c & !CTL_COUNT != ctl_open(r.gen()) || c & CTL_COUNT == 0 {
                debug_assert!(false, "release of {r:?} finds ctl {c:#x}");
                return;
            }
            match e.ctl.compare_exchange_weak(c, c - 1, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(x) => c = x,
            }
        }
    }

    /// A consistent copy of the template a connection holds `r` on, if it is
    /// still that template (it is, while the count is held).
    pub fn template(&self, r: TemplateRef) -> Option<ConnView> {
        let v = self.read(r.idx()?)?;
        (v.sw.gen() == r.gen() && v.flags().is_template()).then_some(v)
    }

    /// Marks the template `r` ASSURED (`ip_vs_control_assure_ct`: one of its
    /// connections reached ESTABLISHED). A state change of the template's
    /// word, so it races refreshes and removals like any other.
    pub fn assure(&self, r: TemplateRef) {
        let Some(idx) = r.idx() else {
            return;
        };
        let Some(e) = self.entries.get(idx as usize) else {
            return;
        };
        let seen = Sw::from_bits(e.sw.load(Relaxed));
        if seen.gen() != r.gen() || !seen.flags().is_template() {
            return;
        }
        let assured = EntryState::Template { assured: true };
        self.modify(idx, seen, |sw| {
            (sw.state() != assured).then(|| sw.with(assured, sw.flags(), sw.expires()))
        });
    }

    /// Connections the template in entry `idx` controls (0 for other entries).
    pub fn n_control(&self, idx: u32) -> u32 {
        let e = &self.entries[idx as usize];
        let sw = Sw::from_bits(e.sw.load(Relaxed));
        let c = e.ctl.load(Relaxed);
        if sw.is_live() && sw.flags().is_template() && c >> 32 & 0xffff == sw.gen() as u64 {
            (c & CTL_COUNT) as u32
        } else {
            0
        }
    }

    fn alloc(&self) -> Option<u32> {
        loop {
            let head = self.free_head.load(Acquire);
            let top = head as u32;
            if top == 0 {
                break;
            }
            let idx = top - 1;
            // May be garbage if the entry was taken and reused meanwhile; then
            // the head's tag has changed and the exchange fails.
            let next = self.entries[idx as usize].ctl.load(Relaxed) as u32;
            let new = ((head >> 32).wrapping_add(1) << 32) | next as u64;
            if self
                .free_head
                .compare_exchange_weak(head, new, Acquire, Relaxed)
                .is_ok()
            {
                // The next insert's entry: its first read (this `ctl`, then
                // `sw`) misses otherwise, a packet from now.
                if let Some(e) = (next as usize)
                    .checked_sub(1)
                    .and_then(|i| self.entries.get(i))
                {
                    xvs_mem::prefetch(&e.sw);
                }
                return Some(idx);
            }
        }
        let n = self.entries.len() as u32;
        self.fresh
            .fetch_update(Relaxed, Relaxed, |f| (f < n).then_some(f + 1))
            .ok()
    }

    fn push_free(&self, idx: u32) {
        let e = &self.entries[idx as usize];
        loop {
            let head = self.free_head.load(Relaxed);
            e.ctl.store(head as u32 as u64, Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | (idx as u64 + 1);
            if self
                .free_head
                .compare_exchange_weak(head, new, Release, Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Creates a connection and indexes its keys. Returns its entry index.
    pub fn insert(&self, c: &NewConn) -> Result<u32, InsertError> {
        let (idx, gen) = self.write_entry(c)?;
        let e = &self.entries[idx as usize];
        if c.flags.contains(EntryFlags::HAS_OUT) {
            let out_key = self.out_key_of(e, c.flags);
            if !self.index_insert(&out_key, KeyDir::Out, idx) {
                self.index.remove(&self.in_key_of(e), KeyDir::In, idx);
                self.push_free(idx);
                return Err(InsertError::IndexFull);
            }
        }
        self.publish(idx, gen, c, c.flags);
        Ok(idx)
    }

    /// Creates a connection with a reply key ([`EntryFlags::HAS_OUT`]) and
    /// indexes its client key only; [`ConnTable::complete_out`] indexes the
    /// reply key later. Meant for a burst: the reply key's bucket, prefetched
    /// here, is in cache by the time the burst's inserts are completed, and
    /// no reply can come before the burst's frames are sent. Until then the
    /// entry carries [`EntryFlags::OUT_PENDING`], and a removal meanwhile
    /// leaves the reply key and the entry's free to the completion (whichever
    /// of the two finishes last frees it).
    pub fn insert_deferred(&self, c: &NewConn) -> Result<PendingOut, InsertError> {
        debug_assert!(c.flags.contains(EntryFlags::HAS_OUT) && !c.flags.is_template());
        let (idx, gen) = self.write_entry(c)?;
        let e = &self.entries[idx as usize];
        let hash = self.index.hash(&self.out_key_of(e, c.flags));
        self.prefetch(hash);
        self.publish(idx, gen, c, c.flags | EntryFlags::OUT_PENDING);
        Ok(PendingOut { idx, gen, hash })
    }

    /// Indexes the reply key of a connection [`ConnTable::insert_deferred`]
    /// made, and clears its [`EntryFlags::OUT_PENDING`].
    pub fn complete_out(&self, p: PendingOut) -> OutDone {
        let e = &self.entries[p.idx as usize];
        let indexed = self
            .index
            .insert_hashed(p.hash, KeyDir::Out, p.idx, |v| self.resident_key(v));
        let mut cur = Sw::from_bits(e.sw.load(Acquire));
        loop {
            if cur.gen() != p.gen {
                // Removed meanwhile: its remover left the reply key to us.
                if indexed {
                    self.index.remove_hashed(p.hash, KeyDir::Out, p.idx);
                }
                self.free_shared(e, p.idx);
                return OutDone::Gone;
            }
            let new = if indexed {
                cur.with_flags(cur.flags().with(EntryFlags::OUT_PENDING, false))
            } else {
                cur.killed()
            };
            match e
                .sw
                .compare_exchange_weak(cur.bits(), new.bits(), AcqRel, Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = Sw::from_bits(now),
            }
        }
        if indexed {
            return OutDone::Indexed;
        }
        // No room for the reply key: the connection is taken back, by us alone
        // (the kill above won, so no remover shares it).
        self.index.remove(&self.in_key_of(e), KeyDir::In, p.idx);
        self.live.fetch_sub(1, Relaxed);
        self.push_free(p.idx);
        OutDone::IndexFull(cur)
    }

    /// Takes an entry and writes `c`'s fields into it, and indexes its client
    /// key, all while it is dead: nobody else touches it until
    /// [`ConnTable::publish`]. Returns the entry and the generation it will
    /// live under.
    fn write_entry(&self, c: &NewConn) -> Result<(u32, u32), InsertError> {
        debug_assert_eq!(
            matches!(c.state, EntryState::Template { .. }),
            c.flags.is_template()
        );
        let idx = self.alloc().ok_or(InsertError::Full)?;
        let e = &self.entries[idx as usize];
        // Dead since its removal (which happens-before our pop) or never used.
        let dead = Sw::from_bits(e.sw.load(Relaxed));
        debug_assert!(!dead.is_live());
        let gen = gen_next(dead.gen());
        // Seqlock writer: a reader still on the old generation that sees any
        // store below also sees the entry dead.
        fence(Release);
        store_addr(&e.caddr, &c.caddr);
        store_addr(&e.vaddr, &c.vaddr);
        store_addr(&e.daddr, &c.daddr);
        e.ports.store(
            c.cport as u64
                | (c.vport as u64) << 16
                | (c.dport as u64) << 32
                | (c.lport as u64) << 48,
            Relaxed,
        );
        e.meta.store(
            c.proto as u64
                | (c.fwd.conn_flag() as u64) << 8
                | (c.lip as u64) << 16
                | (c.svc_id as u64) << 32,
            Relaxed,
        );
        e.dest_id.store(c.dest_id, Relaxed);
        e.control.store(c.control.bits(), Relaxed);
        // Templates: the count of controlled conns; conns: 0, the token of a
        // shared free (`free_shared`).
        let ctl = if c.flags.is_template() {
            ctl_open(gen)
        } else {
            0
        };
        e.ctl.store(ctl, Relaxed);
        e.timeout.store(c.timeout, Relaxed);
        if !self.index_insert(&self.in_key_of(e), KeyDir::In, idx) {
            self.push_free(idx);
            return Err(InsertError::IndexFull);
        }
        Ok((idx, gen))
    }

    /// Makes entry `idx`, written and indexed, live as generation `gen`
    /// with flags `fl`.
    fn publish(&self, idx: u32, gen: u32, c: &NewConn, fl: EntryFlags) {
        // Counted before it can be removed, so `live` never drops below zero.
        self.live.fetch_add(1, Relaxed);
        let sw = Sw::new(gen, c.state, c.in_pkts, fl, c.expires);
        self.entries[idx as usize].sw.store(sw.bits(), Release);
    }

    /// The free of an entry removed while its reply key was pending: its
    /// remover and the completion each finish their part, then the second
    /// of them pushes it (AcqRel: the pusher sees the other's index writes
    /// done, so the entry's next life cannot lose a slot to them).
    fn free_shared(&self, e: &Entry, idx: u32) {
        if e.ctl.fetch_add(1, AcqRel) == 1 {
            self.push_free(idx);
        }
    }

    /// Indexes entry `idx` under `key` (displacing a resident if need be).
    fn index_insert(&self, key: &ConnKey, dir: KeyDir, idx: u32) -> bool {
        self.index.insert(key, dir, idx, |v| self.resident_key(v))
    }

    /// Kills entry `idx` if it still holds `expected`: marks it dead, removes its
    /// keys and returns it to the free stack. Returns the `sw` it had, so the caller
    /// can undo its accounting (active or inactive), or None if it lost a race
    /// (a refresh or state change came first) or the entry is a template that
    /// still controls connections (the kernel's `ip_vs_conn_expire`: "do I
    /// control anybody?"). A reader that found the entry just before sees the
    /// generation change.
    pub fn remove(&self, idx: u32, expected: Sw) -> Option<Sw> {
        let e = self.entries.get(idx as usize)?;
        if !expected.is_live() {
            return None;
        }
        let fl = expected.flags();
        let open = ctl_open(expected.gen());
        let template = fl.is_template();
        // Close the template's count at zero: from here `hold` fails.
        if template
            && e.ctl
                .compare_exchange(open, open | CTL_CLOSED, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        if e.sw
            .compare_exchange(expected.bits(), expected.killed().bits(), AcqRel, Relaxed)
            .is_err()
        {
            if template {
                // Nobody else writes a closed count.
                e.ctl.store(open, Relaxed);
            }
            return None;
        }
        let k = self.in_key_of(e);
        self.index.remove(&k, KeyDir::In, idx);
        self.live.fetch_sub(1, Relaxed);
        if fl.contains(EntryFlags::OUT_PENDING) {
            // The reply key is its inserter's (`complete_out`), and so is
            // half of the free.
            self.free_shared(e, idx);
            return Some(expected);
        }
        if fl.contains(EntryFlags::HAS_OUT) {
            let k = self.out_key_of(e, fl);
            self.index.remove(&k, KeyDir::Out, idx);
        }
        self.push_free(idx);
        Some(expected)
    }

    /// Entries that may be live are below this index (the sweep's range).
    pub fn high_water(&self) -> u32 {
        self.fresh.load(Relaxed)
    }

    /// Calls `f` with each live entry in `from..from + count` and its expiry tick
    /// (the housekeeping sweep). Returns the index to continue from (0 after the end).
    pub fn scan(&self, from: u32, count: u32, mut f: impl FnMut(ConnView, Tick)) -> u32 {
        let end = self.high_water();
        let stop = from.saturating_add(count).min(end);
        for idx in from..stop {
            if let Some(v) = self.read(idx) {
                f(v, v.expires());
            }
        }
        if stop >= end {
            0
        } else {
            stop
        }
    }

    /// Visits every live entry (for `-c` listings; not for the fast path).
    pub fn for_each_live(&self, mut f: impl FnMut(ConnView)) {
        let n = self.fresh.load(Relaxed) as usize;
        for idx in 0..n.min(self.entries.len()) {
            if let Some(v) = self.read(idx as u32) {
                f(v);
            }
        }
    }
}

// The invariant check of the tests and model checks (a child module, so
// that it reads the table's private parts).
#[path = "table_check.rs"]
mod check;
pub use check::Census;

#[cfg(all(test, loom))]
#[path = "table_loom.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::conn::{TcpState, TEMPLATE_PROTO};

    const EST: EntryState = EntryState::Conn(TcpState::Established);

    fn a(s: &str) -> Addr {
        Addr::from(s.parse::<std::net::IpAddr>().unwrap())
    }

    fn conn(cport: u16, fl: EntryFlags) -> NewConn {
        NewConn {
            proto: 6,
            caddr: a("10.77.0.2"),
            cport,
            vaddr: a("10.77.0.100"),
            vport: 80,
            daddr: a("10.77.1.11"),
            dport: 8080,
            lip: 0,
            lport: 0,
            fwd: FwdMethod::Masq,
            svc_id: 7,
            dest_id: 3,
            control: TemplateRef::NONE,
            state: EntryState::Conn(TcpState::SynRecv),
            in_pkts: 0,
            flags: fl,
            expires: 100,
            timeout: 0,
        }
    }

    fn in_key(c: &NewConn) -> ConnKey {
        ConnKey {
            proto: c.proto,
            saddr: c.caddr,
            sport: c.cport,
            daddr: c.vaddr,
            dport: c.vport,
        }
    }

    /// The reply key of a NAT connection (the real server answers the client).
    fn out_key(c: &NewConn) -> ConnKey {
        ConnKey {
            daddr: c.daddr,
            dport: c.dport,
            ..in_key(c)
        }
        .reversed()
    }

    #[test]
    fn budget_holds() {
        let t = ConnTable::new(100_000, [1, 2, 3, 4]);
        assert!(t.bytes_per_conn() <= 128.0, "{}", t.bytes_per_conn());
    }

    #[test]
    fn both_directions_are_found() {
        let t = ConnTable::new(16, [1, 2, 3, 4]);
        let c = conn(40000, EntryFlags::HAS_OUT);
        let idx = t.insert(&c).unwrap();
        let (v, d) = t.lookup(&in_key(&c), 0).unwrap();
        assert_eq!((v.idx, d), (idx, KeyDir::In));
        assert_eq!(v.daddr, c.daddr);
        assert_eq!(v.svc_id, 7);
        let (v, d) = t.lookup(&out_key(&c), 0).unwrap();
        assert_eq!((v.idx, d), (idx, KeyDir::Out));
        let mut other = in_key(&c);
        other.sport = 40001;
        assert!(t.lookup(&other, 0).is_none());
    }

    #[test]
    fn dr_conns_have_no_reply_key() {
        let t = ConnTable::new(16, [1, 2, 3, 4]);
        let c = conn(40000, EntryFlags::NONE);
        t.insert(&c).unwrap();
        assert!(t.lookup(&in_key(&c), 0).is_some());
        assert!(t.lookup(&out_key(&c), 0).is_none());
    }

    #[test]
    fn fullnat_reply_key_uses_local_address() {
        let t = ConnTable::new(16, [1, 2, 3, 4]);
        let lip = t.register_lip(a("10.77.1.200")).unwrap();
        assert_eq!(t.register_lip(a("10.77.1.200")), Some(lip));
        let mut c = conn(40000, EntryFlags::HAS_OUT | EntryFlags::FULLNAT);
        c.lip = lip;
        c.lport = 5000;
        let idx = t.insert(&c).unwrap();
        let k = ConnKey {
            proto: 6,
            saddr: c.daddr,
            sport: c.dport,
            daddr: a("10.77.1.200"),
            dport: 5000,
        };
        assert_eq!(t.lookup(&k, 0).unwrap().0.idx, idx);
        assert!(t.lookup(&out_key(&c), 0).is_none());
    }

    #[test]
    fn full_table_refuses_and_removal_frees() {
        let t = ConnTable::new(4, [1, 2, 3, 4]);
        let ids: Vec<_> = (0..4)
            .map(|i| t.insert(&conn(1000 + i, EntryFlags::NONE)).unwrap())
            .collect();
        assert_eq!(
            t.insert(&conn(2000, EntryFlags::NONE)),
            Err(InsertError::Full)
        );
        assert_eq!(t.live(), 4);
        let (v, _) = t.lookup(&in_key(&conn(1001, EntryFlags::NONE)), 0).unwrap();
        assert!(t.remove(v.idx, v.sw).is_some());
        assert!(t.remove(v.idx, v.sw).is_none(), "second removal loses");
        assert!(t
            .lookup(&in_key(&conn(1001, EntryFlags::NONE)), 0)
            .is_none());
        let n = t.insert(&conn(2000, EntryFlags::NONE)).unwrap();
        assert_eq!(n, ids[1], "freed entry reused");
        assert!(t
            .lookup(&in_key(&conn(2000, EntryFlags::NONE)), 0)
            .is_some());
    }

    #[test]
    fn stale_view_cannot_change_a_reused_entry() {
        let t = ConnTable::new(1, [1, 2, 3, 4]);
        let c = conn(1000, EntryFlags::NONE);
        t.insert(&c).unwrap();
        let (old, _) = t.lookup(&in_key(&c), 0).unwrap();
        t.remove(old.idx, old.sw).unwrap();
        t.insert(&conn(1001, EntryFlags::NONE)).unwrap();
        assert!(!t.cas_state(old.idx, old.sw, EST, EntryFlags::NONE));
        assert!(t.remove(old.idx, old.sw).is_none());
        assert!(t
            .lookup(&in_key(&conn(1001, EntryFlags::NONE)), 0)
            .is_some());
    }

    #[test]
    fn cas_state_only_once() {
        let t = ConnTable::new(2, [1, 2, 3, 4]);
        let c = conn(1000, EntryFlags::NONE);
        t.insert(&c).unwrap();
        let (v, _) = t.lookup(&in_key(&c), 0).unwrap();
        assert!(t.cas_state(v.idx, v.sw, EST, EntryFlags::NONE));
        assert!(!t.cas_state(v.idx, v.sw, EST, EntryFlags::NONE));
        assert_eq!(t.sw(v.idx).state(), EST);
    }

    #[test]
    fn expired_conns_are_not_found_and_scan_sees_them() {
        let t = ConnTable::new(8, [1, 2, 3, 4]);
        let c = conn(1000, EntryFlags::NONE); // expires at tick 100
        t.insert(&c).unwrap();
        assert!(t.lookup(&in_key(&c), 99).is_some());
        assert!(t.lookup(&in_key(&c), 101).is_none());
        let mut seen = vec![];
        assert_eq!(t.scan(0, 100, |v, exp| seen.push((v.cport, exp))), 0);
        assert_eq!(seen, vec![(1000, 100)]);
    }

    #[test]
    fn many_conns_fill_to_capacity() {
        let n = 50_000u32;
        let t = ConnTable::new(n, [9, 8, 7, 6]);
        for i in 0..n {
            let mut c = conn((i % 60000) as u16, EntryFlags::HAS_OUT);
            c.caddr = Addr::v4([10, 77, (i >> 16) as u8, (i >> 8) as u8]);
            c.cport = i as u16;
            t.insert(&c).expect("index has room at 80 % load");
        }
        assert_eq!(t.live(), n);
        for i in (0..n).step_by(97) {
            let mut c = conn(0, EntryFlags::HAS_OUT);
            c.caddr = Addr::v4([10, 77, (i >> 16) as u8, (i >> 8) as u8]);
            c.cport = i as u16;
            assert!(t.lookup(&in_key(&c), 0).is_some());
            assert!(t.lookup(&out_key(&c), 0).is_some());
        }
    }

    fn template(port: u16) -> NewConn {
        NewConn {
            proto: TEMPLATE_PROTO | 6,
            cport: 0,
            vport: port,
            state: EntryState::TEMPLATE,
            flags: EntryFlags::TEMPLATE,
            ..conn(0, EntryFlags::NONE)
        }
    }

    /// Issue 13: a worker finds a template, the sweep frees it and the entry is
    /// reused before the worker counts its new connection on it.
    #[test]
    fn stale_template_ref_is_refused() {
        let t = ConnTable::new(1, [1, 2, 3, 4]);
        let tpl = template(80);
        t.insert(&tpl).unwrap();
        let (v, _) = t.lookup(&in_key(&tpl), 0).unwrap();
        t.remove(v.idx, v.sw).unwrap();
        let other = template(443);
        let idx = t.insert(&other).unwrap();
        assert_eq!(idx, v.idx, "the entry is reused");
        assert_eq!(t.hold(&v), None, "a template that is gone was counted on");
        assert_eq!(t.n_control(idx), 0, "the count landed on the reused entry");
        // The live template is counted, and cannot be removed while it is.
        let (w, _) = t.lookup(&in_key(&other), 0).unwrap();
        let r = t.hold(&w).unwrap();
        assert_eq!(t.n_control(idx), 1);
        assert_eq!(t.remove(w.idx, w.sw), None);
        t.release(r);
        assert_eq!(t.n_control(idx), 0);
        assert!(t.remove(w.idx, w.sw).is_some());
        assert_eq!(t.check_invariants().unwrap().live, 0);
    }

    /// Issue 13: a packet's refresh through a view taken before the entry was
    /// freed and reused must not touch the new connection.
    #[test]
    fn stale_view_cannot_refresh_a_reused_entry() {
        let t = ConnTable::new(1, [1, 2, 3, 4]);
        let mut a = conn(1000, EntryFlags::NONE);
        a.proto = 17;
        t.insert(&a).unwrap();
        let (old, _) = t.lookup(&in_key(&a), 0).unwrap();
        t.remove(old.idx, old.sw).unwrap();
        let mut b = conn(2000, EntryFlags::NONE);
        b.proto = 17;
        b.expires = 50;
        let idx = t.insert(&b).unwrap();
        assert_eq!(idx, old.idx);
        // What the worker's UDP `track` does with its view.
        assert!(!t.refresh(old.idx, old.sw, 300));
        assert!(t
            .update(old.idx, old.sw, EST, EntryFlags::NONE, 300)
            .is_err());
        assert_eq!(
            t.expires(idx),
            50,
            "a stale view refreshed another connection"
        );
    }

    /// `assure` marks a held template ASSURED once, keeping its expiry.
    #[test]
    fn deferred_reply_key_is_indexed_on_completion() {
        let t = ConnTable::new(16, [1, 2, 3, 4]);
        let c = conn(1000, EntryFlags::HAS_OUT);
        let p = t.insert_deferred(&c).unwrap();
        let (v, _) = t
            .lookup(&in_key(&c), 0)
            .expect("published with its client key");
        assert!(v.flags().contains(EntryFlags::OUT_PENDING));
        assert!(t.lookup(&out_key(&c), 0).is_none());
        // A table with a pending reply key is not in its resting state.
        assert!(t.check_invariants().is_err());
        assert_eq!(t.complete_out(p), OutDone::Indexed);
        let (r, dir) = t.lookup(&out_key(&c), 0).expect("reply key");
        assert_eq!((r.idx, dir), (v.idx, KeyDir::Out));
        assert!(!r.flags().contains(EntryFlags::OUT_PENDING));
        assert_eq!(t.check_invariants().unwrap().live, 1);
        // A view taken while pending is stale now: its changes fail.
        assert!(!t.cas_state(v.idx, v.sw, EST, v.flags()));
        assert!(t.remove(r.idx, r.sw).is_some());
        assert_eq!(t.check_invariants().unwrap().live, 0);
    }

    #[test]
    fn removal_while_pending_leaves_the_free_to_the_last() {
        let t = ConnTable::new(1, [1, 2, 3, 4]);
        let c = conn(1000, EntryFlags::HAS_OUT);
        let p = t.insert_deferred(&c).unwrap();
        let (v, _) = t.lookup(&in_key(&c), 0).unwrap();
        assert!(t.remove(v.idx, v.sw).is_some());
        assert!(t.lookup(&in_key(&c), 0).is_none());
        // The one entry is not free yet: the completion still holds it.
        assert_eq!(
            t.insert(&conn(1001, EntryFlags::NONE)),
            Err(InsertError::Full)
        );
        assert_eq!(t.complete_out(p), OutDone::Gone);
        assert!(t.lookup(&out_key(&c), 0).is_none());
        assert_eq!(t.check_invariants().unwrap().free, 1);
        t.insert(&c).unwrap();
        assert!(t.lookup(&out_key(&c), 0).is_some());
        t.check_invariants().unwrap();
    }

    #[test]
    fn completion_without_index_room_takes_the_conn_back() {
        // One bucket of 8 slots: 7 one-key conns and the new client key fill it.
        let t = ConnTable::with_buckets(16, 1, [1, 2, 3, 4]);
        for p in 0..7 {
            t.insert(&conn(2000 + p, EntryFlags::NONE)).unwrap();
        }
        let c = conn(1000, EntryFlags::HAS_OUT);
        let p = t.insert_deferred(&c).unwrap();
        match t.complete_out(p) {
            OutDone::IndexFull(sw) => assert_eq!(sw.flags(), c.flags | EntryFlags::OUT_PENDING),
            other => panic!("{other:?}"),
        }
        assert!(t.lookup(&in_key(&c), 0).is_none());
        let census = t.check_invariants().unwrap();
        assert_eq!((census.live, census.free), (7, 1));
    }

    #[test]
    fn assure_sets_the_template_state() {
        let t = ConnTable::new(4, [1, 2, 3, 4]);
        let tpl = template(80);
        t.insert(&tpl).unwrap();
        let (v, _) = t.lookup(&in_key(&tpl), 0).unwrap();
        let r = t.hold(&v).unwrap();
        t.assure(r);
        t.assure(r);
        let w = t.template(r).unwrap();
        assert_eq!((w.is_assured(), w.expires()), (true, 100));
        t.release(r);
        assert!(t.template(TemplateRef::NONE).is_none());
    }
}
