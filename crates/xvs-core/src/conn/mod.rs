//! Connections: the IPVS TCP state machine and the shared, lock-free,
//! preallocated connection table.

pub mod state;
pub mod table;

pub use state::{tcp_transition, Direction, TcpState, Timeouts};
pub use table::{ConnKey, ConnTable, ConnView, InsertError, KeyDir, NewConn};
