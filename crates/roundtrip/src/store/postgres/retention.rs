//! Retention: whole runs older than a cutoff are deleted, with everything they recorded,
//! in batches (a few thousand rows per statement), so a large deletion never holds long
//! locks or one huge transaction. Sequence numbers are never handed out again: they
//! come from `observation_seq`, not from the rows that remain.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::rows::read_error;
use super::{PostgresOptions, connection, require_store};
use crate::store::StoreError;

/// Runs whose observations are deleted together.
const RUNS_PER_BATCH: i64 = 100;
/// Observations deleted per statement.
const ROWS_PER_BATCH: i64 = 10_000;

/// What [`gc`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Runs, with their sent events and results.
    pub runs: u64,
    /// Observations.
    pub observations: u64,
}

/// Deletes every run that started more than `older_than` ago, with everything it
/// recorded. What `roundtrip gc` and a listener service's retention run.
pub async fn gc(options: &PostgresOptions, older_than: Duration) -> Result<Deleted, StoreError> {
    let client = &mut connection(options).await?;
    require_store(client, options).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(older_than);
    let cutoff = i64::try_from(now.as_nanos()).unwrap_or(i64::MAX);
    let mut deleted = Deleted::default();
    loop {
        let runs: Vec<String> = client
            .query(
                "SELECT run_id FROM runs WHERE started_at < $1 ORDER BY started_at LIMIT $2",
                &[&cutoff, &RUNS_PER_BATCH],
            )
            .await
            .map_err(read_error("find old runs"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if runs.is_empty() {
            return Ok(deleted);
        }
        loop {
            let n = client
                .execute(
                    "DELETE FROM observations WHERE seq IN (
                         SELECT seq FROM observations WHERE run_id = ANY($1) LIMIT $2)",
                    &[&runs, &ROWS_PER_BATCH],
                )
                .await
                .map_err(read_error("delete old observations"))?;
            deleted.observations += n;
            if n < ROWS_PER_BATCH as u64 {
                break;
            }
        }
        for table in ["sent_events", "scenario_results", "load_parts"] {
            client
                .execute(
                    &format!("DELETE FROM {table} WHERE run_id = ANY($1)"),
                    &[&runs],
                )
                .await
                .map_err(read_error("delete old runs' records"))?;
        }
        deleted.runs += client
            .execute("DELETE FROM runs WHERE run_id = ANY($1)", &[&runs])
            .await
            .map_err(read_error("delete old runs"))?;
    }
}
