//! Errors of the AF_XDP/BPF layer: what was being done, and the OS error.

use std::io;
use thiserror::Error;

/// An error from setting up sockets, rings, maps or programs.
#[derive(Debug, Error)]
pub enum Error {
    /// A system call failed; `what` names the operation and its object.
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The BPF object file is not what the loader understands.
    #[error("BPF object: {0}")]
    Elf(String),
    /// The verifier refused a program; `log` is its explanation.
    #[error("BPF program {prog} refused by the verifier: {source}\n{log}")]
    Verifier {
        prog: String,
        log: String,
        #[source]
        source: io::Error,
    },
    /// A bad argument (unknown interface, wrong backend for a worker, ...).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The OS error number, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } | Error::Verifier { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Wraps the last OS error with a description of what failed.
pub(crate) fn last_os(what: impl Into<String>) -> Error {
    Error::Os {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

/// Adds a description to an `io::Error`.
pub(crate) fn os(what: impl Into<String>, source: io::Error) -> Error {
    Error::Os {
        what: what.into(),
        source,
    }
}
