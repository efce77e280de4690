//! Connections: the IPVS TCP state machine and the shared, lock-free,
//! preallocated connection table (its entries, its index, the table).

pub mod entry;
pub mod index;
pub mod state;
pub mod table;

pub use entry::{ConnView, EntryFlags, EntryState, NewConn, Sw, TemplateRef, IN_PKTS_CAP};
pub use index::{ConnKey, KeyDir, TEMPLATE_PROTO};
pub use state::{tcp_transition, Direction, TcpState, Timeouts};
pub use table::{Census, ConnTable, InsertError, MAX_LIPS};
