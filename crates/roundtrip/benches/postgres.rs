//! The Postgres store: ingest, and time to detect across connections (push through
//! LISTEN/NOTIFY against the seed's way, polling the same table).
//!
//! 1. Flood: 200,000 observations of ~200 B recorded by 64 and by 256 concurrent tasks;
//!    the rate until every one is committed, at the server's `synchronous_commit`.
//! 2. Time to detect: a writer store records one observation at a random moment
//!    (0–50 ms after the waiter started); the time from its commit to another store
//!    (its own connections, its own follower) learning of it: by push (its feed), by a
//!    poller reading the table every 100 ms, and by the seed's poller (jittered
//!    Fibonacci back-off in seconds, as `backoff.fibo` does).
//!
//! `cargo bench -p roundtrip --features postgres --bench postgres`; the database is
//! `ROUNDTRIP_BENCH_POSTGRES` (default the local `test` database), in a schema of its
//! own that is dropped afterwards. Prints markdown tables.

mod common;
#[path = "common/poll.rs"]
mod poll;

use common::observation;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roundtrip::store::postgres::{PostgresOptions, PostgresStore};
use roundtrip::store::{RunRecord, RunStatus, Store};

const FLOOD: u64 = 200_000;
const PUSH_EVENTS: usize = 300;
const POLL_EVENTS: usize = 100;
const FIBO_EVENTS: usize = 12;

fn run(run_id: &str) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        suite: "bench".to_owned(),
        suite_path: "bench.yaml".to_owned(),
        started_at: 0,
        finished_at: None,
        status: RunStatus::Running,
        owner: None,
    }
}

async fn open(url: &str) -> Result<Arc<PostgresStore>, Box<dyn Error>> {
    let options = PostgresOptions {
        feed_capacity: 1 << 20,
        ..PostgresOptions::from_url(url)?
    };
    Ok(Arc::new(PostgresStore::open_with(options).await?))
}

async fn flood(
    store: &Arc<PostgresStore>,
    run_id: &str,
    tasks: u64,
) -> Result<Duration, Box<dyn Error>> {
    let per_task = FLOOD / tasks;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (store, run_id) = (Arc::clone(store), run_id.to_owned());
        set.spawn(async move {
            for i in 0..per_task {
                store
                    .record(observation(&run_id, task * per_task + i))
                    .await?;
            }
            Ok::<_, roundtrip::store::StoreError>(())
        });
    }
    for result in set.join_all().await {
        result?;
    }
    Ok(start.elapsed())
}

/// How a waiter learns of the observation.
#[derive(Clone, Copy)]
enum Way {
    Push,
    Poll(poll::Schedule),
}

/// One event: the waiter starts, the writer commits 0–50 ms later; the time from the
/// commit to the waiter's knowing.
async fn detect_once(
    writer: &Arc<PostgresStore>,
    reader: &Arc<PostgresStore>,
    run_id: &str,
    n: u64,
    way: Way,
) -> Result<Duration, Box<dyn Error>> {
    let mut feed = reader.subscribe();
    let after = reader
        .observations(run_id, 0, usize::MAX)
        .await?
        .last()
        .map_or(0, |o| o.seq);
    let (committed_tx, committed_rx) = tokio::sync::oneshot::channel::<(u64, Instant)>();
    let (writer, id) = (Arc::clone(writer), run_id.to_owned());
    let delay = Duration::from_micros(rand::random::<u64>() % 50_000);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Ok(o) = writer.record(observation(&id, n)).await {
            let _ = committed_tx.send((o.seq, Instant::now()));
        }
    });
    let seen = match way {
        Way::Push => loop {
            let o = feed.recv().await?;
            if o.run_id == run_id && o.seq > after {
                break Instant::now();
            }
        },
        Way::Poll(schedule) => {
            let mut waits = poll::Waits::new(schedule);
            loop {
                if !reader.observations(run_id, after, 1).await?.is_empty() {
                    break Instant::now();
                }
                tokio::time::sleep(waits.next_wait()).await;
            }
        }
    };
    let (_, committed) = committed_rx.await?;
    Ok(seen.saturating_duration_since(committed))
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn bench(base: &str, schema: &str) -> Result<(), Box<dyn Error>> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    let store = open(&url).await?;
    let mut rows = Vec::new();
    for tasks in [64u64, 256] {
        let run_id = format!("flood-{tasks}");
        store.create_run(&run(&run_id)).await?;
        let elapsed = flood(&store, &run_id, tasks).await?;
        let stored = store.observations(&run_id, 0, usize::MAX).await?.len();
        if stored as u64 != FLOOD / tasks * tasks {
            return Err(format!(
                "{stored} of {} observations were committed",
                FLOOD / tasks * tasks
            )
            .into());
        }
        rows.push((
            format!("flood: {FLOOD} × ~200 B from {tasks} tasks"),
            format!(
                "{:.0} obs/s ({:.2} s)",
                stored as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64()
            ),
        ));
    }
    println!("| Postgres store ingest | result |");
    println!("| --- | --- |");
    for (what, result) in rows {
        println!("| {what} | {result} |");
    }

    let reader = open(&url).await?;
    println!();
    println!("| commit → another store knows | events | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    let ways = [
        (
            "push (LISTEN/NOTIFY wake-up, then a read)",
            Way::Push,
            PUSH_EVENTS,
        ),
        (
            "poll the table every 100 ms",
            Way::Poll(poll::Schedule::Every(Duration::from_millis(100))),
            POLL_EVENTS,
        ),
        (
            "the seed's poller: jittered Fibonacci back-off (1 s, 1 s, 2 s, …)",
            Way::Poll(poll::Schedule::Fibonacci),
            FIBO_EVENTS,
        ),
    ];
    for (i, (name, way, events)) in ways.into_iter().enumerate() {
        let run_id = format!("detect-{i}");
        store.create_run(&run(&run_id)).await?;
        let mut took = Vec::with_capacity(events);
        for n in 0..events as u64 {
            took.push(detect_once(&store, &reader, &run_id, n, way).await?);
        }
        took.sort_unstable();
        println!(
            "| {name} | {events} | {} | {} | {} |",
            ms(pct(&took, 50)),
            ms(pct(&took, 99)),
            ms(*took.last().unwrap_or(&Duration::ZERO))
        );
    }
    store.close().await?;
    reader.close().await?;
    Ok(())
}

async fn drop_schema(base: &str, schema: &str) -> Result<(), Box<dyn Error>> {
    let options = PostgresOptions::from_url(base)?;
    let (client, connection) = options.config.connect(options.tls.clone()).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::var("ROUNDTRIP_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("bench_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(bench(&base, &schema));
    rt.block_on(drop_schema(&base, &schema))?;
    result
}
