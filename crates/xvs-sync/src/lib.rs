//! xvs-sync: the IPVS connection synchronisation protocol, wire-compatible
//! with Linux's `net/netfilter/ipvs/ip_vs_sync.c` (followed as of Linux 6.18).
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
#![forbid(unsafe_code)]

pub mod conn;
pub mod decode;
pub mod encode;
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
