//! The store: a durable, append-only log of runs, sent events, observations and verdicts.
//!
//! One trait, [`Store`], with one backend per module ([`sqlite`] is the embedded default;
//! `dynamodb` and `postgres` are behind the features of those names). Every backend
//! passes the same conformance suite (`tests/it/store.rs`).
//!
//! ## The write path
//! [`Store::record`] resolves only after the observation is committed, so a listener can
//! acknowledge its broker (or answer its webhook) afterwards: at-least-once recording.
//! Backends group-commit: whatever is queued when a commit starts goes into one
//! transaction, so a lone observation is committed at once and a flood in batches.
//!
//! ## The feed (push, no polling)
//! After each commit the store announces the committed observations on a broadcast
//! channel ([`Store::subscribe`]). A subscriber that falls behind receives
//! `RecvError::Lagged` and catches up from [`Store::observations`] by sequence number, so
//! nothing is missed.

use std::sync::Arc;

use async_trait::async_trait;
use roundtrip_core::observation::{NewObservation, Observation, SentEvent, UnixNanos};
pub use roundtrip_core::run::RunStatus;
use roundtrip_core::run::{RunSummary, ScenarioResult};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
pub(crate) mod write;

/// A run as listed by [`Store::runs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunRecord {
    /// The run id (a UUIDv7: time-ordered).
    pub run_id: String,
    /// The suite name.
    pub suite: String,
    /// The suite file path as given.
    pub suite_path: String,
    /// Wall-clock start.
    pub started_at: UnixNanos,
    /// Wall-clock end, once finished.
    pub finished_at: Option<UnixNanos>,
    /// `running`, `passed`, `failed`, `error` or `interrupted`.
    pub status: RunStatus,
    /// The process that runs it ([`crate::owner`]), so that `roundtrip runs` can tell a
    /// run whose process died from one still going; `None` for runs recorded before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// What one worker of a load run records as it goes ([`Store::record_load_part`]):
/// that it joined, each interval as it closes, and its account when it finishes. A run
/// shared by several workers (`roundtrip load --workers`) is merged from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPart {
    /// The worker's index.
    pub worker: u16,
    /// Which part.
    pub kind: LoadPartKind,
    /// The part, as JSON (what it holds depends on `kind`).
    pub body: String,
}

/// Which part of a worker's load account a [`LoadPart`] is; parts sort in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoadPartKind {
    /// The worker is ready to send (its listeners are up).
    Joined,
    /// Its interval `n` (0-based) closed.
    Interval(u64),
    /// It finished.
    Finished,
}

impl LoadPartKind {
    /// The name stored beside the index.
    pub fn name(self) -> &'static str {
        match self {
            LoadPartKind::Joined => "joined",
            LoadPartKind::Interval(_) => "interval",
            LoadPartKind::Finished => "finished",
        }
    }

    /// The index stored (an interval's number, 0 for the others).
    pub fn index(self) -> u64 {
        match self {
            LoadPartKind::Interval(n) => n,
            LoadPartKind::Joined | LoadPartKind::Finished => 0,
        }
    }

    /// The kind stored as `name` and `index`, if it is one.
    pub fn from_stored(name: &str, index: u64) -> Option<LoadPartKind> {
        match name {
            "joined" => Some(LoadPartKind::Joined),
            "interval" => Some(LoadPartKind::Interval(index)),
            "finished" => Some(LoadPartKind::Finished),
            _ => None,
        }
    }
}

/// A stored part's kind, or the error of a row no roundtrip wrote.
pub(crate) fn load_part_kind(name: &str, index: u64) -> Result<LoadPartKind, StoreError> {
    LoadPartKind::from_stored(name, index).ok_or_else(|| StoreError::Io {
        operation: "read load parts",
        source: format!(
            "a stored load part is of unknown kind `{}`",
            name.escape_debug()
        )
        .into(),
    })
}

/// A store error. Messages read after "failed to …".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or created.
    #[error("open the store at {location}")]
    Open {
        /// Where (a path or URL, never with credentials).
        location: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A read or write failed.
    #[error("{operation} in the store")]
    Io {
        /// What was being done, e.g. `commit observations`.
        operation: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store was closed (its writer stopped) before the operation completed.
    #[error("use the store: it is closed")]
    Closed,
    /// No such run.
    #[error("find run `{0}` in the store")]
    NoSuchRun(String),
    /// The store URL is wrong: malformed, a backend this build lacks, a parameter it
    /// does not take. A usage error, not an unreachable store.
    #[error("open the store at {location}: {message}")]
    Invalid {
        /// The URL, secrets masked.
        location: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A command that only reads found no store where it was told to look.
    #[error(
        "open the store at {location}: there is no store there (check `--store` or \
         ROUNDTRIP_STORE; `roundtrip run` creates one)"
    )]
    Missing {
        /// The path, as given.
        location: String,
    },
}

impl StoreError {
    /// The store URL `url` cannot be used, as [`StoreError::Invalid`], its secrets masked.
    pub fn invalid(url: &str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            location: roundtrip_core::redact::url(url),
            message: message.into(),
        }
    }

    /// Whether the error is the user's to fix in the command line (a wrong or missing
    /// store), exit code 2, rather than the store failing (exit code 3).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::Invalid { .. } | StoreError::Missing { .. }
        )
    }
}

/// How other processes' commits reach a store's feed ([`Store::cross_process_feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossProcessFeed {
    /// They do not: the feed brings this process's commits only (SQLite, DynamoDB).
    None,
    /// Each commit wakes the feed up (Postgres LISTEN/NOTIFY).
    Pushed,
    /// The feed reads them on a timer, up to this late (Postgres with `listen=false`).
    Polled(std::time::Duration),
}

/// The durable log behind a run. Object-safe: the engine holds an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Records the start of a run.
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// Records a produced event (before or after the send; `error` says how it went).
    /// Creates the run or, if it exists, joins it: a run that several processes share
    /// (the workers of `roundtrip load --workers`), each of which opens it. The first
    /// to come creates it, with its record.
    async fn join_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    async fn record_sent(&self, event: &SentEvent) -> Result<(), StoreError>;
    /// Records one part of a load run's account (replacing the same part, if recorded).
    async fn record_load_part(&self, run_id: &str, part: &LoadPart) -> Result<(), StoreError>;
    /// Every load part of the run, by worker, then kind (joined, intervals in order,
    /// finished); none for a run that is not a load run (or no such run).
    async fn load_parts(&self, run_id: &str) -> Result<Vec<LoadPart>, StoreError>;
    /// Commits an observation; resolves after the commit with its sequence number.
    async fn record(&self, observation: NewObservation) -> Result<Arc<Observation>, StoreError>;
    /// Committed observations, in commit order, as they are committed.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Observation>>;
    /// Whether [`Store::subscribe`] also brings what other processes commit, and how
    /// (Postgres, which follows the table), rather than only this process's commits.
    fn cross_process_feed(&self) -> CrossProcessFeed {
        CrossProcessFeed::None
    }
    /// A run's observations with `seq > after`, in sequence order, at most `limit`.
    async fn observations(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Observation>, StoreError>;
    /// A run's observations that carry `correlation_id`, in sequence order: what one sent
    /// event caused. This scans the run (the engine matches from the feed and needs no
    /// index on correlation ids); a backend with a cheaper query overrides it.
    async fn correlated(
        &self,
        run_id: &str,
        correlation_id: &str,
    ) -> Result<Vec<Observation>, StoreError> {
        let mut found = Vec::new();
        let mut after = 0;
        loop {
            let page = self.observations(run_id, after, 4096).await?;
            let Some(last) = page.last() else {
                return Ok(found);
            };
            after = last.seq;
            found.extend(
                page.into_iter()
                    .filter(|o| o.correlation_id.as_deref() == Some(correlation_id)),
            );
        }
    }
    /// A run's sent events, in send order.
    async fn sent_events(&self, run_id: &str) -> Result<Vec<SentEvent>, StoreError>;
    /// Records one scenario's result (may be called again for the same scenario; the
    /// last one wins).
    async fn record_scenario(
        &self,
        run_id: &str,
        result: &ScenarioResult,
    ) -> Result<(), StoreError>;
    /// A run's scenario results, the latest of each scenario, in the order first
    /// recorded: what an interrupted run (no summary) can still be re-reported from.
    async fn scenario_results(&self, run_id: &str) -> Result<Vec<ScenarioResult>, StoreError>;
    /// Records the end of a run with its full summary.
    async fn finish_run(&self, summary: &RunSummary, status: RunStatus) -> Result<(), StoreError>;
    /// The most recent runs, newest first.
    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
    /// A finished run's summary (`None` while it is still running).
    async fn run_summary(&self, run_id: &str) -> Result<Option<RunSummary>, StoreError>;
    /// A run's record.
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Waits until everything handed to the store is committed, then stops its writer.
    async fn close(&self) -> Result<(), StoreError>;
}

/// A receiver on a backend's feed; once the backend's writer stopped (the feed's only
/// sender is gone), a feed that is already over.
pub(crate) fn follow(
    feed: &broadcast::WeakSender<Arc<Observation>>,
) -> broadcast::Receiver<Arc<Observation>> {
    match feed.upgrade() {
        Some(feed) => feed.subscribe(),
        None => broadcast::channel(1).1,
    }
}

/// Whether `url` names a Postgres store (`postgres://…` or `postgresql://…`), whether
/// or not this build has the backend.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by `url`:
/// - `sqlite:PATH` or a plain path: an SQLite file (created, with parent directories);
/// - `sqlite::memory:`: an in-memory SQLite store (tests);
/// - `dynamodb://TABLE?region=…&endpoint=…&ttl=30d&create=true`: a DynamoDB table
///   (feature `dynamodb`; see the `store::dynamodb` module);
/// - `postgres://USER@HOST/DATABASE?schema=…`: a Postgres database (feature
///   `postgres`; see the `store::postgres` module).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match backend(url)? {
        Backend::Memory => Ok(Arc::new(sqlite::SqliteStore::open_in_memory()?)),
        Backend::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path)?)),
        #[cfg(feature = "dynamodb")]
        Backend::Dynamo => Ok(Arc::new(dynamodb::DynamoStore::open(url).await?)),
        #[cfg(feature = "postgres")]
        Backend::Postgres => Ok(Arc::new(postgres::PostgresStore::open(url).await?)),
    }
}

/// Checks a store URL as [`open`] would, without opening or connecting to anything: its
/// scheme, that the backend is compiled in, and the backend's own parameters (for
/// Postgres, its TLS files read). What `roundtrip listen --check` runs.
pub fn check(url: &str) -> Result<(), StoreError> {
    let checked: Result<(), String> = match backend(url)? {
        Backend::Memory | Backend::Sqlite(_) => Ok(()),
        #[cfg(feature = "dynamodb")]
        Backend::Dynamo => dynamodb::DynamoOptions::from_url(url).map(drop),
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            postgres::PostgresOptions::from_url(url).and_then(|options| options.validate())
        }
    };
    checked.map_err(|message| StoreError::invalid(url, message))
}

/// The backend a store URL names.
enum Backend<'u> {
    Memory,
    Sqlite(&'u str),
    #[cfg(feature = "dynamodb")]
    Dynamo,
    #[cfg(feature = "postgres")]
    Postgres,
}

fn backend(url: &str) -> Result<Backend<'_>, StoreError> {
    let unsupported = |scheme: &str| {
        StoreError::invalid(
            url,
            format!(
                "the `{scheme}` store backend is not compiled into this build of roundtrip; \
                 rebuild with `--features {scheme}` or use an SQLite path"
            ),
        )
    };
    if url == "sqlite::memory:" {
        return Ok(Backend::Memory);
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Backend::Sqlite(path));
    }
    #[cfg(feature = "dynamodb")]
    if url.starts_with("dynamodb://") {
        return Ok(Backend::Dynamo);
    }
    #[cfg(feature = "postgres")]
    if is_postgres_url(url) {
        return Ok(Backend::Postgres);
    }
    for scheme in ["postgres", "postgresql", "dynamodb"] {
        if url.starts_with(&format!("{scheme}://")) {
            return Err(unsupported(if scheme == "postgresql" {
                "postgres"
            } else {
                scheme
            }));
        }
    }
    if url.contains("://") {
        return Err(StoreError::invalid(
            url,
            "unknown store URL scheme; use `sqlite:PATH`, a file path, `sqlite::memory:`, \
             `postgres://…` or `dynamodb://TABLE`",
        ));
    }
    Ok(Backend::Sqlite(url))
}

/// [`open`], for commands that only read (`runs`, `report`): an SQLite path where no
/// file exists, or a Postgres schema that holds no store, is [`StoreError::Missing`],
/// not a new empty store.
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    #[cfg(feature = "postgres")]
    if is_postgres_url(url) {
        return Ok(Arc::new(postgres::PostgresStore::open_existing(url).await?));
    }
    let path = url.strip_prefix("sqlite:").unwrap_or(url);
    let is_path = url.strip_prefix("sqlite:").is_some() || !url.contains("://");
    if is_path && path != ":memory:" && !std::path::Path::new(path).exists() {
        return Err(StoreError::Missing {
            location: path.to_owned(),
        });
    }
    open(url).await
}

/// The summary of a run that never finished (SIGKILL, a crash, or still running): the
/// scenario results it recorded, and what each channel recorded, marked as unfinished
/// (`interrupted`, with a harness error saying so). What `roundtrip report` shows for it.
pub async fn unfinished_summary(
    store: &dyn Store,
    record: RunRecord,
) -> Result<roundtrip_core::run::RunSummary, StoreError> {
    let scenarios = store.scenario_results(&record.run_id).await?;
    let mut per_channel: std::collections::BTreeMap<String, u64> = Default::default();
    let mut after = 0;
    loop {
        let page = store.observations(&record.run_id, after, 4096).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for o in &page {
            *per_channel.entry(o.channel.clone()).or_default() += 1;
        }
    }
    let sent = store.sent_events(&record.run_id).await?.len();
    let parts = store.load_parts(&record.run_id).await?;
    let workers = |kind: fn(&LoadPartKind) -> bool| -> Vec<String> {
        let mut ids: Vec<u16> = parts
            .iter()
            .filter(|p| kind(&p.kind))
            .map(|p| p.worker)
            .collect();
        ids.dedup();
        ids.iter().map(u16::to_string).collect()
    };
    let joined = workers(|k| *k == LoadPartKind::Joined);
    let load_note = if joined.is_empty() {
        String::new()
    } else {
        let finished = workers(|k| *k == LoadPartKind::Finished);
        format!(
            "; of the load's workers, {} joined and {} finished (each worker's own account \
             is in its own reports)",
            joined.join(", "),
            if finished.is_empty() {
                "none".to_owned()
            } else {
                finished.join(", ")
            }
        )
    };
    Ok(roundtrip_core::run::RunSummary {
        format_version: roundtrip_core::run::REPORT_FORMAT_VERSION,
        run_id: record.run_id,
        suite: record.suite,
        suite_path: record.suite_path,
        started_at: record.started_at,
        finished_at: record.finished_at.unwrap_or(record.started_at),
        interrupted: true,
        scenarios,
        listeners: per_channel
            .into_iter()
            .map(|(channel, recorded)| roundtrip_core::run::ListenerSummary {
                channel,
                transport: "unknown".into(),
                recorded,
                faults: 0,
                delivery: "unknown".into(),
                polling: false,
                redelivered: 0,
                gaps: Vec::new(),
            })
            .collect(),
        sut_log: Vec::new(),
        sut_exited: None,
        harness_error: Some(format!(
            "the run did not finish (status `{}`): {sent} event(s) sent, the scenario results \
             and observations it recorded are shown{load_note}",
            record.status
        )),
        load: None,
    })
}
