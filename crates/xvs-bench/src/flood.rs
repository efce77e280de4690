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

use crate::floodfig::{settle, Round, SynFlood, SAMPLE, XVS_CONN_MAX};
use crate::gen::{Gen, GenSpec};
use crate::probe;
use crate::systems::{self, System, XVS_METRICS};
use crate::topo::{Topo, FLOOD_PORT, GEN_CPU, RS1, RS2, VIP};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The systems the figure is for: those that NAT TCP to the real servers.
pub fn applies(sys: System) -> bool {
    matches!(sys, System::XvsNat | System::XvsFullnat | System::NftDnat)
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

/// Expected seconds of one step (a director start, both measurements, the
/// settling and the drain), for the run's progress estimate.
pub fn step_secs(secs: f64) -> f64 {
    1.0 + 1.5 + 2.0 * secs + settle(secs) + 1.0
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
    probe::warm_up(&t.gen, to);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floodfig::{readme, table};
    use crate::report::Report;
    use crate::stats::Ci;

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
        assert!(
            old.flood.is_empty()
                && table(&old.flood).is_empty()
                && readme(&old.flood, old.method.load_secs).is_empty()
        );

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
