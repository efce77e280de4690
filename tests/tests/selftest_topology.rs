//! The Linux kernel's own IPVS selftest topology
//! (tools/testing/selftests/net/netfilter/ipvs.sh), with kernel IPVS replaced
//! by `xvsd -i veth10 -i veth12` and `xvsadm`, nothing else changed: the
//! interfaces keep their default features (checksum offload, TSO, GRO on).
//! Addresses are the script's, moved into the lab range:
//! cip 10.0.0.2 → 10.77.70.2, gip 10.0.0.1 → 10.77.70.1, sip 10.0.0.3 →
//! 10.77.70.3, dip 172.16.0.1 → 10.77.71.1, rip 172.16.0.2 → 10.77.71.2,
//! vip 207.175.44.110 → 10.77.72.110.
//!
//! ```text
//!      ns0 (client)            ns1 (director)
//!   veth01 ─┐ br0       ─── veth10      veth12 ───┐
//!   veth02 ─┘ (cip)                                │
//!      │                       ns2 (real server)   │
//!      └──────────── veth20 (sip)     veth21 (rip) ┘
//! ```

use std::process::Command;
use std::time::Duration;
use xvs_e2e::{bin, require_root, send_stream, stream_sink, Daemon};
use xvs_netns::{test_prefix, Netns};

const VIP: &str = "10.77.72.110";
const RIP: &str = "10.77.71.2";
const PORT: u16 = 8080;

struct Topo {
    ns0: Netns,
    ns1: Netns,
    ns2: Netns,
}

/// `setup()` of the script.
fn setup(tag: &str) -> Topo {
    let p = format!("{}-{tag}", test_prefix());
    let ns0 = Netns::new(&format!("{p}-0")).unwrap();
    let ns1 = Netns::new(&format!("{p}-1")).unwrap();
    let ns2 = Netns::new(&format!("{p}-2")).unwrap();
    let link = |a: &str, na: &Netns, b: &str, nb: &Netns| {
        let out = Command::new("ip")
            .args([
                "link",
                "add",
                a,
                "netns",
                na.name(),
                "type",
                "veth",
                "peer",
                "name",
                b,
            ])
            .args(["netns", nb.name()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    link("veth01", &ns0, "veth10", &ns1);
    link("veth02", &ns0, "veth20", &ns2);
    link("veth12", &ns1, "veth21", &ns2);
    for (ns, script) in [
        (
            &ns0,
            "ip link set lo up && ip link set veth01 up && ip link set veth02 up && \
             ip link add br0 type bridge && ip link set veth01 master br0 && \
             ip link set veth02 master br0 && ip link set br0 up && \
             ip addr add 10.77.70.2/24 dev br0",
        ),
        (
            &ns1,
            "ip link set lo up && ip link set veth10 up && ip addr add 10.77.70.1/24 dev veth10 && \
             ip link set veth12 up && ip addr add 10.77.71.1/24 dev veth12",
        ),
        (
            &ns2,
            "ip link set lo up && ip link set veth21 up && ip addr add 10.77.71.2/24 dev veth21 && \
             ip link set veth20 up && ip addr add 10.77.70.3/24 dev veth20",
        ),
    ] {
        let out = ns.sh(script).unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Topo { ns0, ns1, ns2 }
}

fn sh(ns: &Netns, script: &str) {
    let out = ns.sh(script).unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn xvsadm(d: &Daemon, args: &[&str]) {
    let out = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &d.socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xvsadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `test_service()`: a short random payload (the script's 32 bytes), then a
/// 10 MB stream, each received intact by the real server.
fn test_service(t: &Topo) {
    let payload: Vec<u8> = (0..32u64)
        .map(|i| xvs_e2e::pattern_byte(i * 7919 + 11))
        .collect();
    let to = format!("{VIP}:{PORT}");
    let rx = stream_sink(&t.ns2, &format!("0.0.0.0:{PORT}"), Some(payload.clone()));
    send_stream(&t.ns0, &to, Some(&payload), 0).expect("32-byte payload through the VIP");
    let (n, ok) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server got the connection");
    assert!(ok && n == 32, "32-byte payload: {n} bytes, intact {ok}");
}

fn bulk(t: &Topo, d: &Daemon, fwd: &str) {
    let port = PORT + 1;
    let svc = format!("{VIP}:{port}");
    xvsadm(d, &["-A", "-t", &svc, "-s", "rr"]);
    xvsadm(d, &["-a", "-t", &svc, "-r", &format!("{RIP}:{port}"), fwd]);
    let rx = stream_sink(&t.ns2, &format!("0.0.0.0:{port}"), None);
    let len = 10_000_000u64;
    send_stream(&t.ns0, &svc, None, len).expect("10 MB through the VIP");
    let (n, ok) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server got the stream");
    assert_eq!(n, len, "10 MB arrived");
    assert!(ok, "10 MB intact");
}

#[test]
fn dr_in_the_kernel_selftest_topology() {
    require_root();
    let t = setup("stdr");
    // test_dr()
    sh(
        &t.ns0,
        &format!("ip route add {VIP} via 10.77.70.1 dev br0"),
    );
    sh(&t.ns1, "sysctl -qw net.ipv4.ip_forward=1");
    let d = Daemon::start(
        &t.ns1,
        &format!("{}-stdr", test_prefix()),
        &["-i", "veth10", "-i", "veth12"],
    );
    xvsadm(&d, &["-A", "-t", &format!("{VIP}:{PORT}"), "-s", "rr"]);
    xvsadm(
        &d,
        &[
            "-a",
            "-t",
            &format!("{VIP}:{PORT}"),
            "-r",
            &format!("{RIP}:{PORT}"),
        ],
    );
    sh(&t.ns1, &format!("ip addr add {VIP}/32 dev lo"));
    sh(
        &t.ns2,
        "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
         net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.veth21.rp_filter=0",
    );
    sh(&t.ns2, &format!("ip addr add {VIP}/32 dev lo"));
    test_service(&t);
    bulk(&t, &d, "-g");
}

#[test]
fn nat_in_the_kernel_selftest_topology() {
    require_root();
    let t = setup("stnat");
    // test_nat()
    sh(
        &t.ns0,
        &format!("ip route add {VIP} via 10.77.70.1 dev br0"),
    );
    sh(&t.ns1, "sysctl -qw net.ipv4.ip_forward=1");
    let d = Daemon::start(
        &t.ns1,
        &format!("{}-stnat", test_prefix()),
        &["-i", "veth10", "-i", "veth12"],
    );
    xvsadm(&d, &["-A", "-t", &format!("{VIP}:{PORT}"), "-s", "rr"]);
    xvsadm(
        &d,
        &[
            "-a",
            "-m",
            "-t",
            &format!("{VIP}:{PORT}"),
            "-r",
            &format!("{RIP}:{PORT}"),
        ],
    );
    sh(&t.ns1, &format!("ip addr add {VIP}/32 dev lo"));
    sh(&t.ns2, "ip link del veth20");
    sh(&t.ns2, "ip route add default via 10.77.71.1 dev veth21");
    test_service(&t);
    bulk(&t, &d, "-m");
}
