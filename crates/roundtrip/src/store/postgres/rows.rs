//! The SQL of each operation, and conversions between rows and model types.
//!
//! Integers the model keeps as `u64` (sizes, monotonic times, sequence numbers) are
//! stored as `bigint`, bit for bit, so they round-trip exactly. Free-form strings are
//! `bytea` (see the schema's docs): [`b`] writes one, [`text`] reads it back.

use roundtrip_core::observation::{NewObservation, Observation, Payload, SentEvent};
use roundtrip_core::run::RunStatus;
use tokio_postgres::Row;

use crate::store::write::to_json;
use crate::store::{RunRecord, StoreError};

/// Stores a `u64` in a `bigint` (bit for bit).
pub(super) fn to_sql(v: u64) -> i64 {
    v as i64
}

/// Reads a `u64` stored by [`to_sql`].
pub(super) fn from_sql(v: i64) -> u64 {
    v as u64
}

/// A string as stored in a `bytea` column.
pub(super) fn b(s: &str) -> &[u8] {
    s.as_bytes()
}

/// A `bytea` column read back as the string it was written from.
fn text(row: &Row, column: usize) -> Result<String, StoreError> {
    let bytes: Vec<u8> = row.try_get(column).map_err(read_error("read a row"))?;
    String::from_utf8(bytes).map_err(|e| StoreError::Io {
        operation: "decode a stored string",
        source: Box::new(e),
    })
}

/// An optional `bytea` column read back as a string.
fn opt_text(row: &Row, column: usize) -> Result<Option<String>, StoreError> {
    let bytes: Option<Vec<u8>> = row.try_get(column).map_err(read_error("read a row"))?;
    bytes
        .map(String::from_utf8)
        .transpose()
        .map_err(|e| StoreError::Io {
            operation: "decode a stored string",
            source: Box::new(e),
        })
}

pub(super) fn read_error(
    operation: &'static str,
) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Io {
        operation,
        source: Box::new(e),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(
    json: &str,
    operation: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Io {
        operation,
        source: Box::new(e),
    })
}

/// Observations to insert together, as the columns of one `UNNEST`.
#[derive(Debug, Default)]
pub(super) struct ObservationColumns<'a> {
    run_id: Vec<&'a str>,
    channel: Vec<&'a [u8]>,
    correlation_id: Vec<Option<&'a [u8]>>,
    payload: Vec<&'a [u8]>,
    payload_size: Vec<i64>,
    truncated: Vec<bool>,
    is_json: Vec<bool>,
    headers: Vec<&'a str>,
    message_id: Vec<Option<&'a [u8]>>,
    key: Vec<Option<&'a [u8]>>,
    meta: Vec<&'a str>,
    received_at: Vec<i64>,
    received_mono: Vec<Option<i64>>,
}

/// An observation and its JSON columns, encoded before the transaction starts.
#[derive(Debug)]
pub(super) struct Encoded {
    pub(super) observation: NewObservation,
    pub(super) headers: String,
    pub(super) meta: String,
}

impl Encoded {
    pub(super) fn new(observation: NewObservation) -> Result<Encoded, StoreError> {
        Ok(Encoded {
            headers: to_json(&observation.headers, "encode observation headers")?,
            meta: to_json(&observation.meta, "encode observation metadata")?,
            observation,
        })
    }
}

impl<'a> ObservationColumns<'a> {
    pub(super) fn push(&mut self, e: &'a Encoded) {
        let o = &e.observation;
        self.run_id.push(&o.run_id);
        self.channel.push(b(&o.channel));
        self.correlation_id.push(o.correlation_id.as_deref().map(b));
        self.payload.push(&o.payload.bytes);
        self.payload_size.push(to_sql(o.payload.size));
        self.truncated.push(o.payload.truncated);
        self.is_json.push(o.payload.json.is_some());
        self.headers.push(&e.headers);
        self.message_id.push(o.message_id.as_deref().map(b));
        self.key.push(o.key.as_deref().map(b));
        self.meta.push(&e.meta);
        self.received_at.push(o.received_at);
        self.received_mono.push(o.received_mono.map(to_sql));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.run_id.is_empty()
    }

    /// Takes `len` sequence numbers and inserts every row with them, in order, in one
    /// statement; returns the first number.
    pub(super) async fn insert(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let n = i64::try_from(self.run_id.len()).unwrap_or(i64::MAX);
        let rows = tx
            .query(
                "WITH s AS (
                     UPDATE observation_seq SET next = next + $1 RETURNING next - $1 AS first)
                 INSERT INTO observations (seq, run_id, channel, correlation_id, payload,
                     payload_size, truncated, is_json, headers, message_id, key, meta,
                     received_at, received_mono)
                 SELECT s.first + u.ord - 1, u.run_id, u.channel, u.correlation_id, u.payload,
                     u.payload_size, u.truncated, u.is_json, u.headers, u.message_id, u.key,
                     u.meta, u.received_at, u.received_mono
                 FROM s, UNNEST($2::text[], $3::bytea[], $4::bytea[], $5::bytea[],
                     $6::bigint[], $7::boolean[], $8::boolean[], $9::text[], $10::bytea[],
                     $11::bytea[], $12::text[], $13::bigint[], $14::bigint[])
                     WITH ORDINALITY AS u(run_id, channel, correlation_id, payload,
                         payload_size, truncated, is_json, headers, message_id, key, meta,
                         received_at, received_mono, ord)
                 RETURNING seq",
                &[
                    &n,
                    &self.run_id,
                    &self.channel,
                    &self.correlation_id,
                    &self.payload,
                    &self.payload_size,
                    &self.truncated,
                    &self.is_json,
                    &self.headers,
                    &self.message_id,
                    &self.key,
                    &self.meta,
                    &self.received_at,
                    &self.received_mono,
                ],
            )
            .await?;
        let first = rows.iter().map(|r| r.get::<_, i64>(0)).min().unwrap_or(0);
        Ok(from_sql(first))
    }
}

/// The columns [`observation_row`] reads, in order.
pub(super) const OBSERVATION_COLUMNS: &str = "seq, run_id, channel, correlation_id, payload, \
     payload_size, truncated, is_json, headers, message_id, key, received_at, received_mono, \
     meta";

pub(super) fn observation_row(row: &Row) -> Result<Observation, StoreError> {
    let get = read_error("read an observation");
    let bytes: Vec<u8> = row.try_get(4).map_err(get)?;
    let is_json: bool = row.try_get(7).map_err(read_error("read an observation"))?;
    let headers: String = row.try_get(8).map_err(read_error("read an observation"))?;
    let meta: String = row.try_get(13).map_err(read_error("read an observation"))?;
    // The parsed JSON is not stored twice: it is the bytes, parsed again.
    let json = if is_json {
        serde_json::from_slice(&bytes).ok()
    } else {
        None
    };
    let int = |i: usize| -> Result<i64, StoreError> {
        row.try_get(i).map_err(read_error("read an observation"))
    };
    Ok(Observation {
        seq: from_sql(int(0)?),
        run_id: row.try_get(1).map_err(read_error("read an observation"))?,
        channel: text(row, 2)?,
        correlation_id: opt_text(row, 3)?,
        payload: Payload {
            bytes,
            size: from_sql(int(5)?),
            truncated: row.try_get(6).map_err(read_error("read an observation"))?,
            json,
        },
        headers: from_json(&headers, "decode observation headers")?,
        message_id: opt_text(row, 9)?,
        key: opt_text(row, 10)?,
        received_at: int(11)?,
        received_mono: row
            .try_get::<_, Option<i64>>(12)
            .map_err(read_error("read an observation"))?
            .map(from_sql),
        meta: from_json(&meta, "decode observation metadata")?,
    })
}

/// The columns [`sent_row`] reads, in order.
pub(super) const SENT_COLUMNS: &str =
    "run_id, scenario, idx, channel, correlation_id, sent_at, sent_mono, size, error";

pub(super) fn sent_row(row: &Row) -> Result<SentEvent, StoreError> {
    let int = |i: usize| -> Result<i64, StoreError> {
        row.try_get(i).map_err(read_error("read a sent event"))
    };
    Ok(SentEvent {
        run_id: row.try_get(0).map_err(read_error("read a sent event"))?,
        scenario: text(row, 1)?,
        index: from_sql(int(2)?),
        channel: text(row, 3)?,
        correlation_id: text(row, 4)?,
        sent_at: int(5)?,
        sent_mono: from_sql(int(6)?),
        size: from_sql(int(7)?),
        error: opt_text(row, 8)?,
    })
}

/// The columns [`run_row`] reads, in order.
pub(super) const RUN_COLUMNS: &str =
    "run_id, suite, suite_path, started_at, finished_at, status, owner";

pub(super) fn run_row(row: &Row) -> Result<RunRecord, StoreError> {
    let status: String = row.try_get(5).map_err(read_error("read a run"))?;
    Ok(RunRecord {
        run_id: row.try_get(0).map_err(read_error("read a run"))?,
        suite: text(row, 1)?,
        suite_path: text(row, 2)?,
        started_at: row.try_get(3).map_err(read_error("read a run"))?,
        finished_at: row.try_get(4).map_err(read_error("read a run"))?,
        status: RunStatus::parse(&status).ok_or_else(|| StoreError::Io {
            operation: "read a run",
            source: format!("`{status}` is not a run status").into(),
        })?,
        owner: opt_text(row, 6)?,
    })
}

pub(super) fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row,
    operation: &'static str,
) -> Result<T, StoreError> {
    let json: String = row.try_get(0).map_err(read_error(operation))?;
    from_json(&json, operation)
}
