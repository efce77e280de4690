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

/// `-L --knobs` of a daemon started with `[knobs]`, as `NAME VALUE` lines.
fn knobs(d: &Daemon) -> Vec<(String, i64)> {
    let o = d.run(&["-L", "--knobs"]);
    assert_eq!(o.code, 0, "{o:?}");
    o.stdout
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(' ').expect("NAME VALUE");
            (n.to_string(), v.trim().parse().expect("a number"))
        })
        .collect()
}

fn knob(d: &Daemon, name: &str) -> i64 {
    knobs(d)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
        .1
}

/// `--knob NAME=VALUE ...` sets the DoS/behaviour knobs at run time, all or
/// nothing, with the ranges of the kernel's sysctl handlers; `-L --knobs`
/// lists them as they are in force, starting from the config's `[knobs]`.
#[test]
fn knobs_are_set_at_run_time_and_listed() {
    let d = Daemon::start_with_config("[knobs]\nsecure_tcp = 1\nam_droprate = 20\n");
    let o = d.run(&["-L", "--knobs"]);
    assert_eq!(
        o.stdout,
        "expire_nodest_conn         0\n\
         expire_quiescent_template  0\n\
         conn_reuse_mode            1\n\
         sloppy_tcp                 0\n\
         secure_tcp                 1\n\
         drop_entry                 0\n\
         drop_packet                0\n\
         am_droprate                20\n\
         amemthresh                 1024\n"
    );
    assert_eq!(d.run(&["-l", "-n", "--knobs"]).stdout, o.stdout);

    d.ok("--knob sloppy_tcp=1 drop_entry=2 net.ipv4.vs.amemthresh=5000 expire_nodest_conn=on");
    assert_eq!(knob(&d, "sloppy_tcp"), 1);
    assert_eq!(knob(&d, "drop_entry"), 2);
    assert_eq!(knob(&d, "amemthresh"), 5000);
    assert_eq!(knob(&d, "expire_nodest_conn"), 1);
    // Any non-zero int is on, as the kernel reads these; listed as 1.
    d.ok("--knob expire_quiescent_template=7");
    assert_eq!(knob(&d, "expire_quiescent_template"), 1);

    // Out of range, unknown, malformed: refused by xvsadm, nothing changes.
    let before = knobs(&d);
    for (args, want) in [
        (
            &["--knob", "sloppy_tcp=0", "drop_entry=4"][..],
            "xvsadm: --knob drop_entry=4: Invalid argument: drop_entry takes 0 to 3, not 4\n",
        ),
        (
            &["--knob", "amemthresh=-1"],
            "xvsadm: --knob amemthresh=-1: Invalid argument: amemthresh takes 0 to 2147483647, not -1\n",
        ),
        (&["--knob", "sloppy=1"], "xvsadm: --knob sloppy=1: unknown knob `sloppy'"),
        (&["--knob", "sloppy_tcp"], "xvsadm: --knob: `sloppy_tcp' is not NAME=VALUE\n"),
        (&["--knob", "drop_entry=two"], "xvsadm: --knob: bad value `two' for drop_entry\n"),
        (&["--knob"], "xvsadm: --knob needs NAME=VALUE"),
        (&["-L", "-c", "--knobs"], "--knobs goes with -L (and -n) only\n"),
    ] {
        let o = d.run(args);
        assert_eq!(o.code, 2, "{args:?}: {o:?}");
        assert!(o.stderr.starts_with(want), "{args:?}: {}", o.stderr);
    }
    assert_eq!(knobs(&d), before);

    // A client that skips xvsadm gets the same checks from xvsd, and a
    // batch with one bad value applies nothing.
    let mut c = xvs_ctl::Client::connect(&d.sock).unwrap();
    let r = c
        .call(&xvs_ctl::Request::Batch(vec![
            xvs_ctl::Op::SetKnob("sloppy_tcp".into(), 0),
            xvs_ctl::Op::SetKnob("secure_tcp".into(), 9),
        ]))
        .unwrap();
    match r {
        xvs_ctl::Response::Error(e) => {
            assert_eq!(e.index, Some(1));
            assert_eq!(
                e.message,
                "Invalid argument: secure_tcp takes 0 to 3, not 9"
            );
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(knobs(&d), before, "nothing of the batch applied");
}

/// SIGHUP reads the config's `[[mark]]` rules again, not its `[knobs]`:
/// what `--knob` set stays in force (as a sysctl stays until it is written
/// again), and the file's values return at the next start.
#[test]
fn sighup_keeps_the_knobs_set_at_run_time() {
    let d = Daemon::start_with_config("[knobs]\nsecure_tcp = 1\n");
    d.ok("--knob secure_tcp=3 sloppy_tcp=1");
    let log = d.dir.join("xvsd.log");
    let loaded = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("rules loaded")
            .count()
    };
    let n = loaded();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t0 = std::time::Instant::now();
    while loaded() == n {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "no reload logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(knob(&d, "secure_tcp"), 3);
    assert_eq!(knob(&d, "sloppy_tcp"), 1);
}
