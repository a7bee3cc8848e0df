//! The `s3` listener: new objects, from the bucket's notifications (a queue, a topic or
//! an EventBridge bus) or by listing the bucket.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_sqs::types::Message;
use roundtrip_core::model::S3Channel;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::aws::{describe_endpoint, error_code, service_error};
use crate::transport::aws::queue::{self, Decode, Decoded, OwnedQueue, QueueSource};
use crate::transport::error::start_error;
use crate::transport::s3::{client, ensure_bucket};
use crate::transport::{
    Delivery, DriverContext, ListenError, Listener, ObservationSink, Outage, PlanError, Received,
    RunningListener,
};

/// The default longest wait between two listings.
pub const DEFAULT_POLL_MAX: Duration = Duration::from_secs(1);

/// The wait after a listing that found something.
pub const POLL_MIN: Duration = Duration::from_millis(50);

/// Observes objects appearing in a bucket.
#[derive(Debug)]
pub struct S3Listener {
    channel: String,
    spec: S3Channel,
}

impl S3Listener {
    /// A listener for `spec`.
    pub fn new(channel: &str, spec: &S3Channel, _ctx: &DriverContext) -> Result<Self, PlanError> {
        Ok(S3Listener {
            channel: channel.to_owned(),
            spec: spec.clone(),
        })
    }
}

/// Which objects a listener observes.
#[derive(Debug, Clone)]
struct Filter {
    bucket: String,
    prefix: String,
    suffix: String,
}

impl Filter {
    fn matches(&self, bucket: &str, key: &str) -> bool {
        bucket == self.bucket && key.starts_with(&self.prefix) && key.ends_with(&self.suffix)
    }
}

/// Why an object could not be read.
#[derive(Debug)]
enum ReadError {
    /// It no longer exists: deleted before the listener read it.
    Gone(String),
    /// Anything else (worth retrying).
    Failed(String),
}

/// Reads an object into a received message: body, metadata as headers, key.
async fn read_object(client: &Client, bucket: &str, key: &str) -> Result<Received, ReadError> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            let why = format!("read s3://{bucket}/{key}: {}", service_error(&e));
            if error_code(&e) == Some("NoSuchKey") {
                ReadError::Gone(format!("{why} (deleted before it was read; not recorded)"))
            } else {
                ReadError::Failed(why)
            }
        })?;
    let mut headers: Vec<(String, String)> = out
        .metadata()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.sort();
    if let Some(ct) = out.content_type() {
        headers.push(("content-type".to_owned(), ct.to_owned()));
    }
    let etag = out.e_tag().map(str::to_owned);
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| ReadError::Failed(format!("read s3://{bucket}/{key}: {e}")))?
        .into_bytes()
        .to_vec();
    let mut received = Received::new(body, headers)
        .with_meta("bucket", bucket)
        .with_meta("object_key", key);
    received.key = Some(key.to_owned());
    received.message_id = etag;
    Ok(received)
}

#[async_trait]
impl Listener for S3Listener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let spec = &self.spec;
        let fail = |e: String| start_error(&self.channel, e.clone(), e);
        let (client, config) = client(spec).await.map_err(fail)?;
        let endpoint = describe_endpoint(&config);
        ensure_bucket(&client, &config, &spec.bucket, spec.create)
            .await
            .map_err(|e| fail(format!("S3 at {endpoint}: {e}")))?;
        let filter = Filter {
            bucket: spec.bucket.clone(),
            prefix: spec.prefix.clone().unwrap_or_default(),
            suffix: spec.suffix.clone().unwrap_or_default(),
        };
        let location = format!("s3://{}/{}", filter.bucket, filter.prefix);
        let decode = Notifications {
            client: client.clone(),
            filter: filter.clone(),
        };
        if let Some(queue_name) = &spec.notifications {
            let sqs = aws_sdk_sqs::Client::new(&config);
            let url = queue::queue_url(&sqs, queue_name, false)
                .await
                .map_err(|e| fail(format!("SQS at {endpoint}: {e}")))?;
            // The user's queue: nothing of the listener's own to remove.
            let queue = OwnedQueue {
                source: QueueSource::new(sqs, url).shared(),
                owned: (),
            };
            return Ok(queue.listen(location, sink, decode));
        }
        if let Some(bus) = &spec.notifications_bus {
            let (_, routed) = crate::transport::eventbridge::listener::route_to_owned_queue(
                &config,
                bus,
                false,
                &object_created_pattern(&filter),
                sink.run_id(),
                &self.channel,
            )
            .await
            .map_err(fail)?;
            return Ok(routed.listen(location, sink, decode));
        }
        if let Some(topic) = &spec.notifications_topic {
            let (_, subscribed) = crate::transport::sns::listener::subscribe_owned_queue(
                &config,
                topic,
                spec.create,
                None,
                sink.run_id(),
                &self.channel,
            )
            .await
            .map_err(fail)?;
            return Ok(subscribed.listen(location, sink, decode));
        }
        let (stop, stopped) = oneshot::channel();
        let seen = list(&client, &filter)
            .await
            .map_err(|e| fail(format!("S3 at {endpoint}: {e}")))?;
        let poll_max = spec.poll_max.map_or(DEFAULT_POLL_MAX, |d| d.0);
        let task = tokio::spawn(poll(client, filter, seen, poll_max, sink, stopped));
        Ok(RunningListener::new(
            location,
            Delivery::AtMostOnce,
            true,
            stop,
            task,
        ))
    }
}

/// The EventBridge pattern of a bucket's `Object Created` events under the prefix.
fn object_created_pattern(filter: &Filter) -> Value {
    let mut detail = serde_json::json!({ "bucket": { "name": [filter.bucket] } });
    if !filter.prefix.is_empty() {
        detail["object"] = serde_json::json!({ "key": [{ "prefix": filter.prefix }] });
    }
    serde_json::json!({
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": detail,
    })
}

/// The bucket's objects under the filter, by key, with their ETags.
async fn list(client: &Client, filter: &Filter) -> Result<HashMap<String, String>, String> {
    let mut objects = HashMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(&filter.bucket)
        .prefix(&filter.prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| format!("list s3://{}: {}", filter.bucket, service_error(&e)))?;
        for object in page.contents() {
            if let Some(key) = object.key()
                && key.ends_with(&filter.suffix)
            {
                objects.insert(
                    key.to_owned(),
                    object.e_tag().unwrap_or_default().to_owned(),
                );
            }
        }
    }
    Ok(objects)
}

async fn poll(
    client: Client,
    filter: Filter,
    mut seen: HashMap<String, String>,
    poll_max: Duration,
    sink: ObservationSink,
    mut stop: oneshot::Receiver<()>,
) {
    let mut delay = POLL_MIN;
    let mut outage = Outage::default();
    loop {
        // Full jitter between half and all of the delay, so parallel runs spread out.
        let wait = delay.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        let listed = match list(&client, &filter).await {
            Ok(listed) => {
                outage.recovered(&sink, "");
                listed
            }
            Err(why) => {
                outage.failed(&sink, "listing failed", Some(why));
                delay = (delay * 2).min(poll_max);
                continue;
            }
        };
        let mut found = false;
        let mut fresh: Vec<(String, String)> = listed
            .into_iter()
            .filter(|(key, etag)| seen.get(key) != Some(etag))
            .collect();
        fresh.sort();
        for (key, etag) in fresh {
            match read_object(&client, &filter.bucket, &key).await {
                Ok(received) => {
                    if sink.record(received).await.is_ok() {
                        seen.insert(key, etag);
                        found = true;
                    }
                }
                // Listed, then deleted before it was read: nothing to come back for.
                Err(ReadError::Gone(why)) => {
                    seen.insert(key, etag);
                    sink.consumer_error(why);
                }
                Err(ReadError::Failed(why)) => sink.consumer_error(why),
            }
        }
        delay = if found {
            POLL_MIN
        } else {
            (delay * 2).min(poll_max)
        };
    }
}

/// S3 event notifications arriving on a queue, directly or wrapped by SNS.
#[derive(Debug)]
struct Notifications {
    client: Client,
    filter: Filter,
}

impl Decode for Notifications {
    async fn decode(&self, message: &Message) -> Decoded {
        let objects = match created_objects(message.body().unwrap_or_default()) {
            Ok(objects) => objects,
            Err(why) => return Decoded::Drop(why),
        };
        let (mut received, mut gone) = (Vec::new(), Vec::new());
        for (bucket, key) in objects {
            if !self.filter.matches(&bucket, &key) {
                continue;
            }
            match read_object(&self.client, &bucket, &key).await {
                Ok(mut r) => {
                    r.redelivered = queue::redelivered(message);
                    received.push(r);
                }
                Err(ReadError::Gone(why)) => gone.push(why),
                Err(ReadError::Failed(why)) => return Decoded::Retry(why),
            }
        }
        match (received.is_empty(), gone.is_empty()) {
            (true, true) => Decoded::Skip,
            (true, false) => Decoded::Drop(gone.join("; ")),
            (false, _) => Decoded::Record(received, gone),
        }
    }
}

/// The (bucket, key) of every `ObjectCreated` record in a notification; an S3 test event
/// or another event type gives none. Keys arrive URL-encoded.
fn created_objects(body: &str) -> Result<Vec<(String, String)>, String> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| format!("a notification that is not JSON ({e}): {body:.200}"))?;
    // Through EventBridge: one object per event, its key as it is.
    if value.get("source").and_then(Value::as_str) == Some("aws.s3") {
        if value.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
            return Ok(Vec::new());
        }
        let detail = value.get("detail");
        let bucket = detail
            .and_then(|d| d.pointer("/bucket/name"))
            .and_then(Value::as_str);
        let key = detail
            .and_then(|d| d.pointer("/object/key"))
            .and_then(Value::as_str);
        return match (bucket, key) {
            (Some(bucket), Some(key)) => Ok(vec![(bucket.to_owned(), key.to_owned())]),
            _ => Err(format!("an S3 event without bucket or key: {body:.200}")),
        };
    }
    // Through SNS, the S3 event is the envelope's `Message` string.
    let value = match value.get("Message").and_then(Value::as_str) {
        Some(inner) if value.get("Type").and_then(Value::as_str) == Some("Notification") => {
            serde_json::from_str(inner)
                .map_err(|e| format!("an SNS-wrapped notification that is not JSON: {e}"))?
        }
        _ => value,
    };
    let records = value
        .get("Records")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(records
        .iter()
        .filter(|r| {
            r.get("eventName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("ObjectCreated:"))
        })
        .filter_map(|r| {
            let s3 = r.get("s3")?;
            let bucket = s3.get("bucket")?.get("name")?.as_str()?;
            let key = s3.get("object")?.get("key")?.as_str()?;
            Some((bucket.to_owned(), url_decode(key)))
        })
        .collect())
}

/// Decodes an S3 notification key: `+` is a space, `%XX` a byte.
fn url_decode(key: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&hi), Some(&lo)) if bytes[i] == b'%' => hex(hi).zip(hex(lo)),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((hi, lo))) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_keys_are_url_decoded() {
        assert_eq!(url_decode("in/a+b%C3%A9.txt"), "in/a bé.txt");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz"), "%zz");
    }

    #[test]
    fn created_objects_are_read_from_direct_and_sns_wrapped_notifications() {
        let event = serde_json::json!({ "Records": [
            { "eventName": "ObjectCreated:Put",
              "s3": { "bucket": { "name": "out" }, "object": { "key": "a+b.txt" } } },
            { "eventName": "ObjectRemoved:Delete",
              "s3": { "bucket": { "name": "out" }, "object": { "key": "gone.txt" } } }
        ]});
        let expected = vec![("out".to_owned(), "a b.txt".to_owned())];
        assert_eq!(
            created_objects(&event.to_string()).expect("parses"),
            expected
        );
        let wrapped = serde_json::json!({ "Type": "Notification", "Message": event.to_string() });
        assert_eq!(
            created_objects(&wrapped.to_string()).expect("parses"),
            expected
        );
        let bridged = serde_json::json!({ "source": "aws.s3", "detail-type": "Object Created",
            "detail": { "bucket": { "name": "out" }, "object": { "key": "a b.txt" } } });
        assert_eq!(
            created_objects(&bridged.to_string()).expect("parses"),
            expected
        );
        let deleted = serde_json::json!({ "source": "aws.s3", "detail-type": "Object Deleted",
            "detail": { "bucket": { "name": "out" }, "object": { "key": "a b.txt" } } });
        assert_eq!(
            created_objects(&deleted.to_string()).expect("parses"),
            vec![]
        );
        let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"out"}"#;
        assert_eq!(created_objects(test_event).expect("parses"), vec![]);
        assert!(created_objects("not json").is_err());
    }

    #[test]
    fn the_eventbridge_pattern_names_the_bucket_and_the_prefix() {
        let mut f = Filter {
            bucket: "out".to_owned(),
            prefix: "run-1/".to_owned(),
            suffix: String::new(),
        };
        assert_eq!(
            object_created_pattern(&f),
            serde_json::json!({ "source": ["aws.s3"], "detail-type": ["Object Created"],
                "detail": { "bucket": { "name": ["out"] },
                            "object": { "key": [{ "prefix": "run-1/" }] } } })
        );
        f.prefix.clear();
        assert!(object_created_pattern(&f)["detail"].get("object").is_none());
    }

    #[test]
    fn the_filter_takes_bucket_prefix_and_suffix() {
        let f = Filter {
            bucket: "out".to_owned(),
            prefix: "in/".to_owned(),
            suffix: ".txt".to_owned(),
        };
        assert!(f.matches("out", "in/x.txt"));
        assert!(!f.matches("other", "in/x.txt"));
        assert!(!f.matches("out", "x.txt"));
        assert!(!f.matches("out", "in/x.csv"));
    }
}
