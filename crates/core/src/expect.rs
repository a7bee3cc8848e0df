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
//! [`ExpectationMachine::on_tick`] (the other methods take no time), so the engine can hold
//! deadline judgements back until observations received before them have been committed
//! and routed.
//!
//! A window `W` after a send at `s` *includes* its end: an arrival at `s + W` is in
//! time. A deadline returned by [`ExpectationMachine::next_deadline`] is the first
//! instant at which the decision can be taken (for example `s + W + G + 1`).
//!
//! # Semantics (per sent event, the SLA measured from that event's send)
//!
//! Every event gets a standing of its own (satisfied, or failed with one kind); the
//! expectation is decided once sends are complete and every event has its standing. A
//! failure then accounts for every event: one clause per kind (`lost on 15 of 20 events
//! (#5, #6, …)`), in the order lost, too-few, sla-exceeded, duplicate, reordered,
//! unexpected-arrival, not-sent, the first naming the verdict's kind, and a
//! [`KindTally`] per kind with the events' indices.
//!
//! - **`at_least: M`** (default 1) with `within: W`: a matching observation arriving at
//!   or before `s + W` is in time. An event is satisfied by M in-time matches; the
//!   expectation passes as soon as sends are complete and every event is satisfied.
//! - **`count: N`** with `within: W`: like `at_least`, but exactly-once holds after the
//!   SLA too: matching arrivals are counted until the grace period ends (`s + W + G`),
//!   an (N+1)th fails the event as [`FailureKind::Duplicate`], and an event is
//!   satisfied only when its grace period is over. `count: 0` is an absence check.
//! - **Grace** `G` (`grace`, default `W` capped at 10 s): an event still unsatisfied when
//!   its window ends is given until `s + W + G`. A late arrival in that period fails the
//!   event ([`FailureKind::SlaExceeded`], "exceeded by X"); at the end of the grace
//!   period an unsatisfied event fails as [`FailureKind::TooFew`] (some, not enough, in
//!   time) or [`FailureKind::Lost`] (nothing). Arrivals after the grace period do not
//!   count; while the expectation is still undecided, a lost event's first one is named
//!   with how late it was.
//! - **`none_within: W`**: a matching observation arriving at or before `s + W` fails the
//!   event ([`FailureKind::UnexpectedArrival`]); an event is satisfied when its window
//!   has ended. Arrivals after the window are not failures.
//! - **`ordered_by: PATH`**: matching observations are grouped by the JSON value at PATH
//!   (observations without it are not ordered); within a group, arrivals must follow the
//!   events' send order (index). An earlier-sent event whose output arrives strictly
//!   after a later-sent event's fails as [`FailureKind::Reordered`]; equal arrival times
//!   are not a violation.
//! - An event whose send failed ([`ExpectationMachine::on_not_sent`]) fails as
//!   [`FailureKind::NotSent`]: nothing can be expected of it, so it never passes.
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
use std::fmt;
use std::time::Duration;

use serde_json_path::JsonPath;

use crate::escape::escape_text;
use crate::latency::format_ns;
use crate::matcher::{Matcher, MatcherError, short_json};
use crate::model::Expectation;
use crate::observation::{MonoNanos, Observation, UnixNanos};
use crate::suite::diagnostic::join;
use crate::verdict::{
    Evidence, ExpectationVerdict, Failure, FailureKind, FieldDiff, KindTally, NearMiss,
    ObservationBrief, Outcome,
};

/// How many of the most recent observations a failure shows.
const LAST_KEPT: usize = 5;
/// How many characters of a payload an evidence brief shows.
const EXCERPT_CHARS: usize = 160;
/// How many event indices a message names before "and N more".
const EVENTS_NAMED: usize = 10;
/// How many event indices a failure's tally keeps per kind (the count is always exact).
const TALLY_KEPT: usize = 10_000;
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

/// What an expectation asks of each event, decided from its options by [`Mode::of`],
/// which validation uses too (so the loader refuses exactly what the machine would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `within`, with `at_least: need` or (`exact`) `count: need`.
    Presence {
        /// The SLA, in nanoseconds.
        within: u64,
        /// How long after the SLA arrivals are still counted (late, duplicate).
        grace: u64,
        /// Matching arrivals needed per event.
        need: u32,
        /// `count`: exactly `need`, until the grace period ends.
        exact: bool,
    },
    /// `none_within` (or `count: 0`).
    Absence {
        /// The window, in nanoseconds.
        window: u64,
    },
}

/// Why an expectation's options name no [`Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeError {
    /// Both `within` and `none_within`.
    BothWindows,
    /// `count` or `at_least` (the key) with `none_within`.
    NotForAbsence(&'static str),
    /// Both `count` and `at_least`.
    CountAndAtLeast,
    /// Neither `within` nor `none_within`.
    NoWindow,
}

impl fmt::Display for ModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModeError::BothWindows => "it sets both `within` and `none_within`; keep one",
            ModeError::NotForAbsence(_) => {
                "`count` and `at_least` apply to `within`, not to `none_within`"
            }
            ModeError::CountAndAtLeast => "it sets both `count` and `at_least`; keep one",
            ModeError::NoWindow => {
                "it needs `within` (an SLA) or `none_within` (an absence window)"
            }
        })
    }
}

impl Mode {
    /// The mode of `e`, or every reason it has none (most telling first).
    pub fn of(e: &Expectation) -> Result<Mode, Vec<ModeError>> {
        let mut errors = Vec::new();
        match (e.within, e.none_within) {
            (Some(_), Some(_)) => errors.push(ModeError::BothWindows),
            (None, None) => {}
            (None, Some(_)) => {
                for (key, set) in [
                    ("count", e.count.is_some()),
                    ("at_least", e.at_least.is_some()),
                ] {
                    if set {
                        errors.push(ModeError::NotForAbsence(key));
                    }
                }
            }
            (Some(_), None) => {}
        }
        if e.count.is_some() && e.at_least.is_some() {
            errors.push(ModeError::CountAndAtLeast);
        }
        if e.within.is_none() && e.none_within.is_none() {
            errors.push(ModeError::NoWindow);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        match (e.within, e.none_within) {
            (Some(w), _) if e.count == Some(0) => Ok(Mode::Absence { window: nanos(w.0) }),
            (Some(w), _) => Ok(Mode::Presence {
                within: nanos(w.0),
                grace: nanos(e.grace.map_or(w.0.min(MAX_DEFAULT_GRACE), |g| g.0)),
                need: e.count.or(e.at_least).unwrap_or(1),
                exact: e.count.is_some(),
            }),
            (None, Some(w)) => Ok(Mode::Absence { window: nanos(w.0) }),
            (None, None) => Err(vec![ModeError::NoWindow]),
        }
    }

    fn window(self) -> u64 {
        match self {
            Mode::Presence { within, .. } => within,
            Mode::Absence { window } => window,
        }
    }
}

/// Where one event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Not decided yet.
    Open,
    /// Everything expected of it happened.
    Satisfied,
    /// It failed, for this reason.
    Failed(FailureKind),
}

#[derive(Debug)]
struct EventState {
    correlation_id: String,
    index: u64,
    sent_mono: MonoNanos,
    sent_at: UnixNanos,
    standing: Standing,
    /// Matching arrivals in time.
    in_time: u32,
    /// Matching arrivals in time or in the grace period (duplicate evidence), at most
    /// `need + OFFENDING_KEPT`.
    counted: Vec<ObservationBrief>,
    /// Matching arrivals in time or in the grace period, all of them.
    counted_total: u64,
    /// The latency of the arrival that decided a failure (late, unexpected), if any.
    failed_latency: Option<u64>,
    /// The observations that explain its failure.
    offending: Vec<ObservationBrief>,
    /// The first matching arrival after the grace period (for a lost event: how late).
    after_grace: Option<u64>,
    /// The explanation of a reordering, which involves a second event.
    detail: Option<String>,
    /// The time at which its standing is decided at the latest (`deadlines` key).
    deadline: Option<MonoNanos>,
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
    /// Events whose standing is still open.
    open: usize,
    /// `(time, slot)`: when each open event is decided at the latest.
    deadlines: BTreeSet<(MonoNanos, usize)>,
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
        let mode = Mode::of(e).map_err(|errors| match errors.first() {
            Some(first) => invalid(&first.to_string()),
            None => invalid("it has no mode"),
        })?;
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
            open: 0,
            deadlines: BTreeSet::new(),
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

    fn new_event(&self, correlation_id: &str, index: u64) -> EventState {
        EventState {
            correlation_id: correlation_id.to_owned(),
            index,
            sent_mono: 0,
            sent_at: 0,
            standing: Standing::Open,
            in_time: 0,
            counted: Vec::new(),
            counted_total: 0,
            failed_latency: None,
            offending: Vec::new(),
            after_grace: None,
            detail: None,
            deadline: None,
        }
    }

    /// Registers a sent event: from now on, observations with its correlation id are
    /// judged against its send time. A correlation id registered twice is ignored.
    pub fn on_sent(&mut self, sent: SentRef<'_>) {
        if self.verdict.is_some() || self.by_id.contains_key(sent.correlation_id) {
            return;
        }
        let slot = self.events.len();
        let mut ev = self.new_event(sent.correlation_id, sent.index);
        ev.sent_mono = sent.sent_mono;
        ev.sent_at = sent.sent_at;
        let end = ev.window_end(self.mode);
        // The last instant at which an arrival still counts, plus one.
        let decided_at = match self.mode {
            Mode::Presence { grace, .. } => end.saturating_add(grace).saturating_add(1),
            Mode::Absence { .. } => end.saturating_add(1),
        };
        let satisfied_at_once = matches!(self.mode, Mode::Presence { need: 0, .. });
        if satisfied_at_once {
            ev.standing = Standing::Satisfied;
        } else {
            ev.deadline = Some(decided_at);
            self.deadlines.insert((decided_at, slot));
            self.open += 1;
        }
        self.by_id.insert(ev.correlation_id.clone(), slot);
        self.events.push(ev);
    }

    /// Registers an event whose send failed: nothing can be expected of it, so it counts
    /// as [`FailureKind::NotSent`], never as passed.
    pub fn on_not_sent(&mut self, correlation_id: &str, index: u64) {
        if self.verdict.is_some() || self.by_id.contains_key(correlation_id) {
            return;
        }
        let mut ev = self.new_event(correlation_id, index);
        ev.standing = Standing::Failed(FailureKind::NotSent);
        self.by_id
            .insert(ev.correlation_id.clone(), self.events.len());
        self.events.push(ev);
    }

    /// No more events will be sent; an expectation whose events are all decided is
    /// decided here (deadlines are judged by [`Self::on_tick`] only, see the module docs).
    pub fn sends_complete(&mut self) {
        self.sends_complete = true;
        self.try_decide();
    }

    /// Takes in one observation on the expectation's channel: correlated with one of the
    /// registered events, or not (evidence only). Ignored once decided.
    pub fn on_observation(&mut self, obs: &Observation) {
        if self.verdict.is_some() {
            return;
        }
        self.seen += 1;
        let slot = obs
            .correlation_id
            .as_deref()
            .and_then(|id| self.by_id.get(id).copied())
            .filter(|&s| self.events[s].standing != Standing::Failed(FailureKind::NotSent));
        let timing = slot.map(|s| {
            let (arrival, wall) = self.events[s].arrival(obs);
            (s, arrival, wall)
        });
        let brief = ObservationBrief {
            seq: obs.seq,
            correlation_id: obs.correlation_id.as_deref().map(escape_text),
            received_at: obs.received_at,
            after_send_ns: timing
                .map(|(s, arrival, _)| arrival.saturating_sub(self.events[s].sent_mono)),
            excerpt: obs.payload.excerpt(EXCERPT_CHARS),
        };
        if self.last.len() == LAST_KEPT {
            self.last.pop_front();
        }
        self.last.push_back(brief.clone());

        let matches = self.matcher.matches(obs);
        let Some((slot, arrival, wall)) = timing else {
            if matches {
                self.uncorrelated_matching += 1;
            } else if self.near_correlated.is_none() {
                let diffs = self.matcher.diff(obs);
                keep_nearest(&mut self.near_uncorrelated, brief, diffs);
            }
            return;
        };
        self.seen_correlated += 1;
        if !matches {
            let diffs = self.matcher.diff(obs);
            keep_nearest(&mut self.near_correlated, brief, diffs);
            return;
        }
        self.matched += 1;
        match self.mode {
            Mode::Absence { .. } => self.absent_arrival(slot, arrival, brief),
            Mode::Presence { .. } => self.present_arrival(obs, slot, arrival, wall, brief),
        }
        self.try_decide();
    }

    /// Advances the machine's clock to `now` and takes every decision due by then.
    pub fn on_tick(&mut self, now: MonoNanos) {
        if self.verdict.is_some() {
            return;
        }
        self.clock = self.clock.max(now);
        while let Some(&(at, slot)) = self.deadlines.first()
            && at <= self.clock
        {
            self.deadlines.pop_first();
            self.events[slot].deadline = None;
            self.close_at_deadline(slot);
        }
        self.try_decide();
    }

    /// When the machine next needs [`ExpectationMachine::on_tick`]; `None` once decided
    /// or while nothing time-based is pending.
    pub fn next_deadline(&self) -> Option<MonoNanos> {
        if self.verdict.is_some() {
            return None;
        }
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Whether `correlation_id` is an event this machine was told was sent (by
    /// [`Self::on_sent`]; not one whose send failed).
    pub fn knows_sent(&self, correlation_id: &str) -> bool {
        self.by_id.get(correlation_id).is_some_and(|&slot| {
            self.events[slot].standing != Standing::Failed(FailureKind::NotSent)
        })
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

    /// Gives an open event its final standing.
    fn close(&mut self, slot: usize, standing: Standing) {
        let ev = &mut self.events[slot];
        if ev.standing != Standing::Open {
            return;
        }
        ev.standing = standing;
        if let Some(at) = ev.deadline.take() {
            self.deadlines.remove(&(at, slot));
        }
        self.open -= 1;
    }

    /// An open event's deadline passed: its window (absence) or its grace period
    /// (presence) is over.
    fn close_at_deadline(&mut self, slot: usize) {
        let standing = match self.mode {
            Mode::Absence { .. } => Standing::Satisfied,
            Mode::Presence { need, .. } => {
                let ev = &self.events[slot];
                if ev.in_time >= need {
                    Standing::Satisfied
                } else if ev.in_time == 0 {
                    Standing::Failed(FailureKind::Lost)
                } else {
                    let ev = &mut self.events[slot];
                    ev.offending = ev.counted.clone();
                    Standing::Failed(FailureKind::TooFew)
                }
            }
        };
        self.close(slot, standing);
    }

    fn absent_arrival(&mut self, slot: usize, arrival: MonoNanos, brief: ObservationBrief) {
        let ev = &mut self.events[slot];
        if ev.standing != Standing::Open || arrival > ev.window_end(self.mode) {
            return;
        }
        ev.failed_latency = Some(arrival.saturating_sub(ev.sent_mono));
        ev.offending = vec![brief];
        self.close(slot, Standing::Failed(FailureKind::UnexpectedArrival));
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
            grace, need, exact, ..
        } = self.mode
        else {
            return;
        };
        let ev = &mut self.events[slot];
        let window_end = ev.window_end(self.mode);
        let latency = arrival.saturating_sub(ev.sent_mono);
        if arrival > window_end.saturating_add(grace) {
            // After the grace period: it does not count, but a lost event says how late
            // its output was.
            if ev.after_grace.is_none() && ev.in_time == 0 {
                ev.after_grace = Some(latency);
            }
            return;
        }
        if ev.standing != Standing::Open {
            return;
        }
        self.wall_clock |= wall;
        ev.counted_total += 1;
        if ev.counted.len() < need as usize + OFFENDING_KEPT {
            ev.counted.push(brief.clone());
        }
        if exact && ev.counted_total > u64::from(need) {
            ev.offending = ev.counted.clone();
            self.close(slot, Standing::Failed(FailureKind::Duplicate));
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
            // `count` keeps watching for duplicates until the grace period ends.
            if ev.in_time == need && !exact {
                self.close(slot, Standing::Satisfied);
            }
        } else if ev.in_time < need {
            self.latencies.push(latency);
            ev.failed_latency = Some(latency);
            ev.offending = vec![brief];
            self.close(slot, Standing::Failed(FailureKind::SlaExceeded));
        }
    }

    /// Checks `ordered_by`; true when the arrival failed its event as reordered.
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
        let key = escape_text(&key);
        let index = self.events[slot].index;
        match self.order_marks.get(&key) {
            Some(mark) if self.events[mark.slot].index > index && mark.arrival < arrival => {
                let (later, earlier) = (&self.events[mark.slot], &self.events[slot]);
                let detail = format!(
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
                let ev = &mut self.events[slot];
                ev.detail = Some(detail);
                ev.offending = offending;
                self.close(slot, Standing::Failed(FailureKind::Reordered));
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

    /// Decides the verdict once sends are complete and every event has its standing.
    fn try_decide(&mut self) {
        if self.verdict.is_some() || !self.sends_complete || self.open > 0 {
            return;
        }
        let mut failed: Vec<(FailureKind, Vec<usize>)> = Vec::new();
        let mut order: Vec<usize> = (0..self.events.len()).collect();
        order.sort_by_key(|&s| self.events[s].index);
        for kind in KIND_ORDER {
            let slots: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&s| self.events[s].standing == Standing::Failed(kind))
                .collect();
            if !slots.is_empty() {
                failed.push((kind, slots));
            }
        }
        let Some((kind, _)) = failed.first().map(|(k, s)| (*k, s.len())) else {
            self.decide(Outcome::Passed);
            return;
        };
        let total = self.events.len();
        let mut clauses = Vec::new();
        let mut tally = Vec::new();
        let mut offending = Vec::new();
        for (kind, slots) in &failed {
            clauses.push(self.clause(*kind, slots, total));
            tally.push(KindTally {
                kind: *kind,
                count: slots.len() as u64,
                events: slots
                    .iter()
                    .take(TALLY_KEPT)
                    .map(|&s| self.events[s].index)
                    .collect(),
            });
            for &s in slots {
                offending.extend(self.events[s].offending.iter().cloned());
            }
        }
        let mut message = clauses.join("; ");
        if failed
            .iter()
            .any(|(k, _)| matches!(k, FailureKind::Lost | FailureKind::TooFew))
        {
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
        }
        self.fail(kind, message, offending, tally);
    }

    /// One sentence for the events that failed with `kind`: how many of all, which, and
    /// the first (or worst) one in detail.
    fn clause(&self, kind: FailureKind, slots: &[usize], total: usize) -> String {
        let first = &self.events[slots[0]];
        let head = format!(
            "{kind} on {} of {total} event{} ({})",
            slots.len(),
            if total == 1 { "" } else { "s" },
            name_events(slots.iter().map(|&s| self.events[s].index))
        );
        let (need, exact, within) = match self.mode {
            Mode::Presence {
                need,
                exact,
                within,
                ..
            } => (need, exact, within),
            Mode::Absence { window } => (0, false, window),
        };
        let quantity = if exact { "exactly" } else { "at least" };
        let first_named = format!(
            "event #{}, correlation {}",
            first.index, first.correlation_id
        );
        match kind {
            FailureKind::Lost => {
                let mut text = format!(
                    "{head}: no {} on `{}` {}; first: {first_named}",
                    self.what(false),
                    self.channel,
                    self.window_text()
                );
                let late: Vec<&EventState> = slots
                    .iter()
                    .map(|&s| &self.events[s])
                    .filter(|e| e.after_grace.is_some())
                    .collect();
                if let Some(e) = late.first() {
                    let latency = e.after_grace.unwrap_or(0);
                    let limit = match self.mode {
                        Mode::Presence { within, grace, .. } => within.saturating_add(grace),
                        Mode::Absence { window } => window,
                    };
                    text.push_str(&format!(
                        "; {} of them matched after the grace period (event #{}: {} after \
                         send, {} past the grace period)",
                        late.len(),
                        e.index,
                        format_ns(latency),
                        format_ns(latency.saturating_sub(limit))
                    ));
                }
                text
            }
            FailureKind::TooFew => format!(
                "{head}: expected {quantity} {need} {} on `{}` {} per event, fewer arrived in \
                 time; first: {first_named}, {} in time",
                self.what(need != 1),
                self.channel,
                self.window_text(),
                first.in_time
            ),
            FailureKind::SlaExceeded => {
                let worst = slots
                    .iter()
                    .map(|&s| &self.events[s])
                    .max_by_key(|e| e.failed_latency)
                    .unwrap_or(first);
                let latency = worst.failed_latency.unwrap_or(0);
                let mut text = format!(
                    "{head}: an {} on `{}` arrived after the SLA of {}; worst: event #{}, \
                     correlation {}, {} after send, exceeded by {}",
                    self.what(false),
                    self.channel,
                    format_ns(within),
                    worst.index,
                    worst.correlation_id,
                    format_ns(latency),
                    format_ns(latency.saturating_sub(within))
                );
                if need > 1 {
                    text.push_str(&format!(
                        ", {} of the {need} required in time",
                        worst.in_time
                    ));
                }
                text
            }
            FailureKind::Duplicate => {
                let times: Vec<String> = first
                    .counted
                    .iter()
                    .map(|b| format_ns(b.after_send_ns.unwrap_or(0)))
                    .collect();
                format!(
                    "{head}: more than {need} {} on `{}` for one event, expected exactly \
                     {need} by the end of the grace period; first: {first_named}, {} arrivals \
                     at {} after send",
                    self.what(need != 1),
                    self.channel,
                    first.counted_total,
                    join(&times, "and")
                )
            }
            FailureKind::Reordered => format!(
                "{head}: {}",
                first
                    .detail
                    .as_deref()
                    .unwrap_or("arrived out of send order")
            ),
            FailureKind::UnexpectedArrival => format!(
                "{head}: an {} arrived on `{}` inside the absence window of {}; first: \
                 {first_named}, {} after send",
                self.what(false),
                self.channel,
                format_ns(within),
                format_ns(first.failed_latency.unwrap_or(0))
            ),
            FailureKind::NotSent => format!(
                "{head}: the send failed, so nothing could be expected of {}",
                if slots.len() == 1 { "it" } else { "them" }
            ),
        }
    }

    fn fail(
        &mut self,
        kind: FailureKind,
        message: String,
        mut offending: Vec<ObservationBrief>,
        events: Vec<KindTally>,
    ) {
        offending.truncate(OFFENDING_KEPT);
        let evidence = Evidence {
            near_miss: self
                .near_correlated
                .clone()
                .or_else(|| self.near_uncorrelated.clone()),
            channel_observations: self.seen,
            correlated_observations: self.seen_correlated,
            last: self.last.iter().cloned().collect(),
            offending,
        };
        self.decide(Outcome::Failed(Box::new(Failure {
            kind,
            message,
            evidence,
            events,
        })));
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

/// The order in which failure kinds are reported; the first one present names the
/// verdict.
const KIND_ORDER: [FailureKind; 7] = [
    FailureKind::Lost,
    FailureKind::TooFew,
    FailureKind::SlaExceeded,
    FailureKind::Duplicate,
    FailureKind::Reordered,
    FailureKind::UnexpectedArrival,
    FailureKind::NotSent,
];

/// Keeps the candidate with the fewest diffs (the first one on ties).
fn keep_nearest(best: &mut Option<NearMiss>, observation: ObservationBrief, diffs: Vec<FieldDiff>) {
    if best.as_ref().is_none_or(|b| diffs.len() < b.diffs.len()) {
        *best = Some(NearMiss { observation, diffs });
    }
}

/// `#3, #10, #12 and 4 more`: the first few event indices.
fn name_events(indices: impl ExactSizeIterator<Item = u64>) -> String {
    let total = indices.len();
    let named: Vec<String> = indices
        .take(EVENTS_NAMED)
        .map(|i| format!("#{i}"))
        .collect();
    match total.saturating_sub(EVENTS_NAMED) {
        0 => join(&named, "and"),
        more => format!("{} and {more} more", named.join(", ")),
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
            meta: Vec::new(),
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
        for _ in 0..100_000 {
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
        m.on_observation(&obs(1, 0, widget(), 300 * MS));
        m.on_observation(&obs(2, 1, widget(), 510 * MS));
        assert!(m.verdict().is_none(), "sends are not complete yet");
        m.sends_complete();
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
        m.sends_complete();
        m.on_observation(&obs(1, 0, widget(), S));
        m.on_observation(&obs_with(2, None, json!({"item": "GADGET"}), S));
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
            r#"lost on 1 of 2 events (#1): no observation matching {"item":"WIDGET"} on `orders_out` within 2s (+2s grace); first: event #1, correlation c1; the channel saw 2 observations for this scenario (1 correlated, 1 not)"#
        );
        assert_eq!(
            f.events,
            vec![KindTally {
                kind: FailureKind::Lost,
                count: 1,
                events: vec![1]
            }]
        );
        assert_eq!(f.evidence.channel_observations, 2);
        assert_eq!(f.evidence.correlated_observations, 1);
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
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), S));
        assert_eq!(m.next_deadline(), Some(S + 1));
        m.on_tick(S + 1);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        assert!(f.message.starts_with("lost on 1 of 2 events (#1): no observation on `orders_out` within 1s (no grace); first: event #1, correlation c1"), "{}", f.message);

        let mut m = machine(json!({"within": "1s", "grace": "0s"}));
        send(&mut m, 0, 0);
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), S));
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));
    }

    #[test]
    fn a_late_arrival_exceeds_the_sla_at_once() {
        let mut m = machine(json!({"match": {"item": "WIDGET"}, "within": "2s"}));
        send(&mut m, 0, 5 * S);
        m.sends_complete();
        m.on_observation(&obs(1, 0, widget(), 5 * S + 3_210 * MS));
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::SlaExceeded);
        assert_eq!(
            f.message,
            r#"sla-exceeded on 1 of 1 event (#0): an observation matching {"item":"WIDGET"} on `orders_out` arrived after the SLA of 2s; worst: event #0, correlation c0, 3.21s after send, exceeded by 1.21s"#
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
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 1_500 * MS));
        assert!(m.verdict().is_none(), "event 1 is still open");
        m.on_observation(&obs(2, 1, json!(1), 500 * MS));
        let decided = m.verdict().cloned().expect("decided");
        m.on_observation(&obs(3, 0, json!(1), 500 * MS));
        m.on_tick(100 * S);
        assert_eq!(m.verdict(), Some(&decided));
        assert_eq!(failure(&m).kind, FailureKind::SlaExceeded);
    }

    #[test]
    fn arrivals_after_the_grace_period_do_not_count() {
        let mut m = machine(json!({"within": "1s", "grace": "500ms"}));
        send(&mut m, 0, 0);
        m.sends_complete();
        // Delivered to the machine before its deadline tick, but received too late.
        m.on_observation(&obs(1, 0, json!(1), 1_500 * MS + 1));
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
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 100 * MS));
        m.on_observation(&obs(2, 0, json!(1), 200 * MS));
        m.on_observation(&obs(3, 1, json!(1), 300 * MS));
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::TooFew);
        assert_eq!(
            f.message,
            "too-few on 1 of 2 events (#1): expected at least 2 observations on `orders_out` within 1s (+1s grace) per event, fewer arrived in time; first: event #1, correlation c1, 1 in time; the channel saw 3 observations for this scenario (3 correlated, 0 not)"
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
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 1));
        for i in 1..5 {
            m.on_observation(&obs(1 + i, i, json!(1), 1));
            m.on_observation(&obs(10 + i, i, json!(1), 2));
        }
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::TooFew);

        let mut m = machine(json!({"within": "1s", "at_least": 2, "grace": "0s"}));
        for i in 0..6 {
            send(&mut m, i, 0);
        }
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 1));
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        assert!(
            f.message.starts_with(
                "lost on 5 of 6 events (#1, #2, #3, #4 and #5): no observation on `orders_out` \
                 within 1s (no grace); first: event #1, correlation c1; too-few on 1 of 6 \
                 events (#0): expected at least 2 observations"
            ),
            "{}",
            f.message
        );
        let tally: Vec<(FailureKind, u64)> = f.events.iter().map(|t| (t.kind, t.count)).collect();
        assert_eq!(
            tally,
            vec![(FailureKind::Lost, 5), (FailureKind::TooFew, 1)]
        );
    }

    #[test]
    fn count_fails_on_a_duplicate_and_lists_the_arrivals() {
        let mut m = machine(json!({"match": {"item": "WIDGET"}, "count": 1, "within": "2s"}));
        assert!(
            m.description()
                .starts_with("exactly 1 observation matching")
        );
        send(&mut m, 0, 0);
        m.sends_complete();
        m.on_observation(&obs(1, 0, widget(), 120 * MS));
        assert!(m.verdict().is_none(), "count waits out the whole window");
        m.on_observation(&obs(2, 0, widget(), 340 * MS));
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Duplicate);
        assert_eq!(
            f.message,
            r#"duplicate on 1 of 1 event (#0): more than 1 observation matching {"item":"WIDGET"} on `orders_out` for one event, expected exactly 1 by the end of the grace period; first: event #0, correlation c0, 2 arrivals at 120ms and 340ms after send"#
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
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 500 * MS));
        m.on_observation(&obs(2, 0, json!(1), 1_500 * MS));
        assert_eq!(failure(&m).kind, FailureKind::Duplicate);
    }

    /// The newcomer's case: `count: 1, within: 500ms`, a duplicate 700 ms after the
    /// first result, past the SLA: exactly-once holds until the grace period ends.
    #[test]
    fn count_keeps_counting_after_the_sla_until_the_grace_period_ends() {
        let mut m = machine(json!({"count": 1, "within": "500ms"}));
        for i in 0..50 {
            send(&mut m, i, 0);
        }
        m.sends_complete();
        for i in 0..50 {
            m.on_observation(&obs(i, i, json!(1), 100 * MS));
        }
        m.on_tick(501 * MS);
        assert!(
            m.verdict().is_none(),
            "the SLA passed, the grace period did not"
        );
        for (seq, i) in [3u64, 10, 11, 20, 29, 33, 41].into_iter().enumerate() {
            let at = 800 * MS;
            m.on_observation(&obs(100 + seq as u64, i, json!(1), at));
        }
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Duplicate);
        assert!(
            f.message.starts_with(
                "duplicate on 7 of 50 events (#3, #10, #11, #20, #29, #33 and #41): more than 1"
            ),
            "{}",
            f.message
        );
        assert!(
            f.message.ends_with(
                "first: event #3, correlation c3, 2 arrivals at 100ms and 800ms after send"
            ),
            "{}",
            f.message
        );
        assert_eq!(f.events[0].events, vec![3, 10, 11, 20, 29, 33, 41]);
        assert_eq!(f.evidence.offending.len(), 14);

        // An extra arrival after the grace period does not count.
        let mut m = machine(json!({"count": 1, "within": "500ms", "grace": "100ms"}));
        send(&mut m, 0, 0);
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 100 * MS));
        m.on_observation(&obs(2, 0, json!(1), 601 * MS));
        settle(&mut m);
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));
    }

    /// Every event's outcome is reported, not only those due when the first failed.
    #[test]
    fn a_failure_accounts_for_every_event() {
        let mut m = machine(json!({"within": "1s", "grace": "0s"}));
        for i in 0..20 {
            send(&mut m, i, i * 10 * MS);
        }
        m.sends_complete();
        // Five arrive; the SUT crashes; fifteen are lost, due at different times.
        for i in 0..5 {
            m.on_observation(&obs(i, i, json!(1), i * 10 * MS + 5 * MS));
        }
        m.on_tick(S + 1);
        assert!(m.verdict().is_none(), "event 5's window is still open");
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        assert!(
            f.message.starts_with(
                "lost on 15 of 20 events (#5, #6, #7, #8, #9, #10, #11, #12, #13, #14 and 5 more)"
            ),
            "{}",
            f.message
        );
        assert_eq!(f.events[0].count, 15);
        assert_eq!(f.events[0].events, (5..20).collect::<Vec<u64>>());
    }

    #[test]
    fn kinds_are_summarised_side_by_side_and_a_late_match_is_named() {
        let mut m = machine(json!({"count": 1, "within": "1s", "grace": "1s"}));
        for i in 0..4 {
            send(&mut m, i, 0);
        }
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 10 * MS));
        m.on_observation(&obs(2, 0, json!(1), 20 * MS)); // duplicate
        m.on_observation(&obs(3, 1, json!(1), 1_500 * MS)); // late
        m.on_observation(&obs(4, 2, json!(1), 30 * MS)); // fine
        m.on_observation(&obs(5, 3, json!(1), 2_500 * MS)); // after the grace
        settle(&mut m);
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Lost);
        let kinds: Vec<FailureKind> = f.events.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            vec![
                FailureKind::Lost,
                FailureKind::SlaExceeded,
                FailureKind::Duplicate
            ]
        );
        assert!(
            f.message.contains("1 of them matched after the grace period (event #3: 2.5s after send, 500ms past the grace period)"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("; sla-exceeded on 1 of 4 events (#1)"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("; duplicate on 1 of 4 events (#0)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn an_event_that_was_not_sent_never_passes() {
        for e in [
            json!({"within": "1s"}),
            json!({"none_within": "1s"}),
            json!({"count": 1, "within": "1s"}),
        ] {
            let mut m = machine(e.clone());
            m.on_not_sent("c0", 0);
            send(&mut m, 1, 0);
            m.sends_complete();
            // An observation carrying the unsent event's id is not its output.
            m.on_observation(&obs(1, 0, json!(1), 10 * MS));
            m.on_observation(&obs(2, 1, json!(1), 10 * MS));
            settle(&mut m);
            let f = failure(&m);
            let kinds: Vec<FailureKind> = f.events.iter().map(|t| t.kind).collect();
            assert_eq!(*kinds.last().expect("a kind"), FailureKind::NotSent, "{e}");
            assert!(
                f.message
                    .contains("not-sent on 1 of 2 events (#0): the send failed"),
                "{e}: {}",
                f.message
            );
        }
        let mut m = machine(json!({"within": "1s"}));
        m.on_not_sent("c0", 0);
        m.sends_complete();
        assert_eq!(failure(&m).kind, FailureKind::NotSent);
    }

    #[test]
    fn count_passes_only_after_every_grace_period_has_ended() {
        let mut m = machine(json!({"count": 2, "within": "1s", "grace": "500ms"}));
        send(&mut m, 0, 0);
        send(&mut m, 1, 200 * MS);
        for (seq, (i, at)) in [(0, 10), (0, 20), (1, 210), (1, 1_200)]
            .into_iter()
            .enumerate()
        {
            m.on_observation(&obs(seq as u64, i, json!(1), at * MS));
        }
        m.sends_complete();
        assert_eq!(m.next_deadline(), Some(1_500 * MS + 1));
        m.on_tick(1_500 * MS + 1);
        assert!(
            m.verdict().is_none(),
            "event 1's grace period includes 1.7s"
        );
        assert_eq!(m.next_deadline(), Some(1_700 * MS + 1));
        m.on_tick(1_700 * MS);
        assert!(m.verdict().is_none());
        m.on_tick(1_700 * MS + 1);
        let v = m.verdict().expect("decided");
        assert!(v.passed());
        assert_eq!(v.latencies_ns, vec![10 * MS, 20 * MS, 10 * MS, 1_000 * MS]);
    }

    #[test]
    fn count_fails_with_too_few_after_the_grace_period() {
        let mut m = machine(json!({"count": 2, "within": "1s", "grace": "1s"}));
        send(&mut m, 0, 0);
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 10 * MS));
        assert_eq!(m.next_deadline(), Some(2 * S + 1));
        settle(&mut m);
        assert_eq!(failure(&m).kind, FailureKind::TooFew);
        assert!(
            failure(&m).message.contains(
                "expected exactly 2 observations on `orders_out` within 1s (+1s grace) per event"
            ),
            "{}",
            failure(&m).message
        );
    }

    #[test]
    fn absence_fails_at_once_up_to_and_including_the_window_edge() {
        let mut m = machine(json!({"none_within": "1s", "match": {"item": "WIDGET"}}));
        assert_eq!(
            m.description(),
            r#"no observations matching {"item":"WIDGET"} on `orders_out` within 1s of each send"#
        );
        send(&mut m, 0, 0);
        m.on_observation(&obs(1, 0, json!({"item": "OTHER"}), 10 * MS));
        assert!(m.verdict().is_none(), "not matching");
        m.on_observation(&obs(2, 0, widget(), S));
        assert!(m.verdict().is_none(), "sends are not complete");
        m.sends_complete();
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::UnexpectedArrival);
        assert_eq!(
            f.message,
            r#"unexpected-arrival on 1 of 1 event (#0): an observation matching {"item":"WIDGET"} arrived on `orders_out` inside the absence window of 1s; first: event #0, correlation c0, 1s after send"#
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
        m.on_observation(&obs(1, 0, json!(1), S + 1));
        assert!(m.verdict().is_none(), "after event 0's window");
        assert_eq!(m.next_deadline(), Some(S + 1), "event 0's window ends");
        m.on_tick(10 * S);
        assert!(m.verdict().is_none(), "sends are not complete");
        m.sends_complete();
        // The machine's clock already passed every window.
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));

        let mut m = machine(json!({"none_within": "1s"}));
        send(&mut m, 0, 0);
        m.sends_complete();
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
        m.sends_complete();
        m.on_observation(&obs(1, 0, json!(1), 5 * MS));
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
            m.sends_complete();
            assert!(m.verdict().is_some_and(ExpectationVerdict::passed), "{e}");
        }
    }

    #[test]
    fn correlated_near_misses_are_preferred_over_uncorrelated_ones() {
        let mut m = machine(json!({"match": {"item": "WIDGET", "qty": 2}, "within": "1s"}));
        send(&mut m, 0, 0);
        m.sends_complete();
        m.on_observation(&obs_with(1, None, json!({"item": "WIDGET", "qty": 3}), 1));
        m.on_observation(&obs(2, 0, json!({"item": "widget", "qty": 3}), 2));
        m.on_observation(&obs(3, 0, json!({"item": "widget", "qty": 1}), 3));
        // Another scenario's event counts as uncorrelated here.
        m.on_observation(&obs_with(4, Some("elsewhere"), widget(), 4));
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
        m.sends_complete();
        for seq in 1..=8 {
            m.on_observation(&obs_with(seq, None, json!({"ok": false}), seq));
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
        m.sends_complete();
        let mut o = obs(1, 0, json!(1), 0);
        o.received_mono = None;
        o.received_at = WALL0 + (7 * S + 250 * MS) as i64;
        m.on_observation(&o);
        let v = m.verdict().expect("decided");
        assert!(v.passed());
        assert!(v.wall_clock);
        assert_eq!(v.latencies_ns, vec![250 * MS]);

        // A remote clock behind ours: the arrival is clamped to the send.
        let mut m = machine(json!({"within": "1s"}));
        send(&mut m, 0, 7 * S);
        m.sends_complete();
        o.received_at = WALL0 + (6 * S) as i64;
        m.on_observation(&o);
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
        m.sends_complete();
        m.on_observation(&obs(1, 1, json!({"customer": "b"}), 100 * MS));
        m.on_observation(&obs(2, 0, json!({"customer": "a"}), 110 * MS));
        m.on_observation(&obs(3, 3, json!({"customer": "a"}), 120 * MS));
        m.on_observation(&obs(4, 2, json!({"other": 1}), 125 * MS));
        assert!(m.verdict().is_some_and(ExpectationVerdict::passed));

        let mut m = machine(e);
        for i in 0..3 {
            send(&mut m, i, i * MS);
        }
        m.on_observation(&obs(1, 2, json!({"customer": "a"}), 100 * MS));
        m.on_observation(&obs(2, 1, json!({"customer": "b"}), 110 * MS));
        m.on_observation(&obs(3, 0, json!({"customer": "a"}), 120 * MS));
        m.sends_complete();
        let f = failure(&m);
        assert_eq!(f.kind, FailureKind::Reordered);
        assert_eq!(
            f.message,
            r#"reordered on 1 of 3 events (#0): observations on `orders_out` with $.customer = "a" arrived out of send order: the output of event #2 (correlation c2) arrived 98ms after its send, before that of event #0 (correlation c0), sent earlier, which arrived 120ms after its send"#
        );
        let seqs: Vec<u64> = f.evidence.offending.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
    }

    #[test]
    fn a_machine_knows_the_events_it_was_told_were_sent() {
        let mut m = machine(json!({"within": "1s"}));
        send(&mut m, 0, 0);
        m.on_not_sent(&cid(1), 1);
        assert!(m.knows_sent(&cid(0)));
        assert!(!m.knows_sent(&cid(1)), "a failed send is not a sent event");
        assert!(!m.knows_sent(&cid(2)));
    }

    #[test]
    fn a_mode_is_one_window_and_every_reason_against_it_is_named() {
        let of = |extra: Value| Mode::of(&expectation(extra));
        assert_eq!(
            of(json!({ "none_within": "1s", "count": 1, "at_least": 1 })),
            Err(vec![
                ModeError::NotForAbsence("count"),
                ModeError::NotForAbsence("at_least"),
                ModeError::CountAndAtLeast
            ])
        );
        assert_eq!(of(json!({})), Err(vec![ModeError::NoWindow]));
        assert_eq!(
            of(json!({ "within": "1s", "count": 0 })),
            Ok(Mode::Absence { window: 1_000 * MS })
        );
        assert_eq!(
            of(json!({ "within": "2s", "count": 3 })),
            Ok(Mode::Presence {
                within: 2_000 * MS,
                grace: 2_000 * MS,
                need: 3,
                exact: true
            })
        );
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
        m.sends_complete();
        for i in (0..2000).rev() {
            m.on_observation(&obs(i, i, json!({"ok": true}), i * MS + 5 * MS));
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
        m.sends_complete();
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
            m.on_observation(&obs(seq as u64, ev as u64, json!({"n": 1}), at));
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
