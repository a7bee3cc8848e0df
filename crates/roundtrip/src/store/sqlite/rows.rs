//! The SQL of each operation, and conversions between rows and model types.
//!
//! Integers the model keeps as `u64` (sizes, monotonic times, sequence numbers) are
//! stored as SQLite's signed 64-bit integers, bit for bit, so they round-trip exactly.

use roundtrip_core::observation::{NewObservation, Observation, Payload, SentEvent};
use roundtrip_core::run::RunStatus;
use roundtrip_core::run::{RunSummary, ScenarioResult};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

pub(super) use crate::store::write::WriteOp;
use crate::store::{LoadPart, RunRecord, StoreError, load_part_kind};

/// Stores a `u64` in an SQLite integer (bit for bit).
fn to_sql(v: u64) -> i64 {
    v as i64
}

/// Reads a `u64` stored by [`to_sql`].
fn from_sql(v: i64) -> u64 {
    v as u64
}

/// An observation's headers as stored (JSON text).
pub(super) fn headers_json(headers: &[(String, String)]) -> Result<String, StoreError> {
    serde_json::to_string(headers).map_err(|e| StoreError::Io {
        operation: "encode observation headers",
        source: Box::new(e),
    })
}

/// Maps a write's error: a foreign-key violation means the run does not exist.
fn write_error(operation: &'static str, run_id: &str, e: rusqlite::Error) -> StoreError {
    let fk = e
        .sqlite_error()
        .is_some_and(|s| s.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY);
    if fk {
        StoreError::NoSuchRun(run_id.to_owned())
    } else {
        StoreError::Io {
            operation,
            source: Box::new(e),
        }
    }
}

fn read_error(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Io {
        operation,
        source: Box::new(e),
    }
}

/// Inserts an observation; returns its sequence number (the rowid).
pub(super) fn insert_observation(
    conn: &Connection,
    o: &NewObservation,
    headers: &str,
) -> Result<u64, StoreError> {
    // Metadata as JSON text like the headers; most transports record a few entries.
    let meta = serde_json::to_string(&o.meta).unwrap_or_else(|_| "[]".to_owned());
    let run = || -> rusqlite::Result<u64> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO observations (run_id, channel, correlation_id, payload, payload_size,
                 truncated, is_json, headers, message_id, key, received_at, received_mono, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        stmt.execute(params![
            o.run_id,
            o.channel,
            o.correlation_id,
            o.payload.bytes,
            to_sql(o.payload.size),
            o.payload.truncated,
            o.payload.json.is_some(),
            headers,
            o.message_id,
            o.key,
            o.received_at,
            o.received_mono.map(to_sql),
            meta,
        ])?;
        Ok(from_sql(conn.last_insert_rowid()))
    };
    run().map_err(|e| write_error("record an observation", &o.run_id, e))
}

/// Applies `op` inside the writer's open transaction (one statement each, so a
/// failure leaves nothing half-done).
pub(super) fn apply(op: &WriteOp, conn: &Connection) -> Result<(), StoreError> {
    match op {
        WriteOp::CreateRun(r) | WriteOp::JoinRun(r) => {
            let created = conn
                .prepare_cached(
                    "INSERT INTO runs (run_id, suite, suite_path, started_at, finished_at,
                             status, owner)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (run_id) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        r.run_id,
                        r.suite,
                        r.suite_path,
                        r.started_at,
                        r.finished_at,
                        r.status.as_str(),
                        r.owner
                    ])
                })
                .map_err(|e| write_error("create the run", &r.run_id, e))?;
            // Joining a run that exists is what a join is for.
            if created == 0 && matches!(op, WriteOp::CreateRun(_)) {
                return Err(StoreError::Io {
                    operation: "create the run",
                    source: format!("run `{}` already exists", r.run_id).into(),
                });
            }
            Ok(())
        }
        WriteOp::LoadPart { run_id, part } => {
            let changed = conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO load_parts (run_id, worker, kind, idx, body)
                         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS
                             (SELECT 1 FROM runs WHERE run_id = ?1)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        run_id,
                        part.worker,
                        part.kind.name(),
                        to_sql(part.kind.index()),
                        part.body
                    ])
                })
                .map_err(|e| write_error("record a load part", run_id, e))?;
            if changed == 0 {
                return Err(StoreError::NoSuchRun(run_id.clone()));
            }
            Ok(())
        }
        WriteOp::Sent(e) => conn
            .prepare_cached(
                "INSERT OR REPLACE INTO sent_events (run_id, scenario, idx, channel,
                         correlation_id, sent_at, sent_mono, size, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    e.run_id,
                    e.scenario,
                    to_sql(e.index),
                    e.channel,
                    e.correlation_id,
                    e.sent_at,
                    to_sql(e.sent_mono),
                    to_sql(e.size),
                    e.error,
                ])
            })
            .map(drop)
            .map_err(|err| write_error("record a sent event", &e.run_id, err)),
        WriteOp::Scenario { run_id, name, json } => conn
            .prepare_cached(
                "INSERT INTO scenario_results (run_id, name, result) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run_id, name) DO UPDATE SET result = excluded.result",
            )
            .and_then(|mut s| s.execute(params![run_id, name, json]))
            .map(drop)
            .map_err(|e| write_error("record a scenario result", run_id, e)),
        WriteOp::Finish {
            run_id,
            finished_at,
            status,
            json,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE runs SET finished_at = ?2, status = ?3, summary = ?4
                         WHERE run_id = ?1",
                )
                .and_then(|mut s| s.execute(params![run_id, finished_at, status.as_str(), json]))
                .map_err(|e| write_error("finish the run", run_id, e))?;
            if changed == 0 {
                return Err(StoreError::NoSuchRun(run_id.clone()));
            }
            Ok(())
        }
    }
}

fn observation_row(row: &Row<'_>) -> rusqlite::Result<Observation> {
    let bytes: Vec<u8> = row.get(4)?;
    let truncated: bool = row.get(6)?;
    let is_json: bool = row.get(7)?;
    let headers: String = row.get(8)?;
    let headers: Vec<(String, String)> = serde_json::from_str(&headers)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, Type::Text, Box::new(e)))?;
    let meta: String = row.get(13)?;
    let meta: Vec<(String, String)> = serde_json::from_str(&meta)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(13, Type::Text, Box::new(e)))?;
    // The parsed JSON is not stored twice: it is the bytes, parsed again.
    let json = if is_json {
        serde_json::from_slice(&bytes).ok()
    } else {
        None
    };
    Ok(Observation {
        seq: from_sql(row.get(0)?),
        run_id: row.get(1)?,
        channel: row.get(2)?,
        correlation_id: row.get(3)?,
        payload: Payload {
            bytes,
            size: from_sql(row.get(5)?),
            truncated,
            json,
        },
        headers,
        message_id: row.get(9)?,
        key: row.get(10)?,
        received_at: row.get(11)?,
        received_mono: row.get::<_, Option<i64>>(12)?.map(from_sql),
        meta,
    })
}

/// A run's observations with `seq > after`, in sequence order, at most `limit`.
pub(super) fn observations(
    conn: &Connection,
    run_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Observation>, StoreError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let run = || -> rusqlite::Result<Vec<Observation>> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, run_id, channel, correlation_id, payload, payload_size, truncated,
                    is_json, headers, message_id, key, received_at, received_mono, meta
             FROM observations WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        stmt.query_map(params![run_id, after, limit], observation_row)?
            .collect()
    };
    run().map_err(read_error("read observations"))
}

/// A run's sent events, in send order.
pub(super) fn sent_events(conn: &Connection, run_id: &str) -> Result<Vec<SentEvent>, StoreError> {
    let run = || -> rusqlite::Result<Vec<SentEvent>> {
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, scenario, idx, channel, correlation_id, sent_at, sent_mono, size, error
             FROM sent_events WHERE run_id = ?1 ORDER BY sent_mono, scenario, idx",
        )?;
        stmt.query_map([run_id], |row| {
            Ok(SentEvent {
                run_id: row.get(0)?,
                scenario: row.get(1)?,
                index: from_sql(row.get(2)?),
                channel: row.get(3)?,
                correlation_id: row.get(4)?,
                sent_at: row.get(5)?,
                sent_mono: from_sql(row.get(6)?),
                size: from_sql(row.get(7)?),
                error: row.get(8)?,
            })
        })?
        .collect()
    };
    run().map_err(read_error("read sent events"))
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: row.get(0)?,
        suite: row.get(1)?,
        suite_path: row.get(2)?,
        started_at: row.get(3)?,
        finished_at: row.get(4)?,
        status: {
            let text: String = row.get(5)?;
            RunStatus::parse(&text).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    5,
                    rusqlite::types::Type::Text,
                    format!("`{text}` is not a run status").into(),
                )
            })?
        },
        owner: row.get(6)?,
    })
}

/// The most recent runs, newest first.
pub(super) fn runs(conn: &Connection, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let run = || -> rusqlite::Result<Vec<RunRecord>> {
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, suite, suite_path, started_at, finished_at, status, owner FROM runs
             ORDER BY started_at DESC, run_id DESC LIMIT ?1",
        )?;
        stmt.query_map([limit], run_row)?.collect()
    };
    run().map_err(read_error("list runs"))
}

/// One run's record.
pub(super) fn run(conn: &Connection, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT run_id, suite, suite_path, started_at, finished_at, status, owner FROM runs
         WHERE run_id = ?1",
    )
    .and_then(|mut s| s.query_row([run_id], run_row).optional())
    .map_err(read_error("read the run"))
}

/// A finished run's summary.
pub(super) fn run_summary(
    conn: &Connection,
    run_id: &str,
) -> Result<Option<RunSummary>, StoreError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT summary FROM runs WHERE run_id = ?1")
        .and_then(|mut s| {
            s.query_row([run_id], |row| row.get::<_, Option<String>>(0))
                .optional()
        })
        .map_err(read_error("read the run summary"))?
        .flatten();
    json.map(|j| serde_json::from_str(&j))
        .transpose()
        .map_err(|e| StoreError::Io {
            operation: "decode the run summary",
            source: Box::new(e),
        })
}

/// A run's scenario results, in the order first recorded.
pub(super) fn load_parts(conn: &Connection, run_id: &str) -> Result<Vec<LoadPart>, StoreError> {
    let rows: Vec<(u16, String, i64, String)> = conn
        .prepare_cached("SELECT worker, kind, idx, body FROM load_parts WHERE run_id = ?1")
        .and_then(|mut s| {
            s.query_map([run_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect()
        })
        .map_err(read_error("read load parts"))?;
    let mut parts = rows
        .into_iter()
        .map(|(worker, kind, idx, body)| {
            Ok(LoadPart {
                worker,
                kind: load_part_kind(&kind, from_sql(idx))?,
                body,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    parts.sort_by_key(|p| (p.worker, p.kind));
    Ok(parts)
}

pub(super) fn scenario_results(
    conn: &Connection,
    run_id: &str,
) -> Result<Vec<ScenarioResult>, StoreError> {
    let rows: Vec<String> = conn
        .prepare_cached("SELECT result FROM scenario_results WHERE run_id = ?1 ORDER BY id")
        .and_then(|mut s| s.query_map([run_id], |row| row.get(0))?.collect())
        .map_err(read_error("read scenario results"))?;
    rows.iter()
        .map(|j| serde_json::from_str(j))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Io {
            operation: "decode a scenario result",
            source: Box::new(e),
        })
}
