//! The systems under test and how each is set up as the director.

use crate::topo::{Topo, BULK_PORT, DIR_CPU, FLOOD_PORT, HTTP_PORT, LIP, RS1, RS2, VIP};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use xvs_netns::Netns;

/// UDP timeout (s) xvs runs with in the bench: with every packet a new flow,
/// entries then expire while the table is in use, a steady state like the
/// kernel's conntrack at its limit, instead of a table that only grows.
const XVS_UDP_TIMEOUT: u32 = 10;

/// xvsd's metrics endpoint inside the director's namespace (the SYN-flood
/// figure reads the table's occupancy there).
pub const XVS_METRICS: &str = "127.0.0.1:9184";

/// One system under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum System {
    Ceiling,
    XvsNat,
    XvsDr,
    XvsTun,
    XvsFullnat,
    IpForward,
    NftDnat,
    Haproxy,
}

impl System {
    pub const ALL: [System; 8] = [
        System::Ceiling,
        System::XvsNat,
        System::XvsDr,
        System::XvsTun,
        System::XvsFullnat,
        System::IpForward,
        System::NftDnat,
        System::Haproxy,
    ];

    /// What `xvs-bench run` measures unless told otherwise.
    pub const DEFAULT: [System; 5] = [
        System::Ceiling,
        System::XvsNat,
        System::NftDnat,
        System::IpForward,
        System::Haproxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Ceiling => "ceiling",
            System::XvsNat => "xvs-nat",
            System::XvsDr => "xvs-dr",
            System::XvsTun => "xvs-tun",
            System::XvsFullnat => "xvs-fullnat",
            System::IpForward => "ip-forward",
            System::NftDnat => "nft-dnat",
            System::Haproxy => "haproxy",
        }
    }

    pub fn parse(s: &str) -> Result<System> {
        System::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .with_context(|| {
                let names: Vec<&str> = System::ALL.iter().map(|x| x.name()).collect();
                format!("unknown system {s:?} (known: {})", names.join(", "))
            })
    }

    pub fn label(self) -> &'static str {
        match self {
            System::Ceiling => "xvsd I/O path, pass-through engine (ceiling)",
            System::XvsNat => "xvs NAT",
            System::XvsDr => "xvs DR",
            System::XvsTun => "xvs TUN",
            System::XvsFullnat => "xvs FULLNAT",
            System::IpForward => "kernel ip_forward",
            System::NftDnat => "kernel nftables DNAT",
            System::Haproxy => "HAProxy mode tcp",
        }
    }

    /// Forwards the UDP flood (HAProxy terminates TCP only).
    pub fn floods(self) -> bool {
        self != System::Haproxy
    }

    /// Keeps per-flow state, so a flood of new flows measures something
    /// different from established ones.
    pub fn stateful(self) -> bool {
        matches!(
            self,
            System::XvsNat | System::XvsDr | System::XvsTun | System::XvsFullnat | System::NftDnat
        )
    }

    /// Carries TCP connections through a VIP (or routes them, ip_forward).
    pub fn does_tcp(self) -> bool {
        matches!(
            self,
            System::XvsNat
                | System::XvsFullnat
                | System::IpForward
                | System::NftDnat
                | System::Haproxy
        )
    }

    /// Where the TCP clients connect (ip_forward routes to a real server).
    pub fn tcp_target(self, port: u16) -> String {
        if self == System::IpForward {
            format!("{RS1}:{port}")
        } else {
            format!("{VIP}:{port}")
        }
    }
}

/// The director set up as a system; dropping it undoes what needs undoing.
pub struct Director {
    child: Option<Child>,
    ns_cleanup: Vec<String>,
    dir: String,
}

impl Director {
    /// Every thread that works for this director on its core: its process
    /// (xvsd, HAProxy), the NAPI threads of d0 and d1, and the core's
    /// ksoftirqd; for `cpu::threads_secs`.
    pub fn threads(&self, t: &Topo) -> Vec<u32> {
        let mut v = t.director_napi();
        v.extend(self.child.as_ref().map(|c| c.id()));
        v.extend(crate::cpu::ksoftirqd(DIR_CPU));
        v
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = xvs_netns::run(&["kill", "-TERM", &c.id().to_string()]);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let ns = Netns::existing(&self.dir);
        for cmd in &self.ns_cleanup {
            let _ = ns.sh(cmd);
        }
    }
}

fn exe_dir() -> PathBuf {
    std::env::var_os("XVS_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok()?.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn wait_until(child: &mut Child, what: &str, ready: impl Fn() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !ready() {
        if let Ok(Some(st)) = child.try_wait() {
            bail!("{what} exited ({st})");
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("{what} did not come up in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// True when a TCP listener answers on `addr` inside `ns`.
fn listening(ns: &Netns, addr: &str) -> bool {
    let Ok(a) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    ns.run(move || std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
        .unwrap_or(false)
}

/// The xvsadm rules of an xvs system: the UDP flood's service, the TCP
/// services, and the bench's UDP timeout.
fn xvs_rules(sys: System) -> String {
    let fwd = match sys {
        // The ceiling gets NAT's rules: the same steering keys as xvs NAT.
        System::XvsNat | System::Ceiling => "-m",
        System::XvsDr => "-g",
        System::XvsTun => "-i",
        _ => "--fullnat",
    };
    let mut rules = format!("--set 0 0 {XVS_UDP_TIMEOUT}\n");
    for (proto, port) in [
        ("-u", 80),
        ("-t", HTTP_PORT),
        ("-t", BULK_PORT),
        ("-t", FLOOD_PORT),
    ] {
        rules.push_str(&format!("-A {proto} {VIP}:{port} -s rr\n"));
        for rs in [RS1, RS2] {
            rules.push_str(&format!("-a {proto} {VIP}:{port} -r {rs}:{port} {fwd}\n"));
        }
        if sys == System::XvsFullnat {
            rules.push_str(&format!("-P {proto} {VIP}:{port} -z {LIP}\n"));
        }
    }
    rules
}

/// HAProxy's configuration: one thread (pinned by taskset like xvsd), TCP
/// mode, round robin over the two real servers, for both TCP services.
fn haproxy_cfg() -> String {
    let mut c = String::from(
        "global\n  nbthread 1\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n",
    );
    for (name, port) in [("http", HTTP_PORT), ("bulk", BULK_PORT)] {
        c.push_str(&format!(
            "frontend {name}\n  bind {VIP}:{port}\n  default_backend {name}_rs\n\
             backend {name}_rs\n  balance roundrobin\n  server rs1 {RS1}:{port}\n  server rs2 {RS2}:{port}\n"
        ));
    }
    c
}

/// Checks before the run what would make a system fail half-way through it.
pub fn preflight(t: &Topo, systems: &[System]) -> Result<()> {
    if systems.contains(&System::Haproxy) {
        if xvs_netns::run(&["sh", "-c", "command -v haproxy"]).is_err() {
            bail!("haproxy is not installed: `make bench` installs it (apt-get install haproxy), or leave it out with --only");
        }
        let cfg = t.tmp("haproxy.cfg");
        std::fs::write(&cfg, haproxy_cfg())?;
        t.dir
            .exec(&["haproxy", "-c", "-f", cfg.to_str().unwrap_or("")])
            .context("checking the HAProxy configuration")?;
    }
    let xvsd = exe_dir().join("xvsd");
    if systems
        .iter()
        .any(|s| s.floods() && !matches!(s, System::IpForward | System::NftDnat))
        && !xvsd.exists()
    {
        bail!(
            "{} not found: build it (cargo build --release -p xvsd) or set XVS_BIN_DIR",
            xvsd.display()
        );
    }
    Ok(())
}

/// Sets `sys` up as the director. `conn_max` sizes xvs's table.
pub fn start(t: &Topo, sys: System, conn_max: u32) -> Result<Director> {
    let mut d = Director {
        child: None,
        ns_cleanup: Vec::new(),
        dir: t.dir.name().to_string(),
    };
    let cpu = DIR_CPU.to_string();
    match sys {
        System::IpForward => {}
        System::NftDnat => {
            let mut script = String::from(
                "nft add table ip xvsb && \
                 nft add chain ip xvsb pre '{ type nat hook prerouting priority -100; }'",
            );
            for (proto, port) in [
                ("udp", 80),
                ("tcp", HTTP_PORT),
                ("tcp", BULK_PORT),
                ("tcp", FLOOD_PORT),
            ] {
                script.push_str(&format!(
                    " && nft add rule ip xvsb pre ip daddr {VIP} {proto} dport {port} dnat to numgen inc mod 2 map {{ 0 : {RS1}, 1 : {RS2} }}"
                ));
            }
            t.dir
                .sh(&script)
                .context("installing the nftables DNAT rules")?;
            d.ns_cleanup.push("nft delete table ip xvsb".into());
        }
        System::Haproxy => {
            let cfg = t.tmp("haproxy.cfg");
            std::fs::write(&cfg, haproxy_cfg())?;
            let log = std::fs::File::create(t.tmp("haproxy.log"))?;
            let cfg_s = cfg.to_str().unwrap_or("");
            let mut child = t.dir.spawn(
                &["taskset", "-c", &cpu, "haproxy", "-db", "-f", cfg_s],
                Stdio::null(),
                Stdio::from(log),
            )?;
            let addr = format!("{VIP}:{HTTP_PORT}");
            wait_until(&mut child, "haproxy", || listening(&t.dir, &addr)).with_context(|| {
                format!("starting haproxy (see {})", t.tmp("haproxy.log").display())
            })?;
            d.child = Some(child);
        }
        _ => {
            std::fs::write(t.tmp("rules"), xvs_rules(sys))?;
            // No `cores`: the whole daemon runs under taskset on the
            // director's CPU, so its one worker lands there too.
            std::fs::write(
                t.tmp("toml"),
                format!(
                    "conn_max = {conn_max}\nmetrics = \"{XVS_METRICS}\"\n[[interface]]\nname = \"d0\"\n[[interface]]\nname = \"d1\"\n"
                ),
            )?;
            let sock = t.tmp("sock");
            let _ = std::fs::remove_file(&sock);
            let exe = exe_dir().join("xvsd");
            let log_path = t.tmp("xvsd.log");
            let log = std::fs::File::create(&log_path)?;
            let (cfg, rules) = (t.tmp("toml"), t.tmp("rules"));
            let mut args = vec![
                "taskset",
                "-c",
                &cpu,
                exe.to_str().unwrap_or("xvsd"),
                "--config",
                cfg.to_str().unwrap_or(""),
                "--rules",
                rules.to_str().unwrap_or(""),
                "--socket",
                sock.to_str().unwrap_or(""),
            ];
            if sys == System::Ceiling {
                args.push("--bench-passthrough");
            }
            let mut child = t.dir.spawn(&args, Stdio::null(), Stdio::from(log))?;
            wait_until(&mut child, "xvsd", || {
                std::os::unix::net::UnixStream::connect(&sock).is_ok()
            })
            .with_context(|| format!("starting xvsd (see {})", log_path.display()))?;
            d.child = Some(child);
        }
    }
    t.check_pins()
        .with_context(|| format!("after setting up {}", sys.label()))?;
    Ok(d)
}
