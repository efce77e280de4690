//! Compiles bpf/decap.c (the lab RS's IPIP decapsulation) with clang into
//! OUT_DIR; src/topo.rs embeds the object and writes it out for iproute2.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    xvs_bpf_build::compile("xvs-lab", "bpf/decap.c", &out.join("decap.o"));
}
