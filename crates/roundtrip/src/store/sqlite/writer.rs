//! The writer thread: the only connection that writes, committing in groups.
//!
//! The thread blocks for the first queued command, then drains whatever else is already
//! queued (at most `max_batch` writes) into one transaction, commits it, and only then
//! publishes each committed observation on the feed and wakes its waiter. A lone
//! observation is committed at once — there is no batching timer — and under load the
//! batches grow by themselves, so one fsync covers thousands of rows.

use std::sync::Arc;
use std::sync::mpsc;

use roundtrip_core::observation::{NewObservation, Observation};
use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::rows::{self, WriteOp};
use crate::error::error_chain;
use crate::store::StoreError;

/// A reply channel.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A read run on the writer's connection (in-memory stores have no other connection).
pub(super) type ReadFn = Box<dyn FnOnce(&Connection) + Send>;

/// What the store asks of its writer.
pub(super) enum Command {
    /// Commit an observation (its headers already encoded as JSON).
    Record {
        observation: NewObservation,
        headers: String,
        reply: Reply<Arc<Observation>>,
    },
    /// Commit another write.
    Write { op: WriteOp, reply: Reply<()> },
    /// Run a read after everything queued before it is committed.
    Read(ReadFn),
    /// Commit everything queued before this, close the connection, stop.
    Close(Reply<()>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Record { observation, .. } => {
                f.debug_tuple("Record").field(&observation.run_id).finish()
            }
            Command::Write { op, .. } => f.debug_tuple("Write").field(op).finish(),
            Command::Read(_) => f.write_str("Read"),
            Command::Close(_) => f.write_str("Close"),
        }
    }
}

/// A write waiting for the batch's commit.
enum Pending {
    Record {
        observation: NewObservation,
        headers: String,
        reply: Reply<Arc<Observation>>,
    },
    Write {
        op: WriteOp,
        reply: Reply<()>,
    },
}

/// The state owned by the writer thread.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) feed: broadcast::Sender<Arc<Observation>>,
    pub(super) max_batch: usize,
}

impl Writer {
    /// The thread's body: runs until [`Command::Close`] or until the store is gone.
    pub(super) fn run(self) {
        let Writer {
            conn,
            commands,
            feed,
            max_batch,
        } = self;
        let mut pending = Vec::with_capacity(max_batch);
        let close = 'outer: loop {
            let Ok(mut command) = commands.recv() else {
                break None;
            };
            loop {
                match command {
                    Command::Record {
                        observation,
                        headers,
                        reply,
                    } => pending.push(Pending::Record {
                        observation,
                        headers,
                        reply,
                    }),
                    Command::Write { op, reply } => pending.push(Pending::Write { op, reply }),
                    Command::Read(read) => {
                        // A read sees exactly what is committed: never the open batch.
                        commit(&conn, &feed, &mut pending);
                        read(&conn);
                    }
                    Command::Close(reply) => {
                        commit(&conn, &feed, &mut pending);
                        break 'outer Some(reply);
                    }
                }
                if pending.len() >= max_batch {
                    break;
                }
                match commands.try_recv() {
                    Ok(next) => command = next,
                    Err(_) => break,
                }
            }
            commit(&conn, &feed, &mut pending);
        };
        // Commands queued after the close are dropped unanswered: their callers see
        // `StoreError::Closed`, and nothing they sent was acknowledged.
        drop(commands);
        drop(feed);
        let closed = conn.close().map_err(|(_, e)| StoreError::Io {
            operation: "close the database",
            source: Box::new(e),
        });
        if let Some(reply) = close {
            let _ = reply.send(closed);
        }
    }
}

/// Commits `pending` in one transaction, then publishes and answers each write.
fn commit(
    conn: &Connection,
    feed: &broadcast::Sender<Arc<Observation>>,
    pending: &mut Vec<Pending>,
) {
    if pending.is_empty() {
        return;
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(pending, "begin a transaction", e);
    }
    let mut outcomes = Vec::with_capacity(pending.len());
    for item in pending.iter() {
        let outcome = match item {
            Pending::Record {
                observation,
                headers,
                ..
            } => rows::insert_observation(conn, observation, headers),
            Pending::Write { op, .. } => rows::apply(op, conn).map(|()| 0),
        };
        // A failed statement is undone alone (constraint errors) and the batch goes on;
        // if SQLite had to roll back the whole transaction, everything in it failed.
        if outcome.is_err() && conn.is_autocommit() {
            return fail_whole_batch(pending, outcome);
        }
        outcomes.push(outcome);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        // After a failed COMMIT the transaction may still be open; nothing of it is kept.
        let _ = conn.execute_batch("ROLLBACK");
        return fail_all(pending, "commit a batch of writes", e);
    }
    for (item, outcome) in pending.drain(..).zip(outcomes) {
        match item {
            Pending::Record {
                observation, reply, ..
            } => {
                let committed = outcome.map(|seq| Arc::new(observation.committed(seq)));
                if let Ok(o) = &committed {
                    // Published before the waiter wakes: once `record` returns, every
                    // subscriber already has the observation queued. No subscriber is fine.
                    let _ = feed.send(Arc::clone(o));
                }
                let _ = reply.send(committed);
            }
            Pending::Write { reply, .. } => {
                let _ = reply.send(outcome.map(drop));
            }
        }
    }
}

fn fail_whole_batch(pending: &mut Vec<Pending>, outcome: Result<u64, StoreError>) {
    let message = match outcome {
        Err(e) => error_chain(&e),
        Ok(_) => String::from("the transaction was rolled back"),
    };
    let shared: Arc<dyn std::error::Error + Send + Sync> =
        Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(message));
    answer_all(pending, "commit a batch of writes", &shared);
}

fn fail_all(pending: &mut Vec<Pending>, operation: &'static str, e: rusqlite::Error) {
    let shared: Arc<dyn std::error::Error + Send + Sync> = Arc::new(e);
    answer_all(pending, operation, &shared);
}

fn answer_all(
    pending: &mut Vec<Pending>,
    operation: &'static str,
    cause: &Arc<dyn std::error::Error + Send + Sync>,
) {
    let error = || StoreError::Io {
        operation,
        source: Box::new(Shared(Arc::clone(cause))),
    };
    for item in pending.drain(..) {
        match item {
            Pending::Record { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Pending::Write { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
        }
    }
}

/// One error reported to every waiter of a failed batch.
#[derive(Debug)]
struct Shared(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use roundtrip_core::observation::Payload;
    use roundtrip_core::run::RunStatus;

    use super::*;
    use crate::store::RunRecord;
    use crate::store::sqlite::schema;

    fn observation(run_id: &str) -> NewObservation {
        NewObservation {
            run_id: run_id.to_owned(),
            channel: "out".to_owned(),
            correlation_id: None,
            payload: Payload::from_bytes(b"{}".to_vec(), 64),
            headers: vec![],
            message_id: None,
            key: None,
            meta: Vec::new(),
            received_at: 0,
            received_mono: None,
        }
    }

    fn record(
        run_id: &str,
    ) -> (
        Pending,
        oneshot::Receiver<Result<Arc<Observation>, StoreError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let pending = Pending::Record {
            observation: observation(run_id),
            headers: "[]".to_owned(),
            reply,
        };
        (pending, answer)
    }

    #[test]
    fn a_failing_write_fails_alone_and_the_batch_commits() {
        let conn = Connection::open_in_memory().expect("open");
        schema::configure_writer(&conn, std::time::Duration::from_secs(1), "FULL", false)
            .expect("configure");
        schema::migrate(&conn).expect("migrate");
        let (feed, mut subscriber) = broadcast::channel(16);
        let (create, created) = oneshot::channel();
        let run = RunRecord {
            run_id: "run".to_owned(),
            suite: "s".to_owned(),
            suite_path: "s.yaml".to_owned(),
            started_at: 0,
            finished_at: None,
            status: RunStatus::Running,
            owner: None,
        };
        let mut pending = vec![Pending::Write {
            op: WriteOp::CreateRun(run),
            reply: create,
        }];
        let mut answers = Vec::new();
        for run_id in ["run", "no-such-run", "run"] {
            let (item, answer) = record(run_id);
            pending.push(item);
            answers.push(answer);
        }

        commit(&conn, &feed, &mut pending);

        assert!(pending.is_empty());
        created
            .blocking_recv()
            .expect("answered")
            .expect("run created");
        let mut results = answers
            .into_iter()
            .map(|a| a.blocking_recv().expect("answered"));
        let first = results.next().expect("first").expect("committed");
        assert!(matches!(
            results.next(),
            Some(Err(StoreError::NoSuchRun(_)))
        ));
        let third = results.next().expect("third").expect("committed");
        assert!(first.seq < third.seq);
        // Only committed observations are published, in order.
        assert_eq!(subscriber.try_recv().expect("published").seq, first.seq);
        assert_eq!(subscriber.try_recv().expect("published").seq, third.seq);
        assert!(subscriber.try_recv().is_err());
        assert!(conn.is_autocommit(), "the transaction was left open");
    }
}
