//! The `mqtt` producer: a send resolves when the broker acknowledged it (on the wire
//! for QoS 0, PUBACK for QoS 1, PUBCOMP for QoS 2).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use roundtrip_core::model::MqttChannel;
use tokio::sync::{Mutex, oneshot};

use crate::transport::backoff::Backoff;
use crate::transport::mqtt::conn::{Client, Ev, EventLoop, MqttConn, REQUESTS};
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

/// Waiters for the broker's acknowledgement of each publish.
#[derive(Debug, Default)]
struct Pending {
    /// Publishes handed to the client, not yet on the wire (FIFO, as the client sends).
    queued: VecDeque<oneshot::Sender<Result<(), String>>>,
    /// Publishes on the wire, by packet id, awaiting PUBACK / PUBCOMP.
    sent: HashMap<u16, oneshot::Sender<Result<(), String>>>,
}

impl Pending {
    fn fail_all(&mut self, why: &str) {
        for w in self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, w)| w))
        {
            let _ = w.send(Err(why.to_owned()));
        }
    }
}

/// A connected producer: the client, and the task driving its event loop.
#[derive(Debug)]
struct Connected {
    client: Client,
    pending: Arc<Mutex<Pending>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Publishes to a topic; resolves on the broker's acknowledgement.
#[derive(Debug)]
pub struct MqttProducer {
    conn: MqttConn,
    topic: String,
    connected: tokio::sync::OnceCell<Connected>,
}

impl MqttProducer {
    /// Plans a producer for `channel`.
    pub fn new(
        channel: &str,
        spec: &MqttChannel,
        ctx: &DriverContext,
    ) -> Result<MqttProducer, PlanError> {
        if spec.topic.contains(['+', '#']) {
            return Err(PlanError::Invalid {
                channel: channel.to_owned(),
                message: format!(
                    "cannot publish to `{}`: wildcards (`+`, `#`) are for subscriptions",
                    spec.topic
                ),
            });
        }
        Ok(MqttProducer {
            conn: MqttConn::new(channel, spec, ctx)?,
            topic: spec.topic.clone(),
            connected: tokio::sync::OnceCell::new(),
        })
    }

    async fn connected(&self) -> Result<&Connected, ProduceError> {
        let channel = &self.conn.channel;
        self.connected
            .get_or_try_init(|| async {
                let (client, mut events) = self.conn.open(false, false);
                // The first event is the CONNACK, or the reason there is none.
                let first = tokio::time::timeout(self.conn.timeout, events.poll()).await;
                match first {
                    Ok(Ok(Ev::Connected { .. })) => {}
                    Ok(Ok(other)) => {
                        return Err(crate::transport::error::unreachable(
                            channel,
                            format!(
                                "expected a CONNACK from {}, got {other:?}",
                                self.conn.endpoint
                            ),
                        ));
                    }
                    Ok(Err(e)) => {
                        return Err(crate::transport::error::unreachable(
                            channel,
                            crate::transport::error::connect_failed(
                                "MQTT broker",
                                &self.conn.endpoint,
                                e,
                            ),
                        ));
                    }
                    Err(_) => {
                        return Err(crate::transport::error::unreachable(
                            channel,
                            crate::transport::error::timed_out(
                                "MQTT broker at",
                                &self.conn.endpoint,
                                self.conn.timeout,
                            ),
                        ));
                    }
                }
                let pending = Arc::new(Mutex::new(Pending::default()));
                let driver =
                    tokio::spawn(drive_producer(events, Arc::clone(&pending), self.conn.qos));
                Ok(Connected {
                    client,
                    pending,
                    driver,
                })
            })
            .await
    }
}

/// Polls a producer's event loop, resolving each publish's waiter.
async fn drive_producer(mut events: EventLoop, pending: Arc<Mutex<Pending>>, qos: u8) {
    let mut backoff = Backoff::default();
    loop {
        match events.poll().await {
            Ok(Ev::Sent(pkid)) => {
                let mut p = pending.lock().await;
                if let Some(w) = p.queued.pop_front() {
                    if qos == 0 {
                        let _ = w.send(Ok(()));
                    } else {
                        p.sent.insert(pkid, w);
                    }
                }
            }
            Ok(Ev::Acked(pkid)) => {
                if let Some(w) = pending.lock().await.sent.remove(&pkid) {
                    let _ = w.send(Ok(()));
                }
            }
            Ok(Ev::Connected { .. }) => backoff.reset(),
            Ok(_) => {}
            Err(e) => {
                pending
                    .lock()
                    .await
                    .fail_all(&format!("the connection failed: {e}"));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[async_trait]
impl Producer for MqttProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.connected().await.map(drop)
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let connected = self.connected().await?;
        let channel = &self.conn.channel;
        let (tx, rx) = oneshot::channel();
        {
            // Queue the waiter and the publish under one lock, so both keep one order.
            let mut pending = connected.pending.lock().await;
            pending.queued.push_back(tx);
            if let Err(e) = connected
                .client
                .try_publish(&self.topic, self.conn.qos, &message)
            {
                pending.queued.pop_back();
                return Err(crate::transport::error::unreachable(
                    channel,
                    format!("{e} ({REQUESTS} publishes already waiting for the broker)"),
                ));
            }
        }
        match tokio::time::timeout(self.conn.timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(Receipt::default()),
            Ok(Ok(Err(e))) => Err(crate::transport::error::unreachable(channel, e)),
            Ok(Err(_)) => Err(crate::transport::error::unreachable(
                channel,
                "the MQTT client stopped",
            )),
            Err(_) => Err(crate::transport::error::rejected(
                channel,
                format!(
                    "the broker did not acknowledge the QoS {} publish within {:?}",
                    self.conn.qos, self.conn.timeout
                ),
            )),
        }
    }
}
