//! Faults around a running xvsd, each with the behaviour expected of a
//! director (the kernel's IPVS where it has one): xvsd killed with SIGKILL
//! under load and started again; a real server's interface down and up; a
//! real server's MAC changed; the connection table full; SIGHUP with a broken
//! rules or config file; the control socket's directory removed; a data
//! interface removed. All in the NAT lab, with real TCP and UDP clients.

use std::io::ErrorKind;
use std::time::{Duration, Instant};
use xvs_e2e::traffic::{
    bpf_exists, bpf_objects, cpu_ticks, failures, http_get, metric, nat_lab, nat_rules, scrape, sh,
    temp_file, vip, warm_up, xdp_prog, xvsadm, xvsadm_ok, Held, Load, ObjectKind,
};
use xvs_e2e::{require_root, wait_for, Daemon};
use xvs_netns::Netns;

const SEC: Duration = Duration::from_secs(1);

/// xvsd on the NAT lab's director (`-i c0 -i r0`) with `extra` arguments.
fn director(lab: &xvs_lab::Lab, tag: &str, extra: &[&str]) -> Daemon {
    let tag = format!("{}-{tag}", xvs_netns::test_prefix());
    let mut args = vec!["-i", "c0", "-i", "r0"];
    args.extend_from_slice(extra);
    Daemon::start(lab.director(), &tag, &args)
}

/// Asserts every sample of `samples` in `[from, to)` succeeded.
fn all_ok(samples: &[xvs_e2e::traffic::Sample], from: Duration, to: Duration, what: &str) {
    let bad = failures(samples, from, to);
    assert!(
        bad.is_empty(),
        "{what}: {} of the requests in {from:?}..{to:?} failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        samples.iter().any(|s| s.at >= from && s.at < to),
        "{what}: no request was made in {from:?}..{to:?}"
    );
}

/// SIGKILL under load (a stream of TCP connections and a UDP flow through
/// the VIP): nothing xvsd made outlives it — the XDP programs are detached,
/// every BPF program, map and link it held is gone from the kernel, no
/// process is left in the director, the stale socket answers nobody — and a
/// new xvsd replaces the stale socket, attaches cleanly (new programs, no
/// error) and the service resumes, UDP flow included.
#[test]
fn sigkill_under_load_leaves_nothing_and_restart_resumes() {
    require_root();
    let lab = nat_lab("kill", 2);
    let rules = temp_file("kill.rules", &nat_rules(&lab, true));
    let args = ["-i", "c0", "-i", "r0", "--rules", rules.to_str().unwrap()];
    let mut d = director(&lab, "kill", &args[4..]);
    d.keep_socket = true;
    let saved = xvsadm_ok(&d.socket, &["-S", "-n"]);
    let objects = bpf_objects(d.pid());
    assert!(
        objects.iter().any(|o| o.0 == ObjectKind::Link)
            && objects.iter().any(|o| o.0 == ObjectKind::Map),
        "xvsd holds its XDP links and maps: {objects:?}"
    );
    let progs: Vec<u64> = ["c0", "r0"]
        .iter()
        .map(|dev| xdp_prog(lab.director(), dev).unwrap_or_else(|| panic!("no XDP on {dev}")))
        .collect();

    warm_up(lab.client(), vip(&lab), true);
    // The kernel's lists of the namespace's Unix and packet sockets.
    let unix = || sh(lab.director(), "cat /proc/net/unix");
    // Listed under the path it was bound at, before its rename into place.
    let sock = format!(".xvsd-bind-{}/s", d.pid());
    assert!(unix().contains(&sock), "xvsd's listening socket is listed");
    let load = Load::start(lab.client(), vip(&lab), true, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = load.now();
    d.stop("-KILL");

    // Nothing left: no XDP on the interfaces, no BPF object of xvsd's in the
    // kernel, nobody in the director namespace.
    for dev in ["c0", "r0"] {
        assert!(
            wait_for(5, || xdp_prog(lab.director(), dev).is_none()),
            "an XDP program stays attached to {dev} after SIGKILL"
        );
    }
    for &(kind, id) in &objects {
        assert!(
            wait_for(5, || !bpf_exists(kind, id)),
            "BPF {kind:?} {id} of the killed xvsd still exists"
        );
    }
    for p in progs {
        assert!(
            wait_for(5, || !bpf_exists(ObjectKind::Prog, p as u32)),
            "XDP program {p} still exists"
        );
    }
    let pids = xvs_netns::run(&["ip", "netns", "pids", lab.director().name()]).unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).to_string();
    assert!(
        pids.split_whitespace()
            .all(|p| p.parse::<u32>().ok() != Some(d.pid())),
        "xvsd is still in the director: {pids}"
    );
    // No socket of xvsd's is left in the kernel: neither the control socket
    // nor a packet socket (the AF_PACKET backend's; AF_XDP sockets have no
    // such list, they went with the process's descriptors).
    assert!(
        wait_for(5, || !unix().contains(&sock)),
        "the control socket outlives xvsd in /proc/net/unix"
    );
    let packet = sh(lab.director(), "cat /proc/net/packet");
    assert!(
        packet.lines().count() <= 1,
        "packet sockets left in the director: {packet}"
    );
    // The socket file stays (no code runs on SIGKILL), but nobody answers it,
    // and the private bind directory did not outlive the bind.
    match std::os::unix::net::UnixStream::connect(&d.socket) {
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound),
            "stale socket: {e}"
        ),
        Ok(_) => panic!("something answers the dead xvsd's socket"),
    }
    let dir = d.socket.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".xvsd-bind-"))
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "bind directories left: {leftovers:?}");

    // Meanwhile the kernel answers the VIP (refused, port unreachable):
    // clients see errors quickly rather than hang.
    std::thread::sleep(Duration::from_millis(600));
    let down = failures(&load.samples(), killed_at, load.now()).len();
    assert!(down > 0, "requests failed while no xvsd ran");

    // Restart on the same (stale) socket path.
    let log2 = d.log.with_extension("restart.log");
    let restarted_at = load.now();
    let mut d2 = Daemon::start_at(lab.director(), &d.socket, &log2, &args);
    let up_at = load.now();
    let log = d2.log_text();
    assert!(
        !log.contains("ERROR") && log.matches("attached").count() >= 2,
        "the new xvsd attached with complaints:\n{log}"
    );
    for dev in ["c0", "r0"] {
        assert!(xdp_prog(lab.director(), dev).is_some(), "no XDP on {dev}");
    }
    assert_eq!(
        xvsadm_ok(&d2.socket, &["-S", "-n"]),
        saved,
        "rules restored"
    );
    std::thread::sleep(Duration::from_secs(2));
    let samples = load.stop();
    // Before the kill: the requests answered (or failed) before it.
    let before: Vec<_> = samples
        .iter()
        .filter(|s| s.at + s.took < killed_at)
        .cloned()
        .collect();
    all_ok(&before, Duration::ZERO, killed_at, "before the kill");
    // The first requests after start may still be in a connect retry begun
    // while no xvsd ran; from a second after start, everything is answered.
    let resumed = up_at + SEC;
    all_ok(
        &samples,
        resumed,
        samples.last().unwrap().at,
        "after the restart",
    );
    for tcp in [true, false] {
        assert!(
            samples
                .iter()
                .any(|s| s.tcp == tcp && s.at >= resumed && s.result.is_ok()),
            "{} resumed",
            if tcp { "TCP" } else { "UDP" }
        );
    }
    let first_ok = samples
        .iter()
        .find(|s| s.at > killed_at && s.result.is_ok())
        .map(|s| s.at + s.took);
    eprintln!(
        "sigkill: killed at {killed_at:?}, restart begun {restarted_at:?}, socket up {up_at:?}, first answer at {first_ok:?}; {} failed requests from the kill to the restart",
        failures(&samples, killed_at, up_at).len()
    );
    assert!(d2.running());
}

/// An RS's interface goes down and comes back. xvs has no health check of
/// its own (as IPVS without keepalived), so the RS stays scheduled: new
/// connections given to it time out (its link is gone; nobody refuses),
/// those given to the other RS succeed; held connections keep their RS. Once
/// the link is back (the RS's default route, which the kernel removed with
/// the link, restored as its network configuration would), the RS serves new
/// connections again and a connection held across the outage resumes.
#[test]
fn rs_interface_down_and_back() {
    require_root();
    let lab = nat_lab("rsdown", 2);
    let rules = temp_file("rsdown.rules", &nat_rules(&lab, false));
    let d = director(&lab, "rsdown", &["--rules", rules.to_str().unwrap()]);
    let to = vip(&lab);
    let mut held1 = Held::open_to(lab.client(), to, "rs1");
    let mut held2 = Held::open_to(lab.client(), to, "rs2");

    sh(lab.rs(0), "ip link set eth0 down");
    let (mut ok, mut timeouts, mut other) = (Vec::new(), 0, Vec::new());
    for _ in 0..8 {
        match http_get(lab.client(), to, Duration::from_millis(800)) {
            Ok(name) => ok.push(name),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                timeouts += 1
            }
            Err(e) => other.push(e.to_string()),
        }
    }
    assert!(other.is_empty(), "failures other than timeouts: {other:?}");
    assert!(
        ok.iter().all(|n| n == "rs2"),
        "only rs2 answers while rs1 is down: {ok:?}"
    );
    // rr alternates: every second new connection went to rs1 and timed out.
    assert!(
        (3..=5).contains(&timeouts),
        "about half the connections time out: {timeouts} of 8"
    );
    assert_eq!(held2.get().unwrap(), "rs2", "rs2's held connection");
    let listing = xvsadm_ok(&d.socket, &["-L", "-n"]);
    assert!(
        listing.contains(&format!("{}:80", lab.plan().rs[0].addr4)),
        "rs1 stays a dest (no health check): {listing}"
    );

    sh(
        lab.rs(0),
        "ip link set eth0 up && ip route replace default via 10.77.1.1",
    );
    let back = Instant::now();
    assert!(
        wait_for(10, || http_get(
            lab.client(),
            to,
            Duration::from_millis(500)
        )
        .is_ok_and(|n| n == "rs1")),
        "rs1 serves again after its link is back"
    );
    eprintln!(
        "rs down/up: rs1 answers {:?} after its link is back",
        back.elapsed()
    );
    let names: Vec<String> = (0..6)
        .map(|_| http_get(lab.client(), to, SEC).expect("a request after the outage"))
        .collect();
    assert!(
        names.iter().filter(|n| *n == "rs1").count() == 3,
        "rr over both again: {names:?}"
    );
    held1.set_timeout(Duration::from_secs(10));
    assert_eq!(
        held1.get().expect("the connection held across the outage"),
        "rs1"
    );
}

/// An RS's MAC changes. Announced (arp_notify: the RS's kernel sends a
/// gratuitous ARP), the director's neighbour entry takes the new MAC, the
/// route mirror picks the change up and the workers send to the new MAC at
/// once: no request fails. Silent (no announcement), the old entry goes stale
/// and xvs's probe makes the kernel re-resolve it (timers shortened here;
/// with the kernel's defaults it takes up to a minute, as for the kernel's
/// own forwarding); then traffic flows to the new MAC, and the other RS is
/// never affected.
#[test]
fn rs_mac_change_reaches_the_workers() {
    require_root();
    let lab = nat_lab("mac", 2);
    let rules = temp_file("mac.rules", &nat_rules(&lab, false));
    // Short neighbour timers on the director's RS side, for the silent case.
    sh(
        lab.director(),
        "sysctl -qw net.ipv4.neigh.r0.base_reachable_time_ms=1000 \
         net.ipv4.neigh.r0.delay_first_probe_time=1 net.ipv4.neigh.r0.retrans_time_ms=300",
    );
    let _d = director(&lab, "mac", &["--rules", rules.to_str().unwrap()]);
    let to = vip(&lab);
    let mut held = Held::open_to(lab.client(), to, "rs1");
    let neigh = |ip: &str| sh(lab.director(), &format!("ip neigh show {ip} dev r0"));

    let load = Load::start(lab.client(), to, false, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(500));
    // Announced.
    let new1 = "02:77:00:00:01:11";
    sh(
        lab.rs(0),
        &format!(
            "sysctl -qw net.ipv4.conf.all.arp_notify=1 net.ipv4.conf.eth0.arp_notify=1 && \
             ip link set dev eth0 address {new1}"
        ),
    );
    let changed = load.now();
    assert!(
        wait_for(3, || neigh("10.77.1.11").contains(new1)),
        "the director learnt rs1's new MAC: {}",
        neigh("10.77.1.11")
    );
    assert_eq!(held.get().expect("held connection after the change"), "rs1");
    std::thread::sleep(Duration::from_secs(1));
    let s = load.samples();
    all_ok(&s, Duration::ZERO, load.now(), "announced MAC change");
    assert!(
        s.iter()
            .any(|x| x.at > changed && x.result.as_deref() == Ok("rs1")),
        "rs1 answers at its new MAC"
    );

    // Silent, on rs2.
    let new2 = "02:77:00:00:01:12";
    let silent = load.now();
    sh(lab.rs(1), &format!("ip link set dev eth0 address {new2}"));
    let t = Instant::now();
    assert!(
        wait_for(15, || load
            .samples()
            .iter()
            .any(|x| x.at > silent + SEC && x.result.as_deref() == Ok("rs2"))),
        "rs2 answers again at its new MAC; neighbour: {}",
        neigh("10.77.1.12")
    );
    let recovered = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let end = load.now();
    let s = load.stop();
    let failed = failures(&s, silent, end);
    // Only connections given to rs2 failed: rs1 kept answering its turns.
    let rs1 = s
        .iter()
        .filter(|x| x.at >= silent && x.result.as_deref() == Ok("rs1"))
        .count();
    assert!(
        rs1 >= failed.len().saturating_sub(2),
        "rs1 kept answering: {rs1} answers, {} failures",
        failed.len()
    );
    eprintln!(
        "mac change: announced: 0 failures; silent: rs2 back after {recovered:?}, {} failed requests meanwhile; neighbour now {}",
        failed.len(),
        neigh("10.77.1.12").trim()
    );
    assert!(neigh("10.77.1.12").contains(new2));
}

/// A table of 64 entries: established connections fill part of it, a burst
/// of SYNs from 200 sources the rest; new connections are then dropped and
/// counted as conn_table_full, the table never holds more than 64, and the
/// established connections go on. When the half-open entries time out (a 5 s
/// SYN_RECV timeout from the config), new connections are served again.
#[test]
fn full_conn_table_drops_new_and_keeps_established() {
    require_root();
    let lab = nat_lab("full", 1);
    // The RS retransmits its SYN-ACKs to the sources that never answer, and
    // each one refreshes the entry's timer: one retransmission, not five.
    sh(lab.rs(0), "sysctl -qw net.ipv4.tcp_synack_retries=1");
    let rules = temp_file("full.rules", &nat_rules(&lab, false));
    let config = temp_file(
        "full.toml",
        "[timeouts]\nsyn_recv = 5\ntime_wait = 1\nclose = 1\nfin_wait = 1\nclose_wait = 1\nlast_ack = 1\n",
    );
    let m = "127.0.0.1:9183";
    let _d = director(
        &lab,
        "full",
        &[
            "--conn-max",
            "64",
            "--metrics",
            m,
            "--rules",
            rules.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let to = vip(&lab);
    let mut held: Vec<Held> = (0..4)
        .map(|_| Held::open(lab.client(), to).expect("held connection"))
        .collect();
    let entries = |t: &str| metric(t, "xvs_conn_table_entries");
    let full_drops = |t: &str| metric(t, "xvs_drops_total{reason=\"conn_table_full\"}");
    let before = scrape(lab.director(), m).unwrap();
    assert_eq!(entries(&before), 4);
    assert_eq!(full_drops(&before), 0);

    let out = std::process::Command::new(xvs_e2e::bin("xvs-bench"))
        .args(["gen", "--netns", lab.client().name(), "--dev", "eth0"])
        .args(["--dst", "10.77.0.100", "--pattern", "syn"])
        .args([
            "--src",
            "10.77.128.1",
            "--src-addrs",
            "200",
            "--src-ports",
            "1",
        ])
        .args(["--count", "200", "--rate", "20000", "--secs", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xvs-bench gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = scrape(lab.director(), m).unwrap();
    assert_eq!(entries(&full), 64, "the table is full, and no fuller");
    assert!(
        full_drops(&full) >= 136,
        "the SYNs that found no room are counted: {}",
        full_drops(&full)
    );
    let refused = http_get(lab.client(), to, Duration::from_millis(800));
    assert!(
        refused.is_err(),
        "a new connection while the table is full: {refused:?}"
    );
    let after = scrape(lab.director(), m).unwrap();
    assert!(
        full_drops(&after) > full_drops(&full),
        "the new connection's SYN was counted"
    );
    assert!(entries(&after) <= 64);
    for h in &mut held {
        let s = h.server.clone();
        assert_eq!(h.get().expect("established connection"), s);
    }

    // The half-open entries time out; room again.
    let t = Instant::now();
    assert!(
        wait_for(15, || http_get(
            lab.client(),
            to,
            Duration::from_millis(500)
        )
        .is_ok()),
        "new connections are served once the SYN_RECV entries time out: {}",
        metric(
            &scrape(lab.director(), m).unwrap(),
            "xvs_conn_table_entries"
        )
    );
    eprintln!(
        "table full: 64/64 entries, {} conn_table_full drops; served again after {:?}",
        full_drops(&after),
        t.elapsed()
    );
    for h in &mut held {
        assert!(h.get().is_ok(), "established connection after the flood");
    }
}

/// SIGHUP with a broken rules file, then a broken config (`[[mark]]`): each
/// refused with `file:line` in the log, the running rules and marks exactly
/// as they were, traffic flowing throughout; a good file is then taken.
#[test]
fn sighup_with_broken_files_keeps_the_running_state() {
    require_root();
    let lab = nat_lab("hup", 2);
    let good_rules = nat_rules(&lab, false);
    let rules = temp_file("hup.rules", &good_rules);
    let good_config = "[[mark]]\nproto = 6\naddr = \"10.77.0.100\"\nprefix_len = 32\nports = [8000, 8010]\nmark = 7\n";
    let config = temp_file("hup.toml", good_config);
    let d = director(
        &lab,
        "hup",
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let to = vip(&lab);
    let state = || {
        (
            xvsadm_ok(&d.socket, &["-S", "-n"]),
            xvsadm_ok(&d.socket, &["--list-marks"]),
        )
    };
    let running = state();
    assert!(
        running.1.contains('7'),
        "the config's mark rule: {}",
        running.1
    );
    let mut held = Held::open(lab.client(), to).unwrap();
    let load = Load::start(lab.client(), to, false, Duration::from_millis(50));

    let r = rules.display().to_string();
    let c = config.display().to_string();
    // Each broken file, the line it breaks at, and what the log must say.
    let cases: Vec<(&std::path::Path, String, String)> = vec![
        // A line that does not parse (line 4).
        (
            &rules,
            format!(
                "{}-a -t 10.77.0.100:80 -r 10.77.1.13:80 -m -w lots\n",
                good_rules
            ),
            format!("{r}:4:"),
        ),
        // A line that parses but cannot apply: no such service (line 5).
        (
            &rules,
            format!("{good_rules}\n-a -t 10.77.0.200:80 -r 10.77.1.11:80 -m\n"),
            format!("{r}:5:"),
        ),
        // A [[mark]] rule with mark 0 (the second rule, at line 7).
        (
            &config,
            format!("{good_config}[[mark]]\naddr = \"10.77.0.100\"\nprefix_len = 32\nmark = 0\n"),
            format!("{c}:7: [[mark]] rule 2"),
        ),
        // A [[mark]] rule that is not TOML (line 9).
        (
            &config,
            format!("{good_config}\n[[mark]]\naddr = 10.77.0.100\n"),
            format!("{c}:9:"),
        ),
    ];
    for (n, (path, text, want)) in cases.iter().enumerate() {
        std::fs::write(path, text).unwrap();
        d.signal("-HUP");
        assert!(
            wait_for(5, || d.log_text().matches("reload failed").count() > n),
            "SIGHUP {n} was not refused:\n{}",
            d.log_text()
        );
        let log = d.log_text();
        let line = log
            .lines()
            .filter(|l| l.contains("reload failed"))
            .nth(n)
            .unwrap();
        assert!(line.contains(want.as_str()), "want {want:?} in: {line}");
        assert_eq!(state(), running, "the running state after broken file {n}");
        assert!(
            held.get().is_ok(),
            "the held connection after broken file {n}"
        );
        // Put the good files back for the next case.
        std::fs::write(&rules, &good_rules).unwrap();
        std::fs::write(&config, good_config).unwrap();
    }
    // A good reload is still taken.
    let loaded = d.log_text().matches("rules loaded").count();
    d.signal("-HUP");
    assert!(wait_for(5, || d.log_text().matches("rules loaded").count() > loaded));
    assert_eq!(state(), running);
    let s = load.stop();
    all_ok(
        &s,
        Duration::ZERO,
        s.last().unwrap().at + SEC,
        "through the SIGHUPs",
    );
}

/// The control socket, then its whole directory, removed while xvsd runs:
/// xvsd binds it again (mode 0600, logged) and xvsadm works; forwarding never
/// notices.
#[test]
fn control_socket_directory_removed() {
    require_root();
    let lab = nat_lab("ctl", 1);
    let rules = temp_file("ctl.rules", &nat_rules(&lab, false));
    let base = std::env::temp_dir().join(format!("{}-ctl", xvs_netns::test_prefix()));
    let run = base.join("run/xvs");
    let socket = run.join("xvsd.sock");
    let log = base.with_extension("log");
    let _ = std::fs::remove_dir_all(&base);
    let d = Daemon::start_at(
        lab.director(),
        &socket,
        &log,
        &["-i", "c0", "-i", "r0", "--rules", rules.to_str().unwrap()],
    );
    let to = vip(&lab);
    warm_up(lab.client(), to, false);
    let load = Load::start(lab.client(), to, false, Duration::from_millis(50));
    let answers = || xvsadm(&socket, &["-L", "-n"]).status.success();
    assert!(answers());

    for (what, path) in [
        ("the socket", socket.clone()),
        ("its directory", base.join("run")),
    ] {
        let n = d.log_text().matches("bound it again").count();
        if path == socket {
            std::fs::remove_file(&path).unwrap();
        } else {
            std::fs::remove_dir_all(&path).unwrap();
        }
        let t = Instant::now();
        assert!(
            wait_for(5, answers),
            "xvsd did not bind its socket again after {what} was removed:\n{}",
            d.log_text()
        );
        eprintln!(
            "control socket: {what} removed, xvsadm works again after {:?}",
            t.elapsed()
        );
        assert!(d.log_text().matches("bound it again").count() > n);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the socket is root's only");
    }
    // Fully usable: a change through the new socket takes effect.
    xvsadm_ok(&socket, &["-E", "-t", "10.77.0.100:80", "-s", "wrr"]);
    assert!(xvsadm_ok(&socket, &["-L", "-n"]).contains("wrr"));
    let s = load.stop();
    all_ok(
        &s,
        Duration::ZERO,
        s.last().unwrap().at + SEC,
        "while the socket was away",
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_file(&log);
}

/// A data interface removed while xvsd runs: logged (and, when one of the
/// same name comes back, that it is not served until a restart); the other
/// interfaces keep forwarding, held connections included, and the worker
/// does not spin on the dead socket.
#[test]
fn interface_removed_while_running() {
    require_root();
    let lab = nat_lab("ifrm", 1);
    // A second client network on its own director interface, c1.
    let c2 = Netns::new(&format!("{}-c2", lab.plan().prefix)).unwrap();
    let add_c1 = |c2: &Netns| {
        xvs_netns::veth("c1", lab.director(), "eth0", c2).unwrap();
        sh(lab.director(), "ip addr add 10.77.3.1/24 dev c1");
        sh(
            c2,
            "ip addr add 10.77.3.2/24 dev eth0 && ip route add default via 10.77.3.1",
        );
    };
    add_c1(&c2);
    let rules = temp_file("ifrm.rules", &nat_rules(&lab, false));
    let tag = format!("{}-ifrm", xvs_netns::test_prefix());
    let mut d = Daemon::start(
        lab.director(),
        &tag,
        &[
            "-i",
            "c0",
            "-i",
            "r0",
            "-i",
            "c1",
            "--rules",
            rules.to_str().unwrap(),
        ],
    );
    let to = vip(&lab);
    warm_up(&c2, to, false);
    warm_up(lab.client(), to, false);
    let mut held = Held::open(lab.client(), to).unwrap();
    let load = Load::start(lab.client(), to, false, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(300));

    sh(lab.director(), "ip link del c1");
    assert!(
        wait_for(5, || d.log_text().contains("data interface removed")),
        "the removal was not logged:\n{}",
        d.log_text()
    );
    let line = d
        .log_text()
        .lines()
        .find(|l| l.contains("data interface removed"))
        .unwrap()
        .to_string();
    assert!(line.contains("c1"), "the log names the interface: {line}");
    // No spinning on the gone interface's socket: under a quarter of a CPU.
    let (t0, c0) = (Instant::now(), cpu_ticks(d.pid()));
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_ticks(d.pid()) - c0) as f64 / 100.0;
    assert!(
        used < 0.25 * t0.elapsed().as_secs_f64(),
        "xvsd used {used:.2} s of CPU in 2 s with an interface gone"
    );
    assert_eq!(held.get().expect("held connection"), "rs1");
    assert!(xvsadm(&d.socket, &["-L", "-n"]).status.success());

    // One of the same name comes back: said, not served.
    add_c1(&c2);
    assert!(
        wait_for(5, || d.log_text().contains("restart xvsd to serve it")),
        "{}",
        d.log_text()
    );
    let s = load.stop();
    all_ok(
        &s,
        Duration::ZERO,
        s.last().unwrap().at + SEC,
        "on c0 throughout",
    );
    assert!(d.running(), "xvsd runs on:\n{}", d.log_text());
}
