//! The `webhook` listener: an HTTP server that the SUT calls.
//!
//! [`WebhookListener::start`] binds the channel's `listen` address and returns once the
//! server accepts connections; with port 0 the operating system picks a free port and
//! [`RunningListener::endpoint`](super::RunningListener::endpoint) carries the real one (`http://127.0.0.1:43121/events`),
//! so a test can hand it to the SUT.
//!
//! Every `POST` or `PUT` to the channel's `path` is one observation: the body (any bytes:
//! JSON, text, binary, empty) and the headers. The server answers `200 OK` only after
//! the store has committed the observation, and `503 Service Unavailable` when it could
//! not, so a SUT that retries on failure is recorded at least once. Other paths answer
//! `404`, other methods `405`; both are counted as faults and not recorded.
//!
//! Anyone who can reach the port can send, so the server is bounded
//! ([`Limits`]): a client has 10 s to send a request's headers (and no longer to stay
//! idle between requests), 60 s to send a body; at most 1,024 connections are served
//! at once (more are closed at once and counted as faults). A body is streamed: only the
//! channel's `max_payload` is kept (recorded truncated, with its full size); a body
//! beyond 64 MiB answers `413` and counts as a fault. Header values that are not UTF-8
//! are kept exactly, base64-encoded, and named in `x-roundtrip-base64-headers`.
//!
//! [`RunningListener::stop`](super::RunningListener::stop) stops accepting connections, lets requests in flight finish
//! (up to 10 s), then returns.

mod listener;

use roundtrip_core::model::WebhookChannel;

pub use listener::{BASE64_HEADERS, Limits, MAX_BODY, WebhookListener};

use super::{DriverContext, Listener, PlanError};

/// The listener for a `webhook` channel.
pub fn listener(
    channel: &str,
    spec: &WebhookChannel,
    _ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    Ok(Box::new(WebhookListener::new(channel, spec)?))
}
