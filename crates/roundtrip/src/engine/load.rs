//! `roundtrip load`: one scenario sent on an open-loop schedule, its outputs accounted
//! per stream by core's [`Accountant`], the run's phases (`Run`) otherwise unchanged.
//!
//! - **Sending**: one task per stream, each sending its events in order, each at its
//!   intended time (never earlier; later only when the stream's previous send is still
//!   in flight, which the send lag shows). The accountant hears of a send *before* it is
//!   handed to the transport, so an output can never arrive before its event is known.
//! - **Receiving**: the listeners' sinks are tapped ([`ObservationSink::tapped`]): under
//!   load nothing per observation is written to the store, only the account at the end
//!   (aggregates and capped anomaly ids) in the run's summary.
//! - **Ticking**: the accountant settles what is past its deadline and closes intervals
//!   on a timer; a drain after the last send lasts until every event sent has arrived or
//!   been declared lost (at most `drain`), so the tail is not counted as loss.
//!
//! [`ObservationSink::tapped`]: crate::transport::ObservationSink::tapped

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use roundtrip_core::expect::Mode;
use roundtrip_core::load::{
    AccountConfig, Accountant, FlowKind, FlowSpec, IntervalPoint, LoadReport, Profile, Snapshot,
};
use roundtrip_core::matcher::Matcher;
use roundtrip_core::model::{LoadSpec, Scenario};
use roundtrip_core::observation::Observation;
use roundtrip_core::run::{RunSummary, ScenarioResult, ScenarioStatus};
use roundtrip_core::suite::LoadedSuite;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::plan::{Plan, PlannedSend};
use super::produce::EventContext;
use super::{COMMIT_SLACK, Run, RunOptions, cancelled, shown_error};
use crate::clock;
use crate::error::HarnessError;
use crate::store::{LoadPart, LoadPartKind, Store, StoreError};
use crate::transport::{Producer, TapOrder};

mod shared;

pub use shared::SharedLoad;

/// How many observations may wait between the listeners and the accounting before the
/// listeners are held back.
const TAP_CAPACITY: usize = 65_536;
/// Correlation ids kept per kind of anomaly.
const KEEP_IDS: usize = 20;
/// A load stops, as a harness error, when this many sends failed to connect (or timed
/// out) before any succeeded: the input is down, and the account would only say so N
/// times.
const FIRST_UNREACHABLE: u32 = super::scenario::MAX_CONSECUTIVE_UNREACHABLE;

/// Whether the input answers: shared by the senders of a load.
#[derive(Debug, Default)]
struct Reach {
    /// A send succeeded (or failed otherwise than to connect): the input is up.
    reached: std::sync::atomic::AtomicBool,
    /// Sends that failed to connect, while none reached it.
    unreachable: std::sync::atomic::AtomicU32,
    /// Set once, for good: the load stops.
    tripped: std::sync::atomic::AtomicBool,
    /// Wakes the driver when it trips.
    stop: Notify,
    /// The first of those errors.
    first: Mutex<Option<String>>,
}

impl Reach {
    /// Notes a send's outcome; true when the load should stop.
    fn note(&self, outcome: &Result<(), crate::transport::ProduceError>) -> bool {
        use std::sync::atomic::Ordering;
        match outcome {
            Err(e @ crate::transport::ProduceError::Unreachable { .. })
                if !self.reached.load(Ordering::Acquire) =>
            {
                self.first
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(|| shown_error(e));
                if self.unreachable.fetch_add(1, Ordering::AcqRel) + 1 >= FIRST_UNREACHABLE
                    && !self.tripped.swap(true, Ordering::AcqRel)
                {
                    self.stop.notify_one();
                }
                self.tripped.load(Ordering::Acquire)
            }
            Err(crate::transport::ProduceError::Unreachable { .. }) => {
                self.tripped.load(Ordering::Acquire)
            }
            _ => {
                self.reached.store(true, Ordering::Release);
                self.tripped.load(Ordering::Acquire)
            }
        }
    }

    /// Why the load stopped, if it stopped for that.
    fn stopped(&self, channel: &str) -> Option<HarnessError> {
        use std::sync::atomic::Ordering;
        if !self.tripped.load(Ordering::Acquire) {
            return None;
        }
        let failed = self.unreachable.load(Ordering::Acquire);
        let first = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Some(HarnessError::Input {
            message: format!(
                "`{}` is unreachable: its first {failed} sends failed to connect or timed out \
                 and none succeeded ({first}); nothing was accounted. Check that the system \
                 under test is up and the channel's address is right",
                roundtrip_core::escape::escape_text(channel)
            ),
        })
    }
}

/// How to run a load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The scenario to run.
    pub scenario: String,
    /// The schedule.
    pub profile: Profile,
    /// The length of an interval (the live view's line, the series' point).
    pub interval: Duration,
    /// The longest the drain after the last send may last; by default the longest SLA
    /// plus grace (or absence window) of the scenario's expectations.
    pub drain: Option<Duration>,
    /// Cancellation and the rest of a run's options (`events` is not used: see
    /// `progress`).
    pub run: RunOptions,
    /// Where live progress goes, if anywhere.
    pub progress: Option<mpsc::UnboundedSender<LoadEvent>>,
    /// One worker of a run several share, or `None` for a run of its own.
    pub shared: Option<SharedLoad>,
}

/// Progress of a load run.
#[derive(Debug, Clone)]
pub enum LoadEvent {
    /// Set up; the schedule begins.
    Started {
        /// The run's id.
        run_id: String,
        /// The schedule, as written back.
        profile: String,
        /// Events it schedules.
        total: u64,
        /// Streams.
        streams: u32,
        /// The accounting window per stream.
        window: u64,
    },
    /// An interval closed.
    Interval {
        /// The interval.
        point: Box<IntervalPoint>,
        /// Totals so far.
        totals: Box<Snapshot>,
    },
    /// A worker of a shared run waits for the others: `joined` of `workers` have.
    Joining {
        /// Workers joined so far (this one included).
        joined: usize,
        /// Workers the run has.
        workers: u16,
    },
    /// This worker finished last: it merged the workers' accounts into the run's.
    Merged {
        /// The run's id.
        run_id: String,
        /// Whether the merged account met the aggregate SLAs.
        passed: bool,
    },
    /// The last event was sent; waiting for what is in flight.
    Draining {
        /// Events in flight.
        in_flight: u64,
        /// The longest the drain lasts.
        at_most: Duration,
    },
}

fn usage(message: String) -> HarnessError {
    HarnessError::Load { message }
}

/// The scenario named `name` of `loaded`, checked for what a load needs: one send step
/// and expectations that each ask for one output per event (or none).
fn load_scenario<'s>(loaded: &'s LoadedSuite, name: &str) -> Result<&'s Scenario, HarnessError> {
    let Some(scenario) = loaded.suite.scenarios.iter().find(|s| s.name == name) else {
        let names: Vec<String> = loaded
            .suite
            .scenarios
            .iter()
            .map(|s| format!("`{}`", roundtrip_core::escape::escape_text(&s.name)))
            .collect();
        return Err(usage(format!(
            "the suite has no scenario `{}`; its scenarios are {}",
            roundtrip_core::escape::escape_text(name),
            names.join(", ")
        )));
    };
    let shown = roundtrip_core::escape::escape_text(&scenario.name);
    if scenario.send.len() != 1 {
        return Err(usage(format!(
            "scenario `{shown}` has {} send steps; a load sends one step per event: give the \
             scenario one `send` step (its `repeat` and `concurrency` are not used: the rate is)",
            scenario.send.len()
        )));
    }
    if scenario.expect.is_empty() {
        return Err(usage(format!(
            "scenario `{shown}` expects nothing; a load accounts for the outputs its \
             expectations name: add one (`- on: CHANNEL` with `within`)"
        )));
    }
    if !scenario.expect.iter().any(|e| e.within.is_some()) {
        return Err(usage(format!(
            "scenario `{shown}` has no expectation that something arrives (`within`); a load \
             needs one to account for"
        )));
    }
    for (i, e) in scenario.expect.iter().enumerate() {
        if let Ok(Mode::Presence { need, exact, .. }) = Mode::of(e)
            && (need != 1 || (exact && e.count != Some(1)))
        {
            return Err(usage(format!(
                "expectation {} of scenario `{shown}` asks for {} outputs per event; a load \
                 accounts for one output per event (duplicates are counted): leave out \
                 `count` and `at_least`, or make them 1",
                i + 1,
                need
            )));
        }
    }
    Ok(scenario)
}

/// Runs `opts.scenario` of `loaded` under load, recording the run and its account in
/// `store`. A missed aggregate SLA is a failed scenario; `Err` means the run could not be
/// carried out.
pub async fn run_load(
    loaded: &LoadedSuite,
    store: Arc<dyn Store>,
    opts: LoadOptions,
) -> Result<RunSummary, HarnessError> {
    let scenario = load_scenario(loaded, &opts.scenario)?.clone();
    let spec = scenario.load.clone().unwrap_or_default();
    let streams = spec.streams.unwrap_or(1).max(1);
    if u64::from(streams) > opts.profile.total() {
        return Err(usage(format!(
            "the load sends {} events, fewer than its {streams} streams",
            opts.profile.total()
        )));
    }
    if let Some(shared) = &opts.shared {
        shared.check()?;
    }
    let mut only = loaded.clone();
    only.suite.scenarios = vec![scenario.clone()];
    let run_id = match &opts.shared {
        Some(shared) => shared.run_id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let plan = Plan::with_remote(&only, run_id, None)?;
    let Some(send) = plan
        .scenarios
        .first()
        .and_then(|s| s.sends.first())
        .cloned()
    else {
        return Err(usage(format!(
            "the send step of scenario `{}` names no channel the run can send to",
            roundtrip_core::escape::escape_text(&scenario.name)
        )));
    };
    let mut flows = Vec::new();
    let mut matchers = Vec::new();
    for (i, e) in scenario.expect.iter().enumerate() {
        let kind = match Mode::of(e) {
            Ok(Mode::Presence { within, grace, .. }) => FlowKind::Presence {
                sla_ns: within,
                grace_ns: grace,
            },
            Ok(Mode::Absence { window }) => FlowKind::Absence { window_ns: window },
            Err(_) => {
                return Err(usage(format!(
                    "expectation {} has no `within` or `none_within`",
                    i + 1
                )));
            }
        };
        let matcher =
            Matcher::compile(e).map_err(|err| usage(format!("expectation {}: {err}", i + 1)))?;
        flows.push(FlowSpec {
            expectation: i,
            channel: e.on.clone(),
            kind,
        });
        matchers.push((e.on.clone(), matcher));
    }
    let config = AccountConfig {
        run_id: plan.run_id.clone(),
        worker: opts.shared.as_ref().map_or(0, |s| s.worker),
        streams,
        profile: opts.profile.clone(),
        flows,
        interval_ns: nanos(opts.interval).max(1_000_000),
        slack_ns: nanos(COMMIT_SLACK),
        keep: KEEP_IDS,
        max_in_flight: spec.max_in_flight,
        max_points: roundtrip_core::load::MAX_POINTS,
    };

    let (tap, tapped) = mpsc::channel(TAP_CAPACITY);
    let shared = opts.shared.as_ref();
    let mut run = Run::open(plan, store, &opts.run, shared.is_some()).await?;
    if let Some(shared) = shared
        && let Err(e) = shared::check_unused(run.store.as_ref(), shared).await
    {
        // The run is the other workers' to finish: this one only leaves.
        run.tear_down(&opts.run).await;
        return Err(e);
    }
    run.tap = Some(tap);
    let set_up = run.set_up(&opts.run).await;
    // The listeners' sinks hold the only senders now: the tap closes when they stop.
    run.tap = None;
    // A worker refused at the barrier leaves the run to the others: it records no part
    // of its own beyond `joined` (if it got that far).
    let mut refused = false;
    let set_up = match (set_up, shared) {
        (Ok(true), Some(shared)) => {
            let joined = shared::join(
                run.store.as_ref(),
                shared,
                &scenario,
                &opts,
                config.interval_ns,
            )
            .await;
            // Refused (exit 2: not of this run) leaves no trace; a worker that gave up
            // waiting finishes, so that a late one learns the run cannot complete.
            refused = matches!(joined, Err(HarnessError::Load { .. }));
            joined
        }
        (set_up, _) => set_up,
    };
    let recorder = Recorder::start(
        Arc::clone(&run.store),
        run.plan.run_id.clone(),
        config.worker,
    );
    let failure = match set_up {
        Ok(true) => {
            let drive = Drive {
                run: &run,
                send,
                matchers,
                spec: &spec,
                opts: &opts,
                recorder: &recorder,
            };
            match drive.run(config, tapped, &scenario.name).await {
                Ok((result, mut report)) => {
                    report.workers = shared.map_or(1, |s| s.workers);
                    run.summary.scenarios = vec![result];
                    run.summary.load = Some(Box::new(report));
                    None
                }
                Err(e) => Some(e),
            }
        }
        Ok(false) => None,
        Err(e) => Some(e),
    };
    let failure = failure.or(recorder.finish().await.map(HarnessError::from));
    run.summary.interrupted |= *opts.run.cancel.borrow();
    // A shared run's scenario result is the merged one (`shared::finish`).
    let recorded = match (run.summary.scenarios.first(), shared) {
        (Some(result), None) => run
            .store
            .record_scenario(&run.plan.run_id, result)
            .await
            .err(),
        _ => None,
    };
    run.tear_down(&opts.run).await;
    let Some(shared) = shared else {
        return run
            .summarise(failure.or(recorded.map(HarnessError::from)), &opts.run)
            .await;
    };
    if refused && let Some(e) = failure {
        return Err(e);
    }
    run.seal(failure.as_ref());
    let merged = shared::finish(&run.store, shared, &run.summary, &spec).await;
    match (failure, merged) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(merged)) => {
            if let Some(merged) = merged {
                emit(
                    &opts,
                    LoadEvent::Merged {
                        run_id: merged.run_id.clone(),
                        passed: merged.failed() == 0 && !merged.interrupted,
                    },
                );
            }
            Ok(run.summary)
        }
    }
}

/// Writes each interval of the load as it closes, in the background: the load never
/// waits for the store.
struct Recorder {
    worker: u16,
    points: mpsc::UnboundedSender<(u64, IntervalPoint)>,
    task: tokio::task::JoinHandle<Option<StoreError>>,
}

impl Recorder {
    fn start(store: Arc<dyn Store>, run_id: String, worker: u16) -> Recorder {
        let (points, mut queued) = mpsc::unbounded_channel::<(u64, IntervalPoint)>();
        let task = tokio::spawn(async move {
            while let Some((index, point)) = queued.recv().await {
                let written = async {
                    let body = crate::store::write::to_json(&point, "encode an interval")?;
                    let part = LoadPart {
                        worker,
                        kind: LoadPartKind::Interval(index),
                        body,
                    };
                    store.record_load_part(&run_id, &part).await
                };
                if let Err(e) = written.await {
                    return Some(e);
                }
            }
            None
        });
        Recorder {
            worker,
            points,
            task,
        }
    }

    /// Queues interval `index` (0-based).
    fn interval(&self, index: u64, point: IntervalPoint) {
        // Closed only when the task stopped on an error, which `finish` returns.
        let _ = self.points.send((index, point));
    }

    /// Waits for everything queued to be written; the first error, if any.
    async fn finish(self) -> Option<StoreError> {
        let Recorder {
            worker,
            points,
            task,
        } = self;
        drop(points);
        match task.await {
            Ok(error) => error,
            Err(e) => Some(StoreError::Io {
                operation: "record the load's intervals",
                source: format!("worker {worker}'s recorder stopped: {e}").into(),
            }),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

type Shared = Arc<Mutex<Option<Accountant>>>;

fn with<T>(shared: &Shared, f: impl FnOnce(&mut Accountant) -> T) -> Option<T> {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .map(f)
}

struct Drive<'a> {
    run: &'a Run,
    send: PlannedSend,
    matchers: Vec<(String, Matcher)>,
    spec: &'a LoadSpec,
    opts: &'a LoadOptions,
    recorder: &'a Recorder,
}

impl Drive<'_> {
    /// Sends, receives and drains; the scenario's result and the account.
    async fn run(
        self,
        config: AccountConfig,
        mut tapped: mpsc::Receiver<Arc<Observation>>,
        scenario: &str,
    ) -> Result<(ScenarioResult, LoadReport), HarnessError> {
        let streams = config.streams;
        let total = config.profile.total();
        let interval = Duration::from_nanos(config.interval_ns);
        let accountant = Accountant::new(config);
        let window = accountant.window();
        emit(
            self.opts,
            LoadEvent::Started {
                run_id: self.run.plan.run_id.clone(),
                profile: self.opts.profile.to_string(),
                total,
                streams,
                window,
            },
        );
        let shared: Shared = Arc::new(Mutex::new(Some(accountant)));
        let start = clock::mono_now();
        let started_at = clock::wall_now();
        let since = move || clock::mono_now().saturating_sub(start);

        // Arrivals: matched against each expectation on their channel, then accounted.
        let arrived = Arc::new(Notify::new());
        let receiver = {
            let (shared, arrived) = (Arc::clone(&shared), Arc::clone(&arrived));
            let matchers = self.matchers.clone();
            tokio::spawn(async move {
                let account = |obs: Arc<Observation>| {
                    let seen = since();
                    let received = obs.received_mono.map_or(seen, |r| r.saturating_sub(start));
                    let verdicts: Vec<(usize, bool)> = matchers
                        .iter()
                        .enumerate()
                        .filter(|(_, (channel, _))| *channel == obs.channel)
                        .map(|(i, (_, m))| (i, m.matches(&obs)))
                        .collect();
                    with(&shared, |a| {
                        for (flow, matched) in verdicts {
                            a.arrive(flow, obs.correlation_id.as_deref(), matched, received, seen);
                        }
                    });
                    arrived.notify_one();
                };
                // In the order the listeners received them, not the order their
                // concurrent hand-offs completed: the harness must not reorder.
                let mut order = TapOrder::default();
                while let Some(obs) = tapped.recv().await {
                    order.push(obs, account);
                }
                order.finish(account);
            })
        };

        // Senders: one task per stream.
        let producer = self.run.plan.producers.get(&self.send.channel).cloned();
        let Some(producer) = producer else {
            receiver.abort();
            return Err(usage(format!(
                "no producer for channel `{}`",
                self.send.channel
            )));
        };
        let mut senders = JoinSet::new();
        let reach = Arc::new(Reach::default());
        for stream in 0..streams {
            senders.spawn(send_stream(
                StreamSender {
                    stream,
                    streams,
                    total,
                    start,
                    producer: Arc::clone(&producer),
                    send: self.send.clone(),
                    run: RunRef {
                        run_id: self.run.plan.run_id.clone(),
                        bindings: Arc::clone(&self.run.plan.bindings),
                    },
                    shared: Arc::clone(&shared),
                    reach: Arc::clone(&reach),
                },
                self.opts.run.cancel.clone(),
            ));
        }

        let tick = (interval / 10).clamp(Duration::from_millis(1), Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cancel = self.opts.run.cancel.clone();
        let mut closed = 0;
        let mut interrupted = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(&shared, since(), &mut closed),
                joined = senders.join_next() => if joined.is_none() { break },
                // The input is down: every sender stops now.
                () = reach.stop.notified() => break,
                () = cancelled(&mut cancel) => { interrupted = true; break }
            }
        }
        senders.abort_all();
        let send_ns = since();
        if let Some(e) = reach.stopped(&self.send.channel) {
            receiver.abort();
            return Err(e);
        }

        // Drain: until everything sent arrived or was declared lost, at most `drain`.
        let at_most = self.opts.drain.unwrap_or_else(|| {
            let horizon = with(&shared, |a| a.last_deadline_ns().saturating_sub(send_ns));
            Duration::from_nanos(horizon.unwrap_or(0))
        });
        let drain_until = send_ns.saturating_add(nanos(at_most));
        if !interrupted {
            let in_flight = with(&shared, |a| a.in_flight()).unwrap_or(0);
            emit(self.opts, LoadEvent::Draining { in_flight, at_most });
            loop {
                let now = since();
                self.tick(&shared, now, &mut closed);
                if now >= drain_until || with(&shared, |a| a.drained(now)).unwrap_or(true) {
                    break;
                }
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = arrived.notified() => {}
                    () = cancelled(&mut cancel) => { interrupted = true; break }
                }
            }
        }
        let accountant = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
        receiver.abort();
        let Some(mut accountant) = accountant else {
            return Err(usage("the load's accounting was lost".into()));
        };
        let end = since();
        accountant.close(end);
        if accountant.closed_intervals() > closed
            && let Some(last) = accountant.last_closed()
        {
            self.recorder.interval(closed, last.clone());
        }
        let mut report = accountant.finish(end, scenario, started_at, send_ns);
        report.thresholds = roundtrip_core::load::evaluate(&self.spec.thresholds, &report);
        let (status, notes) = verdict(Some(&report), interrupted);
        let result = ScenarioResult {
            name: scenario.to_owned(),
            status,
            sent: report.send.counts.attempted,
            send_errors: report.send.counts.failed,
            error: if interrupted {
                Some("interrupted: the load was stopped before its end".into())
            } else {
                report.send.first_error.clone()
            },
            expectations: Vec::new(),
            duration_ns: since(),
            notes,
        };
        Ok((result, report))
    }

    fn tick(&self, shared: &Shared, now: u64, closed: &mut u64) {
        // A tick closes at most one interval.
        let point = with(shared, |a| {
            a.tick(now);
            (a.closed_intervals() > *closed).then(|| {
                *closed = a.closed_intervals();
                (a.last_closed().cloned(), a.snapshot())
            })
        })
        .flatten();
        if let Some((Some(last), totals)) = point {
            self.recorder.interval(*closed - 1, last.clone());
            emit(
                self.opts,
                LoadEvent::Interval {
                    point: Box::new(last),
                    totals: Box::new(totals),
                },
            );
        }
    }
}

/// A load scenario's status and notes from its account: `Error` when `errored` (the
/// run was interrupted, or a worker's part is missing), else from the aggregate SLAs
/// (no account: nothing to pass); the notes name each SLA missed.
fn verdict(report: Option<&LoadReport>, errored: bool) -> (ScenarioStatus, Vec<String>) {
    let status = if errored {
        ScenarioStatus::Error
    } else if report.is_some_and(LoadReport::passed) {
        ScenarioStatus::Passed
    } else {
        ScenarioStatus::Failed
    };
    let notes = report
        .iter()
        .flat_map(|r| &r.thresholds)
        .filter(|t| !t.passed)
        .map(|t| format!("{}: {}, {}", t.what, t.actual, t.limit))
        .collect();
    (status, notes)
}

fn emit(opts: &LoadOptions, event: LoadEvent) {
    if let Some(tx) = &opts.progress {
        let _ = tx.send(event);
    }
}

/// What a stream's sender renders its events with.
struct RunRef {
    run_id: String,
    bindings: Arc<super::bindings::Bindings>,
}

struct StreamSender {
    stream: u32,
    streams: u32,
    total: u64,
    start: u64,
    producer: Arc<dyn Producer>,
    send: PlannedSend,
    run: RunRef,
    shared: Shared,
    reach: Arc<Reach>,
}

/// Sends stream `s.stream`'s events in order, each at its intended time.
async fn send_stream(s: StreamSender, mut cancel: watch::Receiver<bool>) {
    let mut seq = 0u64;
    loop {
        let index = seq * u64::from(s.streams) + u64::from(s.stream);
        if index >= s.total {
            return;
        }
        let Some((intended, id)) = with(&s.shared, |a| {
            (
                a.profile().intended_ns(index),
                a.id_of(s.stream, seq).to_string(),
            )
        }) else {
            return;
        };
        let due = tokio::time::Instant::from_std(clock::instant_of(s.start + intended));
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = cancelled(&mut cancel) => return,
        }
        let now = clock::mono_now().saturating_sub(s.start);
        let refused = with(&s.shared, |a| {
            if a.at_cap() {
                a.refuse(s.stream, seq, now);
                true
            } else {
                a.attempt(s.stream, seq, now);
                false
            }
        });
        match refused {
            None => return,
            Some(true) => {}
            Some(false) => {
                let ctx = EventContext {
                    run_id: &s.run.run_id,
                    correlation_id: &id,
                    seq: index,
                    stream: u64::from(s.stream),
                    bindings: &s.run.bindings,
                };
                let error = match s.send.message.render(&ctx) {
                    Ok(message) => {
                        let outcome = s.producer.send(message).await.map(drop);
                        if s.reach.note(&outcome) {
                            // The input is down: the driver stops the load.
                            return;
                        }
                        outcome.err().map(|e| shown_error(&e))
                    }
                    Err(e) => Some(e),
                };
                if let Some(error) = error {
                    with(&s.shared, |a| a.fail(s.stream, seq, &error));
                }
            }
        }
        seq += 1;
    }
}
