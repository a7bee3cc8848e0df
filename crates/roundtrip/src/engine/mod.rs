//! The engine: runs a suite against the SUT and produces a [`RunSummary`].
//!
//! The flow, in one direction (see ARCHITECTURE.md):
//! plan (channel → driver) → create the run in the store → start the dispatcher on the
//! store's feed → start every listener and wait until each is subscribed → start the SUT
//! and wait for its readiness probe → run the scenarios concurrently (bounded) → stop
//! the SUT, stop the listeners (which drain their commits) → record the summary.
//!
//! Progress is a typed stream of [`RunEvent`]s; the summary can be re-read from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use roundtrip_core::correlate::Correlator;
use roundtrip_core::model::{ChannelSpec, SendStep, Suite};
use roundtrip_core::observation::SentEvent;
use roundtrip_core::run::{
    ListenerSummary, REPORT_FORMAT_VERSION, RunSummary, ScenarioResult, ScenarioStatus,
};
use roundtrip_core::suite::LoadedSuite;
use roundtrip_core::template::Template;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::clock;
use crate::error::{HarnessError, error_chain};
use crate::store::{RunRecord, Store, StoreError};
use crate::transport::{
    DriverContext, ListenerStats, ObservationSink, Producer, RunningListener, registry,
};

mod event;
mod produce;
mod router;
mod scenario;
mod sut;

pub use event::RunEvent;
pub use scenario::COMMIT_SLACK;
pub use sut::{SutProcess, become_subreaper};

use router::Router;

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How many scenarios run at once (at least 1).
    pub concurrency: usize,
    /// Where progress events go, if anywhere.
    pub events: Option<mpsc::UnboundedSender<RunEvent>>,
    /// Set to `true` to stop the run early (Ctrl-C): unfinished scenarios become errors,
    /// the SUT and listeners are stopped, the store stays consistent.
    pub cancel: watch::Receiver<bool>,
    /// Set to `true` to hurry a stop already under way (a second Ctrl-C): the SUT's
    /// process group is killed at once instead of being given its stop grace. The run
    /// is still recorded as interrupted.
    pub hurry: watch::Receiver<bool>,
    /// Start no further scenario once one has failed (`--fail-fast`); those not started
    /// are [`ScenarioStatus::Skipped`]. Scenarios already running finish.
    pub fail_fast: bool,
}

impl RunOptions {
    /// Defaults: 16 scenarios at once, no events, never cancelled.
    pub fn new() -> RunOptions {
        // Nobody holds the sender: a closed channel means "never cancelled" (see
        // [`cancelled`]).
        let (_, cancel) = watch::channel(false);
        let (_, hurry) = watch::channel(false);
        RunOptions {
            concurrency: 16,
            events: None,
            cancel,
            hurry,
            fail_fast: false,
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions::new()
    }
}

/// Resolves once `cancel` turns true; never, if its sender is gone without cancelling.
pub(crate) async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The state shared by a run's scenarios.
#[derive(Debug)]
pub(crate) struct Session {
    run_id: String,
    suite: Arc<Suite>,
    store: Arc<dyn Store>,
    producers: HashMap<String, Arc<dyn Producer>>,
    router: Arc<Router>,
}

impl Session {
    /// Produces one event and records it; never fails: the error is in the event. The
    /// flag is true when the transport could not be reached at all (a connection
    /// failure, not a refusal).
    async fn send_one(
        &self,
        scenario: &str,
        step: &SendStep,
        index: u64,
        correlation_id: String,
    ) -> (SentEvent, bool, u64) {
        let mut unreachable = false;
        let mut took = 0;
        let ctx = produce::EventContext {
            run_id: &self.run_id,
            correlation_id: &correlation_id,
            seq: index,
        };
        let mut event = SentEvent {
            run_id: self.run_id.clone(),
            scenario: scenario.to_owned(),
            index,
            channel: step.to.clone(),
            correlation_id: correlation_id.clone(),
            sent_at: clock::wall_now(),
            sent_mono: clock::mono_now(),
            size: 0,
            error: None,
        };
        let built = match self.suite.channels.get(&step.to) {
            Some(spec) => produce::build(step, spec, &self.suite.correlate, &ctx),
            None => Err(format!("unknown channel `{}`", step.to)),
        };
        let producer = self.producers.get(&step.to);
        match (built, producer) {
            (Ok(message), Some(producer)) => {
                event.size = message.body.len() as u64;
                event.sent_at = clock::wall_now();
                event.sent_mono = clock::mono_now();
                let sent = producer.send(message).await;
                took = clock::mono_now().saturating_sub(event.sent_mono);
                if let Err(e) = sent {
                    unreachable = matches!(e, crate::transport::ProduceError::Unreachable { .. });
                    event.error = Some(shown_error(&e));
                }
            }
            (Err(e), _) => event.error = Some(e),
            (_, None) => event.error = Some(format!("no producer for channel `{}`", step.to)),
        }
        if let Err(e) = self.store.record_sent(&event).await
            && event.error.is_none()
        {
            event.error = Some(format!(
                "failed to record the sent event: {}",
                error_chain(&e)
            ));
        }
        (event, unreachable, took)
    }
}

/// An error as it may be shown, reported and stored: its chain on one line, URLs'
/// secrets masked ([`roundtrip_core::redact`]), control characters escaped (it may
/// quote the SUT's answer).
pub fn shown_error(e: &dyn std::error::Error) -> String {
    roundtrip_core::escape::escape_lines(&roundtrip_core::redact::text(&error_chain(e)))
}

struct StartedListener {
    channel: String,
    transport: String,
    running: RunningListener,
    stats: Arc<ListenerStats>,
}

fn emit(opts: &RunOptions, event: RunEvent) {
    if let Some(tx) = &opts.events {
        let _ = tx.send(event);
    }
}

/// Runs a loaded suite, recording everything in `store`. A failed expectation is a
/// verdict in the summary; `Err` means the run could not be carried out (the store has
/// the run, marked `error`, with the reason).
pub async fn run_suite(
    loaded: &LoadedSuite,
    store: Arc<dyn Store>,
    opts: RunOptions,
) -> Result<RunSummary, HarnessError> {
    let suite = Arc::new(loaded.suite.clone());
    let run_id = uuid::Uuid::now_v7().to_string();
    let started_at = clock::wall_now();
    let suite_path = loaded.path.display().to_string();
    let ctx = DriverContext {
        base_dir: loaded.base_dir.clone(),
    };

    // Plan before touching anything: a suite this build cannot run is a usage error.
    let mut producers: HashMap<String, Arc<dyn Producer>> = HashMap::new();
    let mut listeners = BTreeMap::new();
    for scenario in &suite.scenarios {
        for step in &scenario.send {
            if let (false, Some(spec)) = (
                producers.contains_key(&step.to),
                suite.channels.get(&step.to),
            ) {
                let spec = render_channel(&step.to, spec, &run_id)?;
                let p: Arc<dyn Producer> = registry::producer(&step.to, &spec, &ctx)?.into();
                producers.insert(step.to.clone(), p);
            }
        }
        for e in &scenario.expect {
            if let (false, Some(spec)) = (listeners.contains_key(&e.on), suite.channels.get(&e.on))
            {
                let rendered = render_channel(&e.on, spec, &run_id)?;
                listeners.insert(
                    e.on.clone(),
                    (registry::listener(&e.on, &rendered, &ctx)?, spec),
                );
            }
        }
    }
    let correlator =
        Arc::new(
            Correlator::new(&suite.correlate).map_err(|e| HarnessError::Template {
                what: "correlate".into(),
                message: e.to_string(),
            })?,
        );

    store
        .create_run(&RunRecord {
            run_id: run_id.clone(),
            suite: suite.name.clone(),
            suite_path: suite_path.clone(),
            started_at,
            finished_at: None,
            status: "running".into(),
            owner: Some(crate::owner::current()),
        })
        .await?;
    emit(
        &opts,
        RunEvent::RunStarted {
            run_id: run_id.clone(),
            suite: suite.name.clone(),
            scenarios: suite.scenarios.len(),
            started_at,
        },
    );

    let router = Arc::new(Router::default());
    let dispatcher = tokio::spawn(router::dispatch(
        store.subscribe(),
        Arc::clone(&store),
        run_id.clone(),
        Arc::clone(&router),
    ));

    let mut summary = RunSummary {
        format_version: REPORT_FORMAT_VERSION,
        run_id: run_id.clone(),
        suite: suite.name.clone(),
        suite_path,
        started_at,
        finished_at: started_at,
        interrupted: false,
        scenarios: Vec::new(),
        listeners: Vec::new(),
        sut_log: Vec::new(),
        sut_exited: None,
        harness_error: None,
    };

    // Listeners first: subscribed before anything can be sent.
    let mut started: Vec<StartedListener> = Vec::new();
    let mut failure: Option<HarnessError> = None;
    for (channel, (listener, spec)) in listeners {
        let sink = ObservationSink::new(
            Arc::clone(&store),
            run_id.clone(),
            channel.clone(),
            Arc::clone(&correlator),
            registry::max_payload(spec),
        );
        let stats = sink.stats();
        match listener.start(sink).await {
            Ok(running) => {
                emit(
                    &opts,
                    RunEvent::ListenerReady {
                        channel: channel.clone(),
                        transport: spec.transport().to_owned(),
                        endpoint: running.endpoint.clone(),
                    },
                );
                started.push(StartedListener {
                    channel,
                    transport: spec.transport().to_owned(),
                    running,
                    stats,
                });
            }
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
    }

    // Producers connect before the SUT starts: an unreachable broker is a harness error,
    // not a failed scenario.
    if failure.is_none() {
        for producer in producers.values() {
            if let Err(e) = producer.connect().await {
                failure = Some(HarnessError::Connect(e));
                break;
            }
        }
    }

    // Then the SUT, if the suite starts it.
    let mut sut = None;
    if let (None, Some(spec)) = (&failure, &suite.sut) {
        let mut cancel = opts.cancel.clone();
        match render_argv(&spec.start, &run_id) {
            Err(e) => failure = Some(e),
            Ok(argv) => tokio::select! {
                result = SutProcess::start(spec, &argv, &loaded.base_dir) => match result {
                    Ok(process) => {
                        emit(&opts, RunEvent::SutReady {
                            pid: process.pid(),
                            ready_after_ns: u64::try_from(process.ready_after().as_nanos()).unwrap_or(u64::MAX),
                        });
                        sut = Some(process);
                    }
                    Err(e) => failure = Some(e),
                },
                () = cancelled(&mut cancel) => summary.interrupted = true,
            },
        }
    }

    if failure.is_none() && !summary.interrupted {
        let session = Arc::new(Session {
            run_id: run_id.clone(),
            suite: Arc::clone(&suite),
            store: Arc::clone(&store),
            producers,
            router: Arc::clone(&router),
        });
        let (scenarios, store_error) = run_scenarios(&session, &opts).await;
        summary.scenarios = scenarios;
        failure = store_error.map(HarnessError::from);
        summary.interrupted = *opts.cancel.borrow();
    }

    // Teardown: the SUT first (so it stops emitting), then the listeners, which finish
    // committing whatever they accepted.
    if let Some(mut process) = sut {
        summary.sut_log = process.stop_or_hurry(opts.hurry.clone()).await;
        summary.sut_exited = process.exited_early().map(str::to_owned);
    }
    for l in started {
        let (delivery, polling) = (l.running.delivery, l.running.polling);
        l.running.stop().await;
        summary.listeners.push(ListenerSummary {
            channel: l.channel,
            transport: l.transport,
            recorded: l.stats.recorded.load(Ordering::Relaxed),
            faults: l.stats.faults.load(Ordering::Relaxed),
            delivery: delivery.to_owned(),
            polling,
            redelivered: l.stats.redelivered.load(Ordering::Relaxed),
            gaps: l.stats.gaps(),
        });
    }
    dispatcher.abort();

    summary.finished_at = clock::wall_now();
    summary.harness_error = failure.as_ref().map(|e| shown_error(e));
    let status = if failure.is_some() {
        "error"
    } else if summary.interrupted {
        "interrupted"
    } else if summary.failed() > 0 {
        "failed"
    } else {
        "passed"
    };
    let recorded = store.finish_run(&summary, status).await;
    emit(&opts, RunEvent::RunFinished(summary.clone()));
    match failure {
        Some(e) => Err(e),
        None => {
            recorded?;
            Ok(summary)
        }
    }
}

/// Renders a run-level template (no event: `correlation_id` is empty, `seq` is 0).
fn render_once(
    text: &str,
    what: impl FnOnce() -> String,
    run_id: &str,
) -> Result<String, HarnessError> {
    let ctx = produce::EventContext {
        run_id,
        correlation_id: "",
        seq: 0,
    };
    Template::parse(text)
        .and_then(|t| t.render(&ctx))
        .map_err(|e| HarnessError::Template {
            what: what(),
            message: e.to_string(),
        })
}

fn render_argv(argv: &[String], run_id: &str) -> Result<Vec<String>, HarnessError> {
    argv.iter()
        .map(|arg| render_once(arg, || format!("sut.start argument `{arg}`"), run_id))
        .collect()
}

/// Channel options that are templates (an `http` URL and headers, broker subjects,
/// topics, streams, queues, groups, buckets and buses) are rendered once per run, before
/// the driver is built. A Kafka record `key`, an S3 object `key` and SQS FIFO ids are
/// rendered per event instead.
fn render_channel(
    name: &str,
    spec: &ChannelSpec,
    run_id: &str,
) -> Result<ChannelSpec, HarnessError> {
    let mut spec = spec.clone();
    for t in spec.options_mut().run_templates() {
        *t.value = render_once(
            t.value,
            || format!("{} of channel `{name}`", t.what),
            run_id,
        )?;
    }
    Ok(spec)
}

/// Runs every scenario (bounded); also returns the first failure to record a result, which
/// makes the run a harness error: a verdict the store does not hold is not a verdict.
async fn run_scenarios(
    session: &Arc<Session>,
    opts: &RunOptions,
) -> (Vec<ScenarioResult>, Option<StoreError>) {
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    // With `fail_fast`, the name of the first scenario that did not pass.
    let first_failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut set = JoinSet::new();
    for (i, scenario) in session.suite.scenarios.iter().enumerate() {
        // Permits are taken here, in file order, so scenarios start in the order they
        // are written (with `--concurrency 1`, one after the other, as written).
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        if *opts.cancel.borrow() {
            break;
        }
        let (session, opts, scenario, first_failure) = (
            Arc::clone(session),
            opts.clone(),
            scenario.clone(),
            Arc::clone(&first_failure),
        );
        set.spawn(async move {
            let _permit = permit;
            let failed_before = first_failure.lock().ok().and_then(|f| f.clone());
            let result = match failed_before {
                Some(failed) => ScenarioResult {
                    name: scenario.name.clone(),
                    status: ScenarioStatus::Skipped,
                    sent: 0,
                    send_errors: 0,
                    error: Some(format!("not run: --fail-fast, after `{failed}` failed")),
                    expectations: Vec::new(),
                    duration_ns: 0,
                    notes: Vec::new(),
                },
                None => {
                    emit(
                        &opts,
                        RunEvent::ScenarioStarted {
                            name: scenario.name.clone(),
                        },
                    );
                    let result =
                        scenario::run(Arc::clone(&session), &scenario, opts.cancel.clone()).await;
                    if opts.fail_fast
                        && result.status != ScenarioStatus::Passed
                        && let Ok(mut first) = first_failure.lock()
                    {
                        first.get_or_insert_with(|| result.name.clone());
                    }
                    result
                }
            };
            let recorded = session
                .store
                .record_scenario(&session.run_id, &result)
                .await
                .err();
            emit(&opts, RunEvent::ScenarioFinished(result.clone()));
            (i, Some(result), recorded)
        });
    }
    let mut results: Vec<Option<ScenarioResult>> = vec![None; session.suite.scenarios.len()];
    let mut store_error = None;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, result, error)) = joined {
            results[i] = result;
            store_error = store_error.or(error);
        }
    }
    let results = results
        .into_iter()
        .zip(&session.suite.scenarios)
        .map(|(r, s)| {
            r.unwrap_or_else(|| ScenarioResult {
                name: s.name.clone(),
                status: ScenarioStatus::Error,
                sent: 0,
                send_errors: 0,
                error: Some("not run: the run was interrupted".into()),
                expectations: Vec::new(),
                duration_ns: 0,
                notes: Vec::new(),
            })
        })
        .collect();
    (results, store_error)
}
