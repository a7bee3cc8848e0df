//! The connection options every broker channel shares: a URL, `tls`, `auth` (by the
//! names of environment variables, never the secrets) and `connect_timeout`, and the
//! rules they follow.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DurationSpec, Problem, positive};

/// TLS for a broker connection. Paths are relative to the suite file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// A PEM file with the CA certificate(s) to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A PEM client certificate (mutual TLS); needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Credentials, by the names of the environment variables that hold them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthOptions {
    /// The variable holding the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_env: Option<String>,
    /// The variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The variable holding a token (NATS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// The connection options every broker channel has, whatever its transport.
pub trait Connection {
    /// The server's URL (for Kafka: the bootstrap servers).
    fn url(&self) -> &str;
    /// TLS options.
    fn tls(&self) -> Option<&TlsOptions>;
    /// Credentials, by environment variable.
    fn auth(&self) -> Option<&AuthOptions>;
    /// How long connecting may take.
    fn connect_timeout(&self) -> Option<DurationSpec>;
}

/// Implements [`Connection`] for a channel with `tls`, `auth`, `connect_timeout` and the
/// named URL field.
macro_rules! impl_connection {
    ($channel:ty => $url:ident) => {
        impl $crate::model::channel::Connection for $channel {
            fn url(&self) -> &str {
                &self.$url
            }
            fn tls(&self) -> Option<&$crate::model::channel::TlsOptions> {
                self.tls.as_ref()
            }
            fn auth(&self) -> Option<&$crate::model::channel::AuthOptions> {
                self.auth.as_ref()
            }
            fn connect_timeout(&self) -> Option<$crate::model::DurationSpec> {
                self.connect_timeout
            }
        }
    };
}
pub(crate) use impl_connection;

/// The rules of the shared connection options. `password_alone`: the transport accepts
/// a password without a user name (Redis `AUTH password`).
pub(crate) fn problems(channel: &dyn Connection, password_alone: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    positive(&mut out, "connect_timeout", channel.connect_timeout());
    if let Some(tls) = channel.tls()
        && tls.cert.is_some() != tls.key.is_some()
    {
        let (given, missing) = if tls.cert.is_some() {
            ("cert", "key")
        } else {
            ("key", "cert")
        };
        out.push(Problem::key(
            &["tls", given],
            format!("`tls.{given}` is given without `tls.{missing}`"),
            "a client certificate needs both `cert` and `key` (PEM files)",
        ));
    }
    if let Some(auth) = channel.auth() {
        let vars = [
            ("username_env", &auth.username_env),
            ("password_env", &auth.password_env),
            ("token_env", &auth.token_env),
        ];
        for (key, var) in vars {
            if let Some(var) = var
                && (var.is_empty() || var.contains(['=', '\0', ' ']))
            {
                out.push(Problem::value(
                    &["auth", key],
                    format!("`{key}` must name an environment variable, not `{var}`"),
                    "write the variable's name, e.g. `BROKER_PASSWORD`; never the secret itself",
                ));
            }
        }
        if auth.password_env.is_some() && auth.username_env.is_none() && !password_alone {
            out.push(Problem::key(
                &["auth", "password_env"],
                "`auth.password_env` is given without `auth.username_env`",
                "name the variable holding the user name too",
            ));
        }
    }
    out
}
