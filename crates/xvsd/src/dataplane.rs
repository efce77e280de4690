//! The data plane: one worker thread per RX queue, each owning the AF_XDP (or
//! AF_PACKET) sockets of its queue on every interface and an engine worker;
//! plus the steering keys, kept in step with the rules on every change.

use crate::config::Config;
use anyhow::{anyhow, Context, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use xvs_core::engine::{Engine, Verdict, MAX_BATCH};
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

/// The keys the current rules need: VIPs, FULLNAT local addresses, and the
/// real servers of NAT dests (their replies).
fn wanted_keys(engine: &Engine) -> HashSet<SteerKey> {
    let snap = engine.snapshot();
    let mut keys = HashSet::new();
    for svc in snap.services() {
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
        for &lip in snap.lips(svc.id) {
            keys.insert(SteerKey::LocalAddr(engine.conns.lip(lip)));
        }
    }
    keys
}

/// The steering map kept equal to [`wanted_keys`]. Every rule change goes
/// through `State::publish`, which calls [`SteerSync::sync`] before the
/// control reply, so nothing needs to poll.
pub struct SteerSync {
    engine: Arc<Engine>,
    steering: Steering,
    state: Mutex<Synced>,
}

/// What the steering map holds, and for which rules generation.
#[derive(Default)]
struct Synced {
    keys: HashSet<SteerKey>,
    /// None before the first pass.
    gen: Option<u64>,
    warned_fwmark: bool,
}

impl SteerSync {
    /// Adds and removes keys until the map matches the current rules. Every
    /// key is tried; failures are logged and the first one is returned.
    pub fn sync(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let snap = self.engine.snapshot();
        if st.gen == Some(snap.generation) {
            return Ok(());
        }
        let want = wanted_keys(&self.engine);
        let mut first_err = None;
        for k in st.keys.difference(&want) {
            if let Err(e) = self.steering.remove(*k) {
                tracing::warn!(?k, "removing a steering key: {e}");
                first_err.get_or_insert(anyhow!("removing steering key {k:?}: {e}"));
            }
        }
        for k in want.difference(&st.keys) {
            if let Err(e) = self.steering.add(*k) {
                tracing::warn!(?k, "adding a steering key: {e}");
                first_err.get_or_insert(anyhow!("adding steering key {k:?}: {e}"));
            }
        }
        if !st.warned_fwmark && snap.services().any(|s| s.spec.key.is_fwmark()) {
            tracing::warn!("fwmark services get no traffic from the XDP steering program");
            st.warned_fwmark = true;
        }
        st.keys = want;
        st.gen = Some(snap.generation);
        first_err.map_or(Ok(()), Err)
    }
}

/// Starts the workers on the configured interfaces (port numbers follow the
/// order of `cfg.interfaces`, as the route mirror's do).
pub fn start(cfg: &Config, engine: Arc<Engine>) -> Result<DataPlane> {
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
    let steering = Steering::new().context("creating the steering map")?;
    let mut ifaces = Vec::new();
    for i in &cfg.interfaces {
        let a = Interface::attach(&steering, &i.name, choice)
            .with_context(|| format!("attaching to {}", i.name))?;
        tracing::info!(interface = %i.name, backend = %a.backend(), queues = i.queues, "data interface");
        ifaces.push(a);
    }
    let ifaces = Arc::new(ifaces);
    // Steer what the rules already hold before any worker runs.
    let steer = Arc::new(SteerSync {
        engine: engine.clone(),
        steering: steering.clone(),
        state: Mutex::new(Synced::default()),
    });
    steer.sync().context("steering the loaded rules")?;
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
