//! Latency statistics: percentiles of send → arrival latencies, and duration formatting.
//!
//! Percentiles use the *nearest-rank* definition: `pXX` is the smallest sample such that
//! at least XX % of the samples are less than or equal to it. Up to [`EXACT_LIMIT`]
//! samples they are computed exactly (by sorting a copy); above that an HDR histogram
//! with 3 significant digits is used, so percentiles are within 0.1 % of the exact
//! value, while memory and time stay bounded for long load runs. `min`, `max` and `mean`
//! are always exact.
//!
//! ```
//! use roundtrip_core::latency::{LatencySummary, format_ns};
//!
//! let s = LatencySummary::from_ns(&[1_200_000, 1_500_000, 9_000_000]).expect("samples");
//! assert_eq!(s.p50_ns, 1_500_000);
//! assert_eq!(s.to_string(), "p50 1.5ms · p90 9ms · p99 9ms · max 9ms");
//! assert_eq!(format_ns(2_310_000_000), "2.31s");
//! ```

use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Up to this many samples, percentiles are exact; above it, an HDR histogram is used.
pub const EXACT_LIMIT: usize = 100_000;

/// Percentiles (in per mille) reported by [`LatencySummary`].
const P50: u64 = 500;
const P90: u64 = 900;
const P99: u64 = 990;

/// A summary of latency samples, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many samples.
    pub count: u64,
    /// The smallest sample.
    pub min_ns: u64,
    /// The median (nearest rank).
    pub p50_ns: u64,
    /// The 90th percentile (nearest rank).
    pub p90_ns: u64,
    /// The 99th percentile (nearest rank).
    pub p99_ns: u64,
    /// The largest sample.
    pub max_ns: u64,
    /// The arithmetic mean, rounded down.
    pub mean_ns: u64,
}

impl LatencySummary {
    /// Summarises the samples; `None` when there are none.
    pub fn from_ns(samples: &[u64]) -> Option<LatencySummary> {
        let (&first, _) = samples.split_first()?;
        let (mut min_ns, mut max_ns, mut sum) = (first, first, 0u128);
        for &s in samples {
            min_ns = min_ns.min(s);
            max_ns = max_ns.max(s);
            sum += u128::from(s);
        }
        let count = samples.len() as u64;
        // The mean of u64 values fits in a u64.
        let mean_ns = u64::try_from(sum / u128::from(count)).unwrap_or(max_ns);
        let [p50_ns, p90_ns, p99_ns] = if samples.len() <= EXACT_LIMIT {
            exact_percentiles(samples)
        } else {
            histogram_percentiles(samples)
                .map(|ps| ps.map(|p| p.clamp(min_ns, max_ns)))
                .unwrap_or_else(|| exact_percentiles(samples))
        };
        Some(LatencySummary {
            count,
            min_ns,
            p50_ns,
            p90_ns,
            p99_ns,
            max_ns,
            mean_ns,
        })
    }
}

/// Nearest-rank percentiles by sorting a copy.
fn exact_percentiles(samples: &[u64]) -> [u64; 3] {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    [P50, P90, P99].map(|per_mille| {
        // rank = ceil(q × n), 1-based, at least 1.
        let rank = (per_mille * n).div_ceil(1000).max(1);
        let i = usize::try_from(rank - 1)
            .unwrap_or(usize::MAX)
            .min(sorted.len() - 1);
        sorted[i]
    })
}

/// Percentiles from an auto-resizing HDR histogram (3 significant digits); `None` if a
/// sample cannot be recorded, in which case the caller falls back to exact percentiles.
fn histogram_percentiles(samples: &[u64]) -> Option<[u64; 3]> {
    let mut h = Histogram::<u64>::new(3).ok()?;
    for &s in samples {
        h.record(s).ok()?;
    }
    // The histogram reports the highest value equivalent to the rank's bucket.
    Some([P50, P90, P99].map(|per_mille| h.value_at_quantile(per_mille as f64 / 1000.0)))
}

/// Formats nanoseconds with about three significant digits and the largest fitting
/// unit: `850ns`, `850µs`, `1.24ms`, `12.4ms`, `2.31s`, `2s`, `1m 30s`, `1h 5m`.
/// Trailing zeros are dropped.
pub fn format_ns(ns: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1, "ns"),
        (1_000, "µs"),
        (1_000_000, "ms"),
        (1_000_000_000, "s"),
    ];
    const MINUTE: u64 = 60_000_000_000;
    const HOUR: u64 = 60 * MINUTE;
    if ns >= HOUR {
        let minutes = ns.saturating_add(MINUTE / 2) / MINUTE;
        return match minutes % 60 {
            0 => format!("{}h", minutes / 60),
            m => format!("{}h {m}m", minutes / 60),
        };
    }
    if ns >= MINUTE {
        let seconds = ns.saturating_add(500_000_000) / 1_000_000_000;
        return match seconds % 60 {
            0 => format!("{}m", seconds / 60),
            s => format!("{}m {s}s", seconds / 60),
        };
    }
    let mut i = 0;
    while i + 1 < UNITS.len() && ns >= UNITS[i].0 * 1000 {
        i += 1;
    }
    let (unit, name) = UNITS[i];
    let value = ns as f64 / unit as f64;
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    let scale = 10f64.powi(decimals);
    let rounded = (value * scale).round() / scale;
    if rounded >= 1000.0 && i + 1 < UNITS.len() {
        // 999.7µs rounds to 1000µs: say 1ms instead.
        let (next_unit, next_name) = UNITS[i + 1];
        return format!("{}{next_name}", trim(ns as f64 / next_unit as f64, 2));
    }
    format!("{}{name}", trim(rounded, decimals))
}

/// `value` with at most `decimals` decimals, trailing zeros (and dot) removed.
fn trim(value: f64, decimals: i32) -> String {
    let text = format!(
        "{value:.prec$}",
        prec = usize::try_from(decimals).unwrap_or(0)
    );
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} · p90 {} · p99 {} · max {}",
            format_ns(self.p50_ns),
            format_ns(self.p90_ns),
            format_ns(self.p99_ns),
            format_ns(self.max_ns)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_durations_format_without_overflow() {
        assert_eq!(format_ns(u64::MAX), "5124095h 34m");
        assert_eq!(format_ns(u64::MAX - 1), "5124095h 34m");
    }

    #[test]
    fn formats_with_three_significant_digits() {
        let cases = [
            (0, "0ns"),
            (850, "850ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (12_345, "12.3µs"),
            (850_000, "850µs"),
            (999_700, "1ms"),
            (1_240_000, "1.24ms"),
            (1_200_000, "1.2ms"),
            (12_400_000, "12.4ms"),
            (2_000_000_000, "2s"),
            (2_310_000_000, "2.31s"),
            (59_000_000_000, "59s"),
            (59_999_000_000, "60s"),
            (60_000_000_000, "1m"),
            (90_000_000_000, "1m 30s"),
            (3_900_000_000_000, "1h 5m"),
            (7_200_000_000_000, "2h"),
        ];
        for (ns, text) in cases {
            assert_eq!(format_ns(ns), text, "{ns} ns");
        }
    }

    #[test]
    fn empty_samples_have_no_summary() {
        assert_eq!(LatencySummary::from_ns(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles_are_exact_for_small_counts() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let s = LatencySummary::from_ns(&samples).expect("samples");
        assert_eq!(
            s,
            LatencySummary {
                count: 100,
                min_ns: 1,
                p50_ns: 50,
                p90_ns: 90,
                p99_ns: 99,
                max_ns: 100,
                mean_ns: 50,
            }
        );
        let one = LatencySummary::from_ns(&[7]).expect("one sample");
        assert_eq!(
            (one.min_ns, one.p50_ns, one.p99_ns, one.max_ns),
            (7, 7, 7, 7)
        );
    }

    #[test]
    fn large_counts_use_the_histogram_within_its_precision() {
        let samples: Vec<u64> = (1..=(EXACT_LIMIT as u64 + 1)).map(|i| i * 1_000).collect();
        let s = LatencySummary::from_ns(&samples).expect("samples");
        let exact = exact_percentiles(&samples);
        for (got, want) in [s.p50_ns, s.p90_ns, s.p99_ns].into_iter().zip(exact) {
            let error = got.abs_diff(want) as f64 / want as f64;
            assert!(error <= 0.001, "{got} vs {want}");
        }
        assert_eq!(
            (s.min_ns, s.max_ns),
            (1_000, (EXACT_LIMIT as u64 + 1) * 1_000)
        );
    }

    #[test]
    fn displays_percentiles_on_one_line() {
        let s = LatencySummary::from_ns(&[850_000, 1_240_000, 2_310_000_000]).expect("samples");
        assert_eq!(
            s.to_string(),
            "p50 1.24ms · p90 2.31s · p99 2.31s · max 2.31s"
        );
    }

    #[test]
    fn serializes_with_stable_field_names() {
        let s = LatencySummary::from_ns(&[5]).expect("one sample");
        let json = serde_json::to_value(s).expect("serializable");
        assert_eq!(
            json,
            serde_json::json!({"count": 1, "min_ns": 5, "p50_ns": 5, "p90_ns": 5,
                "p99_ns": 5, "max_ns": 5, "mean_ns": 5})
        );
    }
}
