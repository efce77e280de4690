//! Byte-for-byte checks against the kernel's structures, written out here
//! field by field at the offsets of `net/netfilter/ipvs/ip_vs_sync.c`
//! (Linux 6.18), independently of the crate's encoder and decoder:
//!
//! ```text
//! struct ip_vs_sync_mesg (8)      struct ip_vs_sync_v4 (36) / _v6 (72)
//!   0 u8   reserved = 0             0 u8    type (bit 0: IPv6)
//!   1 u8   syncid                   1 u8    protocol
//!   2 be16 size (whole message)     2 be16  ver_size (ver << 12 | size)
//!   4 u8   nr_conns                 4 be32  flags
//!   5 s8   version = 1              8 be16  state
//!   6 u16  spare = 0               10 be16  cport
//!                                  12 be16  vport
//! struct ip_vs_sync_mesg_v0 (4)    14 be16  dport
//!   0 u8   nr_conns                16 be32  fwmark
//!   1 u8   syncid                  20 be32  timeout (s)
//!   2 be16 size                    24       caddr, vaddr, daddr (4 or 16 each)
//!
//! struct ip_vs_sync_conn_v0 (24)   option: u8 type | u8 len | data
//!   0 u8   reserved                  1 SEQ_DATA (24: in_seq, out_seq, each
//!   1 u8   protocol                    be32 init_seq, delta, previous_delta)
//!   2 be16 cport, 4 vport, 6 dport   2 PE_DATA, 3 PE_NAME
//!   8 be32 caddr, 12 vaddr, 16 daddr
//!  20 be16 flags, 22 be16 state    v0 options: 24 bytes of struct ip_vs_seq
//!                                  x2 in the sender's memory order (LE here)
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use xvs_sync::flags::{proto, tcp_state, tpl_state};
use xvs_sync::*;

/// Writes `bytes` at `at`, growing `out` with zeros as needed.
fn put(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if out.len() < at + bytes.len() {
        out.resize(at + bytes.len(), 0);
    }
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `struct ip_vs_sync_mesg` at offset 0.
fn mesg_v1(out: &mut Vec<u8>, syncid: u8, size: u16, nr_conns: u8) {
    put(out, 0, &[0]); // reserved
    put(out, 1, &[syncid]);
    put(out, 2, &size.to_be_bytes());
    put(out, 4, &[nr_conns]);
    put(out, 5, &[1]); // version
    put(out, 6, &[0, 0]); // spare
}

/// `struct ip_vs_sync_mesg_v0` at offset 0.
fn mesg_v0(out: &mut Vec<u8>, syncid: u8, size: u16, nr_conns: u8) {
    put(out, 0, &[nr_conns]);
    put(out, 1, &[syncid]);
    put(out, 2, &size.to_be_bytes());
}

/// The fields of `struct ip_vs_sync_v4`/`_v6` as the kernel stores them.
struct Fixed<'a> {
    stype: u8,
    protocol: u8,
    ver_size: u16,
    flags: u32,
    state: u16,
    cport: u16,
    vport: u16,
    dport: u16,
    fwmark: u32,
    timeout: u32,
    /// 4 or 16 bytes each.
    caddr: &'a [u8],
    vaddr: &'a [u8],
    daddr: &'a [u8],
}

/// `struct ip_vs_sync_v4` or `_v6` at `at`; returns the offset after it.
fn sync_conn(out: &mut Vec<u8>, at: usize, f: &Fixed) -> usize {
    put(out, at, &[f.stype]);
    put(out, at + 1, &[f.protocol]);
    put(out, at + 2, &f.ver_size.to_be_bytes());
    put(out, at + 4, &f.flags.to_be_bytes());
    put(out, at + 8, &f.state.to_be_bytes());
    put(out, at + 10, &f.cport.to_be_bytes());
    put(out, at + 12, &f.vport.to_be_bytes());
    put(out, at + 14, &f.dport.to_be_bytes());
    put(out, at + 16, &f.fwmark.to_be_bytes());
    put(out, at + 20, &f.timeout.to_be_bytes());
    let w = f.caddr.len();
    assert!(w == 4 || w == 16);
    put(out, at + 24, f.caddr);
    put(out, at + 24 + w, f.vaddr);
    put(out, at + 24 + 2 * w, f.daddr);
    at + 24 + 3 * w
}

/// An option (type, len, data) at `at`; returns the offset after it.
fn option(out: &mut Vec<u8>, at: usize, ptype: u8, data: &[u8]) -> usize {
    put(out, at, &[ptype, data.len() as u8]);
    put(out, at + 2, data);
    at + 2 + data.len()
}

/// `struct ip_vs_sync_conn_options` in network order (version 1).
fn seq_be(s: &SeqData) -> Vec<u8> {
    let mut v = Vec::new();
    for q in [s.in_seq, s.out_seq] {
        v.extend_from_slice(&q.init_seq.to_be_bytes());
        v.extend_from_slice(&q.delta.to_be_bytes());
        v.extend_from_slice(&q.previous_delta.to_be_bytes());
    }
    v
}

/// The same in little-endian memory order (version 0 from an x86 master).
fn seq_le(s: &SeqData) -> Vec<u8> {
    let mut v = Vec::new();
    for q in [s.in_seq, s.out_seq] {
        v.extend_from_slice(&q.init_seq.to_le_bytes());
        v.extend_from_slice(&q.delta.to_le_bytes());
        v.extend_from_slice(&q.previous_delta.to_le_bytes());
    }
    v
}

/// `struct ip_vs_sync_conn_v0` at `at`.
#[allow(clippy::too_many_arguments)]
fn sync_conn_v0(
    out: &mut Vec<u8>,
    at: usize,
    protocol: u8,
    ports: [u16; 3],
    addrs: [[u8; 4]; 3],
    flags: u16,
    state: u16,
) -> usize {
    put(out, at, &[0]);
    put(out, at + 1, &[protocol]);
    put(out, at + 2, &ports[0].to_be_bytes());
    put(out, at + 4, &ports[1].to_be_bytes());
    put(out, at + 6, &ports[2].to_be_bytes());
    put(out, at + 8, &addrs[0]);
    put(out, at + 12, &addrs[1]);
    put(out, at + 16, &addrs[2]);
    put(out, at + 20, &flags.to_be_bytes());
    put(out, at + 22, &state.to_be_bytes());
    at + 24
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// A DR connection, TCP ESTABLISHED, IPv4.
fn dr_v4() -> SyncConn {
    SyncConn {
        protocol: proto::TCP,
        addrs: ConnAddrs::V4 {
            caddr: ip4("192.0.2.10"),
            vaddr: ip4("198.51.100.1"),
            daddr: ip4("10.0.0.21"),
        },
        cport: 40000,
        vport: 80,
        dport: 80,
        fwmark: 0,
        // HASHED is set on a live kernel conn and must not go out.
        flags: ConnFlags(ConnFlags::DROUTE | ConnFlags::NOOUTPUT | ConnFlags::HASHED),
        state: tcp_state::ESTABLISHED,
        timeout: 900,
        seq: None,
        pe_data: None,
        pe_name: None,
    }
}

fn single(version: SyncVersion, syncid: u8, c: &SyncConn) -> Vec<u8> {
    let m = encode_mesgs(version, syncid, 1472, std::slice::from_ref(c)).unwrap();
    assert_eq!(m.len(), 1);
    m.into_iter().next().unwrap()
}

fn decode_ok(buf: &[u8]) -> Vec<SyncConn> {
    let d = decode_mesg(buf, &BackupConfig::default());
    assert_eq!(d.drops.total(), 0, "{:?}", d.drops);
    d.conns
}

#[test]
fn v1_ipv4_record() {
    let c = dr_v4();
    let mut want = Vec::new();
    mesg_v1(&mut want, 7, 8 + 36, 1);
    let end = sync_conn(
        &mut want,
        8,
        &Fixed {
            stype: 0,
            protocol: 6,
            ver_size: 36,
            flags: 0x0003 | 0x0080, // DROUTE | NOOUTPUT, no HASHED
            state: 1,
            cport: 40000,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: &[192, 0, 2, 10],
            vaddr: &[198, 51, 100, 1],
            daddr: &[10, 0, 0, 21],
        },
    );
    assert_eq!(end, 44);
    let got = single(SyncVersion::V1, 7, &c);
    assert_eq!(got, want);
    // Spot-check a few bytes against plain literals too.
    assert_eq!(&got[..8], &[0, 7, 0, 44, 1, 1, 0, 0]);
    assert_eq!(&got[8..12], &[0, 6, 0, 36]);
    assert_eq!(&got[12..16], &[0, 0, 0, 0x83]);

    let back = decode_ok(&want);
    let mut expect = c.clone();
    expect.flags = ConnFlags(0x0083 | ConnFlags::SYNC);
    assert_eq!(back, vec![expect]);
}

#[test]
fn v1_ipv6_record() {
    let c = SyncConn {
        protocol: proto::UDP,
        addrs: ConnAddrs::V6 {
            caddr: ip6("2001:db8::10"),
            vaddr: ip6("2001:db8:1::1"),
            daddr: ip6("fd00::21"),
        },
        cport: 5353,
        vport: 53,
        dport: 5300,
        fwmark: 0,
        flags: ConnFlags(ConnFlags::MASQ | ConnFlags::INACTIVE),
        state: 0,
        timeout: 300,
        seq: None,
        pe_data: None,
        pe_name: None,
    };
    let mut want = Vec::new();
    mesg_v1(&mut want, 0, 8 + 72, 1);
    let end = sync_conn(
        &mut want,
        8,
        &Fixed {
            stype: 1,
            protocol: 17,
            ver_size: 72,
            flags: 0x0100,
            state: 0,
            cport: 5353,
            vport: 53,
            dport: 5300,
            fwmark: 0,
            timeout: 300,
            caddr: &ip6("2001:db8::10").octets(),
            vaddr: &ip6("2001:db8:1::1").octets(),
            daddr: &ip6("fd00::21").octets(),
        },
    );
    assert_eq!(end, 80);
    assert_eq!(single(SyncVersion::V1, 0, &c), want);
    let back = decode_ok(&want);
    assert_eq!(back[0].addrs, c.addrs);
    assert_eq!(back[0].flags, ConnFlags(0x0100 | ConnFlags::SYNC));
    assert_eq!(back[0].timeout, 300);
}

fn seq() -> SeqData {
    SeqData {
        in_seq: SyncSeq {
            init_seq: 0x0102_0304,
            delta: 12,
            previous_delta: 0xffff_fff0,
        },
        out_seq: SyncSeq {
            init_seq: 0xa0b0_c0d0,
            delta: 0x8000_0000,
            previous_delta: 7,
        },
    }
}

#[test]
fn v1_seq_data_option() {
    let mut c = dr_v4();
    c.flags = ConnFlags(ConnFlags::MASQ | ConnFlags::IN_SEQ | ConnFlags::OUT_SEQ);
    c.seq = Some(seq());
    let mut want = Vec::new();
    // 36 fixed + 2 + 24 SEQ_DATA
    mesg_v1(&mut want, 1, 8 + 62, 1);
    let p = sync_conn(
        &mut want,
        8,
        &Fixed {
            stype: 0,
            protocol: 6,
            ver_size: 62,
            flags: 0x0600,
            state: 1,
            cport: 40000,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: &[192, 0, 2, 10],
            vaddr: &[198, 51, 100, 1],
            daddr: &[10, 0, 0, 21],
        },
    );
    let end = option(&mut want, p, 1, &seq_be(&seq()));
    assert_eq!(end, 70);
    assert_eq!(&want[44..48], &[1, 24, 0x01, 0x02]);
    assert_eq!(single(SyncVersion::V1, 1, &c), want);
    assert_eq!(decode_ok(&want)[0].seq, Some(seq()));

    // SEQ flags without data: the kernel sends its (zeroed) seq structs.
    c.seq = None;
    let got = single(SyncVersion::V1, 1, &c);
    assert_eq!(got.len(), 70);
    assert_eq!(&got[46..70], &[0u8; 24]);
    // No SEQ flags: no option even with data at hand.
    c.flags = ConnFlags(ConnFlags::MASQ);
    c.seq = Some(seq());
    assert_eq!(single(SyncVersion::V1, 1, &c).len(), 44);
}

/// A SIP-persistence template: PE_DATA (the Call-ID) then PE_NAME.
fn sip_template() -> SyncConn {
    SyncConn {
        protocol: proto::UDP,
        addrs: ConnAddrs::V4 {
            caddr: ip4("192.0.2.10"),
            vaddr: ip4("198.51.100.1"),
            daddr: ip4("10.0.0.21"),
        },
        cport: 0,
        vport: 5060,
        dport: 5060,
        fwmark: 0,
        flags: ConnFlags(ConnFlags::TEMPLATE | ConnFlags::DROUTE | ConnFlags::NOOUTPUT),
        state: tpl_state::NONE,
        timeout: 360,
        seq: None,
        pe_data: Some(b"a84b4c76e66710".to_vec()),
        pe_name: Some(b"sip".to_vec()),
    }
}

#[test]
fn v1_pe_options_and_padding() {
    let t = sip_template();
    let mut c2 = dr_v4();
    c2.cport = 40001;
    let msg = encode_mesgs(SyncVersion::V1, 3, 1472, &[t.clone(), c2.clone()]).unwrap();
    assert_eq!(msg.len(), 1);

    // Record 1: 36 + (2 + 14) + (2 + 3) = 57 bytes at 8..65, then 3 zero
    // bytes to the next multiple of 4 (68), record 2 at 68..104.
    let mut want = Vec::new();
    mesg_v1(&mut want, 3, 104, 2);
    let p = sync_conn(
        &mut want,
        8,
        &Fixed {
            stype: 0,
            protocol: 17,
            ver_size: 57,
            flags: 0x1000 | 0x0003 | 0x0080,
            state: 0,
            cport: 0,
            vport: 5060,
            dport: 5060,
            fwmark: 0,
            timeout: 360,
            caddr: &[192, 0, 2, 10],
            vaddr: &[198, 51, 100, 1],
            daddr: &[10, 0, 0, 21],
        },
    );
    let p = option(&mut want, p, 2, b"a84b4c76e66710");
    let p = option(&mut want, p, 3, b"sip");
    assert_eq!(p, 65);
    put(&mut want, 65, &[0, 0, 0]);
    let end = sync_conn(
        &mut want,
        68,
        &Fixed {
            stype: 0,
            protocol: 6,
            ver_size: 36,
            flags: 0x0083,
            state: 1,
            cport: 40001,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: &[192, 0, 2, 10],
            vaddr: &[198, 51, 100, 1],
            daddr: &[10, 0, 0, 21],
        },
    );
    assert_eq!(end, 104);
    assert_eq!(msg[0], want);

    let back = decode_ok(&want);
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].pe_data.as_deref(), Some(&b"a84b4c76e66710"[..]));
    assert_eq!(back[0].pe_name.as_deref(), Some(&b"sip"[..]));
    assert!(back[0].is_template());
    assert_eq!(back[1].cport, 40001);

    // The last record is not padded: alone, the template gives 65 bytes.
    let alone = single(SyncVersion::V1, 3, &t);
    assert_eq!(alone.len(), 65);
    assert_eq!(alone[8..], want[8..65]);
    assert_eq!(&alone[..8], &[0, 3, 0, 65, 1, 1, 0, 0]);
}

#[test]
fn v1_fwmark_template() {
    // A fwmark service's persistence template: protocol IPPROTO_IP, the
    // mark as vaddr (0.0.0.5), vport and cport 0, fwmark 5, ASSURED.
    let t = SyncConn {
        protocol: 0,
        addrs: ConnAddrs::V4 {
            caddr: ip4("192.0.2.10"),
            vaddr: ip4("0.0.0.5"),
            daddr: ip4("10.0.0.22"),
        },
        cport: 0,
        vport: 0,
        dport: 0,
        fwmark: 5,
        flags: ConnFlags(ConnFlags::TEMPLATE | ConnFlags::TUNNEL | ConnFlags::NOOUTPUT),
        state: tpl_state::ASSURED,
        timeout: 360,
        seq: None,
        pe_data: None,
        pe_name: None,
    };
    let mut want = Vec::new();
    mesg_v1(&mut want, 9, 44, 1);
    sync_conn(
        &mut want,
        8,
        &Fixed {
            stype: 0,
            protocol: 0,
            ver_size: 36,
            flags: 0x1082,
            state: 1,
            cport: 0,
            vport: 0,
            dport: 0,
            fwmark: 5,
            timeout: 360,
            caddr: &[192, 0, 2, 10],
            vaddr: &[0, 0, 0, 5],
            daddr: &[10, 0, 0, 22],
        },
    );
    assert_eq!(single(SyncVersion::V1, 9, &t), want);
    let back = decode_ok(&want);
    assert_eq!(back[0].fwmark, 5);
    assert_eq!(back[0].protocol, 0);
    assert_eq!(back[0].state, tpl_state::ASSURED);
    assert!(back[0].is_template());
}

#[test]
fn v1_multi_record_message_mixed_families() {
    let a = dr_v4();
    let mut b = dr_v4();
    b.addrs = ConnAddrs::V6 {
        caddr: ip6("2001:db8::1"),
        vaddr: ip6("2001:db8::80"),
        daddr: ip6("fd00::1"),
    };
    let mut c = dr_v4();
    c.flags = ConnFlags(ConnFlags::MASQ | ConnFlags::OUT_SEQ);
    c.seq = Some(seq());
    c.state = tcp_state::FIN_WAIT;
    let msg = encode_mesgs(SyncVersion::V1, 0, 1472, &[a, b, c, sip_template()]).unwrap();
    assert_eq!(msg.len(), 1);
    let m = &msg[0];
    // Offsets: 8 (36) 44 (72) 116 (62, +2 pad) 180 (57) = 237.
    assert_eq!(m.len(), 237);
    assert_eq!(&m[2..5], &[0, 237, 4]);
    assert_eq!(&m[8..12], &[0, 6, 0, 36]);
    assert_eq!(&m[44..48], &[1, 6, 0, 72]);
    assert_eq!(&m[116..120], &[0, 6, 0, 62]);
    assert_eq!(&m[178..180], &[0, 0]);
    assert_eq!(&m[180..184], &[0, 17, 0, 57]);
    let back = decode_ok(m);
    assert_eq!(back.len(), 4);
    assert_eq!(back[1].af(), Af::V6);
    assert_eq!(back[2].seq, Some(seq()));
    assert_eq!(back[2].state, tcp_state::FIN_WAIT);
}

#[test]
fn v0_message() {
    let mut a = dr_v4();
    a.flags = ConnFlags(ConnFlags::MASQ | ConnFlags::IN_SEQ | ConnFlags::HASHED | ConnFlags::NFCT);
    a.seq = Some(seq());
    let b = dr_v4();
    let msg = encode_mesgs(SyncVersion::V0, 4, 1472, &[a, b]).unwrap();
    assert_eq!(msg.len(), 1);

    let mut want = Vec::new();
    mesg_v0(&mut want, 4, 4 + 48 + 24, 2);
    let addrs = [[192, 0, 2, 10], [198, 51, 100, 1], [10, 0, 0, 21]];
    // HASHED dropped; NFCT (bit 16) does not fit the 16-bit field.
    let p = sync_conn_v0(&mut want, 4, 6, [40000, 80, 80], addrs, 0x0400, 1);
    put(&mut want, p, &seq_le(&seq()));
    let end = sync_conn_v0(&mut want, p + 24, 6, [40000, 80, 80], addrs, 0x0083, 1);
    assert_eq!(end, 76);
    assert_eq!(msg[0], want);

    let back = decode_ok(&want);
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].flags, ConnFlags(0x0400 | ConnFlags::SYNC));
    assert_eq!(back[0].seq, Some(seq()));
    assert_eq!(back[0].timeout, 0); // v0 carries none
    assert_eq!(back[1].flags, ConnFlags(0x0083 | ConnFlags::SYNC));
    assert_eq!(back[1].seq, None);
    assert_eq!(
        decode_mesg(&want, &BackupConfig::default()).version,
        Some(MesgVersion::V0)
    );

    // v0 is IPv4 only.
    let mut v6 = dr_v4();
    v6.addrs = ConnAddrs::V6 {
        caddr: ip6("::1"),
        vaddr: ip6("::2"),
        daddr: ip6("::3"),
    };
    assert_eq!(
        encode_mesgs(SyncVersion::V0, 0, 1472, &[v6]),
        Err(EncodeError::V0NotIpv4)
    );
}

#[test]
fn v1_messages_are_ignored_by_v0_readers_by_design() {
    // The first byte of a v1 message (reserved) is a v0 reader's nr_conns:
    // 0, so an old backup applies nothing from it.
    let m = single(SyncVersion::V1, 0, &dr_v4());
    assert_eq!(m[0], 0);
}
