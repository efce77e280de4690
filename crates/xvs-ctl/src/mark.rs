//! fwmark classification rules as operators write them: the common iptables
//! mangle forms (`-d PREFIX -p tcp -m multiport --dports 80,443 -j MARK
//! --set-mark 1`, `--dport A:B`, `-s PREFIX`), parsed, checked, printed back
//! in one normal form, and expanded into the engine's [`MarkRule`]s (one per
//! port range, in order, so the first match still decides).
//!
//! XDP runs before netfilter, so xvs cannot read a mark iptables set: it
//! assigns marks itself from these rules. Anything a rule could say that xvs
//! would not honour is refused with the word it stumbled on, never ignored.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use xvs_core::engine::MarkRule;

/// Port ranges one rule may list (iptables' multiport limit).
pub const MAX_PORT_RANGES: usize = 15;

/// One mark rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MarkSpec {
    /// 6 (TCP), 17 (UDP), or None for both.
    pub proto: Option<u8>,
    /// Destination prefix (0.0.0.0/0 or ::/0 when the rule names none).
    pub dst: (IpAddr, u8),
    /// Source prefix, if the rule names one.
    pub src: Option<(IpAddr, u8)>,
    /// Destination port ranges (inclusive); empty: every port.
    pub ports: Vec<(u16, u16)>,
    pub mark: u32,
}

impl MarkSpec {
    /// The engine's rules for this one: a rule per port range, in order.
    pub fn rules(&self) -> Vec<MarkRule> {
        let ranges = if self.ports.is_empty() {
            vec![(0, 65535)]
        } else {
            self.ports.clone()
        };
        ranges
            .into_iter()
            .map(|ports| MarkRule {
                proto: self.proto,
                addr: self.dst.0,
                prefix_len: self.dst.1,
                ports,
                src: self.src.map(|s| s.0),
                src_prefix_len: self.src.map_or(0, |s| s.1),
                mark: self.mark,
            })
            .collect()
    }

    /// The rule a config file's `[[mark]]` entry describes.
    pub fn from_rule(r: &MarkRule) -> MarkSpec {
        MarkSpec {
            proto: r.proto,
            dst: (r.addr, r.prefix_len),
            src: r.src.map(|a| (a, r.src_prefix_len)),
            ports: if r.ports == (0, 65535) {
                Vec::new()
            } else {
                vec![r.ports]
            },
            mark: r.mark,
        }
    }

    /// The checks a rule must pass wherever it comes from (command line,
    /// config file, a control-socket client): the message says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.mark == 0 {
            return Err("a mark rule must set a non-zero mark (fwmark 0 is no mark)".into());
        }
        if let Some(p) = self.proto {
            if p != 6 && p != 17 {
                return Err(format!("mark rules match tcp or udp, not protocol {p}"));
            }
        }
        let max = |a: &IpAddr| if a.is_ipv4() { 32 } else { 128 };
        if self.dst.1 > max(&self.dst.0) {
            return Err(format!(
                "bad prefix length /{} for {}",
                self.dst.1, self.dst.0
            ));
        }
        if let Some((s, l)) = self.src {
            if s.is_ipv4() != self.dst.0.is_ipv4() {
                return Err("the source and destination prefixes are of different families".into());
            }
            if l > max(&s) {
                return Err(format!("bad prefix length /{l} for {s}"));
            }
        }
        if !self.ports.is_empty() && self.proto.is_none() {
            return Err("destination ports need -p tcp or -p udp".into());
        }
        if self.ports.len() > MAX_PORT_RANGES {
            return Err(format!(
                "at most {MAX_PORT_RANGES} ports or port ranges per rule"
            ));
        }
        if let Some((a, b)) = self.ports.iter().find(|(a, b)| a > b) {
            return Err(format!("port range {a}:{b} runs backwards"));
        }
        Ok(())
    }

    /// Parses a rule from its words (see the module documentation). The
    /// `iptables`/`ip6tables` command word, `-t mangle` and `-A`/`-I
    /// PREROUTING [n]` may lead, so lines of `iptables -S` or a script paste
    /// as they are.
    pub fn parse(words: &[String]) -> Result<MarkSpec, String> {
        let mut it = words.iter().map(String::as_str).peekable();
        let mut v6 = false;
        let (mut dst, mut src, mut proto, mut mark) = (None, None, None, None);
        let mut ports: Vec<(u16, u16)> = Vec::new();
        let mut seen_jump = false;
        let unsupported = |w: &str| {
            Err(format!(
                "unsupported in a mark rule: `{w}' (xvs takes -s, -d, -p tcp|udp, --dport, \
                 -m multiport --dports, -m tcp|udp, -j MARK --set-mark|--set-xmark)"
            ))
        };
        if let Some(&w) = it.peek() {
            if w == "iptables" || w == "ip6tables" {
                v6 = w == "ip6tables";
                it.next();
            }
        }
        let need =
            |w: &str, v: Option<&str>| v.map(str::to_string).ok_or(format!("`{w}' needs a value"));
        while let Some(w) = it.next() {
            match w {
                "-t" | "--table" => {
                    let t = need(w, it.next())?;
                    if t != "mangle" {
                        return Err(format!(
                            "only mangle table rules mark packets, not `-t {t}'"
                        ));
                    }
                }
                "-A" | "--append" | "-I" | "--insert" => {
                    let chain = need(w, it.next())?;
                    if chain != "PREROUTING" {
                        return Err(format!(
                            "xvs classifies arriving packets: the chain is PREROUTING, not `{chain}'"
                        ));
                    }
                    if (w == "-I" || w == "--insert")
                        && it.peek().is_some_and(|n| n.parse::<u32>().is_ok())
                    {
                        it.next();
                    }
                }
                "-6" | "--ipv6" => v6 = true,
                "-4" | "--ipv4" => v6 = false,
                "-d" | "--destination" | "--dst" => dst = Some(prefix(&need(w, it.next())?)?),
                "-s" | "--source" | "--src" => src = Some(prefix(&need(w, it.next())?)?),
                "-p" | "--protocol" => {
                    proto = match need(w, it.next())?.as_str() {
                        "tcp" | "6" => Some(6),
                        "udp" | "17" => Some(17),
                        "all" | "0" => None,
                        p => return Err(format!("mark rules match tcp or udp, not `-p {p}'")),
                    }
                }
                "-m" | "--match" => match need(w, it.next())?.as_str() {
                    "tcp" | "udp" | "multiport" => {}
                    m => return unsupported(&format!("-m {m}")),
                },
                "--dport" | "--destination-port" => {
                    ports.push(port_range(&need(w, it.next())?)?);
                }
                "--dports" | "--destination-ports" => {
                    for p in need(w, it.next())?.split(',') {
                        ports.push(port_range(p)?);
                    }
                }
                "-j" | "--jump" => {
                    let t = need(w, it.next())?;
                    if t != "MARK" {
                        return Err(format!("the target must be MARK, not `-j {t}'"));
                    }
                    seen_jump = true;
                }
                "--set-mark" | "--set-xmark" => {
                    let v = need(w, it.next())?;
                    let (value, mask) = match v.split_once('/') {
                        Some((a, m)) => (a, Some(m)),
                        None => (v.as_str(), None),
                    };
                    if let Some(m) = mask {
                        if number(m) != Some(0xffff_ffff) {
                            return Err(format!(
                                "a mark mask other than 0xffffffff cannot be honoured: `{v}'"
                            ));
                        }
                    }
                    mark = Some(number(value).ok_or(format!("bad mark `{value}'"))?);
                }
                w => return unsupported(w),
            }
        }
        if !seen_jump {
            return Err("a mark rule needs `-j MARK --set-mark N'".into());
        }
        let mark = mark.ok_or("a mark rule needs `--set-mark N'")?;
        let v6 = dst.map_or(
            src.map_or(v6, |s: (IpAddr, u8)| s.0.is_ipv6()),
            |d: (IpAddr, u8)| d.0.is_ipv6(),
        );
        let any: IpAddr = if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        };
        let spec = MarkSpec {
            proto,
            dst: dst.unwrap_or((any, 0)),
            src,
            ports,
            mark,
        };
        spec.check()?;
        Ok(spec)
    }
}

/// `a.b.c.d[/len]`, `x::y[/len]` (a bare address is a host prefix); the
/// host bits must be clear, as iptables prints rules.
fn prefix(s: &str) -> Result<(IpAddr, u8), String> {
    if s.starts_with('!') {
        return Err(format!("negated addresses are not supported: `{s}'"));
    }
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| format!("bad address `{s}'"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match l {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("bad prefix length in `{s}'")),
        },
    };
    Ok((mask(addr, len), len))
}

fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(v) & m).into())
        }
    }
}

/// `N` or `A:B` (iptables' range form).
fn port_range(s: &str) -> Result<(u16, u16), String> {
    let p = |x: &str| x.parse::<u16>().map_err(|_| format!("bad port `{s}'"));
    match s.split_once(':') {
        Some((a, b)) => Ok((p(a)?, p(b)?)),
        None => {
            let n = p(s)?;
            Ok((n, n))
        }
    }
}

fn number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

impl fmt::Display for MarkSpec {
    /// The normal form, in iptables-save's order, as `--add-mark` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((a, l)) = self.src {
            write!(f, "-s {a}/{l} ")?;
        }
        write!(f, "-d {}/{}", self.dst.0, self.dst.1)?;
        match self.proto {
            Some(6) => write!(f, " -p tcp")?,
            Some(17) => write!(f, " -p udp")?,
            _ => {}
        }
        let range = |(a, b): &(u16, u16)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        };
        match self.ports.as_slice() {
            [] => {}
            [one] => write!(f, " --dport {}", range(one))?,
            many => write!(
                f,
                " -m multiport --dports {}",
                many.iter().map(range).collect::<Vec<_>>().join(",")
            )?,
        }
        write!(f, " -j MARK --set-mark {}", self.mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MarkSpec, String> {
        MarkSpec::parse(&s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn the_common_iptables_forms() {
        let r = p("-d 10.77.0.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 1")
            .unwrap();
        assert_eq!(r.dst, ("10.77.0.100".parse().unwrap(), 32));
        assert_eq!(
            (r.proto, r.ports.clone(), r.mark),
            (Some(6), vec![(80, 80), (443, 443)], 1)
        );
        assert_eq!(
            r.to_string(),
            "-d 10.77.0.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 1"
        );
        assert_eq!(r.rules().len(), 2);
        let r = p("iptables -t mangle -A PREROUTING -d 10.77.2.0/28 -p udp -m udp --dport 1000:2000 -j MARK --set-xmark 0x7/0xffffffff").unwrap();
        assert_eq!((r.ports.clone(), r.mark), (vec![(1000, 2000)], 7));
        assert_eq!(
            r.to_string(),
            "-d 10.77.2.0/28 -p udp --dport 1000:2000 -j MARK --set-mark 7"
        );
        let r =
            p("ip6tables -t mangle -I PREROUTING 1 -s fd77:1::/64 -j MARK --set-mark 3").unwrap();
        assert_eq!(r.dst, ("::".parse().unwrap(), 0));
        assert_eq!(r.to_string(), "-s fd77:1::/64 -d ::/0 -j MARK --set-mark 3");
        // A bare address is a host; host bits of a prefix are cleared.
        assert_eq!(
            p("-d 10.77.0.9/24 -j MARK --set-mark 2")
                .unwrap()
                .dst
                .0
                .to_string(),
            "10.77.0.0"
        );
        // The normal form parses back to itself.
        for s in [
            "-d 10.77.0.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 1",
            "-s 10.77.0.0/24 -d 10.77.2.0/28 -j MARK --set-mark 2",
            "-d fd77::200/127 -p tcp --dport 80:81 -j MARK --set-mark 3",
        ] {
            assert_eq!(p(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        for (s, want) in [
            ("-d 10.0.0.1 -i eth0 -j MARK --set-mark 1", "`-i'"),
            ("-d 10.0.0.1 -j ACCEPT", "MARK, not `-j ACCEPT'"),
            ("-t nat -d 10.0.0.1 -j MARK --set-mark 1", "`-t nat'"),
            ("-A OUTPUT -d 10.0.0.1 -j MARK --set-mark 1", "`OUTPUT'"),
            ("-d 10.0.0.1 -p icmp -j MARK --set-mark 1", "`-p icmp'"),
            ("-d 10.0.0.1 --dport 80 -j MARK --set-mark 1", "need -p tcp"),
            ("-d 10.0.0.1 -j MARK --set-mark 0", "non-zero"),
            ("-d 10.0.0.1 -j MARK --set-mark 1/0xff", "mask"),
            ("-d !10.0.0.1 -j MARK --set-mark 1", "negated"),
            ("-d 10.0.0.1/33 -j MARK --set-mark 1", "prefix length"),
            (
                "-d 10.0.0.1 -m conntrack -j MARK --set-mark 1",
                "`-m conntrack'",
            ),
            (
                "-d 10.0.0.1 -p tcp --dport 90:80 -j MARK --set-mark 1",
                "backwards",
            ),
            ("-d 10.0.0.1 -s fd77::1 -j MARK --set-mark 1", "families"),
            ("-d 10.0.0.1", "-j MARK"),
        ] {
            let e = p(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
