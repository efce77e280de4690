//! What a keepalived.conf means once read: virtual servers with their
//! services (expanded from groups), real servers, sorry server, quorum, and
//! each checker with every setting resolved to its keepalived default.

use crate::Loc;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use xvs_core::service::{DestSpec, FwdMethod, ServiceKey, ServiceSpec};

/// The whole LVS configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub virtual_servers: Vec<VirtualServer>,
    /// Things skipped on purpose, one line each, for the log.
    pub notes: Vec<String>,
    /// Every file read, the main one first.
    pub files: Vec<PathBuf>,
}

/// A program to run (`misc_path`, `notify_up`, `quorum_down`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub argv: Vec<String>,
    /// Run as this user (and group) instead of keepalived's default.
    pub user: Option<String>,
    pub group: Option<String>,
}

/// One `virtual_server` block.
#[derive(Debug, Clone)]
pub struct VirtualServer {
    pub loc: Loc,
    /// How keepalived names it in logs: `[10.0.0.1]:tcp:80`, `FWM 5`, `group web`.
    pub name: String,
    /// The xvs services it stands for (several for a group).
    pub services: Vec<ServiceSpec>,
    /// FULLNAT local addresses (`laddr_group_name`), per service family.
    pub laddrs: Vec<IpAddr>,
    pub real_servers: Vec<RealServer>,
    pub sorry: Option<SorryServer>,
    pub quorum: u32,
    pub hysteresis: u32,
    pub quorum_up: Option<Script>,
    pub quorum_down: Option<Script>,
    /// Suspend the checkers while none of the VIPs is on this host.
    pub ha_suspend: bool,
    /// Run the down notifiers when xvsd stops or the VS is removed.
    pub omega: bool,
}

impl VirtualServer {
    /// The addresses ha_suspend watches (none for fwmark services).
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .services
            .iter()
            .filter_map(|s| match s.key {
                ServiceKey::Addr { addr, .. } => Some(addr),
                ServiceKey::Fwmark { .. } => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `sorry_server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SorryServer {
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub fwd: FwdMethod,
    pub weight: i32,
    /// `sorry_server_inhibit`: kept in the table at weight 0 when not in use.
    pub inhibit: bool,
}

impl SorryServer {
    pub fn dest_spec(&self, svc: &ServiceKey, weight: i32) -> DestSpec {
        DestSpec {
            addr: self.addr,
            port: dest_port(self.fwd, self.port, svc),
            fwd: self.fwd,
            weight,
            u_threshold: 0,
            l_threshold: 0,
        }
    }
}

/// The port a dest gets in one service: NAT and FULLNAT may map ports (the
/// RS port, else the service's), DR and TUN cannot (the service's).
pub fn dest_port(fwd: FwdMethod, port: Option<u16>, svc: &ServiceKey) -> u16 {
    match fwd {
        FwdMethod::Masq | FwdMethod::FullNat => port.unwrap_or(svc.port()),
        FwdMethod::Route | FwdMethod::Tunnel => svc.port(),
    }
}

/// One `real_server` block.
#[derive(Debug, Clone)]
pub struct RealServer {
    pub loc: Loc,
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub fwd: FwdMethod,
    /// Configured weight (keepalived's iweight).
    pub weight: i32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// `inhibit_on_failure`: weight 0 instead of removal when down.
    pub inhibit: bool,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    pub checks: Vec<Check>,
}

impl RealServer {
    /// The dest in service `svc` at weight `weight`.
    pub fn dest_spec(&self, svc: &ServiceKey, weight: i32) -> DestSpec {
        DestSpec {
            addr: self.addr,
            port: dest_port(self.fwd, self.port, svc),
            fwd: self.fwd,
            weight,
            u_threshold: self.u_threshold,
            l_threshold: self.l_threshold,
        }
    }

    /// `addr:port` as keepalived prints a real server (port of the first service).
    pub fn name(&self, vs: &VirtualServer) -> String {
        let port = vs
            .services
            .first()
            .map(|s| dest_port(self.fwd, self.port, &s.key))
            .or(self.port)
            .unwrap_or(0);
        fmt_addr_port(self.addr, port)
    }
}

/// `[a.b.c.d]:p` as keepalived's FMT_RS prints it.
pub fn fmt_addr_port(a: IpAddr, port: u16) -> String {
    format!("[{a}]:{port}")
}

/// A checker and its resolved settings.
#[derive(Debug, Clone)]
pub struct Check {
    pub loc: Loc,
    pub spec: CheckSpec,
}

/// Everything that defines a checker (two equal specs on the same RS are the
/// same checker across a reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// Where to connect (`connect_ip`/`connect_port`, else the RS); None for
    /// MISC_CHECK.
    pub dst: Option<SocketAddr>,
    pub bindto: Option<IpAddr>,
    pub bind_port: Option<u16>,
    pub bind_if: Option<String>,
    /// SO_MARK on the checker's packets.
    pub fwmark: Option<u32>,
    pub connect_timeout: Duration,
    /// Retries of a failed check before the RS is taken out.
    pub retry: u32,
    pub delay_before_retry: Duration,
    pub delay_loop: Duration,
    /// The first check starts after a random delay up to this.
    pub warmup: Duration,
    /// Start failed (the RS joins only after a success).
    pub alpha: bool,
    pub log_all_failures: bool,
}

/// The checker types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    /// HTTP_GET, or SSL_GET when `tls` is set.
    Http(HttpCheck),
    Misc(MiscCheck),
    Udp(UdpCheck),
    Dns(DnsCheck),
    Ping,
}

impl CheckKind {
    /// The keyword, as in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "TCP_CHECK",
            CheckKind::Http(h) if h.tls.is_some() => "SSL_GET",
            CheckKind::Http(_) => "HTTP_GET",
            CheckKind::Misc(_) => "MISC_CHECK",
            CheckKind::Udp(_) => "UDP_CHECK",
            CheckKind::Dns(_) => "DNS_CHECK",
            CheckKind::Ping => "PING_CHECK",
        }
    }
}

/// `http_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpProtocol {
    /// HTTP/1.0 (the default).
    V10,
    /// HTTP/1.0 with `Connection: close`.
    V10C,
    /// HTTP/1.1 (with `Connection: close`).
    V11,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub urls: Vec<Url>,
    pub protocol: HttpProtocol,
    pub tls: Option<TlsOptions>,
    pub fast_recovery: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Send a server name in the handshake: `sni_name`, else the URL's
    /// virtualhost (`enable_sni`).
    pub enable_sni: bool,
    pub sni_name: Option<String>,
    /// Send close_notify before closing (`tls_compliant`).
    pub close_notify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub path: String,
    /// MD5 of the body, as genhash prints it.
    pub digest: Option<[u8; 16]>,
    /// Accepted status codes, as inclusive ranges (default 200-299).
    pub status: Vec<(u16, u16)>,
    /// Host header (url, checker, real server, virtual server, in that order).
    pub virtualhost: Option<String>,
}

impl Url {
    pub fn accepts(&self, code: u16) -> bool {
        self.status.iter().any(|&(a, b)| (a..=b).contains(&code))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiscCheck {
    pub script: Script,
    /// Killed (SIGTERM, then SIGKILL) after this.
    pub timeout: Duration,
    /// Exit status 2..=255 sets the weight to status - 2.
    pub dynamic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCheck {
    /// Sent as the datagram (random bytes when unset).
    pub payload: Option<Vec<u8>>,
    pub require_reply: bool,
    /// Bytes the reply must start with, and the mask of bits that count.
    pub reply: Option<(Vec<u8>, Vec<u8>)>,
    pub min_reply_len: usize,
    pub max_reply_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheck {
    /// Query type number (A, NS, CNAME, SOA, MX, TXT, AAAA).
    pub qtype: u16,
    pub name: String,
}
