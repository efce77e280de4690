//! `xvsadm -S | xvsadm -C; xvsadm -R` restores the identical rule set, for
//! random rule sets (services of every kind, persistence, flags, dests of
//! every forwarding method, FULLNAT local addresses) built through `-R`.

mod common;

use common::Daemon;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::HashSet;

#[derive(Debug, Clone)]
struct Svc {
    /// "-t", "-u" or "-f".
    kind: &'static str,
    v6: bool,
    addr: u16,
    port: u16,
    sched: &'static str,
    persist: Option<u32>,
    mask: u8,
    ops: bool,
    flags: u8,
    dests: Vec<(u16, u16, &'static str, u32)>,
    laddrs: Vec<u16>,
}

const SCHEDS: [&str; 13] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
];
const FWDS: [&str; 4] = ["-m", "-g", "-i", "--fullnat"];

fn svc_strategy() -> impl Strategy<Value = Svc> {
    (
        prop::sample::select(vec!["-t", "-u", "-f"]),
        any::<bool>(),
        1u16..500,
        0u16..3,
        prop::sample::select(SCHEDS.to_vec()),
        prop::option::of(1u32..=2_678_400),
        1u8..=128,
        any::<bool>(),
        0u8..4,
        prop::collection::vec(
            (
                1u16..300,
                0u16..3,
                prop::sample::select(FWDS.to_vec()),
                0u32..=65535,
            ),
            0..4,
        ),
        prop::collection::vec(1u16..200, 0..3),
    )
        .prop_map(
            |(kind, v6, addr, port, sched, persist, mask, ops, flags, dests, laddrs)| Svc {
                kind,
                v6,
                addr,
                port,
                sched,
                persist,
                mask,
                ops,
                flags,
                dests,
                laddrs,
            },
        )
}

impl Svc {
    fn id(&self) -> String {
        let port = [80, 443, 0][self.port as usize];
        match (self.kind, self.v6) {
            ("-f", false) => format!("-f {}", self.addr),
            ("-f", true) => format!("-f {} -6", self.addr),
            (k, false) => format!("{k} 10.{}.{}.1:{port}", self.addr >> 8, self.addr & 0xff),
            (k, true) => format!("{k} [2001:db8::{:x}]:{port}", self.addr),
        }
    }

    /// The `-R` lines that create this service, valid by construction.
    fn lines(&self) -> Vec<String> {
        let id = self.id();
        let port0 = self.kind != "-f" && self.port == 2;
        let mut a = format!("-A {id} -s {}", self.sched);
        // A port-0 service must be persistent.
        let persist = self.persist.or(port0.then_some(360));
        if let Some(t) = persist {
            a += &format!(" -p {t}");
            if self.v6 {
                a += &format!(" -M {}", self.mask);
            } else {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.mask.min(32)))
                    .unwrap_or(0);
                a += &format!(" -M {}", std::net::Ipv4Addr::from(m));
            }
        }
        if self.ops && self.kind != "-t" {
            a += " -o";
        }
        let flags: Vec<&str> = match self.sched {
            "sh" => [(1, "sh-fallback"), (2, "sh-port")]
                .iter()
                .filter(|(b, _)| self.flags & b != 0)
                .map(|x| x.1)
                .collect(),
            "mh" => [(1, "mh-fallback"), (2, "mh-port")]
                .iter()
                .filter(|(b, _)| self.flags & b != 0)
                .map(|x| x.1)
                .collect(),
            _ => [(1, "flag-1"), (2, "flag-2")]
                .iter()
                .filter(|(b, _)| self.flags & b != 0)
                .map(|x| x.1)
                .collect(),
        };
        if !flags.is_empty() {
            a += &format!(" -b {}", flags.join(","));
        }
        let mut out = vec![a];
        let mut seen = HashSet::new();
        for &(addr, port, fwd, weight) in &self.dests {
            let dport = [80, 8080, 0][port as usize];
            let host = if self.v6 {
                format!("[2001:db8:1::{addr:x}]")
            } else {
                format!("192.168.{}.{}", addr >> 8, (addr & 0xff).max(1))
            };
            // -g/-i take the service port (not for fwmark services).
            let svc_port = [80, 443, 0][self.port as usize];
            let eff = if self.kind != "-f" && (fwd == "-g" || fwd == "-i") {
                svc_port
            } else {
                dport
            };
            if !seen.insert((host.clone(), eff)) {
                continue;
            }
            out.push(format!("-a {id} -r {host}:{dport} {fwd} -w {weight}"));
        }
        let mut lseen = HashSet::new();
        for &l in &self.laddrs {
            if !lseen.insert(l) {
                continue;
            }
            let lip = if self.v6 {
                format!("2001:db8:2::{l:x}")
            } else {
                format!("10.200.0.{l}")
            };
            out.push(format!("-P {id} -z {lip}"));
        }
        out
    }
}

#[test]
fn save_clear_restore_save_is_identity() {
    let d = Daemon::start();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let rules = prop::collection::vec(svc_strategy(), 1..6);
    runner
        .run(&rules, |svcs| {
            let mut ids = HashSet::new();
            let mut input = String::from("-C\n");
            for s in &svcs {
                if ids.insert(s.id()) {
                    for l in s.lines() {
                        input += &l;
                        input.push('\n');
                    }
                }
            }
            let o = d.run_in(&["-R"], &input);
            prop_assert_eq!((o.code, o.stderr.as_str()), (0, ""), "input:\n{}", input);
            let list1 = d.run(&["-L", "-n"]).stdout;
            let s1 = d.run(&["-S", "-n"]).stdout;
            d.ok("-C");
            prop_assert_eq!(d.run(&["-S", "-n"]).stdout, "");
            let o = d.run_in(&["-R"], &s1);
            prop_assert_eq!((o.code, o.stderr.as_str()), (0, ""), "saved:\n{}", s1);
            let s2 = d.run(&["-S", "-n"]).stdout;
            prop_assert_eq!(&s1, &s2);
            prop_assert_eq!(list1, d.run(&["-L", "-n"]).stdout);
            // Every service and dest made it into the save.
            prop_assert_eq!(
                s1.lines().filter(|l| l.starts_with("-A ")).count(),
                ids.len()
            );
            Ok(())
        })
        .unwrap();
}
