//! CPU time of one core, from /proc/stat, for cycles-per-packet figures.
//!
//! These VMs have no PMU (perf reports cycles as "not supported"), so cycles
//! are derived: busy time of the core × its nominal clock (the TSC rate that
//! /proc/cpuinfo reports). Busy time is everything the core ran (user, nice,
//! system, irq, softirq; guest time is inside user), and not idle, iowait or
//! steal (time the hypervisor gave to someone else).

use anyhow::{Context, Result};

/// Kernel ticks per second in /proc/stat (USER_HZ, 100 on every Linux ABI
/// this runs on).
const USER_HZ: f64 = 100.0;

/// Seconds core `cpu` has been busy since boot.
pub fn busy_secs(cpu: usize) -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    busy_from(&stat, cpu)
}

fn busy_from(stat: &str, cpu: usize) -> Result<f64> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = f(0) + f(1) + f(2) + f(5) + f(6);
    Ok(busy as f64 / USER_HZ)
}

/// The nominal clock of the CPU in Hz (from /proc/cpuinfo).
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

/// CPU time in seconds of the processes `pids`, all their threads, from
/// schedstat (nanoseconds, unlike /proc/stat's 10 ms ticks). The director's
/// own work — its NAPI threads, its process, ksoftirqd — measured this way is
/// not inflated by other work sharing the core, so it stays meaningful on a
/// busy machine, where the core's total busy time is not.
pub fn threads_secs(pids: &[u32]) -> f64 {
    let mut ns = 0u64;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 / 1e9
}

/// Seconds of irq and softirq time of core `cpu` (tick-sampled).
fn irq_secs(stat: &str, cpu: usize) -> Result<f64> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Ok((v.get(5).copied().unwrap_or(0) + v.get(6).copied().unwrap_or(0)) as f64 / USER_HZ)
}

/// The director's own work on core `cpu`: its threads' CPU time plus the
/// core's irq and softirq time. Softirqs (backlog receive after RPS, timers)
/// run in whatever task the core was running, so they are taken from the
/// core's figures, assumed to be the director's: the other work on a busy
/// machine (compilers) takes few. Without IRQ_TIME_ACCOUNTING a softirq that
/// interrupted one of the threads counts twice: an upper bound on that part.
pub fn own_secs(pids: &[u32], cpu: usize) -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(threads_secs(pids) + irq_secs(&stat, cpu)?)
}

/// The pid of the softirq thread of `cpu`.
pub fn ksoftirqd(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim_end() == want).then_some(pid)
    })
}

/// How busy each core is with nothing of the bench running, over `secs`:
/// whether the machine is quiet enough for reportable figures.
pub fn background_busy(secs: f64) -> Result<Vec<f64>> {
    // Every CPU of the machine, not only those this thread may use.
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let n = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let before: Vec<f64> = (0..n).map(busy_secs).collect::<Result<_>>()?;
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let after: Vec<f64> = (0..n).map(busy_secs).collect::<Result<_>>()?;
    Ok(before
        .iter()
        .zip(&after)
        .map(|(b, a)| ((a - b) / secs).clamp(0.0, 1.0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_excludes_idle_iowait_and_steal() {
        let stat = "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 100 10 50 1000 7 3 20 400 0 0\n";
        assert_eq!(busy_from(stat, 0).unwrap(), 1.83);
        assert!(busy_from(stat, 1).is_err());
        assert!(busy_secs(0).unwrap() > 0.0);
        assert!(threads_secs(&[std::process::id()]) > 0.0);
        assert!((irq_secs(stat, 0).unwrap() - 0.23).abs() < 1e-9);
        assert!(ksoftirqd(0).is_some());
        assert!(cpu_hz() > 1e8);
    }
}
