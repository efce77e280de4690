//! The checks xvsd applies to every op it is sent, whoever sends it: the limits
//! ipvsadm's command line enforces (see [`crate::cmdline`]), with its messages.
//!
//! The command line refuses these values before they are ever sent; a client
//! speaking the control protocol directly skips that, and some values would
//! break the daemon (a timeout beyond 2^31 ticks wraps the expiry comparison,
//! so every connection would be born expired). Values the command line cannot
//! produce at all (an empty sync interface name) get the message ipvsadm prints
//! for the kernel's EINVAL.

use crate::proto::{DaemonSpec, Op};
use std::net::IpAddr;
use xvs_core::service::{Af, FwdMethod, Protocol, ServiceError, ServiceKey, ServiceSpec};
use xvs_core::service::{DestSpec, MAX_WEIGHT};

/// Longest timeout ipvsadm accepts (31 days).
pub const MAX_TIMEOUT: u32 = 86400 * 31;
/// Largest `--sync-maxlen` (an IPv4 datagram's payload: 65535 - 20 - 8).
pub const MAX_SYNC_MAXLEN: u16 = 65535 - 20 - 8;
/// Longest interface name (the kernel's IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Checks one op; the error is the message ipvsadm prints for the same value.
pub fn check_op(op: &Op) -> Result<(), String> {
    match op {
        Op::AddService(s) | Op::EditService(s) => check_service(s),
        Op::DelService(k) | Op::Zero(Some(k)) => check_key(k),
        Op::Clear | Op::Zero(None) | Op::StopDaemon(_) | Op::SetSyncKnob(..) => Ok(()),
        Op::AddDest(k, d) | Op::EditDest(k, d) => {
            check_key(k)?;
            check_dest(k, d)
        }
        Op::DelDest(k, _, _) => check_key(k),
        Op::SetTimeouts(tcp, tcpfin, udp) => {
            for t in [tcp, tcpfin, udp] {
                check_timeout(*t, 0)?;
            }
            Ok(())
        }
        Op::StartDaemon(d) => check_daemon(d),
        Op::AddLaddr(k, a) | Op::DelLaddr(k, a) => {
            check_key(k)?;
            check_laddr(a)
        }
        Op::AddMark(m) | Op::DelMark(m) => m.check(),
        Op::SetMarks(ms) => ms.iter().try_for_each(|m| m.check()),
        Op::SetKnob(n, v) => crate::knobs::check(n, *v),
    }
}

/// `-f 0` is no mark.
fn check_key(k: &ServiceKey) -> Result<(), String> {
    match k {
        ServiceKey::Fwmark { mark: 0, .. } => Err("invalid fwmark value `0' specified".into()),
        ServiceKey::Addr { proto, .. } if !proto.is_service() => {
            Err(format!("{proto} services are not supported"))
        }
        _ => Ok(()),
    }
}

fn check_timeout(t: u32, min: u32) -> Result<(), String> {
    if (min..=MAX_TIMEOUT).contains(&t) {
        Ok(())
    } else {
        Err(format!("invalid timeout value `{t}' specified"))
    }
}

fn check_service(s: &ServiceSpec) -> Result<(), String> {
    check_key(&s.key)?;
    // `-p` takes 1..MAX_TIMEOUT; without it the timeout is unused, but it is
    // still kept and shown, so it stays within the same bound.
    check_timeout(s.timeout, if s.flags.persistent() { 1 } else { 0 })?;
    if s.key.af() == Af::V6 && !(1..=128).contains(&s.netmask) {
        return Err("illegal ipv6 netmask specified".into());
    }
    if let ServiceKey::Addr { proto, port, .. } = s.key {
        if port == 0 && !s.flags.persistent() {
            return Err("Zero port specified for non-persistent service".into());
        }
        if s.flags.one_packet() && proto != Protocol::Udp {
            return Err("One-Packet Scheduling is only for UDP virtual services".into());
        }
    }
    Ok(())
}

fn check_dest(k: &ServiceKey, d: &DestSpec) -> Result<(), String> {
    if !(0..=MAX_WEIGHT).contains(&d.weight) {
        return Err("illegal weight specified".into());
    }
    if d.u_threshold > i32::MAX as u32 {
        return Err("illegal u_threshold specified".into());
    }
    if d.l_threshold > i32::MAX as u32 {
        return Err("illegal l_threshold specified".into());
    }
    if Af::of(&d.addr) != k.af() && d.fwd != FwdMethod::Tunnel {
        return Err("Different address family is allowed only for tunneling servers".into());
    }
    Ok(())
}

fn check_daemon(d: &DaemonSpec) -> Result<(), String> {
    // The command line defaults the name to eth0 and cuts it at 15 bytes; the
    // kernel refuses what is left (EINVAL).
    if d.mcast_ifn.is_empty() || d.mcast_ifn.len() > MAX_IFNAME || d.mcast_ifn.contains('\0') {
        return Err(ServiceError::Invalid.to_string());
    }
    // 0 means "the default" for each of these, as for the kernel.
    if d.sync_maxlen > MAX_SYNC_MAXLEN {
        return Err("illegal sync-maxlen specified".into());
    }
    match d.mcast_group {
        Some(IpAddr::V4(a)) if !a.is_multicast() => Err(format!("invalid IPv4 mcast-group `{a}'")),
        Some(IpAddr::V6(a)) if !a.is_multicast() => Err(format!("invalid IPv6 mcast-group `{a}'")),
        _ => Ok(()),
    }
}

/// A local address must be a unicast address the director can own.
pub fn check_laddr(a: &IpAddr) -> Result<(), String> {
    let ok = match a {
        IpAddr::V4(v) => !(v.is_unspecified() || v.is_broadcast() || v.is_multicast()),
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("illegal local address `{a}' specified"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::{parse, Command};
    use crate::proto::DaemonState;

    /// The op of a command line (which the command line itself accepts).
    fn op(line: &str) -> Op {
        let mut argv = vec!["ipvsadm".to_string()];
        argv.extend(line.split_whitespace().map(String::from));
        let c = parse(&argv).unwrap_or_else(|e| panic!("{line}: {}", e.message));
        c.to_op().expect("a rule change")
    }

    /// The message the command line prints for `line`.
    fn cli_error(line: &str) -> String {
        let mut argv = vec!["ipvsadm".to_string()];
        argv.extend(line.split_whitespace().map(String::from));
        match parse(&argv) {
            Err(e) => e.message,
            Ok(c) => panic!("{line} parsed: {c:?}"),
        }
    }

    #[test]
    fn what_the_command_line_accepts_passes() {
        for line in [
            "-A -t 10.77.0.100:80 -s rr",
            "-A -t 10.77.0.100:0 -p",
            "-A -t 10.77.0.100:80 -p 2678400 -M 255.255.255.0",
            "-A -f 7 -6 -p 1 -M 64",
            "-A -u [fd77::100]:53 -o",
            "-a -t 10.77.0.100:80 -r 10.77.1.11:8080 -m -w 65535 -x 2147483647 -y 2147483647",
            "-a -t 10.77.0.100:80 -r [fd77::11]:80 -i -w 0",
            "--set 2678400 0 1",
            "--start-daemon master --mcast-interface abcdefghijklmno --sync-maxlen 65507 --mcast-group 239.1.1.1",
            "-P -t 10.77.0.100:80 -z 10.77.1.200",
            "-D -f 1",
        ] {
            assert_eq!(check_op(&op(line)), Ok(()), "{line}");
        }
    }

    /// Each op is what a raw client could send in place of a command line the
    /// command line refuses: both give the same message.
    #[test]
    fn what_the_command_line_refuses_is_refused_with_its_message() {
        let svc = ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: "10.77.0.100".parse().unwrap(),
            port: 80,
        };
        let mut persist = op("-A -t 10.77.0.100:80 -p 1");
        if let Op::AddService(s) = &mut persist {
            s.timeout = 2_678_401;
        }
        let mut persist0 = op("-A -t 10.77.0.100:80 -p 1");
        if let Op::AddService(s) = &mut persist0 {
            s.timeout = 0;
        }
        let mut mask6 = op("-A -f 7 -6 -p");
        if let Op::AddService(s) = &mut mask6 {
            s.netmask = 129;
        }
        let mut zero_port = op("-A -t 10.77.0.100:80");
        if let Op::AddService(s) = &mut zero_port {
            s.key = ServiceKey::Addr {
                proto: Protocol::Tcp,
                addr: "10.77.0.100".parse().unwrap(),
                port: 0,
            };
        }
        let mut ops_tcp = op("-A -u 10.77.0.100:80 -o");
        if let Op::AddService(s) = &mut ops_tcp {
            s.key = svc;
        }
        let dest = |f: &dyn Fn(&mut DestSpec)| {
            let mut o = op("-a -t 10.77.0.100:80 -r 10.77.1.11 -m");
            if let Op::AddDest(_, d) = &mut o {
                f(d);
            }
            o
        };
        let mut daemon = op("--start-daemon master");
        if let Op::StartDaemon(d) = &mut daemon {
            d.sync_maxlen = 65508;
        }
        let mut group = op("--start-daemon master");
        if let Op::StartDaemon(d) = &mut group {
            d.mcast_group = Some("10.77.0.1".parse().unwrap());
        }
        let cases: Vec<(Op, &str)> = vec![
            (persist, "-A -t 10.77.0.100:80 -p 2678401"),
            (persist0, "-A -t 10.77.0.100:80 -p 0"),
            (Op::SetTimeouts(21_474_837, 0, 0), "--set 21474837 0 0"),
            (Op::SetTimeouts(0, 2_678_401, 0), "--set 0 2678401 0"),
            (Op::SetTimeouts(0, 0, u32::MAX), "--set 0 0 4294967295"),
            (mask6, "-A -f 7 -6 -p -M 129"),
            (zero_port, "-A -t 10.77.0.100:0"),
            (ops_tcp, "-A -t 10.77.0.100:80 -o"),
            (
                Op::DelService(ServiceKey::Fwmark {
                    mark: 0,
                    af: Af::V4,
                }),
                "-D -f 0",
            ),
            (
                dest(&|d| d.weight = 65536),
                "-a -t 10.77.0.100:80 -r 10.77.1.11 -w 65536",
            ),
            (
                dest(&|d| d.weight = -1),
                "-a -t 10.77.0.100:80 -r 10.77.1.11 -w -1",
            ),
            (
                dest(&|d| d.u_threshold = 1 << 31),
                "-a -t 10.77.0.100:80 -r 10.77.1.11 -x 2147483648",
            ),
            (
                dest(&|d| d.l_threshold = u32::MAX),
                "-a -t 10.77.0.100:80 -r 10.77.1.11 -y 4294967295",
            ),
            (
                dest(&|d| d.addr = "fd77::11".parse().unwrap()),
                "-a -t 10.77.0.100:80 -r [fd77::11]:80 -m",
            ),
            (daemon, "--start-daemon master --sync-maxlen 65508"),
            (group, "--start-daemon master --mcast-group 10.77.0.1"),
            (
                Op::AddLaddr(svc, "0.0.0.0".parse().unwrap()),
                "-P -t 10.77.0.100:80 -z 0.0.0.0",
            ),
            (
                Op::AddLaddr(svc, "ff02::1".parse().unwrap()),
                "-P -t 10.77.0.100:80 -z ff02::1",
            ),
        ];
        for (o, line) in cases {
            assert_eq!(check_op(&o), Err(cli_error(line)), "{line}: {o:?}");
        }
    }

    #[test]
    fn interface_names_the_kernel_would_refuse() {
        for name in ["", "sixteen-chars-xx", "a\0b"] {
            let d = DaemonSpec {
                state: DaemonState::Backup,
                mcast_ifn: name.into(),
                syncid: 0,
                sync_maxlen: 0,
                mcast_group: None,
                mcast_port: 0,
                mcast_ttl: 0,
            };
            assert_eq!(
                check_op(&Op::StartDaemon(d)),
                Err(ServiceError::Invalid.to_string()),
                "{name:?}"
            );
        }
        // Every command line gives a name the check accepts.
        let Command::StartDaemon(d) =
            parse(&["ipvsadm".into(), "--start-daemon".into(), "backup".into()]).unwrap()
        else {
            panic!()
        };
        assert_eq!(check_op(&Op::StartDaemon(d)), Ok(()));
    }
}
