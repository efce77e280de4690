//! Mid-flow pickup behind ECMP, on byte buffers: "director A" sees a flow
//! from its SYN; "director B", whose dests were added in another order, sees
//! only a packet from the middle of it (the router moved the flow after A
//! died or B joined). With `sloppy_tcp` and mh (or sh) B creates the
//! connection, ESTABLISHED at once, and sends the packet to the real server A
//! chose, for DR and TUN.

mod common;

use common::*;
use std::net::IpAddr;
use xvs_core::engine::state_name;
use xvs_core::engine::{DropReason, Verdict};

const VIP: &str = "10.77.0.100";
const RS: [&str; 5] = [
    "10.77.1.11",
    "10.77.1.12",
    "10.77.1.13",
    "10.77.1.14",
    "10.77.1.15",
];

/// A director with service `-s sched [-b flags]` and the RS added in `order`
/// (indices into [`RS`]) with `fwd`, weights 1..=5 by RS, `sloppy_tcp` set.
fn director(sched: &str, bflags: &str, fwd: &str, order: &[usize], sloppy: bool) -> Lab {
    let mut lab = Lab::new(4096);
    lab.rules.knobs.sloppy_tcp = sloppy;
    let b = if bflags.is_empty() {
        String::new()
    } else {
        format!(" -b {bflags}")
    };
    lab.cmd(&format!("-A -t {VIP}:80 -s {sched}{b}"));
    for &i in order {
        lab.cmd(&format!(
            "-a -t {VIP}:80 -r {}:80 {fwd} -w {}",
            RS[i],
            i + 1
        ));
    }
    lab
}

/// Client `i` of the test: addresses across 10.0.0.0/8, ports across the range.
fn client(i: u32) -> (String, u16) {
    let a = 0x0a00_0000u32 | (i.wrapping_mul(2_654_435_761) >> 8);
    (
        std::net::Ipv4Addr::from(a).to_string(),
        (1024 + i.wrapping_mul(7919) % 60000) as u16,
    )
}

fn frame(c: &(String, u16), flags: &str, payload: &[u8]) -> Vec<u8> {
    tcp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        (&c.0, c.1),
        (VIP, 80),
        flags,
        payload,
    )
}

/// The real server a forwarded frame goes to: the destination MAC (DR) or the
/// outer destination address (TUN).
fn rs_of(out: &[u8], fwd: &str) -> String {
    match fwd {
        "-g" => {
            let i = RS
                .iter()
                .position(|r| rs_mac(r.rsplit('.').next().unwrap().parse().unwrap()) == out[0..6])
                .expect("the frame goes to a real server's MAC");
            RS[i].to_string()
        }
        _ => {
            assert_eq!(out[14 + 9], 4, "IPIP");
            IpAddr::from(<[u8; 4]>::try_from(&out[14 + 16..14 + 20]).unwrap()).to_string()
        }
    }
}

/// The state `-c` would show for client `c`'s connection on `lab`.
fn conn_state(lab: &Lab, c: &(String, u16)) -> Option<&'static str> {
    let mut out = None;
    lab.engine.conns.for_each_live(|v| {
        if v.caddr == addr(&c.0) && v.cport == c.1 {
            out = Some(state_name(v.proto & 0x7f, v.state()));
        }
    });
    out
}

fn pickup(sched: &str, bflags: &str, fwd: &str) {
    let mut a = director(sched, bflags, fwd, &[0, 1, 2, 3, 4], true);
    let mut b = director(sched, bflags, fwd, &[3, 0, 4, 2, 1], true);
    let n = 300;
    let mut per_rs = std::collections::BTreeMap::new();
    for i in 0..n {
        let c = client(i);
        // A: the handshake's client half and data.
        let (v, out) = a.send(&frame(&c, "S", b""), PORT_CLI);
        assert_eq!(v, Verdict::Tx(PORT_RS));
        let chosen = rs_of(&out, fwd);
        for (flags, data) in [("A", &b""[..]), ("PA", &b"request"[..])] {
            let (v, out) = a.send(&frame(&c, flags, data), PORT_CLI);
            assert_eq!(v, Verdict::Tx(PORT_RS));
            assert_eq!(rs_of(&out, fwd), chosen);
        }
        // B: the next data segment is the first it sees of the flow.
        let mid = frame(&c, "PA", b"more data");
        let (v, out) = b.send(&mid, PORT_CLI);
        assert_eq!(v, Verdict::Tx(PORT_RS), "{sched} {fwd}: B forwards {c:?}");
        assert_eq!(
            rs_of(&out, fwd),
            chosen,
            "{sched} {bflags} {fwd}: B sends {c:?} to another real server"
        );
        if fwd == "-g" {
            assert_eq!(&out[12..], &mid[12..], "DR: the packet itself is untouched");
        } else {
            assert_eq!(&out[34..], &mid[14..], "TUN: the inner packet is untouched");
        }
        assert_eq!(conn_state(&b, &c), Some("ESTABLISHED"));
        // And the flow stays there.
        let (_, out) = b.send(&frame(&c, "A", b""), PORT_CLI);
        assert_eq!(rs_of(&out, fwd), chosen);
        *per_rs.entry(chosen).or_insert(0) += 1;
    }
    assert_eq!(
        per_rs.len(),
        RS.len(),
        "{sched}: every RS gets flows: {per_rs:?}"
    );
    // B counts the picked-up flows as active connections of their RS, as A does.
    for r in RS {
        let rip = format!("{r}:80");
        assert_eq!(
            b.counts(&format!("{VIP}:80"), &rip).0,
            a.counts(&format!("{VIP}:80"), &rip).0,
            "{r}: active connections"
        );
    }
    assert_eq!(b.drops(DropReason::NotSyn), 0);
}

#[test]
fn mh_dr_pickup_goes_to_the_same_real_server() {
    pickup("mh", "", "-g");
}

#[test]
fn mh_port_tun_pickup_goes_to_the_same_real_server() {
    pickup("mh", "mh-port", "-i");
}

#[test]
fn mh_fallback_dr_pickup_goes_to_the_same_real_server() {
    pickup("mh", "mh-fallback,mh-port", "-g");
}

#[test]
fn sh_pickup_goes_to_the_same_real_server() {
    pickup("sh", "", "-g");
    pickup("sh", "sh-port", "-i");
}

#[test]
fn without_sloppy_tcp_a_moved_flow_is_dropped_and_counted() {
    // The kernel's default: only a SYN makes a connection.
    let mut b = director("mh", "", "-g", &[0, 1, 2, 3, 4], false);
    let c = client(7);
    let (v, _) = b.send(&frame(&c, "PA", b"data"), PORT_CLI);
    assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
    assert_eq!(b.drops(DropReason::NotSyn), 1);
    assert_eq!(conn_state(&b, &c), None);
}

#[test]
fn a_reset_never_makes_a_connection() {
    // Even with sloppy_tcp (the kernel's `!th->rst`): a RST of an unknown
    // flow is dropped, so a stray reset cannot pin a client anywhere.
    let mut b = director("mh", "", "-g", &[0, 1, 2, 3, 4], true);
    let c = client(8);
    for flags in ["R", "RA"] {
        let (v, _) = b.send(&frame(&c, flags, b""), PORT_CLI);
        assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
    }
    assert_eq!(conn_state(&b, &c), None);
}

#[test]
fn a_picked_up_fin_closes_as_the_input_only_table_says() {
    // A flow that moves while closing: B forwards the FIN to the same RS and
    // keeps a short-lived entry (INPUT-ONLY: NONE + FIN -> CLOSE), so the
    // client's last ACK follows it too.
    let mut a = director("mh", "", "-g", &[0, 1, 2, 3, 4], true);
    let mut b = director("mh", "", "-g", &[4, 3, 2, 1, 0], true);
    let c = client(9);
    let (_, out) = a.send(&frame(&c, "S", b""), PORT_CLI);
    let chosen = rs_of(&out, "-g");
    let (v, out) = b.send(&frame(&c, "FA", b""), PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    assert_eq!(rs_of(&out, "-g"), chosen);
    assert_eq!(conn_state(&b, &c), Some("CLOSE"));
    let (_, out) = b.send(&frame(&c, "A", b""), PORT_CLI);
    assert_eq!(rs_of(&out, "-g"), chosen);
}
