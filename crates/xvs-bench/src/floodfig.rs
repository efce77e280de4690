//! The SYN-flood figure's results (`flood.rs` measures them): per-round
//! figures, their medians, and the figure's part of the text report, the
//! README section, the plot and the ratios.

use crate::chart::Ratio;
use crate::stats::{median_ci, Ci};
use crate::systems::System;
use crate::topo::FLOOD_PORT;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::Duration;

/// xvs's table in this figure: the size the TCP figure runs with.
pub const XVS_CONN_MAX: u32 = 1 << 20;

/// How often the table is sampled during the flood.
pub const SAMPLE: Duration = Duration::from_millis(200);

/// One round of one system.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Round {
    /// Legitimate new connections per second, without and during the flood.
    pub without: f64,
    pub during: f64,
    /// Connect + request + answer, µs, 99th percentile.
    pub p99_us_without: f64,
    pub p99_us_during: f64,
    /// Connects or exchanges that failed (1 s timeouts).
    pub errors_without: u64,
    pub errors_during: u64,
    /// SYNs the generator sent, over how long, and their rate.
    pub sent: u64,
    pub flood_secs: f64,
    pub offered_mpps: f64,
    /// Entries in the table when the flood started and at its peak (None:
    /// the table could not be read).
    pub table_before: Option<u64>,
    pub table_peak: Option<u64>,
    /// New flows refused for want of room over the flood (xvs: drops with
    /// reason conn_table_full; conntrack: its `drop` counter).
    pub table_full_drops: Option<u64>,
    /// Entries evicted to make room (xvs: the drop_entry defence; conntrack:
    /// `early_drop`).
    pub table_evicted: Option<u64>,
    /// The table's size (xvs's conn_max; nf_conntrack_max).
    pub table_bound: Option<u64>,
    /// Frames the director's client-side interface (d0) dropped over the
    /// flood: its receive ring full, or for xvs also its AF_XDP queue.
    pub interface_dropped: Option<u64>,
}

impl Round {
    /// The share of the connection rate kept during the flood.
    pub fn kept(&self) -> f64 {
        if self.without > 0.0 {
            self.during / self.without
        } else {
            f64::NAN
        }
    }

    /// The share of the generator's frames the director's interface dropped.
    pub fn dropped_share(&self) -> Option<f64> {
        let d = self.interface_dropped?;
        (self.sent > 0).then(|| (d as f64 / self.sent as f64).min(1.0))
    }
}

/// One system's SYN-flood figures: medians of its rounds with their intervals.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SynFlood {
    pub system: String,
    pub conns_per_sec_without: Ci,
    pub conns_per_sec_during: Ci,
    /// during ÷ without: the median of the per-round ratios.
    pub kept: Ci,
    pub offered_mpps: Ci,
    pub p99_us_without: Ci,
    pub p99_us_during: Ci,
    /// Summed over the rounds.
    pub errors_without: u64,
    pub errors_during: u64,
    /// What the occupancy is: "xvs_conn_table_entries" or "nf_conntrack_count".
    pub table: String,
    /// The table's size (xvs's conn_max; nf_conntrack_max).
    pub table_bound: Option<u64>,
    pub table_peak: Option<Ci>,
    pub table_full_drops: Option<Ci>,
    pub table_evicted: Option<Ci>,
    /// Of the generator's frames, the share the director's interface dropped.
    pub interface_dropped_share: Option<Ci>,
    pub rounds: Vec<Round>,
}

fn opt_ci(v: impl Iterator<Item = Option<u64>>) -> Option<Ci> {
    let v: Vec<f64> = v.flatten().map(|x| x as f64).collect();
    (!v.is_empty()).then(|| median_ci(&v))
}

impl SynFlood {
    /// The figures of `rounds` (in round order) of `sys`.
    pub fn summarize(sys: &str, rounds: Vec<Round>) -> SynFlood {
        let col = |f: fn(&Round) -> f64| median_ci(&rounds.iter().map(f).collect::<Vec<_>>());
        SynFlood {
            system: sys.into(),
            conns_per_sec_without: col(|r| r.without),
            conns_per_sec_during: col(|r| r.during),
            kept: col(Round::kept),
            offered_mpps: col(|r| r.offered_mpps),
            p99_us_without: col(|r| r.p99_us_without),
            p99_us_during: col(|r| r.p99_us_during),
            errors_without: rounds.iter().map(|r| r.errors_without).sum(),
            errors_during: rounds.iter().map(|r| r.errors_during).sum(),
            table: if sys == System::NftDnat.name() {
                "nf_conntrack_count".into()
            } else {
                "xvs_conn_table_entries".into()
            },
            table_bound: rounds.iter().find_map(|r| r.table_bound),
            table_peak: opt_ci(rounds.iter().map(|r| r.table_peak)),
            table_full_drops: opt_ci(rounds.iter().map(|r| r.table_full_drops)),
            table_evicted: opt_ci(rounds.iter().map(|r| r.table_evicted)),
            interface_dropped_share: {
                let v: Vec<f64> = rounds.iter().filter_map(Round::dropped_share).collect();
                (!v.is_empty()).then(|| median_ci(&v))
            },
            rounds,
        }
    }

    pub fn runs(&self, f: fn(&Round) -> f64) -> Vec<f64> {
        self.rounds.iter().map(f).collect()
    }
}

/// Time the flood runs before the clients start measuring: its onset is not
/// what the figure is about.
pub fn settle(secs: f64) -> f64 {
    (secs / 4.0).clamp(0.2, 1.0)
}

/// xvs against nftables DNAT: connections per second during the flood, and
/// the share of the rate each kept.
pub fn ratios(flood: &[SynFlood]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let Some(b) = flood.iter().find(|f| f.system == System::NftDnat.name()) else {
        return out;
    };
    for f in flood.iter().filter(|f| f.system.starts_with("xvs")) {
        out.push(crate::chart::ratio(
            "conns/s during SYN flood",
            "SYN flood",
            (&f.system, &f.conns_per_sec_during, &f.runs(|x| x.during)),
            (&b.system, &b.conns_per_sec_during, &b.runs(|x| x.during)),
        ));
        out.push(crate::chart::ratio(
            "share kept in SYN flood",
            "SYN flood",
            (&f.system, &f.kept, &f.runs(Round::kept)),
            (&b.system, &b.kept, &b.runs(Round::kept)),
        ));
    }
    out
}

fn ci(c: &Ci, prec: usize) -> String {
    format!("{:.p$} [{:.p$}–{:.p$}]", c.median, c.lo, c.hi, p = prec)
}

fn opt(c: &Option<Ci>) -> String {
    c.as_ref().map_or("-".into(), |c| ci(c, 0))
}

fn pct(c: &Option<Ci>) -> String {
    c.as_ref().map_or("-".into(), |c| {
        format!(
            "{:.0} % [{:.0}–{:.0}]",
            c.median * 100.0,
            c.lo * 100.0,
            c.hi * 100.0
        )
    })
}

fn bound(f: &SynFlood) -> String {
    f.table_bound.map_or("-".into(), |b| b.to_string())
}

/// The text report's table.
pub fn table(flood: &[SynFlood]) -> String {
    let mut o = String::new();
    if flood.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\nSYN flood: new TCP connections/s (HTTP/1.0, one request each) without and during a SYN flood at the generator's full rate"
    );
    let _ = writeln!(
        o,
        "{:<12} {:>20} {:>20} {:>18} {:>20} {:>16} {:>22} {:>9} {:>20} {:>20}",
        "system",
        "conns/s without",
        "conns/s during",
        "during ÷ without",
        "flood Mpps offered",
        "dropped at d0",
        "table peak",
        "bound",
        "full drops",
        "evicted"
    );
    for f in flood {
        let _ = writeln!(
            o,
            "{:<12} {:>20} {:>20} {:>18} {:>20} {:>16} {:>22} {:>9} {:>20} {:>20}",
            f.system,
            ci(&f.conns_per_sec_without, 0),
            ci(&f.conns_per_sec_during, 0),
            ci(&f.kept, 2),
            ci(&f.offered_mpps, 3),
            pct(&f.interface_dropped_share),
            opt(&f.table_peak),
            bound(f),
            opt(&f.table_full_drops),
            opt(&f.table_evicted)
        );
    }
    o
}

/// The README section's part.
pub fn readme(flood: &[SynFlood], load_secs: f64) -> String {
    let mut o = String::new();
    if flood.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\n**SYN flood** (port {FLOOD_PORT}; 32 clients, one HTTP/1.0 request per connection, as in the TCP figure): new connections per second without a flood and while the generator (core 0) sends TCP SYNs to the VIP's port as fast as it goes, every one a new flow (the clients' TSO off, so that their packets share the director's receive ring with the flood, as on a NIC); {:.1}-s windows, the second starting {:.2} s into the flood; a fresh director each round (xvs's table {XVS_CONN_MAX} entries). Offered: what the generator sent; dropped: the share of it the director's interface refused (its receive ring full; for xvs also its AF_XDP queue). Table: entries at the peak (sampled every {} ms; xvs: `xvs_conn_table_entries`, nftables: `nf_conntrack_count`), of its bound; new flows refused for want of room (xvs: `conn_table_full` drops, conntrack: `drop`) and entries evicted to make room (xvs: `drop_entry`, conntrack: `early_drop`).\n",
        load_secs,
        settle(load_secs),
        SAMPLE.as_millis()
    );
    o.push_str("| system | conns/s without | conns/s during | during ÷ without | flood Mpps offered | dropped at the director's interface | table peak / bound | refused | evicted |\n|---|---|---|---|---|---|---|---|---|\n");
    for f in flood {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            f.system,
            ci(&f.conns_per_sec_without, 0),
            ci(&f.conns_per_sec_during, 0),
            ci(&f.kept, 2),
            ci(&f.offered_mpps, 3),
            pct(&f.interface_dropped_share),
            opt(&f.table_peak),
            bound(f),
            opt(&f.table_full_drops),
            opt(&f.table_evicted)
        );
    }
    o
}

/// The plot's panel: each system without and during the flood.
pub fn svg(flood: &[SynFlood], body: &mut String, y: f64) -> f64 {
    if flood.is_empty() {
        return y;
    }
    let rows: Vec<_> = flood
        .iter()
        .flat_map(|f| {
            [
                (
                    format!("{} without a flood", f.system),
                    f.conns_per_sec_without,
                    crate::chart::color(&f.system),
                ),
                (
                    format!("{} during a SYN flood", f.system),
                    f.conns_per_sec_during,
                    crate::chart::color(&f.system),
                ),
            ]
        })
        .collect();
    crate::chart::panel(
        body,
        y,
        "New TCP connections per second without and during a SYN flood",
        &rows,
        0,
    )
}
