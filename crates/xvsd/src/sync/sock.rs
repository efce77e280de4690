//! The multicast sockets, set up as the kernel's `make_send_sock` /
//! `make_receive_sock` do: bound to the interface, TTL as given, no loop back
//! (a director does not hear itself), the group joined on that interface.

use anyhow::{bail, Context, Result};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use xvs_ctl::DaemonSpec;

/// Where the messages go and which interface carries them.
pub struct Endpoint {
    pub group: SocketAddrV4,
    pub ifindex: u32,
    pub ifaddr: Ipv4Addr,
    pub mtu: u32,
}

impl Endpoint {
    pub fn of(spec: &DaemonSpec) -> Result<Endpoint> {
        let group = match spec.mcast_group {
            Some(IpAddr::V4(g)) => g,
            None => xvs_sync::wire::IP_VS_SYNC_GROUP,
            Some(IpAddr::V6(g)) => bail!("IPv6 sync group {g}: xvsd syncs over IPv4 only"),
        };
        let port = if spec.mcast_port == 0 {
            xvs_sync::wire::IP_VS_SYNC_PORT
        } else {
            spec.mcast_port
        };
        let ifn = &spec.mcast_ifn;
        let ifindex = nix::net::if_::if_nametoindex(ifn.as_str())
            .with_context(|| format!("sync interface {ifn}"))?;
        let ifaddr = nix::ifaddrs::getifaddrs()
            .context("reading the interface addresses")?
            .filter(|a| &a.interface_name == ifn)
            .find_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
            .with_context(|| format!("sync interface {ifn} has no IPv4 address"))?;
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{ifn}/mtu"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1500);
        Ok(Endpoint {
            group: SocketAddrV4::new(group, port),
            ifindex,
            ifaddr,
            mtu,
        })
    }
}

/// A socket that sends to the group on the interface and receives what is
/// sent to the group's port there. `bind_group`: bind to the group address
/// (a backup, as the kernel's) rather than to any (a master, which only
/// listens for xvs's snapshot requests).
pub fn open(ep: &Endpoint, spec: &DaemonSpec, bind_group: bool) -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")?;
    // Master and backup of one host share the port (each gets the group's traffic).
    s.set_reuse_address(true)?;
    s.bind_device(Some(spec.mcast_ifn.as_bytes()))
        .with_context(|| format!("binding to {}", spec.mcast_ifn))?;
    let ttl = if spec.mcast_ttl == 0 {
        1
    } else {
        spec.mcast_ttl
    };
    s.set_multicast_ttl_v4(ttl.into())?;
    s.set_multicast_loop_v4(false)?;
    s.set_multicast_if_v4(&ep.ifaddr)?;
    // A snapshot arrives as a burst.
    let _ = s.set_recv_buffer_size(8 << 20);
    let bind_ip = if bind_group {
        *ep.group.ip()
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    s.bind(&SocketAddr::from(SocketAddrV4::new(bind_ip, ep.group.port())).into())
        .with_context(|| format!("binding {bind_ip}:{}", ep.group.port()))?;
    s.join_multicast_v4_n(ep.group.ip(), &InterfaceIndexOrAddress::Index(ep.ifindex))
        .with_context(|| format!("joining {} on {}", ep.group.ip(), spec.mcast_ifn))?;
    s.set_read_timeout(Some(super::TICK))?;
    Ok(s.into())
}
