//! What a load run reports, as stored in the run's summary and rendered by every
//! reporter: counts per expectation, histograms (with their encoded HDR data, so they can
//! be merged), a series of intervals and the aggregate SLAs' verdicts.

use serde::{Deserialize, Serialize};

use super::hist::{Hist, HistStats};
use crate::model::{Limit, LoadThresholds};
use crate::observation::UnixNanos;

/// What the sender did.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct SendCounts {
    /// Events the schedule made due.
    pub due: u64,
    /// Events whose send was attempted.
    pub attempted: u64,
    /// Of those, sends that returned an error.
    pub failed: u64,
    /// Events not sent: the in-flight cap refused them.
    pub refused: u64,
}

impl SendCounts {
    fn add(&mut self, o: &SendCounts) {
        self.due += o.due;
        self.attempted += o.attempted;
        self.failed += o.failed;
        self.refused += o.refused;
    }
}

/// What arrived for one expectation (or, per interval, what happened in it).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct FlowCounts {
    /// Events that arrived (their first copy), however late.
    pub delivered: u64,
    /// Of those, events that arrived after their SLA.
    pub late: u64,
    /// Of those, events that arrived after a later event of their stream.
    pub reordered: u64,
    /// Copies beyond the first.
    pub duplicates: u64,
    /// Events declared lost: not arrived by their SLA plus grace (or pushed out of the
    /// window). Some may arrive afterwards: see `after_loss` and `recovered`.
    pub declared_lost: u64,
    /// Of `declared_lost`, those the window's slide declared before their deadline.
    pub lost_by_window: u64,
    /// Events declared lost that arrived afterwards (received after their deadline):
    /// counted as delivered and late, no longer as lost.
    pub after_loss: u64,
    /// Events declared lost that had in fact been received before their deadline (their
    /// observation was still on its way to the accounting): delivered, not lost.
    pub recovered: u64,
    /// Arrivals of events settled so long ago that whether they are duplicates or late
    /// arrivals after a loss is no longer known (the set of lost events is capped).
    pub unknown: u64,
    /// Arrivals naming an event of this run that was never sent.
    pub not_sent: u64,
    /// Arrivals of this run's events that did not match the expectation.
    pub mismatched: u64,
    /// Arrivals with no correlation id of this run (another run's, or none).
    pub foreign: u64,
    /// Matching arrivals for an expectation that nothing arrives.
    pub unexpected: u64,
}

impl FlowCounts {
    /// Events lost for good: declared lost and never arrived.
    pub fn lost(&self) -> u64 {
        self.declared_lost
            .saturating_sub(self.after_loss)
            .saturating_sub(self.recovered)
    }

    fn add(&mut self, o: &FlowCounts) {
        self.delivered += o.delivered;
        self.late += o.late;
        self.reordered += o.reordered;
        self.duplicates += o.duplicates;
        self.declared_lost += o.declared_lost;
        self.lost_by_window += o.lost_by_window;
        self.after_loss += o.after_loss;
        self.recovered += o.recovered;
        self.unknown += o.unknown;
        self.not_sent += o.not_sent;
        self.mismatched += o.mismatched;
        self.foreign += o.foreign;
        self.unexpected += o.unexpected;
    }
}

/// Correlation ids of anomalous events, the first few of each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Examples {
    /// Events lost (for good, or until they arrived: see `after_loss`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
    /// Events that arrived more than once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate: Vec<String>,
    /// Events overtaken by a later one of their stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reordered: Vec<String>,
    /// Events that arrived after their SLA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<String>,
    /// Events that arrived after they were declared lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_loss: Vec<String>,
    /// Events whose arrival did not match the expectation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatched: Vec<String>,
    /// Events whose output arrived where nothing should.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexpected: Vec<String>,
}

/// One expectation's account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowReport {
    /// The expectation's index in its scenario (0-based).
    pub expectation: usize,
    /// The channel it watches.
    pub channel: String,
    /// True for an expectation that nothing arrives (`none_within`).
    pub absence: bool,
    /// The SLA (or, for an absence, its window), in ns.
    pub sla_ns: u64,
    /// The grace after the SLA before an event is declared lost, in ns.
    pub grace_ns: u64,
    /// What arrived.
    pub counts: FlowCounts,
    /// Events lost for good (`counts.declared_lost` less those that came back).
    pub lost: u64,
    /// Events neither arrived nor past their deadline when the run ended (it was
    /// interrupted, or `--drain` cut the drain short): not counted as lost.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unsettled: u64,
    /// Latency from each event's intended send time to the listener's receipt.
    pub latency: HistStats,
    /// From the listener's receipt to the accounting (the harness's own lag, not the
    /// system's).
    pub listener_lag: HistStats,
    /// Correlation ids of the first anomalies of each kind.
    pub examples: Examples,
}

/// The sender's account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SendReport {
    /// What it did.
    pub counts: SendCounts,
    /// How far behind its intended time each send began (coordinated omission, shown
    /// rather than hidden).
    pub lag: HistStats,
    /// The first send error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// One expectation during one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowPoint {
    /// What happened in the interval.
    pub counts: FlowCounts,
    /// Latencies of the events that arrived in it.
    pub latency: HistStats,
    /// The listener's lag in it.
    pub listener_lag: HistStats,
}

/// One interval of a load run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IntervalPoint {
    /// When it began, in ns from the load's start.
    pub start_ns: u64,
    /// How long it lasted, in ns.
    pub length_ns: u64,
    /// What the sender did in it.
    pub send: SendCounts,
    /// Events in flight at its end (sent, neither arrived nor declared lost), for the
    /// first expectation that something arrives.
    pub in_flight: u64,
    /// Events due but not yet sent at its end.
    pub behind: u64,
    /// Send lag in it.
    pub send_lag: HistStats,
    /// Per expectation, in scenario order.
    pub flows: Vec<FlowPoint>,
}

impl IntervalPoint {
    /// The two intervals as one (histograms added, counts summed, gauges of the later).
    pub fn merge(&self, later: &IntervalPoint) -> IntervalPoint {
        let mut send = self.send;
        send.add(&later.send);
        IntervalPoint {
            start_ns: self.start_ns,
            length_ns: (later.start_ns + later.length_ns).saturating_sub(self.start_ns),
            send,
            in_flight: later.in_flight,
            behind: later.behind,
            send_lag: merge_stats(&self.send_lag, &later.send_lag),
            flows: self
                .flows
                .iter()
                .zip(&later.flows)
                .map(|(a, b)| {
                    let mut counts = a.counts;
                    counts.add(&b.counts);
                    FlowPoint {
                        counts,
                        latency: merge_stats(&a.latency, &b.latency),
                        listener_lag: merge_stats(&a.listener_lag, &b.listener_lag),
                    }
                })
                .collect(),
        }
    }
}

fn merge_stats(a: &HistStats, b: &HistStats) -> HistStats {
    match (Hist::decode(a), Hist::decode(b)) {
        (Some(mut x), Some(y)) => {
            x.add(&y);
            x.stats()
        }
        // Cannot happen for stats this crate encoded; keep the larger rather than guess.
        _ if a.count >= b.count => a.clone(),
        _ => b.clone(),
    }
}

/// The verdict of one aggregate SLA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ThresholdResult {
    /// What was checked, e.g. ``p99 latency on `processed` ``.
    pub what: String,
    /// The limit, as written (or the default), e.g. `at most 250ms`.
    pub limit: String,
    /// What the run measured.
    pub actual: String,
    /// Whether the run met it.
    pub passed: bool,
}

/// A load run's whole account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoadReport {
    /// The scenario run under load.
    pub scenario: String,
    /// The schedule, e.g. `500/s for 30s`.
    pub profile: String,
    /// Streams per worker.
    pub streams: u32,
    /// This worker's index.
    pub worker: u16,
    /// How many workers share the run.
    pub workers: u16,
    /// Wall-clock start of the schedule.
    pub started_at: UnixNanos,
    /// How long sending lasted, in ns.
    pub send_ns: u64,
    /// How long the drain after the last send lasted, in ns.
    pub drain_ns: u64,
    /// The length of an interval of the live view, in ns (the series may merge
    /// intervals of a long run: see each point's `length_ns`).
    pub interval_ns: u64,
    /// The accounting window, in sequence numbers per stream.
    pub window: u64,
    /// The in-flight cap, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// The sender.
    pub send: SendReport,
    /// Per expectation, in scenario order.
    pub flows: Vec<FlowReport>,
    /// The intervals, in order.
    pub series: Vec<IntervalPoint>,
    /// The aggregate SLAs' verdicts.
    pub thresholds: Vec<ThresholdResult>,
}

impl LoadReport {
    /// Whether every aggregate SLA held.
    pub fn passed(&self) -> bool {
        self.thresholds.iter().all(|t| t.passed)
    }
}

/// Checks the aggregate SLAs of `thresholds` against `report`'s flows and sender. Without
/// a limit given, nothing may be lost, late, refused or fail to send, and an absence
/// expectation may see nothing: what a functional run asks of every event.
pub fn evaluate(thresholds: &LoadThresholds, report: &LoadReport) -> Vec<ThresholdResult> {
    let counts = &report.send.counts;
    let sent = counts.attempted.saturating_sub(counts.failed);
    let zero = Limit::Count(0);
    let or_zero = |given: Option<Limit>| (given.unwrap_or(zero), given.is_some());
    let mut out = vec![
        at_most(
            "send errors".into(),
            or_zero(thresholds.send_errors),
            counts.attempted,
            counts.failed,
        ),
        at_most(
            "events refused by max_in_flight".into(),
            or_zero(thresholds.refused),
            counts.due,
            counts.refused,
        ),
    ];
    for flow in &report.flows {
        let on = format!("on `{}`", crate::escape::escape_text(&flow.channel));
        if flow.absence {
            out.push(at_most(
                format!("arrivals {on} (nothing may arrive)"),
                (zero, true),
                sent,
                flow.counts.unexpected,
            ));
            continue;
        }
        out.push(at_most(
            format!("lost {on}"),
            or_zero(thresholds.lost),
            sent,
            flow.lost,
        ));
        out.push(at_most(
            format!("late {on}"),
            or_zero(thresholds.late),
            sent,
            flow.counts.late,
        ));
        if let Some(limit) = thresholds.duplicates {
            out.push(at_most(
                format!("duplicates {on}"),
                (limit, true),
                sent,
                flow.counts.duplicates,
            ));
        }
        if let Some(limit) = thresholds.reordered {
            out.push(at_most(
                format!("reordered {on}"),
                (limit, true),
                sent,
                flow.counts.reordered,
            ));
        }
        if let Some(limit) = thresholds.delivered {
            let delivered = flow.counts.delivered;
            out.push(ThresholdResult {
                what: format!("delivered {on}"),
                limit: format!("at least {limit}"),
                actual: share(delivered, sent),
                passed: delivered as f64 + 1e-9 >= limit.of(sent),
            });
        }
        let latencies = [
            ("p50", thresholds.p50, flow.latency.p50_ns),
            ("p90", thresholds.p90, flow.latency.p90_ns),
            ("p99", thresholds.p99, flow.latency.p99_ns),
            ("p99.9", thresholds.p999, flow.latency.p999_ns),
            ("max", thresholds.max, flow.latency.max_ns),
        ];
        for (name, limit, actual) in latencies {
            if let Some(limit) = limit {
                let limit_ns = u64::try_from(limit.0.as_nanos()).unwrap_or(u64::MAX);
                let measured = flow.latency.count > 0;
                out.push(ThresholdResult {
                    what: format!("{name} latency {on}"),
                    limit: format!("at most {limit}"),
                    actual: if measured {
                        crate::latency::format_ns(actual)
                    } else {
                        "nothing arrived".into()
                    },
                    passed: measured && actual <= limit_ns && flow.latency.clipped == 0,
                });
            }
        }
    }
    out
}

/// At most `limit` (with whether the suite gave it) of `of`: `actual` passes or not.
fn at_most(what: String, (limit, given): (Limit, bool), of: u64, actual: u64) -> ThresholdResult {
    ThresholdResult {
        what,
        limit: format!("at most {limit}{}", if given { "" } else { " (default)" }),
        actual: share(actual, of),
        passed: actual as f64 <= limit.of(of) + 1e-9,
    }
}

/// `3 (0.3%)`, or `3` when out of nothing: a count with its share of `of`.
pub fn share(n: u64, of: u64) -> String {
    if of == 0 {
        n.to_string()
    } else {
        let pct = n as f64 * 100.0 / of as f64;
        format!("{n} ({})", percent(pct))
    }
}

/// A percentage to three decimals, trailing zeros dropped: `50%`, `99.95%`, `0.001%`.
fn percent(p: f64) -> String {
    let text = format!("{p:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
