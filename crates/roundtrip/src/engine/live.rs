//! A run kept open for a client that drives it step by step (`roundtrip serve`, the
//! pytest plugin): set up once (listeners, producers, the SUT), then scenarios run by
//! name and hand-written tests ([`Scope`]) that send events and wait on expectations
//! one call at a time, then torn down and summarised like any run.
//!
//! Everything a scope waits on comes through the same router as a scenario's: each
//! event's correlation id is routed to the scope before the event is produced, so an
//! observation that arrives before the client asks is kept, and an expectation asked
//! for later judges it by its receive time, against the event's send time. Waiting is
//! push, as for scenarios: the store's feed wakes the scope, deadlines are judged
//! [`COMMIT_SLACK`] after they pass.
//!
//! What a client sends and expects is checked by the suite loader itself: the step or
//! expectation is put in a one-scenario copy of the suite, which is loaded with the
//! run's variables, so the engine refuses exactly what a suite file would, and a send's
//! `{{ env("…") }}` reads what the suite's own sends read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use roundtrip_core::escape::escape_text;
use roundtrip_core::expect::{ExpectationMachine, SentRef};
use roundtrip_core::matcher::Matcher;
use roundtrip_core::model::{Expectation, Scenario, SendStep};
use roundtrip_core::observation::{Observation, SentEvent};
use roundtrip_core::run::{RunSummary, ScenarioResult, ScenarioStatus};
use roundtrip_core::suite::{self, LoadedSuite, did_you_mean};
use roundtrip_core::vars::Vars;
use roundtrip_core::verdict::ExpectationVerdict;
use tokio::sync::{mpsc, watch};

use super::plan::{LiveChannels, Plan, PlannedScenario, PlannedSend};
use super::produce::{self, MessageTemplate};
use super::router::{Evidence, Inbox};
use super::scenario::{self, COMMIT_SLACK, SendTally, nanos, sleep_until_opt};
use super::session::Session;
use super::{Run, RunEvent, RunOptions, cancelled, emit, shown_error};
use crate::clock;
use crate::error::HarnessError;
use crate::store::Store;
use crate::transport::{Producer, registry};

/// How many uncorrelated observations a scope keeps as near-miss evidence (the first
/// ones after its last expectation; more are dropped, not queued).
const UNCORRELATED_KEPT: usize = 256;

/// Why a step of a live run could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The client asked for something the suite does not have, or cannot do (an unknown
    /// scenario or channel, an expectation without a window): a usage error.
    #[error("{0}")]
    Usage(String),
    /// The harness failed (a listener, the store, the SUT, a producer's connection).
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The wait was cancelled: by the client, by the test's end, or by the run's close.
    #[error("cancelled")]
    Cancelled,
}

impl From<crate::store::StoreError> for LiveError {
    fn from(e: crate::store::StoreError) -> Self {
        LiveError::Harness(e.into())
    }
}

/// A suite's run, set up and open for scenarios and scopes until [`LiveRun::close`].
pub struct LiveRun {
    run_id: String,
    suite: String,
    /// The suite as loaded, and the variables it was loaded with: what a client's steps
    /// are checked and resolved against.
    loaded: LoadedSuite,
    vars: Vars,
    run: tokio::sync::Mutex<Option<Run>>,
    session: Arc<Session>,
    scenarios: Vec<PlannedScenario>,
    channels: LiveChannels,
    listened: BTreeSet<String>,
    extra_producers: tokio::sync::Mutex<BTreeMap<String, Arc<dyn Producer>>>,
    results: Mutex<Vec<ScenarioResult>>,
    /// How many times each scenario or test name was taken, so that a second one is
    /// recorded apart (`name #2`), not over the first.
    names: Mutex<HashMap<String, u32>>,
    /// Held (shared) by every step that records into the run; `close` takes it whole,
    /// so that nothing is recorded after the summary.
    gate: tokio::sync::RwLock<()>,
    closing: watch::Sender<bool>,
    closed: AtomicBool,
    /// The first result the store refused: the run is a harness error when it closes.
    store_error: Mutex<Option<HarnessError>>,
    opts: RunOptions,
}

impl std::fmt::Debug for LiveRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRun")
            .field("run_id", &self.run_id)
            .field("suite", &self.suite)
            .field("listened", &self.listened)
            .finish_non_exhaustive()
    }
}

/// "suite `s` has no channel `x` (it has …); did you mean …?"
fn no_channel<'a>(
    suite: &str,
    channels: impl Iterator<Item = &'a String> + Clone,
    name: &str,
) -> String {
    let names = channels.map(String::as_str);
    let hint = did_you_mean(name, names.clone())
        .map(|h| format!("; {h}"))
        .unwrap_or_default();
    format!(
        "suite `{suite}` has no channel `{}` (it has {}){hint}",
        escape_text(name),
        roundtrip_core::suite::list(names)
    )
}

/// A receiver that turns true when either `a` or `b` does (and never, if both are
/// dropped without).
fn either(a: &watch::Receiver<bool>, b: &watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow() || *b.borrow());
    let (mut a, mut b) = (a.clone(), b.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = cancelled(&mut a) => {}
            () = cancelled(&mut b) => {}
            () = tx.closed() => return,
        }
        let _ = tx.send(true);
    });
    rx
}

impl LiveRun {
    /// Plans the run, opens it in the store, starts its listeners (those its scenarios
    /// expect on and its SUT names, and `listen`), connects the producers and starts the
    /// SUT. `vars` are the variables the suite was loaded with. A set-up that fails is
    /// recorded as the run's error.
    pub async fn open(
        loaded: &LoadedSuite,
        vars: Vars,
        store: Arc<dyn Store>,
        listen: &[String],
        opts: RunOptions,
    ) -> Result<LiveRun, LiveError> {
        let suite = &loaded.suite;
        for name in listen {
            let Some(spec) = suite.channels.get(name) else {
                return Err(LiveError::Usage(no_channel(
                    &suite.name,
                    suite.channels.keys(),
                    name,
                )));
            };
            if !spec.capabilities().listen {
                return Err(LiveError::Usage(format!(
                    "channel `{}` is a `{}` channel, which cannot be listened on",
                    escape_text(name),
                    spec.transport()
                )));
            }
        }
        let mut plan = Plan::live(loaded, uuid::Uuid::now_v7().to_string(), listen)?;
        let channels = plan.live.take().ok_or_else(|| HarnessError::Template {
            what: "the live plan".into(),
            message: "it has no channels".into(),
        })?;
        let scenarios = plan.scenarios.clone();
        let listened: BTreeSet<String> = plan.listeners.iter().map(|l| l.channel.clone()).collect();
        let mut run = Run::open(plan, store, &opts, false).await?;
        match run.set_up(&opts).await {
            Ok(true) => {}
            Ok(false) => {
                run.tear_down(&opts).await;
                let _ = run.summarise(None, &opts).await;
                return Err(LiveError::Cancelled);
            }
            Err(e) => {
                run.tear_down(&opts).await;
                // `summarise` with a failure always answers with that failure.
                return Err(run
                    .summarise(Some(e), &opts)
                    .await
                    .err()
                    .map_or(LiveError::Cancelled, LiveError::Harness));
            }
        }
        let session = Arc::new(run.session());
        let (closing, _) = watch::channel(false);
        Ok(LiveRun {
            run_id: run.plan.run_id.clone(),
            suite: run.plan.suite.clone(),
            loaded: loaded.clone(),
            vars,
            run: tokio::sync::Mutex::new(Some(run)),
            session,
            scenarios,
            channels,
            listened,
            extra_producers: tokio::sync::Mutex::default(),
            results: Mutex::default(),
            names: Mutex::default(),
            gate: tokio::sync::RwLock::new(()),
            closing,
            closed: AtomicBool::new(false),
            store_error: Mutex::default(),
            opts,
        })
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The suite's name.
    pub fn suite(&self) -> &str {
        &self.suite
    }

    /// The channels listened on.
    pub fn listened(&self) -> impl Iterator<Item = &str> {
        self.listened.iter().map(String::as_str)
    }

    fn refuse_if_closed(&self) -> Result<(), LiveError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(LiveError::Usage(format!(
                "run {} is closed (or closing): open the suite again",
                self.run_id
            )));
        }
        Ok(())
    }

    /// `name`, or `name #N` for its N-th use in the run: a scenario run twice, or a
    /// test re-run (pytest-rerunfailures), is recorded apart, not over the first.
    fn unique_name(&self, name: &str) -> String {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let n = names.entry(name.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1 {
            name.to_owned()
        } else {
            format!("{name} #{n}")
        }
    }

    /// Runs the suite's scenario `name` to its verdict and records it. A wait cancelled
    /// (by the client or the run's close) is recorded as the scenario's error and
    /// answered with [`LiveError::Cancelled`].
    pub async fn run_scenario(
        &self,
        name: &str,
        cancel: watch::Receiver<bool>,
    ) -> Result<ScenarioResult, LiveError> {
        let _open = self.gate.read().await;
        self.refuse_if_closed()?;
        let Some(planned) = self.scenarios.iter().find(|s| s.name == name) else {
            let hint = did_you_mean(name, self.scenarios.iter().map(|s| s.name.as_str()))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(LiveError::Usage(format!(
                "suite `{}` has no scenario `{}`{hint}",
                self.suite,
                escape_text(name)
            )));
        };
        let mut planned = planned.clone();
        planned.name = self.unique_name(name);
        emit(
            &self.opts,
            RunEvent::ScenarioStarted {
                name: planned.name.clone(),
            },
        );
        let cancel = either(&cancel, &self.closing.subscribe());
        let result = scenario::run(Arc::clone(&self.session), &planned, cancel.clone()).await;
        self.record(&result).await?;
        let interrupted = *cancel.borrow() && result.status == ScenarioStatus::Error;
        if interrupted {
            return Err(LiveError::Cancelled);
        }
        Ok(result)
    }

    /// Records a result in the store and the run's summary; a result the store refused
    /// makes the run a harness error when it closes.
    async fn record(&self, result: &ScenarioResult) -> Result<(), LiveError> {
        if let Err(e) = self
            .session
            .store
            .record_scenario(&self.run_id, result)
            .await
        {
            // The run keeps a copy of the failure for its summary; the client gets it.
            let kept = crate::store::StoreError::Io {
                operation: "record a result",
                source: shown_error(&e).into(),
            };
            self.store_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(HarnessError::Store(kept));
            return Err(e.into());
        }
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(result.clone());
        emit(&self.opts, RunEvent::ScenarioFinished(result.clone()));
        Ok(())
    }

    /// Starts a hand-written test named `name`: what it sends is tied to it, and its
    /// verdicts are recorded as a scenario of that name (`name #2` for a second test of
    /// that name) when it ends.
    pub fn begin(self: &Arc<Self>, name: &str) -> Result<Scope, LiveError> {
        self.refuse_if_closed()?;
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (evidence_tx, evidence) = mpsc::channel(UNCORRELATED_KEPT);
        self.session.router.watch_into(
            self.listened.iter().cloned().collect(),
            Evidence::Bounded(evidence_tx),
        );
        let (stop, stopped) = watch::channel(false);
        Ok(Scope {
            live: Arc::clone(self),
            name: self.unique_name(name),
            inbox_tx,
            inbox,
            evidence,
            sent: Vec::new(),
            tally: SendTally::default(),
            interrupted: Arc::new(AtomicBool::new(false)),
            seen: Vec::new(),
            uncorrelated: VecDeque::new(),
            verdicts: Vec::new(),
            started: clock::mono_now(),
            stop: Arc::new(stop),
            stopped,
        })
    }

    /// Tears the run down (the SUT, then the listeners) and records its summary: the
    /// scenarios and tests that ended, in the order they ended. Waits in progress are
    /// cancelled first, and nothing is recorded into the run afterwards. `interrupted`
    /// marks a run its client left early.
    pub async fn close(&self, interrupted: bool) -> Result<RunSummary, LiveError> {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.closing.send(true);
        let _closed = self.gate.write().await;
        let Some(mut run) = self.run.lock().await.take() else {
            return Err(LiveError::Usage(format!(
                "run {} is already closed",
                self.run_id
            )));
        };
        run.summary.scenarios =
            std::mem::take(&mut *self.results.lock().unwrap_or_else(PoisonError::into_inner));
        run.summary.interrupted = interrupted;
        run.tear_down(&self.opts).await;
        let failure = self
            .store_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Ok(run.summarise(failure, &self.opts).await?)
    }

    /// The producer for a send to `channel`: the plan's, or one built (and connected)
    /// on the first send to a channel no scenario sends to.
    async fn producer(&self, channel: &str) -> Result<Arc<dyn Producer>, LiveError> {
        if let Some(p) = self.session.producers.get(channel) {
            return Ok(Arc::clone(p));
        }
        let mut extra = self.extra_producers.lock().await;
        if let Some(p) = extra.get(channel) {
            return Ok(Arc::clone(p));
        }
        let spec = self.channels.channels.get(channel).ok_or_else(|| {
            LiveError::Usage(no_channel(&self.suite, std::iter::empty(), channel))
        })?;
        let producer: Arc<dyn Producer> = registry::producer(channel, spec, &self.channels.ctx)
            .map_err(|e| LiveError::Harness(e.into()))?
            .into();
        producer
            .connect()
            .await
            .map_err(|e| LiveError::Harness(HarnessError::Connect(e)))?;
        extra.insert(channel.to_owned(), Arc::clone(&producer));
        Ok(producer)
    }

    /// `step` or `e` checked as the suite loader checks a suite file's, in a copy of the
    /// suite that holds only them, and resolved with the run's variables; the scenario
    /// as loaded.
    fn checked(
        &self,
        step: Option<&SendStep>,
        e: Option<&Expectation>,
    ) -> Result<Scenario, LiveError> {
        let mut copy = self.loaded.suite.clone();
        copy.scenarios = vec![Scenario {
            name: "the request".into(),
            tags: Vec::new(),
            send: step.into_iter().cloned().collect(),
            expect: e.into_iter().cloned().collect(),
            load: None,
        }];
        let text = serde_json::to_string(&copy)
            .map_err(|err| LiveError::Usage(format!("the request cannot be checked: {err}")))?;
        match suite::parse_with("the request", &text, &self.vars) {
            Ok(mut parsed) => parsed
                .scenarios
                .pop()
                .ok_or_else(|| LiveError::Usage("the request holds nothing".into())),
            Err(err) => Err(LiveError::Usage(
                err.diagnostics
                    .iter()
                    .map(|d| match &d.help {
                        Some(help) => format!("{} ({help})", d.message),
                        None => d.message.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

/// What an expectation of a scope came to.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The verdict, with its evidence when it failed.
    pub verdict: ExpectationVerdict,
    /// The observations that matched, correlated with the events it judged, in
    /// sequence order.
    pub observations: Vec<Arc<Observation>>,
}

/// How a client says its test went, beside roundtrip's own verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// The test passed, as far as the client knows.
    Passed,
    /// The test failed for a reason of its own (an assertion), with that reason.
    Failed(String),
    /// The test was skipped.
    Skipped(String),
}

/// Stops a scope's wait from outside it (its test's end, the client going away).
#[derive(Debug, Clone)]
pub struct ScopeStop(Arc<watch::Sender<bool>>, Arc<AtomicBool>);

impl ScopeStop {
    /// Cancels the scope's wait in progress, and every later one.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }

    /// Turns true once the scope is stopped.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Marks the test interrupted: a wait of it was cancelled before it could start.
    pub fn interrupted(&self) {
        self.1.store(true, Ordering::SeqCst);
    }
}

/// A hand-written test within a live run: sends, then expectations on what they caused.
#[derive(Debug)]
pub struct Scope {
    live: Arc<LiveRun>,
    name: String,
    inbox_tx: Inbox,
    inbox: mpsc::UnboundedReceiver<Arc<Observation>>,
    evidence: mpsc::Receiver<Arc<Observation>>,
    sent: Vec<SentEvent>,
    tally: SendTally,
    /// A wait was cancelled: the test's verdicts are not the system's. Shared with its
    /// [`ScopeStop`], so that a wait cancelled before it could start counts too.
    interrupted: Arc<AtomicBool>,
    /// Every observation correlated with one of its events, in arrival order.
    seen: Vec<Arc<Observation>>,
    /// The most recent uncorrelated observations on the listened channels.
    uncorrelated: VecDeque<Arc<Observation>>,
    verdicts: Vec<ExpectationVerdict>,
    started: u64,
    stop: Arc<watch::Sender<bool>>,
    stopped: watch::Receiver<bool>,
}

impl Scope {
    /// The test's name, as it is recorded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What stops this scope's waits from outside it.
    pub fn stopper(&self) -> ScopeStop {
        ScopeStop(Arc::clone(&self.stop), Arc::clone(&self.interrupted))
    }

    /// Sends one event as `step` describes (its strings are templates, as in a suite:
    /// `{{ correlation_id }}`, `{{ run_id }}`, `{{ uuid() }}`…; `repeat` and
    /// `concurrency` must be 1). The event is recorded whether or not the transport
    /// accepted it; its `error` says why not.
    pub async fn send(&mut self, step: &SendStep) -> Result<SentEvent, LiveError> {
        let live = Arc::clone(&self.live);
        let _open = live.gate.read().await;
        live.refuse_if_closed()?;
        if step.repeat != 1 || step.concurrency != 1 {
            return Err(LiveError::Usage(
                "a test sends one event per `send`: `repeat` and `concurrency` must be 1 \
                 (send in a loop for more)"
                    .into(),
            ));
        }
        let Some(spec) = live.channels.channels.get(&step.to) else {
            return Err(LiveError::Usage(no_channel(
                &live.suite,
                live.channels.channels.keys(),
                &step.to,
            )));
        };
        let mut checked = live.checked(Some(step), None)?;
        let step = checked
            .send
            .pop()
            .ok_or_else(|| LiveError::Usage("the request holds no send".into()))?;
        let message = MessageTemplate::compile(&step, spec, &live.channels.correlate)
            .map_err(LiveError::Usage)?;
        let producer = live.producer(&step.to).await?;
        self.take_arrived();
        let correlation_id = produce::new_correlation_id();
        live.session.router.route(&correlation_id, &self.inbox_tx);
        let send = PlannedSend {
            channel: step.to.clone(),
            repeat: 1,
            concurrency: 1,
            message: Arc::new(message),
        };
        let index = self.sent.len() as u64;
        let sent = live
            .session
            .send_via(Some(&producer), &self.name, &send, index, correlation_id)
            .await;
        match &sent.event.error {
            Some(error) => self.tally.failed(Some(error)),
            None => self.tally.sent(sent.took),
        }
        self.sent.push(sent.event.clone());
        Ok(sent.event)
    }

    /// Waits for `e` to be decided for the events sent so far (or those whose
    /// correlation ids `events` names): a verdict either way, or an error if it cannot
    /// be asked or the wait is cancelled (`cancel`, the scope's [`ScopeStop`], the
    /// run's close), which marks the test interrupted.
    pub async fn expect(
        &mut self,
        e: &Expectation,
        events: Option<&[String]>,
        cancel: watch::Receiver<bool>,
    ) -> Result<Expected, LiveError> {
        let live = Arc::clone(&self.live);
        let _open = live.gate.read().await;
        live.refuse_if_closed()?;
        if !live.listened.contains(&e.on) {
            let why = match live.channels.channels.get(&e.on) {
                None => no_channel(&live.suite, live.channels.channels.keys(), &e.on),
                Some(spec) if !spec.capabilities().listen => format!(
                    "channel `{}` is a `{}` channel, which can only be sent to",
                    e.on,
                    spec.transport()
                ),
                Some(_) => format!(
                    "channel `{}` is not listened on in this run (it listens on {}): name it \
                     among the channels to listen on when the suite is opened",
                    e.on,
                    roundtrip_core::suite::list(live.listened())
                ),
            };
            return Err(LiveError::Usage(why));
        }
        let e = live
            .checked(None, Some(e))?
            .expect
            .pop()
            .ok_or_else(|| LiveError::Usage("the request holds no expectation".into()))?;
        let mut machine = ExpectationMachine::new(self.verdicts.len(), &e)
            .map_err(|err| LiveError::Usage(err.to_string()))?;
        let matcher = Matcher::compile(&e).map_err(|err| LiveError::Usage(err.to_string()))?;
        let judged: Vec<&SentEvent> = match events {
            None => self.sent.iter().collect(),
            Some(ids) => {
                let mut judged = Vec::with_capacity(ids.len());
                for id in ids {
                    match self.sent.iter().find(|ev| &ev.correlation_id == id) {
                        Some(ev) => judged.push(ev),
                        None => {
                            return Err(LiveError::Usage(format!(
                                "`{}` is not the correlation id of an event this test sent",
                                escape_text(id)
                            )));
                        }
                    }
                }
                judged
            }
        };
        if judged.is_empty() {
            return Err(LiveError::Usage(
                "nothing to expect of: this test has sent no event yet (send first; each \
                 expectation applies to each event sent before it)"
                    .into(),
            ));
        }
        let ids: HashSet<String> = judged.iter().map(|ev| ev.correlation_id.clone()).collect();
        for ev in &judged {
            if ev.error.is_some() {
                machine.on_not_sent(&ev.correlation_id, ev.index);
            } else {
                machine.on_sent(SentRef {
                    correlation_id: &ev.correlation_id,
                    index: ev.index,
                    sent_mono: ev.sent_mono,
                    sent_at: ev.sent_at,
                });
            }
        }
        machine.sends_complete();
        // Only the judged events' observations, and the uncorrelated ones, are the
        // machine's: another event of the test is not "someone else's".
        let concerns = |o: &Observation| {
            o.channel == e.on && o.correlation_id.as_ref().is_none_or(|id| ids.contains(id))
        };

        // What arrived before the question, in sequence order, then what arrives.
        self.take_arrived();
        let mut before: Vec<&Arc<Observation>> = self
            .seen
            .iter()
            .chain(self.uncorrelated.iter())
            .filter(|o| concerns(o))
            .collect();
        before.sort_by_key(|o| o.seq);
        for obs in before {
            machine.on_observation(obs);
        }
        let mut cancel = either(&either(&cancel, &self.stopped), &live.closing.subscribe());
        while machine.verdict().is_none() {
            let wake = machine
                .next_deadline()
                .map(|d| clock::instant_of(d) + COMMIT_SLACK);
            tokio::select! {
                biased;
                () = cancelled(&mut cancel) => {
                    self.interrupted.store(true, Ordering::SeqCst);
                    return Err(LiveError::Cancelled);
                }
                Some(obs) = self.inbox.recv() => {
                    self.seen.push(Arc::clone(&obs));
                    if concerns(&obs) {
                        machine.on_observation(&obs);
                    }
                }
                Some(obs) = self.evidence.recv() => {
                    if concerns(&obs) {
                        machine.on_observation(&obs);
                    }
                    self.keep_uncorrelated(obs);
                }
                () = sleep_until_opt(wake) => {
                    for obs in self.take_arrived() {
                        if concerns(&obs) {
                            machine.on_observation(&obs);
                        }
                    }
                    machine.on_tick(clock::mono_now().saturating_sub(nanos(COMMIT_SLACK)));
                }
            }
        }
        let Some(verdict) = machine.verdict().cloned() else {
            return Err(LiveError::Cancelled);
        };
        self.verdicts.push(verdict.clone());
        let mut observations: Vec<Arc<Observation>> = self
            .seen
            .iter()
            .filter(|o| {
                o.channel == e.on
                    && o.correlation_id.as_ref().is_some_and(|id| ids.contains(id))
                    && matcher.matches(o)
            })
            .cloned()
            .collect();
        observations.sort_by_key(|o| o.seq);
        Ok(Expected {
            verdict,
            observations,
        })
    }

    /// Moves what the router delivered meanwhile into `seen` and `uncorrelated`, and
    /// returns it.
    fn take_arrived(&mut self) -> Vec<Arc<Observation>> {
        let mut arrived = Vec::new();
        while let Ok(obs) = self.inbox.try_recv() {
            self.seen.push(Arc::clone(&obs));
            arrived.push(obs);
        }
        while let Ok(obs) = self.evidence.try_recv() {
            self.keep_uncorrelated(Arc::clone(&obs));
            arrived.push(obs);
        }
        arrived.sort_by_key(|o| o.seq);
        arrived
    }

    fn keep_uncorrelated(&mut self, obs: Arc<Observation>) {
        if self.uncorrelated.len() == UNCORRELATED_KEPT {
            self.uncorrelated.pop_front();
        }
        self.uncorrelated.push_back(obs);
    }

    /// Ends the test: its routes are forgotten and its result is recorded as a scenario
    /// of the run. Its status is a scenario's (an interrupted wait or a failed send is
    /// an error, then a failed expectation fails it), with the client's own outcome on
    /// top: a test that passed here but failed on the client's side is failed, with its
    /// reason; a skipped one is skipped unless roundtrip found a failure.
    pub async fn end(self, outcome: TestOutcome) -> Result<ScenarioResult, LiveError> {
        let live = Arc::clone(&self.live);
        let _open = live.gate.read().await;
        live.session
            .router
            .unroute(self.sent.iter().map(|ev| ev.correlation_id.as_str()));
        let failed = self.verdicts.iter().any(|v| !v.passed());
        let interrupted = self.interrupted.load(Ordering::SeqCst);
        let (mut status, mut error) = self.tally.outcome(interrupted, failed);
        let mut notes = self.tally.notes();
        match outcome {
            TestOutcome::Passed => {}
            TestOutcome::Skipped(why) if status == ScenarioStatus::Passed => {
                status = ScenarioStatus::Skipped;
                error = Some(why);
            }
            TestOutcome::Failed(why) if status == ScenarioStatus::Passed => {
                status = ScenarioStatus::Failed;
                error = Some(why);
            }
            TestOutcome::Skipped(why) | TestOutcome::Failed(why) => {
                notes.push(format!("the test's own outcome: {why}"));
            }
        }
        let result = ScenarioResult {
            name: self.name.clone(),
            status,
            sent: self.sent.len() as u64,
            send_errors: self.sent.iter().filter(|ev| ev.error.is_some()).count() as u64,
            error: error.map(|e| roundtrip_core::escape::escape_lines(&e)),
            expectations: self.verdicts,
            duration_ns: clock::mono_now().saturating_sub(self.started),
            notes: notes
                .iter()
                .map(|n| roundtrip_core::escape::escape_lines(n))
                .collect(),
        };
        live.record(&result).await?;
        Ok(result)
    }
}
