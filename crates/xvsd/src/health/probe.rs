//! One attempt of each checker type, as keepalived's checkers make it:
//! TCP connect; HTTP GET (over TLS for SSL_GET) with status code and
//! genhash's MD5 digest; UDP datagram and ICMP errors or a reply; DNS query;
//! ICMP echo; a script's exit status. Every wait is bounded by
//! `connect_timeout` (a script by `misc_timeout`).

use md5::{Digest, Md5};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use xvs_keepalived::{
    CheckKind, CheckSpec, DnsCheck, HttpCheck, HttpProtocol, MiscCheck, UdpCheck, Url,
};

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// What happened, for `-L --health` and the log.
    pub reason: String,
    /// A script's exit status (MISC_CHECK).
    pub exit: Option<i32>,
}

impl Outcome {
    fn ok(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            reason: reason.into(),
            exit: None,
        }
    }

    fn fail(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            reason: reason.into(),
            exit: None,
        }
    }
}

/// Most of an HTTP answer read (headers and body); a check that needs more
/// is a failed check.
const MAX_HTTP: usize = 16 << 20;

/// Makes one attempt.
pub async fn attempt(spec: &CheckSpec, tls: &Arc<rustls::ClientConfig>) -> Outcome {
    let r = match &spec.kind {
        CheckKind::Tcp => tcp(spec).await,
        CheckKind::Http(h) => http(spec, h, tls).await,
        CheckKind::Udp(u) => udp(spec, u).await,
        CheckKind::Dns(d) => dns(spec, d).await,
        CheckKind::Ping => ping(spec).await,
        CheckKind::Misc(m) => return misc(m).await,
    };
    r.unwrap_or_else(Outcome::fail)
}

/// An io::Error as a short reason (no "(os error N)").
fn why(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// A socket with the checker's source settings (bind_if, fwmark, bindto,
/// bind_port), non-blocking.
fn socket(spec: &CheckSpec, dst: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(dst), ty.nonblocking(), Some(proto))?;
    if let Some(i) = &spec.bind_if {
        s.bind_device(Some(i.as_bytes()))?;
    }
    if let Some(m) = spec.fwmark {
        s.set_mark(m)?;
    }
    if spec.bindto.is_some() || spec.bind_port.is_some() {
        let ip = spec.bindto.unwrap_or(match dst {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        if spec.bind_port.is_some() {
            s.set_reuse_address(true)?;
        }
        s.bind(&SocketAddr::new(ip, spec.bind_port.unwrap_or(0)).into())?;
    }
    Ok(s)
}

fn dst(spec: &CheckSpec) -> Result<SocketAddr, String> {
    spec.dst.ok_or_else(|| "no address to check".to_string())
}

async fn connect(spec: &CheckSpec) -> Result<tokio::net::TcpStream, String> {
    let dst = dst(spec)?;
    let s = socket(spec, dst, Type::STREAM, Protocol::TCP).map_err(|e| why(&e))?;
    let s = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(s));
    match timeout(spec.connect_timeout, s.connect(dst)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connect: {}", why(&e))),
        Err(_) => Err(format!(
            "connect: no answer in {}",
            secs(spec.connect_timeout)
        )),
    }
}

async fn tcp(spec: &CheckSpec) -> Result<Outcome, String> {
    connect(spec).await?;
    Ok(Outcome::ok("connected"))
}

async fn http(
    spec: &CheckSpec,
    h: &HttpCheck,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Outcome, String> {
    let mut last = String::new();
    // Every URL, each over its own connection, as keepalived does.
    for url in &h.urls {
        let stream = connect(spec).await?;
        last = match &h.tls {
            None => get(stream, spec, h, url).await?,
            Some(t) => {
                let name = match t.sni_name.as_ref().or(url.virtualhost.as_ref()) {
                    Some(n) if t.enable_sni => {
                        rustls::pki_types::ServerName::try_from(n.clone())
                            .map_err(|_| format!("`{n}' is not a server name for SNI"))?
                    }
                    _ => rustls::pki_types::ServerName::IpAddress(dst(spec)?.ip().into()),
                };
                let conn = tokio_rustls::TlsConnector::from(tls.clone());
                let s = match timeout(spec.connect_timeout, conn.connect(name, stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(format!("TLS handshake: {}", why(&e))),
                    Err(_) => {
                        return Err(format!(
                            "TLS handshake: no answer in {}",
                            secs(spec.connect_timeout)
                        ))
                    }
                };
                get(s, spec, h, url).await?
            }
        };
    }
    Ok(Outcome::ok(last))
}

/// keepalived's request: `GET path HTTP/1.x`, its User-Agent, `Connection:
/// close` for 1.0C and 1.1, and Host (the virtualhost, else `addr:port`).
pub fn request(url: &Url, proto: HttpProtocol, dst: SocketAddr) -> String {
    let host = match &url.virtualhost {
        Some(v) => v.clone(),
        None => match dst {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        },
    };
    format!(
        "GET {} HTTP/1.{}\r\nUser-Agent: KeepAliveClient\r\n{}Host: {host}\r\n\r\n",
        url.path,
        u8::from(proto == HttpProtocol::V11),
        if proto == HttpProtocol::V10 {
            ""
        } else {
            "Connection: close\r\n"
        }
    )
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    spec: &CheckSpec,
    h: &HttpCheck,
    url: &Url,
) -> Result<String, String> {
    let t = spec.connect_timeout;
    let req = request(url, h.protocol, dst(spec)?);
    match timeout(t, s.write_all(req.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("sending the request: {}", why(&e))),
        Err(_) => return Err(format!("sending the request: stuck for {}", secs(t))),
    }
    let mut answer = Answer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Each read waits at most connect_timeout, as keepalived's do.
        let n = match timeout(t, s.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            // A peer that closes without close_notify is the norm for these checks.
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Ok(Err(e)) => return Err(format!("reading the answer: {}", why(&e))),
            Err(_) => return Err(format!("reading the answer: nothing for {}", secs(t))),
        };
        if n == 0 || answer.feed(&buf[..n]) {
            break;
        }
        if answer.total > MAX_HTTP {
            return Err(format!("answer longer than {MAX_HTTP} bytes"));
        }
    }
    if h.tls.as_ref().is_some_and(|t| t.close_notify) {
        let _ = timeout(t, s.shutdown()).await;
    }
    answer.verdict(url)
}

/// An HTTP answer read as keepalived's checker reads it: the status from
/// the first line, the body after the blank line, hashed up to
/// Content-Length (if given) with MD5 as genhash does.
#[derive(Default)]
pub struct Answer {
    head: Vec<u8>,
    status: Option<u16>,
    content_length: Option<usize>,
    body: usize,
    md5: Md5,
    in_body: bool,
    total: usize,
}

impl Answer {
    /// Takes bytes; true when the body is complete (Content-Length reached).
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        self.total += data.len();
        if !self.in_body {
            self.head.extend_from_slice(data);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return false;
            };
            self.in_body = true;
            let rest = self.head.split_off(end + 4);
            let head = String::from_utf8_lossy(&self.head).into_owned();
            self.status = status_code(&head);
            self.content_length = content_length(&head);
            self.hash(&rest);
            data = &[];
        }
        self.hash(data);
        self.content_length.is_some_and(|l| self.body >= l)
    }

    fn hash(&mut self, data: &[u8]) {
        let take = match self.content_length {
            Some(l) => data.len().min(l.saturating_sub(self.body)),
            None => data.len(),
        };
        self.md5.update(&data[..take]);
        self.body += take;
    }

    /// The body's MD5 (genhash's digest).
    pub fn digest(&self) -> [u8; 16] {
        self.md5.clone().finalize().into()
    }

    /// The check's result for `url`.
    pub fn verdict(&self, url: &Url) -> Result<String, String> {
        if !self.in_body {
            return Err(if self.total == 0 {
                "no data received".to_string()
            } else {
                "malformed answer (no end of headers)".to_string()
            });
        }
        let Some(code) = self.status else {
            return Err("malformed status line".to_string());
        };
        if !url.accepts(code) {
            let want: Vec<String> = url
                .status
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            return Err(format!(
                "{} status {code}, want {}",
                url.path,
                want.join(" ")
            ));
        }
        if let Some(want) = url.digest {
            let got = self.digest();
            if got != want {
                return Err(format!("{} digest {} differs", url.path, hex(&got)));
            }
            return Ok(format!("{} status {code}, digest matches", url.path));
        }
        Ok(format!("{} status {code}", url.path))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// keepalived's `extract_status_code`: three digits between the first two
/// spaces of the status line.
fn status_code(head: &str) -> Option<u16> {
    let line = head.lines().next()?;
    let rest = line.split_once(' ')?.1;
    let code = rest.get(..3)?;
    if rest.len() > 3 && !rest[3..].starts_with(' ') {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// A connected UDP socket that reports ICMP errors (IP_RECVERR, as
/// keepalived sets it, so that host and net unreachable count too).
fn udp_socket(spec: &CheckSpec) -> Result<tokio::net::UdpSocket, String> {
    let dst = dst(spec)?;
    let s = socket(spec, dst, Type::DGRAM, Protocol::UDP).map_err(|e| why(&e))?;
    let on = true;
    let r = match dst {
        SocketAddr::V4(_) => {
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv4RecvErr, &on)
        }
        SocketAddr::V6(_) => {
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv6RecvErr, &on)
        }
    };
    r.map_err(|e| format!("IP_RECVERR: {e}"))?;
    s.connect(&dst.into())
        .map_err(|e| format!("connect: {}", why(&e)))?;
    tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s)).map_err(|e| why(&e))
}

/// Random bytes for payloads and ids (not for secrets).
fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ t;
    // splitmix64
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

async fn udp(spec: &CheckSpec, u: &UdpCheck) -> Result<Outcome, String> {
    let s = udp_socket(spec)?;
    let payload = u
        .payload
        .clone()
        .unwrap_or_else(|| random_u64().to_le_bytes().repeat(2));
    s.send(&payload)
        .await
        .map_err(|e| format!("send: {}", why(&e)))?;
    let mut buf = vec![0u8; u.max_reply_len.max(1) + 1];
    match timeout(spec.connect_timeout, s.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            if !u.require_reply {
                return Ok(Outcome::ok(format!("reply of {n} bytes")));
            }
            if n < u.min_reply_len || n > u.max_reply_len {
                return Err(format!(
                    "reply of {n} bytes, want {}..={}",
                    u.min_reply_len, u.max_reply_len
                ));
            }
            if let Some((want, mask)) = &u.reply {
                let k = n.min(want.len());
                if (0..k).any(|i| (buf[i] ^ want[i]) & mask[i] != 0) {
                    return Err("reply differs from require_reply".into());
                }
            }
            Ok(Outcome::ok(format!("reply of {n} bytes")))
        }
        // An ICMP error (port, host or net unreachable) came back.
        Ok(Err(e)) => Err(why(&e)),
        Err(_) if u.require_reply => Err(format!("no reply in {}", secs(spec.connect_timeout))),
        Err(_) => Ok(Outcome::ok(format!(
            "no ICMP error in {}",
            secs(spec.connect_timeout)
        ))),
    }
}

/// keepalived's query: random id, recursion desired, one question of the
/// type and name configured, class IN.
pub fn dns_query(d: &DnsCheck, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + d.name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in d.name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&d.qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

async fn dns(spec: &CheckSpec, d: &DnsCheck) -> Result<Outcome, String> {
    let s = udp_socket(spec)?;
    let id = random_u64() as u16;
    s.send(&dns_query(d, id))
        .await
        .map_err(|e| format!("send: {}", why(&e)))?;
    let deadline = tokio::time::Instant::now() + spec.connect_timeout;
    let mut buf = [0u8; 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(why(&e)),
            Err(_) => return Err(format!("no answer in {}", secs(spec.connect_timeout))),
        };
        // Too short, another id, or not a response: keep waiting (keepalived does).
        if n < 12 || buf[..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 {
            continue;
        }
        let rcode = buf[3] & 0x0f;
        if rcode != 0 {
            return Err(format!("answer with rcode {rcode}"));
        }
        return Ok(Outcome::ok("answer with rcode 0"));
    }
}

/// Once per process: the ping sockets need the group in ping_group_range.
static PING_RANGE: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);

/// An ICMP datagram ("ping") socket; like keepalived, widens
/// net.ipv4.ping_group_range to the running group when the kernel refuses.
async fn ping_socket(dst: SocketAddr, spec: &CheckSpec) -> Result<Socket, String> {
    let proto = if dst.is_ipv4() {
        Protocol::ICMPV4
    } else {
        Protocol::ICMPV6
    };
    match socket(spec, dst, Type::DGRAM, proto) {
        Ok(s) => return Ok(s),
        Err(e) if e.raw_os_error() == Some(nix::libc::EACCES) => {}
        Err(e) => return Err(format!("ping socket: {}", why(&e))),
    }
    let mut done = PING_RANGE.lock().await;
    if !*done {
        *done = true;
        let gid = nix::unistd::getegid().as_raw();
        let path = "/proc/sys/net/ipv4/ping_group_range";
        let cur = std::fs::read_to_string(path).unwrap_or_default();
        let mut it = cur.split_whitespace().filter_map(|x| x.parse::<u32>().ok());
        let (lo, hi) = (it.next().unwrap_or(1), it.next().unwrap_or(0));
        let (nlo, nhi) = if lo > hi {
            (gid, gid)
        } else {
            (lo.min(gid), hi.max(gid))
        };
        match std::fs::write(path, format!("{nlo} {nhi}")) {
            Ok(()) => tracing::info!(
                "PING_CHECK: net.ipv4.ping_group_range set to {nlo} {nhi} (was {}), as keepalived does",
                cur.trim()
            ),
            Err(e) => tracing::warn!("PING_CHECK: cannot widen {path}: {e}"),
        }
    }
    socket(spec, dst, Type::DGRAM, proto).map_err(|e| format!("ping socket: {}", why(&e)))
}

async fn ping(spec: &CheckSpec) -> Result<Outcome, String> {
    let dst = dst(spec)?;
    let s = ping_socket(dst, spec).await?;
    s.connect(&SocketAddr::new(dst.ip(), 0).into())
        .map_err(|e| format!("connect: {}", why(&e)))?;
    let s = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s)).map_err(|e| why(&e))?;
    let seq = random_u64() as u16;
    let (echo, reply) = if dst.is_ipv4() {
        (8u8, 0u8)
    } else {
        (128, 129)
    };
    // The kernel fills in the identifier and the checksum of ping sockets.
    let mut pkt = vec![echo, 0, 0, 0, 0, 0];
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"xvsd health check");
    s.send(&pkt)
        .await
        .map_err(|e| format!("send: {}", why(&e)))?;
    let deadline = tokio::time::Instant::now() + spec.connect_timeout;
    let mut buf = [0u8; 256];
    loop {
        let n = match tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(why(&e)),
            Err(_) => return Err(format!("no echo reply in {}", secs(spec.connect_timeout))),
        };
        if n >= 8 && buf[0] == reply && buf[6..8] == seq.to_be_bytes() {
            return Ok(Outcome::ok("echo reply"));
        }
    }
}

/// Resolves a script's user and group (keepalived's default user is
/// `keepalived_script` when it exists, else root).
pub fn credentials(user: Option<&str>, group: Option<&str>) -> Result<Option<(u32, u32)>, String> {
    use nix::unistd::{Group, User};
    let u = match user {
        Some(n) => Some(
            User::from_name(n)
                .map_err(|e| format!("user {n}: {e}"))?
                .ok_or_else(|| format!("no user `{n}'"))?,
        ),
        None => User::from_name("keepalived_script").ok().flatten(),
    };
    let Some(u) = u else { return Ok(None) };
    let gid = match group {
        Some(g) => Group::from_name(g)
            .map_err(|e| format!("group {g}: {e}"))?
            .ok_or_else(|| format!("no group `{g}'"))?
            .gid
            .as_raw(),
        None => u.gid.as_raw(),
    };
    Ok(Some((u.uid.as_raw(), gid)))
}

/// A script in its own process group, as the given user; stdin, stdout and
/// stderr to /dev/null.
pub fn command(script: &xvs_keepalived::Script) -> Result<tokio::process::Command, String> {
    let mut c = tokio::process::Command::new(&script.argv[0]);
    c.args(&script.argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = credentials(script.user.as_deref(), script.group.as_deref())? {
        c.uid(uid).gid(gid);
    }
    Ok(c)
}

async fn misc(m: &MiscCheck) -> Outcome {
    let mut child = match command(&m.script).and_then(|mut c| {
        c.spawn()
            .map_err(|e| format!("cannot run {}: {}", m.script.argv[0], why(&e)))
    }) {
        Ok(c) => c,
        Err(e) => return Outcome::fail(e),
    };
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let status = match timeout(m.timeout, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            // keepalived: SIGTERM to the group, SIGKILL two seconds later.
            use nix::sys::signal::{killpg, Signal};
            if let Some(p) = pid {
                let _ = killpg(p, Signal::SIGTERM);
            }
            if timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                if let Some(p) = pid {
                    let _ = killpg(p, Signal::SIGKILL);
                }
                let _ = child.wait().await;
            } else if let Some(p) = pid {
                // Its children too.
                let _ = killpg(p, Signal::SIGKILL);
            }
            return Outcome::fail(format!("timed out after {}", secs(m.timeout)));
        }
    };
    match status {
        Ok(s) => match s.code() {
            Some(0) => Outcome {
                ok: true,
                reason: "exit status 0".into(),
                exit: Some(0),
            },
            Some(c) if m.dynamic && (2..=255).contains(&c) => Outcome {
                ok: true,
                reason: format!("exit status {c}: weight {}", c - 2),
                exit: Some(c),
            },
            Some(c) => Outcome {
                ok: false,
                reason: format!("exit status {c}"),
                exit: Some(c),
            },
            None => {
                use std::os::unix::process::ExitStatusExt;
                Outcome::fail(format!("killed by signal {}", s.signal().unwrap_or(0)))
            }
        },
        Err(e) => Outcome::fail(format!("waiting for the script: {}", why(&e))),
    }
}

/// TLS for SSL_GET: keepalived's SSL_GET does not verify the server's
/// certificate (the RS is addressed by IP, often with a self-signed one),
/// so neither does this; the handshake's signatures are still checked.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(digest: Option<[u8; 16]>) -> Url {
        Url {
            path: "/".into(),
            digest,
            status: vec![(200, 299)],
            virtualhost: None,
        }
    }

    #[test]
    fn answers_are_hashed_as_genhash_does() {
        // MD5("hello\n") = b1946ac92492d2347c6235b4d2611184
        let want = [
            0xb1, 0x94, 0x6a, 0xc9, 0x24, 0x92, 0xd2, 0x34, 0x7c, 0x62, 0x35, 0xb4, 0xd2, 0x61,
            0x11, 0x84,
        ];
        // Split anywhere, with bytes past Content-Length ignored.
        let raw = b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\nEXTRA";
        for cut in 0..raw.len() {
            let mut a = Answer::default();
            let done = a.feed(&raw[..cut]) | a.feed(&raw[cut..]);
            assert!(done);
            assert_eq!(a.digest(), want, "cut at {cut}");
            assert_eq!(
                a.verdict(&url(Some(want))).unwrap(),
                "/ status 200, digest matches"
            );
        }
        // Without Content-Length: everything until the end.
        let mut a = Answer::default();
        assert!(!a.feed(b"HTTP/1.1 503 Busy\r\nServer: x\r\n\r\nhello\n"));
        assert_eq!(a.digest(), want);
        assert_eq!(
            a.verdict(&url(None)).unwrap_err(),
            "/ status 503, want 200-299"
        );
        assert!(a.verdict(&url(Some([0; 16]))).is_err());
        let a = Answer::default();
        assert_eq!(a.verdict(&url(None)).unwrap_err(), "no data received");
        assert_eq!(status_code("HTTP/1.1 2000 x"), None);
        assert_eq!(status_code("HTTP/1.1 204"), Some(204));
    }

    #[test]
    fn requests_are_keepalived_s() {
        let mut u = url(None);
        let dst: SocketAddr = "10.77.1.11:8080".parse().unwrap();
        assert_eq!(
            request(&u, HttpProtocol::V10, dst),
            "GET / HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 10.77.1.11:8080\r\n\r\n"
        );
        u.virtualhost = Some("www.example.com".into());
        assert_eq!(
            request(&u, HttpProtocol::V11, "[fd77::1]:80".parse().unwrap()),
            "GET / HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: www.example.com\r\n\r\n"
        );
        assert_eq!(
            request(&url(None), HttpProtocol::V10C, "[fd77::1]:80".parse().unwrap()),
            "GET / HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: [fd77::1]:80\r\n\r\n"
        );
    }

    #[test]
    fn dns_queries_are_keepalived_s() {
        let q = dns_query(
            &DnsCheck {
                qtype: 1,
                name: "www.example.com".into(),
            },
            0x1234,
        );
        assert_eq!(&q[..12], &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..], b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        let root = dns_query(
            &DnsCheck {
                qtype: 6,
                name: ".".into(),
            },
            1,
        );
        assert_eq!(&root[12..], &[0, 0, 6, 0, 1]);
    }
}
