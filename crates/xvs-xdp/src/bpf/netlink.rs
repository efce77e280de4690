//! rtnetlink for XDP: which program is attached to an interface, detaching a
//! leftover one, and the legacy (non-link) attach used by old kernels and tests.

use crate::error::{last_os, os, Error, Result};
use crate::sys;
use std::os::fd::{AsRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_XDP: u16 = 43;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;

/// How an XDP program is attached, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttached {
    Native,
    Generic,
    Offload,
    Multi,
}

/// The XDP program on an interface: mode and program id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpInfo {
    pub mode: XdpAttached,
    pub prog_id: u32,
}

fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn message(ty: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + attrs.len());
    m.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                              // ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change.
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(attrs);
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// Sends one request and returns the first reply message (header included).
fn request(msg: &[u8], what: &str) -> Result<Vec<u8>> {
    let fd: OwnedFd = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE, what)?;
    // SAFETY: `msg` is a readable buffer of the length passed; no address (the kernel).
    let rc = unsafe {
        libc::send(
            fd.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(last_os(format!("{what}: netlink send")));
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(last_os(format!("{what}: netlink recv")));
    }
    buf.truncate(n as usize);
    if buf.len() < 16 {
        return Err(Error::NetlinkShort {
            what: what.to_string(),
        });
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty == NLMSG_ERROR {
        let err = i32::from_ne_bytes(buf[16..20].try_into().unwrap_or([0; 4]));
        if err != 0 {
            return Err(os(
                what.to_string(),
                std::io::Error::from_raw_os_error(-err),
            ));
        }
    }
    Ok(buf)
}

/// Iterates the attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

/// The XDP program attached to `ifindex`, if any.
pub fn xdp_query(ifindex: u32) -> Result<Option<XdpInfo>> {
    let what = format!("query XDP on ifindex {ifindex}");
    let reply = request(&message(RTM_GETLINK, 0, ifindex, &[]), &what)?;
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    if ty != RTM_NEWLINK || reply.len() < 32 {
        return Err(Error::NetlinkReplyType { what, ty });
    }
    let mlen = (u32::from_ne_bytes(reply[0..4].try_into().unwrap()) as usize).min(reply.len());
    let mut mode = None;
    let mut prog_id = 0;
    for (t, p) in attrs(&reply[32..mlen]) {
        if t != IFLA_XDP {
            continue;
        }
        for (t, p) in attrs(p) {
            match (t, p) {
                (IFLA_XDP_ATTACHED, [m, ..]) => {
                    mode = match m {
                        1 => Some(XdpAttached::Native),
                        2 => Some(XdpAttached::Generic),
                        3 => Some(XdpAttached::Offload),
                        4 => Some(XdpAttached::Multi),
                        _ => None,
                    }
                }
                (IFLA_XDP_PROG_ID, [a, b, c, d, ..]) => {
                    prog_id = u32::from_ne_bytes([*a, *b, *c, *d])
                }
                _ => {}
            }
        }
    }
    Ok(mode.map(|mode| XdpInfo { mode, prog_id }))
}

/// Sets the XDP program of `ifindex` through netlink: `fd` = -1 detaches.
/// `flags` selects the mode (XDP_FLAGS_SKB_MODE / XDP_FLAGS_DRV_MODE).
pub fn xdp_set(ifindex: u32, fd: i32, flags: u32) -> Result<()> {
    let mut nested = Vec::new();
    attr(&mut nested, IFLA_XDP_FD, &fd.to_ne_bytes());
    attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    let mut a = Vec::new();
    attr(&mut a, IFLA_XDP | NLA_F_NESTED, &nested);
    let what = if fd < 0 {
        format!("detach XDP from ifindex {ifindex} (flags {flags:#x})")
    } else {
        format!("attach XDP to ifindex {ifindex} via netlink (flags {flags:#x})")
    };
    request(&message(RTM_SETLINK, NLM_F_ACK, ifindex, &a), &what).map(|_| ())
}
