//! The `sns` listener: a queue of its own subscribed to the topic for the run.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use roundtrip_core::model::SnsChannel;

use crate::aws::{describe_endpoint, load_config, owned_name, service_error};
use crate::transport::aws::queue::{self, OwnedQueue, Plain, QueueSource, Teardown as _};
use crate::transport::aws::with_cleanup;
use crate::transport::error::start_error;
use crate::transport::sns::topic_arn;
use crate::transport::{
    DriverContext, ListenError, Listener, ObservationSink, PlanError, RunningListener,
};

/// Subscribes a harness-owned queue to an SNS topic for the run.
#[derive(Debug)]
pub struct SnsListener {
    channel: String,
    spec: SnsChannel,
}

impl SnsListener {
    /// A listener for `spec`.
    pub fn new(channel: &str, spec: &SnsChannel, _ctx: &DriverContext) -> Result<Self, PlanError> {
        Ok(SnsListener {
            channel: channel.to_owned(),
            spec: spec.clone(),
        })
    }
}

/// What an SNS listener created, to remove when it stops.
#[derive(Debug)]
pub(crate) struct Owned {
    sns: Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    subscription: Option<String>,
}

impl queue::Teardown for Owned {
    async fn remove(self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(arn) = &self.subscription
            && let Err(e) = self.sns.unsubscribe().subscription_arn(arn).send().await
        {
            failures.push(format!("remove subscription {arn}: {}", service_error(&e)));
        }
        if let Err(e) = queue::delete_queue(&self.sqs, &self.queue_url).await {
            failures.push(e);
        }
        failures
    }
}

#[async_trait]
impl Listener for SnsListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let spec = &self.spec;
        let fail = |e: String| start_error(&self.channel, e.clone(), e);
        let config = load_config(spec.region.as_deref(), spec.endpoint.as_deref())
            .await
            .map_err(fail)?;
        let (arn, subscribed) = subscribe_owned_queue(
            &config,
            &spec.topic,
            spec.create,
            spec.filter_policy.as_ref(),
            sink.run_id(),
            &self.channel,
        )
        .await
        .map_err(fail)?;
        Ok(subscribed.listen(arn, sink, Plain))
    }
}

/// Creates a queue of the listener's own and subscribes it to `topic` (raw delivery,
/// with `filter_policy`); on failure removes whatever it created. Returns the topic's
/// ARN and the queue.
pub(crate) async fn subscribe_owned_queue(
    config: &aws_config::SdkConfig,
    topic: &str,
    create: bool,
    filter_policy: Option<&serde_json::Value>,
    run_id: &str,
    channel: &str,
) -> Result<(String, OwnedQueue<Owned>), String> {
    let endpoint = describe_endpoint(config);
    let sns = Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let arn = topic_arn(&sns, topic, create)
        .await
        .map_err(|e| format!("SNS at {endpoint}: {e}"))?;
    let fifo = arn.ends_with(".fifo");
    let mut name = owned_name(run_id, channel, if fifo { 75 } else { 80 });
    if fifo {
        name.push_str(".fifo");
    }
    let queue_url = queue::create_queue(&sqs, &name, Vec::new())
        .await
        .map_err(|e| format!("SQS at {endpoint}: {e}"))?;
    let mut owned = Owned {
        sns: sns.clone(),
        sqs: sqs.clone(),
        queue_url: queue_url.clone(),
        subscription: None,
    };
    match subscribe(&sns, &sqs, &arn, &queue_url, filter_policy).await {
        Ok(subscription) => owned.subscription = Some(subscription),
        Err(e) => {
            let failures = owned.remove().await;
            return Err(with_cleanup(format!("SNS at {endpoint}: {e}"), failures));
        }
    }
    let source = QueueSource::new(sqs, queue_url);
    Ok((arn, OwnedQueue { source, owned }))
}

async fn subscribe(
    sns: &Client,
    sqs: &aws_sdk_sqs::Client,
    topic_arn: &str,
    queue_url: &str,
    filter_policy: Option<&serde_json::Value>,
) -> Result<String, String> {
    let queue_arn = queue::queue_arn(sqs, queue_url).await?;
    sqs.set_queue_attributes()
        .queue_url(queue_url)
        .attributes(
            QueueAttributeName::Policy,
            queue::send_policy(&queue_arn, "sns.amazonaws.com", topic_arn),
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "allow the topic to send to the listener's queue: {}",
                service_error(&e)
            )
        })?;
    let mut request = sns
        .subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .attributes("RawMessageDelivery", "true")
        .return_subscription_arn(true);
    if let Some(policy) = filter_policy {
        request = request.attributes("FilterPolicy", policy.to_string());
    }
    let subscription = request
        .send()
        .await
        .map_err(|e| format!("subscribe the listener's queue: {}", service_error(&e)))?
        .subscription_arn
        .ok_or("subscribe the listener's queue: SNS returned no subscription ARN")?;
    // SQS subscriptions in the same account are confirmed at once; one in another
    // account would wait for a confirmation nobody gives.
    let attributes = sns
        .get_subscription_attributes()
        .subscription_arn(&subscription)
        .send()
        .await
        .map_err(|e| format!("read the subscription: {}", service_error(&e)))?;
    if attributes
        .attributes()
        .and_then(|a| a.get("PendingConfirmation"))
        .is_some_and(|p| p == "true")
    {
        return Err(format!(
            "the subscription {subscription} awaits confirmation; roundtrip's queue must be \
             in the topic's account"
        ));
    }
    Ok(subscription)
}
