//! `eventbridge`: put events on a bus; listen through a rule the harness creates for the
//! run, which routes matching events to a queue of its own; both are removed when the
//! listener stops.
//!
//! Events carry no headers. The producer sends the body as the event's `detail` (a JSON
//! object); the listener records the `detail` as the body and the envelope's `source`,
//! `detail-type`, `id`, `time`, `account` and `region` as `eventbridge-*` headers.

pub(crate) mod listener;
mod producer;

pub use listener::EventBridgeListener;
pub use producer::EventBridgeProducer;

use aws_sdk_eventbridge::Client;
use roundtrip_core::model::EventBridgeChannel;

use crate::aws::{error_code, service_error};

crate::transport::constructors!(
    "eventbridge",
    EventBridgeChannel,
    EventBridgeProducer,
    EventBridgeListener
);

/// The `source` of produced events when the channel sets none.
pub const DEFAULT_SOURCE: &str = "roundtrip";

/// The `detail-type` of produced events when the channel sets none.
pub const DEFAULT_DETAIL_TYPE: &str = "roundtrip.event";

/// Makes sure the bus exists: created when `create`, else described.
async fn ensure_bus(client: &Client, bus: &str, create: bool) -> Result<(), String> {
    if create {
        return match client.create_event_bus().name(bus).send().await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceAlreadyExistsException") => Ok(()),
            Err(e) => Err(format!("create event bus `{bus}`: {}", service_error(&e))),
        };
    }
    client
        .describe_event_bus()
        .name(bus)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("event bus `{bus}`: {}", service_error(&e)))
}
