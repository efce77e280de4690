//! xvsd forwarding real traffic in network namespaces: two-arm NAT and one-arm
//! DR, UDP and TCP, the AF_PACKET backend, XDP programs gone after the daemon
//! exits (also after SIGKILL), and rules changed while a flow runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;
use xvs_ctl::{Op, Request, Response};
use xvs_e2e::{wait_for, Daemon};
use xvs_netns::{test_prefix, veth, Netns};

fn root() {
    xvs_e2e::require_root()
}

/// client — director (two arms) — real server, with the director as the real
/// server's gateway.
struct NatLab {
    c: Netns,
    d: Netns,
    r: Netns,
}

fn nat_lab(tag: &str) -> NatLab {
    let p = format!("{}-{tag}", test_prefix());
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let r = Netns::new(&format!("{p}-r")).unwrap();
    veth("c0", &c, "d0", &d).unwrap();
    veth("d1", &d, "r0", &r).unwrap();
    for (ns, cmds) in [
        (&c, vec!["ip addr add 10.77.40.2/24 dev c0"]),
        (
            &d,
            vec![
                "ip addr add 10.77.40.1/24 dev d0",
                "ip addr add 10.77.40.100/24 dev d0",
                "ip addr add 10.77.41.1/24 dev d1",
                "sysctl -qw net.ipv4.ip_forward=1",
            ],
        ),
        (
            &r,
            vec![
                "ip addr add 10.77.41.11/24 dev r0",
                "ip route add default via 10.77.41.1",
            ],
        ),
    ] {
        for cmd in cmds {
            ns.sh(cmd).unwrap();
        }
    }
    NatLab { c, d, r }
}

fn write_rules(tag: &str, rules: &str) -> String {
    let p = std::env::temp_dir().join(format!("{}-{tag}.rules", test_prefix()));
    std::fs::write(&p, rules).unwrap();
    p.to_string_lossy().into_owned()
}

/// A UDP echo server in `ns` on `addr`; returns the address each datagram came from.
fn udp_echo(ns: &Netns, addr: &str) -> std::sync::mpsc::Receiver<SocketAddr> {
    let s = ns.run(|| UdpSocket::bind(addr)).unwrap().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = tx.send(from);
            let _ = s.send_to(&buf[..n], from);
        }
    });
    rx
}

/// A TCP echo server in `ns`; returns each client's address.
fn tcp_echo(ns: &Netns, addr: &str) -> std::sync::mpsc::Receiver<SocketAddr> {
    let l = ns.run(|| TcpListener::bind(addr)).unwrap().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = tx.send(s.peer_addr().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx
}

/// One UDP round trip from `ns` to `to`: the reply's source and payload.
fn udp_ask(ns: &Netns, from: &str, to: &str, payload: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
    let s = ns.run(|| UdpSocket::bind(from)).unwrap().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Retry: the first datagram may wait for ARP on the director's side.
    for _ in 0..10 {
        s.send_to(payload, to).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, src)) = s.recv_from(&mut buf) {
            return Some((src, buf[..n].to_vec()));
        }
    }
    None
}

fn tcp_connect(ns: &Netns, to: &str) -> TcpStream {
    let to: SocketAddr = to.parse().unwrap();
    let s = ns
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap()
        .expect("TCP connection through the VIP");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `data` and reads the echo back, in chunks.
fn echo_through(s: &mut TcpStream, data: &[u8]) {
    let mut got = vec![0u8; data.len()];
    for (chunk, back) in data.chunks(16384).zip(got.chunks_mut(16384)) {
        s.write_all(chunk).unwrap();
        s.read_exact(back).unwrap();
    }
    assert!(got == data, "echoed bytes differ");
}

const NAT_RULES: &str = "-A -u 10.77.40.100:53 -s rr\n\
-a -u 10.77.40.100:53 -r 10.77.41.11:5353 -m\n\
-A -t 10.77.40.100:80 -s rr\n\
-a -t 10.77.40.100:80 -r 10.77.41.11:8080 -m\n";

fn check_nat(lab: &NatLab) {
    let seen_udp = udp_echo(&lab.r, "10.77.41.11:5353");
    let seen_tcp = tcp_echo(&lab.r, "10.77.41.11:8080");
    let (src, body) =
        udp_ask(&lab.c, "10.77.40.2:40000", "10.77.40.100:53", b"hello xvs").expect("UDP reply");
    assert_eq!(
        src.to_string(),
        "10.77.40.100:53",
        "reply comes from the VIP"
    );
    assert_eq!(body, b"hello xvs");
    assert_eq!(
        seen_udp
            .recv_timeout(Duration::from_secs(1))
            .unwrap()
            .to_string(),
        "10.77.40.2:40000",
        "NAT keeps the client's address"
    );
    let mut s = tcp_connect(&lab.c, "10.77.40.100:80");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    echo_through(&mut s, &data);
    assert_eq!(
        seen_tcp
            .recv_timeout(Duration::from_secs(1))
            .unwrap()
            .ip()
            .to_string(),
        "10.77.40.2"
    );
}

#[test]
fn nat_forwards_udp_and_tcp() {
    root();
    let lab = nat_lab("nat");
    let rules = write_rules("nat", NAT_RULES);
    let d = Daemon::start(
        &lab.d,
        &format!("{}-nat", test_prefix()),
        &["-i", "d0", "-i", "d1", "--rules", &rules],
    );
    check_nat(&lab);
    assert!(
        d.log_text().contains("backend=xdp-native"),
        "{}",
        d.log_text()
    );
}

#[test]
fn af_packet_backend_forwards_the_same_traffic() {
    root();
    let lab = nat_lab("afp");
    let rules = write_rules("afp", NAT_RULES);
    let d = Daemon::start(
        &lab.d,
        &format!("{}-afp", test_prefix()),
        &[
            "-i",
            "d0",
            "-i",
            "d1",
            "--rules",
            &rules,
            "--backend",
            "af-packet",
        ],
    );
    check_nat(&lab);
    assert!(
        d.log_text().contains("backend=af-packet"),
        "{}",
        d.log_text()
    );
}

#[test]
fn dr_one_arm_forwards_udp_and_tcp() {
    root();
    let p = format!("{}-dr", test_prefix());
    let sw = Netns::new(&format!("{p}-sw")).unwrap();
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let r = Netns::new(&format!("{p}-r")).unwrap();
    sw.sh("ip link add br0 type bridge && ip link set br0 up")
        .unwrap();
    for (ns, inner, outer) in [(&c, "c0", "swc"), (&d, "d0", "swd"), (&r, "r0", "swr")] {
        veth(inner, ns, outer, &sw).unwrap();
        sw.exec(&["ip", "link", "set", outer, "master", "br0"])
            .unwrap();
    }
    c.sh("ip addr add 10.77.42.2/24 dev c0").unwrap();
    d.sh("ip addr add 10.77.42.1/24 dev d0 && ip addr add 10.77.42.100/24 dev d0")
        .unwrap();
    r.sh(
        "ip addr add 10.77.42.11/24 dev r0 && ip addr add 10.77.42.100/32 dev lo && \
         sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
         net.ipv4.conf.r0.arp_ignore=1 net.ipv4.conf.r0.arp_announce=2",
    )
    .unwrap();
    let rules = write_rules(
        "dr",
        "-A -u 10.77.42.100:53 -s rr\n-a -u 10.77.42.100:53 -r 10.77.42.11 -g\n\
         -A -t 10.77.42.100:80 -s rr\n-a -t 10.77.42.100:80 -r 10.77.42.11 -g\n",
    );
    let _d = Daemon::start(&d, &p, &["-i", "d0", "--rules", &rules]);
    let seen_udp = udp_echo(&r, "10.77.42.100:53");
    let seen_tcp = tcp_echo(&r, "10.77.42.100:80");
    let (src, body) =
        udp_ask(&c, "10.77.42.2:40001", "10.77.42.100:53", b"direct").expect("UDP reply");
    assert_eq!(src.to_string(), "10.77.42.100:53");
    assert_eq!(body, b"direct");
    assert_eq!(
        seen_udp
            .recv_timeout(Duration::from_secs(1))
            .unwrap()
            .to_string(),
        "10.77.42.2:40001"
    );
    let mut s = tcp_connect(&c, "10.77.42.100:80");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    echo_through(&mut s, &data);
    assert!(seen_tcp.recv_timeout(Duration::from_secs(1)).is_ok());
}

fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    let out = ns.exec(&["ip", "link", "show", "dev", dev]).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn xdp_program_is_gone_after_sigterm_and_after_sigkill() {
    root();
    let lab = nat_lab("det");
    for sig in ["-TERM", "-KILL"] {
        let mut d = Daemon::start(
            &lab.d,
            &format!("{}-det", test_prefix()),
            &["-i", "d0", "-i", "d1"],
        );
        assert!(xdp_attached(&lab.d, "d0"), "attached while running");
        d.stop(sig);
        assert!(
            wait_for(5, || !xdp_attached(&lab.d, "d0")
                && !xdp_attached(&lab.d, "d1")),
            "XDP program still attached after {sig}"
        );
    }
}

fn apply(d: &Daemon, op: Op) {
    let r = d.client().call(&Request::Apply(op)).unwrap();
    assert_eq!(r, Response::Ok);
}

#[test]
fn reconfiguration_keeps_established_flows() {
    root();
    let lab = nat_lab("rcf");
    let rules = write_rules("rcf", NAT_RULES);
    let d = Daemon::start(
        &lab.d,
        &format!("{}-rcf", test_prefix()),
        &["-i", "d0", "-i", "d1", "--rules", &rules],
    );
    let _seen = tcp_echo(&lab.r, "10.77.41.11:8080");
    let mut s = tcp_connect(&lab.c, "10.77.40.100:80");
    let chunk: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    echo_through(&mut s, &chunk);
    let key = xvs_core::service::ServiceKey::Addr {
        proto: xvs_core::service::Protocol::Tcp,
        addr: "10.77.40.100".parse().unwrap(),
        port: 80,
    };
    let mut rs2 = xvs_core::service::DestSpec::new("10.77.41.12".parse().unwrap(), 8080);
    rs2.fwd = xvs_core::service::FwdMethod::Masq;
    let mut edit = xvs_core::service::DestSpec::new("10.77.41.11".parse().unwrap(), 8080);
    edit.fwd = xvs_core::service::FwdMethod::Masq;
    edit.weight = 0;
    let mut other = xvs_core::service::ServiceSpec::new(xvs_core::service::ServiceKey::Addr {
        proto: xvs_core::service::Protocol::Tcp,
        addr: "10.77.40.100".parse().unwrap(),
        port: 443,
    });
    other.sched = xvs_core::service::SchedKind::Wrr;
    for op in [
        Op::AddService(other.clone()),
        Op::AddDest(key, rs2),
        Op::EditDest(key, edit),
        Op::EditService({
            let mut s = xvs_core::service::ServiceSpec::new(key);
            s.sched = xvs_core::service::SchedKind::Wlc;
            s
        }),
        Op::DelService(other.key),
        Op::SetTimeouts(3600, 0, 0),
    ] {
        apply(&d, op);
        echo_through(&mut s, &chunk);
    }
}
