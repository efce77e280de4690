//! The data plane: one worker thread per RX queue, each owning the AF_XDP (or
//! AF_PACKET) sockets of its queue on every interface and an engine worker;
//! plus the steering keys, kept in step with the rules on every change.

use crate::config::Config;
use crate::systemd::Beat;
use anyhow::{anyhow, Context, Result};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use xvs_core::engine::MarkRule;
use xvs_core::engine::{Engine, Verdict, MAX_BATCH};
use xvs_core::service::Service;
use xvs_core::service::{Af, FwdMethod, Protocol, ServiceKey};
use xvs_xdp::{
    Backend, BackendChoice, BatchHandler, Disposition, Interface, PortId, SteerKey, Steering,
    Worker, WorkerConfig,
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
    /// One progress counter per worker, for the systemd watchdog.
    beats: Arc<Vec<Beat>>,
}

impl DataPlane {
    /// What brings the steering map in line with the rules; the control plane
    /// calls it after each change so that once `xvsadm` returns, the new
    /// rules get their traffic (None without interfaces).
    pub fn steer_sync(&self) -> Option<Arc<SteerSync>> {
        self.steer.clone()
    }

    /// A reader of the steering programs' counters that does not keep the
    /// interfaces attached once the data plane is dropped.
    pub fn steer_counters(&self) -> SteerCounters {
        SteerCounters(Arc::downgrade(&self._ifaces))
    }

    /// The workers' heartbeats: each moves on every turn of its worker's loop.
    pub fn heartbeats(&self) -> Arc<Vec<Beat>> {
        self.beats.clone()
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

/// See [`DataPlane::steer_counters`].
pub struct SteerCounters(std::sync::Weak<Vec<Interface>>);

impl SteerCounters {
    /// The steering programs' counters of every data interface, by name
    /// (none once the data plane is gone).
    pub fn read(&self) -> Vec<(String, xvs_xdp::SteerStats)> {
        let Some(ifaces) = self.0.upgrade() else {
            return Vec::new();
        };
        ifaces
            .iter()
            .filter_map(|i| match i.steer_stats() {
                Ok(s) => Some((i.name().to_string(), s)),
                Err(e) => {
                    tracing::warn!(interface = %i.name(), "reading steering counters: {e}");
                    None
                }
            })
            .collect()
    }

    /// As metric families: `xvs_steer_frames_total{interface, verdict}`.
    pub fn families(&self) -> Vec<xvs_core::engine::metrics::Family> {
        use xvs_core::engine::metrics::{Family, Kind, Value};
        let stats = self.read();
        if stats.is_empty() {
            return Vec::new();
        }
        let mut f = Family::new(
            "xvs_steer_frames_total",
            "Frames the steering program saw, by verdict: redirected (taken by xvs), passed (left to the kernel; XDP only), no_socket (xvs's, but no socket on the queue: left to the kernel), other_host (unicast to another host's MAC: left to the kernel unlooked-at, which drops them as PACKET_OTHERHOST)",
            Kind::Counter,
        );
        for (name, s) in stats {
            for (verdict, v) in [
                ("redirected", s.redirected),
                ("passed", s.passed),
                ("no_socket", s.no_socket),
                ("other_host", s.other_host),
            ] {
                f.add(
                    &[
                        ("interface", name.clone()),
                        ("verdict", verdict.to_string()),
                    ],
                    Value::int(v),
                );
            }
        }
        vec![f]
    }
}

/// The keys a rule set needs: VIPs (port 0: every port), the marks of fwmark
/// services, FULLNAT local addresses, and the real servers of NAT dests
/// (their replies; port 0: from any port).
pub fn rule_keys<'a>(
    services: impl IntoIterator<Item = &'a Arc<Service>>,
    laddrs: impl IntoIterator<Item = &'a IpAddr>,
) -> HashSet<SteerKey> {
    let mut keys = HashSet::new();
    for svc in services {
        let protos: &[Protocol] = match svc.spec.key {
            ServiceKey::Addr { proto, addr, port } => {
                keys.insert(SteerKey::Vip {
                    addr: addr.into(),
                    port,
                    proto,
                });
                if proto == Protocol::Udp {
                    &[Protocol::Udp]
                } else {
                    &[Protocol::Tcp]
                }
            }
            ServiceKey::Fwmark { mark, af } => {
                keys.insert(SteerKey::Mark {
                    mark,
                    v6: af == Af::V6,
                });
                &[Protocol::Tcp, Protocol::Udp]
            }
        };
        for d in &svc.dests {
            if d.fwd() == FwdMethod::Masq {
                for &proto in protos {
                    keys.insert(SteerKey::RealServer {
                        addr: d.addr.into(),
                        port: d.port,
                        proto,
                    });
                }
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
}

impl SteerSync {
    /// Installs the keys of `want` the map lacks and the mark rules `marks`,
    /// all or nothing.
    pub fn prepare(&self, want: &HashSet<SteerKey>, marks: &[MarkRule]) -> Result<()> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let new: Vec<SteerKey> = want.difference(&st.rules).copied().collect();
        let refuse = |e: xvs_xdp::Error| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("steering update refused: {e}");
            anyhow::Error::new(e)
        };
        self.steering.add_all(&new).map_err(refuse)?;
        if let Err(e) = self.steering.set_marks(marks) {
            for k in &new {
                let _ = self.steering.remove(*k);
            }
            return Err(refuse(e));
        }
        Ok(())
    }

    /// After the engine has the rules `want`: removes the keys they no longer
    /// need. A key whose removal fails stays recorded and is retried next time.
    pub fn commit(&self, want: HashSet<SteerKey>) {
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

/// Which worker serves which (interface, RX queue), and where it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub workers: Vec<WorkerPlan>,
}

/// One worker's share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    /// (index in the configured interfaces, RX queue).
    pub ports: Vec<(usize, u32)>,
    /// The CPU it is pinned to (from `cores`), if any.
    pub core: Option<usize>,
}

/// Every RX queue of every data interface gets a worker: as many workers as
/// the CPUs xvsd may use (`cores`, else its CPU affinity), queues dealt out
/// round-robin, a worker serving several when there are more queues than
/// workers. `queues` in the config serves fewer on purpose (logged).
pub fn plan(cfg: &Config) -> Result<Plan> {
    let mut served = Vec::new();
    for i in &cfg.interfaces {
        let dev = xvs_xdp::sys::rx_queues(&i.name)
            .with_context(|| format!("counting the RX queues of {}", i.name))?;
        let q = match i.queues {
            Some(q) if q > dev => anyhow::bail!(
                "interface {}: queues = {q}, but it has {dev} RX queue(s)",
                i.name
            ),
            Some(q) => {
                if q < dev {
                    tracing::warn!(
                        interface = %i.name,
                        "serving RX queues 0..{q} of {dev} as configured: frames that RSS puts on the others go to the kernel"
                    );
                }
                q
            }
            None => dev,
        };
        served.push(q);
    }
    plan_for(&served, cpus(cfg))
}

/// The CPUs workers may run on: `cores` pinned, else as many unpinned as the
/// process may use.
fn cpus(cfg: &Config) -> Vec<Option<usize>> {
    if !cfg.cores.is_empty() {
        return cfg.cores.iter().map(|&c| Some(c)).collect();
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    vec![None; n]
}

/// [`plan`] for `queues[i]` queues on interface i and these CPUs.
fn plan_for(queues: &[u32], cpus: Vec<Option<usize>>) -> Result<Plan> {
    let maxq = queues.iter().copied().max().unwrap_or(0) as usize;
    if maxq == 0 {
        return Ok(Plan::default());
    }
    let n = maxq.min(cpus.len()).max(1);
    let workers = (0..n)
        .map(|w| WorkerPlan {
            ports: queues
                .iter()
                .enumerate()
                .flat_map(|(i, &q)| {
                    (0..q)
                        .filter(move |queue| *queue as usize % n == w)
                        .map(move |queue| (i, queue))
                })
                .collect(),
            core: cpus[w],
        })
        .filter(|w| !w.ports.is_empty())
        .collect();
    Ok(Plan { workers })
}

/// What the workers do with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The xvs engine.
    Engine,
    /// The benchmark's ceiling: every frame goes out of the next interface
    /// with its MACs swapped and nothing else done, on this same I/O path
    /// (steering, UMEM, worker loop, batching, priority), so that xvs ÷ this
    /// isolates the engine's cost.
    PassThrough,
}

/// Starts the workers of `plan` on the configured interfaces (engine port
/// numbers follow the order of `cfg.interfaces`, as the route mirror's do).
pub fn start(
    cfg: &Config,
    plan: &Plan,
    engine: Arc<Engine>,
    fib: Option<Arc<xvs_fib::KernelFib>>,
    mode: Mode,
) -> Result<DataPlane> {
    let stop = Arc::new(AtomicBool::new(false));
    if cfg.interfaces.is_empty() {
        return Ok(DataPlane {
            stop,
            threads: Vec::new(),
            _ifaces: Arc::new(Vec::new()),
            steer: None,
            beats: Arc::new(Vec::new()),
        });
    }
    let choice = match cfg.backend.as_deref() {
        None | Some("auto") => BackendChoice::Auto,
        Some(b) => BackendChoice::Force(b.parse::<Backend>()?),
    };
    let steering = Steering::with_capacity(cfg.steer_keys.unwrap_or(xvs_xdp::DEFAULT_KEYS))
        .context("creating the steering map")?;
    let mut ifaces = Vec::new();
    for (n, i) in cfg.interfaces.iter().enumerate() {
        let a = Interface::attach(&steering, &i.name, choice)
            .with_context(|| format!("attaching to {}", i.name))?;
        let queues: Vec<u32> = plan
            .workers
            .iter()
            .flat_map(|w| w.ports.iter().filter(|p| p.0 == n).map(|p| p.1))
            .collect();
        tracing::info!(interface = %i.name, backend = %a.backend(), queues = queues.len(), "data interface");
        ifaces.push(a);
    }
    let ifaces = Arc::new(ifaces);
    if let Some(f) = &fib {
        watch_links(f.clone(), ifaces.clone(), stop.clone())?;
    }
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
    let beats: Arc<Vec<Beat>> = Arc::new(plan.workers.iter().map(|_| Beat::default()).collect());
    for (w, wp) in plan.workers.iter().enumerate() {
        let wcfg = WorkerConfig {
            busy_poll: cfg.busy_poll,
            batch: MAX_BATCH as u32,
            ..WorkerConfig::default()
        };
        let (ifs, e, st) = (ifaces.clone(), engine.clone(), stop.clone());
        let (ports, core) = (wp.ports.clone(), wp.core);
        let (tx, rx) = mpsc::channel();
        let b = beats.clone();
        let t = std::thread::Builder::new()
            .name(format!("xvsd-worker-{w}"))
            .spawn(move || worker_loop(ifs, ports, w as u32, wcfg, e, st, core, tx, mode, b))?;
        // Sockets are opened in the worker thread; wait for its verdict.
        rx.recv()
            .map_err(|_| anyhow!("worker {w} died while starting"))?
            .with_context(|| format!("starting worker {w}"))?;
        threads.push(t);
    }
    Ok(DataPlane {
        stop,
        threads,
        _ifaces: ifaces,
        steer: Some(steer),
        beats,
    })
}

/// Whether a data interface is still the one xvsd attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkSeen {
    Present,
    Gone,
    /// A new interface of the same name (another ifindex): not served.
    Replaced(u32),
}

/// What the kernel's tables say of interface `name` attached at `ifindex`.
fn link_seen(t: &xvs_fib::Tables, name: &str, ifindex: u32) -> LinkSeen {
    match t.ifindex(name) {
        Some(i) if i == ifindex => LinkSeen::Present,
        Some(i) => LinkSeen::Replaced(i),
        None => LinkSeen::Gone,
    }
}

/// The MAC the steering program of `iface` should take unicast frames for,
/// when the kernel's tables say it changed (`ip link set dev X address ...`).
/// None: nothing to do (AF_PACKET, which reads the kernel's verdict; an
/// interface without an Ethernet address, or gone; the same MAC).
fn mac_change(t: &xvs_fib::Tables, iface: &Interface) -> Option<[u8; 6]> {
    let now = t.link_mac(iface.ifindex())?;
    let was = iface.steer_mac().ok()??;
    (now != was && now != [0; 6]).then_some(now)
}

/// Follows the data interfaces in the kernel's tables: a changed MAC goes to
/// the steering program (so that frames to the new address are taken, those
/// to the old one left to the kernel); a removed interface is logged (and
/// one of the same name that appears again). A removed interface's sockets
/// and XDP link went with it; the workers keep serving the other interfaces,
/// so forwarding goes on there.
fn watch_links(
    fib: Arc<xvs_fib::KernelFib>,
    ifaces: Arc<Vec<Interface>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut seen: Vec<(String, u32, LinkSeen)> = ifaces
        .iter()
        .map(|i| (i.name().to_string(), i.ifindex(), LinkSeen::Present))
        .collect();
    std::thread::Builder::new()
        .name("xvsd-links".into())
        .spawn(move || {
            let mut gen = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let g = xvs_core::fib::Fib::generation(&*fib);
                if g == gen {
                    continue;
                }
                gen = g;
                let t = fib.tables();
                for iface in ifaces.iter() {
                    let Some(mac) = mac_change(&t, iface) else {
                        continue;
                    };
                    match iface.set_steer_mac(Some(mac)) {
                        Ok(()) => tracing::info!(
                            interface = %iface.name(),
                            mac = %mac.map(|b| format!("{b:02x}")).join(":"),
                            "MAC address changed: steering frames addressed to the new one"
                        ),
                        // Retried at the next turn.
                        Err(e) => {
                            gen = 0;
                            tracing::warn!(interface = %iface.name(), "following a MAC change: {e}")
                        }
                    }
                }
                for (name, ifindex, was) in &mut seen {
                    let now = link_seen(&t, name, *ifindex);
                    if now == *was {
                        continue;
                    }
                    match now {
                        LinkSeen::Gone => tracing::error!(
                            interface = %name,
                            "data interface removed: its queues are no longer served; the other interfaces keep forwarding"
                        ),
                        LinkSeen::Replaced(i) => tracing::warn!(
                            interface = %name,
                            ifindex = i,
                            "an interface of this name is back, but xvsd serves only the one it attached at start: restart xvsd to serve it"
                        ),
                        LinkSeen::Present => {}
                    }
                    *was = now;
                }
            }
        })
        .context("starting the interface watcher")?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn worker_loop(
    ifaces: Arc<Vec<Interface>>,
    ports: Vec<(usize, u32)>,
    q: u32,
    wcfg: WorkerConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    core: Option<usize>,
    started: mpsc::Sender<Result<()>>,
    mode: Mode,
    beats: Arc<Vec<Beat>>,
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
        tracing::warn!(worker = q, "raising the worker's priority: {e}");
    }
    let refs: Vec<(&Interface, u32)> = ports
        .iter()
        .map(|&(i, queue)| (&ifaces[i], queue))
        .collect();
    let mut w = match Worker::with_ports(&refs, &wcfg) {
        Ok(w) => w,
        Err(e) => {
            let _ = started.send(Err(anyhow::Error::new(e)));
            return;
        }
    };
    for p in w.ports() {
        tracing::info!(worker = q, queue = p.queue, interface = %p.ifname, backend = %p.backend, zero_copy = p.zero_copy, "worker port");
    }
    // This worker's port → the engine's (global interface index); AF_PACKET
    // opens one socket per interface, so take the interfaces from the ports
    // the worker really opened.
    let global: Vec<usize> = w
        .ports()
        .iter()
        .map(|p| cfg_index(&ifaces, &p.ifname).unwrap_or(0))
        .collect();
    let _ = started.send(Ok(()));
    // Engine port → this worker's first port on that interface (any of its
    // queues' sockets can transmit).
    let mut local: Vec<Option<PortId>> = vec![None; ifaces.len()];
    for (l, &g) in global.iter().enumerate().rev() {
        local[g] = Some(l as PortId);
    }
    let mut ew = engine.worker(q);
    // Pass-through: the first port of the next interface, by engine port.
    let next: Vec<Option<PortId>> = global
        .iter()
        .map(|&g| local[(g + 1) % ifaces.len()])
        .collect();
    let beat = &beats[q as usize].0;
    let mut turns = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // The watchdog's evidence that this worker goes round: one relaxed
        // store a turn (a turn is a batch, or a poll timeout when idle).
        turns = turns.wrapping_add(1);
        beat.store(turns, Ordering::Relaxed);
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
        if mode == Mode::PassThrough {
            w.process_batch_with(&mut PassThrough { next: &next });
            continue;
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

/// The position of interface `name` among the data interfaces.
fn cfg_index(ifaces: &[Interface], name: &str) -> Option<usize> {
    ifaces.iter().position(|i| i.name() == name)
}

/// One burst through the engine: parsed and its conn buckets prefetched as a
/// whole first, then each frame handled (the prefetches hide the table's
/// cache misses, which were the worker's largest userspace cost).
struct Burst<'a> {
    ew: &'a mut xvs_core::engine::Worker,
    /// This worker's port → the engine's (global interface index).
    global: &'a [usize],
    /// The engine's port → this worker's (`None`: it has no socket there).
    local: &'a [Option<PortId>],
}

impl BatchHandler for Burst<'_> {
    #[inline]
    fn prepare(&mut self, _port: PortId, frames: &mut dyn Iterator<Item = &[u8]>) {
        self.ew.prepare(frames);
    }

    #[inline]
    fn handle(
        &mut self,
        port: PortId,
        i: Option<usize>,
        frame: &mut xvs_core::frame::Frame,
    ) -> Disposition {
        let rx = self.global.get(usize::from(port)).copied().unwrap_or(0) as PortId;
        let verdict = match i {
            Some(i) => self.ew.process_prepared(i, frame, rx),
            None => self.ew.process(frame, rx),
        };
        match verdict {
            Verdict::Tx(p) => match self.local.get(usize::from(p)) {
                Some(&Some(l)) => Disposition::Tx(l),
                _ => Disposition::Drop,
            },
            // A redirected frame cannot go back to the kernel: counted, dropped.
            Verdict::Pass | Verdict::Drop(_) => Disposition::Drop,
        }
    }

    #[inline]
    fn finish(&mut self) {
        self.ew.finish_batch();
    }
}

/// The ceiling's engine: MACs swapped, out of the next interface.
struct PassThrough<'a> {
    /// This worker's port → the port it forwards to.
    next: &'a [Option<PortId>],
}

impl BatchHandler for PassThrough<'_> {
    #[inline]
    fn prepare(&mut self, _port: PortId, _frames: &mut dyn Iterator<Item = &[u8]>) {}

    #[inline]
    fn handle(
        &mut self,
        port: PortId,
        _i: Option<usize>,
        frame: &mut xvs_core::frame::Frame,
    ) -> Disposition {
        let d = frame.data_mut();
        if d.len() < 12 {
            return Disposition::Drop;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&d[0..6]);
        d.copy_within(6..12, 0);
        d[6..12].copy_from_slice(&mac);
        match self.next.get(usize::from(port)) {
            Some(&Some(p)) => Disposition::Tx(p),
            _ => Disposition::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_gets_a_worker() {
        // One queue, two CPUs: one worker.
        let p = plan_for(&[1, 1], vec![None, None]).unwrap();
        assert_eq!(p.workers.len(), 1);
        assert_eq!(p.workers[0].ports, vec![(0, 0), (1, 0)]);
        // Four queues on two interfaces, two CPUs: two workers, two queues
        // of each interface each.
        let p = plan_for(&[4, 4], vec![Some(0), Some(1)]).unwrap();
        assert_eq!(p.workers.len(), 2);
        assert_eq!(p.workers[0].ports, vec![(0, 0), (0, 2), (1, 0), (1, 2)]);
        assert_eq!(p.workers[1].ports, vec![(0, 1), (0, 3), (1, 1), (1, 3)]);
        assert_eq!((p.workers[0].core, p.workers[1].core), (Some(0), Some(1)));
        // More CPUs than queues: one worker per queue.
        let p = plan_for(&[2, 1], vec![None; 8]).unwrap();
        assert_eq!(p.workers.len(), 2);
        assert_eq!(p.workers[0].ports, vec![(0, 0), (1, 0)]);
        assert_eq!(p.workers[1].ports, vec![(0, 1)]);
        // Every (interface, queue) exactly once.
        let p = plan_for(&[8, 3, 5], vec![None; 3]).unwrap();
        let mut all: Vec<_> = p.workers.iter().flat_map(|w| w.ports.clone()).collect();
        all.sort();
        let want: Vec<_> = [8u32, 3, 5]
            .iter()
            .enumerate()
            .flat_map(|(i, &q)| (0..q).map(move |q| (i, q)))
            .collect();
        assert_eq!(all, want);
        assert!(plan_for(&[], vec![None]).unwrap().workers.is_empty());
    }
}
