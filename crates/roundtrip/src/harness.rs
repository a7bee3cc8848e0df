//! The library API for `#[tokio::test]`: run a suite file, or a suite built in code, and
//! get the same verdicts and evidence as the command line, in the panic message.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use roundtrip::harness::{Event, Expect, Harness};
//! use serde_json::json;
//!
//! // From a suite file (paths in it are relative to the file):
//! Harness::from_file("examples/pipeline/suite.yaml")?.run().await?.assert_passed();
//!
//! // Or in code, against a SUT that is already running:
//! let report = Harness::builder("orders")
//!     .http("orders_in", "http://127.0.0.1:7001/events")
//!     .webhook("orders_out", "127.0.0.1:7002", "/events")
//!     .scenario(
//!         "an order is uppercased within its SLA",
//!         [Event::to("orders_in").json(json!({ "item": "widget", "qty": 2 }))],
//!         [Expect::on("orders_out")
//!             .matching(json!({ "item": "WIDGET", "qty": 2 }))
//!             .within(Duration::from_secs(2))],
//!     )
//!     .build()?
//!     .run()
//!     .await?;
//! report.assert_passed();
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use roundtrip_core::model::{
    ChannelSpec, CorrelationRule, DirChannel, DurationSpec, Expectation, HttpChannel, ReadyProbe,
    Scenario, SendStep, Suite, SutSpec, WebhookChannel,
};
use roundtrip_core::run::{RunSummary, ScenarioResult, ScenarioStatus};
use roundtrip_core::suite::{self, LoadedSuite, SuiteError};
use serde_json::Value;

use crate::engine::{self, RunOptions};
use crate::error::HarnessError;
use crate::report::text;
use crate::store::{self, Store};

/// Why a harness could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The suite is invalid.
    #[error(transparent)]
    Suite(#[from] SuiteError),
    /// The run could not be carried out.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The in-code suite could not be turned into the suite format.
    #[error("serialize the in-code suite: {0}")]
    Serialize(String),
}

/// A suite ready to run.
#[derive(Debug)]
pub struct Harness {
    loaded: LoadedSuite,
    store: Option<Arc<dyn Store>>,
    concurrency: usize,
}

impl Harness {
    /// Loads a suite file (validated exactly like `roundtrip check`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Harness, Error> {
        Ok(Harness::new(suite::load(path.as_ref())?))
    }

    /// Starts a suite in code.
    pub fn builder(name: impl Into<String>) -> HarnessBuilder {
        HarnessBuilder {
            suite: Suite {
                name: name.into(),
                sut: None,
                correlate: CorrelationRule::default(),
                channels: BTreeMap::new(),
                scenarios: Vec::new(),
            },
            base_dir: PathBuf::from("."),
        }
    }

    fn new(loaded: LoadedSuite) -> Harness {
        Harness {
            loaded,
            store: None,
            concurrency: 16,
        }
    }

    /// Records into this store instead of a fresh in-memory one.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Harness {
        self.store = Some(store);
        self
    }

    /// Runs at most this many scenarios at once.
    pub fn concurrency(mut self, n: usize) -> Harness {
        self.concurrency = n.max(1);
        self
    }

    /// Runs only the scenarios whose names are given.
    pub fn only<I, S>(mut self, names: I) -> Harness
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names: Vec<String> = names.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.loaded
            .suite
            .scenarios
            .retain(|s| names.contains(&s.name));
        self
    }

    /// The suite as loaded.
    pub fn suite(&self) -> &Suite {
        &self.loaded.suite
    }

    /// Runs the suite: listeners, SUT (if the suite starts one), scenarios.
    pub async fn run(&self) -> Result<Report, Error> {
        let store = match &self.store {
            Some(s) => Arc::clone(s),
            None => store::open("sqlite::memory:")
                .await
                .map_err(HarnessError::from)?,
        };
        let mut opts = RunOptions::new();
        opts.concurrency = self.concurrency;
        let summary = engine::run_suite(&self.loaded, store, opts).await?;
        Ok(Report { summary })
    }
}

/// Builds a suite in code. Every suite built here is validated exactly like a file.
#[derive(Debug, Clone)]
pub struct HarnessBuilder {
    suite: Suite,
    base_dir: PathBuf,
}

impl HarnessBuilder {
    /// Adds a channel.
    pub fn channel(mut self, name: impl Into<String>, spec: ChannelSpec) -> Self {
        self.suite.channels.insert(name.into(), spec);
        self
    }

    /// Adds an `http` channel that events are POSTed to.
    pub fn http(self, name: impl Into<String>, url: impl Into<String>) -> Self {
        self.channel(
            name,
            ChannelSpec::Http(HttpChannel {
                url: url.into(),
                method: "POST".into(),
                headers: BTreeMap::new(),
                timeout: None,
            }),
        )
    }

    /// Adds a `webhook` channel the SUT calls.
    pub fn webhook(
        self,
        name: impl Into<String>,
        listen: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        self.channel(
            name,
            ChannelSpec::Webhook(WebhookChannel {
                listen: listen.into(),
                path: path.into(),
                max_payload: None,
            }),
        )
    }

    /// Adds a `dir` channel.
    pub fn dir(self, name: impl Into<String>, path: impl Into<String>) -> Self {
        self.channel(
            name,
            ChannelSpec::Dir(DirChannel {
                path: path.into(),
                file_name: None,
                suffix: None,
                max_payload: None,
            }),
        )
    }

    /// Lets the harness start the SUT: `start` is the program and its arguments,
    /// `ready` the probe it must pass (within its deadline) before anything is sent.
    pub fn sut(
        mut self,
        start: impl IntoIterator<Item = impl Into<String>>,
        ready: ReadyProbe,
    ) -> Self {
        self.suite.sut = Some(SutSpec {
            start: start.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            ready,
            stop_grace: DurationSpec(Duration::from_secs(5)),
        });
        self
    }

    /// Sets the correlation rule (default: the `x-correlation-id` header).
    pub fn correlate(mut self, rule: CorrelationRule) -> Self {
        self.suite.correlate = rule;
        self
    }

    /// Relative `dir` paths resolve against this directory (default: the current one).
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// Adds a scenario: events to send, then what must (not) arrive.
    pub fn scenario(
        mut self,
        name: impl Into<String>,
        send: impl IntoIterator<Item = Event>,
        expect: impl IntoIterator<Item = Expect>,
    ) -> Self {
        self.suite.scenarios.push(Scenario {
            name: name.into(),
            tags: Vec::new(),
            send: send.into_iter().map(|s| s.0).collect(),
            expect: expect.into_iter().map(|e| e.0).collect(),
            load: None,
        });
        self
    }

    /// Validates the suite (exactly as `roundtrip check` would) into a [`Harness`].
    pub fn build(self) -> Result<Harness, Error> {
        let yaml =
            serde_saphyr::to_string(&self.suite).map_err(|e| Error::Serialize(e.to_string()))?;
        let suite = suite::parse("<in-code suite>", &yaml)?;
        Ok(Harness::new(LoadedSuite {
            suite,
            path: PathBuf::from("<in-code suite>"),
            base_dir: self.base_dir,
        }))
    }
}

/// A send step built in code.
#[derive(Debug, Clone)]
pub struct Event(SendStep);

impl Event {
    /// An event to `channel`, with an empty body until one is set.
    pub fn to(channel: impl Into<String>) -> Event {
        Event(SendStep {
            to: channel.into(),
            body: None,
            text: None,
            base64: None,
            headers: BTreeMap::new(),
            repeat: 1,
            concurrency: 1,
        })
    }

    /// A JSON body; strings in it are templates (`{{ seq }}`, `{{ uuid() }}`, …).
    pub fn json(mut self, body: Value) -> Event {
        self.0.body = Some(body);
        self
    }

    /// A text body (a template).
    pub fn text(mut self, body: impl Into<String>) -> Event {
        self.0.text = Some(body.into());
        self
    }

    /// A header (the value is a template).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.0.headers.insert(name.into(), value.into());
        self
    }

    /// Sends `n` events, each with its own correlation id, up to `concurrency` at once.
    pub fn repeat(mut self, n: u32, concurrency: u32) -> Event {
        self.0.repeat = n;
        self.0.concurrency = concurrency;
        self
    }
}

/// An expectation built in code.
#[derive(Debug, Clone)]
pub struct Expect(Expectation);

impl Expect {
    /// Something must (not) arrive on `channel`; by default at least one observation per
    /// sent event, within 5 s.
    pub fn on(channel: impl Into<String>) -> Expect {
        Expect(Expectation {
            on: channel.into(),
            matches: None,
            predicates: Vec::new(),
            schema: None,
            text: None,
            bytes: None,
            headers: std::collections::BTreeMap::new(),
            meta: std::collections::BTreeMap::new(),
            count: None,
            at_least: None,
            within: Some(DurationSpec(Duration::from_secs(5))),
            none_within: None,
            grace: None,
            ordered_by: None,
        })
    }

    /// The payload must contain this JSON subset.
    pub fn matching(mut self, subset: Value) -> Expect {
        self.0.matches = Some(subset);
        self
    }

    /// The SLA: each matching observation within this time of its event's send.
    pub fn within(mut self, sla: Duration) -> Expect {
        self.0.within = Some(DurationSpec(sla));
        self.0.none_within = None;
        self
    }

    /// Nothing matching may arrive for this whole window after each send.
    pub fn none_within(mut self, window: Duration) -> Expect {
        self.0.none_within = Some(DurationSpec(window));
        self.0.within = None;
        self
    }

    /// Exactly `n` matching observations per event over the whole window.
    pub fn count(mut self, n: u32) -> Expect {
        self.0.count = Some(n);
        self.0.at_least = None;
        self
    }

    /// After the SLA, keep listening this long to tell "late" from "lost".
    pub fn grace(mut self, grace: Duration) -> Expect {
        self.0.grace = Some(DurationSpec(grace));
        self
    }
}

/// The result of a harness run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The full run summary (also in the store).
    pub summary: RunSummary,
}

impl Report {
    /// True when every scenario passed.
    pub fn passed(&self) -> bool {
        self.summary.failed() == 0 && !self.summary.scenarios.is_empty()
    }

    /// A scenario's result by name.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.summary.scenarios.iter().find(|s| s.name == name)
    }

    /// Panics with the full report (verdicts and evidence) unless every scenario passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!(
                "roundtrip: {} of {} scenario(s) did not pass\n{}",
                self.summary.failed(),
                self.summary.scenarios.len(),
                text::run_report(&self.summary)
            );
        }
    }

    /// The names of scenarios that did not pass.
    pub fn failures(&self) -> Vec<&str> {
        self.summary
            .scenarios
            .iter()
            .filter(|s| matches!(s.status, ScenarioStatus::Failed | ScenarioStatus::Error))
            .map(|s| s.name.as_str())
            .collect()
    }
}
