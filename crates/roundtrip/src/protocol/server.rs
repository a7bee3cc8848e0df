//! The engine's side of the protocol: read request lines, serve each in a task of its
//! own, write response and notification lines through one writer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use roundtrip_core::suite::{self, LoadedSuite};
use roundtrip_core::vars::Vars;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::*;
use crate::engine::{
    self, LiveError, LiveRun, RunEvent, RunOptions, Scope, ScopeStop, TestOutcome,
};
use crate::report::text;
use crate::store::{self, Store};

/// An error response's code, message and class.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
    kind: ErrorKind,
}

impl RpcError {
    fn usage(message: impl Into<String>) -> RpcError {
        RpcError {
            code: codes::USAGE,
            message: message.into(),
            kind: ErrorKind::Usage,
        }
    }

    fn protocol(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            kind: ErrorKind::Protocol,
        }
    }
}

impl From<LiveError> for RpcError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::Usage(message) => RpcError::usage(message),
            LiveError::Cancelled => RpcError {
                code: codes::CANCELLED,
                message: "cancelled".into(),
                kind: ErrorKind::Cancelled,
            },
            LiveError::Harness(e) => RpcError {
                code: if e.exit_code() == 2 {
                    codes::USAGE
                } else {
                    codes::HARNESS
                },
                message: engine::shown_error(&e),
                kind: if e.exit_code() == 2 {
                    ErrorKind::Usage
                } else {
                    ErrorKind::Harness
                },
            },
        }
    }
}

type Reply = Result<Value, RpcError>;

/// What the engine holds between requests.
struct Engine {
    store_url: String,
    store: tokio::sync::OnceCell<Arc<dyn Store>>,
    runs: Mutex<HashMap<String, Arc<LiveRun>>>,
    scopes: Mutex<HashMap<String, ScopeEntry>>,
    /// Requests under way, by id (as JSON text; `#n` for those without one), with
    /// whether the method waits (and so can be cancelled) and the switch that cancels it.
    inflight: Mutex<HashMap<String, (bool, watch::Sender<bool>)>>,
    out: mpsc::UnboundedSender<String>,
}

/// A test under way: its run, what stops its waits, and the test itself (locked by
/// the request that uses it).
#[derive(Clone)]
struct ScopeEntry {
    run: String,
    stop: ScopeStop,
    scope: Arc<tokio::sync::Mutex<Option<Scope>>>,
}

/// The methods that wait, and that `cancel` therefore stops.
const CANCELLABLE: &[&str] = &["open", "run", "expect"];

/// How long the end of the input waits for requests under way once cancelled.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves the protocol on `input` and `output` until the input ends, a `shutdown`
/// request, or `stop` turns true; then closes every open run (as interrupted, unless
/// by `shutdown`) and returns. `store_url` is the store every run records into, opened
/// at `initialize`.
pub async fn serve<R, W>(input: R, output: W, store_url: String, mut stop: watch::Receiver<bool>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, lines) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(write_lines(output, lines));
    let engine = Arc::new(Engine {
        store_url,
        store: tokio::sync::OnceCell::new(),
        runs: Mutex::default(),
        scopes: Mutex::default(),
        inflight: Mutex::default(),
        out,
    });
    let mut reader = BufReader::new(input);
    let mut tasks = JoinSet::new();
    let mut initialized = false;
    let mut graceful = None;
    let mut unnamed = 0u64;
    loop {
        while tasks.try_join_next().is_some() {}
        let line = tokio::select! {
            line = read_line(&mut reader) => line,
            () = engine::cancelled(&mut stop) => break,
        };
        let line = match line {
            Ok(Some(Line::Text(line))) => line,
            Ok(Some(Line::TooLong)) => {
                engine.respond(
                    &Value::Null,
                    Err(RpcError::protocol(
                        codes::INVALID_REQUEST,
                        format!("a request line is longer than {MAX_LINE} bytes"),
                    )),
                );
                continue;
            }
            Ok(None) | Err(_) => break,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let request: Request = match serde_json::from_slice::<Value>(&line) {
            Err(e) => {
                engine.respond(
                    &Value::Null,
                    Err(RpcError::protocol(
                        codes::PARSE_ERROR,
                        format!(
                            "the line is not JSON: {}",
                            roundtrip_core::escape::escape_text(&e.to_string())
                        ),
                    )),
                );
                continue;
            }
            Ok(value) => {
                // `"id": null` is not a notification: serde would read it as no id.
                let raw_id = value.get("id").cloned();
                let id = raw_id.clone().unwrap_or(Value::Null);
                match serde_json::from_value::<Request>(value) {
                    Ok(r) if r.jsonrpc == "2.0" => Request { id: raw_id, ..r },
                    Ok(_) => {
                        engine.respond(
                            &id,
                            Err(RpcError::protocol(
                                codes::INVALID_REQUEST,
                                "`jsonrpc` must be \"2.0\"",
                            )),
                        );
                        continue;
                    }
                    Err(e) => {
                        engine.respond(
                            &id,
                            Err(RpcError::protocol(
                                codes::INVALID_REQUEST,
                                format!(
                                    "not a JSON-RPC request: {}",
                                    roundtrip_core::escape::escape_text(&e.to_string())
                                ),
                            )),
                        );
                        continue;
                    }
                }
            }
        };
        let id = request.id.clone();
        if let Some(refused) = refuse_id(id.as_ref(), &engine) {
            engine.respond(&Value::Null, Err(refused));
            continue;
        }
        let params = request.params.unwrap_or_else(|| json!({}));
        match request.method.as_str() {
            "initialize" => {
                let reply = engine.initialize(params).await;
                initialized |= reply.is_ok();
                engine.answer(id.as_ref(), reply);
            }
            _ if !initialized => engine.answer(
                id.as_ref(),
                Err(RpcError::protocol(
                    codes::NOT_INITIALIZED,
                    "the first request must be `initialize`",
                )),
            ),
            "cancel" => {
                let reply = parse::<CancelParams>(params).map(|p| {
                    let key = p.id.to_string();
                    let cancelled = lock(&engine.inflight)
                        .get(&key)
                        .is_some_and(|(waits, tx)| *waits && tx.send(true).is_ok());
                    json!(CancelResult { cancelled })
                });
                engine.answer(id.as_ref(), reply);
            }
            "shutdown" => {
                graceful = Some(id);
                break;
            }
            method => {
                let method = method.to_owned();
                let (cancel_tx, cancel) = watch::channel(false);
                let key = match &id {
                    Some(id) => id.to_string(),
                    None => {
                        unnamed += 1;
                        format!("#{unnamed}")
                    }
                };
                let waits = CANCELLABLE.contains(&method.as_str());
                lock(&engine.inflight).insert(key.clone(), (waits, cancel_tx));
                let engine = Arc::clone(&engine);
                tasks.spawn(async move {
                    let reply = engine.call(&method, params, cancel).await;
                    lock(&engine.inflight).remove(&key);
                    engine.answer(id.as_ref(), reply);
                });
            }
        }
    }
    // Whatever still waits is cancelled (and given a bound to stop); then every test is
    // ended and every run torn down and recorded.
    for (_, tx) in lock(&engine.inflight).values() {
        let _ = tx.send(true);
    }
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let interrupted = graceful.is_none();
    let why = if interrupted {
        "the client went away before the test ended"
    } else {
        "the engine was shut down before the test ended"
    };
    let scopes: Vec<ScopeEntry> = lock(&engine.scopes).drain().map(|(_, s)| s).collect();
    for entry in scopes {
        end_stopped(&entry, why).await;
    }
    let runs: Vec<_> = lock(&engine.runs).drain().map(|(_, r)| r).collect();
    for run in runs {
        let _ = run.close(interrupted).await;
    }
    if let Some(store) = engine.store.get() {
        let _ = store.close().await;
    }
    if let Some(id) = graceful {
        engine.answer(id.as_ref(), Ok(json!({})));
    }
    drop(engine);
    // Every sender is gone once the runs are closed; the bound is for one that is not.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
}

/// A request id the engine cannot answer by: `null` (its answer would look like an
/// answer to a line that was not a request), or one already in use.
fn refuse_id(id: Option<&Value>, engine: &Engine) -> Option<RpcError> {
    let id = id?;
    if id.is_null() {
        return Some(RpcError::protocol(
            codes::INVALID_REQUEST,
            "a request's `id` is a number or a string, not null (leave it out for a \
             notification)",
        ));
    }
    if !(id.is_string() || id.is_number()) {
        return Some(RpcError::protocol(
            codes::INVALID_REQUEST,
            "a request's `id` is a number or a string",
        ));
    }
    if lock(&engine.inflight).contains_key(&id.to_string()) {
        return Some(RpcError::protocol(
            codes::INVALID_REQUEST,
            format!(
                "request {} is still under way: give each request its own id",
                roundtrip_core::escape::escape_text(&id.to_string())
            ),
        ));
    }
    None
}

/// The test, once the request ahead of this one on it is done; a cancel or the test's
/// end meanwhile answers at once.
async fn locked<'a>(
    entry: &'a ScopeEntry,
    cancel: &watch::Receiver<bool>,
) -> Result<tokio::sync::MutexGuard<'a, Option<Scope>>, RpcError> {
    let mut cancel = cancel.clone();
    let mut stopped = entry.stop.stopped();
    tokio::select! {
        biased;
        () = engine::cancelled(&mut cancel) => Err(LiveError::Cancelled.into()),
        () = engine::cancelled(&mut stopped) => Err(LiveError::Cancelled.into()),
        guard = entry.scope.lock() => Ok(guard),
    }
}

/// Stops a test's wait, then ends it as failed with `why` (if it had not ended).
async fn end_stopped(entry: &ScopeEntry, why: &str) {
    entry.stop.stop();
    if let Some(scope) = entry.scope.lock().await.take() {
        let _ = scope.end(TestOutcome::Failed(why.to_owned())).await;
    }
}

enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// One line, without its newline, at most [`MAX_LINE`] bytes; a longer one is read to
/// its end and refused.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                None
            } else if too_long {
                Some(Line::TooLong)
            } else {
                Some(Line::Text(line))
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Text(line)
            }));
        }
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut lines: mpsc::UnboundedReceiver<String>,
) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
}

fn parse<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params).map_err(|e| RpcError {
        code: codes::INVALID_PARAMS,
        message: format!(
            "invalid params: {}",
            roundtrip_core::escape::escape_text(&e.to_string())
        ),
        kind: ErrorKind::Usage,
    })
}

fn to_value<T: Serialize>(v: &T) -> Reply {
    serde_json::to_value(v).map_err(|e| RpcError {
        code: codes::HARNESS,
        message: format!("the answer could not be serialized: {e}"),
        kind: ErrorKind::Harness,
    })
}

impl Engine {
    fn send_line(&self, message: &Value) {
        let _ = self.out.send(message.to_string());
    }

    /// Answers a request; a notification (no id) gets no answer.
    fn answer(&self, id: Option<&Value>, reply: Reply) {
        if let Some(id) = id {
            self.respond(id, reply);
        }
    }

    fn respond(&self, id: &Value, reply: Reply) {
        let message = match reply {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(e) => json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": e.code, "message": e.message, "data": { "kind": e.kind } },
            }),
        };
        self.send_line(&message);
    }

    async fn initialize(&self, params: Value) -> Reply {
        let p: InitializeParams = parse(params)?;
        if p.protocol != PROTOCOL_VERSION {
            return Err(RpcError::protocol(
                codes::VERSION_MISMATCH,
                format!(
                    "the client speaks protocol version {}, and this engine (roundtrip {}) \
                     speaks version {PROTOCOL_VERSION}: install the roundtrip Python package \
                     and engine of one release (or set ROUNDTRIP_BIN to a matching engine)",
                    p.protocol,
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
        self.store
            .get_or_try_init(|| async { store::open(&self.store_url).await })
            .await
            .map_err(|e| {
                let (code, kind) = if e.is_usage() {
                    (codes::USAGE, ErrorKind::Usage)
                } else {
                    (codes::HARNESS, ErrorKind::Harness)
                };
                RpcError {
                    code,
                    message: engine::shown_error(&e),
                    kind,
                }
            })?;
        to_value(&InitializeResult {
            protocol: PROTOCOL_VERSION,
            engine: env!("CARGO_PKG_VERSION").to_owned(),
            store: roundtrip_core::redact::url(&self.store_url),
            pid: std::process::id(),
        })
    }

    fn store(&self) -> Result<Arc<dyn Store>, RpcError> {
        self.store
            .get()
            .cloned()
            .ok_or_else(|| RpcError::protocol(codes::NOT_INITIALIZED, "not initialized"))
    }

    async fn call(
        self: &Arc<Self>,
        method: &str,
        params: Value,
        cancel: watch::Receiver<bool>,
    ) -> Reply {
        match method {
            "load" => {
                let p: LoadParams = parse(params)?;
                let (loaded, _) = load(&p.suite, &p.vars, &p.env_files)?;
                to_value(&suite_info(&loaded))
            }
            "open" => self.open(parse(params)?, cancel).await,
            "run" => {
                let p: RunParams = parse(params)?;
                let run = self.run(&p.run)?;
                let result = run.run_scenario(&p.scenario, cancel).await?;
                to_value(&result_out(result))
            }
            "begin" => {
                let p: BeginParams = parse(params)?;
                let run = self.run(&p.run)?;
                let scope = run.begin(&p.test)?;
                let handle = uuid::Uuid::now_v7().to_string();
                lock(&self.scopes).insert(
                    handle.clone(),
                    ScopeEntry {
                        run: p.run.clone(),
                        stop: scope.stopper(),
                        scope: Arc::new(tokio::sync::Mutex::new(Some(scope))),
                    },
                );
                to_value(&BeginResult { scope: handle })
            }
            "send" => {
                let p: SendParams = parse(params)?;
                let entry = self.entry(&p.scope)?;
                let mut guard = locked(&entry, &cancel).await?;
                let scope = guard.as_mut().ok_or_else(|| unknown("test", &p.scope))?;
                let ev = scope.send(&p.send).await?;
                to_value(&SentOut {
                    correlation_id: ev.correlation_id,
                    index: ev.index,
                    channel: ev.channel,
                    sent_at: ev.sent_at,
                    size: ev.size,
                    error: ev.error,
                })
            }
            "expect" => {
                let p: ExpectParams = parse(params)?;
                let entry = self.entry(&p.scope)?;
                let mut guard = match locked(&entry, &cancel).await {
                    Ok(guard) => guard,
                    Err(e) => {
                        // Cancelled before its wait could start: the test's verdicts are
                        // no more the system's than if it had been waiting.
                        entry.stop.interrupted();
                        return Err(e);
                    }
                };
                let scope = guard.as_mut().ok_or_else(|| unknown("test", &p.scope))?;
                let expected = scope.expect(&p.expect, p.events.as_deref(), cancel).await?;
                to_value(&ExpectResult {
                    passed: expected.verdict.passed(),
                    text: text::expectation(&expected.verdict),
                    observations: expected
                        .observations
                        .iter()
                        .map(|o| ObservationOut::from(o.as_ref()))
                        .collect(),
                    verdict: expected.verdict,
                })
            }
            "end" => {
                let p: EndParams = parse(params)?;
                let entry = lock(&self.scopes)
                    .remove(&p.scope)
                    .ok_or_else(|| unknown("test", &p.scope))?;
                // A wait of the test still under way is stopped, not waited for.
                entry.stop.stop();
                let Some(scope) = entry.scope.lock().await.take() else {
                    return Err(unknown("test", &p.scope));
                };
                let reason = p.reason.unwrap_or_default();
                let outcome = match p.outcome.unwrap_or(Outcome::Passed) {
                    Outcome::Passed => TestOutcome::Passed,
                    Outcome::Failed => TestOutcome::Failed(reason),
                    Outcome::Skipped => TestOutcome::Skipped(reason),
                };
                to_value(&result_out(scope.end(outcome).await?))
            }
            "close" => {
                let p: CloseParams = parse(params)?;
                let run = lock(&self.runs)
                    .remove(&p.run)
                    .ok_or_else(|| unknown("run", &p.run))?;
                let open: Vec<ScopeEntry> = {
                    let mut scopes = lock(&self.scopes);
                    let ids: Vec<String> = scopes
                        .iter()
                        .filter(|(_, e)| e.run == p.run)
                        .map(|(id, _)| id.clone())
                        .collect();
                    ids.iter().filter_map(|id| scopes.remove(id)).collect()
                };
                for entry in &open {
                    end_stopped(entry, "the run was closed before the test ended").await;
                }
                let summary = run.close(false).await?;
                to_value(&CloseResult {
                    run: summary.run_id.clone(),
                    status: summary.status().as_str().to_owned(),
                    passed: summary.passed(),
                    failed: summary.failed(),
                    text: format!(
                        "{}{}",
                        text::listener_lines(&summary),
                        text::sut_exit_lines(&summary)
                    ),
                })
            }
            other => Err(RpcError::protocol(
                codes::METHOD_NOT_FOUND,
                format!(
                    "no method `{}`; the methods are initialize, load, open, run, begin, send, \
                     expect, end, close, cancel and shutdown",
                    roundtrip_core::escape::escape_text(other)
                ),
            )),
        }
    }

    async fn open(self: &Arc<Self>, p: OpenParams, cancel: watch::Receiver<bool>) -> Reply {
        let (loaded, vars) = load(&p.suite, &p.vars, &p.env_files)?;
        let store = self.store()?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut opts = RunOptions::new();
        opts.events = Some(events_tx);
        opts.cancel = cancel;
        tokio::spawn(forward_events(events, self.out.clone()));
        let listen = p.listen.unwrap_or_default();
        let run = LiveRun::open(&loaded, vars, store, &listen, opts).await?;
        let run = Arc::new(run);
        let result = OpenResult {
            run: run.run_id().to_owned(),
            suite: suite_info(&loaded),
            listening: run.listened().map(str::to_owned).collect(),
        };
        lock(&self.runs).insert(run.run_id().to_owned(), run);
        to_value(&result)
    }

    fn run(&self, id: &str) -> Result<Arc<LiveRun>, RpcError> {
        lock(&self.runs)
            .get(id)
            .cloned()
            .ok_or_else(|| unknown("run", id))
    }

    fn entry(&self, id: &str) -> Result<ScopeEntry, RpcError> {
        lock(&self.scopes)
            .get(id)
            .cloned()
            .ok_or_else(|| unknown("test", id))
    }
}

fn unknown(what: &str, id: &str) -> RpcError {
    RpcError::usage(format!(
        "no open {what} `{}` (it was never opened, or has ended)",
        roundtrip_core::escape::escape_text(id)
    ))
}

fn load(
    path: &str,
    vars: &std::collections::BTreeMap<String, String>,
    env_files: &[String],
) -> Result<(LoadedSuite, Vars), RpcError> {
    let mut resolved = Vars::from_process();
    for file in env_files {
        resolved
            .read_file(Path::new(file))
            .map_err(|e| RpcError::usage(roundtrip_core::escape::escape_text(&e.to_string())))?;
    }
    for (name, value) in vars {
        resolved
            .set(name, value)
            .map_err(|e| RpcError::usage(roundtrip_core::escape::escape_text(&e.to_string())))?;
    }
    let loaded = suite::load_with(Path::new(path), &resolved).map_err(|e| RpcError {
        code: codes::USAGE,
        message: e.to_string(),
        kind: ErrorKind::Suite,
    })?;
    Ok((loaded, resolved))
}

fn suite_info(loaded: &LoadedSuite) -> SuiteInfo {
    SuiteInfo {
        name: loaded.suite.name.clone(),
        path: loaded.path.display().to_string(),
        scenarios: loaded
            .suite
            .scenarios
            .iter()
            .map(|s| ScenarioInfo {
                name: s.name.clone(),
                tags: s.tags.clone(),
            })
            .collect(),
        channels: loaded
            .suite
            .channels
            .iter()
            .map(|(name, spec)| {
                let c = spec.capabilities();
                ChannelInfo {
                    name: name.clone(),
                    transport: spec.transport().to_owned(),
                    produce: c.produce,
                    listen: c.listen,
                }
            })
            .collect(),
    }
}

fn result_out(result: roundtrip_core::run::ScenarioResult) -> ResultOut {
    ResultOut {
        passed: result.status == roundtrip_core::run::ScenarioStatus::Passed,
        text: format!(
            "{}\n{}",
            text::headline(&result),
            text::scenario_details(&result)
        ),
        result,
    }
}

/// Turns a run's progress into `event` notifications.
async fn forward_events(
    mut events: mpsc::UnboundedReceiver<RunEvent>,
    out: mpsc::UnboundedSender<String>,
) {
    let mut run = String::new();
    while let Some(event) = events.recv().await {
        let (kind, name, status) = match event {
            RunEvent::RunStarted { run_id, .. } => {
                run = run_id;
                continue;
            }
            RunEvent::ListenerReady { channel, .. } => ("listener-ready", Some(channel), None),
            RunEvent::SutReady { .. } => ("sut-ready", None, None),
            RunEvent::ScenarioStarted { name } => ("scenario-started", Some(name), None),
            RunEvent::ScenarioFinished(r) => (
                "scenario-finished",
                Some(r.name),
                serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned)),
            ),
            RunEvent::RunFinished(_) => return,
        };
        let params = EventParams {
            run: run.clone(),
            kind: kind.to_owned(),
            name,
            status,
        };
        let message = json!({ "jsonrpc": "2.0", "method": "event", "params": params });
        if out.send(message.to_string()).is_err() {
            return;
        }
    }
}
