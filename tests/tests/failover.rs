//! Director failover with connection sync: two xvsd directors (master and
//! backup, each in its own namespace) in front of the same real servers,
//! syncing over multicast on a link of their own. 20 long-lived TCP
//! connections exchange data every 100 ms through the VIP; the backup lists
//! them; the master is cut off and SIGKILLed and the VIP (and for NAT the real
//! servers' gateway address) moves to the backup; every connection goes on
//! without a reset or a lost byte. Again with the backup restarted mid-stream
//! before the switch: with `sync_period` 0 the master syncs a connection only
//! once, so only the snapshot a new backup asks for can teach it the
//! connections. NAT and DR; in the NAT run without a restart both directors
//! run master and backup at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_e2e::{bin, pattern_byte, wait_for, Daemon};
use xvs_netns::{test_prefix, veth, Netns};

const CONNS: usize = 20;
const CHUNK: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Nat,
    Dr,
}

struct Lab {
    _sw: Netns,
    c: Netns,
    d: [Netns; 2],
    r: [Netns; 2],
    mode: Mode,
    tag: String,
    rules: String,
}

fn sh(ns: &Netns, cmd: &str) {
    ns.sh(cmd)
        .unwrap_or_else(|e| panic!("{}: {cmd}: {e}", ns.name()));
}

/// client, directors and real servers on bridges in `sw`: NAT has a client
/// bridge (10.77.70.0/24) and a server one (10.77.71.0/24), DR one bridge
/// (10.77.73.0/24); the directors' sync link is a third (10.77.72.0/24).
fn lab(mode: Mode, tag: &str) -> Lab {
    let p = format!("{}-{tag}", test_prefix());
    let sw = Netns::new(&format!("{p}-sw")).unwrap();
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = [
        Netns::new(&format!("{p}-d1")).unwrap(),
        Netns::new(&format!("{p}-d2")).unwrap(),
    ];
    let r = [
        Netns::new(&format!("{p}-r1")).unwrap(),
        Netns::new(&format!("{p}-r2")).unwrap(),
    ];
    for br in ["brc", "brs", "bry"] {
        sh(
            &sw,
            &format!("ip link add {br} type bridge && ip link set {br} up"),
        );
    }
    let plug = |ns: &Netns, inner: &str, outer: &str, br: &str| {
        veth(inner, ns, outer, &sw).unwrap();
        sw.exec(&["ip", "link", "set", outer, "master", br])
            .unwrap();
    };
    let rs_br = if mode == Mode::Nat { "brs" } else { "brc" };
    plug(&c, "c0", "swc", "brc");
    for (i, dn) in d.iter().enumerate() {
        plug(dn, "a0", &format!("swa{i}"), "brc");
        if mode == Mode::Nat {
            plug(dn, "b0", &format!("swb{i}"), "brs");
        }
        plug(dn, "s0", &format!("sws{i}"), "bry");
    }
    for (i, rn) in r.iter().enumerate() {
        plug(rn, "r0", &format!("swr{i}"), rs_br);
    }
    let rules = match mode {
        Mode::Nat => {
            sh(&c, "ip addr add 10.77.70.2/24 dev c0");
            for (i, dn) in d.iter().enumerate() {
                sh(
                    dn,
                    &format!(
                        "ip addr add 10.77.70.{a}/24 dev a0 && ip addr add 10.77.71.{a}/24 dev b0 && \
                         ip addr add 10.77.72.{a}/24 dev s0 && sysctl -qw net.ipv4.ip_forward=1",
                        a = 11 + i
                    ),
                );
            }
            for (i, rn) in r.iter().enumerate() {
                sh(
                    rn,
                    &format!(
                        "ip addr add 10.77.71.{}/24 dev r0 && ip route add default via 10.77.71.1",
                        21 + i
                    ),
                );
            }
            "-A -t 10.77.70.100:80 -s rr\n\
             -a -t 10.77.70.100:80 -r 10.77.71.21:8080 -m\n\
             -a -t 10.77.70.100:80 -r 10.77.71.22:8080 -m\n"
        }
        Mode::Dr => {
            sh(&c, "ip addr add 10.77.73.2/24 dev c0");
            for (i, dn) in d.iter().enumerate() {
                sh(
                    dn,
                    &format!(
                        "ip addr add 10.77.73.{a}/24 dev a0 && ip addr add 10.77.72.{a}/24 dev s0",
                        a = 11 + i
                    ),
                );
            }
            for (i, rn) in r.iter().enumerate() {
                sh(
                    rn,
                    &format!(
                        "ip addr add 10.77.73.{}/24 dev r0 && ip addr add 10.77.73.100/32 dev lo && \
                         sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                         net.ipv4.conf.r0.arp_ignore=1 net.ipv4.conf.r0.arp_announce=2",
                        21 + i
                    ),
                );
            }
            "-A -t 10.77.73.100:80 -s rr\n\
             -a -t 10.77.73.100:80 -r 10.77.73.21 -g\n\
             -a -t 10.77.73.100:80 -r 10.77.73.22 -g\n"
        }
    };
    let path = std::env::temp_dir().join(format!("{p}.rules"));
    std::fs::write(&path, rules).unwrap();
    let lab = Lab {
        _sw: sw,
        c,
        d,
        r,
        mode,
        tag: p,
        rules: path.to_string_lossy().into_owned(),
    };
    // The master owns the VIP (and the servers' gateway) at first.
    lab.take_over(0);
    lab
}

impl Lab {
    fn vip(&self) -> &'static str {
        match self.mode {
            Mode::Nat => "10.77.70.100",
            Mode::Dr => "10.77.73.100",
        }
    }

    /// Director `i` takes the VIP (and the gateway address), as a VRRP
    /// daemon would.
    fn take_over(&self, i: usize) {
        sh(&self.d[i], &format!("ip addr add {}/24 dev a0", self.vip()));
        if self.mode == Mode::Nat {
            sh(&self.d[i], "ip addr add 10.77.71.1/24 dev b0");
        }
    }

    fn director(&self, i: usize) -> Daemon {
        let ifs: &[&str] = match self.mode {
            Mode::Nat => &["-i", "a0", "-i", "b0"],
            Mode::Dr => &["-i", "a0"],
        };
        let mut args = ifs.to_vec();
        args.extend(["--rules", &self.rules]);
        Daemon::start(&self.d[i], &format!("{}-d{i}", self.tag), &args)
    }

    /// The real servers: echo every byte back.
    fn servers(&self) {
        for (i, rn) in self.r.iter().enumerate() {
            let addr = match self.mode {
                Mode::Nat => format!("10.77.71.{}:8080", 21 + i),
                Mode::Dr => "10.77.73.100:80".to_string(),
            };
            let l = rn.run(|| TcpListener::bind(&addr)).unwrap().unwrap();
            std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(mut s) = s else { continue };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        }
    }
}

fn xvsadm(d: &Daemon, args: &[&str]) -> String {
    let out = std::process::Command::new(bin("xvsadm"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xvsadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connections of the client `xvsadm -L -n -c` lists ESTABLISHED.
fn listed(d: &Daemon, client: &str) -> usize {
    xvsadm(d, &["-L", "-n", "-c"])
        .lines()
        .filter(|l| l.contains("ESTABLISHED") && l.contains(client))
        .count()
}

fn counter(d: &Daemon, name: &str) -> u64 {
    xvsadm(d, &["-L", "--daemon", "--stats"])
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

/// What one client connection saw.
#[derive(Default, Debug)]
struct Seen {
    bytes: u64,
    error: Option<String>,
    /// Longest wait for an echo.
    max_gap: Duration,
    /// Echoes completed after the switch began.
    after_switch: u64,
}

/// One long-lived connection: `CHUNK` bytes of the pattern every 100 ms,
/// each echo checked byte for byte.
fn client_conn(
    mut s: TcpStream,
    stop: Arc<AtomicBool>,
    switched: Arc<Mutex<Option<Instant>>>,
) -> Seen {
    let mut seen = Seen::default();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut out = [0u8; CHUNK];
    let mut back = [0u8; CHUNK];
    while !stop.load(Ordering::Relaxed) {
        for (j, b) in out.iter_mut().enumerate() {
            *b = pattern_byte(seen.bytes + j as u64);
        }
        let t0 = Instant::now();
        if let Err(e) = s.write_all(&out).and_then(|_| s.read_exact(&mut back)) {
            seen.error = Some(format!("after {} bytes: {e}", seen.bytes));
            return seen;
        }
        if back != out {
            seen.error = Some(format!("echo differs after {} bytes", seen.bytes));
            return seen;
        }
        seen.max_gap = seen.max_gap.max(t0.elapsed());
        seen.bytes += CHUNK as u64;
        if switched.lock().unwrap().is_some_and(|t| t0 >= t) {
            seen.after_switch += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    seen
}

fn failover(mode: Mode, restart_backup: bool) {
    let tag = format!(
        "fo{}{}",
        if mode == Mode::Nat { "n" } else { "d" },
        if restart_backup { "r" } else { "" }
    );
    let lab = lab(mode, &tag);
    lab.servers();
    let mut master = lab.director(0);
    let mut backup = lab.director(1);
    // Once per connection (at its 3rd packet) and on state changes: a
    // restarted backup can only learn the connections from a snapshot.
    xvsadm(&master, &["--sync-knob", "sync_period=0"]);
    xvsadm(
        &master,
        &[
            "--start-daemon",
            "master",
            "--mcast-interface",
            "s0",
            "--syncid",
            "7",
        ],
    );
    let start_backup = |d: &Daemon| {
        xvsadm(
            d,
            &[
                "--start-daemon",
                "backup",
                "--mcast-interface",
                "s0",
                "--syncid",
                "7",
            ],
        );
    };
    start_backup(&backup);
    // Master and backup at once (as the kernel allows), on both directors,
    // in one of the runs: whichever takes over already has the table.
    let both = mode == Mode::Nat && !restart_backup;
    if both {
        start_backup(&master);
        xvsadm(
            &backup,
            &[
                "--start-daemon",
                "master",
                "--mcast-interface",
                "s0",
                "--syncid",
                "7",
            ],
        );
        assert_eq!(
            xvsadm(&backup, &["-L", "--daemon"]),
            "master sync daemon (mcast=s0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
             backup sync daemon (mcast=s0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
    } else {
        assert_eq!(
            xvsadm(&backup, &["-L", "--daemon"]),
            "backup sync daemon (mcast=s0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
    }

    let client = if mode == Mode::Nat {
        "10.77.70.2"
    } else {
        "10.77.73.2"
    };
    let vip: SocketAddr = format!("{}:80", lab.vip()).parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let switched = Arc::new(Mutex::new(None));
    let mut threads = Vec::new();
    for _ in 0..CONNS {
        let s = lab
            .c
            .run(|| TcpStream::connect_timeout(&vip, Duration::from_secs(5)))
            .unwrap()
            .expect("connect through the VIP");
        let (stop, switched) = (stop.clone(), switched.clone());
        threads.push(std::thread::spawn(move || client_conn(s, stop, switched)));
    }
    assert!(
        wait_for(15, || listed(&backup, client) >= CONNS),
        "the backup lists {} of {CONNS} connections:\n{}\nmaster: {}\nbackup: {}",
        listed(&backup, client),
        xvsadm(&backup, &["-L", "-n", "-c"]),
        xvsadm(&master, &["-L", "--daemon", "--stats"]),
        xvsadm(&backup, &["-L", "--daemon", "--stats"]),
    );
    if restart_backup {
        // The backup may have learned the table from its own start-up
        // snapshot before the master's regular updates went out (a partial
        // message waits up to flush_ms): wait for those, so that the new
        // backup below can only learn the connections from a snapshot.
        assert!(
            wait_for(15, || counter(&master, "sent_records") >= CONNS as u64),
            "the master sent no regular updates:\n{}",
            xvsadm(&master, &["-L", "--daemon", "--stats"]),
        );
        backup.stop("-KILL");
        drop(backup);
        backup = lab.director(1);
        assert_eq!(listed(&backup, client), 0, "a new backup starts empty");
        let t0 = Instant::now();
        start_backup(&backup);
        assert!(
            wait_for(15, || listed(&backup, client) >= CONNS),
            "the restarted backup lists {} of {CONNS}:\n{}",
            listed(&backup, client),
            xvsadm(&backup, &["-L", "--daemon", "--stats"]),
        );
        eprintln!(
            "{mode:?}: restarted backup learned {CONNS} connections from the snapshot in {:?}",
            t0.elapsed()
        );
        assert!(counter(&backup, "snapshots_recv") >= 1);
        assert_eq!(
            counter(&backup, "recv_records"),
            0,
            "nothing but the snapshot"
        );
    }
    // Let the streams run a while on the master.
    std::thread::sleep(Duration::from_secs(1));

    // The master dies: cut off, then killed; the backup takes the addresses.
    let t_switch = Instant::now();
    *switched.lock().unwrap() = Some(t_switch);
    let down = if mode == Mode::Nat {
        "ip link set a0 down && ip link set b0 down"
    } else {
        "ip link set a0 down"
    };
    sh(&lab.d[0], down);
    master.stop("-KILL");
    lab.take_over(1);
    sh(&lab.c, "ip neigh flush all");
    if mode == Mode::Nat {
        for rn in &lab.r {
            sh(rn, "ip neigh flush all");
        }
    }
    let t_moved = t_switch.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    let carried = listed(&backup, client);
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let total: u64 = seen.iter().map(|s| s.bytes).sum();
    let worst = seen.iter().map(|s| s.max_gap).max().unwrap_or_default();
    eprintln!(
        "{mode:?}{}: {CONNS} connections, {total} bytes echoed and checked, resets {}, \
         addresses moved in {t_moved:?}, longest stall {worst:?}, backup stats:\n{}",
        if restart_backup {
            " (backup restarted)"
        } else {
            ""
        },
        seen.iter().filter(|s| s.error.is_some()).count(),
        xvsadm(&backup, &["-L", "--daemon", "--stats"]),
    );
    for (i, s) in seen.iter().enumerate() {
        assert!(s.error.is_none(), "connection {i}: {:?}", s.error);
        assert!(
            s.after_switch >= 5,
            "connection {i} made {} exchanges after the switch",
            s.after_switch
        );
    }
    assert_eq!(carried, CONNS, "the backup carries them all");
}

#[test]
fn nat_failover_keeps_every_connection() {
    xvs_e2e::require_root();
    failover(Mode::Nat, false);
}

#[test]
fn nat_failover_after_backup_restart() {
    xvs_e2e::require_root();
    failover(Mode::Nat, true);
}

#[test]
fn dr_failover_keeps_every_connection() {
    xvs_e2e::require_root();
    failover(Mode::Dr, false);
}

#[test]
fn dr_failover_after_backup_restart() {
    xvs_e2e::require_root();
    failover(Mode::Dr, true);
}
