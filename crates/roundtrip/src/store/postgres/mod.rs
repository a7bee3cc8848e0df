//! The Postgres store (feature `postgres`): one database shared by every process that
//! records or reads (listener services, runners, `roundtrip report`).
//!
//! Opened with `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE?schema=roundtrip`; see
//! [`PostgresOptions`] for the parameters and `docs/stores/postgres.md` for the tables.
//!
//! ## Writes
//! One writer task per store owns a connection of its own and group-commits exactly as
//! the SQLite store does: whatever is queued when a commit starts goes into one
//! transaction (observations in one multi-row `INSERT … SELECT FROM UNNEST`), and
//! [`Store::record`] resolves only after the commit. Several processes may write into one
//! database at once: sequence numbers are taken under a row lock held until commit, so
//! they follow commit order across all of them (the schema module says why that matters
//! to a reader).
//!
//! ## Reads
//! A small pool of other connections ([`PostgresOptions::pool`]); a read sees everything
//! committed before it started.
//!
//! ## The feed, across processes
//! Every observation committed into the database, by this process or any other, is
//! announced on the broadcast feed in sequence order; this process's own before their
//! `record` resolves. Other processes' commits arrive through LISTEN/NOTIFY, used only
//! as a wake-up (one notification per committed batch; the rows are read from the
//! table): see the `follow` module. Where LISTEN cannot work, `listen=false` makes the
//! feed poll every `poll` (default 1 s). (Transaction pooling is not supported yet: the
//! connections set `search_path` at startup and use prepared statements.)
//!
//! ## Retention
//! [`gc`] deletes whole runs older than a cutoff, in batches (`roundtrip gc`).
//!
//! ## Migrations
//! Versioned, in one transaction under an advisory lock, at open unless the URL says
//! `migrate=false` (then a schema that is not current is refused, and [`migrate`] brings
//! it up to date as a step of its own).

mod follow;
mod options;
mod retention;
mod rows;
mod schema;
mod tls;
mod writer;

pub use options::PostgresOptions;
pub use retention::{Deleted, gc};
pub use schema::{SCHEMA_VERSION, SchemaError};
pub use tls::{SslMode, Tls};
/// The driver, for callers that need the database directly (administration, tests).
pub use tokio_postgres;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use roundtrip_core::observation::{NewObservation, Observation, SentEvent};
use roundtrip_core::run::RunStatus;
use roundtrip_core::run::{RunSummary, ScenarioResult};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::Client;

use self::rows::{
    OBSERVATION_COLUMNS, RUN_COLUMNS, SENT_COLUMNS, b, json_column, observation_row, read_error,
    run_row, sent_row,
};
use self::writer::{Command, Writer};
use crate::store::write::WriteOp;
use crate::store::{LoadPart, RunRecord, Store, StoreError};

/// The longest a read waits for a pooled connection (or to make one).
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The Postgres store. See the [module docs](self).
#[derive(Debug)]
pub struct PostgresStore {
    location: String,
    pool: Pool,
    commands: mpsc::UnboundedSender<Command>,
    feed: broadcast::WeakSender<Arc<Observation>>,
    cross_process: crate::store::CrossProcessFeed,
    closed: AtomicBool,
}

/// A connection and its driver, not yet spawned.
type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, tls::TlsStream<tokio_postgres::Socket>>;

/// Why a connection could not be made.
#[derive(Debug)]
enum ConnectError {
    /// The driver's error (refused, authentication, TLS), shown as it is.
    Driver(tokio_postgres::Error),
    /// The whole setup (TCP, TLS, start-up) took longer than the connect timeout.
    TimedOut(std::time::Duration),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Driver(e) => e.fmt(f),
            ConnectError::TimedOut(after) => write!(
                f,
                "the connection was not set up within {} (`connect_timeout`, for each host)",
                humantime::format_duration(*after)
            ),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Driver(e) => e.source(),
            ConnectError::TimedOut(_) => None,
        }
    }
}

/// Connects once. The whole setup is bounded, as libpq's `connect_timeout` bounds it:
/// the driver's own timeout covers only the TCP connect, and a server that stalls in the
/// TLS handshake or the start-up would otherwise hold the connection forever.
async fn connect_once(options: &PostgresOptions) -> Result<(Client, Connection), ConnectError> {
    let config = config(options);
    let per_host = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(std::time::Duration::from_secs(10));
    let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
    let bound = per_host.saturating_mul(hosts);
    match tokio::time::timeout(bound, config.connect(options.tls.clone())).await {
        Ok(connected) => connected.map_err(ConnectError::Driver),
        Err(_) => Err(ConnectError::TimedOut(bound)),
    }
}

/// A connection of the store's own (the writer's), its driver task spawned.
async fn connect(options: &PostgresOptions) -> Result<Client, ConnectError> {
    let (client, connection) = connect_once(options).await?;
    tokio::spawn(async move {
        // Its error reaches the client as a closed connection; nothing to add here.
        let _ = connection.await;
    });
    Ok(client)
}

/// The driver's settings, with every connection's `search_path` set to the schema.
fn config(options: &PostgresOptions) -> tokio_postgres::Config {
    let mut config = options.config.clone();
    let given = config.get_options().unwrap_or_default().to_owned();
    config.options(format!("{given} -c search_path=\"{}\"", options.schema).trim());
    config
}

fn open_error(
    location: &str,
    why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Open {
        location: location.to_owned(),
        source: why.into(),
    }
}

/// What went wrong talking to Postgres, with the hint for the usual causes.
fn unreachable(options: &PostgresOptions, e: &(dyn std::error::Error + 'static)) -> String {
    let chain = crate::error::error_chain(e);
    if tls::Handshake::caused(e) {
        return format!(
            "{chain} (the store's URL asks for `sslmode={}`: check `sslrootcert` names the \
             authority that signed the server's certificate, and that the host name in the \
             URL is one it was issued for; `sslcert`/`sslkey` if the server asks for a \
             client certificate)",
            options.tls.mode().as_str()
        );
    }
    format!(
        "{chain} (is Postgres running and reachable at {}, and may this user connect to \
         that database?)",
        options.location
    )
}

/// `options` checked: a bad option is a usage error.
fn checked(options: &PostgresOptions) -> Result<(), StoreError> {
    options.validate().map_err(|message| StoreError::Invalid {
        location: options.location.clone(),
        message,
    })
}

/// A connection that failed, as the store's open error, with what to check.
fn refused(options: &PostgresOptions, e: &(dyn std::error::Error + 'static)) -> StoreError {
    open_error(&options.location, unreachable(options, e))
}

/// A connection of the store's own for `options`: checked first (a bad option is a usage
/// error), then connected (a failure says what to check).
async fn connection(options: &PostgresOptions) -> Result<Client, StoreError> {
    checked(options)?;
    connect(options).await.map_err(|e| refused(options, &e))
}

/// The store's first connection: as [`connection`], except that with `sslmode=prefer` a
/// server whose TLS no handshake completes (an old protocol, a certificate rustls cannot
/// parse) is connected to without TLS, as libpq retries without it, and every later
/// connection of the store does the same.
async fn first_connection(options: &mut PostgresOptions) -> Result<Client, StoreError> {
    checked(options)?;
    match connect(options).await {
        Err(ConnectError::Driver(e))
            if options.tls.mode() == SslMode::Prefer && tls::Handshake::caused(&e) =>
        {
            let mut plain = options.clone();
            plain.tls = Tls::plain();
            plain
                .config
                .ssl_mode(tokio_postgres::config::SslMode::Disable);
            let client = connect(&plain)
                .await
                // Say why TLS failed: that is what the server would not accept.
                .map_err(|_| refused(options, &e))?;
            *options = plain;
            Ok(client)
        }
        connected => connected.map_err(|e| refused(options, &e)),
    }
}

/// Refuses a schema that holds no store as [`StoreError::Missing`], creating nothing:
/// for commands that only read or delete.
async fn require_store(client: &mut Client, options: &PostgresOptions) -> Result<(), StoreError> {
    match schema::migrate(client, &options.schema, false).await {
        Err(SchemaError::NotMigrated { found: 0, .. }) => Err(StoreError::Missing {
            location: options.location.clone(),
        }),
        _ => Ok(()),
    }
}

/// Brings the store's schema up to [`SCHEMA_VERSION`]; returns the version it was at.
/// What `roundtrip migrate` runs.
pub async fn migrate(options: &PostgresOptions) -> Result<i64, StoreError> {
    let mut client = connection(options).await?;
    schema::migrate(&mut client, &options.schema, true)
        .await
        .map_err(|e| open_error(&options.location, e))
}

impl PostgresStore {
    /// Opens the store named by a `postgres://` URL.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let options =
            PostgresOptions::from_url(url).map_err(|why| StoreError::invalid(url, why))?;
        PostgresStore::open_with(options).await
    }

    /// Opens the store with these options, migrating its schema unless they say not to.
    pub async fn open_with(mut options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let location = options.location.clone();
        let mut client = first_connection(&mut options).await?;
        schema::migrate(&mut client, &options.schema, options.migrate)
            .await
            .map_err(|e| open_error(&location, e))?;
        let manager = Manager::from_config(
            config(&options),
            options.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Bounded waits: a read (or the feed's catch-up) never waits forever for a
        // connection.
        let pool = Pool::builder(manager)
            .max_size(options.pool)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| open_error(&location, e))?;
        let last: i64 = client
            .query_one("SELECT next - 1 FROM observation_seq", &[])
            .await
            .map_err(|e| refused(&options, &e))?
            .get(0);
        let (feed, _) = broadcast::channel(options.feed_capacity.clamp(1, 1 << 24));
        let weak = feed.downgrade();
        let (committed, committed_rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(
            follow::Follower {
                options: options.clone(),
                pool: pool.clone(),
                feed,
                committed: committed_rx,
                last: rows::from_sql(last),
            }
            .run(),
        );
        let cross_process = if options.listen {
            crate::store::CrossProcessFeed::Pushed
        } else {
            crate::store::CrossProcessFeed::Polled(options.poll)
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(
            Writer {
                client: Some(client),
                options,
                commands: receiver,
                committed,
                follower,
                runs: std::collections::HashSet::new(),
            }
            .run(),
        );
        Ok(PostgresStore {
            location,
            pool,
            commands,
            feed: weak,
            cross_process,
            closed: AtomicBool::new(false),
        })
    }

    /// Opens the store for a command that only reads: a schema that holds no store yet
    /// is [`StoreError::Missing`], and is not created.
    pub async fn open_existing(url: &str) -> Result<PostgresStore, StoreError> {
        let options =
            PostgresOptions::from_url(url).map_err(|why| StoreError::invalid(url, why))?;
        require_store(&mut connection(&options).await?, &options).await?;
        PostgresStore::open_with(options).await
    }

    /// Where the store is: its URL, password masked.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    async fn write(&self, op: WriteOp) -> Result<(), StoreError> {
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Write { op, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.check_open()?;
        self.pool.get().await.map_err(|e| StoreError::Io {
            operation: "connect to Postgres to read",
            source: Box::new(e),
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn cross_process_feed(&self) -> crate::store::CrossProcessFeed {
        self.cross_process
    }

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(WriteOp::CreateRun(run.clone())).await
    }

    async fn join_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(WriteOp::JoinRun(run.clone())).await
    }

    async fn record_sent(&self, event: &SentEvent) -> Result<(), StoreError> {
        self.write(WriteOp::Sent(event.clone())).await
    }

    async fn record_load_part(&self, run_id: &str, part: &LoadPart) -> Result<(), StoreError> {
        self.write(WriteOp::LoadPart {
            run_id: run_id.to_owned(),
            part: part.clone(),
        })
        .await
    }

    async fn load_parts(&self, run_id: &str) -> Result<Vec<LoadPart>, StoreError> {
        let client = self.reader().await?;
        let rows = client
            .query(
                "SELECT worker, kind, idx, body FROM load_parts WHERE run_id = $1",
                &[&run_id],
            )
            .await
            .map_err(read_error("read load parts"))?;
        let mut parts = rows
            .iter()
            .map(|row| {
                let read = read_error("read load parts");
                let (worker, kind, idx, body): (i32, String, i64, String) = match (
                    row.try_get(0),
                    row.try_get(1),
                    row.try_get(2),
                    row.try_get(3),
                ) {
                    (Ok(w), Ok(k), Ok(i), Ok(b)) => (w, k, i, b),
                    (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => {
                        return Err(read(e));
                    }
                };
                Ok(LoadPart {
                    worker: u16::try_from(worker).map_err(|e| StoreError::Io {
                        operation: "read load parts",
                        source: Box::new(e),
                    })?,
                    kind: crate::store::load_part_kind(&kind, rows::from_sql(idx))?,
                    body,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        parts.sort_by_key(|p| (p.worker, p.kind));
        Ok(parts)
    }

    async fn record(&self, observation: NewObservation) -> Result<Arc<Observation>, StoreError> {
        self.check_open()?;
        let observation = Box::new(rows::Encoded::new(observation)?);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Record { observation, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Observation>> {
        crate::store::follow(&self.feed)
    }

    async fn observations(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Observation>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.reader().await?;
        client
            .query(
                &format!(
                    "SELECT {OBSERVATION_COLUMNS} FROM observations
                     WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ),
                &[&run_id, &after, &limit],
            )
            .await
            .map_err(read_error("read observations"))?
            .iter()
            .map(observation_row)
            .collect()
    }

    async fn correlated(
        &self,
        run_id: &str,
        correlation_id: &str,
    ) -> Result<Vec<Observation>, StoreError> {
        let client = self.reader().await?;
        client
            .query(
                &format!(
                    "SELECT {OBSERVATION_COLUMNS} FROM observations
                     WHERE run_id = $1 AND correlation_id = $2 ORDER BY seq"
                ),
                &[&run_id, &b(correlation_id)],
            )
            .await
            .map_err(read_error("read an event's observations"))?
            .iter()
            .map(observation_row)
            .collect()
    }

    async fn sent_events(&self, run_id: &str) -> Result<Vec<SentEvent>, StoreError> {
        let client = self.reader().await?;
        client
            .query(
                &format!(
                    "SELECT {SENT_COLUMNS} FROM sent_events WHERE run_id = $1
                     ORDER BY sent_mono, scenario, idx"
                ),
                &[&run_id],
            )
            .await
            .map_err(read_error("read sent events"))?
            .iter()
            .map(sent_row)
            .collect()
    }

    async fn record_scenario(
        &self,
        run_id: &str,
        result: &ScenarioResult,
    ) -> Result<(), StoreError> {
        self.write(WriteOp::scenario(run_id, result)?).await
    }

    async fn scenario_results(&self, run_id: &str) -> Result<Vec<ScenarioResult>, StoreError> {
        let client = self.reader().await?;
        client
            .query(
                "SELECT result FROM scenario_results WHERE run_id = $1 ORDER BY id",
                &[&run_id],
            )
            .await
            .map_err(read_error("read scenario results"))?
            .iter()
            .map(|row| json_column(row, "decode a scenario result"))
            .collect()
    }

    async fn finish_run(&self, summary: &RunSummary, status: RunStatus) -> Result<(), StoreError> {
        self.write(WriteOp::finish(summary, status)?).await
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.reader().await?;
        client
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     ORDER BY started_at DESC, run_id COLLATE \"C\" DESC LIMIT $1"
                ),
                &[&limit],
            )
            .await
            .map_err(read_error("list runs"))?
            .iter()
            .map(run_row)
            .collect()
    }

    async fn run_summary(&self, run_id: &str) -> Result<Option<RunSummary>, StoreError> {
        let client = self.reader().await?;
        let row = client
            .query_opt("SELECT summary FROM runs WHERE run_id = $1", &[&run_id])
            .await
            .map_err(read_error("read the run summary"))?;
        let Some(row) = row else { return Ok(None) };
        let json: Option<String> = row.try_get(0).map_err(read_error("read the run summary"))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Io {
                operation: "decode the run summary",
                source: Box::new(e),
            })
        })
        .transpose()
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let client = self.reader().await?;
        client
            .query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"),
                &[&run_id],
            )
            .await
            .map_err(read_error("read the run"))?
            .as_ref()
            .map(run_row)
            .transpose()
    }

    async fn close(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).is_err() {
            return Ok(());
        }
        let closed = answer.await.unwrap_or(Ok(()));
        self.pool.close();
        closed
    }
}
