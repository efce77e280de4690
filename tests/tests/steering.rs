//! The rules and the steering map never diverge: a rule change the map cannot
//! take is refused as a whole (xvsadm says so, nothing is applied, nothing
//! is left in the map), counted in the metrics, and a key that failed is never
//! recorded as installed.

use std::io::{Read, Write};
use std::process::Command;
use xvs_e2e::{bin, require_root, Daemon};
use xvs_netns::{test_prefix, veth, Netns};

fn xvsadm(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &d.socket)
        .args(args)
        .output()
        .expect("run xvsadm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn saved(d: &Daemon) -> String {
    let (ok, out, err) = xvsadm(d, &["-S", "-n"]);
    assert!(ok, "{err}");
    out
}

fn metric(ns: &Netns, addr: &str, name: &str) -> u64 {
    let body = ns
        .run(|| {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut b = String::new();
            s.read_to_string(&mut b)?;
            Ok::<_, std::io::Error>(b)
        })
        .unwrap()
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_change_the_steering_map_cannot_take_is_refused_whole() {
    require_root();
    let p = format!("{}-steer", test_prefix());
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let c = Netns::new(&format!("{p}-c")).unwrap();
    veth("d0", &d, "c0", &c).unwrap();
    d.sh("ip addr add 10.77.60.1/24 dev d0").unwrap();
    let cfg = std::env::temp_dir().join(format!("{p}.toml"));
    // Room for the host's addresses (lo v4/v6, d0 v4 and its link-local) and a
    // few service keys only.
    std::fs::write(&cfg, "steer_keys = 12\n").unwrap();
    let daemon = Daemon::start(
        &d,
        &p,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "-i",
            "d0",
            "--metrics",
            "127.0.0.1:9181",
        ],
    );
    let m = |name| metric(&d, "127.0.0.1:9181", name);
    assert_eq!(m("xvs_steer_failures_total"), 0);

    // Services on one VIP: the first takes two keys (VIP:port and the
    // address-only key), every further port one, until the map is full.
    let mut refused = None;
    for port in 1..=20u16 {
        let svc = format!("10.77.60.100:{port}");
        let before = saved(&daemon);
        let keys_before = m("xvs_steer_keys");
        let (ok, _, err) = xvsadm(&daemon, &["-A", "-t", &svc, "-s", "rr"]);
        if ok {
            continue;
        }
        assert!(
            err.contains("Steering map update failed, nothing was changed"),
            "{err}"
        );
        assert_eq!(saved(&daemon), before, "the refused service is not there");
        assert_eq!(m("xvs_steer_keys"), keys_before, "no key left behind");
        assert_eq!(m("xvs_steer_failures_total"), 1);
        refused = Some(port);
        break;
    }
    let port = refused.expect("a 12-key map fills before 20 services");
    assert!(port > 2, "some services fit");

    // A batch that would overflow applies nothing either.
    let before = saved(&daemon);
    let mut r = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &daemon.socket)
        .arg("-R")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    r.stdin
        .take()
        .unwrap()
        .write_all(b"-A -u 10.77.60.101:53 -s rr\n-A -u 10.77.60.102:53 -s rr\n")
        .unwrap();
    let out = r.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(saved(&daemon), before, "-R applied nothing");
    assert_eq!(m("xvs_steer_failures_total"), 2);

    // The key that failed was not recorded as installed: once there is room
    // again, the same service is accepted and really steered.
    let (ok, _, err) = xvsadm(&daemon, &["-D", "-t", "10.77.60.100:1"]);
    assert!(ok, "{err}");
    let svc = format!("10.77.60.100:{port}");
    let (ok, _, err) = xvsadm(&daemon, &["-A", "-t", &svc, "-s", "rr"]);
    assert!(ok, "after a delete there is room: {err}");
    assert!(saved(&daemon).contains(&format!("-A -t {svc} -s rr")));
}

/// What the real server of `other_mac_test` received: the payloads of its
/// UDP socket, gathered by a thread until the receiver is dropped.
fn udp_sink(ns: &Netns, addr: &str) -> std::sync::mpsc::Receiver<String> {
    let s = ns.run(|| std::net::UdpSocket::bind(addr)).unwrap().unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        loop {
            match s.recv(&mut b) {
                Ok(n) => {
                    if tx
                        .send(String::from_utf8_lossy(&b[..n]).into_owned())
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// Everything `rx` holds after `quiet` without a new datagram.
fn drain(rx: &std::sync::mpsc::Receiver<String>, quiet: std::time::Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(p) = rx.recv_timeout(quiet) {
        got.push(p);
    }
    got
}

/// Frames reach an interface whatever their destination MAC when nothing
/// filters them (veth, bridges, promiscuous NICs); the kernel drops the ones
/// unicast to another host's MAC (PACKET_OTHERHOST), so xvs must not take
/// them either (else several directors on one segment would each forward the
/// same datagram). With `backend`: a UDP NAT service; raw frames to the VIP
/// with the director's MAC, broadcast, and another host's MAC, and datagrams
/// from a socket; then the director's MAC changed at run time.
fn other_mac_test(backend: &str, tag: &str) {
    use std::net::SocketAddrV4;
    use std::time::Duration;
    use xvs_e2e::raw;
    use xvs_e2e::traffic::{metric, scrape};

    let p = format!("{}-{tag}", test_prefix());
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let r = Netns::new(&format!("{p}-r")).unwrap();
    veth("c0", &c, "d0", &d).unwrap();
    veth("d1", &d, "r0", &r).unwrap();
    let sh = |ns: &Netns, script: &str| {
        let out = ns.sh(script).unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        &c,
        "ip addr add 10.77.62.2/24 dev c0 && ip route add 10.77.63.0/24 via 10.77.62.1",
    );
    sh(
        &d,
        "ip addr add 10.77.62.1/24 dev d0 && ip addr add 10.77.62.100/32 dev d0 && \
         ip addr add 10.77.63.1/24 dev d1 && sysctl -qw net.ipv4.ip_forward=1",
    );
    sh(
        &r,
        "ip addr add 10.77.63.11/24 dev r0 && ip route add default via 10.77.63.1",
    );
    let metrics = "127.0.0.1:9182";
    let daemon = Daemon::start(
        &d,
        &p,
        &[
            "--backend",
            backend,
            "-i",
            "d0",
            "-i",
            "d1",
            "--metrics",
            metrics,
        ],
    );
    for args in [
        &["-A", "-u", "10.77.62.100:5353", "-s", "rr"][..],
        &[
            "-a",
            "-u",
            "10.77.62.100:5353",
            "-r",
            "10.77.63.11:5353",
            "-m",
        ],
    ] {
        let (ok, _, err) = xvsadm(&daemon, args);
        assert!(ok, "{err}");
    }
    sh(&d, "ping -c 1 -W 2 10.77.63.11 >/dev/null");
    let rx = udp_sink(&r, "0.0.0.0:5353");
    let other_host = || {
        metric(
            &scrape(&d, metrics).unwrap(),
            "xvs_steer_frames_total{interface=\"d0\",verdict=\"other_host\"}",
        )
    };

    let (cmac, dmac) = (raw::mac(&c, "c0"), raw::mac(&d, "d0"));
    let foreign = [0x02, 0x77, 0, 0, 0, 0x99];
    let src = SocketAddrV4::new("10.77.62.2".parse().unwrap(), 40000);
    let vip: SocketAddrV4 = "10.77.62.100:5353".parse().unwrap();
    let frames = |mac: [u8; 6], tag: &str| -> Vec<Vec<u8>> {
        (0..10)
            .map(|i| raw::udp4(mac, cmac, src, vip, format!("{tag}-{i}").as_bytes()))
            .collect()
    };
    let send_socket = |tag: &str| {
        c.run(|| {
            let s = std::net::UdpSocket::bind("10.77.62.2:0").unwrap();
            for i in 0..10 {
                s.send_to(format!("{tag}-{i}").as_bytes(), "10.77.62.100:5353")
                    .unwrap();
            }
        })
        .unwrap();
    };
    let count = |got: &[String], tag: &str| {
        got.iter()
            .filter(|p| p.starts_with(&format!("{tag}-")))
            .count()
    };

    let before = other_host();
    raw::send(&c, "c0", &frames(foreign, "other"));
    raw::send(&c, "c0", &frames(dmac, "own"));
    raw::send(&c, "c0", &frames([0xff; 6], "bcast"));
    send_socket("sock");
    let got = drain(&rx, Duration::from_millis(700));
    assert_eq!(count(&got, "own"), 10, "{backend}: {got:?}");
    assert_eq!(
        count(&got, "bcast"),
        10,
        "{backend}: group-addressed: {got:?}"
    );
    assert_eq!(count(&got, "sock"), 10, "{backend}: {got:?}");
    assert_eq!(
        count(&got, "other"),
        0,
        "{backend}: another host's frames: {got:?}"
    );
    assert!(
        other_host() >= before + 10,
        "{backend}: counted as another host's"
    );

    // The director's MAC changes at run time; the client learns it.
    let new_mac = [0x02, 0x77, 0, 0, 0, 0x42];
    let new = raw::mac_str(new_mac);
    sh(&d, &format!("ip link set dev d0 address {new}"));
    sh(
        &c,
        &format!(
            "ip neigh replace 10.77.62.100 lladdr {new} dev c0 && \
             ip neigh replace 10.77.62.1 lladdr {new} dev c0"
        ),
    );
    // Served again once xvsd has followed (XDP: within a link watcher's
    // turn; AF_PACKET: the kernel's own verdict, at once).
    let mut served = false;
    for attempt in 0..40 {
        raw::send(&c, "c0", &frames(new_mac, &format!("probe{attempt}")));
        if count(
            &drain(&rx, Duration::from_millis(150)),
            &format!("probe{attempt}"),
        ) == 10
        {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "{backend}: frames to the new MAC are served:\n{}",
        daemon.log_text()
    );
    let before = other_host();
    raw::send(&c, "c0", &frames(new_mac, "new"));
    raw::send(&c, "c0", &frames(dmac, "old"));
    send_socket("sock2");
    let got = drain(&rx, Duration::from_millis(700));
    assert_eq!(count(&got, "new"), 10, "{backend}: {got:?}");
    assert_eq!(count(&got, "sock2"), 10, "{backend}: {got:?}");
    assert_eq!(
        count(&got, "old"),
        0,
        "{backend}: the old MAC is another host's now: {got:?}"
    );
    assert!(other_host() >= before + 10, "{backend}");
    if backend != "af-packet" {
        assert!(
            daemon.log_text().contains("MAC address changed"),
            "{}",
            daemon.log_text()
        );
    }
}

#[test]
fn frames_for_another_hosts_mac_are_left_to_the_kernel_xdp() {
    require_root();
    other_mac_test("xdp-native", "omac-x");
}

#[test]
fn frames_for_another_hosts_mac_are_left_to_the_kernel_af_packet() {
    require_root();
    other_mac_test("af-packet", "omac-p");
}
