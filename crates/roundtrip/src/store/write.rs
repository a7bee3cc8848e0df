//! What a backend's writer is asked to write besides observations, shared by the
//! backends that group-commit through one writer (SQLite, Postgres); each applies it in
//! its own SQL.

use roundtrip_core::observation::SentEvent;
use roundtrip_core::run::{RunStatus, RunSummary, ScenarioResult};

use super::{LoadPart, RunRecord, StoreError};

/// A write other than an observation, as queued for a writer.
#[derive(Debug)]
pub(crate) enum WriteOp {
    /// [`Store::create_run`](super::Store::create_run).
    CreateRun(RunRecord),
    /// [`Store::join_run`](super::Store::join_run).
    JoinRun(RunRecord),
    /// [`Store::record_load_part`](super::Store::record_load_part).
    LoadPart { run_id: String, part: LoadPart },
    /// [`Store::record_sent`](super::Store::record_sent).
    Sent(SentEvent),
    /// [`Store::record_scenario`](super::Store::record_scenario).
    Scenario {
        run_id: String,
        name: String,
        json: String,
    },
    /// [`Store::finish_run`](super::Store::finish_run).
    Finish {
        run_id: String,
        finished_at: i64,
        status: RunStatus,
        json: String,
    },
}

impl WriteOp {
    /// A scenario's result, encoded.
    pub(crate) fn scenario(run_id: &str, result: &ScenarioResult) -> Result<WriteOp, StoreError> {
        Ok(WriteOp::Scenario {
            run_id: run_id.to_owned(),
            name: result.name.clone(),
            json: to_json(result, "encode a scenario result")?,
        })
    }

    /// A run's end with its summary, encoded.
    pub(crate) fn finish(summary: &RunSummary, status: RunStatus) -> Result<WriteOp, StoreError> {
        Ok(WriteOp::Finish {
            run_id: summary.run_id.clone(),
            finished_at: summary.finished_at,
            status,
            json: to_json(summary, "encode the run summary")?,
        })
    }

    /// The run the write belongs to.
    #[cfg(feature = "postgres")]
    pub(crate) fn run_id(&self) -> &str {
        match self {
            WriteOp::CreateRun(r) | WriteOp::JoinRun(r) => &r.run_id,
            WriteOp::LoadPart { run_id, .. } => run_id,
            WriteOp::Sent(e) => &e.run_id,
            WriteOp::Scenario { run_id, .. } | WriteOp::Finish { run_id, .. } => run_id,
        }
    }
}

/// A JSON document as stored.
pub(crate) fn to_json<T: serde::Serialize>(
    value: &T,
    operation: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Io {
        operation,
        source: Box::new(e),
    })
}
