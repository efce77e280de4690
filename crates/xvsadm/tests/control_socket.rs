//! xvsd's control socket as any client sees it, not only xvsadm: what it
//! accepts, how it bounds its clients, and the socket file itself.

mod common;

use common::Daemon;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use xvs_core::service::{Af, Protocol, ServiceKey, ServiceSpec, SvcFlags};
use xvs_ctl::{Client, Op, Request, Response, PROTOCOL_VERSION};

fn client(d: &Daemon) -> Client {
    let mut c = Client::connect(&d.sock).expect("connect");
    assert!(matches!(
        c.call(&Request::Hello {
            version: PROTOCOL_VERSION
        }),
        Ok(Response::Hello { .. })
    ));
    c
}

/// The reply to one op, as text: "ok" or the error message.
fn apply(c: &mut Client, op: Op) -> String {
    match c.call(&Request::Apply(op)).expect("reply") {
        Response::Ok => "ok".into(),
        Response::Error(e) => e.message,
        r => panic!("unexpected reply {r:?}"),
    }
}

/// A client that skips xvsadm's checks gets the same refusals, with the same
/// messages, as the command line (which refuses before sending anything).
#[test]
fn raw_clients_get_the_command_line_checks() {
    let d = Daemon::start();
    let mut c = client(&d);
    let cli_err = |line: &str| {
        let args: Vec<&str> = line.split_whitespace().collect();
        let o = d.run(&args);
        assert_ne!(o.code, 0, "{line}");
        o.stderr.trim_end().to_string()
    };
    // A 248.5-day timeout: 2^31 ticks of 10 ms.
    assert_eq!(
        apply(&mut c, Op::SetTimeouts(21_474_837, 0, 0)),
        cli_err("--set 21474837 0 0")
    );
    assert_eq!(
        d.run(&["-L", "--timeout"]).stdout,
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    let key = ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: "10.77.0.100".parse().unwrap(),
        port: 80,
    };
    let mut spec = ServiceSpec::new(key);
    spec.flags = SvcFlags(SvcFlags::PERSISTENT);
    spec.timeout = 2_678_401;
    assert_eq!(
        apply(&mut c, Op::AddService(spec.clone())),
        cli_err("-A -t 10.77.0.100:80 -p 2678401")
    );
    assert_eq!(d.run(&["-S", "-n"]).stdout, "", "nothing was added");
    spec.timeout = 2_678_400;
    assert_eq!(apply(&mut c, Op::AddService(spec)), "ok");
    let mut dest = xvs_core::service::DestSpec::new("10.77.1.11".parse().unwrap(), 80);
    dest.weight = 65536;
    assert_eq!(
        apply(&mut c, Op::AddDest(key, dest.clone())),
        cli_err("-a -t 10.77.0.100:80 -r 10.77.1.11 -w 65536")
    );
    dest.weight = 1;
    dest.u_threshold = u32::MAX;
    assert_eq!(
        apply(&mut c, Op::AddDest(key, dest)),
        cli_err("-a -t 10.77.0.100:80 -r 10.77.1.11 -x 4294967295")
    );
    let v6 = ServiceKey::Fwmark {
        mark: 3,
        af: Af::V6,
    };
    let mut spec6 = ServiceSpec::new(v6);
    spec6.flags = SvcFlags(SvcFlags::PERSISTENT);
    spec6.timeout = 60;
    spec6.netmask = 0;
    assert_eq!(
        apply(&mut c, Op::AddService(spec6)),
        cli_err("-A -f 3 -6 -p 60 -M 0")
    );
    assert_eq!(
        d.run(&["-S", "-n"]).stdout,
        "-A -t 10.77.0.100:80 -s wlc -p 2678400\n"
    );
}

/// A field of /proc/PID/status, as a number.
fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A connection that has sent the first bytes of a request and stops there.
fn half_request(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"Hello\":").unwrap();
    s
}

/// Waits until the daemon closes `s` (EOF or reset); returns how long it took.
fn closed_after(s: &mut UnixStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return t0.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return t0.elapsed(),
            Err(e) => panic!("not closed after {:?}: {e}", t0.elapsed()),
        }
    }
}

/// Hundreds of idle connections and one that never finishes its request do
/// not keep xvsadm out, and do not cost a thread each; the stalled request is
/// closed after its timeout.
#[test]
fn idle_and_stalled_clients_do_not_keep_xvsadm_out() {
    let d = Daemon::start();
    d.ok("-A -t 10.77.0.100:80 -s rr");
    let threads_before = proc_status(d.pid(), "Threads:");
    let mut half = half_request(&d);
    let idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&d.sock).unwrap())
        .collect();
    // Let the daemon accept them all.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let o = d.run(&["-L", "-n"]);
    let took = t0.elapsed();
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
    assert!(
        o.stdout.contains("TCP  10.77.0.100:80 rr\n"),
        "{}",
        o.stdout
    );
    assert!(took < Duration::from_secs(2), "xvsadm took {took:?}");
    // A bounded number of threads serve the clients.
    let threads = proc_status(d.pid(), "Threads:");
    assert!(
        threads <= threads_before + 64,
        "{threads} threads (were {threads_before})"
    );
    // The incomplete request is closed after its timeout (5 s) and no later.
    let waited = closed_after(&mut half, Duration::from_secs(10));
    assert!(waited < Duration::from_secs(7), "{waited:?}");
    // The newest idle connections are still served.
    for s in idle.iter().rev().take(5) {
        let mut c = s.try_clone().unwrap();
        xvs_ctl::proto::write_frame(
            &mut c,
            &Request::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .unwrap();
        let r: Option<Response> = xvs_ctl::proto::read_frame(&mut c, 1 << 20).unwrap();
        assert!(matches!(r, Some(Response::Hello { .. })), "{r:?}");
    }
    drop(idle);
}

/// When every place is taken by a client in the middle of a request, a new
/// client is told so at once rather than left waiting; once the stalled
/// requests time out, xvsadm is served again.
#[test]
fn a_full_house_of_busy_clients_is_a_clear_refusal() {
    let d = Daemon::start();
    let mut stalled: Vec<UnixStream> = (0..64).map(|_| half_request(&d)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let o = d.run(&["-L", "-n"]);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (
            2,
            "xvsadm: xvsd: xvsd is busy answering 64 control connections; try again\n"
        )
    );
    for s in &mut stalled {
        closed_after(s, Duration::from_secs(10));
    }
    let o = d.run(&["-L", "-n"]);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
}
