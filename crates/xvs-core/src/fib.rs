//! Where a rewritten frame goes next: the forwarding information the engine asks
//! for each transmitted frame (egress port, MAC addresses, MTU, our own address).
//!
//! The daemon implements [`Fib`] with a mirror of the kernel's routes and
//! neighbours; tests and benchmarks use [`StaticFib`].

use crate::addr::Addr;
use crate::frame::PortId;
use std::collections::HashMap;

/// How to reach a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Egress port (the daemon's index of the interface).
    pub port: PortId,
    /// Our MAC address on the egress port.
    pub src_mac: [u8; 6],
    /// The next hop's MAC address.
    pub dst_mac: [u8; 6],
    /// MTU of the egress interface.
    pub mtu: u16,
    /// Our address on the egress interface, of the destination's family (tunnel
    /// outer source, source of generated ICMP).
    pub src_addr: Addr,
}

/// The answer of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// The next hop.
    Ok(NextHop),
    /// A route exists but the neighbour's MAC is unknown; the implementation has
    /// asked the kernel to resolve it. The frame is dropped and counted.
    Unresolved,
    /// No route to the destination.
    NoRoute,
}

/// Route + neighbour lookup. Workers cache answers per destination and ask
/// again when [`Fib::generation`] changes.
pub trait Fib: Send + Sync {
    /// The next hop toward `dst`.
    fn resolve(&self, dst: &Addr) -> Resolve;

    /// Changes whenever any answer may have changed (routes, neighbours, links).
    fn generation(&self) -> u64 {
        0
    }
}

/// A fixed table of hosts and an optional default next hop.
#[derive(Debug, Default, Clone)]
pub struct StaticFib {
    hosts: HashMap<Addr, NextHop>,
    default: Option<NextHop>,
}

impl StaticFib {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directly reachable host.
    pub fn host(mut self, addr: Addr, nh: NextHop) -> Self {
        self.hosts.insert(addr, nh);
        self
    }

    /// Sets the next hop for everything else.
    pub fn default_route(mut self, nh: NextHop) -> Self {
        self.default = Some(nh);
        self
    }
}

impl Fib for StaticFib {
    #[inline]
    fn resolve(&self, dst: &Addr) -> Resolve {
        match self.hosts.get(dst).or(self.default.as_ref()) {
            Some(nh) => Resolve::Ok(*nh),
            None => Resolve::NoRoute,
        }
    }
}
