//! popt as ipvsadm configures it: the option table (long and short names,
//! how each takes its argument) and the scan of argv into options and bare
//! arguments. The first option must be the command, short options bundle
//! (`-Ln`), an option's argument may be attached (`-t1.2.3.4:80`,
//! `--weight=3`), `-p` takes an optional argument (the next word if it does
//! not start with `-`) and bare words are collected as arguments (`--set tcp
//! tcpfin udp`).

/// ipvsadm's commands (CMD_*), in the order of its tables, then xvs's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Cmd {
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

/// How an option takes its argument.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Arg {
    None,
    Required,
    Optional,
}

/// Option identifiers as the parser sees them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Id {
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

/// One row of the popt table.
pub(super) struct OptDef {
    pub(super) long: &'static str,
    pub(super) short: Option<char>,
    pub(super) arg: Arg,
    pub(super) id: Id,
}

const fn o(long: &'static str, short: Option<char>, arg: Arg, id: Id) -> OptDef {
    OptDef {
        long,
        short,
        arg,
        id,
    }
}

/// ipvsadm's popt option table, with xvs's options.
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
pub(super) enum Item {
    Opt(&'static OptDef, String, Option<String>),
    Arg(String),
    Bad(String, &'static str),
}

/// Splits argv (without argv[0]) into options and arguments as popt does.
pub(super) fn scan(args: &[String]) -> Vec<Item> {
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
