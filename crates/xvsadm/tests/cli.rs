//! xvsadm against a real, control-plane-only xvsd on a temporary socket: the
//! state is built through the CLI and the listings compared byte for byte
//! with outputs written by hand from ipvsadm 1.31's printf formats (each
//! golden names its format). With no traffic the counters are zero and the
//! connection list empty; non-zero stats and connection rows are covered by
//! the formatter's unit tests.

mod common;

use common::{run_xvsadm, temp_dir, Daemon};

/// -L -n: title, "%s %s" service lines, "  -> %-28s %-7s %-6d %-10u %-10u\n" dests
const NORMAL: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  10.0.0.1:80 wrr persistent 600 mask 255.255.255.0\n\
\x20 -> 192.168.1.10:8080            Masq    2      0          0         \n\
\x20 -> 192.168.1.11:80              Masq    3      0          0         \n\
UDP  10.0.0.2:53 sh (sh-port) ops\n\
\x20 -> 192.168.1.12:53              Route   1      0          0         \n\
TCP  [2001:db8::1]:443 lc\n\
\x20 -> [2001:db8::10]:443           Masq    1      0          0         \n\
FWM  7 mh (mh-fallback)\n\
\x20 -> 192.168.1.13:0               Tunnel  0      0          0         \n";

/// --stats: "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n", "%-33s" + 5 x "%9llu", "  -> %-28s" + 5 x "%9llu"
const STATS: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.1:80                         0        0        0        0        0\n\
\x20 -> 192.168.1.10:8080                   0        0        0        0        0\n\
\x20 -> 192.168.1.11:80                     0        0        0        0        0\n\
UDP  10.0.0.2:53                         0        0        0        0        0\n\
\x20 -> 192.168.1.12:53                     0        0        0        0        0\n\
TCP  [2001:db8::1]:443                   0        0        0        0        0\n\
\x20 -> [2001:db8::10]:443                  0        0        0        0        0\n\
FWM  7                                   0        0        0        0        0\n\
\x20 -> 192.168.1.13:0                      0        0        0        0        0\n";

/// --rate: same title with CPS..OutBPS, dests "  -> %-28s %8llu %8llu %8llu" + 2 x "%9llu"
const RATE: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.1:80                         0        0        0        0        0\n\
\x20 -> 192.168.1.10:8080                   0        0        0        0        0\n\
\x20 -> 192.168.1.11:80                     0        0        0        0        0\n\
UDP  10.0.0.2:53                         0        0        0        0        0\n\
\x20 -> 192.168.1.12:53                     0        0        0        0        0\n\
TCP  [2001:db8::1]:443                   0        0        0        0        0\n\
\x20 -> [2001:db8::10]:443                  0        0        0        0        0\n\
FWM  7                                   0        0        0        0        0\n\
\x20 -> 192.168.1.13:0                      0        0        0        0        0\n";

/// --thresholds: "%-33s %-10s %-10s %-10s %-10s\n...", dests "  -> %-28s %-10u %-10u %-10u %-10u\n"
const THRESH: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.1:80 wrr persistent 600 mask 255.255.255.0\n\
\x20 -> 192.168.1.10:8080            0          0          0          0         \n\
\x20 -> 192.168.1.11:80              100        50         0          0         \n\
UDP  10.0.0.2:53 sh (sh-port) ops\n\
\x20 -> 192.168.1.12:53              0          0          0          0         \n\
TCP  [2001:db8::1]:443 lc\n\
\x20 -> [2001:db8::10]:443           0          0          0          0         \n\
FWM  7 mh (mh-fallback)\n\
\x20 -> 192.168.1.13:0               0          0          0          0         \n";

/// --persistent-conn: "%-33s %-9s %-11s %-10s %-10s\n...", dests "  -> %-28s %-9u %-11u %-10u %-10u\n"
const PCONN: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.1:80 wrr persistent 600 mask 255.255.255.0\n\
\x20 -> 192.168.1.10:8080            2         0           0          0         \n\
\x20 -> 192.168.1.11:80              3         0           0          0         \n\
UDP  10.0.0.2:53 sh (sh-port) ops\n\
\x20 -> 192.168.1.12:53              1         0           0          0         \n\
TCP  [2001:db8::1]:443 lc\n\
\x20 -> [2001:db8::10]:443           1         0           0          0         \n\
FWM  7 mh (mh-fallback)\n\
\x20 -> 192.168.1.13:0               0         0           0          0         \n";

/// --tun-info: dests "  -> %-28s %-7s %-13s %-6d %-10u %-10u\n"
const TUN: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n\
TCP  10.0.0.1:80 wrr persistent 600 mask 255.255.255.0\n\
\x20 -> 192.168.1.10:8080            Masq    n/a           2      0          0         \n\
\x20 -> 192.168.1.11:80              Masq    n/a           3      0          0         \n\
UDP  10.0.0.2:53 sh (sh-port) ops\n\
\x20 -> 192.168.1.12:53              Route   n/a           1      0          0         \n\
TCP  [2001:db8::1]:443 lc\n\
\x20 -> [2001:db8::10]:443           Masq    n/a           1      0          0         \n\
FWM  7 mh (mh-fallback)\n\
\x20 -> 192.168.1.13:0               Tunnel  ipip          0      0          0         \n";

/// -L without -n: "%s:%s" of host and service names (/etc/hosts, /etc/services)
const NAMES_ALL: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  localhost:http wlc\n\
\x20 -> localhost:http               Route   1      0          0         \n\
\x20 -> localhost:8099               Masq    1      0          0         \n";

/// -L -t localhost:http: title and one service, no header
const NAMES_ONE: &str = "Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  localhost:http wlc\n\
\x20 -> localhost:http               Route   1      0          0         \n\
\x20 -> localhost:8099               Masq    1      0          0         \n";

/// The multi-service state the listing goldens describe.
fn build(d: &Daemon) {
    for line in [
        "-A -t 10.0.0.1:80 -s wrr -p 600 -M 255.255.255.0",
        "-a -t 10.0.0.1:80 -r 192.168.1.11:80 -m -w 3 -x 100 -y 50",
        "-a -t 10.0.0.1:80 -r 192.168.1.10:8080 -m -w 2",
        "-A -u 10.0.0.2:53 -s sh -b sh-port -o",
        "-a -u 10.0.0.2:53 -r 192.168.1.12 -g",
        "-A -f 7 -s mh -b mh-fallback",
        "-a -f 7 -r 192.168.1.13 -i -w 0",
        "-A -t [2001:db8::1]:443 -s lc",
        "-a -t [2001:db8::1]:443 -r [2001:db8::10]:443 -m",
    ] {
        d.ok(line);
    }
}

fn stdout_of(d: &Daemon, args: &[&str]) -> String {
    let o = d.run(args);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""), "xvsadm {args:?}");
    o.stdout
}

#[test]
fn seed_examples_verbatim() {
    let d = Daemon::start();
    d.ok("-A -t 207.175.44.110:80 -s rr");
    d.ok("-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m");
    d.ok("-a -t 207.175.44.110:80 -r 192.168.10.2:80 -m");
    d.ok("-a -t 207.175.44.110:80 -r 192.168.10.3:80 -m");
    // "%s %s\n" service, "  -> %-28s %-7s %-6d %-10u %-10u\n" dests, sorted.
    assert_eq!(
        stdout_of(&d, &["-L", "-n"]),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  207.175.44.110:80 rr\n\
\x20 -> 192.168.10.1:80              Masq    1      0          0         \n\
\x20 -> 192.168.10.2:80              Masq    1      0          0         \n\
\x20 -> 192.168.10.3:80              Masq    1      0          0         \n"
    );
    // -S (names resolved where the system knows them): restores the same state.
    let saved = stdout_of(&d, &["-S"]);
    let numeric = stdout_of(&d, &["-S", "-n"]);
    assert_eq!(
        numeric,
        "-A -t 207.175.44.110:80 -s rr\n\
-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m -w 1\n\
-a -t 207.175.44.110:80 -r 192.168.10.2:80 -m -w 1\n\
-a -t 207.175.44.110:80 -r 192.168.10.3:80 -m -w 1\n"
    );
    d.ok("-d -t 207.175.44.110:80 -r 192.168.10.2:80");
    assert!(!stdout_of(&d, &["-L", "-n"]).contains("192.168.10.2"));
    d.ok("-D -t 207.175.44.110:80");
    assert_eq!(stdout_of(&d, &["-S", "-n"]), "");
    let o = d.run_in(&["-R"], &saved);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
    assert_eq!(stdout_of(&d, &["-S", "-n"]), numeric);
    d.ok("-C");
    assert_eq!(stdout_of(&d, &["-S", "-n"]), "");
}

#[test]
fn listing_forms() {
    let d = Daemon::start();
    build(&d);
    assert_eq!(stdout_of(&d, &["-L", "-n"]), NORMAL);
    assert_eq!(stdout_of(&d, &["-l", "-n"]), NORMAL);
    assert_eq!(stdout_of(&d, &["-Ln"]), NORMAL);
    assert_eq!(stdout_of(&d, &["--list", "--numeric", "--sort"]), NORMAL);
    assert_eq!(stdout_of(&d, &["-L", "-n", "--stats"]), STATS);
    // --exact widens only numbers of 9+ digits: zeros print the same.
    assert_eq!(stdout_of(&d, &["-L", "-n", "--stats", "--exact"]), STATS);
    assert_eq!(stdout_of(&d, &["-L", "-n", "--rate"]), RATE);
    assert_eq!(stdout_of(&d, &["-L", "-n", "--thresholds"]), THRESH);
    assert_eq!(stdout_of(&d, &["-L", "-n", "--persistent-conn"]), PCONN);
    assert_eq!(stdout_of(&d, &["-L", "-n", "--tun-info"]), TUN);
    // Format precedence: stats > rate > thresholds > persistent-conn.
    assert_eq!(stdout_of(&d, &["-L", "-n", "--rate", "--stats"]), STATS);
    assert_eq!(
        stdout_of(&d, &["-L", "-n", "--persistent-conn", "--thresholds"]),
        THRESH
    );
    // One service: no header.
    let one = stdout_of(&d, &["-L", "-n", "-u", "10.0.0.2:53"]);
    assert_eq!(
        one,
        "Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
UDP  10.0.0.2:53 sh (sh-port) ops\n\
\x20 -> 192.168.1.12:53              Route   1      0          0         \n"
    );
    let fw6 = stdout_of(&d, &["-L", "-n", "-f", "7"]);
    assert!(fw6.ends_with("FWM  7 mh (mh-fallback)\n\x20 -> 192.168.1.13:0               Tunnel  0      0          0         \n"));
    // --nosort: services in xvsd's order (insertion), dests newest first.
    let nosort = stdout_of(&d, &["-L", "-n", "--nosort"]);
    let lines: Vec<&str> = nosort.lines().skip(3).collect();
    assert_eq!(
        lines[0],
        "TCP  10.0.0.1:80 wrr persistent 600 mask 255.255.255.0"
    );
    assert!(lines[1].starts_with("  -> 192.168.1.10:8080"));
    assert!(lines[2].starts_with("  -> 192.168.1.11:80"));
    assert_eq!(lines[3], "UDP  10.0.0.2:53 sh (sh-port) ops");
    assert_eq!(lines[5], "FWM  7 mh (mh-fallback)");
    assert_eq!(lines[7], "TCP  [2001:db8::1]:443 lc");
    // -S, numeric: "-A %s -s %s" + " -p %u" + " -M %s" + " -o" + " -b %s",
    // "-a %s -r %s %s -w %d\n", tunnels + " --tun-type ipip".
    assert_eq!(
        stdout_of(&d, &["-S", "-n"]),
        "-A -t 10.0.0.1:80 -s wrr -p 600 -M 255.255.255.0\n\
-a -t 10.0.0.1:80 -r 192.168.1.10:8080 -m -w 2\n\
-a -t 10.0.0.1:80 -r 192.168.1.11:80 -m -w 3\n\
-A -u 10.0.0.2:53 -s sh -o -b sh-port\n\
-a -u 10.0.0.2:53 -r 192.168.1.12:53 -g -w 1\n\
-A -t [2001:db8::1]:443 -s lc\n\
-a -t [2001:db8::1]:443 -r [2001:db8::10]:443 -m -w 1\n\
-A -f 7 -s mh -b mh-fallback\n\
-a -f 7 -r 192.168.1.13:0 -i -w 0 --tun-type ipip\n"
    );
}

#[test]
fn names_without_n() {
    let d = Daemon::start();
    d.ok("-A -t localhost:http");
    d.ok("-a -t 127.0.0.1:80 -r localhost");
    d.ok("-a -t 127.0.0.1:www -r 127.0.0.1:8099 -m");
    assert_eq!(stdout_of(&d, &["-L"]), NAMES_ALL);
    assert_eq!(stdout_of(&d, &["-L", "-t", "localhost:http"]), NAMES_ONE);
    assert_eq!(
        stdout_of(&d, &["-S"]),
        "-A -t localhost:http -s wlc\n\
-a -t localhost:http -r localhost:http -g -w 1\n\
-a -t localhost:http -r localhost:8099 -m -w 1\n"
    );
    // Without any argument: the same as -L.
    assert_eq!(stdout_of(&d, &[]), NAMES_ALL);
}

#[test]
fn connections_timeouts_daemons_laddrs() {
    let d = Daemon::start();
    // No traffic passes a control-plane-only xvsd: the list is empty.
    // "IPVS connection entries\n" + "pro expire %-11s %-18s %-18s %s\n"
    let conns = "IPVS connection entries\n\
pro expire state       source             virtual            destination\n";
    assert_eq!(stdout_of(&d, &["-L", "-c"]), conns);
    assert_eq!(stdout_of(&d, &["-L", "-c", "-n"]), conns);
    assert_eq!(
        stdout_of(&d, &["-lcn", "--persistent-conn"]),
        "IPVS connection entries\n\
pro expire state       source             virtual            destination        pe name          pe_data\n"
    );
    // "Timeout (tcp tcpfin udp): %d %d %d\n"
    assert_eq!(
        stdout_of(&d, &["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    d.ok("--set 3600 0 60");
    assert_eq!(
        stdout_of(&d, &["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 3600 120 60\n"
    );
    // --daemon: nothing until a daemon runs.
    assert_eq!(stdout_of(&d, &["-L", "--daemon"]), "");
    d.ok("--start-daemon backup --mcast-interface lo --syncid 9");
    d.ok("--start-daemon master --mcast-interface lo");
    let o = d.run(&["--start-daemon", "master", "--mcast-interface", "lo"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (255, "Daemon has already run\n")
    );
    let daemons = stdout_of(&d, &["-L", "--daemon"]);
    let lines: Vec<&str> = daemons.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        "master sync daemon (mcast=lo, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
    );
    assert!(
        lines[1].starts_with("backup sync daemon (mcast=lo, syncid=9, maxlen="),
        "{daemons}"
    );
    d.ok("--stop-daemon master");
    let o = d.run(&["--stop-daemon", "master"]);
    assert_eq!((o.code, o.stderr.as_str()), (255, "No daemon is running\n"));
    // FULLNAT local addresses (xvs extension): -P/-Q/-G, saved by -S.
    d.ok("-A -t 10.0.0.100:80");
    d.ok("-a -t 10.0.0.100:80 -r 10.1.0.2 --fullnat");
    d.ok("-P -t 10.0.0.100:80 -z 10.2.0.1");
    d.ok("-P -t 10.0.0.100:80 -z 10.2.0.2");
    // "%-20s %-8s %-20s %-10s %-10s\n", "%-20s %-8u \n", "%-20s %-8s %-20s %-10lu %-10u\n"
    let g = "VIP:VPORT            TOTAL    LADDR                CONFLICTS  CONNS     \n\
10.0.0.100:80        2        \n\
\x20                             10.2.0.1             0          0         \n\
\x20                             10.2.0.2             0          0         \n";
    assert_eq!(stdout_of(&d, &["-G"]), g);
    assert_eq!(stdout_of(&d, &["-G", "-t", "10.0.0.100:80"]), g);
    let saved = stdout_of(&d, &["-S", "-n"]);
    assert_eq!(
        saved,
        "-A -t 10.0.0.100:80 -s wlc\n\
-a -t 10.0.0.100:80 -r 10.1.0.2:80 --fullnat -w 1\n\
-P -t 10.0.0.100:80 -z 10.2.0.1\n\
-P -t 10.0.0.100:80 -z 10.2.0.2\n"
    );
    d.ok("-Q -t 10.0.0.100:80 -z 10.2.0.1");
    assert!(!stdout_of(&d, &["-G"]).contains("10.2.0.1"));
    d.ok("-C");
    let o = d.run_in(&["-R"], &saved);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
    assert_eq!(stdout_of(&d, &["-S", "-n"]), saved);
}

/// Expected (exit code, stderr) of a command line.
fn check(d: &Daemon, line: &str, code: i32, err: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let o = d.run(&args);
    assert_eq!(
        (o.code, o.stderr.as_str(), o.stdout.as_str()),
        (code, err, ""),
        "xvsadm {line}"
    );
}

#[test]
fn parse_errors_and_exit_codes() {
    let d = Daemon::start();
    // The first option must be a command; argv[0] is printed as given (here
    // the absolute path the test runs).
    let p = common::xvsadm_bin().display().to_string();
    let tryhelp = format!("Try `{p} -h' or '{p} --help' for more information.\n");
    check(&d, "-n", 255, &tryhelp);
    check(&d, "--foo", 255, &tryhelp);
    check(&d, "-L --foo", 255, "--foo: unknown option\n");
    check(&d, "-A -t", 255, "-t: missing argument\n");
    check(
        &d,
        "-A",
        2,
        "You need to supply the 'service-address' option for the 'add-service' command\n",
    );
    check(
        &d,
        "-a -t 1.2.3.4:80",
        2,
        "You need to supply the 'real-server' option for the 'add-server' command\n",
    );
    check(
        &d,
        "-D -t 1.2.3.4:80 -s rr",
        2,
        "Illegal 'scheduler' option with the 'delete-service' command\n",
    );
    check(
        &d,
        "-C -n",
        2,
        "Illegal 'numeric' option with the 'flush' command\n",
    );
    check(
        &d,
        "-S -c",
        2,
        "Illegal 'connection' option with the 'save' command\n",
    );
    check(
        &d,
        "-L -c --timeout",
        2,
        "The option 'timeout' conflicts with the 'connection' option in the 'list' command\n",
    );
    check(
        &d,
        "-L -c --stats",
        2,
        "options conflicts in the list command\n",
    );
    check(
        &d,
        "-L --daemon --persistent-conn",
        2,
        "options conflicts in the list command\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -s rr -s wlc",
        2,
        "multiple 'scheduler' options specified\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -m -g",
        2,
        "multiple 'forwarding-method' options specified\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4",
        2,
        "Zero port specified for non-persistent service\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -o",
        2,
        "One-Packet Scheduling is only for UDP virtual services\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -b sh-port",
        2,
        "incompatible scheduler flag `sh-port'\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -s sh -b bogus",
        2,
        "invalid scheduler flag `bogus'\n",
    );
    check(
        &d,
        "-A -t 80",
        2,
        "illegal virtual server address[:port] specified\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:99999",
        2,
        "illegal virtual server address[:port] specified\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -p 0",
        2,
        "invalid timeout value `0' specified\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -p 2678401",
        2,
        "invalid timeout value `2678401' specified\n",
    );
    check(
        &d,
        "-A -t 1.2.3.4:80 -M 1.2.3.999",
        2,
        "illegal virtual server persistent mask specified\n",
    );
    check(
        &d,
        "-A -t [::1]:80 -M 129",
        2,
        "illegal ipv6 netmask specified\n",
    );
    check(&d, "-A -f 0", 2, "invalid fwmark value `0' specified\n");
    check(&d, "-A -6 -f 1", 2, "-6 used before -f\n\n");
    check(
        &d,
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -w 65536",
        2,
        "illegal weight specified\n",
    );
    check(
        &d,
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -x -1",
        2,
        "illegal u_threshold specified\n",
    );
    check(
        &d,
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -y x",
        2,
        "illegal l_threshold specified\n",
    );
    check(
        &d,
        "-a -t 1.2.3.4:80 -r 80",
        2,
        "illegal real server address[:port] specified\n",
    );
    check(
        &d,
        "-a -t 1.2.3.4:80 -r [::1]:80 -m",
        2,
        "Different address family is allowed only for tunneling servers\n",
    );
    check(
        &d,
        "-a -t 1.2.3.4:80 -r 5.6.7.8 -m --tun-type ipip",
        2,
        "Tunnel options conflict with forward method\n",
    );
    check(
        &d,
        "--set 1 2",
        2,
        "--set option requires 3 timeout values\n",
    );
    check(
        &d,
        "--set 1 2 x",
        2,
        "invalid timeout value `x' specified\n",
    );
    check(&d, "--set 1 2 3 4", 2, "unexpected argument 4\n");
    check(&d, "-L extra", 2, "unexpected argument extra\n");
    check(
        &d,
        "--start-daemon boss",
        2,
        "illegal start-daemon parameter specified\n",
    );
    check(
        &d,
        "--stop-daemon boss",
        2,
        "illegal start_daemon specified\n",
    );
    check(
        &d,
        "--start-daemon master --syncid 256",
        2,
        "illegal syncid specified\n",
    );
    check(
        &d,
        "--start-daemon master --mcast-group 10.0.0.1",
        2,
        "invalid IPv4 mcast-group `10.0.0.1'\n",
    );
    check(
        &d,
        "--start-daemon master --mcast-port 0",
        2,
        "illegal mcast-port specified\n",
    );
    // Nothing of the above changed anything.
    assert_eq!(stdout_of(&d, &["-S", "-n"]), "");
    // -h: usage on stdout, exit 0; -v: ipvsadm's version line.
    let o = d.run(&["-h"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains(
            "  --add-laddr       -P        add a FULLNAT local address to a service (xvs)\n"
        ),
        "{}",
        o.stdout
    );
    assert!(o
        .stdout
        .contains("one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh,\n"));
    let o = d.run(&["-v"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (
            0,
            "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
        )
    );
}

#[test]
fn operation_errors_exit_255() {
    let d = Daemon::start();
    d.ok("-A -t 10.0.0.1:80");
    d.ok("-a -t 10.0.0.1:80 -r 10.0.1.1");
    check(&d, "-A -t 10.0.0.1:80", 255, "Service already exists\n");
    check(
        &d,
        "-A -t 10.0.0.2:80 -s nosuch",
        255,
        "Scheduler or persistence engine not found\n",
    );
    check(&d, "-E -t 10.0.0.9:80", 255, "No such service\n");
    check(&d, "-D -t 10.0.0.9:80", 255, "No such service\n");
    check(&d, "-Z -t 10.0.0.9:80", 255, "No such service\n");
    check(
        &d,
        "-a -t 10.0.0.9:80 -r 10.0.1.1",
        255,
        "Service not defined\n",
    );
    check(
        &d,
        "-a -t 10.0.0.1:80 -r 10.0.1.1",
        255,
        "Destination already exists\n",
    );
    check(
        &d,
        "-e -t 10.0.0.1:80 -r 10.0.1.9",
        255,
        "No such destination\n",
    );
    check(
        &d,
        "-d -t 10.0.0.1:80 -r 10.0.1.9",
        255,
        "No such destination\n",
    );
    check(
        &d,
        "-a -t 10.0.0.1:80 -r 10.0.1.2 -x 5 -y 10",
        255,
        "Numerical result out of range\n",
    );
    // FULLNAT local address pools (-P/-Q): the service must exist and match
    // the address family.
    check(
        &d,
        "-Q -t 10.0.0.9:80 -z 10.0.2.1",
        255,
        "Service not defined\n",
    );
    check(
        &d,
        "-P -t 10.0.0.9:80 -z 10.0.2.1",
        255,
        "Service not defined\n",
    );
    check(
        &d,
        "-P -t 10.0.0.1:80 -z fd77::1",
        255,
        "Local address family differs from the service's\n",
    );
    d.ok("-P -t 10.0.0.1:80 -z 10.0.2.1");
    check(
        &d,
        "-Q -t 10.0.0.1:80 -z 10.0.2.9",
        255,
        "No such local address\n",
    );
    // Listing a missing service is a list error: exit 1.
    check(&d, "-L -n -t 10.0.0.9:80", 1, "No such service\n");
    // -Z of everything and of one service succeed.
    d.ok("-Z");
    d.ok("-Z -t 10.0.0.1:80");
    // -E without -s resets the scheduler to wlc and replaces the flags.
    d.ok("-E -t 10.0.0.1:80 -s rr -p");
    assert_eq!(
        stdout_of(&d, &["-S", "-n"]).lines().next(),
        Some("-A -t 10.0.0.1:80 -s rr -p 360")
    );
    d.ok("-E -t 10.0.0.1:80");
    assert_eq!(
        stdout_of(&d, &["-S", "-n"]).lines().next(),
        Some("-A -t 10.0.0.1:80 -s wlc")
    );
}

#[test]
fn restore_is_all_or_nothing_with_line_numbers() {
    let d = Daemon::start();
    d.ok("-A -t 10.0.0.1:80");
    let before = stdout_of(&d, &["-S", "-n"]);
    // A parse error on line 4 (comments and blank lines count as lines; the
    // word "ipvsadm" is dropped as ipvsadm -R drops it).
    let input = "-A -t 10.0.0.2:80\n\nipvsadm -a -t 10.0.0.2:80 -r 10.0.1.1\n-a -t 10.0.0.2:80 -r 10.0.1.2 -w 70000\n";
    let o = d.run_in(&["-R"], input);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (2, "xvsadm: line 4: illegal weight specified\n")
    );
    assert_eq!(stdout_of(&d, &["-S", "-n"]), before);
    // A refused operation on line 2: nothing applied either, exit 255.
    let input = "-A -t 10.0.0.3:80\n-A -t 10.0.0.1:80\n";
    let o = d.run_in(&["-R"], input);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (255, "xvsadm: line 2: Service already exists\n")
    );
    assert_eq!(stdout_of(&d, &["-S", "-n"]), before);
    // Nested -R is refused as ipvsadm refuses it.
    let o = d.run_in(&["-R"], "-R\n");
    assert_eq!(o.code, 255);
    assert!(
        o.stderr.starts_with("xvsadm: line 1: Try `"),
        "{}",
        o.stderr
    );
    // Listing commands cannot be part of the batch.
    let o = d.run_in(&["-R"], "-A -t 10.0.0.4:80\n-L -n\n");
    assert_eq!(o.code, 2);
    assert_eq!(
        o.stderr,
        "xvsadm: line 2: -L cannot be used in restore input (it is applied as one batch)\n"
    );
    assert_eq!(stdout_of(&d, &["-S", "-n"]), before);
    // A good batch applies whole; -R takes no options.
    let o = d.run_in(
        &["-R"],
        "ipvsadm -A -u 10.0.0.5:53 -s rr\r\n-a -u 10.0.0.5:53 -r 10.0.1.5 -m\n",
    );
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
    assert!(stdout_of(&d, &["-S", "-n"]).contains("-a -u 10.0.0.5:53 -r 10.0.1.5:53 -m -w 1\n"));
    check(
        &d,
        "-R -n",
        2,
        "Illegal 'numeric' option with the 'restore' command\n",
    );
}

#[test]
fn no_daemon_is_one_line_and_nonzero() {
    let dir = temp_dir();
    let sock = dir.join("none.sock");
    let o = run_xvsadm(&sock, &["-L", "-n"], "");
    assert_eq!(o.code, 2);
    assert_eq!(o.stdout, "");
    assert_eq!(
        o.stderr,
        format!(
            "xvsadm: cannot connect to xvsd at {}: No such file or directory (is xvsd running?)\n",
            sock.display()
        )
    );
    // Parse errors are reported without a daemon too, and -h works.
    let o = run_xvsadm(&sock, &["-A"], "");
    assert_eq!(o.code, 2);
    let o = run_xvsadm(&sock, &["-h"], "");
    assert_eq!(o.code, 0);
    let _ = std::fs::remove_dir_all(dir);
}
