//! The MQTT driver (`mqtt`), protocol 3.1.1 or 5, over rumqttc.
//!
//! - MQTT 5 carries headers as user properties; MQTT 3.1.1 has none, so the correlation id
//!   travels in the payload (`correlate.json`).
//! - The producer resolves a send when the broker acknowledged it: on the wire for QoS 0,
//!   PUBACK for QoS 1, PUBCOMP for QoS 2.
//! - The listener subscribes and is ready once the SUBACK grants the subscription. With
//!   QoS ≥ 1 it uses manual acks, acknowledging each message (in order) only after the
//!   store committed it, and, when the channel names a `client_id`, a persistent session:
//!   a restarted listener with the same `client_id` receives what it missed (reported
//!   at-least-once; without a `client_id`, at-most-once). A message the broker flags `dup` is recorded
//!   as a redelivery. QoS 0 is at-most-once and reported so. The listener subscribes at
//!   QoS 1 even when the channel says 2: it records at least once and counts duplicates
//!   itself, and a QoS 2 handshake in flight cannot be resumed after a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use roundtrip_core::model::{MqttChannel, MqttVersion};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing as Out, TlsConfiguration, Transport};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::conn::{self, Backoff, Credentials, TlsFiles};
use super::registry::PlanError;
use super::{
    DriverContext, ListenError, Listener, ObservationSink, Outgoing, ProduceError, Producer,
    Receipt, Received, RunningListener,
};

/// The client's request queue (publishes, acks) between callers and the event loop.
const REQUESTS: usize = 8192;
/// Messages recorded concurrently (acks still go out in arrival order).
const IN_FLIGHT: usize = 256;
/// How long a persistent listener session outlives its connection on the broker (MQTT 5).
const SESSION_EXPIRY_S: u32 = 3600;
/// Mosquitto's server-wide count of messages it dropped because a subscriber's queue was
/// full. The listener watches it (where the broker publishes it) and reports increases as
/// gaps: the broker acknowledged those messages to their publisher, and nobody else can
/// tell that they never reached a subscriber.
const DROPPED_TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// PEM files read at plan time.
#[derive(Clone)]
struct TlsBytes {
    ca: Vec<u8>,
    client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBytes")
            .field("client_auth", &self.client_auth.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsBytes {
    fn transport(&self) -> Transport {
        Transport::tls_with_config(TlsConfiguration::Simple {
            ca: self.ca.clone(),
            alpn: None,
            client_auth: self.client_auth.clone(),
        })
    }
}

/// Everything needed to open a client.
#[derive(Debug, Clone)]
struct MqttConn {
    channel: String,
    endpoint: String,
    host: String,
    port: u16,
    tls: Option<TlsBytes>,
    credentials: Credentials,
    version: MqttVersion,
    qos: u8,
    client_id: Option<String>,
    timeout: Duration,
}

impl MqttConn {
    fn new(channel: &str, spec: &MqttChannel, ctx: &DriverContext) -> Result<MqttConn, PlanError> {
        conn::ensure_crypto_provider();
        let invalid = |message: String| PlanError::Invalid {
            channel: channel.to_owned(),
            message,
        };
        let (scheme, rest) = spec.url.split_once("://").unwrap_or(("", ""));
        let secure = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            _ => {
                return Err(invalid(format!(
                    "`{}` is not an MQTT URL; write it like `mqtt://127.0.0.1:1883`",
                    conn::redact(&spec.url)
                )));
            }
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>()
                    .map_err(|_| invalid(format!("the port in `{}` is not a number", spec.url)))?,
            ),
            None => (authority.to_owned(), if secure { 8883 } else { 1883 }),
        };
        let files = TlsFiles::resolve(channel, spec.tls.as_ref(), ctx)?;
        let tls = if secure || files.is_some() {
            let files = files.unwrap_or_default();
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| invalid(format!("read `{}`: {e}", p.display())))
            };
            let ca = match &files.ca {
                Some(ca) => read(ca)?,
                None => {
                    return Err(invalid(
                        "MQTT over TLS needs `tls.ca` (the CA that signed the broker's \
                         certificate)"
                            .into(),
                    ));
                }
            };
            let client_auth = match &files.client {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            };
            Some(TlsBytes { ca, client_auth })
        } else {
            None
        };
        Ok(MqttConn {
            channel: channel.to_owned(),
            endpoint: conn::redact(&spec.url),
            host,
            port,
            tls,
            credentials: Credentials::from_env(channel, spec.auth.as_ref())?,
            version: spec.version,
            qos: spec.qos,
            client_id: spec.client_id.clone(),
            timeout: conn::timeout(spec.connect_timeout),
        })
    }

    /// A client and its event loop; `persistent` keeps the session on the broker,
    /// `manual_acks` leaves acknowledging each message to the caller.
    fn open(&self, persistent: bool, manual_acks: bool) -> (Client, EventLoop) {
        let id = self.client_id.clone().unwrap_or_else(|| {
            format!(
                "roundtrip-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )
        });
        let c = &self.credentials;
        match self.version {
            MqttVersion::V311 => {
                let mut o = rumqttc::MqttOptions::new(id, &self.host, self.port);
                o.set_keep_alive(Duration::from_secs(10))
                    .set_clean_session(!persistent)
                    .set_manual_acks(manual_acks)
                    .set_max_packet_size(16 << 20, 16 << 20)
                    .set_inflight(1000);
                if let Some(user) = &c.username {
                    o.set_credentials(user, c.password.clone().unwrap_or_default());
                }
                if let Some(t) = &self.tls {
                    o.set_transport(t.transport());
                }
                let (client, events) = rumqttc::AsyncClient::new(o, REQUESTS);
                (Client::V3(client), EventLoop::V3(events))
            }
            MqttVersion::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(id, &self.host, self.port);
                o.set_keep_alive(Duration::from_secs(10))
                    .set_clean_start(!persistent)
                    .set_manual_acks(manual_acks)
                    .set_max_packet_size(Some(16 << 20));
                if persistent {
                    o.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
                }
                if let Some(user) = &c.username {
                    o.set_credentials(user, c.password.clone().unwrap_or_default());
                }
                if let Some(t) = &self.tls {
                    o.set_transport(t.transport());
                }
                let (client, events) = rumqttc::v5::AsyncClient::new(o, REQUESTS);
                (Client::V5(client), EventLoop::V5(events))
            }
        }
    }
}

/// A client of either protocol version.
#[derive(Debug, Clone)]
enum Client {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// An event loop of either protocol version. One exists per client, so the size
/// difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum EventLoop {
    V3(rumqttc::EventLoop),
    V5(rumqttc::v5::EventLoop),
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventLoop")
    }
}

/// A received message and what it takes to acknowledge it.
#[derive(Debug)]
struct Message {
    received: Received,
    ack: Option<AckHandle>,
}

#[derive(Debug)]
enum AckHandle {
    V3(rumqttc::Publish),
    V5(p5::Publish),
}

/// What the event loop reported, in version-independent terms. Moved once per event.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Ev {
    Connected {
        session_present: bool,
    },
    Subscribed(Result<(), String>),
    Message(Message),
    /// A publish left the client (its packet id; 0 for QoS 0).
    Sent(u16),
    /// The broker completed a QoS ≥ 1 publish (PUBACK / PUBCOMP).
    Acked(u16),
    Other,
}

impl EventLoop {
    async fn poll(&mut self) -> Result<Ev, String> {
        match self {
            EventLoop::V3(l) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Ev::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::SubAck(s)) => Ev::Subscribed(
                        if s.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                        {
                            Ok(())
                        } else {
                            Err(format!(
                                "the broker refused the subscription: {:?}",
                                s.return_codes
                            ))
                        },
                    ),
                    Event::Incoming(Packet::Publish(p)) => {
                        let mut received = Received::new(p.payload.to_vec(), Vec::new())
                            .with_meta("topic", p.topic.as_str())
                            .with_meta("qos", (p.qos as u8).to_string())
                            .with_meta("retain", p.retain.to_string());
                        received.key = Some(p.topic.clone());
                        received.redelivered = p.dup;
                        let ack = (p.qos != rumqttc::QoS::AtMostOnce).then_some(AckHandle::V3(p));
                        Ev::Message(Message { received, ack })
                    }
                    Event::Incoming(Packet::PubAck(a)) => Ev::Acked(a.pkid),
                    Event::Incoming(Packet::PubComp(a)) => Ev::Acked(a.pkid),
                    Event::Outgoing(Out::Publish(pkid)) => Ev::Sent(pkid),
                    _ => Ev::Other,
                })
            }
            EventLoop::V5(l) => {
                use p5::{Packet, SubscribeReasonCode};
                use rumqttc::v5::Event;
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Ev::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::SubAck(s)) => Ev::Subscribed(
                        if s.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                        {
                            Ok(())
                        } else {
                            Err(format!(
                                "the broker refused the subscription: {:?}",
                                s.return_codes
                            ))
                        },
                    ),
                    Event::Incoming(Packet::Publish(p)) => {
                        let mut headers = Vec::new();
                        if let Some(props) = &p.properties {
                            headers.extend(props.user_properties.iter().cloned());
                            if let Some(ct) = &props.content_type {
                                headers.push(("content-type".to_owned(), ct.clone()));
                            }
                        }
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let mut received = Received::new(p.payload.to_vec(), headers)
                            .with_meta("topic", topic.as_str())
                            .with_meta("qos", (p.qos as u8).to_string())
                            .with_meta("retain", p.retain.to_string());
                        received.key = Some(topic);
                        received.redelivered = p.dup;
                        let ack = (p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce)
                            .then_some(AckHandle::V5(p));
                        Ev::Message(Message { received, ack })
                    }
                    Event::Incoming(Packet::PubAck(a)) => Ev::Acked(a.pkid),
                    Event::Incoming(Packet::PubComp(a)) => Ev::Acked(a.pkid),
                    Event::Outgoing(Out::Publish(pkid)) => Ev::Sent(pkid),
                    _ => Ev::Other,
                })
            }
        }
    }
}

impl Client {
    /// Hands a publish to the client without waiting: a full request queue is an error
    /// (the caller holds a lock that the event loop's driver needs).
    fn try_publish(&self, topic: &str, qos: u8, message: &Outgoing) -> Result<(), String> {
        match self {
            Client::V3(c) => c
                .try_publish(topic, qos3(qos), false, message.body.to_vec())
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let properties = p5::PublishProperties {
                    user_properties: message.headers.clone(),
                    content_type: Some(message.content_type.to_owned()),
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    topic,
                    qos5(qos),
                    false,
                    message.body.clone(),
                    properties,
                )
                .map_err(|e| e.to_string())
            }
        }
    }

    async fn subscribe(&self, topic: &str, qos: u8) -> Result<(), String> {
        match self {
            Client::V3(c) => c
                .subscribe(topic, qos3(qos))
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe(topic, qos5(qos))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn ack(&self, handle: &AckHandle) -> Result<(), String> {
        match (self, handle) {
            (Client::V3(c), AckHandle::V3(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), AckHandle::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("an ack for the other protocol version".to_owned()),
        }
    }

    async fn disconnect(&self) {
        let _ = match self {
            Client::V3(c) => c.disconnect().await.map_err(drop),
            Client::V5(c) => c.disconnect().await.map_err(drop),
        };
    }
}

fn qos3(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

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
                        return Err(conn::unreachable(
                            channel,
                            format!(
                                "expected a CONNACK from {}, got {other:?}",
                                self.conn.endpoint
                            ),
                        ));
                    }
                    Ok(Err(e)) => {
                        return Err(conn::unreachable(
                            channel,
                            conn::connect_failed("MQTT broker", &self.conn.endpoint, e),
                        ));
                    }
                    Err(_) => {
                        return Err(conn::unreachable(
                            channel,
                            conn::timed_out(
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
                return Err(conn::unreachable(
                    channel,
                    format!("{e} ({REQUESTS} publishes already waiting for the broker)"),
                ));
            }
        }
        match tokio::time::timeout(self.conn.timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(Receipt::default()),
            Ok(Ok(Err(e))) => Err(conn::unreachable(channel, e)),
            Ok(Err(_)) => Err(conn::unreachable(channel, "the MQTT client stopped")),
            Err(_) => Err(conn::rejected(
                channel,
                format!(
                    "the broker did not acknowledge the QoS {} publish within {:?}",
                    self.conn.qos, self.conn.timeout
                ),
            )),
        }
    }
}

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
        let task = tokio::spawn(drive_listener(
            events,
            client.clone(),
            *self,
            sink,
            Some(ready_tx),
            messages_tx,
            stopped,
            recorder,
        ));
        // Connecting, then the SUBACK: each may take the connect timeout.
        match tokio::time::timeout(self_timeout * 2, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(message))) => {
                task.abort();
                return Err(conn::start_error(&channel, message, "subscribe"));
            }
            Ok(Err(_)) | Err(_) => {
                task.abort();
                return Err(conn::start_error(
                    &channel,
                    format!("the MQTT listener on {endpoint} did not get a SUBACK in time"),
                    "subscribe",
                ));
            }
        }
        Ok(RunningListener::new(
            endpoint,
            if persistent {
                "at-least-once"
            } else {
                "at-most-once"
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
                    sink.gap_counted("an ack could not be queued; the broker will redeliver", 0);
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

/// Polls the listener's event loop: readiness, messages, reconnects (as gaps), stop.
#[allow(clippy::too_many_arguments)]
async fn drive_listener(
    mut events: EventLoop,
    client: Client,
    listener: MqttListener,
    sink: ObservationSink,
    mut ready: Option<oneshot::Sender<Result<(), String>>>,
    messages: mpsc::Sender<Message>,
    mut stopped: oneshot::Receiver<()>,
    recorder: tokio::task::JoinHandle<()>,
) {
    // If this task is aborted (a crash, in tests), the recorder goes with it.
    let mut recorder = AbortOnDrop(recorder);
    let conn = &listener.conn;
    let mut backoff = Backoff::default();
    let mut down: Option<(Instant, String, String, usize)> = None;
    let mut dropped = DroppedCounter::default();
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = &mut stopped => break,
        };
        match event {
            Ok(Ev::Connected { session_present }) => {
                backoff.reset();
                if let Some((since, at, why, index)) = down.take() {
                    sink.update_gap(
                        index,
                        format!(
                            "disconnected at {at} for {:?} ({why}); {}",
                            since.elapsed(),
                            if session_present {
                                "the broker kept the session, QoS ≥ 1 messages were queued"
                            } else {
                                "the session was lost, messages published meanwhile were missed"
                            }
                        ),
                    );
                }
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
                    let _ = r.send(Err(conn::connect_failed("MQTT broker", &conn.endpoint, e)));
                    return;
                }
                if down.is_none() {
                    let at = crate::clock::format_wall_now();
                    let why = e;
                    let index =
                        sink.open_gap(format!("connection lost at {at} ({why}); not back yet"));
                    down = Some((Instant::now(), at, why, index));
                }
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
            gaps[0].starts_with("the broker dropped 3 messages by "),
            "{gaps:?}"
        );
    }
}
