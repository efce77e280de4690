//! End to end through the lab: real TCP (and UDP) from the client namespace
//! through xvsd to the real servers, for every forwarding mode, with the
//! scheduling, weight, persistence and threshold behaviour checked from the
//! answers, the listings checked with xvsadm, and a 100 MB transfer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use xvs_lab::{Lab, LabOptions, Mode};

fn root() {
    xvs_e2e::require_root()
}

fn lab(mode: Mode, tag: &str, rs: usize, sched: &str, ipv6: bool) -> Lab {
    let mut o = LabOptions::for_test(mode);
    o.prefix = format!("{}-{tag}", xvs_netns::test_prefix());
    o.rs = rs;
    o.sched = sched.into();
    o.ipv6 = ipv6;
    o.bin_dir = Some(xvs_e2e::bin("xvsd").parent().unwrap().to_path_buf());
    Lab::up(o).unwrap_or_else(|e| panic!("lab {tag}: {e}"))
}

/// `n` requests to `GET /` through the VIP (v4 or v6): the names that answered.
fn requests(l: &Lab, n: usize, v6: bool) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = if v6 {
                l.curl_vip6("/")
            } else {
                l.curl_vip("/")
            };
            r.unwrap_or_else(|e| panic!("{e}")).trim().to_string()
        })
        .collect()
}

fn counts(names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

/// rr over N servers: every answer from an RS, each period of N a permutation,
/// and the same permutation throughout.
fn assert_rr(names: &[String], rs: usize) {
    for n in names {
        assert!(
            n.starts_with("rs"),
            "answer {n:?} is not from a real server"
        );
    }
    let first: Vec<_> = names[..rs].to_vec();
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), rs, "first round {first:?} repeats a server");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            n,
            &first[i % rs],
            "rr is not exact at request {i}: {names:?}"
        );
    }
}

fn check_mode(mode: Mode, tag: &str, ipv6: bool) {
    let l = lab(mode, tag, 3, "rr", ipv6);
    assert_rr(&requests(&l, 60, false), 3);
    if ipv6 {
        assert_rr(&requests(&l, 60, true), 3);
    }
}

#[test]
fn nat_ipv4_and_ipv6_round_robin() {
    root();
    check_mode(Mode::Nat, "nat", true);
}

#[test]
fn dr_ipv4_and_ipv6_round_robin() {
    root();
    check_mode(Mode::Dr, "dr", true);
}

#[test]
fn tun_round_robin() {
    root();
    check_mode(Mode::Tun, "tun", false);
}

#[test]
fn fullnat_round_robin() {
    root();
    check_mode(Mode::FullNat, "fnat", false);
}

fn vip_svc(l: &Lab) -> String {
    format!("{}:80", l.plan().vip4)
}

fn rs_addr(l: &Lab, i: usize) -> String {
    format!("{}:80", l.plan().rs[i].addr4)
}

#[test]
fn wrr_three_to_one_gives_45_and_15() {
    root();
    let l = lab(Mode::Nat, "wrr", 2, "wrr", false);
    let svc = vip_svc(&l);
    l.xvsadm(&["-e", "-t", &svc, "-r", &rs_addr(&l, 0), "-m", "-w", "3"])
        .unwrap();
    let c = counts(&requests(&l, 60, false));
    assert_eq!(c.get("rs1"), Some(&45), "{c:?}");
    assert_eq!(c.get("rs2"), Some(&15), "{c:?}");
}

/// A keep-alive HTTP connection from the client namespace through the VIP.
struct Held {
    s: TcpStream,
    r: BufReader<TcpStream>,
}

impl Held {
    fn open(l: &Lab) -> Held {
        let to = SocketAddr::new(IpAddr::V4(l.plan().vip4), 80);
        let s = l
            .client()
            .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .unwrap()
            .expect("connect through the VIP");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        Held { s, r }
    }

    /// GET / on this connection: the server's name.
    fn ask(&mut self) -> String {
        self.s
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
            .unwrap();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).unwrap();
            let t = line.trim_end();
            if t.is_empty() {
                break;
            }
            if let Some(v) = t.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).unwrap();
        String::from_utf8_lossy(&body).trim().to_string()
    }

    /// Closes with a RST (SO_LINGER 0), as an aborting client does.
    fn abort(self) {
        use nix::sys::socket::{setsockopt, sockopt::Linger};
        let _ = setsockopt(
            &self.s,
            Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        );
        drop(self.r);
        drop(self.s);
    }
}

#[test]
fn lc_balances_held_connections() {
    root();
    let l = lab(Mode::Nat, "lc", 3, "lc", false);
    let mut held: Vec<Held> = (0..6).map(|_| Held::open(&l)).collect();
    let names: Vec<String> = held.iter_mut().map(Held::ask).collect();
    let c = counts(&names);
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(
        c.values().all(|&n| n == 2),
        "lc spreads held conns 2/2/2: {c:?}"
    );
}

#[test]
fn weight_zero_takes_no_new_conns_but_keeps_a_held_one() {
    root();
    let l = lab(Mode::Nat, "w0", 2, "rr", false);
    let mut h = Held::open(&l);
    let first = h.ask();
    let i = l.plan().rs.iter().position(|r| r.name == first).unwrap();
    l.xvsadm(&[
        "-e",
        "-t",
        &vip_svc(&l),
        "-r",
        &rs_addr(&l, i),
        "-m",
        "-w",
        "0",
    ])
    .unwrap();
    for n in requests(&l, 20, false) {
        assert_ne!(n, first, "a quiesced server got a new connection");
    }
    assert_eq!(
        h.ask(),
        first,
        "the held connection still reaches its server"
    );
}

#[test]
fn persistence_pins_a_client_and_lets_it_move_after_the_timeout() {
    root();
    let l = lab(Mode::Nat, "per", 3, "rr", false);
    let svc = vip_svc(&l);
    l.xvsadm(&["-E", "-t", &svc, "-s", "rr", "-p", "300"])
        .unwrap();
    let c = counts(&requests(&l, 20, false));
    assert_eq!(c.len(), 1, "one client, one server: {c:?}");

    // The same over UDP, with timeouts short enough to watch the template go.
    let usvc = format!("{}:80", l.plan().vip4);
    l.xvsadm(&["-A", "-u", &usvc, "-s", "rr", "-p", "2"])
        .unwrap();
    for i in 0..3 {
        l.xvsadm(&["-a", "-u", &usvc, "-r", &rs_addr(&l, i), "-m"])
            .unwrap();
    }
    l.xvsadm(&["--set", "0", "0", "1"]).unwrap();
    let to = SocketAddr::new(IpAddr::V4(l.plan().vip4), 80);
    let sock = l
        .client()
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ask = || {
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            sock.send_to(b"who", to).unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).trim().to_string();
            }
        }
        panic!("no UDP answer through the VIP");
    };
    let first = ask();
    for _ in 0..5 {
        assert_eq!(ask(), first, "persistent UDP client stays");
    }
    // UDP conn (1 s) and template (2 s) expire; the sweep frees them.
    std::thread::sleep(Duration::from_secs(5));
    assert_ne!(ask(), first, "after the timeout rr moves the client on");
}

#[test]
fn upper_threshold_diverts_until_conns_drop() {
    root();
    let l = lab(Mode::Nat, "thr", 2, "rr", false);
    let svc = vip_svc(&l);
    // fo always picks the heaviest available server: the threshold alone
    // decides when rs1 stops taking conns.
    l.xvsadm(&["-E", "-t", &svc, "-s", "fo"]).unwrap();
    l.xvsadm(&[
        "-e",
        "-t",
        &svc,
        "-r",
        &rs_addr(&l, 0),
        "-m",
        "-w",
        "100",
        "-x",
        "2",
    ])
    .unwrap();
    let mut a = Held::open(&l);
    let mut b = Held::open(&l);
    assert_eq!((a.ask().as_str(), b.ask().as_str()), ("rs1", "rs1"));
    let mut c = Held::open(&l);
    assert_eq!(c.ask(), "rs2", "a third conn goes elsewhere");
    // Aborted conns sit in CLOSE for 10 s; then rs1 is below 3/4 of 2.
    a.abort();
    b.abort();
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(Held::open(&l).ask(), "rs1", "rs1 is readmitted");
}

#[test]
fn listings_show_the_connections_and_100mb_arrive_intact() {
    root();
    let l = lab(Mode::Nat, "lst", 2, "rr", false);
    requests(&l, 10, false);
    let out = l.xvsadm(&["-L", "-n"]).unwrap();
    let svc = format!("TCP  {}:80 rr", l.plan().vip4);
    assert!(out.contains(&svc), "{out}");
    // Every finished request sits in TIME_WAIT: inactive, 5 per server.
    for i in 0..2 {
        let line = out
            .lines()
            .find(|x| x.contains(&rs_addr(&l, i)))
            .unwrap_or_else(|| panic!("{out}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3], f[4], f[5]), ("Masq", "1", "0", "5"), "{line}");
    }
    let stats = l.xvsadm(&["-L", "-n", "--stats", "--exact"]).unwrap();
    let svc_line = stats
        .lines()
        .find(|x| x.starts_with("TCP"))
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(svc_line.split_whitespace().nth(2), Some("10"), "{stats}");
    let conns = l.xvsadm(&["-L", "-n", "-c"]).unwrap();
    let client = format!("{}:", l.plan().client4);
    let rows: Vec<_> = conns.lines().filter(|x| x.contains(&client)).collect();
    assert_eq!(rows.len(), 10, "{conns}");
    assert!(rows
        .iter()
        .all(|r| r.starts_with("TCP") && r.contains("TIME_WAIT")));

    let base = format!("http://{}:80", l.plan().vip4);
    let n = l
        .curl_bytes(&l.plan().client_ns, &base, 100_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 100_000_000);
}
