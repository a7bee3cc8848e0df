//! The protocol served over in-memory pipes, against a real store and a real `dir`
//! channel (a directory written by the producer and watched by the listener), so that a
//! sent event comes back as an observation without a SUT.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::watch;

use super::{PROTOCOL_VERSION, codes, serve};
use crate::store;

struct Client {
    write: WriteHalf<DuplexStream>,
    read: BufReader<ReadHalf<DuplexStream>>,
    next: u64,
    events: Vec<Value>,
    serving: tokio::task::JoinHandle<()>,
    _stop: watch::Sender<bool>,
}

impl Client {
    fn start(store: &str) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (their_read, their_write) = tokio::io::split(theirs);
        let (stop_tx, stop) = watch::channel(false);
        let serving = tokio::spawn(serve(their_read, their_write, store.to_owned(), stop));
        let (read, write) = tokio::io::split(ours);
        Client {
            write,
            read: BufReader::new(read),
            next: 0,
            events: Vec::new(),
            serving,
            _stop: stop_tx,
        }
    }

    async fn line(&mut self, text: &str) {
        self.write
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("the engine reads");
    }

    async fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next += 1;
        let id = self.next;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.line(&request.to_string()).await;
        id
    }

    /// The next response (notifications are kept in `events`).
    async fn response(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.read.read_line(&mut line))
                .await
                .expect("the engine answers within 30 s")
                .expect("the engine writes");
            assert!(n > 0, "the engine closed its output");
            let message: Value = serde_json::from_str(&line).expect("each line is JSON");
            assert_eq!(message["jsonrpc"], "2.0", "{message}");
            if message.get("id").is_some() {
                conforms_to(&["response"], &message);
                return message;
            }
            assert_eq!(message["method"], "event", "{message}");
            conforms_to(&["notifications", "event"], &message["params"]);
            self.events.push(message);
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        let response = self.response().await;
        assert_eq!(response["id"], id, "{response}");
        response
    }

    /// Calls `method` and returns its result; the params and the result must be what
    /// the protocol's JSON Schema describes.
    async fn ok(&mut self, method: &str, params: Value) -> Value {
        conforms(method, "params", &params);
        let response = self.call(method, params).await;
        assert!(
            response.get("error").is_none(),
            "`{method}` failed: {response}"
        );
        conforms(method, "result", &response["result"]);
        response["result"].clone()
    }

    async fn error(&mut self, method: &str, params: Value) -> (i64, String, String) {
        let response = self.call(method, params).await;
        let e = &response["error"];
        (
            e["code"].as_i64().expect("a code"),
            e["message"].as_str().expect("a message").to_owned(),
            e["data"]["kind"].as_str().expect("a kind").to_owned(),
        )
    }

    /// Sends `text` to the `box` channel from the test `scope`.
    async fn send_text(&mut self, scope: &str, text: &str) {
        let sent = self
            .ok(
                "send",
                json!({ "scope": scope, "send": { "to": "box", "text": text } }),
            )
            .await;
        assert!(sent.get("error").is_none(), "{sent}");
    }

    /// Opens a run with `params` (those of `open`); its id.
    async fn open(&mut self, params: Value) -> String {
        let opened = self.ok("open", params).await;
        opened["run"].as_str().expect("a run id").to_owned()
    }

    /// Begins a test in `run`; its scope.
    async fn begin(&mut self, run: &str, test: &str) -> String {
        let begun = self.ok("begin", json!({ "run": run, "test": test })).await;
        begun["scope"].as_str().expect("a scope").to_owned()
    }

    async fn initialize(&mut self) {
        self.ok("initialize", json!({ "protocol": PROTOCOL_VERSION }))
            .await;
    }

    /// Closes the engine's input and waits for it to finish.
    async fn hang_up(mut self) {
        self.write.shutdown().await.expect("the input closes");
        tokio::time::timeout(Duration::from_secs(30), self.serving)
            .await
            .expect("the engine stops when its input ends")
            .expect("the engine does not panic");
    }
}

/// Asserts that `value` is what the protocol's schema says `method`'s `part` is.
fn conforms(method: &str, part: &str, value: &Value) {
    if super::json_schema()["methods"][method].get(part).is_none() {
        assert_eq!(method, "shutdown", "`{method}` has no {part} in the schema");
        assert_eq!(value, &json!({}), "`shutdown` {part}");
        return;
    }
    conforms_to(&["methods", method, part], value);
}

/// Asserts that `value` fits the protocol schema's part at `path`.
fn conforms_to(path: &[&str], value: &Value) {
    let schema = super::json_schema();
    let mut part = &schema;
    for key in path {
        part = &part[*key];
    }
    assert!(part.is_object(), "the schema has no {path:?}");
    let mut part = part.clone();
    part["$defs"] = schema["$defs"].clone();
    let validator = jsonschema::validator_for(&part).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{path:?}: {value} does not fit the schema: {errors:?}"
    );
}

/// The CI drift check: the committed schema must be what the code generates.
#[test]
fn the_committed_protocol_schema_is_up_to_date() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/protocol.schema.json");
    let generated = serde_json::to_string_pretty(&super::json_schema()).expect("serializes") + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schema/protocol.schema.json is out of date with the protocol; regenerate it with \
         `UPDATE_SCHEMA=1 cargo test -p roundtrip --lib protocol` and commit it"
    );
}

/// Writes a suite file `name` into `dir`; its path.
fn write_suite(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the suite");
    path.display().to_string()
}

/// A suite with one `dir` channel, sent to and listened on, in a fresh directory.
fn suite(dir: &std::path::Path) -> String {
    write_suite(
        dir,
        "loop.roundtrip.yaml",
        r#"
name: loop
channels:
  box: { dir: { path: box, suffix: .json } }
  side: { dir: { path: side } }
scenarios:
  - name: one event comes back
    send: [ { to: box, body: { n: 1 } } ]
    expect: [ { on: box, match: { n: 1 }, count: 1, within: 5s } ]
  - name: an event to the side (never run)
    send: [ { to: side } ]
    expect: [ { on: box, none_within: 1s } ]
"#,
    )
}

fn store_url(dir: &std::path::Path) -> String {
    format!("sqlite:{}", dir.join("store.sqlite").display())
}

#[tokio::test]
async fn a_client_of_another_version_is_refused_and_nothing_is_served_before_initialize() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut c = Client::start(&store_url(dir.path()));
    let (code, message, kind) = c.error("load", json!({ "suite": "x.yaml" })).await;
    assert_eq!((code, kind.as_str()), (codes::NOT_INITIALIZED, "protocol"));
    assert!(message.contains("initialize"), "{message}");
    let (code, message, _) = c
        .error("initialize", json!({ "protocol": PROTOCOL_VERSION + 1 }))
        .await;
    assert_eq!(code, codes::VERSION_MISMATCH);
    assert!(
        message.contains(&format!("protocol version {}", PROTOCOL_VERSION + 1))
            && message.contains(&format!("speaks version {PROTOCOL_VERSION}")),
        "{message}"
    );
    c.initialize().await;
    c.hang_up().await;
}

#[tokio::test]
async fn lines_that_are_not_requests_get_errors_and_the_engine_goes_on() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut c = Client::start(&store_url(dir.path()));
    c.line("this is not json").await;
    let r = c.response().await;
    assert_eq!(r["error"]["code"], codes::PARSE_ERROR, "{r}");
    assert_eq!(r["id"], Value::Null);
    c.line(r#"{"jsonrpc":"1.0","id":7,"method":"initialize"}"#)
        .await;
    let r = c.response().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(7), json!(codes::INVALID_REQUEST))
    );
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":8,"method":"initialize","params":{{"client":"{}"}}}}"#,
        "x".repeat(super::MAX_LINE)
    );
    c.line(&long).await;
    let r = c.response().await;
    assert_eq!(r["error"]["code"], codes::INVALID_REQUEST, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("longer than")),
        "{r}"
    );
    c.initialize().await;
    let (code, message, kind) = c.error("nosuch", json!({})).await;
    assert_eq!((code, kind.as_str()), (codes::METHOD_NOT_FOUND, "protocol"));
    assert!(message.contains("`nosuch`"), "{message}");
    let (code, message, kind) = c.error("open", json!({ "suite": 3 })).await;
    assert_eq!((code, kind.as_str()), (codes::INVALID_PARAMS, "usage"));
    assert!(message.contains("invalid params"), "{message}");
    c.hang_up().await;
}

#[tokio::test]
async fn an_invalid_suite_is_a_suite_error_with_its_diagnostics() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("bad.roundtrip.yaml");
    std::fs::write(
        &path,
        "name: bad\nchannels: {}\nscenarios:\n  - name: a\n    sendd: []\n",
    )
    .expect("write");
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let (code, message, kind) = c.error("load", json!({ "suite": path.clone() })).await;
    assert_eq!((code, kind.as_str()), (codes::USAGE, "suite"));
    assert!(
        message.contains("bad.roundtrip.yaml:5:") && message.contains("sendd"),
        "{message}"
    );
    c.hang_up().await;
}

#[tokio::test]
async fn a_scenario_runs_by_name_and_a_test_sends_and_expects() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let suite = suite(dir.path());
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let loaded = c.ok("load", json!({ "suite": suite })).await;
    assert_eq!(loaded["scenarios"][0]["name"], "one event comes back");
    let opened = c
        .ok("open", json!({ "suite": suite, "listen": ["box"] }))
        .await;
    let run = opened["run"].as_str().expect("a run id").to_owned();
    assert_eq!(opened["listening"], json!(["box"]));

    let ran = c
        .ok(
            "run",
            json!({ "run": run, "scenario": "one event comes back" }),
        )
        .await;
    assert_eq!(ran["passed"], true, "{ran}");
    let (code, message, _) = c
        .error(
            "run",
            json!({ "run": run, "scenario": "one event came back" }),
        )
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(message.contains("did you mean"), "{message}");

    let scope = c
        .ok("begin", json!({ "run": run, "test": "t::hand" }))
        .await["scope"]
        .as_str()
        .expect("a scope")
        .to_owned();
    let (code, message, _) = c
        .error(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "within": "1s" } }),
        )
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(message.contains("has sent no event"), "{message}");
    let sent = c
        .ok(
            "send",
            json!({ "scope": scope, "send": { "to": "box", "body": { "item": "cup" } } }),
        )
        .await;
    let correlation_id = sent["correlation_id"].as_str().expect("an id").to_owned();
    assert!(sent.get("error").is_none(), "{sent}");
    let passed = c
        .ok(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "match": { "item": "cup" }, "within": "5s" } }),
        )
        .await;
    assert_eq!(passed["passed"], true, "{passed}");
    let observations = passed["observations"].as_array().expect("observations");
    assert_eq!(observations.len(), 1, "{passed}");
    assert_eq!(observations[0]["json"], json!({ "item": "cup" }));
    assert_eq!(observations[0]["correlation_id"], correlation_id.as_str());

    // Asked after it arrived, judged by when it arrived: a miss shows the near-miss.
    let failed = c
        .ok(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "match": { "item": "mug" }, "within": "200ms" } }),
        )
        .await;
    assert_eq!(failed["passed"], false, "{failed}");
    let text = failed["text"].as_str().expect("text");
    assert!(
        text.contains("[lost]") && text.contains("closest near-miss") && text.contains("$.item"),
        "{text}"
    );
    assert!(failed["observations"].as_array().is_some_and(Vec::is_empty));

    let (code, message, _) = c
        .error(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box" } }),
        )
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(message.contains("within"), "{message}");

    let ended = c.ok("end", json!({ "scope": scope })).await;
    assert_eq!(ended["result"]["status"], "failed", "{ended}");
    assert_eq!(
        ended["result"]["expectations"].as_array().map(Vec::len),
        Some(2)
    );
    let (code, _, _) = c.error("end", json!({ "scope": scope })).await;
    assert_eq!(code, codes::USAGE);

    let closed = c.ok("close", json!({ "run": run })).await;
    assert_eq!(
        (
            closed["status"].clone(),
            closed["passed"].clone(),
            closed["failed"].clone()
        ),
        (json!("failed"), json!(1), json!(1))
    );
    let kinds: Vec<&str> = c
        .events
        .iter()
        .filter_map(|e| e["params"]["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"listener-ready") && kinds.contains(&"scenario-finished"),
        "{kinds:?}"
    );
    c.hang_up().await;

    let store = store::open(&store_url(dir.path()))
        .await
        .expect("the store");
    let summary = store
        .run_summary(&run)
        .await
        .expect("read")
        .expect("the summary was recorded");
    let names: Vec<&str> = summary.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["one event comes back", "t::hand"]);
}

#[tokio::test]
async fn a_waiting_expectation_is_cancelled_and_a_hang_up_closes_the_run_as_interrupted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let suite = suite(dir.path());
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let run = c.open(json!({ "suite": suite, "listen": ["box"] })).await;
    let scope = c.begin(&run, "waits").await;
    c.send_text(&scope, "x").await;
    // Nothing will match: the wait would last its whole minute.
    let waiting = c
        .send(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "match": { "never": true }, "within": "60s" } }),
        )
        .await;
    let cancel = c.send("cancel", json!({ "id": waiting })).await;
    let mut answers = [c.response().await, c.response().await];
    answers.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(answers[0]["id"], waiting);
    assert_eq!(
        answers[0]["error"]["code"],
        codes::CANCELLED,
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["id"], cancel);
    assert_eq!(answers[1]["result"]["cancelled"], true);
    let again = c.ok("cancel", json!({ "id": waiting })).await;
    assert_eq!(again["cancelled"], false);
    // The test goes on after a cancelled wait.
    let passed = c
        .ok(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "text": { "equals": "x" }, "within": "5s" } }),
        )
        .await;
    assert_eq!(passed["passed"], true, "{passed}");
    c.hang_up().await;

    let store = store::open(&store_url(dir.path()))
        .await
        .expect("the store");
    let record = store.run(&run).await.expect("read").expect("the run");
    assert_eq!(record.status, roundtrip_core::run::RunStatus::Interrupted);
    let summary = store
        .run_summary(&run)
        .await
        .expect("read")
        .expect("a summary");
    assert_eq!(summary.scenarios.len(), 1);
    // Its cancelled wait makes it an error; the client's going away is noted.
    let test = &summary.scenarios[0];
    assert_eq!(
        test.error.as_deref(),
        Some("interrupted before every expectation had a verdict")
    );
    assert_eq!(
        test.notes,
        ["the test's own outcome: the client went away before the test ended"]
    );
}

#[tokio::test]
async fn requests_name_what_does_not_exist() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let suite = suite(dir.path());
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let (code, message, _) = c
        .error("open", json!({ "suite": suite, "listen": ["boxes"] }))
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(
        message.contains("no channel `boxes`") && message.contains("did you mean `box`"),
        "{message}"
    );
    let (code, message, _) = c
        .error("begin", json!({ "run": "nope", "test": "t" }))
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(message.contains("no open run `nope`"), "{message}");
    let run = c.open(json!({ "suite": suite })).await;
    let scope = c.begin(&run, "t").await;
    let (code, message, _) = c
        .error(
            "send",
            json!({ "scope": scope, "send": { "to": "box", "text": "a", "repeat": 2 } }),
        )
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(message.contains("`repeat`"), "{message}");
    c.ok("send", json!({ "scope": scope, "send": { "to": "box" } }))
        .await;
    // A scenario sends to `side`, so by default it is not listened on.
    let (code, message, _) = c
        .error(
            "expect",
            json!({ "scope": scope, "expect": { "on": "side", "within": "1s" } }),
        )
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(message.contains("is not listened on"), "{message}");
    c.ok("shutdown", json!({})).await;
    tokio::time::timeout(Duration::from_secs(30), c.serving)
        .await
        .expect("shutdown ends the engine")
        .expect("no panic");
    let store = store::open(&store_url(dir.path()))
        .await
        .expect("the store");
    let record = store.run(&run).await.expect("read").expect("the run");
    assert_eq!(record.status, roundtrip_core::run::RunStatus::Failed);
}

/// Opens the loop suite listening on `box`, and begins a test; (run, scope).
async fn open_and_begin(c: &mut Client, suite: &str, test: &str) -> (String, String) {
    let run = c.open(json!({ "suite": suite, "listen": ["box"] })).await;
    let scope = c.begin(&run, test).await;
    (run, scope)
}

#[tokio::test]
async fn ids_are_numbers_or_strings_each_in_use_once_and_notifications_get_no_answer() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut c = Client::start(&store_url(dir.path()));
    c.line(r#"{"jsonrpc":"2.0","id":"first","method":"initialize","params":{"protocol":1}}"#)
        .await;
    let r = c.response().await;
    assert_eq!(r["id"], "first", "{r}");
    assert_eq!(r["result"]["protocol"], 1, "{r}");
    c.line(r#"{"jsonrpc":"2.0","id":null,"method":"load","params":{"suite":"x"}}"#)
        .await;
    let r = c.response().await;
    assert_eq!(r["error"]["code"], codes::INVALID_REQUEST, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not null")),
        "{r}"
    );
    c.line(r#"{"jsonrpc":"2.0","id":[1],"method":"load","params":{"suite":"x"}}"#)
        .await;
    let r = c.response().await;
    assert_eq!(r["error"]["code"], codes::INVALID_REQUEST, "{r}");
    // A notification is served and answered by nothing: the next answer is the next
    // request's.
    c.line(r#"{"jsonrpc":"2.0","method":"load","params":{"suite":"nowhere.yaml"}}"#)
        .await;
    c.line(r#"{"jsonrpc":"2.0","method":"cancel","params":{"id":12345}}"#)
        .await;
    let (code, _, _) = c.error("nosuch", json!({})).await;
    assert_eq!(code, codes::METHOD_NOT_FOUND);

    // An id already in use by a request under way is refused.
    let suite = suite(dir.path());
    let (_, scope) = open_and_begin(&mut c, &suite, "t").await;
    c.send_text(&scope, "x").await;
    c.line(&json!({ "jsonrpc": "2.0", "id": "w", "method": "expect",
        "params": { "scope": scope, "expect": { "on": "box", "match": { "no": 1 }, "within": "60s" } } })
        .to_string())
        .await;
    c.line(
        &json!({ "jsonrpc": "2.0", "id": "w", "method": "load", "params": { "suite": suite } })
            .to_string(),
    )
    .await;
    let r = c.response().await;
    assert_eq!(r["error"]["code"], codes::INVALID_REQUEST, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("still under way")),
        "{r}"
    );
    let cancelled = c.ok("cancel", json!({ "id": "w" })).await;
    assert_eq!(cancelled["cancelled"], true);
    let r = c.response().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!("w"), json!(codes::CANCELLED))
    );
    c.hang_up().await;
}

#[tokio::test]
async fn a_test_ended_while_it_waits_stops_its_wait_and_a_close_ends_its_open_tests() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let suite = suite(dir.path());
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let (run, scope) = open_and_begin(&mut c, &suite, "waits").await;
    c.send_text(&scope, "x").await;
    let waiting = c
        .send(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "match": { "no": 1 }, "within": "60s" } }),
        )
        .await;
    let ending = c
        .send("end", json!({ "scope": scope, "outcome": "passed" }))
        .await;
    let mut answers = [c.response().await, c.response().await];
    answers.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(answers[0]["id"], waiting);
    assert_eq!(
        answers[0]["error"]["code"],
        codes::CANCELLED,
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["id"], ending);
    // A test whose wait was cut short is an error: its verdicts are not the system's.
    assert_eq!(
        answers[1]["result"]["result"]["status"], "error",
        "{}",
        answers[1]
    );

    // A second test of the same name is recorded apart; the run's close ends it.
    let other = c.begin(&run, "waits").await;
    c.send_text(&other, "y").await;
    let waiting = c
        .send(
            "expect",
            json!({ "scope": other, "expect": { "on": "box", "match": { "no": 1 }, "within": "60s" } }),
        )
        .await;
    let closing = c.send("close", json!({ "run": run })).await;
    let mut answers = [c.response().await, c.response().await];
    answers.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(answers[0]["id"], waiting);
    assert_eq!(
        answers[0]["error"]["code"],
        codes::CANCELLED,
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["id"], closing);
    assert_eq!(answers[1]["result"]["failed"], 2, "{}", answers[1]);
    let (code, _, _) = c
        .error("begin", json!({ "run": run, "test": "late" }))
        .await;
    assert_eq!(code, codes::USAGE);
    c.hang_up().await;

    let store = store::open(&store_url(dir.path()))
        .await
        .expect("the store");
    let summary = store
        .run_summary(&run)
        .await
        .expect("read")
        .expect("a summary");
    let names: Vec<(&str, Option<&str>)> = summary
        .scenarios
        .iter()
        .map(|s| (s.name.as_str(), s.error.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "waits",
                Some("interrupted before every expectation had a verdict")
            ),
            (
                "waits #2",
                Some("interrupted before every expectation had a verdict")
            ),
        ]
    );
}

#[tokio::test]
async fn a_test_s_status_weighs_roundtrip_s_verdicts_over_the_client_s_outcome() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let suite = suite(dir.path());
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let (run, _) = open_and_begin(&mut c, &suite, "unused").await;
    for (outcome, matching, want, error) in [
        // A failed expectation fails the test, even one the client skipped.
        ("skipped", false, "failed", None),
        ("passed", false, "failed", None),
        // The client's own failure fails a test roundtrip passed, with its reason.
        ("failed", true, "failed", Some("assert 1 == 2")),
        ("skipped", true, "skipped", Some("assert 1 == 2")),
        ("passed", true, "passed", None),
    ] {
        let scope = c.begin(&run, outcome).await;
        c.send_text(&scope, "x").await;
        let text = if matching { "x" } else { "nope" };
        c.ok(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "text": { "equals": text }, "within": "200ms", "grace": "0s" } }),
        )
        .await;
        let ended = c
            .ok(
                "end",
                json!({ "scope": scope, "outcome": outcome, "reason": "assert 1 == 2" }),
            )
            .await;
        let result = &ended["result"];
        assert_eq!(
            result["status"], want,
            "{outcome}, matching {matching}: {ended}"
        );
        assert_eq!(result["error"].as_str(), error, "{ended}");
        if !matching && outcome != "passed" {
            assert!(
                result["notes"]
                    .to_string()
                    .contains("the test's own outcome"),
                "{ended}"
            );
        }
    }
    c.hang_up().await;
}

#[tokio::test]
async fn a_send_the_transport_refuses_is_recorded_and_makes_the_test_an_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Nothing listens on port 1: the connection is refused.
    let path = write_suite(
        dir.path(),
        "refused.roundtrip.yaml",
        r#"
name: refused
channels:
  nowhere: { http: { url: "http://127.0.0.1:1/in" } }
  box: { dir: { path: box } }
scenarios:
  - name: unused
    send: [ { to: box } ]
    expect: [ { on: box, within: 1s } ]
"#,
    );
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let run = c.open(json!({ "suite": path.clone() })).await;
    let scope = c.begin(&run, "t").await;
    let sent = c
        .ok(
            "send",
            json!({ "scope": scope, "send": { "to": "nowhere", "text": "x" } }),
        )
        .await;
    assert!(
        sent["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{sent}"
    );
    let ended = c.ok("end", json!({ "scope": scope })).await;
    assert_eq!(ended["result"]["status"], "error", "{ended}");
    assert_eq!(ended["result"]["send_errors"], 1, "{ended}");
    c.hang_up().await;
}

#[tokio::test]
async fn a_channel_that_cannot_be_set_up_is_a_harness_error_and_the_run_records_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let suite = suite(dir.path());
    // The listened directory is a file.
    std::fs::write(dir.path().join("box"), "not a directory").expect("write");
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let (code, message, kind) = c
        .error("open", json!({ "suite": suite, "listen": ["box"] }))
        .await;
    assert_eq!(
        (code, kind.as_str()),
        (codes::HARNESS, "harness"),
        "{message}"
    );
    c.hang_up().await;
    let store = store::open(&store_url(dir.path()))
        .await
        .expect("the store");
    let runs = store.runs(10).await.expect("read");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, roundtrip_core::run::RunStatus::Error);
}

#[tokio::test]
async fn what_a_client_sends_and_expects_is_checked_as_a_suite_s_and_reads_the_run_s_vars() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let suite = suite(dir.path());
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let run = c
        .ok(
            "open",
            json!({ "suite": suite, "listen": ["box"], "vars": { "WHO": "the run's own" } }),
        )
        .await["run"]
        .as_str()
        .expect("a run")
        .to_owned();
    let scope = c.begin(&run, "t").await;
    c.ok(
        "send",
        json!({ "scope": scope, "send": { "to": "box", "text": "{{ env(\"WHO\") }}" } }),
    )
    .await;
    let got = c
        .ok(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "within": "5s" } }),
        )
        .await;
    assert_eq!(got["observations"][0]["text"], "the run's own", "{got}");
    let (code, message, _) = c
        .error(
            "expect",
            json!({ "scope": scope, "expect": { "on": "box", "within": "30days" } }),
        )
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(
        message.contains("`within` is 30days; at most 1day"),
        "{message}"
    );
    let (code, message, _) = c
        .error(
            "send",
            json!({ "scope": scope, "send": { "to": "box", "text": "{{ nosuch() }}" } }),
        )
        .await;
    assert_eq!(code, codes::USAGE);
    assert!(message.contains("nosuch"), "{message}");
    c.hang_up().await;
}

#[tokio::test]
async fn a_cancelled_scenario_is_recorded_as_an_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = write_suite(
        dir.path(),
        "slow.roundtrip.yaml",
        r#"
name: slow
channels:
  box: { dir: { path: box } }
scenarios:
  - name: waits a minute
    send: [ { to: box } ]
    expect: [ { on: box, none_within: 60s } ]
"#,
    );
    let mut c = Client::start(&store_url(dir.path()));
    c.initialize().await;
    let run = c.open(json!({ "suite": path.clone() })).await;
    let running = c
        .send("run", json!({ "run": run, "scenario": "waits a minute" }))
        .await;
    // The scenario has started once its event is in the store: wait for its
    // `scenario-started` notification, then cancel.
    while !c
        .events
        .iter()
        .any(|e| e["params"]["kind"] == "scenario-started")
    {
        let id = c.send("load", json!({ "suite": path.clone() })).await;
        let r = c.response().await;
        assert_eq!(r["id"], id);
    }
    c.ok("cancel", json!({ "id": running })).await;
    let r = c.response().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(running), json!(codes::CANCELLED))
    );
    let closed = c.ok("close", json!({ "run": run })).await;
    assert_eq!(closed["failed"], 1, "{closed}");
    c.hang_up().await;
}
