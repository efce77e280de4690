//! The service table: every validation case (kernel and ipvsadm), dest ids, the
//! trash and revival, snapshots.

use std::net::IpAddr;
use std::sync::Arc;
use xvs_core::addr::Addr;
use xvs_core::sched::{mh, SchedInput, SchedParams};
use xvs_core::service::ServiceTable;
use xvs_core::service::{
    Af, DestSpec, FwdMethod, Protocol, SchedKind, ServiceError, ServiceKey, ServiceSpec, SvcFlags,
};
use xvs_core::time::Time;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: ip(addr),
        port,
    }
}

fn udp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Addr {
        proto: Protocol::Udp,
        addr: ip(addr),
        port,
    }
}

fn svc(key: ServiceKey, sched: SchedKind) -> ServiceSpec {
    let mut s = ServiceSpec::new(key);
    s.sched = sched;
    s
}

fn dest(addr: &str, w: i32) -> DestSpec {
    let mut d = DestSpec::new(ip(addr), 80);
    d.weight = w;
    d
}

fn table_with(key: ServiceKey) -> ServiceTable {
    let mut t = ServiceTable::new();
    t.add_service(ServiceSpec::new(key)).unwrap();
    t
}

#[test]
fn service_errors() {
    let k = tcp("10.77.0.1", 80);
    let mut t = table_with(k);
    assert_eq!(
        t.add_service(ServiceSpec::new(k)),
        Err(ServiceError::ServiceExists)
    );
    let other = tcp("10.77.0.2", 80);
    assert_eq!(
        t.edit_service(ServiceSpec::new(other)),
        Err(ServiceError::NoSuchService)
    );
    assert_eq!(t.del_service(&other), Err(ServiceError::NoSuchService));
    // Same address and port but UDP, or the same mark in IPv6: other services.
    t.add_service(ServiceSpec::new(udp("10.77.0.1", 80)))
        .unwrap();
    t.add_service(ServiceSpec::new(ServiceKey::Fwmark {
        mark: 1,
        af: Af::V4,
    }))
    .unwrap();
    t.add_service(ServiceSpec::new(ServiceKey::Fwmark {
        mark: 1,
        af: Af::V6,
    }))
    .unwrap();
    assert_eq!(
        t.add_service(ServiceSpec::new(ServiceKey::Fwmark {
            mark: 1,
            af: Af::V4
        })),
        Err(ServiceError::ServiceExists)
    );
}

#[test]
fn dest_errors() {
    let k = tcp("10.77.0.1", 80);
    let mut t = table_with(k);
    let missing = tcp("10.77.0.9", 80);
    let d = dest("10.77.1.1", 1);
    assert_eq!(
        t.add_dest(&missing, d.clone()),
        Err(ServiceError::ServiceNotDefined)
    );
    assert_eq!(
        t.edit_dest(&missing, d.clone()),
        Err(ServiceError::ServiceNotDefined)
    );
    assert_eq!(
        t.del_dest(&missing, d.addr, 80),
        Err(ServiceError::ServiceNotDefined)
    );
    assert_eq!(t.edit_dest(&k, d.clone()), Err(ServiceError::NoSuchDest));
    assert_eq!(t.del_dest(&k, d.addr, 80), Err(ServiceError::NoSuchDest));
    t.add_dest(&k, d.clone()).unwrap();
    assert_eq!(t.add_dest(&k, d.clone()), Err(ServiceError::DestExists));
    // Another port on the same address is another dest.
    let mut d81 = d.clone();
    d81.port = 81;
    t.add_dest(&k, d81).unwrap();
    assert_eq!(t.del_dest(&k, d.addr, 82), Err(ServiceError::NoSuchDest));
}

#[test]
fn weight_and_threshold_ranges() {
    let k = tcp("10.77.0.1", 80);
    let mut t = table_with(k);
    // ipvsadm: -w 0..65535 ("illegal weight specified").
    assert_eq!(
        t.add_dest(&k, dest("10.77.1.1", 65536)),
        Err(ServiceError::Invalid)
    );
    // kernel: weight < 0 is ERANGE.
    assert_eq!(
        t.add_dest(&k, dest("10.77.1.1", -1)),
        Err(ServiceError::ThresholdRange)
    );
    t.add_dest(&k, dest("10.77.1.1", 65535)).unwrap();
    t.add_dest(&k, dest("10.77.1.2", 0)).unwrap();
    // kernel: l_threshold > u_threshold is ERANGE (also with no upper threshold).
    let mut d = dest("10.77.1.3", 1);
    d.l_threshold = 5;
    assert_eq!(t.add_dest(&k, d.clone()), Err(ServiceError::ThresholdRange));
    d.u_threshold = 4;
    assert_eq!(t.add_dest(&k, d.clone()), Err(ServiceError::ThresholdRange));
    d.u_threshold = 5;
    t.add_dest(&k, d.clone()).unwrap();
    d.l_threshold = 6;
    assert_eq!(
        t.edit_dest(&k, d.clone()),
        Err(ServiceError::ThresholdRange)
    );
    d.l_threshold = 0;
    d.weight = 70000;
    assert_eq!(t.edit_dest(&k, d.clone()), Err(ServiceError::Invalid));
    d.weight = -5;
    assert_eq!(t.edit_dest(&k, d), Err(ServiceError::ThresholdRange));
    let g = t.generation();
    assert_eq!(
        t.add_dest(&k, dest("10.77.1.9", -1)),
        Err(ServiceError::ThresholdRange)
    );
    assert_eq!(t.generation(), g, "a refused change is no change");
}

#[test]
fn address_family_mix_only_for_tunnels() {
    let k = tcp("10.77.0.1", 80);
    let mut t = table_with(k);
    let mut d = dest("fd77::1:1", 1);
    assert_eq!(t.add_dest(&k, d.clone()), Err(ServiceError::Invalid));
    d.fwd = FwdMethod::Masq;
    assert_eq!(t.add_dest(&k, d.clone()), Err(ServiceError::Invalid));
    d.fwd = FwdMethod::Tunnel;
    t.add_dest(&k, d.clone()).unwrap();
    d.fwd = FwdMethod::Route;
    assert_eq!(t.edit_dest(&k, d), Err(ServiceError::Invalid));
    let k6 = tcp("fd77::100", 80);
    t.add_service(ServiceSpec::new(k6)).unwrap();
    assert_eq!(
        t.add_dest(&k6, dest("10.77.1.1", 1)),
        Err(ServiceError::Invalid)
    );
}

#[test]
fn dest_must_be_unicast() {
    let k = tcp("10.77.0.1", 80);
    let mut t = table_with(k);
    for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1"] {
        assert_eq!(
            t.add_dest(&k, dest(bad, 1)),
            Err(ServiceError::Invalid),
            "{bad}"
        );
    }
    let k6 = tcp("fd77::100", 80);
    t.add_service(ServiceSpec::new(k6)).unwrap();
    for bad in ["::", "ff02::1", "fe80::1"] {
        assert_eq!(
            t.add_dest(&k6, dest(bad, 1)),
            Err(ServiceError::Invalid),
            "{bad}"
        );
    }
    t.add_dest(&k6, dest("::1", 1)).unwrap();
    t.add_dest(&k, dest("127.0.0.1", 1)).unwrap();
}

#[test]
fn service_flag_checks() {
    let mut t = ServiceTable::new();
    // "Zero port specified for non-persistent service"
    assert_eq!(
        t.add_service(ServiceSpec::new(tcp("10.77.0.1", 0))),
        Err(ServiceError::Invalid)
    );
    let mut s = ServiceSpec::new(tcp("10.77.0.1", 0));
    s.flags = SvcFlags(SvcFlags::PERSISTENT);
    s.timeout = 360;
    t.add_service(s.clone()).unwrap();
    s.flags = SvcFlags(0);
    assert_eq!(t.edit_service(s), Err(ServiceError::Invalid));
    // "One-Packet Scheduling is only for UDP virtual services" (fwmark allowed).
    let mut s = ServiceSpec::new(tcp("10.77.0.2", 80));
    s.flags = SvcFlags(SvcFlags::ONEPACKET);
    assert_eq!(t.add_service(s.clone()), Err(ServiceError::Invalid));
    s.key = udp("10.77.0.2", 53);
    t.add_service(s.clone()).unwrap();
    s.key = ServiceKey::Fwmark {
        mark: 7,
        af: Af::V4,
    };
    t.add_service(s).unwrap();
    // Unknown flag bits (HASHED is the kernel's, 0x40 nobody's) are refused; the three
    // scheduler flags are accepted with any scheduler (ipvsadm's flag-1..flag-3).
    for bad in [0x2, 0x40, 0x100] {
        let mut s = ServiceSpec::new(tcp("10.77.0.3", 80));
        s.flags = SvcFlags(bad);
        assert_eq!(
            t.add_service(s),
            Err(ServiceError::Invalid),
            "flags {bad:#x}"
        );
    }
    let mut s = svc(tcp("10.77.0.3", 80), SchedKind::Rr);
    s.flags = SvcFlags(SvcFlags::SCHED_MASK);
    t.add_service(s).unwrap();
    // IPv6 persistence prefix 1..128.
    let mut s = ServiceSpec::new(tcp("fd77::1", 80));
    s.netmask = 0;
    assert_eq!(t.add_service(s.clone()), Err(ServiceError::Invalid));
    s.netmask = 129;
    assert_eq!(t.add_service(s.clone()), Err(ServiceError::Invalid));
    s.netmask = 64;
    t.add_service(s.clone()).unwrap();
    s.netmask = 200;
    assert_eq!(t.edit_service(s), Err(ServiceError::Invalid));
}

#[test]
fn mh_table_bounds_the_dest_count() {
    let mut t = ServiceTable::new();
    assert_eq!(
        t.set_sched_params(SchedParams {
            mh_table_size: 4000,
            ..SchedParams::default()
        }),
        Err(ServiceError::Invalid)
    );
    t.set_sched_params(SchedParams {
        mh_table_size: 251,
        ..SchedParams::default()
    })
    .unwrap();
    let k = tcp("10.77.0.1", 80);
    t.add_service(svc(k, SchedKind::Mh)).unwrap();
    let rr = tcp("10.77.0.2", 80);
    t.add_service(svc(rr, SchedKind::Rr)).unwrap();
    for i in 0..251u32 {
        let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a4d_0100 + i));
        t.add_dest(&k, DestSpec::new(a, 80)).unwrap();
        t.add_dest(&rr, DestSpec::new(a, 80)).unwrap();
    }
    let extra = DestSpec::new(ip("10.77.9.9"), 80);
    assert_eq!(t.add_dest(&k, extra.clone()), Err(ServiceError::Invalid));
    t.add_dest(&rr, extra).unwrap();
    // -E rr -> mh with 252 dests: refused, the service keeps rr.
    assert_eq!(
        t.edit_service(svc(rr, SchedKind::Mh)),
        Err(ServiceError::Invalid)
    );
    assert_eq!(t.get(&rr).unwrap().sched.kind(), SchedKind::Rr);
    assert_eq!(t.get(&k).unwrap().sched.dest_limit(), 251);
    assert!(mh::PRIMES.contains(&131071));
}

#[test]
fn dest_ids_trash_revive_and_reuse() {
    let k = tcp("10.77.0.1", 80);
    let mut t = table_with(k);
    for (i, a) in ["10.77.1.1", "10.77.1.2", "10.77.1.3"].iter().enumerate() {
        t.add_dest(&k, dest(a, 1)).unwrap();
        assert_eq!(t.get(&k).unwrap().dest(&ip(a), 80).unwrap().id, i as u32);
    }
    // Kernel order: newest first.
    let order: Vec<u32> = t.get(&k).unwrap().dests.iter().map(|d| d.id).collect();
    assert_eq!(order, [2, 1, 0]);
    let b = t
        .get(&k)
        .unwrap()
        .dest(&ip("10.77.1.2"), 80)
        .unwrap()
        .clone();
    b.bind_conn(false);
    b.conn_activated();
    b.bind_conn(true);
    let old_snapshot = t.get(&k).unwrap().clone();
    t.del_dest(&k, ip("10.77.1.2"), 80).unwrap();
    // Gone from the service, unavailable, still reachable by id (the trash).
    assert!(t.get(&k).unwrap().dest(&ip("10.77.1.2"), 80).is_none());
    assert!(!b.is_available());
    assert!(Arc::ptr_eq(t.dest_by_id(1).unwrap(), &b));
    assert_eq!(t.trash_len(), 1);
    // The old snapshot is untouched.
    assert_eq!(old_snapshot.dests.len(), 3);
    // A new dest does not take a trash dest's id.
    t.add_dest(&k, dest("10.77.1.4", 1)).unwrap();
    assert_eq!(t.get(&k).unwrap().dest(&ip("10.77.1.4"), 80).unwrap().id, 3);
    // Re-adding B revives the same object with its counters, the new weight and
    // thresholds, available again, at the head of the list.
    let mut spec = dest("10.77.1.2", 0);
    spec.u_threshold = 10;
    t.add_dest(&k, spec).unwrap();
    let svc = t.get(&k).unwrap().clone();
    assert!(Arc::ptr_eq(&svc.dests[0], &b));
    assert_eq!((b.id, b.activeconns(), b.persistconns()), (1, 1, 1));
    assert!(b.is_available());
    assert_eq!((b.weight(), b.last_weight(), b.u_threshold()), (0, 0, 10));
    assert_eq!(t.trash_len(), 0);
    // purge_trash frees only unreferenced trash dests.
    t.del_dest(&k, ip("10.77.1.2"), 80).unwrap();
    t.del_dest(&k, ip("10.77.1.1"), 80).unwrap();
    let g = t.generation();
    t.purge_trash();
    assert_eq!(t.generation(), g + 1);
    assert!(t.dest_by_id(0).is_none(), "A had no conns: freed");
    assert!(t.dest_by_id(1).is_some(), "B still has conns");
    // The lowest free id is reused.
    t.add_dest(&k, dest("10.77.1.5", 1)).unwrap();
    assert_eq!(t.get(&k).unwrap().dest(&ip("10.77.1.5"), 80).unwrap().id, 0);
    b.unbind_conn(false, true);
    b.unbind_conn(true, false);
    t.purge_trash();
    assert!(t.dest_by_id(1).is_none());
    let ids: Vec<u32> = t.all_dests().map(|(id, _)| id).collect();
    assert_eq!(ids, [0, 2, 3]);
    let g = t.generation();
    t.purge_trash();
    assert_eq!(t.generation(), g, "nothing purged, no change");
}

#[test]
fn deleting_a_service_trashes_its_dests_and_readding_revives() {
    let k = tcp("10.77.0.1", 80);
    let k2 = tcp("10.77.0.2", 80);
    let mut t = table_with(k);
    t.add_service(ServiceSpec::new(k2)).unwrap();
    t.add_dest(&k, dest("10.77.1.1", 3)).unwrap();
    let a = t.get(&k).unwrap().dests[0].clone();
    a.bind_conn(false);
    t.del_service(&k).unwrap();
    assert!(!a.is_available());
    assert!(t.get(&k).is_none());
    assert!(t.dest_by_id(a.id).is_some());
    // The same address in another service is a new dest.
    t.add_dest(&k2, dest("10.77.1.1", 1)).unwrap();
    let other = t.get(&k2).unwrap().dests[0].clone();
    assert!(!Arc::ptr_eq(&other, &a));
    assert_ne!(other.id, a.id);
    // The service comes back (a new id: never-used ids go before freed ones,
    // whose connections may still count on them), the dest is revived.
    t.add_service(ServiceSpec::new(k)).unwrap();
    assert_eq!(t.get(&k).unwrap().id, 2);
    t.add_dest(&k, dest("10.77.1.1", 2)).unwrap();
    let back = t.get(&k).unwrap().dests[0].clone();
    assert!(Arc::ptr_eq(&back, &a));
    assert_eq!((back.inactconns(), back.weight()), (1, 2));
}

#[test]
fn limits() {
    let mut t = ServiceTable::with_limits(2, 3);
    let (k1, k2, k3) = (
        tcp("10.77.0.1", 80),
        tcp("10.77.0.2", 80),
        tcp("10.77.0.3", 80),
    );
    t.add_service(ServiceSpec::new(k1)).unwrap();
    t.add_service(ServiceSpec::new(k2)).unwrap();
    assert_eq!(
        t.add_service(ServiceSpec::new(k3)),
        Err(ServiceError::NoMemory)
    );
    t.add_dest(&k1, dest("10.77.1.1", 1)).unwrap();
    t.add_dest(&k1, dest("10.77.1.2", 1)).unwrap();
    t.add_dest(&k2, dest("10.77.1.3", 1)).unwrap();
    assert_eq!(
        t.add_dest(&k2, dest("10.77.1.4", 1)),
        Err(ServiceError::NoMemory)
    );
    // Trash dests hold their ids until purged.
    t.del_dest(&k1, ip("10.77.1.1"), 80).unwrap();
    assert_eq!(
        t.add_dest(&k2, dest("10.77.1.4", 1)),
        Err(ServiceError::NoMemory)
    );
    t.purge_trash();
    t.add_dest(&k2, dest("10.77.1.4", 1)).unwrap();
    // A freed service id is reused when no other is left.
    t.del_service(&k1).unwrap();
    t.add_service(ServiceSpec::new(k3)).unwrap();
    assert_eq!(t.get(&k3).unwrap().id, 0);
}

#[test]
fn edit_service_replaces_settings_and_keeps_place_and_id() {
    let (k1, k2) = (tcp("10.77.0.1", 80), tcp("10.77.0.2", 80));
    let mut t = ServiceTable::new();
    let mut s = svc(k1, SchedKind::Sh);
    s.flags = SvcFlags(SvcFlags::PERSISTENT | SvcFlags::SCHED1);
    s.timeout = 600;
    s.netmask = 0xffff_ff00;
    t.add_service(s).unwrap();
    t.add_service(ServiceSpec::new(k2)).unwrap();
    t.add_dest(&k1, dest("10.77.1.1", 1)).unwrap();
    let g = t.generation();
    // -E without options: wlc, no flags, default netmask (everything replaced).
    t.edit_service(ServiceSpec::new(k1)).unwrap();
    assert_eq!(t.generation(), g + 1);
    let s1 = &t.services()[0];
    assert_eq!(s1.spec, ServiceSpec::new(k1));
    assert_eq!(s1.sched.kind(), SchedKind::Wlc);
    assert_eq!(s1.id, 0);
    assert_eq!(s1.dests.len(), 1);
    let keys: Vec<ServiceKey> = t.services().iter().map(|s| s.spec.key).collect();
    assert_eq!(keys, [k1, k2]);
    t.clear();
    assert!(t.services().is_empty());
    assert_eq!(t.trash_len(), 1);
    t.add_service(ServiceSpec::new(k2)).unwrap();
    assert_eq!(t.get(&k2).unwrap().id, 2, "never-used ids first");
    // Then freed ids, oldest freed first.
    let mut t = ServiceTable::with_limits(3, 8);
    for k in [k1, k2, tcp("10.77.0.3", 80)] {
        t.add_service(ServiceSpec::new(k)).unwrap();
    }
    t.del_service(&k2).unwrap();
    t.del_service(&k1).unwrap();
    t.add_service(ServiceSpec::new(k1)).unwrap();
    assert_eq!(t.get(&k1).unwrap().id, 1);
    t.add_service(ServiceSpec::new(k2)).unwrap();
    assert_eq!(t.get(&k2).unwrap().id, 0);
    assert_ne!(t.get(&k1).unwrap().serial, t.get(&k2).unwrap().serial);
}

#[test]
fn old_snapshots_keep_scheduling() {
    let k = tcp("10.77.0.1", 80);
    let mut t = table_with(k);
    t.edit_service(svc(k, SchedKind::Rr)).unwrap();
    t.add_dest(&k, dest("10.77.1.1", 1)).unwrap();
    t.add_dest(&k, dest("10.77.1.2", 1)).unwrap();
    let old = t.get(&k).unwrap().clone();
    t.del_dest(&k, ip("10.77.1.2"), 80).unwrap();
    let new = t.get(&k).unwrap().clone();
    let inp = SchedInput {
        saddr: Addr::v4([10, 0, 0, 1]),
        daddr: Addr::v4([10, 77, 0, 1]),
        sport: 1,
        dport: 80,
        now: Time::ZERO,
    };
    // The old snapshot still has both dests and its own cursor.
    assert_eq!(old.schedule(&inp).unwrap().addr, ip("10.77.1.2"));
    assert_eq!(old.schedule(&inp).unwrap().addr, ip("10.77.1.1"));
    assert_eq!(new.schedule(&inp).unwrap().addr, ip("10.77.1.1"));
    assert_eq!(new.schedule(&inp).unwrap().addr, ip("10.77.1.1"));
}
