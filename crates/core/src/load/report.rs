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
    /// Arrivals of events another worker of this run sent: that worker accounts for
    /// them (a run shared by several workers whose listeners all see one output).
    #[serde(default)]
    pub others: u64,
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
        self.others += o.others;
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
    /// In the account of a run shared by several workers ([`LoadReport::merge`]), each
    /// worker's own account, in worker order: its series thinned to at most
    /// [`WORKER_POINTS`] points and its histograms without their HDR data (the merged
    /// account holds those). Empty in a worker's own account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_worker: Vec<LoadReport>,
}

/// The most points of each worker's own series a merged account keeps.
pub const WORKER_POINTS: usize = 120;

impl LoadReport {
    /// Whether every aggregate SLA held.
    pub fn passed(&self) -> bool {
        self.thresholds.iter().all(|t| t.passed)
    }

    /// The account of a run shared by several workers, from each worker's own
    /// (`parts`, any order): counts summed, histograms added (never their percentiles),
    /// the series summed interval by interval (the workers start their schedules
    /// together, so interval `i` of each covers the same time) and thinned to
    /// `max_points`, the first `keep` example ids of each kind. `series`, when given,
    /// holds each worker's intervals as recorded one by one, in worker order (a
    /// worker's own series may have merged them, or been left out of its part). The thresholds are left for the
    /// caller to evaluate on the result. `Err` says why the parts do not add up.
    pub fn merge(
        parts: &[LoadReport],
        series: Option<&[Vec<IntervalPoint>]>,
        max_points: usize,
        keep: usize,
    ) -> Result<LoadReport, String> {
        let mut order: Vec<&LoadReport> = parts.iter().collect();
        order.sort_by_key(|p| p.worker);
        let Some(first) = order.first() else {
            return Err("no worker finished".into());
        };
        for p in &order {
            if p.scenario != first.scenario || p.flows.len() != first.flows.len() {
                return Err(format!(
                    "worker {} ran scenario `{}`, worker {} ran `{}`: every worker of a run \
                     runs the same scenario",
                    first.worker,
                    crate::escape::escape_text(&first.scenario),
                    p.worker,
                    crate::escape::escape_text(&p.scenario)
                ));
            }
        }
        for pair in order.windows(2) {
            if pair[0].worker == pair[1].worker {
                return Err(format!("worker {} finished twice", pair[0].worker));
            }
        }
        let mut send = SendReport::default();
        let mut send_lag = Hist::new();
        for p in &order {
            send.counts.add(&p.send.counts);
            add_decoded(&mut send_lag, &p.send.lag, p.worker)?;
            if send.first_error.is_none() {
                send.first_error.clone_from(&p.send.first_error);
            }
        }
        send.lag = send_lag.stats();
        let flows = (0..first.flows.len())
            .map(|i| {
                let mut flow = first.flows[i].clone();
                flow.counts = FlowCounts::default();
                flow.lost = 0;
                flow.unsettled = 0;
                flow.examples = Examples::default();
                let (mut latency, mut lag) = (Hist::new(), Hist::new());
                for p in &order {
                    let f = &p.flows[i];
                    flow.counts.add(&f.counts);
                    flow.lost += f.lost;
                    flow.unsettled += f.unsettled;
                    add_decoded(&mut latency, &f.latency, p.worker)?;
                    add_decoded(&mut lag, &f.listener_lag, p.worker)?;
                    flow.examples.extend(&f.examples, keep);
                }
                flow.latency = latency.stats();
                flow.listener_lag = lag.stats();
                Ok(flow)
            })
            .collect::<Result<Vec<_>, String>>()?;
        if series.is_some_and(|s| s.len() != order.len()) {
            return Err("the recorded intervals are not one series per worker".into());
        }
        let owned: Vec<Vec<IntervalPoint>>;
        let series = match series {
            Some(s) => s,
            None => {
                owned = order.iter().map(|p| p.series.clone()).collect();
                &owned
            }
        };
        // Every worker's series thinned alike, so that point `i` of each is the same time.
        let longest = series.iter().map(Vec::len).max().unwrap_or(0);
        let mut halvings = 0;
        while longest.div_ceil(1 << halvings) > WORKER_POINTS {
            halvings += 1;
        }
        let per_worker = order
            .iter()
            .zip(series)
            .map(|(p, rows)| {
                let mut own = (*p).clone();
                own.per_worker = Vec::new();
                own.series = halve(rows.clone(), halvings);
                own.strip_hdr();
                own
            })
            .collect();
        let series = thin(sum_series(series), max_points);
        Ok(LoadReport {
            scenario: first.scenario.clone(),
            profile: first.profile.clone(),
            streams: first.streams,
            worker: 0,
            workers: u16::try_from(order.len()).unwrap_or(u16::MAX),
            started_at: order.iter().map(|p| p.started_at).min().unwrap_or(0),
            send_ns: order.iter().map(|p| p.send_ns).max().unwrap_or(0),
            drain_ns: order.iter().map(|p| p.drain_ns).max().unwrap_or(0),
            interval_ns: first.interval_ns,
            window: order.iter().map(|p| p.window).max().unwrap_or(0),
            max_in_flight: first.max_in_flight,
            send,
            flows,
            series,
            thresholds: Vec::new(),
            per_worker,
        })
    }

    /// Drops the HDR data of every histogram (their statistics stay).
    fn strip_hdr(&mut self) {
        self.send.lag.hdr.clear();
        for f in &mut self.flows {
            f.latency.hdr.clear();
            f.listener_lag.hdr.clear();
        }
        for p in &mut self.series {
            p.send_lag.hdr.clear();
            for f in &mut p.flows {
                f.latency.hdr.clear();
                f.listener_lag.hdr.clear();
            }
        }
    }
}

impl Examples {
    /// Appends `other`'s ids, keeping at most `keep` of each kind.
    fn extend(&mut self, other: &Examples, keep: usize) {
        let lists = [
            (&mut self.lost, &other.lost),
            (&mut self.duplicate, &other.duplicate),
            (&mut self.reordered, &other.reordered),
            (&mut self.late, &other.late),
            (&mut self.after_loss, &other.after_loss),
            (&mut self.mismatched, &other.mismatched),
            (&mut self.unexpected, &other.unexpected),
        ];
        for (mine, theirs) in lists {
            let room = keep.saturating_sub(mine.len());
            mine.extend(theirs.iter().take(room).cloned());
        }
    }
}

/// Adds the histogram `stats` (of worker `worker`) carries to `into`; an empty one may
/// lack its HDR data, one with samples may not (its percentiles would be lost).
fn add_decoded(into: &mut Hist, stats: &HistStats, worker: u16) -> Result<(), String> {
    match Hist::decode(stats) {
        Some(h) => into.add(&h),
        None if stats.count == 0 => {}
        None => {
            return Err(format!(
                "worker {worker}'s histogram of {} samples has no readable HDR data, so it \
                 cannot be merged",
                stats.count
            ));
        }
    }
    Ok(())
}

/// The workers' series summed interval by interval: point `i` adds up every worker's
/// point `i` (gauges too: what is in flight or behind is each worker's, summed).
fn sum_series(series: &[Vec<IntervalPoint>]) -> Vec<IntervalPoint> {
    let len = series.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .filter_map(|i| {
            let mut points = series.iter().filter_map(|s| s.get(i));
            let first = points.next()?.clone();
            Some(points.fold(first, |mut sum, p| {
                sum.start_ns = sum.start_ns.min(p.start_ns);
                sum.length_ns = sum.length_ns.max(p.length_ns);
                sum.send.add(&p.send);
                sum.in_flight += p.in_flight;
                sum.behind += p.behind;
                sum.send_lag = merge_stats(&sum.send_lag, &p.send_lag);
                for (a, b) in sum.flows.iter_mut().zip(&p.flows) {
                    a.counts.add(&b.counts);
                    a.latency = merge_stats(&a.latency, &b.latency);
                    a.listener_lag = merge_stats(&a.listener_lag, &b.listener_lag);
                }
                sum
            }))
        })
        .collect()
}

/// `series` with neighbours merged pairwise until at most `max_points` are left.
fn thin(mut series: Vec<IntervalPoint>, max_points: usize) -> Vec<IntervalPoint> {
    let max_points = max_points.max(1);
    while series.len() > max_points {
        series = halve(series, 1);
    }
    series
}

/// `series` with neighbours merged pairwise, `times` times over.
fn halve(mut series: Vec<IntervalPoint>, times: u32) -> Vec<IntervalPoint> {
    for _ in 0..times {
        series = series
            .chunks(2)
            .map(|pair| {
                pair.iter()
                    .skip(1)
                    .fold(pair[0].clone(), |sum, next| sum.merge(next))
            })
            .collect();
    }
    series
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::{AccountConfig, Accountant, FlowKind, FlowSpec, Profile};

    const MS: u64 = 1_000_000;

    fn worker(worker: u16) -> Accountant {
        Accountant::new(AccountConfig {
            run_id: "shared".into(),
            worker,
            streams: 2,
            profile: Profile::parse("100/s", Duration::from_secs(1)).expect("a rate"),
            flows: vec![FlowSpec {
                expectation: 0,
                channel: "out".into(),
                kind: FlowKind::Presence {
                    sla_ns: 100 * MS,
                    grace_ns: 100 * MS,
                },
            }],
            interval_ns: 250 * MS,
            slack_ns: MS,
            keep: 3,
            max_in_flight: None,
            max_points: 1000,
        })
    }

    /// Worker `w` sends its 100 events on time; each arrives `latency(i)` later except
    /// the `lost` ones; every arrival is also heard by the other worker's listener.
    fn run_pair(latency: [fn(u64) -> u64; 2], lost: [&[u64]; 2]) -> [LoadReport; 2] {
        let mut a = [worker(0), worker(1)];
        for i in 0..100u64 {
            let (stream, seq) = ((i % 2) as u32, i / 2);
            let at = a[0].profile().intended_ns(i);
            for w in &mut a {
                w.attempt(stream, seq, at);
            }
            for (w, (delay, gone)) in latency.iter().zip(lost).enumerate() {
                if gone.contains(&i) {
                    continue;
                }
                let id = a[w].id_of(stream, seq).to_string();
                let received = at + delay(i);
                for listener in &mut a {
                    listener.arrive(0, Some(&id), true, received, received);
                }
            }
            for w in &mut a {
                w.tick(at);
            }
        }
        a.map(|w| w.finish(2_000 * MS, "load", 0, 1_000 * MS))
    }

    #[test]
    fn merged_accounts_add_counts_and_histograms_never_percentiles() {
        let [zero, one] = run_pair([|_| 10 * MS, |i| (i + 1) * MS], [&[3], &[5, 6]]);
        // Each worker counted its own events, and the other's as someone else's.
        assert_eq!(zero.flows[0].counts.delivered, 99);
        assert_eq!(zero.flows[0].counts.others, 98);
        assert_eq!(one.flows[0].counts.others, 99);
        assert_eq!(zero.flows[0].counts.foreign, 0);
        let merged =
            LoadReport::merge(&[one.clone(), zero.clone()], None, 1000, 4).expect("they add up");
        assert_eq!(merged.workers, 2);
        assert_eq!(
            merged
                .per_worker
                .iter()
                .map(|p| p.worker)
                .collect::<Vec<_>>(),
            [0, 1]
        );
        let f = &merged.flows[0];
        assert_eq!(f.counts.delivered, 99 + 98);
        assert_eq!(f.lost, 3);
        assert_eq!(merged.send.counts.attempted, 200);
        assert_eq!(f.examples.lost.len(), 3);
        // The merged p50 is that of all 197 latencies together: 10 ms for 99 of them,
        // 1..=100 ms for the other 98; neither worker's own median (10 ms, 50 ms), nor
        // their mean.
        assert_eq!(f.latency.count, 197);
        let mut all: Vec<u64> = (0..100u64)
            .filter(|i| *i != 3)
            .map(|_| 10 * MS)
            .chain(
                (0..100u64)
                    .filter(|i| ![5, 6].contains(i))
                    .map(|i| (i + 1) * MS),
            )
            .collect();
        all.sort_unstable();
        let p50 = all[(all.len() - 1) / 2];
        let close = |a: u64, b: u64| a.abs_diff(b) <= b / 500;
        assert!(
            close(f.latency.p50_ns, p50),
            "{} vs {p50}",
            f.latency.p50_ns
        );
        assert!(close(f.latency.max_ns, 100 * MS), "{}", f.latency.max_ns);
        // The series adds interval by interval.
        let sent: u64 = merged.series.iter().map(|p| p.send.attempted).sum();
        assert_eq!(sent, 200);
        assert_eq!(merged.series.len(), zero.series.len().max(one.series.len()));
        // Each worker's own account keeps its statistics, not its HDR data.
        assert!(merged.per_worker[1].flows[0].latency.hdr.is_empty());
        assert_eq!(merged.per_worker[1].flows[0].lost, 2);
        assert!(merged.per_worker.iter().all(|p| p.per_worker.is_empty()));
    }

    #[test]
    fn recorded_intervals_replace_a_workers_merged_series() {
        // Worker 1 keeps at most 2 points of its own; its recorded rows are its 4
        // intervals as they closed.
        let mut a = [worker(0), worker(1)];
        a[1] = Accountant::new(AccountConfig {
            max_points: 2,
            ..a[1].config().clone()
        });
        let mut rows: [Vec<IntervalPoint>; 2] = Default::default();
        for i in 0..100u64 {
            let (stream, seq) = ((i % 2) as u32, i / 2);
            let at = a[0].profile().intended_ns(i);
            for (w, recorded) in a.iter_mut().zip(&mut rows) {
                w.attempt(stream, seq, at);
                let id = w.id_of(stream, seq).to_string();
                w.arrive(0, Some(&id), true, at + MS, at + MS);
                let closed = w.closed_intervals();
                w.tick(at);
                if w.closed_intervals() > closed {
                    recorded.extend(w.last_closed().cloned());
                }
            }
        }
        for (w, recorded) in a.iter_mut().zip(&mut rows) {
            w.close(2_000 * MS);
            recorded.extend(w.last_closed().cloned());
        }
        let [zero, one] = a.map(|w| w.finish(2_000 * MS, "load", 0, 1_000 * MS));
        assert_eq!(one.series.len(), 2, "worker 1 thinned its own series");
        assert_eq!(rows[1].len(), 4);
        let merged = LoadReport::merge(&[zero, one], Some(&rows), 100, 20).expect("they add up");
        assert_eq!(merged.series.len(), 4, "the rows, not the thinned series");
        for (i, p) in merged.series.iter().enumerate() {
            let sum = rows[0][i].flows[0].counts.delivered + rows[1][i].flows[0].counts.delivered;
            assert_eq!(p.flows[0].counts.delivered, sum, "interval {i}");
        }
        let delivered: u64 = merged
            .series
            .iter()
            .map(|p| p.flows[0].counts.delivered)
            .sum();
        assert_eq!(delivered, 200);
        // Each worker's own series comes from its rows, every worker's thinned alike.
        assert_eq!(merged.per_worker[1].series.len(), 4);
        assert_eq!(merged.per_worker[0].series.len(), 4);
    }

    #[test]
    fn a_histogram_with_samples_but_no_hdr_data_is_not_merged_silently() {
        let [zero, mut one] = run_pair([|_| MS, |_| MS], [&[], &[]]);
        one.flows[0].latency.hdr.clear();
        let err = LoadReport::merge(&[zero, one], None, 10, 1).expect_err("unreadable");
        assert!(err.contains("worker 1's histogram of 100 samples"), "{err}");
    }

    #[test]
    fn parts_that_do_not_add_up_are_refused() {
        let [zero, one] = run_pair([|_| MS, |_| MS], [&[], &[]]);
        assert!(LoadReport::merge(&[], None, 10, 1).is_err());
        let twice = LoadReport::merge(&[zero.clone(), zero.clone()], None, 10, 1)
            .expect_err("one worker twice");
        assert!(twice.contains("worker 0 finished twice"), "{twice}");
        let mut other = one;
        other.scenario = "another\u{1b}[2J".into();
        let err = LoadReport::merge(&[zero, other], None, 10, 1).expect_err("two scenarios");
        assert!(
            err.contains("same scenario") && !err.contains('\u{1b}'),
            "{err}"
        );
    }
}
