//! Turning a send step into a message: templates rendered per event, the correlation id,
//! run id and `traceparent` stamped on it.

use roundtrip_core::correlate;
use roundtrip_core::model::{ChannelSpec, CorrelationRule, RUN_ID_HEADER, SendStep};
use roundtrip_core::template::{self, Template, TemplateContext};

use crate::clock;
use crate::transport::Outgoing;

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

    let key = match channel {
        ChannelSpec::Dir(dir) => Some(match &dir.file_name {
            Some(t) => render(t, ctx)?,
            None => format!("{}.json", ctx.correlation_id),
        }),
        ChannelSpec::Kafka(kafka) => Some(match &kafka.key {
            Some(t) => render(t, ctx)?,
            None => ctx.correlation_id.to_owned(),
        }),
        _ => None,
    };
    Ok(Outgoing {
        body: body.into(),
        content_type,
        headers,
        correlation_id: ctx.correlation_id.to_owned(),
        key,
    })
}
