//! What can go wrong with a driver, in three moments: planning it ([`PlanError`]: the
//! suite asks for something this channel or this build cannot do), starting a listener
//! ([`ListenError`]) and sending ([`ProduceError`]); and the wording every driver shares
//! for those errors.

use std::time::Duration;

/// Why a channel cannot be driven as the suite asks. Reads after "failed to plan the run:".
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The suite sends to a channel whose transport can only be listened on.
    #[error(
        "channel `{channel}` uses the `{transport}` transport, which can only be listened on, \
         not sent to"
    )]
    ListenOnly {
        /// The channel.
        channel: String,
        /// The transport name, e.g. `webhook`.
        transport: &'static str,
    },
    /// The suite expects something on a channel whose transport can only be sent to.
    #[error(
        "channel `{channel}` uses the `{transport}` transport, which can only be sent to, \
         not listened on{hint}"
    )]
    SendOnly {
        /// The channel.
        channel: String,
        /// The transport name, e.g. `http`.
        transport: &'static str,
        /// What to use instead, starting with `; ` (or empty).
        hint: &'static str,
    },
    /// The channel needs a transport or capability compiled out of this build.
    #[error(
        "channel `{channel}` {needs}, which needs the cargo feature `{feature}` \
         (rebuild roundtrip with `--features {feature}`)"
    )]
    FeatureDisabled {
        /// The channel.
        channel: String,
        /// What it needs, e.g. ``uses the `nats` transport`` or `has an https URL`.
        needs: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// The channel's options are invalid (a malformed URL, method or header).
    #[error("channel `{channel}` is misconfigured: {message}")]
    Invalid {
        /// The channel.
        channel: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The transport answered with a refusal (e.g. HTTP 503 and a body excerpt).
    #[error("send to `{channel}`: {message}")]
    Rejected {
        /// The channel.
        channel: String,
        /// The transport's answer, e.g. `HTTP 503 Service Unavailable: {"error":…}`.
        message: String,
    },
    /// The transport could not be reached or the IO failed.
    #[error("send to `{channel}`")]
    Unreachable {
        /// The channel.
        channel: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Binding or subscribing failed (port in use, directory not creatable, …).
    #[error("start the listener on `{channel}`: {message}")]
    Start {
        /// The channel.
        channel: String,
        /// What went wrong and what to do, e.g. `127.0.0.1:7002 is already in use`.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// A listener start failure.
pub fn start_error(
    channel: &str,
    message: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ListenError {
    ListenError::Start {
        channel: channel.to_owned(),
        message: message.into(),
        source: Some(source.into()),
    }
}

/// A send or connect failure.
pub fn unreachable(
    channel: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ProduceError {
    ProduceError::Unreachable {
        channel: channel.to_owned(),
        source: source.into(),
    }
}

/// A refusal by the broker (a nack, an unroutable message).
pub fn rejected(channel: &str, message: impl Into<String>) -> ProduceError {
    ProduceError::Rejected {
        channel: channel.to_owned(),
        message: message.into(),
    }
}

/// The hint every connection failure ends with.
/// (The library does not know how the servers are run; this repository's
/// `scripts/services.sh` is documented in the transport docs, not named here.)
pub const SERVICES_HINT: &str = "is the server running and reachable from here?";

/// A message for "could not connect": what, where, why, and, when nothing answered at
/// all (rather than a TLS or credential refusal), the hint to start the servers.
pub fn connect_failed(what: &str, endpoint: &str, why: impl std::fmt::Display) -> String {
    let why = why.to_string();
    let lower = why.to_lowercase();
    let nobody_home = [
        "refused",
        "timed out",
        "timeout",
        "unreachable",
        "no route",
        "reset",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if nobody_home {
        format!("connect to {what} at {endpoint}: {why}; {SERVICES_HINT}")
    } else {
        format!("connect to {what} at {endpoint}: {why}")
    }
}

/// A message for "could not connect within the timeout".
pub fn timed_out(what: &str, endpoint: &str, after: Duration) -> String {
    format!("{what} {endpoint} did not answer within {after:?}; {SERVICES_HINT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_server_gets_the_services_hint() {
        let refused = connect_failed(
            "NATS",
            "nats://127.0.0.1:1",
            "Connection refused (os error 111)",
        );
        assert!(refused.ends_with(SERVICES_HINT), "{refused}");
        let tls = connect_failed(
            "Redis",
            "rediss://h:6390",
            "received fatal alert: CertificateRequired",
        );
        assert_eq!(
            tls,
            "connect to Redis at rediss://h:6390: received fatal alert: CertificateRequired"
        );
    }
}
