//! The listener service's configuration file (`roundtrip listen CONFIG`): the channels to
//! record continuously, in exactly a suite's channel syntax, the store, how an
//! observation is tied to a run, and the HTTP API. Loaded by [`crate::listen::load_with`];
//! its JSON Schema is committed at `schema/listen.schema.json`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ChannelSpec, CorrelationRule, DurationSpec, RUN_ID_HEADER};

/// One listener service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// The service's name, in logs, metrics and the runs it records evidence under.
    pub name: String,
    /// Where to record: a store URL (`postgres://…`, `sqlite:PATH`, `dynamodb://TABLE`).
    /// `--store` and `ROUNDTRIP_STORE` override it; `{{ env("NAME") }}` keeps a password
    /// out of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The HTTP API: where it listens and who may read it.
    pub api: ApiConfig,
    /// How an observation is tied to the run that caused it.
    #[serde(default)]
    pub run: RunRule,
    /// What becomes of observations that carry no run's id.
    #[serde(default)]
    pub record: RecordPolicy,
    /// How an observation's correlation id is found, as in a suite.
    #[serde(default)]
    pub correlate: CorrelationRule,
    /// How long observations are kept (default 7 days); older runs are deleted in
    /// batches, on stores that support it (Postgres).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<DurationSpec>,
    /// The channels to listen on, as a suite writes them.
    pub channels: BTreeMap<String, ChannelSpec>,
}

/// The HTTP API of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:7070` (port 0: any free port, printed at
    /// start). An address other than loopback needs tokens.
    pub listen: String,
    /// The environment variables that hold the bearer tokens. Every endpoint but
    /// `/healthz` and `/readyz` needs one.
    #[serde(default)]
    pub tokens: TokenSources,
    /// How long a request may take (default 30s). Event streams are not bounded by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<DurationSpec>,
    /// Serve HTTPS with this certificate and key (needs a build with the `tls` feature).
    /// Without it the API is plain HTTP: keep it on loopback or a private network, or
    /// behind a TLS-terminating proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

/// The API's certificate and private key, PEM files, relative to the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The certificate chain, the service's own certificate first.
    pub cert: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// Where tokens come from: names of environment variables, never the tokens themselves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSources {
    /// Variables holding tokens that may read runs, observations, streams and metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    /// Variables holding tokens that may also run administrative operations (retention).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin: Vec<String>,
}

impl TokenSources {
    /// Whether any token is configured.
    pub fn any(&self) -> bool {
        !self.read.is_empty() || !self.admin.is_empty()
    }
}

/// Where an observation names its run. roundtrip stamps the run id on every event it
/// sends (the `x-roundtrip-run` header); the SUT must carry it (or the payload field)
/// through to its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRule {
    /// A header (or message attribute) carrying the run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A JSONPath into the payload, e.g. `$.meta.run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
}

impl Default for RunRule {
    fn default() -> Self {
        RunRule {
            header: Some(RUN_ID_HEADER.to_owned()),
            json: None,
        }
    }
}

/// What becomes of an observation that names no run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordPolicy {
    /// Kept as evidence, under the service's own run.
    #[default]
    All,
    /// Counted and dropped: a production system's own traffic is never stored.
    CorrelatedOnly,
}

/// The retention when the config sets none: 7 days.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The request timeout when the config sets none: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
