//! The semantic rules a suite must follow beyond its YAML shape.
//!
//! Deserialization already rejects unknown keys, wrong types and missing keys. These
//! checks run on the typed [`Suite`] afterwards and are all reported together, each at
//! the offending node:
//!
//! - at least one scenario; scenario names non-empty and unique;
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
//! - templates parse (`sut.start`, `http` URLs and headers, `dir` file names, send
//!   bodies, texts and headers);
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

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::diagnostic::Diagnostic;
use super::locate::{Loc, SpanIndex, YamlPath};
use crate::model::{
    AwsEndpoint, ChannelSpec, Connection, DurationSpec, Expectation, Predicate, SendStep, Suite,
};
use crate::template::{EXPRESSIONS, Template, TemplateError};

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
    check_correlate(&mut c, suite);
    for (name, spec) in &suite.channels {
        check_channel(&mut c, &root.key("channels").key(name), spec);
    }
    check_listen_addresses(&mut c, suite);
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
        check_template(c, &start.index(i), arg);
    }

    let ready = path.key("ready");
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

fn check_correlate(c: &mut Checker<'_>, suite: &Suite) {
    let path = YamlPath::root().key("correlate");
    if !c.has(&path) {
        return;
    }
    let rule = &suite.correlate;
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
    match spec {
        ChannelSpec::Http(http) => {
            check_template(c, &opts.key("url"), &http.url);
            check_http_url(c, &opts.key("url"), &http.url);
            let method = http.method.trim();
            if method.is_empty() || !method.bytes().all(is_token_byte) {
                c.value(
                    &opts.key("method"),
                    format!("`{}` is not an HTTP method", http.method),
                    "write a method such as `POST`, `PUT` or `GET`",
                );
            }
            for (name, value) in &http.headers {
                check_template(c, &opts.key("headers").key(name), value);
                check_header(c, &opts.key("headers").key(name), name, value);
            }
            if let Some(t) = http.timeout {
                positive(c, &opts.key("timeout"), t);
            }
        }
        ChannelSpec::Webhook(hook) => {
            if let Err(why) = host_port(&hook.listen) {
                c.value(
                    &opts.key("listen"),
                    format!("`listen` must be `host:port`, not `{}`: {why}", hook.listen),
                    "write it like `127.0.0.1:7002` (port 0 picks a free port)",
                );
            }
            if !hook.path.starts_with('/') {
                c.value(
                    &opts.key("path"),
                    format!("a webhook path must start with `/`, not `{}`", hook.path),
                    format!("write `path: /{}`", hook.path),
                );
            }
        }
        ChannelSpec::Dir(dir) => {
            if let Some(name) = &dir.file_name {
                check_template(c, &opts.key("file_name"), name);
                let literal = without_templates(name, "");
                if name.trim().is_empty()
                    || literal.contains(['/', '\\', '\0'])
                    || matches!(literal.as_str(), "." | "..")
                {
                    c.value(
                        &opts.key("file_name"),
                        format!("`file_name` must be a plain file name, not `{name}`"),
                        "files are written inside the channel's `path`: give a name without \
                         `/`, such as `{{ correlation_id }}.json`",
                    );
                }
            }
        }
        ChannelSpec::Nats(n) => {
            check_template(c, &opts.key("subject"), &n.subject);
            check_connection(c, &opts, n, false);
            if n.buffer == Some(0) {
                c.value(
                    &opts.key("buffer"),
                    "`buffer` must be at least 1",
                    "leave it out for the default of 1,048,576 messages",
                );
            }
        }
        ChannelSpec::JetStream(j) => {
            check_template(c, &opts.key("stream"), &j.stream);
            check_template(c, &opts.key("subject"), &j.subject);
            if let Some(d) = &j.durable {
                check_template(c, &opts.key("durable"), d);
            }
            if let Some(t) = j.ack_wait {
                positive(c, &opts.key("ack_wait"), t);
            }
            check_connection(c, &opts, j, false);
        }
        ChannelSpec::RedisStream(r) => {
            check_template(c, &opts.key("stream"), &r.stream);
            if let Some(g) = &r.group {
                check_template(c, &opts.key("group"), g);
            }
            check_connection(c, &opts, r, true);
        }
        ChannelSpec::RedisPubSub(r) => {
            exactly_one(
                c,
                &opts,
                &[
                    ("channel", r.channel.is_some()),
                    ("pattern", r.pattern.is_some()),
                ],
                "a `redis_pubsub` channel needs `channel` or `pattern`",
                "give `channel: NAME` (PUBLISH / SUBSCRIBE) or, for a listener, \
                 `pattern: GLOB` (PSUBSCRIBE)",
            );
            for (key, v) in [("channel", &r.channel), ("pattern", &r.pattern)] {
                if let Some(v) = v {
                    check_template(c, &opts.key(key), v);
                }
            }
            check_connection(c, &opts, r, true);
        }
        ChannelSpec::Amqp(a) => {
            for (key, v) in [
                ("exchange", &a.exchange),
                ("routing_key", &a.routing_key),
                ("queue", &a.queue),
            ] {
                if let Some(v) = v {
                    check_template(c, &opts.key(key), v);
                }
            }
            if a.prefetch == Some(0) {
                c.value(
                    &opts.key("prefetch"),
                    "`prefetch` must be at least 1",
                    "leave it out for the default of 512 unacknowledged deliveries",
                );
            }
            check_connection(c, &opts, a, false);
        }
        ChannelSpec::Mqtt(m) => {
            check_template(c, &opts.key("topic"), &m.topic);
            if m.qos > 2 {
                c.value(
                    &opts.key("qos"),
                    format!("MQTT QoS must be 0, 1 or 2, not {}", m.qos),
                    "use 1 (at least once) unless the SUT publishes with 0 or 2",
                );
            }
            check_connection(c, &opts, m, false);
        }
        ChannelSpec::Kafka(k) => {
            check_template(c, &opts.key("topic"), &k.topic);
            for (key, v) in [("key", &k.key), ("group", &k.group)] {
                if let Some(v) = v {
                    check_template(c, &opts.key(key), v);
                }
            }
            if k.brokers.trim().is_empty() {
                c.value(
                    &opts.key("brokers"),
                    "`brokers` is empty",
                    "write the bootstrap servers, e.g. `127.0.0.1:9092`",
                );
            }
            check_connection(c, &opts, k, false);
        }
        ChannelSpec::S3(s3) => {
            check_template(c, &opts.key("bucket"), &s3.bucket);
            for (key, v) in [
                ("key", &s3.key),
                ("prefix", &s3.prefix),
                ("notifications", &s3.notifications),
                ("notifications_topic", &s3.notifications_topic),
                ("notifications_bus", &s3.notifications_bus),
            ] {
                if let Some(v) = v {
                    check_template(c, &opts.key(key), v);
                }
            }
            let sources = [
                ("notifications", s3.notifications.is_some()),
                ("notifications_topic", s3.notifications_topic.is_some()),
                ("notifications_bus", s3.notifications_bus.is_some()),
            ];
            if let [_, (second, _), ..] = sources
                .iter()
                .filter(|(_, set)| *set)
                .copied()
                .collect::<Vec<_>>()[..]
            {
                c.key(
                    &opts.key(second),
                    "an `s3` channel takes its notifications from one place only",
                    "keep one of `notifications` (a queue the bucket notifies), \
                     `notifications_topic` (a topic it notifies) and `notifications_bus` (an \
                     EventBridge bus it notifies)",
                );
            }
            if let Some(d) = s3.poll_max {
                positive(c, &opts.key("poll_max"), d);
            }
            check_aws(c, &opts, s3);
        }
        ChannelSpec::Sqs(q) => {
            check_template(c, &opts.key("queue"), &q.queue);
            for (key, v) in [("group_id", &q.group_id), ("dedup_id", &q.dedup_id)] {
                if let Some(v) = v {
                    check_template(c, &opts.key(key), v);
                    if !q.is_fifo() {
                        c.key(
                            &opts.key(key),
                            format!(
                                "`{key}` is only for FIFO queues, and `{}` is not one",
                                q.queue
                            ),
                            "remove it, or name a FIFO queue (its name ends in `.fifo`)",
                        );
                    }
                }
            }
            if let Some(w) = q.wait
                && !(Duration::from_secs(1)..=Duration::from_secs(20)).contains(&w.0)
            {
                c.value(
                    &opts.key("wait"),
                    format!("SQS long polling waits 1 s to 20 s per receive, not {w}"),
                    "write `wait: 20s` or less, and at least `1s` (a message is returned as soon \
                     as it arrives, so a longer wait costs nothing)",
                );
            }
            if let Some(v) = q.visibility_timeout {
                positive(c, &opts.key("visibility_timeout"), v);
                if v.0 > Duration::from_secs(12 * 3600) {
                    c.value(
                        &opts.key("visibility_timeout"),
                        format!("SQS allows a visibility timeout of at most 12 h, not {v}"),
                        "write `visibility_timeout: 30s` or leave it out",
                    );
                }
            }
            check_aws(c, &opts, q);
        }
        ChannelSpec::Sns(t) => {
            check_template(c, &opts.key("topic"), &t.topic);
            if let Some(p) = &t.filter_policy {
                json_object(
                    c,
                    &opts.key("filter_policy"),
                    p,
                    ("an SNS filter policy", "{ kind: [order] }"),
                );
            }
            check_aws(c, &opts, t);
        }
        ChannelSpec::EventBridge(e) => {
            check_template(c, &opts.key("bus"), &e.bus);
            if let Some(p) = &e.pattern {
                json_object(
                    c,
                    &opts.key("pattern"),
                    p,
                    ("an EventBridge event pattern", "{ source: [orders] }"),
                );
            }
            if e.create && e.bus == "default" {
                c.key(
                    &opts.key("create"),
                    "`create` cannot create the `default` event bus: every account has it",
                    "remove `create`, or name a bus of your own in `bus`",
                );
            }
            check_aws(c, &opts, e);
        }
    }
}

/// The region and endpoint every AWS channel may set.
fn check_aws(c: &mut Checker<'_>, opts: &YamlPath, channel: &dyn AwsEndpoint) {
    if let Some(region) = channel.region()
        && (region.trim().is_empty() || region.contains(char::is_whitespace))
    {
        c.value(
            &opts.key("region"),
            format!("`{region}` is not an AWS region"),
            "write a region such as `eu-west-1`, or leave it out to use `AWS_REGION`",
        );
    }
    if let Some(endpoint) = channel.endpoint()
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        c.value(
            &opts.key("endpoint"),
            format!("the endpoint must be an http:// or https:// URL, not `{endpoint}`"),
            "write it like `http://127.0.0.1:5055`, or leave it out to use `AWS_ENDPOINT_URL`",
        );
    }
}

/// `what`: the option's description and an example of it.
fn json_object(c: &mut Checker<'_>, at: &YamlPath, v: &Value, what: (&str, &str)) {
    if !v.is_object() {
        c.value(
            at,
            format!("{} must be a JSON object", what.0),
            format!("write it as a mapping, e.g. `{}`", what.1),
        );
    }
}

/// The connection options every broker channel shares. `password_alone`: the transport
/// accepts a password without a user name (Redis `AUTH password`).
fn check_connection(
    c: &mut Checker<'_>,
    opts: &YamlPath,
    channel: &dyn Connection,
    password_alone: bool,
) {
    let (tls, auth) = (channel.tls(), channel.auth());
    if let Some(t) = channel.connect_timeout() {
        positive(c, &opts.key("connect_timeout"), t);
    }
    if let Some(tls) = tls
        && tls.cert.is_some() != tls.key.is_some()
    {
        let (given, missing) = if tls.cert.is_some() {
            ("cert", "key")
        } else {
            ("key", "cert")
        };
        c.key(
            &opts.key("tls").key(given),
            format!("`tls.{given}` is given without `tls.{missing}`"),
            "a client certificate needs both `cert` and `key` (PEM files)",
        );
    }
    if let Some(auth) = auth {
        let at = opts.key("auth");
        let vars = [
            ("username_env", &auth.username_env),
            ("password_env", &auth.password_env),
            ("token_env", &auth.token_env),
        ];
        for (key, var) in vars {
            if let Some(var) = var
                && (var.is_empty() || var.contains(['=', '\0', ' ']))
            {
                c.value(
                    &at.key(key),
                    format!("`{key}` must name an environment variable, not `{var}`"),
                    "write the variable's name, e.g. `BROKER_PASSWORD`; never the secret itself",
                );
            }
        }
        if auth.password_env.is_some() && auth.username_env.is_none() && !password_alone {
            c.key(
                &at.key("password_env"),
                "`auth.password_env` is given without `auth.username_env`",
                "name the variable holding the user name too",
            );
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

fn host_port(s: &str) -> Result<(), &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("there is no port");
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 host must be in brackets");
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| "the port is not a number from 0 to 65535")
}

/// `text` with every `{{ … }}` replaced by `with`: the shape a template renders to.
fn without_templates(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        match rest[open..].find("}}") {
            Some(close) => {
                out.push_str(with);
                rest = &rest[open + close + 2..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn check_http_url(c: &mut Checker<'_>, at: &YamlPath, raw: &str) {
    // Per-run templates (`{{ run_id }}`) are checked as if rendered to a plain word.
    let shaped = without_templates(raw, "x");
    // The URL as rendered may hold a secret from env(): shown masked.
    let raw = crate::redact::url(raw);
    match url::Url::parse(&shaped) {
        Err(e) => c.value(
            at,
            format!("`{raw}` is not a valid URL: {e}"),
            "write an absolute URL such as `http://127.0.0.1:7001/orders`",
        ),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => c.value(
            at,
            format!(
                "`{raw}` has the scheme `{}`; an `http` channel needs `http://` or `https://`",
                u.scheme()
            ),
            "for a broker, use its own channel type (see docs/transports/)",
        ),
        Ok(_) => {}
    }
}

/// RFC 9110 token characters (header names, methods).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_header(c: &mut Checker<'_>, at: &YamlPath, name: &str, value: &str) {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        c.key(
            at,
            format!("`{name}` is not a valid header name"),
            "use letters, digits and `-`, e.g. `x-tenant`",
        );
    }
    let shaped = without_templates(value, "x");
    if shaped.chars().any(|ch| ch.is_control() && ch != '\t') {
        c.value(
            at,
            format!("the value of header `{name}` holds a control character (a line break?)"),
            "a header value is one line of text",
        );
    }
}

/// Two channels that listen on one `host:port` (other than port 0) cannot both bind it.
fn check_listen_addresses(c: &mut Checker<'_>, suite: &Suite) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (name, spec) in &suite.channels {
        let ChannelSpec::Webhook(hook) = spec else {
            continue;
        };
        let listen = hook.listen.trim();
        if listen.ends_with(":0") || host_port(listen).is_err() {
            continue;
        }
        if let Some(first) = seen.insert(listen.to_owned(), name) {
            c.value(
                &YamlPath::root()
                    .key("channels")
                    .key(name)
                    .key("webhook")
                    .key("listen"),
                format!("channels `{first}` and `{name}` both listen on `{listen}`"),
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
        for (j, step) in scenario.send.iter().enumerate() {
            check_send(c, suite, &at.key("send").index(j), step);
        }
        for (j, e) in scenario.expect.iter().enumerate() {
            check_expect(c, suite, &at.key("expect").index(j), e);
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
        check_template(c, &at.key("text"), text);
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
        check_template(c, &at.key("headers").key(name), value);
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
    let before = c.out.len();
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

    if e.count.is_some() && e.at_least.is_some() {
        c.key(
            &at.key("at_least"),
            "an expectation has both `count` and `at_least`",
            "keep one: `count: N` wants exactly N matches per sent event, `at_least: N` N or more",
        );
    }
    match (e.within, e.none_within) {
        (None, None) => c.value(
            at,
            "an expectation has neither `within` nor `none_within`",
            "add `within: 2s` (the SLA), or `none_within: 1s` to check that nothing matching \
             arrives",
        ),
        (Some(_), Some(_)) => c.key(
            &at.key("none_within"),
            "an expectation has both `within` and `none_within`",
            "keep `within` to require matches by a deadline, or `none_within` to require that \
             none arrive: write two expectations for both",
        ),
        (Some(d), None) => {
            positive(c, &at.key("within"), d);
            at_most(c, &at.key("within"), d, MAX_WINDOW);
        }
        (None, Some(d)) => {
            positive(c, &at.key("none_within"), d);
            at_most(c, &at.key("none_within"), d, MAX_WINDOW);
            for (key, set) in [
                ("count", e.count.is_some()),
                ("at_least", e.at_least.is_some()),
            ] {
                if set {
                    c.key(
                        &at.key(key),
                        format!("`{key}` does not apply to an absence check"),
                        format!(
                            "`none_within` requires that nothing matching arrives: remove \
                             `{key}`, or use `within` instead"
                        ),
                    );
                }
            }
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
    // Belt and braces: whatever the evaluator would refuse at run time is refused now.
    if c.out.len() == before
        && let Err(err) = crate::expect::ExpectationMachine::new(0, e)
    {
        c.value(
            at,
            format!("failed to {err}"),
            "change the expectation as the message says",
        );
    }
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
    let owner = super::decode::container_name(at);
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

fn check_template(c: &mut Checker<'_>, at: &YamlPath, s: &str) {
    if let Err(e) = Template::parse(s) {
        let loc = c.at.index.value(at);
        report_template(c, loc, s, &e);
    }
}

/// Checks every string (and key) of a JSON body, pointing at the offending one.
fn check_json_templates(c: &mut Checker<'_>, at: &YamlPath, v: &Value) {
    match v {
        Value::String(s) => check_template(c, at, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_json_templates(c, &at.index(i), item);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let child = at.key(k);
                if let Err(e) = Template::parse(k) {
                    let loc = c.at.index.key(&child);
                    report_template(c, loc, k, &e);
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

/// "did you mean `x`?" for the candidate closest to `word`, if one is close enough.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|cand| {
            let score = strsim::jaro_winkler(&lower, &cand.to_lowercase()).max(
                strsim::normalized_damerau_levenshtein(&lower, &cand.to_lowercase()),
            );
            (score, cand)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, cand)| format!("did you mean `{cand}`?"))
}

/// "`a`, `b` and `c`".
pub(crate) fn list<'i>(items: impl IntoIterator<Item = &'i str>) -> String {
    join(items, "and")
}

/// "`a`, `b` or `c`".
pub(crate) fn list_or<'i>(items: impl IntoIterator<Item = &'i str>) -> String {
    join(items, "or")
}

fn join<'i>(items: impl IntoIterator<Item = &'i str>, last_word: &str) -> String {
    let items: Vec<String> = items.into_iter().map(|i| format!("`{i}`")).collect();
    match items.as_slice() {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {last_word} {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_need_to_be_close() {
        assert_eq!(
            did_you_mean("withn", ["on", "within", "none_within"]),
            Some("did you mean `within`?".into())
        );
        assert_eq!(
            did_you_mean("htp", ["http", "webhook", "dir"]),
            Some("did you mean `http`?".into())
        );
        assert_eq!(
            did_you_mean("Orders_Out", ["orders_out"]),
            Some("did you mean `orders_out`?".into())
        );
        assert_eq!(did_you_mean("kafka", ["http", "webhook", "dir"]), None);
        assert_eq!(did_you_mean("x", Vec::<&str>::new()), None);
    }

    #[test]
    fn lists_read_naturally() {
        assert_eq!(list(["a"]), "`a`");
        assert_eq!(list(["a", "b", "c"]), "`a`, `b` and `c`");
        assert_eq!(list(Vec::<&str>::new()), "nothing");
        assert_eq!(list_or(["a", "b"]), "`a` or `b`");
    }

    #[test]
    fn listen_addresses_need_host_and_port() {
        assert_eq!(host_port("127.0.0.1:7002"), Ok(()));
        assert_eq!(host_port("localhost:0"), Ok(()));
        assert_eq!(host_port("[::1]:80"), Ok(()));
        assert!(host_port("7002").is_err());
        assert!(host_port(":7002").is_err());
        assert!(host_port("::1:80").is_err());
        assert!(host_port("host:99999").is_err());
    }

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
