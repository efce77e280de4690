//! xvsd's command line: mistakes are refused up front with a clear line.

use std::process::Command;

#[test]
fn a_worker_core_that_does_not_exist_is_refused() {
    let sock = std::env::temp_dir().join(format!("xvst-{}-cores.sock", std::process::id()));
    let out = Command::new(xvs_e2e::bin("xvsd"))
        .args(["--cores", "100000", "--socket"])
        .arg(&sock)
        .output()
        .expect("run xvsd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker core 100000 does not exist"), "{err}");
    assert!(!sock.exists(), "no socket left behind");
}
