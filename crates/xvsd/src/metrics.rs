//! The metrics endpoint: `GET /metrics` over HTTP/1.1 (hyper, on a tokio
//! runtime of its own: concurrent scrapes, a bound on connections, header and
//! whole-exchange timeouts, small request buffers), in the exposition format
//! the Prometheus client library (prometheus-client) writes. The numbers come
//! as metric families from the engine (`node_ipvs_*`, `xvs_*`), the I/O
//! workers (`xvs_io_*`, from the counters each worker publishes after every
//! batch) and the daemon's other parts, gathered at each scrape.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use xvs_core::engine::metrics::{Family, Kind, Value};
use xvs_core::engine::Engine;

/// Scrapes served at once; a connection beyond them is closed at once.
const MAX_CONNECTIONS: usize = 16;
/// Time for a client to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole exchange, answer included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (a scrape's is a few hundred bytes).
const MAX_REQUEST: usize = 16 * 1024;

/// The daemon's own metric families, appended after the engine's and the
/// I/O workers' at each scrape.
pub type Extra = dyn Fn(&mut Vec<Family>) + Send + Sync;

/// The last bucket of a histogram family: prometheus-client writes f64::MAX
/// as `+Inf`.
pub const INF_BUCKET: f64 = f64::MAX;

/// Every family of a scrape, in order.
fn gather(engine: &Engine, extra: &Extra) -> Vec<Family> {
    let mut out = xvs_core::engine::metrics::families(engine);
    out.extend(io_families(&xvs_xdp::published_stats()));
    extra(&mut out);
    out
}

/// The prometheus-client collector: encodes the gathered families.
struct Families {
    engine: Arc<Engine>,
    extra: Arc<Extra>,
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Families")
    }
}

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_families(&gather(&self.engine, &*self.extra), &mut enc)
    }
}

fn encode_families(
    families: &[Family],
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    for f in families {
        // The library adds the `_total` of counter samples itself.
        let (name, ty) = match f.kind {
            Kind::Counter => (
                f.name.strip_suffix("_total").unwrap_or(&f.name),
                MetricType::Counter,
            ),
            Kind::Gauge => (f.name.as_str(), MetricType::Gauge),
            Kind::Histogram => (f.name.as_str(), MetricType::Histogram),
        };
        let mut desc = enc.encode_descriptor(name, &f.help, None, ty)?;
        match f.samples.as_slice() {
            // One sample without labels: written as `name value`, not `name{} value`.
            [(labels, v)] if labels.is_empty() => encode_value(f.kind, v, desc)?,
            samples => {
                for (labels, v) in samples {
                    encode_value(f.kind, v, desc.encode_family(labels)?)?;
                }
            }
        }
    }
    Ok(())
}

fn encode_value(
    kind: Kind,
    v: &Value,
    mut me: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error> {
    match (kind, v) {
        (Kind::Counter, Value::Int(n)) => ConstCounter::new((*n).max(0) as u64).encode(me),
        (Kind::Counter, Value::Float(x)) => ConstCounter::new(*x).encode(me),
        (Kind::Gauge, Value::Int(n)) => ConstGauge::new(*n).encode(me),
        (Kind::Gauge, Value::Float(x)) => ConstGauge::new(*x).encode(me),
        (
            Kind::Histogram,
            Value::Histogram {
                buckets,
                sum,
                count,
            },
        ) => me.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None),
        // A sample of the wrong kind is a bug of its source: skipped rather
        // than breaking the whole scrape.
        _ => Ok(()),
    }
}

/// The scrape's text.
pub fn render(engine: &Arc<Engine>, extra: &Arc<Extra>) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Families {
        engine: engine.clone(),
        extra: extra.clone(),
    }));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    engine: &Arc<Engine>,
    extra: &Arc<Extra>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(engine, extra),
        ),
        (&Method::GET | &Method::HEAD, _) => {
            reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into())
        }
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        ),
    }
}

/// Serves `listener` until the process ends (on the calling thread).
pub fn serve(listener: std::net::TcpListener, engine: Arc<Engine>, extra: Arc<Extra>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("metrics endpoint: no runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let l = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("metrics endpoint: {e}");
                return;
            }
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok((stream, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // Full: the newcomer is closed rather than left waiting.
                continue;
            };
            let (e, x) = (engine.clone(), extra.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let r = answer(&req, &e, &x);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_REQUEST)
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await;
            });
        }
    });
}

/// A family of one unlabelled counter.
pub fn counter(name: &str, help: &str, v: u64) -> Family {
    Family::single(name, help, Kind::Counter, v)
}

/// A family of one unlabelled gauge.
pub fn gauge(name: &str, help: &str, v: u64) -> Family {
    Family::single(name, help, Kind::Gauge, v)
}

/// Prometheus name and help of each I/O worker counter (by its
/// `WorkerStats::named` name); super-frame drops are one metric by reason.
fn io_metric(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "rx" => (
            "xvs_io_rx_frames_total",
            "Frames the worker received (a super-frame counts once).",
        ),
        "tx" => (
            "xvs_io_tx_frames_total",
            "Frames the worker queued for transmission.",
        ),
        "dropped" => ("xvs_io_dropped_frames_total", "Frames the engine dropped."),
        "tx_ring_full" => (
            "xvs_io_tx_ring_full_total",
            "Frames dropped because a TX ring was full (AF_PACKET: not sent).",
        ),
        "fill_ring_empty" => (
            "xvs_io_fill_ring_empty_total",
            "Times a fill ring could not be topped up (no free buffer).",
        ),
        "tx_kicks" => ("xvs_io_tx_kicks_total", "TX wakeups (sendto/sendmmsg)."),
        "fill_kicks" => ("xvs_io_fill_kicks_total", "Fill-ring wakeups."),
        "bad_port" => (
            "xvs_io_bad_port_total",
            "Frames sent to a port the worker does not have.",
        ),
        "polls" => ("xvs_io_polls_total", "poll() calls that slept."),
        "superframes" => (
            "xvs_io_superframes_total",
            "Frames above the ingress MTU (GSO/TSO/GRO super-frames) cut into segments.",
        ),
        "segments" => (
            "xvs_io_superframe_segments_total",
            "Segments cut from super-frames.",
        ),
        _ => return None,
    })
}

/// The I/O workers' counters, labelled by queue.
fn io_families(workers: &[xvs_xdp::PublishedStats]) -> Vec<Family> {
    let mut out = Vec::new();
    let Some(first) = workers.first() else {
        return out;
    };
    for (i, (name, _)) in first.counters.iter().enumerate() {
        let Some((metric, help)) = io_metric(name) else {
            continue;
        };
        let mut f = Family::new(metric, help, Kind::Counter);
        for w in workers {
            f.add(
                &[("worker", w.queue.to_string())],
                Value::int(w.counters[i].1),
            );
        }
        out.push(f);
    }
    let mut f = Family::new(
        "xvs_io_superframe_drops_total",
        "Super-frames dropped uncut, by reason (not_tcp: UDP GSO cannot be cut without the sender's gso_size).",
        Kind::Counter,
    );
    for w in workers {
        for (name, v) in &w.counters {
            if let Some(reason) = name.strip_prefix("superframe_") {
                f.add(
                    &[
                        ("worker", w.queue.to_string()),
                        ("reason", reason.to_string()),
                    ],
                    Value::int(*v),
                );
            }
        }
    }
    out.push(f);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_counters_are_exported_by_worker_and_reason() {
        let s = xvs_xdp::WorkerStats {
            rx: 5,
            superframes: 3,
            segments: 60,
            superframe_not_tcp: 1,
            ..Default::default()
        };
        let w = xvs_xdp::PublishedStats {
            queue: 2,
            counters: s.named(),
        };
        let fams = io_families(&[w]);
        let mut out = String::new();
        let mut reg = Registry::default();
        #[derive(Debug)]
        struct Fixed(Vec<Family>);
        impl Collector for Fixed {
            fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encode_families(&self.0, &mut enc)
            }
        }
        reg.register_collector(Box::new(Fixed(fams)));
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for line in [
            "# TYPE xvs_io_superframes counter",
            "xvs_io_rx_frames_total{worker=\"2\"} 5",
            "xvs_io_superframes_total{worker=\"2\"} 3",
            "xvs_io_superframe_segments_total{worker=\"2\"} 60",
            "xvs_io_superframe_drops_total{worker=\"2\",reason=\"not_tcp\"} 1",
            "xvs_io_superframe_drops_total{worker=\"2\",reason=\"no_buffers\"} 0",
            "# EOF",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        // Every counter is exported: none is left without a metric.
        assert!(s
            .named()
            .iter()
            .all(|(n, _)| io_metric(n).is_some() || n.starts_with("superframe_")));
        assert!(io_families(&[]).is_empty());
    }

    #[test]
    fn histograms_and_gauges_are_encoded() {
        let mut h = Family::new("x_seconds", "A histogram.", Kind::Histogram);
        h.add(
            &[("checker", "TCP_CHECK".into())],
            Value::Histogram {
                buckets: vec![(0.1, 2), (1.0, 1), (f64::MAX, 1)],
                sum: 2.5,
                count: 4,
            },
        );
        let g = Family::single("x_up", "A gauge.", Kind::Gauge, 1);
        let mut reg = Registry::default();
        #[derive(Debug)]
        struct Fixed(Vec<Family>);
        impl Collector for Fixed {
            fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encode_families(&self.0, &mut enc)
            }
        }
        reg.register_collector(Box::new(Fixed(vec![h, g])));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for line in [
            "x_seconds_bucket{le=\"0.1\",checker=\"TCP_CHECK\"} 2",
            "x_seconds_bucket{le=\"1.0\",checker=\"TCP_CHECK\"} 3",
            "x_seconds_bucket{le=\"+Inf\",checker=\"TCP_CHECK\"} 4",
            "x_seconds_count{checker=\"TCP_CHECK\"} 4",
            "x_up 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }

    fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut b = String::new();
        c.read_to_string(&mut b)?;
        Ok(b)
    }

    #[test]
    fn slow_and_endless_clients_do_not_block_scrapes() {
        use std::io::{Read, Write};
        // A small table: tests share the process, and one of them measures
        // its memory.
        let engine = Engine::new(
            xvs_core::engine::Limits {
                conn_max: 1024,
                ..Default::default()
            },
            Arc::new(xvs_core::engine::StaticFib::new()),
            [1, 2, 3, 4],
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let extra: Arc<Extra> = Arc::new(|out: &mut Vec<Family>| {
            out.push(gauge("xvs_test_gauge", "A test gauge.", 7));
        });
        std::thread::spawn(move || serve(l, engine, extra));
        // A client that sends half a request line and stalls, and one that
        // streams bytes without a newline.
        let mut stalled = std::net::TcpStream::connect(addr).unwrap();
        stalled.write_all(b"GET /met").unwrap();
        let mut endless = std::net::TcpStream::connect(addr).unwrap();
        let junk = vec![b'x'; 64 * 1024];
        endless
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for _ in 0..16 {
            if endless.write_all(&junk).is_err() {
                break; // already closed by the server
            }
        }
        // The server gives up on a request head past its bound and closes the
        // connection (rather than buffering without end).
        endless
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut b = [0u8; 512];
        match endless.read(&mut b) {
            Ok(_) => {}
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "an endless request line is cut off: {e}"
            ),
        }
        // Meanwhile scrapes, several at once, are answered.
        let t0 = std::time::Instant::now();
        let answers: Vec<String> = (0..8)
            .map(|_| std::thread::spawn(move || scrape(addr).unwrap()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        for a in &answers {
            assert!(a.starts_with("HTTP/1.1 200"), "{a}");
            assert!(a.contains("\nxvs_test_gauge 7\n"), "{a}");
            assert!(a.contains("\nnode_ipvs_connections_total 0\n"), "{a}");
            assert!(a.trim_end().ends_with("# EOF"), "{a}");
        }
        // The stalled client is closed once the header timeout passes.
        stalled
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        let mut b = Vec::new();
        let _ = stalled.read_to_end(&mut b);
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "the stalled client was closed by the server's timeout"
        );
        // Other paths and methods.
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut b = String::new();
        c.read_to_string(&mut b).unwrap();
        assert!(b.starts_with("HTTP/1.1 404"), "{b}");
    }
}
