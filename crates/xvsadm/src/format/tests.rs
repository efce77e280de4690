//! Golden outputs written by hand from ipvsadm's printf formats (quoted above
//! each expectation), for synthetic services, stats and connections.

use super::*;
use xvs_core::service::DestSpec;

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn tcp(a: [u8; 4], port: u16) -> ServiceKey {
    ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: v4(a),
        port,
    }
}

fn dest(addr: IpAddr, port: u16, fwd: FwdMethod, weight: i32) -> DestInfo {
    DestInfo {
        spec: DestSpec {
            addr,
            port,
            fwd,
            weight,
            u_threshold: 0,
            l_threshold: 0,
        },
        activeconns: 0,
        inactconns: 0,
        persistconns: 0,
        stats: Totals::default(),
        rates: Rates::default(),
    }
}

fn svc(key: ServiceKey, dests: Vec<DestInfo>) -> ServiceInfo {
    ServiceInfo {
        spec: ServiceSpec::new(key),
        stats: Totals::default(),
        rates: Rates::default(),
        dests,
    }
}

struct FixedNames;

impl Names for FixedNames {
    fn host(&self, addr: &IpAddr) -> Option<String> {
        match addr.to_string().as_str() {
            "127.0.0.1" => Some("localhost".into()),
            "10.0.0.1" => Some("a-rather-long-host-name-for-truncation.example.org".into()),
            _ => None,
        }
    }
    fn service(&self, port: u16, proto: &str) -> Option<String> {
        (port == 80 && proto == "tcp").then(|| "http".into())
    }
}

fn no_laddrs(_: &ServiceKey) -> Vec<IpAddr> {
    Vec::new()
}

#[test]
fn largenum_scales_and_exact_widths() {
    let f = |i: u64, exact: bool| {
        let mut s = String::new();
        largenum(&mut s, i, exact);
        s
    };
    // "%9llu" below 100 million
    assert_eq!(f(0, false), "        0");
    assert_eq!(f(99_999_999, false), " 99999999");
    // "%8lluK" i/1000 below 1e9
    assert_eq!(f(100_000_000, false), "  100000K");
    assert_eq!(f(999_999_999, false), "  999999K");
    // "%8lluM" below 1e11, "%8lluG" below 1e14, "%8lluT" above
    assert_eq!(f(1_000_000_000, false), "    1000M");
    assert_eq!(f(99_999_999_999, false), "   99999M");
    assert_eq!(f(100_000_000_000, false), "     100G");
    assert_eq!(f(100_000_000_000_000, false), "     100T");
    assert_eq!(f(u64::MAX, false), "18446744T");
    // --exact: "%*llu", width 9 up to 8 digits, else len+1
    assert_eq!(f(12345678, true), " 12345678");
    assert_eq!(f(123456789, true), " 123456789");
    assert_eq!(f(u64::MAX, true), " 18446744073709551615");
}

#[test]
fn list_numeric_normal() {
    // The seed's example: three NAT dests on 207.175.44.110:80, rr.
    let mut s = svc(
        tcp([207, 175, 44, 110], 80),
        vec![
            dest(v4([192, 168, 10, 3]), 80, FwdMethod::Masq, 1),
            dest(v4([192, 168, 10, 2]), 80, FwdMethod::Masq, 1),
            dest(v4([192, 168, 10, 1]), 80, FwdMethod::Masq, 1),
        ],
    );
    s.spec.sched = SchedKind::Rr;
    let got = list_all(4096, &[s], &no_laddrs, fmt::NUMERIC, &NoNames);
    // "IP Virtual Server version %d.%d.%d (size=%d)\n", title, "%s %s\n",
    // "  -> %-28s %-7s %-6d %-10u %-10u\n"
    let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  207.175.44.110:80 rr\n\
\x20 -> 192.168.10.1:80              Masq    1      0          0         \n\
\x20 -> 192.168.10.2:80              Masq    1      0          0         \n\
\x20 -> 192.168.10.3:80              Masq    1      0          0         \n";
    assert_eq!(got, want);
}

#[test]
fn service_line_flags_persistence_and_ops() {
    let mut a = svc(tcp([10, 1, 1, 1], 0), vec![]);
    a.spec.sched = SchedKind::Sh;
    a.spec.flags = SvcFlags(SvcFlags::PERSISTENT | SvcFlags::SCHED1 | SvcFlags::SCHED2);
    a.spec.timeout = 600;
    a.spec.netmask = u32::from(Ipv4Addr::new(255, 255, 255, 0));
    let mut b = svc(
        ServiceKey::Addr {
            proto: Protocol::Udp,
            addr: "2001:db8::1".parse().unwrap(),
            port: 53,
        },
        vec![dest(
            "2001:db8::10".parse().unwrap(),
            53,
            FwdMethod::Route,
            2,
        )],
    );
    b.spec.flags = SvcFlags(SvcFlags::PERSISTENT | SvcFlags::ONEPACKET | SvcFlags::SCHED3);
    b.spec.timeout = 360;
    b.spec.netmask = 64;
    let mut c = svc(
        ServiceKey::Fwmark {
            mark: 7,
            af: Af::V6,
        },
        vec![],
    );
    c.spec.sched = SchedKind::Mh;
    c.spec.flags = SvcFlags(SvcFlags::SCHED2);
    let got = list_all(4096, &[c, b, a], &no_laddrs, fmt::NUMERIC, &NoNames);
    // " (%s)" flags, " persistent %u", " mask %s" (v4 dotted) / " mask %i" (v6), " ops"
    let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  10.1.1.1:0 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\n\
UDP  [2001:db8::1]:53 wlc (flag-3) persistent 360 mask 64 ops\n\
\x20 -> [2001:db8::10]:53            Route   2      0          0         \n\
FWM  7 IPv6 mh (mh-port)\n";
    assert_eq!(got, want);
}

#[test]
fn save_format() {
    let mut a = svc(
        tcp([10, 1, 1, 1], 80),
        vec![
            dest(v4([10, 2, 0, 2]), 8080, FwdMethod::Masq, 3),
            dest(v4([10, 2, 0, 1]), 80, FwdMethod::Tunnel, 0),
            dest(v4([10, 2, 0, 3]), 80, FwdMethod::FullNat, 1),
        ],
    );
    a.spec.flags = SvcFlags(SvcFlags::PERSISTENT);
    a.spec.timeout = 360;
    a.spec.netmask = u32::from(Ipv4Addr::new(255, 255, 0, 0));
    let mut b = svc(
        ServiceKey::Fwmark {
            mark: 3_000_000_000,
            af: Af::V4,
        },
        vec![],
    );
    b.spec.sched = SchedKind::Sh;
    b.spec.flags = SvcFlags(SvcFlags::SCHED1);
    let laddrs = |k: &ServiceKey| {
        if *k == tcp([10, 1, 1, 1], 80) {
            vec![v4([10, 9, 0, 1]), v4([10, 9, 0, 2])]
        } else {
            vec![]
        }
    };
    let got = list_all(4096, &[a, b], &laddrs, fmt::RULE | fmt::NUMERIC, &NoNames);
    // "-A %s -s %s" " -p %u" " -M %s" " -o" " -b %s"; "-a %s -r %s %s -w %d\n"
    // (tunnel: "... --tun-type ipip"); xvs: "-P %s -z %s". The big mark sorts
    // first: 3e9 - 0 wraps negative.
    let want = "-A -f 3000000000 -s sh -b sh-fallback\n\
-A -t 10.1.1.1:80 -s wlc -p 360 -M 255.255.0.0\n\
-a -t 10.1.1.1:80 -r 10.2.0.1:80 -i -w 0 --tun-type ipip\n\
-a -t 10.1.1.1:80 -r 10.2.0.2:8080 -m -w 3\n\
-a -t 10.1.1.1:80 -r 10.2.0.3:80 --fullnat -w 1\n\
-P -t 10.1.1.1:80 -z 10.9.0.1\n\
-P -t 10.1.1.1:80 -z 10.9.0.2\n";
    assert_eq!(got, want);
}

#[test]
fn names_and_truncation() {
    let s = svc(
        tcp([127, 0, 0, 1], 80),
        vec![
            dest(v4([10, 0, 0, 1]), 80, FwdMethod::Route, 1),
            dest(v4([127, 0, 0, 1]), 8080, FwdMethod::Route, 1),
        ],
    );
    let got = list_all(4096, &[s], &no_laddrs, 0, &FixedNames);
    // Dest names cut to 28 bytes for IPv4 ("dname[28] = '\0'").
    let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  localhost:http wlc\n\
\x20 -> a-rather-long-host-name-for- Route   1      0          0         \n\
\x20 -> localhost:8080               Route   1      0          0         \n";
    assert_eq!(got, want);
    // Service names cut to 33 bytes for IPv4.
    let long = svc(tcp([10, 0, 0, 1], 80), vec![]);
    assert_eq!(
        list_service(&long, 0, &FixedNames).lines().nth(2),
        Some("TCP  a-rather-long-host-name-for- wlc")
    );
}

#[test]
fn stats_rate_and_exact() {
    let mut d = dest(v4([192, 168, 1, 2]), 80, FwdMethod::Masq, 1);
    d.stats = Totals {
        conns: 123,
        inpkts: 123_456_789,
        outpkts: 5,
        inbytes: 123_456_789_012,
        outbytes: 99_999_999,
    };
    d.rates = Rates {
        cps: 1,
        inpps: 22,
        outpps: 333,
        inbps: 1_234_567_890,
        outbps: 4444,
    };
    let mut s = svc(tcp([10, 0, 0, 100], 80), vec![d]);
    s.stats = Totals {
        conns: 1000,
        inpkts: 200_000_000,
        outpkts: 3,
        inbytes: 4_000_000_000_000,
        outbytes: 555_000_000_000_000,
    };
    s.rates = Rates {
        cps: 10,
        inpps: 20,
        outpps: 30,
        inbps: 40,
        outbps: 50,
    };
    let got = list_all(
        4096,
        std::slice::from_ref(&s),
        &no_laddrs,
        fmt::NUMERIC | fmt::STATS,
        &NoNames,
    );
    // "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n", "%-33s" + largenums,
    // "  -> %-28s" + largenums
    let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.100:80                    1000  200000K        3    4000G     555T\n\
\x20 -> 192.168.1.2:80                    123  123456K        5     123G 99999999\n";
    assert_eq!(got, want);

    let got = list_all(
        4096,
        std::slice::from_ref(&s),
        &no_laddrs,
        fmt::NUMERIC | fmt::STATS | fmt::EXACT,
        &NoNames,
    );
    let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.100:80                    1000 200000000        3 4000000000000 555000000000000\n\
\x20 -> 192.168.1.2:80                    123 123456789        5 123456789012 99999999\n";
    assert_eq!(got, want);

    let got = list_all(
        4096,
        std::slice::from_ref(&s),
        &no_laddrs,
        fmt::NUMERIC | fmt::RATE,
        &NoNames,
    );
    // dest: "  -> %-28s %8llu %8llu %8llu" + 2 largenums
    let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.100:80                      10       20       30       40       50\n\
\x20 -> 192.168.1.2:80                      1       22      333    1234M     4444\n";
    assert_eq!(got, want);
}

#[test]
fn thresholds_persistent_conn_and_tun_info() {
    let mut d = dest(v4([192, 168, 1, 2]), 80, FwdMethod::Tunnel, 5);
    d.spec.u_threshold = 100;
    d.spec.l_threshold = 50;
    d.activeconns = 7;
    d.inactconns = 8;
    d.persistconns = 9;
    let s = svc(
        tcp([10, 0, 0, 100], 80),
        vec![d, dest(v4([192, 168, 1, 3]), 80, FwdMethod::Masq, 1)],
    );
    let one = |f: u32| list_service(&s, f | fmt::NUMERIC, &NoNames);
    // "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n";
    // "  -> %-28s %-10u %-10u %-10u %-10u\n"
    assert_eq!(
        one(fmt::THRESHOLDS),
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.100:80 wlc\n\
\x20 -> 192.168.1.2:80               100        50         7          8         \n\
\x20 -> 192.168.1.3:80               0          0          0          0         \n"
    );
    // "%-33s %-9s %-11s %-10s %-10s\n..."; "  -> %-28s %-9u %-11u %-10u %-10u\n"
    assert_eq!(
        one(fmt::PERSISTENTCONN),
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.100:80 wlc\n\
\x20 -> 192.168.1.2:80               5         9           7          8         \n\
\x20 -> 192.168.1.3:80               1         0           0          0         \n"
    );
    // "  -> %-28s %-7s %-13s %-6d %-10u %-10u\n"
    assert_eq!(
        one(fmt::TUN_INFO),
        "Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n\
TCP  10.0.0.100:80 wlc\n\
\x20 -> 192.168.1.2:80               Tunnel  ipip          5      7          8         \n\
\x20 -> 192.168.1.3:80               Masq    n/a           1      0          0         \n"
    );
    // --nosort keeps the given (kernel) order; format precedence stats > rate > thresholds.
    let got = list_service(
        &s,
        fmt::NUMERIC | fmt::THRESHOLDS | fmt::PERSISTENTCONN,
        &NoNames,
    );
    assert!(got.starts_with("Prot LocalAddress:Port            Uthreshold"));
}

#[test]
fn sorting_quirk_and_nosort() {
    let a = svc(tcp([10, 0, 0, 1], 80), vec![]);
    let b = svc(tcp([192, 168, 0, 1], 80), vec![]);
    let c = svc(tcp([172, 16, 0, 1], 80), vec![]);
    let list = [b.clone(), a.clone(), c.clone()];
    let names = |f: u32| -> Vec<String> {
        list_all(1, &list, &no_laddrs, f | fmt::NUMERIC, &NoNames)
            .lines()
            .skip(3)
            .map(str::to_string)
            .collect()
    };
    // Worked through glibc's merge sort in sort.rs: 172, 192, 10.
    assert_eq!(
        names(0),
        [
            "TCP  172.16.0.1:80 wlc",
            "TCP  192.168.0.1:80 wlc",
            "TCP  10.0.0.1:80 wlc"
        ]
    );
    assert_eq!(
        names(fmt::NOSORT),
        [
            "TCP  192.168.0.1:80 wlc",
            "TCP  10.0.0.1:80 wlc",
            "TCP  172.16.0.1:80 wlc"
        ]
    );
}

fn conn(
    proto: &str,
    secs: u32,
    state: &str,
    c: (IpAddr, u16),
    v: (IpAddr, u16),
    d: (IpAddr, u16),
) -> ConnInfo {
    ConnInfo {
        proto: proto.into(),
        expire_secs: secs,
        state: state.into(),
        caddr: c.0,
        cport: c.1,
        vaddr: v.0,
        vport: v.1,
        daddr: d.0,
        dport: d.1,
        template: proto == "IP",
    }
}

#[test]
fn connection_listing() {
    let conns = [
        conn(
            "TCP",
            899,
            "ESTABLISHED",
            (v4([10, 77, 0, 2]), 40000),
            (v4([10, 77, 0, 100]), 80),
            (v4([10, 77, 1, 2]), 80),
        ),
        conn(
            "UDP",
            5,
            "UDP",
            ("fd77::2".parse().unwrap(), 53),
            ("fd77::100".parse().unwrap(), 53),
            ("fd77::1:2".parse().unwrap(), 53),
        ),
        conn(
            "IP",
            6000,
            "NONE",
            (v4([10, 77, 0, 0]), 0),
            (v4([0, 0, 0, 5]), 0),
            (v4([10, 77, 1, 2]), 0),
        ),
    ];
    // "pro expire %-11s %-18s %-18s %s\n"; rows "%-3s %-6s %-11s %-18s %-18s %s\n"
    let want = "IPVS connection entries\n\
pro expire state       source             virtual            destination\n\
TCP 14:59  ESTABLISHED 10.77.0.2:40000    10.77.0.100:80     10.77.1.2:80\n\
UDP 00:05  UDP         [fd77::2]:53       [fd77::100]:53     [fd77::1:2]:53\n\
IP  100:00 NONE        10.77.0.0:0        0.0.0.5:0          10.77.1.2:0\n";
    assert_eq!(list_conns(&conns, fmt::NUMERIC, &NoNames), want);
    // Names: TCP ports looked up as tcp; templates ("IP") get no port names.
    let named = list_conns(&conns[..1], 0, &FixedNames);
    assert_eq!(
        named.lines().nth(2),
        Some("TCP 14:59  ESTABLISHED 10.77.0.2:40000    10.77.0.100:http   10.77.1.2:http")
    );
    // --persistent-conn: "pro expire %-11s %-18s %-18s %-18s %-16s %s\n".
    assert_eq!(
        list_conns(&[], fmt::PERSISTENTCONN, &NoNames),
        "IPVS connection entries\n\
pro expire state       source             virtual            destination        pe name          pe_data\n"
    );
}

#[test]
fn timeout_daemon_and_laddr_listings() {
    assert_eq!(
        timeouts(900, 120, 300),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    let d = |state, ifn: &str, id, maxlen, group: Option<IpAddr>, port, ttl| DaemonSpec {
        state,
        mcast_ifn: ifn.into(),
        syncid: id,
        sync_maxlen: maxlen,
        mcast_group: group,
        mcast_port: port,
        mcast_ttl: ttl,
    };
    let list = [
        d(DaemonState::Backup, "eth1", 7, 0, None, 0, 0),
        d(
            DaemonState::Master,
            "lo",
            0,
            1472,
            Some(v4([224, 0, 0, 81])),
            8848,
            1,
        ),
    ];
    assert_eq!(
        daemons(&list),
        "master sync daemon (mcast=lo, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
backup sync daemon (mcast=eth1, syncid=7)\n"
    );
    let pools = [(
        tcp([10, 0, 0, 100], 80),
        vec![v4([10, 9, 0, 1]), v4([10, 9, 0, 2])],
    )];
    assert_eq!(
        laddrs(&pools),
        "VIP:VPORT            TOTAL    LADDR                CONFLICTS  CONNS     \n\
10.0.0.100:80        2        \n\
\x20                             10.9.0.1             0          0         \n\
\x20                             10.9.0.2             0          0         \n"
    );
}
