//! The `redis_stream` listener: XREADGROUP and XACK after the store committed (or plain
//! XREAD from the stream's end), re-reading what was delivered but not acknowledged.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use roundtrip_core::model::RedisStreamChannel;
use tokio::sync::oneshot;

use crate::transport::backoff::Backoff;
use crate::transport::redis_stream::conn::RedisConn;
use crate::transport::redis_stream::producer::BODY_FIELD;
use crate::transport::{
    Delivery, DriverContext, GapKind, ListenError, Listener, ObservationSink, Outage, PlanError,
    Received, RunningListener,
};

/// Entries read per XREAD / XREADGROUP call.
const BATCH: usize = 1000;

/// How long one blocking read waits before the loop checks for a stop.
const BLOCK_MS: u64 = 500;

/// Reads a stream, in a consumer group (XACK after commit) or with plain XREAD.
#[derive(Debug)]
pub struct StreamListener {
    conn: RedisConn,
    stream: String,
    group: Option<String>,
    consumer: String,
}

impl StreamListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &RedisStreamChannel,
        ctx: &DriverContext,
    ) -> Result<StreamListener, PlanError> {
        Ok(StreamListener {
            conn: RedisConn::new(channel, spec, ctx)?,
            stream: spec.stream.clone(),
            group: spec.group.clone(),
            consumer: spec
                .consumer
                .clone()
                .unwrap_or_else(|| "roundtrip".to_owned()),
        })
    }
}

/// Where a stream listener reads from next.
#[derive(Debug)]
enum Cursor {
    /// Plain XREAD after this id.
    After(String),
    /// XREADGROUP; `pending` while re-reading this consumer's unacknowledged entries.
    Group {
        group: String,
        consumer: String,
        pending: bool,
    },
}

/// A blocking read answers within `BLOCK_MS`; a connection that goes silent for longer
/// than that plus the connect timeout is dead (a half-open TCP connection raises no
/// error by itself).
fn listener_response_timeout(connect: Duration) -> Duration {
    Duration::from_millis(BLOCK_MS) + connect
}

#[async_trait]
impl Listener for StreamListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let mut connection = self
            .conn
            .connect(listener_response_timeout(self.conn.timeout))
            .await
            .map_err(|m| crate::transport::error::start_error(&channel, m, "connect"))?;
        name_connection(&mut connection, &self.stream).await;
        // Readiness: the position is fixed before start returns, so every entry added
        // afterwards is read.
        let cursor = match &self.group {
            Some(group) => {
                let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.stream)
                    .arg(group)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut connection)
                    .await;
                match created {
                    Ok(()) => {}
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => {
                        return Err(crate::transport::error::start_error(
                            &channel,
                            format!("create consumer group `{group}` on `{}`", self.stream),
                            e,
                        ));
                    }
                }
                Cursor::Group {
                    group: group.clone(),
                    consumer: self.consumer.clone(),
                    pending: true,
                }
            }
            None => {
                let last: Vec<(String, Vec<(String, Vec<u8>)>)> = redis::cmd("XREVRANGE")
                    .arg(&self.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| {
                        crate::transport::error::start_error(
                            &channel,
                            "read the stream's last id",
                            e,
                        )
                    })?;
                Cursor::After(
                    last.first()
                        .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone()),
                )
            }
        };
        let delivery = if self.group.is_some() {
            Delivery::AtLeastOnce
        } else {
            Delivery::AtMostOnce
        };
        let endpoint = format!("{} stream {}", self.conn.endpoint, self.stream);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(read_stream(*self, connection, cursor, sink, stopped));
        Ok(RunningListener::new(endpoint, delivery, false, stop, task))
    }
}

impl Cursor {
    /// The command that reads the next batch from `stream` at this cursor.
    fn read_command(&self, stream: &str) -> redis::Cmd {
        match self {
            Cursor::After(id) => {
                let mut c = redis::cmd("XREAD");
                c.arg("COUNT").arg(BATCH).arg("BLOCK").arg(BLOCK_MS);
                c.arg("STREAMS").arg(stream).arg(id);
                c
            }
            Cursor::Group {
                group,
                consumer,
                pending,
            } => {
                let mut c = redis::cmd("XREADGROUP");
                c.arg("GROUP")
                    .arg(group)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(BATCH);
                if !pending {
                    c.arg("BLOCK").arg(BLOCK_MS);
                }
                c.arg("STREAMS")
                    .arg(stream)
                    .arg(if *pending { "0" } else { ">" });
                c
            }
        }
    }
}

/// Reads until `stopped` fires, recording into `sink`.
///
/// A group read blocked when the listener stops is not abandoned: Redis would still hand
/// the next entry to it (a blocked client is served before any that blocks later, and
/// an abandoned one stays blocked until its socket is closed), and that entry would sit
/// in this consumer's pending list, unseen by a listener started meanwhile. The stop
/// waits for that read to end (at most `BLOCK_MS`, since it returns as soon as an entry
/// arrives) and leaves what it returned pending, unrecorded: those entries arrived after
/// this run ended, and the consumer's next start reads them first, as redeliveries.
async fn read_stream(
    listener: StreamListener,
    mut connection: MultiplexedConnection,
    mut cursor: Cursor,
    sink: ObservationSink,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut backoff = Backoff::default();
    let mut down = Outage::default();
    loop {
        let reply = {
            let cmd = cursor.read_command(&listener.stream);
            let read = cmd.query_async::<Option<StreamReadReply>>(&mut connection);
            tokio::pin!(read);
            tokio::select! {
                reply = &mut read => reply,
                _ = &mut stopped => {
                    if matches!(cursor, Cursor::Group { .. }) {
                        let bound = listener_response_timeout(listener.conn.timeout);
                        let _ = tokio::time::timeout(bound, &mut read).await;
                    }
                    return;
                }
            }
        };
        let entries = match reply {
            Ok(reply) => {
                down.recovered(
                    &sink,
                    if matches!(cursor, Cursor::Group { .. }) {
                        "the group kept the position, nothing was skipped"
                    } else {
                        "reading resumed after the last entry read"
                    },
                );
                backoff.reset();
                reply
                    .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
                    .unwrap_or_default()
            }
            Err(e) => {
                down.failed(&sink, "connection lost", Some(e.to_string()));
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = &mut stopped => return,
                }
                if let Ok(mut fresh) = listener
                    .conn
                    .connect(listener_response_timeout(listener.conn.timeout))
                    .await
                {
                    name_connection(&mut fresh, &listener.stream).await;
                    connection = fresh;
                }
                continue;
            }
        };
        let redelivered = matches!(cursor, Cursor::Group { pending: true, .. });
        if redelivered && entries.is_empty() {
            if let Cursor::Group { pending, .. } = &mut cursor {
                *pending = false;
            }
            continue;
        }
        let mut recorded = Vec::with_capacity(entries.len());
        let stream_name = listener.stream.as_str();
        let records = entries.into_iter().map(|entry| {
            let sink = sink.clone();
            async move {
                if entry.map.is_empty() {
                    // Deleted while pending: nothing to record, but ack it away.
                    return Some(entry.id);
                }
                let mut received = entry_to_received(&entry.map)
                    .with_meta("stream", stream_name)
                    .with_meta("entry_id", entry.id.as_str());
                received.message_id = Some(entry.id.clone());
                received.redelivered = redelivered;
                sink.record(received).await.ok().map(|_| entry.id)
            }
        });
        for id in futures_util::future::join_all(records)
            .await
            .into_iter()
            .flatten()
        {
            recorded.push(id);
        }
        match &mut cursor {
            Cursor::After(last) => {
                if let Some(id) = recorded.last() {
                    last.clone_from(id);
                }
            }
            Cursor::Group { group, .. } if !recorded.is_empty() => {
                let acked: redis::RedisResult<i64> = redis::cmd("XACK")
                    .arg(&listener.stream)
                    .arg(&*group)
                    .arg(&recorded)
                    .query_async(&mut connection)
                    .await;
                if let Err(e) = acked {
                    sink.gap_counted(
                        GapKind::AckFailed,
                        format!(
                            "XACK of {} entries failed ({e}); they will be read again",
                            recorded.len()
                        ),
                        0,
                    );
                }
            }
            Cursor::Group { .. } => {}
        }
    }
}

/// The name a stream listener's connection carries in `CLIENT LIST`:
/// `roundtrip:<stream>`, with anything but visible ASCII replaced by `_`.
pub fn connection_name(stream: &str) -> String {
    let stream: String = stream
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("roundtrip:{stream}")
}

/// Names the connection (best effort), so an operator can tell a listener's connection
/// apart in `CLIENT LIST`.
async fn name_connection(connection: &mut MultiplexedConnection, stream: &str) {
    let _: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(connection_name(stream))
        .query_async(connection)
        .await;
}

fn entry_to_received(map: &std::collections::HashMap<String, Value>) -> Received {
    let bytes = |v: &Value| -> Vec<u8> {
        match v {
            Value::BulkString(b) => b.clone(),
            Value::SimpleString(s) => s.clone().into_bytes(),
            Value::Int(i) => i.to_string().into_bytes(),
            other => format!("{other:?}").into_bytes(),
        }
    };
    let text = |v: &Value| String::from_utf8_lossy(&bytes(v)).into_owned();
    match map.get(BODY_FIELD) {
        Some(body) => {
            let headers = map
                .iter()
                .filter(|(k, _)| k.as_str() != BODY_FIELD)
                .map(|(k, v)| (k.clone(), text(v)))
                .collect();
            Received::new(bytes(body), headers)
        }
        None => {
            let object: serde_json::Map<String, serde_json::Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(text(v))))
                .collect();
            let headers = map.iter().map(|(k, v)| (k.clone(), text(v))).collect();
            Received::new(serde_json::to_vec(&object).unwrap_or_default(), headers)
        }
    }
}
