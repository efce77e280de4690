//! The master's thread: queued updates to messages, and snapshots on request.

use super::{bump, sock, SyncConfig, SyncStats, TICK};
use anyhow::Result;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_core::engine::syncable_state;
use xvs_core::engine::Engine;
use xvs_ctl::DaemonSpec;
use xvs_sync::ext::{self, ExtKind, SnapshotBuilder};
use xvs_sync::{MesgBuilder, SyncConn, SyncRole};

/// Datagrams read per tick at most (the master reads only snapshot requests;
/// a peer master's sync traffic must not keep it from sending).
const RECV_PER_TICK: usize = 64;

pub struct Master {
    sock: UdpSocket,
    ep: sock::Endpoint,
    syncid: u8,
    maxlen: u16,
    engine: Arc<Engine>,
    stats: Arc<SyncStats>,
    cfg: Arc<Mutex<SyncConfig>>,
    stop: Arc<AtomicBool>,
}

/// A snapshot being sent.
struct SnapJob {
    session: u32,
    cursor: u32,
    started: bool,
    builder: SnapshotBuilder,
    records: u32,
}

impl Master {
    pub fn new(
        spec: &DaemonSpec,
        engine: Arc<Engine>,
        stats: Arc<SyncStats>,
        cfg: Arc<Mutex<SyncConfig>>,
        stop: Arc<AtomicBool>,
    ) -> Result<Master> {
        let ep = sock::Endpoint::of(spec)?;
        let sock = sock::open(&ep, spec, false)?;
        let maxlen =
            xvs_sync::sync_maxlen(SyncRole::Master, xvs_sync::Af::V4, spec.sync_maxlen, ep.mtu);
        Ok(Master {
            sock,
            ep,
            syncid: spec.syncid,
            maxlen,
            engine,
            stats,
            cfg,
            stop,
        })
    }

    fn cfg(&self) -> SyncConfig {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, m: &[u8]) -> bool {
        match self.sock.send_to(m, self.ep.group) {
            Ok(_) => true,
            Err(e) => {
                bump(&self.stats.send_errors, 1);
                tracing::debug!("sync send: {e}");
                false
            }
        }
    }

    fn send_mesg(&self, m: &[u8], records: usize) {
        if self.send(m) {
            bump(&self.stats.sent_mesgs, 1);
            bump(&self.stats.sent_records, records as u64);
        }
    }

    pub fn run(self) {
        let mut builder: Option<(MesgBuilder, Instant)> = None;
        let mut job: Option<SnapJob> = None;
        let mut last_snapshot: Option<Instant> = None;
        let mut waiting: Option<u32> = None;
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Relaxed) {
            let cfg = self.cfg();
            let version = cfg.knobs().sync_version;
            // Drain the workers' queues.
            let snap = self.engine.snapshot();
            for q in self.engine.sync.queues() {
                while let Some(v) = q.pop() {
                    let Some(rec) = self.engine.sync_record(&snap, &v, None) else {
                        continue;
                    };
                    let b = builder.get_or_insert_with(|| {
                        (
                            MesgBuilder::new(version, self.syncid, self.maxlen),
                            Instant::now(),
                        )
                    });
                    match b.0.push(&rec) {
                        Ok(Some(full)) => {
                            self.send_mesg(&full, count_of(&full, version));
                            b.1 = Instant::now();
                        }
                        Ok(None) => {}
                        Err(_) => bump(&self.stats.encode_errors, 1),
                    }
                }
            }
            // A partly filled message goes after flush_ms (the kernel's 2 s),
            // or at once when the version changed.
            if let Some((b, since)) = &mut builder {
                let due = since.elapsed() >= Duration::from_millis(cfg.flush_ms.into());
                if (due || b.version() != version) && !b.is_empty() {
                    let n = b.nr_conns();
                    if let Some(m) = b.flush() {
                        self.send_mesg(&m, n);
                    }
                }
                if b.is_empty() && b.version() != version {
                    builder = None;
                } else if b.is_empty() {
                    *since = Instant::now();
                }
            }
            // Snapshot requests (the socket's timeout is the thread's tick).
            for _ in 0..RECV_PER_TICK {
                let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                    break;
                };
                let m = &buf[..n];
                if !ext::is_ext(m) {
                    continue; // a peer master's sync traffic
                }
                let Some(h) = ext::parse(m) else {
                    bump(&self.stats.ext_invalid, 1);
                    continue;
                };
                if h.kind != ExtKind::Request || (self.syncid != 0 && h.syncid != self.syncid) {
                    continue;
                }
                bump(&self.stats.snapshot_requests, 1);
                if job.is_some() || waiting.is_some() {
                    bump(&self.stats.snapshot_requests_limited, 1);
                }
                waiting = Some(h.session);
            }
            if job.is_none() {
                if let Some(session) = waiting {
                    let interval = Duration::from_millis(cfg.snapshot_interval_ms.into());
                    if last_snapshot.is_none_or(|t| t.elapsed() >= interval) {
                        waiting = None;
                        last_snapshot = Some(Instant::now());
                        job = Some(SnapJob {
                            session,
                            cursor: 0,
                            started: false,
                            builder: SnapshotBuilder::new(self.syncid, session, self.maxlen),
                            records: 0,
                        });
                    }
                }
            }
            if let Some(j) = &mut job {
                // Records this tick at snapshot_rate.
                let budget = (cfg.snapshot_rate as u64 * TICK.as_millis() as u64 / 1000).max(1);
                if self.snapshot_step(j, budget) {
                    let end = ext::end(self.syncid, j.session, j.records);
                    self.send(&end);
                    bump(&self.stats.snapshots_sent, 1);
                    tracing::info!(records = j.records, "snapshot sent");
                    job = None;
                }
            }
        }
        if let Some((mut b, _)) = builder {
            let n = b.nr_conns();
            if let Some(m) = b.flush() {
                self.send_mesg(&m, n);
            }
        }
    }

    /// Sends about `budget` more records of the table; true when done.
    fn snapshot_step(&self, j: &mut SnapJob, budget: u64) -> bool {
        let snap = self.engine.snapshot();
        let now = crate::clock::now();
        let mut recs: Vec<SyncConn> = Vec::new();
        let mut scanned = 0u32;
        // Scan in slices until the budget of records is met or the table ends.
        loop {
            let from = j.cursor;
            if j.started && from == 0 {
                break;
            }
            j.started = true;
            let slice = 1024;
            j.cursor = self.engine.conns.scan(from, slice, |v, _| {
                if syncable_state(&v) {
                    recs.extend(self.engine.sync_record(&snap, &v, Some(now)));
                }
            });
            scanned += slice;
            if recs.len() as u64 >= budget || j.cursor == 0 || scanned >= 1 << 20 {
                break;
            }
        }
        for r in &recs {
            match j.builder.push(r) {
                Ok(Some(m)) => {
                    self.send(&m);
                }
                Ok(None) => {}
                Err(_) => {
                    bump(&self.stats.encode_errors, 1);
                    continue;
                }
            }
            j.records += 1;
        }
        bump(&self.stats.snapshot_records_sent, recs.len() as u64);
        if j.cursor == 0 {
            if let Some(m) = j.builder.flush() {
                self.send(&m);
            }
            return true;
        }
        false
    }
}

/// Records in a finished message (its header's count).
fn count_of(m: &[u8], v: xvs_sync::SyncVersion) -> usize {
    match v {
        xvs_sync::SyncVersion::V1 => m.get(4).copied().unwrap_or(0) as usize,
        xvs_sync::SyncVersion::V0 => m.first().copied().unwrap_or(0) as usize,
    }
}
