//! Attaches the xvs steering program to an interface and waits, for tests
//! that kill it (the program must go away with the process) or that need a
//! leftover netlink attachment to replace.
//!
//! usage: steer_attach IFNAME native|generic [--netlink]
//!   default: bpf_link attach, prints "attached <mode>", then sleeps until killed;
//!   --netlink: attaches through netlink (survives the process), prints
//!   "attached netlink", and exits.

use std::io::Write;
use xvs_xdp::bpf::elf::{Map, Object};
use xvs_xdp::bpf::{netlink, sys};
use xvs_xdp::{Backend, BackendChoice, Interface, Steering};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: steer_attach IFNAME native|generic [--netlink]");
        std::process::exit(2);
    }
    let ifname = &args[1];
    let backend: Backend = args[2].parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    if args.get(3).map(String::as_str) == Some("--netlink") {
        let obj = Object::parse(xvs_xdp::bpf::STEER_OBJ).expect("parse");
        let maps: Vec<_> = obj
            .maps
            .iter()
            .map(|d| Map::create(d).expect("map"))
            .collect();
        let refs: Vec<_> = maps.iter().collect();
        let prog = obj
            .load("xdp", sys::BPF_PROG_TYPE_XDP, 0, &refs)
            .expect("load");
        let flags = if backend == Backend::XdpNative {
            sys::XDP_FLAGS_DRV_MODE
        } else {
            sys::XDP_FLAGS_SKB_MODE
        };
        let ifindex = xvs_xdp::sys::ifindex(ifname).expect("ifindex");
        use std::os::fd::AsRawFd;
        netlink::xdp_set(ifindex, prog.as_raw_fd(), flags).expect("netlink attach");
        println!("attached netlink");
        return;
    }
    let steering = Steering::new().expect("steering");
    let iface =
        Interface::attach(&steering, ifname, BackendChoice::Force(backend)).unwrap_or_else(|e| {
            eprintln!("attach: {e}");
            std::process::exit(1)
        });
    println!("attached {}", iface.backend());
    std::io::stdout().flush().ok();
    loop {
        std::thread::park();
    }
}
