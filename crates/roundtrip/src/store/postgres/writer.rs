//! The writer task: the only connection that writes, committing in groups.
//!
//! Like SQLite's writer thread: it waits for the first queued command, takes whatever
//! else is already queued (at most `max_batch` writes) into one transaction, commits it,
//! and only then publishes each committed observation on the feed and answers its
//! waiter. Writes are applied in the order they were handed over. No write can fail as
//! a statement (which would abort the whole transaction): an unknown run or a run
//! created twice is found by a row count (`WHERE EXISTS`, `ON CONFLICT DO NOTHING`) and
//! answered alone, [`StoreError::NoSuchRun`] for an observation or write of an unknown
//! run, while the rest of its batch commits. No savepoints, so no subtransactions. Sequence numbers come from `observation_seq`, whose row lock makes
//! them follow commit order across processes (see the schema's docs).
//!
//! A lost connection fails the batch in flight (its waiters get the error; nothing of it
//! was acknowledged) and the writer reconnects for the next one.

use std::collections::HashSet;
use std::sync::Arc;

use roundtrip_core::observation::Observation;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use super::follow::{Committed, channel};
use super::rows::{Encoded, ObservationColumns, b, to_sql};
use super::{PostgresOptions, connect};
use crate::error::error_chain;
use crate::store::StoreError;
use crate::store::write::WriteOp;

/// Payload bytes per batch: far below Postgres' 1 GB limit on one message or array.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// A reply channel.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the store asks of its writer.
#[derive(Debug)]
pub(super) enum Command {
    Record {
        observation: Box<Encoded>,
        reply: Reply<Arc<Observation>>,
    },
    Write {
        op: WriteOp,
        reply: Reply<()>,
    },
    /// Commit everything queued before this, then stop.
    Close(Reply<()>),
}

enum Answer {
    Record(
        Reply<Arc<Observation>>,
        Result<Arc<Observation>, StoreError>,
    ),
    Write(Reply<()>, Result<(), StoreError>),
}

enum Pending {
    Record(Box<Encoded>, Reply<Arc<Observation>>),
    Write(WriteOp, Reply<()>),
}

pub(super) struct Writer {
    pub(super) client: Option<Client>,
    pub(super) options: PostgresOptions,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    /// Where committed observations go to be published (the follower owns the feed).
    pub(super) committed: mpsc::UnboundedSender<Committed>,
    pub(super) follower: tokio::task::JoinHandle<()>,
    /// Runs known to exist.
    pub(super) runs: HashSet<String>,
}

impl Writer {
    pub(super) async fn run(mut self) {
        let mut pending = Vec::with_capacity(self.options.max_batch);
        let close = 'outer: loop {
            let Some(mut command) = self.commands.recv().await else {
                break None;
            };
            let mut bytes = 0;
            loop {
                match command {
                    Command::Record { observation, reply } => {
                        bytes += observation.observation.payload.bytes.len();
                        pending.push(Pending::Record(observation, reply));
                    }
                    Command::Write { op, reply } => pending.push(Pending::Write(op, reply)),
                    Command::Close(reply) => {
                        self.commit(&mut pending).await;
                        break 'outer Some(reply);
                    }
                }
                // One large observation still fits a batch alone.
                if pending.len() >= self.options.max_batch || bytes >= MAX_BATCH_BYTES {
                    break;
                }
                match self.commands.try_recv() {
                    Ok(next) => command = next,
                    Err(_) => break,
                }
            }
            self.commit(&mut pending).await;
        };
        // Commands queued after the close are dropped unanswered: their callers see
        // `StoreError::Closed`, and nothing they sent was acknowledged.
        self.commands.close();
        drop(self.committed);
        drop(self.client);
        // The feed ends when the follower stops.
        let _ = self.follower.await;
        if let Some(reply) = close {
            let _ = reply.send(Ok(()));
        }
    }

    /// Commits `pending` in one transaction, then publishes and answers each write.
    async fn commit(&mut self, pending: &mut Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            match connect(&self.options).await {
                Ok(client) => self.client = Some(client),
                Err(e) => return fail_all(pending, "connect to Postgres", &error_chain(&e)),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let notify = channel(&self.options.schema);
        let hold = self.options.hold_in_transaction;
        let mut applied = apply(client, pending, &notify, hold, &mut self.runs).await;
        if let Err(e) = &applied
            && e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
        {
            // A run this writer knew was deleted since (`gc`): the batch was rolled back
            // whole; look every run up again and apply it once more.
            self.runs.clear();
            applied = apply(client, pending, &notify, hold, &mut self.runs).await;
        }
        let outcomes = match applied {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.runs.clear();
                if client.is_closed() {
                    self.client = None;
                }
                return fail_all(pending, "commit a batch of writes", &error_chain(&e));
            }
        };
        let mut replies = Vec::with_capacity(pending.len());
        let mut observations = Vec::new();
        for (item, outcome) in pending.drain(..).zip(outcomes) {
            match item {
                Pending::Record(encoded, reply) => {
                    let committed = outcome.map(|seq| Arc::new(encoded.observation.committed(seq)));
                    if let Ok(o) = &committed {
                        observations.push(Arc::clone(o));
                    }
                    replies.push(Answer::Record(reply, committed));
                }
                Pending::Write(_, reply) => replies.push(Answer::Write(reply, outcome.map(drop))),
            }
        }
        // On the feed before the waiters wake, as SQLite's writer does.
        if !observations.is_empty() {
            let (published, done) = oneshot::channel();
            let batch = Committed {
                observations,
                published,
            };
            if self.committed.send(batch).is_ok() {
                let _ = done.await;
            }
        }
        for answer in replies {
            match answer {
                Answer::Record(reply, committed) => {
                    let _ = reply.send(committed);
                }
                Answer::Write(reply, outcome) => {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// Runs the batch in one transaction; one outcome per item (a sequence number for an
/// observation), or the error that undid all of it.
async fn apply(
    client: &mut Client,
    pending: &[Pending],
    notify: &str,
    hold: Option<(std::time::Duration, std::time::Duration)>,
    runs: &mut HashSet<String>,
) -> Result<Vec<Result<u64, StoreError>>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    hold_for(hold).await;
    let mut outcomes: Vec<Option<Result<u64, StoreError>>> = Vec::with_capacity(pending.len());
    outcomes.resize_with(pending.len(), || None);
    let mut start = 0;
    while start < pending.len() {
        match &pending[start] {
            Pending::Write(op, _) => {
                outcomes[start] = Some(apply_write(op, &tx).await?.map(|()| 0));
                start += 1;
            }
            Pending::Record(..) => {
                // The observations up to the next other write, in one statement.
                let end = pending[start..]
                    .iter()
                    .position(|p| matches!(p, Pending::Write(..)))
                    .map_or(pending.len(), |n| start + n);
                insert_observations(&tx, &pending[start..end], &mut outcomes[start..end], runs)
                    .await?;
                start = end;
            }
        }
    }
    hold_for(hold).await;
    let recorded = pending
        .iter()
        .zip(&outcomes)
        .any(|(p, o)| matches!(p, Pending::Record(..)) && matches!(o, Some(Ok(_))));
    if recorded {
        // One wake-up per batch, delivered with the commit (never one per row: a NOTIFY
        // takes a lock at commit that serialises every notifying transaction).
        tx.execute("SELECT pg_notify($1, '')", &[&notify]).await?;
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::Closed)))
        .collect())
}

/// Inserts a run of observations: those of unknown runs are answered `NoSuchRun`, the
/// others take consecutive sequence numbers (the row lock on `observation_seq` is held
/// until the commit) and go in with one `INSERT … SELECT FROM UNNEST`.
async fn insert_observations(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[Pending],
    outcomes: &mut [Option<Result<u64, StoreError>>],
    runs: &mut HashSet<String>,
) -> Result<(), tokio_postgres::Error> {
    let encoded: Vec<&Encoded> = items
        .iter()
        .filter_map(|p| match p {
            Pending::Record(e, _) => Some(&**e),
            Pending::Write(..) => None,
        })
        .collect();
    // Runs already seen need no look-up (runs are deleted only by `gc`, long after their
    // last observation; a deleted one fails the batch on its foreign key, and the cache
    // is emptied). A run id Postgres text cannot hold (a NUL) names no run.
    let asked: Vec<&str> = encoded
        .iter()
        .map(|e| e.observation.run_id.as_str())
        .filter(|id| !id.contains('\0') && !runs.contains(*id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !asked.is_empty() {
        for row in tx
            .query("SELECT run_id FROM runs WHERE run_id = ANY($1)", &[&asked])
            .await?
        {
            runs.insert(row.get(0));
        }
    }
    let mut columns = ObservationColumns::default();
    for e in &encoded {
        if runs.contains(&e.observation.run_id) {
            columns.push(e);
        }
    }
    let mut next = if columns.is_empty() {
        0
    } else {
        columns.insert(tx).await?
    };
    for (e, outcome) in encoded.iter().zip(outcomes.iter_mut()) {
        if runs.contains(&e.observation.run_id) {
            *outcome = Some(Ok(next));
            next += 1;
        } else {
            *outcome = Some(Err(StoreError::NoSuchRun(e.observation.run_id.clone())));
        }
    }
    Ok(())
}

/// The test-only pause of [`PostgresOptions::hold_in_transaction`].
async fn hold_for(hold: Option<(std::time::Duration, std::time::Duration)>) {
    if let Some((min, max)) = hold {
        let span = max.saturating_sub(min).as_micros() as u64;
        let extra = if span == 0 {
            0
        } else {
            rand::random::<u64>() % span
        };
        tokio::time::sleep(min + std::time::Duration::from_micros(extra)).await;
    }
}

/// Applies the write inside the batch's transaction. Written so that it cannot fail
/// as a statement (which would abort the whole transaction): a missing run, or a run
/// created twice, is the inner error, found by the statement's row count. The outer
/// error is a failure of the transaction itself.
async fn apply_write(
    op: &WriteOp,
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Result<(), StoreError>, tokio_postgres::Error> {
    let run_id = op.run_id();
    // A run id Postgres text cannot hold names no run (and would fail the statement).
    if run_id.contains('\0') {
        return Ok(Err(match op {
            WriteOp::CreateRun(_) | WriteOp::JoinRun(_) => StoreError::Io {
                operation: "create the run",
                source: "a run id cannot contain a NUL character".into(),
            },
            _ => StoreError::NoSuchRun(run_id.to_owned()),
        }));
    }
    let changed = match op {
        WriteOp::CreateRun(r) | WriteOp::JoinRun(r) => {
            let created = tx
                .execute(
                    "INSERT INTO runs (run_id, suite, suite_path, started_at, finished_at,
                             status, owner)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (run_id) DO NOTHING",
                    &[
                        &r.run_id,
                        &b(&r.suite),
                        &b(&r.suite_path),
                        &r.started_at,
                        &r.finished_at,
                        &r.status.as_str(),
                        &r.owner.as_deref().map(b),
                    ],
                )
                .await?;
            // Joining a run that exists is what a join is for.
            if created == 0 && matches!(op, WriteOp::CreateRun(_)) {
                return Ok(Err(StoreError::Io {
                    operation: "create the run",
                    source: format!("run `{}` already exists", r.run_id).into(),
                }));
            }
            return Ok(Ok(()));
        }
        WriteOp::LoadPart { run_id, part } => {
            tx.execute(
                "INSERT INTO load_parts (run_id, worker, kind, idx, body)
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = $1)
                     ON CONFLICT (run_id, worker, kind, idx) DO UPDATE SET body = excluded.body",
                &[
                    run_id,
                    &i32::from(part.worker),
                    &part.kind.name(),
                    &to_sql(part.kind.index()),
                    &part.body,
                ],
            )
            .await?
        }
        WriteOp::Sent(e) => {
            tx.execute(
                "INSERT INTO sent_events (run_id, scenario, idx, channel, correlation_id,
                         sent_at, sent_mono, size, error)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
                     WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = $1)
                     ON CONFLICT (run_id, scenario, idx) DO UPDATE SET
                         channel = excluded.channel, correlation_id = excluded.correlation_id,
                         sent_at = excluded.sent_at, sent_mono = excluded.sent_mono,
                         size = excluded.size, error = excluded.error",
                &[
                    &e.run_id,
                    &b(&e.scenario),
                    &to_sql(e.index),
                    &b(&e.channel),
                    &b(&e.correlation_id),
                    &e.sent_at,
                    &to_sql(e.sent_mono),
                    &to_sql(e.size),
                    &e.error.as_deref().map(b),
                ],
            )
            .await?
        }
        WriteOp::Scenario { run_id, name, json } => {
            tx.execute(
                "INSERT INTO scenario_results (run_id, name, result)
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = $1)
                     ON CONFLICT (run_id, name) DO UPDATE SET result = excluded.result",
                &[run_id, &b(name), json],
            )
            .await?
        }
        WriteOp::Finish {
            run_id,
            finished_at,
            status,
            json,
        } => {
            tx.execute(
                "UPDATE runs SET finished_at = $2, status = $3, summary = $4
                     WHERE run_id = $1",
                &[run_id, finished_at, &status.as_str(), json],
            )
            .await?
        }
    };
    Ok(if changed == 0 {
        Err(StoreError::NoSuchRun(run_id.to_owned()))
    } else {
        Ok(())
    })
}

fn fail_all(pending: &mut Vec<Pending>, operation: &'static str, why: &str) {
    let error = || StoreError::Io {
        operation,
        source: why.to_owned().into(),
    };
    for item in pending.drain(..) {
        match item {
            Pending::Record(_, reply) => {
                let _ = reply.send(Err(error()));
            }
            Pending::Write(_, reply) => {
                let _ = reply.send(Err(error()));
            }
        }
    }
}
