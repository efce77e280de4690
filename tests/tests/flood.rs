//! SYN floods through xvsd in the NAT lab, with figures: `xvs-bench gen`
//! sends SYNs from many sources (source addresses x ports) at its full rate
//! for a bounded time, with `secure_tcp` off and on (and `drop_entry`, once
//! xvsd has that knob), against a small table (64K) and the default one (1M).
//!
//! Checked each time: the table never holds more than its bound (sampled
//! from the metrics), xvsd's memory stays flat (VmRSS sampled), connections
//! established before the flood keep exchanging data, new legitimate
//! connections are measured during the flood against a run without it, and
//! after the flood the table drains by the timeouts (shortened in
//! `[timeouts]`, so that draining takes seconds, not minutes).
//!
//! `make test` floods for 3 s (`XVS_FLOOD_SECS` changes it); `make flood`
//! (and so `make soak`) runs the 30 s version. The figures are printed, and
//! appended as JSON lines to `$XVS_FLOOD_REPORT` when set.

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_e2e::traffic::{
    connect_loop, metric, nat_lab, nat_rules, rss_kb, scrape, sh, temp_file, vip, warm_up, xvsadm,
    Held,
};
use xvs_e2e::{require_root, wait_for, Daemon};
use xvs_lab::Lab;
use xvs_netns::Netns;

/// One flood at a time: each takes a core for the generator and one for xvsd.
static SERIAL: Mutex<()> = Mutex::new(());

const METRICS: &str = "127.0.0.1:9184";
/// Connections held open through each flood.
const HELD: usize = 4;
/// The short timeout of half-open entries (SYN_RECV, SYNACK), seconds.
const HALF_OPEN: u64 = 2;
/// And of idle established ones (see [`Case::config`]); at least HALF_OPEN.
const ESTABLISHED: u64 = 6;
/// How long the table may take to drain after the flood: the longest of
/// those timeouts, the RS's one SYN-ACK retransmission (1 s), a sweep of the
/// table (1 s), and slack for a loaded machine.
const DRAIN_LIMIT: u64 = ESTABLISHED + 1 + 1 + 6;

fn flood_secs() -> f64 {
    std::env::var("XVS_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0)
}

/// One flood.
#[derive(Debug, Clone)]
struct Case {
    conn_max: u32,
    secure_tcp: u8,
    /// None: the knob is left out of the config.
    drop_entry: Option<u8>,
    /// Flood sources: addresses from 10.77.128.0, ports from 1024 each.
    addrs: u32,
    ports: u32,
    /// The SYN_RECV and SYNACK timeouts, seconds.
    half_open: u64,
}

impl Case {
    fn flows(&self) -> u64 {
        self.addrs as u64 * self.ports as u64
    }

    fn name(&self) -> String {
        format!(
            "table {}K, {}K flows, secure_tcp {}{}",
            self.conn_max / 1024,
            self.flows() / 1024,
            self.secure_tcp,
            self.drop_entry
                .map_or(String::new(), |d| format!(", drop_entry {d}"))
        )
    }

    fn config(&self) -> String {
        let mut c = format!("[knobs]\nsecure_tcp = {}\n", self.secure_tcp);
        if let Some(d) = self.drop_entry {
            c += &format!("drop_entry = {d}\n");
        }
        // Half-open entries go in seconds; so do closed connections (the
        // legitimate ones), and idle established ones: a flood that sends
        // a flow's SYN again while the RS holds it half open gets an
        // out-of-window ACK from the RS, which moves the entry to
        // ESTABLISHED (the kernel's table does the same). The held
        // connections talk throughout, so they stay.
        c += &format!(
            "[timeouts]\nsyn_recv = {0}\nsynack = {0}\nestablished = {ESTABLISHED}\ntime_wait = 1\nclose = 1\nfin_wait = 1\nclose_wait = 1\nlast_ack = 1\n",
            self.half_open
        );
        c
    }
}

/// What one flood showed.
#[derive(Debug, Default)]
struct Figures {
    sent: u64,
    secs: f64,
    peak: u64,
    full_drops: u64,
    /// kB: before the flood, and the samples from its start to the end of draining.
    rss_base: u64,
    rss: Vec<u64>,
    /// New connections (answered, attempted, seconds) without and during the flood.
    legit_before: (u64, u64, f64),
    legit_during: (u64, u64, f64),
    held_requests: u64,
    held_slowest: Duration,
    /// Entries by state right after the flood (small tables only).
    states: Vec<(String, u64)>,
    drain: Option<Duration>,
}

fn rate(l: (u64, u64, f64)) -> f64 {
    l.0 as f64 / l.2.max(1e-9)
}

impl Figures {
    /// One line for a person.
    fn summary(&self, case: &Case) -> String {
        format!(
            "{}: {:.0} s, {} SYNs sent ({:.2} Mpps); table peak {} of {} (conn_table_full {}); RSS {} -> max {} kB; new conns/s {:.0} ({}/{}) without the flood, {:.1} ({}/{}) during it; held: {} requests, slowest {} ms; states after: {:?}; drained {}",
            case.name(),
            self.secs,
            self.sent,
            self.sent as f64 / self.secs.max(1e-9) / 1e6,
            self.peak,
            case.conn_max,
            self.full_drops,
            self.rss_base,
            self.rss.iter().max().copied().unwrap_or(0),
            rate(self.legit_before),
            self.legit_before.0,
            self.legit_before.1,
            rate(self.legit_during),
            self.legit_during.0,
            self.legit_during.1,
            self.held_requests,
            self.held_slowest.as_millis(),
            self.states,
            self.drain
                .map_or("not".to_string(), |d| format!("{:.1} s after", d.as_secs_f64())),
        )
    }

    fn json(&self, case: &Case) -> String {
        serde_json::json!({
            "case": case.name(),
            "conn_max": case.conn_max,
            "secure_tcp": case.secure_tcp,
            "drop_entry": case.drop_entry,
            "flows": case.flows(),
            "flood_secs": self.secs,
            "sent": self.sent,
            "mpps": self.sent as f64 / self.secs.max(1e-9) / 1e6,
            "peak": self.peak,
            "conn_table_full": self.full_drops,
            "rss_kb_before": self.rss_base,
            "rss_kb_max": self.rss.iter().max().copied().unwrap_or(0),
            "rss_kb": self.rss,
            "legit_before": [self.legit_before.0, self.legit_before.1, self.legit_before.2],
            "legit_during": [self.legit_during.0, self.legit_during.1, self.legit_during.2],
            "legit_per_s_before": rate(self.legit_before),
            "legit_per_s_during": rate(self.legit_during),
            "held_requests": self.held_requests,
            "held_slowest_ms": self.held_slowest.as_millis() as u64,
            "states": self.states.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "drain_s": self.drain.map(|d| d.as_secs_f64()),
        })
        .to_string()
    }
}

/// Whether this xvsd knows `[knobs] key` (a config with it loads); a knob
/// another change adds (drop_entry) is tried once it is there.
fn knob_supported(key: &str) -> bool {
    let cfg = temp_file(
        &format!("knob-{key}.toml"),
        &format!("[knobs]\n{key} = 0\n"),
    );
    let sock = std::env::temp_dir().join(format!("{}-knob.sock", xvs_netns::test_prefix()));
    let mut child = std::process::Command::new(xvs_e2e::bin("xvsd"))
        .args(["--config", cfg.to_str().unwrap(), "--socket"])
        .arg(&sock)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A config error ends xvsd at once; a good one has it bind its socket.
    let known = wait_for(10, || {
        sock.exists() || matches!(child.try_wait(), Ok(Some(_)))
    }) && matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
    known
}

/// States of the connections in the table: `xvsadm -L -n -c` counted.
fn states(socket: &std::path::Path) -> Vec<(String, u64)> {
    let out = xvsadm(socket, &["-L", "-n", "-c"]);
    let mut m = std::collections::BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines().skip(2) {
        if let Some(s) = l.split_whitespace().nth(2) {
            *m.entry(s.to_string()).or_insert(0u64) += 1;
        }
    }
    m.into_iter().collect()
}

fn run_case(lab: &Lab, case: &Case) -> Figures {
    let name = case.name();
    let rules = temp_file("flood.rules", &nat_rules(lab, false));
    let config = temp_file("flood.toml", &case.config());
    let tag = format!(
        "{}-flood-{}-{}",
        xvs_netns::test_prefix(),
        case.conn_max,
        case.secure_tcp
    );
    let conn_max = case.conn_max.to_string();
    let mut d = Daemon::start(
        lab.director(),
        &tag,
        &[
            "-i",
            "c0",
            "-i",
            "r0",
            "--conn-max",
            &conn_max,
            "--metrics",
            METRICS,
            "--rules",
            rules.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let pid = d.pid();
    let dname = lab.director().name().to_string();
    let m = move || scrape(&Netns::existing(&dname), METRICS).unwrap_or_default();
    let entries = |t: &str| metric(t, "xvs_conn_table_entries");
    let to = vip(lab);
    let mut f = Figures::default();

    warm_up(lab.client(), to, false);
    let mut held: Vec<Held> = (0..HELD)
        .map(|_| Held::open(lab.client(), to).expect("a connection before the flood"))
        .collect();
    assert_eq!(
        metric(&m(), "xvs_conn_table_capacity"),
        case.conn_max as u64,
        "{name}: the table's bound"
    );
    assert!(
        wait_for(10, || entries(&m()) == HELD as u64),
        "{name}: before the flood only the held connections remain: {}",
        entries(&m())
    );
    f.rss_base = rss_kb(pid);
    let stop = AtomicBool::new(false);
    f.legit_before = std::thread::scope(|s| {
        let h = s.spawn(|| connect_loop(lab.client(), to, &stop));
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });

    // The flood, with the table, memory, held connections and new ones
    // watched throughout.
    let sampling = Arc::new(AtomicBool::new(true));
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let sampler = {
        let (sampling, samples, m) = (sampling.clone(), samples.clone(), m.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let e = metric(&m(), "xvs_conn_table_entries");
                samples.lock().unwrap().push((e, rss_kb(pid)));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let talking = Arc::new(AtomicBool::new(true));
    let talker = {
        let talking = talking.clone();
        std::thread::spawn(move || {
            let (mut n, mut slowest, mut errors) = (0u64, Duration::ZERO, Vec::new());
            for h in &held {
                h.set_timeout(Duration::from_secs(10));
            }
            while talking.load(Ordering::Relaxed) {
                for h in &mut held {
                    let t = Instant::now();
                    match h.get() {
                        Ok(s) if s == h.server => n += 1,
                        r => errors.push(format!("{r:?}")),
                    }
                    slowest = slowest.max(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (held, n, slowest, errors)
        })
    };
    let secs = flood_secs();
    let src_addrs = case.addrs.to_string();
    let src_ports = case.ports.to_string();
    let secs_arg = secs.to_string();
    let stop = AtomicBool::new(false);
    let (gen, during) = std::thread::scope(|s| {
        let legit = s.spawn(|| connect_loop(lab.client(), to, &stop));
        let gen = Command::new(xvs_e2e::bin("xvs-bench"))
            .args(["gen", "--netns", lab.client().name(), "--dev", "eth0"])
            .args([
                "--dst",
                "10.77.0.100",
                "--pattern",
                "syn",
                "--src",
                "10.77.128.0",
            ])
            .args(["--src-addrs", &src_addrs, "--src-ports", &src_ports])
            .args(["--secs", &secs_arg])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        (gen, legit.join().unwrap())
    });
    let flood_end = Instant::now();
    let gout = String::from_utf8_lossy(&gen.stdout).to_string();
    assert!(
        gen.status.success(),
        "{name}: xvs-bench gen: {gout}{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    // "sent N frames of 60 bytes in S s: ..."
    let last = gout.lines().last().unwrap_or("");
    let word = |i: usize| last.split_whitespace().nth(i).unwrap_or("0").to_string();
    f.sent = word(1).parse().unwrap_or(0);
    f.secs = word(6).parse().unwrap_or(secs);
    f.legit_during = during;
    if case.conn_max <= 65536 {
        f.states = states(&d.socket);
    }
    let drained = wait_for(DRAIN_LIMIT, || entries(&m()) == HELD as u64);
    f.drain = drained.then(|| flood_end.elapsed());
    talking.store(false, Ordering::Relaxed);
    let (mut held, n, slowest, errors) = talker.join().unwrap();
    f.held_requests = n;
    f.held_slowest = slowest;
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let samples = samples.lock().unwrap().clone();
    f.peak = samples.iter().map(|s| s.0).max().unwrap_or(0);
    f.rss = samples.iter().map(|s| s.1).collect();
    let after = m();
    f.full_drops = metric(&after, "xvs_drops_total{reason=\"conn_table_full\"}");

    // The figures first, so that a failure below still shows them.
    let line = f.json(case);
    eprintln!("flood: {}", f.summary(case));
    if let Ok(path) = std::env::var("XVS_FLOOD_REPORT") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }

    assert!(d.running(), "{name}: xvsd died:\n{}", d.log_text());
    assert!(f.sent > 0, "{name}: the generator sent nothing: {gout}");
    assert!(
        f.peak <= case.conn_max as u64,
        "{name}: the table exceeded its bound: {} > {}",
        f.peak,
        case.conn_max
    );
    if case.flows() > case.conn_max as u64 && case.conn_max <= 65536 {
        assert_eq!(
            f.peak, case.conn_max as u64,
            "{name}: the flood fills a small table"
        );
        assert!(
            f.full_drops > 0,
            "{name}: SYNs that found no room are counted"
        );
    }
    if case.flows() + 1000 < case.conn_max as u64 {
        // Room for every flood flow: legitimate connections go on, slowed
        // only by the CPU the flood takes.
        assert_eq!(f.full_drops, 0, "{name}: no SYN lacked room");
        assert!(
            f.legit_during.0 > 0 && f.legit_during.0 * 2 >= f.legit_during.1,
            "{name}: new connections during the flood: {:?}",
            f.legit_during
        );
    }
    if case.drop_entry.is_some_and(|d| d > 0) {
        assert!(
            f.legit_during.0 > 0,
            "{name}: with drop_entry, new connections get in during the flood: {:?}",
            f.legit_during
        );
    }
    assert!(
        errors.is_empty(),
        "{name}: the held connections failed during the flood: {errors:?}"
    );
    assert!(
        f.held_requests > 0,
        "{name}: no request on the held connections"
    );
    // Flat: the table is preallocated; nothing may grow with the flood but
    // noise (a few MiB of allocator and thread caches).
    let max = f.rss.iter().max().copied().unwrap_or(0);
    assert!(
        max <= f.rss_base + 8 * 1024 + f.rss_base / 20,
        "{name}: xvsd's memory grew from {} kB to {max} kB",
        f.rss_base
    );
    if case.secure_tcp == 3 && !f.states.is_empty() {
        // NAT under secure_tcp: the RS's SYN-ACK moves SYN_RECV to SYNACK.
        assert!(
            f.states.iter().any(|(s, n)| s == "SYNACK" && *n > 0),
            "{name}: secure_tcp in force: {:?}",
            f.states
        );
    }
    if case.secure_tcp == 0 && !f.states.is_empty() {
        assert!(
            !f.states.iter().any(|(s, _)| s == "SYNACK"),
            "{name}: the normal table has no SYNACK: {:?}",
            f.states
        );
    }
    if f.drain.is_none() {
        let left = xvsadm(&d.socket, &["-L", "-n", "-c"]);
        let left = String::from_utf8_lossy(&left.stdout);
        panic!(
            "{name}: the table did not drain to the held connections within {DRAIN_LIMIT} s: {} entries:\n{}",
            entries(&m()),
            left.lines().take(30).collect::<Vec<_>>().join("\n")
        );
    }
    // Afterwards: the held connections and a new one are served.
    for h in &mut held {
        assert!(h.get().is_ok(), "{name}: a held connection after the flood");
    }
    warm_up(lab.client(), to, false);
    d.stop("-TERM");
    f
}

/// The NAT lab of the floods: one RS, which gives up re-sending SYN-ACKs to
/// the flood's sources after one try (five, the default, would keep their
/// entries alive for half a minute: each SYN-ACK refreshes the entry).
fn flood_lab(tag: &str) -> Lab {
    let lab = nat_lab(tag, 1);
    sh(lab.rs(0), "sysctl -qw net.ipv4.tcp_synack_retries=1");
    lab
}

fn cases(conn_max: u32, addrs: u32, ports: u32, half_open: u64) -> Vec<Case> {
    let mut v: Vec<Case> = [0u8, 3]
        .into_iter()
        .map(|secure_tcp| Case {
            conn_max,
            secure_tcp,
            drop_entry: None,
            addrs,
            ports,
            half_open,
        })
        .collect();
    if knob_supported("drop_entry") {
        for d in [0u8, 3] {
            v.push(Case {
                drop_entry: Some(d),
                ..v[0].clone()
            });
        }
    } else {
        eprintln!("flood: xvsd has no [knobs] drop_entry yet: its cases are left out");
    }
    v
}

/// A 64K table against a million flows: full within a second of the flood.
#[test]
fn syn_flood_small_table() {
    require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = flood_lab("flood64k");
    for case in cases(65536, 32768, 32, HALF_OPEN) {
        run_case(&lab, &case);
    }
}

/// The default 1M table. `make test`'s short flood brings 256K flows (room
/// for all of them: new connections must go on); the long one brings 2M
/// flows for 30 s, and half-open entries last 6 s, which fills the table if
/// xvsd takes over 175K new flows a second.
#[test]
fn syn_flood_default_table() {
    require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = flood_lab("flood1m");
    let (addrs, ports, half_open) = if flood_secs() >= 20.0 {
        (32768, 64, ESTABLISHED)
    } else {
        (8192, 32, HALF_OPEN)
    };
    for case in cases(1 << 20, addrs, ports, half_open) {
        run_case(&lab, &case);
    }
}
