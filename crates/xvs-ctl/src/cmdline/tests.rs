use super::values::inet_aton;
use super::*;
use xvs_core::service::{FwdMethod, SchedKind, SvcFlags};

fn p(s: &str) -> Result<Command, CmdError> {
    let mut v = vec!["ipvsadm".to_string()];
    v.extend(s.split_whitespace().map(str::to_string));
    parse(&v)
}

fn err(s: &str) -> (String, i32) {
    let e = p(s).unwrap_err();
    (e.message, e.exit)
}

#[test]
fn the_seed_examples() {
    let Command::AddService(s) = p("-A -t 207.175.44.110:80 -s rr").unwrap() else {
        panic!()
    };
    assert_eq!(s.sched, SchedKind::Rr);
    assert_eq!(s.key.to_string(), "-t 207.175.44.110:80");
    let Command::AddDest(k, d) = p("-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m").unwrap() else {
        panic!()
    };
    assert_eq!(k.port(), 80);
    assert_eq!((d.fwd, d.weight, d.port), (FwdMethod::Masq, 1, 80));
    assert!(matches!(
        p("-L -n").unwrap(),
        Command::List {
            what: ListWhat::All,
            format: fmt::NUMERIC
        }
    ));
}

#[test]
fn popt_grammar() {
    // Bundled short options, attached and optional arguments.
    assert!(matches!(
        p("-Ln").unwrap(),
        Command::List {
            format: fmt::NUMERIC,
            ..
        }
    ));
    let Command::AddService(s) = p("-At10.0.0.1:80 -p").unwrap() else {
        panic!()
    };
    assert_eq!(s.timeout, 360, "bare -p is 360 s");
    assert_eq!(s.sched, SchedKind::Wlc);
    let Command::AddService(s) = p("-A -t 10.0.0.1:80 -p 60 -s sh -b sh-port").unwrap() else {
        panic!()
    };
    assert_eq!(s.timeout, 60);
    assert_eq!(s.flags.0, SvcFlags::PERSISTENT | SvcFlags::SCHED2);
    let Command::AddService(s) = p("-A --tcp-service=10.0.0.1:http --persistent=7").unwrap() else {
        panic!()
    };
    assert_eq!((s.key.port(), s.timeout), (80, 7));
    assert_eq!(p("--set 1 2 3").unwrap(), Command::SetTimeouts(1, 2, 3));
    let Command::AddService(s) = p("-A -f 5 -6 -p").unwrap() else {
        panic!()
    };
    assert_eq!(s.netmask, 128);
    assert_eq!(s.key.to_string(), "-f 5 -6");
}

#[test]
fn dest_port_rules() {
    let Command::AddDest(_, d) = p("-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -g").unwrap() else {
        panic!()
    };
    assert_eq!(d.port, 80, "DR forces the service port");
    let Command::AddDest(_, d) = p("-a -t 10.0.0.1:80 -r 10.0.1.1 -m").unwrap() else {
        panic!()
    };
    assert_eq!(d.port, 80, "no port: the service port");
    let Command::AddDest(_, d) = p("-a -t [fd77::100]:80 -r [fd77::1:11]:81 -m -w 0").unwrap()
    else {
        panic!()
    };
    assert_eq!((d.port, d.weight), (81, 0));
}

#[test]
fn ipvsadm_errors_and_exit_codes() {
    assert_eq!(
        err("-t 1.2.3.4:80"),
        (
            "Try `ipvsadm -h' or 'ipvsadm --help' for more information.".into(),
            255
        )
    );
    // ipvsadm.c's option loop: a command after the first is an invalid
    // option, named by its whole argv word as popt reports it.
    assert_eq!(
        err("-A -t 1.2.3.4:80 -A"),
        ("invalid option `-A'".into(), 2)
    );
    assert_eq!(err("-L -nA"), ("invalid option `-nA'".into(), 2));
    assert_eq!(err("-L -h"), ("invalid option `-h'".into(), 2));
    assert_eq!(err("-Lq"), ("-Lq: unknown option".into(), 255));
    assert_eq!(err("-L -nq"), ("-nq: unknown option".into(), 255));
    // popt permutes: words before the command are leftover arguments.
    assert_eq!(err("foo -L"), ("unexpected argument foo".into(), 2));
    assert_eq!(p("1 2 3 --set").unwrap(), Command::SetTimeouts(1, 2, 3));
    // popt ignores a value given to a flag.
    assert!(matches!(p("-L --numeric=1"), Ok(Command::List { .. })));
    assert_eq!(
        err("-A -t 1.2.3.4:80 -s rr -s wrr"),
        ("multiple 'scheduler' options specified".into(), 2)
    );
    assert_eq!(
        err("-A -s rr"),
        (
            "You need to supply the 'service-address' option for the 'add-service' command".into(),
            2
        )
    );
    assert_eq!(
        err("-D -t 1.2.3.4:80 -s rr"),
        (
            "Illegal 'scheduler' option with the 'delete-service' command".into(),
            2
        )
    );
    assert_eq!(
        err("-L -c --timeout"),
        (
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
                .into(),
            2
        )
    );
    assert_eq!(
        err("-L -c --stats"),
        ("options conflicts in the list command".into(), 2)
    );
    assert_eq!(
        err("-A -t 1.2.3.4"),
        ("Zero port specified for non-persistent service".into(), 2)
    );
    assert_eq!(
        err("-A -t 1.2.3.4:80 -o"),
        (
            "One-Packet Scheduling is only for UDP virtual services".into(),
            2
        )
    );
    assert_eq!(
        err("-A -t 12345"),
        ("illegal virtual server address[:port] specified".into(), 2)
    );
    assert_eq!(
        err("-a -t 1.2.3.4:80 -r 1.2.3.5 -w 70000"),
        ("illegal weight specified".into(), 2)
    );
    assert_eq!(
        err("-A -t 1.2.3.4:80 -p 0"),
        ("invalid timeout value `0' specified".into(), 2)
    );
    assert_eq!(
        err("-A -t 1.2.3.4:80 -s rr -b sh-port"),
        ("incompatible scheduler flag `sh-port'".into(), 2)
    );
    assert_eq!(
        err("-A -t 1.2.3.4:80 -b nope"),
        ("invalid scheduler flag `nope'".into(), 2)
    );
    assert_eq!(
        err("-A -t 1.2.3.4:80 -s bogus"),
        ("Scheduler or persistence engine not found".into(), 255)
    );
    assert_eq!(
        err("-a -t 1.2.3.4:80 -r [fd77::1]:80 -m"),
        (
            "Different address family is allowed only for tunneling servers".into(),
            2
        )
    );
    assert_eq!(
        err("--set 1 2"),
        ("--set option requires 3 timeout values".into(), 2)
    );
    assert_eq!(err("-C foo"), ("unexpected argument foo".into(), 2));
    assert_eq!(err("-L --bogus"), ("--bogus: unknown option".into(), 255));
    assert_eq!(err("-A -6"), ("-6 used before -f\n".into(), 2));
    assert_eq!(
        err("-A -f 0"),
        ("invalid fwmark value `0' specified".into(), 2)
    );
}

#[test]
fn restore_input_is_split_like_config_stream() {
    let lines = restore_lines(
        "ipvsadm -A -t 1.2.3.4:80 -s rr\n\n  \t\r\n-a -t 1.2.3.4:80\t-r 1.2.3.5:80 -m\r\n",
        "xvsadm",
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].0, 1);
    assert_eq!(lines[0].1, ["xvsadm", "-A", "-t", "1.2.3.4:80", "-s", "rr"]);
    assert_eq!(lines[1].0, 4);
    assert_eq!(lines[1].1.len(), 7);
}

#[test]
fn inet_aton_forms() {
    assert_eq!(
        inet_aton("255.255.255.0").unwrap().to_string(),
        "255.255.255.0"
    );
    assert_eq!(inet_aton("10.1").unwrap().to_string(), "10.0.0.1");
    assert!(inet_aton("1.2.3.256").is_none());
    assert!(inet_aton("").is_none());
}
