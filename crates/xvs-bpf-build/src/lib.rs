//! The clang invocation shared by the build scripts that compile BPF programs
//! (xvs-xdp's steering and generator programs, xvs-lab's decapsulation), so the
//! flags, the header search path and the install hints are written once.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

/// Compiles `source` (relative to the calling crate) into the BPF object `obj` with
/// `$CLANG` (default `clang`), `-O2 -g -Wall -Werror -target bpf`. Panics with the
/// Debian packages to install when clang or a header is missing: a build script has
/// no better way to stop the build.
pub fn compile(package: &str, source: &str, obj: &Path) {
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I/usr/include/{}", multiarch()))
        .args(["-c", source, "-o"])
        .arg(obj)
        .output();
    match result {
        Err(e) => panic!(
            "{package}: cannot run `{clang}` ({e}) to build {source}; install the Debian packages `clang libbpf-dev` (apt-get install -y clang llvm libbpf-dev)"
        ),
        Ok(o) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let hint = if stderr.contains("file not found") {
                " (missing headers: install the Debian packages `clang libbpf-dev linux-libc-dev`)"
            } else {
                ""
            };
            panic!("{package}: clang failed on {source}{hint}:\n{stderr}");
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
