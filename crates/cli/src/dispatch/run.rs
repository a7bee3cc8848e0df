//! `roundtrip run`: load every suite first (a bad file runs nothing), then run them one
//! after the other, reporting live; write JUnit/JSON at the end; print the totals last.

use std::sync::Arc;

use roundtrip::engine::{self, RunOptions};
use roundtrip::report::{json, junit, text};
use roundtrip_core::run::RunSummary;
use roundtrip_core::suite::{self, LoadedSuite};
use tokio::sync::{mpsc, watch};

use super::print_error;
use crate::args::RunArgs;
use crate::display::{self, out};
use crate::exit;

pub async fn run(args: RunArgs) -> u8 {
    if let Err(code) = super::check_outputs(&args.output) {
        return code;
    }
    let mut loaded: Vec<LoadedSuite> = Vec::new();
    let mut invalid = false;
    for path in &args.suites {
        match suite::load(path) {
            Ok(s) => loaded.push(s),
            Err(e) => {
                eprint!("{e}");
                invalid = true;
            }
        }
    }
    if invalid {
        eprintln!("nothing was run: fix the suite file(s) above (`roundtrip check` validates)");
        out("0 passed, 0 failed");
        return exit::USAGE;
    }

    let store = match roundtrip::store::open(&args.store.store).await {
        Ok(s) => s,
        Err(e) => {
            print_error(&e);
            out("0 passed, 0 failed");
            return exit::HARNESS;
        }
    };

    // Ctrl-C (or SIGTERM, as CI cancellations and `timeout` send) stops the run cleanly:
    // scenarios end, SUT and listeners stop (removing what they created), the store
    // records what ran. A second signal hurries the stop (the SUT's process group is
    // killed at once) and the run is still recorded as interrupted; only a third exits
    // at once, leaving the run unfinished in the store.
    let (cancel_tx, cancel) = watch::channel(false);
    let (hurry_tx, hurry) = watch::channel(false);
    tokio::spawn(async move {
        if let Some(signal) = interrupted().await {
            eprintln!(
                "\ninterrupted by {signal}: stopping the run (again to stop faster, a third \
                 time to exit at once)"
            );
            cancel_tx.send_replace(true);
            if interrupted().await.is_some() {
                eprintln!("stopping faster: killing the system under test; the run is still recorded");
                hurry_tx.send_replace(true);
                if interrupted().await.is_some() {
                    eprintln!("exiting at once: the run stays unfinished in the store");
                    std::process::exit(130);
                }
            }
        }
    });

    let mut summaries: Vec<RunSummary> = Vec::new();
    let mut code = exit::OK;
    let mut not_run = 0usize;
    for suite in &loaded {
        if *cancel.borrow() {
            not_run += suite.suite.scenarios.len();
            continue;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let printer = tokio::spawn(display::consume(rx));
        let mut opts = RunOptions::new();
        opts.concurrency = args.concurrency as usize;
        opts.events = Some(tx);
        opts.cancel = cancel.clone();
        opts.hurry = hurry.clone();
        let result = engine::run_suite(suite, Arc::clone(&store), opts).await;
        let _ = printer.await;
        match result {
            Ok(summary) => {
                if (summary.failed() > 0 || summary.interrupted) && code == exit::OK {
                    code = exit::FAILED;
                }
                summaries.push(summary);
            }
            Err(e) => {
                print_error(&e);
                not_run += suite.suite.scenarios.len();
                code = code.max(u8::try_from(e.exit_code()).unwrap_or(exit::HARNESS));
            }
        }
    }
    if let Err(e) = store.close().await {
        print_error(&e);
        code = exit::HARNESS;
    }

    if let Some(path) = &args.output.junit
        && let Err(e) = junit::write(&summaries, path)
    {
        eprintln!(
            "error: failed to write the JUnit report {}: {e}",
            path.display()
        );
        code = exit::HARNESS;
    }
    if let Some(path) = &args.output.json
        && let Err(e) = json::write(&summaries, path)
    {
        eprintln!(
            "error: failed to write the JSON report {}: {e}",
            path.display()
        );
        code = exit::HARNESS;
    }
    let totals = text::totals(&summaries);
    if not_run > 0 {
        // Scenarios that never ran did not pass: count them as failed.
        let passed: usize = summaries.iter().map(RunSummary::passed).sum();
        let failed: usize = summaries.iter().map(RunSummary::failed).sum::<usize>() + not_run;
        out(&format!("{passed} passed, {failed} failed"));
    } else {
        out(&totals);
    }
    code
}

/// Waits for Ctrl-C or (on Unix) SIGTERM; `None` if signals cannot be watched.
async fn interrupted() -> Option<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.ok().map(|()| "Ctrl-C");
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.ok().map(|()| "Ctrl-C"),
            _ = term.recv() => Some("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok().map(|()| "Ctrl-C")
    }
}
