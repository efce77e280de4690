//! Compiles the BPF programs in bpf/ with clang into OUT_DIR; src/ embeds them.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // Headers the programs include: a change to one rebuilds both.
    for f in ["bpf/common.h", "bpf/classify.h"] {
        println!("cargo:rerun-if-changed={f}");
    }
    for name in ["steer", "gen"] {
        let obj = out.join(format!("{name}.o"));
        xvs_bpf_build::compile("xvs-xdp", &format!("bpf/{name}.c"), &obj);
    }
}
