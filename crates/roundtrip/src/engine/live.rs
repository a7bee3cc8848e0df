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

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use roundtrip_core::expect::{ExpectationMachine, SentRef};
use roundtrip_core::matcher::Matcher;
use roundtrip_core::model::{Expectation, SendStep};
use roundtrip_core::observation::{Observation, SentEvent};
use roundtrip_core::run::{RunSummary, ScenarioResult, ScenarioStatus};
use roundtrip_core::suite::{LoadedSuite, did_you_mean};
use roundtrip_core::verdict::ExpectationVerdict;
use tokio::sync::{mpsc, watch};

use super::plan::{LiveChannels, Plan, PlannedScenario, PlannedSend};
use super::produce::{self, MessageTemplate};
use super::router::Inbox;
use super::scenario::{self, COMMIT_SLACK, nanos, sleep_until_opt};
use super::session::Session;
use super::{Run, RunEvent, RunOptions, emit};
use crate::clock;
use crate::error::HarnessError;
use crate::store::Store;
use crate::transport::{Producer, registry};

/// How many uncorrelated observations a scope keeps as near-miss evidence (the most
/// recent ones).
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
    /// The client cancelled the wait.
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
    run: tokio::sync::Mutex<Option<Run>>,
    session: Arc<Session>,
    scenarios: Vec<PlannedScenario>,
    channels: LiveChannels,
    listened: BTreeSet<String>,
    extra_producers: tokio::sync::Mutex<BTreeMap<String, Arc<dyn Producer>>>,
    results: Mutex<Vec<ScenarioResult>>,
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

/// The channels a live run listens on when the client names none: every channel that
/// can be listened on and that no scenario sends to.
pub fn default_listened(loaded: &LoadedSuite) -> Vec<String> {
    let suite = &loaded.suite;
    let sent_to: BTreeSet<&str> = suite
        .scenarios
        .iter()
        .flat_map(|s| s.send.iter().map(|step| step.to.as_str()))
        .collect();
    suite
        .channels
        .iter()
        .filter(|(name, spec)| spec.capabilities().listen && !sent_to.contains(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect()
}

impl LiveRun {
    /// Plans the run, opens it in the store, starts its listeners (those its scenarios
    /// and SUT need, and `listen`, by default [`default_listened`]), connects the
    /// producers and starts the SUT. A set-up that fails is recorded as the run's error.
    pub async fn open(
        loaded: &LoadedSuite,
        store: Arc<dyn Store>,
        listen: Option<&[String]>,
        opts: RunOptions,
    ) -> Result<LiveRun, LiveError> {
        let suite = &loaded.suite;
        let listen = match listen {
            None => default_listened(loaded),
            Some(names) => {
                for name in names {
                    let Some(spec) = suite.channels.get(name) else {
                        return Err(LiveError::Usage(no_channel(
                            &suite.name,
                            suite.channels.keys(),
                            name,
                        )));
                    };
                    if !spec.capabilities().listen {
                        return Err(LiveError::Usage(format!(
                            "channel `{name}` is a `{}` channel, which cannot be listened on",
                            spec.transport()
                        )));
                    }
                }
                names.to_vec()
            }
        };
        let mut plan = Plan::live(loaded, uuid::Uuid::now_v7().to_string(), &listen)?;
        let Some(channels) = plan.live.take() else {
            return Err(LiveError::Usage("the plan is not a live one".into()));
        };
        let scenarios = plan.scenarios.clone();
        let listened: BTreeSet<String> = plan.listeners.iter().map(|l| l.channel.clone()).collect();
        let mut run = Run::open(plan, store, &opts).await?;
        match run.set_up(&opts).await {
            Ok(true) => {}
            Ok(false) => {
                run.tear_down(&opts).await;
                let _ = run.summarise(None, &opts).await;
                return Err(LiveError::Cancelled);
            }
            Err(e) => {
                run.tear_down(&opts).await;
                let e = match run.summarise(Some(e), &opts).await {
                    Err(e) => e,
                    Ok(_) => HarnessError::Sut {
                        message: "the run could not be set up".into(),
                    },
                };
                return Err(e.into());
            }
        }
        let session = Arc::new(Session {
            run_id: run.plan.run_id.clone(),
            store: Arc::clone(&run.store),
            producers: run.plan.producers.clone(),
            router: Arc::clone(&run.router),
            bindings: Arc::clone(&run.plan.bindings),
        });
        Ok(LiveRun {
            run_id: run.plan.run_id.clone(),
            suite: run.plan.suite.clone(),
            run: tokio::sync::Mutex::new(Some(run)),
            session,
            scenarios,
            channels,
            listened,
            extra_producers: tokio::sync::Mutex::default(),
            results: Mutex::default(),
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

    /// Every channel of the suite with its transport.
    pub fn channels(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.channels
            .channels
            .iter()
            .map(|(name, spec)| (name.as_str(), spec.transport()))
    }

    /// Runs the suite's scenario `name` to its verdict and records it. A cancelled wait
    /// is recorded as the scenario's error and answered with [`LiveError::Cancelled`].
    pub async fn run_scenario(
        &self,
        name: &str,
        cancel: watch::Receiver<bool>,
    ) -> Result<ScenarioResult, LiveError> {
        let Some(planned) = self.scenarios.iter().find(|s| s.name == name) else {
            let hint = did_you_mean(name, self.scenarios.iter().map(|s| s.name.as_str()))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(LiveError::Usage(format!(
                "suite `{}` has no scenario `{name}`{hint}",
                self.suite
            )));
        };
        emit(
            &self.opts,
            RunEvent::ScenarioStarted {
                name: name.to_owned(),
            },
        );
        let result = scenario::run(Arc::clone(&self.session), planned, cancel.clone()).await;
        self.record(&result).await?;
        if *cancel.borrow() {
            return Err(LiveError::Cancelled);
        }
        Ok(result)
    }

    async fn record(&self, result: &ScenarioResult) -> Result<(), LiveError> {
        self.session
            .store
            .record_scenario(&self.run_id, result)
            .await?;
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(result.clone());
        emit(&self.opts, RunEvent::ScenarioFinished(result.clone()));
        Ok(())
    }

    /// Starts a hand-written test named `name`: what it sends is tied to it, and its
    /// verdicts are recorded as a scenario of that name when it ends.
    pub fn begin(self: &Arc<Self>, name: &str) -> Scope {
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (evidence_tx, evidence) = mpsc::unbounded_channel();
        self.session
            .router
            .watch(self.listened.iter().cloned().collect(), &evidence_tx);
        Scope {
            live: Arc::clone(self),
            name: name.to_owned(),
            inbox_tx,
            inbox,
            evidence,
            sent: Vec::new(),
            send_errors: 0,
            first_error: None,
            seen: Vec::new(),
            uncorrelated: VecDeque::new(),
            verdicts: Vec::new(),
            started: clock::mono_now(),
        }
    }

    /// Tears the run down (the SUT, then the listeners) and records its summary: the
    /// scenarios and scopes that ran, in the order they finished. `interrupted` marks a
    /// run its client left early.
    pub async fn close(&self, interrupted: bool) -> Result<RunSummary, LiveError> {
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
        Ok(run.summarise(None, &self.opts).await?)
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
        let spec = self
            .channels
            .channels
            .get(channel)
            .ok_or_else(|| LiveError::Usage(format!("no channel `{channel}`")))?;
        let producer: Arc<dyn Producer> = registry::producer(channel, spec, &self.channels.ctx)
            .map_err(|e| LiveError::Usage(e.to_string()))?
            .into();
        producer
            .connect()
            .await
            .map_err(|e| LiveError::Harness(HarnessError::Connect(e)))?;
        extra.insert(channel.to_owned(), Arc::clone(&producer));
        Ok(producer)
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
        "suite `{suite}` has no channel `{name}` (it has {}){hint}",
        roundtrip_core::suite::list(names)
    )
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

/// A hand-written test within a live run: sends, then expectations on what they caused.
#[derive(Debug)]
pub struct Scope {
    live: Arc<LiveRun>,
    name: String,
    inbox_tx: Inbox,
    inbox: mpsc::UnboundedReceiver<Arc<Observation>>,
    evidence: mpsc::UnboundedReceiver<Arc<Observation>>,
    sent: Vec<SentEvent>,
    send_errors: u64,
    first_error: Option<String>,
    /// Every observation correlated with one of its events, in arrival order.
    seen: Vec<Arc<Observation>>,
    /// The most recent uncorrelated observations on the listened channels.
    uncorrelated: VecDeque<Arc<Observation>>,
    verdicts: Vec<ExpectationVerdict>,
    started: u64,
}

impl Scope {
    /// The test's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one event as `step` describes (its strings are templates, as in a suite:
    /// `{{ correlation_id }}`, `{{ run_id }}`, `{{ uuid() }}`…). The event is recorded
    /// whether or not the transport accepted it; its `error` says why not.
    pub async fn send(&mut self, step: &SendStep) -> Result<SentEvent, LiveError> {
        let live = Arc::clone(&self.live);
        let Some(spec) = live.channels.channels.get(&step.to) else {
            return Err(LiveError::Usage(no_channel(
                &live.suite,
                live.channels.channels.keys(),
                &step.to,
            )));
        };
        if !spec.capabilities().produce {
            return Err(LiveError::Usage(format!(
                "channel `{}` is a `{}` channel, which can only be listened on, not sent to",
                step.to,
                spec.transport()
            )));
        }
        let bodies = [
            step.body.is_some(),
            step.text.is_some(),
            step.base64.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err(LiveError::Usage(
                "give one of `body` (JSON), `text` or `base64`, or none for an empty body".into(),
            ));
        }
        let message = MessageTemplate::compile(step, spec, &live.channels.correlate)
            .map_err(LiveError::Usage)?;
        let producer = live.producer(&step.to).await?;
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
        if let Some(error) = &sent.event.error {
            self.send_errors += 1;
            self.first_error.get_or_insert_with(|| error.clone());
        }
        self.sent.push(sent.event.clone());
        Ok(sent.event)
    }

    /// Waits for `e` to be decided for the events sent so far (or those whose
    /// correlation ids `events` names): a verdict either way, or an error if it cannot
    /// be asked or the wait is cancelled.
    pub async fn expect(
        &mut self,
        e: &Expectation,
        events: Option<&[String]>,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<Expected, LiveError> {
        let live = Arc::clone(&self.live);
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
        let mut machine = ExpectationMachine::new(self.verdicts.len(), e)
            .map_err(|err| LiveError::Usage(err.to_string()))?;
        let matcher = Matcher::compile(e).map_err(|err| LiveError::Usage(err.to_string()))?;
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
                                roundtrip_core::escape::escape_text(id)
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

        // What arrived before the question, in sequence order, then what arrives.
        self.take_arrived();
        let mut before: Vec<&Arc<Observation>> = self
            .seen
            .iter()
            .chain(self.uncorrelated.iter())
            .filter(|o| o.channel == e.on)
            .collect();
        before.sort_by_key(|o| o.seq);
        for obs in before {
            machine.on_observation(obs);
        }
        while machine.verdict().is_none() {
            let wake = machine
                .next_deadline()
                .map(|d| clock::instant_of(d) + COMMIT_SLACK);
            tokio::select! {
                biased;
                () = super::cancelled(&mut cancel) => return Err(LiveError::Cancelled),
                Some(obs) = self.inbox.recv() => {
                    self.seen.push(Arc::clone(&obs));
                    if obs.channel == e.on {
                        machine.on_observation(&obs);
                    }
                }
                Some(obs) = self.evidence.recv() => {
                    if obs.channel == e.on {
                        machine.on_observation(&obs);
                    }
                    self.keep_uncorrelated(obs);
                }
                () = sleep_until_opt(wake) => {
                    for obs in self.take_arrived() {
                        if obs.channel == e.on {
                            machine.on_observation(&obs);
                        }
                    }
                    machine.on_tick(clock::mono_now().saturating_sub(nanos(COMMIT_SLACK)));
                }
            }
        }
        let Some(verdict) = machine.verdict().cloned() else {
            return Err(LiveError::Usage("the expectation has no verdict".into()));
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

    /// Ends the test: its routes are forgotten and its result (its sends and verdicts,
    /// with the client's own outcome) is recorded as a scenario of the run.
    pub async fn end(self, outcome: TestOutcome) -> Result<ScenarioResult, LiveError> {
        let live = Arc::clone(&self.live);
        live.session
            .router
            .unroute(self.sent.iter().map(|ev| ev.correlation_id.as_str()));
        let failed = self.verdicts.iter().any(|v| !v.passed());
        let (status, error) = match outcome {
            TestOutcome::Skipped(why) => (ScenarioStatus::Skipped, Some(why)),
            _ if failed => (ScenarioStatus::Failed, None),
            TestOutcome::Failed(why) => (ScenarioStatus::Failed, Some(why)),
            TestOutcome::Passed if self.send_errors > 0 => {
                (ScenarioStatus::Error, self.first_error.clone())
            }
            TestOutcome::Passed => (ScenarioStatus::Passed, None),
        };
        let result = ScenarioResult {
            name: self.name.clone(),
            status,
            sent: self.sent.len() as u64,
            send_errors: self.send_errors,
            error: error.map(|e| roundtrip_core::escape::escape_lines(&e)),
            expectations: self.verdicts,
            duration_ns: clock::mono_now().saturating_sub(self.started),
            notes: Vec::new(),
        };
        live.record(&result).await?;
        Ok(result)
    }
}
