//! Talking to xvsd.

use crate::proto::{read_frame, write_frame, FrameError, Request, Response, MAX_REPLY};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Where xvsd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xvs/xvsd.sock";

/// The socket path: `XVS_SOCKET` if set, else [`DEFAULT_SOCKET`].
pub fn default_socket_path() -> PathBuf {
    std::env::var_os("XVS_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to xvsd at {path}: {source} (is xvsd running?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to xvsd: {0}")]
    Frame(#[from] FrameError),
    #[error("xvsd closed the connection")]
    Closed,
}

/// A connection to xvsd.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Client { stream })
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, req)?;
        read_frame(&mut self.stream, MAX_REPLY)?.ok_or(ClientError::Closed)
    }
}
