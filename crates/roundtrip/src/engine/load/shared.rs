//! A load run shared by several workers (`roundtrip load --workers N --worker-index I`,
//! the shape of a Kubernetes Indexed Job): no coordinator of roundtrip's own, the store
//! is where the workers meet.
//!
//! - **Joining.** Each worker opens the run by its id ([`Store::join_run`]: the first
//!   creates it), starts its SUT and listeners, records that it joined (a `joined` part:
//!   the scenario, schedule and worker count it was given, and its process), and waits
//!   until all `N` have joined before its schedule starts; workers given different
//!   scenarios, schedules or counts are refused.
//! - **Running.** Each worker sends and accounts for its own events (the worker index is
//!   in every correlation id: another worker's arrivals are counted as `others`, not
//!   accounted), on its own clock, and records each interval as it closes.
//! - **Finishing.** Each records its own summary (a `finished` part, its series left out:
//!   the interval parts hold it). Whichever worker finds all `N` finished merges them
//!   (counts summed, histograms added with HDR `add`, never percentiles; the series
//!   summed interval by interval from the recorded parts), evaluates the aggregate SLAs
//!   on the merged account and finishes the run with it. Two workers finishing at once
//!   can both find all finished; both then write the same merged summary.
//!
//! [`Store::join_run`]: crate::store::Store::join_run

use std::sync::Arc;
use std::time::Duration;

use roundtrip_core::escape::escape_text;
use roundtrip_core::load::{IntervalPoint, LoadReport, MAX_POINTS};
use roundtrip_core::model::{LoadSpec, Scenario};
use roundtrip_core::run::{ListenerSummary, RunSummary, ScenarioResult, ScenarioStatus};
use serde::{Deserialize, Serialize};

use super::{KEEP_IDS, LoadEvent, LoadOptions, emit, usage};
use crate::error::HarnessError;
use crate::store::{LoadPart, LoadPartKind, Store, StoreError};

/// How often a worker waiting for the others reads who has joined.
const JOIN_POLL: Duration = Duration::from_millis(100);
/// The longest a run id may be.
const MAX_RUN_ID: usize = 128;

/// One worker of a run that several share: see `docs/load.md` ("Several workers, one run").
#[derive(Debug, Clone)]
pub struct SharedLoad {
    /// The run's id, the same for every worker (letters, digits, `.`, `_`, `-`, `:`).
    pub run_id: String,
    /// How many workers share it (at least 1).
    pub workers: u16,
    /// This worker's index, below `workers`.
    pub worker: u16,
    /// The longest this worker waits for all the others to join.
    pub join_timeout: Duration,
}

impl SharedLoad {
    /// Checks what a user gave: a usage error names the flag to fix.
    pub(super) fn check(&self) -> Result<(), HarnessError> {
        if self.workers == 0 {
            return Err(usage("--workers is 0: give at least 1".into()));
        }
        if self.worker >= self.workers {
            return Err(usage(format!(
                "--worker-index {} is not below --workers {}: workers are numbered 0 to {}",
                self.worker,
                self.workers,
                self.workers - 1
            )));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
        if self.run_id.is_empty() || self.run_id.len() > MAX_RUN_ID || !self.run_id.chars().all(ok)
        {
            return Err(usage(format!(
                "--run-id `{}` is not a run id: give 1 to {MAX_RUN_ID} letters, digits, `.`, \
                 `_`, `-` or `:` (the same for every worker of the run, e.g. the job's name)",
                escape_text(&self.run_id)
            )));
        }
        Ok(())
    }
}

/// What a worker records when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Joined {
    workers: u16,
    scenario: String,
    profile: String,
    /// The interval, so that interval `i` of every worker is the same time.
    interval_ns: u64,
    /// A hash of the scenario as planned (its sends, expectations, streams and
    /// thresholds): workers given different suite files are told apart.
    definition: String,
    /// The process, so that two processes given the same index are found out.
    owner: String,
}

impl Joined {
    fn same_run(&self, other: &Joined) -> bool {
        (
            self.workers,
            &self.scenario,
            &self.profile,
            self.interval_ns,
            &self.definition,
        ) == (
            other.workers,
            &other.scenario,
            &other.profile,
            other.interval_ns,
            &other.definition,
        )
    }

    /// What differs, for the error.
    fn describe(&self) -> String {
        format!(
            "--workers {}, scenario `{}` (definition {}), schedule `{}`, --interval {}",
            self.workers,
            escape_text(&self.scenario),
            self.definition,
            escape_text(&self.profile),
            roundtrip_core::latency::format_ns(self.interval_ns)
        )
    }
}

/// The scenario's JSON hashed as a run id is for event ids (32 bits of FNV-1a,
/// `LoadId::tag_of`), in hex: enough to tell two definitions apart.
fn definition_of(scenario: &Scenario) -> String {
    let json = serde_json::to_string(scenario).unwrap_or_default();
    format!("{:08x}", roundtrip_core::load::LoadId::tag_of(&json))
}

/// Refuses `theirs` (worker `worker`'s join) unless it is of the same run as `mine`.
fn check_same(
    shared: &SharedLoad,
    worker: u16,
    theirs: &Joined,
    mine: &Joined,
) -> Result<(), HarnessError> {
    if theirs.same_run(mine) {
        return Ok(());
    }
    Err(usage(format!(
        "worker {worker} joined run `{}` with {}; this worker was given {}: start every \
         worker of a run with the same suite, scenario, schedule, --interval and --workers",
        shared.run_id,
        theirs.describe(),
        mine.describe()
    )))
}

fn decode<T: serde::de::DeserializeOwned>(part: &LoadPart) -> Result<T, HarnessError> {
    serde_json::from_str(&part.body).map_err(|e| HarnessError::Workers {
        message: format!(
            "worker {}'s {} part in the store cannot be read ({e}): was it written by another \
             version of roundtrip?",
            part.worker,
            part.kind.name()
        ),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    crate::store::write::to_json(value, "encode a load part")
}

/// Refuses a worker whose index has already joined the run: another process was given
/// the same index, or the run id was used before.
pub(super) async fn check_unused(
    store: &dyn Store,
    shared: &SharedLoad,
) -> Result<(), HarnessError> {
    let parts = store.load_parts(&shared.run_id).await?;
    if parts.iter().any(|p| p.worker == shared.worker) {
        return Err(usage(format!(
            "worker {} has already joined run `{}` (another process was given the same \
             --worker-index, or the run id was used before): give each worker its own index, \
             and each run a new --run-id",
            shared.worker, shared.run_id
        )));
    }
    Ok(())
}

/// Records that this worker joined and waits until all have. `Ok(false)`: cancelled
/// while waiting.
pub(super) async fn join(
    store: &dyn Store,
    shared: &SharedLoad,
    scenario: &Scenario,
    opts: &LoadOptions,
    interval_ns: u64,
) -> Result<bool, HarnessError> {
    let mine = Joined {
        workers: shared.workers,
        scenario: scenario.name.clone(),
        profile: opts.profile.to_string(),
        interval_ns,
        definition: definition_of(scenario),
        owner: crate::owner::current(),
    };
    // A worker that does not belong to the run leaves before it joins, so that the
    // workers already waiting are not disturbed.
    for part in store.load_parts(&shared.run_id).await? {
        if part.kind == LoadPartKind::Joined {
            check_same(shared, part.worker, &decode(&part)?, &mine)?;
        }
    }
    let part = LoadPart {
        worker: shared.worker,
        kind: LoadPartKind::Joined,
        body: encode(&mine)?,
    };
    store.record_load_part(&shared.run_id, &part).await?;
    let deadline = tokio::time::Instant::now() + shared.join_timeout;
    let mut cancel = opts.run.cancel.clone();
    let mut reported = 0;
    loop {
        let parts = store.load_parts(&shared.run_id).await?;
        let mut joined = vec![false; usize::from(shared.workers)];
        if let Some(gone) = parts.iter().find(|p| p.kind == LoadPartKind::Finished) {
            return Err(HarnessError::Workers {
                message: format!(
                    "worker {} of run `{}` finished before all workers joined (it failed, or \
                     timed out waiting): the run cannot complete; start all its workers again \
                     with a new --run-id",
                    gone.worker, shared.run_id
                ),
            });
        }
        for part in parts.iter().filter(|p| p.kind == LoadPartKind::Joined) {
            let theirs: Joined = decode(part)?;
            check_same(shared, part.worker, &theirs, &mine)?;
            if part.worker == shared.worker && theirs.owner != mine.owner {
                return Err(usage(format!(
                    "another process joined run `{}` as worker {} too: give each worker its \
                     own --worker-index",
                    shared.run_id, shared.worker
                )));
            }
            if let Some(slot) = joined.get_mut(usize::from(part.worker)) {
                *slot = true;
            }
        }
        let count = joined.iter().filter(|j| **j).count();
        if count != reported {
            reported = count;
            emit(
                opts,
                LoadEvent::Joining {
                    joined: count,
                    workers: shared.workers,
                },
            );
        }
        if count == joined.len() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<String> = joined
                .iter()
                .enumerate()
                .filter(|(_, j)| !**j)
                .map(|(i, _)| i.to_string())
                .take(10)
                .collect();
            return Err(HarnessError::Workers {
                message: format!(
                    "{count} of {} workers joined run `{}` within {}; still missing: worker {}{}. \
                     Start each with `--run-id {} --workers {} --worker-index I`, or give \
                     more time with --join-timeout",
                    shared.workers,
                    shared.run_id,
                    humantime::format_duration(shared.join_timeout),
                    missing.join(", "),
                    if joined.len() - count > missing.len() {
                        ", …"
                    } else {
                        ""
                    },
                    shared.run_id,
                    shared.workers
                ),
            });
        }
        tokio::select! {
            () = tokio::time::sleep(JOIN_POLL) => {}
            () = super::cancelled(&mut cancel) => return Ok(false),
        }
    }
}

/// Records this worker's summary and, if it is the last to finish, merges the run's:
/// `Some` is the merged summary it finished the run with.
pub(super) async fn finish(
    store: &Arc<dyn Store>,
    shared: &SharedLoad,
    summary: &RunSummary,
    spec: &LoadSpec,
) -> Result<Option<RunSummary>, HarnessError> {
    let mut part = summary.clone();
    if let Some(load) = part.load.as_mut() {
        // The interval parts hold it, interval by interval.
        load.series.clear();
    }
    let finished = LoadPart {
        worker: shared.worker,
        kind: LoadPartKind::Finished,
        body: encode(&part)?,
    };
    store.record_load_part(&shared.run_id, &finished).await?;
    let parts = store.load_parts(&shared.run_id).await?;
    let Some(merged) = merge(&parts, shared.workers, spec)? else {
        return Ok(None);
    };
    if let Some(result) = merged.scenarios.first() {
        store.record_scenario(&shared.run_id, result).await?;
    }
    store.finish_run(&merged, merged.status()).await?;
    Ok(Some(merged))
}

/// The run's merged summary from its parts, once all `workers` finished.
pub(crate) fn merge(
    parts: &[LoadPart],
    workers: u16,
    spec: &LoadSpec,
) -> Result<Option<RunSummary>, HarnessError> {
    // A part of an index beyond the run's workers is a stray's: not the run's.
    let mut finished: Vec<(u16, RunSummary)> = Vec::new();
    for part in parts
        .iter()
        .filter(|p| p.kind == LoadPartKind::Finished && p.worker < workers)
    {
        finished.push((part.worker, decode(part)?));
    }
    if finished.len() < usize::from(workers) {
        return Ok(None);
    }
    let workers_error = |message: String| HarnessError::Workers { message };
    // Parts come sorted by worker.
    let mut series: Vec<Vec<IntervalPoint>> = Vec::new();
    let mut loads: Vec<LoadReport> = Vec::new();
    for (w, summary) in &finished {
        let Some(load) = &summary.load else { continue };
        let mut rows = Vec::new();
        for part in parts
            .iter()
            .filter(|p| p.worker == *w && matches!(p.kind, LoadPartKind::Interval(_)))
        {
            rows.push(decode::<IntervalPoint>(part)?);
        }
        series.push(rows);
        loads.push((**load).clone());
    }
    let load = if loads.is_empty() {
        None
    } else {
        let mut merged = LoadReport::merge(&loads, Some(&series), MAX_POINTS, KEEP_IDS)
            .map_err(workers_error)?;
        merged.workers = workers;
        merged.thresholds = roundtrip_core::load::evaluate(&spec.thresholds, &merged);
        Some(Box::new(merged))
    };
    let summaries: Vec<&RunSummary> = finished.iter().map(|(_, s)| s).collect();
    let Some(first) = summaries.first() else {
        return Ok(None);
    };
    let interrupted = summaries.iter().any(|s| s.interrupted);
    let results: Vec<&ScenarioResult> = summaries.iter().flat_map(|s| &s.scenarios).collect();
    let scenarios = match results.first() {
        None => Vec::new(),
        Some(r0) => {
            let errored = interrupted
                || results.iter().any(|r| r.status == ScenarioStatus::Error)
                || results.len() < summaries.len();
            let (status, notes) = super::verdict(load.as_deref(), errored);
            vec![ScenarioResult {
                name: r0.name.clone(),
                status,
                sent: results.iter().map(|r| r.sent).sum(),
                send_errors: results.iter().map(|r| r.send_errors).sum(),
                error: results.iter().find_map(|r| r.error.clone()),
                expectations: Vec::new(),
                duration_ns: results.iter().map(|r| r.duration_ns).max().unwrap_or(0),
                notes,
            }]
        }
    };
    let mut listeners: Vec<ListenerSummary> = Vec::new();
    for l in summaries.iter().flat_map(|s| &s.listeners) {
        match listeners.iter_mut().find(|m| m.channel == l.channel) {
            Some(m) => {
                m.recorded += l.recorded;
                m.faults += l.faults;
                m.redelivered += l.redelivered;
                m.gaps.extend(l.gaps.iter().cloned());
            }
            None => listeners.push(l.clone()),
        }
    }
    let tagged = |what: fn(&RunSummary) -> Vec<String>| -> Vec<String> {
        finished
            .iter()
            .flat_map(|(w, s)| {
                what(s)
                    .into_iter()
                    .map(move |line| format!("worker {w}: {line}"))
            })
            .collect()
    };
    let errors = tagged(|s| s.harness_error.iter().cloned().collect());
    Ok(Some(RunSummary {
        format_version: first.format_version,
        run_id: first.run_id.clone(),
        suite: first.suite.clone(),
        suite_path: first.suite_path.clone(),
        started_at: summaries.iter().map(|s| s.started_at).min().unwrap_or(0),
        finished_at: summaries.iter().map(|s| s.finished_at).max().unwrap_or(0),
        interrupted,
        scenarios,
        listeners,
        sut_log: tagged(|s| s.sut_log.clone()),
        sut_exited: tagged(|s| s.sut_exited.iter().cloned().collect())
            .into_iter()
            .next(),
        harness_error: (!errors.is_empty()).then(|| errors.join("; ")),
        load,
    }))
}
