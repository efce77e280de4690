//! The master's side: sync records laid out as `ip_vs_sync_conn()` (version 1)
//! and `ip_vs_sync_conn_v0()` write them, and a message builder that packs
//! records into datagrams no larger than `sync_maxlen`.
//!
//! Version 1 record: the fixed part (36 bytes IPv4, 72 IPv6), then SEQ_DATA
//! when the flags have IN_SEQ/OUT_SEQ, then PE_DATA and PE_NAME; `ver_size`
//! holds the length of all that (version 0 in the top four bits). The next
//! record starts on a 4-byte boundary of the message: the zero padding
//! belongs to no record but counts in the message size, and the last record
//! is not padded.
//!
//! Version 0 record: 24 bytes, plus the 24-byte sequence options copied from
//! the kernel's `struct ip_vs_seq` pair as they sit in memory (host order:
//! the kernel does no byte swap there). This encoder writes them
//! little-endian, as an x86 or arm64 master does.

use crate::conn::{ConnAddrs, SeqData, SyncConn, SyncSeq};
use crate::wire::*;
use thiserror::Error;

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("PE data of {0} bytes (at most {IP_VS_PEDATA_MAXLEN})")]
    PeDataTooLong(usize),
    #[error("empty PE data")]
    PeDataEmpty,
    #[error("PE name of {0} bytes (at most {IP_VS_PENAME_MAXLEN})")]
    PeNameTooLong(usize),
    #[error("version 0 carries IPv4 records only")]
    V0NotIpv4,
    #[error("record of {len} bytes does not fit a message of at most {maxlen} bytes")]
    RecordTooLarge { len: usize, maxlen: usize },
}

/// Length of `c` as a version 1 record (the `size` in `ver_size`, no padding).
pub fn conn_len_v1(c: &SyncConn) -> Result<usize, EncodeError> {
    let mut len = match c.addrs {
        ConnAddrs::V4 { .. } => SYNC_CONN_V4_LEN,
        ConnAddrs::V6 { .. } => SYNC_CONN_V6_LEN,
    };
    if c.flags.has_seq() {
        len += OPT_HEADER_LEN + SEQ_OPTIONS_LEN;
    }
    if let Some(d) = &c.pe_data {
        if d.is_empty() {
            return Err(EncodeError::PeDataEmpty);
        }
        if d.len() > IP_VS_PEDATA_MAXLEN {
            return Err(EncodeError::PeDataTooLong(d.len()));
        }
        len += OPT_HEADER_LEN + d.len();
        // The kernel sends the name only along with data (and only a non-empty one).
        if let Some(n) = c.pe_name.as_ref().filter(|n| !n.is_empty()) {
            if n.len() > IP_VS_PENAME_MAXLEN {
                return Err(EncodeError::PeNameTooLong(n.len()));
            }
            len += OPT_HEADER_LEN + n.len();
        }
    }
    Ok(len)
}

fn put_seq(out: &mut Vec<u8>, s: &SyncSeq, be: bool) {
    for v in [s.init_seq, s.delta, s.previous_delta] {
        out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
    }
}

/// Appends `c` as a version 1 record (`union ip_vs_sync_conn` plus options)
/// to `out`; returns its length.
pub fn encode_conn_v1(c: &SyncConn, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let len = conn_len_v1(c)?;
    let start = out.len();
    out.reserve(len);
    let stype = match c.addrs {
        ConnAddrs::V4 { .. } => 0,
        ConnAddrs::V6 { .. } => STYPE_F_INET6,
    };
    out.push(stype);
    out.push(c.protocol);
    // Record version 0 in the top bits; len < 4096 by the limits above.
    out.extend_from_slice(&(len as u16 & SVER_MASK).to_be_bytes());
    out.extend_from_slice(&c.flags.sent().bits().to_be_bytes());
    out.extend_from_slice(&c.state.to_be_bytes());
    out.extend_from_slice(&c.cport.to_be_bytes());
    out.extend_from_slice(&c.vport.to_be_bytes());
    out.extend_from_slice(&c.dport.to_be_bytes());
    out.extend_from_slice(&c.fwmark.to_be_bytes());
    out.extend_from_slice(&c.timeout.to_be_bytes());
    match c.addrs {
        ConnAddrs::V4 {
            caddr,
            vaddr,
            daddr,
        } => {
            out.extend_from_slice(&caddr.octets());
            out.extend_from_slice(&vaddr.octets());
            out.extend_from_slice(&daddr.octets());
        }
        ConnAddrs::V6 {
            caddr,
            vaddr,
            daddr,
        } => {
            out.extend_from_slice(&caddr.octets());
            out.extend_from_slice(&vaddr.octets());
            out.extend_from_slice(&daddr.octets());
        }
    }
    if c.flags.has_seq() {
        out.push(IPVS_OPT_SEQ_DATA);
        out.push(SEQ_OPTIONS_LEN as u8);
        let s = c.seq.unwrap_or_default();
        put_seq(out, &s.in_seq, true);
        put_seq(out, &s.out_seq, true);
    }
    if let Some(d) = &c.pe_data {
        out.push(IPVS_OPT_PE_DATA);
        out.push(d.len() as u8);
        out.extend_from_slice(d);
        if let Some(n) = c.pe_name.as_ref().filter(|n| !n.is_empty()) {
            out.push(IPVS_OPT_PE_NAME);
            out.push(n.len() as u8);
            out.extend_from_slice(n);
        }
    }
    debug_assert_eq!(out.len() - start, len);
    Ok(len)
}

/// Length of `c` as a version 0 record: 24 bytes, 48 with sequence options.
pub fn conn_len_v0(c: &SyncConn) -> Result<usize, EncodeError> {
    match c.addrs {
        ConnAddrs::V4 { .. } if c.flags.has_seq() => Ok(SYNC_CONN_V0_FULL_LEN),
        ConnAddrs::V4 { .. } => Ok(SYNC_CONN_V0_LEN),
        ConnAddrs::V6 { .. } => Err(EncodeError::V0NotIpv4),
    }
}

/// Appends `c` as a version 0 record (`struct ip_vs_sync_conn_v0`, then the
/// options when the flags have IN_SEQ/OUT_SEQ); returns its length. Only the
/// low 16 flag bits fit; timeout, fwmark and PE data are not carried.
pub fn encode_conn_v0(c: &SyncConn, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let len = conn_len_v0(c)?;
    let ConnAddrs::V4 {
        caddr,
        vaddr,
        daddr,
    } = c.addrs
    else {
        return Err(EncodeError::V0NotIpv4);
    };
    out.push(0); // reserved
    out.push(c.protocol);
    out.extend_from_slice(&c.cport.to_be_bytes());
    out.extend_from_slice(&c.vport.to_be_bytes());
    out.extend_from_slice(&c.dport.to_be_bytes());
    out.extend_from_slice(&caddr.octets());
    out.extend_from_slice(&vaddr.octets());
    out.extend_from_slice(&daddr.octets());
    // htons() of a u32: the high half is cut off.
    out.extend_from_slice(&(c.flags.sent().bits() as u16).to_be_bytes());
    out.extend_from_slice(&c.state.to_be_bytes());
    if c.flags.has_seq() {
        let s: SeqData = c.seq.unwrap_or_default();
        put_seq(out, &s.in_seq, false);
        put_seq(out, &s.out_seq, false);
    }
    Ok(len)
}

/// Packs records into sync messages (`struct ip_vs_sync_buff` without the
/// queue): at most `sync_maxlen` bytes and 255 records each.
///
/// [`push`](Self::push) hands back the message under construction when the
/// next record does not fit it (the kernel's `sb_queue_tail`), and
/// [`flush`](Self::flush) the partial one (the kernel flushes a buffer older
/// than `IPVS_SYNC_FLUSH_TIME`, 2 s). Unlike the kernel, a record larger than
/// an empty message is refused instead of sent in an oversized datagram, and
/// the record count stops at 255 instead of wrapping the one-byte `nr_conns`
/// (which a master with `sync_maxlen` above ~9 KB could otherwise do).
#[derive(Debug, Clone)]
pub struct MesgBuilder {
    version: SyncVersion,
    syncid: u8,
    maxlen: usize,
    buf: Vec<u8>,
    nr_conns: usize,
}

impl MesgBuilder {
    /// A builder for `syncid` messages of at most `sync_maxlen` bytes (the
    /// UDP payload; see [`crate::maxlen::sync_maxlen`]).
    pub fn new(version: SyncVersion, syncid: u8, sync_maxlen: u16) -> Self {
        Self {
            version,
            syncid,
            maxlen: usize::from(sync_maxlen),
            buf: Vec::new(),
            nr_conns: 0,
        }
    }

    pub fn version(&self) -> SyncVersion {
        self.version
    }

    pub fn syncid(&self) -> u8 {
        self.syncid
    }

    pub fn sync_maxlen(&self) -> usize {
        self.maxlen
    }

    /// Records in the message under construction.
    pub fn nr_conns(&self) -> usize {
        self.nr_conns
    }

    /// Bytes of the message under construction (0 when none is open).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nr_conns == 0
    }

    fn header_len(&self) -> usize {
        match self.version {
            SyncVersion::V0 => SYNC_MESG_V0_HEADER_LEN,
            SyncVersion::V1 => SYNC_MESG_HEADER_LEN,
        }
    }

    /// Adds `c`; returns the previous message, complete, when `c` had to
    /// start a new one. On error nothing changes.
    pub fn push(&mut self, c: &SyncConn) -> Result<Option<Vec<u8>>, EncodeError> {
        let len = match self.version {
            SyncVersion::V0 => conn_len_v0(c)?,
            SyncVersion::V1 => conn_len_v1(c)?,
        };
        let hdr = self.header_len();
        if hdr + len > self.maxlen {
            return Err(EncodeError::RecordTooLarge {
                len,
                maxlen: self.maxlen,
            });
        }
        let mut done = None;
        if self.nr_conns > 0 {
            let pad = self.pad();
            if self.buf.len() + pad + len > self.maxlen || self.nr_conns == MAX_NR_CONNS {
                done = self.flush();
            }
        }
        if self.nr_conns == 0 {
            self.buf.clear();
            self.buf.resize(hdr, 0);
        } else {
            let pad = self.pad();
            self.buf.resize(self.buf.len() + pad, 0);
        }
        let written = match self.version {
            SyncVersion::V0 => encode_conn_v0(c, &mut self.buf),
            SyncVersion::V1 => encode_conn_v1(c, &mut self.buf),
        };
        // Lengths were checked above, so encoding cannot fail now.
        debug_assert_eq!(written, Ok(len));
        self.nr_conns += 1;
        Ok(done)
    }

    /// Zero bytes before the next record: version 1 aligns records to 4
    /// bytes (`pad = (4 - head) & 3`); version 0 records are 24/48 bytes
    /// after a 4-byte header and need none.
    fn pad(&self) -> usize {
        match self.version {
            SyncVersion::V0 => 0,
            SyncVersion::V1 => (4 - (self.buf.len() & 3)) & 3,
        }
    }

    /// The message under construction, finished, if it holds any record.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if self.nr_conns == 0 {
            return None;
        }
        let mut m = std::mem::take(&mut self.buf);
        let size = (m.len() as u16).to_be_bytes();
        let nr = self.nr_conns as u8;
        match self.version {
            SyncVersion::V1 => {
                m[0] = 0; // reserved: a v0 receiver sees nr_conns 0 and ignores it
                m[1] = self.syncid;
                m[2..4].copy_from_slice(&size);
                m[4] = nr;
                m[5] = SYNC_PROTO_VER;
                m[6] = 0; // spare
                m[7] = 0;
            }
            SyncVersion::V0 => {
                m[0] = nr;
                m[1] = self.syncid;
                m[2..4].copy_from_slice(&size);
            }
        }
        self.nr_conns = 0;
        Some(m)
    }
}

/// Encodes `conns` into as many messages as they need, in order.
pub fn encode_mesgs(
    version: SyncVersion,
    syncid: u8,
    sync_maxlen: u16,
    conns: &[SyncConn],
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut b = MesgBuilder::new(version, syncid, sync_maxlen);
    let mut out = Vec::new();
    for c in conns {
        if let Some(m) = b.push(c)? {
            out.push(m);
        }
    }
    out.extend(b.flush());
    Ok(out)
}
