//! The command an option entry makes: the checks ipvsadm makes per command
//! after the option loop (zero port, one-packet, address family, tunnel
//! options, list conflicts) and the service, dest, list or daemon spec built
//! with its defaults.

use super::command::{fail, fmt, CmdError, Command, ListWhat};
use super::legal::*;
use super::options::Entry;
use super::popt::Cmd;
use std::net::{IpAddr, Ipv4Addr};
use xvs_core::service::{
    Af, DestSpec, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec, SvcFlags,
};

/// The [`Command`] of command `cmd` with the options of `e`.
pub(super) fn command(cmd: Cmd, e: Entry) -> Result<Command, CmdError> {
    let key = || -> ServiceKey {
        if e.fwmark != 0 {
            ServiceKey::Fwmark {
                mark: e.fwmark,
                af: if e.af6 { Af::V6 } else { Af::V4 },
            }
        } else {
            ServiceKey::Addr {
                proto: e.proto.unwrap_or(Protocol::Tcp),
                addr: e.svc_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: e.svc_port,
            }
        }
    };
    let has_svc = e.options & (1 << O_SERVICE) != 0;
    match cmd {
        Cmd::Add | Cmd::Edit => {
            if e.fwmark == 0 && e.svc_port == 0 && e.flags & SvcFlags::PERSISTENT == 0 {
                return fail("Zero port specified for non-persistent service");
            }
            if e.flags & SvcFlags::ONEPACKET != 0 && e.fwmark == 0 && e.proto != Some(Protocol::Udp)
            {
                return fail("One-Packet Scheduling is only for UDP virtual services");
            }
            let sched_name = e.sched.clone().unwrap_or_else(|| "wlc".into());
            let Some(sched) = SchedKind::from_name(&sched_name) else {
                // The kernel refuses an unknown scheduler (ENOENT).
                return Err(CmdError {
                    message: "Scheduler or persistence engine not found".into(),
                    exit: 255,
                });
            };
            let spec = ServiceSpec {
                key: key(),
                sched,
                flags: SvcFlags(e.flags),
                timeout: if e.flags & SvcFlags::PERSISTENT != 0 {
                    e.timeout
                } else {
                    0
                },
                netmask: e.netmask,
            };
            Ok(if cmd == Cmd::Add {
                Command::AddService(spec)
            } else {
                Command::EditService(spec)
            })
        }
        Cmd::Del => Ok(Command::DelService(key())),
        Cmd::Flush => Ok(Command::Clear),
        Cmd::Restore => Ok(Command::Restore),
        Cmd::Save => Ok(Command::Save {
            format: e.format | fmt::RULE,
        }),
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let addr = e.dest_addr.expect("required by the legality table");
            let mut port = e.dest_port;
            if cmd != Cmd::DelDest {
                if e.fwmark == 0 && matches!(e.fwd, FwdMethod::Tunnel | FwdMethod::Route) {
                    port = e.svc_port;
                }
                let svc_v6 = e.af6 || e.svc_addr.is_some_and(|a| a.is_ipv6());
                if addr.is_ipv6() != svc_v6 && e.fwd != FwdMethod::Tunnel {
                    return fail("Different address family is allowed only for tunneling servers");
                }
                let tun_opts = (1u64 << O_TUN_TYPE)
                    | (1 << O_TUN_PORT)
                    | (1 << O_TUN_NOCSUM)
                    | (1 << O_TUN_CSUM)
                    | (1 << O_TUN_REMCSUM);
                if e.options & tun_opts != 0 && e.fwd != FwdMethod::Tunnel {
                    return fail("Tunnel options conflict with forward method");
                }
                // ipip (the only type here) takes none of the gue/gre options.
                for (opt, name) in [
                    (O_TUN_PORT, "tun-port"),
                    (O_TUN_NOCSUM, "tun-nocsum"),
                    (O_TUN_CSUM, "tun-csum"),
                    (O_TUN_REMCSUM, "tun-remcsum"),
                ] {
                    if e.options & (1 << opt) != 0 {
                        return fail(format!(
                            "Illegal '{name}' option with the 'ipip' tunnel type"
                        ));
                    }
                }
            }
            let d = DestSpec {
                addr,
                port,
                fwd: e.fwd,
                weight: e.weight,
                u_threshold: e.u_thr,
                l_threshold: e.l_thr,
            };
            Ok(match cmd {
                Cmd::AddDest => Command::AddDest(key(), d),
                Cmd::EditDest => Command::EditDest(key(), d),
                _ => Command::DelDest(key(), addr, port),
            })
        }
        Cmd::List => {
            let o = e.options;
            let has = |b: usize| o & (1 << b) != 0;
            if ((has(O_CONNECTION) || has(O_TIMEOUT) || has(O_DAEMON))
                && (has(O_STATS) || has(O_RATE) || has(O_THRESHOLDS)))
                || ((has(O_TIMEOUT) || has(O_DAEMON)) && has(O_PERSISTENTCONN))
            {
                return fail("options conflicts in the list command");
            }
            let what = if has(O_CONNECTION) {
                ListWhat::Conns
            } else if has_svc {
                ListWhat::Service(key())
            } else if has(O_TIMEOUT) {
                ListWhat::Timeout
            } else if has(O_DAEMON) {
                ListWhat::Daemon
            } else {
                ListWhat::All
            };
            Ok(Command::List {
                what,
                format: e.format,
            })
        }
        Cmd::Zero => Ok(Command::Zero(has_svc.then(key))),
        Cmd::Timeout => {
            let (a, b, c) = e.set_values.expect("checked by process_options");
            Ok(Command::SetTimeouts(a, b, c))
        }
        Cmd::StartDaemon => {
            let mut d = e.daemon.clone();
            if d.mcast_ifn.is_empty() {
                d.mcast_ifn = "eth0".into();
            }
            Ok(Command::StartDaemon(d))
        }
        Cmd::StopDaemon => Ok(Command::StopDaemon(e.daemon.state)),
        Cmd::AddLaddr | Cmd::DelLaddr => {
            let l = e.laddr.expect("required by the legality table");
            Ok(if cmd == Cmd::AddLaddr {
                Command::AddLaddr(key(), l)
            } else {
                Command::DelLaddr(key(), l)
            })
        }
        Cmd::GetLaddr => Ok(Command::GetLaddr(has_svc.then(key))),
    }
}
