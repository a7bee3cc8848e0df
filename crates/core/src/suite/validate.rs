//! The semantic rules a suite must follow beyond its YAML shape.
//!
//! Deserialization already rejects unknown keys, wrong types and missing keys. These
//! checks run on the typed [`Suite`] afterwards and are all reported together, each at
//! the offending node:
//!
//! - at least one scenario; scenario names non-empty and unique; tags are words
//!   (letters, digits, `_`, not starting with a digit), each given once;
//! - a `load:` block has 1 to 4,096 `streams` and a `max_in_flight` of at least 1;
//! - `send.to` and `expect.on` name a declared channel (with a "did you mean"), and
//!   point the right way: `http` channels are only sent to, `webhook` channels only
//!   listened on, `dir` channels both;
//! - a send step has at most one of `body`, `text` and `base64` (none sends an empty
//!   body); `base64` decodes; `repeat` and `concurrency` are at least 1;
//! - `sut.start` is not empty; `sut.ready` has exactly one of `http`, `tcp` and `log`;
//! - `correlate` has exactly one of `header`, `json` and `traceparent: true`, and a
//!   `json` rule is a plain member path (`$.a.b`), because the producer injects the id
//!   there;
//! - an expectation has exactly one of `within` and `none_within`, at most one of
//!   `count` and `at_least`, and neither of those with `none_within`;
//! - a `where` predicate has exactly one comparison; JSONPaths (`where[].path`,
//!   `ordered_by`, `correlate.json`) parse as RFC 9535; regexes compile; `schema` is a
//!   valid JSON Schema;
//! - templates parse (`sut.start`, `sut.ready`, `http` URLs and headers, `dir` file
//!   names, send bodies, texts and headers); `channel.NAME.url` (and `.addr`) names a
//!   declared channel that binds an address (`webhook`), and only in `sut.start` and
//!   `sut.ready`, which are rendered once the listeners are up;
//! - deadlines (`within`, `none_within`, `sut.ready.within`, `http` timeouts) are
//!   longer than zero (`grace` and `stop_grace` may be zero); `within`, `none_within`
//!   and `grace` are at most 24 h (any duration at most 30 days, at parse time);
//!   `repeat` at most 1,000,000, `concurrency` 10,000, `count` and `at_least` 1,000,000;
//! - a `webhook` channel listens on `host:port`;
//! - broker channels: subjects, topics, streams, queues and keys are valid templates;
//!   MQTT QoS is 0, 1 or 2; a `redis_pubsub` channel has exactly one of `channel` and
//!   `pattern`; TLS `cert` and `key` come together; `auth` names environment variables;
//! - a transport that carries no headers (`redis_pubsub`, MQTT 3.1.1) is only used with
//!   `correlate.json`, because the correlation id has nowhere else to travel.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::diagnostic::{Diagnostic, container_name, did_you_mean, list, list_or};
use super::locate::{Loc, SpanIndex, YamlPath};
use crate::expect::{Mode, ModeError};
use crate::model::listen::{ListenConfig, RunRule};
use crate::model::{
    ChannelSpec, CorrelationRule, DurationSpec, Expectation, Predicate, ProblemKind, SendStep,
    Suite,
};
use crate::template::{EXPRESSIONS, Expr, Template, TemplateError};

/// Turns paths into diagnostics for one suite text.
#[derive(Debug)]
pub(crate) struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    index: &'a SpanIndex,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str, index: &'a SpanIndex) -> Locator<'a> {
        Locator { file, text, index }
    }

    fn diag(&self, loc: Loc, message: String, help: Option<String>) -> Diagnostic {
        Diagnostic::at(self.file, self.text, loc, message, help)
    }

    /// A problem with the value at `path`.
    pub(crate) fn value_diag(
        &self,
        path: &YamlPath,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Diagnostic {
        self.diag(self.index.value(path), message.into(), Some(help.into()))
    }
}

struct Checker<'a> {
    at: &'a Locator<'a>,
    out: Vec<Diagnostic>,
    /// The suite's channels, for templates that name one.
    channels: &'a std::collections::BTreeMap<String, ChannelSpec>,
}

impl Checker<'_> {
    /// A problem with a whole entry: points at its key.
    fn key(&mut self, path: &YamlPath, message: impl Into<String>, help: impl Into<String>) {
        let loc = self.at.index.key(path);
        self.out
            .push(self.at.diag(loc, message.into(), Some(help.into())));
    }

    /// A problem with a value: points at the value.
    fn value(&mut self, path: &YamlPath, message: impl Into<String>, help: impl Into<String>) {
        let loc = self.at.index.value(path);
        self.out
            .push(self.at.diag(loc, message.into(), Some(help.into())));
    }

    /// Whether the document has a key at `path` (even with a null value).
    fn has(&self, path: &YamlPath) -> bool {
        self.at.index.get(path).is_some()
    }
}

/// Runs every semantic check; the result is unsorted.
pub(crate) fn validate(suite: &Suite, at: &Locator<'_>) -> Vec<Diagnostic> {
    let mut c = Checker {
        at,
        out: Vec::new(),
        channels: &suite.channels,
    };
    let root = YamlPath::root();
    if suite.name.trim().is_empty() {
        c.value(
            &root.key("name"),
            "the suite's `name` is empty",
            "give the suite a short name; reports show it",
        );
    }
    check_sut(&mut c, suite);
    check_correlate(&mut c, &suite.correlate);
    for (name, spec) in &suite.channels {
        check_channel(&mut c, &root.key("channels").key(name), spec);
    }
    check_listen_addresses(&mut c, &suite.channels, None);
    check_scenarios(&mut c, suite);
    c.out
}

fn check_sut(c: &mut Checker<'_>, suite: &Suite) {
    let Some(sut) = &suite.sut else { return };
    let path = YamlPath::root().key("sut");
    let start = path.key("start");
    match sut.start.first() {
        None => c.value(
            &start,
            "`sut.start` is empty",
            "give the program and its arguments, e.g. `start: [./my-service, --port, \"7001\"]`",
        ),
        Some(program) if program.trim().is_empty() => c.value(
            &start.index(0),
            "the program in `sut.start` is empty",
            "the first element is the program to run, e.g. `./my-service`",
        ),
        Some(_) => {}
    }
    for (i, arg) in sut.start.iter().enumerate() {
        check_template(c, &start.index(i), arg, Scope::Sut);
    }

    let ready = path.key("ready");
    for (key, probe) in [("http", &sut.ready.http), ("tcp", &sut.ready.tcp)] {
        if let Some(probe) = probe {
            check_template(c, &ready.key(key), probe, Scope::Sut);
        }
    }
    let kinds = [
        ("http", sut.ready.http.is_some()),
        ("tcp", sut.ready.tcp.is_some()),
        ("log", sut.ready.log.is_some()),
    ];
    exactly_one(
        c,
        &ready,
        &kinds,
        "`sut.ready` names no readiness check",
        "give exactly one of `http: URL` (answers 2xx), `tcp: host:port` (accepts) or \
         `log: TEXT` (printed by the SUT)",
    );
    positive(c, &ready.key("within"), sut.ready.within);
}

fn check_correlate(c: &mut Checker<'_>, rule: &CorrelationRule) {
    let path = YamlPath::root().key("correlate");
    if !c.has(&path) {
        return;
    }
    const HELP: &str = "give exactly one of `header: NAME`, `json: $.path` or `traceparent: true`";
    if rule.traceparent == Some(false) && rule.header.is_none() && rule.json.is_none() {
        c.value(
            &path.key("traceparent"),
            "`traceparent: false` is not a correlation rule",
            "write `traceparent: true` to correlate by trace id alone, or use `header: NAME` \
             or `json: $.path`",
        );
        return;
    }
    let kinds = [
        ("header", rule.header.is_some()),
        ("json", rule.json.is_some()),
        ("traceparent", rule.traceparent.is_some()),
    ];
    exactly_one(c, &path, &kinds, "`correlate` names no rule", HELP);
    if let Some(json) = &rule.json {
        let at = path.key("json");
        if check_json_path(c, &at, json) {
            let mut probe = Value::Object(serde_json::Map::new());
            if !crate::correlate::inject_json(&mut probe, json, "id") {
                c.value(
                    &at,
                    format!("`correlate.json` must be a plain member path, not `{json}`"),
                    "write it like `$.correlationId` or `$.meta.correlation_id`: the \
                     producer injects the id there",
                );
            }
        }
    }
}

fn check_channel(c: &mut Checker<'_>, path: &YamlPath, spec: &ChannelSpec) {
    let opts = path.key(spec.transport());
    let below = |keys: &[String]| keys.iter().fold(opts.clone(), |at, k| at.key(k));
    // The templates as written: rendering happens later, on a copy.
    let mut written = spec.clone();
    for t in written.options_mut().run_templates() {
        check_template(c, &below(&t.at), t.value, Scope::Channel);
    }
    let events = spec.options().event_templates();
    for t in events.key.iter().chain(events.fifo.iter().flatten()) {
        if let Some(template) = t.written {
            check_template(c, &opts.key(t.key), template, Scope::Message);
        }
    }
    for problem in spec.options().problems() {
        let at = below(&problem.at);
        match problem.kind {
            ProblemKind::Value(message) => c.value(&at, message, problem.help),
            ProblemKind::Key(message) => c.key(&at, message, problem.help),
            ProblemKind::AtMostOne(keys) => {
                let set: Vec<(&str, bool)> = keys.iter().map(|k| (*k, true)).collect();
                at_most_one(c, &at, &set, &problem.help);
            }
        }
    }
}

/// A transport without headers can only carry the correlation id in the payload.
fn check_headerless(
    c: &mut Checker<'_>,
    suite: &Suite,
    at: &YamlPath,
    name: &str,
    spec: &ChannelSpec,
) {
    if spec.capabilities().headers
        || matches!(spec, ChannelSpec::Dir(_))
        || suite.correlate.json.is_some()
    {
        return;
    }
    c.value(
        at,
        format!(
            "channel `{name}` uses the `{}` transport, which carries no headers, so the \
             correlation id cannot travel in one",
            spec.transport()
        ),
        "correlate by a payload field, e.g. `correlate: { json: $.correlationId }`; the \
         producer injects the id there",
    );
}

/// Two channels that listen on one `host:port` (other than port 0) cannot both bind it,
/// nor a channel the address of a listener service's API (`api`: its `listen`).
fn check_listen_addresses(
    c: &mut Checker<'_>,
    channels: &BTreeMap<String, ChannelSpec>,
    api: Option<&str>,
) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    if let Some(api) = api
        && !api.trim().ends_with(":0")
    {
        seen.insert(api.trim().to_owned(), "api");
    }
    for (name, spec) in channels {
        let ChannelSpec::Webhook(hook) = spec else {
            continue;
        };
        let Some(listen) = hook.fixed_address() else {
            continue;
        };
        if let Some(first) = seen.insert(listen.to_owned(), name) {
            c.value(
                &YamlPath::root()
                    .key("channels")
                    .key(name)
                    .key("webhook")
                    .key("listen"),
                if first == "api" {
                    format!("channel `{name}` listens on `{listen}`, the API's address")
                } else {
                    format!("channels `{first}` and `{name}` both listen on `{listen}`")
                },
                "give each webhook channel its own port (or port 0 for a free one)",
            );
        }
    }
}

fn check_scenarios(c: &mut Checker<'_>, suite: &Suite) {
    let path = YamlPath::root().key("scenarios");
    if suite.scenarios.is_empty() {
        c.key(
            &path,
            "the suite has no scenarios",
            "add at least one scenario: `- name: …` with `send:` and `expect:`",
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, scenario) in suite.scenarios.iter().enumerate() {
        let at = path.index(i);
        let name = scenario.name.trim();
        if name.is_empty() {
            c.value(
                &at.key("name"),
                "a scenario has an empty name",
                "give every scenario a short, unique name; reports and `--scenario` use it",
            );
        } else if let Some(first) = seen.get(name) {
            let line = c.at.index.value(&path.index(*first).key("name")).line;
            c.value(
                &at.key("name"),
                format!("duplicate scenario name `{name}`"),
                format!("scenario names must be unique; the first `{name}` is on line {line}"),
            );
        } else {
            seen.insert(name, i);
        }
        check_tags(c, &at.key("tags"), &scenario.tags);
        for (j, step) in scenario.send.iter().enumerate() {
            check_send(c, suite, &at.key("send").index(j), step);
        }
        for (j, e) in scenario.expect.iter().enumerate() {
            check_expect(c, suite, &at.key("expect").index(j), e);
        }
        if let Some(load) = &scenario.load {
            check_load(c, &at.key("load"), load);
        }
    }
}

/// A scenario's `load:` block: its numbers in range (what `roundtrip load` needs of the
/// scenario's shape is checked when a load is planned, since a functional run does not
/// need it).
fn check_load(c: &mut Checker<'_>, at: &YamlPath, load: &crate::model::LoadSpec) {
    if let Some(streams) = load.streams
        && !(1..=crate::load::MAX_STREAMS).contains(&streams)
    {
        c.value(
            &at.key("streams"),
            format!("`streams: {streams}` is out of range"),
            format!(
                "give between 1 and {} streams (each is its own sequence, kept in order)",
                crate::load::MAX_STREAMS
            ),
        );
    }
    if load.max_in_flight == Some(0) {
        c.value(
            &at.key("max_in_flight"),
            "`max_in_flight: 0` would refuse every event",
            "give at least 1, or leave it out for no cap",
        );
    }
}

/// Words a tag may not be: pytest's own marks, which would skip or change the test, and
/// the operators of `-m`.
const RESERVED_TAGS: &[&str] = &[
    "skip",
    "skipif",
    "xfail",
    "usefixtures",
    "parametrize",
    "filterwarnings",
    "and",
    "or",
    "not",
];

/// A tag is a word, so that it can be a pytest mark (and a selector on a command line).
fn check_tags(c: &mut Checker<'_>, at: &YamlPath, tags: &[String]) {
    for (i, tag) in tags.iter().enumerate() {
        let word = tag
            .chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && tag
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !word {
            c.value(
                &at.index(i),
                format!("tag `{}` is not a word", crate::escape::escape_text(tag)),
                "write tags with letters, digits and `_`, not starting with a digit (e.g. \
                 `slow`, `smoke_aws`): the pytest plugin makes each one a mark",
            );
        } else if RESERVED_TAGS.contains(&tag.as_str()) {
            c.value(
                &at.index(i),
                format!("tag `{tag}` is a word pytest keeps for itself"),
                "choose another word: pytest would read this one as its own mark (`skip`, \
                 `xfail`, …) or, in `-m`, as an operator (`and`, `or`, `not`)",
            );
        } else if tags[..i].contains(tag) {
            c.value(
                &at.index(i),
                format!("tag `{tag}` is given twice"),
                "give each tag once",
            );
        }
    }
}

/// Checks that `name` is a channel; returns it when it is.
fn channel<'s>(
    c: &mut Checker<'_>,
    suite: &'s Suite,
    at: &YamlPath,
    (key, label): (&str, &str),
    name: &str,
) -> Option<&'s ChannelSpec> {
    if let Some(spec) = suite.channels.get(name) {
        return Some(spec);
    }
    let names = suite.channels.keys().map(String::as_str);
    let help = match did_you_mean(name, names.clone()) {
        Some(h) => h,
        None if suite.channels.is_empty() => {
            "declare it under `channels:`; this suite declares none".to_owned()
        }
        None => format!(
            "declare it under `channels:`, or use one of {}",
            list_or(names)
        ),
    };
    c.value(
        &at.key(key),
        format!("unknown channel `{name}` in `{label}`"),
        help,
    );
    None
}

fn check_send(c: &mut Checker<'_>, suite: &Suite, at: &YamlPath, step: &SendStep) {
    if let Some(spec) = channel(c, suite, at, ("to", "send.to"), &step.to) {
        if !spec.capabilities().produce {
            c.value(
                &at.key("to"),
                format!(
                    "cannot send to channel `{}`: a `{}` channel only listens",
                    step.to,
                    spec.transport()
                ),
                "send to a channel the SUT reads from (`http`, `dir` or a broker); a \
                 `webhook` channel receives what the SUT calls it with (use it in `expect`)",
            );
        } else {
            check_headerless(c, suite, &at.key("to"), &step.to, spec);
        }
    }
    let bodies = [
        ("body", step.body.is_some()),
        ("text", step.text.is_some()),
        ("base64", step.base64.is_some()),
    ];
    at_most_one(
        c,
        at,
        &bodies,
        "give one of `body` (JSON), `text` or `base64`, or none for an empty body",
    );
    if let Some(body) = &step.body {
        check_json_templates(c, &at.key("body"), body);
    }
    if let Some(text) = &step.text {
        check_template(c, &at.key("text"), text, Scope::Message);
    }
    if let Some(b64) = &step.base64
        && let Err(e) = base64::engine::general_purpose::STANDARD.decode(b64.trim())
    {
        c.value(
            &at.key("base64"),
            format!(
                "`base64` is not valid base64: {}",
                e.to_string().trim_end_matches('.').to_lowercase()
            ),
            "encode the bytes as standard base64 with padding (RFC 4648), e.g. `aGVsbG8=`",
        );
    }
    for (name, value) in &step.headers {
        check_template(c, &at.key("headers").key(name), value, Scope::Message);
    }
    for (key, n, max) in [
        ("repeat", step.repeat, MAX_REPEAT),
        ("concurrency", step.concurrency, MAX_CONCURRENCY),
    ] {
        if n == 0 {
            c.value(
                &at.key(key),
                format!("`{key}` must be at least 1"),
                format!("write `{key}: 1` or more, or leave it out (the default is 1)"),
            );
        } else if n > max {
            c.value(
                &at.key(key),
                format!("`{key}` is {n}; a send step allows at most {max}"),
                format!(
                    "every event is tracked until its expectations are decided: split the \
                     load into steps or scenarios of at most {max}"
                ),
            );
        }
    }
}

fn check_expect(c: &mut Checker<'_>, suite: &Suite, at: &YamlPath, e: &Expectation) {
    if let Some(spec) = channel(c, suite, at, ("on", "expect.on"), &e.on) {
        if !spec.capabilities().listen {
            c.value(
                &at.key("on"),
                format!(
                    "cannot expect on channel `{}`: an `{}` channel only sends",
                    e.on,
                    spec.transport()
                ),
                "expect on a channel where the SUT's output arrives (`webhook`, `dir` or a \
                 broker)",
            );
        } else {
            check_headerless(c, suite, &at.key("on"), &e.on, spec);
            if let ChannelSpec::EventBridge(eb) = spec
                && eb.source.is_none()
                && eb.detail_type.is_none()
                && eb.pattern.is_none()
            {
                c.value(
                    &at.key("on"),
                    format!(
                        "the listener on EventBridge channel `{}` has nothing to match: it \
                         needs `source`, `detail_type` or `pattern`",
                        e.on
                    ),
                    "add `source: <the SUT's event source>` to the channel, or a `pattern`",
                );
            }
        }
    }

    for error in Mode::of(e).err().unwrap_or_default() {
        match error {
            ModeError::CountAndAtLeast => c.key(
                &at.key("at_least"),
                "an expectation has both `count` and `at_least`",
                "keep one: `count: N` wants exactly N matches per sent event, `at_least: N` N or \
                 more",
            ),
            ModeError::NoWindow => c.value(
                at,
                "an expectation has neither `within` nor `none_within`",
                "add `within: 2s` (the SLA), or `none_within: 1s` to check that nothing matching \
                 arrives",
            ),
            ModeError::BothWindows => c.key(
                &at.key("none_within"),
                "an expectation has both `within` and `none_within`",
                "keep `within` to require matches by a deadline, or `none_within` to require that \
                 none arrive: write two expectations for both",
            ),
            ModeError::NotForAbsence(key) => c.key(
                &at.key(key),
                format!("`{key}` does not apply to an absence check"),
                format!(
                    "`none_within` requires that nothing matching arrives: remove `{key}`, or use \
                     `within` instead"
                ),
            ),
        }
    }
    for (key, d) in [("within", e.within), ("none_within", e.none_within)] {
        if let Some(d) = d {
            positive(c, &at.key(key), d);
            at_most(c, &at.key(key), d, MAX_WINDOW);
        }
    }

    if let Some(g) = e.grace {
        at_most(c, &at.key("grace"), g, MAX_WINDOW);
    }
    for (key, n) in [("count", e.count), ("at_least", e.at_least)] {
        if let Some(n) = n.filter(|&n| n > MAX_COUNT) {
            c.value(
                &at.key(key),
                format!("`{key}` is {n}; at most {MAX_COUNT} is allowed"),
                "write the number of observations each event must cause",
            );
        }
    }
    for (k, p) in e.predicates.iter().enumerate() {
        check_predicate(c, &at.key("where").index(k), p);
    }
    if let Some(schema) = &e.schema {
        check_schema(c, &at.key("schema"), schema);
    }
    if let Some(path) = &e.ordered_by {
        check_json_path(c, &at.key("ordered_by"), path);
    }
    check_field_matchers(c, at, e);
}

/// `text`, `bytes`, `headers` and `meta`: each compiled on its own, so a problem points
/// at its own key.
fn check_field_matchers(c: &mut Checker<'_>, at: &YamlPath, e: &Expectation) {
    let only = |f: &dyn Fn(&mut Expectation)| {
        let mut one = e.clone();
        one.matches = None;
        one.predicates.clear();
        one.schema = None;
        one.text = None;
        one.bytes = None;
        one.headers.clear();
        one.meta.clear();
        f(&mut one);
        crate::matcher::Matcher::compile(&one).err()
    };
    let report =
        |c: &mut Checker<'_>, path: YamlPath, err: Option<crate::matcher::MatcherError>| {
            if let Some(err) = err {
                c.value(
                    &path,
                    format!("failed to {err}"),
                    "`text` takes equals, contains, regex, not_contains; `bytes` base64, hex, len; \
                 a header or `meta` entry a value or one of equals, regex, exists, absent",
                );
            }
        };
    if e.text.is_some() {
        report(c, at.key("text"), only(&|o| o.text.clone_from(&e.text)));
    }
    if e.bytes.is_some() {
        report(c, at.key("bytes"), only(&|o| o.bytes.clone_from(&e.bytes)));
    }
    for (name, check) in &e.headers {
        let err = only(&|o| {
            o.headers.insert(name.clone(), check.clone());
        });
        report(c, at.key("headers").key(name), err);
    }
    for (name, check) in &e.meta {
        let err = only(&|o| {
            o.meta.insert(name.clone(), check.clone());
        });
        report(c, at.key("meta").key(name), err);
    }
}

fn check_predicate(c: &mut Checker<'_>, at: &YamlPath, p: &Predicate) {
    check_json_path(c, &at.key("path"), &p.path);
    for key in ["equals", "not_equals"] {
        let present = c.has(&at.key(key));
        let value = if key == "equals" {
            &p.equals
        } else {
            &p.not_equals
        };
        if present && value.is_none() {
            c.value(
                &at.key(key),
                format!("`{key}: null` cannot be checked by a predicate"),
                "to require a JSON null, use `match: { field: null }`; to require that the \
                 node is missing, use `exists: false`",
            );
            return;
        }
    }
    let comparisons = [
        ("equals", p.equals.is_some()),
        ("not_equals", p.not_equals.is_some()),
        ("gt", p.gt.is_some()),
        ("gte", p.gte.is_some()),
        ("lt", p.lt.is_some()),
        ("lte", p.lte.is_some()),
        ("exists", p.exists.is_some()),
        ("regex", p.regex.is_some()),
    ];
    match comparisons.iter().filter(|(_, set)| *set).count() {
        0 => c.value(
            at,
            format!("a predicate on `{}` has no comparison", p.path),
            format!(
                "add one of {}",
                list_or(comparisons.iter().map(|(k, _)| *k))
            ),
        ),
        1 => {}
        _ => {
            let given: Vec<&str> = comparisons
                .iter()
                .filter(|(_, set)| *set)
                .map(|(k, _)| *k)
                .collect();
            let second = given
                .iter()
                .copied()
                .min_by_key(|k| {
                    let l = c.at.index.key(&at.key(k));
                    (l.line, l.column)
                })
                .and_then(|first| given.iter().copied().find(|k| *k != first))
                .unwrap_or(given[1]);
            c.key(
                &at.key(second),
                format!(
                    "a predicate has more than one comparison: {}",
                    list(given.iter().copied())
                ),
                "give one comparison per predicate; for a range write two predicates on the \
                 same `path`",
            );
        }
    }
    if let Some(re) = &p.regex
        && let Err(e) = regex::Regex::new(re)
    {
        c.value(
            &at.key("regex"),
            format!("invalid regular expression: {}", regex_message(&e)),
            "check the syntax (Rust `regex` crate); escape literal `.`, `(`, `[`, `+`, `*` or `?` \
             with a backslash",
        );
    }
}

/// The one-line cause of a regex error (its display is a multi-line picture).
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| text.replace('\n', " "), str::to_owned)
}

/// Checks a JSONPath; returns whether it parses.
fn check_json_path(c: &mut Checker<'_>, at: &YamlPath, path: &str) -> bool {
    match JsonPath::parse(path) {
        Ok(_) => true,
        Err(e) => {
            let help = if path.trim_start().starts_with('$') {
                "write an RFC 9535 JSONPath such as `$.order.qty`, `$.items[0].sku` or \
                 `$['odd key']`"
                    .to_owned()
            } else {
                format!(
                    "a JSONPath starts at the root `$`: write `$.{}`",
                    path.trim().trim_start_matches('.')
                )
            };
            c.value(at, format!("invalid JSONPath `{path}`: {e}"), help);
            false
        }
    }
}

fn check_schema(c: &mut Checker<'_>, at: &YamlPath, schema: &Value) {
    if let Err(e) = jsonschema::validator_for(schema) {
        // Point into the schema when the error says where.
        let mut path = at.clone();
        let mut node = schema;
        for raw in e.instance_path().as_str().split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            match node {
                Value::Array(items) => match seg.parse::<usize>() {
                    Ok(i) if i < items.len() => {
                        path = path.index(i);
                        node = &items[i];
                    }
                    _ => break,
                },
                Value::Object(map) => match map.get(&seg) {
                    Some(next) => {
                        path = path.key(&seg);
                        node = next;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        c.value(
            &path,
            format!("`schema` is not a valid JSON Schema: {e}"),
            "fix the schema (draft 2020-12 unless `$schema` says otherwise); \
             https://json-schema.org/understanding-json-schema explains the keywords",
        );
    }
}

/// The longest `within`, `none_within` and `grace`: a scenario waits this long per event.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The most events one send step produces.
const MAX_REPEAT: u32 = 1_000_000;
/// The most events of one step in flight at once.
const MAX_CONCURRENCY: u32 = 10_000;
/// The largest `count` or `at_least`.
const MAX_COUNT: u32 = 1_000_000;

fn at_most(c: &mut Checker<'_>, at: &YamlPath, d: DurationSpec, max: Duration) {
    if d.0 > max {
        let key = match at.0.last() {
            Some(super::locate::Seg::Key(k)) => k.as_str(),
            _ => "the duration",
        };
        c.value(
            at,
            format!("`{key}` is {d}; at most {} is allowed", DurationSpec(max)),
            "a scenario waits this long for each event: write a shorter duration",
        );
    }
}

fn positive(c: &mut Checker<'_>, at: &YamlPath, d: DurationSpec) {
    if d.0 == Duration::ZERO {
        let key = match at.0.last() {
            Some(super::locate::Seg::Key(k)) => k.as_str(),
            _ => "the duration",
        };
        c.value(
            at,
            format!("`{key}` must be longer than zero"),
            "write a positive duration such as `500ms` or `2s`",
        );
    }
}

fn exactly_one(
    c: &mut Checker<'_>,
    at: &YamlPath,
    options: &[(&str, bool)],
    none_message: &str,
    help: &str,
) {
    if options.iter().any(|(_, set)| *set) {
        at_most_one(c, at, options, help);
    } else {
        c.key(at, none_message, help);
    }
}

/// At most one of `options` is set; otherwise points at the second one written.
fn at_most_one(c: &mut Checker<'_>, at: &YamlPath, options: &[(&str, bool)], help: &str) {
    let mut given: Vec<&str> = options
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
    if given.len() < 2 {
        return;
    }
    let owner = container_name(at);
    let message = match given.as_slice() {
        [a, b] => format!("{owner} has both `{a}` and `{b}`"),
        _ => format!(
            "{owner} has more than one of {}",
            list(given.iter().copied())
        ),
    };
    given.sort_by_key(|k| {
        let l = c.at.index.key(&at.key(k));
        (l.line, l.column)
    });
    c.key(&at.key(given[1]), message, help);
}

/// Where a template is rendered, which decides what it may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `sut.start` and `sut.ready`: rendered once the listeners are up.
    Sut,
    /// A channel's options rendered per run: before any listener starts.
    Channel,
    /// A message, rendered per event.
    Message,
}

fn check_template(c: &mut Checker<'_>, at: &YamlPath, s: &str, scope: Scope) {
    match Template::parse(s) {
        Ok(t) => {
            for e in t.expressions() {
                if let Expr::ChannelAddress { channel, .. } = e {
                    check_channel_address(c, at, &e.to_string(), channel, scope);
                }
            }
        }
        Err(e) => {
            let loc = c.at.index.value(at);
            report_template(c, loc, s, &e);
        }
    }
}

/// `channel.NAME.url` names a declared channel that binds an address, and is used
/// where that address is known.
fn check_channel_address(
    c: &mut Checker<'_>,
    at: &YamlPath,
    expr: &str,
    channel: &str,
    scope: Scope,
) {
    const WHERE: &str = "a channel's address is known once its listener started: name it in \
                         `sut.start` or `sut.ready`";
    match scope {
        Scope::Sut => {}
        Scope::Channel => {
            return c.value(
                at,
                format!("`{{{{ {expr} }}}}` cannot be used in a channel's options"),
                format!("{WHERE}; a channel's options are rendered before any listener starts"),
            );
        }
        Scope::Message => {
            return c.value(
                at,
                format!("`{{{{ {expr} }}}}` cannot be used in a message"),
                WHERE,
            );
        }
    }
    let Some(spec) = c.channels.get(channel) else {
        let help =
            did_you_mean(channel, c.channels.keys().map(String::as_str)).unwrap_or_else(|| {
                format!(
                    "declare it under `channels`, or name one of {}",
                    list(c.channels.keys().map(String::as_str))
                )
            });
        return c.value(
            at,
            format!("`{{{{ {expr} }}}}` names no declared channel: there is no `{channel}`"),
            help,
        );
    };
    if !spec.options().binds_address() {
        c.value(
            at,
            format!(
                "`{{{{ {expr} }}}}`: channel `{channel}` is a `{}` channel, which binds no \
                 address of its own",
                spec.transport()
            ),
            "only a `webhook` channel has one (its `listen`; port 0 picks a free port)",
        );
    }
}

/// Checks every string (and key) of a JSON body, pointing at the offending one.
fn check_json_templates(c: &mut Checker<'_>, at: &YamlPath, v: &Value) {
    match v {
        Value::String(s) => check_template(c, at, s, Scope::Message),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_json_templates(c, &at.index(i), item);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let child = at.key(k);
                match Template::parse(k) {
                    Ok(t) => {
                        for e in t.expressions() {
                            if let Expr::ChannelAddress { channel, .. } = e {
                                let expr = e.to_string();
                                check_channel_address(c, &child, &expr, channel, Scope::Message);
                            }
                        }
                    }
                    Err(e) => {
                        let loc = c.at.index.key(&child);
                        report_template(c, loc, k, &e);
                    }
                }
                check_json_templates(c, &child, item);
            }
        }
        _ => {}
    }
}

fn report_template(c: &mut Checker<'_>, loc: Loc, s: &str, e: &TemplateError) {
    let expressions = list(EXPRESSIONS.iter().copied());
    let (message, help) = match e {
        TemplateError::Unterminated { .. } => (
            "unterminated `{{` in a template".to_owned(),
            "close it with `}}`: templates look like `{{ uuid() }}`".to_owned(),
        ),
        TemplateError::Empty { .. } => (
            "empty template expression `{{ }}`".to_owned(),
            format!("write one of {expressions} inside the braces"),
        ),
        TemplateError::Unknown {
            expr,
            suggestion: Some(s),
            ..
        } => (
            format!("unknown template expression `{expr}`"),
            format!("did you mean `{s}`?"),
        ),
        TemplateError::Unknown { expr, .. } => (
            format!("unknown template expression `{expr}`"),
            format!("a template expression is one of {expressions}"),
        ),
        TemplateError::Arguments { expr, reason, .. } => (
            format!("invalid template expression `{expr}`"),
            reason.clone(),
        ),
        TemplateError::EnvUnset { name } => (
            format!("environment variable `{name}` is not set"),
            "set it, or give a default".to_owned(),
        ),
        TemplateError::Unavailable { expr, reason } => (
            format!("`{{{{ {expr} }}}}` has no value here"),
            reason.clone(),
        ),
    };
    let loc = e
        .column()
        .and_then(|col| template_loc(c.at.text, loc, s, col))
        .unwrap_or(loc);
    c.out.push(c.at.diag(loc, message, Some(help)));
}

/// The exact place of the `{{` at `col` (1-based, in `s`) when the string is written on
/// one line as is (plain or quoted, no escapes before it); otherwise `None`.
fn template_loc(text: &str, loc: Loc, s: &str, col: usize) -> Option<Loc> {
    let line = text
        .lines()
        .nth(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
    let start = usize::try_from(loc.column).ok()?.checked_sub(1)?;
    let written: Vec<char> = line.chars().skip(start).collect();
    let quoted = matches!(written.first(), Some('"' | '\''));
    let offset = usize::from(quoted) + col - 1;
    let before: String = s.chars().take(col - 1).collect();
    let shown: String = written
        .iter()
        .skip(usize::from(quoted))
        .take(col - 1)
        .collect();
    let at_braces = written.get(offset) == Some(&'{') && written.get(offset + 1) == Some(&'{');
    if shown != before || !at_braces {
        return None;
    }
    let rest: String = s.chars().skip(col - 1).collect();
    let len = rest
        .find("}}")
        .map_or(rest.chars().count(), |end| rest[..end + 2].chars().count());
    Some(Loc {
        line: loc.line,
        column: loc.column + offset as u64,
        len: len as u64,
    })
}

/// Runs every semantic check of a listener service's config; the result is unsorted.
pub(crate) fn validate_listen(config: &ListenConfig, at: &Locator<'_>) -> Vec<Diagnostic> {
    let mut c = Checker {
        at,
        out: Vec::new(),
        channels: &config.channels,
    };
    let root = YamlPath::root();
    if config.name.trim().is_empty() {
        c.value(
            &root.key("name"),
            "the listener's `name` is empty",
            "give the service a short name; logs, metrics and its evidence run show it",
        );
    }
    if config.store.as_deref().is_some_and(|s| s.trim().is_empty()) {
        c.value(
            &root.key("store"),
            "`store` is empty",
            "write a store URL such as `postgres://roundtrip@db/roundtrip`, or leave `store` \
             out and pass `--store`",
        );
    }
    check_api(&mut c, config);
    check_run_rule(&mut c, &config.run);
    check_correlate(&mut c, &config.correlate);
    if let Some(retention) = config.retention {
        positive(&mut c, &root.key("retention"), retention);
    }
    if config.channels.is_empty() {
        c.key(
            &root.key("channels"),
            "the listener config has no channels",
            "add the channels to record, as a suite writes them, e.g. \
             `out: { webhook: { listen: 0.0.0.0:8081 } }`",
        );
    }
    for (name, spec) in &config.channels {
        let path = root.key("channels").key(name);
        check_channel(&mut c, &path, spec);
        if !spec.capabilities().listen {
            c.key(
                &path,
                format!(
                    "channel `{name}` uses the `{}` transport, which roundtrip only sends to",
                    spec.transport()
                ),
                "a listener service records outputs: use a `webhook` channel for the calls \
                 the SUT makes, or a broker channel for what it publishes",
            );
        } else if !spec.capabilities().headers && config.run.json.is_none() {
            c.key(
                &path,
                format!(
                    "channel `{name}` uses the `{}` transport, which carries no headers, so \
                     the run id cannot travel in one",
                    spec.transport()
                ),
                "tie observations to runs by a payload field: `run: { json: $.run }`",
            );
        }
    }
    check_listen_addresses(&mut c, &config.channels, Some(&config.api.listen));
    c.out
}

fn check_api(c: &mut Checker<'_>, config: &ListenConfig) {
    let api = YamlPath::root().key("api");
    let listen = config.api.listen.trim();
    match listen.parse::<std::net::SocketAddr>() {
        Err(_) => c.value(
            &api.key("listen"),
            format!("`api.listen` must be an IP address and port, not `{listen}`"),
            "write e.g. `127.0.0.1:7070`, `0.0.0.0:7070` or `[::]:7070` (port 0 picks a \
             free one)",
        ),
        Ok(addr) if !addr.ip().is_loopback() && !config.api.tokens.any() => c.value(
            &api.key("listen"),
            format!("the API listens on `{listen}`, beyond this host, and no token guards it"),
            "add `tokens: { read: [VARIABLE] }` naming an environment variable that holds a \
             token, or listen on `127.0.0.1`",
        ),
        Ok(_) => {}
    }
    let tokens = api.key("tokens");
    let mut seen = HashMap::new();
    for (kind, names) in [
        ("read", &config.api.tokens.read),
        ("admin", &config.api.tokens.admin),
    ] {
        for (i, name) in names.iter().enumerate() {
            let at = tokens.key(kind).index(i);
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                c.value(
                    &at,
                    format!(
                        "`{}` is not an environment variable's name",
                        crate::escape::escape_text(name)
                    ),
                    "name the variable that holds the token (letters, digits and `_`), \
                     never the token itself",
                );
            } else if let Some(first) = seen.insert(name.as_str(), kind) {
                c.value(
                    &at,
                    format!("`{name}` is named twice (under `{first}` and `{kind}`)"),
                    "name each token's variable once: an admin token may read too",
                );
            }
        }
    }
    if let Some(timeout) = config.api.request_timeout {
        positive(c, &api.key("request_timeout"), timeout);
        at_most(c, &api.key("request_timeout"), timeout, MAX_REQUEST_TIMEOUT);
    }
    if let Some(tls) = &config.api.tls {
        for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
            if file.trim().is_empty() {
                c.value(
                    &api.key("tls").key(key),
                    format!("`api.tls.{key}` is empty"),
                    "name a PEM file, relative to this config file",
                );
            }
        }
    }
}

/// The longest `api.request_timeout`.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

fn check_run_rule(c: &mut Checker<'_>, rule: &RunRule) {
    let path = YamlPath::root().key("run");
    if !c.has(&path) {
        return;
    }
    exactly_one(
        c,
        &path,
        &[
            ("header", rule.header.is_some()),
            ("json", rule.json.is_some()),
        ],
        "`run` names no rule",
        "give exactly one of `header: NAME` or `json: $.path`",
    );
    if let Some(header) = &rule.header
        && (header.is_empty() || !header.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
    {
        c.value(
            &path.key("header"),
            format!(
                "`{}` is not a header name",
                crate::escape::escape_text(header)
            ),
            "write a header name such as `x-roundtrip-run`",
        );
    }
    if let Some(json) = &rule.json {
        check_json_path(c, &path.key("json"), json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_errors_are_one_line() {
        // Built at run time so that clippy does not flag the deliberately bad pattern.
        let pattern = ["a", "(", "b"].concat();
        let e = regex::Regex::new(&pattern).expect_err("unclosed");
        assert_eq!(regex_message(&e), "unclosed group");
    }

    #[test]
    fn template_locations_follow_the_written_string() {
        let text = "text: 'id {{ seq'\n";
        let value = Loc {
            line: 1,
            column: 7,
            len: 11,
        };
        let loc = template_loc(text, value, "id {{ seq", 4).expect("found");
        assert_eq!((loc.line, loc.column, loc.len), (1, 11, 6));
        // Escapes before the braces: give up rather than point at the wrong place.
        let text = "text: \"a\\tb {{\"\n";
        assert_eq!(
            template_loc(
                text,
                Loc {
                    line: 1,
                    column: 7,
                    len: 9
                },
                "a\tb {{",
                5
            ),
            None
        );
    }
}
