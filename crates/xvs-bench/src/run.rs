//! `xvs-bench run`: xvs against the Linux kernel, HAProxy and its own ceiling,
//! on one veth topology and one core pinning (see `topo.rs`).
//!
//! The method, in the order it runs:
//! 1. No-drop rate (RFC 2544): for every system and flood (frame size, 1024
//!    or new flows), a binary search on the offered rate for the highest one
//!    forwarded with loss ≤ `--loss` (`trial.rs`).
//! 2. Cost at a fixed load: at half the lowest no-drop median of each flood,
//!    a load every system sustains, the director core's busy time per
//!    forwarded packet, in cycles (`cpu.rs`).
//! 3. TCP through the VIP: new connections per second (short HTTP/1.0
//!    exchanges) and bulk throughput (1500-byte MTU), with the director's
//!    busy time per connection.
//! 4. SYN flood: the same new connections per second without and during a
//!    SYN flood, for the NAT systems (`flood.rs`).
//!
//! Each phase is repeated `--runs` times in rounds (round r measures every
//! system once before round r+1 starts), so that the VM's drift over minutes
//! falls on every system alike, and ratios are taken per round (paired). Every
//! figure is a median with its order-statistic 95 % interval (`stats.rs`).

use crate::probe;
use crate::report::{Method, Quiet, Report, Tcp, Throughput};
use crate::stats::{self, median_ci};
use crate::systems::{self, System};
use crate::topo::{self, Topo, BULK_PORT, DIR_CPU, GEN_CPU, HTTP_PORT, RS1, RS2};
use crate::trial::{self, Bench, Flood, Search, SearchOpts};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Repetitions of every measurement, interleaved across systems (6 is
    /// the fewest for which [min, max] is a 95 % interval of the median).
    #[arg(long, default_value_t = 6)]
    runs: usize,
    /// Seconds of traffic per trial of the no-drop search.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Seconds of traffic per cost-at-load trial and per TCP measurement.
    #[arg(long, default_value_t = 5.0)]
    load_secs: f64,
    /// Highest loss a no-drop trial may show (0.001 = 0.1 %).
    #[arg(long, default_value_t = 0.001)]
    loss: f64,
    /// The search stops when its bracket is this narrow (relative).
    #[arg(long, default_value_t = 0.02)]
    resolution: f64,
    /// Most trials per search.
    #[arg(long, default_value_t = 12)]
    max_trials: usize,
    /// Frame sizes on the wire (64..=1518).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    frames: Vec<usize>,
    /// Offered load (Mpps) for the cost-per-packet runs instead of half the
    /// lowest no-drop median (to compare separate invocations at one load).
    #[arg(long)]
    load: Option<f64>,
    /// Systems (comma-separated): ceiling, xvs-nat, xvs-dr, xvs-tun,
    /// xvs-fullnat, ip-forward, nft-dnat, haproxy. Default: ceiling, xvs-nat,
    /// nft-dnat, ip-forward, haproxy. Figures may be named among them to
    /// measure only those: udp (no-drop rate and cost), tcp, flood (SYN
    /// flood, NAT systems only); default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the TCP measurements.
    #[arg(long)]
    no_tcp: bool,
    /// TCP client threads for the connection rate.
    #[arg(long, default_value_t = 32)]
    conn_threads: usize,
    /// Directory for the JSON and SVG results.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Profile the director's core during each cost-at-load trial: `perf
    /// record` (cpu-clock sampling: these VMs have no PMU) into
    /// DIR/<system>-<flows>-<round>.data, for `perf report -i`.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Names of the namespaces (PREFIX-gen, -dir, -sink) and of the temp files.
    #[arg(long, default_value = "xvs-bench")]
    prefix: String,
}

/// The figures `--only` can name.
const FIGURES: [&str; 3] = ["udp", "tcp", "flood"];

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One flood of the plan.
#[derive(Clone, Copy)]
struct Case {
    sys: System,
    flood: Flood,
}

fn flows_name(f: Flood) -> &'static str {
    if f.new_flows {
        "new"
    } else {
        "1024"
    }
}

/// Progress lines with an estimate of the time left: each kind of step has
/// an expected length (seconds), scaled by how the run has gone so far.
struct Progress {
    started: Instant,
    /// Expected seconds of each search, cost, TCP and SYN-flood step.
    weights: [f64; 4],
    /// Steps of each kind done, and in all.
    done: [usize; 4],
    total: [usize; 4],
}

impl Progress {
    fn expected(&self, n: [usize; 4]) -> f64 {
        (0..4).map(|i| n[i] as f64 * self.weights[i]).sum()
    }

    /// Starts a step of kind `kind` (0 search, 1 cost, 2 TCP, 3 SYN flood).
    fn step(&mut self, kind: usize, what: &str) {
        let el = self.started.elapsed().as_secs_f64();
        let done = self.expected(self.done);
        let all = self.expected(self.total);
        let pace = if done > 0.0 { el / done } else { 1.0 };
        let n: usize = self.done.iter().sum();
        eprintln!(
            "[{:>3}/{}] {what:<58} {:>5.0}s elapsed, ~{:>5.0}s left",
            n + 1,
            self.total.iter().sum::<usize>(),
            el,
            (all - done) * pace
        );
        self.done[kind] += 1;
    }
}

fn conn_max(f: Flood) -> u32 {
    if f.new_flows {
        16 << 20
    } else {
        1 << 20
    }
}

pub fn run(a: Args) -> Result<()> {
    if !xvs_netns::is_root() {
        bail!("xvs-bench run needs root (it builds network namespaces)");
    }
    if a.runs == 0 || a.secs <= 0.0 || a.load_secs <= 0.0 {
        bail!("--runs, --secs and --load-secs must be positive");
    }
    if let Some(f) = a.frames.iter().find(|f| !(64..=1518).contains(*f)) {
        bail!("--frames: {f} is not in 64..=1518");
    }
    // --only names systems and figures; naming no figure means all of them.
    let (figures, names): (Vec<&String>, Vec<&String>) =
        a.only.iter().partition(|s| FIGURES.contains(&s.as_str()));
    let wants = |f: &str| figures.is_empty() || figures.iter().any(|x| *x == f);
    let systems: Vec<System> = if names.is_empty() {
        System::DEFAULT.to_vec()
    } else {
        names
            .iter()
            .map(|s| System::parse(s))
            .collect::<Result<_>>()
            .with_context(|| format!("--only takes systems and figures ({})", FIGURES.join(", ")))?
    };
    let started = Instant::now();
    let background = crate::cpu::background_busy(2.0)?;
    let quiet = Quiet {
        quiet: background.iter().all(|&b| b < 0.05),
        background_busy: background,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    };
    if !quiet.quiet {
        let busy: Vec<String> = quiet
            .background_busy
            .iter()
            .map(|b| format!("{:.0} %", b * 100.0))
            .collect();
        eprintln!(
            "xvs-bench: the machine is busy before the run (cores {} busy, load {}): figures will be noisy and are labelled as measured under load",
            busy.join(" / "),
            quiet.loadavg_start
        );
    }
    // The bench and all it spawns on the generator's core; directors are
    // started under `taskset` on theirs.
    topo::pin_self(GEN_CPU)?;
    let t = Topo::new(&a.prefix).context("building the bench topology")?;
    systems::preflight(&t, &systems)?;
    let flood_systems: Vec<System> = if wants("flood") {
        systems
            .iter()
            .copied()
            .filter(|&s| crate::flood::applies(s))
            .collect()
    } else {
        Vec::new()
    };
    crate::flood::preflight(&flood_systems)?;
    let hz = crate::cpu::cpu_hz();

    let mut cases = Vec::new();
    for &frame in a.frames.iter().filter(|_| wants("udp")) {
        for &sys in systems.iter().filter(|s| s.floods()) {
            for new_flows in [false, true] {
                if new_flows && !sys.stateful() {
                    continue;
                }
                cases.push(Case {
                    sys,
                    flood: Flood {
                        frame: frame - 4,
                        new_flows,
                    },
                });
            }
        }
    }
    let tcp_systems: Vec<System> = if a.no_tcp || !wants("tcp") {
        Vec::new()
    } else {
        systems.iter().copied().filter(|s| s.does_tcp()).collect()
    };
    // A search is a warm-up and ~10 trials, a trial its traffic plus ~0.8 s
    // (generator start, drain, counters); a director starts in ~1 s.
    let mut prog = Progress {
        started,
        weights: [
            1.0 + (o_secs_half(a.secs)) + 10.0 * (a.secs + 0.8),
            1.0 + 0.5 + a.load_secs + 2.0 * 0.8,
            1.0 + 1.5 + 2.0 * a.load_secs + 1.0,
            crate::flood::step_secs(a.load_secs),
        ],
        done: [0; 4],
        total: [
            a.runs * cases.len(),
            a.runs * cases.len(),
            a.runs * tcp_systems.len(),
            a.runs * flood_systems.len(),
        ],
    };
    eprintln!(
        "xvs-bench run: {} floods, {} TCP systems and {} under SYN flood, {} rounds: about {:.0} minutes",
        cases.len(),
        tcp_systems.len(),
        flood_systems.len(),
        a.runs,
        prog.expected(prog.total) / 60.0
    );
    let opts = SearchOpts {
        secs: a.secs,
        loss: a.loss,
        resolution: a.resolution,
        max_trials: a.max_trials,
    };

    // 1. No-drop searches, in rounds.
    let mut searches: Vec<Vec<Search>> = vec![Vec::new(); cases.len()];
    for r in 0..a.runs {
        for (k, c) in cases.iter().enumerate() {
            prog.step(
                0,
                &format!(
                    "no-drop {} {}B {} flows, round {}/{}",
                    c.sys.name(),
                    c.flood.frame + 4,
                    flows_name(c.flood),
                    r + 1,
                    a.runs
                ),
            );
            let d = systems::start(&t, c.sys, conn_max(c.flood))
                .with_context(|| format!("setting up {}", c.sys.label()))?;
            let mut b = Bench::new(&t, c.sys, c.flood, d.threads(&t));
            let s = trial::search(|r, secs| b.trial(r, secs), &opts)
                .with_context(|| format!("no-drop search of {}", c.sys.label()))?;
            let drops: u64 = s.trials.iter().map(|t| t.sink_drops).sum();
            eprintln!(
                "          no-drop {:.3} Mpps after {} trials (overdriven: {:.3} Mpps){}",
                s.no_drop_mpps,
                s.trials.len(),
                s.overdriven_mpps,
                if drops > 0 {
                    format!("; the sink could not take {drops} frames")
                } else {
                    String::new()
                }
            );
            searches[k].push(s);
        }
    }

    // 2. Cost at a load every system of the flood sustains.
    let load_of = |f: Flood| -> f64 {
        if let Some(l) = a.load {
            return l;
        }
        let lowest = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.flood == f)
            .map(|(k, _)| median_ci(&nodrop_runs(&searches[k])).median)
            .fold(f64::INFINITY, f64::min);
        // Rounded down to 10 Kpps so that invocations agree on the load
        // when their searches nearly do.
        ((lowest / 2.0) * 100.0).floor() / 100.0
    };
    let mut cost: Vec<Vec<trial::Trial>> = vec![Vec::new(); cases.len()];
    for r in 0..a.runs {
        for (k, c) in cases.iter().enumerate() {
            let load = load_of(c.flood).max(0.001);
            prog.step(
                1,
                &format!(
                    "cost at {load:.3} Mpps {} {}B {} flows, round {}/{}",
                    c.sys.name(),
                    c.flood.frame + 4,
                    flows_name(c.flood),
                    r + 1,
                    a.runs
                ),
            );
            let d = systems::start(&t, c.sys, conn_max(c.flood))?;
            let mut b = Bench::new(&t, c.sys, c.flood, d.threads(&t));
            b.trial(load, 0.5)?; // warm-up
            let perf = match &a.perf {
                Some(dir) => Some(perf_record(
                    dir,
                    &format!("{}-{}-{}", c.sys.name(), flows_name(c.flood), r + 1),
                    a.load_secs,
                )?),
                None => None,
            };
            let tr = b.trial(load, a.load_secs)?;
            if let Some(mut p) = perf {
                let _ = p.wait();
            }
            eprintln!(
                "          {:.0} cycles/packet ({:.0} by its own threads), loss {:.3} %",
                tr.cycles_per_packet(hz),
                tr.own_cycles_per_packet(hz),
                tr.loss() * 100.0
            );
            cost[k].push(tr);
        }
    }
    let mut throughput = Vec::new();
    for (k, c) in cases.iter().enumerate() {
        let s = std::mem::take(&mut searches[k]);
        let nd = nodrop_runs(&s);
        let cyc: Vec<f64> = cost[k].iter().map(|t| t.cycles_per_packet(hz)).collect();
        let own: Vec<f64> = cost[k]
            .iter()
            .map(|t| t.own_cycles_per_packet(hz))
            .collect();
        throughput.push(Throughput {
            system: c.sys.name().into(),
            frame_bytes: c.flood.frame + 4,
            flows: flows_name(c.flood).into(),
            no_drop_mpps: median_ci(&nd),
            cycles_per_packet_at_load: median_ci(&cyc),
            own_cycles_per_packet_at_load: median_ci(&own),
            load_mpps: cost[k].first().map_or(0.0, |t| t.rate_mpps),
            overdriven_mpps: median_ci(&s.iter().map(|x| x.overdriven_mpps).collect::<Vec<_>>()),
            no_drop_runs: nd,
            cycles_runs: cyc,
            own_cycles_runs: own,
            loss_at_load_runs: cost[k].iter().map(|t| t.loss()).collect(),
            searches: s,
        });
    }

    // 3. TCP.
    let tcp = if tcp_systems.is_empty() {
        Vec::new()
    } else {
        tcp_phase(&t, &tcp_systems, &a, &mut prog)?
    };
    // 4. SYN flood.
    let flood = crate::flood::phase(
        &t,
        &flood_systems,
        a.runs,
        a.load_secs,
        a.conn_threads,
        |what| prog.step(3, what),
    )?;

    let (k, coverage) = stats::ci_rank(a.runs);
    let mut report = Report {
        date: crate::report::now_utc(),
        machine: crate::report::machine(),
        cpu_hz: hz,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quiet,
        method: Method {
            runs: a.runs,
            trial_secs: a.secs,
            load_secs: a.load_secs,
            loss_threshold: a.loss,
            resolution: a.resolution,
            ci: format!(
                "order-statistic (binomial) interval of the median: [x({k}), x({})] of {} runs",
                a.runs + 1 - k,
                a.runs
            ),
            ci_coverage: coverage,
            cycles: format!(
                "director core (CPU {DIR_CPU}) busy time from /proc/stat (user+nice+system+irq+softirq, not idle/iowait/steal) x {:.0} MHz nominal clock / packets delivered",
                hz / 1e6
            ),
        },
        throughput,
        tcp,
        flood,
        ratios: Vec::new(),
        wall_secs: 0.0,
    };
    report.ratios = crate::report::ratios(&report);
    report.quiet.loadavg_end = loadavg();
    report.wall_secs = started.elapsed().as_secs_f64();
    drop(t);
    crate::report::emit(&report, &a.out)?;
    Ok(())
}

/// Starts `perf record` on the director's core for `secs` (call-graphs,
/// cpu-clock at 999 Hz), writing DIR/NAME.data.
fn perf_record(dir: &std::path::Path, name: &str, secs: f64) -> Result<std::process::Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("{name}.data"));
    std::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-C"])
        .arg(DIR_CPU.to_string())
        .arg("-o")
        .arg(&out)
        .args(["--", "sleep"])
        .arg(format!("{secs}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf record (Debian package linux-perf)")
}

/// Length of a search's warm-up trial (see `trial::search`).
fn o_secs_half(secs: f64) -> f64 {
    (secs / 2.0).clamp(0.2, 1.0)
}

fn nodrop_runs(s: &[Search]) -> Vec<f64> {
    s.iter().map(|x| x.no_drop_mpps).collect()
}

/// Connection rate and bulk throughput through each system, in rounds.
fn tcp_phase(t: &Topo, systems_: &[System], a: &Args, prog: &mut Progress) -> Result<Vec<Tcp>> {
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = |port: u16| -> Vec<SocketAddr> {
        [RS1, RS2]
            .iter()
            .map(|a| format!("{a}:{port}").parse().expect("literal"))
            .collect()
    };
    probe::http_server(&t.sink, &addrs(HTTP_PORT), 4, stop.clone());
    let bytes = Arc::new(AtomicU64::new(0));
    probe::bulk_server(&t.sink, &addrs(BULK_PORT), bytes.clone(), stop.clone());
    let n = systems_.len();
    let mut conns = vec![Vec::new(); n];
    let mut us = vec![Vec::new(); n];
    let mut own_us = vec![Vec::new(); n];
    let mut p99 = vec![Vec::new(); n];
    let mut errors = vec![0u64; n];
    let mut bulk = vec![Vec::new(); n];
    let mut bulk_busy = vec![Vec::new(); n];
    for r in 0..a.runs {
        for (k, &sys) in systems_.iter().enumerate() {
            prog.step(
                2,
                &format!(
                    "TCP {} conns/s and bulk, round {}/{}",
                    sys.name(),
                    r + 1,
                    a.runs
                ),
            );
            let d = systems::start(t, sys, 1 << 20)?;
            let threads = d.threads(t);
            let to: SocketAddr = sys.tcp_target(HTTP_PORT).parse()?;
            probe::warm_up(&t.gen, to);
            let b0 = crate::cpu::busy_secs(DIR_CPU)?;
            let o0 = crate::cpu::own_secs(&threads, DIR_CPU)?;
            let cr = probe::conn_rate(&t.gen, to, a.conn_threads, a.load_secs);
            let busy = crate::cpu::busy_secs(DIR_CPU)? - b0;
            let own = crate::cpu::own_secs(&threads, DIR_CPU)? - o0;
            let total = cr.per_sec * a.load_secs;
            let per = |x: f64| {
                if total > 0.0 {
                    x / total * 1e6
                } else {
                    f64::NAN
                }
            };
            conns[k].push(cr.per_sec);
            us[k].push(per(busy));
            own_us[k].push(per(own));
            p99[k].push(cr.p99_us);
            errors[k] += cr.errors;
            let to: SocketAddr = sys.tcp_target(BULK_PORT).parse()?;
            let (gbps, share) = probe::bulk(&t.gen, to, 4, a.load_secs, 1.0, &bytes, |span| {
                let b0 = crate::cpu::busy_secs(DIR_CPU)?;
                std::thread::sleep(std::time::Duration::from_secs_f64(span));
                Ok((crate::cpu::busy_secs(DIR_CPU)? - b0) / span)
            })?;
            eprintln!(
                "          {:.0} conns/s ({:.1} µs of director core each, {:.1} by its own threads; p99 {:.0} µs, {} errors), bulk {:.2} Gbps (director {:.0} % busy)",
                cr.per_sec,
                us[k].last().copied().unwrap_or(0.0),
                own_us[k].last().copied().unwrap_or(0.0),
                cr.p99_us,
                cr.errors,
                gbps,
                share * 100.0
            );
            bulk[k].push(gbps);
            bulk_busy[k].push(share);
        }
    }
    stop.store(true, Ordering::Relaxed);
    Ok(systems_
        .iter()
        .enumerate()
        .map(|(k, s)| Tcp {
            system: s.name().into(),
            conns_per_sec: median_ci(&conns[k]),
            director_us_per_conn: median_ci(&us[k]),
            own_us_per_conn: median_ci(&own_us[k]),
            conn_p99_us: median_ci(&p99[k]),
            conn_errors: errors[k],
            bulk_gbps: median_ci(&bulk[k]),
            bulk_director_busy: median_ci(&bulk_busy[k]),
            conns_runs: conns[k].clone(),
            us_per_conn_runs: us[k].clone(),
            own_us_per_conn_runs: own_us[k].clone(),
            bulk_runs: bulk[k].clone(),
        })
        .collect())
}
