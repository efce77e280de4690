//! `make soak`: xvsd in the NAT lab under mixed traffic for a bounded time
//! (`SOAK_SECS`, default 600): new TCP connections at a steady rate, long-lived
//! keep-alive connections, a UDP flow, a SYN flood of 30 s every other
//! minute, a rule change every second and a SIGHUP (rules reloaded) every
//! 30 s. Then the traffic stops and the table must drain to nothing.
//!
//! The report (`report.txt`, `report.json`, and SVG plots of the table's
//! entries and xvsd's RSS over time, floods shaded) goes to `$SOAK_OUT`
//! (default `target/soak`). The run fails if a connection is left after the
//! drain, if a client saw an error outside the flood windows, if a rule
//! change or a SIGHUP was refused, or if xvsd died.
//!
//! Timeouts are shortened (`[timeouts]`) so that the drain takes a minute,
//! not the kernel's 15 minutes of ESTABLISHED; the long-lived connections
//! talk every 2 s, well within them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_e2e::traffic::{
    metric, nat_lab, nat_rules, rss_kb, scrape, sh, temp_file, vip, warm_up, xvsadm, Held, Load,
    Sample,
};
use xvs_e2e::{require_root, wait_for, Daemon};
use xvs_netns::Netns;

const METRICS: &str = "127.0.0.1:9185";
const TIMEOUTS: &str = "[timeouts]\nsyn_recv = 10\nsynack = 10\nestablished = 30\ntime_wait = 5\nclose = 5\nfin_wait = 5\nclose_wait = 5\nlast_ack = 5\nudp = 10\n";
/// The longest of those timeouts.
const LONGEST_TIMEOUT: u64 = 30;
/// Long-lived connections, each asked every 2 s.
const HELD: usize = 8;
/// A flood lasts this long, starting at minute 1, 3, 5, ...
const FLOOD_SECS: u64 = 30;
/// A client error this soon after a flood still counts as in its window (a
/// SYN lost in the flood is sent again after 1 s, 3 s).
const FLOOD_GRACE: Duration = Duration::from_secs(4);

/// One metrics sample, each second.
#[derive(Debug, Clone, Copy)]
struct Tick {
    t: f64,
    entries: u64,
    rss_kb: u64,
}

/// An answer (or failure) of a long-lived connection.
#[derive(Debug, Clone)]
struct HeldSample {
    at: Duration,
    took: Duration,
    result: Result<(), String>,
}

fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the generator in the client for `secs`: frames sent.
fn flood(client: &str, secs: u64) -> u64 {
    let out = Command::new(xvs_e2e::bin("xvs-bench"))
        .args([
            "gen",
            "--netns",
            client,
            "--dev",
            "eth0",
            "--dst",
            "10.77.0.100",
        ])
        .args([
            "--pattern",
            "syn",
            "--src",
            "10.77.128.0",
            "--src-addrs",
            "32768",
        ])
        .args(["--src-ports", "32", "--secs", &secs.to_string()])
        .output()
        .expect("run xvs-bench gen");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "xvs-bench gen: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Sums of ActiveConn and InActConn over every dest (`xvsadm -L -n`).
fn dest_conns(socket: &std::path::Path) -> (u64, u64) {
    let out = xvsadm(socket, &["-L", "-n"]);
    let mut sum = (0, 0);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"->") && w.len() >= 6 {
            sum.0 += w[4].parse::<u64>().unwrap_or(0);
            sum.1 += w[5].parse::<u64>().unwrap_or(0);
        }
    }
    sum
}

/// A small line chart: `points` (t, v) over `0..t_max` seconds, with the
/// `shade` intervals marked (the floods).
fn svg_chart(
    title: &str,
    unit: &str,
    points: &[(f64, f64)],
    shade: &[(f64, f64)],
    t_max: f64,
) -> String {
    let (w, h) = (760.0, 280.0);
    let (left, right, top, bottom) = (80.0, 20.0, 34.0, 42.0);
    // Round ticks: four or five steps of 1, 2 or 5 times a power of ten.
    let top_v = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.05;
    let mag = 10f64.powf((top_v / 4.0).log10().floor());
    let step_v = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| s * 5.0 >= top_v)
        .unwrap_or(10.0 * mag);
    let steps = (top_v / step_v).ceil().max(1.0);
    let v_max = step_v * steps;
    let t_max = t_max.max(1.0);
    let x = |t: f64| left + t / t_max * (w - left - right);
    let y = |v: f64| h - bottom - v / v_max * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">{title}</text>\n"
    );
    for &(a, b) in shade {
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f4cccc\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#a33\" font-size=\"10\">SYN flood</text>",
            x(a),
            (x(b) - x(a)).max(1.0),
            h - top - bottom,
            x(a) + 2.0,
            top + 12.0
        );
    }
    for i in 0..=steps as u32 {
        let v = step_v * i as f64;
        let label = if v >= 1e6 {
            format!("{:.1}M", v / 1e6)
        } else if v >= 1e3 {
            format!("{:.0}K", v / 1e3)
        } else {
            format!("{v:.0}")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{label}</text>",
            y(v),
            w - right,
            left - 6.0,
            y(v) + 4.0
        );
    }
    let step = if t_max > 1200.0 { 300.0 } else { 60.0 };
    let mut t = 0.0;
    while t <= t_max {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#999\"/><text x=\"{0:.1}\" y=\"{3:.1}\" text-anchor=\"middle\">{4:.0}</text>",
            x(t),
            h - bottom,
            h - bottom + 4.0,
            h - bottom + 17.0,
            t
        );
        t += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds</text><text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{unit}</text>",
        (left + w - right) / 2.0,
        h - 6.0,
        h / 2.0,
        h / 2.0
    );
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0:.1}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"black\"/>",
        h - bottom,
        w - right
    );
    let pts: Vec<String> = points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\" points=\"{}\"/>\n</svg>",
        pts.join(" ")
    );
    s
}

#[test]
#[ignore = "long: `make soak` runs it (SOAK_SECS, default 600)"]
fn soak() {
    require_root();
    let secs = env_u64("SOAK_SECS", 600);
    let out_dir = std::env::var("SOAK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/soak"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let lab = nat_lab("soak", 2);
    for i in 0..2 {
        // The RS give up re-sending SYN-ACKs to the flood's sources after one
        // try (each refreshes the entry: five would keep them 30 s longer).
        sh(lab.rs(i), "sysctl -qw net.ipv4.tcp_synack_retries=1");
    }
    let rules_text = nat_rules(&lab, true);
    let rules = temp_file("soak.rules", &rules_text);
    let config = temp_file("soak.toml", TIMEOUTS);
    let tag = format!("{}-soak", xvs_netns::test_prefix());
    let mut d = Daemon::start(
        lab.director(),
        &tag,
        &[
            "-i",
            "c0",
            "-i",
            "r0",
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
    let m = || scrape(&Netns::existing(&dname), METRICS).unwrap_or_default();
    let to = vip(&lab);
    warm_up(lab.client(), to, true);
    eprintln!(
        "soak: {secs} s; xvsd pid {pid}, log {}; report in {}",
        d.log.display(),
        out_dir.display()
    );

    // Traffic: 20 new TCP connections/s and a UDP flow asked 20 times/s
    // (Load), and the long-lived connections.
    let t0 = Instant::now();
    let load = Load::start(lab.client(), to, true, Duration::from_millis(50));
    let load_offset = load.t0.duration_since(t0);
    let running = Arc::new(AtomicBool::new(true));
    let held_samples = Arc::new(Mutex::new(Vec::<HeldSample>::new()));
    let held_thread = {
        let (running, out) = (running.clone(), held_samples.clone());
        let client = lab.client().name().to_string();
        std::thread::spawn(move || {
            let ns = Netns::existing(&client);
            let mut held: Vec<Option<Held>> = (0..HELD).map(|_| Held::open(&ns, to).ok()).collect();
            while running.load(Ordering::Relaxed) {
                for h in &mut held {
                    let t = Instant::now();
                    let r = match h {
                        Some(c) => c.get().map(drop).map_err(|e| e.to_string()),
                        None => Err("could not open".into()),
                    };
                    if r.is_err() {
                        // Counted; a fresh one takes its place.
                        *h = Held::open(&ns, to).ok();
                    }
                    out.lock().unwrap().push(HeldSample {
                        at: t.duration_since(t0),
                        took: t.elapsed(),
                        result: r,
                    });
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };

    // The control loop: each second a rule change or (every 30th) a SIGHUP,
    // a flood starting at minute 1, 3, 5, ..., and a metrics sample.
    let mut ticks = Vec::new();
    let mut floods: Vec<(f64, f64, u64)> = Vec::new();
    let flood_result = Arc::new(Mutex::new(Vec::<(f64, f64, u64)>::new()));
    let mut flood_threads = Vec::new();
    let (mut changes, mut refused, mut hups) = (0u64, Vec::new(), 0u64);
    let mut dummy = false;
    let loaded = |d: &Daemon| d.log_text().matches("rules loaded").count();
    let loaded_at_start = loaded(&d);
    let svc = format!("{to}");
    let rs2 = format!("{}:80", lab.plan().rs[1].addr4);
    for sec in 1..=secs {
        let due = t0 + Duration::from_secs(sec);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if sec % 120 == 60 && sec + 10 < secs {
            let (client, res) = (lab.client().name().to_string(), flood_result.clone());
            let len = FLOOD_SECS.min(secs - sec - 5);
            flood_threads.push(std::thread::spawn(move || {
                let a = t0.elapsed().as_secs_f64();
                let sent = flood(&client, len);
                res.lock()
                    .unwrap()
                    .push((a, t0.elapsed().as_secs_f64(), sent));
            }));
        }
        if sec % 30 == 0 {
            d.signal("-HUP");
            hups += 1;
            // The reload puts the file's rules back: no dummy service, weight 1.
            dummy = false;
        } else {
            let args: Vec<String> = if sec % 2 == 1 {
                let w = (sec / 2 % 3 + 1).to_string();
                ["-e", "-t", &svc, "-r", &rs2, "-m", "-w", &w]
                    .map(String::from)
                    .to_vec()
            } else if dummy {
                ["-D", "-t", "10.77.0.100:8080"].map(String::from).to_vec()
            } else {
                ["-A", "-t", "10.77.0.100:8080", "-s", "wlc"]
                    .map(String::from)
                    .to_vec()
            };
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = xvsadm(&d.socket, &a);
            changes += 1;
            if out.status.success() {
                if sec % 2 == 0 {
                    dummy = !dummy;
                }
            } else {
                refused.push(format!(
                    "{sec}: xvsadm {}: {}",
                    a.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        ticks.push(Tick {
            t: t0.elapsed().as_secs_f64(),
            entries: metric(&m(), "xvs_conn_table_entries"),
            rss_kb: rss_kb(pid),
        });
        if sec % 30 == 0 {
            let s = load.samples();
            eprintln!(
                "soak: {sec}/{secs} s: {} entries, RSS {} kB, {} requests, {} failed so far",
                ticks.last().unwrap().entries,
                ticks.last().unwrap().rss_kb,
                s.len(),
                s.iter().filter(|x| x.result.is_err()).count()
            );
        }
        assert!(d.running(), "xvsd died at {sec} s:\n{}", d.log_text());
    }
    let traffic_end = t0.elapsed();
    let samples: Vec<Sample> = load
        .stop()
        .into_iter()
        .map(|mut s| {
            s.at += load_offset;
            s
        })
        .collect();
    running.store(false, Ordering::Relaxed);
    held_thread.join().unwrap();
    for t in flood_threads {
        t.join().unwrap();
    }
    floods.extend(flood_result.lock().unwrap().iter().copied());
    let held = held_samples.lock().unwrap().clone();

    // Drain: everything leaves by its timeout.
    let drain_start = Instant::now();
    let drained = wait_for(LONGEST_TIMEOUT + 30, || {
        let e = metric(&m(), "xvs_conn_table_entries");
        ticks.push(Tick {
            t: t0.elapsed().as_secs_f64(),
            entries: e,
            rss_kb: rss_kb(pid),
        });
        std::thread::sleep(Duration::from_millis(450));
        e == 0
    });
    let drain = drain_start.elapsed();
    // Dest counters settle with the sweep that frees the entries.
    std::thread::sleep(Duration::from_secs(2));
    let last = m();
    let leaked = metric(&last, "xvs_conn_table_entries");
    let (active, inactive) = dest_conns(&d.socket);
    let hups_loaded = loaded(&d) - loaded_at_start;

    // Client errors, inside and outside the flood windows.
    let in_flood = |at: Duration, took: Duration| {
        floods.iter().any(|&(a, b, _)| {
            let (s, e) = (at.as_secs_f64(), (at + took).as_secs_f64());
            e >= a && s <= b + FLOOD_GRACE.as_secs_f64()
        })
    };
    let mut errors: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new(); // (requests, errors outside, errors inside)
    let mut examples = Vec::new();
    for s in &samples {
        let e = errors
            .entry(if s.tcp { "tcp_new" } else { "udp" })
            .or_default();
        e.0 += 1;
        if let Err(why) = &s.result {
            if in_flood(s.at, s.took) {
                e.2 += 1;
            } else {
                e.1 += 1;
                if examples.len() < 10 {
                    examples.push(format!(
                        "{:?} {} {why}",
                        s.at,
                        if s.tcp { "tcp" } else { "udp" }
                    ));
                }
            }
        }
    }
    for s in &held {
        let e = errors.entry("tcp_held").or_default();
        e.0 += 1;
        if let Err(why) = &s.result {
            if in_flood(s.at, s.took) {
                e.2 += 1;
            } else {
                e.1 += 1;
                if examples.len() < 10 {
                    examples.push(format!("{:?} held {why}", s.at));
                }
            }
        }
    }
    let outside: u64 = errors.values().map(|e| e.1).sum();

    // The report.
    let drops: Vec<(String, u64)> = last
        .lines()
        .filter_map(|l| l.strip_prefix("xvs_drops_total{reason=\""))
        .filter_map(|r| r.split_once("\"} "))
        .map(|(k, v)| (k.to_string(), v.trim().parse().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let rx = metric(&last, "xvs_worker_rx_packets_total");
    let tx = metric(&last, "xvs_worker_tx_packets_total");
    let io_rx = metric(&last, "xvs_io_rx_frames_total");
    let io_tx = metric(&last, "xvs_io_tx_frames_total");
    let flood_sent: u64 = floods.iter().map(|f| f.2).sum();
    let rss_max = ticks.iter().map(|t| t.rss_kb).max().unwrap_or(0);
    let rss_first = ticks.first().map_or(0, |t| t.rss_kb);
    let rss_last = ticks.last().map_or(0, |t| t.rss_kb);
    let peak = ticks.iter().map(|t| t.entries).max().unwrap_or(0);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut r = String::new();
    let _ = writeln!(
        r,
        "xvs soak report ({} s of traffic, commit {commit}, debug build)",
        secs
    );
    let _ = writeln!(r, "command: SOAK_SECS={secs} make soak");
    let _ = writeln!(r, "lab: NAT, 2 RS, rr, TCP and UDP services on {to}; xvsd -i c0 -i r0, conn table 1M, timeouts {}", TIMEOUTS.replace('\n', " "));
    let _ = writeln!(r, "traffic: 20 new TCP conns/s, {HELD} long-lived conns asked every 2 s, a UDP flow asked 20 times/s");
    let _ = writeln!(
        r,
        "floods: {} of up to {FLOOD_SECS} s (1M flows, generator at full rate):",
        floods.len()
    );
    for (a, b, sent) in &floods {
        let _ = writeln!(
            r,
            "  {a:.0}-{b:.0} s: {sent} SYNs ({:.2} Mpps)",
            *sent as f64 / (b - a).max(1e-9) / 1e6
        );
    }
    let _ = writeln!(
        r,
        "rule changes: {changes} ({} refused); SIGHUPs: {hups} ({hups_loaded} reloads logged)",
        refused.len()
    );
    let _ = writeln!(r, "packets: in {rx}, out {tx} (engine, all workers); frames on the workers' sockets: in {io_rx}, out {io_tx}");
    let _ = writeln!(r, "  (the floods sent {flood_sent} SYNs; what the director's rings could not take was lost before xvsd, uncounted by it)");
    let _ = writeln!(r, "drops by reason:");
    for (k, v) in &drops {
        let _ = writeln!(r, "  {k:<20} {v}");
    }
    let _ = writeln!(r, "conn table: peak {peak} entries");
    let _ = writeln!(
        r,
        "after the drain ({:.1} s): {leaked} entries, ActiveConn {active}, InActConn {inactive}  => leaked: {}",
        drain.as_secs_f64(),
        leaked + active + inactive
    );
    let _ = writeln!(
        r,
        "RSS: {rss_first} kB at start, {rss_max} kB max, {rss_last} kB at end"
    );
    let _ = writeln!(
        r,
        "client requests (total, errors outside floods, errors in flood windows +{}s):",
        FLOOD_GRACE.as_secs()
    );
    for (k, (n, o, i)) in &errors {
        let _ = writeln!(r, "  {k:<9} {n:>7} {o:>5} {i:>5}");
    }
    let _ = writeln!(r, "errors outside the floods: {outside}");
    for e in &examples {
        let _ = writeln!(r, "  {e}");
    }
    for e in &refused {
        let _ = writeln!(r, "  refused: {e}");
    }
    let verdict = drained
        && leaked + active + inactive == 0
        && outside == 0
        && refused.is_empty()
        && hups_loaded as u64 == hups;
    let _ = writeln!(r, "verdict: {}", if verdict { "PASS" } else { "FAIL" });
    std::fs::write(out_dir.join("report.txt"), &r).unwrap();
    let json = serde_json::json!({
        "secs": secs,
        "traffic_end_s": traffic_end.as_secs_f64(),
        "floods": floods,
        "rule_changes": changes,
        "rule_changes_refused": refused,
        "sighups": hups,
        "sighups_loaded": hups_loaded,
        "packets_in": rx,
        "packets_out": tx,
        "io_frames_in": io_rx,
        "io_frames_out": io_tx,
        "flood_syns_sent": flood_sent,
        "drops": drops.iter().cloned().collect::<BTreeMap<_, _>>(),
        "peak_entries": peak,
        "drain_s": drain.as_secs_f64(),
        "leaked": {"entries": leaked, "active": active, "inactive": inactive},
        "rss_kb": {"start": rss_first, "max": rss_max, "end": rss_last},
        "requests": errors.iter().map(|(k, v)| (k.to_string(), serde_json::json!({"total": v.0, "errors_outside_floods": v.1, "errors_in_floods": v.2}))).collect::<serde_json::Map<_, _>>(),
        "ticks": ticks.iter().map(|t| [t.t, t.entries as f64, t.rss_kb as f64]).collect::<Vec<_>>(),
        "verdict": verdict,
    });
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    let t_max = ticks.last().map_or(1.0, |t| t.t);
    let shade: Vec<(f64, f64)> = floods.iter().map(|f| (f.0, f.1)).collect();
    let pts = |f: &dyn Fn(&Tick) -> f64| ticks.iter().map(|t| (t.t, f(t))).collect::<Vec<_>>();
    std::fs::write(
        out_dir.join("conns.svg"),
        svg_chart(
            "xvsd connection table entries",
            "entries",
            &pts(&|t| t.entries as f64),
            &shade,
            t_max,
        ),
    )
    .unwrap();
    std::fs::write(
        out_dir.join("rss.svg"),
        svg_chart(
            "xvsd resident memory (VmRSS)",
            "MiB",
            &pts(&|t| t.rss_kb as f64 / 1024.0),
            &shade,
            t_max,
        ),
    )
    .unwrap();
    print!("{r}");
    eprintln!("soak: report, JSON and plots in {}", out_dir.display());

    assert!(d.running(), "xvsd died:\n{}", d.log_text());
    assert!(refused.is_empty(), "rule changes refused: {refused:?}");
    assert_eq!(hups_loaded as u64, hups, "every SIGHUP reloaded the rules");
    assert!(drained, "the table did not drain:\n{r}");
    assert_eq!(leaked + active + inactive, 0, "connections leaked:\n{r}");
    assert_eq!(outside, 0, "clients saw errors outside the floods:\n{r}");
    d.stop("-TERM");
}
