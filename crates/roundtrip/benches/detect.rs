//! Time to detect: from the example pipeline's emit to roundtrip's verdict.
//!
//! Starts the real example pipeline (zero processing delay, release build) as the SUT and
//! runs 1,000 one-event scenarios one after another through the real engine: HTTP
//! producer → pipeline → webhook listener → SQLite commit (WAL, synchronous=FULL, on disk)
//! → feed → router → expectation machine → verdict. The pipeline stamps each output with
//! `x-pipeline-emitted-at` (Unix ns, taken just before its HTTP call); the bench takes the
//! wall time at which each scenario's verdict reaches it as a run event. Both clocks are
//! this machine's realtime clock.
//!
//! Run: `cargo bench -p roundtrip --bench detect` (prints a markdown table).

use std::collections::HashMap;
use std::sync::Arc;

use roundtrip::clock;
use roundtrip::engine::{self, RunEvent, RunOptions};
use roundtrip::harness::{Event, Expect, Harness};
use roundtrip_core::latency::{LatencySummary, format_ns};
use roundtrip_core::model::{DurationSpec, ReadyProbe};
use serde_json::json;

const EVENTS: usize = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = roundtrip::store::open(&format!(
        "sqlite:{}",
        dir.path().join("bench.sqlite").display()
    ))
    .await?;

    let start: Vec<String> = [
        "cargo",
        "run",
        "--release",
        "--quiet",
        "--package",
        "roundtrip-example-pipeline",
        "--bin",
        "pipeline",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--listen".into(),
        "127.0.0.1:{{ port.in }}".into(),
        "--emit".into(),
        "{{ channel.out.url }}".into(),
        "--dead-letter".into(),
        "http://127.0.0.1:{{ port.nowhere }}/dead-letter".into(),
    ])
    .collect();
    let mut builder = Harness::builder("time to detect")
        .sut(
            start,
            ReadyProbe {
                http: None,
                tcp: None,
                log: Some("pipeline listening on".into()),
                within: DurationSpec(std::time::Duration::from_secs(600)),
            },
        )
        .http("in", "http://127.0.0.1:{{ port.in }}/events")
        .webhook("out", "127.0.0.1:0", "/processed");
    for i in 0..EVENTS {
        builder = builder.scenario(
            format!("event {i}"),
            [Event::to("in").json(json!({ "item": "widget", "n": i }))],
            [Expect::on("out").matching(json!({ "item": "WIDGET" }))],
        );
    }
    let harness = builder.build()?;
    let loaded = roundtrip_core::suite::LoadedSuite {
        suite: harness.suite().clone(),
        path: "time-to-detect".into(),
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
    opts.concurrency = 1;
    opts.events = Some(tx);
    let summary = engine::run_suite(&loaded, Arc::clone(&store), opts).await?;
    let verdict_at = verdicts.await?;
    assert_eq!(summary.failed(), 0, "every event must pass: {summary:#?}");

    let sent = store.sent_events(&summary.run_id).await?;
    let scenario_of: HashMap<String, String> = sent
        .iter()
        .map(|e| (e.correlation_id.clone(), e.scenario.clone()))
        .collect();
    let mut samples = Vec::with_capacity(EVENTS);
    let mut after = 0;
    loop {
        let batch = store.observations(&summary.run_id, after, 4096).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for obs in &batch {
            let emitted: Option<i64> = obs
                .header("x-pipeline-emitted-at")
                .and_then(|v| v.parse().ok());
            let verdict = obs
                .correlation_id
                .as_ref()
                .and_then(|c| scenario_of.get(c))
                .and_then(|s| verdict_at.get(s));
            if let (Some(emitted), Some(verdict)) = (emitted, verdict) {
                samples.push(u64::try_from(verdict - emitted).unwrap_or(0));
            }
        }
    }
    let send_to_receive: Vec<u64> = summary
        .scenarios
        .iter()
        .flat_map(|s| {
            s.expectations
                .iter()
                .flat_map(|e| e.latencies_ns.iter().copied())
        })
        .collect();
    let detect = LatencySummary::from_ns(&samples).ok_or("no samples")?;
    let e2e = LatencySummary::from_ns(&send_to_receive).ok_or("no samples")?;
    println!(
        "| measure ({} events, zero-delay pipeline) | p50 | p90 | p99 | max |",
        samples.len()
    );
    println!("| --- | --- | --- | --- | --- |");
    for (name, l) in [
        ("pipeline emit → verdict", detect),
        ("send → observation received", e2e),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            format_ns(l.p50_ns),
            format_ns(l.p90_ns),
            format_ns(l.p99_ns),
            format_ns(l.max_ns)
        );
    }
    let scenario_ns: Vec<u64> = summary.scenarios.iter().map(|s| s.duration_ns).collect();
    if let Some(l) = LatencySummary::from_ns(&scenario_ns) {
        println!(
            "| whole scenario (send → verdict, incl. the HTTP 202) | {} | {} | {} | {} |",
            format_ns(l.p50_ns),
            format_ns(l.p90_ns),
            format_ns(l.p99_ns),
            format_ns(l.max_ns)
        );
    }
    Ok(())
}
