//! Running under systemd (`Type=notify`, `WatchdogSec=`): sd_notify(3)
//! datagrams to `$NOTIFY_SOCKET` (READY, RELOADING, STOPPING, STATUS,
//! WATCHDOG), the watchdog fed only while every data-plane worker makes
//! progress, and log lines carrying the journal's priority prefix.
//!
//! The protocol is one datagram of `KEY=VALUE` lines on a Unix socket, so it
//! is written with std's `UnixDatagram` (no libsystemd, no crate). Outside
//! systemd every call here does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What systemd told the process at start (read once, before any thread).
#[derive(Debug, Default)]
struct Env {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then removes
/// them from the environment so that the health checks' scripts (children)
/// do not inherit them. Call first thing in `main`, while single-threaded.
pub fn init() {
    ENV.get_or_init(|| {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(k);
        }
        Env { socket, watchdog }
    });
}

fn env() -> &'static Env {
    ENV.get_or_init(Env::default)
}

/// The address in `$NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
fn address(s: &str) -> std::io::Result<SocketAddr> {
    match s.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(s),
    }
}

/// Sends `state` (newline-separated `KEY=VALUE`) to systemd; false when not
/// under systemd or when the datagram could not be sent (logged).
pub fn notify(state: &str) -> bool {
    let Some(path) = &env().socket else {
        return false;
    };
    let sent = address(path).and_then(|a| {
        let s = UnixDatagram::unbound()?;
        s.send_to_addr(state.as_bytes(), &a)
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("sd_notify to {path}: {e}");
            false
        }
    }
}

/// One worker's progress counter, alone on its cache line: each worker
/// stores to its own on every loop, and the lines must not bounce.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct Beat(pub AtomicU64);

/// Feeds the watchdog (when systemd asked for one) from a thread of its own,
/// at half the interval, but only if every worker's heartbeat moved since the
/// last look: a worker stuck in a loop or blocked makes systemd kill and
/// restart xvsd. The workers go round at least every 100 ms even when idle
/// (their poll timeout), so an interval of a second or more never misfires.
pub fn watch(beats: Arc<Vec<Beat>>) -> std::io::Result<()> {
    let Some(interval) = env().watchdog else {
        return Ok(());
    };
    let period = interval / 2;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        workers = beats.len(),
        "systemd watchdog"
    );
    std::thread::Builder::new()
        .name("xvsd-watchdog".into())
        .spawn(move || {
            let read =
                || -> Vec<u64> { beats.iter().map(|b| b.0.load(Ordering::Relaxed)).collect() };
            let mut last = read();
            let mut stuck_logged = false;
            loop {
                std::thread::sleep(period);
                let now = read();
                let stuck: Vec<usize> = (0..now.len()).filter(|&i| now[i] == last[i]).collect();
                if stuck.is_empty() {
                    notify("WATCHDOG=1");
                    stuck_logged = false;
                } else if !stuck_logged {
                    // Not fed: systemd restarts xvsd when the interval runs out.
                    tracing::error!(?stuck, "workers made no progress; not feeding the watchdog");
                    stuck_logged = true;
                }
                last = now;
            }
        })
        .map(|_| ())
}

/// True when stderr is the journal's stream (systemd sets `JOURNAL_STREAM`
/// to its `device:inode`); then each line carries its priority as `<N>`.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

/// Formats an event as the default format does, without time (the journal
/// stamps it) and prefixed with its syslog priority (sd-daemon(3)), so that
/// `journalctl -p warning` and colouring work.
struct Journal<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Journal<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{prio}>")?;
        self.0.format_event(ctx, w, event)
    }
}

/// Sets up logging for the journal if stderr is the journal; false otherwise
/// (the caller then sets up its usual format).
pub fn init_journal_logging() -> bool {
    if !stderr_is_journal() {
        return false;
    }
    let format = tracing_subscriber::fmt::format()
        .without_time()
        .with_level(false)
        .with_ansi(false);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .event_format(Journal(format))
        .init();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_addresses() {
        assert!(address("@/org/freedesktop/systemd1/notify/1")
            .unwrap()
            .as_pathname()
            .is_none());
        assert_eq!(
            address("/run/systemd/notify").unwrap().as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }

    #[test]
    fn a_beat_has_its_own_cache_line() {
        assert_eq!(std::mem::size_of::<Beat>(), 64);
    }
}
