//! Hostile input: arbitrary bytes and mutated real frames never panic the
//! engine, never grow the connection table past its bound, and never disturb
//! an established flow.

mod common;
use common::*;
use proptest::prelude::*;
use xvs_core::engine::Verdict;

const VIP: &str = "10.77.0.100";
const CIP: &str = "10.77.0.2";

fn lab_with_a_flow() -> (Lab, Vec<u8>, Vec<u8>) {
    let mut lab = Lab::new(64);
    lab.cmd("-A -t 10.77.0.100:80 -s rr");
    lab.cmd("-a -t 10.77.0.100:80 -r 10.77.1.11:80 -m");
    lab.cmd("-A -u 10.77.0.100:53 -s rr");
    lab.cmd("-a -u 10.77.0.100:53 -r 10.77.1.12:53 -i");
    let syn = tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 5555), (VIP, 80), "S", b"");
    let (v, first) = lab.send(&syn, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let data = tcp_frame(
        CLIENT_MAC,
        DIR_CLI_MAC,
        (CIP, 5555),
        (VIP, 80),
        "AP",
        b"payload",
    );
    (lab, data, first)
}

fn check_flow_intact(lab: &mut Lab, data: &[u8]) {
    let (v, out) = lab.send(data, PORT_CLI);
    assert_eq!(v, Verdict::Tx(PORT_RS));
    let s = seen(&out);
    assert_eq!((s.dst, s.dport), (ip("10.77.1.11"), 80));
    assert_eq!(s.payload, b"payload");
    assert!(lab.engine.conns.live() <= lab.engine.conns.capacity());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (mut lab, data, _) = lab_with_a_flow();
        for port in [PORT_CLI, PORT_RS] {
            let _ = lab.send(&bytes, port);
        }
        check_flow_intact(&mut lab, &data);
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..4,
        flips in proptest::collection::vec((0usize..128, any::<u8>()), 1..8),
        cut in 0usize..140,
    ) {
        let (mut lab, data, _) = lab_with_a_flow();
        let mut f = match which {
            0 => tcp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 6000), (VIP, 80), "S", b"abc"),
            1 => udp_frame(CLIENT_MAC, DIR_CLI_MAC, (CIP, 6000), (VIP, 53), b"query"),
            2 => tcp_frame(CLIENT_MAC, DIR_CLI_MAC, ("fd77::2", 6000), ("fd77::100", 80), "S", b""),
            _ => tcp_frame(rs_mac(11), DIR_RS_MAC, ("10.77.1.11", 80), (CIP, 5555), "A", b"x"),
        };
        for (pos, val) in flips {
            if pos < f.len() {
                f[pos] ^= val;
            }
        }
        f.truncate(cut.max(1));
        for port in [PORT_CLI, PORT_RS] {
            let _ = lab.send(&f, port);
        }
        check_flow_intact(&mut lab, &data);
    }
}

#[test]
fn syn_flood_is_bounded_and_established_flow_survives() {
    let (mut lab, data, _) = lab_with_a_flow();
    for i in 0..2000u32 {
        let src = format!("10.77.{}.{}", 100 + (i >> 8) % 100, i & 0xff);
        let syn = tcp_frame(
            CLIENT_MAC,
            DIR_CLI_MAC,
            (&src, (i % 60000) as u16 + 1),
            (VIP, 80),
            "S",
            b"",
        );
        let _ = lab.send(&syn, PORT_CLI);
        assert!(lab.engine.conns.live() <= 64);
    }
    check_flow_intact(&mut lab, &data);
}
