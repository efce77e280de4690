//! Invariants of every scheduler over random dest lists, weights, loads and clients,
//! plus the edge cases (no dests, all quiesced, all overloaded).

use proptest::prelude::*;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use xvs_core::addr::Addr;
use xvs_core::sched::lblc::LblcScheduler;
use xvs_core::sched::lblcr::LblcrScheduler;
use xvs_core::sched::mh::MhScheduler;
use xvs_core::sched::wrr::WrrScheduler;
use xvs_core::sched::{new_scheduler, SchedInput, Scheduler};
use xvs_core::service::{Dest, DestSpec, SchedKind, SvcFlags};
use xvs_core::time::Time;

/// One dest of a generated list: weight, overloaded, active, inactive.
type DestGen = (i32, bool, u32, u32);

fn make(list: &[DestGen], base: u32) -> Vec<Arc<Dest>> {
    list.iter()
        .enumerate()
        .map(|(i, &(w, over, act, inact))| {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a4d_0000 + base + i as u32));
            let mut s = DestSpec::new(addr, 80);
            s.weight = w;
            let d = Dest::new(i as u32, &s);
            for _ in 0..act {
                d.bind_conn(false);
                d.conn_activated();
            }
            for _ in 0..inact {
                d.bind_conn(false);
            }
            if over {
                // A threshold just reached: the next bind sets OVERLOAD.
                s.u_threshold = act + inact + 1;
                d.update(&s);
                d.bind_conn(false);
            }
            assert_eq!(d.is_overloaded(), over);
            Arc::new(d)
        })
        .collect()
}

fn input(saddr: u32, daddr: u32, sport: u16, now: u64) -> SchedInput {
    SchedInput {
        saddr: Addr::v4(saddr.to_be_bytes()),
        daddr: Addr::v4(daddr.to_be_bytes()),
        sport,
        dport: 80,
        now: Time::from_secs(now),
    }
}

fn dests_strategy() -> impl Strategy<Value = Vec<DestGen>> {
    prop::collection::vec(
        (0..6i32, prop::bool::weighted(0.25), 0..4u32, 0..4u32),
        0..8,
    )
}

fn eligible(d: &Dest) -> bool {
    d.weight() > 0 && !d.is_overloaded()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No scheduler ever hands a new connection to a quiesced (weight 0) or OVERLOAD
    /// dest, except lblc's cache hit, which ignores OVERLOAD (but not weight 0); ovf
    /// also never to a dest with more active conns than its weight. The list-walking
    /// schedulers return nothing only when no dest is eligible.
    #[test]
    fn never_a_quiesced_or_overloaded_dest(
        list in dests_strategy(),
        flags in 0u32..4,
        clients in prop::collection::vec((any::<u32>(), 0u32..4, any::<u16>()), 1..24),
    ) {
        let dests = make(&list, 0);
        let flags = SvcFlags(flags * SvcFlags::SCHED1);
        let any_eligible = dests.iter().any(|d| eligible(d));
        for kind in SchedKind::ALL {
            let s = new_scheduler(kind, flags, &dests).unwrap();
            for &(saddr, daddr, sport) in &clients {
                let inp = input(saddr, 0xc000_0200 + daddr, sport, 0);
                let got = s.schedule(&dests, &inp);
                if let Some(i) = got {
                    let d = &dests[i];
                    prop_assert!(d.weight() > 0, "{kind}: weight 0 picked");
                    if kind != SchedKind::Lblc {
                        prop_assert!(!d.is_overloaded(), "{kind}: overloaded picked");
                    }
                    if kind == SchedKind::Ovf {
                        prop_assert!(d.activeconns() as i32 <= d.weight());
                    }
                }
                let walks = !matches!(
                    kind,
                    SchedKind::Sh | SchedKind::Dh | SchedKind::Mh | SchedKind::Ovf | SchedKind::Lblc
                );
                if walks {
                    prop_assert_eq!(got.is_some(), any_eligible, "{}: none with eligible dests", kind);
                }
            }
        }
    }

    /// lblc: an OVERLOAD dest comes back only from the cache (the dest cached for that
    /// destination address before the call), and only while weight > 0.
    #[test]
    fn lblc_overload_only_from_cache(
        list in dests_strategy(),
        steps in prop::collection::vec((0u32..3, 0usize..8, 0u8..3), 1..40),
    ) {
        let dests = make(&list, 0);
        let s = LblcScheduler::new(86400);
        for (n, &(daddr, di, op)) in steps.iter().enumerate() {
            let inp = input(0x0a00_0001, 0xc000_0200 + daddr, 1, n as u64);
            let before = s.cached(&inp.daddr);
            if let Some(i) = s.schedule(&dests, &inp) {
                let d = &dests[i];
                prop_assert!(d.weight() > 0);
                if d.is_overloaded() {
                    prop_assert!(before.is_some_and(|c| Arc::ptr_eq(&c, d)));
                }
                if op == 0 { d.bind_conn(false); d.conn_activated(); }
            }
            // Random load changes so that cache hits and misses both happen.
            if let Some(d) = dests.get(di) {
                match op {
                    1 => { d.bind_conn(false); d.conn_activated(); }
                    2 => d.unbind_conn(false, true),
                    _ => {}
                }
            }
        }
    }

    /// wrr: over any window of one full cycle (sum of weight/gcd picks) each dest is
    /// picked exactly weight/gcd times.
    #[test]
    fn wrr_proportions_over_a_cycle(
        weights in prop::collection::vec(1..10i32, 1..6),
        skip in 0usize..40,
    ) {
        let list: Vec<DestGen> = weights.iter().map(|&w| (w, false, 0, 0)).collect();
        let dests = make(&list, 0);
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        let cycle: usize = weights.iter().map(|&w| (w / g) as usize).sum();
        let s = WrrScheduler::new(&dests);
        let inp = input(1, 2, 3, 0);
        for _ in 0..skip {
            s.schedule(&dests, &inp).unwrap();
        }
        let mut count = vec![0i32; dests.len()];
        for _ in 0..cycle {
            count[s.schedule(&dests, &inp).unwrap()] += 1;
        }
        let want: Vec<i32> = weights.iter().map(|&w| w / g).collect();
        prop_assert_eq!(count, want);
    }

    /// lblcr: a server set is never empty, has no duplicate, holds only dests the
    /// service had, and so never exceeds their number; every pick is eligible.
    #[test]
    fn lblcr_set_bounds(
        list in prop::collection::vec((1..4i32, Just(false), 0..3u32, 0..3u32), 1..6),
        steps in prop::collection::vec((0u32..3, 0usize..6, 0u8..4, 0u64..3), 1..60),
    ) {
        let dests = make(&list, 0);
        let s = LblcrScheduler::new(3600);
        let mut now = 0;
        for &(daddr, di, op, dt) in &steps {
            now += dt * 1800; // sometimes past lblcr_expiration: sets shrink
            let inp = input(0x0a00_0001, 0xc000_0200 + daddr, 1, now);
            if let Some(i) = s.schedule(&dests, &inp) {
                prop_assert!(eligible(&dests[i]));
                dests[i].bind_conn(false);
                dests[i].conn_activated();
            }
            if let Some(d) = dests.get(di) {
                match op {
                    1 => d.unbind_conn(false, true),
                    2 => { d.bind_conn(false); d.conn_activated(); }
                    _ => {}
                }
            }
            for a in 0..3 {
                if let Some(set) = s.set(&Addr::v4((0xc000_0200u32 + a).to_be_bytes())) {
                    prop_assert!(!set.is_empty());
                    prop_assert!(set.len() <= dests.len());
                    let ids: HashSet<u32> = set.iter().map(|d| d.id).collect();
                    prop_assert_eq!(ids.len(), set.len(), "duplicate member");
                    prop_assert!(set.iter().all(|m| dests.iter().any(|d| Arc::ptr_eq(d, m))));
                }
            }
        }
        prop_assert!(s.entries() <= 3);
    }

    /// mh: quiescing (weight 0) or overloading a dest leaves the table as it was, so
    /// only that dest's clients are affected: without mh-fallback they get nothing,
    /// with it they go to another dest; every other client keeps its dest.
    #[test]
    fn mh_quiesce_moves_only_that_dests_clients(
        weights in prop::collection::vec(1..8i32, 2..10),
        victim in any::<prop::sample::Index>(),
        overload in any::<bool>(),
        clients in prop::collection::vec(any::<u32>(), 64),
    ) {
        let list: Vec<DestGen> = weights.iter().map(|&w| (w, false, 0, 0)).collect();
        let dests = make(&list, 0);
        let r = victim.index(dests.len());
        let plain = MhScheduler::new(SvcFlags::default(), &dests, 4093, None).unwrap();
        let before: Vec<_> = clients.iter().map(|&c| plain.schedule(&dests, &input(c, 1, 1, 0))).collect();
        let table: Vec<_> = plain.table().collect();
        if overload {
            let mut s = dests[r].spec();
            s.u_threshold = 1;
            dests[r].update(&s);
            dests[r].bind_conn(false);
        } else {
            let mut s = dests[r].spec();
            s.weight = 0;
            dests[r].update(&s);
        }
        let plain = plain.rebuild(&dests, SvcFlags::default()).unwrap();
        let fallback = plain.with_flags(SvcFlags(SvcFlags::SCHED1));
        let rebuilt = MhScheduler::new(SvcFlags::default(), &dests, 4093, None).unwrap();
        prop_assert_eq!(rebuilt.table().collect::<Vec<_>>(), table);
        for (k, &c) in clients.iter().enumerate() {
            let inp = input(c, 1, 1, 0);
            if before[k] == Some(r) {
                prop_assert_eq!(plain.schedule(&dests, &inp), None);
                let f = fallback.schedule(&dests, &inp);
                prop_assert!(f.is_some() && f != Some(r));
            } else {
                prop_assert_eq!(plain.schedule(&dests, &inp), before[k]);
                prop_assert_eq!(fallback.schedule(&dests, &inp), before[k]);
            }
        }
    }

    /// mh: removing a dest moves all of its slots and, Maglev being near-minimal (not
    /// strictly minimal) in disruption, only a few of the other dests' slots.
    #[test]
    fn mh_delete_disrupts_little(
        weights in prop::collection::vec(1..8i32, 2..20),
        victim in any::<prop::sample::Index>(),
    ) {
        let list: Vec<DestGen> = weights.iter().map(|&w| (w, false, 0, 0)).collect();
        let dests = make(&list, 0);
        let r = victim.index(dests.len());
        let full = MhScheduler::new(SvcFlags::default(), &dests, 4093, None).unwrap();
        let rest: Vec<_> = dests.iter().enumerate().filter(|(i, _)| *i != r).map(|(_, d)| d.clone()).collect();
        let after = MhScheduler::new(SvcFlags::default(), &rest, 4093, None).unwrap();
        let mut moved_others = 0;
        for (a, b) in full.table().zip(after.table()) {
            let (a, b) = (a.unwrap(), b.unwrap());
            let b = if b >= r { b + 1 } else { b }; // back to the old list's indices
            prop_assert_ne!(b, r);
            if a != r && a != b {
                moved_others += 1;
            }
        }
        prop_assert!(moved_others * 10 < 4093, "{} other slots moved", moved_others);
    }
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn none_for_all(dests: &[Arc<Dest>], what: &str) {
    for kind in SchedKind::ALL {
        for flags in [0, SvcFlags::SCHED1, SvcFlags::SCHED1 | SvcFlags::SCHED2] {
            let s = new_scheduler(kind, SvcFlags(flags), dests).unwrap();
            for c in 0..50u32 {
                let inp = input(0x0a00_0000 + c * 7919, 0xc000_0200 + c, c as u16, 0);
                assert_eq!(s.schedule(dests, &inp), None, "{kind} with {what}");
            }
        }
    }
}

#[test]
fn no_dests_means_no_dest() {
    none_for_all(&[], "no dests");
}

#[test]
fn all_weight_zero_means_no_dest() {
    let list: Vec<DestGen> = (0..5).map(|i| (0, false, i, i)).collect();
    none_for_all(&make(&list, 0), "all weight 0");
}

#[test]
fn all_overloaded_means_no_dest() {
    let list: Vec<DestGen> = (0..5).map(|i| (i as i32 + 1, true, 0, i)).collect();
    none_for_all(&make(&list, 0), "all overloaded");
}

#[test]
fn mh_refuses_more_dests_than_slots() {
    let list: Vec<DestGen> = (0..252).map(|_| (1, false, 0, 0)).collect();
    let dests = make(&list, 0);
    assert!(MhScheduler::new(SvcFlags::default(), &dests, 251, None).is_err());
    assert!(MhScheduler::new(SvcFlags::default(), &dests[..251], 251, None).is_ok());
    assert!(
        MhScheduler::new(SvcFlags::default(), &dests, 4000, None).is_err(),
        "not a kernel prime"
    );
}

/// rr and wrr advance their cursor by compare-and-swap: picks from many threads at
/// once are still one exact round-robin sequence, so every dest gets exactly its share.
#[test]
fn concurrent_rr_and_wrr_picks_stay_exact() {
    for (kind, weights) in [
        (SchedKind::Rr, vec![1, 1, 1, 1]),
        (SchedKind::Wrr, vec![4, 3, 2, 1]),
    ] {
        let list: Vec<DestGen> = weights.iter().map(|&w| (w, false, 0, 0)).collect();
        let dests = make(&list, 0);
        let s: Arc<dyn Scheduler> =
            Arc::from(new_scheduler(kind, SvcFlags::default(), &dests).unwrap());
        let cycle: usize = weights.iter().sum::<i32>() as usize;
        let (threads, rounds) = (4, 2500);
        let counts: Vec<Vec<usize>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let (s, dests) = (s.clone(), &dests);
                    sc.spawn(move || {
                        let mut c = vec![0usize; dests.len()];
                        for _ in 0..rounds * cycle {
                            c[s.schedule(dests, &input(1, 2, 3, 0)).unwrap()] += 1;
                        }
                        c
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: Vec<usize> = (0..dests.len())
            .map(|i| counts.iter().map(|c| c[i]).sum())
            .collect();
        let want: Vec<usize> = weights
            .iter()
            .map(|&w| w as usize * threads * rounds)
            .collect();
        assert_eq!(total, want, "{kind}");
    }
}
