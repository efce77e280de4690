//! The per-packet engine: takes frames and time, returns verdicts.
//!
//! [`Engine`] holds what all workers share: the connection table, the current
//! rule snapshot and every worker's counters. Each data-path thread owns a
//! [`Worker`] and calls [`Worker::begin_batch`] once per batch and
//! [`Worker::process`] per frame. The control plane publishes new rules with
//! [`Engine::publish`]; workers pick them up at their next batch (RCU style:
//! old snapshots stay valid for whoever still holds them).

pub mod housekeep;
pub mod metrics;
pub mod persist;
pub mod snapshot;
pub mod stats;
pub mod worker;
mod xmit;

pub use crate::fib::{Fib, NextHop, Resolve, StaticFib};
pub use snapshot::{Knobs, MarkRule, RuleSet, Snapshot};
pub use stats::{DropReason, Rates, Totals, WorkerStats};
pub use worker::{Verdict, Worker, MAX_BATCH};

use crate::conn::ConnTable;
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
    pub conns: ConnTable,
    pub limits: Limits,
    snapshot: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    fib: Arc<dyn Fib>,
    pub(crate) housekeeping: Mutex<housekeep::State>,
    /// secure_tcp table in force (set by housekeeping, read per batch).
    pub(crate) secure_on: AtomicBool,
    /// drop_packet rate in force, 0 = off.
    pub(crate) drop_rate: AtomicU32,
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
            secure_on: AtomicBool::new(false),
            drop_rate: AtomicU32::new(0),
        })
    }

    /// Publishes a new rule set; workers switch to it at their next batch.
    pub fn publish(&self, rules: &RuleSet) {
        let mut cur = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let gen = self.generation.load(Ordering::Relaxed) + 1;
        let snap = Snapshot::build(rules, gen, &self.conns, self.limits.max_services);
        *cur = Arc::new(snap);
        self.generation.store(gen, Ordering::Release);
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

    /// Summed counters of service `id`.
    pub fn service_totals(&self, id: u32) -> Totals {
        let mut t = Totals::default();
        for w in self.worker_stats() {
            if let Some(c) = w.svc.get(id as usize) {
                t.add(c);
            }
        }
        t
    }

    /// Summed counters of dest `id`.
    pub fn dest_totals(&self, id: u32) -> Totals {
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
