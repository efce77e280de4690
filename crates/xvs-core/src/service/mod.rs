//! The service model: virtual services, their real servers, and the table the
//! control plane edits with ipvsadm's operations and validation.

pub mod dest;
pub mod error;
pub mod spec;
pub mod table;

pub use dest::Dest;
pub use error::ServiceError;
pub use spec::*;
