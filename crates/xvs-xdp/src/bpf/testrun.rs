//! BPF_PROG_RUN with live frames: an XDP program run in a loop by the kernel on
//! frames it builds from a template, injected on an interface as if received
//! there (XDP_TX sends them out of it). The in-kernel traffic generator.
//!
//! One long call (repeat = u32::MAX) on a dedicated thread; short calls each
//! wait for an RCU grace period and cap the rate. [`TestRunHandle::stop`]
//! interrupts the call with a signal (the kernel returns EINTR).

use super::elf::{Map, Object};
use super::sys;
use crate::error::{os, Error, Result};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

/// The signal that interrupts a running test run.
const STOP_SIGNAL: i32 = libc::SIGUSR2;

extern "C" fn on_stop_signal(_: libc::c_int) {}

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a handler that does nothing is async-signal-safe; no
        // SA_RESTART so the interrupted bpf() returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(STOP_SIGNAL, &sa, std::ptr::null_mut());
        }
    });
}

/// An XDP program and its maps, loaded from an object for test runs.
pub struct TestProgram {
    pub prog: OwnedFd,
    pub maps: HashMap<String, Arc<Map>>,
}

impl TestProgram {
    /// Loads program section `section` of the object `obj` (every map of the
    /// object is created fresh).
    pub fn load(obj: &[u8], section: &str) -> Result<TestProgram> {
        let o = Object::parse(obj)?;
        let mut maps = HashMap::new();
        for d in &o.maps {
            maps.insert(d.name.clone(), Map::create(d)?);
        }
        let list: Vec<&Arc<Map>> = maps.values().collect();
        let prog = o.load(section, sys::BPF_PROG_TYPE_XDP, 0, &list)?;
        Ok(TestProgram { prog, maps })
    }

    pub fn map(&self, name: &str) -> Result<&Arc<Map>> {
        self.maps
            .get(name)
            .ok_or_else(|| Error::Elf(format!("no map named {name}")))
    }
}

/// Several programs of one object loaded for one-shot test runs, sharing
/// their maps (the steering program's XDP and tc instances over one key map).
pub struct TestObject {
    progs: HashMap<String, OwnedFd>,
    maps: HashMap<String, Arc<Map>>,
}

impl TestObject {
    /// Loads `sections` (section, program type, expected attach type) of the
    /// object `obj`; maps named in `shared` are used as they are, the others
    /// are created fresh.
    pub fn load(obj: &[u8], sections: &[(&str, u32, u32)], shared: &[&Arc<Map>]) -> Result<Self> {
        let o = Object::parse(obj)?;
        let mut maps = HashMap::new();
        for d in &o.maps {
            let m = match shared.iter().find(|m| m.def.name == d.name) {
                Some(m) => Arc::clone(m),
                None => Map::create(d)?,
            };
            maps.insert(d.name.clone(), m);
        }
        let list: Vec<&Arc<Map>> = maps.values().collect();
        let mut progs = HashMap::new();
        for &(section, ty, attach) in sections {
            progs.insert(section.to_string(), o.load(section, ty, attach, &list)?);
        }
        Ok(TestObject { progs, maps })
    }

    /// The program of `section`.
    pub fn prog(&self, section: &str) -> Result<&OwnedFd> {
        self.progs
            .get(section)
            .ok_or_else(|| Error::Elf(format!("no program {section} loaded")))
    }

    pub fn map(&self, name: &str) -> Result<&Arc<Map>> {
        self.maps
            .get(name)
            .ok_or_else(|| Error::Elf(format!("no map named {name}")))
    }
}

/// Runs `prog` once on `frame` (BPF_PROG_TEST_RUN) and returns what it
/// returned. For XDP and tc programs (the frame starts at Ethernet).
pub fn run_once(prog: &impl AsRawFd, frame: &[u8]) -> Result<u32> {
    Ok(run_on(prog, frame, RunOn::Loopback, 1)?.retval)
}

/// Where a one-shot test run's frame arrives. The interface is resolved in
/// the calling thread's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOn {
    /// The kernel's default: the namespace's loopback device.
    Loopback,
    /// An XDP program, as if received on this interface (queue 0).
    Xdp(u32),
    /// A tc or socket-filter program on an skb received on this interface:
    /// the kernel classifies the frame against the interface's MAC
    /// (`skb->pkt_type`) as its driver would.
    Skb(u32),
}

/// What a test run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunResult {
    pub retval: u32,
    /// Mean time of one run, as the kernel measured it.
    pub duration_ns: u32,
}

/// struct __sk_buff as ctx_in, up to `ifindex`: len, pkt_type, mark,
/// queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority,
/// ingress_ifindex, ifindex. The kernel takes a shorter context (the rest
/// zero) and reads only mark, priority, the ifindexes and later fields.
#[repr(C)]
#[derive(Default)]
struct SkbCtx {
    fields: [u32; 11],
}

/// Runs `prog` on `frame` `repeat` times (BPF_PROG_TEST_RUN) as received
/// where `on` says.
pub fn run_on(prog: &impl AsRawFd, frame: &[u8], on: RunOn, repeat: u32) -> Result<RunResult> {
    if frame.len() < 14 || frame.len() > 65535 {
        return Err(Error::TestRunFrame {
            len: frame.len(),
            max: 65535,
        });
    }
    let xdp = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: match on {
            RunOn::Xdp(i) => i,
            _ => 0,
        },
        ..Default::default()
    };
    let mut skb = SkbCtx::default();
    if let RunOn::Skb(i) = on {
        skb.fields[10] = i;
    }
    let (ctx, ctx_size) = match on {
        RunOn::Loopback => (0, 0),
        RunOn::Xdp(_) => (
            &xdp as *const XdpMd as u64,
            std::mem::size_of::<XdpMd>() as u32,
        ),
        RunOn::Skb(_) => (
            &skb as *const SkbCtx as u64,
            std::mem::size_of::<SkbCtx>() as u32,
        ),
    };
    let mut a = sys::TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: repeat.max(1),
        ctx_size_in: ctx_size,
        ctx_in: ctx,
        ..Default::default()
    };
    // SAFETY: `frame`, `xdp` and `skb` outlive the call and their sizes are
    // the ones given; no output buffers are passed (sizes 0).
    unsafe { sys::prog_test_run(&mut a) }.map_err(|e| os("BPF_PROG_TEST_RUN", e))?;
    Ok(RunResult {
        retval: a.retval,
        duration_ns: a.duration,
    })
}

/// Options of a live test run.
#[derive(Debug, Clone, Default)]
pub struct TestRunOpts {
    /// Pin the generator thread to this CPU.
    pub cpu: Option<usize>,
    /// Frames per batch inside the kernel (0 = kernel default, 64; max 256).
    pub batch_size: u32,
}

/// A running live-frames test run.
pub struct TestRunHandle {
    thread: Option<JoinHandle<std::io::Result<()>>>,
    tid: libc::pthread_t,
    done: Arc<AtomicBool>,
}

/// struct xdp_md as ctx_in: only ingress_ifindex and rx_queue_index may be set.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Runs `prog` on copies of `frame` as if received on `ifindex`, until stopped.
/// The interface is resolved in the calling thread's network namespace.
pub fn start_live(
    prog: &OwnedFd,
    ifindex: u32,
    frame: &[u8],
    opts: &TestRunOpts,
) -> Result<TestRunHandle> {
    if frame.len() < 14 || frame.len() > 3500 {
        return Err(Error::TestRunFrame {
            len: frame.len(),
            max: 3500,
        });
    }
    install_handler();
    // SAFETY: dup of a valid fd; the copy is owned by the thread below.
    let dup = unsafe { libc::fcntl(prog.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(crate::error::last_os("dup program fd"));
    }
    // SAFETY: `dup` is a fresh fd owned by nobody else.
    let prog: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(dup) };
    let frame = frame.to_vec();
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let cpu = opts.cpu;
    let batch = opts.batch_size;
    let d2 = done.clone();
    let thread = std::thread::Builder::new()
        .name("xvs-testrun".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) pins this thread.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
            }
            // SAFETY: pthread_self has no preconditions.
            let _ = tx.send(unsafe { libc::pthread_self() });
            // The kernel wants data_end == the frame size in a supplied ctx.
            let ctx = XdpMd {
                data_end: frame.len() as u32,
                ingress_ifindex: ifindex,
                ..Default::default()
            };
            let mut a = sys::TestRunAttr {
                prog_fd: prog.as_raw_fd() as u32,
                data_size_in: frame.len() as u32,
                data_in: frame.as_ptr() as u64,
                repeat: u32::MAX,
                ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
                ctx_in: &ctx as *const XdpMd as u64,
                flags: sys::BPF_F_TEST_XDP_LIVE_FRAMES,
                batch_size: batch,
                ..Default::default()
            };
            // A signal may arrive before the call: loop until stop was asked.
            let r = loop {
                // SAFETY: `frame` and `ctx` live on this thread until the call
                // returns; their sizes are the ones given.
                match unsafe { sys::prog_test_run(&mut a) } {
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                        if d2.load(Ordering::Acquire) {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                    Ok(()) => {
                        if d2.load(Ordering::Acquire) {
                            break Ok(());
                        }
                    }
                }
            };
            d2.store(true, Ordering::Release);
            r
        })
        .map_err(|e| os("spawn test-run thread", e))?;
    let tid = rx.recv().map_err(|_| Error::TestRunThreadDied)?;
    Ok(TestRunHandle {
        thread: Some(thread),
        tid,
        done,
    })
}

impl TestRunHandle {
    /// True once the run ended (stopped, or failed: see `stop`).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Interrupts the run and waits for the thread; returns the run's error if
    /// the kernel refused it.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        self.done.store(true, Ordering::Release);
        while !t.is_finished() {
            // SAFETY: `tid` names our thread, which is alive until joined below.
            unsafe { libc::pthread_kill(self.tid, STOP_SIGNAL) };
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        match t.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(os("BPF_PROG_RUN (live frames)", e)),
            Err(_) => Err(Error::TestRunThreadPanicked),
        }
    }
}

impl Drop for TestRunHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
