//! The service model: virtual services, their real servers, and the table the
//! control plane edits with ipvsadm's operations and validation.

mod dest;
mod error;
mod spec;
mod table;

pub use dest::{Dest, DEST_F_AVAILABLE, DEST_F_OVERLOAD};
pub use error::ServiceError;
pub use spec::{
    default_netmask, Af, DestSpec, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec,
    SvcFlags, DEFAULT_PERSIST_TIMEOUT, MAX_WEIGHT,
};
pub use table::{Service, ServiceTable, DEFAULT_MAX_DESTS, DEFAULT_MAX_SERVICES};
