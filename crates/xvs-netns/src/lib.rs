//! Network namespaces and veth pairs for xvs labs and tests.
//!
//! A [`Netns`] deletes its namespace (and kills what runs in it) when dropped, so
//! a test that panics still cleans up. Commands go through `ip`, and
//! [`Netns::run`] runs a closure on a thread that has entered the namespace, so
//! tests can use std sockets inside it.

#![forbid(unsafe_code)]

use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use thiserror::Error;

/// What went wrong while building or using a namespace.
#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("could not run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not enter namespace {name}: {reason}")]
    Enter { name: String, reason: String },
}

pub type Result<T> = std::result::Result<T, NetnsError>;

/// Runs a command on the host, returning its output, or an error naming the
/// command and carrying its stderr when it fails.
pub fn run(args: &[&str]) -> Result<Output> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A prefix unique to this process for test namespaces: `xvst-<pid>`.
///
/// The first call also deletes the `xvst-<pid>-*` namespaces of test
/// processes that no longer exist: one killed (SIGKILL, a machine restart)
/// never ran its namespaces' `Drop`.
pub fn test_prefix() -> String {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_orphans);
    format!("xvst-{}", std::process::id())
}

/// Deletes test namespaces whose process is gone (see [`test_prefix`]).
fn remove_orphans() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("xvst-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// True when running as root (namespace tests need it).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// For tests that need root (namespaces, XDP): fails the test when not
/// root, in CI or not. A skip would pass quietly: `cargo test` shows no
/// output of a passing test.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (namespaces, XDP): run the tests as root, as CI does"
    );
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Creates namespace `name`, deleting a leftover of the same name first, and
    /// brings its loopback up.
    pub fn new(name: &str) -> Result<Netns> {
        delete(name);
        run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            keep: false,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Wraps an existing namespace without owning it (not deleted on drop).
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            keep: true,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace in place when this value is dropped (labs that outlive
    /// the process that built them).
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.name.clone()
    }

    /// Runs a command inside the namespace; fails with its stderr when it fails.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a shell snippet inside the namespace.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.exec(&["sh", "-c", script])
    }

    /// Starts a command inside the namespace and returns the child.
    pub fn spawn(&self, args: &[&str], stdout: Stdio, stderr: Stdio) -> Result<Child> {
        let cmd = args.join(" ");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| NetnsError::Spawn { cmd, source })
    }

    /// Runs `f` on a new thread that has entered the namespace, and returns its result.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|e| NetnsError::Enter {
            name: self.name.clone(),
            reason: e.to_string(),
        })?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetnsError::Enter {
                        name: self.name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            delete(&self.name);
        }
    }
}

/// Kills every process in namespace `name` and deletes it; silent if absent.
pub fn delete(name: &str) {
    if !std::path::Path::new(&format!("/run/netns/{name}")).exists() {
        return;
    }
    if let Ok(out) = run(&["ip", "netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = run(&["kill", "-9", pid]);
        }
    }
    let _ = run(&["ip", "netns", "del", name]);
}

/// Names of existing namespaces that start with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(out) = run(&["ip", "netns", "list"]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Creates a veth pair `a`–`b`, moves each end into its namespace, and brings both up.
pub fn veth(a: &str, a_ns: &Netns, b: &str, b_ns: &Netns) -> Result<()> {
    run(&[
        "ip", "link", "add", a, "netns", &a_ns.name, "type", "veth", "peer", "name", b, "netns",
        &b_ns.name,
    ])?;
    a_ns.exec(&["ip", "link", "set", a, "up"])?;
    b_ns.exec(&["ip", "link", "set", b, "up"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A namespace of a test process that is gone is deleted; one of a live
    /// process (this one) is kept.
    #[test]
    fn orphaned_test_namespaces_are_removed() {
        require_root();
        // No process has this pid (above any pid_max).
        let dead = Netns::new("xvst-999999999-orphan").unwrap();
        std::mem::forget(dead);
        let ours = Netns::new(&format!("{}-kept", test_prefix())).unwrap();
        remove_orphans();
        let names = std::fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        assert!(
            !names.iter().any(|n| n == "xvst-999999999-orphan"),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n == ours.name()), "{names:?}");
    }

    use super::*;

    #[test]
    fn namespace_is_made_entered_and_removed() {
        require_root();
        let name = format!("{}-netns", test_prefix());
        {
            let a = Netns::new(&name).unwrap();
            let b = Netns::new(&format!("{name}b")).unwrap();
            veth("xa0", &a, "xb0", &b).unwrap();
            a.exec(&["ip", "addr", "add", "10.77.200.1/24", "dev", "xa0"])
                .unwrap();
            b.exec(&["ip", "addr", "add", "10.77.200.2/24", "dev", "xb0"])
                .unwrap();
            // A UDP datagram from a thread inside `a` reaches a socket inside `b`.
            let rx = b
                .run(|| std::net::UdpSocket::bind("10.77.200.2:7777").unwrap())
                .unwrap();
            a.run(|| {
                let s = std::net::UdpSocket::bind("10.77.200.1:0").unwrap();
                s.send_to(b"hi", "10.77.200.2:7777").unwrap();
            })
            .unwrap();
            rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 8];
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hi");
            assert_eq!(from.ip().to_string(), "10.77.200.1");
            assert_eq!(list(&name).len(), 2);
        }
        assert!(list(&name).is_empty(), "dropped namespaces are deleted");
    }
}
