//! The `redis_pubsub` listener: SUBSCRIBE or PSUBSCRIBE, at-most-once.

use async_trait::async_trait;
use futures_util::StreamExt;
use roundtrip_core::model::RedisPubSubChannel;
use tokio::sync::oneshot;

use crate::transport::backoff::Backoff;
use crate::transport::redis_stream::conn::RedisConn;
use crate::transport::{
    Delivery, DriverContext, ListenError, Listener, ObservationSink, Outage, PlanError, Received,
    RunningListener,
};

/// SUBSCRIBEs to a channel or PSUBSCRIBEs to a pattern. At-most-once.
#[derive(Debug)]
pub struct PubSubListener {
    conn: RedisConn,
    channel_name: Option<String>,
    pattern: Option<String>,
}

impl PubSubListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &RedisPubSubChannel,
        ctx: &DriverContext,
    ) -> Result<PubSubListener, PlanError> {
        Ok(PubSubListener {
            conn: RedisConn::new(channel, spec, ctx)?,
            channel_name: spec.channel.clone(),
            pattern: spec.pattern.clone(),
        })
    }

    /// Connects and subscribes; returns once the server confirmed the subscription.
    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let endpoint = &self.conn.endpoint;
        let subscribing =
            async {
                let mut pubsub =
                    self.conn.client.get_async_pubsub().await.map_err(|e| {
                        crate::transport::error::connect_failed("Redis", endpoint, e)
                    })?;
                match (&self.channel_name, &self.pattern) {
                    (_, Some(p)) => pubsub.psubscribe(p).await,
                    (Some(c), None) => pubsub.subscribe(c).await,
                    (None, None) => return Err("no channel or pattern".to_owned()),
                }
                .map_err(|e| format!("subscribe on {endpoint}: {e}"))?;
                Ok(pubsub)
            };
        tokio::time::timeout(self.conn.timeout, subscribing)
            .await
            .unwrap_or_else(|_| {
                Err(crate::transport::error::timed_out(
                    "Redis at",
                    endpoint,
                    self.conn.timeout,
                ))
            })
    }
}

#[async_trait]
impl Listener for PubSubListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let pubsub = self
            .subscribe()
            .await
            .map_err(|m| crate::transport::error::start_error(&channel, m, "subscribe"))?;
        let endpoint = format!(
            "{} {}",
            self.conn.endpoint,
            self.pattern
                .as_ref()
                .map(|p| format!("pattern {p}"))
                .or_else(|| self.channel_name.as_ref().map(|c| format!("channel {c}")))
                .unwrap_or_default()
        );
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut pubsub = pubsub;
            let mut backoff = Backoff::default();
            loop {
                let messages = pubsub.into_on_message().take_until(&mut stopped);
                messages
                    .for_each_concurrent(512, |msg| {
                        let sink = sink.clone();
                        async move {
                            let mut received =
                                Received::new(msg.get_payload_bytes().to_vec(), Vec::new())
                                    .with_meta("channel", msg.get_channel_name());
                            if let Ok(pattern) = msg.get_pattern::<String>() {
                                received.meta.push(("pattern".to_owned(), pattern));
                            }
                            received.key = Some(msg.get_channel_name().to_owned());
                            let _ = sink.record(received).await;
                        }
                    })
                    .await;
                if stopped.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                    return;
                }
                // The connection dropped: resubscribe, and say how long nothing was heard.
                let mut outage = Outage::default();
                outage.failed(&sink, "unsubscribed", Some("the connection dropped".into()));
                pubsub = loop {
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = &mut stopped => return,
                    }
                    if let Ok(p) = self.subscribe().await {
                        break p;
                    }
                };
                backoff.reset();
                outage.recovered(
                    &sink,
                    "messages published meanwhile were lost (Pub/Sub keeps nothing)",
                );
            }
        });
        Ok(RunningListener::new(
            endpoint,
            Delivery::AtMostOnce,
            false,
            stop,
            task,
        ))
    }
}
