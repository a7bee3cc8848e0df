//! The JSON report: the [`RunSummary`] itself, versioned by `format_version`, plus
//! latency summaries per expectation. Documented in `docs/report-format.md`.

use std::path::Path;

use roundtrip_core::latency::LatencySummary;
use roundtrip_core::run::RunSummary;
use serde_json::{Value, json};

/// The JSON report of one or more runs (one per suite file):
/// `{ "format_version", "passed", "failed", "runs": [RunSummary + latency, …] }`.
pub fn render(summaries: &[RunSummary]) -> Value {
    let runs: Vec<Value> = summaries.iter().map(render_run).collect();
    let passed: usize = summaries.iter().map(RunSummary::passed).sum();
    let failed: usize = summaries.iter().map(RunSummary::failed).sum();
    json!({
        "format_version": roundtrip_core::run::REPORT_FORMAT_VERSION,
        "passed": passed,
        "failed": failed,
        "runs": runs,
    })
}

fn render_run(summary: &RunSummary) -> Value {
    let mut value = serde_json::to_value(summary).unwrap_or(Value::Null);
    // Add latency summaries beside the raw samples, so consumers need no statistics.
    if let Some(scenarios) = value.get_mut("scenarios").and_then(Value::as_array_mut) {
        for (scenario, result) in scenarios.iter_mut().zip(&summary.scenarios) {
            let Some(exps) = scenario
                .get_mut("expectations")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for (exp, verdict) in exps.iter_mut().zip(&result.expectations) {
                if let Some(obj) = exp.as_object_mut() {
                    let latency = LatencySummary::from_ns(&verdict.latencies_ns);
                    obj.insert("latency".into(), json!(latency));
                }
            }
        }
    }
    if let Some(obj) = value.as_object_mut() {
        obj.insert("passed".into(), json!(summary.passed()));
        obj.insert("failed".into(), json!(summary.failed()));
    }
    value
}

/// Writes the JSON report to `path` (pretty-printed).
pub fn write(summaries: &[RunSummary], path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&render(summaries)).map_err(std::io::Error::other)?;
    write_atomic(path, text.as_bytes())
}

/// Writes a file atomically (temporary file in the same directory, then rename), so a
/// reader never sees half a report.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
