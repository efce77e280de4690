//! Work off the fast path, run by the daemon's housekeeping thread (or a test
//! with a manual clock): expiring connections and templates, settling dest
//! counters, freeing the ids of removed local addresses once no connection
//! holds them, estimating rates every 2 s, and the DoS defence levels with
//! drop_entry.

use super::lips;
use super::persist::TEMPLATE_REARM_SECS;
use super::snapshot::Snapshot;
use super::stats::{Estimator, Rates, Totals, ESTIMATOR_INTERVAL_SECS};
use super::Engine;
use crate::conn::{ConnTable, ConnView, EntryFlags, EntryState, TcpState, TemplateRef};
use crate::time::{secs_to_ticks, tick_after, tick_of, Tick, Time};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// `todrop_entry`'s `todrop_rate`: of the idle entries with `in_pkts` = i,
/// one in i is dropped (none with 0).
const TODROP_RATE: [i8; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
/// `ip_vs_random_dropentry` looks at 1/32 of the table each second.
const DROPENTRY_SHARE: u32 = 32;

/// Housekeeping progress kept between calls.
#[derive(Debug, Default)]
pub(crate) struct State {
    cursor: u32,
    /// Number of the sweep pass in progress.
    pass: u64,
    /// Local-address ids held by the connections this pass has visited.
    lips_seen: Vec<u64>,
    /// When drop_entry may run next (once a second, as the kernel's
    /// `defense_work_handler`).
    next_dropentry: Option<Time>,
    /// Where drop_entry's next slice of the table starts.
    drop_cursor: u32,
    /// `todrop_entry`'s `todrop_counter`, by `in_pkts`.
    todrop_counter: [i8; 9],
}

/// The rate estimators, by service and dest id.
#[derive(Debug, Default)]
pub(crate) struct Estimators {
    last_estimate: Option<Time>,
    pub(crate) svc: HashMap<u32, Estimator>,
    pub(crate) dest: HashMap<u32, Estimator>,
    total_est: Option<Estimator>,
}

/// What one housekeeping call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Entries looked at.
    pub visited: u32,
    /// Entries removed (connections and templates).
    pub expired: u32,
    /// Templates re-armed for 60 s because a connection outlived them.
    pub templates_rearmed: u32,
    /// Entries drop_entry removed.
    pub dropped: u32,
}

impl Engine {
    /// Sweeps up to `budget` entries from where the last call stopped, expiring
    /// those whose time has come. Call it often (e.g. every 100 ms with a budget
    /// of a tenth of the table) so that a full pass takes about a second.
    pub fn housekeep(&self, now: Time, budget: u32) -> Swept {
        let mut st = self.housekeeping.lock().unwrap_or_else(|e| e.into_inner());
        let snap = self.snapshot();
        let tick = tick_of(now);
        let mut out = Swept::default();
        if st.cursor == 0 {
            st.pass = self
                .lip_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .start_pass();
            st.lips_seen = lips::lip_bitset();
        }
        let mut lips_seen = std::mem::take(&mut st.lips_seen);
        let mut expire = |v: ConnView, exp: u32| {
            out.visited += 1;
            let fl = v.flags();
            if fl.contains(EntryFlags::FULLNAT) {
                lips::mark(&mut lips_seen, v.lip);
            }
            let template = fl.is_template();
            let dest = snap.dest(v.dest_id);
            // ip_vs_expire_nodest_conn_flush: with expire_nodest_conn, every
            // entry of a removed dest goes, templates included.
            let nodest = snap.knobs.expire_nodest_conn && dest.is_some_and(|d| !d.is_available());
            let timed_out = tick_after(tick, exp);
            if !nodest && !timed_out {
                return;
            }
            // An entry that controls connections stays (ip_vs_conn_expire: "do
            // I control anybody?"; the flush skips it too). Its timer is
            // re-armed as its connections go (`release_control`), and the
            // flush takes it with its last connection.
            if template && self.conns.n_control(v.idx) > 0 {
                return;
            }
            // Fails if a worker refreshed or changed it since `v` was read (it
            // lives on; next pass decides), or if it is a template that gained
            // a connection meanwhile.
            if self.conns.remove(v.idx, v.sw).is_none() {
                return;
            }
            out.expired += 1;
            if let Some(d) = dest {
                d.unbind_conn(template, fl.is_active());
            }
            let end = if timed_out { exp } else { tick };
            if self.release_control(v.control, end) {
                out.templates_rearmed += 1;
            }
            // The flush then deletes the connection's template once it
            // controls nothing more (`cp_c && !n_control`), ASSURED or not.
            // Otherwise a template whose timer has run out meanwhile has
            // expired with its last connection (release_control re-armed it
            // past the connection's end, so it expired later, idle).
            let r = v.control;
            let drop_tpl = nodest
                || self
                    .conns
                    .template(r)
                    .is_some_and(|t| tick_after(tick, t.expires()));
            if drop_tpl && self.drop_template(&snap, r, false) {
                out.expired += 1;
            }
        };
        st.cursor = self.conns.scan(st.cursor, budget, &mut expire);
        if st.cursor == 0 {
            // The pass is complete: what it did not meet, no connection holds.
            self.lip_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end_pass(st.pass, &lips_seen, &self.conns);
        }
        st.lips_seen = lips_seen;
        for svc in snap.services() {
            // lblc/lblcr table GC (rate-limited inside the scheduler).
            svc.sched.gc(now);
        }
        let drop_entry = self.update_defense();
        if drop_entry && st.next_dropentry.is_none_or(|t| now >= t) {
            st.next_dropentry = Some(now.add_secs(1));
            out.dropped = self.random_dropentry(&snap, &mut st, tick);
        }
        drop(st);
        self.estimate(now);
        out
    }

    /// Undoes the accounting of a connection this thread removed: its dest's
    /// counters (`ip_vs_unbind_dest`) and its count on its template, given
    /// back at `end` ([`Engine::release_control`], whose answer it returns).
    pub(crate) fn unaccount(
        &self,
        snap: &Snapshot,
        dest_id: u32,
        fl: EntryFlags,
        control: TemplateRef,
        end: Tick,
    ) -> bool {
        if let Some(d) = snap.dest(dest_id) {
            d.unbind_conn(fl.is_template(), fl.is_active());
        }
        self.release_control(control, end)
    }

    /// Gives back the count a gone connection held on its template `r`, at
    /// `end`, the tick the connection ended (its expiry, or now when it was
    /// removed early). The kernel's template timer fires at its expiry and
    /// re-arms it for 60 s while it controls a connection (ip_vs_conn_expire),
    /// so a template the connection outlived is re-armed in 60 s steps until
    /// past `end` (its timeout is then 60 s). Returns whether it was re-armed.
    pub(crate) fn release_control(&self, r: TemplateRef, end: Tick) -> bool {
        if r.is_none() {
            return false;
        }
        let mut rearmed = false;
        if let Some(t) = self.conns.template(r) {
            let step = secs_to_ticks(TEMPLATE_REARM_SECS);
            rearmed = self
                .conns
                .modify(t.idx, t.sw, |sw| {
                    let exp = sw.expires();
                    if !tick_after(end, exp) {
                        return None;
                    }
                    let steps = end.wrapping_sub(exp).div_ceil(step);
                    Some(
                        sw.with_flags(sw.flags() | EntryFlags::REARMED)
                            .with_expires(exp.wrapping_add(steps * step)),
                    )
                })
                .is_some();
        }
        self.conns.release(r);
        rearmed
    }

    /// Deletes template `r` if it controls no connection (and, with
    /// `keep_assured`, is not ASSURED), as `ip_vs_conn_del` of a connection's
    /// `cp->control` does. `r` need not be held: a template freed or reused
    /// since is recognised by its generation.
    fn drop_template(&self, snap: &Snapshot, r: TemplateRef, keep_assured: bool) -> bool {
        let Some(t) = self.conns.template(r) else {
            return false;
        };
        if keep_assured && t.is_assured() {
            return false;
        }
        // Refused while it controls connections.
        if self.conns.remove(t.idx, t.sw).is_none() {
            return false;
        }
        if let Some(d) = snap.dest(t.dest_id) {
            d.unbind_conn(true, false);
        }
        true
    }

    /// The kernel's `ip_vs_random_dropentry`, run once a second while
    /// drop_entry is in force: looks at 1/32 of the table (the next slice in
    /// turn; the kernel picks 1/32 of its hash buckets at random) and deletes
    /// half-open TCP connections, idle ones that saw few packets
    /// (`todrop_entry`) and templates that were never ASSURED. Returns the
    /// number of entries deleted.
    fn random_dropentry(&self, snap: &Snapshot, st: &mut State, tick: Tick) -> u32 {
        let slice = self.conns.high_water().div_ceil(DROPENTRY_SHARE).max(1);
        let mut counter = st.todrop_counter;
        let mut dropped = 0;
        st.drop_cursor = self.conns.scan(st.drop_cursor, slice, |v, exp| {
            // Expired entries are the sweep's.
            if tick_after(tick, exp) {
                return;
            }
            dropped += self.drop_entry(snap, &v, tick, &mut counter);
        });
        st.todrop_counter = counter;
        self.dropped_entries
            .fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// One entry of `ip_vs_random_dropentry`: how many entries it deleted
    /// (the entry, and its template if that goes with it).
    fn drop_entry(&self, snap: &Snapshot, v: &ConnView, tick: Tick, counter: &mut [i8; 9]) -> u32 {
        let fl = v.flags();
        if fl.is_template() {
            if self.conns.n_control(v.idx) > 0 {
                return 0;
            }
            // Templates of one-packet services count their datagrams in
            // in_pkts; others are kept once ASSURED.
            let ops = snap
                .service(v.svc_id)
                .is_some_and(|s| s.spec.flags.one_packet());
            if ops {
                if !self.todrop_entry(snap, v, tick, counter) {
                    return 0;
                }
            } else if v.is_assured() {
                return 0;
            }
        } else if v.proto == crate::wire::parse::PROTO_TCP {
            match v.tcp_state() {
                TcpState::SynRecv | TcpState::SynAck => {}
                TcpState::Established if self.todrop_entry(snap, v, tick, counter) => {}
                _ => return 0,
            }
        } else if !self.todrop_entry(snap, v, tick, counter) {
            return 0;
        }
        // ip_vs_conn_del.
        if self.conns.remove(v.idx, v.sw).is_none() {
            return 0;
        }
        self.unaccount(snap, v.dest_id, fl, v.control, tick);
        // ip_vs_conn_del sets `cp->timeout = 0`, so ip_vs_conn_expire then
        // deletes the template if it controls nothing more and is not ASSURED.
        1 + self.drop_template(snap, v.control, true) as u32
    }

    /// The kernel's `todrop_entry`: an entry idle for at least 60 s (since its
    /// timer was last restarted) with 1 to 8 inbound packets, one in
    /// `in_pkts` of them (per-count counters).
    fn todrop_entry(
        &self,
        snap: &Snapshot,
        v: &ConnView,
        tick: Tick,
        counter: &mut [i8; 9],
    ) -> bool {
        let fl = v.flags();
        let timeout = if fl.is_template() {
            if fl.contains(EntryFlags::REARMED) {
                TEMPLATE_REARM_SECS
            } else {
                v.timeout
            }
        } else if v.proto == crate::wire::parse::PROTO_TCP {
            snap.timeouts.tcp_state(v.tcp_state())
        } else {
            snap.timeouts.udp
        };
        // `time_before(cp->timeout + jiffies, cp->timer.expires + 60*HZ)`.
        let idle_from = v.expires().wrapping_sub(secs_to_ticks(timeout));
        if tick_after(idle_from.wrapping_add(secs_to_ticks(60)), tick) {
            return false;
        }
        let i = v.sw.in_pkts() as usize;
        if i >= TODROP_RATE.len() || TODROP_RATE[i] == 0 {
            return false;
        }
        counter[i] -= 1;
        if counter[i] > 0 {
            return false;
        }
        counter[i] = TODROP_RATE[i];
        true
    }

    /// Entries drop_entry has deleted since the engine started.
    pub fn dropped_entries(&self) -> u64 {
        self.dropped_entries.load(Ordering::Relaxed)
    }

    /// Sweeps the whole table once (tests, shutdown).
    pub fn housekeep_all(&self, now: Time) -> Swept {
        {
            let mut st = self.housekeeping.lock().unwrap_or_else(|e| e.into_inner());
            st.cursor = 0;
        }
        self.housekeep(now, u32::MAX)
    }

    /// The kernel's `update_defense_level`, with "low memory" meaning fewer than
    /// `amemthresh` free connection entries. Returns whether drop_entry is in
    /// force.
    fn update_defense(&self) -> bool {
        let snap = self.snapshot();
        let free = self.conns.capacity().saturating_sub(self.conns.live());
        let nomem = free < snap.knobs.amemthresh;
        let secure = match snap.knobs.secure_tcp {
            0 => false,
            1 | 2 => nomem,
            _ => true,
        };
        let rate = match snap.knobs.drop_packet {
            0 => 0,
            1 | 2 if nomem => {
                let am = snap.knobs.amemthresh.max(1);
                am / am.saturating_sub(free).max(1)
            }
            1 | 2 => 0,
            _ => snap.knobs.am_droprate,
        };
        self.secure_on.store(secure, Ordering::Relaxed);
        self.drop_rate.store(rate, Ordering::Relaxed);
        match snap.knobs.drop_entry {
            0 => false,
            1 | 2 => nomem,
            _ => true,
        }
    }

    /// Secure TCP table in force.
    pub fn secure_tcp_on(&self) -> bool {
        self.secure_on.load(Ordering::Relaxed)
    }

    /// Current drop_packet rate (0 = off).
    pub fn drop_packet_rate(&self) -> u32 {
        self.drop_rate.load(Ordering::Relaxed)
    }

    /// Runs the 2-second rate estimator if its time has come.
    fn estimate(&self, now: Time) {
        // The snapshot first: publish takes the estimators' lock under its own.
        let snap = self.snapshot();
        let mut st = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = st.last_estimate {
            if now.since(last) < ESTIMATOR_INTERVAL_SECS * 1_000_000_000 {
                return;
            }
        }
        st.last_estimate = Some(now);
        let mut all = Totals::default();
        for s in snap.services() {
            for d in &s.dests {
                let t = self.dest_totals(d.id);
                st.dest
                    .entry(d.id)
                    .or_insert_with(|| Estimator::new(t))
                    .update(t);
            }
            let id = s.id;
            let t = self.service_totals(id);
            all.conns += t.conns;
            all.inpkts += t.inpkts;
            all.outpkts += t.outpkts;
            all.inbytes += t.inbytes;
            all.outbytes += t.outbytes;
            st.svc
                .entry(id)
                .or_insert_with(|| Estimator::new(t))
                .update(t);
        }
        st.total_est
            .get_or_insert_with(|| Estimator::new(all))
            .update(all);
    }

    /// Estimated rates of service `id`.
    pub fn service_rates(&self, id: u32) -> Rates {
        let st = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        st.svc.get(&id).map(Estimator::rates).unwrap_or_default()
    }

    /// Estimated rates of dest `id`.
    pub fn dest_rates(&self, id: u32) -> Rates {
        let st = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        st.dest.get(&id).map(Estimator::rates).unwrap_or_default()
    }

    /// Forgets the rate history of a service or dest (publish does it for new
    /// and removed ones, `-Z` for zeroed ones).
    pub fn forget_rates(&self, svc_id: Option<u32>, dest_id: Option<u32>) {
        let mut st = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = svc_id {
            st.svc.remove(&id);
        }
        if let Some(id) = dest_id {
            st.dest.remove(&id);
        }
    }
}

/// The expiry tick `-c` shows for entry `v` at tick `now`: its own, except
/// for a template past it that still controls connections, which the kernel's
/// timer has re-armed 60 s at a time (`ip_vs_conn_expire`).
pub fn listed_expiry(conns: &ConnTable, v: &ConnView, now: Tick) -> Tick {
    let exp = v.expires();
    if !v.flags().is_template() || !tick_after(now, exp) || conns.n_control(v.idx) == 0 {
        return exp;
    }
    let step = secs_to_ticks(TEMPLATE_REARM_SECS);
    exp.wrapping_add(now.wrapping_sub(exp).div_ceil(step) * step)
}

/// Name of an entry's state as `-c` lists it (`proto` without
/// `TEMPLATE_PROTO`).
pub fn state_name(proto: u8, state: EntryState) -> &'static str {
    match state {
        EntryState::Template { assured: false } => "NONE",
        EntryState::Template { assured: true } => "ASSURED",
        EntryState::Conn(s) => match proto {
            6 => s.name(),
            17 => "UDP",
            _ => "NONE",
        },
    }
}
