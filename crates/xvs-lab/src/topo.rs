//! Builds a lab's namespaces, links, addresses and routes from its [`Plan`].

use crate::error::{LabError, Result, StepExt};
use crate::plan::{LabOptions, Mode, Plan, TUN_PATH_MTU};
use std::net::IpAddr;
use std::path::Path;
use xvs_netns::Netns;

/// The IPIP decapsulation program (bpf/decap.c), built by build.rs.
pub static DECAP_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decap.o"));

/// How the TUN lab's RS decapsulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decap {
    /// bpf/decap.c attached in native (driver) mode.
    XdpNative,
    /// bpf/decap.c attached in generic (skb) mode.
    XdpGeneric,
    /// The kernel's tunl0 / ip6tnl0.
    Kernel,
}

/// The namespaces of a lab being built, looked up by role.
pub(crate) struct Spaces<'a> {
    pub plan: &'a Plan,
    pub list: &'a mut Vec<Netns>,
}

impl Spaces<'_> {
    fn get(&self, name: &str) -> &Netns {
        self.list
            .iter()
            .find(|n| n.name() == name)
            .expect("namespaces are made before they are linked")
    }

    /// `client`, `dir`, `rs1`... for step names.
    fn role<'n>(&self, name: &'n str) -> &'n str {
        name.strip_prefix(&self.plan.prefix)
            .and_then(|r| r.strip_prefix('-'))
            .unwrap_or(name)
    }
}

/// `ip -n NS args...` under a step name.
pub(crate) fn ip(ns: &str, step: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["ip", "-n", ns];
    full.extend_from_slice(args);
    xvs_netns::run(&full).step(step).map(drop)
}

pub(crate) fn sysctl(ns: &Netns, step: &str, settings: &[String]) -> Result<()> {
    let mut args = vec!["sysctl", "-q", "-w"];
    args.extend(settings.iter().map(String::as_str));
    ns.exec(&args).step(step).map(drop)
}

/// Adds an address; IPv6 ones skip duplicate address detection so they are
/// usable at once.
pub(crate) fn addr(ns: &str, dev: &str, a: IpAddr, plen: u8) -> Result<()> {
    let cidr = format!("{a}/{plen}");
    let step = format!("add address {cidr} on {dev} in {ns}");
    match a {
        IpAddr::V4(_) => ip(ns, &step, &["addr", "add", &cidr, "dev", dev]),
        IpAddr::V6(_) => ip(
            ns,
            &step,
            &["-6", "addr", "add", &cidr, "dev", dev, "nodad"],
        ),
    }
}

pub(crate) fn route(ns: &str, dst: &str, via: IpAddr) -> Result<()> {
    let family = if via.is_ipv4() { "-4" } else { "-6" };
    let via = via.to_string();
    ip(
        ns,
        &format!("add route {dst} via {via} in {ns}"),
        &[family, "route", "add", dst, "via", &via],
    )
}

/// Makes every namespace of the plan with the sysctls its role needs.
pub(crate) fn make_namespaces(o: &LabOptions, s: &mut Spaces) -> Result<()> {
    let p = s.plan;
    for name in p.namespaces() {
        let ns = Netns::new(&name).step(&format!("create namespace {name}"))?;
        s.list.push(ns);
        let ns = s.list.last().expect("just pushed");
        // Labs are closed worlds with asymmetric paths (DR/TUN replies bypass
        // the director; the TUN router sees RS replies from the VIP): no
        // reverse-path filter. IPv6 addresses are used at once (no DAD), and
        // IPv4-only labs carry no IPv6 noise.
        let mut kv: Vec<String> = vec![
            "net.ipv4.conf.all.rp_filter=0".into(),
            "net.ipv4.conf.default.rp_filter=0".into(),
        ];
        if o.ipv6 {
            kv.push("net.ipv6.conf.all.accept_dad=0".into());
            kv.push("net.ipv6.conf.default.accept_dad=0".into());
        } else {
            kv.push("net.ipv6.conf.all.disable_ipv6=1".into());
            kv.push("net.ipv6.conf.default.disable_ipv6=1".into());
        }
        let is_rs = p.rs.iter().any(|r| r.ns == name);
        if p.rt_ns.as_deref() == Some(name.as_str()) {
            kv.push("net.ipv4.ip_forward=1".into());
            if o.ipv6 {
                kv.push("net.ipv6.conf.all.forwarding=1".into());
            }
        }
        if is_rs && matches!(o.mode, Mode::Dr | Mode::Tun) {
            // The RS hold the VIP on lo and must not answer ARP for it.
            for scope in ["all", "default"] {
                kv.push(format!("net.ipv4.conf.{scope}.arp_ignore=1"));
                kv.push(format!("net.ipv4.conf.{scope}.arp_announce=2"));
            }
        }
        sysctl(ns, &format!("sysctls in {name}"), &kv)?;
    }
    let sw = p.sw_ns.as_str();
    let step = format!("add bridge br0 in {sw}");
    // No multicast snooping: with no querier it can starve IPv6 neighbour discovery.
    ip(
        sw,
        &step,
        &[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    )?;
    ip(sw, &step, &["link", "set", "br0", "up"])?;
    Ok(())
}

/// A veth pair between two namespaces, with the interfaces' default features
/// (offloads on, as users run them: xvs completes partial checksums and
/// segments super-frames itself).
fn link(s: &Spaces, a: (&str, &str), b: (&str, &str), mtu: u32) -> Result<()> {
    let (na, nb) = (s.get(a.0), s.get(b.0));
    let step = format!("add veth {}-{}", s.role(a.0), s.role(b.0));
    xvs_netns::veth(a.1, na, b.1, nb).step(&step)?;
    for (ns, dev) in [(na, a.1), (nb, b.1)] {
        if mtu != 1500 {
            ip(
                ns.name(),
                &step,
                &["link", "set", dev, "mtu", &mtu.to_string()],
            )?;
        }
    }
    Ok(())
}

/// A veth from `ns:dev` to a new port `port` of the switch's bridge.
fn to_switch(s: &Spaces, ns: &str, dev: &str, port: &str, mtu: u32) -> Result<()> {
    let sw = s.plan.sw_ns.as_str();
    link(s, (sw, port), (ns, dev), mtu)?;
    ip(
        sw,
        &format!("add {port} to br0 in {sw}"),
        &["link", "set", port, "master", "br0"],
    )
}

/// Links, addresses and routes of the mode.
pub(crate) fn wire(s: &Spaces) -> Result<()> {
    let p = s.plan;
    let (client, dir) = (p.client_ns.as_str(), p.dir_ns.as_str());
    let v4 = |a: std::net::Ipv4Addr| IpAddr::V4(a);
    let v6 = |a: std::net::Ipv6Addr| IpAddr::V6(a);
    // Addresses other than the plan's named ones are the gateways (.1 / ::1)
    // of each segment; see the table in plan.rs.
    let gw4 = |seg: u8, host: u8| v4(std::net::Ipv4Addr::new(10, 77, seg, host));
    let gw6 = |seg: u16, host: u16| v6(std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, seg, host));
    let ipv6 = p.vip6.is_some();
    let rs_mtu = if p.mode == Mode::Tun {
        TUN_PATH_MTU
    } else {
        1500
    };

    // Client side and director.
    match p.mode {
        Mode::Nat | Mode::FullNat => {
            link(s, (client, "eth0"), (dir, "c0"), 1500)?;
            to_switch(s, dir, "r0", "p-dir", 1500)?;
            addr(client, "eth0", v4(p.client4), 24)?;
            addr(dir, "c0", gw4(0, 1), 24)?;
            addr(dir, "c0", v4(p.vip4), 32)?;
            addr(dir, "r0", gw4(1, 1), 24)?;
            for l in &p.laddrs4 {
                addr(dir, "r0", v4(*l), 32)?;
            }
            if ipv6 {
                addr(client, "eth0", v6(p.client6.expect("ipv6 plan")), 112)?;
                addr(dir, "c0", gw6(0, 1), 112)?;
                addr(dir, "c0", v6(p.vip6.expect("ipv6 plan")), 128)?;
                addr(dir, "r0", gw6(1, 1), 112)?;
                for l in &p.laddrs6 {
                    addr(dir, "r0", v6(*l), 128)?;
                }
            }
        }
        Mode::Dr => {
            to_switch(s, client, "eth0", "p-client", 1500)?;
            to_switch(s, dir, "eth0", "p-dir", 1500)?;
            addr(client, "eth0", v4(p.client4), 24)?;
            addr(dir, "eth0", gw4(0, 1), 24)?;
            addr(dir, "eth0", v4(p.vip4), 32)?;
            if ipv6 {
                addr(client, "eth0", v6(p.client6.expect("ipv6 plan")), 112)?;
                addr(dir, "eth0", gw6(0, 1), 112)?;
                addr(dir, "eth0", v6(p.vip6.expect("ipv6 plan")), 128)?;
            }
        }
        Mode::Tun => {
            let rt = p.rt_ns.as_deref().expect("TUN has a router");
            link(s, (client, "eth0"), (rt, "c0"), 1500)?;
            link(s, (dir, "eth0"), (rt, "d0"), TUN_PATH_MTU)?;
            to_switch(s, rt, "r0", "p-rt", TUN_PATH_MTU)?;
            addr(client, "eth0", v4(p.client4), 24)?;
            addr(rt, "c0", gw4(0, 1), 24)?;
            addr(rt, "d0", gw4(2, 1), 24)?;
            addr(rt, "r0", gw4(1, 1), 24)?;
            addr(dir, "eth0", gw4(2, 2), 24)?;
            addr(dir, "lo", v4(p.vip4), 32)?;
            // The VIP is routed: client → router → director; the router is
            // also the client's way to the RS subnet.
            route(client, &format!("{}/32", p.vip4), gw4(0, 1))?;
            route(client, "default", gw4(0, 1))?;
            route(rt, &format!("{}/32", p.vip4), gw4(2, 2))?;
            route(dir, "default", gw4(2, 1))?;
            if ipv6 {
                let vip6 = p.vip6.expect("ipv6 plan");
                addr(client, "eth0", v6(p.client6.expect("ipv6 plan")), 112)?;
                addr(rt, "c0", gw6(0, 1), 112)?;
                addr(rt, "d0", gw6(2, 1), 112)?;
                addr(rt, "r0", gw6(1, 1), 112)?;
                addr(dir, "eth0", gw6(2, 2), 112)?;
                addr(dir, "lo", v6(vip6), 128)?;
                route(client, &format!("{vip6}/128"), gw6(0, 1))?;
                route(client, "default", gw6(0, 1))?;
                route(rt, &format!("{vip6}/128"), gw6(2, 2))?;
                route(dir, "default", gw6(2, 1))?;
            }
        }
    }

    // Real servers.
    for r in &p.rs {
        let ns = r.ns.as_str();
        to_switch(s, ns, "eth0", &format!("p-{}", r.name), rs_mtu)?;
        let (plen4, plen6) = (24, 112);
        addr(ns, "eth0", v4(r.addr4), plen4)?;
        if let Some(a) = r.addr6 {
            addr(ns, "eth0", v6(a), plen6)?;
        }
        match p.mode {
            // The director (NAT) or the router (TUN) is the RS's gateway.
            Mode::Nat | Mode::Tun => {
                route(ns, "default", gw4(1, 1))?;
                if r.addr6.is_some() {
                    route(ns, "default", gw6(1, 1))?;
                }
            }
            // FULLNAT: replies go to the LIP on the RS's own segment; DR: the
            // client is on the RS's segment.
            Mode::FullNat | Mode::Dr => {}
        }
        if matches!(p.mode, Mode::Dr | Mode::Tun) {
            for vip in p.vips() {
                let plen = if vip.is_ipv4() { 32 } else { 128 };
                addr(ns, "lo", vip, plen)?;
            }
        }
    }
    Ok(())
}

/// Lets the TUN lab's RS receive IPIP: the XDP program, or the kernel's tunnels.
pub(crate) fn decap(s: &Spaces, kernel: bool, run_dir: &Path) -> Result<Decap> {
    let p = s.plan;
    if kernel {
        for r in &p.rs {
            kernel_tunnel(s.get(&r.ns), &r.name, r.addr6.is_some())?;
        }
        return Ok(Decap::Kernel);
    }
    let rs: Vec<(&str, &str)> =
        p.rs.iter()
            .map(|r| (r.name.as_str(), r.ns.as_str()))
            .collect();
    attach_decap(&rs, run_dir)
}

/// Attaches bpf/decap.c to `eth0` of each (name, namespace) in `rs`: natively
/// where the driver takes it, else (from the first refusal on) in generic mode.
pub(crate) fn attach_decap(rs: &[(&str, &str)], run_dir: &Path) -> Result<Decap> {
    let obj = run_dir.join("decap.o");
    std::fs::write(&obj, DECAP_OBJ).step(&format!("write {}", obj.display()))?;
    let obj = obj.to_string_lossy().to_string();
    let mut mode = Decap::XdpNative;
    for &(name, ns) in rs {
        let step = format!("attach decap XDP on {name}");
        let attach = |how: &str| {
            xvs_netns::run(&[
                "ip", "-n", ns, "link", "set", "dev", "eth0", how, "obj", &obj, "sec", "xdp",
            ])
        };
        if mode == Decap::XdpNative {
            match attach("xdpdrv") {
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(rs = %name, error = %crate::error::describe(&e), "native XDP refused; using generic XDP");
                    mode = Decap::XdpGeneric;
                }
            }
        }
        attach("xdpgeneric").step(&step)?;
    }
    Ok(mode)
}

fn kernel_tunnel(ns: &Netns, rs: &str, ipv6: bool) -> Result<()> {
    let step = format!("kernel tunnel on {rs}");
    let mut devs = vec![("tunl0", "ipip", "ipip")];
    if ipv6 {
        devs.push(("ip6tnl0", "ip6tnl", "ip6_tunnel"));
    }
    for (dev, kind, module) in devs {
        // The fallback device exists in every namespace once the module is loaded;
        // creating a probe device loads it when module autoloading works.
        if ns.exec(&["ip", "link", "show", dev]).is_err() {
            ns.exec(&["ip", "link", "add", "xvsprobe", "type", kind])
                .map_err(|e| {
                    LabError::new(
                        &step,
                        format!(
                            "this kernel has no {module} module ({}); without --kernel-tunnel the lab's RS decapsulate with an XDP program",
                            crate::error::describe(&e)
                        ),
                    )
                })?;
            let _ = ns.exec(&["ip", "link", "del", "xvsprobe"]);
        }
        ns.exec(&["ip", "link", "set", dev, "up"]).step(&step)?;
        if dev == "tunl0" {
            sysctl(ns, &step, &["net.ipv4.conf.tunl0.rp_filter=0".to_string()])?;
        }
    }
    Ok(())
}
