//! The drop_entry DoS defence as the kernel's `ip_vs_random_dropentry` and
//! `todrop_entry` (Linux 6.18.32, net/netfilter/ipvs/ip_vs_conn.c) and
//! `update_defense_level` (ip_vs_ctl.c) run it: once a second, while low on
//! memory (here: fewer than `amemthresh` free connection entries) in modes
//! 1 and 2, always in mode 3, never in mode 0.
//!
//! xvs looks at the table in slices of 1/32 in turn (the kernel picks 1/32 of
//! its hash buckets at random), so a test that runs it once a second for as
//! many seconds as the table has 32nds sees every entry exactly once.

mod common;
use common::*;
use xvs_core::conn::TcpState;
use xvs_core::engine::{metrics, Verdict};

const VIP: &str = "10.77.0.100";

fn lab(conn_max: u32, persistent: bool) -> Lab {
    let mut lab = Lab::new(conn_max);
    let p = if persistent { " -p 300" } else { "" };
    lab.cmd(&format!("-A -t 10.77.0.100:80 -s rr{p}"));
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -m");
    lab.cmd("-A -u 10.77.0.100:53 -s rr");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.13:53 -m");
    lab
}

fn set_drop_entry(lab: &mut Lab, mode: u8, amemthresh: u32) {
    lab.rules.knobs.drop_entry = mode;
    lab.rules.knobs.amemthresh = amemthresh;
    lab.publish();
}

fn tcp(lab: &mut Lab, cip: &str, cport: u16, fl: &str, payload: &[u8]) {
    let f = tcp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        (cip, cport),
        (VIP, 80),
        fl,
        payload,
    );
    assert_eq!(lab.send(&f, PORT_CLI).0, Verdict::Tx(PORT_RS));
}

fn udp(lab: &mut Lab, cport: u16) {
    let f = udp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        ("10.77.0.2", cport),
        (VIP, 53),
        b"q",
    );
    assert_eq!(lab.send(&f, PORT_CLI).0, Verdict::Tx(PORT_RS));
}

/// A TCP connection from 10.77.0.2:`cport` with `pkts` inbound packets:
/// SYN (1), ACK (2: ESTABLISHED), then data.
fn conn(lab: &mut Lab, cport: u16, pkts: u32) {
    tcp(lab, "10.77.0.2", cport, "S", b"");
    for _ in 1..pkts {
        tcp(lab, "10.77.0.2", cport, "A", b"x");
    }
}

/// Housekeeping once a second for `secs` seconds.
fn run(lab: &mut Lab, secs: u64) {
    for _ in 0..secs {
        lab.advance(1);
        lab.sweep();
    }
}

/// (client port, protocol, state) of every live connection.
fn live(lab: &Lab) -> Vec<(u16, u8, TcpState)> {
    let mut v = Vec::new();
    lab.engine.conns.for_each_live(|c| {
        if !c.flags().is_template() {
            v.push((c.cport, c.proto, c.tcp_state()));
        }
    });
    v.sort_by_key(|c| (c.0, c.1, c.2 as u8));
    v
}

/// `ip_vs_random_dropentry` deletes TCP connections in SYN_RECV (and
/// SYNACK) whatever their age; ESTABLISHED ones younger than 60 s stay.
#[test]
fn drop_entry_deletes_half_open_connections() {
    for mode in [0u8, 3] {
        let mut lab = lab(256, false);
        set_drop_entry(&mut lab, mode, 1024);
        for p in 1..=8 {
            conn(&mut lab, p, 1); // SYN_RECV (60 s)
        }
        for p in 11..=18 {
            conn(&mut lab, p, 2); // ESTABLISHED
        }
        // 16 entries: one 32nd is one entry a second.
        run(&mut lab, 16);
        let ports: Vec<u16> = live(&lab).iter().map(|c| c.0).collect();
        if mode == 0 {
            assert_eq!(ports.len(), 16, "mode 0: never");
            assert_eq!(lab.engine.dropped_entries(), 0);
        } else {
            assert_eq!(ports, (11..=18).collect::<Vec<_>>());
            assert_eq!(lab.engine.dropped_entries(), 8);
            let (a, b) = (
                lab.counts("10.77.0.100:80", "10.77.1.11:80"),
                lab.counts("10.77.0.100:80", "10.77.1.12:80"),
            );
            assert_eq!(a.0 + b.0, 8, "the dest counters follow");
            let fams = metrics::families(&lab.engine);
            let f = fams
                .iter()
                .find(|f| f.name == "xvs_drop_entry_deleted_total")
                .unwrap();
            assert_eq!(f.samples, vec![(vec![], metrics::Value::Int(8))]);
        }
    }
}

/// `todrop_entry`: an ESTABLISHED TCP connection, or a connection of another
/// protocol, goes only when idle for 60 s (since its timer was last
/// restarted) with 1 to 8 inbound packets (`in_pkts`), and then one in
/// `in_pkts` of them (`todrop_rate[i] = i`, a counter per count, the first
/// one dropped at once).
#[test]
fn drop_entry_thins_idle_connections_by_inbound_packets() {
    let mut lab = lab(256, false);
    for p in 1..=6 {
        conn(&mut lab, p, 2); // in_pkts 2: 3 of 6 go
    }
    for p in 11..=16 {
        conn(&mut lab, p, 9); // in_pkts 9: none
    }
    conn(&mut lab, 21, 8); // in_pkts 8: the first of its count goes
    for p in 31..=33 {
        udp(&mut lab, p); // UDP, in_pkts 1: all go
    }
    for p in 41..=42 {
        for _ in 0..3 {
            udp(&mut lab, p); // in_pkts 3: 1 of 2 goes
        }
    }
    lab.advance(30);
    conn(&mut lab, 51, 2); // idle 31 s only when the defence runs: stays
    lab.advance(31);
    set_drop_entry(&mut lab, 3, 1024);
    // 19 entries: one 32nd is one entry a second.
    run(&mut lab, 19);
    let live = live(&lab);
    let count = |r: std::ops::RangeInclusive<u16>| live.iter().filter(|c| r.contains(&c.0)).count();
    assert_eq!(count(1..=6), 3, "in_pkts 2");
    assert_eq!(count(11..=16), 6, "in_pkts 9");
    assert_eq!(count(21..=21), 0, "in_pkts 8");
    assert_eq!(count(31..=33), 0, "UDP, in_pkts 1");
    assert_eq!(count(41..=42), 1, "UDP, in_pkts 3");
    assert_eq!(count(51..=51), 1, "idle < 60 s");
    assert_eq!(lab.engine.dropped_entries(), 3 + 1 + 3 + 1);
}

/// Templates: kept while they control connections; one that was never
/// ASSURED goes (`!(cp->state & IP_VS_CTPL_S_ASSURED)`), an ASSURED one
/// stays. Deleting a connection (`ip_vs_conn_del`: `cp->timeout = 0`)
/// takes its template with it if that then controls nothing and is not
/// ASSURED (`ip_vs_conn_expire`).
#[test]
fn drop_entry_takes_templates_that_were_never_assured() {
    let mut lab = lab(256, true);
    tcp(&mut lab, "10.77.0.3", 1, "S", b""); // W: SYN_RECV, ends at 60 s
    tcp(&mut lab, "10.77.0.4", 1, "S", b""); // Y: ESTABLISHED, idle
    tcp(&mut lab, "10.77.0.4", 1, "A", b"");
    tcp(&mut lab, "10.77.0.5", 1, "S", b""); // Z: closed, ends at 10 s
    tcp(&mut lab, "10.77.0.5", 1, "A", b"");
    tcp(&mut lab, "10.77.0.5", 1, "R", b"");
    lab.advance(61);
    lab.sweep();
    tcp(&mut lab, "10.77.0.6", 1, "S", b""); // X: SYN_RECV
    set_drop_entry(&mut lab, 3, 1024);
    run(&mut lab, 8);
    let mut templates = Vec::new();
    lab.engine.conns.for_each_live(|v| {
        if v.flags().is_template() {
            templates.push((v.caddr.to_string(), v.is_assured()));
        }
    });
    templates.sort();
    assert_eq!(
        templates,
        [
            ("10.77.0.4".to_string(), true),
            ("10.77.0.5".to_string(), true)
        ]
    );
    assert!(
        live(&lab).is_empty(),
        "Y's idle connection and X's half-open one"
    );
    // W's template; Y's connection; X's connection and its template.
    assert_eq!(lab.engine.dropped_entries(), 4);
}

/// `update_defense_level`: modes 1 and 2 act only while free memory is below
/// `amemthresh` (here: free connection entries), 3 always, 0 never.
#[test]
fn drop_entry_follows_memory_pressure() {
    // 8 half-open connections in a table of 64: 56 entries free. Below 60,
    // the defence runs until 4 are deleted (60 free, no pressure any more).
    for (mode, amemthresh, dropped) in [
        (1u8, 10u32, 0u64),
        (1, 60, 4),
        (2, 10, 0),
        (2, 60, 4),
        (0, 60, 0),
        (3, 10, 8),
    ] {
        let mut lab = lab(64, false);
        for p in 1..=8 {
            conn(&mut lab, p, 1);
        }
        set_drop_entry(&mut lab, mode, amemthresh);
        run(&mut lab, 10);
        assert_eq!(
            lab.engine.dropped_entries(),
            dropped,
            "mode {mode}, amemthresh {amemthresh}"
        );
    }
}

/// Templates of one-packet services (`ip_vs_conn_ops_mode`) count their
/// datagrams in `in_pkts` and go by `todrop_entry` like connections.
#[test]
fn drop_entry_thins_one_packet_templates_by_datagrams() {
    let mut lab = Lab::new(64);
    lab.cmd("-A -u 10.77.0.100:53 -s rr -o -p 300");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.13:53 -m");
    let dgram = |lab: &mut Lab, cip: &str| {
        let f = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (cip, 5000), (VIP, 53), b"q");
        assert_eq!(lab.send(&f, PORT_CLI).0, Verdict::Tx(PORT_RS));
    };
    dgram(&mut lab, "10.77.0.3"); // in_pkts 1: goes
    for _ in 0..9 {
        dgram(&mut lab, "10.77.0.4"); // in_pkts 9: stays
    }
    assert_eq!(lab.engine.conns.live(), 2, "two templates, no connection");
    lab.advance(61);
    set_drop_entry(&mut lab, 3, 1024);
    run(&mut lab, 2);
    let mut left = Vec::new();
    lab.engine
        .conns
        .for_each_live(|v| left.push(v.caddr.to_string()));
    assert_eq!(left, ["10.77.0.4"]);
    assert_eq!(
        lab.counts_of("-u", "10.77.0.100:53", "10.77.1.13:53"),
        (0, 0, 1)
    );
}
