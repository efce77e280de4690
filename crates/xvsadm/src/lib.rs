//! `xvsadm`, a drop-in for ipvsadm 1.31 that manages xvsd over its control
//! socket: command-line handling ([`run`]) and ipvsadm's output formats
//! ([`format`]).
//!
//! The grammar (popt rules, legality table, messages, exit codes) is
//! `xvs_ctl::cmdline`, shared with `xvsd --rules`. Exit codes are ipvsadm's:
//! 0 success, 2 a refused command line, 255 an operation xvsd refused (the
//! kernel-op errors of ipvsadm) or a popt error, 1 a failed listing. Without a
//! reachable xvsd, one line on stderr and exit 2 (ipvsadm's "Can't initialize
//! ipvs" status).
//!
//! Deviations from ipvsadm, on purpose:
//! - `--socket PATH` (anywhere on the line) picks the control socket; else
//!   `XVS_SOCKET`, else `/run/xvs/xvsd.sock`.
//! - `-R` parses the whole input first, then applies it as one atomic batch:
//!   a bad line is reported as `<prog>: line N: <ipvsadm's message>` and
//!   nothing of the input is applied (ipvsadm applies line by line and stops
//!   at the first parse error). Listing commands (`-L`, `-S`, `-G`, `-h`, `-v`)
//!   are refused in `-R` input for the same reason.
//! - `-S` also saves FULLNAT local addresses as `-P <service> -z <laddr>`
//!   lines, so `-S | -C; -R` restores them too.
//! - `-L [service] --health` (anywhere on the line) lists the health checks
//!   xvsd runs from `--keepalived-conf` ([`health`]).
//! - `-L --daemon --stats` prints ipvsadm's daemon lines, then the sync
//!   counters (sent, received, dropped by reason) and knobs
//!   ([`format::sync_stats`]); ipvsadm ignores `--stats` there.
//! - `--sync-knob NAME=VALUE ...` sets connection-sync knobs at run time
//!   (the kernel's `net.ipv4.vs.sync_*` sysctls, and xvs's own).
//! - `--knob NAME=VALUE ...` sets the DoS and behaviour knobs at run time
//!   (the kernel's other `net.ipv4.vs.*` sysctls: drop_entry, drop_packet,
//!   secure_tcp, amemthresh, am_droprate, expire_nodest_conn,
//!   expire_quiescent_template, conn_reuse_mode, sloppy_tcp; see
//!   [`xvs_ctl::knobs`]), all or nothing; `-L --knobs` lists them
//!   ([`format::knobs`]).

#![forbid(unsafe_code)]

pub mod format;
pub mod health;
pub mod sort;

use format::{Names, NoNames, SystemNames};
use std::io::{Read, Write};
use std::path::PathBuf;
use xvs_core::service::ServiceKey;
use xvs_ctl::cmdline::{self, fmt, Command, ListWhat};
use xvs_ctl::{Client, ClientError, Request, Response, PROTOCOL_VERSION};

/// Exit status of ipvsadm's kernel-op errors (`return -1` from main).
const EXIT_OP: i32 = 255;
/// Exit status of failed listings.
const EXIT_LIST: i32 = 1;
/// Exit status when xvsd cannot be reached (ipvsadm's `fail(2, "Can't initialize ipvs...")`).
const EXIT_NO_DAEMON: i32 = 2;

/// What a run prints and returns.
struct Io<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// Prefix of xvsadm's own messages (basename of argv\[0\]).
    me: String,
    /// The reader of `out` has gone (a closed pipe).
    out_closed: bool,
}

impl Io<'_> {
    fn fail(&mut self, msg: &str, code: i32) -> i32 {
        let _ = writeln!(self.err, "{msg}");
        code
    }

    fn print(&mut self, text: &str) -> i32 {
        match self
            .out
            .write_all(text.as_bytes())
            .and_then(|_| self.out.flush())
        {
            Ok(()) => 0,
            // A closed pipe (`xvsadm -L | head`) is not worth a message.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.out_closed = true;
                0
            }
            Err(e) => {
                let me = self.me.clone();
                self.fail(&format!("{me}: writing output: {e}"), EXIT_LIST)
            }
        }
    }
}

/// Takes `--socket PATH` / `--socket=PATH` out of the arguments.
fn take_socket(args: &[String]) -> Result<(Option<PathBuf>, Vec<String>), String> {
    let mut rest = Vec::with_capacity(args.len());
    let mut socket = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a.clone());
            rest.extend(it.cloned());
            break;
        }
        if a == "--socket" {
            match it.next() {
                Some(p) => socket = Some(PathBuf::from(p)),
                None => return Err("--socket: missing argument".into()),
            }
        } else if let Some(p) = a.strip_prefix("--socket=") {
            socket = Some(PathBuf::from(p));
        } else {
            rest.push(a.clone());
        }
    }
    Ok((socket, rest))
}

/// An io::Error as strerror() would say it (without Rust's "(os error N)").
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn connect(socket: &std::path::Path, io: &mut Io) -> Result<Client, i32> {
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(ClientError::Connect { path, source }) => {
            let me = io.me.clone();
            return Err(io.fail(
                &format!(
                    "{me}: cannot connect to xvsd at {path}: {} (is xvsd running?)",
                    strerror(&source)
                ),
                EXIT_NO_DAEMON,
            ));
        }
        Err(e) => {
            let me = io.me.clone();
            return Err(io.fail(&format!("{me}: {e}"), EXIT_NO_DAEMON));
        }
    };
    match c.call(&Request::Hello {
        version: PROTOCOL_VERSION,
    }) {
        Ok(Response::Hello { .. }) => Ok(c),
        Ok(Response::Error(e)) => {
            let me = io.me.clone();
            Err(io.fail(&format!("{me}: xvsd: {}", e.message), EXIT_NO_DAEMON))
        }
        Ok(other) => {
            let me = io.me.clone();
            Err(io.fail(
                &format!("{me}: unexpected reply from xvsd: {other:?}"),
                EXIT_NO_DAEMON,
            ))
        }
        Err(e) => {
            let me = io.me.clone();
            Err(io.fail(&format!("{me}: {e}"), EXIT_NO_DAEMON))
        }
    }
}

/// One request; a transport failure is reported and becomes `Err(exit)`.
fn call(c: &mut Client, req: &Request, io: &mut Io, code: i32) -> Result<Response, i32> {
    c.call(req).map_err(|e| {
        let me = io.me.clone();
        io.fail(&format!("{me}: {e}"), code)
    })
}

fn unexpected(io: &mut Io, r: &Response, code: i32) -> i32 {
    let me = io.me.clone();
    io.fail(&format!("{me}: unexpected reply from xvsd: {r:?}"), code)
}

/// The command line as the program it was invoked as would see it. Called
/// as `NAME-save` or `NAME-restore` (`xvsadm-save`, or `ipvsadm-save` through
/// the alternative), it does what ipvsadm's scripts of those names do, `NAME
/// -S`/`NAME -R` with the arguments given, and speaks as `NAME`; any other
/// name (`ipvsadm` included) is kept as it is, as ipvsadm prints its argv[0].
pub fn as_invoked(args: &[String]) -> Vec<String> {
    let Some(first) = args.first() else {
        return args.to_vec();
    };
    let base = std::path::Path::new(first)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (name, cmd) = match (base.strip_suffix("-save"), base.strip_suffix("-restore")) {
        (Some(n), _) => (n, "-S"),
        (_, Some(n)) => (n, "-R"),
        _ => return args.to_vec(),
    };
    let mut v = vec![name.to_string(), cmd.to_string()];
    v.extend(args[1..].iter().cloned());
    v
}

/// Runs one xvsadm invocation (`args[0]` is the program name) and returns
/// its exit status.
pub fn run(args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let args = &as_invoked(args);
    let prog = args.first().cloned().unwrap_or_else(|| "xvsadm".into());
    let me = std::path::Path::new(&prog)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "xvsadm".into());
    let mut io = Io {
        out,
        err,
        me,
        out_closed: false,
    };
    let (socket, argv) = match take_socket(args) {
        Ok(x) => x,
        Err(e) => {
            let me = io.me.clone();
            return io.fail(&format!("{me}: {e}"), 2);
        }
    };
    let socket = socket.unwrap_or_else(xvs_ctl::default_socket_path);
    // `--sync-knob` is xvs's: the sysctls of the kernel's sync, as a command.
    if argv.get(1).is_some_and(|a| a == "--sync-knob") {
        return sync_knobs(&socket, &argv[2..], &mut io);
    }
    // So is `--knob`: the kernel's other net.ipv4.vs sysctls.
    if argv.get(1).is_some_and(|a| a == "--knob") {
        return set_knobs(&socket, &argv[2..], &mut io);
    }
    // And `-L --knobs`, their listing.
    if argv.iter().skip(1).any(|a| a == "--knobs") {
        return list_knobs(&socket, &argv, &mut io);
    }
    // `--health` is xvs's: taken out before ipvsadm's grammar sees the line.
    let with_health = argv.iter().skip(1).any(|a| a == "--health");
    let argv: Vec<String> = argv.into_iter().filter(|a| a != "--health").collect();
    // So is `--stats` with `--daemon` (ipvsadm refuses the pair).
    let sync_stats = argv.iter().any(|a| a == "--daemon") && argv.iter().any(|a| a == "--stats");
    let argv: Vec<String> = if sync_stats {
        argv.into_iter().filter(|a| a != "--stats").collect()
    } else {
        argv
    };
    let cmd = match cmdline::parse(&argv) {
        Ok(Command::List {
            what: ListWhat::Daemon,
            format,
        }) if sync_stats => Command::List {
            what: ListWhat::Daemon,
            format: format | fmt::STATS,
        },
        Ok(c) => c,
        Err(e) => return io.fail(&e.message, e.exit),
    };
    let cmd = match (with_health, cmd) {
        (false, cmd) => cmd,
        (
            true,
            Command::List {
                what: what @ (ListWhat::All | ListWhat::Service(_)),
                format,
            },
        ) => {
            let key = match what {
                ListWhat::Service(k) => Some(k),
                _ => None,
            };
            let mut c = match connect(&socket, &mut io) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let names: &dyn Names = if format & fmt::NUMERIC != 0 {
                &NoNames
            } else {
                &SystemNames
            };
            return match call(&mut c, &Request::GetHealth(key), &mut io, EXIT_LIST) {
                Ok(Response::Health(v)) => io.print(&health::list(&v, format, names)),
                Ok(Response::Error(e)) => io.fail(&e.message, EXIT_LIST),
                Ok(r) => unexpected(&mut io, &r, EXIT_LIST),
                Err(code) => code,
            };
        }
        (true, _) => {
            return io.fail(
                "--health goes with -L (and optionally a virtual service) only",
                2,
            )
        }
    };
    match cmd {
        Command::Help => io.print(&cmdline::usage(&prog)),
        Command::Version => io.print(&format!("{}\n", cmdline::VERSION_LINE)),
        cmd => {
            let mut c = match connect(&socket, &mut io) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match execute(&mut c, cmd, &prog, stdin, &mut io) {
                Ok(code) | Err(code) => code,
            }
        }
    }
}

/// `--sync-knob NAME=VALUE ...`: all or nothing.
fn sync_knobs(socket: &std::path::Path, args: &[String], io: &mut Io) -> i32 {
    let me = io.me.clone();
    if args.is_empty() {
        return io.fail(&format!("{me}: --sync-knob needs NAME=VALUE"), 2);
    }
    let mut ops = Vec::new();
    for a in args {
        let Some((n, v)) = a.split_once('=') else {
            return io.fail(&format!("{me}: --sync-knob: `{a}' is not NAME=VALUE"), 2);
        };
        let Some(v) = knob_value(v).and_then(|v| u64::try_from(v).ok()) else {
            return io.fail(&format!("{me}: --sync-knob: bad value `{v}'"), 2);
        };
        ops.push(xvs_ctl::Op::SetSyncKnob(n.to_string(), v));
    }
    send_batch(socket, ops, io)
}

/// Sends `ops` as one batch (all or nothing) and reports how it went.
fn send_batch(socket: &std::path::Path, ops: Vec<xvs_ctl::Op>, io: &mut Io) -> i32 {
    let mut c = match connect(socket, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match call(&mut c, &Request::Batch(ops), io, EXIT_OP) {
        Ok(Response::Ok) => 0,
        Ok(Response::Error(e)) => io.fail(&e.message, EXIT_OP),
        Ok(r) => unexpected(io, &r, EXIT_OP),
        Err(code) => code,
    }
}

/// A knob's value as written: an integer, or on/off words.
fn knob_value(v: &str) -> Option<i64> {
    match v {
        "true" | "yes" | "on" => Some(1),
        "false" | "no" | "off" => Some(0),
        v => v.parse().ok(),
    }
}

/// `--knob NAME=VALUE ...`: checked here, then sent as one batch (all or
/// nothing; xvsd checks again).
fn set_knobs(socket: &std::path::Path, args: &[String], io: &mut Io) -> i32 {
    let me = io.me.clone();
    if args.is_empty() {
        return io.fail(
            &format!(
                "{me}: --knob needs NAME=VALUE (NAME one of {})",
                xvs_ctl::knobs::NAMES.join(", ")
            ),
            2,
        );
    }
    let mut ops = Vec::new();
    for a in args {
        let Some((n, v)) = a.split_once('=') else {
            return io.fail(&format!("{me}: --knob: `{a}' is not NAME=VALUE"), 2);
        };
        let Some(v) = knob_value(v.trim()) else {
            return io.fail(&format!("{me}: --knob: bad value `{v}' for {n}"), 2);
        };
        let n = xvs_ctl::knobs::name(n.trim());
        if let Err(e) = xvs_ctl::knobs::check(n, v) {
            return io.fail(&format!("{me}: --knob {a}: {e}"), 2);
        }
        ops.push(xvs_ctl::Op::SetKnob(n.to_string(), v));
    }
    send_batch(socket, ops, io)
}

/// `-L --knobs` (`-n` allowed, it changes nothing): one `NAME VALUE` line
/// per knob.
fn list_knobs(socket: &std::path::Path, argv: &[String], io: &mut Io) -> i32 {
    let rest: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| *a != "--knobs")
        .collect();
    let listing = rest.iter().any(|a| matches!(*a, "-L" | "-l" | "--list"));
    if !listing
        || rest
            .iter()
            .any(|a| !matches!(*a, "-L" | "-l" | "--list" | "-n" | "--numeric"))
    {
        return io.fail("--knobs goes with -L (and -n) only", 2);
    }
    let mut c = match connect(socket, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match call(&mut c, &Request::GetKnobs, io, EXIT_LIST) {
        Ok(Response::Knobs(k)) => io.print(&format::knobs(&k)),
        Ok(Response::Error(e)) => io.fail(&e.message, EXIT_LIST),
        Ok(r) => unexpected(io, &r, EXIT_LIST),
        Err(code) => code,
    }
}

fn execute(
    c: &mut Client,
    cmd: Command,
    prog: &str,
    stdin: &mut dyn Read,
    io: &mut Io,
) -> Result<i32, i32> {
    let names = |format: u32| -> &'static dyn Names {
        if format & fmt::NUMERIC != 0 {
            &NoNames
        } else {
            &SystemNames
        }
    };
    match cmd {
        Command::List {
            what: ListWhat::Conns,
            format,
        } => list_conns(c, format, names(format), io),
        Command::List { what, format } => {
            let req = match &what {
                ListWhat::All => Request::ListServices(None),
                ListWhat::Service(k) => Request::ListServices(Some(*k)),
                ListWhat::Conns => Request::ListConns,
                ListWhat::Timeout => Request::GetTimeouts,
                ListWhat::Daemon => Request::GetDaemons,
            };
            let text = match (what, call(c, &req, io, EXIT_LIST)?) {
                (_, Response::Error(e)) => return Err(io.fail(&e.message, EXIT_LIST)),
                (
                    ListWhat::All,
                    Response::Services {
                        conn_tab_size,
                        services,
                    },
                ) => format::list_all(
                    conn_tab_size,
                    &services,
                    &|_| Vec::new(),
                    format,
                    names(format),
                ),
                (ListWhat::Service(_), Response::Services { services, .. }) => {
                    match services.first() {
                        Some(s) => format::list_service(s, format, names(format)),
                        None => return Err(io.fail("No such service", EXIT_LIST)),
                    }
                }
                (ListWhat::Timeout, Response::Timeouts(a, b, c)) => format::timeouts(a, b, c),
                (ListWhat::Daemon, Response::Daemons(d)) if format & fmt::STATS != 0 => {
                    let mut text = format::daemons(&d);
                    match call(c, &Request::GetSyncStats, io, EXIT_LIST)? {
                        Response::SyncStats(s) => text.push_str(&format::sync_stats(&s)),
                        Response::Error(e) => return Err(io.fail(&e.message, EXIT_LIST)),
                        r => return Err(unexpected(io, &r, EXIT_LIST)),
                    }
                    text
                }
                (ListWhat::Daemon, Response::Daemons(d)) => format::daemons(&d),
                (_, r) => return Err(unexpected(io, &r, EXIT_LIST)),
            };
            Ok(io.print(&text))
        }
        Command::Save { format } => {
            let services = match call(c, &Request::ListServices(None), io, EXIT_LIST)? {
                Response::Services { services, .. } => services,
                Response::Error(e) => return Err(io.fail(&e.message, EXIT_LIST)),
                r => return Err(unexpected(io, &r, EXIT_LIST)),
            };
            let pools = match call(c, &Request::GetLaddrs(None), io, EXIT_LIST)? {
                Response::Laddrs(p) => p,
                Response::Error(e) => return Err(io.fail(&e.message, EXIT_LIST)),
                r => return Err(unexpected(io, &r, EXIT_LIST)),
            };
            let laddrs = |k: &ServiceKey| {
                pools
                    .iter()
                    .filter(|(pk, _)| pk == k)
                    .flat_map(|(_, l)| l.iter().copied())
                    .collect()
            };
            let marks = match call(c, &Request::GetMarks, io, EXIT_LIST)? {
                Response::Marks(m) => m,
                Response::Error(e) => return Err(io.fail(&e.message, EXIT_LIST)),
                r => return Err(unexpected(io, &r, EXIT_LIST)),
            };
            // Mark rules first (xvs extension), so that -R restores them
            // with the fwmark services that use them.
            let mut text: String = marks.iter().map(|m| format!("--add-mark {m}\n")).collect();
            text.push_str(&format::list_all(
                0,
                &services,
                &laddrs,
                format,
                names(format),
            ));
            Ok(io.print(&text))
        }
        Command::ListMarks => match call(c, &Request::GetMarks, io, EXIT_LIST)? {
            Response::Marks(m) => {
                Ok(io.print(&m.iter().map(|m| format!("{m}\n")).collect::<String>()))
            }
            Response::Error(e) => Err(io.fail(&e.message, EXIT_LIST)),
            r => Err(unexpected(io, &r, EXIT_LIST)),
        },
        Command::GetLaddr(k) => {
            if let Some(k) = k {
                match call(c, &Request::ListServices(Some(k)), io, EXIT_LIST)? {
                    Response::Services { services, .. } if !services.is_empty() => {}
                    Response::Error(e) => return Err(io.fail(&e.message, EXIT_LIST)),
                    _ => return Err(io.fail("No such service", EXIT_LIST)),
                }
            }
            let mut pools = match call(c, &Request::GetLaddrs(k), io, EXIT_LIST)? {
                Response::Laddrs(p) => p,
                Response::Error(e) => return Err(io.fail(&e.message, EXIT_LIST)),
                r => return Err(unexpected(io, &r, EXIT_LIST)),
            };
            if let (Some(k), true) = (k, pools.is_empty()) {
                pools.push((k, Vec::new()));
            }
            Ok(io.print(&format::laddrs(&pools)))
        }
        Command::Restore => restore(c, prog, stdin, io),
        cmd => {
            let Some(op) = cmd.to_op() else {
                return Err(unexpected(io, &Response::Ok, EXIT_OP));
            };
            match call(c, &Request::Apply(op), io, EXIT_OP)? {
                Response::Ok => Ok(0),
                Response::Error(e) => Err(io.fail(&e.message, EXIT_OP)),
                r => Err(unexpected(io, &r, EXIT_OP)),
            }
        }
    }
}

/// `-L -c`: the rows are printed as their chunks arrive, so neither side
/// holds the whole listing (it may have millions of rows). Table order, as
/// ipvsadm prints /proc's order.
fn list_conns(c: &mut Client, format: u32, names: &dyn Names, io: &mut Io) -> Result<i32, i32> {
    let mut header = Some(format::conns_header(format));
    let mut code = 0;
    let r = c.list_conns(|conns| {
        let mut text = header.take().unwrap_or_default();
        text.push_str(&format::conn_rows(conns, format, names));
        code = io.print(&text);
        // A closed pipe (`xvsadm -L -c | head`) or a failed write: stop.
        code == 0 && !io.out_closed
    });
    match r {
        Ok(None) => Ok(code),
        Ok(Some(e)) => Err(io.fail(&e.message, EXIT_LIST)),
        Err(e) => {
            let me = io.me.clone();
            Err(io.fail(&format!("{me}: {e}"), EXIT_LIST))
        }
    }
}

/// A short name for a command that cannot be part of a restore batch.
fn not_a_change(cmd: &Command) -> &'static str {
    match cmd {
        Command::List { .. } => "-L",
        Command::Save { .. } => "-S",
        Command::GetLaddr(_) => "-G",
        Command::ListMarks => "--list-marks",
        Command::Help => "-h",
        Command::Version => "-v",
        _ => "this command",
    }
}

/// `-R`: every line parsed first, then one atomic batch.
fn restore(c: &mut Client, prog: &str, stdin: &mut dyn Read, io: &mut Io) -> Result<i32, i32> {
    let mut raw = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut raw) {
        let me = io.me.clone();
        return Err(io.fail(&format!("{me}: reading stdin: {e}"), EXIT_OP));
    }
    let input = String::from_utf8_lossy(&raw);
    let me = io.me.clone();
    let mut ops = Vec::new();
    let mut lines = Vec::new();
    for (n, argv) in cmdline::restore_lines(&input, prog) {
        let cmd = match cmdline::parse(&argv) {
            Ok(c) => c,
            Err(e) => {
                return Err(io.fail(&format!("{me}: line {n}: {}", e.message), e.exit));
            }
        };
        if cmd == Command::Restore {
            // ipvsadm's restore_table refuses to recurse: tryhelp_exit.
            let msg = format!("Try `{prog} -h' or '{prog} --help' for more information.");
            return Err(io.fail(&format!("{me}: line {n}: {msg}"), EXIT_OP));
        }
        match cmd.to_op() {
            Some(op) => {
                ops.push(op);
                lines.push(n);
            }
            None => {
                let what = not_a_change(&cmd);
                return Err(io.fail(
                    &format!("{me}: line {n}: {what} cannot be used in restore input (it is applied as one batch)"),
                    2,
                ));
            }
        }
    }
    if ops.is_empty() {
        return Ok(0);
    }
    match call(c, &Request::Batch(ops), io, EXIT_OP)? {
        Response::Ok => Ok(0),
        Response::Error(e) => {
            let msg = match e.index.and_then(|i| lines.get(i)) {
                Some(n) => format!("{me}: line {n}: {}", e.message),
                None => format!("{me}: {}", e.message),
            };
            Err(io.fail(&msg, EXIT_OP))
        }
        r => Err(unexpected(io, &r, EXIT_OP)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn socket_option_is_taken_anywhere() {
        let (p, rest) = take_socket(&s(&["xvsadm", "-L", "--socket", "/tmp/x", "-n"])).unwrap();
        assert_eq!(p, Some(PathBuf::from("/tmp/x")));
        assert_eq!(rest, s(&["xvsadm", "-L", "-n"]));
        let (p, rest) = take_socket(&s(&["xvsadm", "--socket=/s", "-C"])).unwrap();
        assert_eq!(p, Some(PathBuf::from("/s")));
        assert_eq!(rest, s(&["xvsadm", "-C"]));
        assert!(take_socket(&s(&["xvsadm", "-L", "--socket"])).is_err());
        // After "--" everything is left alone.
        let (p, rest) = take_socket(&s(&["xvsadm", "--set", "--", "--socket", "x"])).unwrap();
        assert_eq!(p, None);
        assert_eq!(rest, s(&["xvsadm", "--set", "--", "--socket", "x"]));
    }

    #[test]
    fn save_and_restore_names() {
        assert_eq!(
            as_invoked(&s(&["/usr/sbin/ipvsadm-save", "-n"])),
            s(&["ipvsadm", "-S", "-n"])
        );
        assert_eq!(as_invoked(&s(&["xvsadm-restore"])), s(&["xvsadm", "-R"]));
        // Other names, paths included, are left as invoked.
        for v in [&["/usr/sbin/ipvsadm", "-L"][..], &["xvsadm"], &[]] {
            assert_eq!(as_invoked(&s(v)), s(v));
        }
    }

    #[test]
    fn strerror_drops_rust_suffix() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(strerror(&e), "No such file or directory");
    }

    #[test]
    fn help_and_version_need_no_daemon() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(
            &s(&["xvsadm", "--socket", "/nonexistent/x.sock", "-h"]),
            &mut std::io::empty(),
            &mut out,
            &mut err,
        );
        assert_eq!(code, 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\nUsage:\n  xvsadm -A|E virtual-service"
        ));
        assert!(err.is_empty());
    }

    #[test]
    fn no_daemon_is_one_line() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(
            &s(&[
                "/usr/sbin/xvsadm",
                "--socket",
                "/nonexistent/x.sock",
                "-L",
                "-n",
            ]),
            &mut std::io::empty(),
            &mut out,
            &mut err,
        );
        assert_eq!(code, EXIT_NO_DAEMON);
        assert!(out.is_empty());
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "xvsadm: cannot connect to xvsd at /nonexistent/x.sock: No such file or directory (is xvsd running?)\n"
        );
    }
}
