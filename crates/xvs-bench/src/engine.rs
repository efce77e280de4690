//! The engine benchmark: NAT over in-memory 64-byte TCP frames, one worker.
//!
//! Frames are made per flow by patching the client address and port into a
//! template (the engine does not verify checksums, it updates them
//! incrementally, so the patch needs no checksum fix); the cost of making the
//! frames is measured alone and reported, not hidden.

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;
use serde::Serialize;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use xvs_core::addr::Addr;
use xvs_core::engine::{Engine, Limits, NextHop, RuleSet, StaticFib, Verdict, Worker};
use xvs_core::frame::Frame;
use xvs_core::service::ServiceTable;
use xvs_core::service::{DestSpec, FwdMethod, Protocol, SchedKind, ServiceKey, ServiceSpec};
use xvs_core::time::Time;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Connection-table sizes for the scaling measurement.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,100000,1000000,10000000"
    )]
    scale: Vec<u32>,
    /// Packets per measurement.
    #[arg(long, default_value_t = 20_000_000)]
    packets: u64,
    /// Real servers behind the VIP.
    #[arg(long, default_value_t = 4)]
    rs: u8,
    /// Run only the established-flow measurement over this many flows (for profiling).
    #[arg(long)]
    only_established: Option<u32>,
    /// Shared-table scaling instead: N workers (one thread each, pinned to
    /// CPU i mod cores) on one table, for each N listed (e.g. `1,2`).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Scaling: rounds (each measures every thread count once).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// With --only-established: connection sync on (master), as `--start-daemon
    /// master` turns it on; the queues are emptied after every batch (the
    /// sync thread's encoding is not counted: it is off the fast path).
    #[arg(long)]
    sync: bool,
    /// Only the sync throughput over this many established connections: the
    /// master's records encoded into messages, and a backup decoding and
    /// applying them, in records per second.
    #[arg(long)]
    sync_records: Option<u32>,
}

#[derive(Serialize)]
struct Scaling {
    conns: u32,
    ns_per_packet: f64,
}

#[derive(Serialize)]
struct Report {
    established_mpps_per_core: f64,
    new_conns_per_sec_per_core: f64,
    bytes_per_conn: f64,
    frame_make_ns: f64,
    scaling: Vec<Scaling>,
}

const HEADROOM: usize = 256;
const BATCH: usize = 64;
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// A 64-byte Ethernet/IPv4/TCP frame (54 bytes of headers, padded) to the VIP.
fn template(flags_syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 0, 0, 0], [10, 77, 0, 100], 64)
        .tcp(1, 80, 1, 64240);
    let b = if flags_syn { b.syn() } else { b.ack(1) };
    let mut f = Vec::new();
    b.write(&mut f, &[]).expect("write to a Vec");
    f.resize(64, 0);
    f
}

/// Client address and port of flow `i` (addresses in 10.0.0.0/8, 60000 ports each).
#[inline]
fn flow(i: u32) -> ([u8; 4], u16) {
    let a = i / 60000;
    let p = 1024 + (i % 60000) as u16;
    ([10, (a >> 16) as u8, (a >> 8) as u8, a as u8], p)
}

#[inline]
fn patch(buf: &mut [u8], tpl: &[u8], i: u32) {
    buf[HEADROOM..HEADROOM + tpl.len()].copy_from_slice(tpl);
    let (a, p) = flow(i);
    buf[HEADROOM + 26..HEADROOM + 30].copy_from_slice(&a);
    buf[HEADROOM + 34..HEADROOM + 36].copy_from_slice(&p.to_be_bytes());
}

struct Setup {
    engine: Arc<Engine>,
    worker: Worker,
    _table: ServiceTable,
}

fn setup(conn_max: u32, rs: u8) -> Result<Setup> {
    let mut fib = StaticFib::new();
    let mut table = ServiceTable::new();
    let key = ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: ip("10.77.0.100"),
        port: 80,
    };
    let mut spec = ServiceSpec::new(key);
    spec.sched = SchedKind::Rr;
    table.add_service(spec).context("add service")?;
    for r in 0..rs {
        let a = IpAddr::from([10, 77, 1, 10 + r]);
        let mut d = DestSpec::new(a, 8080);
        d.fwd = FwdMethod::Masq;
        table.add_dest(&key, d).context("add dest")?;
        fib = fib.host(
            Addr::from(a),
            NextHop {
                port: 1,
                src_mac: MAC_B,
                dst_mac: [2, 0, 0, 0, 1, r],
                mtu: 1500,
                src_addr: Addr::from(ip("10.77.1.1")),
            },
        );
    }
    let limits = Limits {
        conn_max,
        ..Limits::default()
    };
    let engine = Engine::new(limits, Arc::new(fib), [1, 2, 3, 4]);
    engine.publish(&RuleSet::from_table(&table));
    let worker = engine.worker(0);
    Ok(Setup {
        engine,
        worker,
        _table: table,
    })
}

/// Inserts `n` connections with SYNs; returns seconds taken.
fn populate(s: &mut Setup, n: u32) -> Result<f64> {
    let tpl = template(true);
    let mut bufs = vec![vec![0u8; HEADROOM + 128]; BATCH];
    let t0 = Instant::now();
    let mut i = 0u32;
    while i < n {
        let m = (n - i).min(BATCH as u32) as usize;
        for (k, b) in bufs[..m].iter_mut().enumerate() {
            patch(b, &tpl, i + k as u32);
        }
        s.worker.begin_batch(Time::from_secs(1));
        s.worker
            .prepare(bufs[..m].iter().map(|b| &b[HEADROOM..HEADROOM + tpl.len()]));
        for (k, b) in bufs[..m].iter_mut().enumerate() {
            let mut f = Frame::new(b, HEADROOM, tpl.len());
            let v = s.worker.process_prepared(k, &mut f, 0);
            if v != Verdict::Tx(1) {
                bail!("SYN {i} was not forwarded: {v:?}");
            }
            i += 1;
        }
        s.worker.finish_batch();
    }
    let secs = t0.elapsed().as_secs_f64();
    if s.engine.conns.live() != n {
        bail!("expected {n} conns, table has {}", s.engine.conns.live());
    }
    Ok(secs)
}

/// Completes the handshake of flows `0..n` (SYN_RECV → ESTABLISHED), untimed, so
/// that the measurement sees steady-state established flows only.
fn establish(s: &mut Setup, n: u32) -> Result<()> {
    let tpl = template(false);
    let mut bufs = vec![vec![0u8; HEADROOM + 128]; BATCH];
    let mut i = 0u32;
    while i < n {
        let m = (n - i).min(BATCH as u32) as usize;
        for (k, b) in bufs[..m].iter_mut().enumerate() {
            patch(b, &tpl, i + k as u32);
        }
        s.worker.begin_batch(Time::from_secs(2));
        for b in bufs[..m].iter_mut() {
            let mut f = Frame::new(b, HEADROOM, tpl.len());
            if s.worker.process(&mut f, 0) != Verdict::Tx(1) {
                bail!("ACK {i} was not forwarded");
            }
            i += 1;
        }
    }
    Ok(())
}

/// Sends `packets` established ACKs over `n` flows in a scattered order; ns/packet.
fn established(s: &mut Setup, n: u32, packets: u64) -> Result<f64> {
    establish(s, n)?;
    // With sync on, the master thread's queues are emptied after every batch
    // (the encoding itself is off the fast path and not counted).
    let queues = s.engine.sync.queues();
    let master = s.engine.sync.is_master();
    let mut synced = 0u64;
    let ns = established_share(&mut s.worker, n, 0, 1, packets, &mut || {
        if master {
            for q in &queues {
                while q.pop().is_some() {
                    synced += 1;
                }
            }
        }
    })?;
    if master {
        let (_, dropped) = s.engine.sync.queue_totals();
        println!("sync: {synced} records queued, {dropped} dropped");
    }
    Ok(ns)
}

/// Sends `packets` established ACKs through `w`, over the flows i < n with
/// i mod `of` = `share` (one RSS queue's share), scattered; ns/packet.
fn established_share(
    w: &mut Worker,
    n: u32,
    share: u32,
    of: u32,
    packets: u64,
    after_batch: &mut dyn FnMut(),
) -> Result<f64> {
    let tpl = template(false);
    let mut bufs = vec![vec![0u8; HEADROOM + 128]; BATCH];
    // A full-period LCG over a power of two ≥ the share scatters the flows.
    let mine = (n - share).div_ceil(of);
    let m = mine.next_power_of_two() as u64;
    let mut x = 0u64;
    let mut next = || loop {
        x = (x * 1_664_525 + 1_013_904_223) & (m - 1);
        if x < mine as u64 {
            return x as u32 * of + share;
        }
    };
    let mut sent = 0u64;
    let mut tx = 0u64;
    let t0 = Instant::now();
    while sent < packets {
        // Like an RX burst: the frames of a batch are all there before processing.
        for b in bufs.iter_mut() {
            patch(b, &tpl, next());
        }
        w.begin_batch(Time::from_secs(2));
        w.prepare(bufs.iter().map(|b| &b[HEADROOM..HEADROOM + tpl.len()]));
        for (i, b) in bufs.iter_mut().enumerate() {
            let mut f = Frame::new(b, HEADROOM, tpl.len());
            if let Verdict::Tx(_) = w.process_prepared(i, &mut f, 0) {
                tx += 1;
            }
        }
        w.finish_batch();
        sent += BATCH as u64;
        after_batch();
    }
    let ns = t0.elapsed().as_nanos() as f64 / sent as f64;
    if tx != sent {
        bail!(
            "{} of {sent} established packets were not forwarded",
            sent - tx
        );
    }
    Ok(ns)
}

/// The cost of making frames alone (copy + patch), ns per frame.
fn frame_cost(packets: u64) -> f64 {
    let tpl = template(false);
    let mut bufs = vec![vec![0u8; HEADROOM + 128]; BATCH];
    let t0 = Instant::now();
    let mut i = 0u32;
    let mut sent = 0u64;
    while sent < packets {
        for b in bufs.iter_mut() {
            patch(b, &tpl, i);
            i = i.wrapping_add(7919) % 1_000_000;
            black_box(&b[HEADROOM]);
        }
        sent += BATCH as u64;
    }
    t0.elapsed().as_nanos() as f64 / sent as f64
}

/// SYNs for flows `first..first + n` through `w` at time `now`; seconds taken.
fn syns(w: &mut Worker, first: u32, n: u32, now: Time) -> Result<f64> {
    let tpl = template(true);
    let mut bufs = vec![vec![0u8; HEADROOM + 128]; BATCH];
    let t0 = Instant::now();
    let mut i = 0u32;
    while i < n {
        let m = (n - i).min(BATCH as u32) as usize;
        for (k, b) in bufs[..m].iter_mut().enumerate() {
            patch(b, &tpl, first + i + k as u32);
        }
        w.begin_batch(now);
        w.prepare(bufs[..m].iter().map(|b| &b[HEADROOM..HEADROOM + tpl.len()]));
        for (k, b) in bufs[..m].iter_mut().enumerate() {
            let mut f = Frame::new(b, HEADROOM, tpl.len());
            let v = w.process_prepared(k, &mut f, 0);
            if v != Verdict::Tx(1) {
                bail!("SYN {} was not forwarded: {v:?}", first + i);
            }
            i += 1;
        }
        w.finish_batch();
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Runs `f(thread index, worker)` on `n` threads at once, each pinned and with
/// its own worker of `engine`; returns the wall time from the common start
/// to the last thread's end, and the threads' results.
fn parallel<T: Send>(
    engine: &Arc<Engine>,
    n: usize,
    f: impl Fn(usize, &mut Worker) -> Result<T> + Sync,
) -> Result<(f64, Vec<T>)> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let start = std::sync::Barrier::new(n + 1);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|t| {
                let (start, f) = (&start, &f);
                s.spawn(move || {
                    let mut set = nix::sched::CpuSet::new();
                    if set.set(t % cores).is_ok() {
                        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                    }
                    let mut w = engine.worker(t as u32);
                    start.wait();
                    f(t, &mut w)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for h in hs {
            out.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?);
        }
        Ok((t0.elapsed().as_secs_f64(), out))
    })
}

/// One round of the scaling measurement with `n` workers: established Mpps
/// (1024 flows shared out as RSS would) and new connections per second
/// (disjoint flows), both in aggregate.
fn scaling_round(a: &Args, n: usize) -> Result<(f64, f64)> {
    const FLOWS: u32 = 1024;
    let mut s = setup(FLOWS + FLOWS / 8 + 64, a.rs)?;
    populate(&mut s, FLOWS)?;
    establish(&mut s, FLOWS)?;
    let per = a.packets / n as u64;
    let (secs, _) = parallel(&s.engine, n, |t, w| {
        established_share(w, FLOWS, t as u32, n as u32, per, &mut || {})
    })?;
    let est = (per * n as u64) as f64 / secs / 1e6;
    drop(s);
    let conns = 500_000u32;
    let total = conns * n as u32;
    let s = setup(total + total / 8 + 64, a.rs)?;
    // Untimed first pass, then everything expired and freed: the timed pass
    // reuses memory already touched, as a director's table in steady state
    // does. Fresh memory would add first-touch page faults to the figure,
    // which also serialise the threads on the address space.
    parallel(&s.engine, n, |t, w| {
        syns(w, t as u32 * conns, conns, Time::from_secs(1))
    })?;
    s.engine.housekeep_all(Time::from_secs(1000));
    if s.engine.conns.live() != 0 {
        bail!("{} conns left after expiry", s.engine.conns.live());
    }
    let (secs, _) = parallel(&s.engine, n, |t, w| {
        syns(w, total + t as u32 * conns, conns, Time::from_secs(1001))
    })?;
    if s.engine.conns.live() != total {
        bail!(
            "expected {total} conns, table has {}",
            s.engine.conns.live()
        );
    }
    Ok((est, total as f64 / secs))
}

/// `--threads`: N workers on one shared table, in interleaved rounds.
fn scaling(a: &Args) -> Result<()> {
    let mut est: Vec<Vec<f64>> = vec![Vec::new(); a.threads.len()];
    let mut new: Vec<Vec<f64>> = vec![Vec::new(); a.threads.len()];
    for _ in 0..a.reps.max(1) {
        for (k, &n) in a.threads.iter().enumerate() {
            let (e, c) = scaling_round(a, n.max(1))?;
            est[k].push(e);
            new[k].push(c);
        }
    }
    let (k, cover) = crate::stats::ci_rank(a.reps.max(1));
    println!(
        "xvs engine on one shared table (NAT, 64-byte TCP frames, {} RS): median [x({k})–x({}) of {} rounds, {:.1} % interval]",
        a.rs,
        a.reps.max(1) + 1 - k,
        a.reps.max(1),
        cover * 100.0
    );
    println!(
        "{:>7} {:>28} {:>22} {:>28} {:>22}",
        "threads", "established Mpps (1K flows)", "speedup", "new conns M/s", "speedup"
    );
    let f = |c: crate::stats::Ci, p: usize| format!("{:.p$} [{:.p$}–{:.p$}]", c.median, c.lo, c.hi);
    for (i, &n) in a.threads.iter().enumerate() {
        let sp = |v: &[Vec<f64>]| {
            crate::stats::paired_ratio(&v[i], &v[0]).map_or("-".into(), |c| f(c, 2) + "×")
        };
        let newm: Vec<f64> = new[i].iter().map(|x| x / 1e6).collect();
        println!(
            "{n:>7} {:>28} {:>22} {:>28} {:>22}",
            f(crate::stats::median_ci(&est[i]), 2),
            sp(&est),
            f(crate::stats::median_ci(&newm), 2),
            sp(&new)
        );
    }
    Ok(())
}

/// Sync throughput: encode every connection of a table, then decode and
/// apply the messages on a second engine with the same rules.
fn sync_throughput(n: u32, rs: u8) -> Result<()> {
    use xvs_sync::{BackupConfig, MesgBuilder, SyncDecoder, SyncVersion};
    let mut m = setup(n + n / 8 + 64, rs)?;
    populate(&mut m, n)?;
    establish(&mut m, n)?;
    let snap = m.engine.snapshot();
    let t0 = Instant::now();
    let mut b = MesgBuilder::new(SyncVersion::V1, 0, 1472);
    let mut mesgs = Vec::new();
    let mut recs = 0u64;
    let mut from = 0;
    loop {
        from = m.engine.conns.scan(from, 4096, |v, _| {
            if let Some(r) = m.engine.sync_record(&snap, &v, None) {
                recs += 1;
                if let Ok(Some(full)) = b.push(&r) {
                    mesgs.push(full);
                }
            }
        });
        if from == 0 {
            break;
        }
    }
    mesgs.extend(b.flush());
    let enc = t0.elapsed().as_secs_f64();
    let backup = setup(n + n / 8 + 64, rs)?;
    let mut dec = SyncDecoder::new(BackupConfig { syncid: 0 });
    let now = Time::from_secs(3);
    let t0 = Instant::now();
    let mut applied = 0u64;
    let rules = backup.engine.snapshot();
    for msg in &mesgs {
        for c in dec.decode(msg).conns {
            backup.engine.sync_apply_in(&rules, &c, now);
            applied += 1;
        }
    }
    let app = t0.elapsed().as_secs_f64();
    if backup.engine.conns.live() != n {
        bail!("backup has {} of {n} conns", backup.engine.conns.live());
    }
    println!(
        "sync: {recs} records in {} messages; master encodes {:.2} M records/s, \
         backup decodes and applies {:.2} M records/s",
        mesgs.len(),
        recs as f64 / enc / 1e6,
        applied as f64 / app / 1e6
    );
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.sync_records {
        return sync_throughput(n, a.rs);
    }
    if !a.threads.is_empty() {
        return scaling(&a);
    }
    if let Some(n) = a.only_established {
        let mut s = setup(n + n / 8 + 64, a.rs)?;
        if a.sync {
            s.engine.sync_set_master(true);
        }
        populate(&mut s, n)?;
        let ns = established(&mut s, n, a.packets)?;
        println!("{n} flows: {ns:.1} ns/packet");
        return Ok(());
    }
    let make_ns = frame_cost(a.packets);
    // Established fast path: 1K flows, hot caches; the median of three runs.
    let mut s = setup(1000 + 1000 / 8 + 64, a.rs)?;
    populate(&mut s, 1000)?;
    let mut runs = [0f64; 3];
    for r in runs.iter_mut() {
        *r = established(&mut s, 1000, a.packets)?;
    }
    runs.sort_by(f64::total_cmp);
    let est_ns = runs[1];
    let bytes_per_conn = s.engine.conns.bytes_per_conn();
    // New connections: 1M SYNs into an empty table.
    let n_new = 1_000_000u32;
    let mut s = setup(n_new + n_new / 8, a.rs)?;
    let secs = populate(&mut s, n_new)?;
    let new_per_sec = n_new as f64 / secs;
    drop(s);
    let mut scaling = Vec::new();
    for &n in &a.scale {
        let mut s = setup(n + n / 8 + 64, a.rs)?;
        populate(&mut s, n)?;
        let ns = established(&mut s, n, a.packets)?;
        scaling.push(Scaling {
            conns: n,
            ns_per_packet: ns,
        });
    }
    let r = Report {
        established_mpps_per_core: 1e3 / est_ns,
        new_conns_per_sec_per_core: new_per_sec,
        bytes_per_conn,
        frame_make_ns: make_ns,
        scaling,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "xvs engine benchmark (NAT, 64-byte TCP frames, one core, {} RS)",
            a.rs
        );
        println!(
            "  established fast path   {:>8.2} Mpps  ({:.1} ns/packet, 1K flows)",
            r.established_mpps_per_core, est_ns
        );
        println!(
            "  new connections         {:>8.2} M/s",
            r.new_conns_per_sec_per_core / 1e6
        );
        println!("  memory per connection   {:>8.1} bytes", r.bytes_per_conn);
        println!("  making a frame (incl.)  {:>8.1} ns", r.frame_make_ns);
        println!("  conns        ns/packet");
        for s in &r.scaling {
            println!("  {:>10}   {:>8.1}", s.conns, s.ns_per_packet);
        }
    }
    Ok(())
}
