//! Real TCP through the director: new connections per second (with their
//! latency, hdrhistogram) and bulk throughput, plus the servers they talk to.

use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

/// What the connection-rate clients saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnRate {
    pub per_sec: f64,
    pub errors: u64,
    /// Connect + request + answer, µs, 99th percentile.
    pub p99_us: f64,
}

/// Warms a freshly started director up before its connection rate is
/// measured: 4 clients for 1.5 s, not counted. A director that has just
/// started may lose the first packets to a server whose MAC it has not
/// learnt yet (xvs resolves a neighbour on its first packet and drops that
/// packet; the kernel queues it while it resolves), and TCP resends a lost
/// SYN only after a second: unwarmed, a 5-s window would count that second
/// against the director instead of its steady rate.
pub fn warm_up(ns: &Netns, to: SocketAddr) {
    let _ = conn_rate(ns, to, 4, 1.5);
}

/// New TCP connections per second from `ns` to `to`: `threads` clients each
/// connecting, sending a request, reading the answer, closing, for `secs`.
pub fn conn_rate(ns: &Netns, to: SocketAddr, threads: usize, secs: f64) -> ConnRate {
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let hists: Vec<Histogram<u64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let errors = errors.clone();
                s.spawn(move || {
                    ns.run(|| {
                        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)
                            .expect("histogram bounds");
                        let mut buf = [0u8; 256];
                        while Instant::now() < end {
                            let t0 = Instant::now();
                            match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                                Ok(mut c) => {
                                    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                                    let ok = c.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                                        && matches!(c.read(&mut buf), Ok(n) if n > 0);
                                    if ok {
                                        let _ = h.record(t0.elapsed().as_micros() as u64);
                                    } else {
                                        errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    // A refused or timed-out connect would
                                    // otherwise spin.
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                            }
                        }
                        h
                    })
                    .expect("enter namespace")
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("histogram bounds");
    for h in &hists {
        let _ = all.add(h);
    }
    ConnRate {
        per_sec: all.len() as f64 / secs,
        errors: errors.load(Ordering::Relaxed),
        p99_us: all.value_at_quantile(0.99) as f64,
    }
}

/// A bulk receiver in `ns` on every address of `addrs`: reads and counts
/// every byte of every connection into `bytes`.
pub fn bulk_server(ns: &Netns, addrs: &[SocketAddr], bytes: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    for addr in addrs {
        let l = ns
            .run(|| TcpListener::bind(addr))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let (bytes, stop) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                let bytes = bytes.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
        });
    }
}

/// Bulk TCP from `ns` to `to` over `streams` connections for `secs`; returns
/// the Gbps the server received over the last `secs - warm` seconds
/// (`bytes` is the server's counter). `during` runs over the measured span
/// and gets its length in seconds (the director's CPU is read there).
pub fn bulk(
    ns: &Netns,
    to: SocketAddr,
    streams: usize,
    secs: f64,
    warm: f64,
    bytes: &AtomicU64,
    during: impl FnOnce(f64) -> anyhow::Result<f64>,
) -> anyhow::Result<(f64, f64)> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        for _ in 0..streams {
            s.spawn(move || {
                ns.run(|| {
                    let Ok(mut c) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
                        return;
                    };
                    let buf = vec![0x5au8; 128 * 1024];
                    while Instant::now() < end {
                        if c.write_all(&buf).is_err() {
                            return;
                        }
                    }
                })
                .expect("enter namespace");
            });
        }
        std::thread::sleep(Duration::from_secs_f64(warm));
        let b0 = bytes.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let span = (secs - warm - 0.1).max(0.1);
        let extra = during(span)?;
        let got = bytes.load(Ordering::Relaxed) - b0;
        let gbps = got as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9;
        Ok((gbps, extra))
    })
}
