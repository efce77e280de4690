//! A running lab: built by [`Lab::up`], torn down on drop (or kept for the CLI).

use crate::error::{LabError, Result, StepExt};
use crate::pattern;
use crate::plan::{host_port, url, LabOptions, Mode, Plan, MAX_RS, PORT};
use crate::procs;
use crate::topo::{self, Decap, Spaces};
use std::io::Read;
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use xvs_netns::Netns;

/// Where labs keep their control socket, logs and BPF object: `/run/xvs/lab/<prefix>`.
pub fn run_dir(prefix: &str) -> PathBuf {
    Path::new("/run/xvs/lab").join(prefix)
}

/// How long an RS server or xvsd may take to come up.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long xvsd gets to detach its XDP programs after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A lab: its namespaces, RS servers and (optionally) xvsd.
pub struct Lab {
    opts: LabOptions,
    plan: Plan,
    run_dir: PathBuf,
    namespaces: Vec<Netns>,
    servers: Vec<Child>,
    director: Option<Child>,
    decap: Option<Decap>,
    keep: bool,
}

impl Lab {
    /// Builds the lab (cleaning a half-built one of the same prefix first),
    /// starts the RS servers and, if `opts.start_director`, xvsd with the rules.
    /// On failure everything made so far is removed.
    pub fn up(opts: LabOptions) -> Result<Lab> {
        check_options(&opts)?;
        teardown(&opts.prefix);
        let plan = Plan::new(&opts);
        let run_dir = run_dir(&opts.prefix);
        let mut lab = Lab {
            plan,
            run_dir,
            namespaces: Vec::new(),
            servers: Vec::new(),
            director: None,
            decap: None,
            keep: false,
            opts,
        };
        std::fs::create_dir_all(&lab.run_dir).step(&format!("create {}", lab.run_dir.display()))?;
        {
            let mut s = Spaces {
                plan: &lab.plan,
                list: &mut lab.namespaces,
            };
            topo::make_namespaces(&lab.opts, &mut s)?;
            topo::wire(&s)?;
            if lab.plan.mode == Mode::Tun {
                lab.decap = Some(topo::decap(&s, lab.opts.kernel_tunnel, &lab.run_dir)?);
            }
        }
        lab.start_servers()?;
        if lab.opts.start_director {
            lab.start_director()?;
        }
        Ok(lab)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn options(&self) -> &LabOptions {
        &self.opts
    }

    /// How the TUN RS decapsulate (None for other modes).
    pub fn decap(&self) -> Option<Decap> {
        self.decap
    }

    /// The lab's xvsd control socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("xvsd.sock")
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// A namespace of the lab by full name.
    pub fn ns(&self, name: &str) -> Option<&Netns> {
        self.namespaces.iter().find(|n| n.name() == name)
    }

    pub fn client(&self) -> &Netns {
        self.ns(&self.plan.client_ns).expect("the lab has a client")
    }

    pub fn director(&self) -> &Netns {
        self.ns(&self.plan.dir_ns).expect("the lab has a director")
    }

    /// Real server `i` (0-based) namespace.
    pub fn rs(&self, i: usize) -> &Netns {
        self.ns(&self.plan.rs[i].ns).expect("the lab has this RS")
    }

    /// Pids of the RS servers and xvsd (while running).
    pub fn pids(&self) -> Vec<i32> {
        self.servers
            .iter()
            .chain(self.director.as_ref())
            .map(|c| c.id() as i32)
            .collect()
    }

    /// xvsd's pid, when the lab started it.
    pub fn director_pid(&self) -> Option<i32> {
        self.director.as_ref().map(|c| c.id() as i32)
    }

    fn start_servers(&mut self) -> Result<()> {
        let bin = procs::lab_bin(&self.opts, "start RS servers")?;
        // `[::]` is dual-stack (bindv6only is 0 in a new namespace).
        let listen = if self.opts.ipv6 {
            format!("[::]:{PORT}")
        } else {
            format!("0.0.0.0:{PORT}")
        };
        for r in self.plan.rs.clone() {
            let step = format!("start server {}", r.name);
            let log = self.run_dir.join(format!("{}.log", r.name));
            let args = ["serve", "--name", &r.name, "--listen", &listen].map(String::from);
            let mut child = procs::spawn_in(&r.ns, &bin, &args, &[], &log, &step)?;
            let ns = self.ns(&r.ns).expect("made").name().to_string();
            let addr = (r.addr4, PORT).into();
            let ready = || {
                Netns::existing(&ns)
                    .run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
                    .unwrap_or(false)
            };
            let res = procs::wait_ready(&mut child, START_LIMIT, &log, &step, ready);
            self.servers.push(child);
            res?;
        }
        Ok(())
    }

    /// The xvsadm argument lists that configure the lab's services.
    pub fn rules(&self) -> Vec<Vec<String>> {
        let p = &self.plan;
        let mut out = Vec::new();
        for vip in p.vips() {
            let svc = host_port(vip, PORT);
            out.push(vec!["-A", "-t", &svc, "-s", &self.opts.sched].map_str());
            for l in p.laddrs(vip) {
                out.push(vec!["-P", "-t", &svc, "-z", &l.to_string()].map_str());
            }
            for r in &p.rs {
                for a in r
                    .addrs()
                    .into_iter()
                    .filter(|a| a.is_ipv4() == vip.is_ipv4())
                {
                    let rip = host_port(a, PORT);
                    out.push(
                        vec!["-a", "-t", &svc, "-r", &rip, p.mode.fwd_flag(), "-w", "1"].map_str(),
                    );
                }
            }
        }
        out
    }

    /// Starts xvsd in the director namespace on the mode's interfaces with the
    /// lab's socket, waits for its socket, and configures [`Lab::rules`].
    pub fn start_director(&mut self) -> Result<()> {
        const STEP: &str = "start xvsd";
        if self.director.is_some() {
            return Err(LabError::new(STEP, "xvsd is already running in this lab"));
        }
        let xvsd = procs::find_bin(&self.opts, "xvsd", STEP)?;
        procs::find_bin(&self.opts, "xvsadm", "configure rules")?;
        let sock = self.socket();
        let _ = std::fs::remove_file(&sock);
        let mut args = vec!["--socket".to_string(), sock.to_string_lossy().to_string()];
        for i in &self.plan.dir_ifaces {
            args.push("-i".into());
            args.push(i.to_string());
        }
        let log = self.run_dir.join("xvsd.log");
        let mut child = procs::spawn_in(&self.plan.dir_ns, &xvsd, &args, &[], &log, STEP)?;
        let ready = || std::os::unix::net::UnixStream::connect(&sock).is_ok();
        let res = procs::wait_ready(&mut child, START_LIMIT, &log, STEP, ready);
        self.director = Some(child);
        res?;
        for rule in self.rules() {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            self.xvsadm(&args).map_err(|e| {
                LabError::new("configure rules", format!("{}: {}", e.step, e.detail))
            })?;
        }
        Ok(())
    }

    /// Stops xvsd (SIGTERM, so it detaches its XDP programs), if running.
    pub fn stop_director(&mut self) {
        if let Some(mut c) = self.director.take() {
            procs::stop_child(&mut c, STOP_GRACE);
        }
    }

    /// An `xvsadm` command aimed at this lab's socket (args still to add).
    pub fn xvsadm_cmd(&self) -> Result<Command> {
        let bin = procs::find_bin(&self.opts, "xvsadm", "run xvsadm")?;
        let mut c = Command::new(bin);
        c.env("XVS_SOCKET", self.socket()).stdin(Stdio::null());
        Ok(c)
    }

    /// Runs `xvsadm args` against the lab; its stdout, or an error with its stderr.
    pub fn xvsadm(&self, args: &[&str]) -> Result<String> {
        let step = format!("xvsadm {}", args.join(" "));
        let out = self.xvsadm_cmd()?.args(args).output().step(&step)?;
        if !out.status.success() {
            return Err(LabError::new(
                step,
                format!(
                    "exit {}: {}",
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs `args` inside namespace `ns`.
    pub fn cmd_in(ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `args` in the client namespace; fails (naming the command and its
    /// stderr) when it exits non-zero.
    pub fn client_exec(&self, args: &[&str]) -> Result<Output> {
        self.client()
            .exec(args)
            .step(&format!("in {}: {}", self.plan.client_ns, args.join(" ")))
    }

    /// `curl URL` from namespace `ns`: the response body, or an error.
    pub fn curl(&self, ns: &str, url: &str) -> Result<String> {
        let out = Lab::cmd_in(ns, &["curl", "-sS", "--fail", "--max-time", "30", url])
            .output()
            .step(&format!("curl {url} from {ns}"))?;
        if !out.status.success() {
            return Err(LabError::new(
                format!("curl {url} from {ns}"),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `curl http://VIP/path` from the client (IPv4 VIP).
    pub fn curl_vip(&self, path: &str) -> Result<String> {
        self.curl(&self.plan.client_ns, &url(IpAddr::V4(self.plan.vip4), path))
    }

    /// `curl http://[VIP6]/path` from the client (labs with `ipv6`).
    pub fn curl_vip6(&self, path: &str) -> Result<String> {
        let vip = self.plan.vip6.ok_or_else(|| {
            LabError::new("curl the IPv6 VIP", "this lab has no IPv6 (ipv6: false)")
        })?;
        self.curl(&self.plan.client_ns, &url(IpAddr::V6(vip), path))
    }

    /// Fetches `GET /bytes?n=N` from `url_base` (e.g. `http://10.77.0.100:80`)
    /// with curl in `ns`, checking the pattern as it streams; returns the count.
    pub fn curl_bytes(&self, ns: &str, url_base: &str, n: u64) -> Result<u64> {
        let url = format!("{url_base}/bytes?n={n}");
        let step = format!("curl {url} from {ns}");
        let mut child = Lab::cmd_in(ns, &["curl", "-sS", "--fail", "--max-time", "600", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .step(&step)?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut check = pattern::Checker::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut bad = None;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    if let Err(off) = check.feed(&buf[..k]) {
                        bad = Some(off);
                        break;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LabError::new(step, e.to_string()));
                }
            }
        }
        drop(stdout);
        if bad.is_some() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().step(&step)?;
        if let Some(off) = bad {
            return Err(LabError::new(
                step,
                format!("byte {off} differs from the pattern"),
            ));
        }
        if !out.status.success() {
            return Err(LabError::new(
                step,
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        if check.len() != n {
            return Err(LabError::new(
                step,
                format!("got {} bytes, want {n}", check.len()),
            ));
        }
        Ok(check.len())
    }

    /// Leaves everything running when this value is dropped (the CLI's `up`).
    pub fn keep(mut self) {
        self.keep = true;
        for ns in std::mem::take(&mut self.namespaces) {
            ns.keep();
        }
        // Dropping a Child neither kills nor waits for it.
        self.servers.clear();
        self.director = None;
    }

    /// Operator instructions: what runs where and the commands to use it.
    pub fn summary(&self) -> String {
        let p = &self.plan;
        let o = &self.opts;
        let mut s = format!(
            "xvs-lab: {} lab up: prefix {}, {} real server(s), scheduler {}{}\n",
            p.mode,
            p.prefix,
            p.rs.len(),
            o.sched,
            if o.ipv6 { ", dual stack" } else { "" }
        );
        let addrs = |v4: std::net::Ipv4Addr, v6: Option<std::net::Ipv6Addr>| {
            v6.map_or(v4.to_string(), |a| format!("{v4} {a}"))
        };
        s += &format!(
            "  client    {:<24} {}\n",
            p.client_ns,
            addrs(p.client4, p.client6)
        );
        let dir = match &self.director {
            Some(c) => format!(
                "xvsd -i {} (pid {}, log {})",
                p.dir_ifaces.join(" -i "),
                c.id(),
                self.run_dir.join("xvsd.log").display()
            ),
            None => "xvsd not started (--no-director)".to_string(),
        };
        s += &format!("  director  {:<24} {dir}\n", p.dir_ns);
        s += &format!(
            "  VIP       {}\n",
            p.vips()
                .iter()
                .map(|v| host_port(*v, PORT))
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !p.laddrs4.is_empty() {
            let l: Vec<String> = p
                .laddrs4
                .iter()
                .map(|a| a.to_string())
                .chain(p.laddrs6.iter().map(|a| a.to_string()))
                .collect();
            s += &format!("  LIPs      {}\n", l.join(" "));
        }
        for r in &p.rs {
            s += &format!("  {:<9} {:<24} {}\n", r.name, r.ns, addrs(r.addr4, r.addr6));
        }
        if let Some(d) = self.decap {
            s += &format!("  RS decapsulation: {d:?}\n");
        }
        s += &format!("export XVS_SOCKET={}\n", self.socket().display());
        s += &format!(
            "ip netns exec {} curl -s {}\n",
            p.client_ns,
            url(IpAddr::V4(p.vip4), "/")
        );
        if let Some(v6) = p.vip6 {
            s += &format!(
                "ip netns exec {} curl -s {}\n",
                p.client_ns,
                url(IpAddr::V6(v6), "/")
            );
        }
        let xvsadm = procs::find_bin(o, "xvsadm", "")
            .map_or("xvsadm".to_string(), |p| p.display().to_string());
        s += &format!("{xvsadm} -L -n\n");
        s += &format!(
            "xvs-lab down {}\n",
            if p.prefix == format!("xvs-{}", p.mode) {
                p.mode.to_string()
            } else {
                format!("--prefix {}", p.prefix)
            }
        );
        s
    }

    /// Tears the lab down now (same as dropping it).
    pub fn down(self) {}
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.stop_director();
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Netns's drop kills what is left inside and deletes the namespace.
        self.namespaces.clear();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

trait MapStr {
    fn map_str(self) -> Vec<String>;
}

impl MapStr for Vec<&str> {
    fn map_str(self) -> Vec<String> {
        self.into_iter().map(String::from).collect()
    }
}

fn check_options(o: &LabOptions) -> Result<()> {
    const STEP: &str = "check options";
    if o.rs == 0 || o.rs > MAX_RS {
        return Err(LabError::new(
            STEP,
            format!("--rs must be 1..={MAX_RS}, not {}", o.rs),
        ));
    }
    if o.kernel_tunnel && o.mode != Mode::Tun {
        return Err(LabError::new(
            STEP,
            "--kernel-tunnel is for the tun lab only",
        ));
    }
    if o.prefix.is_empty() || o.prefix.contains('/') || o.prefix.contains(char::is_whitespace) {
        return Err(LabError::new(STEP, format!("bad prefix {:?}", o.prefix)));
    }
    Ok(())
}

/// Removes everything a lab with `prefix` made: stops xvsd gracefully, kills
/// every process in its namespaces (BIRD included), deletes the namespaces
/// and the run dir. Returns the namespaces it deleted. Silent when there is
/// nothing.
pub fn teardown(prefix: &str) -> Vec<String> {
    let names = xvs_netns::list(&format!("{prefix}-"));
    // The directors first (`-dir`, or the ECMP lab's `-d1`, `-d2`...), with
    // SIGTERM, so xvsd detaches its XDP programs cleanly.
    let directors: Vec<i32> = names
        .iter()
        .filter(|n| {
            n.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|role| {
                    role == "dir"
                        || role
                            .strip_prefix('d')
                            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .flat_map(|n| procs::netns_pids(n))
        .collect();
    procs::stop_pids(&directors, STOP_GRACE);
    // BIRD by its pid files too, should its namespace be gone already.
    procs::kill_pid_files(&run_dir(prefix), "bird");
    let pids: Vec<i32> = names.iter().flat_map(|n| procs::netns_pids(n)).collect();
    for n in &names {
        xvs_netns::delete(n);
    }
    procs::wait_gone(&pids, Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(run_dir(prefix));
    names
}
