//! The expectation state machine: one per (scenario, expectation), fed by the engine with
//! the scenario's sent events, the observations on the expectation's channel, and the
//! clock; it decides a final [`ExpectationVerdict`] with evidence.
//!
//! # Time
//!
//! All times are [`MonoNanos`] on one monotonic clock. An observation's arrival is its
//! `received_mono`; when that is missing (it was recorded by another process) it is
//! derived from wall clocks, `sent_mono + (received_at - sent_at)`, and the verdict says
//! `wall_clock: true`. Decisions depend on *arrival* times, never on when the engine
//! happens to deliver an observation. The machine's own clock advances **only** through
//! [`ExpectationMachine::on_tick`]; the `now` given to the other methods is not used to
//! judge deadlines, so the engine can hold deadline judgements back until observations
//! received before them have been committed and routed.
//!
//! A window `W` after a send at `s` *includes* its end: an arrival at `s + W` is in
//! time. A deadline returned by [`ExpectationMachine::next_deadline`] is the first
//! instant at which the decision can be taken (for example `s + W + G + 1`).
//!
//! # Semantics (per sent event, the SLA measured from that event's send)
//!
//! - **`at_least: M`** (default 1) with `within: W`: a matching observation arriving at
//!   or before `s + W` is in time. An event is satisfied by M in-time matches; the
//!   expectation passes as soon as sends are complete and every event is satisfied.
//! - **`count: N`** with `within: W`: like `at_least`, but an (N+1)th matching
//!   observation of one event (in time or in the grace period) fails at once with
//!   [`FailureKind::Duplicate`], and passing waits until every event's window has
//!   ended (whole-window semantics). `count: 0` is an absence check.
//! - **Grace** `G` (`grace`, default `W` capped at 10 s): an event still unsatisfied when
//!   its window ends is given until `s + W + G`. A late arrival in that period fails the
//!   expectation at once ([`FailureKind::SlaExceeded`], "exceeded by X"); at the end of
//!   the grace period the event fails as [`FailureKind::TooFew`] (some, not enough, in
//!   time) or [`FailureKind::Lost`] (nothing). Arrivals after the grace period are
//!   ignored.
//! - **`none_within: W`**: a matching observation arriving at or before `s + W` fails at
//!   once ([`FailureKind::UnexpectedArrival`]); the expectation passes once sends are
//!   complete and every window has ended.
//! - **`ordered_by: PATH`**: matching observations are grouped by the JSON value at PATH
//!   (observations without it are not ordered); within a group, arrivals must follow the
//!   events' send order (index). A later-sent event's output arriving strictly before an
//!   earlier-sent event's output fails with [`FailureKind::Reordered`]; equal arrival
//!   times are not a violation.
//! - Zero events with sends complete: presence and absence checks both pass.
//!
//! Observations whose correlation id was not registered with
//! [`ExpectationMachine::on_sent`] (uncorrelated ones, or another scenario's) are
//! evidence only: near-misses, the last few observations, and a count of matching but
//! uncorrelated arrivals in timeout messages.
//!
//! `latencies_ns` holds one sample per required observation that counted: the first M
//! (or N) in-time matches of each event and the late arrival that exceeded the SLA.
//! Duplicates beyond what is required are not latency samples.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use serde_json_path::JsonPath;

use crate::latency::format_ns;
use crate::matcher::{Matcher, MatcherError, short_json};
use crate::model::Expectation;
use crate::observation::{MonoNanos, Observation, UnixNanos};
use crate::verdict::{
    Evidence, ExpectationVerdict, Failure, FailureKind, FieldDiff, NearMiss, ObservationBrief,
    Outcome,
};

/// How many of the most recent observations a failure shows.
const LAST_KEPT: usize = 5;
/// How many characters of a payload an evidence brief shows.
const EXCERPT_CHARS: usize = 160;
/// How many correlation ids a message names before "and N more".
const IDS_NAMED: usize = 3;
/// How many offending observations a failure lists at most.
const OFFENDING_KEPT: usize = 20;
/// The default grace period is the SLA, at most this.
const MAX_DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// One sent event, as the engine reports it to the machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentRef<'a> {
    /// The event's correlation id.
    pub correlation_id: &'a str,
    /// Its index among the scenario's sent events (send order).
    pub index: u64,
    /// Monotonic send time.
    pub sent_mono: MonoNanos,
    /// Wall-clock send time (for observations recorded by other processes).
    pub sent_at: UnixNanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `within`, with `at_least: need` or (`exact`) `count: need`.
    Presence {
        within: u64,
        grace: u64,
        need: u32,
        exact: bool,
    },
    /// `none_within` (or `count: 0`).
    Absence { window: u64 },
}

impl Mode {
    fn window(self) -> u64 {
        match self {
            Mode::Presence { within, .. } => within,
            Mode::Absence { window } => window,
        }
    }
}

#[derive(Debug)]
struct EventState {
    correlation_id: String,
    index: u64,
    sent_mono: MonoNanos,
    sent_at: UnixNanos,
    /// Matching arrivals in time.
    in_time: u32,
    /// Matching arrivals in time or in the grace period, for duplicate evidence.
    counted: Vec<ObservationBrief>,
}

impl EventState {
    fn window_end(&self, mode: Mode) -> MonoNanos {
        self.sent_mono.saturating_add(mode.window())
    }

    /// The observation's arrival on the monotonic clock, and whether it was derived
    /// from wall clocks.
    fn arrival(&self, obs: &Observation) -> (MonoNanos, bool) {
        match obs.received_mono {
            Some(mono) => (mono, false),
            None => {
                let delta = i128::from(obs.received_at) - i128::from(self.sent_at);
                let at = (i128::from(self.sent_mono) + delta).max(0);
                (u64::try_from(at).unwrap_or(u64::MAX), true)
            }
        }
    }
}

/// The arrival that comes last so far in one `ordered_by` group.
#[derive(Debug)]
struct OrderMark {
    slot: usize,
    arrival: MonoNanos,
    brief: ObservationBrief,
}

/// Evaluates one expectation of one scenario. See the module docs for the semantics.
#[derive(Debug)]
pub struct ExpectationMachine {
    index: usize,
    channel: String,
    matcher: Matcher,
    mode: Mode,
    ordered_by: Option<(String, JsonPath)>,
    description: String,

    events: Vec<EventState>,
    by_id: HashMap<String, usize>,
    sends_complete: bool,
    /// The latest time given to `on_tick`.
    clock: MonoNanos,
    /// Presence: events with fewer than `need` in-time matches.
    unsatisfied: usize,
    /// Presence: `(s + W + G + 1, slot)` of each unsatisfied event.
    grace_ends: BTreeSet<(MonoNanos, usize)>,
    /// The latest window end (inclusive) over all events.
    last_window_end: Option<MonoNanos>,
    order_marks: HashMap<String, OrderMark>,

    matched: u64,
    latencies: Vec<u64>,
    wall_clock: bool,
    seen: u64,
    seen_correlated: u64,
    uncorrelated_matching: u64,
    last: VecDeque<ObservationBrief>,
    near_correlated: Option<NearMiss>,
    near_uncorrelated: Option<NearMiss>,
    verdict: Option<ExpectationVerdict>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn invalid(reason: &str) -> MatcherError {
    MatcherError::Expectation {
        reason: reason.to_owned(),
    }
}

impl ExpectationMachine {
    /// A machine for the expectation at `index` in its scenario.
    pub fn new(index: usize, e: &Expectation) -> Result<Self, MatcherError> {
        let matcher = Matcher::compile(e)?;
        let ordered_by = match &e.ordered_by {
            Some(path) => Some((
                path.clone(),
                JsonPath::parse(path).map_err(|source| MatcherError::Path {
                    what: "`ordered_by`",
                    path: path.clone(),
                    source,
                })?,
            )),
            None => None,
        };
        let mode = match (e.within, e.none_within, e.count, e.at_least) {
            (Some(_), Some(_), _, _) => {
                return Err(invalid("it sets both `within` and `none_within`; keep one"));
            }
            (None, Some(_), Some(_), _) | (None, Some(_), _, Some(_)) => {
                return Err(invalid(
                    "`count` and `at_least` apply to `within`, not to `none_within`",
                ));
            }
            (None, Some(w), None, None) => Mode::Absence { window: nanos(w.0) },
            (Some(_), None, Some(_), Some(_)) => {
                return Err(invalid("it sets both `count` and `at_least`; keep one"));
            }
            (Some(w), None, Some(0), None) => Mode::Absence { window: nanos(w.0) },
            (Some(w), None, count, at_least) => Mode::Presence {
                within: nanos(w.0),
                grace: nanos(e.grace.map_or(w.0.min(MAX_DEFAULT_GRACE), |g| g.0)),
                need: count.or(at_least).unwrap_or(1),
                exact: count.is_some(),
            },
            (None, None, _, _) => {
                return Err(invalid(
                    "it needs `within` (an SLA) or `none_within` (an absence window)",
                ));
            }
        };
        let mut m = ExpectationMachine {
            index,
            channel: e.on.clone(),
            matcher,
            mode,
            ordered_by,
            description: String::new(),
            events: Vec::new(),
            by_id: HashMap::new(),
            sends_complete: false,
            clock: 0,
            unsatisfied: 0,
            grace_ends: BTreeSet::new(),
            last_window_end: None,
            order_marks: HashMap::new(),
            matched: 0,
            latencies: Vec::new(),
            wall_clock: false,
            seen: 0,
            seen_correlated: 0,
            uncorrelated_matching: 0,
            last: VecDeque::with_capacity(LAST_KEPT),
            near_correlated: None,
            near_uncorrelated: None,
            verdict: None,
        };
        m.description = m.describe();
        Ok(m)
    }

    /// Registers a sent event: from now on, observations with its correlation id are
    /// judged against its send time. A correlation id registered twice is ignored.
    pub fn on_sent(&mut self, sent: SentRef<'_>) {
        if self.verdict.is_some() || self.by_id.contains_key(sent.correlation_id) {
            return;
        }
        let slot = self.events.len();
        let ev = EventState {
            correlation_id: sent.correlation_id.to_owned(),
            index: sent.index,
            sent_mono: sent.sent_mono,
            sent_at: sent.sent_at,
            in_time: 0,
            counted: Vec::new(),
        };
        let end = ev.window_end(self.mode);
        self.last_window_end = Some(self.last_window_end.map_or(end, |e| e.max(end)));
        if let Mode::Presence { grace, need, .. } = self.mode
            && need > 0
        {
            self.unsatisfied += 1;
            self.grace_ends
                .insert((end.saturating_add(grace).saturating_add(1), slot));
        }
        self.by_id.insert(ev.correlation_id.clone(), slot);
        self.events.push(ev);
    }

    /// No more events will be sent. `now` is not used to judge deadlines (see the module
    /// docs); an `at_least` expectation whose events are all satisfied passes here.
    pub fn sends_complete(&mut self, _now: MonoNanos) {
        self.sends_complete = true;
        self.try_pass();
    }

    /// Takes in one observation on the expectation's channel: correlated with one of the
    /// registered events, or not (evidence only). Ignored once decided.
    pub fn on_observation(&mut self, obs: &Observation, _now: MonoNanos) {
        if self.verdict.is_some() {
            return;
        }
        self.seen += 1;
        let slot = obs
            .correlation_id
            .as_deref()
            .and_then(|id| self.by_id.get(id).copied());
        let timing = slot.map(|s| {
            let (arrival, wall) = self.events[s].arrival(obs);
            (s, arrival, wall)
        });
        let brief = ObservationBrief {
            seq: obs.seq,
            correlation_id: obs.correlation_id.clone(),
            received_at: obs.received_at,
            after_send_ns: timing
                .map(|(s, arrival, _)| arrival.saturating_sub(self.events[s].sent_mono)),
            excerpt: obs.payload.excerpt(EXCERPT_CHARS),
        };
        if self.last.len() == LAST_KEPT {
            self.last.pop_front();
        }
        self.last.push_back(brief.clone());

        let matches = self.matcher.matches(&obs.payload);
        let Some((slot, arrival, wall)) = timing else {
            if matches {
                self.uncorrelated_matching += 1;
            } else if self.near_correlated.is_none() {
                let diffs = self.matcher.diff(&obs.payload);
                keep_nearest(&mut self.near_uncorrelated, brief, diffs);
            }
            return;
        };
        self.seen_correlated += 1;
        if !matches {
            let diffs = self.matcher.diff(&obs.payload);
            keep_nearest(&mut self.near_correlated, brief, diffs);
            return;
        }
        self.matched += 1;
        match self.mode {
            Mode::Absence { .. } => self.absent_arrival(slot, arrival, brief),
            Mode::Presence { .. } => self.present_arrival(obs, slot, arrival, wall, brief),
        }
    }

    /// Advances the machine's clock to `now` and takes every decision due by then.
    pub fn on_tick(&mut self, now: MonoNanos) {
        if self.verdict.is_some() {
            return;
        }
        self.clock = self.clock.max(now);
        let mut expired = Vec::new();
        while let Some(&(at, slot)) = self.grace_ends.first()
            && at <= self.clock
        {
            self.grace_ends.pop_first();
            expired.push(slot);
        }
        if !expired.is_empty() {
            self.fail_unsatisfied(&expired);
            return;
        }
        self.try_pass();
    }

    /// When the machine next needs [`ExpectationMachine::on_tick`]; `None` once decided
    /// or while nothing time-based is pending.
    pub fn next_deadline(&self) -> Option<MonoNanos> {
        if self.verdict.is_some() {
            return None;
        }
        let grace = self.grace_ends.first().map(|&(at, _)| at);
        let window = match self.mode {
            Mode::Presence { exact: false, .. } => None,
            Mode::Presence { exact: true, .. } if self.unsatisfied > 0 => None,
            _ if !self.sends_complete => None,
            _ => self.last_window_end.map(|end| end.saturating_add(1)),
        };
        match (grace, window) {
            (Some(g), Some(w)) => Some(g.min(w)),
            (g, w) => g.or(w),
        }
    }

    /// The verdict, once decided; it never changes afterwards.
    pub fn verdict(&self) -> Option<&ExpectationVerdict> {
        self.verdict.as_ref()
    }

    /// A one-line description, e.g. ``at least 1 observation matching {…} on `out`
    /// within 2s of each send``.
    pub fn description(&self) -> String {
        self.description.clone()
    }

    fn describe(&self) -> String {
        let (quantity, window) = match self.mode {
            Mode::Presence {
                within,
                need,
                exact,
                ..
            } => (
                format!("{} {need}", if exact { "exactly" } else { "at least" }),
                within,
            ),
            Mode::Absence { window } => ("no".to_owned(), window),
        };
        let plural = !matches!(self.mode, Mode::Presence { need: 1, .. });
        let mut out = format!(
            "{quantity} {} on `{}` within {} of each send",
            self.what(plural),
            self.channel,
            format_ns(window)
        );
        if let Some((path, _)) = &self.ordered_by {
            out.push_str(&format!(", in send order by {path}"));
        }
        out
    }

    /// `observation(s) matching {…}`, or just `observation(s)` for an empty matcher.
    fn what(&self, plural: bool) -> String {
        let noun = if plural {
            "observations"
        } else {
            "observation"
        };
        if self.matcher.is_empty() {
            noun.to_owned()
        } else {
            format!("{noun} matching {}", self.matcher.describe())
        }
    }

    fn window_text(&self) -> String {
        match self.mode {
            Mode::Presence {
                within, grace: 0, ..
            } => {
                format!("within {} (no grace)", format_ns(within))
            }
            Mode::Presence { within, grace, .. } => {
                format!("within {} (+{} grace)", format_ns(within), format_ns(grace))
            }
            Mode::Absence { window } => format!("within {}", format_ns(window)),
        }
    }

    fn absent_arrival(&mut self, slot: usize, arrival: MonoNanos, brief: ObservationBrief) {
        let ev = &self.events[slot];
        if arrival > ev.window_end(self.mode) {
            return;
        }
        let message = format!(
            "an {} arrived on `{}` {} after send, inside the absence window of {} (event #{}, \
             correlation {})",
            self.what(false),
            self.channel,
            format_ns(arrival.saturating_sub(ev.sent_mono)),
            format_ns(self.mode.window()),
            ev.index,
            ev.correlation_id
        );
        self.fail(FailureKind::UnexpectedArrival, message, vec![brief]);
    }

    fn present_arrival(
        &mut self,
        obs: &Observation,
        slot: usize,
        arrival: MonoNanos,
        wall: bool,
        brief: ObservationBrief,
    ) {
        let Mode::Presence {
            within,
            grace,
            need,
            exact,
        } = self.mode
        else {
            return;
        };
        let ev = &mut self.events[slot];
        let window_end = ev.window_end(self.mode);
        if arrival > window_end.saturating_add(grace) {
            return; // after the grace period: ignored
        }
        let latency = arrival.saturating_sub(ev.sent_mono);
        self.wall_clock |= wall;
        ev.counted.push(brief.clone());
        if exact && ev.counted.len() > need as usize {
            let offending = ev.counted.clone();
            let (index, id) = (ev.index, ev.correlation_id.clone());
            let times: Vec<String> = offending
                .iter()
                .map(|b| format_ns(b.after_send_ns.unwrap_or(0)))
                .collect();
            let message = format!(
                "{} {} arrived on `{}` for one event, expected exactly {need} (event #{index}, \
                 correlation {id}): at {} after send",
                offending.len(),
                self.what(true),
                self.channel,
                join_and(&times)
            );
            self.fail(FailureKind::Duplicate, message, offending);
            return;
        }
        if self.check_order(obs, slot, arrival, &brief) {
            return;
        }
        let ev = &mut self.events[slot];
        if arrival <= window_end {
            ev.in_time += 1;
            if ev.in_time <= need {
                self.latencies.push(latency);
            }
            if ev.in_time == need {
                let grace_end = window_end.saturating_add(grace).saturating_add(1);
                self.grace_ends.remove(&(grace_end, slot));
                self.unsatisfied -= 1;
                self.try_pass();
            }
        } else if ev.in_time < need {
            let (index, id, in_time) = (ev.index, ev.correlation_id.clone(), ev.in_time);
            self.latencies.push(latency);
            let mut message = format!(
                "an {} on `{}` arrived {} after send; SLA {}, exceeded by {} (event #{index}, \
                 correlation {id})",
                self.what(false),
                self.channel,
                format_ns(latency),
                format_ns(within),
                format_ns(latency.saturating_sub(within)),
            );
            if need > 1 {
                message.push_str(&format!(
                    "; {in_time} of the {need} required arrived in time"
                ));
            }
            self.fail(FailureKind::SlaExceeded, message, vec![brief]);
        }
    }

    /// Checks `ordered_by`; true when it failed the expectation.
    fn check_order(
        &mut self,
        obs: &Observation,
        slot: usize,
        arrival: MonoNanos,
        brief: &ObservationBrief,
    ) -> bool {
        let Some((path, compiled)) = &self.ordered_by else {
            return false;
        };
        let Some(key) = obs
            .payload
            .json
            .as_ref()
            .and_then(|json| compiled.query(json).first())
            .map(short_json)
        else {
            return false;
        };
        let index = self.events[slot].index;
        match self.order_marks.get(&key) {
            Some(mark) if self.events[mark.slot].index > index && mark.arrival < arrival => {
                let (later, earlier) = (&self.events[mark.slot], &self.events[slot]);
                let message = format!(
                    "{} on `{}` with {path} = {key} arrived out of send order: the output of \
                     event #{} (correlation {}) arrived {} after its send, before that of \
                     event #{} (correlation {}), sent earlier, which arrived {} after its send",
                    self.what(true),
                    self.channel,
                    later.index,
                    later.correlation_id,
                    format_ns(mark.arrival.saturating_sub(later.sent_mono)),
                    earlier.index,
                    earlier.correlation_id,
                    format_ns(arrival.saturating_sub(earlier.sent_mono)),
                );
                let offending = vec![mark.brief.clone(), brief.clone()];
                self.fail(FailureKind::Reordered, message, offending);
                true
            }
            Some(mark) if self.events[mark.slot].index >= index => false,
            _ => {
                let mark = OrderMark {
                    slot,
                    arrival,
                    brief: brief.clone(),
                };
                self.order_marks.insert(key, mark);
                false
            }
        }
    }

    /// Fails the events whose grace period ended unsatisfied: lost or too few.
    fn fail_unsatisfied(&mut self, slots: &[usize]) {
        let Mode::Presence { need, exact, .. } = self.mode else {
            return;
        };
        let (lost, few): (Vec<&EventState>, Vec<&EventState>) = slots
            .iter()
            .map(|&s| &self.events[s])
            .partition(|ev| ev.in_time == 0);
        let total = self.events.len();
        let window = self.window_text();
        let mut parts = Vec::new();
        if !lost.is_empty() {
            let ids: Vec<&str> = lost.iter().map(|e| e.correlation_id.as_str()).collect();
            parts.push(format!(
                "no {} on `{}` {window} for {} of {total} event{} (correlation {})",
                self.what(false),
                self.channel,
                lost.len(),
                if total == 1 { "" } else { "s" },
                name_ids(&ids)
            ));
        }
        if !few.is_empty() {
            let ids: Vec<String> = few
                .iter()
                .map(|e| format!("{}: {}", e.correlation_id, e.in_time))
                .collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let prefix = if lost.is_empty() {
                format!(
                    "too few {} on `{}` {window}: ",
                    self.what(true),
                    self.channel
                )
            } else {
                "too few ".to_owned()
            };
            parts.push(format!(
                "{prefix}expected {} {need} per event, fewer arrived in time for {} of {total} \
                 event{} (correlation {})",
                if exact { "exactly" } else { "at least" },
                few.len(),
                if total == 1 { "" } else { "s" },
                name_ids(&ids)
            ));
        }
        let mut message = parts.join("; ");
        message.push_str(&format!(
            "; the channel saw {} observation{} for this scenario ({} correlated, {} not)",
            self.seen,
            if self.seen == 1 { "" } else { "s" },
            self.seen_correlated,
            self.seen - self.seen_correlated
        ));
        if self.uncorrelated_matching > 0 {
            message.push_str(&format!(
                "; {} matching observation{} arrived without one of this scenario's \
                 correlation ids",
                self.uncorrelated_matching,
                if self.uncorrelated_matching == 1 {
                    ""
                } else {
                    "s"
                }
            ));
        }
        let kind = if lost.is_empty() {
            FailureKind::TooFew
        } else {
            FailureKind::Lost
        };
        let offending: Vec<ObservationBrief> = few
            .iter()
            .flat_map(|e| e.counted.iter().cloned())
            .take(OFFENDING_KEPT)
            .collect();
        self.fail(kind, message, offending);
    }

    fn try_pass(&mut self) {
        if self.verdict.is_some() || !self.sends_complete {
            return;
        }
        let windows_over = self.last_window_end.is_none_or(|end| self.clock > end);
        let done = match self.mode {
            Mode::Presence { exact: false, .. } => self.unsatisfied == 0,
            Mode::Presence { exact: true, .. } => self.unsatisfied == 0 && windows_over,
            Mode::Absence { .. } => windows_over,
        };
        if done {
            self.decide(Outcome::Passed);
        }
    }

    fn fail(&mut self, kind: FailureKind, message: String, mut offending: Vec<ObservationBrief>) {
        offending.truncate(OFFENDING_KEPT);
        let evidence = Evidence {
            near_miss: self
                .near_correlated
                .clone()
                .or_else(|| self.near_uncorrelated.clone()),
            channel_observations: self.seen,
            last: self.last.iter().cloned().collect(),
            offending,
        };
        self.decide(Outcome::Failed(Failure {
            kind,
            message,
            evidence,
        }));
    }

    fn decide(&mut self, outcome: Outcome) {
        if self.verdict.is_some() {
            return;
        }
        self.verdict = Some(ExpectationVerdict {
            index: self.index,
            channel: self.channel.clone(),
            description: self.description.clone(),
            outcome,
            latencies_ns: std::mem::take(&mut self.latencies),
            matched: self.matched,
            wall_clock: self.wall_clock,
        });
    }
}

/// Keeps the candidate with the fewest diffs (the first one on ties).
fn keep_nearest(best: &mut Option<NearMiss>, observation: ObservationBrief, diffs: Vec<FieldDiff>) {
    if best.as_ref().is_none_or(|b| diffs.len() < b.diffs.len()) {
        *best = Some(NearMiss { observation, diffs });
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The first few ids, then `and N more`.
fn name_ids(ids: &[&str]) -> String {
    let named = ids
        .iter()
        .take(IDS_NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    match ids.len().saturating_sub(IDS_NAMED) {
        0 => named,
        more => format!("{named} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::observation::Payload;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    /// The wall clock at monotonic time 0.
    const WALL0: i64 = 1_700_000_000_000_000_000;

    fn expectation(extra: Value) -> Expectation {
        let mut base = json!({"on": "orders_out"});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("valid expectation")
    }

    fn machine(extra: Value) -> ExpectationMachine {
        ExpectationMachine::new(0, &expectation(extra)).expect("valid machine")
    }

    fn cid(i: u64) -> String {
        format!("c{i}")
    }

    fn send(m: &mut ExpectationMachine, index: u64, at: u64) {
        m.on_sent(SentRef {
            correlation_id: &cid(index),
            index,
            sent_mono: at,
            sent_at: WALL0 + at as i64,
        });
    }

    fn obs_with(seq: u64, correlation: Option<&str>, body: Value, at: u64) -> Observation {
        Observation {
            seq,
            run_id: "run".into(),
            channel: "orders_out".into(),
            correlation_id: correlation.map(Into::into),
            payload: Payload::from_bytes(body.to_string().into_bytes(), usize::MAX),
            headers: Vec::new(),
            message_id: None,
            key: None,
            received_at: WALL0 + at as i64,
            received_mono: Some(at),
        }
    }

    /// An observation for event `index` arriving at `at`.
    fn obs(seq: u64, index: u64, body: Value, at: u64) -> Observation {
        obs_with(seq, Some(&cid(index)), body, at)
    }

    /// Ticks at each deadline until decided (or nothing is pending).
    fn settle(m: &mut ExpectationMachine) {
        for _ in 0..1000 {
            match m.next_deadline() {
                Some(at) => m.on_tick(at),
                None => return,
            }
        }
        panic!("the machine never settled");
    }

    fn failure(m: &ExpectationMachine) -> &Failure {
        match &m.verdict().expect("decided").outcome {
            Outcome::Failed(f) => f,
            Outcome::Passed => panic!("expected a failure, got a pass"),
        }
    }

    fn widget() -> Value {
        json!({"item": "WIDGET", "qty": 2})
    }

    #[test]
    fn at_least_passes_as_soon_as_sends_are_complete_and_all_are_satisfied() {
        let mut m = machine(json!({"match": {"item": "WIDGET"}, "within": "2s"}));
        assert_eq!(
            m.description(),
            r#"at least 1 observation matching {"item":"WIDGET"} on `orders_out` within 2s of each send"#
        );
        send(&mut m, 0, 0);
        send(&mut m, 1, 10 * MS);
        m.on_observation(&obs(1, 0, widget(), 300 * MS), 300 * MS);
        m.on_observation(&obs(2, 1, widget(), 510 * MS), 510 * MS);
        assert!(m.verdict().is_none(), "sends are not complete yet");
        m.sends_complete(520 * MS);
        let v = m.verdict().expect("decided without waiting out the window");
        assert!(v.passed());
        assert_eq!(v.latencies_ns, vec![300 * MS, 500 * MS]);
        assert_eq!((v.matched, v.wall_clock, v.index), (2, false, 0));
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn nothing_at_all_is_lost_at_the_end_of_the_grace_period() {
        let mut m = machine(json!({"match": {"item": "WIDGET"}, "within": "2s"}));
        send(&mut m, 0, 0);
        send(&mut m, 1, 0);
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, widget(), S), S);
        m.on_observation(&obs_with(2, None, json!({"item": "GADGET"}), S), S);
        // Default grace = the SLA: the decision is due just after 2s + 2s.
        assert_eq!(m.next_deadline(), Some(4 * S + 1));
        m.on_tick(4 * S);
        assert!(
            m.verdict().is_none(),
            "an arrival at exactly 4s would still count"
        );
        m.on_tick(4 * S + 1);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        assert_eq!(
            f.message,
            r#"no observation matching {"item":"WIDGET"} on `orders_out` within 2s (+2s grace) for 1 of 2 events (correlation c1); the channel saw 2 observations for this scenario (1 correlated, 1 not)"#
        );
        assert_eq!(f.evidence.channel_observations, 2);
        assert_eq!(f.evidence.last.len(), 2);
        assert!(f.evidence.offending.is_empty());
        let near = f
            .evidence
            .near_miss
            .as_ref()
            .expect("the uncorrelated near-miss");
        assert_eq!(near.observation.seq, 2);
        assert_eq!(near.observation.after_send_ns, None);
        assert_eq!(near.diffs.len(), 1);
        assert_eq!(near.diffs[0].path, "$.item");
        assert_eq!(m.verdict().map(|v| v.latencies_ns.clone()), Some(vec![S]));
    }

    #[test]
    fn grace_zero_fails_right_after_the_sla_and_the_window_edge_is_in_time() {
        let mut m = machine(json!({"within": "1s", "grace": "0s"}));
        send(&mut m, 0, 0);
        send(&mut m, 1, 0);
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, json!(1), S), S);
        assert_eq!(m.next_deadline(), Some(S + 1));
        m.on_tick(S + 1);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        assert!(f.message.starts_with("no observation on `orders_out` within 1s (no grace) for 1 of 2 events (correlation c1)"), "{}", f.message);

        let mut m = machine(json!({"within": "1s", "grace": "0s"}));
        send(&mut m, 0, 0);
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, json!(1), S), S);
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));
    }

    #[test]
    fn a_late_arrival_exceeds_the_sla_at_once() {
        let mut m = machine(json!({"match": {"item": "WIDGET"}, "within": "2s"}));
        send(&mut m, 0, 5 * S);
        m.on_observation(&obs(1, 0, widget(), 5 * S + 3_210 * MS), 9 * S);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::SlaExceeded);
        assert_eq!(
            f.message,
            r#"an observation matching {"item":"WIDGET"} on `orders_out` arrived 3.21s after send; SLA 2s, exceeded by 1.21s (event #0, correlation c0)"#
        );
        assert_eq!(f.evidence.offending.len(), 1);
        assert_eq!(f.evidence.offending[0].after_send_ns, Some(3_210 * MS));
        assert_eq!(
            m.verdict().map(|v| v.latencies_ns.clone()),
            Some(vec![3_210 * MS])
        );
    }

    #[test]
    fn the_verdict_is_final_late_then_in_time_stays_sla_exceeded() {
        let mut m = machine(json!({"within": "1s"}));
        send(&mut m, 0, 0);
        send(&mut m, 1, 0);
        m.on_observation(&obs(1, 0, json!(1), 1_500 * MS), 1_500 * MS);
        let decided = m.verdict().cloned().expect("decided");
        m.on_observation(&obs(2, 1, json!(1), 500 * MS), 1_600 * MS);
        m.sends_complete(1_700 * MS);
        m.on_tick(100 * S);
        assert_eq!(m.verdict(), Some(&decided));
        assert_eq!(failure(&m).kind, FailureKind::SlaExceeded);
    }

    #[test]
    fn arrivals_after_the_grace_period_do_not_count() {
        let mut m = machine(json!({"within": "1s", "grace": "500ms"}));
        send(&mut m, 0, 0);
        m.sends_complete(0);
        // Delivered to the machine before its deadline tick, but received too late.
        m.on_observation(&obs(1, 0, json!(1), 1_500 * MS + 1), 2 * S);
        assert!(m.verdict().is_none());
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        assert_eq!(m.verdict().map(|v| v.matched), Some(1));
    }

    #[test]
    fn some_in_time_but_not_enough_is_too_few() {
        let mut m = machine(json!({"within": "1s", "at_least": 2}));
        assert!(m.description().starts_with("at least 2 observations on"));
        send(&mut m, 0, 0);
        send(&mut m, 1, 0);
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, json!(1), 100 * MS), 100 * MS);
        m.on_observation(&obs(2, 0, json!(1), 200 * MS), 200 * MS);
        m.on_observation(&obs(3, 1, json!(1), 300 * MS), 300 * MS);
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::TooFew);
        assert_eq!(
            f.message,
            "too few observations on `orders_out` within 1s (+1s grace): expected at least 2 per event, fewer arrived in time for 1 of 2 events (correlation c1: 1); the channel saw 3 observations for this scenario (3 correlated, 0 not)"
        );
        assert_eq!(f.evidence.offending.len(), 1);
        assert_eq!(f.evidence.offending[0].seq, 3);
    }

    #[test]
    fn lost_and_too_few_together_report_both_as_lost() {
        let mut m = machine(json!({"within": "1s", "at_least": 2, "grace": "0s"}));
        for i in 0..5 {
            send(&mut m, i, 0);
        }
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, json!(1), 1), 1);
        for i in 1..5 {
            m.on_observation(&obs(1 + i, i, json!(1), 1), 1);
            m.on_observation(&obs(10 + i, i, json!(1), 2), 2);
        }
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::TooFew);

        let mut m = machine(json!({"within": "1s", "at_least": 2, "grace": "0s"}));
        for i in 0..6 {
            send(&mut m, i, 0);
        }
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, json!(1), 1), 1);
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        assert!(
            f.message.starts_with(
                "no observation on `orders_out` within 1s (no grace) for 5 of 6 events \
                 (correlation c1, c2, c3 and 2 more); too few expected at least 2 per event, \
                 fewer arrived in time for 1 of 6 events (correlation c0: 1)"
            ),
            "{}",
            f.message
        );
    }

    #[test]
    fn count_fails_at_once_on_a_duplicate_and_lists_the_arrivals() {
        let mut m = machine(json!({"match": {"item": "WIDGET"}, "count": 1, "within": "2s"}));
        assert!(
            m.description()
                .starts_with("exactly 1 observation matching")
        );
        send(&mut m, 0, 0);
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, widget(), 120 * MS), 120 * MS);
        assert!(m.verdict().is_none(), "count waits out the whole window");
        m.on_observation(&obs(2, 0, widget(), 340 * MS), 340 * MS);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Duplicate);
        assert_eq!(
            f.message,
            r#"2 observations matching {"item":"WIDGET"} arrived on `orders_out` for one event, expected exactly 1 (event #0, correlation c0): at 120ms and 340ms after send"#
        );
        let after: Vec<_> = f
            .evidence
            .offending
            .iter()
            .map(|b| b.after_send_ns)
            .collect();
        assert_eq!(after, vec![Some(120 * MS), Some(340 * MS)]);
        assert_eq!(
            m.verdict().map(|v| v.latencies_ns.clone()),
            Some(vec![120 * MS])
        );
    }

    #[test]
    fn count_treats_a_late_extra_as_a_duplicate() {
        let mut m = machine(json!({"count": 1, "within": "1s"}));
        send(&mut m, 0, 0);
        m.on_observation(&obs(1, 0, json!(1), 500 * MS), 500 * MS);
        m.on_observation(&obs(2, 0, json!(1), 1_500 * MS), 1_500 * MS);
        assert_eq!(failure(&m).kind, FailureKind::Duplicate);
    }

    #[test]
    fn count_passes_only_after_every_window_has_ended() {
        let mut m = machine(json!({"count": 2, "within": "1s"}));
        send(&mut m, 0, 0);
        send(&mut m, 1, 200 * MS);
        for (seq, (i, at)) in [(0, 10), (0, 20), (1, 210), (1, 1_200)]
            .into_iter()
            .enumerate()
        {
            m.on_observation(&obs(seq as u64, i, json!(1), at * MS), at * MS);
        }
        assert_eq!(m.next_deadline(), None, "sends are not complete");
        m.sends_complete(1_200 * MS);
        assert_eq!(m.next_deadline(), Some(1_200 * MS + 1));
        m.on_tick(1_200 * MS);
        assert!(m.verdict().is_none(), "event 1's window includes 1.2s");
        m.on_tick(1_200 * MS + 1);
        let v = m.verdict().expect("decided");
        assert!(v.passed());
        assert_eq!(v.latencies_ns, vec![10 * MS, 20 * MS, 10 * MS, 1_000 * MS]);
    }

    #[test]
    fn count_fails_with_too_few_after_the_grace_period() {
        let mut m = machine(json!({"count": 2, "within": "1s", "grace": "1s"}));
        send(&mut m, 0, 0);
        m.sends_complete(0);
        m.on_observation(&obs(1, 0, json!(1), 10 * MS), 10 * MS);
        assert_eq!(m.next_deadline(), Some(2 * S + 1));
        settle(&mut m);
        assert_eq!(failure(&m).kind, FailureKind::TooFew);
        assert!(failure(&m).message.contains("expected exactly 2 per event"));
    }

    #[test]
    fn absence_fails_at_once_up_to_and_including_the_window_edge() {
        let mut m = machine(json!({"none_within": "1s", "match": {"item": "WIDGET"}}));
        assert_eq!(
            m.description(),
            r#"no observations matching {"item":"WIDGET"} on `orders_out` within 1s of each send"#
        );
        send(&mut m, 0, 0);
        m.on_observation(&obs(1, 0, json!({"item": "OTHER"}), 10 * MS), 10 * MS);
        assert!(m.verdict().is_none(), "not matching");
        m.on_observation(&obs(2, 0, widget(), S), S);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::UnexpectedArrival);
        assert_eq!(
            f.message,
            r#"an observation matching {"item":"WIDGET"} arrived on `orders_out` 1s after send, inside the absence window of 1s (event #0, correlation c0)"#
        );
        assert_eq!(f.evidence.offending[0].seq, 2);
        assert_eq!(f.evidence.offending[0].after_send_ns, Some(S));
        let near = f.evidence.near_miss.as_ref().expect("near-miss");
        assert_eq!(near.observation.after_send_ns, Some(10 * MS));
    }

    #[test]
    fn absence_passes_once_every_window_has_ended() {
        let mut m = machine(json!({"none_within": "1s"}));
        send(&mut m, 0, 0);
        send(&mut m, 1, 500 * MS);
        m.on_observation(&obs(1, 0, json!(1), S + 1), S + 1);
        assert!(m.verdict().is_none(), "after event 0's window");
        assert_eq!(m.next_deadline(), None, "sends are not complete");
        m.on_tick(10 * S);
        assert!(m.verdict().is_none(), "sends are not complete");
        m.sends_complete(10 * S);
        // The machine's clock already passed every window.
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));

        let mut m = machine(json!({"none_within": "1s"}));
        send(&mut m, 0, 0);
        m.sends_complete(0);
        assert_eq!(m.next_deadline(), Some(S + 1));
        m.on_tick(S);
        assert!(m.verdict().is_none());
        m.on_tick(S + 1);
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));
    }

    #[test]
    fn count_zero_is_an_absence_check() {
        let mut m = machine(json!({"count": 0, "within": "1s"}));
        send(&mut m, 0, 0);
        m.on_observation(&obs(1, 0, json!(1), 5 * MS), 5 * MS);
        assert_eq!(failure(&m).kind, FailureKind::UnexpectedArrival);
    }

    #[test]
    fn without_events_both_kinds_pass_once_sends_are_complete() {
        for e in [
            json!({"within": "1s"}),
            json!({"none_within": "1s"}),
            json!({"count": 1, "within": "1s"}),
        ] {
            let mut m = machine(e.clone());
            assert_eq!(m.next_deadline(), None);
            m.sends_complete(0);
            assert!(m.verdict().is_some_and(ExpectationVerdict::passed), "{e}");
        }
    }

    #[test]
    fn correlated_near_misses_are_preferred_over_uncorrelated_ones() {
        let mut m = machine(json!({"match": {"item": "WIDGET", "qty": 2}, "within": "1s"}));
        send(&mut m, 0, 0);
        m.sends_complete(0);
        m.on_observation(
            &obs_with(1, None, json!({"item": "WIDGET", "qty": 3}), 1),
            1,
        );
        m.on_observation(&obs(2, 0, json!({"item": "widget", "qty": 3}), 2), 2);
        m.on_observation(&obs(3, 0, json!({"item": "widget", "qty": 1}), 3), 3);
        // Another scenario's event counts as uncorrelated here.
        m.on_observation(&obs_with(4, Some("elsewhere"), widget(), 4), 4);
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        let near = f.evidence.near_miss.as_ref().expect("near-miss");
        assert_eq!(
            near.observation.seq, 2,
            "correlated, and the first of the closest"
        );
        assert_eq!(near.diffs.len(), 2);
        assert!(
            f.message.ends_with(
                "the channel saw 4 observations for this scenario (2 correlated, 2 not); \
                 1 matching observation arrived without one of this scenario's correlation ids"
            ),
            "{}",
            f.message
        );
        let last: Vec<u64> = f.evidence.last.iter().map(|b| b.seq).collect();
        assert_eq!(last, vec![1, 2, 3, 4]);
    }

    #[test]
    fn evidence_keeps_the_last_five_observations() {
        let mut m = machine(json!({"match": {"ok": true}, "within": "1s"}));
        send(&mut m, 0, 0);
        m.sends_complete(0);
        for seq in 1..=8 {
            m.on_observation(&obs_with(seq, None, json!({"ok": false}), seq), seq);
        }
        settle(&mut m);
        let f = failure(&m);
        let last: Vec<u64> = f.evidence.last.iter().map(|b| b.seq).collect();
        assert_eq!(last, vec![4, 5, 6, 7, 8]);
        assert_eq!(f.evidence.channel_observations, 8);
    }

    #[test]
    fn without_a_monotonic_time_wall_clocks_are_used() {
        let mut m = machine(json!({"within": "1s"}));
        send(&mut m, 0, 7 * S);
        m.sends_complete(7 * S);
        let mut o = obs(1, 0, json!(1), 0);
        o.received_mono = None;
        o.received_at = WALL0 + (7 * S + 250 * MS) as i64;
        m.on_observation(&o, 0);
        let v = m.verdict().expect("decided");
        assert!(v.passed());
        assert!(v.wall_clock);
        assert_eq!(v.latencies_ns, vec![250 * MS]);

        // A remote clock behind ours: the arrival is clamped to the send.
        let mut m = machine(json!({"within": "1s"}));
        send(&mut m, 0, 7 * S);
        m.sends_complete(7 * S);
        o.received_at = WALL0 + (6 * S) as i64;
        m.on_observation(&o, 0);
        assert_eq!(m.verdict().map(|v| v.latencies_ns.clone()), Some(vec![0]));
    }

    #[test]
    fn ordered_by_detects_reordering_within_a_group_only() {
        let e = json!({"within": "5s", "ordered_by": "$.customer"});
        let mut m = machine(e.clone());
        assert!(m.description().ends_with(", in send order by $.customer"));
        for i in 0..4 {
            send(&mut m, i, i * MS);
        }
        m.sends_complete(4 * MS);
        m.on_observation(&obs(1, 1, json!({"customer": "b"}), 100 * MS), 100 * MS);
        m.on_observation(&obs(2, 0, json!({"customer": "a"}), 110 * MS), 110 * MS);
        m.on_observation(&obs(3, 3, json!({"customer": "a"}), 120 * MS), 120 * MS);
        m.on_observation(&obs(4, 2, json!({"other": 1}), 125 * MS), 125 * MS);
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));

        let mut m = machine(e);
        for i in 0..3 {
            send(&mut m, i, i * MS);
        }
        m.on_observation(&obs(1, 2, json!({"customer": "a"}), 100 * MS), 100 * MS);
        m.on_observation(&obs(2, 1, json!({"customer": "b"}), 110 * MS), 110 * MS);
        m.on_observation(&obs(3, 0, json!({"customer": "a"}), 120 * MS), 120 * MS);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Reordered);
        assert_eq!(
            f.message,
            r#"observations on `orders_out` with $.customer = "a" arrived out of send order: the output of event #2 (correlation c2) arrived 98ms after its send, before that of event #0 (correlation c0), sent earlier, which arrived 120ms after its send"#
        );
        let seqs: Vec<u64> = f.evidence.offending.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
    }

    #[test]
    fn invalid_expectations_are_typed_errors() {
        for (e, text) in [
            (json!({}), "needs `within`"),
            (
                json!({"within": "1s", "none_within": "1s"}),
                "both `within` and `none_within`",
            ),
            (
                json!({"within": "1s", "count": 1, "at_least": 1}),
                "both `count` and `at_least`",
            ),
            (
                json!({"none_within": "1s", "count": 1}),
                "apply to `within`",
            ),
            (
                json!({"within": "1s", "ordered_by": "$["}),
                "parse the `ordered_by` JSONPath",
            ),
            (
                json!({"within": "1s", "where": [{"path": "$.a", "regex": "("}]}),
                "compile the regex",
            ),
        ] {
            let err = ExpectationMachine::new(0, &expectation(e.clone())).expect_err("invalid");
            assert!(err.to_string().contains(text), "{e}: {err}");
        }
    }

    #[test]
    fn the_default_grace_is_capped_at_ten_seconds() {
        let mut m = machine(json!({"within": "1m"}));
        send(&mut m, 0, 0);
        assert_eq!(m.next_deadline(), Some(70 * S + 1));
    }

    #[test]
    fn a_thousand_events_are_cheap() {
        let mut m = machine(json!({"match": {"ok": true}, "count": 1, "within": "1s"}));
        for i in 0..2000 {
            send(&mut m, i, i * MS);
        }
        m.sends_complete(2 * S);
        for i in (0..2000).rev() {
            m.on_observation(&obs(i, i, json!({"ok": true}), i * MS + 5 * MS), 3 * S);
        }
        settle(&mut m);
        let v = m.verdict().expect("decided");
        assert!(v.passed());
        assert_eq!((v.matched, v.latencies_ns.len()), (2000, 2000));
    }

    /// One simulated run: events sent at `sends`, arrivals `(event, offset after its
    /// send)`, fed in arrival order with ticks at every deadline before each arrival.
    /// Returns every verdict observed along the way and the final one.
    fn simulate(
        e: Value,
        sends: &[u64],
        arrivals: &[(usize, u64)],
    ) -> (Vec<ExpectationVerdict>, Option<ExpectationVerdict>) {
        let mut m = machine(e);
        for (i, &at) in sends.iter().enumerate() {
            send(&mut m, i as u64, at);
        }
        m.sends_complete(0);
        let mut timeline: Vec<(u64, usize)> = arrivals
            .iter()
            .map(|&(ev, off)| (sends[ev] + off, ev))
            .collect();
        timeline.sort_unstable();
        let mut seen = Vec::new();
        let mut record = |m: &ExpectationMachine| seen.extend(m.verdict().cloned());
        for (seq, &(at, ev)) in timeline.iter().enumerate() {
            while let Some(d) = m.next_deadline().filter(|d| *d <= at) {
                m.on_tick(d);
                record(&m);
            }
            m.on_observation(&obs(seq as u64, ev as u64, json!({"n": 1}), at), at);
            record(&m);
        }
        settle(&mut m);
        record(&m);
        let last = m.verdict().cloned();
        (seen, last)
    }

    fn arb_run() -> impl Strategy<Value = (u64, u64, Vec<u64>, Vec<(usize, u64)>)> {
        (1u64..2_000, 0u64..2_000, 1usize..6).prop_flat_map(|(w, g, n)| {
            (
                Just(w * MS),
                Just(g * MS),
                prop::collection::vec((0u64..1_000).prop_map(|s| s * MS), n),
                prop::collection::vec((0..n, (0u64..5_000).prop_map(|o| o * MS)), 0..3 * n),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn at_least_passes_iff_every_event_has_an_arrival_within_the_sla(
            (w, g, sends, arrivals) in arb_run()
        ) {
            let e = json!({"within": format!("{}ms", w / MS), "grace": format!("{}ms", g / MS)});
            let (seen, last) = simulate(e, &sends, &arrivals);
            let last = last.expect("always decided in the end");
            let expected = (0..sends.len())
                .all(|ev| arrivals.iter().any(|&(a, off)| a == ev && off <= w));
            prop_assert_eq!(last.passed(), expected);
            prop_assert!(seen.iter().all(|v| *v == last), "the verdict changed");
        }

        #[test]
        fn verdicts_never_change_once_decided(
            (w, g, sends, arrivals) in arb_run(),
            kind in 0usize..3,
        ) {
            let w_text = format!("{}ms", w / MS);
            let e = match kind {
                0 => json!({"count": 1, "within": w_text, "grace": format!("{}ms", g / MS)}),
                1 => json!({"none_within": w_text}),
                _ => json!({"at_least": 2, "within": w_text, "ordered_by": "$.n"}),
            };
            let (seen, last) = simulate(e, &sends, &arrivals);
            let last = last.expect("always decided in the end");
            prop_assert!(seen.iter().all(|v| *v == last), "the verdict changed");
            if kind == 1 {
                let expected = !arrivals.iter().any(|&(_, off)| off <= w);
                prop_assert_eq!(last.passed(), expected);
            }
        }
    }
}
