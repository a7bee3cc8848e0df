//! The state a run's scenarios share while they run, and sending one event.

use std::collections::BTreeMap;
use std::sync::Arc;

use roundtrip_core::observation::SentEvent;

use super::bindings::Bindings;
use super::plan::PlannedSend;
use super::produce::EventContext;
use super::router::Router;
use super::shown_error;
use crate::clock;
use crate::error::error_chain;
use crate::store::Store;
use crate::transport::{ProduceError, Producer};

/// What the scenarios of one run share.
#[derive(Debug)]
pub(crate) struct Session {
    pub run_id: String,
    pub store: Arc<dyn Store>,
    pub producers: BTreeMap<String, Arc<dyn Producer>>,
    pub router: Arc<Router>,
    pub bindings: Arc<Bindings>,
}

/// One event, sent (or not) and recorded.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The event as recorded; its `error` says why it was not sent.
    pub event: SentEvent,
    /// The transport could not be reached at all (a connection failure, not a refusal).
    pub unreachable: bool,
    /// How long the transport took to accept it, in nanoseconds.
    pub took: u64,
}

impl Session {
    /// Produces one event of `send` and records it; never fails: an error is in the
    /// event.
    pub(crate) async fn send_one(
        &self,
        scenario: &str,
        send: &PlannedSend,
        index: u64,
        correlation_id: String,
    ) -> Sent {
        let producer = self.producers.get(&send.channel);
        self.send_via(producer, scenario, send, index, correlation_id)
            .await
    }

    /// [`Session::send_one`] through `producer`, which need not be one of the run's
    /// own (a client's send to a channel no scenario sends to).
    pub(crate) async fn send_via(
        &self,
        producer: Option<&Arc<dyn Producer>>,
        scenario: &str,
        send: &PlannedSend,
        index: u64,
        correlation_id: String,
    ) -> Sent {
        let ctx = EventContext {
            run_id: &self.run_id,
            correlation_id: &correlation_id,
            seq: index,
            stream: 0,
            bindings: &self.bindings,
        };
        let mut sent = Sent {
            event: SentEvent {
                run_id: self.run_id.clone(),
                scenario: scenario.to_owned(),
                index,
                channel: send.channel.clone(),
                correlation_id: correlation_id.clone(),
                sent_at: clock::wall_now(),
                sent_mono: clock::mono_now(),
                size: 0,
                error: None,
            },
            unreachable: false,
            took: 0,
        };
        let event = &mut sent.event;
        match (send.message.render(&ctx), producer) {
            (Ok(message), Some(producer)) => {
                event.size = message.body.len() as u64;
                event.sent_at = clock::wall_now();
                event.sent_mono = clock::mono_now();
                let result = producer.send(message).await;
                sent.took = clock::mono_now().saturating_sub(event.sent_mono);
                if let Err(e) = result {
                    sent.unreachable = matches!(e, ProduceError::Unreachable { .. });
                    event.error = Some(shown_error(&e));
                }
            }
            (Err(e), _) => event.error = Some(e),
            (_, None) => event.error = Some(format!("no producer for channel `{}`", send.channel)),
        }
        if let Err(e) = self.store.record_sent(event).await
            && event.error.is_none()
        {
            event.error = Some(format!(
                "failed to record the sent event: {}",
                error_chain(&e)
            ));
        }
        sent
    }
}
