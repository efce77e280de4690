//! Connection sync through the engine: a master's workers queue what the
//! kernel would sync, the records go through the real encoder and decoder,
//! and a backup that applies them forwards the connection's next packets to
//! the same real server, in the same state.

mod common;
use common::*;
use xvs_core::engine::SyncApply;
use xvs_core::engine::Verdict;
use xvs_sync::{MesgBuilder, SyncConn, SyncDecoder, SyncVersion};

const VIP: &str = "10.77.0.100";
const CIP: &str = "10.77.0.2";

fn lab(extra: &str) -> Lab {
    let mut lab = Lab::new(4096);
    lab.cmd(format!("-A -t {VIP}:80 -s rr {extra}").trim());
    for i in 11..=13 {
        lab.cmd(&format!("-a -t {VIP}:80 -r 10.77.1.{i}:80 -m"));
    }
    lab
}

/// What the master's sync thread would send: every queued copy, as records.
fn drain(m: &Lab) -> Vec<SyncConn> {
    let snap = m.engine.snapshot();
    let mut out = Vec::new();
    for q in m.engine.sync.queues() {
        while let Some(v) = q.pop() {
            out.extend(m.engine.sync_record(&snap, &v, None));
        }
    }
    out
}

/// Encoded, sent, decoded and applied on `b`.
fn ship(recs: &[SyncConn], b: &Lab) -> Vec<SyncApply> {
    let mut mb = MesgBuilder::new(SyncVersion::V1, 0, 1472);
    let mut dgrams = Vec::new();
    for r in recs {
        dgrams.extend(mb.push(r).unwrap());
    }
    dgrams.extend(mb.flush());
    let mut dec = SyncDecoder::new(xvs_sync::BackupConfig { syncid: 0 });
    let mut out = Vec::new();
    for d in dgrams {
        for c in dec.decode(&d).conns {
            out.push(b.engine.sync_apply(&c, b.now));
        }
    }
    assert_eq!(dec.stats().drops.total(), 0);
    out
}

fn client(lab: &mut Lab, cport: u16, flags: &str) -> (Verdict, Vec<u8>) {
    let f = tcp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        (CIP, cport),
        (VIP, 80),
        flags,
        b"x",
    );
    lab.send(&f, PORT_CLI)
}

#[test]
fn established_conns_sync_at_the_threshold_and_forward_on_the_backup() {
    let mut m = lab("");
    let mut b = lab("");
    m.engine.sync_set_master(true);
    let (v, out) = client(&mut m, 4000, "S");
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let rs = seen(&out).dst.to_string();
    // SYN-ACK from the real server, then the client's ACK: ESTABLISHED.
    let synack = tcp_frame(rs_mac(11), DIR_RS_MAC, (&rs, 80), (CIP, 4000), "SA", b"");
    let _ = m.send(&synack, PORT_RS);
    let _ = client(&mut m, 4000, "A");
    assert!(drain(&m).is_empty(), "nothing before the 3rd packet");
    let _ = client(&mut m, 4000, "AP");
    let recs = drain(&m);
    assert_eq!(recs.len(), 1, "the 3rd packet syncs it: {recs:?}");
    assert_eq!(recs[0].state, 1, "ESTABLISHED");
    assert_eq!(recs[0].timeout, 900);
    assert_eq!(ship(&recs, &b), [SyncApply::Created]);
    // The backup forwards the next client packet (not a SYN) to the same RS.
    let (v, out) = client(&mut b, 4000, "AP");
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(seen(&out).dst.to_string(), rs);
    assert_eq!(
        b.counts(&format!("{VIP}:80"), &format!("{rs}:80")),
        (1, 0, 0)
    );
    // And the server's reply, SNATed back to the VIP.
    let reply = tcp_frame(rs_mac(11), DIR_RS_MAC, (&rs, 80), (CIP, 4000), "A", b"y");
    let (v, out) = b.send(&reply, PORT_RS);
    assert_eq!(v, Verdict::Tx(PORT_CLI));
    assert_eq!(seen(&out).src.to_string(), VIP);
    // A second sync updates it in place; every 50 packets after the 3rd.
    for _ in 0..50 {
        let _ = client(&mut m, 4000, "AP");
    }
    let recs = drain(&m);
    assert_eq!(recs.len(), 1, "53rd packet");
    assert_eq!(ship(&recs, &b), [SyncApply::Updated]);
    // A FIN is a state change: synced at once.
    let _ = client(&mut m, 4000, "AF");
    let recs = drain(&m);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].state, 7, "CLOSE_WAIT (IPVS: a client FIN)");
    assert_eq!(ship(&recs, &b), [SyncApply::Updated]);
    assert_eq!(
        b.counts(&format!("{VIP}:80"), &format!("{rs}:80")),
        (0, 1, 0)
    );
}

#[test]
fn templates_sync_with_their_connections() {
    let mut m = lab("-p 300");
    let mut b = lab("-p 300");
    m.engine.sync_set_master(true);
    let (_, out) = client(&mut m, 5000, "S");
    let rs = seen(&out).dst.to_string();
    let recs = drain(&m);
    assert_eq!(recs.len(), 1, "the template, at the first packet");
    assert!(recs[0].is_template());
    assert_eq!(recs[0].timeout, 300);
    assert_eq!(ship(&recs, &b), [SyncApply::Created]);
    assert_eq!(b.counts(&format!("{VIP}:80"), &format!("{rs}:80")).2, 1);
    // On the backup, a new connection of that client follows the template.
    for p in 5001..5004 {
        let (_, out) = client(&mut b, p, "S");
        assert_eq!(seen(&out).dst.to_string(), rs);
    }
}

#[test]
fn a_full_queue_drops_and_counts() {
    let mut m = lab("-p 300");
    m.engine.sync_set_master(true);
    m.engine.sync.set_qlen_max(2);
    for p in 0..5 {
        let f = tcp_frame(
            CLIENT_MAC,
            DIR_CLI_MAC,
            (&format!("10.77.0.{}", 2 + p), 6000),
            (VIP, 80),
            "S",
            b"",
        );
        let _ = m.send(&f, PORT_CLI);
    }
    let (queued, dropped) = m.engine.sync.queue_totals();
    assert_eq!((queued, dropped), (2, 3));
}

#[test]
fn records_wait_for_their_dest_and_replace_a_moved_conn() {
    let mut m = lab("");
    m.engine.sync_set_master(true);
    let _ = client(&mut m, 7000, "S");
    for _ in 0..3 {
        let _ = client(&mut m, 7000, "A");
    }
    let recs = drain(&m);
    assert_eq!(recs.len(), 1);
    let mut b = Lab::new(4096);
    assert_eq!(ship(&recs, &b), [SyncApply::NoDest], "no service yet");
    b.cmd(&format!("-A -t {VIP}:80 -s rr"));
    assert_eq!(ship(&recs, &b), [SyncApply::NoDest], "no dest yet");
    for i in 11..=13 {
        b.cmd(&format!("-a -t {VIP}:80 -r 10.77.1.{i}:80 -m"));
    }
    assert_eq!(ship(&recs, &b), [SyncApply::Created]);
    // The master moved the connection to another dest: replaced; the
    // expiry notice (INACTIVE) of the old one is then ignored.
    let mut moved = recs[0].clone();
    let old = moved.clone();
    moved.addrs = xvs_sync::ConnAddrs::from_ips(
        moved.addrs.caddr(),
        moved.addrs.vaddr(),
        if moved.addrs.daddr() == ip("10.77.1.11") {
            ip("10.77.1.12")
        } else {
            ip("10.77.1.11")
        },
    )
    .unwrap();
    assert_eq!(b.engine.sync_apply(&moved, b.now), SyncApply::Replaced);
    let mut notice = old;
    notice.flags = xvs_sync::ConnFlags(notice.flags.0 | xvs_sync::ConnFlags::INACTIVE);
    assert_eq!(b.engine.sync_apply(&notice, b.now), SyncApply::Stale);
    assert_eq!(b.engine.conns.live(), 1);
}

#[test]
fn records_keep_their_timeout_on_the_backup() {
    let mut m = lab("");
    let mut b = lab("");
    m.engine.sync_set_master(true);
    let _ = client(&mut m, 8000, "S");
    for _ in 0..3 {
        let _ = client(&mut m, 8000, "A");
    }
    let mut recs = drain(&m);
    recs[0].timeout = 30;
    assert_eq!(ship(&recs, &b), [SyncApply::Created]);
    b.advance(29);
    b.sweep();
    assert_eq!(b.engine.conns.live(), 1);
    b.advance(2);
    b.sweep();
    assert_eq!(b.engine.conns.live(), 0, "expired at the record's timeout");
}
