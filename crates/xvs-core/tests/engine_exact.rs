//! Byte-exact output frames for every forwarding method, both families, TCP and
//! UDP, both directions where the director sees both. The expected frames are
//! built independently with etherparse (its own header writers and checksum
//! code), so a wrong rewrite or checksum in xvs cannot hide behind itself.

mod common;
use common::*;
use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};
use std::net::IpAddr;
use xvs_core::engine::Verdict;

#[derive(Clone, Copy, Debug, PartialEq)]
enum P {
    Tcp,
    Udp,
}

/// A frame from `src` to `dst` built by etherparse; TCP segments carry ACK+PSH
/// with fixed numbers so that in- and output frames are comparable.
fn frame(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: (&str, u16),
    dst: (&str, u16),
    ttl: u8,
    p: P,
    flags_syn: bool,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac);
    let b = match (ip(src.0), ip(dst.0)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), ttl),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    match p {
        P::Tcp => {
            let b = b.tcp(src.1, dst.1, 4242, 1000);
            let b = if flags_syn { b.syn() } else { b.ack(77).psh() };
            b.write(&mut out, b"payload!").unwrap()
        }
        P::Udp => b.udp(src.1, dst.1).write(&mut out, b"payload!").unwrap(),
    }
    out
}

fn opt(p: P) -> &'static str {
    match p {
        P::Tcp => "-t",
        P::Udp => "-u",
    }
}

fn svc(vip: &str) -> String {
    if vip.contains(':') {
        format!("[{vip}]:80")
    } else {
        format!("{vip}:80")
    }
}

struct Fam {
    cip: &'static str,
    vip: &'static str,
    rip: &'static str,
    lip: &'static str,
    dir_rs: &'static str,
}

const V4: Fam = Fam {
    cip: "10.77.0.2",
    vip: "10.77.0.100",
    rip: "10.77.1.11",
    lip: "10.77.1.200",
    dir_rs: "10.77.1.1",
};
const V6: Fam = Fam {
    cip: "fd77::2",
    vip: "fd77::100",
    rip: "fd77::1:11",
    lip: "fd77::1:200",
    dir_rs: "fd77::1:1",
};

fn lab(f: &Fam, p: P, fwd: &str, rport: u16) -> Lab {
    let mut lab = Lab::new(64);
    lab.cmd(&format!("-A {} {} -s rr", opt(p), svc(f.vip)));
    let r = if f.rip.contains(':') {
        format!("[{}]:{rport}", f.rip)
    } else {
        format!("{}:{rport}", f.rip)
    };
    lab.cmd(&format!("-a {} {} -r {r} {fwd}", opt(p), svc(f.vip)));
    if fwd == "--fullnat" {
        let key = parse_svc(opt(p), &svc(f.vip));
        lab.rules.laddrs = vec![(key, vec![ip(f.lip)])];
        lab.publish();
    }
    lab
}

#[test]
fn nat_is_byte_exact_both_ways() {
    for f in [&V4, &V6] {
        for p in [P::Tcp, P::Udp] {
            let mut lab = lab(f, p, "-m", 8080);
            let syn = p == P::Tcp;
            let input = frame(
                CLIENT_MAC,
                DIR_CLI_MAC,
                (f.cip, 40000),
                (f.vip, 80),
                64,
                p,
                syn,
            );
            let (v, out) = lab.send(&input, PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS), "{p:?} {}", f.vip);
            let want = frame(
                DIR_RS_MAC,
                rs_mac(11),
                (f.cip, 40000),
                (f.rip, 8080),
                64,
                p,
                syn,
            );
            assert_eq!(out, want, "NAT in, {p:?} {}", f.vip);

            let reply = frame(
                rs_mac(11),
                DIR_RS_MAC,
                (f.rip, 8080),
                (f.cip, 40000),
                64,
                p,
                false,
            );
            let (v, out) = lab.send(&reply, PORT_RS);
            assert_eq!(v, Verdict::Tx(PORT_CLI));
            let want = frame(
                DIR_CLI_MAC,
                CLIENT_MAC,
                (f.vip, 80),
                (f.cip, 40000),
                63,
                p,
                false,
            );
            assert_eq!(out, want, "NAT out (TTL - 1), {p:?} {}", f.vip);
        }
    }
}

#[test]
fn dr_is_byte_exact() {
    for f in [&V4, &V6] {
        for p in [P::Tcp, P::Udp] {
            let mut lab = lab(f, p, "-g", 80);
            let input = frame(
                CLIENT_MAC,
                DIR_CLI_MAC,
                (f.cip, 40000),
                (f.vip, 80),
                64,
                p,
                true,
            );
            let (v, out) = lab.send(&input, PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            let want = frame(
                DIR_RS_MAC,
                rs_mac(11),
                (f.cip, 40000),
                (f.vip, 80),
                64,
                p,
                true,
            );
            assert_eq!(out, want, "DR, {p:?} {}", f.vip);
        }
    }
}

#[test]
fn fullnat_is_byte_exact_both_ways() {
    for f in [&V4, &V6] {
        for p in [P::Tcp, P::Udp] {
            let mut lab = lab(f, p, "--fullnat", 8080);
            let syn = p == P::Tcp;
            let input = frame(
                CLIENT_MAC,
                DIR_CLI_MAC,
                (f.cip, 40000),
                (f.vip, 80),
                64,
                p,
                syn,
            );
            let (v, out) = lab.send(&input, PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            let lport = seen(&out).sport;
            let want = frame(
                DIR_RS_MAC,
                rs_mac(11),
                (f.lip, lport),
                (f.rip, 8080),
                64,
                p,
                syn,
            );
            assert_eq!(out, want, "FULLNAT in, {p:?} {}", f.vip);

            let reply = frame(
                rs_mac(11),
                DIR_RS_MAC,
                (f.rip, 8080),
                (f.lip, lport),
                64,
                p,
                false,
            );
            let (v, out) = lab.send(&reply, PORT_RS);
            assert_eq!(v, Verdict::Tx(PORT_CLI));
            let want = frame(
                DIR_CLI_MAC,
                CLIENT_MAC,
                (f.vip, 80),
                (f.cip, 40000),
                64,
                p,
                false,
            );
            assert_eq!(out, want, "FULLNAT out, {p:?} {}", f.vip);
        }
    }
}

#[test]
fn tun_is_byte_exact() {
    for f in [&V4, &V6] {
        for p in [P::Tcp, P::Udp] {
            let mut lab = lab(f, p, "-i", 80);
            let input = frame(
                CLIENT_MAC,
                DIR_CLI_MAC,
                (f.cip, 40000),
                (f.vip, 80),
                64,
                p,
                true,
            );
            let (v, out) = lab.send(&input, PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            let inner = &input[14..];
            let mut want = rs_mac(11).to_vec();
            want.extend_from_slice(&DIR_RS_MAC);
            match (ip(f.dir_rs), ip(f.rip)) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    want.extend_from_slice(&[0x08, 0x00]);
                    let mut h = Ipv4Header::new(
                        inner.len() as u16,
                        64,
                        IpNumber::IPV4,
                        s.octets(),
                        d.octets(),
                    )
                    .unwrap();
                    // The id is the director's; take it from the output.
                    h.identification = u16::from_be_bytes([out[18], out[19]]);
                    h.dont_fragment = inner[6] & 0x40 != 0;
                    h.header_checksum = h.calc_header_checksum();
                    h.write(&mut want).unwrap();
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    want.extend_from_slice(&[0x86, 0xdd]);
                    Ipv6Header {
                        traffic_class: 0,
                        flow_label: Ipv6FlowLabel::ZERO,
                        payload_length: inner.len() as u16,
                        next_header: IpNumber(41), // IPv6-in-IPv6
                        hop_limit: 64,
                        source: s.octets(),
                        destination: d.octets(),
                    }
                    .write(&mut want)
                    .unwrap();
                }
                _ => unreachable!(),
            }
            want.extend_from_slice(inner);
            assert_eq!(out, want, "TUN, {p:?} {}", f.vip);
        }
    }
}

/// Makes a frame's TCP/UDP checksum partial the way the kernel leaves it for the
/// device (CHECKSUM_PARTIAL): the field holds the folded pseudo-header sum,
/// `~tcp_v4_check(len, saddr, daddr, 0)` / `~csum_ipv6_magic(saddr, daddr, len,
/// proto, 0)`, not complemented. Written from the kernel's definitions, not
/// from xvs's checksum code.
fn make_partial(f: &mut [u8]) {
    let (proto, src, dst, l4, len) = match [f[12], f[13]] {
        [0x08, 0x00] => {
            let ihl = (f[14] & 0xf) as usize * 4;
            let total = u16::from_be_bytes([f[16], f[17]]) as usize;
            (
                f[23],
                f[26..30].to_vec(),
                f[30..34].to_vec(),
                14 + ihl,
                total - ihl,
            )
        }
        [0x86, 0xdd] => (
            f[20],
            f[22..38].to_vec(),
            f[38..54].to_vec(),
            54,
            u16::from_be_bytes([f[18], f[19]]) as usize,
        ),
        _ => panic!("not IP"),
    };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&pseudo_fold(&src, &dst, proto, len).to_be_bytes());
}

fn pseudo_fold(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u16 {
    let mut acc: u32 = proto as u32 + len as u32;
    for c in src.chunks(2).chain(dst.chunks(2)) {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn partial(f: Vec<u8>) -> Vec<u8> {
    let mut f = f;
    make_partial(&mut f);
    f
}

/// Frames from local senders (veth, tap, containers) arrive with partial
/// checksums; every mode must hand the next hop a frame with the full checksum.
#[test]
fn partial_checksums_are_completed_in_every_mode() {
    for f in [&V4, &V6] {
        for p in [P::Tcp, P::Udp] {
            let syn = p == P::Tcp;
            let from_client = |ttl| {
                frame(
                    CLIENT_MAC,
                    DIR_CLI_MAC,
                    (f.cip, 40000),
                    (f.vip, 80),
                    ttl,
                    p,
                    syn,
                )
            };
            assert_ne!(
                partial(from_client(64)),
                from_client(64),
                "{p:?}: made partial"
            );

            // NAT, both ways.
            let mut l = lab(f, p, "-m", 8080);
            let (v, out) = l.send(&partial(from_client(64)), PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            let want = frame(
                DIR_RS_MAC,
                rs_mac(11),
                (f.cip, 40000),
                (f.rip, 8080),
                64,
                p,
                syn,
            );
            assert_eq!(out, want, "NAT in, partial, {p:?} {}", f.vip);
            let reply = frame(
                rs_mac(11),
                DIR_RS_MAC,
                (f.rip, 8080),
                (f.cip, 40000),
                64,
                p,
                false,
            );
            let (v, out) = l.send(&partial(reply), PORT_RS);
            assert_eq!(v, Verdict::Tx(PORT_CLI));
            let want = frame(
                DIR_CLI_MAC,
                CLIENT_MAC,
                (f.vip, 80),
                (f.cip, 40000),
                63,
                p,
                false,
            );
            assert_eq!(out, want, "NAT out, partial, {p:?} {}", f.vip);

            // DR: the IP packet is forwarded as is, but complete.
            let mut l = lab_dr(f, p);
            let (v, out) = l.send(&partial(from_client(64)), PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            let want = frame(
                DIR_RS_MAC,
                rs_mac(11),
                (f.cip, 40000),
                (f.vip, 80),
                64,
                p,
                syn,
            );
            assert_eq!(out, want, "DR, partial, {p:?} {}", f.vip);

            // FULLNAT, both ways.
            let mut l = lab(f, p, "--fullnat", 8080);
            let (v, out) = l.send(&partial(from_client(64)), PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            let lport = seen(&out).sport;
            let want = frame(
                DIR_RS_MAC,
                rs_mac(11),
                (f.lip, lport),
                (f.rip, 8080),
                64,
                p,
                syn,
            );
            assert_eq!(out, want, "FULLNAT in, partial, {p:?} {}", f.vip);
            let reply = frame(
                rs_mac(11),
                DIR_RS_MAC,
                (f.rip, 8080),
                (f.lip, lport),
                64,
                p,
                false,
            );
            let (v, out) = l.send(&partial(reply), PORT_RS);
            assert_eq!(v, Verdict::Tx(PORT_CLI));
            let want = frame(
                DIR_CLI_MAC,
                CLIENT_MAC,
                (f.vip, 80),
                (f.cip, 40000),
                64,
                p,
                false,
            );
            assert_eq!(out, want, "FULLNAT out, partial, {p:?} {}", f.vip);

            // TUN: the inner packet is encapsulated complete.
            let mut l = lab(f, p, "-i", 80);
            let (v, out) = l.send(&partial(from_client(64)), PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            let hdr = if f.vip.contains(':') {
                14 + 40
            } else {
                14 + 20
            };
            assert_eq!(
                &out[hdr..],
                &from_client(64)[14..],
                "TUN inner, partial, {p:?} {}",
                f.vip
            );
        }
    }
}

fn lab_dr(f: &Fam, p: P) -> Lab {
    lab(f, p, "-g", 80)
}

/// A valid checksum that happens to equal the pseudo-header sum is recomputed
/// to itself: completing is always safe.
#[test]
fn a_valid_checksum_equal_to_the_pseudo_sum_stays() {
    for f in [&V4, &V6] {
        for p in [P::Tcp, P::Udp] {
            // Find the payload word that makes the valid checksum equal the
            // pseudo-header sum (the checksum is linear in the payload).
            let build = |w: u16, smac, dmac| {
                let b = PacketBuilder::ethernet2(smac, dmac);
                let b = match (ip(f.cip), ip(f.vip)) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
                    (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
                    _ => unreachable!(),
                };
                let mut payload = *b"payload!";
                payload[6..8].copy_from_slice(&w.to_be_bytes());
                let mut out = Vec::new();
                match p {
                    P::Tcp => b
                        .tcp(40000, 80, 4242, 1000)
                        .syn()
                        .write(&mut out, &payload)
                        .unwrap(),
                    P::Udp => b.udp(40000, 80).write(&mut out, &payload).unwrap(),
                }
                out
            };
            let field = |fr: &[u8]| {
                let at = fr.len() - 8 - if p == P::Tcp { 4 } else { 2 };
                u16::from_be_bytes([fr[at], fr[at + 1]])
            };
            let w = (0..=u16::MAX)
                .find(|&w| {
                    let fr = build(w, CLIENT_MAC, DIR_CLI_MAC);
                    field(&fr) == field(&partial(fr.clone()))
                })
                .expect("some payload word gives that checksum");
            let input = build(w, CLIENT_MAC, DIR_CLI_MAC);
            assert_eq!(input, partial(input.clone()), "precondition");
            let mut lab = lab_dr(f, p);
            let (v, out) = lab.send(&input, PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            assert_eq!(out, build(w, DIR_RS_MAC, rs_mac(11)), "{p:?} {}", f.vip);
        }
    }
}
