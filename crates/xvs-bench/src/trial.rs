//! Trials of the UDP flood and the no-drop search (RFC 2544, section 26.1).
//!
//! A trial offers a fixed number of frames at a fixed rate (the generator's
//! rate limit and budget), waits for the director to drain, and compares what
//! the sink counted with what the generator sent: counting whole trials, not
//! a window cut out of a running flood, so frames in flight at the window's
//! edges cannot pass for loss. The search is a binary search on the offered
//! rate for the highest one with loss ≤ the threshold.

use crate::gen::{Gen, GenSpec};
use crate::systems::System;
use crate::topo::{Topo, DIR_CPU, GEN_CPU, RS1, VIP};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// What one trial saw.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Trial {
    /// Offered rate (0 = as fast as the generator goes), Mpps.
    pub rate_mpps: f64,
    pub sent: u64,
    pub delivered: u64,
    /// Frames the sink could not take (its fault, not the director's;
    /// counted as loss all the same, and reported so that it shows).
    pub sink_drops: u64,
    /// Wall time from the generator's start to the end of the drain.
    pub secs: f64,
    /// Busy time of the director's core over the same span.
    pub busy_secs: f64,
    /// CPU time of the director's own threads over the same span.
    pub own_secs: f64,
}

impl Trial {
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        self.sent.saturating_sub(self.delivered) as f64 / self.sent as f64
    }

    /// The director core's cycles per delivered packet.
    pub fn cycles_per_packet(&self, hz: f64) -> f64 {
        if self.delivered == 0 {
            return f64::NAN;
        }
        self.busy_secs * hz / self.delivered as f64
    }

    /// The same from the director's own threads' CPU time.
    pub fn own_cycles_per_packet(&self, hz: f64) -> f64 {
        if self.delivered == 0 {
            return f64::NAN;
        }
        self.own_secs * hz / self.delivered as f64
    }
}

/// The flood's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// Ethernet frame without FCS (60 = a 64-byte frame on a wire).
    pub frame: usize,
    /// Every packet a new flow (else 1024 flows round robin).
    pub new_flows: bool,
}

/// The generator's frames for `sys`: UDP to the VIP port 80 (to a real server
/// for ip_forward), sources in 10.77.128.0/17 (routed back to the generator).
fn spec(t: &Topo, sys: System, flood: Flood, rate_pps: u64, budget: u64, first: u64) -> GenSpec {
    GenSpec {
        src_mac: t.g0_mac,
        dst_mac: t.d0_mac,
        saddr: Ipv4Addr::new(10, 77, 128, 1),
        daddr: if sys == System::IpForward {
            RS1.parse().expect("literal")
        } else {
            VIP.parse().expect("literal")
        },
        sport: 1024,
        dport: 80,
        // 32000 × 60000 flows do not repeat within any run; 16 × 64 = 1024.
        src_addrs: if flood.new_flows { 32000 } else { 16 },
        src_ports: if flood.new_flows { 60000 } else { 64 },
        frame_len: flood.frame,
        rate: rate_pps,
        cpu: Some(GEN_CPU),
        proto: 17,
        tcp_flags: 0,
        budget,
        first_flow: first,
    }
}

/// A director under test, as the trials see it: its flood and where its
/// flows continue (new flows never repeat across its trials).
pub struct Bench<'a> {
    pub t: &'a Topo,
    pub sys: System,
    pub flood: Flood,
    /// The director's threads (`Director::threads`).
    threads: Vec<u32>,
    next_flow: u64,
    /// Time the director gets to drain after the generator stops.
    drain: Duration,
}

impl<'a> Bench<'a> {
    pub fn new(t: &'a Topo, sys: System, flood: Flood, threads: Vec<u32>) -> Self {
        Bench {
            t,
            sys,
            flood,
            threads,
            next_flow: 0,
            drain: Duration::from_millis(200),
        }
    }

    /// Offers `rate_mpps` (0 = unlimited) for `secs`.
    pub fn trial(&mut self, rate_mpps: f64, secs: f64) -> Result<Trial> {
        let pps = (rate_mpps * 1e6) as u64;
        let budget = if pps == 0 {
            0
        } else {
            ((pps as f64 * secs) as u64).max(1)
        };
        let t = self.t;
        let s = spec(t, self.sys, self.flood, pps, budget, self.next_flow);
        let ring0 = t.sink_drops()?;
        let c0 = t.sink_count()?;
        let b0 = crate::cpu::busy_secs(DIR_CPU)?;
        let o0 = crate::cpu::own_secs(&self.threads, DIR_CPU)?;
        let t0 = Instant::now();
        // The kernel resolves the interface in the namespace of the calling
        // thread, and the test-run thread inherits it.
        let g = t.gen.run(|| {
            let ifindex = xvs_xdp::sys::ifindex("g0").map_err(|e| anyhow::anyhow!("{e}"))?;
            Gen::start(ifindex, &s)
        })??;
        let limit = Duration::from_secs_f64(secs * 1.5 + 1.0);
        let end = t0 + Duration::from_secs_f64(secs);
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = Instant::now();
            let done = if budget > 0 {
                g.counts().0 >= budget
            } else {
                now >= end
            };
            if done || now - t0 > limit {
                break;
            }
        }
        let sent = g.stop()?;
        std::thread::sleep(self.drain);
        let delivered = t.sink_count()? - c0;
        let busy = crate::cpu::busy_secs(DIR_CPU)? - b0;
        let own = crate::cpu::own_secs(&self.threads, DIR_CPU)? - o0;
        let secs = t0.elapsed().as_secs_f64();
        let sink_drops = t.sink_drops()? - ring0;
        if self.flood.new_flows {
            self.next_flow += sent;
        }
        Ok(Trial {
            rate_mpps,
            sent,
            delivered,
            sink_drops,
            secs,
            busy_secs: busy,
            own_secs: own,
        })
    }
}

/// How the search runs.
#[derive(Debug, Clone, Copy)]
pub struct SearchOpts {
    /// Seconds of traffic per trial.
    pub secs: f64,
    /// Highest loss that passes (0.001 = 0.1 %).
    pub loss: f64,
    /// Stop when the bracket is this narrow relative to its top.
    pub resolution: f64,
    /// Most trials per search (the warm-up not counted).
    pub max_trials: usize,
}

/// A search's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Search {
    /// The highest offered rate that passed, Mpps (0 if none did).
    pub no_drop_mpps: f64,
    /// What the director delivered when overdriven (the warm-up), Mpps.
    pub overdriven_mpps: f64,
    pub trials: Vec<Trial>,
}

/// Binary search for the no-drop rate. An unlimited warm-up trial both warms
/// the director (caches, its 1024 flows) and gives the first rate to try:
/// what it delivered while overdriven. From there the rate goes up by 25 %
/// steps until a trial fails, then the bracket is halved until it is
/// `resolution` wide.
/// `trial(rate_mpps, secs)` runs one trial (rate 0 = unlimited).
pub fn search(mut trial: impl FnMut(f64, f64) -> Result<Trial>, o: &SearchOpts) -> Result<Search> {
    let warm = trial(0.0, (o.secs / 2.0).clamp(0.2, 1.0))?;
    let overdriven = warm.delivered as f64 / warm.secs / 1e6;
    let floor = 0.005; // Mpps: below this the director is broken, not slow.
    let mut r = overdriven.max(floor);
    let (mut lo, mut hi): (f64, Option<f64>) = (0.0, None);
    let mut trials = Vec::new();
    for _ in 0..o.max_trials {
        let tr = trial(r, o.secs)?;
        trials.push(tr);
        if tr.loss() <= o.loss {
            lo = r;
        } else {
            hi = Some(r);
        }
        r = match hi {
            None => r * 1.25,
            Some(h) if (h - lo) / h <= o.resolution => break,
            Some(h) if lo == 0.0 && h <= floor => break,
            Some(h) => (lo + h) / 2.0,
        };
    }
    Ok(Search {
        no_drop_mpps: lo,
        overdriven_mpps: overdriven,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A director that forwards up to `cap` Mpps and delivers `overdriven`
    /// when flooded (less than `cap` when it livelocks).
    fn fake(cap: f64, overdriven: f64) -> impl FnMut(f64, f64) -> Result<Trial> {
        move |rate, secs| {
            let offered = if rate == 0.0 { 10.0 } else { rate };
            let sent = (offered * 1e6 * secs) as u64;
            let delivered = if rate == 0.0 {
                (overdriven * 1e6 * secs) as u64
            } else {
                (cap.min(offered) * 1e6 * secs) as u64
            };
            Ok(Trial {
                rate_mpps: rate,
                sent,
                delivered,
                secs,
                ..Trial::default()
            })
        }
    }

    #[test]
    fn search_converges_from_above_and_below() {
        let o = SearchOpts {
            secs: 1.0,
            loss: 0.001,
            resolution: 0.02,
            max_trials: 20,
        };
        // Overdriven it delivers more than it sustains: search down.
        let s = search(fake(0.5, 0.7), &o).unwrap();
        assert!(
            s.no_drop_mpps <= 0.5 && s.no_drop_mpps > 0.5 * 0.97,
            "{s:?}"
        );
        // Livelock: overdriven it delivers less: search up.
        let s = search(fake(0.8, 0.3), &o).unwrap();
        assert!(
            s.no_drop_mpps <= 0.8 && s.no_drop_mpps > 0.8 * 0.97,
            "{s:?}"
        );
        assert!(s.trials.len() <= 12, "{} trials", s.trials.len());
        // Nothing gets through: 0, within the trial budget.
        let s = search(fake(0.0, 0.0), &o).unwrap();
        assert_eq!(s.no_drop_mpps, 0.0);
    }
}
