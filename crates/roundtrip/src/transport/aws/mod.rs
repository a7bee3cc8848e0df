//! What the AWS transports (feature `aws`: [`s3`](super::s3), [`sqs`](super::sqs),
//! [`sns`](super::sns) and [`eventbridge`](super::eventbridge)) share, on the AWS SDK for
//! Rust.
//!
//! Region, endpoint and credentials come from the standard AWS configuration, with the
//! channel's `region` and `endpoint` overriding the first two, so one suite runs against
//! an emulator (`AWS_ENDPOINT_URL=http://127.0.0.1:5055`) and against a real account.
//! Credentials are never read from a suite file and never printed.
//!
//! Every listener ends in an SQS queue consumed by one receive loop (`queue.rs`): long
//! polling (push-like: a message is returned as soon as it arrives) and deletion only
//! after the store committed. `sns` and `eventbridge` listeners create that queue (and
//! the subscription or rule feeding it) for the run and remove them when they stop; see
//! [`crate::aws`] for how such harness-owned resources are named and swept.

pub mod cleanup;
pub(crate) mod queue;

/// A failed send: a refusal when the service answered (rejected: a bad message, a missing
/// queue), unreachable otherwise (connection, timeout, credentials).
pub(crate) fn send_error<E, R>(
    channel: &str,
    error: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> crate::transport::ProduceError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let why = crate::aws::service_error(error);
    if error.as_service_error().is_some() {
        crate::transport::error::rejected(channel, why)
    } else {
        crate::transport::error::unreachable(channel, why)
    }
}

/// An error, with what could not be removed after it.
pub(crate) fn with_cleanup(error: String, failures: Vec<String>) -> String {
    if failures.is_empty() {
        error
    } else {
        format!(
            "{error} (and cleanup failed: {}; `roundtrip aws-cleanup` removes leftovers)",
            failures.join("; ")
        )
    }
}
