//! The engine: runs a suite against the SUT and produces a [`RunSummary`].
//!
//! A run goes through named phases, in one direction (see ARCHITECTURE.md): the plan
//! (`plan.rs`: every channel rendered and bound to its driver, every send step compiled,
//! before anything is touched) → open the run in the store and route its feed
//! (`router.rs`) → start every listener, each subscribed before it returns → connect the
//! producers → start the SUT and wait for its readiness probe (`sut.rs`) → run the
//! scenarios concurrently, bounded (`scenario.rs`, sending through `session.rs`) → tear
//! down (the SUT, then the listeners, which drain their commits) → summarise (record the
//! summary with the run's status).
//!
//! Progress is a typed stream of [`RunEvent`]s; the summary can be re-read from the store.

use std::sync::Arc;

use roundtrip_core::run::RunStatus;
use roundtrip_core::run::{
    ListenerSummary, REPORT_FORMAT_VERSION, RunSummary, ScenarioResult, ScenarioStatus,
};
use roundtrip_core::suite::LoadedSuite;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::clock;
use crate::error::{HarnessError, error_chain};
use crate::store::{RunRecord, Store, StoreError};
use crate::transport::{ListenerStats, ObservationSink, RunningListener};

mod bindings;
mod event;
mod live;
mod load;
mod plan;
mod produce;
mod router;
mod scenario;
mod session;
mod sut;
#[cfg(test)]
pub(crate) mod tests;

pub use event::RunEvent;
pub use live::{Expected, LiveError, LiveRun, Scope, ScopeStop, TestOutcome};
pub use load::{LoadEvent, LoadOptions, SharedLoad, run_load};
pub(crate) use plan::render_channel_for_service;
pub use scenario::COMMIT_SLACK;
pub use sut::{SutProcess, become_subreaper};

use plan::{Plan, PlannedScenario};
use router::Router;
use session::Session;

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
    /// A listener service that records some of the suite's channels (`--remote`):
    /// the run listens on none of those itself ([`crate::remote`]).
    pub remote: Option<crate::remote::Remote>,
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
            remote: None,
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

/// An error as it may be shown, reported and stored: its chain on one line, URLs'
/// secrets masked ([`roundtrip_core::redact`]), control characters escaped (it may
/// quote the SUT's answer).
pub fn shown_error(e: &dyn std::error::Error) -> String {
    roundtrip_core::escape::escape_lines(&roundtrip_core::redact::text(&error_chain(e)))
}

fn emit(opts: &RunOptions, event: RunEvent) {
    if let Some(tx) = &opts.events {
        let _ = tx.send(event);
    }
}

/// Runs a loaded suite, recording everything in `store`. A failed expectation is a
/// verdict in the summary; `Err` means the run could not be carried out (the store has
/// the run, marked `error`, with the reason).
///
/// The phases, in order: plan, open the run in the store, start the listeners, connect
/// the producers, start the SUT, run the scenarios, tear down, summarise. A phase that
/// fails skips the ones after it up to the teardown, which always runs.
pub async fn run_suite(
    loaded: &LoadedSuite,
    store: Arc<dyn Store>,
    opts: RunOptions,
) -> Result<RunSummary, HarnessError> {
    let remote = match &opts.remote {
        None => None,
        Some(remote) => Some(plan_remote(remote, store.as_ref()).await?),
    };
    // Plan before touching anything: a suite this build cannot run is a usage error.
    let plan = Plan::with_remote(loaded, uuid::Uuid::now_v7().to_string(), remote.as_ref())?;
    let mut run = Run::open(plan, store, &opts, false).await?;
    let failure = run.set_up_and_run(&opts).await.err();
    run.tear_down(&opts).await;
    run.summarise(failure, &opts).await
}

/// What the service at `remote` records, and whether its observations come through the
/// store (the runner's store holds the service's own run: they share it) or its event
/// stream.
async fn plan_remote(
    remote: &crate::remote::Remote,
    store: &dyn Store,
) -> Result<plan::RemotePlan, HarnessError> {
    let info = remote.describe().await?;
    let shared = store.run(&info.home_run).await?.is_some();
    let cross_process = store.cross_process_feed();
    if shared && cross_process == crate::store::CrossProcessFeed::None {
        return Err(crate::remote::RemoteError {
            url: roundtrip_core::redact::url(&remote.url),
            message: "the run and the service share a store whose feed does not cross \
                      processes (SQLite, DynamoDB), so the run would never learn what the \
                      service records: give the run a store of its own (its event stream \
                      brings the observations) or share a Postgres store"
                .to_owned(),
            usage: true,
        }
        .into());
    }
    Ok(plan::RemotePlan {
        remote: remote.clone(),
        channels: info
            .channels
            .into_iter()
            .map(|c| (c.name, c.transport))
            .collect(),
        feed: if shared {
            crate::remote::Feed::Store {
                polled: match cross_process {
                    crate::store::CrossProcessFeed::Polled(every) => Some(every),
                    _ => None,
                },
            }
        } else {
            crate::remote::Feed::Events
        },
    })
}

/// A run under way: what its phases have started so far, for the teardown to stop.
struct Run {
    plan: Plan,
    store: Arc<dyn Store>,
    router: Arc<Router>,
    dispatcher: tokio::task::JoinHandle<()>,
    listeners: Vec<StartedListener>,
    sut: Option<SutProcess>,
    summary: RunSummary,
    /// Under load, where the listeners hand observations instead of the store.
    tap: Option<mpsc::Sender<Arc<roundtrip_core::observation::Observation>>>,
}

struct StartedListener {
    channel: String,
    transport: &'static str,
    running: RunningListener,
    stats: Arc<ListenerStats>,
}

impl StartedListener {
    /// Stops the listener and says what it recorded, once every commit has drained.
    async fn stop(self) -> ListenerSummary {
        let (delivery, polling) = (self.running.delivery, self.running.polling);
        self.running.stop().await;
        self.stats
            .summary(&self.channel, self.transport, delivery, polling)
    }
}

impl Run {
    /// Opens the run in the store (or, with `join`, joins it: a run other processes
    /// share) and starts routing its observations.
    async fn open(
        plan: Plan,
        store: Arc<dyn Store>,
        opts: &RunOptions,
        join: bool,
    ) -> Result<Run, HarnessError> {
        let started_at = clock::wall_now();
        let record = RunRecord {
            run_id: plan.run_id.clone(),
            suite: plan.suite.clone(),
            suite_path: plan.suite_path.clone(),
            started_at,
            finished_at: None,
            status: RunStatus::Running,
            owner: Some(crate::owner::current()),
        };
        if join {
            store.join_run(&record).await?;
        } else {
            store.create_run(&record).await?;
        }
        emit(
            opts,
            RunEvent::RunStarted {
                run_id: plan.run_id.clone(),
                suite: plan.suite.clone(),
                scenarios: plan.scenarios.len(),
                started_at,
            },
        );
        let router = Arc::new(Router::default());
        let dispatcher = tokio::spawn(router::dispatch(
            store.subscribe(),
            Arc::clone(&store),
            plan.run_id.clone(),
            Arc::clone(&router),
        ));
        let summary = RunSummary {
            format_version: REPORT_FORMAT_VERSION,
            run_id: plan.run_id.clone(),
            suite: plan.suite.clone(),
            suite_path: plan.suite_path.clone(),
            started_at,
            finished_at: started_at,
            interrupted: false,
            scenarios: Vec::new(),
            listeners: Vec::new(),
            sut_log: Vec::new(),
            sut_exited: None,
            harness_error: None,
            load: None,
        };
        Ok(Run {
            plan,
            store,
            router,
            dispatcher,
            listeners: Vec::new(),
            sut: None,
            summary,
            tap: None,
        })
    }

    async fn set_up_and_run(&mut self, opts: &RunOptions) -> Result<(), HarnessError> {
        if self.set_up(opts).await? {
            self.run_scenarios(opts).await?;
        }
        Ok(())
    }

    /// Listeners, producers, the SUT; `false` when the run was interrupted meanwhile.
    async fn set_up(&mut self, opts: &RunOptions) -> Result<bool, HarnessError> {
        self.start_listeners(opts).await?;
        self.connect_producers().await?;
        self.start_sut(opts).await
    }

    /// Listeners first: each is subscribed before anything can be sent.
    async fn start_listeners(&mut self, opts: &RunOptions) -> Result<(), HarnessError> {
        for planned in std::mem::take(&mut self.plan.listeners) {
            let (store, run_id, channel, correlator) = (
                Arc::clone(&self.store),
                self.plan.run_id.clone(),
                planned.channel.clone(),
                Arc::clone(&self.plan.correlator),
            );
            let sink = match &self.tap {
                Some(tap) => ObservationSink::tapped(
                    store,
                    run_id,
                    channel,
                    correlator,
                    planned.max_payload,
                    tap.clone(),
                ),
                None => {
                    ObservationSink::new(store, run_id, channel, correlator, planned.max_payload)
                }
            };
            let stats = sink.stats();
            let running = planned.driver.start(sink).await?;
            if let Some(bound) = &running.bound {
                self.plan
                    .bindings
                    .bind_channel(&planned.channel, bound.clone());
            }
            emit(
                opts,
                RunEvent::ListenerReady {
                    channel: planned.channel.clone(),
                    transport: planned.transport.to_owned(),
                    endpoint: running.endpoint.clone(),
                },
            );
            self.listeners.push(StartedListener {
                channel: planned.channel,
                transport: planned.transport,
                running,
                stats,
            });
        }
        Ok(())
    }

    /// Producers connect before the SUT starts: an unreachable broker is a harness
    /// error, not a failed scenario.
    async fn connect_producers(&mut self) -> Result<(), HarnessError> {
        for producer in self.plan.producers.values() {
            producer.connect().await.map_err(HarnessError::Connect)?;
        }
        Ok(())
    }

    /// Starts the SUT, if the suite starts one, and waits for its readiness probe.
    /// `false` when the run was interrupted meanwhile.
    async fn start_sut(&mut self, opts: &RunOptions) -> Result<bool, HarnessError> {
        let rendered = self
            .plan
            .sut
            .as_ref()
            .map(|sut| sut.render(&self.plan.run_id, &self.plan.bindings));
        // The ports were held for the SUT: from here on, they are its to bind.
        self.plan.bindings.release_ports();
        let Some(rendered) = rendered else {
            return Ok(true);
        };
        let (spec, argv) = rendered?;
        let mut cancel = opts.cancel.clone();
        tokio::select! {
            result = SutProcess::start(&spec, &argv, &self.plan.base_dir) => {
                let process = result?;
                emit(opts, RunEvent::SutReady {
                    pid: process.pid(),
                    ready_after_ns: u64::try_from(process.ready_after().as_nanos()).unwrap_or(u64::MAX),
                });
                self.sut = Some(process);
                Ok(true)
            }
            () = cancelled(&mut cancel) => {
                self.summary.interrupted = true;
                Ok(false)
            }
        }
    }

    /// Runs the scenarios; a result the store could not record makes the run a harness
    /// error (a verdict the store does not hold is not a verdict).
    async fn run_scenarios(&mut self, opts: &RunOptions) -> Result<(), HarnessError> {
        let session = Arc::new(self.session());
        let (scenarios, store_error) = run_scenarios(&session, &self.plan.scenarios, opts).await;
        self.summary.scenarios = scenarios;
        self.summary.interrupted = *opts.cancel.borrow();
        store_error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// What the run's scenarios share once it is set up.
    fn session(&self) -> Session {
        Session {
            run_id: self.plan.run_id.clone(),
            store: Arc::clone(&self.store),
            producers: self.plan.producers.clone(),
            router: Arc::clone(&self.router),
            bindings: Arc::clone(&self.plan.bindings),
        }
    }

    /// The SUT first (so it stops emitting), then the listeners, which finish committing
    /// whatever they accepted.
    async fn tear_down(&mut self, opts: &RunOptions) {
        if let Some(mut process) = self.sut.take() {
            self.summary.sut_log = process.stop_or_hurry(opts.hurry.clone()).await;
            self.summary.sut_exited = process.exited_early().map(str::to_owned);
        }
        // Stopped together: a stop can wait for a receive in flight (SQS, Redis groups).
        let stops: Vec<_> = std::mem::take(&mut self.listeners)
            .into_iter()
            .map(|l| tokio::spawn(l.stop()))
            .collect();
        for stop in stops {
            if let Ok(summary) = stop.await {
                self.summary.listeners.push(summary);
            }
        }
        self.dispatcher.abort();
    }

    /// Stamps the summary's end and the run's error, if any: what it holds once over.
    fn seal(&mut self, failure: Option<&HarnessError>) {
        self.summary.finished_at = clock::wall_now();
        self.summary.harness_error = failure.map(|e| shown_error(e));
    }

    /// Records the summary with the run's status, and reports it.
    async fn summarise(
        mut self,
        failure: Option<HarnessError>,
        opts: &RunOptions,
    ) -> Result<RunSummary, HarnessError> {
        self.seal(failure.as_ref());
        let summary = &mut self.summary;
        let status = summary.status();
        let recorded = self.store.finish_run(summary, status).await;
        emit(opts, RunEvent::RunFinished(summary.clone()));
        match failure {
            Some(e) => Err(e),
            None => {
                recorded?;
                Ok(self.summary)
            }
        }
    }
}

/// Runs every scenario (bounded); also returns the first failure to record a result, which
/// makes the run a harness error: a verdict the store does not hold is not a verdict.
async fn run_scenarios(
    session: &Arc<Session>,
    scenarios: &[PlannedScenario],
    opts: &RunOptions,
) -> (Vec<ScenarioResult>, Option<StoreError>) {
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    // With `fail_fast`, the name of the first scenario that did not pass.
    let first_failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut set = JoinSet::new();
    for (i, scenario) in scenarios.iter().enumerate() {
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
    let mut results: Vec<Option<ScenarioResult>> = vec![None; scenarios.len()];
    let mut store_error = None;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, result, error)) = joined {
            results[i] = result;
            store_error = store_error.or(error);
        }
    }
    let results = results
        .into_iter()
        .zip(scenarios)
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
