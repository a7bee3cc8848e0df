//! The engine protocol: `roundtrip serve --stdio` answers JSON-RPC 2.0 requests, one
//! JSON object per line on stdin, with one response per line on stdout, and sends
//! progress as notifications between them. It is how the Python package (and any other
//! language) drives the engine: load a suite, open a run of it, run a scenario by name,
//! or send events and wait on expectations one call at a time. `docs/protocol.md` is the
//! user's view; `schema/protocol.schema.json`, generated from these types, is the
//! contract (a test fails when it drifts).
//!
//! Requests are served concurrently, each in a task of its own, so a `cancel` can reach
//! a request that is waiting. Nothing but protocol messages is written to stdout.

use std::collections::BTreeMap;

use roundtrip_core::model::{Expectation, SendStep};
use roundtrip_core::observation::Observation;
use roundtrip_core::run::ScenarioResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod server;
#[cfg(test)]
mod tests;

pub use server::serve;

/// The protocol's version. A client states the version it speaks in `initialize`; an
/// engine that speaks another refuses it (error [`codes::VERSION_MISMATCH`]). It changes
/// when a request, a result or a notification changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest request line the engine reads, in bytes; a longer one is refused (the
/// connection goes on with the next line).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Error codes: JSON-RPC's own, and the engine's (`-32000` to `-32099`), each with a
/// `data.kind` naming its class.
pub mod codes {
    /// The line is not JSON (`kind: protocol`).
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a request (`kind: protocol`).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method (`kind: protocol`).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params do not fit the method (`kind: usage`).
    pub const INVALID_PARAMS: i64 = -32602;
    /// The harness failed: a listener, the store, the SUT, a producer's connection
    /// (`kind: harness`; what the command line reports with exit code 3).
    pub const HARNESS: i64 = -32000;
    /// The suite or the request asks for what cannot be done: an invalid suite file,
    /// an unknown scenario, run, scope or channel (`kind: usage`, or `kind: suite` with
    /// the file's diagnostics; exit code 2 on the command line).
    pub const USAGE: i64 = -32001;
    /// The client speaks another protocol version (`kind: protocol`).
    pub const VERSION_MISMATCH: i64 = -32002;
    /// A request before `initialize` (`kind: protocol`).
    pub const NOT_INITIALIZED: i64 = -32003;
    /// The request was cancelled by `cancel` (`kind: cancelled`), as LSP numbers it.
    pub const CANCELLED: i64 = -32800;
}

/// One request line.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id, echoed in its response: a number or a string, unique among
    /// the requests under way. A request without one is a notification and gets no
    /// response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<RequestId>")]
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// Its params, an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub params: Option<Value>,
}

/// A request id: a number or a string.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RequestId {
    /// A number.
    Number(i64),
    /// A string.
    Text(String),
}

/// One response line: `result` or `error`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id; `null` when the line it answers could not be read as a
    /// request.
    pub id: Option<RequestId>,
    /// The method's result (its schema is under `methods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// A failed request's error.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorObject {
    /// The code ([`codes`]).
    pub code: i64,
    /// What went wrong and what to do, for a person.
    pub message: String,
    /// The error's class.
    pub data: ErrorData,
}

/// An error's class.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorData {
    /// The class.
    pub kind: ErrorKind,
}

/// The classes of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The line or the request's shape, the version, the order of requests.
    Protocol,
    /// What the request asks for (exit code 2 on the command line).
    Usage,
    /// The suite file is invalid; the message holds its diagnostics.
    Suite,
    /// The harness failed (exit code 3 on the command line).
    Harness,
    /// Cancelled by `cancel`, the test's end or the run's close.
    Cancelled,
}

/// `initialize`: must come first.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InitializeParams {
    /// The protocol version the client speaks.
    pub protocol: u32,
    /// Who the client is, for the engine's log (e.g. `roundtrip-python/0.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// What `initialize` answers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct InitializeResult {
    /// The protocol version the engine speaks.
    pub protocol: u32,
    /// The engine's version.
    pub engine: String,
    /// The store it records into, its secrets masked.
    pub store: String,
    /// The engine's process id.
    pub pid: u32,
}

/// `load`: read and validate a suite file, start nothing (for test collection).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// The suite file.
    pub suite: String,
    /// Variables for `{{ env("NAME") }}`, above the engine's environment (as `--var`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Env files, below the environment (as `--env-file`), later ones first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<String>,
}

/// A suite as `load` and `open` describe it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct SuiteInfo {
    /// The suite's name.
    pub name: String,
    /// The file, as given.
    pub path: String,
    /// Its scenarios in file order.
    pub scenarios: Vec<ScenarioInfo>,
    /// Its channels, by name.
    pub channels: Vec<ChannelInfo>,
}

/// One scenario of a suite.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ScenarioInfo {
    /// Its name, unique in the suite.
    pub name: String,
    /// Its tags (the pytest plugin makes each one a mark).
    pub tags: Vec<String>,
}

/// One channel of a suite.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ChannelInfo {
    /// Its name.
    pub name: String,
    /// Its transport, as suite files name it.
    pub transport: String,
    /// Events can be sent to it.
    pub produce: bool,
    /// It can be listened on.
    pub listen: bool,
}

/// `open`: set up a run of a suite (listeners, producers, the SUT) and keep it open.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenParams {
    /// The suite file.
    pub suite: String,
    /// As in `load`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// As in `load`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<String>,
    /// The channels to listen on besides those the scenarios expect on and the SUT
    /// names; by default, every channel that can be listened on and that no scenario
    /// sends to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Vec<String>>,
}

/// What `open` answers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct OpenResult {
    /// The run's id: the handle of the later requests.
    pub run: String,
    /// The suite.
    pub suite: SuiteInfo,
    /// The channels listened on, every one ready.
    pub listening: Vec<String>,
}

/// `run`: run one of the suite's scenarios to its verdict.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// The run, from `open`.
    pub run: String,
    /// The scenario's name.
    pub scenario: String,
}

/// A scenario's (or a test's) result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ResultOut {
    /// Whether it passed.
    pub passed: bool,
    /// The result as the JSON report holds it (docs/report-format.md).
    pub result: ScenarioResult,
    /// The result as the terminal shows it: each expectation with its verdict and, for
    /// failures, the evidence. Plain text, every field from the SUT escaped.
    pub text: String,
}

/// `begin`: start a hand-written test in an open run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginParams {
    /// The run, from `open`.
    pub run: String,
    /// The test's name, recorded as a scenario's (e.g. a pytest node id).
    pub test: String,
}

/// What `begin` answers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct BeginResult {
    /// The test's handle.
    pub scope: String,
}

/// `send`: send one event from a test.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    /// The test, from `begin`.
    pub scope: String,
    /// The event, written as a suite's send step (`to`, and one of `body`, `text`,
    /// `base64`, with `headers`); its strings are templates. `repeat` and
    /// `concurrency` must be 1.
    pub send: SendStep,
}

/// A sent event, as `send` answers it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct SentOut {
    /// The correlation id stamped on it.
    pub correlation_id: String,
    /// Its position among the test's events.
    pub index: u64,
    /// The channel.
    pub channel: String,
    /// When the send started (Unix ns).
    pub sent_at: i64,
    /// The body's size in bytes.
    pub size: u64,
    /// Why the transport did not accept it; absent when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `expect`: wait until an expectation is decided for the test's events.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectParams {
    /// The test, from `begin`.
    pub scope: String,
    /// The expectation, written as in a suite (`on`, `match`, `where`, `text`,
    /// `within` or `none_within`, `count`, …).
    pub expect: Expectation,
    /// The correlation ids of the events it judges; by default, every event the test
    /// sent so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

/// What `expect` answers: a verdict either way (a failure is not an error).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExpectResult {
    /// Whether the expectation held.
    pub passed: bool,
    /// The verdict with its evidence, as the JSON report holds it.
    pub verdict: roundtrip_core::verdict::ExpectationVerdict,
    /// The verdict as the terminal shows it, evidence included.
    pub text: String,
    /// The matching observations correlated with the judged events, in order.
    pub observations: Vec<ObservationOut>,
}

/// One observation, as `expect` returns it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ObservationOut {
    /// Its sequence number in the store.
    pub seq: u64,
    /// The channel.
    pub channel: String,
    /// The correlation id found in it.
    pub correlation_id: Option<String>,
    /// When the listener received it (Unix ns).
    pub received_at: i64,
    /// The payload parsed as JSON, when it is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// The payload as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The payload's recorded bytes, base64.
    pub base64: String,
    /// The payload's size before any truncation.
    pub size: u64,
    /// True when only the first part of the payload was recorded.
    pub truncated: bool,
    /// Headers or attributes, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The transport's metadata (`subject`, `topic`, `object_key`, …).
    pub meta: Vec<(String, String)>,
    /// A transport key (a file or object name, a partition key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The broker's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl From<&Observation> for ObservationOut {
    fn from(o: &Observation) -> Self {
        use base64::Engine as _;
        ObservationOut {
            seq: o.seq,
            channel: o.channel.clone(),
            correlation_id: o.correlation_id.clone(),
            received_at: o.received_at,
            json: o.payload.json.clone(),
            text: std::str::from_utf8(&o.payload.bytes)
                .ok()
                .map(str::to_owned),
            base64: base64::engine::general_purpose::STANDARD.encode(&o.payload.bytes),
            size: o.payload.size,
            truncated: o.payload.truncated,
            headers: o.headers.clone(),
            meta: o.meta.clone(),
            key: o.key.clone(),
            message_id: o.message_id.clone(),
        }
    }
}

/// How a test went, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed.
    Passed,
    /// Failed for a reason of the client's (an assertion).
    Failed,
    /// Skipped.
    Skipped,
}

/// `end`: end a test and record its result.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndParams {
    /// The test, from `begin`.
    pub scope: String,
    /// How it went on the client's side (default: passed); a test whose expectation
    /// failed is failed whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why it failed or was skipped, on the client's side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `close`: tear a run down and record its summary.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseParams {
    /// The run, from `open`.
    pub run: String,
}

/// What `close` answers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct CloseResult {
    /// The run.
    pub run: String,
    /// Its status in the store (`passed`, `failed`, `interrupted`, `error`).
    pub status: String,
    /// Scenarios and tests that passed.
    pub passed: usize,
    /// Those that did not.
    pub failed: usize,
    /// The listeners' and the SUT's report, as the terminal shows it.
    pub text: String,
}

/// `cancel`: stop a request that is waiting; it answers with error
/// [`codes::CANCELLED`], and what it had recorded stays recorded.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelParams {
    /// The id of the request to cancel.
    pub id: Value,
}

/// What `cancel` answers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct CancelResult {
    /// Whether that request was still running.
    pub cancelled: bool,
}

/// The `event` notification: progress of an open run, in the order it happened.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct EventParams {
    /// The run.
    pub run: String,
    /// What happened: `listener-ready`, `sut-ready`, `scenario-started`,
    /// `scenario-finished`.
    pub kind: String,
    /// The channel, scenario or test it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The scenario's status, for `scenario-finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The protocol as a JSON Schema: each method's params and result, and the
/// notification, under `$defs` (committed as `schema/protocol.schema.json`).
pub fn json_schema() -> Value {
    use schemars::generate::SchemaSettings;
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let mut methods = serde_json::Map::new();
    let mut add = |name: &str, params: Value, result: Option<Value>| {
        let mut m = serde_json::Map::new();
        m.insert("params".into(), params);
        if let Some(r) = result {
            m.insert("result".into(), r);
        }
        methods.insert(name.to_owned(), Value::Object(m));
    };
    macro_rules! schema {
        ($t:ty) => {
            generator.subschema_for::<$t>().to_value()
        };
    }
    add(
        "initialize",
        schema!(InitializeParams),
        Some(schema!(InitializeResult)),
    );
    add("load", schema!(LoadParams), Some(schema!(SuiteInfo)));
    add("open", schema!(OpenParams), Some(schema!(OpenResult)));
    add("run", schema!(RunParams), Some(schema!(ResultOut)));
    add("begin", schema!(BeginParams), Some(schema!(BeginResult)));
    add("send", schema!(SendParams), Some(schema!(SentOut)));
    add("expect", schema!(ExpectParams), Some(schema!(ExpectResult)));
    add("end", schema!(EndParams), Some(schema!(ResultOut)));
    add("close", schema!(CloseParams), Some(schema!(CloseResult)));
    add("cancel", schema!(CancelParams), Some(schema!(CancelResult)));
    add("shutdown", serde_json::json!({ "type": "object" }), None);
    let event = schema!(EventParams);
    let request = schema!(Request);
    let response = schema!(Response);
    let defs = generator.take_definitions(true);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "roundtrip engine protocol",
        "description": format!(
            "JSON-RPC 2.0 over JSON lines (`roundtrip serve --stdio`), protocol version {PROTOCOL_VERSION}; see docs/protocol.md"
        ),
        "protocol": PROTOCOL_VERSION,
        "request": request,
        "response": response,
        "methods": methods,
        "notifications": { "event": event },
        "$defs": defs,
    })
}
