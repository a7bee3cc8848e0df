//! The `http` producer: each event is one HTTP request to the SUT.
//!
//! The request carries the channel's method and URL, the channel's headers followed by
//! the message's (correlation id, run id, `traceparent`, the step's headers), and the
//! body with its content type (unless a header sets `content-type` itself). Each request
//! has its own timeout (the channel's `timeout`, 10 s by default). One HTTP client per
//! producer keeps connections alive across a scenario's sends.
//!
//! A 2xx answer means the SUT accepted the event. Any other status is a
//! [`ProduceError::Rejected`](super::ProduceError::Rejected) quoting the status and the start of the answer's body; a
//! connection failure or a timeout is [`ProduceError::Unreachable`](super::ProduceError::Unreachable) naming the URL.
//!
//! `https://` URLs need the cargo feature `tls`.

mod producer;

use roundtrip_core::model::HttpChannel;

pub use producer::{DEFAULT_TIMEOUT, HttpProducer};

use super::{DriverContext, PlanError, Producer};

/// The producer for an `http` channel.
pub fn producer(
    _channel: &str,
    spec: &HttpChannel,
    _ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    Ok(Box::new(HttpProducer::new(_channel, spec)?))
}
