//! The lab real server: a tiny threaded HTTP/1.1 server (plus a UDP echo of its name).
//!
//! - `GET /` answers the server's name (`rs1\n`);
//! - `GET /hold?s=N` waits N seconds (at most an hour), then answers the name;
//! - `GET /bytes?n=N` streams N bytes of [`crate::pattern`];
//! - `GET /peer` answers the client's address as the server sees it
//!   (`10.77.1.200:40001\n`: the LIP in FULLNAT, the client in NAT);
//! - any UDP datagram on the same address is answered with the name;
//! - on the `echo` addresses (TCP), a connection first gets the name as a
//!   line, then every byte it sends back (long-lived flows of the ECMP lab).
//!
//! Keep-alive is supported; every reply carries `X-Served-By: <name>`.

use crate::pattern;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    /// Also answer UDP datagrams on the listen addresses.
    pub udp: bool,
    /// TCP echo addresses: the name as a line, then an echo of the stream.
    pub echo: Vec<SocketAddr>,
}

/// Longest request line or header line accepted.
const MAX_LINE: u64 = 8192;
/// Most header lines accepted per request.
const MAX_HEADERS: usize = 100;
/// Longest `/hold`.
const MAX_HOLD_S: u64 = 3600;
/// An idle keep-alive connection is closed after this.
const IDLE: Duration = Duration::from_secs(120);

/// Binds every address, then serves forever (returns only on a bind error).
pub fn serve(cfg: &ServeConfig) -> io::Result<()> {
    let mut listeners = Vec::new();
    let mut sockets = Vec::new();
    for a in &cfg.listen {
        listeners.push(
            TcpListener::bind(a)
                .map_err(|e| io::Error::new(e.kind(), format!("bind tcp {a}: {e}")))?,
        );
        if cfg.udp {
            sockets.push(
                UdpSocket::bind(a)
                    .map_err(|e| io::Error::new(e.kind(), format!("bind udp {a}: {e}")))?,
            );
        }
    }
    let mut echoes = Vec::new();
    for a in &cfg.echo {
        echoes.push(
            TcpListener::bind(a)
                .map_err(|e| io::Error::new(e.kind(), format!("bind echo {a}: {e}")))?,
        );
    }
    tracing::info!(name = %cfg.name, listen = ?cfg.listen, echo = ?cfg.echo, "serving");
    std::thread::scope(|s| {
        for l in echoes {
            let name = cfg.name.clone();
            s.spawn(move || accept_loop(&l, &name, echo));
        }
        for sock in sockets {
            let name = cfg.name.as_str();
            s.spawn(move || udp_echo(&sock, name));
        }
        for l in listeners {
            let name = cfg.name.clone();
            s.spawn(move || accept_loop(&l, &name, handle));
        }
    });
    Ok(())
}

/// Serves each connection of `l` on a thread of its own with `serve_one`.
fn accept_loop(l: &TcpListener, name: &str, serve_one: fn(TcpStream, &str) -> io::Result<()>) {
    for conn in l.incoming() {
        match conn {
            Ok(c) => {
                let name = name.to_string();
                std::thread::spawn(move || {
                    if let Err(e) = serve_one(c, &name) {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            // Out of fds or threads: wait and go on rather than exit.
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The echo service: the name as a line, then every byte back, until EOF.
fn echo(mut conn: TcpStream, name: &str) -> io::Result<()> {
    conn.set_nodelay(true)?;
    conn.write_all(format!("{name}\n").as_bytes())?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

fn udp_echo(sock: &UdpSocket, name: &str) {
    let reply = format!("{name}\n");
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((_, from)) => {
                let _ = sock.send_to(reply.as_bytes(), from);
            }
            Err(e) => tracing::warn!(error = %e, "udp recv"),
        }
    }
}

/// Reads one line of at most MAX_LINE bytes; None at EOF.
fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or cut",
        ));
    }
    Ok(Some(String::from_utf8_lossy(&buf).trim_end().to_string()))
}

/// A parsed request: what the handler needs.
struct Request {
    method: String,
    path: String,
    query: String,
    keep_alive: bool,
}

fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), version) = (parts.next(), parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut keep_alive = version == Some("HTTP/1.1");
    for _ in 0..MAX_HEADERS {
        match read_line(r)? {
            None => return Ok(None),
            Some(h) if h.is_empty() => {
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                return Ok(Some(Request {
                    method: method.to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    keep_alive,
                }));
            }
            Some(h) => {
                if let Some((k, v)) = h.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("connection") {
                        let v = v.trim();
                        keep_alive = if v.eq_ignore_ascii_case("close") {
                            false
                        } else {
                            keep_alive || v.eq_ignore_ascii_case("keep-alive")
                        };
                    }
                }
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "too many headers",
    ))
}

/// The value of `key` in a query string `a=1&b=2`, as a number.
fn query_num(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn head(
    w: &mut impl Write,
    status: &str,
    name: &str,
    len: u64,
    keep_alive: bool,
) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nServer: xvs-lab\r\nX-Served-By: {name}\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n{}\r\n",
        if keep_alive { "" } else { "Connection: close\r\n" }
    )
}

fn reply(
    w: &mut impl Write,
    status: &str,
    name: &str,
    body: &str,
    keep_alive: bool,
) -> io::Result<()> {
    head(w, status, name, body.len() as u64, keep_alive)?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

fn handle(conn: TcpStream, name: &str) -> io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    let peer = conn.peer_addr()?;
    // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d: say a.b.c.d.
    let peer = match peer {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => peer,
        },
        SocketAddr::V4(_) => peer,
    };
    let mut w = io::BufWriter::new(conn.try_clone()?);
    let mut r = BufReader::new(conn);
    let own = format!("{name}\n");
    while let Some(req) = read_request(&mut r)? {
        let ka = req.keep_alive;
        if req.method != "GET" {
            reply(&mut w, "405 Method Not Allowed", name, "only GET\n", false)?;
            return Ok(());
        }
        match req.path.as_str() {
            "/" => reply(&mut w, "200 OK", name, &own, ka)?,
            "/peer" => reply(&mut w, "200 OK", name, &format!("{peer}\n"), ka)?,
            "/hold" => match query_num(&req.query, "s") {
                Some(s) if s <= MAX_HOLD_S => {
                    std::thread::sleep(Duration::from_secs(s));
                    reply(&mut w, "200 OK", name, &own, ka)?;
                }
                _ => reply(
                    &mut w,
                    "400 Bad Request",
                    name,
                    "want /hold?s=SECONDS (at most 3600)\n",
                    ka,
                )?,
            },
            "/bytes" => match query_num(&req.query, "n") {
                Some(n) => {
                    head(&mut w, "200 OK", name, n, ka)?;
                    stream_pattern(&mut w, n)?;
                }
                None => reply(&mut w, "400 Bad Request", name, "want /bytes?n=COUNT\n", ka)?,
            },
            _ => reply(&mut w, "404 Not Found", name, "not found\n", ka)?,
        }
        if !ka {
            break;
        }
    }
    Ok(())
}

fn stream_pattern(w: &mut impl Write, n: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let table = pattern::table(CHUNK);
    let mut sent = 0u64;
    while sent < n {
        let len = (n - sent).min(CHUNK as u64) as usize;
        let start = (sent % pattern::PERIOD as u64) as usize;
        w.write_all(&table[start..start + len])?;
        sent += len as u64;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &str) -> Vec<u8> {
        let mut c = TcpStream::connect(addr).unwrap();
        // The server may close (and reset) on bad input before reading it all.
        let _ = c.write_all(req.as_bytes());
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        out
    }

    fn start(name: &str) -> SocketAddr {
        // Port 0 picks a free port; find it by binding first and handing the
        // address over after closing (tests only, loopback).
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let cfg = ServeConfig {
            name: name.to_string(),
            listen: vec![addr],
            udp: true,
            echo: vec![],
        };
        std::thread::spawn(move || serve(&cfg).unwrap());
        for _ in 0..500 {
            if TcpStream::connect(addr).is_ok() {
                return addr;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("server did not start");
    }

    #[test]
    fn answers_its_name_peer_bytes_and_errors() {
        let a = start("rs7");
        let r = get(a, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("X-Served-By: rs7\r\n"));
        assert!(
            r.ends_with("\r\nContent-Length: 4\r\nConnection: close\r\n\r\nrs7\n"),
            "{r}"
        );

        let r = String::from_utf8(get(a, "GET /peer HTTP/1.0\r\n\r\n")).unwrap();
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            body.starts_with("127.0.0.1:") && body.ends_with('\n'),
            "{body}"
        );

        let r = get(a, "GET /bytes?n=100000 HTTP/1.0\r\n\r\n");
        let split = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(String::from_utf8_lossy(&r[..split]).contains("Content-Length: 100000\r\n"));
        let mut c = pattern::Checker::default();
        c.feed(&r[split..]).unwrap();
        assert_eq!(c.len(), 100000);

        for (req, status) in [
            ("GET /nope HTTP/1.0\r\n\r\n", "404"),
            ("POST / HTTP/1.1\r\n\r\n", "405"),
            ("GET /hold?s=x HTTP/1.0\r\n\r\n", "400"),
            ("GET /bytes HTTP/1.0\r\n\r\n", "400"),
        ] {
            let r = String::from_utf8(get(a, req)).unwrap();
            assert!(
                r.starts_with(&format!("HTTP/1.1 {status} ")),
                "{req:?}: {r}"
            );
        }
        // Garbage and an over-long line close the connection without a reply.
        assert!(get(a, "\r\n\r\n").is_empty());
        assert!(get(a, &"A".repeat(20000)).is_empty());
    }

    #[test]
    fn keep_alive_serves_pipelined_requests_on_one_connection() {
        let a = start("rs2");
        let r = get(
            a,
            "GET / HTTP/1.1\r\n\r\nGET /hold?s=0 HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        let r = String::from_utf8(r).unwrap();
        assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
        assert!(r.ends_with("Connection: close\r\n\r\nrs2\n"));
    }

    #[test]
    fn udp_datagrams_get_the_name() {
        let a = start("rs3");
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(b"x", a).unwrap();
        let mut buf = [0u8; 16];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"rs3\n");
    }

    #[test]
    fn echo_says_its_name_then_echoes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let cfg = ServeConfig {
            name: "rs3".into(),
            listen: vec![],
            udp: false,
            echo: vec![addr],
        };
        std::thread::spawn(move || serve(&cfg).unwrap());
        let mut c = (0..500)
            .find_map(|_| {
                TcpStream::connect(addr).ok().or_else(|| {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                })
            })
            .expect("echo server up");
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "rs3\n");
        c.write_all(b"0123456789").unwrap();
        let mut back = [0u8; 10];
        r.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"0123456789");
    }
}
