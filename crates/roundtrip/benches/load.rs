//! Load with full accounting through NATS on loopback, against the raw publish →
//! subscribe rate of the same client library (async-nats), in the same run.
//!
//! - **raw**: one async-nats client subscribes (with room for the whole flood), another
//!   publishes 200,000 messages of ~150 B as fast as it can (no flush between them); from
//!   the first publish to the subscriber's last message. Nothing is recorded or
//!   classified.
//! - **with accounting**: `engine::run_load` (what `roundtrip load` runs) of a scenario
//!   whose input and output are the same NATS subject, so NATS is the system under
//!   test: open-loop at rising rates for 10 s each, 16 streams, every event classified
//!   (delivered, lost, duplicate, reordered, late against a 1 s SLA), latency from the
//!   intended send time. A rate is sustained when nothing is lost or late and the sender
//!   kept up (p99 send lag under 50 ms); the bench stops at the first rate that is not.
//!
//! Run: `scripts/services.sh start`, then `cargo bench -p roundtrip --features nats
//! --bench load` (prints a markdown table). `LOAD_RATES=40000,45000` runs those rates
//! only (for a profiler: `perf record -F 999 -- target/release/deps/load-… --bench`).

#[path = "common/nats_loop.rs"]
mod nats_loop;

/// The allocator the `roundtrip` binary ships with, so the engine is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nats_loop::{URL, suite_file, unique};

use futures_util::StreamExt;
use roundtrip::core::latency::format_ns;
use roundtrip::core::load::Profile;
use roundtrip::engine::{LoadOptions, RunOptions, run_load};

const RAW_MESSAGES: usize = 200_000;
const RATES: &[u32] = &[
    10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 90_000, 100_000,
];

async fn raw() -> Result<f64, Box<dyn std::error::Error>> {
    let subject = unique("bench.raw");
    // Room for the whole flood in the subscriber, so the client drops nothing.
    let sub_client = async_nats::ConnectOptions::new()
        .subscription_capacity(RAW_MESSAGES * 2)
        .connect(URL)
        .await?;
    let pub_client = async_nats::connect(URL).await?;
    let mut sub = sub_client.subscribe(subject.clone()).await?;
    sub_client.flush().await?;
    let payload = bytes::Bytes::from(vec![b'x'; 150]);
    let counter = tokio::spawn(async move {
        let mut n = 0usize;
        let mut last = Instant::now();
        while n < RAW_MESSAGES {
            match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                Ok(Some(_)) => {
                    last = Instant::now();
                    n += 1;
                }
                _ => break,
            }
        }
        (n, last)
    });
    let start = Instant::now();
    for _ in 0..RAW_MESSAGES {
        pub_client.publish(subject.clone(), payload.clone()).await?;
    }
    pub_client.flush().await?;
    let (received, end) = counter.await?;
    let secs = end.duration_since(start).as_secs_f64();
    println!(
        "raw: {received} of {RAW_MESSAGES} received in {secs:.2}s{}",
        if received < RAW_MESSAGES {
            " (the server dropped messages: slow consumer)"
        } else {
            ""
        }
    );
    Ok(received as f64 / secs)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw_rate = raw().await?;
    let dir = tempfile::tempdir()?;
    let path = suite_file(dir.path(), "1s", 16);
    let loaded = roundtrip::core::suite::load(&path)?;
    let store = roundtrip::store::open("sqlite::memory:").await?;
    println!(
        "| offered rate | sent | delivered | lost | late | dup | reordered | latency p50 | p99 | max | send lag p99 | listener lag p99 | sustained |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let rates: Vec<u32> = match std::env::var("LOAD_RATES") {
        Ok(list) => list
            .split(',')
            .map(|r| {
                r.trim()
                    .parse()
                    .map_err(|_| format!("LOAD_RATES: `{r}` is not a rate"))
            })
            .collect::<Result<_, _>>()?,
        Err(_) => RATES.to_vec(),
    };
    let mut best = 0;
    for &rate in &rates {
        let opts = LoadOptions {
            scenario: "loop".into(),
            profile: Profile::parse(&format!("{rate}/s"), Duration::from_secs(10))?,
            interval: Duration::from_secs(1),
            drain: None,
            run: RunOptions::new(),
            progress: None,
            shared: None,
        };
        let summary = run_load(&loaded, Arc::clone(&store), opts).await?;
        let Some(load) = summary.load else {
            return Err("the run has no account".into());
        };
        let f = &load.flows[0];
        let c = &f.counts;
        let sent = load.send.counts.attempted;
        let sustained = f.lost == 0
            && c.late == 0
            && load.send.counts.failed == 0
            && load.send.lag.p99_ns < 50_000_000;
        println!(
            "| {rate}/s | {sent} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.delivered,
            f.lost,
            c.late,
            c.duplicates,
            c.reordered,
            format_ns(f.latency.p50_ns),
            format_ns(f.latency.p99_ns),
            format_ns(f.latency.max_ns),
            format_ns(load.send.lag.p99_ns),
            format_ns(f.listener_lag.p99_ns),
            if sustained { "yes" } else { "no" }
        );
        if !sustained {
            break;
        }
        best = rate;
    }
    println!();
    println!("raw async-nats publish → subscribe: {raw_rate:.0} msg/s");
    println!(
        "highest sustained rate with full accounting: {best}/s ({:.0} % of raw)",
        f64::from(best) * 100.0 / raw_rate
    );
    Ok(())
}
