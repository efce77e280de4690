//! Ids are reused; objects are not. A new service or dest starts with zero
//! counters and no rate history even when it gets the id of an old one, a
//! revived trash dest keeps its counters (as in the kernel), and a FULLNAT
//! local address removed from the rules frees its id once no connection holds
//! it, and only then.

mod common;
use common::*;
use std::sync::Arc;
use xvs_core::conn::MAX_LIPS;
use xvs_core::engine::{Rates, Totals, Verdict};
use xvs_core::service::ServiceTable;

const VIP: &str = "10.77.0.100";
const CIP: &str = "10.77.0.2";

/// A lab whose table has room for `services` services and `dests` dests, so
/// that ids must be reused.
fn small_lab(services: usize, dests: usize) -> Lab {
    let mut lab = Lab::new(1024);
    lab.table = ServiceTable::with_limits(services, dests);
    lab
}

/// One established NAT connection from client port `cport`, with data.
fn traffic(lab: &mut Lab, cport: u16, rip: &str, rport: u16) {
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, cport), (VIP, 80), "S", b"");
    assert_eq!(lab.send(&syn, PORT_CLI).0, Verdict::Tx(PORT_RS));
    let rs = rs_mac(rip.rsplit('.').next().unwrap().parse().unwrap());
    let synack = tcp_frame(rs, DIR_RS_MAC, (rip, rport), (CIP, cport), "SA", b"");
    assert_eq!(lab.send(&synack, PORT_RS).0, Verdict::Tx(PORT_CLI));
    let data = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, cport), (VIP, 80), "A", b"x");
    assert_eq!(lab.send(&data, PORT_CLI).0, Verdict::Tx(PORT_RS));
}

fn svc_id(lab: &Lab) -> u32 {
    lab.table
        .get(&parse_svc("-t", "10.77.0.100:80"))
        .unwrap()
        .id
}

fn dest_id(lab: &Lab, rip: &str) -> u32 {
    let svc = lab.table.get(&parse_svc("-t", "10.77.0.100:80")).unwrap();
    svc.dest(&ip(rip), 80).unwrap().id
}

/// Traffic for a few estimator periods, so that rates are not zero.
fn traffic_with_rates(lab: &mut Lab, rip: &str) {
    for i in 0..4 {
        traffic(lab, 41000 + i, rip, 80);
        lab.advance(2);
        lab.sweep();
    }
}

#[test]
fn a_new_service_with_a_reused_id_starts_at_zero() {
    let mut lab = small_lab(1, 8);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    traffic_with_rates(&mut lab, "10.77.1.11");
    let old = svc_id(&lab);
    assert_eq!(lab.engine.service_totals(old).conns, 4);
    assert_ne!(lab.engine.service_rates(old), Rates::default());
    lab.cmd("-D -t 10.77.0.100:80");
    lab.cmd("-A -t 10.77.0.100:80 -s wlc");
    assert_eq!(svc_id(&lab), old, "one id only: it is reused");
    assert_eq!(lab.engine.service_totals(old), Totals::default());
    assert_eq!(lab.engine.service_rates(old), Rates::default());
    lab.advance(2);
    lab.sweep();
    assert_eq!(lab.engine.service_rates(old), Rates::default());
    // It counts its own traffic from zero.
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -m");
    traffic(&mut lab, 42000, "10.77.1.12", 80);
    assert_eq!(lab.engine.service_totals(old).conns, 1);
}

#[test]
fn a_deleted_service_id_is_reused_last() {
    let mut lab = Lab::new(1024);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    traffic(&mut lab, 40000, "10.77.1.11", 80);
    let old = svc_id(&lab);
    // Its connections outlive the service and keep counting on its id: a new
    // service must not get it while others are free.
    lab.cmd("-D -t 10.77.0.100:80");
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    assert_ne!(svc_id(&lab), old);
    assert_eq!(lab.engine.service_totals(svc_id(&lab)), Totals::default());
}

#[test]
fn a_new_dest_with_a_reused_id_starts_at_zero() {
    let mut lab = small_lab(4, 1);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    traffic_with_rates(&mut lab, "10.77.1.11");
    let old = dest_id(&lab, "10.77.1.11");
    assert_eq!(lab.engine.dest_totals(old).conns, 4);
    assert_ne!(lab.engine.dest_rates(old), Rates::default());
    // The dest goes; once its connections are gone the trash frees its id.
    lab.cmd("-d -t 10.77.0.100:80 -r 10.77.1.11:80");
    lab.advance(1000);
    lab.sweep();
    lab.table.purge_trash();
    lab.publish();
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.12:80 -m");
    assert_eq!(
        dest_id(&lab, "10.77.1.12"),
        old,
        "one id only: it is reused"
    );
    assert_eq!(lab.engine.dest_totals(old), Totals::default());
    assert_eq!(lab.engine.dest_rates(old), Rates::default());
    traffic(&mut lab, 42000, "10.77.1.12", 80);
    assert_eq!(lab.engine.dest_totals(old).conns, 1);
}

#[test]
fn a_revived_trash_dest_keeps_its_counters() {
    let mut lab = Lab::new(1024);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    traffic(&mut lab, 40000, "10.77.1.11", 80);
    let id = dest_id(&lab, "10.77.1.11");
    let before = lab.engine.dest_totals(id);
    let obj = lab.table.dest_by_id(id).unwrap().clone();
    lab.cmd("-d -t 10.77.0.100:80 -r 10.77.1.11:80");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    assert!(Arc::ptr_eq(lab.table.dest_by_id(id).unwrap(), &obj));
    assert_eq!(lab.engine.dest_totals(id), before);
    assert_eq!(before.conns, 1);
}

#[test]
fn zeroing_restarts_counters_and_rates() {
    let mut lab = Lab::new(1024);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    traffic_with_rates(&mut lab, "10.77.1.11");
    let (s, d) = (svc_id(&lab), dest_id(&lab, "10.77.1.11"));
    lab.engine.zero_service(s);
    lab.engine.zero_dest(d);
    assert_eq!(lab.engine.service_totals(s), Totals::default());
    assert_eq!(lab.engine.dest_totals(d), Totals::default());
    assert_eq!(lab.engine.service_rates(s), Rates::default());
    traffic(&mut lab, 43000, "10.77.1.11", 80);
    assert_eq!(lab.engine.service_totals(s).conns, 1);
}

fn fullnat_lab() -> Lab {
    let mut lab = Lab::new(1024);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.14:80 --fullnat");
    lab
}

fn set_laddrs(lab: &mut Lab, addrs: &[std::net::IpAddr]) {
    lab.rules.laddrs = vec![(parse_svc("-t", "10.77.0.100:80"), addrs.to_vec())];
    lab.publish();
}

/// The ids of the service's local addresses in force.
fn lips(lab: &Lab) -> Vec<u16> {
    lab.engine.snapshot().lips(svc_id(lab)).to_vec()
}

#[test]
fn removed_local_addresses_free_their_ids() {
    let mut lab = fullnat_lab();
    // Over the daemon's life, more addresses than there are ids come and go.
    for i in 0..(MAX_LIPS + 500) {
        let a = ip(&format!("10.78.{}.{}", i / 250, i % 250 + 1));
        set_laddrs(&mut lab, &[a]);
        let ids = lips(&lab);
        assert_eq!(ids.len(), 1, "address {i} ({a}) has an id");
        assert_eq!(lab.engine.conns.lip(ids[0]), a.into());
        // Two complete sweeps after its removal, an unused id is free again.
        set_laddrs(&mut lab, &[]);
        lab.sweep();
        lab.sweep();
    }
    assert_eq!(lab.engine.lips_retired(), 0);
    assert_eq!(lab.engine.lip_ids_held(), 0);
}

#[test]
fn a_local_address_id_held_by_a_connection_is_kept() {
    let mut lab = fullnat_lab();
    let (a1, a2, a3) = (ip("10.77.1.200"), ip("10.77.1.201"), ip("10.77.1.202"));
    set_laddrs(&mut lab, &[a1]);
    let l1 = lips(&lab)[0];
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40003), (VIP, 80), "S", b"");
    let (v, out) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let lport = seen(&out).sport;
    // a1 leaves the rules while its connection lives.
    set_laddrs(&mut lab, &[a2]);
    assert_ne!(lips(&lab), [l1], "a new address does not take a held id");
    for _ in 0..4 {
        lab.sweep();
    }
    assert_eq!(lab.engine.lips_retired(), 1);
    // The connection still works both ways, through its id's address.
    let synack = tcp_frame(
        rs_mac(14),
        DIR_RS_MAC,
        ("10.77.1.14", 80),
        ("10.77.1.200", lport),
        "SA",
        b"",
    );
    assert_eq!(lab.send(&synack, PORT_RS).0, Verdict::Tx(PORT_CLI));
    set_laddrs(&mut lab, &[a2, a3]);
    assert!(!lips(&lab).contains(&l1));
    // Once the connection has expired and two sweeps found no holder, the id
    // is free for another address.
    lab.advance(1000);
    lab.sweep();
    assert_eq!(lab.engine.conns.live(), 0);
    lab.sweep();
    lab.sweep();
    assert_eq!(lab.engine.lips_retired(), 0);
    let a4 = ip("10.77.1.203");
    set_laddrs(&mut lab, &[a2, a3, a4]);
    let ids = lips(&lab);
    assert!(ids.contains(&l1), "{ids:?}");
    assert_eq!(lab.engine.conns.lip(l1), a4.into());
}

#[test]
fn a_retired_local_address_added_back_keeps_its_id() {
    let mut lab = fullnat_lab();
    let a1 = ip("10.77.1.200");
    set_laddrs(&mut lab, &[a1]);
    let l1 = lips(&lab)[0];
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 40003), (VIP, 80), "S", b"");
    assert_eq!(lab.send(&syn, PORT_CLI).0, Verdict::Tx(PORT_RS));
    set_laddrs(&mut lab, &[]);
    lab.sweep();
    set_laddrs(&mut lab, &[a1]);
    assert_eq!(lips(&lab), [l1]);
    assert_eq!(lab.engine.lips_retired(), 0);
}
