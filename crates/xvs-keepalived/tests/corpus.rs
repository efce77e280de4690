//! keepalived.conf files written from keepalived's documentation (every LVS
//! keyword xvs takes, comments, includes, groups and ranges, IPv6), read
//! and checked for what they mean; and files xvs refuses, each with the
//! message it must give (`# expect: LINE: KEYWORD: why` on its first line).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use xvs_core::service::{Af, FwdMethod, Protocol, SchedKind, ServiceKey, SvcFlags};
use xvs_keepalived::*;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn load_ok(name: &str) -> Config {
    let p = dir().join("corpus").join(name);
    xvs_keepalived::load(&p).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn the_samples_of_keepalived_s_documentation() {
    let c = load_ok("web-nat.conf");
    assert_eq!(c.virtual_servers.len(), 2);
    assert!(c.notes.iter().any(|n| n.contains("global_defs ignored")));
    assert!(c
        .notes
        .iter()
        .any(|n| n.contains("1 VRRP block(s) ignored") && n.contains("vrrp_instance")));

    let ssl = &c.virtual_servers[0];
    assert_eq!(ssl.name, "[192.168.200.100]:tcp:443");
    let s = &ssl.services[0];
    assert_eq!(
        s.key,
        ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: ip("192.168.200.100"),
            port: 443
        }
    );
    assert_eq!(s.sched, SchedKind::Rr);
    assert!(s.flags.persistent());
    assert_eq!(s.timeout, 50);
    let rs = &ssl.real_servers[0];
    assert_eq!(rs.fwd, FwdMethod::Masq);
    let chk = &rs.checks[0].spec;
    let CheckKind::Http(h) = &chk.kind else {
        panic!("{chk:?}")
    };
    assert!(h.tls.is_some());
    assert_eq!(chk.kind.name(), "SSL_GET");
    assert_eq!(h.urls.len(), 2);
    assert_eq!(h.urls[1].path, "/mrtg/");
    assert_eq!(
        h.urls[1].digest,
        Some([
            0x9b, 0x3a, 0x0c, 0x85, 0xa8, 0x87, 0xa2, 0x56, 0xd6, 0x93, 0x9d, 0xa8, 0x8a, 0xab,
            0xd8, 0xcd
        ])
    );
    assert_eq!(h.urls[0].status, [(200, 299)], "keepalived's default");
    assert_eq!(chk.dst, Some("192.168.201.100:443".parse().unwrap()));
    assert_eq!(
        (chk.connect_timeout, chk.retry, chk.delay_before_retry),
        (secs(3.0), 3, secs(3.0))
    );
    assert_eq!(chk.delay_loop, secs(6.0), "the virtual server's");
    assert_eq!(chk.warmup, secs(6.0), "warmup defaults to delay_loop");
    assert!(!chk.alpha);

    let web = &c.virtual_servers[1];
    assert_eq!(
        web.sorry
            .as_ref()
            .map(|s| (s.addr, s.port, s.fwd, s.inhibit)),
        Some((ip("192.168.200.200"), Some(1358), FwdMethod::Masq, false))
    );
    let h0 = &web.real_servers[0].checks[0].spec;
    assert_eq!(h0.retry, 3, "nb_get_retry is retry");
    let CheckKind::Http(h1) = &web.real_servers[1].checks[0].spec.kind else {
        panic!()
    };
    assert_eq!(h1.protocol, HttpProtocol::V11);
    assert_eq!(h1.urls[0].status, [(200, 299), (404, 404)]);
    assert_eq!(h1.urls[0].virtualhost.as_deref(), Some("www.example.com"));
    assert_eq!((web.quorum, web.hysteresis), (1, 0));
}

#[test]
fn every_checker_and_every_timing_keyword() {
    let c = load_ok("checkers.conf");
    let vs = &c.virtual_servers[0];
    assert!(vs.ha_suspend && vs.omega);
    assert_eq!((vs.quorum, vs.hysteresis), (3, 1));
    assert_eq!(
        vs.quorum_up.as_ref().unwrap().argv,
        ["/usr/local/bin/quorum-up", "VS 80"]
    );
    assert_eq!(
        vs.quorum_down.as_ref().unwrap().argv,
        ["/usr/local/bin/quorum-down"]
    );
    let sorry = vs.sorry.as_ref().unwrap();
    assert!(sorry.inhibit);
    assert_eq!(sorry.fwd, FwdMethod::Route);
    assert_eq!(vs.services[0].sched, SchedKind::Wlc);

    let r1 = &vs.real_servers[0];
    assert_eq!((r1.weight, r1.u_threshold, r1.l_threshold), (3, 1000, 800));
    assert!(
        !r1.inhibit,
        "the real server's off beats the virtual server's"
    );
    assert_eq!(r1.fwd, FwdMethod::Route);
    let up = r1.notify_up.as_ref().unwrap();
    assert_eq!(up.argv, ["/usr/local/bin/rs-up", "10.77.0.11"]);
    assert_eq!(
        (up.user.as_deref(), up.group.as_deref()),
        (Some("nobody"), Some("nogroup"))
    );
    let http = &r1.checks[0].spec;
    assert_eq!(http.dst, Some("10.77.9.11:8080".parse().unwrap()));
    assert_eq!(http.bindto, Some(ip("10.77.0.1")));
    assert_eq!(http.bind_port, Some(40000));
    assert_eq!(http.bind_if.as_deref(), Some("eth1"));
    assert_eq!(http.fwmark, Some(7));
    assert_eq!(
        (
            http.connect_timeout,
            http.retry,
            http.delay_before_retry,
            http.warmup,
            http.delay_loop
        ),
        (secs(2.0), 4, secs(1.5), secs(3.0), secs(5.0))
    );
    assert!(!http.alpha, "alpha no on the real server");
    assert!(http.log_all_failures);
    let CheckKind::Http(h) = &http.kind else {
        panic!()
    };
    assert_eq!(h.urls[0].status, [(200, 200), (204, 204), (300, 302)]);
    assert_eq!(h.urls[0].virtualhost.as_deref(), Some("vs.example.com"));
    // The TCP_CHECK inherits the real server's and virtual server's settings.
    let tcp = &r1.checks[1].spec;
    assert_eq!(tcp.kind, CheckKind::Tcp);
    assert_eq!(tcp.dst, Some("10.77.0.11:80".parse().unwrap()));
    assert_eq!(
        (
            tcp.connect_timeout,
            tcp.retry,
            tcp.delay_before_retry,
            tcp.warmup,
            tcp.delay_loop
        ),
        (secs(0.75), 2, secs(0.5), Duration::ZERO, secs(1.0))
    );
    let CheckKind::Http(s) = &r1.checks[2].spec.kind else {
        panic!()
    };
    let tls = s.tls.as_ref().unwrap();
    assert!(tls.enable_sni && tls.close_notify);
    assert_eq!(tls.sni_name.as_deref(), Some("api.example.com"));
    assert_eq!(
        s.urls[0].virtualhost.as_deref(),
        Some("checker.example.com")
    );

    let r2 = &vs.real_servers[1];
    assert_eq!(r2.weight, 2, "the virtual server's weight");
    assert!(r2.inhibit, "the virtual server's inhibit_on_failure");
    let misc = &r2.checks[0].spec;
    let CheckKind::Misc(m) = &misc.kind else {
        panic!()
    };
    assert_eq!(
        m.script.argv,
        ["/usr/local/bin/check-rs", "10.77.0.12", "with space"]
    );
    assert_eq!(
        (m.timeout, m.dynamic, m.script.user.as_deref()),
        (secs(4.0), true, Some("nobody"))
    );
    assert_eq!(misc.dst, None);
    assert_eq!(misc.retry, 1);
    assert!(misc.alpha, "the virtual server's alpha");
    let CheckKind::Udp(u) = &r2.checks[1].spec.kind else {
        panic!()
    };
    assert_eq!(u.payload.as_deref(), Some(&[0x01, 0x02, 0xab, 0xcd][..]));
    assert!(u.require_reply);
    assert_eq!(u.reply, Some((vec![0x01, 0x00], vec![0xff, 0x00])));
    assert_eq!((u.min_reply_len, u.max_reply_len), (2, 512));
    assert_eq!(
        r2.checks[1].spec.dst,
        Some("10.77.0.12:53".parse().unwrap())
    );
    let dns = &r2.checks[2].spec;
    assert_eq!(
        dns.kind,
        CheckKind::Dns(DnsCheck {
            qtype: 1,
            name: "www.example.com".into()
        })
    );
    assert_eq!(
        dns.retry, 2,
        "the virtual server's retry beats DNS_CHECK's 3"
    );
    let ping = &r2.checks[3].spec;
    assert_eq!(
        (&ping.kind, ping.retry, ping.dst),
        (&CheckKind::Ping, 0, Some("10.77.0.12:0".parse().unwrap()))
    );
}

#[test]
fn groups_ranges_ipv6_and_fwmarks() {
    let c = load_ok("groups.conf");
    let web = &c.virtual_servers[0];
    assert_eq!(web.name, "group web");
    let keys: Vec<String> = web.services.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "-t 192.168.200.3:80",
            "-t 192.168.200.4:80",
            "-t 192.168.200.5:80",
            "-t 10.0.0.254:80",
            "-t 10.0.0.255:80",
            "-t 10.0.1.0:80",
            "-t 10.0.1.1:80",
            "-t 10.1.0.8:80",
            "-t 10.1.0.9:80",
            "-t 10.1.0.10:80",
            "-t 10.1.0.11:80",
            "-f 7",
        ]
    );
    let s = &web.services[0];
    assert_eq!(s.sched, SchedKind::Sh);
    assert_eq!(
        s.flags.0,
        SvcFlags::PERSISTENT | SvcFlags::SCHED1 | SvcFlags::SCHED2
    );
    assert_eq!(s.timeout, 360, "persistence_timeout alone is 6 minutes");
    assert_eq!(s.netmask, 0xffff_ff00);
    let rs = &web.real_servers[0];
    assert_eq!(rs.fwd, FwdMethod::Tunnel);
    let fw = web.services.last().unwrap();
    assert_eq!(
        rs.dest_spec(&fw.key, 1).port,
        0,
        "a fwmark's DR/TUN dest has no port"
    );
    assert_eq!(rs.dest_spec(&s.key, 1).port, 80);
    assert_eq!(web.vips().len(), 11);

    let web6 = &c.virtual_servers[1];
    let keys: Vec<String> = web6.services.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "-t [fd77::100]:443",
            "-t [fd77::101]:443",
            "-t [fd77::102]:443",
            "-t [fd77::200]:443"
        ]
    );
    assert_eq!(web6.services[0].netmask, 64);
    assert_eq!(web6.services[0].sched, SchedKind::Mh);
    assert_eq!(web6.real_servers[0].weight, 5);
    assert_eq!(
        web6.real_servers[0].checks[0].spec.dst,
        Some("[fd77::1:11]:443".parse::<SocketAddr>().unwrap())
    );

    let fwm = &c.virtual_servers[2];
    assert_eq!(fwm.name, "FWM 9");
    assert_eq!(
        fwm.services[0].key,
        ServiceKey::Fwmark {
            mark: 9,
            af: Af::V6
        }
    );

    let udp = &c.virtual_servers[3];
    let s = &udp.services[0];
    assert_eq!(
        s.key,
        ServiceKey::Addr {
            proto: Protocol::Udp,
            addr: ip("fd77::300"),
            port: 53
        }
    );
    assert_eq!(s.flags.0, SvcFlags::ONEPACKET | SvcFlags::SCHED3);
    // NAT keeps the real server's own port.
    assert_eq!(udp.real_servers[0].dest_spec(&s.key, 1).port, 5353);
    assert_eq!(
        udp.real_servers[0].checks[0].spec.retry, 3,
        "DNS_CHECK's own default retry"
    );
    assert_eq!(
        udp.real_servers[0].checks[0].spec.delay_before_retry,
        secs(60.0),
        "DNS_CHECK's delay_before_retry defaults to delay_loop"
    );
}

#[test]
fn includes_globs_and_fullnat_local_addresses() {
    let c = load_ok("main.conf");
    let names: Vec<&str> = c.virtual_servers.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "[10.88.0.1]:tcp:80",
            "[10.88.0.2]:tcp:80",
            "[10.88.0.3]:tcp:80"
        ],
        "conf.d in name order, then the next include"
    );
    assert_eq!(c.files.len(), 4);
    assert!(c.files[1].ends_with("conf.d/10-first.conf"));
    let v2 = &c.virtual_servers[1];
    assert_eq!(v2.services[0].sched, SchedKind::Wrr);
    assert_eq!(v2.real_servers[0].weight, 4);
    assert_eq!(v2.real_servers[0].checks[0].spec.connect_timeout, secs(2.0));
    // NAT with another port.
    let v1 = &c.virtual_servers[0];
    assert_eq!(
        v1.real_servers[0].dest_spec(&v1.services[0].key, 1).port,
        8080
    );
    let f = &c.virtual_servers[2];
    assert_eq!(f.real_servers[0].fwd, FwdMethod::FullNat);
    assert_eq!(
        f.laddrs,
        [ip("10.88.2.200"), ip("10.88.2.201"), ip("10.88.2.210")]
    );
    // Errors in an included file name that file.
    let e = xvs_keepalived::parse_str(
        &format!(
            "include {}\n",
            dir().join("refused").join("smtp.conf").display()
        ),
        "top.conf",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("refused/smtp.conf:6: SMTP_CHECK: this checker is not supported by xvs"),
        "{e}"
    );
}

#[test]
fn what_xvs_does_not_do_is_refused_with_file_line_and_keyword() {
    let mut n = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("refused"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", p.display()))
            .replace("TESTS", &dir().display().to_string());
        let e = xvs_keepalived::load(&p).expect_err(&p.display().to_string());
        assert_eq!(e.to_string(), format!("{}:{want}", p.display()));
        n += 1;
    }
    assert!(n >= 10);
}

#[test]
fn defaults_are_keepalived_s() {
    let c = xvs_keepalived::parse_str(
        "virtual_server 10.0.0.1 80 {\n real_server 10.0.1.1 80 {\n HTTP_GET { url { path / } }\n TCP_CHECK {}\n MISC_CHECK { misc_path /bin/true }\n DNS_CHECK {}\n }\n}\n",
        "d.conf",
    )
    .unwrap();
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.services[0].sched, SchedKind::Wlc);
    assert_eq!(vs.real_servers[0].fwd, FwdMethod::Masq, "NAT by default");
    assert_eq!(vs.real_servers[0].weight, 1);
    let spec = |i: usize| &vs.real_servers[0].checks[i].spec;
    // (retry, delay_before_retry) per checker type; delay_loop 60, timeout 5.
    assert_eq!((spec(0).retry, spec(0).delay_before_retry), (1, secs(3.0)));
    assert_eq!((spec(1).retry, spec(1).delay_before_retry), (1, secs(1.0)));
    assert_eq!((spec(2).retry, spec(2).delay_before_retry), (0, secs(1.0)));
    assert_eq!((spec(3).retry, spec(3).delay_before_retry), (3, secs(60.0)));
    for i in 0..4 {
        assert_eq!(spec(i).delay_loop, secs(60.0));
        assert_eq!(spec(i).connect_timeout, secs(5.0));
        assert_eq!(spec(i).warmup, secs(60.0));
    }
    let CheckKind::Misc(m) = &spec(2).kind else {
        panic!()
    };
    assert_eq!(m.timeout, secs(60.0), "misc_timeout defaults to delay_loop");
    assert_eq!(
        spec(3).kind,
        CheckKind::Dns(DnsCheck {
            qtype: 6,
            name: ".".into()
        }),
        "SOA of the root"
    );
    // A quorum above the total weight is cut, a hysteresis at the quorum too.
    let c = xvs_keepalived::parse_str(
        "virtual_server 10.0.0.1 80 {\n quorum 5\n hysteresis 9\n real_server 10.0.1.1 80 { weight 2 }\n}\n",
        "q.conf",
    )
    .unwrap();
    assert_eq!(
        (c.virtual_servers[0].quorum, c.virtual_servers[0].hysteresis),
        (2, 1)
    );
    assert_eq!(c.notes.len(), 2);
}

/// The example shipped in configs/ loads and means what its comments say.
#[test]
fn shipped_example_loads() {
    let p = dir().join("../../../configs/keepalived.conf");
    let c = xvs_keepalived::load(&p).unwrap_or_else(|e| panic!("{e}"));
    let vs = &c.virtual_servers[0];
    assert_eq!((vs.quorum, vs.hysteresis), (2, 1));
    assert!(vs.real_servers[1].inhibit);
    assert_eq!(vs.real_servers[0].checks[0].spec.delay_loop, secs(2.0));
    assert_eq!(c.notes.len(), 2, "global_defs and the VRRP block");
}
