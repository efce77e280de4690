//! The backup's thread: datagrams in, connections created or updated.

use super::{bump, sock, SyncConfig, SyncStats};
use anyhow::Result;
use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_core::engine::SyncApply;
use xvs_core::engine::{Engine, Snapshot};
use xvs_core::time::Time;
use xvs_ctl::DaemonSpec;
use xvs_sync::ext::{self, ExtKind};
use xvs_sync::{BackupConfig, DropCounts, DropReason, SyncConn, SyncDecoder};

/// A backup asks for a snapshot this often until one comes…
const REQUEST_EVERY: Duration = Duration::from_secs(2);
/// …for at most this long after it starts.
const REQUEST_FOR: Duration = Duration::from_secs(30);
/// Held records are retried (and expired) at least this often.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// A record held until its service or dest appears.
struct Held {
    conn: SyncConn,
    deadline: Time,
}

type HeldKey = (u8, bool, IpAddr, u16, IpAddr, u16);

pub struct Backup {
    sock: UdpSocket,
    ep: sock::Endpoint,
    syncid: u8,
    engine: Arc<Engine>,
    stats: Arc<SyncStats>,
    cfg: Arc<Mutex<SyncConfig>>,
    stop: Arc<AtomicBool>,
    decoder: SyncDecoder,
    held: HashMap<HeldKey, Held>,
    session: u32,
}

fn session_id() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = t ^ (std::process::id() as u64) << 32;
    (x ^ x >> 29).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32 | 1
}

impl Backup {
    pub fn new(
        spec: &DaemonSpec,
        engine: Arc<Engine>,
        stats: Arc<SyncStats>,
        cfg: Arc<Mutex<SyncConfig>>,
        stop: Arc<AtomicBool>,
    ) -> Result<Backup> {
        let ep = sock::Endpoint::of(spec)?;
        let sock = sock::open(&ep, spec, true)?;
        Ok(Backup {
            sock,
            ep,
            syncid: spec.syncid,
            engine,
            stats,
            cfg,
            stop,
            decoder: SyncDecoder::new(BackupConfig {
                syncid: spec.syncid,
            }),
            held: HashMap::new(),
            session: session_id(),
        })
    }

    fn cfg(&self) -> SyncConfig {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn run(mut self) {
        let started = Instant::now();
        let mut last_request: Option<Instant> = None;
        let mut have_snapshot = false;
        let mut last_retry = Instant::now();
        let mut rules_gen = self.engine.snapshot().generation;
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Relaxed) {
            let cfg = self.cfg();
            if cfg.snapshot_request
                && !have_snapshot
                && started.elapsed() < REQUEST_FOR
                && last_request.is_none_or(|t| t.elapsed() >= REQUEST_EVERY)
            {
                let m = ext::request(self.syncid, self.session);
                if self.sock.send_to(&m, self.ep.group).is_ok() {
                    bump(&self.stats.snapshot_requests_sent, 1);
                }
                last_request = Some(Instant::now());
            }
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let m = buf[..n].to_vec();
                    if self.handle(&m, &cfg) {
                        have_snapshot = true;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    bump(&self.stats.recv_errors, 1);
                    tracing::debug!("sync receive: {e}");
                    std::thread::sleep(super::TICK);
                }
            }
            let gen = self.engine.snapshot().generation;
            if !self.held.is_empty() && (gen != rules_gen || last_retry.elapsed() >= RETRY_EVERY) {
                self.retry_held();
                last_retry = Instant::now();
            }
            rules_gen = gen;
        }
    }

    /// One datagram; true when it completes the snapshot this backup asked for.
    fn handle(&mut self, m: &[u8], cfg: &SyncConfig) -> bool {
        if ext::is_ext(m) {
            let Some(h) = ext::parse(m) else {
                bump(&self.stats.ext_invalid, 1);
                return false;
            };
            if self.syncid != 0 && h.syncid != self.syncid {
                let mut d = DropCounts::default();
                d.bump(DropReason::SyncidMismatch);
                self.stats.add_drops(&d);
                return false;
            }
            return match h.kind {
                ExtKind::Request => false, // for the masters
                ExtKind::Data => {
                    let d = ext::decode_data(
                        m,
                        &BackupConfig {
                            syncid: self.syncid,
                        },
                    );
                    self.stats.add_drops(&d.drops);
                    bump(&self.stats.snapshot_records_recv, d.conns.len() as u64);
                    let snap = self.engine.snapshot();
                    for c in d.conns {
                        self.apply(&snap, c, cfg);
                    }
                    false
                }
                ExtKind::End { records } => {
                    if h.session == self.session {
                        bump(&self.stats.snapshots_recv, 1);
                        tracing::info!(records, "snapshot received");
                        true
                    } else {
                        false
                    }
                }
            };
        }
        let d = self.decoder.decode(m);
        bump(&self.stats.recv_mesgs, 1);
        bump(&self.stats.recv_records, d.conns.len() as u64);
        self.stats.add_drops(&d.drops);
        let snap = self.engine.snapshot();
        for c in d.conns {
            self.apply(&snap, c, cfg);
        }
        false
    }

    fn apply(&mut self, snap: &Snapshot, c: SyncConn, cfg: &SyncConfig) {
        let now = crate::clock::now();
        match self.engine.sync_apply_in(snap, &c, now) {
            SyncApply::Created => bump(&self.stats.created, 1),
            SyncApply::Updated => bump(&self.stats.updated, 1),
            SyncApply::Replaced => bump(&self.stats.replaced, 1),
            SyncApply::Stale => bump(&self.stats.stale, 1),
            SyncApply::TableFull => bump(&self.stats.table_full, 1),
            SyncApply::Unsupported => bump(&self.stats.unsupported, 1),
            SyncApply::NoDest => {
                let key = (
                    c.protocol,
                    c.is_template(),
                    c.addrs.caddr(),
                    c.cport,
                    c.addrs.vaddr(),
                    c.vport,
                );
                if !self.held.contains_key(&key) && self.held.len() >= cfg.pending_max as usize {
                    bump(&self.stats.held_overflow, 1);
                    return;
                }
                let secs = if c.timeout != 0 {
                    c.timeout.min(xvs_core::conn::MAX_TIMEOUT)
                } else {
                    xvs_sync::wire::V0_TEMPLATE_TIMEOUT_SECS
                };
                let deadline = now.add_secs(secs.into());
                if self.held.insert(key, Held { conn: c, deadline }).is_none() {
                    bump(&self.stats.held, 1);
                }
            }
        }
    }

    /// Applies the held records whose dest exists now; forgets expired ones.
    fn retry_held(&mut self) {
        let now = crate::clock::now();
        let engine = self.engine.clone();
        let stats = self.stats.clone();
        self.held.retain(|_, h| {
            if now >= h.deadline {
                bump(&stats.held_expired, 1);
                return false;
            }
            // What is left of its timeout, as it would be now.
            let mut c = h.conn.clone();
            c.timeout = ((h.deadline.0 - now.0) / 1_000_000_000).max(1) as u32;
            match engine.sync_apply(&c, now) {
                SyncApply::NoDest => true,
                r => {
                    bump(&stats.held_applied, 1);
                    match r {
                        SyncApply::Created => bump(&stats.created, 1),
                        SyncApply::Updated => bump(&stats.updated, 1),
                        SyncApply::Replaced => bump(&stats.replaced, 1),
                        SyncApply::TableFull => bump(&stats.table_full, 1),
                        _ => {}
                    }
                    false
                }
            }
        });
    }
}
