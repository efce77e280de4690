//! Super-frames with every interface at its default features (no ethtool
//! anywhere): local senders on the other end of a veth hand xvsd TSO/GSO
//! frames far above the MTU under generic XDP and AF_PACKET, and xvsd cuts
//! them. 100 MB through a NAT service (real server → client) and through a DR
//! service (client → real server, the direction the director carries), each
//! verified byte for byte, for `--backend xdp-generic` and `--backend
//! af-packet`; the super-frame counters come from xvsd's metrics.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use xvs_e2e::Daemon;
use xvs_netns::{test_prefix, veth, Netns};

const TOTAL: usize = 100 * 1024 * 1024;
/// The pattern repeats every PERIOD bytes: a prime, so no segment size
/// lines up with it and a misplaced segment cannot match by chance.
const PERIOD: usize = 65521;
const METRICS: &str = "127.0.0.1:9177";
/// A transfer that takes longer has stalled (it takes 2–3 s on the 2-core CI
/// machine with debug binaries).
const DEADLINE: Duration = Duration::from_secs(30);

/// One transfer at a time: each keeps both cores busy.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pattern() -> Vec<u8> {
    // Twice the period plus a chunk, so any offset has a contiguous run.
    (0..2 * PERIOD + 65536)
        .map(|i| {
            let j = i % PERIOD;
            (j ^ (j >> 8) ^ (j >> 13)) as u8
        })
        .collect()
}

/// Writes `total` bytes of the pattern.
fn send_pattern(s: &mut TcpStream, pat: &[u8], total: usize) {
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < total {
        assert!(
            t0.elapsed() < DEADLINE,
            "stalled after sending {sent} bytes"
        );
        let off = sent % PERIOD;
        let n = (total - sent).min(65536);
        s.write_all(&pat[off..off + n]).expect("send");
        sent += n;
    }
}

/// Reads until EOF, checking every byte against the pattern; returns the
/// count (panics at the first differing byte).
fn check_pattern(s: &mut TcpStream, pat: &[u8]) -> usize {
    let t0 = Instant::now();
    let mut buf = vec![0u8; 1 << 18];
    let mut got = 0usize;
    loop {
        assert!(
            t0.elapsed() < DEADLINE,
            "stalled after receiving {got} bytes"
        );
        let n = match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => n,
            Err(e) => panic!("read after {got} bytes: {e}"),
        };
        let mut at = 0;
        while at < n {
            let off = (got + at) % PERIOD;
            let m = (n - at).min(pat.len() - off);
            if buf[at..at + m] != pat[off..off + m] {
                let i = (0..m).find(|&i| buf[at + i] != pat[off + i]).unwrap();
                panic!("byte {} differs from the pattern", got + at + i);
            }
            at += m;
        }
        got += n;
    }
}

/// A server on `addr` in `ns` for one connection: with `upload`, it reads
/// and checks the pattern until EOF and answers the byte count (8 bytes);
/// otherwise it sends `TOTAL` bytes of the pattern and closes.
fn server(ns: &Netns, addr: &str, upload: bool) -> std::thread::JoinHandle<usize> {
    let l = ns.run(|| TcpListener::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let pat = pattern();
        if upload {
            let n = check_pattern(&mut s, &pat);
            s.write_all(&(n as u64).to_be_bytes()).unwrap();
            n
        } else {
            send_pattern(&mut s, &pat, TOTAL);
            s.shutdown(Shutdown::Write).unwrap();
            TOTAL
        }
    })
}

/// Connects from `ns` to `to` and runs the transfer the server expects;
/// returns (bytes verified, seconds).
fn client(ns: &Netns, to: &str, upload: bool) -> (usize, f64) {
    let to: SocketAddr = to.parse().unwrap();
    let mut s = ns
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap()
        .expect("TCP connection through the VIP");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let pat = pattern();
    let t0 = Instant::now();
    let n = if upload {
        send_pattern(&mut s, &pat, TOTAL);
        s.shutdown(Shutdown::Write).unwrap();
        let mut b = [0u8; 8];
        s.read_exact(&mut b).expect("the server's byte count");
        u64::from_be_bytes(b) as usize
    } else {
        check_pattern(&mut s, &pat)
    };
    (n, t0.elapsed().as_secs_f64())
}

/// xvsd's metrics, from inside the director's namespace.
fn metrics(d: &Netns) -> String {
    d.run(|| {
        let mut s = TcpStream::connect(METRICS).expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// The sum of a metric's samples whose labels contain `filter`.
fn metric(text: &str, name: &str, filter: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn write_rules(tag: &str, rules: &str) -> String {
    let p = std::env::temp_dir().join(format!("{}-{tag}.rules", test_prefix()));
    std::fs::write(&p, rules).unwrap();
    p.to_string_lossy().into_owned()
}

fn daemon(d: &Netns, tag: &str, ifaces: &[&str], rules: &str, backend: &str) -> Daemon {
    let mut args = Vec::new();
    for i in ifaces {
        args.extend(["-i", i]);
    }
    args.extend(["--rules", rules, "--backend", backend, "--metrics", METRICS]);
    let dm = Daemon::start(d, &format!("{}-{tag}", test_prefix()), &args);
    assert!(
        dm.log_text().contains(&format!("backend={backend}")),
        "{}",
        dm.log_text()
    );
    dm
}

/// The transfer's result and xvsd's counters; fails on any drop of a
/// super-frame or a short transfer.
fn check(d: &Netns, dm: &Daemon, what: &str, got: (usize, f64), srv: usize) {
    let (n, secs) = got;
    assert_eq!(n, TOTAL, "{what}: bytes verified");
    assert_eq!(srv, TOTAL, "{what}: bytes the server handled");
    let m = metrics(d);
    let sf = metric(&m, "xvs_io_superframes_total", "");
    let segs = metric(&m, "xvs_io_superframe_segments_total", "");
    let drops = metric(&m, "xvs_io_superframe_drops_total", "");
    eprintln!(
        "{what}: {} MB verified in {secs:.1} s ({:.0} Mbit/s); {sf} super-frames cut into {segs} segments, {drops} super-frames dropped",
        TOTAL >> 20,
        TOTAL as f64 * 8.0 / secs / 1e6
    );
    assert!(
        sf > 0,
        "{what}: no super-frame reached xvsd (offloads off?)\n{m}"
    );
    assert!(segs > sf, "{what}: {segs} segments from {sf} super-frames");
    assert_eq!(drops, 0, "{what}: super-frames dropped\n{m}");
    assert!(
        dm.log_text().lines().all(|l| !l.contains("refused")),
        "{}",
        dm.log_text()
    );
}

/// client — director (two arms) — real server, the director the RS's
/// gateway; 100 MB from the RS to the client through a NAT service, over
/// IPv4 or IPv6 (fd77::60:0/112 and fd77::61:0/112).
fn nat(tag: &str, backend: &str, v6: bool) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let p = format!("{}-{tag}", test_prefix());
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let r = Netns::new(&format!("{p}-r")).unwrap();
    veth("c0", &c, "d0", &d).unwrap();
    veth("d1", &d, "r0", &r).unwrap();
    let (vip, rs) = if v6 {
        c.sh("ip -6 addr add fd77::60:2/112 dev c0 nodad").unwrap();
        d.sh("ip -6 addr add fd77::60:1/112 dev d0 nodad && \
             ip -6 addr add fd77::60:100/112 dev d0 nodad && \
             ip -6 addr add fd77::61:1/112 dev d1 nodad && \
             sysctl -qw net.ipv6.conf.all.forwarding=1")
            .unwrap();
        r.sh(
            "ip -6 addr add fd77::61:11/112 dev r0 nodad && ip -6 route add default via fd77::61:1",
        )
        .unwrap();
        ("[fd77::60:100]:80", "[fd77::61:11]:8080")
    } else {
        c.sh("ip addr add 10.77.60.2/24 dev c0").unwrap();
        d.sh(
            "ip addr add 10.77.60.1/24 dev d0 && ip addr add 10.77.60.100/24 dev d0 && \
             ip addr add 10.77.61.1/24 dev d1 && sysctl -qw net.ipv4.ip_forward=1",
        )
        .unwrap();
        r.sh("ip addr add 10.77.61.11/24 dev r0 && ip route add default via 10.77.61.1")
            .unwrap();
        ("10.77.60.100:80", "10.77.61.11:8080")
    };
    let rules = write_rules(tag, &format!("-A -t {vip} -s rr\n-a -t {vip} -r {rs} -m\n"));
    let dm = daemon(&d, tag, &["d0", "d1"], &rules, backend);
    let srv = server(&r, rs, false);
    let got = client(&c, vip, false);
    let srv = srv.join().unwrap();
    let fam = if v6 { "IPv6" } else { "IPv4" };
    check(
        &d,
        &dm,
        &format!("NAT {fam} {backend}, RS → client"),
        got,
        srv,
    );
}

/// client, director and RS on one bridge; 100 MB from the client to the RS
/// through a DR service (the RS answers the client directly).
fn dr(tag: &str, backend: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let p = format!("{}-{tag}", test_prefix());
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
    c.sh("ip addr add 10.77.62.2/24 dev c0").unwrap();
    d.sh("ip addr add 10.77.62.1/24 dev d0 && ip addr add 10.77.62.100/24 dev d0")
        .unwrap();
    r.sh(
        "ip addr add 10.77.62.11/24 dev r0 && ip addr add 10.77.62.100/32 dev lo && \
         sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
         net.ipv4.conf.r0.arp_ignore=1 net.ipv4.conf.r0.arp_announce=2",
    )
    .unwrap();
    let rules = write_rules(
        tag,
        "-A -t 10.77.62.100:80 -s rr\n-a -t 10.77.62.100:80 -r 10.77.62.11 -g\n",
    );
    let dm = daemon(&d, tag, &["d0"], &rules, backend);
    let srv = server(&r, "10.77.62.100:80", true);
    let got = client(&c, "10.77.62.100:80", true);
    let srv = srv.join().unwrap();
    check(&d, &dm, &format!("DR {backend}, client → RS"), got, srv);
}

#[test]
fn nat_generic_xdp_100mb() {
    xvs_netns::require_root();
    nat("sfng", "xdp-generic", false);
}

#[test]
fn dr_generic_xdp_100mb() {
    xvs_netns::require_root();
    dr("sfdg", "xdp-generic");
}

#[test]
fn nat_af_packet_100mb() {
    xvs_netns::require_root();
    nat("sfna", "af-packet", false);
}

#[test]
fn nat_generic_xdp_ipv6_100mb() {
    xvs_netns::require_root();
    nat("sfn6", "xdp-generic", true);
}

#[test]
fn dr_af_packet_100mb() {
    xvs_netns::require_root();
    dr("sfda", "af-packet");
}
