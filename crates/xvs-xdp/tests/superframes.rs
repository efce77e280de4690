//! Super-frames reach the worker whole and leave it cut: a GSO frame injected
//! on the client's veth (an AF_PACKET socket with a virtio-net header, as a
//! VM or container stack would hand it over) arrives under generic XDP as a
//! chain of AF_XDP descriptors (or one, below a chunk) and under AF_PACKET in
//! one ring slot; the handler sees the segments that `xvs_core::wire::gso`
//! makes of it, not prepared (no burst index), and they are transmitted.
//! A UDP super-frame is dropped and counted. Native XDP with the multi-buffer
//! program takes a jumbo MTU, and a jumbo frame above a chunk is cut too.

mod common;

use common::*;
use std::time::{Duration, Instant};
use xvs_core::addr::Addr;
use xvs_core::frame::Frame;
use xvs_core::wire::gso;
use xvs_core::wire::IpProtocol;
use xvs_xdp::{
    Backend, BackendChoice, BatchHandler, Disposition, Interface, PortId, SteerKey, Steering,
    Worker, WorkerConfig,
};

const C4: [u8; 4] = [10, 77, 12, 1];
const VIP4: [u8; 4] = [10, 77, 12, 100];
const C6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0, 1];
const VIP6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 1, 0];

fn lab(tag: &str, mtu: u32) -> (xvs_netns::Netns, xvs_netns::Netns) {
    let c = ns(&format!("{tag}c"));
    let d = ns(&format!("{tag}d"));
    xvs_netns::veth("c0", &c, "d0", &d).unwrap();
    sh(&c, &format!("ip link set c0 mtu {mtu}"));
    sh(&d, &format!("ip link set d0 mtu {mtu}"));
    (c, d)
}

/// A TCP or UDP frame from the client to the VIP, checksum field partial
/// (pseudo-header sum only), as a local stack hands a GSO frame over.
fn frame(v6: bool, udp: bool, payload: usize, smac: [u8; 6], dmac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    let proto = if udp { 17u8 } else { 6 };
    let l4len = if udp { 8 } else { 32 } + payload;
    let pseudo = if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4len as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend_from_slice(&C6);
        f.extend_from_slice(&VIP6);
        xvs_core::wire::checksum::pseudo(&C6, &VIP6, proto, l4len as u32)
    } else {
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + l4len) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&C4);
        f.extend_from_slice(&VIP4);
        let ck = xvs_core::wire::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ck.to_be_bytes());
        xvs_core::wire::checksum::pseudo(&C4, &VIP4, proto, l4len as u32)
    };
    let partial = xvs_core::wire::checksum::fold(pseudo);
    if udp {
        f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x88]);
        f.extend_from_slice(&(l4len as u16).to_be_bytes());
        f.extend_from_slice(&partial.to_be_bytes());
    } else {
        f.extend_from_slice(&[
            0x9c, 0x40, 0x13, 0x89, 0, 1, 0, 0, 0, 2, 0, 0, 0x80, 0x18, 1, 0,
        ]);
        f.extend_from_slice(&partial.to_be_bytes());
        // Urgent pointer, then NOP NOP and a timestamp option.
        f.extend_from_slice(&[0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    }
    f.extend((0..payload).map(|i| (i * 7 % 253) as u8));
    f
}

/// Sends `f` out of `ifname` (in the calling thread's namespace) through an
/// AF_PACKET socket with a virtio-net header: `gso_type` 0 for a plain frame,
/// 1 TCPv4, 4 TCPv6, 5 UDP.
fn inject(ifname: &str, f: &[u8], gso_type: u8, gso_size: u16) {
    const PACKET_VNET_HDR: i32 = 15;
    let ifindex = xvs_xdp::sys::ifindex(ifname).unwrap();
    let v6 = f[12..14] == [0x86, 0xdd];
    let l4 = if v6 { 54u16 } else { 34 };
    let udp = f[if v6 { 20 } else { 23 }] == 17;
    let mut pkt = Vec::with_capacity(10 + f.len());
    pkt.push(1u8); // VIRTIO_NET_HDR_F_NEEDS_CSUM
    pkt.push(gso_type);
    pkt.extend_from_slice(&(l4 + if udp { 8 } else { 32 }).to_le_bytes());
    pkt.extend_from_slice(&gso_size.to_le_bytes());
    pkt.extend_from_slice(&l4.to_le_bytes());
    pkt.extend_from_slice(&(if udp { 6u16 } else { 16 }).to_le_bytes());
    pkt.extend_from_slice(f);
    let s = xvs_xdp::sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0, "inject").unwrap();
    xvs_xdp::sys::setsockopt(&s, 263, PACKET_VNET_HDR, &1i32, "PACKET_VNET_HDR").unwrap();
    // SAFETY: sockaddr_ll is plain data; zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = u16::from_be_bytes([f[12], f[13]]).to_be();
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `pkt` and `sa` are valid for the lengths passed.
    let rc = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        rc,
        pkt.len() as isize,
        "inject: {}",
        std::io::Error::last_os_error()
    );
}

/// Records every frame with the index it came with; sends it back out.
#[derive(Default)]
struct Rec {
    got: Vec<(Option<usize>, Vec<u8>)>,
}

impl BatchHandler for Rec {
    fn prepare(&mut self, _: PortId, frames: &mut dyn Iterator<Item = &[u8]>) {
        for _ in frames {}
    }
    fn handle(&mut self, port: PortId, i: Option<usize>, frame: &mut Frame) -> Disposition {
        self.got.push((i, frame.data().to_vec()));
        Disposition::Tx(port)
    }
}

fn pump_until(w: &mut Worker, h: &mut Rec, want: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while h.got.len() < want && Instant::now() < end {
        if w.poll(Duration::from_millis(5)).unwrap() {
            w.process_batch_with(h);
        }
    }
    // Anything more (there should be nothing) shows up in the counts.
    let quiet = Instant::now() + Duration::from_millis(200);
    while Instant::now() < quiet {
        if w.poll(Duration::from_millis(5)).unwrap() {
            w.process_batch_with(h);
        }
    }
    w.flush(Duration::from_secs(1));
}

/// What the worker must hand over for super-frame `f`: its segments at `mtu`.
fn segments(f: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let p = gso::plan(f, mtu).unwrap().expect("a super-frame");
    (0..p.segments())
        .map(|k| {
            let mut b = vec![0u8; p.max_seg_len()];
            let n = gso::segment(f, &p, k, &mut b).unwrap();
            b.truncate(n);
            b
        })
        .collect()
}

fn setup(d: &xvs_netns::Netns, backend: Backend) -> (Steering, Interface, Worker) {
    d.run(|| {
        let steer = Steering::new().unwrap();
        for (addr, proto, port) in [
            (Addr::v4(VIP4), IpProtocol::Tcp, 5001),
            (Addr::v6(VIP6), IpProtocol::Tcp, 5001),
            (Addr::v4(VIP4), IpProtocol::Udp, 5000),
        ] {
            steer.add(SteerKey::Vip { addr, port, proto }).unwrap();
        }
        let iface = Interface::attach(&steer, "d0", BackendChoice::Force(backend)).unwrap();
        let w = Worker::new(&[&iface], 0, &WorkerConfig::default()).unwrap();
        (steer, iface, w)
    })
    .unwrap()
}

fn cut_and_count(tag: &str, backend: Backend) {
    let (c, d) = lab(tag, 1500);
    let (_steer, iface, mut w) = setup(&d, backend);
    assert!(w.ports()[0].multi_buffer, "{:?}", w.ports());
    if backend.is_xdp() {
        assert!(iface.xdp_multi_buffer());
    }
    let (cm, dm) = (mac(&c, "c0"), mac(&d, "d0"));
    let big4 = frame(false, false, 20_000, cm, dm);
    let small4 = frame(false, false, 3_000, cm, dm);
    let big6 = frame(true, false, 30_000, cm, dm);
    let udp = frame(false, true, 10_000, cm, dm);
    let plain = frame(false, false, 1_000, cm, dm);
    let want: Vec<Vec<u8>> = [&big4, &small4, &big6]
        .iter()
        .flat_map(|f| segments(f, 1500))
        .chain(std::iter::once(plain.clone()))
        .collect();
    c.run(|| {
        inject("c0", &big4, 1, 1448);
        inject("c0", &small4, 1, 1448);
        inject("c0", &big6, 4, 1428);
        inject("c0", &udp, 5, 1472);
        inject("c0", &plain, 0, 0);
    })
    .unwrap();
    let mut h = Rec::default();
    pump_until(&mut w, &mut h, want.len());
    let got: Vec<Vec<u8>> = h.got.iter().map(|g| g.1.clone()).collect();
    assert_eq!(got.len(), want.len(), "frames handed to the handler");
    for (k, (g, wnt)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == wnt,
            "frame {k} differs ({} vs {} bytes)",
            g.len(),
            wnt.len()
        );
    }
    // Segments are not in the prepared burst; the plain frame is.
    let n = want.len();
    assert!(h.got[..n - 1].iter().all(|g| g.0.is_none()));
    assert!(h.got[n - 1].0.is_some());
    assert!(got.iter().all(|g| g.len() <= 1514));
    let s = *w.stats();
    assert_eq!(
        (s.rx, s.superframes, s.segments, s.superframe_not_tcp),
        (5, 3, (n - 1) as u64, 1),
        "{s:?}"
    );
    assert_eq!(s.tx, n as u64, "{s:?}");
    assert_eq!(
        s.superframe_malformed + s.superframe_too_long + s.superframe_no_buffers + s.tx_ring_full,
        0,
        "{s:?}"
    );
    if let Worker::Xdp(x) = &w {
        let k = x.kernel_stats()[0];
        assert_eq!((k.rx_dropped, k.tx_invalid_descs), (0, 0), "{k:?}");
    }
    let mine = xvs_xdp::published_stats();
    assert!(
        mine.iter()
            .any(|p| p.counters.contains(&("superframes", 3))),
        "published: {mine:?}"
    );
}

#[test]
fn generic_xdp_cuts_superframes() {
    root();
    cut_and_count("sfg", Backend::XdpGeneric);
}

#[test]
fn af_packet_cuts_superframes() {
    root();
    cut_and_count("sfa", Backend::AfPacket);
}

/// The multi-buffer program attaches natively to a veth with a jumbo MTU (a
/// single-buffer one is refused above ~3500), and a jumbo frame larger than
/// a UMEM chunk arrives as a chain and is cut to what a chunk holds.
#[test]
fn native_xdp_takes_jumbo_frames_and_cuts_them_to_chunks() {
    root();
    let (c, d) = lab("sfn", 9000);
    let (_steer, iface, mut w) = setup(&d, Backend::XdpNative);
    assert!(iface.xdp_multi_buffer());
    assert!(w.ports()[0].multi_buffer);
    let f = frame(false, false, 8_000, mac(&c, "c0"), mac(&d, "d0"));
    // A chunk of 4096 holds 3840 bytes of frame: IP packets of 3822 at most.
    let want = segments(&f, 3822);
    assert_eq!(want.len(), 3);
    c.run(|| inject("c0", &f, 0, 0)).unwrap();
    let mut h = Rec::default();
    pump_until(&mut w, &mut h, want.len());
    let got: Vec<Vec<u8>> = h.got.iter().map(|g| g.1.clone()).collect();
    assert_eq!(got, want);
    assert_eq!((w.stats().superframes, w.stats().segments), (1, 3));
}

/// An MTU change reaches the cut within about a second (the worker re-reads
/// it from its poll, in the namespace it was opened in, whichever thread
/// polls: here the test's own, outside that namespace).
#[test]
fn an_mtu_change_is_picked_up() {
    root();
    let (c, d) = lab("sfm", 1500);
    let (_steer, _iface, mut w) = setup(&d, Backend::XdpGeneric);
    sh(&d, "ip link set d0 mtu 1280");
    sh(&c, "ip link set c0 mtu 1280");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        w.poll(Duration::from_millis(50)).unwrap();
    }
    let f = frame(false, false, 10_000, mac(&c, "c0"), mac(&d, "d0"));
    let want = segments(&f, 1280);
    c.run(|| inject("c0", &f, 1, 1448)).unwrap();
    let mut h = Rec::default();
    pump_until(&mut w, &mut h, want.len());
    let got: Vec<Vec<u8>> = h.got.iter().map(|g| g.1.clone()).collect();
    assert_eq!(got, want);
    assert!(got.iter().all(|g| g.len() <= 1294));
}
