//! The Debian package, end to end on this machine: built by
//! `scripts/mkdeb.sh` from the debug binaries `make test` has just built (the
//! packaging is the same as `make deb`'s; only the profile of the binaries
//! differs, so no release build is needed here), installed with `dpkg -i`,
//! checked (versions, man pages, the unit, the ipvsadm alternative,
//! completions), removed (`dpkg -r`: the edited conffile stays) and purged
//! (`dpkg -P`: nothing named xvs or ipvsadm is left).
//!
//! It changes the machine (/usr/sbin, /etc, the alternatives), so: it holds a
//! machine-wide lock against another run of itself, refuses to touch a
//! machine that has ipvsadm or an xvs package it did not install, purges
//! what it installed even when a check fails, and bounds every command.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use xvs_e2e::{bin, require_root};

const LOCK: &str = "/run/lock/xvs-package-test.lock";
/// The pid of the run that installed the package, while it is installed.
const OWNER: &str = "/run/lock/xvs-package-test.owner";
/// Where a package, a conffile, an alternative or a page could be left.
const ROOTS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/etc",
    "/lib/systemd/system",
    "/usr/share/man",
    "/usr/share/bash-completion",
    "/usr/share/zsh",
    "/usr/share/doc",
    "/var/lib/dpkg/alternatives",
    "/var/lib/dpkg/info",
];

struct Run {
    code: i32,
    out: String,
    err: String,
}

/// Runs `args` under `timeout` (killed after `secs`).
fn run(secs: u64, args: &[&str]) -> Run {
    let o = Command::new("timeout")
        .args(["-k", "5", &secs.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs `args`, which must succeed; its stdout.
fn ok(secs: u64, args: &[&str]) -> String {
    let r = run(secs, args);
    assert_eq!(r.code, 0, "{args:?}: exit {}\n{}{}", r.code, r.out, r.err);
    r.out
}

/// dpkg with its lock waited for (another dpkg or apt on the machine), bounded.
fn dpkg(args: &[&str]) -> Run {
    let t0 = Instant::now();
    loop {
        let mut full = vec!["dpkg"];
        full.extend_from_slice(args);
        let r = run(180, &full);
        let locked = r.code != 0 && r.err.contains("lock");
        if !locked || t0.elapsed() > Duration::from_secs(120) {
            return r;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// dpkg's status of package `p`, or None when dpkg knows nothing of it.
fn status(p: &str) -> Option<String> {
    let r = run(30, &["dpkg-query", "-W", "-f=${Status}", p]);
    (r.code == 0 && !r.out.trim().is_empty()).then(|| r.out.trim().to_string())
}

/// Every path under [`ROOTS`] whose name says xvs or ipvsadm.
fn ours_on_disk() -> BTreeSet<PathBuf> {
    fn walk(d: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_lowercase();
            if name.contains("xvs") || name.contains("ipvsadm") {
                out.insert(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for r in ROOTS {
        walk(Path::new(r), &mut out);
    }
    out
}

fn pid_alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists()
}

/// Purges the package on drop: whatever failed, the machine is left as found.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if status("xvs").is_some() {
            let r = dpkg(&["-P", "xvs"]);
            if r.code != 0 {
                eprintln!("dpkg -P xvs failed: {}{}", r.out, r.err);
            }
        }
        let _ = std::fs::remove_file(OWNER);
    }
}

/// Takes the machine-wide lock (another run of this test may hold it for a
/// minute or two), bounded.
fn lock() -> File {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .expect("lock file");
    let t0 = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => return f,
            Err(_) if t0.elapsed() < Duration::from_secs(600) => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => panic!("{LOCK} held for 10 minutes by another package test: {e}"),
        }
    }
}

#[test]
fn deb_installs_works_removes_and_purges_cleanly() {
    require_root();
    let t0 = Instant::now();
    let _lock = lock();
    // A leftover of a run of this test that was killed: its owner is dead.
    if status("xvs").is_some() {
        let owner = std::fs::read_to_string(OWNER).unwrap_or_default();
        assert!(
            !owner.trim().is_empty() && !pid_alive(owner.trim()),
            "an xvs package this test did not install is on this machine ({}): \
             not touching it (dpkg -P xvs to let the test run)",
            status("xvs").unwrap_or_default()
        );
        drop(Installed);
    }
    assert!(
        status("ipvsadm").is_none_or(|s| !s.contains("ok installed"))
            && !Path::new("/usr/sbin/ipvsadm").exists()
            && !Path::new("/sbin/ipvsadm").exists(),
        "ipvsadm is on this machine: not installing an alternative over it"
    );
    let before = ours_on_disk();

    // Build.
    let out = std::env::temp_dir().join(format!("xvs-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let bin_dir = bin("xvsd").parent().unwrap().to_path_buf();
    bin("xvs-docgen");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mkdeb.sh");
    let deb = ok(
        300,
        &[
            script.to_str().unwrap(),
            bin_dir.to_str().unwrap(),
            out.to_str().unwrap(),
            "gzip",
        ],
    );
    let deb = deb.trim();
    let built = t0.elapsed();
    let version = ok(10, &[bin("xvsd").to_str().unwrap(), "--version"]);
    let version = version.trim().strip_prefix("xvsd ").expect("xvsd VERSION");
    let contents = ok(30, &["dpkg-deb", "-c", deb]);
    for path in [
        "./usr/sbin/xvsd",
        "./usr/sbin/xvsadm",
        "./usr/bin/xvs-lab",
        "./usr/bin/xvs-bench",
        "./etc/xvs/xvsd.toml",
        "./lib/systemd/system/xvsd.service",
        "./usr/share/doc/xvs/copyright",
        "./usr/share/doc/xvs/README.md.gz",
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.ends_with(path) || l.contains(&format!("{path} -> "))),
            "{path} not in the package:\n{contents}"
        );
    }

    // Install.
    std::fs::write(OWNER, std::process::id().to_string()).unwrap();
    let guard = Installed;
    let r = dpkg(&["-i", deb]);
    assert_eq!(r.code, 0, "dpkg -i: {}{}", r.out, r.err);
    assert_eq!(status("xvs").as_deref(), Some("install ok installed"));
    let installed = t0.elapsed();
    let files = ok(30, &["dpkg", "-L", "xvs"]);

    // Versions.
    assert_eq!(
        ok(10, &["xvsadm", "--version"]),
        "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
    );
    assert_eq!(
        ok(10, &["/usr/sbin/xvsd", "--version"]).trim(),
        format!("xvsd {version}")
    );
    assert!(ok(10, &["/usr/bin/xvs-lab", "--version"]).contains(version));

    // Man pages: found by name (ipvsadm's through the alternative), and each
    // renders without a warning.
    assert_eq!(
        ok(10, &["man", "-w", "xvsadm"]).trim(),
        "/usr/share/man/man8/xvsadm.8.gz"
    );
    for name in [
        "xvsd",
        "xvsd.toml",
        "xvs-lab",
        "xvs-bench",
        "ipvsadm",
        "ipvsadm-save",
    ] {
        ok(10, &["man", "-w", name]);
    }
    let pages: Vec<&str> = files
        .lines()
        .filter(|l| l.starts_with("/usr/share/man/man"))
        .filter(|l| l.ends_with(".gz"))
        .collect();
    assert_eq!(pages.len(), 7, "{pages:?}");
    for page in pages {
        let r = Command::new("man")
            .args(["--warnings", "-l", page])
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success() && err.is_empty(), "man -l {page}: {err}");
        assert!(r.stdout.len() > 300, "{page} is nearly empty");
    }

    // The unit: as in the tree, verified by systemd, hardened.
    let unit = "/lib/systemd/system/xvsd.service";
    assert_eq!(
        std::fs::read_to_string(unit).unwrap(),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/xvsd.service")
        )
        .unwrap()
    );
    let r = run(60, &["systemd-analyze", "verify", unit]);
    assert!(
        r.code == 0 && r.err.trim().is_empty(),
        "systemd-analyze verify: {}{}",
        r.out,
        r.err
    );
    let r = run(60, &["systemd-analyze", "security", "--offline=yes", unit]);
    let exposure: f32 = r
        .out
        .lines()
        .chain(r.err.lines())
        .find_map(|l| l.split("Overall exposure level for xvsd.service: ").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {}{}", r.out, r.err));
    assert!(
        exposure <= 4.5,
        "exposure {exposure}: the unit lost its hardening"
    );

    // The alternative: ipvsadm is xvsadm, speaking as ipvsadm.
    let q = ok(10, &["update-alternatives", "--query", "ipvsadm"]);
    assert!(q.contains("Value: /usr/sbin/xvsadm"), "{q}");
    for (link, target) in [
        ("/usr/sbin/ipvsadm", "/usr/sbin/xvsadm"),
        ("/usr/sbin/ipvsadm-save", "/usr/sbin/xvsadm"),
        ("/usr/sbin/ipvsadm-restore", "/usr/sbin/xvsadm"),
        (
            "/usr/share/man/man8/ipvsadm.8.gz",
            "/usr/share/man/man8/xvsadm.8.gz",
        ),
    ] {
        assert_eq!(
            std::fs::canonicalize(link).unwrap(),
            Path::new(target),
            "{link}"
        );
    }
    assert!(ok(10, &["ipvsadm", "-h"]).contains("Usage:\n  ipvsadm -A|E virtual-service"));
    let r = run(10, &["ipvsadm-save", "-n"]);
    assert!(
        r.code == 2
            && r.err
                .starts_with("ipvsadm: cannot connect to xvsd at /run/xvs/xvsd.sock"),
        "{}",
        r.err
    );

    // The conffile, and completions that load in bash.
    let conf = ok(10, &["dpkg-query", "-W", "-f=${Conffiles}", "xvs"]);
    assert!(conf.contains("/etc/xvs/xvsd.toml"), "{conf}");
    let c = ok(
        10,
        &[
            "bash",
            "-c",
            "source /usr/share/bash-completion/completions/xvsadm; \
             COMP_WORDS=(xvsadm --sched); COMP_CWORD=1; _xvsadm; echo \"${COMPREPLY[*]}\"; \
             COMP_WORDS=(xvsadm -s ''); COMP_CWORD=2; _xvsadm; echo \"${COMPREPLY[*]}\"; \
             source /usr/share/bash-completion/completions/xvsd; complete -p xvsd",
        ],
    );
    let lines: Vec<&str> = c.lines().collect();
    assert_eq!(lines[0], "--scheduler --sched-flags", "{c}");
    assert!(lines[1].starts_with("rr wrr lc wlc"), "{c}");
    assert!(
        lines[2].starts_with("complete ") && lines[2].ends_with("-F _xvsd xvsd"),
        "{c}"
    );

    // Remove: the edited conffile stays, the rest goes.
    let mut edited = std::fs::read_to_string("/etc/xvs/xvsd.toml").unwrap();
    edited.push_str("# edited by the package test\n");
    std::fs::write("/etc/xvs/xvsd.toml", &edited).unwrap();
    let r = dpkg(&["-r", "xvs"]);
    assert_eq!(r.code, 0, "dpkg -r: {}{}", r.out, r.err);
    assert_eq!(status("xvs").as_deref(), Some("deinstall ok config-files"));
    assert_eq!(
        std::fs::read_to_string("/etc/xvs/xvsd.toml").unwrap(),
        edited
    );
    for f in files.lines().filter(|f| *f != "/etc/xvs/xvsd.toml") {
        let p = Path::new(f);
        assert!(
            p.is_dir() || !p.exists() && p.symlink_metadata().is_err(),
            "{f} left by dpkg -r"
        );
    }
    assert!(run(10, &["update-alternatives", "--query", "ipvsadm"]).code != 0);
    assert!(Path::new("/usr/sbin/ipvsadm").symlink_metadata().is_err());

    // Purge: nothing left.
    let r = dpkg(&["-P", "xvs"]);
    assert_eq!(r.code, 0, "dpkg -P: {}{}", r.out, r.err);
    assert_eq!(status("xvs"), None);
    let after = ours_on_disk();
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&PathBuf>::new(),
        "left behind by dpkg -P"
    );
    drop(guard);
    let _ = std::fs::remove_dir_all(&out);
    eprintln!(
        "package test: built in {:.1}s, installed at {:.1}s, done in {:.1}s",
        built.as_secs_f32(),
        installed.as_secs_f32(),
        t0.elapsed().as_secs_f32()
    );
}
