//! The control socket: a Unix stream socket (mode 0600) serving xvs-ctl requests.

use crate::state::State;
use anyhow::{bail, Context, Result};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use xvs_ctl::proto::{read_frame, write_frame, FrameError};
use xvs_ctl::{ErrorReply, Request, Response, MAX_REQUEST, PROTOCOL_VERSION};

/// Fails if `path` is taken: by a live daemon, or by anything that is not a
/// socket (xvsd replaces only a stale socket, never another kind of file).
pub fn check_free(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let what = if ft.is_symlink() {
            "a symbolic link"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "a file that is not a socket"
        };
        bail!(
            "{} is {what}; xvsd replaces only a stale socket there (remove it, or use --socket or XVS_SOCKET)",
            path.display()
        );
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another xvsd is already serving {} (use --socket or XVS_SOCKET for a second one)",
            path.display()
        );
    }
    Ok(())
}

/// Binds the control socket, reachable by root only from the moment it
/// exists at `path`.
///
/// `bind` creates the socket file with mode 0777 & ~umask, so a chmod after it
/// leaves a window with a permissive umask. The umask is process-wide (other
/// threads run by now and would create files under the changed mask), and
/// fchmod before bind is a Linux sockfs detail out of std's reach; so the socket
/// is bound in a fresh directory only its owner can enter (0700), made 0600
/// there, and renamed onto `path`. The rename also replaces a stale socket
/// atomically; anything else at `path` is refused ([`check_free`]).
pub fn bind(path: &Path) -> Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    }
    check_free(path)?;
    // Short names: a socket path has at most 107 bytes.
    let private = dir.join(format!(".xvsd-bind-{}", std::process::id()));
    let tmp = private.join("s");
    // A leftover of a run that died here with the same pid.
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("creating {}", private.display()))?;
    let bound = (|| -> Result<UnixListener> {
        let l = UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", tmp.display()))?;
        // Again, as late as possible: the path may have changed meanwhile.
        check_free(path)?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving the socket to {}", path.display()))?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    bound
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::unix::fs::MetadataExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xvsd-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The socket's name appears in the (world-searchable) directory only by
    /// the rename of a socket that is already 0600: never created there with
    /// the umask's mode and chmod-ed afterwards.
    #[test]
    fn the_socket_appears_at_its_path_already_0600() {
        let dir = temp_dir("mode");
        let path = dir.join("xvsd.sock");
        let ino = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        ino.add_watch(&dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            .unwrap();
        let _l = bind(&path).unwrap();
        let events = ino.read_events().unwrap();
        let at_path: Vec<_> = events
            .iter()
            .filter(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("xvsd.sock")))
            .map(|e| e.mask)
            .collect();
        assert_eq!(at_path, [AddWatchFlags::IN_MOVED_TO], "{events:?}");
        // What was created in the directory is the private one.
        for e in events
            .iter()
            .filter(|e| e.mask.contains(AddWatchFlags::IN_CREATE))
        {
            assert!(e.mask.contains(AddWatchFlags::IN_ISDIR), "{e:?}");
        }
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert!(UnixStream::connect(&path).is_ok());
        // Nothing left behind but the socket.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["xvsd.sock"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = temp_dir("stale");
        let path = dir.join("xvsd.sock");
        // A regular file, a directory, a symlink: refused, left as they are.
        std::fs::write(&path, b"precious").unwrap();
        let e = format!("{:#}", bind(&path).unwrap_err());
        assert!(e.contains("is a file that is not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = format!("{:#}", bind(&path).unwrap_err());
        assert!(e.contains("is a directory"), "{e}");
        std::fs::remove_dir(&path).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = format!("{:#}", bind(&path).unwrap_err());
        assert!(e.contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        std::fs::remove_file(&path).unwrap();
        // A live socket: refused.
        let live = bind(&path).unwrap();
        let e = format!("{:#}", bind(&path).unwrap_err());
        assert!(e.contains("another xvsd is already serving"), "{e}");
        // The socket of a dead daemon: replaced, and the new one answers.
        drop(live);
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        let _l = bind(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        // The private directory of a run that died mid-bind does not stop the next.
        drop(_l);
        let private = dir.join(format!(".xvsd-bind-{}", std::process::id()));
        std::fs::create_dir(&private).unwrap();
        let _ = UnixListener::bind(private.join("s")).unwrap();
        let _l = bind(&path).unwrap();
        assert!(!private.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
