//! One classifier contract, checked on one fixture table (Katran's style):
//! every frame goes through the XDP steering program and its tc instance (the
//! classifier the AF_PACKET filter and guard share) with BPF_PROG_TEST_RUN, and
//! through the engine's parser. They must agree on which frames are xvs's, and
//! the parser must understand every frame the programs hand to xvs.

use xvs_core::addr::Addr;
use xvs_core::wire::parse::{parse, Frag, ParseError, PROTO_TCP, PROTO_UDP};
use xvs_xdp::bpf::sys::{BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_INGRESS};
use xvs_xdp::bpf::testrun::{run_once, TestObject};
use xvs_xdp::{SteerKey, Steering, L4};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn addr(s: &str) -> Addr {
    Addr::from(s.parse::<std::net::IpAddr>().unwrap())
}

/// Ethernet header with these VLAN tags (TPID, TCI) and the final ethertype.
fn eth(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// TCP (20-byte header, SYN) or UDP header with `payload` bytes after it.
fn l4(proto: u8, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    if proto == TCP {
        h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        h.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
    }
    h.resize(h.len() + payload, 0xab);
    h
}

/// IPv4 header (with `opts` option bytes, a multiple of 4) + `body`.
fn ip4(proto: u8, src: &str, dst: &str, frag: u16, opts: usize, body: &[u8]) -> Vec<u8> {
    let ihl = 20 + opts;
    let total = (ihl + body.len()) as u16;
    let mut h = vec![0x40 | (ihl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&v4(src));
    h.extend_from_slice(&v4(dst));
    h.extend(std::iter::repeat_n(1u8, opts)); // NOPs
    h.extend_from_slice(body);
    h
}

/// IPv6 header + extension headers (next-header codes, each 8 bytes; 44 is a
/// fragment header with offset `frag_off` in 8-byte units) + `body`.
fn ip6(proto: u8, src: &str, dst: &str, exts: &[u8], frag_off: u16, body: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, &e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(proto);
        if e == 44 {
            chain.push(next);
            chain.push(0);
            chain.extend_from_slice(&(frag_off << 3).to_be_bytes());
            chain.extend_from_slice(&[0, 0, 0x56, 0x78]);
        } else {
            chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]); // PadN
        }
    }
    let first = exts.first().copied().unwrap_or(proto);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&((chain.len() + body.len()) as u16).to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&v6(src));
    h.extend_from_slice(&v6(dst));
    h.extend_from_slice(&chain);
    h.extend_from_slice(body);
    h
}

/// An ICMP (v4) error of `ty`/`code` quoting `quoted` (an IP packet).
fn icmp4(ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut b = vec![ty, code, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&quoted[..quoted.len().min(28 + 20)]);
    b
}

fn icmp6(ty: u8, quoted: &[u8]) -> Vec<u8> {
    let mut b = vec![ty, 0, 0, 0, 0, 0, 5, 0x78];
    b.extend_from_slice(quoted);
    b
}

fn frame(tags: &[(u16, u16)], ip: Vec<u8>) -> Vec<u8> {
    let et = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    let mut f = eth(tags, et);
    f.extend_from_slice(&ip);
    f
}

/// What the engine's parser must make of a fixture.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Parsed {
    /// TCP/UDP with these ports.
    Ports(u8, u16, u16),
    /// A later fragment (no ports).
    Later,
    /// An ICMP error quoting TCP/UDP with these ports.
    Icmp(u8, u16, u16),
    /// Parsed, but nothing the engine forwards (ICMP that is not an error...).
    Other,
    Err(ParseError),
}

struct Fixture {
    what: &'static str,
    frame: Vec<u8>,
    owned: bool,
    parsed: Parsed,
}

fn fx(what: &'static str, frame: Vec<u8>, owned: bool, parsed: Parsed) -> Fixture {
    Fixture {
        what,
        frame,
        owned,
        parsed,
    }
}

const CLIENT: &str = "10.77.0.2";
const VIP: &str = "10.77.0.100";
const DIRECTOR: &str = "10.77.0.1";
const DIRECTOR_RS_SIDE: &str = "10.77.1.1";
const RS: &str = "10.77.1.11";
const LIP: &str = "10.77.1.200";
const CLIENT6: &str = "fd77::2";
const VIP6: &str = "fd77::100";

/// The keys of the fixtures' rules: NAT TCP VIP:80 → RS:8080, UDP VIP:53,
/// IPv6 TCP VIP6:80, a FULLNAT local address, and the host's addresses.
fn keys() -> Vec<SteerKey> {
    vec![
        SteerKey::Vip {
            addr: addr(VIP),
            port: 80,
            proto: L4::Tcp,
        },
        SteerKey::Vip {
            addr: addr(VIP),
            port: 53,
            proto: L4::Udp,
        },
        SteerKey::Vip {
            addr: addr(VIP6),
            port: 80,
            proto: L4::Tcp,
        },
        SteerKey::RealServer {
            addr: addr(RS),
            port: 8080,
            proto: L4::Tcp,
        },
        SteerKey::LocalAddr(addr(LIP)),
        SteerKey::Local(addr(DIRECTOR)),
        SteerKey::Local(addr(DIRECTOR_RS_SIDE)),
        SteerKey::Local(addr(VIP)),
    ]
}

fn fixtures() -> Vec<Fixture> {
    use Parsed::*;
    let syn = |src: &str, sport, dst: &str, dport| {
        ip4(TCP, src, dst, 0x4000, 0, &l4(TCP, sport, dport, 0))
    };
    let to_vip = || syn(CLIENT, 40000, VIP, 80);
    let reply_to_client = ip4(TCP, VIP, CLIENT, 0x4000, 0, &l4(TCP, 80, 40000, 0));
    let to_rs = ip4(TCP, CLIENT, RS, 0x4000, 0, &l4(TCP, 40000, 8080, 0));
    let mut bad_doff = to_vip();
    bad_doff[20 + 12] = 0x30;
    let mut v6_too_many = Vec::new();
    v6_too_many.resize(9, 60u8);
    let v6_eight: Vec<u8> = vec![0, 60, 60, 60, 60, 60, 60, 43];
    vec![
        fx(
            "TCP SYN to a VIP:port",
            frame(&[], to_vip()),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "TCP to the VIP on a port with no service (the host's)",
            frame(&[], syn(CLIENT, 40000, VIP, 81)),
            false,
            Ports(TCP, 40000, 81),
        ),
        fx(
            "TCP to the director's own address (SSH)",
            frame(&[], syn(CLIENT, 40000, DIRECTOR, 22)),
            false,
            Ports(TCP, 40000, 22),
        ),
        fx(
            "UDP to a UDP VIP:port",
            frame(&[], ip4(UDP, CLIENT, VIP, 0, 0, &l4(UDP, 5353, 53, 10))),
            true,
            Ports(UDP, 5353, 53),
        ),
        fx(
            "UDP to a TCP-only VIP:port",
            frame(&[], ip4(UDP, CLIENT, VIP, 0, 0, &l4(UDP, 5353, 80, 10))),
            false,
            Ports(UDP, 5353, 80),
        ),
        fx(
            "NAT reply RS:8080 → client",
            frame(
                &[],
                ip4(TCP, RS, CLIENT, 0x4000, 0, &l4(TCP, 8080, 40000, 0)),
            ),
            true,
            Ports(TCP, 8080, 40000),
        ),
        fx(
            "RS:8080 → the director's own address (its health check's reply)",
            frame(
                &[],
                ip4(
                    TCP,
                    RS,
                    DIRECTOR_RS_SIDE,
                    0x4000,
                    0,
                    &l4(TCP, 8080, 50000, 0),
                ),
            ),
            false,
            Ports(TCP, 8080, 50000),
        ),
        fx(
            "RS from a port that is no dest's",
            frame(
                &[],
                ip4(TCP, RS, CLIENT, 0x4000, 0, &l4(TCP, 9000, 40000, 0)),
            ),
            false,
            Ports(TCP, 9000, 40000),
        ),
        fx(
            "FULLNAT reply RS → local address",
            frame(&[], ip4(TCP, RS, LIP, 0x4000, 0, &l4(TCP, 8080, 5000, 0))),
            true,
            Ports(TCP, 8080, 5000),
        ),
        fx(
            "ping to the FULLNAT local address (the kernel's)",
            frame(&[], ip4(1, RS, LIP, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1])),
            false,
            Other,
        ),
        fx(
            "802.1Q tagged SYN to the VIP",
            frame(&[(0x8100, 7)], to_vip()),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "802.1ad tagged SYN to the VIP",
            frame(&[(0x88a8, 7)], to_vip()),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "QinQ (802.1ad + 802.1Q) SYN to the VIP",
            frame(&[(0x88a8, 7), (0x8100, 9)], to_vip()),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "double 802.1Q SYN to the VIP",
            frame(&[(0x8100, 7), (0x8100, 9)], to_vip()),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "three VLAN tags (more than either reads)",
            frame(&[(0x88a8, 7), (0x8100, 9), (0x8100, 3)], to_vip()),
            false,
            Err(ParseError::NotIp),
        ),
        fx(
            "IPv4 with options, SYN to the VIP",
            frame(
                &[],
                ip4(TCP, CLIENT, VIP, 0x4000, 8, &l4(TCP, 40000, 80, 0)),
            ),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "TCP to the VIP with a data offset below 5",
            frame(&[], bad_doff),
            true,
            Err(ParseError::BadHeaderLen),
        ),
        fx(
            "TCP to the VIP cut after the ports",
            frame(&[], {
                let mut p = to_vip();
                p.truncate(24);
                p[2..4].copy_from_slice(&24u16.to_be_bytes());
                p
            }),
            true,
            Err(ParseError::Truncated),
        ),
        fx(
            "IPv6 SYN to the VIP",
            frame(&[], ip6(TCP, CLIENT6, VIP6, &[], 0, &l4(TCP, 40000, 80, 0))),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "IPv6 hop-by-hop + destination options, SYN to the VIP",
            frame(
                &[],
                ip6(TCP, CLIENT6, VIP6, &[0, 60], 0, &l4(TCP, 40000, 80, 0)),
            ),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "IPv6 with 8 extension headers",
            frame(
                &[],
                ip6(TCP, CLIENT6, VIP6, &v6_eight, 0, &l4(TCP, 40000, 80, 0)),
            ),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "IPv6 with 9 extension headers (too many)",
            frame(
                &[],
                ip6(TCP, CLIENT6, VIP6, &v6_too_many, 0, &l4(TCP, 40000, 80, 0)),
            ),
            false,
            Err(ParseError::TooManyExtHeaders),
        ),
        fx(
            "IPv6 first fragment to the VIP",
            frame(
                &[],
                ip6(TCP, CLIENT6, VIP6, &[44], 0, &l4(TCP, 40000, 80, 0)),
            ),
            true,
            Ports(TCP, 40000, 80),
        ),
        fx(
            "IPv6 later fragment to the VIP",
            frame(&[], ip6(TCP, CLIENT6, VIP6, &[44], 3, &[0u8; 16])),
            true,
            Later,
        ),
        fx(
            "IPv4 first fragment, UDP to the VIP",
            frame(
                &[],
                ip4(UDP, CLIENT, VIP, 0x2000, 0, &l4(UDP, 5353, 53, 16)),
            ),
            true,
            Ports(UDP, 5353, 53),
        ),
        fx(
            "IPv4 later fragment to the VIP",
            frame(&[], ip4(UDP, CLIENT, VIP, 0x0003, 0, &[0u8; 16])),
            true,
            Later,
        ),
        fx(
            "IPv4 later fragment from a NAT RS",
            frame(&[], ip4(UDP, RS, CLIENT, 0x0003, 0, &[0u8; 16])),
            true,
            Later,
        ),
        fx(
            "IPv4 later fragment from a NAT RS to the director itself",
            frame(&[], ip4(UDP, RS, DIRECTOR_RS_SIDE, 0x0003, 0, &[0u8; 16])),
            false,
            Later,
        ),
        fx(
            "IPv4 later fragment to the director",
            frame(&[], ip4(UDP, CLIENT, DIRECTOR, 0x0003, 0, &[0u8; 16])),
            false,
            Later,
        ),
        fx(
            "ICMP port unreachable from the client quoting a NAT reply (VIP:80 → client)",
            frame(
                &[],
                ip4(1, CLIENT, VIP, 0, 0, &icmp4(3, 3, &reply_to_client)),
            ),
            true,
            Icmp(TCP, 80, 40000),
        ),
        fx(
            "ICMP frag needed from the RS side quoting client → RS:8080",
            frame(&[], ip4(1, RS, CLIENT, 0, 0, &icmp4(3, 4, &to_rs))),
            true,
            Icmp(TCP, 40000, 8080),
        ),
        fx(
            "ICMP error quoting the director's own connection to RS:8080",
            frame(
                &[],
                ip4(
                    1,
                    RS,
                    DIRECTOR_RS_SIDE,
                    0,
                    0,
                    &icmp4(
                        3,
                        3,
                        &ip4(
                            TCP,
                            DIRECTOR_RS_SIDE,
                            RS,
                            0x4000,
                            0,
                            &l4(TCP, 50000, 8080, 0),
                        ),
                    ),
                ),
            ),
            false,
            Icmp(TCP, 50000, 8080),
        ),
        fx(
            "ICMP error to the VIP quoting a flow of another host",
            frame(
                &[],
                ip4(
                    1,
                    CLIENT,
                    VIP,
                    0,
                    0,
                    &icmp4(
                        3,
                        3,
                        &ip4(TCP, "10.77.9.9", CLIENT, 0x4000, 0, &l4(TCP, 80, 40000, 0)),
                    ),
                ),
            ),
            false,
            Icmp(TCP, 80, 40000),
        ),
        fx(
            "ICMP error quoting FULLNAT LIP → RS",
            frame(
                &[],
                ip4(
                    1,
                    RS,
                    LIP,
                    0,
                    0,
                    &icmp4(3, 3, &ip4(TCP, LIP, RS, 0x4000, 0, &l4(TCP, 5000, 8080, 0))),
                ),
            ),
            true,
            Icmp(TCP, 5000, 8080),
        ),
        fx(
            "ICMP error quoting a later fragment",
            frame(
                &[],
                ip4(
                    1,
                    CLIENT,
                    VIP,
                    0,
                    0,
                    &icmp4(3, 3, &ip4(TCP, VIP, CLIENT, 0x0003, 0, &[0u8; 8])),
                ),
            ),
            false,
            Other,
        ),
        fx(
            "ICMP echo request to the VIP",
            frame(&[], ip4(1, CLIENT, VIP, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1])),
            false,
            Other,
        ),
        fx(
            "ICMPv6 packet too big quoting VIP6:80 → client",
            frame(
                &[],
                ip6(
                    58,
                    CLIENT6,
                    VIP6,
                    &[],
                    0,
                    &icmp6(2, &ip6(TCP, VIP6, CLIENT6, &[], 0, &l4(TCP, 80, 40000, 0))),
                ),
            ),
            true,
            Icmp(TCP, 80, 40000),
        ),
        fx(
            "ICMPv6 echo request to the VIP",
            frame(
                &[],
                ip6(58, CLIENT6, VIP6, &[], 0, &[128, 0, 0, 0, 0, 1, 0, 1]),
            ),
            false,
            Other,
        ),
        fx(
            "ARP",
            eth(&[], 0x0806).into_iter().chain([0u8; 28]).collect(),
            false,
            Err(ParseError::NotIp),
        ),
    ]
}

fn parsed(frame: &[u8]) -> Parsed {
    match parse(frame) {
        Err(e) => Parsed::Err(e),
        Ok(p) => {
            if let Some(ic) = p.icmp {
                Parsed::Icmp(ic.proto, ic.sport, ic.dport)
            } else if matches!(p.frag, Frag::Later { .. }) {
                Parsed::Later
            } else if p.proto == PROTO_TCP || p.proto == PROTO_UDP {
                Parsed::Ports(p.proto, p.sport, p.dport)
            } else {
                Parsed::Other
            }
        }
    }
}

/// Sum of a per-CPU counter of the XDP program's stats map.
fn counter(obj: &TestObject, idx: u32) -> u64 {
    let m = obj.map("xvs_stats").unwrap();
    let mut v = vec![0u8; m.lookup_len().unwrap()];
    m.lookup(&idx.to_ne_bytes(), &mut v).unwrap();
    v.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .sum()
}

#[test]
fn steering_programs_and_parser_agree_on_every_fixture() {
    if !xvs_netns::require_root() {
        return;
    }
    let steering = Steering::with_capacity(64).unwrap();
    steering.add_all(&keys()).unwrap();
    let keymap = steering.key_map();
    let obj = TestObject::load(
        xvs_xdp::bpf::STEER_OBJ,
        &[
            ("xdp", BPF_PROG_TYPE_XDP, 0),
            ("tcx/ingress", BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS),
        ],
        &[&keymap],
    )
    .unwrap();
    let (xdp, tc) = (obj.prog("xdp").unwrap(), obj.prog("tcx/ingress").unwrap());
    let mut failures = Vec::new();
    for (i, f) in fixtures().iter().enumerate() {
        // XDP: with no socket on the queue an owned frame falls back to
        // XDP_PASS, so ownership is read from the program's counters
        // (passed = not owned; no_socket = owned).
        let passed = counter(&obj, 1);
        let rc = run_once(xdp, &f.frame).unwrap();
        assert_eq!(rc, 2, "XDP_PASS either way without a socket");
        let xdp_owned = counter(&obj, 1) == passed;
        // tc guard: TC_ACT_SHOT (2) for owned frames, TCX_NEXT (-1) otherwise.
        let tc_owned = match run_once(tc, &f.frame).unwrap() as i32 {
            2 => true,
            -1 => false,
            other => panic!("{}: tc program returned {other}", f.what),
        };
        let p = parsed(&f.frame);
        let mut why = Vec::new();
        if xdp_owned != f.owned {
            why.push(format!("XDP owned = {xdp_owned}"));
        }
        if tc_owned != f.owned {
            why.push(format!("tc classifier owned = {tc_owned}"));
        }
        if p != f.parsed {
            why.push(format!("parser gave {p:?}, want {:?}", f.parsed));
        }
        // The contract: whatever the programs hand to xvs, the parser knows
        // what it is (a frame it calls "not IP" would be lost silently).
        if f.owned && p == Parsed::Err(ParseError::NotIp) {
            why.push("owned but the parser says not IP".into());
        }
        if !why.is_empty() {
            failures.push(format!(
                "fixture {i} ({}), owned {}: {}",
                f.what,
                f.owned,
                why.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
