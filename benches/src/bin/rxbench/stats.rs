//! Summaries of paired rounds: medians, and a distribution-free interval for the median.
//!
//! Within a round every contender runs once, back to back, so a round's ratio to the baseline
//! cancels most of what the host does to both (another tenant, frequency, cache state). Across
//! rounds the ratios are summarised by their median and the order-statistic interval of the
//! median: for `n` values sorted, `[x(k), x(n+1-k)]` (1-based) holds the true median with
//! probability `1 - 2 P(B <= k-1)`, `B ~ Binomial(n, 1/2)`, whatever the distribution. `k` is
//! the largest for which that is at least 95%; below 6 rounds no such `k` exists and the interval
//! is the full range, with its (lower) coverage stated.

use serde::Serialize;

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `P(B <= k)` for `B ~ Binomial(n, 1/2)`.
fn binom_half_cdf(n: usize, k: usize) -> f64 {
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

/// The 1-based rank `k` of the interval's lower end and the interval's coverage.
fn rank(n: usize, confidence: f64) -> (usize, f64) {
    let coverage = |k: usize| 1.0 - 2.0 * binom_half_cdf(n, k - 1);
    let mut best = (1, coverage(1).max(0.0));
    for k in 2..=n.div_ceil(2) {
        let c = coverage(k);
        if c >= confidence {
            best = (k, c);
        } else {
            break;
        }
    }
    best
}

/// A median with its interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    /// The probability that `[lo, hi]` holds the true median (at least 0.95 from 6 values on).
    pub coverage: f64,
    pub n: usize,
}

impl Summary {
    /// The median of `values` and its order-statistic interval at `confidence`; `None` when
    /// empty.
    pub fn of(values: &[f64], confidence: f64) -> Option<Self> {
        let m = median(values)?;
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let (k, coverage) = if n == 1 {
            (1, 0.0)
        } else {
            rank(n, confidence)
        };
        Some(Self {
            median: m,
            lo: v[k - 1],
            hi: v[n - k],
            coverage,
            n,
        })
    }

    /// A ratio whose interval holds 1.0 is level: no contender is ahead.
    pub fn verdict(&self) -> Verdict {
        if self.lo > 1.0 {
            Verdict::Above
        } else if self.hi < 1.0 {
            Verdict::Below
        } else {
            Verdict::Level
        }
    }
}

/// Where a ratio's interval lies relative to 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Above,
    Below,
    Level,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0]), Some(2.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }

    #[test]
    fn binomial_cdf() {
        assert!((binom_half_cdf(9, 1) - 10.0 / 512.0).abs() < 1e-12);
        assert!((binom_half_cdf(4, 4) - 1.0).abs() < 1e-12);
        assert!((binom_half_cdf(5, 0) - 1.0 / 32.0).abs() < 1e-12);
    }

    /// The ranks of the textbook table (e.g. Conover, "Practical Nonparametric Statistics").
    #[test]
    fn ranks_of_the_95_percent_interval() {
        for (n, k) in [
            (6, 1),
            (8, 1),
            (9, 2),
            (11, 2),
            (12, 3),
            (14, 3),
            (17, 5),
            (20, 6),
        ] {
            let (got, cov) = rank(n, 0.95);
            assert_eq!(got, k, "n = {n}");
            assert!(cov >= 0.95, "n = {n}: coverage {cov}");
        }
        // Too few values for 95%: the full range, with what it covers.
        let (k, cov) = rank(5, 0.95);
        assert_eq!(k, 1);
        assert!((cov - (1.0 - 2.0 / 32.0)).abs() < 1e-12);
    }

    #[test]
    fn summary_and_verdict() {
        let v = [1.5, 1.6, 1.4, 1.7, 1.55, 1.62, 1.58, 1.3, 1.9];
        let s = Summary::of(&v, 0.95).unwrap();
        assert_eq!(s.median, 1.58);
        assert_eq!((s.lo, s.hi), (1.4, 1.7));
        assert_eq!(s.verdict(), Verdict::Above);
        let s = Summary::of(&[0.9, 1.1, 1.0, 0.95, 1.05, 1.02, 0.98, 1.01, 0.97], 0.95).unwrap();
        assert_eq!(s.verdict(), Verdict::Level);
        let s = Summary::of(&[0.5; 9], 0.95).unwrap();
        assert_eq!(s.verdict(), Verdict::Below);
        assert_eq!(Summary::of(&[], 0.95), None);
        let one = Summary::of(&[2.0], 0.95).unwrap();
        assert_eq!((one.lo, one.hi, one.coverage), (2.0, 2.0, 0.0));
    }
}
