//! Thin safe wrappers over the few libc calls the rest of the crate repeats.

use crate::error::{last_os, Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The index of interface `name` in the current network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| Error::BadIfName(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(last_os(format!("interface {name}")));
    }
    Ok(idx)
}

/// RX queues of interface `name` now (the kernel's real_num_rx_queues: the
/// `queues/rx-N` entries in sysfs, which reflects the caller's namespace when
/// sysfs was mounted there, as `ip netns exec` does).
pub fn rx_queues(name: &str) -> Result<u32> {
    let dir = format!("/sys/class/net/{name}/queues");
    let n = std::fs::read_dir(&dir)
        .map_err(|e| crate::error::os(format!("reading {dir}"), e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    if n == 0 {
        return Err(Error::NoRxQueues { dir });
    }
    Ok(n as u32)
}

/// Reads interface MTUs (SIOCGIFMTU) in the network namespace it was
/// created in, whichever thread asks later: a datagram socket kept for the
/// ioctl (AF_XDP sockets do not answer device ioctls).
#[derive(Debug)]
pub struct MtuReader {
    sock: OwnedFd,
}

impl MtuReader {
    /// A reader for the calling thread's network namespace.
    pub fn new() -> Result<MtuReader> {
        Ok(MtuReader {
            sock: socket(libc::AF_INET, libc::SOCK_DGRAM, 0, "the MTU ioctl")?,
        })
    }

    /// The MTU of interface `name` (one system call).
    pub fn mtu(&self, name: &str) -> Result<u32> {
        mtu_on(self.sock.as_raw_fd(), name)
    }
}

fn mtu_on(fd: RawFd, name: &str) -> Result<u32> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= req.ifr_name.len() || name.contains('\0') {
        return Err(Error::BadIfName(name.to_string()));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; SIOCGIFMTU
    // writes only its ifru_mtu member.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(last_os(format!("MTU of {name} (SIOCGIFMTU)")));
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| Error::BadMtu {
        iface: name.to_string(),
        mtu,
    })
}

/// The Ethernet address of interface `name` (SIOCGIFHWADDR, in the calling
/// thread's network namespace); None for an interface whose hardware address
/// is not Ethernet's (a tunnel, a loopback-like device).
pub fn hw_addr(name: &str) -> Result<Option<[u8; 6]>> {
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0, "the MAC address ioctl")?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= req.ifr_name.len() || name.contains('\0') {
        return Err(Error::BadIfName(name.to_string()));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name;
    // SIOCGIFHWADDR writes only its ifru_hwaddr member.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFHWADDR,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(last_os(format!("MAC address of {name} (SIOCGIFHWADDR)")));
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Ok(None);
    }
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(Some(mac))
}

/// Creates a socket, close-on-exec.
pub fn socket(domain: i32, ty: i32, proto: i32, what: &str) -> Result<OwnedFd> {
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(last_os(format!("socket for {what}")));
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setsockopt with a plain-data value.
pub fn setsockopt<T: Copy>(
    fd: &impl AsRawFd,
    level: i32,
    name: i32,
    val: &T,
    what: &str,
) -> Result<()> {
    // SAFETY: `val` points to size_of::<T>() readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(last_os(what.to_string()));
    }
    Ok(())
}

/// getsockopt into a plain-data value; returns the length the kernel wrote.
pub fn getsockopt<T: Copy>(
    fd: RawFd,
    level: i32,
    name: i32,
    val: &mut T,
    what: &str,
) -> Result<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` points to `len` writable bytes; `len` is a valid in/out pointer.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            val as *mut T as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(last_os(what.to_string()));
    }
    Ok(len as usize)
}

/// The number of possible CPUs: the kernel writes that many values into the
/// buffer of a per-CPU map lookup, so a guess that is too small would let it
/// write past the buffer. There is no fallback: an unreadable or malformed
/// list is an error.
pub fn possible_cpus() -> Result<usize> {
    cpus_in_file(std::path::Path::new("/sys/devices/system/cpu/possible"))
}

/// The number of CPUs listed in `path` (a kernel CPU list).
fn cpus_in_file(path: &std::path::Path) -> Result<usize> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| crate::error::os(format!("reading {}", path.display()), e))?;
    parse_cpu_list(&s).ok_or_else(|| Error::BadCpuList {
        path: path.to_path_buf(),
        text: s.trim().to_string(),
    })
}

/// Counts the CPUs of a kernel CPU list ("0-3", "0,2-3", "5"); None unless
/// every part is a number or an increasing range.
fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in s.trim().split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let a = part.parse::<usize>().ok()?;
                (a, a)
            }
        };
        if b < a {
            return None;
        }
        n = n.checked_add(b - a + 1)?;
    }
    Some(n)
}

/// An anonymous shared memory mapping, unmapped on drop.
pub struct Mmap {
    // Private: Drop unmaps exactly this range, so safe code must not be able
    // to change it.
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; synchronisation of its contents is the
// owner's business (rings use atomics, UMEM chunks are owned by one party at a time).
unsafe impl Send for Mmap {}
// SAFETY: see Send; &Mmap only exposes the pointer and length.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// The start of the mapping (dereferencing it is the caller's `unsafe`).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Its length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a mapping is made with at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps `len` bytes of `fd` at `offset` (or anonymous memory when fd is None).
    pub fn new(len: usize, fd: Option<RawFd>, offset: i64, what: &str) -> Result<Mmap> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            // Populated below, after the huge-page advice.
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_os(format!("mmap {what} ({len} bytes)")));
        }
        if fd < 0 {
            // Anonymous memory is the UMEM: on 4 KiB pages every frame or two
            // is a TLB miss, which under a hypervisor's nested paging was the
            // worker's largest single cost. Ask for 2 MiB pages, then fault it
            // all in now rather than on the data path. Both are advice: a
            // kernel without them still works, on small pages.
            // SAFETY: ptr/len is the mapping just made; madvise changes no data.
            unsafe {
                libc::madvise(ptr, len, libc::MADV_HUGEPAGE);
                if libc::madvise(ptr, len, libc::MADV_POPULATE_WRITE) != 0 {
                    // Older kernels: touch every page.
                    for off in (0..len).step_by(4096) {
                        (ptr as *mut u8).add(off).write_volatile(0);
                    }
                }
            }
        }
        Ok(Mmap {
            ptr: ptr as *mut u8,
            len,
        })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping made by Mmap::new and not yet unmapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Sets the nice value of the calling thread. A data-path worker runs above
/// the NAPI threads on its core: under overload the kernel would otherwise
/// spend the core receiving frames the worker has no time left to forward.
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id
    // only changes this thread's scheduling weight.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted_exactly() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0,2-3"), Some(3));
        assert_eq!(parse_cpu_list("0-3,8-11\n"), Some(8));
    }

    #[test]
    fn malformed_cpu_lists_are_refused() {
        for bad in ["", "\n", "0-", "-1", "3-1", "a", "0,,1", "0-1,x", "1.5"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_unreadable_or_malformed_list_is_an_error_not_one_cpu() {
        let e = cpus_in_file(std::path::Path::new("/nonexistent/cpu/possible")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cpu/possible"), "{e}");
        let f = std::env::temp_dir().join(format!("xvs-cpus-{}", std::process::id()));
        std::fs::write(&f, "garbage\n").unwrap();
        let e = cpus_in_file(&f).unwrap_err();
        std::fs::remove_file(&f).unwrap();
        assert!(
            e.to_string().contains("malformed CPU list \"garbage\""),
            "{e}"
        );
        // This machine's list reads, and counts at least the CPUs we can use.
        let n = possible_cpus().unwrap();
        assert!(n >= std::thread::available_parallelism().map_or(1, |p| p.get()));
    }
}
