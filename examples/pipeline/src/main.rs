//! `pipeline`: an example asynchronous system under test for roundtrip.
//!
//! It is the generic asynchronous pattern: an ingest endpoint stores every event it
//! accepts and answers at once; a separate processing loop later transforms the stored
//! events and emits them to an output, and sends invalid ones to a dead-letter output.
//! Fault flags make it misbehave on purpose, reproducibly, so roundtrip's failure reports
//! can be shown on a real (if small) system.
//!
//! ```text
//!  POST /events ──▶ ingest ──▶ data dir ──▶ processing loop ──▶ --emit / --emit-dir
//!     202 ◀──────────┘   (one file per event)        └────────▶ --dead-letter / --dead-letter-dir
//! ```
//!
//! # Behaviour
//! - `POST /events` with a JSON object: stored durably in `--data-dir` (one file per event,
//!   written atomically, with the propagated headers), answered `202 {"accepted": "<id>"}`.
//!   Not JSON, or not an object: `400`, nothing stored. `GET /health`: `200`. Other paths
//!   `404`, other methods `405`. See [`ingest`] and [`storage`].
//! - The processing loop ([`process`]) takes events in arrival order, waits for each one's
//!   due time (accepted + `--delay-ms` + jitter; events wait concurrently), then:
//!   - a valid event has every string value uppercased (except the top-level `id` and the
//!     `--keep-case` fields) and gets `"status": "processed"` and `"processed_at"` (RFC
//!     3339 UTC); it goes to the output;
//!   - an invalid event (`"valid": false`, a negative number `qty`, or `"poison": true`)
//!     goes to the dead-letter output as the original plus `"error": "<reason>"`.
//!
//!   See [`transform`]. The event is deleted from storage once emitted; events left in
//!   storage when the pipeline stops are processed on the next start with the same
//!   `--data-dir`.
//! - Outputs ([`emit`]): `--emit URL` POSTs JSON to a webhook (retried with exponential
//!   backoff on connection errors and `5xx`), `--emit-dir DIR` writes `<correlation
//!   id>.json` files atomically; likewise `--dead-letter URL` / `--dead-letter-dir DIR`.
//!   Exactly one of each pair is required.
//! - Propagation ([`propagate`]): `x-correlation-id`, `x-roundtrip-run` and `traceparent`
//!   travel from the request to HTTP outputs; `traceparent` keeps its trace id and gets a
//!   fresh span id.
//!
//! # Faults
//! All random choices come from `--seed N` (default 1), so the same seed and input order
//! give the same faults ([`faults`]):
//!
//! | flag | effect |
//! |---|---|
//! | `--delay-ms N` | every event is processed N ms after it was accepted |
//! | `--jitter-ms N` | plus a uniform random extra delay in [0, N] ms |
//! | `--drop-prob P` | the event is silently dropped |
//! | `--dup-prob P` | the event is emitted twice |
//! | `--misroute-prob P` | a valid event goes to the dead-letter output |
//! | `--reorder-window N` | up to N processed events are held and emitted shuffled |
//! | `--crash-after N` | after emitting N events the process exits with code 101 |
//!
//! # Running
//! ```text
//! pipeline --listen 127.0.0.1:0 --emit-dir out/processed --dead-letter-dir out/dead-letter
//! ```
//! Once it listens, it prints exactly one line to stdout, `pipeline listening on
//! http://<address>`, which a harness can wait for. It stops on SIGTERM or Ctrl-C (exit 0);
//! a usage or startup error, such as the port being taken, exits with 2; other failures
//! with 1.

mod chain;
mod cli;
mod emit;
mod faults;
mod ingest;
mod process;
mod propagate;
mod storage;
mod transform;

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::chain::error_chain;
use crate::cli::{Cli, Config};
use crate::emit::{Emitter, Output};
use crate::ingest::Ingest;
use crate::process::{Processor, Queued};
use crate::storage::{Storage, StorageError};

/// The exit code of a usage or startup error.
const EXIT_USAGE: u8 = 2;
/// The exit code of a failure while running.
const EXIT_FAILURE: u8 = 1;
/// The exit code of `--crash-after`.
const EXIT_CRASH: u8 = 101;
/// How long open connections may keep the server up after a stop signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How long tasks (such as a file write in progress) may take to finish at exit.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let Some(config) = Cli::parse().into_config() else {
        eprintln!("pipeline: one output and one dead-letter output are required");
        return ExitCode::from(EXIT_USAGE);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pipeline: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let (data_dir, temporary) = match &config.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "roundtrip-pipeline-{}",
                uuid::Uuid::new_v4().simple()
            )),
            true,
        ),
    };
    let result = runtime.block_on(serve(&config, &data_dir));
    // Stop every task before removing a temporary data directory under their feet.
    runtime.shutdown_timeout(SHUTDOWN_LIMIT);
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pipeline: failed to {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Why the pipeline could not start or stopped with an error.
#[derive(Debug)]
enum RunError {
    /// The storage directory is unusable.
    Storage(StorageError),
    /// An output directory could not be created.
    Output { output: Output, source: io::Error },
    /// The HTTP client could not be built.
    Client(reqwest::Error),
    /// The listen address could not be bound.
    Bind { addr: String, source: io::Error },
    /// The server failed.
    Serve(io::Error),
    /// The emitter task ended unexpectedly.
    Emitter(String),
    /// A broker output could not be connected.
    Broker(emit::EmitError),
}

impl RunError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Storage(_)
            | Self::Output { .. }
            | Self::Client(_)
            | Self::Bind { .. }
            | Self::Broker(_) => EXIT_USAGE,
            Self::Serve(_) | Self::Emitter(_) => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Storage(e) => e.fmt(f),
            Self::Output { output, .. } => write!(f, "create the output directory {output}"),
            Self::Client(_) => f.write_str("set up the HTTP client"),
            Self::Bind { addr, source } if source.kind() == io::ErrorKind::AddrInUse => {
                write!(f, "listen on {addr}: the address is already in use")
            }
            Self::Bind { addr, .. } => write!(f, "listen on {addr}"),
            Self::Serve(_) => f.write_str("serve HTTP"),
            Self::Emitter(why) => write!(f, "keep emitting: {why}"),
            Self::Broker(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Storage(e) => e.source(),
            Self::Output { source, .. } | Self::Bind { source, .. } | Self::Serve(source) => {
                Some(source)
            }
            Self::Client(e) => Some(e),
            Self::Broker(e) => e.source(),
            Self::Emitter(_) => None,
        }
    }
}

async fn serve(config: &Config, data_dir: &Path) -> Result<ExitCode, RunError> {
    // Bind first: a second pipeline on a taken port must not touch the storage.
    let bind_error = |source| RunError::Bind {
        addr: config.listen.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let (storage, leftover) = Storage::open(data_dir).map_err(RunError::Storage)?;
    eprintln!(
        "pipeline: storing accepted events in {}",
        data_dir.display()
    );
    for output in [&config.output, &config.dead_letter] {
        output.prepare().map_err(|source| RunError::Output {
            output: output.clone(),
            source,
        })?;
    }
    let emitter = Emitter::new(config.output.clone(), config.dead_letter.clone())
        .map_err(RunError::Client)?
        .with_audit(config.audit.clone())
        .connect()
        .await
        .map_err(RunError::Broker)?;
    let stop = stop_signal();

    let storage = Arc::new(storage);
    let (queue, inbox) = mpsc::unbounded_channel();
    let (jobs, job_inbox) = mpsc::unbounded_channel();
    if !leftover.is_empty() {
        eprintln!(
            "pipeline: resuming {} stored events from {}",
            leftover.len(),
            data_dir.display()
        );
    }
    for event in leftover {
        // The loop's inbox is open: its receiver is below.
        let _ = queue.send(Queued::recovered(event));
    }
    tokio::spawn(Processor::new(config.faults.clone(), config.transform(), jobs).run(inbox));
    let tally = Arc::new(std::sync::Mutex::new(faults::Tally::new(
        config.faults.order_key.clone(),
    )));
    let mut emitting = tokio::spawn(emitter.run(
        Arc::clone(&storage),
        job_inbox,
        config.faults.crash_after,
        Arc::clone(&tally),
    ));

    let app = ingest::router(Ingest { storage, queue });
    let graceful = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let drain_limit = {
        let mut stop = stop;
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        }
    };

    // The readiness line; a closed stdout is no reason to stop.
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "pipeline listening on http://{addr}").and_then(|()| stdout.flush());
    drop(stdout);

    let outcome = tokio::select! {
        served = server => {
            served.map_err(RunError::Serve)?;
            Ok(ExitCode::SUCCESS)
        }
        () = drain_limit => {
            eprintln!("pipeline: stopping with connections still open");
            Ok(ExitCode::SUCCESS)
        }
        emitted = &mut emitting => match emitted {
            Ok(Some(n)) => {
                eprintln!("pipeline: crashing on purpose after emitting {n} events (--crash-after {n})");
                Ok(ExitCode::from(EXIT_CRASH))
            }
            Ok(None) => Err(RunError::Emitter("the processing loop stopped".to_owned())),
            Err(e) => Err(RunError::Emitter(e.to_string())),
        },
    };
    if let Ok(tally) = tally.lock() {
        eprintln!("{}", tally.line());
    }
    outcome
}

/// A flag that turns true on SIGTERM or Ctrl-C (SIGINT). The handlers are installed
/// before this returns, so a signal right after the readiness line is not missed.
fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        tokio::spawn(async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            eprintln!("pipeline: stop signal received, shutting down");
            let _ = tx.send(true);
            // Keep the sender alive so the flag stays readable.
            std::future::pending::<()>().await;
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("pipeline: stop signal received, shutting down");
        let _ = tx.send(true);
        std::future::pending::<()>().await;
    });
    rx
}
