//! Unsafe code is confined to the crates that need it (the AF_XDP layer and the
//! allocator): every other package forbids it, in its crate roots and for all
//! of its targets (tests and benches too, through its `[lints]` table).

use std::path::{Path, PathBuf};

/// The packages allowed to contain unsafe code.
const UNSAFE_ALLOWED: [&str; 2] = ["xvs-xdp", "xvs-mem"];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        // Build output and separately built crates (fuzz) are not this package.
        if name == "target" || name == "fuzz" {
            continue;
        }
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// True when a line of Rust holds the `unsafe` keyword outside a comment or a
/// string literal (a line-by-line approximation, enough for this code base).
fn has_unsafe(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    // Every other piece between double quotes is inside a string.
    let outside: String = code.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    outside
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == "unsafe")
}

#[test]
fn packages_without_unsafe_code_forbid_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut pkgs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    pkgs.push(root.join("tests"));
    let mut problems = Vec::new();
    for pkg in &pkgs {
        let name = pkg.file_name().unwrap().to_string_lossy().into_owned();
        let mut files = Vec::new();
        rs_files(pkg, &mut files);
        let unsafe_in: Vec<_> = files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .any(has_unsafe)
            })
            .collect();
        if UNSAFE_ALLOWED.contains(&name.as_str()) {
            continue;
        }
        if !unsafe_in.is_empty() {
            problems.push(format!("{name}: unsafe code in {unsafe_in:?}"));
        }
        let manifest = std::fs::read_to_string(pkg.join("Cargo.toml")).unwrap();
        if !manifest.contains("[lints.rust]") || !manifest.contains("unsafe_code = \"forbid\"") {
            problems.push(format!(
                "{name}: Cargo.toml has no `[lints.rust] unsafe_code = \"forbid\"`"
            ));
        }
        // Crate roots say it where a reader looks first (the e2e package's
        // library is covered by its manifest).
        for root_file in ["src/lib.rs", "src/main.rs"] {
            let f = pkg.join(root_file);
            if name == "tests" || !f.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            if !text.contains("#![forbid(unsafe_code)]") {
                problems.push(format!("{name}/{root_file}: no #![forbid(unsafe_code)]"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scan sees the crates that do need unsafe code (so it is not vacuous).
    let mut files = Vec::new();
    rs_files(&root.join("crates/xvs-xdp"), &mut files);
    assert!(files.iter().any(|f| std::fs::read_to_string(f)
        .unwrap_or_default()
        .lines()
        .any(has_unsafe)));
}
