//! The control socket: a Unix stream socket (mode 0600) serving xvs-ctl
//! requests, to a bounded number of clients, none of which can stall it.

use crate::clock;
use crate::state::{conn_info, State};
use anyhow::{bail, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_core::engine::listed_expiry;
use xvs_core::engine::Engine;
use xvs_core::time::tick_of;
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

/// Control connections served at once. Beyond it, the connection idle the
/// longest is closed to make room (a client between requests loses nothing it
/// asked for); if every one is in the middle of a request, the newcomer is
/// told so and closed. Idle connections cost nothing else, so any number of
/// them cannot keep `xvsadm` out.
pub const MAX_CLIENTS: usize = 64;
/// Once its first byte has arrived, a request must be complete within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Each frame of a reply must be written within this (a client that stops
/// reading is closed then).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per frame of a `-c` listing (about 200 bytes each in JSON): the
/// listing's memory on both sides, whatever the table holds.
const CONN_CHUNK: u32 = 1024;

/// Answers one request that has a single reply (all but [`Request::ListConns`]).
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
        // Streamed by `answer`, without the State lock.
        Request::ListConns => err("the connection listing is streamed".into(), None),
        Request::GetTimeouts => {
            let (a, b, c) = s.timeouts.listed();
            Response::Timeouts(a, b, c)
        }
        Request::GetDaemons => Response::Daemons(s.daemons.clone()),
        Request::GetLaddrs(k) => Response::Laddrs(s.list_laddrs(k.as_ref())),
        Request::GetMarks => Response::Marks(s.marks.clone()),
        Request::GetKnobs => Response::Knobs(xvs_ctl::knobs::list(&s.knobs)),
        Request::GetSyncStats => match &s.sync {
            Some(sync) => Response::SyncStats(sync.counters()),
            None => err("connection sync is not available".into(), None),
        },
        // Answered by `answer`, without the State lock (lock order: health, then State).
        Request::GetHealth(_) => err("the health listing is answered apart".into(), None),
    }
}

/// Writes the reply (or replies) to one request.
fn answer(
    state: &Mutex<State>,
    engine: &Engine,
    req: Request,
    w: &mut impl Write,
) -> Result<(), FrameError> {
    match req {
        Request::ListConns => stream_conns(engine, w),
        Request::GetHealth(k) => write_frame(
            w,
            &match crate::health::report(k.as_ref()) {
                Ok(v) => Response::Health(v),
                Err(message) => Response::Error(ErrorReply {
                    message,
                    index: None,
                }),
            },
        ),
        req => write_frame(w, &handle(state, req)),
    }
}

/// `-c`: every connection and template, read from the table a slice at a
/// time and sent as read. The table is lock-free, so neither housekeeping
/// (which takes the State lock) nor the workers wait for a listing, however
/// long it is; memory is one chunk.
pub fn stream_conns(engine: &Engine, w: &mut impl Write) -> Result<(), FrameError> {
    let mut cursor = 0;
    let mut conns = Vec::with_capacity(2 * CONN_CHUNK as usize);
    loop {
        let now = tick_of(clock::now());
        cursor = engine.conns.scan(cursor, CONN_CHUNK, |v, _| {
            let exp = listed_expiry(&engine.conns, &v, now);
            conns.extend(conn_info(&v, exp, now));
        });
        let more = cursor != 0;
        if conns.len() >= CONN_CHUNK as usize || !more {
            write_frame(w, &Response::Conns { conns, more })?;
            conns = Vec::with_capacity(2 * CONN_CHUNK as usize);
        }
        if !more {
            return Ok(());
        }
    }
}

/// A connection's place in the accept loop's books.
const IDLE: u8 = 0;
const BUSY: u8 = 1;
const CLOSED: u8 = 2;

/// One served connection, as the accept loop sees it.
struct Client {
    /// A handle on the connection, to close it from the accept loop.
    stream: UnixStream,
    /// IDLE between requests, BUSY from a request's first byte to its reply.
    state: AtomicU8,
    /// When it last became idle, as a sequence number (smaller: idle longer).
    idle_since: AtomicU64,
}

/// The connections being served.
#[derive(Default)]
struct Clients {
    list: Mutex<Vec<Arc<Client>>>,
    seq: AtomicU64,
}

impl Clients {
    /// Books a new connection, first closing the longest idle one if all
    /// places are taken; the error is what to tell the client.
    fn admit(&self, stream: &UnixStream) -> Result<Arc<Client>, String> {
        let busy =
            || format!("xvsd is busy answering {MAX_CLIENTS} control connections; try again");
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|c| c.state.load(Ordering::Acquire) != CLOSED);
        if list.len() >= MAX_CLIENTS {
            let victim = list
                .iter()
                .filter(|c| c.state.load(Ordering::Acquire) == IDLE)
                .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
                .cloned()
                .ok_or_else(busy)?;
            // Fails if it has just started a request: then refuse, not wait.
            victim
                .state
                .compare_exchange(IDLE, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .map_err(|_| busy())?;
            let _ = victim.stream.shutdown(Shutdown::Both);
            list.retain(|c| !Arc::ptr_eq(c, &victim));
            tracing::debug!("closed the longest idle control connection to make room");
        }
        let handle = stream
            .try_clone()
            .map_err(|e| format!("xvsd cannot serve another connection: {e}"))?;
        let c = Arc::new(Client {
            stream: handle,
            state: AtomicU8::new(IDLE),
            idle_since: AtomicU64::new(self.seq.fetch_add(1, Ordering::Relaxed)),
        });
        list.push(c.clone());
        Ok(c)
    }
}

/// Tells a connection it cannot be served, and closes it. The client finds the
/// reply even if its own request then fails to send.
fn refuse(mut stream: UnixStream, message: String) {
    tracing::warn!("control connection refused: {message}");
    // A fresh connection's buffer has room for this: never wait on it.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = write_frame(
        &mut stream,
        &Response::Error(ErrorReply {
            message,
            index: None,
        }),
    );
}

/// Reads from a stream until a deadline (the stream's own timeout is per call).
struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        match s.read(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(ErrorKind::TimedOut.into()),
            r => r,
        }
    }
}

/// Writes a reply's frames, each within [`WRITE_TIMEOUT`]. The socket's own
/// timeout applies to one call and restarts whenever a byte goes through, so
/// a reader taking a little now and then could hold the thread for ever.
struct FrameWriter<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl<'a> FrameWriter<'a> {
    fn new(stream: &'a UnixStream) -> Self {
        FrameWriter {
            stream,
            deadline: Instant::now() + WRITE_TIMEOUT,
        }
    }
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_write_timeout(Some(left))?;
        let mut s = self.stream;
        match s.write(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(ErrorKind::TimedOut.into()),
            r => r,
        }
    }

    /// A frame ends with a flush ([`write_frame`]): the next has its own time.
    fn flush(&mut self) -> std::io::Result<()> {
        self.deadline = Instant::now() + WRITE_TIMEOUT;
        Ok(())
    }
}

fn serve_conn(
    state: &Mutex<State>,
    engine: &Engine,
    clients: &Clients,
    me: &Client,
    mut stream: UnixStream,
) {
    loop {
        // Idle: a client may take its time to ask (the accept loop closes it
        // if the place is needed).
        let _ = stream.set_read_timeout(None);
        let mut first = [0u8; 1];
        match stream.read(&mut first) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if me
            .state
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // closed to make room
        }
        let mut body = first.chain(Deadline {
            stream: &stream,
            deadline: Instant::now() + REQUEST_TIMEOUT,
        });
        let req: Request = match read_frame(&mut body, MAX_REQUEST) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(FrameError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => return,
            Err(FrameError::Io(e)) if e.kind() == ErrorKind::TimedOut => {
                tracing::warn!(
                    "control client sent an incomplete request for {}s: closed",
                    REQUEST_TIMEOUT.as_secs()
                );
                return;
            }
            Err(e) => {
                // Malformed or oversized: say so and hang up.
                tracing::warn!("control client sent a bad request: {e}");
                let _ = write_frame(
                    &mut FrameWriter::new(&stream),
                    &Response::Error(ErrorReply {
                        message: format!("bad request: {e}"),
                        index: None,
                    }),
                );
                return;
            }
        };
        if let Err(e) = answer(state, engine, req, &mut FrameWriter::new(&stream)) {
            tracing::debug!("control client gone or stalled while answered: {e}");
            return;
        }
        me.idle_since.store(
            clients.seq.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if me
            .state
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
    }
}

/// Serves the socket until the process ends: a thread per connection, at most
/// [`MAX_CLIENTS`] of them (xvsd serves through [`start`], which also keeps
/// the socket bound).
#[cfg(test)]
pub fn serve(listener: UnixListener, state: Arc<Mutex<State>>) {
    serve_until(listener, state, &AtomicBool::new(false));
}

/// [`serve`] until `retired` is set and the listener shut down ([`retire`]).
fn serve_until(listener: UnixListener, state: Arc<Mutex<State>>, retired: &AtomicBool) {
    let engine = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .engine
        .clone();
    let clients = Arc::new(Clients::default());
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(_) if retired.load(Ordering::Acquire) => return,
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let me = match clients.admit(&stream) {
            Ok(me) => me,
            Err(why) => {
                refuse(stream, why);
                continue;
            }
        };
        let (st, e, cl, me2) = (state.clone(), engine.clone(), clients.clone(), me.clone());
        let spawned = std::thread::Builder::new()
            .name("xvsd-ctl".into())
            .spawn(move || {
                serve_conn(&st, &e, &cl, &me2, stream);
                me2.state.store(CLOSED, Ordering::Release);
                // The books hold a handle too: close the connection itself.
                let _ = me2.stream.shutdown(Shutdown::Both);
            });
        if let Err(e) = spawned {
            me.state.store(CLOSED, Ordering::Release);
            let _ = me.stream.shutdown(Shutdown::Both);
            tracing::warn!("control connection dropped: cannot start its thread: {e}");
        }
    }
}

/// How often [`start`]'s watcher checks that the socket is still at its path.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A listener being served, and how to stop serving it.
struct Serving {
    listener: UnixListener,
    retired: Arc<AtomicBool>,
}

fn spawn_serve(listener: UnixListener, state: Arc<Mutex<State>>) -> Result<Serving> {
    let retired = Arc::new(AtomicBool::new(false));
    let s = Serving {
        listener: listener
            .try_clone()
            .context("cloning the control listener")?,
        retired: retired.clone(),
    };
    std::thread::Builder::new()
        .name("xvsd-control".into())
        .spawn(move || serve_until(listener, state, &retired))
        .context("starting the control thread")?;
    Ok(s)
}

/// Stops the thread serving a listener nobody can reach any more: shutdown
/// makes its blocked accept() fail, and the flag tells it that is the end.
fn retire(s: Serving) {
    s.retired.store(true, Ordering::Release);
    let _ = nix::sys::socket::shutdown(s.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// The file at `path` (device, inode), if any.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Serves `listener` (bound at `path` by [`bind`]) and keeps the socket
/// reachable: if the socket file or its directory is removed while xvsd runs
/// (a cleanup of /run, a package script), xvsd binds it again at the same path
/// and says so, rather than run on unreachable by xvsadm. Anything else found
/// at the path (another daemon's socket, a file) is left alone and logged.
pub fn start(path: PathBuf, listener: UnixListener, state: Arc<Mutex<State>>) -> Result<()> {
    let mut id = file_id(&path);
    let mut serving = spawn_serve(listener, state.clone())?;
    std::thread::Builder::new()
        .name("xvsd-ctl-watch".into())
        .spawn(move || {
            // Said once per episode, not every second.
            let mut told = false;
            loop {
                std::thread::sleep(WATCH_EVERY);
                match file_id(&path) {
                    now if now == id => told = false,
                    Some(_) => {
                        if !told {
                            tracing::warn!(
                                "{} is no longer this xvsd's control socket (another file is there now); left alone: xvsadm reaches this xvsd only through --socket at another path after a restart",
                                path.display()
                            );
                            told = true;
                        }
                    }
                    None => match bind(&path).and_then(|l| spawn_serve(l, state.clone())) {
                        Ok(s) => {
                            tracing::warn!(
                                "control socket {} was removed while xvsd ran: bound it again",
                                path.display()
                            );
                            retire(std::mem::replace(&mut serving, s));
                            id = file_id(&path);
                            told = false;
                        }
                        Err(e) => {
                            if !told {
                                tracing::error!(
                                    "control socket {} was removed and cannot be bound again (retrying every second): {e:#}",
                                    path.display()
                                );
                                told = true;
                            }
                        }
                    },
                }
            }
        })
        .context("starting the control socket watcher")?;
    Ok(())
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

    /// The xvsadm binary of this build (another package: built on first use,
    /// a no-op when up to date).
    fn xvsadm_bin() -> PathBuf {
        static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        BUILT
            .get_or_init(|| {
                let exe = std::env::current_exe().unwrap();
                // target/<profile>/deps/xvsd-… → target/<profile>/xvsadm
                let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
                let mut cmd = std::process::Command::new(env!("CARGO"));
                cmd.args(["build", "-q", "-p", "xvsadm"]);
                if dir.file_name().is_some_and(|n| n == "release") {
                    cmd.arg("--release");
                }
                let st = cmd
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .unwrap();
                assert!(st.success(), "cargo build -p xvsadm failed");
                dir.join("xvsadm")
            })
            .clone()
    }

    /// A field of /proc/PID/status in kB (`self` for this process).
    fn status_kb(pid: &str, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// `xvsadm -L -n -c` over a million connections: it completes, prints
    /// every row in ipvsadm's format, and neither side's memory grows with the
    /// table (each holds one chunk); housekeeping (which takes the State lock)
    /// and lookups go on meanwhile. The old listing built every row under the
    /// State lock and sent one reply, over the client's 16 MiB frame limit.
    #[test]
    fn a_million_connections_are_listed_in_flat_memory_while_work_goes_on() {
        use std::sync::atomic::AtomicBool;
        use xvs_core::addr::Addr;
        use xvs_core::conn::{ConnKey, EntryFlags, EntryState, NewConn, TcpState, TemplateRef};
        use xvs_core::engine::{Knobs, Limits, StaticFib};
        use xvs_core::service::FwdMethod;

        const N: u32 = 1_000_000;
        let xvsadm = xvsadm_bin();
        let engine = Engine::new(
            Limits {
                conn_max: 1 << 20,
                ..Limits::default()
            },
            Arc::new(StaticFib::new()),
            [5, 6, 7, 8],
        );
        let state = Arc::new(Mutex::new(State::new(
            engine.clone(),
            Knobs::default(),
            Vec::new(),
        )));
        let key = |i: u32| ConnKey {
            proto: 6,
            saddr: Addr::v4([10, 77, 2 + (i >> 16) as u8, (i >> 8) as u8]),
            sport: 1024 + (i & 0xff) as u16,
            daddr: Addr::v4([10, 77, 0, 100]),
            dport: 80,
        };
        let expires = tick_of(clock::now()) + 900 * 100;
        for i in 0..N {
            let k = key(i);
            engine
                .conns
                .insert(&NewConn {
                    proto: 6,
                    caddr: k.saddr,
                    cport: k.sport,
                    vaddr: k.daddr,
                    vport: 80,
                    daddr: Addr::v4([10, 77, 1, 11 + (i % 8) as u8]),
                    dport: 8080,
                    lip: 0,
                    lport: 0,
                    fwd: FwdMethod::Route,
                    svc_id: 0,
                    dest_id: 0,
                    control: TemplateRef::NONE,
                    state: EntryState::Conn(TcpState::Established),
                    in_pkts: 0,
                    flags: EntryFlags::NONE,
                    expires,
                    timeout: 900,
                })
                .unwrap();
        }
        let dir = temp_dir("million");
        let path = dir.join("xvsd.sock");
        let listener = bind(&path).unwrap();
        {
            let st = state.clone();
            std::thread::spawn(move || serve(listener, st));
        }

        // Housekeeping takes the State lock as xvsd's thread does; a "worker"
        // looks connections up.
        let stop = Arc::new(AtomicBool::new(false));
        let housekeeping = {
            let (st, e, stop) = (state.clone(), engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let now = st.lock().unwrap().now();
                    worst = worst.max(t0.elapsed());
                    e.housekeep(now, 100_000);
                    std::thread::sleep(Duration::from_millis(10));
                }
                worst
            })
        };
        let worker = {
            let (e, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut found = 0u64;
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        i = (i + 7919) % N;
                        found += e.conns.lookup(&key(i), tick_of(clock::now())).is_some() as u64;
                    }
                    // A share of a core: the listing's two sides need the rest.
                    std::thread::sleep(Duration::from_millis(1));
                }
                found
            })
        };

        let hwm_before = status_kb("self", "VmHWM:");
        let t0 = Instant::now();
        let mut child = std::process::Command::new(&xvsadm)
            .args(["--socket", path.to_str().unwrap(), "-L", "-n", "-c"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let mut out = child.stdout.take().unwrap();
        let (mut lines, mut first_rows, mut buf) = (0u64, String::new(), vec![0u8; 1 << 16]);
        let mut client_hwm = 0;
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            if first_rows.len() < 4096 {
                first_rows.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            client_hwm = client_hwm.max(status_kb(&pid, "VmHWM:"));
        }
        let st = child.wait_with_output().unwrap();
        let took = t0.elapsed();
        let hwm_after = status_kb("self", "VmHWM:");
        stop.store(true, Ordering::Relaxed);
        let worst_lock_wait = housekeeping.join().unwrap();
        let found = worker.join().unwrap();
        eprintln!(
            "1M listing: {took:?}; xvsd side VmHWM {hwm_before} -> {hwm_after} kB; \
             xvsadm VmHWM {client_hwm} kB; worst State lock wait {worst_lock_wait:?}; \
             {found} lookups found meanwhile"
        );

        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert_eq!(lines, N as u64 + 2);
        let mut rows = first_rows.lines();
        assert_eq!(rows.next(), Some("IPVS connection entries"));
        assert_eq!(
            rows.next(),
            Some("pro expire state       source             virtual            destination")
        );
        // (The time left depends on how long the test took.)
        let row = rows.next().unwrap();
        assert_eq!(&row[..4], "TCP ", "{row}");
        assert!(row[4..9] <= *"15:00" && row.as_bytes()[6] == b':', "{row}");
        assert_eq!(
            &row[9..],
            "  ESTABLISHED 10.77.2.0:1024     10.77.0.100:80     10.77.1.11:8080"
        );
        // Memory: one chunk on each side, not the table (~170 MB of JSON).
        assert!(
            hwm_after.saturating_sub(hwm_before) < 48 * 1024,
            "xvsd side grew {hwm_before} -> {hwm_after} kB"
        );
        assert!(
            client_hwm > 0 && client_hwm < 48 * 1024,
            "xvsadm {client_hwm} kB"
        );
        // A reader that stops early (`| head`) ends the listing on both sides.
        let t0 = Instant::now();
        let mut child = std::process::Command::new(&xvsadm)
            .args(["--socket", path.to_str().unwrap(), "-L", "-n", "-c"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        out.read_exact(&mut buf[..4096]).unwrap();
        drop(out);
        assert!(child.wait().unwrap().success());
        assert!(t0.elapsed() < took / 2, "{:?}", t0.elapsed());
        // Work went on: the lock was never held for the listing.
        assert!(
            worst_lock_wait < Duration::from_millis(200),
            "{worst_lock_wait:?}"
        );
        assert!(found > 0);
    }

    /// A client that asks for the connection listing and then reads nothing
    /// holds its thread only until a write has made no progress for
    /// WRITE_TIMEOUT; then xvsd closes the connection.
    #[test]
    fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
        use xvs_core::addr::Addr;
        use xvs_core::conn::{EntryFlags, EntryState, NewConn, TcpState, TemplateRef};
        use xvs_core::engine::{Knobs, Limits, StaticFib};
        use xvs_core::service::FwdMethod;

        let engine = Engine::new(
            Limits {
                conn_max: 1 << 16,
                ..Limits::default()
            },
            Arc::new(StaticFib::new()),
            [1, 2, 3, 4],
        );
        let expires = tick_of(clock::now()) + 900 * 100;
        // About 2 MB of listing: more than the socket buffers hold.
        for i in 0..20_000u32 {
            engine
                .conns
                .insert(&NewConn {
                    proto: 6,
                    caddr: Addr::v4([10, 77, 2, (i >> 8) as u8]),
                    cport: i as u16,
                    vaddr: Addr::v4([10, 77, 0, 100]),
                    vport: 80,
                    daddr: Addr::v4([10, 77, 1, 11]),
                    dport: 80,
                    lip: 0,
                    lport: 0,
                    fwd: FwdMethod::Route,
                    svc_id: 0,
                    dest_id: 0,
                    control: TemplateRef::NONE,
                    state: EntryState::Conn(TcpState::Established),
                    in_pkts: 0,
                    flags: EntryFlags::NONE,
                    expires,
                    timeout: 900,
                })
                .unwrap();
        }
        let state = Arc::new(Mutex::new(State::new(engine, Knobs::default(), Vec::new())));
        let dir = temp_dir("stall");
        let path = dir.join("xvsd.sock");
        let listener = bind(&path).unwrap();
        {
            let st = state.clone();
            std::thread::spawn(move || serve(listener, st));
        }
        let mut c = UnixStream::connect(&path).unwrap();
        write_frame(&mut c, &Request::ListConns).unwrap();
        std::thread::sleep(WRITE_TIMEOUT + Duration::from_secs(2));
        // Meanwhile others are served.
        let mut other = UnixStream::connect(&path).unwrap();
        write_frame(&mut other, &Request::GetTimeouts).unwrap();
        let r: Option<Response> = read_frame(&mut other, 1 << 20).unwrap();
        assert_eq!(r, Some(Response::Timeouts(900, 120, 300)));
        // What was buffered arrives, then the end: no final chunk.
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("closed by xvsd");
        assert!(got.len() > 100_000, "{} bytes", got.len());
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("\"more\":false"));
    }

    /// A fresh temporary directory, removed on drop (also when a test fails).
    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("xvsd-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The socket's name appears in the (world-searchable) directory only by
    /// the rename of a socket that is already 0600: never created there with
    /// the umask's mode and chmod-ed afterwards.
    #[test]
    fn the_socket_appears_at_its_path_already_0600() {
        let dir = temp_dir("mode");
        let path = dir.join("xvsd.sock");
        let ino = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        ino.add_watch(&*dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
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
        let names: Vec<_> = std::fs::read_dir(&*dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["xvsd.sock"]);
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
    }
}
