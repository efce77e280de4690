//! Plain-data descriptions of services and destinations, as an operator gives them.
//!
//! These are what `xvsadm` sends, what `-S` prints and what the service table
//! validates; the live objects (with counters) are in [`super::table`] and [`super::dest`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// The protocol of a service: TCP or UDP (the table refuses any other; SCTP
/// is not supported). The same type the parse and the steering keys use.
pub use crate::wire::ip::IpProtocol as Protocol;

/// Address family (of a service, a dest, a packet).
pub use crate::addr::Af;

/// What identifies a virtual service: protocol + VIP + port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceKey {
    /// A protocol, address and port (`-t`/`-u`).
    Addr {
        /// The protocol.
        proto: Protocol,
        /// The virtual address.
        addr: IpAddr,
        /// The virtual port (0: every port).
        port: u16,
    },
    /// xvs assigns marks itself from the mark table of its config (XDP sees no skb mark).
    Fwmark {
        /// The firewall mark (`-f`).
        mark: u32,
        /// The address family of its real servers.
        af: Af,
    },
}

impl ServiceKey {
    /// The address family of the service.
    pub fn af(&self) -> Af {
        match self {
            ServiceKey::Addr { addr, .. } => Af::of(addr),
            ServiceKey::Fwmark { af, .. } => *af,
        }
    }

    /// The service port (0 for fwmark services).
    pub fn port(&self) -> u16 {
        match self {
            ServiceKey::Addr { port, .. } => *port,
            ServiceKey::Fwmark { .. } => 0,
        }
    }

    /// Whether the service is a firewall-mark one.
    pub fn is_fwmark(&self) -> bool {
        matches!(self, ServiceKey::Fwmark { .. })
    }
}

impl fmt::Display for ServiceKey {
    /// Numeric form as ipvsadm -S -n prints it: `-t 10.0.0.1:80`, `-u [::1]:53`, `-f 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr { proto, addr, port } => {
                // A service is TCP or UDP (checked by the table).
                let opt = if *proto == Protocol::Udp { "-u" } else { "-t" };
                match addr {
                    IpAddr::V4(a) => write!(f, "{opt} {a}:{port}"),
                    IpAddr::V6(a) => write!(f, "{opt} [{a}]:{port}"),
                }
            }
            ServiceKey::Fwmark { mark, af: Af::V4 } => write!(f, "-f {mark}"),
            ServiceKey::Fwmark { mark, af: Af::V6 } => write!(f, "-f {mark} -6"),
        }
    }
}

/// How packets reach a destination (`-m`, `-g`, `-i`, `--fullnat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FwdMethod {
    /// NAT (`-m`): rewrite VIP:vport to RIP:rport, and back on the reply.
    Masq,
    /// Direct routing (`-g`, the default): only the destination MAC changes.
    Route,
    /// IPIP / ip6ip6 tunnel (`-i`).
    Tunnel,
    /// Full NAT (`--fullnat`): source to a local address too.
    FullNat,
}

impl FwdMethod {
    /// Name in `-L` output.
    pub const fn name(self) -> &'static str {
        match self {
            FwdMethod::Masq => "Masq",
            FwdMethod::Route => "Route",
            FwdMethod::Tunnel => "Tunnel",
            FwdMethod::FullNat => "FullNat",
        }
    }

    /// Option in `-S` output.
    pub const fn option(self) -> &'static str {
        match self {
            FwdMethod::Masq => "-m",
            FwdMethod::Route => "-g",
            FwdMethod::Tunnel => "-i",
            FwdMethod::FullNat => "--fullnat",
        }
    }

    /// Conn flag value of the kernel (`IP_VS_CONN_F_*`; FullNat as in the FNAT forks).
    pub const fn conn_flag(self) -> u32 {
        match self {
            FwdMethod::Masq => 0,
            FwdMethod::Tunnel => 2,
            FwdMethod::Route => 3,
            FwdMethod::FullNat => 5,
        }
    }

    /// The method of a kernel conn flag value ([`FwdMethod::conn_flag`]);
    /// any other value is direct routing (the default method).
    #[inline]
    pub const fn from_conn_flag(flag: u8) -> FwdMethod {
        match flag {
            0 => FwdMethod::Masq,
            2 => FwdMethod::Tunnel,
            5 => FwdMethod::FullNat,
            _ => FwdMethod::Route,
        }
    }
}

/// The schedulers xvs implements, named as `-s` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchedKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection.
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Maglev hashing.
    Mh,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
}

impl SchedKind {
    /// Every scheduler.
    pub const ALL: [SchedKind; 13] = [
        SchedKind::Rr,
        SchedKind::Wrr,
        SchedKind::Lc,
        SchedKind::Wlc,
        SchedKind::Lblc,
        SchedKind::Lblcr,
        SchedKind::Dh,
        SchedKind::Sh,
        SchedKind::Sed,
        SchedKind::Nq,
        SchedKind::Mh,
        SchedKind::Fo,
        SchedKind::Ovf,
    ];

    /// Name as `-s` takes it.
    pub const fn name(self) -> &'static str {
        match self {
            SchedKind::Rr => "rr",
            SchedKind::Wrr => "wrr",
            SchedKind::Lc => "lc",
            SchedKind::Wlc => "wlc",
            SchedKind::Lblc => "lblc",
            SchedKind::Lblcr => "lblcr",
            SchedKind::Dh => "dh",
            SchedKind::Sh => "sh",
            SchedKind::Sed => "sed",
            SchedKind::Nq => "nq",
            SchedKind::Mh => "mh",
            SchedKind::Fo => "fo",
            SchedKind::Ovf => "ovf",
        }
    }

    /// Looks a scheduler up by its `-s` name.
    pub fn from_name(s: &str) -> Option<SchedKind> {
        SchedKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for SchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Service flags, with the kernel's bit values (`IP_VS_SVC_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SvcFlags(pub u32);

impl SvcFlags {
    /// Persistent (`-p`).
    pub const PERSISTENT: u32 = 0x1;
    /// One-packet scheduling (`-o`).
    pub const ONEPACKET: u32 = 0x4;
    /// sh-fallback / mh-fallback / flag-1.
    pub const SCHED1: u32 = 0x8;
    /// sh-port / mh-port / flag-2.
    pub const SCHED2: u32 = 0x10;
    /// flag-3.
    pub const SCHED3: u32 = 0x20;
    /// The scheduler flag bits.
    pub const SCHED_MASK: u32 = Self::SCHED1 | Self::SCHED2 | Self::SCHED3;

    /// Whether flag `bit` is set.
    #[inline]
    pub const fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// Persistent (`-p`).
    pub fn persistent(self) -> bool {
        self.has(Self::PERSISTENT)
    }

    /// One-packet scheduling (`-o`).
    pub fn one_packet(self) -> bool {
        self.has(Self::ONEPACKET)
    }
}

/// Default persistence timeout of a bare `-p`, in seconds (ipvsadm's `6*60`).
pub const DEFAULT_PERSIST_TIMEOUT: u32 = 360;

/// A virtual service as configured by `-A`/`-E`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// What identifies the service.
    pub key: ServiceKey,
    /// The scheduler.
    pub sched: SchedKind,
    /// Its flags.
    pub flags: SvcFlags,
    /// Persistence timeout in seconds (meaningful with `SvcFlags::PERSISTENT`).
    pub timeout: u32,
    /// Persistence netmask as the kernel keeps it: for IPv4 the mask in host order
    /// (0xffffffff = /32), for IPv6 the prefix length (128).
    pub netmask: u32,
}

impl ServiceSpec {
    /// A service with ipvsadm's defaults: wlc, not persistent, host netmask.
    pub fn new(key: ServiceKey) -> Self {
        ServiceSpec {
            key,
            sched: SchedKind::Wlc,
            flags: SvcFlags::default(),
            timeout: 0,
            netmask: default_netmask(key.af()),
        }
    }
}

/// Host netmask of an address family, in [`ServiceSpec::netmask`]'s encoding.
pub const fn default_netmask(af: Af) -> u32 {
    match af {
        Af::V4 => 0xffff_ffff,
        Af::V6 => 128,
    }
}

/// A real server as configured by `-a`/`-e`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestSpec {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port.
    pub port: u16,
    /// How packets reach it.
    pub fwd: FwdMethod,
    /// 0..=65535; 0 = quiesced (no new connections).
    pub weight: i32,
    /// Upper connection threshold, 0 = none.
    pub u_threshold: u32,
    /// Lower connection threshold, 0 = 3/4 of the upper.
    pub l_threshold: u32,
}

impl DestSpec {
    /// A dest with ipvsadm's defaults: weight 1, direct routing, no thresholds.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        DestSpec {
            addr,
            port,
            fwd: FwdMethod::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
        }
    }
}

/// Maximum weight of a destination.
pub const MAX_WEIGHT: i32 = 65535;
