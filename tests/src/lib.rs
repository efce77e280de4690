//! Helpers of the end-to-end tests: the built binaries, an xvsd running in a
//! namespace (killed on drop), and lab veths prepared the way XDP on veth needs.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use xvs_netns::Netns;

/// A binary of the workspace, built by `make test` before the tests run
/// (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first (make test does)",
        p.display()
    );
    p
}

/// True when the test can run (root); see [`xvs_netns::require_root`].
pub fn require_root() -> bool {
    xvs_netns::require_root()
}

/// An xvsd running inside a namespace; killed (SIGKILL) on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `xvsd --socket S args...` in `ns` and waits until its socket answers.
    pub fn start(ns: &Netns, tag: &str, args: &[&str]) -> Daemon {
        let socket = std::env::temp_dir().join(format!("{tag}.sock"));
        let log = std::env::temp_dir().join(format!("{tag}.log"));
        let _ = std::fs::remove_file(&socket);
        let xvsd = bin("xvsd");
        let mut full = vec![xvsd.to_str().unwrap(), "--socket", socket.to_str().unwrap()];
        full.extend_from_slice(args);
        let out = std::fs::File::create(&log).unwrap();
        let child = ns
            .spawn(&full, Stdio::null(), Stdio::from(out))
            .expect("spawn xvsd");
        let mut d = Daemon { child, socket, log };
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("xvsd exited ({st}):\n{}", d.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "xvsd did not come up:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A control client.
    pub fn client(&self) -> xvs_ctl::Client {
        xvs_ctl::Client::connect(&self.socket).expect("connect to xvsd")
    }

    /// Sends signal `sig` and waits for the exit.
    pub fn stop(&mut self, sig: &str) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Runs `f` until it returns true or `secs` pass.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
