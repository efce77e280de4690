//! Daemon settings that reach the engine: `[sched] mh_table_size` from the
//! config file, and the DoS/sysctl knobs (`xvsadm --knob`, `-L --knobs`).

mod common;

use common::Daemon;

/// `-a` lines for `n` NAT real servers of `svc`, from 10.77.1.1 on.
fn dests(svc: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "-a -t {svc} -r 10.77.{}.{}:80 -m\n",
                1 + i / 250,
                1 + i % 250
            )
        })
        .collect()
}

/// The mh table has `mh_table_size` slots, and a service can have no more
/// real servers than slots (the kernel's EINVAL): with 251 the 252nd is
/// refused, with the default 4093 it is taken.
#[test]
fn mh_table_size_from_the_config_sizes_the_table() {
    let svc = "10.77.0.100:80";
    let small = Daemon::start_with_config("[sched]\nmh_table_size = 251\n");
    small.ok(&format!("-A -t {svc} -s mh"));
    let o = small.run_in(&["-R"], &dests(svc, 251));
    assert_eq!(o.code, 0, "251 dests fit 251 slots: {}", o.stderr);
    let o = small.run(&["-a", "-t", svc, "-r", "10.77.9.9:80", "-m"]);
    assert_eq!(o.code, 255, "the 252nd does not: {o:?}");
    assert!(o.stderr.contains("Invalid operation"), "{o:?}");
    // A second mh service gets the same size.
    small.ok("-A -t 10.77.0.101:80 -s mh");
    let o = small.run_in(&["-R"], &dests("10.77.0.101:80", 252));
    assert_eq!(o.code, 255, "{o:?}");
    assert!(o.stderr.contains("line 252: "), "{o:?}");

    let default = Daemon::start();
    default.ok(&format!("-A -t {svc} -s mh"));
    let o = default.run_in(&["-R"], &dests(svc, 252));
    assert_eq!(o.code, 0, "4093 slots by default: {}", o.stderr);
    let listed = default.run(&["-L", "-n", "-t", svc]);
    assert_eq!(listed.stdout.matches("-> 10.77.").count(), 252);
}

/// A config whose mh_table_size is not one of the kernel's sizes keeps xvsd
/// from starting, with the file and line.
#[test]
fn a_bad_mh_table_size_is_refused_at_start() {
    let dir = common::temp_dir();
    let cfg = dir.join("xvsd.toml");
    std::fs::write(
        &cfg,
        "[sched]\ntable_order = \"address\"\nmh_table_size = 65537\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::xvsd_bin())
        .arg("--socket")
        .arg(dir.join("xvsd.sock"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("XVS_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: mh_table_size must be one of",
            cfg.display()
        )) && err.contains("65521, 131071, not 65537"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
