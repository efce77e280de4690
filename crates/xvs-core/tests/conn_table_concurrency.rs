//! The connection table under concurrent use: workers insert, look up and
//! change state while a sweeper removes entries. Nothing may be found under a
//! wrong key, no live entry may be lost, and the table never exceeds its bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use xvs_core::addr::Addr;
use xvs_core::conn::{ConnKey, ConnTable, EntryFlags, EntryState, NewConn, TcpState, TemplateRef};
use xvs_core::service::FwdMethod;

const SYN_RECV: EntryState = EntryState::Conn(TcpState::SynRecv);
const ESTABLISHED: EntryState = EntryState::Conn(TcpState::Established);

fn conn(worker: u8, i: u32) -> NewConn {
    NewConn {
        proto: 6,
        caddr: Addr::v4([10, worker, (i >> 8) as u8, i as u8]),
        cport: (i >> 16) as u16 + 1,
        vaddr: Addr::v4([10, 77, 0, 100]),
        vport: 80,
        daddr: Addr::v4([10, 77, 1, worker]),
        dport: 8000 + worker as u16,
        lip: 0,
        lport: 0,
        fwd: FwdMethod::Masq,
        svc_id: worker as u32,
        dest_id: i,
        control: TemplateRef::NONE,
        state: SYN_RECV,
        in_pkts: 0,
        flags: EntryFlags::HAS_OUT,
        expires: 1_000_000,
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

/// The reply key of a NAT connection (the real server answers the client).
fn out_key(c: &NewConn) -> ConnKey {
    ConnKey {
        daddr: c.daddr,
        dport: c.dport,
        ..in_key(c)
    }
    .reversed()
}

#[test]
fn concurrent_workers_and_sweeper_stay_consistent() {
    const PER_WORKER: u32 = 20_000;
    const CAP: u32 = 30_000;
    let t = Arc::new(ConnTable::new(CAP, [5, 6, 7, 8]));
    let stop = Arc::new(AtomicBool::new(false));

    // The sweeper removes every entry whose dest_id is even, repeatedly.
    let sweeper = {
        let t = t.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut removed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                t.scan(0, u32::MAX, |v, _| {
                    if v.dest_id % 2 == 0 && t.remove(v.idx, v.sw).is_some() {
                        removed += 1;
                    }
                });
            }
            removed
        })
    };

    let workers: Vec<_> = (1..=3u8)
        .map(|w| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..PER_WORKER {
                    let c = conn(w, i);
                    if t.insert(&c).is_ok() && i % 2 == 1 {
                        kept.push(i);
                    }
                    // Look up a recent conn of ours in both directions; whatever is
                    // found must be exactly that conn.
                    let j = i.saturating_sub(7);
                    let cj = conn(w, j);
                    for (k, dir_out) in [(in_key(&cj), false), (out_key(&cj), true)] {
                        if let Some((v, _)) = t.lookup(&k, 0) {
                            assert_eq!(v.caddr, cj.caddr, "found under a wrong key");
                            assert_eq!(v.cport, cj.cport);
                            assert_eq!(v.dest_id, j);
                            assert_eq!(v.svc_id, w as u32);
                            if dir_out {
                                // Change state from the other direction.
                                t.cas_state(v.idx, v.sw, ESTABLISHED, v.flags());
                            }
                        }
                    }
                    assert!(t.live() <= CAP);
                }
                (w, kept)
            })
        })
        .collect();
    let kept: Vec<(u8, Vec<u32>)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let removed = sweeper.join().unwrap();
    assert!(removed > 0);

    // Every odd conn that was inserted is still there, findable both ways, and
    // no even one survived a final sweep.
    t.scan(0, u32::MAX, |v, _| {
        if v.dest_id % 2 == 0 {
            t.remove(v.idx, v.sw);
        }
    });
    let mut live = 0;
    t.scan(0, u32::MAX, |v, _| {
        live += 1;
        assert_eq!(v.dest_id % 2, 1);
        let c = conn(v.svc_id as u8, v.dest_id);
        let (a, _) = t.lookup(&in_key(&c), 0).expect("in key");
        let (b, _) = t.lookup(&out_key(&c), 0).expect("out key");
        assert_eq!(a.idx, v.idx);
        assert_eq!(b.idx, v.idx);
        let state = t.sw(v.idx).state();
        assert!(state == ESTABLISHED || state == SYN_RECV, "{state:?}");
    });
    assert_eq!(live, t.live());
    // No inserted odd conn was lost.
    let mut n = 0;
    for (w, ids) in &kept {
        for &i in ids {
            let c = conn(*w, i);
            assert!(t.lookup(&in_key(&c), 0).is_some(), "conn {w}/{i} lost");
            n += 1;
        }
    }
    assert_eq!(n, live, "exactly the kept conns are live");
}
