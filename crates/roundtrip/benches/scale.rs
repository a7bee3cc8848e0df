//! Scale: 10,000 scenarios at once against the example pipeline, against the pipeline's
//! own processing time.
//!
//! The example pipeline (release build) holds every event for 1 s (`--delay-ms 1000`,
//! events wait concurrently) and then emits it to a webhook, one output at a time.
//!
//! - **raw** (the pipeline's own processing time): a bare client posts 10,000 events at
//!   once with one reqwest client and a bare axum server counts the outputs; from the
//!   first post to the 10,000th output. No store, no matching, no verdicts: as fast as
//!   anything can drive this pipeline from this process.
//! - **roundtrip**: the engine runs a suite of 10,000 one-event scenarios, all at once
//!   (`concurrency` 10,000), against a fresh pipeline: HTTP producer → pipeline → webhook
//!   listener → SQLite file store (WAL) → verdicts; from the first send to the last
//!   verdict, and the whole run (listeners, SUT start, teardown). Twice: with
//!   `synchronous=FULL` (the default: the webhook answers once the observation is on
//!   disk) and with `NORMAL` (committed, but not flushed to disk at every commit).
//!
//! The harness overhead is roundtrip's time against raw. Resident memory is this
//! process's peak (`VmHWM`) after each phase.
//!
//! Run: `cargo bench -p roundtrip --bench scale` (prints a markdown table);
//! `SCALE_SCENARIOS` changes the number of scenarios.

#[path = "common/pipeline.rs"]
mod pipeline;

/// The allocator the `roundtrip` binary ships with, so the engine is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use roundtrip::clock;
use roundtrip::core::latency::{LatencySummary, format_ns};
use roundtrip::engine::{self, RunEvent, RunOptions};
use roundtrip::harness::{Event, Expect};
use roundtrip::store::Store;
use roundtrip::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

const DELAY_MS: &str = "1000";
/// The longest a phase may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(600);

/// A line of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/self/status"))
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The bare driver: the pipeline started by hand, `n` posts at once, a counting server.
async fn raw(n: usize) -> Result<Duration, Box<dyn Error>> {
    let outputs = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let out_addr = outputs.local_addr()?;
    let count = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(tokio::sync::Notify::new());
    let app = {
        let (count, all_in) = (Arc::clone(&count), Arc::clone(&all_in));
        axum::Router::new().route(
            "/processed",
            axum::routing::post(move || {
                let (count, all_in) = (Arc::clone(&count), Arc::clone(&all_in));
                async move {
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == n {
                        all_in.notify_one();
                    }
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let server = tokio::spawn(async move { axum::serve(outputs, app).await });
    let in_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{in_port}");
    let emit = format!("http://{out_addr}/processed");
    let dead = format!("http://{out_addr}/dead-letter");
    let command = pipeline::command(&[
        "--listen",
        &listen,
        "--emit",
        &emit,
        "--dead-letter",
        &dead,
        "--delay-ms",
        DELAY_MS,
    ]);
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("pipeline listening on") {
                return Ok(());
            }
        }
        Err(std::io::Error::other(
            "the pipeline exited before it listened",
        ))
    };
    tokio::time::timeout(PATIENCE, ready).await??;

    let client = reqwest::Client::new();
    let url = format!("http://{listen}/events");
    let start = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..n {
        let request = client
            .post(&url)
            .header("x-correlation-id", uuid::Uuid::new_v4().to_string())
            .header("content-type", "application/json")
            .body(json!({ "item": "widget", "n": i }).to_string());
        posts.spawn(async move { request.send().await?.error_for_status().map(drop) });
    }
    for posted in posts.join_all().await {
        posted?;
    }
    tokio::time::timeout(PATIENCE, all_in.notified())
        .await
        .map_err(|_| {
            format!(
                "only {} of {n} outputs arrived",
                count.load(Ordering::SeqCst)
            )
        })?;
    let wall = start.elapsed();
    child.kill().await?;
    server.abort();
    Ok(wall)
}

/// What one roundtrip run of the scenarios took.
struct Phase {
    /// First send → last verdict.
    wall: Duration,
    /// First send → last send.
    sending: Duration,
    /// First send → the pipeline's last emit.
    to_last_emit: Duration,
    /// The pipeline's emit → the verdict.
    detect: LatencySummary,
    /// The whole run.
    run: Duration,
    /// This process's peak resident set after it, in KiB.
    peak_kib: u64,
}

/// Runs `n` one-event scenarios at once against a fresh pipeline, into a file store.
async fn with_roundtrip(n: usize, sync: Synchronous) -> Result<Phase, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("scale.sqlite");
    let options = SqliteOptions {
        synchronous: sync,
        ..SqliteOptions::default()
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_with(
        path.to_str().ok_or("temp path is not UTF-8")?,
        &options,
    )?);
    let mut builder = pipeline::suite("scale", &["--delay-ms", DELAY_MS]);
    for i in 0..n {
        builder = builder.scenario(
            format!("event {i}"),
            [Event::to("in").json(json!({ "item": "widget", "n": i }))],
            [Expect::on("out")
                .matching(json!({ "item": "WIDGET" }))
                .within(Duration::from_secs(300))],
        );
    }
    let harness = builder.build()?;
    let loaded = roundtrip::core::suite::LoadedSuite {
        suite: harness.suite().clone(),
        path: "scale".into(),
        base_dir: std::env::current_dir()?,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let verdicts = tokio::spawn(async move {
        let mut at: HashMap<String, i64> = HashMap::new();
        while let Some(event) = rx.recv().await {
            if let RunEvent::ScenarioFinished(result) = event {
                at.insert(result.name.clone(), clock::wall_now());
            }
        }
        at
    });
    let mut opts = RunOptions::new();
    opts.concurrency = n;
    opts.events = Some(tx);
    let run_started = Instant::now();
    let summary = engine::run_suite(&loaded, Arc::clone(&store), opts).await?;
    let run = run_started.elapsed();
    let verdict_at = verdicts.await?;
    let peak_kib = status_kib("VmHWM:")?;
    if summary.failed() != 0 || summary.scenarios.len() != n {
        let first = summary
            .scenarios
            .iter()
            .find(|s| s.status != roundtrip::core::run::ScenarioStatus::Passed)
            .map(|s| format!("{}: {:?} {:?}", s.name, s.error, s.notes))
            .unwrap_or_default();
        return Err(format!(
            "{} of {} scenarios failed; the first: {first}",
            summary.failed(),
            summary.scenarios.len()
        )
        .into());
    }

    let sent = store.sent_events(&summary.run_id).await?;
    let first_send = sent.iter().map(|e| e.sent_at).min().ok_or("nothing sent")?;
    let last_send = sent.iter().map(|e| e.sent_at).max().ok_or("nothing sent")?;
    let scenario_of: HashMap<&str, &str> = sent
        .iter()
        .map(|e| (e.correlation_id.as_str(), e.scenario.as_str()))
        .collect();
    let last_verdict = verdict_at.values().copied().max().ok_or("no verdicts")?;
    let mut last_emit = i64::MIN;
    let mut emit_to_verdict = Vec::with_capacity(n);
    let mut after = 0;
    loop {
        let page = store.observations(&summary.run_id, after, 4096).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for o in &page {
            let Some(emitted) = o
                .header("x-pipeline-emitted-at")
                .and_then(|v| v.parse::<i64>().ok())
            else {
                continue;
            };
            last_emit = last_emit.max(emitted);
            let verdict = o
                .correlation_id
                .as_deref()
                .and_then(|c| scenario_of.get(c))
                .and_then(|s| verdict_at.get(*s));
            if let Some(v) = verdict {
                emit_to_verdict.push(u64::try_from(v - emitted).unwrap_or(0));
            }
        }
    }
    store.close().await?;
    let ns = |a: i64, b: i64| Duration::from_nanos(u64::try_from(b - a).unwrap_or(0));
    Ok(Phase {
        wall: ns(first_send, last_verdict),
        sending: ns(first_send, last_send),
        to_last_emit: ns(first_send, last_emit),
        detect: LatencySummary::from_ns(&emit_to_verdict).ok_or("no samples")?,
        run,
        peak_kib,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let n: usize = match std::env::var("SCALE_SCENARIOS") {
        Ok(v) => v.parse().map_err(|_| format!("SCALE_SCENARIOS={v:?}"))?,
        Err(_) => 10_000,
    };
    let rss_before = status_kib("VmRSS:")?;
    let raw_wall = raw(n).await?;
    let peak_after_raw = status_kib("VmHWM:")?;
    let full = with_roundtrip(n, Synchronous::Full).await?;
    let normal = with_roundtrip(n, Synchronous::Normal).await?;

    println!(
        "raw (the pipeline's own processing time, first post → last output): {}",
        secs(raw_wall)
    );
    println!(
        "resident memory: {} before, peak {} after raw",
        mib(rss_before),
        mib(peak_after_raw)
    );
    println!();
    println!(
        "| {n} scenarios at once, pipeline delay {DELAY_MS} ms | synchronous=FULL | synchronous=NORMAL |"
    );
    println!("| --- | --- | --- |");
    let row = |what: &str, f: &dyn Fn(&Phase) -> String| {
        println!("| {what} | {} | {} |", f(&full), f(&normal));
    };
    row("first send → last verdict", &|p| secs(p.wall));
    row("harness overhead (against raw)", &|p| {
        format!(
            "{:+.1} %",
            (p.wall.as_secs_f64() / raw_wall.as_secs_f64() - 1.0) * 100.0
        )
    });
    row("first send → last send", &|p| secs(p.sending));
    row("first send → the pipeline's last emit", &|p| {
        secs(p.to_last_emit)
    });
    row("emit → verdict, p50 / p99 / max", &|p| {
        format!(
            "{} / {} / {}",
            format_ns(p.detect.p50_ns),
            format_ns(p.detect.p99_ns),
            format_ns(p.detect.max_ns)
        )
    });
    row("the whole run (listeners, SUT start, teardown)", &|p| {
        secs(p.run)
    });
    row("peak resident memory of the process after it", &|p| {
        mib(p.peak_kib)
    });
    Ok(())
}
