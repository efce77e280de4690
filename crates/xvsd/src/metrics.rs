//! A minimal HTTP endpoint serving Prometheus metrics (`GET /metrics`): the
//! engine's, then the I/O workers' (`xvs_io_*`, from the counters each worker
//! publishes after every batch).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use xvs_core::engine::Engine;

/// Serves `addr` until the process ends.
/// `extra` appends the daemon's own metrics to the engine's.
pub fn serve(listener: TcpListener, engine: Arc<Engine>, extra: impl Fn(&mut String)) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut line = String::new();
        let mut r = BufReader::new(&s);
        if r.read_line(&mut line).is_err() {
            continue;
        }
        // Drain the headers.
        let mut h = String::new();
        while r.read_line(&mut h).is_ok_and(|n| n > 2) {
            h.clear();
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = if path == "/metrics" {
            let mut body = xvs_core::engine::metrics::render(&engine);
            render_io(&mut body, &xvs_xdp::worker::published_stats());
            extra(&mut body);
            ("200 OK", body)
        } else {
            ("404 Not Found", "try /metrics\n".to_string())
        };
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Appends a counter in the Prometheus text format.
pub fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
    );
}

/// Appends a gauge in the Prometheus text format.
pub fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
    );
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

/// Appends the I/O workers' counters, labelled by queue.
fn render_io(out: &mut String, workers: &[xvs_xdp::worker::PublishedStats]) {
    let Some(first) = workers.first() else {
        return;
    };
    for (i, (name, _)) in first.counters.iter().enumerate() {
        let Some((metric, help)) = io_metric(name) else {
            continue;
        };
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for w in workers {
            let _ = writeln!(
                out,
                "{metric}{{worker=\"{}\"}} {}",
                w.queue, w.counters[i].1
            );
        }
    }
    let metric = "xvs_io_superframe_drops_total";
    let _ = writeln!(
        out,
        "# HELP {metric} Super-frames dropped uncut, by reason (not_tcp: UDP GSO cannot be cut without the sender's gso_size).\n# TYPE {metric} counter"
    );
    for w in workers {
        for (name, v) in &w.counters {
            if let Some(reason) = name.strip_prefix("superframe_") {
                let _ = writeln!(
                    out,
                    "{metric}{{worker=\"{}\",reason=\"{reason}\"}} {v}",
                    w.queue
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_counters_are_rendered_by_worker_and_reason() {
        let s = xvs_xdp::WorkerStats {
            rx: 5,
            superframes: 3,
            segments: 60,
            superframe_not_tcp: 1,
            ..Default::default()
        };
        let w = xvs_xdp::worker::PublishedStats {
            queue: 2,
            counters: s.named(),
        };
        let mut out = String::new();
        render_io(&mut out, &[w]);
        for line in [
            "# TYPE xvs_io_superframes_total counter",
            "xvs_io_rx_frames_total{worker=\"2\"} 5",
            "xvs_io_superframes_total{worker=\"2\"} 3",
            "xvs_io_superframe_segments_total{worker=\"2\"} 60",
            "xvs_io_superframe_drops_total{worker=\"2\",reason=\"not_tcp\"} 1",
            "xvs_io_superframe_drops_total{worker=\"2\",reason=\"no_buffers\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        // Every counter is exported: none is left without a metric.
        assert!(s
            .named()
            .iter()
            .all(|(n, _)| io_metric(n).is_some() || n.starts_with("superframe_")));
        let mut empty = String::new();
        render_io(&mut empty, &[]);
        assert!(empty.is_empty());
    }
}
