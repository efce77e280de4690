//! `xvs-bench`: benchmarks of xvs.
//!
//! `xvs-bench engine` runs the packet engine alone, on one core, over in-memory
//! frames: the established-flow fast path, new connections, and the cost per
//! packet as the connection table grows. `xvs-bench run` compares xvs with
//! the kernel and the raw AF_XDP ceiling on veths; `gen` and `sink` are its
//! generator and counter as commands of their own.

#![forbid(unsafe_code)]

mod cpu;
mod engine;
mod gen;
mod probe;
mod report;
mod run;
mod tools;
mod xfwd;

/// Huge pages for the connection table, as in xvsd.
#[global_allocator]
static ALLOC: xvs_mem::HugeAlloc = xvs_mem::HugeAlloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xvs-bench", about = "Benchmarks of xvs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The engine alone on in-memory 64-byte frames, one core.
    Engine(engine::Args),
    /// xvs against the kernel and the raw AF_XDP ceiling on a veth topology.
    Run(run::Args),
    /// The raw ceiling: an AF_XDP forwarder that does no work (used by `run`).
    Xfwd(xfwd::Args),
    /// Traffic generator: BPF_PROG_RUN live frames out of a veth in a namespace.
    Gen(tools::GenArgs),
    /// Counts what arrives per real server on an interface (nft ingress counters).
    Sink(tools::SinkArgs),
}

fn main() -> anyhow::Result<()> {
    if let Some(code) = xvs_docgen::generate_if_asked::<Cli>("xvs-bench") {
        std::process::exit(code);
    }
    match Cli::parse().cmd {
        Cmd::Engine(a) => engine::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Xfwd(a) => xfwd::run(a),
        Cmd::Gen(a) => tools::gen(a),
        Cmd::Sink(a) => tools::sink(a),
    }
}
