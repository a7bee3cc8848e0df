//! `uppercase`: the seed guide's sample function, as a small service.
//!
//! It consumes the source bucket's `ObjectCreated` notifications from an SQS queue,
//! reads each new `.txt` object, uppercases it and writes it under the same key to the
//! destination bucket. Other objects are ignored (their notification is deleted). A
//! notification is deleted only after its objects were written, so a crash means a
//! retry, not a loss.
//!
//! `--setup` first creates what a deployment would (idempotently): both buckets, the
//! queue, the source bucket's notifications to the queue, and the destination bucket's
//! notifications to EventBridge and to an SNS topic, where roundtrip's listeners pick
//! them up.
//!
//! Region, endpoint and credentials come from the standard AWS configuration
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`…).

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aws_config::BehaviorVersion;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    Event, EventBridgeConfiguration, NotificationConfiguration, QueueConfiguration,
    TopicConfiguration,
};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use clap::Parser;
use serde_json::Value;

/// Uppercases every new `.txt` object of the source bucket into the destination bucket.
#[derive(Debug, Parser)]
struct Args {
    /// The bucket objects are uploaded to.
    #[arg(long, default_value = "roundtrip-uppercase-src")]
    source: String,
    /// The bucket the uppercased objects are written to.
    #[arg(long, default_value = "roundtrip-uppercase-dst")]
    destination: String,
    /// The queue that receives the source bucket's notifications.
    #[arg(long, default_value = "roundtrip-uppercase-src-events")]
    queue: String,
    /// The topic that receives the destination bucket's notifications (with `--setup`).
    #[arg(long, default_value = "roundtrip-uppercase-dst-events")]
    destination_topic: String,
    /// Create the buckets, the queue, the topic and the notifications first.
    #[arg(long)]
    setup: bool,
    /// Receive loops running at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

#[derive(Debug, Clone)]
struct Service {
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    source: String,
    destination: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(config.endpoint_url().is_some())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&config);
    let sns = aws_sdk_sns::Client::new(&config);
    if args.setup {
        setup(&s3, &sqs, &sns, &args).await.context("set up")?;
    }
    let queue_url = sqs
        .get_queue_url()
        .queue_name(&args.queue)
        .send()
        .await
        .with_context(|| format!("find queue `{}`", args.queue))?
        .queue_url
        .context("SQS returned no queue URL")?;
    let service = Service {
        s3,
        sqs,
        queue_url,
        source: args.source.clone(),
        destination: args.destination.clone(),
    };
    println!(
        "uppercase ready: s3://{} → s3://{}",
        args.source, args.destination
    );
    let workers: Vec<_> = (0..args.workers.max(1))
        .map(|_| tokio::spawn(service.clone().run()))
        .collect();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        (done, _, _) = futures_util::future::select_all(workers) => done?,
    }
}

impl Service {
    async fn run(self) -> Result<()> {
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(20)
                .send()
                .await;
            let messages = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    eprintln!("receive failed, retrying in 1 s: {e:?}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let handled = futures_util::future::join_all(messages.iter().map(|m| async {
                match self.handle(m.body().unwrap_or_default()).await {
                    Ok(()) => m.receipt_handle().map(str::to_owned),
                    Err(e) => {
                        // Left on the queue: it comes back after the visibility timeout.
                        eprintln!("not processed, will retry: {e:#}");
                        None
                    }
                }
            }))
            .await;
            let entries: Vec<DeleteMessageBatchRequestEntry> = handled
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .ok()
                })
                .collect();
            if !entries.is_empty()
                && let Err(e) = self
                    .sqs
                    .delete_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
            {
                eprintln!("delete failed (the objects will be processed again): {e:?}");
            }
        }
    }

    /// One notification: every `.txt` object it announces, uppercased.
    async fn handle(&self, body: &str) -> Result<()> {
        let event: Value = serde_json::from_str(body).context("a notification that is not JSON")?;
        let records = event
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for record in records {
            let created = record
                .get("eventName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("ObjectCreated:"));
            let bucket = record.pointer("/s3/bucket/name").and_then(Value::as_str);
            let key = record.pointer("/s3/object/key").and_then(Value::as_str);
            let (true, Some(bucket), Some(key)) = (created, bucket, key) else {
                continue;
            };
            let key = url_decode(key);
            if bucket != self.source || !key.ends_with(".txt") {
                continue;
            }
            let object = self
                .s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .with_context(|| format!("read s3://{bucket}/{key}"))?;
            let bytes = object.body.collect().await?.into_bytes();
            let text = String::from_utf8_lossy(&bytes).to_uppercase();
            self.s3
                .put_object()
                .bucket(&self.destination)
                .key(&key)
                .content_type("text/plain; charset=utf-8")
                .body(ByteStream::from(text.into_bytes()))
                .send()
                .await
                .with_context(|| format!("write s3://{}/{key}", self.destination))?;
            // When each output was made: the benchmark measures time to verdict from it.
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            println!("wrote s3://{}/{key} at {at}", self.destination);
        }
        Ok(())
    }
}

/// Notification keys are URL-encoded, `+` for a space.
fn url_decode(key: &str) -> String {
    let bytes = key.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn setup(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    args: &Args,
) -> Result<()> {
    let region = s3.config().region().map(|r| r.as_ref().to_owned());
    for bucket in [&args.source, &args.destination] {
        let mut create = s3.create_bucket().bucket(bucket);
        if let Some(region) = region.as_deref().filter(|r| *r != "us-east-1") {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        if let Err(e) = create.send().await {
            let owned = e
                .as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you());
            if !owned {
                bail!("create bucket `{bucket}`: {e:?}");
            }
        }
    }
    let queue_url = sqs
        .create_queue()
        .queue_name(&args.queue)
        .send()
        .await
        .context("create the queue")?
        .queue_url
        .context("SQS returned no queue URL")?;
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .context("SQS returned no queue ARN")?;
    // S3 may send the source bucket's notifications to the queue, and only those.
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(
            QueueAttributeName::Policy,
            allow_s3("sqs:SendMessage", &queue_arn, &args.source),
        )
        .send()
        .await
        .context("let S3 send to the queue")?;
    s3.put_bucket_notification_configuration()
        .bucket(&args.source)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(queue_arn)
                        .events(Event::S3ObjectCreated)
                        .build()?,
                )
                .build(),
        )
        .send()
        .await
        .context("send the source bucket's notifications to the queue")?;
    let topic_arn = sns
        .create_topic()
        .name(&args.destination_topic)
        .send()
        .await
        .context("create the destination topic")?
        .topic_arn
        .context("SNS returned no topic ARN")?;
    sns.set_topic_attributes()
        .topic_arn(&topic_arn)
        .attribute_name("Policy")
        .attribute_value(allow_s3("sns:Publish", &topic_arn, &args.destination))
        .send()
        .await
        .context("let S3 publish to the topic")?;
    s3.put_bucket_notification_configuration()
        .bucket(&args.destination)
        .notification_configuration(
            NotificationConfiguration::builder()
                .topic_configurations(
                    TopicConfiguration::builder()
                        .topic_arn(&topic_arn)
                        .events(Event::S3ObjectCreated)
                        .build()?,
                )
                .event_bridge_configuration(EventBridgeConfiguration::builder().build())
                .build(),
        )
        .send()
        .await
        .context("send the destination bucket's notifications to the topic and EventBridge")?;
    Ok(())
}

/// A resource policy letting S3 do `action` on `resource` for events of `bucket` only.
fn allow_s3(action: &str, resource: &str, bucket: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "s3.amazonaws.com" },
            "Action": action,
            "Resource": resource,
            "Condition": { "ArnLike": { "aws:SourceArn": format!("arn:aws:s3:::{bucket}") } }
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_keys_are_decoded() {
        assert_eq!(url_decode("a+b%2Fc.txt"), "a b/c.txt");
        assert_eq!(url_decode("100%"), "100%");
    }
}
