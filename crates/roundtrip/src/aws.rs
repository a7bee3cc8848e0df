//! What the AWS transports and the DynamoDB store share: loading the SDK configuration
//! (region, endpoint and credentials from the standard chain, overridable per channel),
//! describing SDK errors in one line, and the names of harness-owned resources.
//!
//! ## Harness-owned resources
//! Listeners that need a resource of their own for a run (the SQS queue an SNS topic or
//! an EventBridge rule delivers to, the rule itself) create it when they start and
//! remove it when they stop, whether the run passed, failed or was interrupted. A
//! process that is killed cannot clean up, so every such resource is named
//! `roundtrip-h-<unix seconds>-<run>-<salt>-<channel>` ([`owned_name`]): recognisable at a
//! glance, and `roundtrip aws-cleanup` removes the ones older than an age.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The prefix of every resource the harness creates for itself.
pub const OWNED_PREFIX: &str = "roundtrip-h-";

/// How long opening a connection to an AWS endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads the SDK configuration: the standard chain (environment, profile, instance
/// role), with `region` and `endpoint` overriding it when given. Fails when no region
/// is configured, saying what to set; missing credentials show at the first request
/// (see [`describe_error`]).
pub async fn load_config(
    region: Option<&str>,
    endpoint: Option<&str>,
) -> Result<SdkConfig, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build(),
    );
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(
            "no AWS region is configured: set `region` on the channel (or in the \
                    store URL), or the AWS_REGION environment variable"
                .to_owned(),
        );
    }
    Ok(config)
}

/// Where requests go, for messages: the endpoint URL, or `AWS <region>`.
pub fn describe_endpoint(config: &SdkConfig) -> String {
    match config.endpoint_url() {
        Some(url) => url.to_owned(),
        None => format!(
            "AWS {}",
            config.region().map_or("(no region)", |r| r.as_ref())
        ),
    }
}

/// One line for an SDK error: the service's error code and message when the service
/// answered, otherwise the chain of causes (a refused connection, a timeout), ending
/// with the hint to check the endpoint when nothing answered.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let text = crate::error::error_chain(error);
    let lower = text.to_lowercase();
    if [
        "loading credentials",
        "no credentials",
        "provided credentials",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return format!(
            "{text}; no AWS credentials were found: set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY (any values for an emulator), AWS_PROFILE, or run with an \
             instance role"
        );
    }
    if [
        "refused",
        "timed out",
        "timeout",
        "dispatch failure",
        "unreachable",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        format!("{text}; is the endpoint running and reachable from here?")
    } else {
        text
    }
}

/// The code and message of a service error (`NoSuchBucket: The specified bucket does not
/// exist`), or [`describe_error`] of anything else.
pub fn service_error<E, R>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match error {
        SdkError::ServiceError(e) => {
            let err = e.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => describe_error(err),
            }
        }
        other => describe_error(other),
    }
}

/// The error code of a service error (`ResourceNotFoundException`), if the service
/// answered.
pub fn error_code<E, R>(
    error: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> Option<&str>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    match error {
        aws_smithy_runtime_api::client::result::SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// The name of a resource the harness creates for `run_id`'s listener on `channel`:
/// `roundtrip-h-<unix seconds>-<last 8 of the run id>-<4 random hex>-<channel>`, at most `max`
/// characters of `[A-Za-z0-9_-]`, so that a leftover is recognisable and its age
/// readable from the name alone.
pub fn owned_name(run_id: &str, channel: &str, max: usize) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run = owned_run_tag(run_id);
    let channel: String = channel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Four random hex digits keep two listeners of one run and channel apart.
    let salt = rand::random::<u16>();
    let mut name = format!("{OWNED_PREFIX}{secs}-{run}-{salt:04x}-{channel}");
    name.truncate(max);
    name
}

/// The part of a run id a harness-owned name carries: its last 8 letters and digits
/// (the random end of a UUIDv7).
pub fn owned_run_tag(run_id: &str) -> String {
    let alnum: Vec<char> = run_id.chars().filter(char::is_ascii_alphanumeric).collect();
    alnum[alnum.len().saturating_sub(8)..].iter().collect()
}

/// When a harness-owned resource was created, read from its name (`None` for a name
/// [`owned_name`] did not make).
pub fn owned_created_at(name: &str) -> Option<SystemTime> {
    let rest = name.strip_prefix(OWNED_PREFIX)?;
    let secs: u64 = rest.split('-').next()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_names_carry_their_age_run_and_channel() {
        let name = owned_name("019ac0de-1234-7abc-8def-0123456789ab", "orders.out", 80);
        assert!(name.starts_with(OWNED_PREFIX), "{name}");
        let (head, channel) = name.rsplit_once('-').expect("dashes");
        assert_eq!(channel, "orders_out");
        assert!(head[..head.len() - 5].ends_with("-456789ab"), "{name}");
        let age = SystemTime::now()
            .duration_since(owned_created_at(&name).expect("a timestamp"))
            .expect("in the past");
        assert!(age < Duration::from_secs(60), "{age:?}");
    }

    #[test]
    fn owned_names_fit_the_service_limit() {
        let name = owned_name("run", &"c".repeat(200), 64);
        assert_eq!(name.len(), 64);
        assert!(owned_created_at(&name).is_some());
    }

    #[test]
    fn foreign_names_have_no_owned_age() {
        assert_eq!(owned_created_at("orders-queue"), None);
        assert_eq!(owned_created_at("roundtrip-h-notanumber-x"), None);
    }

    #[test]
    fn unreachable_endpoints_get_the_hint() {
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(
            describe_error(&e),
            "Connection refused; is the endpoint running and reachable from here?"
        );
        let e = std::io::Error::other("AccessDenied");
        assert_eq!(describe_error(&e), "AccessDenied");
        let e = std::io::Error::other(
            "dispatch failure: the credential provider was not enabled: no providers in chain \
             provided credentials",
        );
        assert!(describe_error(&e).contains("no AWS credentials were found"));
        let e =
            std::io::Error::other("dispatch failure: an error occurred while loading credentials");
        assert!(
            describe_error(&e).ends_with("AWS_PROFILE, or run with an instance role"),
            "{}",
            describe_error(&e)
        );
    }
}
