//! One data-path worker: frame in, verdict out.
//!
//! The per-packet path: parse → look the 5-tuple up in the connection table →
//! (new flow: find the service, schedule or follow a template, insert) → TCP state
//! transition and timer refresh → rewrite for the forwarding method → next hop.
//! No allocation, no lock, no syscall; counters are the worker's own.

use super::persist::{self, NoPick};
use super::snapshot::{ReuseMode, Snapshot};
use super::stats::{bump, DropReason, WorkerStats};
use super::xmit::{self, Route, XmitError};
use super::Engine;
use crate::addr::Addr;
use crate::conn::{tcp_transition, Direction, TCP_RST, TCP_SYN};
use crate::conn::{
    ConnKey, ConnView, EntryFlags, EntryState, KeyDir, NewConn, OutDone, PendingOut, TcpState,
    TemplateRef,
};
use crate::fib::{Fib, NextHop, Resolve};
use crate::frame::{Frame, PortId};
use crate::rewrite::icmp;
use crate::service::{Dest, FwdMethod};
use crate::time::{secs_to_ticks, tick_after, tick_of, Tick, Time};
use crate::wire::parse::{parse, Frag, PacketInfo, ParseError};
use std::sync::Arc;

use crate::wire::parse::{PROTO_TCP, PROTO_UDP};

/// What to do with a frame after [`Worker::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a frame's verdict says where it goes (or why it was dropped)"]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Tx(PortId),
    /// Not ours: hand it to the kernel unchanged.
    Pass,
    /// Dropped, and counted under this reason.
    Drop(DropReason),
}

/// Remembers, per worker, which connection the first fragment of a datagram
/// belonged to, so later fragments (which carry no ports) can follow it.
struct FragCache {
    slots: Box<[FragSlot]>,
}

#[derive(Clone, Copy, Default)]
struct FragSlot {
    saddr: Addr,
    daddr: Addr,
    id: u32,
    proto: u8,
    inbound: bool,
    expires: Tick,
    route: Option<Route>,
}

const FRAG_SLOTS: usize = 1024;
/// Ticks a fragment cache entry stays valid (the kernel's ipfrag_time is 30 s).
const FRAG_TICKS: u32 = 30 * 100;

impl FragCache {
    fn new() -> Self {
        FragCache {
            slots: vec![FragSlot::default(); FRAG_SLOTS].into_boxed_slice(),
        }
    }

    #[inline]
    fn slot_of(saddr: &Addr, daddr: &Addr, id: u32, proto: u8) -> usize {
        let h = saddr
            .fold32()
            .wrapping_mul(0x9E37_79B1)
            .wrapping_add(daddr.fold32())
            .wrapping_mul(0x85EB_CA6B)
            ^ id.wrapping_mul(0xC2B2_AE35)
            ^ proto as u32;
        (h as usize) % FRAG_SLOTS
    }

    fn remember(&mut self, info: &PacketInfo, id: u32, inbound: bool, r: &Route, now: Tick) {
        let s = &mut self.slots[Self::slot_of(&info.saddr, &info.daddr, id, info.proto)];
        *s = FragSlot {
            saddr: info.saddr,
            daddr: info.daddr,
            id,
            proto: info.proto,
            inbound,
            expires: now.wrapping_add(FRAG_TICKS),
            route: Some(*r),
        };
    }

    fn find(&self, info: &PacketInfo, id: u32, now: Tick) -> Option<(Route, bool)> {
        let s = &self.slots[Self::slot_of(&info.saddr, &info.daddr, id, info.proto)];
        let r = s.route?;
        if s.saddr != info.saddr
            || s.daddr != info.daddr
            || s.id != id
            || s.proto != info.proto
            || tick_after(now, s.expires)
        {
            return None;
        }
        Some((r, s.inbound))
    }
}

/// A per-worker, direct-mapped cache of next hops, valid for one generation of
/// the [`Fib`]: the route and neighbour lookups happen once per destination.
struct NhCache {
    slots: Box<[(Addr, u64, Option<NextHop>)]>,
}

const NH_SLOTS: usize = 1024;

impl NhCache {
    fn new() -> Self {
        NhCache {
            slots: vec![(Addr::UNSPECIFIED, u64::MAX, None); NH_SLOTS].into_boxed_slice(),
        }
    }

    #[inline]
    fn slot(a: &Addr) -> usize {
        (a.fold32().wrapping_mul(0x9E37_79B1) >> 22) as usize % NH_SLOTS
    }

    /// The next hop of `dst` from the cache, else from `fib` (kept when
    /// resolved; an unresolved one makes the fib ask the kernel).
    #[inline]
    fn resolve(&mut self, fib: &dyn Fib, fib_gen: u64, dst: &Addr) -> Result<NextHop, DropReason> {
        let i = Self::slot(dst);
        let (a, gen, nh) = &self.slots[i];
        if *gen == fib_gen && a == dst {
            if let Some(nh) = nh {
                return Ok(*nh);
            }
        }
        match fib.resolve(dst) {
            Resolve::Ok(nh) => {
                self.slots[i] = (*dst, fib_gen, Some(nh));
                Ok(nh)
            }
            Resolve::Unresolved => Err(DropReason::NoNeighbour),
            Resolve::NoRoute => Err(DropReason::NoRoute),
        }
    }
}

/// Frames per batch the worker can prepare ahead.
pub const MAX_BATCH: usize = 64;

/// What [`Worker::prepare`] learned about a frame of the batch.
#[derive(Clone, Copy)]
struct Prepared {
    parsed: Result<PacketInfo, ParseError>,
    hash: u64,
}

/// A new connection of the batch whose reply key waits for
/// [`Worker::finish_batch`], with what undoing it needs.
#[derive(Clone, Copy, Default)]
struct Pending {
    out: PendingOut,
    dest_id: u32,
    control: TemplateRef,
}

/// What [`Worker::schedule`] chose for a new connection.
struct Scheduled {
    svc_id: u32,
    /// One-packet scheduling (`-o`) of a UDP datagram: no connection is kept.
    one_packet: bool,
    picked: persist::Picked,
}

/// A new connection as [`Worker::build_conn`] makes it, not yet entered.
struct Built {
    conn: NewConn,
    /// FULLNAT: the address of `conn.lip`.
    laddr: Addr,
}

/// FULLNAT local address and port allocation of one worker.
struct PortAlloc {
    lip_cursor: u32,
    lport_cursor: u32,
}

impl PortAlloc {
    /// A local address and port for a new conn to `dest`: addresses in turn,
    /// ports from this worker's share of 1024..65535 (ports are dealt out to
    /// workers by residue, so two workers never pick the same one), skipping any
    /// (LIP, lport, RIP, rport) already in use.
    fn alloc(
        &mut self,
        conns: &crate::conn::ConnTable,
        lips: &[u16],
        workers: u32,
        tick: Tick,
        dest: &crate::service::Dest,
        proto: u8,
    ) -> Option<(u16, Addr, u16)> {
        if lips.is_empty() {
            return None;
        }
        let daddr = Addr::from(dest.addr);
        let workers = workers.max(1);
        // A range that is a multiple of the worker count keeps the residues apart.
        let span = 64512 - 64512 % workers;
        for _ in 0..lips.len() {
            self.lip_cursor = self.lip_cursor.wrapping_add(1);
            let lip = lips[self.lip_cursor as usize % lips.len()];
            let laddr = conns.lip(lip);
            if laddr.is_v4() != daddr.is_v4() {
                continue;
            }
            for _ in 0..64 {
                self.lport_cursor = (self.lport_cursor + workers) % span;
                let lport = 1024 + self.lport_cursor as u16;
                let key = ConnKey {
                    proto,
                    saddr: daddr,
                    sport: dest.port,
                    daddr: laddr,
                    dport: lport,
                };
                if conns.lookup(&key, tick).is_none() {
                    return Some((lip, laddr, lport));
                }
            }
        }
        None
    }
}

/// A data-path worker. Create with [`Engine::worker`].
pub struct Worker {
    engine: Arc<Engine>,
    fib: Arc<dyn Fib>,
    snap: Arc<Snapshot>,
    id: u32,
    stats: Arc<WorkerStats>,
    now: Time,
    tick: Tick,
    secure: bool,
    drop_rate: u32,
    drop_counter: u32,
    ports: PortAlloc,
    frags: FragCache,
    nh: NhCache,
    batch: Box<[Prepared]>,
    batch_len: usize,
    /// Between [`Worker::prepare`] and [`Worker::finish_batch`]: new NAT
    /// connections' reply keys are indexed at the end of the batch.
    defer_out: bool,
    pending: Box<[Pending]>,
    pending_len: usize,
    fib_gen: u64,
    icmp_tokens: u32,
    icmp_refill_tick: Tick,
    ip_id: u16,
    /// Connection sync (master): this worker's queue, the switch and the
    /// knobs, read once per batch.
    sync_q: Arc<super::sync::SyncQueue>,
    sync_on: bool,
    sync_knobs: xvs_sync::SyncKnobs,
    sync_knob_gen: u64,
}

/// Generated ICMP messages a worker may send per second (burst and refill).
const ICMP_BURST: u32 = 100;

impl Drop for Worker {
    /// A worker dropped inside a batch (a caller that never finished it)
    /// still indexes its connections' reply keys: the table must not keep
    /// entries that nobody completes.
    fn drop(&mut self) {
        self.complete_pending();
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

impl Worker {
    pub(crate) fn new(
        engine: Arc<Engine>,
        id: u32,
        stats: Arc<WorkerStats>,
        fib: Arc<dyn Fib>,
    ) -> Worker {
        let snap = engine.snapshot();
        let workers = engine.limits.workers.max(1);
        Worker {
            sync_q: engine.sync.new_queue(),
            engine,
            fib,
            snap,
            id,
            stats,
            now: Time::ZERO,
            tick: 0,
            secure: false,
            drop_rate: 0,
            drop_counter: 0,
            ports: PortAlloc {
                lip_cursor: 0,
                lport_cursor: id % workers,
            },
            frags: FragCache::new(),
            nh: NhCache::new(),
            batch: vec![
                Prepared {
                    parsed: Err(ParseError::NotIp),
                    hash: 0,
                };
                MAX_BATCH
            ]
            .into_boxed_slice(),
            batch_len: 0,
            defer_out: false,
            pending: vec![Pending::default(); MAX_BATCH].into_boxed_slice(),
            pending_len: 0,
            fib_gen: 0,
            icmp_tokens: ICMP_BURST,
            icmp_refill_tick: 0,
            ip_id: (id as u16).wrapping_mul(7919),
            sync_on: false,
            sync_knobs: xvs_sync::SyncKnobs::default(),
            sync_knob_gen: u64::MAX,
        }
    }

    /// This worker's counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Call once per batch: takes the time and picks up new rules.
    #[inline]
    pub fn begin_batch(&mut self, now: Time) {
        self.now = now;
        self.tick = tick_of(now);
        if self.engine.generation() != self.snap.generation {
            self.snap = self.engine.snapshot();
        }
        self.fib_gen = self.fib.generation();
        self.secure = self.engine.secure_tcp_on();
        self.drop_rate = self.engine.drop_packet_rate();
        if tick_after(self.tick, self.icmp_refill_tick.wrapping_add(100)) {
            self.icmp_tokens = ICMP_BURST;
            self.icmp_refill_tick = self.tick;
        }
        self.sync_on = self.engine.sync.is_master();
        if self.sync_on && self.engine.sync.knob_gen() != self.sync_knob_gen {
            self.sync_knob_gen = self.engine.sync.knob_gen();
            self.sync_knobs = self.engine.sync.knobs();
        }
    }

    /// Sync hook after a client packet of conn `v` (its state already
    /// tracked): the conn, then its template, as `ip_vs_sync_conn` goes.
    #[cold]
    fn sync_after(&self, v: &ConnView) {
        let conns = &self.engine.conns;
        let sw = conns.sw(v.idx);
        if sw.gen() == v.sw.gen() {
            self.engine.sync_consider(
                &self.sync_q,
                &self.sync_knobs,
                &self.snap.timeouts,
                v,
                sw,
                self.now,
            );
        }
        self.sync_template(v.control);
    }

    /// The template half of [`Worker::sync_after`] (alone for a one-packet conn).
    #[cold]
    fn sync_template(&self, control: TemplateRef) {
        let Some(t) = control.idx() else {
            return;
        };
        if let Some(tv) = self.engine.conns.read(t) {
            self.engine.sync_consider(
                &self.sync_q,
                &self.sync_knobs,
                &self.snap.timeouts,
                &tv,
                tv.sw,
                self.now,
            );
        }
    }

    /// Looks at the frames of a batch before they are processed: parses them and
    /// touches their connections' index buckets and entries, so that the memory
    /// loads of the whole batch overlap instead of stalling one frame at a time.
    /// Then call [`Worker::process_prepared`] for frame `i` of the batch.
    pub fn prepare<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) {
        // A caller that skipped finish_batch: the last batch is completed now.
        self.finish_batch();
        self.defer_out = true;
        let conns = &self.engine.conns;
        let mut n = 0;
        for (slot, data) in self.batch.iter_mut().zip(frames) {
            let parsed = parse(data);
            let mut hash = 0;
            if let Ok(i) = &parsed {
                if i.icmp.is_none() && matches!(i.proto, PROTO_TCP | PROTO_UDP) {
                    hash = conns.hash(&ConnKey::of(i));
                    conns.prefetch(hash);
                }
            }
            *slot = Prepared { parsed, hash };
            n += 1;
        }
        self.batch_len = n;
        for p in &self.batch[..n] {
            if p.hash != 0 {
                conns.prefetch_entry(p.hash);
            }
        }
    }

    /// Ends a batch begun by [`Worker::prepare`]: indexes the reply keys of
    /// the connections it made (their buckets were prefetched when they were
    /// made, so these inserts find them in cache). Call it before the batch's
    /// frames are sent, so that no reply can come before its key.
    pub fn finish_batch(&mut self) {
        self.complete_pending();
        self.defer_out = false;
    }

    /// Indexes the pending reply keys. One that finds no index room takes its
    /// connection back (counted as `conn_table_full`; the first packet went).
    fn complete_pending(&mut self) {
        for k in 0..self.pending_len {
            let p = self.pending[k];
            if let OutDone::IndexFull(sw) = self.engine.conns.complete_out(p.out) {
                self.engine
                    .unaccount(&self.snap, p.dest_id, sw.flags(), p.control, self.tick);
                self.stats.count_drop(DropReason::ConnTableFull);
            }
        }
        self.pending_len = 0;
    }

    /// Processes frame `i` of the batch given to [`Worker::prepare`] (the same
    /// bytes). Falls back to [`Worker::process`] if `i` was not prepared.
    #[inline]
    pub fn process_prepared(&mut self, i: usize, frame: &mut Frame, rx_port: u16) -> Verdict {
        if i >= self.batch_len {
            return self.process(frame, rx_port);
        }
        bump(&self.stats.rx_packets, 1);
        // Borrow the batch out of `self` (a pointer swap) instead of copying the entry.
        let batch = std::mem::take(&mut self.batch);
        let p = &batch[i];
        let v = self.process_parsed(frame, rx_port, &p.parsed, p.hash);
        self.batch = batch;
        self.count(v);
        v
    }

    /// Processes one frame received on `rx_port`: rewrites it in place (it may
    /// grow into its headroom) and says where it goes.
    pub fn process(&mut self, frame: &mut Frame, rx_port: u16) -> Verdict {
        bump(&self.stats.rx_packets, 1);
        let parsed = parse(frame.data());
        let v = self.process_parsed(frame, rx_port, &parsed, 0);
        self.count(v);
        v
    }

    #[inline]
    fn count(&self, v: Verdict) {
        match v {
            Verdict::Tx(_) => bump(&self.stats.tx_packets, 1),
            Verdict::Pass => bump(&self.stats.passed, 1),
            Verdict::Drop(r) => self.stats.count_drop(r),
        }
    }

    fn process_parsed(
        &mut self,
        frame: &mut Frame,
        rx_port: u16,
        parsed: &Result<PacketInfo, ParseError>,
        hash: u64,
    ) -> Verdict {
        let info = match parsed {
            Ok(i) => i,
            Err(ParseError::NotIp) => return Verdict::Pass,
            Err(e) => return Verdict::Drop(DropReason::of_parse(*e)),
        };
        if info.icmp.is_some() {
            return self.icmp_error(frame, info);
        }
        if let Frag::Later { id, .. } = info.frag {
            return self.later_fragment(frame, info, id);
        }
        if info.proto != PROTO_TCP && info.proto != PROTO_UDP {
            return Verdict::Pass;
        }
        let key = ConnKey::of(info);
        let conns = &self.engine.conns;
        let hash = if hash != 0 { hash } else { conns.hash(&key) };
        match conns.lookup_hashed(&key, hash, self.tick) {
            Some((v, KeyDir::In)) => self.inbound(frame, info, v, rx_port),
            Some((v, KeyDir::Out)) => self.outbound(frame, info, v),
            None => self.new_conn(frame, info, rx_port),
        }
    }

    /// Removes a connection now (expire_nodest_conn, conn reuse), undoing its
    /// accounting. Like the kernel's `ip_vs_conn_expire`, an entry that still
    /// controls connections (a template with conns) stays: the table refuses to
    /// remove it, atomically with the removal.
    fn expire_now(&self, v: &ConnView) -> bool {
        if self.engine.conns.remove(v.idx, v.sw).is_none() {
            return false;
        }
        self.engine
            .unaccount(&self.snap, v.dest_id, v.flags(), v.control, self.tick);
        true
    }

    /// The state transition and timer refresh of a packet of conn `v`: one
    /// compare-and-swap of the entry's word, only when something changes. It
    /// fails if the conn was removed since `v` was read (the sweep found it
    /// expired first); then nothing is written, so a stale view never touches
    /// a reused entry.
    #[inline(always)]
    fn track(&self, v: ConnView, info: &PacketInfo, dir: Direction) {
        let conns = &self.engine.conns;
        let timeouts = &self.snap.timeouts;
        let mut sw = v.sw;
        // ip_vs_in_hook counts inbound packets in `in_pkts` (for drop_entry);
        // the count stops, so an established flow soon writes nothing again.
        let inbound = dir == Direction::Input;
        // Retry a lost race with the other direction a few times.
        for _ in 0..4 {
            let fl = sw.flags();
            let (new, nfl, established) = if v.proto == PROTO_TCP {
                let dir = if inbound && fl.contains(EntryFlags::NOOUTPUT) {
                    Direction::InputOnly
                } else {
                    dir
                };
                let old = sw.tcp_state();
                let state = tcp_transition(self.secure, dir, old, info.tcp_flags);
                let mut nfl = fl.with(EntryFlags::INACTIVE, !state.is_active());
                if dir == Direction::Output {
                    nfl = nfl.with(EntryFlags::NOOUTPUT, false);
                }
                let exp = self
                    .tick
                    .wrapping_add(secs_to_ticks(timeouts.tcp_state(state)));
                let entered = state != old && state == TcpState::Established;
                (sw.with(EntryState::Conn(state), nfl, exp), nfl, entered)
            } else {
                let exp = self.tick.wrapping_add(secs_to_ticks(timeouts.udp));
                (sw.with_expires(exp), fl, false)
            };
            let new = new.count_in(inbound);
            if new == sw {
                return;
            }
            match conns.replace(v.idx, sw, new) {
                Ok(_) => {
                    let (was_active, active) = (fl.is_active(), nfl.is_active());
                    if was_active != active {
                        if let Some(d) = self.snap.dest(v.dest_id) {
                            if active {
                                d.conn_activated();
                            } else {
                                d.conn_deactivated();
                            }
                        }
                    }
                    // set_tcp_state: entering ESTABLISHED assures the template
                    // (ip_vs_control_assure_ct).
                    if established && !v.control.is_none() {
                        conns.assure(v.control);
                    }
                    return;
                }
                Err(now) if now.gen() == sw.gen() => sw = now,
                Err(_) => return, // removed (expired) meanwhile
            }
        }
    }

    fn inbound(
        &mut self,
        frame: &mut Frame,
        info: &PacketInfo,
        v: ConnView,
        rx_port: u16,
    ) -> Verdict {
        let dest = self.snap.dest(v.dest_id);
        // ip_vs_in_hook: a SYN first decides whether the connection makes way
        // for a new one; only a connection kept meets the dest check.
        if v.proto == PROTO_TCP
            && info.tcp_flags & TCP_SYN != 0
            && self.resched_syn(&v, dest)
            && self.expire_now(&v)
        {
            return self.new_conn(frame, info, rx_port);
        }
        if !dest.is_some_and(|d| d.is_available()) {
            if !self.snap.knobs.expire_nodest_conn {
                return Verdict::Drop(DropReason::DestUnavailable);
            }
            self.expire_now(&v);
            return self.new_conn(frame, info, rx_port);
        }
        self.track(v, info, Direction::Input);
        if self.sync_on {
            self.sync_after(&v);
        }
        let route = Route::of(&v, &self.engine.conns);
        if let Frag::First { id } = info.frag {
            self.frags.remember(info, id, true, &route, self.tick);
        }
        self.stats
            .packet(route.svc_id, route.dest_id, true, frame.len() as u64);
        self.forward_in(frame, info, &route)
    }

    /// Whether a SYN for connection `v` expires it and is scheduled afresh
    /// (ip_vs_in_hook): when its dest is quiesced (weight 0) and
    /// `expire_nodest_conn` is set, whatever `conn_reuse_mode` and the
    /// connection's state; else when `conn_reuse_mode` is on and
    /// [`is_new_conn_expected`].
    fn resched_syn(&self, v: &ConnView, dest: Option<&Arc<Dest>>) -> bool {
        let knobs = &self.snap.knobs;
        if knobs.expire_nodest_conn && dest.is_some_and(|d| d.weight() == 0) {
            return true;
        }
        knobs.conn_reuse_mode.is_on() && is_new_conn_expected(v, knobs.conn_reuse_mode)
    }

    fn outbound(&mut self, frame: &mut Frame, info: &PacketInfo, v: ConnView) -> Verdict {
        self.track(v, info, Direction::Output);
        let route = Route::of(&v, &self.engine.conns);
        if let Frag::First { id } = info.frag {
            self.frags.remember(info, id, false, &route, self.tick);
        }
        self.stats
            .packet(route.svc_id, route.dest_id, false, frame.len() as u64);
        self.forward_out(frame, info, &route)
    }

    fn later_fragment(&mut self, frame: &mut Frame, info: &PacketInfo, id: u32) -> Verdict {
        let Some((route, inbound)) = self.frags.find(info, id, self.tick) else {
            return Verdict::Drop(DropReason::FragmentUnknown);
        };
        if inbound {
            self.stats
                .packet(route.svc_id, route.dest_id, true, frame.len() as u64);
            self.forward_in(frame, info, &route)
        } else {
            self.stats
                .packet(route.svc_id, route.dest_id, false, frame.len() as u64);
            self.forward_out(frame, info, &route)
        }
    }

    /// A packet of no known connection: [`Worker::schedule`] picks its real
    /// server, [`Worker::build_conn`] makes the connection and
    /// [`Worker::insert_conn`] enters it in the table; then the packet goes
    /// to the server as any other of the connection. A connection that is
    /// not made gives its template count back.
    fn new_conn(&mut self, frame: &mut Frame, info: &PacketInfo, rx_port: u16) -> Verdict {
        let sched = match self.schedule(info) {
            Ok(s) => s,
            // ip_vs_leave: nobody to serve it, the client is told.
            Err(DropReason::NoDest) => return self.unreachable(frame, info, rx_port),
            Err(reason) => return Verdict::Drop(reason),
        };
        // Matched by reference: moving the connection out of the result
        // would copy it.
        let built = self.build_conn(info, &sched);
        let built = match &built {
            Ok(b) => b,
            Err(reason) => {
                self.engine.conns.release(sched.picked.control);
                return Verdict::Drop(*reason);
            }
        };
        if !self.defer_out {
            self.engine.conns.prefetch_insert(&built.conn);
        }
        if let Err(reason) = self.insert_conn(&sched, built) {
            self.engine.conns.release(sched.picked.control);
            return Verdict::Drop(reason);
        }
        let route = Route::of_new(&built.conn, built.laddr);
        self.stats.conn(route.svc_id, route.dest_id);
        if let Frag::First { id } = info.frag {
            self.frags.remember(info, id, true, &route, self.tick);
        }
        self.stats
            .packet(route.svc_id, route.dest_id, true, frame.len() as u64);
        self.forward_in(frame, info, &route)
    }

    /// The kernel's `ip_vs_schedule` with the checks before it
    /// (`tcp_conn_schedule`, `ip_vs_todrop`): the packet's service, whether
    /// it may start a connection (a SYN, unless `sloppy_tcp`), the defense
    /// drop, then the real server from a template or the scheduler
    /// ([`persist::pick`]). `NoDest` means that no server is available.
    #[inline(always)]
    fn schedule(&mut self, info: &PacketInfo) -> Result<Scheduled, DropReason> {
        let snap = &self.snap;
        let Some(svc) = snap.service_for(info.proto, &info.saddr, &info.daddr, info.dport) else {
            return Err(DropReason::NoService);
        };
        if info.proto == PROTO_TCP
            && (info.tcp_flags & TCP_RST != 0
                || (info.tcp_flags & TCP_SYN == 0 && !snap.knobs.sloppy_tcp))
        {
            return Err(DropReason::NotSyn);
        }
        if self.drop_rate != 0 {
            self.drop_counter = self.drop_counter.saturating_sub(1);
            if self.drop_counter == 0 {
                self.drop_counter = self.drop_rate;
                return Err(DropReason::Defense);
            }
        }
        let picked = persist::pick(
            &self.engine.conns,
            snap,
            svc,
            info.proto,
            &info.saddr,
            info.sport,
            &info.daddr,
            info.dport,
            self.now,
            self.tick,
        )
        .map_err(|e| match e {
            NoPick::NoDest => DropReason::NoDest,
            NoPick::PortZero => DropReason::NoService,
            NoPick::TableFull => DropReason::ConnTableFull,
        })?;
        Ok(Scheduled {
            svc_id: svc.id,
            one_packet: svc.spec.flags.one_packet() && info.proto == PROTO_UDP,
            picked,
        })
    }

    /// The connection of a scheduled packet, as `ip_vs_conn_new` fills it:
    /// its first TCP state (as if the packet passed it), timer and flags,
    /// and for FULLNAT a local address and port of this worker.
    #[inline(always)]
    fn build_conn(&mut self, info: &PacketInfo, sched: &Scheduled) -> Result<Built, DropReason> {
        let snap = &self.snap;
        let dest = &sched.picked.dest;
        let fwd = dest.fwd();
        let nat = matches!(fwd, FwdMethod::Masq | FwdMethod::FullNat);
        if nat {
            // The reply goes back through us: look the client's next hop up
            // now (a miss makes the mirror resolve it), so the real server's
            // first answer, a round trip later, does not find it unresolved.
            let _ = self.nh.resolve(&*self.fib, self.fib_gen, &info.saddr);
        }
        let state = if info.proto == PROTO_TCP {
            let dir = if nat {
                Direction::Input
            } else {
                Direction::InputOnly
            };
            tcp_transition(self.secure, dir, TcpState::None, info.tcp_flags)
        } else {
            TcpState::None
        };
        let active = state.is_active();
        let timeout = if info.proto == PROTO_TCP {
            snap.timeouts.tcp_state(state)
        } else {
            snap.timeouts.udp
        };
        let mut fl = EntryFlags::NONE.with(EntryFlags::INACTIVE, !active);
        if nat {
            fl |= EntryFlags::HAS_OUT;
        } else {
            fl |= EntryFlags::NOOUTPUT;
        }
        let (lip, laddr, lport) = if fwd == FwdMethod::FullNat {
            fl |= EntryFlags::FULLNAT;
            let workers = self.engine.limits.workers;
            self.ports
                .alloc(
                    &self.engine.conns,
                    snap.lips(sched.svc_id),
                    workers,
                    self.tick,
                    dest,
                    info.proto,
                )
                .ok_or(DropReason::NoLocalPort)?
        } else {
            (0, Addr::UNSPECIFIED, 0)
        };
        let conn = NewConn {
            proto: info.proto,
            caddr: info.saddr,
            cport: info.sport,
            vaddr: info.daddr,
            vport: info.dport,
            daddr: Addr::from(dest.addr),
            dport: sched.picked.dport,
            lip,
            lport,
            fwd,
            svc_id: sched.svc_id,
            dest_id: dest.id,
            control: sched.picked.control,
            // The packet that made it is its first inbound one.
            state: EntryState::Conn(state),
            in_pkts: 1,
            flags: fl,
            expires: self.tick.wrapping_add(secs_to_ticks(timeout)),
            timeout: 0,
        };
        Ok(Built { conn, laddr })
    }

    /// Enters a built connection in the table and binds it to its dest (the
    /// rest of `ip_vs_conn_new`: `ip_vs_bind_dest`, then `ip_vs_conn_hash`),
    /// assures its template if it starts ESTABLISHED, and offers it to sync.
    /// A one-packet connection (UDP, `-o`) is bound and at once unbound, and
    /// never entered, as the kernel does not hash it.
    #[inline(always)]
    fn insert_conn(&mut self, sched: &Scheduled, b: &Built) -> Result<(), DropReason> {
        let control = sched.picked.control;
        let dest = &sched.picked.dest;
        if sched.one_packet {
            // The bind may set OVERLOAD (the upper threshold), and the unbind
            // (ip_vs_unbind_dest) may leave it.
            dest.bind_conn(false);
            dest.unbind_conn(false, false);
            if self.sync_on {
                self.sync_template(control);
            }
            self.engine.conns.release(control);
            return Ok(());
        }
        let idx = self.enter(&b.conn)?;
        let conns = &self.engine.conns;
        dest.bind_conn(false);
        if b.conn.flags.is_active() {
            dest.conn_activated();
        }
        // NONE -> ESTABLISHED on its first packet (sloppy_tcp and an ACK).
        if b.conn.state == EntryState::Conn(TcpState::Established) && !control.is_none() {
            conns.assure(control);
        }
        if self.sync_on {
            if let Some(v) = conns.read(idx) {
                self.sync_after(&v);
            }
        }
        Ok(())
    }

    /// Enters a new connection in the table; inside a batch, a NAT one with
    /// its reply key left to [`Worker::finish_batch`].
    #[inline(always)]
    fn enter(&mut self, c: &NewConn) -> Result<u32, DropReason> {
        if !(self.defer_out && c.flags.contains(EntryFlags::HAS_OUT)) {
            return self
                .engine
                .conns
                .insert(c)
                .map_err(|_| DropReason::ConnTableFull);
        }
        if self.pending_len == self.pending.len() {
            self.complete_pending();
        }
        let out = self
            .engine
            .conns
            .insert_deferred(c)
            .map_err(|_| DropReason::ConnTableFull)?;
        self.pending[self.pending_len] = Pending {
            out,
            dest_id: c.dest_id,
            control: c.control,
        };
        self.pending_len += 1;
        Ok(out.idx())
    }

    #[inline]
    fn resolve(&mut self, dst: &Addr) -> Result<NextHop, DropReason> {
        self.nh.resolve(&*self.fib, self.fib_gen, dst)
    }

    /// Client → server: the next hop, then the connection's forwarding method.
    fn forward_in(&mut self, frame: &mut Frame, info: &PacketInfo, r: &Route) -> Verdict {
        let nh = match self.resolve(&r.daddr) {
            Ok(nh) => nh,
            Err(e) => return Verdict::Drop(e),
        };
        match xmit::to_server(frame, info, r, &nh, &mut self.ip_id) {
            Ok(()) => Verdict::Tx(nh.port),
            Err(XmitError::TooBig { mtu }) => self.too_big(frame, info, mtu),
            Err(e) => Verdict::Drop(e.reason()),
        }
    }

    /// Server → client (NAT and FULLNAT replies).
    fn forward_out(&mut self, frame: &mut Frame, info: &PacketInfo, r: &Route) -> Verdict {
        let nh = match self.resolve(&r.caddr) {
            Ok(nh) => nh,
            Err(e) => return Verdict::Drop(e),
        };
        match xmit::to_client(frame, info, r, &nh) {
            Ok(()) => Verdict::Tx(nh.port),
            Err(e) => Verdict::Drop(e.reason()),
        }
    }

    /// ICMP errors that quote a packet of a known connection follow it, rewritten.
    fn icmp_error(&mut self, frame: &mut Frame, info: &PacketInfo) -> Verdict {
        let Some(ic) = info.icmp else {
            return Verdict::Drop(DropReason::IcmpNoConn);
        };
        let Some((isrc, idst)) = ic.inner_addrs(frame.data(), info.af) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        // The quoted packet went the other way: its reversed tuple is our key.
        let key = ConnKey {
            proto: ic.proto,
            saddr: isrc,
            sport: ic.sport,
            daddr: idst,
            dport: ic.dport,
        }
        .reversed();
        let Some((v, dir)) = self.engine.conns.lookup(&key, self.tick) else {
            return Verdict::Drop(DropReason::IcmpNoConn);
        };
        let r = Route::of(&v, &self.engine.conns);
        match dir {
            KeyDir::In => {
                // About a packet toward the client; goes to the real server.
                let nh = match self.resolve(&r.daddr) {
                    Ok(nh) => nh,
                    Err(e) => return Verdict::Drop(e),
                };
                self.stats
                    .packet(r.svc_id, r.dest_id, true, frame.len() as u64);
                match xmit::icmp_to_server(frame, info, &r, &nh, &mut self.ip_id) {
                    Ok(()) => Verdict::Tx(nh.port),
                    // Nobody to tell that an error did not fit the tunnel.
                    Err(_) => Verdict::Drop(DropReason::TooBig),
                }
            }
            KeyDir::Out => {
                // From the server side about a packet we sent it; goes to the client.
                let nh = match self.resolve(&r.caddr) {
                    Ok(nh) => nh,
                    Err(e) => return Verdict::Drop(e),
                };
                self.stats
                    .packet(r.svc_id, r.dest_id, false, frame.len() as u64);
                xmit::icmp_to_client(frame, info, &r, &nh);
                Verdict::Tx(nh.port)
            }
        }
    }

    fn take_icmp_token(&mut self) -> bool {
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// No dest available: ICMP port unreachable back to the client (rate-limited), as `ip_vs_leave`.
    fn unreachable(&mut self, frame: &mut Frame, info: &PacketInfo, rx_port: u16) -> Verdict {
        if info.frag != Frag::None || !self.take_icmp_token() {
            return Verdict::Drop(DropReason::NoDest);
        }
        if icmp::port_unreachable(frame, info, &info.daddr) {
            // The client's packet is dropped (counted) and the error is transmitted.
            self.stats.count_drop(DropReason::NoDest);
            Verdict::Tx(rx_port)
        } else {
            Verdict::Drop(DropReason::NoDest)
        }
    }

    /// Tunnel MTU exceeded with DF: fragmentation needed / packet too big to the client.
    fn too_big(&mut self, frame: &mut Frame, info: &PacketInfo, mtu: u16) -> Verdict {
        if !self.take_icmp_token() {
            return Verdict::Drop(DropReason::TooBig);
        }
        let Ok(nh) = self.resolve(&info.saddr) else {
            return Verdict::Drop(DropReason::TooBig);
        };
        if icmp::too_big(frame, info, mtu, &nh.src_addr) {
            self.stats.count_drop(DropReason::TooBig);
            xmit::output(frame, &nh);
            Verdict::Tx(nh.port)
        } else {
            Verdict::Drop(DropReason::TooBig)
        }
    }
}

/// The kernel's `is_new_conn_expected`: whether a new connection may take
/// the place of `v`, whose ports a SYN reuses. Not while a template controls
/// `v` (its client is pinned to the dest); for TCP in TIME_WAIT or CLOSE;
/// with [`ReuseMode::fin_wait`], also in FIN_WAIT with no reply seen (DR
/// sees no more of a closing connection).
fn is_new_conn_expected(v: &ConnView, mode: ReuseMode) -> bool {
    if !v.control.is_none() || v.proto != PROTO_TCP {
        return false;
    }
    match v.tcp_state() {
        TcpState::TimeWait | TcpState::Close => true,
        TcpState::FinWait => mode.fin_wait() && v.flags().contains(EntryFlags::NOOUTPUT),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::TEMPLATE_PROTO;
    use crate::engine::{Limits, StaticFib};

    fn engine() -> Arc<Engine> {
        Engine::new(
            Limits {
                conn_max: 16,
                ..Limits::default()
            },
            Arc::new(StaticFib::new()),
            [1, 2, 3, 4],
        )
    }

    fn entry(proto: u8, cport: u16, fl: EntryFlags) -> NewConn {
        NewConn {
            proto,
            caddr: Addr::v4([10, 0, 0, 1]),
            cport,
            vaddr: Addr::v4([10, 0, 0, 100]),
            vport: 80,
            daddr: Addr::v4([10, 0, 1, 1]),
            dport: 80,
            lip: 0,
            lport: 0,
            fwd: FwdMethod::Route,
            svc_id: 0,
            dest_id: 0,
            control: TemplateRef::NONE,
            state: if fl.is_template() {
                EntryState::TEMPLATE
            } else {
                EntryState::Conn(TcpState::Established)
            },
            in_pkts: 0,
            flags: fl,
            expires: 1000,
            timeout: 0,
        }
    }

    fn key(c: &NewConn) -> ConnKey {
        ConnKey {
            proto: c.proto,
            saddr: c.caddr,
            sport: c.cport,
            daddr: c.vaddr,
            dport: c.vport,
        }
    }

    /// Issue 13: `expire_now` follows the kernel's `ip_vs_conn_expire`: an entry
    /// that still controls connections (a template with conns) is not removed;
    /// one that controls none is.
    #[test]
    fn expire_now_keeps_what_controls_conns() {
        let e = engine();
        let w = e.worker(0);
        let tpl = entry(TEMPLATE_PROTO | 6, 0, EntryFlags::TEMPLATE);
        let t_idx = e.conns.insert(&tpl).unwrap();
        let mut c = entry(6, 1000, EntryFlags::NONE);
        let (tv, _) = e.conns.lookup(&key(&tpl), 0).unwrap();
        c.control = e.conns.hold(&tv).unwrap();
        e.conns.insert(&c).unwrap();

        let (tv, _) = e.conns.lookup(&key(&tpl), 0).unwrap();
        assert!(
            !w.expire_now(&tv),
            "a template with a controlled conn was expired"
        );
        assert!(e.conns.lookup(&key(&tpl), 0).is_some());

        let (cv, _) = e.conns.lookup(&key(&c), 0).unwrap();
        assert!(w.expire_now(&cv), "a plain conn is expired");
        assert!(e.conns.lookup(&key(&c), 0).is_none());
        assert_eq!(
            e.conns.n_control(t_idx),
            0,
            "its template's count is released"
        );
        let (tv, _) = e.conns.lookup(&key(&tpl), 0).unwrap();
        assert!(w.expire_now(&tv), "a template without conns is expired");
        assert_eq!(e.conns.live(), 0);
    }
}
