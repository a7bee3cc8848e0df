//! The accounting of one worker's load: fed with what the sender did and what arrived,
//! and with the clock, it classifies every event exactly in bounded memory and keeps the
//! series of intervals. Pure: the engine owns the clock, the channels and the tasks.
//!
//! Time is nanoseconds from the load's start on one monotonic clock: intended send
//! times come from the [`Profile`], arrivals carry the listener's receive time.
//!
//! An event is settled (delivered, or declared lost) once its deadline passed: its
//! intended time plus SLA plus grace, and also its actual send time plus SLA plus grace,
//! so that a sender behind schedule never turns its own lag into losses (the lag still
//! counts in latency, which is measured from the intended time). Send times are not
//! kept per event: each stream keeps segments of consecutive events with an upper bound
//! on their lag behind schedule, a new segment starting only when the lag rises above
//! the bound or falls well below it (by more than twice the slack), so a steady sender
//! has one segment, and settling is late by at most the slack.

use std::collections::VecDeque;

use super::hist::Hist;
use super::id::LoadId;
use super::profile::Profile;
use super::report::{
    Examples, FlowCounts, FlowPoint, FlowReport, IntervalPoint, LoadReport, SendCounts, SendReport,
};
use super::window::{Arrival, Settled, StreamWindow};
use crate::observation::UnixNanos;

/// What an expectation asks under load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowKind {
    /// Each event's output arrives within `sla_ns`; after `grace_ns` more it is lost.
    Presence {
        /// The SLA.
        sla_ns: u64,
        /// The grace after it.
        grace_ns: u64,
    },
    /// Nothing matching arrives for `window_ns` after each event.
    Absence {
        /// The window.
        window_ns: u64,
    },
}

/// One expectation to account for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    /// Its index in the scenario.
    pub expectation: usize,
    /// The channel it watches.
    pub channel: String,
    /// What it asks.
    pub kind: FlowKind,
}

/// How to account.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The run's id (its tag is in every event's correlation id).
    pub run_id: String,
    /// This worker.
    pub worker: u16,
    /// Streams (events go round-robin to them).
    pub streams: u32,
    /// The schedule.
    pub profile: Profile,
    /// The expectations, in scenario order.
    pub flows: Vec<FlowSpec>,
    /// The length of an interval.
    pub interval_ns: u64,
    /// How long after a deadline an event is settled, so that observations received
    /// before it reached the accounting first.
    pub slack_ns: u64,
    /// How many correlation ids of each kind of anomaly are kept.
    pub keep: usize,
    /// The in-flight cap.
    pub max_in_flight: Option<u64>,
    /// The most intervals the series keeps: beyond it, neighbours are merged.
    pub max_points: usize,
}

/// The most points a load run's series keeps (neighbours merge beyond it): a day-long
/// soak at 1 s intervals keeps two-minute points, and the HTML report stays small.
pub const MAX_POINTS: usize = 720;
/// The most sequence numbers a stream's window spans.
pub const MAX_WINDOW: u64 = 1 << 22;
/// The most ranges of lost sequence numbers remembered, over all streams.
pub const LOST_RANGES: usize = 1 << 20;

#[derive(Debug)]
struct StreamSend {
    /// The next sequence number neither attempted nor refused.
    next: u64,
    /// (first sequence number, upper bound of the lag of it and of those after it up to
    /// the next segment), in order.
    segments: VecDeque<(u64, u64)>,
    last_ns: u64,
}

#[derive(Debug)]
struct Flow {
    spec: FlowSpec,
    windows: Vec<StreamWindow>,
    totals: FlowCounts,
    now: FlowCounts,
    latency: Hist,
    latency_total: Hist,
    lag: Hist,
    lag_total: Hist,
    examples: Examples,
}

impl Flow {
    /// The deadline after an event's intended (or actual) send time.
    fn horizon_ns(&self) -> u64 {
        match self.spec.kind {
            FlowKind::Presence { sla_ns, grace_ns } => sla_ns + grace_ns,
            FlowKind::Absence { window_ns } => window_ns,
        }
    }
}

/// One worker's accounting.
#[derive(Debug)]
pub struct Accountant {
    cfg: AccountConfig,
    tag: u32,
    window: u64,
    streams: Vec<StreamSend>,
    flows: Vec<Flow>,
    send_total: SendCounts,
    send_now: SendCounts,
    send_lag: Hist,
    send_lag_total: Hist,
    first_error: Option<String>,
    interval_start: u64,
    due_at_interval_start: u64,
    series: Vec<IntervalPoint>,
    closed: u64,
    merge_cursor: usize,
    last_closed: Option<IntervalPoint>,
}

fn keep_id(list: &mut Vec<String>, keep: usize, id: impl FnOnce() -> String) {
    if list.len() < keep {
        list.push(id());
    }
}

impl Accountant {
    /// An accountant for `cfg`; the window of each stream is sized to hold every event
    /// of the stream that can be unsettled at once at the profile's highest rate.
    pub fn new(cfg: AccountConfig) -> Accountant {
        let streams = cfg.streams.max(1);
        let horizon = cfg
            .flows
            .iter()
            .map(|f| match f.kind {
                FlowKind::Presence { sla_ns, grace_ns } => sla_ns + grace_ns,
                FlowKind::Absence { .. } => 0,
            })
            .max()
            .unwrap_or(0)
            + cfg.slack_ns;
        let per_stream = cfg.profile.max_rate() / f64::from(streams) * (horizon as f64 / 1e9);
        // Twice what can be unsettled, so that the window slides only on time.
        let window = ((per_stream * 2.0).ceil() as u64)
            .clamp(1024, MAX_WINDOW)
            .next_power_of_two();
        let lost_cap = (LOST_RANGES / streams as usize).max(64);
        let flows = cfg
            .flows
            .iter()
            .map(|spec| Flow {
                spec: spec.clone(),
                windows: match spec.kind {
                    FlowKind::Presence { .. } => (0..streams)
                        .map(|_| StreamWindow::new(window, lost_cap))
                        .collect(),
                    FlowKind::Absence { .. } => Vec::new(),
                },
                totals: FlowCounts::default(),
                now: FlowCounts::default(),
                latency: Hist::new(),
                latency_total: Hist::new(),
                lag: Hist::new(),
                lag_total: Hist::new(),
                examples: Examples::default(),
            })
            .collect();
        Accountant {
            tag: LoadId::tag_of(&cfg.run_id),
            window,
            streams: (0..streams)
                .map(|_| StreamSend {
                    next: 0,
                    segments: VecDeque::new(),
                    last_ns: 0,
                })
                .collect(),
            flows,
            send_total: SendCounts::default(),
            send_now: SendCounts::default(),
            send_lag: Hist::new(),
            send_lag_total: Hist::new(),
            first_error: None,
            interval_start: 0,
            due_at_interval_start: 0,
            series: Vec::new(),
            closed: 0,
            merge_cursor: 0,
            last_closed: None,
            cfg,
        }
    }

    /// How it accounts.
    pub fn config(&self) -> &AccountConfig {
        &self.cfg
    }

    /// The window each stream has, in sequence numbers.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// How many intervals have closed so far.
    pub fn closed_intervals(&self) -> u64 {
        self.closed
    }

    /// The schedule.
    pub fn profile(&self) -> &Profile {
        &self.cfg.profile
    }

    /// How many streams.
    pub fn streams(&self) -> u32 {
        self.cfg.streams.max(1)
    }

    /// The event `seq` of `stream`: its index in this worker's schedule.
    pub fn index_of(&self, stream: u32, seq: u64) -> u64 {
        seq * u64::from(self.streams()) + u64::from(stream)
    }

    /// The correlation id of event `seq` of `stream`.
    pub fn id_of(&self, stream: u32, seq: u64) -> LoadId {
        LoadId {
            run_tag: self.tag,
            worker: self.cfg.worker,
            stream: stream as u16,
            seq,
        }
    }

    /// Notes that event `seq` of `stream` was attempted or refused at `at_ns`; returns
    /// its lag behind schedule.
    fn note_start(&mut self, stream: u32, seq: u64, at_ns: u64) -> u64 {
        let intended = self.cfg.profile.intended_ns(self.index_of(stream, seq));
        let lag = at_ns.saturating_sub(intended);
        let slack = self.cfg.slack_ns;
        let s = &mut self.streams[stream as usize];
        let renew = match s.segments.back() {
            None => true,
            Some(&(_, bound)) => lag > bound || lag + 2 * slack < bound,
        };
        if renew {
            s.segments.push_back((seq, lag + slack));
        }
        s.next = s.next.max(seq + 1);
        s.last_ns = s.last_ns.max(at_ns);
        lag
    }

    /// The send of event `seq` of `stream` begins at `at_ns`; call it before the event
    /// is handed to the transport, and for a stream's events in order.
    pub fn attempt(&mut self, stream: u32, seq: u64, at_ns: u64) {
        let lag = self.note_start(stream, seq, at_ns);
        self.send_lag.record(lag);
        self.send_now.attempted += 1;
        self.send_total.attempted += 1;
    }

    /// Event `seq` of `stream` is not sent: the in-flight cap refused it at `at_ns`.
    pub fn refuse(&mut self, stream: u32, seq: u64, at_ns: u64) {
        self.note_start(stream, seq, at_ns);
        self.send_now.refused += 1;
        self.send_total.refused += 1;
        self.mark(stream, seq, StreamWindow::mark_refused);
    }

    /// The send of event `seq` of `stream` returned `error`.
    pub fn fail(&mut self, stream: u32, seq: u64, error: &str) {
        self.send_now.failed += 1;
        self.send_total.failed += 1;
        self.first_error.get_or_insert_with(|| error.to_owned());
        self.mark(stream, seq, StreamWindow::mark_failed);
    }

    /// Marks event `seq` of `stream` in every window (refused or failed), accounting
    /// what the windows settle to make room for it.
    fn mark(
        &mut self,
        stream: u32,
        seq: u64,
        mark: fn(&mut StreamWindow, u64, &mut Settled, usize),
    ) {
        let (keep, tag, worker) = (self.cfg.keep, self.tag, self.cfg.worker);
        for flow in &mut self.flows {
            if let Some(w) = flow.windows.get_mut(stream as usize) {
                let mut settled = Settled::default();
                mark(w, seq, &mut settled, keep);
                apply_settled(flow, &settled, stream, keep, tag, worker);
            }
        }
    }

    /// Events in flight for the first expectation that something arrives: sent, and
    /// neither arrived nor declared lost.
    pub fn in_flight(&self) -> u64 {
        let Some(flow) = self.flows.iter().find(|f| !f.windows.is_empty()) else {
            return 0;
        };
        let sent = self
            .send_total
            .attempted
            .saturating_sub(self.send_total.failed);
        sent.saturating_sub(flow.totals.delivered + flow.totals.lost())
    }

    /// Whether the in-flight cap refuses the next event.
    pub fn at_cap(&self) -> bool {
        self.cfg
            .max_in_flight
            .is_some_and(|cap| self.in_flight() >= cap)
    }

    /// An arrival on flow `flow`: its correlation id, whether it matched the
    /// expectation, when the listener received it and when it reached the accounting.
    pub fn arrive(
        &mut self,
        flow: usize,
        correlation_id: Option<&str>,
        matched: bool,
        received_ns: u64,
        seen_ns: u64,
    ) {
        let (tag, worker, streams, keep) =
            (self.tag, self.cfg.worker, self.streams(), self.cfg.keep);
        let parsed = correlation_id.and_then(LoadId::parse);
        let id = parsed.filter(|id| {
            id.run_tag == tag && id.worker == worker && u32::from(id.stream) < streams
        });
        let index = id.map(|id| self.index_of(u32::from(id.stream), id.seq));
        let intended = index.map(|i| self.cfg.profile.intended_ns(i));
        let next = id.map(|id| self.streams[usize::from(id.stream)].next);
        let Some(f) = self.flows.get_mut(flow) else {
            return;
        };
        if parsed.is_some_and(|id| id.run_tag == tag && id.worker != worker) {
            f.now.others += 1;
            f.totals.others += 1;
            return;
        }
        let (Some(id), Some(intended), Some(next)) = (id, intended, next) else {
            f.now.foreign += 1;
            f.totals.foreign += 1;
            return;
        };
        let count = |f: &mut Flow, add: &dyn Fn(&mut FlowCounts)| {
            add(&mut f.now);
            add(&mut f.totals);
        };
        if id.seq >= next {
            count(f, &|c| c.not_sent += 1);
            return;
        }
        if !matched {
            count(f, &|c| c.mismatched += 1);
            keep_id(&mut f.examples.mismatched, keep, || id.to_string());
            return;
        }
        let FlowKind::Presence { sla_ns, grace_ns } = f.spec.kind else {
            count(f, &|c| c.unexpected += 1);
            keep_id(&mut f.examples.unexpected, keep, || id.to_string());
            return;
        };
        let stream = u32::from(id.stream);
        let mut settled = Settled::default();
        let arrival = f.windows[stream as usize].arrive(id.seq, &mut settled, keep);
        apply_settled(f, &settled, stream, keep, tag, worker);
        let latency = received_ns.saturating_sub(intended);
        let delivered = |f: &mut Flow, reordered: bool| {
            count(f, &|c| c.delivered += 1);
            f.latency.record(latency);
            f.lag.record(seen_ns.saturating_sub(received_ns));
            if latency > sla_ns {
                count(f, &|c| c.late += 1);
                keep_id(&mut f.examples.late, keep, || id.to_string());
            }
            if reordered {
                count(f, &|c| c.reordered += 1);
                keep_id(&mut f.examples.reordered, keep, || id.to_string());
            }
        };
        match arrival {
            Arrival::First { reordered } => delivered(f, reordered),
            Arrival::AfterFailedSend => delivered(f, false),
            Arrival::AfterLoss => {
                delivered(f, false);
                if latency <= sla_ns + grace_ns {
                    count(f, &|c| c.recovered += 1);
                } else {
                    count(f, &|c| c.after_loss += 1);
                    keep_id(&mut f.examples.after_loss, keep, || id.to_string());
                }
            }
            Arrival::Duplicate => {
                count(f, &|c| c.duplicates += 1);
                keep_id(&mut f.examples.duplicate, keep, || id.to_string());
            }
            Arrival::Unknown => count(f, &|c| c.unknown += 1),
            Arrival::NotSent => count(f, &|c| c.not_sent += 1),
        }
    }

    /// Settles whatever is past its deadline at `now_ns` and closes the interval if it
    /// is over. Intervals end on a fixed grid (multiples of the interval from the
    /// start, at the first tick past each), so they never drift: interval `i` of two
    /// accountants ticked alike covers the same time.
    pub fn tick(&mut self, now_ns: u64) {
        self.settle(now_ns);
        let interval = self.cfg.interval_ns.max(1);
        let grid_end = (self.interval_start / interval + 1).saturating_mul(interval);
        if now_ns >= grid_end {
            self.close_interval(now_ns);
        }
    }

    /// The interval closed last, as it was (the series may have merged it with a
    /// neighbour since): what a recorder writes after each [`Accountant::tick`] that
    /// closed one, or after [`Accountant::close`].
    pub fn last_closed(&self) -> Option<&IntervalPoint> {
        self.last_closed.as_ref()
    }

    /// Settles what is past its deadline at `now_ns` and closes the interval under way
    /// there, however short (the last one of a run, before [`Accountant::finish`], so
    /// that it can be recorded as it was).
    pub fn close(&mut self, now_ns: u64) {
        self.settle(now_ns);
        if now_ns > self.interval_start || self.series.is_empty() {
            self.close_interval(now_ns);
        }
    }

    /// Whether nothing is left to wait for at `now_ns`: every event sent has arrived for
    /// every expectation that something arrives (or been declared lost), and every
    /// absence window is over.
    pub fn drained(&self, now_ns: u64) -> bool {
        self.flows.iter().all(|f| match f.spec.kind {
            FlowKind::Presence { .. } => {
                let sent = self
                    .send_total
                    .attempted
                    .saturating_sub(self.send_total.failed);
                f.totals.delivered + f.totals.lost() >= sent
            }
            FlowKind::Absence { window_ns } => self
                .streams
                .iter()
                .all(|s| s.next == 0 || s.last_ns + window_ns + self.cfg.slack_ns <= now_ns),
        })
    }

    /// When everything sent so far is past its deadline, in ns from the start: a drain
    /// never needs to last beyond it.
    pub fn last_deadline_ns(&self) -> u64 {
        let horizon = self.flows.iter().map(Flow::horizon_ns).max().unwrap_or(0);
        let last = self.streams.iter().map(|s| s.last_ns).max().unwrap_or(0);
        let intended_last = self
            .cfg
            .profile
            .intended_ns(self.send_total.attempted.max(1) - 1);
        last.max(intended_last) + horizon + self.cfg.slack_ns
    }

    /// A live snapshot: totals so far.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            send: self.send_total,
            flows: self.flows.iter().map(|f| f.totals).collect(),
            in_flight: self.in_flight(),
            last: self.series.last().cloned(),
        }
    }

    fn settle(&mut self, now_ns: u64) {
        let (streams, slack, keep, tag, worker) = (
            self.streams(),
            self.cfg.slack_ns,
            self.cfg.keep,
            self.tag,
            self.cfg.worker,
        );
        let profile = &self.cfg.profile;
        // How many of stream k's sequence numbers are due by `t`: those with
        // seq·S + k among the first `due_by(t)` events.
        let due_in_stream = |t: Option<u64>, k: u64| {
            let due = t.map_or(0, |t| profile.due_by(t));
            if due > k {
                (due - k - 1) / u64::from(streams) + 1
            } else {
                0
            }
        };
        for f in &mut self.flows {
            if f.windows.is_empty() {
                continue;
            }
            let horizon = f.horizon_ns() + slack;
            for (k, send) in self.streams.iter().enumerate() {
                let window = &mut f.windows[k];
                // Segment by segment from the window's base: an event is past its
                // deadline once its intended time plus its segment's lag bound plus
                // the horizon is.
                let mut limit = window.base();
                for (j, &(first, bound)) in send.segments.iter().enumerate() {
                    let end = send.segments.get(j + 1).map_or(send.next, |s| s.0);
                    if end <= limit {
                        continue;
                    }
                    let cutoff = now_ns.checked_sub(horizon + bound);
                    limit = due_in_stream(cutoff, k as u64).max(first).min(end);
                    if limit < end {
                        break;
                    }
                }
                if limit > window.base() {
                    let mut settled = Settled::default();
                    window.settle_below(limit, &mut settled, keep);
                    apply_settled(f, &settled, k as u32, keep, tag, worker);
                }
            }
        }
        // Segments wholly below every window's base are no longer needed.
        for (k, send) in self.streams.iter_mut().enumerate() {
            let base = self
                .flows
                .iter()
                .filter_map(|f| f.windows.get(k).map(StreamWindow::base))
                .min()
                .unwrap_or(send.next);
            while send.segments.len() > 1 && send.segments[1].0 <= base {
                send.segments.pop_front();
            }
        }
    }

    fn close_interval(&mut self, now_ns: u64) {
        let profile = &self.cfg.profile;
        let due_now = profile.due_by(now_ns);
        self.send_now.due = due_now.saturating_sub(self.due_at_interval_start);
        self.send_total.due = due_now;
        let done = self.send_total.attempted + self.send_total.refused;
        let point = IntervalPoint {
            start_ns: self.interval_start,
            length_ns: now_ns.saturating_sub(self.interval_start),
            send: self.send_now,
            in_flight: self.in_flight(),
            behind: due_now.saturating_sub(done),
            send_lag: self.send_lag.stats(),
            flows: self
                .flows
                .iter_mut()
                .map(|f| {
                    let p = FlowPoint {
                        counts: f.now,
                        latency: f.latency.stats(),
                        listener_lag: f.lag.stats(),
                    };
                    f.latency_total.add(&f.latency);
                    f.lag_total.add(&f.lag);
                    f.latency.reset();
                    f.lag.reset();
                    f.now = FlowCounts::default();
                    p
                })
                .collect(),
        };
        self.send_lag_total.add(&self.send_lag);
        self.send_lag.reset();
        self.send_now = SendCounts::default();
        self.due_at_interval_start = due_now;
        self.interval_start = now_ns;
        self.closed += 1;
        self.last_closed = Some(point.clone());
        self.series.push(point);
        // Over the cap, one pair of neighbours is merged per closed interval, the cursor
        // sweeping from the oldest to the newest and starting again: the cost of a
        // merge is spread over the run instead of stalling it once the series is full.
        if self.series.len() > self.cfg.max_points.max(2) {
            let i = self.merge_cursor.min(self.series.len() - 2);
            let merged = self.series[i].merge(&self.series[i + 1]);
            self.series[i] = merged;
            self.series.remove(i + 1);
            self.merge_cursor = if i + 2 >= self.series.len() { 0 } else { i + 1 };
        }
    }

    /// Settles what is past its deadline at `now_ns`, closes the last interval, and gives
    /// the account; events whose deadline had not passed (a run interrupted, a drain cut
    /// short) are `unsettled`, never called lost. `send_ns` says how long sending lasted.
    pub fn finish(
        mut self,
        now_ns: u64,
        scenario: &str,
        started_at: UnixNanos,
        send_ns: u64,
    ) -> LoadReport {
        self.close(now_ns);
        let sent = self
            .send_total
            .attempted
            .saturating_sub(self.send_total.failed);
        // Everything the schedule holds was due, whether or not it was sent.
        self.send_total.due = self.cfg.profile.total().min(
            self.send_total
                .due
                .max(self.send_total.attempted + self.send_total.refused),
        );
        let flows = self
            .flows
            .into_iter()
            .map(|f| {
                let (sla_ns, grace_ns, absence) = match f.spec.kind {
                    FlowKind::Presence { sla_ns, grace_ns } => (sla_ns, grace_ns, false),
                    FlowKind::Absence { window_ns } => (window_ns, 0, true),
                };
                FlowReport {
                    expectation: f.spec.expectation,
                    channel: f.spec.channel,
                    absence,
                    sla_ns,
                    grace_ns,
                    counts: f.totals,
                    lost: f.totals.lost(),
                    unsettled: if absence {
                        0
                    } else {
                        sent.saturating_sub(f.totals.delivered + f.totals.lost())
                    },
                    latency: f.latency_total.stats(),
                    listener_lag: f.lag_total.stats(),
                    examples: f.examples,
                }
            })
            .collect();
        LoadReport {
            scenario: scenario.to_owned(),
            profile: self.cfg.profile.to_string(),
            streams: self.cfg.streams.max(1),
            worker: self.cfg.worker,
            workers: 1,
            started_at,
            send_ns,
            drain_ns: now_ns.saturating_sub(send_ns),
            interval_ns: self.cfg.interval_ns,
            window: self.window,
            max_in_flight: self.cfg.max_in_flight,
            send: SendReport {
                counts: self.send_total,
                lag: self.send_lag_total.stats(),
                first_error: self.first_error,
            },
            flows,
            series: self.series,
            thresholds: Vec::new(),
            per_worker: Vec::new(),
        }
    }
}

/// Totals so far, for a live view.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The sender.
    pub send: SendCounts,
    /// Per expectation.
    pub flows: Vec<FlowCounts>,
    /// Events in flight.
    pub in_flight: u64,
    /// The last closed interval.
    pub last: Option<IntervalPoint>,
}

fn apply_settled(f: &mut Flow, s: &Settled, stream: u32, keep: usize, tag: u32, worker: u16) {
    if s.lost == 0 {
        return;
    }
    for c in [&mut f.now, &mut f.totals] {
        c.declared_lost += s.lost;
        c.lost_by_window += s.lost_by_window;
    }
    for &seq in &s.lost_seqs {
        keep_id(&mut f.examples.lost, keep, || {
            LoadId {
                run_tag: tag,
                worker,
                stream: stream as u16,
                seq,
            }
            .to_string()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: u64 = 1_000_000;

    fn accountant(max_in_flight: Option<u64>) -> Accountant {
        Accountant::new(AccountConfig {
            run_id: "run".into(),
            worker: 0,
            streams: 2,
            profile: Profile::parse("100/s", Duration::from_secs(1)).expect("a rate"),
            flows: vec![
                FlowSpec {
                    expectation: 0,
                    channel: "out".into(),
                    kind: FlowKind::Presence {
                        sla_ns: 100 * MS,
                        grace_ns: 100 * MS,
                    },
                },
                FlowSpec {
                    expectation: 1,
                    channel: "dead".into(),
                    kind: FlowKind::Absence { window_ns: 50 * MS },
                },
            ],
            interval_ns: 100 * MS,
            slack_ns: 5 * MS,
            keep: 3,
            max_in_flight,
            max_points: 1000,
        })
    }

    /// Sends every event on time (event i at 10·i ms, stream i % 2, seq i / 2).
    fn send_all(a: &mut Accountant) -> Vec<(u32, u64, u64)> {
        let mut events = Vec::new();
        for i in 0..100u64 {
            let (stream, seq) = ((i % 2) as u32, i / 2);
            let at = a.profile().intended_ns(i);
            a.attempt(stream, seq, at);
            events.push((stream, seq, at));
        }
        events
    }

    #[test]
    fn every_kind_is_counted_exactly() {
        let mut a = accountant(None);
        let events = send_all(&mut a);
        let id = |a: &Accountant, s: u32, q: u64| a.id_of(s, q).to_string();
        for &(stream, seq, at) in &events {
            match (stream, seq) {
                // Lost for good.
                (0, 3) | (1, 7) => continue,
                // Late (150 ms > the 100 ms SLA, within its grace).
                (0, 4) => a.arrive(0, Some(&id(&a, 0, 4)), true, at + 150 * MS, at + 151 * MS),
                // Duplicated.
                (1, 2) => {
                    a.arrive(0, Some(&id(&a, 1, 2)), true, at + MS, at + MS);
                    a.arrive(0, Some(&id(&a, 1, 2)), true, at + 2 * MS, at + 2 * MS);
                }
                // Overtaken by seq 6 of its stream.
                (0, 5) => {}
                (0, 6) => {
                    a.arrive(0, Some(&id(&a, 0, 6)), true, at + MS, at + MS);
                    let at5 = events[10].2;
                    a.arrive(0, Some(&id(&a, 0, 5)), true, at + 2 * MS, at5 + 2 * MS);
                }
                // Not what the expectation matches.
                (1, 9) => a.arrive(0, Some(&id(&a, 1, 9)), false, at + MS, at + MS),
                _ => a.arrive(
                    0,
                    Some(&id(&a, stream, seq)),
                    true,
                    at + 10 * MS,
                    at + 10 * MS,
                ),
            }
            a.tick(at);
        }
        // Something from another run, and an output on the dead-letter channel.
        a.arrive(0, Some(&uuid::Uuid::now_v7().to_string()), true, 0, 0);
        a.arrive(0, None, true, 0, 0);
        a.arrive(1, Some(&id(&a, 0, 8)), true, 500 * MS, 500 * MS);
        // An event declared lost at the end arrives later: late after its loss.
        a.tick(1_300 * MS);
        a.arrive(0, Some(&id(&a, 0, 3)), true, 1_300 * MS, 1_300 * MS);
        let report = a.finish(1_400 * MS, "s", 0, 1_000 * MS);
        let out = &report.flows[0];
        let c = out.counts;
        assert_eq!(c.delivered, 100 - 3 + 1, "{c:?}");
        assert_eq!(
            (c.declared_lost, c.after_loss, out.lost),
            (3, 1, 2),
            "{c:?}"
        );
        assert_eq!((c.late, c.duplicates, c.reordered), (2, 1, 1), "{c:?}");
        assert_eq!((c.mismatched, c.foreign, c.not_sent), (1, 2, 0), "{c:?}");
        assert_eq!(report.flows[1].counts.unexpected, 1);
        assert_eq!(report.send.counts.attempted, 100);
        assert_eq!(out.examples.after_loss, [id_text(0, 3)]);
        assert_eq!(out.examples.lost.len(), 3);
        assert_eq!(out.latency.count, 98);
        // The intervals add up to the totals.
        let lost: u64 = report
            .series
            .iter()
            .map(|p| p.flows[0].counts.declared_lost)
            .sum();
        let delivered: u64 = report
            .series
            .iter()
            .map(|p| p.flows[0].counts.delivered)
            .sum();
        assert_eq!((lost, delivered), (3, 98));
        let thresholds = crate::load::evaluate(&Default::default(), &report);
        let failed: Vec<_> = thresholds
            .iter()
            .filter(|t| !t.passed)
            .map(|t| t.what.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "lost on `out`",
                "late on `out`",
                "arrivals on `dead` (nothing may arrive)"
            ]
        );
    }

    fn id_text(stream: u16, seq: u64) -> String {
        LoadId {
            run_tag: LoadId::tag_of("run"),
            worker: 0,
            stream,
            seq,
        }
        .to_string()
    }

    #[test]
    fn an_arrival_received_before_its_deadline_but_seen_after_is_not_lost() {
        let mut a = accountant(None);
        send_all(&mut a);
        // Seq 0 of stream 0 is settled as lost at 300 ms...
        a.tick(300 * MS);
        // ...but the listener had it at 20 ms.
        a.arrive(0, Some(&a.id_of(0, 0).to_string()), true, 20 * MS, 300 * MS);
        let report = a.finish(2_000 * MS, "s", 0, 1_000 * MS);
        let c = report.flows[0].counts;
        assert_eq!(
            (c.declared_lost, c.recovered, c.after_loss, c.late),
            (100, 1, 0, 0)
        );
        assert_eq!(report.flows[0].lost, 99);
    }

    #[test]
    fn a_sender_behind_schedule_is_late_not_lost() {
        let mut a = accountant(None);
        // Every send begins 400 ms after its intended time.
        for i in 0..100u64 {
            let at = a.profile().intended_ns(i) + 400 * MS;
            a.tick(at);
            a.attempt((i % 2) as u32, i / 2, at);
            a.arrive(
                0,
                Some(&a.id_of((i % 2) as u32, i / 2).to_string()),
                true,
                at + MS,
                at + MS,
            );
        }
        let report = a.finish(1_600 * MS, "s", 0, 1_400 * MS);
        let c = report.flows[0].counts;
        assert_eq!((c.delivered, c.declared_lost, c.late), (100, 0, 100));
        assert!(report.send.lag.p50_ns >= 399 * MS, "{:?}", report.send.lag);
        assert!(report.flows[0].latency.p50_ns >= 400 * MS);
    }

    #[test]
    fn the_in_flight_cap_refuses_and_refusals_are_not_lost() {
        let mut a = accountant(Some(5));
        let mut refused = 0;
        for i in 0..100u64 {
            let (stream, seq, at) = ((i % 2) as u32, i / 2, a.profile().intended_ns(i));
            a.tick(at);
            if a.at_cap() {
                a.refuse(stream, seq, at);
                refused += 1;
            } else {
                a.attempt(stream, seq, at);
            }
        }
        // Nothing arrives: five in flight until they are declared lost, 200 ms later.
        assert!(refused > 50, "{refused}");
        let report = a.finish(2_000 * MS, "s", 0, 1_000 * MS);
        assert_eq!(report.send.counts.refused, refused);
        let c = report.flows[0].counts;
        assert_eq!(c.declared_lost, 100 - refused);
        // Arrivals of refused events are not theirs.
        assert_eq!(c.not_sent, 0);
    }

    #[test]
    fn a_run_that_ends_early_leaves_events_unsettled_not_lost() {
        let mut a = accountant(None);
        send_all(&mut a);
        // Ended at 1 s (interrupted): only events due by 1 s − 205 ms are settled.
        let report = a.finish(1_000 * MS, "s", 0, 1_000 * MS);
        let f = &report.flows[0];
        assert_eq!(f.counts.declared_lost + f.unsettled, 100, "{f:?}");
        assert!(f.unsettled >= 20, "{f:?}");
        assert_eq!(report.flows[1].unsettled, 0);
    }

    #[test]
    fn a_long_series_merges_neighbours_and_keeps_its_sums() {
        let mut a = Accountant::new(AccountConfig {
            max_points: 8,
            interval_ns: 10 * MS,
            ..accountant(None).cfg
        });
        let events = send_all(&mut a);
        for &(stream, seq, at) in &events {
            a.arrive(
                0,
                Some(&a.id_of(stream, seq).to_string()),
                true,
                at + MS,
                at + MS,
            );
            a.tick(at + MS);
        }
        let report = a.finish(1_500 * MS, "s", 0, 1_000 * MS);
        assert!(report.series.len() <= 9, "{}", report.series.len());
        let delivered: u64 = report
            .series
            .iter()
            .map(|p| p.flows[0].counts.delivered)
            .sum();
        let latencies: u64 = report.series.iter().map(|p| p.flows[0].latency.count).sum();
        assert_eq!((delivered, latencies), (100, 100));
        let lengths: u64 = report.series.iter().map(|p| p.length_ns).sum();
        assert_eq!(lengths, 1_500 * MS);
    }
}
