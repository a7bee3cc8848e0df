//! `s3`: put objects into a bucket; observe objects appearing in one.
//!
//! The listener has two modes:
//! - **notifications** (push): the bucket sends `ObjectCreated` event notifications to an
//!   SQS queue (`notifications`), an SNS topic (`notifications_topic`) or EventBridge
//!   (`notifications_bus`); the listener consumes that queue, or a queue of its own
//!   subscribed to the topic or routed to by a rule of its own for the run,
//!   reads each new object and deletes the notification after the store committed the
//!   object: at-least-once, and as fast as S3 notifies. The topic form lets any number
//!   of concurrent runs each see every notification; the EventBridge form, with a
//!   per-run `prefix`, gives each run only its own objects.
//! - **listing** (polling, reported as such): the listener notes the objects already
//!   there when it starts, then lists the bucket again and again, reading every new or
//!   rewritten object. It lists again 50 ms after finding something and backs off,
//!   with jitter, up to `poll_max` (default 1 s) while nothing comes. An object
//!   rewritten twice between two listings is seen once: at-most-once.
//!
//! Object metadata carries the headers both ways (`x-amz-meta-*`), so the correlation id
//! travels with the object; when the SUT writes a new object without it, the key (or
//! its file stem) is the correlation fallback.

mod listener;
mod producer;

pub use listener::{DEFAULT_POLL_MAX, POLL_MIN, S3Listener};
pub use producer::S3Producer;

use aws_sdk_s3::Client;
use roundtrip_core::model::S3Channel;

use crate::aws::{error_code, load_config, service_error};

crate::transport::constructors!("s3", S3Channel, S3Producer, S3Listener);

/// An S3 client; path-style addressing whenever an endpoint is configured (emulators
/// do not resolve bucket subdomains).
async fn client(spec: &S3Channel) -> Result<(Client, aws_config::SdkConfig), String> {
    let config = load_config(spec.region.as_deref(), spec.endpoint.as_deref()).await?;
    let s3 = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(config.endpoint_url().is_some())
        .build();
    Ok((Client::from_conf(s3), config))
}

/// Makes sure the bucket exists: created when `create`, else checked.
async fn ensure_bucket(
    client: &Client,
    config: &aws_config::SdkConfig,
    bucket: &str,
    create: bool,
) -> Result<(), String> {
    if create {
        let mut request = client.create_bucket().bucket(bucket);
        if let Some(region) = config.region().map(|r| r.as_ref().to_owned())
            && region != "us-east-1"
        {
            request = request.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        region.as_str(),
                    ))
                    .build(),
            );
        }
        return match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    error_code(&e),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("create bucket `{bucket}`: {}", service_error(&e))),
        };
    }
    client
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let why = service_error(&e);
            if why == "NotFound" {
                format!(
                    "bucket `{bucket}` does not exist; create it, or set `create: true` on \
                     the channel"
                )
            } else {
                format!("bucket `{bucket}`: {why}")
            }
        })
}
