//! `roundtrip listen` end to end: the service as a process, its webhook fed over HTTP, its
//! API read over HTTP, stopped by a signal.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

const READ: &str = "read-token-4f9c2a7e1b3d5f60";
const ADMIN: &str = "admin-token-8e1d3c5b7a9f2e40";
const RUN_A: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
const RUN_B: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c";

/// A config with one webhook channel, the API on a free loopback port, and `extra` lines.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("listen.yaml");
    std::fs::write(
        &path,
        format!(
            "name: test-listener\n{extra}api:\n  listen: 127.0.0.1:0\n  tokens: {{ read: [RT_READ], admin: [RT_ADMIN] }}\nchannels:\n  out: {{ webhook: {{ listen: '127.0.0.1:0', path: /hook }} }}\n"
        ),
    )
    .expect("write the config");
    path
}

fn roundtrip(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(args)
        .current_dir(dir)
        .env("RT_READ", READ)
        .env("RT_ADMIN", ADMIN)
        .env("ROUNDTRIP_READ_TOKEN", READ)
        .env("ROUNDTRIP_ADMIN_TOKEN", ADMIN)
        .env_remove("ROUNDTRIP_STORE")
        .output()
        .expect("the roundtrip binary runs")
}

/// The lines a process (`who`) writes up to and including the one `done` accepts; a
/// process that ends first fails the test with what it wrote.
fn read_until(out: &mut impl BufRead, who: &str, done: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read its output");
        assert!(n > 0, "{who} ended before it was ready:\n{seen}");
        seen.push_str(&line);
        if done(&line) {
            return seen;
        }
    }
}

/// A running service: its process and what its banner said.
struct Service {
    child: Child,
    stdout: BufReader<ChildStdout>,
    banner: String,
    api: String,
    hook: String,
    home: String,
    store: PathBuf,
}

impl Service {
    /// Starts `roundtrip listen` on `config` and reads its banner up to `ready`.
    fn start(dir: &Path, config: &Path) -> Service {
        let store = dir.join("store.sqlite");
        Service::start_with(dir, config, &format!("sqlite:{}", store.display()), store)
    }

    /// [`Service::start`], recording into the store at `url`.
    fn start_with(dir: &Path, config: &Path, url: &str, store: PathBuf) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roundtrip"));
        command.arg("listen").arg(config).arg("--store").arg(url);
        Service::spawn(command, dir, store)
    }

    /// Starts `command` (a `roundtrip listen`, possibly behind `ip netns exec`) and reads
    /// its banner up to `ready`.
    fn spawn(mut command: Command, dir: &Path, store: PathBuf) -> Service {
        let mut child = command
            .current_dir(dir)
            .env("RT_READ", READ)
            .env("RT_ADMIN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the service starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let banner = read_until(&mut stdout, "the service", |line| line.trim() == "ready");
        let find_opt = |prefix: &str| {
            banner
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        let find = |prefix: &str| {
            find_opt(prefix).unwrap_or_else(|| panic!("`{prefix}` in the banner:\n{banner}"))
        };
        let (api, home) = (find("api: "), find("evidence run: "));
        // The channel `out`, where a config has one.
        let hook = find_opt("channel out: ").unwrap_or_default();
        Service {
            child,
            stdout,
            banner,
            api,
            hook,
            home,
            store,
        }
    }

    /// SIGTERM, then the exit code and everything it printed after the banner.
    fn stop(mut self) -> (Option<i32>, String, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).expect("stdout");
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut err).expect("stderr");
        }
        let status = self.child.wait().expect("the service exits");
        (status.code(), format!("{}{rest}", self.banner), err)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(hook: &str, run: Option<&str>, correlation: &str, body: &str) {
    let mut request = client()
        .post(hook)
        .header("x-correlation-id", correlation)
        .body(body.to_owned());
    if let Some(run) = run {
        request = request.header("x-roundtrip-run", run);
    }
    let response = request.send().await.expect("the webhook answers");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn get(url: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    (status, response.text().await.expect("a body"))
}

async fn json(url: &str, token: &str) -> Value {
    let (status, body) = get(url, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn correlations(page: &Value) -> Vec<String> {
    page["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .map(|o| o["correlation_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_config_error_is_located_and_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = config(dir.path(), "");
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("path: /hook", "path: /hook, lisen: x");
    std::fs::write(&path, text).expect("write");
    let o = roundtrip(&["listen", "listen.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("listen.yaml:6:"), "{err}");
    assert!(err.contains("unknown key `lisen`"), "{err}");
}

#[test]
fn check_validates_without_starting_and_token_variables_must_be_set() {
    let dir = tempfile::tempdir().expect("a temp dir");
    config(dir.path(), "");
    let o = roundtrip(&["listen", "--check", "listen.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("ok: listen.yaml (test-listener: 1 channel(s))")
    );

    let o = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["listen", "--check", "listen.yaml"])
        .current_dir(dir.path())
        .env("RT_READ", "short")
        .env_remove("RT_ADMIN")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`RT_READ` is shorter than 16"), "{err}");
    assert!(
        !err.contains("short\n") && !err.contains(": short"),
        "{err}"
    );
}

/// `--check` checks the store's URL as a start would, without connecting: a TLS file
/// that is not there, a mode that does not exist, a parameter given twice.
#[cfg(feature = "postgres")]
#[test]
fn check_checks_the_store_url_too() {
    let dir = tempfile::tempdir().expect("a temp dir");
    config(dir.path(), "");
    let url = "postgres://rt:hunter2@db.invalid:5432/x";
    for (params, says) in [
        (
            "sslmode=verify-full&sslrootcert=missing.pem",
            "`sslrootcert=missing.pem` cannot be read",
        ),
        ("sslmode=Require", "`sslmode=Require` is not a mode"),
        (
            "sslmode=verify-full&sslrootcert=system&sslmode=disable",
            "`sslmode` is given twice",
        ),
    ] {
        let store = format!("{url}?{params}");
        let o = roundtrip(
            &["listen", "--check", "listen.yaml", "--store", &store],
            dir.path(),
        );
        assert_eq!(o.status.code(), Some(2), "{params}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{params}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// What the user typed is escaped before it reaches the terminal: a store URL (in
/// `migrate`'s error) and a config file's name (in `--check`'s answer) with control
/// characters in them.
#[test]
fn control_characters_the_user_typed_are_escaped() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let named = "c\x1b[31mfg\x07.yaml";
    std::fs::copy(config(dir.path(), ""), dir.path().join(named)).expect("copy");
    let o = roundtrip(&["listen", "--check", named], dir.path());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ok: c\\x1b[31mfg\\x07.yaml"), "{out}");
    #[cfg(feature = "postgres")]
    {
        let o = roundtrip(
            &[
                "migrate",
                "--store",
                "postgres://db.invalid/x?sslmode=verify-full&sslrootcert=%1B%5D0%3Bpwned%07",
            ],
            dir.path(),
        );
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
        assert!(err.contains("open the store at"), "{err}");
        assert!(err.contains("\\x1b]0;pwned\\x07"), "{err}");
    }
}

#[test]
fn a_public_address_without_tokens_is_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("listen.yaml");
    std::fs::write(
        &path,
        "name: x\napi: { listen: '0.0.0.0:0' }\nchannels:\n  out: { webhook: { listen: '127.0.0.1:0' } }\n",
    )
    .expect("write");
    let o = roundtrip(&["listen", "listen.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no token guards it"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_are_kept_by_run_behind_tokens_without_cross_talk() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let service = Service::start(dir.path(), &config(dir.path(), ""));
    let api = service.api.clone();

    post(&service.hook, Some(RUN_A), "a1", r#"{"n":1}"#).await;
    post(&service.hook, Some(RUN_B), "b1", r#"{"n":2}"#).await;
    post(&service.hook, Some(RUN_A), "a2", r#"{"n":3}"#).await;
    post(&service.hook, None, "stray", "not ours").await;
    post(&service.hook, Some("not-a-run-id"), "forged", "").await;

    // Probes need no token; everything else does.
    assert_eq!(get(&format!("{api}/healthz"), None).await.0, StatusCode::OK);
    let (status, body) = get(&format!("{api}/readyz"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["channels"][0]["state"], "listening");
    for path in [
        "/metrics".to_owned(),
        "/v1/runs".to_owned(),
        format!("/v1/runs/{RUN_A}"),
        format!("/v1/runs/{RUN_A}/observations"),
        format!("/v1/runs/{RUN_A}/events"),
    ] {
        for token in [None, Some("wrong-token-0000000000"), Some("")] {
            let response = match token {
                None => client().get(format!("{api}{path}")).send().await,
                Some(t) => {
                    client()
                        .get(format!("{api}{path}"))
                        .bearer_auth(t)
                        .send()
                        .await
                }
            }
            .expect("answers");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{path} {token:?}"
            );
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer realm=\"roundtrip\""[..])
            );
        }
    }

    // Each run sees only its own.
    let a = json(&format!("{api}/v1/runs/{RUN_A}/observations"), READ).await;
    assert_eq!(correlations(&a), ["a1", "a2"]);
    assert_eq!(a["next"], Value::Null);
    let b = json(&format!("{api}/v1/runs/{RUN_B}/observations"), ADMIN).await;
    assert_eq!(correlations(&b), ["b1"]);
    // The stray and the forged run id are evidence, under the service's own run.
    let home = json(
        &format!("{api}/v1/runs/{}/observations", service.home),
        READ,
    )
    .await;
    assert_eq!(correlations(&home), ["stray", "forged"]);

    // Pages by cursor, and filters.
    let first = json(&format!("{api}/v1/runs/{RUN_A}/observations?limit=1"), READ).await;
    assert_eq!(correlations(&first), ["a1"]);
    let next = first["next"].as_u64().expect("a cursor");
    let second = json(
        &format!("{api}/v1/runs/{RUN_A}/observations?limit=1&after={next}"),
        READ,
    )
    .await;
    assert_eq!(correlations(&second), ["a2"]);
    let filtered = json(
        &format!("{api}/v1/runs/{RUN_A}/observations?correlation_id=a2&channel=out"),
        READ,
    )
    .await;
    assert_eq!(correlations(&filtered), ["a2"]);
    let (status, _) = get(
        &format!("{api}/v1/runs/{RUN_A}/observations?bogus=1"),
        Some(READ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = get(&format!("{api}/v1/runs/nope/observations"), Some(READ)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for bad in ["%00", "a%00b"] {
        for path in ["", "/observations"] {
            let (status, body) = get(&format!("{api}/v1/runs/{bad}{path}"), Some(READ)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{bad}{path}: {body}");
        }
    }

    let runs = json(&format!("{api}/v1/runs"), READ).await;
    let ids: Vec<&str> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    for id in [RUN_A, RUN_B, service.home.as_str()] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }

    // Metrics per channel, never per run.
    let (status, metrics) = get(&format!("{api}/metrics"), Some(READ)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("roundtrip_listen_observations_total{channel=\"out\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("roundtrip_listen_unattributed_total{channel=\"out\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("roundtrip_listen_up{channel=\"out\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(RUN_A) && !metrics.contains(&service.home),
        "{metrics}"
    );

    // Retention is an admin operation; an SQLite store keeps everything.
    let retention = |token: &'static str| {
        client()
            .post(format!("{api}/v1/retention"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        retention(READ).await.expect("answers").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        retention(ADMIN).await.expect("answers").status(),
        StatusCode::CONFLICT
    );

    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("channel out: 5 recorded, 0 fault(s)"), "{out}");
    for secret in [READ, ADMIN] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{out}\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlated_only_drops_what_names_no_run() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let service = Service::start(dir.path(), &config(dir.path(), "record: correlated_only\n"));
    post(&service.hook, None, "stray", "production traffic").await;
    post(&service.hook, Some(RUN_A), "a1", "{}").await;
    let home = json(
        &format!("{}/v1/runs/{}/observations", service.api, service.home),
        READ,
    )
    .await;
    assert_eq!(correlations(&home), Vec::<String>::new());
    let a = json(
        &format!("{}/v1/runs/{RUN_A}/observations", service.api),
        READ,
    )
    .await;
    assert_eq!(correlations(&a), ["a1"]);
    let (_, metrics) = get(&format!("{}/metrics", service.api), Some(READ)).await;
    assert!(
        metrics.contains("roundtrip_listen_dropped_total{channel=\"out\"} 1"),
        "{metrics}"
    );
    let store = service.store.clone();
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let db = rusqlite::Connection::open(store).expect("the store");
    let stored: i64 = db
        .query_row("SELECT count(*) FROM observations", [], |r| r.get(0))
        .expect("count");
    assert_eq!(stored, 1, "the stray was never stored");
}

/// Reads the next chunk of an event stream: the observations whose events it completed,
/// with their ids (`buffer` keeps what is not complete yet).
async fn next_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
) -> Vec<(Option<u64>, Value)> {
    let chunk = response
        .chunk()
        .await
        .expect("the stream goes on")
        .expect("the stream is not over");
    buffer.push_str(&String::from_utf8_lossy(&chunk));
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                data = serde_json::from_str::<Value>(v.trim()).ok();
            }
        }
        if let Some(data) = data {
            events.push((id, data));
        }
    }
    events
}

/// Reads server-sent events from `response` until `n` observations came: their ids and
/// correlation ids.
async fn read_events(response: &mut reqwest::Response, n: usize) -> Vec<(u64, String)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        for (id, data) in next_events(response, &mut buffer).await {
            let id = id.expect("every event has an id");
            assert_eq!(
                data["seq"].as_u64(),
                Some(id),
                "the event id is the sequence number"
            );
            let correlation = data["correlation_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            events.push((id, correlation));
        }
    }
    events
}

async fn open_stream(api: &str, run: &str, last_event_id: Option<u64>) -> reqwest::Response {
    let mut request = client()
        .get(format!("{api}/v1/runs/{run}/events"))
        .bearer_auth(READ);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.expect("the stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_resumed_by_last_event_id_neither_skips_nor_repeats() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let service = Service::start(dir.path(), &config(dir.path(), ""));
    let api = service.api.clone();
    post(&service.hook, Some(RUN_A), "e1", "{}").await;

    // The backlog first, then what comes live; other runs' observations never.
    let mut stream = open_stream(&api, RUN_A, None).await;
    post(&service.hook, Some(RUN_B), "other", "{}").await;
    post(&service.hook, Some(RUN_A), "e2", "{}").await;
    post(&service.hook, Some(RUN_A), "e3", "{}").await;
    let seen = read_events(&mut stream, 3).await;
    assert_eq!(
        seen.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", "e3"]
    );
    // A forced disconnect; what arrives meanwhile is recorded all the same.
    drop(stream);
    post(&service.hook, Some(RUN_A), "e4", "{}").await;
    post(&service.hook, Some(RUN_A), "e5", "{}").await;
    let last = seen.last().map(|(id, _)| *id);
    let mut resumed = open_stream(&api, RUN_A, last).await;
    post(&service.hook, Some(RUN_A), "e6", "{}").await;
    let rest = read_events(&mut resumed, 3).await;
    assert_eq!(
        rest.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>(),
        ["e4", "e5", "e6"]
    );
    let ids: Vec<u64> = seen.iter().chain(&rest).map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, once each: {ids:?}"
    );

    let bad = client()
        .get(format!("{api}/v1/runs/{RUN_A}/events"))
        .bearer_auth(READ)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("answers");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // A stop ends open streams (or axum's graceful shutdown would wait forever).
    let mut open = open_stream(&api, RUN_A, Some(ids[ids.len() - 1])).await;
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let mut rest = Vec::new();
    while let Ok(Some(chunk)) = open.chunk().await {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        !String::from_utf8_lossy(&rest).contains("data:"),
        "nothing new after the last event id"
    );
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A config with the example pipeline's two outputs, as its suite writes them.
fn pipeline_outputs(dir: &Path) -> PathBuf {
    let path = dir.join("listen.yaml");
    std::fs::write(
        &path,
        "name: pipeline-outputs\n\
         correlate: { header: x-correlation-id }\n\
         api:\n  listen: 127.0.0.1:0\n  tokens: { read: [RT_READ], admin: [RT_ADMIN] }\n\
         channels:\n\
         \x20 processed: { webhook: { listen: '127.0.0.1:0', path: /processed } }\n\
         \x20 dead_letter: { webhook: { listen: '127.0.0.1:0', path: /dead-letter } }\n",
    )
    .expect("write the config");
    path
}

/// A run that passed (exit 0), or its output.
fn assert_passed(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn run_remote(remote: &str, store: &Path, token: &str) -> Output {
    run_remote_into(
        remote,
        &format!("sqlite:{}", store.display()),
        &store.with_extension("json"),
        token,
    )
}

fn run_remote_into(remote: &str, store: &str, json: &Path, token: &str) -> Output {
    run_remote_with(remote, store, json, token, &[])
}

/// [`run_remote_into`] with more environment variables.
fn run_remote_with(
    remote: &str,
    store: &str,
    json: &Path,
    token: &str,
    env: &[(&str, &str)],
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args([
            "run",
            "examples/pipeline/suite.yaml",
            "--remote",
            remote,
            "--store",
        ])
        .arg(store)
        .arg("--json")
        .arg(json)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .env("ROUNDTRIP_REMOTE_TOKEN", token)
        .env_remove("ROUNDTRIP_STORE")
        .env_remove("ROUNDTRIP_REMOTE_CA")
        .envs(env.iter().copied())
        .output()
        .expect("the runner runs")
}

fn count(store: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(store)
        .expect("a store")
        .query_row(sql, [], |r| r.get(0))
        .expect("a count")
}

/// The example suite, unchanged, with its outputs recorded by a listener service: the
/// runner listens on nothing, its pipeline delivers to the service's webhooks
/// (`{{ channel.NAME.url }}` is the service's address), and the run waits on the
/// service's event stream. With the service gone, the run is a harness error (exit 3)
/// that says so, before anything is sent.
#[test]
fn the_example_suite_runs_unchanged_against_a_listener_service() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let service = Service::start(dir.path(), &pipeline_outputs(dir.path()));
    let runner_store = dir.path().join("runner.sqlite");

    let wrong = run_remote(&service.api, &runner_store, "wrong-token-0000000000");
    assert_eq!(
        wrong.status.code(),
        Some(2),
        "a wrong token is the configuration's fault"
    );
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("it refused the token (401)"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    let o = run_remote(&service.api, &runner_store, READ);
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{shown}");
    let report: Value = serde_json::from_slice(
        &std::fs::read(runner_store.with_extension("json")).expect("the JSON report"),
    )
    .expect("JSON");
    // Arrivals recorded in another process are judged by wall clock, and say so.
    let verdicts: Vec<&Value> = report["runs"][0]["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .flat_map(|s| s["expectations"].as_array().expect("expectations"))
        .filter(|e| e["matched"].as_u64() > Some(0))
        .collect();
    assert_eq!(verdicts.len(), 3, "{report}");
    assert!(verdicts.iter().all(|e| e["wall_clock"] == true), "{report}");
    // Every observation the run judged is a copy of one the service recorded.
    let copied = count(&runner_store, "SELECT count(*) FROM observations");
    assert!(copied >= 100, "{copied} observations copied");
    let marked = count(
        &runner_store,
        "SELECT count(*) FROM observations WHERE meta LIKE '%copy_of%'",
    );
    assert_eq!(marked, copied, "every copy names its original");
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let recorded = count(
        &dir.path().join("store.sqlite"),
        "SELECT count(*) FROM observations",
    );
    assert_eq!(recorded, copied, "the service recorded what the run copied");

    let gone = run_remote(&service_api_of(&out), &runner_store, READ);
    assert_eq!(gone.status.code(), Some(3));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("it is not reachable"), "{err}");
    assert!(!err.contains(READ), "{err}");
}

fn service_api_of(banner: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("api: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the API in the banner")
        .to_owned()
}

/// A runner that shares an SQLite store with the service would never see what the
/// service records (SQLite's feed is in-process): refused with what to do.
#[test]
fn sharing_an_sqlite_store_with_the_service_is_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let service = Service::start(dir.path(), &pipeline_outputs(dir.path()));
    let o = run_remote(&service.api, &service.store, READ);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("share a store whose feed does not cross processes"),
        "{err}"
    );
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
}

/// A runner and a service that share a Postgres store: the service records into the
/// run's own rows, and the store's cross-process feed brings them to the run (no event
/// stream, no copies). Retention is an admin operation that works on Postgres.
#[cfg(feature = "postgres")]
#[test]
fn a_shared_postgres_store_brings_the_services_observations_to_the_run() {
    let base = std::env::var("ROUNDTRIP_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("listen_{}", std::process::id());
    let store = format!("{base}?schema={schema}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = pipeline_outputs(dir.path());
    let mut text = std::fs::read_to_string(&config).expect("read the config");
    text.push_str("retention: 1ms\n");
    std::fs::write(&config, text).expect("write the config");
    let service = Service::start_with(dir.path(), &config, &store, dir.path().join("unused"));
    let json = dir.path().join("report.json");
    let o = run_remote_into(&service.api, &store, &json, READ);
    assert_passed(&o);
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the report")).expect("JSON");
    let run = report["runs"][0]["run_id"]
        .as_str()
        .expect("a run id")
        .to_owned();
    assert_eq!(polling(&report), [false, false], "pushed: {report}");
    // A runner whose store only polls (`listen=false`, as through PgBouncer) passes too,
    // and its report says its remote channels were polled.
    let polled_json = dir.path().join("polled.json");
    let o = run_remote_into(
        &service.api,
        &format!("{store}&listen=false&poll=50ms"),
        &polled_json,
        READ,
    );
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{shown}");
    let polled: Value =
        serde_json::from_slice(&std::fs::read(&polled_json).expect("the report")).expect("JSON");
    assert_eq!(polling(&polled), [true, true], "polled: {polled}");
    // Recorded once, by the service, into the run: no copies.
    let page = json_blocking(&format!(
        "{}/v1/runs/{run}/observations?limit=1000",
        service.api
    ));
    assert_eq!(
        page["observations"].as_array().map(Vec::len),
        Some(102),
        "{page}"
    );
    // Retention (1 ms here) deletes the run and the service's own run; the service
    // records its run again, so a runner still finds the store shared, and stops cleanly.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (status, body) = runtime.block_on(async {
        let response = client()
            .post(format!("{}/v1/retention", service.api))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("answers");
        (response.status(), response.text().await.expect("a body"))
    });
    assert_eq!(status, StatusCode::OK, "{body}");
    let deleted: Value = serde_json::from_str(&body).expect("JSON");
    assert!(deleted["deleted_runs"].as_u64() >= Some(3), "{body}");
    let home = json_blocking(&format!("{}/v1/runs/{}", service.api, service.home));
    assert_eq!(home["run_id"], service.home.as_str());
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let _ = Command::new("psql")
        .args([
            &base,
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
}

/// Whether each listener of a JSON report's run polled, in channel order.
#[cfg(feature = "postgres")]
fn polling(report: &Value) -> Vec<bool> {
    report["runs"][0]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| l["polling"].as_bool().expect("polling"))
        .collect()
}

#[cfg(feature = "postgres")]
fn json_blocking(url: &str) -> Value {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(json(url, READ))
}

/// The deployment example is a valid config (docs/deploy.md points at it). Its store is
/// Postgres: a build without that backend says so (`--check` checks the store's URL).
#[test]
fn the_deploy_example_config_is_valid() {
    let o = roundtrip(&["listen", "--check", "deploy/listen.yaml"], &workspace());
    let err = String::from_utf8_lossy(&o.stderr);
    if cfg!(feature = "postgres") {
        assert_eq!(o.status.code(), Some(0), "{err}");
    } else {
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("the `postgres` store backend is not compiled"),
            "{err}"
        );
    }
}

/// Reads a run's event stream until `want` distinct correlation ids came: every
/// observation as (correlation id, whether it was marked as a redelivery).
#[cfg(feature = "nats")]
async fn until_distinct(api: &str, run: &str, want: usize) -> Vec<(String, bool)> {
    let mut response = open_stream(api, run, None).await;
    let mut buffer = String::new();
    let mut seen = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    while distinct.len() < want {
        for (_, o) in next_events(&mut response, &mut buffer).await {
            let correlation = o["correlation_id"].as_str().unwrap_or_default().to_owned();
            let redelivered = o["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| h[0] == "x-roundtrip-redelivered");
            distinct.insert(correlation.clone());
            seen.push((correlation, redelivered));
        }
    }
    seen
}

/// The service SIGKILLed while it consumes a JetStream stream, then restarted: every
/// message published is recorded (those published while it was down too), and a
/// message recorded more than once is one the broker redelivered, marked so (what a
/// run counts as a duplicate).
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_loses_nothing_over_jetstream_and_marks_redeliveries() {
    use roundtrip::core::model::{ChannelSpec, DurationSpec, JetStreamChannel};
    use roundtrip::transport::{DriverContext, Outgoing, registry};

    const MESSAGES: usize = 300;
    let name = format!("SVCKILL_{}", std::process::id());
    let subject = format!("svckill.{}", std::process::id());
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("listen.yaml");
    std::fs::write(
        &config,
        format!(
            "name: killed\napi: {{ listen: 127.0.0.1:0, tokens: {{ read: [RT_READ] }} }}\n\
             channels:\n  out: {{ jetstream: {{ url: 'nats://127.0.0.1:4222', stream: {name}, \
             subject: {subject}, create: true, durable: {name}_d, ack_wait: 1s }} }}\n"
        ),
    )
    .expect("write the config");
    let service = Service::start(dir.path(), &config);

    let spec = ChannelSpec::JetStream(JetStreamChannel {
        create: true,
        ack_wait: Some(DurationSpec(std::time::Duration::from_secs(1))),
        ..JetStreamChannel::new("nats://127.0.0.1:4222", &name, &subject)
    });
    let ctx = DriverContext {
        base_dir: dir.path().to_path_buf(),
    };
    let producer = registry::producer("in", &spec, &ctx).expect("a producer");
    producer.connect().await.expect("NATS is up");
    let send = |i: usize| {
        let producer = &producer;
        async move {
            producer
                .send(Outgoing {
                    body: format!("{{\"i\":{i}}}").into_bytes().into(),
                    content_type: "application/json",
                    headers: vec![
                        ("x-roundtrip-run".to_owned(), RUN_A.to_owned()),
                        ("x-correlation-id".to_owned(), format!("m{i}")),
                    ],
                    correlation_id: format!("m{i}"),
                    ..Outgoing::default()
                })
                .await
                .expect("published");
        }
    };
    for i in 0..MESSAGES / 2 {
        send(i).await;
    }
    // Killed once it has recorded some: mid-stream, with messages in flight.
    until_distinct(&service.api, RUN_A, 20).await;
    let mut service = service;
    service.child.kill().expect("SIGKILL");
    service.child.wait().expect("gone");
    for i in MESSAGES / 2..MESSAGES {
        send(i).await;
    }

    let again = Service::start(dir.path(), &config);
    let seen = until_distinct(&again.api, RUN_A, MESSAGES).await;
    let mut first = std::collections::BTreeSet::new();
    for (correlation, redelivered) in &seen {
        if !first.insert(correlation.clone()) {
            assert!(
                *redelivered,
                "{correlation} came twice, the second time not as a redelivery"
            );
        }
    }
    assert_eq!(first.len(), MESSAGES, "nothing lost");
    let (code, out, err) = again.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
}

/// Two network namespaces joined by a veth pair, removed on drop: an "environment"
/// (`10.231.N.1`) and a "CI" host (`10.231.N.2`) that reach each other only through it.
#[cfg(all(target_os = "linux", feature = "full"))]
struct Hosts {
    env: String,
    ci: String,
    env_ip: String,
}

#[cfg(all(target_os = "linux", feature = "full"))]
impl Hosts {
    fn new() -> Hosts {
        let id = std::process::id();
        let (env, ci) = (format!("rtenv{id}"), format!("rtci{id}"));
        let (a, b) = (format!("rtva{id}"), format!("rtvb{id}"));
        let net = format!("10.231.{}", id % 250);
        let hosts = Hosts {
            env: env.clone(),
            ci: ci.clone(),
            env_ip: format!("{net}.1"),
        };
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().expect("ip runs");
            assert!(
                o.status.success(),
                "ip {}: {} (network namespaces need root: CI runs as root)",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        ip(&["netns", "add", &env]);
        ip(&["netns", "add", &ci]);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &env]);
        ip(&["link", "set", &b, "netns", &ci]);
        for (ns, dev, addr) in [
            (&env, &a, format!("{net}.1/24")),
            (&ci, &b, format!("{net}.2/24")),
        ] {
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// `program args…` on host `ns`.
    fn command(ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }
}

#[cfg(all(target_os = "linux", feature = "full"))]
impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.env, &self.ci] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A real network boundary: the pipeline and the listener service run on an
/// "environment" host whose webhook outputs listen on its loopback only; the runner is
/// on another host that reaches the pipeline's input and the service's API, and
/// nothing else. The suite passes through the service, and fails with a clear error
/// (exit 3) once the service is down.
#[cfg(all(target_os = "linux", feature = "full"))]
#[test]
fn a_suite_passes_across_a_network_boundary_through_the_service() {
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "roundtrip-example-pipeline",
            "--bin",
            "pipeline",
        ])
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(built.success(), "the example pipeline builds");
    let pipeline_bin = workspace().join("target/debug/pipeline");
    let hosts = Hosts::new();
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("listen.yaml");
    std::fs::write(
        &config,
        format!(
            "name: environment\ncorrelate: {{ header: x-correlation-id }}\n\
             api: {{ listen: '{}:7070', tokens: {{ read: [RT_READ] }} }}\n\
             channels:\n\
             \x20 processed: {{ webhook: {{ listen: '127.0.0.1:8081', path: /processed }} }}\n\
             \x20 dead_letter: {{ webhook: {{ listen: '127.0.0.1:8082', path: /dead-letter }} }}\n",
            hosts.env_ip
        ),
    )
    .expect("write the config");
    let mut command = Hosts::command(&hosts.env, env!("CARGO_BIN_EXE_roundtrip"));
    command
        .arg("listen")
        .arg(&config)
        .arg("--store")
        .arg(format!(
            "sqlite:{}",
            dir.path().join("env.sqlite").display()
        ));
    let service = Service::spawn(command, dir.path(), dir.path().join("env.sqlite"));

    let mut pipeline = Hosts::command(&hosts.env, pipeline_bin.to_str().expect("a path"))
        .args([
            "--listen",
            &format!("{}:7171", hosts.env_ip),
            "--emit",
            "http://127.0.0.1:8081/processed",
            "--dead-letter",
            "http://127.0.0.1:8082/dead-letter",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the pipeline starts");
    let mut lines = BufReader::new(pipeline.stdout.take().expect("stdout"));
    let mut line = String::new();
    lines
        .read_line(&mut line)
        .expect("the pipeline says it listens");
    assert!(line.contains("pipeline listening on"), "{line}");

    // The outputs are out of the runner's reach.
    let probe = Hosts::command(&hosts.ci, "curl")
        .args(["-s", "-m", "2", "-o", "/dev/null", "-d", "{}"])
        .arg(format!("http://{}:8081/processed", hosts.env_ip))
        .status()
        .expect("curl runs");
    assert!(
        !probe.success(),
        "the webhook is unreachable from the runner's host"
    );

    let suite = dir.path().join("suite.yaml");
    std::fs::write(
        &suite,
        "name: across a boundary\n\
         correlate: { header: x-correlation-id }\n\
         channels:\n\
         \x20 events_in: { http: { url: '{{ env(\"PIPELINE_URL\") }}' } }\n\
         \x20 processed: { webhook: { listen: '127.0.0.1:0', path: /processed } }\n\
         \x20 dead_letter: { webhook: { listen: '127.0.0.1:0', path: /dead-letter } }\n\
         scenarios:\n\
         \x20 - name: processed\n\
         \x20   send: [ { to: events_in, body: { id: '{{ uuid() }}', item: widget, qty: 2 }, repeat: 20 } ]\n\
         \x20   expect:\n\
         \x20     - { on: processed, match: { item: WIDGET, status: processed }, count: 1, within: 5s }\n\
         \x20     - { on: dead_letter, none_within: 1s }\n\
         \x20 - name: dead-lettered\n\
         \x20   send: [ { to: events_in, body: { id: '{{ uuid() }}', item: gadget, qty: -1 } } ]\n\
         \x20   expect:\n\
         \x20     - { on: dead_letter, match: { item: gadget }, within: 5s }\n\
         \x20     - { on: processed, none_within: 1s }\n",
    )
    .expect("write the suite");
    let run = |store: &str| {
        Hosts::command(&hosts.ci, env!("CARGO_BIN_EXE_roundtrip"))
            .arg("run")
            .arg(&suite)
            .args(["--remote", &format!("http://{}:7070", hosts.env_ip)])
            .args(["--store", store])
            .env("NO_COLOR", "1")
            .env("ROUNDTRIP_REMOTE_TOKEN", READ)
            .env(
                "PIPELINE_URL",
                format!("http://{}:7171/events", hosts.env_ip),
            )
            .env_remove("ROUNDTRIP_REMOTE")
            .output()
            .expect("the runner runs")
    };
    let store = format!("sqlite:{}", dir.path().join("ci.sqlite").display());
    let o = run(&store);
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{shown}");

    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let o = run(&store);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("use the listener service at http://"), "{err}");
    assert!(err.contains("it is not reachable"), "{err}");
    let _ = pipeline.kill();
    let _ = pipeline.wait();
}

/// Two runs at once through one service: each passes, and each run's store holds only
/// its own run's observations. The second names the service in a profile (an
/// `--env-file` with ROUNDTRIP_REMOTE and its token) instead of `--remote`.
#[test]
fn two_runs_at_once_through_one_service_see_only_their_own() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let service = Service::start(dir.path(), &pipeline_outputs(dir.path()));
    let profile = dir.path().join("staging.env");
    std::fs::write(
        &profile,
        format!(
            "ROUNDTRIP_REMOTE={}\nROUNDTRIP_REMOTE_TOKEN={READ}\n",
            service.api
        ),
    )
    .expect("write the profile");
    let (a, b) = (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"));
    let (o_a, o_b) = std::thread::scope(|scope| {
        let api = service.api.as_str();
        let first = scope.spawn(|| run_remote(api, &a, READ));
        let second = scope.spawn(|| {
            Command::new(env!("CARGO_BIN_EXE_roundtrip"))
                .args(["run", "examples/pipeline/suite.yaml", "--env-file"])
                .arg(&profile)
                .arg("--store")
                .arg(format!("sqlite:{}", b.display()))
                .current_dir(workspace())
                .env("NO_COLOR", "1")
                .env_remove("ROUNDTRIP_REMOTE")
                .env_remove("ROUNDTRIP_REMOTE_TOKEN")
                .env_remove("ROUNDTRIP_STORE")
                .output()
                .expect("the runner runs")
        });
        (
            first.join().expect("the first run"),
            second.join().expect("the second run"),
        )
    });
    for o in [&o_a, &o_b] {
        assert_passed(o);
    }
    for store in [&a, &b] {
        let runs = count(store, "SELECT count(DISTINCT run_id) FROM observations");
        assert_eq!(runs, 1, "one run's observations in {}", store.display());
        assert_eq!(count(store, "SELECT count(*) FROM observations"), 102);
    }
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let recorded = count(
        &dir.path().join("store.sqlite"),
        "SELECT count(*) FROM observations",
    );
    assert_eq!(recorded, 204, "both runs' observations, once each");
}

/// A suite's channel that the service records as another kind of channel is refused
/// before anything is sent (a usage error, exit 2), naming both.
#[test]
fn a_remote_channel_of_another_kind_is_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let service = Service::start(dir.path(), &pipeline_outputs(dir.path()));
    let suite = dir.path().join("suite.yaml");
    std::fs::write(
        &suite,
        "name: mismatch\n\
         channels:\n\
         \x20 events_in: { http: { url: 'http://127.0.0.1:9/events' } }\n\
         \x20 processed: { dir: { path: out } }\n\
         scenarios:\n\
         \x20 - name: a\n\
         \x20   send: [ { to: events_in, body: { id: x } } ]\n\
         \x20   expect: [ { on: processed, within: 1s } ]\n",
    )
    .expect("write the suite");
    let o = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .arg("run")
        .arg(&suite)
        .args(["--remote", &service.api, "--store"])
        .arg(format!("sqlite:{}", dir.path().join("r.sqlite").display()))
        .env("ROUNDTRIP_REMOTE_TOKEN", READ)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "records channel `processed` as a `webhook` channel, and the suite's is a `dir` one"
        ),
        "{err}"
    );
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
}

/// The test CA and certificates `scripts/services.sh start` makes once.
#[cfg(feature = "tls")]
fn tls_dir() -> PathBuf {
    let dir = std::env::var("ROUNDTRIP_TLS_DIR").map_or_else(
        |_| Path::new(&std::env::var("HOME").expect("HOME")).join(".cache/roundtrip-tls"),
        PathBuf::from,
    );
    assert!(
        dir.join("ca.pem").is_file(),
        "no test CA in {}: run scripts/services.sh start, which makes it",
        dir.display()
    );
    dir
}

/// An API served over HTTPS (`api.tls`): a client that trusts the CA reads it, a plain
/// HTTP request gets no answer, and a suite runs through it with ROUNDTRIP_REMOTE_CA,
/// while a runner that does not trust the CA stops before sending (exit 3) and says
/// why. Unreadable TLS files are a config error that `--check` finds (exit 2).
#[cfg(feature = "tls")]
#[test]
fn an_https_api_serves_a_runner_that_trusts_its_ca() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let certs = tls_dir();
    let config = pipeline_outputs(dir.path());
    let text = std::fs::read_to_string(&config).expect("read the config");
    let tls = format!(
        "  tls: {{ cert: '{}', key: '{}' }}\n",
        certs.join("server.pem").display(),
        certs.join("server.key").display()
    );
    let text = text.replace("api:\n", &format!("api:\n{tls}"));
    std::fs::write(&config, &text).expect("write the config");

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, text.replace("server.key", "missing.key")).expect("write");
    let o = roundtrip(&["listen", "--check", "broken.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`api.tls`") && err.contains("missing.key"),
        "{err}"
    );

    let service = Service::start(dir.path(), &config);
    assert!(
        service.api.starts_with("https://127.0.0.1:"),
        "{}",
        service.banner
    );
    let ca = certs.join("ca.pem");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let trusting = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("the CA"))
                    .expect("a PEM certificate"),
            )
            .build()
            .expect("a client");
        // A client that opens a connection and never starts its handshake holds up no
        // other: the handshake runs in the connection's own task.
        let silent = tokio::net::TcpStream::connect(service.api.trim_start_matches("https://"))
            .await
            .expect("a silent connection");
        let response = trusting
            .get(format!("{}/v1/service", service.api))
            .bearer_auth(READ)
            .send()
            .await
            .expect("answers over TLS beside a silent connection");
        drop(silent);
        assert_eq!(response.status(), StatusCode::OK);
        let plain = service.api.replace("https://", "http://");
        let answered = client().get(format!("{plain}/healthz")).send().await;
        assert!(answered.is_err(), "plain HTTP answered: {answered:?}");
    });

    let store = dir.path().join("runner.sqlite");
    let json = dir.path().join("runner.json");
    let store_url = format!("sqlite:{}", store.display());
    let untrusted = run_remote_with(&service.api, &store_url, &json, READ, &[]);
    assert_eq!(untrusted.status.code(), Some(3));
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("it is not reachable"), "{err}");
    assert!(
        err.contains("set ROUNDTRIP_REMOTE_CA to the PEM file"),
        "{err}"
    );
    let ca = ca.display().to_string();
    let o = run_remote_with(
        &service.api,
        &store_url,
        &json,
        READ,
        &[("ROUNDTRIP_REMOTE_CA", ca.as_str())],
    );
    assert_passed(&o);
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
}

/// A private Redis server on a free port, killed and started again at will.
#[cfg(feature = "redis")]
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

#[cfg(feature = "redis")]
impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        read_until(&mut out, "redis-server", |line| {
            line.contains("Ready to accept connections")
        });
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(feature = "redis")]
impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `/readyz` follows the listeners: 200 while every channel is subscribed, 503 with the
/// channel `reconnecting` once its broker is gone (the body says which), 200 again once
/// the listener has resubscribed; `/healthz` stays 200 throughout.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_listener_that_loses_its_broker() {
    let mut redis = PrivateRedis::start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("listen.yaml");
    std::fs::write(
        &config,
        format!(
            "name: readiness\ncorrelate: {{ json: $.id }}\nrun: {{ json: $.run }}\n\
             api:\n  listen: 127.0.0.1:0\n  tokens: {{ read: [RT_READ] }}\n\
             channels:\n  bus: {{ redis_pubsub: {{ url: 'redis://127.0.0.1:{}', channel: events }} }}\n",
            redis.port
        ),
    )
    .expect("write the config");
    let service = Service::start(dir.path(), &config);
    let ready = |want: StatusCode| {
        let api = service.api.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let (status, body) = get(&format!("{api}/readyz"), None).await;
                if status == want {
                    return serde_json::from_str::<Value>(&body).expect("JSON");
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "/readyz stayed {status}, not {want}: {body}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let up = ready(StatusCode::OK).await;
    assert_eq!(up["ready"], true, "{up}");
    assert_eq!(up["channels"][0]["state"], "listening", "{up}");

    redis.kill();
    let down = ready(StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(down["ready"], false, "{down}");
    assert_eq!(down["store"]["ok"], true, "{down}");
    assert_eq!(down["channels"][0]["name"], "bus", "{down}");
    assert_eq!(down["channels"][0]["state"], "reconnecting", "{down}");
    let (health, _) = get(&format!("{}/healthz", service.api), None).await;
    assert_eq!(health, StatusCode::OK);

    redis.restart();
    let back = ready(StatusCode::OK).await;
    assert_eq!(back["channels"][0]["state"], "listening", "{back}");
    let (code, out, err) = service.stop();
    assert_eq!(code, Some(0), "{out}\n{err}");
}
