//! The lab's processes: finding binaries, starting daemons detached from the
//! caller, waiting for them, and stopping them.

use crate::error::{LabError, Result};
use crate::plan::LabOptions;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the xvs binaries are: `opts.bin_dir`, else `$XVS_BIN_DIR`, else the
/// running executable's directory (its parent when that is cargo's `deps/`,
/// where test binaries live).
pub fn bin_dir(opts: &LabOptions) -> PathBuf {
    if let Some(d) = &opts.bin_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("XVS_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        return dir.parent().map(Path::to_path_buf).unwrap_or(dir);
    }
    dir
}

/// The path of binary `name` in the bin dir, or an error for `step` saying how to get it.
pub fn find_bin(opts: &LabOptions, name: &str, step: &str) -> Result<PathBuf> {
    let dir = bin_dir(opts);
    // Installed from the package, the daemon and xvsadm are in /usr/sbin
    // while xvs-lab is in /usr/bin.
    let sbin = (dir == Path::new("/usr/bin")).then(|| PathBuf::from("/usr/sbin"));
    for d in std::iter::once(&dir).chain(sbin.as_ref()) {
        let path = d.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(LabError::new(
        step,
        format!(
            "{name} not found in {} (build it with `cargo build --bins`, or set XVS_BIN_DIR to the directory that holds it)",
            dir.display()
        ),
    ))
}

/// The xvs-lab binary that runs the RS servers.
pub fn lab_bin(opts: &LabOptions, step: &str) -> Result<PathBuf> {
    if let Some(b) = &opts.lab_bin {
        return Ok(b.clone());
    }
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_name().is_some_and(|n| n == "xvs-lab") {
            return Ok(exe);
        }
    }
    find_bin(opts, "xvs-lab", step)
}

/// Starts `program args` inside namespace `ns`, in its own process group (so it
/// outlives the shell job that ran `xvs-lab up`), output appended to `log`.
pub fn spawn_in(
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    step: &str,
) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::new(step, format!("open {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| LabError::new(step, format!("open {}: {e}", log.display())))?;
    // `ip netns exec` execs the program, so the child's pid is the program's.
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .map_err(|e| {
            LabError::new(
                step,
                format!(
                    "ip netns exec {ns} {} {}: {e}",
                    program.display(),
                    args.join(" ")
                ),
            )
        })
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `ready` every 20 ms until it holds; fails when the child exits first
/// or after `limit`.
pub fn wait_ready(
    child: &mut Child,
    limit: Duration,
    log: &Path,
    step: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LabError::new(
                step,
                format!(
                    "exited ({status}) before it was ready; {}:\n{}",
                    log.display(),
                    log_tail(log, 10)
                ),
            ));
        }
        if Instant::now() > deadline {
            return Err(LabError::new(
                step,
                format!(
                    "not ready after {limit:?}; {}:\n{}",
                    log.display(),
                    log_tail(log, 10)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops our child: SIGTERM, then SIGKILL after `grace`; always reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// True while `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Stops processes that are not our children (a lab left by an earlier
/// `xvs-lab up`): SIGTERM, wait up to `grace`, then SIGKILL.
pub fn stop_pids(pids: &[i32], grace: Duration) {
    for &p in pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids.iter().filter(|&&p| alive(p)) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Waits (up to `limit`) until none of `pids` is alive.
pub fn wait_gone(pids: &[i32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !pids.iter().any(|&p| alive(p)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of the processes inside namespace `ns`.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    xvs_netns::run(&["ip", "netns", "pids", ns])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs the processes named in `dir`'s `*.pid` files whose command is
/// `comm` (a pid file outlives its process; the pid may be someone else's).
pub fn kill_pid_files(dir: &Path, comm: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "pid") {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let ours =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm);
        if ours && alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
