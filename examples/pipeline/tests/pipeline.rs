//! End-to-end tests of the `pipeline` binary: each test starts the real process on a free
//! port, talks to it over HTTP and watches its outputs (directories, or a webhook served by
//! the test). Waiting is bounded: directory outputs are polled until the expected files
//! appear or a deadline passes, and the assertions are on the files' content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// The bound on every wait: generous, since CI machines can be slow.
const DEADLINE: Duration = Duration::from_secs(20);
const READY_PREFIX: &str = "pipeline listening on http://";

/// A running pipeline process, killed when dropped.
struct Pipeline {
    child: Child,
    stdout: Option<tokio::io::Lines<BufReader<ChildStdout>>>,
    stderr: Option<JoinHandle<String>>,
    addr: Option<String>,
}

impl Pipeline {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the pipeline binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Self {
            child,
            stdout: Some(BufReader::new(stdout).lines()),
            stderr: Some(stderr),
            addr: None,
        }
    }

    /// Starts a pipeline on a free port and waits for its readiness line.
    async fn start(args: &[&str]) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut pipeline = Self::spawn(&all);
        let lines = pipeline.stdout.as_mut().expect("stdout");
        let line = timeout(DEADLINE, lines.next_line())
            .await
            .expect("the readiness line in time")
            .expect("read stdout")
            .expect("a readiness line before stdout closed");
        let addr = line
            .strip_prefix(READY_PREFIX)
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        pipeline.addr = Some(addr.to_owned());
        pipeline
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.as_deref().expect("started"))
    }

    /// Waits for the process to exit; returns its status and everything on stderr.
    async fn exit(mut self) -> (ExitStatus, String) {
        let status = timeout(DEADLINE, self.child.wait())
            .await
            .expect("the pipeline exits in time")
            .expect("wait for the pipeline");
        let stderr = self
            .stderr
            .take()
            .expect("stderr")
            .await
            .expect("stderr task");
        (status, stderr)
    }

    #[cfg(unix)]
    fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// Output and dead-letter directories under one temporary directory.
struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_owned()
    }
}

/// The visible `.json` files of a directory, by name, parsed.
fn json_files(dir: &Path) -> BTreeMap<String, Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|entry| entry.expect("directory entry"))
        .filter_map(|entry| {
            let name = entry.file_name().into_string().expect("utf-8 name");
            if name.starts_with('.') || !name.ends_with(".json") {
                return None;
            }
            let bytes = std::fs::read(entry.path()).expect("read output file");
            let value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {bytes:?}"));
            Some((name, value))
        })
        .collect()
}

/// Polls `dir` until it holds `count` JSON files (bounded by [`DEADLINE`]).
async fn wait_for_files(dir: &Path, count: usize) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let files = json_files(dir);
        if files.len() >= count {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {count} files in {}, found {:?}",
            dir.display(),
            files.keys()
        );
        sleep(Duration::from_millis(10)).await;
    }
}

async fn post_event(pipeline: &Pipeline, correlation_id: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(pipeline.url("/events"))
        .header("x-correlation-id", correlation_id)
        .json_body(body)
        .send()
        .await
        .expect("post an event")
}

/// `.json(..)` without reqwest's `json` feature.
trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

async fn accepted_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    body["accepted"]
        .as_str()
        .unwrap_or_else(|| panic!("no accepted id in {body}"))
        .to_owned()
}

#[tokio::test]
async fn valid_and_poison_events_reach_their_directories() {
    let dirs = Dirs::new();
    let pipeline = Pipeline::start(&[
        "--data-dir",
        &dirs.arg("data"),
        "--emit-dir",
        &dirs.arg("out"),
        "--dead-letter-dir",
        &dirs.arg("dlq"),
    ])
    .await;

    let valid = json!({"id": "ev-1", "item": "widget", "qty": 2, "tags": ["red"]});
    let id = accepted_id(post_event(&pipeline, "c-valid", &valid).await).await;
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let poison = json!({"item": "bomb", "poison": true});
    accepted_id(post_event(&pipeline, "c-poison", &poison).await).await;

    let out = wait_for_files(&dirs.path("out"), 1).await;
    let processed = &out["c-valid.json"];
    assert_eq!(processed["id"], "ev-1");
    assert_eq!(processed["item"], "WIDGET");
    assert_eq!(processed["qty"], 2);
    assert_eq!(processed["tags"], json!(["RED"]));
    assert_eq!(processed["status"], "processed");
    let processed_at = processed["processed_at"].as_str().expect("a timestamp");
    assert!(
        processed_at.len() == 24 && processed_at.ends_with('Z'),
        "{processed_at}"
    );

    let dlq = wait_for_files(&dirs.path("dlq"), 1).await;
    assert_eq!(
        dlq["c-poison.json"],
        json!({"item": "bomb", "poison": true, "error": "poison event"})
    );

    // Both events are done: emitted events are deleted from storage, and nothing else came out.
    wait_for_empty(&dirs.path("data")).await;
    assert_eq!(json_files(&dirs.path("out")).len(), 1);
    assert_eq!(json_files(&dirs.path("dlq")).len(), 1);
}

/// Polls until `dir` holds no event files (bounded).
async fn wait_for_empty(dir: &Path) {
    let deadline = Instant::now() + DEADLINE;
    while !json_files(dir).is_empty() {
        assert!(Instant::now() < deadline, "{} never emptied", dir.display());
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_requests_are_refused_and_nothing_is_stored() {
    let dirs = Dirs::new();
    let pipeline = Pipeline::start(&[
        "--data-dir",
        &dirs.arg("data"),
        "--emit-dir",
        &dirs.arg("out"),
        "--dead-letter-dir",
        &dirs.arg("dlq"),
    ])
    .await;
    let client = reqwest::Client::new();

    for body in ["not json", "[1, 2]", "\"text\"", ""] {
        let response = client
            .post(pipeline.url("/events"))
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let error: Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("json error");
        assert!(error["error"].is_string(), "{error}");
    }
    // The ingest answers only after storing, so an empty directory now means nothing was.
    assert!(json_files(&dirs.path("data")).is_empty());

    let status = |method: reqwest::Method, path: &str| {
        let request = client.request(method, pipeline.url(path));
        async move { request.send().await.expect("request").status() }
    };
    assert_eq!(
        status(reqwest::Method::GET, "/health").await,
        StatusCode::OK
    );
    assert_eq!(
        status(reqwest::Method::GET, "/nowhere").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(reqwest::Method::POST, "/event").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(reqwest::Method::GET, "/events").await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        status(reqwest::Method::PUT, "/health").await,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn a_taken_port_exits_with_code_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dirs = Dirs::new();
    let pipeline = Pipeline::spawn(&[
        "--listen",
        &addr,
        "--emit-dir",
        &dirs.arg("out"),
        "--dead-letter-dir",
        &dirs.arg("dlq"),
    ]);
    let (status, stderr) = pipeline.exit().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}

#[tokio::test]
async fn usage_errors_exit_with_code_2() {
    let (status, stderr) = Pipeline::spawn(&["--emit-dir", "x"]).exit().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dead-letter"), "{stderr}");
}

#[tokio::test]
async fn crash_after_exits_with_101_and_a_restart_resumes_the_rest() {
    let dirs = Dirs::new();
    let common = [
        "--data-dir",
        &dirs.arg("data"),
        "--emit-dir",
        &dirs.arg("out"),
        "--dead-letter-dir",
        &dirs.arg("dlq"),
    ];
    let mut args = common.to_vec();
    // The delay keeps all three events stored until the posts are done.
    args.extend(["--crash-after", "2", "--delay-ms", "1500"]);
    let pipeline = Pipeline::start(&args).await;
    for n in 1..=3 {
        let event = json!({ "n": n });
        accepted_id(post_event(&pipeline, &format!("c-{n}"), &event).await).await;
    }
    let (status, stderr) = pipeline.exit().await;
    assert_eq!(status.code(), Some(101), "{stderr}");
    assert!(stderr.contains("--crash-after 2"), "{stderr}");
    let out = json_files(&dirs.path("out"));
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["c-1.json", "c-2.json"],
        "emitted in arrival order"
    );
    assert_eq!(
        json_files(&dirs.path("data")).len(),
        1,
        "one event still stored"
    );

    // The same data directory: the third event is processed after the restart.
    let pipeline = Pipeline::start(&common).await;
    let out = wait_for_files(&dirs.path("out"), 3).await;
    assert_eq!(out["c-3.json"]["n"], 3);
    assert_eq!(out["c-3.json"]["status"], "processed");
    wait_for_empty(&dirs.path("data")).await;
    drop(pipeline);
}

#[tokio::test]
async fn duplicates_become_extra_files_and_drops_vanish() {
    let dirs = Dirs::new();
    let pipeline = Pipeline::start(&[
        "--data-dir",
        &dirs.arg("data"),
        "--emit-dir",
        &dirs.arg("out"),
        "--dead-letter-dir",
        &dirs.arg("dlq"),
        "--dup-prob",
        "1",
    ])
    .await;
    accepted_id(post_event(&pipeline, "c-dup", &json!({"item": "x"})).await).await;
    let out = wait_for_files(&dirs.path("out"), 2).await;
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["c-dup.2.json", "c-dup.json"]
    );
    assert_eq!(out["c-dup.json"]["item"], "X");
    assert_eq!(out["c-dup.json"], out["c-dup.2.json"]);

    let dirs = Dirs::new();
    let pipeline = Pipeline::start(&[
        "--data-dir",
        &dirs.arg("data"),
        "--emit-dir",
        &dirs.arg("out"),
        "--dead-letter-dir",
        &dirs.arg("dlq"),
        "--drop-prob",
        "1",
    ])
    .await;
    accepted_id(post_event(&pipeline, "c-drop", &json!({"item": "x"})).await).await;
    // A dropped event is deleted from storage without being emitted anywhere.
    wait_for_empty(&dirs.path("data")).await;
    assert!(json_files(&dirs.path("out")).is_empty());
    assert!(json_files(&dirs.path("dlq")).is_empty());
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_pipeline_with_code_0() {
    let dirs = Dirs::new();
    let pipeline = Pipeline::start(&[
        "--emit-dir",
        &dirs.arg("out"),
        "--dead-letter-dir",
        &dirs.arg("dlq"),
    ])
    .await;
    pipeline.terminate();
    let (status, stderr) = pipeline.exit().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    // The default data directory is a temporary one, removed on exit.
    let data_dir = stderr
        .lines()
        .find_map(|line| line.strip_prefix("pipeline: storing accepted events in "))
        .unwrap_or_else(|| panic!("no data directory in {stderr}"));
    assert!(data_dir.contains("roundtrip-pipeline-"), "{data_dir}");
    assert!(!Path::new(data_dir).exists(), "{data_dir} is left behind");
}

/// What the test webhook received.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Value,
}

/// A webhook that answers `503` to its first request and `200` afterwards, and reports
/// every request it answered with `200`.
async fn flaky_webhook() -> (String, mpsc::UnboundedReceiver<Received>, Arc<Mutex<u32>>) {
    #[derive(Clone)]
    struct Hook {
        calls: Arc<Mutex<u32>>,
        received: mpsc::UnboundedSender<Received>,
    }
    async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let first = {
            let mut calls = hook.calls.lock().expect("lock");
            *calls += 1;
            *calls == 1
        };
        if first {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let body = serde_json::from_slice(&body).expect("a JSON body");
        let _ = hook.received.send(Received { headers, body });
        StatusCode::OK
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(Mutex::new(0));
    let app = Router::new()
        .route("/processed", post(receive))
        .with_state(Hook {
            calls: Arc::clone(&calls),
            received: tx,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the webhook");
    let url = format!(
        "http://{}/processed",
        listener.local_addr().expect("webhook address")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx, calls)
}

#[tokio::test]
async fn a_webhook_output_is_retried_and_carries_the_propagated_headers() {
    let (url, mut received, calls) = flaky_webhook().await;
    let dirs = Dirs::new();
    let pipeline = Pipeline::start(&[
        "--data-dir",
        &dirs.arg("data"),
        "--emit",
        &url,
        "--dead-letter-dir",
        &dirs.arg("dlq"),
    ])
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(pipeline.url("/events"))
        .header("x-correlation-id", "c-hook")
        .header("x-roundtrip-run", "run-42")
        .header("traceparent", format!("00-{trace}-{parent_span}-01"))
        .json_body(&json!({"id": "e-1", "correlationId": "c-hook", "item": "widget"}))
        .send()
        .await
        .expect("post");
    accepted_id(response).await;

    let got = timeout(DEADLINE, received.recv())
        .await
        .expect("the webhook receives the event in time")
        .expect("the webhook is running");
    assert_eq!(*calls.lock().expect("lock"), 2, "one 503, then one retry");
    assert_eq!(
        got.body,
        json!({
            "id": "e-1",
            "correlationId": "c-hook",
            "item": "WIDGET",
            "status": "processed",
            "processed_at": got.body["processed_at"],
        })
    );
    let header = |name: &str| {
        got.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_owned()
    };
    assert_eq!(header("x-correlation-id"), "c-hook");
    assert_eq!(header("x-roundtrip-run"), "run-42");
    assert_eq!(header("content-type"), "application/json");
    let traceparent = header("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"));
    assert_eq!(parts[2].len(), 16);
    assert_ne!(parts[2], parent_span, "a fresh span id");
}
