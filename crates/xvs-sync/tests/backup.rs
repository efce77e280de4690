//! The backup's rules, one by one, as `ip_vs_process_message()`,
//! `ip_vs_process_message_v0()` and `ip_vs_proc_sync_conn()` apply them:
//! which faults drop the whole datagram, which the rest of it, which only
//! the record, and what is counted. Messages are built with the encoder
//! (checked byte for byte in layout.rs) and then altered at the kernel
//! structures' offsets.

use std::net::Ipv4Addr;
use xvs_sync::flags::{proto, tcp_state};
use xvs_sync::*;

fn conn(cport: u16) -> SyncConn {
    SyncConn {
        protocol: proto::TCP,
        addrs: ConnAddrs::V4 {
            caddr: Ipv4Addr::new(192, 0, 2, 10),
            vaddr: Ipv4Addr::new(198, 51, 100, 1),
            daddr: Ipv4Addr::new(10, 0, 0, 21),
        },
        cport,
        vport: 80,
        dport: 80,
        fwmark: 0,
        flags: ConnFlags(ConnFlags::DROUTE | ConnFlags::NOOUTPUT),
        state: tcp_state::ESTABLISHED,
        timeout: 900,
        seq: None,
        pe_data: None,
        pe_name: None,
    }
}

fn mesg(conns: &[SyncConn]) -> Vec<u8> {
    let mut m = encode_mesgs(SyncVersion::V1, 0, 65507, conns).unwrap();
    assert_eq!(m.len(), 1);
    m.pop().unwrap()
}

fn dec(buf: &[u8]) -> Decoded {
    decode_mesg(buf, &BackupConfig::default())
}

fn set_size(m: &mut [u8]) {
    let n = m.len() as u16;
    m[2..4].copy_from_slice(&n.to_be_bytes());
}

fn cports(d: &Decoded) -> Vec<u16> {
    d.conns.iter().map(|c| c.cport).collect()
}

/// Only `r` was counted, `n` times.
fn only(d: &Decoded, r: DropReason, n: u64) {
    assert_eq!(d.drops.get(r), n, "{r:?} in {:?}", d.drops);
    assert_eq!(d.drops.total(), n, "other drops in {:?}", d.drops);
}

#[test]
fn header_too_short_and_size_mismatch() {
    for len in 0..4 {
        let d = dec(&vec![0u8; len]);
        only(&d, DropReason::TooShort, 1);
        assert_eq!(d.version, None);
    }
    let mut m = mesg(&[conn(1)]);
    m.push(0); // datagram longer than its size says
    let d = dec(&m);
    only(&d, DropReason::BadSize, 1);
    assert!(d.conns.is_empty());
    m.pop();
    m.pop(); // shorter
    only(&dec(&m), DropReason::BadSize, 1);
}

#[test]
fn syncid_filter() {
    let mut m = mesg(&[conn(1)]);
    m[1] = 6;
    // The backup's syncid 0 takes every syncid.
    assert_eq!(cports(&dec(&m)), [1]);
    let cfg = |s| BackupConfig { syncid: s };
    let d = decode_mesg(&m, &cfg(5));
    only(&d, DropReason::SyncidMismatch, 1);
    assert!(d.conns.is_empty());
    assert_eq!(cports(&decode_mesg(&m, &cfg(6))), [1]);
    // A message with syncid 0 is filtered by a backup with syncid 5 too.
    m[1] = 0;
    only(&decode_mesg(&m, &cfg(5)), DropReason::SyncidMismatch, 1);
}

#[test]
fn unknown_message_version_is_read_as_empty_v0() {
    let base = mesg(&[conn(1)]);
    for (at, v) in [(5usize, 2u8), (5, 0), (5, 0x81), (6, 1), (7, 1)] {
        let mut m = base.clone();
        m[at] = v;
        let d = dec(&m);
        assert_eq!(d.version, Some(MesgVersion::V0));
        assert!(d.conns.is_empty());
        only(&d, DropReason::UnknownVersion, 1);
    }
}

#[test]
fn nonzero_first_byte_is_a_v0_message() {
    // reserved != 0: the kernel reads a v1 message as v0 with that many
    // records, i.e. garbage, which its v0 checks then catch or not.
    let mut m = mesg(&[conn(1)]);
    m[0] = 1;
    let d = dec(&m);
    assert_eq!(d.version, Some(MesgVersion::V0));
    assert_eq!(d.nr_conns, 1);
}

#[test]
fn nr_conns_bounds_what_is_read() {
    let mut m = mesg(&[conn(1), conn(2), conn(3)]);
    m[4] = 2; // fewer than present: the rest is ignored
    let d = dec(&m);
    assert_eq!(cports(&d), [1, 2]);
    assert_eq!(d.drops.total(), 0);
    m[4] = 4; // more than present: the 4th is "too small", the 3 before stay
    let d = dec(&m);
    assert_eq!(cports(&d), [1, 2, 3]);
    only(&d, DropReason::Truncated, 1);
    // No records at all.
    m[4] = 0;
    let d = dec(&m);
    assert!(d.conns.is_empty());
    assert_eq!(d.drops.total(), 0);
}

#[test]
fn record_size_checks() {
    // Record 2 starts at 8 + 36 = 44; its ver_size at 46.
    let base = mesg(&[conn(1), conn(2), conn(3)]);

    let mut m = base.clone();
    m[46..48].copy_from_slice(&(0x1000u16 | 36).to_be_bytes()); // record version 1
    let d = dec(&m);
    assert_eq!(cports(&d), [1]);
    only(&d, DropReason::RecordVersion, 1);

    let mut m = base.clone();
    m[46..48].copy_from_slice(&200u16.to_be_bytes()); // past the datagram (116)
    let d = dec(&m);
    assert_eq!(cports(&d), [1]);
    only(&d, DropReason::RecordOverrun, 1);

    let mut m = base.clone();
    m[46..48].copy_from_slice(&35u16.to_be_bytes()); // below the fixed part
    let d = dec(&m);
    assert_eq!(cports(&d), [1]);
    only(&d, DropReason::RecordLength, 1);

    // Size 0: the type is checked first (the kernel reads it anyway).
    let mut m = base.clone();
    m[46..48].copy_from_slice(&0u16.to_be_bytes());
    only(&dec(&m), DropReason::RecordLength, 1);
    m[44] = 2;
    only(&dec(&m), DropReason::RecordType, 1);

    // An IPv6 type on a 36-byte record: its fixed part is 72.
    let mut m = base.clone();
    m[44] = 1;
    let d = dec(&m);
    assert_eq!(cports(&d), [1]);
    only(&d, DropReason::RecordLength, 1);

    // Type with bits beside INET6: bit 0 decides (v6), others are ignored.
    let mut m = base.clone();
    m[44] = 0x80;
    only(&dec(&m), DropReason::RecordType, 1);

    // A longer size than the record: the extra bytes are read as options.
    let mut m = base[..44].to_vec();
    m[10..12].copy_from_slice(&40u16.to_be_bytes());
    m[4] = 1;
    m.extend_from_slice(&[0x40 | 9, 2, 0xaa, 0xbb]); // unknown optional option
    set_size(&mut m);
    let d = dec(&m);
    assert_eq!(cports(&d), [1]);
    assert_eq!(d.drops.total(), 0);
}

/// A one-record message with `opts` after the fixed part, sizes fixed up.
fn with_options(c: &SyncConn, opts: &[u8]) -> Vec<u8> {
    let mut m = mesg(std::slice::from_ref(c));
    assert_eq!(m.len(), 44);
    m.extend_from_slice(opts);
    let size = (36 + opts.len()) as u16;
    m[10..12].copy_from_slice(&size.to_be_bytes());
    set_size(&mut m);
    m
}

/// `with_options` followed by a clean record with cport 99.
fn with_options_then_next(c: &SyncConn, opts: &[u8]) -> Vec<u8> {
    let mut m = with_options(c, opts);
    while m.len() & 3 != 0 {
        m.push(0);
    }
    let next = mesg(&[conn(99)]);
    m.extend_from_slice(&next[8..]);
    m[4] = 2;
    set_size(&mut m);
    m
}

fn seq_opt(ptype: u8, fill: u8) -> Vec<u8> {
    let mut v = vec![ptype, 24];
    v.extend(std::iter::repeat_n(fill, 24));
    v
}

#[test]
fn unknown_options() {
    // Mandatory (no 0x40 bit): the record is dropped, the next one kept.
    let d = dec(&with_options_then_next(&conn(1), &[9, 2, 0, 0]));
    assert_eq!(cports(&d), [99]);
    only(&d, DropReason::UnknownMandatoryOption, 1);
    // Optional: skipped, the record kept.
    let d = dec(&with_options_then_next(&conn(1), &[0x49, 3, 1, 2, 3]));
    assert_eq!(cports(&d), [1, 99]);
    assert_eq!(d.drops.total(), 0);
    // A known type with the optional bit is still that option.
    let d = dec(&with_options(&conn(1), &seq_opt(0x41, 0x11)));
    assert_eq!(d.conns[0].seq.unwrap().in_seq.init_seq, 0x1111_1111);
    // After an unknown mandatory option nothing else of the record is
    // checked: a broken option behind it does not drop the datagram.
    let d = dec(&with_options_then_next(&conn(1), &[9, 1, 0, 1, 0]));
    assert_eq!(cports(&d), [99]);
    only(&d, DropReason::UnknownMandatoryOption, 1);
}

#[test]
fn malformed_options_drop_the_rest() {
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0x49], DropReason::OptionOverrun),    // header cut
        (vec![0x49, 0], DropReason::OptionOverrun), // zero length
        (vec![0x49, 5, 1, 2], DropReason::OptionOverrun), // data cut
        (
            [seq_opt(1, 0), seq_opt(1, 0)].concat(),
            DropReason::BadSeqOption,
        ), // twice
        (
            vec![1, 23].into_iter().chain([0; 23]).collect(),
            DropReason::BadSeqOption,
        ),
        (
            [vec![2, 1, 7], vec![2, 1, 7]].concat(),
            DropReason::BadPeData,
        ),
        (
            [vec![3, 3], b"sip".to_vec(), vec![3, 3], b"sip".to_vec()].concat(),
            DropReason::BadPeName,
        ),
        (
            [vec![3, 17], vec![b'x'; 17]].concat(),
            DropReason::BadPeName,
        ),
    ];
    for (opts, reason) in cases {
        let m = with_options_then_next(&conn(1), &opts);
        let d = dec(&m);
        assert!(d.conns.is_empty(), "{opts:?}");
        only(&d, reason, 1);
    }
}

#[test]
fn pe_data_needs_a_name_and_a_lone_name_is_ignored() {
    let d = dec(&with_options_then_next(&conn(1), &[2, 2, 0xca, 0xfe]));
    assert_eq!(cports(&d), [99]);
    only(&d, DropReason::PeWithoutName, 1);

    let d = dec(&with_options(&conn(1), &[3, 3, b's', b'i', b'p']));
    assert_eq!(d.conns[0].pe_name, None);
    assert_eq!(d.conns[0].pe_data, None);

    // Name before data is fine; 16 bytes of name is the limit.
    let name = [b'n'; 16];
    let opts = [vec![3, 16], name.to_vec(), vec![2, 2, 0xca, 0xfe]].concat();
    let d = dec(&with_options(&conn(1), &opts));
    assert_eq!(d.conns[0].pe_name.as_deref(), Some(&name[..]));
    assert_eq!(d.conns[0].pe_data.as_deref(), Some(&[0xca, 0xfe][..]));
}

#[test]
fn protocol_and_state_checks() {
    let mut c = conn(1);
    c.protocol = 1; // ICMP: no IPVS protocol
    let d = dec(&with_options_then_next(&c, &[]));
    assert_eq!(cports(&d), [99]);
    only(&d, DropReason::UnsupportedProtocol, 1);

    for (protocol, bad_state) in [
        (proto::TCP, tcp_state::LAST),
        (proto::UDP, 1),
        (proto::SCTP, 14),
        (proto::AH, 1),
        (proto::ESP, 1),
    ] {
        let mut c = conn(1);
        c.protocol = protocol;
        c.state = bad_state - 1;
        assert_eq!(cports(&dec(&with_options_then_next(&c, &[]))), [1, 99]);
        c.state = bad_state;
        let d = dec(&with_options_then_next(&c, &[]));
        assert_eq!(cports(&d), [99]);
        only(&d, DropReason::BadState, 1);
    }

    // Templates: any protocol (a fwmark template's is 0), state below 2.
    let mut t = conn(1);
    t.flags = ConnFlags(ConnFlags::TEMPLATE);
    t.protocol = 0;
    t.state = 1;
    assert_eq!(cports(&dec(&with_options_then_next(&t, &[]))), [1, 99]);
    t.state = 2;
    let d = dec(&with_options_then_next(&t, &[]));
    assert_eq!(cports(&d), [99]);
    only(&d, DropReason::BadState, 1);
}

#[test]
fn flags_are_masked_as_the_backup_does() {
    let mut c = conn(1);
    c.flags = ConnFlags(
        ConnFlags::TUNNEL
            | ConnFlags::HASHED
            | ConnFlags::INACTIVE
            | ConnFlags::NO_CPORT
            | ConnFlags::ONE_PACKET
            | ConnFlags::NFCT
            | 0x8000_0000,
    );
    let d = dec(&mesg(&[c]));
    assert_eq!(
        d.conns[0].flags,
        ConnFlags(ConnFlags::TUNNEL | ConnFlags::INACTIVE | ConnFlags::NO_CPORT | ConnFlags::SYNC)
    );
}

fn v0_mesg(conns: &[SyncConn]) -> Vec<u8> {
    let mut m = encode_mesgs(SyncVersion::V0, 0, 1472, conns).unwrap();
    m.pop().unwrap()
}

#[test]
fn v0_rules() {
    let mut s = conn(2);
    s.flags = ConnFlags(ConnFlags::MASQ | ConnFlags::IN_SEQ);
    let m = v0_mesg(&[conn(1), s, conn(3)]);
    assert_eq!(m.len(), 4 + 24 + 48 + 24);
    assert_eq!(cports(&dec(&m)), [1, 2, 3]);

    // nr_conns past the end: "bogus conn", the rest dropped.
    let mut t = m.clone();
    t[0] = 4;
    let d = dec(&t);
    assert_eq!(cports(&d), [1, 2, 3]);
    only(&d, DropReason::Truncated, 1);

    // Seq options cut: the record with them and the rest dropped.
    let mut t = m[..4 + 24 + 40].to_vec();
    set_size(&mut t);
    let d = dec(&t);
    assert_eq!(cports(&d), [1]);
    only(&d, DropReason::Truncated, 1);

    // Unsupported protocol, bad state, bad template state: skipped.
    let mut t = m.clone();
    t[4 + 1] = 1; // record 1 protocol ICMP
    t[4 + 24 + 22..4 + 24 + 24].copy_from_slice(&11u16.to_be_bytes()); // record 2 state
    let d = dec(&t);
    assert_eq!(cports(&d), [3]);
    assert_eq!(d.drops.get(DropReason::UnsupportedProtocol), 1);
    assert_eq!(d.drops.get(DropReason::BadState), 1);
    assert_eq!(d.drops.total(), 2);

    let mut tpl = conn(5);
    tpl.flags = ConnFlags(ConnFlags::TEMPLATE);
    tpl.protocol = 0;
    tpl.state = 2;
    let d = dec(&v0_mesg(&[tpl, conn(6)]));
    assert_eq!(cports(&d), [6]);
    only(&d, DropReason::BadState, 1);

    // v0 keeps ONE_PACKET (it applies no BACKUP_MASK).
    let mut o = conn(7);
    o.flags = ConnFlags(ConnFlags::DROUTE | ConnFlags::ONE_PACKET);
    let d = dec(&v0_mesg(&[o]));
    assert_eq!(
        d.conns[0].flags,
        ConnFlags(ConnFlags::DROUTE | ConnFlags::ONE_PACKET | ConnFlags::SYNC)
    );

    // A 4..7-byte datagram with records announced has no room for one.
    let d = dec(&[1, 0, 0, 4]);
    only(&d, DropReason::Truncated, 1);
    let d = dec(&[0, 0, 0, 4]);
    assert_eq!(d.drops.total(), 0);
    assert!(d.conns.is_empty());
}

#[test]
fn decoder_counts_across_datagrams() {
    let mut dec = SyncDecoder::new(BackupConfig { syncid: 3 });
    let mut good = encode_mesgs(SyncVersion::V1, 3, 1472, &[conn(1), conn(2)]).unwrap();
    let good = good.pop().unwrap();
    let mut other = good.clone();
    other[1] = 4;
    assert_eq!(dec.decode(&good).conns.len(), 2);
    assert!(dec.decode(&other).conns.is_empty());
    assert!(dec.decode(&[1, 2]).conns.is_empty());
    let v0 = encode_mesgs(SyncVersion::V0, 3, 1472, &[conn(1)]).unwrap();
    assert_eq!(dec.decode(&v0[0]).conns.len(), 1);
    let s = dec.stats();
    assert_eq!(s.mesgs, 4);
    assert_eq!(s.mesgs_v1, 1);
    assert_eq!(s.mesgs_v0, 1);
    assert_eq!(s.conns, 3);
    assert_eq!(s.drops.get(DropReason::SyncidMismatch), 1);
    assert_eq!(s.drops.get(DropReason::TooShort), 1);
    assert_eq!(s.drops.total(), 2);
    let names: Vec<&str> = s
        .drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, _)| r.name())
        .collect();
    assert_eq!(names, ["too_short", "syncid_mismatch"]);
}
