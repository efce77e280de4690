//! The connection table shared by all workers: preallocated, bounded, lock-free.
//!
//! Layout, chosen for ≤ 128 bytes per connection (10M conns < 1.5 GiB):
//! - `entries`: `conn_max` fixed 96-byte entries. Every field is an atomic, so a
//!   reader racing a writer sees stale or fresh values, never undefined ones.
//! - `index`: buckets of 8 `u64` slots (one cache line), `(tag << 32) | (idx + 1)`,
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
//! **The `sw` word.** Everything about a connection that changes while it lives
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

use crate::addr::Addr;
use crate::time::Time;
// The atomics come from loom in the model checks (`RUSTFLAGS="--cfg loom"`).
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// Slots per index bucket (one cache line of u64; two in the model checks, so
/// that a few keys fill a bucket).
const BUCKET_SLOTS: usize = if cfg!(loom) { 2 } else { 8 };
/// Target load of the index: slots = keys / LOAD. At one half, a key's first
/// bucket has room 95 % of the time, so a lookup usually reads one bucket.
const INDEX_LOAD: f64 = 0.5;
/// Protocol marker bit of persistence-template keys (never set for TCP/UDP/ICMP).
pub const TEMPLATE_PROTO: u8 = 0x80;
/// Maximum number of FULLNAT local addresses (a few in the model checks, where
/// every atomic costs).
pub const MAX_LIPS: usize = if cfg!(loom) { 4 } else { 4096 };

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
    /// The template's dest was found invalid (`ip_vs_check_template`): lookups
    /// skip it, and it lives out its timer.
    pub const DEAD_TEMPLATE: u16 = 0x20;
    /// The template expired while it controlled connections and was re-armed:
    /// its timeout is 60 s from then on (`ip_vs_conn_expire`).
    pub const REARMED: u16 = 0x40;
}

/// Template state `IP_VS_CTPL_S_ASSURED`: a connection it controls reached
/// ESTABLISHED (`ip_vs_control_assure_ct`). Templates are otherwise in state 0
/// (NONE).
pub const TPL_ASSURED: u8 = 1;

/// The state byte of an `sw` word holds the state in its low 4 bits and, in its
/// high 4 bits, the connection's count of inbound packets (the kernel's
/// `in_pkts`), which stops at [`IN_PKTS_CAP`].
pub const STATE_MASK: u8 = 0x0f;
/// Where `in_pkts` stops (the nibble full): `todrop_entry` only tells 0..=8
/// from "more than 8", and a count that no longer changes costs the fast path
/// no write.
pub const IN_PKTS_CAP: u8 = 15;

/// A state byte for [`NewConn::state`]: `state` with `in_pkts` inbound packets
/// counted.
#[inline]
pub const fn state_byte(state: u8, in_pkts: u8) -> u8 {
    (state & STATE_MASK)
        | (if in_pkts < IN_PKTS_CAP {
            in_pkts
        } else {
            IN_PKTS_CAP
        }) << 4
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
    /// The controlling template, held with [`ConnTable::hold`] (the new
    /// connection takes over the count), or [`TemplateRef::NONE`].
    pub control: TemplateRef,
    /// The state, with the inbound packets counted so far in the high 4 bits
    /// (see [`state_byte`]; 0 there for a connection no packet created).
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
    pub control: TemplateRef,
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
    /// The expiry tick the copy was taken under.
    #[inline]
    pub fn expires(&self) -> Tick {
        sw_expires(self.sw)
    }
}

/// A connection's counted reference to the template that controls it: the
/// template's entry and generation, so that a reference to an entry that has
/// been freed or reused since is recognised (see [`ConnTable::hold`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TemplateRef(u64);

impl TemplateRef {
    /// No template.
    pub const NONE: TemplateRef = TemplateRef(0);

    fn new(idx: u32, gen: u32) -> TemplateRef {
        TemplateRef((gen as u64) << 32 | (idx as u64 + 1))
    }

    /// True for [`TemplateRef::NONE`].
    #[inline]
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The template's entry index.
    #[inline]
    pub fn idx(self) -> Option<u32> {
        (self.0 as u32).checked_sub(1)
    }

    fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

// `sw`: generation (16 bits, odd = live) | flags (8) | in_pkts (4) | state (4) |
// expiry tick (32).
const SW_GEN_SHIFT: u32 = 48;
const SW_FLAGS_SHIFT: u32 = 40;
const SW_STATE_SHIFT: u32 = 32;
const SW_IN_PKTS_SHIFT: u32 = 36;
const GEN_MASK: u32 = 0xffff;

/// The generation of an `sw` word (odd = live).
#[inline]
pub fn sw_gen(sw: u64) -> u32 {
    (sw >> SW_GEN_SHIFT) as u32
}
/// The state of an `sw` word.
#[inline]
pub fn sw_state(sw: u64) -> u8 {
    (sw >> SW_STATE_SHIFT) as u8 & STATE_MASK
}
/// The inbound packets counted in an `sw` word (up to [`IN_PKTS_CAP`]).
#[inline]
pub fn sw_in_pkts(sw: u64) -> u8 {
    (sw >> SW_IN_PKTS_SHIFT) as u8 & 0x0f
}
/// One inbound packet, for [`sw_add_in`].
pub const SW_ONE_IN: u64 = 1 << SW_IN_PKTS_SHIFT;
const SW_IN_PKTS: u64 = (IN_PKTS_CAP as u64) << SW_IN_PKTS_SHIFT;
/// `sw` with one more inbound packet counted (unchanged at [`IN_PKTS_CAP`]).
#[inline]
pub fn sw_count_in(sw: u64) -> u64 {
    sw_add_in(sw, SW_ONE_IN)
}
/// `sw` with `inc` ([`SW_ONE_IN`] or 0) added to its inbound packets, unless
/// the count is at [`IN_PKTS_CAP`] (a mask test: the packet path pays little).
#[inline]
pub fn sw_add_in(sw: u64, inc: u64) -> u64 {
    if sw & SW_IN_PKTS != SW_IN_PKTS {
        sw + inc
    } else {
        sw
    }
}
/// The flags of an `sw` word.
#[inline]
pub fn sw_flags(sw: u64) -> u16 {
    (sw >> SW_FLAGS_SHIFT) as u8 as u16
}
/// The expiry tick of an `sw` word.
#[inline]
pub fn sw_expires(sw: u64) -> Tick {
    sw as u32
}
/// An `sw` word from its parts (the flags fit in 8 bits, the generation in 16;
/// `state` is a whole state byte, see [`state_byte`]).
#[inline]
pub fn sw_make(gen: u32, state: u8, flags: u16, expires: Tick) -> u64 {
    debug_assert!(flags <= 0xff && gen <= GEN_MASK);
    ((gen & GEN_MASK) as u64) << SW_GEN_SHIFT
        | ((flags & 0xff) as u64) << SW_FLAGS_SHIFT
        | (state as u64) << SW_STATE_SHIFT
        | expires as u64
}
/// `sw` with its state, flags and expiry replaced (same generation and
/// inbound packet count).
#[inline]
pub fn sw_with(sw: u64, state: u8, flags: u16, expires: Tick) -> u64 {
    debug_assert!(state <= STATE_MASK);
    sw & ((GEN_MASK as u64) << SW_GEN_SHIFT | SW_IN_PKTS)
        | (flags as u8 as u64) << SW_FLAGS_SHIFT
        | (state as u64) << SW_STATE_SHIFT
        | expires as u64
}
#[inline]
fn sw_live(sw: u64) -> bool {
    sw_gen(sw) & 1 == 1
}
/// The generation after `gen`.
#[inline]
fn gen_next(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_MASK
}

// `ctl` of a template: owner generation << 32 | connections controlled; the
// owner has CTL_CLOSED set while a removal decides. Of a free entry: the
// free-stack link (idx + 1).
const CTL_CLOSED: u64 = 1 << 63;
const CTL_COUNT: u64 = 0xffff_ffff;

#[inline]
fn ctl_open(gen: u32) -> u64 {
    (gen as u64) << 32
}

/// One connection (96 bytes).
#[derive(Default)]
#[repr(C)]
pub struct Entry {
    /// Generation | flags | state | expiry: see the module documentation.
    sw: AtomicU64,
    /// Templates: owner generation and count of controlled connections. Free
    /// entries: the free-stack link.
    ctl: AtomicU64,
    /// The controlling template ([`TemplateRef`]).
    control: AtomicU64,
    caddr: [AtomicU64; 2],
    vaddr: [AtomicU64; 2],
    daddr: [AtomicU64; 2],
    /// cport | vport << 16 | dport << 32 | lport << 48.
    ports: AtomicU64,
    /// proto | fwd << 8 | lip << 16 | svc_id << 32.
    meta: AtomicU64,
    dest_id: AtomicU32,
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

    /// A table with exactly `nbuckets` index buckets, for tests that want a
    /// crowded index (displacements, `IndexFull`) or a tiny one (model checks).
    #[doc(hidden)]
    pub fn with_buckets(conn_max: u32, nbuckets: usize, seed: [u64; 4]) -> ConnTable {
        ConnTable {
            index: (0..nbuckets.max(1)).map(|_| Bucket::default()).collect(),
            ..ConnTable::new(conn_max, seed)
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
                    if tick_after(now, view.expires())
                        && (view.flags() & flags::TEMPLATE == 0 || self.n_control(idx) == 0)
                    {
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
        if !sw_live(sw1) {
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
            fwd: (meta >> 8) as u8,
            svc_id: (meta >> 32) as u32,
            dest_id: e.dest_id.load(Relaxed),
            control: TemplateRef(e.control.load(Relaxed)),
            timeout: e.timeout.load(Relaxed),
        };
        // Seqlock close (module documentation): the fields only change with
        // the generation. The second load is the fresher word of the same life.
        fence(Acquire);
        let sw2 = e.sw.load(Relaxed);
        if sw_gen(sw2) != sw_gen(sw1) {
            return None;
        }
        view.sw = sw2;
        Some(view)
    }

    /// Reads entry `idx` if it is live (for listings and the expiry wheel).
    pub fn read(&self, idx: u32) -> Option<ConnView> {
        let e = self.entries.get(idx as usize)?;
        if !sw_live(e.sw.load(Acquire)) {
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
        sw_expires(self.entries[idx as usize].sw.load(Relaxed))
    }

    /// The `sw` word of entry `idx` now.
    #[inline]
    pub fn sw(&self, idx: u32) -> u64 {
        self.entries[idx as usize].sw.load(Acquire)
    }

    /// Sets state, flags and expiry if the entry still holds `expected`; returns
    /// the new word, or the word found. Only one of racing changes wins.
    #[inline]
    pub fn update(
        &self,
        idx: u32,
        expected: u64,
        state: u8,
        fl: u16,
        expires: Tick,
    ) -> Result<u64, u64> {
        if !sw_live(expected) {
            return Err(expected);
        }
        let new = sw_with(expected, state, fl, expires);
        self.entries[idx as usize]
            .sw
            .compare_exchange(expected, new, Relaxed, Relaxed)
            .map(|_| new)
    }

    /// Replaces the entry's word `expected` by `new` (of the same generation);
    /// returns the word found if another change came first.
    #[inline]
    pub fn replace(&self, idx: u32, expected: u64, new: u64) -> Result<u64, u64> {
        debug_assert_eq!(sw_gen(expected), sw_gen(new));
        if !sw_live(expected) {
            return Err(expected);
        }
        self.entries[idx as usize]
            .sw
            .compare_exchange(expected, new, Relaxed, Relaxed)
            .map(|_| new)
    }

    /// Changes the connection seen as `seen` (any word of its life) to
    /// `f(current word)`, retrying while others change it; `f` returning None
    /// leaves it as it is. Returns the word written, or None when `f` declined
    /// or the connection is gone.
    pub fn modify(&self, idx: u32, seen: u64, f: impl Fn(u64) -> Option<u64>) -> Option<u64> {
        let mut cur = seen;
        loop {
            if sw_gen(cur) != sw_gen(seen) || !sw_live(cur) {
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
    pub fn cas_state(&self, idx: u32, expected: u64, state: u8, fl: u16) -> bool {
        self.update(idx, expected, state, fl, sw_expires(expected))
            .is_ok()
    }

    /// Sets the expiry of the connection seen as `seen` (any word of its life),
    /// retrying while others change its state; false once it is gone (removed
    /// by the sweep, maybe reused).
    pub fn refresh(&self, idx: u32, seen: u64, expires: Tick) -> bool {
        let mut cur = seen;
        loop {
            if sw_gen(cur) != sw_gen(seen) || !sw_live(cur) {
                return false;
            }
            if sw_expires(cur) == expires {
                return true;
            }
            match self.update(idx, cur, sw_state(cur), sw_flags(cur), expires) {
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
        let gen = sw_gen(t.sw);
        if t.flags() & flags::TEMPLATE == 0 || !sw_live(t.sw) {
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
        (sw_gen(v.sw) == r.gen() && v.flags() & flags::TEMPLATE != 0).then_some(v)
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
        let seen = e.sw.load(Relaxed);
        if sw_gen(seen) != r.gen() || sw_flags(seen) & flags::TEMPLATE == 0 {
            return;
        }
        self.modify(idx, seen, |sw| {
            let st = sw_state(sw);
            (st & TPL_ASSURED == 0)
                .then(|| sw_with(sw, st | TPL_ASSURED, sw_flags(sw), sw_expires(sw)))
        });
    }

    /// Connections the template in entry `idx` controls (0 for other entries).
    pub fn n_control(&self, idx: u32) -> u32 {
        let e = &self.entries[idx as usize];
        let sw = e.sw.load(Relaxed);
        let c = e.ctl.load(Relaxed);
        if sw_live(sw)
            && sw_flags(sw) & flags::TEMPLATE != 0
            && c >> 32 & 0xffff == sw_gen(sw) as u64
        {
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
        let idx = self.alloc().ok_or(InsertError::Full)?;
        let e = &self.entries[idx as usize];
        // Dead since its removal (which happens-before our pop) or never used.
        let dead = e.sw.load(Relaxed);
        debug_assert!(!sw_live(dead));
        let gen = gen_next(sw_gen(dead));
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
            c.proto as u64 | (c.fwd as u64) << 8 | (c.lip as u64) << 16 | (c.svc_id as u64) << 32,
            Relaxed,
        );
        e.dest_id.store(c.dest_id, Relaxed);
        e.control.store(c.control.0, Relaxed);
        let ctl = if c.flags & flags::TEMPLATE != 0 {
            ctl_open(gen)
        } else {
            0
        };
        e.ctl.store(ctl, Relaxed);
        e.timeout.store(c.timeout, Relaxed);

        // Indexed while still dead: nobody else touches it until it is published.
        let in_key = self.in_key_of(e);
        if !self.index_insert(&in_key, KeyDir::In, idx) {
            self.push_free(idx);
            return Err(InsertError::IndexFull);
        }
        if c.flags & flags::HAS_OUT != 0 {
            let out_key = self.out_key_of(e, c.flags);
            if !self.index_insert(&out_key, KeyDir::Out, idx) {
                self.index_remove(&in_key, KeyDir::In, idx);
                self.push_free(idx);
                return Err(InsertError::IndexFull);
            }
        }
        // Counted before it can be removed, so `live` never drops below zero.
        self.live.fetch_add(1, Relaxed);
        e.sw.store(sw_make(gen, c.state, c.flags, c.expires), Release);
        Ok(idx)
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
        // Both buckets full: move a resident from its first bucket to its second
        // (one level of cuckoo displacement; why this order, in the module doc).
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
                // Copy first, then swap the original for the new key.
                if !Self::put_in(&self.index[alt], v) {
                    continue;
                }
                if slot.compare_exchange(v, val, Release, Relaxed).is_ok() {
                    return true;
                }
                // Moved by another displacer or removed meanwhile: take a copy back.
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

    /// Where the resident that index value `v` (found in bucket `b`) may move:
    /// its second bucket, if `b` is its first. Its key is read under the
    /// generation check and must still be the one `v` stands for.
    fn other_bucket(&self, v: u64, b: usize) -> Option<usize> {
        let idx = (v as u32).wrapping_sub(1);
        let e = self.entries.get(idx as usize)?;
        let sw = e.sw.load(Acquire);
        if !sw_live(sw) {
            return None;
        }
        let dir = if (v >> 32) & 1 == 1 {
            KeyDir::Out
        } else {
            KeyDir::In
        };
        let key = match dir {
            KeyDir::Out => self.out_key_of(e, sw_flags(sw)),
            KeyDir::In => self.in_key_of(e),
        };
        fence(Acquire);
        if sw_gen(e.sw.load(Relaxed)) != sw_gen(sw) {
            return None;
        }
        let h = self.hash(&key);
        if Self::tag_of(h, dir) != (v >> 32) as u32 {
            return None; // the entry was reused for another key
        }
        let (c1, c2) = self.buckets_of(h);
        (c1 == b && c2 != b).then_some(c2)
    }

    /// Removes every copy of the key's index value (a displacement can leave two
    /// for an instant). Acquire: having read a displacer's swap in the first
    /// bucket, it sees the copy in the second.
    fn index_remove(&self, key: &ConnKey, dir: KeyDir, idx: u32) {
        let h = self.hash(key);
        let (b1, b2) = self.buckets_of(h);
        let val = (Self::tag_of(h, dir) as u64) << 32 | (idx as u64 + 1);
        for b in [b1, b2] {
            for slot in &self.index[b].0 {
                let _ = slot.compare_exchange(val, 0, AcqRel, Acquire);
            }
        }
    }

    /// Kills entry `idx` if it still holds `expected`: marks it dead, removes its
    /// keys and returns it to the free stack. Returns the `sw` it had, so the caller
    /// can undo its accounting (active or inactive), or None if it lost a race
    /// (a refresh or state change came first) or the entry is a template that
    /// still controls connections (the kernel's `ip_vs_conn_expire`: "do I
    /// control anybody?"). A reader that found the entry just before sees the
    /// generation change.
    pub fn remove(&self, idx: u32, expected: u64) -> Option<u64> {
        let e = self.entries.get(idx as usize)?;
        if !sw_live(expected) {
            return None;
        }
        let fl = sw_flags(expected);
        let open = ctl_open(sw_gen(expected));
        let template = fl & flags::TEMPLATE != 0;
        // Close the template's count at zero: from here `hold` fails.
        if template
            && e.ctl
                .compare_exchange(open, open | CTL_CLOSED, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        let dead = sw_make(gen_next(sw_gen(expected)), 0, 0, 0);
        if e.sw
            .compare_exchange(expected, dead, AcqRel, Relaxed)
            .is_err()
        {
            if template {
                // Nobody else writes a closed count.
                e.ctl.store(open, Relaxed);
            }
            return None;
        }
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
            if sw_live(self.entries[idx].sw.load(Relaxed)) {
                return Err(format!("live entry {idx} is on the free stack"));
            }
            top = self.entries[idx].ctl.load(Relaxed) as u32;
        }
        // The index: every slot stands for a key of a live entry, once.
        let mut seen = vec![[0u32; 2]; self.entries.len()];
        for (b, bucket) in self.index.iter().enumerate() {
            for slot in &bucket.0 {
                let v = slot.load(Relaxed);
                if v == 0 {
                    continue;
                }
                let idx = (v as u32).wrapping_sub(1) as usize;
                let Some(e) = self.entries.get(idx) else {
                    return Err(format!("bucket {b}: slot {v:#x} past the entries"));
                };
                let sw = e.sw.load(Relaxed);
                if !sw_live(sw) {
                    return Err(format!("bucket {b}: orphan slot {v:#x} (entry {idx} dead)"));
                }
                let dir = if (v >> 32) & 1 == 1 {
                    KeyDir::Out
                } else {
                    KeyDir::In
                };
                if dir == KeyDir::Out && sw_flags(sw) & flags::HAS_OUT == 0 {
                    return Err(format!(
                        "bucket {b}: reply slot for entry {idx} without one"
                    ));
                }
                let key = match dir {
                    KeyDir::In => self.in_key_of(e),
                    KeyDir::Out => self.out_key_of(e, sw_flags(sw)),
                };
                let h = self.hash(&key);
                let (b1, b2) = self.buckets_of(h);
                if (b != b1 && b != b2) || (v >> 32) as u32 != Self::tag_of(h, dir) {
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
            let sw = e.sw.load(Relaxed);
            let is_live = sw_live(sw);
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
            let r = TemplateRef(e.control.load(Relaxed));
            if let Some(t) = r.idx() {
                let tsw = self.entries.get(t as usize).map(|t| t.sw.load(Relaxed));
                match tsw {
                    Some(tsw)
                        if sw_live(tsw)
                            && sw_gen(tsw) == r.gen()
                            && sw_flags(tsw) & flags::TEMPLATE != 0 =>
                    {
                        held[t as usize] += 1
                    }
                    _ => return Err(format!("entry {idx} refers to a gone template {r:?}")),
                }
            }
            let want_out = (sw_flags(sw) & flags::HAS_OUT != 0) as u32;
            if seen[idx] != [1, want_out] {
                return Err(format!(
                    "live entry {idx} is indexed {}/{} times (want 1/{want_out})",
                    seen[idx][0], seen[idx][1]
                ));
            }
        }
        for (idx, e) in self.entries[..fresh].iter().enumerate() {
            let sw = e.sw.load(Relaxed);
            if sw_live(sw) && sw_flags(sw) & flags::TEMPLATE != 0 {
                let c = e.ctl.load(Relaxed);
                if c != ctl_open(sw_gen(sw)) | held[idx] {
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

#[cfg(all(test, loom))]
#[path = "table_loom.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
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
            control: TemplateRef::NONE,
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

    fn template(port: u16) -> NewConn {
        NewConn {
            proto: TEMPLATE_PROTO | 6,
            cport: 0,
            vport: port,
            flags: flags::TEMPLATE,
            ..conn(0, 0)
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
        let mut a = conn(1000, 0);
        a.proto = 17;
        t.insert(&a).unwrap();
        let (old, _) = t.lookup(&in_key(&a), 0).unwrap();
        t.remove(old.idx, old.sw).unwrap();
        let mut b = conn(2000, 0);
        b.proto = 17;
        b.expires = 50;
        let idx = t.insert(&b).unwrap();
        assert_eq!(idx, old.idx);
        // What the worker's UDP `track` does with its view.
        assert!(!t.refresh(old.idx, old.sw, 300));
        assert!(t.update(old.idx, old.sw, 1, 0, 300).is_err());
        assert_eq!(
            t.expires(idx),
            50,
            "a stale view refreshed another connection"
        );
    }

    /// The state byte shares `in_pkts`: state changes keep the count, the
    /// count stops at the cap, and neither leaks into the other.
    #[test]
    fn in_pkts_lives_beside_the_state() {
        let sw = sw_make(1, state_byte(3, 1), flags::HAS_OUT, 500);
        assert_eq!((sw_state(sw), sw_in_pkts(sw)), (3, 1));
        let sw = sw_with(sw, 1, flags::HAS_OUT | flags::INACTIVE, 600);
        assert_eq!((sw_state(sw), sw_in_pkts(sw), sw_expires(sw)), (1, 1, 600));
        let mut x = sw;
        for _ in 0..20 {
            x = sw_count_in(x);
        }
        assert_eq!((sw_state(x), sw_in_pkts(x)), (1, IN_PKTS_CAP));
        assert_eq!(sw_add_in(x, SW_ONE_IN), x, "no write once full");
        assert_eq!(sw_add_in(sw, 0), sw);
        assert_eq!(
            (sw_gen(x), sw_flags(x)),
            (1, flags::HAS_OUT | flags::INACTIVE)
        );
        assert_eq!(state_byte(2, 200), 2 | IN_PKTS_CAP << 4);
    }

    /// `assure` marks a held template ASSURED once, keeping its expiry.
    #[test]
    fn assure_sets_the_template_state() {
        let t = ConnTable::new(4, [1, 2, 3, 4]);
        let tpl = NewConn {
            state: 0,
            ..template(80)
        };
        t.insert(&tpl).unwrap();
        let (v, _) = t.lookup(&in_key(&tpl), 0).unwrap();
        let r = t.hold(&v).unwrap();
        t.assure(r);
        t.assure(r);
        let w = t.template(r).unwrap();
        assert_eq!((w.state(), w.expires()), (TPL_ASSURED, 100));
        t.release(r);
        assert!(t.template(TemplateRef::NONE).is_none());
    }

    #[test]
    fn ticks_wrap() {
        assert!(tick_after(5, 3));
        assert!(!tick_after(3, 5));
        assert!(tick_after(2, u32::MAX - 2));
    }
}
