//! The per-packet engine: takes frames and time, returns verdicts.
//!
//! [`Engine`] holds what all workers share: the connection table, the current
//! rule snapshot and every worker's counters. Each data-path thread owns a
//! [`Worker`] and calls [`Worker::begin_batch`] once per batch and
//! [`Worker::process`] per frame. The control plane publishes new rules with
//! [`Engine::publish`]; workers pick them up at their next batch (RCU style:
//! old snapshots stay valid for whoever still holds them).
//!
//! Counters are indexed by service and dest id, and ids are reused. Each worker
//! is the only writer of its counters, so they are never reset; instead the
//! engine keeps the value each id's counters had when its object was created
//! (or zeroed with `-Z`), and every reader sees the difference: a new service
//! or dest starts at zero, with no rate history.

mod housekeep;
mod lips;
pub mod metrics;
mod persist;
mod snapshot;
mod stats;
mod sync;
mod worker;
mod xmit;

pub use crate::fib::{Fib, NextHop, Resolve, StaticFib};
pub use housekeep::{listed_expiry, state_name, Swept};
pub use persist::TEMPLATE_REARM_SECS;
pub use snapshot::{Knobs, MarkRule, ReuseMode, RuleSet, Snapshot};
pub use stats::{DropReason, Rates, Totals, WorkerStats, N_DROP_REASONS};
pub use sync::{kernel_flags, syncable_state, SyncApply, SyncHub, SyncQueue, DEFAULT_SYNC_QUEUE};
pub use worker::{Verdict, Worker, MAX_BATCH};

use crate::addr::Addr;
use crate::conn::ConnTable;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sizes fixed when the engine is created.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum connections + templates (`conn_max`).
    pub conn_max: u32,
    /// Service ids are below this.
    pub max_services: usize,
    /// Dest ids are below this.
    pub max_dests: usize,
    /// Number of workers that may allocate FULLNAT ports (partitions the port space).
    pub workers: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conn_max: 1 << 20,
            max_services: 4096,
            max_dests: 65536,
            workers: 1,
        }
    }
}

/// State shared by all workers.
pub struct Engine {
    /// The connection table all workers share.
    pub conns: ConnTable,
    /// The sizes the engine was made with.
    pub limits: Limits,
    snapshot: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    fib: Arc<dyn Fib>,
    pub(crate) housekeeping: Mutex<housekeep::State>,
    /// Rate estimators. Their own lock: [`Engine::publish`] resets them while
    /// it holds the snapshot lock, and housekeeping takes the snapshot lock
    /// while it holds its own.
    pub(crate) rates: Mutex<housekeep::Estimators>,
    /// Counter values at creation or `-Z`, by id (see the module documentation).
    baselines: Mutex<Baselines>,
    /// FULLNAT local-address ids in use and retired.
    pub(crate) lip_ids: Mutex<lips::LipIds>,
    /// secure_tcp table in force (set by housekeeping, read per batch).
    pub(crate) secure_on: AtomicBool,
    /// drop_packet rate in force, 0 = off.
    pub(crate) drop_rate: AtomicU32,
    /// Entries deleted by drop_entry.
    pub(crate) dropped_entries: AtomicU64,
    /// Connection sync: the master's switch, knobs and per-worker queues.
    pub sync: sync::SyncHub,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("conns", &self.conns)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Engine {
    /// An engine with empty rules. `seed` keys the connection hash (pass random bytes).
    pub fn new(limits: Limits, fib: Arc<dyn Fib>, seed: [u64; 4]) -> Arc<Engine> {
        Arc::new(Engine {
            conns: ConnTable::new(limits.conn_max, seed),
            limits,
            snapshot: Mutex::new(Arc::new(Snapshot::empty(limits.max_services))),
            generation: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
            fib,
            housekeeping: Mutex::new(housekeep::State::default()),
            rates: Mutex::new(housekeep::Estimators::default()),
            baselines: Mutex::new(Baselines::default()),
            lip_ids: Mutex::new(lips::LipIds::default()),
            secure_on: AtomicBool::new(false),
            drop_rate: AtomicU32::new(0),
            dropped_entries: AtomicU64::new(0),
            sync: sync::SyncHub::default(),
        })
    }

    /// Publishes a new rule set; workers switch to it at their next batch.
    /// Services and dests that are new objects (a reused id included) start
    /// with zero counters and no rate history. FULLNAT local addresses get ids
    /// as [`lips`] explains; the caller checks first that they fit
    /// ([`Engine::lips_fit`]): an address that finds no id is left out.
    pub fn publish(&self, rules: &RuleSet) {
        let mut cur = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let gen = self.generation.load(Ordering::Relaxed) + 1;
        let wanted: HashSet<Addr> = rules
            .laddrs
            .iter()
            .flat_map(|(_, l)| l.iter().map(|a| Addr::from(*a)))
            .collect();
        let (lip_ids, refused) = self
            .lip_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&wanted, &self.conns);
        debug_assert!(
            refused.is_empty(),
            "no room for local addresses {refused:?}"
        );
        let snap = Snapshot::build(rules, gen, &lip_ids, self.limits.max_services);
        self.renew_objects(&cur, &snap);
        // Ask for the real servers' next hops now, so that the first packet
        // of the first connection to a new real server is not the one that
        // finds its neighbour unresolved (a resolve of an unknown neighbour
        // makes the mirror probe it; workers drop such packets, counted).
        for svc in snap.services() {
            for d in &svc.dests {
                let _ = self.fib.resolve(&Addr::from(d.addr));
            }
        }
        *cur = Arc::new(snap);
        self.generation.store(gen, Ordering::Release);
    }

    /// Starts the counters of the objects of `new` that are not in `old` at
    /// zero, and forgets the rate history of new and removed ones. Runs before
    /// workers see `new`, so a new object's first packet counts.
    fn renew_objects(&self, old: &Snapshot, new: &Snapshot) {
        let new_svcs: Vec<u32> = new
            .services()
            .filter(|s| old.service(s.id).is_none_or(|o| o.serial != s.serial))
            .map(|s| s.id)
            .collect();
        let new_dests: Vec<u32> = new
            .dest_ids()
            .filter(|&(id, d)| old.dest(id).is_none_or(|o| !Arc::ptr_eq(o, d)))
            .map(|(id, _)| id)
            .collect();
        {
            let mut b = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
            for &id in &new_svcs {
                b.svc.insert(id, self.raw_service_totals(id));
            }
            for &id in &new_dests {
                b.dest.insert(id, self.raw_dest_totals(id));
            }
        }
        let gone_svcs = old.services().filter(|s| new.service(s.id).is_none());
        let gone_dests = old.dest_ids().filter(|&(id, _)| new.dest(id).is_none());
        let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        for id in new_svcs.into_iter().chain(gone_svcs.map(|s| s.id)) {
            r.svc.remove(&id);
        }
        for id in new_dests.into_iter().chain(gone_dests.map(|(id, _)| id)) {
            r.dest.remove(&id);
        }
    }

    /// Whether the local addresses `wanted` (every pool's, all together) can be
    /// in force at once: at most [`crate::conn::MAX_LIPS`] ids, counting
    /// removed addresses that connections may still use.
    pub fn lips_fit(&self, wanted: &HashSet<IpAddr>) -> bool {
        self.lip_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fits(wanted)
    }

    /// Local-address ids taken (addresses in force and retired ones): an upper
    /// bound for a quick [`Engine::lips_fit`].
    pub fn lip_ids_held(&self) -> usize {
        self.lip_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held()
    }

    /// Removed local addresses whose ids are not free yet.
    pub fn lips_retired(&self) -> usize {
        self.lip_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retired()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A worker with its own counters; `id` < `limits.workers` picks its FULLNAT port share.
    pub fn worker(self: &Arc<Engine>, id: u32) -> Worker {
        let stats = Arc::new(WorkerStats::new(
            self.limits.max_services,
            self.limits.max_dests,
        ));
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats.clone());
        Worker::new(self.clone(), id, stats, self.fib.clone())
    }

    /// Every worker's counters (for sums on read).
    pub fn worker_stats(&self) -> Vec<Arc<WorkerStats>> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counters of service `id` since it was created or zeroed.
    pub fn service_totals(&self, id: u32) -> Totals {
        let t = self.raw_service_totals(id);
        let b = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
        b.svc.get(&id).map_or(t, |b| t.minus(b))
    }

    /// Counters of dest `id` since it was created or zeroed.
    pub fn dest_totals(&self, id: u32) -> Totals {
        let t = self.raw_dest_totals(id);
        let b = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
        b.dest.get(&id).map_or(t, |b| t.minus(b))
    }

    /// `-Z` of a service: its counters restart from zero, and its rates (the
    /// kernel's `ip_vs_zero_stats` zeroes the estimator too).
    pub fn zero_service(&self, id: u32) {
        let t = self.raw_service_totals(id);
        self.baselines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .svc
            .insert(id, t);
        self.forget_rates(Some(id), None);
    }

    /// `-Z` of a dest (as part of its service's).
    pub fn zero_dest(&self, id: u32) {
        let t = self.raw_dest_totals(id);
        self.baselines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dest
            .insert(id, t);
        self.forget_rates(None, Some(id));
    }

    /// Every worker's counters of service id `id` summed, since the engine started.
    fn raw_service_totals(&self, id: u32) -> Totals {
        let mut t = Totals::default();
        for w in self.worker_stats() {
            if let Some(c) = w.svc.get(id as usize) {
                t.add(c);
            }
        }
        t
    }

    /// Every worker's counters of dest id `id` summed, since the engine started.
    fn raw_dest_totals(&self, id: u32) -> Totals {
        let mut t = Totals::default();
        for w in self.worker_stats() {
            if let Some(c) = w.dest.get(id as usize) {
                t.add(c);
            }
        }
        t
    }

    /// Summed drops per reason.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        let ws = self.worker_stats();
        DropReason::ALL
            .iter()
            .map(|&r| {
                let n = ws
                    .iter()
                    .map(|w| w.drops[r as usize].load(Ordering::Relaxed))
                    .sum();
                (r, n)
            })
            .collect()
    }
}

/// Raw counter values that read as zero, by service and dest id.
#[derive(Debug, Default)]
struct Baselines {
    svc: HashMap<u32, Totals>,
    dest: HashMap<u32, Totals>,
}
