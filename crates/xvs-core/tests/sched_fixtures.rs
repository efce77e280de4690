//! sh, dh and mh lookup tables (and picks) identical to the Linux kernel's.
//!
//! Ground truth in `tests/fixtures/sched/*.txt` does not come from xvs: it is the
//! output of `tests/fixtures/sched/harness/harness.c`, which transcribes, from
//! torvalds/linux, `ip_vs_mh.c` (hashkey, permutate, populate, get, get_fallback,
//! gcd/shift weight), `ip_vs_sh.c` (hashkey, reassign, get, get_fallback),
//! `ip_vs_dh.c` (hashkey, reassign, schedule), `lib/siphash.c` (the 64-bit
//! `__hsiphash_unaligned`, i.e. SipHash-1-3, checked against the SipHash-2-4 reference
//! vectors with the same rounds) and `include/linux/hash.h` (`hash_32`), over a real
//! `struct list_head` dest list. `make sched-fixtures` compiles it and re-derives
//! every fixture from its inputs (dests and clients), byte for byte.
//!
//! Fixture format: `dest <addr> <port> <weight> <last_weight> <overloaded> <unavailable>`
//! lines in kernel list order (index 0 = list head), `digest` = FNV-1a 64 over the
//! table's dest indices (u32 LE, -1 for empty), `table` = one char per slot
//! (`0-9a-zA-Z` = dest index, `-` = empty; omitted for the 131071 table), then
//! `pick <svc flags> <client/dest addr> <client port> <dest index | ->` lines: what the
//! kernel's schedule function returned for that packet (`flags` 8 = fallback,
//! 16 = port, dh ignores both and hashes the address as destination).
//!
//! The kernel fills the tables in list order; xvs by default in address order
//! (`TableOrder::Address`, docs/DEVIATIONS.md). Every fixture is checked with
//! `TableOrder::List`, which must be the kernel exactly; the address-order
//! table must be the kernel's for the list sorted by address, which the
//! fixtures whose list is already sorted check directly against the kernel.

use std::net::IpAddr;
use std::sync::Arc;
use xvs_core::addr::Addr;
use xvs_core::sched::dh::DhScheduler;
use xvs_core::sched::mh::MhScheduler;
use xvs_core::sched::sh::ShScheduler;
use xvs_core::sched::{SchedInput, SchedParams, Scheduler, TableOrder};
use xvs_core::service::ServiceTable;
use xvs_core::service::{
    Af, Dest, DestSpec, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec, SvcFlags,
};
use xvs_core::time::Time;

struct DestLine {
    addr: IpAddr,
    port: u16,
    weight: i32,
    last_weight: i32,
    overloaded: bool,
    unavailable: bool,
}

struct Fixture {
    kind: String,
    size: usize,
    af: Af,
    dests: Vec<DestLine>,
    digest: u64,
    table: Option<Vec<Option<usize>>>,
    picks: Vec<(u32, Addr, u16, Option<usize>)>,
}

const ALPHABET: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn load(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/sched/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut f = Fixture {
        kind: String::new(),
        size: 0,
        af: Af::V4,
        dests: vec![],
        digest: 0,
        table: None,
        picks: vec![],
    };
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.first().copied() {
            Some("kind") => f.kind = t[1].to_string(),
            Some("size") => f.size = t[1].parse().unwrap(),
            Some("af") => f.af = if t[1] == "6" { Af::V6 } else { Af::V4 },
            Some("dest") => f.dests.push(DestLine {
                addr: t[1].parse().unwrap(),
                port: t[2].parse().unwrap(),
                weight: t[3].parse().unwrap(),
                last_weight: t[4].parse().unwrap(),
                overloaded: t[5] == "1",
                unavailable: t[6] == "1",
            }),
            Some("digest") => f.digest = u64::from_str_radix(t[1], 16).unwrap(),
            Some("table") => {
                let mut v = Vec::with_capacity(f.size);
                for l in lines.by_ref() {
                    if l == "end" {
                        break;
                    }
                    v.extend(l.chars().map(|c| ALPHABET.find(c)));
                }
                f.table = Some(v);
            }
            Some("pick") => f.picks.push((
                t[1].parse().unwrap(),
                Addr::from(t[2].parse::<IpAddr>().unwrap()),
                t[3].parse().unwrap(),
                t[4].parse().ok(),
            )),
            _ => {}
        }
    }
    f
}

/// Dests in fixture (= kernel list) order with the fixture's weight, last weight and flags.
fn build_dests(f: &Fixture) -> Vec<Arc<Dest>> {
    f.dests
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut s = DestSpec::new(l.addr, l.port);
            s.weight = l.last_weight;
            s.u_threshold = l.overloaded as u32;
            let d = Dest::new(i as u32, &s);
            s.weight = l.weight;
            d.update(&s); // weight 0 keeps last_weight: a quiesced dest
            if l.overloaded {
                d.bind_conn(false); // reaches u_threshold 1: OVERLOAD
            }
            if l.unavailable {
                d.set_unavailable();
            }
            assert_eq!((d.weight(), d.last_weight()), (l.weight, l.last_weight));
            assert_eq!(d.is_overloaded(), l.overloaded);
            Arc::new(d)
        })
        .collect()
}

fn fnv(table: &[Option<usize>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in table {
        let v = x.map_or(u32::MAX, |i| i as u32);
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn input(addr: Addr, port: u16) -> SchedInput {
    SchedInput {
        saddr: addr,
        daddr: addr,
        sport: port,
        dport: 80,
        now: Time::ZERO,
    }
}

/// The table of the fixture's kind over `dests`, filled in `order`.
fn build(
    f: &Fixture,
    dests: &[Arc<Dest>],
    order: TableOrder,
) -> (Vec<Option<usize>>, Box<dyn Scheduler>) {
    match f.kind.as_str() {
        "mh" => {
            let s = MhScheduler::with_order(
                SvcFlags::default(),
                dests,
                f.size as u32,
                Some(f.af),
                order,
            )
            .unwrap();
            (s.table().collect(), Box::new(s))
        }
        "sh" => {
            let s = ShScheduler::with_order(SvcFlags::default(), dests, order);
            (s.table().collect(), Box::new(s))
        }
        _ => {
            let s = DhScheduler::with_order(dests, order);
            (s.table().collect(), Box::new(s))
        }
    }
}

/// Whether the fixture's list is already in address order (IPv4 first, then
/// by address and port), so that xvs's default table is the kernel's as is.
fn sorted(f: &Fixture) -> bool {
    f.dests
        .windows(2)
        .all(|w| (w[0].addr, w[0].port) < (w[1].addr, w[1].port))
}

/// Checks the fixture in list order (the kernel's) and, when its list is sorted,
/// in address order too. Returns whether the address order was checked.
fn check(name: &str) -> bool {
    let f = load(name);
    let dests = build_dests(&f);
    let mut orders = vec![TableOrder::List];
    if sorted(&f) {
        orders.push(TableOrder::Address);
    }
    for order in &orders {
        check_order(name, &f, &dests, *order);
    }
    address_order_is_the_sorted_list(name, &f, &dests);
    orders.len() == 2
}

fn check_order(name: &str, f: &Fixture, dests: &[Arc<Dest>], order: TableOrder) {
    let (table, base) = build(f, dests, order);
    assert_eq!(table.len(), f.size, "{name} {order:?}: table size");
    if let Some(want) = &f.table {
        for (i, (got, want)) in table.iter().zip(want).enumerate() {
            assert_eq!(got, want, "{name} {order:?}: slot {i}");
        }
    }
    assert_eq!(fnv(&table), f.digest, "{name} {order:?}: table digest");
    assert!(!f.picks.is_empty());
    for (flags, addr, port, want) in &f.picks {
        let s = base.with_flags(SvcFlags(*flags));
        let got = s.schedule(dests, &input(*addr, *port));
        assert_eq!(
            got, *want,
            "{name} {order:?}: pick flags {flags} {addr}:{port}"
        );
    }
}

/// The address-order table over the fixture's list is the list-order (kernel)
/// table over the same dests listed by address, slot for slot.
fn address_order_is_the_sorted_list(name: &str, f: &Fixture, dests: &[Arc<Dest>]) {
    let mut by_addr: Vec<usize> = (0..dests.len()).collect();
    by_addr.sort_by_key(|&i| (dests[i].addr, dests[i].port));
    let relisted: Vec<Arc<Dest>> = by_addr.iter().map(|&i| dests[i].clone()).collect();
    let (addr_table, _) = build(f, dests, TableOrder::Address);
    let (kernel_sorted, _) = build(f, &relisted, TableOrder::List);
    let mapped: Vec<Option<usize>> = kernel_sorted
        .iter()
        .map(|x| x.map(|j| by_addr[j]))
        .collect();
    assert!(
        addr_table == mapped,
        "{name}: the address-order table is not the kernel's for the sorted list"
    );
}

#[test]
fn mh_4093_weights_3_2_1() {
    check("mh_4093_w3-2-1.txt");
}

#[test]
fn address_order_is_checked_against_the_kernel_directly() {
    // These fixtures list their dests by address: xvs's default table must be
    // the kernel's as is, for each kind.
    for name in [
        "mh_4093_mixed-weights.txt",
        "mh_251_v6.txt",
        "mh_32749_w5-10-15.txt",
        "mh_131071_20dests.txt",
        "sh_w1-2-3.txt",
        "sh_mixed.txt",
        "sh_v6.txt",
        "dh_3.txt",
        "dh_v6.txt",
    ] {
        assert!(check(name), "{name} is not in address order");
    }
}

#[test]
fn mh_4093_quiesced_deleted_and_readded() {
    // The steps of sched_sequences.rs's mh_sequence: B quiesced, B deleted, B re-added
    // (now at the list head). Same clients as mh_4093_w3-2-1.
    check("mh_4093_w3-q2-1.txt");
    check("mh_4093_w3-1.txt");
    check("mh_4093_w2-3-1.txt");
}

#[test]
fn mh_4093_mixed_weights_shift_quiesced_overloaded() {
    // last weights 1000,3,250,40(quiesced),0,64(overloaded),7,1000: gcd 1, rshift 4.
    check("mh_4093_mixed-weights.txt");
}

#[test]
fn mh_4093_ipv6_tunnel_dest_in_ipv4_service() {
    // An IPv4 service hashes an IPv6 dest by its first 32-bit word (addr->ip).
    check("mh_4093_mixed-af.txt");
}

#[test]
fn mh_251_ipv6() {
    check("mh_251_v6.txt");
}

#[test]
fn mh_32749_gcd_5() {
    check("mh_32749_w5-10-15.txt");
}

#[test]
fn mh_131071_twenty_dests() {
    check("mh_131071_20dests.txt");
}

#[test]
fn sh_weights_1_2_3() {
    check("sh_w1-2-3.txt");
}

#[test]
fn sh_weight_0_overloaded_and_heavy_dest() {
    check("sh_mixed.txt");
}

#[test]
fn sh_ipv6() {
    check("sh_v6.txt");
}

#[test]
fn sh_no_dests() {
    check("sh_empty.txt");
}

#[test]
fn dh_ipv4() {
    check("dh_3.txt");
}

#[test]
fn dh_ipv6_unavailable_and_weight_0() {
    check("dh_v6.txt");
}

#[test]
fn dh_no_dests() {
    check("dh_empty.txt");
}

/// Through the service table: dests added oldest first end up in the fixture's list
/// order (newest first), quiesced and overloaded via `-e` and traffic, and the
/// service's picks are the kernel's.
fn check_via_table(name: &str, sched: SchedKind) {
    let f = load(name);
    let vip: IpAddr = if f.af == Af::V6 {
        "fd77::100".parse().unwrap()
    } else {
        "10.77.0.100".parse().unwrap()
    };
    let key = ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: vip,
        port: 80,
    };
    let mut orders = vec![TableOrder::List];
    if sorted(&f) {
        orders.push(TableOrder::Address);
    }
    for (order, flags) in orders.into_iter().flat_map(|o| {
        [
            0,
            SvcFlags::SCHED1,
            SvcFlags::SCHED2,
            SvcFlags::SCHED1 | SvcFlags::SCHED2,
        ]
        .map(|f| (o, f))
    }) {
        let mut t = ServiceTable::new();
        t.set_sched_params(SchedParams {
            table_order: order,
            ..SchedParams::default()
        })
        .unwrap();
        let mut spec = ServiceSpec::new(key);
        spec.sched = sched;
        spec.flags = SvcFlags(flags);
        t.add_service(spec).unwrap();
        for l in f.dests.iter().rev() {
            let mut d = DestSpec::new(l.addr, l.port);
            d.fwd = FwdMethod::Tunnel;
            d.weight = l.last_weight;
            d.u_threshold = l.overloaded as u32;
            t.add_dest(&key, d.clone()).unwrap();
            if l.weight != l.last_weight {
                d.weight = l.weight;
                t.edit_dest(&key, d).unwrap();
            }
        }
        let svc = t.get(&key).unwrap().clone();
        for (i, l) in f.dests.iter().enumerate() {
            assert_eq!((svc.dests[i].addr, svc.dests[i].port), (l.addr, l.port));
            if l.overloaded {
                svc.dests[i].bind_conn(false);
            }
        }
        for (pflags, addr, port, want) in &f.picks {
            if *pflags != flags {
                continue;
            }
            let got = svc
                .schedule(&input(*addr, *port))
                .map(|d| svc.dests.iter().position(|x| Arc::ptr_eq(x, d)).unwrap());
            assert_eq!(
                got, *want,
                "{name} via table, {order:?}: flags {flags} {addr}:{port}"
            );
        }
    }
}

#[test]
fn service_table_keeps_kernel_list_order_for_sh() {
    check_via_table("sh_mixed.txt", SchedKind::Sh);
}

#[test]
fn service_table_keeps_kernel_list_order_for_mh() {
    check_via_table("mh_4093_mixed-weights.txt", SchedKind::Mh);
    check_via_table("mh_4093_mixed-af.txt", SchedKind::Mh);
}

#[test]
fn service_table_keeps_kernel_list_order_for_dh() {
    check_via_table("dh_3.txt", SchedKind::Dh);
}
