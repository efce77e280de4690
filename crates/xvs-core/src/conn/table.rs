//! The connection table shared by all workers: preallocated, bounded, lock-free.
//!
//! Layout, chosen for ≤ 128 bytes per connection (10M conns < 1.5 GiB):
//! - `entries`: `conn_max` fixed 96-byte entries. Every field is an atomic, so a
//!   reader racing a writer sees stale or fresh values, never undefined ones.
//! - `index`: buckets of 8 `u64` slots (one cache line), `(tag << 32) | (idx + 1)`,
//!   at 50 % load (32 bytes per connection). A key goes to its first bucket when
//!   that has room (95 % of keys), else to its second, else a resident of either
//!   is moved to its other bucket (cuckoo displacement), so a lookup usually
//!   reads one cache line and an insert practically never fails. Each
//!   connection has one key per direction it is looked up in (client→VIP, and for
//!   NAT/FULLNAT the reply direction); the tag's low bit says which.
//!
//! Concurrency: an entry's `sw` word holds a generation (odd = live) together with
//! the state and flags. Readers check the generation before and after reading the
//! key (a seqlock), so a reused entry is never mistaken for the old connection.
//! State changes are compare-and-swaps on `sw`, so two workers that see the two
//! directions of one connection never both account the same transition, and a
//! transition racing the expiry of the entry fails. Free entries form a lock-free
//! stack with an ABA tag, so no worker ever waits for another.
//!
//! Expiry needs no per-connection timer: lookups ignore entries whose expiry tick
//! has passed (so packets see exact timeouts), and the engine's housekeeping sweeps
//! the entries in slices to free them and settle the dest counters
//! ([`ConnTable::scan`]); the sweep's pace bounds how late counters settle.

use crate::addr::Addr;
use crate::time::Time;
use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

/// Slots per index bucket (one cache line of u64).
const BUCKET_SLOTS: usize = 8;
/// Target load of the index: slots = keys / LOAD. At one half, a key's first
/// bucket has room 95 % of the time, so a lookup usually reads one bucket.
const INDEX_LOAD: f64 = 0.5;
/// Protocol marker bit of persistence-template keys (never set for TCP/UDP/ICMP).
pub const TEMPLATE_PROTO: u8 = 0x80;
/// Maximum number of FULLNAT local addresses.
pub const MAX_LIPS: usize = 4096;

/// Coarse time of the table: 10 ms ticks, wrapping (compare with [`tick_after`]).
pub type Tick = u32;
/// Nanoseconds per tick.
pub const TICK_NS: u64 = 10_000_000;

/// The tick of a time.
#[inline]
pub fn tick_of(t: Time) -> Tick {
    (t.0 / TICK_NS) as u32
}

/// Ticks in `secs` seconds (saturating).
#[inline]
pub fn secs_to_ticks(secs: u32) -> u32 {
    secs.saturating_mul(100)
}

/// True when tick `a` is after tick `b` (wrapping, like the kernel's `time_after`).
#[inline]
pub fn tick_after(a: Tick, b: Tick) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

/// Connection flags kept in the entry (bit values are xvs's own).
pub mod flags {
    /// Counted in InActConn (else ActiveConn).
    pub const INACTIVE: u16 = 0x1;
    /// A persistence template.
    pub const TEMPLATE: u16 = 0x2;
    /// No reply seen yet and none expected (DR/TUN): the kernel's NOOUTPUT.
    pub const NOOUTPUT: u16 = 0x4;
    /// Indexed in the reply direction too (NAT/FULLNAT).
    pub const HAS_OUT: u16 = 0x8;
    /// FULLNAT: the reply key uses the local address and port.
    pub const FULLNAT: u16 = 0x10;
    /// The template's dest was found invalid; it only waits to be freed.
    pub const DEAD_TEMPLATE: u16 = 0x20;
}

/// A lookup key: the 5-tuple as the packet carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// IP protocol; templates have [`TEMPLATE_PROTO`] set.
    pub proto: u8,
    pub saddr: Addr,
    pub sport: u16,
    pub daddr: Addr,
    pub dport: u16,
}

/// Multiply and fold: the mixing step of wyhash-style hashes.
#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r >> 64) as u64 ^ r as u64
}

impl ConnKey {
    /// The key as five words: both addresses, then protocol and ports.
    #[inline]
    fn words(&self) -> [u64; 5] {
        let w = |a: &[u8; 16], i: usize| {
            u64::from_ne_bytes([
                a[i],
                a[i + 1],
                a[i + 2],
                a[i + 3],
                a[i + 4],
                a[i + 5],
                a[i + 6],
                a[i + 7],
            ])
        };
        [
            w(&self.saddr.0, 0),
            w(&self.saddr.0, 8),
            w(&self.daddr.0, 0),
            w(&self.daddr.0, 8),
            self.proto as u64 | (self.sport as u64) << 16 | (self.dport as u64) << 32,
        ]
    }
}

/// Which of a connection's keys matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDir {
    /// Client → VIP (or the template key).
    In,
    /// Real server → client (NAT) or → local address (FULLNAT).
    Out,
}

/// Everything needed to create a connection.
#[derive(Debug, Clone, Copy)]
pub struct NewConn {
    pub proto: u8,
    pub caddr: Addr,
    pub cport: u16,
    pub vaddr: Addr,
    pub vport: u16,
    pub daddr: Addr,
    pub dport: u16,
    /// FULLNAT local address id ([`ConnTable::register_lip`]) and port.
    pub lip: u16,
    pub lport: u16,
    pub fwd: u8,
    pub svc_id: u32,
    pub dest_id: u32,
    /// Index of the controlling template + 1, or 0.
    pub control: u32,
    pub state: u8,
    pub flags: u16,
    /// Expiry tick.
    pub expires: Tick,
    /// Timeout in seconds kept with the entry (templates: the persistence timeout).
    pub timeout: u32,
}

/// A consistent copy of a live entry, taken under its generation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnView {
    pub idx: u32,
    /// The `sw` word the copy was taken under (for [`ConnTable::cas_state`]).
    pub sw: u64,
    pub proto: u8,
    pub caddr: Addr,
    pub cport: u16,
    pub vaddr: Addr,
    pub vport: u16,
    pub daddr: Addr,
    pub dport: u16,
    pub lip: u16,
    pub lport: u16,
    pub fwd: u8,
    pub svc_id: u32,
    pub dest_id: u32,
    pub control: u32,
    pub timeout: u32,
}

impl ConnView {
    #[inline]
    pub fn state(&self) -> u8 {
        sw_state(self.sw)
    }
    #[inline]
    pub fn flags(&self) -> u16 {
        sw_flags(self.sw)
    }
}

/// The generation of an `sw` word.
#[inline]
pub fn sw_gen(sw: u64) -> u32 {
    (sw >> 32) as u32
}
/// The state of an `sw` word.
#[inline]
pub fn sw_state(sw: u64) -> u8 {
    sw as u8
}
/// The flags of an `sw` word.
#[inline]
pub fn sw_flags(sw: u64) -> u16 {
    (sw >> 8) as u16
}
/// An `sw` word from its parts.
#[inline]
pub fn sw_make(gen: u32, state: u8, flags: u16) -> u64 {
    (gen as u64) << 32 | (flags as u64) << 8 | state as u64
}

/// One connection (96 bytes).
#[derive(Default)]
#[repr(C)]
pub struct Entry {
    /// Generation (odd = live) | flags | state.
    sw: AtomicU64,
    /// Expiry tick.
    expires: AtomicU32,
    /// Link of the free stack (idx + 1).
    next: AtomicU32,
    caddr: [AtomicU64; 2],
    vaddr: [AtomicU64; 2],
    daddr: [AtomicU64; 2],
    /// cport | vport << 16 | dport << 32 | lport << 48.
    ports: AtomicU64,
    /// proto | fwd << 8 | lip << 16 | svc_id << 32.
    meta: AtomicU64,
    dest_id: AtomicU32,
    control: AtomicU32,
    /// Connections this template controls.
    n_control: AtomicU32,
    timeout: AtomicU32,
}

#[inline]
fn load_addr(a: &[AtomicU64; 2]) -> Addr {
    let x = a[0].load(Relaxed).to_ne_bytes();
    let y = a[1].load(Relaxed).to_ne_bytes();
    let mut o = [0u8; 16];
    o[..8].copy_from_slice(&x);
    o[8..].copy_from_slice(&y);
    Addr(o)
}

#[inline]
fn store_addr(a: &[AtomicU64; 2], v: &Addr) {
    let mut x = [0u8; 8];
    let mut y = [0u8; 8];
    x.copy_from_slice(&v.0[..8]);
    y.copy_from_slice(&v.0[8..]);
    a[0].store(u64::from_ne_bytes(x), Relaxed);
    a[1].store(u64::from_ne_bytes(y), Relaxed);
}

#[inline]
fn addr_eq(a: &[AtomicU64; 2], v: &Addr) -> bool {
    let mut x = [0u8; 8];
    let mut y = [0u8; 8];
    x.copy_from_slice(&v.0[..8]);
    y.copy_from_slice(&v.0[8..]);
    a[0].load(Relaxed) == u64::from_ne_bytes(x) && a[1].load(Relaxed) == u64::from_ne_bytes(y)
}

#[repr(C, align(64))]
#[derive(Default)]
struct Bucket([AtomicU64; BUCKET_SLOTS]);

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// `conn_max` entries are live.
    Full,
    /// Both candidate index buckets of a key are full (practically never at 80 % load).
    IndexFull,
}

/// Seven odd 64-bit hash keys from the caller's four (splitmix64 of each).
fn expand_seed(s: [u64; 4]) -> [u64; 7] {
    let mut x = s[0] ^ s[1].rotate_left(17) ^ s[2].rotate_left(31) ^ s[3].rotate_left(47);
    let mut out = [0u64; 7];
    for (i, o) in out.iter_mut().enumerate() {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15 ^ s[i % 4]);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        *o = (z ^ (z >> 31)) | 1;
    }
    out
}

/// The connection table. See the module documentation for the design.
pub struct ConnTable {
    entries: Box<[Entry]>,
    index: Box<[Bucket]>,
    seed: [u64; 7],
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
        let conn_max = conn_max.max(1) as usize;
        let keys = conn_max as f64 * 2.0;
        let nbuckets = ((keys / INDEX_LOAD) as usize).div_ceil(BUCKET_SLOTS).max(2);
        // The index first: it is read before written, so it benefits most from
        // being faulted in early (see xvs-mem).
        let index = (0..nbuckets).map(|_| Bucket::default()).collect();
        ConnTable {
            entries: (0..conn_max).map(|_| Entry::default()).collect(),
            index,
            seed: expand_seed(seed),
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
        std::mem::size_of_val(&*self.entries) + std::mem::size_of_val(&*self.index)
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
        let w = key.words();
        let k = &self.seed;
        let h =
            mum(w[0] ^ k[0], w[1] ^ k[1]) ^ mum(w[2] ^ k[2], w[3] ^ k[3]) ^ mum(w[4] ^ k[4], k[5]);
        mum(h, k[6])
    }

    #[inline]
    fn buckets_of(&self, h: u64) -> (usize, usize) {
        let n = self.index.len() as u64;
        let b1 = ((h & 0xffff_ffff) * n) >> 32;
        let b2 = (((h >> 24) & 0xffff_ffff) * n) >> 32;
        (b1 as usize, b2 as usize)
    }

    /// The index tag of a hash: its top bits with the high bit forced on (so no
    /// tag equals an empty slot's) and the direction in bit 0.
    #[inline]
    fn tag_of(h: u64, dir: KeyDir) -> u32 {
        (((h >> 32) as u32 | 0x8000_0000) & !1) | (dir == KeyDir::Out) as u32
    }

    /// Asks the CPU to load the first index bucket of a hash, without waiting
    /// (batching hides the miss).
    #[inline]
    pub fn prefetch(&self, h: u64) {
        let (b1, _) = self.buckets_of(h);
        xvs_mem::prefetch(&self.index[b1]);
    }

    /// Once [`ConnTable::prefetch`] has brought the first bucket in: prefetches
    /// the entry (both of its cache lines) its slot points at, or the second
    /// bucket when the first has no slot with the key's tag.
    #[inline]
    pub fn prefetch_entry(&self, h: u64) {
        let (b1, b2) = self.buckets_of(h);
        let tag = Self::tag_of(h, KeyDir::In) >> 1;
        for s in &self.index[b1].0 {
            let v = s.load(Relaxed);
            if v != 0 && (v >> 33) as u32 == tag {
                if let Some(e) = self.entries.get((v as u32).wrapping_sub(1) as usize) {
                    xvs_mem::prefetch(&e.sw);
                    xvs_mem::prefetch(&e.meta);
                }
                return;
            }
        }
        xvs_mem::prefetch(&self.index[b2]);
    }

    /// Finds the live connection one of whose keys is `key`, ignoring connections
    /// whose expiry tick is before `now` (they only wait for the sweep). Templates
    /// are found until the sweep decides their fate (it may re-arm them).
    #[inline]
    pub fn lookup(&self, key: &ConnKey, now: Tick) -> Option<(ConnView, KeyDir)> {
        self.lookup_hashed(key, self.hash(key), now)
    }

    /// [`ConnTable::lookup`] with the hash already computed.
    #[inline]
    pub fn lookup_hashed(&self, key: &ConnKey, h: u64, now: Tick) -> Option<(ConnView, KeyDir)> {
        let (b1, b2) = self.buckets_of(h);
        let tag = Self::tag_of(h, KeyDir::In) >> 1;
        for b in [b1, b2] {
            // Which slots carry our tag, without a branch per slot (an empty slot
            // never matches: tags have their high bit set).
            let slots = &self.index[b].0;
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
                let dir = if (v >> 32) & 1 == 1 {
                    KeyDir::Out
                } else {
                    KeyDir::In
                };
                let idx = (v as u32).wrapping_sub(1);
                if let Some(view) = self.read_if(idx, key, dir) {
                    if view.flags() & flags::TEMPLATE == 0 && tick_after(now, self.expires(idx)) {
                        continue;
                    }
                    if view.flags() & flags::DEAD_TEMPLATE != 0 {
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
        let sw1 = e.sw.load(Acquire);
        if sw_gen(sw1) & 1 == 0 {
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
                let fullnat = sw_flags(sw1) & flags::FULLNAT != 0;
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
        let view = ConnView {
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
            fwd: (meta >> 8) as u8,
            svc_id: (meta >> 32) as u32,
            dest_id: e.dest_id.load(Relaxed),
            control: e.control.load(Relaxed),
            timeout: e.timeout.load(Relaxed),
        };
        // Seqlock close: the key fields only change with the generation.
        std::sync::atomic::fence(Acquire);
        if sw_gen(e.sw.load(Relaxed)) != sw_gen(sw1) {
            return None;
        }
        Some(view)
    }

    /// Reads entry `idx` if it is live (for listings and the expiry wheel).
    pub fn read(&self, idx: u32) -> Option<ConnView> {
        let e = self.entries.get(idx as usize)?;
        let sw = e.sw.load(Acquire);
        if sw_gen(sw) & 1 == 0 {
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

    fn out_key_of(&self, e: &Entry, fl: u16) -> ConnKey {
        let ports = e.ports.load(Relaxed);
        let meta = e.meta.load(Relaxed);
        let (daddr, dport) = if fl & flags::FULLNAT != 0 {
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

    /// The current expiry tick of entry `idx`.
    #[inline]
    pub fn expires(&self, idx: u32) -> Tick {
        self.entries[idx as usize].expires.load(Relaxed)
    }

    /// Sets the expiry tick of entry `idx` (a refresh; benign if it races a free).
    #[inline]
    pub fn set_expires(&self, idx: u32, t: Tick) {
        if let Some(e) = self.entries.get(idx as usize) {
            e.expires.store(t, Relaxed);
        }
    }

    /// The `sw` word of entry `idx` now.
    #[inline]
    pub fn sw(&self, idx: u32) -> u64 {
        self.entries[idx as usize].sw.load(Acquire)
    }

    /// Changes state and flags if the entry still holds `expected` (same generation,
    /// state and flags). Only the winner of a race sees `true` and accounts the change.
    #[inline]
    pub fn cas_state(&self, idx: u32, expected: u64, state: u8, fl: u16) -> bool {
        let new = sw_make(sw_gen(expected), state, fl);
        self.entries[idx as usize]
            .sw
            .compare_exchange(expected, new, Release, Relaxed)
            .is_ok()
    }

    /// Adds `d` to a template's count of controlled connections; returns the new count.
    pub fn add_n_control(&self, idx: u32, d: i32) -> u32 {
        let c = &self.entries[idx as usize].n_control;
        let r = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add_signed(d)));
        r.unwrap_or(0).saturating_add_signed(d)
    }

    /// Connections a template controls.
    pub fn n_control(&self, idx: u32) -> u32 {
        self.entries[idx as usize].n_control.load(Relaxed)
    }

    fn alloc(&self) -> Option<u32> {
        loop {
            let head = self.free_head.load(Acquire);
            let top = head as u32;
            if top == 0 {
                break;
            }
            let idx = top - 1;
            let next = self.entries[idx as usize].next.load(Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | next as u64;
            if self
                .free_head
                .compare_exchange_weak(head, new, Acquire, Relaxed)
                .is_ok()
            {
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
            e.next.store(head as u32, Relaxed);
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

    /// Creates a connection, indexes its keys, and queues it for the expiry wheel.
    /// Returns its entry index.
    pub fn insert(&self, c: &NewConn) -> Result<u32, InsertError> {
        let idx = self.alloc().ok_or(InsertError::Full)?;
        let e = &self.entries[idx as usize];
        let gen = sw_gen(e.sw.load(Relaxed));
        debug_assert!(gen & 1 == 0);
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
            c.proto as u64 | (c.fwd as u64) << 8 | (c.lip as u64) << 16 | (c.svc_id as u64) << 32,
            Relaxed,
        );
        e.dest_id.store(c.dest_id, Relaxed);
        e.control.store(c.control, Relaxed);
        e.n_control.store(0, Relaxed);
        e.timeout.store(c.timeout, Relaxed);
        e.expires.store(c.expires, Relaxed);
        let sw = sw_make(gen.wrapping_add(1), c.state, c.flags);
        e.sw.store(sw, Release);

        let in_key = self.in_key_of(e);
        if !self.index_insert(&in_key, KeyDir::In, idx) {
            self.abort_insert(idx, sw, false);
            return Err(InsertError::IndexFull);
        }
        if c.flags & flags::HAS_OUT != 0 {
            let out_key = self.out_key_of(e, c.flags);
            if !self.index_insert(&out_key, KeyDir::Out, idx) {
                self.abort_insert(idx, sw, true);
                return Err(InsertError::IndexFull);
            }
        }
        self.live.fetch_add(1, Relaxed);
        Ok(idx)
    }

    fn abort_insert(&self, idx: u32, sw: u64, in_indexed: bool) {
        let e = &self.entries[idx as usize];
        e.sw.store(sw_make(sw_gen(sw).wrapping_add(1), 0, 0), Release);
        if in_indexed {
            let k = self.in_key_of(e);
            self.index_remove(&k, KeyDir::In, idx);
        }
        self.push_free(idx);
    }

    fn index_insert(&self, key: &ConnKey, dir: KeyDir, idx: u32) -> bool {
        let h = self.hash(key);
        let (b1, b2) = self.buckets_of(h);
        let val = (Self::tag_of(h, dir) as u64) << 32 | (idx as u64 + 1);
        // First bucket first: lookups read it first, and most find the key there.
        let order = [b1, b2];
        for b in order {
            if Self::put_in(&self.index[b], val) {
                return true;
            }
        }
        // Both buckets full: move one resident to its other bucket (one level of
        // cuckoo displacement).
        for b in order {
            for slot in &self.index[b].0 {
                let v = slot.load(Acquire);
                if v == 0 {
                    if slot.compare_exchange(0, val, Release, Relaxed).is_ok() {
                        return true;
                    }
                    continue;
                }
                let Some(alt) = self.other_bucket(v, b) else {
                    continue;
                };
                // Copy first, then swap the original for the new key: a lookup
                // always finds the resident in at least one of its buckets.
                if !Self::put_in(&self.index[alt], v) {
                    continue;
                }
                if slot.compare_exchange(v, val, Release, Relaxed).is_ok() {
                    return true;
                }
                // The resident was removed meanwhile: take the copy back.
                for s2 in &self.index[alt].0 {
                    if s2.compare_exchange(v, 0, Release, Relaxed).is_ok() {
                        break;
                    }
                }
            }
        }
        false
    }

    /// Stores `val` in an empty slot of bucket `b`.
    #[inline]
    fn put_in(b: &Bucket, val: u64) -> bool {
        b.0.iter()
            .any(|s| s.load(Relaxed) == 0 && s.compare_exchange(0, val, Release, Relaxed).is_ok())
    }

    /// The other candidate bucket of the key that index value `v` (found in bucket
    /// `b`) stands for, read under the entry's generation check.
    fn other_bucket(&self, v: u64, b: usize) -> Option<usize> {
        let idx = (v as u32).wrapping_sub(1);
        let e = self.entries.get(idx as usize)?;
        let sw = e.sw.load(Acquire);
        if sw_gen(sw) & 1 == 0 {
            return None;
        }
        let key = if (v >> 32) & 1 == 1 {
            self.out_key_of(e, sw_flags(sw))
        } else {
            self.in_key_of(e)
        };
        std::sync::atomic::fence(Acquire);
        if e.sw.load(Relaxed) >> 32 != sw >> 32 {
            return None;
        }
        let (c1, c2) = self.buckets_of(self.hash(&key));
        let alt = if c1 == b { c2 } else { c1 };
        (alt != b).then_some(alt)
    }

    /// Removes every copy of the key's index value (a displacement can leave two
    /// for an instant).
    fn index_remove(&self, key: &ConnKey, dir: KeyDir, idx: u32) {
        let h = self.hash(key);
        let (b1, b2) = self.buckets_of(h);
        let val = (Self::tag_of(h, dir) as u64) << 32 | (idx as u64 + 1);
        for b in [b1, b2] {
            for slot in &self.index[b].0 {
                let _ = slot.compare_exchange(val, 0, Release, Relaxed);
            }
        }
    }

    /// Kills entry `idx` if it still holds `expected`: marks it dead, removes its
    /// keys and returns it to the free stack. Returns the `sw` it had, so the caller
    /// can undo its accounting (active or inactive), or None if it lost a race.
    /// A reader that found the entry just before sees the generation change.
    pub fn remove(&self, idx: u32, expected: u64) -> Option<u64> {
        let e = self.entries.get(idx as usize)?;
        let dead = sw_make(sw_gen(expected).wrapping_add(1), 0, 0);
        e.sw.compare_exchange(expected, dead, AcqRel, Relaxed)
            .ok()?;
        let fl = sw_flags(expected);
        let k = self.in_key_of(e);
        self.index_remove(&k, KeyDir::In, idx);
        if fl & flags::HAS_OUT != 0 {
            let k = self.out_key_of(e, fl);
            self.index_remove(&k, KeyDir::Out, idx);
        }
        self.live.fetch_sub(1, Relaxed);
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
                f(v, self.expires(idx));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::from(s.parse::<std::net::IpAddr>().unwrap())
    }

    fn conn(cport: u16, fl: u16) -> NewConn {
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
            fwd: 0,
            svc_id: 7,
            dest_id: 3,
            control: 0,
            state: 3,
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

    fn out_key(c: &NewConn) -> ConnKey {
        ConnKey {
            proto: c.proto,
            saddr: c.daddr,
            sport: c.dport,
            daddr: c.caddr,
            dport: c.cport,
        }
    }

    #[test]
    fn entry_is_96_bytes_and_budget_holds() {
        assert_eq!(std::mem::size_of::<Entry>(), 96);
        let t = ConnTable::new(100_000, [1, 2, 3, 4]);
        assert!(t.bytes_per_conn() <= 128.0, "{}", t.bytes_per_conn());
    }

    #[test]
    fn both_directions_are_found() {
        let t = ConnTable::new(16, [1, 2, 3, 4]);
        let c = conn(40000, flags::HAS_OUT);
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
        let c = conn(40000, 0);
        t.insert(&c).unwrap();
        assert!(t.lookup(&in_key(&c), 0).is_some());
        assert!(t.lookup(&out_key(&c), 0).is_none());
    }

    #[test]
    fn fullnat_reply_key_uses_local_address() {
        let t = ConnTable::new(16, [1, 2, 3, 4]);
        let lip = t.register_lip(a("10.77.1.200")).unwrap();
        assert_eq!(t.register_lip(a("10.77.1.200")), Some(lip));
        let mut c = conn(40000, flags::HAS_OUT | flags::FULLNAT);
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
            .map(|i| t.insert(&conn(1000 + i, 0)).unwrap())
            .collect();
        assert_eq!(t.insert(&conn(2000, 0)), Err(InsertError::Full));
        assert_eq!(t.live(), 4);
        let (v, _) = t.lookup(&in_key(&conn(1001, 0)), 0).unwrap();
        assert!(t.remove(v.idx, v.sw).is_some());
        assert!(t.remove(v.idx, v.sw).is_none(), "second removal loses");
        assert!(t.lookup(&in_key(&conn(1001, 0)), 0).is_none());
        let n = t.insert(&conn(2000, 0)).unwrap();
        assert_eq!(n, ids[1], "freed entry reused");
        assert!(t.lookup(&in_key(&conn(2000, 0)), 0).is_some());
    }

    #[test]
    fn stale_view_cannot_change_a_reused_entry() {
        let t = ConnTable::new(1, [1, 2, 3, 4]);
        let c = conn(1000, 0);
        t.insert(&c).unwrap();
        let (old, _) = t.lookup(&in_key(&c), 0).unwrap();
        t.remove(old.idx, old.sw).unwrap();
        t.insert(&conn(1001, 0)).unwrap();
        assert!(!t.cas_state(old.idx, old.sw, 1, 0));
        assert!(t.remove(old.idx, old.sw).is_none());
        assert!(t.lookup(&in_key(&conn(1001, 0)), 0).is_some());
    }

    #[test]
    fn cas_state_only_once() {
        let t = ConnTable::new(2, [1, 2, 3, 4]);
        let c = conn(1000, 0);
        t.insert(&c).unwrap();
        let (v, _) = t.lookup(&in_key(&c), 0).unwrap();
        assert!(t.cas_state(v.idx, v.sw, 1, 0));
        assert!(!t.cas_state(v.idx, v.sw, 1, 0));
        assert_eq!(sw_state(t.sw(v.idx)), 1);
    }

    #[test]
    fn expired_conns_are_not_found_and_scan_sees_them() {
        let t = ConnTable::new(8, [1, 2, 3, 4]);
        let c = conn(1000, 0); // expires at tick 100
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
            let mut c = conn((i % 60000) as u16, flags::HAS_OUT);
            c.caddr = Addr::v4([10, 77, (i >> 16) as u8, (i >> 8) as u8]);
            c.cport = i as u16;
            t.insert(&c).expect("index has room at 80 % load");
        }
        assert_eq!(t.live(), n);
        for i in (0..n).step_by(97) {
            let mut c = conn(0, flags::HAS_OUT);
            c.caddr = Addr::v4([10, 77, (i >> 16) as u8, (i >> 8) as u8]);
            c.cport = i as u16;
            assert!(t.lookup(&in_key(&c), 0).is_some());
            assert!(t.lookup(&out_key(&c), 0).is_some());
        }
    }

    #[test]
    fn ticks_wrap() {
        assert!(tick_after(5, 3));
        assert!(!tick_after(3, 5));
        assert!(tick_after(2, u32::MAX - 2));
    }
}
