//! A minimal HTTP endpoint serving Prometheus metrics (`GET /metrics`).

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
