//! The driver registry, the one list of drivers: maps a channel's [`ChannelSpec`] to the [`Producer`] or
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

use super::{
    DEFAULT_MAX_PAYLOAD, DriverContext, Listener, PlanError, Producer, dir, http, webhook,
};

/// Builds a driver when its feature is compiled in; otherwise answers
/// [`PlanError::FeatureDisabled`] naming the feature.
macro_rules! gated {
    ($feature:literal, $channel:expr, $spec:expr, $build:expr) => {{
        #[cfg(feature = $feature)]
        {
            $build
        }
        #[cfg(not(feature = $feature))]
        {
            Err(PlanError::FeatureDisabled {
                channel: $channel.to_owned(),
                needs: format!("uses the `{}` transport", $spec.transport()),
                feature: $feature,
            })
        }
    }};
}

/// The producer for the channel `name`, or why the suite cannot send to it.
pub fn producer(
    name: &str,
    spec: &ChannelSpec,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    match spec {
        ChannelSpec::Http(c) => http::producer(name, c, ctx),
        ChannelSpec::Webhook(_) => Err(PlanError::ListenOnly {
            channel: name.to_owned(),
            transport: spec.transport(),
        }),
        ChannelSpec::Dir(c) => dir::producer(name, c, ctx),
        ChannelSpec::Nats(_c) => gated!("nats", name, spec, super::nats::producer(name, _c, ctx)),
        ChannelSpec::JetStream(_c) => {
            gated!(
                "nats",
                name,
                spec,
                super::jetstream::producer(name, _c, ctx)
            )
        }
        ChannelSpec::RedisStream(_c) => {
            gated!(
                "redis",
                name,
                spec,
                super::redis_stream::producer(name, _c, ctx)
            )
        }
        ChannelSpec::RedisPubSub(_c) => {
            gated!(
                "redis",
                name,
                spec,
                super::redis_pubsub::producer(name, _c, ctx)
            )
        }
        ChannelSpec::Amqp(_c) => gated!("amqp", name, spec, super::amqp::producer(name, _c, ctx)),
        ChannelSpec::Mqtt(_c) => gated!("mqtt", name, spec, super::mqtt::producer(name, _c, ctx)),
        ChannelSpec::Kafka(_c) => {
            gated!("kafka", name, spec, super::kafka::producer(name, _c, ctx))
        }
        ChannelSpec::S3(_c) => gated!("aws", name, spec, super::s3::producer(name, _c, ctx)),
        ChannelSpec::Sqs(_c) => gated!("aws", name, spec, super::sqs::producer(name, _c, ctx)),
        ChannelSpec::Sns(_c) => gated!("aws", name, spec, super::sns::producer(name, _c, ctx)),
        ChannelSpec::EventBridge(_c) => {
            gated!(
                "aws",
                name,
                spec,
                super::eventbridge::producer(name, _c, ctx)
            )
        }
    }
}

/// The listener for the channel `name`, or why the suite cannot listen on it.
pub fn listener(
    name: &str,
    spec: &ChannelSpec,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    match spec {
        ChannelSpec::Http(_) => Err(PlanError::SendOnly {
            channel: name.to_owned(),
            transport: spec.transport(),
            hint: "; to receive the calls the SUT makes, use a `webhook` channel",
        }),
        ChannelSpec::Webhook(c) => webhook::listener(name, c, ctx),
        ChannelSpec::Dir(c) => dir::listener(name, c, ctx),
        ChannelSpec::Nats(_c) => gated!("nats", name, spec, super::nats::listener(name, _c, ctx)),
        ChannelSpec::JetStream(_c) => {
            gated!(
                "nats",
                name,
                spec,
                super::jetstream::listener(name, _c, ctx)
            )
        }
        ChannelSpec::RedisStream(_c) => {
            gated!(
                "redis",
                name,
                spec,
                super::redis_stream::listener(name, _c, ctx)
            )
        }
        ChannelSpec::RedisPubSub(_c) => {
            gated!(
                "redis",
                name,
                spec,
                super::redis_pubsub::listener(name, _c, ctx)
            )
        }
        ChannelSpec::Amqp(_c) => gated!("amqp", name, spec, super::amqp::listener(name, _c, ctx)),
        ChannelSpec::Mqtt(_c) => gated!("mqtt", name, spec, super::mqtt::listener(name, _c, ctx)),
        ChannelSpec::Kafka(_c) => {
            gated!("kafka", name, spec, super::kafka::listener(name, _c, ctx))
        }
        ChannelSpec::S3(_c) => gated!("aws", name, spec, super::s3::listener(name, _c, ctx)),
        ChannelSpec::Sqs(_c) => gated!("aws", name, spec, super::sqs::listener(name, _c, ctx)),
        ChannelSpec::Sns(_c) => gated!("aws", name, spec, super::sns::listener(name, _c, ctx)),
        ChannelSpec::EventBridge(_c) => {
            gated!(
                "aws",
                name,
                spec,
                super::eventbridge::listener(name, _c, ctx)
            )
        }
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
    fn a_webhook_the_loader_would_refuse_is_refused_by_its_driver_with_the_same_rule() {
        let spec = ChannelSpec::Webhook(WebhookChannel {
            listen: "127.0.0.1".to_owned(),
            path: "events".to_owned(),
            max_payload: None,
        });
        let err = listener("hook", &spec, &ctx()).expect_err("no port, no leading slash");
        assert_eq!(
            err.to_string(),
            "channel `hook` is misconfigured: `listen` must be `host:port`, not `127.0.0.1`: \
             there is no port; write it like `127.0.0.1:7002` (port 0 picks a free port)"
        );
    }

    #[test]
    fn the_payload_limit_defaults_to_one_mebibyte() {
        assert_eq!(max_payload(&webhook(None)), DEFAULT_MAX_PAYLOAD);
        assert_eq!(max_payload(&webhook(Some(ByteSize(512)))), 512);
        assert_eq!(max_payload(&http("http://x/")), DEFAULT_MAX_PAYLOAD);
    }
}
