//! Soak: the resident memory of a long load run with full accounting, at its start,
//! middle and end.
//!
//! `engine::run_load` (what `roundtrip load` runs) sends 10,000,000 events (by default)
//! through a NATS subject on loopback and back (NATS is the system under test), open loop
//! at a constant rate over 16 streams, every event classified against a 5 s SLA. At
//! every interval the bench reads its own resident set (`VmRSS` in `/proc/self/status`):
//! memory per stream is fixed and no per-event state outlives its window, so after
//! warm-up it should stay flat.
//!
//! Run: `scripts/services.sh start`, then `cargo bench -p roundtrip --features nats
//! --bench soak` (prints a markdown table). `SOAK_EVENTS` and `SOAK_RATE` (events per
//! second) change the length and the rate; 10,000,000 at 20,000/s take 8 min 20 s.

#[path = "common/nats_loop.rs"]
mod nats_loop;

/// The allocator the `roundtrip` binary ships with, so the engine is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use roundtrip::core::latency::format_ns;
use roundtrip::core::load::Profile;
use roundtrip::engine::{LoadEvent, LoadOptions, RunOptions, run_load};

/// Intervals before the first sample that counts as "start" (warm-up: the connections,
/// the windows filling, the allocator settling).
const WARM_UP: usize = 3;

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// This process's resident set, in KiB.
fn rss_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_owned())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events = env_u64("SOAK_EVENTS", 10_000_000)?;
    let rate = env_u64("SOAK_RATE", 20_000)?.max(1);
    let secs = events.div_ceil(rate);
    let dir = tempfile::tempdir()?;
    let path = nats_loop::suite_file(dir.path(), "5s", 16);
    let loaded = roundtrip::core::suite::load(&path)?;
    let store = roundtrip::store::open("sqlite::memory:").await?;
    let before = rss_kib()?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sampler = tokio::spawn(async move {
        // (seconds since the start, events sent so far, RSS in KiB)
        let mut samples: Vec<(f64, u64, u64)> = Vec::new();
        while let Some(event) = rx.recv().await {
            if let LoadEvent::Interval { point, totals } = event {
                let elapsed = (point.start_ns + point.length_ns) as f64 / 1e9;
                if let Ok(rss) = rss_kib() {
                    samples.push((elapsed, totals.send.attempted, rss));
                }
            }
        }
        samples
    });
    let opts = LoadOptions {
        scenario: "loop".into(),
        profile: Profile::parse(&format!("{rate}/s"), Duration::from_secs(secs))?,
        interval: Duration::from_secs(10),
        drain: None,
        run: RunOptions::new(),
        progress: Some(tx),
        shared: None,
    };
    let summary = run_load(&loaded, Arc::clone(&store), opts).await?;
    let samples = sampler.await?;
    let after = rss_kib()?;
    let Some(load) = summary.load else {
        return Err("the run has no account".into());
    };
    let f = &load.flows[0];
    let c = &f.counts;
    println!(
        "{} events at {rate}/s over {secs} s: sent {}, delivered {}, lost {}, late {}, \
         duplicates {}, reordered {}, unsettled {}; latency p50 {}, p99 {}, max {}; send lag p99 {}",
        events,
        load.send.counts.attempted,
        c.delivered,
        f.lost,
        c.late,
        c.duplicates,
        c.reordered,
        f.unsettled,
        format_ns(f.latency.p50_ns),
        format_ns(f.latency.p99_ns),
        format_ns(f.latency.max_ns),
        format_ns(load.send.lag.p99_ns),
    );
    if samples.len() <= WARM_UP {
        return Err(format!(
            "only {} intervals: run longer than {WARM_UP} intervals of 10 s",
            samples.len()
        )
        .into());
    }
    let counted = &samples[WARM_UP..];
    let start = counted[0];
    let middle = counted[counted.len() / 2];
    let end = counted[counted.len() - 1];
    let peak = counted.iter().map(|s| s.2).max().unwrap_or(0);
    let low = counted.iter().map(|s| s.2).min().unwrap_or(0);
    println!();
    println!("| resident memory | at | events sent | RSS |");
    println!("| --- | --- | --- | --- |");
    println!("| before the run | 0 s | 0 | {} |", mib(before));
    for (name, (at, sent, rss)) in [
        ("start (after warm-up)", start),
        ("middle", middle),
        ("end", end),
    ] {
        println!("| {name} | {at:.0} s | {sent} | {} |", mib(rss));
    }
    println!("| after the run | – | – | {} |", mib(after));
    println!();
    println!(
        "after warm-up: lowest {}, highest {}; end vs start {:+.1} %, highest vs start {:+.1} %",
        mib(low),
        mib(peak),
        (end.2 as f64 / start.2 as f64 - 1.0) * 100.0,
        (peak as f64 / start.2 as f64 - 1.0) * 100.0,
    );
    Ok(())
}
