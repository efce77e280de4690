//! `xvs-bench gen` and `xvs-bench sink`: the generator and the per-RS counter
//! that `run` uses, as stand-alone commands for one's own topologies.
//!
//! Both work inside a named network namespace and only toward addresses of
//! the project's lab range (10.77.0.0/16), and both stop on their own (time
//! or count), so a mistyped command cannot flood a real network.

use crate::gen::{Gen, GenSpec};
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xvs_netns::Netns;

/// The lab range every bench address must be in.
fn in_lab(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 10 && o[1] == 77
}

pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC address {s}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC address {s}"))
}

pub(crate) fn own_mac(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let out = ns
        .exec(&["cat", &format!("/sys/class/net/{dev}/address")])
        .with_context(|| format!("no interface {dev} in namespace {}", ns.name()))?;
    parse_mac(String::from_utf8_lossy(&out.stdout).trim())
}

/// The MAC the kernel would send `dst` to from `dev`: the next hop's
/// neighbour entry, resolved with one ping if it is not there yet.
fn next_hop_mac(ns: &Netns, dev: &str, dst: Ipv4Addr) -> Result<[u8; 6]> {
    let route = ns.exec(&["ip", "-4", "route", "get", &dst.to_string(), "oif", dev])?;
    let r = String::from_utf8_lossy(&route.stdout);
    let words: Vec<&str> = r.split_whitespace().collect();
    let hop = words
        .iter()
        .position(|w| *w == "via")
        .and_then(|i| words.get(i + 1))
        .map_or(dst.to_string(), |s| s.to_string());
    for attempt in 0..2 {
        let out = ns.exec(&["ip", "neigh", "show", &hop, "dev", dev])?;
        let t = String::from_utf8_lossy(&out.stdout);
        let w: Vec<&str> = t.split_whitespace().collect();
        if let Some(i) = w.iter().position(|x| *x == "lladdr") {
            if let Some(m) = w.get(i + 1) {
                return parse_mac(m);
            }
        }
        if attempt == 0 {
            // One datagram to the discard port makes the kernel resolve it.
            let to = std::net::SocketAddr::new(dst.into(), 9);
            let _ = ns.run(move || {
                std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"x", to))
            });
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    bail!("cannot resolve the MAC of next hop {hop} on {dev}; give --dst-mac")
}

#[derive(clap::Args)]
pub struct GenArgs {
    /// Namespace holding the interface (required: traffic stays in namespaces).
    #[arg(long)]
    netns: String,
    /// Interface to send on (a veth end). Its peer must run NAPI (an XDP
    /// program, as a director's interface has, or `ethtool -K PEER gro on`),
    /// or the kernel drops what is sent.
    #[arg(long)]
    dev: String,
    /// Destination address (in 10.77.0.0/16).
    #[arg(long)]
    dst: Ipv4Addr,
    #[arg(long, default_value_t = 80)]
    dport: u16,
    /// First source address (in 10.77.0.0/16); --src-addrs consecutive ones.
    #[arg(long, default_value = "10.77.128.1")]
    src: Ipv4Addr,
    #[arg(long, default_value_t = 16)]
    src_addrs: u32,
    #[arg(long, default_value_t = 1024)]
    sport: u16,
    /// Source ports per source address (flows = src-addrs x src-ports).
    #[arg(long, default_value_t = 64)]
    src_ports: u32,
    /// udp, syn (TCP SYN) or ack (TCP ACK).
    #[arg(long, default_value = "udp")]
    pattern: String,
    /// Frame size in bytes without FCS (60..=1514; 60 is a 64-byte wire frame).
    #[arg(long, default_value_t = 60)]
    len: usize,
    /// Packets per second, 0 = as fast as the core goes.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send (at most 600).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Stop after this many frames (0 = only the time limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Next hop's MAC (default: from the namespace's neighbour table).
    #[arg(long)]
    dst_mac: Option<String>,
    /// CPU to run the generator on.
    #[arg(long)]
    cpu: Option<usize>,
}

pub fn gen(a: GenArgs) -> Result<()> {
    if !in_lab(a.dst) || !in_lab(a.src) {
        bail!("--dst and --src must be in 10.77.0.0/16 (the lab range)");
    }
    if !(60..=1514).contains(&a.len) {
        bail!("--len must be 60..=1514");
    }
    if !(a.secs > 0.0 && a.secs <= 600.0) {
        bail!("--secs must be in (0, 600]");
    }
    let (proto, tcp_flags) = match a.pattern.as_str() {
        "udp" => (17, 0),
        "syn" => (6, 0x02),
        "ack" => (6, 0x10),
        p => bail!("--pattern {p}: want udp, syn or ack"),
    };
    let ns = Netns::existing(&a.netns);
    let src_mac = own_mac(&ns, &a.dev)?;
    let dst_mac = match &a.dst_mac {
        Some(m) => parse_mac(m)?,
        None => next_hop_mac(&ns, &a.dev, a.dst)?,
    };
    let spec = GenSpec {
        src_mac,
        dst_mac,
        saddr: a.src,
        daddr: a.dst,
        sport: a.sport,
        dport: a.dport,
        src_addrs: a.src_addrs.max(1),
        src_ports: a.src_ports.max(1),
        frame_len: a.len,
        rate: a.rate,
        cpu: a.cpu,
        proto,
        tcp_flags,
        budget: a.count,
        first_flow: 0,
    };
    let dev = a.dev.clone();
    let g = ns.run(move || {
        let ifindex = xvs_xdp::sys::ifindex(&dev).map_err(|e| anyhow::anyhow!("{e}"))?;
        Gen::start(ifindex, &spec)
    })??;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.secs);
    let mut last = (0u64, t0);
    println!("{:>6}  {:>12}  {:>10}", "secs", "sent", "Mpps");
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        let (sent, _) = g.counts();
        let now = Instant::now();
        let mpps = (sent - last.0) as f64 / (now - last.1).as_secs_f64() / 1e6;
        println!(
            "{:>6.1}  {:>12}  {:>10.3}",
            (now - t0).as_secs_f64(),
            sent,
            mpps
        );
        last = (sent, now);
        if a.count > 0 && sent >= a.count {
            break;
        }
    }
    let sent = g.stop()?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "sent {sent} frames of {} bytes in {secs:.2} s: {:.3} Mpps",
        a.len,
        sent as f64 / secs / 1e6
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct SinkArgs {
    /// Namespace holding the interface.
    #[arg(long)]
    netns: String,
    /// Interface whose ingress is counted.
    #[arg(long)]
    dev: String,
    /// Real-server addresses to count separately (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    rs: Vec<Ipv4Addr>,
    /// Seconds to count (at most 3600).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Let counted frames on to the stack instead of dropping them.
    #[arg(long)]
    accept: bool,
}

/// The packet count of an `nft list` rule line with a counter.
pub(crate) fn counter_packets(line: &str) -> Option<u64> {
    let i = line.find("counter packets ")?;
    line[i + 16..].split_whitespace().next()?.parse().ok()
}

/// Per-address packet counters from `nft list table netdev <table>`: the
/// counters of the rules that name an address, in rule order.
fn rule_counts(text: &str, rs: &[Ipv4Addr]) -> Vec<u64> {
    rs.iter()
        .map(|a| {
            let needle = format!("daddr {a} ");
            text.lines()
                .filter(|l| l.contains(&needle))
                .filter_map(counter_packets)
                .sum()
        })
        .collect()
}

pub fn sink(a: SinkArgs) -> Result<()> {
    if a.rs.iter().any(|r| !in_lab(*r)) {
        bail!("--rs addresses must be in 10.77.0.0/16 (the lab range)");
    }
    if !(a.secs > 0.0 && a.secs <= 3600.0) {
        bail!("--secs must be in (0, 3600]");
    }
    let ns = Netns::existing(&a.netns);
    let table = format!("xvs_sink_{}", std::process::id());
    let verdict = if a.accept { "accept" } else { "drop" };
    let mut script = format!(
        "nft add table netdev {table} && \
         nft add chain netdev {table} in '{{ type filter hook ingress device {} priority 0; }}'",
        a.dev
    );
    for r in &a.rs {
        script += &format!(" && nft add rule netdev {table} in ip daddr {r} counter {verdict}");
    }
    ns.sh(&script)
        .with_context(|| format!("installing the nft counters on {}", a.dev))?;
    // Removed however we leave (errors included).
    struct Cleanup<'a>(&'a Netns, String);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.exec(&["nft", "delete", "table", "netdev", &self.1]);
        }
    }
    let _c = Cleanup(&ns, table.clone());
    let read = || -> Result<Vec<u64>> {
        let out = ns.exec(&["nft", "list", "table", "netdev", &table])?;
        Ok(rule_counts(&String::from_utf8_lossy(&out.stdout), &a.rs))
    };
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.secs);
    let mut prev = (read()?, t0);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        let now_c = read()?;
        let now = Instant::now();
        let dt = (now - prev.1).as_secs_f64();
        let per: Vec<String> =
            a.rs.iter()
                .zip(now_c.iter().zip(&prev.0))
                .map(|(r, (n, p))| format!("{r} {:.3} Mpps", (n - p) as f64 / dt / 1e6))
                .collect();
        println!("{:>6.1}  {}", (now - t0).as_secs_f64(), per.join("  "));
        prev = (now_c, now);
    }
    let total: u64 = prev.0.iter().sum();
    let secs = t0.elapsed().as_secs_f64();
    for (r, n) in a.rs.iter().zip(&prev.0) {
        println!("{r}: {n} packets");
    }
    println!(
        "total {total} packets in {secs:.2} s: {:.3} Mpps",
        total as f64 / secs / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_per_address() {
        let text = "table netdev s {\n\tchain in {\n\t\ttype filter hook ingress device \"s0\" priority filter; policy accept;\n\t\tip daddr 10.77.61.11 counter packets 120 bytes 7200 drop\n\t\tip daddr 10.77.61.12 counter packets 7 bytes 420 drop\n\t}\n}\n";
        let rs: Vec<Ipv4Addr> = vec![
            "10.77.61.11".parse().unwrap(),
            "10.77.61.12".parse().unwrap(),
            "10.77.61.1".parse().unwrap(),
        ];
        assert_eq!(rule_counts(text, &rs), vec![120, 7, 0]);
        assert!(in_lab("10.77.3.4".parse().unwrap()));
        assert!(!in_lab("10.78.0.1".parse().unwrap()));
        assert_eq!(
            parse_mac("02:00:0a:4d:00:01").unwrap(),
            [2, 0, 10, 77, 0, 1]
        );
        assert!(parse_mac("02:00").is_err());
    }
}
