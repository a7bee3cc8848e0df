//! Turning a send step into a message: templates rendered per event, the correlation id,
//! run id and `traceparent` stamped on it.

use roundtrip_core::correlate;
use roundtrip_core::model::{ChannelSpec, CorrelationRule, RUN_ID_HEADER, SendStep};
use roundtrip_core::template::{self, Template, TemplateContext};

use crate::clock;
use crate::transport::{Fifo, Outgoing};

/// The template context of one produced event.
#[derive(Debug)]
pub(crate) struct EventContext<'a> {
    pub run_id: &'a str,
    pub correlation_id: &'a str,
    pub seq: u64,
}

impl TemplateContext for EventContext<'_> {
    fn run_id(&self) -> &str {
        self.run_id
    }

    fn correlation_id(&self) -> &str {
        self.correlation_id
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn now_unix_nanos(&self) -> i64 {
        clock::wall_now()
    }

    fn new_uuid(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A new correlation id: a UUIDv7, so ids are time-ordered (cheap to index) and unique.
pub(crate) fn new_correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn render(text: &str, ctx: &EventContext<'_>) -> Result<String, String> {
    Template::parse(text)
        .map_err(|e| e.to_string())?
        .render(ctx)
        .map_err(|e| e.to_string())
}

/// Builds the message for one event of `step` on a channel.
pub(crate) fn build(
    step: &SendStep,
    channel: &ChannelSpec,
    rule: &CorrelationRule,
    ctx: &EventContext<'_>,
) -> Result<Outgoing, String> {
    let (body, content_type): (Vec<u8>, &'static str) = if let Some(value) = &step.body {
        let mut value = template::render_json(value, ctx).map_err(|e| e.to_string())?;
        if let Some(path) = &rule.json {
            correlate::inject_json(&mut value, path, ctx.correlation_id);
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        (bytes, "application/json")
    } else if let Some(text) = &step.text {
        (render(text, ctx)?.into_bytes(), "text/plain; charset=utf-8")
    } else if let Some(b64) = &step.base64 {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("`base64` body is not valid base64: {e}"))?;
        (bytes, "application/octet-stream")
    } else {
        (Vec::new(), "application/octet-stream")
    };

    let mut headers = Vec::with_capacity(step.headers.len() + 3);
    for (name, value) in &step.headers {
        headers.push((name.to_ascii_lowercase(), render(value, ctx)?));
    }
    if let Some(name) = &rule.header {
        headers.push((name.to_ascii_lowercase(), ctx.correlation_id.to_owned()));
    }
    headers.push((RUN_ID_HEADER.to_owned(), ctx.run_id.to_owned()));
    headers.push((
        "traceparent".to_owned(),
        correlate::traceparent(ctx.correlation_id, rand::random::<u64>() | 1),
    ));

    let events = channel.options().event_templates();
    let key = match events.key {
        Some(t) => Some(render(t.template(), ctx)?),
        None => None,
    };
    let fifo = match events.fifo {
        Some([group, dedup]) => Some(Fifo {
            group_id: render(group.template(), ctx)?,
            dedup_id: render(dedup.template(), ctx)?,
        }),
        None => None,
    };
    Ok(Outgoing {
        body: body.into(),
        content_type,
        headers,
        correlation_id: ctx.correlation_id.to_owned(),
        key,
        fifo,
    })
}

#[cfg(test)]
mod tests {
    use roundtrip_core::model::{DirChannel, KafkaChannel, S3Channel, SnsChannel, SqsChannel};

    use super::*;

    fn step() -> SendStep {
        SendStep {
            to: "in".to_owned(),
            body: Some(serde_json::json!({ "item": "widget" })),
            text: None,
            base64: None,
            headers: Default::default(),
            repeat: 1,
            concurrency: 1,
        }
    }

    fn ctx() -> EventContext<'static> {
        EventContext {
            run_id: "run-1",
            correlation_id: "0192c0de-0000-7000-8000-000000000001",
            seq: 7,
        }
    }

    fn key_for(channel: &ChannelSpec) -> Option<String> {
        build(&step(), channel, &CorrelationRule::default(), &ctx())
            .expect("the message builds")
            .key
    }

    #[test]
    fn a_kafka_record_key_is_the_correlation_id_unless_a_template_says_otherwise() {
        let plain = ChannelSpec::Kafka(KafkaChannel::new("b:9092", "t"));
        assert_eq!(key_for(&plain).as_deref(), Some(ctx().correlation_id));
        let templated = ChannelSpec::Kafka(KafkaChannel {
            key: Some("order-{{ seq }}".to_owned()),
            ..KafkaChannel::new("b:9092", "t")
        });
        assert_eq!(key_for(&templated).as_deref(), Some("order-7"));
    }

    #[test]
    fn an_s3_object_key_is_the_correlation_id_unless_a_template_says_otherwise() {
        let plain = ChannelSpec::S3(S3Channel::new("b"));
        assert_eq!(key_for(&plain).as_deref(), Some(ctx().correlation_id));
        let templated = ChannelSpec::S3(S3Channel {
            key: Some("in/{{ correlation_id }}.txt".to_owned()),
            ..S3Channel::new("b")
        });
        assert_eq!(
            key_for(&templated),
            Some(format!("in/{}.txt", ctx().correlation_id))
        );
    }

    #[test]
    fn fifo_ids_default_to_one_group_per_run_and_one_dedup_id_per_event() {
        let fifo = |channel: SqsChannel| {
            build(
                &step(),
                &ChannelSpec::Sqs(channel),
                &CorrelationRule::default(),
                &ctx(),
            )
            .expect("the message builds")
            .fifo
        };
        assert_eq!(fifo(SqsChannel::new("orders")), None);
        let sns = |topic: &str| {
            build(
                &step(),
                &ChannelSpec::Sns(SnsChannel::new(topic)),
                &CorrelationRule::default(),
                &ctx(),
            )
            .expect("the message builds")
            .fifo
        };
        assert_eq!(sns("notices"), None);
        assert_eq!(
            sns("notices.fifo").map(|f| f.group_id),
            Some("run-1".to_owned())
        );
        assert_eq!(
            fifo(SqsChannel::new("orders.fifo")),
            Some(Fifo {
                group_id: "run-1".to_owned(),
                dedup_id: format!("{}-7", ctx().correlation_id),
            })
        );
        let templated = SqsChannel {
            group_id: Some("g-{{ seq }}".to_owned()),
            dedup_id: Some("d-{{ correlation_id }}".to_owned()),
            ..SqsChannel::new("orders.fifo")
        };
        assert_eq!(
            fifo(templated),
            Some(Fifo {
                group_id: "g-7".to_owned(),
                dedup_id: format!("d-{}", ctx().correlation_id),
            })
        );
    }

    #[test]
    fn a_dir_file_name_defaults_to_the_correlation_id() {
        let dir = ChannelSpec::Dir(DirChannel {
            path: "out".to_owned(),
            file_name: None,
            suffix: None,
            max_payload: None,
        });
        assert_eq!(
            key_for(&dir),
            Some(format!("{}.json", ctx().correlation_id))
        );
    }

    #[test]
    fn every_message_carries_the_correlation_run_and_traceparent_headers() {
        let channel = ChannelSpec::Kafka(KafkaChannel::new("b:9092", "t"));
        let message = build(&step(), &channel, &CorrelationRule::default(), &ctx())
            .expect("the message builds");
        let header = |name: &str| {
            message
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("x-correlation-id").as_deref(),
            Some(ctx().correlation_id)
        );
        assert_eq!(header(RUN_ID_HEADER).as_deref(), Some("run-1"));
        let traceparent = header("traceparent").expect("a traceparent");
        assert!(
            traceparent.contains(&ctx().correlation_id.replace('-', "")),
            "{traceparent}"
        );
    }
}
