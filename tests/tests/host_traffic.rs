//! The director's own traffic is never taken: with a NAT, a DR, a TUN and a
//! FULLNAT service active, the director reaches every real server's service
//! port and pings it (health checks, an operator's curl), and connections to
//! the director's own address pass untouched, while the services forward.

use std::process::Command;
use std::time::Duration;
use xvs_e2e::traffic::Line;
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

/// Sends 64 KiB from `from` to `to` and checks they arrived intact at `rx`.
fn exchange(from: &Netns, to: &str, rx: &std::sync::mpsc::Receiver<(u64, bool)>, what: &str) {
    send_stream(from, to, None, 65536).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (n, ok) = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what}: the server saw nothing"));
    assert!(n == 65536 && ok, "{what}: {n} bytes, intact {ok}");
}

#[test]
fn the_directors_own_connections_are_left_to_the_kernel() {
    require_root();
    let p = format!("{}-host", test_prefix());
    let Line { c, d, r } = Line::new(&p, 80);
    sh(
        &d,
        "ip addr add 10.77.81.200/32 dev d1 && \
         for v in 100 101 102 103; do ip addr add 10.77.80.$v/32 dev d0; done",
    );
    // One real-server host with an address per service; the director is its
    // gateway (NAT), it holds the DR VIP on lo.
    sh(
        &r,
        "ip addr add 10.77.81.11/24 dev r0 && ip addr add 10.77.81.12/24 dev r0 && \
         ip addr add 10.77.81.13/24 dev r0 && ip addr add 10.77.81.14/24 dev r0 && \
         ip addr add 10.77.80.101/32 dev lo && ip route add default via 10.77.81.1 && \
         sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
         net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.r0.rp_filter=0",
    );
    let daemon = Daemon::start(&d, &p, &["-i", "d0", "-i", "d1"]);
    for (svc, rs, fwd) in [
        ("10.77.80.100:80", "10.77.81.11:8080", "-m"),
        ("10.77.80.101:80", "10.77.81.12:80", "-g"),
        ("10.77.80.102:80", "10.77.81.13:80", "-i"),
        ("10.77.80.103:80", "10.77.81.14:8081", "--fullnat"),
    ] {
        xvsadm(&daemon, &["-A", "-t", svc, "-s", "rr"]);
        xvsadm(&daemon, &["-a", "-t", svc, "-r", rs, fwd]);
    }
    xvsadm(
        &daemon,
        &["-P", "-t", "10.77.80.103:80", "-z", "10.77.81.200"],
    );

    let nat_rs = stream_sink(&r, "0.0.0.0:8080", None);
    let port80 = stream_sink(&r, "0.0.0.0:80", None);
    let fnat_rs = stream_sink(&r, "0.0.0.0:8081", None);
    let own = stream_sink(&d, "0.0.0.0:2222", None);

    // The services forward (NAT and FULLNAT both ways through xvs).
    exchange(&c, "10.77.80.100:80", &nat_rs, "client → NAT VIP");
    exchange(&c, "10.77.80.103:80", &fnat_rs, "client → FULLNAT VIP");

    // The director's own connections to every real server's service port,
    // replies included (a NAT RS's replies come from a steered address:port).
    for (to, rx) in [
        ("10.77.81.11:8080", &nat_rs),
        ("10.77.81.12:80", &port80),
        ("10.77.81.13:80", &port80),
        ("10.77.81.14:8081", &fnat_rs),
    ] {
        exchange(&d, to, rx, &format!("director → {to}"));
        let host = to.split(':').next().unwrap();
        let out = d.exec(&["ping", "-c", "1", "-W", "2", host]).unwrap();
        assert!(out.status.success(), "director pings {host}");
    }
    // Connections to the director's own address, from both sides.
    exchange(&c, "10.77.80.1:2222", &own, "client → director");
    exchange(&r, "10.77.81.1:2222", &own, "real server → director");
    // And the services still forward afterwards.
    exchange(&c, "10.77.80.100:80", &nat_rs, "client → NAT VIP again");
}
