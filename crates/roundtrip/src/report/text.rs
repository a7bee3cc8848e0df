//! The human rendering of scenario results and their evidence. Plain text, no colour:
//! the terminal reporter adds colour around it when the output is a TTY.

use std::fmt::Write as _;

use roundtrip_core::escape::{escape, escape_lines, escape_text};
use roundtrip_core::latency::{LatencySummary, format_ns};
use roundtrip_core::run::{RunSummary, ScenarioResult, ScenarioStatus};
use roundtrip_core::verdict::{ExpectationVerdict, ObservationBrief, Outcome};

use crate::clock::format_wall;

/// The one-line headline of a scenario: what went wrong first, or how fast it passed.
pub fn headline(s: &ScenarioResult) -> String {
    match s.status {
        ScenarioStatus::Passed => {
            let all: Vec<u64> = s
                .expectations
                .iter()
                .flat_map(|v| v.latencies_ns.iter().copied())
                .collect();
            match LatencySummary::from_ns(&all) {
                Some(l) => format!("{} events, latency {l}", s.sent),
                None => format!("{} events", s.sent),
            }
        }
        ScenarioStatus::Error | ScenarioStatus::Skipped => s
            .error
            .as_deref()
            .map_or_else(|| "harness error".into(), escape_text),
        ScenarioStatus::Failed => s
            .expectations
            .iter()
            .find_map(|v| match &v.outcome {
                Outcome::Failed(f) => Some(format!("{}: {}", f.kind, escape(&f.message))),
                Outcome::Passed => None,
            })
            // A load run's scenario fails on its aggregate SLAs, which its notes name.
            .or_else(|| s.notes.first().map(|n| escape(n).into_owned()))
            .unwrap_or_else(|| "failed".into()),
    }
}

/// The failure kinds of a scenario's failed expectations, e.g. `["lost"]`.
pub fn failure_kinds(s: &ScenarioResult) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = s
        .expectations
        .iter()
        .filter_map(|v| match &v.outcome {
            Outcome::Failed(f) => Some(f.kind.as_str()),
            Outcome::Passed => None,
        })
        .collect();
    if s.status == ScenarioStatus::Error {
        kinds.push("error");
    }
    kinds.dedup();
    kinds
}

/// Every expectation of a scenario with its verdict and, for failures, the evidence.
pub fn scenario_details(s: &ScenarioResult) -> String {
    let mut out = String::new();
    if let Some(error) = &s.error {
        let _ = writeln!(out, "error: {}", escape(error));
    }
    for note in &s.notes {
        let _ = writeln!(out, "note: {}", escape(note));
    }
    for v in &s.expectations {
        out.push_str(&expectation(v));
    }
    out
}

/// One expectation's verdict with evidence, indented for nesting under a scenario.
pub fn expectation(v: &ExpectationVerdict) -> String {
    let mut out = String::new();
    let latency = LatencySummary::from_ns(&v.latencies_ns)
        .map(|l| format!(" ({l}{})", if v.wall_clock { ", wall clock" } else { "" }))
        .unwrap_or_default();
    match &v.outcome {
        Outcome::Passed => {
            let _ = writeln!(out, "  ✓ {}{latency}", v.description);
        }
        Outcome::Failed(f) => {
            let _ = writeln!(out, "  ✗ {} [{}]", v.description, f.kind);
            for line in escape_lines(&f.message).lines() {
                let _ = writeln!(out, "      {line}");
            }
            let e = &f.evidence;
            if let Some(near) = &e.near_miss {
                let _ = writeln!(out, "      closest near-miss: {}", brief(&near.observation));
                for d in &near.diffs {
                    let actual = d.actual.as_deref().map_or("(missing)".into(), escape);
                    let _ = writeln!(
                        out,
                        "        {}: expected {}, got {}",
                        escape(&d.path),
                        escape(&d.expected),
                        actual
                    );
                }
            }
            if !e.offending.is_empty() {
                let _ = writeln!(out, "      involved:");
                for o in &e.offending {
                    let _ = writeln!(out, "        {}", brief(o));
                }
            }
            let _ = writeln!(
                out,
                "      the channel saw {} observation(s) for this scenario before the verdict \
                 ({} correlated with its events, {} uncorrelated)",
                e.channel_observations,
                e.correlated_observations,
                e.channel_observations
                    .saturating_sub(e.correlated_observations)
            );
            if !e.last.is_empty() {
                let _ = writeln!(out, "      last on the channel:");
                for o in &e.last {
                    let _ = writeln!(out, "        {}", brief(o));
                }
            }
        }
    }
    out
}

/// One observation on one line: sequence, arrival, offset from its send, correlation,
/// payload excerpt.
pub fn brief(o: &ObservationBrief) -> String {
    let after = o
        .after_send_ns
        .map(|ns| format!(" (+{} after send)", format_ns(ns)))
        .unwrap_or_default();
    let corr = o
        .correlation_id
        .as_deref()
        .map(|c| format!(" corr={}", escape(c)))
        .unwrap_or_else(|| " uncorrelated".into());
    format!(
        "#{} at {}{after}{corr}: {}",
        o.seq,
        format_wall(o.received_at),
        escape(&o.excerpt)
    )
}

/// The final line every run prints: `N passed, N failed`, with `, N skipped` when
/// `--fail-fast` skipped any.
pub fn totals(summaries: &[RunSummary]) -> String {
    let passed: usize = summaries.iter().map(RunSummary::passed).sum();
    let failed: usize = summaries.iter().map(RunSummary::failed).sum();
    let skipped: usize = summaries.iter().map(RunSummary::skipped).sum();
    totals_line(passed, failed, skipped)
}

/// `N passed, N failed`, with `, N skipped` when any were.
pub fn totals_line(passed: usize, failed: usize, skipped: usize) -> String {
    if skipped > 0 {
        format!("{passed} passed, {failed} failed, {skipped} skipped")
    } else {
        format!("{passed} passed, {failed} failed")
    }
}

/// A full plain-text report of a run (what `roundtrip report` prints).
pub fn run_report(summary: &RunSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} · suite {} ({}) · started {}",
        summary.run_id,
        escape(&summary.suite),
        escape(&summary.suite_path),
        format_wall(summary.started_at)
    );
    for s in &summary.scenarios {
        let mark = match s.status {
            ScenarioStatus::Passed => "PASS",
            ScenarioStatus::Failed => "FAIL",
            ScenarioStatus::Error => "ERROR",
            ScenarioStatus::Skipped => "SKIP",
        };
        let _ = writeln!(
            out,
            "{mark:5} {} [{}] {}",
            escape(&s.name),
            format_ns(s.duration_ns),
            headline(s)
        );
        if matches!(s.status, ScenarioStatus::Failed | ScenarioStatus::Error) {
            out.push_str(&scenario_details(s));
        }
    }
    if let Some(load) = &summary.load {
        out.push_str(&super::load::load_report(load));
    }
    out.push_str(&listener_lines(summary));
    out.push_str(&sut_exit_lines(summary));
    if summary.interrupted {
        let _ = writeln!(out, "the run was interrupted");
    }
    if let Some(e) = &summary.harness_error {
        let _ = writeln!(out, "harness error: {}", escape_lines(e));
    }
    out
}

/// When the SUT exited on its own during the run: how, and its last output lines
/// (escaped). Empty otherwise.
pub fn sut_exit_lines(summary: &RunSummary) -> String {
    let Some(how) = &summary.sut_exited else {
        return String::new();
    };
    let mut out = format!(
        "the system under test exited during the run ({}); its last output:\n",
        escape(how)
    );
    let tail = &summary.sut_log[summary.sut_log.len().saturating_sub(10)..];
    if tail.is_empty() {
        out.push_str("  (nothing)\n");
    }
    for line in tail {
        let _ = writeln!(out, "  {}", escape(line));
    }
    out
}

/// One line per listener (delivery guarantee, counts), with its redeliveries and gaps
/// indented below it. Shared by the text and JUnit reports.
pub fn listener_lines(summary: &RunSummary) -> String {
    let mut out = String::new();
    for l in &summary.listeners {
        let _ = writeln!(
            out,
            "listener {} ({}, {}{}): {} recorded, {} faults",
            l.channel,
            l.transport,
            l.delivery,
            if l.polling { ", polling" } else { "" },
            l.recorded,
            l.faults
        );
        if l.redelivered > 0 {
            let _ = writeln!(
                out,
                "  {} redeliveries recorded (counted as duplicates)",
                l.redelivered
            );
        }
        for gap in &l.gaps {
            let _ = writeln!(out, "  gap: {}", escape(gap));
        }
    }
    out
}
