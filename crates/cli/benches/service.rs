//! The listener service across processes: how soon a runner learns of what a deployed
//! `roundtrip listen` recorded, beside an in-process listener, in the same run.
//!
//! A `roundtrip listen` process records a webhook channel into a Postgres store. This
//! process posts one event at a time to that webhook (0–20 ms apart, at random) and
//! learns of each:
//! - through the service's event stream (SSE, `GET /v1/runs/{run}/events`);
//! - through a Postgres store of its own on the same database (LISTEN/NOTIFY wake-up,
//!   then a read): the shared-store way;
//! - by polling that table every 100 ms, and with the seed guide's jittered Fibonacci
//!   back-off (1 s, 1 s, 2 s, …), the seed's way, against the same service;
//! - and, for comparison, through an in-process webhook listener recording into an
//!   in-process SQLite store (what `roundtrip run` does without `--remote`).
//!
//! Each figure is the time from the listener's receive (its wall clock; one machine) to
//! this process knowing, so it includes the commit.
//!
//! `cargo bench -p roundtrip-cli --features postgres --bench service`; the database is
//! `ROUNDTRIP_BENCH_POSTGRES` (default the local `test` database), in a schema of its own
//! that is dropped afterwards. Prints a markdown table.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use roundtrip::core::correlate::Correlator;
use roundtrip::core::model::{ChannelSpec, CorrelationRule, WebhookChannel};
use roundtrip::store::postgres::{PostgresOptions, PostgresStore};
use roundtrip::store::{RunRecord, RunStatus, Store};
use roundtrip::transport::{DriverContext, ObservationSink, registry};
use tokio::sync::mpsc;

const EVENTS: usize = 500;
const POLL_EVENTS: usize = 60;
const FIBO_EVENTS: usize = 10;
const RUN: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
const LOCAL_RUN: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c";

type Learned = (String, i64);

fn pct(sorted: &[i64], p: usize) -> i64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(ns: i64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

fn row(name: &str, mut took: Vec<i64>) {
    took.sort_unstable();
    println!(
        "| {name} | {} | {} | {} | {} |",
        took.len(),
        ms(pct(&took, 50)),
        ms(pct(&took, 99)),
        ms(*took.last().unwrap_or(&0))
    );
}

/// Reads the run's event stream, sending (correlation id, receive time) for each
/// observation when it is known here.
async fn follow_events(api: String, tx: mpsc::UnboundedSender<(Learned, i64)>) {
    let client = reqwest::Client::new();
    let Ok(mut response) = client
        .get(format!("{api}/v1/runs/{RUN}/events"))
        .send()
        .await
    else {
        return;
    };
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let now = roundtrip::clock::wall_now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let Ok(o) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            let correlation = o["correlation_id"].as_str().unwrap_or_default().to_owned();
            let received = o["received_at"].as_i64().unwrap_or_default();
            let _ = tx.send(((correlation, received), now));
        }
    }
}

/// Follows a store's feed, sending (correlation id, receive time) for each observation
/// of `run` when it is known here.
async fn follow_feed(
    store: Arc<dyn Store>,
    run: &'static str,
    tx: mpsc::UnboundedSender<(Learned, i64)>,
) {
    let mut feed = store.subscribe();
    while let Ok(o) = feed.recv().await {
        if o.run_id == run {
            let now = roundtrip::clock::wall_now();
            let correlation = o.correlation_id.clone().unwrap_or_default();
            let _ = tx.send(((correlation, o.received_at), now));
        }
    }
}

async fn post(client: &reqwest::Client, url: &str, run: &str, correlation: &str) {
    let _ = client
        .post(url)
        .header("x-roundtrip-run", run)
        .header("x-correlation-id", correlation)
        .body("{\"n\":1}")
        .send()
        .await;
}

/// The receive → known time of `correlation` on `rx`.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<(Learned, i64)>,
    correlation: &str,
) -> Result<i64, Box<dyn Error>> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?;
        let Some(((c, received), known)) = next else {
            return Err("a feed ended".into());
        };
        if c == correlation {
            return Ok(known - received);
        }
    }
}

async fn jitter() {
    tokio::time::sleep(Duration::from_micros(rand_u64() % 20_000)).await;
}

fn rand_u64() -> u64 {
    rand::random::<u64>()
}

/// Waits by polling the table: every `every`, or with the seed's Fibonacci back-off
/// (`every` = None); the receive → known time.
async fn poll(
    reader: &Arc<PostgresStore>,
    after: u64,
    every: Option<Duration>,
) -> Result<(u64, i64), Box<dyn Error>> {
    let (mut a, mut b) = (1u64, 1u64);
    loop {
        if let Some(o) = reader.observations(RUN, after, 1).await?.first() {
            return Ok((o.seq, roundtrip::clock::wall_now() - o.received_at));
        }
        let wait = match every {
            Some(d) => d,
            None => {
                let wait = Duration::from_millis(rand_u64() % (a * 1000 + 1));
                (a, b) = (b, a + b);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn bench(base: &str, schema: &str) -> Result<(), Box<dyn Error>> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    let dir = std::env::temp_dir().join(format!("roundtrip-bench-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("listen.yaml");
    std::fs::write(
        &config,
        "name: bench\napi: { listen: '127.0.0.1:0' }\n\
         channels:\n  out: { webhook: { listen: '127.0.0.1:0', path: /out } }\n",
    )?;
    let mut service = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .arg("listen")
        .arg(&config)
        .args(["--store", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut banner = String::new();
    let mut lines = BufReader::new(service.stdout.take().ok_or("no stdout")?);
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            return Err(format!("the service ended:\n{banner}").into());
        }
        banner.push_str(&line);
        if line.trim() == "ready" {
            break;
        }
    }
    let field = |prefix: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| format!("no `{prefix}` in the banner"))
    };
    let api = field("api: ")?;
    let hook = field("channel out: ")?;

    // The runner's side: a Postgres store of its own, the service's stream, and an
    // in-process listener for comparison.
    let reader = Arc::new(PostgresStore::open_with(PostgresOptions::from_url(&url)?).await?);
    let (stream_tx, mut stream_rx) = mpsc::unbounded_channel();
    let (feed_tx, mut feed_rx) = mpsc::unbounded_channel();
    tokio::spawn(follow_events(api.clone(), stream_tx));
    tokio::spawn(follow_feed(
        Arc::clone(&reader) as Arc<dyn Store>,
        RUN,
        feed_tx,
    ));
    let local: Arc<dyn Store> = roundtrip::store::open("sqlite::memory:").await?;
    local
        .create_run(&RunRecord {
            run_id: LOCAL_RUN.to_owned(),
            suite: "bench".to_owned(),
            suite_path: "bench".to_owned(),
            started_at: 0,
            finished_at: None,
            status: RunStatus::Running,
            owner: None,
        })
        .await?;
    let spec = ChannelSpec::Webhook(WebhookChannel {
        listen: "127.0.0.1:0".to_owned(),
        path: "/out".to_owned(),
        max_payload: None,
    });
    let ctx = DriverContext {
        base_dir: dir.clone(),
    };
    let sink = ObservationSink::new(
        Arc::clone(&local),
        LOCAL_RUN,
        "out",
        Arc::new(Correlator::new(&CorrelationRule::default())?),
        1 << 20,
    );
    let running = registry::listener("out", &spec, &ctx)?.start(sink).await?;
    let local_hook = running.bound.clone().ok_or("no address")?.url;
    let (local_tx, mut local_rx) = mpsc::unbounded_channel();
    tokio::spawn(follow_feed(Arc::clone(&local), LOCAL_RUN, local_tx));

    let client = reqwest::Client::new();
    // Warm up connections and the service's run.
    post(&client, &hook, RUN, "warm").await;
    wait_for(&mut stream_rx, "warm").await?;
    wait_for(&mut feed_rx, "warm").await?;
    let (mut by_stream, mut by_feed, mut in_process) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..EVENTS {
        jitter().await;
        let id = format!("e{i}");
        post(&client, &hook, RUN, &id).await;
        by_stream.push(wait_for(&mut stream_rx, &id).await?);
        by_feed.push(wait_for(&mut feed_rx, &id).await?);
        jitter().await;
        post(&client, &local_hook, LOCAL_RUN, &id).await;
        in_process.push(wait_for(&mut local_rx, &id).await?);
    }
    let mut after = reader
        .observations(RUN, 0, usize::MAX)
        .await?
        .last()
        .map_or(0, |o| o.seq);
    let mut pollers = Vec::new();
    for (every, events) in [
        (Some(Duration::from_millis(100)), POLL_EVENTS),
        (None, FIBO_EVENTS),
    ] {
        let mut took = Vec::new();
        for i in 0..events {
            let id = format!("p{i}");
            let poster = {
                let (client, hook) = (client.clone(), hook.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(rand_u64() % 50_000)).await;
                    post(&client, &hook, RUN, &id).await;
                })
            };
            let (seq, t) = poll(&reader, after, every).await?;
            poster.await?;
            after = seq;
            took.push(t);
        }
        pollers.push(took);
    }

    println!("| receive → the runner knows | events | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    row(
        "in-process: webhook listener, SQLite store, its feed",
        in_process,
    );
    row(
        "across processes: the service's event stream (SSE)",
        by_stream,
    );
    row(
        "across processes: a shared Postgres store (LISTEN/NOTIFY, then a read)",
        by_feed,
    );
    let mut pollers = pollers.into_iter();
    row(
        "the seed's way: poll the table every 100 ms",
        pollers.next().unwrap_or_default(),
    );
    row(
        "the seed's way: jittered Fibonacci back-off (1 s, 1 s, 2 s, …)",
        pollers.next().unwrap_or_default(),
    );

    // What of that is the service's own commit: its mean receive → committed time.
    let metrics = client
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (sum, count) = (
        value("roundtrip_listen_record_seconds_sum{channel=\"out\"}"),
        value("roundtrip_listen_record_seconds_count{channel=\"out\"}"),
    );
    println!();
    println!(
        "The service's own receive → committed (Postgres, `synchronous_commit` on), mean of \
         {count} observations: {:.2} ms.",
        sum / count * 1e3
    );

    running.stop().await;
    let _ = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    let _ = service.wait();
    reader.close().await?;
    let _ = std::fs::remove_dir_all(&dir);
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
    let schema = format!("bench_svc_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(bench(&base, &schema));
    rt.block_on(drop_schema(&base, &schema))?;
    result
}
