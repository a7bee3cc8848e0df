//! The `eventbridge` listener: a rule of its own routes the run's events to a queue of its
//! own.

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use roundtrip_core::model::EventBridgeChannel;
use serde_json::Value;

use crate::aws::{describe_endpoint, load_config, owned_name, service_error};
use crate::transport::aws::queue::{self, Decode, Decoded, OwnedQueue, QueueSource, Teardown as _};
use crate::transport::aws::with_cleanup;
use crate::transport::error::start_error;
use crate::transport::eventbridge::ensure_bus;
use crate::transport::{
    DriverContext, ListenError, Listener, ObservationSink, PlanError, Received, RunningListener,
};

/// Routes the run's events on a bus to a harness-owned queue through a harness-owned
/// rule.
#[derive(Debug)]
pub struct EventBridgeListener {
    channel: String,
    spec: EventBridgeChannel,
}

impl EventBridgeListener {
    /// A listener for `spec`.
    pub fn new(
        channel: &str,
        spec: &EventBridgeChannel,
        _ctx: &DriverContext,
    ) -> Result<Self, PlanError> {
        Ok(EventBridgeListener {
            channel: channel.to_owned(),
            spec: spec.clone(),
        })
    }
}

/// The rule's event pattern: the channel's `pattern`, or its `source` and `detail_type`.
fn event_pattern(spec: &EventBridgeChannel) -> Value {
    if let Some(pattern) = &spec.pattern {
        return pattern.clone();
    }
    let mut pattern = serde_json::Map::new();
    if let Some(source) = &spec.source {
        pattern.insert("source".to_owned(), Value::from(vec![source.clone()]));
    }
    if let Some(detail_type) = &spec.detail_type {
        pattern.insert(
            "detail-type".to_owned(),
            Value::from(vec![detail_type.clone()]),
        );
    }
    Value::Object(pattern)
}

/// The event envelope of a queue message, as a received message: `detail` as the body.
#[derive(Debug)]
struct Envelope;

impl Decode for Envelope {
    async fn decode(&self, message: &Message) -> Decoded {
        Decoded::Record(vec![envelope(message)], Vec::new())
    }
}

fn envelope(message: &Message) -> Received {
    let text = message.body().unwrap_or_default();
    let Ok(Value::Object(event)) = serde_json::from_str::<Value>(text) else {
        // Not an event envelope: recorded as it came.
        return queue::plain(message);
    };
    let body = event
        .get("detail")
        .map_or_else(Vec::new, |d| serde_json::to_vec(d).unwrap_or_default());
    let mut headers = Vec::new();
    for field in ["source", "detail-type", "id", "time", "account", "region"] {
        if let Some(Value::String(v)) = event.get(field) {
            headers.push((format!("eventbridge-{field}"), v.clone()));
        }
    }
    let mut received = Received::new(body, headers);
    for (field, name) in [("source", "source"), ("detail-type", "detail_type")] {
        if let Some(Value::String(v)) = event.get(field) {
            received.meta.push((name.to_owned(), v.clone()));
        }
    }
    received.message_id = event.get("id").and_then(Value::as_str).map(str::to_owned);
    received.redelivered = queue::redelivered(message);
    received
}

#[derive(Debug)]
pub(crate) struct Owned {
    events: Client,
    sqs: aws_sdk_sqs::Client,
    bus: String,
    rule: Option<String>,
    queue_url: String,
}

impl queue::Teardown for Owned {
    async fn remove(self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(rule) = &self.rule {
            if let Err(e) = self
                .events
                .remove_targets()
                .rule(rule)
                .event_bus_name(&self.bus)
                .ids(TARGET_ID)
                .send()
                .await
            {
                failures.push(format!(
                    "remove the targets of rule {rule}: {}",
                    service_error(&e)
                ));
            }
            if let Err(e) = self
                .events
                .delete_rule()
                .name(rule)
                .event_bus_name(&self.bus)
                .send()
                .await
            {
                failures.push(format!("delete rule {rule}: {}", service_error(&e)));
            }
        }
        if let Err(e) = queue::delete_queue(&self.sqs, &self.queue_url).await {
            failures.push(e);
        }
        failures
    }
}

const TARGET_ID: &str = "roundtrip-listener";

#[async_trait]
impl Listener for EventBridgeListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let spec = &self.spec;
        let fail = |e: String| start_error(&self.channel, e.clone(), e);
        let config = load_config(spec.region.as_deref(), spec.endpoint.as_deref())
            .await
            .map_err(fail)?;
        let (rule, routed) = route_to_owned_queue(
            &config,
            &spec.bus,
            spec.create,
            &event_pattern(spec),
            sink.run_id(),
            &self.channel,
        )
        .await
        .map_err(fail)?;
        let endpoint = format!("{} rule {rule}", spec.bus);
        Ok(routed.listen(endpoint, sink, Envelope))
    }
}

/// Creates a queue and a rule of the listener's own on `bus` that routes events matching
/// `pattern` to it; on failure removes whatever it created. Returns the rule's name and
/// the queue.
pub(crate) async fn route_to_owned_queue(
    config: &aws_config::SdkConfig,
    bus: &str,
    create: bool,
    pattern: &Value,
    run_id: &str,
    channel: &str,
) -> Result<(String, OwnedQueue<Owned>), String> {
    let endpoint = describe_endpoint(config);
    let events = Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    ensure_bus(&events, bus, create)
        .await
        .map_err(|e| format!("EventBridge at {endpoint}: {e}"))?;
    // Rule names are at most 64 characters; queue names 80.
    let name = owned_name(run_id, channel, 64);
    let queue_url = queue::create_queue(&sqs, &name, Vec::new())
        .await
        .map_err(|e| format!("SQS at {endpoint}: {e}"))?;
    let mut owned = Owned {
        events: events.clone(),
        sqs: sqs.clone(),
        bus: bus.to_owned(),
        rule: None,
        queue_url: queue_url.clone(),
    };
    if let Err(e) = route(&events, &sqs, &name, &queue_url, bus, pattern, &mut owned).await {
        let failures = owned.remove().await;
        return Err(with_cleanup(
            format!("EventBridge at {endpoint}: {e}"),
            failures,
        ));
    }
    let source = QueueSource::new(sqs, queue_url);
    Ok((name, OwnedQueue { source, owned }))
}

async fn route(
    events: &Client,
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    queue_url: &str,
    bus: &str,
    pattern: &Value,
    owned: &mut Owned,
) -> Result<(), String> {
    let queue_arn = queue::queue_arn(sqs, queue_url).await?;
    let rule_arn = events
        .put_rule()
        .name(name)
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .description(
            "roundtrip listener: routes a run's events to its queue; removed when the run ends",
        )
        .send()
        .await
        .map_err(|e| format!("create rule {name}: {}", service_error(&e)))?
        .rule_arn
        .ok_or_else(|| format!("create rule {name}: EventBridge returned no ARN"))?;
    owned.rule = Some(name.to_owned());
    sqs.set_queue_attributes()
        .queue_url(queue_url)
        .attributes(
            QueueAttributeName::Policy,
            queue::send_policy(&queue_arn, "events.amazonaws.com", &rule_arn),
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "allow the rule to send to the listener's queue: {}",
                service_error(&e)
            )
        })?;
    let target = Target::builder()
        .id(TARGET_ID)
        .arn(&queue_arn)
        .build()
        .map_err(|e| e.to_string())?;
    let out = events
        .put_targets()
        .rule(name)
        .event_bus_name(bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| {
            format!(
                "target rule {name} at the listener's queue: {}",
                service_error(&e)
            )
        })?;
    if out.failed_entry_count() > 0 {
        return Err(format!(
            "target rule {name} at the listener's queue: {:?}",
            out.failed_entries()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_the_given_one_or_source_and_detail_type() {
        let spec = EventBridgeChannel {
            source: Some("orders".to_owned()),
            detail_type: Some("OrderPlaced".to_owned()),
            ..EventBridgeChannel::new()
        };
        assert_eq!(
            event_pattern(&spec),
            serde_json::json!({ "source": ["orders"], "detail-type": ["OrderPlaced"] })
        );
        let given = serde_json::json!({ "detail": { "tenant": ["t1"] } });
        let spec = EventBridgeChannel {
            pattern: Some(given.clone()),
            ..spec
        };
        assert_eq!(event_pattern(&spec), given);
    }

    #[test]
    fn the_detail_is_the_body_and_the_envelope_the_headers() {
        let message = Message::builder()
            .body(
                serde_json::json!({
                    "version": "0", "id": "e-1", "detail-type": "OrderPlaced",
                    "source": "orders", "time": "2026-11-26T10:00:00Z",
                    "detail": { "correlationId": "c-1", "n": 2 }
                })
                .to_string(),
            )
            .build();
        let received = envelope(&message);
        assert_eq!(
            serde_json::from_slice::<Value>(&received.body).expect("json"),
            serde_json::json!({ "correlationId": "c-1", "n": 2 })
        );
        assert_eq!(received.message_id.as_deref(), Some("e-1"));
        assert!(
            received
                .headers
                .contains(&("eventbridge-source".to_owned(), "orders".to_owned()))
        );
        assert!(received.headers.contains(&(
            "eventbridge-detail-type".to_owned(),
            "OrderPlaced".to_owned()
        )));
    }
}
