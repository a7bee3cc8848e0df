//! `roundtrip run`: load every suite first (a bad file runs nothing), then run them one
//! after the other, reporting live; write JUnit/JSON at the end; print the totals last.

use std::sync::Arc;

use roundtrip::engine::{self, RunOptions};
use roundtrip::report::text;
use roundtrip_core::run::RunSummary;
use roundtrip_core::suite::{self, LoadedSuite};
use tokio::sync::mpsc;

use super::print_error;
use crate::args::RunArgs;
use crate::display::{self, out};
use crate::exit;

pub async fn run(args: RunArgs) -> u8 {
    if let Err(code) = super::check_outputs(&args.output) {
        return code;
    }
    let vars = match super::resolve_vars(&args.vars) {
        Ok(vars) => vars,
        Err(code) => {
            out("0 passed, 0 failed");
            return code;
        }
    };
    let mut loaded: Vec<LoadedSuite> = Vec::new();
    let mut invalid = false;
    for path in &args.suites {
        match suite::load_with(path, &vars) {
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
    if !args.filter.is_empty() {
        for s in &mut loaded {
            s.suite
                .scenarios
                .retain(|sc| super::selected(&sc.name, &args.filter));
        }
        loaded.retain(|s| !s.suite.scenarios.is_empty());
        if loaded.is_empty() {
            eprintln!(
                "error: no scenario matches --filter {}; `roundtrip run --list SUITE` lists them",
                args.filter
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            out("0 passed, 0 failed");
            return exit::USAGE;
        }
    }
    if args.list {
        for s in &loaded {
            out(&format!(
                "{} ({}): {} scenario(s)",
                s.path.display(),
                roundtrip_core::escape::escape(&s.suite.name),
                s.suite.scenarios.len()
            ));
            for sc in &s.suite.scenarios {
                out(&format!("  {}", roundtrip_core::escape::escape(&sc.name)));
            }
        }
        return exit::OK;
    }

    // The listener service: `--remote`, else ROUNDTRIP_REMOTE from the environment or an
    // `--env-file` (a profile); its token (and the CA of an https:// service) likewise,
    // never from a flag.
    let remote = args
        .remote
        .clone()
        .or_else(|| vars.get("ROUNDTRIP_REMOTE"))
        .filter(|url| !url.trim().is_empty())
        .map(|url| roundtrip::remote::Remote {
            url,
            token: vars.get("ROUNDTRIP_REMOTE_TOKEN").filter(|t| !t.is_empty()),
            ca: vars
                .get("ROUNDTRIP_REMOTE_CA")
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
        });

    let store = match roundtrip::store::open(&args.store.store).await {
        Ok(s) => s,
        Err(e) => {
            let code = super::store_failed(&e);
            out("0 passed, 0 failed");
            return code;
        }
    };

    let (cancel, hurry) = super::stop_on_signals();

    let mut summaries: Vec<RunSummary> = Vec::new();
    let mut code = exit::OK;
    let mut not_run = 0usize;
    let mut skipped = 0usize;
    for suite in &loaded {
        if *cancel.borrow() {
            not_run += suite.suite.scenarios.len();
            continue;
        }
        if args.fail_fast && code != exit::OK {
            if !args.quiet {
                out(&format!(
                    "SKIP  {}: --fail-fast, after a failure",
                    suite.path.display()
                ));
            }
            skipped += suite.suite.scenarios.len();
            continue;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let printer = tokio::spawn(display::consume(rx, args.quiet));
        let mut opts = RunOptions::new();
        opts.concurrency = args.concurrency as usize;
        opts.events = Some(tx);
        opts.cancel = cancel.clone();
        opts.hurry = hurry.clone();
        opts.fail_fast = args.fail_fast;
        opts.remote = remote.clone();
        let result = engine::run_suite(suite, Arc::clone(&store), opts).await;
        let _ = printer.await;
        match result {
            Ok(summary) => {
                if (summary.failed() > 0 || summary.interrupted) && code == exit::OK {
                    code = exit::FAILED;
                }
                summaries.push(summary);
            }
            Err(e) if e.exit_code() == i32::from(exit::USAGE) => {
                // A plan error: nothing of this suite ran.
                print_error(&e);
                eprintln!(
                    "nothing was run from {}: the suite could not be planned",
                    suite.path.display()
                );
                code = code.max(exit::USAGE);
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

    if let Err(failed) = super::write_reports(&args.output, &summaries) {
        code = failed;
    }
    // Scenarios that could not run because of a harness error did not pass: they count
    // as failed. Those `--fail-fast` skipped are counted apart.
    let passed: usize = summaries.iter().map(RunSummary::passed).sum();
    let failed: usize = summaries.iter().map(RunSummary::failed).sum::<usize>() + not_run;
    let skipped: usize = summaries.iter().map(RunSummary::skipped).sum::<usize>() + skipped;
    out(&text::totals_line(passed, failed, skipped));
    code
}
