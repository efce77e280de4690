//! Talking to xvsd.

use crate::proto::{
    read_frame, write_frame, ConnInfo, ErrorReply, FrameError, Request, Response, MAX_REPLY,
};
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
    #[error("unexpected reply from xvsd: {0:?}")]
    Unexpected(Box<Response>),
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
        if let Err(e) = write_frame(&mut self.stream, req) {
            // xvsd may have said why before it hung up (too many clients).
            if let Ok(Some(r @ Response::Error(_))) = read_frame(&mut self.stream, MAX_REPLY) {
                return Ok(r);
            }
            return Err(e.into());
        }
        read_frame(&mut self.stream, MAX_REPLY)?.ok_or(ClientError::Closed)
    }

    /// Lists the connections: `chunk` gets each part of the listing as it
    /// arrives, so memory stays bounded whatever the table holds, and returns
    /// false to stop early (the connection is then shut, as the rest of the
    /// listing is left unread). `Ok(Some(_))` is xvsd's refusal.
    pub fn list_conns(
        &mut self,
        mut chunk: impl FnMut(&[ConnInfo]) -> bool,
    ) -> Result<Option<ErrorReply>, ClientError> {
        let mut reply = self.call(&Request::ListConns)?;
        loop {
            match reply {
                Response::Conns { conns, more } => {
                    if !chunk(&conns) {
                        let _ = self.stream.shutdown(std::net::Shutdown::Both);
                        return Ok(None);
                    }
                    if !more {
                        return Ok(None);
                    }
                }
                Response::Error(e) => return Ok(Some(e)),
                r => return Err(ClientError::Unexpected(Box::new(r))),
            }
            reply = read_frame(&mut self.stream, MAX_REPLY)?.ok_or(ClientError::Closed)?;
        }
    }
}
