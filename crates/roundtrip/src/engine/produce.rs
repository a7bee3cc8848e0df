//! Turning a send step into a message: templates rendered per event, the correlation id,
//! run id and `traceparent` stamped on it.

use roundtrip_core::correlate;
use roundtrip_core::model::{ChannelSpec, CorrelationRule, RUN_ID_HEADER, SendStep};
use roundtrip_core::template::{AddressPart, JsonTemplate, Template, TemplateContext};

use super::bindings::Bindings;

use crate::clock;
use crate::transport::{Fifo, Outgoing};

/// The template context of one produced event (or, with an empty correlation id and
/// `seq` 0, of the run: its channels and its SUT).
#[derive(Debug)]
pub(crate) struct EventContext<'a> {
    pub run_id: &'a str,
    pub correlation_id: &'a str,
    pub seq: u64,
    /// The event's stream under load (`{{ stream }}`), 0 otherwise.
    pub stream: u64,
    pub bindings: &'a Bindings,
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

    fn stream(&self) -> u64 {
        self.stream
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

    fn port(&self, name: &str) -> Result<u16, String> {
        self.bindings.port(name)
    }

    fn channel_address(&self, channel: &str, part: AddressPart) -> Result<String, String> {
        self.bindings.channel_address(channel, part)
    }
}

/// A new correlation id: a UUIDv7, so ids are time-ordered (cheap to index) and unique.
pub(crate) fn new_correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A send step's body, decided once per run.
#[derive(Debug, Clone)]
enum Body {
    /// `body`: JSON whose strings are templates; the correlation id is injected at the
    /// `correlate.json` path when there is one.
    Json(JsonTemplate),
    /// `text`: a template.
    Text(Template),
    /// `base64`: the bytes, decoded once.
    Bytes(bytes::Bytes),
    /// Nothing given: an empty body.
    Empty,
}

/// How one send step becomes a message on its channel: every template it renders per
/// event (body, headers, the channel's key and FIFO ids) parsed once per run.
#[derive(Debug, Clone)]
pub(crate) struct MessageTemplate {
    body: Body,
    headers: Vec<(String, Template)>,
    /// The header that carries the correlation id, lowercased, if the rule names one.
    correlation_header: Option<String>,
    /// The payload path the correlation id is injected at, if the rule names one.
    correlation_path: Option<String>,
    key: Option<Template>,
    fifo: Option<[Template; 2]>,
}

impl MessageTemplate {
    /// Compiles `step` for `channel` (its per-run options already rendered). The loader
    /// has checked every template, so an error here is a harness error, not a usage one.
    pub(crate) fn compile(
        step: &SendStep,
        channel: &ChannelSpec,
        rule: &CorrelationRule,
    ) -> Result<MessageTemplate, String> {
        let parse = |text: &str| Template::parse(text).map_err(|e| e.to_string());
        let body = if let Some(value) = &step.body {
            Body::Json(JsonTemplate::compile(value).map_err(|e| e.to_string())?)
        } else if let Some(text) = &step.text {
            Body::Text(parse(text)?)
        } else if let Some(b64) = &step.base64 {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("`base64` body is not valid base64: {e}"))?;
            Body::Bytes(bytes.into())
        } else {
            Body::Empty
        };
        let headers = step
            .headers
            .iter()
            .map(|(name, value)| Ok((name.to_ascii_lowercase(), parse(value)?)))
            .collect::<Result<_, String>>()?;
        let events = channel.options().event_templates();
        let key = events.key.map(|t| parse(t.template())).transpose()?;
        let fifo = match events.fifo {
            Some([group, dedup]) => Some([parse(group.template())?, parse(dedup.template())?]),
            None => None,
        };
        Ok(MessageTemplate {
            body,
            headers,
            correlation_header: rule.header.as_ref().map(|h| h.to_ascii_lowercase()),
            correlation_path: rule.json.clone(),
            key,
            fifo,
        })
    }

    /// The message for one event.
    pub(crate) fn render(&self, ctx: &EventContext<'_>) -> Result<Outgoing, String> {
        let render = |t: &Template| t.render(ctx).map_err(|e| e.to_string());
        let (body, content_type): (bytes::Bytes, &'static str) = match &self.body {
            Body::Json(template) => {
                let mut value = template.render(ctx).map_err(|e| e.to_string())?;
                if let Some(path) = &self.correlation_path {
                    correlate::inject_json(&mut value, path, ctx.correlation_id);
                }
                let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
                (bytes.into(), "application/json")
            }
            Body::Text(t) => (render(t)?.into_bytes().into(), "text/plain; charset=utf-8"),
            Body::Bytes(bytes) => (bytes.clone(), "application/octet-stream"),
            Body::Empty => (bytes::Bytes::new(), "application/octet-stream"),
        };
        let mut headers = Vec::with_capacity(self.headers.len() + 3);
        for (name, value) in &self.headers {
            headers.push((name.clone(), render(value)?));
        }
        if let Some(name) = &self.correlation_header {
            headers.push((name.clone(), ctx.correlation_id.to_owned()));
        }
        headers.push((RUN_ID_HEADER.to_owned(), ctx.run_id.to_owned()));
        headers.push((
            "traceparent".to_owned(),
            correlate::traceparent(ctx.correlation_id, rand::random::<u64>() | 1),
        ));
        let key = self.key.as_ref().map(render).transpose()?;
        let fifo = match &self.fifo {
            Some([group, dedup]) => Some(Fifo {
                group_id: render(group)?,
                dedup_id: render(dedup)?,
            }),
            None => None,
        };
        Ok(Outgoing {
            body,
            content_type,
            headers,
            correlation_id: ctx.correlation_id.to_owned(),
            key,
            fifo,
        })
    }
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

    fn build(
        step: &SendStep,
        channel: &ChannelSpec,
        rule: &CorrelationRule,
        ctx: &EventContext<'_>,
    ) -> Result<Outgoing, String> {
        MessageTemplate::compile(step, channel, rule)?.render(ctx)
    }

    fn ctx() -> EventContext<'static> {
        static BINDINGS: Bindings = Bindings::new();
        EventContext {
            run_id: "run-1",
            correlation_id: "0192c0de-0000-7000-8000-000000000001",
            seq: 7,
            stream: 0,
            bindings: &BINDINGS,
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
