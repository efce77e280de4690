//! Connection synchronisation, the engine's side (the daemon owns the socket
//! and the threads; `xvs_sync` owns the wire format).
//!
//! **Master.** With [`SyncHub::set_master`] on, a worker asks, after each
//! packet from a client (and for the connection's template after it), the
//! kernel's question `ip_vs_sync_conn_needed` ([`xvs_sync::sync_conn_needed`])
//! and, when the answer is yes, pushes a copy of the entry ([`ConnView`]) on
//! its own bounded lock-free queue ([`SyncQueue`]). The sync thread drains the
//! queues, turns the copies into records ([`Engine::sync_record`]) and sends
//! them. A full queue drops the update and counts it: the data path never
//! waits for sync, allocates nothing and makes no syscall for it.
//!
//! What the kernel keeps per connection for the decision (`in_pkts`,
//! `old_state`, `sync_endtime`) is not in the 96-byte entry: it lives in a
//! side array of [`SyncMark`]s, one per entry (16 bytes), allocated when a
//! master first starts. Each mark carries the entry's generation, so a mark
//! left by an entry's previous life reads as "new connection". A worker writes
//! it with plain stores (no read-modify-write): a flow's client packets come
//! to one worker, and a lost count of a rare race only shifts a sync by a
//! packet, as the kernel's counters tolerate.
//!
//! **Backup.** [`Engine::sync_apply`] is the kernel's `ip_vs_proc_conn`: it
//! updates the connection a record names (state, INACTIVE, expiry; a changed
//! dest replaces it unless the record is the expiry notice of the replaced
//! one) or creates it bound to its dest, counted on it as a new connection is,
//! with the record's timeout. A record whose service or dest the backup does
//! not have is answered [`SyncApply::NoDest`]; the caller holds it and tries
//! again when the rules change (the kernel keeps an unbound connection; xvs
//! keeps the record, see docs/DEVIATIONS.md).

use super::Engine;
use crate::addr::Addr;
use crate::conn::MAX_TIMEOUT;
use crate::conn::{
    ConnKey, ConnView, EntryFlags, EntryState, KeyDir, NewConn, Sw, TcpState, TemplateRef,
    Timeouts, TEMPLATE_PROTO,
};
use crate::service::Service;
use crate::service::{Dest, FwdMethod, ServiceKey};
use crate::time::{secs_to_ticks, tick_of, Time};
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use xvs_sync::flags::{proto, tcp_state};
use xvs_sync::{Af, ConnAddrs, ConnFlags, ConnSyncState, SyncConn, SyncKnobs};

/// Default capacity of each worker's queue, in records (about 120 bytes each).
pub const DEFAULT_SYNC_QUEUE: usize = 8192;

/// One worker's queue of connections to sync, and its counters (written by
/// that worker only).
#[derive(Debug)]
pub struct SyncQueue {
    q: ArrayQueue<ConnView>,
    /// Records queued.
    pub queued: AtomicU64,
    /// Records dropped because the queue was at `sync_qlen_max`.
    pub dropped: AtomicU64,
}

impl SyncQueue {
    fn new(cap: usize) -> SyncQueue {
        SyncQueue {
            q: ArrayQueue::new(cap.max(1)),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Takes the oldest queued copy (the sync thread).
    pub fn pop(&self) -> Option<ConnView> {
        self.q.pop()
    }

    /// Copies queued now.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// The per-entry sync state of a master (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct SyncMark {
    /// generation (16) << 48 | old_state (8) << 32 | in_pkts (32).
    word: AtomicU64,
    /// `sync_endtime`, in ms of the engine's clock (low two bits: retries).
    endtime: AtomicU64,
}

const MARK_GEN_SHIFT: u32 = 48;
const MARK_STATE_SHIFT: u32 = 32;

impl SyncMark {
    /// (old_state, in_pkts, sync_endtime) of the entry's life `gen`, or None
    /// when the mark belongs to another life (or none).
    #[inline]
    fn get(&self, gen: u32) -> Option<(u8, u32, u64)> {
        let w = self.word.load(Relaxed);
        if (w >> MARK_GEN_SHIFT) as u32 != gen || w == 0 {
            return None;
        }
        Some((
            (w >> MARK_STATE_SHIFT) as u8,
            w as u32,
            self.endtime.load(Relaxed),
        ))
    }

    #[inline]
    fn set(&self, gen: u32, old_state: u8, pkts: u32, endtime: u64) {
        self.endtime.store(endtime, Relaxed);
        self.word.store(
            (gen as u64) << MARK_GEN_SHIFT | (old_state as u64) << MARK_STATE_SHIFT | pkts as u64,
            Relaxed,
        );
    }
}

/// Sync settings and queues shared by the workers and the sync thread.
#[derive(Debug)]
pub struct SyncHub {
    master: AtomicBool,
    knobs: Mutex<SyncKnobs>,
    /// Bumped on every knob change; workers copy the knobs when it moves.
    knob_gen: AtomicU64,
    qlen_max: AtomicUsize,
    queue_cap: AtomicUsize,
    marks: OnceLock<Box<[SyncMark]>>,
    queues: Mutex<Vec<Arc<SyncQueue>>>,
}

impl Default for SyncHub {
    fn default() -> Self {
        SyncHub {
            master: AtomicBool::new(false),
            knobs: Mutex::new(SyncKnobs::default()),
            knob_gen: AtomicU64::new(0),
            qlen_max: AtomicUsize::new(DEFAULT_SYNC_QUEUE),
            queue_cap: AtomicUsize::new(DEFAULT_SYNC_QUEUE),
            marks: OnceLock::new(),
            queues: Mutex::new(Vec::new()),
        }
    }
}

impl SyncHub {
    /// Whether workers queue updates.
    #[inline]
    pub fn is_master(&self) -> bool {
        self.master.load(Relaxed)
    }

    /// The knobs in force.
    pub fn knobs(&self) -> SyncKnobs {
        *self.knobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub(crate) fn knob_gen(&self) -> u64 {
        self.knob_gen.load(Relaxed)
    }

    /// Sets the knobs (checked as the kernel's sysctl handlers check them).
    pub fn set_knobs(&self, k: SyncKnobs) -> Result<(), xvs_sync::needed::KnobError> {
        k.validate()?;
        *self.knobs.lock().unwrap_or_else(|e| e.into_inner()) = k;
        self.knob_gen.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The per-worker queue limit in records (`sync_qlen_max`).
    pub fn qlen_max(&self) -> usize {
        self.qlen_max.load(Relaxed)
    }

    /// Sets `sync_qlen_max`; at most the queues' capacity (fixed when the
    /// workers are created, [`SyncHub::set_queue_capacity`]).
    pub fn set_qlen_max(&self, n: usize) {
        self.qlen_max
            .store(n.clamp(1, self.queue_cap.load(Relaxed)), Relaxed);
    }

    /// Capacity of the queues of workers created from now on (call before the
    /// data plane starts); also raises `sync_qlen_max` to it.
    pub fn set_queue_capacity(&self, n: usize) {
        let n = n.max(1);
        self.queue_cap.store(n, Relaxed);
        self.qlen_max.store(n, Relaxed);
    }

    pub(crate) fn new_queue(&self) -> Arc<SyncQueue> {
        let q = Arc::new(SyncQueue::new(self.queue_cap.load(Relaxed)));
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(q.clone());
        q
    }

    /// Every worker's queue.
    pub fn queues(&self) -> Vec<Arc<SyncQueue>> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// (queued, dropped) summed over the workers.
    pub fn queue_totals(&self) -> (u64, u64) {
        self.queues().iter().fold((0, 0), |(a, b), q| {
            (a + q.queued.load(Relaxed), b + q.dropped.load(Relaxed))
        })
    }

    #[inline]
    pub(crate) fn marks(&self) -> Option<&[SyncMark]> {
        self.marks.get().map(|b| &b[..])
    }
}

/// What [`Engine::sync_apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncApply {
    /// A new connection or template.
    Created,
    /// An existing one's state, flags and expiry.
    Updated,
    /// The connection had another dest: replaced by the record's.
    Replaced,
    /// The expiry notice of a connection already replaced (the kernel
    /// ignores it too).
    Stale,
    /// No service or dest for it here (yet).
    NoDest,
    /// The connection table is full.
    TableFull,
    /// Something xvs does not forward (SCTP, LOCALNODE/BYPASS, mixed families).
    Unsupported,
}

/// xvs's connection flags of a record's kernel flags.
fn xvs_flags(k: ConnFlags, masq: bool) -> EntryFlags {
    let mut fl = EntryFlags::NONE;
    if k.is_inactive() {
        fl |= EntryFlags::INACTIVE;
    }
    if k.is_template() {
        fl |= EntryFlags::TEMPLATE;
    } else if masq {
        fl |= EntryFlags::HAS_OUT;
    } else {
        fl |= EntryFlags::NOOUTPUT;
    }
    if k.is_nooutput() && !masq {
        fl |= EntryFlags::NOOUTPUT;
    }
    fl
}

/// The kernel's flags of an entry; None for what the protocol cannot carry
/// (FULLNAT: not a kernel method, and its local address has no field).
pub fn kernel_flags(fwd: FwdMethod, fl: EntryFlags) -> Option<ConnFlags> {
    let mut k = match fwd {
        FwdMethod::Masq => ConnFlags::MASQ,
        FwdMethod::Tunnel => ConnFlags::TUNNEL,
        FwdMethod::Route => ConnFlags::DROUTE,
        FwdMethod::FullNat => return None,
    };
    if !fl.is_active() {
        k |= ConnFlags::INACTIVE;
    }
    if fl.contains(EntryFlags::NOOUTPUT) {
        k |= ConnFlags::NOOUTPUT;
    }
    if fl.is_template() {
        k |= ConnFlags::TEMPLATE;
    }
    Some(ConnFlags(k))
}

/// True for entries the kernel would sync in their state (templates, UDP,
/// TCP in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT): what a
/// snapshot sends.
pub fn syncable_state(v: &ConnView) -> bool {
    if v.flags().is_template() || v.proto == proto::UDP {
        return true;
    }
    v.proto == proto::TCP
        && matches!(
            v.state().index() as u16,
            tcp_state::ESTABLISHED
                | tcp_state::FIN_WAIT
                | tcp_state::CLOSE
                | tcp_state::CLOSE_WAIT
                | tcp_state::TIME_WAIT
        )
}

fn ms_of(t: Time) -> u64 {
    t.as_millis()
}

impl Engine {
    /// Turns sending on or off. The first time on, the per-entry marks are
    /// allocated (16 bytes per entry of `conn_max`).
    pub fn sync_set_master(&self, on: bool) {
        if on {
            self.sync.marks.get_or_init(|| {
                (0..self.conns.capacity())
                    .map(|_| SyncMark::default())
                    .collect()
            });
        }
        self.sync.master.store(on, Relaxed);
    }

    /// The timeout the kernel would send for an entry: its state's (a
    /// template's own), in seconds.
    fn sync_timeout(&self, snap: &super::Snapshot, v: &ConnView) -> u32 {
        if v.flags().is_template() {
            v.timeout
        } else if v.proto == proto::TCP {
            snap.timeouts.tcp_state(v.tcp_state())
        } else {
            snap.timeouts.udp
        }
    }

    /// The record of an entry (the sync thread, from a queued copy or a
    /// snapshot scan). `remaining_at`: send the time left at that moment
    /// instead of the full timeout (snapshots: a backup must not keep an old
    /// connection longer than the master). None for FULLNAT entries and
    /// mixed-family ones.
    pub fn sync_record(
        &self,
        snap: &super::Snapshot,
        v: &ConnView,
        remaining_at: Option<Time>,
    ) -> Option<SyncConn> {
        let kfl = kernel_flags(v.fwd, v.flags())?;
        let addrs = ConnAddrs::from_ips(v.caddr.to_ip(), v.vaddr.to_ip(), v.daddr.to_ip())?;
        let fwmark = match snap.service(v.svc_id).map(|s| s.spec.key) {
            Some(ServiceKey::Fwmark { mark, .. }) => mark,
            _ => 0,
        };
        let timeout = match remaining_at {
            Some(now) => {
                let left = v.expires().wrapping_sub(tick_of(now)) as i32;
                (left.max(0) as u32).div_ceil(100).max(1)
            }
            None => self.sync_timeout(snap, v),
        };
        Some(SyncConn {
            protocol: v.proto & !TEMPLATE_PROTO,
            addrs,
            cport: v.cport,
            vport: v.vport,
            dport: v.dport,
            fwmark,
            flags: kfl,
            state: v.state().index() as u16,
            timeout,
            seq: None,
            pe_data: None,
            pe_name: None,
        })
    }

    /// The master's decision for entry `v` (whose word is now `sw`) after a
    /// client packet (counted here); queues it when the kernel would sync it.
    #[inline]
    pub(crate) fn sync_consider(
        &self,
        q: &SyncQueue,
        knobs: &SyncKnobs,
        timeouts: &Timeouts,
        v: &ConnView,
        sw: Sw,
        now: Time,
    ) {
        let Some(marks) = self.sync.marks() else {
            return;
        };
        let Some(mark) = marks.get(v.idx as usize) else {
            return;
        };
        let fl = sw.flags();
        let gen = sw.gen();
        let state = sw.state_index();
        let (old_state, pkts, endtime) = match mark.get(gen) {
            Some((o, p, e)) => (o, p.wrapping_add(1), e),
            None => (state, 1, 0),
        };
        let template = fl.is_template();
        // The common case without building the kernel's view: a connection
        // whose state has not changed since its last sync, between two
        // periodic syncs (sync_conn_needed says no to it in every branch).
        if !template
            && state == old_state
            && knobs.sync_refresh_period_ms == 0
            && knobs.sync_period > 0
            && pkts % knobs.sync_period != knobs.sync_threshold
        {
            mark.set(gen, old_state, pkts, endtime);
            return;
        }
        let Some(kfl) = kernel_flags(v.fwd, fl) else {
            return;
        };
        let timeout_s = if template {
            v.timeout
        } else if v.proto == proto::TCP {
            timeouts.tcp_state(TcpState::from_index(state))
        } else {
            timeouts.udp
        };
        let st = ConnSyncState {
            protocol: v.proto & !TEMPLATE_PROTO,
            af: if v.caddr.is_v4() { Af::V4 } else { Af::V6 },
            flags: kfl,
            state: state as u16,
            old_state: old_state as u16,
            timeout_ms: timeout_s as u64 * 1000,
            sync_endtime: endtime,
            in_persistence: !v.control.is_none(),
        };
        let d = xvs_sync::sync_conn_needed(&st, pkts, ms_of(now), knobs);
        mark.set(gen, d.old_state as u8, pkts, d.sync_endtime);
        if !d.send {
            return;
        }
        if q.q.len() >= self.sync.qlen_max() {
            q.dropped.fetch_add(1, Relaxed);
            return;
        }
        let mut copy = *v;
        copy.sw = sw;
        if q.q.push(copy).is_err() {
            q.dropped.fetch_add(1, Relaxed);
        } else {
            q.queued.fetch_add(1, Relaxed);
        }
    }

    /// Applies one received record (see the module documentation).
    pub fn sync_apply(&self, c: &SyncConn, now: Time) -> SyncApply {
        self.sync_apply_in(&self.snapshot(), c, now)
    }

    /// [`Engine::sync_apply`] with rules the caller took once for many records.
    pub fn sync_apply_in(&self, snap: &super::Snapshot, c: &SyncConn, now: Time) -> SyncApply {
        let tick = tick_of(now);
        let template = c.flags.is_template();
        if !template && !matches!(c.protocol, proto::TCP | proto::UDP) {
            return SyncApply::Unsupported;
        }
        let (fwd, masq) = match c.flags.fwd() {
            Some(xvs_sync::FwdMethod::Masq) => (FwdMethod::Masq, true),
            Some(xvs_sync::FwdMethod::Tunnel) => (FwdMethod::Tunnel, false),
            Some(xvs_sync::FwdMethod::DirectRoute) => (FwdMethod::Route, false),
            _ => return SyncApply::Unsupported,
        };
        let caddr = Addr::from(c.addrs.caddr());
        let vaddr = Addr::from(c.addrs.vaddr());
        let daddr = Addr::from(c.addrs.daddr());
        let key = ConnKey {
            proto: if template {
                TEMPLATE_PROTO | c.protocol
            } else {
                c.protocol
            },
            saddr: caddr,
            sport: c.cport,
            daddr: vaddr,
            dport: c.vport,
        };
        let rec_fl = xvs_flags(c.flags, masq);
        let state = EntryState::of_index(c.state.min(u8::MAX as u16) as u8, rec_fl);
        let timeout = if c.timeout != 0 {
            c.timeout.min(MAX_TIMEOUT)
        } else if template {
            xvs_sync::wire::V0_TEMPLATE_TIMEOUT_SECS
        } else if c.protocol == proto::TCP {
            snap.timeouts.tcp_state(state.tcp())
        } else {
            snap.timeouts.udp
        };
        let expires = tick.wrapping_add(secs_to_ticks(timeout));
        let mut replaced = false;
        if let Some((v, KeyDir::In)) = self.conns.lookup(&key, tick) {
            if !template && (v.daddr != daddr || v.dport != c.dport) {
                if c.flags.is_inactive() {
                    return SyncApply::Stale;
                }
                self.sync_expire(snap, &v);
                replaced = true;
            } else {
                let mut sw = v.sw;
                loop {
                    let old = sw.flags();
                    // Updates change only INACTIVE (the kernel's BACKUP_UPD_MASK
                    // less the sequence bits xvs does not use).
                    let nfl = old.with(EntryFlags::INACTIVE, !rec_fl.is_active());
                    match self.conns.update(v.idx, sw, state, nfl, expires) {
                        Ok(_) => {
                            let (was, is) = (old.is_active(), nfl.is_active());
                            if !template && was != is {
                                if let Some(d) = snap.dest(v.dest_id) {
                                    if is {
                                        d.conn_activated();
                                    } else {
                                        d.conn_deactivated();
                                    }
                                }
                            }
                            self.sync_mark_synced(v.idx, sw.gen(), state);
                            return SyncApply::Updated;
                        }
                        Err(now_sw) if now_sw.gen() == sw.gen() => sw = now_sw,
                        Err(_) => break, // expired meanwhile: create it anew
                    }
                }
            }
        }
        let Some((svc, dest)) = self.sync_find_dest(snap, c, template, masq) else {
            return SyncApply::NoDest;
        };
        let nc = NewConn {
            proto: key.proto,
            caddr,
            cport: c.cport,
            vaddr,
            vport: c.vport,
            daddr,
            dport: c.dport,
            lip: 0,
            lport: 0,
            fwd,
            svc_id: svc.id,
            dest_id: dest.id,
            control: TemplateRef::NONE,
            state,
            in_pkts: 0,
            flags: rec_fl,
            expires,
            timeout: if template { timeout } else { 0 },
        };
        let Ok(idx) = self.conns.insert(&nc) else {
            return SyncApply::TableFull;
        };
        dest.bind_conn(template);
        if !template && rec_fl.is_active() {
            dest.conn_activated();
        }
        if let Some(v) = self.conns.read(idx) {
            self.sync_mark_synced(idx, v.sw.gen(), state);
        }
        if replaced {
            SyncApply::Replaced
        } else {
            SyncApply::Created
        }
    }

    /// A synced entry's mark, as the kernel leaves a synced connection
    /// (`in_pkts` at the threshold, `old_state` its state), so that a
    /// director that is master too syncs it on as the kernel would.
    fn sync_mark_synced(&self, idx: u32, gen: u32, state: EntryState) {
        if let Some(m) = self.sync.marks().and_then(|m| m.get(idx as usize)) {
            let k = self.sync.knobs();
            m.set(gen, state.index(), k.sync_threshold, 0);
        }
    }

    /// Removes a connection the master replaced, undoing its accounting.
    fn sync_expire(&self, snap: &super::Snapshot, v: &ConnView) {
        if self.conns.remove(v.idx, v.sw).is_none() {
            return;
        }
        if let Some(d) = snap.dest(v.dest_id) {
            d.unbind_conn(v.flags().is_template(), v.flags().is_active());
        }
        self.conns.release(v.control);
    }

    /// `ip_vs_find_dest`: the service by fwmark or (protocol, vaddr, vport)
    /// (then port 0), and in it the dest (daddr, dport), else (daddr, 0).
    fn sync_find_dest(
        &self,
        snap: &super::Snapshot,
        c: &SyncConn,
        template: bool,
        masq: bool,
    ) -> Option<(Arc<Service>, Arc<Dest>)> {
        let vaddr = c.addrs.vaddr();
        let af = match c.af() {
            Af::V4 => crate::service::Af::V4,
            Af::V6 => crate::service::Af::V6,
        };
        let svc = if c.fwmark != 0 {
            snap.service_of_mark(c.fwmark, af)
        } else {
            snap.service_at(c.protocol, &Addr::from(vaddr), c.vport)
        }?;
        let daddr = c.addrs.daddr();
        let port = if c.fwmark != 0 && !masq { 0 } else { c.dport };
        let dest = svc
            .dest(&daddr, port)
            .or_else(|| svc.dest(&daddr, port ^ c.dport))
            .or_else(|| {
                // A template of a port-0 persistent service carries dport 0.
                template
                    .then(|| svc.dests.iter().find(|d| d.addr == daddr))
                    .flatten()
            })?;
        Some((svc.clone(), dest.clone()))
    }
}
