//! The lab's address plan: which namespaces, interfaces and addresses each mode gets.
//!
//! Everything lives in 10.77.0.0/16 and fd77::/64. IPv6 splits fd77::/64 into
//! /112 segments that mirror the IPv4 /24s, so `10.77.X.Y` pairs with
//! `fd77::X:Y` (the same digits, read as hex):
//!
//! | segment | IPv4 | IPv6 | who |
//! |---|---|---|---|
//! | client side | 10.77.0.0/24 | fd77::/112 | client .2 / ::2, director (router for TUN) .1 / ::1, VIP .100 / ::100 |
//! | RS side | 10.77.1.0/24 | fd77::1:0/112 | director (router for TUN) .1 / ::1:1, rsN .10+N / ::1:1N, LIPs .200-.201 / ::1:200-::1:201 |
//! | director link (TUN) | 10.77.2.0/24 | fd77::2:0/112 | router .1 / ::2:1, director .2 / ::2:2 |
//!
//! DR puts everyone on the client segment (rsN at 10.77.0.10+N / fd77::1N).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

/// Forwarding method the lab is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Nat,
    Dr,
    Tun,
    FullNat,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Nat, Mode::Dr, Mode::Tun, Mode::FullNat];

    /// The name used on the command line and in namespace names.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Dr => "dr",
            Mode::Tun => "tun",
            Mode::FullNat => "fullnat",
        }
    }

    /// The xvsadm forwarding option for the mode's dests.
    pub fn fwd_flag(self) -> &'static str {
        match self {
            Mode::Nat => "-m",
            Mode::Dr => "-g",
            Mode::Tun => "-i",
            Mode::FullNat => "--fullnat",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown lab mode `{s}` (nat, dr, tun or fullnat)"))
    }
}

/// Largest `--rs`: RS addresses must stay below the VIP (.100) on DR's shared segment.
pub const MAX_RS: usize = 50;
/// Link MTU on the TUN path (director → router → RS), so that a full-size
/// client packet plus a 40-byte IPv6 (or 20-byte IPv4) outer header fits
/// without fragmentation; the client side keeps 1500.
pub const TUN_PATH_MTU: u32 = 1540;
/// The service port and the RS port.
pub const PORT: u16 = 80;

/// What to build.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub mode: Mode,
    /// Number of real servers, 1..=[`MAX_RS`].
    pub rs: usize,
    /// Dual stack: also IPv6 addresses and an IPv6 service next to the IPv4 one.
    pub ipv6: bool,
    /// Scheduler for the lab's services.
    pub sched: String,
    /// TUN: decapsulate with the kernel's tunl0/ip6tnl0 instead of the XDP program.
    pub kernel_tunnel: bool,
    /// Namespace names are `<prefix>-client`, `<prefix>-dir`, ...; `xvs-<mode>`
    /// for the CLI, `xvst-<pid>-<mode>` for tests.
    pub prefix: String,
    /// Start xvsd and configure the rules (off: topology and RS servers only).
    pub start_director: bool,
    /// Where xvsd, xvsadm and xvs-lab live (default: `$XVS_BIN_DIR`, else the
    /// directory of the running executable, or its parent when that is `deps/`).
    pub bin_dir: Option<PathBuf>,
    /// The xvs-lab binary that runs the RS servers (default: this executable
    /// when it is xvs-lab, else `xvs-lab` in the bin dir).
    pub lab_bin: Option<PathBuf>,
}

impl LabOptions {
    /// Defaults for the CLI: prefix `xvs-<mode>`, 2 RS, rr, IPv4 only, with the director.
    pub fn new(mode: Mode) -> LabOptions {
        LabOptions {
            mode,
            rs: 2,
            ipv6: false,
            sched: "rr".to_string(),
            kernel_tunnel: false,
            prefix: format!("xvs-{mode}"),
            start_director: true,
            bin_dir: None,
            lab_bin: None,
        }
    }

    /// Defaults for tests: prefix `xvst-<pid>-<mode>` (unique to the test process).
    pub fn for_test(mode: Mode) -> LabOptions {
        LabOptions {
            prefix: format!("{}-{mode}", xvs_netns::test_prefix()),
            ..LabOptions::new(mode)
        }
    }
}

/// One lab real server.
#[derive(Debug, Clone)]
pub struct RealServer {
    /// `rs1`, `rs2`, ...: also the body its HTTP server answers.
    pub name: String,
    pub ns: String,
    pub addr4: Ipv4Addr,
    pub addr6: Option<Ipv6Addr>,
}

impl RealServer {
    /// The RS addresses, IPv4 first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let mut v = vec![IpAddr::V4(self.addr4)];
        v.extend(self.addr6.map(IpAddr::V6));
        v
    }
}

/// Names and addresses of a lab, computed from its options before anything is built.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub prefix: String,
    pub client_ns: String,
    pub dir_ns: String,
    /// The L2 switch (bridge br0) namespace: every mode has one on the RS side.
    pub sw_ns: String,
    /// The router namespace (TUN only).
    pub rt_ns: Option<String>,
    pub client4: Ipv4Addr,
    pub client6: Option<Ipv6Addr>,
    pub vip4: Ipv4Addr,
    pub vip6: Option<Ipv6Addr>,
    pub rs: Vec<RealServer>,
    /// FULLNAT local addresses (held by the director on its RS-side arm).
    pub laddrs4: Vec<Ipv4Addr>,
    pub laddrs6: Vec<Ipv6Addr>,
    /// The director's data interfaces, in `xvsd -i` order.
    pub dir_ifaces: Vec<&'static str>,
}

fn v4(c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, c, d)
}

/// `fd77::<seg>:<host>` with `host`'s decimal digits read as hex (10.77.1.11 ↔ fd77::1:11).
fn v6(seg: u8, host: u16) -> Ipv6Addr {
    let h = u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, u16::from(seg), h)
}

impl Plan {
    pub fn new(o: &LabOptions) -> Plan {
        let p = &o.prefix;
        let rs_seg = if o.mode == Mode::Dr { 0 } else { 1 };
        let rs = (1..=o.rs)
            .map(|i| RealServer {
                name: format!("rs{i}"),
                ns: format!("{p}-rs{i}"),
                addr4: v4(rs_seg, 10 + i as u8),
                addr6: o.ipv6.then(|| v6(rs_seg, 10 + i as u16)),
            })
            .collect();
        let fullnat = o.mode == Mode::FullNat;
        Plan {
            mode: o.mode,
            prefix: p.clone(),
            client_ns: format!("{p}-client"),
            dir_ns: format!("{p}-dir"),
            sw_ns: format!("{p}-sw"),
            rt_ns: (o.mode == Mode::Tun).then(|| format!("{p}-rt")),
            client4: v4(0, 2),
            client6: o.ipv6.then(|| v6(0, 2)),
            vip4: v4(0, 100),
            vip6: o.ipv6.then(|| v6(0, 100)),
            rs,
            laddrs4: if fullnat {
                vec![v4(1, 200), v4(1, 201)]
            } else {
                vec![]
            },
            laddrs6: if fullnat && o.ipv6 {
                vec![v6(1, 200), v6(1, 201)]
            } else {
                vec![]
            },
            dir_ifaces: match o.mode {
                Mode::Nat | Mode::FullNat => vec!["c0", "r0"],
                Mode::Dr | Mode::Tun => vec!["eth0"],
            },
        }
    }

    /// Every namespace of the lab, in the order they are made.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.sw_ns.clone()];
        v.extend(self.rt_ns.clone());
        v.push(self.client_ns.clone());
        v.push(self.dir_ns.clone());
        v.extend(self.rs.iter().map(|r| r.ns.clone()));
        v
    }

    /// The VIPs, IPv4 first.
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut v = vec![IpAddr::V4(self.vip4)];
        v.extend(self.vip6.map(IpAddr::V6));
        v
    }

    /// The local addresses for `family` (FULLNAT).
    pub fn laddrs(&self, vip: IpAddr) -> Vec<IpAddr> {
        match vip {
            IpAddr::V4(_) => self.laddrs4.iter().map(|a| IpAddr::V4(*a)).collect(),
            IpAddr::V6(_) => self.laddrs6.iter().map(|a| IpAddr::V6(*a)).collect(),
        }
    }
}

/// `addr:port` with IPv6 in brackets, as ipvsadm and URLs want it.
pub fn host_port(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// `http://addr:port/path` for curl.
pub fn url(addr: IpAddr, path: &str) -> String {
    format!("http://{}{path}", host_port(addr, PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_plan_matches_the_spec() {
        let p = Plan::new(&LabOptions::new(Mode::Nat));
        assert_eq!(p.client_ns, "xvs-nat-client");
        assert_eq!(p.client4.to_string(), "10.77.0.2");
        assert_eq!(p.vip4.to_string(), "10.77.0.100");
        assert_eq!(p.rs[0].addr4.to_string(), "10.77.1.11");
        assert_eq!(p.rs[1].ns, "xvs-nat-rs2");
        assert_eq!(p.dir_ifaces, ["c0", "r0"]);
        assert!(p.vip6.is_none() && p.rt_ns.is_none() && p.laddrs4.is_empty());
    }

    #[test]
    fn ipv6_plan_mirrors_ipv4_inside_fd77_64() {
        let o = LabOptions {
            ipv6: true,
            rs: 3,
            ..LabOptions::new(Mode::FullNat)
        };
        let p = Plan::new(&o);
        assert_eq!(p.client6.unwrap().to_string(), "fd77::2");
        assert_eq!(p.vip6.unwrap().to_string(), "fd77::100");
        let rs: Vec<String> = p.rs.iter().map(|r| r.addr6.unwrap().to_string()).collect();
        assert_eq!(rs, ["fd77::1:11", "fd77::1:12", "fd77::1:13"]);
        assert_eq!(p.laddrs6[1].to_string(), "fd77::1:201");
        assert_eq!(p.laddrs4[0].to_string(), "10.77.1.200");
        for a in p.rs.iter().flat_map(|r| r.addr6) {
            assert_eq!(
                a.segments()[..4],
                [0xfd77, 0, 0, 0],
                "{a} is inside fd77::/64"
            );
        }
    }

    #[test]
    fn dr_puts_rs_on_the_client_segment() {
        let o = LabOptions {
            ipv6: true,
            rs: MAX_RS,
            ..LabOptions::for_test(Mode::Dr)
        };
        let p = Plan::new(&o);
        assert!(p.prefix.starts_with("xvst-"));
        assert_eq!(p.rs[0].addr4.to_string(), "10.77.0.11");
        assert_eq!(p.rs[0].addr6.unwrap().to_string(), "fd77::11");
        assert!(p
            .rs
            .iter()
            .all(|r| r.addr4 != p.vip4 && r.addr4 != p.client4));
        assert_eq!(host_port(p.vips()[1], 80), "[fd77::100]:80");
        assert_eq!(url(p.vips()[0], "/"), "http://10.77.0.100:80/");
    }

    #[test]
    fn modes_parse_by_name() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>().unwrap(), m);
        }
        assert!("ipip".parse::<Mode>().is_err());
    }
}
