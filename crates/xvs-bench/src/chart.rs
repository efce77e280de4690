//! What the report's tables and plots are drawn with: ratios with their
//! intervals, bar panels, colours. A leaf module, so that the report and each
//! figure's own rendering (`floodfig.rs`) use it without importing each other.

use crate::stats::{paired_ratio, Ci};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One system's figure over another's.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Ratio {
    /// "no-drop Mpps", "cycles/packet at load", "TCP conns/s", ...
    pub metric: String,
    /// "64 B, 1024 flows", "64 B, new flows" or "TCP".
    pub group: String,
    pub num: String,
    pub den: String,
    /// Median of the per-round ratios with its interval.
    pub ratio: Option<Ci>,
    /// The two systems' intervals do not overlap.
    pub distinct: bool,
    /// What the tables print: the ratio with its interval, or "no difference".
    pub text: String,
}

/// "1.23× [1.10–1.40]", or "no difference" when the systems' intervals overlap.
fn ratio_text(r: Option<Ci>, distinct: bool) -> String {
    match r {
        None => "-".into(),
        Some(_) if !distinct => "no difference".into(),
        Some(c) => format!("{:.2}× [{:.2}–{:.2}]", c.median, c.lo, c.hi),
    }
}

pub fn ratio(
    metric: &str,
    group: &str,
    num: (&str, &Ci, &[f64]),
    den: (&str, &Ci, &[f64]),
) -> Ratio {
    let r = paired_ratio(num.2, den.2);
    let distinct = !num.1.overlaps(den.1);
    Ratio {
        metric: metric.into(),
        group: group.into(),
        num: num.0.into(),
        den: den.0.into(),
        ratio: r,
        distinct,
        text: ratio_text(r, distinct),
    }
}

pub const WIDTH: f64 = 920.0;

/// One panel of horizontal bars (median) with interval whiskers.
pub fn panel(
    s: &mut String,
    y0: f64,
    title: &str,
    rows: &[(String, Ci, &str)],
    prec: usize,
) -> f64 {
    let (w, bar_h, left) = (WIDTH, 18.0, 330.0);
    let max = rows
        .iter()
        .map(|r| r.1.hi.max(r.1.median))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let scale = (w - left - 190.0) / max;
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"{:.0}\" font-size=\"14\" font-weight=\"bold\">{title}</text>",
        y0 + 16.0
    );
    let mut y = y0 + 26.0;
    for (label, c, color) in rows {
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.0}\">{label}</text>\
             <rect x=\"{left}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\
             <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"black\" stroke-width=\"1.5\"/>\
             <text x=\"{:.1}\" y=\"{:.0}\">{:.p$} [{:.p$}–{:.p$}]</text>",
            y + 13.0,
            c.median * scale,
            left + c.lo * scale,
            left + c.hi * scale,
            y + bar_h / 2.0,
            y + bar_h / 2.0,
            left + c.hi.max(c.median) * scale + 6.0,
            y + 13.0,
            c.median,
            c.lo,
            c.hi,
            p = prec
        );
        y += bar_h + 6.0;
    }
    y + 10.0
}

pub fn color(system: &str) -> &'static str {
    if system.starts_with("xvs") {
        "#2b7bba"
    } else if system == "ceiling" {
        "#999999"
    } else if system == "haproxy" {
        "#7a5195"
    } else {
        "#d0702c"
    }
}
