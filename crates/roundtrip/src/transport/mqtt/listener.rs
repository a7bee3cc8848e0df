//! The `mqtt` listener: subscribed once the SUBACK grants it; with QoS 1 or more, manual
//! acks in order after the store committed, and the broker's dropped counter watched.

use std::time::Duration;

use async_trait::async_trait;
use roundtrip_core::model::MqttChannel;
use tokio::sync::{mpsc, oneshot};

use crate::transport::backoff::Backoff;
use crate::transport::mqtt::conn::{Client, Ev, EventLoop, Message, MqttConn};
use crate::transport::{
    Delivery, DriverContext, GapKind, ListenError, Listener, ObservationSink, Outage, PlanError,
    RunningListener,
};

/// Messages recorded concurrently (acks still go out in arrival order).
const IN_FLIGHT: usize = 256;

/// Mosquitto's server-wide count of messages it dropped because a subscriber's queue was
/// full. The listener watches it (where the broker publishes it) and reports increases as
/// gaps: the broker acknowledged those messages to their publisher, and nobody else can
/// tell that they never reached a subscriber.
const DROPPED_TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// Subscribes to a topic filter and records what arrives.
#[derive(Debug)]
pub struct MqttListener {
    conn: MqttConn,
    topic: String,
}

impl MqttListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &MqttChannel,
        ctx: &DriverContext,
    ) -> Result<MqttListener, PlanError> {
        Ok(MqttListener {
            conn: MqttConn::new(channel, spec, ctx)?,
            topic: spec.topic.clone(),
        })
    }
}

#[async_trait]
impl Listener for MqttListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let self_timeout = self.conn.timeout;
        // A persistent session needs a stable `client_id`: under a random one it would
        // outlive the run on the broker, queueing messages for nobody.
        let persistent = self.conn.qos > 0 && self.conn.client_id.is_some();
        // Acks after commit at any QoS above 0, session or not.
        let (client, events) = self.conn.open(persistent, self.conn.qos > 0);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (messages_tx, messages_rx) = mpsc::channel::<Message>(IN_FLIGHT * 4);
        let (stop, stopped) = oneshot::channel::<()>();
        let endpoint = format!("{} topic {}", self.conn.endpoint, self.topic);
        let recorder = tokio::spawn(record_in_order(messages_rx, client.clone(), sink.clone()));
        let driver = Driver {
            events,
            client: client.clone(),
            listener: *self,
            sink,
            messages: messages_tx,
            recorder,
        };
        let task = tokio::spawn(driver.run(Some(ready_tx), stopped));
        // Connecting, then the SUBACK: each may take the connect timeout.
        match tokio::time::timeout(self_timeout * 2, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(message))) => {
                task.abort();
                return Err(crate::transport::error::start_error(
                    &channel,
                    message,
                    "subscribe",
                ));
            }
            Ok(Err(_)) | Err(_) => {
                task.abort();
                return Err(crate::transport::error::start_error(
                    &channel,
                    format!("the MQTT listener on {endpoint} did not get a SUBACK in time"),
                    "subscribe",
                ));
            }
        }
        Ok(RunningListener::new(
            endpoint,
            if persistent {
                Delivery::AtLeastOnce
            } else {
                Delivery::AtMostOnce
            },
            false,
            stop,
            task,
        ))
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records messages with bounded concurrency and acknowledges them in arrival order,
/// each only after its commit.
async fn record_in_order(messages: mpsc::Receiver<Message>, client: Client, sink: ObservationSink) {
    use futures_util::StreamExt as _;
    let stream = tokio_stream_of(messages);
    stream
        .map(|m| {
            let sink = sink.clone();
            async move { (sink.record(m.received).await.is_ok(), m.ack) }
        })
        .buffered(IN_FLIGHT)
        .for_each(|(committed, ack)| {
            let client = client.clone();
            let sink = sink.clone();
            async move {
                if let (true, Some(ack)) = (committed, ack)
                    && client.ack(&ack).await.is_err()
                {
                    sink.gap_counted(
                        GapKind::AckFailed,
                        "an ack could not be queued; the broker will redeliver",
                        0,
                    );
                }
            }
        })
        .await;
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Follows the broker's dropped-messages counter; the first value is the baseline.
#[derive(Debug, Default)]
struct DroppedCounter {
    last: Option<u64>,
}

impl DroppedCounter {
    fn observe(&mut self, payload: &[u8], sink: &ObservationSink) {
        let Some(now) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return;
        };
        if let Some(before) = self.last
            && now > before
        {
            sink.gap_counted(
                GapKind::Dropped,
                format!(
                    "the broker dropped {} messages by {} (server-wide `{DROPPED_TOPIC}`): a \
                     subscriber fell behind the broker's queue limit (Mosquitto: \
                     max_queued_messages, default 1,000); messages for this listener may \
                     be among them",
                    now - before,
                    crate::clock::format_wall_now()
                ),
                now - before,
            );
        }
        self.last = Some(now);
    }
}

/// What a started listener's task owns: the client and its event loop, where messages
/// go (the in-order recorder) and where gaps go.
struct Driver {
    events: EventLoop,
    client: Client,
    listener: MqttListener,
    sink: ObservationSink,
    messages: mpsc::Sender<Message>,
    recorder: tokio::task::JoinHandle<()>,
}

impl Driver {
    /// Polls the event loop: readiness (answered on `ready`), messages, reconnects (as
    /// gaps), until `stopped`.
    async fn run(
        self,
        mut ready: Option<oneshot::Sender<Result<(), String>>>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        let Driver {
            mut events,
            client,
            listener,
            sink,
            messages,
            recorder,
        } = self;
        // If this task is aborted (a crash, in tests), the recorder goes with it.
        let mut recorder = AbortOnDrop(recorder);
        let conn = &listener.conn;
        let mut backoff = Backoff::default();
        let mut down = Outage::default();
        let mut dropped = DroppedCounter::default();
        loop {
            let event = tokio::select! {
                e = events.poll() => e,
                _ = &mut stopped => break,
            };
            match event {
                Ok(Ev::Connected { session_present }) => {
                    backoff.reset();
                    down.recovered(
                        &sink,
                        if session_present {
                            "the broker kept the session, QoS ≥ 1 messages were queued"
                        } else {
                            "the session was lost, messages published meanwhile were missed"
                        },
                    );
                    // A listener subscribes at QoS 1 at most: it records at least once and
                    // counts duplicates itself, and a QoS 2 handshake cannot be resumed by a
                    // restarted listener (the broker re-sends PUBREL for packets the new
                    // client never saw, which rumqttc rejects).
                    if let Err(e) = client.subscribe(&listener.topic, conn.qos.min(1)).await {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e));
                        }
                        return;
                    }
                    // Best effort: brokers without `$SYS` refuse or ignore it.
                    let _ = client.subscribe(DROPPED_TOPIC, 0).await;
                }
                Ok(Ev::Subscribed(result)) => {
                    if let Some(r) = ready.take() {
                        let failed = result.is_err();
                        let _ = r.send(result);
                        if failed {
                            return;
                        }
                    }
                }
                Ok(Ev::Message(m)) if m.received.key.as_deref() == Some(DROPPED_TOPIC) => {
                    dropped.observe(&m.received.body, &sink);
                }
                Ok(Ev::Message(m)) => {
                    if messages.send(m).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(crate::transport::error::connect_failed(
                            "MQTT broker",
                            &conn.endpoint,
                            e,
                        )));
                        return;
                    }
                    down.failed(&sink, "disconnected", Some(e));
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = &mut stopped => break,
                    }
                }
            }
        }
        // Stop: let the recorder commit and queue its acks, then keep polling so that they
        // reach the broker before the disconnect.
        drop(messages);
        let flushed = async {
            loop {
                tokio::select! {
                    _ = &mut recorder.0 => break,
                    e = events.poll() => if e.is_err() { break },
                }
            }
            client.disconnect().await;
            while events.poll().await.is_ok() {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use roundtrip_core::correlate::Correlator;
    use roundtrip_core::model::CorrelationRule;

    use super::*;

    #[tokio::test]
    async fn a_rise_in_the_brokers_dropped_counter_is_a_gap() {
        let store = crate::store::open("sqlite::memory:")
            .await
            .expect("a store");
        let sink = ObservationSink::new(
            store,
            "run",
            "out",
            Arc::new(Correlator::new(&CorrelationRule::default()).expect("a rule")),
            1024,
        );
        let mut counter = DroppedCounter::default();
        counter.observe(b"1200", &sink); // the baseline: drops before this run
        counter.observe(b"1200", &sink);
        counter.observe(b"not a number", &sink);
        assert!(sink.stats().gaps().is_empty());
        counter.observe(b"1203", &sink);
        let gaps = sink.stats().gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(
            gaps[0]
                .cause
                .starts_with("the broker dropped 3 messages by "),
            "{gaps:?}"
        );
        assert_eq!((gaps[0].kind, gaps[0].count), (GapKind::Dropped, Some(3)));
    }
}
