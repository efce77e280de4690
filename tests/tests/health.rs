//! Health checks of `xvsd --keepalived-conf` in a NAT lab: a client, the
//! director (xvsd on both arms) and a real-server namespace with one HTTP
//! server per address and port, which the tests stop (the listening socket
//! closes: new connections are refused, held ones go on) and restart.
//!
//! The timings are short on purpose (delay_loop 0.5 s, connect_timeout 1 s,
//! retry 1, delay_before_retry 0.5 s): keepalived's bound on detection,
//! delay_loop + retry x (connect_timeout + delay_before_retry), is 2 s.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs_core::service::{Protocol, ServiceKey};
use xvs_ctl::{Request, Response};
use xvs_e2e::traffic::Line;
use xvs_e2e::{bin, require_root, Daemon};
use xvs_netns::{test_prefix, Netns};

/// keepalived's detection bound for the test configurations.
const BOUND: Duration = Duration::from_millis(2000);
/// What polling and scheduling on a loaded 2-CPU machine may add to it.
const SLACK: Duration = Duration::from_millis(700);

const VIP: &str = "10.77.90.100";

fn sh(ns: &Netns, script: &str) {
    let out = ns.sh(script).unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTP server in a namespace: answers its name, `/hold?s=N` after N
/// seconds. Stopping it closes the listening socket only.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, addr: &str, name: &str) -> Server {
        let l = ns
            .run(|| TcpListener::bind(addr))
            .unwrap()
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || answer(s, &name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener closes here; connections already accepted go on.
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(s: TcpStream, name: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut h = String::new();
    while r.read_line(&mut h).is_ok_and(|n| n > 2) {
        h.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    if let Some(n) = path.strip_prefix("/hold?s=") {
        std::thread::sleep(Duration::from_secs(n.parse().unwrap_or(0)));
    }
    let body = format!("{name}\n");
    let mut s = s;
    let _ = write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// Client, director, real servers; xvsd started from `conf`.
struct Lab {
    c: Netns,
    d: Netns,
    r: Netns,
    conf: std::path::PathBuf,
    daemon: Option<Daemon>,
}

impl Lab {
    fn new(tag: &str, conf: &str, metrics: Option<&str>) -> Lab {
        let p = format!("{}-{tag}", test_prefix());
        let Line { c, d, r } = Line::new(&p, 90);
        sh(&d, &format!("ip addr add {VIP}/32 dev d0"));
        sh(
            &r,
            "for a in 11 12 13 14; do ip addr add 10.77.91.$a/24 dev r0; done && \
             ip route add default via 10.77.91.1",
        );
        let conf_path = std::env::temp_dir().join(format!("{p}.keepalived.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let mut args = vec![
            "-i",
            "d0",
            "-i",
            "d1",
            "--keepalived-conf",
            conf_path.to_str().unwrap(),
        ];
        if let Some(m) = metrics {
            args.push("--metrics");
            args.push(m);
        }
        let daemon = Daemon::start(&d, &p, &args);
        Lab {
            c,
            d,
            r,
            conf: conf_path,
            daemon: Some(daemon),
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    fn server(&self, addr: &str, name: &str) -> Server {
        Server::start(&self.r, addr, name)
    }

    /// The dests of a service: (address:port, weight).
    fn dests(&self, port: u16) -> Vec<(String, i32)> {
        let key = ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: VIP.parse().unwrap(),
            port,
        };
        let mut c = self.daemon().client();
        match c.call(&Request::ListServices(Some(key))).unwrap() {
            Response::Services { services, .. } => {
                let mut v: Vec<(String, i32)> = services[0]
                    .dests
                    .iter()
                    .map(|d| (format!("{}:{}", d.spec.addr, d.spec.port), d.spec.weight))
                    .collect();
                v.sort();
                v
            }
            r => panic!("{r:?}"),
        }
    }

    /// Waits (at most `limit`) until the dests of `port` are `want`;
    /// returns how long it took.
    fn wait_dests(&self, port: u16, want: &[(&str, i32)], limit: Duration) -> Duration {
        let t0 = Instant::now();
        let want: Vec<(String, i32)> = want.iter().map(|(a, w)| (a.to_string(), *w)).collect();
        loop {
            let got = self.dests(port);
            if got == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "after {:?} the dests of :{port} are {got:?}, not {want:?}\n{}\n{}",
                t0.elapsed(),
                self.xvsadm(&["-L", "-n", "--health"]),
                self.daemon().log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn xvsadm(&self, args: &[&str]) -> String {
        let out = Command::new(bin("xvsadm"))
            .env("XVS_SOCKET", &self.daemon().socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xvsadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A connection from the client to VIP:port (made in the client's namespace).
    fn connect(&self, port: u16) -> TcpStream {
        let to: SocketAddr = format!("{VIP}:{port}").parse().unwrap();
        let s = self
            .c
            .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))
            .unwrap()
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// `GET path` through the VIP: the body (the server's name).
    fn get(&self, port: u16, path: &str) -> String {
        let mut s = self.connect(port);
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        body(&mut s)
    }

    /// Sends `GET /hold?s=N` and returns the connection, to be read later.
    fn hold(&self, port: u16, secs: u32) -> TcpStream {
        let mut s = self.connect(port);
        write!(s, "GET /hold?s={secs} HTTP/1.0\r\n\r\n").unwrap();
        s
    }

    fn metrics(&self, addr: &str) -> String {
        let to: SocketAddr = addr.parse().unwrap();
        self.d
            .run(|| {
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
                let mut b = String::new();
                s.read_to_string(&mut b)?;
                Ok::<_, std::io::Error>(b)
            })
            .unwrap()
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // xvsd first (SIGKILL; the bpf_link goes with it), then the namespaces.
        self.daemon.take();
        let _ = std::fs::remove_file(&self.conf);
    }
}

fn body(s: &mut TcpStream) -> String {
    let mut b = String::new();
    s.read_to_string(&mut b).unwrap();
    b.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string()
}

const HTTP_CHECK: &str = "HTTP_GET {
            url {
                path /health
                status_code 200
            }
            connect_timeout 1
            retry 1
            delay_before_retry 0.5
        }";
const TCP_CHECK: &str = "TCP_CHECK {
            connect_timeout 1
            retry 1
            delay_before_retry 0.5
        }";

#[test]
fn dead_servers_leave_within_the_bound_and_come_back() {
    require_root();
    let conf = format!(
        "! a NAT lab as keepalived would run it
global_defs {{
    router_id xvs_lab
}}
virtual_server {VIP} 80 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    protocol TCP
    sorry_server 10.77.91.13 80
    real_server 10.77.91.11 80 {{
        weight 1
        {HTTP_CHECK}
    }}
    real_server 10.77.91.12 80 {{
        weight 1
        {HTTP_CHECK}
    }}
}}
virtual_server {VIP} 81 {{
    delay_loop 0.5
    lvs_sched rr
    lvs_method NAT
    inhibit_on_failure
    real_server 10.77.91.11 81 {{
        {TCP_CHECK}
    }}
    real_server 10.77.91.12 81 {{
        {TCP_CHECK}
    }}
}}
virtual_server {VIP} 83 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    real_server 10.77.91.14 83 {{
        {TCP_CHECK}
    }}
}}
"
    );
    let rs1 = "10.77.91.11:80";
    let rs2 = "10.77.91.12:80";
    let lab_servers = |lab: &Lab| {
        (
            lab.server(rs1, "rs1"),
            lab.server(rs2, "rs2"),
            lab.server("10.77.91.13:80", "sorry"),
            lab.server("10.77.91.11:81", "rs1-81"),
            lab.server("10.77.91.12:81", "rs2-81"),
        )
    };
    let lab = Lab::new("hchk", &conf, Some("127.0.0.1:9177"));
    let (s1, s2, _sorry, s1b, _s2b) = lab_servers(&lab);
    let _s4 = lab.server("10.77.91.14:83", "rs4");
    lab.wait_dests(80, &[(rs1, 1), (rs2, 1)], Duration::from_secs(10));
    // Traffic reaches both.
    let mut seen: Vec<String> = (0..4).map(|_| lab.get(80, "/")).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["rs1", "rs2"]);

    // Held connections, one on each real server (rr).
    let held: Vec<TcpStream> = (0..2).map(|_| lab.hold(80, 4)).collect();
    std::thread::sleep(Duration::from_millis(200));

    // rs1 stops accepting: out within the bound.
    s1.stop();
    let took = lab.wait_dests(80, &[(rs2, 1)], BOUND + SLACK);
    eprintln!("HTTP_GET: rs1 removed {took:?} after its server stopped (bound {BOUND:?})");
    for _ in 0..6 {
        assert_eq!(lab.get(80, "/"), "rs2", "new connections go to rs2 only");
    }
    // The held connections complete, the one on rs1 included.
    let mut answers: Vec<String> = held.into_iter().map(|mut s| body(&mut s)).collect();
    answers.sort();
    assert_eq!(answers, ["rs1", "rs2"], "held connections complete");

    // rs1 back: in again after one successful check.
    let s1 = lab.server(rs1, "rs1");
    let took = lab.wait_dests(
        80,
        &[(rs1, 1), (rs2, 1)],
        Duration::from_millis(500) + SLACK + BOUND,
    );
    eprintln!("HTTP_GET: rs1 back {took:?} after its server restarted");
    let mut seen: Vec<String> = (0..4).map(|_| lab.get(80, "/")).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["rs1", "rs2"], "rs1 gets traffic again");

    // All down: the sorry server answers.
    s1.stop();
    s2.stop();
    let took = lab.wait_dests(80, &[("10.77.91.13:80", 1)], BOUND + SLACK);
    eprintln!("HTTP_GET: all down, sorry server in {took:?} after the servers stopped");
    assert_eq!(lab.get(80, "/"), "sorry");
    let listing = lab.xvsadm(&["-L", "-n", "--health"]);
    assert!(listing.contains("quorum down"), "{listing}");
    assert!(
        listing.contains("sorry server 10.77.91.13:80  in use"),
        "{listing}"
    );
    assert!(listing.contains("connect: connection refused"), "{listing}");
    // One back: the sorry server leaves.
    let _s2 = lab.server(rs2, "rs2");
    lab.wait_dests(80, &[(rs2, 1)], BOUND + SLACK);
    assert_eq!(lab.get(80, "/"), "rs2");

    // inhibit_on_failure: weight 0, still listed as ipvsadm would list it.
    s1b.stop();
    let took = lab.wait_dests(
        81,
        &[("10.77.91.11:81", 0), ("10.77.91.12:81", 1)],
        BOUND + SLACK,
    );
    eprintln!("TCP_CHECK: rs1:81 inhibited (weight 0) {took:?} after its server stopped");
    let l = lab.xvsadm(&["-L", "-n", "-t", &format!("{VIP}:81")]);
    assert!(
        l.contains("  -> 10.77.91.11:81               Masq    0      "),
        "{l}"
    );
    for _ in 0..4 {
        assert_eq!(lab.get(81, "/"), "rs2-81");
    }
    let m = lab.metrics("127.0.0.1:9177");
    for line in [
        "xvs_dest_up{local_address=\"10.77.90.100\",local_port=\"81\",remote_address=\"10.77.91.11\",remote_port=\"81\",proto=\"TCP\",local_mark=\"\"} 0",
        "xvs_dest_up{local_address=\"10.77.90.100\",local_port=\"81\",remote_address=\"10.77.91.12\",remote_port=\"81\",proto=\"TCP\",local_mark=\"\"} 1",
        "xvs_health_quorum_up{virtual_server=\"[10.77.90.100]:tcp:80\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing in\n{m}");
    }
    assert!(
        m.lines().any(|l| l.starts_with("xvs_health_check_duration_seconds_bucket{")
            && l.contains("le=\"+Inf\"")
            && l.contains("virtual_server=\"[10.77.90.100]:tcp:81\",real_server=\"[10.77.91.11]:81\",checker=\"TCP_CHECK\",index=\"0\"")),
        "{m}"
    );
    // A real server that stops answering at all (its address gone: SYNs
    // unanswered): each attempt lasts connect_timeout, so keepalived's worst
    // case is delay_loop + (retry + 1) x connect_timeout + retry x
    // delay_before_retry = 3 s here.
    lab.wait_dests(83, &[("10.77.91.14:83", 1)], Duration::from_secs(5));
    sh(&lab.r, "ip addr del 10.77.91.14/24 dev r0");
    let took = lab.wait_dests(83, &[], Duration::from_millis(3000) + 2 * SLACK);
    eprintln!("TCP_CHECK: black-holed rs4 removed {took:?} after its address went (worst case 3s)");
    // Every transition is in the log.
    let log = lab.daemon().log_text();
    for what in [
        "lost quorum",
        "adding sorry server",
        "removing down service [10.77.91.11]:80",
        "disabling (weight 0) down service [10.77.91.11]:81",
    ] {
        assert!(log.contains(what), "{what} not logged:\n{log}");
    }
}

#[test]
fn quorum_with_hysteresis_swaps_in_the_sorry_server() {
    require_root();
    // Lost below quorum - hysteresis = 1 (no alive weight), regained at
    // quorum + hysteresis = 3.
    let conf = format!(
        "virtual_server {VIP} 82 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    quorum 2
    hysteresis 1
    sorry_server 10.77.91.14 82
    real_server 10.77.91.11 82 {{ {TCP_CHECK} }}
    real_server 10.77.91.12 82 {{ {TCP_CHECK} }}
    real_server 10.77.91.13 82 {{ {TCP_CHECK} }}
}}
"
    );
    let lab = Lab::new("hquo", &conf, None);
    let _sorry = lab.server("10.77.91.14:82", "sorry");
    let a = |i: u8| format!("10.77.91.{i}:82");
    let mut s: Vec<Option<Server>> = (11..=13)
        .map(|i| Some(lab.server(&a(i), &format!("rs{i}"))))
        .collect();
    let all: Vec<(String, i32)> = (11..=13).map(|i| (a(i), 1)).collect();
    let as_ref = |v: &[(String, i32)]| -> Vec<(String, i32)> { v.to_vec() };
    fn want(v: &[(String, i32)]) -> Vec<(&str, i32)> {
        v.iter().map(|(x, w)| (x.as_str(), *w)).collect()
    }
    lab.wait_dests(82, &want(&all), Duration::from_secs(10));
    // Two of three down: alive weight 1, not below 1: quorum kept.
    s[0].take().unwrap().stop();
    s[1].take().unwrap().stop();
    let one = as_ref(&[(a(13), 1)]);
    lab.wait_dests(82, &want(&one), BOUND + SLACK);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(lab.dests(82), one, "quorum kept within the hysteresis");
    assert_eq!(lab.get(82, "/"), "rs13");
    // The last one down: quorum lost, the sorry server in.
    s[2].take().unwrap().stop();
    let sorry = as_ref(&[(a(14), 1)]);
    lab.wait_dests(82, &want(&sorry), BOUND + SLACK);
    assert_eq!(lab.get(82, "/"), "sorry");
    // Two back: alive weight 2 is the quorum, but not quorum + hysteresis.
    s[0] = Some(lab.server(&a(11), "rs11"));
    s[1] = Some(lab.server(&a(12), "rs12"));
    std::thread::sleep(BOUND + SLACK);
    assert_eq!(
        lab.dests(82),
        sorry,
        "still the sorry server at weight 2 < 3"
    );
    let h = lab.xvsadm(&["-L", "-n", "--health", "-t", &format!("{VIP}:82")]);
    assert!(h.contains("alive weight 2  quorum down"), "{h}");
    // The third back: quorum regained, the real servers replace the sorry server.
    s[2] = Some(lab.server(&a(13), "rs13"));
    lab.wait_dests(82, &want(&all), BOUND + SLACK);
    assert_ne!(lab.get(82, "/"), "sorry");
    let log = lab.daemon().log_text();
    assert!(log.contains("lost quorum 2-1 > 0"), "{log}");
    assert!(log.contains("gained quorum 2+1 <= 3"), "{log}");
}

#[test]
fn sighup_reloads_keeping_connections_and_health_state() {
    require_root();
    let conf = |w2: u32, extra: &str| {
        format!(
            "virtual_server {VIP} 80 {{
    delay_loop 0.5
    lb_algo wrr
    lb_kind NAT
    real_server 10.77.91.11 80 {{ {HTTP_CHECK} }}
    real_server 10.77.91.12 80 {{
        weight {w2}
        {HTTP_CHECK}
    }}
    {extra}
}}
"
        )
    };
    let lab = Lab::new("hhup", &conf(1, ""), None);
    let _s2 = lab.server("10.77.91.12:80", "rs2");
    let _s3 = lab.server("10.77.91.13:80", "rs3");
    // rs1 has no server: it leaves at its first check.
    lab.wait_dests(80, &[("10.77.91.12:80", 1)], Duration::from_secs(10));
    let held = lab.hold(80, 3);
    // Reload: rs2's weight changes, rs3 is added, rs1 is unchanged (and stays out).
    std::fs::write(
        &lab.conf,
        conf(
            3,
            &format!("real_server 10.77.91.13 80 {{ weight 2\n {TCP_CHECK} }}"),
        ),
    )
    .unwrap();
    let pid = lab.daemon().child.id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    hup();
    lab.wait_dests(
        80,
        &[("10.77.91.12:80", 3), ("10.77.91.13:80", 2)],
        Duration::from_secs(3),
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        lab.dests(80),
        [
            ("10.77.91.12:80".to_string(), 3),
            ("10.77.91.13:80".to_string(), 2)
        ],
        "rs1 kept its failed state across the reload"
    );
    let mut held = held;
    assert_eq!(
        body(&mut held),
        "rs2",
        "the held connection survived the reload"
    );
    // A broken file: refused with file and line, nothing changes.
    std::fs::write(
        &lab.conf,
        conf(
            5,
            "real_server 10.77.91.14 80 {\n weight 1\n bogus_kw 3\n }",
        ),
    )
    .unwrap();
    hup();
    assert!(
        xvs_e2e::wait_for(5, || lab.daemon().log_text().contains("reload failed")),
        "{}",
        lab.daemon().log_text()
    );
    let log = lab.daemon().log_text();
    assert!(
        log.contains(&format!("{}:", lab.conf.display()))
            && log.contains(": bogus_kw: not supported by xvs in a real_server"),
        "{log}"
    );
    assert_eq!(
        lab.dests(80),
        [
            ("10.77.91.12:80".to_string(), 3),
            ("10.77.91.13:80".to_string(), 2)
        ]
    );
}

#[test]
fn a_refused_configuration_stops_xvsd_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("{}-hbad", test_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("keepalived.conf");
    std::fs::write(
        &f,
        "virtual_server 10.77.0.100 80 {\n  lb_algo rr\n  real_server 10.77.1.11 80 {\n    SMTP_CHECK {\n    }\n  }\n}\n",
    )
    .unwrap();
    let out = Command::new(bin("xvsd"))
        .args(["--socket", dir.join("s.sock").to_str().unwrap()])
        .args(["--keepalived-conf", f.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "xvsd: {}:4: SMTP_CHECK: this checker is not supported by xvs",
            f.display()
        )),
        "{err}"
    );
}

/// xvsd's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from 3 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn total_checks(d: &Daemon) -> u64 {
    match d.client().call(&Request::GetHealth(None)).unwrap() {
        Response::Health(v) => v
            .iter()
            .flat_map(|v| &v.real_servers)
            .flat_map(|r| &r.checks)
            .map(|c| c.successes + c.failures)
            .sum(),
        r => panic!("{r:?}"),
    }
}

/// Hundreds of real servers on one thread: 500 TCP_CHECKs a second against
/// a local server (the director's namespace holds the addresses), counted
/// for a few seconds with xvsd's CPU time. Prints the figures.
#[test]
fn five_hundred_checks_a_second_on_one_thread() {
    require_root();
    const N: usize = 500;
    let p = format!("{}-hscale", test_prefix());
    let d = Netns::new(&format!("{p}-d")).unwrap();
    // Every address of 10.77.128.0/20 is local: one server answers them all.
    sh(&d, "ip route add local 10.77.128.0/20 dev lo");
    let l = d
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    let mut conf =
        String::from("virtual_server 10.77.127.1 80 {\n lb_algo rr\n lb_kind NAT\n delay_loop 1\n");
    for i in 0..N {
        let _ = writeln!(
            conf,
            " real_server 10.77.{}.{} 8080 {{\n  TCP_CHECK {{\n   connect_timeout 1\n  }}\n }}",
            128 + i / 250,
            1 + i % 250
        );
    }
    conf.push_str("}\n");
    let path = std::env::temp_dir().join(format!("{p}.conf"));
    std::fs::write(&path, &conf).unwrap();
    let daemon = Daemon::start(&d, &p, &["--keepalived-conf", path.to_str().unwrap()]);
    // After the warmup (up to one delay_loop), measure.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = daemon.child.id();
    let (c0, t0, n0) = (cpu_time(pid), Instant::now(), total_checks(&daemon));
    std::thread::sleep(Duration::from_secs(5));
    let (c1, t1, n1) = (cpu_time(pid), Instant::now(), total_checks(&daemon));
    let _ = std::fs::remove_file(&path);
    let secs = (t1 - t0).as_secs_f64();
    let rate = (n1 - n0) as f64 / secs;
    let cpu = (c1 - c0).as_secs_f64() / secs * 100.0;
    eprintln!(
        "{N} real servers, TCP_CHECK every 1 s: {rate:.0} checks/s, xvsd CPU {cpu:.1}% of one core ({:.1} µs per check)",
        (c1 - c0).as_secs_f64() * 1e6 / (n1 - n0).max(1) as f64
    );
    assert!(
        rate > 0.85 * N as f64,
        "{rate:.0} checks/s for {N} real servers"
    );
    let listing = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &daemon.socket)
        .args(["-L", "-n"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains(":8080 ")).count(),
        N,
        "every real server passes and stays"
    );
}
