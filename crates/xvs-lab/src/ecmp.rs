//! The ECMP lab (`xvs-lab up ecmp`): N directors behind a router that spreads
//! flows over them with the kernel's multipath routes, each director
//! announcing the VIP over BGP (BIRD 2) while its xvsd is healthy, BFD for
//! sub-second failure detection, and M real servers (DR or TUN).
//!
//! ```text
//!   client 10.77.20.2
//!     │ 10.77.20.0/24
//!   router 10.77.20.1 / 10.77.21.1   BIRD: BGP AS 65000 + BFD to every director,
//!     │                              kernel: VIP/32 → multipath, L4 hash
//!   ──┴── bridge 10.77.21.0/24 (namespace -sw) ─────────────────────────────
//!     │            │             │             │              │
//!   d1 .11       d2 .12   ...  dN .10+N      rs1 .101  ...  rsM .100+M
//!   xvsd + BIRD (AS 65001, announces VIP            VIP on lo, echo :7, HTTP :80,
//!   10.77.22.100/32 while `xvs-lab announce`     replies straight to the router
//!   sees xvsd answer)                                (TUN: XDP decapsulation)
//! ```
//!
//! Every director runs the same rules (`mh` with `mh-port` by default), its
//! dests added in another order (rotated by director index), with
//! `sloppy_tcp` (a flow ECMP moves is picked up mid-stream) and
//! `expire_nodest_conn` (a flow whose real server is removed fails at once).

use crate::error::{LabError, Result, StepExt};
use crate::plan::Mode;
use crate::procs;
use crate::topo::{self, addr, ip, route, sysctl, Decap};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use xvs_netns::Netns;

/// Most directors a lab can have (addresses .11-.18 of the fabric).
pub const MAX_DIRECTORS: usize = 8;
/// Most real servers (.101-.140 of the fabric).
pub const MAX_RS: usize = 40;
/// The HTTP service port and the echo service port (both on the VIP).
pub const HTTP_PORT: u16 = 80;
pub const ECHO_PORT: u16 = 7;
/// BGP autonomous systems: the router's and the directors' (one for all).
pub const ROUTER_AS: u32 = 65000;
pub const DIRECTOR_AS: u32 = 65001;
/// BFD: a packet every 100 ms each way, down after 3 missed (300 ms).
pub const BFD_INTERVAL_MS: u32 = 100;
pub const BFD_MULTIPLIER: u32 = 3;
/// How often `xvs-lab announce` asks xvsd whether it is alive.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// BIRD's static protocol that holds the VIP route on a director.
pub const VIP_PROTOCOL: &str = "vip";

const START_LIMIT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The VIP (routed: no segment holds it).
pub fn vip() -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 22, 100)
}
/// The client's address.
pub fn client_addr() -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 20, 2)
}
/// The router's address on the client segment.
pub fn router_client_addr() -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 20, 1)
}
/// The router's address on the fabric (the BGP peer of every director).
pub fn router_addr() -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 21, 1)
}
/// Director `i` (1-based) on the fabric.
pub fn director_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 21, 10 + i as u8)
}
/// Real server `j` (1-based) on the fabric.
pub fn rs_addr(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 21, 100 + j as u8)
}

/// A tool of the lab (bird, birdc) from PATH or the sbin directories, which a
/// non-login root shell may not have on its PATH.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// What to build.
#[derive(Debug, Clone)]
pub struct EcmpOptions {
    /// DR or TUN (the real servers answer the client directly).
    pub mode: Mode,
    pub directors: usize,
    pub rs: usize,
    pub sched: String,
    /// `-b` flags of the services; default for mh and sh: their `-port`
    /// flag, since the lab's one client differs only by its ports.
    pub sched_flags: Option<String>,
    /// Namespaces are `<prefix>-client`, `-rt`, `-sw`, `-d1..`, `-rs1..`.
    pub prefix: String,
    /// See [`crate::LabOptions::bin_dir`].
    pub bin_dir: Option<PathBuf>,
    pub lab_bin: Option<PathBuf>,
}

impl EcmpOptions {
    /// The CLI's defaults: prefix `xvs-ecmp`, DR, 3 directors, 4 RS, mh.
    pub fn new() -> EcmpOptions {
        EcmpOptions {
            mode: Mode::Dr,
            directors: 3,
            rs: 4,
            sched: "mh".into(),
            sched_flags: None,
            prefix: "xvs-ecmp".into(),
            bin_dir: None,
            lab_bin: None,
        }
    }

    /// For tests: prefix `xvst-<pid>-ecmp<tag>`.
    pub fn for_test(tag: &str) -> EcmpOptions {
        EcmpOptions {
            prefix: format!("{}-ecmp{tag}", xvs_netns::test_prefix()),
            ..EcmpOptions::new()
        }
    }

    /// The `-b` flags in force.
    pub fn flags(&self) -> Option<String> {
        self.sched_flags
            .clone()
            .or_else(|| match self.sched.as_str() {
                "mh" => Some("mh-port".into()),
                "sh" => Some("sh-port".into()),
                _ => None,
            })
    }

    fn as_lab_options(&self) -> crate::LabOptions {
        crate::LabOptions {
            bin_dir: self.bin_dir.clone(),
            lab_bin: self.lab_bin.clone(),
            ..crate::LabOptions::new(self.mode)
        }
    }
}

impl Default for EcmpOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// One director's processes.
#[derive(Default)]
struct Director {
    xvsd: Option<Child>,
    bird: Option<Child>,
    announce: Option<Child>,
}

impl Director {
    fn children(&mut self) -> impl Iterator<Item = &mut Child> {
        [&mut self.announce, &mut self.bird, &mut self.xvsd]
            .into_iter()
            .filter_map(Option::as_mut)
    }
}

/// A running ECMP lab; dropping it removes everything (BIRD included).
pub struct EcmpLab {
    opts: EcmpOptions,
    run_dir: PathBuf,
    namespaces: Vec<Netns>,
    servers: Vec<Child>,
    router: Option<Child>,
    directors: Vec<Director>,
    decap: Option<Decap>,
    keep: bool,
}

impl EcmpLab {
    /// Builds the lab (removing a leftover of the same prefix first), starts
    /// the real servers, the router's BIRD and every director, and waits until
    /// the router has a path through each. On failure everything is removed.
    pub fn up(opts: EcmpOptions) -> Result<EcmpLab> {
        check_options(&opts)?;
        crate::teardown(&opts.prefix);
        let run_dir = crate::run_dir(&opts.prefix);
        let mut lab = EcmpLab {
            run_dir,
            namespaces: Vec::new(),
            servers: Vec::new(),
            router: None,
            directors: Vec::new(),
            decap: None,
            keep: false,
            opts,
        };
        std::fs::create_dir_all(&lab.run_dir).step(&format!("create {}", lab.run_dir.display()))?;
        lab.build_fabric()?;
        lab.start_servers()?;
        lab.start_router()?;
        for _ in 0..lab.opts.directors {
            lab.add_director()?;
        }
        let want: Vec<Ipv4Addr> = (1..=lab.opts.directors).map(director_addr).collect();
        lab.wait_paths(&want, Duration::from_secs(30))?;
        Ok(lab)
    }

    pub fn options(&self) -> &EcmpOptions {
        &self.opts
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// How the TUN real servers decapsulate (None in DR).
    pub fn decap(&self) -> Option<Decap> {
        self.decap
    }

    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.opts.prefix)
    }

    fn ns(&self, role: &str) -> &Netns {
        let name = self.name(role);
        self.namespaces
            .iter()
            .find(|n| n.name() == name)
            .expect("the lab made this namespace")
    }

    pub fn client(&self) -> &Netns {
        self.ns("client")
    }

    pub fn router(&self) -> &Netns {
        self.ns("rt")
    }

    /// Director `i` (1-based).
    pub fn director(&self, i: usize) -> &Netns {
        self.ns(&format!("d{i}"))
    }

    /// Real server `j` (1-based).
    pub fn rs(&self, j: usize) -> &Netns {
        self.ns(&format!("rs{j}"))
    }

    /// How many directors were added (killed ones included).
    pub fn director_count(&self) -> usize {
        self.directors.len()
    }

    /// Director `i`'s xvsd control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.run_dir.join(format!("d{i}.sock"))
    }

    fn bird_socket(&self, who: &str) -> PathBuf {
        self.run_dir.join(format!("{who}.bird.ctl"))
    }

    fn new_ns(&mut self, role: &str, forward: bool) -> Result<()> {
        let name = self.name(role);
        let ns = Netns::new(&name).step(&format!("create namespace {name}"))?;
        // A closed world with asymmetric paths (replies bypass the
        // directors): no reverse-path filter, no IPv6.
        let mut kv: Vec<String> = [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            // Directors and real servers hold the VIP on lo: never answer ARP for it.
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ]
        .map(String::from)
        .to_vec();
        if forward {
            kv.push("net.ipv4.ip_forward=1".into());
            // The L4 hash: flows of one client spread over the paths by port.
            kv.push("net.ipv4.fib_multipath_hash_policy=1".into());
        }
        sysctl(&ns, &format!("sysctls in {name}"), &kv)?;
        self.namespaces.push(ns);
        Ok(())
    }

    /// The fabric's MTU: room for the IPIP header in TUN.
    fn fabric_mtu(&self) -> u32 {
        if self.opts.mode == Mode::Tun {
            crate::TUN_PATH_MTU
        } else {
            1500
        }
    }

    /// `role`'s eth0 on the fabric bridge.
    fn plug(&self, role: &str) -> Result<()> {
        let sw = self.name("sw");
        let port = format!("p-{role}");
        let step = format!("add veth {role}-sw");
        xvs_netns::veth(&port, self.ns("sw"), "eth0", self.ns(role)).step(&step)?;
        let mtu = self.fabric_mtu().to_string();
        if mtu != "1500" {
            ip(&sw, &step, &["link", "set", &port, "mtu", &mtu])?;
            ip(
                &self.name(role),
                &step,
                &["link", "set", "eth0", "mtu", &mtu],
            )?;
        }
        ip(&sw, &step, &["link", "set", &port, "master", "br0"])
    }

    fn build_fabric(&mut self) -> Result<()> {
        self.new_ns("sw", false)?;
        self.new_ns("rt", true)?;
        self.new_ns("client", false)?;
        for j in 1..=self.opts.rs {
            self.new_ns(&format!("rs{j}"), false)?;
        }
        let sw = self.name("sw");
        let step = format!("add bridge br0 in {sw}");
        ip(
            &sw,
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
        ip(&sw, &step, &["link", "set", "br0", "up"])?;
        let (rt, client) = (self.name("rt"), self.name("client"));
        xvs_netns::veth("eth0", self.client(), "c0", self.router()).step("add veth client-rt")?;
        addr(&client, "eth0", client_addr().into(), 24)?;
        addr(&rt, "c0", router_client_addr().into(), 24)?;
        route(&client, "default", router_client_addr().into())?;
        self.plug("rt")?;
        addr(&rt, "eth0", router_addr().into(), 24)?;
        for j in 1..=self.opts.rs {
            let role = format!("rs{j}");
            self.plug(&role)?;
            let ns = self.name(&role);
            addr(&ns, "eth0", rs_addr(j).into(), 24)?;
            addr(&ns, "lo", vip().into(), 32)?;
            route(&ns, "default", router_addr().into())?;
        }
        if self.opts.mode == Mode::Tun {
            let rs: Vec<(String, String)> = (1..=self.opts.rs)
                .map(|j| (format!("rs{j}"), self.name(&format!("rs{j}"))))
                .collect();
            let rs: Vec<(&str, &str)> = rs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            self.decap = Some(topo::attach_decap(&rs, &self.run_dir)?);
        }
        Ok(())
    }

    fn start_servers(&mut self) -> Result<()> {
        let bin = procs::lab_bin(&self.opts.as_lab_options(), "start RS servers")?;
        for j in 1..=self.opts.rs {
            let name = format!("rs{j}");
            let step = format!("start server {name}");
            let log = self.run_dir.join(format!("{name}.log"));
            let args = [
                "serve".into(),
                "--name".into(),
                name.clone(),
                "--listen".into(),
                format!("0.0.0.0:{HTTP_PORT}"),
                "--echo".into(),
                format!("0.0.0.0:{ECHO_PORT}"),
            ];
            let mut child = procs::spawn_in(&self.name(&name), &bin, &args, &[], &log, &step)?;
            let ns = self.name(&name);
            let a = (rs_addr(j), ECHO_PORT).into();
            let ready = || {
                Netns::existing(&ns)
                    .run(|| {
                        std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok()
                    })
                    .unwrap_or(false)
            };
            let res = procs::wait_ready(&mut child, START_LIMIT, &log, &step, ready);
            self.servers.push(child);
            res?;
        }
        Ok(())
    }

    /// Starts BIRD in `role`'s namespace with `conf`; waits for its socket.
    fn start_bird(&self, role: &str, who: &str, conf: &str) -> Result<Child> {
        let step = format!("start BIRD in {role}");
        let bird = tool("bird");
        if !bird.is_file() {
            return Err(LabError::new(
                step,
                "bird not found: install the Debian package bird2 (`make deps` does)",
            ));
        }
        let conf_path = self.run_dir.join(format!("{who}.bird.conf"));
        std::fs::write(&conf_path, conf).step(&format!("write {}", conf_path.display()))?;
        let sock = self.bird_socket(who);
        let _ = std::fs::remove_file(&sock);
        let args = [
            "-f".into(),
            "-c".into(),
            conf_path.to_string_lossy().into_owned(),
            "-s".into(),
            sock.to_string_lossy().into_owned(),
            "-P".into(),
            self.run_dir
                .join(format!("{who}.bird.pid"))
                .to_string_lossy()
                .into_owned(),
        ];
        let log = self.run_dir.join(format!("{who}.bird.log"));
        let mut child = procs::spawn_in(&self.name(role), &bird, &args, &[], &log, &step)?;
        let ready = || std::os::unix::net::UnixStream::connect(&sock).is_ok();
        procs::wait_ready(&mut child, START_LIMIT, &log, &step, ready).inspect_err(|_| {
            let _ = child.kill();
            let _ = child.wait();
        })?;
        Ok(child)
    }

    fn start_router(&mut self) -> Result<()> {
        let conf = router_conf(0);
        self.router = Some(self.start_bird("rt", "rt", &conf)?);
        Ok(())
    }

    /// The router's BIRD learns of every director added so far.
    fn reconfigure_router(&self) -> Result<()> {
        let step = "reconfigure the router's BIRD";
        let conf = router_conf(self.directors.len());
        let path = self.run_dir.join("rt.bird.conf");
        std::fs::write(&path, conf).step(&format!("write {}", path.display()))?;
        let out = std::process::Command::new(tool("birdc"))
            .arg("-s")
            .arg(self.bird_socket("rt"))
            .arg("configure")
            .output()
            .step(step)?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains("Reconfigured") {
            return Err(LabError::new(step, text.trim().to_string()));
        }
        Ok(())
    }

    /// The xvsadm commands of a director: both services, the dests in an
    /// order of its own (rotated by `i`), so that the tables agree only
    /// because mh and sh fill them by address.
    pub fn rules(&self, i: usize) -> Vec<Vec<String>> {
        let fwd = self.opts.mode.fwd_flag();
        let mut out = Vec::new();
        for port in [HTTP_PORT, ECHO_PORT] {
            let svc = format!("{}:{port}", vip());
            let mut a = ["-A", "-t", &svc, "-s", &self.opts.sched]
                .map(String::from)
                .to_vec();
            if let Some(f) = self.opts.flags() {
                a.extend(["-b".into(), f]);
            }
            out.push(a);
            let n = self.opts.rs;
            for k in 0..n {
                let j = (k + i) % n + 1;
                out.push(
                    [
                        "-a",
                        "-t",
                        &svc,
                        "-r",
                        &format!("{}:{port}", rs_addr(j)),
                        fwd,
                        "-w",
                        "1",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
            }
        }
        out
    }

    /// Adds director `n+1`: its namespace on the fabric, xvsd with the rules,
    /// BIRD, the health loop, and a session on the router. Returns its index;
    /// the router's path through it follows within a few seconds
    /// ([`EcmpLab::wait_paths`]).
    pub fn add_director(&mut self) -> Result<usize> {
        let i = self.directors.len() + 1;
        if i > MAX_DIRECTORS {
            return Err(LabError::new(
                "add director",
                format!("at most {MAX_DIRECTORS} directors"),
            ));
        }
        let role = format!("d{i}");
        self.new_ns(&role, false)?;
        self.plug(&role)?;
        let ns = self.name(&role);
        addr(&ns, "eth0", director_addr(i).into(), 24)?;
        // No VIP on the director itself: while its xvsd is down (before the
        // health loop withdraws the route) the kernel would answer the
        // VIP's flows with resets; without it they are dropped and
        // retransmitted to a director that picks them up.
        route(&ns, "default", router_addr().into())?;
        self.directors.push(Director::default());
        let o = self.opts.as_lab_options();

        // xvsd, with the knobs ECMP needs.
        let step = format!("start xvsd in {role}");
        let xvsd = procs::find_bin(&o, "xvsd", &step)?;
        procs::find_bin(&o, "xvsadm", "configure rules")?;
        let conf = self.run_dir.join(format!("{role}.toml"));
        std::fs::write(&conf, DIRECTOR_TOML).step(&format!("write {}", conf.display()))?;
        let sock = self.socket(i);
        let _ = std::fs::remove_file(&sock);
        let args = [
            "--config".into(),
            conf.to_string_lossy().into_owned(),
            "--socket".into(),
            sock.to_string_lossy().into_owned(),
            "-i".into(),
            "eth0".into(),
        ];
        let log = self.run_dir.join(format!("{role}.log"));
        let mut child = procs::spawn_in(&ns, &xvsd, &args, &[], &log, &step)?;
        let ready = || std::os::unix::net::UnixStream::connect(&sock).is_ok();
        let res = procs::wait_ready(&mut child, START_LIMIT, &log, &step, ready);
        self.directors[i - 1].xvsd = Some(child);
        res?;
        for rule in self.rules(i) {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            self.xvsadm(i, &args).map_err(|e| {
                LabError::new("configure rules", format!("{}: {}", e.step, e.detail))
            })?;
        }

        // BIRD, then the loop that enables its VIP route while xvsd answers.
        let bird = self.start_bird(&role, &role, &director_conf(i))?;
        self.directors[i - 1].bird = Some(bird);
        let step = format!("start the health loop in {role}");
        let bin = procs::lab_bin(&o, &step)?;
        let args = [
            "announce".into(),
            "--xvsd-socket".into(),
            sock.to_string_lossy().into_owned(),
            "--bird-socket".into(),
            self.bird_socket(&role).to_string_lossy().into_owned(),
            "--protocol".into(),
            VIP_PROTOCOL.into(),
            "--interval-ms".into(),
            HEALTH_INTERVAL.as_millis().to_string(),
        ];
        let log = self.run_dir.join(format!("{role}.announce.log"));
        let child = procs::spawn_in(&ns, &bin, &args, &[], &log, &step)?;
        self.directors[i - 1].announce = Some(child);
        self.reconfigure_router()?;
        Ok(i)
    }

    /// Director `i` dies as a hung machine would: from now on nothing it
    /// sends leaves it and nothing reaches its stack (netdev ingress and egress
    /// filters that drop everything, so no BGP close reaches the router and
    /// BFD has to notice), and every process of it is SIGKILLed. The link
    /// stays up: a link going down makes the lab's bridge forget the
    /// director's MAC and flood its frames to every port, where the other
    /// directors would pick them up before the router has rerouted anything,
    /// and the figures would not measure BFD. Returns the moment of death.
    pub fn kill_director(&mut self, i: usize) -> Result<Instant> {
        let ns = self.name(&format!("d{i}"));
        let step = format!("cut d{i} off");
        let script = "nft -f - <<'EOF'\n\
            table netdev dead {\n\
              chain in { type filter hook ingress device eth0 priority -500; policy drop; }\n\
              chain out { type filter hook egress device eth0 priority -500; policy drop; }\n\
            }\n\
            EOF\n";
        self.ns(&format!("d{i}")).sh(script).step(&step)?;
        let t = Instant::now();
        for c in self.directors[i - 1].children() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in procs::netns_pids(&ns) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        self.directors[i - 1] = Director::default();
        Ok(t)
    }

    /// SIGKILLs director `i`'s xvsd only: its health loop withdraws the VIP.
    pub fn kill_xvsd(&mut self, i: usize) {
        if let Some(mut c) = self.directors[i - 1].xvsd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `xvsadm args` against director `i`; its stdout, or an error.
    pub fn xvsadm(&self, i: usize, args: &[&str]) -> Result<String> {
        let step = format!("d{i}: xvsadm {}", args.join(" "));
        let bin = procs::find_bin(&self.opts.as_lab_options(), "xvsadm", &step)?;
        let out = std::process::Command::new(bin)
            .env("XVS_SOCKET", self.socket(i))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .step(&step)?;
        if !out.status.success() {
            return Err(LabError::new(
                step,
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether director `i` still runs its xvsd.
    pub fn alive(&mut self, i: usize) -> bool {
        self.directors[i - 1]
            .xvsd
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Removes real server `j` from both services of every live director.
    pub fn remove_rs(&mut self, j: usize) -> Result<()> {
        for i in 1..=self.directors.len() {
            if !self.alive(i) {
                continue;
            }
            for port in [HTTP_PORT, ECHO_PORT] {
                let svc = format!("{}:{port}", vip());
                let rip = format!("{}:{port}", rs_addr(j));
                self.xvsadm(i, &["-d", "-t", &svc, "-r", &rip])?;
            }
        }
        Ok(())
    }

    /// The next hops of the router's route to the VIP, as the kernel has it.
    pub fn paths(&self) -> Vec<Ipv4Addr> {
        let out = xvs_netns::run(&[
            "ip",
            "-n",
            &self.name("rt"),
            "-4",
            "route",
            "show",
            &format!("{}/32", vip()),
        ])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
        let mut v: Vec<Ipv4Addr> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        v.sort();
        v
    }

    /// Waits until the router's paths to the VIP are exactly `want`; how long it took.
    pub fn wait_paths(&self, want: &[Ipv4Addr], limit: Duration) -> Result<Duration> {
        let mut want = want.to_vec();
        want.sort();
        let t0 = Instant::now();
        loop {
            let got = self.paths();
            if got == want {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                return Err(LabError::new(
                    "wait for the router's paths",
                    format!(
                        "after {limit:?} the VIP goes via {got:?}, not {want:?}; BIRD on the router:\n{}",
                        self.birdc("rt", "show protocols")
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `birdc -s <who's socket> cmd` (output, or the error as text).
    pub fn birdc(&self, who: &str, cmd: &str) -> String {
        std::process::Command::new(tool("birdc"))
            .arg("-s")
            .arg(self.bird_socket(who))
            .args(cmd.split_whitespace())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string())
    }

    /// Operator instructions: what runs where and the commands to use it.
    pub fn summary(&self) -> String {
        let o = &self.opts;
        let mut s = format!(
            "xvs-lab: ecmp lab up: prefix {}, {} directors, {} real servers, {}, scheduler {}{}\n",
            o.prefix,
            self.directors.len(),
            o.rs,
            o.mode,
            o.sched,
            o.flags().map(|f| format!(" -b {f}")).unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  client    {:<22} {}",
            self.name("client"),
            client_addr()
        );
        let _ = writeln!(
            s,
            "  router    {:<22} {} / {}, BIRD AS {ROUTER_AS}, {}",
            self.name("rt"),
            router_client_addr(),
            router_addr(),
            self.bird_socket("rt").display()
        );
        for i in 1..=self.directors.len() {
            let _ = writeln!(
                s,
                "  d{i:<8} {:<22} {}, xvsd {}, BIRD AS {DIRECTOR_AS} {}",
                self.name(&format!("d{i}")),
                director_addr(i),
                self.socket(i).display(),
                self.bird_socket(&format!("d{i}")).display()
            );
        }
        for j in 1..=o.rs {
            let _ = writeln!(
                s,
                "  rs{j:<7} {:<22} {}",
                self.name(&format!("rs{j}")),
                rs_addr(j)
            );
        }
        let _ = writeln!(
            s,
            "  VIP       {}:{HTTP_PORT} (HTTP), {}:{ECHO_PORT} (echo)",
            vip(),
            vip()
        );
        let _ = writeln!(s, "ip -n {} route show {}", self.name("rt"), vip());
        let _ = writeln!(
            s,
            "birdc -s {} show protocols",
            self.bird_socket("rt").display()
        );
        let _ = writeln!(
            s,
            "ip netns exec {} curl -s http://{}/",
            self.name("client"),
            vip()
        );
        let _ = writeln!(s, "XVS_SOCKET={} xvsadm -L -n -c", self.socket(1).display());
        let down = if o.prefix == "xvs-ecmp" {
            "ecmp".to_string()
        } else {
            format!("--prefix {}", o.prefix)
        };
        let _ = writeln!(s, "xvs-lab down {down}");
        s
    }

    /// Leaves everything running when dropped (the CLI's `up`).
    pub fn keep(mut self) {
        self.keep = true;
        for ns in std::mem::take(&mut self.namespaces) {
            ns.keep();
        }
        self.servers.clear();
        self.router = None;
        self.directors.clear();
    }
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for d in &mut self.directors {
            if let Some(c) = d.xvsd.as_mut() {
                procs::stop_child(c, STOP_GRACE);
            }
            for c in d.children() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for c in self.servers.iter_mut().chain(self.router.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Netns's drop kills what is left inside and deletes the namespace.
        self.namespaces.clear();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn check_options(o: &EcmpOptions) -> Result<()> {
    const STEP: &str = "check options";
    if !matches!(o.mode, Mode::Dr | Mode::Tun) {
        return Err(LabError::new(
            STEP,
            format!(
                "the ecmp lab is dr or tun, not {}: real servers must answer the client \
                 directly, since the director a reply would cross is not the one ECMP chose",
                o.mode
            ),
        ));
    }
    if o.directors == 0 || o.directors > MAX_DIRECTORS {
        return Err(LabError::new(
            STEP,
            format!(
                "--directors must be 1..={MAX_DIRECTORS}, not {}",
                o.directors
            ),
        ));
    }
    if o.rs == 0 || o.rs > MAX_RS {
        return Err(LabError::new(
            STEP,
            format!("--rs must be 1..={MAX_RS}, not {}", o.rs),
        ));
    }
    if o.prefix.is_empty() || o.prefix.contains('/') || o.prefix.contains(char::is_whitespace) {
        return Err(LabError::new(STEP, format!("bad prefix {:?}", o.prefix)));
    }
    Ok(())
}

/// Every director's xvsd.toml: take over flows mid-stream, fail fast the
/// flows of a removed real server, tables by address (the default, said).
pub const DIRECTOR_TOML: &str = "\
# Written by xvs-lab for a director behind ECMP.
[knobs]
# A flow the router moves here from another director goes on (mid-flow pickup).
sloppy_tcp = true
# A flow whose real server was removed is rescheduled; the new real server
# resets it at once instead of the client retransmitting into a void.
expire_nodest_conn = true

[sched]
# The same mh table on every director, whatever order the dests came in.
table_order = \"address\"
";

/// Timers both ends of a BGP session use: connect at once, retry every
/// second, and a hold time as the fallback should BFD be off.
const BGP_TIMERS: &str = "connect delay time 1; connect retry time 1; error wait time 1, 2; \
                          hold time 6; keepalive time 2;";

fn bfd_block() -> String {
    format!(
        "protocol bfd {{\n  interface \"eth0\" {{ interval {BFD_INTERVAL_MS} ms; multiplier {BFD_MULTIPLIER}; }};\n}}\n"
    )
}

/// The router's BIRD: a session (with BFD) to each of `n` directors, and the
/// VIP's routes merged into one multipath kernel route.
pub fn router_conf(n: usize) -> String {
    let mut s = format!(
        "# Written by xvs-lab: the ECMP router.\n\
         router id {rid};\n\
         log stderr all;\n\
         protocol device {{}}\n\
         # Equal BGP routes become one multipath route (RTA_MULTIPATH).\n\
         protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on limit 16;\n}}\n\
         {bfd}\
         template bgp director {{\n  local {rid} as {ROUTER_AS};\n  bfd on;\n  {BGP_TIMERS}\n  \
         ipv4 {{ import where net = {vip}/32; export none; }};\n}}\n",
        rid = router_addr(),
        bfd = bfd_block(),
        vip = vip(),
    );
    for i in 1..=n {
        let _ = writeln!(
            s,
            "protocol bgp d{i} from director {{ neighbor {} as {DIRECTOR_AS}; }}",
            director_addr(i)
        );
    }
    s
}

/// Director `i`'s BIRD: the VIP /32 in a static protocol (disabled until the
/// health loop enables it) exported to the router over BGP with BFD.
pub fn director_conf(i: usize) -> String {
    let me = director_addr(i);
    format!(
        "# Written by xvs-lab: director d{i}.\n\
         router id {me};\n\
         log stderr all;\n\
         protocol device {{}}\n\
         {bfd}\
         # Enabled by `xvs-lab announce` while xvsd answers; the route itself goes nowhere\n\
         # here (no kernel protocol): it only exists to be announced.\n\
         protocol static {VIP_PROTOCOL} {{\n  disabled yes;\n  ipv4;\n  route {vip}/32 blackhole;\n}}\n\
         protocol bgp uplink {{\n  local {me} as {DIRECTOR_AS};\n  neighbor {rt} as {ROUTER_AS};\n  bfd on;\n  \
         {BGP_TIMERS}\n  ipv4 {{ import none; export where proto = \"{VIP_PROTOCOL}\"; }};\n}}\n",
        bfd = bfd_block(),
        vip = vip(),
        rt = router_addr(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_the_lab_range() {
        let all: Vec<Ipv4Addr> = [vip(), client_addr(), router_addr(), router_client_addr()]
            .into_iter()
            .chain((1..=MAX_DIRECTORS).map(director_addr))
            .chain((1..=MAX_RS).map(rs_addr))
            .collect();
        for a in &all {
            assert_eq!(a.octets()[..2], [10, 77], "{a}");
        }
        let mut u = all.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), all.len(), "no address twice");
    }

    #[test]
    fn router_config_has_a_session_per_director() {
        let c = router_conf(3);
        assert_eq!(c.matches("protocol bgp d").count(), 3);
        assert!(c.contains("neighbor 10.77.21.13 as 65001"));
        assert!(c.contains("merge paths on"));
        assert!(c.contains("bfd on"));
        let d = director_conf(2);
        assert!(d.contains("local 10.77.21.12 as 65001"));
        assert!(d.contains("disabled yes"));
    }

    #[test]
    fn rules_rotate_the_dest_order_per_director() {
        let lab_rules = |i: usize| {
            let o = EcmpOptions::new();
            let l = EcmpLab {
                opts: o,
                run_dir: PathBuf::new(),
                namespaces: vec![],
                servers: vec![],
                router: None,
                directors: vec![],
                decap: None,
                keep: true,
            };
            l.rules(i)
        };
        let (a, b) = (lab_rules(1), lab_rules(2));
        assert_eq!(
            a[0],
            ["-A", "-t", "10.77.22.100:80", "-s", "mh", "-b", "mh-port"]
        );
        assert_ne!(a[1], b[1], "another first dest");
        let mut sa = a.clone();
        let mut sb = b.clone();
        sa.sort();
        sb.sort();
        assert_eq!(sa, sb, "the same rules");
    }
}
