//! The workers' counters as the metrics endpoint reads them. Each worker
//! thread owns its [`WorkerStats`] as plain integers; after every batch (and
//! when idle) it stores a copy here (relaxed stores, one writer). Workers
//! register process-wide, so that the daemon's metrics need no plumbing
//! through the data plane.

use super::WorkerStats;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

const N: usize = 15;

/// One worker's published counters.
#[derive(Debug)]
pub struct Published {
    queue: u32,
    vals: [AtomicU64; N],
}

static REGISTRY: Mutex<Vec<Weak<Published>>> = Mutex::new(Vec::new());

impl Published {
    /// A slot for the worker of `queue`, listed by [`published_stats`] while
    /// the returned value lives.
    pub(crate) fn register(queue: u32) -> Arc<Published> {
        let p = Arc::new(Published {
            queue,
            vals: Default::default(),
        });
        let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|w| w.strong_count() > 0);
        r.push(Arc::downgrade(&p));
        p
    }

    #[inline]
    pub(crate) fn store(&self, s: &WorkerStats) {
        for (v, (_, x)) in self.vals.iter().zip(s.named()) {
            v.store(x, Relaxed);
        }
    }
}

/// A snapshot of one worker's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedStats {
    /// The queue the worker was opened for.
    pub queue: u32,
    /// Name and value of every counter ([`WorkerStats::named`] order).
    pub counters: [(&'static str, u64); N],
}

/// The counters of every live worker of this process, as of their last batch.
pub fn published_stats() -> Vec<PublishedStats> {
    let r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    r.iter()
        .filter_map(Weak::upgrade)
        .map(|p| {
            let mut counters = WorkerStats::default().named();
            for ((_, v), a) in counters.iter_mut().zip(&p.vals) {
                *v = a.load(Relaxed);
            }
            PublishedStats {
                queue: p.queue,
                counters,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_worker_is_listed_with_its_last_counters() {
        let p = Published::register(4242);
        let s = WorkerStats {
            superframes: 3,
            segments: 90,
            ..Default::default()
        };
        p.store(&s);
        let mine: Vec<_> = published_stats()
            .into_iter()
            .filter(|x| x.queue == 4242)
            .collect();
        assert_eq!(mine.len(), 1);
        assert!(mine[0].counters.contains(&("superframes", 3)));
        assert!(mine[0].counters.contains(&("segments", 90)));
        drop(p);
        assert!(published_stats().iter().all(|x| x.queue != 4242));
    }
}
