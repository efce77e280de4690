//! The backup's side: a received datagram in, the records a kernel backup
//! would apply out, plus a count of everything it would have dropped and why.
//!
//! The checks are those of `ip_vs_process_message()`,
//! `ip_vs_process_message_v0()` and `ip_vs_proc_sync_conn()` (Linux 6.18),
//! in their order, with their two kinds of failure:
//! - the rest of the datagram is dropped (the kernel's `return` from the
//!   message loop, or a negative code from `ip_vs_proc_sync_conn`): records
//!   decoded before it are kept, as the kernel has applied them already;
//! - only the record is dropped (a positive code, or `continue` in v0).
//!
//! What needs the backup's tables (is the persistence engine named in
//! PE_NAME loaded? which dest? which protocol timeout for a v0 record?) is
//! left to the caller, as are the timeouts' clamp and defaults.
//!
//! Memory: the output is at most the records of one datagram (`nr_conns` is
//! one byte, so at most 255, each with at most 255 + 16 bytes of PE data);
//! nothing else is kept between datagrams but counters.

use crate::conn::{ConnAddrs, SeqData, SyncConn, SyncSeq};
use crate::flags::{proto_num_states, tpl_state, ConnFlags};
use crate::wire::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why (part of) a datagram was not applied. Each occurrence counts once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    // Whole datagram.
    /// Shorter than the 4-byte version 0 header ("message header too short").
    TooShort,
    /// Header `size` differs from the datagram length ("bogus message size").
    BadSize,
    /// The backup has a non-zero syncid and the message another one.
    SyncidMismatch,
    /// First byte 0 (so not a version 0 message with records) but `version`
    /// is not 1 or `spare` is not 0: the kernel reads it as an empty v0
    /// message, i.e. ignores it.
    UnknownVersion,
    // Rest of the datagram, from the record at fault on.
    /// A record's fixed part, or v0 sequence options, run past the datagram
    /// ("Dropping buffer, too small", "bogus conn", "bogus conn options").
    Truncated,
    /// A record's `ver_size` size runs past the datagram ("msg > buffer").
    RecordOverrun,
    /// A record's version (top 4 bits of `ver_size`) is not 0.
    RecordVersion,
    /// A record's `type` has bits other than `STYPE_F_INET6` and not that one (-10).
    RecordType,
    /// A record's size is below its fixed part (-20).
    RecordLength,
    /// An option header or its data runs past the record, or has length 0
    /// (-30, -40).
    OptionOverrun,
    /// SEQ_DATA of a length other than 24, or twice (-50).
    BadSeqOption,
    /// PE_DATA twice (-60).
    BadPeData,
    /// PE_NAME longer than 16 bytes, or twice (-70).
    BadPeName,
    // The record only.
    /// An option type the backup does not know, without `IPVS_OPT_F_PARAM` (20).
    UnknownMandatoryOption,
    /// A connection (not template) of a protocol IPVS does not register (30).
    UnsupportedProtocol,
    /// A connection state not below the protocol's state count, or a
    /// template state not below `IP_VS_CTPL_S_LAST` (40).
    BadState,
    /// PE_DATA without PE_NAME (50, "Invalid PE parameters").
    PeWithoutName,
}

impl DropReason {
    pub const ALL: [DropReason; 17] = [
        Self::TooShort,
        Self::BadSize,
        Self::SyncidMismatch,
        Self::UnknownVersion,
        Self::Truncated,
        Self::RecordOverrun,
        Self::RecordVersion,
        Self::RecordType,
        Self::RecordLength,
        Self::OptionOverrun,
        Self::BadSeqOption,
        Self::BadPeData,
        Self::BadPeName,
        Self::UnknownMandatoryOption,
        Self::UnsupportedProtocol,
        Self::BadState,
        Self::PeWithoutName,
    ];

    /// A short snake_case name, for metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadSize => "bad_size",
            Self::SyncidMismatch => "syncid_mismatch",
            Self::UnknownVersion => "unknown_version",
            Self::Truncated => "truncated",
            Self::RecordOverrun => "record_overrun",
            Self::RecordVersion => "record_version",
            Self::RecordType => "record_type",
            Self::RecordLength => "record_length",
            Self::OptionOverrun => "option_overrun",
            Self::BadSeqOption => "bad_seq_option",
            Self::BadPeData => "bad_pe_data",
            Self::BadPeName => "bad_pe_name",
            Self::UnknownMandatoryOption => "unknown_mandatory_option",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::BadState => "bad_state",
            Self::PeWithoutName => "pe_without_name",
        }
    }

    /// True when the kernel drops only the record and goes on with the next.
    pub const fn record_only(self) -> bool {
        matches!(
            self,
            Self::UnknownMandatoryOption
                | Self::UnsupportedProtocol
                | Self::BadState
                | Self::PeWithoutName
        )
    }
}

/// Per-reason counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }

    pub fn bump(&mut self, r: DropReason) {
        self.0[r as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn add(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// Every reason with its count (zeros included), in `DropReason::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// Message format a datagram was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MesgVersion {
    V0,
    V1,
}

/// What one datagram gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The format it was read as; `None` when dropped before that was known.
    pub version: Option<MesgVersion>,
    /// `syncid` of the header, when the header was read.
    pub syncid: Option<u8>,
    /// `nr_conns` of the header, when read.
    pub nr_conns: u8,
    /// The records to apply, in order. Flags are what the backup keeps
    /// ([`ConnFlags::backup_v1`] / [`ConnFlags::backup_v0`], so SYNC is set).
    pub conns: Vec<SyncConn>,
    /// What was dropped, and why.
    pub drops: DropCounts,
}

/// The backup's configuration as far as decoding goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupConfig {
    /// `--syncid`: when non-zero, messages of another syncid are ignored.
    /// 0 (the default) accepts every syncid.
    pub syncid: u8,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn v4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn v6(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

/// `struct ip_vs_sync_conn_options` at `b[at..at + 24]`: network order in
/// version 1 (`ntoh_seq`), the sender's memory order in version 0.
fn seq_opts(b: &[u8], at: usize, be: bool) -> SeqData {
    let rd = |o: usize| if be { be32(b, at + o) } else { le32(b, at + o) };
    let seq = |o: usize| SyncSeq {
        init_seq: rd(o),
        delta: rd(o + 4),
        previous_delta: rd(o + 8),
    };
    SeqData {
        in_seq: seq(0),
        out_seq: seq(12),
    }
}

/// The state check both versions make: known protocol and state in range
/// for a connection, a template state below `IP_VS_CTPL_S_LAST`.
fn check_state(flags: ConnFlags, protocol: u8, state: u16) -> Result<(), DropReason> {
    if flags.is_template() {
        // Dropped since 6.18 (earlier kernels only logged it).
        if state >= tpl_state::LAST {
            return Err(DropReason::BadState);
        }
        return Ok(());
    }
    match proto_num_states(protocol) {
        None => Err(DropReason::UnsupportedProtocol),
        Some(n) if state >= n => Err(DropReason::BadState),
        Some(_) => Ok(()),
    }
}

/// Decodes one received datagram with the backup's rules.
pub fn decode_mesg(buf: &[u8], cfg: &BackupConfig) -> Decoded {
    let mut d = Decoded::default();
    if buf.len() < SYNC_MESG_V0_HEADER_LEN {
        d.drops.bump(DropReason::TooShort);
        return d;
    }
    // `size` is at the same place in both headers.
    if usize::from(be16(buf, 2)) != buf.len() {
        d.drops.bump(DropReason::BadSize);
        return d;
    }
    let syncid = buf[1];
    d.syncid = Some(syncid);
    if cfg.syncid != 0 && syncid != cfg.syncid {
        d.drops.bump(DropReason::SyncidMismatch);
        return d;
    }
    // The kernel reads the v1 fields of a datagram shorter than the v1
    // header from stale buffer bytes; such a datagram has no room for a
    // record either way, so it is read as v0 here.
    let v1 = buf.len() >= SYNC_MESG_HEADER_LEN
        && buf[0] == 0
        && buf[5] == SYNC_PROTO_VER
        && buf[6] == 0
        && buf[7] == 0;
    if v1 {
        d.version = Some(MesgVersion::V1);
        d.nr_conns = buf[4];
        decode_v1(buf, &mut d);
    } else {
        d.version = Some(MesgVersion::V0);
        d.nr_conns = buf[0];
        if buf[0] == 0 && buf.len() >= SYNC_MESG_HEADER_LEN {
            // Neither a v1 header nor a v0 one with records: the kernel's v0
            // loop runs zero times. Counted so such senders show up.
            d.drops.bump(DropReason::UnknownVersion);
        }
        decode_v0(buf, &mut d);
    }
    d
}

/// `ip_vs_process_message_v0`.
fn decode_v0(buf: &[u8], d: &mut Decoded) {
    let nr = usize::from(buf[0]);
    d.conns.reserve_exact(nr.min(buf.len() / SYNC_CONN_V0_LEN));
    let mut p = SYNC_MESG_V0_HEADER_LEN;
    for _ in 0..nr {
        if p + SYNC_CONN_V0_LEN > buf.len() {
            d.drops.bump(DropReason::Truncated);
            return;
        }
        let s = &buf[p..p + SYNC_CONN_V0_LEN];
        let flags = ConnFlags(u32::from(be16(s, 20))).backup_v0();
        let seq = if flags.has_seq() {
            if p + SYNC_CONN_V0_FULL_LEN > buf.len() {
                d.drops.bump(DropReason::Truncated);
                return;
            }
            Some(seq_opts(buf, p + SYNC_CONN_V0_LEN, false))
        } else {
            None
        };
        p += if seq.is_some() {
            SYNC_CONN_V0_FULL_LEN
        } else {
            SYNC_CONN_V0_LEN
        };
        let protocol = s[1];
        let state = be16(s, 22);
        if let Err(r) = check_state(flags, protocol, state) {
            d.drops.bump(r);
            continue;
        }
        d.conns.push(SyncConn {
            protocol,
            addrs: ConnAddrs::V4 {
                caddr: v4(s, 8),
                vaddr: v4(s, 12),
                daddr: v4(s, 16),
            },
            cport: be16(s, 2),
            vport: be16(s, 4),
            dport: be16(s, 6),
            fwmark: 0,
            flags,
            state,
            timeout: 0,
            seq,
            pe_data: None,
            pe_name: None,
        });
    }
}

/// The message loop of `ip_vs_process_message` for version 1.
fn decode_v1(buf: &[u8], d: &mut Decoded) {
    let nr = usize::from(buf[4]);
    d.conns
        .reserve_exact(nr.min((buf.len() - SYNC_MESG_HEADER_LEN) / SYNC_CONN_V4_LEN));
    let mut msg_end = SYNC_MESG_HEADER_LEN;
    for _ in 0..nr {
        let p = msg_end;
        if p + SYNC_CONN_V4_LEN > buf.len() {
            d.drops.bump(DropReason::Truncated);
            return;
        }
        let ver_size = be16(buf, p + 2);
        let size = usize::from(ver_size & SVER_MASK);
        let end = p + size;
        if end > buf.len() {
            d.drops.bump(DropReason::RecordOverrun);
            return;
        }
        if ver_size >> SVER_SHIFT != 0 {
            d.drops.bump(DropReason::RecordVersion);
            return;
        }
        match sync_conn(buf[p], &buf[p..end]) {
            Ok(c) => d.conns.push(c),
            Err(r) => {
                d.drops.bump(r);
                if !r.record_only() {
                    return;
                }
            }
        }
        // The next record starts 4-byte aligned.
        msg_end = p + ((size + 3) & !3);
    }
}

/// `ip_vs_proc_sync_conn`: one version 1 record, `rec` cut at its size,
/// `stype` its first byte (read even when the size is 0, as the kernel does).
fn sync_conn(stype: u8, rec: &[u8]) -> Result<SyncConn, DropReason> {
    // The size may be below the fixed part: the kernel fails that with -20
    // after the type check; the fixed part is read only once inside `rec`.
    let v6rec = stype & STYPE_F_INET6 != 0;
    if !v6rec && stype != 0 {
        return Err(DropReason::RecordType);
    }
    let fixed = if v6rec {
        SYNC_CONN_V6_LEN
    } else {
        SYNC_CONN_V4_LEN
    };
    if fixed > rec.len() {
        return Err(DropReason::RecordLength);
    }

    let mut seq = None;
    let mut pe_data: Option<&[u8]> = None;
    let mut pe_name: Option<&[u8]> = None;
    let mut p = fixed;
    while p < rec.len() {
        if p + OPT_HEADER_LEN > rec.len() {
            return Err(DropReason::OptionOverrun);
        }
        let ptype = rec[p];
        let plen = usize::from(rec[p + 1]);
        p += OPT_HEADER_LEN;
        if plen == 0 || p + plen > rec.len() {
            return Err(DropReason::OptionOverrun);
        }
        let data = &rec[p..p + plen];
        // A known type is taken whether or not it has the optional bit.
        match ptype & !IPVS_OPT_F_PARAM {
            IPVS_OPT_SEQ_DATA => {
                if plen != SEQ_OPTIONS_LEN || seq.is_some() {
                    return Err(DropReason::BadSeqOption);
                }
                seq = Some(seq_opts(data, 0, true));
            }
            IPVS_OPT_PE_DATA => {
                // plen <= 255 = IP_VS_PEDATA_MAXLEN always: only "twice" fails.
                if pe_data.is_some() {
                    return Err(DropReason::BadPeData);
                }
                pe_data = Some(data);
            }
            IPVS_OPT_PE_NAME => {
                if plen > IP_VS_PENAME_MAXLEN || pe_name.is_some() {
                    return Err(DropReason::BadPeName);
                }
                pe_name = Some(data);
            }
            _ => {
                if ptype & IPVS_OPT_F_PARAM == 0 {
                    // The kernel stops at the first unknown mandatory option:
                    // what follows it is not checked.
                    return Err(DropReason::UnknownMandatoryOption);
                }
            }
        }
        p += plen;
    }

    let flags = ConnFlags(be32(rec, 4)).backup_v1();
    let protocol = rec[1];
    let state = be16(rec, 8);
    check_state(flags, protocol, state)?;
    // ip_vs_conn_fill_param_sync: PE data needs a PE name. A PE name
    // without data is ignored.
    if pe_data.is_some() && pe_name.is_none() {
        return Err(DropReason::PeWithoutName);
    }
    let addrs = if v6rec {
        ConnAddrs::V6 {
            caddr: v6(rec, 24),
            vaddr: v6(rec, 40),
            daddr: v6(rec, 56),
        }
    } else {
        ConnAddrs::V4 {
            caddr: v4(rec, 24),
            vaddr: v4(rec, 28),
            daddr: v4(rec, 32),
        }
    };
    Ok(SyncConn {
        protocol,
        addrs,
        cport: be16(rec, 10),
        vport: be16(rec, 12),
        dport: be16(rec, 14),
        fwmark: be32(rec, 16),
        flags,
        state,
        timeout: be32(rec, 20),
        seq,
        pe_data: pe_data.map(<[u8]>::to_vec),
        pe_name: pe_data.and(pe_name).map(<[u8]>::to_vec),
    })
}

/// Totals over the datagrams a backup received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Datagrams handed to the decoder.
    pub mesgs: u64,
    /// Of those, read as version 1 / version 0.
    pub mesgs_v1: u64,
    pub mesgs_v0: u64,
    /// Records decoded (to be applied).
    pub conns: u64,
    pub drops: DropCounts,
}

impl DecodeStats {
    pub fn record(&mut self, d: &Decoded) {
        self.mesgs += 1;
        match d.version {
            Some(MesgVersion::V1) => self.mesgs_v1 += 1,
            Some(MesgVersion::V0) => self.mesgs_v0 += 1,
            None => {}
        }
        self.conns += d.conns.len() as u64;
        self.drops.add(&d.drops);
    }
}

/// A backup's receive side: its configuration and running counters.
#[derive(Clone, Debug, Default)]
pub struct SyncDecoder {
    cfg: BackupConfig,
    stats: DecodeStats,
}

impl SyncDecoder {
    pub fn new(cfg: BackupConfig) -> Self {
        Self {
            cfg,
            stats: DecodeStats::default(),
        }
    }

    pub fn config(&self) -> &BackupConfig {
        &self.cfg
    }

    /// Decodes `datagram` and adds its outcome to the counters.
    pub fn decode(&mut self, datagram: &[u8]) -> Decoded {
        let d = decode_mesg(datagram, &self.cfg);
        self.stats.record(&d);
        d
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }
}
