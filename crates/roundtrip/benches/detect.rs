//! Time to detect: from the example pipeline's emit to roundtrip's verdict, against
//! polling tests waiting for the same outputs in the same run.
//!
//! Starts the real example pipeline (release build; each event processed after a random
//! 0–50 ms, `--jitter-ms 50`) as the SUT and runs 1,000 one-event scenarios one after
//! another through the real engine: HTTP producer → pipeline → webhook listener → SQLite
//! commit (WAL, synchronous=FULL, on disk) → feed → router → expectation machine →
//! verdict. The pipeline stamps each output with `x-pipeline-emitted-at` (Unix ns, taken
//! just before its HTTP call); the bench takes the wall time at which each scenario's
//! verdict reaches it as a run event. Both clocks are this machine's realtime clock.
//!
//! Beside each scenario, from the moment it starts sending, three polling tests wait for
//! the same output by reading the same store, as the popular tools do: every 100 ms
//! (Awaitility, busypie), every 500 ms (aws-testing-library), and with the seed's jittered
//! Fibonacci back-off (1 s, 1 s, 2 s, …). Each look reads the run's newest observations
//! (a handful of rows), so a look costs well under a millisecond; a poller's time to
//! detect is from the emit to the look that finds the output.
//!
//! Run: `cargo bench -p roundtrip --bench detect` (prints a markdown table).

#[path = "common/pipeline.rs"]
mod pipeline;
#[path = "common/poll.rs"]
mod poll;

/// The allocator the `roundtrip` binary ships with, so the engine is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use roundtrip::clock;
use roundtrip::engine::{self, RunEvent, RunOptions};
use roundtrip::harness::{Event, Expect};
use roundtrip::store::Store;
use roundtrip_core::latency::{LatencySummary, format_ns};
use serde_json::json;

const EVENTS: usize = 1_000;

/// The polling tests, by name.
const POLLERS: [(&str, poll::Schedule); 3] = [
    (
        "poll every 100 ms (Awaitility, busypie)",
        poll::Schedule::Every(std::time::Duration::from_millis(100)),
    ),
    (
        "poll every 500 ms (aws-testing-library)",
        poll::Schedule::Every(std::time::Duration::from_millis(500)),
    ),
    (
        "the seed's poller: jittered Fibonacci back-off (1 s, 1 s, 2 s, …)",
        poll::Schedule::Fibonacci,
    ),
];

/// Where scenario `n`'s output is, at the latest: the sequence number of an earlier
/// scenario's output (scenarios run one after another, so each output is recorded after
/// the ones before it).
type Cursors = Arc<Mutex<HashMap<u64, u64>>>;

/// The `n` of the pipeline's output (`{"item": "WIDGET", "n": n, …}`).
fn output_n(o: &roundtrip::core::observation::Observation) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(&o.payload.bytes).ok()?;
    v.get("n")?.as_u64()
}

/// A polling test waiting for scenario `n`'s output: looks, waits, looks again; returns
/// the time from the pipeline's emit to the look that found it.
async fn poll_for(
    store: Arc<dyn Store>,
    run_id: String,
    n: u64,
    cursors: Cursors,
    schedule: poll::Schedule,
) -> Result<u64, String> {
    // A lower bound on where the output is: an output five scenarios back (or the start).
    let after = {
        let known = cursors.lock().expect("cursor lock");
        n.checked_sub(5)
            .and_then(|earlier| known.get(&earlier).copied())
            .unwrap_or(0)
    };
    let mut waits = poll::Waits::new(schedule);
    loop {
        let page = store
            .observations(&run_id, after, 64)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(found) = page.iter().find(|o| output_n(o) == Some(n)) {
            let seen = clock::wall_now();
            let emitted: i64 = found
                .header("x-pipeline-emitted-at")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("output {n} has no x-pipeline-emitted-at"))?;
            return Ok(u64::try_from(seen - emitted).unwrap_or(0));
        }
        tokio::time::sleep(waits.next_wait()).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = roundtrip::store::open(&format!(
        "sqlite:{}",
        dir.path().join("bench.sqlite").display()
    ))
    .await?;

    let mut builder = pipeline::suite("time to detect", &["--jitter-ms", "50"]);
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

    // Each output's sequence number as it is committed: the pollers' lower bounds.
    let cursors: Cursors = Arc::default();
    let mut feed = store.subscribe();
    let recorder = {
        let cursors = Arc::clone(&cursors);
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(o) => {
                        if let Some(n) = output_n(&o) {
                            cursors.lock().expect("cursor lock").insert(n, o.seq);
                        }
                    }
                    // A missed cursor only makes a poller read from further back.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    };

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut at: HashMap<String, i64> = HashMap::new();
            let mut pollers = tokio::task::JoinSet::new();
            let mut run = String::new();
            while let Some(event) = rx.recv().await {
                match event {
                    RunEvent::RunStarted { run_id, .. } => run = run_id,
                    RunEvent::ScenarioStarted { name } => {
                        let Some(n) = name.strip_prefix("event ").and_then(|n| n.parse().ok())
                        else {
                            continue;
                        };
                        for (way, (_, schedule)) in POLLERS.into_iter().enumerate() {
                            let polled = poll_for(
                                Arc::clone(&store),
                                run.clone(),
                                n,
                                Arc::clone(&cursors),
                                schedule,
                            );
                            pollers.spawn(async move { (way, polled.await) });
                        }
                    }
                    RunEvent::ScenarioFinished(result) => {
                        at.insert(result.name.clone(), clock::wall_now());
                    }
                    _ => {}
                }
            }
            let mut polled: [Vec<u64>; 3] = Default::default();
            for (way, result) in pollers.join_all().await {
                polled[way].push(result?);
            }
            Ok::<_, String>((at, polled))
        })
    };
    let mut opts = RunOptions::new();
    opts.concurrency = 1;
    opts.events = Some(tx);
    let summary = engine::run_suite(&loaded, Arc::clone(&store), opts).await?;
    let (verdict_at, polled) = watcher.await??;
    recorder.abort();
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
        "| measure ({} events, pipeline jitter 0–50 ms) | p50 | p90 | p99 | max |",
        samples.len()
    );
    println!("| --- | --- | --- | --- | --- |");
    let mut rows = vec![
        ("pipeline emit → verdict (roundtrip, push)", detect),
        ("send → observation received", e2e),
    ];
    for ((name, _), found) in POLLERS.iter().zip(&polled) {
        let l = LatencySummary::from_ns(found).ok_or("a poller has no samples")?;
        rows.push((name, l));
    }
    for (name, l) in rows {
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
