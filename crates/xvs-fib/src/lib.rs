//! The kernel's links, addresses, routes and neighbours, mirrored over rtnetlink
//! and kept current, answering the engine's next-hop lookups ([`Fib`]).
//!
//! xvs transmits frames itself, so it needs the MAC address of every next hop.
//! The kernel still owns ARP/ND (the steering program passes them to it); this
//! mirror reads its tables, follows its change notifications, and when a next
//! hop is unknown asks the kernel to resolve it by sending it a probe datagram
//! (the frame that needed it is dropped and counted, never sent with a wrong MAC).

#![forbid(unsafe_code)]

pub mod msg;

use arc_swap::ArcSwap;
use msg::{IfAddr, Link, Neigh, Route};
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use xvs_core::addr::Addr;
use xvs_core::fib::{Fib, NextHop, Resolve};

#[derive(Debug, Error)]
pub enum FibError {
    #[error("netlink socket: {0}")]
    Socket(#[source] nix::Error),
    #[error("netlink dump of message type {kind}: {source}")]
    Dump {
        kind: u16,
        #[source]
        source: nix::Error,
    },
    #[error("netlink dump of message type {kind}: kernel error {code}")]
    Kernel { kind: u16, code: i32 },
    #[error("interface {0} not found")]
    NoInterface(String),
}

/// A neighbour as the mirror keeps it.
#[derive(Debug)]
struct NeighEntry {
    mac: Option<[u8; 6]>,
    usable: bool,
    stale: bool,
    /// A refresh probe was already requested for this version of the table.
    probed: AtomicBool,
}

/// One consistent copy of the kernel's tables.
#[derive(Debug, Default)]
pub struct Tables {
    links: HashMap<u32, Link>,
    addrs: Vec<IfAddr>,
    /// Longest prefix first.
    routes: Vec<Route>,
    neighs: HashMap<(u32, IpAddr), NeighEntry>,
    /// ifindex → port number of the daemon.
    ports: HashMap<u32, u16>,
}

fn prefix_match(dst: &IpAddr, net: &IpAddr, len: u8) -> bool {
    match (dst, net) {
        (IpAddr::V4(d), IpAddr::V4(n)) => {
            let len = len.min(32) as u32;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(*d) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(d), IpAddr::V6(n)) => {
            let len = len.min(128) as u32;
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(*d) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

/// What a lookup found, before it becomes a [`Resolve`].
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Ok(NextHop),
    /// Route found, neighbour unknown: probe this address.
    Unresolved {
        nexthop: IpAddr,
        ifindex: u32,
    },
    NoRoute,
}

impl Tables {
    /// Builds tables from parsed kernel objects; `ports` maps interface names to port numbers.
    pub fn build(
        links: Vec<Link>,
        addrs: Vec<IfAddr>,
        mut routes: Vec<Route>,
        neighs: Vec<Neigh>,
        ports: &[String],
    ) -> Tables {
        routes.sort_by(|a, b| b.dst_len.cmp(&a.dst_len).then(a.priority.cmp(&b.priority)));
        let mut t = Tables {
            routes,
            addrs,
            ..Default::default()
        };
        for l in links {
            if let Some(p) = ports.iter().position(|n| *n == l.name) {
                t.ports.insert(l.index, p as u16);
            }
            t.links.insert(l.index, l);
        }
        for n in neighs {
            let stale = n.state & msg::NUD_STALE != 0;
            t.neighs.insert(
                (n.index, n.addr),
                NeighEntry {
                    mac: n.mac,
                    usable: n.usable(),
                    stale,
                    probed: AtomicBool::new(false),
                },
            );
        }
        t
    }

    /// Every address of the namespace (all interfaces): the host's own.
    pub fn local_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().map(|a| a.addr)
    }

    /// The ifindex of interface `name`.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.links
            .values()
            .find(|l| l.name == name)
            .map(|l| l.index)
    }

    /// The MAC address of interface `ifindex` (all zeros for one without an
    /// Ethernet address).
    pub fn link_mac(&self, ifindex: u32) -> Option<[u8; 6]> {
        self.links.get(&ifindex).map(|l| l.mac)
    }

    /// The addresses of interface `ifindex`.
    pub fn addrs_of(&self, ifindex: u32) -> impl Iterator<Item = &IfAddr> {
        self.addrs.iter().filter(move |a| a.index == ifindex)
    }

    /// Route + neighbour lookup for `dst`. `want_probe` is set when a stale
    /// neighbour should be refreshed (once per table version).
    pub fn lookup(&self, dst: &IpAddr, want_probe: &mut Option<(IpAddr, u32)>) -> Lookup {
        let Some(r) = self
            .routes
            .iter()
            .find(|r| prefix_match(dst, &r.dst, r.dst_len))
        else {
            return Lookup::NoRoute;
        };
        let Some(&port) = self.ports.get(&r.oif) else {
            return Lookup::NoRoute;
        };
        let Some(link) = self.links.get(&r.oif) else {
            return Lookup::NoRoute;
        };
        let nexthop = r.gateway.unwrap_or(*dst);
        let src = r.prefsrc.or_else(|| {
            self.addrs_of(r.oif)
                .find(|a| a.addr.is_ipv4() == dst.is_ipv4() && !is_link_local(&a.addr))
                .or_else(|| {
                    self.addrs_of(r.oif)
                        .find(|a| a.addr.is_ipv4() == dst.is_ipv4())
                })
                .map(|a| a.addr)
        });
        match self.neighs.get(&(r.oif, nexthop)) {
            Some(n) if n.usable => {
                if n.stale && !n.probed.swap(true, Ordering::Relaxed) {
                    *want_probe = Some((nexthop, r.oif));
                }
                Lookup::Ok(NextHop {
                    port,
                    src_mac: link.mac,
                    dst_mac: n.mac.unwrap_or([0; 6]),
                    mtu: link.mtu.min(u16::MAX as u32) as u16,
                    src_addr: src.map(Addr::from).unwrap_or(Addr::UNSPECIFIED),
                })
            }
            Some(n) => {
                if !n.probed.swap(true, Ordering::Relaxed) {
                    *want_probe = Some((nexthop, r.oif));
                }
                Lookup::Unresolved {
                    nexthop,
                    ifindex: r.oif,
                }
            }
            None => Lookup::Unresolved {
                nexthop,
                ifindex: r.oif,
            },
        }
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn nl_socket(groups: u32) -> Result<OwnedFd, FibError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(FibError::Socket)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).map_err(FibError::Socket)?;
    Ok(fd)
}

/// Dumps one kind of object, returning each message payload of the answer.
fn dump(fd: &OwnedFd, kind: u16, seq: u32) -> Result<Vec<(u16, Vec<u8>)>, FibError> {
    send(
        fd.as_raw_fd(),
        &msg::dump_request(kind, seq),
        MsgFlags::empty(),
    )
    .map_err(|source| FibError::Dump { kind, source })?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|source| FibError::Dump { kind, source })?;
        for m in msg::messages(&buf[..n]) {
            if m.seq != seq {
                continue;
            }
            match m.kind {
                msg::NLMSG_DONE => return Ok(out),
                msg::NLMSG_ERROR => {
                    let code = msg::error_code(m.payload);
                    if code != 0 {
                        return Err(FibError::Kernel { kind, code });
                    }
                    return Ok(out);
                }
                k => out.push((k, m.payload.to_vec())),
            }
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Reads all four tables from the kernel.
pub fn read_tables(ports: &[String]) -> Result<Tables, FibError> {
    let fd = nl_socket(0)?;
    let links = dump(&fd, msg::RTM_GETLINK, 1)?
        .iter()
        .filter(|(k, _)| *k == msg::RTM_NEWLINK)
        .filter_map(|(_, p)| msg::parse_link(p))
        .collect();
    let addrs = dump(&fd, msg::RTM_GETADDR, 2)?
        .iter()
        .filter(|(k, _)| *k == msg::RTM_NEWADDR)
        .filter_map(|(_, p)| msg::parse_addr(p))
        .collect();
    let routes = dump(&fd, msg::RTM_GETROUTE, 3)?
        .iter()
        .filter(|(k, _)| *k == msg::RTM_NEWROUTE)
        .filter_map(|(_, p)| msg::parse_route(p))
        .collect();
    let neighs = dump(&fd, msg::RTM_GETNEIGH, 4)?
        .iter()
        .filter(|(k, _)| *k == msg::RTM_NEWNEIGH)
        .filter_map(|(_, p)| msg::parse_neigh(p))
        .collect();
    Ok(Tables::build(links, addrs, routes, neighs, ports))
}

/// The mirror: lock-free lookups for the workers, kept current by a thread that
/// follows the kernel's notifications, and a thread that probes unresolved hops.
pub struct KernelFib {
    tables: ArcSwap<Tables>,
    ports: Vec<String>,
    probes: crossbeam::queue::ArrayQueue<(IpAddr, u32)>,
    stop: AtomicBool,
    generation: AtomicU64,
}

impl std::fmt::Debug for KernelFib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelFib")
            .field("ports", &self.ports)
            .finish()
    }
}

impl KernelFib {
    /// Reads the tables and starts following them. `ports` are the interface
    /// names the daemon transmits on, in port-number order.
    pub fn start(ports: Vec<String>) -> Result<Arc<KernelFib>, FibError> {
        let tables = read_tables(&ports)?;
        for p in &ports {
            if tables.ifindex(p).is_none() {
                return Err(FibError::NoInterface(p.clone()));
            }
        }
        let fib = Arc::new(KernelFib {
            tables: ArcSwap::from_pointee(tables),
            ports,
            probes: crossbeam::queue::ArrayQueue::new(1024),
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(1),
        });
        let listener = nl_socket(msg::GROUPS)?;
        let f = fib.clone();
        std::thread::Builder::new()
            .name("xvs-fib-follow".into())
            .spawn(move || f.follow(listener))
            .map_err(|e| FibError::Socket(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let f = fib.clone();
        std::thread::Builder::new()
            .name("xvs-fib-probe".into())
            .spawn(move || f.probe_loop())
            .map_err(|e| FibError::Socket(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
        Ok(fib)
    }

    /// The current tables.
    pub fn tables(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.tables.load()
    }

    /// Re-reads everything now.
    pub fn refresh(&self) -> Result<(), FibError> {
        self.tables.store(Arc::new(read_tables(&self.ports)?));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Stops the background threads at their next wake-up.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn follow(&self, fd: OwnedFd) {
        let mut buf = vec![0u8; 1 << 16];
        let _ = nix::sys::socket::setsockopt(
            &fd,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(1, 0),
        );
        let mut last = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let changed = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).is_ok_and(|n| n > 0);
            // Re-read on change (coalescing bursts) and every 10 s regardless.
            if changed {
                while recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
            }
            if changed || last.elapsed() > Duration::from_secs(10) {
                if let Err(e) = self.refresh() {
                    tracing::warn!("re-reading kernel tables: {e}");
                }
                last = Instant::now();
            }
        }
    }

    fn probe_loop(&self) {
        let v4 = UdpSocket::bind("0.0.0.0:0").ok();
        let v6 = UdpSocket::bind("[::]:0").ok();
        let mut recent: HashMap<IpAddr, Instant> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            let Some((addr, ifindex)) = self.probes.pop() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            if recent
                .get(&addr)
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
            {
                continue;
            }
            recent.insert(addr, Instant::now());
            if recent.len() > 4096 {
                recent.retain(|_, t| t.elapsed() < Duration::from_secs(5));
            }
            // Any datagram makes the kernel resolve the address (ARP / ND);
            // port 9 is "discard".
            let r = match addr {
                IpAddr::V4(_) => v4
                    .as_ref()
                    .map(|s| s.send_to(&[], SocketAddr::new(addr, 9))),
                IpAddr::V6(a) => v6
                    .as_ref()
                    .map(|s| s.send_to(&[], SocketAddrV6::new(a, 9, 0, ifindex))),
            };
            tracing::debug!(%addr, ?r, "asked the kernel to resolve a next hop");
        }
    }
}

impl Fib for KernelFib {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    #[inline]
    fn resolve(&self, dst: &Addr) -> Resolve {
        let t = self.tables.load();
        let mut probe = None;
        let r = match t.lookup(&dst.to_ip(), &mut probe) {
            Lookup::Ok(nh) => Resolve::Ok(nh),
            Lookup::Unresolved { nexthop, ifindex } => {
                probe.get_or_insert((nexthop, ifindex));
                Resolve::Unresolved
            }
            Lookup::NoRoute => Resolve::NoRoute,
        };
        if let Some(p) = probe {
            let _ = self.probes.push(p);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msg::NUD_REACHABLE;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tables() -> Tables {
        let links = vec![
            Link {
                index: 2,
                name: "cli".into(),
                mac: [2, 0, 0, 0, 0, 2],
                mtu: 1500,
            },
            Link {
                index: 3,
                name: "rs".into(),
                mac: [2, 0, 0, 0, 0, 3],
                mtu: 1400,
            },
        ];
        let addrs = vec![
            IfAddr {
                index: 2,
                addr: ip("10.77.0.1"),
                prefix_len: 24,
            },
            IfAddr {
                index: 3,
                addr: ip("10.77.1.1"),
                prefix_len: 24,
            },
        ];
        let route = |dst: &str, len, gw: Option<&str>, oif| Route {
            dst: ip(dst),
            dst_len: len,
            gateway: gw.map(ip),
            oif,
            prefsrc: None,
            priority: 0,
        };
        let routes = vec![
            route("0.0.0.0", 0, Some("10.77.0.254"), 2),
            route("10.77.0.0", 24, None, 2),
            route("10.77.1.0", 24, None, 3),
        ];
        let neighs = vec![
            Neigh {
                index: 3,
                addr: ip("10.77.1.11"),
                mac: Some([2, 0, 0, 0, 1, 11]),
                state: NUD_REACHABLE,
            },
            Neigh {
                index: 2,
                addr: ip("10.77.0.254"),
                mac: Some([2, 0, 0, 0, 0, 0xfe]),
                state: msg::NUD_STALE,
            },
        ];
        Tables::build(links, addrs, routes, neighs, &["cli".into(), "rs".into()])
    }

    #[test]
    fn connected_host_resolves_to_its_mac() {
        let t = tables();
        let mut p = None;
        let Lookup::Ok(nh) = t.lookup(&ip("10.77.1.11"), &mut p) else {
            panic!("should resolve")
        };
        assert_eq!(nh.port, 1);
        assert_eq!(nh.dst_mac, [2, 0, 0, 0, 1, 11]);
        assert_eq!(nh.src_mac, [2, 0, 0, 0, 0, 3]);
        assert_eq!(nh.mtu, 1400);
        assert_eq!(nh.src_addr.to_string(), "10.77.1.1");
        assert!(p.is_none());
    }

    #[test]
    fn default_route_uses_gateway_and_refreshes_stale_once() {
        let t = tables();
        let mut p = None;
        let Lookup::Ok(nh) = t.lookup(&ip("192.0.2.9"), &mut p) else {
            panic!("should resolve via the gateway")
        };
        assert_eq!(nh.dst_mac, [2, 0, 0, 0, 0, 0xfe]);
        assert_eq!(p, Some((ip("10.77.0.254"), 2)));
        let mut p2 = None;
        t.lookup(&ip("192.0.2.9"), &mut p2);
        assert!(p2.is_none(), "one probe per table version");
    }

    #[test]
    fn unknown_neighbour_is_unresolved() {
        let t = tables();
        let mut p = None;
        assert_eq!(
            t.lookup(&ip("10.77.1.12"), &mut p),
            Lookup::Unresolved {
                nexthop: ip("10.77.1.12"),
                ifindex: 3
            }
        );
        assert_eq!(t.lookup(&ip("fd77::1"), &mut p), Lookup::NoRoute);
    }

    #[test]
    fn reads_the_kernel_tables_of_a_namespace() {
        xvs_netns::require_root();
        let p = xvs_netns::test_prefix();
        let a = xvs_netns::Netns::new(&format!("{p}-fib-a")).unwrap();
        let b = xvs_netns::Netns::new(&format!("{p}-fib-b")).unwrap();
        xvs_netns::veth("fa", &a, "fb", &b).unwrap();
        a.exec(&["ip", "addr", "add", "10.77.90.1/24", "dev", "fa"])
            .unwrap();
        b.exec(&["ip", "addr", "add", "10.77.90.2/24", "dev", "fb"])
            .unwrap();
        a.exec(&["ip", "route", "add", "10.77.91.0/24", "via", "10.77.90.2"])
            .unwrap();
        let fib = a
            .run(|| KernelFib::start(vec!["fa".into()]).unwrap())
            .unwrap();
        let dst = Addr::from(ip("10.77.91.5"));
        // The gateway is unknown at first: unresolved, and a probe makes the kernel ARP.
        assert_eq!(fib.resolve(&dst), Resolve::Unresolved);
        let mut ok = None;
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            if let Resolve::Ok(nh) = fib.resolve(&dst) {
                ok = Some(nh);
                break;
            }
        }
        let nh = ok.expect("the probe made the kernel resolve the gateway and the mirror saw it");
        let mac_b = b.exec(&["cat", "/sys/class/net/fb/address"]).unwrap();
        let mac_b = String::from_utf8_lossy(&mac_b.stdout).trim().to_string();
        let got = nh
            .dst_mac
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(got, mac_b);
        assert_eq!(nh.src_addr.to_string(), "10.77.90.1");
        assert_eq!(nh.port, 0);
        fib.stop();
    }
}
