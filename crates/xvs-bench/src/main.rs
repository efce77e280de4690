//! `xvs-bench`: benchmarks of xvs.
//!
//! `xvs-bench engine` runs the packet engine alone over in-memory frames: the
//! established-flow fast path, new connections, the cost per packet as the
//! connection table grows, and (`--threads`) several workers on one table.
//! `xvs-bench run` compares xvs with the kernel, HAProxy and its own ceiling
//! on veths (no-drop rates, cycles per packet, TCP, TCP under a SYN flood);
//! `readme` and `spread` turn its JSON into the README's section and compare
//! runs; `gen` and `sink` are its generator and counter as commands of their
//! own.

#![forbid(unsafe_code)]

mod chart;
mod cpu;
mod engine;
mod flood;
mod floodfig;
mod gen;
mod probe;
mod readme;
mod report;
mod run;
mod stats;
mod systems;
mod tools;
mod topo;
mod trial;

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
    /// The engine alone on in-memory 64-byte frames.
    Engine(engine::Args),
    /// xvs against the kernel, HAProxy and its ceiling on a veth topology.
    Run(run::Args),
    /// The README's performance section from a run's JSON.
    Readme(readme::ReadmeArgs),
    /// The key ratios of several runs side by side.
    Spread(readme::SpreadArgs),
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
        Cmd::Readme(a) => readme::readme(a),
        Cmd::Spread(a) => readme::spread(a),
        Cmd::Gen(a) => tools::gen(a),
        Cmd::Sink(a) => tools::sink(a),
    }
}
