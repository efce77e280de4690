//! Connections: the IPVS TCP state machine and the shared, lock-free,
//! preallocated connection table (its entries, its index, the table).

mod entry;
mod index;
mod state;
mod table;

pub use entry::{ConnView, EntryFlags, EntryState, NewConn, Sw, TemplateRef, IN_PKTS_CAP};
pub use index::{ConnKey, KeyDir, TEMPLATE_PROTO};
pub use state::{
    tcp_transition, Direction, TcpEvent, TcpState, Timeouts, MAX_TIMEOUT, TCP_ACK, TCP_FIN,
    TCP_RST, TCP_STATE_COUNT, TCP_SYN,
};
pub use table::{Census, ConnTable, InsertError, OutDone, PendingOut, MAX_LIPS};
