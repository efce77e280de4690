//! `xvs-lab announce`: keeps a director's VIP announced over BGP only while its
//! xvsd is healthy.
//!
//! The director's BIRD has a static protocol holding the VIP /32 (disabled in
//! its config) that its BGP session exports. Every interval this loop asks
//! xvsd a question on its control socket; while xvsd answers, the protocol is
//! enabled (BIRD announces the VIP), and as soon as it does not (killed, hung,
//! stopped), the protocol is disabled and BIRD withdraws the route. A director
//! that dies whole (BIRD too) is noticed by the router's BFD instead.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xvs_ctl::proto::{read_frame, write_frame, Request, Response, MAX_REPLY};

/// What to watch and what to switch.
#[derive(Debug, Clone)]
pub struct AnnounceConfig {
    /// xvsd's control socket.
    pub xvsd_socket: PathBuf,
    /// BIRD's control socket (`bird -s`).
    pub bird_socket: PathBuf,
    /// The static protocol that holds the VIP route.
    pub protocol: String,
    /// Time between checks; also the longest xvsd may take to answer.
    pub interval: Duration,
}

/// Whether xvsd answers a request on its control socket within `limit`.
pub fn xvsd_healthy(socket: &Path, limit: Duration) -> bool {
    let ask = || -> io::Result<bool> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(limit))?;
        s.set_write_timeout(Some(limit))?;
        write_frame(&mut s, &Request::GetTimeouts).map_err(io::Error::other)?;
        let reply: Option<Response> = read_frame(&mut s, MAX_REPLY).map_err(io::Error::other)?;
        Ok(matches!(reply, Some(Response::Timeouts(..))))
    };
    ask().unwrap_or(false)
}

/// `birdc -s SOCKET enable|disable PROTOCOL`; Ok when BIRD did it (or had).
pub fn birdc_switch(bird_socket: &Path, protocol: &str, on: bool) -> io::Result<()> {
    let verb = if on { "enable" } else { "disable" };
    let out = Command::new(crate::ecmp::tool("birdc"))
        .arg("-s")
        .arg(bird_socket)
        .args([verb, protocol])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "vip: enabled", "vip: already enabled", and the same for disabled.
    if out.status.success() && text.contains(&format!("{verb}d")) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "birdc {verb} {protocol}: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs the loop until killed.
pub fn run(cfg: &AnnounceConfig) -> ! {
    // What BIRD was last told; None until it took a command. Told again every
    // few seconds, so a restarted BIRD (VIP disabled in its config) catches up.
    let mut told: Option<bool> = None;
    let mut last_told = Instant::now();
    const RETELL: Duration = Duration::from_secs(3);
    loop {
        let t0 = Instant::now();
        let healthy = xvsd_healthy(&cfg.xvsd_socket, cfg.interval);
        if told != Some(healthy) || last_told.elapsed() > RETELL {
            match birdc_switch(&cfg.bird_socket, &cfg.protocol, healthy) {
                Ok(()) => {
                    if told != Some(healthy) {
                        tracing::info!(
                            healthy,
                            protocol = %cfg.protocol,
                            "{} the VIP",
                            if healthy { "announcing" } else { "withdrawing" }
                        );
                    }
                    told = Some(healthy);
                    last_told = Instant::now();
                }
                Err(e) => {
                    told = None;
                    tracing::warn!(error = %e, "BIRD did not take the change; retrying");
                }
            }
        }
        std::thread::sleep(cfg.interval.saturating_sub(t0.elapsed()));
    }
}
