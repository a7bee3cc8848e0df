//! The `nats` listener: a subscription with a large buffer, confirmed by a round trip
//! to the server before the listener reports ready.

use std::time::Duration;

use async_nats::Client;
use async_trait::async_trait;
use futures_util::StreamExt;
use roundtrip_core::model::NatsChannel;
use tokio::sync::oneshot;

use crate::transport::nats::conn::{DEFAULT_BUFFER, IN_FLIGHT, NatsConn, headers_of};
use crate::transport::{
    Delivery, DriverContext, ListenError, Listener, ObservationSink, PlanError, Received,
    RunningListener,
};

/// Proves the server has processed every SUB sent so far: it handles one connection's
/// protocol messages in order, so once a probe published after them comes back on a
/// probe subscription made after them, they are in effect.
async fn confirm_subscribed(client: &Client, timeout: Duration) -> Result<(), String> {
    let subject = format!("_ROUNDTRIP.probe.{}", uuid::Uuid::new_v4().simple());
    let mut probe = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| format!("subscribe the readiness probe: {e}"))?;
    client
        .publish(subject, bytes::Bytes::new())
        .await
        .map_err(|e| format!("publish the readiness probe: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("flush the readiness probe: {e}"))?;
    match tokio::time::timeout(timeout, probe.next()).await {
        Ok(Some(_)) => {
            let _ = probe.unsubscribe().await;
            Ok(())
        }
        Ok(None) => Err("the connection closed before the subscription was confirmed".into()),
        Err(_) => Err(format!(
            "the server did not confirm the subscription within {timeout:?}"
        )),
    }
}

/// Subscribes to a NATS subject (wildcards allowed). At-most-once.
#[derive(Debug)]
pub struct NatsListener {
    conn: NatsConn,
    subject: String,
    queue_group: Option<String>,
    buffer: usize,
}

impl NatsListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &NatsChannel,
        ctx: &DriverContext,
    ) -> Result<NatsListener, PlanError> {
        Ok(NatsListener {
            conn: NatsConn::new(channel, spec, ctx)?,
            subject: spec.subject.clone(),
            queue_group: spec.queue_group.clone(),
            buffer: spec.buffer.map_or(DEFAULT_BUFFER, |b| {
                usize::try_from(b).unwrap_or(DEFAULT_BUFFER)
            }),
        })
    }
}

#[async_trait]
impl Listener for NatsListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let client = self
            .conn
            .connect(self.buffer, Some(sink.clone()))
            .await
            .map_err(|m| crate::transport::error::start_error(&channel, m, "connect"))?;
        let subscribed = match &self.queue_group {
            Some(group) => {
                client
                    .queue_subscribe(self.subject.clone(), group.clone())
                    .await
            }
            None => client.subscribe(self.subject.clone()).await,
        };
        let mut subscriber = subscribed.map_err(|e| {
            crate::transport::error::start_error(
                &channel,
                format!("subscribe to `{}`", self.subject),
                e,
            )
        })?;
        confirm_subscribed(&client, self.conn.timeout)
            .await
            .map_err(|m| {
                crate::transport::error::start_error(&channel, m, "confirm the subscription")
            })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let messages = futures_util::stream::poll_fn(|cx| subscriber.poll_next_unpin(cx))
                .take_until(stopped);
            messages
                .for_each_concurrent(IN_FLIGHT, |msg| {
                    let sink = sink.clone();
                    async move {
                        let mut received =
                            Received::new(msg.payload.to_vec(), headers_of(msg.headers.as_ref()))
                                .with_meta("subject", msg.subject.to_string());
                        if let Some(reply) = &msg.reply {
                            received.meta.push(("reply".to_owned(), reply.to_string()));
                        }
                        received.key = Some(msg.subject.to_string());
                        // A store error is counted as a fault by the sink.
                        let _ = sink.record(received).await;
                    }
                })
                .await;
            drop(client);
        });
        Ok(RunningListener::new(
            format!("{} subject {}", self.conn.endpoint(), self.subject),
            Delivery::AtMostOnce,
            false,
            stop,
            task,
        ))
    }
}
