//! Helpers of the end-to-end tests: the built binaries, an xvsd running in a
//! namespace (killed on drop), and lab veths prepared the way XDP on veth needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use xvs_netns::Netns;

pub mod raw;
pub mod traffic;

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

/// Fails the test when not root; see [`xvs_netns::require_root`].
pub fn require_root() {
    xvs_netns::require_root()
}

/// An xvsd running inside a namespace; killed (SIGKILL) on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Leave the socket file on drop (a test looking at what a killed xvsd
    /// left behind, or whose next xvsd uses the same path).
    pub keep_socket: bool,
}

impl Daemon {
    /// Starts `xvsd --socket S args...` in `ns` and waits until its socket answers.
    pub fn start(ns: &Netns, tag: &str, args: &[&str]) -> Daemon {
        let socket = std::env::temp_dir().join(format!("{tag}.sock"));
        let log = std::env::temp_dir().join(format!("{tag}.log"));
        let _ = std::fs::remove_file(&socket);
        Daemon::start_at(ns, &socket, &log, args)
    }

    /// [`Daemon::start`] with this socket path (whatever is there is left for
    /// xvsd to deal with) and log file.
    pub fn start_at(ns: &Netns, socket: &Path, log: &Path, args: &[&str]) -> Daemon {
        let (socket, log) = (socket.to_path_buf(), log.to_path_buf());
        let xvsd = bin("xvsd");
        let mut full = vec![xvsd.to_str().unwrap(), "--socket", socket.to_str().unwrap()];
        full.extend_from_slice(args);
        let out = std::fs::File::create(&log).unwrap();
        let child = ns
            .spawn(&full, Stdio::null(), Stdio::from(out))
            .expect("spawn xvsd");
        let mut d = Daemon {
            child,
            socket,
            log,
            keep_socket: false,
        };
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

    /// xvsd's pid (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (e.g. "-HUP") without waiting for anything.
    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {}", self.pid());
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
        if !self.keep_socket {
            let _ = std::fs::remove_file(&self.socket);
        }
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

/// Byte `i` of the deterministic stream the transfer tests send.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A TCP server in `ns` on `addr` that reads each connection to its end and
/// reports (bytes, whether they were exactly `expect` as sent by
/// [`send_stream`]); `expect` = None reports the bytes only.
pub fn stream_sink(
    ns: &Netns,
    addr: &str,
    expect: Option<Vec<u8>>,
) -> std::sync::mpsc::Receiver<(u64, bool)> {
    use std::io::Read;
    let l = ns
        .run(|| std::net::TcpListener::bind(addr))
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            let expect = expect.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let (mut n, mut ok) = (0u64, true);
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            for (j, b) in buf[..k].iter().enumerate() {
                                let i = n + j as u64;
                                let want = match &expect {
                                    Some(e) => e.get(i as usize).copied(),
                                    None => Some(pattern_byte(i)),
                                };
                                ok &= want == Some(*b);
                            }
                            n += k as u64;
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                if let Some(e) = &expect {
                    ok &= n == e.len() as u64;
                }
                let _ = tx.send((n, ok));
            });
        }
    });
    rx
}

/// Connects from `ns` to `to` and sends `data` (or `len` bytes of the
/// pattern when `data` is None), then closes.
pub fn send_stream(ns: &Netns, to: &str, data: Option<&[u8]>, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    let to: std::net::SocketAddr = to.parse().expect("socket address");
    ns.run(|| {
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        match data {
            Some(d) => s.write_all(d)?,
            None => {
                let mut buf = vec![0u8; 1 << 16];
                let mut sent = 0u64;
                while sent < len {
                    let k = (len - sent).min(buf.len() as u64) as usize;
                    for (j, b) in buf[..k].iter_mut().enumerate() {
                        *b = pattern_byte(sent + j as u64);
                    }
                    s.write_all(&buf[..k])?;
                    sent += k as u64;
                }
            }
        }
        s.shutdown(std::net::Shutdown::Write)
    })
    .expect("enter netns")
}
