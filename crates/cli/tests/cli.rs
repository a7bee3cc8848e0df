//! The `roundtrip` binary end to end: the example suites against the real example
//! pipeline (started by the suites themselves), exit codes, reports, and the harness
//! errors a user meets (SUT that never starts, port in use, unwritable store).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn roundtrip(args: &[&str]) -> Output {
    roundtrip_with(args, &[])
}

/// [`roundtrip`] with extra environment variables (the example pipeline's faults).
fn roundtrip_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .expect("the roundtrip binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn last_line(o: &Output) -> String {
    stdout(o).lines().last().unwrap_or_default().to_owned()
}

fn explain(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn store(&self) -> String {
        format!("sqlite:{}", self.path("store.sqlite"))
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path
    }
}

/// A port that was free on 127.0.0.1 a moment ago, for a suite whose `http` channel posts
/// straight to its own `webhook` (a channel's options are rendered before listeners
/// start, so they cannot name `{{ channel.NAME.url }}`).
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    socket.local_addr().expect("an address").port()
}

fn json_report(path: &str) -> Value {
    let text = std::fs::read_to_string(path).expect("the JSON report exists");
    serde_json::from_str(&text).expect("the JSON report is JSON")
}

#[test]
fn the_example_suite_passes_and_reports() {
    let s = Scratch::new();
    let (json, junit) = (s.path("report.json"), s.path("junit.xml"));
    let store = s.store();
    let o = roundtrip(&[
        "run",
        "examples/pipeline/suite.yaml",
        "--store",
        &store,
        "--json",
        &json,
        "--junit",
        &junit,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert_eq!(last_line(&o), "3 passed, 0 failed", "{}", explain(&o));

    let report = json_report(&json);
    assert_eq!(report["format_version"], 1);
    assert_eq!(report["passed"], 3);
    let run = &report["runs"][0];
    let batch = run["scenarios"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["name"].as_str().is_some_and(|n| n.contains("batch")))
        })
        .expect("the batch scenario is in the report");
    assert_eq!(batch["status"], "passed");
    assert_eq!(batch["sent"], 100);
    let latency = &batch["expectations"][0]["latency"];
    assert_eq!(
        latency["count"], 100,
        "one latency sample per event: {latency}"
    );

    let xml = std::fs::read_to_string(&junit).expect("the JUnit report exists");
    assert_eq!(xml.matches("<testcase").count(), 3, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    assert!(
        xml.contains("listener processed (webhook, at-least-once): 101 recorded, 0 faults"),
        "the listeners are in the suite's system-out: {xml}"
    );

    // The run can be re-reported from the store alone, and listed.
    let again = roundtrip(&["report", "latest", "--store", &store]);
    assert_eq!(again.status.code(), Some(0), "{}", explain(&again));
    assert!(
        stdout(&again).contains("PASS  a batch of 100 concurrent events"),
        "{}",
        explain(&again)
    );
    assert_eq!(last_line(&again), "3 passed, 0 failed");
    let run_id = run["run_id"].as_str().expect("a run id");
    let runs = roundtrip(&["runs", "--store", &store]);
    assert!(stdout(&runs).contains(run_id), "{}", explain(&runs));
    assert!(stdout(&runs).contains("passed"), "{}", explain(&runs));

    // What one event caused, from the store: its sent event's correlation id.
    let correlation_id = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let store = roundtrip::store::open(&store)
                .await
                .expect("open the store");
            let sent = store.sent_events(run_id).await.expect("sent events");
            let first = sent
                .iter()
                .find(|e| e.scenario.starts_with("an event is processed"))
                .expect("the first scenario's event");
            first.correlation_id.clone()
        });
    let traced = roundtrip(&[
        "report",
        run_id,
        "--store",
        &store,
        "--correlation",
        &correlation_id,
    ]);
    assert_eq!(traced.status.code(), Some(0), "{}", explain(&traced));
    let out = stdout(&traced);
    let listing: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("observations of event"))
        .collect();
    assert_eq!(
        listing.first().copied(),
        Some(format!("observations of event {correlation_id}: 1").as_str()),
        "{out}"
    );
    assert!(listing[1].contains(" on processed: "), "{out}");
    assert!(listing[1].contains("\"WIDGET\""), "{out}");

    // A shortened id matches by prefix; one that is too short says so; none is said.
    let short = &correlation_id[..30];
    let o = roundtrip(&["report", run_id, "--store", &store, "--correlation", short]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(
        stdout(&o).contains(&format!("matched event {correlation_id} by prefix")),
        "{}",
        explain(&o)
    );
    assert!(
        stdout(&o).contains(&format!("observations of event {correlation_id}: 1")),
        "{}",
        explain(&o)
    );
    let o = roundtrip(&[
        "report",
        run_id,
        "--store",
        &store,
        "--correlation",
        &correlation_id[..4],
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(stderr(&o).contains("give more of it"), "{}", explain(&o));
    let o = roundtrip(&[
        "report",
        run_id,
        "--store",
        &store,
        "--correlation",
        "ffffffff",
    ]);
    assert!(stdout(&o).contains("no event of run"), "{}", explain(&o));
}

#[test]
fn the_directory_example_passes_with_polling_listeners() {
    let s = Scratch::new();
    let json = s.path("report.json");
    let store = s.store();
    let o = roundtrip(&[
        "run",
        "examples/pipeline/suite-dir.yaml",
        "--store",
        &store,
        "--json",
        &json,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert_eq!(last_line(&o), "2 passed, 0 failed", "{}", explain(&o));
    let report = json_report(&json);
    let listeners = report["runs"][0]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listeners.len(), 2, "{report:#}");
    assert!(
        listeners
            .iter()
            .all(|l| l["transport"] == "dir" && l["polling"] == true),
        "{report:#}"
    );
}

/// Runs a failing example suite and returns its JSON report's first failed expectation.
fn run_failing(name: &str) -> (Output, Value) {
    let s = Scratch::new();
    let json = s.path("report.json");
    let store = s.store();
    let suite = format!("examples/pipeline/failing/{name}.yaml");
    let o = roundtrip(&["run", &suite, "--store", &store, "--json", &json]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    assert_eq!(last_line(&o), "0 passed, 1 failed", "{}", explain(&o));
    let report = json_report(&json);
    let failure = report["runs"][0]["scenarios"][0]["expectations"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["outcome"]["status"] == "failed"))
        .cloned()
        .expect("a failed expectation in the report");
    (o, failure)
}

#[test]
fn an_exceeded_sla_is_reported_as_late_not_lost() {
    let (o, failure) = run_failing("sla-exceeded");
    assert_eq!(failure["outcome"]["kind"], "sla-exceeded", "{failure:#}");
    assert!(stdout(&o).contains("[sla-exceeded]"), "{}", explain(&o));
    let late = &failure["outcome"]["evidence"]["offending"][0];
    assert!(
        late["after_send_ns"]
            .as_u64()
            .is_some_and(|ns| ns >= 600_000_000),
        "{failure:#}"
    );
}

#[test]
fn a_dropped_message_is_reported_lost_with_the_channel_state() {
    let (o, failure) = run_failing("lost");
    assert_eq!(failure["outcome"]["kind"], "lost", "{failure:#}");
    assert_eq!(failure["outcome"]["evidence"]["channel_observations"], 0);
    assert!(stdout(&o).contains("[lost]"), "{}", explain(&o));
}

#[test]
fn a_duplicate_is_reported_with_both_arrivals() {
    let (o, failure) = run_failing("duplicate");
    assert_eq!(failure["outcome"]["kind"], "duplicate", "{failure:#}");
    let offending = failure["outcome"]["evidence"]["offending"]
        .as_array()
        .map(Vec::len);
    assert_eq!(offending, Some(2), "{failure:#}");
    assert!(stdout(&o).contains("[duplicate]"), "{}", explain(&o));
}

#[test]
fn an_arrival_during_an_absence_window_is_reported_with_what_arrived() {
    let (o, failure) = run_failing("unexpected-arrival");
    assert_eq!(
        failure["outcome"]["kind"], "unexpected-arrival",
        "{failure:#}"
    );
    let arrived = &failure["outcome"]["evidence"]["offending"][0]["excerpt"];
    assert!(
        arrived.as_str().is_some_and(|e| e.contains("misrouted")),
        "{failure:#}"
    );
    assert!(
        stdout(&o).contains("[unexpected-arrival]"),
        "{}",
        explain(&o)
    );
}

#[test]
fn check_accepts_the_examples_and_rejects_a_bad_file_with_exit_2() {
    let o = roundtrip(&["check", "examples/pipeline/suite.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));

    let s = Scratch::new();
    let bad = s.write(
        "bad.yaml",
        "name: bad\nchannels:\n  out: { webhook: { listen: \"127.0.0.1:1\" } }\nscenarios:\n  - name: x\n    send: []\n    expect:\n      - { on: out, withn: 2s }\n",
    );
    let o = roundtrip(&["check", &bad]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(stderr(&o).contains("bad.yaml:8:"), "{}", explain(&o));
    assert!(
        stderr(&o).contains("within"),
        "did-you-mean hint: {}",
        explain(&o)
    );

    // `run` refuses to run anything when a file is invalid, with the same exit code.
    let o = roundtrip(&[
        "run",
        "examples/pipeline/suite.yaml",
        &bad,
        "--store",
        &s.store(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert_eq!(last_line(&o), "0 passed, 0 failed");
}

const LISTEN_ONLY: &str = r#"
channels:
  out: { webhook: { listen: "127.0.0.1:PORT", path: /out } }
scenarios:
  - name: nothing to see
    send: []
    expect: [ { on: out, none_within: 10ms } ]
"#;

#[test]
fn a_sut_that_exits_early_is_a_harness_error() {
    let s = Scratch::new();
    let suite = s.write(
        "early.yaml",
        &format!(
            "name: early exit\nsut:\n  start: [sh, -c, \"echo starting; echo broken config >&2; exit 7\"]\n  ready: {{ tcp: \"127.0.0.1:9\", within: 30s }}\n{}",
            LISTEN_ONLY.replace("PORT", "0")
        ),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(stderr(&o).contains("exited"), "{}", explain(&o));
    assert!(
        stderr(&o).contains("broken config"),
        "the SUT's output is shown: {}",
        explain(&o)
    );
    assert_eq!(last_line(&o), "0 passed, 1 failed");
}

#[test]
fn a_relative_sut_program_resolves_against_the_suite_file_whatever_its_cwd() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("bin")).expect("mkdir bin");
    std::fs::create_dir_all(s.path("work")).expect("mkdir work");
    let script = s.write("bin/sut.sh", "#!/bin/sh\necho ready\nexec sleep 30\n");
    let mut perms = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    let suite = s.write(
        "relative.yaml",
        &format!(
            "name: relative\nsut:\n  start: [bin/sut.sh]\n  cwd: work\n  ready: {{ log: ready, within: 10s }}\n  stop_grace: 1s\n{}",
            LISTEN_ONLY.replace("PORT", "0")
        ),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert_eq!(last_line(&o), "1 passed, 0 failed");
}

#[test]
fn a_sut_that_never_becomes_ready_is_a_harness_error() {
    let s = Scratch::new();
    let suite = s.write(
        "never.yaml",
        &format!(
            "name: never ready\nsut:\n  start: [sleep, \"30\"]\n  ready: {{ log: \"ready\", within: 300ms }}\n{}",
            LISTEN_ONLY.replace("PORT", "0")
        ),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(
        stderr(&o).contains("not ready within 300ms"),
        "{}",
        explain(&o)
    );
    assert!(
        stderr(&o).contains("PYTHONUNBUFFERED"),
        "a silent SUT gets the buffering hint: {}",
        explain(&o)
    );
}

#[test]
fn a_port_in_use_is_a_harness_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("an address").port().to_string();
    let s = Scratch::new();
    let suite = s.write(
        "port.yaml",
        &format!("name: port in use\n{}", LISTEN_ONLY.replace("PORT", &port)),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(stderr(&o).contains("already in use"), "{}", explain(&o));
}

#[test]
fn an_unwritable_store_is_a_harness_error() {
    let s = Scratch::new();
    let file = s.write("not-a-dir", "x");
    let store = format!("sqlite:{file}/store.sqlite");
    let suite = s.write(
        "ok.yaml",
        &format!("name: store\n{}", LISTEN_ONLY.replace("PORT", "0")),
    );
    let o = roundtrip(&["run", &suite, "--store", &store]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(
        stderr(&o).contains("not-a-dir"),
        "names the path: {}",
        explain(&o)
    );
}

#[test]
fn an_expectation_whose_event_was_never_sent_is_not_sent_never_passed() {
    let s = Scratch::new();
    let suite = s.write(
        "unsent.yaml",
        r#"
name: unsent
channels:
  in: { http: { url: "http://127.0.0.1:1/events" } }
  out: { webhook: { listen: "127.0.0.1:0", path: /out } }
scenarios:
  - name: the send fails
    send: [ { to: in, body: { a: 1 }, repeat: 3 } ]
    expect:
      - { on: out, none_within: 10ms }
      - { on: out, within: 10ms }
"#,
    );
    let json = s.path("report.json");
    let o = roundtrip(&["run", &suite, "--store", &s.store(), "--json", &json]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let out = stdout(&o);
    assert!(!out.contains('✓'), "nothing passed: {}", explain(&o));
    assert!(out.contains("[not-sent]"), "{}", explain(&o));
    assert!(
        out.contains("not-sent on 3 of 3 events (#0, #1 and #2)"),
        "{}",
        explain(&o)
    );
    let report = json_report(&json);
    let scenario = &report["runs"][0]["scenarios"][0];
    assert_eq!(scenario["status"], "error", "{report:#}");
    for e in scenario["expectations"].as_array().expect("expectations") {
        assert_eq!(e["outcome"]["status"], "failed", "{report:#}");
        assert_eq!(e["outcome"]["kind"], "not-sent", "{report:#}");
        assert_eq!(e["outcome"]["events"][0]["count"], 3, "{report:#}");
    }
}

/// Everything a terminal shows that roundtrip did not write: no raw control character.
fn assert_no_control_characters(text: &str, o: &Output) {
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\n' || matches!(c, '\u{202a}'..='\u{202e}')),
        "a control character reached the terminal: {}",
        explain(o)
    );
}

#[test]
fn payloads_and_sut_output_reach_the_terminal_escaped() {
    let s = Scratch::new();
    let port = free_port();
    let suite = s.write(
        "escapes.yaml",
        &format!(
            r#"
name: escapes
channels:
  in: {{ http: {{ url: "http://127.0.0.1:{port}/out" }} }}
  out: {{ webhook: {{ listen: "127.0.0.1:{port}", path: /out }} }}
scenarios:
  - name: a hostile payload
    send: [ {{ to: in, text: "\e[2J\e[HPASS forged\r\e]0;title\a\e]52;c;aGk=\a\u202Eevil" }} ]
    expect: [ {{ on: out, match: {{ a: 1 }}, within: 100ms, grace: 0s }} ]
"#
        ),
    );
    let json = s.path("report.json");
    let o = roundtrip(&["run", &suite, "--store", &s.store(), "--json", &json]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let out = stdout(&o);
    assert_no_control_characters(&out, &o);
    assert!(
        out.contains(r"\x1b[2J\x1b[HPASS forged\r\x1b]0;title\x07"),
        "the payload is shown, escaped: {}",
        explain(&o)
    );
    assert!(out.contains(r"\u{202e}evil"), "{}", explain(&o));

    // The same observation through `report --correlation`.
    let report = json_report(&json);
    let id = report["runs"][0]["scenarios"][0]["expectations"][0]["outcome"]["evidence"]["last"][0]
        ["correlation_id"]
        .as_str()
        .expect("the observation is correlated")
        .to_owned();
    let o = roundtrip(&[
        "report",
        "latest",
        "--store",
        &s.store(),
        "--correlation",
        &id,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    assert_no_control_characters(&stdout(&o), &o);
    assert!(stdout(&o).contains(r"\x1b[2J"), "{}", explain(&o));

    // Names the user wrote, printed escaped too.
    let named = s.write(
        "names.yaml",
        "name: \"ctrl\\e[31m suite\\a\"\nchannels:\n  out: { webhook: { listen: \"127.0.0.1:0\", path: /out } }\nscenarios:\n  - name: \"scen\\e[32m\\r name\"\n    send: []\n    expect: [ { on: out, none_within: 1ms } ]\n",
    );
    for args in [
        vec!["run", named.as_str(), "--store", "sqlite::memory:"],
        vec!["run", named.as_str(), "--list"],
        vec!["check", named.as_str()],
    ] {
        let o = roundtrip(&args);
        assert_no_control_characters(&stdout(&o), &o);
        assert!(stdout(&o).contains(r"\x1b[3"), "{}", explain(&o));
    }

    // A SUT's output, shown when it fails to start.
    let suite = s.write(
        "sut.yaml",
        &format!(
            "name: sut output\nsut:\n  start: [sh, -c, \"printf '\\\\033[2Jforged PASS\\\\r\\\\n'; printf '\\\\377\\\\376 not utf-8\\\\n'; exit 1\"]\n  ready: {{ tcp: \"127.0.0.1:9\", within: 30s }}\n{}",
            LISTEN_ONLY.replace("PORT", "0")
        ),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert_no_control_characters(&stderr(&o), &o);
    assert!(
        stderr(&o).contains(r"\x1b[2Jforged PASS"),
        "{}",
        explain(&o)
    );
    assert!(
        stderr(&o).contains("not utf-8"),
        "output that is not UTF-8 is still read: {}",
        explain(&o)
    );
}

#[test]
fn secrets_in_urls_never_reach_output_reports_or_the_store() {
    let s = Scratch::new();
    let suite = s.write(
        "secret.yaml",
        r#"
name: secrets
channels:
  in: { http: { url: "http://someone:hunter2@127.0.0.1:1/events?token=SECRET-TOKEN&x=1" } }
  out: { webhook: { listen: "127.0.0.1:0", path: /out } }
scenarios:
  - name: the send fails
    send: [ { to: in, body: { a: 1 } } ]
    expect: [ { on: out, within: 10ms } ]
"#,
    );
    let (json, junit) = (s.path("r.json"), s.path("r.xml"));
    let o = roundtrip(&[
        "run",
        &suite,
        "--store",
        &s.store(),
        "--json",
        &json,
        "--junit",
        &junit,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    assert!(
        stdout(&o).contains("token=***"),
        "the URL is shown, masked: {}",
        explain(&o)
    );
    let mut store_bytes = std::fs::read(s.path("store.sqlite")).expect("the store");
    if let Ok(wal) = std::fs::read(s.path("store.sqlite-wal")) {
        store_bytes.extend(wal);
    }
    let store_text = String::from_utf8_lossy(&store_bytes);
    let junit_text = std::fs::read_to_string(&junit).expect("the JUnit report");
    let json_text = std::fs::read_to_string(&json).expect("the JSON report");
    let reported = roundtrip(&["report", "latest", "--store", &s.store()]);
    for (what, text) in [
        ("stdout", stdout(&o)),
        ("stderr", stderr(&o)),
        ("the JUnit report", junit_text),
        ("the JSON report", json_text),
        ("the store", store_text.into_owned()),
        ("roundtrip report", stdout(&reported)),
    ] {
        for secret in ["hunter2", "SECRET-TOKEN"] {
            assert!(!text.contains(secret), "{secret} in {what}: {text}");
        }
    }

    // A secret rendered from env() into a URL that `check` refuses.
    let bad = s.write(
        "bad-url.yaml",
        "name: bad url\nchannels:\n  in: { http: { url: 'http://u:{{ env(\"RT_PW\") }}@127.0.0.1:99999/x' } }\n  out: { webhook: { listen: \"127.0.0.1:0\", path: /out } }\nscenarios:\n  - name: s\n    send: [ { to: in } ]\n    expect: [ { on: out, within: 1s } ]\n",
    );
    let o = roundtrip(&["check", &bad, "--var", "RT_PW=SUPERSECRETPW"]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(stderr(&o).contains("u:***@"), "{}", explain(&o));
    assert!(!stderr(&o).contains("SUPERSECRETPW"), "{}", explain(&o));
}

#[test]
fn one_path_for_both_reports_is_refused_before_anything_runs() {
    let s = Scratch::new();
    let suite = s.write(
        "ok.yaml",
        &format!("name: paths\n{}", LISTEN_ONLY.replace("PORT", "0")),
    );
    let same = s.path("report.out");
    let other = s.path("other.out");
    for (flags, said) in [
        (
            ["--json", "--junit", "--html"],
            "--json and --junit both name",
        ),
        (
            ["--junit", "--html", "--json"],
            "--junit and --html both name",
        ),
        (
            ["--json", "--html", "--junit"],
            "--json and --html both name",
        ),
    ] {
        // The first two flags name one file, the third another.
        let o = roundtrip(&[
            "run",
            &suite,
            "--store",
            &s.store(),
            flags[0],
            &same,
            flags[1],
            &same,
            flags[2],
            &other,
        ]);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", explain(&o));
        assert!(stderr(&o).contains(said), "{flags:?}: {}", explain(&o));
        assert!(!Path::new(&s.path("store.sqlite")).exists(), "nothing ran");
    }
}

#[test]
fn a_foreign_database_is_refused_unchanged() {
    let s = Scratch::new();
    let path = s.path("theirs.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).expect("create a foreign database");
        conn.execute_batch("CREATE TABLE accounts (id INTEGER); PRAGMA user_version = 42;")
            .expect("their schema");
    }
    let before = std::fs::read(&path).expect("read");
    let suite = s.write(
        "ok.yaml",
        &format!("name: foreign\n{}", LISTEN_ONLY.replace("PORT", "0")),
    );
    for args in [
        vec!["run", suite.as_str(), "--store", path.as_str()],
        vec!["runs", "--store", path.as_str()],
    ] {
        let o = roundtrip(&args);
        assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
        assert!(
            stderr(&o).contains("not a roundtrip store"),
            "{}",
            explain(&o)
        );
        assert!(!stderr(&o).contains("upgrade"), "{}", explain(&o));
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the file is unchanged"
    );
    assert!(
        !Path::new(&format!("{path}-wal")).exists(),
        "not switched to WAL"
    );
}

#[test]
fn a_damaged_store_is_refused_before_anything_is_written() {
    let s = Scratch::new();
    let suite = s.write(
        "ok.yaml",
        &format!("name: damaged\n{}", LISTEN_ONLY.replace("PORT", "0")),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let path = s.path("store.sqlite");
    let mut bytes = std::fs::read(&path).expect("read the store");
    let page = 4096;
    assert!(bytes.len() >= 3 * page, "the store has several pages");
    // Damage the second page (the first table's root): its b-tree header.
    for b in &mut bytes[page..page + 64] {
        *b = 0x5a;
    }
    std::fs::write(&path, &bytes).expect("write the damage");
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(stderr(&o).contains("damaged"), "{}", explain(&o));
}

#[test]
fn reading_commands_do_not_create_a_store() {
    let s = Scratch::new();
    let missing = s.path("typo/store.sqlite");
    for args in [
        vec!["runs", "--store", missing.as_str()],
        vec!["report", "latest", "--store", missing.as_str()],
    ] {
        let o = roundtrip(&args);
        assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
        assert!(
            stderr(&o).contains("there is no store there"),
            "{}",
            explain(&o)
        );
    }
    assert!(!Path::new(&s.path("typo")).exists(), "nothing was created");
}

#[test]
fn sending_stops_after_ten_connection_failures_in_a_row() {
    let s = Scratch::new();
    let suite = s.write(
        "closed.yaml",
        r#"
name: closed port
channels:
  in: { http: { url: "http://127.0.0.1:1/events" } }
  out: { webhook: { listen: "127.0.0.1:0", path: /out } }
scenarios:
  - name: a million sends to a closed port
    send: [ { to: in, body: { a: 1 }, repeat: 1000000 } ]
    expect: [ { on: out, within: 10ms } ]
"#,
    );
    let json = s.path("report.json");
    let o = roundtrip(&["run", &suite, "--store", &s.store(), "--json", &json]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    assert!(
        stdout(&o).contains(
            "sending stopped after 10 connection failures in a row: 999990 more event(s) were not attempted"
        ),
        "{}",
        explain(&o)
    );
    let report = json_report(&json);
    assert_eq!(report["runs"][0]["scenarios"][0]["sent"], 10, "{report:#}");
}

const THREE: &str = r#"
name: three
channels:
  down: { http: { url: "http://127.0.0.1:1/events" } }
  out: { webhook: { listen: "127.0.0.1:0", path: /out } }
scenarios:
  - name: first fails
    send: [ { to: down, body: { a: 1 } } ]
    expect: [ { on: out, within: 10ms } ]
  - name: second would pass
    send: []
    expect: [ { on: out, none_within: 1ms } ]
  - name: third would pass
    send: []
    expect: [ { on: out, none_within: 1ms } ]
"#;

#[test]
fn list_and_filter_select_scenarios() {
    let s = Scratch::new();
    let suite = s.write("three.yaml", THREE);
    let o = roundtrip(&[
        "run",
        &suite,
        "--list",
        "--filter",
        "would",
        "--store",
        &s.store(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let out = stdout(&o);
    assert!(out.contains("(three): 2 scenario(s)"), "{}", explain(&o));
    assert!(
        out.contains("\n  second would pass\n  third would pass"),
        "{}",
        explain(&o)
    );
    assert!(!out.contains("first fails"), "{}", explain(&o));
    assert!(
        !Path::new(&s.path("store.sqlite")).exists(),
        "--list runs nothing"
    );

    let o = roundtrip(&[
        "run",
        &suite,
        "--filter",
        "th*pass",
        "--filter",
        "second",
        "--store",
        &s.store(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert_eq!(last_line(&o), "2 passed, 0 failed", "{}", explain(&o));

    let o = roundtrip(&[
        "run",
        &suite,
        "--filter",
        "nothing like it",
        "--store",
        &s.store(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("no scenario matches --filter `nothing like it`"),
        "{}",
        explain(&o)
    );
}

#[test]
fn fail_fast_skips_what_has_not_started() {
    let s = Scratch::new();
    let suite = s.write("three.yaml", THREE);
    let other = s.write(
        "other.yaml",
        &format!("name: other\n{}", LISTEN_ONLY.replace("PORT", "0")),
    );
    let junit = s.path("j.xml");
    let o = roundtrip(&[
        "run",
        &suite,
        &other,
        "--fail-fast",
        "--concurrency",
        "1",
        "--store",
        &s.store(),
        "--junit",
        &junit,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    assert_eq!(
        last_line(&o),
        "0 passed, 1 failed, 3 skipped",
        "{}",
        explain(&o)
    );
    assert!(
        stdout(&o).contains("SKIP  second would pass"),
        "{}",
        explain(&o)
    );
    let junit = std::fs::read_to_string(&junit).expect("the JUnit report");
    assert_eq!(junit.matches("<skipped").count(), 2, "{junit}");

    let o = roundtrip(&["run", &suite, "--concurrency", "1", "--store", &s.store()]);
    assert_eq!(
        last_line(&o),
        "2 passed, 1 failed",
        "without it all run: {}",
        explain(&o)
    );
}

#[test]
fn quiet_prints_only_failures_and_the_totals() {
    let s = Scratch::new();
    let suite = s.write("three.yaml", THREE);
    let o = roundtrip(&["run", &suite, "--quiet", "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let out = stdout(&o);
    assert!(out.contains("ERROR first fails"), "{}", explain(&o));
    assert!(!out.contains("PASS"), "{}", explain(&o));
    assert!(
        out.contains("  did not pass, in file order:\n    ERROR first fails\n"),
        "{}",
        explain(&o)
    );
    assert!(!out.contains("listening on"), "{}", explain(&o));
    assert_eq!(last_line(&o), "2 passed, 1 failed", "{}", explain(&o));
}

#[test]
fn completions_are_printed_for_a_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let o = roundtrip(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
        assert!(stdout(&o).contains("fail-fast"), "{shell}: {}", explain(&o));
    }
    let o = roundtrip(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
}

#[test]
fn variables_come_from_var_the_environment_and_env_files() {
    let s = Scratch::new();
    let suite = s.write(
        "env.yaml",
        "name: env\nchannels:\n  out: { webhook: { listen: '127.0.0.1:{{ env(\"RT_TEST_PORT\") }}', path: /out } }\nscenarios:\n  - name: s\n    send: []\n    expect: [ { on: out, none_within: 1ms } ]\n",
    );
    // Unset: `check` says where, with exit 2.
    let o = roundtrip(&["check", &suite]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("environment variable `RT_TEST_PORT` is not set"),
        "{}",
        explain(&o)
    );
    assert!(stderr(&o).contains("env.yaml:3:"), "{}", explain(&o));
    // From a file; the port is then checked as a port.
    let file = s.write("local.env", "# a laptop's values\nRT_TEST_PORT=0\n");
    let o = roundtrip(&["run", &suite, "--env-file", &file, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let bad = s.write("bad.env", "RT_TEST_PORT=notaport\n");
    let o = roundtrip(&["check", &suite, "--env-file", &bad]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(stderr(&o).contains("host:port"), "{}", explain(&o));
    // --var wins over the environment, which wins over the file.
    let o = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args([
            "check",
            &suite,
            "--env-file",
            &bad,
            "--var",
            "RT_TEST_PORT=0",
        ])
        .env("RT_TEST_PORT", "alsonotaport")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["check", &suite, "--env-file", &file])
        .env("RT_TEST_PORT", "alsonotaport")
        .output()
        .expect("runs");
    assert_eq!(
        o.status.code(),
        Some(2),
        "the environment overrides the file: {}",
        explain(&o)
    );
    // A broken file names its line.
    let broken = s.write("broken.env", "RT_TEST_PORT=0\nthis is not a pair\n");
    let o = roundtrip(&["check", &suite, "--env-file", &broken]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("broken.env:2: expected `NAME=VALUE`"),
        "{}",
        explain(&o)
    );
}

#[test]
fn a_sut_that_exits_during_the_run_is_shown_in_the_terminal() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("inbox")).expect("mkdir");
    let suite = s.write(
        "crash.yaml",
        "name: crash\nsut:\n  start: [sh, -c, \"echo ready; until ls inbox | grep -q .; do sleep 0.05; done; echo crashing now >&2; exit 4\"]\n  ready: { log: ready, within: 10s }\nchannels:\n  in: { dir: { path: inbox } }\n  out: { webhook: { listen: \"127.0.0.1:0\", path: /out } }\nscenarios:\n  - name: the event that kills it\n    send: [ { to: in, text: boom } ]\n    expect: [ { on: out, within: 300ms, grace: 0s } ]\n",
    );
    let junit = s.path("j.xml");
    let o = roundtrip(&["run", &suite, "--store", &s.store(), "--junit", &junit]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "the system under test exited during the run (exit status: 4); its last output:"
        ),
        "{}",
        explain(&o)
    );
    assert!(out.contains("stderr: crashing now"), "{}", explain(&o));
    let junit = std::fs::read_to_string(&junit).expect("the JUnit report");
    assert!(junit.contains("exited during the run"), "{junit}");
    let o = roundtrip(&["report", "latest", "--store", &s.store()]);
    assert!(
        stdout(&o).contains("exited during the run (exit status: 4)"),
        "{}",
        explain(&o)
    );
}

#[test]
fn what_did_not_pass_is_repeated_in_file_order() {
    let s = Scratch::new();
    let suite = s.write(
        "order.yaml",
        r#"
name: order
channels:
  down: { http: { url: "http://127.0.0.1:1/events" } }
  files: { dir: { path: inbox } }
  out: { webhook: { listen: "127.0.0.1:0", path: /out } }
scenarios:
  - name: slow to fail
    send: [ { to: files, text: x } ]
    expect: [ { on: out, within: 300ms, grace: 0s } ]
  - name: quick to fail
    send: [ { to: down, body: { a: 1 } } ]
    expect: [ { on: out, within: 10ms } ]
"#,
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let out = stdout(&o);
    let live_quick = out.find("ERROR quick to fail").expect("live line");
    let live_slow = out.find("FAIL  slow to fail").expect("live line");
    assert!(
        live_quick < live_slow,
        "live lines come as scenarios finish: {out}"
    );
    assert!(
        out.contains(
            "  did not pass, in file order:\n    FAIL  slow to fail\n    ERROR quick to fail\n"
        ),
        "{out}"
    );
}

#[test]
fn text_headers_and_metadata_are_matched_and_their_misses_shown() {
    let s = Scratch::new();
    let port = free_port();
    let suite = s.write(
        "text.yaml",
        &format!(
            r#"
name: text
channels:
  in: {{ http: {{ url: "http://127.0.0.1:{port}/out?token=s3cret", headers: {{ content-type: text/plain }} }} }}
  out: {{ webhook: {{ listen: "127.0.0.1:{port}", path: /out }} }}
scenarios:
  - name: plain text with its headers and metadata
    send: [ {{ to: in, text: "this message was created during an integration test" }} ]
    expect:
      - on: out
        text: {{ contains: "integration test", not_contains: "error" }}
        headers: {{ Content-Type: text/plain, x-missing: {{ absent: true }} }}
        meta: {{ method: POST, path: /out, query: "?token=***" }}
        within: 2s
  - name: the uppercase it is not
    send: [ {{ to: in, text: "this message was created during an integration test" }} ]
    expect:
      - on: out
        text: {{ equals: "THIS MESSAGE WAS CREATED DURING AN INTEGRATION TEST" }}
        within: 200ms
        grace: 0s
"#
        ),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let out = stdout(&o);
    assert!(
        out.contains("PASS  plain text with its headers and metadata"),
        "{}",
        explain(&o)
    );
    assert!(
        out.contains(r#"text: expected == "THIS MESSAGE WAS CREATED DURING AN INTEGRATION TEST", got "this message was created during an integration test""#),
        "the near-miss shows the text: {}",
        explain(&o)
    );
    assert!(!out.contains("expected a JSON payload"), "{}", explain(&o));
}

/// The fenced blocks of one language in a Markdown text, in order.
fn fenced(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == format!("```{lang}") => current = Some(String::new()),
            Some(block) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The README's tutorial, as written: the typo it shows is reported where it says, and
/// the finished file passes against the example pipeline, on the ports it is given.
#[test]
fn the_readme_tutorial_runs_as_written() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let yaml = fenced(&readme, "yaml");
    let channels = yaml
        .iter()
        .find(|b| b.starts_with("# orders.yaml\n"))
        .expect("step 1: the channels");
    let step2 = yaml
        .iter()
        .find(|b| b.starts_with("scenarios:\n"))
        .expect("step 2: the first scenario");
    let finished = yaml
        .iter()
        .find(|b| b.starts_with("# orders.yaml, finished"))
        .expect("the finished file");

    // Step 3's typo, in the file of steps 1 and 2.
    let s = Scratch::new();
    let typo = format!("{channels}{step2}").replacen("within:", "withn:", 1);
    let path = s.write("orders.yaml", &typo);
    let o = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["check", "orders.yaml"])
        .current_dir(s.dir.path())
        .output()
        .expect("check runs");
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    let shown = readme
        .split("A typo gets a precise answer")
        .nth(1)
        .and_then(|rest| rest.split("```\n").nth(1))
        .expect("the README shows the diagnostic");
    assert_eq!(
        stderr(&o),
        shown,
        "the README's diagnostic is the real one ({path})"
    );

    // The finished file, as written: it fixes no port.
    assert!(
        !finished.contains(":700"),
        "the finished file needs no fixed port"
    );
    // Inside the workspace, as a reader's file is: `cargo run` in `sut.start` runs in
    // the suite's directory and must find the workspace.
    let dir = workspace()
        .join("target")
        .join(format!("readme-tutorial-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory in target/");
    let suite = dir.join("orders.yaml");
    std::fs::write(&suite, finished).expect("write the finished file");
    let o = roundtrip(&["run", &suite.display().to_string(), "--store", &s.store()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert_eq!(last_line(&o), "3 passed, 0 failed", "{}", explain(&o));
}

/// An input that takes 700 ms to answer each request (a SUT slow to accept).
fn slow_http_input() -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            // The slowness under test: not a synchronisation.
            std::thread::sleep(std::time::Duration::from_millis(700));
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    port
}

#[test]
fn sends_the_input_was_slow_to_accept_are_noted_in_the_evidence() {
    let port = slow_http_input();
    let s = Scratch::new();
    let suite = s.write(
        "slow.yaml",
        &format!(
            "name: slow input\nchannels:\n  in: {{ http: {{ url: \"http://127.0.0.1:{port}/e\" }} }}\n  out: {{ webhook: {{ listen: \"127.0.0.1:0\", path: /out }} }}\nscenarios:\n  - name: nothing comes back\n    send: [ {{ to: in, body: {{ a: 1 }} }} ]\n    expect: [ {{ on: out, within: 300ms, grace: 0s }} ]\n"
        ),
    );
    let json = s.path("r.json");
    let o = roundtrip(&["run", &suite, "--store", &s.store(), "--json", &json]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    assert!(
        stdout(&o)
            .contains("note: 1 of 1 send(s) took 500ms or more to be accepted (the slowest 7"),
        "{}",
        explain(&o)
    );
    let report = json_report(&json);
    assert!(
        report["runs"][0]["scenarios"][0]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("spends the SLA")),
        "{report:#}"
    );
}

#[test]
fn report_of_an_unknown_run_is_a_usage_error() {
    let s = Scratch::new();
    let suite = s.write(
        "ok.yaml",
        &format!("name: one run\n{}", LISTEN_ONLY.replace("PORT", "0")),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let o = roundtrip(&["report", "0190-no-such-run", "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(stderr(&o).contains("roundtrip runs"), "{}", explain(&o));
}

/// Starts `roundtrip run SUITE` and reads its output until `ready` says so; returns the
/// process, the rest of its output, and the lines read.
fn run_until(
    suite: &str,
    store: &str,
    ready: impl Fn(&[String]) -> bool,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    Vec<String>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["run", suite, "--store", store])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("roundtrip starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        seen.push(line.expect("a line"));
        if ready(&seen) {
            break;
        }
    }
    (child, lines, seen)
}

#[test]
fn ctrl_c_stops_the_run_cleanly_and_the_store_keeps_it() {
    let s = Scratch::new();
    let suite = s.write(
        "long.yaml",
        "name: long\nchannels:\n  in: { dir: { path: inbox } }\n  out: { webhook: { listen: \"127.0.0.1:0\", path: /out } }\nscenarios:\n  - name: waits a minute\n    send: [ { to: in, text: hello } ]\n    expect: [ { on: out, none_within: 60s } ]\n",
    );
    let store = s.store();
    // Wait until the listener is up: the run is under way.
    let (mut child, lines, mut seen) = run_until(&suite, &store, |seen| {
        seen.iter().any(|l| l.contains("listening on out"))
    });
    let pid = child.id().to_string();
    let kill = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("roundtrip exits");
    let out = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("interrupted"), "{out}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("0 passed, 1 failed"),
        "{out}"
    );

    let runs = roundtrip(&["runs", "--store", &store]);
    assert!(stdout(&runs).contains("interrupted"), "{}", explain(&runs));
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn read_pid(path: &str) -> String {
    std::fs::read_to_string(path)
        .expect("the SUT wrote its pid")
        .trim()
        .to_owned()
}

#[test]
fn a_sut_started_through_a_wrapper_stops_with_the_run() {
    let s = Scratch::new();
    let pid_file = s.path("grandchild.pid");
    let suite = s.write(
        "wrapper.yaml",
        &format!(
            "name: wrapper\nsut:\n  start: [sh, -c, \"sleep 300 & echo $! > {pid_file}; echo ready; wait\"]\n  ready: {{ log: ready, within: 10s }}\n  stop_grace: 5s\n{}",
            LISTEN_ONLY.replace("PORT", "0")
        ),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let pid = read_pid(&pid_file);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the wrapper's child {pid} was stopped and reaped with the run"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_killed_roundtrip_takes_its_sut_down() {
    let s = Scratch::new();
    let pid_file = s.path("sut.pid");
    let suite = s.write(
        "orphan.yaml",
        &format!(
            "name: orphan\nsut:\n  start: [sh, -c, \"echo $$ > {pid_file}; echo ready; exec sleep 300\"]\n  ready: {{ log: ready, within: 10s }}\nchannels:\n  out: {{ webhook: {{ listen: \"127.0.0.1:0\", path: /out }} }}\nscenarios:\n  - name: waits\n    send: []\n    expect: [ {{ on: out, none_within: 60s }} ]\n"
        ),
    );
    let (mut child, _lines, _) = run_until(&suite, &s.store(), |seen| {
        seen.iter().any(|l| l.contains("system under test ready"))
    });
    let pid = read_pid(&pid_file);
    assert!(
        !process_gone(&pid),
        "the SUT {pid} runs: {:?}",
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
    );
    child.kill().expect("SIGKILL roundtrip");
    child.wait().expect("reaped");
    // The kernel delivers the parent-death signal when roundtrip dies; the SUT's exit is
    // not an event this test can wait on, so it checks until a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !process_gone(&pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        process_gone(&pid),
        "the SUT {pid} outlived a SIGKILLed roundtrip"
    );
}

#[test]
fn a_second_ctrl_c_hurries_the_stop_and_the_run_is_still_recorded() {
    use std::io::{BufRead, BufReader};
    let s = Scratch::new();
    let suite = s.write(
        "stubborn.yaml",
        "name: stubborn\nsut:\n  start: [sh, -c, \"trap '' TERM; echo ready; while :; do sleep 1; done\"]\n  ready: { log: ready, within: 10s }\n  stop_grace: 10m\nchannels:\n  in: { dir: { path: inbox } }\n  out: { webhook: { listen: \"127.0.0.1:0\", path: /out } }\nscenarios:\n  - name: waits\n    send: [ { to: in, text: hello } ]\n    expect: [ { on: out, none_within: 60s } ]\n",
    );
    let store = s.store();
    let (mut child, lines, mut seen) = run_until(&suite, &store, |seen| {
        seen.iter().any(|l| l.contains("system under test ready"))
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let pid = child.id().to_string();
    let interrupt = || {
        let kill = Command::new("kill").args(["-INT", &pid]).status();
        assert!(kill.expect("kill runs").success());
    };
    let wait_for = |text: &str| loop {
        let line = rx.recv().expect("roundtrip says what it does");
        if line.contains(text) {
            break;
        }
    };
    interrupt();
    wait_for("interrupted by Ctrl-C");
    interrupt();
    wait_for("stopping faster");
    // The SUT ignores SIGTERM and has a 10-minute stop grace: only the hurried stop
    // ends the run. A guard, so that a regression fails instead of hanging CI.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("roundtrip is waitable") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second Ctrl-C did not hurry the stop");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    seen.extend(lines.map_while(Result::ok));
    let out = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{out}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("0 passed, 1 failed"),
        "{out}"
    );
    let runs = roundtrip(&["runs", "--store", &store]);
    assert!(stdout(&runs).contains("interrupted"), "{}", explain(&runs));
}

#[test]
fn a_killed_run_is_reported_from_what_the_store_holds() {
    let s = Scratch::new();
    let suite = s.write(
        "killed.yaml",
        "name: killed\nchannels:\n  in: { dir: { path: inbox } }\n  out: { webhook: { listen: \"127.0.0.1:0\", path: /out } }\nscenarios:\n  - name: quick\n    send: []\n    expect: [ { on: out, none_within: 1ms } ]\n  - name: waits a minute\n    send: [ { to: in, text: hello } ]\n    expect: [ { on: out, none_within: 60s } ]\n",
    );
    let store = s.store();
    let (mut child, _lines, _) = run_until(&suite, &store, |seen| {
        seen.iter().any(|l| l.starts_with("PASS  quick"))
    });
    let runs = roundtrip(&["runs", "--store", &store]);
    assert!(
        stdout(&runs).contains(" running "),
        "alive while it runs: {}",
        explain(&runs)
    );
    child.kill().expect("SIGKILL roundtrip");
    child.wait().expect("reaped");
    let runs = roundtrip(&["runs", "--store", &store]);
    assert!(
        stdout(&runs).contains(" dead "),
        "dead once killed: {}",
        explain(&runs)
    );
    assert!(
        stdout(&runs).contains("1 run(s) marked dead"),
        "{}",
        explain(&runs)
    );
    let o = roundtrip(&["report", "latest", "--store", &store]);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    assert!(stderr(&o).contains("has not finished"), "{}", explain(&o));
    let out = stdout(&o);
    assert!(
        out.contains("PASS  quick"),
        "the recorded result: {}",
        explain(&o)
    );
    assert!(
        out.contains("harness error: the run did not finish (status `running`)"),
        "{}",
        explain(&o)
    );
}

/// A broker suite on a build without that transport is a usage error naming the feature.
#[cfg(not(feature = "kafka"))]
#[test]
fn a_compiled_out_transport_is_a_usage_error_naming_the_feature() {
    let s = Scratch::new();
    let suite = s.write(
        "kafka.yaml",
        "name: kafka\nchannels:\n  audit: { kafka: { topic: audit } }\nscenarios:\n  - name: s\n    send: []\n    expect: [ { on: audit, none_within: 10ms } ]\n",
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("needs the cargo feature `kafka`"),
        "{}",
        explain(&o)
    );
    // Nothing ran, and the totals do not pretend otherwise.
    assert!(
        stderr(&o).contains("nothing was run from"),
        "{}",
        explain(&o)
    );
    assert_eq!(last_line(&o), "0 passed, 0 failed", "{}", explain(&o));
}

#[cfg(not(feature = "aws"))]
#[test]
fn aws_cleanup_in_a_build_without_aws_names_the_feature() {
    let o = roundtrip(&["aws-cleanup", "--older-than", "1h"]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("needs the cargo feature `aws`"),
        "{}",
        explain(&o)
    );
}

/// Runs a suite that names an unreachable endpoint: exit 3 before anything is sent, with
/// an error naming `endpoint` and ending in `hint`.
#[cfg(any(feature = "nats", feature = "aws"))]
fn assert_unreachable(channels: &str, endpoint: &str, hint: &str) {
    let s = Scratch::new();
    let suite = s.write(
        "unreachable.yaml",
        &format!(
            "name: unreachable\nchannels:\n{channels}\nscenarios:\n  - name: s\n    send: [ {{ to: in, body: {{ a: 1 }} }} ]\n    expect: [ {{ on: out, none_within: 10ms }} ]\n"
        ),
    );
    let o = roundtrip(&["run", &suite, "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(
        stderr(&o).contains(endpoint) && stderr(&o).contains(hint),
        "{}",
        explain(&o)
    );
}

/// An unreachable broker ends the run before anything is sent: exit 3, naming the
/// endpoint and how to start the local servers.
#[cfg(feature = "nats")]
#[test]
fn an_unreachable_broker_is_a_harness_error() {
    assert_unreachable(
        "  in: { dir: { path: inbox } }\n  out: { nats: { url: \"nats://127.0.0.1:1\", subject: s, connect_timeout: 2s } }",
        "NATS at nats://127.0.0.1:1",
        "is the server running and reachable from here?",
    );
}

/// An unreachable AWS endpoint ends the run before anything is sent: exit 3, naming the
/// endpoint.
#[cfg(feature = "aws")]
#[test]
fn an_unreachable_aws_endpoint_is_a_harness_error() {
    assert_unreachable(
        "  in: { sqs: { queue: q, region: us-east-1, endpoint: \"http://127.0.0.1:1\" } }\n  out: { dir: { path: out } }",
        "SQS at http://127.0.0.1:1",
        "is the endpoint running and reachable from here?",
    );
}

/// The AWS emulator the tests use (`scripts/services.sh start`).
#[cfg(feature = "aws")]
fn aws_endpoint() -> String {
    std::env::var("ROUNDTRIP_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".to_owned())
}

/// `aws-cleanup` on an endpoint with nothing left over says so and exits 0; an
/// unreachable endpoint is a harness error.
#[cfg(feature = "aws")]
#[test]
fn aws_cleanup_reports_what_it_found() {
    let endpoint = aws_endpoint();
    let o = roundtrip(&[
        "aws-cleanup",
        "--endpoint",
        &endpoint,
        "--region",
        "us-east-1",
        "--run",
        "no-such-run",
        "--older-than",
        "0s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert_eq!(
        last_line(&o),
        "no harness-owned AWS resources older than 0s"
    );
    let o = roundtrip(&[
        "aws-cleanup",
        "--endpoint",
        "http://127.0.0.1:1",
        "--region",
        "us-east-1",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(
        stderr(&o).contains("failed to sweep AWS resources"),
        "{}",
        explain(&o)
    );
}

/// A DynamoDB store URL that names no valid table is refused before anything runs.
#[cfg(feature = "dynamodb")]
#[test]
fn a_bad_dynamodb_store_url_is_refused_clearly() {
    // A wrong store URL is the user's to fix: a usage error, as for every backend.
    let o = roundtrip(&["runs", "--store", "dynamodb://a?ttl=forever"]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("open the store at dynamodb://a?ttl=forever")
            && stderr(&o).contains("is not a DynamoDB table name"),
        "{}",
        explain(&o)
    );
}

/// A run stopped by SIGTERM (a cancelled CI job) removes the queue, subscription and rule
/// its AWS listeners created.
#[cfg(feature = "aws")]
#[test]
fn a_terminated_run_removes_its_aws_resources() {
    let endpoint = aws_endpoint();
    let s = Scratch::new();
    let aws = format!("region: us-east-1, endpoint: \"{endpoint}\"");
    let suite = s.write(
        "aws.yaml",
        &format!(
            "name: aws\ncorrelate: {{ json: $.id }}\nchannels:\n  in: {{ dir: {{ path: inbox }} }}\n  topic: {{ sns: {{ topic: cli-interrupt, create: true, {aws} }} }}\n  bus: {{ eventbridge: {{ source: cli.interrupt, {aws} }} }}\nscenarios:\n  - name: waits a minute\n    send: [ {{ to: in, body: {{ a: 1 }} }} ]\n    expect:\n      - {{ on: topic, none_within: 60s }}\n      - {{ on: bus, none_within: 60s }}\n"
        ),
    );
    let (mut child, lines, mut seen) = run_until(&suite, &s.store(), |seen| {
        ["listening on topic", "listening on bus"]
            .iter()
            .all(|what| seen.iter().any(|l| l.contains(what)))
    });
    let run_id = seen
        .iter()
        .find_map(|l| l.split("· run ").nth(1)?.split_whitespace().next())
        .expect("the run id is printed")
        .to_owned();
    let leftovers = || {
        roundtrip(&[
            "aws-cleanup",
            "--endpoint",
            &endpoint,
            "--region",
            "us-east-1",
            "--run",
            &run_id,
            "--older-than",
            "0s",
            "--dry-run",
        ])
    };
    let during = leftovers();
    assert_eq!(
        stdout(&during).lines().count(),
        4,
        "a queue each, a rule and a subscription while the run is on: {}",
        explain(&during)
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("roundtrip exits");
    assert_eq!(status.code(), Some(1), "{}", seen.join("\n"));
    let after = leftovers();
    assert_eq!(
        last_line(&after),
        "no harness-owned AWS resources older than 0s",
        "{}",
        explain(&after)
    );
}

#[test]
fn store_upkeep_commands_say_what_they_did_and_refuse_what_they_cannot_do() {
    let s = Scratch::new();
    let o = roundtrip(&["migrate", "--store", &s.store()]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(stdout(&o).contains("up to date"), "{}", explain(&o));
    let o = roundtrip(&["gc", "--store", &s.store(), "--older-than", "7d"]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("an SQLite store is a file"),
        "{}",
        explain(&o)
    );
    let o = roundtrip(&["gc", "--store", &s.store(), "--older-than", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    // A store URL that is wrong is a usage error, and its password is never shown, even
    // when it breaks the URL.
    for url in [
        "postgres://rt:hun?ter2@127.0.0.1:5432/test",
        "postgres://rt:hun/ter2@127.0.0.1:5432/test",
        "nosuch://rt:hunter2@host/x",
    ] {
        for command in [
            &["runs", "--store", url][..],
            &["migrate", "--store", url][..],
        ] {
            let o = roundtrip(command);
            assert_eq!(o.status.code(), Some(2), "{command:?}: {}", explain(&o));
            let all = format!("{}{}", stdout(&o), stderr(&o));
            assert!(
                !all.contains("ter2"),
                "{command:?} leaked the password: {all}"
            );
        }
    }
}

/// The Postgres store end to end through the CLI: a run recorded into it, listed,
/// reported, and deleted by `gc`; `migrate` as a step of its own.
#[cfg(feature = "postgres")]
#[test]
fn a_postgres_store_records_reports_and_forgets_runs() {
    let base = std::env::var("ROUNDTRIP_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("cli_{}", std::process::id());
    let store = format!("{base}?schema={schema}");
    // A reading command does not create a store where there is none.
    let o = roundtrip(&["runs", "--store", &store]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("there is no store there"),
        "{}",
        explain(&o)
    );
    let o = roundtrip(&["migrate", "--store", &format!("{store}&migrate=false")]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(
        stdout(&o).contains("migrated from schema version 0 to"),
        "{}",
        explain(&o)
    );
    let s = Scratch::new();
    let suite = s.write(
        "pg.yaml",
        &format!("name: pg\n{}", LISTEN_ONLY.replace("PORT", "0")),
    );
    let o = roundtrip(&["run", &suite, "--store", &format!("{store}&migrate=false")]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let o = roundtrip(&["runs", "--store", &store]);
    assert!(stdout(&o).contains("pg"), "{}", explain(&o));
    let o = roundtrip(&["report", "latest", "--store", &store]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(stdout(&o).contains("nothing to see"), "{}", explain(&o));
    let empty = format!("{base}?schema={schema}_none");
    let o = roundtrip(&["gc", "--store", &empty, "--older-than", "1d"]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("there is no store there"),
        "{}",
        explain(&o)
    );
    let o = roundtrip(&["gc", "--store", &store, "--older-than", "0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(stdout(&o).contains("deleted 1 run(s)"), "{}", explain(&o));
    let o = roundtrip(&["runs", "--store", &store]);
    assert!(stdout(&o).contains("no runs in"), "{}", explain(&o));
    let _ = std::process::Command::new("psql")
        .args([
            &base,
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
}

/// `roundtrip load` of the example pipeline's load suite, with the pipeline's faults
/// set from the environment.
fn load_run(
    scratch: &Scratch,
    scenario: &str,
    faults: &[(&str, &str)],
    rate: &str,
) -> (Output, Value) {
    let report = scratch.path("load.json");
    let o = roundtrip_with(
        &[
            "load",
            "examples/pipeline/suite-load.yaml",
            "--scenario",
            scenario,
            "--rate",
            rate,
            "--for",
            "2s",
            "--interval",
            "500ms",
            "--store",
            &scratch.store(),
            "--json",
            &report,
        ],
        faults,
    );
    let json = json_report(&report);
    (o, json["runs"][0].clone())
}

/// `processed 847, dead letters 0, dropped 53, …` from the pipeline's last words.
fn pipeline_tally(run: &Value) -> std::collections::BTreeMap<String, u64> {
    let line = run["sut_log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|l| {
            l.split_once("pipeline: faults: ")
                .map(|(_, rest)| rest.to_owned())
        })
        .expect("the pipeline printed what it did");
    // `dead letters 0`, `reordered 208 (by `stream`)`: the words before the number.
    line.split(", ")
        .filter_map(|part| {
            let words: Vec<&str> = part.split(' ').collect();
            let at = words.iter().position(|w| w.parse::<u64>().is_ok())?;
            Some((words[..at].join(" "), words[at].parse().ok()?))
        })
        .collect()
}

#[test]
fn a_load_run_accounts_exactly_for_the_faults_the_pipeline_injected() {
    let scratch = Scratch::new();
    let faults = [
        ("PIPELINE_DROP", "0.05"),
        ("PIPELINE_DUP", "0.05"),
        ("PIPELINE_REORDER", "8"),
        ("PIPELINE_SEED", "11"),
    ];
    let (o, run) = load_run(&scratch, "faults", &faults, "250/s");
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    let tally = pipeline_tally(&run);
    let flow = &run["load"]["flows"][0];
    let counts = &flow["counts"];
    let n = |v: &Value| v.as_u64().expect("a count");
    assert!(
        tally["dropped"] > 0 && tally["duplicated"] > 0 && tally["reordered"] > 0,
        "{tally:?}"
    );
    assert_eq!(n(&flow["lost"]), tally["dropped"], "{tally:?} {counts}");
    assert_eq!(
        n(&counts["delivered"]),
        tally["processed"],
        "{tally:?} {counts}"
    );
    assert_eq!(
        n(&counts["duplicates"]),
        tally["duplicated"],
        "{tally:?} {counts}"
    );
    assert_eq!(
        n(&counts["reordered"]),
        tally["reordered"],
        "{tally:?} {counts}"
    );
    assert_eq!(n(&run["load"]["send"]["counts"]["attempted"]), 500);
    assert_eq!(
        n(&counts["foreign"]) + n(&counts["not_sent"]) + n(&counts["unknown"]),
        0
    );
    // The live view printed a line per interval, and the account and SLAs at the end.
    let out = stdout(&o);
    assert!(
        out.lines()
            .filter(|l| l.contains(" sent ") && l.contains(" received "))
            .count()
            >= 3,
        "{out}"
    );
    assert!(out.contains("PASS lost on `processed`"), "{out}");
    assert_eq!(last_line(&o), "1 passed, 0 failed");
    // The store holds the account: `report` renders it again.
    let again = roundtrip(&["report", "latest", "--store", &scratch.store()]);
    assert_eq!(again.status.code(), Some(0), "{}", explain(&again));
    assert!(
        stdout(&again).contains("load `faults`: 250/s for 2s, 4 stream(s)"),
        "{}",
        explain(&again)
    );
}

#[test]
fn a_load_run_that_misses_its_slas_exits_1_and_names_them() {
    let scratch = Scratch::new();
    let (o, run) = load_run(&scratch, "steady", &[("PIPELINE_DUP", "0.2")], "100/s");
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let out = stdout(&o);
    assert!(out.contains("FAIL duplicates on `processed`"), "{out}");
    assert!(
        out.contains("PASS lost on `processed`: 0 (0%), at most 0 (default)"),
        "{out}"
    );
    assert_eq!(run["scenarios"][0]["status"], "failed");
    assert_eq!(last_line(&o), "0 passed, 1 failed");
}

#[test]
fn load_usage_errors_exit_2_and_say_what_to_write() {
    let suite = "examples/pipeline/suite-load.yaml";
    let cases: [(&[&str], &str); 9] = [
        (
            &[
                "--scenario",
                "steady",
                "--rate",
                "10/s",
                "--for",
                "1s",
                "--drain",
                "600y",
            ],
            "--drain is longer than 30days",
        ),
        (
            &[
                "--scenario",
                "steady",
                "--rate",
                "10/s",
                "--for",
                "1s",
                "--interval",
                "0s",
            ],
            "--interval is shorter than 100ms",
        ),
        (
            &["--scenario", "nope", "--rate", "10/s", "--for", "1s"],
            "the suite has no scenario `nope`; its scenarios are `steady`, `faults`",
        ),
        (
            &["--scenario", "steady", "--rate", "fast", "--for", "1s"],
            "`fast` is not a rate; write it like `500/s`",
        ),
        (
            &["--scenario", "steady", "--stages", "10/s"],
            "is not `RATE for DURATION`",
        ),
        (
            &["--scenario", "steady", "--rate", "1/s", "--for", "1s"],
            "fewer than its 4 streams",
        ),
        (
            &[
                "--scenario",
                "steady",
                "--rate",
                "10/s",
                "--for",
                "1s",
                "--workers",
                "2",
                "--worker-index",
                "0",
                "--run-id",
                "r1",
            ],
            "is not one every worker reaches: give --store postgres://",
        ),
        (
            &[
                "--scenario",
                "steady",
                "--rate",
                "10/s",
                "--for",
                "1s",
                "--workers",
                "2",
            ],
            "--worker-index <I>",
        ),
        (
            &[
                "--scenario",
                "steady",
                "--rate",
                "10/s",
                "--for",
                "1s",
                "--workers",
                "0",
                "--worker-index",
                "0",
                "--run-id",
                "r1",
            ],
            "0 is not in 1..=65535",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["load", suite, "--store", "sqlite::memory:"];
        all.extend_from_slice(args);
        let o = roundtrip(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", explain(&o));
        assert!(stderr(&o).contains(expected), "{args:?}: {}", explain(&o));
    }
    let two_steps = Scratch::new();
    let path = two_steps.write(
        "two.yaml",
        "name: two\nchannels:\n  in: { http: { url: \"http://127.0.0.1:9/x\" } }\n  out: { webhook: { listen: \"127.0.0.1:0\" } }\nscenarios:\n  - name: s\n    send: [{ to: in }, { to: in }]\n    expect: [{ on: out, within: 1s }]\n  - name: many\n    send: [{ to: in }]\n    expect: [{ on: out, within: 1s, at_least: 3 }]\n",
    );
    for (scenario, expected) in [
        ("s", "has 2 send steps"),
        ("many", "asks for 3 outputs per event"),
    ] {
        let o = roundtrip(&[
            "load",
            &path,
            "--scenario",
            scenario,
            "--rate",
            "1/s",
            "--for",
            "1s",
            "--store",
            "sqlite::memory:",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
        assert!(stderr(&o).contains(expected), "{}", explain(&o));
    }
}

/// `roundtrip load --workers 3`: three processes, each with its own pipeline and its
/// own faults, share one run through the Postgres store; each accounts exactly for its
/// own events, and the run's account is their sum, series included.
#[cfg(feature = "postgres")]
#[test]
fn a_load_run_shared_by_three_workers_merges_their_accounts_exactly() {
    let base = std::env::var("ROUNDTRIP_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("cli_workers_{}", std::process::id());
    let store = format!("{base}?schema={schema}");
    let scratch = Scratch::new();
    let run_id = format!("shared-{}", std::process::id());
    let worker = |index: u16, extra: &[&str]| {
        let json = scratch.path(&format!("worker{index}.json"));
        let mut args: Vec<String> = [
            "load",
            "examples/pipeline/suite-load.yaml",
            "--scenario",
            "faults",
            "--rate",
            "100/s",
            "--for",
            "2s",
            "--interval",
            "500ms",
            "--store",
            &store,
            "--workers",
            "3",
            "--worker-index",
            &index.to_string(),
            "--run-id",
            &run_id,
            "--json",
            &json,
            "--join-timeout",
            "60s",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let seed = (11 + index).to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
            .args(&args)
            .envs([
                ("PIPELINE_DROP", "0.05"),
                ("PIPELINE_DUP", "0.05"),
                ("PIPELINE_REORDER", "8"),
                ("PIPELINE_SEED", seed.as_str()),
            ])
            .current_dir(workspace())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("a worker starts");
        (child, json)
    };
    let workers: Vec<_> = (0..3).map(|i| worker(i, &[])).collect();
    let mut tallies = Vec::new();
    let mut merged_by = 0;
    let outputs: Vec<(Output, String)> = workers
        .into_iter()
        .map(|(child, json)| (child.wait_with_output().expect("the worker finishes"), json))
        .collect();
    let all: Vec<String> = outputs.iter().map(|(o, _)| explain(o)).collect();
    for (i, (o, json)) in outputs.into_iter().enumerate() {
        assert_eq!(o.status.code(), Some(0), "worker {i}: {all:#?}");
        let out = stdout(&o);
        assert!(out.contains("waiting for the run's workers"), "{out}");
        assert!(
            out.contains(&format!("worker {i} of 3 of a shared run")),
            "{out}"
        );
        merged_by += usize::from(out.contains("every worker finished"));
        let run = json_report(&json)["runs"][0].clone();
        assert_eq!(run["run_id"], run_id.as_str());
        assert_eq!(run["load"]["worker"], i);
        assert_eq!(run["load"]["workers"], 3);
        // Each worker's own account is exact: what its own pipeline says it did.
        let tally = pipeline_tally(&run);
        let flow = &run["load"]["flows"][0];
        let n = |v: &Value| v.as_u64().expect("a count");
        assert_eq!(n(&flow["lost"]), tally["dropped"], "worker {i}: {tally:?}");
        assert_eq!(
            n(&flow["counts"]["delivered"]),
            tally["processed"],
            "{tally:?}"
        );
        assert_eq!(
            n(&flow["counts"]["duplicates"]),
            tally["duplicated"],
            "{tally:?}"
        );
        assert_eq!(
            n(&flow["counts"]["reordered"]),
            tally["reordered"],
            "{tally:?}"
        );
        tallies.push(tally);
    }
    assert!(merged_by >= 1, "no worker merged the run");
    let sum = |key: &str| tallies.iter().map(|t| t[key]).sum::<u64>();
    assert!(sum("dropped") > 0 && sum("duplicated") > 0 && sum("reordered") > 0);

    let merged_json = scratch.path("merged.json");
    let html = scratch.path("merged.html");
    let o = roundtrip(&[
        "report",
        &run_id,
        "--store",
        &store,
        "--json",
        &merged_json,
        "--html",
        &html,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(
        stdout(&o).contains("3 workers, each on that schedule: their accounts merged"),
        "{}",
        explain(&o)
    );
    let run = json_report(&merged_json)["runs"][0].clone();
    let load = &run["load"];
    let n = |v: &Value| v.as_u64().expect("a count");
    assert_eq!(load["workers"], 3);
    assert_eq!(load["per_worker"].as_array().map(Vec::len), Some(3));
    assert_eq!(n(&load["send"]["counts"]["attempted"]), 600);
    let flow = &load["flows"][0];
    assert_eq!(n(&flow["lost"]), sum("dropped"));
    assert_eq!(n(&flow["counts"]["delivered"]), sum("processed"));
    assert_eq!(n(&flow["counts"]["duplicates"]), sum("duplicated"));
    assert_eq!(n(&flow["counts"]["reordered"]), sum("reordered"));
    assert_eq!(n(&flow["latency"]["count"]), sum("processed"));
    // The series, summed from each worker's recorded intervals, adds up to the totals.
    let series = load["series"].as_array().expect("a series");
    let in_series = |f: &dyn Fn(&Value) -> u64| series.iter().map(f).sum::<u64>();
    assert_eq!(in_series(&|p| n(&p["send"]["attempted"])), 600);
    assert_eq!(
        in_series(&|p| n(&p["flows"][0]["counts"]["delivered"])),
        sum("processed")
    );
    assert_eq!(run["scenarios"][0]["status"], "passed");
    assert_eq!(run["scenarios"][0]["sent"], 600);
    for i in 0..3 {
        let tagged = format!("worker {i}: ");
        assert!(
            run["sut_log"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l.as_str().is_some_and(|l| l.starts_with(&tagged))),
            "{}",
            run["sut_log"]
        );
    }
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert!(
        page.contains("\"per_worker\""),
        "the page holds each worker's part"
    );

    // The same index again, in the same run: refused before anything starts.
    let (again, _) = worker(1, &[]);
    let o = again.wait_with_output().expect("it finishes");
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("worker 1 has already joined run"),
        "{}",
        explain(&o)
    );

    // A worker whose others never come: exit 3, naming the missing ones.
    let lonely = format!("{run_id}-lonely");
    let o = roundtrip(&[
        "load",
        "examples/pipeline/suite-load.yaml",
        "--scenario",
        "steady",
        "--rate",
        "10/s",
        "--for",
        "1s",
        "--store",
        &store,
        "--workers",
        "3",
        "--worker-index",
        "1",
        "--run-id",
        &lonely,
        "--join-timeout",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(
        stderr(&o).contains("1 of 3 workers joined run")
            && stderr(&o).contains("still missing: worker 0, 2"),
        "{}",
        explain(&o)
    );
    // The run never finishes; its report says which workers came and went.
    let o = roundtrip(&["report", &lonely, "--store", &store]);
    assert!(
        stdout(&o).contains("of the load's workers, 1 joined and 1 finished"),
        "{}",
        explain(&o)
    );

    // Strays do not disturb a run: once worker 0 waits at the barrier, a process given
    // another schedule, or another worker count, is refused before it joins (exit 2);
    // then worker 1 comes and the run completes.
    let guarded = format!("{run_id}-guarded");
    let spawn = |index: &str, workers: &str, rate: &str| {
        Command::new(env!("CARGO_BIN_EXE_roundtrip"))
            .args([
                "load",
                "examples/pipeline/suite-load.yaml",
                "--scenario",
                "steady",
                "--rate",
                rate,
                "--for",
                "1s",
                "--store",
                &store,
                "--workers",
                workers,
                "--worker-index",
                index,
                "--run-id",
                &guarded,
                "--join-timeout",
                "5m",
            ])
            .current_dir(workspace())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("a worker starts")
    };
    let mut first = spawn("0", "2", "10/s");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        first.stdout.take().expect("stdout"),
    ));
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a line");
        let waiting = line.contains("1 of 2 joined");
        seen.push(line);
        if waiting {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("1 of 2 joined")),
        "worker 0 never waited: {seen:?}"
    );
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    for (index, workers, rate, expected) in [
        ("1", "2", "20/s", "schedule `20/s for 1s`"),
        ("2", "3", "10/s", "--workers 3"),
    ] {
        let o = spawn(index, workers, rate)
            .wait_with_output()
            .expect("the stray finishes");
        assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
        assert!(
            stderr(&o).contains("start every worker of a run with the same suite, scenario")
                && stderr(&o).contains(expected),
            "{}",
            explain(&o)
        );
    }
    let second = spawn("1", "2", "10/s")
        .wait_with_output()
        .expect("it finishes");
    assert_eq!(second.status.code(), Some(0), "{}", explain(&second));
    let status = first.wait().expect("worker 0 finishes");
    let rest = rest.join().expect("its output").join("\n");
    assert_eq!(status.code(), Some(0), "{rest}");
    let o = roundtrip(&["report", &guarded, "--store", &store]);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(
        stdout(&o).contains("2 workers, each on that schedule"),
        "{}",
        explain(&o)
    );
    let _ = std::process::Command::new("psql")
        .args([
            &base,
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
}

/// A load whose input is down stops at its first sends, as a harness error (exit 3),
/// instead of accounting for a whole schedule of failures.
#[test]
fn a_load_whose_input_is_unreachable_stops_with_exit_3() {
    let scratch = Scratch::new();
    let port = free_port();
    let suite = scratch.write(
        "down.yaml",
        &format!(
            "name: down\nchannels:\n  in: {{ http: {{ url: \"http://127.0.0.1:{port}/x\" }} }}\n  out: {{ webhook: {{ listen: \"127.0.0.1:0\" }} }}\nscenarios:\n  - name: s\n    send: [{{ to: in }}]\n    expect: [{{ on: out, within: 1s }}]\n    load: {{ streams: 4 }}\n"
        ),
    );
    let o = roundtrip(&[
        "load",
        &suite,
        "--scenario",
        "s",
        "--rate",
        "20/s",
        "--for",
        "1h",
        "--store",
        &scratch.store(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", explain(&o));
    assert!(
        stderr(&o)
            .contains("`in` is unreachable: its first 10 sends failed to connect or timed out"),
        "{}",
        explain(&o)
    );
    // The run is recorded, with the error.
    let again = roundtrip(&["report", "latest", "--store", &scratch.store()]);
    assert!(
        stdout(&again).contains("is unreachable"),
        "{}",
        explain(&again)
    );
}

/// On a terminal, the load's live view keeps a progress bar below its lines (here a
/// pseudo-terminal from util-linux's `script`), and clears it before the account.
#[test]
fn a_load_on_a_terminal_shows_a_progress_bar_and_clears_it() {
    let command = format!(
        "{} load examples/pipeline/suite-load.yaml --scenario steady --rate 100/s --for 2s \
         --store sqlite::memory:",
        env!("CARGO_BIN_EXE_roundtrip")
    );
    let o = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .expect("util-linux `script` runs (it gives the load a terminal)");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", explain(&o));
    assert!(out.contains("/200 sent"), "no bar drawn: {out}");
    // The bar is cleared (erase line) before the account is printed, and not drawn again.
    let account = out.find("PASS  steady").expect("the account");
    let cleared = out.rfind("\u{1b}[2K").expect("the bar erased");
    assert!(cleared < account, "{out:?}");
    assert!(!out[cleared..].contains("/200 sent"), "{out:?}");
}
