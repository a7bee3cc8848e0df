//! The scenario loop and the router tested directly: an in-memory store, the real
//! dispatcher on its feed, and a stand-in for the SUT behind the producer that records
//! what "comes out" through a listener's sink. No process, no socket.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use roundtrip_core::correlate::Correlator;
use roundtrip_core::model::{ChannelSpec, CorrelationRule, DirChannel, Expectation, SendStep};
use roundtrip_core::run::{
    ListenerSummary, REPORT_FORMAT_VERSION, RunStatus, RunSummary, ScenarioResult, ScenarioStatus,
};
use roundtrip_core::verdict::{FailureKind, Outcome};
use tokio::sync::watch;

use super::plan::{PlannedScenario, PlannedSend};
use super::produce::MessageTemplate;
use super::router::{self, Router};
use super::scenario;
use super::session::Session;
use crate::store::{RunRecord, Store};
use crate::transport::{ObservationSink, Outgoing, ProduceError, Producer, Receipt, Received};

/// What the stand-in SUT does with each event it is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sut {
    /// Emits it on `out` this many times (0: loses it).
    Emits(usize),
    /// Refuses it.
    Refuses,
}

#[derive(Debug)]
struct StandIn {
    sut: Sut,
    out: ObservationSink,
}

#[async_trait]
impl Producer for StandIn {
    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let copies = match self.sut {
            Sut::Emits(n) => n,
            Sut::Refuses => {
                return Err(ProduceError::Rejected {
                    channel: "in".into(),
                    message: "HTTP 503 Service Unavailable".into(),
                });
            }
        };
        for _ in 0..copies {
            let received = Received::new(message.body.to_vec(), message.headers.clone());
            self.out
                .record(received)
                .await
                .map_err(|e| ProduceError::Unreachable {
                    channel: "in".into(),
                    source: Box::new(e),
                })?;
        }
        Ok(Receipt::default())
    }
}

/// An expectation on `out`, as a suite would write it.
pub(crate) fn expect(yaml: &str) -> Expectation {
    serde_saphyr::from_str(&format!("on: out\n{yaml}")).expect("a valid expectation")
}

/// The run id every test run has, so that reports are comparable.
pub(crate) const RUN_ID: &str = "0190c0de-0000-7000-8000-000000000001";

/// Runs `scenarios` (each: a name, how many events, what the SUT does, what is
/// expected) through the scenario loop, all at once as a run does; returns the results,
/// in order, and the listener summary of `out`.
pub(crate) async fn run(
    scenarios: &[(&str, u32, Sut, Vec<Expectation>)],
) -> (Vec<ScenarioResult>, ListenerSummary) {
    let store: Arc<dyn Store> = crate::store::open("sqlite::memory:")
        .await
        .expect("an in-memory store");
    store
        .create_run(&RunRecord {
            run_id: RUN_ID.into(),
            suite: "direct".into(),
            suite_path: "direct.yaml".into(),
            started_at: 0,
            finished_at: None,
            status: RunStatus::Running,
            owner: None,
        })
        .await
        .expect("the run is created");
    let rule = CorrelationRule::default();
    let out = ObservationSink::new(
        Arc::clone(&store),
        RUN_ID,
        "out",
        Arc::new(Correlator::new(&rule).expect("the rule")),
        1 << 20,
    );
    let router = Arc::new(Router::default());
    let dispatcher = tokio::spawn(router::dispatch(
        store.subscribe(),
        Arc::clone(&store),
        RUN_ID.into(),
        Arc::clone(&router),
    ));
    let channel = ChannelSpec::Dir(DirChannel {
        path: "unused".into(),
        file_name: None,
        suffix: None,
        max_payload: None,
    });
    let step: SendStep =
        serde_saphyr::from_str("to: in\nbody: { item: widget, n: \"{{ seq }}\" }").expect("a step");
    let message = Arc::new(MessageTemplate::compile(&step, &channel, &rule).expect("compiles"));
    let (_cancel_tx, cancel) = watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    for (i, (name, repeat, sut, expectations)) in scenarios.iter().enumerate() {
        let mut producers: BTreeMap<String, Arc<dyn Producer>> = BTreeMap::new();
        producers.insert(
            "in".into(),
            Arc::new(StandIn {
                sut: *sut,
                out: out.clone(),
            }),
        );
        let session = Arc::new(Session {
            run_id: RUN_ID.into(),
            store: Arc::clone(&store),
            producers,
            router: Arc::clone(&router),
            bindings: Arc::new(super::bindings::Bindings::new()),
        });
        let planned = PlannedScenario {
            name: (*name).to_owned(),
            sends: vec![PlannedSend {
                channel: "in".into(),
                repeat: *repeat,
                concurrency: 2,
                message: Arc::clone(&message),
            }],
            expect: expectations.clone(),
        };
        let cancel = cancel.clone();
        running.spawn(async move { (i, scenario::run(session, &planned, cancel).await) });
    }
    let mut results: Vec<(usize, ScenarioResult)> = running.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    let results = results.into_iter().map(|(_, r)| r).collect();
    dispatcher.abort();
    let stats = out.stats();
    let listener = ListenerSummary {
        channel: "out".into(),
        transport: "dir".into(),
        recorded: stats.recorded.load(std::sync::atomic::Ordering::Relaxed),
        faults: stats.faults.load(std::sync::atomic::Ordering::Relaxed),
        delivery: "at-least-once".into(),
        polling: false,
        redelivered: 0,
        gaps: stats.gap_causes(),
    };
    (results, listener)
}

/// A run summary of `results`, as the engine would record it.
pub(crate) fn summary(results: Vec<ScenarioResult>, listener: ListenerSummary) -> RunSummary {
    RunSummary {
        format_version: REPORT_FORMAT_VERSION,
        run_id: RUN_ID.into(),
        suite: "direct".into(),
        suite_path: "direct.yaml".into(),
        started_at: 1_764_633_600_000_000_000,
        finished_at: 1_764_633_601_000_000_000,
        interrupted: false,
        scenarios: results,
        listeners: vec![listener],
        sut_log: Vec::new(),
        sut_exited: None,
        harness_error: None,
        load: None,
    }
}

fn failure_kind(result: &ScenarioResult) -> Option<FailureKind> {
    result.expectations.iter().find_map(|v| match &v.outcome {
        Outcome::Failed(f) => Some(f.kind),
        Outcome::Passed => None,
    })
}

#[tokio::test]
async fn every_event_that_comes_out_in_time_passes() {
    let (results, listener) = run(&[(
        "echoes",
        5,
        Sut::Emits(1),
        vec![expect("match: { item: widget }\nwithin: 5s")],
    )])
    .await;
    let r = &results[0];
    assert_eq!(
        (r.status, r.sent, r.send_errors),
        (ScenarioStatus::Passed, 5, 0),
        "{r:?}"
    );
    assert_eq!(
        r.expectations[0].latencies_ns.len(),
        5,
        "one latency per event"
    );
    assert_eq!(listener.recorded, 5);
}

#[tokio::test]
async fn an_event_that_never_comes_out_is_lost() {
    let (results, _) = run(&[(
        "loses",
        2,
        Sut::Emits(0),
        vec![expect("within: 30ms\ngrace: 0s")],
    )])
    .await;
    let r = &results[0];
    assert_eq!(r.status, ScenarioStatus::Failed, "{r:?}");
    assert_eq!(failure_kind(r), Some(FailureKind::Lost));
}

#[tokio::test]
async fn an_event_that_comes_out_twice_is_a_duplicate_for_count_one() {
    let (results, _) = run(&[(
        "duplicates",
        1,
        Sut::Emits(2),
        vec![expect("count: 1\nwithin: 1s\ngrace: 0s")],
    )])
    .await;
    let r = &results[0];
    assert_eq!(r.status, ScenarioStatus::Failed, "{r:?}");
    assert_eq!(failure_kind(r), Some(FailureKind::Duplicate));
}

#[tokio::test]
async fn nothing_arriving_passes_an_absence_check_and_something_fails_it() {
    let (results, _) = run(&[
        ("quiet", 1, Sut::Emits(0), vec![expect("none_within: 30ms")]),
        ("noisy", 1, Sut::Emits(1), vec![expect("none_within: 1s")]),
    ])
    .await;
    assert_eq!(
        results[0].status,
        ScenarioStatus::Passed,
        "{:?}",
        results[0]
    );
    assert_eq!(
        results[1].status,
        ScenarioStatus::Failed,
        "{:?}",
        results[1]
    );
    assert_eq!(
        failure_kind(&results[1]),
        Some(FailureKind::UnexpectedArrival)
    );
}

#[tokio::test]
async fn a_refused_send_is_an_error_never_a_pass() {
    let (results, _) = run(&[(
        "refused",
        3,
        Sut::Refuses,
        vec![expect("none_within: 30ms")],
    )])
    .await;
    let r = &results[0];
    assert_eq!(
        (r.status, r.sent, r.send_errors),
        (ScenarioStatus::Error, 3, 3),
        "{r:?}"
    );
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.contains("HTTP 503"), "{error}");
}

#[tokio::test]
async fn two_scenarios_see_only_their_own_events() {
    // Both expect on `out`; each event's observation is routed to its own scenario only.
    let (results, listener) = run(&[
        (
            "first",
            3,
            Sut::Emits(1),
            vec![expect("count: 1\nwithin: 1s\ngrace: 0s")],
        ),
        (
            "second",
            4,
            Sut::Emits(1),
            vec![expect("count: 1\nwithin: 1s\ngrace: 0s")],
        ),
    ])
    .await;
    for r in &results {
        assert_eq!(r.status, ScenarioStatus::Passed, "{r:?}");
    }
    assert_eq!(listener.recorded, 7);
}
