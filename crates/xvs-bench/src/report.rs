//! Results of `xvs-bench run`: ratios with their intervals, the terminal
//! tables, a JSON file and an SVG plot under the results directory.

pub use crate::chart::Ratio;
use crate::chart::{color, panel, ratio, WIDTH};
use crate::stats::Ci;
use crate::trial::Search;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A flood's figures for one system.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Throughput {
    pub system: String,
    pub frame_bytes: usize,
    /// "1024" or "new".
    pub flows: String,
    pub no_drop_mpps: Ci,
    pub cycles_per_packet_at_load: Ci,
    /// The same counting only the director's own threads (NAPI, its
    /// process, ksoftirqd): robust to other work on the core.
    pub own_cycles_per_packet_at_load: Ci,
    /// The offered load of the cost runs.
    pub load_mpps: f64,
    /// What it delivered when overdriven (the search's warm-up).
    pub overdriven_mpps: Ci,
    /// Per round, for paired ratios.
    pub no_drop_runs: Vec<f64>,
    pub cycles_runs: Vec<f64>,
    pub own_cycles_runs: Vec<f64>,
    pub loss_at_load_runs: Vec<f64>,
    pub searches: Vec<Search>,
}

/// TCP figures for one system.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Tcp {
    pub system: String,
    pub conns_per_sec: Ci,
    /// Director core busy time per connection, µs.
    pub director_us_per_conn: Ci,
    /// The same counting only the director's own threads.
    pub own_us_per_conn: Ci,
    pub conn_p99_us: Ci,
    pub conn_errors: u64,
    pub bulk_gbps: Ci,
    /// Director core busy share during the bulk transfer.
    pub bulk_director_busy: Ci,
    pub conns_runs: Vec<f64>,
    pub us_per_conn_runs: Vec<f64>,
    pub own_us_per_conn_runs: Vec<f64>,
    pub bulk_runs: Vec<f64>,
}

/// Whether the machine was quiet, as measured before the run.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Quiet {
    /// Busy share of each core over 2 s before the bench started.
    pub background_busy: Vec<f64>,
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Every core under 5 % busy before the run.
    pub quiet: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Method {
    pub runs: usize,
    pub trial_secs: f64,
    pub load_secs: f64,
    pub loss_threshold: f64,
    pub resolution: f64,
    pub ci: String,
    /// Coverage of the intervals with this many runs.
    pub ci_coverage: f64,
    pub cycles: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub cpu_hz: f64,
    pub command: String,
    pub quiet: Quiet,
    pub method: Method,
    pub throughput: Vec<Throughput>,
    pub tcp: Vec<Tcp>,
    /// Absent from runs before the SYN-flood figure.
    #[serde(default)]
    pub flood: Vec<crate::floodfig::SynFlood>,
    pub ratios: Vec<Ratio>,
    pub wall_secs: f64,
}

/// Seconds since the epoch as (YYYY-MM-DD, HHMMSS), UTC.
fn civil(secs: u64) -> (String, String) {
    // Civil from days (Howard Hinnant's algorithm).
    let z = (secs / 86400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let s = secs % 86400;
    (
        format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d),
        format!("{:02}{:02}{:02}", s / 3600, s / 60 % 60, s % 60),
    )
}

/// Now, UTC, as YYYY-MM-DDTHHMMSSZ (also a file-name stem).
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (d, t) = civil(secs);
    format!("{d}T{t}Z")
}

/// A short description of the machine: host name, CPU model, core count.
pub fn machine() -> String {
    let host = hostname();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{host} ({model}, {cores} cores)")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn group_name(frame: usize, flows: &str) -> String {
    if flows == "new" {
        format!("{frame} B, new flows")
    } else {
        format!("{frame} B, {flows} flows")
    }
}

/// The ratios the tables show: every xvs system against nftables DNAT, its
/// ceiling and ip_forward on each flood, and against HAProxy and nftables
/// DNAT over TCP.
pub fn ratios(r: &Report) -> Vec<Ratio> {
    let mut out = Vec::new();
    for t in r.throughput.iter().filter(|t| t.system.starts_with("xvs")) {
        for base in ["nft-dnat", "ceiling", "ip-forward"] {
            let Some(b) = r
                .throughput
                .iter()
                .find(|b| b.system == base && b.frame_bytes == t.frame_bytes && b.flows == t.flows)
            else {
                continue;
            };
            let g = group_name(t.frame_bytes, &t.flows);
            out.push(ratio(
                "no-drop Mpps",
                &g,
                (&t.system, &t.no_drop_mpps, &t.no_drop_runs),
                (base, &b.no_drop_mpps, &b.no_drop_runs),
            ));
            let mut core = ratio(
                "cycles/packet at load",
                &g,
                (&t.system, &t.cycles_per_packet_at_load, &t.cycles_runs),
                (base, &b.cycles_per_packet_at_load, &b.cycles_runs),
            );
            if [t, b]
                .iter()
                .any(|x| core_busy_at_load(x, r.cpu_hz) > SATURATED)
            {
                core.text = "core saturated by other work: see own cycles".into();
            }
            out.push(core);
            out.push(ratio(
                "own cycles/packet",
                &g,
                (
                    &t.system,
                    &t.own_cycles_per_packet_at_load,
                    &t.own_cycles_runs,
                ),
                (base, &b.own_cycles_per_packet_at_load, &b.own_cycles_runs),
            ));
        }
    }
    for t in r.tcp.iter().filter(|t| t.system.starts_with("xvs")) {
        for base in ["haproxy", "nft-dnat"] {
            let Some(b) = r.tcp.iter().find(|b| b.system == base) else {
                continue;
            };
            out.push(ratio(
                "TCP conns/s",
                "TCP",
                (&t.system, &t.conns_per_sec, &t.conns_runs),
                (base, &b.conns_per_sec, &b.conns_runs),
            ));
            out.push(ratio(
                "director µs/conn",
                "TCP",
                (&t.system, &t.director_us_per_conn, &t.us_per_conn_runs),
                (base, &b.director_us_per_conn, &b.us_per_conn_runs),
            ));
            out.push(ratio(
                "own µs/conn",
                "TCP",
                (&t.system, &t.own_us_per_conn, &t.own_us_per_conn_runs),
                (base, &b.own_us_per_conn, &b.own_us_per_conn_runs),
            ));
            out.push(ratio(
                "bulk Gbps",
                "TCP",
                (&t.system, &t.bulk_gbps, &t.bulk_runs),
                (base, &b.bulk_gbps, &b.bulk_runs),
            ));
        }
    }
    out.extend(crate::floodfig::ratios(&r.flood));
    out
}

/// How busy the director's core was during the cost runs (from the cycles
/// per packet at the offered load, which was delivered).
pub fn core_busy_at_load(t: &Throughput, hz: f64) -> f64 {
    t.cycles_per_packet_at_load.median * t.load_mpps * 1e6 / hz
}

/// Above this the core's busy time at load is mostly someone else's (the
/// load is half of what every system sustains): its cycles/packet say
/// little, the own-threads figure still does.
pub const SATURATED: f64 = 0.9;

fn ci(c: &Ci, prec: usize) -> String {
    format!("{:.p$} [{:.p$}–{:.p$}]", c.median, c.lo, c.hi, p = prec)
}

/// The terminal tables.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "xvs-bench run — {} — {} — {} runs, median [{:.1} % interval]{}",
        r.date,
        r.machine,
        r.method.runs,
        r.method.ci_coverage * 100.0,
        if r.quiet.quiet {
            ""
        } else {
            " — MEASURED UNDER LOAD (machine busy)"
        }
    );
    if !r.throughput.is_empty() {
        let _ = writeln!(
            o,
            "\nUDP flood: no-drop rate (loss ≤ {} %, {} s trials) and director-core cycles/packet at a fixed load",
            r.method.loss_threshold * 100.0,
            r.method.trial_secs
        );
        let _ = writeln!(
            o,
            "{:<12} {:>5} {:>5} {:>26} {:>9} {:>24} {:>24}",
            "system",
            "bytes",
            "flows",
            "no-drop Mpps",
            "load Mpps",
            "cycles/packet at load",
            "own threads' cycles/pkt"
        );
        for t in &r.throughput {
            let saturated = core_busy_at_load(t, r.cpu_hz) > SATURATED;
            let _ = writeln!(
                o,
                "{:<12} {:>5} {:>5} {:>26} {:>9.3} {:>24}{} {:>24}",
                t.system,
                t.frame_bytes,
                t.flows,
                ci(&t.no_drop_mpps, 3),
                t.load_mpps,
                ci(&t.cycles_per_packet_at_load, 0),
                if saturated { "*" } else { " " },
                ci(&t.own_cycles_per_packet_at_load, 0)
            );
        }
        if r.throughput
            .iter()
            .any(|t| core_busy_at_load(t, r.cpu_hz) > SATURATED)
        {
            let _ = writeln!(
                o,
                "* the director's core was over {:.0} % busy at this load: other work ran there, so the core's cycles/packet mean little; see the own-threads figure",
                SATURATED * 100.0
            );
        }
    }
    if !r.tcp.is_empty() {
        let _ = writeln!(
            o,
            "\nTCP through the VIP: new connections (HTTP/1.0, one request each) and bulk (4 streams, 1500-byte MTU)"
        );
        let _ = writeln!(
            o,
            "{:<12} {:>24} {:>22} {:>22} {:>9} {:>22} {:>12}",
            "system",
            "conns/s",
            "director µs/conn",
            "own threads' µs/conn",
            "p99 µs",
            "bulk Gbps",
            "dir busy"
        );
        for t in &r.tcp {
            let _ = writeln!(
                o,
                "{:<12} {:>24} {:>22} {:>22} {:>9.0} {:>22} {:>11.0}%",
                t.system,
                ci(&t.conns_per_sec, 0),
                ci(&t.director_us_per_conn, 1),
                ci(&t.own_us_per_conn, 1),
                t.conn_p99_us.median,
                ci(&t.bulk_gbps, 2),
                t.bulk_director_busy.median * 100.0
            );
        }
    }
    o.push_str(&crate::floodfig::table(&r.flood));
    if !r.ratios.is_empty() {
        let _ = writeln!(
            o,
            "\nRatios (median of per-round ratios [interval]; \"no difference\" where the two systems' intervals overlap)"
        );
        for x in &r.ratios {
            let _ = writeln!(
                o,
                "{:<24} {:<18} {:>11} ÷ {:<11} {}",
                x.metric, x.group, x.num, x.den, x.text
            );
        }
    }
    o
}

/// The plots: no-drop Mpps and cycles/packet per flood, TCP conns/s and bulk
/// Gbps; bars are medians, whiskers the 95 % intervals.
pub fn svg(r: &Report) -> String {
    let mut body = String::new();
    let mut y = 40.0;
    let label = |t: &Throughput| {
        format!(
            "{} ({} B, {})",
            t.system,
            t.frame_bytes,
            if t.flows == "new" {
                "new flows".to_string()
            } else {
                format!("{} flows", t.flows)
            }
        )
    };
    if !r.throughput.is_empty() {
        let rows: Vec<_> = r
            .throughput
            .iter()
            .map(|t| (label(t), t.no_drop_mpps, color(&t.system)))
            .collect();
        y = panel(&mut body, y, "No-drop rate, Mpps (loss ≤ 0.1 %)", &rows, 3);
        let rows: Vec<_> = r
            .throughput
            .iter()
            .map(|t| {
                (
                    format!("{} at {:.2} Mpps", label(t), t.load_mpps),
                    t.cycles_per_packet_at_load,
                    color(&t.system),
                )
            })
            .collect();
        y = panel(
            &mut body,
            y,
            "Director core cycles per packet at a fixed load (lower is better)",
            &rows,
            0,
        );
        let rows: Vec<_> = r
            .throughput
            .iter()
            .map(|t| (label(t), t.own_cycles_per_packet_at_load, color(&t.system)))
            .collect();
        y = panel(
            &mut body,
            y,
            "The same, the director's own threads only (robust to other work on the core)",
            &rows,
            0,
        );
    }
    if !r.tcp.is_empty() {
        let rows: Vec<_> = r
            .tcp
            .iter()
            .map(|t| (t.system.clone(), t.conns_per_sec, color(&t.system)))
            .collect();
        y = panel(&mut body, y, "New TCP connections per second", &rows, 0);
        let rows: Vec<_> = r
            .tcp
            .iter()
            .map(|t| (t.system.clone(), t.bulk_gbps, color(&t.system)))
            .collect();
        y = panel(&mut body, y, "Bulk TCP, Gbps (1500-byte MTU)", &rows, 2);
    }
    y = crate::floodfig::svg(&r.flood, &mut body, y);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"16\" font-size=\"13\">xvs-bench run — {} — {}{}</text>\n\
         <text x=\"10\" y=\"32\" font-size=\"12\">bars: median of {} runs; whiskers: its {:.1} % interval</text>\n{body}</svg>\n",
        y + 10.0,
        r.date,
        r.machine,
        if r.quiet.quiet { "" } else { " — UNDER LOAD" },
        r.method.runs,
        r.method.ci_coverage * 100.0,
    )
}

/// Prints the tables and writes `<date>-<host>.json` and `.svg` under `dir`.
pub fn emit(r: &Report, dir: &Path) -> Result<PathBuf> {
    print!("{}", table(r));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = dir.join(format!("{}-{}", r.date, hostname()));
    let json = base.with_extension("json");
    std::fs::write(&json, serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(base.with_extension("svg"), svg(r))?;
    println!(
        "\nwrote {} and {}",
        json.display(),
        base.with_extension("svg").display()
    );
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_and_ratios_honest() {
        assert_eq!(
            civil(1_764_474_000),
            ("2025-11-30".to_string(), "034000".to_string())
        );
        assert!(now_utc().starts_with("20"));
        let a = Ci {
            median: 2.0,
            lo: 1.8,
            hi: 2.2,
        };
        let b = Ci {
            median: 1.0,
            lo: 0.9,
            hi: 1.1,
        };
        let r = ratio(
            "m",
            "g",
            ("a", &a, &[2.0, 2.2, 1.8]),
            ("b", &b, &[1.0, 1.1, 0.9]),
        );
        assert!(r.distinct);
        assert_eq!(r.text, "2.00× [2.00–2.00]");
        let c = Ci {
            median: 1.9,
            lo: 1.0,
            hi: 2.0,
        };
        let r = ratio("m", "g", ("a", &a, &[2.0]), ("c", &c, &[1.9]));
        assert_eq!(r.text, "no difference");
    }
}
