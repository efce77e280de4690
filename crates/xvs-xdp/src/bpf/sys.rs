//! The raw bpf() system call: map and program commands, links and test runs.
//!
//! Attribute structs mirror the prefixes of `union bpf_attr` that each command
//! reads; the kernel treats missing trailing fields as zero.

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const BPF_MAP_CREATE: u32 = 0;
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_PROG_TEST_RUN: u32 = 10;
pub const BPF_LINK_CREATE: u32 = 28;

pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;

pub const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;

pub const BPF_XDP: u32 = 37;
pub const BPF_TCX_INGRESS: u32 = 46;

pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// prog_flags: the XDP program handles multi-buffer frames (it reads only the
/// first buffer directly), so the kernel may hand it frames larger than a page.
pub const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// bpf(cmd, attr, size); returns the non-negative result or errno.
fn bpf<T>(cmd: u32, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, initialised repr(C) attribute struct of the
    // size passed; the kernel reads (and for some commands writes) within it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn fd_result(rc: i64) -> OwnedFd {
    // SAFETY: the command returned a new file descriptor that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    // Kernel object names: up to 15 chars of [A-Za-z0-9_.].
    for (d, s) in n.iter_mut().zip(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
            .take(15),
    ) {
        *d = s;
    }
    n
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// Creates a map; returns its fd.
pub fn map_create(
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> Result<OwnedFd> {
    let mut a = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: flags,
        map_name: name16(name),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut a)
        .map(fd_result)
        .map_err(|e| crate::error::os(format!("create BPF map {name} (type {map_type})"), e))
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

pub const BPF_ANY: u64 = 0;

/// BPF_MAP_GET_NEXT_KEY.
const BPF_MAP_GET_NEXT_KEY: u32 = 4;

/// Sets `key` to `value`.
///
/// # Safety
/// `key` and `value` must be at least as long as the map's key and value
/// sizes: the kernel reads that many bytes from each. [`super::elf::Map::update`]
/// checks this.
pub(crate) unsafe fn map_update(
    fd: &impl AsRawFd,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> std::io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Deletes `key`; ENOENT when absent.
///
/// # Safety
/// `key` must be at least as long as the map's key size.
pub(crate) unsafe fn map_delete(fd: &impl AsRawFd, key: &[u8]) -> std::io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: 0,
        flags: 0,
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

/// Reads `key` into `value`.
///
/// # Safety
/// `key` must be at least as long as the map's key size and `value` at least
/// as long as what the kernel writes: the value size, or for per-CPU maps the
/// value size rounded up to 8 times the number of possible CPUs.
pub(crate) unsafe fn map_lookup(
    fd: &impl AsRawFd,
    key: &[u8],
    value: &mut [u8],
) -> std::io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut a).map(|_| ())
}

/// The key after `key` (the first key when None) into `next`; ENOENT at the end.
///
/// # Safety
/// `key` (if any) and `next` must be at least as long as the map's key size.
pub(crate) unsafe fn map_next_key(
    fd: &impl AsRawFd,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> std::io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        value: next.as_mut_ptr() as u64,
        flags: 0,
    };
    bpf(BPF_MAP_GET_NEXT_KEY, &mut a).map(|_| ())
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads a program (instructions as raw 8-byte words); on refusal, reloads
/// with the verifier log on and returns it in the error.
pub fn prog_load(
    name: &str,
    prog_type: u32,
    expected_attach_type: u32,
    prog_flags: u32,
    insns: &[u64],
    license: &str,
) -> Result<OwnedFd> {
    let lic =
        std::ffi::CString::new(license).map_err(|_| Error::Elf("bad license string".into()))?;
    let mut a = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: lic.as_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type,
        prog_flags,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(rc) => Ok(fd_result(rc)),
        Err(first) => {
            let mut log = vec![0u8; 1 << 20];
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
            let source = match bpf(BPF_PROG_LOAD, &mut a) {
                Ok(rc) => return Ok(fd_result(rc)),
                Err(e) => e,
            };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            // The end of the log says why; keep the last lines.
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let log = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            let _ = first;
            Err(Error::Verifier {
                prog: name.to_string(),
                log,
                source,
            })
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target: u32,
    attach_type: u32,
    flags: u32,
    // tcx: relative_fd/id, expected_revision
    relative: u32,
    _pad: u32,
    expected_revision: u64,
}

/// Creates a link attaching `prog` to `target` (an ifindex for XDP and tcx).
pub fn link_create(
    prog: &impl AsRawFd,
    target: u32,
    attach_type: u32,
    flags: u32,
) -> std::io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target,
        attach_type,
        flags,
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut a).map(fd_result)
}

const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_MAP_GET_FD_BY_ID: u32 = 14;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;

/// A kind of BPF object with a kernel-wide id (as /proc/PID/fdinfo shows:
/// `prog_id`, `map_id`, `link_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Prog,
    Map,
    Link,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Whether the BPF object `id` of `kind` still exists anywhere in the kernel
/// (what `bpftool prog/map/link show id N` answers): lets a test check that
/// nothing a killed process made is left behind. Needs CAP_SYS_ADMIN.
pub fn object_exists(kind: ObjectKind, id: u32) -> std::io::Result<bool> {
    let cmd = match kind {
        ObjectKind::Prog => BPF_PROG_GET_FD_BY_ID,
        ObjectKind::Map => BPF_MAP_GET_FD_BY_ID,
        ObjectKind::Link => BPF_LINK_GET_FD_BY_ID,
    };
    let mut a = GetFdByIdAttr {
        id,
        ..Default::default()
    };
    match bpf(cmd, &mut a) {
        Ok(rc) => {
            // Only its existence was wanted.
            drop(fd_result(rc));
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN (the fields xvs uses).
#[repr(C)]
#[derive(Default)]
pub(crate) struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub _pad: u32,
}

/// BPF_PROG_TEST_RUN with the caller's attributes.
///
/// # Safety
/// Every pointer in `attr` must be valid for the size given beside it (0 with
/// a size of 0) for the whole call: the kernel reads `data_in`/`ctx_in` and
/// writes `data_out`/`ctx_out`.
pub(crate) unsafe fn prog_test_run(attr: &mut TestRunAttr) -> std::io::Result<()> {
    bpf(BPF_PROG_TEST_RUN, attr).map(|_| ())
}
