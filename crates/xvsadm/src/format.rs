//! ipvsadm 1.31's output formats, byte for byte: `-L`/`-l` in every variant,
//! `-S`, `-c`, `--timeout`, `--daemon`, and the laddr listing of `-G`.
//!
//! Each function builds the text ipvsadm's `printf`s would print for the same
//! data; the format strings are quoted next to the code. Reverse lookups go
//! through [`Names`] so output without `-n` is testable.

use crate::sort::{cmp_dests, cmp_services, glibc_qsort};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use xvs_core::engine::{Rates, Totals};
use xvs_core::service::{Af, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec, SvcFlags};
use xvs_ctl::cmdline::fmt;
use xvs_ctl::{ConnInfo, DaemonSpec, DaemonState, DestInfo, ServiceInfo};

/// Reverse lookups for output without `-n`.
pub trait Names {
    /// `gethostbyaddr`: the host name of an address.
    fn host(&self, addr: &IpAddr) -> Option<String>;
    /// `getservbyport`: the service name of a port (`proto` "tcp" or "udp").
    fn service(&self, port: u16, proto: &str) -> Option<String>;
}

/// The system's lookups: getnameinfo (hosts, DNS) and /etc/services.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemNames;

impl Names for SystemNames {
    fn host(&self, addr: &IpAddr) -> Option<String> {
        dns_lookup::lookup_addr(addr).ok()
    }
    fn service(&self, port: u16, proto: &str) -> Option<String> {
        xvs_ctl::cmdline::port_service(port, proto)
    }
}

/// No names at all (numbers everywhere).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNames;

impl Names for NoNames {
    fn host(&self, _: &IpAddr) -> Option<String> {
        None
    }
    fn service(&self, _: u16, _: &str) -> Option<String> {
        None
    }
}

/// `IP_VS_VERSION_CODE` 0x010201 as the header prints it.
const IPVS_VERSION: &str = "1.2.1";

/// C's `buf[n] = '\0'` on a string (cut at byte `n` if longer).
fn truncate(mut s: String, n: usize) -> String {
    if s.len() > n {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The /etc/services protocol of a service (TCP or UDP, table-checked).
fn proto_lookup_name(p: Protocol) -> &'static str {
    if p == Protocol::Udp {
        "udp"
    } else {
        "tcp"
    }
}

/// `addrport_to_anyname`: numeric `"%s%s%s:%u"` (IPv6 in brackets), else
/// host and service names where known; the result is cut to 59 bytes as its
/// `snprintf(buf, 60, ...)` cuts it.
pub fn addrport(
    addr: &IpAddr,
    port: u16,
    proto: Option<&str>,
    numeric: bool,
    names: &dyn Names,
) -> String {
    let (open, close) = match addr {
        IpAddr::V4(_) => ("", ""),
        IpAddr::V6(_) => ("[", "]"),
    };
    let s = if numeric {
        format!("{open}{addr}{close}:{port}")
    } else {
        let host = names.host(addr).unwrap_or_else(|| addr.to_string());
        let serv = proto
            .and_then(|p| names.service(port, p))
            .unwrap_or_else(|| port.to_string());
        format!("{open}{host}{close}:{serv}")
    };
    truncate(s, 59)
}

/// `print_largenum`: `--exact` gives `"%*llu"` of width max(9, len+1);
/// otherwise `%9llu` below 1e8, then `%8lluK` (/1e3) below 1e9, `%8lluM`
/// (/1e6) below 1e11, `%8lluG` (/1e9) below 1e14, else `%8lluT` (/1e12).
pub fn largenum(out: &mut String, i: u64, exact: bool) {
    if exact {
        let len = i.to_string().len();
        let w = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{i:>w$}");
        return;
    }
    let _ = if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

/// `print_title`.
pub fn title(out: &mut String, format: u32) {
    if format & fmt::STATS != 0 {
        // "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n"
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if format & fmt::RATE != 0 {
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if format & fmt::THRESHOLDS != 0 {
        // "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n"
        let _ = writeln!(
            out,
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if format & fmt::PERSISTENTCONN != 0 {
        // "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n"
        let _ = writeln!(
            out,
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else if format & fmt::TUN_INFO != 0 {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
        );
    } else if format & fmt::RULE == 0 {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        );
    }
}

/// The service's name: `-f %u [-6]` / `-t|-u addrport` for `-S`, `FWM  %u
/// [IPv6]` / `"%-4s %s"` of protocol and addrport for listings (cut to 33
/// bytes for IPv4). ipvsadm 1.31 printed marks with `%d` (negative above
/// 2^31); this prints `%u` like the fix that followed 1.31.
pub fn service_name(key: &ServiceKey, format: u32, names: &dyn Names) -> String {
    let rule = format & fmt::RULE != 0;
    match *key {
        ServiceKey::Fwmark { mark, af } => match (rule, af) {
            (true, Af::V4) => format!("-f {mark}"),
            (true, Af::V6) => format!("-f {mark} -6"),
            (false, Af::V4) => format!("FWM  {mark}"),
            (false, Af::V6) => format!("FWM  {mark} IPv6"),
        },
        ServiceKey::Addr { proto, addr, port } => {
            let vname = addrport(
                &addr,
                port,
                Some(proto_lookup_name(proto)),
                format & fmt::NUMERIC != 0,
                names,
            );
            if rule {
                let opt = if proto == Protocol::Udp { "-u" } else { "-t" };
                format!("{opt} {vname}")
            } else {
                let s = format!("{:<4} {vname}", proto.name());
                if addr.is_ipv6() {
                    s
                } else {
                    truncate(s, 33)
                }
            }
        }
    }
}

/// `print_sched_flags`: sh-*/mh-* names for sh/mh, flag-N for the others.
fn sched_flags(spec: &ServiceSpec) -> String {
    let f = spec.flags;
    let mut v: Vec<&str> = Vec::new();
    match spec.sched {
        SchedKind::Sh => {
            if f.has(SvcFlags::SCHED1) {
                v.push("sh-fallback");
            }
            if f.has(SvcFlags::SCHED2) {
                v.push("sh-port");
            }
        }
        SchedKind::Mh => {
            if f.has(SvcFlags::SCHED1) {
                v.push("mh-fallback");
            }
            if f.has(SvcFlags::SCHED2) {
                v.push("mh-port");
            }
        }
        _ => {
            if f.has(SvcFlags::SCHED1) {
                v.push("flag-1");
            }
            if f.has(SvcFlags::SCHED2) {
                v.push("flag-2");
            }
            if f.has(SvcFlags::SCHED3) {
                v.push("flag-3");
            }
        }
    }
    v.join(",")
}

fn fwd_name(f: FwdMethod) -> &'static str {
    f.name()
}

/// `fwd_switch` (xvs's FULLNAT saves as `--fullnat`).
fn fwd_switch(f: FwdMethod) -> &'static str {
    f.option()
}

/// The persistence part shared by `-L` (` persistent %u`, ` mask %s|%i`) and
/// `-S` (` -p %u`, ` -M %s|%i`).
fn persistence(out: &mut String, spec: &ServiceSpec, p: &str, m: &str) {
    let _ = write!(out, " {p} {}", spec.timeout);
    match spec.key.af() {
        Af::V4 if spec.netmask != u32::MAX => {
            let _ = write!(out, " {m} {}", Ipv4Addr::from(spec.netmask));
        }
        Af::V6 if spec.netmask != 128 => {
            let _ = write!(out, " {m} {}", spec.netmask);
        }
        _ => {}
    }
}

/// `print_service_entry`: the service line and its dests (sorted unless
/// `--nosort`), plus, for `-S`, the xvs laddr lines of the service.
pub fn service_entry(
    out: &mut String,
    svc: &ServiceInfo,
    laddrs: &[IpAddr],
    format: u32,
    names: &dyn Names,
) {
    let spec = &svc.spec;
    let name = service_name(&spec.key, format, names);
    let sched_bits = spec.flags.0 & SvcFlags::SCHED_MASK != 0;
    if format & fmt::RULE != 0 {
        let _ = write!(out, "-A {name} -s {}", spec.sched.name());
        if spec.flags.persistent() {
            persistence(out, spec, "-p", "-M");
        }
        if spec.flags.one_packet() {
            out.push_str(" -o");
        }
        if sched_bits {
            let _ = write!(out, " -b {}", sched_flags(spec));
        }
    } else if format & fmt::STATS != 0 {
        let _ = write!(out, "{name:<33}");
        stats(out, &svc.stats, format);
    } else if format & fmt::RATE != 0 {
        let _ = write!(out, "{name:<33}");
        let r = &svc.rates;
        for v in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
            largenum(out, v, format & fmt::EXACT != 0);
        }
    } else {
        let _ = write!(out, "{name} {}", spec.sched.name());
        if sched_bits {
            let _ = write!(out, " ({})", sched_flags(spec));
        }
        if spec.flags.persistent() {
            persistence(out, spec, "persistent", "mask");
        }
        if spec.flags.one_packet() {
            out.push_str(" ops");
        }
    }
    out.push('\n');

    let mut dests: Vec<&DestInfo> = svc.dests.iter().collect();
    if format & fmt::NOSORT == 0 {
        glibc_qsort(&mut dests, &|a: &&DestInfo, b: &&DestInfo| {
            cmp_dests((&a.spec.addr, a.spec.port), (&b.spec.addr, b.spec.port))
        });
    }
    let proto = match spec.key {
        ServiceKey::Addr { proto, .. } => Some(proto_lookup_name(proto)),
        // ipvsadm sends TCP as the protocol of fwmark services.
        ServiceKey::Fwmark { .. } => Some("tcp"),
    };
    for d in dests {
        let e = &d.spec;
        let mut dname = addrport(&e.addr, e.port, proto, format & fmt::NUMERIC != 0, names);
        if format & fmt::RULE == 0 && e.addr.is_ipv4() {
            dname = truncate(dname, 28);
        }
        if format & fmt::RULE != 0 {
            // "-a %s -r %s %s -w %d\n"; tunnel dests add " --tun-type ipip".
            let _ = write!(
                out,
                "-a {name} -r {dname} {} -w {}",
                fwd_switch(e.fwd),
                e.weight
            );
            if e.fwd == FwdMethod::Tunnel {
                out.push_str(" --tun-type ipip");
            }
            out.push('\n');
        } else if format & fmt::STATS != 0 {
            // "  -> %-28s" + 5 largenums
            let _ = write!(out, "  -> {dname:<28}");
            stats(out, &d.stats, format);
            out.push('\n');
        } else if format & fmt::RATE != 0 {
            // "  -> %-28s %8llu %8llu %8llu" + 2 largenums
            let r: &Rates = &d.rates;
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                r.cps, r.inpps, r.outpps
            );
            largenum(out, r.inbps, format & fmt::EXACT != 0);
            largenum(out, r.outbps, format & fmt::EXACT != 0);
            out.push('\n');
        } else if format & fmt::THRESHOLDS != 0 {
            // "  -> %-28s %-10u %-10u %-10u %-10u\n"
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                e.u_threshold, e.l_threshold, d.activeconns, d.inactconns
            );
        } else if format & fmt::PERSISTENTCONN != 0 {
            // "  -> %-28s %-9u %-11u %-10u %-10u\n"
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                e.weight, d.persistconns, d.activeconns, d.inactconns
            );
        } else if format & fmt::TUN_INFO != 0 {
            // "  -> %-28s %-7s %-13s %-6d %-10u %-10u\n"; xvs tunnels are ipip.
            let info = if e.fwd == FwdMethod::Tunnel {
                "ipip"
            } else {
                "n/a"
            };
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {info:<13} {:<6} {:<10} {:<10}",
                fwd_name(e.fwd),
                e.weight,
                d.activeconns,
                d.inactconns
            );
        } else {
            // "  -> %-28s %-7s %-6d %-10u %-10u\n"
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                fwd_name(e.fwd),
                e.weight,
                d.activeconns,
                d.inactconns
            );
        }
    }
    if format & fmt::RULE != 0 {
        for l in laddrs {
            let _ = writeln!(out, "-P {name} -z {l}");
        }
    }
}

fn stats(out: &mut String, t: &Totals, format: u32) {
    for v in [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes] {
        largenum(out, v, format & fmt::EXACT != 0);
    }
}

/// Services in listing order: sorted with ipvsadm's comparator unless `--nosort`.
pub fn ordered(services: &[ServiceInfo], format: u32) -> Vec<&ServiceInfo> {
    let mut v: Vec<&ServiceInfo> = services.iter().collect();
    if format & fmt::NOSORT == 0 {
        glibc_qsort(&mut v, &|a: &&ServiceInfo, b: &&ServiceInfo| {
            cmp_services(&a.spec.key, &b.spec.key)
        });
    }
    v
}

/// `list_all`: the header (not for `-S`), the title and every service.
/// `laddrs` gives each service's local addresses for `-S`.
pub fn list_all(
    conn_tab_size: u32,
    services: &[ServiceInfo],
    laddrs: &dyn Fn(&ServiceKey) -> Vec<IpAddr>,
    format: u32,
    names: &dyn Names,
) -> String {
    let mut out = String::new();
    if format & fmt::RULE == 0 {
        let _ = writeln!(
            out,
            "IP Virtual Server version {IPVS_VERSION} (size={conn_tab_size})"
        );
    }
    title(&mut out, format);
    for s in ordered(services, format) {
        let l = if format & fmt::RULE != 0 {
            laddrs(&s.spec.key)
        } else {
            Vec::new()
        };
        service_entry(&mut out, s, &l, format, names);
    }
    out
}

/// `list_service`: the title and one service (no header).
pub fn list_service(svc: &ServiceInfo, format: u32, names: &dyn Names) -> String {
    let mut out = String::new();
    title(&mut out, format);
    service_entry(&mut out, svc, &[], format, names);
    out
}

/// `list_conn`: `IPVS connection entries`, the column titles and a row per
/// connection, `"%-3s %-6s %-11s %-18s %-18s %s\n"` (expiry as `%02d:%02d`).
/// xvs has no persistence engines, so rows never carry pe name/data and keep
/// the short form even with `--persistent-conn`, as ipvsadm does for rows
/// without them.
pub fn list_conns(conns: &[ConnInfo], format: u32, names: &dyn Names) -> String {
    let mut out = conns_header(format);
    out.push_str(&conn_rows(conns, format, names));
    out
}

/// The title and column titles of [`list_conns`] (printed before the rows,
/// which arrive in chunks).
pub fn conns_header(format: u32) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if format & fmt::PERSISTENTCONN != 0 {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    out
}

/// The rows of [`list_conns`] for some connections.
pub fn conn_rows(conns: &[ConnInfo], format: u32, names: &dyn Names) -> String {
    let mut out = String::new();
    let numeric = format & fmt::NUMERIC != 0;
    for c in conns {
        let proto = match c.proto.as_str() {
            "TCP" => Some("tcp"),
            "UDP" => Some("udp"),
            _ => None,
        };
        let cname = addrport(&c.caddr, c.cport, proto, numeric, names);
        let vname = addrport(&c.vaddr, c.vport, proto, numeric, names);
        let dname = addrport(&c.daddr, c.dport, proto, numeric, names);
        let expire = format!("{:02}:{:02}", c.expire_secs / 60, c.expire_secs % 60);
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.proto, expire, c.state, cname, vname, dname
        );
    }
    out
}

/// `list_timeout`: `"Timeout (tcp tcpfin udp): %d %d %d\n"`.
pub fn timeouts(tcp: u32, tcpfin: u32, udp: u32) -> String {
    format!("Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}\n")
}

/// `list_daemon`: per running daemon, master first,
/// `"%s sync daemon (mcast=%s, syncid=%d"`, then `", maxlen=%u"`,
/// `", group=%s"`, `", port=%u"`, `", ttl=%u"` for each value that is set, `")\n"`.
pub fn daemons(list: &[DaemonSpec]) -> String {
    let mut out = String::new();
    for state in [DaemonState::Master, DaemonState::Backup] {
        for d in list.iter().filter(|d| d.state == state) {
            let kind = match state {
                DaemonState::Master => "master",
                DaemonState::Backup => "backup",
            };
            let _ = write!(
                out,
                "{kind} sync daemon (mcast={}, syncid={}",
                d.mcast_ifn, d.syncid
            );
            if d.sync_maxlen != 0 {
                let _ = write!(out, ", maxlen={}", d.sync_maxlen);
            }
            if let Some(g) = d.mcast_group {
                let _ = write!(out, ", group={g}");
            }
            if d.mcast_port != 0 {
                let _ = write!(out, ", port={}", d.mcast_port);
            }
            if d.mcast_ttl != 0 {
                let _ = write!(out, ", ttl={}", d.mcast_ttl);
            }
            out.push_str(")\n");
        }
    }
    out
}

/// `-L --daemon --stats` (xvs): after the daemon lines, the sync counters
/// and knobs, one `name value` per line.
pub fn sync_stats(counters: &[(String, u64)]) -> String {
    let mut out = String::from("Connection sync (xvs):\n");
    for (n, v) in counters {
        let _ = writeln!(out, "  {n:<32} {v}");
    }
    out
}

/// `-L --knobs` (xvs): one `NAME VALUE` line per knob, in the order given;
/// what `--knob NAME=VALUE` takes back.
pub fn knobs(knobs: &[(String, i64)]) -> String {
    let mut out = String::new();
    for (n, v) in knobs {
        let _ = writeln!(out, "{n:<26} {v}");
    }
    out
}

/// `-G`, as the FULLNAT ipvsadm forks print local addresses:
/// `"%-20s %-8s %-20s %-10s %-10s\n"` titles, a `"%-20s %-8u \n"` line per
/// service (numeric address, number of local addresses) and a
/// `"%-20s %-8s %-20s %-10lu %-10u\n"` line per address (port conflicts and
/// connections: the control plane has no counters for them yet, so 0).
pub fn laddrs(pools: &[(ServiceKey, Vec<IpAddr>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:<20} {:<10} {:<10}",
        "VIP:VPORT", "TOTAL", "LADDR", "CONFLICTS", "CONNS"
    );
    for (key, list) in pools {
        let vname = match *key {
            ServiceKey::Addr { addr, port, .. } => addrport(&addr, port, None, true, &NoNames),
            ServiceKey::Fwmark { mark, .. } => format!("FWM  {mark}"),
        };
        let _ = writeln!(out, "{vname:<20} {:<8} ", list.len());
        for l in list {
            let _ = writeln!(
                out,
                "{:<20} {:<8} {:<20} {:<10} {:<10}",
                "",
                "",
                l.to_string(),
                0,
                0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
