//! sh, dh and mh behind ECMP: directors with the same dests, added in any
//! order, build the same table and send every client to the same real server
//! (xvs fills the tables in address order; the kernel in list order, which
//! the last test shows differs). Through the service table, as `-a`/`-e`/`-d`
//! build it.

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use xvs_core::addr::Addr;
use xvs_core::sched::{SchedInput, SchedParams, TableOrder};
use xvs_core::service::ServiceTable;
use xvs_core::service::{
    DestSpec, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec, SvcFlags,
};
use xvs_core::time::Time;

const KEY: ServiceKey = ServiceKey::Addr {
    proto: Protocol::Tcp,
    addr: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100)),
    port: 80,
};

/// A dest: address, port, weight.
type D = (IpAddr, u16, i32);

/// A director's table: the service with `dests` added in this order.
fn director(sched: SchedKind, flags: u32, dests: &[D], order: TableOrder) -> ServiceTable {
    let mut t = ServiceTable::new();
    t.set_sched_params(SchedParams {
        table_order: order,
        ..SchedParams::default()
    })
    .unwrap();
    let mut spec = ServiceSpec::new(KEY);
    spec.sched = sched;
    spec.flags = SvcFlags(flags);
    t.add_service(spec).unwrap();
    for &(a, p, w) in dests {
        let mut d = DestSpec::new(a, p);
        // Tunnel: the one method that takes dests of the other family.
        d.fwd = FwdMethod::Tunnel;
        d.weight = w;
        t.add_dest(&KEY, d).unwrap();
    }
    t
}

/// Client `i`: addresses over a /8 and both families' worth of ports.
fn client(i: u32) -> SchedInput {
    let a = Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 8));
    SchedInput {
        saddr: Addr::from(IpAddr::V4(a)),
        daddr: Addr::from(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100))),
        sport: (1024 + i.wrapping_mul(7919) % 60000) as u16,
        dport: 80,
        now: Time::ZERO,
    }
}

/// The (address, port) each of `n` clients is sent to, `None` for no dest.
fn picks(t: &ServiceTable, n: u32) -> Vec<Option<(IpAddr, u16)>> {
    let svc = t.get(&KEY).unwrap();
    (0..n)
        .map(|i| svc.schedule(&client(i)).map(|d| (d.addr, d.port)))
        .collect()
}

fn rs(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 1, i))
}

/// Every permutation of `v` (Heap's algorithm).
fn permutations<T: Clone>(v: &[T]) -> Vec<Vec<T>> {
    fn go<T: Clone>(k: usize, a: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            go(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut a = v.to_vec();
    let mut out = Vec::new();
    go(a.len(), &mut a, &mut out);
    out
}

const SCHEDS: [(SchedKind, u32); 5] = [
    (SchedKind::Mh, 0),
    (SchedKind::Mh, SvcFlags::SCHED2),
    (SchedKind::Mh, SvcFlags::SCHED1 | SvcFlags::SCHED2),
    (SchedKind::Sh, 0),
    (SchedKind::Sh, SvcFlags::SCHED2),
];

#[test]
fn every_insertion_order_gives_the_same_picks() {
    // Five dests with unequal weights (mh's turns, sh's runs), one of them an
    // IPv4 dest on another port, every one of the 120 orders.
    let dests: Vec<D> = vec![
        (rs(11), 80, 3),
        (rs(12), 80, 1),
        (rs(13), 8080, 2),
        (rs(13), 80, 1),
        (rs(14), 80, 5),
    ];
    for (sched, flags) in SCHEDS {
        let want = picks(&director(sched, flags, &dests, TableOrder::Address), 2000);
        assert!(want.iter().all(Option::is_some));
        for (k, order) in permutations(&dests).iter().enumerate() {
            let t = director(sched, flags, order, TableOrder::Address);
            assert!(
                picks(&t, 2000) == want,
                "{sched:?} flags {flags}: order #{k} {order:?} sends some client elsewhere"
            );
        }
    }
}

#[test]
fn dh_agrees_in_every_order() {
    // dh hashes the packet's destination: a fwmark-style spread of VIPs.
    let dests: Vec<D> = (11..16).map(|i| (rs(i), 80, 1)).collect();
    let pick_all = |t: &ServiceTable| -> Vec<Option<IpAddr>> {
        let svc = t.get(&KEY).unwrap();
        (0..512u32)
            .map(|i| {
                let mut inp = client(i);
                inp.daddr = Addr::from(IpAddr::V4(Ipv4Addr::from(0x0a4d_0000 + i)));
                svc.schedule(&inp).map(|d| d.addr)
            })
            .collect()
    };
    let want = pick_all(&director(SchedKind::Dh, 0, &dests, TableOrder::Address));
    for order in permutations(&dests) {
        assert_eq!(
            pick_all(&director(SchedKind::Dh, 0, &order, TableOrder::Address)),
            want
        );
    }
}

#[test]
fn history_does_not_matter_only_the_dests_do() {
    // Director A: four dests, then rs12 quiesced, deleted and re-added (the
    // kernel puts it back at the list head). Director B: the end state added
    // at once in another order. Same picks.
    for (sched, flags) in SCHEDS {
        let mut a = director(
            sched,
            flags,
            &[
                (rs(11), 80, 2),
                (rs(12), 80, 2),
                (rs(13), 80, 2),
                (rs(14), 80, 2),
            ],
            TableOrder::Address,
        );
        let mut d = DestSpec::new(rs(12), 80);
        d.weight = 0;
        a.edit_dest(&KEY, d.clone()).unwrap();
        a.del_dest(&KEY, rs(12), 80).unwrap();
        d.weight = 2;
        a.add_dest(&KEY, d).unwrap();
        let b = director(
            sched,
            flags,
            &[
                (rs(14), 80, 2),
                (rs(12), 80, 2),
                (rs(11), 80, 2),
                (rs(13), 80, 2),
            ],
            TableOrder::Address,
        );
        assert!(picks(&a, 3000) == picks(&b, 3000), "{sched:?} {flags}");
    }
}

#[test]
fn ipv6_and_mixed_family_dests_agree_too() {
    let v6 = |h: u16| IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 1, h));
    // An IPv4 service with IPv6 tunnel dests hashes their first word: the
    // order still decides collisions, and address order fixes it.
    let dests: Vec<D> = vec![
        (v6(0x11), 80, 1),
        (rs(11), 80, 1),
        (v6(0x12), 80, 2),
        (rs(12), 80, 1),
    ];
    let want = picks(
        &director(SchedKind::Mh, 0, &dests, TableOrder::Address),
        2000,
    );
    for order in permutations(&dests) {
        let t = director(SchedKind::Mh, 0, &order, TableOrder::Address);
        assert!(picks(&t, 2000) == want, "order {order:?}");
    }
}

#[test]
fn the_kernels_list_order_does_depend_on_insertion_order() {
    // What the address order is for: in list order (the kernel's), some
    // insertion orders of the same dests send clients elsewhere.
    let dests: Vec<D> = (11..15).map(|i| (rs(i), 80, 1)).collect();
    for sched in [SchedKind::Mh, SchedKind::Sh] {
        let first = picks(&director(sched, 0, &dests, TableOrder::List), 2000);
        let differing = permutations(&dests)
            .iter()
            .filter(|o| picks(&director(sched, 0, o, TableOrder::List), 2000) != first)
            .count();
        assert!(
            differing > 0,
            "{sched:?}: list order gave one table for every order"
        );
        eprintln!("{sched:?}, kernel list order: {differing} of 24 insertion orders disagree with the first");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Up to 40 dests with random weights (some quiesced) in a random order:
    /// the same picks as in ascending order.
    #[test]
    fn mh_random_lists_agree(
        ws in prop::collection::vec(0i32..20, 1..40),
        seed in any::<u64>(),
        port_flag in any::<bool>(),
    ) {
        let dests: Vec<D> = ws.iter().enumerate().map(|(i, &w)| {
            (IpAddr::V4(Ipv4Addr::from(0x0a4d_0100u32 + i as u32 * 3)), 80, w)
        }).collect();
        let mut shuffled = dests.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let flags = if port_flag { SvcFlags::SCHED2 } else { 0 };
        let a = director(SchedKind::Mh, flags, &dests, TableOrder::Address);
        let b = director(SchedKind::Mh, flags, &shuffled, TableOrder::Address);
        prop_assert!(picks(&a, 500) == picks(&b, 500));
    }
}
