//! The driver registry: maps a channel's [`ChannelSpec`] to the [`Producer`] or
//! [`Listener`] that implements it.
//!
//! Planning happens before anything starts, so every mistake a suite can make about its
//! channels surfaces here as a [`PlanError`]: a channel used the wrong way round (sending
//! to a `webhook`, listening on an `http` endpoint), an invalid URL or header, or a
//! transport this build of roundtrip was compiled without (the error names the cargo
//! feature to enable, rather than the transport silently missing).
//!
//! | transport | produce | listen | cargo feature |
//! | --- | --- | --- | --- |
//! | `http` | yes | no | (always; `tls` for `https://` URLs) |
//! | `webhook` | no | yes | (always) |
//! | `dir` | yes | yes | (always) |
//! | `nats` | yes | yes | `nats` |
//! | `jetstream` | yes | yes | `nats` |
//! | `redis_stream` | yes | yes | `redis` |
//! | `redis_pubsub` | yes | yes | `redis` |
//! | `amqp` | yes | yes | `amqp` |
//! | `mqtt` | yes | yes | `mqtt` |
//! | `kafka` | yes | yes | `kafka` |
//! | `s3` | yes | yes | `aws` |
//! | `sqs` | yes | yes | `aws` |
//! | `sns` | yes | yes | `aws` |
//! | `eventbridge` | yes | yes | `aws` |
//!
//! The `full` feature turns every transport on.

use roundtrip_core::model::ChannelSpec;

use super::{DEFAULT_MAX_PAYLOAD, DriverContext, Listener, Producer, dir, http, webhook};

/// Builds a driver when its feature is compiled in; otherwise answers
/// [`PlanError::FeatureDisabled`] naming the feature.
macro_rules! driver {
    ($feature:literal, $channel:expr, $spec:expr, $build:expr) => {{
        #[cfg(feature = $feature)]
        {
            Ok(Box::new($build?))
        }
        #[cfg(not(feature = $feature))]
        {
            Err(disabled($channel, $spec, $feature))
        }
    }};
}

#[cfg(not(all(
    feature = "nats",
    feature = "redis",
    feature = "amqp",
    feature = "mqtt",
    feature = "kafka",
    feature = "aws"
)))]
fn disabled(channel: &str, spec: &ChannelSpec, feature: &'static str) -> PlanError {
    PlanError::FeatureDisabled {
        channel: channel.to_owned(),
        needs: format!("uses the `{}` transport", spec.transport()),
        feature,
    }
}

/// Why a channel cannot be driven as the suite asks. Reads after "failed to plan the run:".
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The suite sends to a channel whose transport can only be listened on.
    #[error(
        "channel `{channel}` uses the `{transport}` transport, which can only be listened on, \
         not sent to"
    )]
    ListenOnly {
        /// The channel.
        channel: String,
        /// The transport name, e.g. `webhook`.
        transport: &'static str,
    },
    /// The suite expects something on a channel whose transport can only be sent to.
    #[error(
        "channel `{channel}` uses the `{transport}` transport, which can only be sent to, \
         not listened on{hint}"
    )]
    SendOnly {
        /// The channel.
        channel: String,
        /// The transport name, e.g. `http`.
        transport: &'static str,
        /// What to use instead, starting with `; ` (or empty).
        hint: &'static str,
    },
    /// The channel needs a transport or capability compiled out of this build.
    #[error(
        "channel `{channel}` {needs}, which needs the cargo feature `{feature}` \
         (rebuild roundtrip with `--features {feature}`)"
    )]
    FeatureDisabled {
        /// The channel.
        channel: String,
        /// What it needs, e.g. ``uses the `nats` transport`` or `has an https URL`.
        needs: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// The channel's options are invalid (a malformed URL, method or header).
    #[error("channel `{channel}` is misconfigured: {message}")]
    Invalid {
        /// The channel.
        channel: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// The producer for `channel`, or why the suite cannot send to it.
pub fn producer(
    channel: &str,
    spec: &ChannelSpec,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    match spec {
        ChannelSpec::Http(http) => Ok(Box::new(http::HttpProducer::new(channel, http)?)),
        ChannelSpec::Webhook(_) => Err(PlanError::ListenOnly {
            channel: channel.to_owned(),
            transport: spec.transport(),
        }),
        ChannelSpec::Dir(dir) => Ok(Box::new(dir::DirProducer::new(channel, dir, ctx))),
        ChannelSpec::Nats(_c) => driver!(
            "nats",
            channel,
            spec,
            super::nats::NatsProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::JetStream(_c) => driver!(
            "nats",
            channel,
            spec,
            super::nats::JetStreamProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::RedisStream(_c) => driver!(
            "redis",
            channel,
            spec,
            super::redis::StreamProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::RedisPubSub(_c) => driver!(
            "redis",
            channel,
            spec,
            super::redis::PubSubProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::Amqp(_c) => driver!(
            "amqp",
            channel,
            spec,
            super::amqp::AmqpProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::Mqtt(_c) => driver!(
            "mqtt",
            channel,
            spec,
            super::mqtt::MqttProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::Kafka(_c) => driver!(
            "kafka",
            channel,
            spec,
            super::kafka::KafkaProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::S3(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::S3Producer::new(channel, _c, ctx)
        ),
        ChannelSpec::Sqs(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::SqsProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::Sns(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::SnsProducer::new(channel, _c, ctx)
        ),
        ChannelSpec::EventBridge(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::EventBridgeProducer::new(channel, _c, ctx)
        ),
    }
}

/// The listener for `channel`, or why the suite cannot listen on it.
pub fn listener(
    channel: &str,
    spec: &ChannelSpec,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    match spec {
        ChannelSpec::Http(_) => Err(PlanError::SendOnly {
            channel: channel.to_owned(),
            transport: spec.transport(),
            hint: "; to receive the calls the SUT makes, use a `webhook` channel",
        }),
        ChannelSpec::Webhook(webhook) => {
            Ok(Box::new(webhook::WebhookListener::new(channel, webhook)?))
        }
        ChannelSpec::Dir(dir) => Ok(Box::new(dir::DirListener::new(channel, dir, ctx))),
        ChannelSpec::Nats(_c) => driver!(
            "nats",
            channel,
            spec,
            super::nats::NatsListener::new(channel, _c, ctx)
        ),
        ChannelSpec::JetStream(_c) => driver!(
            "nats",
            channel,
            spec,
            super::nats::JetStreamListener::new(channel, _c, ctx)
        ),
        ChannelSpec::RedisStream(_c) => driver!(
            "redis",
            channel,
            spec,
            super::redis::StreamListener::new(channel, _c, ctx)
        ),
        ChannelSpec::RedisPubSub(_c) => driver!(
            "redis",
            channel,
            spec,
            super::redis::PubSubListener::new(channel, _c, ctx)
        ),
        ChannelSpec::Amqp(_c) => driver!(
            "amqp",
            channel,
            spec,
            super::amqp::AmqpListener::new(channel, _c, ctx)
        ),
        ChannelSpec::Mqtt(_c) => driver!(
            "mqtt",
            channel,
            spec,
            super::mqtt::MqttListener::new(channel, _c, ctx)
        ),
        ChannelSpec::Kafka(_c) => driver!(
            "kafka",
            channel,
            spec,
            super::kafka::KafkaListener::new(channel, _c, ctx)
        ),
        ChannelSpec::S3(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::S3Listener::new(channel, _c, ctx)
        ),
        ChannelSpec::Sqs(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::SqsListener::new(channel, _c, ctx)
        ),
        ChannelSpec::Sns(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::SnsListener::new(channel, _c, ctx)
        ),
        ChannelSpec::EventBridge(_c) => driver!(
            "aws",
            channel,
            spec,
            super::aws::EventBridgeListener::new(channel, _c, ctx)
        ),
    }
}

/// The payload limit of a channel: its `max_payload`, or [`DEFAULT_MAX_PAYLOAD`].
pub fn max_payload(spec: &ChannelSpec) -> usize {
    spec.max_payload().map_or(DEFAULT_MAX_PAYLOAD, |size| {
        usize::try_from(size.0).unwrap_or(usize::MAX)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use roundtrip_core::model::{ByteSize, DirChannel, HttpChannel, WebhookChannel};

    use super::*;

    fn ctx() -> DriverContext {
        DriverContext {
            base_dir: PathBuf::from("."),
        }
    }

    fn http(url: &str) -> ChannelSpec {
        ChannelSpec::Http(HttpChannel {
            url: url.to_owned(),
            method: "POST".to_owned(),
            headers: Default::default(),
            timeout: None,
        })
    }

    fn webhook(max_payload: Option<ByteSize>) -> ChannelSpec {
        ChannelSpec::Webhook(WebhookChannel {
            listen: "127.0.0.1:0".to_owned(),
            path: "/events".to_owned(),
            max_payload,
        })
    }

    #[test]
    fn channels_used_the_wrong_way_round_are_plan_errors() {
        let err = producer("orders_out", &webhook(None), &ctx()).expect_err("webhook producer");
        assert_eq!(
            err.to_string(),
            "channel `orders_out` uses the `webhook` transport, which can only be listened on, \
             not sent to"
        );
        let err = listener("orders_in", &http("http://127.0.0.1:1/x"), &ctx())
            .expect_err("http listener");
        assert_eq!(
            err.to_string(),
            "channel `orders_in` uses the `http` transport, which can only be sent to, not \
             listened on; to receive the calls the SUT makes, use a `webhook` channel"
        );
    }

    #[test]
    fn each_transport_resolves_to_its_drivers() {
        assert!(producer("a", &http("http://127.0.0.1:1/x"), &ctx()).is_ok());
        assert!(listener("b", &webhook(None), &ctx()).is_ok());
        let dir = ChannelSpec::Dir(DirChannel {
            path: "out".to_owned(),
            file_name: None,
            suffix: None,
            max_payload: None,
        });
        assert!(producer("c", &dir, &ctx()).is_ok());
        assert!(listener("c", &dir, &ctx()).is_ok());
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn a_compiled_out_transport_names_its_feature() {
        let kafka = ChannelSpec::Kafka(roundtrip_core::model::KafkaChannel::new(
            "127.0.0.1:9092",
            "t",
        ));
        let err = listener("audit", &kafka, &ctx()).expect_err("kafka is compiled out");
        assert_eq!(
            err.to_string(),
            "channel `audit` uses the `kafka` transport, which needs the cargo feature `kafka` \
             (rebuild roundtrip with `--features kafka`)"
        );
    }

    #[test]
    fn invalid_urls_are_plan_errors() {
        let err = producer("a", &http("not a url"), &ctx()).expect_err("bad url");
        assert!(
            err.to_string()
                .starts_with("channel `a` is misconfigured: `not a url` is not a valid URL"),
            "{err}"
        );
        let err = producer("a", &http("ftp://example.com/x"), &ctx()).expect_err("bad scheme");
        assert!(err.to_string().contains("`http://` or `https://`"), "{err}");
    }

    #[test]
    fn the_payload_limit_defaults_to_one_mebibyte() {
        assert_eq!(max_payload(&webhook(None)), DEFAULT_MAX_PAYLOAD);
        assert_eq!(max_payload(&webhook(Some(ByteSize(512)))), 512);
        assert_eq!(max_payload(&http("http://x/")), DEFAULT_MAX_PAYLOAD);
    }
}
