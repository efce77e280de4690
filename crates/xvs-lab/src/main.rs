//! `xvs-lab`: builds and tears down xvs's veth + netns labs, and runs the lab
//! real servers (`xvs-lab serve`).

#![forbid(unsafe_code)]

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use xvs_lab::serve::{serve, ServeConfig};
use xvs_lab::{teardown, Lab, LabOptions, Mode};

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
    /// Build a lab (nat, dr, tun or fullnat), start xvsd and the real servers.
    Up {
        mode: Mode,
        /// Number of real servers.
        #[arg(long, default_value_t = 2)]
        rs: usize,
        /// Dual stack: IPv6 addresses (fd77::/64) and an IPv6 service too.
        #[arg(long)]
        ipv6: bool,
        /// Scheduler of the lab's services.
        #[arg(long, default_value = "rr")]
        sched: String,
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
    /// Remove a lab (default: all four modes' labs).
    Down {
        /// nat, dr, tun, fullnat or all.
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
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("xvs-lab: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Up {
            mode,
            rs,
            ipv6,
            sched,
            kernel_tunnel,
            no_director,
            prefix,
        } => {
            let mut o = LabOptions::new(mode);
            o.rs = rs;
            o.ipv6 = ipv6;
            o.sched = sched;
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
                (None, "all") => Mode::ALL.iter().map(|m| format!("xvs-{m}")).collect(),
                (None, m) => match m.parse::<Mode>() {
                    Ok(m) => vec![format!("xvs-{m}")],
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
        } => {
            serve(&ServeConfig {
                name,
                listen,
                udp: !no_udp,
            })?;
        }
    }
    Ok(())
}
