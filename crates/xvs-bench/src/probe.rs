//! Real-client measurements through a VIP: new TCP connections per second and
//! UDP round-trip latency (hdrhistogram), plus the servers they talk to.

use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs_netns::Netns;

const RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

/// A minimal HTTP/1.0 server in `ns` on `addr` (every listed address), `threads`
/// acceptors; it answers any request with a short body and closes (so the
/// server side keeps TIME_WAIT, as a web server would).
pub fn http_server(ns: &Netns, addrs: &[SocketAddr], threads: usize, stop: Arc<AtomicBool>) {
    for addr in addrs {
        let l = ns
            .run(|| TcpListener::bind(addr))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(false).ok();
        for _ in 0..threads {
            let l = l.try_clone().expect("clone listener");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                for s in l.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(mut s) = s else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(RESPONSE);
                }
            });
        }
    }
}

/// New TCP connections per second from `ns` to `to`: `threads` clients each
/// connecting, sending a request, reading the answer, closing, for `secs`.
pub fn conn_rate(ns: &Netns, to: SocketAddr, threads: usize, secs: f64) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (done, errors) = (done.clone(), errors.clone());
            s.spawn(move || {
                ns.run(|| {
                    let mut buf = [0u8; 256];
                    while Instant::now() < end {
                        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                            Ok(mut c) => {
                                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                                let ok = c.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                                    && matches!(c.read(&mut buf), Ok(n) if n > 0);
                                if ok {
                                    done.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .expect("enter namespace");
            });
        }
    });
    (
        done.load(Ordering::Relaxed) as f64 / secs,
        errors.load(Ordering::Relaxed),
    )
}

/// A UDP echo server in `ns`.
pub fn udp_echo(ns: &Netns, addr: SocketAddr, stop: Arc<AtomicBool>) {
    let s = ns
        .run(|| UdpSocket::bind(addr))
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
}

/// Round-trip latency percentiles (µs) of `count` UDP probes from `ns` to `to`,
/// one every `gap`. Returns (p50, p99, p99.9, lost).
pub fn udp_latency(
    ns: &Netns,
    from: SocketAddr,
    to: SocketAddr,
    count: u32,
    gap: Duration,
) -> (f64, f64, f64, u32) {
    let s = ns
        .run(|| UdpSocket::bind(from))
        .expect("enter namespace")
        .expect("bind the prober");
    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram bounds");
    let mut lost = 0;
    let mut buf = [0u8; 64];
    for i in 0..count {
        let t0 = Instant::now();
        let _ = s.send_to(&i.to_be_bytes(), to);
        loop {
            match s.recv_from(&mut buf) {
                Ok((4, _)) if buf[..4] == i.to_be_bytes() => {
                    let _ = h.record(t0.elapsed().as_nanos() as u64);
                    break;
                }
                Ok(_) => continue, // a late answer to an earlier probe
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        std::thread::sleep(gap);
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    (us(0.5), us(0.99), us(0.999), lost)
}
