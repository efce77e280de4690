//! The rules and the steering map never diverge: a rule change the map cannot
//! take is refused as a whole (xvsadm says so, nothing is applied, nothing
//! is left in the map), counted in the metrics, and a key that failed is never
//! recorded as installed.

use std::io::{Read, Write};
use std::process::Command;
use xvs_e2e::{bin, require_root, Daemon};
use xvs_netns::{test_prefix, veth, Netns};

fn xvsadm(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &d.socket)
        .args(args)
        .output()
        .expect("run xvsadm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn saved(d: &Daemon) -> String {
    let (ok, out, err) = xvsadm(d, &["-S", "-n"]);
    assert!(ok, "{err}");
    out
}

fn metric(ns: &Netns, addr: &str, name: &str) -> u64 {
    let body = ns
        .run(|| {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut b = String::new();
            s.read_to_string(&mut b)?;
            Ok::<_, std::io::Error>(b)
        })
        .unwrap()
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_change_the_steering_map_cannot_take_is_refused_whole() {
    if !require_root() {
        return;
    }
    let p = format!("{}-steer", test_prefix());
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let c = Netns::new(&format!("{p}-c")).unwrap();
    veth("d0", &d, "c0", &c).unwrap();
    d.sh("ip addr add 10.77.60.1/24 dev d0").unwrap();
    let cfg = std::env::temp_dir().join(format!("{p}.toml"));
    // Room for the host's addresses (lo v4/v6, d0 v4 and its link-local) and a
    // few service keys only.
    std::fs::write(&cfg, "steer_keys = 12\n").unwrap();
    let daemon = Daemon::start(
        &d,
        &p,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "-i",
            "d0",
            "--metrics",
            "127.0.0.1:9181",
        ],
    );
    let m = |name| metric(&d, "127.0.0.1:9181", name);
    assert_eq!(m("xvs_steer_failures_total"), 0);

    // Services on one VIP: the first takes two keys (VIP:port and the
    // address-only key), every further port one, until the map is full.
    let mut refused = None;
    for port in 1..=20u16 {
        let svc = format!("10.77.60.100:{port}");
        let before = saved(&daemon);
        let keys_before = m("xvs_steer_keys");
        let (ok, _, err) = xvsadm(&daemon, &["-A", "-t", &svc, "-s", "rr"]);
        if ok {
            continue;
        }
        assert!(
            err.contains("Steering map update failed, nothing was changed"),
            "{err}"
        );
        assert_eq!(saved(&daemon), before, "the refused service is not there");
        assert_eq!(m("xvs_steer_keys"), keys_before, "no key left behind");
        assert_eq!(m("xvs_steer_failures_total"), 1);
        refused = Some(port);
        break;
    }
    let port = refused.expect("a 12-key map fills before 20 services");
    assert!(port > 2, "some services fit");

    // A batch that would overflow applies nothing either.
    let before = saved(&daemon);
    let mut r = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &daemon.socket)
        .arg("-R")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    r.stdin
        .take()
        .unwrap()
        .write_all(b"-A -u 10.77.60.101:53 -s rr\n-A -u 10.77.60.102:53 -s rr\n")
        .unwrap();
    let out = r.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(saved(&daemon), before, "-R applied nothing");
    assert_eq!(m("xvs_steer_failures_total"), 2);

    // The key that failed was not recorded as installed: once there is room
    // again, the same service is accepted and really steered.
    let (ok, _, err) = xvsadm(&daemon, &["-D", "-t", "10.77.60.100:1"]);
    assert!(ok, "{err}");
    let svc = format!("10.77.60.100:{port}");
    let (ok, _, err) = xvsadm(&daemon, &["-A", "-t", &svc, "-s", "rr"]);
    assert!(ok, "after a delete there is room: {err}");
    assert!(saved(&daemon).contains(&format!("-A -t {svc} -s rr")));
}
