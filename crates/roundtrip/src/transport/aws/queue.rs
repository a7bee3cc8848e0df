//! Consuming an SQS queue into the store: the receive loop behind the `sqs` listener,
//! and behind the `sns`, `eventbridge` and S3-notification listeners, which all end in a
//! queue.
//!
//! Long polling returns a message the moment it arrives (no poll interval). Each
//! received message is decoded, recorded, and deleted only once the store committed
//! everything it carried: a message the listener could not record stays on the queue
//! and SQS delivers it again after the visibility timeout (at-least-once). A receive
//! count above one marks a redelivery.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName,
};
use base64::Engine as _;
use tokio::sync::oneshot;

use crate::aws::service_error;
use crate::transport::backoff::Backoff;
use crate::transport::{Delivery, GapKind, ObservationSink, Outage, Received};

/// The message attribute that says a body was base64-encoded by the producer because
/// SQS and SNS carry text only.
pub(crate) const BODY_ENCODING: &str = "roundtrip-body-encoding";

/// SQS and SNS carry at most this many message attributes per message.
pub(crate) const MAX_ATTRIBUTES: usize = 10;

/// A queue to consume.
#[derive(Debug, Clone)]
pub(crate) struct QueueSource {
    pub client: Client,
    pub url: String,
    /// Long-poll wait per receive, seconds (0–20).
    pub wait_secs: i32,
    /// Visibility timeout of received messages, seconds.
    pub visibility_secs: i32,
    /// Other consumers use the queue after this listener (the user's queue, not one of
    /// the listener's own): a receive in flight at stop must not hide a message from
    /// them (see [`consume`]).
    pub shared: bool,
}

impl QueueSource {
    /// A queue of the listener's own, consumed with the listeners' defaults: 10 s long
    /// polls, 30 s visibility.
    pub(crate) fn new(client: Client, url: String) -> QueueSource {
        QueueSource {
            client,
            url,
            wait_secs: 10,
            visibility_secs: 30,
            shared: false,
        }
    }

    /// The user's queue, which later runs consume too: 2 s long polls, since a stop
    /// waits for the one in flight.
    pub(crate) fn shared(mut self) -> QueueSource {
        self.shared = true;
        self.wait_secs = 2;
        self
    }
}

/// What one queue message becomes.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Messages to record; the queue message is deleted once all are committed. The
    /// strings are gaps to report beside them (an object of the same notification that
    /// was deleted before it could be read).
    Record(Vec<Received>, Vec<String>),
    /// Not for this listener (an S3 test event, another bucket's object): deleted.
    Skip,
    /// Can never be recorded (a notification that is not JSON, an object deleted before
    /// it was read): reported as a gap and deleted, rather than retried forever.
    Drop(String),
    /// Could not be decoded now (an object that could not be read): reported as a gap
    /// and left on the queue to come back.
    Retry(String),
}

/// Turns queue messages into received messages.
pub(crate) trait Decode: Send + Sync + 'static {
    fn decode(&self, message: &Message) -> impl Future<Output = Decoded> + Send;
}

/// The message as it is: the body (base64-decoded when the producer encoded it), the
/// message attributes as headers.
#[derive(Debug)]
pub(crate) struct Plain;

impl Decode for Plain {
    async fn decode(&self, message: &Message) -> Decoded {
        Decoded::Record(vec![plain(message)], Vec::new())
    }
}

/// The body and message attributes of a queue message, as a [`Received`].
pub(crate) fn plain(message: &Message) -> Received {
    let attributes = message.message_attributes();
    let mut headers = string_attributes(attributes);
    let body = message.body().unwrap_or_default();
    let base64 = headers
        .iter()
        .any(|(k, v)| k == BODY_ENCODING && v == "base64");
    let body = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_else(|_| body.as_bytes().to_vec())
    } else {
        body.as_bytes().to_vec()
    };
    headers.retain(|(k, _)| k != BODY_ENCODING);
    let mut received = Received::new(body, headers);
    received.message_id = message.message_id().map(str::to_owned);
    received.redelivered = redelivered(message);
    received
}

fn string_attributes(
    attributes: Option<&HashMap<String, MessageAttributeValue>>,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = attributes
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
        .collect();
    headers.sort();
    headers
}

/// SQS counts every receive; more than one means the message came back.
pub(crate) fn redelivered(message: &Message) -> bool {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n > 1)
}

/// What a listener created for itself besides its queue (a subscription, a rule), and
/// the queue: removed when the listener stops.
pub(crate) trait Teardown: Send + 'static {
    /// Removes everything; returns what could not be removed.
    fn remove(self) -> impl Future<Output = Vec<String>> + Send;
}

/// A queue of the listener's own, with what feeds it.
#[derive(Debug)]
pub(crate) struct OwnedQueue<T> {
    pub source: QueueSource,
    pub owned: T,
}

/// A queue the listener does not own (the user's): nothing to remove.
impl Teardown for () {
    async fn remove(self) -> Vec<String> {
        Vec::new()
    }
}

impl<T: Teardown> OwnedQueue<T> {
    /// Starts consuming (at-least-once: deleted after commit) and wraps the task.
    pub(crate) fn listen<D: Decode>(
        self,
        endpoint: String,
        sink: ObservationSink,
        decode: D,
    ) -> crate::transport::RunningListener {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(self.consume(sink, decode, stopped));
        crate::transport::RunningListener::new(endpoint, Delivery::AtLeastOnce, false, stop, task)
    }

    /// Consumes the queue until `stop`, then removes what the listener created (failures
    /// to remove are reported as gaps, and `roundtrip aws-cleanup` finds them later).
    pub(crate) async fn consume<D: Decode>(
        self,
        sink: ObservationSink,
        decode: D,
        stop: oneshot::Receiver<()>,
    ) {
        consume(self.source, sink.clone(), decode, stop).await;
        for failure in self.owned.remove().await {
            sink.gap_counted(GapKind::Other, format!("cleanup: {failure}"), 0);
        }
    }
}

/// Receives from `source` until `stop` fires, recording into `sink`.
///
/// A long poll in flight when the listener stops is not abandoned on a shared queue:
/// SQS would still hand the next message to it and hide it for the visibility timeout,
/// so the next run (or consumer) would not see it. The stop waits for that receive to
/// end (at most its `wait` time, since it returns as soon as messages arrive) and makes
/// whatever it returned visible again at once (visibility 0), unrecorded: those
/// messages arrived after this run ended and belong to whoever consumes next.
pub(crate) async fn consume<D: Decode>(
    source: QueueSource,
    sink: ObservationSink,
    decode: D,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = Backoff::default();
    let mut outage = Outage::default();
    loop {
        let receive = source
            .client
            .receive_message()
            .queue_url(&source.url)
            .max_number_of_messages(10)
            .wait_time_seconds(source.wait_secs)
            .visibility_timeout(source.visibility_secs)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        tokio::pin!(receive);
        let received = tokio::select! {
            _ = &mut stop => {
                if source.shared {
                    let bound = Duration::from_secs(u64::try_from(source.wait_secs).unwrap_or(20) + 5);
                    if let Ok(Ok(out)) = tokio::time::timeout(bound, &mut receive).await {
                        release(&source, &sink, out.messages.unwrap_or_default()).await;
                    }
                }
                return;
            }
            r = &mut receive => r,
        };
        let messages = match received {
            Ok(out) => {
                outage.recovered(&sink, "");
                backoff.reset();
                out.messages.unwrap_or_default()
            }
            Err(e) => {
                let why = service_error(&e);
                outage.failed(&sink, "queue unreachable", Some(why));
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
        };
        let mut done = Vec::with_capacity(messages.len());
        for message in &messages {
            let Some(handle) = message.receipt_handle() else {
                continue;
            };
            match decode.decode(message).await {
                Decoded::Record(items, gaps) => {
                    for gap in gaps {
                        sink.consumer_error(gap);
                    }
                    let mut all = true;
                    // Recorded one after the other: the store assigns sequence numbers
                    // in arrival order.
                    for item in items {
                        if sink.record(item).await.is_err() {
                            all = false;
                            break;
                        }
                    }
                    if all {
                        done.push(handle.to_owned());
                    }
                }
                Decoded::Skip => done.push(handle.to_owned()),
                Decoded::Drop(why) => {
                    sink.consumer_error(why);
                    done.push(handle.to_owned());
                }
                Decoded::Retry(why) => sink.consumer_error(why),
            }
        }
        delete(&source, &sink, done).await;
    }
}

/// Makes received messages visible again at once, for the next consumer.
async fn release(source: &QueueSource, sink: &ObservationSink, messages: Vec<Message>) {
    let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle()?)
                .visibility_timeout(0)
                .build()
                .ok()
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    let released = source
        .client
        .change_message_visibility_batch()
        .queue_url(&source.url)
        .set_entries(Some(entries))
        .send()
        .await;
    if let Err(e) = released {
        sink.gap_counted(
            GapKind::Other,
            format!(
                "messages received as the listener stopped could not be released ({}): the \
                 next consumer sees them after the visibility timeout",
                service_error(&e)
            ),
            0,
        );
    }
}

async fn delete(source: &QueueSource, sink: &ObservationSink, handles: Vec<String>) {
    if handles.is_empty() {
        return;
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = handles
        .into_iter()
        .enumerate()
        .filter_map(|(i, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .build()
                .ok()
        })
        .collect();
    match source
        .client
        .delete_message_batch()
        .queue_url(&source.url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(out) => {
            for failed in out.failed() {
                sink.consumer_error(format!(
                    "delete of a recorded message failed ({}): it will be delivered again",
                    failed.message().unwrap_or(failed.code())
                ));
            }
        }
        Err(e) => sink.consumer_error(format!(
            "delete of recorded messages failed ({}): they will be delivered again",
            service_error(&e)
        )),
    }
}

/// Resolves a queue given by name or URL to its URL, creating it when `create` (with
/// the FIFO attribute when the name ends in `.fifo`).
pub(crate) async fn queue_url(
    client: &Client,
    queue: &str,
    create: bool,
) -> Result<String, String> {
    if queue.starts_with("https://") || queue.starts_with("http://") {
        if create {
            let name = queue.rsplit('/').next().unwrap_or(queue);
            return create_queue(client, name, Vec::new()).await;
        }
        client
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| format!("queue {queue}: {}", service_error(&e)))?;
        return Ok(queue.to_owned());
    }
    if create {
        return create_queue(client, queue, Vec::new()).await;
    }
    client
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| format!("queue `{queue}`: {}", service_error(&e)))?
        .queue_url
        .ok_or_else(|| format!("queue `{queue}`: SQS returned no URL"))
}

/// Creates (or finds, when it exists with the same attributes) a queue.
pub(crate) async fn create_queue(
    client: &Client,
    name: &str,
    attributes: Vec<(aws_sdk_sqs::types::QueueAttributeName, String)>,
) -> Result<String, String> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut request = client.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    for (k, v) in attributes {
        request = request.attributes(k, v);
    }
    request
        .send()
        .await
        .map_err(|e| format!("create queue `{name}`: {}", service_error(&e)))?
        .queue_url
        .ok_or_else(|| format!("create queue `{name}`: SQS returned no URL"))
}

/// The ARN of a queue.
pub(crate) async fn queue_arn(client: &Client, url: &str) -> Result<String, String> {
    use aws_sdk_sqs::types::QueueAttributeName;
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| format!("read the ARN of queue {url}: {}", service_error(&e)))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| format!("read the ARN of queue {url}: SQS returned none"))
}

/// A queue policy that lets `service` (`sns.amazonaws.com`, `events.amazonaws.com`)
/// send to `queue_arn` on behalf of `source_arn` only.
pub(crate) fn send_policy(queue_arn: &str, service: &str, source_arn: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "roundtrip-listener",
            "Effect": "Allow",
            "Principal": { "Service": service },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": source_arn } }
        }]
    })
    .to_string()
}

/// Deletes a harness-owned queue; failures are returned for the listener's gaps.
pub(crate) async fn delete_queue(client: &Client, url: &str) -> Result<(), String> {
    client
        .delete_queue()
        .queue_url(url)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("delete the listener's queue {url}: {}", service_error(&e)))
}

/// Message attributes for produced headers: String attributes, at most
/// [`MAX_ATTRIBUTES`], with the body encoding when it had to be base64.
pub(crate) fn attributes(
    headers: &[(String, String)],
    base64_body: bool,
) -> Result<Vec<(String, String)>, String> {
    let mut all: Vec<(String, String)> = headers.to_vec();
    if base64_body {
        all.push((BODY_ENCODING.to_owned(), "base64".to_owned()));
    }
    if all.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "the message has {} headers ({}), but SQS and SNS carry at most {MAX_ATTRIBUTES} \
             message attributes; send fewer `headers`",
            all.len(),
            all.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(all)
}

/// A message as SQS or SNS carry it: the body as text (base64 when it is not) and the
/// headers as string attributes; refused when there are too many.
pub(crate) fn text_message(
    channel: &str,
    message: &crate::transport::Outgoing,
) -> Result<(String, Vec<(String, String)>), crate::transport::ProduceError> {
    let (body, base64) = text_body(&message.body);
    let attributes = attributes(&message.headers, base64)
        .map_err(|e| crate::transport::error::rejected(channel, e))?;
    Ok((body, attributes))
}

/// The FIFO group and deduplication ids of a message: the ones the engine rendered, or,
/// for a message built elsewhere, one ordered group and its correlation id.
pub(crate) fn fifo_ids(message: &crate::transport::Outgoing) -> (&str, &str) {
    match &message.fifo {
        Some(fifo) => (fifo.group_id.as_str(), fifo.dedup_id.as_str()),
        None => ("roundtrip", message.correlation_id.as_str()),
    }
}

/// A body as SQS/SNS text: as it is when it is text SQS accepts, else base64 (and
/// `true`).
pub(crate) fn text_body(body: &[u8]) -> (String, bool) {
    match std::str::from_utf8(body) {
        Ok(text) if text.chars().all(sqs_char) => (text.to_owned(), false),
        _ => (base64::engine::general_purpose::STANDARD.encode(body), true),
    }
}

/// The characters an SQS message body may hold.
fn sqs_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_binary_becomes_base64() {
        assert_eq!(text_body(b"{\"a\":1}\n"), ("{\"a\":1}\n".to_owned(), false));
        assert_eq!(text_body("süß".as_bytes()), ("süß".to_owned(), false));
        assert_eq!(
            text_body(&[0, 159, 146, 150]),
            ("AJ+Slg==".to_owned(), true)
        );
        assert_eq!(
            text_body(b"nul\0inside"),
            ("bnVsAGluc2lkZQ==".to_owned(), true)
        );
    }

    #[test]
    fn more_than_ten_attributes_are_refused_by_name() {
        let headers: Vec<(String, String)> =
            (0..10).map(|i| (format!("h{i}"), "v".to_owned())).collect();
        assert_eq!(attributes(&headers, false).expect("fits").len(), 10);
        let err = attributes(&headers, true).expect_err("11 attributes");
        assert!(err.contains("11 headers"), "{err}");
        assert!(err.contains(BODY_ENCODING), "{err}");
    }

    #[test]
    fn a_base64_body_is_decoded_and_its_marker_dropped() {
        let message = Message::builder()
            .body("AJ+Slg==")
            .message_attributes(
                BODY_ENCODING,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("base64")
                    .build()
                    .expect("attribute"),
            )
            .message_attributes(
                "x-correlation-id",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("c-1")
                    .build()
                    .expect("attribute"),
            )
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .build();
        let received = plain(&message);
        assert_eq!(received.body, vec![0, 159, 146, 150]);
        assert_eq!(
            received.headers,
            vec![("x-correlation-id".to_owned(), "c-1".to_owned())]
        );
        assert!(received.redelivered);
    }
}
