//! xvsd started the way `packaging/xvsd.service` starts it, in a NAT lab: as
//! an unprivileged user (a uid with no name, as `DynamicUser=` gives), with
//! exactly the unit's `AmbientCapabilities` (read from the unit, through
//! `setpriv`), no new privileges, its socket in a runtime directory that user
//! owns, and systemd's notification socket, watchdog and journal stream.
//! It must attach, run its health checks, forward, serve xvsadm (as root),
//! export every metric the Grafana dashboard plots, say READY/RELOADING/
//! STOPPING, feed the watchdog, and log with priorities.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_e2e::traffic::Line;
use xvs_e2e::{bin, require_root, wait_for};
use xvs_netns::{test_prefix, Netns};

const VIP: &str = "10.77.92.100";
/// As DynamicUser= would pick (61184-65519), with no passwd entry.
const UID: u32 = 61234;
const METRICS: &str = "127.0.0.1:9101";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The unit's value of `key` (one line).
fn unit_value(key: &str) -> String {
    let unit = std::fs::read_to_string(repo().join("packaging/xvsd.service")).unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= not in the unit"))
        .to_string()
}

/// Bit numbers of the capabilities the tests and the unit name.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_IPC_LOCK" => 14,
        "CAP_SYS_NICE" => 23,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("{other}: add its bit here"),
    }
}

fn sh(ns: &Netns, script: &str) {
    let out = ns.sh(script).unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What xvsd sent to the notification socket, as received.
type Notes = Arc<Mutex<Vec<String>>>;

fn has(notes: &Notes, what: &str) -> usize {
    notes
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n.lines().any(|l| l == what))
        .count()
}

fn get(c: &Netns) -> String {
    let to: SocketAddr = format!("{VIP}:80").parse().unwrap();
    c.run(|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut b = String::new();
        s.read_to_string(&mut b)?;
        Ok(b.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string())
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("GET through {VIP}: {e}"))
}

/// Kills the processes it holds on drop (a failed assertion included).
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn xvsd_runs_as_the_unit_runs_it() {
    require_root();
    let t0 = Instant::now();
    let p = format!("{}-svc", test_prefix());
    let Line { c, d, r } = Line::new(&p, 92);
    sh(
        &d,
        &format!("ip addr add {VIP}/32 dev d0 && ip link set lo up"),
    );
    sh(&r, "ip addr add 10.77.93.11/24 dev r0 && ip addr add 10.77.93.12/24 dev r0 && ip route add default via 10.77.93.1");
    let lab = bin("xvs-lab");
    let _servers = Procs(
        [("rs1", "10.77.93.11:80"), ("rs2", "10.77.93.12:80")]
            .iter()
            .map(|(name, addr)| {
                r.spawn(
                    &[
                        lab.to_str().unwrap(),
                        "serve",
                        "--name",
                        name,
                        "--listen",
                        addr,
                        "--no-udp",
                    ],
                    Stdio::null(),
                    Stdio::null(),
                )
                .unwrap()
            })
            .collect(),
    );

    // The files as the package lays them out, readable by the service user;
    // the runtime directory as RuntimeDirectory= makes it.
    let dir = std::env::temp_dir().join(&p);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let xvsd = dir.join("xvsd");
    std::fs::copy(bin("xvsd"), &xvsd).unwrap();
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = run.join("xvsd.sock");
    let config = dir.join("xvsd.toml");
    std::fs::write(
        &config,
        format!(
            "metrics = \"{METRICS}\"\nconn_max = 65536\n[control]\nsocket = \"{}\"\n\
             [[interface]]\nname = \"d0\"\nrole = \"client\"\n[[interface]]\nname = \"d1\"\nrole = \"server\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let keepalived = dir.join("keepalived.conf");
    let check = "TCP_CHECK {\n connect_timeout 1\n retry 1\n delay_before_retry 0.5\n }";
    std::fs::write(
        &keepalived,
        format!(
            "virtual_server {VIP} 80 {{\n delay_loop 0.5\n lb_algo rr\n lb_kind NAT\n protocol TCP\n\
             real_server 10.77.93.11 80 {{\n weight 1\n {check}\n }}\n\
             real_server 10.77.93.12 80 {{\n weight 1\n {check}\n }}\n}}\n"
        ),
    )
    .unwrap();
    for f in [&config, &keepalived] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // systemd's side: the notification socket and the journal's stream.
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let notes: Notes = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (notes, done) = (notes.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = notify.recv(&mut buf) {
                    notes
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        })
    };
    let log_path = dir.join("xvsd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let journal = format!(
        "{}:{}",
        log.metadata().unwrap().dev(),
        log.metadata().unwrap().ino()
    );

    // The unit's capabilities, in setpriv's words.
    let caps = unit_value("AmbientCapabilities");
    assert_eq!(caps, unit_value("CapabilityBoundingSet"));
    let set: String = std::iter::once("-all".to_string())
        .chain(
            caps.split_whitespace()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let mask: u64 = caps.split_whitespace().map(|c| 1u64 << cap_bit(c)).sum();
    let ids = format!("{UID}");
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let journal_env = format!("JOURNAL_STREAM={journal}");
    let args = [
        "env",
        &notify_env,
        "WATCHDOG_USEC=1000000",
        &journal_env,
        "setpriv",
        &format!("--reuid={ids}"),
        &format!("--regid={ids}"),
        "--clear-groups",
        &format!("--inh-caps={set}"),
        &format!("--ambient-caps={set}"),
        &format!("--bounding-set={set}"),
        "--no-new-privs",
        xvsd.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--keepalived-conf",
        keepalived.to_str().unwrap(),
    ];
    let mut procs = Procs(vec![d
        .spawn(&args, Stdio::null(), Stdio::from(log))
        .unwrap()]);
    let child = &mut procs.0[0];
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ready = wait_for(30, || {
        has(&notes, "READY=1") > 0 || child.try_wait().ok().flatten().is_some()
    });
    assert!(
        ready && has(&notes, "READY=1") == 1,
        "no READY=1: {:?}\n{}",
        notes.lock().unwrap(),
        log_text()
    );
    assert!(
        notes.lock().unwrap()[0].contains("STATUS=serving 2 interface(s)"),
        "{:?}",
        notes.lock().unwrap()
    );

    // Who it runs as: the uid, and the unit's capabilities, no more.
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .starts_with("xvsd"));
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    assert!(
        field("Uid:").starts_with(&format!("{UID}\t{UID}")),
        "{status}"
    );
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        mask,
        "{status}"
    );
    assert_eq!(
        u64::from_str_radix(&field("CapBnd:"), 16).unwrap(),
        mask,
        "{status}"
    );
    assert_eq!(field("NoNewPrivs:"), "1");
    let sock_meta = std::fs::metadata(&socket).unwrap();
    assert_eq!((sock_meta.uid(), sock_meta.mode() & 0o777), (UID, 0o600));

    // Health checks pass, then traffic is balanced: root's xvsadm reaches
    // the socket of the unprivileged daemon.
    let xvsadm = |a: &[&str]| {
        let o = Command::new(bin("xvsadm"))
            .args(a)
            .env("XVS_SOCKET", &socket)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "xvsadm {a:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        wait_for(15, || xvsadm(&["-L", "-n"]).matches("Masq    1").count()
            == 2),
        "real servers not up:\n{}\n{}",
        xvsadm(&["-L", "-n", "--health"]),
        log_text()
    );
    let mut answers: Vec<String> = (0..6).map(|_| get(&c)).collect();
    answers.sort();
    assert_eq!(
        answers,
        ["rs1", "rs1", "rs1", "rs2", "rs2", "rs2"],
        "{}",
        log_text()
    );
    assert!(xvsadm(&["-L", "-n", "--stats"]).contains(&format!("TCP  {VIP}:80")));

    // Every series the Grafana dashboard plots is exported.
    let metrics = d
        .run(|| -> std::io::Result<String> {
            let mut s =
                TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut b = String::new();
            s.read_to_string(&mut b)?;
            Ok(b)
        })
        .unwrap()
        .unwrap();
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("configs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut plotted = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap();
            for w in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if (w.starts_with("node_ipvs_") || w.starts_with("xvs_"))
                    && !plotted.contains(&w.to_string())
                {
                    plotted.push(w.to_string());
                }
            }
        }
    }
    assert!(plotted.len() > 20, "{plotted:?}");
    for m in &plotted {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} "))),
            "the dashboard plots {m}, which xvsd does not export"
        );
    }
    assert!(
        metrics.contains(&format!("xvs_dest_up{{local_address=\"{VIP}\"")),
        "{metrics}"
    );

    // The watchdog is fed (every 0.5 s for WATCHDOG_USEC=1 s) while the
    // workers go round.
    let fed = has(&notes, "WATCHDOG=1");
    assert!(
        wait_for(5, || has(&notes, "WATCHDOG=1") >= fed + 3),
        "watchdog not fed: {:?}",
        notes.lock().unwrap()
    );

    // A stuck worker starves the watchdog: strace holds worker 0 at the
    // entry of its next poll for longer than the interval (then lets go).
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "xvsd-worker-0")
        })
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .expect("the worker thread");
    let mut tracer = Procs(vec![Command::new("timeout")
        .args(["3", "strace", "-qq", "-o", "/dev/null", "-p", &tid])
        .args([
            "-e",
            "trace=poll,ppoll",
            "-e",
            "inject=poll,ppoll:delay_enter=5000000",
        ])
        .spawn()
        .expect("strace")]);
    std::thread::sleep(Duration::from_millis(700));
    let before = has(&notes, "WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(1500));
    let during = has(&notes, "WATCHDOG=1") - before;
    assert!(during <= 1, "fed {during} times while worker 0 was stuck");
    let _ = tracer.0[0].wait();
    assert!(
        log_text().contains("workers made no progress"),
        "{}",
        log_text()
    );
    let fed = has(&notes, "WATCHDOG=1");
    assert!(
        wait_for(5, || has(&notes, "WATCHDOG=1") >= fed + 2),
        "not fed again once the worker went on"
    );

    // Reload: RELOADING=1, then READY=1 again; stop: STOPPING=1, a clean exit.
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(
        wait_for(10, || has(&notes, "READY=1") == 2),
        "{:?}\n{}",
        notes.lock().unwrap(),
        log_text()
    );
    assert_eq!(has(&notes, "RELOADING=1"), 1);
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "xvsd did not stop:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success(), "{st}:\n{}", log_text());
    assert!(wait_for(2, || has(&notes, "STOPPING=1") == 1));
    assert!(!socket.exists(), "the socket outlived xvsd");

    // Logs for the journal: a priority on every line, no time stamp.
    let text = log_text();
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("xvsd ready")),
        "{text}"
    );
    assert!(
        text.contains("backend=xdp-native"),
        "not on native XDP with the unit's capabilities:\n{text}"
    );
    assert!(
        !text.contains("raising the worker's priority"),
        "CAP_SYS_NICE had no effect:\n{text}"
    );

    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("service test: {:.1}s", t0.elapsed().as_secs_f32());
}

/// Each capability of the unit is needed: without it xvsd does not come up
/// on an interface (or, for CAP_SYS_NICE, its workers run at the kernel
/// threads' priority and it says so).
#[test]
fn each_capability_of_the_unit_is_needed() {
    require_root();
    let p = format!("{}-caps", test_prefix());
    let ns = Netns::new(&p).unwrap();
    sh(
        &ns,
        "ip link add v0 type veth peer name v1 && ip addr add 10.77.94.1/24 dev v0 && \
         ip link set v0 up && ip link set v1 up && ip link set lo up",
    );
    let dir = std::env::temp_dir().join(&p);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let xvsd = dir.join("xvsd");
    std::fs::copy(bin("xvsd"), &xvsd).unwrap();
    let caps: Vec<String> = unit_value("AmbientCapabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    for missing in &caps {
        let set: String = std::iter::once("-all".to_string())
            .chain(
                caps.iter()
                    .filter(|c| *c != missing)
                    .map(|c| format!("+{c}")),
            )
            .collect::<Vec<_>>()
            .join(",");
        let socket = dir.join(format!("{missing}.sock"));
        let log_path = dir.join(format!("{missing}.log"));
        let args = [
            "setpriv",
            &format!("--reuid={UID}"),
            &format!("--regid={UID}"),
            "--clear-groups",
            &format!("--inh-caps={set}"),
            &format!("--ambient-caps={set}"),
            &format!("--bounding-set={set}"),
            "--no-new-privs",
            xvsd.to_str().unwrap(),
            "-i",
            "v0",
            "--conn-max",
            "4096",
            "--socket",
            socket.to_str().unwrap(),
        ];
        let log = std::fs::File::create(&log_path).unwrap();
        let mut procs = Procs(vec![ns
            .spawn(&args, Stdio::null(), Stdio::from(log))
            .unwrap()]);
        let child = &mut procs.0[0];
        let mut exited = None;
        let up = wait_for(20, || {
            exited = child.try_wait().unwrap();
            exited.is_some() || socket.exists()
        });
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(up, "without {missing}: neither up nor gone\n{text}");
        // Two come up degraded, and say so: the workers at the NAPI
        // threads' priority, or the slow AF_PACKET path instead of XDP
        // (the verifier refuses the steering program).
        let degraded = match missing.as_str() {
            "sys_nice" => Some("raising the worker's priority"),
            "perfmon" => Some("backend=af-packet"),
            _ => None,
        };
        if let Some(says) = degraded {
            assert!(
                exited.is_none(),
                "without {missing} xvsd should run:\n{text}"
            );
            assert!(
                text.contains(says),
                "without {missing}: {says} expected\n{text}"
            );
        } else {
            assert!(
                exited.is_some_and(|s| !s.success()),
                "xvsd came up without {missing}:\n{text}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
