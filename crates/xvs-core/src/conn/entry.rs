//! One connection or template of the table: the 96-byte entry, its `sw` word
//! ([`Sw`]: generation, flags, state, inbound packets, expiry), and the typed
//! values that go in and come out ([`NewConn`], [`ConnView`]). How entries are
//! shared between threads is in the table's module documentation.

use super::state::TcpState;
use crate::addr::Addr;
use crate::service::FwdMethod;
use crate::time::Tick;
// The atomics come from loom in the model checks (`RUSTFLAGS="--cfg loom"`).
#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::atomic::Ordering::Relaxed;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Flags of an entry, kept in its [`Sw`] (bit values are xvs's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EntryFlags(u8);

impl EntryFlags {
    /// No flag.
    pub const NONE: EntryFlags = EntryFlags(0);
    /// Counted in InActConn (else ActiveConn).
    pub const INACTIVE: EntryFlags = EntryFlags(0x1);
    /// A persistence template.
    pub const TEMPLATE: EntryFlags = EntryFlags(0x2);
    /// No reply seen yet and none expected (DR/TUN): the kernel's NOOUTPUT.
    pub const NOOUTPUT: EntryFlags = EntryFlags(0x4);
    /// Indexed in the reply direction too (NAT/FULLNAT).
    pub const HAS_OUT: EntryFlags = EntryFlags(0x8);
    /// FULLNAT: the reply key uses the local address and port.
    pub const FULLNAT: EntryFlags = EntryFlags(0x10);
    /// The template's dest was found invalid (`ip_vs_check_template`): lookups
    /// skip it, and it lives out its timer.
    pub const DEAD_TEMPLATE: EntryFlags = EntryFlags(0x20);
    /// The template expired while it controlled connections and was re-armed:
    /// its timeout is 60 s from then on (`ip_vs_conn_expire`).
    pub const REARMED: EntryFlags = EntryFlags(0x40);
    /// Published before its reply key is indexed
    /// ([`ConnTable::insert_deferred`](super::ConnTable::insert_deferred)):
    /// until [`ConnTable::complete_out`](super::ConnTable::complete_out)
    /// clears it, the inserter owns the reply key and shares the free.
    pub const OUT_PENDING: EntryFlags = EntryFlags(0x80);

    /// Whether every flag of `f` is set.
    #[inline]
    pub const fn contains(self, f: EntryFlags) -> bool {
        self.0 & f.0 == f.0
    }

    /// These flags with `f` set (`on`) or cleared.
    #[inline]
    #[must_use]
    pub const fn with(self, f: EntryFlags, on: bool) -> EntryFlags {
        if on {
            EntryFlags(self.0 | f.0)
        } else {
            EntryFlags(self.0 & !f.0)
        }
    }

    /// Counted in ActiveConn (not [`EntryFlags::INACTIVE`]).
    #[inline]
    pub const fn is_active(self) -> bool {
        !self.contains(EntryFlags::INACTIVE)
    }

    /// A persistence template.
    #[inline]
    pub const fn is_template(self) -> bool {
        self.contains(EntryFlags::TEMPLATE)
    }

    /// The flags as their bits.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for EntryFlags {
    type Output = EntryFlags;
    #[inline]
    fn bitor(self, o: EntryFlags) -> EntryFlags {
        EntryFlags(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for EntryFlags {
    #[inline]
    fn bitor_assign(&mut self, o: EntryFlags) {
        self.0 |= o.0;
    }
}

/// The state an entry keeps: a connection's TCP state (UDP connections stay
/// in `None`), or a template's (`IP_VS_CTPL_S_NONE` / `IP_VS_CTPL_S_ASSURED`),
/// in the one 4-bit field, as the kernel keeps both in `cp->state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// A connection.
    Conn(TcpState),
    /// A template; assured once a connection it controls reached
    /// ESTABLISHED (`ip_vs_control_assure_ct`).
    Template {
        /// `IP_VS_CTPL_S_ASSURED`.
        assured: bool,
    },
}

impl EntryState {
    /// A new template's state.
    pub const TEMPLATE: EntryState = EntryState::Template { assured: false };

    /// The kernel's number of the state (`IP_VS_TCP_S_*`, `IP_VS_CTPL_S_*`).
    #[inline]
    pub const fn index(self) -> u8 {
        match self {
            EntryState::Conn(s) => s as u8,
            EntryState::Template { assured } => assured as u8,
        }
    }

    /// The state of number `index` (the kernel's) of an entry with `flags`.
    #[inline]
    pub fn of_index(index: u8, flags: EntryFlags) -> EntryState {
        if flags.is_template() {
            EntryState::Template {
                assured: index & 1 != 0,
            }
        } else {
            EntryState::Conn(TcpState::from_index(index))
        }
    }

    /// A connection's TCP state (`None` for a template).
    #[inline]
    pub fn tcp(self) -> TcpState {
        match self {
            EntryState::Conn(s) => s,
            EntryState::Template { .. } => TcpState::None,
        }
    }
}

/// The count of inbound packets (the kernel's `in_pkts`, for drop_entry)
/// stops here: `todrop_entry` only tells 0..=8 from "more than 8", and a
/// count that no longer changes costs the fast path no write.
pub const IN_PKTS_CAP: u8 = 15;

// `sw`: generation (16 bits, odd = live) | flags (8) | in_pkts (4) | state (4) |
// expiry tick (32).
const GEN_SHIFT: u32 = 48;
const FLAGS_SHIFT: u32 = 40;
const IN_PKTS_SHIFT: u32 = 36;
const STATE_SHIFT: u32 = 32;
const STATE_MASK: u8 = 0x0f;
const GEN_MASK: u32 = 0xffff;
const ONE_IN: u64 = 1 << IN_PKTS_SHIFT;
const IN_PKTS_FULL: u64 = (IN_PKTS_CAP as u64) << IN_PKTS_SHIFT;

/// The word of an entry that changes while it lives: generation (16 bits, odd
/// = live), flags (8), inbound packets (4), state (4) and expiry tick (32).
/// Every change of a live entry is one compare-and-swap of it (see the table's
/// module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sw(u64);

impl Sw {
    /// A word from its parts (`in_pkts` stops at [`IN_PKTS_CAP`]).
    #[inline]
    pub fn new(gen: u32, state: EntryState, in_pkts: u8, flags: EntryFlags, expires: Tick) -> Sw {
        debug_assert!(gen <= GEN_MASK);
        Sw(((gen & GEN_MASK) as u64) << GEN_SHIFT
            | (flags.0 as u64) << FLAGS_SHIFT
            | (in_pkts.min(IN_PKTS_CAP) as u64) << IN_PKTS_SHIFT
            | (state.index() as u64) << STATE_SHIFT
            | expires as u64)
    }

    /// The word as stored.
    #[inline]
    pub(super) const fn bits(self) -> u64 {
        self.0
    }

    /// The word of stored bits.
    #[inline]
    pub(super) const fn from_bits(bits: u64) -> Sw {
        Sw(bits)
    }

    /// The generation (odd = live).
    #[inline]
    pub const fn gen(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }

    /// Whether the entry is live (its generation odd).
    #[inline]
    pub const fn is_live(self) -> bool {
        self.gen() & 1 == 1
    }

    /// The flags.
    #[inline]
    pub const fn flags(self) -> EntryFlags {
        EntryFlags((self.0 >> FLAGS_SHIFT) as u8)
    }

    /// The state.
    #[inline]
    pub fn state(self) -> EntryState {
        EntryState::of_index(self.state_index(), self.flags())
    }

    /// A connection's TCP state (what [`Sw::state`] says, without asking
    /// whether the entry is a template).
    #[inline]
    pub fn tcp_state(self) -> TcpState {
        TcpState::from_index(self.state_index())
    }

    /// The state's number ([`EntryState::index`]).
    #[inline]
    pub const fn state_index(self) -> u8 {
        (self.0 >> STATE_SHIFT) as u8 & STATE_MASK
    }

    /// The inbound packets counted (up to [`IN_PKTS_CAP`]).
    #[inline]
    pub const fn in_pkts(self) -> u8 {
        (self.0 >> IN_PKTS_SHIFT) as u8 & STATE_MASK
    }

    /// The expiry tick.
    #[inline]
    pub const fn expires(self) -> Tick {
        self.0 as u32
    }

    /// This word with state, flags and expiry replaced (the same generation
    /// and inbound packets).
    #[inline]
    #[must_use]
    pub fn with(self, state: EntryState, flags: EntryFlags, expires: Tick) -> Sw {
        Sw(self.0 & ((GEN_MASK as u64) << GEN_SHIFT | IN_PKTS_FULL)
            | (flags.0 as u64) << FLAGS_SHIFT
            | (state.index() as u64) << STATE_SHIFT
            | expires as u64)
    }

    /// This word with its flags replaced.
    #[inline]
    #[must_use]
    pub const fn with_flags(self, flags: EntryFlags) -> Sw {
        Sw(self.0 & !(0xff << FLAGS_SHIFT) | (flags.0 as u64) << FLAGS_SHIFT)
    }

    /// This word with its expiry replaced.
    #[inline]
    #[must_use]
    pub const fn with_expires(self, expires: Tick) -> Sw {
        Sw(self.0 & !0xffff_ffff | expires as u64)
    }

    /// This word with one more inbound packet counted if `inbound`, unless
    /// the count is at [`IN_PKTS_CAP`] (a mask test: the packet path pays
    /// little).
    #[inline]
    #[must_use]
    pub const fn count_in(self, inbound: bool) -> Sw {
        if self.0 & IN_PKTS_FULL != IN_PKTS_FULL {
            Sw(self.0 + inbound as u64 * ONE_IN)
        } else {
            self
        }
    }

    /// The dead word that ends this life of the entry (the next generation).
    #[inline]
    pub(super) fn killed(self) -> Sw {
        Sw::new(
            gen_next(self.gen()),
            EntryState::Conn(TcpState::None),
            0,
            EntryFlags::NONE,
            0,
        )
    }
}

/// The generation after `gen`.
#[inline]
pub(super) fn gen_next(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_MASK
}

/// A connection's counted reference to the template that controls it: the
/// template's entry and generation, so that a reference to an entry that has
/// been freed or reused since is recognised (see `ConnTable::hold`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TemplateRef(u64);

impl TemplateRef {
    /// No template.
    pub const NONE: TemplateRef = TemplateRef(0);

    pub(super) fn new(idx: u32, gen: u32) -> TemplateRef {
        TemplateRef((gen as u64) << 32 | (idx as u64 + 1))
    }

    pub(super) const fn from_bits(bits: u64) -> TemplateRef {
        TemplateRef(bits)
    }

    pub(super) const fn bits(self) -> u64 {
        self.0
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

    pub(super) fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Everything needed to create a connection or template.
#[derive(Debug, Clone, Copy)]
pub struct NewConn {
    /// IP protocol; templates have `TEMPLATE_PROTO` set.
    pub proto: u8,
    /// Client address.
    pub caddr: Addr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (VIP).
    pub vaddr: Addr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: Addr,
    /// Real server port.
    pub dport: u16,
    /// FULLNAT local address id (`ConnTable::register_lip`) and port.
    pub lip: u16,
    /// FULLNAT local port.
    pub lport: u16,
    /// How packets reach the real server.
    pub fwd: FwdMethod,
    /// The service's id ([`crate::service::Service::id`]).
    pub svc_id: u32,
    /// The real server's id.
    pub dest_id: u32,
    /// The controlling template, held with `ConnTable::hold` (the new
    /// connection takes over the count), or [`TemplateRef::NONE`].
    pub control: TemplateRef,
    /// The state it starts in.
    pub state: EntryState,
    /// Inbound packets counted so far (0 for a connection no packet made).
    pub in_pkts: u8,
    /// Its flags.
    pub flags: EntryFlags,
    /// Expiry tick.
    pub expires: Tick,
    /// Timeout in seconds kept with the entry (templates: the persistence timeout).
    pub timeout: u32,
}

/// A consistent copy of a live entry, taken under its generation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnView {
    /// Entry index in the table.
    pub idx: u32,
    /// The `sw` word the copy was taken under (for `ConnTable::replace`).
    pub sw: Sw,
    /// IP protocol; templates have `TEMPLATE_PROTO` set.
    pub proto: u8,
    /// Client address.
    pub caddr: Addr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (VIP).
    pub vaddr: Addr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: Addr,
    /// Real server port.
    pub dport: u16,
    /// FULLNAT local address id.
    pub lip: u16,
    /// FULLNAT local port.
    pub lport: u16,
    /// How packets reach the real server.
    pub fwd: FwdMethod,
    /// The service's id.
    pub svc_id: u32,
    /// The real server's id.
    pub dest_id: u32,
    /// The controlling template, or [`TemplateRef::NONE`].
    pub control: TemplateRef,
    /// Timeout in seconds kept with the entry (templates: the persistence timeout).
    pub timeout: u32,
}

impl ConnView {
    /// The state the copy was taken under.
    #[inline]
    pub fn state(&self) -> EntryState {
        self.sw.state()
    }

    /// A connection's TCP state (`None` for a template).
    #[inline]
    pub fn tcp_state(&self) -> TcpState {
        self.state().tcp()
    }

    /// A template marked ASSURED.
    #[inline]
    pub fn is_assured(&self) -> bool {
        self.state() == EntryState::Template { assured: true }
    }

    /// The flags the copy was taken under.
    #[inline]
    pub fn flags(&self) -> EntryFlags {
        self.sw.flags()
    }

    /// The expiry tick the copy was taken under.
    #[inline]
    pub fn expires(&self) -> Tick {
        self.sw.expires()
    }
}

// `ctl` of a template: owner generation << 32 | connections controlled; the
// owner has CTL_CLOSED set while a removal decides. Of a free entry: the
// free-stack link (idx + 1).
pub(super) const CTL_CLOSED: u64 = 1 << 63;
pub(super) const CTL_COUNT: u64 = 0xffff_ffff;

/// The `ctl` word of a template of generation `gen` with no connections.
#[inline]
pub(super) fn ctl_open(gen: u32) -> u64 {
    (gen as u64) << 32
}

/// One connection (96 bytes). Every field is an atomic, so a reader racing a
/// writer sees stale or fresh values, never undefined ones.
#[derive(Default)]
#[repr(C)]
pub(super) struct Entry {
    /// Generation | flags | state | expiry: [`Sw`].
    pub(super) sw: AtomicU64,
    /// Templates: owner generation and count of controlled connections. Free
    /// entries: the free-stack link.
    pub(super) ctl: AtomicU64,
    /// The controlling template ([`TemplateRef`]).
    pub(super) control: AtomicU64,
    pub(super) caddr: [AtomicU64; 2],
    pub(super) vaddr: [AtomicU64; 2],
    pub(super) daddr: [AtomicU64; 2],
    /// cport | vport << 16 | dport << 32 | lport << 48.
    pub(super) ports: AtomicU64,
    /// proto | fwd << 8 | lip << 16 | svc_id << 32.
    pub(super) meta: AtomicU64,
    pub(super) dest_id: AtomicU32,
    pub(super) timeout: AtomicU32,
}

/// An address from its two words.
#[inline]
pub(super) fn load_addr(a: &[AtomicU64; 2]) -> Addr {
    let x = a[0].load(Relaxed).to_ne_bytes();
    let y = a[1].load(Relaxed).to_ne_bytes();
    let mut o = [0u8; 16];
    o[..8].copy_from_slice(&x);
    o[8..].copy_from_slice(&y);
    Addr(o)
}

/// Stores an address in two words.
#[inline]
pub(super) fn store_addr(a: &[AtomicU64; 2], v: &Addr) {
    let (x, y) = addr_words(v);
    a[0].store(x, Relaxed);
    a[1].store(y, Relaxed);
}

/// Whether two words hold the address (without copying them out).
#[inline]
pub(super) fn addr_eq(a: &[AtomicU64; 2], v: &Addr) -> bool {
    let (x, y) = addr_words(v);
    a[0].load(Relaxed) == x && a[1].load(Relaxed) == y
}

#[inline]
fn addr_words(v: &Addr) -> (u64, u64) {
    let mut x = [0u8; 8];
    let mut y = [0u8; 8];
    x.copy_from_slice(&v.0[..8]);
    y.copy_from_slice(&v.0[8..]);
    (u64::from_ne_bytes(x), u64::from_ne_bytes(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_96_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 96);
    }

    /// The state shares its byte with `in_pkts`: state changes keep the
    /// count, the count stops at the cap, and neither leaks into the other.
    #[test]
    fn in_pkts_lives_beside_the_state() {
        let syn_recv = EntryState::Conn(TcpState::SynRecv);
        let est = EntryState::Conn(TcpState::Established);
        let sw = Sw::new(1, syn_recv, 1, EntryFlags::HAS_OUT, 500);
        assert_eq!((sw.state(), sw.in_pkts()), (syn_recv, 1));
        let fl = EntryFlags::HAS_OUT | EntryFlags::INACTIVE;
        let sw = sw.with(est, fl, 600);
        assert_eq!((sw.state(), sw.in_pkts(), sw.expires()), (est, 1, 600));
        let mut x = sw;
        for _ in 0..20 {
            x = x.count_in(true);
        }
        assert_eq!((x.state(), x.in_pkts()), (est, IN_PKTS_CAP));
        assert_eq!(x.count_in(true), x, "no write once full");
        assert_eq!(sw.count_in(false), sw);
        assert_eq!((x.gen(), x.flags()), (1, fl));
        assert_eq!(Sw::new(1, est, 200, fl, 0).in_pkts(), IN_PKTS_CAP);
    }

    /// A template's state reads back as a template's, a connection's as TCP.
    #[test]
    fn state_follows_the_template_flag() {
        let t = Sw::new(1, EntryState::TEMPLATE, 0, EntryFlags::TEMPLATE, 9);
        assert_eq!(t.state(), EntryState::Template { assured: false });
        let t = t.with(
            EntryState::Template { assured: true },
            t.flags() | EntryFlags::REARMED,
            10,
        );
        assert_eq!(t.state(), EntryState::Template { assured: true });
        assert_eq!(t.with_expires(11).with_flags(t.flags()).expires(), 11);
        assert!(t.flags().contains(EntryFlags::REARMED) && t.flags().is_template());
        let c = Sw::new(
            3,
            EntryState::Conn(TcpState::TimeWait),
            0,
            EntryFlags::NONE,
            0,
        );
        assert_eq!(c.state().tcp(), TcpState::TimeWait);
        assert!(c.is_live() && !c.killed().is_live());
        assert_eq!(c.killed().gen(), 4);
    }
}
