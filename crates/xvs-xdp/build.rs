//! Compiles the BPF programs in bpf/ with clang into OUT_DIR; src/ embeds them.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for f in ["bpf/common.h", "bpf/classify.h", "bpf/steer.c", "bpf/gen.c"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let multiarch = multiarch();
    for name in ["steer", "gen"] {
        let obj = out.join(format!("{name}.o"));
        let result = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(format!("bpf/{name}.c"))
            .arg("-o")
            .arg(&obj)
            .output();
        match result {
            Err(e) => panic!(
                "xvs-xdp: cannot run `{clang}` ({e}) to build the XDP programs; install the Debian packages `clang libbpf-dev` (apt-get install -y clang llvm libbpf-dev)"
            ),
            Ok(o) if !o.status.success() => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                let hint = if stderr.contains("bpf/bpf_helpers.h") || stderr.contains("file not found") {
                    " (missing headers: install the Debian packages `clang libbpf-dev linux-libc-dev`)"
                } else {
                    ""
                };
                panic!("xvs-xdp: clang failed on bpf/{name}.c{hint}:\n{stderr}");
            }
            Ok(_) => {}
        }
    }
}

/// Debian keeps asm/ headers under /usr/include/<multiarch>, which clang's bpf
/// target does not search.
fn multiarch() -> String {
    for cc in ["gcc", "cc", "clang"] {
        if let Ok(o) = Command::new(cc).arg("-print-multiarch").output() {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() && !s.is_empty() {
                return s;
            }
        }
    }
    format!(
        "{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    )
}
