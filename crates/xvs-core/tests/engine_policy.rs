//! Scheduling policy on the packet path: persistence templates, thresholds,
//! weight 0, removed dests, connection reuse, one-packet scheduling, ICMP errors
//! and fragments.

mod common;
use common::*;
use xvs_core::engine::{DropReason, Verdict};

const VIP: &str = "10.77.0.100";
const CIP: &str = "10.77.0.2";

/// Sends a SYN from `cport` and returns the real server it went to.
fn rs_of_syn(lab: &mut Lab, cip: &str, cport: u16) -> Option<String> {
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (cip, cport), (VIP, 80), "S", b"");
    match lab.send(&syn, PORT_CLI) {
        (Verdict::Tx(PORT_RS), out) => Some(seen(&out).dst.to_string()),
        _ => None,
    }
}

fn three_rs(sched: &str, extra: &str) -> Lab {
    let mut lab = Lab::new(4096);
    lab.cmd(format!("-A -t 10.77.0.100:80 -s {sched} {extra}").trim());
    for i in 11..=13 {
        lab.cmd(&format!("-a -t 10.77.0.100:80 -r 10.77.1.{i}:80 -m"));
    }
    lab
}

#[test]
fn rr_alternates_in_kernel_order() {
    let mut lab = three_rs("rr", "");
    // Dests are kept newest first (.13, .12, .11); the rr cursor starts at the
    // list head, so the first pick is the newest dest.
    let got: Vec<_> = (0..6)
        .map(|p| rs_of_syn(&mut lab, CIP, 2000 + p).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "10.77.1.13",
            "10.77.1.12",
            "10.77.1.11",
            "10.77.1.13",
            "10.77.1.12",
            "10.77.1.11"
        ]
    );
}

#[test]
fn persistence_pins_a_client_until_the_template_expires() {
    let mut lab = three_rs("rr", "-p 60");
    let first = rs_of_syn(&mut lab, CIP, 3000).unwrap();
    for p in 3001..3010 {
        assert_eq!(
            rs_of_syn(&mut lab, CIP, p).unwrap(),
            first,
            "same client, same RS"
        );
    }
    // Another client is scheduled (rr moves on).
    let other = rs_of_syn(&mut lab, "10.77.0.3", 3000).unwrap();
    assert_ne!(other, first);
    let (_, _, persist) = lab.counts("10.77.0.100:80", &format!("{first}:80"));
    assert_eq!(persist, 1, "one template");
    // One connection established (900 s); the others stay in SYN_RECV and
    // end with the template's 60 s.
    let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 3000), (VIP, 80), "A", b"");
    let _ = lab.send(&ack, PORT_CLI);
    lab.advance(61);
    lab.sweep();
    // The template controlled a connection at its expiry: re-armed for 60 s.
    assert_eq!(lab.counts("10.77.0.100:80", &format!("{first}:80")).2, 1);
    let rst = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 3000), (VIP, 80), "R", b"");
    let _ = lab.send(&rst, PORT_CLI);
    lab.advance(61);
    lab.sweep();
    assert_eq!(
        lab.counts("10.77.0.100:80", &format!("{first}:80")).2,
        0,
        "template gone"
    );
    // Now the client is scheduled afresh: rr continues after `other`.
    let next = rs_of_syn(&mut lab, CIP, 3100).unwrap();
    assert_ne!(next, other);
}

#[test]
fn persistence_netmask_groups_clients() {
    let mut lab = three_rs("rr", "-p 300 -M 255.255.255.0");
    let a = rs_of_syn(&mut lab, "10.77.0.2", 1).unwrap();
    let b = rs_of_syn(&mut lab, "10.77.0.3", 1).unwrap();
    assert_eq!(a, b, "same /24, same template");
}

#[test]
fn persistence_honoured_even_when_dest_is_overloaded() {
    let mut lab = Lab::new(4096);
    lab.cmd("-A -t 10.77.0.100:80 -s rr -p 300");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -m -x 1");
    let first = rs_of_syn(&mut lab, CIP, 1).unwrap();
    assert_eq!(first, "10.77.1.12", "rr picks the list head (newest) first");
    // .12 is now overloaded (1 conn, -x 1), but the template still sends the client there.
    assert_eq!(rs_of_syn(&mut lab, CIP, 2).unwrap(), "10.77.1.12");
    // A new client cannot go to the overloaded .12.
    assert_eq!(rs_of_syn(&mut lab, "10.77.0.9", 1).unwrap(), "10.77.1.11");
}

#[test]
fn upper_threshold_sends_new_conns_elsewhere_until_below_lower() {
    let mut lab = Lab::new(4096);
    // fo (weighted failover) always picks the heaviest available dest, so the
    // threshold alone decides when .11 stops taking conns.
    lab.cmd("-A -t 10.77.0.100:80 -s fo");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m -w 100 -x 2");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -m -w 1");
    // The first two go to .11; binding the second reaches -x 2: overloaded.
    assert_eq!(rs_of_syn(&mut lab, CIP, 1).unwrap(), "10.77.1.11");
    assert_eq!(rs_of_syn(&mut lab, CIP, 2).unwrap(), "10.77.1.11");
    assert_eq!(rs_of_syn(&mut lab, CIP, 3).unwrap(), "10.77.1.12");
    // Establish and reset the two conns on .11 (a RST in SYN_RECV leaves the
    // state as it is, per the table): once they expire, 0 conns is below 3/4
    // of 2 and .11 is readmitted.
    for p in [1, 2] {
        let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, p), (VIP, 80), "A", b"");
        let _ = lab.send(&ack, PORT_CLI);
        let rst = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, p), (VIP, 80), "R", b"");
        let _ = lab.send(&rst, PORT_CLI);
    }
    // CLOSE lasts 10 s; the counters settle at the sweep.
    lab.advance(11);
    lab.sweep();
    assert_eq!(rs_of_syn(&mut lab, CIP, 4).unwrap(), "10.77.1.11");
}

#[test]
fn weight_zero_gets_no_new_conns_but_keeps_old_ones() {
    let mut lab = Lab::new(4096);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    let rs = rs_of_syn(&mut lab, CIP, 1).unwrap();
    assert_eq!(rs, "10.77.1.11");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -m");
    lab.cmd("-e -t 10.77.0.100:80 -r 10.77.1.11:80 -m -w 0");
    for p in 2..6 {
        assert_eq!(rs_of_syn(&mut lab, CIP, p).unwrap(), "10.77.1.12");
    }
    let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 1), (VIP, 80), "A", b"x");
    let (v, out) = lab.send(&ack, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(
        seen(&out).dst,
        ip("10.77.1.11"),
        "existing conn still flows"
    );
}

#[test]
fn removed_dest_follows_expire_nodest_conn() {
    let mut lab = Lab::new(4096);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -m");
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 7), (VIP, 80), "S", b"");
    let (_, out) = lab.send(&syn, PORT_CLI);
    let rs = seen(&out).dst.to_string();
    lab.cmd(&format!("-d -t 10.77.0.100:80 -r {rs}:80"));
    let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 7), (VIP, 80), "A", b"");
    // Default (0): packets of the conn are dropped.
    assert_eq!(
        lab.send(&ack, PORT_CLI).0,
        Verdict::Drop(DropReason::DestUnavailable)
    );
    // With expire_nodest_conn = 1 the conn is expired and a SYN is rescheduled.
    lab.rules.knobs.expire_nodest_conn = true;
    lab.publish();
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_ne!(seen(&out).dst.to_string(), rs);
}

#[test]
fn syn_on_time_wait_conn_is_rescheduled() {
    let mut lab = three_rs("rr", "");
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 9), (VIP, 80), "S", b"");
    let (_, out) = lab.send(&syn, PORT_CLI);
    let first = seen(&out).dst;
    // SYN_RECV -ack-> ESTABLISHED -rst-> CLOSE.
    let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 9), (VIP, 80), "A", b"");
    let _ = lab.send(&ack, PORT_CLI);
    let rst = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 9), (VIP, 80), "R", b"");
    let _ = lab.send(&rst, PORT_CLI);
    let (_, out) = lab.send(&syn, PORT_CLI);
    assert_ne!(
        seen(&out).dst,
        first,
        "conn_reuse_mode: a new conn, scheduled by rr"
    );
}

#[test]
fn one_packet_scheduling_schedules_every_datagram() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -u 10.77.0.100:53 -s rr -o");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.11:53 -m");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.12:53 -m");
    let q = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 5000), (VIP, 53), b"q");
    let a = seen(&lab.send(&q, PORT_CLI).1).dst;
    let b = seen(&lab.send(&q, PORT_CLI).1).dst;
    assert_ne!(a, b, "same 5-tuple, scheduled twice");
    assert_eq!(lab.engine.conns.live(), 0, "no connection kept");
}

/// An ICMP error frame quoting `inner` (an IP packet starting at its IP header).
fn icmp_error_v4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    ty: u8,
    code: u8,
    inner: &[u8],
) -> Vec<u8> {
    let quoted = &inner[..inner.len().min(28)];
    let mut icmp = vec![ty, code, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend_from_slice(quoted);
    let ck = !fold_sum(&icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let total = 20 + icmp.len();
    let s: std::net::Ipv4Addr = src.parse().unwrap();
    let d: std::net::Ipv4Addr = dst.parse().unwrap();
    let mut iph = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        1,
        0,
        0,
    ];
    iph.extend_from_slice(&s.octets());
    iph.extend_from_slice(&d.octets());
    let ck = !fold_sum(&iph);
    iph[10..12].copy_from_slice(&ck.to_be_bytes());
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&iph);
    f.extend_from_slice(&icmp);
    f
}

fn fold_sum(b: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in b.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[test]
fn icmp_errors_follow_nat_connections_both_ways() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -u 10.77.0.100:53 -s rr");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.11:5353 -m");
    let q = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 33000), (VIP, 53), b"q");
    let (_, fwd) = lab.send(&q, PORT_CLI);
    // The RS answers with port unreachable quoting what it got (CIP -> RIP:5353).
    let err = icmp_error_v4(rs_mac(11), DIR_RS_MAC, "10.77.1.11", CIP, 3, 3, &fwd[14..]);
    let (v, out) = lab.send(&err, PORT_RS);
    assert_eq!(v, Verdict::Tx(PORT_CLI));
    let s = seen(&out);
    assert_eq!(
        (s.src, s.dst),
        (ip(VIP), ip(CIP)),
        "outer source translated to the VIP"
    );
    let inner = &out[14 + 20 + 8..];
    assert!(
        ipv4_header_ok(&inner[..20]),
        "quoted IP header checksum fixed"
    );
    assert_eq!(
        &inner[16..20],
        &[10, 77, 0, 100],
        "quoted destination is the VIP again"
    );
    assert_eq!(
        u16::from_be_bytes([inner[22], inner[23]]),
        53,
        "quoted port is the vport"
    );
    assert_eq!(fold_sum(&out[34..]), 0xffff, "ICMP checksum valid");

    // A router near the client reports frag-needed about our reply (VIP:53 -> CIP).
    let reply = udp_frame(
        rs_mac(11),
        DIR_RS_MAC,
        ("10.77.1.11", 5353),
        (CIP, 33000),
        b"a",
    );
    let (_, back) = lab.send(&reply, PORT_RS);
    let err = icmp_error_v4(GW_MAC, DIR_CLI_MAC, "10.77.0.254", VIP, 3, 4, &back[14..]);
    let (v, out) = lab.send(&err, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let s = seen(&out);
    assert_eq!(s.dst, ip("10.77.1.11"), "forwarded to the real server");
    let inner = &out[14 + 20 + 8..];
    assert_eq!(
        &inner[12..16],
        &[10, 77, 1, 11],
        "quoted source is the RS again"
    );
    assert_eq!(u16::from_be_bytes([inner[20], inner[21]]), 5353);
    assert_eq!(fold_sum(&out[34..]), 0xffff);

    // An error about nothing we know is dropped.
    let q2 = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 1), ("10.77.0.99", 9), b"x");
    let err = icmp_error_v4(GW_MAC, DIR_CLI_MAC, "10.77.0.254", VIP, 3, 3, &q2[14..]);
    assert_eq!(
        lab.send(&err, PORT_CLI).0,
        Verdict::Drop(DropReason::IcmpNoConn)
    );
}

#[test]
fn later_fragments_follow_their_first_fragment() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -u 10.77.0.100:53 -s rr");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.11:53 -m");
    // First fragment: UDP header + 16 bytes, MF set, id 0x1234.
    let mut first = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 4000), (VIP, 53), &[7u8; 32]);
    let set_frag = |f: &mut Vec<u8>, off8: u16, mf: bool, len: usize| {
        f.truncate(14 + 20 + len);
        let total = (20 + len) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        let fo = off8 | if mf { 0x2000 } else { 0 };
        f[20..22].copy_from_slice(&fo.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let ck = !fold_sum(&f[14..34]);
        f[24..26].copy_from_slice(&ck.to_be_bytes());
    };
    set_frag(&mut first, 0, true, 24);
    let mut later = first.clone();
    later.truncate(14 + 20);
    later.extend_from_slice(&[9u8; 16]);
    set_frag(&mut later, 3, false, 16);
    let (v, out) = lab.send(&first, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(&out[30..34], &[10, 77, 1, 11]);
    let (v, out) = lab.send(&later, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(&out[30..34], &[10, 77, 1, 11], "later fragment DNATed too");
    assert!(ipv4_header_ok(&out[14..34]));
    assert_eq!(&out[34..], &[9u8; 16], "payload untouched");
    // A later fragment of an unknown datagram is dropped and counted.
    let mut orphan = later.clone();
    orphan[18..20].copy_from_slice(&0x9999u16.to_be_bytes());
    assert_eq!(
        lab.send(&orphan, PORT_CLI).0,
        Verdict::Drop(DropReason::FragmentUnknown)
    );
}
