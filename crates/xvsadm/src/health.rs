//! `xvsadm -L --health` (xvs extension): the health checks xvsd runs from
//! `--keepalived-conf`, per virtual server, real server and checker.
//!
//! ```text
//! Virtual server [10.77.0.100]:tcp:80  quorum 1  hysteresis 0  alive weight 1  quorum up
//!   TCP  10.77.0.100:80
//!   -> 10.77.1.11:80                down    out of the table         for 3.2s
//!      TCP_CHECK  10.77.1.11:80          down    3 ok  4 failed  last failed 0.1ms 0.4s ago: connect: connection refused
//!   -> 10.77.1.12:80                alive   weight 1                 for 12.0s
//!      HTTP_GET   http://10.77.1.12:80/  up     14 ok  0 failed  last ok 1.3ms 0.2s ago: / status 200
//!   sorry server 10.77.1.13:80  not in use
//! ```

use crate::format::{addrport, service_name, Names};
use std::fmt::Write;
use xvs_ctl::health::VsHealth;

fn dur_ms(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}

fn latency(us: u64) -> String {
    if us < 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{}ms", us / 1000)
    }
}

/// The listing; `format` is `-L`'s (only `-n` matters here).
pub fn list(vss: &[VsHealth], format: u32, names: &dyn Names) -> String {
    let numeric = format & xvs_ctl::cmdline::fmt::NUMERIC != 0;
    let mut out = String::new();
    for v in vss {
        let _ = writeln!(
            out,
            "Virtual server {}  quorum {}  hysteresis {}  alive weight {}  {}{}",
            v.name,
            v.quorum,
            v.hysteresis,
            v.alive_weight,
            if v.quorum_up {
                "quorum up"
            } else {
                "quorum down"
            },
            if v.suspended {
                "  checkers suspended (ha_suspend: no VIP here)"
            } else {
                ""
            }
        );
        for k in &v.services {
            let _ = writeln!(out, "  {}", service_name(k, format, names));
        }
        for r in &v.real_servers {
            let listed = match r.listed {
                None => "out of the table".to_string(),
                Some(0) => "weight 0 (inhibited)".to_string(),
                Some(w) => format!("weight {w}"),
            };
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<24} for {}",
                addrport(&r.addr, r.port, None, numeric, names),
                if r.alive { "alive" } else { "down" },
                listed,
                dur_ms(r.since_ms)
            );
            for c in &r.checks {
                let last = match &c.last {
                    None => "not run yet".to_string(),
                    Some(l) => format!(
                        "last {} {} {} ago: {}",
                        if l.ok { "ok" } else { "failed" },
                        latency(l.latency_us),
                        dur_ms(l.age_ms),
                        l.reason
                    ),
                };
                let state = match (c.up, c.failing) {
                    (true, 0) => "up".to_string(),
                    (true, n) => format!("up, retry {n}"),
                    (false, _) => "down".to_string(),
                };
                let _ = writeln!(
                    out,
                    "     {:<10} {:<30} {:<10} {} ok  {} failed  {last}",
                    c.kind, c.target, state, c.successes, c.failures
                );
            }
        }
        if let Some(s) = &v.sorry {
            let _ = writeln!(
                out,
                "  sorry server {}  {}",
                addrport(&s.addr, s.port, None, numeric, names),
                if s.in_use { "in use" } else { "not in use" }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::NoNames;
    use xvs_ctl::health::{CheckHealth, CheckResult, RsHealth, SorryHealth};

    #[test]
    fn lists_every_level() {
        let v = VsHealth {
            name: "[10.77.0.100]:tcp:80".into(),
            services: vec![xvs_core::service::ServiceKey::Addr {
                proto: xvs_core::service::Protocol::Tcp,
                addr: "10.77.0.100".parse().unwrap(),
                port: 80,
            }],
            quorum: 1,
            hysteresis: 0,
            alive_weight: 0,
            quorum_up: false,
            suspended: false,
            sorry: Some(SorryHealth {
                addr: "10.77.1.13".parse().unwrap(),
                port: 80,
                in_use: true,
            }),
            real_servers: vec![RsHealth {
                addr: "10.77.1.11".parse().unwrap(),
                port: 80,
                alive: false,
                weight: 1,
                listed: Some(0),
                since_ms: 3200,
                checks: vec![CheckHealth {
                    kind: "TCP_CHECK".into(),
                    target: "10.77.1.11:80".into(),
                    up: false,
                    failing: 0,
                    successes: 3,
                    failures: 4,
                    last: Some(CheckResult {
                        ok: false,
                        reason: "connect: connection refused".into(),
                        latency_us: 120,
                        age_ms: 400,
                    }),
                }],
            }],
        };
        let text = list(&[v], xvs_ctl::cmdline::fmt::NUMERIC, &NoNames);
        assert_eq!(
            text,
            "Virtual server [10.77.0.100]:tcp:80  quorum 1  hysteresis 0  alive weight 0  quorum down\n\
             \x20 TCP  10.77.0.100:80\n\
             \x20 -> 10.77.1.11:80                down    weight 0 (inhibited)     for 3.2s\n\
             \x20    TCP_CHECK  10.77.1.11:80                  down       3 ok  4 failed  last failed 0.1ms 0.4s ago: connect: connection refused\n\
             \x20 sorry server 10.77.1.13:80  in use\n"
        );
    }
}
