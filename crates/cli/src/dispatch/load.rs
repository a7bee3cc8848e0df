//! `roundtrip load`: one scenario under load, a line per interval while it runs, the
//! account at the end, JUnit/JSON like a functional run.

use std::io::IsTerminal as _;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use roundtrip::engine::{self, LoadEvent, LoadOptions, RunOptions};
use roundtrip::report::{load as load_text, text};
use roundtrip_core::load::Profile;
use roundtrip_core::run::RunSummary;
use roundtrip_core::suite;
use tokio::sync::mpsc;

use super::print_error;
use crate::args::LoadArgs;
use crate::display::out;
use crate::exit;

pub async fn load(args: LoadArgs) -> u8 {
    if let Err(code) = super::check_outputs(&args.output) {
        return code;
    }
    // The longest a suite file may write, and an interval the live view can keep.
    let month = std::time::Duration::from_secs(30 * 24 * 3600);
    let bounds = [
        ("--for", args.duration, month),
        ("--drain", args.drain, month),
        ("--join-timeout", Some(args.join_timeout), month),
        (
            "--interval",
            Some(args.interval),
            std::time::Duration::from_secs(3600),
        ),
    ];
    for (flag, value, most) in bounds {
        if value.is_some_and(|v| v > most) {
            eprintln!(
                "error: {flag} is longer than {}, the most it may be",
                humantime::format_duration(most)
            );
            return exit::USAGE;
        }
    }
    if args.interval < std::time::Duration::from_millis(100) {
        eprintln!(
            "error: --interval is shorter than 100ms: give at least 100ms (the live view prints a line per interval)"
        );
        return exit::USAGE;
    }
    let profile = match (&args.stages, &args.rate, args.duration) {
        (Some(stages), _, _) => Profile::parse_stages(stages),
        (None, Some(rate), Some(duration)) => Profile::parse(rate, duration),
        _ => Err("give `--rate RATE --for DURATION`, or `--stages`".to_owned()),
    };
    let profile = match profile {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let shared = match (args.workers, args.worker_index, &args.run_id) {
        (Some(workers), Some(worker), Some(run_id)) => {
            let url = &args.store.store;
            if !roundtrip::store::is_postgres_url(url) && !url.starts_with("dynamodb://") {
                eprintln!(
                    "error: --workers shares the run through the store, and `{}` is not one \
                     every worker reaches: give --store postgres://… (or dynamodb://TABLE)",
                    roundtrip_core::escape::escape_text(&roundtrip_core::redact::url(url))
                );
                return exit::USAGE;
            }
            Some(engine::SharedLoad {
                run_id: run_id.clone(),
                workers,
                worker,
                join_timeout: args.join_timeout,
            })
        }
        _ => None,
    };
    let vars = match super::resolve_vars(&args.vars) {
        Ok(vars) => vars,
        Err(code) => return code,
    };
    let loaded = match suite::load_with(&args.suite, &vars) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            eprintln!("nothing was run: fix the suite file above (`roundtrip check` validates)");
            return exit::USAGE;
        }
    };
    let store = match roundtrip::store::open(&args.store.store).await {
        Ok(s) => s,
        Err(e) => return super::store_failed(&e),
    };
    let (cancel, hurry) = super::stop_on_signals();
    let (tx, rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(live(rx, args.quiet));
    let mut run = RunOptions::new();
    run.cancel = cancel;
    run.hurry = hurry;
    let opts = LoadOptions {
        scenario: args.scenario.clone(),
        profile,
        interval: args.interval,
        drain: args.drain,
        run,
        progress: Some(tx),
        shared,
    };
    let result = engine::run_load(&loaded, Arc::clone(&store), opts).await;
    let _ = printer.await;
    let mut code = match &result {
        Ok(summary) if summary.failed() > 0 || summary.interrupted => exit::FAILED,
        Ok(_) => exit::OK,
        Err(e) => {
            print_error(e);
            u8::try_from(e.exit_code()).unwrap_or(exit::HARNESS)
        }
    };
    if let Err(e) = store.close().await {
        print_error(&e);
        code = code.max(exit::HARNESS);
    }
    let summaries: Vec<RunSummary> = result.into_iter().collect();
    if let Some(summary) = summaries.first() {
        out(text::run_report(summary).trim_end());
    }
    if let Err(failed) = super::write_reports(&args.output, &summaries) {
        code = failed;
    }
    out(&text::totals(&summaries));
    code
}

/// The live view: a line when the schedule starts, one per interval, one when the drain
/// begins; on a terminal (stderr), a bar below them with the events sent of the
/// schedule's total and the state of the last interval.
async fn live(mut rx: mpsc::UnboundedReceiver<LoadEvent>, quiet: bool) {
    let mut bar: Option<ProgressBar> = None;
    let print = |bar: &Option<ProgressBar>, line: &str| match bar {
        Some(b) => b.suspend(|| out(line)),
        None => out(line),
    };
    while let Some(event) = rx.recv().await {
        if quiet {
            continue;
        }
        match event {
            LoadEvent::Started {
                run_id,
                profile,
                total,
                streams,
                window,
            } => {
                out(&format!(
                    "run {run_id}: {profile}, {total} events over {streams} stream(s) (window {window})"
                ));
                if std::io::stderr().is_terminal() {
                    let b = ProgressBar::new(total);
                    if let Ok(style) =
                        ProgressStyle::with_template("  {bar:30} {pos}/{len} sent {elapsed} {msg}")
                    {
                        b.set_style(style);
                    }
                    bar = Some(b);
                }
            }
            LoadEvent::Interval { point, totals } => {
                print(&bar, &load_text::interval_line(&point, &totals));
                if let Some(b) = &bar {
                    b.set_position(totals.send.attempted + totals.send.refused);
                    b.set_message(format!("in flight {}", totals.in_flight));
                }
            }
            LoadEvent::Joining { joined, workers } => print(
                &bar,
                &format!("waiting for the run's workers: {joined} of {workers} joined"),
            ),
            LoadEvent::Merged { run_id, passed } => print(
                &bar,
                &format!(
                    "every worker finished: run {run_id}'s merged account {} its SLAs \
                     (`roundtrip report {run_id}` shows it)",
                    if passed { "met" } else { "did not meet" }
                ),
            ),
            LoadEvent::Draining { in_flight, at_most } => {
                let at_most = roundtrip_core::latency::format_ns(
                    u64::try_from(at_most.as_nanos()).unwrap_or(u64::MAX),
                );
                print(
                    &bar,
                    &format!("draining: {in_flight} in flight, waiting at most {at_most}"),
                );
                if let Some(b) = &bar {
                    b.set_message(format!("draining, at most {at_most}"));
                }
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}
