//! The `jetstream` listener: a pull consumer, acked after the store committed.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use async_trait::async_trait;
use futures_util::StreamExt;
use roundtrip_core::model::JetStreamChannel;
use tokio::sync::oneshot;

use crate::transport::jetstream::producer::ensure_stream;
use crate::transport::nats::conn::{DEFAULT_BUFFER, IN_FLIGHT, NatsConn, headers_of};
use crate::transport::{
    Delivery, DriverContext, GapKind, ListenError, Listener, ObservationSink, PlanError, Received,
    RunningListener,
};

/// Consumes a JetStream stream through a pull consumer; acks after the store committed.
#[derive(Debug)]
pub struct JetStreamListener {
    conn: NatsConn,
    stream: String,
    subject: String,
    create: bool,
    durable: Option<String>,
    ack_wait: Duration,
}

impl JetStreamListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &JetStreamChannel,
        ctx: &DriverContext,
    ) -> Result<JetStreamListener, PlanError> {
        Ok(JetStreamListener {
            conn: NatsConn::new(channel, spec, ctx)?,
            stream: spec.stream.clone(),
            subject: spec.subject.clone(),
            create: spec.create,
            durable: spec.durable.clone(),
            ack_wait: spec.ack_wait.map_or(Duration::from_secs(30), |d| d.0),
        })
    }
}

#[async_trait]
impl Listener for JetStreamListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let client = self
            .conn
            .connect(DEFAULT_BUFFER, Some(sink.clone()))
            .await
            .map_err(|m| crate::transport::error::start_error(&channel, m, "connect"))?;
        let js = jetstream::new(client);
        let stream = if self.create {
            ensure_stream(&js, &self.stream, &self.subject)
                .await
                .map_err(|m| crate::transport::error::start_error(&channel, m, "create stream"))?
        } else {
            js.get_stream(&self.stream).await.map_err(|e| {
                crate::transport::error::start_error(
                    &channel,
                    format!(
                        "stream `{}` is not there ({e}); create it, or set `create: true`",
                        self.stream
                    ),
                    "get stream",
                )
            })?
        };
        let config = pull::Config {
            durable_name: self.durable.clone(),
            filter_subject: self.subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            max_ack_pending: 20_000,
            inactive_threshold: Duration::from_secs(300),
            ..Default::default()
        };
        // Creating the consumer fixes its start sequence: every message stored after this
        // returns is delivered (a durable one resumes where it stopped).
        let consumer = match &self.durable {
            Some(name) => stream.get_or_create_consumer(name, config).await,
            None => stream.create_consumer(config).await,
        }
        .map_err(|e| crate::transport::error::start_error(&channel, "create the consumer", e))?;
        // The first pull request is made before `start` returns, so that a consumer that
        // cannot be pulled from fails here.
        let first = pull_batch(&consumer)
            .await
            .map_err(|e| crate::transport::error::start_error(&channel, "start consuming", e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = Arc::clone(&stopping);
            let watcher = tokio::spawn(async move {
                let _ = stopped.await;
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut batch = Some(first);
            let mut backoff = crate::transport::backoff::Backoff::default();
            loop {
                let messages = match batch.take() {
                    Some(b) => b,
                    None if stopping.load(std::sync::atomic::Ordering::Relaxed) => break,
                    None => match pull_batch(&consumer).await {
                        Ok(b) => {
                            backoff.reset();
                            b
                        }
                        Err(e) => {
                            sink.consumer_error(e);
                            tokio::time::sleep(backoff.next_delay()).await;
                            continue;
                        }
                    },
                };
                // A pull request ends by itself within PULL_EXPIRES; no new one is made
                // once the listener stops, and what the last one still delivers is
                // released at once (nak) for the next consumer of a durable, instead of
                // waiting out `ack_wait` unacknowledged.
                messages
                    .for_each_concurrent(IN_FLIGHT, |msg| {
                        let sink = sink.clone();
                        let stopping = Arc::clone(&stopping);
                        async move {
                            let msg = match msg {
                                Ok(msg) => msg,
                                Err(e) => {
                                    // The end of a pull request is not an error.
                                    if !is_batch_end(&e) {
                                        sink.consumer_error(e);
                                    }
                                    return;
                                }
                            };
                            if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                                let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
                                return;
                            }
                            record_jetstream(&sink, msg).await;
                        }
                    })
                    .await;
            }
            watcher.abort();
            // Acks queued just before the stop must reach the server before the client
            // goes: async-nats drops unsent commands when it is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(5), js.client().flush()).await;
            drop(js);
        });
        Ok(RunningListener::new(
            format!(
                "{} stream {} subject {}",
                self.conn.endpoint(),
                self.stream,
                self.subject
            ),
            Delivery::AtLeastOnce,
            false,
            stop,
            task,
        ))
    }
}

/// How long one pull request waits for messages; also the longest a stop waits for the
/// last one to end.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Messages asked for per pull request.
const PULL_BATCH: usize = 500;

/// One pull request: the messages delivered for it, until it is full or expires.
async fn pull_batch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
) -> Result<jetstream::consumer::pull::Batch, jetstream::consumer::pull::BatchError> {
    consumer
        .batch()
        .max_messages(PULL_BATCH)
        .expires(PULL_EXPIRES)
        .messages()
        .await
}

/// Whether a batch's error only says that the pull request ended.
fn is_batch_end(e: &async_nats::Error) -> bool {
    let text = e.to_string();
    text.contains("timed out") || text.contains("Request Timeout") || text.contains("no messages")
}

/// Records one JetStream message and acks it once the store holds it; an unacked
/// message is redelivered after `ack_wait`.
async fn record_jetstream(sink: &ObservationSink, msg: jetstream::Message) {
    let mut received = Received::new(msg.payload.to_vec(), headers_of(msg.headers.as_ref()))
        .with_meta("subject", msg.subject.to_string());
    received.key = Some(msg.subject.to_string());
    if let Ok(info) = msg.info() {
        received.redelivered = info.delivered > 1;
        received.message_id = Some(format!("{}", info.stream_sequence));
        received.meta.extend([
            ("stream".to_owned(), info.stream.to_owned()),
            (
                "stream_sequence".to_owned(),
                info.stream_sequence.to_string(),
            ),
            ("delivered".to_owned(), info.delivered.to_string()),
        ]);
    }
    if sink.record(received).await.is_ok() && msg.ack().await.is_err() {
        sink.gap_counted(
            GapKind::AckFailed,
            "an ack was not delivered; the message will come again",
            0,
        );
    }
}
