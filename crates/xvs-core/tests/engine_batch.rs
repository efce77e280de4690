//! New connections made in a burst (`prepare`, each frame, `finish_batch`, as
//! the data path runs the engine): their reply keys are indexed at the end of
//! the burst. Asserted: the frames are byte for byte those of the same
//! packets sent one at a time, every reply finds its connection after the
//! burst, and a sweep that removes the burst's connections before the burst
//! ends leaves the table and the dest counters as if they never were.

mod common;
use common::*;
use xvs_core::engine::{DropReason, Verdict};

const VIP: &str = "10.77.0.100";
const VIP6: &str = "fd77::100";

/// NAT and FULLNAT services, v4 and v6, two real servers each.
fn lab() -> Lab {
    let mut lab = Lab::new(4096);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:8080 -m");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:8080 -m");
    lab.cmd("-A -u 10.77.0.100:53 -s rr");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.11:53 -m");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.12:53 -m");
    lab.cmd("-A -t [fd77::100]:80 -s rr");
    lab.cmd("-a -t [fd77::100]:80 -r [fd77::1:11]:8080 -m");
    lab.cmd("-a -t [fd77::100]:80 -r [fd77::1:12]:8080 -m");
    lab.cmd("-A -t 10.77.0.100:81 -s rr");
    lab.cmd("-a -t 10.77.0.100:81 -r 10.77.1.13:80 --fullnat");
    let key = parse_svc("-t", "10.77.0.100:81");
    lab.rules.laddrs = vec![(key, vec![ip("10.77.1.200")])];
    lab.publish();
    lab
}

/// 48 first packets of new connections over the four services, with one
/// SYN repeated inside the burst (it must find the connection its first
/// copy made).
fn burst() -> Vec<Vec<u8>> {
    let mut f = Vec::new();
    for i in 0..12u16 {
        let c = format!("10.77.0.{}", 2 + i);
        let c6 = format!("fd77::{:x}", 2 + i);
        f.push(tcp_frame(
            CLIENT_MAC,
            DIR_CLI_MAC,
            (&c, 40000 + i),
            (VIP, 80),
            "S",
            b"",
        ));
        f.push(udp_frame(
            CLIENT_MAC,
            DIR_CLI_MAC,
            (&c, 50000 + i),
            (VIP, 53),
            b"q",
        ));
        f.push(tcp_frame(
            CLIENT_MAC,
            DIR_CLI_MAC,
            (&c6, 40000 + i),
            (VIP6, 80),
            "S",
            b"",
        ));
        f.push(tcp_frame(
            CLIENT_MAC,
            DIR_CLI_MAC,
            (&c, 41000 + i),
            (VIP, 81),
            "S",
            b"",
        ));
    }
    f.insert(5, f[0].clone());
    f
}

/// The reply of the server to a forwarded first packet (addresses and ports
/// swapped, a SYN-ACK for TCP).
fn reply(fwd: &[u8]) -> Vec<u8> {
    let s = seen(fwd);
    let (src, dst) = (s.dst.to_string(), s.src.to_string());
    if s.proto == 17 {
        udp_frame(s.dst_mac, s.src_mac, (&src, s.dport), (&dst, s.sport), b"a")
    } else {
        tcp_frame(
            s.dst_mac,
            s.src_mac,
            (&src, s.dport),
            (&dst, s.sport),
            "SA",
            b"",
        )
    }
}

#[test]
fn a_burst_forwards_as_one_by_one_and_its_replies_find_their_conns() {
    let frames = burst();
    let mut one = lab();
    let singly: Vec<_> = frames.iter().map(|f| one.send(f, PORT_CLI)).collect();
    let mut many = lab();
    let batched = many.send_batch(&frames, PORT_CLI);
    assert_eq!(batched.len(), singly.len());
    for (k, (b, s)) in batched.iter().zip(&singly).enumerate() {
        assert_eq!(b.0, Verdict::Tx(PORT_RS), "frame {k}");
        assert_eq!(b, s, "frame {k}: burst and one-by-one differ");
    }
    many.engine
        .conns
        .check_invariants()
        .expect("every reply key indexed after the burst");
    assert_eq!(many.engine.conns.live(), 48, "the repeated SYN made none");
    // Every reply finds its connection and goes back to the client, from the VIP.
    let replies: Vec<_> = batched.iter().map(|(_, f)| reply(f)).collect();
    for (k, r) in many.send_batch(&replies, PORT_RS).into_iter().enumerate() {
        assert_eq!(r.0, Verdict::Tx(PORT_CLI), "reply {k}");
        let s = seen(&r.1);
        assert!(
            s.src == ip(VIP) || s.src == ip(VIP6),
            "reply {k} from {}",
            s.src
        );
    }
    for rip in ["10.77.1.11:8080", "10.77.1.12:8080"] {
        assert_eq!(
            many.counts(&format!("{VIP}:80"), rip),
            one.counts(&format!("{VIP}:80"), rip)
        );
    }
}

#[test]
fn conns_swept_before_their_burst_ends_leave_nothing_behind() {
    let frames = burst();
    let mut lab = lab();
    let out = lab.send_batch_with(&frames, PORT_CLI, |lab| {
        // Another thread's sweep, past every first-packet timeout, while the
        // burst's reply keys are still pending.
        assert_eq!(lab.engine.conns.live(), 48);
        lab.advance(1000);
        lab.sweep();
        assert_eq!(lab.engine.conns.live(), 0);
    });
    assert!(out.iter().all(|(v, _)| *v == Verdict::Tx(PORT_RS)));
    let census = lab
        .engine
        .conns
        .check_invariants()
        .expect("no slot left behind");
    assert_eq!(census.live, 0);
    assert_eq!(
        lab.counts(&format!("{VIP}:80"), "10.77.1.11:8080"),
        (0, 0, 0)
    );
    assert_eq!(
        lab.counts_of("-u", &format!("{VIP}:53"), "10.77.1.12:53"),
        (0, 0, 0)
    );
    assert_eq!(lab.drops(DropReason::ConnTableFull), 0);
    // Their entries were freed, each once: they serve the same burst again.
    let again = lab.send_batch(&frames, PORT_CLI);
    assert!(again.iter().all(|(v, _)| *v == Verdict::Tx(PORT_RS)));
    assert_eq!(lab.engine.conns.check_invariants().unwrap().live, 48);
}
