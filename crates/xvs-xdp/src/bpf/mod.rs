//! BPF plumbing: the embedded objects, the loader, map access, XDP and tcx
//! attachment through bpf_link, and BPF_PROG_RUN.

pub mod elf;
pub mod netlink;
pub mod sys;
pub mod testrun;

use crate::error::{os, Result};
use std::os::fd::{AsRawFd, OwnedFd};

/// bpf/steer.c compiled by build.rs.
pub static STEER_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.o"));
/// bpf/gen.c compiled by build.rs.
pub static GEN_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gen.o"));

/// Where an XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// On the skb, after the driver (XDP_FLAGS_SKB_MODE); works on every device.
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Native => sys::XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// An XDP program attached through a bpf_link: detached when this value is
/// dropped or the process dies (also on SIGKILL), since the link fd is the
/// only reference.
#[derive(Debug)]
pub struct XdpLink {
    _link: OwnedFd,
    ifindex: u32,
    mode: XdpMode,
}

impl XdpLink {
    /// Attaches `prog` to `ifindex` in `mode`. A program left attached through
    /// netlink (by a crashed run or another tool) is detached and replaced, with
    /// a log line.
    pub fn attach(
        prog: &impl AsRawFd,
        ifname: &str,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<XdpLink> {
        let what = || format!("attach XDP ({mode:?}) to {ifname} with bpf_link");
        match sys::link_create(prog, ifindex, sys::BPF_XDP, mode.flags()) {
            Ok(link) => Ok(XdpLink {
                _link: link,
                ifindex,
                mode,
            }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)) => {
                let old = netlink::xdp_query(ifindex)?;
                tracing::warn!(
                    ifname,
                    ?old,
                    "an XDP program is already attached (leftover of an earlier run?): detaching it and attaching ours"
                );
                // Detach whichever mode holds it; one of these is a no-op.
                let _ = netlink::xdp_set(ifindex, -1, sys::XDP_FLAGS_DRV_MODE);
                let _ = netlink::xdp_set(ifindex, -1, sys::XDP_FLAGS_SKB_MODE);
                let link = sys::link_create(prog, ifindex, sys::BPF_XDP, mode.flags())
                    .map_err(|e| os(what(), e))?;
                Ok(XdpLink {
                    _link: link,
                    ifindex,
                    mode,
                })
            }
            Err(e) => Err(os(what(), e)),
        }
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }
}

/// A tc ingress (tcx) program attached through a bpf_link; gone with the fd.
#[derive(Debug)]
pub struct TcxLink {
    _link: OwnedFd,
}

impl TcxLink {
    pub fn attach(prog: &impl AsRawFd, ifname: &str, ifindex: u32) -> Result<TcxLink> {
        let link = sys::link_create(prog, ifindex, sys::BPF_TCX_INGRESS, 0)
            .map_err(|e| os(format!("attach tc ingress (tcx) program to {ifname}"), e))?;
        Ok(TcxLink { _link: link })
    }
}
