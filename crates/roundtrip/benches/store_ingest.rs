//! Store ingest benchmark: the SQLite store's write path on a temporary file.
//!
//! 1. Flood: 200,000 observations of ~200 B recorded by 64 concurrent tasks (and by 256,
//!    to show batches growing with the requests in flight); the rate
//!    until every one is committed (group commit at work), with `synchronous=FULL`
//!    (the default) and `NORMAL`.
//! 2. The baseline: the same 200,000 rows inserted raw into the same table with the same
//!    durability (WAL, `synchronous=FULL`), by one rusqlite connection in transactions of
//!    256 and of 4,096 rows with one prepared statement: what SQLite itself does on this
//!    disk, with no store, no tasks and no feed. The store's flood against it is the
//!    ratio.
//! 3. Lone observations: 2,000 sequential `record` calls, one at a time; the time from
//!    the call to its committed result, and to a feed subscriber receiving it.
//!
//! Run with `cargo bench -p roundtrip --bench store_ingest`; prints a markdown table.

mod common;

/// The allocator the `roundtrip` binary ships with, so the engine is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::observation;

use roundtrip_core::run::RunStatus;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roundtrip::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use roundtrip::store::{RunRecord, Store};

const FLOOD: u64 = 200_000;
const TASKS: u64 = 64;
/// A second flood with more requests in flight (bigger group commits).
const MORE_TASKS: u64 = 256;
const LONE: usize = 2_000;

async fn open(
    dir: &tempfile::TempDir,
    name: &str,
    sync: Synchronous,
) -> Result<Arc<dyn Store>, Box<dyn Error>> {
    let path = dir.path().join(name);
    let options = SqliteOptions {
        synchronous: sync,
        ..SqliteOptions::default()
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_with(
        path.to_str().ok_or("temp path is not UTF-8")?,
        &options,
    )?);
    store
        .create_run(&RunRecord {
            run_id: "bench".to_owned(),
            suite: "bench".to_owned(),
            suite_path: "bench.yaml".to_owned(),
            started_at: 0,
            finished_at: None,
            status: RunStatus::Running,
            owner: None,
        })
        .await?;
    Ok(store)
}

/// Records `FLOOD` observations from `tasks` tasks; returns the elapsed time.
async fn flood(store: &Arc<dyn Store>, tasks: u64) -> Result<Duration, Box<dyn Error>> {
    let per_task = FLOOD / tasks;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let store = Arc::clone(store);
        set.spawn(async move {
            for i in 0..per_task {
                store
                    .record(observation("bench", task * per_task + i))
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

/// The baseline: `FLOOD` rows into the store's `observations` table of a fresh file
/// (the schema made by the store, which is then closed), in transactions of `batch` rows
/// by one connection, WAL and `synchronous=FULL`. Returns the elapsed time.
async fn raw_flood(dir: &tempfile::TempDir, batch: u64) -> Result<Duration, Box<dyn Error>> {
    let name = format!("raw-{batch}.sqlite");
    open(dir, &name, Synchronous::Full).await?.close().await?;
    let path = dir.path().join(&name);
    let path = path.to_str().ok_or("temp path is not UTF-8")?.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Duration, rusqlite::Error> {
        let mut conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let rows: Vec<_> = (0..FLOOD)
            .map(|n| {
                let o = observation("bench", n);
                let headers = serde_json::to_string(&o.headers).unwrap_or_default();
                (o, headers)
            })
            .collect();
        let start = Instant::now();
        for chunk in rows.chunks(usize::try_from(batch).unwrap_or(1)) {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO observations (run_id, channel, correlation_id, payload,
                         payload_size, truncated, is_json, headers, message_id, key,
                         received_at, received_mono, meta)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?;
                for (o, headers) in chunk {
                    stmt.execute(rusqlite::params![
                        o.run_id,
                        o.channel,
                        o.correlation_id,
                        o.payload.bytes,
                        i64::try_from(o.payload.size).unwrap_or(i64::MAX),
                        o.payload.truncated,
                        o.payload.json.is_some(),
                        headers,
                        o.message_id,
                        o.key,
                        o.received_at,
                        o.received_mono.and_then(|m| i64::try_from(m).ok()),
                        "[]",
                    ])?;
                }
            }
            tx.commit()?;
        }
        Ok(start.elapsed())
    })
    .await?
    .map_err(Into::into)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn bench() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();

    let floods = [
        ("FULL", Synchronous::Full, TASKS),
        ("NORMAL", Synchronous::Normal, TASKS),
        ("FULL", Synchronous::Full, MORE_TASKS),
    ];
    let mut best_full: f64 = 0.0;
    for (name, sync, tasks) in floods {
        let store = open(&dir, &format!("flood-{name}-{tasks}.sqlite"), sync).await?;
        let elapsed = flood(&store, tasks).await?;
        let stored = store.observations("bench", 0, usize::MAX).await?.len();
        assert_eq!(
            stored as u64,
            FLOOD / tasks * tasks,
            "not everything was committed"
        );
        store.close().await?;
        let rate = stored as f64 / elapsed.as_secs_f64();
        if name == "FULL" {
            best_full = best_full.max(rate);
        }
        rows.push((
            format!("flood: {FLOOD} × ~200 B from {tasks} tasks, synchronous={name}"),
            format!("{:.0} obs/s ({:.2} s)", rate, elapsed.as_secs_f64()),
        ));
    }

    for batch in [256, 4096] {
        let elapsed = raw_flood(&dir, batch).await?;
        let rate = FLOOD as f64 / elapsed.as_secs_f64();
        rows.push((
            format!(
                "raw rusqlite: {FLOOD} rows, transactions of {batch}, one connection, synchronous=FULL"
            ),
            format!(
                "{rate:.0} rows/s ({:.2} s); the store's best FULL flood is {:.0} % of it",
                elapsed.as_secs_f64(),
                best_full * 100.0 / rate
            ),
        ));
    }

    let store = open(&dir, "lone.sqlite", Synchronous::Full).await?;
    let mut feed = store.subscribe();
    let subscriber = tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(LONE);
        while arrivals.len() < LONE {
            match feed.recv().await {
                Ok(o) => arrivals.push((o.seq, Instant::now())),
                Err(e) => return Err(e),
            }
        }
        Ok(arrivals)
    });
    let mut committed = Vec::with_capacity(LONE);
    let mut started = Vec::with_capacity(LONE);
    for n in 0..LONE as u64 {
        let t0 = Instant::now();
        let o = store.record(observation("bench", n)).await?;
        committed.push(t0.elapsed());
        started.push((o.seq, t0));
    }
    let arrivals = subscriber.await??;
    let mut to_feed: Vec<Duration> = arrivals
        .iter()
        .zip(&started)
        .map(|((seq, at), (sent_seq, t0))| {
            assert_eq!(seq, sent_seq, "feed out of order");
            at.saturating_duration_since(*t0)
        })
        .collect();
    store.close().await?;
    committed.sort_unstable();
    to_feed.sort_unstable();
    rows.push((
        format!("lone record → committed result, p50 / p99 ({LONE} sequential)"),
        format!(
            "{} / {}",
            micros(percentile(&committed, 50)),
            micros(percentile(&committed, 99))
        ),
    ));
    rows.push((
        format!("lone record → feed subscriber, p50 / p99 ({LONE} sequential)"),
        format!(
            "{} / {}",
            micros(percentile(&to_feed, 50)),
            micros(percentile(&to_feed, 99))
        ),
    ));

    println!("| SQLite store ingest (temp file, WAL) | result |");
    println!("| --- | --- |");
    for (what, result) in rows {
        println!("| {what} | {result} |");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}
