//! Verdicts and the evidence that explains them. Serializable: the store keeps them so a
//! run can be re-reported later, and the JSON report embeds them.

use serde::{Deserialize, Serialize};

use crate::observation::UnixNanos;

/// Why an expectation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// A matching observation arrived, but after the SLA.
    SlaExceeded,
    /// No matching observation arrived, not even within the grace period.
    Lost,
    /// More matching observations arrived than `count` allows.
    Duplicate,
    /// Fewer matching observations than `count`/`at_least` arrived in time (but some did).
    TooFew,
    /// Something matching arrived during an absence window.
    UnexpectedArrival,
    /// Observations with the same `ordered_by` key arrived out of send order.
    Reordered,
    /// The event could not be produced, so nothing could be expected of it.
    NotSent,
}

impl FailureKind {
    /// The stable, kebab-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::SlaExceeded => "sla-exceeded",
            FailureKind::Lost => "lost",
            FailureKind::Duplicate => "duplicate",
            FailureKind::TooFew => "too-few",
            FailureKind::UnexpectedArrival => "unexpected-arrival",
            FailureKind::Reordered => "reordered",
            FailureKind::NotSent => "not-sent",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A short description of one observation, for evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ObservationBrief {
    /// The store sequence number.
    pub seq: u64,
    /// The correlation id, if found.
    pub correlation_id: Option<String>,
    /// Wall-clock arrival.
    pub received_at: UnixNanos,
    /// Arrival relative to the cause's send, when the cause is known (ns).
    pub after_send_ns: Option<u64>,
    /// A printable excerpt of the payload.
    pub excerpt: String,
}

/// One field where an observation differs from what was expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldDiff {
    /// A JSONPath-like location, e.g. `$.item` or `$.lines[0].qty`.
    pub path: String,
    /// What the expectation wanted there (as text).
    pub expected: String,
    /// What the observation had there; `None` when the field is missing.
    pub actual: Option<String>,
}

/// The observation that came closest to matching, and how it differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NearMiss {
    /// The observation.
    pub observation: ObservationBrief,
    /// The differences, field by field.
    pub diffs: Vec<FieldDiff>,
}

/// What a failure report shows beside its message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evidence {
    /// The closest near-miss on the channel (timeouts and too-few).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub near_miss: Option<NearMiss>,
    /// How many observations on the channel reached this scenario before its verdict:
    /// those correlated with its events and the uncorrelated ones (evidence).
    pub channel_observations: u64,
    /// How many of them were correlated with this scenario's events.
    #[serde(default)]
    pub correlated_observations: u64,
    /// The last few observations on the channel for this run.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub last: Vec<ObservationBrief>,
    /// The matching observations involved: duplicates, unexpected or late arrivals,
    /// out-of-order ones.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub offending: Vec<ObservationBrief>,
}

/// The failure of one expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Failure {
    /// The failure kind.
    pub kind: FailureKind,
    /// A one-paragraph explanation that reads on its own.
    pub message: String,
    /// Supporting evidence.
    pub evidence: Evidence,
    /// Every event that failed, per kind, in report order (the kind above first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<KindTally>,
}

/// The events of one expectation that failed with one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KindTally {
    /// The failure kind.
    pub kind: FailureKind,
    /// How many events failed so (exact).
    pub count: u64,
    /// Their indices in send order (the first 10,000).
    pub events: Vec<u64>,
}

/// The outcome of one expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// Everything expected happened.
    Passed,
    /// It did not; see the failure.
    Failed(Box<Failure>),
}

/// The verdict on one expectation of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExpectationVerdict {
    /// The expectation's index in its scenario.
    pub index: usize,
    /// The channel watched.
    pub channel: String,
    /// A one-line description, e.g. `at least 1 matching on orders_out within 2s`.
    pub description: String,
    /// Passed or failed.
    pub outcome: Outcome,
    /// Latencies (send → arrival) of the matched observations that counted, in ns.
    pub latencies_ns: Vec<u64>,
    /// How many observations matched.
    pub matched: u64,
    /// Whether latencies come from wall clocks of different processes.
    pub wall_clock: bool,
}

impl ExpectationVerdict {
    /// True when the expectation passed.
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Passed)
    }
}
