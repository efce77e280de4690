//! Round trips and robustness: random records through the message builder
//! and back; the builder's size and count limits; and the decoder fed
//! garbage, truncated messages, lying length fields, unknown versions and
//! options, which must never panic and never return more than one
//! datagram's worth of records.

use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use xvs_sync::flags::{proto, proto_num_states, tcp_state};
use xvs_sync::wire::{IP_VS_PENAME_MAXLEN, MAX_NR_CONNS};
use xvs_sync::*;

fn arb_seq() -> impl Strategy<Value = SyncSeq> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(init_seq, delta, previous_delta)| {
        SyncSeq {
            init_seq,
            delta,
            previous_delta,
        }
    })
}

fn arb_addrs() -> impl Strategy<Value = ConnAddrs> {
    prop_oneof![
        any::<[u32; 3]>().prop_map(|a| ConnAddrs::V4 {
            caddr: Ipv4Addr::from(a[0]),
            vaddr: Ipv4Addr::from(a[1]),
            daddr: Ipv4Addr::from(a[2]),
        }),
        any::<[u128; 3]>().prop_map(|a| ConnAddrs::V6 {
            caddr: Ipv6Addr::from(a[0]),
            vaddr: Ipv6Addr::from(a[1]),
            daddr: Ipv6Addr::from(a[2]),
        }),
    ]
}

/// (protocol, state) a backup accepts, for a connection or a template.
fn arb_proto_state(template: bool) -> BoxedStrategy<(u8, u16)> {
    if template {
        (any::<u8>(), 0u16..2).boxed()
    } else {
        prop::sample::select(vec![
            proto::TCP,
            proto::UDP,
            proto::SCTP,
            proto::AH,
            proto::ESP,
        ])
        .prop_flat_map(|p| (Just(p), 0..proto_num_states(p).unwrap()))
        .boxed()
    }
}

/// Records a backup accepts (PE data always with a name).
fn arb_conn() -> impl Strategy<Value = SyncConn> {
    any::<bool>()
        .prop_flat_map(|template| {
            (
                arb_proto_state(template),
                arb_addrs(),
                any::<[u16; 3]>(),
                any::<u32>(),
                any::<u32>().prop_map(move |f| {
                    let f = ConnFlags(f);
                    if template {
                        f.with(ConnFlags::TEMPLATE)
                    } else {
                        f.without(ConnFlags::TEMPLATE)
                    }
                }),
                any::<u32>(),
                proptest::option::of((arb_seq(), arb_seq())),
                proptest::option::of((
                    prop::collection::vec(any::<u8>(), 1..=255),
                    prop::collection::vec(any::<u8>(), 1..=IP_VS_PENAME_MAXLEN),
                )),
            )
        })
        .prop_map(
            |((protocol, state), addrs, ports, fwmark, flags, timeout, seq, pe)| SyncConn {
                protocol,
                addrs,
                cport: ports[0],
                vport: ports[1],
                dport: ports[2],
                fwmark,
                flags,
                state,
                timeout,
                seq: seq.map(|(in_seq, out_seq)| SeqData { in_seq, out_seq }),
                pe_name: pe.as_ref().map(|p| p.1.clone()),
                pe_data: pe.map(|p| p.0),
            },
        )
}

/// What a backup decodes from `c` sent as version 1.
fn as_received_v1(c: &SyncConn) -> SyncConn {
    let mut r = c.clone();
    r.flags = c.flags.backup_v1();
    r.seq = c.flags.has_seq().then(|| c.seq.unwrap_or_default());
    r
}

/// ... and as version 0 (IPv4 records only).
fn as_received_v0(c: &SyncConn) -> SyncConn {
    let mut r = c.clone();
    let wire = ConnFlags(c.flags.sent().bits() & 0xffff);
    r.flags = wire.backup_v0();
    r.seq = wire.has_seq().then(|| c.seq.unwrap_or_default());
    r.fwmark = 0;
    r.timeout = 0;
    r.pe_data = None;
    r.pe_name = None;
    r
}

fn decode_all(msgs: &[Vec<u8>], syncid: u8) -> Vec<SyncConn> {
    let mut dec = SyncDecoder::new(BackupConfig { syncid });
    let mut out = Vec::new();
    for m in msgs {
        let d = dec.decode(m);
        assert_eq!(d.drops.total(), 0, "{:?}", d.drops);
        out.extend(d.conns);
    }
    assert_eq!(dec.stats().mesgs, msgs.len() as u64);
    out
}

fn check_limits(msgs: &[Vec<u8>], maxlen: u16, version: SyncVersion) {
    for m in msgs {
        assert!(m.len() <= usize::from(maxlen), "{} > {maxlen}", m.len());
        assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
        let nr = match version {
            SyncVersion::V1 => m[4],
            SyncVersion::V0 => m[0],
        };
        assert!(nr >= 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn v1_round_trip(
        conns in prop::collection::vec(arb_conn(), 1..80),
        syncid in any::<u8>(),
        maxlen in prop_oneof![400u16..2000, 2000u16..=65535],
    ) {
        let msgs = encode_mesgs(SyncVersion::V1, syncid, maxlen, &conns).unwrap();
        check_limits(&msgs, maxlen, SyncVersion::V1);
        let back = decode_all(&msgs, syncid);
        let want: Vec<SyncConn> = conns.iter().map(as_received_v1).collect();
        prop_assert_eq!(back, want);
    }

    #[test]
    fn v0_round_trip(
        conns in prop::collection::vec(arb_conn(), 1..80),
        syncid in any::<u8>(),
        maxlen in 52u16..3000,
    ) {
        let v4: Vec<SyncConn> = conns.into_iter().filter(|c| c.af() == Af::V4).collect();
        let msgs = encode_mesgs(SyncVersion::V0, syncid, maxlen, &v4).unwrap();
        check_limits(&msgs, maxlen, SyncVersion::V0);
        let back = decode_all(&msgs, syncid);
        let want: Vec<SyncConn> = v4.iter().map(as_received_v0).collect();
        prop_assert_eq!(back, want);
    }
}

fn tcp_v4(cport: u16) -> SyncConn {
    SyncConn {
        protocol: proto::TCP,
        addrs: ConnAddrs::V4 {
            caddr: Ipv4Addr::new(192, 0, 2, 1),
            vaddr: Ipv4Addr::new(192, 0, 2, 2),
            daddr: Ipv4Addr::new(192, 0, 2, 3),
        },
        cport,
        vport: 443,
        dport: 443,
        fwmark: 0,
        flags: ConnFlags(ConnFlags::DROUTE),
        state: tcp_state::ESTABLISHED,
        timeout: 900,
        seq: None,
        pe_data: None,
        pe_name: None,
    }
}

#[test]
fn builder_fills_to_sync_maxlen() {
    let conns: Vec<SyncConn> = (0..100).map(tcp_v4).collect();
    // (1472 - 8) / 36 = 40 records per message.
    let msgs = encode_mesgs(SyncVersion::V1, 0, 1472, &conns).unwrap();
    let counts: Vec<u8> = msgs.iter().map(|m| m[4]).collect();
    assert_eq!(counts, [40, 40, 20]);
    assert_eq!(msgs[0].len(), 8 + 40 * 36);
    // Exactly one record's room.
    let msgs = encode_mesgs(SyncVersion::V1, 0, 44, &conns[..3]).unwrap();
    assert_eq!(msgs.len(), 3);
    assert!(msgs.iter().all(|m| m.len() == 44));
    // v0: (1472 - 4) / 24 = 61.
    let msgs = encode_mesgs(SyncVersion::V0, 0, 1472, &conns).unwrap();
    let counts: Vec<u8> = msgs.iter().map(|m| m[0]).collect();
    assert_eq!(counts, [61, 39]);
}

#[test]
fn builder_stops_at_255_records() {
    let conns: Vec<SyncConn> = (0..600).map(tcp_v4).collect();
    let msgs = encode_mesgs(SyncVersion::V1, 0, 65507, &conns).unwrap();
    let counts: Vec<usize> = msgs.iter().map(|m| usize::from(m[4])).collect();
    assert_eq!(counts, [MAX_NR_CONNS, MAX_NR_CONNS, 90]);
    assert_eq!(decode_all(&msgs, 0).len(), 600);
    let msgs = encode_mesgs(SyncVersion::V0, 0, 65507, &conns).unwrap();
    let counts: Vec<usize> = msgs.iter().map(|m| usize::from(m[0])).collect();
    assert_eq!(counts, [MAX_NR_CONNS, MAX_NR_CONNS, 90]);
}

#[test]
fn builder_refuses_what_cannot_fit() {
    let mut b = MesgBuilder::new(SyncVersion::V1, 0, 43);
    assert_eq!(
        b.push(&tcp_v4(1)),
        Err(EncodeError::RecordTooLarge {
            len: 36,
            maxlen: 43
        })
    );
    assert!(b.is_empty());
    assert_eq!(b.flush(), None);

    let mut c = tcp_v4(1);
    c.pe_data = Some(vec![0; 256]);
    c.pe_name = Some(b"sip".to_vec());
    let mut b = MesgBuilder::new(SyncVersion::V1, 0, 1472);
    assert_eq!(b.push(&c), Err(EncodeError::PeDataTooLong(256)));
    c.pe_data = Some(vec![0; 255]);
    c.pe_name = Some(vec![b'x'; 17]);
    assert_eq!(b.push(&c), Err(EncodeError::PeNameTooLong(17)));
    c.pe_data = Some(Vec::new());
    assert_eq!(b.push(&c), Err(EncodeError::PeDataEmpty));
    // A failed push leaves the open message as it was.
    assert_eq!(b.push(&tcp_v4(2)), Ok(None));
    assert_eq!(b.push(&c), Err(EncodeError::PeDataEmpty));
    assert_eq!(b.nr_conns(), 1);
    assert_eq!(b.len(), 44);
    let m = b.flush().unwrap();
    assert_eq!(m.len(), 44);
    assert_eq!(b.flush(), None);
}

#[test]
fn builder_hands_back_the_full_message_on_overflow() {
    let mut b = MesgBuilder::new(SyncVersion::V1, 5, 8 + 36 * 2);
    assert_eq!(b.push(&tcp_v4(1)), Ok(None));
    assert_eq!(b.push(&tcp_v4(2)), Ok(None));
    let full = b.push(&tcp_v4(3)).unwrap().expect("full message");
    assert_eq!(full.len(), 80);
    assert_eq!(&full[..8], &[0, 5, 0, 80, 2, 1, 0, 0]);
    assert_eq!(b.nr_conns(), 1);
    let rest = b.flush().unwrap();
    assert_eq!(&rest[..8], &[0, 5, 0, 44, 1, 1, 0, 0]);
}

// ---- Robustness ----

/// Bounds every decode must respect, whatever the input.
fn check_bounded(buf: &[u8], d: &Decoded) {
    assert!(d.conns.len() <= MAX_NR_CONNS);
    assert!(d.conns.len() <= usize::from(d.nr_conns));
    // At most one drop per announced record, plus one for the header.
    assert!(d.conns.len() as u64 + d.drops.total() <= u64::from(d.nr_conns) + 1);
    // Every record took at least 24 bytes of the datagram.
    assert!(d.conns.len() * 24 <= buf.len());
    for c in &d.conns {
        assert!(c
            .pe_data
            .as_ref()
            .is_none_or(|p| !p.is_empty() && p.len() <= 255));
        assert!(c
            .pe_name
            .as_ref()
            .is_none_or(|p| p.len() <= IP_VS_PENAME_MAXLEN));
        assert!(c.pe_name.is_none() || c.pe_data.is_some());
        assert!(c.flags.is_sync());
    }
}

fn sample_mesg() -> Vec<u8> {
    let mut c1 = tcp_v4(1);
    c1.flags = ConnFlags(ConnFlags::MASQ | ConnFlags::IN_SEQ);
    let mut c2 = tcp_v4(2);
    c2.addrs = ConnAddrs::V6 {
        caddr: Ipv6Addr::LOCALHOST,
        vaddr: Ipv6Addr::LOCALHOST,
        daddr: Ipv6Addr::LOCALHOST,
    };
    let mut c3 = tcp_v4(3);
    c3.flags = ConnFlags(ConnFlags::TEMPLATE);
    c3.state = 1;
    c3.pe_data = Some(b"call".to_vec());
    c3.pe_name = Some(b"sip".to_vec());
    encode_mesgs(SyncVersion::V1, 0, 1472, &[c1, c2, c3, tcp_v4(4)])
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn truncation_at_every_offset() {
    for (m, v) in [
        (sample_mesg(), SyncVersion::V1),
        (
            encode_mesgs(SyncVersion::V0, 0, 1472, &[tcp_v4(1), tcp_v4(2), tcp_v4(3)])
                .unwrap()
                .pop()
                .unwrap(),
            SyncVersion::V0,
        ),
    ] {
        let full = decode_mesg(&m, &BackupConfig::default());
        assert_eq!(full.drops.total(), 0);
        for n in 0..m.len() {
            // As cut: the size no longer matches.
            let d = decode_mesg(&m[..n], &BackupConfig::default());
            check_bounded(&m[..n], &d);
            assert!(d.conns.is_empty(), "{v:?} cut at {n}");
            // With the size field lying along: a prefix of the records.
            if n >= 4 {
                let mut t = m[..n].to_vec();
                t[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                let d = decode_mesg(&t, &BackupConfig::default());
                check_bounded(&t, &d);
                assert!(full.conns.starts_with(&d.conns), "{v:?} cut at {n}");
                if n >= 8 || v == SyncVersion::V0 {
                    assert!(d.conns.len() < full.conns.len());
                    assert_eq!(d.drops.total(), 1, "{v:?} cut at {n}: {:?}", d.drops);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// A record's ver_size (record index, value).
    VerSize(usize, u16),
    NrConns(u8),
    Version(u8),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (0usize..4, any::<u16>()).prop_map(|(r, v)| Mutation::VerSize(r, v)),
        any::<u8>().prop_map(Mutation::NrConns),
        any::<u8>().prop_map(Mutation::Version),
    ]
}

/// Record starts in `sample_mesg()`: 8, 8 + 62 (+2 pad), 72 + 72,
/// 144 + 47 (+1 pad); checked in `record_offsets_of_the_sample`.
const RECORD_AT: [usize; 4] = [8, 72, 144, 192];

#[test]
fn record_offsets_of_the_sample() {
    let m = sample_mesg();
    let sizes: Vec<u16> = RECORD_AT
        .iter()
        .map(|&at| u16::from_be_bytes([m[at + 2], m[at + 3]]))
        .collect();
    assert_eq!(sizes, [62, 72, 47, 36]);
    assert_eq!(m.len(), 192 + 36);
}

fn apply(m: &mut Vec<u8>, mu: &Mutation) {
    match *mu {
        Mutation::Set(i, v) => {
            if !m.is_empty() {
                let i = i % m.len();
                m[i] = v;
            }
        }
        Mutation::Truncate(n) => m.truncate(n % (m.len() + 1)),
        Mutation::Insert(i, ref v) => {
            let i = i % (m.len() + 1);
            m.splice(i..i, v.iter().copied());
        }
        Mutation::VerSize(r, v) => {
            let at = RECORD_AT[r] + 2;
            if at + 2 <= m.len() {
                m[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        Mutation::NrConns(n) => {
            if m.len() > 4 {
                m[4] = n;
            }
        }
        Mutation::Version(v) => {
            if m.len() > 5 {
                m[5] = v;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn garbage_never_panics(buf in prop::collection::vec(any::<u8>(), 0..600), syncid in any::<u8>()) {
        let d = decode_mesg(&buf, &BackupConfig { syncid });
        check_bounded(&buf, &d);
    }

    #[test]
    fn garbage_behind_a_valid_header(
        body in prop::collection::vec(any::<u8>(), 0..1200),
        nr in any::<u8>(),
        v0 in any::<bool>(),
    ) {
        let mut buf = if v0 { vec![nr, 0, 0, 0] } else { vec![0, 0, 0, 0, nr, 1, 0, 0] };
        buf.extend_from_slice(&body);
        let n = buf.len() as u16;
        buf[2..4].copy_from_slice(&n.to_be_bytes());
        let d = decode_mesg(&buf, &BackupConfig::default());
        check_bounded(&buf, &d);
        prop_assert!(d.drops.get(DropReason::BadSize) == 0);
    }

    #[test]
    fn mutated_messages(
        muts in prop::collection::vec(arb_mutation(), 1..6),
        fix_size in any::<bool>(),
    ) {
        let mut m = sample_mesg();
        for mu in &muts {
            apply(&mut m, mu);
        }
        if fix_size && m.len() >= 4 && m.len() <= 65535 {
            let n = m.len() as u16;
            m[2..4].copy_from_slice(&n.to_be_bytes());
        }
        let d = decode_mesg(&m, &BackupConfig::default());
        check_bounded(&m, &d);
    }

    #[test]
    fn unknown_options_anywhere(
        ptype in any::<u8>(),
        data in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        // One extra option behind a clean IPv4 record.
        let mut m = encode_mesgs(SyncVersion::V1, 0, 1472, &[tcp_v4(1)]).unwrap().pop().unwrap();
        m.push(ptype);
        m.push(data.len() as u8);
        m.extend_from_slice(&data);
        let size = (m.len() - 8) as u16;
        m[10..12].copy_from_slice(&size.to_be_bytes());
        let n = m.len() as u16;
        m[2..4].copy_from_slice(&n.to_be_bytes());
        let d = decode_mesg(&m, &BackupConfig::default());
        check_bounded(&m, &d);
        let known = matches!(ptype & !0x40, 1..=3);
        if data.is_empty() {
            prop_assert_eq!(d.drops.get(DropReason::OptionOverrun), 1);
        } else if !known && ptype & 0x40 != 0 {
            prop_assert_eq!(d.conns.len(), 1);
        } else if !known {
            prop_assert_eq!(d.drops.get(DropReason::UnknownMandatoryOption), 1);
        }
    }
}
