//! Lab helpers for the namespace tests: veth pairs between namespaces, MAC
//! lookups, a worker pump, and a minimal frame parser for assertions.
#![allow(dead_code)]

use std::time::{Duration, Instant};
use xvs_netns::Netns;
use xvs_xdp::{Disposition, Worker};

/// Fails the test when not root (see [`xvs_netns::require_root`]).
pub fn root() {
    xvs_netns::require_root()
}

/// A namespace named `<test prefix>-<tag>`.
pub fn ns(tag: &str) -> Netns {
    Netns::new(&format!("{}-{tag}", xvs_netns::test_prefix())).expect("netns")
}

pub fn sh(ns: &Netns, script: &str) {
    let out = ns.sh(script).unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(out.status.success(), "{script}");
}

/// The MAC address of `ifname` in `ns`.
pub fn mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    let out = ns
        .exec(&["cat", &format!("/sys/class/net/{ifname}/address")])
        .expect("mac");
    let s = String::from_utf8_lossy(&out.stdout);
    let mut m = [0u8; 6];
    for (i, p) in s.trim().split(':').enumerate() {
        m[i] = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs the worker until `done()` or 20 s pass, calling `f` on every frame.
pub fn pump(
    w: &mut Worker,
    mut done: impl FnMut() -> bool,
    mut f: impl FnMut(xvs_xdp::PortId, &mut xvs_core::frame::Frame) -> Disposition,
) {
    let end = Instant::now() + Duration::from_secs(20);
    while !done() && Instant::now() < end {
        if w.poll(Duration::from_millis(5)).unwrap() {
            w.process_batch(&mut f);
        }
    }
    w.flush(Duration::from_secs(1));
}

/// What a test needs to know about a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub v6: bool,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
}

/// Parses Ethernet + IPv4/IPv6 + TCP/UDP (no options beyond IHL).
pub fn parse(f: &[u8]) -> Option<Parsed> {
    let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (v6, proto, l4) = match et {
        0x0800 => {
            let ihl = (f.get(14)? & 0xf) as usize * 4;
            (false, *f.get(23)?, 14 + ihl)
        }
        0x86dd => (true, *f.get(20)?, 54),
        _ => return None,
    };
    let sport = u16::from_be_bytes([*f.get(l4)?, *f.get(l4 + 1)?]);
    let dport = u16::from_be_bytes([*f.get(l4 + 2)?, *f.get(l4 + 3)?]);
    let (tcp_flags, data) = match proto {
        17 => (0, l4 + 8),
        6 => (*f.get(l4 + 13)?, l4 + ((f.get(l4 + 12)? >> 4) as usize) * 4),
        _ => return None,
    };
    let payload = if proto == 17 {
        let ulen = u16::from_be_bytes([*f.get(l4 + 4)?, *f.get(l4 + 5)?]) as usize;
        f.get(data..l4 + ulen)?.to_vec()
    } else {
        f.get(data..)?.to_vec()
    };
    Some(Parsed {
        v6,
        proto,
        sport,
        dport,
        tcp_flags,
        payload,
    })
}
