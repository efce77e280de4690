//! Shared helpers of the engine tests: frames built and checked with etherparse
//! (an independent implementation), checksums recomputed from scratch, and a
//! small "lab" around an engine with a static next-hop table.
#![allow(dead_code)]

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use std::net::IpAddr;
use std::sync::Arc;
use xvs_core::addr::Addr;
use xvs_core::engine::{Engine, Limits, NextHop, RuleSet, StaticFib, Verdict, Worker};
use xvs_core::frame::Frame;
use xvs_core::service::ServiceTable;
use xvs_core::time::Time;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const DIR_CLI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DIR_RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x01];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
pub const PORT_CLI: u16 = 0;
pub const PORT_RS: u16 = 1;
pub const HEADROOM: usize = 256;

pub fn rs_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, i]
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn addr(s: &str) -> Addr {
    Addr::from(ip(s))
}

/// TCP flags as letters: S, A, F, R, P.
pub fn tcp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (&str, u16),
    dst: (&str, u16),
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = match (ip(src.0), ip(dst.0)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut b = b.tcp(src.1, dst.1, 1000, 64240);
    for c in flags.chars() {
        b = match c {
            'S' => b.syn(),
            'A' => b.ack(2000),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => panic!("flag {c}"),
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (&str, u16),
    dst: (&str, u16),
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = match (ip(src.0), ip(dst.0)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    b.udp(src.1, dst.1).write(&mut out, payload).unwrap();
    out
}

/// One's-complement sum of 16-bit words (RFC 1071), not folded.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < data.len() {
        acc += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
        i += 2;
    }
    if i < data.len() {
        acc += (data[i] as u32) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// True when an IPv4 header sums to 0xffff.
pub fn ipv4_header_ok(hdr: &[u8]) -> bool {
    fold(sum16(hdr, 0)) == 0xffff
}

/// True when a TCP/UDP/ICMPv6 segment's checksum verifies with its pseudo-header.
pub fn l4_ok(src: &IpAddr, dst: &IpAddr, proto: u8, seg: &[u8]) -> bool {
    let mut acc = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        _ => return false,
    }
    acc += proto as u32 + seg.len() as u32;
    fold(sum16(seg, acc)) == 0xffff
}

/// What a transmitted frame says, parsed by etherparse, with every checksum
/// recomputed from scratch and asserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

pub fn seen(frame: &[u8]) -> Seen {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    let eth = match h.link {
        Some(etherparse::LinkHeader::Ethernet2(e)) => e,
        _ => panic!("no ethernet"),
    };
    let l3 = 14;
    let (src, dst, ttl, proto, l4_off) = match h.net.expect("an IP header") {
        NetHeaders::Ipv4(v4, _) => {
            let ihl = v4.header_len();
            assert!(
                ipv4_header_ok(&frame[l3..l3 + ihl]),
                "IPv4 header checksum is valid"
            );
            (
                IpAddr::from(v4.source),
                IpAddr::from(v4.destination),
                v4.time_to_live,
                v4.protocol.0,
                l3 + ihl,
            )
        }
        NetHeaders::Ipv6(v6, _) => (
            IpAddr::from(v6.source),
            IpAddr::from(v6.destination),
            v6.hop_limit,
            v6.next_header.0,
            l3 + 40,
        ),
        _ => panic!("not IP"),
    };
    let (sport, dport) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        _ => (0, 0),
    };
    if proto == 6 || proto == 17 {
        let seg = &frame[l4_off..];
        let udp_zero = proto == 17 && src.is_ipv4() && seg[6] == 0 && seg[7] == 0;
        if !udp_zero {
            assert!(l4_ok(&src, &dst, proto, seg), "L4 checksum is valid");
        }
    }
    Seen {
        src_mac: eth.source,
        dst_mac: eth.destination,
        src,
        dst,
        ttl,
        proto,
        sport,
        dport,
        payload: h.payload.slice().to_vec(),
    }
}

fn nh(port: u16, src_mac: [u8; 6], dst_mac: [u8; 6], src_addr: &str) -> NextHop {
    NextHop {
        port,
        src_mac,
        dst_mac,
        mtu: 1500,
        src_addr: addr(src_addr),
    }
}

/// The static topology of the tests: clients on port 0 (10.77.0.0/24, fd77::/64
/// low half), real servers 10.77.1.11.. / fd77::1:11.. on port 1.
pub fn fib() -> StaticFib {
    let mut f = StaticFib::new()
        .host(
            addr("10.77.0.2"),
            nh(PORT_CLI, DIR_CLI_MAC, CLIENT_MAC, "10.77.0.1"),
        )
        .host(
            addr("fd77::2"),
            nh(PORT_CLI, DIR_CLI_MAC, CLIENT_MAC, "fd77::1"),
        )
        .default_route(nh(PORT_CLI, DIR_CLI_MAC, GW_MAC, "10.77.0.1"));
    for i in 11..=20u8 {
        f = f
            .host(
                addr(&format!("10.77.1.{i}")),
                nh(PORT_RS, DIR_RS_MAC, rs_mac(i), "10.77.1.1"),
            )
            .host(
                addr(&format!("fd77::1:{i}")),
                nh(PORT_RS, DIR_RS_MAC, rs_mac(i), "fd77::1:1"),
            );
    }
    f
}

/// An engine, its service table, one worker and a clock.
pub struct Lab {
    pub engine: Arc<Engine>,
    pub table: ServiceTable,
    pub worker: Worker,
    pub now: Time,
    pub rules: RuleSet,
}

impl Lab {
    pub fn new(conn_max: u32) -> Lab {
        let limits = Limits {
            conn_max,
            ..Limits::default()
        };
        let engine = Engine::new(limits, Arc::new(fib()), [11, 22, 33, 44]);
        let worker = engine.worker(0);
        Lab {
            engine,
            table: ServiceTable::new(),
            worker,
            now: Time::from_secs(1000),
            rules: RuleSet::default(),
        }
    }

    /// Publishes the table (plus `self.rules`' extras) to the engine.
    pub fn publish(&mut self) {
        let mut r = RuleSet::from_table(&self.table);
        r.laddrs = self.rules.laddrs.clone();
        r.marks = self.rules.marks.clone();
        r.timeouts = self.rules.timeouts;
        r.knobs = self.rules.knobs;
        self.engine.publish(&r);
    }

    /// Runs xvsadm-like commands: "-A -t|-u VIP:port|-f MARK -s rr [-p [T]] [-o] [-b FLAGS]", "-a -t VIP:port -r RIP:port -m|-g|-i|--fullnat [-w W] [-x U] [-y L]".
    pub fn cmd(&mut self, line: &str) {
        crate::common::apply(&mut self.table, line);
        self.publish();
    }

    /// Sends one frame through the worker; returns the verdict and the frame as
    /// it would be transmitted.
    pub fn send(&mut self, frame: &[u8], rx_port: u16) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + 2048];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let mut f = Frame::new(&mut buf, HEADROOM, frame.len());
        self.worker.begin_batch(self.now);
        let v = self.worker.process(&mut f, rx_port);
        (v, f.data().to_vec())
    }

    /// Sends frames through the worker as one burst (prepare, each frame,
    /// then `between`, then finish_batch, as the data path does); returns
    /// the verdicts and the frames as they would be transmitted.
    pub fn send_batch_with(
        &mut self,
        frames: &[Vec<u8>],
        rx_port: u16,
        between: impl FnOnce(&mut Lab),
    ) -> Vec<(Verdict, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut b = vec![0u8; HEADROOM + 2048];
                b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
                b
            })
            .collect();
        self.worker.begin_batch(self.now);
        self.worker.prepare(
            bufs.iter()
                .zip(frames)
                .map(|(b, f)| &b[HEADROOM..HEADROOM + f.len()]),
        );
        let mut out = Vec::new();
        for (i, (b, f)) in bufs.iter_mut().zip(frames).enumerate() {
            let mut fr = Frame::new(b, HEADROOM, f.len());
            let v = self.worker.process_prepared(i, &mut fr, rx_port);
            out.push((v, fr.data().to_vec()));
        }
        between(self);
        self.worker.finish_batch();
        out
    }

    /// [`Lab::send_batch_with`] with nothing between the frames and the end.
    pub fn send_batch(&mut self, frames: &[Vec<u8>], rx_port: u16) -> Vec<(Verdict, Vec<u8>)> {
        self.send_batch_with(frames, rx_port, |_| {})
    }

    pub fn advance(&mut self, secs: u64) {
        self.now = self.now.add_secs(secs);
    }

    /// Runs a full housekeeping pass at the current time.
    pub fn sweep(&mut self) {
        self.engine.housekeep_all(self.now);
    }

    /// Drops counted for a reason.
    pub fn drops(&self, r: xvs_core::engine::DropReason) -> u64 {
        self.engine
            .drops()
            .into_iter()
            .find(|(x, _)| *x == r)
            .map(|(_, n)| n)
            .unwrap_or(0)
    }

    /// (active, inactive, persistent) conns of a dest of a TCP service.
    pub fn counts(&self, vip: &str, rip: &str) -> (u32, u32, u32) {
        self.counts_of("-t", vip, rip)
    }

    /// (active, inactive, persistent) conns of the dest with this address and
    /// port, live or in the trash (of whichever service: one per test).
    pub fn counts_any(&self, rip: &str) -> (u32, u32, u32) {
        let (a, p) = split_hostport(rip);
        let (_, d) = self
            .table
            .all_dests()
            .find(|(_, d)| d.addr == ip(a) && d.port == p)
            .expect("dest");
        (d.activeconns(), d.inactconns(), d.persistconns())
    }

    /// (active, inactive, persistent) conns of a dest; `opt` is -t or -u.
    pub fn counts_of(&self, opt: &str, vip: &str, rip: &str) -> (u32, u32, u32) {
        let key = parse_svc(opt, vip);
        let (a, p) = split_hostport(rip);
        let svc = self.table.get(&key).expect("service");
        let d = svc.dest(&ip(a), p).expect("dest");
        (d.activeconns(), d.inactconns(), d.persistconns())
    }
}

fn split_hostport(s: &str) -> (&str, u16) {
    if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once("]:").unwrap();
        (a, p.parse().unwrap())
    } else {
        let (a, p) = s.rsplit_once(':').unwrap();
        (a, p.parse().unwrap())
    }
}

use xvs_core::service::{
    DestSpec, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec, SvcFlags,
};

pub fn parse_svc(opt: &str, s: &str) -> ServiceKey {
    if opt == "-f" {
        return ServiceKey::Fwmark {
            mark: s.parse().unwrap(),
            af: xvs_core::service::Af::V4,
        };
    }
    let (a, p) = split_hostport(s);
    ServiceKey::Addr {
        proto: if opt == "-u" {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        addr: ip(a),
        port: p,
    }
}

/// A tiny subset of the ipvsadm grammar, enough to script the tests readably.
pub fn apply(table: &mut ServiceTable, line: &str) {
    let t: Vec<&str> = line.split_whitespace().collect();
    let key = parse_svc(t[1], t[2]);
    let mut i = 3;
    match t[0] {
        "-A" | "-E" => {
            let mut spec = ServiceSpec::new(key);
            while i < t.len() {
                match t[i] {
                    "-s" => {
                        spec.sched = SchedKind::from_name(t[i + 1]).unwrap();
                        i += 1;
                    }
                    "-p" => {
                        spec.flags.0 |= SvcFlags::PERSISTENT;
                        spec.timeout = 360;
                        if let Some(v) = t.get(i + 1).and_then(|v| v.parse().ok()) {
                            spec.timeout = v;
                            i += 1;
                        }
                    }
                    "-M" => {
                        let m: std::net::Ipv4Addr = t[i + 1].parse().unwrap();
                        spec.netmask = u32::from(m);
                        i += 1;
                    }
                    "-o" => spec.flags.0 |= SvcFlags::ONEPACKET,
                    "-b" => {
                        for f in t[i + 1].split(',') {
                            spec.flags.0 |= match f {
                                "sh-fallback" | "mh-fallback" => SvcFlags::SCHED1,
                                "sh-port" | "mh-port" => SvcFlags::SCHED2,
                                o => panic!("scheduler flag {o}"),
                            };
                        }
                        i += 1;
                    }
                    o => panic!("option {o}"),
                }
                i += 1;
            }
            if t[0] == "-A" {
                table.add_service(spec).unwrap();
            } else {
                table.edit_service(spec).unwrap();
            }
        }
        "-a" | "-e" => {
            let (a, p) = split_hostport(t[4]);
            let mut d = DestSpec::new(ip(a), p);
            i = 5;
            while i < t.len() {
                match t[i] {
                    "-m" => d.fwd = FwdMethod::Masq,
                    "-g" => d.fwd = FwdMethod::Route,
                    "-i" => d.fwd = FwdMethod::Tunnel,
                    "--fullnat" => d.fwd = FwdMethod::FullNat,
                    "-w" => {
                        d.weight = t[i + 1].parse().unwrap();
                        i += 1;
                    }
                    "-x" => {
                        d.u_threshold = t[i + 1].parse().unwrap();
                        i += 1;
                    }
                    "-y" => {
                        d.l_threshold = t[i + 1].parse().unwrap();
                        i += 1;
                    }
                    o => panic!("option {o}"),
                }
                i += 1;
            }
            if t[0] == "-a" {
                table.add_dest(&key, d).unwrap();
            } else {
                table.edit_dest(&key, d).unwrap();
            }
        }
        "-d" => {
            let (a, p) = split_hostport(t[4]);
            table.del_dest(&key, ip(a), p).unwrap();
        }
        "-D" => table.del_service(&key).unwrap(),
        c => panic!("command {c}"),
    }
}
