//! Latency histograms of a load run: HDR histograms of nanoseconds with 3 significant
//! digits, from 1 µs to one hour. A sample above the range is counted as clipped (and
//! recorded at the top), never dropped silently; histograms travel compressed (the HDR
//! V2 format, deflated, base64) so that they can be merged later (`add`), never their
//! percentiles.

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// The largest value a histogram holds: one hour, in nanoseconds.
pub const HIST_MAX_NS: u64 = 3_600_000_000_000;
const HIST_MIN_NS: u64 = 1_000;
const HIST_DIGITS: u8 = 3;

/// A histogram being filled.
#[derive(Debug, Clone)]
pub struct Hist {
    h: Histogram<u64>,
    clipped: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Hist {
        let h = Histogram::new_with_bounds(HIST_MIN_NS, HIST_MAX_NS, HIST_DIGITS)
            .expect("1 µs to 1 h with 3 significant digits are valid bounds");
        Hist { h, clipped: 0 }
    }

    /// Records one sample (ns); one above [`HIST_MAX_NS`] is counted as clipped.
    pub fn record(&mut self, ns: u64) {
        if ns > HIST_MAX_NS {
            self.clipped += 1;
        }
        self.h.saturating_record(ns.min(HIST_MAX_NS));
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// Adds `other`'s samples (the two have the same range, so nothing is lost).
    pub fn add(&mut self, other: &Hist) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.h.add(&other.h);
        self.clipped += other.clipped;
    }

    /// The distribution as (percentile, value) points: every step of the histogram's
    /// quantile iteration (denser towards the tail), and the maximum last.
    pub fn curve(&self) -> Vec<(f64, u64)> {
        if self.h.is_empty() {
            return Vec::new();
        }
        let mut points: Vec<(f64, u64)> = self
            .h
            .iter_quantiles(2)
            .map(|v| {
                (
                    v.quantile_iterated_to(),
                    self.h.highest_equivalent(v.value_iterated_to()),
                )
            })
            .take_while(|(q, _)| *q < 1.0)
            .collect();
        points.push((1.0, self.h.max()));
        points
    }

    /// Empties it.
    pub fn reset(&mut self) {
        self.h.reset();
        self.clipped = 0;
    }

    /// Its percentiles, with the histogram itself, compressed.
    pub fn stats(&self) -> HistStats {
        let q = |p: f64| self.h.value_at_quantile(p);
        let empty = self.h.is_empty();
        HistStats {
            count: self.h.len(),
            min_ns: if empty { 0 } else { self.h.min() },
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: if empty { 0 } else { self.h.max() },
            mean_ns: if empty { 0 } else { self.h.mean() as u64 },
            clipped: self.clipped,
            hdr: self.encode(),
        }
    }

    fn encode(&self) -> String {
        let mut bytes = Vec::new();
        match V2DeflateSerializer::new().serialize(&self.h, &mut bytes) {
            Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
            Err(_) => String::new(),
        }
    }

    /// The histogram `stats` carries (with its clipped count), if it can be read.
    pub fn decode(stats: &HistStats) -> Option<Hist> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&stats.hdr)
            .ok()?;
        let read: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .ok()?;
        let mut hist = Hist::new();
        hist.h.add(&read).ok()?;
        hist.clipped = stats.clipped;
        Some(hist)
    }
}

/// A histogram's percentiles (nanoseconds) and the histogram, compressed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HistStats {
    /// How many samples.
    pub count: u64,
    /// The smallest.
    pub min_ns: u64,
    /// The median.
    pub p50_ns: u64,
    /// The 90th percentile.
    pub p90_ns: u64,
    /// The 99th percentile.
    pub p99_ns: u64,
    /// The 99.9th percentile.
    pub p999_ns: u64,
    /// The largest (at most one hour: see `clipped`).
    pub max_ns: u64,
    /// The mean.
    pub mean_ns: u64,
    /// Samples above one hour, recorded as one hour.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clipped: u64,
    /// The HDR histogram (V2 format, deflated, base64), to merge with others.
    pub hdr: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_merge_exactly_through_the_encoding() {
        let (mut a, mut b) = (Hist::new(), Hist::new());
        for i in 1..=1000u64 {
            a.record(i * 1_000_000);
            b.record(i * 2_000_000);
        }
        let mut merged = Hist::decode(&a.stats()).expect("decodes");
        merged.add(&Hist::decode(&b.stats()).expect("decodes"));
        let mut direct = a.clone();
        direct.add(&b);
        assert_eq!(merged.stats(), direct.stats());
        let s = merged.stats();
        assert_eq!(s.count, 2000);
        // Within the histogram's 0.1 %.
        assert!((s.max_ns as f64 - 2e9).abs() / 2e9 < 0.001, "{s:?}");
    }

    #[test]
    fn the_curve_rises_to_the_maximum() {
        let mut h = Hist::new();
        for i in 1..=10_000u64 {
            h.record(i * 1_000);
        }
        let curve = h.curve();
        assert!(curve.len() > 10, "{curve:?}");
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
            "{curve:?}"
        );
        assert_eq!(curve.last(), Some(&(1.0, h.stats().max_ns)));
        assert!(Hist::new().curve().is_empty());
    }

    #[test]
    fn samples_above_the_range_are_counted_not_dropped() {
        let mut h = Hist::new();
        h.record(5);
        h.record(HIST_MAX_NS * 2);
        let s = h.stats();
        assert_eq!((s.count, s.clipped), (2, 1));
        assert!(s.max_ns >= HIST_MAX_NS - HIST_MAX_NS / 1000, "{s:?}");
        let back = Hist::decode(&s).expect("decodes").stats();
        assert_eq!(back.clipped, 1);
    }

    #[test]
    fn an_empty_histogram_has_zeros_and_a_garbled_one_is_refused() {
        let s = Hist::new().stats();
        assert_eq!((s.count, s.min_ns, s.max_ns, s.p99_ns), (0, 0, 0, 0));
        assert!(
            Hist::decode(&HistStats {
                hdr: "not base64!".into(),
                ..s.clone()
            })
            .is_none()
        );
        assert!(
            Hist::decode(&HistStats {
                hdr: "AAAA".into(),
                ..s
            })
            .is_none()
        );
    }
}
