//! Retention: runs older than the config's `retention` are deleted, on a store that
//! can (Postgres, through `store::postgres::gc`), every retention/24 and on
//! `POST /v1/retention`. The service's own run, as old as the service, is recorded again
//! after each pass.

use std::sync::Arc;
#[cfg(feature = "postgres")]
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Shared;
use crate::store::StoreError;

/// Deletes the runs older than the retention, on a store that supports it: how many
/// runs and observations went, or `None` for a store that keeps everything.
pub(crate) async fn trim(app: &Shared) -> Result<Option<(u64, u64)>, StoreError> {
    let url = app.store_url.as_str();
    if !crate::store::is_postgres_url(url) {
        return Ok(None);
    }
    #[cfg(feature = "postgres")]
    {
        use crate::store::postgres::{PostgresOptions, gc};
        let options =
            PostgresOptions::from_url(url).map_err(|message| StoreError::invalid(url, message))?;
        let deleted = gc(&options, app.retention).await;
        // The service's own run is as old as the service: deleted when the service
        // outlives its retention. Recorded again (as of now), so that a runner sharing
        // the store still finds it and knows the store is shared.
        if app.store.run(&app.home_run).await?.is_none() {
            let again = crate::store::RunRecord {
                started_at: crate::clock::wall_now(),
                ..app.home_record.clone()
            };
            app.store.create_run(&again).await?;
        }
        match &deleted {
            Ok(d) => {
                app.retention_runs.fetch_add(d.runs, Ordering::Relaxed);
                app.retention_observations
                    .fetch_add(d.observations, Ordering::Relaxed);
            }
            Err(_) => {
                app.retention_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        deleted.map(|d| Some((d.runs, d.observations)))
    }
    #[cfg(not(feature = "postgres"))]
    Ok(None)
}

/// Trims a Postgres store every retention/24 (at least a minute, at most an hour).
pub(crate) fn retention_task(app: Arc<Shared>) -> Option<JoinHandle<()>> {
    if !crate::store::is_postgres_url(&app.store_url) {
        return None;
    }
    let every = (app.retention / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            // Counted in the metrics; a failure is tried again at the next tick.
            let _ = trim(&app).await;
        }
    }))
}
