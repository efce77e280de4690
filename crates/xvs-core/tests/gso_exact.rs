//! TCP segmentation of super-frames, byte for byte against segments built
//! independently with etherparse (its own header writers and checksums), as
//! the kernel's GSO would cut them: IPv4 (with options) and IPv6 (with
//! extension headers), an optional 802.1Q tag, TCP options, FIN/PSH on the
//! last segment only, CWR on the first only. And hostile input never panics.

use etherparse::{
    EtherType, Ethernet2Header, IpDscp, IpEcn, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options,
    Ipv6FlowLabel, Ipv6Header, Ipv6RawExtHeader, SingleVlanHeader, TcpHeader, VlanId, VlanPcp,
};
use proptest::prelude::*;
use xvs_core::wire::gso::{plan, segment, GsoError};

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    vlan: Option<u16>,
    /// IPv4 option bytes (a multiple of 4, up to 40).
    ip_opts: usize,
    /// IPv6 extension headers before TCP: (kind, payload length + 2 in units of 8).
    exts: Vec<(u8, usize)>,
    /// TCP option bytes (a multiple of 4, up to 40).
    tcp_opts: usize,
    flags: Flags,
    seq: u32,
    id: u16,
    payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    fin: bool,
    psh: bool,
    cwr: bool,
    ece: bool,
    urg: bool,
}

const SMAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DMAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const S4: [u8; 4] = [10, 77, 1, 2];
const D4: [u8; 4] = [10, 77, 3, 4];
const S6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
const D6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd];

fn ipv4(spec: &Spec, id: u16, l4_len: usize) -> Ipv4Header {
    let opts: Vec<u8> = (0..spec.ip_opts)
        .map(|i| if i + 1 == spec.ip_opts { 0 } else { 1 })
        .collect();
    let mut h = Ipv4Header {
        dscp: IpDscp::try_new(10).unwrap(),
        ecn: IpEcn::try_new(2).unwrap(),
        total_len: 0,
        identification: id,
        dont_fragment: true,
        more_fragments: false,
        fragment_offset: IpFragOffset::ZERO,
        time_to_live: 61,
        protocol: IpNumber::TCP,
        header_checksum: 0,
        source: S4,
        destination: D4,
        options: Ipv4Options::try_from(&opts[..]).unwrap(),
    };
    h.total_len = (h.header_len() + l4_len) as u16;
    h.header_checksum = h.calc_header_checksum();
    h
}

fn exts(spec: &Spec) -> Vec<Ipv6RawExtHeader> {
    let mut out = Vec::new();
    for (i, &(_, units)) in spec.exts.iter().enumerate() {
        let next = spec
            .exts
            .get(i + 1)
            .map_or(IpNumber::TCP, |e| IpNumber(e.0));
        let payload: Vec<u8> = (0..units * 8 - 2).map(|b| b as u8 | 0x40).collect();
        out.push(Ipv6RawExtHeader::new_raw(next, &payload).unwrap());
    }
    out
}

fn ipv6(spec: &Spec, ext_len: usize, l4_len: usize) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0x28,
        flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
        payload_length: (ext_len + l4_len) as u16,
        next_header: spec.exts.first().map_or(IpNumber::TCP, |e| IpNumber(e.0)),
        hop_limit: 63,
        source: S6,
        destination: D6,
    }
}

fn tcp(spec: &Spec, seq: u32, f: Flags) -> TcpHeader {
    let mut t = TcpHeader::new(40000, 8080, seq, 501);
    t.acknowledgment_number = 0xdead_beef;
    t.ack = true;
    t.fin = f.fin;
    t.psh = f.psh;
    t.cwr = f.cwr;
    t.ece = f.ece;
    t.urg = f.urg;
    t.urgent_pointer = if f.urg { 7 } else { 0 };
    // NOPs then a timestamp-like filler: any bytes are options to GSO.
    let opts: Vec<u8> = (0..spec.tcp_opts)
        .map(|i| if i < 2 { 1 } else { (i * 13) as u8 })
        .collect();
    t.set_options_raw(&opts).unwrap();
    t
}

/// Ethernet (+ tag), IP, extensions, TCP header with the given checksum, payload.
fn frame(spec: &Spec, id: u16, seq: u32, f: Flags, payload: &[u8], csum: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    let ip_type = if spec.v6 {
        EtherType::IPV6
    } else {
        EtherType::IPV4
    };
    let eth = Ethernet2Header {
        source: SMAC,
        destination: DMAC,
        ether_type: if spec.vlan.is_some() {
            EtherType::VLAN_TAGGED_FRAME
        } else {
            ip_type
        },
    };
    eth.write(&mut out).unwrap();
    if let Some(v) = spec.vlan {
        SingleVlanHeader {
            pcp: VlanPcp::try_new(3).unwrap(),
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(v).unwrap(),
            ether_type: ip_type,
        }
        .write(&mut out)
        .unwrap();
    }
    let mut t = tcp(spec, seq, f);
    let l4_len = t.header_len() + payload.len();
    if spec.v6 {
        let e = exts(spec);
        let ext_len: usize = e.iter().map(|x| x.header_len()).sum();
        let ip = ipv6(spec, ext_len, l4_len);
        ip.write(&mut out).unwrap();
        for x in &e {
            x.write(&mut out).unwrap();
        }
        t.checksum = csum.unwrap_or_else(|| t.calc_checksum_ipv6(&ip, payload).unwrap());
    } else {
        let ip = ipv4(spec, id, l4_len);
        ip.write(&mut out).unwrap();
        t.checksum = csum.unwrap_or_else(|| t.calc_checksum_ipv4(&ip, payload).unwrap());
    }
    t.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// IP + extension + TCP header bytes.
fn hdr_len(spec: &Spec) -> usize {
    let ip = if spec.v6 {
        40 + spec.exts.iter().map(|e| e.1 * 8).sum::<usize>()
    } else {
        20 + spec.ip_opts
    };
    ip + 20 + spec.tcp_opts
}

/// What the kernel would produce, built with etherparse.
fn expected(spec: &Spec, mtu: usize) -> Vec<Vec<u8>> {
    let mss = mtu - hdr_len(spec);
    let chunks: Vec<&[u8]> = spec.payload.chunks(mss).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let last = k + 1 == n;
            let f = Flags {
                fin: spec.flags.fin && last,
                psh: spec.flags.psh && last,
                cwr: spec.flags.cwr && k == 0,
                ..spec.flags
            };
            let seq = spec.seq.wrapping_add((k * mss) as u32);
            frame(spec, spec.id.wrapping_add(k as u16), seq, f, c, None)
        })
        .collect()
}

/// The super-frame, with a checksum field holding garbage (a partial sum or a
/// GRO leftover: never to be trusted).
fn superframe(spec: &Spec) -> Vec<u8> {
    frame(
        spec,
        spec.id,
        spec.seq,
        spec.flags,
        &spec.payload,
        Some(0x1234),
    )
}

fn cut(f: &[u8], mtu: usize) -> Result<Option<Vec<Vec<u8>>>, GsoError> {
    let Some(p) = plan(f, mtu)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for k in 0..p.segments() {
        let mut buf = vec![0u8; p.max_seg_len()];
        let n = segment(f, &p, k, &mut buf)?;
        assert_eq!(n, p.seg_len(k));
        buf.truncate(n);
        out.push(buf);
    }
    Ok(Some(out))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn base(v6: bool) -> Spec {
    Spec {
        v6,
        vlan: None,
        ip_opts: 0,
        exts: Vec::new(),
        tcp_opts: 12,
        flags: Flags {
            psh: true,
            ..Default::default()
        },
        seq: 1_000_000,
        id: 4242,
        payload: pattern(64_000),
    }
}

fn check(spec: &Spec, mtu: usize) {
    let got = cut(&superframe(spec), mtu).unwrap().expect("a super-frame");
    let want = expected(spec, mtu);
    assert_eq!(got.len(), want.len(), "segment count");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "segment {k} of {} differs:\n got {g:02x?}\nwant {w:02x?}",
            got.len()
        );
    }
}

#[test]
fn ipv4_64k_at_1500() {
    let s = base(false);
    check(&s, 1500);
    // 1500 - 20 - 32 = 1448 bytes a segment: 44 full ones and a short one.
    let got = cut(&superframe(&s), 1500).unwrap().unwrap();
    assert_eq!(got.len(), 45);
    assert_eq!(got[0].len(), 1514);
    assert_eq!(got[44].len(), 14 + 52 + 64_000 - 44 * 1448);
}

#[test]
fn ipv6_64k_at_1500() {
    check(&base(true), 1500);
}

#[test]
fn ipv4_options_and_vlan() {
    let mut s = base(false);
    s.ip_opts = 12;
    s.tcp_opts = 40;
    s.vlan = Some(77);
    check(&s, 1500);
    check(&s, 576);
}

#[test]
fn ipv6_extension_headers_are_copied() {
    let mut s = base(true);
    s.exts = vec![(0, 1), (43, 3), (60, 2)];
    s.vlan = Some(4000);
    check(&s, 1500);
    check(&s, 1280);
}

#[test]
fn fin_psh_last_cwr_first() {
    let mut s = base(false);
    s.flags = Flags {
        fin: true,
        psh: true,
        cwr: true,
        ece: true,
        urg: true,
    };
    s.payload = pattern(5000);
    check(&s, 1500);
    let got = cut(&superframe(&s), 1500).unwrap().unwrap();
    let flags: Vec<u8> = got.iter().map(|g| g[14 + 20 + 13]).collect();
    // ACK|URG|ECE always; CWR on the first; FIN|PSH on the last.
    assert_eq!(flags, [0xf0, 0x70, 0x70, 0x79]);
}

#[test]
fn odd_final_segment_and_wrapping_seq_and_id() {
    let mut s = base(false);
    s.payload = pattern(1448 * 3 + 1);
    s.seq = u32::MAX - 1000;
    s.id = u16::MAX - 1;
    check(&s, 1500);
    let mut s6 = base(true);
    s6.payload = pattern(1427 * 2 + 3);
    s6.seq = u32::MAX;
    check(&s6, 1500);
}

#[test]
fn udp_super_frames_are_refused() {
    let mut f = superframe(&base(false));
    f[14 + 9] = 17;
    assert_eq!(cut(&f, 1500), Err(GsoError::NotTcp));
    let mut f6 = superframe(&base(true));
    f6[14 + 6] = 17;
    assert_eq!(cut(&f6, 1500), Err(GsoError::NotTcp));
}

#[test]
fn a_frame_within_the_mtu_is_left_alone() {
    let mut s = base(false);
    s.payload = pattern(1448);
    assert_eq!(cut(&superframe(&s), 1500), Ok(None));
    assert!(cut(&superframe(&s), 1499).unwrap().is_some());
}

#[test]
fn syn_and_rst_super_frames_are_refused() {
    for flag in [0x02u8, 0x04] {
        let mut f = superframe(&base(false));
        f[14 + 20 + 13] |= flag;
        assert_eq!(cut(&f, 1500), Err(GsoError::Malformed));
    }
}

#[test]
fn fragments_and_jumbograms_are_not_cut() {
    let mut f = superframe(&base(false));
    f[14 + 6] |= 0x20; // MF
    assert_eq!(cut(&f, 1500), Err(GsoError::Unsupported));
    let mut s = base(true);
    s.exts = vec![(44, 1)];
    assert_eq!(cut(&superframe(&s), 1500), Err(GsoError::Unsupported));
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        proptest::option::of(0u16..4095),
        0usize..=10,
        proptest::collection::vec(
            (prop_oneof![Just(0u8), Just(43), Just(60)], 1usize..4),
            0..3,
        ),
        0usize..=10,
        any::<(bool, bool, bool, bool, bool)>(),
        any::<u32>(),
        any::<u16>(),
        1usize..20_000,
    )
        .prop_map(|(v6, vlan, io, exts, to, f, seq, id, n)| Spec {
            v6,
            vlan,
            ip_opts: io * 4,
            exts: if v6 { exts } else { Vec::new() },
            tcp_opts: to * 4,
            flags: Flags {
                fin: f.0,
                psh: f.1,
                cwr: f.2,
                ece: f.3,
                urg: f.4,
            },
            seq,
            id,
            payload: pattern(n),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_tcp_super_frame_is_cut_as_the_kernel_would(spec in arb_spec(), mtu in 150usize..9000) {
        let total = hdr_len(&spec) + spec.payload.len();
        let f = superframe(&spec);
        match cut(&f, mtu).unwrap() {
            None => prop_assert!(total <= mtu),
            Some(got) => {
                prop_assert!(total > mtu);
                let want = expected(&spec, mtu);
                prop_assert_eq!(got, want);
            }
        }
    }

    /// Mangled frames and any MTU: an error or segments, never a panic; when
    /// it cuts, the segments carry the payload exactly once, in order.
    #[test]
    fn hostile_input_never_panics(
        spec in arb_spec(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut_at in any::<usize>(),
        mtu in 0usize..70_000,
    ) {
        let mut f = superframe(&spec);
        for (at, v) in edits {
            // Mostly the headers, where the lengths live.
            let i = at % f.len().min(140);
            f[i] = v;
        }
        if cut_at % 3 == 0 {
            f.truncate(cut_at % (f.len() + 1));
        }
        if let Ok(Some(p)) = plan(&f, mtu) {
            prop_assume!(p.segments() < 5000);
            let mut payload = Vec::new();
            let mut buf = vec![0u8; p.max_seg_len()];
            let hdrs = p.seg_len(0) - p.mss();
            for k in 0..p.segments() {
                let n = segment(&f, &p, k, &mut buf).unwrap();
                prop_assert!(n - hdrs <= p.mss());
                prop_assert!(n > hdrs);
                payload.extend_from_slice(&buf[hdrs..n]);
            }
            prop_assert_eq!(&payload[..], &f[hdrs..hdrs + payload.len()]);
        }
        let _ = plan(&f[..f.len() / 2], mtu);
    }
}
