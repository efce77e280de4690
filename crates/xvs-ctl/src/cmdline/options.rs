//! ipvsadm's process_options: the option loop that reads each option's value
//! into an [`Entry`] (with ipvsadm's messages for bad values), then the bare
//! arguments and the legality matrix.

use super::command::{fail, fmt, tryhelp, CmdError};
use super::legal::*;
use super::popt::{scan, Cmd, Id, Item};
use super::values::{host_v4, inet_aton, number, parse_sched_flags, parse_service, parse_timeout};
use crate::check::MAX_TIMEOUT;
use crate::proto::{DaemonSpec, DaemonState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use xvs_core::service::{FwdMethod, Protocol, SvcFlags};

/// Everything process_options gathers before checking.
pub(super) struct Entry {
    pub(super) cmd: Option<Cmd>,
    pub(super) options: u64,
    pub(super) format: u32,
    pub(super) proto: Option<Protocol>,
    pub(super) svc_addr: Option<IpAddr>,
    pub(super) svc_port: u16,
    pub(super) fwmark: u32,
    pub(super) af6: bool,
    pub(super) sched: Option<String>,
    pub(super) flags: u32,
    pub(super) timeout: u32,
    pub(super) netmask: u32,
    pub(super) dest_addr: Option<IpAddr>,
    pub(super) dest_port: u16,
    pub(super) fwd: FwdMethod,
    pub(super) weight: i32,
    pub(super) u_thr: u32,
    pub(super) l_thr: u32,
    pub(super) daemon: DaemonSpec,
    pub(super) laddr: Option<IpAddr>,
    pub(super) sched_flags_arg: Option<String>,
    pub(super) args: Vec<String>,
    /// `--set`'s three timeouts.
    pub(super) set_values: Option<(u32, u32, u32)>,
}

/// What the option loop ends with: a command answered at once, or the entry
/// of a command to build.
pub(super) enum Gathered {
    Help,
    Version,
    Entry(Cmd, Box<Entry>),
}

/// The protocol name /etc/services lists a port under.
fn proto_name(p: Option<Protocol>) -> &'static str {
    match p {
        Some(Protocol::Udp) => "udp",
        _ => "tcp",
    }
}

/// The options of `args` (argv without argv[0]) of `program`, checked.
pub(super) fn process_options(program: &str, args: &[String]) -> Result<Gathered, CmdError> {
    let items = scan(args);
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
        set_values: None,
    };
    let mut it = items.into_iter().peekable();
    // popt permutes: bare words before the first option are leftovers too.
    while let Some(Item::Arg(a)) = it.next_if(|i| matches!(i, Item::Arg(_))) {
        e.args.push(a);
    }
    // The first option must be the command.
    match it.next() {
        Some(Item::Opt(def, _, val)) => match def.id {
            Id::Help => return Ok(Gathered::Help),
            Id::Version => return Ok(Gathered::Version),
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
                set_option(&mut e.options, O_SERVICE)?;
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
                set_option(&mut e.options, O_SERVICE)?;
                e.proto = Some(Protocol::Tcp);
                match v.parse::<i64>() {
                    Ok(n) if n > 0 && n <= u32::MAX as i64 => e.fwmark = n as u32,
                    _ => return fail(format!("invalid fwmark value `{v}' specified")),
                }
            }
            Id::Sched => {
                set_option(&mut e.options, O_SCHEDULER)?;
                e.sched = Some(v.chars().take(15).collect());
            }
            Id::Persistent => {
                set_option(&mut e.options, O_PERSISTENT)?;
                e.flags |= SvcFlags::PERSISTENT;
                e.timeout = parse_timeout(val.as_deref(), 1, MAX_TIMEOUT)?;
            }
            Id::Netmask => {
                set_option(&mut e.options, O_NETMASK)?;
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
                set_option(&mut e.options, O_SERVER)?;
                match parse_service(v, proto_name(e.proto)) {
                    Some((a, p)) => {
                        e.dest_addr = Some(a);
                        e.dest_port = p.unwrap_or(e.svc_port);
                    }
                    None => return fail("illegal real server address[:port] specified"),
                }
            }
            Id::Masq | Id::Ipip | Id::Gate | Id::FullNat => {
                set_option(&mut e.options, O_FORWARD)?;
                e.fwd = match def.id {
                    Id::Masq => FwdMethod::Masq,
                    Id::Ipip => FwdMethod::Tunnel,
                    Id::FullNat => FwdMethod::FullNat,
                    _ => FwdMethod::Route,
                };
            }
            Id::Weight => {
                set_option(&mut e.options, O_WEIGHT)?;
                match number(v, 0, 65535) {
                    Some(n) => e.weight = n as i32,
                    None => return fail("illegal weight specified"),
                }
            }
            Id::UThr => {
                set_option(&mut e.options, O_UTHRESHOLD)?;
                match number(v, 0, i32::MAX as i64) {
                    Some(n) => e.u_thr = n as u32,
                    None => return fail("illegal u_threshold specified"),
                }
            }
            Id::LThr => {
                set_option(&mut e.options, O_LTHRESHOLD)?;
                match number(v, 0, i32::MAX as i64) {
                    Some(n) => e.l_thr = n as u32,
                    None => return fail("illegal l_threshold specified"),
                }
            }
            Id::Conn => set_option(&mut e.options, O_CONNECTION)?,
            Id::Numeric => {
                set_option(&mut e.options, O_NUMERIC)?;
                e.format |= fmt::NUMERIC;
            }
            Id::McastIf => {
                set_option(&mut e.options, O_MCAST)?;
                e.daemon.mcast_ifn = v.chars().take(15).collect();
            }
            Id::SyncIdent => {
                set_option(&mut e.options, O_SYNCID)?;
                match number(v, 0, 255) {
                    Some(n) => e.daemon.syncid = n as u8,
                    None => return fail("illegal syncid specified"),
                }
            }
            Id::TimeoutList => set_option(&mut e.options, O_TIMEOUT)?,
            Id::DaemonList => set_option(&mut e.options, O_DAEMON)?,
            Id::Stats => {
                set_option(&mut e.options, O_STATS)?;
                e.format |= fmt::STATS;
            }
            Id::Rate => {
                set_option(&mut e.options, O_RATE)?;
                e.format |= fmt::RATE;
            }
            Id::Thresholds => {
                set_option(&mut e.options, O_THRESHOLDS)?;
                e.format |= fmt::THRESHOLDS;
            }
            Id::PersistConn => {
                set_option(&mut e.options, O_PERSISTENTCONN)?;
                e.format |= fmt::PERSISTENTCONN;
            }
            Id::NoSort => {
                set_option(&mut e.options, O_NOSORT)?;
                e.format |= fmt::NOSORT;
            }
            Id::Sort => {}
            Id::Exact => {
                set_option(&mut e.options, O_EXACT)?;
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
                set_option(&mut e.options, O_ONEPACKET)?;
                e.flags |= SvcFlags::ONEPACKET;
            }
            Id::Pe => {
                set_option(&mut e.options, O_PE)?;
                return fail(format!("persistence engine `{v}' is not supported by xvs"));
            }
            Id::SchedFlags => {
                set_option(&mut e.options, O_SCHED_FLAGS)?;
                e.sched_flags_arg = Some(v.chars().take(127).collect());
            }
            Id::McastGroup => {
                set_option(&mut e.options, O_MCAST_GROUP)?;
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
                set_option(&mut e.options, O_MCAST_PORT)?;
                match number(v, 1, 65535) {
                    Some(n) => e.daemon.mcast_port = n as u16,
                    None => return fail("illegal mcast-port specified"),
                }
            }
            Id::McastTtl => {
                set_option(&mut e.options, O_MCAST_TTL)?;
                match number(v, 1, 255) {
                    Some(n) => e.daemon.mcast_ttl = n as u8,
                    None => return fail("illegal mcast-ttl specified"),
                }
            }
            Id::SyncMaxlen => {
                set_option(&mut e.options, O_SYNC_MAXLEN)?;
                match number(v, 1, 65535 - 20 - 8) {
                    Some(n) => e.daemon.sync_maxlen = n as u16,
                    None => return fail("illegal sync-maxlen specified"),
                }
            }
            Id::TunInfo => {
                set_option(&mut e.options, O_TUN_INFO)?;
                e.format |= fmt::TUN_INFO;
            }
            Id::TunType => {
                set_option(&mut e.options, O_TUN_TYPE)?;
                match v {
                    "ipip" => {}
                    "gue" | "gre" => {
                        return fail(format!("tunnel type `{v}' is not supported by xvs"))
                    }
                    _ => return fail("illegal tunnel type specified"),
                }
            }
            Id::TunPort => {
                set_option(&mut e.options, O_TUN_PORT)?;
                if number(v, 1, 65535).is_none() {
                    return fail("illegal tunnel port specified");
                }
            }
            Id::TunNocsum => set_option(&mut e.options, O_TUN_NOCSUM)?,
            Id::TunCsum => set_option(&mut e.options, O_TUN_CSUM)?,
            Id::TunRemcsum => set_option(&mut e.options, O_TUN_REMCSUM)?,
            Id::Laddr => {
                set_option(&mut e.options, O_LADDR)?;
                match v.parse::<IpAddr>() {
                    Ok(a) if crate::check::check_laddr(&a).is_ok() => e.laddr = Some(a),
                    _ => return fail(format!("illegal local address `{v}' specified")),
                }
            }
        }
    }
    let cmd = e.cmd.expect("set by the first option");
    let mut args = e.args.iter();
    if cmd == Cmd::Timeout {
        match (args.next(), args.next(), args.next()) {
            (Some(a), Some(b), Some(c)) => {
                e.set_values = Some((
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
    Ok(Gathered::Entry(cmd, Box::new(e)))
}
