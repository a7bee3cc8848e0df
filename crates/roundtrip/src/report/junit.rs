//! JUnit XML: one testsuite per run, one testcase per scenario; a failed scenario's
//! failure text carries the evidence.

use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use roundtrip_core::run::{RunSummary, ScenarioStatus};

use super::text;

/// Renders runs (one per suite file) as JUnit XML: a testsuite per run, a testcase per
/// scenario.
pub fn render(summaries: &[RunSummary]) -> String {
    let mut report = Report::new("roundtrip");
    for summary in summaries {
        report.add_test_suite(test_suite(summary));
    }
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- failed to render JUnit XML: {e} -->"))
}

fn test_suite(summary: &RunSummary) -> TestSuite {
    let mut suite = TestSuite::new(summary.suite.clone());
    for scenario in &summary.scenarios {
        let status = match scenario.status {
            ScenarioStatus::Passed => TestCaseStatus::success(),
            ScenarioStatus::Skipped => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(text::headline(scenario));
                status
            }
            ScenarioStatus::Failed | ScenarioStatus::Error => {
                let kind = if scenario.status == ScenarioStatus::Failed {
                    NonSuccessKind::Failure
                } else {
                    NonSuccessKind::Error
                };
                let mut status = TestCaseStatus::non_success(kind);
                status.set_message(text::headline(scenario));
                status.set_type(text::failure_kinds(scenario).join(","));
                status.set_description(text::scenario_details(scenario));
                status
            }
        };
        let mut case = TestCase::new(scenario.name.clone(), status);
        case.set_classname(summary.suite.clone());
        case.set_time(Duration::from_nanos(scenario.duration_ns));
        suite.add_test_case(case);
    }
    if let Some(error) = &summary.harness_error {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(error.clone());
        status.set_description(summary.sut_log.join("\n"));
        let mut case = TestCase::new("harness", status);
        case.set_classname(summary.suite.clone());
        suite.add_test_case(case);
    }
    suite.add_property(("run_id", summary.run_id.as_str()));
    // What each listener recorded, its delivery guarantee, redeliveries and gaps: the
    // context a CI reader needs to judge a loss.
    let listeners = super::text::listener_lines(summary);
    if !listeners.is_empty() {
        suite.set_system_out(listeners);
    }
    let exited = super::text::sut_exit_lines(summary);
    if !exited.is_empty() {
        suite.set_system_err(exited);
    }
    suite
}

/// Writes the JUnit XML to `path`.
pub fn write(summaries: &[RunSummary], path: &Path) -> std::io::Result<()> {
    super::json::write_atomic(path, render(summaries).as_bytes())
}
