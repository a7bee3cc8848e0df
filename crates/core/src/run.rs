//! The results of a run, as stored and reported. Serializable and versioned: the JSON
//! report and `roundtrip report` re-render these from the store alone.

use serde::{Deserialize, Serialize};

use crate::observation::UnixNanos;
use crate::verdict::ExpectationVerdict;

/// Where a run stands, as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Under way (or its process died: see the run's owner).
    Running,
    /// Every scenario passed.
    Passed,
    /// A scenario did not pass.
    Failed,
    /// Stopped early (Ctrl-C).
    Interrupted,
    /// The run could not be carried out (a harness error).
    Error,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Passed,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Error,
    ];

    /// The status as the store and `roundtrip runs` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Error => "error",
        }
    }

    /// The status written `text`, if it is one.
    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The version of the JSON report format (`roundtrip run --json`).
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// The status of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioStatus {
    /// Every expectation passed.
    Passed,
    /// At least one expectation failed.
    Failed,
    /// The harness could not evaluate it (a send failed at the transport, the run was
    /// interrupted, infrastructure broke).
    Error,
    /// Not run: `--fail-fast` stopped the run after another scenario failed.
    Skipped,
}

/// The result of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Passed, failed or error.
    pub status: ScenarioStatus,
    /// Events sent (attempted).
    pub sent: u64,
    /// Sends the transport refused, with the first error.
    pub send_errors: u64,
    /// The first send error, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// One verdict per expectation, in suite order.
    pub expectations: Vec<ExpectationVerdict>,
    /// Wall time from the first send to the last verdict (ns).
    pub duration_ns: u64,
    /// What the harness noticed about how the scenario ran, e.g. sends the input was
    /// slow to accept (they spend the SLA, which starts when a send begins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What one listener did during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListenerSummary {
    /// The channel.
    pub channel: String,
    /// The transport name.
    pub transport: String,
    /// Observations committed.
    pub recorded: u64,
    /// Messages it could not record or had to reject (bad method/path, store error).
    pub faults: u64,
    /// `at-least-once` or `at-most-once` (what the transport can promise).
    pub delivery: String,
    /// Whether this listener polls (object stores, tables) rather than being pushed to.
    pub polling: bool,
    /// Deliveries the broker marked as redeliveries (recorded, and so counted as
    /// duplicates by the expectations that match them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redelivered: u64,
    /// Times the listener was not subscribed or may have missed messages (a lost
    /// connection, a slow-consumer drop), each with when and how long.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunSummary {
    /// The report format version.
    pub format_version: u32,
    /// The run id.
    pub run_id: String,
    /// The suite's name.
    pub suite: String,
    /// The suite file path, as given.
    pub suite_path: String,
    /// Wall-clock start.
    pub started_at: UnixNanos,
    /// Wall-clock end.
    pub finished_at: UnixNanos,
    /// True when the run was stopped early (Ctrl-C); unfinished scenarios are errors.
    pub interrupted: bool,
    /// Scenario results, in suite order.
    pub scenarios: Vec<ScenarioResult>,
    /// Listener summaries.
    pub listeners: Vec<ListenerSummary>,
    /// The last lines of the SUT's output, when roundtrip started it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub sut_log: Vec<String>,
    /// How the SUT ended when it exited on its own before the run stopped it (it
    /// crashed, or quit), e.g. `exit status: 1`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sut_exited: Option<String>,
    /// A harness error that ended the run (exit code 3), if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub harness_error: Option<String>,
    /// A load run's account (`roundtrip load`): its scenario is the run's one scenario.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub load: Option<Box<crate::load::LoadReport>>,
}

impl RunSummary {
    /// Scenarios that passed.
    pub fn passed(&self) -> usize {
        self.count(ScenarioStatus::Passed)
    }

    /// Scenarios that failed or errored.
    pub fn failed(&self) -> usize {
        self.count(ScenarioStatus::Failed) + self.count(ScenarioStatus::Error)
    }

    /// The run's status, as its summary has it: an error if the harness failed, else
    /// interrupted, else failed if a scenario did not pass, else passed.
    pub fn status(&self) -> RunStatus {
        if self.harness_error.is_some() {
            RunStatus::Error
        } else if self.interrupted {
            RunStatus::Interrupted
        } else if self.failed() > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        }
    }

    /// Scenarios not run (`--fail-fast`).
    pub fn skipped(&self) -> usize {
        self.count(ScenarioStatus::Skipped)
    }

    fn count(&self, s: ScenarioStatus) -> usize {
        self.scenarios.iter().filter(|r| r.status == s).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_statuses_read_as_they_are_written() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(RunStatus::parse("finished"), None);
    }
}
