//! Health checks and keepalived.conf (`xvsd --keepalived-conf FILE`).
//!
//! The configuration's virtual servers become xvs services; every checker of
//! every real server runs as a task on one current-thread tokio runtime (one
//! thread, whatever the number of checkers; nothing here touches the data
//! path). A result goes through keepalived's decisions ([`logic`]); when a
//! real server's state, weight, the quorum or the sorry server changes, the
//! dests concerned are changed with the same ops `xvsadm` sends
//! (`State::apply_batch`), so the steering map and everything else follow.
//! Weight 0 (inhibit_on_failure) and removal both leave established
//! connections alone, as in IPVS.
//!
//! SIGHUP reloads the file: services and dests are brought to what it says
//! (changes made by hand to the services it defines are undone then, as
//! keepalived does), checkers that did not change keep running with their
//! state, and so real servers that did not change keep theirs.
//!
//! Lock order: the health state, then xvsd's `State`; the control socket
//! and the metrics read the health state without holding `State`.

pub mod logic;
mod probe;

use crate::state::State;
use anyhow::{Context, Result};
use logic::Retry;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use xvs_core::engine::metrics::{Family, Kind, Value};
use xvs_core::service::{Af, DestSpec, ServiceKey, ServiceSpec};
use xvs_ctl::health::{CheckHealth, CheckResult, RsHealth, SorryHealth, VsHealth};
use xvs_ctl::Op;
use xvs_keepalived::{CheckKind, CheckSpec, Config, RealServer, Script, VirtualServer};

/// Upper bounds (seconds) of the check-duration histogram.
const BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];
/// How often the host's addresses are read for ha_suspend.
const LOCAL_POLL: Duration = Duration::from_secs(1);
/// How long xvsd waits for omega's notifiers at shutdown.
const OMEGA_WAIT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running health checks of one configuration file.
#[derive(Clone)]
pub struct Health(Arc<Shared>);

struct Shared {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The one the control socket reports (an xvsd has at most one).
static CURRENT: Mutex<Option<Arc<Mutex<Inner>>>> = Mutex::new(None);

#[derive(Clone)]
struct Last {
    ok: bool,
    reason: String,
    latency: Duration,
    at: Instant,
}

#[derive(Clone)]
struct CheckerRt {
    vs: usize,
    rs: usize,
    /// Its place among the real server's checkers.
    idx: usize,
    spec: CheckSpec,
    retry: Retry,
    /// misc_dynamic's contribution to the real server's weight.
    cur_weight: i64,
    successes: u64,
    failures: u64,
    last: Option<Last>,
    /// Durations: counts per bucket of [`BUCKETS`] (and one above), sum.
    hist: [u64; BUCKETS.len() + 1],
    hist_sum: f64,
    task: Option<tokio::task::AbortHandle>,
}

struct RsRt {
    checkers: Vec<u64>,
    alive: bool,
    weight: i32,
    /// What this manager last put in the table (None: out).
    listed: Option<i32>,
    since: Instant,
}

struct VsRt {
    conf: VirtualServer,
    rs: Vec<RsRt>,
    quorum_up: bool,
    suspended: bool,
    sorry_listed: Option<i32>,
}

struct Inner {
    state: Arc<Mutex<State>>,
    vss: Vec<VsRt>,
    checkers: HashMap<u64, CheckerRt>,
    next_id: u64,
    rt: tokio::runtime::Handle,
    tls: Arc<rustls::ClientConfig>,
    me: Weak<Mutex<Inner>>,
}

/// A change to one dest: the service, the dest's address and port, and
/// what it should be (None: out).
type DestChange = (ServiceKey, IpAddr, u16, Option<DestSpec>);

impl Health {
    /// Reads `path`, puts its services in force (all or nothing) and starts
    /// the checkers.
    pub fn start(path: &Path, state: Arc<Mutex<State>>) -> Result<Health> {
        let conf = load(path)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the health-check runtime")?;
        let handle = rt.handle().clone();
        let inner = Arc::new_cyclic(|me| {
            Mutex::new(Inner {
                state,
                vss: Vec::new(),
                checkers: HashMap::new(),
                next_id: 1,
                rt: handle,
                tls: probe::tls_config(),
                me: me.clone(),
            })
        });
        {
            let mut g = lock(&inner);
            let (vss, checkers, spawn) = g.plan(conf, false);
            g.commit(vss, checkers, &[])
                .map_err(anyhow::Error::msg)
                .with_context(|| path.display().to_string())?;
            g.spawn(spawn, true);
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let weak = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("xvsd-health".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::spawn(watch_local(weak));
                    let _ = rx.await;
                })
            })?;
        *lock(&CURRENT) = Some(inner.clone());
        Ok(Health(Arc::new(Shared {
            inner,
            path: path.to_path_buf(),
            stop: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })))
    }

    /// Re-reads the file (SIGHUP). On any error nothing changes.
    pub fn reload(&self) -> Result<()> {
        let conf = load(&self.0.path)?;
        let mut g = lock(&self.0.inner);
        let old_keys: Vec<ServiceKey> = g
            .vss
            .iter()
            .flat_map(|v| v.conf.services.iter().map(|s| s.key))
            .collect();
        let (vss, checkers, spawn) = g.plan(conf, true);
        g.commit(vss, checkers, &old_keys)
            .map_err(anyhow::Error::msg)
            .with_context(|| self.0.path.display().to_string())?;
        let n: usize = g.vss.iter().map(|v| v.rs.len()).sum();
        tracing::info!(
            file = %self.0.path.display(),
            virtual_servers = g.vss.len(),
            real_servers = n,
            checkers = g.checkers.len(),
            "keepalived configuration reloaded"
        );
        g.spawn(spawn, true);
        Ok(())
    }

    /// Stops the checkers; with omega, runs the down notifiers first.
    pub fn shutdown(&self) {
        let scripts: Vec<Script> = {
            let g = lock(&self.0.inner);
            let mut s = Vec::new();
            for v in g.vss.iter().filter(|v| v.conf.omega) {
                for (ri, r) in v.rs.iter().enumerate() {
                    if r.alive {
                        s.extend(v.conf.real_servers[ri].notify_down.clone());
                    }
                }
                if v.quorum_up {
                    s.extend(v.conf.quorum_down.clone());
                }
            }
            s
        };
        if !scripts.is_empty() {
            let rt = lock(&self.0.inner).rt.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            rt.spawn(async move {
                let mut waits = Vec::new();
                for s in scripts {
                    match probe::command(&s).and_then(|mut c| c.spawn().map_err(|e| e.to_string()))
                    {
                        Ok(c) => waits.push(c),
                        Err(e) => tracing::warn!("omega notifier {}: {e}", s.argv[0]),
                    }
                }
                for mut c in waits {
                    let _ = c.wait().await;
                }
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(OMEGA_WAIT);
        }
        if let Some(tx) = lock(&self.0.stop).take() {
            let _ = tx.send(());
        }
        if let Some(t) = lock(&self.0.thread).take() {
            let _ = t.join();
        }
        *lock(&CURRENT) = None;
    }

    /// Appends the health metrics (Prometheus text).
    pub fn metrics(&self, out: &mut Vec<Family>) {
        lock(&self.0.inner).metrics(out);
    }
}

fn load(path: &Path) -> Result<Config> {
    let conf = xvs_keepalived::load(path)?;
    for n in &conf.notes {
        tracing::info!("keepalived configuration: {n}");
    }
    Ok(conf)
}

/// `-L --health`: every virtual server, or the one of service `key`.
pub fn report(key: Option<&ServiceKey>) -> Result<Vec<VsHealth>, String> {
    let Some(inner) = lock(&CURRENT).clone() else {
        return match key {
            Some(_) => Err("No health checks for this service".into()),
            None => Ok(Vec::new()),
        };
    };
    let g = lock(&inner);
    let all = g.report();
    match key {
        None => Ok(all),
        Some(k) => {
            let v: Vec<VsHealth> = all.into_iter().filter(|v| v.services.contains(k)).collect();
            if v.is_empty() {
                Err("No health checks for this service".into())
            } else {
                Ok(v)
            }
        }
    }
}

/// Reads the host's addresses every second for ha_suspend.
async fn watch_local(inner: Weak<Mutex<Inner>>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let needed = lock(&i).vss.iter().any(|v| v.conf.ha_suspend);
        if needed {
            match local_addrs() {
                Ok(addrs) => lock(&i).set_local(&addrs),
                Err(e) => tracing::warn!("ha_suspend: reading the host's addresses: {e}"),
            }
        }
        drop(i);
        tokio::time::sleep(LOCAL_POLL).await;
    }
}

fn local_addrs() -> nix::Result<HashSet<IpAddr>> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|a| {
            let s = a.address?;
            s.as_sockaddr_in()
                .map(|v| IpAddr::V4(v.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v| IpAddr::V6(v.ip())))
        })
        .collect())
}

async fn checker_task(
    inner: Weak<Mutex<Inner>>,
    id: u64,
    spec: CheckSpec,
    tls: Arc<rustls::ClientConfig>,
    warmup: bool,
) {
    if warmup && !spec.warmup.is_zero() {
        // Spread the first checks over `warmup`, as keepalived does.
        let frac = (probe_random() % 1_000_000) as f64 / 1e6;
        tokio::time::sleep(spec.warmup.mul_f64(frac)).await;
    }
    loop {
        let run = match inner.upgrade() {
            Some(i) => lock(&i).should_run(id),
            None => return,
        };
        match run {
            None => return,
            Some(false) => {
                tokio::time::sleep(spec.delay_loop).await;
                continue;
            }
            Some(true) => {}
        }
        let t0 = Instant::now();
        let out = probe::attempt(&spec, &tls).await;
        let took = t0.elapsed();
        let delay = match inner.upgrade() {
            Some(i) => match lock(&i).on_result(id, out, took) {
                Some(d) => d,
                None => return,
            },
            None => return,
        };
        tokio::time::sleep(delay).await;
    }
}

fn probe_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn rs_port(rs: &RealServer, key: &ServiceKey) -> u16 {
    xvs_keepalived::dest_port(rs.fwd, rs.port, key)
}

impl Inner {
    /// Runtime state for `conf`. On a reload (`keep`), checkers equal to
    /// running ones on the same real server of the same virtual server are
    /// taken over with their state (and their task); the rest start anew.
    /// Returns the virtual servers, the checkers, and the checkers to start.
    fn plan(&mut self, conf: Config, keep: bool) -> (Vec<VsRt>, HashMap<u64, CheckerRt>, Vec<u64>) {
        let now = Instant::now();
        let mut vss = Vec::new();
        let mut checkers = HashMap::new();
        let mut spawn = Vec::new();
        let mut taken: HashSet<u64> = HashSet::new();
        for (vi, vs) in conf.virtual_servers.into_iter().enumerate() {
            let old_vs = keep
                .then(|| self.vss.iter().find(|o| o.conf.name == vs.name))
                .flatten();
            let mut rss = Vec::new();
            for (ri, rs) in vs.real_servers.iter().enumerate() {
                let old_rs = old_vs.and_then(|o| {
                    o.conf
                        .real_servers
                        .iter()
                        .position(|x| x.addr == rs.addr && x.port == rs.port)
                        .map(|i| &o.rs[i])
                });
                let mut ids = Vec::new();
                for c in &rs.checks {
                    let reuse = old_rs.and_then(|o| {
                        o.checkers.iter().copied().find(|id| {
                            !taken.contains(id)
                                && self.checkers.get(id).is_some_and(|x| x.spec == c.spec)
                        })
                    });
                    let id = match reuse {
                        Some(id) => {
                            taken.insert(id);
                            let mut rt = self.checkers[&id].clone();
                            rt.vs = vi;
                            rt.rs = ri;
                            rt.idx = ids.len();
                            checkers.insert(id, rt);
                            id
                        }
                        None => {
                            let id = self.next_id;
                            self.next_id += 1;
                            checkers.insert(
                                id,
                                CheckerRt {
                                    vs: vi,
                                    rs: ri,
                                    idx: ids.len(),
                                    spec: c.spec.clone(),
                                    retry: Retry::new(&c.spec),
                                    cur_weight: 0,
                                    successes: 0,
                                    failures: 0,
                                    last: None,
                                    hist: [0; BUCKETS.len() + 1],
                                    hist_sum: 0.0,
                                    task: None,
                                },
                            );
                            spawn.push(id);
                            id
                        }
                    };
                    ids.push(id);
                }
                let alive = ids.iter().all(|id| checkers[id].retry.up);
                let weight =
                    logic::effective_weight(rs, ids.iter().map(|id| checkers[id].cur_weight));
                rss.push(RsRt {
                    checkers: ids,
                    alive,
                    weight,
                    listed: None,
                    since: old_rs.filter(|o| o.alive == alive).map_or(now, |o| o.since),
                });
            }
            let alive_weight: u64 = rss
                .iter()
                .filter(|r| r.alive)
                .map(|r| r.weight as u64)
                .sum();
            let quorum_up = match old_vs {
                Some(o) => logic::next_quorum(o.quorum_up, alive_weight, &vs),
                None => logic::initial_quorum(alive_weight, &vs),
            };
            let sorry_in_use = !quorum_up && vs.sorry.is_some();
            for (ri, r) in rss.iter_mut().enumerate() {
                r.listed = logic::rs_listed(&vs.real_servers[ri], r.alive, r.weight, sorry_in_use);
            }
            let sorry_listed = logic::sorry_listed(&vs, sorry_in_use);
            if !quorum_up {
                tracing::info!(
                    vs = %vs.name,
                    "starting with quorum down ({alive_weight} < {}+{}){}",
                    vs.quorum,
                    vs.hysteresis,
                    if vs.sorry.is_some() { ": sorry server in" } else { "" }
                );
            }
            vss.push(VsRt {
                suspended: old_vs.is_some_and(|o| o.suspended) && vs.ha_suspend,
                conf: vs,
                rs: rss,
                quorum_up,
                sorry_listed,
            });
        }
        (vss, checkers, spawn)
    }

    /// Brings the table to `vss` (all or nothing) and takes them over:
    /// checkers not carried over stop, and real servers that are gone while
    /// alive get their notify_down, as keepalived's reload does.
    fn commit(
        &mut self,
        vss: Vec<VsRt>,
        checkers: HashMap<u64, CheckerRt>,
        old_keys: &[ServiceKey],
    ) -> Result<(), String> {
        let ops = {
            let st = lock(&self.state);
            sync_ops(&st, old_keys, &vss)
        };
        if !ops.is_empty() {
            let mut st = lock(&self.state);
            st.apply_batch(&ops)
                .map_err(|(i, e)| format!("{}: {}", describe(&ops[i]), e.0))?;
        }
        let old = std::mem::replace(&mut self.checkers, checkers);
        let old_vss = std::mem::replace(&mut self.vss, vss);
        for (id, c) in old {
            if !self.checkers.contains_key(&id) {
                if let Some(t) = c.task {
                    t.abort();
                }
            }
        }
        for v in &old_vss {
            for (ri, r) in v.rs.iter().enumerate() {
                let rc = &v.conf.real_servers[ri];
                let still = self.vss.iter().any(|n| {
                    n.conf.name == v.conf.name
                        && n.conf
                            .real_servers
                            .iter()
                            .any(|x| x.addr == rc.addr && x.port == rc.port)
                });
                if !still && r.alive {
                    if let Some(s) = &rc.notify_down {
                        self.notify(s);
                    }
                }
            }
        }
        Ok(())
    }

    fn spawn(&mut self, ids: Vec<u64>, warmup: bool) {
        for id in ids {
            let Some(c) = self.checkers.get_mut(&id) else {
                continue;
            };
            let t = self.rt.spawn(checker_task(
                self.me.clone(),
                id,
                c.spec.clone(),
                self.tls.clone(),
                warmup,
            ));
            c.task = Some(t.abort_handle());
        }
    }

    /// Whether checker `id` should check now (None: it is gone).
    fn should_run(&self, id: u64) -> Option<bool> {
        let c = self.checkers.get(&id)?;
        Some(!self.vss[c.vs].suspended)
    }

    fn set_local(&mut self, addrs: &HashSet<IpAddr>) {
        for v in self.vss.iter_mut().filter(|v| v.conf.ha_suspend) {
            let suspended = !v.conf.vips().iter().any(|a| addrs.contains(a));
            if suspended != v.suspended {
                tracing::info!(
                    vs = %v.conf.name,
                    "{} healthcheckers (ha_suspend: VIP {})",
                    if suspended { "suspending" } else { "activating" },
                    if suspended { "not on this host" } else { "on this host" }
                );
                v.suspended = suspended;
            }
        }
    }

    /// Takes a checker's result: keepalived's retry logic, then the real
    /// server, quorum and table. Returns when to check next (None: the
    /// checker is gone).
    fn on_result(&mut self, id: u64, out: probe::Outcome, took: Duration) -> Option<Duration> {
        let c = self.checkers.get_mut(&id)?;
        let (vi, ri) = (c.vs, c.rs);
        let vs = &self.vss[vi];
        let rs_conf = &vs.conf.real_servers[ri];
        let was_up = c.retry.up;
        let (changed, delay) = c.retry.on(out.ok, &c.spec);
        if out.ok {
            c.successes += 1;
        } else {
            c.failures += 1;
        }
        let secs = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&u| secs <= u)
            .unwrap_or(BUCKETS.len());
        c.hist[b] += 1;
        c.hist_sum += secs;
        let mut weight_changed = false;
        if let CheckKind::Misc(m) = &c.spec.kind {
            // misc_dynamic: exit status 2..255 sets the weight to status - 2.
            let w = match out.exit {
                Some(e) if out.ok && m.dynamic && e >= 2 => {
                    e as i64 - 2 - i64::from(rs_conf.weight)
                }
                _ if out.ok => 0,
                _ => c.cur_weight,
            };
            let w = if changed == Some(false) { 0 } else { w };
            weight_changed = w != c.cur_weight;
            c.cur_weight = w;
        }
        let what = format!(
            "{} {} of {} in VS {}",
            c.spec.kind.name(),
            target(&c.spec),
            rs_conf.name(&vs.conf),
            vs.conf.name
        );
        match changed {
            Some(true) if !was_up || c.last.is_none() => {
                tracing::info!("{what}: succeeded ({})", out.reason)
            }
            Some(false) => tracing::warn!(
                "{what}: failed{} ({})",
                if c.spec.retry > 0 && c.last.is_some() {
                    format!(" after {} retries", c.spec.retry)
                } else {
                    String::new()
                },
                out.reason
            ),
            _ if !out.ok && was_up && c.spec.log_all_failures => {
                tracing::info!("{what}: failed, will retry ({})", out.reason)
            }
            _ => {}
        }
        c.last = Some(Last {
            ok: out.ok,
            reason: out.reason,
            latency: took,
            at: Instant::now(),
        });
        if changed.is_some() || weight_changed {
            self.settle(vi);
        }
        Some(delay)
    }

    /// Recomputes a virtual server after a checker changed: real servers'
    /// state and weight, quorum, sorry server; changes the table to match.
    fn settle(&mut self, vi: usize) {
        let now = Instant::now();
        let mut notify: Vec<Script> = Vec::new();
        let mut changes: Vec<DestChange> = Vec::new();
        {
            let checkers = &self.checkers;
            let v = &mut self.vss[vi];
            let conf = &v.conf;
            for (ri, r) in v.rs.iter_mut().enumerate() {
                let rc = &conf.real_servers[ri];
                let alive = r.checkers.iter().all(|id| checkers[id].retry.up);
                let weight = logic::effective_weight(
                    rc,
                    r.checkers.iter().map(|id| checkers[id].cur_weight),
                );
                if alive != r.alive {
                    r.alive = alive;
                    r.since = now;
                    notify.extend(
                        if alive {
                            &rc.notify_up
                        } else {
                            &rc.notify_down
                        }
                        .clone(),
                    );
                }
                if weight != r.weight {
                    tracing::info!(
                        vs = %conf.name,
                        "changing weight from {} to {weight} for {}service {}",
                        r.weight,
                        if alive { "" } else { "inactive " },
                        rc.name(conf)
                    );
                    r.weight = weight;
                }
            }
            let alive_weight: u64 =
                v.rs.iter()
                    .filter(|r| r.alive)
                    .map(|r| r.weight as u64)
                    .sum();
            let q = logic::next_quorum(v.quorum_up, alive_weight, conf);
            if q != v.quorum_up {
                if q {
                    tracing::info!(
                        vs = %conf.name,
                        "gained quorum {}+{} <= {alive_weight}{}",
                        conf.quorum,
                        conf.hysteresis,
                        if conf.sorry.is_some() { ": sorry server out, real servers back" } else { "" }
                    );
                    notify.extend(conf.quorum_up.clone());
                } else {
                    tracing::warn!(
                        vs = %conf.name,
                        "lost quorum {}-{} > {alive_weight}{}",
                        conf.quorum,
                        conf.hysteresis,
                        if conf.sorry.is_some() { ": sorry server in, real servers out" } else { "" }
                    );
                    notify.extend(conf.quorum_down.clone());
                }
                v.quorum_up = q;
            }
            let sorry_in_use = !v.quorum_up && conf.sorry.is_some();
            for (ri, r) in v.rs.iter_mut().enumerate() {
                let rc = &conf.real_servers[ri];
                let want = logic::rs_listed(rc, r.alive, r.weight, sorry_in_use);
                if want == r.listed {
                    continue;
                }
                let verb = match (want, r.listed) {
                    (Some(0), _) => "disabling (weight 0)",
                    (Some(_), Some(0)) => "enabling",
                    (Some(_), Some(_)) => "reweighting",
                    (Some(_), None) => "adding",
                    (None, _) => "removing",
                };
                let state = if r.alive { "alive" } else { "down" };
                tracing::info!(vs = %conf.name, "{verb} {state} service {}", rc.name(conf));
                for s in &conf.services {
                    let port = rs_port(rc, &s.key);
                    changes.push((s.key, rc.addr, port, want.map(|w| rc.dest_spec(&s.key, w))));
                }
                r.listed = want;
            }
            let want = logic::sorry_listed(conf, sorry_in_use);
            if want != v.sorry_listed {
                if let Some(sorry) = &conf.sorry {
                    tracing::info!(
                        vs = %conf.name,
                        "{} sorry server {}",
                        match want {
                            Some(0) => "disabling",
                            Some(_) => "adding",
                            None => "removing",
                        },
                        xvs_keepalived::fmt_addr_port(
                            sorry.addr,
                            conf.services
                                .first()
                                .map_or(0, |s| sorry.dest_spec(&s.key, 0).port)
                        )
                    );
                    for s in &conf.services {
                        let d = sorry.dest_spec(&s.key, want.unwrap_or(0));
                        changes.push((s.key, d.addr, d.port, want.map(|_| d.clone())));
                    }
                }
                v.sorry_listed = want;
            }
        }
        if !changes.is_empty() {
            self.apply(&changes);
        }
        for s in notify {
            self.notify(&s);
        }
    }

    /// Changes dests to what `changes` say, each against the table as it is
    /// (a service deleted by hand, a dest added by hand: the op that fits).
    fn apply(&self, changes: &[DestChange]) {
        let mut st = lock(&self.state);
        let mut ops = Vec::new();
        for (key, addr, port, want) in changes {
            let live = st
                .table
                .get(key)
                .and_then(|s| s.dest(addr, *port))
                .map(|d| d.spec());
            match (want, live) {
                (Some(d), Some(l)) if *d != l => ops.push(Op::EditDest(*key, d.clone())),
                (Some(d), None) => ops.push(Op::AddDest(*key, d.clone())),
                (None, Some(_)) => ops.push(Op::DelDest(*key, *addr, *port)),
                _ => {}
            }
        }
        if ops.is_empty() || st.apply_batch(&ops).is_ok() {
            return;
        }
        // One op refused (a service removed by hand?): the others still apply.
        for op in &ops {
            if let Err(e) = st.apply(op) {
                tracing::warn!("health: {} refused: {}", describe(op), e.0);
            }
        }
    }

    /// Runs a notify script, in the background.
    fn notify(&self, s: &Script) {
        let s = s.clone();
        self.rt.spawn(async move {
            let mut c = match probe::command(&s) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("notify script {}: {e}", s.argv[0]);
                    return;
                }
            };
            c.kill_on_drop(false);
            match c.spawn() {
                Ok(mut child) => {
                    let _ = child.wait().await;
                }
                Err(e) => tracing::warn!("notify script {}: {e}", s.argv[0]),
            }
        });
    }

    fn report(&self) -> Vec<VsHealth> {
        let now = Instant::now();
        self.vss
            .iter()
            .map(|v| {
                let alive_weight =
                    v.rs.iter()
                        .filter(|r| r.alive)
                        .map(|r| r.weight as u64)
                        .sum();
                VsHealth {
                    name: v.conf.name.clone(),
                    services: v.conf.services.iter().map(|s| s.key).collect(),
                    quorum: v.conf.quorum,
                    hysteresis: v.conf.hysteresis,
                    alive_weight,
                    quorum_up: v.quorum_up,
                    suspended: v.suspended,
                    sorry: v.conf.sorry.as_ref().map(|s| SorryHealth {
                        addr: s.addr,
                        port: v
                            .conf
                            .services
                            .first()
                            .map_or(s.port.unwrap_or(0), |k| s.dest_spec(&k.key, 0).port),
                        in_use: !v.quorum_up,
                    }),
                    real_servers: v
                        .rs
                        .iter()
                        .enumerate()
                        .map(|(ri, r)| {
                            let rc = &v.conf.real_servers[ri];
                            RsHealth {
                                addr: rc.addr,
                                port: v
                                    .conf
                                    .services
                                    .first()
                                    .map_or(rc.port.unwrap_or(0), |s| rs_port(rc, &s.key)),
                                alive: r.alive,
                                weight: r.weight,
                                listed: r.listed,
                                since_ms: now.duration_since(r.since).as_millis() as u64,
                                checks: r
                                    .checkers
                                    .iter()
                                    .map(|id| {
                                        let c = &self.checkers[id];
                                        CheckHealth {
                                            kind: c.spec.kind.name().into(),
                                            target: target(&c.spec),
                                            up: c.retry.up,
                                            failing: if c.retry.up { c.retry.retry_it } else { 0 },
                                            successes: c.successes,
                                            failures: c.failures,
                                            last: c.last.as_ref().map(|l| CheckResult {
                                                ok: l.ok,
                                                reason: l.reason.clone(),
                                                latency_us: l.latency.as_micros() as u64,
                                                age_ms: now.duration_since(l.at).as_millis() as u64,
                                            }),
                                        }
                                    })
                                    .collect(),
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn metrics(&self, out: &mut Vec<Family>) {
        let mut up = Family::new(
            "xvs_dest_up",
            "Whether the real server passes its health checks (1) or not (0), per service.",
            Kind::Gauge,
        );
        for v in &self.vss {
            for (ri, r) in v.rs.iter().enumerate() {
                let rc = &v.conf.real_servers[ri];
                for s in &v.conf.services {
                    let (la, lp, proto, mark) = match s.key {
                        ServiceKey::Addr { proto, addr, port } => {
                            (addr.to_string(), port, proto.name(), 0)
                        }
                        ServiceKey::Fwmark { mark, .. } => (String::new(), 0, "FWM", mark),
                    };
                    up.add(
                        &[
                            ("local_address", la),
                            ("local_port", lp.to_string()),
                            ("remote_address", rc.addr.to_string()),
                            ("remote_port", rs_port(rc, &s.key).to_string()),
                            ("proto", proto.to_string()),
                            (
                                "local_mark",
                                if mark == 0 {
                                    String::new()
                                } else {
                                    mark.to_string()
                                },
                            ),
                        ],
                        Value::int(u64::from(r.alive)),
                    );
                }
            }
        }
        out.push(up);
        let mut quorum = Family::new(
            "xvs_health_quorum_up",
            "Whether the virtual server has its quorum (1) or not (0).",
            Kind::Gauge,
        );
        for v in &self.vss {
            quorum.add(
                &[("virtual_server", v.conf.name.clone())],
                Value::int(u64::from(v.quorum_up)),
            );
        }
        out.push(quorum);
        let mut ids: Vec<&u64> = self.checkers.keys().collect();
        ids.sort();
        let labels = |c: &CheckerRt| {
            let v = &self.vss[c.vs];
            let rc = &v.conf.real_servers[c.rs];
            vec![
                ("virtual_server", v.conf.name.clone()),
                ("real_server", rc.name(&v.conf)),
                ("checker", c.spec.kind.name().to_string()),
                ("index", c.idx.to_string()),
            ]
        };
        let mut checks = Family::new(
            "xvs_health_checks_total",
            "Health checks made, by result.",
            Kind::Counter,
        );
        let mut durations = Family::new(
            "xvs_health_check_duration_seconds",
            "How long health checks took (connect to verdict, script run time).",
            Kind::Histogram,
        );
        for id in &ids {
            let c = &self.checkers[id];
            let l = labels(c);
            for (result, n) in [("success", c.successes), ("failure", c.failures)] {
                let mut l = l.clone();
                l.push(("result", result.to_string()));
                checks.add(&l, Value::int(n));
            }
            let mut buckets: Vec<(f64, u64)> =
                BUCKETS.iter().zip(&c.hist).map(|(b, n)| (*b, *n)).collect();
            buckets.push((crate::metrics::INF_BUCKET, c.hist[BUCKETS.len()]));
            let count = c.hist.iter().sum();
            durations.add(
                &l,
                Value::Histogram {
                    buckets,
                    sum: c.hist_sum,
                    count,
                },
            );
        }
        out.push(checks);
        out.push(durations);
    }
}

/// What a checker checks, for listings and logs.
fn target(spec: &CheckSpec) -> String {
    match (&spec.kind, spec.dst) {
        (CheckKind::Misc(m), _) => m
            .script
            .argv
            .iter()
            .map(|a| {
                if a.contains(char::is_whitespace) || a.is_empty() {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        (CheckKind::Ping, Some(d)) => d.ip().to_string(),
        (CheckKind::Http(h), Some(d)) => {
            let scheme = if h.tls.is_some() { "https" } else { "http" };
            let paths: Vec<&str> = h.urls.iter().map(|u| u.path.as_str()).collect();
            format!("{scheme}://{d}{}", paths.join(","))
        }
        (_, Some(d)) => d.to_string(),
        (_, None) => String::new(),
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::AddService(s) | Op::EditService(s) => {
            format!("{op_name} {}", s.key, op_name = name(op))
        }
        Op::DelService(k) => format!("delete service {k}"),
        Op::AddDest(k, d) | Op::EditDest(k, d) => {
            format!(
                "{} {} in {k}",
                name(op),
                xvs_keepalived::fmt_addr_port(d.addr, d.port)
            )
        }
        Op::DelDest(k, a, p) => {
            format!("delete {} from {k}", xvs_keepalived::fmt_addr_port(*a, *p))
        }
        Op::AddLaddr(k, a) => format!("add local address {a} to {k}"),
        Op::DelLaddr(k, a) => format!("delete local address {a} from {k}"),
        other => format!("{other:?}"),
    }
}

fn name(op: &Op) -> &'static str {
    match op {
        Op::AddService(_) => "add service",
        Op::EditService(_) => "edit service",
        Op::AddDest(..) => "add",
        Op::EditDest(..) => "edit",
        _ => "change",
    }
}

/// The ops that bring the table's managed services (those of the previous
/// configuration, `old_keys`, and of the new one) to what `vss` want.
fn sync_ops(st: &State, old_keys: &[ServiceKey], vss: &[VsRt]) -> Vec<Op> {
    struct Want<'a> {
        spec: &'a ServiceSpec,
        dests: Vec<DestSpec>,
        laddrs: Vec<IpAddr>,
    }
    let mut want: Vec<Want> = Vec::new();
    for v in vss {
        for s in &v.conf.services {
            let mut dests = Vec::new();
            for (ri, r) in v.rs.iter().enumerate() {
                if let Some(w) = r.listed {
                    dests.push(v.conf.real_servers[ri].dest_spec(&s.key, w));
                }
            }
            if let (Some(sorry), Some(w)) = (&v.conf.sorry, v.sorry_listed) {
                dests.push(sorry.dest_spec(&s.key, w));
            }
            let laddrs = v
                .conf
                .laddrs
                .iter()
                .copied()
                .filter(|a| Af::of(a) == s.key.af())
                .collect();
            want.push(Want {
                spec: s,
                dests,
                laddrs,
            });
        }
    }
    let mut ops = Vec::new();
    for k in old_keys {
        if !want.iter().any(|w| w.spec.key == *k) && st.table.get(k).is_some() {
            ops.push(Op::DelService(*k));
        }
    }
    for w in &want {
        let key = w.spec.key;
        match st.table.get(&key) {
            None => {
                ops.push(Op::AddService(w.spec.clone()));
                ops.extend(w.dests.iter().map(|d| Op::AddDest(key, d.clone())));
                ops.extend(w.laddrs.iter().map(|a| Op::AddLaddr(key, *a)));
            }
            Some(live) => {
                if live.spec != *w.spec {
                    ops.push(Op::EditService(w.spec.clone()));
                }
                for d in &live.dests {
                    if !w.dests.iter().any(|x| x.addr == d.addr && x.port == d.port) {
                        ops.push(Op::DelDest(key, d.addr, d.port));
                    }
                }
                for d in &w.dests {
                    match live.dest(&d.addr, d.port) {
                        Some(l) if l.spec() == *d => {}
                        Some(_) => ops.push(Op::EditDest(key, d.clone())),
                        None => ops.push(Op::AddDest(key, d.clone())),
                    }
                }
                let have: Vec<IpAddr> = st
                    .list_laddrs(Some(&key))
                    .into_iter()
                    .flat_map(|(_, l)| l)
                    .collect();
                for a in &have {
                    if !w.laddrs.contains(a) {
                        ops.push(Op::DelLaddr(key, *a));
                    }
                }
                for a in &w.laddrs {
                    if !have.contains(a) {
                        ops.push(Op::AddLaddr(key, *a));
                    }
                }
            }
        }
    }
    ops
}
