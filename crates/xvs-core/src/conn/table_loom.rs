//! Model checks of the connection table's protocol with loom: every
//! interleaving (within a preemption bound) and every value the memory model
//! lets a load return, on a table of a few entries and buckets of two slots.
//!
//! Run with `make loom` (`RUSTFLAGS="--cfg loom"`, release build).

use super::*;
use crate::conn::{TcpState, TEMPLATE_PROTO};
use crate::time::tick_after;
use loom::thread;
use std::sync::Arc;

const SEED: [u64; 4] = [1, 2, 3, 4];

/// Explores `f` with at most 3 preemptions per execution (`LOOM_MAX_PREEMPTIONS`
/// overrides it).
fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f)
}

fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(preemptions);
    }
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    b.check(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "{} executions",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn conn(cport: u16, fl: EntryFlags) -> NewConn {
    NewConn {
        proto: 6,
        caddr: Addr::v4([10, 0, 0, 1]),
        cport,
        vaddr: Addr::v4([10, 0, 0, 100]),
        vport: 80,
        daddr: Addr::v4([10, 0, 1, 1]),
        dport: 8080,
        lip: 0,
        lport: 0,
        fwd: FwdMethod::Masq,
        svc_id: 1,
        dest_id: 1,
        control: TemplateRef::NONE,
        state: EntryState::Conn(TcpState::Established),
        in_pkts: 0,
        flags: fl,
        expires: 100,
        timeout: 0,
    }
}

fn in_key(c: &NewConn) -> ConnKey {
    ConnKey {
        proto: c.proto,
        saddr: c.caddr,
        sport: c.cport,
        daddr: c.vaddr,
        dport: c.vport,
    }
}

/// The two buckets of a conn's client key.
fn buckets(t: &ConnTable, c: &NewConn) -> (usize, usize) {
    t.buckets_of(t.hash(&in_key(c)))
}

/// The first client port from `from` whose key has buckets satisfying `ok`.
fn port_where(t: &ConnTable, from: u16, ok: impl Fn(usize, usize) -> bool) -> u16 {
    (from..u16::MAX)
        .find(|&p| {
            let (a, b) = buckets(t, &conn(p, EntryFlags::NONE));
            ok(a, b)
        })
        .expect("a port with those buckets")
}

/// Runs `f` on a new model thread with its own handle on the table. Every
/// actor of a model gets its own thread: loom misses interleavings of the
/// main thread's loads with a spawned thread's load-then-write.
fn spawn<T: Send + 'static>(
    t: &Arc<ConnTable>,
    f: impl FnOnce(&ConnTable) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let t = t.clone();
    thread::spawn(move || f(&t))
}

fn check(t: &ConnTable) {
    if let Err(e) = t.check_invariants() {
        panic!("invariant broken: {e}");
    }
}

/// A refresh racing the sweep of an expired entry: exactly one wins, and if
/// the refresh took, the connection outlives it.
#[test]
fn refresh_vs_sweep() {
    model(|| {
        let t = Arc::new(ConnTable::new(2, SEED));
        let c = conn(1000, EntryFlags::NONE); // expires at tick 100
        t.insert(&c).unwrap();
        let w = spawn(&t, move |t| {
            // A packet at tick 99 finds the conn and pushes its expiry to 199.
            // (Unless the sweep has removed it already.)
            let Some((v, _)) = t.lookup(&in_key(&c), 99) else {
                return false;
            };
            t.refresh(v.idx, v.sw, 199)
        });
        // The sweep at tick 101 finds it expired.
        let s = spawn(&t, |t| {
            let mut removed = false;
            t.scan(0, 10, |v, exp| {
                if tick_after(101, exp) {
                    removed |= t.remove(v.idx, v.sw).is_some();
                }
            });
            removed
        });
        let removed = s.join().unwrap();
        let refreshed = w.join().unwrap();
        assert!(
            refreshed != removed,
            "refreshed {refreshed}, removed {removed}"
        );
        if refreshed {
            assert!(
                t.lookup(&in_key(&c), 150).is_some(),
                "a refreshed connection was swept"
            );
        }
        check(&t);
    });
}

/// An insert racing a sweep that removes whatever it finds.
#[test]
fn insert_vs_sweep() {
    model(|| {
        let t = Arc::new(ConnTable::new(1, SEED));
        let c = conn(1000, EntryFlags::HAS_OUT);
        let w = spawn(&t, move |t| {
            let _ = t.insert(&c);
        });
        let s = spawn(&t, |t| {
            t.scan(0, 10, |v, _| {
                t.remove(v.idx, v.sw);
            });
        });
        w.join().unwrap();
        s.join().unwrap();
        check(&t);
    });
}

/// An insert that fails for want of index room, racing a sweep: the entry goes
/// back to the free stack once.
#[test]
fn index_full_vs_sweep() {
    model(|| {
        // Two buckets of two slots: three one-key conns and a two-key one fill them.
        let t = Arc::new(ConnTable::with_buckets(4, 2, SEED));
        for p in [1, 2, 3] {
            t.insert(&conn(p, EntryFlags::NONE)).unwrap();
        }
        let c = conn(1000, EntryFlags::HAS_OUT);
        let w = spawn(&t, move |t| t.insert(&c));
        let s = spawn(&t, |t| {
            t.scan(0, 10, |v, _| {
                if v.cport == 1000 {
                    t.remove(v.idx, v.sw);
                }
            });
        });
        s.join().unwrap();
        let r = w.join().unwrap();
        assert_eq!(r, Err(InsertError::IndexFull));
        check(&t);
    });
}

/// A lookup racing an insert that needs a displacement, with the key looked
/// up in its second bucket (the old code moved it back to its first bucket,
/// copy then swap, and a lookup reading the first bucket before the copy and
/// the second after the swap missed it): it must be found.
#[test]
fn displacement_vs_lookup_second_bucket() {
    model(|| {
        let t = Arc::new(ConnTable::with_buckets(8, 3, SEED));
        // K: buckets (p, q), placed in q because p is full.
        let kp = port_where(&t, 1, |a, b| a != b);
        let k = conn(kp, EntryFlags::NONE);
        let (p, q) = buckets(&t, &k);
        let r = 3 - p - q;
        let f1 = conn(port_where(&t, 2000, |a, _| a == p), EntryFlags::NONE);
        let f2 = conn(
            port_where(&t, f1.cport + 1, |a, _| a == p),
            EntryFlags::NONE,
        );
        t.insert(&f1).unwrap();
        t.insert(&f2).unwrap();
        t.insert(&k).unwrap();
        // Make room in p again, fill q and r.
        let (v, _) = t.lookup(&in_key(&f1), 0).unwrap();
        t.remove(v.idx, v.sw).unwrap();
        let g = conn(
            port_where(&t, 3000, |a, b| a == q && b == q),
            EntryFlags::NONE,
        );
        t.insert(&g).unwrap();
        let r1 = conn(
            port_where(&t, 4000, |a, b| a == r && b == r),
            EntryFlags::NONE,
        );
        let r2 = conn(
            port_where(&t, r1.cport + 1, |a, b| a == r && b == r),
            EntryFlags::NONE,
        );
        t.insert(&r1).unwrap();
        t.insert(&r2).unwrap();
        // X's buckets are q then r, both full: its insert displaces a resident.
        let x = conn(
            port_where(&t, 5000, |a, b| a == q && b == r),
            EntryFlags::NONE,
        );
        let w = spawn(&t, move |t| {
            let _ = t.insert(&x);
        });
        let r = spawn(&t, move |t| t.lookup(&in_key(&k), 0).is_some());
        w.join().unwrap();
        assert!(
            r.join().unwrap(),
            "a live key was missed during a displacement"
        );
        check(&t);
    });
}

/// A table of three buckets where inserting `x` moves `r` from its first
/// bucket to its second: r (p, q) and f (p, p) fill p; s1, s2 fill bucket z;
/// x has buckets (p, z).
fn displacement_setup() -> (Arc<ConnTable>, NewConn, NewConn) {
    let t = Arc::new(ConnTable::with_buckets(8, 3, SEED));
    let r = conn(port_where(&t, 1, |a, b| a != b), EntryFlags::NONE);
    let (p, q) = buckets(&t, &r);
    let z = 3 - p - q;
    let f = conn(
        port_where(&t, 2000, |a, b| a == p && b == p),
        EntryFlags::NONE,
    );
    let s1 = conn(
        port_where(&t, 3000, |a, b| a == z && b == z),
        EntryFlags::NONE,
    );
    let s2 = conn(
        port_where(&t, s1.cport + 1, |a, b| a == z && b == z),
        EntryFlags::NONE,
    );
    for c in [&r, &f, &s1, &s2] {
        t.insert(c).unwrap();
    }
    let x = conn(
        port_where(&t, 4000, |a, b| a == p && b == z),
        EntryFlags::NONE,
    );
    (t, r, x)
}

/// A lookup of a resident that an insert moves from its first bucket to its
/// second: it is found all along.
#[test]
fn displacement_vs_lookup() {
    model(|| {
        let (t, r, x) = displacement_setup();
        let w = spawn(&t, move |t| t.insert(&x));
        let l = spawn(&t, move |t| t.lookup(&in_key(&r), 0).map(|(v, _)| v.cport));
        assert!(w.join().unwrap().is_ok(), "x fits by moving r");
        assert_eq!(
            l.join().unwrap(),
            Some(r.cport),
            "r was missed while it moved"
        );
        assert_eq!(t.lookup(&in_key(&x), 0).unwrap().0.cport, x.cport);
        check(&t);
    });
}

/// A resident removed while an insert moves it: no copy of it is left behind.
#[test]
fn displacement_vs_remove() {
    model(|| {
        let (t, r, x) = displacement_setup();
        let w = spawn(&t, move |t| t.insert(&x));
        // As the sweep does: the entry read directly, not found through the index.
        let ri = t.lookup(&in_key(&r), 0).unwrap().0.idx;
        let s = spawn(&t, move |t| {
            let v = t.read(ri).unwrap();
            t.remove(v.idx, v.sw).unwrap();
        });
        s.join().unwrap();
        let _ = w.join().unwrap();
        assert!(t.lookup(&in_key(&r), 0).is_none());
        check(&t);
    });
}

/// A lookup racing the removal of its entry and the entry's reuse for another
/// connection with the same key: the view is one connection or the other,
/// never a mix. The reader's dozen loads of fields that the writer rewrites
/// make this model large: one preemption here (72K executions, ~10 s),
/// `LOOM_MAX_PREEMPTIONS=2` for 1.4M (~3 min).
#[test]
fn reuse_vs_lookup() {
    model_bounded(1, || {
        let t = Arc::new(ConnTable::with_buckets(1, 1, SEED));
        let a = conn(1000, EntryFlags::NONE);
        let mut b = conn(1000, EntryFlags::NONE);
        b.daddr = Addr::v4([10, 0, 1, 2]);
        b.dest_id = 2;
        t.insert(&a).unwrap();
        let w = spawn(&t, move |t| {
            let (v, _) = t.lookup(&in_key(&a), 0).unwrap();
            t.remove(v.idx, v.sw).unwrap();
            t.insert(&b).unwrap();
        });
        let r = spawn(&t, move |t| t.lookup(&in_key(&a), 0).map(|(v, _)| v));
        w.join().unwrap();
        if let Some(v) = r.join().unwrap() {
            let want = if v.dest_id == 1 { &a } else { &b };
            assert_eq!(v.daddr, want.daddr, "torn view: {v:?}");
            assert_eq!(v.dest_id, want.dest_id, "torn view: {v:?}");
        }
        check(&t);
    });
}

/// Two threads each remove a connection and insert another: the free stack and
/// the index stay consistent.
#[test]
fn remove_insert_vs_remove_insert() {
    model(|| {
        let t = Arc::new(ConnTable::new(2, SEED));
        t.insert(&conn(1, EntryFlags::NONE)).unwrap();
        t.insert(&conn(2, EntryFlags::NONE)).unwrap();
        let ws: Vec<_> = [(1u16, 11u16), (2, 12)]
            .into_iter()
            .map(|(old, new)| {
                spawn(&t, move |t| {
                    let (v, _) = t.lookup(&in_key(&conn(old, EntryFlags::NONE)), 0).unwrap();
                    t.remove(v.idx, v.sw).unwrap();
                    t.insert(&conn(new, EntryFlags::NONE)).unwrap();
                })
            })
            .collect();
        for w in ws {
            w.join().unwrap();
        }
        assert!(t.lookup(&in_key(&conn(11, EntryFlags::NONE)), 0).is_some());
        assert!(t.lookup(&in_key(&conn(12, EntryFlags::NONE)), 0).is_some());
        check(&t);
    });
}

fn template(vport: u16) -> NewConn {
    NewConn {
        proto: TEMPLATE_PROTO | 6,
        cport: 0,
        vport,
        state: EntryState::TEMPLATE,
        flags: EntryFlags::TEMPLATE,
        ..conn(0, EntryFlags::NONE)
    }
}

/// A worker counting a new connection on a template races the sweep removing
/// the expired template: either the count is taken and the template stays, or
/// the template goes and the count is refused.
#[test]
fn hold_vs_template_sweep() {
    model(|| {
        let t = Arc::new(ConnTable::new(2, SEED));
        let tpl = template(80);
        t.insert(&tpl).unwrap();
        let w = spawn(&t, move |t| {
            let (v, _) = t.lookup(&in_key(&tpl), 99)?;
            let r = t.hold(&v)?;
            t.refresh(v.idx, v.sw, 199);
            let mut c = conn(1000, EntryFlags::NONE);
            c.control = r;
            t.insert(&c).unwrap();
            Some(r)
        });
        let s = spawn(&t, |t| {
            let mut removed = false;
            t.scan(0, 10, |v, exp| {
                if v.flags().is_template() && tick_after(101, exp) {
                    removed |= t.remove(v.idx, v.sw).is_some();
                }
            });
            removed
        });
        let removed = s.join().unwrap();
        let held = w.join().unwrap();
        assert!(
            held.is_some() != removed,
            "held {held:?}, removed {removed}"
        );
        if let Some(r) = held {
            let (v, _) = t.lookup(&in_key(&tpl), 150).expect("held template stays");
            assert_eq!(Some(v.idx), r.idx());
        }
        // Counts match the references (checked by the invariants).
        check(&t);
    });
}

fn out_key(c: &NewConn) -> ConnKey {
    ConnKey {
        proto: c.proto,
        saddr: c.daddr,
        sport: c.dport,
        daddr: c.caddr,
        dport: c.cport,
    }
}

/// A connection published before its reply key (`insert_deferred`, then
/// `complete_out` at the end of the burst) racing a sweep that removes
/// whatever it finds: whoever finishes last frees the entry, once; no slot
/// is left behind; and a connection that survives has both keys.
#[test]
fn deferred_out_vs_sweep() {
    model(|| {
        let t = Arc::new(ConnTable::new(1, SEED));
        let c = conn(1000, EntryFlags::HAS_OUT);
        let w = spawn(&t, move |t| {
            let p = t.insert_deferred(&c).unwrap();
            t.complete_out(p)
        });
        let s = spawn(&t, |t| {
            let mut removed = false;
            t.scan(0, 10, |v, _| {
                removed |= t.remove(v.idx, v.sw).is_some();
            });
            removed
        });
        let removed = s.join().unwrap();
        let done = w.join().unwrap();
        match done {
            OutDone::Indexed => {
                assert!(!removed || t.lookup(&in_key(&c), 0).is_none());
                if !removed {
                    let (v, _) = t.lookup(&out_key(&c), 0).expect("reply key indexed");
                    assert!(!v.flags().contains(EntryFlags::OUT_PENDING));
                }
            }
            OutDone::Gone => assert!(removed),
            OutDone::IndexFull(_) => panic!("room was there"),
        }
        check(&t);
        // The entry is free (or live) exactly once: it can be had again.
        if removed {
            t.insert(&c).unwrap();
            check(&t);
        }
    });
}

/// The entry of a connection removed while its reply key is pending is not
/// reused before the completion is done with its slots: a worker that
/// removes it and inserts the same connection again (same key, and with one
/// entry the same index, so the same slot values) keeps both of its keys.
#[test]
fn deferred_out_vs_remove_and_reuse() {
    model(|| {
        let t = Arc::new(ConnTable::new(1, SEED));
        let c = conn(1000, EntryFlags::HAS_OUT);
        let p = t.insert_deferred(&c).unwrap();
        let w = spawn(&t, move |t| t.complete_out(p));
        let r = spawn(&t, move |t| {
            let (v, _) = t.lookup(&in_key(&c), 0).expect("published");
            t.remove(v.idx, v.sw)?;
            t.insert(&c).ok()
        });
        let done = w.join().unwrap();
        let again = r.join().unwrap();
        assert!(!matches!(done, OutDone::IndexFull(_)), "{done:?}");
        if again.is_some() {
            assert!(t.lookup(&in_key(&c), 0).is_some());
            assert!(t.lookup(&out_key(&c), 0).is_some());
        }
        check(&t);
    });
}
