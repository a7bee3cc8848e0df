//! The plan: a loaded suite resolved once for one run, before anything starts (as
//! ripgrep turns its low-level arguments into high-level ones). Every channel a scenario
//! uses is rendered for the run and bound to its driver, every send step is compiled
//! into a [`MessageTemplate`], the correlation rule and the SUT's command line are
//! resolved. The rest of the engine takes a [`Plan`], never the suite model, so a suite
//! this build cannot run fails here, as a usage error, with nothing touched.
//!
//! A planned listener is a local driver today. This is where a channel will be resolved
//! to a listener that runs elsewhere (a deployed `roundtrip listen`) instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use roundtrip_core::correlate::Correlator;
use roundtrip_core::model::{ChannelSpec, Expectation, SutSpec};
use roundtrip_core::suite::LoadedSuite;
use roundtrip_core::template::Template;

use super::produce::{EventContext, MessageTemplate};
use crate::error::HarnessError;
use crate::transport::{DriverContext, Listener, Producer, registry};

/// A suite resolved for one run.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The run's id (a UUIDv7).
    pub run_id: String,
    /// The suite's name.
    pub suite: String,
    /// The suite file, as the user named it.
    pub suite_path: String,
    /// The suite file's directory.
    pub base_dir: PathBuf,
    /// How observations are tied to events.
    pub correlator: Arc<Correlator>,
    /// One producer per channel that a scenario sends to.
    pub producers: BTreeMap<String, Arc<dyn Producer>>,
    /// One listener per channel that a scenario expects on, in channel order.
    pub listeners: Vec<PlannedListener>,
    /// The SUT to start, if the suite starts one.
    pub sut: Option<PlannedSut>,
    /// The scenarios, in file order.
    pub scenarios: Vec<PlannedScenario>,
}

/// A listener, ready to start.
#[derive(Debug)]
pub(crate) struct PlannedListener {
    /// The channel.
    pub channel: String,
    /// Its transport.
    pub transport: &'static str,
    /// How many bytes of a message are kept.
    pub max_payload: usize,
    /// The driver.
    pub driver: Box<dyn Listener>,
}

/// The SUT: its spec and its command line, rendered for the run.
#[derive(Debug)]
pub(crate) struct PlannedSut {
    /// How to start and probe it.
    pub spec: SutSpec,
    /// The program and its arguments.
    pub argv: Vec<String>,
}

/// One scenario: what it sends and what it expects.
#[derive(Debug, Clone)]
pub(crate) struct PlannedScenario {
    /// Its name.
    pub name: String,
    /// Its send steps, in order.
    pub sends: Vec<PlannedSend>,
    /// Its expectations (the core's state machines take them as written).
    pub expect: Vec<Expectation>,
}

/// One send step.
#[derive(Debug, Clone)]
pub(crate) struct PlannedSend {
    /// The channel sent to; the plan has its producer.
    pub channel: String,
    /// How many events.
    pub repeat: u32,
    /// How many in flight at once.
    pub concurrency: u32,
    /// How each event becomes a message.
    pub message: Arc<MessageTemplate>,
}

impl Plan {
    /// Resolves `loaded` for the run `run_id`.
    pub(crate) fn new(loaded: &LoadedSuite, run_id: String) -> Result<Plan, HarnessError> {
        let suite = &loaded.suite;
        let ctx = DriverContext {
            base_dir: loaded.base_dir.clone(),
        };
        let mut rendered: BTreeMap<&str, ChannelSpec> = BTreeMap::new();
        let mut channel = |name: &str| -> Result<Option<ChannelSpec>, HarnessError> {
            if let Some(spec) = rendered.get(name) {
                return Ok(Some(spec.clone()));
            }
            let Some((key, spec)) = suite.channels.get_key_value(name) else {
                return Ok(None);
            };
            let spec = render_channel(name, spec, &run_id)?;
            rendered.insert(key, spec.clone());
            Ok(Some(spec))
        };

        let mut producers: BTreeMap<String, Arc<dyn Producer>> = BTreeMap::new();
        let mut listeners: BTreeMap<String, PlannedListener> = BTreeMap::new();
        let mut scenarios = Vec::with_capacity(suite.scenarios.len());
        for scenario in &suite.scenarios {
            let mut sends = Vec::with_capacity(scenario.send.len());
            for step in &scenario.send {
                let Some(spec) = channel(&step.to)? else {
                    continue;
                };
                if !producers.contains_key(&step.to) {
                    let producer = registry::producer(&step.to, &spec, &ctx)?;
                    producers.insert(step.to.clone(), producer.into());
                }
                let message =
                    MessageTemplate::compile(step, &spec, &suite.correlate).map_err(|message| {
                        HarnessError::Template {
                            what: format!("a send step of scenario `{}`", scenario.name),
                            message,
                        }
                    })?;
                sends.push(PlannedSend {
                    channel: step.to.clone(),
                    repeat: step.repeat,
                    concurrency: step.concurrency,
                    message: Arc::new(message),
                });
            }
            for e in &scenario.expect {
                if listeners.contains_key(&e.on) {
                    continue;
                }
                let Some(spec) = channel(&e.on)? else {
                    continue;
                };
                listeners.insert(
                    e.on.clone(),
                    PlannedListener {
                        channel: e.on.clone(),
                        transport: spec.transport(),
                        max_payload: registry::max_payload(&spec),
                        driver: registry::listener(&e.on, &spec, &ctx)?,
                    },
                );
            }
            scenarios.push(PlannedScenario {
                name: scenario.name.clone(),
                sends,
                expect: scenario.expect.clone(),
            });
        }
        let correlator = Correlator::new(&suite.correlate).map_err(|e| HarnessError::Template {
            what: "correlate".into(),
            message: e.to_string(),
        })?;
        let sut = match &suite.sut {
            Some(spec) => Some(PlannedSut {
                argv: render_argv(&spec.start, &run_id)?,
                spec: spec.clone(),
            }),
            None => None,
        };
        Ok(Plan {
            run_id,
            suite: suite.name.clone(),
            suite_path: loaded.path.display().to_string(),
            base_dir: loaded.base_dir.clone(),
            correlator: Arc::new(correlator),
            producers,
            listeners: listeners.into_values().collect(),
            sut,
            scenarios,
        })
    }
}

/// Renders a run-level template (no event: `correlation_id` is empty, `seq` is 0).
fn render_once(
    text: &str,
    what: impl FnOnce() -> String,
    run_id: &str,
) -> Result<String, HarnessError> {
    let ctx = EventContext {
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

/// A channel's per-run templates ([`ChannelOptions::run_templates`]: subjects, topics,
/// queues, buckets, an `http` URL and headers) rendered, before its driver is built.
///
/// [`ChannelOptions::run_templates`]: roundtrip_core::model::ChannelOptions::run_templates
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
