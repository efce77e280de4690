//! Issue 14: persistence templates, connection reuse and trash dests as the
//! kernel's IPVS (Linux 6.18.32, net/netfilter/ipvs) handles them. Each test
//! names the kernel function its expected values were derived from.
//!
//! In the scenarios a service has two dests added in the order .11 then .12;
//! the kernel keeps them newest first, so rr and wlc pick .12 first.

mod common;
use common::*;
use xvs_core::engine::{listed_expiry, state_name};
use xvs_core::engine::{DropReason, MarkRule, ReuseMode, Verdict};
use xvs_core::time::{tick_of, Time};

const VIP: &str = "10.77.0.100";
const CIP: &str = "10.77.0.2";
const SVC: &str = "10.77.0.100:80";

/// A service `-A -t VIP:80 <opts>` with NAT dests .11 then .12.
fn lab_with(opts: &str) -> Lab {
    let mut lab = Lab::new(4096);
    lab.cmd(&format!("-A -t {SVC} {opts}"));
    lab.cmd(&format!("-a -t {SVC} -r 10.77.1.11:80 -m"));
    lab.cmd(&format!("-a -t {SVC} -r 10.77.1.12:80 -m"));
    lab
}

/// Sends a TCP segment (flags as letters) from CIP:`cport` to the VIP and
/// returns the real server it went to, or the verdict if it did not go to one.
fn tcp(lab: &mut Lab, cip: &str, cport: u16, fl: &str) -> Result<String, Verdict> {
    let f = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (cip, cport), (VIP, 80), fl, b"");
    match lab.send(&f, PORT_CLI) {
        (Verdict::Tx(PORT_RS), out) => {
            let s = seen(&out);
            // DR keeps the VIP: the real server is the one the MAC names.
            Ok(if s.dst == ip(VIP) {
                format!("10.77.1.{}", s.dst_mac[5])
            } else {
                s.dst.to_string()
            })
        }
        (v, _) => Err(v),
    }
}

fn syn(lab: &mut Lab, cport: u16) -> String {
    tcp(lab, CIP, cport, "S").expect("SYN forwarded")
}

/// SYN then ACK: an ESTABLISHED connection; returns its real server.
fn established(lab: &mut Lab, cport: u16) -> String {
    let rs = syn(lab, cport);
    assert_eq!(tcp(lab, CIP, cport, "A").unwrap(), rs);
    rs
}

/// Sets the clock to `secs` after `t0` and sweeps the table.
fn at(lab: &mut Lab, t0: Time, secs: u64) {
    lab.now = t0.add_secs(secs);
    lab.sweep();
}

/// Point 1 — `ip_vs_conn_expire` re-arms a template that still controls
/// connections with `cp->timeout = 60*HZ`, and `ip_vs_conn_put` (from
/// `ip_vs_sched_persist`) restarts the timer with `cp->timeout` from then on.
/// `-p 100`: the template expires at 100 s with one connection (re-armed to
/// 160 s, timeout 60 s); a connection at 150 s restarts it to 150 + 60 = 210 s;
/// both connections are reset at 151 s (CLOSE, 10 s) and are gone at 161 s.
/// So the template dies at 210 s and the client is rescheduled at 215 s: rr
/// moves on from .12 to .11.
#[test]
fn a_rearmed_template_keeps_60_seconds() {
    let mut lab = lab_with("-s rr -p 100");
    let t0 = lab.now;
    assert_eq!(established(&mut lab, 1), "10.77.1.12");
    at(&mut lab, t0, 101);
    assert_eq!(lab.counts_any("10.77.1.12:80").2, 1, "re-armed, not freed");
    at(&mut lab, t0, 150);
    assert_eq!(established(&mut lab, 2), "10.77.1.12", "pinned");
    lab.now = t0.add_secs(151);
    for p in [1, 2] {
        tcp(&mut lab, CIP, p, "R").unwrap();
    }
    at(&mut lab, t0, 170);
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 1));
    at(&mut lab, t0, 209);
    assert_eq!(lab.counts_any("10.77.1.12:80").2, 1, "lives to 210 s");
    at(&mut lab, t0, 211);
    assert_eq!(
        lab.counts_any("10.77.1.12:80").2,
        0,
        "150 s + 60 s, not 150 s + the service's 100 s"
    );
    at(&mut lab, t0, 215);
    assert_eq!(syn(&mut lab, 3), "10.77.1.11", "rescheduled");
}

/// Point 1, the exact moment: a template found past its expiry while it
/// controls connections is one the kernel has re-armed already (its timer
/// fired at the expiry), so a connection then restarts it for 60 s even if
/// no sweep has run since.
#[test]
fn a_template_past_expiry_with_connections_counts_as_rearmed() {
    let mut lab = lab_with("-s rr -p 100");
    let t0 = lab.now;
    assert_eq!(established(&mut lab, 1), "10.77.1.12");
    // No sweep between the expiry (100 s) and this connection.
    lab.now = t0.add_secs(120);
    // `-c` shows the kernel's re-armed timer: 100 s + 60 s, 40 s left.
    let now = tick_of(lab.now);
    let mut left = None;
    lab.engine.conns.for_each_live(|v| {
        if v.flags().is_template() {
            left = Some(listed_expiry(&lab.engine.conns, &v, now).wrapping_sub(now) / 100);
        }
    });
    assert_eq!(left, Some(40));
    assert_eq!(established(&mut lab, 2), "10.77.1.12");
    lab.now = t0.add_secs(121);
    for p in [1, 2] {
        tcp(&mut lab, CIP, p, "R").unwrap();
    }
    at(&mut lab, t0, 179);
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 1));
    at(&mut lab, t0, 181);
    assert_eq!(lab.counts_any("10.77.1.12:80").2, 0, "120 s + 60 s");
}

/// Point 1, the other half: a template that controls nothing when its timer
/// fires is freed there (`ip_vs_conn_expire`), so a lookup after its expiry
/// does not find it even before the sweep has freed it.
#[test]
fn an_expired_template_without_connections_is_not_followed() {
    let mut lab = lab_with("-s rr -p 100");
    let t0 = lab.now;
    assert_eq!(established(&mut lab, 1), "10.77.1.12");
    lab.now = t0.add_secs(2);
    tcp(&mut lab, CIP, 1, "R").unwrap();
    at(&mut lab, t0, 20);
    // No sweep since 20 s: the template (expiry 100 s) is still in the table.
    lab.now = t0.add_secs(101);
    assert_eq!(syn(&mut lab, 2), "10.77.1.11", "rescheduled at 101 s");
}

/// Point 2 — `ip_vs_sched_persist` sets `ct->timeout = svc->timeout` when it
/// creates a template, and `ip_vs_conn_put` restarts the timer with the
/// template's own `cp->timeout`: an `-E` that changes `-p` does not reach
/// live templates. `-p 300`, a connection 0–11 s, `-E -p 30` at 20 s, a
/// connection at 25 s (restart: 25 + 300 = 325 s): at 100 s the client is
/// still pinned to .12 (rr would give .11).
#[test]
fn editing_the_persistence_timeout_leaves_live_templates_alone() {
    let mut lab = lab_with("-s rr -p 300");
    let t0 = lab.now;
    assert_eq!(established(&mut lab, 1), "10.77.1.12");
    lab.now = t0.add_secs(1);
    tcp(&mut lab, CIP, 1, "R").unwrap();
    lab.now = t0.add_secs(20);
    lab.cmd(&format!("-E -t {SVC} -s rr -p 30"));
    lab.now = t0.add_secs(25);
    assert_eq!(established(&mut lab, 2), "10.77.1.12");
    lab.now = t0.add_secs(26);
    tcp(&mut lab, CIP, 2, "R").unwrap();
    at(&mut lab, t0, 100);
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 1));
    assert_eq!(syn(&mut lab, 3), "10.77.1.12", "still pinned");
    // A template made after the edit gets the new 30 s.
    let other = tcp(&mut lab, "10.77.0.3", 1, "S").unwrap();
    assert_eq!(other, "10.77.1.11");
    lab.now = t0.add_secs(101);
    tcp(&mut lab, "10.77.0.3", 1, "R").unwrap(); // SYN_RECV stays (60 s)
    at(&mut lab, t0, 129);
    assert_eq!(lab.counts_any("10.77.1.11:80").2, 1);
    // Its connection is still in SYN_RECV, so the template is re-armed for
    // 60 s at 130 s; it dies at 190 s, after the connection (160 s).
    at(&mut lab, t0, 189);
    assert_eq!(lab.counts_any("10.77.1.11:80"), (0, 0, 1));
    at(&mut lab, t0, 191);
    assert_eq!(lab.counts_any("10.77.1.11:80"), (0, 0, 0));
}

/// Point 3 — `ip_vs_in_hook` reuses with `conn_reuse_mode &&
/// is_new_conn_expected(cp, conn_reuse_mode)`: any non-zero mode. Mode 2: a
/// SYN on a CLOSE connection expires it and is scheduled afresh (rr: .11).
/// Bit 1 (value 2) adds FIN_WAIT connections with NOOUTPUT (DR): reused in
/// mode 2, not in mode 1.
#[test]
fn conn_reuse_mode_2_still_reuses() {
    let mut lab = lab_with("-s rr");
    lab.rules.knobs.conn_reuse_mode = ReuseMode(2);
    lab.publish();
    assert_eq!(established(&mut lab, 9), "10.77.1.12");
    tcp(&mut lab, CIP, 9, "R").unwrap(); // ES -rst-> CLOSE
    assert_eq!(syn(&mut lab, 9), "10.77.1.11", "rescheduled");
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 0), "old conn gone");

    // DR: ES -fin-> FIN_WAIT (input-only table), NOOUTPUT still set.
    for mode in [1u32, 2, 3] {
        let mut lab = Lab::new(64);
        lab.cmd("-A -t 10.77.0.100:80 -s rr");
        lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.13:80 -g");
        lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.14:80 -g");
        lab.rules.knobs.conn_reuse_mode = ReuseMode(mode);
        lab.publish();
        assert_eq!(established(&mut lab, 9), "10.77.1.14");
        tcp(&mut lab, CIP, 9, "FA").unwrap();
        let want = if mode & 2 != 0 {
            "10.77.1.13" // expired and scheduled afresh
        } else {
            "10.77.1.14" // FIN_WAIT -syn-> SYN_RECV on the same connection
        };
        assert_eq!(syn(&mut lab, 9), want, "mode {mode}");
    }
}

/// Point 4 — in `ip_vs_in_hook` the quiesced-dest test (`expire_nodest_conn`
/// and the dest's weight is 0) comes first and does not look at
/// `conn_reuse_mode` (nor at the state or the controlling template). Mode 0,
/// `expire_nodest_conn` 1, `-e -w 0`: a SYN on the ESTABLISHED connection
/// expires it and goes to .11.
#[test]
fn quiesced_dest_rescheduling_ignores_the_reuse_mode() {
    let mut lab = lab_with("-s rr");
    lab.rules.knobs.conn_reuse_mode = ReuseMode::OFF;
    lab.rules.knobs.expire_nodest_conn = true;
    lab.publish();
    assert_eq!(established(&mut lab, 5), "10.77.1.12");
    lab.cmd(&format!("-e -t {SVC} -r 10.77.1.12:80 -m -w 0"));
    assert_eq!(syn(&mut lab, 5), "10.77.1.11", "rescheduled");
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 0));
    assert_eq!(lab.counts_any("10.77.1.11:80"), (1, 0, 0));
    // Without expire_nodest_conn the SYN stays on its connection.
    let mut lab = lab_with("-s rr");
    lab.rules.knobs.conn_reuse_mode = ReuseMode::OFF;
    lab.publish();
    assert_eq!(established(&mut lab, 5), "10.77.1.12");
    lab.cmd(&format!("-e -t {SVC} -r 10.77.1.12:80 -m -w 0"));
    assert_eq!(syn(&mut lab, 5), "10.77.1.12");
}

/// Point 5 — `ip_vs_in_hook` first decides port reuse (a SYN on a CLOSE
/// connection: expired, `cp = NULL`), and only for a connection it keeps does
/// it check that the dest is still available. Default sysctls: SYN, ACK, RST,
/// `-d` of its dest, then a SYN from the same port goes to the other dest.
#[test]
fn port_reuse_is_decided_before_dest_availability() {
    let mut lab = lab_with("-s rr");
    assert_eq!(established(&mut lab, 7), "10.77.1.12");
    tcp(&mut lab, CIP, 7, "R").unwrap();
    lab.cmd(&format!("-d -t {SVC} -r 10.77.1.12:80"));
    assert_eq!(syn(&mut lab, 7), "10.77.1.11");
    assert_eq!(lab.drops(DropReason::DestUnavailable), 0);
    // A connection that is not reusable still meets the availability check.
    assert_eq!(established(&mut lab, 8), "10.77.1.11");
    lab.cmd(&format!("-d -t {SVC} -r 10.77.1.11:80"));
    assert_eq!(
        tcp(&mut lab, CIP, 8, "S"),
        Err(Verdict::Drop(DropReason::DestUnavailable))
    );
}

/// Point 6 — for one-packet scheduling `ip_vs_schedule` still creates the
/// connection with `ip_vs_conn_new` (`ip_vs_bind_dest`: InActConn + 1, then
/// OVERLOAD at `totalconns >= u_threshold`) and `ip_vs_conn_put` expires it at
/// once (`ip_vs_unbind_dest`: with no lower threshold OVERLOAD is cleared only
/// when `totalconns * 4 < u_threshold * 3`). fwmark service with `-o`, fo,
/// .11 weight 10 `-x 4` holding 3 TCP connections: the datagram makes it 4
/// (OVERLOAD), back to 3 (12 < 12 is false: still OVERLOAD), so the next SYN
/// goes to .12.
#[test]
fn one_packet_scheduling_binds_the_dest() {
    let mut lab = Lab::new(64);
    lab.rules.marks = vec![MarkRule {
        proto: None,
        addr: ip(VIP),
        prefix_len: 32,
        ports: (0, 65535),
        src: None,
        src_prefix_len: 0,
        mark: 1,
    }];
    lab.cmd("-A -f 1 -s fo -o");
    lab.cmd("-a -f 1 -r 10.77.1.11:0 -m -w 10 -x 4");
    lab.cmd("-a -f 1 -r 10.77.1.12:0 -m -w 5");
    for p in 1..=3 {
        assert_eq!(syn(&mut lab, p), "10.77.1.11");
    }
    let q = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 5000), (VIP, 53), b"q");
    let (v, out) = lab.send(&q, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(seen(&out).dst, ip("10.77.1.11"));
    assert_eq!(lab.counts_any("10.77.1.11:0"), (3, 0, 0), "unbound again");
    assert_eq!(syn(&mut lab, 4), "10.77.1.12", ".11 stays OVERLOADED");
}

/// Point 7 — `ip_vs_dest_trash_expire` keeps a trash dest while anything
/// holds a reference (`refcnt > 1`), lblc/lblcr entries included
/// (`ip_vs_lblc_new` holds the dest); `ip_vs_trash_get_dest` then revives the
/// same dest, and lblc's entry hits again. `-d a`, purge, `-a a`, `-a c`: the
/// locality cache sends the client's packets to a.
#[test]
fn a_trash_dest_held_by_lblc_keeps_its_identity() {
    let mut lab = lab_with("-s lblc");
    assert_eq!(established(&mut lab, 1), "10.77.1.12", "wlc: list head");
    tcp(&mut lab, CIP, 1, "R").unwrap();
    lab.advance(11);
    lab.sweep();
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 0));
    let id = lab
        .table
        .get(&parse_svc("-t", SVC))
        .unwrap()
        .dest(&ip("10.77.1.12"), 80)
        .unwrap()
        .id;
    lab.cmd(&format!("-d -t {SVC} -r 10.77.1.12:80"));
    lab.table.purge_trash();
    assert_eq!(lab.table.trash_len(), 1, "the lblc entry holds it");
    lab.cmd(&format!("-a -t {SVC} -r 10.77.1.12:80 -m"));
    lab.cmd(&format!("-a -t {SVC} -r 10.77.1.13:80 -m"));
    let svc = lab.table.get(&parse_svc("-t", SVC)).unwrap();
    assert_eq!(svc.dest(&ip("10.77.1.12"), 80).unwrap().id, id, "revived");
    assert_eq!(
        established(&mut lab, 2),
        "10.77.1.12",
        "the cache hits again"
    );
    // Without the service (its scheduler and its entries gone) the dest is
    // purged once idle.
    tcp(&mut lab, CIP, 2, "R").unwrap();
    lab.advance(11);
    lab.sweep();
    lab.cmd(&format!("-D -t {SVC}"));
    lab.table.purge_trash();
    assert_eq!(lab.table.trash_len(), 0);
}

/// Point 8 — `ip_vs_expire_nodest_conn_flush` (queued by `__ip_vs_del_dest`
/// when `expire_nodest_conn` is set) deletes every entry of an unavailable
/// dest that controls nothing, templates included, and after each connection
/// its controlling template once that controls nothing more
/// (`cp_c && !n_control`), ASSURED or not. So the trash dest has no
/// PersistConn left and can be purged.
#[test]
fn the_nodest_flush_removes_templates_too() {
    let mut lab = lab_with("-s rr -p 300");
    lab.rules.knobs.expire_nodest_conn = true;
    lab.publish();
    assert_eq!(established(&mut lab, 1), "10.77.1.12");
    // Another client whose connection is gone: its template controls nothing.
    assert_eq!(tcp(&mut lab, "10.77.0.3", 1, "S").unwrap(), "10.77.1.11");
    assert_eq!(tcp(&mut lab, "10.77.0.4", 1, "S").unwrap(), "10.77.1.12");
    tcp(&mut lab, "10.77.0.4", 1, "A").unwrap();
    tcp(&mut lab, "10.77.0.4", 1, "R").unwrap();
    lab.advance(11);
    lab.sweep();
    assert_eq!(lab.counts_any("10.77.1.12:80"), (1, 0, 2));
    lab.cmd(&format!("-d -t {SVC} -r 10.77.1.12:80"));
    lab.sweep();
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 0));
    lab.table.purge_trash();
    assert_eq!(lab.table.trash_len(), 0);
    assert_eq!(lab.counts_any("10.77.1.11:80"), (1, 0, 1), "others kept");
}

/// Point 9 — `ip_vs_check_template` invalidates a template by rehashing it
/// under port 0xffff and only drops its reference (`__ip_vs_conn_put`, "don't
/// restart its timer"): it lives until its timer fires, counted in
/// PersistConn. `-p 300`, `expire_quiescent_template` 1, a connection 0–11 s
/// to .12, `-e -w 0` of .12 and a new SYN at 20 s (rescheduled to .11): .12
/// keeps PersistConn 1 until 300 s.
#[test]
fn an_invalidated_template_lives_out_its_timer() {
    let mut lab = lab_with("-s rr -p 300");
    lab.rules.knobs.expire_quiescent_template = true;
    lab.publish();
    let t0 = lab.now;
    assert_eq!(established(&mut lab, 1), "10.77.1.12");
    lab.now = t0.add_secs(1);
    tcp(&mut lab, CIP, 1, "R").unwrap();
    lab.now = t0.add_secs(20);
    lab.cmd(&format!("-e -t {SVC} -r 10.77.1.12:80 -m -w 0"));
    assert_eq!(syn(&mut lab, 2), "10.77.1.11", "template not honoured");
    at(&mut lab, t0, 21);
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 1));
    at(&mut lab, t0, 299);
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 1));
    // It is never followed again, even with the weight back.
    lab.cmd(&format!("-e -t {SVC} -r 10.77.1.12:80 -m -w 1"));
    assert_eq!(syn(&mut lab, 3), "10.77.1.11", "the new template");
    at(&mut lab, t0, 301);
    assert_eq!(lab.counts_any("10.77.1.12:80"), (0, 0, 0));
}

/// The state name `-c` shows for the template of client `cip`.
fn template_state(lab: &Lab, cip: &str) -> Option<&'static str> {
    let mut out = None;
    lab.engine.conns.for_each_live(|v| {
        if v.flags().is_template() && v.caddr == addr(cip) {
            out = Some(state_name(v.proto & 0x7f, v.state()));
        }
    });
    out
}

/// Point 10 — `set_tcp_state` calls `ip_vs_control_assure_ct` when a
/// connection enters ESTABLISHED: its template's state becomes
/// `IP_VS_CTPL_S_ASSURED`, which `ip_vs_state_name` shows as ASSURED.
#[test]
fn templates_become_assured_when_a_connection_is_established() {
    let mut lab = lab_with("-s rr -p 300");
    syn(&mut lab, 1);
    assert_eq!(template_state(&lab, CIP), Some("NONE"));
    tcp(&mut lab, CIP, 1, "A").unwrap();
    assert_eq!(template_state(&lab, CIP), Some("ASSURED"));
    // Stays ASSURED (a state, not a flag that the next transition clears).
    tcp(&mut lab, CIP, 1, "R").unwrap();
    assert_eq!(template_state(&lab, CIP), Some("ASSURED"));
    // DR: SYN -> SYN_RECV -> ESTABLISHED through the input-only table.
    let mut lab = Lab::new(64);
    lab.cmd("-A -t 10.77.0.100:80 -s rr -p 300");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -g");
    syn(&mut lab, 1);
    assert_eq!(template_state(&lab, CIP), Some("NONE"));
    tcp(&mut lab, CIP, 1, "A").unwrap();
    assert_eq!(template_state(&lab, CIP), Some("ASSURED"));
    // sloppy_tcp: a connection created by an ACK goes NONE -> ESTABLISHED
    // on its first packet.
    let mut lab = lab_with("-s rr -p 300");
    lab.rules.knobs.sloppy_tcp = true;
    lab.publish();
    tcp(&mut lab, CIP, 1, "A").unwrap();
    assert_eq!(template_state(&lab, CIP), Some("ASSURED"));
    // UDP connections never assure their template.
    let mut lab = Lab::new(64);
    lab.cmd("-A -u 10.77.0.100:53 -s rr -p 300");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.11:53 -m");
    let q = udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 5000), (VIP, 53), b"q");
    for _ in 0..3 {
        assert_eq!(lab.send(&q, PORT_CLI).0, Verdict::Tx(PORT_RS));
    }
    assert_eq!(template_state(&lab, CIP), Some("NONE"));
}
