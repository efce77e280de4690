//! xvs's own messages on the sync socket: the full-table snapshot a new
//! backup asks for (the kernel sends only changes, so a backup that
//! (re)starts would learn long-lived connections only when they are synced
//! again).
//!
//! Layout (12-byte header, then version 1 records as in a v1 message):
//!
//! ```text
//! offset size
//!  0     1    reserved = 0
//!  1     1    syncid
//!  2     2    size (be16): whole datagram
//!  4     1    nr_conns: records that follow (DATA), else 0
//!  5     1    version = 0x78 ('x'), never SYNC_PROTO_VER (1)
//!  6     1    kind: 1 REQUEST, 2 DATA, 3 END
//!  7     1    0
//!  8     4    session (be32): the requester's random id; DATA and END echo it
//! 12     …    DATA: v1 records, each 4-byte aligned; END: be32 records sent
//! ```
//!
//! Why a kernel backup ignores it: `ip_vs_process_message` takes only
//! `version == 1 && reserved == 0 && spare == 0` as version 1; anything else
//! goes to the version 0 parser, which reads `nr_conns` from byte 0, here 0,
//! and so applies nothing. A kernel master never reads the socket. xvs's
//! decoder ([`crate::decode_mesg`]) counts such a datagram as
//! `unknown_version`; the daemon looks at it with [`parse`] first.

use crate::decode::{decode_mesg, BackupConfig, Decoded};
use crate::encode::{EncodeError, MesgBuilder};
use crate::wire::{SyncVersion, SYNC_MESG_HEADER_LEN, SYNC_PROTO_VER};
use crate::SyncConn;

/// The `version` byte of xvs's messages.
pub const XVS_EXT_VERSION: u8 = 0x78;
/// Header length.
pub const EXT_HEADER_LEN: usize = 12;

/// What an xvs message asks or carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtKind {
    /// A backup asks the masters of its syncid for their tables.
    Request,
    /// Part of a snapshot.
    Data,
    /// The snapshot is complete (`records` sent in all).
    End { records: u32 },
}

/// A parsed xvs message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtHeader {
    pub syncid: u8,
    pub session: u32,
    pub kind: ExtKind,
}

/// True when the datagram is one of xvs's messages (whatever its validity).
pub fn is_ext(buf: &[u8]) -> bool {
    buf.len() >= 6 && buf[0] == 0 && buf[5] == XVS_EXT_VERSION
}

/// Parses an xvs message header; None when it is not a valid one.
pub fn parse(buf: &[u8]) -> Option<ExtHeader> {
    if buf.len() < EXT_HEADER_LEN || !is_ext(buf) || buf[7] != 0 {
        return None;
    }
    if usize::from(u16::from_be_bytes([buf[2], buf[3]])) != buf.len() {
        return None;
    }
    let session = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let kind = match buf[6] {
        1 if buf.len() == EXT_HEADER_LEN => ExtKind::Request,
        2 => ExtKind::Data,
        3 if buf.len() == EXT_HEADER_LEN + 4 => ExtKind::End {
            records: u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]),
        },
        _ => return None,
    };
    Some(ExtHeader {
        syncid: buf[1],
        session,
        kind,
    })
}

fn header(syncid: u8, len: usize, nr: u8, kind: u8, session: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(len);
    h.push(0);
    h.push(syncid);
    h.extend_from_slice(&(len as u16).to_be_bytes());
    h.push(nr);
    h.push(XVS_EXT_VERSION);
    h.push(kind);
    h.push(0);
    h.extend_from_slice(&session.to_be_bytes());
    h
}

/// A snapshot request.
pub fn request(syncid: u8, session: u32) -> Vec<u8> {
    header(syncid, EXT_HEADER_LEN, 0, 1, session)
}

/// The end of a snapshot.
pub fn end(syncid: u8, session: u32, records: u32) -> Vec<u8> {
    let mut m = header(syncid, EXT_HEADER_LEN + 4, 0, 3, session);
    m.extend_from_slice(&records.to_be_bytes());
    m
}

/// Builds snapshot DATA messages of at most `maxlen` bytes.
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    inner: MesgBuilder,
    session: u32,
}

impl SnapshotBuilder {
    pub fn new(syncid: u8, session: u32, maxlen: u16) -> Self {
        let extra = (EXT_HEADER_LEN - SYNC_MESG_HEADER_LEN) as u16;
        SnapshotBuilder {
            inner: MesgBuilder::new(SyncVersion::V1, syncid, maxlen.saturating_sub(extra)),
            session,
        }
    }

    /// Adds a record; returns a complete message when one filled up.
    pub fn push(&mut self, c: &SyncConn) -> Result<Option<Vec<u8>>, EncodeError> {
        Ok(self.inner.push(c)?.map(|m| self.wrap(m)))
    }

    /// The message under construction, if it holds any record.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        self.inner.flush().map(|m| self.wrap(m))
    }

    /// A v1 message as DATA: the header grows by 4 bytes (the session), so
    /// records stay 4-byte aligned.
    fn wrap(&self, v1: Vec<u8>) -> Vec<u8> {
        let len = v1.len() + EXT_HEADER_LEN - SYNC_MESG_HEADER_LEN;
        let mut m = header(v1[1], len, v1[4], 2, self.session);
        m.extend_from_slice(&v1[SYNC_MESG_HEADER_LEN..]);
        m
    }
}

/// The records of a DATA message, with the backup's checks of a v1 message
/// (a malformed one yields what a kernel would keep of it, and its drops).
pub fn decode_data(buf: &[u8], cfg: &BackupConfig) -> Decoded {
    let len = buf
        .len()
        .saturating_sub(EXT_HEADER_LEN - SYNC_MESG_HEADER_LEN);
    let mut v1 = Vec::with_capacity(len);
    v1.push(0);
    v1.push(buf.get(1).copied().unwrap_or(0));
    v1.extend_from_slice(&(len as u16).to_be_bytes());
    v1.push(buf.get(4).copied().unwrap_or(0));
    v1.push(SYNC_PROTO_VER);
    v1.extend_from_slice(&[0, 0]);
    v1.extend_from_slice(buf.get(EXT_HEADER_LEN..).unwrap_or(&[]));
    decode_mesg(&v1, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnAddrs;
    use crate::decode::{DropReason, SyncDecoder};
    use crate::flags::ConnFlags;
    use std::net::Ipv4Addr;

    fn rec(i: u16) -> SyncConn {
        SyncConn {
            protocol: 6,
            addrs: ConnAddrs::V4 {
                caddr: Ipv4Addr::new(10, 77, 0, 2),
                vaddr: Ipv4Addr::new(10, 77, 0, 100),
                daddr: Ipv4Addr::new(10, 77, 1, 11),
            },
            cport: 1000 + i,
            vport: 80,
            dport: 80,
            fwmark: 0,
            flags: ConnFlags(ConnFlags::MASQ),
            state: 1,
            timeout: 900,
            seq: None,
            pe_data: None,
            pe_name: None,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let r = request(7, 0xdead_beef);
        assert_eq!(
            r,
            [0, 7, 0, 12, 0, 0x78, 1, 0, 0xde, 0xad, 0xbe, 0xef],
            "REQUEST"
        );
        assert_eq!(
            parse(&r),
            Some(ExtHeader {
                syncid: 7,
                session: 0xdead_beef,
                kind: ExtKind::Request
            })
        );
        let e = end(7, 1, 300);
        assert_eq!(&e[..8], &[0, 7, 0, 16, 0, 0x78, 3, 0]);
        assert_eq!(parse(&e).unwrap().kind, ExtKind::End { records: 300 });
        let mut b = SnapshotBuilder::new(7, 5, 1472);
        b.push(&rec(0)).unwrap();
        let d = b.flush().unwrap();
        assert_eq!(&d[..12], &[0, 7, 0, 48, 1, 0x78, 2, 0, 0, 0, 0, 5]);
        assert_eq!(d.len(), 12 + 36, "one v4 record after the header");
    }

    #[test]
    fn a_kernel_backup_applies_nothing_of_them() {
        // What `ip_vs_process_message` does: not v1, so v0 with nr_conns = byte 0.
        let mut b = SnapshotBuilder::new(0, 5, 1472);
        for i in 0..10 {
            b.push(&rec(i)).unwrap();
        }
        let data = b.flush().unwrap();
        let mut dec = SyncDecoder::new(BackupConfig { syncid: 0 });
        for m in [request(0, 1), data.clone(), end(0, 1, 10)] {
            let d = dec.decode(&m);
            assert!(d.conns.is_empty());
            assert_eq!(d.nr_conns, 0, "read as v0 with no records");
        }
        assert_eq!(dec.stats().drops.get(DropReason::UnknownVersion), 3);
        // xvs reads the records.
        let d = decode_data(&data, &BackupConfig { syncid: 0 });
        assert_eq!(d.conns.len(), 10);
        assert_eq!(d.conns[3].cport, 1003);
        assert_eq!(d.drops.total(), 0);
    }

    #[test]
    fn messages_stay_within_maxlen_and_garbage_is_refused() {
        let mut b = SnapshotBuilder::new(0, 9, 200);
        let mut msgs = Vec::new();
        for i in 0..50 {
            msgs.extend(b.push(&rec(i)).unwrap());
        }
        msgs.extend(b.flush());
        let mut n = 0;
        for m in &msgs {
            assert!(m.len() <= 200);
            assert_eq!(parse(m).unwrap().kind, ExtKind::Data);
            n += decode_data(m, &BackupConfig { syncid: 0 }).conns.len();
        }
        assert_eq!(n, 50);
        for bad in [
            &[][..],
            &[0, 0, 0, 12, 0, 0x78, 1, 0, 0, 0, 0][..],
            &[0, 0, 0, 13, 0, 0x78, 1, 0, 0, 0, 0, 0][..],
            &[0, 0, 0, 12, 0, 0x78, 9, 0, 0, 0, 0, 0][..],
            &[0, 0, 0, 12, 0, 0x78, 3, 0, 0, 0, 0, 0][..],
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // Truncated or lying DATA: decoded as far as it holds, drops counted.
        let mut m = msgs[0].clone();
        m.truncate(30);
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let d = decode_data(&m, &BackupConfig { syncid: 0 });
        assert!(d.drops.total() > 0);
    }

    proptest::proptest! {
        /// Whatever arrives, parsing and decoding it neither panics nor
        /// yields more records than the datagram could hold.
        #[test]
        fn garbage_never_panics(mut buf in proptest::collection::vec(proptest::num::u8::ANY, 0..600), ext_hdr: bool) {
            if ext_hdr && buf.len() >= 12 {
                buf[0] = 0;
                buf[5] = XVS_EXT_VERSION;
                buf[6] = 2;
                buf[7] = 0;
                let n = buf.len() as u16;
                buf[2..4].copy_from_slice(&n.to_be_bytes());
            }
            let _ = parse(&buf);
            let d = decode_data(&buf, &BackupConfig { syncid: 0 });
            proptest::prop_assert!(d.conns.len() <= buf.len() / 24 + 1);
        }
    }
}
