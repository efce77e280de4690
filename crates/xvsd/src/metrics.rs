//! A minimal HTTP endpoint serving Prometheus metrics (`GET /metrics`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use xvs_core::engine::Engine;

/// Serves `addr` until the process ends.
pub fn serve(listener: TcpListener, engine: Arc<Engine>) {
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
            ("200 OK", xvs_core::engine::metrics::render(&engine))
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
