//! What the fault, flood and soak tests do and look at: requests and held
//! keep-alive connections through a VIP, a UDP flow, a background load that
//! records every answer, and an xvsd's metrics, memory and BPF objects.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xvs_lab::{Lab, LabOptions, Mode};
use xvs_netns::Netns;
pub use xvs_xdp::bpf::sys::ObjectKind;

/// A NAT lab of `rs` real servers under this test process's prefix, without
/// xvsd: each test starts its own with the options it needs.
pub fn nat_lab(tag: &str, rs: usize) -> Lab {
    let mut o = LabOptions::for_test(Mode::Nat);
    o.prefix = format!("{}-{tag}", xvs_netns::test_prefix());
    o.rs = rs;
    o.start_director = false;
    o.bin_dir = Some(crate::bin("xvsd").parent().unwrap().to_path_buf());
    Lab::up(o).unwrap_or_else(|e| panic!("lab {tag}: {e}"))
}

/// The lab's rules in `xvsadm -S` form: rr over every RS, NAT; the TCP
/// service, and a UDP one on the same VIP and port when `udp`.
pub fn nat_rules(lab: &Lab, udp: bool) -> String {
    let p = lab.plan();
    let protos: &[&str] = if udp { &["-t", "-u"] } else { &["-t"] };
    let mut out = String::new();
    for proto in protos {
        out += &format!("-A {proto} {}:80 -s rr\n", p.vip4);
        for r in &p.rs {
            out += &format!("-a {proto} {}:80 -r {}:80 -m -w 1\n", p.vip4, r.addr4);
        }
    }
    out
}

/// The lab's IPv4 VIP and port.
pub fn vip(lab: &Lab) -> SocketAddr {
    (lab.plan().vip4, xvs_lab::PORT).into()
}

/// A file of this test process in the temp dir, holding `text`.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("{}-{name}", xvs_netns::test_prefix()));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// Runs a shell snippet in `ns`; its stdout, or a panic with its stderr.
pub fn sh(ns: &Netns, script: &str) -> String {
    let out = ns
        .sh(script)
        .unwrap_or_else(|e| panic!("in {}: {script}: {e}", ns.name()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Client, director and real-server namespaces (`{prefix}-c`, `-d`, `-r`)
/// in a line: c0—d0 on 10.77.`net`.0/24 (client .2, director .1) and d1—r0
/// on 10.77.`net+1`.0/24 (director .1), the client routing the second net via
/// the director, which forwards. VIPs and real-server addresses are the
/// caller's.
pub struct Line {
    pub c: Netns,
    pub d: Netns,
    pub r: Netns,
}

impl Line {
    pub fn new(prefix: &str, net: u8) -> Line {
        let c = Netns::new(&format!("{prefix}-c")).unwrap();
        let d = Netns::new(&format!("{prefix}-d")).unwrap();
        let r = Netns::new(&format!("{prefix}-r")).unwrap();
        xvs_netns::veth("c0", &c, "d0", &d).unwrap();
        xvs_netns::veth("d1", &d, "r0", &r).unwrap();
        let n2 = net + 1;
        sh(
            &c,
            &format!("ip addr add 10.77.{net}.2/24 dev c0 && ip route add 10.77.{n2}.0/24 via 10.77.{net}.1"),
        );
        sh(
            &d,
            &format!(
                "ip addr add 10.77.{net}.1/24 dev d0 && ip addr add 10.77.{n2}.1/24 dev d1 && \
                 sysctl -qw net.ipv4.ip_forward=1"
            ),
        );
        Line { c, d, r }
    }
}

/// `xvsadm args` against the xvsd at `socket`.
pub fn xvsadm(socket: &Path, args: &[&str]) -> Output {
    Command::new(crate::bin("xvsadm"))
        .env("XVS_SOCKET", socket)
        .args(args)
        .output()
        .expect("run xvsadm")
}

/// `xvsadm args`, which must succeed: its stdout.
pub fn xvsadm_ok(socket: &Path, args: &[&str]) -> String {
    let out = xvsadm(socket, args);
    assert!(
        out.status.success(),
        "xvsadm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads one HTTP/1.1 answer of the lab's servers: the body, trimmed (the
/// RS's name for `GET /`).
fn read_answer(r: &mut impl BufRead) -> io::Result<String> {
    let mut status = String::new();
    if r.read_line(&mut status)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before an answer",
        ));
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("answer {:?}", status.trim_end()),
        ));
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// `GET /` on a new connection to `to`, from the calling thread's namespace:
/// connected within `connect`, answered within 3 s.
fn get_here(to: SocketAddr, connect: Duration) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, connect)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")?;
    read_answer(&mut BufReader::new(s))
}

/// `GET /` on a new connection from `ns` (see [`get_here`]): the RS's name.
pub fn http_get(ns: &Netns, to: SocketAddr, connect: Duration) -> io::Result<String> {
    ns.run(|| get_here(to, connect)).expect("enter netns")
}

/// New connections one after another from `ns` to `to` (each `GET /`,
/// connected within 3 s: a SYN lost once or twice is sent again, as a
/// client would) until `stop`: (answered, attempted, seconds taken).
pub fn connect_loop(ns: &Netns, to: SocketAddr, stop: &AtomicBool) -> (u64, u64, f64) {
    ns.run(|| {
        let t0 = Instant::now();
        let (mut ok, mut n) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            if get_here(to, Duration::from_secs(3)).is_ok() {
                ok += 1;
            }
        }
        (ok, n, t0.elapsed().as_secs_f64())
    })
    .expect("enter netns")
}

/// A keep-alive HTTP connection through the VIP: opened before a fault, asked
/// again during and after it. Its RS is the one that answered first.
pub struct Held {
    r: BufReader<TcpStream>,
    w: TcpStream,
    pub server: String,
}

impl Held {
    /// Connects from `ns` and makes a first request.
    pub fn open(ns: &Netns, to: SocketAddr) -> io::Result<Held> {
        let s = ns
            .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))
            .expect("enter netns")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut h = Held {
            r: BufReader::new(s.try_clone()?),
            w: s,
            server: String::new(),
        };
        h.server = h.get()?;
        Ok(h)
    }

    /// Opens connections until one is served by `server` (rr gives each RS
    /// its turn); the others are closed.
    pub fn open_to(ns: &Netns, to: SocketAddr, server: &str) -> Held {
        for _ in 0..16 {
            let h = Held::open(ns, to).expect("open a held connection");
            if h.server == server {
                return h;
            }
        }
        panic!("no connection through {to} was served by {server}");
    }

    /// One more request on the connection: the RS's name.
    pub fn get(&mut self) -> io::Result<String> {
        self.w.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        read_answer(&mut self.r)
    }

    /// How long an answer may take.
    pub fn set_timeout(&self, t: Duration) {
        let _ = self.w.set_read_timeout(Some(t));
    }
}

/// One UDP flow (one source port) through the VIP: each datagram is answered
/// with the RS's name.
pub struct UdpFlow {
    s: UdpSocket,
}

impl UdpFlow {
    pub fn open(ns: &Netns, to: SocketAddr) -> io::Result<UdpFlow> {
        ns.run(|| UdpFlow::open_here(to)).expect("enter netns")
    }

    fn open_here(to: SocketAddr) -> io::Result<UdpFlow> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(UdpFlow { s })
    }

    /// One datagram and its answer (within 500 ms).
    pub fn ask(&self) -> io::Result<String> {
        self.s.send(b"ping")?;
        let mut b = [0u8; 256];
        let n = self.s.recv(&mut b)?;
        Ok(String::from_utf8_lossy(&b[..n]).trim().to_string())
    }
}

/// One answer (or failure) of a [`Load`].
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was asked, from the load's start.
    pub at: Duration,
    /// How long the answer (or the failure) took.
    pub took: Duration,
    pub tcp: bool,
    /// The RS's name, or what went wrong.
    pub result: Result<String, String>,
}

/// Background traffic through a VIP that records every answer: a stream of
/// new TCP connections (one request each) and, optionally, one UDP flow.
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
    pub t0: Instant,
}

impl Load {
    /// A request every `every` on each stream, from `ns` to `to`. A new
    /// connection must connect within 2 s: a SYN lost once is sent again
    /// after 1 s, as a client would.
    pub fn start(ns: &Netns, to: SocketAddr, udp: bool, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let mut threads = Vec::new();
        for tcp in [true, false] {
            if !tcp && !udp {
                continue;
            }
            let (stop, samples, name) = (stop.clone(), samples.clone(), ns.name().to_string());
            threads.push(std::thread::spawn(move || {
                let _ = Netns::existing(&name).run(|| {
                    let flow = if tcp {
                        None
                    } else {
                        Some(UdpFlow::open_here(to).expect("UDP socket"))
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = match &flow {
                            None => get_here(to, Duration::from_secs(2)),
                            Some(f) => f.ask(),
                        };
                        samples.lock().unwrap().push(Sample {
                            at: t - t0,
                            took: t.elapsed(),
                            tcp,
                            result: r.map_err(|e| e.to_string()),
                        });
                        std::thread::sleep(every.saturating_sub(t.elapsed()));
                    }
                });
            }));
        }
        Load {
            stop,
            samples,
            threads,
            t0,
        }
    }

    /// What was recorded so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Stops the load: everything it recorded.
    pub fn stop(mut self) -> Vec<Sample> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Makes first TCP requests and UDP exchanges from `ns` through `to`, each
/// given 3 s, four of each so that rr reaches every RS of the lab. The first
/// packet xvs sends to a host the director has not talked to yet (a client,
/// an RS) can be dropped (`no_neighbour`: the MAC the kernel learns or
/// resolves a moment later is not in xvs's mirror of the neighbour table
/// yet), which costs a TCP connection a SYN retransmission (1 s) and a UDP
/// flow a datagram; tests that count failures start after this.
pub fn warm_up(ns: &Netns, to: SocketAddr, udp: bool) {
    for _ in 0..4 {
        http_get(ns, to, Duration::from_secs(3)).expect("first requests through the VIP");
        if udp {
            let f = UdpFlow::open(ns, to).expect("UDP socket");
            assert!(
                (0..6).any(|_| f.ask().is_ok()),
                "no UDP answer through {to}"
            );
        }
    }
}

/// The failures among `samples` asked in `[from, to)`.
pub fn failures(samples: &[Sample], from: Duration, to: Duration) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.at >= from && s.at < to && s.result.is_err())
        .collect()
}

/// `GET /metrics` from the endpoint at `addr` inside `ns`.
pub fn scrape(ns: &Netns, addr: &str) -> io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("metrics address");
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut b = String::new();
        s.read_to_string(&mut b)?;
        Ok(b)
    })
    .expect("enter netns")
}

/// The value of series `name` in a scrape (`xvs_conn_table_entries`, or one
/// with labels: `xvs_drops_total{reason="conn_table_full"}`); a name without
/// labels sums every series of that metric. 0 when absent.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            *series == name
                || (!name.contains('{')
                    && series.starts_with(name)
                    && series[name.len()..].starts_with('{'))
        })
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A field of /proc/PID/status in kB (0 when absent).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` in kB: VmRSS, plus hugetlbfs pages, which VmRSS
/// leaves out (the connection table may sit on huge pages).
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:") + status_kb(pid, "HugetlbPages:")
}

/// CPU time `pid` used so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// The BPF objects `pid` holds open, by kernel-wide id (from
/// /proc/PID/fdinfo: a link's fdinfo names its program too).
pub fn bpf_objects(pid: u32) -> Vec<(ObjectKind, u32)> {
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        for l in info.lines() {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let kind = match k.trim() {
                "prog_id" => ObjectKind::Prog,
                "map_id" => ObjectKind::Map,
                "link_id" => ObjectKind::Link,
                _ => continue,
            };
            if let Ok(id) = v.trim().parse() {
                out.push((kind, id));
            }
        }
    }
    out.sort_by_key(|&(k, id)| (k as u8, id));
    out.dedup();
    out
}

/// Whether a BPF object still exists anywhere in the kernel.
pub fn bpf_exists(kind: ObjectKind, id: u32) -> bool {
    xvs_xdp::bpf::sys::object_exists(kind, id)
        .unwrap_or_else(|e| panic!("asking for {kind:?} {id}: {e}"))
}

/// The id of the XDP program attached to `dev` in `ns`, if any (`ip -j -d link`).
pub fn xdp_prog(ns: &Netns, dev: &str) -> Option<u64> {
    let out = ns
        .exec(&["ip", "-j", "-d", "link", "show", "dev", dev])
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["xdp"]["prog"]["id"].as_u64()
}
