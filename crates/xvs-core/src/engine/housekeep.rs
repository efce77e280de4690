//! Work off the fast path, run by the daemon's housekeeping thread (or a test
//! with a manual clock): expiring connections and templates, settling dest
//! counters, freeing the ids of removed local addresses once no connection
//! holds them, estimating rates every 2 s, and the DoS defence levels.

use super::lips;
use super::stats::{Estimator, Rates, Totals, ESTIMATOR_INTERVAL_SECS};
use super::Engine;
use crate::conn::table::{flags, secs_to_ticks, tick_after, tick_of, ConnView};
use crate::conn::TcpState;
use crate::time::Time;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Seconds a template with live conns is re-armed for when it expires (kernel: 60 s).
const TEMPLATE_REARM_SECS: u32 = 60;

/// Housekeeping progress kept between calls.
#[derive(Debug, Default)]
pub struct State {
    cursor: u32,
    /// Number of the sweep pass in progress.
    pass: u64,
    /// Local-address ids held by the connections this pass has visited.
    lips_seen: Vec<u64>,
}

/// The rate estimators, by service and dest id.
#[derive(Debug, Default)]
pub struct Estimators {
    last_estimate: Option<Time>,
    pub(crate) svc: HashMap<u32, Estimator>,
    pub(crate) dest: HashMap<u32, Estimator>,
    total_est: Option<Estimator>,
}

/// What one housekeeping call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub visited: u32,
    pub expired: u32,
    pub templates_rearmed: u32,
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
            if fl & flags::FULLNAT != 0 {
                lips::mark(&mut lips_seen, v.lip);
            }
            let dest = snap.dest(v.dest_id);
            let nodest = snap.knobs.expire_nodest_conn
                && fl & flags::TEMPLATE == 0
                && dest.is_some_and(|d| !d.is_available());
            let dead_tpl = fl & flags::DEAD_TEMPLATE != 0;
            if !nodest && !dead_tpl && !tick_after(tick, exp) {
                return;
            }
            if fl & flags::TEMPLATE != 0 && self.conns.n_control(v.idx) > 0 {
                let rearm = tick.wrapping_add(secs_to_ticks(TEMPLATE_REARM_SECS));
                // A refresh racing this one wins; next pass decides again.
                if !dead_tpl && self.conns.refresh(v.idx, v.sw, rearm) {
                    out.templates_rearmed += 1;
                }
                return;
            }
            // Fails if a worker refreshed or changed it since `v` was read (it
            // lives on; next pass decides), or if it is a template that gained
            // a connection meanwhile.
            if self.conns.remove(v.idx, v.sw).is_none() {
                return;
            }
            out.expired += 1;
            let template = fl & flags::TEMPLATE != 0;
            if let Some(d) = dest {
                d.unbind_conn(template, fl & flags::INACTIVE == 0);
            }
            self.conns.release(v.control);
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
        self.update_defense();
        drop(st);
        self.estimate(now);
        out
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
    /// `amemthresh` free connection entries.
    fn update_defense(&self) {
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

/// Name of a connection's state as `-c` lists it.
pub fn state_name(proto: u8, template: bool, state: u8) -> &'static str {
    if template {
        return if state == 0 { "NONE" } else { "ASSURED" };
    }
    match proto {
        6 => TcpState::from_index(state).name(),
        17 => "UDP",
        _ => "NONE",
    }
}
