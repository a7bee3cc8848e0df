//! The embedded SQLite store: a file (or memory) and a dedicated writer thread.
//!
//! ## Durability and the write path
//! A file store runs in WAL mode with `synchronous=FULL` by default: when
//! [`Store::record`] resolves, the observation is on disk. One writer thread owns the
//! writing connection; every write (observations, runs, sent events, results) goes
//! through its queue, so writes are applied in the order they were handed over. The
//! thread group-commits: whatever is queued when a commit starts goes into that one
//! transaction (at most [`SqliteOptions::max_batch`] writes), so a lone observation is
//! committed immediately and a flood shares fsyncs. Waiters are answered only after the
//! COMMIT succeeded; if it fails, every waiter of that batch gets the error.
//!
//! ## The feed
//! Each committed observation is published on a broadcast channel, in sequence order,
//! *before* its `record` call resolves. A subscriber that falls more than
//! [`SqliteOptions::feed_capacity`] observations behind receives
//! [`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged) and catches
//! up with [`Store::observations`]`(run_id, last_seen_seq, limit)`, which returns exactly
//! the committed observations it missed. After [`Store::close`] the feed ends with
//! `RecvError::Closed`.
//!
//! ```
//! # async fn follow(store: &dyn roundtrip::store::Store, run_id: &str)
//! #     -> Result<(), roundtrip::store::StoreError> {
//! use tokio::sync::broadcast::error::RecvError;
//!
//! let mut feed = store.subscribe();
//! let mut last_seen = 0;
//! loop {
//!     match feed.recv().await {
//!         Ok(o) if o.seq > last_seen => {
//!             last_seen = o.seq;
//!             if o.run_id == run_id { /* … evaluate `o` … */ }
//!         }
//!         Ok(_) => {} // already read while catching up
//!         Err(RecvError::Lagged(_)) => {
//!             for o in store.observations(run_id, last_seen, usize::MAX).await? {
//!                 last_seen = o.seq; // … evaluate `o` …
//!             }
//!         }
//!         Err(RecvError::Closed) => return Ok(()),
//!     }
//! }
//! # }
//! ```
//!
//! ## Reads
//! File stores read on separate connections (WAL lets them run beside the writer) in
//! `spawn_blocking`; in-memory stores read through the writer's queue. Either way a read
//! sees everything committed before it started, never an open batch.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use roundtrip_core::observation::{NewObservation, Observation, SentEvent};
use roundtrip_core::run::RunStatus;
use roundtrip_core::run::{RunSummary, ScenarioResult};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, oneshot};

use super::{LoadPart, RunRecord, Store, StoreError};

mod rows;
mod schema;
mod writer;

pub use schema::{SCHEMA_VERSION, SchemaError};
use writer::{Command, Writer};

/// How hard a commit waits for the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged observation survives a power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of roundtrip, may lose the last
    /// commits on a power loss. Faster on slow disks.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Settings of an [`SqliteStore`]; the defaults suit the CLI and tests.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of each commit (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// How long a connection waits for another process's lock (default 5 s).
    pub busy_timeout: Duration,
    /// How many observations a subscriber may fall behind before it lags (default 16384).
    pub feed_capacity: usize,
    /// The most writes committed in one transaction (default 4096).
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            feed_capacity: 16_384,
            max_batch: 4096,
        }
    }
}

/// Idle read connections kept per file store.
const IDLE_READERS: usize = 4;

/// The embedded SQLite store. See the [module docs](self).
#[derive(Debug)]
pub struct SqliteStore {
    location: String,
    commands: mpsc::Sender<Command>,
    /// Weak, so that the feed ends (`RecvError::Closed`) when the writer stops.
    feed: broadcast::WeakSender<Arc<Observation>>,
    /// Read connections (file stores); `None` reads through the writer.
    readers: Option<Arc<Readers>>,
    closed: AtomicBool,
    thread: Option<JoinHandle<()>>,
}

impl SqliteStore {
    /// Opens or creates the store file at `path` (and its parent directories), with the
    /// default [`SqliteOptions`].
    pub fn open(path: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, &SqliteOptions::default())
    }

    /// Opens an in-memory store (for tests), with the default [`SqliteOptions`].
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        SqliteStore::open_in_memory_with(&SqliteOptions::default())
    }

    /// Opens or creates the store file at `path` with these options.
    ///
    /// Errors with [`StoreError::Open`] naming the path and the reason: the OS error when
    /// the file or its directory cannot be created or written, a [`SchemaError`] when the
    /// file was written by a newer roundtrip or is not a roundtrip store.
    pub fn open_with(path: &str, options: &SqliteOptions) -> Result<SqliteStore, StoreError> {
        if path == ":memory:" {
            return SqliteStore::open_in_memory_with(options);
        }
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            location: path.to_owned(),
            source,
        };
        let file = Path::new(path);
        // (A parent that exists as a file is left to `open` below, which then reports
        // "not a directory" rather than create_dir_all's "file exists".)
        if let Some(dir) = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            fs::create_dir_all(dir).map_err(|e| open_error(Box::new(e)))?;
        }
        // SQLite only says "unable to open database file"; the OS says why.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(file)
            .map_err(|e| open_error(Box::new(e)))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(file, flags).map_err(|e| open_error(Box::new(e)))?;
        schema::configure_common(&conn, options.busy_timeout)
            .and_then(|()| schema::inspect(&conn))
            .and_then(|()| {
                schema::configure_writer(
                    &conn,
                    options.busy_timeout,
                    options.synchronous.pragma(),
                    true,
                )
            })
            .and_then(|()| schema::migrate(&conn))
            .map_err(|e| open_error(Box::new(e)))?;
        let readers = Readers {
            path: file.to_path_buf(),
            busy_timeout: options.busy_timeout,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        SqliteStore::start(path, conn, Some(Arc::new(readers)), options)
    }

    /// Opens an in-memory store with these options (a small `feed_capacity` lets tests
    /// exercise lagging subscribers).
    pub fn open_in_memory_with(options: &SqliteOptions) -> Result<SqliteStore, StoreError> {
        let location = ":memory:";
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            location: location.to_owned(),
            source,
        };
        let conn = Connection::open_in_memory().map_err(|e| open_error(Box::new(e)))?;
        schema::configure_writer(
            &conn,
            options.busy_timeout,
            options.synchronous.pragma(),
            false,
        )
        .and_then(|()| schema::migrate(&conn))
        .map_err(|e| open_error(Box::new(e)))?;
        SqliteStore::start(location, conn, None, options)
    }

    fn start(
        location: &str,
        conn: Connection,
        readers: Option<Arc<Readers>>,
        options: &SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let (commands, receiver) = mpsc::channel();
        // Tokio's broadcast channel panics on 0 and on absurd capacities.
        let (feed, _) = broadcast::channel(options.feed_capacity.clamp(1, 1 << 24));
        let weak_feed = feed.downgrade();
        let writer = Writer {
            conn,
            commands: receiver,
            feed,
            max_batch: options.max_batch.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("roundtrip-store-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Open {
                location: location.to_owned(),
                source: Box::new(e),
            })?;
        Ok(SqliteStore {
            location: location.to_owned(),
            commands,
            feed: weak_feed,
            readers,
            closed: AtomicBool::new(false),
            thread: Some(thread),
        })
    }

    /// Where the store is: its path, or `:memory:`.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.commands.send(command).map_err(|_| StoreError::Closed)
    }

    async fn write(&self, op: rows::WriteOp) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Write { op, reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        match &self.readers {
            Some(readers) => {
                let readers = Arc::clone(readers);
                tokio::task::spawn_blocking(move || readers.with(read))
                    .await
                    .map_err(|e| StoreError::Io {
                        operation: "run a read",
                        source: Box::new(e),
                    })?
            }
            None => {
                let (reply, answer) = oneshot::channel();
                self.send(Command::Read(Box::new(move |conn| {
                    let _ = reply.send(read(conn));
                })))?;
                answer.await.map_err(|_| StoreError::Closed)?
            }
        }
    }

    /// Asks the writer to stop after committing what is queued; returns its answer.
    fn request_close(&self) -> Option<oneshot::Receiver<Result<(), StoreError>>> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return None;
        }
        if let Some(readers) = &self.readers {
            readers.close();
        }
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Close(reply)).ok()?;
        Some(answer)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Whatever is queued is committed; then the thread is joined (it has no more
        // work than that one batch, and never waits on anything async).
        let _ = self.request_close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(rows::WriteOp::CreateRun(run.clone())).await
    }

    async fn record_sent(&self, event: &SentEvent) -> Result<(), StoreError> {
        self.write(rows::WriteOp::Sent(event.clone())).await
    }

    async fn join_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(rows::WriteOp::JoinRun(run.clone())).await
    }

    async fn record_load_part(&self, run_id: &str, part: &LoadPart) -> Result<(), StoreError> {
        self.write(rows::WriteOp::LoadPart {
            run_id: run_id.to_owned(),
            part: part.clone(),
        })
        .await
    }

    async fn load_parts(&self, run_id: &str) -> Result<Vec<LoadPart>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |conn| rows::load_parts(conn, &run_id)).await
    }

    async fn record(&self, observation: NewObservation) -> Result<Arc<Observation>, StoreError> {
        // Encoded here, off the writer thread.
        let headers = rows::headers_json(&observation.headers)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Record {
            observation,
            headers,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The feed of committed observations. On `RecvError::Lagged`, catch up with
    /// [`Store::observations`] from the last sequence number seen; after
    /// [`Store::close`] the receiver reports `RecvError::Closed`.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Observation>> {
        super::follow(&self.feed)
    }

    async fn observations(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Observation>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |conn| rows::observations(conn, &run_id, after, limit))
            .await
    }

    async fn sent_events(&self, run_id: &str) -> Result<Vec<SentEvent>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |conn| rows::sent_events(conn, &run_id))
            .await
    }

    async fn record_scenario(
        &self,
        run_id: &str,
        result: &ScenarioResult,
    ) -> Result<(), StoreError> {
        self.write(rows::WriteOp::scenario(run_id, result)?).await
    }

    async fn scenario_results(&self, run_id: &str) -> Result<Vec<ScenarioResult>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |conn| rows::scenario_results(conn, &run_id))
            .await
    }

    async fn finish_run(&self, summary: &RunSummary, status: RunStatus) -> Result<(), StoreError> {
        self.write(rows::WriteOp::finish(summary, status)?).await
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.read(move |conn| rows::runs(conn, limit)).await
    }

    async fn run_summary(&self, run_id: &str) -> Result<Option<RunSummary>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |conn| rows::run_summary(conn, &run_id))
            .await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |conn| rows::run(conn, &run_id)).await
    }

    /// Commits everything queued, closes the database and stops the writer thread.
    /// Calling it again is a no-op; any other call afterwards fails with
    /// [`StoreError::Closed`].
    async fn close(&self) -> Result<(), StoreError> {
        match self.request_close() {
            Some(answer) => answer.await.map_err(|_| StoreError::Closed)?,
            None => Ok(()),
        }
    }
}

/// The read connections of a file store.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl Readers {
    /// Runs `read` on an idle connection (or a new one), then keeps it for the next read.
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = read(&conn);
        if !self.closed.load(Ordering::Acquire) {
            let mut idle = self.lock();
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
        result
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let io = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Io {
            operation: "open a read connection",
            source: e,
        };
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| io(Box::new(e)))?;
        schema::configure_common(&conn, self.busy_timeout).map_err(|e| io(Box::new(e)))?;
        Ok(conn)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
