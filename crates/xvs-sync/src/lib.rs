//! xvs-sync: the IPVS connection synchronisation protocol, wire-compatible
//! with Linux's `net/netfilter/ipvs/ip_vs_sync.c`, followed as of Linux 6.18
//! (6.18.y; constants from `include/uapi/linux/ip_vs.h` and
//! `include/net/ip_vs.h`, unchanged through 6.x). Two 6.18 details matter:
//! a backup drops templates whose state is not below `IP_VS_CTPL_S_LAST`
//! (earlier kernels kept them), and a master writes SEQ_DATA from the
//! connection (earlier kernels passed `hton_seq()` its arguments swapped and
//! sent whatever the buffer held there).
//!
//! No I/O: records in, datagrams (`Vec<u8>`) out on the master side;
//! datagrams in, records and drop counters out on the backup side; time is an
//! argument. The daemon owns the multicast socket, the queue and the timers.
//!
//! - [`conn`]: the record ([`SyncConn`]) a master sends for a connection or
//!   persistence template.
//! - [`flags`]: the kernel's `IP_VS_CONN_F_*` bits and state numbers.
//! - [`encode`]: version 1 and version 0 records and the message builder.
//! - [`decode`]: both versions with the backup's checks and per-reason counters.
//! - [`needed`]: the master's "sync this connection now?" (`ip_vs_sync_conn_needed`).
//! - [`maxlen`]: `sync_maxlen` defaults and clamps.
//! - [`wire`]: sizes, option types, multicast defaults.
//! - [`ext`]: xvs's own messages (full-table snapshot for a new backup),
//!   which a kernel backup ignores.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use xvs_sync::flags::{proto, tcp_state};
//! use xvs_sync::*;
//!
//! // Master: after a packet, ask whether to sync; if so, queue the record.
//! let knobs = SyncKnobs::default();
//! let st = ConnSyncState {
//!     protocol: proto::TCP,
//!     af: Af::V4,
//!     flags: ConnFlags(ConnFlags::DROUTE | ConnFlags::NOOUTPUT),
//!     state: tcp_state::ESTABLISHED,
//!     old_state: tcp_state::SYN_RECV,
//!     timeout_ms: 900_000,
//!     sync_endtime: 0,
//!     in_persistence: false,
//! };
//! let d = sync_conn_needed(&st, 3, 1_000, &knobs);
//! assert!(d.send); // the 3rd packet (sync_threshold)
//! let conn = SyncConn {
//!     protocol: proto::TCP,
//!     addrs: ConnAddrs::V4 {
//!         caddr: Ipv4Addr::new(192, 0, 2, 1),
//!         vaddr: Ipv4Addr::new(198, 51, 100, 1),
//!         daddr: Ipv4Addr::new(10, 0, 0, 2),
//!     },
//!     cport: 40000,
//!     vport: 80,
//!     dport: 80,
//!     fwmark: 0,
//!     flags: st.flags,
//!     state: st.state,
//!     timeout: 900,
//!     seq: None,
//!     pe_data: None,
//!     pe_name: None,
//! };
//! let maxlen = sync_maxlen(SyncRole::Master, Af::V4, 0, 1500); // 1472
//! let mut builder = MesgBuilder::new(SyncVersion::V1, 0, maxlen);
//! assert_eq!(builder.push(&conn).unwrap(), None); // not full yet
//! let datagram = builder.flush().unwrap(); // after 2 s, or when full
//!
//! // Backup: decode, apply `conns`, count `drops`.
//! let mut backup = SyncDecoder::new(BackupConfig { syncid: 0 });
//! let got = backup.decode(&datagram);
//! assert_eq!(got.conns.len(), 1);
//! assert!(got.conns[0].flags.is_sync());
//! assert_eq!(backup.stats().drops.total(), 0);
//! ```
#![forbid(unsafe_code)]

pub mod conn;
pub mod decode;
pub mod encode;
pub mod ext;
pub mod flags;
pub mod maxlen;
pub mod needed;
pub mod wire;

pub use conn::{Af, ConnAddrs, SeqData, SyncConn, SyncSeq};
pub use decode::{
    decode_mesg, BackupConfig, DecodeStats, Decoded, DropCounts, DropReason, MesgVersion,
    SyncDecoder,
};
pub use encode::{encode_mesgs, EncodeError, MesgBuilder};
pub use flags::{ConnFlags, FwdMethod};
pub use maxlen::{sync_maxlen, SyncRole};
pub use needed::{sync_conn_needed, ConnSyncState, SyncDecision, SyncKnobs};
pub use wire::SyncVersion;
