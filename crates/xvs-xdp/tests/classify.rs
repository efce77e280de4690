//! One classifier contract, checked on one fixture table (Katran's style):
//! every frame goes through the XDP steering program and its tc instance (the
//! classifier the AF_PACKET filter and guard share) with BPF_PROG_TEST_RUN, and
//! through the engine's parser. They must agree on which frames are xvs's, the
//! parser must understand every frame the programs hand to xvs, and for new
//! flows the engine's service lookup (fwmark by the same mark rules, then
//! address:port, then port 0) must find the service the programs steered for.
//!
//! The frames arrive on an interface whose MAC is the fixtures' destination
//! MAC (02:00:00:00:00:01): neither program takes a frame unicast to another
//! MAC (the XDP program compares with the MAC the loader gave it, the tc
//! program reads the kernel's PACKET_OTHERHOST), both take group-addressed
//! ones, as the kernel's ip_rcv does.

use std::sync::Arc;
use xvs_core::addr::Addr;
use xvs_core::engine::{Engine, Limits, MarkRule, RuleSet, StaticFib};
use xvs_core::service::ServiceTable;
use xvs_core::service::{Af, DestSpec, FwdMethod, Protocol, ServiceKey, ServiceSpec, SvcFlags};
use xvs_core::wire::parse::{parse, Frag, ParseError, PROTO_TCP, PROTO_UDP};
use xvs_core::wire::IpProtocol;
use xvs_xdp::bpf::sys::{BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_INGRESS};
use xvs_xdp::bpf::testrun::{run_on, RunOn, TestObject};
use xvs_xdp::iface::write_if_mac;
use xvs_xdp::{SteerKey, Steering};

/// The MAC of the interface the fixtures arrive on (eth()'s destination).
const OWN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// Other hosts' unicast MACs: differing in the last byte, in the first.
const OTHER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];
const OTHER_MAC_HIGH: [u8; 6] = [6, 0, 0, 0, 0, 1];
const BROADCAST: [u8; 6] = [0xff; 6];
/// IPv4 and IPv6 multicast MACs (the I/G bit set).
const MCAST4: [u8; 6] = [1, 0, 0x5e, 0, 0, 1];
const MCAST6: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// `f` with its destination MAC replaced.
fn to_mac(mac: [u8; 6], mut f: Vec<u8>) -> Vec<u8> {
    f[..6].copy_from_slice(&mac);
    f
}

/// Whether the kernel would call `f` PACKET_OTHERHOST on the fixtures'
/// interface: unicast, not its MAC.
fn other_host(f: &[u8]) -> bool {
    f[0] & 1 == 0 && f[..6] != OWN_MAC
}

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
    /// For TCP/UDP: the service the engine finds for a new flow (`-S` form).
    service: Option<&'static str>,
}

fn fx(what: &'static str, frame: Vec<u8>, owned: bool, parsed: Parsed) -> Fixture {
    Fixture {
        what,
        frame,
        owned,
        parsed,
        service: None,
    }
}

/// A fixture of a new flow to a virtual service.
fn fs(
    what: &'static str,
    frame: Vec<u8>,
    owned: bool,
    parsed: Parsed,
    service: &'static str,
) -> Fixture {
    Fixture {
        service: Some(service),
        ..fx(what, frame, owned, parsed)
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

const VIP0: &str = "10.77.0.101";
const RS0: &str = "10.77.1.12";

/// The mark rules of the fixtures: HTTPS of the VIP, and HTTP of the VIP too
/// (fwmark services come first, as in the kernel), a /28 of VIPs for clients
/// of 10.77.0.0/24 only, an IPv6 range, and a mark no service has.
fn mark_rules() -> Vec<MarkRule> {
    let r = |proto, addr: &str, len, ports, src: Option<(&str, u8)>, mark| MarkRule {
        proto,
        addr: addr.parse().unwrap(),
        prefix_len: len,
        ports,
        src: src.map(|(a, _)| a.parse().unwrap()),
        src_prefix_len: src.map_or(0, |(_, l)| l),
        mark,
    };
    vec![
        r(Some(TCP), VIP, 32, (443, 443), None, 1),
        r(Some(TCP), VIP, 32, (80, 80), None, 1),
        r(
            None,
            "10.77.2.0",
            28,
            (0, 65535),
            Some(("10.77.0.0", 24)),
            2,
        ),
        r(Some(TCP), "fd77::200", 127, (80, 81), None, 3),
        r(Some(UDP), "10.77.3.0", 24, (1, 1000), None, 9),
    ]
}

/// The services the fixtures are steered for, as the engine holds them.
fn services() -> ServiceTable {
    let mut t = ServiceTable::new();
    let tuple = |proto, addr: &str, port| ServiceKey::Addr {
        proto,
        addr: addr.parse().unwrap(),
        port,
    };
    let mut add = |key: ServiceKey, persistent: bool, rs: Option<(&str, u16)>| {
        let mut spec = ServiceSpec::new(key);
        if persistent {
            spec.flags = SvcFlags(SvcFlags::PERSISTENT);
            spec.timeout = 300;
        }
        t.add_service(spec).unwrap();
        if let Some((a, port)) = rs {
            let mut d = DestSpec::new(a.parse().unwrap(), port);
            d.fwd = FwdMethod::Masq;
            t.add_dest(&key, d).unwrap();
        }
    };
    add(tuple(Protocol::Tcp, VIP, 80), false, Some((RS, 8080)));
    add(tuple(Protocol::Udp, VIP, 53), false, None);
    add(tuple(Protocol::Tcp, VIP6, 80), false, None);
    add(tuple(Protocol::Tcp, VIP0, 0), true, Some((RS0, 0)));
    add(
        ServiceKey::Fwmark {
            mark: 1,
            af: Af::V4,
        },
        true,
        None,
    );
    add(
        ServiceKey::Fwmark {
            mark: 2,
            af: Af::V4,
        },
        true,
        None,
    );
    add(
        ServiceKey::Fwmark {
            mark: 3,
            af: Af::V6,
        },
        true,
        None,
    );
    t
}

/// The keys of the fixtures' rules: NAT TCP VIP:80 → RS:8080, UDP VIP:53,
/// IPv6 TCP VIP6:80, a port-0 service with a NAT RS of port 0, fwmark
/// services 1, 2 (IPv4) and 3 (IPv6), a FULLNAT local address, and the host's
/// addresses.
fn keys() -> Vec<SteerKey> {
    vec![
        SteerKey::Vip {
            addr: addr(VIP0),
            port: 0,
            proto: IpProtocol::Tcp,
        },
        SteerKey::RealServer {
            addr: addr(RS0),
            port: 0,
            proto: IpProtocol::Tcp,
        },
        SteerKey::Mark { mark: 1, v6: false },
        SteerKey::Mark { mark: 2, v6: false },
        SteerKey::Mark { mark: 3, v6: true },
        SteerKey::Vip {
            addr: addr(VIP),
            port: 80,
            proto: IpProtocol::Tcp,
        },
        SteerKey::Vip {
            addr: addr(VIP),
            port: 53,
            proto: IpProtocol::Udp,
        },
        SteerKey::Vip {
            addr: addr(VIP6),
            port: 80,
            proto: IpProtocol::Tcp,
        },
        SteerKey::RealServer {
            addr: addr(RS),
            port: 8080,
            proto: IpProtocol::Tcp,
        },
        SteerKey::LocalAddr(addr(LIP)),
        SteerKey::Local(addr(DIRECTOR)),
        SteerKey::Local(addr(DIRECTOR_RS_SIDE)),
        SteerKey::Local(addr(VIP)),
    ]
}

#[rustfmt::skip]
fn fixtures() -> Vec<Fixture> {
    use Parsed::*;
    let syn = |src: &str, sport, dst: &str, dport| ip4(TCP, src, dst, 0x4000, 0, &l4(TCP, sport, dport, 0));
    let to_vip = || syn(CLIENT, 40000, VIP, 80);
    let reply_to_client = ip4(TCP, VIP, CLIENT, 0x4000, 0, &l4(TCP, 80, 40000, 0));
    let to_rs = ip4(TCP, CLIENT, RS, 0x4000, 0, &l4(TCP, 40000, 8080, 0));
    let mut bad_doff = to_vip();
    bad_doff[20 + 12] = 0x30;
    let v6_too_many = vec![60u8; 9];
    let v6_eight: Vec<u8> = vec![0, 60, 60, 60, 60, 60, 60, 43];
    let udp53 = || ip4(UDP, CLIENT, VIP, 0, 0, &l4(UDP, 5353, 53, 10));
    let f1 = "-f 1";
    vec![
        // Virtual services: by mark first, then address:port, then port 0.
        fs("TCP SYN to VIP:80, which a mark rule marks: the fwmark service first", frame(&[], to_vip()), true, Ports(TCP, 40000, 80), f1),
        fs("TCP to the VIP's HTTPS port, marked", frame(&[], syn(CLIENT, 40000, VIP, 443)), true, Ports(TCP, 40000, 443), f1),
        fs("UDP to VIP:53: no rule, the address:port service", frame(&[], udp53()), true, Ports(UDP, 5353, 53), "-u 10.77.0.100:53"),
        fx("TCP to the VIP on a port with no service or rule (the host's)", frame(&[], syn(CLIENT, 40000, VIP, 81)), false, Ports(TCP, 40000, 81)),
        fx("UDP to a TCP-only VIP:port", frame(&[], ip4(UDP, CLIENT, VIP, 0, 0, &l4(UDP, 5353, 80, 10))), false, Ports(UDP, 5353, 80)),
        fs("TCP to a port-0 service, any port", frame(&[], syn(CLIENT, 40000, VIP0, 8443)), true, Ports(TCP, 40000, 8443), "-t 10.77.0.101:0"),
        fx("UDP to a TCP port-0 service", frame(&[], ip4(UDP, CLIENT, VIP0, 0, 0, &l4(UDP, 5353, 8443, 10))), false, Ports(UDP, 5353, 8443)),
        fs("TCP into the marked /28 from the allowed clients", frame(&[], syn(CLIENT, 40000, "10.77.2.9", 25)), true, Ports(TCP, 40000, 25), "-f 2"),
        fs("UDP into the marked /28 (any protocol)", frame(&[], ip4(UDP, CLIENT, "10.77.2.15", 0, 0, &l4(UDP, 5353, 53, 10))), true, Ports(UDP, 5353, 53), "-f 2"),
        fx("TCP into the marked /28 from another source", frame(&[], syn("10.77.9.2", 40000, "10.77.2.9", 25)), false, Ports(TCP, 40000, 25)),
        fx("TCP just outside the marked /28", frame(&[], syn(CLIENT, 40000, "10.77.2.16", 25)), false, Ports(TCP, 40000, 25)),
        fx("UDP to a mark no service has", frame(&[], ip4(UDP, CLIENT, "10.77.3.3", 0, 0, &l4(UDP, 5353, 53, 10))), false, Ports(UDP, 5353, 53)),
        fs("IPv6 TCP into the marked /127, port 81", frame(&[], ip6(TCP, CLIENT6, "fd77::201", &[], 0, &l4(TCP, 40000, 81, 0))), true, Ports(TCP, 40000, 81), "-f 3 -6"),
        fx("IPv6 TCP into the marked /127, port 82", frame(&[], ip6(TCP, CLIENT6, "fd77::201", &[], 0, &l4(TCP, 40000, 82, 0))), false, Ports(TCP, 40000, 82)),
        fx("TCP to the director's own address (SSH)", frame(&[], syn(CLIENT, 40000, DIRECTOR, 22)), false, Ports(TCP, 40000, 22)),
        // Replies and local addresses.
        fx("NAT reply RS:8080 → client", frame(&[], ip4(TCP, RS, CLIENT, 0x4000, 0, &l4(TCP, 8080, 40000, 0))), true, Ports(TCP, 8080, 40000)),
        fx("RS:8080 → the director's own address (its health check's reply)", frame(&[], ip4(TCP, RS, DIRECTOR_RS_SIDE, 0x4000, 0, &l4(TCP, 8080, 50000, 0))), false, Ports(TCP, 8080, 50000)),
        fx("RS from a port that is no dest's", frame(&[], ip4(TCP, RS, CLIENT, 0x4000, 0, &l4(TCP, 9000, 40000, 0))), false, Ports(TCP, 9000, 40000)),
        fx("NAT reply from any port of a port-0 service's real server", frame(&[], ip4(TCP, RS0, CLIENT, 0x4000, 0, &l4(TCP, 8443, 40000, 0))), true, Ports(TCP, 8443, 40000)),
        fx("the same real server to the director itself", frame(&[], ip4(TCP, RS0, DIRECTOR_RS_SIDE, 0x4000, 0, &l4(TCP, 8443, 50000, 0))), false, Ports(TCP, 8443, 50000)),
        fx("FULLNAT reply RS → local address", frame(&[], ip4(TCP, RS, LIP, 0x4000, 0, &l4(TCP, 8080, 5000, 0))), true, Ports(TCP, 8080, 5000)),
        fx("ping to the FULLNAT local address (the kernel's)", frame(&[], ip4(1, RS, LIP, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1])), false, Other),
        // Layer 2.
        fs("802.1Q tagged SYN to the VIP", frame(&[(0x8100, 7)], to_vip()), true, Ports(TCP, 40000, 80), f1),
        fs("802.1ad tagged SYN to the VIP", frame(&[(0x88a8, 7)], to_vip()), true, Ports(TCP, 40000, 80), f1),
        fs("QinQ (802.1ad + 802.1Q) SYN to the VIP", frame(&[(0x88a8, 7), (0x8100, 9)], to_vip()), true, Ports(TCP, 40000, 80), f1),
        fs("double 802.1Q SYN to the VIP", frame(&[(0x8100, 7), (0x8100, 9)], to_vip()), true, Ports(TCP, 40000, 80), f1),
        fx("three VLAN tags (more than either reads)", frame(&[(0x88a8, 7), (0x8100, 9), (0x8100, 3)], to_vip()), false, Err(ParseError::NotIp)),
        // Layer 3 and 4 options, lengths, extension headers.
        fs("IPv4 with options, SYN to the VIP", frame(&[], ip4(TCP, CLIENT, VIP, 0x4000, 8, &l4(TCP, 40000, 80, 0))), true, Ports(TCP, 40000, 80), f1),
        fx("TCP to the VIP with a data offset below 5", frame(&[], bad_doff), true, Err(ParseError::BadHeaderLen)),
        fx("TCP to the VIP cut after the ports", frame(&[], { let mut p = to_vip(); p.truncate(24); p[2..4].copy_from_slice(&24u16.to_be_bytes()); p }), true, Err(ParseError::Truncated)),
        fs("IPv6 SYN to the VIP", frame(&[], ip6(TCP, CLIENT6, VIP6, &[], 0, &l4(TCP, 40000, 80, 0))), true, Ports(TCP, 40000, 80), "-t [fd77::100]:80"),
        fs("IPv6 hop-by-hop + destination options, SYN to the VIP", frame(&[], ip6(TCP, CLIENT6, VIP6, &[0, 60], 0, &l4(TCP, 40000, 80, 0))), true, Ports(TCP, 40000, 80), "-t [fd77::100]:80"),
        fs("IPv6 with 8 extension headers", frame(&[], ip6(TCP, CLIENT6, VIP6, &v6_eight, 0, &l4(TCP, 40000, 80, 0))), true, Ports(TCP, 40000, 80), "-t [fd77::100]:80"),
        fx("IPv6 with 9 extension headers (too many)", frame(&[], ip6(TCP, CLIENT6, VIP6, &v6_too_many, 0, &l4(TCP, 40000, 80, 0))), false, Err(ParseError::TooManyExtHeaders)),
        // Fragments.
        fs("IPv6 first fragment to the VIP", frame(&[], ip6(TCP, CLIENT6, VIP6, &[44], 0, &l4(TCP, 40000, 80, 0))), true, Ports(TCP, 40000, 80), "-t [fd77::100]:80"),
        fx("IPv6 later fragment to the VIP", frame(&[], ip6(TCP, CLIENT6, VIP6, &[44], 3, &[0u8; 16])), true, Later),
        fs("IPv4 first fragment, UDP to the VIP", frame(&[], ip4(UDP, CLIENT, VIP, 0x2000, 0, &l4(UDP, 5353, 53, 16))), true, Ports(UDP, 5353, 53), "-u 10.77.0.100:53"),
        fx("IPv4 later fragment to the VIP", frame(&[], ip4(UDP, CLIENT, VIP, 0x0003, 0, &[0u8; 16])), true, Later),
        fx("IPv4 later fragment into the marked /28", frame(&[], ip4(UDP, CLIENT, "10.77.2.9", 0x0003, 0, &[0u8; 16])), true, Later),
        fx("IPv4 later fragment from a NAT RS", frame(&[], ip4(UDP, RS, CLIENT, 0x0003, 0, &[0u8; 16])), true, Later),
        fx("IPv4 later fragment from a NAT RS to the director itself", frame(&[], ip4(UDP, RS, DIRECTOR_RS_SIDE, 0x0003, 0, &[0u8; 16])), false, Later),
        fx("IPv4 later fragment to the director", frame(&[], ip4(UDP, CLIENT, DIRECTOR, 0x0003, 0, &[0u8; 16])), false, Later),
        // ICMP errors, by the flow they quote.
        fx("ICMP port unreachable from the client quoting a NAT reply (VIP:80 → client)", frame(&[], ip4(1, CLIENT, VIP, 0, 0, &icmp4(3, 3, &reply_to_client))), true, Icmp(TCP, 80, 40000)),
        fx("ICMP frag needed from the RS side quoting client → RS:8080", frame(&[], ip4(1, RS, CLIENT, 0, 0, &icmp4(3, 4, &to_rs))), true, Icmp(TCP, 40000, 8080)),
        fx("ICMP error quoting the director's own connection to RS:8080", frame(&[], ip4(1, RS, DIRECTOR_RS_SIDE, 0, 0, &icmp4(3, 3, &ip4(TCP, DIRECTOR_RS_SIDE, RS, 0x4000, 0, &l4(TCP, 50000, 8080, 0))))), false, Icmp(TCP, 50000, 8080)),
        fx("ICMP error to the VIP quoting a flow of another host", frame(&[], ip4(1, CLIENT, VIP, 0, 0, &icmp4(3, 3, &ip4(TCP, "10.77.9.9", CLIENT, 0x4000, 0, &l4(TCP, 80, 40000, 0))))), false, Icmp(TCP, 80, 40000)),
        fx("ICMP error quoting a marked flow's reply (10.77.2.9:25 → client)", frame(&[], ip4(1, CLIENT, "10.77.2.9", 0, 0, &icmp4(3, 3, &ip4(TCP, "10.77.2.9", CLIENT, 0x4000, 0, &l4(TCP, 25, 40000, 0))))), true, Icmp(TCP, 25, 40000)),
        fx("ICMP error quoting FULLNAT LIP → RS", frame(&[], ip4(1, RS, LIP, 0, 0, &icmp4(3, 3, &ip4(TCP, LIP, RS, 0x4000, 0, &l4(TCP, 5000, 8080, 0))))), true, Icmp(TCP, 5000, 8080)),
        fx("ICMP error quoting a later fragment", frame(&[], ip4(1, CLIENT, VIP, 0, 0, &icmp4(3, 3, &ip4(TCP, VIP, CLIENT, 0x0003, 0, &[0u8; 8])))), false, Other),
        fx("ICMP echo request to the VIP", frame(&[], ip4(1, CLIENT, VIP, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1])), false, Other),
        fx("ICMPv6 packet too big quoting VIP6:80 → client", frame(&[], ip6(58, CLIENT6, VIP6, &[], 0, &icmp6(2, &ip6(TCP, VIP6, CLIENT6, &[], 0, &l4(TCP, 80, 40000, 0))))), true, Icmp(TCP, 80, 40000)),
        fx("ICMPv6 echo request to the VIP", frame(&[], ip6(58, CLIENT6, VIP6, &[], 0, &[128, 0, 0, 0, 0, 1, 0, 1])), false, Other),
        fx("ARP", eth(&[], 0x0806).into_iter().chain([0u8; 28]).collect(), false, Err(ParseError::NotIp)),
        // The destination MAC: this interface's, another host's, a group's.
        fs("TCP SYN to the VIP, to this interface's MAC", to_mac(OWN_MAC, frame(&[], to_vip())), true, Ports(TCP, 40000, 80), f1),
        fs("TCP SYN to the VIP, unicast to another host's MAC (PACKET_OTHERHOST)", to_mac(OTHER_MAC, frame(&[], to_vip())), false, Ports(TCP, 40000, 80), f1),
        fs("TCP SYN to the VIP, to a MAC that differs in its first bytes", to_mac(OTHER_MAC_HIGH, frame(&[], to_vip())), false, Ports(TCP, 40000, 80), f1),
        fs("UDP to VIP:53, to another host's MAC", to_mac(OTHER_MAC, frame(&[], udp53())), false, Ports(UDP, 5353, 53), "-u 10.77.0.100:53"),
        fs("802.1Q tagged SYN to the VIP, to another host's MAC", to_mac(OTHER_MAC, frame(&[(0x8100, 7)], to_vip())), false, Ports(TCP, 40000, 80), f1),
        fs("IPv6 SYN to the VIP, to another host's MAC", to_mac(OTHER_MAC, frame(&[], ip6(TCP, CLIENT6, VIP6, &[], 0, &l4(TCP, 40000, 80, 0)))), false, Ports(TCP, 40000, 80), "-t [fd77::100]:80"),
        fx("NAT reply RS:8080 → client, to another host's MAC", to_mac(OTHER_MAC, frame(&[], ip4(TCP, RS, CLIENT, 0x4000, 0, &l4(TCP, 8080, 40000, 0)))), false, Ports(TCP, 8080, 40000)),
        fx("IPv4 later fragment to the VIP, to another host's MAC", to_mac(OTHER_MAC, frame(&[], ip4(UDP, CLIENT, VIP, 0x0003, 0, &[0u8; 16]))), false, Later),
        fx("ICMP frag needed quoting client → RS:8080, to another host's MAC", to_mac(OTHER_MAC, frame(&[], ip4(1, RS, CLIENT, 0, 0, &icmp4(3, 4, &to_rs)))), false, Icmp(TCP, 40000, 8080)),
        fs("UDP to VIP:53, broadcast MAC (ip_rcv takes PACKET_BROADCAST)", to_mac(BROADCAST, frame(&[], udp53())), true, Ports(UDP, 5353, 53), "-u 10.77.0.100:53"),
        fs("TCP SYN to the VIP, IPv4 multicast MAC (PACKET_MULTICAST)", to_mac(MCAST4, frame(&[], to_vip())), true, Ports(TCP, 40000, 80), f1),
        fs("IPv6 SYN to the VIP, IPv6 multicast MAC", to_mac(MCAST6, frame(&[], ip6(TCP, CLIENT6, VIP6, &[], 0, &l4(TCP, 40000, 80, 0)))), true, Ports(TCP, 40000, 80), "-t [fd77::100]:80"),
        fx("broadcast ARP (the kernel's)", to_mac(BROADCAST, eth(&[], 0x0806).into_iter().chain([0u8; 28]).collect()), false, Err(ParseError::NotIp)),
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

/// The steering map and mark rules of the fixtures, and the XDP and tc
/// steering programs loaded against them, the XDP one told `OWN_MAC`.
fn programs() -> (Steering, TestObject) {
    let steering = Steering::with_capacity(64).unwrap();
    steering.add_all(&keys()).unwrap();
    steering.set_marks(&mark_rules()).unwrap();
    let obj = TestObject::load(
        xvs_xdp::bpf::STEER_OBJ,
        &[
            ("xdp", BPF_PROG_TYPE_XDP, 0),
            ("tcx/ingress", BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS),
        ],
        &steering.maps(),
    )
    .unwrap();
    write_if_mac(obj.map("xvs_ifmac").unwrap(), Some(OWN_MAC)).unwrap();
    (steering, obj)
}

/// A namespace with a veth whose MAC is `OWN_MAC`, and its ifindex there:
/// where the tc program's frames arrive (the kernel sets `pkt_type` against
/// that device's MAC).
fn own_mac_interface() -> (xvs_netns::Netns, u32) {
    let ns = xvs_netns::Netns::new(&format!("{}-classify", xvs_netns::test_prefix())).unwrap();
    let out = ns
        .sh("ip link add xc0 type veth peer name xc1 && ip link set xc0 address 02:00:00:00:00:01")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ifindex = ns.run(|| xvs_xdp::sys::ifindex("xc0")).unwrap().unwrap();
    (ns, ifindex)
}

/// What the programs did with a frame: whether each took it, and whether
/// each counted it as addressed to another host.
#[derive(Debug)]
struct Verdicts {
    xdp_owned: bool,
    xdp_other: bool,
    tc_owned: bool,
    tc_other: bool,
}

/// Runs both programs on `frame`; the tc one as received on `ifindex` (call
/// in its namespace).
fn verdicts(obj: &TestObject, frame: &[u8], ifindex: u32) -> Verdicts {
    let (xdp, tc) = (obj.prog("xdp").unwrap(), obj.prog("tcx/ingress").unwrap());
    // XDP: with no socket on the queue an owned frame falls back to
    // XDP_PASS, so ownership is read from the program's counters (passed or
    // other host = not owned; no_socket = owned).
    let (passed, other, nosock) = (counter(obj, 1), counter(obj, 3), counter(obj, 2));
    let rc = run_on(xdp, frame, RunOn::Loopback, 1).unwrap().retval;
    assert_eq!(rc, 2, "XDP_PASS either way without a socket");
    let (dp, dother, dnosock) = (
        counter(obj, 1) - passed,
        counter(obj, 3) - other,
        counter(obj, 2) - nosock,
    );
    assert_eq!(dp + dother + dnosock, 1, "one counter a frame");
    // tc guard: TC_ACT_SHOT (2) for owned frames, TCX_NEXT (-1) otherwise.
    let other = counter(obj, 3);
    let tc_owned = match run_on(tc, frame, RunOn::Skb(ifindex), 1).unwrap().retval as i32 {
        2 => true,
        -1 => false,
        rc => panic!("tc program returned {rc}"),
    };
    Verdicts {
        xdp_owned: dnosock == 1,
        xdp_other: dother == 1,
        tc_owned,
        tc_other: counter(obj, 3) - other == 1,
    }
}

#[test]
fn steering_programs_and_parser_agree_on_every_fixture() {
    xvs_netns::require_root();
    let (_steering, obj) = programs();
    let (ns, ifindex) = own_mac_interface();
    let engine = Engine::new(Limits::default(), Arc::new(StaticFib::new()), [1, 2, 3, 4]);
    let mut rules = RuleSet::from_table(&services());
    rules.marks = mark_rules();
    engine.publish(&rules);
    let snap = engine.snapshot();
    let fixtures = fixtures();
    let runs: Vec<Verdicts> = ns
        .run(|| {
            fixtures
                .iter()
                .map(|f| verdicts(&obj, &f.frame, ifindex))
                .collect()
        })
        .unwrap();
    let mut failures = Vec::new();
    for (i, (f, v)) in fixtures.iter().zip(runs).enumerate() {
        let p = parsed(&f.frame);
        let mut why = Vec::new();
        if v.xdp_owned != f.owned {
            why.push(format!("XDP owned = {}", v.xdp_owned));
        }
        if v.tc_owned != f.owned {
            why.push(format!("tc classifier owned = {}", v.tc_owned));
        }
        let other = other_host(&f.frame);
        if v.xdp_other != other || v.tc_other != other {
            why.push(format!(
                "counted as another host's: XDP {}, tc {}, want {other}",
                v.xdp_other, v.tc_other
            ));
        }
        if p != f.parsed {
            why.push(format!("parser gave {p:?}, want {:?}", f.parsed));
        }
        if let (Parsed::Ports(..), Ok(info)) = (p, parse(&f.frame)) {
            let svc = snap
                .service_for(info.proto, &info.saddr, &info.daddr, info.dport)
                .map(|s| s.spec.key.to_string());
            if svc.as_deref() != f.service {
                why.push(format!("engine found {svc:?}, want {:?}", f.service));
            }
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

/// The MAC the XDP program compares with is the one last written: after a
/// change of the interface's address (the loader rewrites it), frames to the
/// new MAC are taken and frames to the old one are another host's; with no
/// MAC known (an interface without an Ethernet address) every frame is
/// looked at, as before the check: nothing is left to a kernel that has no
/// virtual services because a MAC is missing.
#[test]
fn the_xdp_program_follows_the_mac_it_is_given() {
    xvs_netns::require_root();
    let (_steering, obj) = programs();
    let syn = ip4(TCP, CLIENT, VIP, 0x4000, 0, &l4(TCP, 40000, 80, 0));
    let to = |mac| to_mac(mac, frame(&[], syn.clone()));
    let owned = |frame: &[u8]| {
        let xdp = obj.prog("xdp").unwrap();
        let (nosock, other) = (counter(&obj, 2), counter(&obj, 3));
        run_on(xdp, frame, RunOn::Loopback, 1).unwrap();
        match (counter(&obj, 2) - nosock, counter(&obj, 3) - other) {
            (1, 0) => true,
            (0, 1) => false,
            d => panic!("counters moved by {d:?}"),
        }
    };
    assert!(owned(&to(OWN_MAC)));
    assert!(!owned(&to(OTHER_MAC)));
    let ifmac = obj.map("xvs_ifmac").unwrap();
    write_if_mac(ifmac, Some(OTHER_MAC)).unwrap();
    assert!(owned(&to(OTHER_MAC)), "the new MAC");
    assert!(!owned(&to(OWN_MAC)), "the old one is another host's now");
    assert!(owned(&to(BROADCAST)));
    write_if_mac(ifmac, None).unwrap();
    for mac in [OWN_MAC, OTHER_MAC, OTHER_MAC_HIGH, MCAST4] {
        assert!(owned(&to(mac)), "no MAC known: {mac:02x?} is looked at");
    }
}

/// The cost of the destination MAC check: the XDP program's mean run time on
/// frames it takes and frames it leaves, measured by the kernel over many
/// runs (printed; `--nocapture` shows it). The check is a few instructions
/// before the classifier; a frame to another host skips the classifier.
#[test]
fn xdp_run_time_per_frame() {
    xvs_netns::require_root();
    let (_steering, obj) = programs();
    let xdp = obj.prog("xdp").unwrap();
    let syn = frame(
        &[],
        ip4(TCP, CLIENT, VIP, 0x4000, 0, &l4(TCP, 40000, 443, 0)),
    );
    let reply = frame(
        &[],
        ip4(TCP, RS, CLIENT, 0x4000, 0, &l4(TCP, 8080, 40000, 0)),
    );
    let ssh = frame(
        &[],
        ip4(TCP, CLIENT, DIRECTOR, 0x4000, 0, &l4(TCP, 40000, 22, 0)),
    );
    for (what, f) in [
        ("owned: marked SYN to the VIP", syn.clone()),
        ("owned: NAT reply", reply),
        ("not owned: SSH to the director", ssh),
        ("another host's MAC", to_mac(OTHER_MAC, syn)),
    ] {
        let best = (0..5)
            .map(|_| {
                run_on(xdp, &f, RunOn::Loopback, 200_000)
                    .unwrap()
                    .duration_ns
            })
            .min()
            .unwrap();
        eprintln!("xdp steering, {what}: {best} ns");
        assert!(best < 10_000, "{what}: {best} ns a frame");
    }
}
