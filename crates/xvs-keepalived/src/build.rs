//! From statements to the model: every keyword checked, keepalived's
//! defaults applied in its order (checker, then real server, then virtual
//! server, then the checker type's own default).

use crate::lex::{split_command, Node};
use crate::model::*;
use crate::ranges;
use crate::ConfError;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use xvs_core::service::{
    default_netmask, Af, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec, SvcFlags,
    DEFAULT_PERSIST_TIMEOUT, MAX_WEIGHT,
};

type R<T> = Result<T, ConfError>;

/// keepalived's default `delay_loop`.
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's default `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest timer accepted (a year); keepalived's are unbounded longs.
const MAX_TIMER: f64 = 365.0 * 86400.0;
/// ipvsadm's longest persistence timeout.
const MAX_PERSIST: u64 = 86400 * 31;

/// Top-level blocks that belong to keepalived's VRRP (and BFD) side: they
/// stay with keepalived and are skipped here.
const VRRP_SIDE: &[&str] = &[
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "track_file",
    "track_process",
    "linkbeat_interfaces",
    "garp_group",
    "bfd_instance",
];

fn err<T>(n: &Node, msg: impl Into<String>) -> R<T> {
    Err(ConfError::at(&n.loc, n.key(), msg))
}

fn arg(n: &Node, i: usize) -> R<&str> {
    match n.words.get(i) {
        Some(w) => Ok(w),
        None => err(n, "missing argument"),
    }
}

/// Refuses arguments beyond the first `max` and a block.
fn leaf(n: &Node, max: usize) -> R<()> {
    if n.children.is_some() {
        return err(n, "takes no { } block");
    }
    if n.args().len() > max {
        return err(n, format!("unexpected argument `{}'", n.args()[max]));
    }
    Ok(())
}

fn block(n: &Node) -> R<&[Node]> {
    match &n.children {
        Some(c) => Ok(c),
        None => err(n, "needs a { } block"),
    }
}

fn timer(n: &Node, min: f64) -> R<Duration> {
    leaf(n, 1)?;
    let v = arg(n, 1)?;
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= min && s <= MAX_TIMER => {
            // keepalived's timers have microsecond resolution.
            Ok(Duration::from_micros((s * 1e6).round() as u64))
        }
        _ => err(n, format!("invalid time `{v}' (seconds, >= {min})")),
    }
}

fn uint(n: &Node, i: usize, min: u64, max: u64) -> R<u64> {
    let v = arg(n, i)?;
    match v.parse::<u64>() {
        Ok(x) if (min..=max).contains(&x) => Ok(x),
        _ => err(n, format!("invalid value `{v}' ({min}..={max})")),
    }
}

fn one_uint(n: &Node, min: u64, max: u64) -> R<u64> {
    leaf(n, 1)?;
    uint(n, 1, min, max)
}

/// A flag with an optional <BOOL>.
fn flag(n: &Node) -> R<bool> {
    leaf(n, 1)?;
    match n.words.get(1).map(|s| s.to_ascii_lowercase()).as_deref() {
        None => Ok(true),
        Some("on" | "true" | "yes") => Ok(true),
        Some("off" | "false" | "no") => Ok(false),
        Some(v) => err(
            n,
            format!("invalid boolean `{v}' (on|off|true|false|yes|no)"),
        ),
    }
}

fn ip(n: &Node, i: usize) -> R<IpAddr> {
    let v = arg(n, i)?;
    v.parse()
        .or_else(|_| err(n, format!("invalid IP address `{v}'")))
}

fn port(n: &Node, i: usize) -> R<Option<u16>> {
    match n.words.get(i) {
        None => Ok(None),
        Some(_) => Ok(Some(uint(n, i, 0, 65535)? as u16)),
    }
}

/// `SCRIPT [username [:][groupname]]`.
fn script(n: &Node) -> R<Script> {
    leaf(n, 3)?;
    let argv = split_command(arg(n, 1)?);
    if argv.is_empty() {
        return err(n, "empty command");
    }
    let (user, group) = user_group(n, 2)?;
    Ok(Script { argv, user, group })
}

fn user_group(n: &Node, i: usize) -> R<(Option<String>, Option<String>)> {
    let user = n.words.get(i).cloned();
    let group =
        match n.words.get(i + 1) {
            Some(g) if g.starts_with(':') => return err(
                n,
                "supplementary groups (`:group') are not supported by xvs; name the group alone",
            ),
            g => g.cloned(),
        };
    Ok((user, group))
}

fn forwarding(n: &Node) -> R<FwdMethod> {
    let m = arg(n, 1)?;
    let fwd = match m {
        "NAT" => FwdMethod::Masq,
        "DR" => FwdMethod::Route,
        "TUN" => FwdMethod::Tunnel,
        // xvs's full NAT (FNAT in the DPVS and Alibaba keepalived forks).
        "FULLNAT" | "FNAT" => FwdMethod::FullNat,
        _ => {
            return err(
                n,
                format!("unknown forwarding method `{m}' (NAT, DR, TUN, FULLNAT)"),
            )
        }
    };
    let mut rest = n.args()[1..].iter();
    while let Some(w) = rest.next() {
        match (fwd, w.as_str()) {
            (FwdMethod::Tunnel, "type") => match rest.next().map(String::as_str) {
                Some("ipip") => {}
                Some(t @ ("gue" | "gre")) => {
                    return err(
                        n,
                        format!("tunnel type `{t}' is not supported by xvs (ipip only)"),
                    )
                }
                _ => return err(n, "tunnel type must be ipip"),
            },
            (FwdMethod::Tunnel, "nocsum") => {}
            _ => return err(n, format!("unexpected argument `{w}'")),
        }
    }
    if n.children.is_some() {
        return err(n, "takes no { } block");
    }
    Ok(fwd)
}

/// A `virtual_server_group` entry.
#[derive(Debug, Clone)]
enum GroupEntry {
    Addrs(Vec<IpAddr>, Option<u16>),
    Fwmark(u32, Option<Af>),
}

struct Ctx {
    groups: HashMap<String, Vec<GroupEntry>>,
    laddr_groups: HashMap<String, Vec<IpAddr>>,
    notes: Vec<String>,
}

pub fn build(nodes: &[Node]) -> R<Config> {
    let mut ctx = Ctx {
        groups: HashMap::new(),
        laddr_groups: HashMap::new(),
        notes: Vec::new(),
    };
    let mut vrrp: Vec<String> = Vec::new();
    let mut vss = Vec::new();
    // Groups first: a virtual server may name a group defined after it.
    for n in nodes {
        match n.key() {
            "virtual_server_group" => {
                let name = arg(n, 1)?.to_string();
                leaf_args(n, 1)?;
                let entries = group(n)?;
                if ctx.groups.insert(name.clone(), entries).is_some() {
                    return err(n, format!("group `{name}' defined twice"));
                }
            }
            "local_address_group" => {
                let name = arg(n, 1)?.to_string();
                leaf_args(n, 1)?;
                let mut addrs = Vec::new();
                for e in block(n)? {
                    if e.children.is_some() {
                        return err(e, "takes no { } block");
                    }
                    // DPVS writes `ADDR IFNAME`: the interface is not needed here.
                    if e.args().len() > 1 {
                        return err(e, "expected an address or range (and an interface name)");
                    }
                    addrs.extend(ranges::expand(e.key()).or_else(|m| err(e, m))?);
                }
                if ctx.laddr_groups.insert(name.clone(), addrs).is_some() {
                    return err(n, format!("local address group `{name}' defined twice"));
                }
            }
            _ => {}
        }
    }
    for n in nodes {
        let k = n.key();
        match k {
            "virtual_server_group" | "local_address_group" => {}
            "global_defs" => {
                block(n)?;
                ctx.notes.push(format!(
                    "{}: global_defs ignored (xvs takes its settings from xvsd's own configuration)",
                    n.loc
                ));
            }
            "virtual_server" => {
                if let Some(vs) = virtual_server(n, &mut ctx)? {
                    vss.push(vs);
                }
            }
            _ if k.starts_with("vrrp_") || VRRP_SIDE.contains(&k) => {
                vrrp.push(format!("{k} at {}", n.loc));
            }
            "SSL" => {
                return err(
                    n,
                    "client certificates for SSL_GET are not supported by xvs (SSL_GET runs without one)",
                )
            }
            _ => return err(n, "not supported by xvs"),
        }
    }
    if !vrrp.is_empty() {
        ctx.notes.push(format!(
            "{} VRRP block(s) ignored (VRRP stays with keepalived): {}",
            vrrp.len(),
            vrrp.join(", ")
        ));
    }
    // One service in two virtual servers would be managed twice.
    let mut seen: HashMap<ServiceKey, String> = HashMap::new();
    for vs in &vss {
        for s in &vs.services {
            if let Some(other) = seen.insert(s.key, vs.name.clone()) {
                return Err(ConfError::at(
                    &vs.loc,
                    "virtual_server",
                    format!(
                        "service {} is also defined by virtual server {other}",
                        s.key
                    ),
                ));
            }
        }
    }
    Ok(Config {
        virtual_servers: vss,
        notes: ctx.notes,
        files: Vec::new(),
    })
}

/// For block keywords: refuses arguments beyond the first `max`.
fn leaf_args(n: &Node, max: usize) -> R<()> {
    if n.args().len() > max {
        return err(n, format!("unexpected argument `{}'", n.args()[max]));
    }
    Ok(())
}

fn group(n: &Node) -> R<Vec<GroupEntry>> {
    let mut out = Vec::new();
    for e in block(n)? {
        if e.children.is_some() {
            return err(e, "takes no { } block");
        }
        if e.key() == "fwmark" {
            leaf(e, 2)?;
            let mark = uint(e, 1, 1, u32::MAX as u64)? as u32;
            let af = match e.words.get(2).map(String::as_str) {
                None => None,
                Some("inet") => Some(Af::V4),
                Some("inet6") => Some(Af::V6),
                Some(f) => return err(e, format!("unknown family `{f}' (inet, inet6)")),
            };
            out.push(GroupEntry::Fwmark(mark, af));
        } else {
            leaf(e, 1)?;
            let addrs = ranges::expand(e.key()).or_else(|m| err(e, m))?;
            out.push(GroupEntry::Addrs(addrs, port(e, 1)?));
        }
    }
    if out.is_empty() {
        return err(n, "group has no entries");
    }
    Ok(out)
}

/// Settings a virtual server or real server gives as defaults below it.
#[derive(Default, Clone)]
struct Inherit {
    alpha: Option<bool>,
    inhibit: Option<bool>,
    retry: Option<u32>,
    connect_timeout: Option<Duration>,
    delay_loop: Option<Duration>,
    warmup: Option<Duration>,
    delay_before_retry: Option<Duration>,
    virtualhost: Option<String>,
}

impl Inherit {
    /// `self` over `parent`.
    fn over(&self, parent: &Inherit) -> Inherit {
        Inherit {
            alpha: self.alpha.or(parent.alpha),
            inhibit: self.inhibit.or(parent.inhibit),
            retry: self.retry.or(parent.retry),
            connect_timeout: self.connect_timeout.or(parent.connect_timeout),
            delay_loop: self.delay_loop.or(parent.delay_loop),
            warmup: self.warmup.or(parent.warmup),
            delay_before_retry: self.delay_before_retry.or(parent.delay_before_retry),
            virtualhost: self.virtualhost.clone().or(parent.virtualhost.clone()),
        }
    }

    /// The settings every level shares; true when `n` was one of them.
    fn take(&mut self, n: &Node) -> R<bool> {
        match n.key() {
            "alpha" => self.alpha = Some(flag(n)?),
            "inhibit_on_failure" => self.inhibit = Some(flag(n)?),
            "retry" => self.retry = Some(one_uint(n, 0, u32::MAX as u64)? as u32),
            "connect_timeout" => self.connect_timeout = Some(timer(n, 1e-6)?),
            "delay_loop" => self.delay_loop = Some(timer(n, 1e-6)?),
            "warmup" => self.warmup = Some(timer(n, 0.0)?),
            "delay_before_retry" => self.delay_before_retry = Some(timer(n, 0.0)?),
            "virtualhost" => {
                leaf(n, 1)?;
                self.virtualhost = Some(arg(n, 1)?.to_string());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A real server before its service ports and checkers are resolved.
struct RsDraft {
    node: Node,
    addr: IpAddr,
    port: Option<u16>,
    fwd: Option<FwdMethod>,
    weight: Option<i32>,
    u_threshold: u32,
    l_threshold: u32,
    inherit: Inherit,
    notify_up: Option<Script>,
    notify_down: Option<Script>,
}

fn virtual_server(n: &Node, ctx: &mut Ctx) -> R<Option<VirtualServer>> {
    enum Head {
        Addr(IpAddr, Option<u16>),
        Fwmark(u32),
        Group(String),
    }
    let head = match arg(n, 1)? {
        "fwmark" => {
            leaf_args(n, 2)?;
            Head::Fwmark(uint(n, 2, 1, u32::MAX as u64)? as u32)
        }
        "group" => {
            leaf_args(n, 2)?;
            Head::Group(arg(n, 2)?.to_string())
        }
        _ => {
            leaf_args(n, 2)?;
            Head::Addr(ip(n, 1)?, port(n, 2)?)
        }
    };
    let mut sched = SchedKind::Wlc;
    let mut sched_name = "wlc".to_string();
    let mut flags = 0u32;
    let mut sched_flag_nodes: Vec<Node> = Vec::new();
    let mut fwd = FwdMethod::Masq;
    let mut timeout: Option<u32> = None;
    let mut granularity: Option<(Node, String)> = None;
    let mut proto = Protocol::Tcp;
    let mut ha_suspend = false;
    let mut omega = false;
    let mut quorum: Option<u32> = None;
    let mut hysteresis = 0u32;
    let mut quorum_up = None;
    let mut quorum_down = None;
    let mut family: Option<Af> = None;
    let mut weight = 1i32;
    let mut inherit = Inherit::default();
    let mut sorry: Option<(Node, IpAddr, Option<u16>)> = None;
    let mut sorry_inhibit = false;
    let mut sorry_fwd: Option<FwdMethod> = None;
    let mut laddr_group: Option<(Node, String)> = None;
    let mut rss: Vec<RsDraft> = Vec::new();
    let mut rs_checks: Vec<Vec<Node>> = Vec::new();

    for c in block(n)? {
        if inherit.take(c)? {
            continue;
        }
        match c.key() {
            "lvs_sched" | "lb_algo" => {
                leaf(c, 1)?;
                let s = arg(c, 1)?;
                sched = match SchedKind::from_name(s) {
                    Some(k) => k,
                    None if s == "twos" => {
                        return err(c, "scheduler `twos' is not implemented by xvs")
                    }
                    None => return err(c, format!("unknown scheduler `{s}'")),
                };
                sched_name = s.to_string();
            }
            "ops" => {
                leaf(c, 0)?;
                flags |= SvcFlags::ONEPACKET;
            }
            "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
            | "mh-fallback" => {
                leaf(c, 0)?;
                sched_flag_nodes.push(c.clone());
            }
            "hashed" => return err(c, "not supported by xvs (an internal kernel flag)"),
            "lb_kind" | "lvs_method" => fwd = forwarding(c)?,
            "persistence_engine" => return err(c, "persistence engines are not supported by xvs"),
            "persistence_timeout" => {
                leaf(c, 1)?;
                timeout = Some(if c.args().is_empty() {
                    DEFAULT_PERSIST_TIMEOUT
                } else {
                    uint(c, 1, 1, MAX_PERSIST)? as u32
                });
            }
            "persistence_granularity" => {
                leaf(c, 1)?;
                granularity = Some((c.clone(), arg(c, 1)?.to_string()));
            }
            "protocol" => {
                leaf(c, 1)?;
                proto = match arg(c, 1)?.to_ascii_uppercase().as_str() {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    "SCTP" => return err(c, "SCTP services are not supported by xvs"),
                    p => return err(c, format!("unknown protocol `{p}'")),
                };
            }
            "ha_suspend" => {
                leaf(c, 0)?;
                ha_suspend = true;
            }
            "omega" => omega = flag(c)?,
            "quorum" => quorum = Some(one_uint(c, 1, u32::MAX as u64)? as u32),
            "hysteresis" => hysteresis = one_uint(c, 0, u32::MAX as u64)? as u32,
            "quorum_up" => quorum_up = Some(script(c)?),
            "quorum_down" => quorum_down = Some(script(c)?),
            "ip_family" => {
                leaf(c, 1)?;
                family = Some(match arg(c, 1)? {
                    "inet" => Af::V4,
                    "inet6" => Af::V6,
                    f => return err(c, format!("unknown family `{f}' (inet, inet6)")),
                });
            }
            "weight" => weight = one_uint(c, 1, MAX_WEIGHT as u64)? as i32,
            "sorry_server" => {
                leaf(c, 2)?;
                sorry = Some((c.clone(), ip(c, 1)?, port(c, 2)?));
            }
            "sorry_server_inhibit" => {
                if sorry.is_none() {
                    return err(c, "used before or without sorry_server");
                }
                sorry_inhibit = flag(c)?;
            }
            "sorry_server_lvs_method" => {
                if sorry.is_none() {
                    return err(c, "used before or without sorry_server");
                }
                sorry_fwd = Some(forwarding(c)?);
            }
            "laddr_group_name" => {
                leaf(c, 1)?;
                laddr_group = Some((c.clone(), arg(c, 1)?.to_string()));
            }
            "smtp_alert" => {
                if flag(c)? {
                    return err(c, "e-mail alerts are not supported by xvs");
                }
            }
            "real_server" => {
                let (draft, checks) = real_server(c)?;
                if rss
                    .iter()
                    .any(|r| r.addr == draft.addr && r.port == draft.port)
                {
                    return err(c, "real server defined twice");
                }
                rss.push(draft);
                rs_checks.push(checks);
            }
            _ => return err(c, "not supported by xvs in a virtual_server"),
        }
    }

    // The family: the VIP's, else a non-tunnelled real or sorry server's.
    let rs_af = rss
        .iter()
        .filter(|r| r.fwd.unwrap_or(fwd) != FwdMethod::Tunnel)
        .map(|r| Af::of(&r.addr))
        .next()
        .or(sorry.as_ref().map(|s| Af::of(&s.1)));
    let (keys, name): (Vec<ServiceKey>, String) = match &head {
        Head::Addr(a, p) => {
            let port = match p {
                Some(p) => *p,
                None if timeout.is_some() || granularity.is_some() => 0,
                None => return err(n, "a port is needed unless the service is persistent"),
            };
            (
                vec![ServiceKey::Addr {
                    proto,
                    addr: *a,
                    port,
                }],
                format!(
                    "{}:{}:{port}",
                    fmt_ip(*a),
                    if proto == Protocol::Tcp { "tcp" } else { "udp" }
                ),
            )
        }
        Head::Fwmark(m) => (
            vec![ServiceKey::Fwmark {
                mark: *m,
                af: family.or(rs_af).unwrap_or(Af::V4),
            }],
            format!("FWM {m}"),
        ),
        Head::Group(g) => {
            let Some(entries) = ctx.groups.get(g) else {
                return err(n, format!("no virtual_server_group `{g}'"));
            };
            let mut keys = Vec::new();
            for e in entries {
                match e {
                    GroupEntry::Addrs(addrs, p) => {
                        for a in addrs {
                            let port = match p {
                                Some(p) => *p,
                                None if timeout.is_some() || granularity.is_some() => 0,
                                None => {
                                    return err(
                                        n,
                                        format!("group `{g}': {a} has no port and the service is not persistent"),
                                    )
                                }
                            };
                            keys.push(ServiceKey::Addr {
                                proto,
                                addr: *a,
                                port,
                            });
                        }
                    }
                    GroupEntry::Fwmark(m, af) => keys.push(ServiceKey::Fwmark {
                        mark: *m,
                        af: af.or(family).or(rs_af).unwrap_or(Af::V4),
                    }),
                }
            }
            (keys, format!("group {g}"))
        }
    };
    if rss.is_empty() {
        ctx.notes.push(format!(
            "{}: virtual server {name} has no real servers: skipped, as keepalived does",
            n.loc
        ));
        return Ok(None);
    }

    // Scheduler flags, checked against the scheduler once it is known.
    for c in &sched_flag_nodes {
        let (bit, only) = match c.key() {
            "flag-1" => (SvcFlags::SCHED1, None),
            "flag-2" => (SvcFlags::SCHED2, None),
            "flag-3" => (SvcFlags::SCHED3, None),
            "sh-fallback" => (SvcFlags::SCHED1, Some("sh")),
            "sh-port" => (SvcFlags::SCHED2, Some("sh")),
            "mh-fallback" => (SvcFlags::SCHED1, Some("mh")),
            _ => (SvcFlags::SCHED2, Some("mh")),
        };
        if only.is_some_and(|s| s != sched_name) {
            return err(
                c,
                format!("only applies to the {} scheduler", only.unwrap_or("")),
            );
        }
        flags |= bit;
    }
    if let Some(t) = timeout.or(granularity.as_ref().map(|_| DEFAULT_PERSIST_TIMEOUT)) {
        flags |= SvcFlags::PERSISTENT;
        timeout = Some(t);
    }
    let mut services = Vec::new();
    for key in &keys {
        let netmask = match &granularity {
            None => default_netmask(key.af()),
            Some((g, v)) => match key.af() {
                Af::V4 => match v.parse::<std::net::Ipv4Addr>() {
                    Ok(m) => u32::from(m),
                    Err(_) => return err(g, format!("invalid IPv4 netmask `{v}'")),
                },
                Af::V6 => match v.parse::<u32>() {
                    Ok(l) if (1..=128).contains(&l) => l,
                    _ => return err(g, format!("invalid IPv6 prefix length `{v}' (1..=128)")),
                },
            },
        };
        services.push(ServiceSpec {
            key: *key,
            sched,
            flags: SvcFlags(flags),
            timeout: timeout.unwrap_or(0),
            netmask,
        });
    }

    let vs_inherit = Inherit {
        alpha: Some(inherit.alpha.unwrap_or(false)),
        inhibit: Some(inherit.inhibit.unwrap_or(false)),
        connect_timeout: Some(inherit.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)),
        delay_loop: Some(inherit.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP)),
        ..inherit
    };
    // One port the checkers can use when neither they nor the RS give one.
    let mut ports: Vec<u16> = keys.iter().map(|k| k.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    let vs_port = match ports.as_slice() {
        [p] if *p != 0 => Some(*p),
        _ => None,
    };

    let mut real_servers = Vec::new();
    for (d, checks) in rss.into_iter().zip(rs_checks) {
        let rs_fwd = d.fwd.unwrap_or(fwd);
        for k in &keys {
            if rs_fwd != FwdMethod::Tunnel && Af::of(&d.addr) != k.af() {
                return err(
                    &d.node,
                    "address family differs from the virtual server's (only tunnelled servers may)",
                );
            }
        }
        let inh = d.inherit.over(&vs_inherit);
        let mut rs = RealServer {
            loc: d.node.loc.clone(),
            addr: d.addr,
            port: d.port,
            fwd: rs_fwd,
            weight: d.weight.unwrap_or(weight),
            u_threshold: d.u_threshold,
            l_threshold: d.l_threshold,
            inhibit: inh.inhibit.unwrap_or(false),
            notify_up: d.notify_up,
            notify_down: d.notify_down,
            checks: Vec::new(),
        };
        let rs_port = d.port.or(vs_port);
        for c in &checks {
            rs.checks.push(checker(c, &rs, rs_port, &inh)?);
        }
        real_servers.push(rs);
    }

    let sorry = match sorry {
        None => None,
        Some((c, addr, port)) => {
            let sfwd = sorry_fwd.unwrap_or(fwd);
            if sfwd != FwdMethod::Tunnel && keys.iter().any(|k| k.af() != Af::of(&addr)) {
                return err(&c, "address family differs from the virtual server's");
            }
            if real_servers
                .iter()
                .any(|r| r.addr == addr && r.port == port)
            {
                return err(
                    &c,
                    "the sorry server is also a real_server: not supported by xvs",
                );
            }
            Some(SorryServer {
                addr,
                port,
                fwd: sfwd,
                weight: 1,
                inhibit: sorry_inhibit,
            })
        }
    };

    let weight_sum: u64 = real_servers.iter().map(|r| r.weight.max(0) as u64).sum();
    let mut quorum = quorum.unwrap_or(1);
    if u64::from(quorum) > weight_sum {
        let to = weight_sum.min(u64::from(u32::MAX)) as u32;
        ctx.notes.push(format!(
            "{}: quorum {quorum} of {name} exceeds the real servers' total weight {weight_sum}: reduced to {to}, as keepalived does",
            n.loc
        ));
        quorum = to;
    }
    if hysteresis >= quorum && hysteresis > 0 {
        let to = quorum.saturating_sub(1);
        ctx.notes.push(format!(
            "{}: hysteresis {hysteresis} of {name} is not below quorum {quorum}: set to {to}, as keepalived does",
            n.loc
        ));
        hysteresis = to;
    }

    let mut laddrs = Vec::new();
    if let Some((c, g)) = laddr_group {
        let Some(addrs) = ctx.laddr_groups.get(&g) else {
            return err(&c, format!("no local_address_group `{g}'"));
        };
        if !real_servers.iter().any(|r| r.fwd == FwdMethod::FullNat)
            && sorry.as_ref().is_none_or(|s| s.fwd != FwdMethod::FullNat)
        {
            return err(&c, "local addresses are for FULLNAT real servers only");
        }
        laddrs = addrs.clone();
    }
    if real_servers.iter().any(|r| r.fwd == FwdMethod::FullNat) && laddrs.is_empty() {
        ctx.notes.push(format!(
            "{}: {name} has FULLNAT real servers but no laddr_group_name: add local addresses with xvsadm -P",
            n.loc
        ));
    }
    if ha_suspend && keys.iter().all(|k| k.is_fwmark()) {
        return err(
            n,
            "ha_suspend needs a virtual server address to watch (not a fwmark)",
        );
    }

    Ok(Some(VirtualServer {
        loc: n.loc.clone(),
        name,
        services,
        laddrs,
        real_servers,
        sorry,
        quorum,
        hysteresis,
        quorum_up,
        quorum_down,
        ha_suspend,
        omega,
    }))
}

fn fmt_ip(a: IpAddr) -> String {
    format!("[{a}]")
}

fn real_server(n: &Node) -> R<(RsDraft, Vec<Node>)> {
    leaf_args(n, 2)?;
    let mut d = RsDraft {
        node: n.clone(),
        addr: ip(n, 1)?,
        port: port(n, 2)?,
        fwd: None,
        weight: None,
        u_threshold: 0,
        l_threshold: 0,
        inherit: Inherit::default(),
        notify_up: None,
        notify_down: None,
    };
    let mut checks = Vec::new();
    for c in block(n)? {
        if d.inherit.take(c)? {
            continue;
        }
        match c.key() {
            "weight" => d.weight = Some(one_uint(c, 0, MAX_WEIGHT as u64)? as i32),
            "lvs_method" | "lb_kind" => d.fwd = Some(forwarding(c)?),
            "uthreshold" => d.u_threshold = one_uint(c, 0, i32::MAX as u64)? as u32,
            "lthreshold" => d.l_threshold = one_uint(c, 0, i32::MAX as u64)? as u32,
            "notify_up" => d.notify_up = Some(script(c)?),
            "notify_down" => d.notify_down = Some(script(c)?),
            "smtp_alert" => {
                if flag(c)? {
                    return err(c, "e-mail alerts are not supported by xvs");
                }
            }
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "UDP_CHECK" | "DNS_CHECK"
            | "PING_CHECK" => checks.push(c.clone()),
            "SMTP_CHECK" | "BFD_CHECK" | "FILE_CHECK" => {
                return err(c, "this checker is not supported by xvs")
            }
            _ => return err(c, "not supported by xvs in a real_server"),
        }
    }
    Ok((d, checks))
}

/// The connection settings of a checker.
#[derive(Default)]
struct Conn {
    ip: Option<IpAddr>,
    port: Option<u16>,
    bindto: Option<IpAddr>,
    bind_port: Option<u16>,
    bind_if: Option<String>,
    fwmark: Option<u32>,
    log_all_failures: bool,
}

fn checker(n: &Node, rs: &RealServer, rs_port: Option<u16>, up: &Inherit) -> R<Check> {
    leaf_args(n, 0)?;
    let kind_name = n.key();
    let connects = kind_name != "MISC_CHECK";
    let mut own = Inherit::default();
    let mut conn = Conn::default();
    // Checker-specific settings.
    let mut urls: Vec<Url> = Vec::new();
    let mut url_nodes: Vec<Node> = Vec::new();
    let mut http_protocol = HttpProtocol::V10;
    let mut http_vhost: Option<String> = None;
    let mut enable_sni = false;
    let mut sni_name: Option<String> = None;
    let mut tls_compliant = false;
    let mut fast_recovery = false;
    let mut misc: Option<Script> = None;
    let mut misc_timeout: Option<Duration> = None;
    let mut misc_dynamic = false;
    let mut misc_user: (Option<String>, Option<String>) = (None, None);
    let mut payload: Option<Vec<u8>> = None;
    let mut require_reply = false;
    let mut reply: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut min_len = 0usize;
    let mut max_len = 255usize;
    let mut dns_type = 6u16; // SOA
    let mut dns_name = ".".to_string();

    let is_http = matches!(kind_name, "HTTP_GET" | "SSL_GET");
    let is_ssl = kind_name == "SSL_GET";
    for c in block(n)? {
        let k = c.key();
        // virtualhost inside HTTP_GET is the checker's own (not inherited from below).
        if k == "virtualhost" && is_http {
            leaf(c, 1)?;
            http_vhost = Some(arg(c, 1)?.to_string());
            continue;
        }
        match k {
            "alpha" => own.alpha = Some(flag(c)?),
            "retry" | "nb_get_retry" if connects || k == "retry" => {
                own.retry = Some(one_uint(c, 0, u32::MAX as u64)? as u32)
            }
            "delay_before_retry" => own.delay_before_retry = Some(timer(c, 0.0)?),
            "warmup" => own.warmup = Some(timer(c, 0.0)?),
            "delay_loop" => own.delay_loop = Some(timer(c, 1e-6)?),
            "log_all_failures" => conn.log_all_failures = flag(c)?,
            "connect_ip" if connects => {
                leaf(c, 1)?;
                conn.ip = Some(ip(c, 1)?);
            }
            "connect_port" if connects => {
                leaf(c, 1)?;
                conn.port = Some(uint(c, 1, 1, 65535)? as u16);
            }
            "bindto" if connects => {
                leaf(c, 1)?;
                conn.bindto = Some(ip(c, 1)?);
            }
            "bind_port" if connects => {
                leaf(c, 1)?;
                conn.bind_port = Some(uint(c, 1, 1, 65535)? as u16);
            }
            "bind_if" if connects => {
                leaf(c, 1)?;
                let i = arg(c, 1)?;
                if i.is_empty() || i.len() > 15 {
                    return err(c, format!("`{i}' is not an interface name"));
                }
                conn.bind_if = Some(i.to_string());
            }
            "fwmark" if connects => {
                conn.fwmark = Some(one_uint(c, 0, u32::MAX as u64)? as u32);
            }
            "connect_timeout" if connects => own.connect_timeout = Some(timer(c, 1e-6)?),
            "http_protocol" if is_http => {
                leaf(c, 1)?;
                http_protocol = match arg(c, 1)? {
                    "1.0" => HttpProtocol::V10,
                    "1.0C" | "1.0c" => HttpProtocol::V10C,
                    "1.1" => HttpProtocol::V11,
                    v => return err(c, format!("unknown HTTP version `{v}' (1.0, 1.0C, 1.1)")),
                };
            }
            "fast_recovery" if is_http => fast_recovery = flag(c)?,
            "enable_sni" if is_ssl => enable_sni = flag(c)?,
            "sni_name" if is_ssl => {
                leaf(c, 1)?;
                sni_name = Some(arg(c, 1)?.to_string());
                enable_sni = true;
            }
            "tls_compliant" if is_ssl => tls_compliant = flag(c)?,
            "url" if is_http => url_nodes.push(c.clone()),
            "misc_path" if !connects => misc = Some(script(c)?),
            "misc_timeout" if !connects => {
                misc_timeout = Some(Duration::from_secs(one_uint(c, 0, u32::MAX as u64)?))
            }
            "misc_dynamic" if !connects => misc_dynamic = flag(c)?,
            "user" if !connects => {
                leaf(c, 2)?;
                arg(c, 1)?;
                misc_user = user_group(c, 1)?;
            }
            "payload" if kind_name == "UDP_CHECK" => {
                if c.args().is_empty() {
                    return err(c, "needs a hex string");
                }
                let (b, m) = hex(c, &c.args().join(" "), false)?;
                debug_assert!(m.iter().all(|&x| x == 0xff));
                payload = Some(b);
            }
            "require_reply" if kind_name == "UDP_CHECK" => {
                require_reply = true;
                if !c.args().is_empty() {
                    reply = Some(hex(c, &c.args().join(" "), true)?);
                }
            }
            "min_reply_length" if kind_name == "UDP_CHECK" => {
                min_len = one_uint(c, 0, 65535)? as usize
            }
            "max_reply_length" if kind_name == "UDP_CHECK" => {
                max_len = one_uint(c, 0, 65535)? as usize
            }
            "type" if kind_name == "DNS_CHECK" => {
                leaf(c, 1)?;
                dns_type = match arg(c, 1)?.to_ascii_uppercase().as_str() {
                    "A" => 1,
                    "NS" => 2,
                    "CNAME" => 5,
                    "SOA" => 6,
                    "MX" => 15,
                    "TXT" => 16,
                    "AAAA" => 28,
                    t => {
                        return err(
                            c,
                            format!("unknown query type `{t}' (A|NS|CNAME|SOA|MX|TXT|AAAA)"),
                        )
                    }
                };
            }
            "name" if kind_name == "DNS_CHECK" => {
                leaf(c, 1)?;
                let v = arg(c, 1)?;
                if v.is_empty() || v.len() > 253 || v.split('.').any(|l| l.len() > 63) {
                    return err(c, format!("invalid domain name `{v}'"));
                }
                dns_name = v.to_string();
            }
            _ => return err(c, format!("not supported by xvs in {kind_name}")),
        }
    }
    for u in &url_nodes {
        urls.push(url(u, is_ssl)?);
    }

    let inh = own.over(up);
    let delay_loop = inh.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
    let (default_retry, default_dbr) = match kind_name {
        "HTTP_GET" | "SSL_GET" => (1, Some(Duration::from_secs(3))),
        "MISC_CHECK" => (0, Some(Duration::from_secs(1))),
        "DNS_CHECK" => (3, None),
        _ => (1, Some(Duration::from_secs(1))),
    };
    let kind = match kind_name {
        "TCP_CHECK" => CheckKind::Tcp,
        "PING_CHECK" => CheckKind::Ping,
        "HTTP_GET" | "SSL_GET" => {
            if urls.is_empty() {
                return err(n, "has no url");
            }
            let vhost = http_vhost.or(inh.virtualhost.clone());
            for u in &mut urls {
                if u.virtualhost.is_none() {
                    u.virtualhost = vhost.clone();
                }
            }
            CheckKind::Http(HttpCheck {
                urls,
                protocol: http_protocol,
                tls: is_ssl.then_some(TlsOptions {
                    enable_sni,
                    sni_name,
                    close_notify: tls_compliant,
                }),
                fast_recovery,
            })
        }
        "MISC_CHECK" => {
            let Some(mut s) = misc else {
                return err(n, "has no misc_path");
            };
            if misc_user.0.is_some() {
                s.user = misc_user.0;
                s.group = misc_user.1;
            }
            CheckKind::Misc(MiscCheck {
                script: s,
                timeout: misc_timeout.filter(|t| !t.is_zero()).unwrap_or(delay_loop),
                dynamic: misc_dynamic,
            })
        }
        "UDP_CHECK" => {
            if reply.is_some() && !require_reply {
                unreachable!("reply data comes with require_reply");
            }
            CheckKind::Udp(UdpCheck {
                payload,
                require_reply,
                reply,
                min_reply_len: min_len,
                max_reply_len: max_len,
            })
        }
        _ => CheckKind::Dns(DnsCheck {
            qtype: dns_type,
            name: dns_name,
        }),
    };
    let dst = if connects {
        let addr = conn.ip.unwrap_or(rs.addr);
        let port = match (&kind, conn.port.or(rs_port)) {
            (CheckKind::Ping, _) => 0,
            (_, Some(p)) => p,
            (_, None) => {
                return err(
                    n,
                    "no port to check: give connect_port (or a port on the real_server)",
                )
            }
        };
        if let Some(b) = conn.bindto {
            if b.is_ipv4() != addr.is_ipv4() {
                return err(
                    n,
                    "bindto and the address checked are of different families",
                );
            }
        }
        Some(SocketAddr::new(addr, port))
    } else {
        None
    };
    let spec = CheckSpec {
        kind,
        dst,
        bindto: conn.bindto,
        bind_port: conn.bind_port,
        bind_if: conn.bind_if,
        fwmark: conn.fwmark,
        connect_timeout: inh.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        retry: own.retry.or(up.retry).unwrap_or(default_retry),
        delay_before_retry: inh.delay_before_retry.or(default_dbr).unwrap_or(delay_loop),
        delay_loop,
        warmup: inh.warmup.unwrap_or(delay_loop),
        alpha: inh.alpha.unwrap_or(false),
        log_all_failures: conn.log_all_failures,
    };
    Ok(Check {
        loc: n.loc.clone(),
        spec,
    })
}

fn url(n: &Node, is_ssl: bool) -> R<Url> {
    leaf_args(n, 0)?;
    let mut path = None;
    let mut digest = None;
    let mut status: Vec<(u16, u16)> = Vec::new();
    let mut vhost = None;
    for c in block(n)? {
        match c.key() {
            "path" => {
                leaf(c, 1)?;
                path = Some(arg(c, 1)?.to_string());
            }
            "digest" => {
                leaf(c, 1)?;
                let v = arg(c, 1)?;
                let mut d = [0u8; 16];
                if v.len() != 32 {
                    return err(
                        c,
                        format!("digest `{v}' must be 32 hex digits (genhash's MD5)"),
                    );
                }
                for (i, b) in d.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&v[2 * i..2 * i + 2], 16)
                        .or_else(|_| err(c, format!("digest `{v}' is not hex")))?;
                }
                digest = Some(d);
            }
            "status_code" => {
                if c.children.is_some() || c.args().is_empty() {
                    return err(c, "takes status codes or ranges (200, 200-299)");
                }
                for a in c.args() {
                    let (lo, hi) = a.split_once('-').unwrap_or((a, a));
                    match (lo.parse::<u16>(), hi.parse::<u16>()) {
                        (Ok(l), Ok(h)) if (100..=599).contains(&l) && (l..=599).contains(&h) => {
                            status.push((l, h))
                        }
                        _ => return err(c, format!("invalid status code `{a}' (100-599)")),
                    }
                }
            }
            "virtualhost" => {
                leaf(c, 1)?;
                vhost = Some(arg(c, 1)?.to_string());
            }
            "tls_compliant" if is_ssl => {
                flag(c)?;
            }
            k if k.starts_with("regex") => {
                return err(c, "regular expression checks are not supported by xvs")
            }
            _ => return err(c, "not supported by xvs in a url"),
        }
    }
    let Some(path) = path else {
        return err(n, "url has no path");
    };
    if status.is_empty() {
        status.push((200, 299));
    }
    Ok(Url {
        path,
        digest,
        status,
        virtualhost: vhost,
    })
}

/// keepalived's free-form hex (`Ab12f 3 456` is AB 12 0F 03 45 06: pairs
/// from the left, a last odd digit a byte of its own); with `masks`, X
/// digits match anything.
fn hex(n: &Node, s: &str, masks: bool) -> R<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut mask = Vec::new();
    for word in s.split_whitespace() {
        let digits: Vec<char> = word.chars().collect();
        // Pairs from the left; a last odd digit is a byte by itself.
        let chunks = digits.chunks(2);
        for ch in chunks {
            let mut b = 0u8;
            let mut m = 0u8;
            for &c in ch {
                b <<= 4;
                m <<= 4;
                if masks && (c == 'x' || c == 'X') {
                    continue;
                }
                match c.to_digit(16) {
                    Some(v) => {
                        b |= v as u8;
                        m |= 0xf;
                    }
                    None => return err(n, format!("`{word}' is not hex")),
                }
            }
            data.push(b);
            mask.push(m);
        }
    }
    if data.is_empty() {
        return err(n, "empty hex string");
    }
    Ok((data, mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Loc;

    fn lenient_hex(s: &str, masks: bool) -> (Vec<u8>, Vec<u8>) {
        let n = Node {
            loc: Loc {
                file: std::sync::Arc::new("t".into()),
                line: 1,
            },
            words: vec!["payload".into()],
            children: None,
        };
        hex(&n, s, masks).unwrap()
    }

    #[test]
    fn hex_strings_read_as_keepalived_reads_them() {
        // The man page's example: AB 12 0F 03 45 06 54 64 43 12 03.
        assert_eq!(
            lenient_hex("Ab12f 3 456 546443123", false).0,
            [0xab, 0x12, 0x0f, 0x03, 0x45, 0x06, 0x54, 0x64, 0x43, 0x12, 0x03]
        );
        let (d, m) = lenient_hex("1x ff", true);
        assert_eq!(d, [0x10, 0xff]);
        assert_eq!(m, [0xf0, 0xff]);
    }
}
