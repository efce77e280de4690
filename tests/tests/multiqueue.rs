//! Every RX queue is served: on multi-queue veths (4 RX and 4 TX queues, the
//! sender spreading flows over its TX queues, which veth maps to the same RX
//! queue), connections that land on every queue are forwarded by one xvsd
//! started with nothing but `-i` (workers for all queues by default).

use std::process::Command;
use std::time::Duration;
use xvs_e2e::{bin, require_root, send_stream, stream_sink, Daemon};
use xvs_netns::{test_prefix, Netns};

fn sh(ns: &Netns, script: &str) {
    let out = ns.sh(script).unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mq_veth(a: &str, na: &Netns, b: &str, nb: &Netns) {
    let out = Command::new("ip")
        .args(["link", "add", a, "netns", na.name(), "numrxqueues", "4"])
        .args(["numtxqueues", "4", "type", "veth", "peer", "name", b])
        .args(["netns", nb.name(), "numrxqueues", "4", "numtxqueues", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sh(na, &format!("ip link set {a} up"));
    sh(nb, &format!("ip link set {b} up"));
}

/// Frames the XDP program redirected to xvs, per RX queue of `dev`.
fn redirected_per_queue(ns: &Netns, dev: &str) -> Vec<u64> {
    let out = ns.exec(&["ethtool", "-S", dev]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    (0..4)
        .map(|q| {
            let key = format!("rx_queue_{q}_xdp_redirect:");
            text.lines()
                .find_map(|l| l.trim().strip_prefix(&key))
                .unwrap_or_else(|| panic!("{key} not in ethtool -S {dev}:\n{text}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn connections_on_every_rx_queue_are_forwarded() {
    require_root();
    let p = format!("{}-mq", test_prefix());
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let r = Netns::new(&format!("{p}-r")).unwrap();
    mq_veth("c0", &c, "d0", &d);
    mq_veth("d1", &d, "r0", &r);
    sh(&c, "ip addr add 10.77.90.2/24 dev c0");
    sh(
        &d,
        "ip addr add 10.77.90.1/24 dev d0 && ip addr add 10.77.90.100/32 dev d0 && \
         ip addr add 10.77.91.1/24 dev d1 && sysctl -qw net.ipv4.ip_forward=1",
    );
    sh(
        &r,
        "ip addr add 10.77.91.11/24 dev r0 && ip route add default via 10.77.91.1",
    );
    let daemon = Daemon::start(&d, &p, &["-i", "d0", "-i", "d1"]);
    for args in [
        &["-A", "-t", "10.77.90.100:80", "-s", "rr"][..],
        &[
            "-a",
            "-t",
            "10.77.90.100:80",
            "-r",
            "10.77.91.11:8080",
            "-m",
        ][..],
    ] {
        let out = Command::new(bin("xvsadm"))
            .env("XVS_SOCKET", &daemon.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = daemon.log_text();
    for q in 0..4 {
        for dev in ["d0", "d1"] {
            assert!(
                log.contains(&format!("queue={q} interface={dev}")),
                "no worker port for {dev} queue {q}:\n{log}"
            );
        }
    }

    let rx = stream_sink(&r, "0.0.0.0:8080", None);
    let conns = 64;
    for _ in 0..conns {
        send_stream(&c, "10.77.90.100:80", None, 4096).expect("connection through the VIP");
        let (n, ok) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the real server got it");
        assert!(n == 4096 && ok, "{n} bytes, intact {ok}");
    }
    let per_q = redirected_per_queue(&d, "d0");
    assert!(
        per_q.iter().all(|&n| n > 0),
        "client-side frames reached xvs on every RX queue: {per_q:?}"
    );
    let per_q = redirected_per_queue(&d, "d1");
    assert!(
        per_q.iter().all(|&n| n > 0),
        "real-server replies reached xvs on every RX queue: {per_q:?}"
    );
}
