//! The control socket: a Unix stream socket (mode 0600) serving xvs-ctl requests.

use crate::state::State;
use anyhow::{bail, Context, Result};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use xvs_ctl::proto::{read_frame, write_frame, FrameError};
use xvs_ctl::{ErrorReply, Request, Response, MAX_REQUEST, PROTOCOL_VERSION};

/// Fails if a live daemon already serves `path`.
pub fn check_free(path: &Path) -> Result<()> {
    if path.exists() && UnixStream::connect(path).is_ok() {
        bail!(
            "another xvsd is already serving {} (use --socket or XVS_SOCKET for a second one)",
            path.display()
        );
    }
    Ok(())
}

/// Binds the control socket: creates the directory, replaces a stale socket
/// left by a dead daemon, refuses to take over a live one.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    check_free(path)?;
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    Ok(l)
}

/// Answers one request.
pub fn handle(state: &Mutex<State>, req: Request) -> Response {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let err = |message: String, index| Response::Error(ErrorReply { message, index });
    match req {
        Request::Hello { version } => {
            if version != PROTOCOL_VERSION {
                return err(
                    format!(
                        "protocol version {version} not supported (xvsd speaks {PROTOCOL_VERSION})"
                    ),
                    None,
                );
            }
            Response::Hello {
                version: PROTOCOL_VERSION,
                conn_tab_size: s.engine.conns.capacity(),
            }
        }
        Request::Apply(op) => match s.apply(&op) {
            Ok(()) => Response::Ok,
            Err(e) => err(e.0, None),
        },
        Request::Batch(ops) => match s.apply_batch(&ops) {
            Ok(()) => Response::Ok,
            Err((i, e)) => err(e.0, Some(i)),
        },
        Request::ListServices(k) => s.list_services(k.as_ref()),
        Request::ListConns => Response::Conns(s.list_conns()),
        Request::GetTimeouts => {
            let (a, b, c) = s.timeouts.listed();
            Response::Timeouts(a, b, c)
        }
        Request::GetDaemons => Response::Daemons(s.daemons.clone()),
        Request::GetLaddrs(k) => Response::Laddrs(s.list_laddrs(k.as_ref())),
    }
}

fn serve_conn(state: Arc<Mutex<State>>, mut stream: UnixStream) {
    loop {
        let req: Request = match read_frame(&mut stream, MAX_REQUEST) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(FrameError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => return,
            Err(e) => {
                // Malformed or oversized: say so and hang up.
                tracing::warn!("control client sent a bad request: {e}");
                let _ = write_frame(
                    &mut stream,
                    &Response::Error(ErrorReply {
                        message: format!("bad request: {e}"),
                        index: None,
                    }),
                );
                return;
            }
        };
        let resp = handle(&state, req);
        if write_frame(&mut stream, &resp).is_err() {
            return;
        }
    }
}

/// Serves the socket until the process ends; one thread per client.
pub fn serve(listener: UnixListener, state: Arc<Mutex<State>>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let st = state.clone();
                let _ = std::thread::Builder::new()
                    .name("xvsd-ctl".into())
                    .spawn(move || serve_conn(st, stream));
            }
            Err(e) => tracing::warn!("control socket accept: {e}"),
        }
    }
}

/// Removes the socket file on drop.
pub struct SocketGuard(pub PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
