//! The engine end to end in memory: frames in, rewritten frames out, for every
//! forwarding method and both families, with the connection state and the dest
//! counters checked after each step.

mod common;
use common::*;
use xvs_core::engine::{DropReason, Verdict};

const VIP: &str = "10.77.0.100";
const CIP: &str = "10.77.0.2";

fn nat_lab() -> Lab {
    let mut lab = Lab::new(1024);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:8080 -m");
    lab
}

#[test]
fn nat_tcp_lifecycle_rewrites_both_ways_and_counts() {
    let mut lab = nat_lab();
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40000), (VIP, 80), "S", b"");
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let s = seen(&out);
    assert_eq!((s.src_mac, s.dst_mac), (DIR_RS_MAC, rs_mac(11)));
    assert_eq!(
        (s.src, s.sport),
        (ip(CIP), 40000),
        "NAT keeps the client address"
    );
    assert_eq!((s.dst, s.dport), (ip("10.77.1.11"), 8080));
    assert_eq!(
        s.ttl, 64,
        "the inbound direction is delivered locally by IPVS: TTL kept"
    );
    // Only addresses, ports, MACs and checksums changed.
    let mut expect = syn.clone();
    expect[0..6].copy_from_slice(&rs_mac(11));
    expect[6..12].copy_from_slice(&DIR_RS_MAC);
    for (i, (a, b)) in expect.iter().zip(out.iter()).enumerate() {
        let allowed = (24..26).contains(&i) // IP checksum
            || (30..34).contains(&i) // daddr
            || (36..38).contains(&i) // dport
            || (50..52).contains(&i); // TCP checksum
        assert!(allowed || a == b, "byte {i} changed: {a:#x} -> {b:#x}");
    }
    assert_eq!(
        lab.counts("10.77.0.100:80", "10.77.1.11:8080"),
        (1, 0, 0),
        "SYN_RECV is active"
    );

    let synack = tcp_frame(
        rs_mac(11),
        DIR_RS_MAC,
        ("10.77.1.11", 8080),
        (CIP, 40000),
        "SA",
        b"",
    );
    let (v, out) = lab.send(&synack, PORT_RS);
    assert_eq!(v, Verdict::Tx(PORT_CLI));
    let s = seen(&out);
    assert_eq!((s.src, s.sport), (ip(VIP), 80), "reply leaves from the VIP");
    assert_eq!((s.dst, s.dport), (ip(CIP), 40000));
    assert_eq!((s.src_mac, s.dst_mac), (DIR_CLI_MAC, CLIENT_MAC));
    assert_eq!(s.ttl, 63, "replies are forwarded: TTL - 1");

    let data = tcp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        (CIP, 40000),
        (VIP, 80),
        "AP",
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let (_, out) = lab.send(&data, PORT_CLI);
    assert_eq!(seen(&out).payload, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(lab.counts("10.77.0.100:80", "10.77.1.11:8080"), (1, 0, 0));

    // Client closes: ES -fin(in)-> CLOSE_WAIT (inactive), server FIN -> TIME_WAIT.
    let fin = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40000), (VIP, 80), "FA", b"");
    let _ = lab.send(&fin, PORT_CLI);
    assert_eq!(lab.counts("10.77.0.100:80", "10.77.1.11:8080"), (0, 1, 0));
    let fin2 = tcp_frame(
        rs_mac(11),
        DIR_RS_MAC,
        ("10.77.1.11", 8080),
        (CIP, 40000),
        "FA",
        b"",
    );
    let (v, _) = lab.send(&fin2, PORT_RS);
    assert_eq!(v, Verdict::Tx(PORT_CLI));

    // TIME_WAIT lasts 120 s.
    lab.advance(119);
    lab.sweep();
    assert_eq!(lab.engine.conns.live(), 1);
    lab.advance(2);
    lab.sweep();
    assert_eq!(lab.engine.conns.live(), 0);
    assert_eq!(lab.counts("10.77.0.100:80", "10.77.1.11:8080"), (0, 0, 0));
}

#[test]
fn dr_changes_only_the_destination_mac() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -g");
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40001), (VIP, 80), "S", b"");
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let mut expect = syn.clone();
    expect[0..6].copy_from_slice(&rs_mac(12));
    expect[6..12].copy_from_slice(&DIR_RS_MAC);
    assert_eq!(out, expect, "the IP packet is untouched");
    // DR sees only the client half: INPUT-ONLY table, ACK makes it ESTABLISHED.
    let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40001), (VIP, 80), "A", b"");
    let _ = lab.send(&ack, PORT_CLI);
    assert_eq!(lab.counts("10.77.0.100:80", "10.77.1.12:80"), (1, 0, 0));
    let fin = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40001), (VIP, 80), "FA", b"");
    let _ = lab.send(&fin, PORT_CLI);
    assert_eq!(
        lab.counts("10.77.0.100:80", "10.77.1.12:80"),
        (0, 1, 0),
        "FIN_WAIT is inactive"
    );
}

#[test]
fn tun_encapsulates_in_ipip_from_the_director() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.13:80 -i");
    let syn = tcp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        (CIP, 40002),
        (VIP, 80),
        "S",
        b"hello",
    );
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(out.len(), syn.len() + 20);
    assert_eq!(&out[0..6], &rs_mac(13));
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let outer = &out[14..34];
    assert!(ipv4_header_ok(outer));
    assert_eq!(outer[9], 4, "protocol IPIP");
    assert_eq!(&outer[12..16], &[10, 77, 1, 1], "outer source = director");
    assert_eq!(&outer[16..20], &[10, 77, 1, 13], "outer destination = RS");
    assert_eq!(
        outer[6] & 0x40,
        syn[20] & 0x40,
        "DF copied from the inner packet"
    );
    assert_eq!(&out[34..], &syn[14..], "inner packet unchanged");
}

#[test]
fn fullnat_rewrites_source_and_destination_and_reply() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.14:80 --fullnat");
    let key = parse_svc("-t", "10.77.0.100:80");
    lab.rules.laddrs = vec![(key, vec![ip("10.77.1.200")])];
    lab.publish();
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40003), (VIP, 80), "S", b"");
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let s = seen(&out);
    assert_eq!(s.src, ip("10.77.1.200"));
    assert_eq!((s.dst, s.dport), (ip("10.77.1.14"), 80));
    let lport = s.sport;
    assert!(lport >= 1024);
    let synack = tcp_frame(
        rs_mac(14),
        DIR_RS_MAC,
        ("10.77.1.14", 80),
        ("10.77.1.200", lport),
        "SA",
        b"",
    );
    let (v, out) = lab.send(&synack, PORT_RS);
    assert_eq!(v, Verdict::Tx(PORT_CLI));
    let s = seen(&out);
    assert_eq!((s.src, s.sport), (ip(VIP), 80));
    assert_eq!((s.dst, s.dport), (ip(CIP), 40003));
    // A second client connection gets a different local port.
    let syn2 = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40004), (VIP, 80), "S", b"");
    let (_, out2) = lab.send(&syn2, PORT_CLI);
    assert_ne!(seen(&out2).sport, lport);
}

#[test]
fn fullnat_without_local_addresses_drops_and_counts() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.14:80 --fullnat");
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40003), (VIP, 80), "S", b"");
    assert_eq!(
        lab.send(&syn, PORT_CLI).0,
        Verdict::Drop(DropReason::NoLocalPort)
    );
    assert_eq!(lab.drops(DropReason::NoLocalPort), 1);
}

#[test]
fn nat_ipv6_udp_round_trip() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -u [fd77::100]:53 -s rr");
    lab.cmd("-a -u [fd77::100]:53 -r [fd77::1:11]:5353 -m");
    let q = udp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        ("fd77::2", 33000),
        ("fd77::100", 53),
        b"query",
    );
    let (v, out) = lab.send(&q, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let s = seen(&out);
    assert_eq!((s.dst, s.dport), (ip("fd77::1:11"), 5353));
    assert_eq!(s.payload, b"query");
    assert_eq!(
        lab.counts_of("-u", "[fd77::100]:53", "[fd77::1:11]:5353"),
        (0, 1, 0),
        "UDP is inactive"
    );
    let a = udp_frame(
        rs_mac(11),
        DIR_RS_MAC,
        ("fd77::1:11", 5353),
        ("fd77::2", 33000),
        b"answer",
    );
    let (v, out) = lab.send(&a, PORT_RS);
    assert_eq!(v, Verdict::Tx(PORT_CLI));
    let s = seen(&out);
    assert_eq!((s.src, s.sport), (ip("fd77::100"), 53));
    assert_eq!(s.ttl, 63);
    // UDP expires after 300 s without traffic.
    lab.advance(301);
    lab.sweep();
    assert_eq!(
        lab.counts_of("-u", "[fd77::100]:53", "[fd77::1:11]:5353"),
        (0, 0, 0)
    );
}

#[test]
fn dr_ipv6_and_tun_ipv6() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -t [fd77::100]:80 -s rr");
    lab.cmd("-a -t [fd77::100]:80 -r [fd77::1:12]:80 -g");
    let syn = tcp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        ("fd77::2", 40000),
        ("fd77::100", 80),
        "S",
        b"",
    );
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(&out[0..6], &rs_mac(12));
    assert_eq!(&out[12..], &syn[12..]);

    let mut lab = Lab::new(64);
    lab.cmd("-A -t [fd77::100]:80 -s rr");
    lab.cmd("-a -t [fd77::100]:80 -r [fd77::1:13]:80 -i");
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(out.len(), syn.len() + 40);
    assert_eq!(out[14 + 6], 41, "next header ip6ip6");
    assert_eq!(&out[54..], &syn[14..]);
}

#[test]
fn unknown_traffic_is_dropped_or_passed_and_counted() {
    let mut lab = nat_lab();
    // Non-SYN for an unknown conn.
    let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 41000), (VIP, 80), "A", b"");
    assert_eq!(
        lab.send(&ack, PORT_CLI).0,
        Verdict::Drop(DropReason::NotSyn)
    );
    // No service on that port.
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 41000), (VIP, 81), "S", b"");
    assert_eq!(
        lab.send(&syn, PORT_CLI).0,
        Verdict::Drop(DropReason::NoService)
    );
    // ARP goes to the kernel.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(lab.send(&arp, PORT_CLI).0, Verdict::Pass);
    // Truncated IPv4.
    let mut bad = syn.clone();
    bad.truncate(20);
    assert_eq!(
        lab.send(&bad, PORT_CLI).0,
        Verdict::Drop(DropReason::Truncated)
    );
    assert_eq!(lab.drops(DropReason::NotSyn), 1);
    assert_eq!(lab.drops(DropReason::NoService), 1);
    assert_eq!(lab.drops(DropReason::Truncated), 1);
}

#[test]
fn no_dest_answers_icmp_port_unreachable() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -u 10.77.0.100:53 -s rr");
    let q = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 33000), (VIP, 53), b"q");
    let (v, out) = lab.send(&q, PORT_CLI);
    assert_eq!(
        v,
        Verdict::Tx(PORT_CLI),
        "the error goes back where the packet came from"
    );
    let s = seen(&out);
    assert_eq!(s.proto, 1);
    assert_eq!((s.src, s.dst), (ip(VIP), ip(CIP)));
    assert_eq!(s.dst_mac, CLIENT_MAC);
    assert_eq!(lab.drops(DropReason::NoDest), 1);
}

#[test]
fn connection_table_full_drops_new_flows_but_keeps_old_ones() {
    let mut lab = Lab::new(2);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    for p in [1000, 1001] {
        let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, p), (VIP, 80), "S", b"");
        assert_eq!(lab.send(&syn, PORT_CLI).0, Verdict::Tx(PORT_RS));
    }
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 1002), (VIP, 80), "S", b"");
    assert_eq!(
        lab.send(&syn, PORT_CLI).0,
        Verdict::Drop(DropReason::ConnTableFull)
    );
    let ack = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 1000), (VIP, 80), "A", b"");
    assert_eq!(lab.send(&ack, PORT_CLI).0, Verdict::Tx(PORT_RS));
}
