//! Errors of service and destination operations, worded as ipvsadm prints them.

use thiserror::Error;

/// Why a service-table operation was refused. `Display` is ipvsadm's message for
/// the same kernel error, so the CLI can print it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
pub enum ServiceError {
    /// `-A` of a service that exists (EEXIST).
    #[error("Service already exists")]
    ServiceExists,
    /// `-E`/`-D`/`-Z`/`-L` of a missing service (ESRCH on service ops).
    #[error("No such service")]
    NoSuchService,
    /// `-a`/`-e`/`-d` on a missing service (ESRCH on dest ops).
    #[error("Service not defined")]
    ServiceNotDefined,
    /// `-a` of a dest that exists (EEXIST).
    #[error("Destination already exists")]
    DestExists,
    /// `-e`/`-d` of a missing dest (ENOENT).
    #[error("No such destination")]
    NoSuchDest,
    /// Unknown scheduler name (ENOENT on service ops).
    #[error("Scheduler or persistence engine not found")]
    SchedulerNotFound,
    /// Lower threshold above upper (ERANGE).
    #[error("Numerical result out of range")]
    ThresholdRange,
    /// Invalid argument (EINVAL): bad weight, too many dests for mh, bad flags...
    #[error("Invalid operation.  Possibly wrong module version, address not unicast, ...")]
    Invalid,
    /// Address families that cannot be mixed (EAFNOSUPPORT).
    #[error("Operation not supported with specified address family")]
    AfNotSupported,
    /// A bound was reached (ENOMEM), e.g. the dest table is full.
    #[error("Memory allocation problem")]
    NoMemory,
}
