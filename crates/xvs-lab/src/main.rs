//! `xvs-lab`: builds and tears down xvs's veth + netns labs, and runs the lab
//! real servers (`xvs-lab serve`).

#![forbid(unsafe_code)]

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use xvs_lab::announce::{self, AnnounceConfig};
use xvs_lab::serve::{serve, ServeConfig};
use xvs_lab::{teardown, EcmpLab, EcmpOptions, Lab, LabOptions, Mode};

/// What `up` builds: a one-director lab of a mode, or the ECMP lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Single(Mode),
    Ecmp,
}

impl FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Topology, String> {
        if s == "ecmp" {
            return Ok(Topology::Ecmp);
        }
        s.parse()
            .map(Topology::Single)
            .map_err(|_| format!("unknown lab `{s}` (nat, dr, tun, fullnat or ecmp)"))
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "xvs-lab",
    version,
    about = "veth + network-namespace labs for xvs"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a lab (nat, dr, tun, fullnat, or ecmp: N directors behind a BGP
    /// router with multipath routes), start xvsd and the real servers.
    Up {
        /// nat, dr, tun, fullnat or ecmp.
        lab: Topology,
        /// Number of real servers (default 2; ecmp: 4).
        #[arg(long)]
        rs: Option<usize>,
        /// ecmp: number of directors.
        #[arg(long, default_value_t = 3)]
        directors: usize,
        /// ecmp: forwarding method, dr or tun.
        #[arg(long)]
        mode: Option<Mode>,
        /// ecmp: scheduler flags of the services (default mh-port for mh,
        /// sh-port for sh).
        #[arg(long = "sched-flags")]
        sched_flags: Option<String>,
        /// Dual stack: IPv6 addresses (fd77::/64) and an IPv6 service too.
        #[arg(long)]
        ipv6: bool,
        /// Scheduler of the lab's services (default rr; ecmp: mh).
        #[arg(long)]
        sched: Option<String>,
        /// TUN: decapsulate with the kernel's tunl0/ip6tnl0 (needs the ipip module).
        #[arg(long)]
        kernel_tunnel: bool,
        /// Build the topology and servers only; no xvsd, no rules.
        #[arg(long)]
        no_director: bool,
        /// Namespace name prefix (default xvs-<mode>).
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Remove a lab (default: every lab of the CLI: the four modes' and ecmp).
    Down {
        /// nat, dr, tun, fullnat, ecmp or all.
        #[arg(default_value = "all")]
        which: String,
        /// Remove the lab with this namespace prefix instead.
        #[arg(long, conflicts_with = "which")]
        prefix: Option<String>,
    },
    /// Run a lab real server (HTTP/1.1 and UDP) until killed.
    Serve {
        /// The name it answers with.
        #[arg(long)]
        name: String,
        /// Address to listen on (repeatable), e.g. 0.0.0.0:80 or [::]:80.
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// Do not answer UDP.
        #[arg(long)]
        no_udp: bool,
        /// TCP echo address (repeatable): the name as a line, then an echo.
        #[arg(long)]
        echo: Vec<SocketAddr>,
    },
    /// Keep a director's VIP announced by its BIRD while its xvsd answers
    /// (the ECMP lab runs one per director).
    Announce {
        /// xvsd's control socket.
        #[arg(long)]
        xvsd_socket: PathBuf,
        /// BIRD's control socket.
        #[arg(long)]
        bird_socket: PathBuf,
        /// BIRD's static protocol holding the VIP route.
        #[arg(long, default_value = "vip")]
        protocol: String,
        /// Check interval (also the time xvsd gets to answer).
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
}

fn main() {
    if let Some(code) = xvs_docgen::generate_if_asked::<Args>("xvs-lab") {
        std::process::exit(code);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // The lab's daemons log to files: no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("xvs-lab: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Up {
            lab: Topology::Ecmp,
            rs,
            directors,
            mode,
            sched_flags,
            sched,
            ipv6,
            kernel_tunnel,
            no_director,
            prefix,
        } => {
            if ipv6 || kernel_tunnel || no_director {
                bail!("--ipv6, --kernel-tunnel and --no-director are not for the ecmp lab");
            }
            let mut o = EcmpOptions::new();
            o.directors = directors;
            o.rs = rs.unwrap_or(o.rs);
            o.mode = mode.unwrap_or(o.mode);
            o.sched = sched.unwrap_or(o.sched);
            o.sched_flags = sched_flags;
            if let Some(p) = prefix {
                o.prefix = p;
            }
            let lab = EcmpLab::up(o)?;
            print!("{}", lab.summary());
            lab.keep();
        }
        Cmd::Up {
            lab: Topology::Single(mode),
            rs,
            directors: _,
            mode: ecmp_mode,
            sched_flags,
            sched,
            ipv6,
            kernel_tunnel,
            no_director,
            prefix,
        } => {
            if ecmp_mode.is_some() || sched_flags.is_some() {
                bail!("--mode and --sched-flags are for the ecmp lab (`xvs-lab up ecmp`)");
            }
            let mut o = LabOptions::new(mode);
            o.rs = rs.unwrap_or(o.rs);
            o.ipv6 = ipv6;
            o.sched = sched.unwrap_or(o.sched);
            o.kernel_tunnel = kernel_tunnel;
            o.start_director = !no_director;
            if let Some(p) = prefix {
                o.prefix = p;
            }
            let lab = Lab::up(o).map_err(|e| {
                if e.step == "start xvsd" || e.step == "configure rules" {
                    anyhow::anyhow!("{e}\n(the lab was removed; `xvs-lab up {mode} --no-director` builds it without xvsd)")
                } else {
                    anyhow::Error::new(e)
                }
            })?;
            print!("{}", lab.summary());
            lab.keep();
        }
        Cmd::Down { which, prefix } => {
            let prefixes: Vec<String> = match (prefix, which.as_str()) {
                (Some(p), _) => vec![p],
                (None, "all") => Mode::ALL
                    .iter()
                    .map(|m| format!("xvs-{m}"))
                    .chain(["xvs-ecmp".to_string()])
                    .collect(),
                (None, m) => match m.parse::<Topology>() {
                    Ok(Topology::Single(m)) => vec![format!("xvs-{m}")],
                    Ok(Topology::Ecmp) => vec!["xvs-ecmp".to_string()],
                    Err(e) => bail!("{e}"),
                },
            };
            for p in prefixes {
                let gone = teardown(&p);
                if !gone.is_empty() {
                    println!("xvs-lab: removed {p} ({} namespaces)", gone.len());
                }
            }
        }
        Cmd::Serve {
            name,
            listen,
            no_udp,
            echo,
        } => {
            serve(&ServeConfig {
                name,
                listen,
                udp: !no_udp,
                echo,
            })?;
        }
        Cmd::Announce {
            xvsd_socket,
            bird_socket,
            protocol,
            interval_ms,
        } => announce::run(&AnnounceConfig {
            xvsd_socket,
            bird_socket,
            protocol,
            interval: Duration::from_millis(interval_ms.max(10)),
        }),
    }
    Ok(())
}
