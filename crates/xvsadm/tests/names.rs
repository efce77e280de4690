//! xvsadm under the names the package installs it as: `ipvsadm` (the
//! alternative) speaks as ipvsadm does, printing its argv[0] as given, and
//! `*-save`/`*-restore` do what ipvsadm's scripts of those names do.

mod common;

use common::{temp_dir, xvsadm_bin, Daemon};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `name` (a symlink to xvsadm in `dir`, found on PATH as a script would
/// find it) with `args` and `input` on stdin: (status, stdout, stderr).
fn run_as(
    dir: &Path,
    sock: &Path,
    name: &str,
    args: &[&str],
    input: &str,
) -> (i32, String, String) {
    let link = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(xvsadm_bin(), &link).expect("symlink");
    }
    let mut child = Command::new(name)
        .args(args)
        .env("PATH", dir)
        .env("XVS_SOCKET", sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("stdin");
    let o = child.wait_with_output().expect("output");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn called_as_ipvsadm_it_speaks_as_ipvsadm() {
    let d = Daemon::start();
    let bin = temp_dir();
    let (code, out, _) = run_as(&bin, &d.sock, "ipvsadm", &["-h"], "");
    assert_eq!(code, 0);
    assert!(
        out.contains("Usage:\n  ipvsadm -A|E virtual-service"),
        "{out}"
    );
    assert!(!out.contains("xvsadm"), "{out}");
    // popt's refusal names the program as invoked.
    let (code, _, err) = run_as(&bin, &d.sock, "ipvsadm", &["-t", "1.2.3.4:80"], "");
    assert_eq!(
        (code, err.as_str()),
        (
            255,
            "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"
        )
    );
    // Same listing, same bytes, under either name.
    d.ok("-A -t 10.77.0.100:80 -s rr");
    let (code, via_ipvsadm, _) = run_as(&bin, &d.sock, "ipvsadm", &["-L", "-n"], "");
    assert_eq!(code, 0);
    assert_eq!(via_ipvsadm, d.run(&["-L", "-n"]).stdout);
    // xvs's own messages (no daemon) carry the name too.
    let gone = bin.join("nothing.sock");
    let (code, _, err) = run_as(&bin, &gone, "ipvsadm", &["-L", "-n"], "");
    assert_eq!(code, 2);
    assert!(
        err.starts_with("ipvsadm: cannot connect to xvsd at "),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&bin);
}

#[test]
fn save_and_restore_names_run_s_and_r() {
    let d = Daemon::start();
    let bin = temp_dir();
    let rules = "-A -t 10.77.0.100:80 -s wrr\n-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m -w 2\n";
    for restore in ["ipvsadm-restore", "xvsadm-restore"] {
        d.ok("-C");
        let (code, out, err) = run_as(&bin, &d.sock, restore, &[], rules);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""), "{restore}");
        for save in ["ipvsadm-save", "xvsadm-save"] {
            let (code, out, _) = run_as(&bin, &d.sock, save, &["-n"], "");
            assert_eq!(code, 0);
            assert_eq!(out, rules, "{restore} then {save} -n");
            assert_eq!(out, d.run(&["-S", "-n"]).stdout);
        }
    }
    // A bad line: the message names the program the script would run.
    let (code, _, err) = run_as(&bin, &d.sock, "ipvsadm-restore", &[], "-A -t\n");
    assert_ne!(code, 0);
    assert!(err.starts_with("ipvsadm: line 1: "), "{err}");
    let _ = std::fs::remove_dir_all(&bin);
}
