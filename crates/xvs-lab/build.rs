//! Compiles bpf/decap.c (the lab RS's IPIP decapsulation) with clang into
//! OUT_DIR; src/topo.rs embeds the object and writes it out for iproute2.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=bpf/decap.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I/usr/include/{}", multiarch()))
        .args(["-c", "bpf/decap.c", "-o"])
        .arg(out.join("decap.o"))
        .output();
    match result {
        Err(e) => panic!(
            "xvs-lab: cannot run `{clang}` ({e}) to build bpf/decap.c; install the Debian packages `clang libbpf-dev` (apt-get install -y clang llvm libbpf-dev)"
        ),
        Ok(o) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let hint = if stderr.contains("file not found") {
                " (missing headers: install the Debian packages `clang libbpf-dev linux-libc-dev`)"
            } else {
                ""
            };
            panic!("xvs-lab: clang failed on bpf/decap.c{hint}:\n{stderr}");
        }
        Ok(_) => {}
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
