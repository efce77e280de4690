//! The raw ceiling: an AF_XDP forwarder that does no work — frames steered to
//! it on one interface go out of another with only their MACs set — on the
//! same sockets, rings and steering program as xvs.

use anyhow::{anyhow, Context, Result};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xvs_xdp::{
    BackendChoice, Disposition, Interface, SteerKey, Steering, Worker, WorkerConfig, L4,
};

#[derive(clap::Args)]
pub struct Args {
    /// Interface frames come in on.
    #[arg(long = "in")]
    input: String,
    /// Interface they go out of.
    #[arg(long = "out")]
    output: String,
    /// Destination address:port (UDP) to steer to the forwarder.
    #[arg(long)]
    vip: String,
    /// Destination MAC on the way out (aa:bb:cc:dd:ee:ff).
    #[arg(long)]
    dst_mac: String,
    /// Pin the forwarder to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

use crate::tools::parse_mac as mac;

fn if_mac(name: &str) -> Result<[u8; 6]> {
    mac(std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?.trim())
}

pub fn run(a: Args) -> Result<()> {
    if let Some(c) = a.cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(c)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    }
    // The same priority as xvsd's workers, for a like-for-like ceiling.
    xvs_xdp::sys::set_thread_nice(-15)?;
    let (addr, port) = a.vip.split_once(':').context("--vip ADDR:PORT")?;
    let addr: Ipv4Addr = addr.parse()?;
    let steering = Steering::new().map_err(|e| anyhow!("{e}"))?;
    steering
        .add(SteerKey::Vip {
            addr: addr.into(),
            port: port.parse()?,
            proto: L4::Udp,
        })
        .map_err(|e| anyhow!("{e}"))?;
    let i =
        Interface::attach(&steering, &a.input, BackendChoice::Auto).map_err(|e| anyhow!("{e}"))?;
    let o =
        Interface::attach(&steering, &a.output, BackendChoice::Auto).map_err(|e| anyhow!("{e}"))?;
    let src = if_mac(&a.output)?;
    let dst = mac(&a.dst_mac)?;
    let mut w = Worker::new(&[&i, &o], 0, &WorkerConfig::default()).map_err(|e| anyhow!("{e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    eprintln!("xfwd: {} -> {} ready", a.input, a.output);
    while !stop.load(Ordering::Relaxed) {
        if !w.poll(Duration::from_millis(100)).unwrap_or(false) {
            continue;
        }
        w.process_batch(|_, f| {
            let d = f.data_mut();
            d[0..6].copy_from_slice(&dst);
            d[6..12].copy_from_slice(&src);
            Disposition::Tx(1)
        });
    }
    Ok(())
}
