//! xvsd's control socket as any client sees it, not only xvsadm: what it
//! accepts, how it bounds its clients, and the socket file itself.

mod common;

use common::Daemon;
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
