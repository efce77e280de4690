//! The statistics of the bench: the median of repeated measurements with a
//! distribution-free confidence interval, and ratios between systems.
//!
//! The interval is the order-statistic (binomial) CI of the median: for n
//! sorted samples, [x(k), x(n+1-k)] holds the true median with probability
//! 1 - 2·P(Bin(n, ½) < k), whatever the distribution. It assumes only
//! independent runs, which the interleaved repetitions approximate; a bootstrap
//! would need far more than the 5–10 runs a VM bench can afford. Written here
//! (30 lines) rather than pulled in from a statistics crate.

use serde::{Deserialize, Serialize};

/// The coverage the intervals aim at.
pub const LEVEL: f64 = 0.95;

/// A median with its confidence interval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Ci {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Ci {
    /// True when the two intervals share a point (the data cannot tell them apart).
    pub fn overlaps(&self, o: &Ci) -> bool {
        self.lo <= o.hi && o.lo <= self.hi
    }
}

/// P(Bin(n, ½) ≤ k).
fn binom_cdf_half(n: usize, k: usize) -> f64 {
    let mut c = 1.0f64; // C(n, 0)
    let mut sum = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            c = c * (n + 1 - i) as f64 / i as f64;
        }
        sum += c;
    }
    sum / 2f64.powi(n as i32)
}

/// The 1-based rank k of the narrowest interval [x(k), x(n+1-k)] that covers
/// the median with probability ≥ LEVEL, with its coverage; with too few
/// samples for LEVEL (n ≤ 5), k = 1 and the coverage it has.
pub fn ci_rank(n: usize) -> (usize, f64) {
    let cover = |k: usize| 1.0 - 2.0 * binom_cdf_half(n, k - 1);
    let mut k = 1;
    while k < n.div_ceil(2) && cover(k + 1) >= LEVEL {
        k += 1;
    }
    (k, if n == 0 { 0.0 } else { cover(k) })
}

/// The median of `v` and its order-statistic confidence interval.
pub fn median_ci(v: &[f64]) -> Ci {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Ci::default();
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let (k, _) = ci_rank(n);
    Ci {
        median,
        lo: s[k - 1],
        hi: s[n - k],
    }
}

/// The ratio a/b from paired runs (run i of both systems was made in the same
/// round, so the VM's drift cancels in each pair): the median of the per-run
/// ratios with its interval. None when the pairs are missing or b is zero.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Option<Ci> {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, &y)| y > 0.0)
        .map(|(&x, &y)| x / y)
        .collect();
    (!r.is_empty()).then(|| median_ci(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistic_intervals() {
        // n = 5 cannot reach 95 %: the full range, 93.75 %.
        let (k, c) = ci_rank(5);
        assert_eq!(k, 1);
        assert!((c - 0.9375).abs() < 1e-9);
        // n = 6: [min, max] at 96.9 %.
        let (k, c) = ci_rank(6);
        assert_eq!(k, 1);
        assert!((c - 0.96875).abs() < 1e-9);
        // n = 9: [x(2), x(8)], 96.1 %.
        let (k, c) = ci_rank(9);
        assert_eq!(k, 2);
        assert!((c - (1.0 - 2.0 * 10.0 / 512.0)).abs() < 1e-9);
        // n = 20: [x(6), x(15)], 95.9 % (the textbook value).
        assert_eq!(ci_rank(20).0, 6);

        let ci = median_ci(&[5.0, 1.0, 3.0, 2.0, 4.0, 6.0]);
        assert_eq!(ci.median, 3.5);
        assert_eq!((ci.lo, ci.hi), (1.0, 6.0));
        assert!(ci.overlaps(&Ci {
            median: 7.0,
            lo: 6.0,
            hi: 8.0
        }));
        assert!(!ci.overlaps(&Ci {
            median: 7.0,
            lo: 6.5,
            hi: 8.0
        }));
        let r = paired_ratio(&[2.0, 4.0, 6.0], &[1.0, 2.0, 0.0]).unwrap();
        assert_eq!(r.median, 2.0);
        assert_eq!(median_ci(&[]), Ci::default());
    }
}
