//! CPU time of one core, from /proc/stat, for cycles-per-packet figures.

use anyhow::{Context, Result};

/// Busy and total time of core `cpu` so far, in USER_HZ ticks (1/100 s).
pub fn core_times(cpu: usize) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The nominal clock of the CPU in Hz (from /proc/cpuinfo), for turning busy
/// time into cycles when no hardware counters are available (as in these VMs).
pub fn cpu_hz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|mhz| mhz * 1e6)
        .unwrap_or(2.0e9)
}

/// Busy fraction of a core between two readings.
pub fn busy_fraction(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1) as f64;
    if total == 0.0 {
        0.0
    } else {
        busy / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_core_zero() {
        let (b, t) = core_times(0).unwrap();
        assert!(t > 0 && b <= t);
        assert!(cpu_hz() > 1e8);
        assert_eq!(busy_fraction((10, 100), (60, 200)), 0.5);
    }
}
