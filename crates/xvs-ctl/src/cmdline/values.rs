//! ipvsadm's parse_* helpers: addresses (`host[:port]`, `[v6]:port`,
//! inet_aton's short forms), ports by /etc/services name, numbers as strtol
//! reads them, timeouts and scheduler flags.

use super::command::{fail, CmdError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use xvs_core::service::{SvcFlags, DEFAULT_PERSIST_TIMEOUT};

/// strtol-like: the whole string a decimal number within min..=max.
pub(super) fn number(s: &str, min: i64, max: i64) -> Option<i64> {
    let t = s.trim_start();
    let n: i64 = t.parse().ok()?;
    (min..=max).contains(&n).then_some(n)
}

/// A timeout in seconds within min..=max; none given: the persistence default.
pub(super) fn parse_timeout(s: Option<&str>, min: u32, max: u32) -> Result<u32, CmdError> {
    match s {
        None => Ok(DEFAULT_PERSIST_TIMEOUT),
        Some(v) => match number(v, min as i64, max as i64) {
            Some(n) => Ok(n as u32),
            None => fail(format!("invalid timeout value `{v}' specified")),
        },
    }
}

/// `-b`'s comma-separated flags for scheduler `sched`.
pub(super) fn parse_sched_flags(sched: &str, arg: &str) -> Result<u32, CmdError> {
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

/// The first IPv4 address of host `name` (ipvsadm's gethostbyname).
pub(super) fn host_v4(name: &str) -> Option<Ipv4Addr> {
    (name, 0)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v) => Some(v),
            _ => None,
        })
}

/// inet_aton: dotted quad, also the short forms `a`, `a.b`, `a.b.c` and hex/octal parts.
pub(super) fn inet_aton(s: &str) -> Option<Ipv4Addr> {
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
pub(super) fn parse_service(buf: &str, proto: &str) -> Option<(IpAddr, Option<u16>)> {
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
