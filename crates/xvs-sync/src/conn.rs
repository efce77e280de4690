//! A sync record: one connection or persistence template as the sync protocol
//! carries it (`struct ip_vs_sync_v4`/`ip_vs_sync_v6` and their options), in
//! host order.

use crate::flags::ConnFlags;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family of a record (`type` bit 0 on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Af {
    V4,
    V6,
}

/// The three addresses of a record. One family for all three: the kernel
/// syncs no heterogeneous (v4 service, v6 dest) pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnAddrs {
    V4 {
        caddr: Ipv4Addr,
        vaddr: Ipv4Addr,
        daddr: Ipv4Addr,
    },
    V6 {
        caddr: Ipv6Addr,
        vaddr: Ipv6Addr,
        daddr: Ipv6Addr,
    },
}

impl ConnAddrs {
    pub const fn af(&self) -> Af {
        match self {
            Self::V4 { .. } => Af::V4,
            Self::V6 { .. } => Af::V6,
        }
    }

    /// Client address.
    pub fn caddr(&self) -> IpAddr {
        match *self {
            Self::V4 { caddr, .. } => caddr.into(),
            Self::V6 { caddr, .. } => caddr.into(),
        }
    }

    /// Virtual address (of the service, also set for fwmark services).
    pub fn vaddr(&self) -> IpAddr {
        match *self {
            Self::V4 { vaddr, .. } => vaddr.into(),
            Self::V6 { vaddr, .. } => vaddr.into(),
        }
    }

    /// Destination (real server) address.
    pub fn daddr(&self) -> IpAddr {
        match *self {
            Self::V4 { daddr, .. } => daddr.into(),
            Self::V6 { daddr, .. } => daddr.into(),
        }
    }

    /// The three addresses if they are of one family, else `None`.
    pub fn from_ips(caddr: IpAddr, vaddr: IpAddr, daddr: IpAddr) -> Option<Self> {
        match (caddr, vaddr, daddr) {
            (IpAddr::V4(caddr), IpAddr::V4(vaddr), IpAddr::V4(daddr)) => Some(Self::V4 {
                caddr,
                vaddr,
                daddr,
            }),
            (IpAddr::V6(caddr), IpAddr::V6(vaddr), IpAddr::V6(daddr)) => Some(Self::V6 {
                caddr,
                vaddr,
                daddr,
            }),
            _ => None,
        }
    }
}

/// One direction's sequence adjustment (`struct ip_vs_seq`), used by NAT
/// application helpers (FTP) that resize payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyncSeq {
    /// Add `delta` from this sequence number on.
    pub init_seq: u32,
    pub delta: u32,
    /// Delta before the last resized packet.
    pub previous_delta: u32,
}

/// The SEQ_DATA option (`struct ip_vs_sync_conn_options`): 24 bytes on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqData {
    pub in_seq: SyncSeq,
    pub out_seq: SyncSeq,
}

/// One sync record: a connection, or a persistence template when
/// `flags` has TEMPLATE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncConn {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, ...); for a fwmark
    /// service's template the kernel sends `IPPROTO_IP` (0).
    pub protocol: u8,
    pub addrs: ConnAddrs,
    pub cport: u16,
    /// Virtual port; 0 for a fwmark service's template.
    pub vport: u16,
    pub dport: u16,
    /// Firewall mark of the service (0 when the service is not a fwmark one).
    /// Version 0 cannot carry it.
    pub fwmark: u32,
    /// `IP_VS_CONN_F_*` bits. Sent as they are but for HASHED; a decoded
    /// record holds what the backup keeps (see [`ConnFlags::backup_v1`],
    /// [`ConnFlags::backup_v0`]).
    pub flags: ConnFlags,
    /// TCP/SCTP state in the kernel's numbering (0 for UDP; a template's
    /// is NONE/ASSURED).
    pub state: u16,
    /// Remaining timeout in seconds (`cp->timeout / HZ`). Version 0 carries
    /// none: decoded v0 records have 0, which tells the backup to use its
    /// protocol's timeout for the state (180 s for templates).
    pub timeout: u32,
    /// Sequence adjustments. The master sends them exactly when `flags` has
    /// IN_SEQ or OUT_SEQ (zeros if `None`); a backup applies them whenever
    /// the option is present.
    pub seq: Option<SeqData>,
    /// Persistence-engine data (e.g. the SIP Call-ID), at most 255 bytes.
    pub pe_data: Option<Vec<u8>>,
    /// Persistence-engine name (e.g. `sip`), at most 16 bytes; sent only
    /// with `pe_data`.
    pub pe_name: Option<Vec<u8>>,
}

impl SyncConn {
    pub const fn af(&self) -> Af {
        self.addrs.af()
    }

    pub const fn is_template(&self) -> bool {
        self.flags.is_template()
    }
}
