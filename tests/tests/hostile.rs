//! Hostile frames through a running xvsd: a corpus of malformed frames
//! (truncated at every offset, IHL and total-length lies, IPv6 extension
//! chains that never end, TCP data offsets out of range, bad checksums, tiny
//! and overlapping fragments, ICMP errors quoting other flows, stacked VLAN
//! tags) sent at the VIP and at the director, raw, from the client's side.
//! xvsd keeps running, counts what it was handed under its drop reason, and a
//! connection open through the VIP the whole time keeps working.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use xvs_e2e::{bin, require_root, Daemon};
use xvs_netns::{test_prefix, veth, Netns};

const VIP: [u8; 4] = [10, 77, 110, 100];
const CLIENT: [u8; 4] = [10, 77, 110, 2];
const DIRECTOR: [u8; 4] = [10, 77, 110, 1];

fn sh(ns: &Netns, script: &str) {
    let out = ns.sh(script).unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = ns
        .exec(&["cat", &format!("/sys/class/net/{dev}/address")])
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let mut m = [0u8; 6];
    for (i, p) in s.trim().split(':').enumerate() {
        m[i] = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 packet: header (with `opts` bytes of options) + `body`, valid
/// header checksum.
fn ip4(proto: u8, src: [u8; 4], dst: [u8; 4], frag: u16, body: &[u8]) -> Vec<u8> {
    let total = (20 + body.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x43, 0x21]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn tcp(sport: u16, dport: u16, flags: u8, doff: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        doff << 4,
        flags,
        0xff,
        0xff,
        0xde,
        0xad,
        0,
        0,
    ]);
    t
}

/// The corpus, each frame with the Ethernet header `eth` (and what it is).
fn corpus(eth: &[u8]) -> Vec<(String, Vec<u8>)> {
    let frame = |et: u16, tags: &[u16], l3: &[u8]| {
        let mut f = eth.to_vec();
        for t in tags {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0, 7]);
        }
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(l3);
        f
    };
    let syn = ip4(6, CLIENT, VIP, 0x4000, &tcp(41000, 80, 0x02, 5));
    let mut out = Vec::new();
    // A SYN to the VIP cut at every offset (bad checksums too: the TCP
    // checksum above is garbage).
    let whole = frame(0x0800, &[], &syn);
    for n in 14..whole.len() {
        out.push((format!("SYN cut at {n}"), whole[..n].to_vec()));
    }
    for dst in [VIP, DIRECTOR] {
        // IHL lies: below 5, and beyond the packet.
        for ihl in [0u8, 4, 15] {
            let mut p = ip4(6, CLIENT, dst, 0, &tcp(41001, 80, 0x02, 5));
            p[0] = 0x40 | ihl;
            out.push((format!("IHL {ihl}"), frame(0x0800, &[], &p)));
        }
        // Total length lies: shorter than the header, longer than the frame.
        for total in [8u16, 19, 1500, 65535] {
            let mut p = ip4(6, CLIENT, dst, 0, &tcp(41002, 80, 0x02, 5));
            p[2..4].copy_from_slice(&total.to_be_bytes());
            out.push((format!("total length {total}"), frame(0x0800, &[], &p)));
        }
        // TCP data offsets out of range.
        for doff in [0u8, 4, 15] {
            let p = ip4(6, CLIENT, dst, 0, &tcp(41003, 80, 0x02, doff));
            out.push((format!("data offset {doff}"), frame(0x0800, &[], &p)));
        }
        // Tiny and overlapping fragments.
        let tiny = ip4(6, CLIENT, dst, 0x2000, &[0xa0, 0x28, 0, 80]);
        out.push(("tiny first fragment".into(), frame(0x0800, &[], &tiny)));
        for off in [1u16, 1, 2] {
            let p = ip4(6, CLIENT, dst, off, &[0u8; 16]);
            out.push((format!("later fragment at {off}"), frame(0x0800, &[], &p)));
        }
        // ICMP errors quoting flows xvs does not have.
        let quoted = ip4(6, dst, CLIENT, 0, &tcp(80, 42000, 0x12, 5));
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[..28]);
        let p = ip4(1, CLIENT, dst, 0, &icmp);
        out.push((
            "ICMP error quoting another flow".into(),
            frame(0x0800, &[], &p),
        ));
        // Stacked VLAN tags.
        let p = ip4(6, CLIENT, dst, 0, &tcp(41004, 80, 0x02, 5));
        out.push((
            "three VLAN tags".into(),
            frame(0x0800, &[0x88a8, 0x8100, 0x8100], &p),
        ));
        out.push(("two VLAN tags".into(), frame(0x0800, &[0x88a8, 0x8100], &p)));
        // Non-SYN segments of unknown flows.
        let p = ip4(6, CLIENT, dst, 0, &tcp(41005, 80, 0x10, 5));
        out.push(("ACK of no flow".into(), frame(0x0800, &[], &p)));
    }
    // IPv6 extension chains that never end (destination options pointing at
    // themselves) and that run past the frame.
    let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 60, 64];
    v6.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    let mut endless = v6.clone();
    for _ in 0..40 {
        endless.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    let plen = (endless.len() - 40) as u16;
    endless[4..6].copy_from_slice(&plen.to_be_bytes());
    out.push((
        "endless IPv6 extension chain".into(),
        frame(0x86dd, &[], &endless),
    ));
    let mut past = v6.clone();
    past.extend_from_slice(&[60, 200, 1, 4]);
    past[4..6].copy_from_slice(&4u16.to_be_bytes());
    out.push((
        "IPv6 extension header past the end".into(),
        frame(0x86dd, &[], &past),
    ));
    out
}

fn metric(ns: &Netns, name: &str) -> u64 {
    let body = ns
        .run(|| {
            let mut s = TcpStream::connect("127.0.0.1:9182")?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut b = String::new();
            s.read_to_string(&mut b)?;
            Ok::<_, std::io::Error>(b)
        })
        .unwrap()
        .unwrap();
    body.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.split_whitespace().last())
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum()
}

#[test]
fn hostile_frames_are_counted_and_hurt_no_one() {
    require_root();
    let p = format!("{}-hostile", test_prefix());
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let r = Netns::new(&format!("{p}-r")).unwrap();
    veth("c0", &c, "d0", &d).unwrap();
    veth("d1", &d, "r0", &r).unwrap();
    sh(&c, "ip addr add 10.77.110.2/24 dev c0");
    sh(
        &d,
        "ip addr add 10.77.110.1/24 dev d0 && ip addr add 10.77.110.100/32 dev d0 && \
         ip addr add 10.77.111.1/24 dev d1 && sysctl -qw net.ipv4.ip_forward=1",
    );
    sh(
        &r,
        "ip addr add 10.77.111.11/24 dev r0 && ip route add default via 10.77.111.1",
    );
    let mut daemon = Daemon::start(
        &d,
        &p,
        &["-i", "d0", "-i", "d1", "--metrics", "127.0.0.1:9182"],
    );
    for args in [
        &["-A", "-t", "10.77.110.100:80", "-s", "rr"][..],
        &[
            "-a",
            "-t",
            "10.77.110.100:80",
            "-r",
            "10.77.111.11:8080",
            "-m",
        ][..],
    ] {
        let out = Command::new(bin("xvsadm"))
            .env("XVS_SOCKET", &daemon.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // An echo server on the RS, and a connection held open through the VIP.
    let l = r
        .run(|| std::net::TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut held = c
        .run(|| {
            TcpStream::connect_timeout(&"10.77.110.100:80".parse().unwrap(), Duration::from_secs(5))
        })
        .unwrap()
        .expect("connect through the VIP");
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo = |s: &mut TcpStream, round: u32| {
        let msg = format!("round {round}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut b = vec![0u8; msg.len()];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b, msg.as_bytes(), "the held connection echoes");
    };
    echo(&mut held, 0);

    // The corpus, sent raw on c0 three times over, between echoes.
    let mut eth = mac(&d, "d0").to_vec();
    eth.extend_from_slice(&mac(&c, "c0"));
    let frames = corpus(&eth);
    let file = std::env::temp_dir().join(format!("{p}.frames"));
    let hex: String = frames
        .iter()
        .map(|(_, f)| f.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    std::fs::write(&file, hex).unwrap();
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
                  s.bind(('c0',0))\n\
                  for l in open(sys.argv[1]):\n    s.send(bytes.fromhex(l.strip()))\n";
    for round in 1..=3 {
        let out = c
            .exec(&["python3", "-c", script, file.to_str().unwrap()])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        echo(&mut held, round);
    }
    let _ = std::fs::remove_file(&file);

    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "xvsd is still running:\n{}",
        daemon.log_text()
    );
    // What xvs was handed is counted by reason (the rest went to the kernel).
    for reason in [
        "truncated",
        "bad_header_len",
        "bad_total_len",
        "fragment_unknown",
        "not_syn",
    ] {
        let n = metric(&d, &format!("xvs_drops_total{{reason=\"{reason}\"}}"));
        assert!(n > 0, "drops counted as {reason}: {n}");
    }
    // And a new connection still goes through.
    let mut fresh = c
        .run(|| {
            TcpStream::connect_timeout(&"10.77.110.100:80".parse().unwrap(), Duration::from_secs(5))
        })
        .unwrap()
        .expect("a new connection after the corpus");
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    echo(&mut fresh, 9);
    daemon.stop("-TERM");
}
