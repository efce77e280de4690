//! The lab topologies, without the director: what each mode's namespaces,
//! addresses, RS servers and (TUN) decapsulation do, and that teardown leaves
//! nothing. Root only (skipped otherwise).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;
use xvs_lab::{procs, teardown, url, Lab, LabOptions, Mode};
use xvs_netns::{list, Netns};

fn options(mode: Mode, tag: &str) -> LabOptions {
    LabOptions {
        ipv6: true,
        start_director: false,
        lab_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_xvs-lab"))),
        prefix: format!("{}-{mode}{tag}", xvs_netns::test_prefix()),
        ..LabOptions::for_test(mode)
    }
}

macro_rules! need_root {
    () => {
        xvs_netns::require_root();
    };
}

/// Drops the lab and checks nothing of it is left.
fn down_and_check(lab: Lab) {
    let prefix = lab.plan().prefix.clone();
    let pids = lab.pids();
    let dir = lab.run_dir().to_path_buf();
    assert!(!pids.is_empty());
    assert!(
        pids.iter().all(|&p| procs::alive(p)),
        "servers run while the lab is up"
    );
    drop(lab);
    assert_eq!(
        list(&format!("{prefix}-")),
        Vec::<String>::new(),
        "namespaces left"
    );
    assert!(
        procs::wait_gone(&pids, Duration::from_secs(5)),
        "processes left: {pids:?}"
    );
    assert!(!dir.exists(), "{} left", dir.display());
}

fn mac(ns: &Netns, dev: &str) -> String {
    let out = ns
        .exec(&["cat", &format!("/sys/class/net/{dev}/address")])
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The link-layer address `ns` resolved for `addr`, after sending it a datagram.
fn resolved_mac(ns: &Netns, addr: IpAddr) -> String {
    ns.run(move || {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap();
        let s = UdpSocket::bind(bind).unwrap();
        s.send_to(b"x", (addr, 9)).unwrap();
    })
    .unwrap();
    let a = addr.to_string();
    for _ in 0..250 {
        let out = ns.exec(&["ip", "neigh", "show", &a]).unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        if let Some(m) = text
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
        {
            return m.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{addr} was not resolved in {}", ns.name());
}

/// Every RS answers `GET /` with its name on each of its addresses, from `ns`.
fn rs_answer_from(lab: &Lab, ns: &str) {
    for r in &lab.plan().rs {
        for a in r.addrs() {
            assert_eq!(
                lab.curl(ns, &url(a, "/")).unwrap(),
                format!("{}\n", r.name),
                "{a} from {ns}"
            );
        }
    }
}

/// `GET /hold?s=3` is not answered at once, then is answered with the name.
fn hold_holds(ns: &Netns, rs: SocketAddr, name: &str) {
    let reply = ns
        .run(move || {
            let mut c = TcpStream::connect_timeout(&rs, Duration::from_secs(5)).unwrap();
            c.write_all(b"GET /hold?s=3 HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut buf = [0u8; 1];
            let early = c.read(&mut buf);
            assert!(
                matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
                "answered before the hold ended: {early:?}"
            );
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with(&format!("\r\n\r\n{name}\n")), "{reply}");
}

fn default_route(ns: &Netns, family: &str) -> String {
    let out = ns
        .exec(&["ip", family, "route", "show", "default"])
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sysctl(ns: &Netns, key: &str) -> String {
    let out = ns.exec(&["sysctl", "-n", key]).unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn nat_rs_answer_behind_the_director_which_is_their_gateway() {
    need_root!();
    let lab = Lab::up(options(Mode::Nat, "")).unwrap();
    let p = lab.plan().clone();
    rs_answer_from(&lab, &p.dir_ns);
    // The RS see the director's RS-side address, and route back through it.
    assert!(lab
        .curl(&p.dir_ns, &url(p.rs[0].addr4.into(), "/peer"))
        .unwrap()
        .starts_with("10.77.1.1:"));
    assert_eq!(
        default_route(lab.rs(0), "-4"),
        "default via 10.77.1.1 dev eth0"
    );
    assert!(default_route(lab.rs(1), "-6").starts_with("default via fd77::1:1 dev eth0"));
    // The client reaches the RS only through xvs: the director does not forward.
    let direct = lab.curl(&p.client_ns, &url(p.rs[0].addr4.into(), "/"));
    assert!(direct.is_err(), "client reached an RS directly: {direct:?}");
    assert_eq!(sysctl(lab.director(), "net.ipv4.ip_forward"), "0");
    // The VIP is on the director's client arm (kernel answers ARP for it).
    let out = lab
        .director()
        .exec(&["ip", "-br", "addr", "show", "c0"])
        .unwrap();
    let c0 = String::from_utf8(out.stdout).unwrap();
    assert!(
        c0.contains("10.77.0.100/32") && c0.contains("fd77::100/128"),
        "{c0}"
    );
    hold_holds(
        lab.director(),
        SocketAddr::new(p.rs[1].addr4.into(), 80),
        "rs2",
    );
    assert_eq!(
        lab.curl(&p.dir_ns, &url(p.rs[0].addr4.into(), "/hold?s=1"))
            .unwrap(),
        "rs1\n"
    );
    let n = 10_000_019;
    let base = format!("http://{}:80", p.rs[1].addr4);
    assert_eq!(lab.curl_bytes(&p.dir_ns, &base, n).unwrap(), n);
    down_and_check(lab);
}

#[test]
fn dr_rs_share_the_segment_hold_the_vip_and_leave_arp_to_the_director() {
    need_root!();
    let lab = Lab::up(options(Mode::Dr, "")).unwrap();
    let p = lab.plan().clone();
    rs_answer_from(&lab, &p.client_ns);
    // Each RS answers on the VIP it holds on lo...
    for (i, r) in p.rs.iter().enumerate() {
        for vip in p.vips() {
            assert_eq!(
                lab.curl(&r.ns, &url(vip, "/")).unwrap(),
                format!("{}\n", r.name)
            );
        }
        assert_eq!(sysctl(lab.rs(i), "net.ipv4.conf.eth0.arp_ignore"), "1");
        assert_eq!(sysctl(lab.rs(i), "net.ipv4.conf.eth0.arp_announce"), "2");
    }
    // ...but only the director answers ARP and ND for it.
    let dir_mac = mac(lab.director(), "eth0");
    for vip in p.vips() {
        assert_eq!(resolved_mac(lab.client(), vip), dir_mac, "{vip}");
    }
    hold_holds(
        lab.client(),
        SocketAddr::new(p.rs[0].addr6.unwrap().into(), 80),
        "rs1",
    );
    let base = format!("http://[{}]:80", p.rs[0].addr6.unwrap());
    assert_eq!(
        lab.curl_bytes(&p.client_ns, &base, 3_000_001).unwrap(),
        3_000_001
    );
    down_and_check(lab);
}

/// Sends `inner` (a whole IP packet) in an IPIP (IPv4) or ip6ip6 (IPv6) tunnel
/// from namespace `ns` to `rip`; the kernel builds the outer header.
fn send_tunnelled(ns: &Netns, rip: IpAddr, inner: Vec<u8>) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    ns.run(move || {
        let (domain, proto) = if rip.is_ipv4() {
            (Domain::IPV4, 4)
        } else {
            (Domain::IPV6, 41)
        };
        let s = Socket::new(domain, Type::RAW, Some(Protocol::from(proto))).unwrap();
        let n = s
            .send_to(&inner, &SockAddr::from(SocketAddr::new(rip, 0)))
            .unwrap();
        assert_eq!(n, inner.len());
    })
    .unwrap();
}

fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
    .udp(src.port(), dst.port());
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn tun_rs_decapsulate_ipip_and_ip6ip6_to_the_vip() {
    need_root!();
    let lab = Lab::up(options(Mode::Tun, "")).unwrap();
    let p = lab.plan().clone();
    assert!(lab.decap().is_some());
    rs_answer_from(&lab, &p.client_ns);
    rs_answer_from(&lab, &p.dir_ns);
    hold_holds(
        lab.client(),
        SocketAddr::new(p.rs[1].addr4.into(), 80),
        "rs2",
    );
    let base = format!("http://{}:80", p.rs[0].addr4);
    assert_eq!(
        lab.curl_bytes(&p.client_ns, &base, 5_000_003).unwrap(),
        5_000_003
    );

    let vip4 = SocketAddr::new(p.vip4.into(), 9999);
    let vip6 = SocketAddr::new(p.vip6.unwrap().into(), 9999);
    let client4 = SocketAddr::new(p.client4.into(), 5555);
    let client6 = SocketAddr::new(p.client6.unwrap().into(), 5556);
    let rs1 = lab.rs(0);
    let listen = |a: SocketAddr| {
        let s = rs1.run(move || UdpSocket::bind(a).unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let (l4, l6) = (listen(vip4), listen(vip6));
    let rip4 = IpAddr::V4(p.rs[0].addr4);
    let rip6 = IpAddr::V6(p.rs[0].addr6.unwrap());
    // A datagram from the client to the VIP, tunnelled by the "director".
    send_tunnelled(
        lab.director(),
        rip4,
        udp_packet(client4, vip4, b"over ipip"),
    );
    send_tunnelled(
        lab.director(),
        rip6,
        udp_packet(client6, vip6, b"over ip6ip6"),
    );
    let mut buf = [0u8; 64];
    let (n, from) = l4.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"over ipip"[..], client4));
    let (n, from) = l6.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"over ip6ip6"[..], client6));
    // The RS reply from the VIP goes straight to the client through the router.
    let c = lab
        .client()
        .run(move || {
            let s = UdpSocket::bind(client4).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .unwrap();
    l4.send_to(b"reply", client4).unwrap();
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"reply"[..], vip4));

    // Without the program the same tunnel packet is not delivered.
    rs1.exec(&["ip", "link", "set", "dev", "eth0", "xdp", "off"])
        .unwrap();
    send_tunnelled(lab.director(), rip4, udp_packet(client4, vip4, b"no decap"));
    l4.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    assert!(
        l4.recv_from(&mut buf).is_err(),
        "delivered without decapsulation"
    );
    down_and_check(lab);
}

#[test]
fn fullnat_rs_reach_the_laddrs_without_gateway_or_vip() {
    need_root!();
    let lab = Lab::up(options(Mode::FullNat, "")).unwrap();
    let p = lab.plan().clone();
    rs_answer_from(&lab, &p.dir_ns);
    for (i, r) in p.rs.iter().enumerate() {
        let rs = lab.rs(i);
        assert_eq!(default_route(rs, "-4"), "");
        assert_eq!(default_route(rs, "-6"), "");
        let out = rs.exec(&["ip", "addr", "show", "lo"]).unwrap();
        let lo = String::from_utf8(out.stdout).unwrap();
        assert!(
            !lo.contains("10.77.0.100") && !lo.contains("fd77::100"),
            "{lo}"
        );
        // Requests from each LIP are answered back to it, on the RS segment.
        for l in p
            .laddrs4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(p.laddrs6.iter().map(|a| IpAddr::V6(*a)))
        {
            for a in r.addrs().into_iter().filter(|a| a.is_ipv4() == l.is_ipv4()) {
                let out = Lab::cmd_in(
                    &p.dir_ns,
                    &[
                        "curl",
                        "-sS",
                        "--fail",
                        "--max-time",
                        "10",
                        "--interface",
                        &l.to_string(),
                        &url(a, "/peer"),
                    ],
                )
                .output()
                .unwrap();
                let body = String::from_utf8(out.stdout).unwrap();
                let peer: SocketAddr = body
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{body:?} {:?}", out.stderr));
                assert_eq!(peer.ip(), l, "{a}");
            }
        }
    }
    assert_eq!(
        p.laddrs4,
        [Ipv4Addr::new(10, 77, 1, 200), Ipv4Addr::new(10, 77, 1, 201)]
    );
    assert_eq!(p.laddrs6[0], "fd77::1:200".parse::<Ipv6Addr>().unwrap());
    down_and_check(lab);
}

#[test]
fn up_cleans_a_half_built_lab_first() {
    need_root!();
    let o = LabOptions {
        ipv6: false,
        rs: 1,
        ..options(Mode::Nat, "-half")
    };
    // What a crashed `up` might leave: some namespaces, a veth that `up` will
    // want to create again, and a process in the director namespace.
    let dir = Netns::new(&format!("{}-dir", o.prefix)).unwrap().keep();
    let rs = Netns::new(&format!("{}-rs1", o.prefix)).unwrap().keep();
    let stray_ns = Netns::existing(&dir);
    xvs_netns::veth("c0", &stray_ns, "eth0", &Netns::existing(&rs)).unwrap();
    let mut stray = stray_ns
        .spawn(
            &["sleep", "600"],
            std::process::Stdio::null(),
            std::process::Stdio::null(),
        )
        .unwrap();
    let lab = Lab::up(o).unwrap();
    assert!(stray.try_wait().unwrap().is_some() || stray.wait().is_ok());
    assert_eq!(
        lab.curl(&lab.plan().dir_ns, "http://10.77.1.11:80/")
            .unwrap(),
        "rs1\n"
    );
    assert_eq!(lab.plan().rs.len(), 1);
    down_and_check(lab);
}

#[test]
fn cli_up_then_down_leaves_nothing() {
    need_root!();
    let prefix = format!("{}-cli", xvs_netns::test_prefix());
    let bin = env!("CARGO_BIN_EXE_xvs-lab");
    let out = std::process::Command::new(bin)
        .args([
            "up",
            "tun",
            "--rs",
            "3",
            "--no-director",
            "--prefix",
            &prefix,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = Cleanup(prefix.clone());
    assert!(
        stdout.contains(&format!(
            "export XVS_SOCKET=/run/xvs/lab/{prefix}/xvsd.sock\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ip netns exec {prefix}-client curl -s http://10.77.0.100:80/\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("xvs-lab down --prefix {prefix}\n")),
        "{stdout}"
    );
    let names = list(&format!("{prefix}-"));
    assert_eq!(names.len(), 4 + 3, "client dir sw rt rs1-3: {names:?}");
    let pids: Vec<i32> = names.iter().flat_map(|n| procs::netns_pids(n)).collect();
    assert_eq!(pids.len(), 3, "one server per RS outlives `up`");
    assert!(pids.iter().all(|&p| procs::alive(p)));
    let out = std::process::Command::new(bin)
        .args(["down", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("xvs-lab: removed {prefix} (7 namespaces)\n")
    );
    assert!(list(&format!("{prefix}-")).is_empty());
    assert!(procs::wait_gone(&pids, Duration::from_secs(5)), "{pids:?}");
    assert!(!xvs_lab::run_dir(&prefix).exists());
    drop(guard);
}

/// Removes a CLI-made lab even when an assertion failed.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        teardown(&self.0);
    }
}

#[test]
fn failures_name_their_step_and_leave_nothing() {
    need_root!();
    let bad = Lab::up(LabOptions {
        rs: 0,
        ..options(Mode::Dr, "-bad")
    })
    .err()
    .unwrap();
    assert_eq!(bad.step, "check options");
    assert_eq!(
        bad.to_string(),
        "step \"check options\": --rs must be 1..=50, not 0"
    );

    // The director step, with no xvsd where the lab looks for it.
    let empty = std::env::temp_dir().join(format!("{}-nobin", xvs_netns::test_prefix()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = LabOptions {
        start_director: true,
        bin_dir: Some(empty.clone()),
        rs: 1,
        ipv6: false,
        ..options(Mode::Nat, "-nobin")
    };
    let prefix = o.prefix.clone();
    let e = Lab::up(o).err().unwrap();
    assert_eq!(e.step, "start xvsd");
    assert!(
        e.detail
            .starts_with(&format!("xvsd not found in {}", empty.display())),
        "{e}"
    );
    assert!(
        list(&format!("{prefix}-")).is_empty(),
        "a failed up removes what it made"
    );

    // The kernel tunnel needs the ipip module, which these machines lack.
    let o = LabOptions {
        kernel_tunnel: true,
        rs: 1,
        ..options(Mode::Tun, "-kt")
    };
    let prefix = o.prefix.clone();
    match Lab::up(o) {
        Err(e) => {
            assert_eq!(e.step, "kernel tunnel on rs1");
            assert!(
                e.detail.starts_with("this kernel has no ipip module"),
                "{e}"
            );
        }
        Ok(lab) => assert_eq!(lab.decap(), Some(xvs_lab::Decap::Kernel)),
    }
    assert!(list(&format!("{prefix}-")).is_empty());
    let _ = std::fs::remove_dir(&empty);
}
