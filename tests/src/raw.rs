//! Frames built byte by byte and sent raw (AF_PACKET) from a namespace: for
//! what a socket cannot send, such as a TCP segment with no connection behind
//! it or a frame addressed to a MAC that is not its next hop's.

use std::net::SocketAddrV4;
use xvs_netns::Netns;

/// The MAC address of `dev` in `ns`.
pub fn mac(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = ns
        .exec(&["cat", &format!("/sys/class/net/{dev}/address")])
        .expect("read the MAC address");
    let s = String::from_utf8_lossy(&out.stdout);
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.trim().split(':').collect();
    assert_eq!(parts.len(), 6, "MAC of {dev}: {s:?}");
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).expect("hex");
    }
    m
}

/// `aa:bb:...` as `ip link` takes it.
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The Internet checksum of `b` (complemented).
pub fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet frame: `dst`, `src`, IPv4, then `ip`.
fn eth4(dst: [u8; 6], src: [u8; 6], ip: Vec<u8>) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ip);
    f
}

/// IPv4 header (DF, TTL 64, valid checksum) + `l4`, whose checksum at
/// `csum_at` is filled in over the pseudo-header.
fn ip4(
    proto: u8,
    src: &SocketAddrV4,
    dst: &SocketAddrV4,
    mut l4: Vec<u8>,
    csum_at: usize,
) -> Vec<u8> {
    let mut pseudo = src.ip().octets().to_vec();
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&l4);
    let c = csum(&pseudo);
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend(l4);
    h
}

/// A UDP datagram `src` → `dst` carrying `payload`, in a frame to MAC `dmac`.
pub fn udp4(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let mut u = src.port().to_be_bytes().to_vec();
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    eth4(dmac, smac, ip4(17, &src, &dst, u, 6))
}

/// A TCP segment `src` → `dst` with `flags` (0x10 ACK, 0x02 SYN...), no
/// options or data, in a frame to MAC `dmac`.
pub fn tcp4(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    let mut t = src.port().to_be_bytes().to_vec();
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    eth4(dmac, smac, ip4(6, &src, &dst, t, 16))
}

/// Sends `frames` out of `dev` in `ns` as they are (AF_PACKET, SOCK_RAW).
pub fn send(ns: &Netns, dev: &str, frames: &[Vec<u8>]) {
    let hex: Vec<String> = frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
                  s.bind((sys.argv[1],0))\n\
                  for h in sys.argv[2:]:\n    s.send(bytes.fromhex(h))\n";
    let mut args = vec!["python3", "-c", script, dev];
    args.extend(hex.iter().map(String::as_str));
    let out = ns.exec(&args).expect("run python3");
    assert!(
        out.status.success(),
        "raw send on {dev}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
