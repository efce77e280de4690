//! Counters: per-worker, single-writer, summed on read.
//!
//! Each worker owns one [`WorkerStats`] and is the only writer of it, so an
//! increment is a plain load and store (no locked instruction, no shared cache
//! line); readers (the control plane) sum all workers' values.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the engine dropped (or refused) a frame. Every drop is counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than its headers say.
    Truncated,
    /// An IP version field that is neither 4 nor 6, or not the Ethernet type's.
    BadVersion,
    /// An IPv4 IHL or TCP data offset below the minimum.
    BadHeaderLen,
    /// An IP total length shorter than the header, or beyond 65535.
    BadTotalLen,
    /// An IPv6 extension header chain longer than xvs walks.
    TooManyExtHeaders,
    /// No service matches the destination and no connection matches the frame.
    NoService,
    /// A TCP segment other than a SYN for an unknown connection.
    NotSyn,
    /// The scheduler found no available real server (an ICMP unreachable was sent).
    NoDest,
    /// The connection table is full.
    ConnTableFull,
    /// The next hop's MAC address is not resolved yet (resolution requested).
    NoNeighbour,
    /// No route to the destination.
    NoRoute,
    /// A packet for a connection whose real server was removed (expire_nodest_conn = 0).
    DestUnavailable,
    /// A later fragment whose first fragment was not seen.
    FragmentUnknown,
    /// Encapsulation would exceed the MTU (an ICMP too-big was sent, or DF was clear).
    TooBig,
    /// No headroom to encapsulate.
    NoHeadroom,
    /// TTL / hop limit exhausted on the forwarded reply path.
    TtlExceeded,
    /// FULLNAT could not allocate a local port (or has no local address).
    NoLocalPort,
    /// An ICMP error that matches no connection.
    IcmpNoConn,
    /// Dropped by the drop_packet defence.
    Defense,
    /// A fragmented IPv6 / non-first-fragment packet xvs does not forward.
    Unsupported,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 20] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::BadHeaderLen,
        DropReason::BadTotalLen,
        DropReason::TooManyExtHeaders,
        DropReason::NoService,
        DropReason::NotSyn,
        DropReason::NoDest,
        DropReason::ConnTableFull,
        DropReason::NoNeighbour,
        DropReason::NoRoute,
        DropReason::DestUnavailable,
        DropReason::FragmentUnknown,
        DropReason::TooBig,
        DropReason::NoHeadroom,
        DropReason::TtlExceeded,
        DropReason::NoLocalPort,
        DropReason::IcmpNoConn,
        DropReason::Defense,
        DropReason::Unsupported,
    ];

    /// Stable name for metrics (`xvs_drops_total{reason="..."}`).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad_version",
            DropReason::BadHeaderLen => "bad_header_len",
            DropReason::BadTotalLen => "bad_total_len",
            DropReason::TooManyExtHeaders => "too_many_ext_headers",
            DropReason::NoService => "no_service",
            DropReason::NotSyn => "not_syn",
            DropReason::NoDest => "no_dest",
            DropReason::ConnTableFull => "conn_table_full",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::NoRoute => "no_route",
            DropReason::DestUnavailable => "dest_unavailable",
            DropReason::FragmentUnknown => "fragment_unknown",
            DropReason::TooBig => "too_big",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoLocalPort => "no_local_port",
            DropReason::IcmpNoConn => "icmp_no_conn",
            DropReason::Defense => "defense",
            DropReason::Unsupported => "unsupported",
        }
    }
}

impl DropReason {
    /// The reason a frame that does not parse is dropped for (`not_ip` never
    /// reaches here: such frames are passed, and the steering program does
    /// not hand them to xvs).
    pub const fn of_parse(e: crate::wire::parse::ParseError) -> DropReason {
        use crate::wire::parse::ParseError as P;
        match e {
            P::NotIp | P::Truncated => DropReason::Truncated,
            P::BadVersion => DropReason::BadVersion,
            P::BadHeaderLen => DropReason::BadHeaderLen,
            P::BadTotalLen => DropReason::BadTotalLen,
            P::TooManyExtHeaders => DropReason::TooManyExtHeaders,
        }
    }
}

/// The number of drop reasons.
pub const N_DROP_REASONS: usize = DropReason::ALL.len();

/// The five IPVS counters of a service or a dest.
#[derive(Debug, Default)]
pub struct Counters {
    pub conns: AtomicU64,
    pub inpkts: AtomicU64,
    pub outpkts: AtomicU64,
    pub inbytes: AtomicU64,
    pub outbytes: AtomicU64,
}

/// A plain copy of [`Counters`] (sums, snapshots).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets client → server.
    pub inpkts: u64,
    /// Packets server → client.
    pub outpkts: u64,
    /// Bytes client → server.
    pub inbytes: u64,
    /// Bytes server → client.
    pub outbytes: u64,
}

impl Totals {
    /// Adds `c` to these totals.
    pub fn add(&mut self, c: &Counters) {
        self.conns += c.conns.load(Relaxed);
        self.inpkts += c.inpkts.load(Relaxed);
        self.outpkts += c.outpkts.load(Relaxed);
        self.inbytes += c.inbytes.load(Relaxed);
        self.outbytes += c.outbytes.load(Relaxed);
    }

    /// Field-wise difference (saturating), for zeroing by baseline.
    pub fn minus(&self, o: &Totals) -> Totals {
        Totals {
            conns: self.conns.saturating_sub(o.conns),
            inpkts: self.inpkts.saturating_sub(o.inpkts),
            outpkts: self.outpkts.saturating_sub(o.outpkts),
            inbytes: self.inbytes.saturating_sub(o.inbytes),
            outbytes: self.outbytes.saturating_sub(o.outbytes),
        }
    }
}

/// Adds to a single-writer counter without a locked instruction.
#[inline]
pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// The counters one worker writes.
#[derive(Debug)]
pub struct WorkerStats {
    /// Frames received.
    pub rx_packets: AtomicU64,
    /// Frames transmitted.
    pub tx_packets: AtomicU64,
    /// Frames handed to the kernel.
    pub passed: AtomicU64,
    /// Frames dropped, by [`DropReason`].
    pub drops: [AtomicU64; N_DROP_REASONS],
    /// Indexed by service id.
    pub svc: Box<[Counters]>,
    /// Indexed by dest id.
    pub dest: Box<[Counters]>,
}

impl WorkerStats {
    /// Counters for `max_services` services and `max_dests` dests.
    pub fn new(max_services: usize, max_dests: usize) -> WorkerStats {
        WorkerStats {
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            drops: Default::default(),
            svc: (0..max_services).map(|_| Counters::default()).collect(),
            dest: (0..max_dests).map(|_| Counters::default()).collect(),
        }
    }

    /// Counts a drop for `r`.
    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        bump(&self.drops[r as usize], 1);
    }

    /// Counts a packet of a connection: `inbound` is client → server.
    #[inline]
    pub fn packet(&self, svc_id: u32, dest_id: u32, inbound: bool, bytes: u64) {
        for c in [
            self.svc.get(svc_id as usize),
            self.dest.get(dest_id as usize),
        ]
        .into_iter()
        .flatten()
        {
            if inbound {
                bump(&c.inpkts, 1);
                bump(&c.inbytes, bytes);
            } else {
                bump(&c.outpkts, 1);
                bump(&c.outbytes, bytes);
            }
        }
    }

    /// Counts a new connection.
    #[inline]
    pub fn conn(&self, svc_id: u32, dest_id: u32) {
        if let Some(c) = self.svc.get(svc_id as usize) {
            bump(&c.conns, 1);
        }
        if let Some(c) = self.dest.get(dest_id as usize) {
            bump(&c.conns, 1);
        }
    }
}

/// The kernel's rate estimator (`ip_vs_est.c`): every 2 s, the rate over the last
/// interval is folded into a smoothed average, `avg += (rate - avg) / 4`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Estimator {
    last: Totals,
    // Scaled as the kernel scales them: cps/pps << 10, bps << 5, per second.
    cps: i64,
    inpps: i64,
    outpps: i64,
    inbps: i64,
    outbps: i64,
}

/// Rates as `--rate` lists them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second, client → server.
    pub inpps: u64,
    /// Packets per second, server → client.
    pub outpps: u64,
    /// Bytes per second, client → server.
    pub inbps: u64,
    /// Bytes per second, server → client.
    pub outbps: u64,
}

/// Seconds between estimator runs (the kernel's 2 s).
pub(super) const ESTIMATOR_INTERVAL_SECS: u64 = 2;

impl Estimator {
    /// Starts from the current totals (so old traffic is not a burst).
    pub(crate) fn new(now: Totals) -> Estimator {
        Estimator {
            last: now,
            ..Default::default()
        }
    }

    /// Folds in the totals read 2 s after the previous call.
    pub(crate) fn update(&mut self, now: Totals) {
        let d = now.minus(&self.last);
        self.last = now;
        // rate per 2 s → per second, scaled: (n << 9) == (n / 2) << 10.
        let fold = |avg: &mut i64, rate: i64| *avg += (rate - *avg) >> 2;
        fold(&mut self.cps, (d.conns as i64) << 9);
        fold(&mut self.inpps, (d.inpkts as i64) << 9);
        fold(&mut self.outpps, (d.outpkts as i64) << 9);
        fold(&mut self.inbps, (d.inbytes as i64) << 4);
        fold(&mut self.outbps, (d.outbytes as i64) << 4);
    }

    /// The rates, rounded as the kernel's `ip_vs_read_estimator`.
    pub(crate) fn rates(&self) -> Rates {
        let r10 = |v: i64| ((v.max(0) as u64) + 0x1FF) >> 10;
        let r5 = |v: i64| ((v.max(0) as u64) + 0xF) >> 5;
        Rates {
            cps: r10(self.cps),
            inpps: r10(self.inpps),
            outpps: r10(self.outpps),
            inbps: r5(self.inbps),
            outbps: r5(self.outbps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_converges_to_a_steady_rate() {
        let mut e = Estimator::new(Totals::default());
        let mut t = Totals::default();
        for _ in 0..100 {
            t.conns += 200; // 100 conns/s
            t.inpkts += 2000; // 1000 pps
            t.inbytes += 2_000_000; // 1 MB/s
            e.update(t);
        }
        let r = e.rates();
        assert_eq!(r.cps, 100);
        assert_eq!(r.inpps, 1000);
        assert_eq!(r.inbps, 1_000_000);
        assert_eq!(r.outpps, 0);
    }

    #[test]
    fn estimator_first_step_is_a_quarter() {
        let mut e = Estimator::new(Totals::default());
        e.update(Totals {
            inpkts: 800, // 400 pps over 2 s
            ..Default::default()
        });
        assert_eq!(e.rates().inpps, 100);
    }

    #[test]
    fn worker_counters_sum() {
        let w = WorkerStats::new(4, 4);
        w.packet(1, 2, true, 100);
        w.packet(1, 2, false, 60);
        w.conn(1, 2);
        w.count_drop(DropReason::NotSyn);
        let mut t = Totals::default();
        t.add(&w.svc[1]);
        assert_eq!(
            t,
            Totals {
                conns: 1,
                inpkts: 1,
                outpkts: 1,
                inbytes: 100,
                outbytes: 60
            }
        );
        assert_eq!(w.drops[DropReason::NotSyn as usize].load(Relaxed), 1);
    }
}
