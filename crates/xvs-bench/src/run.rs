//! `xvs-bench run`: xvs against the Linux kernel and the raw AF_XDP ceiling,
//! side by side in one run, on one veth topology and one core pinning.
//!
//! ```text
//!  xvs-bench-gen  g0 ── d0  xvs-bench-dir  d1 ── s0  xvs-bench-sink
//!  generator (core 0)      director (core 1)        counts and drops
//! ```
//! The generator is BPF_PROG_RUN with live frames on g0. The director's two
//! veths run threaded NAPI pinned to core 1, and xvsd's worker (or the raw
//! forwarder, or the kernel) works there too. The sink counts what arrives
//! with an nftables netdev-ingress counter and drops it.

use crate::cpu;
use crate::gen::{Gen, GenSpec};
use crate::probe;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs_netns::Netns;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Runs per figure (min/median/max over them).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory for the JSON and SVG results.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Only these systems (comma-separated: raw,xvs-nat,xvs-dr,xvs-tun,xvs-fullnat,ip-forward,nft-dnat).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the TCP connection-rate and latency measurements.
    #[arg(long)]
    no_tcp: bool,
    /// Names of the namespaces (PREFIX-gen, -dir, -sink) and of the temp files.
    #[arg(long, default_value = "xvs-bench")]
    prefix: String,
}

const GEN_CPU: usize = 0;
const DIR_CPU: usize = 1;
const VIP: &str = "10.77.60.100";
const RS1: &str = "10.77.61.11";
const RS2: &str = "10.77.61.12";
const LIP: &str = "10.77.61.200";

/// One system under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Raw,
    XvsNat,
    XvsDr,
    XvsTun,
    XvsFullnat,
    IpForward,
    NftDnat,
}

impl System {
    const ALL: [System; 7] = [
        System::Raw,
        System::XvsNat,
        System::XvsDr,
        System::XvsTun,
        System::XvsFullnat,
        System::IpForward,
        System::NftDnat,
    ];

    fn name(self) -> &'static str {
        match self {
            System::Raw => "raw",
            System::XvsNat => "xvs-nat",
            System::XvsDr => "xvs-dr",
            System::XvsTun => "xvs-tun",
            System::XvsFullnat => "xvs-fullnat",
            System::IpForward => "ip-forward",
            System::NftDnat => "nft-dnat",
        }
    }

    fn label(self) -> &'static str {
        match self {
            System::Raw => "AF_XDP raw forwarder (ceiling)",
            System::XvsNat => "xvs NAT",
            System::XvsDr => "xvs DR",
            System::XvsTun => "xvs TUN",
            System::XvsFullnat => "xvs FULLNAT",
            System::IpForward => "kernel ip_forward",
            System::NftDnat => "kernel nftables DNAT",
        }
    }
}

/// min / median / max of a figure over the runs.
#[derive(Serialize, Clone, Copy, Default, Debug)]
pub struct Mmm {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

fn mmm(mut v: Vec<f64>) -> Mmm {
    if v.is_empty() {
        return Mmm::default();
    }
    v.sort_by(f64::total_cmp);
    Mmm {
        min: v[0],
        median: v[v.len() / 2],
        max: v[v.len() - 1],
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Throughput {
    pub system: String,
    pub frame_bytes: usize,
    pub flows: String,
    pub mpps: Mmm,
    pub gbps: Mmm,
    pub cycles_per_packet: Mmm,
    pub loss: Mmm,
}

#[derive(Serialize, Clone, Debug)]
pub struct Conns {
    pub system: String,
    pub conns_per_sec: Mmm,
}

#[derive(Serialize, Clone, Debug)]
pub struct Latency {
    pub system: String,
    pub load_mpps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub lost: u32,
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub cpu_hz: f64,
    pub secs_per_run: f64,
    pub runs: usize,
    pub throughput: Vec<Throughput>,
    pub conns: Vec<Conns>,
    pub latency: Vec<Latency>,
}

/// The three namespaces and their veths.
struct Topo {
    /// Namespace and temp-file prefix.
    prefix: String,
    gen: Netns,
    dir: Netns,
    sink: Netns,
    d0_mac: [u8; 6],
    g0_mac: [u8; 6],
    s0_mac: [u8; 6],
}

use crate::tools::own_mac as mac_of;

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Pins the NAPI kthreads of `dev` (threaded NAPI) to `cpu`.
fn pin_napi(ns: &Netns, dev: &str, cpu: usize) -> Result<()> {
    // A veth has NAPI only with GRO or XDP: GRO is turned on (the one feature
    // the bench changes) so that frames injected by the generator and the
    // kernel baselines get NAPI, then threaded NAPI so it can be pinned.
    ns.exec(&["ethtool", "-K", dev, "gro", "on"])?;
    ns.sh(&format!("echo 1 > /sys/class/net/{dev}/threaded"))?;
    std::thread::sleep(Duration::from_millis(50));
    let out = xvs_netns::run(&["ps", "-eo", "pid,comm"])?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut w = line.split_whitespace();
        let (Some(pid), Some(comm)) = (w.next(), w.next()) else {
            continue;
        };
        if comm.starts_with("napi/") && comm.contains(dev) {
            let _ = xvs_netns::run(&["taskset", "-pc", &cpu.to_string(), pid]);
        }
    }
    Ok(())
}

fn topo(prefix: &str) -> Result<Topo> {
    let gen = Netns::new(&format!("{prefix}-gen"))?;
    let dir = Netns::new(&format!("{prefix}-dir"))?;
    let sink = Netns::new(&format!("{prefix}-sink"))?;
    xvs_netns::veth("g0", &gen, "d0", &dir)?;
    xvs_netns::veth("d1", &dir, "s0", &sink)?;
    gen.sh(
        "ip addr add 10.77.60.2/24 dev g0 && ip route add default via 10.77.60.1 && \
         sysctl -qw net.ipv4.ip_local_port_range='1024 65535'",
    )?;
    dir.sh(&format!(
        "ip addr add 10.77.60.1/24 dev d0 && ip addr add {VIP}/32 dev d0 && \
         ip addr add 10.77.61.1/24 dev d1 && ip addr add {LIP}/32 dev d1 && \
         ip route add 10.77.128.0/17 via 10.77.60.2 && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.d0.rp_filter=0"
    ))?;
    sink.sh(&format!(
        "ip addr add {RS1}/24 dev s0 && ip addr add {RS2}/24 dev s0 && \
         ip addr add {VIP}/32 dev lo && ip route add default via 10.77.61.1 && \
         sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
         net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.s0.rp_filter=0"
    ))?;
    // Room for the tunnel header on the director → sink path (1500-byte
    // packets encapsulated for TUN).
    dir.exec(&["ip", "link", "set", "d1", "mtu", "1600"])?;
    sink.exec(&["ip", "link", "set", "s0", "mtu", "1600"])?;
    // Frames injected into g0 need NAPI on d0; the director's work goes on core 1.
    pin_napi(&dir, "d0", DIR_CPU)?;
    pin_napi(&dir, "d1", DIR_CPU)?;
    pin_napi(&sink, "s0", GEN_CPU)?;
    // The sink counts the flood (UDP to port 80, or IPIP) and drops it.
    sink.sh("nft add table netdev sink && \
         nft add chain netdev sink in '{ type filter hook ingress device s0 priority 0; }' && \
         nft add rule netdev sink in udp dport 80 counter drop && \
         nft add rule netdev sink in ip protocol 4 counter drop")?;
    Ok(Topo {
        prefix: prefix.to_string(),
        d0_mac: mac_of(&dir, "d0")?,
        g0_mac: mac_of(&gen, "g0")?,
        s0_mac: mac_of(&sink, "s0")?,
        gen,
        dir,
        sink,
    })
}

/// Packets counted by the sink's rules so far.
fn sink_count(t: &Topo) -> Result<u64> {
    let out = t.sink.exec(&["nft", "list", "table", "netdev", "sink"])?;
    let s = String::from_utf8_lossy(&out.stdout);
    Ok(s.lines().filter_map(crate::tools::counter_packets).sum())
}

/// The director set up as `sys`; dropping it undoes what needs undoing.
struct Director {
    child: Option<Child>,
    ns_cleanup: Vec<String>,
    dir: String,
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = xvs_netns::run(&["kill", "-TERM", &c.id().to_string()]);
            let _ = c.wait();
        }
        let ns = Netns::existing(&self.dir);
        for cmd in &self.ns_cleanup {
            let _ = ns.sh(cmd);
        }
    }
}

fn exe_dir() -> PathBuf {
    std::env::var_os("XVS_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok()?.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn wait_socket(path: &str, child: &mut Child) -> Result<()> {
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            bail!("the director exited ({st})");
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the director did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn director(t: &Topo, sys: System, conn_max: u32) -> Result<Director> {
    let mut d = Director {
        child: None,
        ns_cleanup: Vec::new(),
        dir: t.dir.name().to_string(),
    };
    match sys {
        System::IpForward => {}
        System::NftDnat => {
            t.dir.sh(&format!(
                "nft add table ip xvsb && \
                 nft add chain ip xvsb pre '{{ type nat hook prerouting priority -100; }}' && \
                 nft add rule ip xvsb pre ip daddr {VIP} udp dport 80 dnat to numgen inc mod 2 map {{ 0 : {RS1}, 1 : {RS2} }} && \
                 nft add rule ip xvsb pre ip daddr {VIP} tcp dport 8080 dnat to numgen inc mod 2 map {{ 0 : {RS1}, 1 : {RS2} }} && \
                 nft add rule ip xvsb pre ip daddr {VIP} udp dport 7 dnat to {RS1}"
            ))?;
            d.ns_cleanup.push("nft delete table ip xvsb".into());
        }
        System::Raw => {
            let exe = exe_dir().join("xvs-bench");
            let child = t.dir.spawn(
                &[
                    exe.to_str().unwrap_or("xvs-bench"),
                    "xfwd",
                    "--in",
                    "d0",
                    "--out",
                    "d1",
                    "--vip",
                    &format!("{VIP}:80"),
                    "--dst-mac",
                    &mac_str(&t.s0_mac),
                    "--cpu",
                    &DIR_CPU.to_string(),
                ],
                Stdio::null(),
                Stdio::null(),
            )?;
            d.child = Some(child);
            std::thread::sleep(Duration::from_millis(500));
        }
        _ => {
            let fwd = match sys {
                System::XvsNat => "-m",
                System::XvsDr => "-g",
                System::XvsTun => "-i",
                _ => "--fullnat",
            };
            let mut rules = String::new();
            for (proto, port) in [("-u", 80), ("-t", 8080), ("-u", 7)] {
                rules.push_str(&format!("-A {proto} {VIP}:{port} -s rr\n"));
                let rss: &[&str] = if port == 7 { &[RS1] } else { &[RS1, RS2] };
                for rs in rss {
                    rules.push_str(&format!("-a {proto} {VIP}:{port} -r {rs}:{port} {fwd}\n"));
                }
                if sys == System::XvsFullnat {
                    rules.push_str(&format!("-P {proto} {VIP}:{port} -z {LIP}\n"));
                }
            }
            let tmp = |ext: &str| std::env::temp_dir().join(format!("{}.{ext}", t.prefix));
            let rules_file = tmp("rules");
            std::fs::write(&rules_file, rules)?;
            let cfg = tmp("toml");
            std::fs::write(
                &cfg,
                format!(
                    "conn_max = {conn_max}\ncores = [{DIR_CPU}]\n[[interface]]\nname = \"d0\"\n[[interface]]\nname = \"d1\"\n"
                ),
            )?;
            let sock = tmp("sock");
            let _ = std::fs::remove_file(&sock);
            let exe = exe_dir().join("xvsd");
            let log_path = tmp("xvsd.log");
            let log = std::fs::File::create(&log_path)?;
            let mut child = t.dir.spawn(
                &[
                    exe.to_str().unwrap_or("xvsd"),
                    "--config",
                    cfg.to_str().unwrap_or(""),
                    "--rules",
                    rules_file.to_str().unwrap_or(""),
                    "--socket",
                    sock.to_str().unwrap_or(""),
                ],
                Stdio::null(),
                Stdio::from(log),
            )?;
            wait_socket(sock.to_str().unwrap_or(""), &mut child)
                .with_context(|| format!("starting xvsd (see {})", log_path.display()))?;
            d.child = Some(child);
        }
    }
    Ok(d)
}

fn flood_spec(t: &Topo, sys: System, frame: usize, new_flows: bool, rate: u64) -> GenSpec {
    GenSpec {
        src_mac: t.g0_mac,
        dst_mac: t.d0_mac,
        // Sources in 10.77.128.0/17, routed back to the generator.
        saddr: Ipv4Addr::new(10, 77, 128, 1),
        daddr: if sys == System::IpForward {
            RS1.parse().expect("literal")
        } else {
            VIP.parse().expect("literal")
        },
        sport: 1024,
        dport: 80,
        src_addrs: if new_flows { 32000 } else { 16 },
        src_ports: if new_flows { 60000 } else { 64 },
        frame_len: frame,
        rate,
        cpu: Some(GEN_CPU),
        proto: 17,
        tcp_flags: 0,
        budget: 0,
    }
}

/// Starts the generator on g0 from inside the generator's namespace (the
/// kernel resolves the interface in the namespace of the calling thread, and
/// the test-run thread inherits it).
fn start_gen(t: &Topo, spec: &GenSpec) -> Result<Gen> {
    t.gen.run(|| {
        let ifindex = xvs_xdp::sys::ifindex("g0").map_err(|e| anyhow::anyhow!("{e}"))?;
        Gen::start(ifindex, spec)
    })?
}

/// One throughput run: (Mpps delivered, loss, cycles per packet).
fn one_run(t: &Topo, spec: &GenSpec, secs: f64) -> Result<(f64, f64, f64)> {
    let g = start_gen(t, spec)?;
    std::thread::sleep(Duration::from_millis(700));
    let (s0, _) = g.counts();
    let c0 = sink_count(t)?;
    let cpu0 = cpu::core_times(DIR_CPU)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = sink_count(t)?;
    let cpu1 = cpu::core_times(DIR_CPU)?;
    let (s1, _) = g.counts();
    let el = t0.elapsed().as_secs_f64();
    g.stop()?;
    let delivered = (c1 - c0) as f64 / el;
    let sent = (s1 - s0) as f64 / el;
    let loss = if sent > 0.0 {
        (1.0 - delivered / sent).max(0.0)
    } else {
        0.0
    };
    let busy = cpu::busy_fraction(cpu0, cpu1);
    let cpp = if delivered > 0.0 {
        busy * cpu::cpu_hz() / delivered
    } else {
        0.0
    };
    // Let the director drain before the next run.
    std::thread::sleep(Duration::from_millis(300));
    Ok((delivered / 1e6, loss, cpp))
}

fn progress(done: usize, total: usize, started: Instant, what: &str) {
    let el = started.elapsed().as_secs_f64();
    let left = if done > 0 {
        el / done as f64 * (total - done) as f64
    } else {
        0.0
    };
    eprintln!(
        "[{:>3}/{total}] {what:<48} {:>4.0}s elapsed, ~{:>4.0}s left",
        done + 1,
        el,
        left
    );
}

pub fn run(a: Args) -> Result<()> {
    if !xvs_netns::is_root() {
        bail!("xvs-bench run needs root (it builds network namespaces)");
    }
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| a.only.is_empty() || a.only.iter().any(|o| o == s.name()))
        .collect();
    let t = topo(&a.prefix).context("building the bench topology")?;
    let started = Instant::now();
    // Plan: for each system, 64 B and 1500 B over 1K flows; new-flow floods for
    // xvs NAT and nft DNAT; then conns/s and latency.
    let mut plan: Vec<(System, usize, bool)> = Vec::new();
    for &s in &systems {
        plan.push((s, 60, false));
        plan.push((s, 1500, false));
        if matches!(s, System::XvsNat | System::NftDnat) {
            plan.push((s, 60, true));
        }
    }
    let tcp_systems: Vec<System> = if a.no_tcp {
        Vec::new()
    } else {
        systems
            .iter()
            .copied()
            .filter(|s| matches!(s, System::XvsNat | System::XvsFullnat | System::NftDnat))
            .collect()
    };
    let total = plan.len() * a.runs + tcp_systems.len() * (a.runs + 1);
    let mut step = 0;
    let mut throughput = Vec::new();
    let mut max_rate = std::collections::HashMap::new();
    // Runs are interleaved (run 1 of every case, then run 2...): on a shared
    // VM the machine's speed drifts over minutes, and interleaving spreads
    // that drift over every system instead of favouring whichever ran first.
    let mut samples: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); plan.len()];
    for r in 0..a.runs {
        for (k, &(sys, frame, new_flows)) in plan.iter().enumerate() {
            let conn_max = if new_flows { 16 << 20 } else { 1 << 20 };
            let _d = director(&t, sys, conn_max)
                .with_context(|| format!("setting up {}", sys.label()))?;
            let spec = flood_spec(&t, sys, frame, new_flows, 0);
            progress(
                step,
                total,
                started,
                &format!(
                    "{} {}B {} run {}/{}",
                    sys.label(),
                    frame + 4,
                    if new_flows { "new flows" } else { "1K flows" },
                    r + 1,
                    a.runs
                ),
            );
            step += 1;
            let (m, l, c) = one_run(&t, &spec, a.secs)?;
            samples[k].0.push(m);
            samples[k].1.push(l);
            samples[k].2.push(c);
        }
    }
    for (k, &(sys, frame, new_flows)) in plan.iter().enumerate() {
        let (mpps, loss, cpp) = std::mem::take(&mut samples[k]);
        let gbps: Vec<f64> = mpps
            .iter()
            .map(|m| m * 1e6 * (frame + 4) as f64 * 8.0 / 1e9)
            .collect();
        let m = mmm(mpps);
        if frame == 60 && !new_flows {
            max_rate.insert(sys.name(), m.median);
        }
        throughput.push(Throughput {
            system: sys.name().into(),
            frame_bytes: frame + 4,
            flows: if new_flows {
                "new".into()
            } else {
                "1024".into()
            },
            mpps: m,
            gbps: mmm(gbps),
            cycles_per_packet: mmm(cpp),
            loss: mmm(loss),
        });
    }
    let mut conns = Vec::new();
    let mut latency = Vec::new();
    if !tcp_systems.is_empty() {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<SocketAddr> = [RS1, RS2]
            .iter()
            .map(|a| format!("{a}:8080").parse().expect("literal"))
            .collect();
        probe::http_server(&t.sink, &addrs, 4, stop.clone());
        probe::udp_echo(&t.sink, format!("{RS1}:7").parse()?, stop.clone());
        for &sys in &tcp_systems {
            let _d = director(&t, sys, 1 << 20)?;
            let to: SocketAddr = format!("{VIP}:8080").parse()?;
            let mut v = Vec::new();
            for r in 0..a.runs {
                progress(
                    step,
                    total,
                    started,
                    &format!("{} TCP conns/s run {}/{}", sys.label(), r + 1, a.runs),
                );
                step += 1;
                let (rate, _errors) = probe::conn_rate(&t.gen, to, 32, a.secs);
                v.push(rate);
            }
            conns.push(Conns {
                system: sys.name().into(),
                conns_per_sec: mmm(v),
            });
            progress(
                step,
                total,
                started,
                &format!("{} latency at half load", sys.label()),
            );
            step += 1;
            let half = max_rate.get(sys.name()).copied().unwrap_or(0.5) * 0.5;
            let g = start_gen(&t, &flood_spec(&t, sys, 60, false, (half * 1e6) as u64))?;
            std::thread::sleep(Duration::from_millis(500));
            let (p50, p99, p999, lost) = probe::udp_latency(
                &t.gen,
                "10.77.60.2:40007".parse()?,
                format!("{VIP}:7").parse()?,
                2000,
                Duration::from_micros(500),
            );
            g.stop()?;
            latency.push(Latency {
                system: sys.name().into(),
                load_mpps: half,
                p50_us: p50,
                p99_us: p99,
                p999_us: p999,
                lost,
            });
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let report = Report {
        date: crate::report::today(),
        machine: crate::report::machine(),
        cpu_hz: cpu::cpu_hz(),
        secs_per_run: a.secs,
        runs: a.runs,
        throughput,
        conns,
        latency,
    };
    crate::report::emit(&report, &a.out)?;
    drop(t);
    Ok(())
}
