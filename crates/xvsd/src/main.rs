//! `xvsd`: the xvs director daemon.
//!
//! Owns the rules (changed with `xvsadm` over the control socket), the engine
//! and its connection table, the data-plane workers, a housekeeping thread
//! (expiry, rates) and an optional Prometheus endpoint.

#![forbid(unsafe_code)]

mod clock;
mod config;
mod control;
mod dataplane;
mod health;
mod metrics;
mod state;
mod sync;
mod systemd;

use anyhow::{Context, Result};
use clap::Parser;
use config::{Config, Interface};
use state::State;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xvs_core::engine::{Engine, Limits};

/// Huge pages for the connection table.
#[global_allocator]
static ALLOC: xvs_mem::HugeAlloc = xvs_mem::HugeAlloc;

#[derive(Parser, Debug)]
#[command(name = "xvsd", version, about = "xvs: a userspace IPVS director")]
struct Args {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rules to load at start and on SIGHUP, in `xvsadm -S` format.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// A keepalived.conf whose virtual servers xvsd runs, with their health
    /// checks (reloaded on SIGHUP; VRRP stays with keepalived).
    #[arg(long, conflicts_with = "rules")]
    keepalived_conf: Option<PathBuf>,
    /// Control socket (default: $XVS_SOCKET, else /run/xvs/xvsd.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// A data interface (repeatable); roles come from the routes.
    #[arg(short = 'i', long = "interface")]
    interfaces: Vec<String>,
    /// Force a backend: xdp-native, xdp-generic or af-packet.
    #[arg(long)]
    backend: Option<String>,
    /// Maximum connections + templates.
    #[arg(long)]
    conn_max: Option<u32>,
    /// Prometheus metrics address, e.g. 127.0.0.1:9101.
    #[arg(long)]
    metrics: Option<String>,
    /// Pin the workers to these CPUs, one worker each (e.g. `--cores 2,3`).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Benchmarks only: forward every steered frame out of the next
    /// interface with its MACs swapped, without the engine (the ceiling of
    /// `xvs-bench run`, on xvsd's own I/O path).
    #[arg(long, hide = true)]
    bench_passthrough: bool,
}

fn random_seed() -> [u64; 4] {
    use std::io::Read;
    let mut b = [0u8; 32];
    // Keyed hashing of the connection table; fall back to the clock.
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    [w(0) ^ t, w(1), w(2), w(3)]
}

/// Reads the rules file and replaces the rules with it, all or nothing.
/// Loads the `--rules` file (replacing every rule) and the config file's
/// `[[mark]]` rules, as one all-or-nothing change: at start and on SIGHUP.
/// Only the mark rules of the config file can change at run time; the rest of
/// it takes effect at the next start.
fn reload(
    state: &Mutex<State>,
    rules: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
) -> Result<()> {
    let mut ops = Vec::new();
    if rules.is_some() {
        ops.push(xvs_ctl::Op::Clear);
    }
    if let Some(p) = config {
        let c = Config::load(p)?;
        ops.push(xvs_ctl::Op::SetMarks(
            c.marks.iter().map(xvs_ctl::MarkSpec::from_rule).collect(),
        ));
    }
    let first_rule = ops.len();
    // The file line of each rule op, so that errors say `file:line`.
    let mut lines = Vec::new();
    if let Some(path) = rules {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (n, argv) in xvs_ctl::cmdline::restore_lines(&text, "xvsd") {
            let op = xvs_ctl::cmdline::parse(&argv)
                .map_err(|e| e.message.trim_end().to_string())
                .and_then(|c| c.to_op().ok_or_else(|| "not a rule command".to_string()))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{}:{n}", path.display()))?;
            ops.push(op);
            lines.push(n);
        }
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.apply_batch(&ops)
        .map_err(|(i, e)| match (rules, config) {
            (Some(r), _) if i >= first_rule => {
                let line = lines.get(i - first_rule).copied().unwrap_or(0);
                anyhow::anyhow!("{}:{line}: {}", r.display(), e.0)
            }
            (_, Some(c)) => anyhow::anyhow!("{}: [[mark]] rules: {}", c.display(), e.0),
            _ => anyhow::anyhow!("{}", e.0),
        })?;
    tracing::info!(
        rules = ops.len() - first_rule,
        marks = s.marks.len(),
        "rules loaded"
    );
    Ok(())
}

fn main() {
    if let Some(code) = xvs_docgen::generate_if_asked::<Args>("xvsd") {
        std::process::exit(code);
    }
    systemd::init();
    if !systemd::init_journal_logging() {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    if let Err(e) = run() {
        eprintln!("xvsd: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    for name in &args.interfaces {
        cfg.interfaces.push(Interface {
            name: name.clone(),
            role: "both".into(),
            queues: None,
        });
    }
    if let Some(b) = &args.backend {
        cfg.backend = Some(b.clone());
    }
    if args.metrics.is_some() {
        cfg.metrics = args.metrics.clone();
    }
    if !args.cores.is_empty() {
        cfg.cores = args.cores.clone();
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(c) = cfg.cores.iter().find(|&&c| c >= ncpu) {
        anyhow::bail!(
            "worker core {c} does not exist (this machine has {ncpu} CPUs, numbered from 0)"
        );
    }
    let socket = args
        .socket
        .clone()
        .or(cfg.control.socket.clone())
        .unwrap_or_else(xvs_ctl::default_socket_path);

    let plan = dataplane::plan(&cfg)?;
    let workers = plan.workers.len().max(1) as u32;
    let limits = Limits {
        conn_max: args.conn_max.or(cfg.conn_max).unwrap_or(1 << 20),
        workers,
        ..Limits::default()
    };
    let names: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    let kfib = if names.is_empty() {
        None
    } else {
        Some(
            xvs_fib::KernelFib::start(names)
                .context("reading the kernel's routes and neighbours")?,
        )
    };
    let fib: Arc<dyn xvs_core::fib::Fib> = match &kfib {
        Some(k) => k.clone(),
        None => Arc::new(xvs_core::fib::StaticFib::new()),
    };
    let engine = Engine::new(limits, fib, random_seed());
    // Before the workers exist: their sync queues take its capacity.
    let sync_cfg = cfg.sync.unwrap_or_default();
    let sync = sync::SyncCtl::new(engine.clone(), sync_cfg).context("in [sync]")?;
    let state = Arc::new(Mutex::new(State::new(
        engine.clone(),
        cfg.knobs.unwrap_or_default(),
        cfg.marks.clone(),
    )));
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.sync = Some(sync.clone());
        s.sync_cfg = sync_cfg;
        let sched = cfg.sched.unwrap_or_default();
        let params = xvs_core::sched::SchedParams {
            table_order: sched.table_order,
            mh_table_size: sched.mh_table_size,
            ..s.table.sched_params()
        };
        s.table.set_sched_params(params).context("in [sched]")?;
    }
    if args.rules.is_some() && args.keepalived_conf.is_some() {
        anyhow::bail!(
            "--rules and --keepalived-conf both define the virtual services: use one of them"
        );
    }
    if let Some(t) = &cfg.timeouts {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.timeouts = t.apply(s.timeouts);
        s.publish();
    }
    if args.rules.is_some() {
        // The rules file starts with a clear: the config's marks go with it.
        reload(&state, args.rules.as_deref(), args.config.as_deref())?;
    }
    let health = match &args.keepalived_conf {
        Some(p) => Some(health::Health::start(p, state.clone())?),
        None => None,
    };

    // Refuse early if another daemon serves the socket; then the data plane,
    // so that once the socket answers the rules are in force.
    control::check_free(&socket)?;
    let mode = if args.bench_passthrough {
        tracing::warn!("--bench-passthrough: frames bypass the engine (benchmark ceiling)");
        dataplane::Mode::PassThrough
    } else {
        dataplane::Mode::Engine
    };
    let dp = dataplane::start(&cfg, &plan, engine.clone(), kfib, mode)?;
    let steer = dp.steer_sync();
    if let Some(s) = &steer {
        // Steer what the rules already hold, then keep every change in step.
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let want = st.steer_keys();
        s.prepare(&want, &st.mark_rules())
            .context("steering the loaded rules")?;
        s.commit(want);
        st.steer = Some(s.clone());
    }
    // Metrics first: once the control socket answers, everything does.
    if let Some(addr) = &cfg.metrics {
        let l = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding metrics address {addr}"))?;
        let e = engine.clone();
        let s = steer.clone();
        let h = health.clone();
        let sy = sync.clone();
        let counters = dp.steer_counters();
        let extra: Arc<metrics::Extra> = Arc::new(move |out: &mut Vec<_>| {
            out.extend(counters.families());
            if let Some(h) = &h {
                h.metrics(out);
            }
            sy.metrics(out);
            if let Some(s) = &s {
                out.push(metrics::counter(
                    "xvs_steer_failures_total",
                    "Steering map updates that failed (rule changes refused, keys not removed)",
                    s.failures(),
                ));
                out.push(metrics::gauge(
                    "xvs_steer_keys",
                    "Keys in the steering map (rules and the host's addresses)",
                    s.installed() as u64,
                ));
            }
        });
        std::thread::Builder::new()
            .name("xvsd-metrics".into())
            .spawn(move || metrics::serve(l, e, extra))?;
        tracing::info!(%addr, "metrics at /metrics");
    }
    let listener = control::bind(&socket)?;
    let _guard = control::SocketGuard(socket.clone());
    control::start(socket.clone(), listener, state.clone())?;

    // Housekeeping: expiry sweep (about a full pass a second), rates, trash.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let st = state.clone();
        let e = engine.clone();
        let stop = stop.clone();
        let steer = steer.clone();
        std::thread::Builder::new()
            .name("xvsd-housekeep".into())
            .spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let now = st.lock().unwrap_or_else(|e| e.into_inner()).now();
                    let budget = (e.conns.high_water() / 10).clamp(4096, 250_000);
                    e.housekeep(now, budget);
                    if let Some(s) = &steer {
                        s.sync_local();
                    }
                    n += 1;
                    if n.is_multiple_of(100) {
                        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                        if s.table.trash_len() > 0 {
                            s.table.purge_trash();
                            s.publish();
                            // Purged NAT dests no longer need their replies steered.
                            if let Some(st) = &s.steer {
                                let want = s.steer_keys();
                                if st.prepare(&want, &s.mark_rules()).is_ok() {
                                    st.commit(want);
                                }
                            }
                        }
                    }
                }
            })?;
    }

    tracing::info!(socket = %socket.display(), conn_max = limits.conn_max, "xvsd ready");
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    // Every interface forwards, the socket answers and SIGHUP is handled:
    // tell systemd, and feed its watchdog while the workers go round.
    systemd::notify(&format!(
        "READY=1\nSTATUS=serving {} interface(s) with {} worker(s)",
        cfg.interfaces.len(),
        plan.workers.len()
    ));
    systemd::watch(dp.heartbeats()).context("starting the watchdog thread")?;
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            systemd::notify("RELOADING=1");
            if let Some(h) = &health {
                if let Err(e) = h.reload() {
                    tracing::error!("keepalived.conf reload failed, nothing changed: {e:#}");
                }
            }
            if args.rules.is_some() || args.config.is_some() {
                if let Err(e) = reload(&state, args.rules.as_deref(), args.config.as_deref()) {
                    tracing::error!("reload failed, rules unchanged: {e:#}");
                }
            } else if health.is_none() {
                tracing::info!("SIGHUP: no --rules, --config or --keepalived-conf file to reload");
            }
            systemd::notify("READY=1");
            continue;
        }
        systemd::notify("STOPPING=1");
        tracing::info!("shutting down");
        break;
    }
    if let Some(h) = &health {
        h.shutdown();
    }
    stop.store(true, Ordering::Relaxed);
    sync.stop(xvs_ctl::DaemonState::Master);
    sync.stop(xvs_ctl::DaemonState::Backup);
    drop(dp);
    Ok(())
}
