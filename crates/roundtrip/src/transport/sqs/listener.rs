//! The `sqs` listener: long polling, and deletion after the store committed.

use async_trait::async_trait;
use roundtrip_core::model::SqsChannel;

use crate::transport::aws::queue::{self, OwnedQueue, Plain, QueueSource};
use crate::transport::error::start_error;
use crate::transport::sqs::client;
use crate::transport::{
    DriverContext, ListenError, Listener, ObservationSink, PlanError, RunningListener,
};

/// Long-polls an SQS queue; deletes each message after the store committed it.
#[derive(Debug)]
pub struct SqsListener {
    channel: String,
    spec: SqsChannel,
}

impl SqsListener {
    /// A listener for `spec`.
    pub fn new(channel: &str, spec: &SqsChannel, _ctx: &DriverContext) -> Result<Self, PlanError> {
        Ok(SqsListener {
            channel: channel.to_owned(),
            spec: spec.clone(),
        })
    }
}

/// Long-poll wait and visibility timeout of a listener, in whole seconds.
fn timings(
    wait: Option<roundtrip_core::model::DurationSpec>,
    visibility: Option<roundtrip_core::model::DurationSpec>,
) -> (i32, i32) {
    let secs = |d: roundtrip_core::model::DurationSpec| {
        i32::try_from(d.0.as_secs().max(1)).unwrap_or(i32::MAX)
    };
    (
        // At least 1 s: 0 would be short polling, a loop that never waits. The default is
        // short because a stop waits for the receive in flight (see `queue::consume`).
        wait.map_or(2, |w| {
            i32::try_from(w.0.as_secs().clamp(1, 20)).unwrap_or(20)
        }),
        visibility.map_or(30, secs),
    )
}

#[async_trait]
impl Listener for SqsListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let spec = &self.spec;
        let (client, endpoint) = client(spec.region.as_deref(), spec.endpoint.as_deref())
            .await
            .map_err(|e| start_error(&self.channel, e.clone(), e))?;
        let url = queue::queue_url(&client, &spec.queue, spec.create)
            .await
            .map_err(|e| {
                let message = format!("SQS at {endpoint}: {e}");
                start_error(&self.channel, message.clone(), message)
            })?;
        let (wait_secs, visibility_secs) = timings(spec.wait, spec.visibility_timeout);
        let source = QueueSource {
            client,
            url: url.clone(),
            wait_secs,
            visibility_secs,
            shared: true,
        };
        let queue = OwnedQueue { source, owned: () };
        Ok(queue.listen(url, sink, Plain))
    }
}
