//! The data plane: one worker thread per RX queue, each owning the AF_XDP (or
//! AF_PACKET) sockets of its queue on every interface and an engine worker;
//! plus the steering keys, kept in step with the rules on every change.

use crate::config::Config;
use anyhow::{anyhow, Context, Result};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use xvs_core::engine::{Engine, Verdict, MAX_BATCH};
use xvs_core::service::table::Service;
use xvs_core::service::{FwdMethod, Protocol, ServiceKey};
use xvs_xdp::{
    Backend, BackendChoice, BatchHandler, Disposition, Interface, SteerKey, Steering, Worker,
    WorkerConfig, L4,
};

/// Nice value of the workers: above the NAPI threads that feed them, so that
/// under overload the core forwards instead of only receiving.
const WORKER_NICE: i32 = -15;

/// The running data plane. Dropping it stops the workers, then detaches the
/// XDP programs (their bpf_links die with the process anyway).
pub struct DataPlane {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _ifaces: Arc<Vec<Interface>>,
    steer: Option<Arc<SteerSync>>,
}

impl DataPlane {
    /// What brings the steering map in line with the rules; the control plane
    /// calls it after each change so that once `xvsadm` returns, the new
    /// rules get their traffic (None without interfaces).
    pub fn steer_sync(&self) -> Option<Arc<SteerSync>> {
        self.steer.clone()
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn l4(p: Protocol) -> L4 {
    match p {
        Protocol::Tcp => L4::Tcp,
        Protocol::Udp => L4::Udp,
    }
}

/// The keys a rule set needs: VIPs, FULLNAT local addresses, and the real
/// servers of NAT dests (their replies).
pub fn rule_keys<'a>(
    services: impl IntoIterator<Item = &'a Arc<Service>>,
    laddrs: impl IntoIterator<Item = &'a IpAddr>,
) -> HashSet<SteerKey> {
    let mut keys = HashSet::new();
    for svc in services {
        let ServiceKey::Addr { proto, addr, port } = svc.spec.key else {
            // XDP sees no marks and the steering map holds exact keys only.
            continue;
        };
        keys.insert(SteerKey::Vip {
            addr: addr.into(),
            port,
            proto: l4(proto),
        });
        for d in &svc.dests {
            if d.fwd() == FwdMethod::Masq {
                keys.insert(SteerKey::RealServer {
                    addr: d.addr.into(),
                    port: d.port,
                    proto: l4(proto),
                });
            }
        }
    }
    for a in laddrs {
        keys.insert(SteerKey::LocalAddr((*a).into()));
    }
    keys
}

/// The steering map kept in step with the rules and with the host's own
/// addresses.
///
/// A rule change is two steps around the engine's publish: [`SteerSync::prepare`]
/// installs the keys the new rules add, all or nothing (a failure leaves the
/// map as it was and the change is refused), and [`SteerSync::commit`], once
/// the engine has the new rules, removes the keys they dropped. So the map
/// never lacks a key of the rules in force, and a key that failed is never
/// recorded as installed.
pub struct SteerSync {
    steering: Steering,
    fib: Option<Arc<xvs_fib::KernelFib>>,
    state: Mutex<Synced>,
    /// Steering keys that could not be installed or removed.
    failures: AtomicU64,
}

/// What the steering map holds.
#[derive(Default)]
struct Synced {
    /// Keys of the rules in force.
    rules: HashSet<SteerKey>,
    /// The host's addresses, and the fib generation they were read at.
    local: HashSet<SteerKey>,
    fib_gen: u64,
    warned_fwmark: bool,
}

impl SteerSync {
    /// Installs the keys of `want` the map lacks, all or nothing.
    pub fn prepare(&self, want: &HashSet<SteerKey>) -> Result<()> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let new: Vec<&SteerKey> = want.difference(&st.rules).collect();
        self.steering.add_all(new).map_err(|e| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("steering update refused: {e}");
            anyhow!("{e}")
        })?;
        Ok(())
    }

    /// After the engine has the rules `want`: removes the keys they no longer
    /// need. A key whose removal fails stays recorded and is retried next time.
    pub fn commit(&self, want: HashSet<SteerKey>, fwmark_services: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = Vec::new();
        for k in st.rules.difference(&want) {
            if let Err(e) = self.steering.remove(*k) {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?k, "removing a steering key: {e}");
                kept.push(*k);
            }
        }
        st.rules = want;
        st.rules.extend(kept);
        if fwmark_services && !st.warned_fwmark {
            tracing::warn!("fwmark services get no traffic from the XDP steering program");
            st.warned_fwmark = true;
        }
    }

    /// Brings the host's own addresses in the map up to date if the kernel's
    /// tables changed (called from housekeeping; cheap when nothing changed).
    pub fn sync_local(&self) {
        let Some(fib) = &self.fib else { return };
        let gen = xvs_core::fib::Fib::generation(&**fib);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.fib_gen == gen {
            return;
        }
        let want: HashSet<SteerKey> = fib
            .tables()
            .local_addrs()
            .map(|a| SteerKey::Local(a.into()))
            .collect();
        let mut failed = false;
        let old: Vec<SteerKey> = st.local.difference(&want).copied().collect();
        for k in old {
            match self.steering.remove(k) {
                Ok(_) => {
                    st.local.remove(&k);
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(?k, "removing a local-address key: {e}");
                }
            }
        }
        let new: Vec<SteerKey> = want.difference(&st.local).copied().collect();
        for k in new {
            match self.steering.add(k) {
                Ok(_) => {
                    st.local.insert(k);
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(?k, "adding a local-address key: {e}");
                }
            }
        }
        if failed {
            // Retried at the next call.
            self.failures.fetch_add(1, Ordering::Relaxed);
        } else {
            st.fib_gen = gen;
        }
    }

    /// Steering updates that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Primary keys recorded as installed (rules and local addresses).
    pub fn installed(&self) -> usize {
        self.steering.len()
    }
}

/// Starts the workers on the configured interfaces (port numbers follow the
/// order of `cfg.interfaces`, as the route mirror's do).
pub fn start(
    cfg: &Config,
    engine: Arc<Engine>,
    fib: Option<Arc<xvs_fib::KernelFib>>,
) -> Result<DataPlane> {
    let stop = Arc::new(AtomicBool::new(false));
    if cfg.interfaces.is_empty() {
        return Ok(DataPlane {
            stop,
            threads: Vec::new(),
            _ifaces: Arc::new(Vec::new()),
            steer: None,
        });
    }
    let choice = match cfg.backend.as_deref() {
        None | Some("auto") => BackendChoice::Auto,
        Some(b) => BackendChoice::Force(b.parse::<Backend>().map_err(|e| anyhow!("{e}"))?),
    };
    let steering = Steering::with_capacity(cfg.steer_keys.unwrap_or(xvs_xdp::DEFAULT_KEYS))
        .context("creating the steering map")?;
    let mut ifaces = Vec::new();
    for i in &cfg.interfaces {
        let a = Interface::attach(&steering, &i.name, choice)
            .with_context(|| format!("attaching to {}", i.name))?;
        tracing::info!(interface = %i.name, backend = %a.backend(), queues = i.queues, "data interface");
        ifaces.push(a);
    }
    let ifaces = Arc::new(ifaces);
    // The host's addresses first: no reply to its own connections is taken
    // once workers run. The rules' keys come from the control plane.
    let steer = Arc::new(SteerSync {
        steering: steering.clone(),
        fib,
        state: Mutex::new(Synced::default()),
        failures: AtomicU64::new(0),
    });
    steer.sync_local();
    let mut threads = Vec::new();
    let queues = cfg.interfaces.iter().map(|i| i.queues).max().unwrap_or(1);
    for q in 0..queues {
        // Ports of this worker: the interfaces that have queue q.
        let global: Vec<usize> = (0..cfg.interfaces.len())
            .filter(|&i| cfg.interfaces[i].queues > q)
            .collect();
        let wcfg = WorkerConfig {
            busy_poll: cfg.busy_poll,
            batch: MAX_BATCH as u32,
            ..WorkerConfig::default()
        };
        let (ifs, e, st) = (ifaces.clone(), engine.clone(), stop.clone());
        let core = cfg.cores.get(q as usize).copied();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::Builder::new()
            .name(format!("xvsd-worker-{q}"))
            .spawn(move || worker_loop(ifs, global, q, wcfg, e, st, core, tx))?;
        // Sockets are opened in the worker thread; wait for its verdict.
        rx.recv()
            .map_err(|_| anyhow!("worker {q} died while starting"))?
            .with_context(|| format!("starting the worker of queue {q}"))?;
        threads.push(t);
    }
    Ok(DataPlane {
        stop,
        threads,
        _ifaces: ifaces,
        steer: Some(steer),
    })
}

#[allow(clippy::too_many_arguments)]
fn worker_loop(
    ifaces: Arc<Vec<Interface>>,
    global: Vec<usize>,
    q: u32,
    wcfg: WorkerConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    core: Option<usize>,
    started: mpsc::Sender<Result<()>>,
) {
    if let Some(c) = core {
        let mut set = nix::sched::CpuSet::new();
        if set.set(c).is_ok() {
            if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
                tracing::warn!(core = c, "pinning worker {q}: {e}");
            }
        }
    }
    if let Err(e) = xvs_xdp::sys::set_thread_nice(WORKER_NICE) {
        tracing::warn!(queue = q, "raising the worker's priority: {e}");
    }
    let refs: Vec<&Interface> = global.iter().map(|&i| &ifaces[i]).collect();
    let mut w = match Worker::new(&refs, q, &wcfg) {
        Ok(w) => w,
        Err(e) => {
            let _ = started.send(Err(anyhow!("{e}")));
            return;
        }
    };
    for p in w.ports() {
        tracing::info!(queue = q, interface = %p.ifname, backend = %p.backend, zero_copy = p.zero_copy, "worker port");
    }
    let _ = started.send(Ok(()));
    // Engine port (global interface index) → this worker's port.
    let mut local = vec![usize::MAX; ifaces.len()];
    for (l, &g) in global.iter().enumerate() {
        local[g] = l;
    }
    let mut ew = engine.worker(q);
    while !stop.load(Ordering::Relaxed) {
        // poll() sleeps when idle; the timeout lets the loop see `stop`.
        match w.poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(queue = q, "poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        ew.begin_batch(crate::clock::now());
        w.process_batch_with(&mut Burst {
            ew: &mut ew,
            global: &global,
            local: &local,
        });
    }
    w.flush(Duration::from_millis(200));
}

/// One burst through the engine: parsed and its conn buckets prefetched as a
/// whole first, then each frame handled (the prefetches hide the table's
/// cache misses, which were the worker's largest userspace cost).
struct Burst<'a> {
    ew: &'a mut xvs_core::engine::Worker,
    /// This worker's port → the engine's (global interface index).
    global: &'a [usize],
    /// The engine's port → this worker's.
    local: &'a [usize],
}

impl BatchHandler for Burst<'_> {
    #[inline]
    fn prepare(&mut self, _port: usize, frames: &mut dyn Iterator<Item = &[u8]>) {
        self.ew.prepare(frames);
    }

    #[inline]
    fn handle(&mut self, port: usize, i: usize, frame: &mut xvs_core::frame::Frame) -> Disposition {
        let rx = self.global.get(port).copied().unwrap_or(0) as u16;
        match self.ew.process_prepared(i, frame, rx) {
            Verdict::Tx(p) => match self.local.get(p as usize) {
                Some(&l) if l != usize::MAX => Disposition::Tx(l),
                _ => Disposition::Drop,
            },
            // A redirected frame cannot go back to the kernel: counted, dropped.
            Verdict::Pass | Verdict::Drop(_) => Disposition::Drop,
        }
    }
}
