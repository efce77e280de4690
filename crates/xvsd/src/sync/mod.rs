//! Connection synchronisation daemons (`--start-daemon master|backup`): the
//! IPVS sync protocol (version 1, or 0 by `sync_version`) over UDP multicast,
//! wire-compatible with Linux 6.18's `ip_vs_sync.c`, plus xvs's snapshot
//! messages (`xvs_sync::ext`).
//!
//! - **Master** ([`master`]): one thread. Every [`TICK`] it drains the
//!   workers' sync queues (filled by the data path as `ip_vs_sync_conn`
//!   decides, see xvs-core's `engine/sync.rs`), packs the records into messages
//!   of at most `sync_maxlen` bytes and sends each one as soon as it is full;
//!   a partly filled one goes after `flush_ms` (the kernel's 2 s). It also
//!   answers snapshot requests: the whole table, paced, at most once per
//!   `snapshot_interval_ms`.
//! - **Backup** ([`backup`]): one thread. Decodes what arrives (syncid
//!   filter, every check of the kernel's, drops counted by reason) and
//!   applies each record ([`xvs_core::engine::Engine::sync_apply`]). Records
//!   whose service or dest this director lacks are held (bounded, until their
//!   timeout) and applied when the rules change. On start it asks the group
//!   for a snapshot, again every 2 s until one has come (or 30 s passed).
//!
//! Both can run at once (two sockets sharing the port, as the kernel allows).

pub mod backup;
pub mod master;
mod sock;

use anyhow::{bail, Result};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use xvs_core::engine::Engine;
use xvs_ctl::{DaemonSpec, DaemonState};
use xvs_sync::needed::SyncKnobs;
use xvs_sync::{DropCounts, DropReason, SyncVersion};

/// How often the threads look at their queues and sockets.
pub const TICK: Duration = Duration::from_millis(20);

/// `[sync]` of the configuration file: the kernel's sync sysctls and xvs's
/// own settings. All can also be set at run time (`xvsadm --sync-knob`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// `sync_threshold` (packets): a connection is synced at this packet…
    pub sync_threshold: u32,
    /// `sync_period`: …then every this many (0: once).
    pub sync_period: u32,
    /// `sync_refresh_period`, seconds (0: off).
    pub sync_refresh_period: u32,
    /// `sync_retries` (0..=3).
    pub sync_retries: u8,
    /// `sync_persist_mode`: sync templates, not the conns they control.
    pub sync_persist_mode: bool,
    /// `sync_version`: 1, or 0 for the old format (IPv4 only).
    pub sync_version: u8,
    /// `sync_qlen_max`: records each worker's queue holds before updates
    /// are dropped (and counted). Also the queues' capacity, fixed at start.
    pub sync_qlen_max: u32,
    /// A partly filled message is sent after this long (kernel: 2000).
    pub flush_ms: u32,
    /// A master sends at most one snapshot per this long.
    pub snapshot_interval_ms: u32,
    /// Snapshot pace, records per second.
    pub snapshot_rate: u32,
    /// A backup asks for a snapshot when it starts.
    pub snapshot_request: bool,
    /// Records held for a service or dest the backup does not have yet.
    pub pending_max: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        let k = SyncKnobs::default();
        SyncConfig {
            sync_threshold: k.sync_threshold,
            sync_period: k.sync_period,
            sync_refresh_period: 0,
            sync_retries: k.sync_retries,
            sync_persist_mode: false,
            sync_version: 1,
            sync_qlen_max: xvs_core::engine::DEFAULT_SYNC_QUEUE as u32,
            flush_ms: xvs_sync::needed::SYNC_FLUSH_TIME_MS as u32,
            snapshot_interval_ms: 5000,
            snapshot_rate: 200_000,
            snapshot_request: true,
            pending_max: 65536,
        }
    }
}

impl SyncConfig {
    /// The knobs the data path reads.
    pub fn knobs(&self) -> SyncKnobs {
        SyncKnobs {
            sync_threshold: self.sync_threshold,
            sync_period: self.sync_period,
            sync_refresh_period_ms: self.sync_refresh_period as u64 * 1000,
            sync_retries: self.sync_retries,
            sync_persist_mode: self.sync_persist_mode,
            sync_version: if self.sync_version == 0 {
                SyncVersion::V0
            } else {
                SyncVersion::V1
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.sync_version > 1 {
            bail!("sync_version must be 0 or 1");
        }
        self.knobs().validate()?;
        if self.sync_qlen_max == 0 || self.sync_qlen_max > 1 << 20 {
            bail!("sync_qlen_max must be 1..=1048576");
        }
        if self.snapshot_rate == 0 {
            bail!("snapshot_rate must be at least 1");
        }
        if self.flush_ms == 0 {
            bail!("flush_ms must be at least 1");
        }
        Ok(())
    }

    /// Sets one knob by name (run time).
    pub fn set(&mut self, name: &str, v: u64) -> Result<()> {
        let mut n = *self;
        let u32v = || u32::try_from(v).map_err(|_| anyhow::anyhow!("{name}: {v} is too large"));
        match name {
            "sync_threshold" => n.sync_threshold = u32v()?,
            "sync_period" => n.sync_period = u32v()?,
            "sync_refresh_period" => n.sync_refresh_period = u32v()?,
            "sync_retries" => n.sync_retries = u8::try_from(v).unwrap_or(u8::MAX),
            "sync_persist_mode" => n.sync_persist_mode = v != 0,
            "sync_version" => n.sync_version = u8::try_from(v).unwrap_or(u8::MAX),
            "sync_qlen_max" => n.sync_qlen_max = u32v()?,
            "flush_ms" => n.flush_ms = u32v()?,
            "snapshot_interval_ms" => n.snapshot_interval_ms = u32v()?,
            "snapshot_rate" => n.snapshot_rate = u32v()?,
            "snapshot_request" => n.snapshot_request = v != 0,
            "pending_max" => n.pending_max = u32v()?,
            _ => bail!("unknown sync knob `{name}'"),
        }
        n.validate()?;
        *self = n;
        Ok(())
    }

    /// Every knob, by name, as `set` takes them.
    pub fn list(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("sync_threshold", self.sync_threshold.into()),
            ("sync_period", self.sync_period.into()),
            ("sync_refresh_period", self.sync_refresh_period.into()),
            ("sync_retries", self.sync_retries.into()),
            ("sync_persist_mode", self.sync_persist_mode.into()),
            ("sync_version", self.sync_version.into()),
            ("sync_qlen_max", self.sync_qlen_max.into()),
            ("flush_ms", self.flush_ms.into()),
            ("snapshot_interval_ms", self.snapshot_interval_ms.into()),
            ("snapshot_rate", self.snapshot_rate.into()),
            ("snapshot_request", self.snapshot_request.into()),
            ("pending_max", self.pending_max.into()),
        ]
    }
}

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        /// The daemons' counters (the workers' queue counters are in the engine).
        #[derive(Debug, Default)]
        pub struct SyncStats {
            $(#[doc = $help] pub $name: AtomicU64,)*
            /// Decoder drops by reason.
            pub drops: Mutex<DropCounts>,
        }

        impl SyncStats {
            /// (name, help, value) of every plain counter.
            pub fn list(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.load(Relaxed)),)*]
            }
        }
    };
}

counters! {
    sent_mesgs: "Sync messages sent (master)",
    sent_records: "Records sent in sync messages (master)",
    send_errors: "Messages that could not be sent (master)",
    encode_errors: "Records that could not be encoded (master)",
    snapshot_requests: "Snapshot requests received (master)",
    snapshot_requests_limited: "Snapshot requests answered late by the rate limit (master)",
    snapshots_sent: "Snapshots sent (master)",
    snapshot_records_sent: "Records sent in snapshots (master)",
    recv_mesgs: "Sync messages received (backup)",
    recv_records: "Records decoded (backup)",
    created: "Connections created from records (backup)",
    updated: "Connections updated from records (backup)",
    replaced: "Connections replaced because the master changed their dest (backup)",
    stale: "Expiry notices of replaced connections, ignored (backup)",
    held: "Records held for a service or dest not configured here (backup)",
    held_applied: "Held records applied once their dest appeared (backup)",
    held_expired: "Held records whose timeout passed first (backup)",
    held_overflow: "Records not held because pending_max were (backup)",
    table_full: "Records dropped because the connection table was full (backup)",
    unsupported: "Records of what xvs does not forward (SCTP, LOCALNODE, BYPASS) (backup)",
    recv_errors: "Socket receive errors (backup)",
    ext_invalid: "xvs messages with a bad header (backup and master)",
    snapshot_requests_sent: "Snapshot requests sent (backup)",
    snapshot_records_recv: "Records received in snapshots (backup)",
    snapshots_recv: "Snapshots completed for this backup's request (backup)",
}

impl SyncStats {
    pub fn add_drops(&self, d: &DropCounts) {
        if d.total() > 0 {
            self.drops.lock().unwrap_or_else(|e| e.into_inner()).add(d);
        }
    }

    pub fn drop_counts(&self) -> Vec<(DropReason, u64)> {
        let d = *self.drops.lock().unwrap_or_else(|e| e.into_inner());
        DropReason::ALL.iter().map(|&r| (r, d.get(r))).collect()
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn end(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sync daemons of this xvsd and their settings.
pub struct SyncCtl {
    engine: Arc<Engine>,
    pub stats: Arc<SyncStats>,
    cfg: Arc<Mutex<SyncConfig>>,
    master: Mutex<Option<Running>>,
    backup: Mutex<Option<Running>>,
}

impl SyncCtl {
    /// Applies `cfg` to the engine (call before the workers are created:
    /// the queue capacity is fixed with them).
    pub fn new(engine: Arc<Engine>, cfg: SyncConfig) -> Result<Arc<SyncCtl>> {
        cfg.validate()?;
        engine.sync.set_queue_capacity(cfg.sync_qlen_max as usize);
        engine.sync.set_knobs(cfg.knobs())?;
        Ok(Arc::new(SyncCtl {
            engine,
            stats: Arc::default(),
            cfg: Arc::new(Mutex::new(cfg)),
            master: Mutex::new(None),
            backup: Mutex::new(None),
        }))
    }

    pub fn config(&self) -> SyncConfig {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets one knob at run time.
    pub fn set_knob(&self, name: &str, v: u64) -> Result<()> {
        let mut c = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        c.set(name, v)?;
        self.engine.sync.set_knobs(c.knobs())?;
        self.engine.sync.set_qlen_max(c.sync_qlen_max as usize);
        Ok(())
    }

    /// Starts a daemon (its socket first: an error leaves nothing running).
    pub fn start(&self, spec: &DaemonSpec) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match spec.state {
            DaemonState::Master => {
                let m = master::Master::new(
                    spec,
                    self.engine.clone(),
                    self.stats.clone(),
                    self.cfg.clone(),
                    stop.clone(),
                )?;
                self.engine.sync_set_master(true);
                std::thread::Builder::new()
                    .name("xvsd-sync-master".into())
                    .spawn(move || m.run())?
            }
            DaemonState::Backup => {
                let b = backup::Backup::new(
                    spec,
                    self.engine.clone(),
                    self.stats.clone(),
                    self.cfg.clone(),
                    stop.clone(),
                )?;
                std::thread::Builder::new()
                    .name("xvsd-sync-backup".into())
                    .spawn(move || b.run())?
            }
        };
        let slot = match spec.state {
            DaemonState::Master => &self.master,
            DaemonState::Backup => &self.backup,
        };
        let old = slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Running {
                stop,
                thread: Some(thread),
            });
        if let Some(o) = old {
            o.end();
        }
        tracing::info!(state = ?spec.state, ifn = %spec.mcast_ifn, syncid = spec.syncid, "sync daemon started");
        Ok(())
    }

    /// Stops a daemon (its thread ends within a tick).
    pub fn stop(&self, state: DaemonState) {
        if state == DaemonState::Master {
            self.engine.sync_set_master(false);
        }
        let slot = match state {
            DaemonState::Master => &self.master,
            DaemonState::Backup => &self.backup,
        };
        let r = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(r) = r {
            r.end();
            tracing::info!(?state, "sync daemon stopped");
        }
    }

    /// Every counter, by name: the daemons', the queues', the decoder's
    /// drops by reason, and the knobs in force.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .stats
            .list()
            .into_iter()
            .map(|(n, _, v)| (n.to_string(), v))
            .collect();
        let (queued, dropped) = self.engine.sync.queue_totals();
        out.push(("queued".into(), queued));
        out.push(("dropped_queue_full".into(), dropped));
        for (r, n) in self.stats.drop_counts() {
            out.push((format!("dropped_{}", r.name()), n));
        }
        for (k, v) in self.config().list() {
            out.push((format!("knob_{k}"), v));
        }
        out
    }

    /// Prometheus lines.
    pub fn metrics(&self, out: &mut Vec<xvs_core::engine::metrics::Family>) {
        use xvs_core::engine::metrics::{Family, Kind, Value};
        for (n, help, v) in self.stats.list() {
            out.push(crate::metrics::counter(
                &format!("xvs_sync_{n}_total"),
                help,
                v,
            ));
        }
        let (queued, dropped) = self.engine.sync.queue_totals();
        out.push(crate::metrics::counter(
            "xvs_sync_queued_total",
            "Records the workers queued for the master",
            queued,
        ));
        out.push(crate::metrics::counter(
            "xvs_sync_queue_dropped_total",
            "Updates dropped because a worker's queue was at sync_qlen_max",
            dropped,
        ));
        let mut f = Family::new(
            "xvs_sync_recv_dropped_total",
            "Received sync data dropped by the backup's checks, by reason",
            Kind::Counter,
        );
        for (r, n) in self.stats.drop_counts() {
            f.add(&[("reason", r.name().to_string())], Value::int(n));
        }
        out.push(f);
    }
}

impl Drop for SyncCtl {
    fn drop(&mut self) {
        self.stop(DaemonState::Master);
        self.stop(DaemonState::Backup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_are_checked_as_the_sysctls_are() {
        let mut c = SyncConfig::default();
        c.set("sync_period", 0).unwrap();
        assert_eq!(c.knobs().sync_period, 0);
        c.set("sync_threshold", 100).unwrap(); // period 0: any threshold
        assert!(
            c.set("sync_period", 50).is_err(),
            "threshold not below period"
        );
        assert_eq!(c.sync_period, 0, "a refused change changes nothing");
        assert!(c.set("sync_retries", 4).is_err());
        assert!(c.set("sync_version", 2).is_err());
        assert!(c.set("no_such_knob", 1).is_err());
        c.set("sync_refresh_period", 30).unwrap();
        assert_eq!(c.knobs().sync_refresh_period_ms, 30_000);
        // Every listed name is settable to its own value.
        let mut d = SyncConfig::default();
        for (n, v) in SyncConfig::default().list() {
            d.set(n, v).unwrap();
        }
        assert_eq!(d, SyncConfig::default());
    }
}
