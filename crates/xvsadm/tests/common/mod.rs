//! A control-plane-only xvsd on a temporary socket, and xvsadm runs against it.
//!
//! The xvsd binary belongs to another package, so the first test builds it
//! with the same cargo and profile (cargo does not hold its build lock while
//! tests run) and starts it from the target directory next to xvsadm.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn xvsadm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xvsadm"))
}

/// Builds xvsd once (a no-op when it is up to date) and returns its path.
pub fn xvsd_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = xvsadm_bin().parent().expect("target dir").to_path_buf();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-q", "-p", "xvsd"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("running cargo build -p xvsd");
            assert!(st.success(), "cargo build -p xvsd failed");
            dir.join("xvsd")
        })
        .clone()
}

/// Output of one xvsadm run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A running xvsd, killed and cleaned up on drop.
pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
    pub sock: PathBuf,
}

pub fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "xvsadm-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_in(temp_dir(), &[])
    }

    /// Starts xvsd with `--config` a file holding `toml`.
    #[allow(dead_code)] // not every test file has a config
    pub fn start_with_config(toml: &str) -> Daemon {
        let dir = temp_dir();
        let cfg = dir.join("xvsd.toml");
        std::fs::write(&cfg, toml).expect("config file");
        Daemon::start_in(dir, &["--config", cfg.to_str().expect("utf-8 path")])
    }

    fn start_in(dir: PathBuf, args: &[&str]) -> Daemon {
        let sock = dir.join("xvsd.sock");
        let log = std::fs::File::create(dir.join("xvsd.log")).expect("log file");
        let child = Command::new(xvsd_bin())
            .arg("--socket")
            .arg(&sock)
            .args(["--conn-max", "4096"])
            .args(args)
            .env_remove("XVS_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting xvsd");
        let d = Daemon { child, dir, sock };
        // Readiness, not timing: wait until the socket answers (or give up).
        let start = Instant::now();
        while UnixStream::connect(&d.sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "xvsd did not come up: {}",
                std::fs::read_to_string(d.dir.join("xvsd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The daemon's process id.
    #[allow(dead_code)] // not every test file looks at the process
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs xvsadm with `args` (after the program name) against this daemon.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_in(args, "")
    }

    /// Same, with `input` on stdin.
    pub fn run_in(&self, args: &[&str], input: &str) -> Out {
        run_xvsadm(&self.sock, args, input)
    }

    /// Runs a command that must succeed silently.
    pub fn ok(&self, line: &str) {
        let args: Vec<&str> = line.split_whitespace().collect();
        let o = self.run(&args);
        assert_eq!(
            (o.code, o.stdout.as_str(), o.stderr.as_str()),
            (0, "", ""),
            "xvsadm {line}"
        );
    }
}

pub fn run_xvsadm(sock: &Path, args: &[&str], input: &str) -> Out {
    let mut child = Command::new(xvsadm_bin())
        .args(args)
        .env("XVS_SOCKET", sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting xvsadm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    let o = child.wait_with_output().expect("xvsadm output");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
