//! `xvs-bench gen` and `xvs-bench sink` on a veth pair in namespaces: the
//! generator sends exactly the frames it was asked for, to the address it was
//! given, and the sink counts them against the right real server.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use xvs_netns::{test_prefix, veth, Netns};

/// One `xvs-bench run` at a time: each pins work to both cores.
static RUN: Mutex<()> = Mutex::new(());

#[test]
fn gen_sends_what_sink_counts_per_rs() {
    xvs_netns::require_root();
    let p = format!("{}-bt", test_prefix());
    let g = Netns::new(&format!("{p}-g")).unwrap();
    let s = Netns::new(&format!("{p}-s")).unwrap();
    veth("g0", &g, "s0", &s).unwrap();
    g.sh("ip addr add 10.77.98.1/24 dev g0").unwrap();
    // Frames XDP_TX'ed into a veth reach its peer only if the peer runs NAPI
    // (an XDP program or GRO); a director's interface has XDP, this sink GRO.
    s.sh("ip addr add 10.77.98.2/24 dev s0 && ip addr add 10.77.98.3/24 dev s0 && ethtool -K s0 gro on")
        .unwrap();

    let bench = xvs_e2e::bin("xvs-bench");
    let sink = Command::new(&bench)
        .args(["sink", "--netns", s.name(), "--dev", "s0"])
        .args(["--rs", "10.77.98.2,10.77.98.3", "--secs", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The sink installs its counters before its first second is up.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let gen = Command::new(&bench)
        .args([
            "gen",
            "--netns",
            g.name(),
            "--dev",
            "g0",
            "--dst",
            "10.77.98.2",
        ])
        .args([
            "--pattern",
            "syn",
            "--count",
            "3000",
            "--rate",
            "20000",
            "--secs",
            "2",
        ])
        .output()
        .unwrap();
    let gout = String::from_utf8_lossy(&gen.stdout);
    assert!(
        gen.status.success(),
        "{gout}{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    assert!(gout.contains("sent 3000 frames"), "{gout}");

    let out = sink.wait_with_output().unwrap();
    let sout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{sout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |rs: &str| -> u64 {
        sout.lines()
            .find_map(|l| l.strip_prefix(&format!("{rs}: ")))
            .and_then(|r| r.strip_suffix(" packets"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count for {rs}: {sout}"))
    };
    // 3000 SYNs, plus at most the one datagram that resolved the MAC.
    let n = count("10.77.98.2");
    assert!((3000..=3001).contains(&n), "{sout}");
    assert_eq!(count("10.77.98.3"), 0, "{sout}");
    // The sink removed its nft table.
    let t = s.exec(&["nft", "list", "tables"]).unwrap();
    assert!(!String::from_utf8_lossy(&t.stdout).contains("xvs_sink"));
}

#[test]
fn gen_refuses_addresses_outside_the_lab_range() {
    let out = Command::new(xvs_e2e::bin("xvs-bench"))
        .args([
            "gen",
            "--netns",
            "nonexistent",
            "--dev",
            "g0",
            "--dst",
            "192.0.2.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10.77.0.0/16"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `xvs-bench run` end to end, shortened (a few seconds of traffic): xvs NAT
/// and the ceiling (xvsd's pass-through engine) forward the flood, the report
/// carries the issue's fields with intervals; the namespaces go away.
#[test]
fn bench_run_measures_xvs_nat_and_its_ceiling() {
    xvs_netns::require_root();
    let _one = RUN.lock().unwrap_or_else(|e| e.into_inner());
    let p = format!("{}-br", test_prefix());
    let out_dir = std::env::temp_dir().join(&p);
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(xvs_e2e::bin("xvs-bench"))
        .args([
            "run",
            "--only",
            // The UDP figures only (the flood figure has its own test).
            "ceiling,xvs-nat,udp",
            "--runs",
            "1",
            "--no-tcp",
        ])
        .args(["--secs", "0.3", "--load-secs", "0.5", "--max-trials", "3"])
        .args(["--prefix", &p, "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let json = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no JSON report: {text}"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = r["throughput"].as_array().unwrap();
    let key = |row: &serde_json::Value| {
        format!(
            "{} {} {}",
            row["system"].as_str().unwrap(),
            row["frame_bytes"],
            row["flows"].as_str().unwrap()
        )
    };
    let keys: Vec<String> = rows.iter().map(key).collect();
    assert_eq!(
        keys,
        ["ceiling 64 1024", "xvs-nat 64 1024", "xvs-nat 64 new"],
        "{r}"
    );
    for row in rows {
        // The core's busy time comes from /proc/stat in 10 ms ticks: over
        // this test's 0.5 s at a low load it can read 0 (it did once); the
        // threads' own time (schedstat, in ns) cannot.
        for (f, min) in [
            ("no_drop_mpps", f64::MIN_POSITIVE),
            ("cycles_per_packet_at_load", 0.0),
            ("own_cycles_per_packet_at_load", f64::MIN_POSITIVE),
        ] {
            let c = &row[f];
            let (m, lo, hi) = (
                c["median"].as_f64().unwrap(),
                c["lo"].as_f64().unwrap(),
                c["hi"].as_f64().unwrap(),
            );
            assert!(m >= min && lo <= m && m <= hi, "{f} of {}: {c}", key(row));
        }
        assert!(row["load_mpps"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert!(!r["ratios"].as_array().unwrap().is_empty(), "{r}");
    assert!(out_dir
        .join(json.with_extension("svg").file_name().unwrap())
        .exists());
    // The README generator reads it back.
    let md = Command::new(xvs_e2e::bin("xvs-bench"))
        .args(["readme", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let md_text = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.status.success() && md_text.contains("| xvs-nat | 64 B | new |"),
        "{md_text}"
    );
    assert!(xvs_netns::list(&p).is_empty(), "namespaces left behind");
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// The SYN-flood figure alone (`--only SYSTEMS,flood`), shortened: xvs NAT and
/// nftables DNAT side by side, each with a rate without and during the
/// flood, the flood's rate and the table's peak and bound; the text report
/// and the README generator show it.
#[test]
fn bench_run_flood_figure_for_xvs_and_nft() {
    xvs_netns::require_root();
    let _one = RUN.lock().unwrap_or_else(|e| e.into_inner());
    let p = format!("{}-bf", test_prefix());
    let out_dir = std::env::temp_dir().join(&p);
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(xvs_e2e::bin("xvs-bench"))
        .args(["run", "--only", "xvs-nat,nft-dnat,flood", "--runs", "1"])
        .args(["--load-secs", "0.5", "--prefix", &p, "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SYN flood: new TCP connections/s"), "{text}");
    let json = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no JSON report: {text}"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Only the figure asked for.
    assert!(r["throughput"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["tcp"].as_array().unwrap().is_empty(), "{r}");
    let rows = r["flood"].as_array().unwrap();
    let systems: Vec<&str> = rows.iter().map(|x| x["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["xvs-nat", "nft-dnat"], "{r}");
    for row in rows {
        let med = |f: &str| row[f]["median"].as_f64().unwrap();
        assert!(med("conns_per_sec_without") > 0.0, "{row}");
        assert!(med("offered_mpps") > 0.0, "{row}");
        assert!(row["conns_per_sec_during"]["median"].is_number(), "{row}");
        assert!(row["table_bound"].as_u64().unwrap() > 0, "{row}");
        assert!(row["table_peak"]["median"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["rounds"].as_array().unwrap().len(), 1, "{row}");
    }
    assert!(
        r["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["metric"] == "conns/s during SYN flood"),
        "{r}"
    );
    let md = Command::new(xvs_e2e::bin("xvs-bench"))
        .args(["readme", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let md_text = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.status.success()
            && md_text.contains("**SYN flood**")
            && md_text.contains("| nft-dnat | "),
        "{md_text}"
    );
    assert!(xvs_netns::list(&p).is_empty(), "namespaces left behind");
    let _ = std::fs::remove_dir_all(&out_dir);
}
