//! `xvs-bench run`'s SYN-flood figure: legitimate new TCP connections per
//! second through the VIP without a flood and while a SYN flood hits the same
//! VIP and port, for each NAT system (xvs NAT and FULLNAT, nftables DNAT), on
//! the topology and pinning of the other figures (`topo.rs`).
//!
//! Per round and system, on a fresh director (an empty table):
//! 1. the TCP figure's clients (connect, one HTTP/1.0 request, the answer,
//!    close; `probe::conn_rate`) for `--load-secs` without a flood;
//! 2. the generator on core 0 sends TCP SYNs to the VIP as fast as it goes,
//!    every one a new flow from 10.77.128.0/17 (flows continue across rounds,
//!    so none repeats); after a settling time the same clients run again for
//!    `--load-secs` while the director's table is sampled.
//!
//! The real servers answer the flood's SYNs (with SYN cookies once their
//! queues fill), as servers behind a director would; their SYN-ACKs go back
//! through the director to the generator's namespace, which drops them.
//! The table: xvsd's `xvs_conn_table_entries` from its metrics endpoint;
//! nftables's connection tracking count, emptied (`conntrack -F`) before each
//! of its rounds, since its entries outlive the nft table that made them.
//!
//! The clients' TSO is off for the figure, so that their packets reach the
//! director through the receive ring the flood fills, as on a NIC. With TSO
//! on, a veth hands a local TCP sender's packets to its peer's CPU backlog
//! instead (`veth_skb_is_eligible_for_gro`), a queue of their own that the
//! flood never fills: nftables would be measured with its legitimate traffic
//! beside the flood rather than in it. (xvs's native XDP program turns TSO
//! off on the peer by itself.)

use crate::gen::{Gen, GenSpec};
use crate::probe;
use crate::report::Ratio;
use crate::run::Report;
use crate::stats::{median_ci, Ci};
use crate::systems::{self, System, XVS_METRICS};
use crate::topo::{Topo, FLOOD_PORT, GEN_CPU, RS1, RS2, VIP};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// xvs's table in this figure: the size the TCP figure runs with.
const XVS_CONN_MAX: u32 = 1 << 20;
/// How often the table is sampled during the flood.
const SAMPLE: Duration = Duration::from_millis(200);

/// The systems the figure is for: those that NAT TCP to the real servers.
pub fn applies(sys: System) -> bool {
    matches!(sys, System::XvsNat | System::XvsFullnat | System::NftDnat)
}

/// One round of one system.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Round {
    /// Legitimate new connections per second, without and during the flood.
    pub without: f64,
    pub during: f64,
    /// Connect + request + answer, µs, 99th percentile.
    pub p99_us_without: f64,
    pub p99_us_during: f64,
    /// Connects or exchanges that failed (1 s timeouts).
    pub errors_without: u64,
    pub errors_during: u64,
    /// SYNs the generator sent, over how long, and their rate.
    pub sent: u64,
    pub flood_secs: f64,
    pub offered_mpps: f64,
    /// Entries in the table when the flood started and at its peak (None:
    /// the table could not be read).
    pub table_before: Option<u64>,
    pub table_peak: Option<u64>,
    /// New flows refused for want of room over the flood (xvs: drops with
    /// reason conn_table_full; conntrack: its `drop` counter).
    pub table_full_drops: Option<u64>,
    /// Entries evicted to make room (xvs: the drop_entry defence; conntrack:
    /// `early_drop`).
    pub table_evicted: Option<u64>,
    /// The table's size (xvs's conn_max; nf_conntrack_max).
    pub table_bound: Option<u64>,
    /// Frames the director's client-side interface (d0) dropped over the
    /// flood: its receive ring full, or for xvs also its AF_XDP queue.
    pub interface_dropped: Option<u64>,
}

impl Round {
    /// The share of the connection rate kept during the flood.
    fn kept(&self) -> f64 {
        if self.without > 0.0 {
            self.during / self.without
        } else {
            f64::NAN
        }
    }

    /// The share of the generator's frames the director's interface dropped.
    fn dropped_share(&self) -> Option<f64> {
        let d = self.interface_dropped?;
        (self.sent > 0).then(|| (d as f64 / self.sent as f64).min(1.0))
    }
}

/// One system's SYN-flood figures: medians of its rounds with their intervals.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SynFlood {
    pub system: String,
    pub conns_per_sec_without: Ci,
    pub conns_per_sec_during: Ci,
    /// during ÷ without: the median of the per-round ratios.
    pub kept: Ci,
    pub offered_mpps: Ci,
    pub p99_us_without: Ci,
    pub p99_us_during: Ci,
    /// Summed over the rounds.
    pub errors_without: u64,
    pub errors_during: u64,
    /// What the occupancy is: "xvs_conn_table_entries" or "nf_conntrack_count".
    pub table: String,
    /// The table's size (xvs's conn_max; nf_conntrack_max).
    pub table_bound: Option<u64>,
    pub table_peak: Option<Ci>,
    pub table_full_drops: Option<Ci>,
    pub table_evicted: Option<Ci>,
    /// Of the generator's frames, the share the director's interface dropped.
    pub interface_dropped_share: Option<Ci>,
    pub rounds: Vec<Round>,
}

fn opt_ci(v: impl Iterator<Item = Option<u64>>) -> Option<Ci> {
    let v: Vec<f64> = v.flatten().map(|x| x as f64).collect();
    (!v.is_empty()).then(|| median_ci(&v))
}

impl SynFlood {
    /// The figures of `rounds` (in round order) of `sys`.
    pub fn summarize(sys: &str, rounds: Vec<Round>) -> SynFlood {
        let col = |f: fn(&Round) -> f64| median_ci(&rounds.iter().map(f).collect::<Vec<_>>());
        SynFlood {
            system: sys.into(),
            conns_per_sec_without: col(|r| r.without),
            conns_per_sec_during: col(|r| r.during),
            kept: col(Round::kept),
            offered_mpps: col(|r| r.offered_mpps),
            p99_us_without: col(|r| r.p99_us_without),
            p99_us_during: col(|r| r.p99_us_during),
            errors_without: rounds.iter().map(|r| r.errors_without).sum(),
            errors_during: rounds.iter().map(|r| r.errors_during).sum(),
            table: if sys == System::NftDnat.name() {
                "nf_conntrack_count".into()
            } else {
                "xvs_conn_table_entries".into()
            },
            table_bound: rounds.iter().find_map(|r| r.table_bound),
            table_peak: opt_ci(rounds.iter().map(|r| r.table_peak)),
            table_full_drops: opt_ci(rounds.iter().map(|r| r.table_full_drops)),
            table_evicted: opt_ci(rounds.iter().map(|r| r.table_evicted)),
            interface_dropped_share: {
                let v: Vec<f64> = rounds.iter().filter_map(Round::dropped_share).collect();
                (!v.is_empty()).then(|| median_ci(&v))
            },
            rounds,
        }
    }

    fn runs(&self, f: fn(&Round) -> f64) -> Vec<f64> {
        self.rounds.iter().map(f).collect()
    }
}

/// Checks before the run what the figure needs.
pub fn preflight(systems: &[System]) -> Result<()> {
    if systems.contains(&System::NftDnat)
        && xvs_netns::run(&["sh", "-c", "command -v conntrack"]).is_err()
    {
        bail!("conntrack is not installed: `make bench` installs it (apt-get install conntrack); the SYN-flood figure empties nftables' connection table between rounds with it");
    }
    Ok(())
}

/// A director's table as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Table {
    entries: u64,
    bound: u64,
    full_drops: u64,
    evicted: u64,
}

/// The value of the series `series` (name with labels, as printed) in a
/// Prometheus text exposition.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Sums of the `drop` and `early_drop` columns of /proc/net/stat/nf_conntrack
/// (a header of names, then one line of hex counters per CPU).
fn conntrack_drops(stat: &str) -> Option<(u64, u64)> {
    let mut lines = stat.lines();
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = |n: &str| names.iter().position(|x| *x == n);
    let (d, e) = (col("drop")?, col("early_drop")?);
    let (mut drop, mut early) = (0u64, 0u64);
    for l in lines {
        let v: Vec<&str> = l.split_whitespace().collect();
        let hex = |i: usize| v.get(i).and_then(|x| u64::from_str_radix(x, 16).ok());
        drop += hex(d)?;
        early += hex(e)?;
    }
    Some((drop, early))
}

/// xvsd's table from its metrics endpoint; from inside the director's namespace.
fn read_xvs() -> Result<Table> {
    let addr: SocketAddr = XVS_METRICS.parse().context("metrics address")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to xvsd's metrics at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .context("reading xvsd's metrics")?;
    let m = |series: &str| {
        metric(&text, series).with_context(|| format!("no {series} in xvsd's metrics"))
    };
    Ok(Table {
        entries: m("xvs_conn_table_entries")?,
        bound: m("xvs_conn_table_capacity")?,
        full_drops: m("xvs_drops_total{reason=\"conn_table_full\"}")?,
        evicted: m("xvs_drop_entry_deleted_total")?,
    })
}

/// The kernel's connection tracking table of the calling thread's namespace
/// (/proc/sys/net and /proc/thread-self/net follow the thread's namespace;
/// /proc/net follows the process's).
fn read_conntrack() -> Result<Table> {
    let num = |f: &str| -> Result<u64> {
        let p = format!("/proc/sys/net/netfilter/{f}");
        std::fs::read_to_string(&p)
            .with_context(|| format!("reading {p}"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {p}"))
    };
    let p = "/proc/thread-self/net/stat/nf_conntrack";
    let stat = std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?;
    let (full_drops, evicted) = conntrack_drops(&stat).with_context(|| format!("parsing {p}"))?;
    Ok(Table {
        entries: num("nf_conntrack_count")?,
        bound: num("nf_conntrack_max")?,
        full_drops,
        evicted,
    })
}

/// Frames dropped on receive by interface `dev` of the calling thread's
/// namespace (the `drop` column of /proc/thread-self/net/dev).
fn rx_dropped(dev: &str) -> Result<u64> {
    let p = "/proc/thread-self/net/dev";
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?;
    dev_rx_dropped(&text, dev).with_context(|| format!("no {dev} in {p}"))
}

fn dev_rx_dropped(text: &str, dev: &str) -> Option<u64> {
    let (_, rest) = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim() == dev)?;
    // bytes packets errs drop ...
    rest.split_whitespace().nth(3)?.parse().ok()
}

fn read_table(t: &Topo, sys: System) -> Result<Table> {
    t.dir.run(|| {
        if sys == System::NftDnat {
            read_conntrack()
        } else {
            read_xvs()
        }
    })?
}

/// The flood: TCP SYNs to the VIP's flood port, a new flow each.
fn syn_spec(t: &Topo, first_flow: u64) -> GenSpec {
    GenSpec {
        src_mac: t.g0_mac,
        dst_mac: t.d0_mac,
        saddr: Ipv4Addr::new(10, 77, 128, 1),
        daddr: VIP.parse().expect("literal"),
        sport: 1024,
        dport: FLOOD_PORT,
        // 32000 × 60000 flows: none repeats within a run (as in trial.rs).
        src_addrs: 32000,
        src_ports: 60000,
        frame_len: 60,
        rate: 0,
        cpu: Some(GEN_CPU),
        proto: 6,
        tcp_flags: 0x02,
        budget: 0,
        first_flow,
    }
}

/// Time the flood runs before the clients start measuring: its onset is not
/// what the figure is about.
fn settle(secs: f64) -> f64 {
    (secs / 4.0).clamp(0.2, 1.0)
}

/// Expected seconds of one step (a director start, both measurements, the
/// settling and the drain), for the run's progress estimate.
pub fn step_secs(secs: f64) -> f64 {
    1.0 + 2.0 * secs + settle(secs) + 1.0
}

/// One round of `sys`: without the flood, then during it. `next_flow` is
/// where the flood's flows continue.
fn round(
    t: &Topo,
    sys: System,
    conn_threads: usize,
    secs: f64,
    next_flow: &mut u64,
) -> Result<Round> {
    if sys == System::NftDnat {
        t.dir
            .exec(&["conntrack", "-F"])
            .context("emptying the director's connection tracking table")?;
    }
    let _d = systems::start(t, sys, XVS_CONN_MAX)
        .with_context(|| format!("setting up {}", sys.label()))?;
    let to = SocketAddr::new(VIP.parse().expect("literal"), FLOOD_PORT);
    let without = probe::conn_rate(&t.gen, to, conn_threads, secs);

    let before = read_table(t, sys)
        .map_err(|e| eprintln!("          cannot read {}'s table: {e:#}", sys.name()))
        .ok();
    let dropped = || t.dir.run(|| rx_dropped("d0")).ok().and_then(|r| r.ok());
    let dropped0 = dropped();
    let spec = syn_spec(t, *next_flow);
    // The interface is resolved in the calling thread's namespace, and the
    // generator's thread inherits it (as in trial.rs).
    let g = t.gen.run(|| {
        let ifindex = xvs_xdp::sys::ifindex("g0").map_err(|e| anyhow::anyhow!("{e}"))?;
        Gen::start(ifindex, &spec)
    })??;
    let t0 = Instant::now();
    let sampling = AtomicBool::new(true);
    let (during, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            t.dir.run(|| {
                let mut v = Vec::new();
                while sampling.load(Ordering::Relaxed) {
                    // A read that fails under the flood (a scrape timing
                    // out) is a missing sample, not a failed round.
                    let r = if sys == System::NftDnat {
                        read_conntrack()
                    } else {
                        read_xvs()
                    };
                    v.extend(r.ok().map(|x| x.entries));
                    std::thread::sleep(SAMPLE);
                }
                v
            })
        });
        std::thread::sleep(Duration::from_secs_f64(settle(secs)));
        let during = probe::conn_rate(&t.gen, to, conn_threads, secs);
        sampling.store(false, Ordering::Relaxed);
        (during, sampler.join())
    });
    let sent = g.stop().context("stopping the SYN flood")?;
    let flood_secs = t0.elapsed().as_secs_f64();
    let interface_dropped = dropped0.zip(dropped()).map(|(a, b)| b.saturating_sub(a));
    *next_flow += sent;
    let samples = match samples {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => bail!("sampling the director's table: {e}"),
        Err(p) => std::panic::resume_unwind(p),
    };
    let after = read_table(t, sys)
        .map_err(|e| eprintln!("          cannot read {}'s table: {e:#}", sys.name()))
        .ok();
    let peak = samples
        .iter()
        .copied()
        .chain(after.map(|a| a.entries))
        .max();
    let delta = |f: fn(&Table) -> u64| before.zip(after).map(|(b, a)| f(&a).saturating_sub(f(&b)));
    Ok(Round {
        without: without.per_sec,
        during: during.per_sec,
        p99_us_without: without.p99_us,
        p99_us_during: during.p99_us,
        errors_without: without.errors,
        errors_during: during.errors,
        sent,
        flood_secs,
        offered_mpps: sent as f64 / flood_secs / 1e6,
        table_before: before.map(|b| b.entries),
        table_peak: peak,
        table_full_drops: delta(|x| x.full_drops),
        table_evicted: delta(|x| x.evicted),
        table_bound: after.or(before).map(|x| x.bound),
        interface_dropped,
    })
}

/// The figure for `systems` (those it applies to), `runs` rounds interleaved
/// across them; `step` is told of each step as it starts.
pub fn phase(
    t: &Topo,
    systems: &[System],
    runs: usize,
    secs: f64,
    conn_threads: usize,
    mut step: impl FnMut(&str),
) -> Result<Vec<SynFlood>> {
    // Restores the clients' TSO however the phase ends.
    struct Tso<'a>(&'a Topo);
    impl Drop for Tso<'_> {
        fn drop(&mut self) {
            let _ = self.0.gen.exec(&["ethtool", "-K", "g0", "tso", "on"]);
        }
    }
    if systems.is_empty() {
        return Ok(Vec::new());
    }
    t.gen
        .exec(&["ethtool", "-K", "g0", "tso", "off"])
        .context("turning the clients' TSO off")?;
    let _tso = Tso(t);
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<SocketAddr> = [RS1, RS2]
        .iter()
        .map(|a| SocketAddr::new(a.parse().expect("literal"), FLOOD_PORT))
        .collect();
    probe::http_server(&t.sink, &addrs, 4, stop.clone());
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); systems.len()];
    let mut next_flow = 0u64;
    for r in 0..runs {
        for (k, &sys) in systems.iter().enumerate() {
            step(&format!(
                "SYN flood {} conns/s without and during, round {}/{}",
                sys.name(),
                r + 1,
                runs
            ));
            let x = round(t, sys, conn_threads, secs, &mut next_flow)
                .with_context(|| format!("SYN-flood round of {}", sys.label()))?;
            eprintln!(
                "          {:.0} → {:.0} conns/s during {:.3} Mpps of SYNs, {} dropped at d0 ({:.0} %; {} / {} errors), table {} peak",
                x.without,
                x.during,
                x.offered_mpps,
                x.interface_dropped.map_or("-".into(), |d| d.to_string()),
                x.kept() * 100.0,
                x.errors_without,
                x.errors_during,
                x.table_peak.map_or("-".into(), |p| p.to_string())
            );
            rounds[k].push(x);
        }
    }
    stop.store(true, Ordering::Relaxed);
    Ok(systems
        .iter()
        .zip(rounds)
        .map(|(s, r)| SynFlood::summarize(s.name(), r))
        .collect())
}

/// xvs against nftables DNAT: connections per second during the flood, and
/// the share of the rate each kept.
pub fn ratios(r: &Report) -> Vec<Ratio> {
    let mut out = Vec::new();
    let Some(b) = r.flood.iter().find(|f| f.system == System::NftDnat.name()) else {
        return out;
    };
    for f in r.flood.iter().filter(|f| f.system.starts_with("xvs")) {
        out.push(crate::report::ratio(
            "conns/s during SYN flood",
            "SYN flood",
            (&f.system, &f.conns_per_sec_during, &f.runs(|x| x.during)),
            (&b.system, &b.conns_per_sec_during, &b.runs(|x| x.during)),
        ));
        out.push(crate::report::ratio(
            "share kept in SYN flood",
            "SYN flood",
            (&f.system, &f.kept, &f.runs(Round::kept)),
            (&b.system, &b.kept, &b.runs(Round::kept)),
        ));
    }
    out
}

fn ci(c: &Ci, prec: usize) -> String {
    format!("{:.p$} [{:.p$}–{:.p$}]", c.median, c.lo, c.hi, p = prec)
}

fn opt(c: &Option<Ci>) -> String {
    c.as_ref().map_or("-".into(), |c| ci(c, 0))
}

fn pct(c: &Option<Ci>) -> String {
    c.as_ref().map_or("-".into(), |c| {
        format!(
            "{:.0} % [{:.0}–{:.0}]",
            c.median * 100.0,
            c.lo * 100.0,
            c.hi * 100.0
        )
    })
}

fn bound(f: &SynFlood) -> String {
    f.table_bound.map_or("-".into(), |b| b.to_string())
}

/// The text report's table.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    if r.flood.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\nSYN flood: new TCP connections/s (HTTP/1.0, one request each) without and during a SYN flood at the generator's full rate"
    );
    let _ = writeln!(
        o,
        "{:<12} {:>20} {:>20} {:>18} {:>20} {:>16} {:>22} {:>9} {:>20} {:>20}",
        "system",
        "conns/s without",
        "conns/s during",
        "during ÷ without",
        "flood Mpps offered",
        "dropped at d0",
        "table peak",
        "bound",
        "full drops",
        "evicted"
    );
    for f in &r.flood {
        let _ = writeln!(
            o,
            "{:<12} {:>20} {:>20} {:>18} {:>20} {:>16} {:>22} {:>9} {:>20} {:>20}",
            f.system,
            ci(&f.conns_per_sec_without, 0),
            ci(&f.conns_per_sec_during, 0),
            ci(&f.kept, 2),
            ci(&f.offered_mpps, 3),
            pct(&f.interface_dropped_share),
            opt(&f.table_peak),
            bound(f),
            opt(&f.table_full_drops),
            opt(&f.table_evicted)
        );
    }
    o
}

/// The README section's part.
pub fn readme(r: &Report) -> String {
    let mut o = String::new();
    if r.flood.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\n**SYN flood** (port {FLOOD_PORT}; 32 clients, one HTTP/1.0 request per connection, as in the TCP figure): new connections per second without a flood and while the generator (core 0) sends TCP SYNs to the VIP's port as fast as it goes, every one a new flow (the clients' TSO off, so that their packets share the director's receive ring with the flood, as on a NIC); {:.1}-s windows, the second starting {:.2} s into the flood; a fresh director each round (xvs's table {XVS_CONN_MAX} entries). Offered: what the generator sent; dropped: the share of it the director's interface refused (its receive ring full; for xvs also its AF_XDP queue). Table: entries at the peak (sampled every {} ms; xvs: `xvs_conn_table_entries`, nftables: `nf_conntrack_count`), of its bound; new flows refused for want of room (xvs: `conn_table_full` drops, conntrack: `drop`) and entries evicted to make room (xvs: `drop_entry`, conntrack: `early_drop`).\n",
        r.method.load_secs,
        settle(r.method.load_secs),
        SAMPLE.as_millis()
    );
    o.push_str("| system | conns/s without | conns/s during | during ÷ without | flood Mpps offered | dropped at the director's interface | table peak / bound | refused | evicted |\n|---|---|---|---|---|---|---|---|---|\n");
    for f in &r.flood {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            f.system,
            ci(&f.conns_per_sec_without, 0),
            ci(&f.conns_per_sec_during, 0),
            ci(&f.kept, 2),
            ci(&f.offered_mpps, 3),
            pct(&f.interface_dropped_share),
            opt(&f.table_peak),
            bound(f),
            opt(&f.table_full_drops),
            opt(&f.table_evicted)
        );
    }
    o
}

/// The plot's panel: each system without and during the flood.
pub fn svg(r: &Report, body: &mut String, y: f64) -> f64 {
    if r.flood.is_empty() {
        return y;
    }
    let rows: Vec<_> = r
        .flood
        .iter()
        .flat_map(|f| {
            [
                (
                    format!("{} without a flood", f.system),
                    f.conns_per_sec_without,
                    crate::report::color(&f.system),
                ),
                (
                    format!("{} during a SYN flood", f.system),
                    f.conns_per_sec_during,
                    crate::report::color(&f.system),
                ),
            ]
        })
        .collect();
    crate::report::panel(
        body,
        y,
        "New TCP connections per second without and during a SYN flood",
        &rows,
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(without: f64, during: f64, peak: Option<u64>, bound: u64) -> Round {
        Round {
            table_bound: peak.map(|_| bound),
            without,
            during,
            offered_mpps: 0.5,
            table_peak: peak,
            table_full_drops: peak.map(|_| 10),
            table_evicted: peak.map(|_| 0),
            sent: 1000,
            interface_dropped: Some(without as u64 / 2),
            ..Round::default()
        }
    }

    /// A report with the flood figure only, as `xvs-bench run --only
    /// xvs-nat,nft-dnat,flood` writes it.
    fn report() -> Report {
        let flood = vec![
            SynFlood::summarize(
                "xvs-nat",
                vec![
                    round(1000.0, 500.0, Some(300_000), 1 << 20),
                    round(1200.0, 300.0, Some(400_000), 1 << 20),
                    round(800.0, 400.0, None, 1 << 20),
                ],
            ),
            SynFlood::summarize(
                "nft-dnat",
                vec![
                    round(1000.0, 100.0, Some(262_144), 262_144),
                    round(1000.0, 200.0, Some(262_144), 262_144),
                    round(1000.0, 100.0, Some(262_144), 262_144),
                ],
            ),
        ];
        let json = serde_json::json!({
            "date": "2026-12-01T000000Z",
            "machine": "vm (test, 2 cores)",
            "cpu_hz": 2.1e9,
            "command": "xvs-bench run --only xvs-nat,nft-dnat,flood --runs 3",
            "quiet": {"background_busy": [0.5, 0.6], "loadavg_start": "2", "loadavg_end": "3", "quiet": false},
            "method": {"runs": 3, "trial_secs": 2.0, "load_secs": 3.0, "loss_threshold": 0.001,
                       "resolution": 0.02, "ci": "x", "ci_coverage": 0.75, "cycles": "y"},
            "throughput": [], "tcp": [], "ratios": [], "wall_secs": 1.0,
            "flood": flood,
        });
        let mut r: Report = serde_json::from_value(json).unwrap();
        r.ratios = crate::report::ratios(&r);
        r
    }

    #[test]
    fn figures_are_medians_of_rounds_and_ratios_paired() {
        let r = report();
        let x = &r.flood[0];
        assert_eq!(x.conns_per_sec_without.median, 1000.0);
        assert_eq!(x.conns_per_sec_during.median, 400.0);
        // Per round: 0.5, 0.25, 0.5; the median and [min, max] of 3.
        assert_eq!(
            x.kept,
            Ci {
                median: 0.5,
                lo: 0.25,
                hi: 0.5
            }
        );
        // A round whose table could not be read is left out, not a zero.
        assert_eq!(x.table_peak.unwrap().median, 350_000.0);
        assert_eq!(x.table, "xvs_conn_table_entries");
        assert_eq!(r.flood[1].table, "nf_conntrack_count");
        // xvs ÷ nft: during 5, 1.5, 4 → 4; kept 5, 1.25, 5 → 5.
        let during = r
            .ratios
            .iter()
            .find(|x| x.metric == "conns/s during SYN flood")
            .unwrap();
        assert_eq!(
            (during.num.as_str(), during.den.as_str()),
            ("xvs-nat", "nft-dnat")
        );
        assert_eq!(during.ratio.unwrap().median, 4.0);
        assert!(during.distinct);
        let kept = r
            .ratios
            .iter()
            .find(|x| x.metric == "share kept in SYN flood")
            .unwrap();
        assert_eq!(kept.ratio.unwrap().median, 5.0);
    }

    #[test]
    fn json_report_and_readme_carry_the_figure() {
        let r = report();
        let v = serde_json::to_value(&r).unwrap();
        let f = &v["flood"][1];
        assert_eq!(f["system"], "nft-dnat");
        assert_eq!(f["table_bound"], 262_144);
        assert_eq!(f["conns_per_sec_during"]["median"], 100.0);
        assert_eq!(f["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(f["rounds"][1]["during"], 200.0);
        // Older results (no flood[]) still load, for `readme` and `spread`.
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("flood");
        let old: Report = serde_json::from_value(old).unwrap();
        assert!(old.flood.is_empty() && table(&old).is_empty() && readme(&old).is_empty());

        let text = crate::report::table(&r);
        assert!(text.contains("SYN flood: new TCP connections/s"), "{text}");
        let line = text.lines().find(|l| l.starts_with("nft-dnat")).unwrap();
        assert!(
            line.contains("1000 [1000–1000]") && line.contains("262144"),
            "{line}"
        );
        assert!(text.contains("conns/s during SYN flood"), "{text}");

        let md = crate::readme::section(&r, std::path::Path::new("bench/results/x.json"));
        assert!(
            md.contains("| xvs-nat | 1000 [800–1200] | 400 [300–500] | 0.50 [0.25–0.50] | 0.500 [0.500–0.500] | 50 % [40–60] | 350000 [300000–400000] / 1048576 | 10 [10–10] | 0 [0–0] |"),
            "{md}"
        );
        assert!(
            md.contains("| share kept in SYN flood | SYN flood | xvs-nat ÷ nft-dnat |"),
            "{md}"
        );
        let svg = crate::report::svg(&r);
        assert!(svg.contains("nft-dnat during a SYN flood"));
    }

    #[test]
    fn tables_are_read_from_metrics_and_conntrack_stats() {
        let m = "# HELP xvs_conn_table_entries Connections.\n# TYPE xvs_conn_table_entries gauge\nxvs_conn_table_entries 65536\nxvs_conn_table_capacity 1048576\nxvs_drops_total{reason=\"conn_table_full\"} 1.5e3\nxvs_drops_total{reason=\"no_service\"} 7\n";
        assert_eq!(metric(m, "xvs_conn_table_entries"), Some(65536));
        assert_eq!(
            metric(m, "xvs_drops_total{reason=\"conn_table_full\"}"),
            Some(1500)
        );
        assert_eq!(metric(m, "xvs_conn_table"), None);
        let s = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                 00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000000a 00000100 00000000  00000000 00000000 00000000 00000000\n\
                 00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000001 00000000  00000000 00000000 00000000 00000000\n";
        assert_eq!(conntrack_drops(s), Some((11, 257)));
        assert_eq!(conntrack_drops("entries drop\n"), None);
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n    d0: 1672568   29216    0 1126968    0     0          0         0     4200      70    0    0    0     0       0          0\n";
        assert_eq!(dev_rx_dropped(dev, "d0"), Some(1_126_968));
        assert_eq!(dev_rx_dropped(dev, "d1"), None);
    }
}
