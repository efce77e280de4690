//! The ipvsadm 1.31 command grammar (popt rules, the commands/options legality
//! table, defaults and checks), shared by `xvsadm` and by `xvsd --rules`.
//!
//! popt is not clap: the first option must be the command, short options bundle
//! (`-Ln`), an option's argument may be attached (`-t1.2.3.4:80`, `--weight=3`),
//! `-p` takes an optional argument (the next word if it does not start with `-`)
//! and bare words are collected as arguments (`--set tcp tcpfin udp`). So the
//! grammar is implemented here directly; messages and exit codes are ipvsadm's.

use crate::proto::{DaemonSpec, DaemonState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use xvs_core::service::{
    Af, DestSpec, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec, SvcFlags,
    DEFAULT_PERSIST_TIMEOUT,
};

/// Longest timeout ipvsadm accepts (31 days).
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// Listing formats (ipvsadm's FMT_* bits).
pub mod fmt {
    pub const NUMERIC: u32 = 0x0001;
    pub const RULE: u32 = 0x0002;
    pub const STATS: u32 = 0x0004;
    pub const RATE: u32 = 0x0008;
    pub const THRESHOLDS: u32 = 0x0010;
    pub const PERSISTENTCONN: u32 = 0x0020;
    pub const NOSORT: u32 = 0x0040;
    pub const EXACT: u32 = 0x0080;
    pub const TUN_INFO: u32 = 0x0100;
}

/// What `-L` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListWhat {
    All,
    Service(ServiceKey),
    Conns,
    Timeout,
    Daemon,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    AddService(ServiceSpec),
    EditService(ServiceSpec),
    DelService(ServiceKey),
    Clear,
    Restore,
    Save {
        format: u32,
    },
    AddDest(ServiceKey, DestSpec),
    EditDest(ServiceKey, DestSpec),
    DelDest(ServiceKey, IpAddr, u16),
    List {
        what: ListWhat,
        format: u32,
    },
    Zero(Option<ServiceKey>),
    SetTimeouts(u32, u32, u32),
    StartDaemon(DaemonSpec),
    StopDaemon(DaemonState),
    Help,
    Version,
    AddLaddr(ServiceKey, IpAddr),
    DelLaddr(ServiceKey, IpAddr),
    GetLaddr(Option<ServiceKey>),
    /// `--add-mark RULE`, `--del-mark RULE`, `--list-marks` (xvs extensions).
    AddMark(crate::mark::MarkSpec),
    DelMark(crate::mark::MarkSpec),
    ListMarks,
}

/// A command line ipvsadm would refuse: the text it prints on stderr (without
/// the final newline) and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    pub message: String,
    pub exit: i32,
}

fn fail<T>(msg: impl Into<String>) -> Result<T, CmdError> {
    Err(CmdError {
        message: msg.into(),
        exit: 2,
    })
}

fn tryhelp<T>(program: &str) -> Result<T, CmdError> {
    Err(CmdError {
        message: format!("Try `{program} -h' or '{program} --help' for more information."),
        exit: 255,
    })
}

// ---- commands and options -------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
    // xvs extensions
    AddLaddr,
    DelLaddr,
    GetLaddr,
}

const CMD_NAMES: [&str; 17] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
    "add-laddr",
    "del-laddr",
    "get-laddr",
];

// Option indexes (ipvsadm's OPTC_*), then xvs's.
const O_NUMERIC: usize = 0;
const O_CONNECTION: usize = 1;
const O_SERVICE: usize = 2;
const O_SCHEDULER: usize = 3;
const O_PERSISTENT: usize = 4;
const O_NETMASK: usize = 5;
const O_SERVER: usize = 6;
const O_FORWARD: usize = 7;
const O_WEIGHT: usize = 8;
const O_UTHRESHOLD: usize = 9;
const O_LTHRESHOLD: usize = 10;
const O_MCAST: usize = 11;
const O_TIMEOUT: usize = 12;
const O_DAEMON: usize = 13;
const O_STATS: usize = 14;
const O_RATE: usize = 15;
const O_THRESHOLDS: usize = 16;
const O_PERSISTENTCONN: usize = 17;
const O_NOSORT: usize = 18;
const O_SYNCID: usize = 19;
const O_EXACT: usize = 20;
const O_ONEPACKET: usize = 21;
const O_PE: usize = 22;
const O_SCHED_FLAGS: usize = 23;
const O_MCAST_GROUP: usize = 24;
const O_MCAST_PORT: usize = 25;
const O_MCAST_TTL: usize = 26;
const O_SYNC_MAXLEN: usize = 27;
const O_TUN_INFO: usize = 28;
const O_TUN_TYPE: usize = 29;
const O_TUN_PORT: usize = 30;
const O_TUN_NOCSUM: usize = 31;
const O_TUN_CSUM: usize = 32;
const O_TUN_REMCSUM: usize = 33;
const O_LADDR: usize = 34;
const N_OPT: usize = 35;

const OPT_NAMES: [&str; N_OPT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
    "laddr",
];

/// ipvsadm's commands_v_options table (+ required, x illegal, 1 one of), with a
/// column for xvs's `-z` and rows for the laddr commands.
const LEGAL: [&[u8; N_OPT]; 17] = [
    //-n -c svc -s -p -M -r fwd -w -x -y mc tot dmn st rt thr pc srt sid ex ops pe -b grp prt ttl sz tinf ttyp tprt nocs csum remc -z
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx",
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx",
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b" 11xxxxxxxxx11       xxxxxxx xxxxxx",
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     x",
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     x",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxxx",
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxxx",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+",
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+",
    b" x xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// How an option takes its argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    Optional,
}

/// Option identifiers as the parser sees them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Id {
    Cmd(Cmd),
    Help,
    Version,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Sched,
    Persistent,
    Netmask,
    Server,
    Masq,
    Ipip,
    Gate,
    FullNat,
    Weight,
    UThr,
    LThr,
    Numeric,
    Conn,
    McastIf,
    SyncIdent,
    TimeoutList,
    DaemonList,
    Stats,
    Rate,
    Thresholds,
    PersistConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    Laddr,
}

struct OptDef {
    long: &'static str,
    short: Option<char>,
    arg: Arg,
    id: Id,
}

const fn o(long: &'static str, short: Option<char>, arg: Arg, id: Id) -> OptDef {
    OptDef {
        long,
        short,
        arg,
        id,
    }
}

const OPTS: &[OptDef] = &[
    o("add-service", Some('A'), Arg::None, Id::Cmd(Cmd::Add)),
    o("edit-service", Some('E'), Arg::None, Id::Cmd(Cmd::Edit)),
    o("delete-service", Some('D'), Arg::None, Id::Cmd(Cmd::Del)),
    o("clear", Some('C'), Arg::None, Id::Cmd(Cmd::Flush)),
    o("list", Some('L'), Arg::None, Id::Cmd(Cmd::List)),
    o("list", Some('l'), Arg::None, Id::Cmd(Cmd::List)),
    o("zero", Some('Z'), Arg::None, Id::Cmd(Cmd::Zero)),
    o("add-server", Some('a'), Arg::None, Id::Cmd(Cmd::AddDest)),
    o("edit-server", Some('e'), Arg::None, Id::Cmd(Cmd::EditDest)),
    o("delete-server", Some('d'), Arg::None, Id::Cmd(Cmd::DelDest)),
    o("set", None, Arg::None, Id::Cmd(Cmd::Timeout)),
    o("help", Some('h'), Arg::None, Id::Help),
    o("version", Some('v'), Arg::None, Id::Version),
    o("restore", Some('R'), Arg::None, Id::Cmd(Cmd::Restore)),
    o("save", Some('S'), Arg::None, Id::Cmd(Cmd::Save)),
    o(
        "start-daemon",
        None,
        Arg::Required,
        Id::Cmd(Cmd::StartDaemon),
    ),
    o("stop-daemon", None, Arg::Required, Id::Cmd(Cmd::StopDaemon)),
    o("add-laddr", Some('P'), Arg::None, Id::Cmd(Cmd::AddLaddr)),
    o("del-laddr", Some('Q'), Arg::None, Id::Cmd(Cmd::DelLaddr)),
    o("get-laddr", Some('G'), Arg::None, Id::Cmd(Cmd::GetLaddr)),
    o("tcp-service", Some('t'), Arg::Required, Id::Tcp),
    o("udp-service", Some('u'), Arg::Required, Id::Udp),
    o("sctp-service", None, Arg::Required, Id::Sctp),
    o("fwmark-service", Some('f'), Arg::Required, Id::Fwmark),
    o("scheduler", Some('s'), Arg::Required, Id::Sched),
    o("persistent", Some('p'), Arg::Optional, Id::Persistent),
    o("netmask", Some('M'), Arg::Required, Id::Netmask),
    o("real-server", Some('r'), Arg::Required, Id::Server),
    o("masquerading", Some('m'), Arg::None, Id::Masq),
    o("ipip", Some('i'), Arg::None, Id::Ipip),
    o("gatewaying", Some('g'), Arg::None, Id::Gate),
    o("fullnat", None, Arg::None, Id::FullNat),
    o("weight", Some('w'), Arg::Required, Id::Weight),
    o("u-threshold", Some('x'), Arg::Required, Id::UThr),
    o("l-threshold", Some('y'), Arg::Required, Id::LThr),
    o("numeric", Some('n'), Arg::None, Id::Numeric),
    o("connection", Some('c'), Arg::None, Id::Conn),
    o("mcast-interface", None, Arg::Required, Id::McastIf),
    o("syncid", None, Arg::Required, Id::SyncIdent),
    o("timeout", None, Arg::None, Id::TimeoutList),
    o("daemon", None, Arg::None, Id::DaemonList),
    o("stats", None, Arg::None, Id::Stats),
    o("rate", None, Arg::None, Id::Rate),
    o("thresholds", None, Arg::None, Id::Thresholds),
    o("persistent-conn", None, Arg::None, Id::PersistConn),
    o("nosort", None, Arg::None, Id::NoSort),
    o("sort", None, Arg::None, Id::Sort),
    o("exact", Some('X'), Arg::None, Id::Exact),
    o("ipv6", Some('6'), Arg::None, Id::Ipv6),
    o("ops", Some('o'), Arg::None, Id::Ops),
    o("pe", None, Arg::Required, Id::Pe),
    o("sched-flags", Some('b'), Arg::Required, Id::SchedFlags),
    o("mcast-group", None, Arg::Required, Id::McastGroup),
    o("mcast-port", None, Arg::Required, Id::McastPort),
    o("mcast-ttl", None, Arg::Required, Id::McastTtl),
    o("sync-maxlen", None, Arg::Required, Id::SyncMaxlen),
    o("tun-info", None, Arg::None, Id::TunInfo),
    o("tun-type", None, Arg::Required, Id::TunType),
    o("tun-port", None, Arg::Required, Id::TunPort),
    o("tun-nocsum", None, Arg::None, Id::TunNocsum),
    o("tun-csum", None, Arg::None, Id::TunCsum),
    o("tun-remcsum", None, Arg::None, Id::TunRemcsum),
    o("laddr", Some('z'), Arg::Required, Id::Laddr),
];

/// Whether an option of [`options`] takes a value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OptArg {
    None,
    Required,
    /// popt's optional argument (`-p [timeout]`): the next word if it is not an option.
    Optional,
}

/// An option of the grammar, as the parser knows it.
#[derive(Clone, Copy, Debug)]
pub struct OptionInfo {
    pub long: &'static str,
    pub short: Option<char>,
    pub arg: OptArg,
    /// A command (`-A`, `-L`, ...; `-h` and `-v` included) rather than an option.
    pub command: bool,
}

/// Every option of the popt table, in its order: what the shell completions
/// are generated from, so that they follow the parser.
pub fn options() -> impl Iterator<Item = OptionInfo> {
    OPTS.iter().map(|d| OptionInfo {
        long: d.long,
        short: d.short,
        arg: match d.arg {
            Arg::None => OptArg::None,
            Arg::Required => OptArg::Required,
            Arg::Optional => OptArg::Optional,
        },
        command: matches!(d.id, Id::Cmd(_) | Id::Help | Id::Version),
    })
}

/// One item of the popt-style scan: an option (with the argv word it came
/// from, which popt names in its errors, and its argument), a bare argument,
/// or an option popt would refuse.
enum Item {
    Opt(&'static OptDef, String, Option<String>),
    Arg(String),
    Bad(String, &'static str),
}

fn scan(args: &[String]) -> Vec<Item> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut rest_are_args = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if rest_are_args || a == "-" || !a.starts_with('-') {
            out.push(Item::Arg(a.clone()));
            continue;
        }
        if a == "--" {
            rest_are_args = true;
            continue;
        }
        let take_next = |i: &mut usize, optional: bool| -> Option<String> {
            let n = args.get(*i)?;
            if optional && n.starts_with('-') {
                return None;
            }
            *i += 1;
            Some(n.clone())
        };
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let Some(def) = OPTS.iter().find(|d| d.long == name) else {
                out.push(Item::Bad(a.clone(), "unknown option"));
                continue;
            };
            let val = match (def.arg, inline) {
                // popt ignores a value given to a flag.
                (Arg::None, _) => None,
                (_, Some(v)) => Some(v),
                (Arg::Required, None) => match take_next(&mut i, false) {
                    Some(v) => Some(v),
                    None => {
                        out.push(Item::Bad(a.clone(), "missing argument"));
                        continue;
                    }
                },
                (Arg::Optional, None) => take_next(&mut i, true),
            };
            out.push(Item::Opt(def, a.clone(), val));
            continue;
        }
        // A cluster of short options.
        let chars: Vec<char> = a[1..].chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            k += 1;
            let Some(def) = OPTS.iter().find(|d| d.short == Some(c)) else {
                out.push(Item::Bad(a.clone(), "unknown option"));
                break;
            };
            if def.arg == Arg::None {
                out.push(Item::Opt(def, a.clone(), None));
                continue;
            }
            let attached: String = chars[k..].iter().collect();
            k = chars.len();
            let val = if !attached.is_empty() {
                Some(attached)
            } else if def.arg == Arg::Required {
                match take_next(&mut i, false) {
                    Some(v) => Some(v),
                    None => {
                        out.push(Item::Bad(a.clone(), "missing argument"));
                        break;
                    }
                }
            } else {
                take_next(&mut i, true)
            };
            out.push(Item::Opt(def, a.clone(), val));
        }
    }
    out
}

// ---- value parsers ----------------------------------------------------------

/// strtol-like: the whole string a decimal number within min..=max.
fn number(s: &str, min: i64, max: i64) -> Option<i64> {
    let t = s.trim_start();
    let n: i64 = t.parse().ok()?;
    (min..=max).contains(&n).then_some(n)
}

fn parse_timeout(s: Option<&str>, min: u32, max: u32) -> Result<u32, CmdError> {
    match s {
        None => Ok(DEFAULT_PERSIST_TIMEOUT),
        Some(v) => match number(v, min as i64, max as i64) {
            Some(n) => Ok(n as u32),
            None => fail(format!("invalid timeout value `{v}' specified")),
        },
    }
}

/// A port number from a `/etc/services` name (ipvsadm's getservbyname).
pub fn service_port(name: &str, proto: &str) -> Option<u16> {
    let text = std::fs::read_to_string("/etc/services").ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut w = line.split_whitespace();
        let (Some(n), Some(pp)) = (w.next(), w.next()) else {
            continue;
        };
        let Some((port, p)) = pp.split_once('/') else {
            continue;
        };
        if p == proto && (n == name || w.any(|alias| alias == name)) {
            return port.parse().ok();
        }
    }
    None
}

/// The `/etc/services` name of a port (ipvsadm's getservbyport).
pub fn port_service(port: u16, proto: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/services").ok()?;
    let want = format!("{port}/{proto}");
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut w = line.split_whitespace();
        let n = w.next()?;
        (w.next()? == want).then(|| n.to_string())
    })
}

fn host_v4(name: &str) -> Option<Ipv4Addr> {
    (name, 0)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v) => Some(v),
            _ => None,
        })
}

/// inet_aton: dotted quad, also the short forms `a`, `a.b`, `a.b.c` and hex/octal parts.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::new();
    for p in &parts {
        let v = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            u32::from_str_radix(h, 16).ok()?
        } else if p.len() > 1 && p.starts_with('0') {
            u32::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u32>().ok()?
        };
        nums.push(v);
    }
    let last = *nums.last()?;
    let head = &nums[..nums.len() - 1];
    if head.iter().any(|&v| v > 255) {
        return None;
    }
    let shift = 32 - 8 * head.len() as u32;
    if shift < 32 && last >> shift != 0 {
        return None;
    }
    let mut v = 0u32;
    for (i, &h) in head.iter().enumerate() {
        v |= h << (24 - 8 * i);
    }
    Some(Ipv4Addr::from(v | last))
}

/// ipvsadm's parse_service: `host[:port]`, `[v6]:port` or a bare v6 address.
/// Returns the address, the port if given, or None when it cannot be parsed.
fn parse_service(buf: &str, proto: &str) -> Option<(IpAddr, Option<u16>)> {
    if buf.is_empty() || buf.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (host, port): (&str, Option<&str>) = if let Some(b) = buf.strip_prefix('[') {
        let (h, rest) = b.split_once(']')?;
        (h, Some(rest.strip_prefix(':')?))
    } else if buf.parse::<Ipv6Addr>().is_ok() {
        (buf, None)
    } else {
        match buf.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (buf, None),
        }
    };
    let addr = if let Ok(v6) = host.parse::<Ipv6Addr>() {
        IpAddr::V6(v6)
    } else {
        IpAddr::V4(inet_aton(host).or_else(|| host_v4(host))?)
    };
    let port = match port {
        None => None,
        Some(p) => Some(match number(p, 0, 65535) {
            Some(n) => n as u16,
            None => service_port(p, proto)?,
        }),
    };
    Some((addr, port))
}

fn parse_sched_flags(sched: &str, arg: &str) -> Result<u32, CmdError> {
    let mut flags = 0;
    for f in arg.split(',').filter(|f| !f.is_empty()) {
        let (bit, only) = match f {
            "flag-1" => (SvcFlags::SCHED1, None),
            "flag-2" => (SvcFlags::SCHED2, None),
            "flag-3" => (SvcFlags::SCHED3, None),
            "sh-fallback" => (SvcFlags::SCHED1, Some("sh")),
            "sh-port" => (SvcFlags::SCHED2, Some("sh")),
            "mh-fallback" => (SvcFlags::SCHED1, Some("mh")),
            "mh-port" => (SvcFlags::SCHED2, Some("mh")),
            _ => return fail(format!("invalid scheduler flag `{f}'")),
        };
        if only.is_some_and(|s| s != sched) {
            return fail(format!("incompatible scheduler flag `{f}'"));
        }
        flags |= bit;
    }
    Ok(flags)
}

// ---- the parse --------------------------------------------------------------

/// Everything process_options gathers before checking.
struct Entry {
    cmd: Option<Cmd>,
    options: u64,
    format: u32,
    proto: Option<Protocol>,
    svc_addr: Option<IpAddr>,
    svc_port: u16,
    fwmark: u32,
    af6: bool,
    sched: Option<String>,
    flags: u32,
    timeout: u32,
    netmask: u32,
    dest_addr: Option<IpAddr>,
    dest_port: u16,
    fwd: FwdMethod,
    weight: i32,
    u_thr: u32,
    l_thr: u32,
    daemon: DaemonSpec,
    laddr: Option<IpAddr>,
    sched_flags_arg: Option<String>,
    args: Vec<String>,
}

fn set_option(e: &mut Entry, opt: usize) -> Result<(), CmdError> {
    let bit = 1u64 << opt;
    if e.options & bit != 0 {
        return fail(format!("multiple '{}' options specified", OPT_NAMES[opt]));
    }
    e.options |= bit;
    Ok(())
}

fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), CmdError> {
    let i = cmd as usize;
    let row = LEGAL[i];
    let mut last = None;
    for (j, &rule) in row.iter().enumerate() {
        let set = options & (1 << j) != 0;
        if !set {
            if rule == b'+' {
                return fail(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPT_NAMES[j], CMD_NAMES[i]
                ));
            }
        } else {
            if rule == b'x' {
                return fail(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPT_NAMES[j], CMD_NAMES[i]
                ));
            }
            if rule == b'1' {
                match last {
                    None => last = Some(j),
                    Some(l) => {
                        return fail(format!(
                            "The option '{}' conflicts with the '{}' option in the '{}' command",
                            OPT_NAMES[j], OPT_NAMES[l], CMD_NAMES[i]
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

fn proto_name(p: Option<Protocol>) -> &'static str {
    match p {
        Some(Protocol::Udp) => "udp",
        _ => "tcp",
    }
}

/// Parses one ipvsadm command line (`args[0]` is the program name).
pub fn parse(args: &[String]) -> Result<Command, CmdError> {
    let program = args.first().map(String::as_str).unwrap_or("ipvsadm");
    if args.len() <= 1 {
        return Ok(Command::List {
            what: ListWhat::All,
            format: 0,
        });
    }
    // The mark commands take an iptables rule, whose words (-d, -p, -s, -m,
    // -j) are not ipvsadm's: the rest of the line is the rule.
    match args[1].as_str() {
        "--add-mark" | "--del-mark" => {
            let words: Vec<String> = if args.len() == 3 {
                args[2].split_whitespace().map(str::to_string).collect()
            } else {
                args[2..].to_vec()
            };
            let m = crate::mark::MarkSpec::parse(&words).or_else(fail)?;
            return Ok(if args[1] == "--add-mark" {
                Command::AddMark(m)
            } else {
                Command::DelMark(m)
            });
        }
        "--list-marks" => {
            return match args.get(2) {
                None => Ok(Command::ListMarks),
                Some(w) => fail(format!("--list-marks takes no argument: `{w}'")),
            };
        }
        _ => {}
    }
    let items = scan(&args[1..]);
    let mut e = Entry {
        cmd: None,
        options: 0,
        format: 0,
        proto: None,
        svc_addr: None,
        svc_port: 0,
        fwmark: 0,
        af6: false,
        sched: None,
        flags: 0,
        timeout: 0,
        netmask: 0xffff_ffff,
        dest_addr: None,
        dest_port: 0,
        fwd: FwdMethod::Route,
        weight: 1,
        u_thr: 0,
        l_thr: 0,
        daemon: DaemonSpec {
            state: DaemonState::Master,
            mcast_ifn: String::new(),
            syncid: 0,
            sync_maxlen: 0,
            mcast_group: None,
            mcast_port: 0,
            mcast_ttl: 0,
        },
        laddr: None,
        sched_flags_arg: None,
        args: Vec::new(),
    };
    let mut it = items.into_iter().peekable();
    // popt permutes: bare words before the first option are leftovers too.
    while let Some(Item::Arg(a)) = it.next_if(|i| matches!(i, Item::Arg(_))) {
        e.args.push(a);
    }
    // The first option must be the command.
    match it.next() {
        Some(Item::Opt(def, _, val)) => match def.id {
            Id::Help => return Ok(Command::Help),
            Id::Version => return Ok(Command::Version),
            Id::Cmd(c) => {
                e.cmd = Some(c);
                match c {
                    Cmd::StartDaemon | Cmd::StopDaemon => {
                        let v = val.unwrap_or_default();
                        e.daemon.state = match v.as_str() {
                            "master" => DaemonState::Master,
                            "backup" => DaemonState::Backup,
                            _ if c == Cmd::StartDaemon => {
                                return fail("illegal start-daemon parameter specified")
                            }
                            _ => return fail("illegal start_daemon specified"),
                        };
                    }
                    _ => {}
                }
            }
            _ => return tryhelp(program),
        },
        _ => return tryhelp(program),
    }
    for item in it {
        let (def, written, val) = match item {
            Item::Arg(a) => {
                e.args.push(a);
                continue;
            }
            Item::Bad(opt, why) => {
                return Err(CmdError {
                    message: format!("{opt}: {why}"),
                    exit: 255,
                })
            }
            Item::Opt(d, w, v) => (d, w, v),
        };
        let v = val.as_deref().unwrap_or("");
        match def.id {
            // ipvsadm's option loop knows no commands (so never says
            // "multiple commands specified").
            Id::Cmd(_) | Id::Help | Id::Version => {
                return fail(format!("invalid option `{written}'"))
            }
            Id::Tcp | Id::Udp => {
                set_option(&mut e, O_SERVICE)?;
                e.proto = Some(if def.id == Id::Tcp {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                });
                match parse_service(v, proto_name(e.proto)) {
                    Some((a, p)) => {
                        e.svc_addr = Some(a);
                        e.svc_port = p.unwrap_or(0);
                        if a.is_ipv6() {
                            e.netmask = 128;
                        }
                    }
                    None => return fail("illegal virtual server address[:port] specified"),
                }
            }
            Id::Sctp => return fail("SCTP services are not supported by xvs"),
            Id::Fwmark => {
                set_option(&mut e, O_SERVICE)?;
                e.proto = Some(Protocol::Tcp);
                match v.parse::<i64>() {
                    Ok(n) if n > 0 && n <= u32::MAX as i64 => e.fwmark = n as u32,
                    _ => return fail(format!("invalid fwmark value `{v}' specified")),
                }
            }
            Id::Sched => {
                set_option(&mut e, O_SCHEDULER)?;
                e.sched = Some(v.chars().take(15).collect());
            }
            Id::Persistent => {
                set_option(&mut e, O_PERSISTENT)?;
                e.flags |= SvcFlags::PERSISTENT;
                e.timeout = parse_timeout(val.as_deref(), 1, MAX_TIMEOUT)?;
            }
            Id::Netmask => {
                set_option(&mut e, O_NETMASK)?;
                let v6 = e.af6 || e.svc_addr.is_some_and(|a| a.is_ipv6());
                if !v6 {
                    match inet_aton(v).or_else(|| host_v4(v)) {
                        Some(m) => e.netmask = u32::from(m),
                        None => return fail("illegal virtual server persistent mask specified"),
                    }
                } else {
                    // atoi
                    let n: i64 = v
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '-')
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0);
                    if !(1..=128).contains(&n) {
                        return fail("illegal ipv6 netmask specified");
                    }
                    e.netmask = n as u32;
                }
            }
            Id::Server => {
                set_option(&mut e, O_SERVER)?;
                match parse_service(v, proto_name(e.proto)) {
                    Some((a, p)) => {
                        e.dest_addr = Some(a);
                        e.dest_port = p.unwrap_or(e.svc_port);
                    }
                    None => return fail("illegal real server address[:port] specified"),
                }
            }
            Id::Masq | Id::Ipip | Id::Gate | Id::FullNat => {
                set_option(&mut e, O_FORWARD)?;
                e.fwd = match def.id {
                    Id::Masq => FwdMethod::Masq,
                    Id::Ipip => FwdMethod::Tunnel,
                    Id::FullNat => FwdMethod::FullNat,
                    _ => FwdMethod::Route,
                };
            }
            Id::Weight => {
                set_option(&mut e, O_WEIGHT)?;
                match number(v, 0, 65535) {
                    Some(n) => e.weight = n as i32,
                    None => return fail("illegal weight specified"),
                }
            }
            Id::UThr => {
                set_option(&mut e, O_UTHRESHOLD)?;
                match number(v, 0, i32::MAX as i64) {
                    Some(n) => e.u_thr = n as u32,
                    None => return fail("illegal u_threshold specified"),
                }
            }
            Id::LThr => {
                set_option(&mut e, O_LTHRESHOLD)?;
                match number(v, 0, i32::MAX as i64) {
                    Some(n) => e.l_thr = n as u32,
                    None => return fail("illegal l_threshold specified"),
                }
            }
            Id::Conn => set_option(&mut e, O_CONNECTION)?,
            Id::Numeric => {
                set_option(&mut e, O_NUMERIC)?;
                e.format |= fmt::NUMERIC;
            }
            Id::McastIf => {
                set_option(&mut e, O_MCAST)?;
                e.daemon.mcast_ifn = v.chars().take(15).collect();
            }
            Id::SyncIdent => {
                set_option(&mut e, O_SYNCID)?;
                match number(v, 0, 255) {
                    Some(n) => e.daemon.syncid = n as u8,
                    None => return fail("illegal syncid specified"),
                }
            }
            Id::TimeoutList => set_option(&mut e, O_TIMEOUT)?,
            Id::DaemonList => set_option(&mut e, O_DAEMON)?,
            Id::Stats => {
                set_option(&mut e, O_STATS)?;
                e.format |= fmt::STATS;
            }
            Id::Rate => {
                set_option(&mut e, O_RATE)?;
                e.format |= fmt::RATE;
            }
            Id::Thresholds => {
                set_option(&mut e, O_THRESHOLDS)?;
                e.format |= fmt::THRESHOLDS;
            }
            Id::PersistConn => {
                set_option(&mut e, O_PERSISTENTCONN)?;
                e.format |= fmt::PERSISTENTCONN;
            }
            Id::NoSort => {
                set_option(&mut e, O_NOSORT)?;
                e.format |= fmt::NOSORT;
            }
            Id::Sort => {}
            Id::Exact => {
                set_option(&mut e, O_EXACT)?;
                e.format |= fmt::EXACT;
            }
            Id::Ipv6 => {
                if e.fwmark != 0 {
                    e.af6 = true;
                    e.netmask = 128;
                } else {
                    return fail("-6 used before -f\n");
                }
            }
            Id::Ops => {
                set_option(&mut e, O_ONEPACKET)?;
                e.flags |= SvcFlags::ONEPACKET;
            }
            Id::Pe => {
                set_option(&mut e, O_PE)?;
                return fail(format!("persistence engine `{v}' is not supported by xvs"));
            }
            Id::SchedFlags => {
                set_option(&mut e, O_SCHED_FLAGS)?;
                e.sched_flags_arg = Some(v.chars().take(127).collect());
            }
            Id::McastGroup => {
                set_option(&mut e, O_MCAST_GROUP)?;
                if v.contains(':') {
                    match v.parse::<Ipv6Addr>() {
                        Ok(a) if a.is_multicast() => e.daemon.mcast_group = Some(IpAddr::V6(a)),
                        _ => return fail(format!("invalid IPv6 mcast-group `{v}'")),
                    }
                } else {
                    match v.parse::<Ipv4Addr>() {
                        Ok(a) if a.is_multicast() => e.daemon.mcast_group = Some(IpAddr::V4(a)),
                        _ => return fail(format!("invalid IPv4 mcast-group `{v}'")),
                    }
                }
            }
            Id::McastPort => {
                set_option(&mut e, O_MCAST_PORT)?;
                match number(v, 1, 65535) {
                    Some(n) => e.daemon.mcast_port = n as u16,
                    None => return fail("illegal mcast-port specified"),
                }
            }
            Id::McastTtl => {
                set_option(&mut e, O_MCAST_TTL)?;
                match number(v, 1, 255) {
                    Some(n) => e.daemon.mcast_ttl = n as u8,
                    None => return fail("illegal mcast-ttl specified"),
                }
            }
            Id::SyncMaxlen => {
                set_option(&mut e, O_SYNC_MAXLEN)?;
                match number(v, 1, 65535 - 20 - 8) {
                    Some(n) => e.daemon.sync_maxlen = n as u16,
                    None => return fail("illegal sync-maxlen specified"),
                }
            }
            Id::TunInfo => {
                set_option(&mut e, O_TUN_INFO)?;
                e.format |= fmt::TUN_INFO;
            }
            Id::TunType => {
                set_option(&mut e, O_TUN_TYPE)?;
                match v {
                    "ipip" => {}
                    "gue" | "gre" => {
                        return fail(format!("tunnel type `{v}' is not supported by xvs"))
                    }
                    _ => return fail("illegal tunnel type specified"),
                }
            }
            Id::TunPort => {
                set_option(&mut e, O_TUN_PORT)?;
                if number(v, 1, 65535).is_none() {
                    return fail("illegal tunnel port specified");
                }
            }
            Id::TunNocsum => set_option(&mut e, O_TUN_NOCSUM)?,
            Id::TunCsum => set_option(&mut e, O_TUN_CSUM)?,
            Id::TunRemcsum => set_option(&mut e, O_TUN_REMCSUM)?,
            Id::Laddr => {
                set_option(&mut e, O_LADDR)?;
                match v.parse::<IpAddr>() {
                    Ok(a) if crate::check::check_laddr(&a).is_ok() => e.laddr = Some(a),
                    _ => return fail(format!("illegal local address `{v}' specified")),
                }
            }
        }
    }
    let cmd = e.cmd.expect("set by the first option");
    let mut args = e.args.iter();
    let mut set_values = None;
    if cmd == Cmd::Timeout {
        match (args.next(), args.next(), args.next()) {
            (Some(a), Some(b), Some(c)) => {
                set_values = Some((
                    parse_timeout(Some(a), 0, MAX_TIMEOUT)?,
                    parse_timeout(Some(b), 0, MAX_TIMEOUT)?,
                    parse_timeout(Some(c), 0, MAX_TIMEOUT)?,
                ));
            }
            _ => return fail("--set option requires 3 timeout values"),
        }
    }
    if let Some(a) = args.next() {
        return fail(format!("unexpected argument {a}"));
    }
    if let Some(arg) = &e.sched_flags_arg {
        e.flags &= !SvcFlags::SCHED_MASK;
        e.flags |= parse_sched_flags(e.sched.as_deref().unwrap_or("wlc"), arg)?;
    }
    generic_opt_check(cmd, e.options)?;

    let key = || -> ServiceKey {
        if e.fwmark != 0 {
            ServiceKey::Fwmark {
                mark: e.fwmark,
                af: if e.af6 { Af::V6 } else { Af::V4 },
            }
        } else {
            ServiceKey::Addr {
                proto: e.proto.unwrap_or(Protocol::Tcp),
                addr: e.svc_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: e.svc_port,
            }
        }
    };
    let has_svc = e.options & (1 << O_SERVICE) != 0;
    match cmd {
        Cmd::Add | Cmd::Edit => {
            if e.fwmark == 0 && e.svc_port == 0 && e.flags & SvcFlags::PERSISTENT == 0 {
                return fail("Zero port specified for non-persistent service");
            }
            if e.flags & SvcFlags::ONEPACKET != 0 && e.fwmark == 0 && e.proto != Some(Protocol::Udp)
            {
                return fail("One-Packet Scheduling is only for UDP virtual services");
            }
            let sched_name = e.sched.clone().unwrap_or_else(|| "wlc".into());
            let Some(sched) = SchedKind::from_name(&sched_name) else {
                // The kernel refuses an unknown scheduler (ENOENT).
                return Err(CmdError {
                    message: "Scheduler or persistence engine not found".into(),
                    exit: 255,
                });
            };
            let spec = ServiceSpec {
                key: key(),
                sched,
                flags: SvcFlags(e.flags),
                timeout: if e.flags & SvcFlags::PERSISTENT != 0 {
                    e.timeout
                } else {
                    0
                },
                netmask: e.netmask,
            };
            Ok(if cmd == Cmd::Add {
                Command::AddService(spec)
            } else {
                Command::EditService(spec)
            })
        }
        Cmd::Del => Ok(Command::DelService(key())),
        Cmd::Flush => Ok(Command::Clear),
        Cmd::Restore => Ok(Command::Restore),
        Cmd::Save => Ok(Command::Save {
            format: e.format | fmt::RULE,
        }),
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let addr = e.dest_addr.expect("required by the legality table");
            let mut port = e.dest_port;
            if cmd != Cmd::DelDest {
                if e.fwmark == 0 && matches!(e.fwd, FwdMethod::Tunnel | FwdMethod::Route) {
                    port = e.svc_port;
                }
                let svc_v6 = e.af6 || e.svc_addr.is_some_and(|a| a.is_ipv6());
                if addr.is_ipv6() != svc_v6 && e.fwd != FwdMethod::Tunnel {
                    return fail("Different address family is allowed only for tunneling servers");
                }
                let tun_opts = (1u64 << O_TUN_TYPE)
                    | (1 << O_TUN_PORT)
                    | (1 << O_TUN_NOCSUM)
                    | (1 << O_TUN_CSUM)
                    | (1 << O_TUN_REMCSUM);
                if e.options & tun_opts != 0 && e.fwd != FwdMethod::Tunnel {
                    return fail("Tunnel options conflict with forward method");
                }
                // ipip (the only type here) takes none of the gue/gre options.
                for (opt, name) in [
                    (O_TUN_PORT, "tun-port"),
                    (O_TUN_NOCSUM, "tun-nocsum"),
                    (O_TUN_CSUM, "tun-csum"),
                    (O_TUN_REMCSUM, "tun-remcsum"),
                ] {
                    if e.options & (1 << opt) != 0 {
                        return fail(format!(
                            "Illegal '{name}' option with the 'ipip' tunnel type"
                        ));
                    }
                }
            }
            let d = DestSpec {
                addr,
                port,
                fwd: e.fwd,
                weight: e.weight,
                u_threshold: e.u_thr,
                l_threshold: e.l_thr,
            };
            Ok(match cmd {
                Cmd::AddDest => Command::AddDest(key(), d),
                Cmd::EditDest => Command::EditDest(key(), d),
                _ => Command::DelDest(key(), addr, port),
            })
        }
        Cmd::List => {
            let o = e.options;
            let has = |b: usize| o & (1 << b) != 0;
            if ((has(O_CONNECTION) || has(O_TIMEOUT) || has(O_DAEMON))
                && (has(O_STATS) || has(O_RATE) || has(O_THRESHOLDS)))
                || ((has(O_TIMEOUT) || has(O_DAEMON)) && has(O_PERSISTENTCONN))
            {
                return fail("options conflicts in the list command");
            }
            let what = if has(O_CONNECTION) {
                ListWhat::Conns
            } else if has_svc {
                ListWhat::Service(key())
            } else if has(O_TIMEOUT) {
                ListWhat::Timeout
            } else if has(O_DAEMON) {
                ListWhat::Daemon
            } else {
                ListWhat::All
            };
            Ok(Command::List {
                what,
                format: e.format,
            })
        }
        Cmd::Zero => Ok(Command::Zero(has_svc.then(key))),
        Cmd::Timeout => {
            let (a, b, c) = set_values.expect("checked above");
            Ok(Command::SetTimeouts(a, b, c))
        }
        Cmd::StartDaemon => {
            let mut d = e.daemon.clone();
            if d.mcast_ifn.is_empty() {
                d.mcast_ifn = "eth0".into();
            }
            Ok(Command::StartDaemon(d))
        }
        Cmd::StopDaemon => Ok(Command::StopDaemon(e.daemon.state)),
        Cmd::AddLaddr | Cmd::DelLaddr => {
            let l = e.laddr.expect("required by the legality table");
            Ok(if cmd == Cmd::AddLaddr {
                Command::AddLaddr(key(), l)
            } else {
                Command::DelLaddr(key(), l)
            })
        }
        Cmd::GetLaddr => Ok(Command::GetLaddr(has_svc.then(key))),
    }
}

/// Splits `-R` input into command lines as ipvsadm's config_stream does: words
/// separated by spaces, tabs and CRs, one command per line, every word
/// `ipvsadm` dropped, lines without words skipped. Each line comes with its
/// 1-based line number and `program` prepended as argv[0].
pub fn restore_lines(input: &str, program: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (n, line) in input.split('\n').enumerate() {
        let words: Vec<String> = line
            .split([' ', '\t', '\r'])
            .filter(|w| !w.is_empty() && *w != "ipvsadm")
            .map(str::to_string)
            .collect();
        if words.is_empty() {
            continue;
        }
        let mut argv = vec![program.to_string()];
        argv.extend(words);
        out.push((n + 1, argv));
    }
    out
}

/// ipvsadm's version line.
pub const VERSION_LINE: &str = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)";

/// ipvsadm's `-h` text, with xvs's extensions, for program name `p`.
pub fn usage(p: &str) -> String {
    format!(
        "{VERSION_LINE}\n\
Usage:\n\
\x20 {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]\n\
\x20 {p} -D virtual-service\n\
\x20 {p} -C\n\
\x20 {p} -R\n\
\x20 {p} -S [-n]\n\
\x20 {p} -a|e virtual-service -r server-address [options]\n\
\x20 {p} -d virtual-service -r server-address\n\
\x20 {p} -L|l [virtual-service] [options]\n\
\x20 {p} -Z [virtual-service]\n\
\x20 {p} --set tcp tcpfin udp\n\
\x20 {p} --start-daemon {{master|backup}} [daemon-options]\n\
\x20 {p} --stop-daemon {{master|backup}}\n\
\x20 {p} -P|Q virtual-service -z local-address\n\
\x20 {p} -G [virtual-service]\n\
\x20 {p} --add-mark|--del-mark [-s prefix] [-d prefix] [-p tcp|udp] [--dport port[:port] | -m multiport --dports ports] -j MARK --set-mark mark\n\
\x20 {p} --list-marks\n\
\x20 {p} --knob NAME=VALUE ...\n\
\x20 {p} --sync-knob NAME=VALUE ...\n\
\x20 {p} -h\n\
\n\
Commands:\n\
Either long or short options are allowed.\n\
\x20 --add-service     -A        add virtual service with options\n\
\x20 --edit-service    -E        edit virtual service with options\n\
\x20 --delete-service  -D        delete virtual service\n\
\x20 --clear           -C        clear the whole table\n\
\x20 --restore         -R        restore rules from stdin\n\
\x20 --save            -S        save rules to stdout\n\
\x20 --add-server      -a        add real server with options\n\
\x20 --edit-server     -e        edit real server with options\n\
\x20 --delete-server   -d        delete real server\n\
\x20 --list            -L|-l     list the table\n\
\x20 --zero            -Z        zero counters in a service or all services\n\
\x20 --set tcp tcpfin udp        set connection timeout values\n\
\x20 --start-daemon              start connection sync daemon\n\
\x20 --stop-daemon               stop connection sync daemon\n\
\x20 --add-laddr       -P        add a FULLNAT local address to a service (xvs)\n\
\x20 --del-laddr       -Q        delete a FULLNAT local address (xvs)\n\
\x20 --get-laddr       -G        list FULLNAT local addresses (xvs)\n\
\x20 --add-mark                  add a fwmark rule, iptables mangle form (xvs)\n\
\x20 --del-mark                  delete a fwmark rule (xvs)\n\
\x20 --list-marks                list the fwmark rules in order (xvs)\n\
\x20 --knob NAME=VALUE ...       set DoS and behaviour knobs, the net.ipv4.vs sysctls\n\
\x20                             drop_entry, drop_packet, secure_tcp, amemthresh,\n\
\x20                             am_droprate, expire_nodest_conn, conn_reuse_mode,\n\
\x20                             expire_quiescent_template, sloppy_tcp (xvs)\n\
\x20 --sync-knob NAME=VALUE ...  set connection-sync knobs, net.ipv4.vs.sync_* (xvs)\n\
\x20 --help            -h        display this help message\n\
\n\
virtual-service:\n\
\x20 --tcp-service|-t  service-address   service-address is host[:port]\n\
\x20 --udp-service|-u  service-address   service-address is host[:port]\n\
\x20 --sctp-service    service-address   service-address is host[:port]\n\
\x20 --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n\
\n\
Options:\n\
\x20 --ipv6         -6                   fwmark entry uses IPv6\n\
\x20 --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh,\n\
\x20                                     the default scheduler is wlc.\n\
\x20 --pe            engine              alternate persistence engine may be sip,\n\
\x20                                     not set by default.\n\
\x20 --persistent   -p [timeout]         persistent service\n\
\x20 --netmask      -M netmask           persistent granularity mask\n\
\x20 --real-server  -r server-address    server-address is host (and port)\n\
\x20 --gatewaying   -g                   gatewaying (direct routing) (default)\n\
\x20 --ipip         -i                   ipip encapsulation (tunneling)\n\
\x20 --masquerading -m                   masquerading (NAT)\n\
\x20 --fullnat                           full NAT: source to a local address too (xvs)\n\
\x20 --laddr        -z local-address     FULLNAT local address, with -P/-Q (xvs)\n\
\x20 --health                            with -L: the health checks of --keepalived-conf (xvs)\n\
\x20 --knobs                             with -L: the knobs --knob sets, NAME VALUE (xvs)\n\
\x20 --tun-type      type                one of ipip|gue|gre,\n\
\x20                                     the default tunnel type is ipip.\n\
\x20 --tun-port      port                tunnel destination port\n\
\x20 --tun-nocsum                        tunnel encapsulation without checksum\n\
\x20 --tun-csum                          tunnel encapsulation with checksum\n\
\x20 --tun-remcsum                       tunnel encapsulation with remote checksum\n\
\x20 --weight       -w weight            capacity of real server\n\
\x20 --u-threshold  -x uthreshold        upper threshold of connections\n\
\x20 --l-threshold  -y lthreshold        lower threshold of connections\n\
\x20 --connection   -c                   output of current IPVS connections\n\
\x20 --timeout                           output of timeout (tcp tcpfin udp)\n\
\x20 --daemon                            output of daemon information\n\
\x20 --stats                             output of statistics information\n\
\x20 --rate                              output of rate information\n\
\x20 --exact                             expand numbers (display exact values)\n\
\x20 --thresholds                        output of thresholds information\n\
\x20 --persistent-conn                   output of persistent connection info\n\
\x20 --tun-info                          output of tunnel information\n\
\x20 --nosort                            disable sorting output of service/server entries\n\
\x20 --sort                              does nothing, for backwards compatibility\n\
\x20 --ops          -o                   one-packet scheduling\n\
\x20 --numeric      -n                   numeric output of addresses and ports\n\
\x20 --sched-flags  -b flags             scheduler flags (comma-separated)\n\
Daemon Options:\n\
\x20 --syncid sid                        syncid for connection sync (default=255)\n\
\x20 --sync-maxlen length                Max sync message length (default=1472)\n\
\x20 --mcast-interface interface         multicast interface for connection sync\n\
\x20 --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)\n\
\x20 --mcast-port port                   UDP port (default=8848)\n\
\x20 --mcast-ttl ttl                     Multicast TTL (default=1)\n"
    )
}

impl Command {
    /// The rule change this command makes, if it is one.
    pub fn to_op(&self) -> Option<crate::proto::Op> {
        use crate::proto::Op;
        Some(match self {
            Command::AddService(s) => Op::AddService(s.clone()),
            Command::EditService(s) => Op::EditService(s.clone()),
            Command::DelService(k) => Op::DelService(*k),
            Command::Clear => Op::Clear,
            Command::AddDest(k, d) => Op::AddDest(*k, d.clone()),
            Command::EditDest(k, d) => Op::EditDest(*k, d.clone()),
            Command::DelDest(k, a, p) => Op::DelDest(*k, *a, *p),
            Command::Zero(k) => Op::Zero(*k),
            Command::SetTimeouts(a, b, c) => Op::SetTimeouts(*a, *b, *c),
            Command::StartDaemon(d) => Op::StartDaemon(d.clone()),
            Command::StopDaemon(s) => Op::StopDaemon(*s),
            Command::AddLaddr(k, a) => Op::AddLaddr(*k, *a),
            Command::DelLaddr(k, a) => Op::DelLaddr(*k, *a),
            Command::AddMark(m) => Op::AddMark(m.clone()),
            Command::DelMark(m) => Op::DelMark(m.clone()),
            _ => return None,
        })
    }
}

/// Parses rules in `-S`/`-R` format into ops. A line that is not a rule change
/// or does not parse is an error naming its line number.
pub fn parse_rules(input: &str, program: &str) -> Result<Vec<crate::proto::Op>, String> {
    let mut ops = Vec::new();
    for (n, argv) in restore_lines(input, program) {
        match parse(&argv) {
            Ok(c) => match c.to_op() {
                Some(op) => ops.push(op),
                None => return Err(format!("line {n}: not a rule command")),
            },
            Err(e) => return Err(format!("line {n}: {}", e.message.trim_end())),
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, CmdError> {
        let mut v = vec!["ipvsadm".to_string()];
        v.extend(s.split_whitespace().map(str::to_string));
        parse(&v)
    }

    fn err(s: &str) -> (String, i32) {
        let e = p(s).unwrap_err();
        (e.message, e.exit)
    }

    #[test]
    fn the_seed_examples() {
        let Command::AddService(s) = p("-A -t 207.175.44.110:80 -s rr").unwrap() else {
            panic!()
        };
        assert_eq!(s.sched, SchedKind::Rr);
        assert_eq!(s.key.to_string(), "-t 207.175.44.110:80");
        let Command::AddDest(k, d) = p("-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m").unwrap()
        else {
            panic!()
        };
        assert_eq!(k.port(), 80);
        assert_eq!((d.fwd, d.weight, d.port), (FwdMethod::Masq, 1, 80));
        assert!(matches!(
            p("-L -n").unwrap(),
            Command::List {
                what: ListWhat::All,
                format: fmt::NUMERIC
            }
        ));
    }

    #[test]
    fn popt_grammar() {
        // Bundled short options, attached and optional arguments.
        assert!(matches!(
            p("-Ln").unwrap(),
            Command::List {
                format: fmt::NUMERIC,
                ..
            }
        ));
        let Command::AddService(s) = p("-At10.0.0.1:80 -p").unwrap() else {
            panic!()
        };
        assert_eq!(s.timeout, 360, "bare -p is 360 s");
        assert_eq!(s.sched, SchedKind::Wlc);
        let Command::AddService(s) = p("-A -t 10.0.0.1:80 -p 60 -s sh -b sh-port").unwrap() else {
            panic!()
        };
        assert_eq!(s.timeout, 60);
        assert_eq!(s.flags.0, SvcFlags::PERSISTENT | SvcFlags::SCHED2);
        let Command::AddService(s) = p("-A --tcp-service=10.0.0.1:http --persistent=7").unwrap()
        else {
            panic!()
        };
        assert_eq!((s.key.port(), s.timeout), (80, 7));
        assert_eq!(p("--set 1 2 3").unwrap(), Command::SetTimeouts(1, 2, 3));
        let Command::AddService(s) = p("-A -f 5 -6 -p").unwrap() else {
            panic!()
        };
        assert_eq!(s.netmask, 128);
        assert_eq!(s.key.to_string(), "-f 5 -6");
    }

    #[test]
    fn dest_port_rules() {
        let Command::AddDest(_, d) = p("-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -g").unwrap() else {
            panic!()
        };
        assert_eq!(d.port, 80, "DR forces the service port");
        let Command::AddDest(_, d) = p("-a -t 10.0.0.1:80 -r 10.0.1.1 -m").unwrap() else {
            panic!()
        };
        assert_eq!(d.port, 80, "no port: the service port");
        let Command::AddDest(_, d) = p("-a -t [fd77::100]:80 -r [fd77::1:11]:81 -m -w 0").unwrap()
        else {
            panic!()
        };
        assert_eq!((d.port, d.weight), (81, 0));
    }

    #[test]
    fn ipvsadm_errors_and_exit_codes() {
        assert_eq!(
            err("-t 1.2.3.4:80"),
            (
                "Try `ipvsadm -h' or 'ipvsadm --help' for more information.".into(),
                255
            )
        );
        // ipvsadm.c's option loop: a command after the first is an invalid
        // option, named by its whole argv word as popt reports it.
        assert_eq!(
            err("-A -t 1.2.3.4:80 -A"),
            ("invalid option `-A'".into(), 2)
        );
        assert_eq!(err("-L -nA"), ("invalid option `-nA'".into(), 2));
        assert_eq!(err("-L -h"), ("invalid option `-h'".into(), 2));
        assert_eq!(err("-Lq"), ("-Lq: unknown option".into(), 255));
        assert_eq!(err("-L -nq"), ("-nq: unknown option".into(), 255));
        // popt permutes: words before the command are leftover arguments.
        assert_eq!(err("foo -L"), ("unexpected argument foo".into(), 2));
        assert_eq!(p("1 2 3 --set").unwrap(), Command::SetTimeouts(1, 2, 3));
        // popt ignores a value given to a flag.
        assert!(matches!(p("-L --numeric=1"), Ok(Command::List { .. })));
        assert_eq!(
            err("-A -t 1.2.3.4:80 -s rr -s wrr"),
            ("multiple 'scheduler' options specified".into(), 2)
        );
        assert_eq!(
            err("-A -s rr"),
            (
                "You need to supply the 'service-address' option for the 'add-service' command"
                    .into(),
                2
            )
        );
        assert_eq!(
            err("-D -t 1.2.3.4:80 -s rr"),
            (
                "Illegal 'scheduler' option with the 'delete-service' command".into(),
                2
            )
        );
        assert_eq!(
            err("-L -c --timeout"),
            (
                "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
                    .into(),
                2
            )
        );
        assert_eq!(
            err("-L -c --stats"),
            ("options conflicts in the list command".into(), 2)
        );
        assert_eq!(
            err("-A -t 1.2.3.4"),
            ("Zero port specified for non-persistent service".into(), 2)
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -o"),
            (
                "One-Packet Scheduling is only for UDP virtual services".into(),
                2
            )
        );
        assert_eq!(
            err("-A -t 12345"),
            ("illegal virtual server address[:port] specified".into(), 2)
        );
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r 1.2.3.5 -w 70000"),
            ("illegal weight specified".into(), 2)
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -p 0"),
            ("invalid timeout value `0' specified".into(), 2)
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -s rr -b sh-port"),
            ("incompatible scheduler flag `sh-port'".into(), 2)
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -b nope"),
            ("invalid scheduler flag `nope'".into(), 2)
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -s bogus"),
            ("Scheduler or persistence engine not found".into(), 255)
        );
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r [fd77::1]:80 -m"),
            (
                "Different address family is allowed only for tunneling servers".into(),
                2
            )
        );
        assert_eq!(
            err("--set 1 2"),
            ("--set option requires 3 timeout values".into(), 2)
        );
        assert_eq!(err("-C foo"), ("unexpected argument foo".into(), 2));
        assert_eq!(err("-L --bogus"), ("--bogus: unknown option".into(), 255));
        assert_eq!(err("-A -6"), ("-6 used before -f\n".into(), 2));
        assert_eq!(
            err("-A -f 0"),
            ("invalid fwmark value `0' specified".into(), 2)
        );
    }

    #[test]
    fn restore_input_is_split_like_config_stream() {
        let lines = restore_lines(
            "ipvsadm -A -t 1.2.3.4:80 -s rr\n\n  \t\r\n-a -t 1.2.3.4:80\t-r 1.2.3.5:80 -m\r\n",
            "xvsadm",
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, 1);
        assert_eq!(lines[0].1, ["xvsadm", "-A", "-t", "1.2.3.4:80", "-s", "rr"]);
        assert_eq!(lines[1].0, 4);
        assert_eq!(lines[1].1.len(), 7);
    }

    #[test]
    fn inet_aton_forms() {
        assert_eq!(
            inet_aton("255.255.255.0").unwrap().to_string(),
            "255.255.255.0"
        );
        assert_eq!(inet_aton("10.1").unwrap().to_string(), "10.0.0.1");
        assert!(inet_aton("1.2.3.256").is_none());
        assert!(inet_aton("").is_none());
    }
}
