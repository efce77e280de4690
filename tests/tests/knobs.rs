//! The DoS/behaviour knobs changed at run time with `xvsadm --knob` change
//! what a running xvsd does: with `sloppy_tcp` off a TCP segment that is not
//! a SYN, for no connection, is dropped (`not_syn`); switched on, the same
//! segment creates a connection and is forwarded to a real server (whose
//! RST comes back through xvs); switched off again, the next one is dropped
//! again.

use std::net::SocketAddrV4;
use std::time::Duration;
use xvs_e2e::traffic::{metric, scrape, sh, xvsadm, xvsadm_ok, Line};
use xvs_e2e::{raw, require_root, wait_for, Daemon};
use xvs_netns::test_prefix;

const VIP: &str = "10.77.120.100:80";
const RS: &str = "10.77.121.11:8080";
const METRICS: &str = "127.0.0.1:9191";

#[test]
fn sloppy_tcp_switched_at_run_time_changes_what_is_forwarded() {
    require_root();
    let p = format!("{}-knobs", test_prefix());
    let Line { c, d, r } = Line::new(&p, 120);
    sh(&d, "ip addr add 10.77.120.100/32 dev d0");
    sh(
        &r,
        "ip addr add 10.77.121.11/24 dev r0 && ip route add default via 10.77.121.1",
    );
    let daemon = Daemon::start(&d, &p, &["-i", "d0", "-i", "d1", "--metrics", METRICS]);
    xvsadm_ok(&daemon.socket, &["-A", "-t", VIP, "-s", "rr"]);
    xvsadm_ok(&daemon.socket, &["-a", "-t", VIP, "-r", RS, "-m"]);
    // The real server's MAC known to the director's kernel (and so to xvs)
    // before the first forwarded segment.
    sh(&d, "ping -c 1 -W 2 10.77.121.11 >/dev/null");
    assert!(wait_for(5, || {
        sh(&d, "ip neigh show 10.77.121.11").contains("lladdr")
    }));

    let (cmac, dmac) = (raw::mac(&c, "c0"), raw::mac(&d, "d0"));
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    let ack = |port: u16| {
        let src = SocketAddrV4::new("10.77.120.2".parse().unwrap(), port);
        raw::tcp4(dmac, cmac, src, vip, 0x10, 1000, 2000)
    };
    let conns = || xvsadm_ok(&daemon.socket, &["-L", "-c", "-n"]);
    let has_conn = |port: u16| conns().contains(&format!("10.77.120.2:{port} "));
    let not_syn = || {
        metric(
            &scrape(&d, METRICS).unwrap(),
            "xvs_drops_total{reason=\"not_syn\"}",
        )
    };
    let knob = |name: &str| -> String {
        xvsadm_ok(&daemon.socket, &["-L", "--knobs"])
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("{name} not listed"))
    };

    // Off (the kernel's default): dropped and counted, no connection.
    assert_eq!(knob("sloppy_tcp"), "0");
    let before = not_syn();
    raw::send(&c, "c0", &[ack(40001)]);
    assert!(
        wait_for(5, || not_syn() > before),
        "the ACK is dropped as not_syn"
    );
    assert!(!has_conn(40001), "{}", conns());

    // On: the same kind of segment makes a connection to the real server.
    xvsadm_ok(&daemon.socket, &["--knob", "sloppy_tcp=1"]);
    assert_eq!(knob("sloppy_tcp"), "1");
    let dropped = not_syn();
    raw::send(&c, "c0", &[ack(40002)]);
    assert!(wait_for(5, || has_conn(40002)), "a connection: {}", conns());
    // The real server got it: with nothing listening it answers with a RST,
    // which comes back through xvs (NAT) and closes the connection.
    let row = || {
        conns()
            .lines()
            .find(|l| l.contains("10.77.120.2:40002 "))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(
        wait_for(5, || row().contains("CLOSE ")),
        "the real server's RST came back: {}",
        row()
    );
    assert!(row().contains(VIP) && row().contains(RS), "{}", row());
    let stats = xvsadm_ok(&daemon.socket, &["-L", "-n", "--stats", "--exact"]);
    let rs_line = stats.lines().find(|l| l.contains(RS)).unwrap();
    let rs_conns: u64 = rs_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(rs_conns, 1, "scheduled to the real server: {stats}");
    assert_eq!(not_syn(), dropped, "nothing more dropped as not_syn");

    // Off again: the next one is dropped again; a bad value changes nothing.
    xvsadm_ok(&daemon.socket, &["--knob", "net.ipv4.vs.sloppy_tcp=0"]);
    let out = xvsadm(&daemon.socket, &["--knob", "sloppy_tcp=1", "secure_tcp=4"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(knob("sloppy_tcp"), "0", "all or nothing");
    raw::send(&c, "c0", &[ack(40003)]);
    assert!(wait_for(5, || not_syn() > dropped));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!has_conn(40003), "{}", conns());
}
