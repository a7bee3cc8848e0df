//! The Kafka connection: librdkafka's configuration from the channel's brokers, TLS and
//! SASL credentials.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext};
use roundtrip_core::model::KafkaChannel;

use crate::transport::conn::{self, Credentials, TlsFiles};
use crate::transport::{DriverContext, PlanError};

/// The client settings shared by producer and listener. `Debug` leaves out `config`,
/// which holds the SASL password.
#[derive(Clone)]
pub(crate) struct KafkaConn {
    pub(crate) channel: String,
    pub(crate) brokers: String,
    pub(crate) topic: String,
    config: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    /// Partitions to create the topic with when it is missing (`create: true`).
    create: Option<i32>,
}

impl std::fmt::Debug for KafkaConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConn")
            .field("channel", &self.channel)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaConn {
    pub(crate) fn new(
        channel: &str,
        spec: &KafkaChannel,
        ctx: &DriverContext,
    ) -> Result<KafkaConn, PlanError> {
        let credentials = Credentials::from_env(channel, spec.auth.as_ref())?;
        let tls = TlsFiles::resolve(channel, spec.tls.as_ref(), ctx)?;
        let mut config = vec![("bootstrap.servers".to_owned(), spec.brokers.clone())];
        let sasl = credentials.username.is_some();
        let protocol = match (tls.is_some(), sasl) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        config.push(("security.protocol".into(), protocol.into()));
        if let Some(tls) = tls {
            if let Some(ca) = tls.ca {
                config.push(("ssl.ca.location".into(), ca.display().to_string()));
            }
            if let Some((cert, key)) = tls.client {
                config.push((
                    "ssl.certificate.location".into(),
                    cert.display().to_string(),
                ));
                config.push(("ssl.key.location".into(), key.display().to_string()));
            }
        }
        if let Some(user) = credentials.username {
            config.push(("sasl.mechanism".into(), "PLAIN".into()));
            config.push(("sasl.username".into(), user));
            config.push((
                "sasl.password".into(),
                credentials.password.unwrap_or_default(),
            ));
        }
        Ok(KafkaConn {
            channel: channel.to_owned(),
            brokers: spec.brokers.clone(),
            topic: spec.topic.clone(),
            config,
            timeout: conn::timeout(spec.connect_timeout),
            create: spec
                .create
                .then(|| i32::try_from(spec.partitions.unwrap_or(1).max(1)).unwrap_or(i32::MAX)),
        })
    }

    /// Creates the topic when `create` is set; an existing topic is fine.
    pub(crate) async fn ensure_topic(&self) -> Result<(), String> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;
        let Some(partitions) = self.create else {
            return Ok(());
        };
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| format!("create an admin client: {e}"))?;
        let topic = NewTopic::new(&self.topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results =
            tokio::time::timeout(self.timeout * 2, admin.create_topics(&[topic], &options))
                .await
                .map_err(|_| {
                    crate::transport::error::timed_out("Kafka at", &self.brokers, self.timeout)
                })?
                .map_err(|e| format!("create topic `{}` on {}: {e}", self.topic, self.brokers))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, e)) => {
                    return Err(format!(
                        "create topic `{}` on {}: {e}",
                        self.topic, self.brokers
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.config {
            c.set(k, v);
        }
        let ms = self.timeout.as_millis().to_string();
        c.set("socket.connection.setup.timeout.ms", ms.as_str());
        c.set("log_level", "3");
        c
    }

    /// The topic's partitions, read from the cluster's metadata (a blocking call, run on
    /// the blocking pool). Fails clearly when the broker is unreachable or the topic
    /// missing.
    pub(crate) async fn partitions<
        C: Consumer<X> + Send + Sync + 'static,
        X: ConsumerContext + 'static,
    >(
        &self,
        client: Arc<C>,
    ) -> Result<Vec<i32>, String> {
        let topic = self.topic.clone();
        let brokers = self.brokers.clone();
        let timeout = self.timeout;
        let result = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(Some(&topic), timeout).map(|m| {
                m.topics().iter().find(|t| t.name() == topic).map(|t| {
                    (
                        t.error(),
                        t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>(),
                    )
                })
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        match result {
            Err(e) => Err(format!(
                "read metadata from Kafka at {brokers}: {e}; {}",
                crate::transport::error::SERVICES_HINT
            )),
            Ok(Some((None, partitions))) if !partitions.is_empty() => Ok(partitions),
            Ok(_) => Err(format!(
                "topic `{}` does not exist on {brokers}; create it first, or set `create: \
                 true` on the channel",
                self.topic
            )),
        }
    }
}
