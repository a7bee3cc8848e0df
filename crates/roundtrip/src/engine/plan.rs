//! The plan: a loaded suite resolved once for one run, before anything starts (as
//! ripgrep turns its low-level arguments into high-level ones). Every channel a scenario
//! uses is rendered for the run and bound to its driver, every send step is compiled
//! into a [`MessageTemplate`], the correlation rule and the SUT's command line are
//! resolved. The rest of the engine takes a [`Plan`], never the suite model, so a suite
//! this build cannot run fails here, as a usage error, with nothing touched.
//!
//! A planned listener is a local driver, or, for a channel a deployed `roundtrip listen`
//! records (`--remote`), a [`RemoteListener`] that waits on what the service recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use roundtrip_core::correlate::Correlator;
use roundtrip_core::model::{ChannelSpec, CorrelationRule, Expectation, SutSpec};
use roundtrip_core::suite::LoadedSuite;
use roundtrip_core::template::{Expr, Template};

use super::bindings::Bindings;
use super::produce::{EventContext, MessageTemplate};
use crate::error::HarnessError;
use crate::remote::{Feed, Remote, RemoteListener};
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
    /// The run's ports and, once they started, its listeners' addresses.
    pub bindings: Arc<Bindings>,
    /// One producer per channel that a scenario sends to.
    pub producers: BTreeMap<String, Arc<dyn Producer>>,
    /// One listener per channel that a scenario expects on or the SUT's templates name
    /// (`{{ channel.NAME.url }}`), in channel order.
    pub listeners: Vec<PlannedListener>,
    /// The SUT to start, if the suite starts one.
    pub sut: Option<PlannedSut>,
    /// The scenarios, in file order.
    pub scenarios: Vec<PlannedScenario>,
    /// What a client driving the run step by step needs to send to any channel
    /// ([`Plan::live`]); `None` for a run of the suite's own scenarios.
    pub live: Option<LiveChannels>,
}

/// Every channel of a live run, rendered for it, with what it takes to build a producer
/// and a message for a send the suite does not hold.
#[derive(Debug)]
pub(crate) struct LiveChannels {
    /// Every channel of the suite, its run templates rendered.
    pub channels: BTreeMap<String, ChannelSpec>,
    /// The suite's correlation rule (a message stamps its correlation id as it says).
    pub correlate: CorrelationRule,
    /// Where relative paths are resolved.
    pub ctx: DriverContext,
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

/// The SUT: its spec, with its command line and probe compiled. They are rendered once
/// the listeners are up, since they may name where a listener was bound.
#[derive(Debug)]
pub(crate) struct PlannedSut {
    /// How to start and probe it, as written.
    pub spec: SutSpec,
    /// The program and its arguments.
    start: Vec<Template>,
    /// `ready.http` and `ready.tcp`, when given.
    ready_http: Option<Template>,
    ready_tcp: Option<Template>,
}

impl PlannedSut {
    fn new(spec: &SutSpec) -> Result<PlannedSut, HarnessError> {
        let compile = |text: &str, what: &str| {
            Template::parse(text).map_err(|e| HarnessError::Template {
                what: format!("{what} `{text}`"),
                message: e.to_string(),
            })
        };
        Ok(PlannedSut {
            start: spec
                .start
                .iter()
                .map(|arg| compile(arg, "sut.start argument"))
                .collect::<Result<_, _>>()?,
            ready_http: spec
                .ready
                .http
                .as_deref()
                .map(|t| compile(t, "sut.ready.http"))
                .transpose()?,
            ready_tcp: spec
                .ready
                .tcp
                .as_deref()
                .map(|t| compile(t, "sut.ready.tcp"))
                .transpose()?,
            spec: spec.clone(),
        })
    }

    /// The channels its templates name (`{{ channel.NAME.url }}`).
    fn channels(&self) -> impl Iterator<Item = &str> {
        self.start
            .iter()
            .chain(&self.ready_http)
            .chain(&self.ready_tcp)
            .flat_map(Template::expressions)
            .filter_map(|e| match e {
                Expr::ChannelAddress { channel, .. } => Some(channel.as_str()),
                _ => None,
            })
    }

    /// The spec with its probe rendered, and the command line.
    pub(crate) fn render(
        &self,
        run_id: &str,
        bindings: &Bindings,
    ) -> Result<(SutSpec, Vec<String>), HarnessError> {
        let ctx = EventContext {
            run_id,
            correlation_id: "",
            seq: 0,
            stream: 0,
            bindings,
        };
        let render = |t: &Template, what: &str| {
            t.render(&ctx).map_err(|e| HarnessError::Template {
                what: what.to_owned(),
                message: e.to_string(),
            })
        };
        let argv = self
            .start
            .iter()
            .zip(&self.spec.start)
            .map(|(t, arg)| render(t, &format!("sut.start argument `{arg}`")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut spec = self.spec.clone();
        if let Some(t) = &self.ready_http {
            spec.ready.http = Some(render(t, "sut.ready.http")?);
        }
        if let Some(t) = &self.ready_tcp {
            spec.ready.tcp = Some(render(t, "sut.ready.tcp")?);
        }
        Ok((spec, argv))
    }
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

/// The channels a listener service records for the run, and how their observations
/// come.
#[derive(Debug, Clone)]
pub(crate) struct RemotePlan {
    pub remote: Remote,
    /// The service's channels, with their transports.
    pub channels: BTreeMap<String, String>,
    pub feed: Feed,
}

impl Plan {
    /// Resolves `loaded` for the run `run_id`.
    #[cfg(test)]
    pub(crate) fn new(loaded: &LoadedSuite, run_id: String) -> Result<Plan, HarnessError> {
        Plan::with_remote(loaded, run_id, None)
    }

    /// Resolves `loaded` for the run `run_id`; a listened channel that `remote` records
    /// gets a [`RemoteListener`] instead of a driver of its own.
    pub(crate) fn with_remote(
        loaded: &LoadedSuite,
        run_id: String,
        remote: Option<&RemotePlan>,
    ) -> Result<Plan, HarnessError> {
        Plan::build(loaded, run_id, remote, None)
    }

    /// Resolves `loaded` for a run a client drives step by step (`roundtrip serve`):
    /// besides what its scenarios use, every channel in `listen` is listened on, and
    /// every channel is rendered, so that a send the suite does not hold can be made.
    pub(crate) fn live(
        loaded: &LoadedSuite,
        run_id: String,
        listen: &[String],
    ) -> Result<Plan, HarnessError> {
        Plan::build(loaded, run_id, None, Some(listen))
    }

    fn build(
        loaded: &LoadedSuite,
        run_id: String,
        remote: Option<&RemotePlan>,
        live: Option<&[String]>,
    ) -> Result<Plan, HarnessError> {
        let suite = &loaded.suite;
        let ctx = DriverContext {
            base_dir: loaded.base_dir.clone(),
        };
        let bindings = Arc::new(Bindings::new());
        let mut rendered: BTreeMap<&str, ChannelSpec> = BTreeMap::new();
        let mut channel = |name: &str| -> Result<Option<ChannelSpec>, HarnessError> {
            if let Some(spec) = rendered.get(name) {
                return Ok(Some(spec.clone()));
            }
            let Some((key, spec)) = suite.channels.get_key_value(name) else {
                return Ok(None);
            };
            let spec = render_channel(name, spec, &run_id, &bindings)?;
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
                listen(&e.on, &mut listeners, &mut channel, &ctx, remote)?;
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
        let sut = suite.sut.as_ref().map(PlannedSut::new).transpose()?;
        // A channel the SUT is told about is listened on, whichever scenarios run.
        for name in sut.iter().flat_map(PlannedSut::channels) {
            listen(name, &mut listeners, &mut channel, &ctx, remote)?;
        }
        let live = match live {
            None => None,
            Some(names) => {
                for name in names {
                    listen(name, &mut listeners, &mut channel, &ctx, remote)?;
                }
                let mut channels = BTreeMap::new();
                for name in suite.channels.keys() {
                    if let Some(spec) = channel(name)? {
                        channels.insert(name.clone(), spec);
                    }
                }
                Some(LiveChannels {
                    channels,
                    correlate: suite.correlate.clone(),
                    ctx: ctx.clone(),
                })
            }
        };
        Ok(Plan {
            run_id,
            suite: suite.name.clone(),
            suite_path: loaded.path.display().to_string(),
            base_dir: loaded.base_dir.clone(),
            correlator: Arc::new(correlator),
            bindings,
            producers,
            listeners: listeners.into_values().collect(),
            sut,
            scenarios,
            live,
        })
    }
}

/// Plans a listener for channel `name`, once.
fn listen(
    name: &str,
    listeners: &mut BTreeMap<String, PlannedListener>,
    channel: &mut impl FnMut(&str) -> Result<Option<ChannelSpec>, HarnessError>,
    ctx: &DriverContext,
    remote: Option<&RemotePlan>,
) -> Result<(), HarnessError> {
    if listeners.contains_key(name) {
        return Ok(());
    }
    let Some(spec) = channel(name)? else {
        return Ok(());
    };
    let driver: Box<dyn Listener> = match remote {
        Some(r) if r.channels.contains_key(name) => {
            remote_channel(r, name, &spec)?;
            Box::new(RemoteListener::new(name, r.remote.clone(), r.feed))
        }
        _ => registry::listener(name, &spec, ctx)?,
    };
    listeners.insert(
        name.to_owned(),
        PlannedListener {
            channel: name.to_owned(),
            transport: spec.transport(),
            max_payload: registry::max_payload(&spec),
            driver,
        },
    );
    Ok(())
}

/// A suite's channel that the service records must be the same kind of channel, and
/// must not depend on the run: the service rendered its options once, for itself.
fn remote_channel(r: &RemotePlan, name: &str, spec: &ChannelSpec) -> Result<(), HarnessError> {
    let refuse = |message: String| {
        HarnessError::Remote(crate::remote::RemoteError {
            url: roundtrip_core::redact::url(&r.remote.url),
            message,
            usage: true,
        })
    };
    let theirs = r.channels.get(name).map_or("", String::as_str);
    if theirs != spec.transport() {
        return Err(refuse(format!(
            "it records channel `{name}` as a `{theirs}` channel, and the suite's is a `{}` \
             one: name the suite's channels as the service does",
            spec.transport()
        )));
    }
    let mut written = spec.clone();
    if let Some(t) = written
        .options_mut()
        .run_templates()
        .into_iter()
        .find(|t| t.value.contains("{{"))
    {
        return Err(refuse(format!(
            "the suite's channel `{name}` has a template in its {} (`{}`), rendered per run, \
             but the service listens on what it rendered once, for itself",
            t.what,
            roundtrip_core::redact::text(t.value)
        )));
    }
    Ok(())
}

/// Renders a run-level template (no event: `correlation_id` is empty, `seq` is 0).
fn render_once(
    text: &str,
    what: impl FnOnce() -> String,
    run_id: &str,
    bindings: &Bindings,
) -> Result<String, HarnessError> {
    let ctx = EventContext {
        run_id,
        correlation_id: "",
        seq: 0,
        stream: 0,
        bindings,
    };
    Template::parse(text)
        .and_then(|t| t.render(&ctx))
        .map_err(|e| HarnessError::Template {
            what: what(),
            message: e.to_string(),
        })
}

/// A listener service's channel rendered once, at its start: `{{ run_id }}` is the
/// service's own run.
pub(crate) fn render_channel_for_service(
    name: &str,
    spec: &ChannelSpec,
    run_id: &str,
) -> Result<ChannelSpec, HarnessError> {
    render_channel(name, spec, run_id, &Bindings::new())
}

/// A channel's per-run templates ([`ChannelOptions::run_templates`]: subjects, topics,
/// queues, buckets, an `http` URL and headers) rendered, before its driver is built.
///
/// [`ChannelOptions::run_templates`]: roundtrip_core::model::ChannelOptions::run_templates
fn render_channel(
    name: &str,
    spec: &ChannelSpec,
    run_id: &str,
    bindings: &Bindings,
) -> Result<ChannelSpec, HarnessError> {
    let mut spec = spec.clone();
    for t in spec.options_mut().run_templates() {
        *t.value = render_once(
            t.value,
            || format!("{} of channel `{name}`", t.what),
            run_id,
            bindings,
        )?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use roundtrip_core::suite::{LoadedSuite, parse};

    use super::*;
    use crate::transport::BoundAddress;

    const SUITE: &str = r#"
name: plan
sut:
  start: [./pipeline, --listen, "127.0.0.1:{{ port.in }}", --dead-letter, "{{ channel.dead.url }}",
          --emit, "{{ channel.out.addr }}", "{{ run_id }}"]
  ready: { http: "http://127.0.0.1:{{ port.in }}/health", within: 1s }
channels:
  in: { http: { url: "http://127.0.0.1:{{ port.in }}/events" } }
  out: { webhook: { listen: "127.0.0.1:0", path: /out } }
  dead: { webhook: { listen: "127.0.0.1:0", path: /dead } }
scenarios:
  - name: s
    send: [ { to: in } ]
    expect: [ { on: out, within: 1s } ]
"#;

    fn plan() -> Plan {
        let loaded = LoadedSuite {
            suite: parse("plan.yaml", SUITE).expect("a valid suite"),
            path: "plan.yaml".into(),
            base_dir: ".".into(),
        };
        Plan::new(&loaded, "run-1".to_owned()).expect("plans")
    }

    #[test]
    fn a_channel_the_sut_is_told_about_is_listened_on_though_no_scenario_expects_on_it() {
        let plan = plan();
        let listened: Vec<&str> = plan.listeners.iter().map(|l| l.channel.as_str()).collect();
        assert_eq!(listened, ["dead", "out"]);
    }

    #[test]
    fn the_sut_is_rendered_with_the_run_s_port_and_its_listeners_addresses() {
        let plan = plan();
        // The channel took the port when it was planned, and holds it for the SUT.
        let port = plan.bindings.port("in").expect("chosen at plan time");
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err(),
            "held"
        );
        let sut = plan.sut.as_ref().expect("a SUT");
        let early = sut
            .render(&plan.run_id, &plan.bindings)
            .expect_err("no listener yet");
        assert!(
            early
                .to_string()
                .contains("channel `dead` has no listener bound"),
            "{early}"
        );
        for (channel, at) in [("out", 41001), ("dead", 41002)] {
            let local = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, at));
            plan.bindings
                .bind_channel(channel, BoundAddress::http(local, &format!("/{channel}")));
        }
        let (spec, argv) = sut.render(&plan.run_id, &plan.bindings).expect("renders");
        assert_eq!(
            argv,
            [
                "./pipeline".to_owned(),
                "--listen".to_owned(),
                format!("127.0.0.1:{port}"),
                "--dead-letter".to_owned(),
                "http://127.0.0.1:41002/dead".to_owned(),
                "--emit".to_owned(),
                "127.0.0.1:41001".to_owned(),
                "run-1".to_owned(),
            ]
        );
        assert_eq!(
            spec.ready.http,
            Some(format!("http://127.0.0.1:{port}/health"))
        );
        let producer_url = plan.producers.get("in").map(|p| format!("{p:?}"));
        assert!(
            producer_url.is_some_and(|p| p.contains(&format!("port: Some({port})"))),
            "the http channel was rendered with the same port"
        );
    }
}
