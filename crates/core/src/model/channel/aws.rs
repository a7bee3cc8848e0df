//! What every AWS channel shares: optional `region` and `endpoint`. Left out, they come
//! from the standard AWS configuration (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles), so
//! one suite runs against an emulator on a laptop and against a real account.
//! Credentials always come from the standard chain and never appear in a suite file or a
//! report.
//!
//! Listeners that need a queue of their own (SNS, EventBridge, and S3 with
//! `notifications_topic` or `notifications_bus`) create it, with the subscription or rule
//! that feeds it, for the run and remove them afterwards. Those harness-owned resources are
//! named `roundtrip-h-<unix seconds>-<run>-<salt>-<channel>` so that a leftover one (after
//! a crash) is recognisable, and `roundtrip aws-cleanup` removes it.

use super::Problem;

/// Where every AWS channel's requests go.
pub trait AwsEndpoint {
    /// The region, when the channel sets one.
    fn region(&self) -> Option<&str>;
    /// The endpoint URL, when the channel sets one.
    fn endpoint(&self) -> Option<&str>;
}

/// Implements [`AwsEndpoint`] for a channel with `region` and `endpoint`.
macro_rules! impl_aws_endpoint {
    ($channel:ty) => {
        impl $crate::model::channel::AwsEndpoint for $channel {
            fn region(&self) -> Option<&str> {
                self.region.as_deref()
            }
            fn endpoint(&self) -> Option<&str> {
                self.endpoint.as_deref()
            }
        }
    };
}
pub(crate) use impl_aws_endpoint;

/// The rules of the region and endpoint every AWS channel may set.
pub(crate) fn problems(channel: &dyn AwsEndpoint) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(region) = channel.region()
        && (region.trim().is_empty() || region.contains(char::is_whitespace))
    {
        out.push(Problem::value(
            &["region"],
            format!("`{region}` is not an AWS region"),
            "write a region such as `eu-west-1`, or leave it out to use `AWS_REGION`",
        ));
    }
    if let Some(endpoint) = channel.endpoint()
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        out.push(Problem::value(
            &["endpoint"],
            format!("the endpoint must be an http:// or https:// URL, not `{endpoint}`"),
            "write it like `http://127.0.0.1:5055`, or leave it out to use `AWS_ENDPOINT_URL`",
        ));
    }
    out
}
