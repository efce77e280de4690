//! The connection table under a sweeper that races refreshes all the time.
//!
//! Workers keep a set of connections alive by looking each up and refreshing it
//! every round, with a timeout of a few ticks, while they churn short-lived
//! connections; a sweeper removes every expired entry as fast as it can, and a
//! clock advances the tick every 100 µs. The index is crowded (about 80 % of
//! its slots in use) so that inserts displace residents and sometimes find no
//! room. Every ~300 ms all threads stop and the table's invariants are checked.
//!
//! Asserted: a connection whose last refresh took effect and whose expiry has
//! not passed is always found (never lost); every view is of exactly the
//! connection asked for; no index slot is orphaned, `live` equals the entries
//! reachable from the index, and no entry is on the free stack twice. Half
//! of the churned connections are made as a worker's burst makes them (reply
//! key indexed at the end of the round) and expire at once, so the sweeper
//! removes many of them before their reply key is indexed.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs_core::addr::Addr;
use xvs_core::conn::{
    ConnKey, ConnTable, ConnView, EntryFlags, EntryState, InsertError, NewConn, OutDone, TcpState,
    TemplateRef,
};
use xvs_core::service::FwdMethod;
use xvs_core::time::{tick_after, Tick};

const WORKERS: u8 = 3;
/// Connections each worker keeps alive.
const KEPT: u32 = 400;
/// Their timeout, in ticks.
const KEPT_TICKS: u32 = 6;
/// Short-lived connections each worker inserts per round (expire after 1 tick).
const CHURN: u32 = 40;
const CAP: u32 = 4096;
/// Index buckets: 2 keys per connection at capacity over 8-slot buckets ≈ 80 %.
const BUCKETS: usize = (CAP as usize * 2 * 10 / 8).div_ceil(8);
const TICK: Duration = Duration::from_micros(100);

fn run_for() -> Duration {
    let ms = std::env::var("XVS_STRESS_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    Duration::from_millis(ms)
}

/// Connection `i` of worker `w`, incarnation `n`: its fields say who it is.
fn conn(w: u8, i: u32, n: u32, expires: Tick) -> NewConn {
    NewConn {
        proto: 6,
        caddr: Addr::v4([10, w, (i >> 8) as u8, i as u8]),
        cport: 1000 + (i >> 16) as u16,
        vaddr: Addr::v4([10, 77, 0, 100]),
        vport: 80,
        daddr: Addr::v4([10, 88, w, (i % 251) as u8]),
        dport: 8000 + w as u16,
        lip: 0,
        lport: 0,
        fwd: FwdMethod::Masq,
        svc_id: (w as u32) << 24 | i,
        dest_id: n,
        control: TemplateRef::NONE,
        state: EntryState::Conn(TcpState::Established),
        in_pkts: 0,
        flags: EntryFlags::HAS_OUT,
        expires,
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

/// The view is of connection `c` (any incarnation): all fields agree.
fn assert_is(v: &ConnView, c: &NewConn) {
    let ok = v.caddr == c.caddr
        && v.cport == c.cport
        && v.vaddr == c.vaddr
        && v.vport == c.vport
        && v.daddr == c.daddr
        && v.dport == c.dport
        && v.svc_id == c.svc_id;
    assert!(ok, "view {v:?} is not of connection {c:?}");
}

/// Pushes the expiry of the connection seen as `v` to `exp`; false when the
/// connection was removed first.
fn refresh(t: &ConnTable, v: &ConnView, exp: Tick) -> bool {
    t.refresh(v.idx, v.sw, exp)
}

/// Lets the main thread stop every other thread at a known point.
#[derive(Default)]
struct Pause {
    requested: AtomicBool,
    arrived: AtomicUsize,
}

impl Pause {
    /// Called by a working thread between two steps.
    fn point(&self) {
        if self.requested.load(SeqCst) {
            self.arrived.fetch_add(1, SeqCst);
            while self.requested.load(SeqCst) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Stops `n` threads; false if one of `threads` ended instead (it panicked).
    fn stop_all(&self, n: usize, threads: &[&std::thread::JoinHandle<impl Sized>]) -> bool {
        self.arrived.store(0, SeqCst);
        self.requested.store(true, SeqCst);
        while self.arrived.load(SeqCst) < n {
            if threads.iter().any(|h| h.is_finished()) {
                self.requested.store(false, SeqCst);
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    fn resume(&self) {
        self.requested.store(false, SeqCst);
    }
}

/// A kept connection that lookups no longer find must have expired.
fn assert_expired(w: u8, i: u32, what: &str, now: Tick, clock: &AtomicU32, exp: Tick) {
    let later = clock.load(SeqCst);
    assert!(
        tick_after(later, exp),
        "worker {w} conn {i}: {what} lost at tick {now} (clock {later}) though refreshed until {exp}"
    );
}

#[derive(Default, Debug)]
struct Counts {
    refreshed: u64,
    expired: u64,
    refresh_lost_to_sweep: u64,
    churned: u64,
    lookups: u64,
    table_full: u64,
    index_full: u64,
    /// Churned conns made with their reply key deferred to the end of the
    /// round, as a worker's burst does: completed, and removed by the sweep
    /// (or found without room) before their completion.
    deferred: u64,
    deferred_gone: u64,
    deferred_index_full: u64,
}

impl Counts {
    fn failed(&mut self, e: InsertError) {
        match e {
            InsertError::Full => self.table_full += 1,
            InsertError::IndexFull => self.index_full += 1,
        }
    }
}

#[test]
fn sweeper_racing_refreshes_loses_nothing() {
    let t = Arc::new(ConnTable::with_buckets(CAP, BUCKETS, [7, 7, 7, 7]));
    let clock = Arc::new(AtomicU32::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = WORKERS as usize + 2;
    let pause = Arc::new(Pause::default());
    let swept = Arc::new(AtomicU64::new(0));

    let ticker = {
        let (clock, stop, pause) = (clock.clone(), stop.clone(), pause.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                std::thread::sleep(TICK);
                clock.fetch_add(1, SeqCst);
                pause.point();
            }
        })
    };
    let sweeper = {
        let (t, clock, stop, pause, swept) = (
            t.clone(),
            clock.clone(),
            stop.clone(),
            pause.clone(),
            swept.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let now = clock.load(SeqCst);
                t.scan(0, u32::MAX, |v, exp| {
                    if tick_after(now, exp) && t.remove(v.idx, v.sw).is_some() {
                        swept.fetch_add(1, Relaxed);
                    }
                });
                pause.point();
            }
        })
    };
    let workers: Vec<_> = (1..=WORKERS)
        .map(|w| {
            let (t, clock, stop, pause) = (t.clone(), clock.clone(), stop.clone(), pause.clone());
            std::thread::spawn(move || {
                let mut n = Counts::default();
                // Per kept connection: incarnation and the expiry its last
                // successful refresh (or insert) set; None while not in the table.
                let mut kept: Vec<(u32, Option<Tick>)> = vec![(0, None); KEPT as usize];
                let mut churn_i = KEPT;
                let mut pending = Vec::with_capacity(CHURN as usize);
                while !stop.load(Relaxed) {
                    // Short-lived connections keep the sweeper and the free stack busy.
                    for _ in 0..CHURN {
                        let now = clock.load(SeqCst);
                        churn_i = if churn_i >= 60_000 { KEPT } else { churn_i + 1 };
                        // Every other one the way a burst makes them, and
                        // already expired: the sweeper races their completion
                        // (after the kept conns' round below).
                        let deferred = churn_i.is_multiple_of(2);
                        let exp = now.wrapping_add(if deferred { u32::MAX } else { 1 });
                        let c = conn(w, churn_i, 0, exp);
                        let made = if deferred {
                            t.insert_deferred(&c).map(|p| pending.push(p))
                        } else {
                            t.insert(&c).map(|_| ())
                        };
                        match made {
                            Ok(()) => n.churned += 1,
                            Err(e) => n.failed(e),
                        }
                        if let Some((v, _)) = t.lookup(&in_key(&c), now) {
                            assert_is(&v, &c);
                        }
                    }
                    for i in 0..KEPT {
                        let now = clock.load(SeqCst);
                        let (inc, exp) = kept[i as usize];
                        let c = conn(w, i, inc, 0);
                        n.lookups += 1;
                        let found = t.lookup(&in_key(&c), now);
                        match (found, exp) {
                            (Some((v, _)), Some(e)) => {
                                assert_is(&v, &c);
                                match t.lookup(&out_key(&c), now) {
                                    Some((r, _)) => assert_is(&r, &c),
                                    None => assert_expired(w, i, "reply key", now, &clock, e),
                                }
                                let e = now.wrapping_add(KEPT_TICKS);
                                if refresh(&t, &v, e) {
                                    kept[i as usize].1 = Some(e);
                                    n.refreshed += 1;
                                    continue;
                                }
                                // The sweep removed it first: its expiry had passed.
                                n.refresh_lost_to_sweep += 1;
                            }
                            (None, Some(e)) => {
                                // Gone: only allowed once its expiry has passed.
                                assert_expired(w, i, "connection", now, &clock, e);
                                n.expired += 1;
                            }
                            (Some((v, _)), None) => panic!("found a conn never inserted: {v:?}"),
                            (None, None) => {}
                        }
                        // (Re)insert a new incarnation.
                        let e = now.wrapping_add(KEPT_TICKS);
                        let c = conn(w, i, inc + 1, e);
                        kept[i as usize] = match t.insert(&c) {
                            Ok(_) => (inc + 1, Some(e)),
                            Err(e) => {
                                n.failed(e);
                                (inc + 1, None)
                            }
                        };
                    }
                    // The end of the "burst": the sweeper may have removed
                    // some of them meanwhile (they expire after one tick).
                    for p in pending.drain(..) {
                        n.deferred += 1;
                        match t.complete_out(p) {
                            OutDone::Indexed => {}
                            OutDone::Gone => n.deferred_gone += 1,
                            OutDone::IndexFull(_) => n.deferred_index_full += 1,
                        }
                    }
                    pause.point();
                }
                n
            })
        })
        .collect();

    let t0 = Instant::now();
    let mut checks = 0;
    while t0.elapsed() < run_for() {
        std::thread::sleep(Duration::from_millis(300));
        let all: Vec<_> = workers.iter().collect();
        if !pause.stop_all(threads, &all) || sweeper.is_finished() || ticker.is_finished() {
            break; // a thread panicked: the joins below report it
        }
        // Both read while every thread is stopped: after resume() the
        // workers change `live` again (a descheduled main thread saw it 219
        // apart from the census once).
        let census = t.check_invariants();
        let live = t.live();
        pause.resume();
        let census = census.unwrap_or_else(|e| {
            stop.store(true, SeqCst);
            panic!("check {checks}: {e}")
        });
        assert_eq!(census.live as u32, live);
        checks += 1;
    }
    stop.store(true, SeqCst);
    ticker.join().unwrap();
    sweeper.join().unwrap();
    let mut total = Counts::default();
    for w in workers {
        let n = w.join().unwrap();
        total.refreshed += n.refreshed;
        total.expired += n.expired;
        total.refresh_lost_to_sweep += n.refresh_lost_to_sweep;
        total.churned += n.churned;
        total.lookups += n.lookups;
        total.table_full += n.table_full;
        total.index_full += n.index_full;
        total.deferred += n.deferred;
        total.deferred_gone += n.deferred_gone;
        total.deferred_index_full += n.deferred_index_full;
    }
    let census = t
        .check_invariants()
        .unwrap_or_else(|e| panic!("final: {e}"));
    eprintln!(
        "{:.1} s, {WORKERS} workers + sweeper + clock, {checks} pauses checked, \
         {} swept, {total:?}, final {census:?}",
        t0.elapsed().as_secs_f64(),
        swept.load(Relaxed),
    );
    assert!(checks >= 3);
    assert!(total.refreshed > 10_000 && total.expired > 0 && swept.load(Relaxed) > 10_000);
    assert!(
        total.deferred > 1_000 && total.deferred_gone > 0,
        "the sweeper never raced a pending reply key"
    );
}
