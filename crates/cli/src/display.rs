//! The terminal reporter: consumes the engine's run events and prints a line per
//! scenario (with evidence for failures) on stdout, and a progress bar on stderr when
//! stderr is a terminal. Colour only on a terminal and only without `NO_COLOR`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use roundtrip::engine::RunEvent;
use roundtrip::report::text;
use roundtrip_core::latency::format_ns;
use roundtrip_core::run::ScenarioStatus;
use tokio::sync::mpsc;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints a line on stdout; a closed pipe (`roundtrip run … | head`) silences further
/// output instead of failing the run.
pub fn out(line: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Whether stdout gets colour.
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// Prints run events until the stream ends. `quiet`: only failures, errors and what
/// went wrong with listeners.
pub async fn consume(mut events: mpsc::UnboundedReceiver<RunEvent>, quiet: bool) {
    let mut bar: Option<ProgressBar> = None;
    let print = |bar: &Option<ProgressBar>, line: &str| match bar {
        Some(b) => b.suspend(|| out(line)),
        None => out(line),
    };
    while let Some(event) = events.recv().await {
        match event {
            RunEvent::RunStarted {
                run_id,
                suite,
                scenarios,
                ..
            } => {
                if !quiet {
                    out(&format!(
                        "{} {} · run {run_id} · {scenarios} scenario(s)",
                        paint("1", "▶"),
                        roundtrip_core::escape::escape(&suite)
                    ));
                }
                if !quiet && std::io::stderr().is_terminal() {
                    let b = ProgressBar::new(scenarios as u64);
                    if let Ok(style) =
                        ProgressStyle::with_template("  {bar:30} {pos}/{len} scenarios {elapsed}")
                    {
                        b.set_style(style);
                    }
                    bar = Some(b);
                }
            }
            RunEvent::ListenerReady { .. } | RunEvent::SutReady { .. } if quiet => {}
            RunEvent::ListenerReady {
                channel,
                transport,
                endpoint,
            } => print(
                &bar,
                &format!("  listening on {channel} ({transport}) at {endpoint}"),
            ),
            RunEvent::SutReady {
                pid,
                ready_after_ns,
            } => print(
                &bar,
                &format!(
                    "  system under test ready (pid {pid}) after {}",
                    format_ns(ready_after_ns)
                ),
            ),
            RunEvent::ScenarioStarted { .. } => {}
            RunEvent::ScenarioFinished(result)
                if quiet
                    && matches!(
                        result.status,
                        ScenarioStatus::Passed | ScenarioStatus::Skipped
                    ) =>
            {
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
            RunEvent::ScenarioFinished(result) => {
                let mark = match result.status {
                    ScenarioStatus::Passed => paint("32", "PASS "),
                    ScenarioStatus::Failed => paint("31", "FAIL "),
                    ScenarioStatus::Error => paint("35", "ERROR"),
                    ScenarioStatus::Skipped => paint("33", "SKIP "),
                };
                let mut line = format!(
                    "{mark} {} [{}] {}",
                    roundtrip_core::escape::escape(&result.name),
                    format_ns(result.duration_ns),
                    text::headline(&result)
                );
                if matches!(
                    result.status,
                    ScenarioStatus::Failed | ScenarioStatus::Error
                ) {
                    line.push('\n');
                    line.push_str(text::scenario_details(&result).trim_end());
                }
                print(&bar, &line);
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
            RunEvent::RunFinished(summary) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                for l in &summary.listeners {
                    if l.faults > 0 {
                        out(&format!(
                            "  listener {} ({}) rejected or could not record {} message(s)",
                            l.channel, l.transport, l.faults
                        ));
                    }
                }
                // Scenarios print as they finish; what did not pass is repeated here in
                // file order, as `roundtrip report` shows it.
                let not_passed: Vec<_> = summary
                    .scenarios
                    .iter()
                    .filter(|s| matches!(s.status, ScenarioStatus::Failed | ScenarioStatus::Error))
                    .collect();
                if !not_passed.is_empty() && summary.scenarios.len() > 1 {
                    out("  did not pass, in file order:");
                    for s in not_passed {
                        let mark = if s.status == ScenarioStatus::Failed {
                            "FAIL "
                        } else {
                            "ERROR"
                        };
                        out(&format!(
                            "    {mark} {}",
                            roundtrip_core::escape::escape(&s.name)
                        ));
                    }
                }
                let exit = text::sut_exit_lines(&summary);
                if !exit.is_empty() {
                    out(&format!("  {}", exit.trim_end().replace('\n', "\n  ")));
                }
                if summary.interrupted {
                    out("  the run was interrupted (Ctrl-C); unfinished scenarios are errors");
                }
            }
        }
    }
}
