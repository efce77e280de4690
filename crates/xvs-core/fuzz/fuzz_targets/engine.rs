//! Fuzzes the whole per-packet path: any frame, on either port, against an
//! engine with NAT, DR, TUN and FULLNAT services and an established flow.
//! Panics, out-of-bounds accesses and a table past its bound are failures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use xvs_core::addr::Addr;
use xvs_core::engine::{Engine, Limits, NextHop, RuleSet, StaticFib, Worker};
use xvs_core::frame::Frame;
use xvs_core::service::ServiceTable;
use xvs_core::service::{DestSpec, FwdMethod, Protocol, ServiceKey, ServiceSpec};
use xvs_core::time::Time;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn setup() -> (Arc<Engine>, Worker) {
    let nh = |port, a: &str| NextHop {
        port,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        mtu: 1500,
        src_addr: Addr::from(ip(a)),
    };
    let fib = StaticFib::new().default_route(nh(0, "10.77.0.1"));
    let mut t = ServiceTable::new();
    let mut laddrs = Vec::new();
    for (i, (proto, vip, fwd)) in [
        (Protocol::Tcp, "10.77.0.100", FwdMethod::Masq),
        (Protocol::Udp, "10.77.0.100", FwdMethod::Tunnel),
        (Protocol::Tcp, "fd77::100", FwdMethod::Route),
        (Protocol::Udp, "fd77::100", FwdMethod::FullNat),
    ]
    .into_iter()
    .enumerate()
    {
        let key = ServiceKey::Addr {
            proto,
            addr: ip(vip),
            port: 80,
        };
        t.add_service(ServiceSpec::new(key)).unwrap();
        let rip = if vip.contains(':') {
            format!("fd77::1:{}", 11 + i)
        } else {
            format!("10.77.1.{}", 11 + i)
        };
        let mut d = DestSpec::new(ip(&rip), 80);
        d.fwd = fwd;
        t.add_dest(&key, d).unwrap();
        laddrs.push((
            key,
            vec![ip(if vip.contains(':') {
                "fd77::1:200"
            } else {
                "10.77.1.200"
            })],
        ));
    }
    let e = Engine::new(
        Limits {
            conn_max: 256,
            ..Limits::default()
        },
        Arc::new(fib),
        [1, 2, 3, 4],
    );
    let mut r = RuleSet::from_table(&t);
    r.laddrs = laddrs;
    e.publish(&r);
    let w = e.worker(0);
    (e, w)
}

static STATE: OnceLock<Mutex<(Arc<Engine>, Worker)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let st = STATE.get_or_init(|| Mutex::new(setup()));
    let mut g = st.lock().unwrap();
    let (engine, worker) = &mut *g;
    let port = data.first().copied().unwrap_or(0) as u16 & 1;
    let frame = data.get(1..).unwrap_or(&[]);
    let mut buf = vec![0u8; 256 + 2048];
    let n = frame.len().min(2048);
    buf[256..256 + n].copy_from_slice(&frame[..n]);
    let mut f = Frame::new(&mut buf, 256, n);
    worker.begin_batch(Time::from_secs(1000));
    let _ = worker.process(&mut f, port);
    assert!(engine.conns.live() <= engine.conns.capacity());
    engine.housekeep(Time::from_secs(1000), 64);
});
