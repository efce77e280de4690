//! The bench topology and its pinning.
//!
//! ```text
//!  PREFIX-gen  g0 ── d0  PREFIX-dir  d1 ── s0  PREFIX-sink
//!  generator, TCP clients     director         counter, TCP servers
//!  core 0                     core 1           core 0
//! ```
//! Everything the director does runs on core 1: the NAPI threads of d0 and d1
//! (threaded NAPI, pinned), and xvsd or HAProxy (started under `taskset -c 1`).
//! Everything else runs on core 0: the generator, the bench itself and what
//! it spawns, the TCP clients and servers, and the NAPI threads of g0 and s0
//! (so that the far ends' receive work is not charged to the director's core;
//! a veth without NAPI receives on the sender's CPU). The sink's NAPI thread
//! runs at real-time priority so that it, not the generator spinning on the
//! same core, gets the CPU when frames arrive: a sink that falls behind would
//! be counted as the director's loss.

use anyhow::{Context, Result};
use std::time::Duration;
use xvs_netns::Netns;

pub const GEN_CPU: usize = 0;
pub const DIR_CPU: usize = 1;
pub const VIP: &str = "10.77.60.100";
pub const RS1: &str = "10.77.61.11";
pub const RS2: &str = "10.77.61.12";
pub const LIP: &str = "10.77.61.200";
/// The client side's address (TCP clients).
pub const CLIENT: &str = "10.77.60.2";
/// TCP ports: short HTTP/1.0 exchanges (conns/s) and bulk streams.
pub const HTTP_PORT: u16 = 8080;
pub const BULK_PORT: u16 = 5201;
/// The SYN-flood figure's service (`flood.rs`): its own port and servers, so
/// that it does not depend on the TCP figure's.
pub const FLOOD_PORT: u16 = 8081;

/// The three namespaces and their veths; deleted on drop.
pub struct Topo {
    /// Namespace and temp-file prefix.
    pub prefix: String,
    pub gen: Netns,
    pub dir: Netns,
    pub sink: Netns,
    pub d0_mac: [u8; 6],
    pub g0_mac: [u8; 6],
    /// (device, NAPI kthread pid, CPU it must stay on).
    napi: Vec<(&'static str, u32, usize)>,
}

/// Pids of the NAPI kthreads named for `dev` (`napi/<dev>-<id>`), of any namespace.
fn napi_threads(dev: &str) -> Result<Vec<u32>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(e) = e else { continue };
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.trim_end().starts_with(&format!("napi/{dev}-")) {
                v.push(pid);
            }
        }
    }
    Ok(v)
}

/// Turns on threaded NAPI for `dev` and pins its kthread to `cpu`, at
/// real-time priority `rt` if given; returns the kthread's pid.
fn pin_napi(ns: &Netns, dev: &str, cpu: usize, rt: Option<u8>) -> Result<u32> {
    // A veth has NAPI only with GRO or XDP: GRO is turned on (the one feature
    // the bench changes) so that frames injected by the generator and the
    // kernel baselines get NAPI, then threaded NAPI so it can be pinned. With
    // GRO on, attaching or detaching XDP later keeps this NAPI instance (and
    // its kthread); Topo::check_pins verifies that.
    ns.exec(&["ethtool", "-K", dev, "gro", "on"])?;
    // Other namespaces may have a device of the same name: ours is the
    // kthread that appears when threaded NAPI is turned on.
    let before = napi_threads(dev)?;
    ns.sh(&format!("echo 1 > /sys/class/net/{dev}/threaded"))?;
    let t0 = std::time::Instant::now();
    let pid = loop {
        if let Some(p) = napi_threads(dev)?.into_iter().find(|p| !before.contains(p)) {
            break p;
        }
        if t0.elapsed() > Duration::from_secs(2) {
            anyhow::bail!("no NAPI thread appeared for {dev} after turning threaded NAPI on");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let p = pid.to_string();
    xvs_netns::run(&["taskset", "-pc", &cpu.to_string(), &p])
        .with_context(|| format!("pinning the NAPI thread of {dev}"))?;
    if let Some(prio) = rt {
        xvs_netns::run(&["chrt", "-f", "-p", &prio.to_string(), &p])
            .with_context(|| format!("raising the NAPI thread of {dev} to SCHED_FIFO"))?;
    }
    Ok(pid)
}

impl Topo {
    pub fn new(prefix: &str) -> Result<Topo> {
        let gen = Netns::new(&format!("{prefix}-gen"))?;
        let dir = Netns::new(&format!("{prefix}-dir"))?;
        let sink = Netns::new(&format!("{prefix}-sink"))?;
        xvs_netns::veth("g0", &gen, "d0", &dir)?;
        xvs_netns::veth("d1", &dir, "s0", &sink)?;
        gen.sh(&format!(
            "ip addr add {CLIENT}/24 dev g0 && ip route add default via 10.77.60.1 && \
             sysctl -qw net.ipv4.ip_local_port_range='1024 65535' net.ipv4.tcp_tw_reuse=1"
        ))?;
        dir.sh(&format!(
            "ip addr add 10.77.60.1/24 dev d0 && ip addr add {VIP}/32 dev d0 && \
             ip addr add 10.77.61.1/24 dev d1 && ip addr add {LIP}/32 dev d1 && \
             ip route add 10.77.128.0/17 via {CLIENT} && \
             sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.d0.rp_filter=0 \
             net.ipv4.ip_local_port_range='1024 65535' net.ipv4.tcp_tw_reuse=1"
        ))?;
        sink.sh(&format!(
            "ip addr add {RS1}/24 dev s0 && ip addr add {RS2}/24 dev s0 && \
             ip addr add {VIP}/32 dev lo && ip route add default via 10.77.61.1 && \
             sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
             net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.s0.rp_filter=0"
        ))?;
        // Room for the tunnel header on the director → sink path (1500-byte
        // packets encapsulated for TUN); TCP stays at 1500 (the client's MTU).
        dir.exec(&["ip", "link", "set", "d1", "mtu", "1600"])?;
        sink.exec(&["ip", "link", "set", "s0", "mtu", "1600"])?;
        // Frames a veth cannot hand to its peer's NAPI (TCP from a local
        // socket with TSO, forwarded skbs) are received on the sending CPU's
        // backlog: RPS moves that work to the CPU of the receiving side, so
        // the director's receive work stays on its core and the far ends'
        // (the sink's counting, the clients') stays off it.
        for (ns, dev, cpu) in [
            (&dir, "d0", DIR_CPU),
            (&dir, "d1", DIR_CPU),
            (&sink, "s0", GEN_CPU),
            (&gen, "g0", GEN_CPU),
        ] {
            ns.sh(&format!(
                "echo {:x} > /sys/class/net/{dev}/queues/rx-0/rps_cpus",
                1u64 << cpu
            ))
            .with_context(|| format!("steering {dev}'s backlog to CPU {cpu} (RPS)"))?;
        }
        let napi = vec![
            ("d0", pin_napi(&dir, "d0", DIR_CPU, None)?, DIR_CPU),
            ("d1", pin_napi(&dir, "d1", DIR_CPU, None)?, DIR_CPU),
            ("s0", pin_napi(&sink, "s0", GEN_CPU, Some(50))?, GEN_CPU),
            ("g0", pin_napi(&gen, "g0", GEN_CPU, None)?, GEN_CPU),
        ];
        // The sink counts the flood (UDP to port 80, or IPIP) and drops it.
        sink.sh("nft add table netdev sink && \
             nft add chain netdev sink in '{ type filter hook ingress device s0 priority 0; }' && \
             nft add rule netdev sink in udp dport 80 counter drop && \
             nft add rule netdev sink in ip protocol 4 counter drop")?;
        Ok(Topo {
            prefix: prefix.to_string(),
            d0_mac: crate::tools::own_mac(&dir, "d0")?,
            g0_mac: crate::tools::own_mac(&gen, "g0")?,
            napi,
            gen,
            dir,
            sink,
        })
    }

    /// Flood packets counted by the sink so far.
    pub fn sink_count(&self) -> Result<u64> {
        let out = self
            .sink
            .exec(&["nft", "list", "table", "netdev", "sink"])?;
        let s = String::from_utf8_lossy(&out.stdout);
        Ok(s.lines().filter_map(crate::tools::counter_packets).sum())
    }

    /// Frames the sink could not take: refused by its ring (d1's tx_dropped)
    /// or by the backlog of its CPU (softnet_stat): a sink that fell behind,
    /// not the director.
    pub fn sink_drops(&self) -> Result<u64> {
        let out = self
            .dir
            .exec(&["cat", "/sys/class/net/d1/statistics/tx_dropped"])?;
        let ring: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("reading d1's tx_dropped")?;
        Ok(ring + backlog_drops(GEN_CPU)?)
    }

    /// Fails unless every NAPI kthread of the topology still exists and
    /// runs only on its CPU (a director that recreated one would silently
    /// move work off the core being measured).
    pub fn check_pins(&self) -> Result<()> {
        for &(dev, pid, cpu) in &self.napi {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .with_context(|| format!("the NAPI thread of {dev} (pid {pid}) is gone"))?;
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(str::trim)
                .unwrap_or("");
            if list != cpu.to_string() {
                anyhow::bail!("the NAPI thread of {dev} runs on CPUs {list}, not {cpu}");
            }
        }
        Ok(())
    }

    /// The NAPI threads that work for the director (on its core).
    pub fn director_napi(&self) -> Vec<u32> {
        self.napi
            .iter()
            .filter(|n| n.2 == DIR_CPU)
            .map(|n| n.1)
            .collect()
    }

    /// A temp file of this run.
    pub fn tmp(&self, ext: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}.{ext}", self.prefix))
    }
}

/// Frames dropped because CPU `cpu`'s backlog was full (/proc/net/softnet_stat,
/// one line per CPU, the second column, hex).
fn backlog_drops(cpu: usize) -> Result<u64> {
    let s = std::fs::read_to_string("/proc/net/softnet_stat").context("reading softnet_stat")?;
    let line = s
        .lines()
        .nth(cpu)
        .with_context(|| format!("no CPU {cpu} in softnet_stat"))?;
    let col = line.split_whitespace().nth(1).unwrap_or("0");
    u64::from_str_radix(col, 16).with_context(|| format!("softnet_stat column {col:?}"))
}

/// Pins the calling thread (and so what it spawns) to `cpu`.
pub fn pin_self(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning the bench to CPU {cpu}"))
}
