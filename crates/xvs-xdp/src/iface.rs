//! Attaching xvs to a data interface: picks the backend (native XDP, generic
//! XDP, AF_PACKET), loads the steering programs bound to the shared key map,
//! and owns the attachments (detached when dropped or when the process dies).

use crate::bpf::elf::{Map, Object};
use crate::bpf::{sys, TcxLink, XdpLink, XdpMode};
use crate::error::{os, Error, Result};
use crate::steer::Steering;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How frames get from the interface to the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// XDP in the driver, AF_XDP sockets (zero-copy where the driver can).
    XdpNative,
    /// XDP on the skb (any driver), AF_XDP sockets in copy mode.
    XdpGeneric,
    /// TPACKET_V3 sockets with an eBPF socket filter; a tc ingress (tcx)
    /// program keeps the kernel from also handling the steered frames.
    AfPacket,
}

impl Backend {
    /// The order `Auto` tries.
    pub const ORDER: [Backend; 3] = [Backend::XdpNative, Backend::XdpGeneric, Backend::AfPacket];

    pub fn is_xdp(self) -> bool {
        !matches!(self, Backend::AfPacket)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::XdpNative => "xdp-native",
            Backend::XdpGeneric => "xdp-generic",
            Backend::AfPacket => "af-packet",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "xdp-native" | "native" | "xdp" => Ok(Backend::XdpNative),
            "xdp-generic" | "generic" | "skb" => Ok(Backend::XdpGeneric),
            "af-packet" | "afpacket" | "packet" => Ok(Backend::AfPacket),
            _ => Err(Error::UnknownBackend(s.to_string())),
        }
    }
}

/// Which backend to use on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Try native XDP, then generic XDP, then AF_PACKET.
    #[default]
    Auto,
    /// This one or fail.
    Force(Backend),
}

/// Per-interface counters of the steering program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Frames handed to xvs (XDP: redirected to a socket; AF_PACKET: dropped
    /// from the kernel's path by the guard).
    pub redirected: u64,
    /// Frames left to the kernel (XDP backends only).
    pub passed: u64,
    /// Owned frames that found no socket on their queue and went to the kernel.
    pub no_socket: u64,
    /// Frames addressed to another host's MAC (unicast, not the interface's
    /// own), left to the kernel without a look: it drops them as
    /// PACKET_OTHERHOST, or a bridge forwards them (both backends).
    pub other_host: u64,
}

/// struct if_mac of bpf/steer.c: the address's first 4 and last 2 bytes in
/// wire order, then `known` (0: no check).
fn if_mac_value(mac: Option<[u8; 6]>) -> [u8; 8] {
    let mut v = [0u8; 8];
    if let Some(m) = mac {
        v[..6].copy_from_slice(&m);
        v[6..].copy_from_slice(&1u16.to_ne_bytes());
    }
    v
}

/// Writes the interface MAC the XDP steering program compares destination
/// MACs with into its `xvs_ifmac` map (None: compare with nothing, take
/// frames whatever their destination MAC, as before the check existed).
pub fn write_if_mac(map: &Map, mac: Option<[u8; 6]>) -> Result<()> {
    map.update(&0u32.to_ne_bytes(), &if_mac_value(mac), sys::BPF_ANY)
        .map_err(|e| os(format!("map {}: write the interface MAC", map.def.name), e))
}

/// The MAC of interface `ifname` for the steering program: None, logged,
/// when it has none (not Ethernet) or it cannot be read; the program then
/// looks at every frame, as it would have without the check, rather than
/// leave every frame to a kernel that has no virtual services.
fn steer_mac(ifname: &str) -> Option<[u8; 6]> {
    match crate::sys::hw_addr(ifname) {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            tracing::warn!(
                ifname,
                "not an Ethernet interface: frames are taken whatever their destination MAC"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                ifname,
                error = %e,
                "cannot read the interface's MAC address: frames are taken whatever their destination MAC"
            );
            None
        }
    }
}

/// xvs attached to one interface.
pub struct Interface {
    name: String,
    ifindex: u32,
    backend: Backend,
    stats: Arc<Map>,
    /// XDP backends: the queue → socket map of this interface's program.
    xsks: Option<Arc<Map>>,
    /// XDP backends: the interface's own MAC as the program sees it.
    ifmac: Option<Arc<Map>>,
    /// AF_PACKET: the socket filter program (attached to each worker socket).
    filter: Option<OwnedFd>,
    _xdp: Option<XdpLink>,
    /// XDP backends: the program was loaded with BPF_F_XDP_HAS_FRAGS.
    frags: bool,
    _guard: Option<TcxLink>,
    _steering: Steering,
}

impl Interface {
    /// Attaches to `ifname` (in the calling thread's network namespace) with
    /// the backend chosen by `choice`; logs which one it got.
    pub fn attach(steering: &Steering, ifname: &str, choice: BackendChoice) -> Result<Interface> {
        let ifindex = crate::sys::ifindex(ifname)?;
        let obj = Object::parse(crate::bpf::STEER_OBJ)?;
        let order: &[Backend] = match &choice {
            BackendChoice::Auto => &Backend::ORDER,
            BackendChoice::Force(b) => std::slice::from_ref(b),
        };
        let mut last = None;
        for &b in order {
            match Self::try_attach(steering, &obj, ifname, ifindex, b) {
                Ok(i) => {
                    tracing::info!(ifname, backend = %b, "attached");
                    return Ok(i);
                }
                Err(e) => {
                    if choice == BackendChoice::Auto {
                        tracing::info!(ifname, backend = %b, error = %e, "backend unavailable, trying the next");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(Error::NothingToTry("backend")))
    }

    fn try_attach(
        steering: &Steering,
        obj: &Object,
        ifname: &str,
        ifindex: u32,
        backend: Backend,
    ) -> Result<Interface> {
        let stats = Map::create(obj.map("xvs_stats")?)?;
        let mut i = Interface {
            name: ifname.to_string(),
            ifindex,
            backend,
            stats: stats.clone(),
            xsks: None,
            ifmac: None,
            filter: None,
            _xdp: None,
            frags: false,
            _guard: None,
            _steering: steering.clone(),
        };
        match backend {
            Backend::XdpNative | Backend::XdpGeneric => {
                let xsks = Map::create(obj.map("xvs_xsks")?)?;
                // The MAC before the program runs: no frame is judged
                // against a blank one.
                let ifmac = Map::create(obj.map("xvs_ifmac")?)?;
                write_if_mac(&ifmac, steer_mac(ifname))?;
                let mode = if backend == Backend::XdpNative {
                    XdpMode::Native
                } else {
                    XdpMode::Generic
                };
                let maps = [steering.maps(), vec![&xsks, &stats, &ifmac]].concat();
                let (link, frags) = attach_xdp(obj, &maps, ifname, ifindex, mode)?;
                i._xdp = Some(link);
                i.frags = frags;
                i.xsks = Some(xsks);
                i.ifmac = Some(ifmac);
            }
            Backend::AfPacket => {
                let filter = obj.load(
                    "socket",
                    sys::BPF_PROG_TYPE_SOCKET_FILTER,
                    0,
                    &steering.maps(),
                )?;
                let guard = obj.load(
                    "tcx/ingress",
                    sys::BPF_PROG_TYPE_SCHED_CLS,
                    sys::BPF_TCX_INGRESS,
                    &[steering.maps(), vec![&stats]].concat(),
                )?;
                i._guard = Some(TcxLink::attach(&guard, ifname, ifindex)?);
                i.filter = Some(filter);
            }
        }
        Ok(i)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// XDP backends: the steering program takes multi-buffer frames
    /// (BPF_F_XDP_HAS_FRAGS).
    pub fn xdp_multi_buffer(&self) -> bool {
        self.frags
    }

    /// XDP backends: the MAC the steering program takes unicast frames for
    /// (None: no check). AF_PACKET: None, the kernel's own verdict
    /// (skb->pkt_type) is used, which follows the interface by itself.
    pub fn steer_mac(&self) -> Result<Option<[u8; 6]>> {
        let Some(m) = &self.ifmac else {
            return Ok(None);
        };
        let mut v = [0u8; 8];
        m.lookup(&0u32.to_ne_bytes(), &mut v)
            .map_err(|e| os(format!("{}: read the steering MAC", self.name), e))?;
        if u16::from_ne_bytes([v[6], v[7]]) == 0 {
            return Ok(None);
        }
        Ok(Some(v[..6].try_into().expect("6 bytes")))
    }

    /// XDP backends: tells the steering program the interface's MAC after a
    /// change (`ip link set dev X address ...`): from then on it takes the
    /// unicast frames addressed to `mac` and leaves those to the old one to
    /// the kernel. A no-op for AF_PACKET (see [`Interface::steer_mac`]).
    pub fn set_steer_mac(&self, mac: Option<[u8; 6]>) -> Result<()> {
        match &self.ifmac {
            Some(m) => write_if_mac(m, mac),
            None => Ok(()),
        }
    }

    /// Puts AF_XDP socket `fd` in the slot of RX queue `queue`.
    pub(crate) fn register_socket(&self, queue: u32, fd: RawFd) -> Result<()> {
        let xsks = self.xsks.as_ref().ok_or_else(|| Error::NotXdp {
            iface: self.name.clone(),
        })?;
        if queue >= xsks.def.max_entries {
            return Err(Error::QueueBeyondMap {
                iface: self.name.clone(),
                queue,
            });
        }
        xsks.update(
            &queue.to_ne_bytes(),
            &(fd as u32).to_ne_bytes(),
            sys::BPF_ANY,
        )
        .map_err(|e| {
            os(
                format!("{}: register AF_XDP socket for queue {queue}", self.name),
                e,
            )
        })
    }

    /// The socket filter for AF_PACKET sockets.
    pub(crate) fn filter_fd(&self) -> Option<RawFd> {
        self.filter.as_ref().map(|f| f.as_raw_fd())
    }

    /// The steering program's counters, summed over CPUs.
    pub fn steer_stats(&self) -> Result<SteerStats> {
        let len = self
            .stats
            .lookup_len()
            .map_err(|e| os(format!("{}: size the steering counters", self.name), e))?;
        let mut out = [0u64; 4];
        for (idx, o) in out.iter_mut().enumerate() {
            let mut v = vec![0u8; len];
            self.stats
                .lookup(&(idx as u32).to_ne_bytes(), &mut v)
                .map_err(|e| os(format!("{}: read steering counters", self.name), e))?;
            *o = v
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
                .sum();
        }
        Ok(SteerStats {
            redirected: out[0],
            passed: out[1],
            no_socket: out[2],
            other_host: out[3],
        })
    }
}

/// Loads and attaches the XDP steering program, multi-buffer capable
/// (BPF_F_XDP_HAS_FRAGS) where the kernel and the driver take it: frames
/// larger than a page (GSO/GRO super-frames under generic XDP, jumbo frames)
/// then reach the AF_XDP sockets as chains of buffers (XDP_USE_SG, see
/// xsk.rs) instead of being linearised into one 64 KiB allocation (generic)
/// or refused by the driver (native). The program reads headers only within
/// the first buffer, which is what a multi-buffer program may do. Falls back
/// to a single-buffer program, logged once per process. Returns the link and
/// whether the program is multi-buffer.
fn attach_xdp(
    obj: &Object,
    maps: &[&Arc<Map>],
    ifname: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(XdpLink, bool)> {
    let frags = obj
        .load_with_flags(
            "xdp",
            sys::BPF_PROG_TYPE_XDP,
            0,
            sys::BPF_F_XDP_HAS_FRAGS,
            maps,
        )
        .and_then(|prog| XdpLink::attach(&prog, ifname, ifindex, mode));
    let e = match frags {
        Ok(link) => return Ok((link, true)),
        Err(e) => e,
    };
    let prog = obj.load("xdp", sys::BPF_PROG_TYPE_XDP, 0, maps)?;
    let link = XdpLink::attach(&prog, ifname, ifindex, mode)?;
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            ifname,
            error = %e,
            "multi-buffer XDP (BPF_F_XDP_HAS_FRAGS) refused: using a single-buffer program; frames larger than a page are linearised (generic XDP) or dropped by the driver (native)"
        );
    }
    Ok((link, false))
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("backend", &self.backend)
            .finish()
    }
}
