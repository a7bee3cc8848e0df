//! A writer process for the Postgres store's commit-order test
//! (`tests/it/store.rs`, `postgres_backend`): records COUNT observations into RUN_ID,
//! eight at a time, holding each transaction open for up to 5 ms (twice), and prints
//! each committed sequence number on a line of its own.
//!
//!     roundtrip-pg-writer URL RUN_ID WRITER COUNT

use std::sync::Arc;
use std::time::Duration;

use roundtrip::core::observation::{NewObservation, Payload};
use roundtrip::store::Store;
use roundtrip::store::postgres::{PostgresOptions, PostgresStore};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, run_id, writer, count] = args.as_slice() else {
        return Err("usage: roundtrip-pg-writer URL RUN_ID WRITER COUNT".into());
    };
    let count: u64 = count.parse()?;
    let options = PostgresOptions {
        hold_in_transaction: Some((Duration::ZERO, Duration::from_millis(5))),
        ..PostgresOptions::from_url(url)?
    };
    let store = Arc::new(PostgresStore::open_with(options).await?);
    let mut tasks = tokio::task::JoinSet::new();
    let lanes = 8;
    for lane in 0..lanes {
        let (store, run_id, writer) = (Arc::clone(&store), run_id.clone(), writer.clone());
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for n in (lane..count).step_by(lanes as usize) {
                let id = format!("{writer}-{n}");
                let observation = NewObservation {
                    run_id: run_id.clone(),
                    channel: "out".to_owned(),
                    correlation_id: Some(id.clone()),
                    payload: Payload::from_bytes(format!(r#"{{"id":"{id}"}}"#).into_bytes(), 1024),
                    headers: Vec::new(),
                    message_id: None,
                    key: None,
                    meta: Vec::new(),
                    received_at: 0,
                    received_mono: None,
                };
                seqs.push(store.record(observation).await?.seq);
            }
            Ok::<_, roundtrip::store::StoreError>(seqs)
        });
    }
    let mut out = String::new();
    for seqs in tasks.join_all().await {
        for seq in seqs? {
            out.push_str(&format!("{seq}\n"));
        }
    }
    store.close().await?;
    print!("{out}");
    Ok(())
}
