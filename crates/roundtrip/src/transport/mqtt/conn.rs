//! The MQTT connection: options for protocol 3.1.1 or 5, TLS and credentials, and one
//! client and event loop over both protocol versions.

use std::time::Duration;

use roundtrip_core::model::{MqttChannel, MqttVersion};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing as Out, TlsConfiguration, Transport};

use crate::transport::conn::{self, Credentials, TlsFiles};
use crate::transport::{DriverContext, Outgoing, PlanError, Received};

/// The client's request queue (publishes, acks) between callers and the event loop.
pub(crate) const REQUESTS: usize = 8192;

/// How long a persistent listener session outlives its connection on the broker (MQTT 5).
const SESSION_EXPIRY_S: u32 = 3600;

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
pub(crate) struct MqttConn {
    pub(crate) channel: String,
    pub(crate) endpoint: String,
    host: String,
    port: u16,
    tls: Option<TlsBytes>,
    credentials: Credentials,
    version: MqttVersion,
    pub(crate) qos: u8,
    pub(crate) client_id: Option<String>,
    pub(crate) timeout: Duration,
}

impl MqttConn {
    pub(crate) fn new(
        channel: &str,
        spec: &MqttChannel,
        ctx: &DriverContext,
    ) -> Result<MqttConn, PlanError> {
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
    pub(crate) fn open(&self, persistent: bool, manual_acks: bool) -> (Client, EventLoop) {
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
pub(crate) enum Client {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// An event loop of either protocol version. One exists per client, so the size
/// difference between the variants does not matter.
#[expect(
    clippy::large_enum_variant,
    reason = "one exists per client or event: the size difference does not matter"
)]
pub(crate) enum EventLoop {
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
pub(crate) struct Message {
    pub(crate) received: Received,
    pub(crate) ack: Option<AckHandle>,
}

#[derive(Debug)]
pub(crate) enum AckHandle {
    V3(rumqttc::Publish),
    V5(p5::Publish),
}

/// What the event loop reported, in version-independent terms. Moved once per event.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one exists per client or event: the size difference does not matter"
)]
pub(crate) enum Ev {
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
    pub(crate) async fn poll(&mut self) -> Result<Ev, String> {
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
    pub(crate) fn try_publish(
        &self,
        topic: &str,
        qos: u8,
        message: &Outgoing,
    ) -> Result<(), String> {
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

    pub(crate) async fn subscribe(&self, topic: &str, qos: u8) -> Result<(), String> {
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

    pub(crate) async fn ack(&self, handle: &AckHandle) -> Result<(), String> {
        match (self, handle) {
            (Client::V3(c), AckHandle::V3(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), AckHandle::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("an ack for the other protocol version".to_owned()),
        }
    }

    pub(crate) async fn disconnect(&self) {
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
