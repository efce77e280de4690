//! Results of `xvs-bench run`: a table with ratios to the kernel's nftables
//! DNAT, a JSON file and an SVG plot under the results directory.

use crate::run::Report;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
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
    format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d)
}

/// A short description of the machine: host name, CPU model, core count.
pub fn machine() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{host} ({model}, {cores} cores)")
}

fn ratio(x: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "-".into(),
    }
}

/// The terminal table.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "xvs-bench run — {} — {} — {} runs x {:.0} s, median (min–max)",
        r.date, r.machine, r.runs, r.secs_per_run
    );
    let _ = writeln!(
        o,
        "\n{:<14} {:>5} {:>5} {:>22} {:>8} {:>12} {:>7} {:>9}",
        "system", "bytes", "flows", "Mpps", "Gbps", "cycles/pkt", "loss", "vs nft"
    );
    for t in &r.throughput {
        let base = r
            .throughput
            .iter()
            .find(|b| {
                b.system == "nft-dnat" && b.frame_bytes == t.frame_bytes && b.flows == t.flows
            })
            .map(|b| b.mpps.median);
        let _ = writeln!(
            o,
            "{:<14} {:>5} {:>5} {:>7.3} ({:.3}–{:.3}) {:>8.2} {:>12.0} {:>6.1}% {:>9}",
            t.system,
            t.frame_bytes,
            t.flows,
            t.mpps.median,
            t.mpps.min,
            t.mpps.max,
            t.gbps.median,
            t.cycles_per_packet.median,
            t.loss.median * 100.0,
            ratio(t.mpps.median, base)
        );
    }
    if !r.conns.is_empty() {
        let base = r
            .conns
            .iter()
            .find(|c| c.system == "nft-dnat")
            .map(|c| c.conns_per_sec.median);
        let _ = writeln!(
            o,
            "\n{:<14} {:>28} {:>9}",
            "system", "new TCP conns/s", "vs nft"
        );
        for c in &r.conns {
            let _ = writeln!(
                o,
                "{:<14} {:>10.0} ({:.0}–{:.0}) {:>9}",
                c.system,
                c.conns_per_sec.median,
                c.conns_per_sec.min,
                c.conns_per_sec.max,
                ratio(c.conns_per_sec.median, base)
            );
        }
    }
    if !r.latency.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<14} {:>10} {:>9} {:>9} {:>9} {:>5}",
            "system", "load Mpps", "p50 µs", "p99 µs", "p99.9 µs", "lost"
        );
        for l in &r.latency {
            let _ = writeln!(
                o,
                "{:<14} {:>10.3} {:>9.1} {:>9.1} {:>9.1} {:>5}",
                l.system, l.load_mpps, l.p50_us, l.p99_us, l.p999_us, l.lost
            );
        }
    }
    o
}

/// A bar chart of Mpps per system (64 B, 1K flows and new flows) and latency
/// percentiles, as SVG.
pub fn svg(r: &Report) -> String {
    let rows: Vec<_> = r
        .throughput
        .iter()
        .filter(|t| t.frame_bytes == 64)
        .collect();
    let max = rows
        .iter()
        .map(|t| t.mpps.max)
        .fold(0.0f64, f64::max)
        .max(0.001);
    let (w, bar_h, left) = (760.0, 22.0, 210.0);
    let lat_h = 30.0 + r.latency.len() as f64 * 3.0 * 18.0;
    let h = 60.0 + rows.len() as f64 * (bar_h + 8.0) + lat_h + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"14\">Delivered Mpps, 64-byte frames (median, whisker min–max) — {} — {}</text>",
        r.date, r.machine
    );
    let scale = (w - left - 80.0) / max;
    for (i, t) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * (bar_h + 8.0);
        let color = if t.system.starts_with("xvs") {
            "#2b7bba"
        } else if t.system == "raw" {
            "#888"
        } else {
            "#d0702c"
        };
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.0}\">{} ({})</text>",
            y + 15.0,
            t.system,
            if t.flows == "new" {
                "new flows"
            } else {
                "1K flows"
            }
        );
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>",
            t.mpps.median * scale
        );
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"black\"/>",
            left + t.mpps.min * scale,
            left + t.mpps.max * scale,
            y + bar_h / 2.0,
            y + bar_h / 2.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.0}\">{:.3}</text>",
            left + t.mpps.max * scale + 6.0,
            y + 15.0,
            t.mpps.median
        );
    }
    let y0 = 60.0 + rows.len() as f64 * (bar_h + 8.0);
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"{y0:.0}\" font-size=\"14\">UDP round trip through the VIP at half load (µs): p50 / p99 / p99.9</text>"
    );
    let lmax = r
        .latency
        .iter()
        .map(|l| l.p999_us)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let lscale = (w - left - 80.0) / lmax;
    let mut y = y0 + 15.0;
    for l in &r.latency {
        for (name, v) in [("p50", l.p50_us), ("p99", l.p99_us), ("p99.9", l.p999_us)] {
            let _ = writeln!(
                s,
                "<text x=\"10\" y=\"{:.0}\">{} {name}</text><rect x=\"{left}\" y=\"{:.0}\" width=\"{:.1}\" height=\"12\" fill=\"#6a9f58\"/><text x=\"{:.1}\" y=\"{:.0}\">{v:.1}</text>",
                y + 11.0,
                l.system,
                y,
                v * lscale,
                left + v * lscale + 6.0,
                y + 11.0
            );
            y += 18.0;
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Prints the table and writes `<date>-<host>.json` and `.svg` under `dir`.
pub fn emit(r: &Report, dir: &Path) -> Result<()> {
    print!("{}", table(r));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let base = dir.join(format!("{}-{host}", r.date));
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(r)?,
    )?;
    std::fs::write(base.with_extension("svg"), svg(r))?;
    println!(
        "\nwrote {} and {}",
        base.with_extension("json").display(),
        base.with_extension("svg").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
