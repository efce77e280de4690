//! Wire constants of `net/netfilter/ipvs/ip_vs_sync.c`: header and record
//! sizes, the option types, the `ver_size` split, the multicast defaults.
//! Offsets inside the structures live next to the code that reads and writes
//! them (encode.rs, decode.rs); the tests spell them out independently.

use std::net::Ipv4Addr;

/// `SYNC_PROTO_VER`: the `version` byte of a version 1 header.
pub const SYNC_PROTO_VER: u8 = 1;

/// `sizeof(struct ip_vs_sync_mesg)`: the version 1 header.
pub const SYNC_MESG_HEADER_LEN: usize = 8;
/// `sizeof(struct ip_vs_sync_mesg_v0)`: the version 0 header.
pub const SYNC_MESG_V0_HEADER_LEN: usize = 4;

/// `sizeof(struct ip_vs_sync_v4)`.
pub const SYNC_CONN_V4_LEN: usize = 36;
/// `sizeof(struct ip_vs_sync_v6)`.
pub const SYNC_CONN_V6_LEN: usize = 72;
/// `SIMPLE_CONN_SIZE`: `sizeof(struct ip_vs_sync_conn_v0)`.
pub const SYNC_CONN_V0_LEN: usize = 24;
/// `sizeof(struct ip_vs_sync_conn_options)`: in_seq and out_seq.
pub const SEQ_OPTIONS_LEN: usize = 24;
/// `FULL_CONN_SIZE`: a version 0 record with its sequence options.
pub const SYNC_CONN_V0_FULL_LEN: usize = SYNC_CONN_V0_LEN + SEQ_OPTIONS_LEN;
/// An option's type and length bytes.
pub const OPT_HEADER_LEN: usize = 2;

/// `STYPE_F_INET6`: bit 0 of a record's `type`.
pub const STYPE_F_INET6: u8 = 1;
/// `SVER_SHIFT`: the record version sits in the top 4 bits of `ver_size`.
pub const SVER_SHIFT: u16 = 12;
/// `SVER_MASK`: the record size sits in the low 12 bits of `ver_size`.
pub const SVER_MASK: u16 = 0x0fff;

/// `IPVS_OPT_SEQ_DATA`.
pub const IPVS_OPT_SEQ_DATA: u8 = 1;
/// `IPVS_OPT_PE_DATA`.
pub const IPVS_OPT_PE_DATA: u8 = 2;
/// `IPVS_OPT_PE_NAME`.
pub const IPVS_OPT_PE_NAME: u8 = 3;
/// `IPVS_OPT_F_PARAM`: an option type with this bit may be skipped by a
/// backup that does not know it; without it an unknown option drops the record.
pub const IPVS_OPT_F_PARAM: u8 = 1 << (7 - 1);

/// `IP_VS_PENAME_MAXLEN`.
pub const IP_VS_PENAME_MAXLEN: usize = 16;
/// `IP_VS_PEDATA_MAXLEN`.
pub const IP_VS_PEDATA_MAXLEN: usize = 255;

/// `nr_conns` is one byte: no message holds more records.
pub const MAX_NR_CONNS: usize = 255;

/// `IP_VS_SYNC_GROUP`: the default IPv4 multicast group, 224.0.0.81.
pub const IP_VS_SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// `IP_VS_SYNC_PORT`: the default port; sync thread `id` uses port + id.
pub const IP_VS_SYNC_PORT: u16 = 8848;
/// Default multicast TTL.
pub const IP_VS_SYNC_TTL: u8 = 1;
/// `IPVS_SYNC_PORTS_MAX`: at most this many sync threads (and ports).
pub const IPVS_SYNC_PORTS_MAX: u16 = 1 << 6;

/// Timeout a backup gives a template from a version 0 record (which has no
/// timeout field); connections get their protocol's timeout for the state.
pub const V0_TEMPLATE_TIMEOUT_SECS: u32 = 3 * 60;

/// Sync protocol version a master sends (`net.ipv4.vs.sync_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SyncVersion {
    /// The original format: IPv4 only, no timeout, no fwmark, no PE data.
    V0,
    /// The current format (the kernel's default).
    #[default]
    V1,
}
