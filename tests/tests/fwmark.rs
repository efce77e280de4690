//! fwmark and port-0 services get traffic: a fwmark service gathering HTTP and
//! HTTPS of a VIP (persistent: a client's two connections on one real
//! server), a mark over a /28 of VIPs, an IPv6 fwmark service, a port-0
//! persistent service answering on three ports; deleting a mark rule gives the
//! traffic back to the host; the listings count the packets.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;
use xvs_e2e::{bin, require_root, Daemon};
use xvs_netns::{test_prefix, veth, Netns};

fn sh(ns: &Netns, script: &str) {
    let out = ns.sh(script).unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn xvsadm(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &d.socket)
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

/// Servers in `ns` on every address, these ports, v4 and v6 (one dual-stack
/// socket each), that send `name` and close.
fn name_servers(ns: &Netns, name: &'static str, ports: &[u16]) {
    for &port in ports {
        let l = ns
            .run(|| TcpListener::bind(format!("[::]:{port}")))
            .unwrap()
            .unwrap_or_else(|e| panic!("{name} bind [::]:{port}: {e}"));
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                use std::io::Write;
                let _ = s.write_all(name.as_bytes());
            }
        });
    }
}

/// Connects from `ns`, bound to `from`, to `to`; the name the server sent.
fn who(ns: &Netns, from: &str, to: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    let from: IpAddr = from.parse().unwrap();
    ns.run(move || {
        let s = match to {
            SocketAddr::V4(_) => nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::empty(),
                None,
            ),
            SocketAddr::V6(_) => nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet6,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::empty(),
                None,
            ),
        }
        .map_err(|e| e.to_string())?;
        let local = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(from, 0));
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&s), &local)
            .map_err(|e| e.to_string())?;
        let s: TcpStream = std::net::TcpStream::from(s);
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let sa = nix::sys::socket::SockaddrStorage::from(to);
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&s), &sa)
            .map_err(|e| format!("connect {to}: {e}"))?;
        let mut s = s;
        let mut name = String::new();
        s.read_to_string(&mut name)
            .map_err(|e| format!("read from {to}: {e}"))?;
        Ok(name)
    })
    .unwrap()
}

#[test]
fn fwmark_and_port_zero_services_get_traffic() {
    require_root();
    let p = format!("{}-fwm", test_prefix());
    let c = Netns::new(&format!("{p}-c")).unwrap();
    let d = Netns::new(&format!("{p}-d")).unwrap();
    let r1 = Netns::new(&format!("{p}-r1")).unwrap();
    let r2 = Netns::new(&format!("{p}-r2")).unwrap();
    veth("c0", &c, "d0", &d).unwrap();
    veth("d1", &d, "r0", &r1).unwrap();
    veth("d2", &d, "r0", &r2).unwrap();
    sh(
        &c,
        "for i in 2 3 4 5; do ip addr add 10.77.100.$i/24 dev c0; done && \
         ip addr add fd77:100::2/64 dev c0 nodad && \
         ip route add 10.77.102.0/24 via 10.77.100.1 && \
         ip route add fd77:102::/64 via fd77:100::1",
    );
    sh(
        &d,
        "ip addr add 10.77.100.1/24 dev d0 && ip addr add fd77:100::1/64 dev d0 nodad && \
         ip addr add 10.77.100.100/32 dev d0 && ip addr add 10.77.100.101/32 dev d0 && \
         ip addr add 10.77.101.1/24 dev d1 && ip addr add fd77:101::1/64 dev d1 nodad && \
         ip addr add 10.77.104.1/24 dev d2 && ip addr add fd77:104::1/64 dev d2 nodad && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
    );
    for (ns, v4, v6) in [
        (
            &r1,
            "10.77.101.11/24 via 10.77.101.1",
            "fd77:101::11/64 via fd77:101::1",
        ),
        (
            &r2,
            "10.77.104.12/24 via 10.77.104.1",
            "fd77:104::12/64 via fd77:104::1",
        ),
    ] {
        let (a4, g4) = v4.split_once(" via ").unwrap();
        let (a6, g6) = v6.split_once(" via ").unwrap();
        sh(
            ns,
            &format!(
                "ip addr add {a4} dev r0 && ip addr add {a6} dev r0 nodad && \
                 ip route add default via {g4} && ip -6 route add default via {g6}"
            ),
        );
    }
    let ports = [80, 443, 8080, 8001, 8002, 8003];
    name_servers(&r1, "rs1", &ports);
    name_servers(&r2, "rs2", &ports);
    let daemon = Daemon::start(&d, &p, &["-i", "d0", "-i", "d1", "-i", "d2"]);

    // (a) HTTP and HTTPS of one VIP in one persistent fwmark service.
    xvsadm(
        &daemon,
        &[
            "--add-mark",
            "-d 10.77.100.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 1",
        ],
    );
    xvsadm(&daemon, &["-A", "-f", "1", "-s", "rr", "-p", "60"]);
    for rs in ["10.77.101.11", "10.77.104.12"] {
        xvsadm(&daemon, &["-a", "-f", "1", "-r", rs, "-m"]);
    }
    let mut seen = Vec::new();
    for i in 2..=5 {
        let client = format!("10.77.100.{i}");
        let a = who(&c, &client, "10.77.100.100:80").unwrap();
        let b = who(&c, &client, "10.77.100.100:443").unwrap();
        assert_eq!(a, b, "client {client}: HTTP and HTTPS on one real server");
        seen.push(a);
    }
    assert!(
        seen.contains(&"rs1".to_string()) && seen.contains(&"rs2".to_string()),
        "clients spread over both real servers: {seen:?}"
    );

    // (b) A mark over a /28 of VIPs; the host serves .1 itself once the rule
    // is gone.
    xvsadm(
        &daemon,
        &[
            "--add-mark",
            "-d 10.77.102.0/28 -p tcp --dport 8080 -j MARK --set-mark 2",
        ],
    );
    xvsadm(&daemon, &["-A", "-f", "2", "-s", "rr"]);
    xvsadm(&daemon, &["-a", "-f", "2", "-r", "10.77.101.11", "-m"]);
    sh(&d, "ip addr add 10.77.102.1/32 dev lo");
    name_servers(&d, "director", &[8080]);
    for vip in ["10.77.102.1", "10.77.102.7", "10.77.102.14"] {
        assert_eq!(
            who(&c, "10.77.100.2", &format!("{vip}:8080")).unwrap(),
            "rs1",
            "{vip} is in the marked /28"
        );
    }
    assert!(
        who(&c, "10.77.100.2", "10.77.102.17:8080").is_err(),
        "10.77.102.17 is outside the /28"
    );

    // (c) IPv6.
    xvsadm(
        &daemon,
        &[
            "--add-mark",
            "-d fd77:102::/64 -p tcp --dport 80 -j MARK --set-mark 3",
        ],
    );
    xvsadm(&daemon, &["-A", "-f", "3", "-6", "-s", "rr"]);
    xvsadm(
        &daemon,
        &["-a", "-f", "3", "-6", "-r", "fd77:104::12", "-m"],
    );
    assert_eq!(who(&c, "fd77:100::2", "[fd77:102::9]:80").unwrap(), "rs2");

    // (d) A port-0 persistent service answers on any port, one real server
    // per client.
    xvsadm(
        &daemon,
        &["-A", "-t", "10.77.100.101:0", "-s", "rr", "-p", "60"],
    );
    for rs in ["10.77.101.11", "10.77.104.12"] {
        xvsadm(&daemon, &["-a", "-t", "10.77.100.101:0", "-r", rs, "-m"]);
    }
    let names: Vec<String> = [8001, 8002, 8003]
        .iter()
        .map(|port| who(&c, "10.77.100.3", &format!("10.77.100.101:{port}")).unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n == &names[0]),
        "one real server for the client on every port: {names:?}"
    );

    // The rules as listed and saved.
    let marks = xvsadm(&daemon, &["--list-marks"]);
    assert_eq!(
        marks,
        "-d 10.77.100.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 1\n\
         -d 10.77.102.0/28 -p tcp --dport 8080 -j MARK --set-mark 2\n\
         -d fd77:102::/64 -p tcp --dport 80 -j MARK --set-mark 3\n"
    );
    let saved = xvsadm(&daemon, &["-S", "-n"]);
    assert!(saved.starts_with(
        "--add-mark -d 10.77.100.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 1\n"
    ));

    // (f) The listings show the packets.
    let stats = xvsadm(&daemon, &["-L", "-n", "--stats", "--exact"]);
    for svc in ["FWM  1 ", "FWM  2 ", "FWM  3 IPv6", "TCP  10.77.100.101:0"] {
        let line = stats
            .lines()
            .find(|l| l.starts_with(svc))
            .unwrap_or_else(|| panic!("{svc} not listed:\n{stats}"));
        let inpkts: u64 = line
            .split_whitespace()
            .rev()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap();
        assert!(inpkts > 0, "{svc} counted packets:\n{stats}");
    }

    // (e) Deleting the rule stops the steering: the host answers again.
    xvsadm(
        &daemon,
        &[
            "--del-mark",
            "-d 10.77.102.0/28 -p tcp --dport 8080 -j MARK --set-mark 2",
        ],
    );
    assert_eq!(
        who(&c, "10.77.100.2", "10.77.102.1:8080").unwrap(),
        "director"
    );
    // -S | -C; -R restores the same rules.
    let before = xvsadm(&daemon, &["-S", "-n"]);
    xvsadm(&daemon, &["-C"]);
    assert_eq!(xvsadm(&daemon, &["--list-marks"]), "");
    let mut r = Command::new(bin("xvsadm"))
        .env("XVS_SOCKET", &daemon.socket)
        .arg("-R")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(r.stdin.as_mut().unwrap(), before.as_bytes()).unwrap();
    drop(r.stdin.take());
    assert!(r.wait().unwrap().success());
    assert_eq!(xvsadm(&daemon, &["-S", "-n"]), before);
    assert_eq!(
        who(&c, "fd77:100::2", "[fd77:102::9]:80").unwrap(),
        "rs2",
        "restored rules steer again"
    );
}

/// The config file's `[[mark]]` rules are loaded at start and replaced on
/// SIGHUP, all or nothing: a file with a bad rule changes nothing.
#[test]
fn config_mark_rules_reload_on_sighup_all_or_nothing() {
    let dir = std::env::temp_dir().join(format!("{}-fwmcfg", test_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("xvsd.toml");
    let sock = dir.join("xvsd.sock");
    let rule = |addr: &str, mark: u32| {
        format!("[[mark]]\nproto = 6\naddr = \"{addr}\"\nprefix_len = 32\nports = [80, 80]\nmark = {mark}\n")
    };
    std::fs::write(&cfg, rule("10.77.0.100", 1)).unwrap();
    let mut child = Command::new(bin("xvsd"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let list = || {
        let out = Command::new(bin("xvsadm"))
            .env("XVS_SOCKET", &sock)
            .arg("--list-marks")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait = |want: &str| xvs_e2e::wait_for(10, || list() == want);
    assert!(
        wait("-d 10.77.0.100/32 -p tcp --dport 80 -j MARK --set-mark 1\n"),
        "{}",
        list()
    );
    std::fs::write(&cfg, rule("10.77.0.100", 1) + &rule("10.77.0.101", 2)).unwrap();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
    };
    hup();
    let two = "-d 10.77.0.100/32 -p tcp --dport 80 -j MARK --set-mark 1\n\
               -d 10.77.0.101/32 -p tcp --dport 80 -j MARK --set-mark 2\n";
    assert!(wait(two), "{}", list());
    // A bad rule (mark 0) in the file: nothing changes.
    std::fs::write(&cfg, rule("10.77.0.100", 1) + &rule("10.77.0.102", 0)).unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(list(), two);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
